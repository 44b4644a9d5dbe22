"""Each job's event log: a new job with its first event, appending events, status events,
and reading the log and its marks for the event streams."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from models.metrics import json_safe
from service.announce import EVENTS_WRITTEN
from service.repository._common import FINISHED
from service.tables import Job, JobEvent, Model, new_id

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
