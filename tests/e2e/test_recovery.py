"""A worker killed mid-job: the job is taken over once its lease expires and resumes from
its last checkpoint, ending with one model and no duplicated epochs."""

from __future__ import annotations

import signal
import time

from tests.e2e.helpers import diabetes_frame, job_spec, start_long_job, upload_frame, wait_until
from tests.stack import Stack


def test_killed_worker_job_resumes_from_its_checkpoint(stack: Stack) -> None:
    job_id = start_long_job(stack, seed=5)
    job = wait_until(stack, job_id, lambda job: len(job["checkpoints"]) >= 2)
    stack.kill_worker()
    survived = {c["epoch"]: c["created_at"] for c in job["checkpoints"]}
    stack.start_worker()

    job = stack.wait_for_job(job_id, timeout=240)
    assert job["status"] == "succeeded", (job["error"], stack.log("worker"))
    assert job["attempts"] == 2
    epochs = [entry["epoch"] for entry in job["history"]]
    assert epochs == list(range(1, 13))
    # The checkpoints from before the kill were kept, not rewritten: it resumed.
    kept = {c["epoch"]: c["created_at"] for c in job["checkpoints"] if c["epoch"] in survived}
    assert kept == survived
    assert [c["epoch"] for c in job["checkpoints"]] == list(range(1, 13))
    models = stack.http().get("/models", params={"limit": 500}).json()["items"]
    assert [m["id"] for m in models if m["job_id"] == job_id] == [job["model_id"]]


def test_a_damaged_message_does_not_stop_the_embedded_worker(embedded_stack: Stack) -> None:
    stack = embedded_stack
    queue = stack.data_dir / "broker" / "queue"
    # An empty message file: what a reader saw of kombu's own non-atomic writes.
    (queue / "0_damaged.celery.msg").write_bytes(b"")
    time.sleep(1)  # several polls of the worker
    assert stack.processes["worker"].poll() is None, stack.log("worker")
    dataset_id = upload_frame(stack.http(), diabetes_frame())
    spec = job_spec(dataset_id, task="regression", target="target")
    job = stack.wait_for_job(stack.http().post("/jobs", json=spec).json()["id"], timeout=60)
    assert job["status"] == "succeeded", (job["error"], stack.log("worker"))
    assert (queue / ".rejected" / "0_damaged.celery.msg").exists()
    assert "set aside undecodable message 0_damaged.celery.msg" in stack.log("worker")


def test_a_stalled_worker_that_wakes_after_a_takeover_writes_nothing(stack: Stack) -> None:
    """SIGSTOP the worker mid-job (a long GC pause, a frozen VM), let a second worker take
    the job over once the lease lapses, then wake the first: it finds its lease gone and
    stops without writing, and the job ends with one model and each epoch once."""
    job_id = start_long_job(stack, seed=6)
    wait_until(stack, job_id, lambda job: len(job["checkpoints"]) >= 2)
    deadline = time.monotonic() + 120
    stalled = stack.processes["worker"]
    stalled.send_signal(signal.SIGSTOP)
    try:
        stack.start_worker()  # takes the job once the 3 s lease has lapsed
        while stack.http().get(f"/jobs/{job_id}").json()["attempts"] < 2:
            assert time.monotonic() < deadline + 60, stack.log("worker")
            time.sleep(0.1)
        stalled.send_signal(signal.SIGCONT)
        job = stack.wait_for_job(job_id, timeout=240)
    finally:
        stalled.send_signal(signal.SIGCONT)
        stalled.kill()  # the stack's worker is the new one from here on
        stalled.wait()
    assert job["status"] == "succeeded", (job["error"], stack.log("worker"))
    assert job["attempts"] == 2
    assert [entry["epoch"] for entry in job["history"]] == list(range(1, 13))
    assert [c["epoch"] for c in job["checkpoints"]] == list(range(1, 13))
    models = stack.http().get("/models", params={"limit": 500}).json()["items"]
    assert [m["id"] for m in models if m["job_id"] == job_id] == [job["model_id"]]
    log = stack.log("worker")  # the heartbeat or a write noticed it first
    assert "lease lost to another worker" in log or "another worker owns it now" in log


def test_a_killed_job_resumes_from_its_time_based_checkpoint(stack: Stack) -> None:
    """Checkpoints by time only (every second or so here, not every epoch, and inside an
    epoch when one runs past the second): SIGKILL after one, and the job resumes from it,
    keeping the epochs before it as they were and training the ones after it (the rest of
    its epoch, for one written inside) once more, so no epoch is in the history twice."""
    big = diabetes_frame().sample(n=6000, replace=True, random_state=21)
    spec = job_spec(
        upload_frame(stack.http(), big),
        task="regression",
        target="target",
        model={"kind": "mlp", "hidden_layers": [64, 64]},
        training={
            "epochs": 40,
            "batch_size": 8,
            "seed": 21,
            "checkpoint_every": None,
            "checkpoint_seconds": 1.0,
            "keep_checkpoints": None,
        },
    )
    job_id = stack.http().post("/jobs", json=spec).json()["id"]
    job = wait_until(
        stack,
        job_id,
        lambda j: bool(j["checkpoints"]) and j["progress"]["epoch"] > j["checkpoints"][-1]["epoch"],
    )
    stack.kill_worker()
    latest = job["checkpoints"][-1]
    resumed_from = latest["epoch"]
    kept = resumed_from - 1 if "batch" in latest["metrics"] else resumed_from
    before = {e["epoch"]: e for e in job["history"] if e["epoch"] <= kept}
    stack.start_worker()

    job = stack.wait_for_job(job_id, timeout=240)
    assert job["status"] == "succeeded", (job["error"], stack.log("worker"))
    assert job["attempts"] == 2
    assert [e["epoch"] for e in job["history"]] == list(range(1, 41))
    assert {e["epoch"]: e for e in job["history"] if e["epoch"] <= kept} == before
    epochs = [c["epoch"] for c in job["checkpoints"]]
    assert resumed_from in epochs and epochs[-1] == 40
    assert len(epochs) < 40  # by time, not every epoch


def test_a_worker_shutting_down_hands_its_job_on_from_where_it_stopped(stack: Stack) -> None:
    """SIGTERM (a deploy, Ctrl-C) mid-epoch: the worker stops the job at its next check,
    checkpoints the batch it reached, puts the job back in the queue without spending an
    attempt, and exits at once. The next worker goes on from that batch (the epoch's own
    checkpoint then replaces the mid-epoch one, files included), and the job ends exactly
    as the same spec run without a stop."""
    big = diabetes_frame().sample(n=6000, replace=True, random_state=31)
    spec = job_spec(
        upload_frame(stack.http(), big),
        task="regression",
        target="target",
        model={"kind": "mlp", "hidden_layers": [64, 64], "dropout": 0.1},
        training={"epochs": 4, "batch_size": 8, "seed": 31, "checkpoint_every": 1},
    )
    job_id = stack.http().post("/jobs", json=spec).json()["id"]
    wait_until(stack, job_id, lambda j: (j["progress"] or {}).get("epoch", 0) >= 2)
    assert stack.stop_worker() < 10, stack.log("worker")

    job = stack.http().get(f"/jobs/{job_id}").json()
    assert job["status"] == "queued" and job["attempts"] == 0, stack.log("worker")
    checkpoint = job["checkpoints"][-1]
    assert checkpoint["epoch"] == len(job["history"]) + 1 >= 2
    assert (
        0 < checkpoint["metrics"]["batch"] < checkpoint["metrics"]["batches"] == 600
    )  # 80 % to train
    assert "released (worker shutting down)" in stack.log("worker")

    stack.start_worker()
    job = stack.wait_for_job(job_id, timeout=240)
    assert job["status"] == "succeeded", (job["error"], stack.log("worker"))
    assert job["attempts"] == 1
    assert [e["epoch"] for e in job["history"]] == [1, 2, 3, 4]
    assert not any("batch" in c["metrics"] for c in job["checkpoints"])
    folder = stack.data_dir / "artifacts" / "jobs" / job_id
    assert len(list(folder.glob("epoch-*"))) == 2 * len(job["checkpoints"])  # + sidecars

    again = stack.wait_for_job(stack.http().post("/jobs", json=spec).json()["id"])
    assert again["status"] == "succeeded", again["error"]
    assert job["metrics"] == again["metrics"]
    assert [e["val_loss"] for e in job["history"]] == [e["val_loss"] for e in again["history"]]
