"""Predictions from stored models."""

from __future__ import annotations

from fastapi import APIRouter

from models.bundle import InputError
from service import repository
from service.deps import SessionDep, SettingsDep, StoreDep
from service.errors import NotFound, PayloadTooLarge, Unprocessable, responses
from service.inference import model_cache
from service.schemas import PredictRequest, PredictResponse

router = APIRouter(tags=["predict"])


@router.post(
    "/predict",
    response_model=PredictResponse,
    summary="Predict with a trained model",
    responses=responses(404, 413, 422),
)
def predict(
    request: PredictRequest, session: SessionDep, settings: SettingsDep, store: StoreDep
) -> PredictResponse:
    """Apply the model's stored preprocessing and network to `inputs`; labels come back as
    they were in the training data."""
    if len(request.inputs) > settings.max_predict_rows:
        raise PayloadTooLarge(
            f"{len(request.inputs)} inputs in one call; the limit is {settings.max_predict_rows}"
        )
    model = repository.get_model(session, model_id=request.model_id)
    if model is None:
        raise NotFound(f"no model with id {request.model_id!r}")
    cache = model_cache(settings.model_cache_size)
    predictor = cache.get(model.id, store.path(model.path), model.sha256)
    try:
        result = predictor.predict(request.inputs)
    except InputError as exc:
        raise Unprocessable(str(exc)) from exc
    return PredictResponse(model_id=model.id, **result)
