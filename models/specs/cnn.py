"""The cnn kind's spec: a named architecture or a list of layers (each one member of the
union `LayerSpec`, chosen by `type`), plus augmentation and input normalisation."""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from models.specs.base import (
    MAX_LAYER_WIDTH,
    MAX_LAYERS,
    Activation,
    DistillationSpec,
    StrictModel,
    _finite,
)

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
    distillation: DistillationSpec | None = Field(
        None, description="Learn from a trained teacher's outputs too (classification)."
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
