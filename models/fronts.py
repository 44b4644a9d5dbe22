"""A model bundle's stored preprocessing as torch modules: from the numbers a client sends
to `POST /predict` to what the network takes (`Front.module`), and back (`Front.inverse`).

An ONNX export puts `module` in front of the network (`models.export`); a distillation
maps a student's training batches to its teacher's inputs through the student's `inverse`
and the teacher's `module` (`models.distillation`). Every statistic comes from the stored
preprocessing, read by the classes that predict reads it with (`models.preprocessing`,
`models.image_preprocessing`, `models.sequences`); nothing is fitted again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from models.image_preprocessing import ImagePreprocessor
from models.preprocessing import ArrayPreprocessor, NumericColumn, TabularPreprocessor
from models.sequences import ForecastPreprocessor, SequencePreprocessor


def _float_buffer(values: Sequence[float] | np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.asarray(values, dtype=np.float64), dtype=torch.float32)


class Standardise(nn.Module):
    """(x * scale - mean) / std with the stored statistics, broadcast against one example
    from the right; with `missing`, a NaN (a missing value) becomes 0, the training mean."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self,
        mean: torch.Tensor,
        std: torch.Tensor,
        *,
        scale: float = 1.0,
        missing: bool = False,
    ) -> None:
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.scale = scale
        self.missing = missing

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale != 1.0:
            x = x * self.scale
        z = (x - self.mean) / self.std
        if self.missing:
            z = torch.where(torch.isnan(z), torch.zeros_like(z), z)
        return z


class Reshape(nn.Module):
    """An example's axes rearranged: flattened (arrays), a feature axis added (sequences
    of one feature, grayscale images), channels moved first (NHWC images); and back
    (`INVERSE`), from what a network takes to what a client sends."""

    INVERSE: ClassVar[dict[str, str]] = {
        "add_last": "drop_last",
        "add_channel": "drop_channel",
        "channels_first": "channels_last",
        "none": "none",
    }

    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.how == "flatten":
            return x.flatten(1)
        if self.how == "add_last":
            return x.unsqueeze(-1)
        if self.how == "add_channel":
            return x.unsqueeze(1)
        if self.how == "channels_first":
            return x.permute(0, 3, 1, 2)
        if self.how == "drop_last":
            return x.squeeze(-1)
        if self.how == "drop_channel":
            return x.squeeze(1)
        if self.how == "channels_last":
            return x.permute(0, 2, 3, 1)
        return x


class Unstandardise(nn.Module):
    """The inverse of `Standardise`: (z * std + mean) / scale, a network's input back to the
    numbers a client sends (a value that was missing comes back as the training mean)."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, standardise: Standardise) -> None:
        super().__init__()
        self.register_buffer("mean", standardise.mean.clone())
        self.register_buffer("std", standardise.std.clone())
        self.scale = standardise.scale

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = z * self.std + self.mean
        return x / self.scale if self.scale != 1.0 else x


@dataclass
class Front:
    """The preprocessing part of a graph: its module, the input as a client sends it (one
    example's shape and dtype), and the metadata that describes it."""

    module: nn.Module
    step: str  # what it does, for the metadata
    shape: list[int]  # one example, as sent
    description: dict[str, Any]
    metadata: dict[str, Any] = field(default_factory=dict)
    time_axis: int | None = None  # the example axis that is the time (sequences)
    inverse: nn.Module = field(default_factory=nn.Identity)  # network input -> as sent


def _table_front(preprocessing: dict[str, Any]) -> Front:
    table = TabularPreprocessor.from_json(preprocessing)
    names = table.output_names
    mean, std = np.zeros(len(names)), np.ones(len(names))
    columns: list[dict[str, Any]] = []
    position = 0
    for column in table.columns:
        width = len(column.output_names)
        positions = list(range(position, position + width))
        if isinstance(column, NumericColumn):
            mean[position], std[position] = column.mean, column.std
            columns.append({"name": column.name, "type": "number", "positions": positions})
        else:
            columns.append(
                {
                    "name": column.name,
                    "type": "string",
                    "positions": positions,
                    "categories": list(column.categories),
                }
            )
        position += width
    module = Standardise(_float_buffer(mean), _float_buffer(std), missing=True)
    description = {
        "features": names,
        "encoding": (
            "one row per example, in `features` order: a number column's raw value (NaN when "
            "missing) at its position; a string column one-hot over its categories at its "
            "positions (all zeros when missing or unseen)"
        ),
    }
    step = (
        "number columns standardised with the training mean and std (NaN: the mean); "
        "one-hot positions as they are"
    )
    front = Front(module, step, [len(names)], description, {"columns": columns})
    front.inverse = Unstandardise(module)
    return front


def _array_front(preprocessing: dict[str, Any]) -> Front:
    arrays = ArrayPreprocessor.from_json(preprocessing)
    standardise = Standardise(_float_buffer(arrays.mean), _float_buffer(arrays.std), missing=True)
    module = nn.Sequential(Reshape("flatten"), standardise)
    description = {"encoding": "one array per example, of the training shape (NaN: missing)"}
    step = "flattened, standardised per position with the training mean and std (NaN: the mean)"
    front = Front(module, step, list(arrays.input_shape), description)
    front.inverse = nn.Sequential(
        Unstandardise(standardise), nn.Unflatten(1, tuple(arrays.input_shape))
    )
    return front


def _image_front(preprocessing: dict[str, Any]) -> Front:
    images = ImagePreprocessor.from_json(preprocessing)
    layout = images.layout
    how = {"NHW": "add_channel", "NHWC": "channels_first"}.get(layout, "none")
    mean = _float_buffer(images.mean)[:, None, None]  # (C, 1, 1)
    std = _float_buffer(images.std)[:, None, None]
    standardise = Standardise(mean, std, scale=images.scale)
    module = nn.Sequential(Reshape(how), standardise)
    inverse = nn.Sequential(Unstandardise(standardise), Reshape(Reshape.INVERSE[how]))
    shape = images.input_schema()["shape"]
    white = images.image_max
    description = {
        "layout": layout,
        "pixels": images.dtype,
        "encoding": (
            f"one image per example in the dataset's layout {layout} ({layout[1:]}), its "
            f"values as predict takes them in nested arrays"
            + (" (0..255)" if images.dtype == "uint8" else "")
            + (
                f"; an image file's 8-bit pixels times {white / 255:g}"
                if white is not None
                else "; this model takes no image files"
            )
        ),
    }
    step = (
        f"{layout} to NCHW, pixels times {images.scale:g}, standardised per channel with "
        f"mean {images.mean.tolist()} and std {images.std.tolist()}"
    )
    return Front(module, step, list(shape), description, inverse=inverse)


def _sequence_front(preprocessing: dict[str, Any]) -> Front:
    sequences = SequencePreprocessor.from_json(preprocessing)
    shape = list(sequences.input_shape)  # [T, F] or [T]
    standardise = Standardise(
        _float_buffer(sequences.mean), _float_buffer(sequences.std), missing=True
    )
    module: nn.Module = standardise
    inverse: nn.Module = Unstandardise(standardise)
    if len(shape) == 1:
        module = nn.Sequential(Reshape("add_last"), standardise)
        inverse = nn.Sequential(inverse, Reshape("drop_last"))
    description = {"encoding": "one sequence per example, (T, F) or (T) as uploaded"}
    step = "standardised per feature with the training mean and std (NaN: the mean)"
    return Front(module, step, shape, description, time_axis=0, inverse=inverse)


def _forecast_front(preprocessing: dict[str, Any]) -> Front:
    forecast = ForecastPreprocessor.from_json(preprocessing)
    module = Standardise(_float_buffer(forecast.mean), _float_buffer(forecast.std))
    inverse = Unstandardise(module)
    description = {
        "columns": list(forecast.columns),
        "encoding": (
            f"the last {forecast.window} rows of the series per example, oldest first, each "
            f"row the columns in order [{', '.join(forecast.columns)}]"
        ),
    }
    metadata = {"window": forecast.window, "horizon": forecast.horizon}
    step = "standardised per column with the training mean and std"
    shape = [forecast.window, len(forecast.columns)]
    return Front(module, step, shape, description, metadata, time_axis=0, inverse=inverse)


FRONTS: dict[str, Callable[[dict[str, Any]], Front]] = {
    "table": _table_front,
    "array": _array_front,
    "image": _image_front,
    "sequence": _sequence_front,
    "forecast": _forecast_front,
}


def input_front(preprocessing: dict[str, Any]) -> Front | None:
    """A bundle's stored preprocessing as modules: from what a client sends to what the
    network takes (`module`), and back (`inverse`); None for a type that has none."""
    builder = FRONTS.get(str(preprocessing.get("type")))
    return builder(preprocessing) if builder is not None else None
