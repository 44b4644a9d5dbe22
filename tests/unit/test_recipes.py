"""Recipes (models/specs/recipes.py): each is a valid job once it has what it needs, the
job's own fields go on top of it, and the stored spec is the expanded one."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from models.specs import RECIPES, JobSpec


def needed(name: str) -> dict[str, Any]:
    given = {"dataset_id": "d", "target": "value"}
    return {field: given[field] for field in RECIPES[name].needs}


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_every_recipe_is_a_valid_job(name: str) -> None:
    recipe = RECIPES[name]
    job = JobSpec.model_validate({"recipe": name, **needed(name)})
    stored = job.model_dump(mode="json")
    assert stored["recipe"] == name
    assert stored["model"]["kind"] == recipe.spec["model"]["kind"]
    for key, value in recipe.spec.get("training", {}).items():
        if not isinstance(value, dict):
            assert stored["training"][key] == value, key
    assert JobSpec.model_validate(stored) == job  # the stored spec says what was used
    assert recipe.title and recipe.description and recipe.reached


def test_the_jobs_fields_go_on_top_of_the_recipe() -> None:
    job = JobSpec.model_validate(
        {
            "recipe": "mnist-cnn",
            "dataset_id": "d",
            "model": {"head": [64]},
            "training": {"epochs": 2, "lr_schedule": {"warmup_epochs": 1}},
        }
    )
    assert job.model.kind == "cnn" and job.model.head == [64]  # type: ignore[union-attr]
    assert len(job.model.layers) == len(RECIPES["mnist-cnn"].spec["model"]["layers"])  # type: ignore[union-attr]
    assert job.training.epochs == 2 and job.training.batch_size == 128
    assert job.training.lr_schedule is not None
    assert (job.training.lr_schedule.name, job.training.lr_schedule.warmup_epochs) == ("cosine", 1)
    # Another kind or another optimizer replaces the recipe's whole.
    other = JobSpec.model_validate(
        {
            "recipe": "mnist-cnn",
            "dataset_id": "d",
            "model": {"kind": "mlp", "hidden_layers": [16]},
            "optimizer": {"name": "sgd"},
        }
    )
    assert other.model.kind == "mlp" and other.model.hidden_layers == [16]  # type: ignore[union-attr]
    assert (other.optimizer.name, other.optimizer.lr) == ("sgd", 0.01)


def test_an_unknown_recipe_is_refused_by_name() -> None:
    with pytest.raises(ValidationError, match=r"no recipe named 'mnist-rnn'.*mnist-cnn"):
        JobSpec.model_validate({"recipe": "mnist-rnn", "dataset_id": "d"})


def test_the_optimizer_comparison_differs_only_in_the_optimizer() -> None:
    specs = [
        JobSpec.model_validate({"recipe": name, "dataset_id": "d"}).model_dump(mode="json")
        for name in RECIPES
        if name.startswith("optimizers-")
    ]
    assert sorted(s["optimizer"]["name"] for s in specs) == sorted(
        ["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam"]
    )
    for spec in specs:
        assert {k: v for k, v in spec.items() if k not in ("optimizer", "recipe")} == {
            k: v for k, v in specs[0].items() if k not in ("optimizer", "recipe")
        }
