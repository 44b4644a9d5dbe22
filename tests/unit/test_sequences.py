"""Sequence data: windows, the time-ordered split, the baselines, the preprocessors and the
predict-time encoders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from models.base import InputError
from models.blocks import LastValueResidual
from models.data import DataError
from models.prepare import DataSource, load_input_encoder, prepare_data
from models.registry import get_kind
from models.sequences import (
    SequencePreprocessor,
    seasonal_naive,
    time_split,
    windows,
)
from models.specs import JobSpec
from tests.unit.reporting import MemoryReporter


def forecast_spec(**fields: object) -> JobSpec:
    base: dict[str, object] = {
        "dataset_id": "d",
        "task": "forecasting",
        "target": "v",
        "window": 3,
        "model": {"kind": "rnn", "hidden_size": 4},
        "training": {"validation_split": 0.0, "test_split": 0.0},
    }
    return JobSpec.model_validate({**base, **fields})


def test_windows_by_hand() -> None:
    values = np.stack([np.arange(10.0), np.arange(10.0) * 10], axis=1)  # (10, 2)
    x, y = windows(values, window=3, horizon=2)
    assert x.shape == (6, 3, 2) and y.shape == (6, 2)
    assert x[0].tolist() == [[0, 0], [1, 10], [2, 20]]
    assert y[0].tolist() == [3, 4]
    assert x[-1][:, 0].tolist() == [5, 6, 7] and y[-1].tolist() == [8, 9]


def test_window_longer_than_the_series() -> None:
    with pytest.raises(DataError, match=r"window \(8\) \+ horizon \(3\) is longer than the series"):
        windows(np.zeros((10, 1)), window=8, horizon=3)


def test_time_split_keeps_order_and_leaves_gaps() -> None:
    train, val, test = time_split(100, validation=0.1, test=0.2, horizon=3)
    assert (test.start, test.stop) == (80, 100)
    assert (val.start, val.stop) == (68, 78)  # 2 windows (horizon - 1) left out before test
    assert (train.start, train.stop) == (0, 66)
    # With window W and horizon H, window i's last target row is i + W + H - 1: the last
    # training window's targets end before the first validation target row.
    window, horizon = 5, 3
    assert (train.stop - 1) + window + horizon - 1 < val.start + window


def test_seasonal_naive_reads_one_season_back() -> None:
    series = np.arange(20.0)[:, None]
    x, _ = windows(series, window=6, horizon=5)
    guess = seasonal_naive(x, horizon=5, period=4)
    # window rows 0..5, targets rows 6..10: one season back is 2, 3, 4, 5, then 2 seasons: 2
    assert guess[0].tolist() == [2, 3, 4, 5, 2]


def test_prepare_forecasting_sorts_by_time_and_reports_baselines(tmp_path: Path) -> None:
    t = np.arange(60)
    frame = pd.DataFrame({"when": pd.date_range("2020-01-01", periods=60, freq="D"), "v": t * 2.0})
    frame["when"] = frame["when"].dt.strftime("%Y-%m-%d")
    path = tmp_path / "series.csv"
    frame.sample(frac=1, random_state=1).to_csv(path, index=False)
    spec = forecast_spec(
        time_column="when",
        horizon=2,
        seasonal_period=3,
        training={"validation_split": 0.1, "test_split": 0.2},
    )
    data = prepare_data(spec, DataSource(path, "csv"), None)
    assert data.train.x.shape[1:] == (3, 1) and data.train.y.shape[1] == 2
    assert data.test is not None and data.val is not None
    raw_test_targets = data.test.y.double() * data.target_std + data.target_mean
    last = 2.0 * 59
    assert raw_test_targets[-1].tolist() == pytest.approx([last - 2, last])  # the series' end
    raw_train_targets = data.train.y.double() * data.target_std + data.target_mean
    raw_val_targets = data.val.y.double() * data.target_std + data.target_mean
    assert raw_train_targets.max() < raw_val_targets.min() < raw_test_targets.min()
    # A linear series: carrying the last value forward is off by 2 and 4 (rmse averaged).
    assert data.baselines["test"]["naive_rmse"] == pytest.approx((2 + 4) / 2)
    assert data.baselines["test"]["seasonal_naive_rmse"] == pytest.approx(6.0)


def test_forecasting_refuses_bad_series(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    pd.DataFrame({"v": [1.0, 2.0, None, 4.0, 5.0, 6.0], "name": list("abcdef")}).to_csv(
        path, index=False
    )
    with pytest.raises(DataError, match="'v' has 1 missing"):
        prepare_data(forecast_spec(), DataSource(path, "csv"), None)
    with pytest.raises(DataError, match="numeric columns; 'name'"):
        prepare_data(forecast_spec(target="name"), DataSource(path, "csv"), None)
    with pytest.raises(DataError, match="unknown columns: nope"):
        prepare_data(forecast_spec(features=["nope"]), DataSource(path, "csv"), None)


def test_last_value_residual_adds_the_level_back() -> None:
    inner = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(6, 2))
    torch.nn.init.zeros_(inner[1].weight)
    torch.nn.init.zeros_(inner[1].bias)
    x = torch.tensor([[[1.0, 5.0], [2.0, 6.0], [3.0, 7.0]]])  # last target value 3
    assert LastValueResidual(inner)(x).tolist() == [[3.0, 3.0]]  # a zero net is naive


def test_sequence_preprocessor_standardises_per_feature() -> None:
    rng = np.random.default_rng(0)
    x = np.stack([rng.normal(5, 2, (50, 7)), rng.normal(-1, 0.5, (50, 7))], axis=-1)
    prep = SequencePreprocessor.fit(x)
    z = prep.transform(x)
    assert z.shape == (50, 7, 2)
    assert z.reshape(-1, 2).mean(axis=0) == pytest.approx([0, 0], abs=1e-6)
    assert z.reshape(-1, 2).std(axis=0) == pytest.approx([1, 1], rel=1e-5)
    again = SequencePreprocessor.from_json(prep.to_json())
    assert np.array_equal(again.transform(x), z)
    univariate = SequencePreprocessor.fit(x[..., 0])  # (N, T): one feature
    assert univariate.transform(x[..., 0]).shape == (50, 7, 1)


def test_sequence_encoder_checks_shapes() -> None:
    prep = SequencePreprocessor.fit(np.zeros((4, 5, 2)) + np.arange(2))
    encoder = load_input_encoder({"type": "sequence", **prep.to_json()})
    assert encoder.encode([np.ones((5, 2)).tolist()]).shape == (1, 5, 2)
    with pytest.raises(InputError, match=r"input 0 has shape \[3, 2\]; the model takes \[5, 2\]"):
        encoder.encode([np.ones((3, 2)).tolist()])
    with pytest.raises(InputError, match="NaN"):
        encoder.encode([[[float("nan"), 1]] * 5])


def test_forecast_encoder_takes_records_arrays_and_numbers(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    pd.DataFrame({"v": np.arange(20.0), "u": np.arange(20.0) ** 2}).to_csv(path, index=False)
    data = prepare_data(forecast_spec(features=["u"]), DataSource(path, "csv"), None)
    encoder = load_input_encoder(data.preprocessing)
    rows = [[1.0, 1.0], [2.0, 4.0], [3.0, 9.0]]
    records = [{"v": v, "u": u} for v, u in rows]
    assert np.array_equal(encoder.encode([rows]), encoder.encode([records]))
    with pytest.raises(InputError, match="needs the last 3 rows, got 2"):
        encoder.encode([rows[:2]])
    with pytest.raises(InputError, match="missing u"):
        encoder.encode([[{"v": 1.0}] * 3])
    with pytest.raises(InputError, match="every value must be a number"):
        encoder.encode([[["a", 1.0]] * 3])
    single = prepare_data(forecast_spec(), DataSource(path, "csv"), None)
    plain = load_input_encoder(single.preprocessing)
    assert plain.encode([[1.0, 2.0, 3.0]]).shape == (1, 3, 1)
    assert single.input_schema["columns"] == ["v"] and single.input_schema["window"] == 3


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"window": None}, "needs 'target'"),
        ({"task": "regression"}, "belong to task 'forecasting' only"),
        ({"model": {"kind": "cnn", "architecture": "simple"}}, "rnn or an mlp"),
        ({"time_column": "v"}, "cannot also be an input"),
        ({"seasonal_period": 4}, "cannot exceed window"),
    ],
)
def test_forecasting_specs_that_cannot_work(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        forecast_spec(**fields)


def test_mlp_forecasts_on_flattened_windows(tmp_path: Path) -> None:
    t = np.arange(300)
    path = tmp_path / "s.csv"
    pd.DataFrame({"v": 0.05 * t + np.sin(2 * np.pi * t / 10)}).to_csv(path, index=False)
    spec = forecast_spec(
        window=20,
        horizon=2,
        model={"kind": "mlp", "hidden_layers": [32]},
        optimizer={"name": "adam", "lr": 0.01},
        training={"epochs": 40, "batch_size": 32, "validation_split": 0.0, "test_split": 0.2},
    )
    data = prepare_data(spec, DataSource(path, "csv"), None)
    result = get_kind("mlp").train(spec, data, MemoryReporter(tmp_path))
    test = result.metrics["test"]
    assert test["rmse"] < test["naive_rmse"] / 3  # the trend carries past the training range
    assert result.network(data.train.x[:5]).shape == (5, 2)
