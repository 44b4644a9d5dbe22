"""The caps of a job over HTTP with a real worker: a time limit that passes fails the job,
and a network or a time limit beyond the service's caps is refused at submission."""

from __future__ import annotations

from tests.e2e.helpers import iris_frame, job_spec, upload_frame
from tests.stack import Stack


def test_a_job_past_its_time_limit_fails(stack: Stack) -> None:
    dataset_id = upload_frame(stack.http(), iris_frame())
    # Ten thousand epochs take far longer than the second the job may run.
    training = {"epochs": 10_000, "batch_size": 8, "time_limit_seconds": 1}
    response = stack.http().post("/jobs", json=job_spec(dataset_id, training=training))
    assert response.status_code == 202, response.text
    job = stack.wait_for_job(response.json()["id"], timeout=60)
    assert job["status"] == "failed", (job, stack.log("worker"))
    assert job["error"]["type"] == "TimeLimitExceeded"
    message = job["error"]["message"]
    assert message.startswith("time limit: the job's 1 s ran out") and "of 10000" in message
    assert len(job["history"]) < 10_000 and job["model_id"] is None


def test_caps_beyond_the_service_are_refused(stack: Stack) -> None:
    dataset_id = upload_frame(stack.http(), iris_frame())
    big = job_spec(dataset_id, model={"kind": "mlp", "hidden_layers": [8192, 8192]})
    response = stack.http().post("/jobs", json=big)
    assert response.status_code == 422, response.text
    count = (4 + 1) * 8192 + (8192 + 1) * 8192 + (8192 + 1) * 3  # iris: 4 inputs, 3 classes
    detail = response.json()["detail"]
    assert f"{count:,} parameters" in detail and "50,000,000" in detail

    deep_q = {"model": {"kind": "dqn", "env": "CartPole-v1", "hidden_layers": [8192, 8192]}}
    response = stack.http().post("/jobs", json=deep_q)
    assert response.status_code == 422 and "KEIKO_MAX_PARAMETERS" in response.text

    patient = job_spec(dataset_id, training={"time_limit_seconds": 100_000})
    response = stack.http().post("/jobs", json=patient)
    assert response.status_code == 422, response.text
    assert "100000" in response.text and "86400" in response.text
