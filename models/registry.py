"""The one table of model kinds. Adding a kind to Keiko: one module in models/ (its spec and
its `ModelKind`, see `models.kind`) plus one line here and its spec in `specs.ModelSpec`.

A kind can also come from outside Keiko: a module named in `KEIKO_KINDS` (comma-separated
import paths) that calls `register` when imported. The API and the worker import this
registry before they build anything from `JobSpec`, so such a kind is validated, trained,
checkpointed, resumed and served like Keiko's own.
"""

from __future__ import annotations

import importlib
import os

from models import cnn, linear, mlp, rnn
from models.kind import ModelKind
from models.rl import dqn, tabular
from models.specs import add_model_spec

KINDS: dict[str, ModelKind] = {
    kind.name: kind
    for kind in (
        linear.KIND,
        mlp.KIND,
        cnn.KIND,
        rnn.KIND,
        dqn.KIND,
        tabular.Q_LEARNING,
        tabular.SARSA,
    )
}


def get_kind(name: str) -> ModelKind:
    try:
        return KINDS[name]
    except KeyError:
        raise ValueError(f"unknown model kind {name!r}; known: {', '.join(KINDS)}") from None


def register(kind: ModelKind) -> None:
    """Add a kind from outside Keiko; its spec joins `JobSpec.model`'s union."""
    if kind.name in KINDS:
        if KINDS[kind.name] is kind:
            return
        raise ValueError(f"a model kind named {kind.name!r} is registered already")
    add_model_spec(kind.spec)
    KINDS[kind.name] = kind


def load_plugins(modules: str) -> None:
    """Import each module of the comma-separated `modules`; each registers its kinds."""
    for name in filter(None, (part.strip() for part in modules.split(","))):
        importlib.import_module(name)


load_plugins(os.environ.get("KEIKO_KINDS", ""))
