"""An in-memory `models.base.Reporter` for unit tests of the training code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from models.base import Cancelled, Deadline, EpochRecord
from models.checkpoint import Checkpoint, save_checkpoint


class MemoryReporter:
    """Keeps the history; writes checkpoints to `folder` when given; reports the job as
    cancelled once `cancel_after` records exist, or stops it with `stop` (say `Released()`)
    once `stop_after_progress` progress calls were made (batches or steps done); resumes
    from `resume_from`; gives the training loops `deadline`."""

    def __init__(
        self,
        folder: Path | None = None,
        cancel_after: int | None = None,
        deadline: Deadline | None = None,
        stop_after_progress: int | None = None,
        stop: Cancelled | None = None,
    ) -> None:
        self.folder = folder
        self.stop_after_progress, self.stop = stop_after_progress, stop
        self.job_deadline = deadline
        self.records: list[EpochRecord] = []
        self.checkpoints: list[tuple[int, Path]] = []
        self.metas: list[dict[str, Any]] = []
        self.cancel_after = cancel_after
        self.resume_from: Checkpoint | None = None
        self.progress_calls: list[tuple[int, int, int, int | None]] = []

    def epoch_end(self, record: EpochRecord) -> None:
        self.records.append(record)

    def progress(self, done: int, total: int, step: int | None = None) -> None:
        self.progress_calls.append((len(self.records), done, total, step))

    def cancelled(self) -> bool:
        if self.stop_after_progress is not None and (
            len(self.progress_calls) >= self.stop_after_progress
        ):
            if self.stop is not None:
                raise self.stop
            return True
        return self.cancel_after is not None and len(self.records) >= self.cancel_after

    def deadline(self) -> Deadline | None:
        return self.job_deadline

    def checkpoint(
        self,
        epoch: int,
        tensors: dict[str, torch.Tensor],
        optimizer: torch.optim.Optimizer | None,
        meta: dict[str, Any],
    ) -> None:
        self.metas.append(meta)
        if self.folder is None:
            return
        path = self.folder / f"epoch-{epoch}.safetensors"
        save_checkpoint(path, model_state=tensors, optimizer=optimizer, meta=meta)
        self.checkpoints.append((epoch, path))

    def resume(self) -> Checkpoint | None:
        return self.resume_from
