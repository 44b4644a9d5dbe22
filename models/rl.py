"""Reinforcement learning: DQN (Mnih et al. 2015) and tabular Q-learning / SARSA.

The pieces are small and separately tested: the replay buffer, the epsilon schedule, reward
clipping, the target-network update, the tabular update rules, and `run_episodes`, which
plays a greedy policy on several environments in lockstep (one batched forward pass per
step) for evaluations and for `POST /models/{id}/rollout`.

Progress is counted in environment steps. Every `eval_interval` steps the greedy policy is
evaluated and the evaluation becomes one entry of the job's history (its `epoch` is the
evaluation's number). A resumed job restores the networks, the optimizer and its step count;
its replay buffer starts empty and refills for `learning_starts` steps before learning again.
"""

from __future__ import annotations

import copy
import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.base import (
    Cancelled,
    DivergedError,
    EpochRecord,
    InputError,
    Reporter,
    TrainingError,
    TrainResult,
    resolve_device,
)
from models.checkpoint import restore_optimizer_state
from models.envs import GRID_WORLD, EnvError, EnvInfo, describe_env, make_env
from models.mlp import ACTIVATIONS
from models.optimizers import build_optimizer
from models.policy import CheckpointClock
from models.schedules import LRScheduler
from models.specs import DQNSpec, ExplorationSpec, GridWorldOptions, JobSpec, TabularSpec

DEFAULT_MAX_GRAD_NORM = 10.0  # DQN's gradient clipping unless training.clip_grad_norm is set
MAX_PARALLEL_EPISODES = 32  # environments an evaluation or rollout steps side by side
ROLLOUT_STEP_CAP = 100_000  # an episode of an environment without a time limit stops here
EVAL_SEED_OFFSET = 1_000_003  # evaluation episodes never replay the training episodes' seeds
FINAL_SEED_OFFSET = 2_000_003  # nor the evaluations that chose the best network


# --- the pieces --------------------------------------------------------------------------


def epsilon_at(schedule: ExplorationSpec, step: int, total_steps: int) -> float:
    """Linear from `start` to `end` over the first `fraction` of the run, then `end`."""
    span = schedule.fraction * total_steps
    if span <= 0 or step >= span:
        return schedule.end
    return schedule.start + (schedule.end - schedule.start) * step / span


def clip_rewards(rewards: np.ndarray, enabled: bool) -> np.ndarray:
    """DQN's reward clipping (Mnih et al. 2015): rewards limited to [-1, 1] when enabled, so
    one learning rate suits games whose scores differ in scale."""
    return np.clip(rewards, -1.0, 1.0) if enabled else rewards


@torch.no_grad()
def update_target(target: nn.Module, online: nn.Module, tau: float | None) -> None:
    """A hard copy (tau None or 1) or Polyak averaging target <- tau online + (1-tau) target."""
    if tau is None or tau >= 1:
        target.load_state_dict(online.state_dict())
        return
    for t, o in zip(target.parameters(), online.parameters(), strict=True):
        t.lerp_(o, tau)


class ReplayBuffer:
    """A ring buffer of transitions (obs, action, reward, next_obs, terminated) in
    preallocated arrays; once full, each new transition overwrites the oldest."""

    def __init__(self, capacity: int, obs_size: int) -> None:
        self.capacity = capacity
        self.obs = np.zeros((capacity, obs_size), dtype=np.float32)
        self.next_obs = np.zeros((capacity, obs_size), dtype=np.float32)
        self.actions = np.zeros(capacity, dtype=np.int64)
        self.rewards = np.zeros(capacity, dtype=np.float32)
        self.terminated = np.zeros(capacity, dtype=np.float32)
        self.position = 0  # where the next transition goes
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def add(
        self,
        obs: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        next_obs: np.ndarray,
        terminated: np.ndarray,
    ) -> None:
        """Append a batch of transitions (one per environment), wrapping around."""
        n = len(actions)
        idx = (self.position + np.arange(n)) % self.capacity
        self.obs[idx] = obs
        self.next_obs[idx] = next_obs
        self.actions[idx] = actions
        self.rewards[idx] = rewards
        self.terminated[idx] = terminated
        self.position = int((self.position + n) % self.capacity)
        self.size = min(self.size + n, self.capacity)

    def sample(
        self,
        batch_size: int,
        rng: np.random.Generator,
        device: torch.device,
        batches: int | None = None,
    ) -> tuple[torch.Tensor, ...]:
        """`batch_size` transitions drawn uniformly with replacement from those stored; with
        `batches`, that many independent batches stacked on a leading axis, drawn at once
        (one gather and one copy to the device for a whole training round)."""
        if self.size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        shape = (batch_size,) if batches is None else (batches, batch_size)
        idx = rng.integers(0, self.size, size=shape)
        arrays = (self.obs, self.actions, self.rewards, self.next_obs, self.terminated)
        return tuple(torch.from_numpy(a[idx]).to(device, non_blocking=True) for a in arrays)


def q_learning_update(
    q: np.ndarray, s: int, a: int, r: float, s2: int, terminated: bool, alpha: float, gamma: float
) -> float:
    """Q(s,a) += alpha (r + gamma max_a' Q(s',a') - Q(s,a)); no bootstrap past a terminal
    state. Returns the TD error."""
    target = r if terminated else r + gamma * float(q[s2].max())
    error = target - q[s, a]
    q[s, a] += alpha * error
    return float(error)


def sarsa_update(
    q: np.ndarray,
    s: int,
    a: int,
    r: float,
    s2: int,
    a2: int,
    terminated: bool,
    alpha: float,
    gamma: float,
) -> float:
    """Q(s,a) += alpha (r + gamma Q(s',a') - Q(s,a)) with a' the action actually taken next."""
    target = r if terminated else r + gamma * float(q[s2, a2])
    error = target - q[s, a]
    q[s, a] += alpha * error
    return float(error)


# --- networks ----------------------------------------------------------------------------


class QNetwork(nn.Module):
    """Observation vector -> one Q-value per action; optionally dueling (Wang et al. 2016):
    Q = V + A - mean(A)."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        sizes = [int(config["obs_size"]), *map(int, config["hidden_layers"])]
        layers: list[nn.Module] = []
        for fan_in, fan_out in itertools.pairwise(sizes):
            layers += [nn.Linear(fan_in, fan_out), ACTIVATIONS[config["activation"]]()]
        self.trunk = nn.Sequential(*layers)
        actions = int(config["num_actions"])
        self.dueling = bool(config["dueling"])
        self.head = nn.Linear(sizes[-1], actions)
        self.value = nn.Linear(sizes[-1], 1) if self.dueling else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.trunk(x)
        q = self.head(h)
        if self.value is not None:
            q = self.value(h) + q - q.mean(dim=-1, keepdim=True)
        return q


class QTable(nn.Module):
    """The tabular kinds' model: Q-values by state index."""

    q: torch.Tensor

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self.register_buffer(
            "q", torch.zeros(int(config["num_states"]), int(config["num_actions"]))
        )

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return self.q[states.long()]


def dqn_config(model: DQNSpec, info: EnvInfo) -> dict[str, Any]:
    """JSON that `build_dqn` turns into the Q-network of `model` on the environment `info`."""
    return {
        "obs_size": info.obs_size,
        "num_actions": info.num_actions,
        "hidden_layers": list(model.hidden_layers),
        "activation": model.activation,
        "dueling": model.dueling,
    }


def build_dqn(config: dict[str, Any]) -> nn.Module:
    return QNetwork(config)


def build_table(config: dict[str, Any]) -> nn.Module:
    return QTable(config)


# --- observations and episodes -----------------------------------------------------------


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


# --- the policy as a served model --------------------------------------------------------


@dataclass
class PolicyPredictor:
    """A trained Q-function: greedy actions and Q-values for observations, and rollouts."""

    network: nn.Module
    encoder: ObservationEncoder
    env: dict[str, Any]  # {"name", "options"}: rebuilds the environment for rollouts

    def predict(self, inputs: list[Any]) -> dict[str, Any]:
        x = torch.from_numpy(self.encoder.encode(inputs))
        with torch.inference_mode():
            q = self.network(x)
        actions = q.argmax(dim=-1).tolist()
        return {"predictions": actions, "actions": actions, "q_values": q.tolist()}

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


# --- training ----------------------------------------------------------------------------


@dataclass
class _Progress:
    """Counters that a checkpoint carries across a resume."""

    step: int = 0
    evaluations: int = 0
    episodes: int = 0
    best_return: float = -math.inf
    best_state: dict[str, torch.Tensor] | None = None
    recent_returns: list[float] = field(default_factory=list)  # since the last evaluation
    losses: list[torch.Tensor] = field(default_factory=list)  # since the last evaluation


class _Cadence:
    """Fires every `every` environment steps, counting `n` steps at a time."""

    def __init__(self, every: int, done: int = 0) -> None:
        self.every = every
        self.count = done % every

    def advance(self, n: int) -> int:
        """How many times it fires while `n` more steps pass."""
        self.count += n
        fired, self.count = divmod(self.count, self.every)
        return fired


class _Session:
    """What every RL trainer shares: evaluation rounds, history, checkpoints, cancel and
    the deadline."""

    def __init__(
        self,
        spec: JobSpec,
        reporter: Reporter,
        info: EnvInfo,
        encoder: ObservationEncoder,
        cancel_poll_seconds: float,
    ) -> None:
        model = spec.model
        assert isinstance(model, DQNSpec | TabularSpec)
        self.spec, self.model, self.reporter = spec, model, reporter
        self.info, self.encoder = info, encoder
        self.total = spec.training.total_steps
        self.interval = spec.resolved_eval_interval
        self.cancel_poll_seconds = cancel_poll_seconds
        self.deadline = reporter.deadline()
        self.last_poll = time.monotonic()
        parallel = min(spec.training.eval_episodes, MAX_PARALLEL_EPISODES)
        self.eval_envs = make_envs(env_config(model), parallel)
        self.progress = _Progress()
        training = spec.training
        self.checkpoints = CheckpointClock(training.checkpoint_every, training.checkpoint_seconds)
        self.interval_started = time.monotonic()
        self.interval_steps = 0
        self.saved_step: int | None = None  # the step of the latest checkpoint
        self.saving_inside = False

    def poll_cancel(self, save: Callable[[int, dict[str, Any]], None]) -> None:
        """After each step: stop once the deadline passes (a clock read, no I/O); ask the
        reporter about cancellation at most every `cancel_poll_seconds`. Cancelled or
        released, or once `checkpoint_seconds` have passed, it checkpoints the step it is at
        (numbered as the evaluation under way): a resume goes on from that step, with fresh
        episodes and an empty replay buffer, as after any checkpoint."""
        step = self.progress.step
        self.reporter.progress(self.interval_steps, self.interval, step)
        now = time.monotonic()
        if self.deadline is not None and self.deadline.passed(now) and step < self.total:
            raise self.deadline.exceeded(f"at step {step} of {self.total}")
        if self.checkpoints.overdue() and step < self.total:  # a long interval: save inside
            self.save_inside(save)
        if now - self.last_poll >= self.cancel_poll_seconds:
            self.last_poll = now
            try:
                if self.reporter.cancelled():
                    raise Cancelled()
            except Cancelled as stop:
                if stop.keeps_state and self.saved_step != step:
                    self.save_inside(save)
                raise

    def save_inside(self, save: Callable[[int, dict[str, Any]], None]) -> None:
        """A checkpoint at this step, numbered as the evaluation under way."""
        p = self.progress
        self.saving_inside = True  # progress_meta marks it: a resume redoes that evaluation
        try:
            save(p.evaluations + 1, {"step": p.step})
        finally:
            self.saving_inside = False
        self.checkpoints.saved()
        self.saved_step = p.step

    def epsilon(self) -> float:
        return epsilon_at(self.model.exploration, self.progress.step, self.total)

    def evaluate(self, network: nn.Module, device: torch.device, seed: int) -> Episodes:
        policy = greedy_policy(network, self.encoder, device)
        episodes = self.spec.training.eval_episodes
        return run_episodes(policy, self.eval_envs, episodes, seed)

    def evaluation_round(
        self,
        network: nn.Module,
        device: torch.device,
        save: Callable[[int, dict[str, Any]], None],
        extra: dict[str, Any],
    ) -> None:
        """Evaluate the greedy policy, record one history entry, keep the best network,
        checkpoint when due."""
        p = self.progress
        elapsed = max(time.monotonic() - self.interval_started, 1e-9)
        steps_per_second = self.interval_steps / elapsed
        p.evaluations += 1
        seed = self.spec.training.seed + EVAL_SEED_OFFSET + 1000 * p.evaluations
        network.eval()
        result = self.evaluate(network, device, seed).summary()
        network.train()
        loss = torch.stack(p.losses).mean().item() if p.losses else None
        if loss is not None and not math.isfinite(loss):
            raise DivergedError(
                f"the TD loss became {loss} by step {p.step}; lower the learning rate"
            )
        if result["return_mean"] >= p.best_return:
            p.best_return = result["return_mean"]
            p.best_state = {k: v.detach().clone() for k, v in network.state_dict().items()}
        metrics = {
            "step": p.step,
            "eval_return_mean": result["return_mean"],
            "eval_return_std": result["return_std"],
            "eval_length_mean": result["length_mean"],
            "train_return_mean": float(np.mean(p.recent_returns)) if p.recent_returns else None,
            "train_episodes": p.episodes,
            "epsilon": self.epsilon(),
            "steps_per_second": steps_per_second,
            **extra,
        }
        self.reporter.epoch_end(EpochRecord(p.evaluations, loss, None, metrics, elapsed))
        p.recent_returns, p.losses = [], []
        if self.checkpoints.due(p.evaluations) or p.step >= self.total:
            save(p.evaluations, metrics)
            self.checkpoints.saved()
            self.saved_step = p.step
        self.interval_started = time.monotonic()
        self.interval_steps = 0

    def progress_meta(self) -> dict[str, Any]:
        p = self.progress
        best = None if math.isinf(p.best_return) else p.best_return
        return {"step": p.step, "evaluations": p.evaluations, "episodes": p.episodes,
                "best_return": best, "partial": self.saving_inside}  # fmt: skip

    def restore_progress(self, meta: dict[str, Any]) -> None:
        p = self.progress
        p.step, p.evaluations = int(meta["step"]), int(meta["evaluations"])
        p.episodes = int(meta.get("episodes", 0))
        best = meta.get("best_return")
        p.best_return = -math.inf if best is None else float(best)

    def final_metrics(self, network: nn.Module, device: torch.device) -> dict[str, Any]:
        """A fresh greedy evaluation of the returned network, on seeds that chose nothing."""
        network.eval()
        seed = self.spec.training.seed + FINAL_SEED_OFFSET
        evaluation = self.evaluate(network, device, seed).summary()
        p = self.progress
        best = None if math.isinf(p.best_return) else p.best_return
        return {
            "evaluation": evaluation,
            "train": {"steps": p.step, "episodes": p.episodes, "best_eval_return": best},
        }

    def close(self) -> None:
        for env in self.eval_envs:
            env.close()


def _learn(
    online: nn.Module,
    target: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: tuple[torch.Tensor, ...],
    model: DQNSpec,
    max_norm: float,
) -> torch.Tensor:
    obs, actions, rewards, next_obs, terminated = batch
    q = online(obs).gather(1, actions.unsqueeze(1)).squeeze(1)
    with torch.no_grad():
        if model.double_dqn:
            best = online(next_obs).argmax(dim=1, keepdim=True)
            next_q = target(next_obs).gather(1, best).squeeze(1)
        else:
            next_q = target(next_obs).max(dim=1).values
        td_target = rewards + model.gamma * (1.0 - terminated) * next_q
    loss = F.smooth_l1_loss(q, td_target) if model.loss == "huber" else F.mse_loss(q, td_target)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    nn.utils.clip_grad_norm_(online.parameters(), max_norm)
    optimizer.step()
    return loss.detach()


def _open_envs(
    model: DQNSpec | TabularSpec, count: int, *, tabular: bool
) -> tuple[list[Any], EnvInfo]:
    try:
        envs = make_envs(env_config(model), count)
        info = describe_env(envs[0], model.env)
    except EnvError as exc:
        raise TrainingError(str(exc)) from exc
    if tabular and not info.discrete_observations:
        raise TrainingError(f"{model.env!r} has vector observations: a Q-table needs states")
    return envs, info


class _Collector:
    """Steps the training environments with the chosen actions and keeps their current
    (encoded) observations; finished episodes are reset and their returns recorded."""

    def __init__(
        self,
        envs: list[Any],
        encoder: ObservationEncoder,
        seed: int,
        rng: np.random.Generator,
        progress: _Progress,
    ) -> None:
        self.envs, self.encoder, self.progress = envs, encoder, progress
        first = [env.reset(seed=seed + i)[0] for i, env in enumerate(envs)]
        for env in envs:
            env.action_space.seed(int(rng.integers(2**31)))
        self.obs = encoder.batch(first)
        self.returns = np.zeros(len(envs))

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(next observations, rewards, terminated) of one step of every environment. A
        time-limit cut (truncated) is not an end: its next state still bootstraps."""
        n = len(self.envs)
        rewards = np.zeros(n, dtype=np.float32)
        terminated = np.zeros(n, dtype=np.float32)
        raw, resets = [], []
        for i, env in enumerate(self.envs):
            ob, reward, term, trunc, _ = env.step(actions[i])
            raw.append(ob)
            rewards[i], terminated[i] = reward, term
            self.returns[i] += reward
            if term or trunc:
                self.progress.recent_returns.append(float(self.returns[i]))
                self.progress.episodes += 1
                self.returns[i] = 0.0
                resets.append((i, env.reset()[0]))
        next_obs = self.encoder.batch(raw)
        self.obs = next_obs
        if resets:
            self.obs = next_obs.copy()
            self.obs[[i for i, _ in resets]] = self.encoder.batch([ob for _, ob in resets])
        return next_obs, rewards, terminated


def train_dqn(
    spec: JobSpec, data: object, reporter: Reporter, *, cancel_poll_seconds: float = 1.0
) -> TrainResult:
    model = spec.model
    assert isinstance(model, DQNSpec)
    training = spec.training
    device = resolve_device(training.device)
    torch.manual_seed(training.seed)
    rng = np.random.default_rng(training.seed)
    envs, info = _open_envs(model, model.num_envs, tabular=False)
    encoder = ObservationEncoder.for_env(info, tabular=False)
    config = dqn_config(model, info)
    online = QNetwork(config).to(device)
    target = copy.deepcopy(online)
    optimizer = build_optimizer(spec.optimizer, online.parameters())
    evaluations_planned = math.ceil(training.total_steps / spec.resolved_eval_interval)
    scheduler = LRScheduler(optimizer, training.lr_schedule, evaluations_planned)
    max_norm = training.clip_grad_norm or DEFAULT_MAX_GRAD_NORM
    session = _Session(spec, reporter, info, encoder, cancel_poll_seconds)
    p = session.progress

    resumed = reporter.resume()
    if resumed is not None:
        state = resumed.model_state
        online.load_state_dict(_prefixed(state, "online.", device))
        target.load_state_dict(_prefixed(state, "target.", device))
        p.best_state = _prefixed(state, "best.", device) or None
        if resumed.optimizer_tensors or resumed.meta.get("optimizer"):
            restore_optimizer_state(optimizer, resumed.optimizer_tensors, resumed.meta)
        session.restore_progress(resumed.meta)
        rng = np.random.default_rng([training.seed, p.step])  # fresh, but reproducible

    def save(evaluation: int, metrics: dict[str, Any]) -> None:
        tensors = {f"online.{k}": v for k, v in online.state_dict().items()}
        tensors |= {f"target.{k}": v for k, v in target.state_dict().items()}
        if p.best_state is not None:
            tensors |= {f"best.{k}": v for k, v in p.best_state.items()}
        meta = {**session.progress_meta(), "epoch": evaluation, "metrics": metrics}
        reporter.checkpoint(evaluation, tensors, optimizer, meta)

    buffer = ReplayBuffer(min(model.buffer_size, max(training.total_steps, 1)), info.obs_size)
    collector = _Collector(envs, encoder, training.seed + p.step, rng, p)
    n = len(envs)
    train_cadence = _Cadence(model.train_freq, p.step)
    target_cadence = _Cadence(model.target_update_interval, p.step)
    eval_cadence = _Cadence(session.interval, p.step)
    try:
        while p.step < training.total_steps:
            explore = rng.random(n) < session.epsilon()
            actions = rng.integers(info.num_actions, size=n)
            if not explore.all():
                with torch.inference_mode():
                    q = online(torch.from_numpy(collector.obs).to(device))
                actions = np.where(explore, actions, q.argmax(dim=1).cpu().numpy())
            obs = collector.obs
            next_obs, rewards, terminated = collector.step(actions)
            buffer.add(obs, actions, clip_rewards(rewards, model.reward_clipping), next_obs,
                       terminated)  # fmt: skip
            p.step += n
            session.interval_steps += n
            rounds = train_cadence.advance(n)
            if rounds and len(buffer) >= max(model.learning_starts, 1):
                scheduler.update(p.evaluations + 1, eval_cadence.count, session.interval)
                steps = rounds * model.gradient_steps
                batches = buffer.sample(model.batch_size, rng, device, batches=steps)
                for k in range(steps):
                    batch = tuple(field[k] for field in batches)
                    p.losses.append(_learn(online, target, optimizer, batch, model, max_norm))
            if target_cadence.advance(n):
                update_target(target, online, model.tau)
            if eval_cadence.advance(n) or p.step >= training.total_steps:
                extra = {"lr": scheduler.lr} if training.lr_schedule is not None else {}
                session.evaluation_round(online, device, save, extra)
            session.poll_cancel(save)
        final = online
        if model.keep_best and p.best_state is not None:
            final = QNetwork(config).to(device)
            final.load_state_dict(p.best_state)
        metrics = session.final_metrics(final, device)
    finally:
        session.close()
        for env in envs:
            env.close()
    return TrainResult(
        network=final.cpu(),
        config=config,
        metrics=metrics,
        epochs_run=p.evaluations,
        interface=_interface(model, info, encoder),
    )


def _prefixed(
    state: dict[str, torch.Tensor], prefix: str, device: torch.device
) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v.to(device) for k, v in state.items() if k.startswith(prefix)}


def _interface(
    model: DQNSpec | TabularSpec, info: EnvInfo, encoder: ObservationEncoder
) -> dict[str, Any]:
    """What the model bundle records for predict and rollouts."""
    return {
        "task": "reinforcement",
        "preprocessing": encoder.to_json(),
        "input_schema": info.input_schema(),
        "output": info.output(),
        "env": env_config(model),
    }


def train_tabular(
    spec: JobSpec, data: object, reporter: Reporter, *, cancel_poll_seconds: float = 1.0
) -> TrainResult:
    """Q-learning or SARSA with an epsilon-greedy behaviour policy, one update per step."""
    model = spec.model
    assert isinstance(model, TabularSpec)
    training = spec.training
    rng = np.random.default_rng(training.seed)
    (env,), info = _open_envs(model, 1, tabular=True)
    encoder = ObservationEncoder.for_env(info, tabular=True)
    config = {"num_states": info.obs_size, "num_actions": info.num_actions}
    q = np.full((info.obs_size, info.num_actions), model.initial_q, dtype=np.float64)
    session = _Session(spec, reporter, info, encoder, cancel_poll_seconds)
    p = session.progress
    table = QTable(config)

    def sync() -> QTable:
        table.q.copy_(torch.from_numpy(q))
        return table

    resumed = reporter.resume()
    if resumed is not None:
        q[:] = resumed.model_state["table.q"].double().numpy()
        session.restore_progress(resumed.meta)
        rng = np.random.default_rng([training.seed, p.step])

    def save(evaluation: int, metrics: dict[str, Any]) -> None:
        tensors = {"table.q": torch.from_numpy(q.copy())}  # float64, exactly as learned
        meta = {**session.progress_meta(), "epoch": evaluation, "metrics": metrics}
        reporter.checkpoint(evaluation, tensors, None, meta)

    def choose(state: int, epsilon: float) -> int:
        if rng.random() < epsilon:
            return int(rng.integers(info.num_actions))
        row = q[state]
        return int(rng.choice(np.flatnonzero(row == row.max())))  # ties broken at random

    eval_cadence = _Cadence(session.interval, p.step)
    state = int(env.reset(seed=training.seed + p.step)[0])
    action = choose(state, session.epsilon())
    episode_return, errors = 0.0, []
    try:
        while p.step < training.total_steps:
            next_state, reward, terminated, truncated, _ = env.step(action)
            next_state = int(next_state)
            episode_return += float(reward)
            p.step += 1
            session.interval_steps += 1
            epsilon = session.epsilon()
            if model.kind == "sarsa":
                next_action = choose(next_state, epsilon)
                error = sarsa_update(q, state, action, float(reward), next_state, next_action,
                                     terminated, model.alpha, model.gamma)  # fmt: skip
            else:
                error = q_learning_update(q, state, action, float(reward), next_state,
                                          terminated, model.alpha, model.gamma)  # fmt: skip
                next_action = choose(next_state, epsilon)
            errors.append(error * error)
            if terminated or truncated:
                p.recent_returns.append(episode_return)
                p.episodes += 1
                episode_return = 0.0
                next_state = int(env.reset()[0])
                next_action = choose(next_state, epsilon)
            state, action = next_state, next_action
            if eval_cadence.advance(1) or p.step >= training.total_steps:
                p.losses = [torch.tensor(float(np.mean(errors)))] if errors else []
                errors = []
                session.evaluation_round(sync(), torch.device("cpu"), save, {})
            session.poll_cancel(save)
        final = QTable(config)
        final.load_state_dict({"q": sync().q.clone()})  # the learned table, not a snapshot
        metrics = session.final_metrics(final, torch.device("cpu"))
    finally:
        session.close()
        env.close()
    return TrainResult(
        network=final,
        config=config,
        metrics=metrics,
        epochs_run=p.evaluations,
        interface=_interface(model, info, encoder),
    )
