"""Job specifications: what a user posts to `POST /jobs`, validated before any code runs.

Every model kind is one member of the discriminated union `ModelSpec` (on `kind`), and
every optimizer one member of `OptimizerSpec` (on `name`), so a field that does not
belong to the chosen variant is refused instead of silently ignored.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal, Union, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.fields import FieldInfo

Activation = Literal["relu", "sigmoid", "tanh", "leaky_relu"]
Task = Literal["regression", "classification", "forecasting", "reinforcement"]

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
MAX_REPLAY_BUFFER = 2_000_000
RL_TRAINING_FIELDS = ("total_steps", "eval_interval", "eval_episodes")
SUPERVISED_TRAINING_FIELDS = (
    "epochs",
    "batch_size",
    "validation_split",
    "test_split",
    "early_stopping",
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


# Caps for convolutional networks (per layer and per network).
MAX_CHANNELS = 4096
MAX_KERNEL = 31
MAX_CNN_LAYERS = 100
MAX_PADDING = 64


class ConvLayerSpec(StrictModel):
    """2-D convolution; `depthwise_separable` makes it a depthwise conv plus a 1x1 pointwise."""

    type: Literal["conv"]
    out_channels: int = Field(ge=1, le=MAX_CHANNELS, description="Output channels (filters).")
    kernel_size: int = Field(ge=1, le=MAX_KERNEL, description="Square kernel side f.")
    stride: int = Field(1, ge=1, le=MAX_KERNEL, description="Step s between kernel positions.")
    padding: int | Literal["same"] = Field(
        0,
        description="Zero padding p on each side, or `same` (output as large as the input; "
        "needs stride 1).",
    )
    dilation: int = Field(1, ge=1, le=MAX_KERNEL, description="Spacing d between kernel taps.")
    groups: int = Field(
        1,
        ge=1,
        le=MAX_CHANNELS,
        description="Grouped convolution; must divide the input and output channels.",
    )
    depthwise_separable: bool = Field(
        False,
        description="Depthwise conv (one filter per input channel) followed by a 1x1 pointwise "
        "conv to `out_channels` (MobileNet); far fewer weights than a full conv.",
    )

    @field_validator("padding")
    @classmethod
    def _padding_in_range(cls, value: int | str) -> int | str:
        if isinstance(value, int) and not 0 <= value <= MAX_PADDING:
            raise ValueError(f"padding must be 'same' or between 0 and {MAX_PADDING}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ConvLayerSpec:
        if self.padding == "same" and self.stride != 1:
            raise ValueError("padding 'same' needs stride 1")
        if self.depthwise_separable and self.groups != 1:
            raise ValueError("depthwise_separable sets its own groups: leave groups at 1")
        return self


class BatchNormLayerSpec(StrictModel):
    """Batch normalisation over channels (BatchNorm2d)."""

    type: Literal["batch_norm"]


class ActivationLayerSpec(StrictModel):
    """Element-wise non-linearity."""

    type: Activation


class PoolLayerSpec(StrictModel):
    """Max or average pooling over square windows."""

    type: Literal["max_pool", "avg_pool"]
    kernel_size: int = Field(2, ge=1, le=MAX_KERNEL, description="Square window side.")
    stride: int | None = Field(
        None, ge=1, le=MAX_KERNEL, description="Step between windows (default: kernel_size)."
    )
    padding: int = Field(0, ge=0, le=MAX_KERNEL // 2, description="Padding on each side.")

    @model_validator(mode="after")
    def _padding_at_most_half_kernel(self) -> PoolLayerSpec:
        if self.padding > self.kernel_size // 2:
            raise ValueError("pool padding must be at most half of kernel_size")
        return self


class DropoutLayerSpec(StrictModel):
    """Zeroes activations with probability p during training."""

    type: Literal["dropout"]
    p: float = Field(0.25, ge=0, lt=1, description="Drop probability.")

    @field_validator("p")
    @classmethod
    def _finite_p(cls, value: float) -> float:
        return _finite(value, "dropout p")


class GlobalAvgPoolLayerSpec(StrictModel):
    """Averages each channel over the whole feature map, leaving C x 1 x 1."""

    type: Literal["global_avg_pool"]


LayerSpec = Annotated[
    ConvLayerSpec
    | BatchNormLayerSpec
    | ActivationLayerSpec
    | PoolLayerSpec
    | DropoutLayerSpec
    | GlobalAvgPoolLayerSpec,
    Field(discriminator="type", description="One layer of the convolutional part, by `type`."),
]


class ElasticSpec(StrictModel):
    """Elastic distortion (Simard et al. 2003): a random displacement field per image."""

    alpha: float = Field(
        34.0, ge=0, le=1000, description="Displacement scale in pixels (Simard: about 34)."
    )
    sigma: float = Field(
        4.0, gt=0, le=64, description="Gaussian smoothing of the field in pixels (Simard: 4)."
    )

    @model_validator(mode="after")
    def _finite_values(self) -> ElasticSpec:
        _finite(self.alpha, "elastic.alpha")
        _finite(self.sigma, "elastic.sigma")
        return self


class AugmentationSpec(StrictModel):
    """Random distortions of training images, drawn afresh for every image of every batch."""

    rotation: float = Field(0.0, ge=0, le=180, description="Rotate by up to ± degrees.")
    translate: float = Field(
        0.0, ge=0, le=0.5, description="Shift by up to ± this fraction of the width/height."
    )
    scale: tuple[float, float] | None = Field(
        None, description="Zoom factor range [min, max] with min <= 1 <= max (e.g. [0.9, 1.1])."
    )
    shear: float = Field(0.0, ge=0, lt=90, description="Shear along x by up to ± degrees.")
    elastic: ElasticSpec | None = Field(None, description="Elastic distortion, or none.")
    probability: float = Field(
        1.0,
        gt=0,
        le=1,
        description="Chance that a training image is distorted at all; the others are seen "
        "unchanged (torchvision's RandomApply). 1 distorts every image.",
    )

    @field_validator("scale")
    @classmethod
    def _scale_around_one(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None:
            low, high = value
            if not (0 < low <= 1 <= high <= 4):
                raise ValueError("scale must be [min, max] with 0 < min <= 1 <= max <= 4")
        return value

    @model_validator(mode="after")
    def _finite_values(self) -> AugmentationSpec:
        _finite(self.rotation, "rotation")
        _finite(self.translate, "translate")
        _finite(self.shear, "shear")
        _finite(self.probability, "probability")
        return self


class NormalizeSpec(StrictModel):
    """Per-channel standardisation (x - mean) / std of the input images."""

    mean: list[float] = Field(min_length=1, max_length=MAX_CHANNELS, description="Per channel.")
    std: list[float] = Field(min_length=1, max_length=MAX_CHANNELS, description="Per channel, > 0.")

    @model_validator(mode="after")
    def _valid(self) -> NormalizeSpec:
        if len(self.mean) != len(self.std):
            raise ValueError("normalize.mean and normalize.std need one value per channel each")
        for value in self.mean:
            _finite(value, "normalize.mean")
        for value in self.std:
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"normalize.std values must be finite and > 0, got {value}")
        return self


class CNNSpec(StrictModel):
    """Convolutional network: a named architecture, or a list of layers plus a dense head."""

    kind: Literal["cnn"]
    architecture: Literal["lenet5", "simple", "resnet"] | None = Field(
        None,
        description="`lenet5` (LeCun 1998), `simple` (PyTorch's MNIST example) or `resnet` "
        "(a small ResNet of BasicBlocks). Give this or `layers`, not both.",
    )
    layers: list[LayerSpec] | None = Field(
        None,
        min_length=1,
        max_length=MAX_CNN_LAYERS,
        description="The convolutional part, layer by layer; flattened into the dense head.",
    )
    head: list[Annotated[int, Field(ge=1, le=MAX_LAYER_WIDTH)]] = Field(
        default_factory=list,
        max_length=MAX_LAYERS,
        description="Hidden widths of the dense head after `layers` (architectures bring their "
        "own head).",
    )
    head_dropout: float = Field(
        0.0, ge=0, lt=1, description="Dropout after each hidden layer of the head."
    )
    activation: Activation = Field(
        "relu", description="Activation of the dense head (and of every lenet5 layer)."
    )
    augmentation: AugmentationSpec | None = Field(
        None, description="Training-time augmentation (never applied to validation or test)."
    )
    normalize: NormalizeSpec | None = Field(
        None,
        description="Per-channel mean and std; default: computed from the training images.",
    )

    @field_validator("head_dropout")
    @classmethod
    def _finite_dropout(cls, value: float) -> float:
        return _finite(value, "head_dropout")

    @model_validator(mode="after")
    def _architecture_or_layers(self) -> CNNSpec:
        if (self.architecture is None) == (self.layers is None):
            raise ValueError("give exactly one of `architecture` and `layers`")
        if self.architecture is not None and (self.head or self.head_dropout):
            raise ValueError(
                f"architecture {self.architecture!r} has its own head: "
                "`head` and `head_dropout` apply to `layers` only"
            )
        return self

    def uses_batch_norm(self) -> bool:
        if self.architecture is not None:
            return self.architecture == "resnet"
        return any(isinstance(layer, BatchNormLayerSpec) for layer in self.layers or [])


class RNNSpec(StrictModel):
    """Recurrent network over (N, T, F) sequences; the last step's hidden state (both
    directions' when bidirectional) feeds a dense head."""

    kind: Literal["rnn"]
    cell: Literal["rnn", "lstm", "gru"] = Field("lstm", description="Elman RNN, LSTM or GRU.")
    hidden_size: int = Field(64, ge=1, le=MAX_LAYER_WIDTH, description="Units per layer.")
    num_layers: int = Field(1, ge=1, le=MAX_LAYERS, description="Stacked recurrent layers.")
    bidirectional: bool = Field(False, description="Also read each sequence backwards.")
    dropout: float = Field(
        0.0, ge=0, lt=1, description="Dropout between stacked layers (needs num_layers > 1)."
    )
    nonlinearity: Literal["tanh", "relu"] = Field(
        "tanh", description="Activation of the plain `rnn` cell (LSTM and GRU have their own)."
    )
    head: list[Annotated[int, Field(ge=1, le=MAX_LAYER_WIDTH)]] = Field(
        default_factory=list, max_length=MAX_LAYERS, description="Hidden widths of the head."
    )
    activation: Activation = Field("relu", description="Activation of the head's layers.")

    @model_validator(mode="after")
    def _consistent(self) -> RNNSpec:
        _finite(self.dropout, "dropout")
        if self.dropout > 0 and self.num_layers == 1:
            raise ValueError("dropout acts between stacked layers: it needs num_layers > 1")
        if self.cell != "rnn" and self.nonlinearity != "tanh":
            raise ValueError(f"nonlinearity applies to the plain rnn cell, not {self.cell}")
        return self


MAX_WINDOW = 10_000
MAX_HORIZON = 1_000

# --- reinforcement learning ---------------------------------------------------------------

GRID_CELLS = "SG.X#"


class GridWorldOptions(StrictModel):
    """The built-in grid world. With no options it is the course's example: a 2x3 grid, start
    top left, -20 for entering the cell to its right, -1 for any other ordinary cell, +10 for
    the bottom-right cell, which ends the episode."""

    layout: list[Annotated[str, Field(min_length=1, max_length=64)]] | None = Field(
        None,
        min_length=1,
        max_length=64,
        description="Rows of cells: `S` start (one), `G` goal (ends the episode), `X` penalty, "
        "`#` wall (cannot be entered), `.` ordinary. Default: the course's `SX.` / `..G`.",
    )
    rows: int | None = Field(
        None,
        ge=1,
        le=64,
        description="Instead of `layout`: an empty grid, S top left, G bottom right.",
    )
    cols: int | None = Field(None, ge=1, le=64, description="Columns, with `rows`.")
    step_reward: float = Field(-1.0, ge=-1e6, le=1e6, description="Entering an ordinary cell.")
    penalty_reward: float = Field(-20.0, ge=-1e6, le=1e6, description="Entering an `X` cell.")
    goal_reward: float = Field(10.0, ge=-1e6, le=1e6, description="Entering a `G` cell.")
    slip: float = Field(
        0.0, ge=0, le=1, description="Chance that a move goes in a random direction instead."
    )
    max_steps: int = Field(100, ge=1, le=100_000, description="Steps before an episode is cut.")

    @model_validator(mode="after")
    def _valid_grid(self) -> GridWorldOptions:
        for name in ("step_reward", "penalty_reward", "goal_reward", "slip"):
            _finite(getattr(self, name), name)
        if self.layout is not None and (self.rows is not None or self.cols is not None):
            raise ValueError("give either layout or rows and cols, not both")
        if (self.rows is None) != (self.cols is None):
            raise ValueError("rows and cols go together")
        if self.rows is not None and self.cols is not None and self.rows * self.cols < 2:
            raise ValueError("a grid needs at least 2 cells")
        if self.layout is not None:
            width = len(self.layout[0])
            if any(len(row) != width for row in self.layout):
                raise ValueError("layout rows must all have the same length")
            cells = "".join(self.layout)
            unknown = sorted(set(cells) - set(GRID_CELLS))
            if unknown:
                raise ValueError(f"layout has unknown cells {unknown}; use S, G, X, # and .")
            if cells.count("S") != 1 or "G" not in cells:
                raise ValueError("layout needs exactly one S and at least one G")
        return self

    def resolved_layout(self) -> list[str]:
        if self.layout is not None:
            return list(self.layout)
        if self.rows is not None and self.cols is not None:
            grid = [["."] * self.cols for _ in range(self.rows)]
            grid[0][0], grid[-1][-1] = "S", "G"
            return ["".join(row) for row in grid]
        return ["SX.", "..G"]


class ExplorationSpec(StrictModel):
    """Epsilon-greedy exploration: epsilon falls linearly from `start` to `end` over the first
    `fraction` of training.total_steps, then stays at `end`."""

    start: float = Field(1.0, ge=0, le=1)
    end: float = Field(0.05, ge=0, le=1)
    fraction: float = Field(0.1, ge=0, le=1)

    @model_validator(mode="after")
    def _finite_values(self) -> ExplorationSpec:
        for name in ("start", "end", "fraction"):
            _finite(getattr(self, name), name)
        return self


class _EnvironmentSpec(StrictModel):
    env: Annotated[str, Field(min_length=1, max_length=128), AfterValidator(_no_control_chars)] = (
        Field(
            "GridWorld",
            description="A registered gymnasium environment id (e.g. `CartPole-v1`, "
            "`Acrobot-v1`, `MountainCar-v0`) or the built-in `GridWorld`.",
        )
    )
    env_options: GridWorldOptions | None = Field(
        None, description="GridWorld only: its layout, rewards, slip and episode length."
    )
    gamma: float = Field(0.99, ge=0, le=1, description="Discount factor.")
    exploration: ExplorationSpec = Field(default_factory=ExplorationSpec)

    @model_validator(mode="after")
    def _env_options_for_grid(self) -> _EnvironmentSpec:
        _finite(self.gamma, "gamma")
        if self.env_options is not None and self.env != "GridWorld":
            raise ValueError("env_options apply to the built-in GridWorld only")
        if ":" in self.env:
            raise ValueError("env must be a registered environment id, not a module path")
        return self


class DQNSpec(_EnvironmentSpec):
    """Deep Q-network (Mnih et al. 2015): experience replay, a target network, optional
    reward clipping; Double DQN and a dueling head as options."""

    kind: Literal["dqn"]
    env: Annotated[str, Field(min_length=1, max_length=128), AfterValidator(_no_control_chars)] = (
        Field("CartPole-v1", description=_EnvironmentSpec.model_fields["env"].description)
    )
    hidden_layers: list[Annotated[int, Field(ge=1, le=MAX_LAYER_WIDTH)]] = Field(
        default_factory=lambda: [256, 256],
        max_length=MAX_LAYERS,
        description="Hidden widths of the Q-network.",
    )
    activation: Activation = "relu"
    dueling: bool = Field(False, description="Separate value and advantage streams.")
    double_dqn: bool = Field(
        True,
        description="Pick the next action with the online network, value it with the "
        "target network (van Hasselt et al. 2016).",
    )
    buffer_size: int = Field(
        100_000, ge=1, le=MAX_REPLAY_BUFFER, description="Replay buffer capacity (transitions)."
    )
    learning_starts: int = Field(
        1_000, ge=0, le=MAX_TOTAL_STEPS, description="Transitions collected before learning."
    )
    batch_size: int = Field(64, ge=1, le=65_536, description="Transitions per gradient step.")
    train_freq: int = Field(
        4, ge=1, le=100_000, description="Environment steps between training rounds."
    )
    gradient_steps: int = Field(1, ge=1, le=10_000, description="Gradient steps per round.")
    target_update_interval: int = Field(
        1_000,
        ge=1,
        le=MAX_TOTAL_STEPS,
        description="Environment steps between target-network updates (a copy, or a soft "
        "update with `tau`).",
    )
    tau: float | None = Field(
        None, gt=0, le=1, description="Soft update target <- tau online + (1 - tau) target."
    )
    reward_clipping: bool = Field(False, description="Clip rewards to [-1, 1] for learning.")
    loss: Literal["huber", "mse"] = Field("huber", description="TD-error loss.")
    num_envs: int = Field(1, ge=1, le=256, description="Environments stepped side by side.")
    keep_best: bool = Field(
        True, description="The model is the network of the best evaluation, not the last one."
    )

    @model_validator(mode="after")
    def _finite_tau(self) -> DQNSpec:
        if self.tau is not None:
            _finite(self.tau, "tau")
        return self


class TabularSpec(_EnvironmentSpec):
    """Tabular Q-learning (off-policy) or SARSA (on-policy) on an environment with discrete
    observations; the learned Q-table is the model."""

    kind: Literal["q_learning", "sarsa"]
    alpha: float = Field(0.1, gt=0, le=1, description="Step size of the tabular update.")
    initial_q: float = Field(0.0, ge=-1e6, le=1e6, description="Starting value of every entry.")

    @model_validator(mode="after")
    def _finite_values(self) -> TabularSpec:
        _finite(self.alpha, "alpha")
        _finite(self.initial_q, "initial_q")
        return self


RL_KINDS = ("dqn", "q_learning", "sarsa")

MODEL_FIELD = Field(discriminator="kind", description="The model, chosen by `kind`.")
ModelSpec = Annotated[LinearSpec | MLPSpec | CNNSpec | RNNSpec | DQNSpec | TabularSpec, MODEL_FIELD]
# The union's members at run time: Keiko's own, then those of kinds registered from outside
# (`add_model_spec`), which static types do not know of.
MODEL_SPECS: list[type[BaseModel]] = list(get_args(get_args(ModelSpec)[0]))


class JobSpec(StrictModel):
    """Everything a training job needs; stored verbatim with the job."""

    dataset_id: Identifier | None = Field(
        None, description="Dataset to train on (none for dqn, q_learning and sarsa)."
    )
    test_dataset_id: Identifier | None = Field(
        None, description="Separate dataset used only for the final test."
    )
    task: Task = Field(
        description="`regression`, `classification`, `forecasting` (a table time series) or "
        "`reinforcement` (dqn, q_learning and sarsa; the default for them)."
    )
    target: Name | None = Field(
        None,
        description="Target column (tables). Arrays (NPZ) use `y` and leave this empty.",
    )
    features: list[Name] | None = Field(
        None,
        max_length=100_000,
        description="Input columns (default: every column but the target).",
    )
    window: int | None = Field(
        None, ge=1, le=MAX_WINDOW, description="Forecasting: past steps the model sees."
    )
    horizon: int | None = Field(
        None, ge=1, le=MAX_HORIZON, description="Forecasting: steps ahead to predict (default 1)."
    )
    time_column: Name | None = Field(
        None,
        description="Forecasting: column giving the time order (numbers or dates); default: the "
        "file's row order. It is not an input.",
    )
    seasonal_period: int | None = Field(
        None,
        ge=1,
        le=MAX_WINDOW,
        description="Forecasting: season length in steps, for the seasonal-naive baseline metric.",
    )
    model: ModelSpec
    optimizer: OptimizerSpec = Field(
        default_factory=lambda: AdamSpec(name="adam"), description="Default: Adam, lr 0.001."
    )
    training: TrainingSpec = Field(default_factory=TrainingSpec)

    @model_validator(mode="before")
    @classmethod
    def _reinforcement_task_by_default(cls, data: object) -> object:
        if isinstance(data, dict) and "task" not in data:
            model = data.get("model")
            if isinstance(model, dict) and model.get("kind") in RL_KINDS:
                return {**data, "task": "reinforcement"}
        return data

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
        if isinstance(model, CNNSpec) and model.uses_batch_norm() and self.training.batch_size < 2:
            raise ValueError("batch_norm (and resnet) needs batch_size of at least 2")
        self._check_forecasting()
        self._check_reinforcement()
        if self.features is not None:
            if len(set(self.features)) != len(self.features):
                raise ValueError("features contains a column twice")
            if self.target is not None and self.target in self.features:
                raise ValueError(f"target {self.target!r} cannot also be a feature")
        return self

    def _check_forecasting(self) -> None:
        forecast_fields = {
            "window": self.window,
            "horizon": self.horizon,
            "time_column": self.time_column,
            "seasonal_period": self.seasonal_period,
        }
        if self.task != "forecasting":
            given = [name for name, value in forecast_fields.items() if value is not None]
            if given:
                raise ValueError(f"{', '.join(given)} belong to task 'forecasting' only")
            return
        if self.window is None or self.target is None:
            raise ValueError("task 'forecasting' needs 'target' (the column) and 'window'")
        if not isinstance(self.model, RNNSpec | MLPSpec):
            raise ValueError(
                f"task 'forecasting' trains an rnn or an mlp on windows, not {self.model.kind}"
            )
        if self.time_column is not None and self.time_column in (
            self.target,
            *(self.features or []),
        ):
            raise ValueError(f"time_column {self.time_column!r} cannot also be an input")
        if self.seasonal_period is not None and self.seasonal_period > self.window:
            raise ValueError(
                f"seasonal_period ({self.seasonal_period}) cannot exceed window ({self.window}): "
                "the seasonal-naive baseline reads one season back from the window"
            )

    def _check_reinforcement(self) -> None:
        if not isinstance(self.model, DQNSpec | TabularSpec):
            if self.dataset_id is None:
                raise ValueError(f"dataset_id is required for the {self.model.kind} kind")
            if self.task == "reinforcement":
                raise ValueError("task 'reinforcement' needs kind dqn, q_learning or sarsa")
            given = self.training.changed(RL_TRAINING_FIELDS)
            if given:
                raise ValueError(
                    f"training.{', training.'.join(given)} belong to reinforcement learning "
                    "(kinds dqn, q_learning, sarsa)"
                )
            return
        kind = self.model.kind
        if self.task != "reinforcement":
            raise ValueError(f"kind {kind} learns from an environment: task is 'reinforcement'")
        if self.dataset_id is not None or self.test_dataset_id is not None:
            raise ValueError(f"kind {kind} learns from its environment and takes no dataset")
        given = self.training.changed(SUPERVISED_TRAINING_FIELDS)
        if given:
            raise ValueError(
                f"training.{', training.'.join(given)} do not apply to kind {kind}: it counts "
                "training.total_steps (DQN's batch_size is model.batch_size)"
            )
        if isinstance(self.model, TabularSpec) and self.optimizer != AdamSpec(name="adam"):
            raise ValueError(f"kind {kind} updates its Q-table with model.alpha, not an optimizer")
        if self.training.eval_interval is not None and (
            self.training.eval_interval > self.training.total_steps
        ):
            raise ValueError("training.eval_interval cannot exceed training.total_steps")

    @property
    def resolved_eval_interval(self) -> int:
        """Environment steps between evaluations: as given, or a 20th of the run."""
        training = self.training
        return training.eval_interval or max(1, training.total_steps // 20)

    @property
    def resolved_horizon(self) -> int:
        return self.horizon or 1


def add_model_spec(spec: type[BaseModel]) -> None:
    """Make `spec` (a model kind's, with a `kind: Literal[...]` field) one more member of
    `JobSpec.model`'s union, for a kind registered from outside Keiko (`models.registry`).
    Rebuilds `JobSpec` in place, so every later validation and the OpenAPI schema know it;
    an API route built before this call would not, which is why plugins load first."""
    if spec in MODEL_SPECS:
        return
    kind = spec.model_fields["kind"].annotation
    taken = {get_args(m.model_fields["kind"].annotation)[0] for m in MODEL_SPECS}
    if not get_args(kind) or get_args(kind)[0] in taken:
        raise ValueError(f"{spec.__name__}.kind must be a Literal naming a new kind")
    MODEL_SPECS.append(spec)
    members: Any = Union.__getitem__(tuple(MODEL_SPECS))
    annotation: Any = Annotated[members, MODEL_FIELD]
    JobSpec.model_fields["model"] = FieldInfo.from_annotation(annotation)
    JobSpec.model_rebuild(force=True)
