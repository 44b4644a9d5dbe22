"""Recipes over HTTP: listed with what they need and reached, trained by name with the
request's own fields on top, and refused with a 422 naming the recipe when they do not fit."""

from __future__ import annotations

import io

import numpy as np

from tests.e2e.helpers import iris_frame, upload, upload_frame
from tests.stack import Stack


def digits(stack: Stack, n: int = 300) -> str:
    """A small 28x28 grey-image dataset (MNIST's shape) with learnable classes."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, n)
    x = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
    for label in range(3):  # each class lights its own band
        x[y == label, 8 * label : 8 * label + 6, :] = 230
    buffer = io.BytesIO()
    np.savez(buffer, x=x, y=y)
    answer = upload(stack.http(), buffer.getvalue(), "digits.npz")
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"])


def test_recipes_are_listed_and_trained_by_name(stack: Stack) -> None:
    listed = stack.http().get("/recipes")
    assert listed.status_code == 200
    page = listed.json()
    names = [r["name"] for r in page["items"]]
    assert page["total"] == len(names) >= 12
    assert {"mnist-mlp", "mnist-cnn", "mnist-cnn-elastic", "cartpole-dqn"} <= set(names)
    assert {"gridworld-q-learning", "forecast-lstm", "optimizers-adam"} <= set(names)
    one = stack.http().get("/recipes/mnist-mlp").json()
    assert one["needs"] == ["dataset_id"] and "98.21 %" in one["reached"]
    assert stack.http().get("/recipes/nope").status_code == 404

    dataset = digits(stack)
    sent = {"recipe": "mnist-mlp", "dataset_id": dataset, "training": {"epochs": 2}}
    answer = stack.http().post("/jobs", json=sent)
    assert answer.status_code == 202, answer.text
    job = stack.wait_for_job(answer.json()["id"])
    assert job["status"] == "succeeded", job["error"]
    spec = job["spec"]
    assert spec["recipe"] == "mnist-mlp" and spec["model"]["hidden_layers"] == [800]
    assert spec["training"]["epochs"] == 2 and spec["training"]["batch_size"] == 128
    assert job["metrics"]["test"]["accuracy"] > 0.9


def test_a_recipe_that_does_not_fit_is_a_422_naming_it(stack: Stack) -> None:
    table = upload_frame(stack.http(), iris_frame())
    answer = stack.http().post(
        "/jobs", json={"recipe": "mnist-cnn", "dataset_id": table, "target": "species"}
    )
    assert answer.status_code == 422, answer.text
    assert "recipe 'mnist-cnn' does not fit this dataset" in answer.text
    unknown = stack.http().post("/jobs", json={"recipe": "mnist-rnn", "dataset_id": table})
    assert unknown.status_code == 422 and "no recipe named 'mnist-rnn'" in unknown.text
    rl = stack.http().post("/jobs", json={"recipe": "gridworld-q-learning"})
    assert rl.status_code == 202, rl.text
    job = stack.wait_for_job(rl.json()["id"])
    assert job["status"] == "succeeded", job["error"]
    rollout = stack.http().post(f"/models/{job['model_id']}/rollout", json={"episodes": 1})
    assert rollout.json()["returns"] == [8.0]  # the course's optimal path
