"""Optimizer specs: one member of the union `OptimizerSpec` per optimizer, chosen by `name`."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from models.specs.base import StrictModel, _finite

LearningRate = Annotated[float, Field(gt=0, le=10, description="Learning rate (step size), > 0.")]
WeightDecay = Annotated[
    float,
    Field(ge=0, le=10, description="L2 penalty added by the optimizer (coupled weight decay)."),
]
Eps = Annotated[
    float, Field(gt=0, le=1, description="Term added to the denominator for stability.")
]


class _OptimizerBase(StrictModel):
    @model_validator(mode="after")
    def _all_finite(self) -> _OptimizerBase:
        for name, value in self:
            if isinstance(value, float):
                _finite(value, f"optimizer.{name}")
            elif isinstance(value, tuple):
                for v in value:
                    _finite(v, f"optimizer.{name}")
        return self


class SGDSpec(_OptimizerBase):
    """Plain mini-batch gradient descent: w <- w - lr * g."""

    name: Literal["sgd"]
    lr: LearningRate = 0.01
    weight_decay: WeightDecay = 0.0


class MomentumSpec(_OptimizerBase):
    """Heavy-ball momentum: v <- mu * v + g; w <- w - lr * v."""

    name: Literal["momentum"]
    lr: LearningRate = 0.01
    momentum: float = Field(0.9, ge=0, lt=1, description="Momentum coefficient mu.")
    dampening: float = Field(0.0, ge=0, lt=1, description="Dampening applied to the new gradient.")
    weight_decay: WeightDecay = 0.0


class NesterovSpec(_OptimizerBase):
    """Nesterov accelerated gradient (PyTorch's formulation, lookahead on the momentum)."""

    name: Literal["nesterov"]
    lr: LearningRate = 0.01
    momentum: float = Field(0.9, gt=0, lt=1, description="Momentum coefficient mu (> 0).")
    weight_decay: WeightDecay = 0.0


class AdaGradSpec(_OptimizerBase):
    """AdaGrad: per-parameter steps scaled by the root of the summed squared gradients."""

    name: Literal["adagrad"]
    lr: LearningRate = 0.01
    lr_decay: float = Field(0.0, ge=0, description="Learning-rate decay per step.")
    initial_accumulator_value: float = Field(0.0, ge=0, description="Starting sum of squares.")
    eps: Eps = 1e-10
    weight_decay: WeightDecay = 0.0


class RMSPropSpec(_OptimizerBase):
    """RMSProp: steps scaled by a moving average of squared gradients."""

    name: Literal["rmsprop"]
    lr: LearningRate = 0.001
    decay_rate: float = Field(
        0.99, gt=0, lt=1, description="Decay rate (rho/alpha) of the squared-gradient average."
    )
    momentum: float = Field(0.0, ge=0, lt=1, description="Optional momentum.")
    centered: bool = Field(
        False, description="Normalise by the estimated variance of the gradient."
    )
    eps: Eps = 1e-8
    weight_decay: WeightDecay = 0.0


class AdamSpec(_OptimizerBase):
    """Adam (Kingma & Ba 2015); with `decoupled_weight_decay` it is AdamW."""

    name: Literal["adam"]
    lr: LearningRate = 0.001
    betas: tuple[float, float] = Field(
        (0.9, 0.999), description="Decay rates (beta1, beta2) of the first and second moments."
    )
    eps: Eps = 1e-8
    weight_decay: WeightDecay = 0.0
    decoupled_weight_decay: bool = Field(False, description="AdamW-style weight decay.")
    amsgrad: bool = False

    @field_validator("betas")
    @classmethod
    def _betas_in_range(cls, betas: tuple[float, float]) -> tuple[float, float]:
        for beta in betas:
            if not 0 <= beta < 1:
                raise ValueError(f"each beta must be in [0, 1), got {beta}")
        return betas


OptimizerSpec = Annotated[
    SGDSpec | MomentumSpec | NesterovSpec | AdaGradSpec | RMSPropSpec | AdamSpec,
    Field(discriminator="name", description="Optimizer, chosen by `name`."),
]
