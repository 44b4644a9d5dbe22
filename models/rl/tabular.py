"""Tabular Q-learning and SARSA: the Q-table, the two update rules, and `train_tabular`, one
update per environment step under an epsilon-greedy behaviour policy. The table learns as a
float64 NumPy array; `QTable` is its torch form, which the bundle saves and `PolicyPredictor`
serves. Evaluation rounds, history, checkpoints and cancellation go through
`common.Session`, as for DQN.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from models.base import PreparedData, Reporter, TrainResult
from models.distillation import Teacher
from models.envs import EnvInfo, check_env
from models.kind import Sizing
from models.rl.common import Cadence, Session, interface, open_envs
from models.rl.episodes import ObservationEncoder, PolicyKind
from models.specs import JobSpec, TabularSpec


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


def build_table(config: dict[str, Any]) -> nn.Module:
    return QTable(config)


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


def train_tabular(
    spec: JobSpec, data: object, reporter: Reporter, *, cancel_poll_seconds: float = 1.0
) -> TrainResult:
    """Q-learning or SARSA with an epsilon-greedy behaviour policy, one update per step."""
    model = spec.model
    assert isinstance(model, TabularSpec)
    training = spec.training
    rng = np.random.default_rng(training.seed)
    (env,), info = open_envs(model, 1, tabular=True)
    encoder = ObservationEncoder.for_env(info, tabular=True)
    config = {"num_states": info.obs_size, "num_actions": info.num_actions}
    q = np.full((info.obs_size, info.num_actions), model.initial_q, dtype=np.float64)
    session = Session(spec, reporter, info, encoder, cancel_poll_seconds)
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

    eval_cadence = Cadence(session.interval, p.step)
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
        interface=interface(model, info, encoder),
    )


class QLearning(PolicyKind):
    """Tabular Q-learning (off-policy: it learns the greedy policy while exploring)."""

    name = "q_learning"
    spec = TabularSpec
    example: ClassVar[dict[str, Any]] = {"kind": "q_learning", "env": "GridWorld"}

    def environment(self, spec: JobSpec) -> EnvInfo:
        assert isinstance(spec.model, TabularSpec)
        return check_env(spec.model.env, spec.model.env_options, tabular=True)

    def config(self, spec: JobSpec, shape: Sizing) -> dict[str, Any]:
        assert isinstance(shape, EnvInfo)
        return {"num_states": shape.obs_size, "num_actions": shape.num_actions}

    def build(self, config: dict[str, Any]) -> nn.Module:
        return build_table(config)

    def parameter_count(self, spec: JobSpec, shape: Sizing) -> int:
        return 0  # a Q-table is learned without gradients

    def example_input(self, meta: dict[str, Any]) -> torch.Tensor:
        return torch.zeros(2, dtype=torch.int64)  # state numbers

    def train(
        self,
        spec: JobSpec,
        data: PreparedData | None,
        reporter: Reporter,
        *,
        teacher: Teacher | None = None,
        cancel_poll_seconds: float = 1.0,
    ) -> TrainResult:
        return train_tabular(spec, data, reporter, cancel_poll_seconds=cancel_poll_seconds)


class Sarsa(QLearning):
    """Tabular SARSA (on-policy: it learns the value of the exploring policy it follows)."""

    name = "sarsa"
    example: ClassVar[dict[str, Any]] = {"kind": "sarsa", "env": "GridWorld"}


Q_LEARNING, SARSA = QLearning(), Sarsa()
