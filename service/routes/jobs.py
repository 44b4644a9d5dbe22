"""Training jobs: submit, list, inspect, cancel."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session
from sse_starlette import EventSourceResponse
from starlette.concurrency import run_in_threadpool

from models.specs import JobSpec
from service import repository
from service.auth import CallerDep, Credentials, authenticate
from service.db import get_sessionmaker
from service.deps import SessionDep, SettingsDep
from service.dispatch import new_job, send_job
from service.downsample import downsample
from service.errors import BadRequest, Conflict, NotFound, TooManyRequests, Unprocessable, responses
from service.events import EventHub, parse_last_event_id, stream
from service.idempotency import IdempotencyKey, check_key, commit_once, fingerprint, replay
from service.ratelimit import get_rate_limiter
from service.schemas import HistoryEntry, HistoryPage, JobRead, JobStatus, JobSummary, Page
from service.settings import Settings
from service.studies import advance_and_send
from service.validation import check_environment, check_job
from service.views import job_read, job_summary

router = APIRouter(prefix="/jobs", tags=["jobs"], responses=responses(401, 403))
ENDPOINT = "POST /jobs"


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
    check_spec(spec, caller.user_id, session, settings)
    active = repository.active_jobs(session, owner_id=caller.user_id)
    if active >= settings.max_active_jobs:
        raise TooManyRequests(
            f"{active} of your jobs are queued or running, the most allowed; wait for one "
            "to finish or cancel one"
        )
    job = new_job(spec, caller.user_id, settings)
    repository.add_job(session, job=job)
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


def check_spec(spec: JobSpec, owner_id: str, session: Session, settings: Settings) -> None:
    """What `POST /jobs` checks beyond the spec's own validation (422s): the environment can
    be made, or the datasets and the teacher model exist, are the caller's, and fit it."""
    if spec.dataset_id is None:  # reinforcement learning: the environment is the data
        check_environment(spec, settings)
    else:
        dataset = repository.get_dataset(session, dataset_id=spec.dataset_id, owner_id=owner_id)
        if dataset is None:
            raise Unprocessable(f"dataset_id: no dataset with id {spec.dataset_id!r}")
        test_dataset = None
        if spec.test_dataset_id is not None:
            test_dataset = repository.get_dataset(
                session, dataset_id=spec.test_dataset_id, owner_id=owner_id
            )
            if test_dataset is None:
                raise Unprocessable(f"test_dataset_id: no dataset with id {spec.test_dataset_id!r}")
        teacher = None
        distillation = getattr(spec.model, "distillation", None)
        if distillation is not None:
            teacher = repository.get_model(
                session, model_id=distillation.teacher_model_id, owner_id=owner_id
            )
            if teacher is None:
                raise Unprocessable(
                    "model.distillation.teacher_model_id: no model with id "
                    f"{distillation.teacher_model_id!r}"
                )
        check_job(spec, dataset, test_dataset, settings, teacher)


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


HISTORY_PARAM = Query(
    pattern=r"^(all|none|last:\d{1,7})$",
    description="`all` (the default), `none`, or `last:N` for the N latest entries; "
    "`GET /jobs/{id}/history` pages through the rest.",
)


@router.get("/{job_id}", response_model=JobRead, summary="Get a job", responses=responses(404))
def get_job(
    job_id: str,
    caller: CallerDep,
    session: SessionDep,
    history: Annotated[str | None, HISTORY_PARAM] = None,
    checkpoints: Annotated[
        Literal["all", "none"], Query(description="`none` leaves the checkpoints out.")
    ] = "all",
) -> JobRead:
    """Status, progress, per-epoch history, checkpoints, final metrics and the model id."""
    whole = history in (None, "all")
    job = repository.get_job(
        session, job_id=job_id, owner_id=caller.user_id, full=True, history=whole
    )
    if job is None:
        raise NotFound(f"no job with id {job_id!r}")
    if whole:
        return job_read(job, checkpoints=checkpoints == "all")
    assert history is not None
    count = 0 if history == "none" else int(history.partition(":")[2])
    rows, total, mean_seconds = repository.history_tail(session, job_id=job_id, count=count)
    return job_read(
        job, rows, total=total, mean_seconds=mean_seconds, checkpoints=checkpoints == "all"
    )


@router.get(
    "/{job_id}/history",
    response_model=HistoryPage,
    summary="Page through a job's history, or get it downsampled for plotting",
    responses=responses(404),
)
def get_history(
    job_id: str,
    caller: CallerDep,
    session: SessionDep,
    after_epoch: Annotated[
        int, Query(ge=0, le=2**31 - 1, description="Only entries of later epochs.")
    ] = 0,
    limit: Annotated[int, Query(ge=1, le=100_000, description="At most this many.")] = 10_000,
    points: Annotated[
        int | None,
        Query(
            ge=10,
            le=100_000,
            description="Downsample for plotting to about this many entries: each numeric "
            "series keeps its shape, minimum and maximum (LTTB), and the first and last "
            "entries are always kept. Zoom in by asking again for a narrower window.",
        ),
    ] = None,
) -> HistoryPage:
    """History entries (epochs; RL: evaluations) after `after_epoch`, oldest first."""
    job = repository.get_job(session, job_id=job_id, owner_id=caller.user_id)
    if job is None:
        raise NotFound(f"no job with id {job_id!r}")
    entries, total, seq = repository.job_history(
        session, job_id=job_id, after_epoch=after_epoch, limit=limit
    )
    shown = downsample(entries, points) if points is not None else entries
    return HistoryPage(
        job_id=job_id,
        total=total,
        downsampled=len(shown) < len(entries),
        last_event_id=str(seq),
        items=[HistoryEntry(**e) for e in shown],
    )


EVENTS_DOC = """Server-Sent Events (`text/event-stream`) of what happens to the job, each with an
`id`, an `event` type and JSON `data`:

- `status`: `{"status", "cancel_requested", "attempt", "error", "metrics", "model_id"}` on
  every change (queued, running, each resume, cancel requested, the end with the final
  metrics and the model id);
- `epoch`: each history entry as it is written (RL: each evaluation), as in `history`;
- `progress`: `{"epoch", "epochs", "batch", "batches", "step", "steps", "fraction"}` within an
  epoch (RL: between evaluations), at most a few a second, not kept;
- `checkpoint`: `{"epoch", "sha256", "created_at"}`;
- `rewind`: `{"epoch"}`: the job lost its worker and resumed from the checkpoint of that
  epoch; drop what came after it.

The stream ends after the final status. A finished job's stream replays everything and
ends. Reconnect with `Last-Event-ID` (the last `id` seen) to get only what was missed. Read
it with a client that sends the `Authorization` header (not `EventSource`)."""


# One event of the stream, as OpenAPI models text/event-stream (each event an object of its
# fields; `data` is JSON text).
EVENT_SCHEMA = {
    "type": "object",
    "required": ["id", "event", "data"],
    "properties": {
        "id": {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?$"},
        "event": {
            "type": "string",
            "enum": ["status", "epoch", "progress", "checkpoint", "rewind"],
        },
        "data": {"type": "string", "contentMediaType": "application/json"},
        "retry": {"type": "integer"},
    },
}


@router.get(
    "/{job_id}/events",
    summary="Stream a job's events (Server-Sent Events)",
    description=EVENTS_DOC,
    response_class=EventSourceResponse,
    responses={
        200: {"content": {"text/event-stream": {"schema": EVENT_SCHEMA}}},
        **responses(400, 404),
    },
)
async def job_events(
    job_id: str,
    request: Request,
    credentials: Credentials,
    settings: SettingsDep,
    last_event_id: Annotated[
        str | None,
        Header(max_length=64, description="The last event id received; resume after it."),
    ] = None,
) -> EventSourceResponse:
    caller = await run_in_threadpool(authenticate, credentials, settings)
    after = parse_last_event_id(last_event_id)
    if after is None:
        raise BadRequest(f"Last-Event-ID {last_event_id!r} is not an event id of this API")
    found = await run_in_threadpool(_owned_job_exists, job_id, caller.user_id)
    if not found:
        raise NotFound(f"no job with id {job_id!r}")
    hub: EventHub = request.app.state.event_hub
    return EventSourceResponse(
        stream(hub, job_id, after), ping=15, headers={"Cache-Control": "no-store"}
    )


def _owned_job_exists(job_id: str, owner_id: str) -> bool:
    with get_sessionmaker()() as session:
        return repository.get_job(session, job_id=job_id, owner_id=owner_id) is not None


@router.post(
    "/{job_id}/cancel",
    status_code=202,
    response_model=JobRead,
    summary="Cancel a job",
    responses=responses(404, 409),
)
def cancel_job(
    job_id: str, caller: CallerDep, session: SessionDep, settings: SettingsDep
) -> JobRead:
    """A queued job is cancelled at once; a running one stops within about a second."""
    job = repository.get_job(session, job_id=job_id, owner_id=caller.user_id, full=True)
    if job is None:
        raise NotFound(f"no job with id {job_id!r}")
    if job.status not in repository.ACTIVE:
        raise Conflict(f"job {job_id!r} has already finished ({job.status})")
    repository.request_cancel(session, job=job)
    session.commit()
    if job.study_id is not None and job.status == "cancelled":  # its study goes on
        advance_and_send(settings, job.study_id)
    return job_read(job)
