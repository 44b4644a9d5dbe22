"""Train, poll, predict and cancel over HTTP with a real worker, on both deployments."""

from __future__ import annotations

import time

import numpy as np
import pytest
from sklearn.linear_model import LinearRegression

from tests.e2e.helpers import (
    cancer_frame,
    diabetes_frame,
    iris_frame,
    job_spec,
    upload_frame,
)
from tests.stack import Stack


def run(stack: Stack, spec: dict) -> dict:
    response = stack.http().post("/jobs", json=spec)
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "queued"
    job = stack.wait_for_job(response.json()["id"])
    assert job["status"] == "succeeded", (job["error"], stack.log("worker"))
    return job


def test_normal_equation_matches_least_squares_and_predicts(stack: Stack) -> None:
    frame = diabetes_frame()
    dataset_id = upload_frame(stack.http(), frame)
    spec = job_spec(
        dataset_id,
        task="regression",
        target="target",
        model={"kind": "linear", "solver": "normal_equation"},
        training={"validation_split": 0, "test_split": 0},
    )
    job = run(stack, spec)
    assert job["progress"]["fraction"] == 1.0
    assert len(job["history"]) == 1 and job["model_id"]
    assert job["checkpoints"] and job["checkpoints"][-1]["sha256"]

    features = frame.drop(columns=["target"])
    reference = LinearRegression().fit(features, frame["target"])
    rows = features.iloc[:20]
    response = stack.http().post(
        "/predict", json={"model_id": job["model_id"], "inputs": rows.to_dict(orient="records")}
    )
    assert response.status_code == 200, response.text
    predicted = np.array(response.json()["predictions"])
    # float32 inputs at predict time; the fit itself is float64.
    np.testing.assert_allclose(predicted, reference.predict(rows), rtol=1e-4)
    as_arrays = stack.http().post(
        "/predict", json={"model_id": job["model_id"], "inputs": rows.to_numpy().tolist()}
    )
    assert as_arrays.json()["predictions"] == response.json()["predictions"]

    train_mse = float(np.mean((reference.predict(features) - frame["target"]) ** 2))
    assert job["metrics"]["train"]["mse"] == pytest.approx(train_mse, rel=1e-4)

    model = stack.http().get(f"/models/{job['model_id']}").json()
    assert model["job_id"] == job["id"] and model["kind"] == "linear"
    assert [f["name"] for f in model["input_schema"]["features"]] == list(features.columns)


def test_logistic_regression_by_sgd(stack: Stack) -> None:
    dataset_id = upload_frame(stack.http(), cancer_frame())
    spec = job_spec(
        dataset_id,
        target="target",
        model={"kind": "linear", "solver": "sgd", "l2": 0.001},
        optimizer={"name": "sgd", "lr": 0.1},
        training={"epochs": 10, "batch_size": 32, "test_split": 0.25, "seed": 1},
    )
    job = run(stack, spec)
    assert job["metrics"]["test"]["accuracy"] > 0.9
    assert len(job["history"]) == 10
    assert all(entry["train_loss"] is not None for entry in job["history"])


def test_mlp_classification_with_string_labels(stack: Stack) -> None:
    frame = iris_frame()
    dataset_id = upload_frame(stack.http(), frame)
    spec = job_spec(
        dataset_id,
        model={"kind": "mlp", "hidden_layers": [32, 16], "batch_norm": True, "dropout": 0.1},
        optimizer={"name": "adam", "lr": 0.01},
        training={"epochs": 40, "batch_size": 16, "validation_split": 0.2, "test_split": 0.2},
    )
    job = run(stack, spec)
    test = job["metrics"]["test"]
    assert test["accuracy"] > 0.8  # chance is 1/3
    assert np.array(test["confusion_matrix"]).sum() == 30
    assert {"val_accuracy", "val_f1", "val_log_loss", "val_loss", "train_loss"} <= set(
        job["history"][-1]
    )

    records = frame.drop(columns=["species"]).iloc[[0, 60, 120]].to_dict(orient="records")
    body = stack.http().post("/predict", json={"model_id": job["model_id"], "inputs": records})
    assert body.status_code == 200, body.text
    result = body.json()
    assert set(result["predictions"]) <= {"setosa", "versicolor", "virginica"}
    assert result["predictions"][0] == "setosa"
    assert np.allclose(np.sum(result["probabilities"], axis=1), 1.0)


def test_mlp_regression(stack: Stack) -> None:
    dataset_id = upload_frame(stack.http(), diabetes_frame())
    spec = job_spec(
        dataset_id,
        task="regression",
        target="target",
        model={"kind": "mlp", "hidden_layers": [32], "activation": "tanh"},
        optimizer={"name": "momentum", "lr": 0.01, "momentum": 0.9},
        training={
            "epochs": 30,
            "batch_size": 32,
            "checkpoint_every": 10,
            "early_stopping": {"patience": 5},
        },
    )
    job = run(stack, spec)
    test = job["metrics"]["test"]
    assert test["r2"] > 0.2
    assert test["rmse"] == pytest.approx(test["mse"] ** 0.5)
    epochs = [c["epoch"] for c in job["checkpoints"]]
    assert epochs == sorted(epochs) and epochs[-1] == len(job["history"])


def test_cancel_a_running_job(stack: Stack) -> None:
    frame = diabetes_frame()
    big = frame.sample(n=20_000, replace=True, random_state=0)
    dataset_id = upload_frame(stack.http(), big)
    spec = job_spec(
        dataset_id,
        task="regression",
        target="target",
        model={"kind": "mlp", "hidden_layers": [64, 64]},
        training={"epochs": 1000, "batch_size": 8},
    )
    job_id = stack.http().post("/jobs", json=spec).json()["id"]
    deadline = time.monotonic() + 60
    while stack.http().get(f"/jobs/{job_id}").json()["status"] != "running":
        assert time.monotonic() < deadline, stack.log("worker")
        time.sleep(0.1)
    response = stack.http().post(f"/jobs/{job_id}/cancel")
    assert response.status_code == 202
    started = time.monotonic()
    job = stack.wait_for_job(job_id, timeout=30)
    assert job["status"] == "cancelled"
    assert time.monotonic() - started < 10
    assert job["model_id"] is None
    # None was due (one a minute by default); the one written where it stopped, mid-epoch
    # or after a whole one.
    [checkpoint] = job["checkpoints"]
    stopped = checkpoint["metrics"]
    assert stopped.get("batch", 0) < stopped.get("batches", 1)
    assert checkpoint["epoch"] == len(job["history"]) + ("batch" in stopped)
    again = stack.http().post(f"/jobs/{job_id}/cancel")
    assert again.status_code == 409


def test_cancel_a_queued_job_and_list_jobs(stack: Stack) -> None:
    dataset_id = upload_frame(stack.http(), iris_frame())
    blocker = (
        stack.http()
        .post("/jobs", json=job_spec(dataset_id, training={"epochs": 200, "batch_size": 1}))
        .json()
    )
    queued = stack.http().post("/jobs", json=job_spec(dataset_id)).json()
    response = stack.http().post(f"/jobs/{queued['id']}/cancel")
    assert response.status_code == 202
    assert response.json()["status"] == "cancelled"
    stack.http().post(f"/jobs/{blocker['id']}/cancel")
    assert stack.wait_for_job(blocker["id"])["status"] == "cancelled"

    listing = stack.http().get("/jobs", params={"status": "cancelled", "limit": 1}).json()
    assert listing["total"] >= 2 and len(listing["items"]) == 1
    everything = stack.http().get("/jobs").json()["items"]
    created = [j["created_at"] for j in everything]
    assert created == sorted(created, reverse=True)


def test_retention_keeps_the_latest_checkpoints_and_the_best_and_deletes_the_rest(
    stack: Stack,
) -> None:
    spec = job_spec(
        upload_frame(stack.http(), iris_frame()),
        training={
            "epochs": 8,
            "batch_size": 16,
            "seed": 0,
            "checkpoint_every": 1,
            "keep_checkpoints": 2,
            "keep_best_checkpoint": True,
        },
    )
    job = run(stack, spec)
    val_loss = {e["epoch"]: e["val_loss"] for e in job["history"]}
    best = min(sorted(val_loss, reverse=True), key=lambda epoch: val_loss[epoch])
    kept = sorted({7, 8, best})
    assert [c["epoch"] for c in job["checkpoints"]] == kept
    folder = stack.data_dir / "artifacts" / "jobs" / job["id"]
    on_disk = sorted(int(p.name.split("-")[1]) for p in folder.glob("epoch-*.safetensors"))
    assert on_disk == kept  # the others' files are gone, their sidecars too
    assert len(list(folder.glob("epoch-*"))) == 2 * len(kept)
    # The model is a file of its own: it predicts after its checkpoints were thinned.
    body = {"model_id": job["model_id"], "inputs": [[5.1, 3.5, 1.4, 0.2]]}
    assert stack.http().post("/predict", json=body).status_code == 200
