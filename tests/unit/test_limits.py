"""Caps that keep one job from exhausting a worker: a wall-clock limit, which both training
loops obey, and the size of the network, counted at submission without building it."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch._dynamo  # noqa: F401 - optimizers import it lazily (1.5 s): not inside a time limit
from pydantic import ValidationError

from models.base import Deadline, EpochRecord, TimeLimitExceeded, TrainingError
from models.data import inspect_dataset
from models.envs import check_env
from models.prepare import DataSource
from models.registry import get_kind
from models.rl.dqn import train_dqn
from models.rl.tabular import train_tabular
from models.specs import DQNSpec, JobSpec
from service.errors import Unprocessable
from service.settings import Settings
from service.tables import Dataset
from service.validation import check_environment, check_job, parameter_count
from tests.unit.reporting import MemoryReporter

# --- the spec field ------------------------------------------------------------------------


def table_job(**training: Any) -> dict[str, Any]:
    return {
        "dataset_id": "d",
        "task": "classification",
        "target": "species",
        "model": {"kind": "mlp", "hidden_layers": [16]},
        "training": training,
    }


def test_time_limit_is_an_optional_positive_number() -> None:
    assert JobSpec.model_validate(table_job()).training.time_limit_seconds is None
    assert (
        JobSpec.model_validate(table_job(time_limit_seconds=0.5)).training.time_limit_seconds == 0.5
    )
    rl = JobSpec.model_validate({"model": {"kind": "dqn"}, "training": {"time_limit_seconds": 60}})
    assert rl.training.time_limit_seconds == 60
    for bad in (0, -1, float("inf"), float("nan"), "soon"):
        with pytest.raises(ValidationError, match="time_limit_seconds"):
            JobSpec.model_validate(table_job(time_limit_seconds=bad))


def test_a_deadline_counts_from_the_first_start() -> None:
    now = datetime.now(UTC)
    resumed = Deadline.after_start(now - timedelta(seconds=100), 160)
    assert resumed.seconds == 160
    assert resumed.at - time.monotonic() == pytest.approx(60, abs=5)
    assert not resumed.passed(time.monotonic())
    assert Deadline.after_start(now - timedelta(hours=2), 3600).passed(time.monotonic())
    assert issubclass(TimeLimitExceeded, TrainingError)  # the worker records it as failed


# --- the supervised loop -------------------------------------------------------------------


@pytest.fixture
def iris_csv(tmp_path: Path) -> DataSource:
    from sklearn.datasets import load_iris

    bunch = load_iris(as_frame=True)
    frame = bunch.frame.drop(columns=["target"])
    frame = frame.rename(columns=lambda c: c.replace(" (cm)", "").replace(" ", "_"))
    frame["species"] = [str(bunch.target_names[t]) for t in bunch.target]
    frame["colour"] = np.random.default_rng(0).choice(["red", "green", "blue"], len(frame))
    path = tmp_path / "iris.csv"
    frame.to_csv(path, index=False)
    return DataSource(path, "csv")


class SlowReporter(MemoryReporter):
    """A deadline `seconds` after training asks for it (data preparation is not timed);
    each epoch's report takes `pause` seconds, and epoch `until`'s lasts past the deadline."""

    def __init__(self, seconds: float, pause: float = 0.0, until: int | None = None) -> None:
        super().__init__()
        self.seconds, self.pause, self.until = seconds, pause, until

    def deadline(self) -> Deadline | None:
        if self.job_deadline is None:
            self.job_deadline = Deadline(self.seconds, time.monotonic() + self.seconds)
        return self.job_deadline

    def epoch_end(self, record: EpochRecord) -> None:
        super().epoch_end(record)
        time.sleep(self.pause)
        if record.epoch == self.until:
            assert self.job_deadline is not None
            time.sleep(max(self.job_deadline.at - time.monotonic(), 0.0) + 0.01)


def fit_iris(source: DataSource, reporter: MemoryReporter, epochs: int) -> None:
    spec = JobSpec.model_validate(table_job(epochs=epochs, batch_size=16))
    data = get_kind(spec.model.kind).prepare(spec, source, None)
    get_kind("mlp").train(spec, data, reporter, cancel_poll_seconds=0.0)


def test_the_loop_stops_once_the_limit_passes(iris_csv: DataSource) -> None:
    reporter = SlowReporter(0.5, pause=0.05)
    with pytest.raises(TimeLimitExceeded) as caught:
        fit_iris(iris_csv, reporter, epochs=10_000)
    assert reporter.job_deadline is not None and reporter.job_deadline.passed(time.monotonic())
    found = re.fullmatch(
        r"time limit: the job's 0.5 s ran out (in|after) epoch (\d+) of 10000", str(caught.value)
    )
    assert found, str(caught.value)
    reported = len(reporter.records)
    assert 1 <= reported < 100
    assert int(found[2]) == (reported if found[1] == "after" else reported + 1)


def test_the_loop_stops_after_the_epoch_that_passed_the_limit(iris_csv: DataSource) -> None:
    reporter = SlowReporter(0.5, until=2)
    with pytest.raises(TimeLimitExceeded, match=r"ran out after epoch 2 of 5$"):
        fit_iris(iris_csv, reporter, epochs=5)
    assert [r.epoch for r in reporter.records] == [1, 2]


def test_a_resumed_job_past_its_limit_stops_at_once(iris_csv: DataSource) -> None:
    first_start = datetime.now(UTC) - timedelta(hours=2)
    reporter = MemoryReporter(deadline=Deadline.after_start(first_start, 3600))
    with pytest.raises(
        TimeLimitExceeded, match=r"^time limit: the job's 3600 s ran out in epoch 1 of 6$"
    ):
        fit_iris(iris_csv, reporter, epochs=6)
    assert reporter.records == []


def test_a_limit_passing_after_the_last_epoch_changes_nothing(iris_csv: DataSource) -> None:
    reporter = SlowReporter(0.5, until=2)
    fit_iris(iris_csv, reporter, epochs=2)
    assert [r.epoch for r in reporter.records] == [1, 2]


# --- reinforcement learning ------------------------------------------------------------------


@pytest.mark.parametrize(
    "model",
    [{"kind": "dqn", "env": "GridWorld", "hidden_layers": [16]}, {"kind": "q_learning"}],
    ids=["dqn", "q_learning"],
)
def test_rl_stops_once_the_limit_passes(model: dict[str, Any]) -> None:
    spec = JobSpec.model_validate(
        {"model": model, "training": {"total_steps": 10_000_000, "eval_episodes": 1}}
    )
    reporter = MemoryReporter(deadline=Deadline(0.3, time.monotonic() + 0.3))
    train = train_dqn if model["kind"] == "dqn" else train_tabular
    with pytest.raises(TimeLimitExceeded) as caught:
        train(spec, None, reporter, cancel_poll_seconds=0.0)
    found = re.fullmatch(
        r"time limit: the job's 0.3 s ran out at step (\d+) of 10000000", str(caught.value)
    )
    assert found, str(caught.value)
    assert 0 < int(found[1]) < 10_000_000


# --- parameter counts ----------------------------------------------------------------------


def record(source: DataSource) -> Dataset:
    """The dataset row `POST /datasets` would write for `source`."""
    info = inspect_dataset(source.path, source.format)
    return Dataset(
        format=info.format, num_rows=info.num_rows, columns=info.columns, shape=info.shape
    )


def built_parameters(spec: JobSpec, source: DataSource) -> int:
    """Parameters of the network a one-epoch job actually trains."""
    data = get_kind(spec.model.kind).prepare(spec, source, None)
    result = get_kind(spec.model.kind).train(spec, data, MemoryReporter(), cancel_poll_seconds=0.0)
    return sum(p.numel() for p in result.network.parameters())


def job(model: dict[str, Any], **fields: Any) -> JobSpec:
    training = {"epochs": 1, "batch_size": 16, "validation_split": 0.2, "test_split": 0.0}
    return JobSpec.model_validate(
        {"dataset_id": "d", "model": model, "training": training, **fields}
    )


def npz(path: Path, x: np.ndarray, y: np.ndarray) -> DataSource:
    np.savez(path, x=x, y=y)
    return DataSource(path, "npz")


def series_csv(path: Path) -> DataSource:
    t = np.arange(80, dtype=np.float64)
    pd.DataFrame({"y": np.sin(t / 5) + t / 40, "x": np.cos(t / 7)}).to_csv(path, index=False)
    return DataSource(path, "csv")


CLASSIFY = {"task": "classification", "target": "species"}


@pytest.mark.parametrize(
    ("model", "fields"),
    [
        ({"kind": "mlp", "hidden_layers": [16, 8], "batch_norm": True}, CLASSIFY),
        (
            {"kind": "mlp", "hidden_layers": [8], "dropout": 0.1},
            {"task": "regression", "target": "petal_width"},
        ),
        ({"kind": "linear", "degree": 2}, {"task": "regression", "target": "petal_width"}),
        ({"kind": "linear", "solver": "sgd", "fit_intercept": False}, CLASSIFY),
    ],
    ids=["mlp-classes", "mlp-regression", "linear-poly", "linear-softmax"],
)
def test_table_counts_match_the_built_network(
    iris_csv: DataSource, model: dict[str, Any], fields: dict[str, Any]
) -> None:
    spec = job(model, **fields)  # colour is a string feature: three one-hot inputs
    assert parameter_count(spec, record(iris_csv)) == built_parameters(spec, iris_csv)


def test_cnn_counts_match_the_built_network(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    gray = npz(
        tmp_path / "g.npz",
        rng.integers(0, 256, (40, 12, 12), dtype=np.uint8),
        rng.integers(0, 3, 40),
    )
    rgb = npz(
        tmp_path / "c.npz",
        rng.integers(0, 256, (40, 3, 8, 8), dtype=np.uint8),
        rng.integers(0, 2, 40),
    )
    layers = [
        {"type": "conv", "out_channels": 4, "kernel_size": 3, "padding": 1},
        {"type": "batch_norm"},
        {"type": "relu"},
        {"type": "conv", "out_channels": 6, "kernel_size": 3, "depthwise_separable": True},
        {"type": "max_pool", "kernel_size": 2},
    ]
    cases = [
        ({"kind": "cnn", "layers": layers, "head": [10]}, gray),
        ({"kind": "cnn", "architecture": "simple"}, gray),
        ({"kind": "cnn", "architecture": "resnet"}, rgb),
    ]
    for model, source in cases:
        spec = job(model, task="classification")
        assert parameter_count(spec, record(source)) == built_parameters(spec, source), model


def test_rnn_counts_match_the_built_network(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    sequences = npz(
        tmp_path / "s.npz", rng.normal(size=(40, 6, 3)).astype(np.float32), rng.integers(0, 3, 40)
    )
    single = npz(
        tmp_path / "u.npz", rng.normal(size=(40, 6)).astype(np.float32), rng.normal(size=40)
    )
    series = series_csv(tmp_path / "series.csv")
    lstm = {"kind": "rnn", "cell": "lstm", "hidden_size": 8, "num_layers": 2, "dropout": 0.1,
            "bidirectional": True, "head": [5]}  # fmt: skip
    forecast = {"task": "forecasting", "target": "y", "features": ["x"], "window": 6, "horizon": 2}
    cases = [
        (lstm, sequences, {"task": "classification"}),
        ({"kind": "rnn", "cell": "gru", "hidden_size": 4}, single, {"task": "regression"}),
        (
            {"kind": "rnn", "cell": "rnn", "hidden_size": 4, "nonlinearity": "relu"},
            series,
            forecast,
        ),
        ({"kind": "mlp", "hidden_layers": [8]}, series, forecast),
    ]
    for model, source, fields in cases:
        spec = job(model, **fields)
        assert parameter_count(spec, record(source)) == built_parameters(spec, source), model


@pytest.mark.parametrize(
    "model",
    [
        {"kind": "dqn", "env": "GridWorld", "hidden_layers": [16]},
        {"kind": "dqn", "env": "CartPole-v1", "hidden_layers": [32, 16], "dueling": True},
    ],
    ids=["grid", "cartpole-dueling"],
)
def test_dqn_counts_match_the_built_network(model: dict[str, Any]) -> None:
    spec = JobSpec.model_validate(
        {
            "model": {**model, "learning_starts": 10},
            "training": {"total_steps": 40, "eval_episodes": 1},
        }
    )
    assert isinstance(spec.model, DQNSpec)
    info = check_env(spec.model.env, None, tabular=False)
    result = train_dqn(spec, None, MemoryReporter(), cancel_poll_seconds=0.0)
    assert parameter_count(spec, info) == sum(p.numel() for p in result.network.parameters())
    tabular = JobSpec.model_validate({"model": {"kind": "q_learning"}})
    assert parameter_count(tabular, check_env("GridWorld", None, tabular=True)) == 0


def test_a_huge_network_is_counted_without_building_it(iris_csv: DataSource) -> None:
    spec = job({"kind": "mlp", "hidden_layers": [65_536] * 4}, **CLASSIFY)
    started = time.monotonic()
    count = parameter_count(spec, record(iris_csv))
    inputs, classes = 4 + 3, 3
    expected = (inputs + 1) * 65_536 + 3 * (65_537 * 65_536) + (65_536 + 1) * classes
    assert count == expected  # 12.9 billion: 52 GB of float32 were it allocated
    assert time.monotonic() - started < 5


# --- the caps at submission ----------------------------------------------------------------


def test_the_caps_refuse_a_spec_naming_both_numbers(iris_csv: DataSource) -> None:
    dataset = record(iris_csv)
    spec = job({"kind": "mlp", "hidden_layers": [16]}, **CLASSIFY)
    count = parameter_count(spec, dataset)  # (7 + 1) * 16 + (16 + 1) * 3 = 179
    assert count == 179
    check_job(spec, dataset, None, Settings(max_parameters=count))
    with pytest.raises(Unprocessable, match=r"179 parameters.*: 178 \(KEIKO_MAX_PARAMETERS\)"):
        check_job(spec, dataset, None, Settings(max_parameters=count - 1))

    slow = job({"kind": "mlp"}, training={"time_limit_seconds": 7200}, **CLASSIFY)
    check_job(slow, dataset, None, Settings(max_job_seconds=7200))
    with pytest.raises(Unprocessable, match=r"time_limit_seconds is 7200.*: 3600 s"):
        check_job(slow, dataset, None, Settings(max_job_seconds=3600))

    dqn = JobSpec.model_validate(
        {
            "model": {"kind": "dqn", "env": "GridWorld", "hidden_layers": [16]},
            "training": {"time_limit_seconds": 100},
        }
    )
    check_environment(dqn, Settings())
    with pytest.raises(Unprocessable, match="KEIKO_MAX_PARAMETERS"):
        check_environment(dqn, Settings(max_parameters=10))
    with pytest.raises(Unprocessable, match="KEIKO_MAX_JOB_SECONDS"):
        check_environment(dqn, Settings(max_job_seconds=50))
