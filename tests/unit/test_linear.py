"""Linear models: the normal equation against numpy's least squares, ridge in closed form,
polynomial features, and SGD reaching the closed-form solution."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from models.linear import (
    LinearNet,
    PolynomialFeatures,
    poly_feature_count,
    solve_normal_equation,
)


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize(("n", "f", "seed"), [(200, 5, 0), (1000, 30, 1), (50, 49, 2)])
def test_normal_equation_matches_numpy_lstsq(n: int, f: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, f))
    y = x @ rng.normal(size=f) + 3.0 + rng.normal(scale=0.1, size=n)
    w, b = solve_normal_equation(torch.from_numpy(x), torch.from_numpy(y))
    design = np.hstack([x, np.ones((n, 1))])
    expected, *_ = np.linalg.lstsq(design, y, rcond=None)
    got = np.concatenate([w.numpy(), [float(b)]])
    assert w.dtype == torch.float64
    assert relative_error(got, expected) < 1e-8


def test_normal_equation_without_intercept() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(100, 4))
    y = rng.normal(size=100)
    w, b = solve_normal_equation(torch.from_numpy(x), torch.from_numpy(y), fit_intercept=False)
    expected, *_ = np.linalg.lstsq(x, y, rcond=None)
    assert float(b) == 0.0
    assert relative_error(w.numpy(), expected) < 1e-8


def test_ridge_closed_form_matches_its_definition() -> None:
    rng = np.random.default_rng(4)
    n, f, l2 = 80, 6, 0.3
    x = rng.normal(size=(n, f))
    y = rng.normal(size=n)
    w, b = solve_normal_equation(torch.from_numpy(x), torch.from_numpy(y), l2=l2)
    # Minimiser of (1/n)||y - Xw - b||² + l2||w||²: centre, then (XcᵀXc + n·l2·I)w = Xcᵀyc.
    xc, yc = x - x.mean(0), y - y.mean()
    expected_w = np.linalg.solve(xc.T @ xc + n * l2 * np.eye(f), xc.T @ yc)
    expected_b = y.mean() - x.mean(0) @ expected_w
    assert relative_error(w.numpy(), expected_w) < 1e-8
    assert float(b) == pytest.approx(expected_b, rel=1e-8, abs=1e-10)


def test_rank_deficient_design_gives_minimum_norm_solution() -> None:
    rng = np.random.default_rng(5)
    a = rng.normal(size=(30, 1))
    x = np.hstack([a, a, rng.normal(size=(30, 1))])  # two identical columns
    y = rng.normal(size=30)
    w, b = solve_normal_equation(torch.from_numpy(x), torch.from_numpy(y))
    design = np.hstack([x, np.ones((30, 1))])
    expected, *_ = np.linalg.lstsq(design, y, rcond=None)
    got = np.concatenate([w.numpy(), [float(b)]])
    np.testing.assert_allclose(design @ got, design @ expected, rtol=1e-6, atol=1e-8)
    assert w[0].item() == pytest.approx(w[1].item(), rel=1e-6)


def test_polynomial_features_match_scikit_learn() -> None:
    from sklearn.preprocessing import PolynomialFeatures as SkPoly

    x = np.random.default_rng(6).normal(size=(7, 3))
    ours = PolynomialFeatures(3, 3)(torch.from_numpy(x)).numpy()
    theirs = SkPoly(degree=3, include_bias=False).fit_transform(x)
    assert ours.shape == theirs.shape == (7, poly_feature_count(3, 3))
    # Same monomials, possibly in another order: compare sorted columns.
    assert np.allclose(np.sort(ours, axis=1), np.sort(theirs, axis=1))
    assert poly_feature_count(10, 2) == 10 + math.comb(11, 2)


def test_linear_net_forward_shape() -> None:
    net = LinearNet(4, 3, degree=2)
    assert net(torch.zeros(5, 4)).shape == (5, 3)
    assert net.linear.in_features == poly_feature_count(4, 2)
