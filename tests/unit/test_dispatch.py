"""Queue routing, the outbox sweep, the claim, the message settings and the model cache.
The sweep runs against a SQLite database built by the migrations and sends real messages to
the embedded broker."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import torch
from alembic import command
from kombu.utils.imports import symbol_by_name
from pydantic import ValidationError
from sqlalchemy import update

from models.base import PreparedData, Split, TrainResult
from models.bundle import save_bundle
from models.mlp import build
from service import broker, dispatch, repository
from service.db import get_engine, get_sessionmaker, session_scope
from service.dispatch import choose_queue, producer, sweep_once
from service.inference import ModelCache
from service.queue import make_celery
from service.settings import Settings, get_settings
from service.tables import Job, utcnow
from tests.test_migrations import alembic_config

REDISPATCH_SECONDS = 60


@pytest.mark.parametrize(
    ("route_to_gpu", "device", "queue"),
    [
        (False, "auto", "celery"),
        (False, "cuda", "celery"),
        (False, "cpu", "celery"),
        (True, "auto", "gpu"),
        (True, "cuda", "gpu"),
        (True, "cpu", "celery"),
    ],
)
def test_choose_queue(route_to_gpu: bool, device: str, queue: str) -> None:
    assert choose_queue(Settings(route_to_gpu=route_to_gpu), device) == queue


# The outbox sweep ------------------------------------------------------------------------


@pytest.fixture
def broker_queue(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An embedded deployment in tmp_path for this test only; yields the broker's queue
    folder, where each message the sweep sends is one file."""
    for name in list(os.environ):
        if name.startswith("KEIKO_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("KEIKO_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("KEIKO_DISPATCH_SWEEP_SECONDS", "5")
    monkeypatch.setenv("KEIKO_REDISPATCH_SECONDS", str(REDISPATCH_SECONDS))
    cached = (get_settings, get_engine, get_sessionmaker, producer)
    for function in cached:
        function.cache_clear()
    command.upgrade(alembic_config(get_settings().resolved_database_url), "head")
    try:
        yield get_settings().broker_folder / "queue"
    finally:
        get_engine().dispose()
        for function in cached:
            function.cache_clear()


def add_job(
    status: str = "queued",
    *,
    sent_ago: float | None,
    lease_left: float | None = None,
) -> str:
    """A job created ten minutes ago whose message went out `sent_ago` seconds ago (None:
    never sent); a running job's lease runs out in `lease_left` seconds."""
    now = utcnow()
    with session_scope() as session:
        job = Job(
            status=status,
            kind="mlp",
            task="regression",
            spec={},
            queue="celery",
            epochs=1,
            created_at=now - timedelta(minutes=10),
            dispatched_at=None if sent_ago is None else now - timedelta(seconds=sent_ago),
            lease_expires_at=None if lease_left is None else now + timedelta(seconds=lease_left),
        )
        session.add(job)
        session.flush()
        return job.id


def take_messages(queue: Path) -> list[str]:
    """The job ids of the messages waiting in the embedded broker, removing them."""
    job_ids = []
    for path in sorted(queue.glob("*.celery.msg")):
        message = json.loads(path.read_text())
        body = json.loads(base64.b64decode(message["body"]))
        args, _kwargs, _embed = body
        job_ids.append(args[0])
        path.unlink()
    return sorted(job_ids)


def dispatched_at(job_id: str) -> datetime | None:
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job.dispatched_at


def test_sweep_sends_unsent_lost_and_orphaned_jobs_only(broker_queue: Path) -> None:
    never_sent = add_job(sent_ago=None)
    lost = add_job(sent_ago=REDISPATCH_SECONDS + 1)  # queued a period after its message
    orphaned = add_job("running", sent_ago=600, lease_left=-1)
    add_job(sent_ago=REDISPATCH_SECONDS - 10)  # its message may still be on its way
    add_job("running", sent_ago=600, lease_left=60)  # its worker holds the lease
    for status in ("succeeded", "failed", "cancelled"):
        add_job(status, sent_ago=600)
    before = utcnow()

    assert sweep_once() == 3
    assert take_messages(broker_queue) == sorted([never_sent, lost, orphaned])
    for job_id in (never_sent, lost, orphaned):
        sent = dispatched_at(job_id)
        assert sent is not None and sent >= before


def test_a_waiting_job_is_sent_again_at_most_once_per_period(
    broker_queue: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = add_job(sent_ago=REDISPATCH_SECONDS + 1)
    assert sweep_once() == 1
    assert sweep_once() == 0  # dispatched_at was refreshed: nothing more this period
    assert take_messages(broker_queue) == [job_id]

    later = utcnow() + timedelta(seconds=REDISPATCH_SECONDS + 1)
    monkeypatch.setattr(dispatch, "utcnow", lambda: later)
    assert sweep_once() == 1
    assert take_messages(broker_queue) == [job_id]


def expire_lease(job_id: str) -> None:
    with session_scope() as session:
        session.execute(
            update(Job).where(Job.id == job_id).values(lease_expires_at=utcnow() - LEASE)
        )


LEASE = timedelta(seconds=60)


def claim(job_id: str, worker: str, max_attempts: int = 3) -> bool:
    with session_scope() as session:
        return repository.claim_job(
            session, job_id=job_id, worker=worker, lease=LEASE, max_attempts=max_attempts
        )


@pytest.mark.usefixtures("broker_queue")
def test_a_job_is_claimed_once_and_taken_over_when_its_lease_lapses() -> None:
    job_id = add_job(sent_ago=0)
    assert claim(job_id, "a")
    assert not claim(job_id, "b")  # the same message again: nothing to claim
    expire_lease(job_id)  # worker a stops renewing; its lease runs out
    assert claim(job_id, "b")
    with session_scope() as session:  # a is back, too late: b owns the job
        assert not repository.renew_lease(session, job_id=job_id, worker="a", lease=LEASE)
        # ... and a cannot end it either: nothing is written for a.
        assert not repository.finish_job(session, job_id=job_id, worker="a", status="failed")
        job = session.get(Job, job_id)
        assert job is not None and (job.worker, job.attempts, job.status) == ("b", 2, "running")
        assert repository.finish_job(session, job_id=job_id, worker="b", status="succeeded")
        assert not repository.finish_job(session, job_id=job_id, worker="b", status="failed")


@pytest.mark.usefixtures("broker_queue")
def test_a_job_that_loses_its_worker_every_time_ends_failed() -> None:
    job_id = add_job(sent_ago=0)
    for worker in ("a", "b", "c"):
        assert claim(job_id, worker)
        expire_lease(job_id)  # killed mid-job
    assert not claim(job_id, "d")  # three attempts were all it had
    assert sweep_once() == 0  # not re-sent: ended
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job is not None and (job.status, job.error_type) == ("failed", "WorkerLost")
        assert job.error_message is not None and "3 attempts" in job.error_message


@pytest.mark.usefixtures("broker_queue")
def test_a_cancelled_job_whose_worker_died_ends_cancelled() -> None:
    job_id = add_job(sent_ago=0)
    assert claim(job_id, "a")
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job is not None
        repository.request_cancel(session, job=job)
    expire_lease(job_id)
    assert sweep_once() == 0
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job is not None and job.status == "cancelled" and job.finished_at is not None


@pytest.mark.usefixtures("broker_queue")
def test_a_released_job_goes_back_to_the_queue_without_spending_an_attempt() -> None:
    job_id = add_job(sent_ago=0)
    for _ in range(5):  # more releases than max_attempts: a shutdown is not a failure
        assert claim(job_id, "a")
        with session_scope() as session:
            assert not repository.release_job(session, job_id=job_id, worker="b")  # not b's
            assert repository.release_job(session, job_id=job_id, worker="a")
            job = session.get(Job, job_id)
            assert job is not None
            assert (job.status, job.worker, job.attempts) == ("queued", None, 0)
            assert job.lease_expires_at is None and job.dispatched_at is not None
    assert claim(job_id, "b")
    with session_scope() as session:  # cancelled meanwhile: not released, ended by the caller
        job = session.get(Job, job_id)
        assert job is not None
        repository.request_cancel(session, job=job)
        assert not repository.release_job(session, job_id=job_id, worker="b")
        assert repository.finish_job(session, job_id=job_id, worker="b", status="cancelled")


@pytest.mark.usefixtures("broker_queue")
@pytest.mark.parametrize(("inside", "kept"), [(False, 7), (True, 6)])
def test_a_resume_forgets_what_came_after_its_checkpoint(inside: bool, kept: int) -> None:
    """From epoch 7's checkpoint the history keeps 1-7; from one written inside epoch 7
    (mid-epoch) it keeps 1-6, since the resumed attempt trains the rest of 7 and writes its
    entry. Later checkpoints go either way."""
    job_id = add_job(sent_ago=0)
    with session_scope() as session:
        for epoch in range(1, 10):
            repository.record_epoch(session, job_id=job_id, epoch=epoch, train_loss=1.0,
                                    val_loss=None, metrics={}, seconds=0.1)  # fmt: skip
        for epoch in (5, 7, 9):
            repository.add_checkpoint(
                session, job_id=job_id, epoch=epoch, path=f"c{epoch}", sha256="0" * 64, metrics={}
            )
    with session_scope() as session:
        repository.forget_after(session, job_id=job_id, epoch=7, inside=inside)
    with session_scope() as session:
        entries, total, _ = repository.job_history(session, job_id=job_id, after_epoch=0, limit=100)
        assert [e["epoch"] for e in entries] == list(range(1, kept + 1)) and total == kept
        assert [e for e, _, _ in repository.checkpoint_records(session, job_id=job_id)] == [5, 7]
        rewind = repository.job_events(session, job_id=job_id, after=0, limit=100)[-1]
        assert (rewind.type, rewind.data) == ("rewind", {"epoch": kept})


def test_messages_are_json_only_acknowledged_late_and_taken_one_at_a_time() -> None:
    settings = Settings(broker_url="redis://127.0.0.1:6379/0", broker_visibility_timeout=600)
    conf = make_celery(settings).conf
    assert (conf.task_serializer, conf.accept_content) == ("json", ["json"])
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    assert conf.broker_transport_options["visibility_timeout"] == 600


def test_the_embedded_broker_is_named_by_a_path_that_resolves(tmp_path: Path) -> None:
    conf = make_celery(Settings(data_dir=tmp_path, broker_url=None)).conf
    assert symbol_by_name(conf.broker_transport) is broker.Transport
    assert not conf.worker_enable_remote_control


def test_redispatch_seconds_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KEIKO_REDISPATCH_SECONDS", raising=False)
    assert Settings().redispatch_seconds == 300
    monkeypatch.setenv("KEIKO_REDISPATCH_SECONDS", "2.5")
    assert Settings().redispatch_seconds == 2.5
    with pytest.raises(ValidationError):
        Settings(redispatch_seconds=0)


def _bundle(path: Path) -> str:
    config = {
        "in_features": 2,
        "out_features": 1,
        "hidden_layers": [3],
        "activation": "relu",
        "dropout": 0.0,
        "batch_norm": False,
        "init": "he",
    }
    data = PreparedData(
        task="regression",
        train=Split(torch.zeros(4, 2), torch.zeros(4)),
        val=None,
        test=None,
        num_features=2,
        num_classes=None,
        preprocessing={"type": "array", "input_shape": [2], "mean": [0, 0], "std": [1, 1]},
        input_schema={"shape": [2]},
    )
    return save_bundle(
        path,
        kind="mlp",
        interface=data.interface(),
        result=TrainResult(build(config), config, {}, 1),
    )


def test_model_cache_loads_once_and_evicts_least_recent(tmp_path: Path) -> None:
    paths = {}
    for name in ("a", "b", "c"):
        path = tmp_path / f"{name}.safetensors"
        paths[name] = (path, _bundle(path))
    cache = ModelCache(capacity=2)
    first = cache.get("a", *paths["a"])
    assert cache.get("a", *paths["a"]) is first
    paths["a"][0].unlink()  # served from memory: the file is not read again
    assert cache.get("a", *paths["a"]) is first
    cache.get("b", *paths["b"])
    cache.get("c", *paths["c"])  # evicts a
    assert len(cache) == 2
    with pytest.raises(FileNotFoundError):
        cache.get("a", *paths["a"])
    assert cache.get("c", *paths["c"]).predict([[1.0, 2.0]])["predictions"]
