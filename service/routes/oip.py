"""The Open Inference Protocol (KServe v2 / Triton HTTP) beside Keiko's own endpoints, so
existing clients (`tritonclient`, KServe's) call Keiko's models. A model's name is its id,
and its only version is "1". Inference goes through the same checks as `POST /predict`:
the caller's key, ownership (404 otherwise), the rate limit, the row cap, and the model's
own validation and preprocessing. Errors answer `{"error": "..."}` as the protocol says.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from models.base import InputError
from service import oip, repository
from service.auth import Caller, CallerDep, KeyDep
from service.deps import SessionDep, SettingsDep, StoreDep
from service.errors import KeikoError, NotFound
from service.inference import admit, load_predictor, serve
from service.ratelimit import get_rate_limiter
from service.routes.health import check_database
from service.settings import get_settings
from service.tables import Model

VERSION = "1"
router = APIRouter(prefix="/v2", tags=["open inference protocol"])


class OIPError(BaseModel):
    error: str


class Live(BaseModel):
    live: bool


class Ready(BaseModel):
    ready: bool


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class TensorMetadata(BaseModel):
    name: str
    datatype: str = Field(description="FP32, FP64, INT64, UINT8, BYTES, ...")
    shape: list[int] = Field(description="-1: any size (the batch)")


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str = Field(description="keiko_<kind>, e.g. keiko_mlp")
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class ModelReady(BaseModel):
    name: str
    ready: bool


class OutputTensor(BaseModel):
    name: str
    datatype: str
    shape: list[int]
    data: list[Any] | None = Field(None, description="Row-major, flattened")
    parameters: dict[str, Any] | None = Field(
        None, description="binary_data_size when the data follows the JSON header as bytes"
    )


class InferResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[OutputTensor]


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": OIPError, "description": text}
    for code, text in (
        (400, "A request the protocol or the model refuses"),
        (401, "No or an unknown API key"),
        (404, "No such model (or another user's)"),
        (409, "The model's stored file cannot be loaded"),
        (413, "More rows than KEIKO_MAX_PREDICT_ROWS"),
        (429, "Over the predict rate limit"),
    )
}
INFER_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["inputs"],
                    "properties": {
                        "id": {"type": "string"},
                        "parameters": {"type": "object"},
                        "inputs": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["name", "shape", "datatype"],
                                "properties": {
                                    "name": {"type": "string"},
                                    "shape": {"type": "array", "items": {"type": "integer"}},
                                    "datatype": {"type": "string"},
                                    "data": {"type": "array", "items": {}},
                                    "parameters": {"type": "object"},
                                },
                            },
                        },
                        "outputs": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["name"],
                                "properties": {
                                    "name": {"type": "string"},
                                    "parameters": {"type": "object"},
                                },
                            },
                        },
                    },
                }
            }
        },
    }
}


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


# Inference first: the router matches a request against its routes in order, and this is
# the one called thousands of times a second.
@router.post(
    "/models/{model_id}/infer",
    response_model=InferResponse,
    summary="OIP: inference",
    openapi_extra=INFER_BODY,
    responses=ERRORS,
)
@router.post(
    "/models/{model_id}/versions/{version}/infer",
    response_model=InferResponse,
    summary="OIP: inference (a version)",
    openapi_extra=INFER_BODY,
    responses=ERRORS,
)
async def infer(
    model_id: str, request: Request, credentials: KeyDep, version: str | None = None
) -> Response:
    """Tensors in, tensors out, through the model's stored preprocessing and network (the
    same answers as `POST /predict`); JSON, or Triton's binary-data extension."""
    body = await request.body()
    header = request.headers.get(oip.HEADER_LENGTH)
    settings = get_settings()
    try:
        caller, model = await admit(credentials, model_id, settings)
        await get_rate_limiter().hit_async("POST /predict", settings.rate_limit_predict, caller)
        if version is not None and version != VERSION:
            raise NotFound(f"model {model_id!r} has no version {version!r}; its only one is 1")
        served = await serve(model, model_id, settings)
        assert model is not None  # serve answered 404 otherwise
        inputs, outputs = oip.model_tensors(model.task, model.input_schema, model.output)
        parsed = oip.parse_infer(body, header)
        rows = oip.predict_inputs(parsed.tensors, inputs, settings.max_predict_rows)
        encoder = getattr(served.predictor, "encoder", None)
        if isinstance(rows, np.ndarray) and not getattr(encoder, "takes_arrays", False):
            rows = rows.tolist()  # sequences: their encoders read nested lists
        result = await served.predict(model.id, rows)
        content, head = oip.infer_answer(
            model.id, parsed, oip.output_arrays(result, outputs), outputs
        )
    except KeikoError as exc:
        return error(exc.status_code, exc.message)
    except oip.TooManyRows as exc:
        return error(413, str(exc))
    except (oip.ProtocolError, InputError) as exc:
        return error(400, str(exc))
    if head is None:
        return Response(content, media_type="application/json")
    return Response(
        content,
        media_type="application/octet-stream",
        headers={oip.HEADER_LENGTH: str(head)},
    )


@router.get("/health/live", response_model=Live, summary="OIP: server live")
async def live() -> Live:
    """200 while the API process is up (`tritonclient`'s `is_server_live`)."""
    return Live(live=True)


@router.get(
    "/health/ready",
    response_model=Ready,
    summary="OIP: server ready",
    responses={503: {"model": Ready, "description": "The database is down"}},
)
def ready() -> Ready | JSONResponse:
    """Ready when the database answers: models are found through it."""
    if check_database() != "ok":
        return JSONResponse({"ready": False}, status_code=503)
    return Ready(ready=True)


@router.get("", response_model=ServerMetadata, summary="OIP: server metadata")
async def server_metadata() -> ServerMetadata:
    """The server's name and version, and the protocol extensions it speaks."""
    return ServerMetadata(name="keiko", version="0.1.0", extensions=["binary_tensor_data"])


def _model(model_id: str, version: str | None, caller: Caller, session: Session) -> Model:
    if version is not None and version != VERSION:
        raise NotFound(f"model {model_id!r} has no version {version!r}; its only one is 1")
    model = repository.get_model(session, model_id=model_id, owner_id=caller.user_id)
    if model is None:
        raise NotFound(f"no model with id {model_id!r}")
    return model


def _metadata(model: Model) -> ModelMetadata:
    inputs, outputs = oip.model_tensors(model.task, model.input_schema, model.output)
    return ModelMetadata(
        name=model.id,
        versions=[VERSION],
        platform=f"keiko_{model.kind}",
        inputs=[TensorMetadata(**t.as_json()) for t in inputs],
        outputs=[TensorMetadata(**t.as_json()) for t in outputs],
    )


@router.get(
    "/models/{model_id}",
    response_model=ModelMetadata,
    summary="OIP: model metadata",
    responses=ERRORS,
)
@router.get(
    "/models/{model_id}/versions/{version}",
    response_model=ModelMetadata,
    summary="OIP: model metadata (a version)",
    responses=ERRORS,
)
def model_metadata(
    model_id: str, caller: CallerDep, session: SessionDep, version: str | None = None
) -> ModelMetadata | JSONResponse:
    """The model's input and output tensors: names, datatypes and shapes."""
    try:
        return _metadata(_model(model_id, version, caller, session))
    except KeikoError as exc:
        return error(exc.status_code, exc.message)


@router.get(
    "/models/{model_id}/ready",
    response_model=ModelReady,
    summary="OIP: model ready",
    responses=ERRORS,
)
@router.get(
    "/models/{model_id}/versions/{version}/ready",
    response_model=ModelReady,
    summary="OIP: model ready (a version)",
    responses=ERRORS,
)
def model_ready(
    model_id: str,
    caller: CallerDep,
    session: SessionDep,
    settings: SettingsDep,
    store: StoreDep,
    version: str | None = None,
) -> ModelReady | JSONResponse:
    """Ready once its file loads (and passes its sha256 check): it is then in memory."""
    try:
        model = _model(model_id, version, caller, session)
        load_predictor(model.id, caller, session, settings, store)
    except KeikoError as exc:
        return error(exc.status_code, exc.message)
    return ModelReady(name=model.id, ready=True)
