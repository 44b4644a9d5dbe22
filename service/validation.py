"""Checks of a job spec against its datasets (or environment) and the service's caps, before
the job is recorded: a wrong column, an impossible task or a network too big for the
workers is a 422 now rather than a failed job later."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from models import cnn, mlp, rnn
from models.cnn import SpecError, check_cnn_spec
from models.data import DataError, image_geometry
from models.envs import EnvError, EnvInfo, check_env
from models.linear import poly_feature_count
from models.preprocessing import validate_columns
from models.rl.dqn import build_dqn, dqn_config
from models.specs import CNNSpec, DQNSpec, JobSpec, LinearSpec, MLPSpec, RNNSpec, TabularSpec
from models.splits import IMAGE_FORMATS
from service.errors import Unprocessable
from service.settings import Settings
from service.tables import Dataset

NUMERIC = ("integer", "float", "boolean")


def check_environment(spec: JobSpec, settings: Settings) -> None:
    """A reinforcement-learning job's environment exists here and suits the kind."""
    model = spec.model
    assert isinstance(model, DQNSpec | TabularSpec)
    try:
        info = check_env(model.env, model.env_options, tabular=isinstance(model, TabularSpec))
    except EnvError as exc:
        raise Unprocessable(str(exc)) from exc
    _check_time_limit(spec, settings)
    _check_size(parameter_count(spec, info), settings)


def check_job(
    spec: JobSpec, dataset: Dataset, test_dataset: Dataset | None, settings: Settings
) -> None:
    _check_time_limit(spec, settings)
    _check_data(spec, dataset, test_dataset)
    _check_size(parameter_count(spec, dataset), settings)


def _check_data(spec: JobSpec, dataset: Dataset, test_dataset: Dataset | None) -> None:
    if spec.task == "forecasting":
        _check_series(spec, dataset)
        if test_dataset is not None:
            _check_series(spec, test_dataset)
        return
    if isinstance(spec.model, RNNSpec):
        _check_sequences(dataset)
    if dataset.columns is not None:
        _check_table(spec, dataset)
    elif dataset.format in IMAGE_FORMATS:
        _check_image_set(spec, dataset)
    else:
        _check_arrays(spec, dataset)
    if isinstance(spec.model, CNNSpec):
        _check_cnn(spec.model, dataset)
    if test_dataset is not None:
        _check_same_layout(spec, dataset, test_dataset)


def _check_table(spec: JobSpec, dataset: Dataset) -> None:
    columns = {c["name"]: c for c in dataset.columns or []}
    if spec.target is None:
        raise Unprocessable(
            f"'target' is required for table datasets; columns are: {', '.join(columns)}"
        )
    try:
        features = validate_columns(list(columns), target=spec.target, features=spec.features)
    except DataError as exc:
        raise Unprocessable(str(exc)) from exc
    if not features:
        raise Unprocessable("no feature columns left besides the target")
    target = columns[spec.target]
    if target["missing"]:
        raise Unprocessable(f"target column {spec.target!r} has {target['missing']} missing values")
    if spec.task == "regression" and target["dtype"] not in NUMERIC:
        raise Unprocessable(
            f"regression target {spec.target!r} must be numeric; its dtype is {target['dtype']}"
        )
    if spec.task == "classification" and target["unique"] < 2:
        raise Unprocessable(
            f"classification needs at least 2 classes; target {spec.target!r} has "
            f"{target['unique']}"
        )


def _check_arrays(spec: JobSpec, dataset: Dataset) -> None:
    shape = dataset.shape or {}
    if spec.target not in (None, "y"):
        raise Unprocessable("NPZ datasets train on arrays x and y: leave 'target' empty")
    if spec.features is not None:
        raise Unprocessable("NPZ datasets use all of x: leave 'features' empty")
    y_shape = shape.get("y", [])
    if len(y_shape) != 1:
        raise Unprocessable(f"y must be one-dimensional (one target per row), got shape {y_shape}")
    y_dtype = str(shape.get("y_dtype", ""))
    if spec.task == "regression" and not y_dtype.startswith(("int", "uint", "float", "bool")):
        raise Unprocessable(f"regression target y must be numeric; its dtype is {y_dtype}")


def _check_series(spec: JobSpec, dataset: Dataset) -> None:
    """A forecasting job's table: numeric, complete input columns and enough rows."""
    assert spec.window is not None
    if dataset.columns is None:
        raise Unprocessable(
            "forecasting reads a time series from a table (CSV or Parquet); this dataset "
            f"is {dataset.format}"
        )
    columns = {c["name"]: c for c in dataset.columns}
    wanted = [spec.target, *(spec.features or []), spec.time_column]
    unknown = [name for name in wanted if name is not None and name not in columns]
    if unknown:
        raise Unprocessable(
            f"unknown columns: {', '.join(map(str, unknown))} (the table has: {', '.join(columns)})"
        )
    for name in [spec.target, *(spec.features or [])]:
        column = columns[name]
        if column["dtype"] not in NUMERIC:
            raise Unprocessable(f"forecasting needs numeric columns; {name!r} is {column['dtype']}")
        if column["missing"]:
            raise Unprocessable(
                f"column {name!r} has {column['missing']} missing values; a forecast needs a "
                "complete series"
            )
    horizon = spec.resolved_horizon
    if spec.window + horizon > dataset.num_rows:
        raise Unprocessable(
            f"window ({spec.window}) + horizon ({horizon}) is longer than the series "
            f"({dataset.num_rows} rows)"
        )


def _check_sequences(dataset: Dataset) -> None:
    dims = (dataset.shape or {}).get("x") or []
    if dataset.columns is not None or dataset.format in IMAGE_FORMATS or len(dims) not in (2, 3):
        what = "a table" if dataset.columns is not None else f"x of shape {dims}"
        raise Unprocessable(
            f"the rnn kind trains on sequences, and the dataset holds {what}: upload an NPZ "
            "with x shaped (N, T, F) or (N, T), or use task 'forecasting' on a time series"
        )


def _check_image_set(spec: JobSpec, dataset: Dataset) -> None:
    shape = dataset.shape or {}
    if spec.target is not None or spec.features is not None:
        raise Unprocessable(
            "image datasets train on the images and their labels: leave 'target' and "
            "'features' empty"
        )
    if spec.task != "classification":
        raise Unprocessable(
            f"{dataset.format} datasets hold class labels: use task 'classification'"
        )
    if int(shape.get("num_classes", 0)) < 2:
        raise Unprocessable(
            f"classification needs at least 2 classes; the dataset has "
            f"{shape.get('num_classes', 0)}"
        )


def image_shape(dataset: Dataset) -> tuple[int, int, int] | None:
    """(C, H, W) of one image of an image dataset or an NPZ of images; None otherwise."""
    dims = (dataset.shape or {}).get("x") or []
    if dataset.columns is not None or len(dims) not in (3, 4):
        return None
    if dataset.format in IMAGE_FORMATS:
        c, h, w = (int(d) for d in dims[1:])
        return c, h, w
    geometry = image_geometry(tuple(int(d) for d in dims))
    if geometry is None:
        return None
    return geometry["channels"], geometry["height"], geometry["width"]


def _check_cnn(model: CNNSpec, dataset: Dataset) -> None:
    shape = image_shape(dataset)
    if shape is None:
        dims = (dataset.shape or {}).get("x")
        what = "a table" if dataset.columns is not None else f"arrays x of shape {dims}"
        raise Unprocessable(
            f"the cnn kind trains on images, and the dataset holds {what}: upload images "
            "(IDX files, a zip of class folders, or an NPZ with x shaped (N, H, W), "
            "(N, H, W, C) or (N, C, H, W), C = 1 or 3)"
        )
    try:
        check_cnn_spec(model, shape)
    except SpecError as exc:
        c, h, w = shape
        raise Unprocessable(f"{exc} (the images are {c}x{h}x{w}, C x H x W)") from exc


def _check_same_layout(spec: JobSpec, dataset: Dataset, test: Dataset) -> None:
    if (dataset.columns is None) != (test.columns is None):
        raise Unprocessable(
            "test dataset must have the same format (table or arrays) as the dataset"
        )
    if dataset.columns is not None:
        names = {c["name"] for c in test.columns or []}
        needed = spec.features or [c["name"] for c in dataset.columns if c["name"] != spec.target]
        missing = [n for n in [*needed, spec.target] if n not in names]
        if missing:
            raise Unprocessable(f"test dataset lacks columns: {', '.join(map(str, missing))}")
    elif (dataset.shape or {}).get("x", [None])[1:] != (test.shape or {}).get("x", [None])[1:]:
        raise Unprocessable("test dataset's x has a different per-row shape than the dataset's")


# Caps that keep one job from exhausting a worker -------------------------------------------


def _check_time_limit(spec: JobSpec, settings: Settings) -> None:
    limit = spec.training.time_limit_seconds
    if limit is not None and limit > settings.max_job_seconds:
        raise Unprocessable(
            f"training.time_limit_seconds is {limit:g}, more than this service allows: "
            f"{settings.max_job_seconds:g} s (KEIKO_MAX_JOB_SECONDS)"
        )


def _check_size(count: int, settings: Settings) -> None:
    if count > settings.max_parameters:
        raise Unprocessable(
            f"the network would have {count:,} parameters, more than this service allows: "
            f"{settings.max_parameters:,} (KEIKO_MAX_PARAMETERS); make it smaller"
        )


def meta_parameter_count(
    build: Callable[[dict[str, Any]], nn.Module], config: dict[str, Any]
) -> int:
    """Trainable parameters of `build(config)`, built on the meta device: shapes without
    storage, so a network far too big for the machine is counted in milliseconds."""
    with torch.device("meta"):
        network = build(config)
    return sum(p.numel() for p in network.parameters() if p.requires_grad)


def parameter_count(spec: JobSpec, source: Dataset | EnvInfo) -> int:
    """Trainable parameters of the network `spec` trains on `source`: a dataset's record
    (checked by `check_job` first) or an environment's description. A string feature counts
    one input per distinct value in the whole table: the training part's vocabulary is at
    most that."""
    model = spec.model
    if isinstance(model, TabularSpec):
        return 0  # a Q-table is learned without gradients
    if isinstance(model, DQNSpec):
        assert isinstance(source, EnvInfo)
        return meta_parameter_count(build_dqn, dqn_config(model, source))
    assert isinstance(source, Dataset)
    dataset = source
    outputs = _num_outputs(spec, dataset)
    if isinstance(model, LinearSpec):
        binary = spec.task == "classification" and outputs == 2
        out = 1 if spec.task == "regression" or binary else outputs
        width = poly_feature_count(_num_inputs(spec, dataset), model.degree)
        return width * out + (out if model.fit_intercept else 0)
    if isinstance(model, MLPSpec):
        config = mlp.network_config(model, _num_inputs(spec, dataset), outputs, spec.task)
        return meta_parameter_count(mlp.build, config)
    if isinstance(model, RNNSpec):
        inputs = _sequence_features(spec, dataset)
        return meta_parameter_count(
            rnn.build, rnn.network_config(model, inputs, outputs, spec.task)
        )
    shape = image_shape(dataset)
    assert shape is not None  # a cnn job: check_job refused anything but images
    return meta_parameter_count(cnn.build, cnn.network_config(model, shape, outputs))


def _num_outputs(spec: JobSpec, dataset: Dataset) -> int:
    """One logit per class, `horizon` values, or one value."""
    if spec.task == "forecasting":
        return spec.resolved_horizon
    if spec.task != "classification":
        return 1
    if dataset.columns is not None:
        return int(next(c["unique"] for c in dataset.columns if c["name"] == spec.target))
    # Float labels come without a class count in the record: count the fewest, two.
    return int((dataset.shape or {}).get("num_classes", 2))


def _num_inputs(spec: JobSpec, dataset: Dataset) -> int:
    """Inputs of one example as the dense kinds see it, flattened."""
    if spec.task == "forecasting":
        assert spec.window is not None
        return spec.window * (1 + len(spec.features or []))
    if dataset.columns is None:  # arrays or images: one input per element of a row
        return math.prod(int(d) for d in (dataset.shape or {}).get("x", [0, 0])[1:])
    columns = {c["name"]: c for c in dataset.columns}
    features = validate_columns(list(columns), target=spec.target, features=spec.features)
    return sum(
        1 if columns[name]["dtype"] in NUMERIC else int(columns[name]["unique"])
        for name in features
    )


def _sequence_features(spec: JobSpec, dataset: Dataset) -> int:
    """F of sequences (N, T, F); (N, T) sequences have one."""
    if spec.task == "forecasting":
        return 1 + len(spec.features or [])
    dims = (dataset.shape or {}).get("x") or []
    return int(dims[2]) if len(dims) == 3 else 1
