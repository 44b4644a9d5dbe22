"""The worker's side of `models.base.Reporter`: metrics and checkpoints to SQL and the
artifact store, the answer to "was this job cancelled?", and the job's deadline."""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from typing import Any

import torch
from sqlalchemy.orm import Session

from models.base import Cancelled, Deadline, EpochRecord, Pruned, Released
from models.checkpoint import (
    Checkpoint,
    CorruptCheckpointError,
    load_checkpoint,
    save_checkpoint,
)
from models.metrics import json_safe
from models.policy import Retention
from service import repository
from service.db import session_scope
from service.storage import ArtifactStore, delete_quietly, job_key
from service.studies import TrialPruner

log = logging.getLogger(__name__)

BATCH_SECONDS = 0.25  # history entries are written at most this long after their epoch
ENTRY_FIELDS = frozenset({"epoch", "train_loss", "val_loss", "seconds"})


class LeaseLost(Cancelled):
    """This worker's lease on the job is gone: another worker took it over. The training
    stops like a cancelled one, and this attempt records nothing more."""

    keeps_state = False


class JobReporter:
    """Every write first checks that this worker still owns the job (in the same
    transaction): a worker that stalled past its lease and woke up after another took the
    job over writes nothing, and stops at its next check."""

    def __init__(
        self,
        job_id: str,
        store: ArtifactStore,
        deadline: Deadline | None,
        worker: str,
        lease_lost: threading.Event | None = None,
        progress_seconds: float = 0.5,
        retention: Retention | None = None,
        stopping: threading.Event | None = None,
        trial: TrialPruner | None = None,
    ) -> None:
        self.job_id = job_id
        self.store = store
        self._deadline = deadline
        self.worker = worker
        self._lease_lost = lease_lost or threading.Event()
        self._stopping = stopping or threading.Event()  # set: the worker is shutting down
        # Checkpoint files are this attempt's own: a stalled worker cannot overwrite the
        # file another attempt recorded for the same epoch.
        self._attempt = uuid.uuid4().hex[:8]
        self._progress_seconds = progress_seconds
        self._retention = retention or Retention(latest=None, best=False)
        self._progress_at = time.monotonic()
        self._latest: dict[str, Any] | None = None  # the last history entry recorded
        self._pending: list[dict[str, Any]] = []  # history entries not yet written
        self._written_at = -math.inf
        self._trial = trial  # a study's trial: its pruner may stop it at an epoch's end

    def _check_owner(self, session: Session) -> None:
        if self._lease_lost.is_set() or not repository.owns_job(
            session, job_id=self.job_id, worker=self.worker
        ):
            self._lease_lost.set()
            raise LeaseLost()

    def epoch_end(self, record: EpochRecord) -> None:
        """Record the epoch's history entry (and its event). Epochs that end less than
        BATCH_SECONDS after the last write are held and written together, at most
        BATCH_SECONDS later: thousands of millisecond epochs cost a few transactions a
        second, not one each, and a watcher still sees every entry within a second."""
        safe = json_safe(
            {"train_loss": record.train_loss, "val_loss": record.val_loss, **record.metrics}
        )
        train_loss, val_loss = safe.pop("train_loss"), safe.pop("val_loss")
        entry = repository.history_entry(record.epoch, train_loss, val_loss, record.seconds, safe)
        self._pending.append(entry)
        now = time.monotonic()
        if now - self._written_at >= BATCH_SECONDS:
            self.flush()
        self._progress_at = now  # an epoch shorter than the progress period shows none
        if self._trial is not None:
            reason = self._trial.check(record.epoch, {"val_loss": val_loss, **safe})
            if reason is not None:
                self.flush()  # the epoch that decided it is in the history
                raise Pruned(reason)

    def flush(self) -> None:
        """Write the held history entries, if any (before a checkpoint and at the end)."""
        if not self._pending:
            return
        with session_scope() as session:
            self._check_owner(session)
            for entry in self._pending:
                repository.record_epoch(
                    session,
                    job_id=self.job_id,
                    epoch=entry["epoch"],
                    train_loss=entry["train_loss"],
                    val_loss=entry["val_loss"],
                    metrics={k: v for k, v in entry.items() if k not in ENTRY_FIELDS},
                    seconds=entry["seconds"],
                )
        self._latest = self._pending[-1]
        self._pending = []
        self._written_at = time.monotonic()

    def progress(self, done: int, total: int, step: int | None = None) -> None:
        """Where the running epoch is, recorded at most every `progress_seconds`; a failed
        write is logged, never fatal."""
        now = time.monotonic()
        if self._pending and now - self._written_at >= BATCH_SECONDS:
            self.flush()  # held entries wait at most that long, however long this epoch is
        if now - self._progress_at < self._progress_seconds or self._lease_lost.is_set():
            return
        self._progress_at = now
        where = {"batch": min(done, total), "batches": total, "latest": self._latest}
        if step is not None:
            where["step"] = step
        try:
            with session_scope() as session:
                repository.set_progress(
                    session, job_id=self.job_id, worker=self.worker, progress=where
                )
        except Exception as exc:
            log.warning("job %s: progress not recorded: %s", self.job_id, exc)

    def cancelled(self) -> bool:
        if self._lease_lost.is_set():
            raise LeaseLost()
        if self._stopping.is_set():
            raise Released()
        with session_scope() as session:
            return repository.cancel_requested(session, job_id=self.job_id)

    def deadline(self) -> Deadline | None:
        return self._deadline

    def checkpoint(
        self,
        epoch: int,
        tensors: dict[str, torch.Tensor],
        optimizer: torch.optim.Optimizer | None,
        meta: dict[str, Any],
    ) -> None:
        if self._lease_lost.is_set():
            raise LeaseLost()
        self.flush()  # the epoch's history entry comes before its checkpoint
        relative = job_key(self.job_id, f"epoch-{epoch:05d}-{self._attempt}.safetensors")
        safe_meta = json_safe(meta)
        # Stored whole (sidecar first) before its row: a row always points at a whole file.
        # Retention deletes older checkpoints' rows in the same transaction, and their files
        # once it has committed (a crash in between leaves files, never rows without one).
        # An object store that stays unreachable through its retries fails the job.
        with self.store.writing(relative, sidecar=True) as path:
            sha = save_checkpoint(path, model_state=tensors, optimizer=optimizer, meta=safe_meta)
        metrics = safe_meta.get("metrics", {})
        try:
            with session_scope() as session:
                self._check_owner(session)
                # Keeping all: only a checkpoint this one replaces (written where the job
                # stopped inside the same epoch) is read back.
                records = repository.checkpoint_records(
                    session,
                    job_id=self.job_id,
                    epoch=epoch if self._retention.latest is None else None,
                )
                replaced = [p for e, _, p in records if e == epoch]
                others = [(e, m, p) for e, m, p in records if e != epoch]
                doomed = self._retention.doomed([(e, m) for e, m, _ in others] + [(epoch, metrics)])
                doomed_paths = [p for e, _, p in others if e in doomed] + replaced
                repository.delete_checkpoints(
                    session, job_id=self.job_id, epochs=doomed + [epoch] * bool(replaced)
                )
                repository.add_checkpoint(
                    session,
                    job_id=self.job_id,
                    epoch=epoch,
                    path=relative,
                    sha256=sha,
                    metrics=metrics,
                    removed=doomed,
                )
        except LeaseLost:
            delete_quietly(self.store, relative, sidecar=True)
            raise
        for doomed_path in doomed_paths:  # their rows are gone: a leftover is an orphan
            delete_quietly(self.store, doomed_path, sidecar=True)

    def resume(self) -> Checkpoint | None:
        """The latest checkpoint of an earlier attempt that passes its sha256 check (a file
        corrupted or swapped on disk is refused, and the one before it tried); the history
        after it is forgotten. None: start over."""
        with session_scope() as session:
            candidates = repository.checkpoints_newest_first(session, job_id=self.job_id)
        resumed: tuple[int, Checkpoint] | None = None
        for epoch, rel_path, sha in candidates:
            try:
                local = self.store.local(rel_path, sha, sidecar=True)
                resumed = epoch, load_checkpoint(local, expected_sha256=sha)
                break
            except (CorruptCheckpointError, OSError) as exc:
                log.warning("job %s: checkpoint of epoch %d refused: %s", self.job_id, epoch, exc)
        with session_scope() as session:
            repository.forget_after(
                session,
                job_id=self.job_id,
                epoch=resumed[0] if resumed else 0,
                inside=bool(resumed and resumed[1].meta.get("partial")),
            )
        if resumed is None:
            if candidates:
                log.warning("job %s: no usable checkpoint; starting over", self.job_id)
            return None
        log.info("job %s: resuming after epoch %d", self.job_id, resumed[0])
        return resumed[1]
