"""Benchmark: what the final metrics cost after training, scoring the whole training part
against a sample of it (`training.score_training_rows`, 10,000 by default).

    .venv/bin/python bench/final_scoring.py [--recipe mnist-cnn] [--epochs 1]

The real MNIST training set (60,000 images, `../shared/data/mnist`) is uploaded once; two
jobs of the same recipe with no validation or test part (so the training part is all there
is to score) run one after the other through the API and a worker on the embedded
defaults: one with the default sample, one with `score_training_rows: null`. Reported: each
job's running time (started_at to finished_at), its epochs' time from the history, and
the rest (mostly the final scoring), with the training accuracy each reports.
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.mnist import finished_job, mnist_stack, upload_mnist
from tests.stack import Stack


def run(stack: Stack, spec: dict[str, Any]) -> dict[str, Any]:
    job = finished_job(stack, spec)
    epochs = sum(entry["seconds"] for entry in job["history"])
    train = job["metrics"]["train"]
    return {
        "seconds": job["seconds"],
        "epochs": epochs,
        "rest": job["seconds"] - epochs,
        "rows": train.get("scored_rows", "all"),
        "accuracy": train["accuracy"],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipe", default="mnist-cnn")
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()
    with mnist_stack("scoring") as stack:
        dataset = upload_mnist(stack)
        results = {}
        for rows in (10_000, None):
            training = {
                "epochs": args.epochs, "validation_split": 0.0, "test_split": 0.0,
                "score_training_rows": rows,
            }  # fmt: skip
            spec = {"recipe": args.recipe, "dataset_id": dataset, "training": training}
            results[rows] = run(stack, spec)
    print(f"{platform.processor() or platform.machine()}; {args.recipe}, {args.epochs} epoch(s)")
    print("| training rows scored | job s | epochs s | the rest s | training accuracy |")
    print("|---|---|---|---|---|")
    for result in results.values():
        print(f"| {result['rows']} | {result['seconds']:.0f} | {result['epochs']:.0f} | "
              f"{result['rest']:.0f} | {result['accuracy']:.4f} |")  # fmt: skip


if __name__ == "__main__":
    main()
