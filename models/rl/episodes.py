"""Playing a Q-function's greedy policy: what the API serves and what training evaluates.

`ObservationEncoder` turns raw observations into network inputs (and checks those sent to
`POST /predict`); `run_episodes` plays a policy on several environments in lockstep (one
batched forward pass per step) for evaluations and for `POST /models/{id}/rollout`;
`PolicyPredictor` is a trained Q-function as the API serves it. The DQN and the tabular
kinds share all of it, at training and at serving time; nothing here learns.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from models.base import InputError
from models.envs import GRID_WORLD, EnvError, EnvInfo, make_env
from models.export import ExportGraph, policy_graph
from models.kind import EnvironmentKind
from models.specs import DQNSpec, GridWorldOptions, TabularSpec

MAX_PARALLEL_EPISODES = 32  # environments an evaluation or rollout steps side by side
ROLLOUT_STEP_CAP = 100_000  # an episode of an environment without a time limit stops here


class ObservationEncoder:
    """Raw observations -> network inputs: vectors as float32, states as one-hot rows (DQN)
    or indices (Q-tables). Also checks predict inputs, naming what is wrong."""

    def __init__(self, discrete: bool, size: int, one_hot: bool) -> None:
        self.discrete, self.size, self.one_hot = discrete, size, one_hot

    @classmethod
    def for_env(cls, info: EnvInfo, *, tabular: bool) -> ObservationEncoder:
        return cls(info.discrete_observations, info.obs_size, not tabular)

    def to_json(self) -> dict[str, Any]:
        return {"type": "observation", "discrete": self.discrete, "size": self.size,
                "one_hot": self.one_hot}  # fmt: skip

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ObservationEncoder:
        return cls(bool(data["discrete"]), int(data["size"]), bool(data["one_hot"]))

    def batch(self, observations: Sequence[Any]) -> np.ndarray:
        """Observations straight from the environment (trusted)."""
        if not self.discrete:
            return np.asarray(observations, dtype=np.float32).reshape(len(observations), -1)
        states = np.asarray(observations, dtype=np.int64).reshape(-1)
        if not self.one_hot:
            return states
        encoded = np.zeros((len(states), self.size), dtype=np.float32)
        encoded[np.arange(len(states)), states] = 1.0
        return encoded

    def encode(self, inputs: list[Any]) -> np.ndarray:
        """Observations sent to `POST /predict`, checked first."""
        if self.discrete:
            states = []
            for i, item in enumerate(inputs):
                value = item[0] if isinstance(item, list) and len(item) == 1 else item
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise InputError(
                        f"inputs[{i}]: this environment's observation is a state number "
                        f"0..{self.size - 1}, got {item!r}"
                    )
                if not (math.isfinite(value) and value == int(value) and 0 <= value < self.size):
                    raise InputError(f"inputs[{i}]: state {value!r} is outside 0..{self.size - 1}")
                states.append(int(value))
            return self.batch(states)
        for i, item in enumerate(inputs):
            if not isinstance(item, list) or len(item) != self.size:
                got = f"{len(item)} values" if isinstance(item, list) else repr(item)
                raise InputError(
                    f"inputs[{i}]: an observation is a list of {self.size} numbers; got {got}"
                )
            for value in item:
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise InputError(f"inputs[{i}]: {value!r} is not a number")
                if not math.isfinite(value):
                    raise InputError(f"inputs[{i}]: {value!r} is not a finite number")
        return self.batch(inputs)


@dataclass
class Episodes:
    returns: list[float]
    lengths: list[int]
    paths: list[list[list[int]]] | None = None  # GridWorld: the [row, col] cells visited

    def summary(self) -> dict[str, float]:
        returns = np.asarray(self.returns, dtype=np.float64)
        return {
            "return_mean": float(returns.mean()),
            "return_std": float(returns.std()),
            "length_mean": float(np.mean(self.lengths)),
            "episodes": len(self.returns),
        }


Policy = Callable[[list[Any]], np.ndarray]  # raw observations -> actions


def run_episodes(
    policy: Policy,
    envs: Sequence[Any],
    episodes: int,
    seed: int,
    *,
    record_paths: bool = False,
) -> Episodes:
    """Play `episodes` episodes of `policy`, up to len(envs) at a time in lockstep; episode
    k is reset with seed `seed + k`, so the same seed replays the same episodes."""
    returns = [0.0] * episodes
    lengths = [0] * episodes
    paths: list[list[list[int]]] = [[] for _ in range(episodes)]
    slots: list[tuple[int, Any, Any]] = []  # (episode, env, observation) still running
    next_episode = 0

    def start(env: Any) -> None:
        nonlocal next_episode
        k = next_episode
        next_episode += 1
        obs, _ = env.reset(seed=seed + k)
        if record_paths:
            paths[k].append(list(env.unwrapped.cell(obs)))
        slots.append((k, env, obs))

    for env in envs[:episodes]:
        start(env)
    while slots:
        actions = policy([obs for _, _, obs in slots])
        running, slots = slots, []
        for (k, env, _), action in zip(running, actions, strict=True):
            obs, reward, terminated, truncated, _ = env.step(action)
            returns[k] += float(reward)
            lengths[k] += 1
            if record_paths:
                paths[k].append(list(env.unwrapped.cell(obs)))
            if terminated or truncated or lengths[k] >= ROLLOUT_STEP_CAP:
                if next_episode < episodes:
                    start(env)
            else:
                slots.append((k, env, obs))
    return Episodes(returns, lengths, paths if record_paths else None)


def greedy_policy(network: nn.Module, encoder: ObservationEncoder, device: torch.device) -> Policy:
    def act(observations: list[Any]) -> np.ndarray:
        x = torch.from_numpy(encoder.batch(observations)).to(device)
        with torch.inference_mode():
            return network(x).argmax(dim=-1).cpu().numpy()

    return act


def env_config(model: DQNSpec | TabularSpec) -> dict[str, Any]:
    options = model.env_options.model_dump(mode="json") if model.env_options else None
    return {"name": model.env, "options": options}


def make_envs(config: dict[str, Any], count: int) -> list[Any]:
    options = config.get("options")
    parsed = GridWorldOptions.model_validate(options) if options is not None else None
    return [make_env(str(config["name"]), parsed) for _ in range(count)]


@dataclass
class PolicyPredictor:
    """A trained Q-function: greedy actions and Q-values for observations, and rollouts."""

    network: nn.Module
    encoder: ObservationEncoder
    env: dict[str, Any]  # {"name", "options"}: rebuilds the environment for rollouts

    def predict(self, inputs: list[Any]) -> dict[str, Any]:
        return self.decode(self.forward(self.encode(inputs)))

    def encode(self, inputs: list[Any]) -> np.ndarray:
        return self.encoder.encode(inputs)

    def forward(self, x: np.ndarray) -> torch.Tensor:
        with torch.inference_mode():
            return self.network(torch.from_numpy(x))

    def decode(self, out: torch.Tensor) -> dict[str, Any]:
        actions = out.argmax(dim=-1).tolist()
        return {"predictions": actions, "actions": actions, "q_values": out.tolist()}

    def predict_files(self, contents: list[bytes]) -> dict[str, Any]:
        raise InputError("this model acts on observations; send them as JSON inputs")

    def rollout(self, episodes: int, seed: int) -> dict[str, Any]:
        try:
            envs = make_envs(self.env, min(episodes, MAX_PARALLEL_EPISODES))
        except EnvError as exc:
            raise InputError(str(exc)) from exc
        record = self.env["name"] == GRID_WORLD
        policy = greedy_policy(self.network, self.encoder, torch.device("cpu"))
        played = run_episodes(policy, envs, episodes, seed, record_paths=record)
        for env in envs:
            env.close()
        answer: dict[str, Any] = {"returns": played.returns, "lengths": played.lengths}
        if played.paths is not None:
            answer["paths"] = played.paths
        return answer


class PolicyKind(EnvironmentKind):
    """An RL kind whose trained network is served as a greedy policy."""

    def predictor(self, network: nn.Module, meta: dict[str, Any]) -> PolicyPredictor:
        encoder = ObservationEncoder.from_json(meta["preprocessing"])
        return PolicyPredictor(network, encoder, meta["env"])

    def export_graph(self, network: nn.Module, meta: dict[str, Any]) -> ExportGraph:
        """The observation encoding in front (state numbers one-hot, or indices into a
        Q-table), the greedy action behind."""
        encoder = ObservationEncoder.from_json(meta["preprocessing"])
        return policy_graph(
            network, meta, discrete=encoder.discrete, size=encoder.size, one_hot=encoder.one_hot
        )
