"""Feature and target encoding, fitted on training rows only and stored as plain JSON, so the
prediction server repeats exactly the transform the network was trained on.

Numeric features (integer, float, boolean) are standardised with the training mean and
standard deviation, a missing value becoming the mean (0 once standardised); string features
are one-hot encoded over the sorted training vocabulary, an unseen or missing value giving
all zeros. Arrays (NPZ) are flattened per row and standardised per position.

The standardisation of arrays, a chunk of rows at a time (`standardise`, `row_chunks`,
`constant_as_one`), is shared with the image and sequence preprocessors
(models/image_preprocessing.py, models/sequences.py), so all three scale alike.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from models.data import DataError

# A string column with more distinct values than this is an id or free text, not a category;
# one-hot encoding it would make an (N, huge) matrix.
MAX_CATEGORIES = 1_000
# More classes than this is almost surely a regression target sent as classification.
MAX_CLASSES = 10_000
_CHUNK_VALUES = 1 << 22  # values per step when scanning arrays: bounds float64 temporaries
_CONSTANT = 1e-12  # std <= this * max(1, |mean|): rounding noise of a constant feature


# Columns ----------------------------------------------------------------------------------


def validate_columns(
    columns: list[str], *, target: str | None, features: list[str] | None
) -> list[str]:
    """The feature columns: `features` checked against `columns`, or all but the target."""
    known = set(columns)
    if target is not None and target not in known:
        raise DataError(f"unknown target column {target!r}; columns are: {_listing(columns)}")
    if features is None:
        return [name for name in columns if name != target]
    unknown = [name for name in features if name not in known]
    if unknown:
        raise DataError(f"unknown feature columns: {_listing(unknown)}")
    if target is not None and target in features:
        raise DataError(f"target {target!r} cannot also be a feature")
    if len(set(features)) != len(features):
        raise DataError("features contains a column twice")
    return list(features)


def _listing(names: Sequence[object], limit: int = 30) -> str:
    shown = ", ".join(str(name) for name in names[:limit])
    return shown if len(names) <= limit else f"{shown}, ... ({len(names) - limit} more)"


def _is_numeric(series: pd.Series) -> bool:
    return pd.api.types.is_bool_dtype(series.dtype) or pd.api.types.is_numeric_dtype(series.dtype)


def _numeric_values(series: pd.Series, name: str) -> np.ndarray:
    """(N,) float64 with NaN for missing; refuses text and infinities."""
    try:
        if _is_numeric(series):
            values = series.to_numpy(dtype=np.float64, na_value=np.nan)
        else:  # e.g. object columns built from JSON records: numbers, bools and None
            values = series.astype(object).where(series.notna(), np.nan).astype(np.float64)
            values = values.to_numpy()
    except (TypeError, ValueError):
        example = next((v for v in series if isinstance(v, str) or not _is_number(v)), None)
        raise DataError(
            f"column {name!r} must be numeric (as in training), found {example!r}"
        ) from None
    infinite = int(np.isinf(values).sum())
    if infinite:
        raise DataError(
            f"column {name!r} has {infinite} infinite values (written as inf, or numbers "
            "too large for 64-bit floats)"
        )
    return values


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def _string_values(series: pd.Series) -> pd.Series:
    """Text with NaN for missing; non-text values (a test file's numbers) as their str()."""
    if pd.api.types.is_string_dtype(series.dtype):
        return series
    return series.astype(object).map(lambda v: v if pd.isna(v) else str(v))


# Tables -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class NumericColumn:
    name: str
    mean: float
    std: float

    @property
    def output_names(self) -> list[str]:
        return [self.name]

    def encode(self, series: pd.Series) -> np.ndarray:  # (N, 1)
        values = (_numeric_values(series, self.name) - self.mean) / self.std
        values[np.isnan(values)] = 0.0  # the training mean
        encoded = values.astype(np.float32)[:, None]
        if not np.isfinite(encoded).all():
            raise DataError(f"column {self.name!r} has values too far out of the training range")
        return encoded


@dataclass(frozen=True)
class StringColumn:
    name: str
    categories: list[str]

    @property
    def output_names(self) -> list[str]:
        return [f"{self.name}={category}" for category in self.categories]

    def encode(self, series: pd.Series) -> np.ndarray:  # (N, len(categories))
        codes = pd.Index(self.categories).get_indexer(_string_values(series))  # -1: none
        encoded = np.zeros((len(series), len(self.categories)), dtype=np.float32)
        hits = np.flatnonzero(codes >= 0)
        encoded[hits, codes[hits]] = 1.0
        return encoded


def _fit_numeric(name: str, series: pd.Series) -> NumericColumn:
    values = _numeric_values(series, name)
    present = values[~np.isnan(values)]
    if present.size == 0:
        return NumericColumn(name, 0.0, 1.0)
    # Scaled so that summing or squaring huge values (40-digit integers) cannot overflow.
    scale = float(np.abs(present).max()) or 1.0
    mean = float((present / scale).mean()) * scale
    std = float((present / scale).std()) * scale
    # A constant column's std is 0, or rounding noise: leave such a column centred, unscaled.
    if not math.isfinite(std) or std <= _CONSTANT * max(1.0, abs(mean)):
        std = 1.0
    return NumericColumn(name, mean, std)


def _fit_string(name: str, series: pd.Series, max_categories: int) -> StringColumn:
    values = _string_values(series).dropna().unique().tolist()
    if len(values) > max_categories:
        raise DataError(
            f"column {name!r} has {len(values)} distinct values in the training rows, too many "
            f"to one-hot encode (limit {max_categories}); leave it out of the features"
        )
    return StringColumn(name, sorted(str(v) for v in values))


class TabularPreprocessor:
    """Per-column encoders in feature order; `transform` maps a frame to (N, F_out) float32."""

    def __init__(self, columns: list[NumericColumn | StringColumn]) -> None:
        self.columns = columns

    @classmethod
    def fit(
        cls, frame: pd.DataFrame, *, features: list[str], max_categories: int = MAX_CATEGORIES
    ) -> TabularPreprocessor:
        """Fit on the training rows only; a column's kind follows its dtype in `frame`."""
        if not features:
            raise DataError("no feature columns to train on")
        missing = [name for name in features if name not in frame.columns]
        if missing:
            raise DataError(f"missing feature columns: {_listing(missing)}")
        columns: list[NumericColumn | StringColumn] = [
            _fit_numeric(name, frame[name])
            if _is_numeric(frame[name])
            else _fit_string(name, frame[name], max_categories)
            for name in features
        ]
        preprocessor = cls(columns)
        if not preprocessor.output_names:
            raise DataError("the feature columns hold no values in the training rows")
        return preprocessor

    @property
    def output_names(self) -> list[str]:
        return [name for column in self.columns for name in column.output_names]

    def transform(self, frame: pd.DataFrame) -> np.ndarray:  # (N, F_out) float32
        missing = [c.name for c in self.columns if c.name not in frame.columns]
        if missing:
            raise DataError(f"missing feature columns: {_listing(missing)}")
        parts = [column.encode(frame[column.name]) for column in self.columns]
        return np.concatenate(parts, axis=1) if parts else np.zeros((len(frame), 0), np.float32)

    def input_schema(self) -> dict[str, Any]:
        features: list[dict[str, Any]] = []
        for column in self.columns:
            if isinstance(column, NumericColumn):
                features.append({"name": column.name, "type": "number"})
            else:
                entry = {"name": column.name, "type": "string", "categories": column.categories}
                features.append(entry)
        return {"features": features}

    def to_json(self) -> dict[str, Any]:
        # No top-level "type" key: callers tag the dict with their own.
        columns: list[dict[str, Any]] = []
        for column in self.columns:
            if isinstance(column, NumericColumn):
                columns.append({"name": column.name, "mean": column.mean, "std": column.std})
            else:
                columns.append({"name": column.name, "categories": list(column.categories)})
        return {"columns": columns}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TabularPreprocessor:
        columns: list[NumericColumn | StringColumn] = [
            StringColumn(str(c["name"]), [str(v) for v in c["categories"]])
            if "categories" in c
            else NumericColumn(str(c["name"]), float(c["mean"]), float(c["std"]))
            for c in data["columns"]
        ]
        return cls(columns)


# Targets ----------------------------------------------------------------------------------


def _python_value(value: Any) -> Any:
    """NumPy and pandas scalars as plain Python (JSON) values: np.int64(3) -> 3."""
    return value.item() if isinstance(value, np.generic) else value


def _refuse_missing(series: pd.Series, what: str) -> None:
    missing = int(series.isna().sum())
    if missing:
        raise DataError(f"{what} has {missing} missing value{'' if missing == 1 else 's'}")


class LabelEncoder:
    """Class labels <-> indices 0..C-1, in sorted label order; labels keep their Python type."""

    def __init__(self, classes: list[Any], name: str) -> None:
        self.classes = classes
        self.name = name
        self._index = pd.Index(classes)

    @classmethod
    def fit(cls, series: pd.Series, *, name: Hashable | None = None) -> LabelEncoder:
        """Fit on every row of the target, so that no split meets an unknown label."""
        label = str(series.name if name is None else name)
        _refuse_missing(series, f"target column {label!r}")
        values = [_python_value(v) for v in series.unique().tolist()]
        if any(isinstance(v, float) and not math.isfinite(v) for v in values):
            raise DataError(f"target column {label!r} has infinite values")
        try:
            classes = sorted(values)
        except TypeError:  # mixed kinds (e.g. 1 and "a"): any fixed order will do
            classes = sorted(values, key=lambda v: (type(v).__name__, str(v)))
        if len(classes) < 2:
            raise DataError(
                f"classification needs at least 2 classes; target {label!r} has only "
                f"{len(classes)}: {classes!r}"
            )
        if len(classes) > MAX_CLASSES:
            raise DataError(
                f"target {label!r} has {len(classes)} distinct values, more than the "
                f"{MAX_CLASSES} classes allowed: is it a regression target?"
            )
        return cls(classes, label)

    def encode(self, series: pd.Series) -> np.ndarray:  # (N,) int64
        _refuse_missing(series, f"target column {self.name!r}")
        codes = self._index.get_indexer(series)
        unseen = series[codes < 0]
        if len(unseen):
            raise DataError(
                f"target {self.name!r} has labels not seen when fitting: "
                f"{_listing([repr(v) for v in unseen.unique().tolist()], limit=5)}"
            )
        return codes.astype(np.int64)

    def decode(self, indices: Sequence[int] | np.ndarray) -> list[Any]:
        return [self.classes[int(i)] for i in indices]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "classes": list(self.classes)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LabelEncoder:
        return cls(list(data["classes"]), str(data["name"]))


def regression_target(series: pd.Series) -> np.ndarray:  # (N,) float32
    """A numeric target without missing or infinite values."""
    label = f"regression target {str(series.name)!r}"
    if not _is_numeric(series):
        texts = [v for v in series if isinstance(v, str | bytes)]
        if texts:
            example = next((v for v in texts if not _is_number(v)), texts[0])
            raise DataError(f"{label} must be numeric, found string values such as {example!r}")
    _refuse_missing(series, label)
    try:
        values = series.to_numpy(dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{label} must be numeric") from None
    if not np.isfinite(values).all():
        raise DataError(f"{label} has infinite values")
    values32 = values.astype(np.float32)
    if not np.isfinite(values32).all():
        raise DataError(f"{label} has values beyond the float32 range (about ±3.4e38)")
    return values32


# Standardisation --------------------------------------------------------------------------


def row_chunks(n: int, width: int) -> Iterator[slice]:
    """Slices covering n rows of `width` values each, at most _CHUNK_VALUES values (and at
    least one row) per slice: what a scan of a large array takes at a time."""
    step = max(1, _CHUNK_VALUES // max(1, width))
    for start in range(0, n, step):
        yield slice(start, min(start + step, n))


def constant_as_one(std: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """`std` (changed in place) with 1 wherever it is not finite, 0 or rounding noise next
    to the mean: a constant feature is centred and left unscaled, never divided by ~0."""
    std[~np.isfinite(std) | (std <= _CONSTANT * np.maximum(1.0, np.abs(mean)))] = 1.0
    return std


def standardise(
    x: np.ndarray,
    mean: np.ndarray,
    std: np.ndarray,
    *,
    scale: float = 1.0,
    missing: float | None = None,
) -> np.ndarray:
    """(x * scale - mean) / std as float32, computed in float64 a chunk of rows at a time
    so that the temporaries stay bounded however large x (N, ...) is; `mean` and `std`
    broadcast against one row x[i]. `missing` replaces NaN results (0.0: a missing value
    becomes the training mean); None keeps them. Infinities are kept for the caller to
    refuse."""
    out = np.empty(x.shape, dtype=np.float32)
    for rows in row_chunks(len(x), math.prod(x.shape[1:])):
        z = x[rows].astype(np.float64)
        if scale != 1.0:
            z = z * scale
        z = (z - mean) / std
        if missing is not None:
            z = np.nan_to_num(z, nan=missing, posinf=np.inf, neginf=-np.inf)
        out[rows] = z
    return out


# Arrays -----------------------------------------------------------------------------------


class ArrayPreprocessor:
    """x (N, d1, d2, ...) -> (N, d1*d2*...) float32, standardised per position."""

    def __init__(self, input_shape: list[int], mean: np.ndarray, std: np.ndarray) -> None:
        self.input_shape = input_shape  # the shape of one row, e.g. [28, 28]
        self.mean = mean  # (F,) float64
        self.std = std  # (F,) float64, never 0

    @property
    def num_features(self) -> int:
        return int(np.prod(self.input_shape, dtype=np.int64))

    @classmethod
    def fit(cls, x: np.ndarray) -> ArrayPreprocessor:
        """Fit on the training rows; NaN counts as missing (imputed with the mean)."""
        if x.ndim == 0:
            raise DataError("x must have one entry per row")
        width = int(np.prod(x.shape[1:], dtype=np.int64))
        flat = x.reshape(len(x), width)  # (N, F), a view where possible
        _refuse_infinite(flat)
        count = np.zeros(width)
        total = np.zeros(width)
        for rows in row_chunks(len(flat), width):
            chunk = flat[rows].astype(np.float64)
            count += (~np.isnan(chunk)).sum(axis=0)
            total += np.nansum(chunk, axis=0)
        mean = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
        squares = np.zeros(width)
        for rows in row_chunks(len(flat), width):
            squares += np.nansum((flat[rows].astype(np.float64) - mean) ** 2, axis=0)
        std = np.sqrt(np.divide(squares, count, out=np.zeros_like(squares), where=count > 0))
        # Constant positions (an image's border pixels) are centred and left unscaled.
        constant_as_one(std, mean)
        return cls([int(d) for d in x.shape[1:]], mean, std)

    def transform(self, x: np.ndarray) -> np.ndarray:  # (N, F) float32
        if list(x.shape[1:]) != self.input_shape:
            raise DataError(f"x rows have shape {list(x.shape[1:])}, expected {self.input_shape}")
        flat = x.reshape(len(x), self.num_features)
        _refuse_infinite(flat)
        out = standardise(flat, self.mean, self.std, missing=0.0)  # missing -> the training mean
        if not np.isfinite(out).all():
            raise DataError("x has values too far out of the training range")
        return out

    def input_schema(self) -> dict[str, Any]:
        return {"shape": list(self.input_shape)}

    def to_json(self) -> dict[str, Any]:
        return {
            "input_shape": list(self.input_shape),
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ArrayPreprocessor:
        mean = np.asarray(data["mean"], dtype=np.float64)
        std = np.asarray(data["std"], dtype=np.float64)
        return cls([int(d) for d in data["input_shape"]], mean, std)


def _refuse_infinite(flat: np.ndarray) -> None:
    if flat.dtype.kind not in "biuf":
        raise DataError(f"x must be numeric (bool, integer or float), found dtype {flat.dtype}")
    if flat.dtype.kind == "f":
        infinite = int(np.isinf(flat).sum())
        if infinite:
            raise DataError(f"x has {infinite} infinite values")
