"""Each optimizer spec against its update rule written out by hand, and spec validation.

The hand-written rules follow PyTorch's definitions (see models/optimizers.py); weights and
gradients are float64 so the comparison can be tight.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pydantic
import pytest
import torch

from models.optimizers import build_optimizer
from models.specs import OptimizerSpec

W0 = np.array([1.0, -2.0, 0.5])
# Gradients of changing sign and size, so that each rule's memory shows in the second step.
GRADS = [np.array([0.3, -1.2, 2.0]), np.array([-0.5, -0.4, 1.0]), np.array([0.1, 0.9, -3.0])]

Rule = Callable[..., np.ndarray]


def sgd(w: np.ndarray, grads: list[np.ndarray], lr: float, weight_decay: float = 0.0) -> np.ndarray:
    for g in grads:
        w = w - lr * (g + weight_decay * w)
    return w


def momentum(
    w: np.ndarray,
    grads: list[np.ndarray],
    lr: float,
    momentum: float,
    dampening: float = 0.0,
    weight_decay: float = 0.0,
) -> np.ndarray:
    v = None
    for g in grads:
        g = g + weight_decay * w
        # PyTorch starts the buffer at the first gradient, undamped.
        v = g if v is None else momentum * v + (1 - dampening) * g
        w = w - lr * v
    return w


def nesterov(
    w: np.ndarray, grads: list[np.ndarray], lr: float, momentum: float, weight_decay: float = 0.0
) -> np.ndarray:
    v = None
    for g in grads:
        g = g + weight_decay * w
        v = g if v is None else momentum * v + g
        w = w - lr * (g + momentum * v)
    return w


def adagrad(
    w: np.ndarray,
    grads: list[np.ndarray],
    lr: float,
    eps: float,
    lr_decay: float = 0.0,
    initial_accumulator_value: float = 0.0,
    weight_decay: float = 0.0,
) -> np.ndarray:
    s = np.full_like(w, initial_accumulator_value)
    for t, g in enumerate(grads, start=1):
        g = g + weight_decay * w
        s = s + g**2
        w = w - lr / (1 + (t - 1) * lr_decay) * g / (np.sqrt(s) + eps)
    return w


def rmsprop(
    w: np.ndarray,
    grads: list[np.ndarray],
    lr: float,
    rho: float,
    eps: float,
    momentum: float = 0.0,
    centered: bool = False,
    weight_decay: float = 0.0,
) -> np.ndarray:
    s, mean, buf = np.zeros_like(w), np.zeros_like(w), np.zeros_like(w)
    for g in grads:
        g = g + weight_decay * w
        s = rho * s + (1 - rho) * g**2
        if centered:  # divide by the estimated standard deviation instead of the RMS
            mean = rho * mean + (1 - rho) * g
            denom = np.sqrt(s - mean**2) + eps
        else:
            denom = np.sqrt(s) + eps
        if momentum > 0:
            buf = momentum * buf + g / denom
            w = w - lr * buf
        else:
            w = w - lr * g / denom
    return w


def adam(
    w: np.ndarray,
    grads: list[np.ndarray],
    lr: float,
    b1: float,
    b2: float,
    eps: float,
    weight_decay: float = 0.0,
    decoupled: bool = False,
    amsgrad: bool = False,
) -> np.ndarray:
    m, v, v_max = np.zeros_like(w), np.zeros_like(w), np.zeros_like(w)
    for t, g in enumerate(grads, start=1):
        if decoupled:
            w = w * (1 - lr * weight_decay)
        else:
            g = g + weight_decay * w
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g**2
        v_max = np.maximum(v_max, v)
        m_hat = m / (1 - b1**t)
        v_hat = (v_max if amsgrad else v) / (1 - b2**t)
        w = w - lr * m_hat / (np.sqrt(v_hat) + eps)
    return w


CASES: list[tuple[dict[str, Any], Rule, dict[str, Any]]] = [
    ({"name": "sgd", "lr": 0.1}, sgd, {"lr": 0.1}),
    ({"name": "sgd", "lr": 0.1, "weight_decay": 0.2}, sgd, {"lr": 0.1, "weight_decay": 0.2}),
    ({"name": "momentum", "lr": 0.1, "momentum": 0.8}, momentum, {"lr": 0.1, "momentum": 0.8}),
    (
        {"name": "momentum", "lr": 0.1, "momentum": 0.8, "dampening": 0.3, "weight_decay": 0.1},
        momentum,
        {"lr": 0.1, "momentum": 0.8, "dampening": 0.3, "weight_decay": 0.1},
    ),
    ({"name": "nesterov", "lr": 0.1, "momentum": 0.7}, nesterov, {"lr": 0.1, "momentum": 0.7}),
    (
        {"name": "adagrad", "lr": 0.5, "eps": 0.01},
        adagrad,
        {"lr": 0.5, "eps": 0.01},
    ),
    (
        {
            "name": "adagrad",
            "lr": 0.5,
            "eps": 0.01,
            "lr_decay": 0.3,
            "initial_accumulator_value": 0.2,
            "weight_decay": 0.1,
        },
        adagrad,
        {
            "lr": 0.5,
            "eps": 0.01,
            "lr_decay": 0.3,
            "initial_accumulator_value": 0.2,
            "weight_decay": 0.1,
        },
    ),
    (
        {"name": "rmsprop", "lr": 0.05, "decay_rate": 0.9, "eps": 0.01},
        rmsprop,
        {"lr": 0.05, "rho": 0.9, "eps": 0.01},
    ),
    (
        {
            "name": "rmsprop",
            "lr": 0.05,
            "decay_rate": 0.8,
            "eps": 0.01,
            "momentum": 0.5,
            "centered": True,
            "weight_decay": 0.1,
        },
        rmsprop,
        {
            "lr": 0.05,
            "rho": 0.8,
            "eps": 0.01,
            "momentum": 0.5,
            "centered": True,
            "weight_decay": 0.1,
        },
    ),
    (
        {"name": "adam", "lr": 0.1, "betas": [0.8, 0.9], "eps": 0.01},
        adam,
        {"lr": 0.1, "b1": 0.8, "b2": 0.9, "eps": 0.01},
    ),
    (
        {"name": "adam", "lr": 0.1, "betas": [0.8, 0.9], "eps": 0.01, "weight_decay": 0.2},
        adam,
        {"lr": 0.1, "b1": 0.8, "b2": 0.9, "eps": 0.01, "weight_decay": 0.2},
    ),
    (
        {
            "name": "adam",
            "lr": 0.1,
            "betas": [0.8, 0.9],
            "eps": 0.01,
            "weight_decay": 0.2,
            "decoupled_weight_decay": True,
            "amsgrad": True,
        },
        adam,
        {
            "lr": 0.1,
            "b1": 0.8,
            "b2": 0.9,
            "eps": 0.01,
            "weight_decay": 0.2,
            "decoupled": True,
            "amsgrad": True,
        },
    ),
]

_adapter: pydantic.TypeAdapter[OptimizerSpec] = pydantic.TypeAdapter(OptimizerSpec)


def parse(raw: dict[str, Any]) -> OptimizerSpec:
    return _adapter.validate_python(raw)


def _case_id(case: tuple[dict[str, Any], Rule, dict[str, Any]]) -> str:
    raw = case[0]
    return "-".join(str(v) for k, v in raw.items() if k != "lr")


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
@pytest.mark.parametrize("steps", [1, 3])
def test_update_matches_hand_formula(
    case: tuple[dict[str, Any], Rule, dict[str, Any]], steps: int
) -> None:
    raw, rule, kwargs = case
    w = torch.nn.Parameter(torch.tensor(W0, dtype=torch.float64))
    optimizer = build_optimizer(parse(raw), [w])
    for g in GRADS[:steps]:
        w.grad = torch.tensor(g, dtype=torch.float64)
        optimizer.step()
    expected = rule(W0.copy(), GRADS[:steps], **kwargs)
    np.testing.assert_allclose(w.detach().numpy(), expected, rtol=1e-12, atol=1e-12)
    # A rule that ignored its options or its memory would not land here.
    assert not np.allclose(expected, W0)


def test_every_optimizer_name_is_covered() -> None:
    assert {raw["name"] for raw, _, _ in CASES} == {
        "sgd",
        "momentum",
        "nesterov",
        "adagrad",
        "rmsprop",
        "adam",
    }


def test_builds_the_expected_torch_classes() -> None:
    w = [torch.nn.Parameter(torch.zeros(2))]
    assert type(build_optimizer(parse({"name": "sgd"}), w)) is torch.optim.SGD
    assert type(build_optimizer(parse({"name": "rmsprop"}), w)) is torch.optim.RMSprop
    assert type(build_optimizer(parse({"name": "adam"}), w)) is torch.optim.Adam
    adamw = build_optimizer(parse({"name": "adam", "decoupled_weight_decay": True}), w)
    assert type(adamw) is torch.optim.AdamW
    assert adamw.param_groups[0]["weight_decay"] == 0.0  # the spec's, not AdamW's 0.01
    nag = build_optimizer(parse({"name": "nesterov"}), w)
    assert nag.param_groups[0]["nesterov"] is True
    plain = build_optimizer(parse({"name": "sgd"}), w)
    assert plain.param_groups[0]["momentum"] == 0


def test_accepts_a_parameter_generator() -> None:
    net = torch.nn.Linear(3, 2)
    optimizer = build_optimizer(parse({"name": "adam"}), net.parameters())
    assert len(optimizer.param_groups[0]["params"]) == 2


# --- spec validation -------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [case[0] for case in CASES])
def test_specs_parse_from_dicts(raw: dict[str, Any]) -> None:
    spec = parse(raw)
    assert spec.name == raw["name"]
    assert spec.lr == raw["lr"]


def test_defaults_fill_in() -> None:
    spec = parse({"name": "adam"})
    assert spec.model_dump() == {
        "name": "adam",
        "lr": 0.001,
        "betas": (0.9, 0.999),
        "eps": 1e-8,
        "weight_decay": 0.0,
        "decoupled_weight_decay": False,
        "amsgrad": False,
    }


@pytest.mark.parametrize(
    "raw",
    [
        {"name": "sgd", "lr": math.nan},
        {"name": "sgd", "lr": math.inf},
        {"name": "sgd", "lr": -0.1},
        {"name": "sgd", "lr": 0.0},
        {"name": "lbfgs", "lr": 0.1},
        {"lr": 0.1},
        {"name": "adam", "momentum": 0.9},
        {"name": "sgd", "momentum": 0.9},
        {"name": "nesterov", "momentum": 0.0},
        {"name": "nesterov", "dampening": 0.1},
        {"name": "momentum", "momentum": 1.0},
        {"name": "rmsprop", "decay_rate": 1.0},
        {"name": "adagrad", "eps": 0.0},
        {"name": "adam", "betas": [0.9, 1.0]},
        {"name": "adam", "betas": [0.9, math.nan]},
        {"name": "adam", "weight_decay": -1.0},
    ],
)
def test_bad_specs_are_refused(raw: dict[str, Any]) -> None:
    with pytest.raises(pydantic.ValidationError):
        parse(raw)
