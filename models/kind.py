"""The model-kind interface. A kind is one module that defines its spec (a member of
`models.specs.ModelSpec`) and one `ModelKind` subclass; `models.registry` is the one table
of kinds. The service and the worker ask the kind: they name none.

What a kind answers, in the order a job meets it:
- `check`: can it learn from this data (described once, from the dataset's record)? A
  `SpecError` whose message names the problem is the 422 of `POST /jobs`.
- `config` and `build`: the JSON that sizes its network (stored with the model) and the
  network it builds; `parameter_count` counts that network on the meta device, so a network
  too big for the workers is refused before it exists.
- `train`: the job itself, reporting through a `Reporter`.
- `predictor`: what serves the trained model, and `signature`, what an exporter needs to
  know (input and output names, dtypes and shapes); `export_graph`, the network with
  predict's numeric preprocessing and output step around it, as `GET /models/{id}/export`
  writes it to ONNX (`models.export`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from pydantic import BaseModel
from torch import nn

from models.base import DataShape, PreparedData, Reporter, TrainResult
from models.describe import DataDescription
from models.distillation import Teacher, distiller_for
from models.envs import EnvInfo
from models.export import ExportGraph, supervised_graph
from models.loop import train_network
from models.predictors import Servable, supervised_predictor
from models.prepare import DataSource, prepare_data
from models.specs import JobSpec

Sizing = DataShape | EnvInfo  # what a network is sized by: its data's shape, or environment
OUTPUT_NAMES = {"classification": "logits", "reinforcement": "q_values"}  # else "values"


@dataclass(frozen=True)
class TensorSignature:
    name: str
    dtype: str  # a torch dtype's name: float32, int64
    shape: tuple[int, ...]  # -1: any size (the batch; a sequence's length)


@dataclass(frozen=True)
class Signature:
    """A trained network's input and output tensors, as an exporter (ONNX) or a serving
    protocol's model metadata names them."""

    inputs: tuple[TensorSignature, ...]
    outputs: tuple[TensorSignature, ...]


def meta_parameter_count(network: nn.Module) -> int:
    return sum(p.numel() for p in network.parameters() if p.requires_grad)


class ModelKind(ABC):
    """One model kind: everything Keiko needs to know about it, in one place."""

    name: ClassVar[str]
    spec: ClassVar[type[BaseModel]]  # its member of models.specs.ModelSpec
    # "dense": rows (tables, or arrays flattened); "images": (N, C, H, W); "sequences":
    # (N, T, F); "environment": it learns from an environment and takes no dataset.
    data: ClassVar[str] = "dense"
    example: ClassVar[dict[str, Any]]  # the smallest useful `model` section (docs, tests)
    dynamic_axes: ClassVar[tuple[int, ...]] = ()  # input axes besides the batch of any size

    def check(self, spec: JobSpec, data: DataDescription) -> None:
        """Refuse data this kind cannot learn from, or a spec that cannot fit it: raise
        `SpecError` with a message naming the problem. The data and the task were checked
        already (`models.describe`); by default any data the task allows will do."""
        return None

    @abstractmethod
    def config(self, spec: JobSpec, shape: Sizing) -> dict[str, Any]:
        """JSON that `build` turns into the network: stored with the model, so it holds
        every number the network's shape depends on. `shape` is the data's (supervised
        kinds) or the environment's (reinforcement learning)."""

    @abstractmethod
    def build(self, config: dict[str, Any]) -> nn.Module: ...

    def parameter_count(self, spec: JobSpec, shape: Sizing) -> int:
        """Trainable parameters of the network `spec` trains on data of `shape`, built on the
        meta device: shapes without storage, so a network far too big for the machine is
        counted in milliseconds."""
        with torch.device("meta"):
            network = self.build(self.config(spec, shape))
        return meta_parameter_count(network)

    def prepare(
        self, spec: JobSpec, source: DataSource, test_source: DataSource | None
    ) -> PreparedData:
        """The training tensors from the job's dataset files, in the form this kind takes."""
        return prepare_data(spec, source, test_source, form=self.data)

    def train(
        self,
        spec: JobSpec,
        data: PreparedData | None,
        reporter: Reporter,
        *,
        teacher: Teacher | None = None,
        cancel_poll_seconds: float = 1.0,
    ) -> TrainResult:
        """The shared supervised loop (`models.loop`) on the network `config` sizes from the
        prepared data (None for the kinds that make their own environments). `teacher`: the
        model the spec's `model.distillation` names, loaded (`models.distillation`)."""
        assert data is not None, f"kind {self.name} trains on a dataset"
        config = self.config(spec, data.shape())
        return train_network(
            self.build,
            config,
            spec,
            data,
            reporter,
            distiller=distiller_for(spec, teacher, data),
            cancel_poll_seconds=cancel_poll_seconds,
        )

    def planned_epochs(self, spec: JobSpec) -> int:
        """History entries the job will write (epochs; RL kinds: evaluations)."""
        return spec.training.epochs

    def signature(self, meta: dict[str, Any]) -> Signature:
        """The network's input and output tensors, from its bundle's metadata: the network
        is built from its config and run once on an example input."""
        example = self.example_input(meta)
        network = self.build(meta["config"]).eval()
        with torch.inference_mode():
            out = network(example)
        shape = [-1, *example.shape[1:]]
        for axis in self.dynamic_axes:
            shape[axis] = -1
        name = OUTPUT_NAMES.get(meta["task"], "values")
        return Signature(
            inputs=(TensorSignature("input", _dtype_name(example.dtype), tuple(shape)),),
            outputs=(TensorSignature(name, _dtype_name(out.dtype), (-1, *out.shape[1:])),),
        )

    def example_input(self, meta: dict[str, Any]) -> torch.Tensor:
        """Two examples of what the network takes (after the stored preprocessing)."""
        if "example_shape" not in meta:
            raise ValueError(
                "this model was saved before bundles recorded their input shape; train it "
                "again to export it"
            )
        return torch.zeros((2, *meta["example_shape"]), dtype=torch.float32)

    def predictor(self, network: nn.Module, meta: dict[str, Any]) -> Servable:
        """What serves the trained `network`; `meta` is its bundle's metadata (the config,
        the stored preprocessing, the labels)."""
        return supervised_predictor(network, meta)

    def export_graph(self, network: nn.Module, meta: dict[str, Any]) -> ExportGraph:
        """The trained `network` as an exporter traces it (`GET /models/{id}/export`): by
        default the stored preprocessing of its bundle in front and predict's output step
        behind (`models.export.supervised_graph`), `dynamic_axes` left free. A kind whose
        network cannot be exported raises `models.export.ExportError`, naming why."""
        return supervised_graph(network, meta, dynamic_axes=self.dynamic_axes)


class EnvironmentKind(ModelKind):
    """A kind that learns from an environment (reinforcement learning): its network is sized
    by the environment's description (`config` gets an `EnvInfo`), and it takes no data."""

    data: ClassVar[str] = "environment"

    @abstractmethod
    def environment(self, spec: JobSpec) -> EnvInfo:
        """The job's environment, described; raises `EnvError` when it cannot be made."""

    @abstractmethod
    def train(
        self,
        spec: JobSpec,
        data: PreparedData | None,
        reporter: Reporter,
        *,
        teacher: Teacher | None = None,
        cancel_poll_seconds: float = 1.0,
    ) -> TrainResult: ...

    def planned_epochs(self, spec: JobSpec) -> int:
        return -(-spec.training.total_steps // spec.resolved_eval_interval)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")
