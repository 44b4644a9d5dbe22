"""Sequences for recurrent networks: NPZ arrays of (N, T, F) sequences, and time series in a
table cut into windows for forecasting.

Forecasting splits in time order: the last windows are the test part, the ones before them
validation, the rest training. A window's targets are the `horizon` rows after its inputs,
so the last `horizon - 1` windows before each boundary would have targets inside the next
part; they are dropped, and no training target ever falls in the validation or test time
range. Inputs are standardised per column with the statistics of the rows the training
windows cover, and networks forecast changes from each window's last value
(`models.blocks.LastValueResidual`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch

from models.base import InputError, PreparedData, Split
from models.data import DataError, read_table
from models.metrics import regression_metrics
from models.preprocessing import constant_as_one, standardise
from models.specs import JobSpec
from models.splits import DataSource, part_sizes, prepare_arrays


def _stats(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and std of (..., F) values, NaN ignored; a constant feature keeps 1."""
    flat = values.reshape(-1, values.shape[-1]).astype(np.float64)
    with np.errstate(invalid="ignore"):
        mean = np.nan_to_num(np.nanmean(flat, axis=0)) if len(flat) else np.zeros(flat.shape[1])
        std = np.nan_to_num(np.nanstd(flat, axis=0)) if len(flat) else np.ones(flat.shape[1])
    return mean, constant_as_one(std, mean)


class SequencePreprocessor:
    """x (N, T, F) or (N, T) -> (N, T, F) float32, standardised per feature over N and T;
    missing values (NaN) become the training mean."""

    def __init__(self, input_shape: list[int], mean: np.ndarray, std: np.ndarray) -> None:
        self.input_shape = input_shape  # one sequence as uploaded: [T, F] or [T]
        self.mean = mean  # (F,)
        self.std = std  # (F,)

    @classmethod
    def fit(cls, x: np.ndarray) -> SequencePreprocessor:
        if x.ndim not in (2, 3):
            raise DataError(
                f"sequences must be x of shape (N, T, F) or (N, T); got {list(x.shape)}"
            )
        if np.isinf(x).any():
            raise DataError("x holds infinite values")
        mean, std = _stats(x if x.ndim == 3 else x[..., None])
        return cls([int(d) for d in x.shape[1:]], mean, std)

    def transform(self, x: np.ndarray) -> np.ndarray:  # (N, T, F) float32
        if list(x.shape[1:]) != self.input_shape:
            raise DataError(
                f"sequences have shape {list(x.shape[1:])}, expected {self.input_shape}"
            )
        x = x if x.ndim == 3 else x[..., None]
        out = standardise(x, self.mean, self.std, missing=0.0)
        if not np.isfinite(out).all():
            raise DataError("x has infinite values or values too far out of the training range")
        return out

    def input_schema(self) -> dict[str, Any]:
        return {"shape": list(self.input_shape)}

    def to_json(self) -> dict[str, Any]:
        return {
            "input_shape": self.input_shape,
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SequencePreprocessor:
        return cls(
            [int(d) for d in data["input_shape"]],
            np.asarray(data["mean"], dtype=np.float64),
            np.asarray(data["std"], dtype=np.float64),
        )


def prepare_sequences(
    spec: JobSpec, source: DataSource, test_source: DataSource | None
) -> PreparedData:
    """NPZ sequences x (N, T, F) with one target y per sequence (classification or regression)."""
    return prepare_arrays(
        spec, source, test_source, encoding="sequence", fit=SequencePreprocessor.fit
    )


# Forecasting ----------------------------------------------------------------------------


def _series(spec: JobSpec, source: DataSource, columns: list[str]) -> np.ndarray:
    """The input columns (R, F) float64 in time order, refused if not numeric or incomplete."""
    frame = read_table(source.path, source.format)
    missing = [c for c in [*columns, spec.time_column] if c is not None and c not in frame]
    if missing:
        raise DataError(
            f"unknown columns: {', '.join(map(str, missing))} (the table has: "
            f"{', '.join(map(str, frame.columns))})"
        )
    if spec.time_column is not None:
        frame = frame.iloc[np.argsort(_time_values(frame[spec.time_column]), kind="stable")]
    values = np.empty((len(frame), len(columns)), dtype=np.float64)
    for i, name in enumerate(columns):
        column = frame[name]
        if not (pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column)):
            raise DataError(f"forecasting needs numeric columns; {name!r} is {column.dtype}")
        values[:, i] = column.to_numpy(dtype=np.float64, na_value=np.nan)
        gaps = int(np.count_nonzero(~np.isfinite(values[:, i])))
        if gaps:
            raise DataError(
                f"column {name!r} has {gaps} missing or infinite values; a forecast needs a "
                "complete series (fill or drop them first)"
            )
    return values


def _time_values(column: pd.Series) -> np.ndarray:
    """Sortable values of the time column: its numbers, or its values parsed as dates."""
    if pd.api.types.is_numeric_dtype(column):
        values = column.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        try:
            parsed = pd.to_datetime(column, errors="raise", utc=True, format="mixed")
        except (ValueError, TypeError) as exc:
            raise DataError(
                f"time column {column.name!r} is neither numbers nor dates: {exc}"
            ) from None
        values = parsed.to_numpy(dtype="datetime64[ns]").astype(np.int64).astype(np.float64)
        values[parsed.isna().to_numpy()] = np.nan
    if np.isnan(values).any():
        raise DataError(f"time column {column.name!r} has missing values")
    return values


def windows(values: np.ndarray, window: int, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """Inputs (N, window, F) of rows [t, t + window) and targets (N, horizon) of column 0's
    rows [t + window, t + window + horizon), for every t that fits."""
    rows = len(values)
    if window + horizon > rows:
        raise DataError(
            f"window ({window}) + horizon ({horizon}) is longer than the series ({rows} rows)"
        )
    count = rows - window - horizon + 1
    view = np.lib.stride_tricks.sliding_window_view(values, window, axis=0)  # (R-W+1, F, W)
    x = view[:count].transpose(0, 2, 1).copy()
    y = np.lib.stride_tricks.sliding_window_view(values[window:, 0], horizon)[:count].copy()
    return x, y


def time_split(
    count: int, *, validation: float, test: float, horizon: int
) -> tuple[slice, slice, slice]:
    """(train, validation, test) window ranges in time order, with a gap of horizon - 1
    windows before each boundary so no target crosses into the next part."""
    n_val, n_test = part_sizes(count, validation=validation, test=test)
    gap = horizon - 1
    test_start = count - n_test
    val_end = test_start - (gap if n_test else 0)
    val_start = val_end - n_val
    train_end = val_start - (gap if n_val else 0)
    if train_end < 1:
        raise DataError(
            f"{count} windows are too few to split off validation and test parts "
            f"(with a gap of {gap} windows before each, for horizon {horizon})"
        )
    return slice(0, train_end), slice(val_start, val_end), slice(test_start, count)


def seasonal_naive(x: np.ndarray, horizon: int, period: int) -> np.ndarray:
    """(N, horizon) forecasts: each step's value one season (or more) earlier, from column 0
    of the windows x (N, W, F); period <= W."""
    steps = np.arange(1, horizon + 1)
    back = period * np.ceil(steps / period).astype(np.int64)  # seasons back, >= step
    return x[:, x.shape[1] + steps - 1 - back, 0]


class ForecastPreprocessor:
    """Windows (N, W, F) of [target, *features] -> standardised float32, per column."""

    def __init__(
        self,
        columns: list[str],
        mean: np.ndarray,
        std: np.ndarray,
        *,
        window: int,
        horizon: int,
        time_column: str | None,
    ) -> None:
        self.columns = columns
        self.mean = mean
        self.std = std
        self.window = window
        self.horizon = horizon
        self.time_column = time_column

    def transform(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.std).astype(np.float32)

    def input_schema(self) -> dict[str, Any]:
        return {
            "window": self.window,
            "horizon": self.horizon,
            "columns": self.columns,
            "shape": [self.window, len(self.columns)],
            "time_column": self.time_column,
        }

    def to_json(self) -> dict[str, Any]:
        return {**self.input_schema(), "mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ForecastPreprocessor:
        return cls(
            [str(c) for c in data["columns"]],
            np.asarray(data["mean"], dtype=np.float64),
            np.asarray(data["std"], dtype=np.float64),
            window=int(data["window"]),
            horizon=int(data["horizon"]),
            time_column=data.get("time_column"),
        )


def _baselines(x: np.ndarray, y: np.ndarray, period: int | None, horizon: int) -> dict[str, float]:
    if len(y) == 0:
        return {}
    truth = torch.from_numpy(y)
    naive = np.repeat(x[:, -1, :1], horizon, axis=1)  # the last value, carried forward
    found = {"naive_rmse": regression_metrics(truth, torch.from_numpy(naive))["rmse"]}
    if period is not None:
        guess = torch.from_numpy(seasonal_naive(x, horizon, period))
        found["seasonal_naive_rmse"] = regression_metrics(truth, guess)["rmse"]
    return found


def prepare_forecasting(
    spec: JobSpec, source: DataSource, test_source: DataSource | None
) -> PreparedData:
    """Windows of a table's series; see the module docstring for the split."""
    assert spec.target is not None and spec.window is not None
    columns = [spec.target, *(spec.features or [])]
    window, horizon = spec.window, spec.resolved_horizon
    x, y = windows(_series(spec, source, columns), window, horizon)
    training = spec.training
    train, val, test = time_split(
        len(x),
        validation=training.validation_split,
        test=0.0 if test_source is not None else training.test_split,
        horizon=horizon,
    )
    parts = {"train": (x[train], y[train]), "validation": (x[val], y[val])}
    if test_source is not None:
        parts["test"] = windows(_series(spec, test_source, columns), window, horizon)
    else:
        parts["test"] = (x[test], y[test])
    # Statistics of the rows the training windows' inputs cover (nothing later).
    covered = _series_rows(x[train])
    mean, std = _stats(covered)
    encoder = ForecastPreprocessor(
        columns, mean, std, window=window, horizon=horizon, time_column=spec.time_column
    )
    target_mean, target_std = float(mean[0]), float(std[0])

    def split(part: str) -> Split | None:
        xs, ys = parts[part]
        if len(xs) == 0:
            return None
        scaled = ((ys - target_mean) / target_std).astype(np.float32)
        return Split(torch.from_numpy(encoder.transform(xs)), torch.from_numpy(scaled))

    train_split = split("train")
    assert train_split is not None
    baselines = {
        part: _baselines(xs, ys, spec.seasonal_period, horizon) for part, (xs, ys) in parts.items()
    }
    return PreparedData(
        task="forecasting",
        train=train_split,
        val=split("validation"),
        test=split("test"),
        num_features=window * len(columns),
        num_classes=None,
        target_mean=target_mean,
        target_std=target_std,
        preprocessing={"type": "forecast", **encoder.to_json()},
        input_schema=encoder.input_schema(),
        output={"target": spec.target, "horizon": horizon},
        baselines=baselines,
    )


def _series_rows(x: np.ndarray) -> np.ndarray:
    """The distinct rows (R, F) that consecutive windows x (N, W, F) cover."""
    if len(x) == 0:
        return x.reshape(0, x.shape[-1])
    return np.concatenate([x[:, 0, :], x[-1, 1:, :]])


# Predict-time encoding ------------------------------------------------------------------


def _numeric(array_like: Any, label: str, shape: list[int]) -> np.ndarray:
    try:
        array = np.asarray(array_like, dtype=np.float64)
    except (ValueError, TypeError):
        raise InputError(f"{label} must be a rectangular array of numbers {shape}") from None
    if list(array.shape) != shape:
        raise InputError(f"{label} has shape {list(array.shape)}; the model takes {shape}")
    if not np.isfinite(array).all():
        raise InputError(f"{label} holds NaN or infinite values")
    return array


class SequenceInputEncoder:
    """Each input one sequence, a nested array of the training shape [T, F] (or [T])."""

    def __init__(self, preprocessor: SequencePreprocessor) -> None:
        self.preprocessor = preprocessor

    def encode(self, inputs: list[Any]) -> np.ndarray:
        shape = self.preprocessor.input_shape
        x = (
            np.stack([_numeric(item, f"input {i}", shape) for i, item in enumerate(inputs)])
            if inputs
            else np.empty((0, *shape))
        )
        return self.preprocessor.transform(x)


class ForecastInputEncoder:
    """Each input the last `window` rows of the series: records ({column: value}), arrays
    in column order ([target, *features]), or plain numbers when the target is the only
    column."""

    def __init__(self, preprocessor: ForecastPreprocessor) -> None:
        self.preprocessor = preprocessor

    def _rows(self, index: int, item: Any) -> np.ndarray:  # (W, F)
        columns, window = self.preprocessor.columns, self.preprocessor.window
        label = f"input {index}"
        if not isinstance(item, list):
            raise InputError(f"{label} must be a list of the last {window} rows of the series")
        if len(item) != window:
            raise InputError(f"{label} needs the last {window} rows, got {len(item)}")
        if all(isinstance(row, dict) for row in item):
            for step, row in enumerate(item):
                missing = [c for c in columns if c not in row]
                extra = [c for c in row if c not in columns]
                if missing or extra:
                    raise InputError(
                        f"{label}, row {step}: the rows take columns {', '.join(columns)}"
                        + (f"; missing {', '.join(missing)}" if missing else "")
                        + (f"; unknown {', '.join(map(str, extra))}" if extra else "")
                    )
            item = [[row[c] for c in columns] for row in item]
        elif len(columns) == 1 and all(not isinstance(row, list | dict) for row in item):
            item = [[value] for value in item]
        if any(isinstance(v, bool) or not isinstance(v, int | float) for row in item
               for v in (row if isinstance(row, list) else [row])):  # fmt: skip
            raise InputError(
                f"{label}: every value must be a number (rows in the order {', '.join(columns)})"
            )
        return _numeric(item, label, [window, len(columns)])

    def encode(self, inputs: list[Any]) -> np.ndarray:
        shape = [self.preprocessor.window, len(self.preprocessor.columns)]
        rows = [self._rows(i, item) for i, item in enumerate(inputs)]
        return self.preprocessor.transform(np.stack(rows) if rows else np.empty((0, *shape)))


def load_sequence_encoder(
    preprocessing: dict[str, Any],
) -> SequenceInputEncoder | ForecastInputEncoder:
    if preprocessing["type"] == "sequence":
        return SequenceInputEncoder(SequencePreprocessor.from_json(preprocessing))
    return ForecastInputEncoder(ForecastPreprocessor.from_json(preprocessing))
