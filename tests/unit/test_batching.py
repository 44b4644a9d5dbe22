"""The predict batcher (service/batching.py) with stand-in work that takes time, as a
network does, and records what it was given."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from service.batching import Batcher


class Refused(Exception):
    pass


class SlowNetwork:
    """Doubles each item's rows after `seconds`; an item holding `refuse` is refused on its
    own, one holding `fail_on` fails the whole pass. Records the rows of every pass."""

    def __init__(
        self, seconds: float = 0.02, fail_on: float | None = None, refuse: float | None = None
    ) -> None:
        self.seconds, self.fail_on, self.refuse = seconds, fail_on, refuse
        self.passes: list[int] = []
        self.threads: set[int] = set()
        self.lock = threading.Lock()

    def __call__(self, items: list[np.ndarray]) -> list[np.ndarray | Exception]:
        with self.lock:
            self.passes.append(sum(len(x) for x in items))
            self.threads.add(threading.get_ident())
        time.sleep(self.seconds)
        if self.fail_on is not None and any((x == self.fail_on).any() for x in items):
            raise RuntimeError("the pass failed")
        return [Refused("bad") if (x == self.refuse).any() else x * 2 for x in items]


def batcher_for(network: SlowNetwork, **options: float) -> Batcher[np.ndarray, np.ndarray]:
    return Batcher(network, **options)  # type: ignore[arg-type]


async def together(batcher: Batcher[np.ndarray, np.ndarray], inputs: list[np.ndarray]) -> list:
    """Every input as its own concurrent call; answers or errors."""
    return await asyncio.gather(*(batcher.run(x, len(x)) for x in inputs), return_exceptions=True)


def test_concurrent_calls_share_passes_and_each_gets_its_own_rows() -> None:
    network = SlowNetwork()
    batcher = batcher_for(network)
    inputs = [np.full((1 + i % 3, 2), float(i), dtype=np.float32) for i in range(40)]
    answers = asyncio.run(together(batcher, inputs))
    for given, answer in zip(inputs, answers, strict=True):
        assert isinstance(answer, np.ndarray)
        assert np.array_equal(answer, given * 2)  # its own rows, in order
    assert batcher.stats.calls == 40 and sum(network.passes) == sum(len(x) for x in inputs)
    assert batcher.stats.batches == len(network.passes) < 40  # passes were shared
    assert batcher.stats.largest > 1


def test_a_lone_call_runs_at_once_and_alone() -> None:
    network = SlowNetwork(seconds=0.0)
    batcher = batcher_for(network)

    async def one_by_one() -> None:
        for i in range(5):
            started = time.perf_counter()
            answer = await batcher.run(np.full((2, 2), float(i), dtype=np.float32), 2)
            assert time.perf_counter() - started < 0.05  # no waiting for company
            assert answer.tolist() == [[2.0 * i] * 2] * 2

    asyncio.run(one_by_one())
    assert network.passes == [2] * 5


def test_a_call_returns_when_its_own_pass_ends() -> None:
    """The first call runs alone; the calls arriving meanwhile run together next: the
    first caller does not wait for their pass."""
    network = SlowNetwork(seconds=0.2)
    batcher = batcher_for(network)

    async def scene() -> tuple[float, list]:
        started = time.perf_counter()

        async def first() -> float:
            await batcher.run(np.zeros((1, 2), dtype=np.float32), 1)
            return time.perf_counter() - started

        leader = asyncio.create_task(first())
        await asyncio.sleep(0.05)  # the first pass is under way
        others = await together(batcher, [np.ones((1, 2), dtype=np.float32)] * 3)
        return await leader, others

    first_done, answers = asyncio.run(scene())
    assert network.passes == [1, 3]
    assert first_done < 0.35  # one pass (0.2 s), not two
    assert all(np.array_equal(a, np.full((1, 2), 2.0)) for a in answers)


def test_the_row_cap_splits_passes() -> None:
    network = SlowNetwork()
    batcher = batcher_for(network, max_rows=4)
    inputs = [np.full((3, 1), float(i), np.float32) for i in range(9)]
    answers = asyncio.run(together(batcher, inputs))
    assert all(isinstance(a, np.ndarray) for a in answers)
    assert max(network.passes) <= 4  # 3-row calls: one per pass
    big = asyncio.run(batcher.run(np.zeros((10, 1), np.float32), 10))  # over the cap: alone
    assert big.shape == (10, 1) and network.passes[-1] == 10


def test_a_refused_call_gets_its_error_and_the_others_their_answers() -> None:
    network = SlowNetwork(refuse=-1.0)
    batcher = batcher_for(network)
    inputs = [np.full((1, 1), -1.0 if i == 3 else float(i), np.float32) for i in range(8)]
    answers = asyncio.run(together(batcher, inputs))
    assert isinstance(answers[3], Refused)
    for i, answer in enumerate(answers):
        if i != 3:
            assert np.array_equal(answer, inputs[i] * 2)


def test_a_failed_pass_fails_its_calls_only_and_the_batcher_goes_on() -> None:
    network = SlowNetwork(fail_on=-1.0)
    batcher = batcher_for(network)
    inputs = [np.full((1, 1), -1.0 if i == 0 else float(i), np.float32) for i in range(6)]
    answers = asyncio.run(together(batcher, inputs))
    failed = [a for a in answers if isinstance(a, RuntimeError)]
    assert failed  # the pass with the poisoned row failed for each of its calls
    assert all(isinstance(a, np.ndarray | RuntimeError) for a in answers)
    assert asyncio.run(batcher.run(np.ones((1, 1), np.float32), 1)).item() == 2.0  # goes on


def test_a_caller_that_went_away_is_skipped() -> None:
    network = SlowNetwork(seconds=0.1)
    batcher = batcher_for(network)

    async def scene() -> list:
        leader = asyncio.create_task(batcher.run(np.zeros((1, 1), np.float32), 1))
        await asyncio.sleep(0.02)
        gone = asyncio.create_task(batcher.run(np.full((5, 1), 7.0, np.float32), 5))
        stays = asyncio.create_task(batcher.run(np.ones((1, 1), np.float32), 1))
        await asyncio.sleep(0.01)
        gone.cancel()  # its client closed the connection while it queued
        return await asyncio.gather(leader, stays)

    answers = asyncio.run(scene())
    assert [a.item() for a in answers] == [0.0, 2.0]
    assert network.passes == [1, 1]  # the cancelled call's 5 rows never ran


@pytest.mark.parametrize("delay", [0.0, 0.03])
def test_a_delay_gathers_more_calls(delay: float) -> None:
    network = SlowNetwork(seconds=0.0)
    batcher = batcher_for(network, delay_seconds=delay)

    async def staggered() -> list:
        async def one(i: int) -> np.ndarray:
            await asyncio.sleep(0.002 * i)  # arriving one after another, not all at once
            return await batcher.run(np.ones((1, 1), np.float32), 1)

        return await asyncio.gather(*(one(i) for i in range(8)))

    answers = asyncio.run(staggered())
    assert all(isinstance(a, np.ndarray) for a in answers)
    if delay:
        assert batcher.stats.largest >= 4  # the batch waited; later calls joined it


def test_two_event_loops_share_a_batcher_without_mixing_their_calls() -> None:
    network = SlowNetwork(seconds=0.01)
    batcher = batcher_for(network)
    results: dict[int, list] = {}

    def in_own_loop(base: int) -> None:
        inputs = [np.full((1, 1), float(base + i), np.float32) for i in range(10)]
        results[base] = asyncio.run(together(batcher, inputs))

    threads = [threading.Thread(target=in_own_loop, args=(b,)) for b in (0, 100)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    for base, answers in results.items():
        assert [a.item() for a in answers] == [2.0 * (base + i) for i in range(10)]


def test_a_lone_call_cancelled_mid_pass_leaves_the_batcher_working() -> None:
    network = SlowNetwork(seconds=0.1)
    batcher = batcher_for(network)

    async def scene() -> list:
        alone = asyncio.create_task(batcher.run(np.zeros((1, 1), np.float32), 1))
        await asyncio.sleep(0.02)
        queued = asyncio.create_task(batcher.run(np.ones((1, 1), np.float32), 1))
        await asyncio.sleep(0.01)
        alone.cancel()  # its client left while its pass ran
        answers = await asyncio.gather(alone, queued, return_exceptions=True)
        answers.append(await batcher.run(np.full((1, 1), 3.0, np.float32), 1))
        return answers

    gone, queued, later = asyncio.run(scene())
    assert isinstance(gone, asyncio.CancelledError)
    assert queued.item() == 2.0 and later.item() == 6.0  # the queue was not stranded
