"""Celery tasks: thin adapters. `run_job` claims the job, trains it, records the result."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from datetime import datetime, timedelta
from pathlib import PurePosixPath
from typing import Any

import torch
import torch._dynamo  # optimizers import it lazily (1.5 s): pay that at start-up, not per job
from celery.exceptions import Reject
from celery.signals import worker_init, worker_shutting_down

from models.base import Cancelled, Deadline, Pruned, Released, TrainingError, resolve_device
from models.bundle import load_network
from models.checkpoint import CorruptCheckpointError
from models.data import DataError
from models.distillation import Teacher
from models.metrics import json_safe
from models.policy import Retention
from models.prepare import DataSource
from models.registry import get_kind
from models.specs import JobSpec
from service import repository
from service.db import session_scope
from service.queue import RUN_JOB
from service.settings import Settings, get_settings
from service.storage import ArtifactStore, StoreUnavailable, delete_quietly, model_key, open_store
from service.studies import TrialPruner, advance_and_send, trial_pruner
from workers.artifacts import save_model
from workers.celery_app import app
from workers.mistakes import record_mistakes
from workers.reporter import JobReporter, LeaseLost

log = logging.getLogger(__name__)


def apply_torch_threads(settings: Settings) -> None:
    if settings.torch_threads is not None:
        torch.set_num_threads(settings.torch_threads)
        log.info("torch intra-op threads: %d", torch.get_num_threads())


@worker_init.connect
def _configure_torch(**_: Any) -> None:
    apply_torch_threads(get_settings())


# Set when this worker begins a warm shutdown (SIGTERM, Ctrl-C): the job it runs stops at
# its next cancel check, checkpoints where it stopped, and goes back to the queue for the
# next worker, instead of holding the shutdown until it ends.
_stopping = threading.Event()


@worker_shutting_down.connect
def _release_running_job(**_: Any) -> None:
    _stopping.set()


class _Heartbeat(threading.Thread):
    """Renews the job's lease while it trains, so no other worker takes it over. When the
    lease is gone (this worker stalled past it and another took the job over), it sets
    `lost`, and the training stops at its next cancel check without writing anything."""

    def __init__(self, job_id: str, worker: str, lease: timedelta) -> None:
        super().__init__(daemon=True, name=f"heartbeat-{job_id}")
        self.job_id, self.worker, self.lease = job_id, worker, lease
        self.stopped = threading.Event()
        self.lost = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.lease.total_seconds() / 3):
            try:
                with session_scope() as session:
                    renewed = repository.renew_lease(
                        session, job_id=self.job_id, worker=self.worker, lease=self.lease
                    )
            except Exception:
                log.exception("job %s: lease renewal failed", self.job_id)
                continue
            if not renewed:
                log.warning("job %s: lease lost to another worker; stopping", self.job_id)
                self.lost.set()
                return


@app.task(name=RUN_JOB, acks_late=True, reject_on_worker_lost=True)
def run_job(job_id: str) -> None:
    if _stopping.is_set():  # delivered while shutting down: leave it to the next worker
        raise Reject(f"job {job_id}: this worker is shutting down", requeue=True)
    settings = get_settings()
    worker = f"{socket.gethostname()}:{os.getpid()}"
    lease = timedelta(seconds=settings.job_lease_seconds)
    with session_scope() as session:
        claimed = repository.claim_job(
            session, job_id=job_id, worker=worker, lease=lease, max_attempts=settings.max_attempts
        )
        if not claimed:
            log.info("job %s: nothing to claim (finished, cancelled or owned elsewhere)", job_id)
            return
    heartbeat = _Heartbeat(job_id, worker, lease)
    heartbeat.start()
    try:
        released = _train_and_record(job_id, worker, settings, heartbeat.lost)
    finally:
        heartbeat.stopped.set()
    if not released:
        _advance_study(job_id, settings)
    if released:  # its message goes back to the queue (acks_late: it was never acknowledged)
        raise Reject(f"job {job_id}: released by a worker shutting down", requeue=True)


def _advance_study(job_id: str, settings: Settings) -> None:
    """A study's trial has ended: its study tells Optuna and starts the next trials. A
    failure here is the API's sweep to retry; it never fails the task."""
    try:
        with session_scope() as session:
            job = repository.get_job(session, job_id=job_id, owner_id=None)
            study_id = job.study_id if job is not None else None
        if study_id is not None:
            advance_and_send(settings, study_id)
    except Exception:
        log.exception("job %s: its study was not advanced (the sweep will)", job_id)


def _load(
    job_id: str, store: ArtifactStore, settings: Settings
) -> tuple[JobSpec, DataSource | None, DataSource | None, datetime, str, TrialPruner | None]:
    """Re-read the job row and re-validate its stored spec; locate its dataset files. Then
    when the job first started (a resumed job keeps it: its limit counts on), its owner,
    and its study's pruner when it is a trial."""
    with session_scope() as session:
        job = repository.get_job(session, job_id=job_id, owner_id=None)
        assert job is not None and job.started_at is not None  # claim_job set it
        spec, started_at = JobSpec.model_validate(job.spec), job.started_at
        owner_id = job.owner_id
        pruner = trial_pruner(session, settings, job)
        stored: list[tuple[str, str | None, str] | None] = []
        for dataset_id in (job.dataset_id, job.test_dataset_id):
            dataset = (
                repository.get_dataset(session, dataset_id=dataset_id, owner_id=None)
                if dataset_id
                else None
            )
            stored.append(
                (dataset.path, dataset.stored_sha256, dataset.format) if dataset else None
            )
    # Outside the transaction: from an object store, a download (once per machine).
    sources = [_source(store, found) if found else None for found in stored]
    if sources[0] is None and spec.dataset_id is not None:
        raise DataError("the job's dataset was deleted")
    return spec, sources[0], sources[1], started_at, owner_id, pruner


def _source(store: ArtifactStore, found: tuple[str, str | None, str]) -> DataSource:
    key, sha256, fmt = found
    try:
        return DataSource(store.local(key, sha256), fmt)
    except FileNotFoundError:
        raise DataError("the job's dataset file is missing from the artifact store") from None
    except CorruptCheckpointError as exc:
        raise DataError(f"the job's dataset file is refused: {exc}") from None


def _load_teacher(
    spec: JobSpec, owner_id: str, store: ArtifactStore, device: torch.device
) -> Teacher | None:
    """The model the spec's `model.distillation` names (its owner's own), checked against
    its sha256 and rebuilt on `device`; None when the job distils nothing."""
    distillation = getattr(spec.model, "distillation", None)
    if distillation is None:
        return None
    model_id = distillation.teacher_model_id
    with session_scope() as session:
        model = repository.get_model(session, model_id=model_id, owner_id=owner_id)
        found = (model.path, model.sha256) if model is not None else None
    if found is None:
        raise DataError(f"model.distillation: the teacher model {model_id} was deleted")
    try:
        local = store.local(found[0], found[1], sidecar=True)
        _, network, meta = load_network(local, expected_sha256=found[1], kinds=get_kind)
    except (OSError, CorruptCheckpointError) as exc:
        why = (
            "its file is missing"
            if isinstance(exc, OSError)
            else "its files do not match the sha256 recorded when it was trained"
        )
        raise DataError(
            f"model.distillation: the teacher model {model_id} cannot be loaded: {why}"
        ) from exc
    return Teacher(model_id, network.to(device), meta)


def _train_and_record(
    job_id: str, worker: str, settings: Settings, lease_lost: threading.Event
) -> bool:
    """Train the job and record how it ended; True when it was released (this worker is
    shutting down) and must go back to the queue."""
    store = open_store(settings)
    model_id: str | None = None
    try:
        spec, source, test_source, started_at, owner_id, pruner = _load(job_id, store, settings)
        limit = spec.training.time_limit_seconds or settings.max_job_seconds
        deadline = Deadline.after_start(started_at, limit)
        retention = Retention(spec.training.keep_checkpoints, spec.training.keep_best_checkpoint)
        reporter = JobReporter(
            job_id,
            store,
            deadline,
            worker,
            lease_lost,
            settings.progress_seconds,
            retention,
            stopping=_stopping,
            trial=pruner,
        )
        device = resolve_device(spec.training.device)
        with session_scope() as session:
            repository.set_device(session, job_id=job_id, device=str(device))
        # Reinforcement learning has no dataset: its kinds make their own environments.
        kind = get_kind(spec.model.kind)
        data = kind.prepare(spec, source, test_source).to(device) if source else None
        teacher = _load_teacher(spec, owner_id, store, device)
        try:
            result = kind.train(
                spec,
                data,
                reporter,
                teacher=teacher,
                cancel_poll_seconds=settings.cancel_poll_seconds,
            )
        except Exception:
            # The epochs it did finish are history, whatever ends it.
            with contextlib.suppress(Exception):
                reporter.flush()
            raise
        reporter.flush()
        record_mistakes(store, job_id, result, data, spec.training)
        interface = result.interface or (data.interface() if data is not None else None)
        assert interface is not None, "a kind without data must return its interface"
        metrics = json_safe(result.metrics)
        with session_scope() as session:  # the model and the final status in one transaction
            model_id = save_model(
                session,
                store,
                job_id=job_id,
                spec=spec,
                interface=interface,
                result=result,
                metrics=metrics,
            )
            if not repository.finish_job(
                session, job_id=job_id, worker=worker, status="succeeded", metrics=metrics
            ):
                raise LeaseLost()  # rolls the model row back; its file goes below
        log.info("job %s: succeeded, model %s", job_id, model_id)
    except LeaseLost:
        if model_id is not None:
            with session_scope() as session:
                kept = repository.get_model(session, model_id=model_id, owner_id=None)
            if kept is None:  # its row was rolled back: the file is this attempt's alone
                delete_quietly(store, str(PurePosixPath(model_key(model_id)).parent))
        log.warning("job %s: another worker owns it now; this attempt leaves nothing", job_id)
    except Released:
        with session_scope() as session:
            if repository.release_job(session, job_id=job_id, worker=worker):
                log.info("job %s: released (worker shutting down); back in the queue", job_id)
                return True
        _finish(job_id, worker, "cancelled", None, None)  # its user cancelled it meanwhile
    except Pruned as exc:
        _finish(job_id, worker, "pruned", "Pruned", str(exc))
    except Cancelled:
        _finish(job_id, worker, "cancelled", None, None)
    except (TrainingError, DataError) as exc:
        _finish(job_id, worker, "failed", type(exc).__name__, str(exc))
    except StoreUnavailable as exc:
        log.error("job %s: %s", job_id, exc)
        _finish(job_id, worker, "failed", "StoreUnavailable", str(exc))
    except (torch.OutOfMemoryError, MemoryError) as exc:
        first_line = (str(exc) or type(exc).__name__).splitlines()[0]
        _finish(
            job_id,
            worker,
            "failed",
            "OutOfMemoryError",
            f"the worker ran out of memory ({first_line}); try a smaller batch_size or a "
            "smaller network",
        )
    except Exception as exc:
        log.exception("job %s crashed", job_id)
        _finish(job_id, worker, "failed", type(exc).__name__, str(exc) or repr(exc))
    return False


def _finish(
    job_id: str, worker: str, status: str, error_type: str | None, message: str | None
) -> None:
    with session_scope() as session:
        finished = repository.finish_job(
            session,
            job_id=job_id,
            worker=worker,
            status=status,
            error_type=error_type,
            error_message=message,
        )
    if not finished:
        log.warning("job %s: not recorded as %s: another worker owns it now", job_id, status)
