"""Stopping background tasks (service/background.py): a task that swallows a cancellation,
as redis-py's commands do on Python 3.11 when it lands as `asyncio.wait_for` finishes, is
cancelled again until it ends."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from service.background import stop


async def _swallows(cancellations: list[float], ended: list[bool]) -> None:
    swallowed = 0
    while swallowed < cancellations[0]:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            swallowed += 1  # what a wait_for racing its inner result does
    try:
        await asyncio.sleep(3600)
    finally:
        ended.append(True)


def test_a_task_that_swallows_cancellations_is_cancelled_until_it_ends() -> None:
    async def main() -> list[bool]:
        ended: list[bool] = []
        task = asyncio.create_task(_swallows([3], ended))
        await asyncio.sleep(0)  # it is waiting
        started = time.monotonic()
        await stop([task])
        assert time.monotonic() - started < 2
        assert task.cancelled()
        return ended

    assert asyncio.run(main()) == [True]


def test_a_task_that_never_ends_is_logged_and_left_behind(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        ended: list[bool] = []
        cancellations = [float("inf")]
        task = asyncio.create_task(_swallows(cancellations, ended))
        await asyncio.sleep(0)
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="keiko"):
            await stop([task], seconds=0.3)
        assert 0.3 <= time.monotonic() - started < 2
        assert not task.done() and not ended
        cancellations[0] = 0  # it would end now
        await stop([task])
        assert ended == [True]

    asyncio.run(main())
    assert "still running after" in caplog.text


def test_a_task_that_failed_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    async def fails() -> None:
        raise RuntimeError("subscription broke")

    async def main() -> None:
        done, still = asyncio.create_task(fails()), asyncio.create_task(asyncio.sleep(3600))
        await asyncio.sleep(0)
        with caplog.at_level(logging.ERROR, logger="keiko"):
            await stop([done, still])
        assert still.cancelled()

    asyncio.run(main())
    assert "subscription broke" in caplog.text
