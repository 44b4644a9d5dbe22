"""The cnn kind: shape arithmetic against real layers, spec checks, architectures,
per-image augmentation, and a small end-to-end training run on scikit-learn's digits."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import TypeAdapter, ValidationError
from sklearn.datasets import load_digits
from torch import nn
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from models.base import PreparedData, Split, TrainingError
from models.cnn import (
    KIND,
    BatchAugmentation,
    ConvNet,
    SeparableConv2d,
    SpecError,
    build,
    build_augmentation,
    check_cnn_spec,
    conv_output_size,
    network_config,
    plan_layers,
)
from models.registry import get_kind
from models.specs import AugmentationSpec, CNNSpec, JobSpec, LayerSpec
from tests.unit.reporting import MemoryReporter

LAYERS: TypeAdapter[list[LayerSpec]] = TypeAdapter(list[LayerSpec])


def cnn(**fields: Any) -> CNNSpec:
    return CNNSpec.model_validate({"kind": "cnn", **fields})


def job(model: dict[str, Any], **training: Any) -> JobSpec:
    return JobSpec.model_validate(
        {
            "dataset_id": "digits",
            "task": "classification",
            "model": {"kind": "cnn", **model},
            "optimizer": {"name": "adam", "lr": 0.01},
            "training": {"validation_split": 0.0, "test_split": 0.0, **training},
        }
    )


# --- shape arithmetic ---------------------------------------------------------------------


def test_conv_output_size_matches_conv2d() -> None:
    x_sizes = (1, 2, 5, 8, 13, 28)
    checked = 0
    for size, k, s, p, d in itertools.product(x_sizes, (1, 2, 3, 5), (1, 2, 3), (0, 1, 2), (1, 2)):
        expected = conv_output_size(size, k, s, p, d)
        if expected < 1:
            continue  # torch refuses these; plan_layers reports them (tested below)
        conv = nn.Conv2d(1, 1, k, stride=s, padding=p, dilation=d)
        out = conv(torch.zeros(1, 1, size, size + 3))
        assert out.shape[2:] == (expected, conv_output_size(size + 3, k, s, p, d))
        checked += 1
    assert checked > 200


def test_conv_output_size_matches_pooling() -> None:
    for size, k, s, p in itertools.product(
        (1, 2, 5, 8, 13, 28), (1, 2, 3, 4), (1, 2, 3), (0, 1, 2)
    ):
        if p > k // 2 or conv_output_size(size, k, s, p) < 1:
            continue
        x = torch.zeros(1, 1, size, size)
        expected = conv_output_size(size, k, s, p)
        assert nn.MaxPool2d(k, s, p)(x).shape[-1] == expected
        assert nn.AvgPool2d(k, s, p)(x).shape[-1] == expected


def test_course_formula_when_dilation_is_one() -> None:
    for h, f, p, s in itertools.product(range(5, 40), (1, 3, 5, 7), (0, 1, 2, 3), (1, 2, 4)):
        if h + 2 * p >= f:
            assert conv_output_size(h, f, s, p) == (h + 2 * p - f) // s + 1


def test_plan_matches_the_built_network() -> None:
    layers = [
        {"type": "conv", "out_channels": 8, "kernel_size": 3, "padding": "same"},
        {"type": "batch_norm"},
        {"type": "leaky_relu"},
        {"type": "conv", "out_channels": 12, "kernel_size": 4, "stride": 2, "dilation": 2},
        {"type": "max_pool", "kernel_size": 3, "stride": 1, "padding": 1},
        {"type": "conv", "out_channels": 12, "kernel_size": 3, "depthwise_separable": True},
        {"type": "avg_pool"},
        {"type": "conv", "out_channels": 6, "kernel_size": 1, "groups": 3},
        {"type": "dropout", "p": 0.1},
    ]
    shapes = plan_layers(LAYERS.validate_python(layers), (3, 31, 29))
    net = build(network_config(cnn(layers=layers), (3, 31, 29), 4))
    assert isinstance(net, ConvNet)
    x = torch.randn(2, 3, 31, 29)
    for module, shape in zip(net.features, shapes, strict=True):
        x = module(x)
        assert tuple(x.shape[1:]) == shape
    assert net(torch.randn(2, 3, 31, 29)).shape == (2, 4)


def test_a_collapsing_feature_map_names_the_layer() -> None:
    layers = [
        {"type": "conv", "out_channels": 4, "kernel_size": 3},
        {"type": "relu"},
        {"type": "max_pool"},
        {"type": "max_pool"},
        {"type": "max_pool"},
    ]  # 8 -> 6 -> 6 -> 3 -> 1 -> 0
    message = "layer 5 (max_pool, kernel 2) shrinks the 1x1 feature map to 0x0"
    with pytest.raises(SpecError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_cnn_spec(cnn(layers=layers), (1, 8, 8))
    with pytest.raises(SpecError, match=r"layer 1 \(conv, kernel 9\) shrinks the 8x8"):
        check_cnn_spec(
            cnn(layers=[{"type": "conv", "out_channels": 4, "kernel_size": 9}]), (1, 8, 8)
        )
    with pytest.raises(SpecError, match=r"layer 4 \(conv, kernel 5\) shrinks the 4x4"):
        check_cnn_spec(cnn(architecture="lenet5"), (1, 8, 8))
    check_cnn_spec(cnn(architecture="lenet5"), (1, 28, 28))
    check_cnn_spec(cnn(architecture="resnet"), (3, 1, 1))


def test_normalize_must_match_the_channels() -> None:
    spec = cnn(architecture="resnet", normalize={"mean": [0.5], "std": [0.25]})
    check_cnn_spec(spec, (1, 28, 28))
    with pytest.raises(SpecError, match="3 channel"):
        check_cnn_spec(spec, (3, 32, 32))


# --- layers -------------------------------------------------------------------------------


def test_depthwise_separable_has_depthwise_plus_pointwise_parameters() -> None:
    layer = {"type": "conv", "out_channels": 32, "kernel_size": 3, "depthwise_separable": True}
    net = build(network_config(cnn(layers=[layer]), (8, 10, 10), 2))
    assert isinstance(net, ConvNet)
    separable = net.features[0]
    assert isinstance(separable, SeparableConv2d)
    depthwise = 8 * 3 * 3  # one 3x3 filter per input channel, no bias
    pointwise = 8 * 32 + 32  # 1x1 mixing of channels, with bias
    assert sum(p.numel() for p in separable.parameters()) == depthwise + pointwise
    full = nn.Conv2d(8, 32, 3)
    assert depthwise + pointwise < sum(p.numel() for p in full.parameters())
    assert separable(torch.randn(1, 8, 10, 10)).shape == full(torch.randn(1, 8, 10, 10)).shape


def test_groups_must_divide_the_channels() -> None:
    grouped = {"type": "conv", "out_channels": 6, "kernel_size": 3, "groups": 3}
    with pytest.raises(SpecError, match=r"layer 1 \(conv, groups 3\).*input channels \(4\)"):
        check_cnn_spec(cnn(layers=[grouped]), (4, 8, 8))
    with pytest.raises(SpecError, match=r"output channels \(8\)"):
        build(network_config(cnn(layers=[{**grouped, "out_channels": 8}]), (3, 8, 8), 2))
    net = build(network_config(cnn(layers=[grouped]), (3, 8, 8), 2))
    assert net(torch.randn(2, 3, 8, 8)).shape == (2, 2)


@pytest.mark.parametrize(
    "model",
    [
        {"architecture": "lenet5", "layers": [{"type": "relu"}]},
        {},
        {"layers": []},
        {"architecture": "simple", "head": [64]},
        {"architecture": "vgg16"},
        {
            "layers": [
                {
                    "type": "conv",
                    "out_channels": 4,
                    "kernel_size": 3,
                    "stride": 2,
                    "padding": "same",
                }
            ]
        },
        {"layers": [{"type": "conv", "out_channels": 5000, "kernel_size": 3}]},
        {"layers": [{"type": "conv", "out_channels": 4, "kernel_size": 33}]},
        {"layers": [{"type": "conv", "out_channels": 4, "kernel_size": 3, "padding": "valid"}]},
        {"layers": [{"type": "conv", "out_channels": 4, "kernel_size": 3, "bias": False}]},
        {"layers": [{"type": "max_pool", "kernel_size": 2, "padding": 2}]},
        {"layers": [{"type": "dropout", "p": 1.0}]},
        {"layers": [{"type": "gelu"}]},
        {"layers": [{"type": "relu"}] * 101},
        {"architecture": "simple", "augmentation": {"rotation": 200}},
        {"architecture": "simple", "augmentation": {"scale": [1.1, 1.3]}},
        {"architecture": "simple", "augmentation": {"elastic": {"alpha": 34, "sigma": 0}}},
        {"architecture": "simple", "normalize": {"mean": [0.1], "std": [0.0]}},
        {"architecture": "simple", "normalize": {"mean": [0.1, 0.2], "std": [1.0]}},
    ],
)
def test_specs_that_are_refused(model: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        job(model)


def test_batch_norm_needs_batches_of_two() -> None:
    with pytest.raises(ValidationError, match="batch_size of at least 2"):
        job({"architecture": "resnet"}, batch_size=1)
    with pytest.raises(ValidationError, match="batch_size of at least 2"):
        job({"layers": [{"type": "batch_norm"}]}, batch_size=1)
    job({"architecture": "simple"}, batch_size=1)


# --- architectures ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("architecture", "shape"),
    [
        ("lenet5", (1, 28, 28)),
        ("simple", (1, 28, 28)),
        ("resnet", (1, 28, 28)),
        ("resnet", (3, 32, 32)),
    ],
)
def test_architectures_build_and_run(architecture: str, shape: tuple[int, int, int]) -> None:
    config = network_config(cnn(architecture=architecture), shape, 10)
    torch.manual_seed(0)
    net = build(json.loads(json.dumps(config)))  # the config survives a trip through JSON
    net.eval()
    x = torch.randn(3, *shape)
    out = net(x)
    assert out.shape == (3, 10) and out.dtype == torch.float32
    torch.manual_seed(0)
    rebuilt = build(config)
    rebuilt.load_state_dict(net.state_dict())
    rebuilt.eval()
    torch.testing.assert_close(rebuilt(x.flatten(1)), out)  # flattened rows are reshaped


def test_lenet5_has_the_classic_layer_sizes() -> None:
    net = build(network_config(cnn(architecture="lenet5", activation="tanh"), (1, 28, 28), 10))
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(400, 120), (120, 84), (84, 10)]
    assert sum(isinstance(m, nn.Tanh) for m in net.modules()) == 4


# --- augmentation -------------------------------------------------------------------------

FULL = AugmentationSpec(
    rotation=20, translate=0.1, scale=(0.9, 1.1), shear=10, elastic={"alpha": 34.0, "sigma": 4.0}
)


def test_augmentation_keeps_shape_and_differs_per_image() -> None:
    augment = build_augmentation(FULL, (3, 28, 28), torch.Generator().manual_seed(0))
    assert augment is not None
    image = torch.randn(1, 3, 28, 28)
    out = augment(image.expand(8, -1, -1, -1))
    assert out.shape == (8, 3, 28, 28)
    for i, j in itertools.combinations(range(8), 2):
        assert not torch.allclose(out[i], out[j])
    assert build_augmentation(None, (3, 28, 28)) is None


def test_elastic_alone_differs_per_image() -> None:
    spec = AugmentationSpec(elastic={"alpha": 34.0, "sigma": 4.0})
    augment = build_augmentation(spec, (1, 16, 16), torch.Generator().manual_seed(1))
    assert augment is not None
    out = augment(torch.randn(1, 1, 16, 16).expand(4, -1, -1, -1))
    assert not torch.allclose(out[0], out[1])


@pytest.mark.parametrize(
    "spec",
    [
        AugmentationSpec(),
        AugmentationSpec(scale=(1.0, 1.0), elastic={"alpha": 0.0, "sigma": 4.0}),
    ],
)
def test_zero_magnitudes_are_the_identity(spec: AugmentationSpec) -> None:
    augment = build_augmentation(spec, (2, 9, 13))
    assert augment is not None
    x = torch.randn(5, 2, 9, 13)
    torch.testing.assert_close(augment(x), x, atol=1e-5, rtol=0)


def test_augmentation_is_reproducible_with_a_seeded_generator() -> None:
    x = torch.randn(6, 1, 12, 12)

    def run(seed: int) -> torch.Tensor:
        augment = build_augmentation(FULL, (1, 12, 12), torch.Generator().manual_seed(seed))
        assert augment is not None
        return augment(x)

    torch.testing.assert_close(run(3), run(3))
    assert not torch.allclose(run(3), run(4))
    torch.manual_seed(7)  # without a generator: the global RNG the job seeds
    global_rng = build_augmentation(FULL, (1, 12, 12))
    assert global_rng is not None
    first = global_rng(x)
    torch.manual_seed(7)
    torch.testing.assert_close(global_rng(x), first)


def test_affine_part_agrees_with_torchvision() -> None:
    class Extremes(BatchAugmentation):  # every draw at the top of its range
        def _uniform(self, n: int, low: float, high: float, like: torch.Tensor) -> torch.Tensor:
            return torch.full((n,), high, dtype=like.dtype)

    spec = AugmentationSpec(rotation=25, translate=0.1, scale=(1.0, 1.2), shear=20)
    x = torch.rand(1, 1, 20, 30)
    ours = Extremes(spec, 20, 30, None)(x)
    theirs = TF.affine(
        x,
        angle=25,
        translate=[3, 2],
        scale=1.2,
        shear=[-20.0, 0.0],
        interpolation=InterpolationMode.BILINEAR,
    )
    inner = (..., slice(4, 16), slice(6, 24))  # away from the border, where fills differ
    torch.testing.assert_close(ours[inner], theirs[inner], atol=1e-4, rtol=0)


# --- training -----------------------------------------------------------------------------


def digits() -> PreparedData:
    bunch = load_digits()
    x = torch.tensor(bunch.data, dtype=torch.float32).reshape(-1, 1, 8, 8)
    y = torch.tensor(bunch.target, dtype=torch.int64)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    x, y = x[perm], y[perm]
    train_x = x[:1400]
    mean, std = train_x.mean(), train_x.std()
    x = (x - mean) / std
    return PreparedData(
        task="classification",
        train=Split(x[:1400], y[:1400]),
        val=Split(x[1400:1600], y[1400:1600]),
        test=Split(x[1600:], y[1600:]),
        num_features=64,
        num_classes=10,
    )


SMALL = [
    {"type": "conv", "out_channels": 16, "kernel_size": 3, "padding": "same"},
    {"type": "batch_norm"},
    {"type": "relu"},
    {"type": "max_pool"},
    {"type": "conv", "out_channels": 32, "kernel_size": 3, "padding": 1},
    {"type": "relu"},
    {"type": "max_pool"},
]


def test_trains_on_digits(tmp_path: Path) -> None:
    spec = job(
        {"layers": SMALL, "head": [64], "augmentation": {"rotation": 10, "translate": 0.1}},
        epochs=8,
        batch_size=64,
    )
    reporter = MemoryReporter()
    result = get_kind("cnn").train(spec, digits(), reporter, cancel_poll_seconds=0.0)
    assert result.metrics["test"]["accuracy"] > 0.8, result.metrics["test"]
    assert len(reporter.records) == 8
    rebuilt = build(json.loads(json.dumps(result.config)))
    rebuilt.load_state_dict(result.network.state_dict())
    rebuilt.eval()
    x = digits().test
    assert x is not None
    torch.testing.assert_close(rebuilt(x.x), result.network.eval()(x.x))


def test_train_refuses_what_cannot_fit_the_images() -> None:
    with pytest.raises(TrainingError, match=r"layer 4 \(conv, kernel 5\)"):
        KIND.train(job({"architecture": "lenet5"}), digits(), MemoryReporter())
    data = digits()
    data.train = Split(data.train.x.flatten(1), data.train.y)
    with pytest.raises(TrainingError, match=r"\(N, C, H, W\)"):
        KIND.train(job({"architecture": "simple"}), data, MemoryReporter())


@pytest.mark.parametrize("probability", [0.25, 0.5, 0.9])
def test_probability_leaves_the_other_images_untouched(probability: float) -> None:
    spec = FULL.model_copy(update={"probability": probability})
    augment = build_augmentation(spec, (1, 12, 12), torch.Generator().manual_seed(0))
    assert augment is not None
    x = torch.randn(4000, 1, 12, 12)
    unchanged = (augment(x) == x).flatten(1).all(dim=1).float().mean().item()
    assert unchanged == pytest.approx(1 - probability, abs=0.03)


def test_probability_must_be_in_zero_one() -> None:
    for bad in (0.0, 1.5, float("nan")):
        with pytest.raises(ValidationError):
            AugmentationSpec(rotation=10, probability=bad)
