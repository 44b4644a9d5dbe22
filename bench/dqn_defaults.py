"""Benchmark: DQN jobs that name only their environment, against Stable-Baselines3 on the
same settings (the RL Zoo's), in one run.

    .venv/bin/python bench/dqn_defaults.py [--envs CartPole-v1 Acrobot-v1 MountainCar-v0]
        [--seeds 0 1 2] [--skip-sb3]

Keiko's job is `{"model": {"kind": "dqn", "env": ENV}, "training": {"seed": SEED}}` (and,
for CartPole-v1, the issue's `total_steps: 50000`): every other setting comes from the
environment's tuned defaults (models/specs/presets.py). Its model is then played for 20
greedy episodes on episode seeds that training never used (`POST /models/{id}/rollout`,
seeds 10,000 and up). Stable-Baselines3 trains `DQN("MlpPolicy")` with the RL Zoo's
hyperparameters for the environment (hyperparams/dqn.yml) for the same number of steps and
is scored with `evaluate_policy` on 20 deterministic episodes of its final model. Times are
the job's running time (started_at to finished_at, evaluations included) and SB3's `learn`.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from models.specs import DQN_DEFAULTS
from tests.stack import Stack, stack_env

EPISODES = 20
UNSEEN = 10_000  # rollout episode seeds start here

# rl-baselines3-zoo, hyperparams/dqn.yml (the version whose results benchmark.md reports)
ZOO: dict[str, dict[str, Any]] = {
    "CartPole-v1": {
        "n_timesteps": 50_000, "learning_rate": 2.3e-3, "batch_size": 64,
        "buffer_size": 100_000, "learning_starts": 1000, "gamma": 0.99,
        "target_update_interval": 10, "train_freq": 256, "gradient_steps": 128,
        "exploration_fraction": 0.16, "exploration_final_eps": 0.04,
        "policy_kwargs": {"net_arch": [256, 256]},
    },
    "Acrobot-v1": {
        "n_timesteps": 100_000, "learning_rate": 6.3e-4, "batch_size": 128,
        "buffer_size": 50_000, "learning_starts": 0, "gamma": 0.99,
        "target_update_interval": 250, "train_freq": 4, "gradient_steps": -1,
        "exploration_fraction": 0.12, "exploration_final_eps": 0.1,
        "policy_kwargs": {"net_arch": [256, 256]},
    },
    "MountainCar-v0": {
        "n_timesteps": 120_000, "learning_rate": 4e-3, "batch_size": 128,
        "buffer_size": 10_000, "learning_starts": 1000, "gamma": 0.98,
        "target_update_interval": 600, "train_freq": 16, "gradient_steps": 8,
        "exploration_fraction": 0.2, "exploration_final_eps": 0.07,
        "policy_kwargs": {"net_arch": [256, 256]},
    },
    "LunarLander-v3": {  # the zoo's LunarLander-v2 settings
        "n_timesteps": 100_000, "learning_rate": 6.3e-4, "batch_size": 128,
        "buffer_size": 50_000, "learning_starts": 0, "gamma": 0.99,
        "target_update_interval": 250, "train_freq": 4, "gradient_steps": -1,
        "exploration_fraction": 0.12, "exploration_final_eps": 0.1,
        "policy_kwargs": {"net_arch": [256, 256]},
    },
}  # fmt: skip


def sb3_run(env_id: str, seed: int) -> dict[str, float]:
    import gymnasium as gym
    from stable_baselines3 import DQN
    from stable_baselines3.common.evaluation import evaluate_policy

    settings = dict(ZOO[env_id])
    steps = settings.pop("n_timesteps")
    model = DQN("MlpPolicy", gym.make(env_id), seed=seed, verbose=0, **settings)
    started = time.perf_counter()
    model.learn(total_timesteps=steps)
    seconds = time.perf_counter() - started
    returns, _ = evaluate_policy(
        model, gym.make(env_id), n_eval_episodes=EPISODES, deterministic=True,
        return_episode_rewards=True,
    )  # fmt: skip
    return {"seconds": seconds, "return_mean": float(sum(returns) / len(returns)), "steps": steps}


def keiko_run(stack: Stack, env_id: str, seed: int) -> dict[str, Any]:
    training: dict[str, Any] = {"seed": seed}
    if env_id == "CartPole-v1":
        training["total_steps"] = 50_000  # the minimal spec
    spec = {"model": {"kind": "dqn", "env": env_id}, "training": training}
    response = stack.http().post("/jobs", json=spec)
    assert response.status_code == 202, response.text
    job = stack.wait_for_job(response.json()["id"], timeout=7200)
    assert job["status"] == "succeeded", job["error"]
    seconds = (
        datetime.fromisoformat(job["finished_at"]) - datetime.fromisoformat(job["started_at"])
    ).total_seconds()
    rollout = stack.http().post(
        f"/models/{job['model_id']}/rollout", json={"episodes": EPISODES, "seed": UNSEEN}
    )
    assert rollout.status_code == 200, rollout.text
    returns = rollout.json()["returns"]
    return {
        "seconds": seconds,
        "return_mean": sum(returns) / len(returns),
        "steps": job["spec"]["training"]["total_steps"],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--envs", nargs="+", default=list(DQN_DEFAULTS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--skip-sb3", action="store_true")
    parser.add_argument("--sb3-only", nargs=2, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sb3_only is not None:
        print(json.dumps(sb3_run(args.sb3_only[0], int(args.sb3_only[1]))))
        return
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        env = stack_env(Path(folder))
        env.pop("OMP_NUM_THREADS", None)
        stack = Stack("dqn", Path(folder), env).start()
        try:
            for env_id in args.envs:
                for seed in args.seeds:
                    row: dict[str, Any] = {"env": env_id, "seed": seed}
                    row["keiko"] = keiko_run(stack, env_id, seed)
                    if not args.skip_sb3:
                        command = [sys.executable, __file__, "--sb3-only", env_id, str(seed)]
                        out = subprocess.run(command, check=True, capture_output=True, text=True)
                        row["sb3"] = json.loads(out.stdout.splitlines()[-1])
                    rows.append(row)
                    print(json.dumps(row), flush=True)
        finally:
            stack.stop()
    print(f"\n{platform.processor() or platform.machine()}; {EPISODES} greedy episodes each")
    print("| env | seed | steps | Keiko return | Keiko s | SB3 return | SB3 s | time ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        k, s = row["keiko"], row.get("sb3")
        sb3 = (
            f"{s['return_mean']:.1f} | {s['seconds']:.0f} | {k['seconds'] / s['seconds']:.2f}"
            if s
            else "- | - | -"
        )
        print(f"| {row['env']} | {row['seed']} | {k['steps']:,} | {k['return_mean']:.1f} | "
              f"{k['seconds']:.0f} | {sb3} |")  # fmt: skip


if __name__ == "__main__":
    main()
