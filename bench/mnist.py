"""The real MNIST for the benchmarks: the IDX files in `../shared/data/mnist` (not needed by
the test suite), uploaded to a running stack, and jobs run to their end."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.stack import ROOT, Stack, stack_env

MNIST = ROOT.parent / "shared" / "data" / "mnist"
PARTS = {"train": "train", "test": "t10k"}  # 60,000 training and 10,000 test images


def upload_mnist(stack: Stack, part: str = "train") -> str:
    """Upload one part's images and labels as one IDX dataset; its id."""
    prefix = PARTS[part]
    files = [
        ("file", (name, (MNIST / name).read_bytes()))
        for name in (f"{prefix}-images-idx3-ubyte.gz", f"{prefix}-labels-idx1-ubyte.gz")
    ]
    response = stack.http().post("/datasets", files=files, timeout=600)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def finished_job(stack: Stack, spec: dict[str, Any]) -> dict[str, Any]:
    """Post `spec` and wait for the job to succeed (hours at most); the job, with `seconds`
    from its start to its end added."""
    response = stack.http().post("/jobs", json=spec)
    assert response.status_code == 202, response.text
    job = stack.wait_for_job(response.json()["id"], timeout=6 * 3600)
    assert job["status"] == "succeeded", job["error"]
    started = datetime.fromisoformat(job["started_at"])
    job["seconds"] = (datetime.fromisoformat(job["finished_at"]) - started).total_seconds()
    return job


@contextmanager
def mnist_stack(name: str) -> Iterator[Stack]:
    """An embedded deployment (API and one worker, with torch's own thread count) that
    takes uploads of MNIST's size; stopped on leaving."""
    with tempfile.TemporaryDirectory() as folder:
        env = stack_env(Path(folder), KEIKO_MAX_UPLOAD_BYTES=str(200_000_000))
        env.pop("OMP_NUM_THREADS", None)
        stack = Stack(name, Path(folder), env).start()
        try:
            yield stack
        finally:
            stack.stop()
