"""Training jobs: submit, list, inspect, cancel."""

from __future__ import annotations

import math
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from models.specs import JobSpec
from service import repository
from service.auth import CallerDep
from service.deps import SessionDep, SettingsDep
from service.dispatch import choose_queue, send_job
from service.errors import Conflict, NotFound, TooManyRequests, Unprocessable, responses
from service.idempotency import IdempotencyKey, check_key, commit_once, fingerprint, replay
from service.ratelimit import get_rate_limiter
from service.schemas import (
    CheckpointRead,
    HistoryEntry,
    JobError,
    JobRead,
    JobStatus,
    JobSummary,
    Page,
    Progress,
)
from service.tables import EpochMetric, Job
from service.validation import check_environment, check_job

router = APIRouter(prefix="/jobs", tags=["jobs"], responses=responses(401, 403))
ENDPOINT = "POST /jobs"


def _progress(job: Job, history: list[EpochMetric]) -> Progress:
    eta = None
    seconds = [row.seconds for row in history]
    if job.status == "running" and seconds:
        eta = sum(seconds) / len(seconds) * max(job.epochs - job.epoch, 0)
    elif job.status in ("succeeded", "failed", "cancelled"):
        eta = 0.0
    fraction = min(job.epoch / job.epochs, 1.0)
    step = steps = None
    if job.task == "reinforcement":
        steps = int(job.spec["training"]["total_steps"])
        step = int(history[-1].metrics.get("step", 0)) if history else 0
        fraction = min(step / steps, 1.0)
    return Progress(
        epoch=job.epoch,
        epochs=job.epochs,
        step=step,
        steps=steps,
        fraction=fraction,
        eta_seconds=eta,
    )


def _error(job: Job) -> JobError | None:
    if job.error_type is None:
        return None
    return JobError(type=job.error_type, message=job.error_message or "")


def job_summary(job: Job) -> JobSummary:
    return JobSummary(
        id=job.id,
        status=job.status,  # type: ignore[arg-type]
        kind=job.kind,
        task=job.task,
        dataset_id=job.dataset_id,
        progress=_progress(job, []),
        model_id=job.model.id if job.model else None,
        error=_error(job),
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
    )


def job_read(job: Job) -> JobRead:
    history = [
        HistoryEntry(
            epoch=row.epoch,
            train_loss=row.train_loss,
            val_loss=row.val_loss,
            seconds=row.seconds,
            **row.metrics,
        )
        for row in job.history
    ]
    summary = job_summary(job).model_dump()
    summary["progress"] = _progress(job, job.history)
    return JobRead(
        **summary,
        spec=JobSpec.model_validate(job.spec),
        test_dataset_id=job.test_dataset_id,
        history=history,
        metrics=job.metrics,
        checkpoints=[CheckpointRead.model_validate(c) for c in job.checkpoints],
        device=job.device,
        attempts=job.attempts,
        updated_at=job.updated_at,
    )


@router.post(
    "",
    status_code=202,
    response_model=JobRead,
    summary="Start a training job",
    responses=responses(400, 404, 422, 429),
)
def create_job(
    spec: JobSpec,
    caller: CallerDep,
    session: SessionDep,
    settings: SettingsDep,
    idempotency_key: IdempotencyKey = None,
) -> JobRead | JSONResponse:
    """Record the job, then hand it to a worker; answers at once with status `queued`."""
    key = check_key(idempotency_key)
    sent = fingerprint(spec.model_dump_json())
    replayed = replay(session, owner_id=caller.user_id, key=key, endpoint=ENDPOINT, print_=sent)
    if replayed is not None:
        return replayed
    get_rate_limiter().hit("POST /jobs", settings.rate_limit_jobs, caller)
    if spec.dataset_id is None:  # reinforcement learning: the environment is the data
        check_environment(spec, settings)
    else:
        dataset = repository.get_dataset(
            session, dataset_id=spec.dataset_id, owner_id=caller.user_id
        )
        if dataset is None:
            raise Unprocessable(f"dataset_id: no dataset with id {spec.dataset_id!r}")
        test_dataset = None
        if spec.test_dataset_id is not None:
            test_dataset = repository.get_dataset(
                session, dataset_id=spec.test_dataset_id, owner_id=caller.user_id
            )
            if test_dataset is None:
                raise Unprocessable(f"test_dataset_id: no dataset with id {spec.test_dataset_id!r}")
        check_job(spec, dataset, test_dataset, settings)
    active = repository.active_jobs(session, owner_id=caller.user_id)
    if active >= settings.max_active_jobs:
        raise TooManyRequests(
            f"{active} of your jobs are queued or running, the most allowed; wait for one "
            "to finish or cancel one"
        )
    job = Job(
        owner_id=caller.user_id,
        kind=spec.model.kind,
        task=spec.task,
        spec=spec.model_dump(mode="json"),
        dataset_id=spec.dataset_id,
        test_dataset_id=spec.test_dataset_id,
        queue=choose_queue(settings, spec.training.device),
        epochs=_planned_epochs(spec),
    )
    session.add(job)
    # The message is never sent before the row exists.
    replayed = commit_once(
        session,
        owner_id=caller.user_id,
        key=key,
        endpoint=ENDPOINT,
        print_=sent,
        status_code=202,
        answer=lambda: job_read(job).model_dump(mode="json"),
    )
    if replayed is not None:  # a concurrent retry with the same key recorded it first
        return replayed
    answer = job_read(job)  # as recorded: a fast worker may already be running it
    send_job(job.id, job.queue)
    return answer


def _planned_epochs(spec: JobSpec) -> int:
    """History entries the job will write: epochs, one for a closed form, or evaluations."""
    model = spec.model
    if spec.task == "reinforcement":
        return math.ceil(spec.training.total_steps / spec.resolved_eval_interval)
    if model.kind == "linear" and model.resolved_solver(spec.task) == "normal_equation":
        return 1
    return spec.training.epochs


@router.get("", response_model=Page[JobSummary], summary="List jobs")
def list_jobs(
    caller: CallerDep,
    session: SessionDep,
    status: JobStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**31)] = 0,
) -> Page[JobSummary]:
    """Jobs, newest first, optionally only those with one status."""
    rows, total = repository.list_jobs(
        session, owner_id=caller.user_id, status=status, limit=limit, offset=offset
    )
    return Page[JobSummary](
        items=[job_summary(j) for j in rows], total=total, limit=limit, offset=offset
    )


@router.get("/{job_id}", response_model=JobRead, summary="Get a job", responses=responses(404))
def get_job(job_id: str, caller: CallerDep, session: SessionDep) -> JobRead:
    """Status, progress, per-epoch history, checkpoints, final metrics and the model id."""
    job = repository.get_job(session, job_id=job_id, owner_id=caller.user_id, full=True)
    if job is None:
        raise NotFound(f"no job with id {job_id!r}")
    return job_read(job)


@router.post(
    "/{job_id}/cancel",
    status_code=202,
    response_model=JobRead,
    summary="Cancel a job",
    responses=responses(404, 409),
)
def cancel_job(job_id: str, caller: CallerDep, session: SessionDep) -> JobRead:
    """A queued job is cancelled at once; a running one stops within about a second."""
    job = repository.get_job(session, job_id=job_id, owner_id=caller.user_id, full=True)
    if job is None:
        raise NotFound(f"no job with id {job_id!r}")
    if job.status not in repository.ACTIVE:
        raise Conflict(f"job {job_id!r} has already finished ({job.status})")
    repository.request_cancel(session, job=job)
    session.commit()
    return job_read(job)
