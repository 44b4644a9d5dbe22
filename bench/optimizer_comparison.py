"""The course's optimizer comparison on the real MNIST, through the service (issue 16): the six
`optimizers-*` recipes (the same 784-128-10 ReLU MLP, batch 64, 10 epochs, seed 0, a
validation part of 10 %), each on the 60,000 training images with the 10,000 test images
as `test_dataset_id`, one after the other through the API and one worker.

    .venv/bin/python bench/optimizer_comparison.py [--epochs 10]

Reported per optimizer: the training loss after epochs 1, 5 and the last, the last epoch's
validation accuracy, the test accuracy and the job's time. These are what `GET /recipes`
quotes; the comparison is the point, not a target.
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from bench.mnist import finished_job, mnist_stack, upload_mnist
from models.specs import RECIPES


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=None, help="default: the recipes'")
    args = parser.parse_args()
    names = [name for name in RECIPES if name.startswith("optimizers-")]
    rows = []
    with mnist_stack("optimizers") as stack:
        data = {"dataset_id": upload_mnist(stack, "train"),
                "test_dataset_id": upload_mnist(stack, "test")}  # fmt: skip
        training = {"epochs": args.epochs} if args.epochs else {}
        for name in names:
            job = finished_job(stack, {"recipe": name, **data, "training": training})
            losses = [entry["train_loss"] for entry in job["history"]]
            optimizer = job["spec"]["optimizer"]
            settings = ", ".join(
                f"{key} {optimizer[key]:g}" for key in ("lr", "momentum") if key in optimizer
            )
            row = (
                f"| {optimizer['name']} ({settings}) | {losses[0]:.4f} | {losses[4]:.4f} | "
                f"{losses[-1]:.4f} | {job['history'][-1]['val_accuracy']:.2%} | "
                f"{job['metrics']['test']['accuracy']:.2%} | {job['seconds']:.0f} s |"
            )
            print(name, row, flush=True)
            rows.append(row)
    print(f"machine: {platform.machine()}, {platform.processor() or 'cpu'}, torch "
          f"{torch.__version__}")  # fmt: skip
    print("| optimizer | train loss, epoch 1 | epoch 5 | last | val accuracy | test accuracy | "
          "job time |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
