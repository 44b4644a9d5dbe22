"""What every model kind shares: prepared data, the reporter protocol, results, errors."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol

import torch
from torch import nn

from models.checkpoint import Checkpoint


class TrainingError(RuntimeError):
    """A job that cannot go on; the message is shown to the user as the job's error."""


class DivergedError(TrainingError):
    pass


class TimeLimitExceeded(TrainingError):
    """The job ran past its wall-clock limit; the message says how far it got."""


class InputError(ValueError):
    """A predict input that does not fit the model; the message names the problem."""


class SpecError(ValueError):
    """A job spec that cannot work on its data (a CNN layer that shrinks the images to
    nothing, a sequence model on a table); the message, naming the part, is the 422."""


class Cancelled(Exception):
    """Raised inside training when the reporter says the job was cancelled. The trainer
    writes a checkpoint of where it stopped (mid-epoch included) before letting it through,
    when `keeps_state`."""

    keeps_state = True


class Pruned(Cancelled):
    """A study's pruner stopped this trial at an epoch's end (issue 17): its metric so far
    is worse than the study's other trials' at the same epoch. It ends `pruned`; nothing
    more is saved."""

    keeps_state = False


class Released(Cancelled):
    """The worker is shutting down (SIGTERM, Ctrl-C): the job stops at the next batch,
    checkpoints where it stopped, and goes back to the queue to resume from there."""


@dataclass(frozen=True)
class Deadline:
    """A job's wall-clock limit: `seconds` from when it first started, across resumes.

    `at` is a `time.monotonic()` reading, so the training loops test it with a clock read
    and no I/O."""

    seconds: float  # the limit, as the job's error reports it
    at: float  # time.monotonic() past which the job stops

    @classmethod
    def after_start(cls, started_at: datetime, seconds: float) -> Deadline:
        """The deadline of a job that started (was first claimed) at `started_at`, UTC."""
        elapsed = (datetime.now(UTC) - started_at).total_seconds()
        return cls(seconds, time.monotonic() + seconds - max(elapsed, 0.0))

    def passed(self, now: float) -> bool:
        return now >= self.at

    def exceeded(self, progress: str) -> TimeLimitExceeded:
        """The error to raise once the deadline passed; `progress` says where the job was."""
        return TimeLimitExceeded(f"time limit: the job's {self.seconds:g} s ran out {progress}")


@dataclass
class Split:
    x: torch.Tensor  # (N, F) float32
    y: torch.Tensor  # (N,) int64 class indices, (N,) float32 standardised targets, or
    # (N, horizon) float32 for forecasting

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def to(self, device: torch.device) -> Split:
        return Split(self.x.to(device), self.y.to(device))


@dataclass(frozen=True)
class DataShape:
    """What a network is sized by: the task, one example's shape and inputs, the outputs.
    Described from a dataset's record when a job is posted (`models.describe`) and from the
    prepared tensors when it trains (`PreparedData.shape`): a kind's `config` takes either,
    and the two agree."""

    task: str
    example: tuple[int, ...]  # one example: (F,) a row, (C, H, W) an image, (T, F) a sequence
    features: int  # inputs of one example flattened, as the dense kinds see it
    outputs: int  # logits (one per class), values, or the forecast horizon


@dataclass
class PreparedData:
    """Tensors ready for training plus everything prediction needs to repeat the encoding."""

    task: str
    train: Split
    val: Split | None
    test: Split | None
    num_features: int
    num_classes: int | None  # classification only
    # Regression targets are standardised for training; predictions are mapped back.
    target_mean: float = 0.0
    target_std: float = 1.0
    preprocessing: dict[str, Any] = field(default_factory=dict)  # JSON, applied at predict
    input_schema: dict[str, Any] = field(default_factory=dict)
    output: dict[str, Any] = field(default_factory=dict)  # {"labels": [...]} or {"target": ...}
    # Reference forecasts' metrics per split, merged into the final metrics (forecasting:
    # {"test": {"naive_rmse": ..., "seasonal_naive_rmse": ...}}).
    baselines: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def num_outputs(self) -> int:
        """Network outputs: one logit per class, `horizon` values (forecasting), or one."""
        if self.task == "classification" and self.num_classes:
            return int(self.num_classes)
        return int(self.train.y.shape[1]) if self.train.y.dim() == 2 else 1

    def shape(self) -> DataShape:
        example = tuple(int(d) for d in self.train.x.shape[1:])
        return DataShape(self.task, example, self.num_features, self.num_outputs)

    def interface(self) -> dict[str, Any]:
        """What predict needs besides the weights: the task, the stored preprocessing, the
        input schema and how outputs map back to labels or values."""
        return {
            "task": self.task,
            "example_shape": list(self.shape().example),
            "num_classes": self.num_classes,
            "target_mean": self.target_mean,
            "target_std": self.target_std,
            "preprocessing": self.preprocessing,
            "input_schema": self.input_schema,
            "output": self.output,
        }

    def to(self, device: torch.device) -> PreparedData:
        """The same data with every split on `device` (moved once, before training)."""
        return replace(
            self,
            train=self.train.to(device),
            val=self.val.to(device) if self.val is not None else None,
            test=self.test.to(device) if self.test is not None else None,
        )


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float | None
    val_loss: float | None
    metrics: dict[str, Any]  # scalar metrics of this epoch, e.g. val_accuracy
    seconds: float


@dataclass
class TrainResult:
    network: nn.Module
    config: dict[str, Any]  # JSON that rebuilds `network` through the registry
    metrics: dict[str, dict[str, Any]]  # {"train": ..., "validation": ..., "test": ...}
    epochs_run: int
    # What the model bundle records besides the weights, when there is no PreparedData to
    # take it from (reinforcement learning): see PreparedData.interface.
    interface: dict[str, Any] | None = None
    # The network's outputs on each part its final metrics scored ("train", "validation",
    # "test"; the training part's sample), for what reads them after training (the gallery).
    outputs: dict[str, torch.Tensor] = field(default_factory=dict)


class Reporter(Protocol):
    """How training talks to the outside world; knows nothing of HTTP, Celery or SQL."""

    def epoch_end(self, record: EpochRecord) -> None: ...

    def progress(self, done: int, total: int, step: int | None = None) -> None:
        """Called between mini-batches (RL: environment steps): `done` of `total` in the
        running epoch (RL: since the last evaluation; `step`: steps in all). Cheap to call
        often: the reporter decides how often it records anything."""
        ...

    def cancelled(self) -> bool:
        """Whether the user cancelled the job; raises `Released` when the worker is shutting
        down (and the worker's own reasons to stop, e.g. its lease lost)."""
        ...

    def checkpoint(
        self,
        epoch: int,
        tensors: dict[str, torch.Tensor],
        optimizer: torch.optim.Optimizer | None,
        meta: dict[str, Any],
    ) -> None: ...

    def resume(self) -> Checkpoint | None: ...

    def deadline(self) -> Deadline | None:
        """When the job must stop (None: never); read once, before training starts."""
        ...


def resolve_device(requested: str) -> torch.device:
    if requested == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    if requested == "cuda":
        raise TrainingError("the job asks for device 'cuda' but this worker has no CUDA GPU")
    return torch.device("cpu")
