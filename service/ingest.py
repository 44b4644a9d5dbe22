"""Turning an upload into a stored dataset: parse it once, keep it in the artifact store,
and describe it for the dataset record. Runs in a worker thread of the API.

Tables (CSV, Parquet) and NPZ arrays are stored as uploaded. Images (MNIST IDX files, or a
zip/tar of IDX files or of class folders) are decoded once and stored as one canonical NPZ
(`x` uint8 (N, C, H, W), `y`, `class_names`), so workers never parse archives.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from models.data import DatasetInfo, detect_format, inspect_dataset
from models.images import ArchiveLimits, describe, load_image_upload, save_image_set
from service.storage import ArtifactStore
from service.uploads import Upload

TABLE_OR_ARRAY = (".csv", ".parquet", ".pq", ".npz")


@dataclass
class Ingested:
    format: str  # csv, parquet, npz, idx, images
    info: DatasetInfo
    path: Path  # the stored file


def ingest(
    upload: Upload, store: ArtifactStore, dataset_id: str, limits: ArchiveLimits
) -> Ingested:
    """Parse and store `upload`; raises DataError naming what is wrong with it."""
    first = upload.files[0]
    if len(upload.files) == 1 and first.filename.lower().endswith(TABLE_OR_ARRAY):
        fmt = detect_format(first.filename)
        info = inspect_dataset(first.path, fmt)
        final = store.dataset_path(dataset_id, fmt)
        first.path.replace(final)
        return Ingested(fmt, info, final)
    return _ingest_images(upload, store, dataset_id, limits)


def _ingest_images(
    upload: Upload, store: ArtifactStore, dataset_id: str, limits: ArchiveLimits
) -> Ingested:
    workdir = Path(tempfile.mkdtemp(dir=store.incoming_dir(), prefix="extract-"))
    try:
        images = load_image_upload([(f.filename, f.path) for f in upload.files], workdir, limits)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    fmt = "idx" if images.class_names is None else "images"
    final = store.dataset_path(dataset_id, "npz")
    save_image_set(images, final)
    upload.discard()
    shape = describe(images)
    info = DatasetInfo(format=fmt, num_rows=int(images.x.shape[0]), columns=None, shape=shape)
    return Ingested(fmt, info, final)
