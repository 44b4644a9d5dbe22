"""History thinned for plotting: a 10,000-epoch curve drawn from a thousand points that keep
its shape (LTTB, Steinarsson 2013, by tsdownsample) and its extremes."""

from __future__ import annotations

from typing import Any

import numpy as np
from tsdownsample import LTTBDownsampler

# Not curves: the x axis and bookkeeping.
NOT_SERIES = frozenset({"epoch", "seconds", "step", "train_episodes", "steps_per_second"})


def numeric_series(entries: list[dict[str, Any]]) -> list[str]:
    names: dict[str, None] = {}
    for entry in entries:
        for name, value in entry.items():
            if (
                name not in NOT_SERIES
                and isinstance(value, int | float)
                and not isinstance(value, bool)
            ):
                names[name] = None
    return list(names)


def downsample(entries: list[dict[str, Any]], points: int) -> list[dict[str, Any]]:
    """About `points` of `entries` (ordered by epoch): each numeric series gets an equal
    share, picked by LTTB, plus its minimum and maximum; the first and last entries stay."""
    n = len(entries)
    if n <= points:
        return entries
    names = numeric_series(entries)
    keep = {0, n - 1}
    share = max(points // max(len(names), 1), 3)
    x = np.array([float(e["epoch"]) for e in entries])
    for name in names:
        y = np.array(
            [v if isinstance(v := e.get(name), int | float) else np.nan for e in entries],
            dtype=np.float64,
        )
        present = np.flatnonzero(np.isfinite(y))
        if len(present) <= share:
            keep.update(present.tolist())
            continue
        picked = LTTBDownsampler().downsample(x[present], y[present], n_out=share)
        keep.update(present[picked].tolist())
        keep.update((present[np.argmin(y[present])].item(), present[np.argmax(y[present])].item()))
    return [entries[i] for i in sorted(keep)]
