"""The README's `serve` command: migrations, a worker and the API from one process."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.e2e.helpers import iris_frame, job_spec, upload_frame
from tests.stack import ROOT, free_port, stack_env


def test_serve_runs_api_and_worker_on_embedded_defaults(tmp_path: Path) -> None:
    port = free_port()
    log = (tmp_path / "serve.log").open("wb")
    env = stack_env(tmp_path / "var")
    del env["KEIKO_AUTH"], env["KEIKO_ADMIN_KEY"]  # the defaults: auth off, loudly
    process = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--port", str(port)],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
        deadline = time.monotonic() + 60
        while True:
            try:
                if client.get("/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, (
                tmp_path / "serve.log"
            ).read_text()
            time.sleep(0.3)
        assert (tmp_path / "var" / "keiko.db").exists()
        dataset_id = upload_frame(client, iris_frame())
        job_id = client.post("/jobs", json=job_spec(dataset_id)).json()["id"]
        while (job := client.get(f"/jobs/{job_id}").json())["status"] in ("queued", "running"):
            assert time.monotonic() < deadline + 60
            time.sleep(0.3)
        assert job["status"] == "succeeded", job
        assert "AUTHENTICATION IS OFF" in (tmp_path / "serve.log").read_text()
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
