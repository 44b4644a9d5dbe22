"""A job's data, described once from its dataset's stored record (no file is read), so that
a spec is checked in milliseconds when it is posted and every model kind answers from the
same description: how many inputs one example has, how many outputs, and whether it is an
image or a sequence.

The checks here are about the data and the task (a wrong column, a regression on text, a
forecast longer than its series); what a kind needs of the data is the kind's own `check`.
Both raise `SpecError`, whose message the service answers with a 422.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Protocol

from models.base import DataShape, SpecError
from models.data import DataError, image_geometry
from models.preprocessing import validate_columns
from models.specs import JobSpec
from models.splits import IMAGE_FORMATS

NUMERIC = ("integer", "float", "boolean")


class DatasetRecord(Protocol):
    """What an upload recorded about a dataset (the service's `datasets` row)."""

    @property
    def format(self) -> str: ...  # csv, parquet, npz, idx, images

    @property
    def columns(self) -> list[Any] | None: ...  # tables: name, dtype, missing, unique

    @property
    def shape(self) -> dict[str, Any] | None: ...  # arrays: x, y, y_dtype, num_classes

    @property
    def num_rows(self) -> int: ...


@dataclass(frozen=True)
class DataDescription:
    """A job's dataset as its record describes it, read through the job's spec and the form
    its kind takes data in (`ModelKind.data`: the same (N, T, F) array is a batch of
    sequences to an rnn and of grayscale images to a cnn)."""

    spec: JobSpec
    dataset: DatasetRecord
    form: str = "dense"  # dense, images or sequences

    @property
    def is_table(self) -> bool:
        return self.dataset.columns is not None

    @property
    def x_shape(self) -> list[int]:
        return [int(d) for d in (self.dataset.shape or {}).get("x") or []]

    @cached_property
    def image_shape(self) -> tuple[int, int, int] | None:
        """(C, H, W) of one image of an image upload or an NPZ of images; None otherwise."""
        dims = self.x_shape
        if self.is_table or len(dims) not in (3, 4):
            return None
        if self.dataset.format in IMAGE_FORMATS:
            c, h, w = dims[1:]
            return c, h, w
        geometry = image_geometry(tuple(dims))
        if geometry is None:
            return None
        return geometry["channels"], geometry["height"], geometry["width"]

    @property
    def is_sequences(self) -> bool:
        """An NPZ of sequences, (N, T, F) or (N, T); a forecast's windows count as well."""
        if self.spec.task == "forecasting":
            return True
        return (
            not self.is_table
            and self.dataset.format not in IMAGE_FORMATS
            and len(self.x_shape) in (2, 3)
        )

    def what(self) -> str:
        """The data in words, for an error message."""
        if self.is_table:
            return "a table"
        return f"arrays x of shape {self.x_shape}"

    @cached_property
    def shape(self) -> DataShape:
        spec = self.spec
        if spec.task == "forecasting":
            assert spec.window is not None
            series = 1 + len(spec.features or [])
            example: tuple[int, ...] = (spec.window, series)
        elif self.is_table:
            example = (self._table_inputs(),)
        elif self.form == "sequences" and self.is_sequences:
            example = tuple(self.x_shape[1:])
            if len(example) == 1:
                example = (example[0], 1)  # (N, T) sequences have one feature
        elif self.image_shape is not None:
            example = self.image_shape
        else:
            example = tuple(self.x_shape[1:])
        return DataShape(spec.task, example, math.prod(example), self._outputs())

    def _table_inputs(self) -> int:
        """One input per numeric column and one per distinct value of a string column in
        the whole table: the training part's vocabulary is at most that."""
        spec = self.spec
        columns = {c["name"]: c for c in self.dataset.columns or []}
        features = validate_columns(list(columns), target=spec.target, features=spec.features)
        return sum(
            1 if columns[name]["dtype"] in NUMERIC else int(columns[name]["unique"])
            for name in features
        )

    def _outputs(self) -> int:
        """One logit per class, `horizon` values, or one value."""
        spec = self.spec
        if spec.task == "forecasting":
            return spec.resolved_horizon
        if spec.task != "classification":
            return 1
        if self.is_table:
            columns = self.dataset.columns or []
            return int(next(c["unique"] for c in columns if c["name"] == spec.target))
        # Float labels come without a class count in the record: count the fewest, two.
        return int((self.dataset.shape or {}).get("num_classes", 2))


def describe(
    spec: JobSpec,
    dataset: DatasetRecord,
    test_dataset: DatasetRecord | None = None,
    form: str = "dense",
) -> DataDescription:
    """Check that `dataset` (and the test dataset) can feed the spec's task, and describe
    it for a kind that takes data in `form`. Raises `SpecError` with the reason."""
    try:
        _check(spec, dataset, test_dataset)
    except DataError as exc:
        raise SpecError(str(exc)) from exc
    return DataDescription(spec, dataset, form)


def _check(spec: JobSpec, dataset: DatasetRecord, test: DatasetRecord | None) -> None:
    if spec.task == "forecasting":
        _check_series(spec, dataset)
        if test is not None:
            _check_series(spec, test)
        return
    if dataset.columns is not None:
        _check_table(spec, dataset)
    elif dataset.format in IMAGE_FORMATS:
        _check_image_set(spec, dataset)
    else:
        _check_arrays(spec, dataset)
    if test is not None:
        _check_same_layout(spec, dataset, test)


def _check_table(spec: JobSpec, dataset: DatasetRecord) -> None:
    columns = {c["name"]: c for c in dataset.columns or []}
    if spec.target is None:
        raise SpecError(
            f"'target' is required for table datasets; columns are: {', '.join(columns)}"
        )
    features = validate_columns(list(columns), target=spec.target, features=spec.features)
    if not features:
        raise SpecError("no feature columns left besides the target")
    for name in features:
        column = columns[name]
        if column["dtype"] not in NUMERIC and not column.get("unique_exact", True):
            raise SpecError(
                f"feature column {name!r} is text with about {column['unique']:,} distinct "
                "values (more than 100,000), too many to one-hot encode; leave it out of "
                "'features'"
            )
    target = columns[spec.target]
    if spec.task == "classification" and not target.get("unique_exact", True):
        raise SpecError(
            f"classification target {spec.target!r} has about {target['unique']:,} distinct "
            "values (more than 100,000): too many classes; is it an identifier, or a "
            "regression target?"
        )
    if target["missing"]:
        raise SpecError(f"target column {spec.target!r} has {target['missing']} missing values")
    if spec.task == "regression" and target["dtype"] not in NUMERIC:
        raise SpecError(
            f"regression target {spec.target!r} must be numeric; its dtype is {target['dtype']}"
        )
    if spec.task == "classification" and target["unique"] < 2:
        raise SpecError(
            f"classification needs at least 2 classes; target {spec.target!r} has "
            f"{target['unique']}"
        )


def _check_arrays(spec: JobSpec, dataset: DatasetRecord) -> None:
    shape = dataset.shape or {}
    if spec.target not in (None, "y"):
        raise SpecError("NPZ datasets train on arrays x and y: leave 'target' empty")
    if spec.features is not None:
        raise SpecError("NPZ datasets use all of x: leave 'features' empty")
    y_shape = shape.get("y", [])
    if len(y_shape) != 1:
        raise SpecError(f"y must be one-dimensional (one target per row), got shape {y_shape}")
    y_dtype = str(shape.get("y_dtype", ""))
    if spec.task == "regression" and not y_dtype.startswith(("int", "uint", "float", "bool")):
        raise SpecError(f"regression target y must be numeric; its dtype is {y_dtype}")


def _check_series(spec: JobSpec, dataset: DatasetRecord) -> None:
    """A forecasting job's table: numeric, complete input columns and enough rows."""
    assert spec.window is not None
    if dataset.columns is None:
        raise SpecError(
            "forecasting reads a time series from a table (CSV or Parquet); this dataset "
            f"is {dataset.format}"
        )
    columns = {c["name"]: c for c in dataset.columns}
    wanted = [spec.target, *(spec.features or []), spec.time_column]
    unknown = [name for name in wanted if name is not None and name not in columns]
    if unknown:
        raise SpecError(
            f"unknown columns: {', '.join(map(str, unknown))} (the table has: {', '.join(columns)})"
        )
    for name in [spec.target, *(spec.features or [])]:
        column = columns[name]
        if column["dtype"] not in NUMERIC:
            raise SpecError(f"forecasting needs numeric columns; {name!r} is {column['dtype']}")
        if column["missing"]:
            raise SpecError(
                f"column {name!r} has {column['missing']} missing values; a forecast needs a "
                "complete series"
            )
    horizon = spec.resolved_horizon
    if spec.window + horizon > dataset.num_rows:
        raise SpecError(
            f"window ({spec.window}) + horizon ({horizon}) is longer than the series "
            f"({dataset.num_rows} rows)"
        )


def _check_image_set(spec: JobSpec, dataset: DatasetRecord) -> None:
    shape = dataset.shape or {}
    if spec.target is not None or spec.features is not None:
        raise SpecError(
            "image datasets train on the images and their labels: leave 'target' and "
            "'features' empty"
        )
    if spec.task != "classification":
        raise SpecError(f"{dataset.format} datasets hold class labels: use task 'classification'")
    if int(shape.get("num_classes", 0)) < 2:
        raise SpecError(
            f"classification needs at least 2 classes; the dataset has "
            f"{shape.get('num_classes', 0)}"
        )


def _check_same_layout(spec: JobSpec, dataset: DatasetRecord, test: DatasetRecord) -> None:
    if (dataset.columns is None) != (test.columns is None):
        raise SpecError("test dataset must have the same format (table or arrays) as the dataset")
    if dataset.columns is not None:
        names = {c["name"] for c in test.columns or []}
        needed = spec.features or [c["name"] for c in dataset.columns if c["name"] != spec.target]
        missing = [n for n in [*needed, spec.target] if n not in names]
        if missing:
            raise SpecError(f"test dataset lacks columns: {', '.join(map(str, missing))}")
    elif (dataset.shape or {}).get("x", [None])[1:] != (test.shape or {}).get("x", [None])[1:]:
        raise SpecError("test dataset's x has a different per-row shape than the dataset's")
