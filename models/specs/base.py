"""What every spec module shares: the strict base model, the checked string types, the
finite-number check and the caps that keep one job from exhausting a worker."""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

Activation = Literal["relu", "sigmoid", "tanh", "leaky_relu"]
Task = Literal["regression", "classification", "forecasting", "reinforcement"]

# Caps that keep one job from exhausting a worker; larger runs are a deliberate setting.
MAX_EPOCHS = 10_000
MAX_BATCH_SIZE = 1_000_000
MAX_LAYER_WIDTH = 65_536
MAX_LAYERS = 64
MAX_POLY_DEGREE = 10
# Forecasting: the longest window of past steps, and the farthest horizon.
MAX_WINDOW = 10_000
MAX_HORIZON = 1_000


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _no_control_chars(value: str) -> str:
    # PostgreSQL text cannot hold NUL, and no column or id name needs control characters.
    if any(ord(ch) < 32 for ch in value):
        raise ValueError("must not contain NUL or other control characters")
    return value


Name = Annotated[str, Field(min_length=1, max_length=256), AfterValidator(_no_control_chars)]
Identifier = Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_no_control_chars)]


def _finite(value: float, name: str) -> float:
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}")
    return value


class DistillationSpec(StrictModel):
    """Knowledge distillation (Hinton, Vinyals and Dean 2015): the network learns from a
    trained teacher's softened outputs besides the labels. Each batch's loss is
    `alpha * T² * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) *
    cross-entropy(student, labels)`, T the temperature."""

    teacher_model_id: Identifier = Field(
        description="The teacher: one of your classification models (`GET /models`), trained "
        "on data of the same shape (the same columns, for a table) and the same classes. Any "
        "kind and preprocessing: its inputs are made from each training batch as predict "
        "would make them."
    )
    temperature: float = Field(
        4.0,
        gt=0,
        le=100,
        description="T: both networks' logits are divided by it before the softmax; above 1 "
        "the teacher's small probabilities (which wrong classes it finds alike) carry weight.",
    )
    alpha: float = Field(
        0.9,
        ge=0,
        le=1,
        description="Weight of the teacher's term; 1 - alpha weighs the labels' cross-entropy.",
    )
