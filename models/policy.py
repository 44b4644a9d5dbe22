"""When to write a checkpoint and which ones to keep (Lightning's `ModelCheckpoint` and
Determined's checkpoint policy, reduced to what a job spec says): by time since the last
one, or every n epochs (RL: evaluations); the latest few plus the best are kept."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any


def now() -> float:
    return time.monotonic()


class CheckpointClock:
    """Due at the end of an epoch when `every` divides it, or when `seconds` have passed
    since the last checkpoint (or the start), which the loops also ask after each batch so
    that a long epoch is checkpointed inside. The caller adds the last epoch itself."""

    def __init__(
        self,
        every: int | None,
        seconds: float | None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.every, self.seconds = every, seconds
        self.clock = clock or now
        self.last = self.clock()

    def due(self, epoch: int) -> bool:
        """At the end of `epoch`."""
        if self.every is not None and epoch % self.every == 0:
            return True
        return self.overdue()

    def overdue(self) -> bool:
        """Inside an epoch (after a batch, RL a step): `seconds` have passed. A clock read."""
        return self.seconds is not None and self.clock() - self.last >= self.seconds

    def saved(self) -> None:
        self.last = self.clock()


@dataclass(frozen=True)
class Retention:
    """Keep the `latest` newest checkpoints (None: all) and, with `best`, the one with the
    best score: the lowest `val_loss`, or the highest RL `eval_return_mean`."""

    latest: int | None
    best: bool

    def doomed(self, checkpoints: Sequence[tuple[int, dict[str, Any]]]) -> list[int]:
        """Epochs of `checkpoints` ((epoch, metrics), any order) to delete."""
        if self.latest is None:
            return []
        newest_first = sorted(checkpoints, key=lambda c: c[0], reverse=True)
        keep = {epoch for epoch, _ in newest_first[: self.latest]}
        if self.best and (chosen := best_of(newest_first)) is not None:
            keep.add(chosen)
        return sorted(epoch for epoch, _ in newest_first if epoch not in keep)


def best_of(checkpoints: Sequence[tuple[int, dict[str, Any]]]) -> int | None:
    """The epoch with the lowest validation loss, else the highest evaluation return; ties
    go to the later one. None when no checkpoint has either."""
    for name, sign in (("val_loss", 1.0), ("eval_return_mean", -1.0)):
        scored = [
            (sign * float(m[name]), -epoch)
            for epoch, m in checkpoints
            if isinstance(m.get(name), int | float) and math.isfinite(float(m[name]))
        ]
        if scored:
            return -min(scored)[1]
    return None
