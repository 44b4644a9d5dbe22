"""Turning an upload into a stored dataset: parse it once, keep it in the artifact store,
and describe it for the dataset record. Runs in a worker thread of the API.

Tables (CSV, Parquet) and NPZ arrays are stored as uploaded. Images (MNIST IDX files, or a
zip/tar of IDX files or of class folders) are decoded once and stored as one canonical NPZ
(`x` uint8 (N, C, H, W), `y`, `class_names`), so workers never parse archives: which kind of
image upload it is, and where in an archive the dataset sits, is decided here, archives are
unpacked by service/archives.py and the files read by models/image_io.py.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.checkpoint import sha256_file
from models.data import DataError, DatasetInfo, class_counts, detect_format, inspect_dataset
from models.image_io import (
    ImageSet,
    idx_kind,
    read_class_folders,
    read_idx_pair,
    read_image_npz,
    save_image_set,
    visible_entries,
)
from service.archives import ArchiveLimits, archive_kind, extract_archive
from service.storage import ArtifactStore, dataset_key
from service.uploads import Upload

log = logging.getLogger(__name__)
TABLE_OR_ARRAY = (".csv", ".parquet", ".pq", ".npz")
_DEFAULT_LIMITS = ArchiveLimits()  # callers without settings; the API passes the configured ones


@dataclass
class Ingested:
    format: str  # csv, parquet, npz, idx, images
    info: DatasetInfo
    key: str  # the stored object
    sha256: str  # of the stored object


def ingest(
    upload: Upload, store: ArtifactStore, dataset_id: str, limits: ArchiveLimits
) -> Ingested:
    """Parse and store `upload`; raises DataError naming what is wrong with it, and
    StoreUnavailable when the artifact store cannot take it (then nothing is stored)."""
    first = upload.files[0]
    if len(upload.files) == 1 and first.filename.lower().endswith(TABLE_OR_ARRAY):
        fmt = detect_format(first.filename)
        key = dataset_key(dataset_id, fmt)
        started = time.perf_counter()
        with store.storing(key, first.path):
            info = inspect_dataset(first.path, fmt)
            described = time.perf_counter() - started
        log.info(
            "dataset %s: %d bytes received in %.1f s, described in %.1f s, stored in %.1f s",
            dataset_id, upload.size, upload.seconds, described, time.perf_counter() - started,
        )  # fmt: skip
        return Ingested(fmt, info, key, upload.sha256)
    return _ingest_images(upload, store, dataset_id, limits)


def _ingest_images(
    upload: Upload, store: ArtifactStore, dataset_id: str, limits: ArchiveLimits
) -> Ingested:
    workdir = Path(tempfile.mkdtemp(dir=store.incoming_dir(), prefix="extract-"))
    try:
        images = load_image_upload([(f.filename, f.path) for f in upload.files], workdir, limits)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    upload.discard()
    fmt = "idx" if images.class_names is None else "images"
    key = dataset_key(dataset_id, "npz")
    with store.writing(key) as path:
        save_image_set(images, path)
        sha = sha256_file(path)
    shape = describe(images)
    info = DatasetInfo(format=fmt, num_rows=int(images.x.shape[0]), columns=None, shape=shape)
    return Ingested(fmt, info, key, sha)


# Image uploads --------------------------------------------------------------------------


def load_image_upload(
    files: list[tuple[str, Path]], workdir: Path, limits: ArchiveLimits = _DEFAULT_LIMITS
) -> ImageSet:
    """An image dataset from uploaded (original filename, stored path) pairs: two IDX files
    (images and labels, either order, raw or gzip); one zip or tar archive holding such a pair
    anywhere, or class folders (possibly under one top-level folder); or one NPZ file with
    arrays x (images) and y. Archives are extracted into a new folder under `workdir`, removed
    once read."""
    if len(files) == 2:
        return _idx_upload(files, limits)
    if len(files) != 1:
        raise DataError(
            "upload one archive or NPZ file, or two IDX files (images and labels); "
            f"got {len(files)} files"
        )
    name, path = files[0]
    kind = _upload_kind(path)
    if kind == "npz":
        return _npz_upload(path, limits)
    if kind == "idx":
        raise DataError(
            f"{name!r} is a single IDX file: upload the images and the labels files together"
        )
    if kind == "archive":
        workdir.mkdir(parents=True, exist_ok=True)
        dest = extract_archive(path, Path(tempfile.mkdtemp(prefix="upload-", dir=workdir)), limits)
        try:
            return _archive_upload(dest, limits)
        finally:
            shutil.rmtree(dest, ignore_errors=True)  # everything is in memory now
    detect_format(name)  # the error that lists every format
    raise DataError(f"{name!r} is not a dataset Keiko reads")


def _upload_kind(path: Path) -> str | None:
    """npz, idx, archive, or None."""
    archive = archive_kind(path)
    if archive == "zip":
        try:
            with zipfile.ZipFile(path) as zipped:
                names = zipped.namelist()
        except (zipfile.BadZipFile, OSError):
            return "archive"  # extraction says what is wrong with it
        # np.savez writes one NAME.npy member per array and nothing else.
        return "npz" if names and all(n.endswith(".npy") for n in names) else "archive"
    if idx_kind(path) is not None:  # before tar: both may be gzip
        return "idx"
    return "archive" if archive == "tar" else None


def _npz_upload(path: Path, limits: ArchiveLimits) -> ImageSet:
    return read_image_npz(path, limits)


def _idx_upload(files: list[tuple[str, Path]], limits: ArchiveLimits) -> ImageSet:
    kinds = [idx_kind(path) for _, path in files]
    if sorted(kinds, key=str) != ["image", "label"]:
        found = "; ".join(
            f"{name!r} is " + (f"an IDX {kind} file" if kind else "not an IDX file")
            for (name, _), kind in zip(files, kinds, strict=True)
        )
        raise DataError(
            "two files make an IDX dataset: one IDX image file and one IDX label file "
            f"(raw or gzip); {found}"
        )
    images_name, images = files[kinds.index("image")]
    labels_name, labels = files[kinds.index("label")]
    x, y = read_idx_pair(images, labels, (images_name, labels_name), limits)
    return ImageSet(x, y, None, "NHW")


def _archive_upload(dest: Path, limits: ArchiveLimits) -> ImageSet:
    found: dict[str, list[Path]] = {"image": [], "label": []}
    for path in sorted(p for p in dest.rglob("*") if p.is_file()):
        kind = idx_kind(path)
        if kind is not None:
            found[kind].append(path)
    if found["image"] or found["label"]:
        if len(found["image"]) != 1 or len(found["label"]) != 1:
            listing = ", ".join(
                repr(p.relative_to(dest).as_posix())
                for p in sorted(found["image"] + found["label"])
            )
            raise DataError(
                f"the archive holds {len(found['image'])} IDX image files and "
                f"{len(found['label'])} IDX label files ({listing}); it must hold exactly one "
                "of each (upload a test pair as its own dataset)"
            )
        images, labels = found["image"][0], found["label"][0]
        names = (images.relative_to(dest).as_posix(), labels.relative_to(dest).as_posix())
        x, y = read_idx_pair(images, labels, names, limits)
        return ImageSet(x, y, None, "NHW")
    x, y, class_names = read_class_folders(_dataset_root(dest), dest, limits)
    # Nested arrays at predict time come as a decoded image does: (H, W) or (H, W, 3).
    return ImageSet(x, y, class_names, "NHW" if x.shape[1] == 1 else "NHWC")


def _dataset_root(folder: Path) -> Path:
    """The folder holding the class folders: archives often wrap them in one top-level folder
    (mnist/0/..., mnist/1/...), or several."""
    while True:
        entries = visible_entries(folder)
        if len(entries) != 1 or not entries[0].is_dir():
            return folder
        if not any(p.is_dir() for p in visible_entries(entries[0])):
            return folder  # entries[0] holds only images: it is the one class folder
        folder = entries[0]


def describe(images: ImageSet) -> dict[str, Any]:
    """Shapes and per-class counts, for the dataset's description (plain JSON values)."""
    n, channels, height, width = (int(d) for d in images.x.shape)
    num_classes, counts = class_counts(images.y, images.class_names)
    return {
        "x": [n, channels, height, width],
        "y": [int(images.y.shape[0])],
        "channels": channels,
        "height": height,
        "width": width,
        "num_classes": num_classes,
        "class_counts": counts,
        "dtype": str(images.x.dtype),
        "layout": images.layout,
    }
