"""Trained models."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from service import repository
from service.deps import SessionDep
from service.errors import NotFound, responses
from service.schemas import ModelRead, Page
from service.tables import Model

router = APIRouter(prefix="/models", tags=["models"])


@router.get("", response_model=Page[ModelRead], summary="List models")
def list_models(
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**31)] = 0,
) -> Page[ModelRead]:
    """Models, newest first."""
    rows, total = repository.list_models(session, limit=limit, offset=offset)
    items = [ModelRead.model_validate(row) for row in rows]
    return Page[ModelRead](items=items, total=total, limit=limit, offset=offset)


@router.get(
    "/{model_id}", response_model=ModelRead, summary="Get a model", responses=responses(404)
)
def get_model(model_id: str, session: SessionDep) -> Model:
    """Kind, task, source job, input schema, output labels and metrics of a model."""
    model = repository.get_model(session, model_id=model_id)
    if model is None:
        raise NotFound(f"no model with id {model_id!r}")
    return model
