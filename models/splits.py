"""What every way of preparing data shares: where a stored dataset is (`DataSource`), the
split into training, validation and test parts drawn once from the job's seed, the encoding
of targets, and the assembly of encoded parts into `PreparedData`; with them the NPZ arrays
path (`prepare_arrays`), which sequences reuse with their own encoder.

models/prepare.py (tables, images, the choice of path) and models/sequences.py (sequences,
forecasting) both build on this module, which imports neither.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch

from models.base import PreparedData, Split
from models.data import DataError, read_arrays
from models.preprocessing import ArrayPreprocessor, LabelEncoder, regression_target
from models.specs import JobSpec


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
