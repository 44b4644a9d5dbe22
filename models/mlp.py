"""Multi-layer perceptron: Linear -> [BatchNorm] -> activation -> [Dropout], repeated."""

from __future__ import annotations

from typing import Any, cast

from torch import nn

from models.base import PreparedData, Reporter, TrainResult
from models.loop import train_network
from models.sequences import LastValueResidual
from models.specs import JobSpec, MLPSpec

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "leaky_relu": nn.LeakyReLU,
}


def activation_layer(name: str) -> nn.Module:
    return ACTIVATIONS[name]()


LEAKY_SLOPE = 0.01  # nn.LeakyReLU's default negative slope


def init_linear(layer: nn.Linear, scheme: str, activation: str) -> None:
    """He (Kaiming) init for ReLU-like units, Xavier (Glorot) with the activation's gain else."""
    nonlinearity = cast(Any, activation)
    if scheme == "he":
        nn.init.kaiming_normal_(layer.weight, a=LEAKY_SLOPE, nonlinearity=nonlinearity)
    else:
        gain = nn.init.calculate_gain(nonlinearity, LEAKY_SLOPE)
        nn.init.xavier_uniform_(layer.weight, gain=gain)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)


def build(config: dict[str, Any]) -> nn.Module:
    layers: list[nn.Module] = []
    width = config["in_features"]
    for hidden in config["hidden_layers"]:
        linear = nn.Linear(width, hidden, bias=not config["batch_norm"])
        init_linear(linear, config["init"], config["activation"])
        layers.append(linear)
        if config["batch_norm"]:
            layers.append(nn.BatchNorm1d(hidden))
        layers.append(activation_layer(config["activation"]))
        if config["dropout"] > 0:
            layers.append(nn.Dropout(config["dropout"]))
        width = hidden
    head = nn.Linear(width, config["out_features"])
    nn.init.xavier_uniform_(head.weight)
    nn.init.zeros_(head.bias)
    layers.append(head)
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
