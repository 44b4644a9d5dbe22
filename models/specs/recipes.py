"""Recipes: named job specs that Keiko has measured (BENCHMARKS.md), offered by name.
`POST /jobs` with `{"recipe": NAME, "dataset_id": ..., ...}` trains the recipe's spec with
the request's own fields on top; `GET /recipes` lists them with what each reached."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Recipe:
    name: str
    title: str
    description: str
    spec: dict[str, Any]  # a job spec without its dataset ids
    reached: str  # what it reached, and where that is recorded
    needs: list[str] = field(default_factory=list)  # fields the job must add


def _conv_block(channels: int) -> list[dict[str, Any]]:
    conv = {"type": "conv", "out_channels": channels, "kernel_size": 3, "padding": 1}
    return [conv, {"type": "batch_norm"}, {"type": "relu"}, {"type": "max_pool", "kernel_size": 2}]


_CONVS = [*_conv_block(32), *_conv_block(64), *_conv_block(128)]
_IMAGES = "an image dataset of 28x28 grey digits (MNIST's IDX files, an NPZ or a zip of PNGs)"
_COSINE = {"name": "cosine"}

# The course's optimizer comparison: one MLP, each optimizer at a learning rate that suits it.
_OPTIMIZERS: dict[str, dict[str, Any]] = {
    "sgd": {"name": "sgd", "lr": 0.1},
    "momentum": {"name": "momentum", "lr": 0.01, "momentum": 0.9},
    "nesterov": {"name": "nesterov", "lr": 0.01, "momentum": 0.9},
    "adagrad": {"name": "adagrad", "lr": 0.01},
    "rmsprop": {"name": "rmsprop", "lr": 0.001},
    "adam": {"name": "adam", "lr": 0.001},
}
# What each reached in bench/optimizer_comparison.py (test accuracy, final training loss).
_COMPARED = {
    "sgd": "97.73 % test accuracy, training loss 0.0149",
    "momentum": "97.65 % test accuracy, training loss 0.0152",
    "nesterov": "97.77 % test accuracy, training loss 0.0149",
    "adagrad": "97.30 % test accuracy, training loss 0.0462",
    "rmsprop": "97.33 % test accuracy, training loss 0.0185",
    "adam": "97.54 % test accuracy, training loss 0.0195",
}

_LIST: list[Recipe] = [
    Recipe(
        "mnist-mlp",
        "MNIST: a one-hidden-layer MLP",
        "784-800-10 with ReLU and dropout 0.2, Adam 1e-3, batch 128, 20 epochs (Simard's MLP "
        f"baseline reports 98.4 %). Needs {_IMAGES}.",
        {
            "task": "classification",
            "model": {"kind": "mlp", "hidden_layers": [800], "activation": "relu", "dropout": 0.2},
            "optimizer": {"name": "adam", "lr": 1e-3},
            "training": {"epochs": 20, "batch_size": 128, "validation_split": 0.0},
        },
        "98.21 % test accuracy on MNIST's 10,000 test images (BENCHMARKS.md, MNIST accuracy)",
        ["dataset_id"],
    ),
    Recipe(
        "mnist-cnn",
        "MNIST: a small CNN with batch norm",
        "Three 3x3 conv, batch norm, ReLU and 2x2 max-pool blocks (32, 64, 128 channels), "
        "dropout 0.25, a 256-unit head with dropout 0.5; Adam 1e-3 with a cosine schedule, "
        f"batch 128, 8 epochs. Needs {_IMAGES}.",
        {
            "task": "classification",
            "model": {
                "kind": "cnn",
                "layers": [*_CONVS, {"type": "dropout", "p": 0.25}],
                "head": [256],
                "head_dropout": 0.5,
            },
            "optimizer": {"name": "adam", "lr": 1e-3},
            "training": {
                "epochs": 8,
                "batch_size": 128,
                "validation_split": 0.0,
                "lr_schedule": _COSINE,
            },
        },
        "99.36 % test accuracy on MNIST (BENCHMARKS.md, MNIST accuracy)",
        ["dataset_id"],
    ),
    Recipe(
        "mnist-cnn-elastic",
        "MNIST: the CNN with Simard's elastic distortions",
        "The mnist-cnn network without its conv dropout (head dropout 0.25), trained for 30 "
        "epochs with Simard's elastic distortion (alpha 34, sigma 4) on a random half of each "
        f"batch's images. Needs {_IMAGES}.",
        {
            "task": "classification",
            "model": {
                "kind": "cnn",
                "layers": _CONVS,
                "head": [256],
                "head_dropout": 0.25,
                "augmentation": {"elastic": {"alpha": 34, "sigma": 4}, "probability": 0.5},
            },
            "optimizer": {"name": "adam", "lr": 1e-3},
            "training": {
                "epochs": 30,
                "batch_size": 128,
                "validation_split": 0.0,
                "lr_schedule": _COSINE,
            },
        },
        "99.55 % test accuracy on MNIST (BENCHMARKS.md, MNIST accuracy; Simard: 99.6 %)",
        ["dataset_id"],
    ),
    Recipe(
        "cartpole-dqn",
        "CartPole-v1: DQN",
        "Double DQN on CartPole-v1 with the environment's tuned settings (README, tuned "
        "settings by environment) for 50,000 steps. No dataset.",
        {"model": {"kind": "dqn", "env": "CartPole-v1"}, "training": {"total_steps": 50_000}},
        "a greedy return of 500 (the maximum) on seeds 0, 1 and 2 (BENCHMARKS.md, DQN)",
    ),
    Recipe(
        "gridworld-q-learning",
        "The course's grid world: tabular Q-learning",
        "Q-learning on the course's 2x3 grid world (start top left, -20 for the cell to its "
        "right, +10 at the goal), alpha 0.5, gamma 0.9, epsilon from 1 to 0.05 over half the "
        "run, 3,000 steps. No dataset.",
        {
            "model": {
                "kind": "q_learning",
                "env": "GridWorld",
                "alpha": 0.5,
                "gamma": 0.9,
                "exploration": {"start": 1.0, "end": 0.05, "fraction": 0.5},
            },
            "training": {"total_steps": 3_000, "eval_interval": 1_000},
        },
        "the optimal return 8 (down, right, right), as tests/e2e/test_rl.py checks",
    ),
    Recipe(
        "forecast-lstm",
        "Forecasting a seasonal series with an LSTM",
        "An LSTM of 64 units on windows of 36 steps, a season of 12 for the seasonal-naive "
        "baseline, Adam 3e-3 with a cosine schedule, gradient clipping 1.0, 40 epochs, the "
        "last 20 % of the windows as the test part. Needs a table with the series' `target` "
        "column (and `time_column` if its rows are not in time order).",
        {
            "task": "forecasting",
            "window": 36,
            "horizon": 1,
            "seasonal_period": 12,
            "model": {"kind": "rnn", "cell": "lstm", "hidden_size": 64},
            "optimizer": {"name": "adam", "lr": 3e-3},
            "training": {
                "epochs": 40,
                "batch_size": 64,
                "validation_split": 0.1,
                "test_split": 0.2,
                "clip_grad_norm": 1.0,
                "lr_schedule": _COSINE,
            },
        },
        "a test RMSE of 0.58-0.62 against 0.77-0.81 for the seasonal-naive forecast on the "
        "benchmark's series (BENCHMARKS.md, LSTM forecasting)",
        ["dataset_id", "target"],
    ),
    *(
        Recipe(
            f"optimizers-{name}",
            f"The optimizer comparison: {name}",
            "One of six jobs that differ only in their optimizer (sgd, momentum, nesterov, "
            "adagrad, rmsprop, adam), as in the course's comparison: a 784-128-10 ReLU MLP, "
            "batch 64, 10 epochs, seed 0, validation every epoch. Start all six on one dataset "
            f"and compare their loss curves in the web app. Needs {_IMAGES} (or any "
            "classification dataset).",
            {
                "task": "classification",
                "model": {"kind": "mlp", "hidden_layers": [128], "activation": "relu"},
                "optimizer": optimizer,
                "training": {"epochs": 10, "batch_size": 64, "validation_split": 0.1, "seed": 0},
            },
            f"{_COMPARED[name]} on MNIST after 10 epochs (BENCHMARKS.md, the optimizer "
            "comparison): a comparison, not a target",
            ["dataset_id"],
        )
        for name, optimizer in _OPTIMIZERS.items()
    ),
]

RECIPES: dict[str, Recipe] = {recipe.name: recipe for recipe in _LIST}


def _merge(base: Any, override: Any) -> Any:
    """`override` on top of `base`: objects field by field, except that an object naming
    another `kind` (a model) or `name` (an optimizer, a schedule) replaces the base's whole."""
    if not isinstance(base, dict) or not isinstance(override, dict):
        return override
    for tag in ("kind", "name"):
        if tag in override and tag in base and override[tag] != base[tag]:
            return override
    merged = dict(base)
    for key, value in override.items():
        merged[key] = _merge(base[key], value) if key in base else value
    return merged


def expand_recipe(data: dict[str, Any]) -> dict[str, Any]:
    """A raw job spec naming a `recipe`: the recipe's spec with the job's fields on top."""
    name = data.get("recipe")
    if name is None:
        return data
    recipe = RECIPES.get(name) if isinstance(name, str) else None
    if recipe is None:
        known = ", ".join(RECIPES)
        raise ValueError(f"recipe: no recipe named {name!r}; the recipes are {known}")
    return _merge(recipe.spec, data)  # type: ignore[no-any-return]
