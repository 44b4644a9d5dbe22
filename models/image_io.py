"""Reading image datasets: MNIST IDX files, class folders of PNG/JPEG images and NPZ arrays,
all read into one canonical form, x (N, C, H, W) uint8 (float32 for a float NPZ) and y (N,),
and the stored form of that set (`save_image_set`, `load_image_set`), which workers read so
that they never parse an upload again.

Uploads come from strangers, so what a file declares (IDX dimensions, image dimensions, NPZ
sizes) is checked against `ImageLimits` before anything is decoded. Archives are unpacked
before their files get here (service/archives.py, on the upload path); predict inputs are
decoded with the same image functions by models/image_preprocessing.py. Refusals are a
`DataError` (upload, training) or the caller's error (predict) whose message reaches the user
as it is. Sizes in messages are width x height, as image viewers show them.
"""

from __future__ import annotations

import gzip
import io
import math
import re
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from models.data import DataError, image_layout, read_arrays

_IDX_IMAGES = 0x00000803  # unsigned bytes, 3 dimensions: (N, H, W)
_IDX_LABELS = 0x00000801  # unsigned bytes, 1 dimension: (N,)
_IDX_KINDS = {_IDX_IMAGES: "image", _IDX_LABELS: "label"}
_GZIP_MAGIC = b"\x1f\x8b"
IMAGE_FORMATS = ("PNG", "JPEG")
LAYOUTS = ("NCHW", "NHWC", "NHW")  # how a dataset lays out its images; predict inputs follow
# Pillow modes holding one channel; every other mode (RGB, RGBA, P, CMYK, ...) becomes RGB.
_GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "F"})


@dataclass(frozen=True)
class ImageLimits:
    """What one image dataset may hold. `max_total_bytes` caps the decoded images
    (N * C * H * W bytes), what an IDX header promises and an NPZ's uncompressed arrays;
    `max_image_pixels` caps each image file, read from its header before decoding."""

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
    images: Path, labels: Path, *, limits: ImageLimits = ImageLimits()
) -> tuple[np.ndarray, np.ndarray]:
    """MNIST IDX files, raw or gzip: x (N, 1, H, W) uint8 and y (N,) int64."""
    return read_idx_pair(images, labels, (images.name, labels.name), limits)


def read_idx_pair(
    images: Path, labels: Path, names: tuple[str, str], limits: ImageLimits
) -> tuple[np.ndarray, np.ndarray]:
    """As read_idx; messages name the files `names` (as uploaded, or inside an archive)."""
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


def _read_idx_file(path: Path, name: str, magic: int, limits: ImageLimits) -> np.ndarray:
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


def _check_idx_dims(dims: tuple[int, ...], size: int, name: str, limits: ImageLimits) -> None:
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


def idx_kind(path: Path) -> str | None:
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


def read_image_npz(path: Path, limits: ImageLimits = ImageLimits()) -> ImageSet:
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


def open_image(
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


def decode_pixels(
    image: Image.Image, channels: int, label: str, error: type[ValueError]
) -> np.ndarray:
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


def visible_entries(folder: Path) -> list[Path]:
    """The folder's entries by name, without dotfiles (.DS_Store, ._x) and macOS's __MACOSX."""
    entries = sorted(p for p in folder.iterdir() if not is_ignored(p.name))
    link = next((p for p in entries if p.is_symlink()), None)
    if link is not None:
        raise DataError(f"{link.name!r} is a symbolic link; upload the files themselves")
    return entries


def is_ignored(name: str) -> bool:
    """Dotfiles and macOS's __MACOSX: skipped in folders and archives alike."""
    return name.startswith(".") or name == "__MACOSX"


def read_image_folders(
    root: Path, *, limits: ImageLimits = ImageLimits()
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """One folder per class under `root`, named after its label, holding PNG or JPEG images:
    x (N, C, H, W) uint8, y (N,) int64 indices into the sorted class names, the names."""
    return read_class_folders(root, root, limits)


def read_class_folders(
    root: Path, base: Path, limits: ImageLimits
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
        with open_image(path, label, DataError, limits.max_image_pixels) as image:
            x[i] = decode_pixels(image, channels, label, DataError)
    y = np.array([index for _, index in files], dtype=np.int64)
    return x, y, names


def _class_files(root: Path, base: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    """The class names and every (image path, class index), both sorted by name."""
    entries = visible_entries(root)
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
        images = visible_entries(folder)
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


def _common_shape(paths: list[Path], base: Path, limits: ImageLimits) -> tuple[int, int, int]:
    """(C, H, W) shared by every image: C is 3 when any image is in colour, else 1."""
    first: tuple[str, tuple[int, int]] | None = None
    gray = True
    for path in paths:
        shown = path.relative_to(base).as_posix()
        with open_image(path, f"image {shown!r}", DataError, limits.max_image_pixels) as image:
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
