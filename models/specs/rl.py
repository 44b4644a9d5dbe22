"""Specs of the reinforcement-learning kinds (dqn, q_learning, sarsa): the environment, the
built-in grid world and epsilon-greedy exploration."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from models.specs.base import (
    MAX_LAYER_WIDTH,
    MAX_LAYERS,
    Activation,
    StrictModel,
    _finite,
    _no_control_chars,
)
from models.specs.training import MAX_TOTAL_STEPS

MAX_REPLAY_BUFFER = 2_000_000
GRID_CELLS = "SG.X#"


class GridWorldOptions(StrictModel):
    """The built-in grid world. With no options it is the course's example: a 2x3 grid, start
    top left, -20 for entering the cell to its right, -1 for any other ordinary cell, +10 for
    the bottom-right cell, which ends the episode."""

    layout: list[Annotated[str, Field(min_length=1, max_length=64)]] | None = Field(
        None,
        min_length=1,
        max_length=64,
        description="Rows of cells: `S` start (one), `G` goal (ends the episode), `X` penalty, "
        "`#` wall (cannot be entered), `.` ordinary. Default: the course's `SX.` / `..G`.",
    )
    rows: int | None = Field(
        None,
        ge=1,
        le=64,
        description="Instead of `layout`: an empty grid, S top left, G bottom right.",
    )
    cols: int | None = Field(None, ge=1, le=64, description="Columns, with `rows`.")
    step_reward: float = Field(-1.0, ge=-1e6, le=1e6, description="Entering an ordinary cell.")
    penalty_reward: float = Field(-20.0, ge=-1e6, le=1e6, description="Entering an `X` cell.")
    goal_reward: float = Field(10.0, ge=-1e6, le=1e6, description="Entering a `G` cell.")
    slip: float = Field(
        0.0, ge=0, le=1, description="Chance that a move goes in a random direction instead."
    )
    max_steps: int = Field(100, ge=1, le=100_000, description="Steps before an episode is cut.")

    @model_validator(mode="after")
    def _valid_grid(self) -> GridWorldOptions:
        for name in ("step_reward", "penalty_reward", "goal_reward", "slip"):
            _finite(getattr(self, name), name)
        if self.layout is not None and (self.rows is not None or self.cols is not None):
            raise ValueError("give either layout or rows and cols, not both")
        if (self.rows is None) != (self.cols is None):
            raise ValueError("rows and cols go together")
        if self.rows is not None and self.cols is not None and self.rows * self.cols < 2:
            raise ValueError("a grid needs at least 2 cells")
        if self.layout is not None:
            width = len(self.layout[0])
            if any(len(row) != width for row in self.layout):
                raise ValueError("layout rows must all have the same length")
            cells = "".join(self.layout)
            unknown = sorted(set(cells) - set(GRID_CELLS))
            if unknown:
                raise ValueError(f"layout has unknown cells {unknown}; use S, G, X, # and .")
            if cells.count("S") != 1 or "G" not in cells:
                raise ValueError("layout needs exactly one S and at least one G")
        return self

    def resolved_layout(self) -> list[str]:
        if self.layout is not None:
            return list(self.layout)
        if self.rows is not None and self.cols is not None:
            grid = [["."] * self.cols for _ in range(self.rows)]
            grid[0][0], grid[-1][-1] = "S", "G"
            return ["".join(row) for row in grid]
        return ["SX.", "..G"]


class ExplorationSpec(StrictModel):
    """Epsilon-greedy exploration: epsilon falls linearly from `start` to `end` over the first
    `fraction` of training.total_steps, then stays at `end`."""

    start: float = Field(1.0, ge=0, le=1)
    end: float = Field(0.05, ge=0, le=1)
    fraction: float = Field(0.1, ge=0, le=1)

    @model_validator(mode="after")
    def _finite_values(self) -> ExplorationSpec:
        for name in ("start", "end", "fraction"):
            _finite(getattr(self, name), name)
        return self


class _EnvironmentSpec(StrictModel):
    env: Annotated[str, Field(min_length=1, max_length=128), AfterValidator(_no_control_chars)] = (
        Field(
            "GridWorld",
            description="A registered gymnasium environment id (e.g. `CartPole-v1`, "
            "`Acrobot-v1`, `MountainCar-v0`) or the built-in `GridWorld`.",
        )
    )
    env_options: GridWorldOptions | None = Field(
        None, description="GridWorld only: its layout, rewards, slip and episode length."
    )
    gamma: float = Field(0.99, ge=0, le=1, description="Discount factor.")
    exploration: ExplorationSpec = Field(default_factory=ExplorationSpec)

    @model_validator(mode="after")
    def _env_options_for_grid(self) -> _EnvironmentSpec:
        _finite(self.gamma, "gamma")
        if self.env_options is not None and self.env != "GridWorld":
            raise ValueError("env_options apply to the built-in GridWorld only")
        if ":" in self.env:
            raise ValueError("env must be a registered environment id, not a module path")
        return self


class DQNSpec(_EnvironmentSpec):
    """Deep Q-network (Mnih et al. 2015): experience replay, a target network, optional
    reward clipping; Double DQN and a dueling head as options."""

    kind: Literal["dqn"]
    env: Annotated[str, Field(min_length=1, max_length=128), AfterValidator(_no_control_chars)] = (
        Field("CartPole-v1", description=_EnvironmentSpec.model_fields["env"].description)
    )
    hidden_layers: list[Annotated[int, Field(ge=1, le=MAX_LAYER_WIDTH)]] = Field(
        default_factory=lambda: [256, 256],
        max_length=MAX_LAYERS,
        description="Hidden widths of the Q-network.",
    )
    activation: Activation = "relu"
    dueling: bool = Field(False, description="Separate value and advantage streams.")
    double_dqn: bool = Field(
        True,
        description="Pick the next action with the online network, value it with the "
        "target network (van Hasselt et al. 2016).",
    )
    buffer_size: int = Field(
        100_000, ge=1, le=MAX_REPLAY_BUFFER, description="Replay buffer capacity (transitions)."
    )
    learning_starts: int = Field(
        1_000, ge=0, le=MAX_TOTAL_STEPS, description="Transitions collected before learning."
    )
    batch_size: int = Field(64, ge=1, le=65_536, description="Transitions per gradient step.")
    train_freq: int = Field(
        4, ge=1, le=100_000, description="Environment steps between training rounds."
    )
    gradient_steps: int = Field(1, ge=1, le=10_000, description="Gradient steps per round.")
    target_update_interval: int = Field(
        1_000,
        ge=1,
        le=MAX_TOTAL_STEPS,
        description="Environment steps between target-network updates (a copy, or a soft "
        "update with `tau`).",
    )
    tau: float | None = Field(
        None, gt=0, le=1, description="Soft update target <- tau online + (1 - tau) target."
    )
    reward_clipping: bool = Field(False, description="Clip rewards to [-1, 1] for learning.")
    loss: Literal["huber", "mse"] = Field("huber", description="TD-error loss.")
    num_envs: int = Field(1, ge=1, le=256, description="Environments stepped side by side.")
    keep_best: bool = Field(
        True, description="The model is the network of the best evaluation, not the last one."
    )

    @model_validator(mode="after")
    def _finite_tau(self) -> DQNSpec:
        if self.tau is not None:
            _finite(self.tau, "tau")
        return self


class TabularSpec(_EnvironmentSpec):
    """Tabular Q-learning (off-policy) or SARSA (on-policy) on an environment with discrete
    observations; the learned Q-table is the model."""

    kind: Literal["q_learning", "sarsa"]
    alpha: float = Field(0.1, gt=0, le=1, description="Step size of the tabular update.")
    initial_q: float = Field(0.0, ge=-1e6, le=1e6, description="Starting value of every entry.")

    @model_validator(mode="after")
    def _finite_values(self) -> TabularSpec:
        _finite(self.alpha, "alpha")
        _finite(self.initial_q, "initial_q")
        return self


RL_KINDS = ("dqn", "q_learning", "sarsa")
