"""Checks of a job spec against its datasets, before the job is recorded: a wrong column
or an impossible task is a 422 now rather than a failed job later."""

from __future__ import annotations

from models.data import DataError
from models.preprocessing import validate_columns
from models.specs import JobSpec
from service.errors import Unprocessable
from service.tables import Dataset

NUMERIC = ("integer", "float", "boolean")


def check_job(spec: JobSpec, dataset: Dataset, test_dataset: Dataset | None) -> None:
    if dataset.columns is not None:
        _check_table(spec, dataset)
    else:
        _check_arrays(spec, dataset)
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
