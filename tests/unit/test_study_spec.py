"""Study specs (issue 17): search spaces over a job spec's fields, checked before anything
runs: unknown paths, fields the kind lacks, empty ranges and samples that the job spec
itself would refuse are errors naming the path."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from models.specs import JobSpec
from models.specs.study import StudySpec, check_study, complete_base, grid_points, with_params

BASE: dict[str, Any] = {
    "dataset_id": "d",
    "task": "classification",
    "target": "species",
    "model": {"kind": "mlp", "hidden_layers": [16]},
    "optimizer": {"name": "adam", "lr": 0.01},
    "training": {"epochs": 5, "validation_split": 0.2},
}
SPACE: dict[str, Any] = {
    "optimizer.lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
    "optimizer.name": {"type": "categorical", "choices": ["sgd", "momentum", "adam"]},
    "model.hidden_layers": {"type": "categorical", "choices": [[16], [64, 32]]},
    "model.dropout": {"type": "float", "low": 0.0, "high": 0.5},
    "training.batch_size": {"type": "categorical", "choices": [16, 32, 64]},
}


def study(**fields: Any) -> StudySpec:
    return StudySpec.model_validate({"base": BASE, "space": SPACE, **fields})


def check(**fields: Any) -> None:
    check_study(study(**fields), JobSpec.model_validate)


def test_the_issues_space_is_taken_and_each_sample_is_a_job_spec() -> None:
    spec = study(metric="validation.accuracy")
    check_study(spec, JobSpec.model_validate)
    assert spec.resolved_direction == "maximize" and spec.history_key() == "val_accuracy"
    sample = {"optimizer.lr": 0.003, "optimizer.name": "sgd", "model.hidden_layers": [64, 32]}
    job = JobSpec.model_validate(with_params(BASE, sample))
    assert job.optimizer.name == "sgd" and job.optimizer.lr == 0.003
    assert job.model.hidden_layers == [64, 32]  # type: ignore[union-attr]
    assert BASE["optimizer"] == {"name": "adam", "lr": 0.01}  # the base is not changed
    assert study().resolved_direction == "minimize" and study().history_key() == "val_loss"


@pytest.mark.parametrize(
    ("space", "reason"),
    [
        ({"optimiser.lr": {"type": "float", "low": 0.1, "high": 1}}, "optimiser: no such field"),
        ({"model.kernel_size": {"type": "int", "low": 1, "high": 3}}, "the mlp kind has no such"),
        ({"model.dropout": {"type": "float", "low": 0.0, "high": 1.0}}, "model.dropout = 1.0"),
        ({"training.batch_size": {"type": "int", "low": 0, "high": 64}}, "batch_size = 0"),
        ({"model.hidden_layers.3": {"type": "int", "low": 1, "high": 4}}, "has no item 3"),
        ({"dataset_id": {"type": "categorical", "choices": ["x"]}}, "cannot search it"),
        ({"model.kind": {"type": "categorical", "choices": ["cnn"]}}, "cannot search it"),
    ],
)
def test_a_space_that_cannot_give_valid_trials_is_refused(
    space: dict[str, Any], reason: str
) -> None:
    with pytest.raises(ValueError, match="space: ") as refused:
        check(space=space)
    assert reason in str(refused.value)


@pytest.mark.parametrize(
    ("param", "reason"),
    [
        ({"type": "float", "low": 0.5, "high": 0.1}, "the range is empty"),
        ({"type": "int", "low": 5, "high": 1}, "the range is empty"),
        ({"type": "float", "low": 0.0, "high": 1.0, "log": True}, "needs low > 0"),
        ({"type": "categorical", "choices": []}, "at least 1 item"),
        ({"type": "normal", "mean": 0}, "does not match any of the expected tags"),
    ],
)
def test_empty_or_malformed_ranges_are_refused_when_parsed(
    param: dict[str, Any], reason: str
) -> None:
    with pytest.raises(ValidationError, match=reason):
        study(space={"optimizer.lr": param})


def test_the_metric_must_be_one_the_trials_report_each_epoch_when_pruning() -> None:
    with pytest.raises(ValueError, match="only known when a trial ends"):
        check(metric="test.accuracy")
    check(metric="test.accuracy", pruner={"name": "none"})
    with pytest.raises(ValueError, match="name one of loss, accuracy"):
        check(metric="validation.rmse")
    with pytest.raises(ValueError, match="no validation part"):
        check_study(
            StudySpec.model_validate(
                {"base": {**BASE, "training": {"validation_split": 0}}, "space": SPACE}
            ),
            JobSpec.model_validate,
        )
    rl = {"model": {"kind": "dqn", "env": "CartPole-v1"}, "training": {"total_steps": 2000}}
    space = {"model.gamma": {"type": "float", "low": 0.9, "high": 0.999}}
    rl_study = StudySpec.model_validate({"base": rl, "space": space, "metric": "eval_return_mean"})
    check_study(rl_study, JobSpec.model_validate)
    assert rl_study.resolved_direction == "maximize"
    assert rl_study.final_value({"evaluation": {"return_mean": 187.5}}) == 187.5
    with pytest.raises(ValueError, match="reports eval_return_mean"):
        check_study(
            rl_study.model_copy(update={"metric": "validation.loss"}), JobSpec.model_validate
        )


def test_a_grid_takes_choices_and_stepped_ranges_only() -> None:
    space = {
        "optimizer.lr": {"type": "float", "low": 0.01, "high": 0.03, "step": 0.01},
        "training.batch_size": {"type": "int", "low": 16, "high": 48, "step": 16},
    }
    grid = study(space=space, sampler={"name": "grid"})
    check_study(grid, JobSpec.model_validate)
    points = grid_points(grid)
    assert len(points) == 9
    assert [p["training.batch_size"] for p in points[:3]] == [16, 32, 48]
    assert [round(p["optimizer.lr"], 6) for p in points[::3]] == [0.01, 0.02, 0.03]
    with pytest.raises(ValueError, match="needs choices or a step"):
        check(sampler={"name": "grid"})


def test_paths_into_lists_set_one_item() -> None:
    base = {**BASE, "model": {"kind": "cnn", "layers": [
        {"type": "conv", "out_channels": 8, "kernel_size": 3}, {"type": "relu"}]}}  # fmt: skip
    spec = with_params(base, {"model.layers.0.out_channels": 32})
    assert spec["model"]["layers"][0] == {"type": "conv", "out_channels": 32, "kernel_size": 3}
    assert base["model"]["layers"][0]["out_channels"] == 8


def test_a_path_into_a_defaulted_object_keeps_that_objects_kind() -> None:
    base = {k: v for k, v in BASE.items() if k != "optimizer"}
    bare = StudySpec.model_validate(
        {"base": base, "space": {"optimizer.lr": SPACE["optimizer.lr"]}}
    )
    with pytest.raises(ValueError, match="discriminator"):  # {"lr": ...} alone is no optimizer
        check_study(bare, JobSpec.model_validate)
    completed = complete_base(bare, JobSpec.model_validate)
    assert completed == {**base, "optimizer": {"name": "adam"}}
    assert "optimizer" not in bare.base  # the study's own base is left alone
    check_study(bare.model_copy(update={"base": completed}), JobSpec.model_validate)
    trial = JobSpec.model_validate(with_params(completed, {"optimizer.lr": 0.003}))
    assert (trial.optimizer.name, trial.optimizer.lr) == ("adam", 0.003)
    # Where the base names its own, or does not validate, it is left as it is.
    assert complete_base(study(), JobSpec.model_validate) == BASE
    broken = StudySpec.model_validate({"base": {"task": "nope"}, "space": SPACE})
    assert complete_base(broken, JobSpec.model_validate) == {"task": "nope"}
