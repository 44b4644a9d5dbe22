"""A trained model on disk: safetensors weights plus a JSON sidecar holding everything that
rebuilds the network and repeats the training-time preprocessing. Nothing is pickled."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from models.base import InputError, TrainResult
from models.checkpoint import load_checkpoint, save_checkpoint
from models.loop import Objective, forward_all
from models.metrics import json_safe
from models.prepare import InputEncoder, load_input_encoder
from models.rl.episodes import ObservationEncoder, PolicyPredictor

FORMAT_VERSION = 1

__all__ = ["InputError", "PolicyPredictor", "Predictor", "load_bundle", "save_bundle"]


def save_bundle(path: Path, *, kind: str, interface: dict[str, Any], result: TrainResult) -> str:
    """Write the model bundle; returns the sha256 of the weights file. `interface` is
    `PreparedData.interface()`, or the `TrainResult.interface` of an RL kind."""
    state = {k: v.detach() for k, v in result.network.state_dict().items()}
    meta = {"format_version": FORMAT_VERSION, "kind": kind, "config": result.config, **interface}
    return save_checkpoint(path, model_state=state, optimizer=None, meta=meta)


@dataclass
class Predictor:
    network: nn.Module
    objective: Objective
    encoder: InputEncoder
    labels: list[Any] | None

    def predict(self, inputs: list[Any]) -> dict[str, Any]:
        return self._predict(self.encoder.encode(inputs))

    def predict_files(self, contents: list[bytes]) -> dict[str, Any]:
        """Uploaded image files (PNG, JPEG), for models trained on images."""
        encode_files = getattr(self.encoder, "encode_files", None)
        if encode_files is None:
            raise InputError("this model does not take image files; send JSON inputs")
        return self._predict(encode_files(contents))

    def _predict(self, encoded: np.ndarray) -> dict[str, Any]:
        x = torch.from_numpy(encoded)  # (N, ...) float32, as in training
        out = forward_all(self.network, x)
        if self.objective.task == "classification":
            assert self.labels is not None
            probs = self.objective.probabilities(out)  # (N, C)
            predicted = probs.argmax(dim=-1).tolist()
            return {
                "predictions": [self.labels[i] for i in predicted],
                "probabilities": json_safe(probs.tolist()),
                "labels": self.labels,
            }
        values = self.objective.unscale(self.objective.values(out))  # (N,) or (N, horizon)
        return {"predictions": json_safe(values.tolist())}


def load_bundle(
    path: Path,
    *,
    expected_sha256: str | None,
    build: Callable[[str, dict[str, Any]], nn.Module],
) -> Predictor | PolicyPredictor:
    checkpoint = load_checkpoint(path, expected_sha256=expected_sha256)
    meta = checkpoint.meta
    network = build(meta["kind"], meta["config"])
    network.load_state_dict(checkpoint.model_state)
    network.eval()
    if meta["task"] == "reinforcement":
        encoder = ObservationEncoder.from_json(meta["preprocessing"])
        return PolicyPredictor(network, encoder, meta["env"])
    objective = Objective(
        meta["task"], meta["num_classes"], float(meta["target_std"]), float(meta["target_mean"])
    )
    labels = meta["output"].get("labels")
    return Predictor(network, objective, load_input_encoder(meta["preprocessing"]), labels)
