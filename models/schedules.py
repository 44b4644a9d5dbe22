"""Learning-rate schedules as pure functions of training progress.

The rate at any point is computed from the epoch and the batch within it, never from a
scheduler's running state, so a job resumed from a checkpoint continues on exactly the same
curve without storing anything.
"""

from __future__ import annotations

import math

import torch

from models.specs import LRScheduleSpec


def lr_factor(schedule: LRScheduleSpec | None, progress: float, epoch: int, epochs: int) -> float:
    """The multiplier of the optimizer's `lr` at `progress` epochs done (a float: epoch - 1
    plus the fraction of the current epoch), during 1-based `epoch` of `epochs`."""
    if schedule is None:
        return 1.0
    warmup = schedule.warmup_epochs
    if warmup > 0 and progress < warmup:
        return (progress + 1e-12) / warmup  # linear from ~0 to 1 over the warm-up
    if schedule.name == "step":
        return schedule.gamma ** ((epoch - 1) // schedule.step_size)
    if schedule.name == "exponential":
        return schedule.gamma ** (epoch - 1)
    # cosine: from 1 down to min_factor over the epochs after the warm-up, batch by batch
    span = max(epochs - warmup, 1e-12)
    t = min(max((progress - warmup) / span, 0.0), 1.0)
    low = schedule.min_factor
    return low + (1 - low) * 0.5 * (1 + math.cos(math.pi * t))


class LRScheduler:
    """Sets every parameter group's rate to base rate x factor before each batch."""

    def __init__(
        self, optimizer: torch.optim.Optimizer, schedule: LRScheduleSpec | None, epochs: int
    ) -> None:
        self.optimizer = optimizer
        self.schedule = schedule
        self.epochs = epochs
        self.base = [float(group["lr"]) for group in optimizer.param_groups]
        self.factor: float | None = None  # set on the first update

    def update(self, epoch: int, batch: int, batches: int) -> None:
        if self.schedule is None:
            return
        progress = epoch - 1 + batch / max(batches, 1)
        factor = lr_factor(self.schedule, progress, epoch, self.epochs)
        if factor != self.factor:
            self.factor = factor
            for group, base in zip(self.optimizer.param_groups, self.base, strict=True):
                group["lr"] = base * factor

    @property
    def lr(self) -> float:
        return self.base[0] * (self.factor if self.factor is not None else 1.0)
