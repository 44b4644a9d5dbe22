"""`GET /metrics`: Prometheus' text format (see service.metrics). Not in the OpenAPI
schema: it is for scrapers, not API clients."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from service import metrics
from service.auth import Credentials, require_admin
from service.deps import SettingsDep

router = APIRouter(include_in_schema=False)


def metrics_access(credentials: Credentials, settings: SettingsDep) -> None:
    """Open unless KEIKO_METRICS_AUTH: then the admin key, as for /users."""
    if settings.metrics_auth:
        require_admin(credentials, settings)


@router.get("/metrics")
def scrape(_access: Annotated[None, Depends(metrics_access)]) -> Response:
    # A plain def: the SQL of the scrape runs in the thread pool, off the event loop.
    return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)
