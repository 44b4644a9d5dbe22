"""Image datasets: MNIST IDX files, class folders of PNG/JPEG images (usually inside a zip or tar
archive) and NPZ arrays, all read into one canonical form, x (N, C, H, W) uint8 (float32 for a
float NPZ) and y (N,); and the per-channel normalisation that training and prediction share.

Uploads come from strangers, so what they declare (archive member names and sizes, IDX
dimensions, image dimensions) is checked before anything is written or decoded, and the bytes
actually written are counted again. Refusals are a `DataError` (upload, training) or an
`InputError` (predict) whose message reaches the user as it is. Sizes in messages are
width x height, as image viewers show them.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import io
import lzma
import math
import re
import shutil
import stat
import struct
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
from PIL import Image, UnidentifiedImageError

# From models.base, where prepare.py gets it too: importing models.prepare here would be
# circular once prepare.py reads image datasets.
from models.base import InputError
from models.data import DataError, class_counts, detect_format, image_layout, read_arrays

_IDX_IMAGES = 0x00000803  # unsigned bytes, 3 dimensions: (N, H, W)
_IDX_LABELS = 0x00000801  # unsigned bytes, 1 dimension: (N,)
_IDX_KINDS = {_IDX_IMAGES: "image", _IDX_LABELS: "label"}
_GZIP_MAGIC = b"\x1f\x8b"
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # a member first, or an empty archive
IMAGE_FORMATS = ("PNG", "JPEG")
LAYOUTS = ("NCHW", "NHWC", "NHW")  # how a dataset lays out its images; predict inputs follow
# Pillow modes holding one channel; every other mode (RGB, RGBA, P, CMYK, ...) becomes RGB.
_GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "F"})
_COPY_BYTES = 1 << 20
# What reading a damaged archive raises (besides OSError, which bad gzip or bzip2 data raises).
_READ_ERRORS = (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, lzma.LZMAError)
_CHUNK_VALUES = 1 << 22  # values per step when scanning images: bounds float64 temporaries
# A tar's headers are listed before anything is extracted; this many entries per allowed file
# (folders, macOS metadata) bounds the memory that listing takes.
_TAR_ENTRIES_PER_FILE = 4
# `describe` lists per-class counts up to this many distinct labels (a float y has thousands).


@dataclass(frozen=True)
class ArchiveLimits:
    """What one upload may hold. `max_total_bytes` caps the extracted archive and also the
    decoded images (N * C * H * W bytes)."""

    max_files: int = 100_000
    max_total_bytes: int = 2 * 1024**3
    max_image_pixels: int = 50_000_000


@dataclass
class ImageSet:
    x: np.ndarray  # (N, C, H, W) uint8, or float32 from a float NPZ
    y: np.ndarray  # (N,) int64 indices into class_names, or the labels as uploaded
    class_names: list[str] | None  # None: y holds the labels themselves (IDX, numeric NPZ)
    layout: str = "NCHW"  # the upload's own per-image layout, in which predict arrays come


# IDX ------------------------------------------------------------------------------------


def read_idx(
    images: Path, labels: Path, *, limits: ArchiveLimits = ArchiveLimits()
) -> tuple[np.ndarray, np.ndarray]:
    """MNIST IDX files, raw or gzip: x (N, 1, H, W) uint8 and y (N,) int64."""
    return _read_idx_pair(images, labels, (images.name, labels.name), limits)


def _read_idx_pair(
    images: Path, labels: Path, names: tuple[str, str], limits: ArchiveLimits
) -> tuple[np.ndarray, np.ndarray]:
    x = _read_idx_file(images, names[0], _IDX_IMAGES, limits)  # (N, H, W)
    y = _read_idx_file(labels, names[1], _IDX_LABELS, limits)  # (N,)
    if len(x) != len(y):
        raise DataError(f"the IDX files hold {len(x)} images but {len(y)} labels")
    if len(x) == 0:
        raise DataError("the IDX files hold no images")
    return x[:, None], y.astype(np.int64)


def _open_binary(path: Path) -> io.BufferedIOBase:
    """The file's bytes, decompressed when it is gzip (told by its content, not its name)."""
    with path.open("rb") as probe:
        compressed = probe.read(2) == _GZIP_MAGIC
    return gzip.open(path, "rb") if compressed else path.open("rb")


def _read_up_to(file: io.BufferedIOBase, size: int) -> bytearray:
    """At most `size` bytes, fewer at the end of the file; a bytearray, so arrays made on it
    with np.frombuffer are writable."""
    data = bytearray(size)
    with memoryview(data) as view:
        filled = 0
        while filled < size:
            got = file.readinto(view[filled:])
            if not got:
                break
            filled += got
    del data[filled:]
    return data


def _read_idx_file(path: Path, name: str, magic: int, limits: ArchiveLimits) -> np.ndarray:
    """(N, H, W) images or (N,) labels, uint8; reads no more than the header promises."""
    ndim = magic & 0xFF
    try:
        with _open_binary(path) as file:
            header = _read_up_to(file, 4 + 4 * ndim)
            _check_idx_magic(header, name, magic)
            if len(header) < 4 + 4 * ndim:
                raise DataError(f"{name!r}: truncated IDX file: the header is cut short")
            dims = struct.unpack(f">{ndim}I", header[4:])
            size = math.prod(dims)
            _check_idx_dims(dims, size, name, limits)
            data = _read_up_to(file, size)
    except (OSError, EOFError, zlib.error) as exc:  # gzip streams that are not, or cut short
        raise DataError(f"{name!r} could not be read: {exc}") from None
    if len(data) < size:
        raise DataError(
            f"{name!r}: truncated IDX file: header says {_idx_contents(dims)} but only "
            f"{len(data)} bytes of data ({size} needed)"
        )
    return np.frombuffer(data, dtype=np.uint8).reshape(dims)


def _check_idx_magic(header: bytearray, name: str, magic: int) -> None:
    found = int.from_bytes(header[:4], "big") if len(header) >= 4 else None
    if found == magic:
        return
    if found is None:
        why = f"it holds only {len(header)} bytes"
    elif found in _IDX_KINDS:
        why = f"it is an IDX {_IDX_KINDS[found]} file"
    else:
        why = f"it starts with 0x{found:08x}, expected 0x{magic:08x}"
    raise DataError(f"{name!r} is not an IDX {_IDX_KINDS[magic]} file: {why}")


def _check_idx_dims(dims: tuple[int, ...], size: int, name: str, limits: ArchiveLimits) -> None:
    if len(dims) == 3 and 0 in dims[1:]:
        raise DataError(f"{name!r}: the IDX header says images of {dims[2]}x{dims[1]} pixels")
    if size > limits.max_total_bytes:
        raise DataError(
            f"{name!r}: the IDX header says {_idx_contents(dims)}, {size} bytes, more than the "
            f"{limits.max_total_bytes} allowed"
        )


def _idx_contents(dims: tuple[int, ...]) -> str:
    if len(dims) == 3:
        return f"{dims[0]} images of {dims[2]}x{dims[1]}"
    return f"{dims[0]} labels"


def _idx_kind(path: Path) -> str | None:
    """The IDX kind of a file, raw or gzip, from its magic number: image, label or None."""
    try:
        with path.open("rb") as file:  # opened once: archives are scanned file by file
            head = file.read(4)
            if head[:2] == _GZIP_MAGIC:
                file.seek(0)
                with gzip.GzipFile(fileobj=file) as unpacked:
                    head = unpacked.read(4)
    except (OSError, EOFError, zlib.error):
        return None
    return _IDX_KINDS.get(int.from_bytes(head, "big")) if len(head) == 4 else None


# Arrays ---------------------------------------------------------------------------------


def to_nchw(x: np.ndarray, layout: str) -> np.ndarray:
    """(N, ...) images in `layout` as (N, C, H, W), same dtype."""
    if layout == "NHW":
        return x[:, None]
    if layout == "NHWC":
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    return x


def images_from_npz(x: np.ndarray) -> np.ndarray:
    """NPZ images shaped (N, H, W), (N, H, W, C) or (N, C, H, W) as (N, C, H, W), dtype kept."""
    return to_nchw(x, image_layout(x))


def _canonical_pixels(x: np.ndarray) -> np.ndarray:
    """uint8 as it is; integers within 0..255 as uint8; floats and booleans as float32."""
    if x.dtype == np.uint8:
        return x
    if x.dtype.kind in "iu":
        low, high = int(x.min()), int(x.max())
        if low < 0 or high > 255:
            raise DataError(
                f"x holds integers from {low} to {high}; integer images must be 8-bit "
                "(0..255): save other pixel values as floats"
            )
        return x.astype(np.uint8)
    x32 = x.astype(np.float32)
    bad = int(x32.size - np.count_nonzero(np.isfinite(x32)))
    if bad:
        raise DataError(f"x has {bad} NaN or infinite pixel values (or values beyond float32)")
    return x32


def _npz_upload(path: Path, limits: ArchiveLimits) -> ImageSet:
    return read_image_npz(path, limits)


def read_image_npz(path: Path, limits: ArchiveLimits = ArchiveLimits()) -> ImageSet:
    """Images from a user's NPZ file: x (N, H, W), (N, H, W, C) or (N, C, H, W), and y."""
    try:
        with zipfile.ZipFile(path) as archive:
            declared = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"not a valid NPZ file: {exc}") from None
    if declared > limits.max_total_bytes:
        raise DataError(
            f"the NPZ arrays hold {declared} bytes uncompressed, more than the "
            f"{limits.max_total_bytes} allowed"
        )
    x, y = read_arrays(path)
    if y.ndim != 1:
        raise DataError(f"y must hold one label per image, shape (N,); it has {list(y.shape)}")
    layout = image_layout(x)
    images = to_nchw(_canonical_pixels(x), layout)
    if y.dtype.kind == "U":
        names, codes = np.unique(y, return_inverse=True)
        return ImageSet(images, codes.astype(np.int64), [str(n) for n in names], layout)
    return ImageSet(images, y, None, layout)


def save_image_set(images: ImageSet, path: Path) -> None:
    """The canonical stored form of an image dataset: one NPZ of x (N, C, H, W), y, the class
    names (empty when y holds the labels) and the upload's layout."""
    names = np.array(images.class_names or [], dtype=np.str_)
    with path.open("wb") as sink:
        np.savez(sink, x=images.x, y=images.y, class_names=names, layout=np.str_(images.layout))


def load_image_set(path: Path) -> ImageSet:
    """An image dataset written by `save_image_set` (nothing is unpickled)."""
    with np.load(path, allow_pickle=False) as stored:
        names = [str(n) for n in stored["class_names"]]
        return ImageSet(stored["x"], stored["y"], names or None, str(stored["layout"]))


# Image files ----------------------------------------------------------------------------


def _open_image(
    source: Path | io.BytesIO, label: str, error: type[ValueError], max_pixels: int | None
) -> Image.Image:
    """The image with only its header read, checked against `max_pixels` before any decoding.

    Pillow's own guard (DecompressionBombError, from twice Image.MAX_IMAGE_PIXELS) is caught
    too. Its DecompressionBombWarning is not turned into an error: warnings.catch_warnings
    changes process-wide state, unsafe in a threaded server, and the check here already
    applies the configured limit to every image.
    """
    try:
        image = Image.open(source, formats=list(IMAGE_FORMATS))
    except Image.DecompressionBombError as exc:
        found = re.search(r"\((\d+) pixels\)", str(exc))
        pixels = f"{found.group(1)} pixels" if found else "too many pixels"
        limit = max_pixels if max_pixels is not None else 2 * (Image.MAX_IMAGE_PIXELS or 0)
        raise error(f"{label} has {pixels}, more than the {limit} allowed") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError):
        raise error(f"{label} is not a PNG or JPEG image") from None
    width, height = image.size
    if max_pixels is not None and width * height > max_pixels:
        image.close()
        raise error(f"{label} has {width}x{height} pixels, more than the {max_pixels} allowed")
    return image


def _is_gray(mode: str) -> bool:
    return mode in _GRAY_MODES or mode.startswith("I;16")


def _pixels(image: Image.Image, channels: int, label: str, error: type[ValueError]) -> np.ndarray:
    """The decoded image as (C, H, W) uint8, C = 1 (L) or 3 (RGB)."""
    try:
        if image.mode.startswith("I") or image.mode == "F":
            # 16-bit grayscale PNG: Pillow's convert("L") clips at 255 instead of scaling.
            wide = np.asarray(image, dtype=np.float64)  # (H, W), 0..65535
            plane = np.clip(np.rint(wide / 257.0), 0, 255).astype(np.uint8)[None]
            return np.repeat(plane, channels, axis=0)
        converted = np.asarray(image.convert("L" if channels == 1 else "RGB"))
    except (OSError, SyntaxError, ValueError, EOFError, zlib.error) as exc:
        raise error(f"{label} could not be decoded: {exc}") from None
    return converted[None] if channels == 1 else converted.transpose(2, 0, 1)  # (H, W, 3)


def _visible(folder: Path) -> list[Path]:
    """The folder's entries by name, without dotfiles (.DS_Store, ._x) and macOS's __MACOSX."""
    entries = sorted(p for p in folder.iterdir() if not _is_ignored(p.name))
    link = next((p for p in entries if p.is_symlink()), None)
    if link is not None:
        raise DataError(f"{link.name!r} is a symbolic link; upload the files themselves")
    return entries


def _is_ignored(name: str) -> bool:
    return name.startswith(".") or name == "__MACOSX"


def read_image_folders(
    root: Path, *, limits: ArchiveLimits = ArchiveLimits()
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """One folder per class under `root`, named after its label, holding PNG or JPEG images:
    x (N, C, H, W) uint8, y (N,) int64 indices into the sorted class names, the names."""
    return _read_class_folders(root, root, limits)


def _read_class_folders(
    root: Path, base: Path, limits: ArchiveLimits
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """As read_image_folders; messages name files relative to `base`."""
    names, files = _class_files(root, base)
    # Headers first: sizes and modes are checked before any image is decoded.
    channels, height, width = _common_shape([path for path, _ in files], base, limits)
    total = len(files) * channels * height * width
    if total > limits.max_total_bytes:
        raise DataError(
            f"the {len(files)} images of {width}x{height} decode to {total} bytes, more than "
            f"the {limits.max_total_bytes} allowed"
        )
    x = np.empty((len(files), channels, height, width), dtype=np.uint8)
    for i, (path, _) in enumerate(files):
        label = f"image {path.relative_to(base).as_posix()!r}"
        with _open_image(path, label, DataError, limits.max_image_pixels) as image:
            x[i] = _pixels(image, channels, label, DataError)
    y = np.array([index for _, index in files], dtype=np.int64)
    return x, y, names


def _class_files(root: Path, base: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    """The class names and every (image path, class index), both sorted by name."""
    entries = _visible(root)
    loose = next((p for p in entries if not p.is_dir()), None)
    if loose is not None:
        raise DataError(
            f"{loose.relative_to(base).as_posix()!r} sits beside the class folders; every "
            "image must be inside a folder named after its class"
        )
    if not entries:
        raise DataError(
            "no class folders found: put the images in one folder per class "
            "(e.g. cat/1.png, dog/2.png)"
        )
    files: list[tuple[Path, int]] = []
    for index, folder in enumerate(entries):
        shown = folder.relative_to(base).as_posix()
        images = _visible(folder)
        nested = next((p for p in images if p.is_dir()), None)
        if nested is not None:
            raise DataError(
                f"class folder {shown!r} holds a folder, {nested.name!r}: images must sit "
                "directly in their class folder (class/image.png)"
            )
        if not images:
            raise DataError(f"class folder {shown!r} holds no images")
        files.extend((path, index) for path in images)
    return [folder.name for folder in entries], files


def _common_shape(paths: list[Path], base: Path, limits: ArchiveLimits) -> tuple[int, int, int]:
    """(C, H, W) shared by every image: C is 3 when any image is in colour, else 1."""
    first: tuple[str, tuple[int, int]] | None = None
    gray = True
    for path in paths:
        shown = path.relative_to(base).as_posix()
        with _open_image(path, f"image {shown!r}", DataError, limits.max_image_pixels) as image:
            size, gray = image.size, gray and _is_gray(image.mode)
        if first is None:
            first = (shown, size)
        elif size != first[1]:
            raise DataError(
                f"images differ in size: {first[0]!r} is {first[1][0]}x{first[1][1]} but "
                f"{shown!r} is {size[0]}x{size[1]}; all images must have the same size "
                "(they are never resized)"
            )
    assert first is not None  # _class_files refuses empty class folders
    return (1 if gray else 3), first[1][1], first[1][0]


# Archives -------------------------------------------------------------------------------


def extract_archive(archive: Path, dest: Path, limits: ArchiveLimits) -> Path:
    """Unpack a zip or tar archive (tar optionally gzip, bzip2 or xz compressed), told apart
    by content, into `dest` (created; it must be new or empty); returns `dest`.

    Every member is checked before anything is written: relative paths inside `dest`, regular
    files and folders only, at most `max_files` files and `max_total_bytes` declared. The
    bytes written are counted again. On any failure `dest` is removed.
    """
    kind = _archive_kind(archive)
    if kind is None:
        raise DataError("not a zip or tar archive")
    if dest.exists() and any(dest.iterdir()):
        raise ValueError(f"extraction folder {dest} is not empty")
    dest.mkdir(parents=True, exist_ok=True)
    try:
        if kind == "zip":
            _extract_zip(archive, dest, limits)
        else:
            _extract_tar(archive, dest, limits)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)  # a half-extracted archive is never used
        raise
    return dest


def _archive_kind(path: Path) -> str | None:
    with path.open("rb") as file:
        head = file.read(4)
    # The zip magic first: zipfile.is_zipfile also accepts a tar whose last member is a zip.
    if head in _ZIP_MAGICS:
        return "zip"
    if tarfile.is_tarfile(path):
        return "tar"
    if zipfile.is_zipfile(path):  # e.g. a zip with a prefix (self-extracting)
        return "zip"
    return None


def _member_parts(name: str) -> list[str]:
    """The member's path components; refuses paths that would land outside the folder."""
    normalised = name.replace("\\", "/")  # zips made on Windows may use backslashes
    if normalised.startswith("/") or re.match(r"[A-Za-z]:/", normalised):
        raise DataError(f"archive member {name!r} has an absolute path")
    parts = [part for part in normalised.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise DataError(f"archive member {name!r} escapes the extraction folder")
    return parts


def _skipped(parts: list[str]) -> bool:
    return not parts or any(_is_ignored(part) for part in parts)


def _check_declared(files: int, declared: int, limits: ArchiveLimits, *, exact: bool) -> None:
    """Refuse too many files or bytes; a tar is refused mid-listing, so its counts are lower
    bounds there (exact=False)."""
    if files > limits.max_files:
        holds = (
            f"{files} files, more than the {limits.max_files}"
            if exact
            else f"more than the {limits.max_files} files"
        )
        raise DataError(f"archive holds {holds} allowed")
    if declared > limits.max_total_bytes:
        total = f"{declared} bytes" if exact else "more than that"
        raise DataError(
            f"archive members add up to {total} uncompressed; at most "
            f"{limits.max_total_bytes} bytes are allowed"
        )


def _copy_member(source: IO[bytes], dest: Path, name: str, written: int, cap: int) -> int:
    """Write one member under `dest`, counting bytes; returns the archive's running total.

    Read errors are the archive's fault (DataError); write errors (a full disk) are not, and
    propagate as OSError.
    """
    target = dest.joinpath(*_member_parts(name))
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        out = target.open("wb")
    except OSError as exc:  # a name too long, a file where a folder should be...
        raise DataError(f"archive member {name!r} could not be extracted: {exc}") from None
    with out:
        while chunk := _read_chunk(source, name):
            written += len(chunk)
            if written > cap:  # members can hold more than they declare
                raise DataError(
                    f"archive expands to more than the {cap} bytes allowed, more than its "
                    "members declare"
                )
            out.write(chunk)
    return written


def _read_chunk(source: IO[bytes], name: str) -> bytes:
    try:
        return source.read(_COPY_BYTES)
    except (*_READ_ERRORS, OSError) as exc:  # OSError: bad gzip or bzip2 data
        raise DataError(f"archive member {name!r} is corrupt: {exc}") from None


def _zip_members(archive: zipfile.ZipFile, limits: ArchiveLimits) -> list[zipfile.ZipInfo]:
    """The members to extract, after checking every one."""
    chosen: list[zipfile.ZipInfo] = []
    for info in archive.infolist():
        parts = _member_parts(info.filename)
        if stat.S_ISLNK(info.external_attr >> 16):  # Unix mode bits, where the zip has them
            raise DataError(f"archive member {info.filename!r} is a symbolic link")
        if not info.is_dir() and not _skipped(parts):
            chosen.append(info)
    declared = sum(info.file_size for info in chosen)
    _check_declared(len(chosen), declared, limits, exact=True)
    return chosen


def _open_zip_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> IO[bytes]:
    try:
        return archive.open(info)
    except RuntimeError:  # zipfile's words for "encrypted"
        raise DataError(f"archive member {info.filename!r} is encrypted") from None
    except NotImplementedError as exc:  # e.g. a compression method zipfile lacks
        raise DataError(f"archive member {info.filename!r} cannot be read: {exc}") from None
    except (*_READ_ERRORS, OSError) as exc:
        raise DataError(f"archive member {info.filename!r} is corrupt: {exc}") from None


def _extract_zip(path: Path, dest: Path, limits: ArchiveLimits) -> None:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"not a valid zip archive: {exc}") from None
    with archive:
        written = 0
        for info in _zip_members(archive, limits):
            with _open_zip_member(archive, info) as source:
                written = _copy_member(source, dest, info.filename, written, limits.max_total_bytes)


def _tar_members(archive: tarfile.TarFile, limits: ArchiveLimits) -> list[tarfile.TarInfo]:
    """The members to extract, after checking every one; headers are read one at a time, so
    a huge archive is refused without listing it all."""
    chosen: list[tarfile.TarInfo] = []
    declared = 0
    for entries, member in enumerate(archive, start=1):
        parts = _member_parts(member.name)
        if member.issym() or member.islnk():
            kind = "symbolic" if member.issym() else "hard"
            raise DataError(f"archive member {member.name!r} is a {kind} link")
        if not (member.isfile() or member.isdir()):
            raise DataError(f"archive member {member.name!r} is a device, pipe or special file")
        if member.isfile() and not _skipped(parts):
            chosen.append(member)
            declared += member.size
            _check_declared(len(chosen), declared, limits, exact=False)
        if entries > _TAR_ENTRIES_PER_FILE * limits.max_files:
            raise DataError(f"archive holds more than {entries - 1} entries")
    return chosen


def _open_tar_member(archive: tarfile.TarFile, member: tarfile.TarInfo) -> IO[bytes]:
    try:
        source = archive.extractfile(member)
    except (*_READ_ERRORS, OSError) as exc:
        raise DataError(f"archive member {member.name!r} is corrupt: {exc}") from None
    assert source is not None  # regular files only
    return source


def _open_tar(path: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(path, "r:*")  # compression told by content
    except (*_READ_ERRORS, OSError) as exc:
        raise DataError(f"not a valid tar archive: {exc}") from None


def _extract_tar(path: Path, dest: Path, limits: ArchiveLimits) -> None:
    with _open_tar(path) as archive:
        try:
            members = _tar_members(archive, limits)
        except (*_READ_ERRORS, OSError) as exc:  # OSError: bad gzip or bzip2 data
            raise DataError(f"not a valid tar archive: {exc}") from None
        written = 0
        for member in members:
            with _open_tar_member(archive, member) as source:
                written = _copy_member(source, dest, member.name, written, limits.max_total_bytes)


# Uploads --------------------------------------------------------------------------------


def load_image_upload(
    files: list[tuple[str, Path]], workdir: Path, limits: ArchiveLimits = ArchiveLimits()
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
    archive = _archive_kind(path)
    if archive == "zip":
        try:
            with zipfile.ZipFile(path) as zipped:
                names = zipped.namelist()
        except (zipfile.BadZipFile, OSError):
            return "archive"  # extraction says what is wrong with it
        # np.savez writes one NAME.npy member per array and nothing else.
        return "npz" if names and all(n.endswith(".npy") for n in names) else "archive"
    if _idx_kind(path) is not None:  # before tar: both may be gzip
        return "idx"
    return "archive" if archive == "tar" else None


def _idx_upload(files: list[tuple[str, Path]], limits: ArchiveLimits) -> ImageSet:
    kinds = [_idx_kind(path) for _, path in files]
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
    x, y = _read_idx_pair(images, labels, (images_name, labels_name), limits)
    return ImageSet(x, y, None, "NHW")


def _archive_upload(dest: Path, limits: ArchiveLimits) -> ImageSet:
    found: dict[str, list[Path]] = {"image": [], "label": []}
    for path in sorted(p for p in dest.rglob("*") if p.is_file()):
        kind = _idx_kind(path)
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
        x, y = _read_idx_pair(images, labels, names, limits)
        return ImageSet(x, y, None, "NHW")
    x, y, class_names = _read_class_folders(_dataset_root(dest), dest, limits)
    # Nested arrays at predict time come as a decoded image does: (H, W) or (H, W, 3).
    return ImageSet(x, y, class_names, "NHW" if x.shape[1] == 1 else "NHWC")


def _dataset_root(folder: Path) -> Path:
    """The folder holding the class folders: archives often wrap them in one top-level folder
    (mnist/0/..., mnist/1/...), or several."""
    while True:
        entries = _visible(folder)
        if len(entries) != 1 or not entries[0].is_dir():
            return folder
        if not any(p.is_dir() for p in _visible(entries[0])):
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


# Normalisation --------------------------------------------------------------------------


def _image_chunks(n: int, per_image: int) -> Iterator[slice]:
    step = max(1, _CHUNK_VALUES // max(1, per_image))
    for start in range(0, n, step):
        yield slice(start, min(start + step, n))


def _channel_stats(x: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std (C,) float64 of x (N, C, H, W) * scale, in two passes."""
    per_image = int(np.prod(x.shape[1:]))
    count = x.shape[0] * x.shape[2] * x.shape[3]
    total = np.zeros(x.shape[1])
    for rows in _image_chunks(len(x), per_image):
        total += x[rows].sum(axis=(0, 2, 3), dtype=np.float64)
    mean = total * scale / count
    squares = np.zeros(x.shape[1])
    for rows in _image_chunks(len(x), per_image):
        centred = x[rows].astype(np.float64) * scale - mean[:, None, None]  # (n, C, H, W)
        squares += (centred**2).sum(axis=(0, 2, 3))
    std = np.sqrt(squares / count)
    # A constant channel is centred and left unscaled.
    std[~np.isfinite(std) | (std <= 1e-12 * np.maximum(1.0, np.abs(mean)))] = 1.0
    return mean, std


def _given_stats(values: list[float], what: str, channels: int) -> np.ndarray:
    if len(values) != channels:
        raise DataError(
            f"normalize.{what} has {len(values)} values but the images have {channels} "
            f"channel{'' if channels == 1 else 's'}"
        )
    array = np.asarray(values, dtype=np.float64)
    if not np.isfinite(array).all() or (what == "std" and (array <= 0).any()):
        raise DataError(f"normalize.{what} values must be finite{' and > 0' * (what == 'std')}")
    return array


def _item_shape(shape: tuple[int, int, int], layout: str) -> list[int]:
    """One image's shape in `layout`: [H, W], [H, W, C] or [C, H, W]."""
    channels, height, width = shape
    return {"NHW": [height, width], "NHWC": [height, width, channels]}.get(layout, list(shape))


def _decode_base64(text: str, label: str) -> bytes:
    """The bytes of a base64 string, or of a data URL (data:image/png;base64,...)."""
    if text.startswith("data:"):
        header, comma, text = text.partition(",")
        if not comma or not header.endswith(";base64"):
            raise InputError(f"{label} is a data URL but not a base64 one")
    body = "".join(text.split()).translate(str.maketrans("-_", "+/"))  # URL-safe alphabet too
    try:
        return base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
    except binascii.Error as exc:
        raise InputError(f"{label} is not valid base64 ({exc})") from None


class ImagePreprocessor:
    """x (N, C, H, W) -> (N, C, H, W) float32: uint8 pixels scaled to [0, 1], then
    standardised per channel with the training mean and std (or given ones)."""

    def __init__(
        self,
        shape: tuple[int, int, int],
        *,
        dtype: str,
        layout: str,
        mean: np.ndarray,
        std: np.ndarray,
        image_max: float | None,
    ) -> None:
        self.shape = shape  # (C, H, W)
        self.dtype = dtype  # uint8 or float32: the training images' dtype
        self.layout = layout  # the dataset's layout; predict arrays come per image in it
        self.scale = 1 / 255 if dtype == "uint8" else 1.0  # applied before mean and std
        self.mean = mean  # (C,) float64, on the scaled values
        self.std = std  # (C,) float64, never 0
        # The data value of a white pixel in an image file: 255 (uint8 data) or 1.0 (float
        # data in [0, 1]); None: float data of another range, which image files cannot match.
        self.image_max = image_max

    @classmethod
    def fit(
        cls,
        x_train: np.ndarray,
        mean: list[float] | None = None,
        std: list[float] | None = None,
        *,
        layout: str = "NCHW",
    ) -> ImagePreprocessor:
        """Fit on the training images (N, C, H, W); `layout` is the dataset's (ImageSet.layout).
        Given mean and std are on the scaled values ([0, 1] for uint8 images)."""
        if x_train.ndim != 4 or len(x_train) == 0:
            raise DataError(f"images must be (N, C, H, W) with N >= 1; got {list(x_train.shape)}")
        if x_train.dtype not in (np.uint8, np.float32):
            raise DataError(f"images must be uint8 or float32, found {x_train.dtype}")
        c, h, w = (int(d) for d in x_train.shape[1:])
        if layout not in LAYOUTS or (layout == "NHW" and c != 1):
            raise DataError(f"layout {layout!r} does not fit images of {c} channels")
        dtype = str(x_train.dtype)
        if dtype == "float32" and not np.isfinite(x_train).all():
            raise DataError("the training images hold NaN or infinite values")
        fitted_mean, fitted_std = _channel_stats(x_train, 1 / 255 if dtype == "uint8" else 1.0)
        image_max: float | None = 255.0
        if dtype == "float32":
            in_unit_range = float(x_train.min()) >= 0 and float(x_train.max()) <= 1
            image_max = 1.0 if in_unit_range else None
        return cls(
            (c, h, w),
            dtype=dtype,
            layout=layout,
            mean=fitted_mean if mean is None else _given_stats(mean, "mean", c),
            std=fitted_std if std is None else _given_stats(std, "std", c),
            image_max=image_max,
        )

    def transform(self, x: np.ndarray) -> np.ndarray:  # (N, C, H, W) float32
        if x.ndim != 4 or tuple(x.shape[1:]) != self.shape:
            raise DataError(f"images have shape {list(x.shape[1:])}, expected {list(self.shape)}")
        out = self._normalise(x)
        if not np.isfinite(out).all():
            raise DataError("images hold NaN, infinite or far out-of-range values")
        return out

    def _normalise(self, x: np.ndarray) -> np.ndarray:  # (N, C, H, W) float32, unchecked
        mean = self.mean[:, None, None]  # (C, 1, 1)
        std = self.std[:, None, None]
        out = np.empty(x.shape, dtype=np.float32)
        for rows in _image_chunks(len(x), int(np.prod(self.shape))):
            out[rows] = (x[rows].astype(np.float64) * self.scale - mean) / std
        return out

    def input_schema(self) -> dict[str, Any]:
        channels, height, width = self.shape
        return {
            "shape": _item_shape(self.shape, self.layout),  # one input, in `layout`
            "layout": self.layout,
            "dtype": self.dtype,
            "channels": channels,
            "height": height,
            "width": width,
            "image_files": self.image_max is not None and channels in (1, 3),
        }

    def to_json(self) -> dict[str, Any]:
        # No top-level "type" key: callers tag the dict with their own.
        return {
            "shape": list(self.shape),
            "dtype": self.dtype,
            "layout": self.layout,
            "scale": self.scale,
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "image_max": self.image_max,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ImagePreprocessor:
        c, h, w = (int(d) for d in data["shape"])
        image_max = data.get("image_max")
        preprocessor = cls(
            (c, h, w),
            dtype=str(data["dtype"]),
            layout=str(data["layout"]),
            mean=np.asarray(data["mean"], dtype=np.float64),
            std=np.asarray(data["std"], dtype=np.float64),
            image_max=None if image_max is None else float(image_max),
        )
        preprocessor.scale = float(data["scale"])
        return preprocessor

    # Predict-time decoding ----------------------------------------------------------------

    def decode_inputs(self, inputs: list[Any]) -> np.ndarray:  # (N, C, H, W) float32
        """Each input a nested array of one image in the dataset's layout (input_schema), or
        a base64 PNG/JPEG string (a data: URL too); normalised as in training."""
        if not isinstance(inputs, list):
            raise InputError("inputs must be a list of images")
        return self._finish([self._decode_input(i, item) for i, item in enumerate(inputs)])

    def decode_files(self, contents: list[bytes]) -> np.ndarray:  # (N, C, H, W) float32
        """Uploaded PNG or JPEG files, normalised as in training."""
        return self._finish([self._image(data, f"image {i}") for i, data in enumerate(contents)])

    def _decode_input(self, index: int, item: Any) -> np.ndarray:  # (C, H, W) float64
        if isinstance(item, str):
            return self._image(_decode_base64(item, f"input {index}"), f"image {index}")
        if not isinstance(item, list):
            raise InputError(
                f"input {index} must be a nested array of numbers or a base64 PNG/JPEG string, "
                f"not {type(item).__name__}"
            )
        try:
            array = np.asarray(item, dtype=np.float64)
        except (ValueError, TypeError):
            raise InputError(f"input {index} is not a rectangular array of numbers") from None
        expected = _item_shape(self.shape, self.layout)
        if list(array.shape) != expected:
            raise InputError(
                f"input {index} has shape {list(array.shape)}; the model takes arrays of shape "
                f"{expected} ({self.layout[1:]})"
            )
        if not np.isfinite(array).all():
            raise InputError(f"input {index} holds NaN or infinite values")
        if self.dtype == "uint8" and (array.min() < 0 or array.max() > 255):
            raise InputError(
                f"input {index} has values outside 0..255, the pixel range of the training images"
            )
        return to_nchw(array[None], self.layout)[0]

    def _image(self, data: bytes, label: str) -> np.ndarray:  # (C, H, W) float64
        channels, height, width = self.shape
        if self.image_max is None or channels not in (1, 3):
            raise InputError(
                f"{label}: this model was not trained on 8-bit images (or float images in "
                "[0, 1]); send nested arrays as described by its input schema"
            )
        # Only the header is read before the size check, so no oversized image is decoded.
        with _open_image(io.BytesIO(data), label, InputError, None) as image:
            if image.size != (width, height):
                got = f"{image.size[0]}x{image.size[1]}"
                raise InputError(f"{label} is {got}; the model takes {width}x{height} images")
            pixels = _pixels(image, channels, label, InputError)  # (C, H, W) uint8
        return pixels * (self.image_max / 255.0)

    def _finish(self, images: list[np.ndarray]) -> np.ndarray:  # (N, C, H, W) float32
        if not images:
            return np.empty((0, *self.shape), dtype=np.float32)
        out = self._normalise(np.stack(images))
        bad = np.flatnonzero(~np.isfinite(out).reshape(len(out), -1).all(axis=1))
        if len(bad):
            raise InputError(f"input {bad[0]} has values too far out of the training range")
        return out
