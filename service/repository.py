"""Every SQL query of the service, shared by the API and the workers. Nothing here commits."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import Select, delete, func, or_, select, update
from sqlalchemy.orm import Session, selectinload

from models.metrics import json_safe
from service.announce import EVENTS_WRITTEN
from service.tables import (
    ApiKey,
    Checkpoint,
    Dataset,
    EpochMetric,
    IdempotentRequest,
    Job,
    JobEvent,
    Model,
    User,
    new_id,
    utcnow,
)

ACTIVE = ("queued", "running")

FINISHED = ("succeeded", "failed", "cancelled")


Owned = TypeVar("Owned", Dataset, Job, Model)

# Ownership: every lookup made for a caller passes `owner_id`; workers pass None (any owner).
# Another user's row is then simply not found, and the API answers 404 as for a missing one.


def _storable(row_id: str) -> bool:
    # PostgreSQL text cannot hold NUL: no row has such an id, and asking for one is an error.
    return "\x00" not in row_id


def _owned(session: Session, table: type[Owned], row_id: str, owner_id: str | None) -> Owned | None:
    row = session.get(table, row_id) if _storable(row_id) else None
    if row is None or (owner_id is not None and row.owner_id != owner_id):
        return None
    return row


def _page(
    session: Session, query: Select[Owned], table: type[Owned], limit: int, offset: int
) -> tuple[Sequence[Owned], int]:
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(
        query.order_by(table.created_at.desc(), table.id).limit(limit).offset(offset)
    ).all()
    return rows, total


# Users and keys ---------------------------------------------------------------------------


def get_user(session: Session, *, user_id: str) -> User | None:
    return session.get(User, user_id) if _storable(user_id) else None


def user_named(session: Session, *, name: str) -> User | None:
    return session.scalars(select(User).where(User.name == name)).first()


def list_users(session: Session) -> Sequence[User]:
    return session.scalars(select(User).order_by(User.created_at, User.id)).all()


def find_key(session: Session, *, key_hash: str) -> ApiKey | None:
    return session.scalars(select(ApiKey).where(ApiKey.key_hash == key_hash)).first()


def get_key(session: Session, *, key_id: str) -> ApiKey | None:
    return session.get(ApiKey, key_id) if _storable(key_id) else None


# Idempotent requests ----------------------------------------------------------------------


def idempotent_request(
    session: Session, *, owner_id: str, key: str, newer_than: datetime
) -> IdempotentRequest | None:
    query = select(IdempotentRequest).where(
        IdempotentRequest.owner_id == owner_id,
        IdempotentRequest.key == key,
        IdempotentRequest.created_at >= newer_than,
    )
    return session.scalars(query).first()


def forget_idempotent_requests(session: Session, *, owner_id: str, older_than: datetime) -> None:
    session.execute(
        delete(IdempotentRequest).where(
            IdempotentRequest.owner_id == owner_id, IdempotentRequest.created_at < older_than
        )
    )


# Datasets ---------------------------------------------------------------------------------


def get_dataset(session: Session, *, dataset_id: str, owner_id: str | None) -> Dataset | None:
    return _owned(session, Dataset, dataset_id, owner_id)


def list_datasets(
    session: Session, *, owner_id: str, limit: int, offset: int
) -> tuple[Sequence[Dataset], int]:
    query = select(Dataset).where(Dataset.owner_id == owner_id)
    return _page(session, query, Dataset, limit, offset)


def dataset_in_use(session: Session, *, dataset_id: str) -> bool:
    query = select(func.count()).where(
        or_(Job.dataset_id == dataset_id, Job.test_dataset_id == dataset_id),
        Job.status.in_(ACTIVE),
    )
    return bool(session.scalar(query))


# Jobs -------------------------------------------------------------------------------------


def get_job(
    session: Session, *, job_id: str, owner_id: str | None, full: bool = False, history: bool = True
) -> Job | None:
    """`full`: with its checkpoints and model loaded, and its history unless `history` is
    False."""
    if not full or not _storable(job_id):
        return _owned(session, Job, job_id, owner_id)
    loads = [selectinload(Job.checkpoints), selectinload(Job.model)]
    if history:
        loads.append(selectinload(Job.history))
    query = select(Job).where(Job.id == job_id).options(*loads)
    if owner_id is not None:
        query = query.where(Job.owner_id == owner_id)
    return session.scalars(query).first()


def list_jobs(
    session: Session, *, owner_id: str, status: str | None, limit: int, offset: int
) -> tuple[Sequence[Job], int]:
    query = select(Job).where(Job.owner_id == owner_id).options(selectinload(Job.model))
    if status is not None:
        query = query.where(Job.status == status)
    return _page(session, query, Job, limit, offset)


def active_jobs(session: Session, *, owner_id: str) -> int:
    """The user's queued and running jobs. On PostgreSQL the user's row stays locked until
    the transaction ends, so two submissions at the cap cannot both pass the count."""
    session.execute(select(User.id).where(User.id == owner_id).with_for_update())
    query = select(func.count()).where(Job.owner_id == owner_id, Job.status.in_(ACTIVE))
    return session.scalar(query) or 0


def undispatched_jobs(session: Session, *, older_than: datetime) -> list[tuple[str, str]]:
    query = select(Job.id, Job.queue).where(
        Job.status == "queued", Job.dispatched_at.is_(None), Job.created_at <= older_than
    )
    return [(row.id, row.queue) for row in session.execute(query.order_by(Job.created_at))]


def unclaimed_jobs(session: Session, *, sent_before: datetime) -> list[tuple[str, str]]:
    """Queued jobs whose last message went out before `sent_before` and that no worker has
    claimed since: the message may be lost (Redis restarted empty), or only waiting behind
    other jobs, in which case one more copy finds nothing to claim."""
    query = select(Job.id, Job.queue).where(Job.status == "queued", Job.dispatched_at < sent_before)
    return [(row.id, row.queue) for row in session.execute(query.order_by(Job.created_at))]


def orphaned_jobs(session: Session, *, now: datetime) -> list[tuple[str, str]]:
    """Running jobs whose worker stopped renewing the lease (killed, machine lost), not yet
    re-sent since the lease ran out. A worker's message may be gone with it (the filesystem
    broker deletes on receipt; Redis holds it until its visibility timeout)."""
    query = select(Job.id, Job.queue).where(
        Job.status == "running",
        Job.lease_expires_at < now,
        or_(Job.dispatched_at.is_(None), Job.dispatched_at < Job.lease_expires_at),
    )
    return [(row.id, row.queue) for row in session.execute(query.order_by(Job.created_at))]


def settle_abandoned_jobs(session: Session, *, now: datetime, max_attempts: int) -> None:
    """Running jobs whose worker died and that must not run again: a cancelled one ends
    `cancelled`; one that has lost its worker `max_attempts` times ends `failed`."""
    expired = (Job.status == "running") & (Job.lease_expires_at < now)
    ended = {"finished_at": now, "updated_at": now, "lease_expires_at": None}
    settled = (Job.cancel_requested.is_(True)) | (Job.attempts >= max_attempts)
    ids = list(session.scalars(select(Job.id).where(expired, settled).with_for_update()))
    session.execute(
        update(Job)
        .where(expired, Job.cancel_requested.is_(True))
        .values(status="cancelled", **ended)
        .execution_options(synchronize_session=False)
    )
    session.execute(
        update(Job)
        .where(expired, Job.cancel_requested.is_(False), Job.attempts >= max_attempts)
        .values(
            status="failed",
            error_type="WorkerLost",
            error_message=(
                f"worker lost: the job's worker stopped under it (killed, out of memory or "
                f"its machine lost) on each of its {max_attempts} attempts; not retried"
            ),
            **ended,
        )
        .execution_options(synchronize_session=False)
    )
    for job_id in ids:
        add_status_event(session, job_id=job_id)


def mark_dispatched(session: Session, *, job_id: str) -> None:
    session.execute(update(Job).where(Job.id == job_id).values(dispatched_at=utcnow()))


def claim_job(
    session: Session, *, job_id: str, worker: str, lease: timedelta, max_attempts: int
) -> bool:
    """Atomically take a queued job, or a running one whose lease ran out (its worker died)
    and that has attempts left.

    One UPDATE ... WHERE decides; a second delivery of the same message claims nothing.
    """
    now = utcnow()
    result = session.execute(
        update(Job)
        .where(
            Job.id == job_id,
            or_(
                Job.status == "queued",
                (Job.status == "running")
                & (Job.lease_expires_at < now)
                & (Job.attempts < max_attempts),
            ),
            Job.cancel_requested.is_(False),
        )
        .values(
            status="running",
            worker=worker,
            lease_expires_at=now + lease,
            attempts=Job.attempts + 1,
            started_at=func.coalesce(Job.started_at, now),
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return False
    add_status_event(session, job_id=job_id)
    return True


def renew_lease(session: Session, *, job_id: str, worker: str, lease: timedelta) -> bool:
    """Heartbeat: extend the lease while this worker still owns the job."""
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.worker == worker, Job.status == "running")
        .values(lease_expires_at=utcnow() + lease)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1  # type: ignore[attr-defined]


def set_device(session: Session, *, job_id: str, device: str) -> None:
    session.execute(update(Job).where(Job.id == job_id).values(device=device))


def cancel_requested(session: Session, *, job_id: str) -> bool:
    return bool(session.scalar(select(Job.cancel_requested).where(Job.id == job_id)))


def owns_job(session: Session, *, job_id: str, worker: str) -> bool:
    """Whether `worker` still runs the job, with the row locked (PostgreSQL) until the end
    of the transaction, so a takeover cannot slip in between this check and the write."""
    query = select(Job.worker, Job.status).where(Job.id == job_id).with_for_update()
    row = session.execute(query).first()
    return row is not None and row.worker == worker and row.status == "running"


def record_epoch(
    session: Session,
    *,
    job_id: str,
    epoch: int,
    train_loss: float | None,
    val_loss: float | None,
    metrics: dict[str, Any],
    seconds: float,
) -> None:
    """One history entry, its event, and the job's latest entry for lists (JSON-safe
    values)."""
    session.add(
        EpochMetric(
            job_id=job_id,
            epoch=epoch,
            train_loss=train_loss,
            val_loss=val_loss,
            metrics=metrics,
            seconds=seconds,
        )
    )
    entry = history_entry(epoch, train_loss, val_loss, seconds, metrics)
    session.execute(
        update(Job)
        .where(Job.id == job_id)
        .values(epoch=epoch, updated_at=utcnow(), progress={"latest": entry})
        .execution_options(synchronize_session=False)
    )
    add_event(session, job_id=job_id, type_="epoch", data=entry)


def history_entry(
    epoch: int,
    train_loss: float | None,
    val_loss: float | None,
    seconds: float,
    metrics: dict[str, Any],
) -> dict[str, Any]:
    """A history entry as the API shows it: `GET /jobs/{id}` history, `/history`, events."""
    return {
        "epoch": epoch,
        "train_loss": train_loss,
        "val_loss": val_loss,
        "seconds": seconds,
        **metrics,
    }


def history_tail(
    session: Session, *, job_id: str, count: int
) -> tuple[list[EpochMetric], int, float | None]:
    """The `count` latest history rows (oldest first), how many there are, and their mean
    epoch time."""
    total, mean = session.execute(
        select(func.count(), func.avg(EpochMetric.seconds)).where(EpochMetric.job_id == job_id)
    ).one()
    rows: list[EpochMetric] = []
    if count:
        query = (
            select(EpochMetric)
            .where(EpochMetric.job_id == job_id)
            .order_by(EpochMetric.epoch.desc())
            .limit(count)
        )
        rows = list(reversed(session.scalars(query).all()))
    return rows, int(total or 0), None if mean is None else float(mean)


def set_progress(session: Session, *, job_id: str, worker: str, progress: dict[str, Any]) -> None:
    """Where the running epoch is (not history: rewritten, never kept)."""
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.worker == worker, Job.status == "running")
        .values(progress=json_safe(progress))
        .execution_options(synchronize_session=False)
    )


def checkpoints_newest_first(session: Session, *, job_id: str) -> list[tuple[int, str, str]]:
    """(epoch, path, sha256) of a job's checkpoints, the latest first."""
    query = select(Checkpoint.epoch, Checkpoint.path, Checkpoint.sha256).where(
        Checkpoint.job_id == job_id
    )
    rows = session.execute(query.order_by(Checkpoint.epoch.desc()))
    return [(row.epoch, row.path, row.sha256) for row in rows]


def forget_after(session: Session, *, job_id: str, epoch: int, inside: bool = False) -> None:
    """On resume: drop epochs and checkpoints recorded after the checkpoint resumed from.
    One written `inside` its epoch (mid-epoch, RL mid-interval) goes on within that epoch,
    so that epoch's history entry goes too: the resumed attempt writes it."""
    done = epoch - 1 if inside else epoch
    dropped = session.execute(
        delete(EpochMetric).where(EpochMetric.job_id == job_id, EpochMetric.epoch > done)
    ).rowcount  # type: ignore[attr-defined]
    dropped += session.execute(
        delete(Checkpoint).where(Checkpoint.job_id == job_id, Checkpoint.epoch > epoch)
    ).rowcount  # type: ignore[attr-defined]
    session.execute(
        update(Job)
        .where(Job.id == job_id)
        .values(epoch=done, progress=None)
        .execution_options(synchronize_session=False)
    )
    if dropped:  # watchers drop what they drew after `done`: this attempt writes it again
        add_event(session, job_id=job_id, type_="rewind", data={"epoch": done})


def add_checkpoint(
    session: Session,
    *,
    job_id: str,
    epoch: int,
    path: str,
    sha256: str,
    metrics: dict[str, Any],
    removed: Sequence[int] = (),
) -> None:
    """A checkpoint's row and its event, which also names the checkpoints that retention
    removed in the same transaction."""
    checkpoint = Checkpoint(job_id=job_id, epoch=epoch, path=path, sha256=sha256, metrics=metrics)
    checkpoint.created_at = utcnow()
    session.add(checkpoint)
    data = {"epoch": epoch, "sha256": sha256, "created_at": checkpoint.created_at.isoformat(),
            "removed": list(removed)}  # fmt: skip
    add_event(session, job_id=job_id, type_="checkpoint", data=data)


def checkpoint_records(
    session: Session, *, job_id: str, epoch: int | None = None
) -> list[tuple[int, dict[str, Any], str]]:
    """(epoch, metrics, path) of each of the job's checkpoints (or only `epoch`'s), oldest
    first."""
    query = select(Checkpoint.epoch, Checkpoint.metrics, Checkpoint.path).where(
        Checkpoint.job_id == job_id
    )
    if epoch is not None:
        query = query.where(Checkpoint.epoch == epoch)
    return [(r.epoch, r.metrics or {}, r.path) for r in session.execute(query.order_by("epoch"))]


def delete_checkpoints(session: Session, *, job_id: str, epochs: Sequence[int]) -> None:
    if epochs:
        session.execute(
            delete(Checkpoint).where(Checkpoint.job_id == job_id, Checkpoint.epoch.in_(epochs))
        )


def finish_job(
    session: Session,
    *,
    job_id: str,
    worker: str,
    status: str,
    metrics: dict[str, Any] | None = None,
    error_type: str | None = None,
    error_message: str | None = None,
) -> bool:
    """End a job this worker still owns; False when another worker took it over (this one
    lost its lease) or it has ended already: then nothing is written."""
    now = utcnow()
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.worker == worker, Job.status == "running")
        .values(
            status=status,
            metrics=metrics,
            error_type=error_type,
            error_message=error_message,
            finished_at=now,
            updated_at=now,
            lease_expires_at=None,
        )
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return False
    add_status_event(session, job_id=job_id)
    return True


def release_job(session: Session, *, job_id: str, worker: str) -> bool:
    """This worker is shutting down: the job it runs goes back to the queue, to resume from
    the checkpoint it wrote as it stopped. The attempt does not count against
    `max_attempts` (nothing went wrong). False when the worker no longer owns the job, or
    its user cancelled it meanwhile (then it ends `cancelled` instead)."""
    now = utcnow()
    result = session.execute(
        update(Job)
        .where(
            Job.id == job_id,
            Job.worker == worker,
            Job.status == "running",
            Job.cancel_requested.is_(False),
        )
        .values(
            status="queued",
            worker=None,
            lease_expires_at=None,
            attempts=Job.attempts - 1,
            progress=None,
            dispatched_at=now,  # its message goes back to the broker with this
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return False
    add_status_event(session, job_id=job_id)
    return True


def request_cancel(session: Session, *, job: Job) -> None:
    now = utcnow()
    if job.status == "queued":
        job.status = "cancelled"
        job.finished_at = now
    job.cancel_requested = True
    job.updated_at = now
    session.flush()
    add_status_event(session, job_id=job.id)


# Models -----------------------------------------------------------------------------------


def get_model(session: Session, *, model_id: str, owner_id: str | None) -> Model | None:
    return _owned(session, Model, model_id, owner_id)


def list_models(
    session: Session, *, owner_id: str, limit: int, offset: int
) -> tuple[Sequence[Model], int]:
    query = select(Model).where(Model.owner_id == owner_id)
    return _page(session, query, Model, limit, offset)


def model_for_job(session: Session, *, job_id: str) -> Model | None:
    return session.scalars(select(Model).where(Model.job_id == job_id)).first()


def new_model_id() -> str:
    """An id for a model about to be trained: its bundle's folder is named by it, and the
    bundle is written before its row."""
    return new_id()


def add_model(
    session: Session,
    *,
    model_id: str,
    owner_id: str,
    job_id: str,
    kind: str,
    task: str,
    input_schema: dict[str, Any],
    output: dict[str, Any],
    metrics: dict[str, Any],
    path: str,
    sha256: str,
) -> None:
    """A trained model's row, once its bundle is in the artifact store at `path`; written
    when the session flushes, in the transaction that records how its job ended."""
    session.add(
        Model(
            id=model_id,
            owner_id=owner_id,
            job_id=job_id,
            kind=kind,
            task=task,
            input_schema=input_schema,
            output=output,
            metrics=metrics,
            path=path,
            sha256=sha256,
        )
    )


# Job events -------------------------------------------------------------------------------


def add_job(session: Session, *, job: Job) -> None:
    """A new job with its first event (queued), both written when the session flushes."""
    job.id = job.id or new_id()
    job.status, job.attempts, job.cancel_requested = "queued", 0, False
    job.event_seq = 1
    session.add(job)
    session.add(JobEvent(job_id=job.id, seq=1, type="status", data=_status_data(job, None)))
    session.info.setdefault(EVENTS_WRITTEN, set()).add(job.id)


def add_event(session: Session, *, job_id: str, type_: str, data: dict[str, Any]) -> int:
    """Append an event to the job's log and return its seq. Taking the number updates the
    job's row, so the row stays locked (PostgreSQL) until this transaction ends and events
    commit in seq order (see tables.JobEvent)."""
    seq = session.execute(
        update(Job)
        .where(Job.id == job_id)
        .values(event_seq=Job.event_seq + 1)
        .returning(Job.event_seq)
        .execution_options(synchronize_session=False)
    ).scalar_one()
    session.add(JobEvent(job_id=job_id, seq=seq, type=type_, data=json_safe(data)))
    session.info.setdefault(EVENTS_WRITTEN, set()).add(job_id)
    return int(seq)


def add_status_event(session: Session, *, job_id: str) -> None:
    """The job's status as it now stands in this transaction (with the final metrics, the
    model and the error once it has ended)."""
    job = session.execute(
        select(Job).where(Job.id == job_id).execution_options(populate_existing=True)
    ).scalar_one()
    model_id = session.scalar(select(Model.id).where(Model.job_id == job_id))
    add_event(session, job_id=job_id, type_="status", data=_status_data(job, model_id))


def _status_data(job: Job, model_id: str | None) -> dict[str, Any]:
    error = None
    if job.error_type is not None:
        error = {"type": job.error_type, "message": job.error_message or ""}
    finished = job.status in FINISHED
    return {
        "status": job.status,
        "cancel_requested": bool(job.cancel_requested),
        "attempt": job.attempts or 0,
        "error": error,
        "metrics": job.metrics if finished else None,
        "model_id": model_id,
    }


def job_events(session: Session, *, job_id: str, after: int, limit: int) -> Sequence[JobEvent]:
    query = (
        select(JobEvent)
        .where(JobEvent.job_id == job_id, JobEvent.seq > after)
        .order_by(JobEvent.seq)
        .limit(limit)
    )
    return session.scalars(query).all()


def event_marks(session: Session, *, job_ids: Sequence[str]) -> dict[str, tuple[int, Any]]:
    """(latest event seq, progress) of each job: what a stream hub compares to wake streams."""
    query = select(Job.id, Job.event_seq, Job.progress).where(Job.id.in_(job_ids))
    return {row.id: (row.event_seq, row.progress) for row in session.execute(query)}


def job_history(
    session: Session, *, job_id: str, after_epoch: int, limit: int
) -> tuple[list[dict[str, Any]], int, int]:
    """History entries after `after_epoch` (at most `limit`), how many the job has, and the
    job's latest event seq read before them (resuming its event stream from there repeats
    at most an entry, never misses one). Read as plain columns: a long history is 10,000
    rows."""
    seq = session.scalar(select(Job.event_seq).where(Job.id == job_id)) or 0
    total = session.scalar(select(func.count()).where(EpochMetric.job_id == job_id)) or 0
    columns = (
        EpochMetric.epoch,
        EpochMetric.train_loss,
        EpochMetric.val_loss,
        EpochMetric.seconds,
        EpochMetric.metrics,
    )
    query = (
        select(*columns)
        .where(EpochMetric.job_id == job_id, EpochMetric.epoch > after_epoch)
        .order_by(EpochMetric.epoch)
        .limit(limit)
    )
    entries = [history_entry(*row) for row in session.execute(query)]
    return entries, total, seq
