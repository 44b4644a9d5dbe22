"""How a trained model is served: the `Servable` protocol the API calls, the supervised
`Predictor` (the stored preprocessing, the network, outputs mapped back to labels or
values), and `Playable`, a policy that also plays episodes. A kind's `predictor` returns
one (`models.kind`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from models.base import InputError
from models.loop import Objective, forward_all
from models.metrics import json_safe
from models.prepare import InputEncoder, load_input_encoder


class Servable(Protocol):
    """What the API serves a trained model through (its kind's `predictor`)."""

    def predict(self, inputs: list[Any]) -> dict[str, Any]: ...

    def predict_files(self, contents: list[bytes]) -> dict[str, Any]: ...


@runtime_checkable
class Playable(Protocol):
    """A trained policy that can also play episodes (`POST /models/{id}/rollout`)."""

    def rollout(self, episodes: int, seed: int) -> dict[str, Any]: ...


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


def supervised_predictor(network: nn.Module, meta: dict[str, Any]) -> Predictor:
    """A supervised model's predictor: the stored preprocessing, then the network, then the
    outputs mapped back to labels or the target's units."""
    objective = Objective(
        meta["task"], meta["num_classes"], float(meta["target_std"]), float(meta["target_mean"])
    )
    labels = meta["output"].get("labels")
    return Predictor(network, objective, load_input_encoder(meta["preprocessing"]), labels)
