"""Trained models."""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from models.base import InputError
from models.checkpoint import CorruptCheckpointError
from models.export import ExportError, export_onnx
from models.predictors import Playable
from models.registry import get_kind
from service import repository
from service.auth import Caller, CallerDep
from service.deps import SessionDep, SettingsDep, StoreDep
from service.errors import NotFound, Unprocessable, responses
from service.inference import load_predictor, settings_cache, unloadable
from service.ratelimit import get_rate_limiter
from service.revocations import get_revocations
from service.schemas import ModelRead, Page, RolloutRequest, RolloutResponse
from service.storage import ArtifactStore, delete_quietly
from service.tables import Model

router = APIRouter(prefix="/models", tags=["models"], responses=responses(401, 403))


@router.get("", response_model=Page[ModelRead], summary="List models")
def list_models(
    caller: CallerDep,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**31)] = 0,
) -> Page[ModelRead]:
    """Models, newest first."""
    rows, total = repository.list_models(
        session, owner_id=caller.user_id, limit=limit, offset=offset
    )
    items = [ModelRead.model_validate(row) for row in rows]
    return Page[ModelRead](items=items, total=total, limit=limit, offset=offset)


@router.get(
    "/{model_id}", response_model=ModelRead, summary="Get a model", responses=responses(404)
)
def get_model(model_id: str, caller: CallerDep, session: SessionDep) -> Model:
    """Kind, task, source job, input schema, output labels and metrics of a model."""
    model = repository.get_model(session, model_id=model_id, owner_id=caller.user_id)
    if model is None:
        raise NotFound(f"no model with id {model_id!r}")
    return model


@router.delete("/{model_id}", status_code=204, summary="Delete a model", responses=responses(404))
def delete_model(
    model_id: str, caller: CallerDep, session: SessionDep, settings: SettingsDep, store: StoreDep
) -> Response:
    """Delete a model and its weights file; its job stays, without a model."""
    model = repository.get_model(session, model_id=model_id, owner_id=caller.user_id)
    if model is None:
        raise NotFound(f"no model with id {model_id!r}")
    folder = str(PurePosixPath(model.path).parent)  # models/<id>/: the bundle and nothing else
    session.delete(model)
    session.commit()
    get_revocations().revoke()  # every API process forgets it before this answers
    settings_cache(settings).discard(model_id)
    delete_quietly(store, folder)
    return Response(status_code=204)


@router.post(
    "/{model_id}/rollout",
    response_model=RolloutResponse,
    summary="Play episodes with a trained policy",
    responses=responses(400, 404, 409, 422),
)
def rollout(
    model_id: str,
    request: RolloutRequest,
    caller: CallerDep,
    session: SessionDep,
    settings: SettingsDep,
    store: StoreDep,
) -> RolloutResponse:
    """Run the greedy policy of a dqn, q_learning or sarsa model in a fresh copy of its
    environment: the return and length of each episode, and for GridWorld the cells visited.
    Episode k is reset with `seed + k`, so the same request gives the same episodes."""
    predictor, found = load_predictor(model_id, caller, session, settings, store)
    if not isinstance(predictor, Playable):
        raise Unprocessable(
            f"model {found!r} is not a policy: rollouts need a dqn, q_learning or sarsa model"
        )
    try:
        played = predictor.rollout(request.episodes, request.seed)
    except InputError as exc:
        raise Unprocessable(str(exc)) from exc
    return RolloutResponse(model_id=found, **played)


ONNX_FILE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The ONNX file",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}


def _onnx_file(
    model_id: str, caller: Caller, session: Session, store: ArtifactStore
) -> tuple[bytes, str]:
    """The ONNX file of one of the caller's models and its file name (in a worker thread:
    tracing the network takes a second or two)."""
    model = repository.get_model(session, model_id=model_id, owner_id=caller.user_id)
    if model is None:
        raise NotFound(f"no model with id {model_id!r}")
    extra = {"model_id": model.id, "job_id": model.job_id}
    try:
        body = export_onnx(
            store.local(model.path, model.sha256, sidecar=True),
            expected_sha256=model.sha256,
            kinds=get_kind,
            metadata=extra,
        )
    except (CorruptCheckpointError, FileNotFoundError) as exc:
        raise unloadable(model.id, exc) from exc
    except ExportError as exc:
        raise Unprocessable(f"model {model.id!r} ({model.kind}): {exc}") from exc
    kind = re.sub(r"[^A-Za-z0-9_-]", "_", model.kind)
    return body, f"keiko-{kind}-{model.id}.onnx"


@router.get(
    "/{model_id}/export",
    summary="Export a model to ONNX",
    response_class=Response,
    responses={**ONNX_FILE, **responses(404, 409, 422, 429)},
)
async def export_model(
    model_id: str,
    caller: CallerDep,
    session: SessionDep,
    settings: SettingsDep,
    store: StoreDep,
    file_format: Annotated[
        Literal["onnx"], Query(alias="format", description="The file format.")
    ] = "onnx",
) -> Response:
    """The model as an ONNX file: the network with the numeric preprocessing and output
    step of `POST /predict` inside the graph (standardisation, pixel scaling and
    normalisation, the forecasting residual, softmax or the target's units, a policy's
    greedy action), and what cannot be in a graph (string columns' one-hot positions, class
    labels, the input's column order and layout) in its `metadata_props`, each value JSON.
    Any batch size; any sequence length for an `rnn`."""
    get_rate_limiter().hit("GET /models/{id}/export", settings.rate_limit_predict, caller)
    body, filename = await run_in_threadpool(_onnx_file, model_id, caller, session, store)
    return Response(
        body,
        media_type="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
