"""A worker killed mid-job: the job is taken over once its lease expires and resumes from
its last checkpoint, ending with one model and no duplicated epochs."""

from __future__ import annotations

import time

from tests.e2e.helpers import diabetes_frame, job_spec, upload_frame
from tests.stack import Stack


def test_killed_worker_job_resumes_from_its_checkpoint(stack: Stack) -> None:
    big = diabetes_frame().sample(n=6000, replace=True, random_state=1)
    dataset_id = upload_frame(stack.http(), big)
    spec = job_spec(
        dataset_id,
        task="regression",
        target="target",
        model={"kind": "mlp", "hidden_layers": [64, 64]},
        training={"epochs": 12, "batch_size": 8, "checkpoint_every": 1, "seed": 5},
    )
    job_id = stack.http().post("/jobs", json=spec).json()["id"]
    deadline = time.monotonic() + 120
    while True:
        job = stack.http().get(f"/jobs/{job_id}").json()
        if len(job["checkpoints"]) >= 2:
            break
        assert job["status"] in ("queued", "running"), job
        assert time.monotonic() < deadline, stack.log("worker")
        time.sleep(0.05)
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
