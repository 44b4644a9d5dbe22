"""The digit preprocessing of service/web/widgets/digit.js, in numpy: what the page sends for
a drawing must equal what this gives for the canvas's pixels.

MNIST's digits were made this way (LeCun et al.): the ink's bounding box scaled to fit a
20x20 box keeping the aspect ratio, with anti-aliasing (here: exact area averaging), then
placed in 28x28 so that the centre of mass is at the centre. Rounding is floor(x + 0.5)
here and in JavaScript, so both agree where Python's round() (half to even) would not.
"""

from __future__ import annotations

import math

import numpy as np

SIDE = 28
BOX = 20
CENTRE = (SIDE - 1) / 2  # 13.5, the centre of the field in pixel-index coordinates


def round_half_up(x: float) -> int:
    return math.floor(x + 0.5)


def area_weights(size: int, out: int) -> np.ndarray:
    """(out, size): row i averages [i*size/out, (i+1)*size/out), weighted by coverage."""
    weights = np.zeros((out, size))
    for i in range(out):
        lo = (i * size) / out
        hi = ((i + 1) * size) / out
        for j in range(math.floor(lo), min(size, math.ceil(hi))):
            overlap = min(hi, j + 1) - max(lo, j)
            if overlap > 0:
                weights[i, j] = (overlap * out) / size
    return weights


def preprocess_digit(rgba: np.ndarray) -> np.ndarray | None:
    """rgba (H, W, 4) uint8 canvas pixels, white ink on black -> (28, 28) float64 ink in
    0..1, or None when nothing is drawn."""
    ink = rgba[:, :, 0].astype(np.float64) / 255  # (H, W): the red channel, ink is grey
    rows = np.flatnonzero((ink > 0).any(axis=1))
    cols = np.flatnonzero((ink > 0).any(axis=0))
    if len(rows) == 0:
        return None
    top, bottom, left, right = rows[0], rows[-1], cols[0], cols[-1]
    crop = ink[top : bottom + 1, left : right + 1]  # (h, w)
    h, w = crop.shape
    scale = BOX / max(h, w)
    oh = max(1, min(BOX, round_half_up(h * scale)))
    ow = max(1, min(BOX, round_half_up(w * scale)))
    small = area_weights(h, oh) @ crop @ area_weights(w, ow).T  # (oh, ow)
    mass = small.sum()
    ys, xs = np.mgrid[0:oh, 0:ow]
    cy = float((ys * small).sum() / mass) if mass > 0 else (oh - 1) / 2
    cx = float((xs * small).sum() / mass) if mass > 0 else (ow - 1) / 2
    oy = min(SIDE - oh, max(0, round_half_up(CENTRE - cy)))
    ox = min(SIDE - ow, max(0, round_half_up(CENTRE - cx)))
    field = np.zeros((SIDE, SIDE))
    field[oy : oy + oh, ox : ox + ow] = small
    return field


def to_input(field: np.ndarray, shape: list[int], full: float) -> np.ndarray:
    """The field times `full` (255 for 8-bit datasets) in the model's input shape, clipped to
    0..full (weights that sum to 1 in floating point can land a hair above it)."""
    return np.clip(field * full, 0, full).reshape(shape)
