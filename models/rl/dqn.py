"""DQN (Mnih et al. 2015), readable top to bottom: reward clipping, the target-network
update, the replay buffer, the Q-network (optionally dueling, Wang et al. 2016), the learning
step (optionally double DQN), the collector that steps the training environments, and
`train_dqn`. Evaluation rounds, history, checkpoints and cancellation go through
`common.Session`, as for the tabular kinds.

A resumed job restores the networks, the optimizer and its step count; its replay buffer
starts empty and refills for `learning_starts` steps before learning again.
"""

from __future__ import annotations

import copy
import itertools
import math
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.base import PreparedData, Reporter, TrainResult, resolve_device
from models.blocks import ACTIVATIONS
from models.checkpoint import prefixed, restore_optimizer_state
from models.distillation import Teacher
from models.envs import EnvInfo, check_env
from models.kind import Sizing
from models.optimizers import build_optimizer
from models.rl.common import Cadence, Progress, Session, interface, open_envs
from models.rl.episodes import ObservationEncoder, PolicyKind
from models.schedules import LRScheduler
from models.specs import DQNSpec, JobSpec

DEFAULT_MAX_GRAD_NORM = 10.0  # DQN's gradient clipping unless training.clip_grad_norm is set


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


class _Collector:
    """Steps the training environments with the chosen actions and keeps their current
    (encoded) observations; finished episodes are reset and their returns recorded."""

    def __init__(
        self,
        envs: list[Any],
        encoder: ObservationEncoder,
        seed: int,
        rng: np.random.Generator,
        progress: Progress,
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
    envs, info = open_envs(model, model.num_envs, tabular=False)
    encoder = ObservationEncoder.for_env(info, tabular=False)
    config = dqn_config(model, info)
    online = QNetwork(config).to(device)
    target = copy.deepcopy(online)
    optimizer = build_optimizer(spec.optimizer, online.parameters())
    evaluations_planned = math.ceil(training.total_steps / spec.resolved_eval_interval)
    scheduler = LRScheduler(optimizer, training.lr_schedule, evaluations_planned)
    max_norm = training.clip_grad_norm or DEFAULT_MAX_GRAD_NORM
    session = Session(spec, reporter, info, encoder, cancel_poll_seconds)
    p = session.progress

    resumed = reporter.resume()
    if resumed is not None:
        state = resumed.model_state
        online.load_state_dict(prefixed(state, "online.", device))
        target.load_state_dict(prefixed(state, "target.", device))
        p.best_state = prefixed(state, "best.", device) or None
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
    train_cadence = Cadence(model.train_freq, p.step)
    target_cadence = Cadence(model.target_update_interval, p.step)
    eval_cadence = Cadence(session.interval, p.step)
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
        interface=interface(model, info, encoder),
    )


class DQN(PolicyKind):
    name = "dqn"
    spec = DQNSpec
    example: ClassVar[dict[str, Any]] = {"kind": "dqn", "env": "CartPole-v1", "hidden_layers": [16]}

    def environment(self, spec: JobSpec) -> EnvInfo:
        assert isinstance(spec.model, DQNSpec)
        return check_env(spec.model.env, spec.model.env_options, tabular=False)

    def config(self, spec: JobSpec, shape: Sizing) -> dict[str, Any]:
        assert isinstance(spec.model, DQNSpec) and isinstance(shape, EnvInfo)
        return dqn_config(spec.model, shape)

    def build(self, config: dict[str, Any]) -> nn.Module:
        return build_dqn(config)

    def train(
        self,
        spec: JobSpec,
        data: PreparedData | None,
        reporter: Reporter,
        *,
        teacher: Teacher | None = None,
        cancel_poll_seconds: float = 1.0,
    ) -> TrainResult:
        return train_dqn(spec, data, reporter, cancel_poll_seconds=cancel_poll_seconds)


KIND = DQN()
