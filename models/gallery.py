"""Pictures for the web page: PNG data URLs of images as they were uploaded (the training
normalisation undone), the test images a classifier gets wrong, and the first examples of a
stored dataset. No SQL or HTTP here; the worker and the API call these."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import torch
from PIL import Image

from models.base import PreparedData, Split
from models.data import CSV_BLOCK_BYTES, DataError, image_geometry, image_layout
from models.image_io import to_nchw
from models.loop import Objective, forward_all, scored_training_part
from models.metrics import json_safe
from models.specs import TrainingSpec

MAX_MISTAKES = 100  # kept per job: a gallery, not a dump of the test set
MISTAKES_FILE = "mistakes.json"
MAX_SAMPLES = 64
MAX_SAMPLE_COLUMNS = 100


# Pixels -----------------------------------------------------------------------------------


def png_data_url(pixels: np.ndarray) -> str:
    """A data URL of one image (C, H, W) uint8, C = 1 (grey) or 3 (RGB); other channel
    counts show their first channel."""
    if pixels.shape[0] == 3:
        image = Image.fromarray(np.ascontiguousarray(pixels.transpose(1, 2, 0)), mode="RGB")
    else:
        image = Image.fromarray(np.ascontiguousarray(pixels[0]), mode="L")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def to_bytes(x: np.ndarray, *, full_scale: float | None) -> np.ndarray:
    """Images (N, C, H, W) of original pixel values as uint8 for display: `full_scale` is the
    value of white (255 for 8-bit data, 1.0 for floats in [0, 1]); None stretches each image
    from its own minimum to its maximum."""
    values = np.nan_to_num(x.astype(np.float64))
    if full_scale is None:
        low = values.min(axis=(1, 2, 3), keepdims=True)
        span = values.max(axis=(1, 2, 3), keepdims=True) - low
        values = (values - low) / np.where(span > 0, span, 1.0)
        full_scale = 1.0
    return np.clip(np.rint(values * (255.0 / full_scale)), 0, 255).astype(np.uint8)


def guess_full_scale(x: np.ndarray) -> float | None:
    """255 for values within 0..255 holding some above 1, 1.0 within [0, 1], else None.
    The bounds allow for the float32 rounding of values that went through normalisation."""
    if x.size == 0:
        return 1.0
    low, high = float(np.nanmin(x)), float(np.nanmax(x))
    if low >= -1e-3 and high <= 1 + 1e-3:
        return 1.0
    if low >= -0.5 and high <= 255.5:
        return 255.0
    return None


def original_images(x: torch.Tensor, preprocessing: dict[str, Any]) -> np.ndarray | None:
    """Encoded inputs (N, ...) back as displayable images (N, C, H, W) uint8, or None when
    the inputs are not images (tables, sequences, arrays of another shape)."""
    encoded = x.detach().to("cpu", torch.float64).numpy()
    kind = preprocessing.get("type")
    if kind == "image":  # (N, C, H, W) = (pixels * scale - mean) / std, per channel
        mean = np.asarray(preprocessing["mean"], dtype=np.float64)[:, None, None]
        std = np.asarray(preprocessing["std"], dtype=np.float64)[:, None, None]
        raw = (encoded * std + mean) / float(preprocessing["scale"])
        image_max = preprocessing.get("image_max")
        if preprocessing.get("dtype") == "uint8":
            return to_bytes(raw, full_scale=255.0)
        return to_bytes(raw, full_scale=None if image_max is None else float(image_max))
    if kind == "array":  # (N, F) = (values - mean) / std per position
        shape = [int(d) for d in preprocessing["input_shape"]]
        geometry = image_geometry((0, *shape))
        if geometry is None:
            return None
        mean = np.asarray(preprocessing["mean"], dtype=np.float64)
        std = np.asarray(preprocessing["std"], dtype=np.float64)
        raw = (encoded.reshape(len(encoded), -1) * std + mean).reshape(len(encoded), *shape)
        images = to_nchw(raw, geometry["layout"])
        return to_bytes(images, full_scale=guess_full_scale(images))
    return None


# Mistakes ---------------------------------------------------------------------------------


def _evaluated_split(data: PreparedData, training: TrainingSpec | None) -> tuple[str, Split] | None:
    for name, split in (("test", data.test), ("validation", data.val), ("train", data.train)):
        if split is not None and len(split) > 0:
            if name == "train" and training is not None:
                split = scored_training_part(split, training)
            return name, split
    return None


def find_mistakes(
    network: torch.nn.Module,
    data: PreparedData,
    limit: int = MAX_MISTAKES,
    training: TrainingSpec | None = None,
    outputs: dict[str, torch.Tensor] | None = None,
) -> dict[str, Any] | None:
    """The images of the test part (else validation, else training: with `training`, the
    rows its final metrics scored) that the classifier labels wrongly, most confident first:
    {"split", "total", "wrong", "items": [{"image", "label", "predicted", "confidence"}]}.
    None when the model is not an image classifier. `outputs`: the network's outputs on the
    parts already scored (`TrainResult.outputs`), used instead of scoring a part again."""
    labels = data.output.get("labels")
    if data.task != "classification" or labels is None:
        return None
    found = _evaluated_split(data, training)
    if found is None:
        return None
    name, split = found
    probe = original_images(split.x[:1], data.preprocessing)
    if probe is None:
        return None
    objective = Objective(task="classification", num_classes=data.num_classes)
    out = (outputs or {}).get(name)
    if out is None or len(out) != len(split):
        out = forward_all(network, split.x)
    with torch.inference_mode():
        probs = objective.probabilities(out).cpu()  # (N, C)
    confidence, predicted = probs.max(dim=-1)  # (N,), (N,)
    truth = split.y.cpu()
    wrong = torch.nonzero(predicted != truth).flatten()
    order = wrong[torch.argsort(confidence[wrong], descending=True, stable=True)][:limit]
    images = original_images(split.x[order.to(split.x.device)], data.preprocessing)
    assert images is not None
    items = [
        {
            "image": png_data_url(images[k]),
            "label": json_safe(labels[int(truth[i])]),
            "predicted": json_safe(labels[int(predicted[i])]),
            "confidence": float(confidence[i]),
        }
        for k, i in enumerate(order.tolist())
    ]
    return {"split": name, "total": len(split), "wrong": len(wrong), "items": items}


def mistakes_files(found: dict[str, Any]) -> dict[str, bytes]:
    """mistakes.json and its sha256 (mistakes.json.sha256), the digest stored last."""
    body = json.dumps(found, allow_nan=False).encode()
    return {
        MISTAKES_FILE: body,
        f"{MISTAKES_FILE}.sha256": hashlib.sha256(body).hexdigest().encode(),
    }


def parse_mistakes(body: bytes | None, digest: bytes | None) -> dict[str, Any] | None:
    """What mistakes_files made; None when there is nothing or it does not match its sha256."""
    if body is None or digest is None:
        return None
    if hashlib.sha256(body).hexdigest() != digest.decode(errors="replace").strip():
        return None
    found = json.loads(body)
    return found if isinstance(found, dict) else None


# Dataset samples ----------------------------------------------------------------------------


def _npy_head(archive: zipfile.ZipFile, member: str, n: int) -> np.ndarray:
    """The first n rows of one array of an NPZ, read from the start of its member: the rest
    of a large array is neither read nor decompressed."""
    with archive.open(f"{member}.npy") as stream:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
        if dtype.hasobject:
            raise DataError(f"array {member!r} holds Python objects, which are never read")
        if fortran and len(shape) > 1:  # column-major: rows are not contiguous; read it all
            rows = np.frombuffer(stream.read(), dtype=dtype).reshape(shape, order="F")
            return np.ascontiguousarray(rows[:n])
        count = min(n, shape[0]) if shape else 1
        per_row = int(np.prod(shape[1:], dtype=np.int64)) if shape else 1
        data = stream.read(count * per_row * dtype.itemsize)
        return np.frombuffer(data, dtype=dtype).reshape((count, *shape[1:]) if shape else ())


def image_samples(path: Path, fmt: str, n: int) -> dict[str, Any] | None:
    """The first n images of an image dataset with their labels, or None when it does not
    hold images. `fmt` is the dataset's: idx and images are stored as the canonical NPZ."""
    with zipfile.ZipFile(path) as archive:
        x = _npy_head(archive, "x", n)
        y = _npy_head(archive, "y", n)
    if fmt in ("idx", "images"):
        with np.load(path, allow_pickle=False) as stored:
            names = [str(v) for v in stored["class_names"]]
        images = x  # (n, C, H, W) already
    else:
        names = []
        if x.ndim not in (3, 4) or image_geometry(x.shape) is None:
            return None
        images = to_nchw(x, image_layout(x))
    if images.dtype == np.uint8:
        pixels = images
    else:
        pixels = to_bytes(images, full_scale=guess_full_scale(images.astype(np.float64)))
    items = [
        {
            "image": png_data_url(pixels[i]),
            "label": names[int(y[i])] if names else json_safe(y[i].item()),
        }
        for i in range(len(pixels))
    ]
    return {"kind": "images", "items": items}


def array_samples(path: Path, n: int) -> dict[str, Any]:
    """The first n rows of an NPZ whose x is not images: one column per feature of a 2-D x
    (at most MAX_SAMPLE_COLUMNS), then y."""
    with zipfile.ZipFile(path) as archive:
        x = _npy_head(archive, "x", n)
        y = _npy_head(archive, "y", n)
    flat = x.reshape(len(x), -1)[:, :MAX_SAMPLE_COLUMNS]
    columns = [f"x[{j}]" for j in range(flat.shape[1])] + ["y"]
    rows = [
        [_cell(v) for v in flat[i].tolist()] + [json_safe(y[i].tolist())] for i in range(len(flat))
    ]
    return {"kind": "table", "columns": columns, "rows": rows}


def table_samples(path: Path, fmt: str, n: int) -> dict[str, Any]:
    """The first n rows of a CSV or Parquet table: {"kind": "table", "columns", "rows"}, with
    missing values and NaN as null and dates as text. Only the first block is read."""
    if fmt == "parquet":
        parquet = pq.ParquetFile(path)
        batch = next(parquet.iter_batches(batch_size=n), None)
        table = (
            pa.Table.from_batches([batch])
            if batch is not None
            else parquet.schema_arrow.empty_table()
        )
    else:
        table = _csv_head(path, string_columns=[])
        # Dates as the text they were, as models.data reads them for training.
        temporal = [f.name for f in table.schema if pa.types.is_temporal(f.type)]
        if temporal:
            table = _csv_head(path, string_columns=temporal)
    table = table.slice(0, n)
    frame = table.to_pandas(types_mapper={pa.bool_(): pd.BooleanDtype()}.get)
    rows = [[_cell(value) for value in row] for row in frame.itertuples(index=False, name=None)]
    return {"kind": "table", "columns": [str(c) for c in table.column_names], "rows": rows}


def _csv_head(path: Path, *, string_columns: list[str]) -> pa.Table:
    """The first block of a CSV, parsed with models.data's options (empty cells missing)."""
    read = pa_csv.ReadOptions(block_size=CSV_BLOCK_BYTES)
    convert = pa_csv.ConvertOptions(
        strings_can_be_null=True, column_types=dict.fromkeys(string_columns, pa.string())
    )
    with pa_csv.open_csv(path, read_options=read, convert_options=convert) as reader:
        try:
            return pa.Table.from_batches([reader.read_next_batch()])
        except StopIteration:
            return reader.schema.empty_table()


def _cell(value: Any) -> Any:
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, bool | np.bool_ | int | np.integer | float | np.floating):
        return json_safe(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)
