"""Evaluation metrics in plain PyTorch, computed in float64 so they agree with scikit-learn.

Every function returns plain Python numbers (and lists of them), ready to be stored as JSON
once passed through `json_safe`, which turns NaN and infinities into `null`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

# Same floor as scikit-learn's historical default, so a confident wrong answer costs ~34.5
# nats instead of infinity.
LOG_LOSS_EPS = 1e-15


def regression_metrics(y_true: torch.Tensor, y_pred: torch.Tensor) -> dict[str, float]:
    """MSE, RMSE, MAE and R² of (N,) or (N, k) targets; multi-output values are averaged
    over outputs (scikit-learn's `uniform_average`). R² is NaN for an output without variance."""
    if y_true.shape != y_pred.shape:
        raise ValueError(
            f"shapes differ: y_true {tuple(y_true.shape)}, y_pred {tuple(y_pred.shape)}"
        )
    if y_true.ndim not in (1, 2):
        raise ValueError(f"expected (N,) or (N, k) targets, got shape {tuple(y_true.shape)}")
    if y_true.numel() == 0:
        return {}
    true = y_true.detach().cpu().double().reshape(len(y_true), -1)  # (N, k)
    pred = y_pred.detach().cpu().double().reshape(len(y_pred), -1)  # (N, k)
    err = pred - true  # (N, k)
    mse = (err**2).mean(dim=0)  # (k,)
    mae = err.abs().mean(dim=0)  # (k,)
    ss_res = (err**2).sum(dim=0)  # (k,)
    ss_tot = ((true - true.mean(dim=0)) ** 2).sum(dim=0)  # (k,)
    # A constant target has no variance to explain: R² is undefined, not 0 or -inf.
    r2 = torch.where(ss_tot == 0, torch.nan, 1 - ss_res / ss_tot)  # (k,)
    return {
        "mse": float(mse.mean()),
        "rmse": float(mse.sqrt().mean()),
        "mae": float(mae.mean()),
        "r2": float(r2.mean()),
    }


def confusion_matrix(y_true: torch.Tensor, y_pred: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(C, C) int64 counts; rows are true classes, columns predicted classes."""
    flat = y_true * num_classes + y_pred  # (N,) cell index of each sample
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes
    )


def _safe_ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """num / den with 0 where den == 0 (scikit-learn's zero_division=0)."""
    return torch.where(den > 0, num / den.clamp(min=1), torch.zeros_like(num))


def classification_metrics(
    y_true: torch.Tensor, probs: torch.Tensor, num_classes: int
) -> dict[str, Any]:
    """Accuracy, macro precision/recall/F1 over all `num_classes` labels, log loss, the
    confusion matrix and per-class accuracy (recall; NaN for a class without samples).

    `y_true` is (N,) int64 class indices and `probs` (N, C) rows of class probabilities.
    """
    if probs.ndim != 2 or probs.shape[1] != num_classes:
        raise ValueError(f"probs must be (N, {num_classes}), got shape {tuple(probs.shape)}")
    if y_true.ndim != 1 or len(y_true) != len(probs):
        raise ValueError(
            f"y_true must be (N,) with N = {len(probs)}, got shape {tuple(y_true.shape)}"
        )
    if len(y_true) == 0:
        return {}
    labels = y_true.detach().cpu().long()  # (N,)
    if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
        raise ValueError(f"class indices must lie in [0, {num_classes})")
    p = probs.detach().cpu().double()  # (N, C)
    predicted = p.argmax(dim=1)  # (N,)

    cm = confusion_matrix(labels, predicted, num_classes)  # (C, C)
    tp = cm.diagonal().double()  # (C,)
    support = cm.sum(dim=1).double()  # (C,) samples of each true class
    predicted_count = cm.sum(dim=0).double()  # (C,) samples predicted as each class
    precision = _safe_ratio(tp, predicted_count)
    recall = _safe_ratio(tp, support)
    # 2tp / (2tp + fp + fn) equals 2PR / (P + R) and needs no special case when tp == 0.
    f1 = _safe_ratio(2 * tp, support + predicted_count)
    per_class = torch.where(support > 0, tp / support.clamp(min=1), torch.nan)

    p_true = p.gather(1, labels.unsqueeze(1)).squeeze(1)  # (N,) probability of the true class
    log_loss = -p_true.clamp(LOG_LOSS_EPS, 1.0).log().mean()
    return {
        "accuracy": float(tp.sum() / len(labels)),
        "precision": float(precision.mean()),
        "recall": float(recall.mean()),
        "f1": float(f1.mean()),
        "log_loss": float(log_loss),
        "confusion_matrix": cm.tolist(),
        "per_class_accuracy": per_class.tolist(),
    }


def json_safe(obj: Any) -> Any:
    """A copy of `obj` that strict JSON accepts: NaN/inf become None, numpy and torch scalars
    (and small arrays/tensors) become Python numbers and lists, tuples become lists."""
    if isinstance(obj, float | np.floating):
        value = float(obj)
        return value if math.isfinite(value) else None
    if isinstance(obj, bool | np.bool_):
        return bool(obj)
    if isinstance(obj, int | np.integer):
        return int(obj)
    if isinstance(obj, torch.Tensor | np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj
