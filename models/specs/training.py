"""The training spec: epochs and splits (supervised), environment steps (reinforcement
learning), checkpoints, early stopping, learning-rate schedule and limits."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from models.specs.base import MAX_BATCH_SIZE, MAX_EPOCHS, StrictModel, _finite


class EarlyStoppingSpec(StrictModel):
    patience: int = Field(5, ge=1, le=MAX_EPOCHS, description="Epochs without improvement to wait.")
    min_delta: float = Field(0.0, ge=0, description="Smallest decrease of val_loss that counts.")
    restore_best: bool = Field(True, description="End with the weights of the best epoch.")

    @field_validator("min_delta")
    @classmethod
    def _finite_delta(cls, value: float) -> float:
        return _finite(value, "min_delta")


class LRScheduleSpec(StrictModel):
    """How the optimizer's `lr` changes over training (a factor applied to it)."""

    name: Literal["step", "exponential", "cosine"] = Field(
        description="`step`: times `gamma` every `step_size` epochs; `exponential`: times "
        "`gamma` every epoch; `cosine`: from 1 down to `min_factor`, batch by batch."
    )
    step_size: int = Field(1, ge=1, le=MAX_EPOCHS, description="Epochs per step (`step`).")
    gamma: float = Field(0.1, gt=0, le=1, description="Decay factor (`step`, `exponential`).")
    min_factor: float = Field(0.0, ge=0, le=1, description="Final factor of `cosine`.")
    warmup_epochs: float = Field(
        0.0, ge=0, le=MAX_EPOCHS, description="Linear warm-up from 0 over this many epochs."
    )

    @model_validator(mode="after")
    def _finite_values(self) -> LRScheduleSpec:
        for name in ("gamma", "min_factor", "warmup_epochs"):
            _finite(getattr(self, name), name)
        return self


MAX_TOTAL_STEPS = 10_000_000
RL_TRAINING_FIELDS = ("total_steps", "eval_interval", "eval_episodes")
SUPERVISED_TRAINING_FIELDS = (
    "epochs",
    "batch_size",
    "validation_split",
    "test_split",
    "early_stopping",
    "score_training_rows",
)


class TrainingSpec(StrictModel):
    epochs: int = Field(10, ge=1, le=MAX_EPOCHS, description="Passes over the training part.")
    batch_size: int = Field(32, ge=1, le=MAX_BATCH_SIZE, description="Mini-batch size.")
    validation_split: float = Field(
        0.1, ge=0, lt=1, description="Fraction held out for validation each epoch (0: none)."
    )
    test_split: float = Field(
        0.1,
        ge=0,
        lt=1,
        description="Fraction held out, never trained on, evaluated once at the end (0: none). "
        "Ignored when `test_dataset_id` is given.",
    )
    seed: int = Field(0, ge=0, le=2**32 - 1, description="Seed for splits, shuffling and init.")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="`auto` uses CUDA when the worker has it."
    )
    checkpoint_every: int | None = Field(
        None,
        ge=1,
        le=MAX_EPOCHS,
        description="Also write a checkpoint every this many epochs (RL: evaluations). By "
        "default only `checkpoint_seconds` decides, and the last epoch always gets one.",
    )
    checkpoint_seconds: float | None = Field(
        60.0,
        gt=0,
        le=86_400,
        description="Write a checkpoint once this many seconds have passed since the "
        "previous one: at the end of the epoch (RL: evaluation) when one ends then, else "
        "after the batch (RL: step) under way, where the resume goes on from (null: by "
        "epochs only). A job resumed after its worker died loses at most about this much "
        "training.",
    )
    keep_checkpoints: int | None = Field(
        2,
        ge=1,
        le=MAX_EPOCHS,
        description="Keep the latest this many checkpoints and delete older ones' files and "
        "rows as training goes (null: keep all). With `keep_best_checkpoint` the best one is "
        "kept as well. The final model is a file of its own and never deleted by this.",
    )
    keep_best_checkpoint: bool = Field(
        True,
        description="Also keep the checkpoint with the lowest validation loss (RL: the highest "
        "evaluation return).",
    )
    score_training_rows: int | None = Field(
        10_000,
        ge=1,
        le=2**31,
        description="The final metrics of the training part are computed on at most this "
        "many of its rows, drawn at random with the job's seed (as H2O's "
        "`score_training_samples`): scoring a large training set whole costs almost another "
        "epoch. The sample's size is in `metrics.train.scored_rows`. Null: every row. The "
        "validation and test parts are always scored whole.",
    )
    early_stopping: EarlyStoppingSpec | None = Field(
        None, description="Stop when validation loss stops improving (needs validation_split > 0)."
    )
    lr_schedule: LRScheduleSpec | None = Field(
        None, description="Learning-rate schedule (default: the optimizer's `lr` throughout)."
    )
    clip_grad_norm: float | None = Field(
        None,
        gt=0,
        le=1e6,
        description="Rescale the gradients so their global L2 norm is at most this (RNNs; "
        "DQN defaults to 10).",
    )
    mixed_precision: bool = Field(
        False,
        description="Run the training forward pass and loss in bfloat16 autocast (weights, "
        "gradients and optimizer state stay float32). Worth it on a recent GPU; evaluation "
        "stays float32.",
    )
    time_limit_seconds: float | None = Field(
        None,
        gt=0,
        description="Wall-clock seconds the job may run, counted from when it first started "
        "(a job resumed after a worker crash keeps counting); past it the job fails with "
        "`TimeLimitExceeded`. Default and maximum: the service's `KEIKO_MAX_JOB_SECONDS`.",
    )
    # Reinforcement learning (dqn, q_learning, sarsa) counts environment steps, not epochs.
    total_steps: int = Field(
        50_000, ge=1, le=MAX_TOTAL_STEPS, description="RL: environment steps to train for."
    )
    eval_interval: int | None = Field(
        None,
        ge=1,
        le=MAX_TOTAL_STEPS,
        description="RL: environment steps between greedy evaluations (default: total_steps / "
        "20). Each evaluation is one entry of the job's `history`.",
    )
    eval_episodes: int = Field(
        10, ge=1, le=1_000, description="RL: greedy episodes per evaluation."
    )

    def changed(self, names: tuple[str, ...]) -> list[str]:
        """Those of `names` that differ from their defaults (a stored spec, dumped in full and
        validated again, must pass the same checks: hence values, not `model_fields_set`)."""
        fields = type(self).model_fields
        return [name for name in names if getattr(self, name) != fields[name].get_default()]

    @model_validator(mode="after")
    def _splits_leave_training_data(self) -> TrainingSpec:
        _finite(self.validation_split, "validation_split")
        _finite(self.test_split, "test_split")
        if self.validation_split + self.test_split >= 0.95:
            raise ValueError("validation_split + test_split must leave at least 5% for training")
        if self.early_stopping is not None and self.validation_split == 0:
            raise ValueError("early_stopping needs validation_split > 0")
        if self.clip_grad_norm is not None:
            _finite(self.clip_grad_norm, "clip_grad_norm")
        if self.time_limit_seconds is not None:
            _finite(self.time_limit_seconds, "time_limit_seconds")
        return self
