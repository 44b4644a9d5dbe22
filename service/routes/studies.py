"""Hyperparameter studies (issue 17): post a search over a job spec's fields; its trials
run as ordinary jobs on the workers."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from models.specs import JobSpec
from models.specs.study import StudySpec, check_study, complete_base
from service import repository
from service.auth import CallerDep
from service.deps import SessionDep, SettingsDep
from service.dispatch import send_job
from service.errors import NotFound, TooManyRequests, Unprocessable, responses
from service.idempotency import IdempotencyKey, check_key, commit_once, fingerprint, replay
from service.ratelimit import get_rate_limiter
from service.routes.jobs import check_spec
from service.schemas import BestTrial, Page, StudyRead, StudyStatus, StudySummary
from service.settings import Settings
from service.studies import advance, cancel, create_study, trial_views
from service.tables import Study

router = APIRouter(prefix="/studies", tags=["studies"], responses=responses(401, 403))
ENDPOINT = "POST /studies"


@router.post(
    "",
    status_code=202,
    response_model=StudyRead,
    summary="Start a hyperparameter study",
    responses=responses(400, 422, 429),
)
def create(
    spec: StudySpec,
    caller: CallerDep,
    session: SessionDep,
    settings: SettingsDep,
    idempotency_key: IdempotencyKey = None,
) -> StudyRead | JSONResponse:
    """Check the space against the base spec (a path the kind lacks, an empty range, or a
    sample the job spec refuses is a 422), record the study and queue its first
    `parallelism` trials as jobs."""
    key = check_key(idempotency_key)
    sent = fingerprint(spec.model_dump_json())
    replayed = replay(session, owner_id=caller.user_id, key=key, endpoint=ENDPOINT, print_=sent)
    if replayed is not None:
        return replayed
    get_rate_limiter().hit("POST /jobs", settings.rate_limit_jobs, caller)
    spec = spec.model_copy(update={"base": complete_base(spec, JobSpec.model_validate)})
    try:
        check_study(spec, JobSpec.model_validate)
    except ValueError as exc:
        raise Unprocessable(str(exc)) from None
    check_spec(JobSpec.model_validate(spec.base), caller.user_id, session, settings)
    if spec.parallelism > settings.max_active_jobs:
        raise Unprocessable(
            f"parallelism: at most {settings.max_active_jobs} jobs of yours may be queued or "
            "running at once"
        )
    active = repository.active_jobs(session, owner_id=caller.user_id)
    if active + spec.parallelism > settings.max_active_jobs:
        raise TooManyRequests(
            f"{active} of your jobs are queued or running; with this study's parallelism of "
            f"{spec.parallelism} that would be more than the {settings.max_active_jobs} allowed"
        )
    row = create_study(session, settings, owner_id=caller.user_id, spec=spec)
    new = advance(session, settings, row.id)
    replayed = commit_once(
        session,
        owner_id=caller.user_id,
        key=key,
        endpoint=ENDPOINT,
        print_=sent,
        status_code=202,
        answer=lambda: study_read(session, settings, row).model_dump(mode="json"),
    )
    if replayed is not None:  # a concurrent retry with the same key recorded it first
        return replayed
    for job_id, queue in new:
        send_job(job_id, queue)
    return study_read(session, settings, row)


@router.get("", response_model=Page[StudySummary], summary="List studies")
def list_studies(
    caller: CallerDep,
    session: SessionDep,
    status: StudyStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**31)] = 0,
) -> Page[StudySummary]:
    """Studies, newest first, optionally only those with one status."""
    rows, total = repository.list_studies(
        session, owner_id=caller.user_id, status=status, limit=limit, offset=offset
    )
    counts = repository.study_counts(session, study_ids=[r.id for r in rows])
    best = repository.job_metrics(session, job_ids=[r.best_job_id for r in rows if r.best_job_id])
    items = [study_summary(r, counts[r.id], _value(r, best.get(r.best_job_id or ""))) for r in rows]
    return Page[StudySummary](items=items, total=total, limit=limit, offset=offset)


@router.get(
    "/{study_id}", response_model=StudyRead, summary="Inspect a study", responses=responses(404)
)
def get_study(
    study_id: str, caller: CallerDep, session: SessionDep, settings: SettingsDep
) -> StudyRead:
    """Its trials with their parameters, values and statuses, the best trial and its model,
    and the parameters' importances once enough trials have a value."""
    return study_read(session, settings, _owned(session, study_id, caller.user_id))


@router.post(
    "/{study_id}/cancel",
    response_model=StudyRead,
    summary="Cancel a study",
    responses=responses(404),
)
def cancel_study(
    study_id: str, caller: CallerDep, session: SessionDep, settings: SettingsDep
) -> StudyRead:
    """No more trials start; queued trials are cancelled at once, running ones stop within
    about a second. A study that has ended is answered as it is."""
    row = _owned(session, study_id, caller.user_id)
    new = cancel(session, settings, row)
    session.commit()
    for job_id, queue in new:  # none: a cancelled study asks for no more trials
        send_job(job_id, queue)
    return study_read(session, settings, row)


def _owned(session: Session, study_id: str, owner_id: str) -> Study:
    row = repository.get_study(session, study_id=study_id, owner_id=owner_id)
    if row is None:
        raise NotFound(f"no study with id {study_id!r}")
    return row


def _value(row: Study, metrics: dict[str, Any] | None) -> float | None:
    """The study's metric in a job's final metrics."""
    return StudySpec.model_validate(row.spec).final_value(metrics) if metrics else None


def study_summary(row: Study, counts: dict[str, int], best_value: float | None) -> StudySummary:
    return StudySummary(
        id=row.id,
        status=row.status,  # type: ignore[arg-type]
        metric=row.metric,
        direction=row.direction,  # type: ignore[arg-type]
        n_trials=row.n_trials,
        parallelism=row.parallelism,
        counts=counts,
        best_value=best_value,
        best_job_id=row.best_job_id,
        error=row.error_message,
        created_at=row.created_at,
        finished_at=row.finished_at,
    )


def study_read(session: Session, settings: Settings, row: Study) -> StudyRead:
    jobs = repository.study_trial_jobs(session, study_id=row.id)
    trials, importances = trial_views(settings, row, jobs)
    counts: dict[str, int] = {}
    for trial in trials:
        counts[trial.status] = counts.get(trial.status, 0) + 1
    # The best trial as the study's last advance recorded it (Optuna's best_trial).
    top = next((t for t in trials if t.job_id and t.job_id == row.best_job_id), None)
    best = None
    if top is not None and top.value is not None:
        best = BestTrial(
            number=top.number,
            job_id=top.job_id,
            model_id=top.model_id,
            value=top.value,
            params=top.params,
        )
    summary = study_summary(row, counts, best.value if best else None)
    return StudyRead(
        **summary.model_dump(), spec=row.spec, trials=trials, best=best, importances=importances
    )
