"""The job lifecycle: lookups and pages, the per-user cap, the dispatch sweeps' queries,
claim, lease, ownership, finish, release and cancel. Each change of status writes its status
event (events.add_status_event) in the same transaction."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session, selectinload

from service.repository._common import ACTIVE, _owned, _page, _storable
from service.repository.events import add_status_event
from service.tables import Job, User, utcnow

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
