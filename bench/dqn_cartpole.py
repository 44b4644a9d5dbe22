"""DQN on CartPole-v1 through the service, beside Stable-Baselines3's DQN with the RL Zoo
hyperparameters, on the same budget of environment steps, seed by seed.

    .venv/bin/pip install -e '.[bench]'        # stable-baselines3, for the comparison
    .venv/bin/python bench/dqn_cartpole.py [--seeds 0 1 2] [--steps 50000]

Keiko's figure is the job's `metrics.evaluation.return_mean`: 20 greedy episodes of the
returned model (the network of the best evaluation during training), on episode seeds that
took no part in choosing it; its time is the worker's, from `started_at` to `finished_at`,
evaluations included. Stable-Baselines3's time is `model.learn`, and its return the mean of
20 deterministic episodes of the final model (`evaluate_policy`). Both use torch's default
threads on this machine.
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

EVAL_EPISODES = 20

# CartPole-v1's tuned defaults (models/specs/presets.py), which this benchmark measured: the
# RL Zoo's scheme with half its replay ratio (16 gradient steps every 64 environment steps
# instead of 128 every 256) and a 128-128 network; Double DQN (Keiko's default), and the
# model is the network of the best evaluation (every 2,500 steps, 20 episodes).
KEIKO_MODEL: dict[str, Any] = {
    "kind": "dqn",
    "env": "CartPole-v1",
    **DQN_DEFAULTS["CartPole-v1"].model,
}
KEIKO_OPTIMIZER = DQN_DEFAULTS["CartPole-v1"].optimizer

# rl-baselines3-zoo, hyperparams/dqn.yml, CartPole-v1
ZOO = {
    "learning_rate": 2.3e-3,
    "batch_size": 64,
    "buffer_size": 100_000,
    "learning_starts": 1000,
    "gamma": 0.99,
    "target_update_interval": 10,
    "train_freq": 256,
    "gradient_steps": 128,
    "exploration_fraction": 0.16,
    "exploration_final_eps": 0.04,
    "policy_kwargs": {"net_arch": [256, 256]},
}


def sb3_run(seed: int, steps: int) -> dict[str, float]:
    import gymnasium as gym
    from stable_baselines3 import DQN
    from stable_baselines3.common.evaluation import evaluate_policy

    model = DQN("MlpPolicy", gym.make("CartPole-v1"), seed=seed, verbose=0, **ZOO)  # type: ignore[arg-type]
    started = time.perf_counter()
    model.learn(total_timesteps=steps)
    seconds = time.perf_counter() - started
    returns, _ = evaluate_policy(
        model, gym.make("CartPole-v1"), n_eval_episodes=EVAL_EPISODES, deterministic=True,
        return_episode_rewards=True,
    )  # fmt: skip
    return {"seconds": seconds, "return_mean": float(sum(returns) / len(returns))}


def keiko_run(stack: Stack, seed: int, steps: int) -> dict[str, Any]:
    spec = {
        "model": KEIKO_MODEL,
        "optimizer": KEIKO_OPTIMIZER,
        "training": {"total_steps": steps, "seed": seed, "eval_episodes": EVAL_EPISODES},
    }
    response = stack.http().post("/jobs", json=spec)
    assert response.status_code == 202, response.text
    job = stack.wait_for_job(response.json()["id"], timeout=3600)
    assert job["status"] == "succeeded", job["error"]
    seconds = (
        datetime.fromisoformat(job["finished_at"]) - datetime.fromisoformat(job["started_at"])
    ).total_seconds()
    history = job["history"]
    return {
        "seconds": seconds,
        "return_mean": job["metrics"]["evaluation"]["return_mean"],
        "last_eval_return": history[-1]["eval_return_mean"],
        "best_step": max(history, key=lambda e: e["eval_return_mean"])["step"],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=50_000)
    parser.add_argument("--skip-sb3", action="store_true")
    parser.add_argument("--sb3-only", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sb3_only is not None:
        print(json.dumps(sb3_run(args.sb3_only, args.steps)))
        return
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        env = stack_env(Path(folder))
        env.pop("OMP_NUM_THREADS", None)
        stack = Stack("dqn", Path(folder), env).start()
        try:
            for seed in args.seeds:
                keiko = keiko_run(stack, seed, args.steps)
                row = {"seed": seed, "keiko": keiko}
                if not args.skip_sb3:
                    command = [sys.executable, __file__, "--sb3-only", str(seed),
                               "--steps", str(args.steps)]  # fmt: skip
                    out = subprocess.run(command, check=True, capture_output=True, text=True)
                    row["sb3"] = json.loads(out.stdout.splitlines()[-1])
                rows.append(row)
                print(json.dumps(row), flush=True)
        finally:
            stack.stop()
    print(f"\n{platform.processor() or platform.machine()}, {args.steps} steps per run")
    print("| seed | Keiko return | Keiko s | SB3 return | SB3 s | time ratio |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        k, s = row["keiko"], row.get("sb3")
        sb3 = (
            f"{s['return_mean']:.1f} | {s['seconds']:.1f} | {k['seconds'] / s['seconds']:.2f}"
            if s
            else "- | - | -"
        )
        print(f"| {row['seed']} | {k['return_mean']:.1f} | {k['seconds']:.1f} | {sb3} |")


if __name__ == "__main__":
    main()
