"""A trained model on disk: safetensors weights plus a JSON sidecar holding everything that
rebuilds the network and repeats the training-time preprocessing. Nothing is pickled."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

from torch import nn

from models.base import InputError, TrainResult
from models.checkpoint import load_checkpoint, save_checkpoint
from models.predictors import Servable

FORMAT_VERSION = 1

__all__ = ["InputError", "load_bundle", "save_bundle"]


def save_bundle(path: Path, *, kind: str, interface: dict[str, Any], result: TrainResult) -> str:
    """Write the model bundle; returns the sha256 of the weights file. `interface` is
    `PreparedData.interface()`, or the `TrainResult.interface` of an RL kind."""
    state = {k: v.detach() for k, v in result.network.state_dict().items()}
    meta = {"format_version": FORMAT_VERSION, "kind": kind, "config": result.config, **interface}
    return save_checkpoint(path, model_state=state, optimizer=None, meta=meta)


class Builds(Protocol):
    """What rebuilding a bundle's network needs of its kind (`models.kind.ModelKind`)."""

    def build(self, config: dict[str, Any]) -> nn.Module: ...


class Kind(Builds, Protocol):
    """And serving it."""

    def predictor(self, network: nn.Module, meta: dict[str, Any]) -> Servable: ...


K = TypeVar("K", bound=Builds)


def load_bundle(
    path: Path, *, expected_sha256: str | None, kinds: Callable[[str], Kind]
) -> Servable:
    """The model at `path`, checked against its sha256, rebuilt and served by its kind
    (`kinds` looks a kind up by name: `models.registry.get_kind`)."""
    kind, network, meta = load_network(path, expected_sha256=expected_sha256, kinds=kinds)
    return kind.predictor(network, meta)


def load_network(
    path: Path, *, expected_sha256: str | None, kinds: Callable[[str], K]
) -> tuple[K, nn.Module, dict[str, Any]]:
    """The bundle at `path` checked against its sha256: its kind, its network rebuilt with
    the trained weights (in eval mode), and its metadata."""
    checkpoint = load_checkpoint(path, expected_sha256=expected_sha256)
    meta = checkpoint.meta
    kind = kinds(meta["kind"])
    network = kind.build(meta["config"])
    network.load_state_dict(checkpoint.model_state)
    network.eval()
    return kind, network, meta
