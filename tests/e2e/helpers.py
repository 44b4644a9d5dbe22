"""Small real datasets for end-to-end tests, from scikit-learn's bundled data."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx
import pandas as pd
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris

if TYPE_CHECKING:
    from tests.stack import Stack


def iris_frame() -> pd.DataFrame:
    bunch = load_iris(as_frame=True)
    frame = bunch.frame.rename(columns=lambda c: c.replace(" (cm)", "").replace(" ", "_"))
    frame["species"] = [str(bunch.target_names[t]) for t in bunch.target]
    return frame.drop(columns=["target"])


def diabetes_frame() -> pd.DataFrame:
    return load_diabetes(as_frame=True, scaled=False).frame  # target column: "target"


def cancer_frame() -> pd.DataFrame:
    frame = load_breast_cancer(as_frame=True).frame
    return frame.rename(columns=lambda c: c.replace(" ", "_"))


def csv_bytes(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False).encode()


def upload(client: httpx.Client, content: bytes, filename: str, **fields: str) -> httpx.Response:
    return client.post("/datasets", files={"file": (filename, io.BytesIO(content))}, data=fields)


def upload_frame(client: httpx.Client, frame: pd.DataFrame, name: str = "data.csv") -> str:
    response = upload(client, csv_bytes(frame), name)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def job_spec(dataset_id: str, **overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "dataset_id": dataset_id,
        "task": "classification",
        "target": "species",
        "model": {"kind": "mlp", "hidden_layers": [16]},
        "optimizer": {"name": "adam", "lr": 0.01},
        "training": {"epochs": 3, "batch_size": 16, "seed": 0},
    }
    spec.update(overrides)
    return spec


def long_job_spec(stack: Stack, *, seed: int, epochs: int) -> dict[str, Any]:
    """A regression MLP of a fraction of a second an epoch here (6000 rows, batch 8) with a
    checkpoint every epoch, all kept: long enough to break something mid-job."""
    big = diabetes_frame().sample(n=6000, replace=True, random_state=seed)
    return job_spec(
        upload_frame(stack.http(), big),
        task="regression",
        target="target",
        model={"kind": "mlp", "hidden_layers": [64, 64]},
        training={
            "epochs": epochs,
            "batch_size": 8,
            "checkpoint_every": 1,
            "keep_checkpoints": None,
            "seed": seed,
        },
    )


def start_long_job(stack: Stack, *, seed: int, epochs: int = 12) -> str:
    response = stack.http().post("/jobs", json=long_job_spec(stack, seed=seed, epochs=epochs))
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def wait_until(stack: Stack, job_id: str, done: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """Poll the job until `done(job)`; fails if it ends first or after two minutes."""
    deadline = time.monotonic() + 120
    while not done(job := stack.http().get(f"/jobs/{job_id}").json()):
        assert job["status"] in ("queued", "running"), job
        assert time.monotonic() < deadline, stack.log("worker")
        time.sleep(0.05)
    return dict(job)
