"""Recurrent networks (Elman RNN, LSTM, GRU; stacked, optionally bidirectional) over
(N, T, F) sequences: the last layer's final hidden state, of both directions when
bidirectional, goes through a dense head to class logits, a value, or `horizon` values."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from models.base import DataShape, SpecError, TrainingError
from models.blocks import LastValueResidual, dense_head
from models.describe import DataDescription
from models.kind import ModelKind, Sizing
from models.specs import JobSpec, RNNSpec

CELLS: dict[str, type[nn.RNNBase]] = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


class RecurrentNet(nn.Module):
    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        options: dict[str, Any] = {
            "input_size": int(config["input_size"]),
            "hidden_size": int(config["hidden_size"]),
            "num_layers": int(config["num_layers"]),
            "bidirectional": bool(config["bidirectional"]),
            "dropout": float(config["dropout"]),
            "batch_first": True,
        }
        if config["cell"] == "rnn":
            options["nonlinearity"] = config["nonlinearity"]
        self.cell = config["cell"]
        self.recurrent = CELLS[self.cell](**options)
        width = options["hidden_size"] * (2 if options["bidirectional"] else 1)
        self.head = dense_head(
            width, config["head"], 0.0, config["activation"], int(config["num_outputs"])
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, F) -> (B, outputs)
        _, state = self.recurrent(x)
        hidden = state[0] if self.cell == "lstm" else state  # (layers * directions, B, H)
        if self.recurrent.bidirectional:  # the last layer's forward and backward states
            last = torch.cat([hidden[-2], hidden[-1]], dim=-1)
        else:
            last = hidden[-1]
        return self.head(last)


def build(config: dict[str, Any]) -> nn.Module:
    net = RecurrentNet(config)
    return LastValueResidual(net) if config.get("forecast_residual") else net


def network_config(model: RNNSpec, input_size: int, num_outputs: int, task: str) -> dict[str, Any]:
    """JSON that `build` turns back into the network."""
    return {
        "cell": model.cell,
        "input_size": input_size,
        "hidden_size": model.hidden_size,
        "num_layers": model.num_layers,
        "bidirectional": model.bidirectional,
        "dropout": model.dropout,
        "nonlinearity": model.nonlinearity,
        "head": list(model.head),
        "activation": model.activation,
        "num_outputs": num_outputs,
        "forecast_residual": task == "forecasting",
    }


class RNN(ModelKind):
    name = "rnn"
    spec = RNNSpec
    data = "sequences"
    dynamic_axes = (1,)  # a recurrent network takes sequences of any length
    example: ClassVar[dict[str, Any]] = {"kind": "rnn", "cell": "gru", "hidden_size": 16}

    def check(self, spec: JobSpec, data: DataDescription) -> None:
        if not data.is_sequences:
            what = "a table" if data.is_table else f"x of shape {data.x_shape}"
            raise SpecError(
                f"the rnn kind trains on sequences, and the dataset holds {what}: upload an "
                "NPZ with x shaped (N, T, F) or (N, T), or use task 'forecasting' on a time "
                "series"
            )

    def config(self, spec: JobSpec, shape: Sizing) -> dict[str, Any]:
        assert isinstance(spec.model, RNNSpec) and isinstance(shape, DataShape)
        if len(shape.example) != 2:
            raise TrainingError(
                f"the rnn kind needs sequences shaped (N, T, F); one example is {shape.example}"
            )
        return network_config(spec.model, shape.example[1], shape.outputs, shape.task)

    def build(self, config: dict[str, Any]) -> nn.Module:
        return build(config)


KIND = RNN()
