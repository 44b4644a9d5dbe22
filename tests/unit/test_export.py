"""ONNX export (`models.export`): for each exportable kind a tiny model is trained, saved,
exported, and run with onnxruntime on inputs that went through only what cannot be in a
graph (one-hot of string columns, read from the file's metadata); its outputs equal
`POST /predict`'s (`Predictor.predict` on the reloaded bundle) within 1e-5 (1e-4 for
recurrent networks)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest
import torch
from sklearn.datasets import load_diabetes, load_digits, load_iris

from models.base import PreparedData
from models.bundle import load_bundle, save_bundle
from models.checkpoint import load_checkpoint
from models.export import ExportError, export_onnx, supervised_graph
from models.kind import EnvironmentKind
from models.prepare import DataSource
from models.registry import get_kind
from models.specs import JobSpec
from tests.unit.reporting import MemoryReporter
from tests.unit.test_kinds import RL_TRAINING, observations

TRAINING = {"epochs": 3, "batch_size": 16, "validation_split": 0.2, "test_split": 0.0, "seed": 0}


def train_bundle(folder: Path, spec: JobSpec, source: DataSource | None) -> tuple[Path, str]:
    kind = get_kind(spec.model.kind)
    data: PreparedData | None = None
    if not isinstance(kind, EnvironmentKind):
        assert source is not None
        data = kind.prepare(spec, source, None)
    result = kind.train(spec, data, MemoryReporter(folder), cancel_poll_seconds=0.0)
    interface = result.interface or (data.interface() if data is not None else None)
    assert interface is not None
    path = folder / "model.safetensors"
    sha = save_bundle(path, kind=kind.name, interface=interface, result=result)
    return path, sha


def exported(path: Path, sha: str) -> tuple[ort.InferenceSession, dict[str, Any]]:
    """The ONNX file of the bundle, in an onnxruntime session, and its metadata, parsed."""
    body = export_onnx(path, expected_sha256=sha, kinds=get_kind, metadata={"model_id": "m1"})
    onnx.checker.check_model(onnx.load_from_string(body))
    session = ort.InferenceSession(body, providers=["CPUExecutionProvider"])
    fields = {k: json.loads(v) for k, v in session.get_modelmeta().custom_metadata_map.items()}
    return session, fields


def predicted(path: Path, sha: str, inputs: list[Any]) -> dict[str, Any]:
    return load_bundle(path, expected_sha256=sha, kinds=get_kind).predict(inputs)


def table_rows(metadata: dict[str, Any], records: list[dict[str, Any]]) -> np.ndarray:
    """What a client does before the graph, from the metadata alone: each record as one row
    of `features`, numbers raw (NaN when missing), strings one-hot over their categories."""
    [described] = metadata["inputs"]
    rows = np.zeros((len(records), len(described["features"])), dtype=np.float32)
    for i, record in enumerate(records):
        for column in metadata["columns"]:
            value = record[column["name"]]
            if column["type"] == "number":
                rows[i, column["positions"][0]] = np.nan if value is None else value
            elif value in column["categories"]:
                rows[i, column["positions"][column["categories"].index(value)]] = 1.0
    return rows


def assert_same_classes(
    session: ort.InferenceSession, x: np.ndarray, answer: dict[str, Any], atol: float = 1e-5
) -> None:
    probabilities, prediction = session.run(["probabilities", "prediction"], {"input": x})
    np.testing.assert_allclose(probabilities, answer["probabilities"], rtol=0, atol=atol)
    labels = answer["labels"]
    assert [labels[i] for i in prediction] == answer["predictions"]


def colour_iris(folder: Path) -> tuple[Path, list[dict[str, Any]]]:
    """Iris with a string column (one-hot encoded) that carries some signal."""
    bunch = load_iris(as_frame=True)
    frame = bunch.frame.drop(columns=["target"])
    frame.columns = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    rng = np.random.default_rng(0)
    frame["colour"] = np.where(
        rng.random(150) < 0.7, np.array(["red", "green", "blue"])[bunch.target], "grey"
    )
    frame["species"] = [str(bunch.target_names[t]) for t in bunch.target]
    path = folder / "iris.csv"
    frame.to_csv(path, index=False)
    records = frame.drop(columns=["species"]).iloc[::15].to_dict(orient="records")
    records[0]["colour"] = "violet"  # unseen: all zeros
    records[1]["sepal_width"] = None  # missing: the training mean
    return path, records


@pytest.mark.parametrize(
    ("model", "task", "target"),
    [
        ({"kind": "mlp", "hidden_layers": [16], "batch_norm": True, "dropout": 0.1},
         "classification", "species"),
        ({"kind": "linear", "degree": 2}, "classification", "species"),
        ({"kind": "linear"}, "classification", "binary"),  # one logit: sigmoid
    ],
)  # fmt: skip
def test_a_table_with_a_string_column(
    tmp_path: Path, model: dict[str, Any], task: str, target: str
) -> None:
    path, records = colour_iris(tmp_path)
    if target == "binary":
        frame = pd.read_csv(path)
        frame["binary"] = frame.pop("species") == "setosa"
        frame.to_csv(path, index=False)
    spec = JobSpec.model_validate(
        {"dataset_id": "d", "task": task, "target": target, "model": model, "training": TRAINING}
    )
    bundle = train_bundle(tmp_path, spec, DataSource(path, "csv"))
    session, metadata = exported(*bundle)

    assert metadata["task"] == task and metadata["kind"] == model["kind"]
    assert metadata["format"] == "keiko-onnx/1" and metadata["model_id"] == "m1"
    colour = next(c for c in metadata["columns"] if c["name"] == "colour")
    assert colour == {
        "name": "colour",
        "type": "string",
        "positions": [4, 5, 6, 7],
        "categories": ["blue", "green", "grey", "red"],
    }
    assert metadata["inputs"][0]["features"][4:] == [
        "colour=blue", "colour=green", "colour=grey", "colour=red"
    ]  # fmt: skip
    [batch] = session.get_inputs()[0].shape[:1]
    assert isinstance(batch, str)  # any batch size

    answer = predicted(*bundle, records)
    assert metadata["labels"] == answer["labels"]
    assert_same_classes(session, table_rows(metadata, records), answer)


def test_a_regression_answers_in_the_target_units(tmp_path: Path) -> None:
    frame = load_diabetes(as_frame=True, scaled=False).frame  # target 25..346
    frame["sex"] = frame["sex"].map({1.0: "f", 2.0: "m"})
    path = tmp_path / "diabetes.csv"
    frame.to_csv(path, index=False)
    records = frame.drop(columns=["target"]).iloc[::40].to_dict(orient="records")
    for model in ({"kind": "mlp", "hidden_layers": [16]}, {"kind": "linear"}):
        spec = JobSpec.model_validate(
            {"dataset_id": "d", "task": "regression", "target": "target", "model": model,
             "training": TRAINING}
        )  # fmt: skip
        bundle = train_bundle(tmp_path, spec, DataSource(path, "csv"))
        session, metadata = exported(*bundle)
        assert metadata["target"] == "target" and metadata["outputs"][0]["shape"] == [-1]
        [values] = session.run(["values"], {"input": table_rows(metadata, records)})
        answer = predicted(*bundle, records)["predictions"]
        assert np.mean(answer) > 50  # in the target's units, not standardised
        np.testing.assert_allclose(values, answer, rtol=1e-5, atol=1e-5)


def digits_npz(folder: Path, layout: str) -> tuple[Path, np.ndarray]:
    digits = load_digits()
    x = (digits.images[:300] * 16).astype(np.uint8)  # (N, 8, 8) grayscale, 0..255
    if layout == "NHWC":  # three channels, each a shifted copy
        x = np.stack([x, np.roll(x, 1, axis=1), 255 - x], axis=-1)
    path = folder / "digits.npz"
    np.savez(path, x=x, y=digits.target[:300])
    return path, x[:7]


@pytest.mark.parametrize(
    ("layout", "model"),
    [
        ("NHW", {"kind": "cnn", "architecture": "simple",
                 "normalize": {"mean": [0.3], "std": [0.4]}}),
        ("NHWC", {"kind": "cnn", "layers": [
            {"type": "conv", "out_channels": 4, "kernel_size": 3, "padding": "same"},
            {"type": "batch_norm"}, {"type": "relu"}, {"type": "max_pool", "kernel_size": 2},
            {"type": "conv", "out_channels": 4, "kernel_size": 3, "depthwise_separable": True},
            {"type": "relu"}, {"type": "global_avg_pool"}], "head": [8]}),
        ("NHWC", {"kind": "mlp", "hidden_layers": [16]}),
        ("NHW", {"kind": "linear"}),
    ],
)  # fmt: skip
def test_images_are_scaled_and_normalised_in_the_graph(
    tmp_path: Path, layout: str, model: dict[str, Any]
) -> None:
    path, images = digits_npz(tmp_path, layout)
    spec = JobSpec.model_validate(
        {"dataset_id": "d", "task": "classification", "model": model,
         "training": {**TRAINING, "epochs": 1}}
    )  # fmt: skip
    bundle = train_bundle(tmp_path, spec, DataSource(path, "npz"))
    session, metadata = exported(*bundle)
    [described] = metadata["inputs"]
    assert described["shape"] == [-1, *images.shape[1:]]
    if model["kind"] == "cnn":  # images; the dense kinds read an NPZ as arrays
        assert described["layout"] == layout
    if "normalize" in model:
        assert "mean [0.3] and std [0.4]" in metadata["in_graph"][0]
    # The raw pixels go in, as predict takes them in nested arrays.
    answer = predicted(*bundle, images.tolist())
    assert_same_classes(session, images.astype(np.float32), answer)


def test_arrays_are_flattened_and_standardised_in_the_graph(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(3.0, 2.0, size=(200, 4, 3)).astype(np.float32)
    y = x[:, :, 0].sum(axis=1) * 10 + 100
    path = tmp_path / "arrays.npz"
    np.savez(path, x=x, y=y)
    spec = JobSpec.model_validate(
        {"dataset_id": "d", "task": "regression", "model": {"kind": "mlp", "hidden_layers": [8]},
         "training": TRAINING}
    )  # fmt: skip
    bundle = train_bundle(tmp_path, spec, DataSource(path, "npz"))
    session, metadata = exported(*bundle)
    assert metadata["inputs"][0]["shape"] == [-1, 4, 3]
    [values] = session.run(["values"], {"input": x[:6]})
    np.testing.assert_allclose(values, predicted(*bundle, x[:6].tolist())["predictions"],
                               rtol=1e-5, atol=1e-5)  # fmt: skip


@pytest.mark.parametrize("cell", ["gru", "lstm", "rnn"])
def test_sequences_take_any_length(tmp_path: Path, cell: str) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(1.0, 3.0, size=(200, 6, 3)).astype(np.float32)  # (N, T, F)
    y = (x[:, :, 0].sum(axis=1) > 6).astype(np.int64)
    path = tmp_path / "sequences.npz"
    np.savez(path, x=x, y=y)
    model = {"kind": "rnn", "cell": cell, "hidden_size": 8, "num_layers": 2,
             "bidirectional": cell == "gru", "head": [4]}  # fmt: skip
    spec = JobSpec.model_validate(
        {"dataset_id": "d", "task": "classification", "model": model, "training": TRAINING}
    )
    bundle = train_bundle(tmp_path, spec, DataSource(path, "npz"))
    session, metadata = exported(*bundle)
    assert metadata["inputs"][0]["shape"] == [-1, -1, 3]
    assert session.get_inputs()[0].shape[:2] == ["batch", "time"]
    assert_same_classes(session, x[:5], predicted(*bundle, x[:5].tolist()), atol=1e-4)

    # Longer (and shorter) sequences than the training ones: the graph takes them, and
    # answers what the network answers on them after the stored standardisation.
    kind = get_kind("rnn")
    stored = load_checkpoint(bundle[0], expected_sha256=bundle[1])
    network = kind.build(stored.meta["config"])
    network.load_state_dict(stored.model_state)
    pipeline = kind.export_graph(network.eval(), stored.meta).module
    for steps in (2, 11):
        longer = rng.normal(1.0, 3.0, size=(4, steps, 3)).astype(np.float32)
        with torch.inference_mode():
            expected, _ = pipeline(torch.from_numpy(longer))
        [got] = session.run(["probabilities"], {"input": longer})
        np.testing.assert_allclose(got, expected.numpy(), rtol=0, atol=1e-4)


@pytest.mark.parametrize(
    "model",
    [{"kind": "rnn", "cell": "lstm", "hidden_size": 8}, {"kind": "mlp", "hidden_layers": [16]}],
)
def test_forecasts_include_the_residual_and_the_target_units(
    tmp_path: Path, model: dict[str, Any]
) -> None:
    t = np.arange(240)
    frame = pd.DataFrame(
        {"sales": 500 + 2.0 * t + 20 * np.sin(2 * np.pi * t / 12), "price": np.cos(t / 5) + 3}
    )
    path = tmp_path / "series.csv"
    frame.to_csv(path, index=False)
    spec = JobSpec.model_validate(
        {"dataset_id": "d", "task": "forecasting", "target": "sales", "features": ["price"],
         "window": 12, "horizon": 3, "model": model, "training": TRAINING}
    )  # fmt: skip
    bundle = train_bundle(tmp_path, spec, DataSource(path, "csv"))
    session, metadata = exported(*bundle)
    assert metadata["inputs"][0]["columns"] == ["sales", "price"]
    assert metadata["window"] == 12 and metadata["horizon"] == 3
    assert metadata["outputs"][0]["shape"] == [-1, 3]
    # Windows beyond the training range (the trend carries the level further).
    values = frame.to_numpy(dtype=np.float64)
    later = values + np.array([1000.0, 0.0])
    windows = np.stack([later[i : i + 12] for i in range(0, 200, 40)])
    answer = predicted(*bundle, windows.tolist())["predictions"]
    [got] = session.run(["values"], {"input": windows.astype(np.float32)})
    assert np.min(answer) > 1400
    tolerance = 1e-4 if model["kind"] == "rnn" else 1e-5
    np.testing.assert_allclose(got, answer, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize(
    "model",
    [
        {"kind": "dqn", "env": "CartPole-v1", "hidden_layers": [16], "dueling": True},
        {"kind": "dqn", "env": "GridWorld", "hidden_layers": [8]},  # one-hot in the graph
        {"kind": "q_learning", "env": "GridWorld"},  # a Gather on the Q-table
        {"kind": "sarsa", "env": "FrozenLake-v1"},
    ],
)
def test_policies(tmp_path: Path, model: dict[str, Any]) -> None:
    spec = JobSpec.model_validate({"model": model, "training": RL_TRAINING})
    bundle = train_bundle(tmp_path, spec, None)
    session, metadata = exported(*bundle)
    inputs = observations(spec)
    discrete = isinstance(inputs[0], int)
    if discrete:
        inputs = [*inputs, 1, 3, 5]
    answer = predicted(*bundle, inputs)
    x = np.asarray(inputs, dtype=np.int64 if discrete else np.float32)
    q_values, action = session.run(["q_values", "action"], {"input": x})
    np.testing.assert_allclose(q_values, answer["q_values"], rtol=0, atol=1e-5)
    assert action.tolist() == answer["actions"]
    assert metadata["task"] == "reinforcement" and metadata["env"]["name"] == model["env"]
    assert metadata["num_actions"] == q_values.shape[1]
    if model["env"] == "GridWorld":
        assert metadata["action_names"]


def test_a_preprocessing_without_a_graph_is_refused_naming_it() -> None:
    meta = {"task": "regression", "preprocessing": {"type": "audio"}, "output": {}}
    with pytest.raises(ExportError, match="preprocessing \\('audio'\\) cannot be exported"):
        supervised_graph(torch.nn.Identity(), meta)
