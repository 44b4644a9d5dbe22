"""Hyperparameter studies: what a user posts to search over a job spec's fields (issue 17).

A study is a base job spec (a recipe's name will do), a search space over its fields by
dotted path (`optimizer.lr`, `model.hidden_layers`, `model.layers.0.out_channels`), the
metric to optimise and its direction, how many trials and how many at once, a sampler and
a pruner. Every trial is the base spec with one sample of the space on top, an ordinary
job. `check_study` refuses, before anything runs, a space whose paths do not exist for the
kind, whose ranges are empty, or whose samples would fail the job spec's own validation.
"""

from __future__ import annotations

import copy
import itertools
import math
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, model_validator

from models.specs.base import StrictModel

MAX_TRIALS = 1000
MAX_PARALLEL = 64
MAX_CHOICES = 100
MAX_PARAMS = 32
MAX_GRID = 100_000  # combinations of a grid study
# Paths a study cannot search: they choose the data or the kind, not a setting.
FIXED_PATHS = ("dataset_id", "test_dataset_id", "task", "recipe", "model.kind")
# Metric names a study maximises by default; every other one it minimises (losses, errors).
HIGHER_IS_BETTER = ("accuracy", "precision", "recall", "f1", "r2", "return_mean")
# The final metrics a supervised job reports for each part, by task (models.metrics).
METRICS = {
    "classification": ("loss", "accuracy", "precision", "recall", "f1", "log_loss"),
    "regression": ("loss", "mse", "rmse", "mae", "r2"),
    "forecasting": ("loss", "mse", "rmse", "mae", "r2"),
}
PARTS = ("train", "validation", "test")
# The validation metrics every epoch's history entry holds (models.loop.HISTORY_METRICS and
# the loss): pruning can read only these.
EPOCH_METRICS = ("loss", "accuracy", "f1", "log_loss", "mse", "rmse", "mae", "r2")


class FloatParam(StrictModel):
    """A number between `low` and `high` (uniform, or log-uniform with `log`; multiples of
    `step` above `low` when given)."""

    type: Literal["float"]
    low: float
    high: float
    log: bool = False
    step: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _range(self) -> FloatParam:
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            raise ValueError("low and high must be finite numbers")
        if self.low > self.high:
            raise ValueError(f"the range is empty: low {self.low:g} > high {self.high:g}")
        if self.log and self.low <= 0:
            raise ValueError(f"a log-uniform range needs low > 0, got {self.low:g}")
        if self.log and self.step is not None:
            raise ValueError("give `log` or `step`, not both")
        return self

    def corners(self) -> list[Any]:
        return [self.low, self.high]

    def grid_count(self) -> int | None:
        if self.step is None:
            return None
        return math.floor((self.high - self.low) / self.step + 1e-9) + 1

    def grid(self) -> list[Any] | None:
        count = self.grid_count()
        return None if count is None else [self.low + i * self.step for i in range(count)]  # type: ignore[operator]


class IntParam(StrictModel):
    """A whole number from `low` to `high`, both included (every `step`-th; log-uniform
    with `log`)."""

    type: Literal["int"]
    low: int
    high: int
    log: bool = False
    step: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _range(self) -> IntParam:
        if self.low > self.high:
            raise ValueError(f"the range is empty: low {self.low} > high {self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"a log-uniform range needs low > 0, got {self.low}")
        if self.log and self.step != 1:
            raise ValueError("give `log` or `step`, not both")
        return self

    def corners(self) -> list[Any]:
        return [self.low, self.low + (self.high - self.low) // self.step * self.step]

    def grid_count(self) -> int | None:
        return (self.high - self.low) // self.step + 1

    def grid(self) -> list[Any] | None:
        return list(range(self.low, self.high + 1, self.step))


class CategoricalParam(StrictModel):
    """One of `choices`: numbers, strings, booleans, null or lists of them (for example
    hidden layer widths)."""

    type: Literal["categorical"]
    choices: list[Any] = Field(min_length=1, max_length=MAX_CHOICES)

    def corners(self) -> list[Any]:
        return list(self.choices)

    def grid_count(self) -> int | None:
        return len(self.choices)

    def grid(self) -> list[Any] | None:
        return list(self.choices)


Param = Annotated[FloatParam | IntParam | CategoricalParam, Field(discriminator="type")]


class SamplerSpec(StrictModel):
    name: Literal["tpe", "random", "grid"] = Field(
        "tpe",
        description="`tpe` (Optuna's Tree-structured Parzen Estimator), `random`, or `grid` "
        "(every combination of categorical choices and stepped ranges, in turn).",
    )
    seed: int | None = Field(None, ge=0, description="Seeds the sampler (default: the base seed).")


class PrunerSpec(StrictModel):
    name: Literal["median", "successive_halving", "hyperband", "none"] = Field(
        "median",
        description="`median` stops a trial whose metric at an epoch (RL: an evaluation) is "
        "worse than the median of earlier trials at the same epoch; `successive_halving` and "
        "`hyperband` (ASHA) keep the best fraction at each rung; `none` never stops one.",
    )
    warmup_epochs: int = Field(
        1, ge=0, description="Epochs (evaluations) a trial runs before it may be stopped."
    )
    startup_trials: int = Field(
        3, ge=0, description="median: trials that finish before any is stopped."
    )
    reduction_factor: int = Field(
        3, ge=2, description="successive_halving, hyperband: 1 in this many goes on."
    )


class StudySpec(StrictModel):
    """What `POST /studies` takes."""

    base: dict[str, Any] = Field(
        description="The job spec every trial starts from, as `POST /jobs` takes it "
        "(a `recipe` with `dataset_id` will do)."
    )
    space: dict[Annotated[str, Field(min_length=1, max_length=256)], Param] = Field(
        min_length=1,
        max_length=MAX_PARAMS,
        description="Fields to search, by dotted path into the job spec (`optimizer.lr`, "
        "`model.hidden_layers`, `model.layers.0.out_channels`), each a `float`, `int` or "
        "`categorical` parameter.",
    )
    metric: str = Field(
        "validation.loss",
        min_length=1,
        max_length=64,
        description="What to optimise: a final metric by part and name (`validation.accuracy`, "
        "`validation.rmse`, `test.f1`) or, for reinforcement learning, `eval_return_mean`. "
        "Pruning reads the same metric each epoch, so it needs a validation metric (or the "
        "evaluation return).",
    )
    direction: Literal["maximize", "minimize"] | None = Field(
        None,
        description="Default: maximize for accuracy, precision, recall, f1, r2 and returns; "
        "minimize otherwise.",
    )
    n_trials: int = Field(20, ge=1, le=MAX_TRIALS, description="Trials in all.")
    parallelism: int = Field(
        2, ge=1, le=MAX_PARALLEL, description="Trials queued or running at once."
    )
    sampler: SamplerSpec = Field(default_factory=lambda: SamplerSpec())
    pruner: PrunerSpec = Field(default_factory=lambda: PrunerSpec())

    @property
    def resolved_direction(self) -> Literal["maximize", "minimize"]:
        if self.direction is not None:
            return self.direction
        return "maximize" if self.metric_name.endswith(HIGHER_IS_BETTER) else "minimize"

    @property
    def metric_name(self) -> str:
        return self.metric.rsplit(".", 1)[-1]

    def history_key(self) -> str | None:
        """The per-epoch history entry's field that holds the metric (pruning reads it), or
        None when the metric is only known at the end (the test or training part)."""
        if self.metric in ("eval_return_mean", "evaluation.return_mean"):
            return "eval_return_mean"
        part, _, name = self.metric.partition(".")
        if part == "validation" and name in EPOCH_METRICS:
            return f"val_{name}"
        return None

    def final_value(self, metrics: dict[str, Any]) -> float | None:
        """The metric in a finished job's final metrics (None when it has none)."""
        metric = "evaluation.return_mean" if self.metric == "eval_return_mean" else self.metric
        part, _, name = metric.partition(".")
        value = (metrics.get(part) or {}).get(name)
        return float(value) if isinstance(value, int | float) else None


def with_params(base: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """`base` with each value of `params` set at its dotted path (a number in a path
    indexes a list); raises KeyError naming a path that leads nowhere."""
    spec = copy.deepcopy(base)
    for path, value in params.items():
        node: Any = spec
        parts = path.split(".")
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise KeyError(f"{'.'.join(parts[:i])} has no item {part}")
                if last:
                    node[int(part)] = copy.deepcopy(value)
                else:
                    node = node[int(part)]
            elif isinstance(node, dict):
                if last:
                    node[part] = copy.deepcopy(value)
                else:
                    node = node.setdefault(part, {})
            else:
                raise KeyError(f"{'.'.join(parts[:i])} is not an object")
    return spec


DISCRIMINATORS = ("name", "kind", "type")  # the fields that choose a union's member


def complete_base(study: StudySpec, validate: Any) -> dict[str, Any]:
    """The base with what a searched path needs to stand alone: a path into an object the
    base leaves to its default (`optimizer.lr` with no `optimizer`) gets that object's
    discriminator (`optimizer.name: adam`), so that a trial's `{"lr": ...}` is still an
    Adam optimizer and not a spec without a name. The base as it is when it does not
    validate (check_study says why)."""
    try:
        full = validate(study.base).model_dump(mode="json")
    except ValidationError:
        return study.base
    base = copy.deepcopy(study.base)
    for path in study.space:
        raw: Any = base
        default: Any = full
        for part in path.split(".")[:-1]:
            if not (isinstance(raw, dict) and isinstance(default, dict) and part in default):
                break
            if part not in raw and isinstance(default[part], dict):
                raw[part] = {k: default[part][k] for k in DISCRIMINATORS if k in default[part]}
            raw, default = raw.get(part), default[part]
    return base


def check_study(study: StudySpec, validate: Any) -> None:
    """Refuse a space that cannot give valid trials: raises ValueError naming the first
    problem. `validate` turns a job spec dict into a `JobSpec` (raising pydantic's
    ValidationError), so that what is checked is exactly what `POST /jobs` would take."""
    for path in study.space:
        if path in FIXED_PATHS or path.split(".")[0] in FIXED_PATHS:
            raise ValueError(
                f"space: {path!r} chooses the data or the kind; a study cannot search it"
            )
    try:
        base = validate(study.base)
    except ValidationError as exc:
        raise ValueError(f"base: {_first_error(exc)}") from None
    if study.history_key() is None and study.pruner.name != "none":
        raise ValueError(
            f"metric {study.metric!r} is only known when a trial ends, so no trial could be "
            f"pruned: optimise validation.{{{', '.join(EPOCH_METRICS)}}} (or "
            "eval_return_mean), or set pruner 'none'"
        )
    _check_metric(study, base)
    if study.sampler.name == "grid":
        counts = {path: param.grid_count() for path, param in study.space.items()}
        missing = [path for path, count in counts.items() if count is None]
        if missing:
            raise ValueError(
                f"the grid sampler needs choices or a step for every parameter: {missing} "
                "have neither"
            )
        if math.prod(count or 0 for count in counts.values()) > MAX_GRID:
            raise ValueError(f"the grid has more than {MAX_GRID:,} combinations")
    # Every corner of each parameter, the others at their first corner: a path the kind
    # does not have, or a value its spec refuses, shows here.
    first = {path: param.corners()[0] for path, param in study.space.items()}
    for path, param in study.space.items():
        for value in param.corners():
            sample = {**first, path: value}
            try:
                validate(with_params(study.base, sample))
            except KeyError as exc:
                raise ValueError(f"space: {path!r}: {exc.args[0]}") from None
            except ValidationError as exc:
                raise ValueError(f"space: {path} = {value!r}: {_first_error(exc)}") from None


def _check_metric(study: StudySpec, base: Any) -> None:
    """The metric is one the base spec's jobs report (and, for a validation metric, they
    have a validation part)."""
    if base.task == "reinforcement":
        if study.metric not in ("eval_return_mean", "evaluation.return_mean"):
            raise ValueError(
                f"metric {study.metric!r}: a reinforcement-learning trial reports eval_return_mean"
            )
        return
    part, _, name = study.metric.partition(".")
    names = METRICS[base.task]
    if part not in PARTS or name not in names:
        raise ValueError(
            f"metric {study.metric!r}: a {base.task} trial reports <part>.<name>, part one "
            f"of {', '.join(PARTS)} and name one of {', '.join(names)}"
        )
    if part == "validation" and base.training.validation_split == 0:
        raise ValueError(
            f"metric {study.metric!r}: the base spec has no validation part "
            "(training.validation_split is 0)"
        )


def grid_points(study: StudySpec) -> list[dict[str, Any]]:
    """Every combination of the grid, in order (paths in the space's order)."""
    paths = list(study.space)
    values = [study.space[path].grid() or [] for path in paths]
    return [dict(zip(paths, combo, strict=True)) for combo in itertools.product(*values)]


def _first_error(exc: ValidationError) -> str:
    """The first error, where (pydantic's location: a union's tag, such as the model's
    kind, is part of it) and what."""
    error = exc.errors()[0]
    loc = [str(part) for part in error["loc"]]
    where = ".".join(loc)
    if error["type"] == "extra_forbidden":
        if len(loc) >= 3 and loc[0] in ("model", "optimizer"):
            what = "kind" if loc[0] == "model" else "optimizer"
            field = ".".join([loc[0], *loc[2:]])
            return f"{field}: the {loc[1]} {what} has no such field"
        return f"{where}: no such field"
    return f"{where}: {error['msg']}" if where else str(error["msg"])
