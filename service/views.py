"""What the API shows of a job: its summary, its full record, its progress and headline
metric. Shared by the job routes, idempotent replays and the event stream."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from models.specs import JobSpec
from service.repository import FINISHED, history_entry
from service.schemas import (
    CheckpointRead,
    HistoryEntry,
    JobError,
    JobRead,
    JobSummary,
    MainMetric,
    Progress,
)
from service.tables import EpochMetric, Job

# The headline metric per task, and the history entry's name for it while the job runs.
HEADLINE = {
    "classification": ("accuracy", "val_accuracy"),
    "regression": ("rmse", "val_rmse"),
    "forecasting": ("rmse", "val_rmse"),
}


def progress(job: Job, mean_seconds: float | None = None) -> Progress:
    """Epochs (RL: evaluations and steps) done, and where the running epoch is.
    `mean_seconds`: the epochs' mean wall time so far, for the ETA (None in lists)."""
    live: dict[str, Any] = (job.progress or {}) if job.status == "running" else {}
    batch, batches = live.get("batch"), live.get("batches")
    eta = None
    if job.status == "running" and mean_seconds is not None:
        eta = mean_seconds * max(job.epochs - job.epoch, 0)
    elif job.status in FINISHED:
        eta = 0.0
    done = job.epoch + (batch / batches if batch is not None and batches else 0.0)
    fraction = min(done / job.epochs, 1.0) if job.epochs else 0.0
    step = steps = None
    if job.task == "reinforcement":
        steps = int(job.spec["training"]["total_steps"])
        latest = live.get("latest") or (job.progress or {}).get("latest") or {}
        step = int(live.get("step", latest.get("step", 0)) or 0)
        if job.status == "succeeded":
            step = steps
        fraction = min(step / steps, 1.0) if steps else 0.0
    return Progress(
        epoch=job.epoch,
        epochs=job.epochs,
        step=step,
        steps=steps,
        fraction=fraction,
        eta_seconds=eta,
        batch=batch,
        batches=batches,
    )


def main_metric(job: Job) -> MainMetric | None:
    if job.task == "reinforcement":
        final, name, live = ("evaluation",), "return_mean", "eval_return_mean"
        parts: tuple[str, ...] = final
    elif job.task in HEADLINE:
        name, live = HEADLINE[job.task]
        parts = ("test", "validation", "train")
    else:
        return None
    if job.metrics:
        for part in parts:
            value = (job.metrics.get(part) or {}).get(name)
            if value is not None:
                label = "eval_return_mean" if job.task == "reinforcement" else f"{part}_{name}"
                return MainMetric(name=label, value=value)
        return None
    latest = (job.progress or {}).get("latest") or {}
    if latest.get(live) is not None:
        return MainMetric(name=live, value=latest[live])
    return None


def error(job: Job) -> JobError | None:
    if job.error_type is None:
        return None
    return JobError(type=job.error_type, message=job.error_message or "")


def job_summary(job: Job, mean_seconds: float | None = None) -> JobSummary:
    return JobSummary(
        id=job.id,
        status=job.status,  # type: ignore[arg-type]
        kind=job.kind,
        task=job.task,
        dataset_id=job.dataset_id,
        progress=progress(job, mean_seconds),
        model_id=job.model.id if job.model else None,
        error=error(job),
        study_id=job.study_id,
        trial_number=job.trial_number,
        main_metric=main_metric(job),
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
    )


def job_read(
    job: Job,
    rows: Sequence[EpochMetric] | None = None,
    *,
    total: int | None = None,
    mean_seconds: float | None = None,
    checkpoints: bool = True,
) -> JobRead:
    """The whole record. By default with its whole history (`job.history`); a route that
    limits it passes the `rows` to show, the `total` count and the epochs' `mean_seconds`."""
    if rows is None:
        rows = list(job.history)
        total = len(rows)
        mean_seconds = sum(r.seconds for r in rows) / len(rows) if rows else None
    entries = [
        HistoryEntry(**history_entry(r.epoch, r.train_loss, r.val_loss, r.seconds, r.metrics))
        for r in rows
    ]
    summary = job_summary(job, mean_seconds).model_dump()
    return JobRead(
        **summary,
        spec=JobSpec.model_validate(job.spec),
        test_dataset_id=job.test_dataset_id,
        history=entries,
        history_total=len(rows) if total is None else total,
        metrics=job.metrics,
        checkpoints=[CheckpointRead.model_validate(c) for c in job.checkpoints]
        if checkpoints
        else [],
        device=job.device,
        attempts=job.attempts,
        updated_at=job.updated_at,
    )
