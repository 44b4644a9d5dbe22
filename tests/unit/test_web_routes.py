"""The web app's routes: the page, its static files and Plotly from the plotly wheel, none
of them in the API schema, none shadowing an API path."""

from __future__ import annotations

import re

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from service.routes import web


@pytest.fixture(scope="module")
def client() -> TestClient:
    app = FastAPI()
    app.include_router(web.router)
    return TestClient(app)


def test_index_and_static_files(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="/ui/app.js">' in page.text
    for path in re.findall(r'(?:src|href)="(/ui/[^"]+)"', page.text):
        assert client.get(path).status_code == 200, path
    script = client.get("/ui/app.js")
    assert script.status_code == 200
    assert "javascript" in script.headers["content-type"]
    assert client.get("/ui/pages/job.js").status_code == 200
    assert client.get("/ui/nothing-here.js").status_code == 404
    assert client.get("/ui/../routes/web.py").status_code == 404


def test_plotly_comes_from_the_installed_wheel(client: TestClient) -> None:
    served = client.get("/ui/vendor/plotly.min.js")
    assert served.status_code == 200
    assert "javascript" in served.headers["content-type"]
    assert "max-age" in served.headers["cache-control"]
    assert "plotly.js v" in served.text[:200]
    assert served.content == web.plotly_js().read_bytes()


def test_every_module_the_app_imports_is_served(client: TestClient) -> None:
    """Each relative import in the app's ES modules names a file that is there."""
    seen: set[str] = set()
    todo = ["/ui/app.js"]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        source = client.get(path)
        assert source.status_code == 200, path
        folder = path.rsplit("/", 1)[0]
        for target in re.findall(r'from "(\.{1,2}/[^"]+)"', source.text):
            resolved = folder
            for part in target.split("/"):
                if part == "..":
                    resolved = resolved.rsplit("/", 1)[0]
                elif part != ".":
                    resolved += "/" + part
            todo.append(resolved)
    assert "/ui/pages/job.js" not in seen  # pages load lazily, by the router
    assert {"/ui/api.js", "/ui/i18n.js", "/ui/dom.js"} <= seen


def test_web_paths_are_not_in_the_api_schema() -> None:
    app = FastAPI()
    app.include_router(web.router)
    assert app.openapi()["paths"] == {}
