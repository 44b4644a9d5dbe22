"""Optimizer specs (models/specs/optimizers.py) turned into `torch.optim` optimizers.

PyTorch's own implementations are used as they are; the specs only choose among them and
rename a few arguments (RMSProp's `decay_rate` is PyTorch's `alpha`). The update rules,
as PyTorch defines them, with g the gradient (plus weight_decay * w unless decoupled):

    sgd       w <- w - lr * g
    momentum  v <- mu * v + (1 - dampening) * g  (v = g on the first step); w <- w - lr * v
    nesterov  v <- mu * v + g; w <- w - lr * (g + mu * v)
    adagrad   s <- s + g²; w <- w - lr_t * g / (sqrt(s) + eps), lr_t = lr / (1 + (t-1) lr_decay)
    rmsprop   s <- rho * s + (1 - rho) * g²; w <- w - lr * g / (sqrt(s) + eps)
    adam      bias-corrected first and second moments (AdamW: decay applied to w directly)
"""

from __future__ import annotations

from typing import assert_never

import torch
from torch.optim.optimizer import ParamsT

from models.specs import (
    AdaGradSpec,
    AdamSpec,
    MomentumSpec,
    NesterovSpec,
    OptimizerSpec,
    RMSPropSpec,
    SGDSpec,
)


def _sgd(spec: SGDSpec, params: ParamsT) -> torch.optim.Optimizer:
    return torch.optim.SGD(
        params, lr=spec.lr, momentum=0.0, weight_decay=spec.weight_decay, foreach=True
    )


def _momentum(spec: MomentumSpec, params: ParamsT) -> torch.optim.Optimizer:
    return torch.optim.SGD(
        params,
        lr=spec.lr,
        momentum=spec.momentum,
        dampening=spec.dampening,
        weight_decay=spec.weight_decay,
        foreach=True,
    )


def _nesterov(spec: NesterovSpec, params: ParamsT) -> torch.optim.Optimizer:
    # PyTorch refuses dampening with nesterov, so the spec has no such field.
    return torch.optim.SGD(
        params,
        lr=spec.lr,
        momentum=spec.momentum,
        nesterov=True,
        weight_decay=spec.weight_decay,
        foreach=True,
    )


def _adagrad(spec: AdaGradSpec, params: ParamsT) -> torch.optim.Optimizer:
    return torch.optim.Adagrad(
        params,
        lr=spec.lr,
        lr_decay=spec.lr_decay,
        initial_accumulator_value=spec.initial_accumulator_value,
        eps=spec.eps,
        weight_decay=spec.weight_decay,
        foreach=True,
    )


def _rmsprop(spec: RMSPropSpec, params: ParamsT) -> torch.optim.Optimizer:
    return torch.optim.RMSprop(
        params,
        lr=spec.lr,
        alpha=spec.decay_rate,
        eps=spec.eps,
        momentum=spec.momentum,
        centered=spec.centered,
        weight_decay=spec.weight_decay,
        foreach=True,
    )


def _adam(spec: AdamSpec, params: ParamsT) -> torch.optim.Optimizer:
    # AdamW is Adam with the decay applied to the weights instead of added to the gradient.
    cls = torch.optim.AdamW if spec.decoupled_weight_decay else torch.optim.Adam
    return cls(
        params,
        lr=spec.lr,
        betas=spec.betas,
        eps=spec.eps,
        weight_decay=spec.weight_decay,
        amsgrad=spec.amsgrad,
        fused=True,  # one kernel per step for all parameters, on the CPU as on CUDA
    )


def build_optimizer(spec: OptimizerSpec, params: ParamsT) -> torch.optim.Optimizer:
    """The `torch.optim` optimizer that `spec` describes, over `params`. Adam runs fused, the
    others multi-tensor (`foreach`), which PyTorch picks by itself only on CUDA: on a CPU it
    saves a Python loop over the parameters at every step (for small networks, most of it)."""
    match spec:
        case SGDSpec():
            return _sgd(spec, params)
        case MomentumSpec():
            return _momentum(spec, params)
        case NesterovSpec():
            return _nesterov(spec, params)
        case AdaGradSpec():
            return _adagrad(spec, params)
        case RMSPropSpec():
            return _rmsprop(spec, params)
        case AdamSpec():
            return _adam(spec, params)
        case _:
            assert_never(spec)
