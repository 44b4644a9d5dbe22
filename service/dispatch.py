"""Sending jobs to workers, only after the job row is committed.

`jobs.dispatched_at` is the outbox: a job whose message could not be sent (broker down)
stays NULL there, and the sweep in the API re-sends it once the broker is back. A message
the broker accepted can still be lost (Redis restarted without persistence), so a job still
queued `redispatch_seconds` after its last message is sent again. The same sweep re-sends a
running job whose lease expired, so that another worker (or the same one, restarted) claims
it and resumes from its last checkpoint. Every re-send is safe: a worker claims a job with
one atomic UPDATE, so a duplicate message finds nothing to claim.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import timedelta
from functools import lru_cache
from typing import Any

from celery import Celery
from starlette.concurrency import run_in_threadpool

from models.registry import get_kind
from models.specs import JobSpec
from service import repository
from service.db import session_scope
from service.queue import RUN_JOB, make_celery
from service.settings import Settings, get_settings
from service.tables import Job, utcnow

log = logging.getLogger(__name__)


@lru_cache
def producer() -> Celery:
    return make_celery(get_settings())


def choose_queue(settings: Settings, device: str) -> str:
    """GPU queue only where the deployment says GPU workers listen on it; otherwise a job
    asking for CUDA goes to the CPU workers, which fail it with a clear message instead of
    leaving it queued for a worker that does not exist."""
    if settings.route_to_gpu and device in ("auto", "cuda"):
        return settings.gpu_queue
    return settings.cpu_queue


def new_job(spec: JobSpec, owner_id: str, settings: Settings, **links: Any) -> Job:
    """The row of a job to queue for `spec` (to add with `repository.add_job`): its queue
    chosen and its epochs planned; `links` such as a study's trial number."""
    return Job(
        owner_id=owner_id,
        kind=spec.model.kind,
        task=spec.task,
        spec=spec.model_dump(mode="json"),
        dataset_id=spec.dataset_id,
        test_dataset_id=spec.test_dataset_id,
        queue=choose_queue(settings, spec.training.device),
        epochs=get_kind(spec.model.kind).planned_epochs(spec),
        **links,
    )


def send_job(job_id: str, queue: str) -> bool:
    """Publish the job's message; True once the broker has it (and the outbox is updated)."""
    try:
        producer().send_task(
            RUN_JOB,
            args=[job_id],
            queue=queue,
            retry=True,
            retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.5},
        )
    except Exception as exc:  # broker unreachable: the sweep tries again later
        log.warning("could not send job %s to the broker (%s); will retry", job_id, exc)
        return False
    with session_scope() as session:
        repository.mark_dispatched(session, job_id=job_id)
    return True


def sweep_once() -> int:
    """End abandoned jobs that must not run again (cancelled, or out of attempts), send what
    never reached the broker, re-send queued jobs whose message may be lost, and re-send
    jobs whose worker died. Answers how many messages the broker took."""
    settings = get_settings()
    now = utcnow()
    with session_scope() as session:
        repository.settle_abandoned_jobs(session, now=now, max_attempts=settings.max_attempts)
    with session_scope() as session:
        # Jobs younger than one sweep period are left to the route's own send.
        pending = repository.undispatched_jobs(
            session, older_than=now - timedelta(seconds=settings.dispatch_sweep_seconds)
        )
        # Sending refreshes dispatched_at, so a waiting job gets one more message per period.
        pending += repository.unclaimed_jobs(
            session, sent_before=now - timedelta(seconds=settings.redispatch_seconds)
        )
        pending += repository.orphaned_jobs(session, now=now)
    return sum(send_job(job_id, queue) for job_id, queue in pending)


async def sweep_forever(*also: Callable[[], object]) -> None:
    """`sweep_once` every `dispatch_sweep_seconds`, then each of `also` (the studies')."""
    while True:
        await asyncio.sleep(get_settings().dispatch_sweep_seconds)
        for sweep in (sweep_once, *also):
            try:
                await run_in_threadpool(sweep)
            except Exception:
                log.exception("sweep %s failed", getattr(sweep, "__name__", sweep))
