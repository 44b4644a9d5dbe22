"""Queue routing and the model cache (pure logic, no broker)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from models.base import PreparedData, Split, TrainResult
from models.bundle import save_bundle
from models.mlp import build
from service.dispatch import choose_queue
from service.inference import ModelCache
from service.settings import Settings


@pytest.mark.parametrize(
    ("route_to_gpu", "device", "queue"),
    [
        (False, "auto", "celery"),
        (False, "cuda", "celery"),
        (False, "cpu", "celery"),
        (True, "auto", "gpu"),
        (True, "cuda", "gpu"),
        (True, "cpu", "celery"),
    ],
)
def test_choose_queue(route_to_gpu: bool, device: str, queue: str) -> None:
    assert choose_queue(Settings(route_to_gpu=route_to_gpu), device) == queue


def _bundle(path: Path) -> str:
    config = {
        "in_features": 2,
        "out_features": 1,
        "hidden_layers": [3],
        "activation": "relu",
        "dropout": 0.0,
        "batch_norm": False,
        "init": "he",
    }
    data = PreparedData(
        task="regression",
        train=Split(torch.zeros(4, 2), torch.zeros(4)),
        val=None,
        test=None,
        num_features=2,
        num_classes=None,
        preprocessing={"type": "array", "input_shape": [2], "mean": [0, 0], "std": [1, 1]},
        input_schema={"shape": [2]},
    )
    return save_bundle(
        path,
        kind="mlp",
        interface=data.interface(),
        result=TrainResult(build(config), config, {}, 1),
    )


def test_model_cache_loads_once_and_evicts_least_recent(tmp_path: Path) -> None:
    paths = {}
    for name in ("a", "b", "c"):
        path = tmp_path / f"{name}.safetensors"
        paths[name] = (path, _bundle(path))
    cache = ModelCache(capacity=2)
    first = cache.get("a", *paths["a"])
    assert cache.get("a", *paths["a"]) is first
    paths["a"][0].unlink()  # served from memory: the file is not read again
    assert cache.get("a", *paths["a"]) is first
    cache.get("b", *paths["b"])
    cache.get("c", *paths["c"])  # evicts a
    assert len(cache) == 2
    with pytest.raises(FileNotFoundError):
        cache.get("a", *paths["a"])
    assert cache.get("c", *paths["c"]).predict([[1.0, 2.0]])["predictions"]
