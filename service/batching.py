"""Dynamic batching: concurrent predict calls for one model share one forward pass.

No call waits for a batch to fill. A call that finds the model idle runs at once, alone;
calls that arrive while the model is busy queue, and when the running pass ends, the first
of them runs every queued call's rows as one pass (Triton's dynamic batcher with no queue
delay). Each call's inputs are checked and encoded in its own thread before it queues, so
a bad call is refused on its own and never joins a batch; each gets its own rows of the
output back. `max_rows` caps a batch; `delay_seconds` (0 by default) lets a leader wait a
little for more calls, trading latency for throughput where that is wanted.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class _Call:
    x: np.ndarray
    done: threading.Event = field(default_factory=threading.Event)
    out: torch.Tensor | None = None
    error: BaseException | None = None
    lead: bool = False  # woken to run the next batch, not with an answer


@dataclass
class BatchStats:
    """What the batcher did, for metrics and tests."""

    batches: int = 0
    rows: int = 0
    calls: int = 0
    largest: int = 0  # calls in the largest batch


class Batcher:
    def __init__(
        self,
        forward: Callable[[np.ndarray], torch.Tensor],
        *,
        max_rows: int = 1024,
        delay_seconds: float = 0.0,
        on_batch: Callable[[int, int], None] | None = None,
    ) -> None:
        self.forward = forward
        self.max_rows = max_rows
        self.delay_seconds = delay_seconds
        self.on_batch = on_batch  # (calls, rows) of each batch run
        self.stats = BatchStats()
        self._lock = threading.Lock()
        self._queue: list[_Call] = []
        self._busy = False

    def run(self, x: np.ndarray) -> torch.Tensor:
        """The network's output for the rows `x`, computed alone or with other calls'."""
        call = _Call(x)
        with self._lock:
            self._queue.append(call)
            lead = not self._busy
            self._busy = True
        if not lead:
            call.done.wait()
            if not call.lead:
                return self._answer(call)
        if self.delay_seconds > 0:
            time.sleep(self.delay_seconds)
        self._run_batch()
        return self._answer(call)

    def _run_batch(self) -> None:
        """Run the queue's head (this thread's own call among it) as one pass, answer each
        call, and hand the next batch to the first call still waiting."""
        with self._lock:
            batch: list[_Call] = []
            rows = 0
            while self._queue and (not batch or rows + len(self._queue[0].x) <= self.max_rows):
                taken = self._queue.pop(0)
                batch.append(taken)
                rows += len(taken.x)
        try:
            x = batch[0].x if len(batch) == 1 else np.concatenate([c.x for c in batch])
            out = self.forward(x)
            start = 0
            for call in batch:
                call.out = out[start : start + len(call.x)]
                start += len(call.x)
        except BaseException as exc:  # every call of the batch hears of it
            for call in batch:
                call.error = exc
        with self._lock:
            self.stats.batches += 1
            self.stats.rows += rows
            self.stats.calls += len(batch)
            self.stats.largest = max(self.stats.largest, len(batch))
            if self._queue:
                self._queue[0].lead = True
                self._queue[0].done.set()
            else:
                self._busy = False
        for call in batch[1:]:
            call.done.set()
        if self.on_batch is not None:
            self.on_batch(len(batch), rows)

    @staticmethod
    def _answer(call: _Call) -> torch.Tensor:
        if call.error is not None:
            raise call.error
        assert call.out is not None
        return call.out
