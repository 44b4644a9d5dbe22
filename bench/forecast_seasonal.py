"""An LSTM forecasting a seasonal series through the service, against the seasonal-naive
forecast on the held-out tail.

    .venv/bin/python bench/forecast_seasonal.py [--horizon 3] [--seed 0]

The series: 1,200 monthly-like steps of level + trend + a 12-step season + Gaussian noise
(sd 0.5), uploaded as a CSV with a time column. The job's `metrics.test` holds the LSTM's
RMSE beside `naive_rmse` and `seasonal_naive_rmse`, all on the last 20 % of the windows,
which come after every training target in time.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.e2e.helpers import upload_frame
from tests.stack import Stack, stack_env


def series(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    t = np.arange(rows)
    season = 4 * np.sin(2 * np.pi * t / 12) + 1.5 * np.cos(2 * np.pi * t / 6)
    values = 50 + 0.03 * t + season + rng.normal(0, 0.5, rows)
    return pd.DataFrame({"step": t, "value": values})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--horizon", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        env = stack_env(Path(folder))
        env.pop("OMP_NUM_THREADS", None)
        stack = Stack("forecast", Path(folder), env).start()
        try:
            dataset_id = upload_frame(stack.http(), series(1200, args.seed))
            spec = {  # the forecast-lstm recipe (models/specs/recipes.py) on this series
                "recipe": "forecast-lstm",
                "dataset_id": dataset_id,
                "target": "value",
                "time_column": "step",
                "horizon": args.horizon,
                "training": {"seed": args.seed},
            }
            response = stack.http().post("/jobs", json=spec)
            assert response.status_code == 202, response.text
            job = stack.wait_for_job(response.json()["id"], timeout=3600)
        finally:
            stack.stop()
    assert job["status"] == "succeeded", job["error"]
    test = job["metrics"]["test"]
    print(f"machine: {platform.machine()}, {platform.processor() or 'cpu'}")
    print(f"horizon {args.horizon}, seed {args.seed}, {len(job['history'])} epochs")
    print(
        f"test RMSE: LSTM {test['rmse']:.3f}, seasonal naive {test['seasonal_naive_rmse']:.3f}, "
        f"naive {test['naive_rmse']:.3f}: "
        f"{'beats' if test['rmse'] < test['seasonal_naive_rmse'] else 'does NOT beat'} "
        "seasonal naive"
    )


if __name__ == "__main__":
    main()
