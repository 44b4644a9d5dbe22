"""Studies (issue 17): their rows, the lock that serialises a study's advances, and the
rows of their trials' jobs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, selectinload

from service.repository._common import _owned, _page
from service.tables import Job, Study, utcnow


def add_study(session: Session, *, study: Study) -> None:
    session.add(study)
    session.flush()


def get_study(session: Session, *, study_id: str, owner_id: str | None) -> Study | None:
    return _owned(session, Study, study_id, owner_id)


def list_studies(
    session: Session, *, owner_id: str, status: str | None, limit: int, offset: int
) -> tuple[Sequence[Study], int]:
    query = select(Study).where(Study.owner_id == owner_id)
    if status is not None:
        query = query.where(Study.status == status)
    return _page(session, query, Study, limit, offset)


def lock_study(session: Session, *, study_id: str) -> Study | None:
    """The study's row, locked until the transaction ends: an UPDATE takes the row lock on
    PostgreSQL and the database's write lock on SQLite, so two processes advancing the same
    study (the API, the worker that ended a trial, the sweep) take turns."""
    session.execute(
        update(Study)
        .where(Study.id == study_id)
        .values(updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return session.get(Study, study_id, populate_existing=True)


def study_jobs(session: Session, *, study_id: str) -> Sequence[Any]:
    """(id, status, trial number) of each of the study's jobs."""
    query = select(Job.id, Job.status, Job.trial_number).where(Job.study_id == study_id)
    return session.execute(query).all()


def study_trial_jobs(session: Session, *, study_id: str) -> Sequence[Job]:
    """The study's jobs, whole (with their models, in one more query), in trial order."""
    query = (
        select(Job)
        .where(Job.study_id == study_id)
        .options(selectinload(Job.model))
        .order_by(Job.trial_number)
    )
    return session.scalars(query).all()


def running_studies(session: Session) -> Sequence[str]:
    return session.scalars(select(Study.id).where(Study.finished_at.is_(None))).all()


def study_counts(session: Session, *, study_ids: Sequence[str]) -> dict[str, dict[str, int]]:
    """Each study's jobs by status."""
    counts: dict[str, dict[str, int]] = {study_id: {} for study_id in study_ids}
    if study_ids:
        query = (
            select(Job.study_id, Job.status, func.count())
            .where(Job.study_id.in_(study_ids))
            .group_by(Job.study_id, Job.status)
        )
        for study_id, status, count in session.execute(query).all():
            counts[str(study_id)][status] = count
    return counts


def studies_using(session: Session, *, dataset_id: str, owner_id: str) -> list[str]:
    """The ids of the owner's unfinished studies whose trials train on the dataset."""
    query = select(Study.id, Study.spec).where(
        Study.owner_id == owner_id, Study.finished_at.is_(None)
    )
    return [
        study_id
        for study_id, spec in session.execute(query).all()
        if dataset_id in (spec["base"].get("dataset_id"), spec["base"].get("test_dataset_id"))
    ]


def job_metrics(session: Session, *, job_ids: Sequence[str]) -> dict[str, dict[str, Any] | None]:
    """The final metrics of each of these jobs (one query)."""
    if not job_ids:
        return {}
    query = select(Job.id, Job.metrics).where(Job.id.in_(job_ids))
    return {job_id: metrics for job_id, metrics in session.execute(query).all()}
