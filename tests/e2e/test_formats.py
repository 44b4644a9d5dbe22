"""Other ways in: NPZ arrays, Parquet tables, a separate test dataset; and jobs that fail
with a reason."""

from __future__ import annotations

import io
import os

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.datasets import load_digits

from tests.e2e.helpers import diabetes_frame, iris_frame, job_spec, upload, upload_frame
from tests.stack import Stack


def test_npz_arrays_train_and_predict(stack: Stack) -> None:
    digits = load_digits()
    x = digits.images.astype(np.float32)  # (N, 8, 8)
    buffer = io.BytesIO()
    np.savez(buffer, x=x, y=digits.target)
    response = upload(stack.http(), buffer.getvalue(), "digits.npz")
    assert response.status_code == 201, response.text
    dataset = response.json()
    assert dataset["format"] == "npz" and dataset["shape"]["x"] == [1797, 8, 8]
    spec = job_spec(
        dataset["id"],
        target=None,
        model={"kind": "mlp", "hidden_layers": [64]},
        training={"epochs": 10, "batch_size": 32, "test_split": 0.2},
    )
    job = stack.wait_for_job(stack.http().post("/jobs", json=spec).json()["id"])
    assert job["status"] == "succeeded", job["error"]
    assert job["metrics"]["test"]["accuracy"] > 0.85  # chance is 0.1
    model = stack.http().get(f"/models/{job['model_id']}").json()
    assert model["input_schema"] == {"shape": [8, 8]}
    assert model["output"]["labels"] == list(range(10))

    result = stack.http().post(
        "/predict", json={"model_id": job["model_id"], "inputs": x[:4].tolist()}
    )
    assert result.status_code == 200, result.text
    assert len(result.json()["predictions"]) == 4
    wrong = stack.http().post(
        "/predict", json={"model_id": job["model_id"], "inputs": x[:2, :4].tolist()}
    )
    assert wrong.status_code == 422
    assert "shape [8, 8]" in wrong.json()["detail"]


def test_parquet_with_a_separate_test_dataset(stack: Stack) -> None:
    frame = diabetes_frame()
    parts = []
    for part in (frame.iloc[:350], frame.iloc[350:]):
        buffer = io.BytesIO()
        part.to_parquet(buffer, index=False)
        response = upload(stack.http(), buffer.getvalue(), "diabetes.parquet")
        assert response.status_code == 201, response.text
        parts.append(response.json())
    assert parts[0]["format"] == "parquet" and parts[0]["num_rows"] == 350
    spec = job_spec(
        parts[0]["id"],
        test_dataset_id=parts[1]["id"],
        task="regression",
        target="target",
        model={"kind": "linear", "degree": 2, "l2": 0.01},
        training={"validation_split": 0.2, "test_split": 0.5},
    )
    job = stack.wait_for_job(stack.http().post("/jobs", json=spec).json()["id"])
    assert job["status"] == "succeeded", job["error"]
    assert job["test_dataset_id"] == parts[1]["id"]
    assert job["metrics"]["test"]["r2"] > 0.2
    # test_split is ignored when a test dataset is given: 350 rows, 20% validation.
    assert job["checkpoints"][-1]["epoch"] == 1


def test_one_hot_string_features(stack: Stack) -> None:
    rng = np.random.default_rng(0)
    colour = rng.choice(["red", "green", "blue"], size=300)
    size = rng.normal(size=300)
    effect = pd.Series(colour).map({"red": 5.0, "green": -2.0, "blue": 0.0}).to_numpy()
    frame = pd.DataFrame({"colour": colour, "size": size, "y": effect + 3 * size})
    dataset_id = upload_frame(stack.http(), frame)
    spec = job_spec(
        dataset_id,
        task="regression",
        target="y",
        model={"kind": "linear"},
        training={"validation_split": 0, "test_split": 0.2},
    )
    job = stack.wait_for_job(stack.http().post("/jobs", json=spec).json()["id"])
    assert job["status"] == "succeeded", job["error"]
    assert job["metrics"]["test"]["r2"] > 0.999
    model = stack.http().get(f"/models/{job['model_id']}").json()
    colour_schema = model["input_schema"]["features"][0]
    assert colour_schema == {
        "name": "colour",
        "type": "string",
        "categories": ["blue", "green", "red"],
    }
    inputs = [{"colour": "red", "size": 1.0}, {"colour": "purple", "size": 0.0}]
    predicted = stack.http().post("/predict", json={"model_id": job["model_id"], "inputs": inputs})
    assert predicted.status_code == 200, predicted.text
    assert predicted.json()["predictions"][0] == pytest.approx(8.0, abs=1e-3)
    assert predicted.json()["predictions"][1] == pytest.approx(0.0, abs=1.5)  # unseen colour


def test_divergence_fails_the_job_with_the_epoch(stack: Stack) -> None:
    dataset_id = upload_frame(stack.http(), diabetes_frame())
    spec = job_spec(
        dataset_id,
        task="regression",
        target="target",
        model={"kind": "mlp", "hidden_layers": [64, 64]},
        optimizer={"name": "sgd", "lr": 10},
        training={"epochs": 5, "batch_size": 8},
    )
    job = stack.wait_for_job(stack.http().post("/jobs", json=spec).json()["id"])
    assert job["status"] == "failed"
    assert job["error"]["type"] == "DivergedError"
    assert "epoch 1" in job["error"]["message"] and job["model_id"] is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_on_a_cpu_worker_fails_with_a_reason(stack: Stack) -> None:
    dataset_id = upload_frame(stack.http(), iris_frame())
    spec = job_spec(dataset_id, training={"device": "cuda"})
    job = stack.wait_for_job(stack.http().post("/jobs", json=spec).json()["id"])
    assert job["status"] == "failed"
    assert "CUDA" in job["error"]["message"]


def test_deleting_a_dataset_removes_its_file(stack: Stack) -> None:
    dataset_id = upload_frame(stack.http(), iris_frame())
    files = list((stack.data_dir / "artifacts" / "datasets").glob(f"{dataset_id}.*"))
    assert len(files) == 1
    assert stack.http().delete(f"/datasets/{dataset_id}").status_code == 204
    assert not files[0].exists()


def test_a_stored_upload_gets_the_umasks_mode(stack: Stack) -> None:
    # Not 0600: a worker running as another user (same group) must be able to read it.
    dataset_id = upload_frame(stack.http(), iris_frame())
    (stored,) = (stack.data_dir / "artifacts" / "datasets").glob(f"{dataset_id}.*")
    umask = os.umask(0)
    os.umask(umask)
    assert stored.stat().st_mode & 0o777 == 0o666 & ~umask


def test_deleting_a_model_removes_its_files(stack: Stack) -> None:
    dataset_id = upload_frame(stack.http(), iris_frame())
    job = stack.wait_for_job(stack.http().post("/jobs", json=job_spec(dataset_id)).json()["id"])
    model_id = job["model_id"]
    folder = stack.data_dir / "artifacts" / "models" / model_id
    assert (folder / "model.safetensors").exists()
    assert stack.http().delete(f"/models/{model_id}").status_code == 204
    assert not folder.exists()
    assert stack.http().get(f"/models/{model_id}").status_code == 404
    body = {"model_id": model_id, "inputs": [[5.1, 3.5, 1.4, 0.2]]}
    assert stack.http().post("/predict", json=body).status_code == 404
    after = stack.http().get(f"/jobs/{job['id']}").json()
    assert after["status"] == "succeeded" and after["model_id"] is None
    assert stack.http().delete(f"/models/{model_id}").status_code == 404
