"""A real Keiko deployment for end-to-end tests: migrations, a Celery worker process and
the API under uvicorn, all as subprocesses, talked to over HTTP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.services import (
    S3Server,
    s3_server,
    temporary_postgres_database,
    temporary_redis_prefix,
)

ROOT = Path(__file__).resolve().parent.parent
ADMIN_KEY = "test-admin-key-0123456789abcdef0123456789"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Stack:
    name: str
    data_dir: Path
    env: dict[str, str]
    base_url: str = ""
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    client: httpx.Client | None = None
    # The worker's own settings where they differ from the API's (its data directory on
    # another "machine").
    worker_env: dict[str, str] | None = None
    s3: S3Server | None = None  # the object store of an "object_store" deployment

    def _spawn(
        self, name: str, args: list[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        log = (self.data_dir / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            args, cwd=ROOT, env=env or self.env, stdout=log, stderr=subprocess.STDOUT
        )
        self.processes[name] = proc
        return proc

    def start(self, worker: bool = True) -> Stack:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "service.cli", "migrate"],
            cwd=ROOT, env=self.env, check=True, capture_output=True,
        )  # fmt: skip
        if worker:
            self.start_worker()
        self.base_url = f"http://127.0.0.1:{free_port()}"
        self.client = httpx.Client(base_url=self.base_url, timeout=60)
        self._start_api()
        if self.env.get("KEIKO_AUTH") == "true":  # tests act as one user unless they say
            self.client.headers["Authorization"] = f"Bearer {self.new_user('alice')}"
        return self

    def start_worker(self, name: str = "worker", env: dict[str, str] | None = None) -> None:
        self._spawn(
            name,
            [sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker", "-Q",
             "celery", "--pool", "solo", "--without-gossip", "--without-mingle",
             "--loglevel", "INFO", "-n", f"{name}@%h"],
            env or self.worker_env,
        )  # fmt: skip

    def kill_worker(self) -> None:
        """SIGKILL: no clean shutdown, no acknowledgement, no last words."""
        worker = self.processes["worker"]
        worker.kill()
        worker.wait()

    def stop_worker(self, timeout: float = 30) -> float:
        """SIGTERM, as a deploy or Ctrl-C would: a warm shutdown. Returns the seconds it
        took the worker to exit."""
        worker = self.processes["worker"]
        started = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=timeout)
        return time.monotonic() - started

    def _start_api(self) -> None:
        """uvicorn on `base_url`'s port; returns once /health answers."""
        port = self.base_url.rpartition(":")[2]
        self._spawn(
            "api",
            [sys.executable, "-m", "uvicorn", "service.main:app", "--host", "127.0.0.1",
             "--port", port, "--no-access-log"],
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while True:
            try:
                if self.http().get("/health").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or self.processes["api"].poll() is not None:
                raise RuntimeError(f"API did not start; log:\n{self.log('api')}")
            time.sleep(0.2)

    def restart_api(self) -> None:
        """SIGKILL the API (a crash), then start it again on the same address, so the same
        client keeps working once it answers."""
        api = self.processes["api"]
        api.kill()
        api.wait()
        self._start_api()

    def log(self, name: str) -> str:
        path = self.data_dir / f"{name}.log"
        return path.read_text(errors="replace")[-20000:] if path.exists() else ""

    def stop(self) -> None:
        if self.client is not None:
            self.client.close()
        for proc in self.processes.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.processes.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    # Helpers for tests ---------------------------------------------------------------

    def http(self) -> httpx.Client:
        assert self.client is not None
        return self.client

    def admin(self) -> httpx.Client:
        """A client that sends the admin key."""
        headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
        return httpx.Client(base_url=self.base_url, timeout=60, headers=headers)

    def new_user(self, name: str) -> str:
        """Create a user (unique name) with one API key; return the key."""
        with self.admin() as admin:
            created = admin.post("/users", json={"name": f"{name}-{uuid.uuid4().hex[:8]}"})
            assert created.status_code == 201, created.text
            key = admin.post(f"/users/{created.json()['id']}/keys", json={"name": "tests"})
            assert key.status_code == 201, key.text
            return str(key.json()["key"])

    def client_for(self, key: str | None) -> httpx.Client:
        """A client with another user's key, or with none."""
        headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
        return httpx.Client(base_url=self.base_url, timeout=60, headers=headers)

    def wait_for_job(self, job_id: str, timeout: float = 180) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.http().get(f"/jobs/{job_id}").json()
            if job["status"] in ("succeeded", "failed", "cancelled", "pruned"):
                return dict(job)
            time.sleep(0.25)
        raise AssertionError(
            f"job {job_id} did not finish in {timeout}s: {job}\nworker log:\n{self.log('worker')}"
        )


def stack_env(data_dir: Path, **overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEIKO_")}
    env.update(
        {
            "KEIKO_DATA_DIR": str(data_dir),
            "KEIKO_MAX_UPLOAD_BYTES": str(2_000_000),
            "KEIKO_CANCEL_POLL_SECONDS": "0.2",
            "KEIKO_PROGRESS_SECONDS": "0.1",
            "KEIKO_EVENT_POLL_SECONDS": "0.2",
            "KEIKO_JOB_LEASE_SECONDS": "3",
            "KEIKO_DISPATCH_SWEEP_SECONDS": "0.5",
            "KEIKO_AUTH": "true",
            "KEIKO_ADMIN_KEY": ADMIN_KEY,
            "KEIKO_RATE_LIMIT_JOBS": "100000/minute",
            "KEIKO_RATE_LIMIT_PREDICT": "100000/minute",
            "KEIKO_MAX_ACTIVE_JOBS": "1000",
            "PYTHONUNBUFFERED": "1",
            "OMP_NUM_THREADS": "1",
        }
    )
    env.update(overrides)
    return env


@contextmanager
def postgres_redis_stack(
    name: str, data_dir: Path, *, worker: bool = True, **overrides: str
) -> Iterator[Stack]:
    """A deployment on this run's own PostgreSQL database and Redis key prefix, both
    dropped after; `overrides` are KEIKO_* settings."""
    with (
        temporary_postgres_database() as database_url,
        temporary_redis_prefix() as (broker_url, prefix),
    ):
        env = stack_env(
            data_dir,
            KEIKO_DATABASE_URL=database_url,
            KEIKO_BROKER_URL=broker_url,
            KEIKO_BROKER_KEY_PREFIX=prefix,
            **overrides,
        )
        stack = Stack(name, data_dir, env)
        try:
            yield stack.start(worker=worker)
        finally:
            stack.stop()


@contextmanager
def object_store_stack(
    name: str, data_dir: Path, *, worker: bool = True, **overrides: str
) -> Iterator[Stack]:
    """Machines that share only PostgreSQL, Redis and S3-compatible object storage (moto's
    server): the API runs on data_dir/api and the worker on data_dir/worker, each empty,
    and artifacts live in a fresh bucket. `stack.worker_env_for(folder)` gives another
    worker its own directory."""
    with (
        temporary_postgres_database() as database_url,
        temporary_redis_prefix() as (broker_url, prefix),
        s3_server() as s3,
    ):
        shared = {
            "KEIKO_DATABASE_URL": database_url,
            "KEIKO_BROKER_URL": broker_url,
            "KEIKO_BROKER_KEY_PREFIX": prefix,
            "KEIKO_ARTIFACT_URL": s3.url(),
            **overrides,
        }
        env = stack_env(data_dir / "api", **shared) | s3.env
        stack = Stack(name, data_dir, env, worker_env=stack_env(data_dir / "worker", **shared))
        stack.worker_env = (stack.worker_env or {}) | s3.env
        stack.s3 = s3
        try:
            yield stack.start(worker=worker)
        finally:
            stack.stop()


def worker_env_for(stack: Stack, folder: Path) -> dict[str, str]:
    """The environment of one more worker of `stack`, on its own data directory."""
    return {**(stack.worker_env or stack.env), "KEIKO_DATA_DIR": str(folder)}


DEPLOYMENTS = ("embedded", "postgres_redis")
# The shipped timings, for benchmarks (stack_env makes tests' stacks report more often).
SHIPPED_TIMINGS = {"KEIKO_PROGRESS_SECONDS": "0.5", "KEIKO_EVENT_POLL_SECONDS": "0.5"}


@contextmanager
def started_deployment(kind: str, data_dir: Path, **overrides: str) -> Iterator[Stack]:
    """A running deployment of `kind` (one of DEPLOYMENTS), stopped after; `overrides` are
    KEIKO_* settings."""
    if kind == "postgres_redis":
        with postgres_redis_stack(kind, data_dir, **overrides) as stack:
            yield stack
        return
    if kind == "object_store":
        with object_store_stack(kind, data_dir, **overrides) as stack:
            yield stack
        return
    stack = Stack(kind, data_dir, stack_env(data_dir, **overrides))
    try:
        yield stack.start()
    finally:
        stack.stop()
