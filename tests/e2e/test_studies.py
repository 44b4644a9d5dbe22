"""Hyperparameter studies over HTTP with a real worker (issue 17): trials run as ordinary jobs
and a pruner stops the hopeless ones; a space that cannot give valid trials is a 422;
cancel; another user's study is a 404; a study outlives its worker and its API."""

from __future__ import annotations

import time
from typing import Any

from tests.e2e.helpers import iris_frame, job_spec, long_job_spec, upload_frame
from tests.stack import Stack

GOOD_LR, HOPELESS_LR = 0.05, 1e-5


def wait_for_study(stack: Stack, study_id: str, timeout: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        study = stack.http().get(f"/studies/{study_id}").json()
        if study["finished_at"] is not None:
            return dict(study)
        assert time.monotonic() < deadline, (study, stack.log("worker")[-5000:])
        time.sleep(0.3)


def post_study(stack: Stack, study: dict[str, Any]) -> dict[str, Any]:
    answer = stack.http().post("/studies", json=study)
    assert answer.status_code == 202, answer.text
    return dict(answer.json())


def test_a_study_runs_its_trials_as_jobs_prunes_and_finds_the_best(stack: Stack) -> None:
    dataset = upload_frame(stack.http(), iris_frame())
    base = job_spec(dataset, training={"epochs": 10, "batch_size": 16, "seed": 0})
    study = post_study(
        stack,
        {
            "base": base,
            "space": {
                "optimizer.lr": {"type": "categorical", "choices": [GOOD_LR, HOPELESS_LR]},
                "training.seed": {"type": "int", "low": 0, "high": 2},
            },
            "metric": "validation.loss",
            "n_trials": 20,
            "parallelism": 2,
            "sampler": {"name": "grid", "seed": 0},
            "pruner": {"name": "median", "startup_trials": 1, "warmup_epochs": 1},
        },
    )
    assert study["status"] == "running" and study["direction"] == "minimize"
    assert study["n_trials"] == 6  # the grid's size
    assert len(study["trials"]) == 2  # parallelism: the first two are queued at once

    done = wait_for_study(stack, study["id"])
    assert done["status"] == "succeeded", done
    trials = done["trials"]
    assert [t["number"] for t in trials] == list(range(6))
    combos = {(t["params"]["optimizer.lr"], t["params"]["training.seed"]) for t in trials}
    assert combos == {(lr, seed) for lr in (GOOD_LR, HOPELESS_LR) for seed in range(3)}

    # Every trial is an ordinary job with its own history, in GET /jobs.
    listed = {j["id"]: j for j in stack.http().get("/jobs", params={"limit": 500}).json()["items"]}
    # A grid goes in turn: the three good trials first, so the hopeless ones each meet a
    # finished good one, and fall behind it at their first epoch. (A good one may be
    # pruned too: the median pruner stops whatever is behind the median so far.)
    assert [t["params"]["optimizer.lr"] for t in trials] == [GOOD_LR] * 3 + [HOPELESS_LR] * 3
    assert [t["status"] for t in trials[3:]] == ["pruned"] * 3, trials
    assert trials[0]["status"] == "succeeded"
    for trial in trials:
        job = stack.http().get(f"/jobs/{trial['job_id']}").json()
        assert listed[job["id"]]["study_id"] == study["id"]
        assert (job["study_id"], job["trial_number"]) == (study["id"], trial["number"])
        assert job["spec"]["optimizer"]["lr"] == trial["params"]["optimizer.lr"]
        assert job["spec"]["training"]["seed"] == trial["params"]["training.seed"]
        assert job["status"] == trial["status"]
        if trial["status"] == "pruned":
            assert job["error"]["type"] == "Pruned"
            assert "median pruner" in job["error"]["message"]
            assert len(job["history"]) < 10 and job["model_id"] is None
            assert trial["value"] is None
        else:
            assert job["status"] == "succeeded", job["error"]
            assert len(job["history"]) == 10 and trial["epochs_reported"] == 10
            assert trial["value"] == job["metrics"]["validation"]["loss"]
            assert trial["model_id"] == job["model_id"]

    best = done["best"]
    values = [t["value"] for t in trials if t["value"] is not None]
    assert best["value"] == min(values) == done["best_value"]
    assert best["params"]["optimizer.lr"] == GOOD_LR
    assert best["model_id"] is not None and done["best_job_id"] == best["job_id"]
    predicted = stack.http().post(
        "/predict", json={"model_id": best["model_id"], "inputs": [[5.1, 3.5, 1.4, 0.2]]}
    )
    assert predicted.status_code == 200, predicted.text
    # At most the three good trials have a value: too few for importances (from four).
    assert len(values) <= 3 and done["importances"] is None

    page = stack.http().get("/studies").json()
    mine = next(s for s in page["items"] if s["id"] == study["id"])
    assert mine["counts"] == {s: sum(t["status"] == s for t in trials) for s in mine["counts"]}
    assert mine["best_value"] == best["value"]
    finished = stack.http().get("/studies", params={"status": "succeeded"}).json()["items"]
    assert study["id"] in [s["id"] for s in finished]


def test_a_space_that_cannot_give_valid_trials_is_a_422(embedded_stack: Stack) -> None:
    stack = embedded_stack
    dataset = upload_frame(stack.http(), iris_frame())
    base = job_spec(dataset)
    lr = {"type": "float", "low": 1e-4, "high": 1e-1, "log": True}
    before = stack.http().get("/jobs").json()["total"], stack.http().get("/studies").json()["total"]
    cases: list[tuple[dict[str, Any], str]] = [
        ({"space": {"optimizer.learning_rate": lr}}, "optimizer.learning_rate"),
        ({"space": {"model.kernel_size": {"type": "int", "low": 1, "high": 3}}}, "no such field"),
        ({"space": {"optimizer.lr": {"type": "float", "low": 0.1, "high": 0.01}}}, "empty"),
        ({"space": {"model.dropout": {"type": "float", "low": 0.0, "high": 1.5}}}, "dropout"),
        ({"space": {"dataset_id": {"type": "categorical", "choices": ["x"]}}}, "cannot search"),
        ({"space": {"optimizer.lr": lr}, "metric": "test.accuracy"}, "only known when"),
        ({"space": {"optimizer.lr": lr}, "metric": "validation.rmse"}, "classification"),
        ({"space": {"optimizer.lr": lr}, "sampler": {"name": "grid"}}, "grid sampler"),
        ({"space": {"optimizer.lr": lr}, "base": {**base, "dataset_id": "nope"}}, "no dataset"),
        ({"space": {"optimizer.lr": lr}, "parallelism": 1000}, "parallelism"),
    ]
    for extra, words in cases:
        answer = stack.http().post("/studies", json={"base": base, **extra})
        assert answer.status_code == 422, (extra, answer.text)
        assert words in answer.text, (extra, answer.text)
    after = stack.http().get("/jobs").json()["total"], stack.http().get("/studies").json()["total"]
    assert after == before


def long_study(stack: Stack, **overrides: Any) -> dict[str, Any]:
    """Trials of a second or more each (6,000 rows in batches of 8, a checkpoint an epoch)."""
    base = long_job_spec(stack, seed=0, epochs=4)
    study = {
        "base": base,
        "space": {"optimizer.lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}},
        "metric": "validation.rmse",
        "n_trials": 3,
        "parallelism": 1,
        "sampler": {"name": "random", "seed": 1},
        "pruner": {"name": "none"},
        **overrides,
    }
    return post_study(stack, study)


def running_trial(stack: Stack, study_id: str, checkpoints: int = 0) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while True:
        for trial in stack.http().get(f"/studies/{study_id}").json()["trials"]:
            job = stack.http().get(f"/jobs/{trial['job_id']}").json()
            if job["status"] == "running" and len(job["checkpoints"]) >= checkpoints:
                return dict(job)
        assert time.monotonic() < deadline, stack.log("worker")[-5000:]
        time.sleep(0.1)


def test_cancel_stops_the_study_and_its_trials_and_others_see_nothing(
    embedded_stack: Stack,
) -> None:
    stack = embedded_stack
    study = long_study(stack, n_trials=10, parallelism=2)
    running_trial(stack, study["id"])

    eve = stack.client_for(stack.new_user("eve"))
    for method, path in (("GET", ""), ("POST", "/cancel")):
        answer = eve.request(method, f"/studies/{study['id']}{path}")
        assert answer.status_code == 404, answer.text
    assert eve.get("/studies").json()["total"] == 0
    assert stack.http().get(f"/studies/{study['id']}").json()["status"] == "running"

    cancelled = stack.http().post(f"/studies/{study['id']}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    done = wait_for_study(stack, study["id"])
    assert done["status"] == "cancelled"
    assert len(done["trials"]) == 2  # no trial was asked for after the cancel
    assert {t["status"] for t in done["trials"]} == {"cancelled"}
    again = stack.http().post(f"/studies/{study['id']}/cancel")
    assert again.status_code == 200 and again.json()["trials"] == done["trials"]


def test_a_study_outlives_its_worker_and_its_api(stack: Stack) -> None:
    study = long_study(stack)
    first = running_trial(stack, study["id"], checkpoints=1)
    stack.kill_worker()
    stack.restart_api()
    stack.start_worker()

    done = wait_for_study(stack, study["id"])
    assert done["status"] == "succeeded", done
    assert [t["status"] for t in done["trials"]] == ["succeeded"] * 3
    resumed = stack.http().get(f"/jobs/{first['id']}").json()
    assert resumed["attempts"] == 2
    assert [e["epoch"] for e in resumed["history"]] == [1, 2, 3, 4]
    rmse = [t["value"] for t in done["trials"]]
    assert done["best"]["value"] == min(rmse)


def test_a_reinforcement_learning_study_optimises_the_evaluation_return(
    embedded_stack: Stack,
) -> None:
    stack = embedded_stack
    study = post_study(
        stack,
        {
            "base": {
                "model": {"kind": "q_learning", "env": "GridWorld"},
                "training": {"total_steps": 2000, "eval_interval": 250, "eval_episodes": 3},
            },
            "space": {"model.alpha": {"type": "float", "low": 0.05, "high": 0.9}},
            "metric": "eval_return_mean",
            "n_trials": 4,
            "parallelism": 2,
            "sampler": {"name": "random", "seed": 2},
            "pruner": {"name": "median", "startup_trials": 2},
        },
    )
    assert study["direction"] == "maximize"
    done = wait_for_study(stack, study["id"])
    assert done["status"] == "succeeded", done
    for trial in done["trials"]:
        job = stack.http().get(f"/jobs/{trial['job_id']}").json()
        assert job["spec"]["model"]["alpha"] == trial["params"]["model.alpha"]
        assert trial["epochs_reported"] == len(job["history"])  # one per evaluation
        if job["status"] == "succeeded":
            assert trial["value"] == job["metrics"]["evaluation"]["return_mean"]
        else:
            assert job["status"] == "pruned" and trial["value"] is None
    assert done["best"]["value"] == max(
        t["value"] for t in done["trials"] if t["value"] is not None
    )


def test_a_retried_post_with_the_same_idempotency_key_starts_one_study(
    embedded_stack: Stack,
) -> None:
    stack = embedded_stack
    dataset = upload_frame(stack.http(), iris_frame())
    body = {
        "base": job_spec(dataset),
        "space": {"optimizer.lr": {"type": "float", "low": 1e-3, "high": 1e-1, "log": True}},
        "n_trials": 2,
        "pruner": {"name": "none"},
    }
    headers = {"Idempotency-Key": "study-retry-1"}
    first = stack.http().post("/studies", json=body, headers=headers)
    again = stack.http().post("/studies", json=body, headers=headers)
    assert first.status_code == again.status_code == 202, (first.text, again.text)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    studies = stack.http().get("/studies", params={"limit": 500}).json()["items"]
    assert [s["id"] for s in studies].count(first.json()["id"]) == 1
    other = stack.http().post("/studies", json={**body, "n_trials": 3}, headers=headers)
    assert other.status_code == 422 and "different request" in other.text
    assert wait_for_study(stack, first.json()["id"])["status"] == "succeeded"
