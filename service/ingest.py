"""Turning an upload into a stored dataset: parse it once, keep the file in the artifact
store, and describe it for the dataset record. Runs in a worker thread of the API."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from models.data import DataError, DatasetInfo, detect_format, inspect_dataset
from service.storage import ArtifactStore
from service.uploads import Upload


@dataclass
class Ingested:
    format: str
    info: DatasetInfo
    path: Path  # the stored file


def ingest(upload: Upload, store: ArtifactStore, dataset_id: str) -> Ingested:
    """Parse and store `upload`; raises DataError naming what is wrong with it."""
    if len(upload.files) != 1:
        raise DataError(
            f"send one file (CSV, Parquet or NPZ); got {len(upload.files)} 'file' parts"
        )
    uploaded = upload.files[0]
    fmt = detect_format(uploaded.filename)
    info = inspect_dataset(uploaded.path, fmt)
    final = store.dataset_path(dataset_id, fmt)
    uploaded.path.replace(final)
    return Ingested(fmt, info, final)
