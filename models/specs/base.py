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
