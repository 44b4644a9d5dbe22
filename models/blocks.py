"""Building blocks every network kind shares: activations, weight initialisation, the
dense stack (hidden layers and an output layer) that an MLP is and that the convolutional
and recurrent kinds end in, and the forecasting residual any kind can wrap a network in.

One initialisation function serves every kind. He (Kaiming) keeps the variance of ReLU-like
activations from shrinking layer after layer; Xavier (Glorot) with the activation's gain
suits tanh and sigmoid. The MLP lets the spec choose (`init`); the convolutional and
recurrent kinds choose by the activation that follows (`init_by_activation`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal, cast

import torch
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "leaky_relu": nn.LeakyReLU,
}
LEAKY_SLOPE = 0.01  # nn.LeakyReLU's default negative slope

Init = Callable[[nn.Conv2d | nn.Linear], None]


def activation_layer(name: str) -> nn.Module:
    return ACTIVATIONS[name]()


def init_weights(
    module: nn.Conv2d | nn.Linear, scheme: Literal["he", "xavier"], activation: str
) -> None:
    """He (normal, fan-in) or Xavier (uniform) for a layer followed by `activation`, with
    that activation's gain; biases start at zero."""
    nonlinearity = cast(Any, activation)
    if scheme == "he":
        nn.init.kaiming_normal_(module.weight, a=LEAKY_SLOPE, nonlinearity=nonlinearity)
    else:
        gain = nn.init.calculate_gain(nonlinearity, LEAKY_SLOPE)
        nn.init.xavier_uniform_(module.weight, gain=gain)
    if module.bias is not None:
        nn.init.zeros_(module.bias)


def init_by_activation(module: nn.Conv2d | nn.Linear, activation: str | None) -> None:
    """He before ReLU-like units (or none: a linear map into the next layer), taken with the
    leaky slope's gain; Xavier with the gain of tanh or sigmoid."""
    if activation in (None, "relu", "leaky_relu"):
        init_weights(module, "he", "leaky_relu")
    else:
        init_weights(module, "xavier", "tanh" if activation == "tanh" else "sigmoid")


def dense_stack(
    in_features: int,
    hidden: Sequence[int],
    out_features: int,
    activation: str,
    init: Init,
    *,
    dropout: float = 0.0,
    batch_norm: bool = False,
) -> list[nn.Module]:
    """Linear -> [BatchNorm] -> activation -> [Dropout] for each hidden width, then a linear
    output layer (Xavier, zero bias: the logits or values start small and centred). A bias
    right before batch norm is left out: its mean subtraction cancels it."""
    layers: list[nn.Module] = []
    width = in_features
    for size in hidden:
        linear = nn.Linear(width, size, bias=not batch_norm)
        init(linear)
        layers.append(linear)
        if batch_norm:
            layers.append(nn.BatchNorm1d(size))
        layers.append(activation_layer(activation))
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = size
    out = nn.Linear(width, out_features)
    nn.init.xavier_uniform_(out.weight)
    nn.init.zeros_(out.bias)
    return [*layers, out]


def dense_head(
    in_features: int, hidden: Sequence[int], dropout: float, activation: str, num_outputs: int
) -> nn.Sequential:
    """The dense end of the convolutional and recurrent kinds, initialised by activation."""

    def init(layer: nn.Conv2d | nn.Linear) -> None:
        init_by_activation(layer, activation)

    return nn.Sequential(
        *dense_stack(in_features, hidden, num_outputs, activation, init, dropout=dropout)
    )


class LastValueResidual(nn.Module):
    """Forecasts as changes from the window's last target value: the level of each window
    is taken off its target column before `network` sees it and added back to the outputs.
    Standardised windows then look alike at any level, so a trend that carries the series
    beyond the training range is still forecast from its shape (the naive forecast is the
    network's zero)."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, W, F) -> (B, horizon)
        level = x[:, -1:, :1]  # (B, 1, 1): the last target value, standardised
        shifted = torch.cat([x[:, :, :1] - level, x[:, :, 1:]], dim=-1)
        return self.network(shifted) + level[:, 0]
