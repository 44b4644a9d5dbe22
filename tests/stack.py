"""A real Keiko deployment for end-to-end tests: migrations, a Celery worker process and
the API under uvicorn, all as subprocesses, talked to over HTTP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent


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

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        log = (self.data_dir / f"{name}.log").open("ab")
        proc = subprocess.Popen(args, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.processes[name] = proc
        return proc

    def start(self) -> Stack:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "service.cli", "migrate"],
            cwd=ROOT, env=self.env, check=True, capture_output=True,
        )  # fmt: skip
        self.start_worker()
        port = free_port()
        self.base_url = f"http://127.0.0.1:{port}"
        self._spawn(
            "api",
            [sys.executable, "-m", "uvicorn", "service.main:app", "--host", "127.0.0.1",
             "--port", str(port), "--no-access-log"],
        )  # fmt: skip
        self.client = httpx.Client(base_url=self.base_url, timeout=60)
        deadline = time.monotonic() + 60
        while True:
            try:
                if self.client.get("/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or self.processes["api"].poll() is not None:
                raise RuntimeError(f"API did not start; log:\n{self.log('api')}")
            time.sleep(0.2)
        return self

    def start_worker(self) -> None:
        self._spawn(
            "worker",
            [sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker", "-Q",
             "celery", "--pool", "solo", "--without-gossip", "--without-mingle",
             "--loglevel", "INFO"],
        )  # fmt: skip

    def kill_worker(self) -> None:
        """SIGKILL: no clean shutdown, no acknowledgement, no last words."""
        worker = self.processes["worker"]
        worker.kill()
        worker.wait()

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

    def wait_for_job(self, job_id: str, timeout: float = 180) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.http().get(f"/jobs/{job_id}").json()
            if job["status"] in ("succeeded", "failed", "cancelled"):
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
            "KEIKO_JOB_LEASE_SECONDS": "3",
            "KEIKO_DISPATCH_SWEEP_SECONDS": "0.5",
            "PYTHONUNBUFFERED": "1",
            "OMP_NUM_THREADS": "1",
        }
    )
    env.update(overrides)
    return env
