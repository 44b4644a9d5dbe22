"""What every RL trainer shares: the epsilon schedule, opening the training environments,
the bundle's interface, and `Session`, which runs the evaluation rounds, writes the history and
the checkpoints, and polls for cancellation and the deadline.

Progress is counted in environment steps. Every `eval_interval` steps the greedy policy is
evaluated and the evaluation becomes one entry of the job's history (its `epoch` is the
evaluation's number). A resumed job restores its model, the optimizer and its step count
(`Progress` is what a checkpoint carries across).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from models.base import Cancelled, DivergedError, EpochRecord, Reporter, TrainingError
from models.envs import EnvError, EnvInfo, describe_env
from models.policy import CheckpointClock
from models.rl.episodes import (
    MAX_PARALLEL_EPISODES,
    Episodes,
    ObservationEncoder,
    env_config,
    greedy_policy,
    make_envs,
    run_episodes,
)
from models.specs import DQNSpec, ExplorationSpec, JobSpec, TabularSpec
from models.watch import Watch

EVAL_SEED_OFFSET = 1_000_003  # evaluation episodes never replay the training episodes' seeds
FINAL_SEED_OFFSET = 2_000_003  # nor the evaluations that chose the best network


def epsilon_at(schedule: ExplorationSpec, step: int, total_steps: int) -> float:
    """Linear from `start` to `end` over the first `fraction` of the run, then `end`."""
    span = schedule.fraction * total_steps
    if span <= 0 or step >= span:
        return schedule.end
    return schedule.start + (schedule.end - schedule.start) * step / span


@dataclass
class Progress:
    """Counters that a checkpoint carries across a resume."""

    step: int = 0
    evaluations: int = 0
    episodes: int = 0
    best_return: float = -math.inf
    best_state: dict[str, torch.Tensor] | None = None
    recent_returns: list[float] = field(default_factory=list)  # since the last evaluation
    losses: list[torch.Tensor] = field(default_factory=list)  # since the last evaluation


class Cadence:
    """Fires every `every` environment steps, counting `n` steps at a time."""

    def __init__(self, every: int, done: int = 0) -> None:
        self.every = every
        self.count = done % every

    def advance(self, n: int) -> int:
        """How many times it fires while `n` more steps pass."""
        self.count += n
        fired, self.count = divmod(self.count, self.every)
        return fired


class Session:
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
        self.watch = Watch(reporter, cancel_poll_seconds)
        parallel = min(spec.training.eval_episodes, MAX_PARALLEL_EPISODES)
        self.eval_envs = make_envs(env_config(model), parallel)
        self.progress = Progress()
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
        if step < self.total and self.watch.past_deadline:
            self.watch.check_deadline(f"at step {step} of {self.total}")
        if self.checkpoints.overdue() and step < self.total:  # a long interval: save inside
            self.save_inside(save)
        try:
            self.watch.poll()
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


def open_envs(
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


def interface(
    model: DQNSpec | TabularSpec, info: EnvInfo, encoder: ObservationEncoder
) -> dict[str, Any]:
    """What the model bundle records for predict and rollouts."""
    example = encoder.batch([0]) if info.discrete_observations else None
    return {
        "task": "reinforcement",
        "example_shape": list(example.shape[1:]) if example is not None else [info.obs_size],
        "preprocessing": encoder.to_json(),
        "input_schema": info.input_schema(),
        "output": info.output(),
        "env": env_config(model),
    }
