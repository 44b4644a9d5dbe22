"""What `GET /metrics` reads from SQL at scrape time: two small queries over every user's
jobs (the numbers are aggregates; no id leaves this module)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.tables import Job


class RunningJob(NamedTuple):
    worker: str | None
    kind: str
    lease_expires_at: datetime | None
    progress: dict[str, Any] | None


def job_counts(session: Session) -> list[tuple[str, str, int]]:
    """(status, queue, count) over every job: one grouped query."""
    query = select(Job.status, Job.queue, func.count()).group_by(Job.status, Job.queue)
    return [(status, queue, int(count)) for status, queue, count in session.execute(query)]


def running_jobs(session: Session) -> list[RunningJob]:
    """The running jobs' worker, kind, lease and progress (which holds the latest history
    entry: its epoch's seconds, or an RL evaluation's steps_per_second)."""
    query = select(Job.worker, Job.kind, Job.lease_expires_at, Job.progress).where(
        Job.status == "running"
    )
    return [RunningJob(*row) for row in session.execute(query)]
