"""Learning-rate schedules: the factors against hand-computed values, and the scheduler
setting them on the optimizer."""

from __future__ import annotations

import math

import pytest
import torch

from models.schedules import LRScheduler, lr_factor
from models.specs import LRScheduleSpec


def schedule(**fields: object) -> LRScheduleSpec:
    return LRScheduleSpec.model_validate(fields)


def test_no_schedule_keeps_the_rate() -> None:
    assert lr_factor(None, 3.5, 4, 10) == 1.0


def test_step_decay() -> None:
    step = schedule(name="step", step_size=3, gamma=0.5)
    factors = [lr_factor(step, epoch - 1, epoch, 10) for epoch in range(1, 8)]
    assert factors == [1, 1, 1, 0.5, 0.5, 0.5, 0.25]


def test_exponential_decay() -> None:
    exp = schedule(name="exponential", gamma=0.9)
    assert lr_factor(exp, 0.0, 1, 5) == 1.0
    assert lr_factor(exp, 2.5, 3, 5) == pytest.approx(0.81)


def test_cosine_from_one_to_min_factor() -> None:
    cos = schedule(name="cosine", min_factor=0.1)
    assert lr_factor(cos, 0.0, 1, 10) == pytest.approx(1.0)
    assert lr_factor(cos, 5.0, 6, 10) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_factor(cos, 10.0, 10, 10) == pytest.approx(0.1)
    quarter = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4))
    assert lr_factor(cos, 2.5, 3, 10) == pytest.approx(quarter)


def test_linear_warmup_then_cosine() -> None:
    cos = schedule(name="cosine", warmup_epochs=2)
    assert lr_factor(cos, 0.5, 1, 10) == pytest.approx(0.25)
    assert lr_factor(cos, 1.5, 2, 10) == pytest.approx(0.75)
    assert lr_factor(cos, 2.0, 3, 10) == pytest.approx(1.0)
    assert lr_factor(cos, 6.0, 7, 10) == pytest.approx(0.5)  # halfway through the 8 after


def test_scheduler_sets_every_group_and_resumes_on_the_same_curve() -> None:
    weights = [torch.zeros(2, requires_grad=True), torch.zeros(3, requires_grad=True)]
    optimizer = torch.optim.SGD(
        [{"params": [weights[0]], "lr": 0.1}, {"params": [weights[1]], "lr": 0.01}]
    )
    scheduler = LRScheduler(optimizer, schedule(name="step", step_size=1, gamma=0.5), epochs=4)
    scheduler.update(epoch=3, batch=0, batches=10)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.025, 0.0025])
    assert scheduler.lr == pytest.approx(0.025)
    # A fresh scheduler (a resumed job) lands on the same value from the progress alone.
    again = torch.optim.SGD([{"params": [weights[0]], "lr": 0.1}])
    LRScheduler(again, schedule(name="step", step_size=1, gamma=0.5), epochs=4).update(3, 0, 10)
    assert again.param_groups[0]["lr"] == pytest.approx(0.025)


@pytest.mark.parametrize(
    "fields",
    [
        {"name": "step", "gamma": 0},
        {"name": "step", "gamma": 1.5},
        {"name": "cosine", "min_factor": -0.1},
        {"name": "cosine", "warmup_epochs": float("nan")},
        {"name": "linear"},
    ],
)
def test_bad_schedules_are_refused(fields: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        LRScheduleSpec.model_validate(fields)
