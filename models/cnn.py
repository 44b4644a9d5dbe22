"""Convolutional networks: a stack of layers from the spec, LeNet-5, PyTorch's MNIST net, or a
small ResNet; each followed by a dense head.

Every feature-map shape is planned from the spec before anything is built, so a stack that
shrinks the image to nothing is refused at submission with the layer named, not deep inside
a worker. Augmentation draws its distortion per image, on the training device.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import TypeAdapter
from torch import nn

from models.base import DataShape, PreparedData, Reporter, SpecError, TrainingError, TrainResult
from models.blocks import activation_layer, dense_head, init_by_activation
from models.describe import DataDescription
from models.distillation import Teacher, distiller_for
from models.kind import ModelKind, Sizing
from models.loop import train_network
from models.prepare import DataSource, prepare_data
from models.specs import (
    AugmentationSpec,
    BatchNormLayerSpec,
    CNNSpec,
    ConvLayerSpec,
    DropoutLayerSpec,
    GlobalAvgPoolLayerSpec,
    JobSpec,
    LayerSpec,
    PoolLayerSpec,
)

Shape = tuple[int, int, int]  # (channels, height, width)
_LAYERS: TypeAdapter[list[LayerSpec]] = TypeAdapter(list[LayerSpec])

RESNET_WIDTHS = (16, 32, 64)  # channels of the three stages (He et al. 2016, CIFAR ResNets)
RESNET_BLOCKS = 2  # BasicBlocks per stage: 6n+2 = 14 layers


# --- shapes -------------------------------------------------------------------------------


def conv_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int = 1) -> int:
    """Output side of a convolution or pooling: floor((n + 2p - d(f - 1) - 1) / s) + 1."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def _describe(layer: LayerSpec) -> str:
    if isinstance(layer, ConvLayerSpec | PoolLayerSpec):
        return f"{layer.type}, kernel {layer.kernel_size}"
    return layer.type


def plan_layers(layers: Sequence[LayerSpec], input_shape: Shape) -> list[Shape]:
    """The (C, H, W) after each layer; raises SpecError naming the first layer that fails."""
    shapes: list[Shape] = []
    channels, height, width = input_shape
    for number, layer in enumerate(layers, start=1):
        if isinstance(layer, ConvLayerSpec):
            out = layer.out_channels
            groups = channels if layer.depthwise_separable else layer.groups
            if channels % groups or (not layer.depthwise_separable and out % groups):
                raise SpecError(
                    f"layer {number} (conv, groups {groups}): groups must divide both the "
                    f"input channels ({channels}) and the output channels ({out})"
                )
            new_h, new_w = height, width  # padding "same" keeps the size (stride is 1)
            if layer.padding != "same":
                k, s, p, d = layer.kernel_size, layer.stride, layer.padding, layer.dilation
                new_h, new_w = (conv_output_size(n, k, s, p, d) for n in (height, width))
        elif isinstance(layer, PoolLayerSpec):
            out = channels
            stride = layer.stride or layer.kernel_size
            new_h, new_w = (
                conv_output_size(n, layer.kernel_size, stride, layer.padding)
                for n in (height, width)
            )
        elif isinstance(layer, GlobalAvgPoolLayerSpec):
            out, new_h, new_w = channels, 1, 1
        else:
            out, new_h, new_w = channels, height, width
        if new_h < 1 or new_w < 1:
            raise SpecError(
                f"layer {number} ({_describe(layer)}) shrinks the {height}x{width} feature map "
                f"to {max(new_h, 0)}x{max(new_w, 0)}"
            )
        channels, height, width = out, new_h, new_w
        shapes.append((channels, height, width))
    return shapes


def architecture_layers(name: str, activation: str) -> tuple[list[LayerSpec], dict[str, Any]]:
    """The convolutional part of `lenet5` or `simple` as layer specs, and its head."""
    if name == "lenet5":  # LeCun et al. 1998; padding 2 on C1 lets 28x28 MNIST stand in for 32x32
        layers: list[dict[str, Any]] = [
            {"type": "conv", "out_channels": 6, "kernel_size": 5, "padding": 2},
            {"type": activation},
            {"type": "avg_pool", "kernel_size": 2},
            {"type": "conv", "out_channels": 16, "kernel_size": 5},
            {"type": activation},
            {"type": "avg_pool", "kernel_size": 2},
        ]
        head = {"head": [120, 84], "head_dropout": 0.0, "activation": activation}
    elif name == "simple":  # pytorch/examples mnist/main.py `Net`
        layers = [
            {"type": "conv", "out_channels": 32, "kernel_size": 3},
            {"type": "relu"},
            {"type": "conv", "out_channels": 64, "kernel_size": 3},
            {"type": "relu"},
            {"type": "max_pool", "kernel_size": 2},
            {"type": "dropout", "p": 0.25},
        ]
        head = {"head": [128], "head_dropout": 0.5, "activation": "relu"}
    else:
        raise ValueError(f"architecture {name!r} is not a plain layer stack")
    return _LAYERS.validate_python(layers), head


def check_cnn_spec(spec: CNNSpec, input_shape: tuple[int, int, int]) -> None:
    """Refuses (SpecError) a spec that cannot run on images of `input_shape` (C, H, W)."""
    if len(input_shape) != 3 or min(input_shape) < 1:
        raise SpecError(f"the cnn kind needs images of shape (C, H, W); got {input_shape}")
    channels = input_shape[0]
    if spec.normalize is not None and len(spec.normalize.mean) != channels:
        raise SpecError(
            f"normalize has {len(spec.normalize.mean)} values per statistic but the images "
            f"have {channels} channel(s)"
        )
    if spec.architecture == "resnet":
        return  # 3x3 convolutions with padding 1 and stride 2 never shrink below 1x1
    if spec.architecture is not None:
        layers, _ = architecture_layers(spec.architecture, spec.activation)
    else:
        layers = list(spec.layers or [])
    plan_layers(layers, input_shape)


# --- networks -----------------------------------------------------------------------------


class SeparableConv2d(nn.Module):
    """Depthwise (one k x k filter per input channel) then pointwise (1x1) convolution."""

    def __init__(self, in_channels: int, layer: ConvLayerSpec, bias: bool) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(
            in_channels,
            in_channels,
            layer.kernel_size,
            stride=layer.stride,
            padding=layer.padding,
            dilation=layer.dilation,
            groups=in_channels,
            bias=False,
        )
        self.pointwise = nn.Conv2d(in_channels, layer.out_channels, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class ConvNet(nn.Module):
    """features (N, C, H, W) -> flatten -> head (N, num_outputs)."""

    def __init__(self, features: nn.Sequential, head: nn.Sequential, input_shape: Shape) -> None:
        super().__init__()
        self.features = features
        self.head = head
        self.input_shape = input_shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:  # flattened (N, C*H*W) or single-channel (N, H, W) rows
            x = x.reshape(-1, *self.input_shape)
        return self.head(torch.flatten(self.features(x), 1))


def _next_activation(layers: Sequence[LayerSpec], start: int) -> str | None:
    for layer in layers[start:]:
        if isinstance(layer, ConvLayerSpec):
            return None
        if layer.type in ("relu", "leaky_relu", "tanh", "sigmoid"):
            return layer.type
    return None


def _feature_layers(layers: Sequence[LayerSpec], input_shape: Shape) -> nn.Sequential:
    modules: list[nn.Module] = []
    channels = input_shape[0]
    for i, (layer, shape) in enumerate(zip(layers, plan_layers(layers, input_shape), strict=True)):
        if isinstance(layer, ConvLayerSpec):
            # A bias right before batch norm is cancelled by its mean subtraction.
            bias = not (i + 1 < len(layers) and isinstance(layers[i + 1], BatchNormLayerSpec))
            conv: nn.Module
            if layer.depthwise_separable:
                conv = SeparableConv2d(channels, layer, bias)
            else:
                conv = nn.Conv2d(
                    channels,
                    layer.out_channels,
                    layer.kernel_size,
                    stride=layer.stride,
                    padding=layer.padding,
                    dilation=layer.dilation,
                    groups=layer.groups,
                    bias=bias,
                )
            for part in conv.modules():
                if isinstance(part, nn.Conv2d):
                    init_by_activation(part, _next_activation(layers, i + 1))
            modules.append(conv)
        elif isinstance(layer, BatchNormLayerSpec):
            modules.append(nn.BatchNorm2d(channels))
        elif isinstance(layer, PoolLayerSpec):
            pool = nn.MaxPool2d if layer.type == "max_pool" else nn.AvgPool2d
            modules.append(pool(layer.kernel_size, layer.stride, layer.padding))
        elif isinstance(layer, DropoutLayerSpec):
            modules.append(nn.Dropout(layer.p))
        elif isinstance(layer, GlobalAvgPoolLayerSpec):
            modules.append(nn.AdaptiveAvgPool2d(1))
        else:
            modules.append(activation_layer(layer.type))
        channels = shape[0]
    return nn.Sequential(*modules)


def _resnet(input_shape: Shape, num_outputs: int, widths: Sequence[int], blocks: int) -> ConvNet:
    """CIFAR-style ResNet: 3x3 stem, stages at stride 1, 2, 2, global average pool, linear."""
    # Imported here: torchvision takes a second and a half to import, and only this needs it.
    from torchvision.models.resnet import BasicBlock

    stem = nn.Conv2d(input_shape[0], widths[0], 3, padding=1, bias=False)
    modules: list[nn.Module] = [stem, nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True)]
    channels = widths[0]
    for stage, width in enumerate(widths):
        for block in range(blocks):
            stride = 2 if stage > 0 and block == 0 else 1
            downsample = None
            if stride != 1 or channels != width:
                downsample = nn.Sequential(
                    nn.Conv2d(channels, width, 1, stride=stride, bias=False), nn.BatchNorm2d(width)
                )
            modules.append(BasicBlock(channels, width, stride, downsample))
            channels = width
    modules.append(nn.AdaptiveAvgPool2d(1))
    features = nn.Sequential(*modules)
    for module in features.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, BasicBlock):  # each block starts as the identity (Goyal 2017)
            nn.init.zeros_(module.bn2.weight)
    return ConvNet(features, dense_head(channels, [], 0.0, "relu", num_outputs), input_shape)


def network_config(spec: CNNSpec, input_shape: Shape, num_outputs: int) -> dict[str, Any]:
    """JSON that `build` turns back into the network."""
    config: dict[str, Any] = {
        "input_shape": list(input_shape),
        "num_outputs": num_outputs,
        "architecture": spec.architecture,
        "layers": [layer.model_dump(mode="json") for layer in spec.layers or []] or None,
        "head": list(spec.head),
        "head_dropout": spec.head_dropout,
        "activation": spec.activation,
    }
    if spec.architecture == "resnet":
        config["resnet"] = {"widths": list(RESNET_WIDTHS), "blocks_per_stage": RESNET_BLOCKS}
    return config


def build(config: dict[str, Any]) -> nn.Module:
    c, h, w = (int(n) for n in config["input_shape"])
    input_shape = (c, h, w)
    num_outputs = int(config["num_outputs"])
    architecture = config.get("architecture")
    if architecture == "resnet":
        resnet = config.get("resnet", {})
        widths = resnet.get("widths", RESNET_WIDTHS)
        return _resnet(input_shape, num_outputs, widths, resnet.get("blocks_per_stage", 2))
    if architecture is not None:
        layers, head = architecture_layers(architecture, config["activation"])
    else:
        layers = _LAYERS.validate_python(config["layers"])
        head = {k: config[k] for k in ("head", "head_dropout", "activation")}
    features = _feature_layers(layers, input_shape)
    flat = math.prod(plan_layers(layers, input_shape)[-1])
    dense = dense_head(flat, head["head"], head["head_dropout"], head["activation"], num_outputs)
    return ConvNet(features, dense, input_shape)


# --- augmentation -------------------------------------------------------------------------


class BatchAugmentation:
    """Random affine (rotation, translation, scale, shear) and elastic distortion, with its
    own draw for every image, applied in one `grid_sample` to a (N, C, H, W) batch.

    Inputs are already normalised, so pixels pulled from outside the image repeat the border
    (the background) rather than a zero that would be the dataset's mean intensity.
    """

    def __init__(
        self, spec: AugmentationSpec, height: int, width: int, generator: torch.Generator | None
    ) -> None:
        self.spec = spec
        self.height, self.width = height, width
        self.generator = generator
        self.kernel: torch.Tensor | None = None
        if spec.elastic is not None:
            sigma = spec.elastic.sigma
            radius = math.ceil(3 * sigma)
            taps = torch.arange(-radius, radius + 1, dtype=torch.float32)
            kernel = torch.exp(-(taps**2) / (2 * sigma**2))
            kernel /= kernel.sum()
            # Taps farther than the image is wide only ever see the zero padding.
            keep = min(radius, max(height, width) - 1)
            self.kernel = kernel[radius - keep : radius + keep + 1]
        self.identity = (
            spec.rotation == 0
            and spec.translate == 0
            and spec.shear == 0
            and spec.scale in (None, (1.0, 1.0))
            and spec.elastic is None
        )

    def _rand(self, shape: Sequence[int], like: torch.Tensor) -> torch.Tensor:
        """Uniform [0, 1) numbers from the job's generator (or the seeded global RNG)."""
        device = self.generator.device if self.generator is not None else like.device
        values = torch.rand(tuple(shape), generator=self.generator, device=device)
        return values.to(device=like.device, dtype=like.dtype)

    def _uniform(self, n: int, low: float, high: float, like: torch.Tensor) -> torch.Tensor:
        return low + (high - low) * self._rand((n,), like)

    def _theta(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 2, 3) maps from output to input positions, in affine_grid's [-1, 1] units."""
        n, spec = x.shape[0], self.spec
        angle = torch.deg2rad(self._uniform(n, -spec.rotation, spec.rotation, x))
        shear = torch.tan(torch.deg2rad(self._uniform(n, -spec.shear, spec.shear, x)))
        low, high = spec.scale or (1.0, 1.0)
        scale = self._uniform(n, low, high, x)
        shift_x = self._uniform(n, -spec.translate, spec.translate, x) * self.width  # pixels
        shift_y = self._uniform(n, -spec.translate, spec.translate, x) * self.height
        # The inverse of (rotate . shear . scale) in pixel units about the centre:
        # (1/s) Shear(-k) Rot(-a) = (1/s) [[cos + k sin, sin - k cos], [-sin, cos]].
        cos, sin = torch.cos(angle), torch.sin(angle)
        inverse = torch.stack(
            [
                torch.stack([cos + shear * sin, sin - shear * cos], dim=-1),
                torch.stack([-sin, cos], dim=-1),
            ],
            dim=-2,
        ) / scale.view(n, 1, 1)  # (N, 2, 2)
        half = x.new_tensor([self.width / 2, self.height / 2])  # pixels per normalised unit
        linear = inverse * half.view(1, 1, 2) / half.view(1, 2, 1)
        offset = -(inverse @ torch.stack([shift_x, shift_y], dim=-1).unsqueeze(-1))  # (N, 2, 1)
        return torch.cat([linear, offset / half.view(1, 2, 1)], dim=-1)

    def _displacement(self, x: torch.Tensor) -> torch.Tensor:
        """(N, H, W, 2) smoothed random displacement (Simard et al. 2003), in [-1, 1] units."""
        assert self.spec.elastic is not None and self.kernel is not None
        n, h, w = x.shape[0], self.height, self.width
        field = self._rand((n * 2, 1, h, w), x) * 2 - 1  # uniform(-1, 1), dx and dy per image
        kernel = self.kernel.to(device=x.device, dtype=x.dtype)
        r = (len(kernel) - 1) // 2
        field = F.conv2d(field, kernel.view(1, 1, 1, -1), padding=(0, r))  # separable blur
        field = F.conv2d(field, kernel.view(1, 1, -1, 1), padding=(r, 0))
        half = x.new_tensor([w / 2, h / 2])
        pixels = field.view(n, 2, h, w).permute(0, 2, 3, 1) * self.spec.elastic.alpha
        return pixels / half  # (N, H, W, 2), x then y as grid_sample reads them

    def __call__(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) -> same
        if self.identity or len(x) == 0:
            return x
        grid = F.affine_grid(self._theta(x), list(x.shape), align_corners=False)
        if self.spec.elastic is not None:
            grid = grid + self._displacement(x)
        distorted = F.grid_sample(x, grid, padding_mode="border", align_corners=False)
        if self.spec.probability >= 1:
            return distorted
        # A mask rather than indexing the chosen images keeps the GPU free of host syncs.
        chosen = self._rand((len(x),), x) < self.spec.probability
        return torch.where(chosen.view(-1, 1, 1, 1), distorted, x)


def build_augmentation(
    spec: AugmentationSpec | None,
    image_shape: Sequence[int],
    generator: torch.Generator | None = None,
) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """A batch transform (N, C, H, W) -> (N, C, H, W) for `fit`, or None without a spec.

    Draws come from `generator` (on the batch's device, ideally) or else the global RNG, so
    a seeded job distorts the same way every run.
    """
    if spec is None:
        return None
    return BatchAugmentation(spec, int(image_shape[-2]), int(image_shape[-1]), generator)


# --- training -----------------------------------------------------------------------------


class CNN(ModelKind):
    name = "cnn"
    spec = CNNSpec
    data = "images"
    example: ClassVar[dict[str, Any]] = {
        "kind": "cnn",
        "layers": [
            {"type": "conv", "out_channels": 4, "kernel_size": 3},
            {"type": "relu"},
            {"type": "max_pool", "kernel_size": 2},
        ],
        "head": [16],
    }

    def check(self, spec: JobSpec, data: DataDescription) -> None:
        assert isinstance(spec.model, CNNSpec)
        shape = data.image_shape
        if shape is None:
            raise SpecError(
                f"the cnn kind trains on images, and the dataset holds {data.what()}: upload "
                "images (IDX files, a zip of class folders, or an NPZ with x shaped (N, H, W), "
                "(N, H, W, C) or (N, C, H, W), C = 1 or 3)"
            )
        try:
            check_cnn_spec(spec.model, shape)
        except SpecError as exc:
            c, h, w = shape
            raise SpecError(f"{exc} (the images are {c}x{h}x{w}, C x H x W)") from exc

    def config(self, spec: JobSpec, shape: Sizing) -> dict[str, Any]:
        assert isinstance(spec.model, CNNSpec) and isinstance(shape, DataShape)
        if len(shape.example) != 3:
            raise TrainingError(
                f"the cnn kind needs images shaped (N, C, H, W); one example is {shape.example}"
            )
        c, h, w = shape.example
        try:
            check_cnn_spec(spec.model, (c, h, w))
        except SpecError as error:
            raise TrainingError(str(error)) from error
        return network_config(spec.model, (c, h, w), shape.outputs)

    def build(self, config: dict[str, Any]) -> nn.Module:
        return build(config)

    def prepare(
        self, spec: JobSpec, source: DataSource, test_source: DataSource | None
    ) -> PreparedData:
        """Images, standardised by the spec's `normalize` when it gives the statistics."""
        assert isinstance(spec.model, CNNSpec)
        normalize = spec.model.normalize
        return prepare_data(spec, source, test_source, form="images", normalize=normalize)

    def train(
        self,
        spec: JobSpec,
        data: PreparedData | None,
        reporter: Reporter,
        *,
        teacher: Teacher | None = None,
        cancel_poll_seconds: float = 1.0,
    ) -> TrainResult:
        """The shared loop, with the spec's augmentation applied to each training batch on
        the device, drawing from a generator of its own that checkpoints carry."""
        assert data is not None and isinstance(spec.model, CNNSpec)
        shape = data.shape()
        config = self.config(spec, shape)
        generator = torch.Generator(device=data.train.x.device).manual_seed(spec.training.seed)
        augment = build_augmentation(spec.model.augmentation, shape.example, generator)
        return train_network(
            build,
            config,
            spec,
            data,
            reporter,
            batch_transform=augment,
            generators=[generator],
            distiller=distiller_for(spec, teacher, data),
            cancel_poll_seconds=cancel_poll_seconds,
        )


KIND = CNN()
