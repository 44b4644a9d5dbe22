"""Stopping an API process's background tasks (the event hub, the revocation listener,
the study sweeper) when it shuts down.

One `Task.cancel()` is not always enough on Python 3.11: `asyncio.wait_for` returns its
inner result and drops the cancellation when both arrive in the same loop turn (fixed in
3.12), and redis-py awaits it inside commands. A listener cancelled just as it acknowledges
a message then goes back to waiting for the next one, and shutdown would wait with it. So
the cancellation is repeated until each task has ended.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

log = logging.getLogger("keiko")

RETRY = 0.05  # seconds between cancellations of a task that is still running


async def stop(tasks: Iterable[asyncio.Task[None]], seconds: float = 10.0) -> None:
    """Cancel `tasks` and wait until they have ended, cancelling again any that swallowed
    the cancellation; after `seconds`, log the ones still running and return."""
    tasks = list(tasks)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    pending = set(tasks)
    while pending:
        if loop.time() >= deadline:
            log.warning("background tasks still running after %.0f s: %s", seconds, pending)
            return
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=RETRY)
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s failed", task, exc_info=task.exception())
