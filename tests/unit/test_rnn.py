"""The rnn kind: every cell learns sequence classification and regression, bidirectional
reads both ways, forecasting beats the seasonal-naive forecast, and a saved model predicts
its horizon."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from models.bundle import load_bundle, save_bundle
from models.prepare import DataSource
from models.registry import get_kind
from models.rnn import build
from models.specs import JobSpec
from tests.unit.reporting import MemoryReporter


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Small recurrent steps gain nothing from intra-op threads, and on a busy machine the
    threads' contention made these tests 3 to 30 times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def spike_sequences(path: Path, n: int = 300, seed: int = 0) -> DataSource:
    """Class 1: a spike in the first half of the sequence; class 0: in the second half."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 0.3, (n, 16, 2)).astype(np.float32)
    y = rng.integers(0, 2, n)
    where = np.where(y == 1, rng.integers(0, 8, n), rng.integers(8, 16, n))
    x[np.arange(n), where, 0] += 3.0
    np.savez(path, x=x, y=y)
    return DataSource(path, "npz")


def rnn_spec(task: str = "classification", **model: Any) -> JobSpec:
    return JobSpec.model_validate(
        {
            "dataset_id": "d",
            "task": task,
            "model": {"kind": "rnn", "hidden_size": 16, **model},
            "optimizer": {"name": "adam", "lr": 0.01},
            "training": {"epochs": 12, "batch_size": 32, "test_split": 0.2},
        }
    )


@pytest.mark.parametrize(
    "model",
    [
        {"cell": "lstm"},
        {"cell": "gru", "bidirectional": True},
        {"cell": "rnn", "nonlinearity": "relu"},
        {"cell": "lstm", "num_layers": 2, "dropout": 0.1, "head": [8]},
    ],
)
def test_cells_learn_sequence_classification(model: dict[str, Any], tmp_path: Path) -> None:
    spec = rnn_spec(**model)
    data = get_kind(spec.model.kind).prepare(spec, spike_sequences(tmp_path / "s.npz"), None)
    result = get_kind("rnn").train(spec, data, MemoryReporter(tmp_path))
    assert result.metrics["test"]["accuracy"] > 0.85  # chance is 0.5
    assert len(result.metrics["test"]["per_class_accuracy"]) == 2


def test_bidirectional_uses_both_final_states() -> None:
    config = {
        "cell": "gru", "input_size": 3, "hidden_size": 5, "num_layers": 2,
        "bidirectional": True, "dropout": 0.0, "nonlinearity": "tanh", "head": [],
        "activation": "relu", "num_outputs": 4,
    }  # fmt: skip
    net = build(config)
    assert net.head[-1].in_features == 10  # type: ignore[index]
    x = torch.randn(2, 7, 3)
    # Changing only the first step changes the output through the backward direction's
    # final state (and the forward one's).
    y = x.clone()
    y[:, 0] += 1
    assert not torch.allclose(net(x), net(y))


def test_sequence_regression(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(0, 1, (400, 10, 1)).astype(np.float32)
    y = x[:, :, 0].sum(axis=1)  # the sum of the sequence
    np.savez(tmp_path / "r.npz", x=x, y=y)
    spec = rnn_spec("regression", cell="gru")
    data = get_kind(spec.model.kind).prepare(spec, DataSource(tmp_path / "r.npz", "npz"), None)
    result = get_kind("rnn").train(spec, data, MemoryReporter(tmp_path))
    assert result.metrics["test"]["r2"] > 0.9


def seasonal_csv(path: Path, rows: int = 600) -> DataSource:
    """Trend + a season of 12 steps + noise (sd 0.3): the best possible rmse is about 0.3,
    seasonal naive pays the noise twice plus a season's trend (about 0.45)."""
    rng = np.random.default_rng(0)
    t = np.arange(rows)
    values = 10 + 0.02 * t + 3 * np.sin(2 * np.pi * t / 12) + rng.normal(0, 0.3, rows)
    pd.DataFrame({"t": t, "v": values}).to_csv(path, index=False)
    return DataSource(path, "csv")


@pytest.mark.parametrize(("horizon", "epochs"), [(1, 60), (3, 30)])
def test_lstm_forecast_beats_seasonal_naive_and_predicts_its_horizon(
    horizon: int, epochs: int, tmp_path: Path
) -> None:
    spec = JobSpec.model_validate(
        {
            "dataset_id": "d",
            "task": "forecasting",
            "target": "v",
            "time_column": "t",
            "window": 24,
            "horizon": horizon,
            "seasonal_period": 12,
            "model": {"kind": "rnn", "cell": "lstm", "hidden_size": 32},
            "optimizer": {"name": "adam", "lr": 0.01},
            "training": {
                "epochs": epochs,
                "batch_size": 32,
                "validation_split": 0.1,
                "test_split": 0.2,
                "clip_grad_norm": 1.0,
            },
        }
    )
    source = seasonal_csv(tmp_path / "s.csv")
    data = get_kind(spec.model.kind).prepare(spec, source, None)
    result = get_kind("rnn").train(spec, data, MemoryReporter(tmp_path))
    test = result.metrics["test"]
    assert test["rmse"] < 0.9 * test["seasonal_naive_rmse"]
    assert test["seasonal_naive_rmse"] < test["naive_rmse"]

    save_bundle(
        tmp_path / "model.safetensors", kind="rnn", interface=data.interface(), result=result
    )
    predictor = load_bundle(
        tmp_path / "model.safetensors",
        expected_sha256=None,
        kinds=get_kind,
    )
    last = pd.read_csv(source.path)["v"].to_numpy()[-24:]
    answer = predictor.predict([last.tolist(), [[v] for v in last]])
    assert np.array(answer["predictions"]).shape == (2, horizon)
    assert answer["predictions"][0] == answer["predictions"][1]
    assert abs(answer["predictions"][0][0] - last[-12]) < 2.0  # about one season back
