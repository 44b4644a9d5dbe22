"""Health, readiness, the offline docs pages and the OpenAPI schema."""

from __future__ import annotations

import re
import shutil
import subprocess
import time

import httpx
import pytest

from tests.e2e.helpers import iris_frame, job_spec, upload_frame
from tests.services import unavailable
from tests.stack import Stack, free_port, stack_env


def test_health_and_ready(stack: Stack) -> None:
    assert stack.http().get("/health").json() == {"status": "ok"}
    ready = stack.http().get("/ready")
    assert ready.status_code == 200, ready.text
    assert ready.json() == {"status": "ok", "database": "ok", "broker": "ok"}


def test_the_api_logs_its_own_lines(stack: Stack) -> None:
    # uvicorn configures only its loggers; Keiko's INFO lines reach the API's stderr too.
    dataset_id = upload_frame(stack.http(), iris_frame())
    line = (
        rf"INFO: +service\.ingest: dataset {dataset_id}: \d+ bytes received in [\d.]+ s, "
        r"described in [\d.]+ s, stored in [\d.]+ s"
    )
    assert re.search(line, stack.log("api")), stack.log("api")[-2000:]


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_need_no_internet(stack: Stack, page: str) -> None:
    html = stack.http().get(page)
    assert html.status_code == 200
    assets = re.findall(r'(?:src|href)="([^"]+)"', html.text)
    assert assets, html.text
    for asset in assets:
        assert asset.startswith("/"), f"{page} loads {asset} from elsewhere"
        if not asset.endswith("openapi.json"):
            assert stack.http().get(asset).status_code == 200, asset
    assert "https://" not in html.text.replace("https://swagger.io", "")


def test_openapi_documents_every_operation(stack: Stack) -> None:
    schema = stack.http().get("/openapi.json").json()
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            where = f"{method.upper()} {path}"
            assert operation.get("summary"), where
            assert operation.get("description"), where
            ok = [code for code in operation["responses"] if code.startswith("2")]
            assert ok, where
            content = operation["responses"][ok[0]].get("content")
            if ok[0] != "204":
                # JSON, or the event stream's text/event-stream
                assert content and all("schema" in c for c in content.values()), where
                answer = content.get("application/json", {}).get("schema", {})
                assert answer.get("type") != "array", f"{where}: lists answer in an envelope"
            if "{" in path or method == "post":
                assert any(code.startswith("4") for code in operation["responses"]), where
    body = schema["paths"]["/datasets"]["post"]["requestBody"]["content"]
    assert "file" in body["multipart/form-data"]["schema"]["properties"]


def test_broker_down_job_is_kept_and_runs_when_it_returns(
    embedded_stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Redis not running: /ready names it, POST /jobs still records the job (202), and the
    job runs once Redis is up, sent by the API's outbox sweep."""
    server = shutil.which("redis-server")
    if server is None:
        unavailable("redis-server", FileNotFoundError("redis-server not on PATH"))
    port = free_port()
    data_dir = tmp_path_factory.mktemp("broker_down")
    env = stack_env(data_dir, KEIKO_BROKER_URL=f"redis://127.0.0.1:{port}/0")
    stack = Stack("broker_down", data_dir, env)
    redis_process = None
    try:
        stack.start()
        ready = stack.http().get("/ready")
        assert ready.status_code == 503
        assert ready.json()["database"] == "ok" and ready.json()["broker"].startswith("down")

        dataset_id = upload_frame(stack.http(), iris_frame())
        response = stack.http().post("/jobs", json=job_spec(dataset_id))
        assert response.status_code == 202
        job_id = response.json()["id"]
        time.sleep(1.5)
        assert stack.http().get(f"/jobs/{job_id}").json()["status"] == "queued"

        redis_process = subprocess.Popen(
            [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
             "no"],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        job = stack.wait_for_job(job_id, timeout=120)
        assert job["status"] == "succeeded", (job, stack.log("worker"))
        assert stack.http().get("/ready").status_code == 200
    finally:
        stack.stop()
        if redis_process is not None:
            redis_process.terminate()
            redis_process.wait()


def test_nan_metric_is_null(stack: Stack) -> None:
    frame = iris_frame().drop(columns=["species"])
    frame["constant"] = 1.0
    dataset_id = upload_frame(stack.http(), frame)
    spec = job_spec(
        dataset_id,
        task="regression",
        target="constant",
        model={"kind": "linear"},
        training={"test_split": 0.2},
    )
    job = stack.wait_for_job(stack.http().post("/jobs", json=spec).json()["id"])
    assert job["status"] == "succeeded", job
    assert job["metrics"]["test"]["r2"] is None  # a constant target has no R²
    assert job["metrics"]["test"]["mse"] == pytest.approx(0.0, abs=1e-6)
    raw = httpx.get(f"{stack.base_url}/jobs/{job['id']}").text
    assert "NaN" not in raw and "Infinity" not in raw
