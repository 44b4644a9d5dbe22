"""The one table of model kinds. Adding a kind: one module in models/ plus one line here
(and its spec in models/specs.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from models import cnn, linear, mlp, rnn
from models.base import TrainResult
from models.rl import dqn, tabular


@dataclass(frozen=True)
class ModelKind:
    name: str
    build: Callable[[dict[str, Any]], nn.Module]  # rebuilds a trained network from its config
    train: Callable[..., TrainResult]  # (spec, data, reporter, *, cancel_poll_seconds)


KINDS: dict[str, ModelKind] = {
    "linear": ModelKind("linear", linear.build, linear.train),
    "mlp": ModelKind("mlp", mlp.build, mlp.train),
    "cnn": ModelKind("cnn", cnn.build, cnn.train),
    "rnn": ModelKind("rnn", rnn.build, rnn.train),
    "dqn": ModelKind("dqn", dqn.build_dqn, dqn.train_dqn),
    "q_learning": ModelKind("q_learning", tabular.build_table, tabular.train_tabular),
    "sarsa": ModelKind("sarsa", tabular.build_table, tabular.train_tabular),
}


def get_kind(name: str) -> ModelKind:
    try:
        return KINDS[name]
    except KeyError:
        raise ValueError(f"unknown model kind {name!r}; known: {', '.join(KINDS)}") from None
