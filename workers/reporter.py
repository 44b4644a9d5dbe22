"""The worker's side of `models.base.Reporter`: metrics and checkpoints to SQL and the
artifact store, the answer to "was this job cancelled?", and the job's deadline."""

from __future__ import annotations

import logging
from typing import Any

import torch

from models.base import Deadline, EpochRecord
from models.checkpoint import Checkpoint, CorruptCheckpointError, load_checkpoint, save_checkpoint
from models.metrics import json_safe
from service import repository
from service.db import session_scope
from service.storage import ArtifactStore

log = logging.getLogger(__name__)


class JobReporter:
    def __init__(self, job_id: str, store: ArtifactStore, deadline: Deadline | None) -> None:
        self.job_id = job_id
        self.store = store
        self._deadline = deadline

    def epoch_end(self, record: EpochRecord) -> None:
        safe = json_safe(
            {"train_loss": record.train_loss, "val_loss": record.val_loss, **record.metrics}
        )
        with session_scope() as session:
            repository.record_epoch(
                session,
                job_id=self.job_id,
                epoch=record.epoch,
                train_loss=safe.pop("train_loss"),
                val_loss=safe.pop("val_loss"),
                metrics=safe,
                seconds=record.seconds,
            )

    def cancelled(self) -> bool:
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
        path = self.store.job_dir(self.job_id) / f"epoch-{epoch:05d}.safetensors"
        safe_meta = json_safe(meta)
        sha = save_checkpoint(path, model_state=tensors, optimizer=optimizer, meta=safe_meta)
        # Recorded only after the file is in place: a row always points at a whole file.
        with session_scope() as session:
            repository.add_checkpoint(
                session,
                job_id=self.job_id,
                epoch=epoch,
                path=self.store.relative(path),
                sha256=sha,
                metrics=safe_meta.get("metrics", {}),
            )

    def resume(self) -> Checkpoint | None:
        """The latest checkpoint of an earlier attempt that passes its sha256 check (a file
        corrupted or swapped on disk is refused, and the one before it tried); the history
        after it is forgotten. None: start over."""
        with session_scope() as session:
            candidates = repository.checkpoints_newest_first(session, job_id=self.job_id)
        resumed: tuple[int, Checkpoint] | None = None
        for epoch, rel_path, sha in candidates:
            try:
                resumed = epoch, load_checkpoint(self.store.path(rel_path), expected_sha256=sha)
                break
            except (CorruptCheckpointError, OSError) as exc:
                log.warning("job %s: checkpoint of epoch %d refused: %s", self.job_id, epoch, exc)
        with session_scope() as session:
            repository.forget_after(session, job_id=self.job_id, epoch=resumed[0] if resumed else 0)
        if resumed is None:
            if candidates:
                log.warning("job %s: no usable checkpoint; starting over", self.job_id)
            return None
        log.info("job %s: resuming after epoch %d", self.job_id, resumed[0])
        return resumed[1]
