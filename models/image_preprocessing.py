"""Image preprocessing: the per-channel normalisation that training and prediction share
(`ImagePreprocessor`, fitted on the training images and stored as plain JSON), and the
decoding of predict inputs (nested arrays in the dataset's layout, base64 PNG/JPEG strings,
uploaded files) into the same normalised (N, C, H, W) float32.

Reading image datasets is models/image_io.py's job; this module reuses its image decoding,
with its checks, for predict inputs. Refusals of predict inputs are an `InputError` whose
message reaches the user as it is.
"""

from __future__ import annotations

import base64
import binascii
import io
from typing import Any

import numpy as np

# From models.base, where prepare.py gets it too: importing models.prepare here would be
# circular once prepare.py reads image datasets.
from models.base import InputError
from models.data import DataError
from models.image_io import LAYOUTS, decode_pixels, open_image, to_nchw
from models.preprocessing import constant_as_one, row_chunks, standardise


def _channel_stats(x: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std (C,) float64 of x (N, C, H, W) * scale, in two passes."""
    per_image = int(np.prod(x.shape[1:]))
    count = x.shape[0] * x.shape[2] * x.shape[3]
    total = np.zeros(x.shape[1])
    for rows in row_chunks(len(x), per_image):
        total += x[rows].sum(axis=(0, 2, 3), dtype=np.float64)
    mean = total * scale / count
    squares = np.zeros(x.shape[1])
    for rows in row_chunks(len(x), per_image):
        centred = x[rows].astype(np.float64) * scale - mean[:, None, None]  # (n, C, H, W)
        squares += (centred**2).sum(axis=(0, 2, 3))
    std = np.sqrt(squares / count)
    # A constant channel is centred and left unscaled.
    constant_as_one(std, mean)
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
        return standardise(x, mean, std, scale=self.scale)

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
        if isinstance(inputs, np.ndarray):  # a tensor of images (the inference protocol's)
            return self._decode_array(inputs)
        if not isinstance(inputs, list):
            raise InputError("inputs must be a list of images")
        return self._finish([self._decode_input(i, item) for i, item in enumerate(inputs)])

    def _decode_array(self, images: np.ndarray) -> np.ndarray:  # (N, C, H, W) float32
        """Images already in one array (N, *one image's shape in the layout): checked and
        normalised at once instead of image by image."""
        expected = _item_shape(self.shape, self.layout)
        if list(images.shape[1:]) != expected:
            raise InputError(
                f"inputs have shape {list(images.shape)}; the model takes arrays of shape "
                f"[N, {', '.join(map(str, expected))}] ({self.layout[1:]})"
            )
        array = images.astype(np.float64)
        if not np.isfinite(array).all():
            raise InputError("inputs hold NaN or infinite values")
        if self.dtype == "uint8" and len(array) and (array.min() < 0 or array.max() > 255):
            raise InputError("inputs have values outside 0..255, the training images' range")
        return self._finish(list(to_nchw(array, self.layout)))

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
        with open_image(io.BytesIO(data), label, InputError, None) as image:
            if image.size != (width, height):
                got = f"{image.size[0]}x{image.size[1]}"
                raise InputError(f"{label} is {got}; the model takes {width}x{height} images")
            pixels = decode_pixels(image, channels, label, InputError)  # (C, H, W) uint8
        return pixels * (self.image_max / 255.0)

    def _finish(self, images: list[np.ndarray]) -> np.ndarray:  # (N, C, H, W) float32
        if not images:
            return np.empty((0, *self.shape), dtype=np.float32)
        out = self._normalise(np.stack(images))
        bad = np.flatnonzero(~np.isfinite(out).reshape(len(out), -1).all(axis=1))
        if len(bad):
            raise InputError(f"input {bad[0]} has values too far out of the training range")
        return out
