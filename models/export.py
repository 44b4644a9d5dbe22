"""A trained model as an ONNX file: the network with every numeric step of `POST /predict`
inside the graph, and what cannot be in a graph described in its metadata.

Inside the graph: the standardisation of numeric columns, arrays and sequences (a missing
value, NaN, becoming the training mean), the pixel scaling, layout and per-channel
normalisation of images, the forecasting residual (a module of the network already), the
one-hot encoding of an environment's state numbers, and the output step of predict:
softmax (sigmoid for a single logit) and the index of the most likely class, the target
standardisation undone for regression and forecasting, the greedy action of a policy.
Outside it, in the file's `metadata_props` (one entry per field, each value JSON): the
input's layout and order, which positions are the one-hot encoding of which string column,
the class labels, the task and the outputs' meaning.

Every statistic comes from the bundle's stored preprocessing, as modules
(`models.fronts`); nothing is fitted again. A kind describes its graph through
`ModelKind.export_graph` (`models.kind`): by default a supervised network behind its stored
preprocessing (`supervised_graph`); the reinforcement-learning kinds put their observation
encoding in front instead (`policy_graph`).
"""

from __future__ import annotations

import io
import json
import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, cast

import onnx
import torch
from torch import nn

from models.bundle import load_network
from models.fronts import Front, input_front

FORMATS = ("onnx",)
METADATA_FORMAT = "keiko-onnx/1"
OPSET = 18
# The exporters keep global state (torch.export's tracing context, TorchScript's export
# globals): one export at a time per process.
_EXPORTING = threading.Lock()


class ExportError(ValueError):
    """A model that cannot be exported; the message, naming why, is the 422."""


@dataclass(frozen=True)
class GraphInput:
    name: str
    example: torch.Tensor  # a batch of two, each free axis at its recorded size (or more)
    dynamic: dict[int, str]  # axis -> its name in the ONNX file: {0: "batch", 1: "time"}
    description: dict[str, Any]  # JSON for the metadata: what goes in, and how


@dataclass(frozen=True)
class GraphOutput:
    name: str
    description: dict[str, Any]  # JSON for the metadata; axis 0 of every output is the batch


@dataclass
class ExportGraph:
    """What an exporter traces: `module` takes the inputs as a client holds them (after only
    what cannot be in a graph) and returns the outputs, in order."""

    module: nn.Module
    inputs: tuple[GraphInput, ...]
    outputs: tuple[GraphOutput, ...]
    metadata: dict[str, Any] = field(default_factory=dict)  # JSON: labels, columns, task


class Exportable(Protocol):
    """What `export_onnx` asks of a kind (`models.kind.ModelKind` answers it)."""

    def build(self, config: dict[str, Any]) -> nn.Module: ...

    def export_graph(self, network: nn.Module, meta: dict[str, Any]) -> ExportGraph: ...


# Modules inside the graph ---------------------------------------------------------------


class ClassificationHead(nn.Module):
    """Logits -> (probabilities, index of the most likely class), as predict reports them
    (`models.loop.Objective.probabilities`): softmax, or for one logit the sigmoid of class
    1 beside its complement."""

    def forward(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if out.shape[-1] == 1:
            p1 = torch.sigmoid(out)  # (N, 1)
            probabilities = torch.cat([1 - p1, p1], dim=-1)
        else:
            probabilities = torch.softmax(out, dim=-1)
        return probabilities, probabilities.argmax(dim=-1)


class ValueHead(nn.Module):
    """Standardised outputs -> the target's units (`Objective.values` and `unscale`):
    (N,) for regression, (N, horizon) for forecasting."""

    def __init__(self, mean: float, std: float, *, squeeze: bool) -> None:
        super().__init__()
        self.mean, self.std, self.squeeze = mean, std, squeeze

    def forward(self, out: torch.Tensor) -> torch.Tensor:
        if self.squeeze:
            out = out.squeeze(-1)
        return out * self.std + self.mean


class GreedyHead(nn.Module):
    """Q-values -> (Q-values, the greedy action), as a policy's predict answers."""

    def forward(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return q, q.argmax(dim=-1)


class OneHot(nn.Module):
    """State numbers (N,) int64 -> one-hot rows (N, states): a row of the identity, as the
    DQN's observation encoder makes them."""

    rows: torch.Tensor

    def __init__(self, states: int) -> None:
        super().__init__()
        self.register_buffer("rows", torch.eye(states, dtype=torch.float32))

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return self.rows[states]


class Pipeline(nn.Module):
    """preprocess -> network -> head: the whole of predict's numeric path."""

    def __init__(self, preprocess: nn.Module, network: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.preprocess, self.network, self.head = preprocess, network, head

    def forward(self, x: torch.Tensor) -> Any:
        return self.head(self.network(self.preprocess(x)))


# Supervised models ----------------------------------------------------------------------


def _example(shape: Sequence[int], dynamic: dict[int, str], dtype: torch.dtype) -> torch.Tensor:
    """A batch of two; a free axis other than the batch at 3 or more, so that the tracer
    neither fixes it (sizes 0 and 1 are fixed) nor ties it to the batch (same size)."""
    sizes = [2, *shape]
    for axis in dynamic:
        if axis > 0:
            sizes[axis] = max(sizes[axis], 3)
    return torch.zeros(sizes, dtype=dtype)


def _supervised_head(meta: dict[str, Any]) -> tuple[nn.Module, tuple[GraphOutput, ...], str]:
    """Predict's output step for the model's task: its module, outputs and description."""
    if meta["task"] == "classification":
        classes = len(meta["output"]["labels"])
        outputs = (
            GraphOutput(
                "probabilities",
                {
                    "dtype": "float32",
                    "shape": [-1, classes],
                    "meaning": "each class's probability, in `labels` order",
                },
            ),
            GraphOutput(
                "prediction",
                {"dtype": "int64", "shape": [-1], "meaning": "the index in `labels` of the "
                 "most likely class"},
            ),
        )  # fmt: skip
        return ClassificationHead(), outputs, "softmax (sigmoid for one logit), argmax"
    forecasting = meta["task"] == "forecasting"
    horizon = int(meta["output"].get("horizon", 1))
    head = ValueHead(float(meta["target_mean"]), float(meta["target_std"]), squeeze=not forecasting)
    values = GraphOutput(
        "values",
        {
            "dtype": "float32",
            "shape": [-1, horizon] if forecasting else [-1],
            "meaning": f"the target's next {horizon} values" if forecasting else "the target",
            "units": "the target's (its training standardisation undone)",
        },
    )
    return head, (values,), "the target's standardisation undone"


def _check_example_shape(front: Front, example: torch.Tensor, meta: dict[str, Any]) -> None:
    """The preprocessing's output fits the network's input as the bundle recorded it."""
    if "example_shape" not in meta:
        return
    with torch.inference_mode():
        got = list(front.module(example).shape[1:])
    recorded = [int(d) for d in meta["example_shape"]]
    free = {front.time_axis} if front.time_axis is not None else set()
    if len(got) != len(recorded) or any(
        g != r for axis, (g, r) in enumerate(zip(got, recorded, strict=False)) if axis not in free
    ):
        raise ExportError(
            f"the stored preprocessing gives examples of shape {got}, but the network was "
            f"trained on {recorded}"
        )


def supervised_graph(
    network: nn.Module, meta: dict[str, Any], *, dynamic_axes: Sequence[int] = ()
) -> ExportGraph:
    """A supervised network behind its stored preprocessing, ending in predict's outputs.
    `dynamic_axes`: the network input's axes of any size besides the batch
    (`ModelKind.dynamic_axes`); only a sequence's time axis can be one."""
    preprocessing = meta.get("preprocessing", {})
    front = input_front(preprocessing)
    if front is None:
        raise ExportError(
            f"this model's preprocessing ({preprocessing.get('type')!r}) cannot be exported"
        )
    dynamic = {0: "batch"}
    for axis in dynamic_axes:
        if front.time_axis is None or axis != front.time_axis + 1:
            raise ExportError(
                f"the network takes inputs of any size on axis {axis}, which its stored "
                "preprocessing does not pass through"
            )
        dynamic[axis] = "time"
    example = _example(front.shape, dynamic, torch.float32)
    _check_example_shape(front, example, meta)
    head, outputs, last_step = _supervised_head(meta)
    shape = [-1 if axis in dynamic else size for axis, size in enumerate([-1, *front.shape])]
    description = {"name": "input", "dtype": "float32", "shape": shape, **front.description}
    metadata: dict[str, Any] = {**front.metadata}
    if meta["task"] == "classification":
        metadata["labels"] = list(meta["output"]["labels"])
    else:
        metadata["target"] = meta["output"].get("target")
    metadata["in_graph"] = [front.step, "the network", last_step]
    return ExportGraph(
        Pipeline(front.module, network, head),
        (GraphInput("input", example, dynamic, description),),
        outputs,
        metadata,
    )


# Policies -------------------------------------------------------------------------------


def policy_graph(
    network: nn.Module,
    meta: dict[str, Any],
    *,
    discrete: bool,
    size: int,
    one_hot: bool,
) -> ExportGraph:
    """A Q-function behind its observation encoding (`models.rl.episodes.ObservationEncoder`:
    vectors as they are, state numbers as one-hot rows or, for a Q-table, indices), ending
    in the Q-values and the greedy action."""
    front: nn.Module = OneHot(size) if discrete and one_hot else nn.Identity()
    actions = int(meta["output"]["num_actions"])
    if discrete:
        shape, dtype = [], torch.int64
        encoding = f"one state number per example, 0..{size - 1}"
    else:
        shape, dtype = [size], torch.float32
        encoding = "one observation vector per example, as the environment gives it"
    dynamic = {0: "batch"}
    graph_input = GraphInput(
        "input",
        _example(shape, dynamic, dtype),
        dynamic,
        {
            "name": "input",
            "dtype": str(dtype).removeprefix("torch."),
            "shape": [-1, *shape],
            "encoding": encoding,
        },
    )
    outputs = (
        GraphOutput(
            "q_values",
            {"dtype": "float32", "shape": [-1, actions], "meaning": "each action's Q-value"},
        ),
        GraphOutput("action", {"dtype": "int64", "shape": [-1], "meaning": "the greedy action"}),
    )
    metadata: dict[str, Any] = {
        "env": meta.get("env"),
        "num_actions": actions,
        "in_graph": [
            "one-hot encoding of the state" if discrete and one_hot else "the observation",
            "the network" if not discrete or one_hot else "the Q-table (a Gather)",
            "argmax",
        ],
    }
    if "action_names" in meta["output"]:
        metadata["action_names"] = meta["output"]["action_names"]
    return ExportGraph(Pipeline(front, network, GreedyHead()), (graph_input,), outputs, metadata)


# The ONNX file --------------------------------------------------------------------------


def _free_axes(model: onnx.ModelProto, graph: ExportGraph) -> bool:
    """Whether every axis meant to be of any size is symbolic in the file's inputs."""
    for proto, wanted in zip(model.graph.input, graph.inputs, strict=False):
        dims = proto.type.tensor_type.shape.dim
        for axis in wanted.dynamic:
            if axis >= len(dims) or dims[axis].HasField("dim_value"):
                return False
    return True


def _to_onnx(graph: ExportGraph) -> onnx.ModelProto:
    """The traced graph, through torch.export (the supported exporter). Where it cannot
    keep an axis free, it falls back on the TorchScript exporter: torch.export unrolls an
    Elman RNN (`nn.RNN`; LSTM and GRU become ONNX's LSTM and GRU) over the example's time
    steps, fixing the sequence length, where TorchScript emits ONNX's RNN operator; a
    network torch.export cannot trace at all may still be traceable by TorchScript."""
    args = tuple(i.example for i in graph.inputs)
    input_names = [i.name for i in graph.inputs]
    output_names = [o.name for o in graph.outputs]
    module = graph.module.eval()
    failure: Exception | None = None
    with _EXPORTING, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            dims = tuple(
                {axis: torch.export.Dim(name) for axis, name in i.dynamic.items()}
                for i in graph.inputs
            )
            program = torch.onnx.export(
                module,
                args,
                dynamo=True,
                input_names=input_names,
                output_names=output_names,
                dynamic_shapes=dims,
                opset_version=OPSET,
                verbose=False,
            )
            assert program is not None
            model = program.model_proto
            if _free_axes(model, graph):
                return model
        except Exception as exc:  # any tracing failure: try the other exporter
            failure = exc
        buffer = io.BytesIO()
        axes = {i.name: dict(i.dynamic) for i in graph.inputs}
        axes.update({o.name: {0: "batch"} for o in graph.outputs})
        try:
            torch.onnx.export(
                module,
                args,
                cast(Any, buffer),  # typed as a path; TorchScript's exporter writes to files too
                dynamo=False,
                input_names=input_names,
                output_names=output_names,
                dynamic_axes=axes,
                opset_version=OPSET,
            )
        except Exception as exc:
            reason = _summary(failure if failure is not None else exc)
            raise ExportError(f"this network cannot be exported to ONNX: {reason}") from exc
    return onnx.load_from_string(buffer.getvalue())


def _summary(exc: Exception, limit: int = 300) -> str:
    """The first line of a tracer's error (they run to pages), at most `limit` characters."""
    line = next((part for part in str(exc).splitlines() if part.strip()), type(exc).__name__)
    return line if len(line) <= limit else line[: limit - 3] + "..."


def to_onnx(graph: ExportGraph, metadata: dict[str, Any]) -> bytes:
    """The ONNX file of `graph`, with `metadata` and the graph's own in `metadata_props`
    (one entry per field, its value JSON)."""
    model = _to_onnx(graph)
    fields = {
        "format": METADATA_FORMAT,
        **metadata,
        **graph.metadata,
        "inputs": [i.description for i in graph.inputs],
        "outputs": [{"name": o.name, **o.description} for o in graph.outputs],
    }
    del model.metadata_props[:]
    for key, value in fields.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    model.producer_name = "keiko"
    model.doc_string = (
        "Exported by Keiko. metadata_props: one entry per field, each value JSON; see "
        "`inputs` for what goes in and `outputs` for what comes out."
    )
    return model.SerializeToString()


def export_onnx(
    path: Path,
    *,
    expected_sha256: str | None,
    kinds: Callable[[str], Exportable],
    metadata: dict[str, Any] | None = None,
) -> bytes:
    """The ONNX file of the model bundle at `path` (checked against its sha256): its kind's
    `export_graph` of the rebuilt network. `metadata`: more fields for `metadata_props`
    (the model's id). Raises `ExportError` naming why a model cannot be exported."""
    kind, network, meta = load_network(path, expected_sha256=expected_sha256, kinds=kinds)
    try:
        graph = kind.export_graph(network, meta)
    except ExportError:
        raise
    except (KeyError, ValueError) as exc:  # a bundle without what the graph needs
        raise ExportError(f"this model cannot be exported: {exc}") from exc
    extra = {"kind": meta["kind"], "task": meta["task"], **(metadata or {})}
    return to_onnx(graph, extra)
