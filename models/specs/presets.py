"""Tuned DQN settings per gymnasium environment: a DQN job on one of these environments takes
them for every field it leaves out (its own fields always win), and its stored spec shows
what was used. Each set says where it comes from and what that source reports with it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ZOO = "RL Baselines3 Zoo, hyperparams/dqn.yml"
ZOO_RESULTS = "RL Baselines3 Zoo, benchmark.md (DQN, deterministic policy)"


@dataclass(frozen=True)
class EnvironmentDefaults:
    model: dict[str, Any]
    optimizer: dict[str, Any]
    training: dict[str, Any]
    source: str
    reported: str  # the result the source reports with these settings
    notes: list[str] = field(default_factory=list)


DQN_DEFAULTS: dict[str, EnvironmentDefaults] = {
    "CartPole-v1": EnvironmentDefaults(
        model={
            "hidden_layers": [128, 128],
            "buffer_size": 100_000,
            "learning_starts": 1_000,
            "batch_size": 64,
            "gamma": 0.99,
            "train_freq": 64,
            "gradient_steps": 16,
            "target_update_interval": 10,
            "exploration": {"start": 1.0, "end": 0.04, "fraction": 0.16},
        },
        optimizer={"name": "adam", "lr": 2.3e-3},
        training={"total_steps": 50_000},
        source=f"{ZOO}, CartPole-v1, at half its replay ratio (16 gradient steps every 64 "
        "environment steps instead of 128 every 256) and with a 128-128 network: Keiko's "
        "measurement in bench/dqn_cartpole.py",
        reported="500 (the maximum) after 50,000 steps, on seeds 0, 1 and 2 (BENCHMARKS.md); "
        f"{ZOO_RESULTS}: 500.0 ± 0.0 after 50k",
    ),
    "Acrobot-v1": EnvironmentDefaults(
        model={
            "hidden_layers": [256, 256],
            "buffer_size": 50_000,
            "learning_starts": 0,
            "batch_size": 128,
            "gamma": 0.99,
            "train_freq": 4,
            "gradient_steps": 4,  # the zoo's -1: as many as the steps collected
            "target_update_interval": 250,
            "exploration": {"start": 1.0, "end": 0.1, "fraction": 0.12},
        },
        optimizer={"name": "adam", "lr": 6.3e-4},
        training={"total_steps": 100_000},
        source=f"{ZOO}, Acrobot-v1",
        reported=f"{ZOO_RESULTS}: -76.6 ± 11.8 after 100k steps",
    ),
    "MountainCar-v0": EnvironmentDefaults(
        model={
            "hidden_layers": [256, 256],
            "buffer_size": 10_000,
            "learning_starts": 1_000,
            "batch_size": 128,
            "gamma": 0.98,
            "train_freq": 16,
            "gradient_steps": 8,
            "target_update_interval": 600,
            "exploration": {"start": 1.0, "end": 0.07, "fraction": 0.2},
        },
        optimizer={"name": "adam", "lr": 4e-3},
        training={"total_steps": 120_000},
        source=f"{ZOO}, MountainCar-v0",
        reported=f"{ZOO_RESULTS}: -100.8 ± 9.9 after 120k steps",
    ),
    "LunarLander-v3": EnvironmentDefaults(
        model={
            "hidden_layers": [256, 256],
            "buffer_size": 50_000,
            "learning_starts": 0,
            "batch_size": 128,
            "gamma": 0.99,
            "train_freq": 4,
            "gradient_steps": 4,  # the zoo's -1: as many as the steps collected
            "target_update_interval": 250,
            "exploration": {"start": 1.0, "end": 0.1, "fraction": 0.12},
        },
        optimizer={"name": "adam", "lr": 6.3e-4},
        training={"total_steps": 100_000},
        source=f"{ZOO}, LunarLander-v2 (v3 is the same task with its bugs fixed)",
        reported=f"{ZOO_RESULTS}: 154.4 ± 79.2 after 100k steps (on LunarLander-v2)",
    ),
}


def with_environment_defaults(data: dict[str, Any], default_env: str) -> dict[str, Any]:
    """A raw DQN job spec with its environment's tuned settings in every field it leaves
    out: the model's fields (the exploration's one by one), the optimizer when none is
    named (or its `lr` when the same optimizer is named without one), and the training's."""
    model = data.get("model")
    if not isinstance(model, dict):
        return data
    env = model.get("env", default_env)
    defaults = DQN_DEFAULTS.get(env) if isinstance(env, str) else None
    if defaults is None:
        return data
    merged_model = {**defaults.model, **model}
    exploration = model.get("exploration")
    if isinstance(exploration, dict):
        merged_model["exploration"] = {**defaults.model["exploration"], **exploration}
    merged = {**data, "model": merged_model}
    optimizer = data.get("optimizer")
    if "optimizer" not in data:
        merged["optimizer"] = dict(defaults.optimizer)
    elif (
        isinstance(optimizer, dict)
        and optimizer.get("name") == defaults.optimizer["name"]
        and "lr" not in optimizer
    ):
        merged["optimizer"] = {**optimizer, "lr": defaults.optimizer["lr"]}
    training = data.get("training")
    if "training" not in data:
        merged["training"] = dict(defaults.training)
    elif isinstance(training, dict):
        merged["training"] = {**defaults.training, **training}
    return merged
