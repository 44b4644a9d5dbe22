"""Knowledge distillation over HTTP, with a real worker: a CNN teacher and an MLP student on
scikit-learn's digits (each with its own preprocessing), the student's history with both
loss terms and its predictions; a teacher that cannot teach is a 422 naming why."""

from __future__ import annotations

import io
import time
from typing import Any

import numpy as np
from sklearn.datasets import load_digits

from tests.e2e.helpers import diabetes_frame, iris_frame, upload, upload_frame
from tests.stack import Stack

CONV = [
    {"type": "conv", "out_channels": 8, "kernel_size": 3, "padding": 1},
    {"type": "relu"},
    {"type": "max_pool", "kernel_size": 2},
]


def digits(stack: Stack, classes: int = 10) -> tuple[str, np.ndarray, np.ndarray]:
    """The 8x8 digits as an NPZ of grey images (N, 8, 8) with values 0..16."""
    bunch = load_digits()
    keep = bunch.target < classes
    x, y = bunch.images[keep].astype(np.float32), bunch.target[keep]
    buffer = io.BytesIO()
    np.savez(buffer, x=x, y=y)
    answer = upload(stack.http(), buffer.getvalue(), f"digits{classes}.npz")
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"]), x, y


def train(stack: Stack, spec: dict[str, Any]) -> dict[str, Any]:
    answer = stack.http().post("/jobs", json=spec)
    assert answer.status_code == 202, answer.text
    job = stack.wait_for_job(answer.json()["id"])
    assert job["status"] == "succeeded", job["error"]
    return job


def cnn_teacher(stack: Stack, dataset: str) -> dict[str, Any]:
    return train(
        stack,
        {
            "dataset_id": dataset,
            "task": "classification",
            "model": {"kind": "cnn", "layers": CONV, "head": [32]},
            "optimizer": {"name": "adam", "lr": 0.01},
            "training": {"epochs": 6, "batch_size": 64, "seed": 0},
        },
    )


def student(dataset: str, teacher: str, **distillation: Any) -> dict[str, Any]:
    return {
        "dataset_id": dataset,
        "task": "classification",
        "model": {
            "kind": "mlp",
            "hidden_layers": [32],
            "distillation": {"teacher_model_id": teacher, **distillation},
        },
        "optimizer": {"name": "adam", "lr": 0.01},
        "training": {"epochs": 4, "batch_size": 64, "seed": 0},
    }


def test_a_student_learns_from_a_cnn_teacher_and_predicts(stack: Stack) -> None:
    dataset, x, y = digits(stack)
    teacher = cnn_teacher(stack, dataset)
    assert teacher["metrics"]["test"]["accuracy"] > 0.9
    job = train(stack, student(dataset, teacher["model_id"], temperature=3.0, alpha=0.8))
    spec = job["spec"]["model"]["distillation"]
    assert spec == {"teacher_model_id": teacher["model_id"], "temperature": 3.0, "alpha": 0.8}
    entries = stack.http().get(f"/jobs/{job['id']}/history").json()["items"]
    assert len(entries) == 4
    for entry in entries:
        soft, hard = entry["train_soft_loss"], entry["train_hard_loss"]
        assert soft > 0 and hard > 0
        assert abs(entry["train_loss"] - (0.8 * soft + 0.2 * hard)) < 1e-6 * entry["train_loss"]
    assert entries[-1]["train_soft_loss"] < entries[0]["train_soft_loss"]
    assert job["metrics"]["test"]["accuracy"] > 0.85

    answer = stack.http().post(
        "/predict", json={"model_id": job["model_id"], "inputs": x[:40].tolist()}
    )
    assert answer.status_code == 200, answer.text
    predicted = np.array(answer.json()["predictions"])
    assert (predicted == y[:40]).mean() > 0.85


def test_teachers_that_cannot_teach_are_refused_with_a_422(stack: Stack) -> None:
    dataset, _, _ = digits(stack)
    five, _, _ = digits(stack, classes=5)
    minimal = {"model": {"kind": "mlp", "hidden_layers": [8]}, "training": {"epochs": 1}}
    other_classes = train(stack, {"dataset_id": five, "task": "classification", **minimal})
    table = upload_frame(stack.http(), iris_frame())
    other_shape = train(
        stack, {"dataset_id": table, "task": "classification", "target": "species", **minimal}
    )
    numbers = upload_frame(stack.http(), diabetes_frame())
    other_task = train(
        stack, {"dataset_id": numbers, "task": "regression", "target": "target", **minimal}
    )
    theirs = stack.client_for(stack.new_user("other-teacher"))
    their_dataset = upload(theirs, _npz_of(load_digits()), "theirs.npz").json()["id"]
    posted = theirs.post(
        "/jobs", json={"dataset_id": their_dataset, "task": "classification", **minimal}
    )
    assert posted.status_code == 202, posted.text
    their_model = None
    deadline = time.monotonic() + 180
    while their_model is None and time.monotonic() < deadline:
        their_model = theirs.get(f"/jobs/{posted.json()['id']}").json()["model_id"]
        time.sleep(0.2)
    assert their_model is not None

    refusals = {
        their_model: f"no model with id {their_model!r}",
        "no-such-model": "no model with id 'no-such-model'",
        other_task["model_id"]: "is a regression model; a teacher must be a classifier",
        other_classes["model_id"]: "was trained on 5 classes; this dataset has 10",
        other_shape["model_id"]: "takes a table's columns; this dataset is arrays",
    }
    for teacher, reason in refusals.items():
        answer = stack.http().post("/jobs", json=student(dataset, teacher))
        assert answer.status_code == 422, (teacher, answer.text)
        assert reason in answer.json()["detail"], answer.text
    # A teacher of its own kind of data is taken; deleted while the job waits, the job fails
    # saying so.
    teacher = other_shape["model_id"]
    on_a_table = {**student(table, teacher), "target": "species"}
    stack.stop_worker()
    try:
        queued = stack.http().post("/jobs", json=on_a_table)
        assert queued.status_code == 202, queued.text
        assert stack.http().delete(f"/models/{teacher}").status_code == 204
    finally:
        stack.start_worker()
    failed = stack.wait_for_job(queued.json()["id"])
    assert failed["status"] == "failed"
    assert f"the teacher model {teacher} was deleted" in failed["error"]["message"]


def _npz_of(bunch: Any) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, x=bunch.images.astype(np.float32), y=bunch.target)
    return buffer.getvalue()
