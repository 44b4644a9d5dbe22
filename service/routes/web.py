"""The web app: `/` is its page, `/ui/...` its scripts and styles, all from this package.

Plotly's JavaScript comes from the installed `plotly` wheel (its package data), so the page
needs no CDN, no npm and no internet. None of these paths is part of the API's schema.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.types import Scope

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
UI_PREFIX = "/ui"

router = APIRouter(include_in_schema=False)


@cache
def plotly_js() -> Path:
    """The plotly.min.js shipped inside the `plotly` Python package."""
    return Path(str(files("plotly") / "package_data" / "plotly.min.js"))


@router.get("/")
def index() -> FileResponse:
    # no-cache: the page is tiny and must pick up a new version's module list at once.
    return FileResponse(WEB_DIR / "index.html", headers={"Cache-Control": "no-cache"})


@router.get(f"{UI_PREFIX}/vendor/plotly.min.js")
def plotly() -> FileResponse:
    # The file changes only with the installed plotly version: cache it for a day.
    return FileResponse(
        plotly_js(),
        media_type="text/javascript",
        headers={"Cache-Control": "public, max-age=86400"},
    )


class _Static(StaticFiles):
    """Static files that the browser revalidates (ETag), so an upgrade shows at once."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.setdefault("Cache-Control", "no-cache")
        return response


# Mounted on the router, so registering this router is the only change main.py needs.
router.mount(UI_PREFIX, _Static(directory=WEB_DIR), name="ui")
