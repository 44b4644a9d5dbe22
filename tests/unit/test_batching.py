"""The predict batcher (service/batching.py) with a stand-in forward pass that takes time,
as a network does, and records what it was given."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from service.batching import Batcher


class SlowNetwork:
    """Doubles each row after `seconds`; records the rows of every pass."""

    def __init__(self, seconds: float = 0.02, fail_on: float | None = None) -> None:
        self.seconds, self.fail_on = seconds, fail_on
        self.passes: list[int] = []
        self.lock = threading.Lock()

    def __call__(self, x: np.ndarray) -> torch.Tensor:
        with self.lock:
            self.passes.append(len(x))
        time.sleep(self.seconds)
        if self.fail_on is not None and (x == self.fail_on).any():
            raise RuntimeError("the pass failed")
        return torch.from_numpy(x * 2)


def call_together(batcher: Batcher, inputs: list[np.ndarray]) -> list[object]:
    """Every input from its own thread, all released at once; answers or errors."""
    answers: list[object] = [None] * len(inputs)
    start = threading.Barrier(len(inputs))

    def one(i: int) -> None:
        start.wait()
        try:
            answers[i] = batcher.run(inputs[i])
        except Exception as exc:
            answers[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(inputs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return answers


def test_concurrent_calls_share_passes_and_each_gets_its_own_rows() -> None:
    network = SlowNetwork()
    batcher = Batcher(network)
    inputs = [np.full((1 + i % 3, 2), float(i), dtype=np.float32) for i in range(40)]
    answers = call_together(batcher, inputs)
    for given, answer in zip(inputs, answers, strict=True):
        assert isinstance(answer, torch.Tensor)
        assert torch.equal(answer, torch.from_numpy(given * 2))  # its own rows, in order
    assert batcher.stats.calls == 40 and sum(network.passes) == sum(len(x) for x in inputs)
    assert batcher.stats.batches == len(network.passes) < 40  # passes were shared
    assert batcher.stats.largest > 1


def test_a_lone_call_runs_at_once_and_alone() -> None:
    network = SlowNetwork(seconds=0.0)
    batcher = Batcher(network)
    for i in range(5):
        started = time.perf_counter()
        answer = batcher.run(np.full((2, 2), float(i), dtype=np.float32))
        assert time.perf_counter() - started < 0.05  # no waiting for company
        assert answer.tolist() == [[2.0 * i] * 2] * 2
    assert network.passes == [2] * 5


def test_a_call_returns_when_its_own_pass_ends() -> None:
    """The first call runs alone; the calls arriving meanwhile run together next, led by
    one of them: the first caller does not wait for their pass."""
    network = SlowNetwork(seconds=0.2)
    batcher = Batcher(network)
    first_done: list[float] = []
    started = time.perf_counter()

    def first() -> None:
        batcher.run(np.zeros((1, 2), dtype=np.float32))
        first_done.append(time.perf_counter() - started)

    leader = threading.Thread(target=first)
    leader.start()
    time.sleep(0.05)  # the first pass is under way
    answers = call_together(batcher, [np.ones((1, 2), dtype=np.float32)] * 3)
    leader.join()
    assert network.passes == [1, 3]
    assert first_done[0] < 0.35  # one pass (0.2 s), not two
    assert all(torch.equal(a, torch.full((1, 2), 2.0)) for a in answers)  # type: ignore[arg-type]


def test_the_row_cap_splits_passes() -> None:
    network = SlowNetwork()
    batcher = Batcher(network, max_rows=4)
    answers = call_together(batcher, [np.full((3, 1), float(i), np.float32) for i in range(9)])
    assert all(isinstance(a, torch.Tensor) for a in answers)
    assert max(network.passes) <= 4  # 3-row calls: one per pass
    big = batcher.run(np.zeros((10, 1), np.float32))  # larger than the cap: runs alone
    assert big.shape == (10, 1) and network.passes[-1] == 10


def test_a_failed_pass_fails_its_calls_only_and_the_batcher_goes_on() -> None:
    network = SlowNetwork(fail_on=-1.0)
    batcher = Batcher(network)
    inputs = [np.full((1, 1), -1.0 if i == 0 else float(i), np.float32) for i in range(6)]
    answers = call_together(batcher, inputs)
    failed = [a for a in answers if isinstance(a, RuntimeError)]
    assert failed  # the pass with the poisoned row failed for each of its calls
    assert all(isinstance(a, torch.Tensor | RuntimeError) for a in answers)
    assert batcher.run(np.ones((1, 1), np.float32)).item() == 2.0  # and it goes on


@pytest.mark.parametrize("delay", [0.0, 0.03])
def test_a_delay_gathers_more_calls(delay: float) -> None:
    network = SlowNetwork(seconds=0.0)
    batcher = Batcher(network, delay_seconds=delay)
    answers = call_together(batcher, [np.ones((1, 1), np.float32)] * 8)
    assert all(isinstance(a, torch.Tensor) for a in answers)
    if delay:
        assert batcher.stats.largest >= 4  # the leader waited; the others joined its pass
