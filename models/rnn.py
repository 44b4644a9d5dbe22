"""Recurrent networks (Elman RNN, LSTM, GRU; stacked, optionally bidirectional) over
(N, T, F) sequences: the last layer's final hidden state, of both directions when
bidirectional, goes through a dense head to class logits, a value, or `horizon` values."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from models.base import PreparedData, Reporter, TrainingError, TrainResult
from models.blocks import dense_head
from models.loop import train_network
from models.sequences import LastValueResidual
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


def train(
    spec: JobSpec, data: PreparedData, reporter: Reporter, *, cancel_poll_seconds: float = 1.0
) -> TrainResult:
    model = spec.model
    assert isinstance(model, RNNSpec)
    x = data.train.x
    if x.dim() != 3:
        raise TrainingError(
            f"the rnn kind needs sequences shaped (N, T, F); the data is {tuple(x.shape)}"
        )
    config = network_config(model, int(x.shape[2]), data.num_outputs, data.task)
    return train_network(
        build, config, spec, data, reporter, cancel_poll_seconds=cancel_poll_seconds
    )
