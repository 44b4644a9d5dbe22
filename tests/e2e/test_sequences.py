"""Sequences over HTTP with the real worker: LSTM and GRU on NPZ sequences, LSTM
forecasting on a CSV time series, and the specs that cannot work."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from tests.e2e.helpers import job_spec, upload, upload_frame
from tests.e2e.test_images import train
from tests.stack import Stack


def sine_sequences(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = np.arange(24)
    freq = rng.choice([0.15, 0.6], size=n)
    phase = rng.uniform(0, 2 * np.pi, size=n)
    x = np.sin(freq[:, None] * t + phase[:, None]) + rng.normal(0, 0.1, (n, 24))
    return x[:, :, None].astype(np.float32), (freq > 0.3).astype(np.int64)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_rnn_sequence_classification(stack: Stack, cell: str) -> None:
    x, y = sine_sequences(400, seed=1)
    buffer = io.BytesIO()
    np.savez(buffer, x=x, y=y)
    dataset = upload(stack.http(), buffer.getvalue(), "waves.npz").json()
    spec = job_spec(
        dataset["id"],
        target=None,
        model={"kind": "rnn", "cell": cell, "hidden_size": 16, "bidirectional": cell == "gru"},
        optimizer={"name": "adam", "lr": 0.01},
        training={"epochs": 8, "batch_size": 32, "test_split": 0.25},
    )
    job = train(stack, spec)
    assert job["metrics"]["test"]["accuracy"] > 0.85  # chance is 0.5
    answer = stack.http().post(
        "/predict", json={"model_id": job["model_id"], "inputs": x[:2].tolist()}
    )
    assert answer.status_code == 200, answer.text
    short = stack.http().post(
        "/predict", json={"model_id": job["model_id"], "inputs": x[:1, :10].tolist()}
    )
    assert short.status_code == 422


def test_lstm_forecasting(stack: Stack) -> None:
    t = np.arange(240)
    values = 10 + 0.05 * t + 3 * np.sin(2 * np.pi * t / 12)
    frame = pd.DataFrame({"month": t, "sales": values})
    dataset_id = upload_frame(stack.http(), frame)
    spec = {
        "dataset_id": dataset_id,
        "task": "forecasting",
        "target": "sales",
        "window": 24,
        "horizon": 3,
        "seasonal_period": 12,
        "model": {"kind": "rnn", "cell": "lstm", "hidden_size": 32},
        "optimizer": {"name": "adam", "lr": 0.01},
        "training": {"epochs": 30, "batch_size": 16, "validation_split": 0.1, "test_split": 0.2},
    }
    job = train(stack, spec)
    test = job["metrics"]["test"]
    assert test["rmse"] < 1.5 and test["naive_rmse"] > 0 and "seasonal_naive_rmse" in test
    model = stack.http().get(f"/models/{job['model_id']}").json()
    assert model["input_schema"]["window"] == 24 and model["input_schema"]["columns"] == ["sales"]
    last = frame["sales"].to_numpy()[-24:].reshape(24, 1).tolist()
    answer = stack.http().post("/predict", json={"model_id": job["model_id"], "inputs": [last]})
    assert answer.status_code == 200, answer.text
    assert np.array(answer.json()["predictions"]).shape == (1, 3)


def test_window_longer_than_the_series_is_422(stack: Stack) -> None:
    series = upload_frame(stack.http(), pd.DataFrame({"v": np.arange(40.0)}))
    too_long = {
        "dataset_id": series,
        "task": "forecasting",
        "target": "v",
        "window": 50,
        "horizon": 5,
        "model": {"kind": "rnn"},
    }
    response = stack.http().post("/jobs", json=too_long)
    assert response.status_code == 422, response.text
    assert "40" in response.json()["detail"]
