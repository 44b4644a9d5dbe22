"""The event log and its stream below HTTP: seq numbers gap-free and in commit order with
concurrent writers on PostgreSQL, the stream's order, resume and end, Last-Event-ID parsing,
and the downsampling the charts rely on."""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
from alembic import command
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from service import events, repository
from service.db import make_engine
from service.downsample import downsample
from service.events import EventHub, parse_last_event_id, stream
from service.settings import Settings
from service.tables import Job, JobEvent
from tests.services import temporary_postgres_database
from tests.test_migrations import alembic_config

T = TypeVar("T")


@pytest.fixture(params=["sqlite", "postgresql"])
def maker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    def migrated(url: str) -> sessionmaker[Session]:
        command.upgrade(alembic_config(url), "head")
        return sessionmaker(bind=make_engine(url), expire_on_commit=False)

    if request.param == "sqlite":
        yield migrated(f"sqlite:///{tmp_path / 'events.db'}")
    else:
        with temporary_postgres_database() as url:
            made = migrated(url)
            yield made
            made.kw["bind"].dispose()


def new_job(session: Session) -> str:
    job = Job(kind="mlp", task="classification", spec={}, queue="celery", epochs=3)
    repository.add_job(session, job=job)
    session.commit()
    return job.id


def end_job(session: Session, job_id: str, status: str) -> None:
    job = session.get(Job, job_id)
    assert job is not None
    job.status = status
    session.flush()
    repository.add_status_event(session, job_id=job_id)


def test_concurrent_writers_get_gap_free_seqs_in_commit_order(
    maker: sessionmaker[Session],
) -> None:
    with maker() as session:
        job_id = new_job(session)
    writers, per_writer = 4, 15
    errors: list[BaseException] = []

    def write(n: int) -> None:
        try:
            for i in range(per_writer):
                with maker() as session:
                    repository.add_event(
                        session, job_id=job_id, type_="epoch", data={"writer": n, "i": i}
                    )
                    session.commit()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    with maker() as session:
        rows = session.scalars(
            select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.seq)
        ).all()
        # Commit order = id order here: ids are taken at insert, after the seq lock.
        assert [r.seq for r in rows] == list(range(1, writers * per_writer + 2))
        assert [r.id for r in rows] == sorted(r.id for r in rows)
        assert session.get(Job, job_id).event_seq == len(rows)  # type: ignore[union-attr]
        # Each writer's events are in its own order.
        for n in range(writers):
            mine = [r.data["i"] for r in rows if r.data.get("writer") == n]
            assert mine == list(range(per_writer))


def test_a_rolled_back_event_leaves_no_gap(maker: sessionmaker[Session]) -> None:
    with maker() as session:
        job_id = new_job(session)
    with maker() as session:
        repository.add_event(session, job_id=job_id, type_="epoch", data={"epoch": 1})
        session.rollback()
    with maker() as session:
        assert repository.add_event(session, job_id=job_id, type_="epoch", data={}) == 2
        session.commit()


def run_async(coroutine: Coroutine[Any, Any, T]) -> T:
    """asyncio.run in a thread of its own: another test's library (Playwright's sync API)
    may keep an event loop running in this one."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def collect(hub: EventHub, job_id: str, after: int) -> list[dict[str, Any]]:
    async def run() -> list[dict[str, Any]]:
        return [event async for event in stream(hub, job_id, after)]

    return run_async(asyncio.wait_for(run(), timeout=20))


@pytest.fixture
def hub(maker: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch) -> EventHub:
    monkeypatch.setattr(events, "get_sessionmaker", lambda: maker)
    return EventHub(Settings(event_poll_seconds=0.05))


def test_stream_order_resume_and_end(maker: sessionmaker[Session], hub: EventHub) -> None:
    with maker() as session:
        job_id = new_job(session)
        for epoch in (1, 2):
            repository.add_event(session, job_id=job_id, type_="epoch", data={"epoch": epoch})
        end_job(session, job_id, "succeeded")
        session.commit()
    everything = collect(hub, job_id, 0)
    assert [e["id"] for e in everything] == ["1", "2", "3", "4"]
    assert [e["event"] for e in everything] == ["status", "epoch", "epoch", "status"]
    assert collect(hub, job_id, 2) == everything[2:]  # resume: the rest, nothing twice
    assert collect(hub, job_id, 4) == []  # all seen: the stream just ends


def test_a_live_stream_wakes_on_new_events(maker: sessionmaker[Session], hub: EventHub) -> None:
    with maker() as session:
        job_id = new_job(session)

    async def scenario() -> list[dict[str, Any]]:
        got: list[dict[str, Any]] = []

        async def read() -> None:
            async for event in stream(hub, job_id, 0):
                got.append(event)

        polling = asyncio.create_task(hub._poll_forever())
        reading = asyncio.create_task(read())
        await asyncio.sleep(0.3)
        assert [e["event"] for e in got] == ["status"]  # queued; then it waits
        with maker() as session:
            repository.add_event(session, job_id=job_id, type_="epoch", data={"epoch": 1})
            end_job(session, job_id, "cancelled")
            session.commit()
        await asyncio.wait_for(reading, timeout=5)  # the poll woke it; it ended
        polling.cancel()
        return got

    got = run_async(scenario())
    assert [e["event"] for e in got] == ["status", "epoch", "status"]
    assert '"cancelled"' in got[-1]["data"]


def test_another_jobs_events_are_not_in_the_stream(
    maker: sessionmaker[Session], hub: EventHub
) -> None:
    with maker() as session:
        mine, theirs = new_job(session), new_job(session)
        repository.add_event(session, job_id=theirs, type_="epoch", data={"epoch": 1})
        for job_id in (mine, theirs):
            end_job(session, job_id, "failed")
        session.commit()
    assert [e["event"] for e in collect(hub, mine, 0)] == ["status", "status"]


@pytest.mark.parametrize(
    ("header", "after"),
    [(None, 0), ("", 0), ("12", 12), ("12.3", 12), (" 7 ", 7), ("x", None), ("-1", None),
     ("1e3", None), ("9" * 13, None)],
)  # fmt: skip
def test_last_event_id_parsing(header: str | None, after: int | None) -> None:
    assert parse_last_event_id(header) == after


def test_downsampling_keeps_shape_ends_and_extremes() -> None:
    rng = np.random.default_rng(0)
    n = 10_000
    loss = np.exp(-np.arange(n) / 2000) + rng.normal(0, 0.01, n)
    loss[7_777] = 5.0  # a spike that must survive
    entries = [
        {"epoch": i + 1, "train_loss": float(loss[i]), "val_loss": None if i % 2 else 1.0,
         "seconds": 0.01, "lr": 0.1 * math.cos(i / n)}
        for i in range(n)
    ]  # fmt: skip
    shown = downsample(entries, 1000)
    assert len(shown) <= 1000 + 2 * 3 + 2
    assert shown[0] is entries[0] and shown[-1] is entries[-1]
    epochs = [e["epoch"] for e in shown]
    assert epochs == sorted(set(epochs))
    assert max(e["train_loss"] for e in shown) == 5.0
    assert min(e["train_loss"] for e in shown) == float(loss.min())
    # Every gap between kept epochs is small next to the whole: the shape is there.
    assert max(np.diff(epochs)) < n / 50
    assert downsample(entries[:500], 1000) == entries[:500]
