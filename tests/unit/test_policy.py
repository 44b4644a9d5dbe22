"""The checkpoint policy: when a checkpoint is due (time, epochs, both) and which ones
retention keeps; and the shared loop following it."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.policy import CheckpointClock, Retention, best_of
from models.prepare import DataSource
from tests.unit.reporting import MemoryReporter
from tests.unit.test_training import iris_csv, iris_spec, train  # noqa: F401 (fixture)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_time_trigger_counts_from_the_last_checkpoint() -> None:
    clock = FakeClock()
    policy = CheckpointClock(every=None, seconds=60, clock=clock)
    clock.now = 59.9
    assert not policy.due(1)
    clock.now = 60.0
    assert policy.due(2)
    policy.saved()
    clock.now = 100.0
    assert not policy.due(3)  # 40 s since the checkpoint at 60
    clock.now = 120.0
    assert policy.due(4)


def test_epoch_trigger_and_both() -> None:
    clock = FakeClock()
    by_epochs = CheckpointClock(every=3, seconds=None, clock=clock)
    clock.now = 1e6  # time alone never triggers it
    assert [e for e in range(1, 10) if by_epochs.due(e)] == [3, 6, 9]
    both = CheckpointClock(every=5, seconds=30, clock=clock)
    clock.now += 10
    assert both.due(5) and not both.due(4)
    clock.now += 25  # 35 s since it started: the time trigger fires on any epoch
    assert both.due(4)
    nothing = CheckpointClock(every=None, seconds=None, clock=clock)
    clock.now += 1e9
    assert not any(nothing.due(e) for e in range(1, 100))


def val(loss: float | None) -> dict[str, float | None]:
    return {"val_loss": loss}


def test_retention_keeps_the_latest_n_and_the_best() -> None:
    checkpoints = [(1, val(0.9)), (2, val(0.2)), (3, val(0.5)), (4, val(0.4)), (5, val(0.3))]
    assert Retention(latest=2, best=True).doomed(checkpoints) == [1, 3]  # keeps 4, 5 and 2
    assert Retention(latest=2, best=False).doomed(checkpoints) == [1, 2, 3]
    assert Retention(latest=1, best=True).doomed(checkpoints[::-1]) == [1, 3, 4]  # any order
    assert Retention(latest=None, best=True).doomed(checkpoints) == []
    assert Retention(latest=10, best=True).doomed(checkpoints) == []


def test_best_is_the_lowest_validation_loss_else_the_highest_return() -> None:
    assert best_of([(1, val(0.3)), (2, val(0.3)), (3, val(0.4))]) == 2  # a tie: the later
    assert best_of([(1, val(None)), (2, val(float("nan"))), (3, {})]) is None
    rl = [(1, {"eval_return_mean": 9.0}), (2, {"eval_return_mean": 20.0}), (3, {})]
    assert best_of(rl) == 2
    assert Retention(latest=1, best=True).doomed(rl) == [1]


@pytest.mark.parametrize(
    ("every", "seconds", "expected"),
    [(None, None, [6]), (2, None, [2, 4, 6]), (None, 3600.0, [6]), (4, None, [4, 6])],
)
def test_the_loop_follows_the_policy_and_always_saves_the_last_epoch(
    iris_csv: DataSource,  # noqa: F811
    tmp_path: Path,
    every: int | None,
    seconds: float | None,
    expected: list[int],
) -> None:
    reporter = MemoryReporter(tmp_path)
    spec = iris_spec(checkpoint_every=every, checkpoint_seconds=seconds)
    train(spec, iris_csv, reporter)
    assert [epoch for epoch, _ in reporter.checkpoints] == expected


def test_the_loop_saves_by_time(
    iris_csv: DataSource,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each epoch takes 20 s: with a 30 s period a checkpoint comes at the end of every
    other epoch, and none inside one (the clock is also read after every batch)."""
    reporter = MemoryReporter(tmp_path)
    monkeypatch.setattr("models.policy.now", lambda: 20.0 * len(reporter.records))
    train(iris_spec(checkpoint_every=None, checkpoint_seconds=30), iris_csv, reporter)
    assert [epoch for epoch, _ in reporter.checkpoints] == [2, 4, 6]
