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
    """What the API serves a trained model through (its kind's `predictor`). `predict` is
    `decode(forward(encode(inputs)))`; the three steps apart let the API run the network
    once for the rows of several concurrent calls (dynamic batching): each call's inputs
    are checked and encoded on their own, its rows of the output decoded on their own."""

    def predict(self, inputs: list[Any]) -> dict[str, Any]: ...

    def predict_files(self, contents: list[bytes]) -> dict[str, Any]: ...

    def encode(self, inputs: list[Any]) -> np.ndarray:
        """The network's input rows; `InputError` names what is wrong with `inputs`."""
        ...

    def forward(self, x: np.ndarray) -> torch.Tensor:
        """The network's outputs, one row per input row (rows do not affect each other)."""
        ...

    def decode(self, out: torch.Tensor) -> dict[str, Any]:
        """The answer for these output rows: labels and probabilities, values, actions."""
        ...


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
        return self.decode(self.forward(self.encode(inputs)))

    def predict_files(self, contents: list[bytes]) -> dict[str, Any]:
        """Uploaded image files (PNG, JPEG), for models trained on images."""
        encode_files = getattr(self.encoder, "encode_files", None)
        if encode_files is None:
            raise InputError("this model does not take image files; send JSON inputs")
        return self.decode(self.forward(encode_files(contents)))

    def encode(self, inputs: list[Any]) -> np.ndarray:
        return self.encoder.encode(inputs)

    def forward(self, x: np.ndarray) -> torch.Tensor:
        return forward_all(self.network, torch.from_numpy(x))  # (N, ...) float32, as trained

    def decode(self, out: torch.Tensor) -> dict[str, Any]:
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
