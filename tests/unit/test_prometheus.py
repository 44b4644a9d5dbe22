"""`GET /metrics` without a server: the KEIKO_METRICS_AUTH setting, the request middleware's
labels, and the collectors read at scrape time (jobs from SQL, the GPU)."""

from __future__ import annotations

import os
import types
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from service import metrics
from service.cli import api_command, share_metrics
from service.errors import KeikoError
from service.routes import metrics as scrape
from service.settings import Settings, get_settings
from service.tables import Base, Job

ADMIN = "a" * 40


@pytest.fixture
def database(monkeypatch: pytest.MonkeyPatch) -> sessionmaker[Session]:
    """An in-memory database the scrape reads its jobs from."""
    engine = create_engine(
        "sqlite://", connect_args={"check_same_thread": False}, poolclass=StaticPool
    )
    Base.metadata.create_all(engine)
    maker = sessionmaker(bind=engine)
    monkeypatch.setattr(metrics, "get_sessionmaker", lambda: maker)
    return maker


def app_with(settings: Settings) -> TestClient:
    app = FastAPI()
    app.include_router(scrape.router)

    @app.get("/things/{thing_id}")
    def thing(thing_id: str) -> dict[str, str]:
        return {"id": thing_id}

    @app.get("/broken")
    def broken() -> None:
        raise RuntimeError("boom")

    @app.exception_handler(KeikoError)
    async def _error(_request: Request, exc: KeikoError) -> JSONResponse:  # as service.main
        return JSONResponse({"detail": exc.message}, exc.status_code, headers=exc.headers)

    app.add_middleware(metrics.RequestMetrics)
    app.dependency_overrides[get_settings] = lambda: settings
    return TestClient(app, raise_server_exceptions=False)


def parse(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def requests(samples: dict[Any, float], method: str, route: str, status: str) -> float:
    labels = frozenset({"method": method, "route": route, "status": status}.items())
    return samples.get(("keiko_http_requests_total", labels), 0.0)


@pytest.mark.usefixtures("database")
def test_metrics_are_open_by_default_and_take_only_the_admin_key_when_set() -> None:
    open_app = app_with(Settings(admin_key=ADMIN))
    assert open_app.get("/metrics").status_code == 200
    closed = app_with(Settings(metrics_auth=True, admin_key=ADMIN))
    refused = closed.get("/metrics")
    assert refused.status_code == 401 and refused.headers["WWW-Authenticate"] == "Bearer"
    user_key = {"Authorization": "Bearer keiko_someones-key"}
    assert closed.get("/metrics", headers=user_key).status_code == 403
    answer = closed.get("/metrics", headers={"Authorization": f"Bearer {ADMIN}"})
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    assert "keiko_jobs" in answer.text
    # On, with no admin key configured: nobody can scrape, and the answer says why.
    nobody = app_with(Settings(metrics_auth=True))
    assert "KEIKO_ADMIN_KEY" in nobody.get("/metrics").json()["detail"]


@pytest.mark.usefixtures("database")
def test_requests_are_counted_by_route_template_and_status() -> None:
    client = app_with(Settings())
    before = parse(client.get("/metrics").text)
    for thing in ("a1b2", "c3d4", "e5f6"):
        assert client.get(f"/things/{thing}").status_code == 200
    assert client.get("/broken").status_code == 500
    assert client.get("/nowhere/x9y8").status_code == 404
    assert client.request("BREW", "/things/a1b2").status_code == 405
    assert client.get("/metrics").status_code == 200  # the scrape is not counted
    text = client.get("/metrics").text
    after = parse(text)
    for key, count in {
        ("GET", "/things/{thing_id}", "200"): 3,
        ("GET", "/broken", "500"): 1,
        ("GET", "unmatched", "404"): 1,
        ("other", "/things/{thing_id}", "405"): 1,
        ("GET", "/metrics", "200"): 0,
    }.items():
        assert requests(after, *key) - requests(before, *key) == count, key
    for raw in ("a1b2", "c3d4", "e5f6", "x9y8", "BREW"):
        assert raw not in text
    count = frozenset({"method": "GET", "route": "/things/{thing_id}"}.items())
    name = "keiko_http_request_duration_seconds_count"
    assert after[(name, count)] - before.get((name, count), 0.0) == 3


def test_job_gauges_aggregate_every_users_jobs(database: sessionmaker[Session]) -> None:
    now = datetime.now(UTC)
    lease = timedelta(seconds=get_settings().job_lease_seconds)
    rows = [
        # status, queue, worker, lease left, progress
        ("queued", "celery", None, None, None),
        ("queued", "gpu", None, None, None),
        ("queued", "gpu", None, None, None),
        ("succeeded", "celery", None, None, None),
        ("running", "celery", "host-a:1", lease - timedelta(seconds=2),
         {"latest": {"epoch": 3, "seconds": 0.5}}),
        ("running", "celery", "host-a:1", lease - timedelta(seconds=5),
         {"latest": {"epoch": 1, "seconds": 0.25}}),
        ("running", "gpu", "host-b:7", lease - timedelta(seconds=1),
         {"batch": 3, "batches": 9, "latest": {"epoch": 2, "steps_per_second": 1500.0}}),
        ("running", "celery", "host-c:9", -timedelta(seconds=30), {"latest": {"seconds": 1.0}}),
    ]  # fmt: skip
    with database() as session:
        for i, (status, queue, worker, left, progress) in enumerate(rows):
            kind = "dqn" if worker == "host-b:7" else "mlp"
            session.add(
                Job(id=f"job{i}", owner_id="someone", status=status, kind=kind, task="t",
                    spec={}, queue=queue, epochs=10, worker=worker, progress=progress,
                    lease_expires_at=None if left is None else now + left)
            )  # fmt: skip
        session.commit()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in metrics.JobCollector().collect()
        for s in family.samples
    }
    assert samples[("keiko_database_up", ())] == 1
    jobs = {dict(labels)["status"]: v for (n, labels), v in samples.items() if n == "keiko_jobs"}
    assert jobs == {
        "queued": 3,
        "running": 4,
        "succeeded": 1,
        "failed": 0,
        "cancelled": 0,
        "pruned": 0,
    }
    assert samples[("keiko_jobs_queued", (("queue", "gpu"),))] == 2
    assert samples[("keiko_jobs_queued", (("queue", "celery"),))] == 1
    assert samples[("keiko_worker_running_jobs", (("worker", "host-a:1"),))] == 2
    assert samples[("keiko_worker_running_jobs", (("worker", "host-b:7"),))] == 1
    # host-a's latest renewal is its job renewed 2 s ago; host-c's ran out 30 s ago.
    age = "keiko_worker_heartbeat_age_seconds"
    assert samples[(age, (("worker", "host-a:1"),))] == pytest.approx(2, abs=0.5)
    assert samples[(age, (("worker", "host-c:9"),))] == pytest.approx(
        30 + lease.total_seconds(), abs=0.5
    )
    stamp = samples[("keiko_worker_last_heartbeat_timestamp_seconds", (("worker", "host-b:7"),))]
    assert stamp == pytest.approx((now - timedelta(seconds=1)).timestamp(), abs=0.5)
    assert samples[("keiko_jobs_lease_expired", ())] == 1
    # 1/0.5 + 1/0.25 epochs a second; the expired job trains nothing.
    assert samples[("keiko_training_epochs_per_second", (("kind", "mlp"),))] == 6
    assert samples[("keiko_training_rl_steps_per_second", (("kind", "dqn"),))] == 1500
    assert not any("job" in value for _, labels in samples for _, value in labels)


def test_a_scrape_survives_the_database_being_down(monkeypatch: pytest.MonkeyPatch) -> None:
    def down() -> Any:
        raise OSError("connection refused")

    monkeypatch.setattr(metrics, "get_sessionmaker", down)
    families = list(metrics.JobCollector().collect())
    assert [f.name for f in families] == ["keiko_database_up"]
    assert families[0].samples[0].value == 0


@pytest.fixture
def gpu(monkeypatch: pytest.MonkeyPatch) -> Iterator[types.SimpleNamespace]:
    """torch.cuda as a machine with one GPU would answer."""
    state = types.SimpleNamespace(initialized=False)
    cuda = torch.cuda
    monkeypatch.setattr(cuda, "is_available", lambda: True)
    monkeypatch.setattr(cuda, "device_count", lambda: 1)
    monkeypatch.setattr(cuda, "is_initialized", lambda: state.initialized)
    monkeypatch.setattr(cuda, "memory_allocated", lambda i: 1000 if state.initialized else 0)
    monkeypatch.setattr(cuda, "memory_reserved", lambda i: 2048 if state.initialized else 0)

    def mem_get_info(index: int) -> tuple[int, int]:
        assert state.initialized, "would create a CUDA context"
        return (6 << 30, 8 << 30)

    monkeypatch.setattr(cuda, "mem_get_info", mem_get_info)
    yield state


def test_gpu_memory_without_creating_a_cuda_context(gpu: types.SimpleNamespace) -> None:
    def collected() -> dict[str, float]:
        return {
            s.name: s.value
            for family in metrics.GpuCollector().collect()
            for s in family.samples
            if s.labels == {"device": "cuda:0"}
        }

    assert collected() == {
        "keiko_gpu_memory_allocated_bytes": 0,
        "keiko_gpu_memory_reserved_bytes": 0,
    }
    gpu.initialized = True  # the API serves a model on the GPU
    assert collected() == {
        "keiko_gpu_memory_allocated_bytes": 1000,
        "keiko_gpu_memory_reserved_bytes": 2048,
        "keiko_gpu_memory_used_bytes": 2 << 30,
        "keiko_gpu_memory_total_bytes": 8 << 30,
    }


def test_no_gpu_metrics_on_a_cpu_only_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert list(metrics.GpuCollector().collect()) == []


def test_predictions_are_counted_per_model_only_behind_the_admin_key() -> None:
    open_metrics = metrics._Predictions(per_model=False, registry=None)
    assert open_metrics.calls._labelnames == ()
    closed = metrics._Predictions(per_model=True, registry=None)
    assert closed.calls._labelnames == ("model",)
    assert closed.rows._labelnames == ("model",) and closed.seconds._labelnames == ("model",)


def test_every_metric_is_documented_in_the_readme() -> None:
    from tests.stack import ROOT

    readme = (ROOT / "README.md").read_text()
    names = {
        "keiko_http_requests_total", "keiko_http_request_duration_seconds",
        "keiko_predictions_total", "keiko_predicted_rows_total",
        "keiko_predict_duration_seconds", "keiko_jobs", "keiko_jobs_queued",
        "keiko_predict_batch_calls", "keiko_predict_batch_rows",
        "keiko_worker_running_jobs", "keiko_worker_last_heartbeat_timestamp_seconds",
        "keiko_worker_heartbeat_age_seconds", "keiko_jobs_lease_expired",
        "keiko_training_epochs_per_second", "keiko_training_rl_steps_per_second",
        "keiko_gpu_memory_allocated_bytes", "keiko_gpu_memory_reserved_bytes",
        "keiko_gpu_memory_used_bytes", "keiko_gpu_memory_total_bytes", "keiko_database_up",
    }  # fmt: skip
    for name in names:
        assert f"`{name}`" in readme, name
    assert "`KEIKO_METRICS_AUTH`" in readme and "PROMETHEUS_MULTIPROC_DIR" in readme


def test_keiko_api_with_several_workers_shares_a_cleared_metrics_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    share_metrics(1)  # one process: nothing to share
    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ
    folder = tmp_path / "prometheus"
    folder.mkdir()
    (folder / "counter_123.db").write_bytes(b"last run")
    (folder / "keep.txt").write_text("not ours")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(folder))
    share_metrics(4)
    assert sorted(p.name for p in folder.iterdir()) == ["keep.txt"]
    assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == str(folder.resolve())
    assert api_command("127.0.0.1", 8000, 4)[-2:] == ["--workers", "4"]
    assert "--workers" not in api_command("127.0.0.1", 8000)
