"""models.metrics against scikit-learn on random data, plus the edge cases sklearn defines."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from models.metrics import classification_metrics, json_safe, regression_metrics


def _random_probs(n: int, c: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(n, c, generator=g, dtype=torch.float64) * 2, dim=1)  # (n, c)


def _sklearn_classification(y: np.ndarray, probs: np.ndarray, c: int) -> dict[str, Any]:
    labels = list(range(c))
    pred = probs.argmax(axis=1)
    precision, recall, f1, _ = skm.precision_recall_fscore_support(
        y, pred, labels=labels, average="macro", zero_division=0
    )
    per_class = skm.recall_score(y, pred, labels=labels, average=None, zero_division=np.nan)
    return {
        "accuracy": skm.accuracy_score(y, pred),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "log_loss": skm.log_loss(y, probs, labels=labels),
        "confusion_matrix": skm.confusion_matrix(y, pred, labels=labels).tolist(),
        "per_class_accuracy": per_class.tolist(),
    }


def _assert_matches_sklearn(y: torch.Tensor, probs: torch.Tensor, c: int) -> dict[str, Any]:
    ours = classification_metrics(y, probs, c)
    expected = _sklearn_classification(y.numpy(), probs.double().numpy(), c)
    assert ours["confusion_matrix"] == expected["confusion_matrix"]
    for key in ("accuracy", "precision", "recall", "f1", "log_loss"):
        assert ours[key] == pytest.approx(expected[key], rel=1e-9, abs=1e-12), key
    np.testing.assert_allclose(ours["per_class_accuracy"], expected["per_class_accuracy"])
    return ours


# --- regression ------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(200,), (150, 3)])
def test_regression_matches_sklearn(shape: tuple[int, ...]) -> None:
    g = torch.Generator().manual_seed(1)
    y = torch.randn(*shape, generator=g) * 3 + 1  # float32, as the loop passes it
    pred = y + torch.randn(*shape, generator=g)
    ours = regression_metrics(y, pred)
    yn, pn = y.double().numpy(), pred.double().numpy()
    assert ours["mse"] == pytest.approx(skm.mean_squared_error(yn, pn), rel=1e-12)
    assert ours["rmse"] == pytest.approx(skm.root_mean_squared_error(yn, pn), rel=1e-12)
    assert ours["mae"] == pytest.approx(skm.mean_absolute_error(yn, pn), rel=1e-12)
    assert ours["r2"] == pytest.approx(skm.r2_score(yn, pn), rel=1e-12)
    assert all(type(v) is float for v in ours.values())


def test_regression_is_computed_in_float64() -> None:
    # float32 would lose the 1e-4 errors against values of 1e4 entirely.
    y = torch.full((1000,), 1e4, dtype=torch.float64) + torch.arange(1000, dtype=torch.float64)
    pred = y + 1e-4
    assert regression_metrics(y, pred)["mse"] == pytest.approx(1e-8, rel=1e-6)


def test_r2_is_nan_for_constant_target() -> None:
    y = torch.full((10,), 2.5)
    assert math.isnan(regression_metrics(y, y)["r2"])  # SS_res == SS_tot == 0
    assert math.isnan(regression_metrics(y, y + 1)["r2"])  # SS_tot == 0, SS_res > 0
    assert regression_metrics(y, y + 1)["mse"] == pytest.approx(1.0)


def test_r2_nan_when_one_output_is_constant() -> None:
    y = torch.stack([torch.arange(10.0), torch.full((10,), 3.0)], dim=1)  # (10, 2)
    metrics = regression_metrics(y, y + 0.5)
    assert math.isnan(metrics["r2"])
    assert metrics["mae"] == pytest.approx(0.5)


def test_regression_empty_and_shape_mismatch() -> None:
    assert regression_metrics(torch.empty(0), torch.empty(0)) == {}
    with pytest.raises(ValueError, match="shapes differ"):
        regression_metrics(torch.zeros(4), torch.zeros(4, 1))


# --- classification --------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "c", "seed"), [(300, 2, 0), (500, 5, 1), (37, 10, 2)])
def test_classification_matches_sklearn(n: int, c: int, seed: int) -> None:
    y = torch.randint(0, c, (n,), generator=torch.Generator().manual_seed(seed + 100))
    _assert_matches_sklearn(y, _random_probs(n, c, seed), c)


def test_class_never_predicted() -> None:
    n, c = 120, 4
    probs = _random_probs(n, c, 3).clone()
    probs[:, 2] = 0.0  # class 2 is never the argmax: precision 0/0 counts as 0
    probs /= probs.sum(dim=1, keepdim=True)
    probs = probs.clamp(min=1e-6)  # keep sklearn's own clipping out of the comparison
    probs /= probs.sum(dim=1, keepdim=True)
    y = torch.arange(n) % c  # every class, including 2, has samples
    ours = _assert_matches_sklearn(y, probs, c)
    assert [row[2] for row in ours["confusion_matrix"]] == [0] * c
    assert ours["per_class_accuracy"][2] == 0.0


def test_class_without_samples_counts_in_macro_average() -> None:
    n, c = 90, 4
    y = torch.arange(n) % 3  # class 3 has no samples
    ours = _assert_matches_sklearn(y, _random_probs(n, c, 4), c)
    assert math.isnan(ours["per_class_accuracy"][3])
    assert ours["confusion_matrix"][3] == [0, 0, 0, 0]


def test_perfect_predictions() -> None:
    y = torch.tensor([0, 1, 2, 2, 1])
    probs = torch.nn.functional.one_hot(y, 3).double()
    ours = classification_metrics(y, probs, 3)
    assert ours["accuracy"] == ours["precision"] == ours["recall"] == ours["f1"] == 1.0
    assert ours["log_loss"] == pytest.approx(0.0, abs=1e-12)
    assert ours["confusion_matrix"] == [[1, 0, 0], [0, 2, 0], [0, 0, 2]]


def test_log_loss_clips_zero_probability() -> None:
    y = torch.tensor([0, 1])
    probs = torch.tensor([[0.0, 1.0], [0.0, 1.0]])  # the first sample's true class has p = 0
    expected = (-math.log(1e-15) + 0.0) / 2
    assert classification_metrics(y, probs, 2)["log_loss"] == pytest.approx(expected, rel=1e-12)


def test_classification_empty_and_bad_input() -> None:
    assert classification_metrics(torch.empty(0, dtype=torch.int64), torch.empty(0, 3), 3) == {}
    with pytest.raises(ValueError, match="probs"):
        classification_metrics(torch.tensor([0, 1]), torch.full((2, 2), 0.5), 3)
    with pytest.raises(ValueError, match="class indices"):
        classification_metrics(torch.tensor([0, 3]), torch.full((2, 3), 1 / 3), 3)


# --- json_safe -------------------------------------------------------------------------------


def test_json_safe_makes_strict_json() -> None:
    obj: dict[Any, Any] = {
        "nan": float("nan"),
        "inf": -math.inf,
        "np_float": np.float32(0.5),
        "np_nan": np.float64("nan"),
        "np_int": np.int64(7),
        "np_bool": np.bool_(True),
        "tensor": torch.tensor(2.0),
        "tensor_list": torch.tensor([1.0, float("inf")]),
        "array": np.array([[1, 2]]),
        "nested": [{"x": (1.5, float("nan"))}],
        "text": "ok",
        "none": None,
        3: "int key",
    }
    safe = json_safe(obj)
    text = json.dumps(safe, allow_nan=False)  # raises on any NaN/inf left behind
    assert json.loads(text) == {
        "nan": None,
        "inf": None,
        "np_float": 0.5,
        "np_nan": None,
        "np_int": 7,
        "np_bool": True,
        "tensor": 2.0,
        "tensor_list": [1.0, None],
        "array": [[1, 2]],
        "nested": [{"x": [1.5, None]}],
        "text": "ok",
        "none": None,
        "3": "int key",
    }
    assert type(safe["np_int"]) is int and type(safe["np_bool"]) is bool
    assert math.isnan(obj["nan"])  # the input is not modified


def test_classification_metrics_are_json_safe() -> None:
    y = torch.arange(8) % 3
    metrics = classification_metrics(y, _random_probs(8, 4, 5), 4)  # class 3: nan accuracy
    json.dumps(json_safe(metrics), allow_nan=False)
