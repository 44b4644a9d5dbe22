"""Knowledge distillation on the real MNIST, through the service (issue 16).

    .venv/bin/python bench/distillation_mnist.py [--epochs 12] [--temperatures 4,20]

As in Hinton, Vinyals and Dean (2015), section 3: a student of two hidden layers of 800
ReLU units with no regularisation (the paper: 146 test errors alone, 74 distilled at T=20)
learns from a teacher that is Keiko's best CNN without augmentation (the `mnist-cnn`
recipe, 99.36 % in BENCHMARKS.md). All jobs run through the API and one worker on the
embedded defaults, with the 60,000 training images as the dataset (no validation part)
and the 10,000 test images as `test_dataset_id` (never trained on). The student trains
alone, then distilled at each temperature, with the same data, epochs, optimizer and seed;
the test errors are counted from `metrics.test.accuracy`. Target: the distilled student
makes at least 20 % fewer test errors than the student alone.
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from bench.mnist import finished_job, mnist_stack, upload_mnist

TEST_IMAGES = 10_000
STUDENT = {"kind": "mlp", "hidden_layers": [800, 800], "activation": "relu", "dropout": 0.0}


def errors(job: dict[str, Any]) -> int:
    return round((1 - job["metrics"]["test"]["accuracy"]) * TEST_IMAGES)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=12, help="the student's epochs")
    parser.add_argument("--teacher-epochs", type=int, default=None, help="default: the recipe's")
    parser.add_argument("--temperatures", default="4,20")
    parser.add_argument("--alpha", type=float, default=0.9)
    args = parser.parse_args()
    temperatures = [float(t) for t in args.temperatures.split(",")]
    with mnist_stack("distillation") as stack:
        data = {"dataset_id": upload_mnist(stack, "train"),
                "test_dataset_id": upload_mnist(stack, "test")}  # fmt: skip
        split = {"validation_split": 0.0, "seed": 0}
        teacher_training = dict(split)
        if args.teacher_epochs:
            teacher_training["epochs"] = args.teacher_epochs
        teacher = finished_job(stack, {"recipe": "mnist-cnn", **data, "training": teacher_training})
        print(f"teacher mnist-cnn: {errors(teacher)} test errors, {teacher['seconds']:.0f} s")
        student = {
            **data,
            "task": "classification",
            "optimizer": {"name": "adam", "lr": 1e-3},
            "training": {"epochs": args.epochs, "batch_size": 128, **split},
        }
        alone = finished_job(stack, {**student, "model": STUDENT})
        print(f"student alone: {errors(alone)} test errors, {alone['seconds']:.0f} s")
        distilled = {}
        for t in temperatures:
            distillation = {
                "teacher_model_id": teacher["model_id"], "temperature": t,
                "alpha": args.alpha,
            }  # fmt: skip
            model = {**STUDENT, "distillation": distillation}
            distilled[t] = finished_job(stack, {**student, "model": model})
            job = distilled[t]
            print(f"student distilled at T={t:g}: {errors(job)} test errors, "
                  f"{job['seconds']:.0f} s")  # fmt: skip
    print(f"machine: {platform.machine()}, {platform.processor() or 'cpu'}, torch "
          f"{torch.__version__}, device {alone['device']}")  # fmt: skip
    base = errors(alone)
    for t, job in distilled.items():
        fewer = (base - errors(job)) / base
        verdict = "reached" if fewer >= 0.2 else "NOT reached"
        print(f"T={t:g}, alpha {args.alpha:g}: {errors(job)} against {base} test errors alone, "
              f"{fewer:.1%} fewer (target 20 %): {verdict}")  # fmt: skip


if __name__ == "__main__":
    main()
