"""Revocations (service/revocations.py): the counter shared by the processes of one
machine, and the acknowledged Redis message that reaches the processes of other machines,
with a real Redis."""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from service.background import stop
from service.revocations import Revocations
from tests.services import temporary_redis_prefix


def test_without_redis_the_shared_counter_is_the_generation(tmp_path: Path) -> None:
    here, there = Revocations(tmp_path, None, "c"), Revocations(tmp_path, None, "c")
    before = there.token()
    assert before is not None and here.token() == before  # trusted from the start
    assert there.token() == before  # nothing happened: the same generation
    here.revoke()
    assert there.token() != before  # the other process sees it at once


def _revoke_in_another_process(folder: str) -> None:
    Revocations(Path(folder), None, "c").revoke()


def test_a_revocation_in_another_process_is_seen_at_once(tmp_path: Path) -> None:
    revocations = Revocations(tmp_path, None, "c")
    before = revocations.token()
    process = multiprocessing.get_context("spawn").Process(
        target=_revoke_in_another_process, args=(str(tmp_path),)
    )
    process.start()
    process.join(60)
    assert process.exitcode == 0
    assert revocations.token() != before


@contextmanager
def listening(revocations: Revocations) -> Iterator[None]:
    """`revocations.listen()` in an event loop of its own, as an API process runs it, and
    stopped as the API process stops it."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    task = asyncio.run_coroutine_threadsafe(_start(revocations), loop).result(10)
    try:
        yield
    finally:
        asyncio.run_coroutine_threadsafe(stop([task]), loop).result(15)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


async def _start(revocations: Revocations) -> asyncio.Task[None]:
    return asyncio.create_task(revocations.listen())


def wait_until(condition, seconds: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_redis_reaches_a_process_on_another_machine_before_the_delete_answers(
    tmp_path: Path,
) -> None:
    """Two processes with their own folders (as on two machines): one's revocation has
    been heard and acknowledged by the other when `revoke` returns."""
    with temporary_redis_prefix() as (url, prefix):
        channel = f"{prefix}keiko:revoked"
        here = Revocations(tmp_path / "a", url, channel)
        there = Revocations(tmp_path / "b", url, channel)
        assert there.token() is None  # not listening yet: trusts no cache
        with listening(here), listening(there):
            wait_until(lambda: here.token() is not None and there.token() is not None)
            for _ in range(5):
                before = there.token()
                here.revoke()
                assert there.token() != before  # no sleep: the acknowledgement was awaited
                assert there.token() is not None
        assert there.token() is None  # deaf again once it stops listening


def test_a_process_that_cannot_hear_trusts_no_cache(tmp_path: Path) -> None:
    nowhere = "redis://127.0.0.1:9/0"  # nothing listens on the discard port
    revocations = Revocations(tmp_path, nowhere, "c")
    with listening(revocations):
        time.sleep(0.3)
        assert revocations.token() is None
    started = time.monotonic()
    revocations.revoke()  # the shared counter moves; the announcement fails and is logged
    assert time.monotonic() - started < 3


def test_a_data_directory_it_cannot_write_means_no_cache_without_redis(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    revocations = Revocations(blocked / "sub", None, "c")  # cannot make the folder
    assert revocations.token() is None  # nothing could tell it of a delete: reads SQL
    revocations.revoke()  # and a delete still answers
