"""Every SQL query of the service, shared by the API and the workers. Nothing here commits."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.orm import Session, selectinload

from service.tables import Checkpoint, Dataset, EpochMetric, Job, Model, utcnow

ACTIVE = ("queued", "running")
FINISHED = ("succeeded", "failed", "cancelled")


# Datasets ---------------------------------------------------------------------------------


def get_dataset(session: Session, *, dataset_id: str) -> Dataset | None:
    return session.get(Dataset, dataset_id)


def list_datasets(session: Session, *, limit: int, offset: int) -> tuple[Sequence[Dataset], int]:
    total = session.scalar(select(func.count()).select_from(Dataset)) or 0
    rows = session.scalars(
        select(Dataset).order_by(Dataset.created_at.desc(), Dataset.id).limit(limit).offset(offset)
    ).all()
    return rows, total


def dataset_in_use(session: Session, *, dataset_id: str) -> bool:
    query = select(func.count()).where(
        or_(Job.dataset_id == dataset_id, Job.test_dataset_id == dataset_id),
        Job.status.in_(ACTIVE),
    )
    return bool(session.scalar(query))


# Jobs -------------------------------------------------------------------------------------


def get_job(session: Session, *, job_id: str, full: bool = False) -> Job | None:
    if not full:
        return session.get(Job, job_id)
    query = (
        select(Job)
        .where(Job.id == job_id)
        .options(selectinload(Job.history), selectinload(Job.checkpoints), selectinload(Job.model))
    )
    return session.scalars(query).first()


def list_jobs(
    session: Session, *, status: str | None, limit: int, offset: int
) -> tuple[Sequence[Job], int]:
    query = select(Job)
    count = select(func.count()).select_from(Job)
    if status is not None:
        query = query.where(Job.status == status)
        count = count.where(Job.status == status)
    rows = session.scalars(
        query.options(selectinload(Job.model))
        .order_by(Job.created_at.desc(), Job.id)
        .limit(limit)
        .offset(offset)
    ).all()
    return rows, session.scalar(count) or 0


def undispatched_jobs(session: Session, *, older_than: datetime) -> list[tuple[str, str]]:
    query = select(Job.id, Job.queue).where(
        Job.status == "queued", Job.dispatched_at.is_(None), Job.created_at <= older_than
    )
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


def mark_dispatched(session: Session, *, job_id: str) -> None:
    session.execute(update(Job).where(Job.id == job_id).values(dispatched_at=utcnow()))


def claim_job(session: Session, *, job_id: str, worker: str, lease: timedelta) -> bool:
    """Atomically take a queued job, or a running one whose lease ran out (its worker died).

    One UPDATE ... WHERE decides; a second delivery of the same message claims nothing.
    """
    now = utcnow()
    result = session.execute(
        update(Job)
        .where(
            Job.id == job_id,
            or_(
                Job.status == "queued",
                (Job.status == "running") & (Job.lease_expires_at < now),
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
    return result.rowcount == 1  # type: ignore[attr-defined]


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
    session.execute(update(Job).where(Job.id == job_id).values(epoch=epoch, updated_at=utcnow()))


def latest_checkpoint(session: Session, *, job_id: str) -> Checkpoint | None:
    query = select(Checkpoint).where(Checkpoint.job_id == job_id).order_by(Checkpoint.epoch.desc())
    return session.scalars(query.limit(1)).first()


def forget_after(session: Session, *, job_id: str, epoch: int) -> None:
    """On resume: drop epochs and checkpoints recorded after the checkpoint resumed from."""
    session.execute(
        delete(EpochMetric).where(EpochMetric.job_id == job_id, EpochMetric.epoch > epoch)
    )
    session.execute(delete(Checkpoint).where(Checkpoint.job_id == job_id, Checkpoint.epoch > epoch))
    session.execute(update(Job).where(Job.id == job_id).values(epoch=epoch))


def add_checkpoint(
    session: Session, *, job_id: str, epoch: int, path: str, sha256: str, metrics: dict[str, Any]
) -> None:
    session.add(Checkpoint(job_id=job_id, epoch=epoch, path=path, sha256=sha256, metrics=metrics))


def finish_job(
    session: Session,
    *,
    job_id: str,
    status: str,
    metrics: dict[str, Any] | None = None,
    error_type: str | None = None,
    error_message: str | None = None,
) -> None:
    now = utcnow()
    session.execute(
        update(Job)
        .where(Job.id == job_id)
        .values(
            status=status,
            metrics=metrics,
            error_type=error_type,
            error_message=error_message,
            finished_at=now,
            updated_at=now,
            lease_expires_at=None,
        )
    )


def request_cancel(session: Session, *, job: Job) -> None:
    now = utcnow()
    if job.status == "queued":
        job.status = "cancelled"
        job.finished_at = now
    job.cancel_requested = True
    job.updated_at = now


# Models -----------------------------------------------------------------------------------


def get_model(session: Session, *, model_id: str) -> Model | None:
    return session.get(Model, model_id)


def list_models(session: Session, *, limit: int, offset: int) -> tuple[Sequence[Model], int]:
    total = session.scalar(select(func.count()).select_from(Model)) or 0
    rows = session.scalars(
        select(Model).order_by(Model.created_at.desc(), Model.id).limit(limit).offset(offset)
    ).all()
    return rows, total


def model_for_job(session: Session, *, job_id: str) -> Model | None:
    return session.scalars(select(Model).where(Model.job_id == job_id)).first()
