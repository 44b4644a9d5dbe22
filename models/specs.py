"""Job specifications: what a user posts to `POST /jobs`, validated before any code runs.

Every model kind is one member of the discriminated union `ModelSpec` (on `kind`), and
every optimizer one member of `OptimizerSpec` (on `name`), so a field that does not
belong to the chosen variant is refused instead of silently ignored.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

Activation = Literal["relu", "sigmoid", "tanh", "leaky_relu"]
Task = Literal["regression", "classification"]

# Caps that keep one job from exhausting a worker; larger runs are a deliberate setting.
MAX_EPOCHS = 10_000
MAX_BATCH_SIZE = 1_000_000
MAX_LAYER_WIDTH = 65_536
MAX_LAYERS = 64
MAX_POLY_DEGREE = 10


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


class EarlyStoppingSpec(StrictModel):
    patience: int = Field(5, ge=1, le=MAX_EPOCHS, description="Epochs without improvement to wait.")
    min_delta: float = Field(0.0, ge=0, description="Smallest decrease of val_loss that counts.")
    restore_best: bool = Field(True, description="End with the weights of the best epoch.")

    @field_validator("min_delta")
    @classmethod
    def _finite_delta(cls, value: float) -> float:
        return _finite(value, "min_delta")


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
    checkpoint_every: int = Field(
        1, ge=1, le=MAX_EPOCHS, description="Checkpoint period in epochs."
    )
    early_stopping: EarlyStoppingSpec | None = Field(
        None, description="Stop when validation loss stops improving (needs validation_split > 0)."
    )

    @model_validator(mode="after")
    def _splits_leave_training_data(self) -> TrainingSpec:
        _finite(self.validation_split, "validation_split")
        _finite(self.test_split, "test_split")
        if self.validation_split + self.test_split >= 0.95:
            raise ValueError("validation_split + test_split must leave at least 5% for training")
        if self.early_stopping is not None and self.validation_split == 0:
            raise ValueError("early_stopping needs validation_split > 0")
        return self


class LinearSpec(StrictModel):
    """Linear, logistic (two classes) or softmax regression."""

    kind: Literal["linear"]
    solver: Literal["normal_equation", "sgd"] | None = Field(
        None,
        description="`normal_equation` solves (XᵀX + λI)w = Xᵀy in closed form (regression only, "
        "no l1); `sgd` is mini-batch gradient descent with the chosen optimizer. "
        "Default: normal_equation for regression without l1, else sgd.",
    )
    degree: int = Field(1, ge=1, le=MAX_POLY_DEGREE, description="Polynomial feature degree.")
    l1: float = Field(0.0, ge=0, description="L1 (lasso) penalty coefficient.")
    l2: float = Field(0.0, ge=0, description="L2 (ridge) penalty coefficient.")
    fit_intercept: bool = Field(True, description="Learn a bias term (never penalised).")

    @model_validator(mode="after")
    def _finite_penalties(self) -> LinearSpec:
        _finite(self.l1, "l1")
        _finite(self.l2, "l2")
        if self.solver == "normal_equation" and self.l1 > 0:
            raise ValueError(
                "l1 has no closed-form solution: use solver 'sgd' for lasso/elastic net"
            )
        return self

    def resolved_solver(self, task: Task) -> Literal["normal_equation", "sgd"]:
        if self.solver is not None:
            return self.solver
        return "normal_equation" if task == "regression" and self.l1 == 0 else "sgd"


class MLPSpec(StrictModel):
    """Multi-layer perceptron: Linear -> [BatchNorm] -> activation -> [Dropout], repeated."""

    kind: Literal["mlp"]
    hidden_layers: list[Annotated[int, Field(ge=1, le=MAX_LAYER_WIDTH)]] = Field(
        default_factory=lambda: [64, 32],
        max_length=MAX_LAYERS,
        description="Width of each hidden layer.",
    )
    activation: Activation = "relu"
    dropout: float = Field(
        0.0, ge=0, lt=1, description="Dropout probability after each hidden layer."
    )
    batch_norm: bool = Field(False, description="Batch normalisation before each activation.")
    init: Literal["xavier", "he"] | None = Field(
        None, description="Weight init; default He for relu/leaky_relu, Xavier for sigmoid/tanh."
    )

    @field_validator("dropout")
    @classmethod
    def _finite_dropout(cls, value: float) -> float:
        return _finite(value, "dropout")

    def resolved_init(self) -> Literal["xavier", "he"]:
        if self.init is not None:
            return self.init
        return "he" if self.activation in ("relu", "leaky_relu") else "xavier"


ModelSpec = Annotated[
    LinearSpec | MLPSpec,
    Field(discriminator="kind", description="The model, chosen by `kind`."),
]


class JobSpec(StrictModel):
    """Everything a training job needs; stored verbatim with the job."""

    dataset_id: Identifier = Field(description="Dataset to train on.")
    test_dataset_id: Identifier | None = Field(
        None, description="Separate dataset used only for the final test."
    )
    task: Task = Field(description="`regression` or `classification`.")
    target: Name | None = Field(
        None,
        description="Target column (tables). Arrays (NPZ) use `y` and leave this empty.",
    )
    features: list[Name] | None = Field(
        None,
        max_length=100_000,
        description="Input columns (default: every column but the target).",
    )
    model: ModelSpec
    optimizer: OptimizerSpec = Field(
        default_factory=lambda: AdamSpec(name="adam"), description="Default: Adam, lr 0.001."
    )
    training: TrainingSpec = Field(default_factory=TrainingSpec)

    @model_validator(mode="after")
    def _consistent(self) -> JobSpec:
        model = self.model
        closed_form = isinstance(model, LinearSpec) and model.solver == "normal_equation"
        if closed_form and self.task == "classification":
            raise ValueError(
                "logistic/softmax regression has no closed form: use solver 'sgd' "
                "for classification"
            )
        if isinstance(model, MLPSpec) and model.batch_norm and self.training.batch_size < 2:
            raise ValueError("batch_norm needs batch_size of at least 2")
        if self.features is not None:
            if len(set(self.features)) != len(self.features):
                raise ValueError("features contains a column twice")
            if self.target is not None and self.target in self.features:
                raise ValueError(f"target {self.target!r} cannot also be a feature")
        return self
