"""The one watcher every training loop (supervised and RL) consults between batches or
steps: it stops the job once its deadline passes (a clock read, no I/O) and asks the
reporter whether the job was cancelled at most every `interval` seconds (one SQL read),
so a poll costs nothing measurable per batch."""

from __future__ import annotations

import time

from models.base import Cancelled, Reporter


class Watch:
    def __init__(self, reporter: Reporter, interval: float) -> None:
        self.reporter = reporter
        self.interval = interval
        self.deadline = reporter.deadline()
        self.last = time.monotonic()

    def check_deadline(self, where: str) -> None:
        """Raise `TimeLimitExceeded` naming `where` ("in epoch 3 of 10") once the job's
        limit has passed. Callers past their last unit of work do not call it: a limit that
        passes then changes nothing."""
        if self.deadline is not None and self.deadline.passed(time.monotonic()):
            raise self.deadline.exceeded(where)

    @property
    def past_deadline(self) -> bool:
        return self.deadline is not None and self.deadline.passed(time.monotonic())

    def poll(self) -> None:
        """Raise `Cancelled` when the reporter says so (it raises `Released` itself when the
        worker is shutting down), asking at most every `interval` seconds."""
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last = now
            if self.reporter.cancelled():
                raise Cancelled()
