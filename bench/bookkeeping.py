"""Benchmark: what a job's bookkeeping costs beside its training (issue 12).

    .venv/bin/python bench/bookkeeping.py [--epochs 1000]
        [--deployment embedded|postgres_redis|both]

A user of the course's job: scikit-learn's breast-cancer table (569 rows), a small MLP
(`hidden_layers` [32]) classifying `target`, seed 0, every other setting at its default
(no `checkpoint_every`), on a real deployment (API + worker) with the shipped defaults.
Prints the job's wall time (`finished_at - started_at`), the sum of its epochs' own time
(history `seconds`) and their ratio (the issue's target: within 1.5x), the median epoch,
the checkpoint rows `GET /jobs/{id}` lists and the files under the job's artifact folder,
and the byte size of `GET /jobs/{id}` whole and with `?history=last:20&checkpoints=none`.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.e2e.helpers import cancer_frame, upload_frame
from tests.stack import DEPLOYMENTS, SHIPPED_TIMINGS, Stack, started_deployment

COMPACT = "?history=last:20&checkpoints=none"


def job_spec(dataset_id: str, epochs: int) -> dict[str, Any]:
    return {
        "dataset_id": dataset_id,
        "task": "classification",
        "target": "target",
        "model": {"kind": "mlp", "hidden_layers": [32]},
        "training": {"epochs": epochs, "seed": 0},
    }


def seconds_between(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def run(stack: Stack, epochs: int) -> None:
    client = stack.http()
    dataset_id = upload_frame(client, cancer_frame())
    response = client.post("/jobs", json=job_spec(dataset_id, epochs))
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    job = stack.wait_for_job(job_id, timeout=max(180, epochs))
    assert job["status"] == "succeeded", job

    whole = client.get(f"/jobs/{job_id}")
    compact = client.get(f"/jobs/{job_id}{COMPACT}")
    assert whole.status_code == compact.status_code == 200
    job = whole.json()
    history = job["history"]
    assert len(history) == job["history_total"] == epochs, (len(history), epochs)
    wall = seconds_between(job["started_at"], job["finished_at"])
    trained = sum(e["seconds"] for e in history)
    median = statistics.median(e["seconds"] for e in history)
    folder = stack.data_dir / "artifacts" / "jobs" / job_id
    files = [p for p in folder.rglob("*") if p.is_file()] if folder.is_dir() else []

    rows = [
        ("job wall time (finished_at - started_at)", f"{wall:9.2f} s"),
        ("sum of epoch seconds (history)", f"{trained:9.2f} s"),
        ("ratio wall / epochs (target: within 1.5)", f"{wall / trained:9.2f} x"),
        ("median epoch", f"{median * 1000:9.2f} ms"),
        ("wall time per epoch", f"{wall / epochs * 1000:9.2f} ms"),
        ("checkpoint rows in GET /jobs/{id}", f"{len(job['checkpoints']):9d}"),
        ("files under artifacts/jobs/{id}/", f"{len(files):9d}"),
        ("GET /jobs/{id}", f"{len(whole.content):9d} bytes"),
        (f"GET /jobs/{{id}}{COMPACT}", f"{len(compact.content):9d} bytes"),
    ]
    print(f"\n{stack.name}: breast cancer (569 rows), MLP [32], {epochs} epochs, defaults")
    for label, value in rows:
        print(f"  {label:54s} {value}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=1000)
    parser.add_argument("--deployment", default="both",
                        choices=["embedded", "postgres_redis", "both"])  # fmt: skip
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}, "
          f"Python {platform.python_version()}")  # fmt: skip
    chosen = DEPLOYMENTS if args.deployment == "both" else [args.deployment]
    for deployment in chosen:
        with (
            tempfile.TemporaryDirectory() as folder,
            started_deployment(deployment, Path(folder), **SHIPPED_TIMINGS) as stack,
        ):
            run(stack, args.epochs)


if __name__ == "__main__":
    main()
