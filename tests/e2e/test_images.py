"""Images over HTTP with the real worker: IDX and zip uploads, CNN jobs, predictions from
arrays, base64 PNG and uploaded files, and the bad inputs."""

from __future__ import annotations

import base64
import gzip
import io
import struct
import zipfile

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

from tests.e2e.helpers import job_spec, upload
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


def upload_files(stack: Stack, files: list[tuple[str, bytes]]):
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
        [
            ("images-idx3-ubyte.gz", gzip.compress(idx_images(x))),
            ("labels-idx1-ubyte", idx_labels(y)),
        ],
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
            [("mixed.zip", zip_bytes({"a/1.png": png(x[0]), "b/2.png": png(x[0][:7, :7])}))],
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
