"""Every kind in the registry keeps the kind contract (`models.kind.ModelKind`): its example
spec validates, a tiny job trains, the model saves and reloads and predicts the same
numbers, and the parameter count the service checks before the job equals the trained
network's, counted from the dataset's record (or the environment) alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.datasets import load_digits, load_iris

from models.base import PreparedData
from models.bundle import load_bundle, save_bundle
from models.data import inspect_dataset
from models.describe import describe
from models.envs import make_env
from models.kind import EnvironmentKind, ModelKind
from models.prepare import DataSource
from models.registry import KINDS, get_kind
from models.specs import DQNSpec, JobSpec, TabularSpec
from tests.unit.reporting import MemoryReporter

TRAINING = {"epochs": 2, "batch_size": 16, "validation_split": 0.2, "test_split": 0.1}
RL_TRAINING = {"total_steps": 200, "eval_interval": 100, "eval_episodes": 1}


def dense_job(folder: Path) -> tuple[dict[str, Any], DataSource, list[Any]]:
    bunch = load_iris(as_frame=True)
    frame = bunch.frame.drop(columns=["target"])
    frame["species"] = [str(bunch.target_names[t]) for t in bunch.target]
    path = folder / "iris.csv"
    frame.to_csv(path, index=False)
    rows = frame.drop(columns=["species"]).head(5).to_dict(orient="records")
    fields = {"task": "classification", "target": "species"}
    return fields, DataSource(path, "csv"), rows


def image_job(folder: Path) -> tuple[dict[str, Any], DataSource, list[Any]]:
    digits = load_digits()
    x = (digits.images[:300] * 16).astype(np.uint8)  # (N, 8, 8) grayscale
    path = folder / "digits.npz"
    np.savez(path, x=x, y=digits.target[:300])
    return {"task": "classification"}, DataSource(path, "npz"), x[:5].tolist()


def sequence_job(folder: Path) -> tuple[dict[str, Any], DataSource, list[Any]]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 6, 3)).astype(np.float32)  # (N, T, F)
    y = (x[:, :, 0].sum(axis=1) > 0).astype(np.int64)
    path = folder / "sequences.npz"
    np.savez(path, x=x, y=y)
    return {"task": "classification"}, DataSource(path, "npz"), x[:5].tolist()


JOBS = {"dense": dense_job, "images": image_job, "sequences": sequence_job}


def observations(spec: JobSpec) -> list[Any]:
    """Three start observations of the job's environment, as a client would send them."""
    model = spec.model
    assert isinstance(model, DQNSpec | TabularSpec)
    env = make_env(model.env, model.env_options)
    starts = [env.reset(seed=seed)[0] for seed in range(3)]
    env.close()
    return [o.tolist() if isinstance(o, np.ndarray) else int(o) for o in starts]


def trainable(network: torch.nn.Module) -> int:
    return sum(p.numel() for p in network.parameters() if p.requires_grad)


@pytest.mark.parametrize("name", list(KINDS))
def test_every_kind_keeps_the_kind_contract(name: str, tmp_path: Path) -> None:
    kind: ModelKind = get_kind(name)
    assert kind.name == name and kind.example["kind"] == name
    if isinstance(kind, EnvironmentKind):
        spec = JobSpec.model_validate({"model": kind.example, "training": RL_TRAINING})
        env = kind.environment(spec)
        data: PreparedData | None = None
        counted = kind.parameter_count(spec, env)
        inputs: list[Any] = observations(spec)
    else:
        fields, source, inputs = JOBS[kind.data](tmp_path)
        spec = JobSpec.model_validate(
            {"dataset_id": "d", "model": kind.example, "training": TRAINING, **fields}
        )
        info = inspect_dataset(source.path, source.format)
        description = describe(spec, info, form=kind.data)
        kind.check(spec, description)
        counted = kind.parameter_count(spec, description.shape)
        data = get_kind(spec.model.kind).prepare(spec, source, None)
    assert isinstance(spec.model, kind.spec)

    reporter = MemoryReporter(tmp_path)
    result = kind.train(spec, data, reporter, cancel_poll_seconds=0.0)
    assert reporter.records and reporter.checkpoints
    assert len(reporter.records) == kind.planned_epochs(spec)
    assert counted == trainable(result.network)

    interface = result.interface or (data.interface() if data is not None else None)
    assert interface is not None
    path = tmp_path / "model.safetensors"
    sha = save_bundle(path, kind=name, interface=interface, result=result)
    meta = {"kind": name, "config": result.config, **interface}
    in_memory = kind.predictor(result.network.eval(), meta).predict(inputs)
    reloaded = load_bundle(path, expected_sha256=sha, kinds=get_kind).predict(inputs)
    assert reloaded == in_memory
    assert len(reloaded["predictions"]) == len(inputs)

    # What an exporter is told: a batch of 3 (and any free axis at 5) of that shape and
    # dtype goes in, the named output of the shape it states comes out.
    signature = kind.signature({"format_version": 1, **meta})
    [given], [named] = signature.inputs, signature.outputs
    x = torch.zeros(
        [3] + [5 if d == -1 else d for d in given.shape[1:]], dtype=getattr(torch, given.dtype)
    )
    with torch.inference_mode():
        out = result.network.eval()(x)
    assert named.shape[0] == -1 and list(out.shape) == [3, *named.shape[1:]]
    assert str(out.dtype) == f"torch.{named.dtype}"
    assert named.name == {"classification": "logits", "reinforcement": "q_values"}[spec.task]


def test_an_unknown_kind_is_named_with_the_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown model kind 'svm'; known: linear, mlp"):
        get_kind("svm")
    assert pd.Series(list(KINDS)).is_unique
