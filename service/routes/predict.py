"""Predictions from stored models."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from models.base import InputError
from service.auth import CallerDep, KeyDep
from service.deps import SessionDep, SettingsDep, StoreDep
from service.errors import PayloadTooLarge, Unprocessable, responses
from service.inference import admit, load_predictor, serve
from service.metrics import record_prediction
from service.ratelimit import get_rate_limiter
from service.schemas import PredictRequest, PredictResponse
from service.settings import get_settings
from service.uploads import receive_upload

MAX_PREDICT_FILES = 32

router = APIRouter(tags=["predict"], responses=responses(401, 403))


@router.post(
    "/predict",
    response_model=PredictResponse,
    summary="Predict with a trained model",
    responses=responses(400, 404, 409, 413, 422, 429),
)
async def predict(request: PredictRequest, credentials: KeyDep) -> Response:
    """Apply the model's stored preprocessing and network to `inputs`; labels come back as
    they were in the training data."""
    # In the event loop, from memory once the key and model are known to this process; the
    # batch's work (checking, encoding, the network, decoding) is one hop to a thread.
    settings = get_settings()
    caller, model = await admit(credentials, request.model_id, settings)
    await get_rate_limiter().hit_async("POST /predict", settings.rate_limit_predict, caller)
    if len(request.inputs) > settings.max_predict_rows:
        raise PayloadTooLarge(
            f"{len(request.inputs)} inputs in one call; the limit is {settings.max_predict_rows}"
        )
    served = await serve(model, request.model_id, settings)
    assert model is not None  # serve answered 404 otherwise
    try:
        result = await served.predict(model.id, request.inputs)
    except InputError as exc:
        raise Unprocessable(str(exc)) from exc
    answer = PredictResponse(model_id=model.id, **result)
    return Response(answer.model_dump_json(), media_type="application/json")


FILES_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["model_id", "file"],
                    "properties": {
                        "model_id": {"type": "string"},
                        "file": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "description": "PNG or JPEG images of the training size.",
                        },
                    },
                }
            }
        },
    }
}


@router.post(
    "/predict/files",
    response_model=PredictResponse,
    summary="Predict on uploaded image files",
    openapi_extra=FILES_BODY,
    responses=responses(400, 404, 409, 413, 422, 429),
)
async def predict_files(
    request: Request,
    caller: CallerDep,
    session: SessionDep,
    settings: SettingsDep,
    store: StoreDep,
) -> PredictResponse:
    """Multipart variant of `/predict` for image models: `model_id` and up to 32 `file` parts."""
    get_rate_limiter().hit("POST /predict", settings.rate_limit_predict, caller)
    upload = await receive_upload(
        request,
        max_bytes=settings.max_predict_upload_bytes,
        folder=store.incoming_dir(),
        max_files=MAX_PREDICT_FILES,
    )
    try:
        model_id = upload.fields.get("model_id")
        if not model_id:
            raise Unprocessable("missing the 'model_id' form field")
        contents = [f.path.read_bytes() for f in upload.files]
    finally:
        upload.discard()
    predictor, found = await run_in_threadpool(
        load_predictor, model_id, caller, session, settings, store
    )
    started = time.perf_counter()
    try:
        result = await run_in_threadpool(predictor.predict_files, contents)
    except InputError as exc:
        raise Unprocessable(str(exc)) from exc
    record_prediction(found, len(contents), time.perf_counter() - started)
    return PredictResponse(model_id=found, **result)
