"""The FastAPI application."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline

from models.metrics import json_safe
from service.auth import warn_if_open
from service.background import stop
from service.bodylimit import BodyLimit
from service.dispatch import sweep_forever
from service.errors import KeikoError, ServiceUnavailable
from service.events import EventHub
from service.metrics import RequestMetrics
from service.ratelimit import get_rate_limiter
from service.revocations import get_revocations
from service.routes import (
    datasets,
    gallery,
    health,
    jobs,
    models,
    oip,
    predict,
    recipes,
    studies,
    users,
    web,
)
from service.routes import metrics as scrape
from service.settings import get_settings
from service.storage import StoreUnavailable, open_store
from service.studies import sweep_studies

log = logging.getLogger("keiko")

DESCRIPTION = """Keiko (稽古, "practice") trains and serves PyTorch models.

Upload a dataset, post a job spec, watch its metrics, and call the trained model over HTTP.
Every error answer is JSON `{"detail": ...}` saying what is wrong.
"""


def log_to_stderr() -> None:
    """uvicorn configures only its own loggers, so Keiko's INFO lines (an upload's timing, a
    study's progress) went nowhere and its warnings came out bare: they go to stderr, named
    and leveled like uvicorn's, unless whoever runs the app configured logging itself."""
    if logging.getLogger().handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s:     %(name)s: %(message)s"))
    for name in ("service", "keiko"):
        logger = logging.getLogger(name)
        if not logger.handlers:
            logger.addHandler(handler)
            logger.setLevel(logging.INFO)


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    log_to_stderr()
    warn_if_open(get_settings())
    get_rate_limiter()  # built before the first request, not by several at once
    hub = EventHub(get_settings())
    app.state.event_hub = hub
    revocations = get_revocations()  # its shared counter exists before the first request
    open_store(get_settings()).prepare()  # an S3 client built (boto3 imported) at start-up
    background = [
        asyncio.create_task(sweep_forever(sweep_studies)),
        asyncio.create_task(hub.run()),
        asyncio.create_task(revocations.listen()),
    ]
    # Everything imported and built so far (torch, SQLAlchemy, the app) lives as long as
    # the process: out of the collector's reach, a full collection walks only what requests
    # make, instead of pausing every call in flight for the whole heap.
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        await stop(background)


def create_app() -> FastAPI:
    app = FastAPIOffline(
        title="Keiko",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
    )

    @app.exception_handler(KeikoError)
    async def _keiko_error(request: Request, exc: KeikoError) -> JSONResponse:
        # The Open Inference Protocol's clients read {"error": ...} (a missing key too).
        key = "error" if request.url.path.startswith("/v2/") else "detail"
        return JSONResponse({key: exc.message}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(StoreUnavailable)
    async def _store_unavailable(request: Request, exc: StoreUnavailable) -> JSONResponse:
        # Nothing was stored or read: the same call may succeed once the store is back.
        retry = ServiceUnavailable(str(exc), headers={"Retry-After": "30"})
        return await _keiko_error(request, retry)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        # Inputs may hold NaN or bytes that JSON cannot carry; keep the answer strict JSON.
        errors = [
            {"loc": list(e.get("loc", [])), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        return JSONResponse({"detail": json_safe(errors)}, status_code=422)

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return JSONResponse({"detail": "internal error; the server log has the details"}, 500)

    # Predict routes first: a request is matched against the routes in this order.
    for module in (
        health,
        predict,
        oip,
        users,
        datasets,
        jobs,
        studies,
        models,
        recipes,
        web,
        gallery,
    ):
        app.include_router(module.router)
    app.include_router(scrape.router)
    app.add_middleware(BodyLimit, max_bytes=get_settings().max_request_bytes)
    app.add_middleware(RequestMetrics)  # outermost: it times everything inside
    return app


app = create_app()
