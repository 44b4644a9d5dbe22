"""A job's history (one entry per epoch) and its paging, the running epoch's progress, and
its checkpoints' rows. Each entry and checkpoint written appends its event
(events.add_event) in the same transaction."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from models.metrics import json_safe
from service.repository.events import add_event
from service.tables import Checkpoint, EpochMetric, Job, utcnow


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
