"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from service.auth import AnyKeyDep
from service.db import get_engine
from service.dispatch import producer
from service.errors import responses
from service.schemas import Health, Readiness

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health, summary="Liveness")
async def health() -> Health:
    """Answers 200 as soon as the API process is up; touches nothing else."""
    return Health(status="ok")


def check_database() -> str:
    try:
        with get_engine().connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:
        return f"down: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return "ok"


def _check_broker() -> str:
    try:
        with producer().connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=2)
    except Exception as exc:
        return f"down: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return "ok"


@router.get(
    "/ready",
    response_model=Readiness,
    summary="Readiness",
    responses={
        503: {"model": Readiness, "description": "The database or the broker is down"},
        **responses(401),
    },
)
def ready(_key: AnyKeyDep) -> JSONResponse:
    """200 when the database and the broker answer; 503 naming whichever is down. Needs a
    key (a user's or the admin's) when authentication is on: the answer names internals."""
    database = check_database()
    broker = _check_broker()
    ok = database == "ok" and broker == "ok"
    body = Readiness(status="ok" if ok else "unavailable", database=database, broker=broker)
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)
