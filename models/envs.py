"""Environments for reinforcement learning: the course's grid world, and any registered
gymnasium environment with a discrete action space and a vector (or discrete) observation.

Only registered ids are accepted: gymnasium's `make("module:Env")` form imports a module
named by the caller, which a service must never do for a user.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from models.specs import GridWorldOptions

GRID_WORLD = "GridWorld"
# up, right, down, left as (row, column) steps
MOVES = ((-1, 0), (0, 1), (1, 0), (0, -1))
ACTION_NAMES = ["up", "right", "down", "left"]


class EnvError(ValueError):
    """An environment the job cannot use; the message says why."""


class GridWorld(gym.Env[np.int64, np.int64]):
    """A grid of cells; the observation is the agent's cell index (row * cols + col).

    A move into a wall (`#`) or off the grid leaves the agent where it is. The reward is
    that of the cell the agent is in after the move: `goal_reward` for `G` (which ends the
    episode), `penalty_reward` for `X`, `step_reward` for any other cell. With probability
    `slip` the move goes in a uniformly random direction instead of the chosen one.
    """

    metadata = {"render_modes": []}  # noqa: RUF012 - gymnasium's own class attribute

    def __init__(self, options: GridWorldOptions | None = None) -> None:
        self.options = options or GridWorldOptions()
        self.layout = self.options.resolved_layout()
        self.rows, self.cols = len(self.layout), len(self.layout[0])
        self.observation_space = spaces.Discrete(self.rows * self.cols)
        self.action_space = spaces.Discrete(len(MOVES))
        cells = "".join(self.layout)
        self.start = cells.index("S")
        self.rewards = np.array(
            [self._reward_of(cell) for cell in cells], dtype=np.float64
        )  # reward for being in each cell after a move
        self.terminal = np.array([cell == "G" for cell in cells])
        self.state = self.start
        self.steps = 0

    def _reward_of(self, cell: str) -> float:
        if cell == "G":
            return self.options.goal_reward
        if cell == "X":
            return self.options.penalty_reward
        return self.options.step_reward

    def cell(self, state: int) -> tuple[int, int]:
        return divmod(int(state), self.cols)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.int64, dict[str, Any]]:
        super().reset(seed=seed)
        self.state, self.steps = self.start, 0
        return np.int64(self.state), {}

    def step(self, action: np.int64) -> tuple[np.int64, float, bool, bool, dict[str, Any]]:
        move = int(action)
        if not 0 <= move < len(MOVES):
            raise ValueError(f"GridWorld actions are 0-3 ({', '.join(ACTION_NAMES)}), not {move}")
        if self.options.slip > 0 and self.np_random.random() < self.options.slip:
            move = int(self.np_random.integers(len(MOVES)))
        row, col = self.cell(self.state)
        dr, dc = MOVES[move]
        r, c = row + dr, col + dc
        if 0 <= r < self.rows and 0 <= c < self.cols and self.layout[r][c] != "#":
            self.state = r * self.cols + c
        self.steps += 1
        terminated = bool(self.terminal[self.state])
        truncated = not terminated and self.steps >= self.options.max_steps
        return np.int64(self.state), float(self.rewards[self.state]), terminated, truncated, {}


@dataclass(frozen=True)
class EnvInfo:
    """What a Q-function needs to know about an environment's spaces."""

    name: str
    discrete_observations: bool  # True: observations are state indices in [0, obs_size)
    obs_size: int  # length of the observation vector, or the number of states
    num_actions: int
    max_episode_steps: int | None

    def input_schema(self) -> dict[str, Any]:
        if self.discrete_observations:
            return {"observation": {"type": "discrete", "n": self.obs_size}}
        return {"observation": {"type": "vector", "shape": [self.obs_size]}}

    def output(self) -> dict[str, Any]:
        out: dict[str, Any] = {"num_actions": self.num_actions}
        if self.name == GRID_WORLD:
            out["action_names"] = ACTION_NAMES
        return out


def make_env(name: str, options: GridWorldOptions | None = None) -> gym.Env[Any, Any]:
    """A fresh environment; EnvError when the id is unknown or it cannot be created."""
    if name == GRID_WORLD:
        return GridWorld(options)
    if options is not None:
        raise EnvError("env_options apply to the built-in GridWorld only")
    if ":" in name or name not in gym.registry:
        raise EnvError(
            f"unknown environment {name!r}: use GridWorld or a registered gymnasium id such as "
            "CartPole-v1, Acrobot-v1, MountainCar-v0"
        )
    try:
        return gym.make(name)
    except Exception as exc:  # missing extras (box2d, mujoco, ...) or a broken entry point
        raise EnvError(f"environment {name!r} cannot be created here: {exc}") from None


def describe_env(env: gym.Env[Any, Any], name: str) -> EnvInfo:
    """The spaces of `env`, or EnvError when a Q-function cannot act in it."""
    action = env.action_space
    if not isinstance(action, spaces.Discrete):
        kind = "continuous (Box)" if isinstance(action, spaces.Box) else type(action).__name__
        raise EnvError(
            f"environment {name!r} has a {kind} action space; Q-learning needs a discrete one"
        )
    observation = env.observation_space
    max_steps = env.spec.max_episode_steps if env.spec is not None else None
    if name == GRID_WORLD:
        assert isinstance(env, GridWorld)
        max_steps = env.options.max_steps
    if isinstance(observation, spaces.Discrete):
        return EnvInfo(name, True, int(observation.n), int(action.n), max_steps)
    if isinstance(observation, spaces.Box) and len(observation.shape) == 1:
        return EnvInfo(name, False, int(observation.shape[0]), int(action.n), max_steps)
    raise EnvError(
        f"environment {name!r} observes {observation}; only vector (1-D Box) and discrete "
        "observations are supported"
    )


def check_env(name: str, options: GridWorldOptions | None, *, tabular: bool) -> EnvInfo:
    """Create the environment once to check that a job can use it (at `POST /jobs`)."""
    env = make_env(name, options)
    try:
        info = describe_env(env, name)
    finally:
        env.close()
    if tabular and not info.discrete_observations:
        raise EnvError(
            f"tabular Q-learning and SARSA need discrete observations (states); {name!r} "
            f"observes a vector of {info.obs_size} numbers: use kind dqn"
        )
    return info
