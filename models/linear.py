"""Linear models: least squares (normal equation or SGD), ridge/lasso/elastic net,
polynomial features, logistic (two classes) and softmax regression."""

from __future__ import annotations

import itertools
import math
import time
from typing import Any, ClassVar

import torch
from torch import nn

from models.base import (
    DataShape,
    EpochRecord,
    PreparedData,
    Reporter,
    SpecError,
    TrainingError,
    TrainResult,
)
from models.describe import DataDescription
from models.distillation import Teacher
from models.kind import ModelKind, Sizing
from models.loop import Objective, final_metrics, fit, history_metrics
from models.optimizers import build_optimizer
from models.specs import JobSpec, LinearSpec

MAX_POLY_FEATURES = 20_000


def poly_feature_count(num_features: int, degree: int) -> int:
    """Monomials of degree 1..degree in num_features variables: C(F + d, d) - 1."""
    return math.comb(num_features + degree, degree) - 1


class PolynomialFeatures(nn.Module):
    """All monomials of degree 1..d (interactions included), like scikit-learn's."""

    def __init__(self, num_features: int, degree: int) -> None:
        super().__init__()
        self.degree = degree
        for k in range(2, degree + 1):
            combos = list(itertools.combinations_with_replacement(range(num_features), k))
            self.register_buffer(f"combos_{k}", torch.tensor(combos, dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, F) -> (B, F_poly)
        parts = [x]
        for k in range(2, self.degree + 1):
            combos: torch.Tensor = getattr(self, f"combos_{k}")  # (M_k, k)
            parts.append(x[:, combos].prod(dim=-1))  # (B, M_k)
        return torch.cat(parts, dim=1)


class LinearNet(nn.Module):
    """x -> [polynomial features -> standardise] -> affine map."""

    feature_mean: torch.Tensor  # (F_poly,) buffer
    feature_std: torch.Tensor  # (F_poly,) buffer

    def __init__(
        self, in_features: int, out_features: int, degree: int = 1, fit_intercept: bool = True
    ) -> None:
        super().__init__()
        self.poly = PolynomialFeatures(in_features, degree) if degree > 1 else None
        width = poly_feature_count(in_features, degree)
        # Products of standardised inputs are no longer standardised; rescale them so
        # gradient descent sees a well-conditioned problem. Fitted on the training part.
        self.register_buffer("feature_mean", torch.zeros(width))
        self.register_buffer("feature_std", torch.ones(width))
        self.linear = nn.Linear(width, out_features, bias=fit_intercept)

    def features(self, x: torch.Tensor) -> torch.Tensor:  # (B, ...) -> (B, F_poly)
        x = x.flatten(1)  # images and other arrays: one feature per element
        if self.poly is None:
            return x
        return (self.poly(x) - self.feature_mean) / self.feature_std

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, F) -> (B, out)
        return self.linear(self.features(x))


def build(config: dict[str, Any]) -> nn.Module:
    return LinearNet(
        config["in_features"], config["out_features"], config["degree"], config["fit_intercept"]
    )


def solve_normal_equation(
    x: torch.Tensor, y: torch.Tensor, *, l2: float = 0.0, fit_intercept: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Closed-form least squares: solve (XᵀX + N·l2·I) w = Xᵀy in float64.

    Minimises (1/N)·||y - Xw - b||² + l2·||w||², the same objective SGD follows. The
    intercept is never penalised. Returns (w (F,), b scalar).
    """
    x = x.double()  # (N, F)
    y = y.double()  # (N,)
    n, f = x.shape
    design = torch.cat([x, torch.ones(n, 1, dtype=x.dtype)], dim=1) if fit_intercept else x
    gram = design.T @ design  # (F+1, F+1)
    rhs = design.T @ y  # (F+1,)
    if l2 > 0:
        penalty = torch.full((design.shape[1],), n * l2, dtype=x.dtype)
        if fit_intercept:
            penalty[-1] = 0.0
        gram = gram + torch.diag(penalty)
    chol, info = torch.linalg.cholesky_ex(gram)
    if int(info) == 0:
        solution = torch.cholesky_solve(rhs.unsqueeze(1), chol).squeeze(1)
    else:
        # Singular XᵀX (collinear or too few rows): the minimum-norm least-squares solution.
        solution = torch.linalg.pinv(gram, hermitian=True) @ rhs
    if fit_intercept:
        return solution[:f], solution[f]
    return solution, torch.zeros((), dtype=x.dtype)


class Linear(ModelKind):
    name = "linear"
    spec = LinearSpec
    example: ClassVar[dict[str, Any]] = {"kind": "linear"}

    def check(self, spec: JobSpec, data: DataDescription) -> None:
        assert isinstance(spec.model, LinearSpec)
        message = _too_wide(spec.model, data.shape.features)
        if message is not None:
            raise SpecError(message)

    def config(self, spec: JobSpec, shape: Sizing) -> dict[str, Any]:
        model = spec.model
        assert isinstance(model, LinearSpec) and isinstance(shape, DataShape)
        message = _too_wide(model, shape.features)
        if message is not None:
            raise TrainingError(message)
        binary = shape.task == "classification" and shape.outputs == 2
        return {
            "in_features": shape.features,
            "out_features": 1 if shape.task == "regression" or binary else shape.outputs,
            "degree": model.degree,
            "fit_intercept": model.fit_intercept,
        }

    def build(self, config: dict[str, Any]) -> nn.Module:
        return build(config)

    def parameter_count(self, spec: JobSpec, shape: Sizing) -> int:
        """Counted, not built: the polynomial features' index tables of a wide degree are
        slow to enumerate even on the meta device."""
        config = self.config(spec, shape)
        width = poly_feature_count(config["in_features"], config["degree"])
        out = config["out_features"]
        return width * out + (out if config["fit_intercept"] else 0)

    def planned_epochs(self, spec: JobSpec) -> int:
        assert isinstance(spec.model, LinearSpec)
        closed_form = spec.model.resolved_solver(spec.task) == "normal_equation"
        return 1 if closed_form else spec.training.epochs

    def train(
        self,
        spec: JobSpec,
        data: PreparedData | None,
        reporter: Reporter,
        *,
        teacher: Teacher | None = None,
        cancel_poll_seconds: float = 1.0,
    ) -> TrainResult:
        """The normal equation in one step, or the shared loop with the L1/L2 penalty; the
        polynomial features are standardised on the training part first."""
        model = spec.model
        assert data is not None and isinstance(model, LinearSpec)
        config = self.config(spec, data.shape())
        device = data.train.x.device
        torch.manual_seed(spec.training.seed)
        net = LinearNet(
            config["in_features"], config["out_features"], model.degree, model.fit_intercept
        ).to(device)
        if net.poly is not None:
            with torch.no_grad():
                expanded = net.poly(data.train.x)  # (N, F_poly)
                std = expanded.std(dim=0, unbiased=False)
                std[std < 1e-12] = 1.0  # a constant column: leave it unscaled
                net.feature_mean.copy_(expanded.mean(dim=0))
                net.feature_std.copy_(std)
        objective = Objective(data.task, data.num_classes, data.target_std, data.target_mean)

        if model.resolved_solver(spec.task) == "normal_equation":
            return _train_closed_form(net, spec, objective, data, reporter, config)

        def penalty() -> torch.Tensor:
            w = net.linear.weight
            return model.l2 * w.pow(2).sum() + model.l1 * w.abs().sum()

        optimizer = build_optimizer(spec.optimizer, net.parameters())
        use_penalty = model.l1 > 0 or model.l2 > 0
        return fit(
            net,
            optimizer,
            objective,
            data,
            spec.training,
            reporter,
            config,
            penalty=penalty if use_penalty else None,
            cancel_poll_seconds=cancel_poll_seconds,
        )


def _too_wide(model: LinearSpec, features: int) -> str | None:
    width = poly_feature_count(features, model.degree)
    if width <= MAX_POLY_FEATURES:
        return None
    return (
        f"degree {model.degree} on {features} features gives {width} polynomial features, "
        f"more than the limit of {MAX_POLY_FEATURES}; lower the degree or choose fewer "
        "features"
    )


def _train_closed_form(
    net: LinearNet,
    spec: JobSpec,
    objective: Objective,
    data: PreparedData,
    reporter: Reporter,
    config: dict[str, Any],
) -> TrainResult:
    model = spec.model
    assert isinstance(model, LinearSpec)
    started = time.perf_counter()
    with torch.no_grad():
        design = net.features(data.train.x).cpu()
        w, b = solve_normal_equation(
            design, data.train.y.cpu(), l2=model.l2, fit_intercept=model.fit_intercept
        )
        net.linear.weight.copy_(w.to(net.linear.weight.dtype).unsqueeze(0))
        if net.linear.bias is not None:
            net.linear.bias.fill_(float(b))
    metrics, outputs = final_metrics(net, objective, data, spec.training)
    history = history_metrics("val", metrics["validation"])
    record = EpochRecord(
        1,
        metrics["train"].get("loss"),
        metrics["validation"].get("loss"),
        history,
        time.perf_counter() - started,
    )
    reporter.epoch_end(record)
    tensors = {f"net.{k}": v for k, v in net.state_dict().items()}
    tensors["rng"] = torch.Generator().get_state()
    reporter.checkpoint(1, tensors, None, {"epoch": 1, "metrics": history})
    return TrainResult(net, config, metrics, 1, outputs=outputs)


KIND = Linear()
