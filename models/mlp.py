"""Multi-layer perceptron: Linear -> [BatchNorm] -> activation -> [Dropout], repeated."""

from __future__ import annotations

from typing import Any, ClassVar

from torch import nn

from models.base import DataShape
from models.blocks import LastValueResidual, dense_stack, init_weights
from models.kind import ModelKind, Sizing
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


class MLP(ModelKind):
    name = "mlp"
    spec = MLPSpec
    example: ClassVar[dict[str, Any]] = {"kind": "mlp", "hidden_layers": [16]}

    def config(self, spec: JobSpec, shape: Sizing) -> dict[str, Any]:
        assert isinstance(spec.model, MLPSpec) and isinstance(shape, DataShape)
        return network_config(spec.model, shape.features, shape.outputs, shape.task)

    def build(self, config: dict[str, Any]) -> nn.Module:
        return build(config)


KIND = MLP()
