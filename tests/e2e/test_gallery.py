"""The pictures the web page shows, over HTTP with the real worker: an image classifier's
mistakes (the uploaded pixels, labels that /predict agrees with) and a dataset's first
examples; another user's job or dataset is 404."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

from tests.e2e.helpers import iris_frame, job_spec, upload, upload_frame
from tests.e2e.test_images import idx_images, idx_labels, upload_files
from tests.stack import Stack


def pixels_of(url: str) -> np.ndarray:
    assert url.startswith("data:image/png;base64,")
    with Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))) as image:
        return np.asarray(image)


def bars(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """28x28 images of a vertical (label 0) or horizontal (label 1) bar, noisy enough that a
    small network trained for one epoch gets some wrong."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.integers(0, 160, (n, 28, 28)).astype(np.uint8)
    for i in range(n):
        at = rng.integers(4, 24)
        if y[i] == 0:
            x[i, :, at : at + 2] = 255
        else:
            x[i, at : at + 2, :] = 255
    return x, y


def train(stack: Stack, spec: dict) -> dict:
    response = stack.http().post("/jobs", json=spec)
    assert response.status_code == 202, response.text
    job = stack.wait_for_job(response.json()["id"])
    assert job["status"] == "succeeded", (job["error"], stack.log("worker"))
    return job


def test_mistakes_of_an_image_classifier(embedded_stack: Stack) -> None:
    stack = embedded_stack
    x, y = bars(300, seed=1)
    uploaded = upload_files(stack, [("images.idx", idx_images(x)), ("labels.idx", idx_labels(y))])
    assert uploaded.status_code == 201, uploaded.text
    spec = job_spec(
        uploaded.json()["id"],
        target=None,
        model={"kind": "mlp", "hidden_layers": [4]},
        optimizer={"name": "sgd", "lr": 0.001},
        training={"epochs": 1, "batch_size": 64, "seed": 0, "test_split": 0.3},
    )
    job = train(stack, spec)
    got = stack.http().get(f"/jobs/{job['id']}/mistakes", params={"limit": 100})
    assert got.status_code == 200, got.text
    found = got.json()
    assert found["split"] == "test" and found["total"] == 90
    test_accuracy = job["metrics"]["test"]["accuracy"]
    assert found["wrong"] == round(90 * (1 - test_accuracy)) > 0
    assert len(found["items"]) == found["wrong"]
    uploaded_images = {image.tobytes(): label for image, label in zip(x, y, strict=True)}
    urls = [item["image"] for item in found["items"]]
    answer = stack.http().post("/predict", json={"model_id": job["model_id"], "inputs": urls})
    assert answer.status_code == 200, answer.text
    predicted = answer.json()
    for k, item in enumerate(found["items"]):
        # The pixels as uploaded, with their own label, which the model gets wrong.
        assert uploaded_images[pixels_of(item["image"]).tobytes()] == item["label"]
        assert item["predicted"] == predicted["predictions"][k] != item["label"]
        assert abs(item["confidence"] - max(predicted["probabilities"][k])) < 1e-5
    confidences = [item["confidence"] for item in found["items"]]
    assert confidences == sorted(confidences, reverse=True)

    few = stack.http().get(f"/jobs/{job['id']}/mistakes", params={"limit": 2}).json()
    assert few["items"] == found["items"][:2]
    assert stack.http().get(f"/jobs/{job['id']}/mistakes?limit=0").status_code == 422
    stranger = stack.client_for(stack.new_user("stranger"))
    assert stranger.get(f"/jobs/{job['id']}/mistakes").status_code == 404
    assert stack.http().get("/jobs/nope/mistakes").status_code == 404


def test_table_jobs_have_no_mistakes(embedded_stack: Stack) -> None:
    stack = embedded_stack
    job = train(stack, job_spec(upload_frame(stack.http(), iris_frame())))
    got = stack.http().get(f"/jobs/{job['id']}/mistakes")
    assert got.status_code == 200, got.text
    assert got.json()["split"] is None and got.json()["items"] == []


def test_samples_of_images_and_tables(embedded_stack: Stack) -> None:
    stack = embedded_stack
    x, y = bars(20, seed=2)
    idx = upload_files(stack, [("images.idx", idx_images(x)), ("labels.idx", idx_labels(y))])
    assert idx.status_code == 201, idx.text
    got = stack.http().get(f"/datasets/{idx.json()['id']}/samples", params={"n": 5})
    assert got.status_code == 200, got.text
    assert got.json()["kind"] == "images" and len(got.json()["items"]) == 5
    for i, item in enumerate(got.json()["items"]):
        assert np.array_equal(pixels_of(item["image"]), x[i]) and item["label"] == y[i]

    buffer = io.BytesIO()
    np.savez_compressed(buffer, x=x.astype(np.float32) / 255, y=np.array(["v", "h"])[y])
    npz = upload(stack.http(), buffer.getvalue(), "bars.npz")
    assert npz.status_code == 201, npz.text
    items = stack.http().get(f"/datasets/{npz.json()['id']}/samples").json()["items"]
    assert len(items) == 8 and [item["label"] for item in items] == list(
        np.array(["v", "h"])[y[:8]]
    )
    assert np.array_equal(pixels_of(items[3]["image"]), x[3])

    table_id = upload_frame(stack.http(), iris_frame())
    table = stack.http().get(f"/datasets/{table_id}/samples", params={"n": 3}).json()
    frame = iris_frame()
    assert table["kind"] == "table" and table["columns"] == list(frame.columns)
    assert table["rows"] == frame.head(3).values.tolist()

    assert stack.http().get(f"/datasets/{table_id}/samples?n=65").status_code == 422
    stranger = stack.client_for(stack.new_user("stranger"))
    assert stranger.get(f"/datasets/{table_id}/samples").status_code == 404
    assert stack.http().get("/datasets/nope/samples").status_code == 404
