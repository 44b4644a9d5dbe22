"""Job spec validation: the discriminated unions refuse what does not belong."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from models.specs import DQN_DEFAULTS, DQNSpec, JobSpec, LinearSpec, MLPSpec


def spec(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "dataset_id": "d1",
        "task": "regression",
        "target": "y",
        "model": {"kind": "linear"},
    }
    base.update(overrides)
    return base


def test_defaults() -> None:
    parsed = JobSpec.model_validate(spec())
    assert isinstance(parsed.model, LinearSpec)
    assert parsed.model.resolved_solver("regression") == "normal_equation"
    assert parsed.model.resolved_solver("classification") == "sgd"
    assert parsed.optimizer.name == "adam" and parsed.optimizer.lr == 0.001
    assert parsed.training.epochs == 10


def test_lasso_defaults_to_sgd_and_refuses_closed_form() -> None:
    parsed = JobSpec.model_validate(spec(model={"kind": "linear", "l1": 0.1}))
    assert isinstance(parsed.model, LinearSpec)
    assert parsed.model.resolved_solver("regression") == "sgd"
    with pytest.raises(ValidationError, match="l1 has no closed-form"):
        JobSpec.model_validate(
            spec(model={"kind": "linear", "l1": 0.1, "solver": "normal_equation"})
        )


@pytest.mark.parametrize(
    ("activation", "init"),
    [("relu", "he"), ("leaky_relu", "he"), ("tanh", "xavier"), ("sigmoid", "xavier")],
)
def test_mlp_init_follows_activation(activation: str, init: str) -> None:
    parsed = JobSpec.model_validate(spec(model={"kind": "mlp", "activation": activation}))
    assert isinstance(parsed.model, MLPSpec)
    assert parsed.model.resolved_init() == init


@pytest.mark.parametrize(
    "override",
    [
        {"model": {"kind": "mlp", "hidden_layers": [0]}},
        {"model": {"kind": "mlp", "dropout": 1.0}},
        {"model": {"kind": "mlp", "activation": "gelu"}},
        {"model": {"kind": "linear", "degree": 0}},
        {"model": {"kind": "linear", "l2": float("inf")}},
        {"model": {"kind": "linear", "hidden_layers": [3]}},
        {"training": {"batch_size": 0}},
        {"training": {"validation_split": float("nan")}},
        {"training": {"early_stopping": {"patience": 3}, "validation_split": 0}},
        {"training": {"device": "tpu"}},
        {"features": ["a", "a"]},
        {"features": ["y"]},
        {"task": "clustering"},
        {"dataset_id": ""},
        {"unknown_field": 1},
    ],
)
def test_invalid_specs(override: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        JobSpec.model_validate(spec(**override))


def test_spec_round_trips_through_json() -> None:
    parsed = JobSpec.model_validate(
        spec(
            model={"kind": "mlp", "hidden_layers": [8, 4], "batch_norm": True},
            optimizer={"name": "rmsprop", "lr": 0.01, "decay_rate": 0.9},
            training={"early_stopping": {"patience": 2}},
        )
    )
    assert JobSpec.model_validate(parsed.model_dump(mode="json")) == parsed


def test_a_stored_spec_holds_only_its_familys_training_settings() -> None:
    """No `total_steps` on a supervised job's stored spec, no `epochs` on an RL job's; the
    stored form validates back to the same spec, and a field of the other family that is
    sent is still refused, by name."""
    supervised = JobSpec.model_validate(
        {"dataset_id": "d", "task": "regression", "target": "y", "model": {"kind": "mlp"}}
    )
    stored = supervised.model_dump(mode="json")
    assert "epochs" in stored["training"] and "total_steps" not in stored["training"]
    assert not {"eval_interval", "eval_episodes"} & set(stored["training"])
    assert JobSpec.model_validate(stored) == supervised

    rl = JobSpec.model_validate({"model": {"kind": "dqn"}, "training": {"total_steps": 900}})
    stored = rl.model_dump(mode="json")
    assert stored["training"]["total_steps"] == 900 and "epochs" not in stored["training"]
    assert not {"batch_size", "validation_split", "early_stopping"} & set(stored["training"])
    assert JobSpec.model_validate(stored) == rl

    with pytest.raises(ValidationError, match=r"training\.total_steps belong to reinforcement"):
        JobSpec.model_validate({**stored_supervised(), "training": {"total_steps": 10}})


def stored_supervised() -> dict[str, object]:
    return {"dataset_id": "d", "task": "regression", "target": "y", "model": {"kind": "mlp"}}


def dqn_job(model: dict[str, Any], **rest: Any) -> JobSpec:
    return JobSpec.model_validate({"dataset_id": None, "model": {"kind": "dqn", **model}, **rest})


@pytest.mark.parametrize("env", sorted(DQN_DEFAULTS))
def test_a_dqn_job_takes_its_environments_tuned_settings(env: str) -> None:
    defaults = DQN_DEFAULTS[env]
    job = dqn_job({"env": env}, training={"seed": 1})
    stored = job.model_dump(mode="json")
    for name, value in defaults.model.items():
        assert stored["model"][name] == value, name
    assert stored["optimizer"]["name"] == defaults.optimizer["name"]
    assert stored["optimizer"]["lr"] == defaults.optimizer["lr"]
    assert stored["training"]["total_steps"] == defaults.training["total_steps"]
    assert stored["training"]["seed"] == 1
    assert JobSpec.model_validate(stored) == job  # the stored spec says what was used
    assert defaults.source and defaults.reported


def test_the_users_own_fields_win_over_the_tuned_ones() -> None:
    job = dqn_job(
        {"env": "CartPole-v1", "hidden_layers": [32], "exploration": {"end": 0.2}},
        optimizer={"name": "adam"},
        training={"total_steps": 2000},
    )
    assert job.model.hidden_layers == [32]  # type: ignore[union-attr]
    assert job.model.train_freq == 64  # type: ignore[union-attr]  # left out: tuned
    exploration = job.model.exploration  # type: ignore[union-attr]
    assert (exploration.end, exploration.fraction) == (0.2, 0.16)  # one by one
    assert job.optimizer.lr == 2.3e-3  # the same optimizer named without an lr
    assert job.training.total_steps == 2000
    other = dqn_job({"env": "CartPole-v1"}, optimizer={"name": "sgd", "lr": 0.01})
    assert (other.optimizer.name, other.optimizer.lr) == ("sgd", 0.01)
    assert dqn_job({}).model.hidden_layers == [128, 128]  # type: ignore[union-attr]  # default env


def test_environments_without_tuned_settings_keep_the_kinds_defaults() -> None:
    job = dqn_job({"env": "FrozenLake-v1"})
    plain = DQNSpec(kind="dqn", env="FrozenLake-v1")
    assert job.model == plain
    assert job.optimizer.lr == 1e-3 and job.training.total_steps == 50_000
    tabular = JobSpec.model_validate(
        {"dataset_id": None, "model": {"kind": "q_learning", "env": "CartPole-v1"}}
    )
    assert tabular.optimizer.lr == 1e-3  # only DQN jobs take them
