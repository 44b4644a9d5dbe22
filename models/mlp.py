"""Multi-layer perceptron: Linear -> [BatchNorm] -> activation -> [Dropout], repeated."""

from __future__ import annotations

from typing import Any

from torch import nn

from models.base import PreparedData, Reporter, TrainResult
from models.blocks import ACTIVATIONS, dense_stack, init_weights  # noqa: F401 (models.rl)
from models.loop import train_network
from models.sequences import LastValueResidual
from models.specs import JobSpec, MLPSpec


def build(config: dict[str, Any]) -> nn.Module:
    scheme, activation = config["init"], config["activation"]

    def init(layer: nn.Conv2d | nn.Linear) -> None:
        init_weights(layer, scheme, activation)

    layers = dense_stack(
        config["in_features"],
        config["hidden_layers"],
        config["out_features"],
        activation,
        init,
        dropout=config["dropout"],
        batch_norm=config["batch_norm"],
    )
    net = nn.Sequential(nn.Flatten(), *layers)
    if config.get("forecast_residual"):
        return LastValueResidual(net)
    return net


def network_config(
    model: MLPSpec, in_features: int, out_features: int, task: str
) -> dict[str, Any]:
    """JSON that `build` turns back into the network."""
    return {
        "in_features": in_features,
        "out_features": out_features,
        "hidden_layers": list(model.hidden_layers),
        "activation": model.activation,
        "dropout": model.dropout,
        "batch_norm": model.batch_norm,
        "init": model.resolved_init(),
        "forecast_residual": task == "forecasting",
    }


def train(
    spec: JobSpec, data: PreparedData, reporter: Reporter, *, cancel_poll_seconds: float = 1.0
) -> TrainResult:
    model = spec.model
    assert isinstance(model, MLPSpec)
    config = network_config(model, data.num_features, data.num_outputs, data.task)
    return train_network(
        build, config, spec, data, reporter, cancel_poll_seconds=cancel_poll_seconds
    )
