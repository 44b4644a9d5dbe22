"""Benchmark: hyperparameter studies (issue 17), through a real embedded deployment.

    .venv/bin/python bench/study_search.py [--data digits|mnist] [--trials 30]
        [--epochs 20] [--part pruning|parallel|all]

`pruning`: the base spec alone (its test accuracy), then the same TPE study of `--trials`
trials twice, without a pruner and with the median pruner, on two workers with two trials
at once. Reports each study's best validation accuracy, its best trial's test accuracy,
and the epochs all its trials trained (a pruned trial's epochs stop where it was pruned).

`parallel`: the unpruned study again (same seed, so the same trials) with one worker and
with two, two trials at once: its wall time from posting to the study's end.

`--data tabular` (the default): scikit-learn's make_classification, 20,000 rows of 30
features (12 informative, 6 redundant), 4 classes, 3 % of labels flipped; `digits`:
scikit-learn's 8x8 digits as a table of 64 pixel columns (1,797 rows); `mnist`: the real
MNIST (../shared/data/mnist), 784-pixel images. An MLP in each case.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
from sklearn.datasets import load_digits, make_classification

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.e2e.helpers import upload
from tests.stack import Stack, stack_env

SPACE: dict[str, Any] = {
    "optimizer.lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
    "optimizer.name": {"type": "categorical", "choices": ["sgd", "momentum", "adam"]},
    "model.hidden_layers": {"type": "categorical", "choices": [[32], [128], [256, 128]]},
    "model.dropout": {"type": "float", "low": 0.0, "high": 0.5},
    "training.batch_size": {"type": "categorical", "choices": [32, 64, 128]},
}


@contextmanager
def stack_with(workers: int) -> Iterator[Stack]:
    """An embedded deployment with `workers` Celery workers (one thread each)."""
    with tempfile.TemporaryDirectory() as folder:
        env = stack_env(Path(folder), KEIKO_MAX_UPLOAD_BYTES=str(200_000_000))
        stack = Stack(f"study-{workers}", Path(folder), env).start()
        for n in range(2, workers + 1):
            stack._spawn(
                f"worker{n}",
                [sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker", "-Q",
                 "celery", "--pool", "solo", "--without-gossip", "--without-mingle",
                 "-n", f"worker{n}@%h", "--loglevel", "INFO"],
            )  # fmt: skip
        try:
            yield stack
        finally:
            stack.stop()


def upload_data(stack: Stack, data: str) -> tuple[str, dict[str, Any]]:
    """The dataset's id and the base spec's data fields."""
    if data == "tabular":
        x, y = make_classification(
            n_samples=20_000, n_features=30, n_informative=12, n_redundant=6, n_classes=4,
            class_sep=0.9, flip_y=0.03, random_state=0,
        )  # fmt: skip
        frame = pd.DataFrame(x, columns=[f"x{i}" for i in range(x.shape[1])]).assign(label=y)
        answer = upload(stack.http(), frame.to_csv(index=False).encode(), "tabular.csv")
        assert answer.status_code == 201, answer.text
        return answer.json()["id"], {"task": "classification", "target": "label"}
    if data == "digits":
        bunch = load_digits(as_frame=True)
        frame = bunch.frame.rename(columns={"target": "digit"})
        answer = upload(stack.http(), frame.to_csv(index=False).encode(), "digits.csv")
        assert answer.status_code == 201, answer.text
        return answer.json()["id"], {"task": "classification", "target": "digit"}
    from bench.mnist import upload_mnist

    return upload_mnist(stack), {"task": "classification"}


def base_spec(dataset: str, fields: dict[str, Any], epochs: int) -> dict[str, Any]:
    return {
        "dataset_id": dataset,
        **fields,
        "model": {"kind": "mlp", "hidden_layers": [128]},
        "optimizer": {"name": "adam", "lr": 1e-3},
        "training": {"epochs": epochs, "batch_size": 64, "seed": 0},
    }


def run_study(stack: Stack, base: dict[str, Any], trials: int, pruner: str) -> dict[str, Any]:
    started = time.monotonic()
    answer = stack.http().post(
        "/studies",
        json={
            "base": base,
            "space": SPACE,
            "metric": "validation.accuracy",
            "n_trials": trials,
            "parallelism": 2,
            "sampler": {"name": "tpe", "seed": 0},
            "pruner": {"name": pruner},  # the median pruner's defaults
        },
    )
    assert answer.status_code == 202, answer.text
    study_id = answer.json()["id"]
    while (study := stack.http().get(f"/studies/{study_id}").json())["finished_at"] is None:
        time.sleep(1)
    study["seconds"] = time.monotonic() - started
    epochs = 0
    for trial in study["trials"]:
        job = stack.http().get(f"/jobs/{trial['job_id']}", params={"history": "none"}).json()
        epochs += job["history_total"]
    study["epochs"] = epochs
    best = stack.http().get(f"/jobs/{study['best']['job_id']}", params={"history": "none"}).json()
    study["best_test"] = best["metrics"]["test"]["accuracy"]
    return dict(study)


def default_job(stack: Stack, base: dict[str, Any]) -> dict[str, Any]:
    answer = stack.http().post("/jobs", json=base)
    assert answer.status_code == 202, answer.text
    job = stack.wait_for_job(answer.json()["id"], timeout=6 * 3600)
    assert job["status"] == "succeeded", job["error"]
    return job


def pruning(data: str, trials: int, epochs: int) -> None:
    with stack_with(2) as stack:
        dataset, fields = upload_data(stack, data)
        base = base_spec(dataset, fields, epochs)
        default = default_job(stack, base)["metrics"]
        print(
            f"default spec: validation accuracy {default['validation']['accuracy']:.4f}, "
            f"test accuracy {default['test']['accuracy']:.4f}"
        )
        results = {}
        for pruner in ("none", "median"):
            study = run_study(stack, base, trials, pruner)
            results[pruner] = study
            counts = {s: sum(t["status"] == s for t in study["trials"]) for s in study["counts"]}
            print(
                f"pruner {pruner}: best validation accuracy {study['best']['value']:.4f} "
                f"(trial {study['best']['number']}), its test accuracy {study['best_test']:.4f}, "
                f"{study['epochs']} epochs in all, {study['seconds']:.0f} s, trials {counts}"
            )
            print(f"  best params: {study['best']['params']}")
            print(f"  importances: {study['importances']}")
        saved = 1 - results["median"]["epochs"] / results["none"]["epochs"]
        print(f"pruning saved {saved:.1%} of the epochs")


def parallel(data: str, trials: int, epochs: int) -> None:
    seconds = {}
    for workers in (1, 2):
        with stack_with(workers) as stack:
            dataset, fields = upload_data(stack, data)
            study = run_study(stack, base_spec(dataset, fields, epochs), trials, "none")
            seconds[workers] = study["seconds"]
            print(f"{workers} worker(s): {study['seconds']:.1f} s for {trials} trials")
    print(f"two workers / one: {seconds[2] / seconds[1]:.2f} of the wall time")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", choices=["tabular", "digits", "mnist"], default="tabular")
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--part", choices=["pruning", "parallel", "all"], default="all")
    args = parser.parse_args()
    print(f"{platform.machine()} {platform.processor() or ''}, data {args.data}, "
          f"{args.trials} trials of up to {args.epochs} epochs")  # fmt: skip
    if args.part in ("pruning", "all"):
        pruning(args.data, args.trials, args.epochs)
    if args.part in ("parallel", "all"):
        parallel(args.data, args.trials, args.epochs)


if __name__ == "__main__":
    main()
