"""Reinforcement learning: the replay buffer, target updates, reward clipping, the epsilon
schedule, the tabular update rules against hand-computed values, the grid world, and short
training runs that must find the best path."""

from __future__ import annotations

import copy
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from models.base import Cancelled, InputError, Released
from models.checkpoint import load_checkpoint
from models.envs import EnvError, GridWorld, check_env
from models.rl.common import epsilon_at
from models.rl.dqn import QNetwork, ReplayBuffer, clip_rewards, train_dqn, update_target
from models.rl.episodes import ObservationEncoder
from models.rl.tabular import q_learning_update, sarsa_update, train_tabular
from models.specs import ExplorationSpec, GridWorldOptions, JobSpec
from tests.unit.reporting import MemoryReporter

# --- replay buffer -----------------------------------------------------------------------


def transitions(start: int, n: int) -> tuple[np.ndarray, ...]:
    """n transitions numbered start, start+1, ...: every field carries the number."""
    k = np.arange(start, start + n)
    obs = np.stack([k, k], axis=1).astype(np.float32)
    return obs, k % 3, k.astype(np.float32), obs + 0.5, (k % 2).astype(np.float32)


def test_replay_buffer_fills_then_wraps_around() -> None:
    buffer = ReplayBuffer(capacity=5, obs_size=2)
    buffer.add(*transitions(0, 3))
    assert len(buffer) == 3 and buffer.position == 3
    buffer.add(*transitions(3, 4))  # 7 in all: 0 and 1 are overwritten by 5 and 6
    assert len(buffer) == 5 and buffer.position == 2
    assert buffer.rewards.tolist() == [5, 6, 2, 3, 4]
    assert buffer.obs[:, 0].tolist() == [5, 6, 2, 3, 4]
    assert buffer.next_obs[:, 1].tolist() == [5.5, 6.5, 2.5, 3.5, 4.5]
    assert buffer.actions.tolist() == [2, 0, 2, 0, 1]


def test_replay_buffer_samples_only_stored_transitions() -> None:
    buffer = ReplayBuffer(capacity=100, obs_size=2)
    buffer.add(*transitions(10, 7))
    rng = np.random.default_rng(0)
    obs, actions, rewards, next_obs, terminated = buffer.sample(500, rng, torch.device("cpu"))
    assert obs.shape == (500, 2) and actions.dtype == torch.int64
    assert set(rewards.tolist()) == set(range(10, 17))  # all of them, nothing else
    # the fields of one sampled row belong to the same transition
    torch.testing.assert_close(obs[:, 0], rewards)
    torch.testing.assert_close(next_obs, obs + 0.5)
    torch.testing.assert_close(terminated, rewards % 2)
    torch.testing.assert_close(actions, rewards.long() % 3)
    with pytest.raises(ValueError, match="empty"):
        ReplayBuffer(4, 2).sample(1, rng, torch.device("cpu"))


# --- the stabilisers ---------------------------------------------------------------------


def test_hard_and_soft_target_updates() -> None:
    config = {"obs_size": 3, "num_actions": 2, "hidden_layers": [4], "activation": "relu",
              "dueling": False}  # fmt: skip
    torch.manual_seed(0)
    online, target = QNetwork(config), QNetwork(config)
    before = copy.deepcopy(target.state_dict())
    update_target(target, online, tau=0.25)
    for name, value in target.state_dict().items():
        expected = 0.25 * online.state_dict()[name] + 0.75 * before[name]
        torch.testing.assert_close(value, expected)
    update_target(target, online, tau=None)
    for name, value in target.state_dict().items():
        assert torch.equal(value, online.state_dict()[name])


def test_reward_clipping() -> None:
    rewards = np.array([-20.0, -1.0, -0.5, 0.0, 0.25, 1.0, 10.0], dtype=np.float32)
    assert clip_rewards(rewards, True).tolist() == [-1.0, -1.0, -0.5, 0.0, 0.25, 1.0, 1.0]
    assert clip_rewards(rewards, False) is rewards


def test_epsilon_schedule() -> None:
    schedule = ExplorationSpec(start=1.0, end=0.1, fraction=0.5)
    assert epsilon_at(schedule, 0, 1000) == 1.0
    assert epsilon_at(schedule, 250, 1000) == pytest.approx(0.55)
    assert epsilon_at(schedule, 500, 1000) == pytest.approx(0.1)
    assert epsilon_at(schedule, 900, 1000) == pytest.approx(0.1)
    assert epsilon_at(ExplorationSpec(start=1.0, end=0.2, fraction=0.0), 0, 10) == 0.2


def test_dueling_head_is_value_plus_centred_advantage() -> None:
    config = {"obs_size": 3, "num_actions": 4, "hidden_layers": [8], "activation": "tanh",
              "dueling": True}  # fmt: skip
    net = QNetwork(config)
    x = torch.randn(5, 3)
    h = net.trunk(x)
    assert net.value is not None
    advantage = net.head(h)
    expected = net.value(h) + advantage - advantage.mean(dim=1, keepdim=True)
    torch.testing.assert_close(net(x), expected)


# --- tabular updates, by hand ------------------------------------------------------------


def test_q_learning_update_by_hand() -> None:
    q = np.zeros((3, 2))
    q[1] = [2.0, 5.0]
    # target = r + gamma max Q(s') = -1 + 0.9 * 5 = 3.5; Q += 0.5 (3.5 - 0)
    assert q_learning_update(q, 0, 1, -1.0, 1, False, alpha=0.5, gamma=0.9) == 3.5
    assert q[0, 1] == 1.75
    # again: target 3.5, error 3.5 - 1.75
    q_learning_update(q, 0, 1, -1.0, 1, False, alpha=0.5, gamma=0.9)
    assert q[0, 1] == pytest.approx(2.625)
    # a terminal next state does not bootstrap: target = r = 10
    q_learning_update(q, 2, 0, 10.0, 1, True, alpha=0.1, gamma=0.9)
    assert q[2, 0] == pytest.approx(1.0)


def test_sarsa_update_uses_the_action_taken() -> None:
    q = np.zeros((3, 2))
    q[1] = [2.0, 5.0]
    # a' = 0 (not the greedy 1): target = -1 + 0.9 * 2 = 0.8
    assert sarsa_update(q, 0, 1, -1.0, 1, 0, False, alpha=0.5, gamma=0.9) == pytest.approx(0.8)
    assert q[0, 1] == pytest.approx(0.4)
    sarsa_update(q, 2, 1, 10.0, 1, 1, True, alpha=0.5, gamma=0.9)
    assert q[2, 1] == pytest.approx(5.0)


# --- the grid world ----------------------------------------------------------------------

UP, RIGHT, DOWN, LEFT = range(4)


def test_course_grid_world_rewards() -> None:
    env = GridWorld()
    assert env.layout == ["SX.", "..G"]
    state, _ = env.reset(seed=0)
    assert env.cell(state) == (0, 0)
    state, reward, terminated, _, _ = env.step(RIGHT)
    assert (env.cell(state), reward, terminated) == ((0, 1), -20.0, False)
    env.reset()
    rewards = [env.step(a)[1] for a in (DOWN, RIGHT)]
    state, reward, terminated, truncated, _ = env.step(RIGHT)
    assert rewards == [-1.0, -1.0] and reward == 10.0 and terminated and not truncated
    assert sum(rewards) + reward == 8.0  # the best return from the start


def test_grid_world_edges_walls_slip_and_time_limit() -> None:
    env = GridWorld(GridWorldOptions(layout=["S#", ".G"], max_steps=3))
    env.reset(seed=0)
    state, reward, *_ = env.step(UP)  # off the grid: stays, still pays a step
    assert env.cell(state) == (0, 0) and reward == -1.0
    state, *_ = env.step(RIGHT)  # into the wall: stays
    assert env.cell(state) == (0, 0)
    *_, terminated, truncated, _ = env.step(LEFT)
    assert not terminated and truncated  # the third step hits max_steps
    slippery = GridWorld(GridWorldOptions(rows=5, cols=5, slip=1.0))
    slippery.reset(seed=3)
    cells = {slippery.cell(slippery.step(RIGHT)[0]) for _ in range(40)}
    assert any(row > 0 for row, _ in cells)  # a pure "right" policy never leaves row 0


def test_grid_world_options_are_checked() -> None:
    for bad in (
        {"layout": ["S.", "..G"]},
        {"layout": ["S.", ".."]},
        {"layout": ["SS", ".G"]},
        {"layout": ["S?", ".G"]},
        {"rows": 3},
        {"rows": 1, "cols": 1},
        {"layout": ["SG"], "rows": 1, "cols": 2},
        {"slip": 1.5},
    ):
        with pytest.raises(ValidationError):
            GridWorldOptions.model_validate(bad)
    assert GridWorldOptions(rows=2, cols=4).resolved_layout() == ["S...", "...G"]


# --- environments and observations -------------------------------------------------------


def test_environment_checks() -> None:
    info = check_env("CartPole-v1", None, tabular=False)
    assert (info.obs_size, info.num_actions, info.discrete_observations) == (4, 2, False)
    assert check_env("GridWorld", None, tabular=True).obs_size == 6
    assert check_env("Acrobot-v1", None, tabular=False).num_actions == 3
    assert check_env("MountainCar-v0", None, tabular=False).obs_size == 2
    lander = check_env("LunarLander-v3", None, tabular=False)  # Box2D installs with Keiko
    assert (lander.obs_size, lander.num_actions) == (8, 4)
    assert check_env("FrozenLake-v1", None, tabular=True).obs_size == 16
    with pytest.raises(EnvError, match="unknown environment"):
        check_env("NoSuchEnv-v0", None, tabular=False)
    with pytest.raises(EnvError, match="unknown environment"):
        check_env("os:system", None, tabular=False)
    with pytest.raises(EnvError, match="continuous"):
        check_env("Pendulum-v1", None, tabular=False)
    with pytest.raises(EnvError, match="discrete observations"):
        check_env("CartPole-v1", None, tabular=True)


def test_observation_encoder_checks_predict_inputs() -> None:
    vector = ObservationEncoder(discrete=False, size=4, one_hot=False)
    assert vector.encode([[0, 1, 2, 3.5]]).dtype == np.float32
    for bad, message in (
        ([[1, 2, 3]], "list of 4 numbers; got 3 values"),
        ([[1, 2, 3, "x"]], "not a number"),
        ([[1, 2, 3, float("nan")]], "finite"),
        ([5], "list of 4 numbers"),
    ):
        with pytest.raises(InputError, match=message):
            vector.encode(bad)
    states = ObservationEncoder(discrete=True, size=6, one_hot=True)
    np.testing.assert_array_equal(states.encode([2, [5]]), np.eye(6, dtype=np.float32)[[2, 5]])
    for bad in ([6], [-1], [1.5], ["a"], [[1, 2]], [float("inf")], [float("nan")], [True]):
        with pytest.raises(InputError):
            states.encode(bad)
    assert ObservationEncoder(True, 6, one_hot=False).encode([3]).tolist() == [3]


# --- training ----------------------------------------------------------------------------


def rl_job(model: dict[str, Any], **training: Any) -> JobSpec:
    return JobSpec.model_validate(
        {"model": model, "training": {"seed": 0, "eval_episodes": 5, **training}}
    )


def shortest_return(layout: list[str], step: float = -1.0, goal: float = 10.0) -> float:
    """The best return when every cell but the goal costs `step`: a breadth-first search
    around the X and # cells."""
    rows, cols = len(layout), len(layout[0])
    start = next((r, c) for r in range(rows) for c in range(cols) if layout[r][c] == "S")
    seen, queue = {start: 0}, deque([start])
    while queue:
        r, c = queue.popleft()
        if layout[r][c] == "G":
            return (seen[(r, c)] - 1) * step + goal
        for dr, dc in ((-1, 0), (0, 1), (1, 0), (0, -1)):
            nxt = (r + dr, c + dc)
            ok = 0 <= nxt[0] < rows and 0 <= nxt[1] < cols and layout[nxt[0]][nxt[1]] not in "X#"
            if ok and nxt not in seen:
                seen[nxt] = seen[(r, c)] + 1
                queue.append(nxt)
    raise AssertionError("no path")


def greedy_path(result: Any, options: GridWorldOptions | None = None) -> list[tuple[int, int]]:
    env = GridWorld(options)
    state, _ = env.reset(seed=0)
    path = [env.cell(state)]
    encoder = ObservationEncoder.from_json(result.interface["preprocessing"])
    for _ in range(50):
        q = result.network(torch.from_numpy(encoder.batch([state])))
        state, _, terminated, truncated, _ = env.step(int(q.argmax()))
        path.append(env.cell(state))
        if terminated or truncated:
            break
    return path


COURSE_PATH = [(0, 0), (1, 0), (1, 1), (1, 2)]  # down, right, right: return 8


@pytest.mark.parametrize("kind", ["q_learning", "sarsa"])
def test_tabular_learns_the_course_path(kind: str) -> None:
    model = {"kind": kind, "alpha": 0.5, "gamma": 0.9,
             "exploration": {"start": 1.0, "end": 0.05, "fraction": 0.5}}  # fmt: skip
    reporter = MemoryReporter()
    result = train_tabular(rl_job(model, total_steps=3000, eval_interval=500), None, reporter)
    assert greedy_path(result) == COURSE_PATH
    assert result.metrics["evaluation"]["return_mean"] == 8.0
    assert [r.metrics["step"] for r in reporter.records] == [500, 1000, 1500, 2000, 2500, 3000]
    # Between evaluations the loop says where it is: steps since the last one, of 500.
    calls = reporter.progress_calls
    assert len(calls) >= 3000 and all(total == 500 for _, _, total, _ in calls)
    assert all(0 <= done <= 500 and step == 500 * done_evals + done
               for done_evals, done, _, step in calls)  # fmt: skip
    # The table itself. Q-learning learns the optimal Q(start, down) = -1 + 0.9 (-1 + 0.9 * 10)
    # = 6.2; SARSA, on-policy, the (lower) value of its epsilon-greedy behaviour.
    q = float(result.network.q[0, DOWN])
    if kind == "q_learning":
        assert q == pytest.approx(6.2, abs=0.05)
    else:
        assert 5.0 < q < 6.2


def test_dqn_learns_the_course_path() -> None:
    model = {"kind": "dqn", "env": "GridWorld", "hidden_layers": [32], "gamma": 0.9,
             "learning_starts": 200, "train_freq": 1, "target_update_interval": 100,
             "exploration": {"fraction": 0.5}}  # fmt: skip
    spec = rl_job(model, total_steps=2500, eval_interval=500)
    result = train_dqn(spec, None, MemoryReporter())
    assert greedy_path(result) == COURSE_PATH
    assert result.metrics["evaluation"]["return_mean"] == 8.0


PENALTY_LAYOUT = ["S..X.", ".X.X.", ".X...", "...XG"]


@pytest.mark.parametrize("kind", ["q_learning", "dqn"])
def test_the_shortest_path_around_penalty_cells(kind: str) -> None:
    layout = PENALTY_LAYOUT
    options = GridWorldOptions(layout=layout)
    explore = {"start": 1.0, "end": 0.05, "fraction": 0.6}
    model: dict[str, Any] = {"kind": kind, "gamma": 0.95, "exploration": explore,
                             "env_options": options.model_dump()}  # fmt: skip
    if kind == "q_learning":
        model["alpha"] = 0.5
        result = train_tabular(rl_job(model, total_steps=20_000), None, MemoryReporter())
    else:
        model |= {"env": "GridWorld", "hidden_layers": [64], "learning_starts": 500,
                  "train_freq": 2, "target_update_interval": 200}  # fmt: skip
        spec = JobSpec.model_validate(
            {"model": model, "optimizer": {"name": "adam", "lr": 3e-3},
             "training": {"seed": 0, "eval_episodes": 1, "total_steps": 8000}}
        )  # fmt: skip
        result = train_dqn(spec, None, MemoryReporter())
    path = greedy_path(result, options)
    assert all(layout[r][c] != "X" for r, c in path)
    assert result.metrics["evaluation"]["return_mean"] == shortest_return(layout)
    assert len(path) - 1 == shortest_return(layout, step=1.0, goal=1.0)  # steps taken


def test_dqn_same_seed_same_run_and_it_resumes(tmp_path: Path) -> None:
    model = {"kind": "dqn", "env": "CartPole-v1", "hidden_layers": [16], "learning_starts": 100}
    spec = rl_job(model, total_steps=1200, eval_interval=300, checkpoint_every=1)
    first, second = MemoryReporter(), MemoryReporter()
    train_dqn(spec, None, first)
    train_dqn(spec, None, second)
    assert [r.train_loss for r in first.records] == [r.train_loss for r in second.records]
    assert [r.metrics["step"] for r in first.records] == [300, 600, 900, 1200]

    interrupted = MemoryReporter(tmp_path, cancel_after=2)
    with pytest.raises(Cancelled):
        train_dqn(spec, None, interrupted, cancel_poll_seconds=0.0)
    epoch, path = interrupted.checkpoints[-1]
    resumed = MemoryReporter(tmp_path)
    resumed.resume_from = load_checkpoint(path, expected_sha256=None)
    result = train_dqn(spec, None, resumed)
    assert epoch == 2
    assert [r.epoch for r in resumed.records] == [3, 4]  # no evaluation repeated
    assert [r.metrics["step"] for r in resumed.records] == [900, 1200]
    assert result.metrics["train"]["steps"] == 1200


def test_rl_job_specs() -> None:
    assert JobSpec.model_validate({"model": {"kind": "dqn"}}).task == "reinforcement"
    for bad in (
        {"model": {"kind": "dqn"}, "dataset_id": "d"},
        {"model": {"kind": "dqn"}, "training": {"epochs": 5}},
        {"model": {"kind": "dqn", "env": "CartPole-v1", "env_options": {"rows": 3, "cols": 3}}},
        {"model": {"kind": "dqn", "env": "gymnasium.envs:CartPoleEnv"}},
        {"model": {"kind": "q_learning"}, "optimizer": {"name": "sgd", "lr": 0.1}},
        {"model": {"kind": "dqn", "tau": 0.0}},
        {"model": {"kind": "dqn"}, "training": {"total_steps": 100, "eval_interval": 200}},
        {"model": {"kind": "mlp"}, "task": "regression"},  # no dataset
        {
            "model": {"kind": "mlp"},
            "task": "regression",
            "dataset_id": "d",
            "training": {"total_steps": 100},
        },
        {"model": {"kind": "mlp"}, "task": "reinforcement", "dataset_id": "d"},
    ):
        with pytest.raises(ValidationError):
            JobSpec.model_validate(bad)
    stored = JobSpec.model_validate({"model": {"kind": "sarsa"}}).model_dump(mode="json")
    assert JobSpec.model_validate(stored).model.kind == "sarsa"  # a stored spec validates again


def test_replay_buffer_draws_a_round_of_batches_at_once() -> None:
    buffer = ReplayBuffer(capacity=50, obs_size=2)
    buffer.add(*transitions(0, 20))
    obs, _, rewards, _, _ = buffer.sample(
        8, np.random.default_rng(1), torch.device("cpu"), batches=16
    )
    assert obs.shape == (16, 8, 2) and rewards.shape == (16, 8)
    torch.testing.assert_close(obs[..., 0], rewards)
    assert len(set(rewards.flatten().tolist())) == 20  # 128 draws reach every transition


def test_tabular_resumes_with_the_table_it_saved(tmp_path: Path) -> None:
    spec = rl_job(
        {"kind": "q_learning", "alpha": 0.5}, total_steps=400, eval_interval=100, checkpoint_every=1
    )
    interrupted = MemoryReporter(tmp_path, cancel_after=2)
    with pytest.raises(Cancelled):
        train_tabular(spec, None, interrupted, cancel_poll_seconds=0.0)
    epoch, path = interrupted.checkpoints[-1]
    saved = load_checkpoint(path, expected_sha256=None)
    assert epoch == 2 and saved.model_state["table.q"].dtype == torch.float64
    resumed = MemoryReporter(tmp_path)
    resumed.resume_from = saved
    result = train_tabular(spec, None, resumed)
    assert [r.metrics["step"] for r in resumed.records] == [300, 400]
    assert result.metrics["train"]["steps"] == 400


@pytest.mark.parametrize(
    "model",
    [
        {"kind": "q_learning", "alpha": 0.5},
        {"kind": "dqn", "env": "CartPole-v1", "hidden_layers": [16], "learning_starts": 100},
    ],
    ids=["q_learning", "dqn"],
)
def test_a_released_rl_job_checkpoints_the_step_it_stopped_at(
    tmp_path: Path, model: dict[str, object]
) -> None:
    """No checkpoint is due before the end; released mid-interval, the job checkpoints its
    step (numbered as the evaluation under way) and a resume goes on from that step, with
    no evaluation repeated or skipped."""
    spec = rl_job(model, total_steps=1200, eval_interval=300, checkpoint_every=None)
    spec.training = spec.training.model_copy(update={"checkpoint_seconds": None})
    train = train_dqn if model["kind"] == "dqn" else train_tabular
    calls = 410 // getattr(spec.model, "num_envs", 1)  # one a step, or a step of every env
    interrupted = MemoryReporter(tmp_path, stop_after_progress=calls, stop=Released())
    with pytest.raises(Released):
        train(spec, None, interrupted, cancel_poll_seconds=0.0)
    [(epoch, path)] = interrupted.checkpoints
    stopped_at = interrupted.metas[-1]["step"]
    assert [r.epoch for r in interrupted.records] == [1]
    assert epoch == 2 and 300 < stopped_at < 600
    assert interrupted.metas[-1]["metrics"] == {"step": stopped_at}

    resumed = MemoryReporter(tmp_path)
    resumed.resume_from = load_checkpoint(path, expected_sha256=None)
    result = train(spec, None, resumed)
    assert [r.epoch for r in resumed.records] == [2, 3, 4]
    assert [r.metrics["step"] for r in resumed.records] == [600, 900, 1200]
    assert result.metrics["train"]["steps"] == 1200
