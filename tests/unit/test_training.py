"""The shared loop and the model kinds, trained through `models` alone (no SQL, no HTTP).

`MemoryReporter` is the in-memory side of the Reporter protocol; the SQL-backed one is
exercised by the end-to-end tests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.datasets import load_diabetes, load_iris

from models.base import Cancelled, DivergedError, Released
from models.bundle import load_bundle, save_bundle
from models.checkpoint import load_checkpoint
from models.loop import EVAL_BATCH, MIN_EVAL_BATCH, eval_rows, forward_all
from models.prepare import DataSource, InputError, prepare_data
from models.registry import get_kind
from models.specs import JobSpec
from models.splits import split_indices
from tests.unit.reporting import MemoryReporter


@pytest.fixture
def iris_csv(tmp_path: Path) -> DataSource:
    bunch = load_iris(as_frame=True)
    frame = bunch.frame.drop(columns=["target"])
    frame["species"] = [str(bunch.target_names[t]) for t in bunch.target]
    path = tmp_path / "iris.csv"
    frame.to_csv(path, index=False)
    return DataSource(path, "csv")


@pytest.fixture
def diabetes_csv(tmp_path: Path) -> DataSource:
    path = tmp_path / "diabetes.csv"
    load_diabetes(as_frame=True, scaled=False).frame.to_csv(path, index=False)
    return DataSource(path, "csv")


def iris_spec(**training: Any) -> JobSpec:
    return JobSpec.model_validate(
        {
            "dataset_id": "d",
            "task": "classification",
            "target": "species",
            "model": {"kind": "mlp", "hidden_layers": [16]},
            "optimizer": {"name": "adam", "lr": 0.01},
            "training": {"epochs": 6, "batch_size": 16, "checkpoint_every": 2, **training},
        }
    )


def train(spec: JobSpec, source: DataSource, reporter: MemoryReporter) -> Any:
    data = prepare_data(spec, source, None)
    return get_kind(spec.model.kind).train(spec, data, reporter, cancel_poll_seconds=0.0), data


def test_the_loop_reports_progress_within_each_epoch(iris_csv: DataSource) -> None:
    reporter = MemoryReporter()
    _, data = train(iris_spec(), iris_csv, reporter)
    batches = -(-len(data.train) // 16)
    # (epochs finished, batches done, batches in the epoch, step): every batch of every epoch.
    expected = [(e, b, batches, None) for e in range(6) for b in range(1, batches + 1)]
    assert reporter.progress_calls == expected


def test_splits_are_disjoint_and_seeded() -> None:
    train_rows, val_rows, test_rows = split_indices(100, validation=0.2, test=0.1, seed=3)
    assert (len(train_rows), len(val_rows), len(test_rows)) == (70, 20, 10)
    assert len(set(train_rows) | set(val_rows) | set(test_rows)) == 100
    again = split_indices(100, validation=0.2, test=0.1, seed=3)
    assert all(
        np.array_equal(a, b) for a, b in zip(again, (train_rows, val_rows, test_rows), strict=False)
    )
    empty_val = split_indices(10, validation=0.0, test=0.0, seed=0)
    assert len(empty_val[0]) == 10 and len(empty_val[1]) == len(empty_val[2]) == 0


def test_same_seed_same_weights(iris_csv: DataSource, tmp_path: Path) -> None:
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    first, _ = train(iris_spec(), iris_csv, MemoryReporter(tmp_path / "a"))
    second, _ = train(iris_spec(), iris_csv, MemoryReporter(tmp_path / "b"))
    for (name, a), (_, b) in zip(
        first.network.state_dict().items(), second.network.state_dict().items(), strict=False
    ):
        assert torch.equal(a, b), name


def test_history_checkpoints_and_metrics(iris_csv: DataSource, tmp_path: Path) -> None:
    reporter = MemoryReporter(tmp_path)
    result, data = train(iris_spec(epochs=30), iris_csv, reporter)
    assert [r.epoch for r in reporter.records] == list(range(1, 31))
    assert [epoch for epoch, _ in reporter.checkpoints] == list(range(2, 31, 2))
    assert reporter.records[-1].train_loss < reporter.records[0].train_loss
    assert result.metrics["test"]["accuracy"] > 0.8
    assert len(data.test) == 15 and len(data.val) == 15 and len(data.train) == 120


def test_final_training_metrics_on_a_seeded_sample_of_a_large_training_part(
    iris_csv: DataSource, tmp_path: Path
) -> None:
    """Scoring the training part costs a pass over it; above `score_training_rows` rows the
    final metrics use a sample drawn with the job's seed. Training, validation and test are
    untouched: the same network and the same validation and test metrics either way."""
    results = {}
    for rows in (None, 120, 50):
        spec = iris_spec(epochs=3, score_training_rows=rows)
        results[rows], data = train(spec, iris_csv, MemoryReporter(tmp_path / str(rows)))
    whole, exact, sampled = results[None], results[120], results[50]
    assert "scored_rows" not in whole.metrics["train"]
    assert exact.metrics == whole.metrics  # 120 training rows: nothing to sample
    assert sampled.metrics["train"]["scored_rows"] == 50
    assert sampled.metrics["validation"] == whole.metrics["validation"]
    assert sampled.metrics["test"] == whole.metrics["test"]
    # The sample's own numbers: its rows, scored by the same network.
    generator = torch.Generator().manual_seed(0)
    rows = torch.randperm(len(data.train), generator=generator)[:50].sort().values
    out = sampled.network.eval()(data.train.x[rows])
    expected = (out.argmax(-1) == data.train.y[rows]).double().mean().item()
    assert sampled.metrics["train"]["accuracy"] == pytest.approx(expected)
    assert sampled.metrics["train"]["accuracy"] != pytest.approx(
        whole.metrics["train"]["accuracy"], abs=1e-9
    ) or sampled.metrics["train"]["loss"] != pytest.approx(whole.metrics["train"]["loss"])
    default = iris_spec().training
    assert default.score_training_rows == 10_000


def test_resume_from_a_checkpoint_gives_the_uninterrupted_result(
    iris_csv: DataSource, tmp_path: Path
) -> None:
    (tmp_path / "full").mkdir(), (tmp_path / "cut").mkdir(), (tmp_path / "resumed").mkdir()
    full, _ = train(iris_spec(), iris_csv, MemoryReporter(tmp_path / "full"))
    cut = MemoryReporter(tmp_path / "cut", cancel_after=3)
    with pytest.raises(Cancelled):
        train(iris_spec(), iris_csv, cut)
    # Epoch 3 was not due (every 2), but a cancelled job checkpoints where it stopped.
    assert [epoch for epoch, _ in cut.checkpoints] == [2, 3]
    _, path = cut.checkpoints[-1]
    resumed_reporter = MemoryReporter(tmp_path / "resumed")
    resumed_reporter.resume_from = load_checkpoint(path)
    resumed, _ = train(iris_spec(), iris_csv, resumed_reporter)
    assert [r.epoch for r in resumed_reporter.records] == [4, 5, 6]
    assert_same_weights(full.network, resumed.network)


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    left, right = a.state_dict(), b.state_dict()
    assert left.keys() == right.keys()
    for name in left:
        assert torch.equal(left[name], right[name]), name


@pytest.mark.parametrize("stop", [Cancelled(), Released()], ids=["cancelled", "released"])
def test_a_job_stopped_mid_epoch_resumes_there_and_ends_as_if_never_stopped(
    iris_csv: DataSource, tmp_path: Path, stop: Cancelled
) -> None:
    """Dropout (the global generator), batch norm, a cosine schedule per batch and early
    stopping's state all cross the stop: the checkpoint holds the batch it stopped after,
    the epoch's shuffle, every random state and the epoch's loss so far."""
    spec = iris_spec(
        epochs=5,
        checkpoint_every=None,
        checkpoint_seconds=None,
        lr_schedule={"name": "cosine"},
        early_stopping={"patience": 50},
    )
    spec.model = spec.model.model_copy(update={"dropout": 0.3, "batch_norm": True})
    (tmp_path / "full").mkdir(), (tmp_path / "cut").mkdir(), (tmp_path / "resumed").mkdir()
    full_reporter = MemoryReporter(tmp_path / "full")
    full, data = train(spec, iris_csv, full_reporter)
    batches = -(-len(data.train) // 16)
    cut = MemoryReporter(tmp_path / "cut", stop_after_progress=2 * batches + 3, stop=stop)
    with pytest.raises(type(stop)):
        train(spec, iris_csv, cut)
    assert [r.epoch for r in cut.records] == [1, 2]
    [(epoch, path)] = cut.checkpoints  # no checkpoint was due: only the one at the stop
    assert epoch == 3
    assert cut.metas[-1]["batch"] == 3 and cut.metas[-1]["batches"] == batches
    assert cut.metas[-1]["metrics"] == {"batch": 3, "batches": batches}

    resumed_reporter = MemoryReporter(tmp_path / "resumed")
    resumed_reporter.resume_from = load_checkpoint(path)
    resumed, _ = train(spec, iris_csv, resumed_reporter)
    assert [r.epoch for r in resumed_reporter.records] == [3, 4, 5]
    # The rest of epoch 3, then 4 and 5: each batch once.
    assert [c[1] for c in resumed_reporter.progress_calls[: batches - 3]] == list(
        range(4, batches + 1)
    )
    assert_same_weights(full.network, resumed.network)
    assert resumed.metrics == full.metrics
    for got, want in zip(resumed_reporter.records, full_reporter.records[2:], strict=True):
        assert got.val_loss == want.val_loss and got.metrics == want.metrics
        assert got.train_loss == pytest.approx(want.train_loss, rel=1e-12)


def test_divergence_fails_with_the_epoch(diabetes_csv: DataSource, tmp_path: Path) -> None:
    spec = JobSpec.model_validate(
        {
            "dataset_id": "d",
            "task": "regression",
            "target": "target",
            "model": {"kind": "mlp", "hidden_layers": [64, 64]},
            "optimizer": {"name": "sgd", "lr": 10},
            "training": {"epochs": 5, "batch_size": 8},
        }
    )
    with pytest.raises(DivergedError, match="diverged at epoch 1"):
        train(spec, diabetes_csv, MemoryReporter(tmp_path))


def test_early_stopping_restores_the_best_epoch(diabetes_csv: DataSource, tmp_path: Path) -> None:
    spec = JobSpec.model_validate(
        {
            "dataset_id": "d",
            "task": "regression",
            "target": "target",
            "model": {"kind": "mlp", "hidden_layers": [256, 256]},
            "optimizer": {"name": "adam", "lr": 0.01},
            "training": {
                "epochs": 200,
                "batch_size": 16,
                "validation_split": 0.3,
                "early_stopping": {"patience": 3},
            },
        }
    )
    reporter = MemoryReporter(tmp_path)
    result, _ = train(spec, diabetes_csv, reporter)
    assert len(reporter.records) < 200  # it overfits and stops
    best = min(r.val_loss for r in reporter.records)
    assert result.metrics["validation"]["loss"] == pytest.approx(best, rel=1e-5)


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam"])
@pytest.mark.parametrize("kind", ["linear", "mlp"])  # tabular kinds; others have own tests
def test_every_kind_and_optimizer_learns(
    kind: str, optimizer: str, iris_csv: DataSource, tmp_path: Path
) -> None:
    spec = JobSpec.model_validate(
        {
            "dataset_id": "d",
            "task": "classification",
            "target": "species",
            "model": {"kind": kind},
            "optimizer": {"name": optimizer, "lr": 0.05},
            "training": {"epochs": 15, "batch_size": 16, "test_split": 0.3},
        }
    )
    result, _ = train(spec, iris_csv, MemoryReporter(tmp_path))
    assert result.metrics["test"]["accuracy"] > 0.6, result.metrics["test"]


def test_bundle_round_trip_predicts_the_same(iris_csv: DataSource, tmp_path: Path) -> None:
    spec = iris_spec()
    result, data = train(spec, iris_csv, MemoryReporter(tmp_path))
    path = tmp_path / "model.safetensors"
    sha = save_bundle(path, kind="mlp", interface=data.interface(), result=result)
    predictor = load_bundle(path, expected_sha256=sha, kinds=get_kind)
    frame = pd.read_csv(iris_csv.path).drop(columns=["species"])
    records = frame.iloc[:5].to_dict(orient="records")
    out = predictor.predict(records)
    assert out["labels"] == ["setosa", "versicolor", "virginica"]
    assert len(out["predictions"]) == 5 and len(out["probabilities"][0]) == 3
    assert predictor.predict(frame.iloc[:5].to_numpy().tolist()) == out
    with pytest.raises(InputError, match="missing columns"):
        predictor.predict([{"sepal length (cm)": 1.0}])


def test_lr_schedule_reaches_the_optimizer_and_the_history(
    iris_csv: DataSource, tmp_path: Path
) -> None:
    spec = iris_spec(lr_schedule={"name": "step", "step_size": 2, "gamma": 0.5})
    reporter = MemoryReporter(tmp_path)
    get_kind("mlp").train(spec, prepare_data(spec, iris_csv, None), reporter)
    lrs = [record.metrics["lr"] for record in reporter.records]
    assert lrs == pytest.approx([0.01, 0.01, 0.005, 0.005, 0.0025, 0.0025])


def test_clip_grad_norm_bounds_every_step(
    iris_csv: DataSource, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    norms: list[float] = []
    original = torch.optim.Adam.step

    def step(self: torch.optim.Optimizer, *args: Any, **kwargs: Any) -> Any:
        grads = [p.grad for group in self.param_groups for p in group["params"]]
        norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))
        return original(self, *args, **kwargs)

    spec = iris_spec(clip_grad_norm=0.05)
    data = prepare_data(spec, iris_csv, None)
    monkeypatch.setattr(torch.optim.Adam, "step", step)
    get_kind("mlp").train(spec, data, MemoryReporter(tmp_path))
    assert norms and max(norms) <= 0.05 * (1 + 1e-4)
    norms.clear()
    get_kind("mlp").train(iris_spec(), data, MemoryReporter(tmp_path))
    assert max(norms) > 0.05  # without the option the same steps are larger


def test_mixed_precision_runs_the_forward_pass_in_bfloat16(
    iris_csv: DataSource, tmp_path: Path
) -> None:
    spec = iris_spec(epochs=30, mixed_precision=True)
    data = prepare_data(spec, iris_csv, None)
    seen: set[torch.dtype] = set()
    original = torch.nn.Linear.forward

    def forward(self: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
        out = original(self, x)
        seen.add(out.dtype)
        return out

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.nn.Linear, "forward", forward)
        result = get_kind("mlp").train(spec, data, MemoryReporter(tmp_path))
    assert torch.bfloat16 in seen  # training batches
    assert torch.float32 in seen  # evaluation stays float32
    assert all(p.dtype == torch.float32 for p in result.network.parameters())
    assert result.metrics["test"]["accuracy"] > 0.8


def test_a_time_based_checkpoint_comes_inside_a_long_epoch(iris_csv: DataSource) -> None:
    """`checkpoint_seconds` is looked at after every batch, not only at the epoch's end:
    here it has always passed, so there is one after each batch (the epoch's last batch
    gets the epoch's own)."""
    spec = iris_spec(epochs=2, checkpoint_every=None, checkpoint_seconds=1e-9)
    reporter = MemoryReporter()
    _, data = train(spec, iris_csv, reporter)
    batches = -(-len(data.train) // 16)
    places = [(m["epoch"], m.get("batch")) for m in reporter.metas]
    inside = [(e, b) for e in (1, 2) for b in [*range(1, batches), None]]
    assert places == inside


def test_scoring_passes_fit_the_widest_activation_on_a_cpu() -> None:
    """A convolution scores in small passes (its activations spill the caches otherwise), a
    dense network in large ones, a few rows in one pass; the outputs are the same."""
    conv = torch.nn.Sequential(
        torch.nn.Conv2d(1, 32, 3, padding=1), torch.nn.Flatten(), torch.nn.Linear(32 * 784, 10)
    )
    dense = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 64))
    images = torch.randn(600, 1, 28, 28)
    assert MIN_EVAL_BATCH <= eval_rows(conv, images) < 128  # 32 x 28 x 28 values a row
    assert 1000 < eval_rows(dense, images) <= EVAL_BATCH
    assert eval_rows(conv, images[:100]) == EVAL_BATCH  # few rows: one pass, unprobed
    with torch.inference_mode():
        whole = conv(images)
    assert torch.allclose(forward_all(conv, images), whole, atol=1e-5)
