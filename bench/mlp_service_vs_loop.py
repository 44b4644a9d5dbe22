"""Benchmark: the same MLP on the same data for the same epochs, trained (1) through Keiko
(HTTP job -> Celery worker -> `succeeded`) and (2) as a plain PyTorch loop in this process.

    .venv/bin/python bench/mlp_service_vs_loop.py [--rows 200000] [--epochs 8]

Prints wall times and their ratio. Both sides use the same thread count, the same
standardised float32 inputs, the same network, Adam, batch size and per-epoch validation.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from models.mlp import build
from tests.e2e.helpers import upload
from tests.stack import Stack, stack_env

HIDDEN = [256, 128]
BATCH = 128
LR = 1e-3
VALIDATION = 0.1


def make_data(rows: int, seed: int = 0) -> pd.DataFrame:
    # Imported here: scikit-learn's OpenMP/BLAS thread pools slow torch in the same process,
    # so the baseline runs in a process of its own that never imports it.
    from sklearn.datasets import make_classification

    x, y = make_classification(
        n_samples=rows, n_features=32, n_informative=20, n_classes=4, random_state=seed
    )
    frame = pd.DataFrame(x.astype(np.float32), columns=[f"f{i}" for i in range(32)])
    frame["label"] = y
    return frame


def plain_loop(frame: pd.DataFrame, epochs: int, seed: int) -> float:
    """What a user would write by hand: tensors in memory, randperm, slicing, Adam."""
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])  # its lazy imports, as a worker
    started = time.perf_counter()
    x = frame.drop(columns=["label"]).to_numpy(np.float32)
    y = frame["label"].to_numpy(np.int64)
    perm = np.random.default_rng(seed).permutation(len(x))
    n_val = round(len(x) * VALIDATION)
    train_idx, val_idx = perm[n_val:], perm[:n_val]
    mean, std = x[train_idx].mean(0), x[train_idx].std(0)
    x = (x - mean) / std
    x_train, y_train = torch.from_numpy(x[train_idx]), torch.from_numpy(y[train_idx])
    x_val, y_val = torch.from_numpy(x[val_idx]), torch.from_numpy(y[val_idx])
    torch.manual_seed(seed)
    config = {
        "in_features": 32,
        "out_features": 4,
        "hidden_layers": HIDDEN,
        "activation": "relu",
        "dropout": 0.0,
        "batch_norm": False,
        "init": "he",
    }
    net = build(config)
    optimizer = torch.optim.Adam(net.parameters(), lr=LR)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        net.train()
        order = torch.randperm(len(x_train), generator=generator)
        for i in range(0, len(order), BATCH):
            idx = order[i : i + BATCH]
            loss = F.cross_entropy(net(x_train[idx]), y_train[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        net.eval()
        with torch.inference_mode():
            float(F.cross_entropy(net(x_val), y_val))
    return time.perf_counter() - started


def through_service(frame: pd.DataFrame, epochs: int, seed: int, data_dir: Path) -> dict:
    env = stack_env(data_dir, KEIKO_MAX_UPLOAD_BYTES=str(2**31))
    env.pop("OMP_NUM_THREADS", None)  # same threads as the plain loop
    stack = Stack("bench", data_dir, env).start()
    try:
        path = data_dir / "data.csv"
        frame.to_csv(path, index=False)
        dataset = upload(stack.http(), path.read_bytes(), "data.csv").json()
        spec = {
            "dataset_id": dataset["id"],
            "task": "classification",
            "target": "label",
            "model": {"kind": "mlp", "hidden_layers": HIDDEN, "activation": "relu"},
            "optimizer": {"name": "adam", "lr": LR},
            "training": {
                "epochs": epochs,
                "batch_size": BATCH,
                "validation_split": VALIDATION,
                "test_split": 0.0,
                "seed": seed,
                "checkpoint_every": epochs,
                "device": "cpu",
            },
        }
        job_id = stack.http().post("/jobs", json=spec).json()["id"]
        while True:  # poll like a user would; the times come from the job's own timestamps
            job = stack.http().get(f"/jobs/{job_id}").json()
            if job["status"] not in ("queued", "running"):
                break
            time.sleep(1.0)
        assert job["status"] == "succeeded", job
        created = datetime.fromisoformat(job["created_at"])
        finished = datetime.fromisoformat(job["finished_at"])
        return {
            "wall": (finished - created).total_seconds(),
            "epoch_seconds": sum(h["seconds"] for h in job["history"]),
            "val_accuracy": job["metrics"]["validation"]["accuracy"],
        }
    finally:
        stack.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--baseline", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline is not None:
        print(plain_loop(pd.read_parquet(args.baseline), args.epochs, args.seed))
        return
    frame = make_data(args.rows, args.seed)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")  # fmt: skip
    print(f"data: {args.rows} rows x 32 features, 4 classes; MLP {HIDDEN}, batch {BATCH}, "
          f"{args.epochs} epochs")  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        parquet = Path(folder) / "data.parquet"
        frame.to_parquet(parquet)
        baseline_run = subprocess.run(
            [sys.executable, __file__, "--baseline", str(parquet), "--epochs", str(args.epochs),
             "--seed", str(args.seed)],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        baseline = float(baseline_run.stdout.strip().splitlines()[-1])
        print(f"plain PyTorch loop (own process): {baseline:.1f} s")
        service = through_service(frame, args.epochs, args.seed, Path(folder))
    print(
        f"Keiko, job created to finished: {service['wall']:.1f} s "
        f"(epochs {service['epoch_seconds']:.1f} s, val accuracy {service['val_accuracy']:.3f})"
    )
    print(f"ratio service/plain: {service['wall'] / baseline:.3f} (epochs only: "
          f"{service['epoch_seconds'] / baseline:.3f})")  # fmt: skip


if __name__ == "__main__":
    main()
