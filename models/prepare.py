"""From stored dataset files to training tensors, and from predict inputs to the same
encoding. Splits are drawn once from the job's seed; every statistic (means, standard
deviations, vocabularies) comes from the training part only, so the validation and test
parts never leak into training.

`prepare_data` chooses the path for a job: tables and images here, NPZ arrays, the split and
the assembly in models/splits.py, sequences and forecasting in models/sequences.py (both
build on models/splits.py, never on this module).
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import numpy as np
import pandas as pd

from models.base import InputError, PreparedData
from models.data import DataError, read_table
from models.image_io import ImageSet, load_image_set, read_image_npz
from models.image_preprocessing import ImagePreprocessor
from models.preprocessing import ArrayPreprocessor, TabularPreprocessor, validate_columns
from models.sequences import load_sequence_encoder, prepare_forecasting, prepare_sequences
from models.specs import JobSpec, NormalizeSpec
from models.splits import DataSource, assemble, prepare_arrays, split_rows


def prepare_data(
    spec: JobSpec,
    source: DataSource,
    test_source: DataSource | None,
    *,
    form: str = "dense",
    normalize: NormalizeSpec | None = None,
) -> PreparedData:
    """The training tensors of a job whose kind takes data in `form` (`ModelKind.data`:
    dense rows, images or sequences; an NPZ of (N, T, F) is sequences to one kind and
    grayscale images to another). `normalize`: fixed per-channel statistics for images
    instead of the training part's."""
    if spec.task == "forecasting":
        if not source.is_table:
            raise DataError("forecasting reads a time series from a table (CSV or Parquet)")
        return prepare_forecasting(spec, source, test_source)
    if source.is_table:
        return _prepare_table(spec, source, test_source)
    if form == "sequences":
        return prepare_sequences(spec, source, test_source)
    if source.is_image_set or form == "images":
        return _prepare_images(spec, source, test_source, normalize)
    return prepare_arrays(spec, source, test_source)


def _prepare_table(
    spec: JobSpec, source: DataSource, test_source: DataSource | None
) -> PreparedData:
    assert spec.target is not None
    frames = [read_table(source.path, source.format)]
    features = validate_columns(list(frames[0].columns), target=spec.target, features=spec.features)
    if test_source is not None:
        frames.append(read_table(test_source.path, test_source.format))
        validate_columns(list(frames[1].columns), target=spec.target, features=features)
    rows = split_rows(spec, len(frames[0]), has_test_dataset=test_source is not None)
    encoder = TabularPreprocessor.fit(frames[0].iloc[rows[0]], features=features)
    targets = [frame[spec.target] for frame in frames]
    return assemble(spec, "table", encoder, frames, targets, rows)


def _read_images(source: DataSource) -> ImageSet:
    return load_image_set(source.path) if source.is_image_set else read_image_npz(source.path)


def _prepare_images(
    spec: JobSpec,
    source: DataSource,
    test_source: DataSource | None,
    normalize: NormalizeSpec | None,
) -> PreparedData:
    """Images (N, C, H, W) scaled to [0, 1] and standardised per channel."""
    sets = [_read_images(source)]
    if test_source is not None:
        sets.append(_read_images(test_source))
        if sets[1].x.shape[1:] != sets[0].x.shape[1:]:
            raise DataError(
                f"the test images are {list(sets[1].x.shape[1:])} (C, H, W) but the training "
                f"images are {list(sets[0].x.shape[1:])}"
            )
    rows = split_rows(spec, len(sets[0].x), has_test_dataset=test_source is not None)
    encoder = ImagePreprocessor.fit(
        sets[0].x[rows[0]],
        normalize.mean if normalize is not None else None,
        normalize.std if normalize is not None else None,
        layout=sets[0].layout,
    )
    targets = [
        pd.Series(
            np.asarray(images.class_names)[images.y] if images.class_names else images.y,
            name="label",
        )
        for images in sets
    ]
    return assemble(spec, "image", encoder, [images.x for images in sets], targets, rows)


# Predict-time encoding ------------------------------------------------------------------


class InputEncoder(Protocol):
    def encode(self, inputs: list[Any]) -> np.ndarray: ...  # (N, F) float32


def _is_finite_number(value: Any) -> bool:
    """None (missing), bool, int or float that float32 can approach; no NaN or inf."""
    if value is None:
        return True
    if not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:  # an integer beyond float range
        return False


class TableInputEncoder:
    """Records ({column: value}) or arrays in feature order, checked against the schema."""

    def __init__(self, preprocessor: TabularPreprocessor) -> None:
        self.preprocessor = preprocessor
        schema = preprocessor.input_schema()["features"]
        self.names: list[str] = [f["name"] for f in schema]
        self.types: dict[str, str] = {f["name"]: f["type"] for f in schema}

    def _record(self, index: int, item: Any) -> dict[str, Any]:
        if isinstance(item, dict):
            missing = [n for n in self.names if n not in item]
            extra = [k for k in item if k not in self.types]
            if missing:
                raise InputError(f"input {index}: missing columns: {', '.join(missing)}")
            if extra:
                raise InputError(
                    f"input {index}: unknown columns: {', '.join(map(str, extra))} "
                    f"(the model takes: {', '.join(self.names)})"
                )
            return item
        if isinstance(item, list):
            if len(item) != len(self.names):
                raise InputError(
                    f"input {index} has {len(item)} values, expected {len(self.names)} "
                    f"(in this order: {', '.join(self.names)})"
                )
            return dict(zip(self.names, item, strict=True))
        raise InputError(f"input {index} must be an object or an array")

    def encode(self, inputs: list[Any]) -> np.ndarray:
        records = [self._record(i, item) for i, item in enumerate(inputs)]
        for i, record in enumerate(records):
            for name in self.names:
                value = record[name]
                if self.types[name] == "number":
                    ok, expected = _is_finite_number(value), "a finite number"
                else:
                    ok, expected = isinstance(value, str) or value is None, "a string"
                if not ok:
                    raise InputError(
                        f"input {i}, column {name!r}: expected {expected}, got {value!r}"
                    )
        frame = pd.DataFrame.from_records(records, columns=self.names)
        return self.preprocessor.transform(frame)


class ArrayInputEncoder:
    """Nested arrays of the training per-row shape (or one array of them)."""

    takes_arrays = True  # encode() takes an (N, ...) array as it takes nested lists

    def __init__(self, preprocessor: ArrayPreprocessor) -> None:
        self.preprocessor = preprocessor
        self.shape = tuple(preprocessor.input_schema()["shape"])

    def encode(self, inputs: list[Any]) -> np.ndarray:
        try:
            x = np.asarray(inputs, dtype=np.float64)
        except (ValueError, TypeError) as exc:
            raise InputError(
                f"inputs must be numeric arrays of shape {list(self.shape)} each: {exc}"
            ) from None
        if x.shape[1:] != self.shape:
            raise InputError(
                f"each input must have shape {list(self.shape)}; got {list(x.shape[1:])}"
            )
        if not np.isfinite(x).all():
            raise InputError("inputs contain NaN or infinite values")
        return self.preprocessor.transform(x)


class ImageInputEncoder:
    """Images as nested arrays in the dataset's layout (or one array of them), base64
    PNG/JPEG strings, or files."""

    takes_arrays = True

    def __init__(self, preprocessor: ImagePreprocessor) -> None:
        self.preprocessor = preprocessor

    def encode(self, inputs: list[Any]) -> np.ndarray:
        return self.preprocessor.decode_inputs(inputs)

    def encode_files(self, contents: list[bytes]) -> np.ndarray:
        return self.preprocessor.decode_files(contents)


def load_input_encoder(preprocessing: dict[str, Any]) -> InputEncoder:
    kind = preprocessing.get("type")
    if kind == "image":
        return ImageInputEncoder(ImagePreprocessor.from_json(preprocessing))
    if kind in ("sequence", "forecast"):
        return load_sequence_encoder(preprocessing)
    if kind == "table":
        return TableInputEncoder(TabularPreprocessor.from_json(preprocessing))
    if kind == "array":
        return ArrayInputEncoder(ArrayPreprocessor.from_json(preprocessing))
    raise ValueError(f"unknown preprocessing type {kind!r}")
