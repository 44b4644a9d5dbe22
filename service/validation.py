"""Checks of a job spec against its datasets (or environment) and the service's caps, before
the job is recorded: a wrong column, an impossible task or a network too big for the
workers is a 422 now rather than a failed job later.

The dataset is described once from its stored record (`models.describe`), and the job's
kind is asked what it makes of it (`models.kind`): nothing here names a kind.
"""

from __future__ import annotations

from models.base import SpecError
from models.describe import DatasetRecord, describe
from models.distillation import TeacherRecord, check_teacher
from models.envs import EnvError, EnvInfo
from models.kind import EnvironmentKind
from models.registry import get_kind
from models.specs import JobSpec
from service.errors import Unprocessable
from service.settings import Settings


def check_environment(spec: JobSpec, settings: Settings) -> None:
    """A reinforcement-learning job's environment exists here and suits the kind."""
    kind = get_kind(spec.model.kind)
    assert isinstance(kind, EnvironmentKind)
    try:
        info = kind.environment(spec)
    except EnvError as exc:
        raise Unprocessable(str(exc)) from exc
    _check_time_limit(spec, settings)
    _check_size(kind.parameter_count(spec, info), settings)


def check_job(
    spec: JobSpec,
    dataset: DatasetRecord,
    test_dataset: DatasetRecord | None,
    settings: Settings,
    teacher: TeacherRecord | None = None,
) -> None:
    """`teacher`: the caller's model that the spec's `model.distillation` names."""
    _check_time_limit(spec, settings)
    kind = get_kind(spec.model.kind)
    try:
        description = describe(spec, dataset, test_dataset, kind.data)
        kind.check(spec, description)
        if teacher is not None:
            check_teacher(description, teacher)
        count = kind.parameter_count(spec, description.shape)
    except SpecError as exc:
        if spec.recipe is not None:  # the caller sent a name, not these settings: say so
            raise Unprocessable(
                f"recipe {spec.recipe!r} does not fit this dataset: {exc} (see "
                f"GET /recipes/{spec.recipe} for what it needs)"
            ) from exc
        raise Unprocessable(str(exc)) from exc
    _check_size(count, settings)


def parameter_count(spec: JobSpec, source: DatasetRecord | EnvInfo) -> int:
    """Trainable parameters of the network `spec` trains on `source`: a dataset's record
    (checked by `check_job` first) or an environment's description."""
    kind = get_kind(spec.model.kind)
    if isinstance(source, EnvInfo):
        return kind.parameter_count(spec, source)
    return kind.parameter_count(spec, describe(spec, source, form=kind.data).shape)


# Caps that keep one job from exhausting a worker -------------------------------------------


def _check_time_limit(spec: JobSpec, settings: Settings) -> None:
    limit = spec.training.time_limit_seconds
    if limit is not None and limit > settings.max_job_seconds:
        raise Unprocessable(
            f"training.time_limit_seconds is {limit:g}, more than this service allows: "
            f"{settings.max_job_seconds:g} s (KEIKO_MAX_JOB_SECONDS)"
        )


def _check_size(count: int, settings: Settings) -> None:
    if count > settings.max_parameters:
        raise Unprocessable(
            f"the network would have {count:,} parameters, more than this service allows: "
            f"{settings.max_parameters:,} (KEIKO_MAX_PARAMETERS); make it smaller"
        )
