"""From stored dataset files to training tensors, and from predict inputs to the same
encoding. Splits are drawn once from the job's seed; every statistic (means, standard
deviations, vocabularies) comes from the training part only, so the validation and test
parts never leak into training."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch

from models.base import InputError, PreparedData, Split
from models.data import DataError, read_arrays, read_table
from models.image_io import ImageSet, load_image_set, read_image_npz
from models.image_preprocessing import ImagePreprocessor
from models.preprocessing import (
    ArrayPreprocessor,
    LabelEncoder,
    TabularPreprocessor,
    regression_target,
    validate_columns,
)
from models.specs import CNNSpec, JobSpec, RNNSpec


@dataclass(frozen=True)
class DataSource:
    path: Path
    format: str  # csv, parquet, npz; idx and images are image sets stored as canonical NPZ

    @property
    def is_table(self) -> bool:
        return self.format in ("csv", "parquet")

    @property
    def is_image_set(self) -> bool:
        return self.format in IMAGE_FORMATS


IMAGE_FORMATS = ("idx", "images")

Rows = tuple[np.ndarray, np.ndarray, np.ndarray]  # (train, validation, test) row indices


def part_sizes(n: int, *, validation: float, test: float) -> tuple[int, int]:
    """(validation, test) sizes of n examples; a requested part gets at least one once n >= 3."""
    n_test = round(n * test)
    n_val = round(n * validation)
    if test > 0 and n_test == 0 and n >= 3:
        n_test = 1
    if validation > 0 and n_val == 0 and n >= 3:
        n_val = 1
    return n_val, n_test


def split_indices(n: int, *, validation: float, test: float, seed: int) -> Rows:
    """A seeded permutation cut into (train, validation, test) row indices."""
    perm = np.random.default_rng(seed).permutation(n)
    n_val, n_test = part_sizes(n, validation=validation, test=test)
    train = perm[n_test + n_val :]
    if len(train) == 0:
        raise DataError(f"the dataset has {n} rows: too few to split off validation and test")
    return train, perm[n_test : n_test + n_val], perm[:n_test]


def prepare_data(spec: JobSpec, source: DataSource, test_source: DataSource | None) -> PreparedData:
    from models import sequences  # it builds on this module

    if spec.task == "forecasting":
        if not source.is_table:
            raise DataError("forecasting reads a time series from a table (CSV or Parquet)")
        return sequences.prepare_forecasting(spec, source, test_source)
    if source.is_table:
        return _prepare_table(spec, source, test_source)
    if isinstance(spec.model, RNNSpec):
        return sequences.prepare_sequences(spec, source, test_source)
    if source.is_image_set or isinstance(spec.model, CNNSpec):
        return _prepare_images(spec, source, test_source)
    return prepare_arrays(spec, source, test_source)


def _target_tensors(
    spec: JobSpec, targets: list[pd.Series], train_rows: np.ndarray
) -> tuple[list[torch.Tensor], dict[str, Any], dict[str, Any]]:
    """Encode each target series; returns tensors, PreparedData fields and the output info."""
    if spec.task == "classification":
        encoder = LabelEncoder.fit(pd.concat(targets, ignore_index=True), name=targets[0].name)
        tensors = [torch.from_numpy(encoder.encode(t)) for t in targets]
        fields = {"num_classes": len(encoder.classes)}
        return tensors, fields, {"labels": encoder.classes}
    values = [regression_target(t) for t in targets]
    train_values = values[0][train_rows].astype(np.float64)
    mean = float(train_values.mean())
    std = float(train_values.std())
    std = std if std > 0 and math.isfinite(std) else 1.0
    tensors = [torch.from_numpy(((v - mean) / std).astype(np.float32)) for v in values]
    return tensors, {"target_mean": mean, "target_std": std}, {"target": str(targets[0].name)}


def _splits(
    x: torch.Tensor, y: torch.Tensor, rows: Rows, test: Split | None
) -> tuple[Split, Split | None, Split | None]:
    train_rows, val_rows, test_rows = (torch.from_numpy(r) for r in rows)
    val = Split(x[val_rows], y[val_rows]) if len(val_rows) else None
    if test is None and len(test_rows):
        test = Split(x[test_rows], y[test_rows])
    return Split(x[train_rows], y[train_rows]), val, test


def split_rows(spec: JobSpec, n: int, *, has_test_dataset: bool) -> Rows:
    training = spec.training
    return split_indices(
        n,
        validation=training.validation_split,
        test=0.0 if has_test_dataset else training.test_split,  # a test dataset replaces it
        seed=training.seed,
    )


class _FittedEncoder(Protocol):
    def transform(self, inputs: Any) -> np.ndarray: ...  # (N, F) float32

    def to_json(self) -> dict[str, Any]: ...

    def input_schema(self) -> dict[str, Any]: ...


def assemble(
    spec: JobSpec,
    encoding: str,
    encoder: _FittedEncoder,
    inputs: list[Any],  # [training dataset, test dataset?] as the encoder takes them
    targets: list[pd.Series],  # their target columns, in the same order
    rows: Rows,
) -> PreparedData:
    y, fields, output = _target_tensors(spec, targets, rows[0])
    x = [torch.from_numpy(encoder.transform(part)) for part in inputs]
    test = Split(x[1], y[1]) if len(x) > 1 else None
    train, val, test = _splits(x[0], y[0], rows, test)
    return PreparedData(
        task=spec.task,
        train=train,
        val=val,
        test=test,
        num_features=math.prod(x[0].shape[1:]),  # per row; networks flatten what they need
        num_classes=fields.get("num_classes"),
        target_mean=fields.get("target_mean", 0.0),
        target_std=fields.get("target_std", 1.0),
        preprocessing={"type": encoding, **encoder.to_json()},
        input_schema=encoder.input_schema(),
        output=output,
    )


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


def prepare_arrays(
    spec: JobSpec,
    source: DataSource,
    test_source: DataSource | None,
    *,
    encoding: str = "array",
    fit: Callable[[np.ndarray], _FittedEncoder] = ArrayPreprocessor.fit,
) -> PreparedData:
    """NPZ arrays x and y; `fit` builds the input encoder from the training rows of x."""
    arrays = [read_arrays(source.path)]
    if test_source is not None:
        arrays.append(read_arrays(test_source.path))
    rows = split_rows(spec, len(arrays[0][0]), has_test_dataset=test_source is not None)
    encoder = fit(arrays[0][0][rows[0]])
    targets = [pd.Series(y, name="y") for _, y in arrays]
    return assemble(spec, encoding, encoder, [x for x, _ in arrays], targets, rows)


def _read_images(source: DataSource) -> ImageSet:
    return load_image_set(source.path) if source.is_image_set else read_image_npz(source.path)


def _prepare_images(
    spec: JobSpec, source: DataSource, test_source: DataSource | None
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
    normalize = spec.model.normalize if isinstance(spec.model, CNNSpec) else None
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
    """Nested arrays of the training per-row shape."""

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
    """Images as nested arrays in the dataset's layout, base64 PNG/JPEG strings, or files."""

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
        from models.sequences import load_sequence_encoder

        return load_sequence_encoder(preprocessing)
    if kind == "table":
        return TableInputEncoder(TabularPreprocessor.from_json(preprocessing))
    if kind == "array":
        return ArrayInputEncoder(ArrayPreprocessor.from_json(preprocessing))
    raise ValueError(f"unknown preprocessing type {kind!r}")
