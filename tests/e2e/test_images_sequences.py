"""Images and sequences over HTTP with the real worker: IDX and zip uploads, CNN and RNN
jobs, predictions from arrays, base64 PNG and uploaded files, and the bad inputs."""

from __future__ import annotations

import base64
import gzip
import io
import struct
import zipfile

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from tests.e2e.helpers import job_spec, upload, upload_frame
from tests.stack import Stack


def idx_images(x: np.ndarray) -> bytes:
    n, h, w = x.shape
    return struct.pack(">IIII", 0x803, n, h, w) + x.astype(np.uint8).tobytes()


def idx_labels(y: np.ndarray) -> bytes:
    return struct.pack(">II", 0x801, len(y)) + y.astype(np.uint8).tobytes()


def digits() -> tuple[np.ndarray, np.ndarray]:
    bunch = load_digits()
    return (bunch.images * 16).clip(0, 255).astype(np.uint8), bunch.target  # (N, 8, 8)


def png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def upload_files(stack: Stack, files: list[tuple[str, bytes]]):  # noqa: ANN201
    parts = [("file", (name, io.BytesIO(content))) for name, content in files]
    return stack.http().post("/datasets", files=parts)


def train(stack: Stack, spec: dict) -> dict:
    response = stack.http().post("/jobs", json=spec)
    assert response.status_code == 202, response.text
    job = stack.wait_for_job(response.json()["id"], timeout=300)
    assert job["status"] == "succeeded", (job["error"], stack.log("worker"))
    return job


CNN_LAYERS = [
    {"type": "conv", "out_channels": 16, "kernel_size": 3, "padding": 1},
    {"type": "batch_norm"},
    {"type": "relu"},
    {"type": "max_pool", "kernel_size": 2},
    {"type": "conv", "out_channels": 32, "kernel_size": 3, "padding": 1,
     "depthwise_separable": True},
    {"type": "relu"},
]  # fmt: skip


def test_idx_upload_cnn_and_every_way_to_predict(stack: Stack) -> None:
    x, y = digits()
    response = upload_files(
        stack,
        [("images-idx3-ubyte.gz", gzip.compress(idx_images(x))), ("labels-idx1-ubyte", idx_labels(y))],
    )
    assert response.status_code == 201, response.text
    dataset = response.json()
    assert dataset["format"] == "idx" and dataset["num_rows"] == len(y)
    assert dataset["shape"]["x"] == [len(y), 1, 8, 8] and dataset["shape"]["num_classes"] == 10
    assert sum(dataset["shape"]["class_counts"].values()) == len(y)

    spec = job_spec(
        dataset["id"],
        target=None,
        model={"kind": "cnn", "layers": CNN_LAYERS, "head": [32]},
        optimizer={"name": "adam", "lr": 0.003},
        training={"epochs": 8, "batch_size": 64, "test_split": 0.2},
    )
    job = train(stack, spec)
    assert job["metrics"]["test"]["accuracy"] > 0.85  # chance is 0.1
    assert len(job["metrics"]["test"]["per_class_accuracy"]) == 10
    model_id = job["model_id"]

    arrays = stack.http().post("/predict", json={"model_id": model_id, "inputs": x[:3].tolist()})
    assert arrays.status_code == 200, arrays.text
    encoded = [base64.b64encode(png(image)).decode() for image in x[:3]]
    b64 = stack.http().post("/predict", json={"model_id": model_id, "inputs": encoded})
    assert b64.status_code == 200, b64.text
    assert b64.json()["predictions"] == arrays.json()["predictions"]
    files = [("file", (f"{i}.png", png(image))) for i, image in enumerate(x[:3])]
    multipart = stack.http().post("/predict/files", data={"model_id": model_id}, files=files)
    assert multipart.status_code == 200, multipart.text
    assert multipart.json()["predictions"] == arrays.json()["predictions"]

    too_big = base64.b64encode(png(np.zeros((16, 16), np.uint8))).decode()
    wrong = stack.http().post("/predict", json={"model_id": model_id, "inputs": [too_big]})
    assert wrong.status_code == 422
    assert "16x16" in wrong.json()["detail"] and "8x8" in wrong.json()["detail"]


def test_zip_of_class_folders(stack: Stack) -> None:
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for label, level in (("dark", 40), ("bright", 200)):
            for i in range(40):
                image = (level + rng.normal(0, 20, (12, 12))).clip(0, 255).astype(np.uint8)
                archive.writestr(f"shapes/{label}/{i}.png", png(image))
    response = upload(stack.http(), buffer.getvalue(), "shapes.zip")
    assert response.status_code == 201, response.text
    dataset = response.json()
    assert dataset["format"] == "images"
    assert dataset["shape"]["class_counts"] == {"bright": 40, "dark": 40}
    spec = job_spec(
        dataset["id"],
        target=None,
        model={"kind": "cnn", "layers": CNN_LAYERS[:4]},
        training={"epochs": 5, "batch_size": 16, "test_split": 0.25},
    )
    job = train(stack, spec)
    assert job["metrics"]["test"]["accuracy"] >= 0.9
    files = [("file", ("a.png", png(np.full((12, 12), 230, np.uint8))))]
    answer = stack.http().post("/predict/files", data={"model_id": job["model_id"]}, files=files)
    assert answer.status_code == 200, answer.text
    assert answer.json()["predictions"] == ["bright"]


def sine_sequences(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = np.arange(24)
    freq = rng.choice([0.15, 0.6], size=n)
    phase = rng.uniform(0, 2 * np.pi, size=n)
    x = np.sin(freq[:, None] * t + phase[:, None]) + rng.normal(0, 0.1, (n, 24))
    return x[:, :, None].astype(np.float32), (freq > 0.3).astype(np.int64)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_rnn_sequence_classification(stack: Stack, cell: str) -> None:
    x, y = sine_sequences(400, seed=1)
    buffer = io.BytesIO()
    np.savez(buffer, x=x, y=y)
    dataset = upload(stack.http(), buffer.getvalue(), "waves.npz").json()
    spec = job_spec(
        dataset["id"],
        target=None,
        model={"kind": "rnn", "cell": cell, "hidden_size": 16, "bidirectional": cell == "gru"},
        optimizer={"name": "adam", "lr": 0.01},
        training={"epochs": 8, "batch_size": 32, "test_split": 0.25},
    )
    job = train(stack, spec)
    assert job["metrics"]["test"]["accuracy"] > 0.85  # chance is 0.5
    answer = stack.http().post(
        "/predict", json={"model_id": job["model_id"], "inputs": x[:2].tolist()}
    )
    assert answer.status_code == 200, answer.text
    short = stack.http().post(
        "/predict", json={"model_id": job["model_id"], "inputs": x[:1, :10].tolist()}
    )
    assert short.status_code == 422


def test_lstm_forecasting(stack: Stack) -> None:
    t = np.arange(240)
    values = 10 + 0.05 * t + 3 * np.sin(2 * np.pi * t / 12)
    frame = pd.DataFrame({"month": t, "sales": values})
    dataset_id = upload_frame(stack.http(), frame)
    spec = {
        "dataset_id": dataset_id,
        "task": "forecasting",
        "target": "sales",
        "window": 24,
        "horizon": 3,
        "model": {"kind": "rnn", "cell": "lstm", "hidden_size": 32},
        "optimizer": {"name": "adam", "lr": 0.01},
        "training": {"epochs": 30, "batch_size": 16, "validation_split": 0.1, "test_split": 0.2},
    }
    job = train(stack, spec)
    assert job["metrics"]["test"]["rmse"] < 1.5
    last = frame["sales"].to_numpy()[-24:].reshape(24, 1).tolist()
    answer = stack.http().post("/predict", json={"model_id": job["model_id"], "inputs": [last]})
    assert answer.status_code == 200, answer.text
    assert np.array(answer.json()["predictions"]).shape == (1, 3)


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def test_bad_image_uploads(stack: Stack) -> None:
    x, y = digits()
    cases = [
        ([("i-idx3-ubyte", idx_images(x)[:-50]), ("l-idx1-ubyte", idx_labels(y))], "truncated"),
        ([("i-idx3-ubyte", idx_images(x[:12])), ("l-idx1-ubyte", idx_labels(y[:10]))], "12"),
        ([("evil.zip", zip_bytes({"../evil/a.png": png(x[0])}))], "evil"),
        (
            [("mixed.zip", zip_bytes({"a/1.png": png(x[0]), "b/2.png": png(np.zeros((9, 9), np.uint8))}))],
            "size",
        ),
    ]
    for files, needle in cases:
        before = stack.http().get("/datasets").json()["total"]
        response = upload_files(stack, files)
        assert response.status_code == 422, (needle, response.text)
        assert needle in response.json()["detail"], response.text
        assert stack.http().get("/datasets").json()["total"] == before


def test_image_bomb_is_refused(stack: Stack) -> None:
    bomb = Image.new("L", (20_000, 3000))  # 60 megapixels, a few kB as PNG
    buffer = io.BytesIO()
    bomb.save(buffer, format="PNG")
    response = upload(stack.http(), zip_bytes({"a/bomb.png": buffer.getvalue()}), "bomb.zip")
    assert response.status_code == 422, response.text
    assert "pixels" in response.json()["detail"]


def test_specs_that_cannot_work_are_422(stack: Stack) -> None:
    x, y = digits()
    idx = upload_files(stack, [("i-idx3-ubyte", idx_images(x)), ("l-idx1-ubyte", idx_labels(y))])
    collapse = job_spec(
        idx.json()["id"],
        target=None,
        model={"kind": "cnn", "layers": [{"type": "max_pool", "kernel_size": 2}] * 4},
    )
    response = stack.http().post("/jobs", json=collapse)
    assert response.status_code == 422, response.text
    assert "layer 4" in response.json()["detail"]

    series = upload_frame(stack.http(), pd.DataFrame({"v": np.arange(40.0)}))
    too_long = {
        "dataset_id": series,
        "task": "forecasting",
        "target": "v",
        "window": 50,
        "horizon": 5,
        "model": {"kind": "rnn"},
    }
    response = stack.http().post("/jobs", json=too_long)
    assert response.status_code == 422, response.text
    assert "40" in response.json()["detail"]
