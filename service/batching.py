"""Dynamic batching: concurrent predict calls for one model share one forward pass.

No call waits for a batch to fill. A call that finds the model idle runs at once, alone;
calls that arrive while the model is busy queue, and when the running pass ends, every
queued call runs as the next one (Triton's dynamic batcher with no queue delay). The
bookkeeping lives in the event loop; only a batch's work goes to a worker thread, one hop
per batch, not per call. The work gets each call's item and answers each on its own: a
call whose inputs are refused gets its error and the others their answers. `max_rows` caps
a batch (a call larger than that runs alone); `delay_seconds` (0 by default) lets a batch
wait a little for more calls, trading latency for throughput where that is wanted.
"""

from __future__ import annotations

import asyncio
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from starlette.concurrency import run_in_threadpool

Item = TypeVar("Item")
Answer = TypeVar("Answer")


@dataclass
class BatchStats:
    """What the batcher did, for metrics and tests."""

    batches: int = 0
    rows: int = 0
    calls: int = 0
    largest: int = 0  # calls in the largest batch


@dataclass
class _Call(Generic[Item, Answer]):
    item: Item
    rows: int
    answer: asyncio.Future[Answer]


@dataclass
class _Line(Generic[Item, Answer]):
    """One event loop's queue (a batcher may be shared by several loops, as in tests)."""

    queue: deque[_Call[Item, Answer]] = field(default_factory=deque)
    runner: asyncio.Task[None] | None = None


class Batcher(Generic[Item, Answer]):
    def __init__(
        self,
        work: Callable[[list[Item]], list[Answer | Exception]],
        *,
        max_rows: int = 1024,
        delay_seconds: float = 0.0,
        on_batch: Callable[[int, int], None] | None = None,
    ) -> None:
        self.work = work  # blocking: runs in a worker thread, one answer or error per item
        self.max_rows = max_rows
        self.delay_seconds = delay_seconds
        self.on_batch = on_batch  # (calls, rows) of each batch run
        self.stats = BatchStats()
        self._lines: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Line[Item, Answer]] = (
            weakref.WeakKeyDictionary()
        )

    async def run(self, item: Item, rows: int) -> Answer:
        """`item`'s answer, worked on alone or with other calls' items."""
        loop = asyncio.get_running_loop()
        line = self._lines.get(loop)
        if line is None:
            line = self._lines[loop] = _Line()
        call: _Call[Item, Answer] = _Call(item, rows, loop.create_future())
        if line.runner is None and not line.queue:
            return await self._run_alone(line, call)
        line.queue.append(call)
        if line.runner is None:
            line.runner = loop.create_task(self._drain(line))
        return await call.answer

    async def _run_alone(self, line: _Line[Item, Answer], call: _Call[Item, Answer]) -> Answer:
        """The model is idle: this call's own task runs its pass at once (no task to start),
        holding the line so that calls arriving meanwhile queue; a runner takes them after."""
        line.runner = asyncio.current_task()
        try:
            if self.delay_seconds > 0:
                line.queue.append(call)
                await asyncio.sleep(self.delay_seconds)
                batch = self._take(line.queue)
            else:
                batch = [call]
            await self._run_batch(batch)
        except asyncio.CancelledError:
            call.answer.cancel()  # its caller went away: nobody runs it now
            raise
        finally:
            line.runner = None
            if line.queue:
                line.runner = asyncio.get_running_loop().create_task(self._drain(line))
        return await call.answer

    async def _drain(self, line: _Line[Item, Answer]) -> None:
        try:
            while line.queue:
                if self.delay_seconds > 0:
                    await asyncio.sleep(self.delay_seconds)
                batch = self._take(line.queue)
                if batch:
                    await self._run_batch(batch)
        finally:
            line.runner = None
            for call in line.queue:  # only if this task was cancelled (the loop is ending)
                if not call.answer.done():
                    call.answer.cancel()

    def _take(self, queue: deque[_Call[Item, Answer]]) -> list[_Call[Item, Answer]]:
        batch: list[_Call[Item, Answer]] = []
        rows = 0
        while queue and (not batch or rows + queue[0].rows <= self.max_rows):
            call = queue.popleft()
            if call.answer.done():  # its caller went away (a closed connection)
                continue
            batch.append(call)
            rows += call.rows
        return batch

    async def _run_batch(self, batch: list[_Call[Item, Answer]]) -> None:
        try:
            answers = await run_in_threadpool(self.work, [call.item for call in batch])
        except asyncio.CancelledError:
            for call in batch:
                call.answer.cancel()
            raise
        except Exception as exc:  # every call of the batch hears of it
            answers = [exc] * len(batch)
        rows = sum(call.rows for call in batch)
        self.stats.batches += 1
        self.stats.rows += rows
        self.stats.calls += len(batch)
        self.stats.largest = max(self.stats.largest, len(batch))
        for call, answer in zip(batch, answers, strict=True):
            if call.answer.done():
                continue
            if isinstance(answer, Exception):
                call.answer.set_exception(answer)
            else:
                call.answer.set_result(answer)
        if self.on_batch is not None:
            self.on_batch(len(batch), rows)
