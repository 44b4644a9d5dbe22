"""Accuracy on the real MNIST through the service: upload the IDX files, train, read
`metrics.test.accuracy` on the 10,000 test images (a separate test dataset, never trained on).

    .venv/bin/python bench/mnist_accuracy.py mlp        # target >= 98.0 % (Simard: 98.4 %)
    .venv/bin/python bench/mnist_accuracy.py cnn        # target >= 99.2 %
    .venv/bin/python bench/mnist_accuracy.py cnn_elastic  # target >= 99.5 % (Simard: 99.6 %)

The files come from ../shared/data/mnist (not needed by the test suite).
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from tests.stack import ROOT, Stack, stack_env

MNIST = ROOT.parent / "shared" / "data" / "mnist"

RUNS: dict[str, dict[str, Any]] = {
    "mlp": {
        "model": {"kind": "mlp", "hidden_layers": [800], "activation": "relu", "dropout": 0.2},
        "optimizer": {"name": "adam", "lr": 1e-3},
        "training": {"epochs": 20, "batch_size": 128},
        "target": 0.980,
    },
    "cnn": {
        "model": {"kind": "cnn", "architecture": "simple"},
        "optimizer": {"name": "adam", "lr": 1e-3},
        "training": {"epochs": 8, "batch_size": 128},
        "target": 0.992,
    },
    "cnn_elastic": {
        "model": {
            "kind": "cnn",
            "architecture": "simple",
            "augmentation": {
                "rotation": 8,
                "translate": 0.08,
                "elastic": {"alpha": 34, "sigma": 4},
            },
        },
        "optimizer": {"name": "adam", "lr": 1e-3},
        "training": {"epochs": 40, "batch_size": 128},
        "target": 0.995,
    },
}


def upload_pair(stack: Stack, images: str, labels: str) -> str:
    files = [
        ("file", (images, (MNIST / images).read_bytes())),
        ("file", (labels, (MNIST / labels).read_bytes())),
    ]
    response = stack.http().post("/datasets", files=files, timeout=600)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run", choices=sorted(RUNS))
    parser.add_argument("--epochs", type=int, default=None)
    args = parser.parse_args()
    run = RUNS[args.run]
    training = {**run["training"], "validation_split": 0.0, "seed": 0}
    if args.epochs:
        training["epochs"] = args.epochs
    with tempfile.TemporaryDirectory() as folder:
        env = stack_env(Path(folder), KEIKO_MAX_UPLOAD_BYTES=str(2**30))
        env.pop("OMP_NUM_THREADS", None)
        stack = Stack("mnist", Path(folder), env).start()
        try:
            train_id = upload_pair(
                stack, "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"
            )
            test_id = upload_pair(stack, "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
            spec = {
                "dataset_id": train_id,
                "test_dataset_id": test_id,
                "task": "classification",
                "model": run["model"],
                "optimizer": run["optimizer"],
                "training": training,
            }
            response = stack.http().post("/jobs", json=spec)
            assert response.status_code == 202, response.text
            job_id = response.json()["id"]
            while (job := stack.http().get(f"/jobs/{job_id}").json())["status"] in (
                "queued",
                "running",
            ):
                time.sleep(5)
        finally:
            stack.stop()
    assert job["status"] == "succeeded", job["error"]
    seconds = (
        datetime.fromisoformat(job["finished_at"]) - datetime.fromisoformat(job["created_at"])
    ).total_seconds()
    accuracy = job["metrics"]["test"]["accuracy"]
    print(f"machine: {platform.machine()}, torch {torch.__version__}, device {job['device']}")
    print(f"run {args.run}: {training['epochs']} epochs in {seconds:.0f} s")
    print(f"test accuracy {accuracy:.4f} (target {run['target']:.3f}): "
          f"{'reached' if accuracy >= run['target'] else 'NOT reached'}")  # fmt: skip


if __name__ == "__main__":
    main()
