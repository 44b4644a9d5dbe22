"""Reinforcement learning over HTTP with the real worker: grid-world DQN and Q-learning,
a short CartPole DQN, their predictions and rollouts, cancel, and the specs refused."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.e2e.helpers import diabetes_frame, job_spec, upload_frame
from tests.e2e.test_images import train
from tests.stack import Stack

COURSE_PATH = [[0, 0], [1, 0], [1, 1], [1, 2]]  # down, right, right: return 8


def rollout(stack: Stack, model_id: str, **body: Any) -> dict[str, Any]:
    response = stack.http().post(f"/models/{model_id}/rollout", json=body)
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_grid_world_dqn_and_q_learning(stack: Stack) -> None:
    dqn = train(
        stack,
        {
            "model": {
                "kind": "dqn",
                "env": "GridWorld",
                "hidden_layers": [32],
                "gamma": 0.9,
                "learning_starts": 200,
                "train_freq": 1,
                "target_update_interval": 100,
                "exploration": {"fraction": 0.5},
            },
            "training": {
                "total_steps": 2500,
                "eval_interval": 500,
                "eval_episodes": 2,
                "checkpoint_every": 1,
            },
        },
    )
    assert dqn["task"] == "reinforcement" and dqn["dataset_id"] is None
    progress = dqn["progress"]
    assert (progress["step"], progress["steps"], progress["epoch"]) == (2500, 2500, 5)
    entry = dqn["history"][-1]
    assert entry["step"] == 2500 and entry["eval_return_mean"] == 8.0
    for name in ("eval_return_std", "train_return_mean", "epsilon", "steps_per_second"):
        assert name in entry
    assert dqn["metrics"]["evaluation"]["return_mean"] == 8.0
    # One per evaluation; retention keeps the latest two (the best, 8.0, is the latest).
    assert [c["epoch"] for c in dqn["checkpoints"]] == [4, 5]

    played = rollout(stack, dqn["model_id"], episodes=2, seed=1)
    assert played["returns"] == [8.0, 8.0] and played["lengths"] == [3, 3]
    assert played["paths"] == [COURSE_PATH, COURSE_PATH]
    answer = stack.http().post("/predict", json={"model_id": dqn["model_id"], "inputs": [0, 3]})
    assert answer.status_code == 200, answer.text
    assert answer.json()["actions"] == [2, 1]  # down from the start, right from (1, 0)
    assert len(answer.json()["q_values"][0]) == 4
    model = stack.http().get(f"/models/{dqn['model_id']}").json()
    assert model["output"]["action_names"] == ["up", "right", "down", "left"]
    assert model["input_schema"] == {"observation": {"type": "discrete", "n": 6}}
    bad = stack.http().post("/predict", json={"model_id": dqn["model_id"], "inputs": [6]})
    assert bad.status_code == 422 and "outside 0..5" in bad.json()["detail"]

    tabular = train(
        stack,
        {
            "model": {
                "kind": "q_learning",
                "alpha": 0.5,
                "gamma": 0.9,
                "exploration": {"start": 1.0, "end": 0.05, "fraction": 0.5},
            },
            "training": {"total_steps": 3000, "eval_interval": 1000},
        },
    )
    assert rollout(stack, tabular["model_id"])["paths"] == [COURSE_PATH]


def test_cartpole_dqn_predicts_and_rolls_out(stack: Stack) -> None:
    job = train(
        stack,
        {
            "model": {
                "kind": "dqn",
                "env": "CartPole-v1",
                "hidden_layers": [32],
                "learning_starts": 200,
                "num_envs": 2,
            },
            "training": {"total_steps": 1000, "eval_interval": 500, "eval_episodes": 3},
        },
    )
    assert len(job["history"]) == 2 and job["history"][-1]["step"] == 1000
    model_id = job["model_id"]
    answer = stack.http().post(
        "/predict", json={"model_id": model_id, "inputs": [[0.0, 0.1, 0.02, -0.1]] * 3}
    )
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["actions"]) == 3 and set(answer.json()["actions"]) <= {0, 1}
    wrong = stack.http().post("/predict", json={"model_id": model_id, "inputs": [[0.0, 0.1]]})
    assert wrong.status_code == 422 and "list of 4 numbers" in wrong.json()["detail"]
    played = rollout(stack, model_id, episodes=3, seed=7)
    assert len(played["returns"]) == 3 and played.get("paths") is None
    assert played["returns"] == [float(n) for n in played["lengths"]]  # +1 per step
    assert rollout(stack, model_id, episodes=3, seed=7) == played  # same seed, same episodes


def test_cancel_a_running_dqn_job(stack: Stack) -> None:
    spec = {
        "model": {"kind": "dqn", "env": "CartPole-v1", "hidden_layers": [32]},
        "training": {"total_steps": 5_000_000, "eval_interval": 1000, "eval_episodes": 1},
    }
    job_id = stack.http().post("/jobs", json=spec).json()["id"]
    deadline = time.monotonic() + 120
    while not stack.http().get(f"/jobs/{job_id}").json()["history"]:
        assert time.monotonic() < deadline, stack.log("worker")
        time.sleep(0.2)
    running = stack.http().get(f"/jobs/{job_id}").json()
    assert running["status"] == "running" and running["progress"]["step"] >= 1000
    assert stack.http().post(f"/jobs/{job_id}/cancel").status_code == 202
    job = stack.wait_for_job(job_id, timeout=30)
    assert job["status"] == "cancelled" and job["model_id"] is None


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ({"kind": "dqn", "env": "NoSuchEnv-v9"}, "unknown environment"),
        ({"kind": "dqn", "env": "Pendulum-v1"}, "continuous"),
        ({"kind": "q_learning", "env": "CartPole-v1"}, "discrete observations"),
        ({"kind": "dqn", "env": "os:system"}, "registered environment id"),
    ],
)
def test_environments_that_cannot_work_are_422(
    stack: Stack, model: dict[str, Any], message: str
) -> None:
    response = stack.http().post("/jobs", json={"model": model})
    assert response.status_code == 422, response.text
    assert message in str(response.json()["detail"])


def test_rollout_needs_a_policy(stack: Stack) -> None:
    dataset_id = upload_frame(stack.http(), diabetes_frame())
    spec = job_spec(
        dataset_id,
        task="regression",
        target="target",
        model={"kind": "linear", "solver": "normal_equation"},
    )
    supervised = train(stack, spec)
    response = stack.http().post(f"/models/{supervised['model_id']}/rollout", json={})
    assert response.status_code == 422 and "not a policy" in response.json()["detail"]
    assert stack.http().post("/models/nope/rollout", json={}).status_code == 404
    too_many = stack.http().post("/models/nope/rollout", json={"episodes": 10_000})
    assert too_many.status_code == 422
