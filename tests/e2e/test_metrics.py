"""`GET /metrics` on both deployments: scrape, train, predict, scrape again, and the counters
moved by exactly what was done; the open scrape names no user's object."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.helpers import csv_bytes, diabetes_frame, iris_frame, job_spec, upload
from tests.stack import ROOT, Stack, free_port, stack_env

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

FINISHED = ("succeeded", "failed", "cancelled")
EVENTS = "/jobs/{job_id}/events"


def scrape(stack: Stack) -> tuple[str, Samples]:
    """The open scrape (no key) as text, and every sample by name and labels."""
    with stack.client_for(None) as anonymous:
        response = anonymous.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return response.text, samples


def series(samples: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: value for (n, labels), value in samples.items() if n == name}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def delta(before: Samples, after: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    """How much each series of `name` moved (series that did not move are left out)."""
    old, new = series(before, name), series(after, name)
    moved = {labels: new[labels] - old.get(labels, 0.0) for labels in new}
    return {labels: amount for labels, amount in moved.items() if amount}


class Calls:
    """Every request the test makes between the scrapes, by (method, route template,
    status): what the request counters must have moved by."""

    def __init__(self) -> None:
        self.expected: Counter[tuple[str, str, str]] = Counter()

    def __call__(
        self, client: httpx.Client, method: str, path: str, route: str, status: int, **kw: Any
    ) -> httpx.Response:
        response = client.request(method, path, **kw)
        assert response.status_code == status, (method, path, response.text)
        self.expected[(method, route, str(status))] += 1
        return response

    def wait_for_job(
        self, client: httpx.Client, job_id: str, done: Callable[[dict[str, Any]], bool]
    ) -> dict[str, Any]:
        deadline = time.monotonic() + 180
        while True:
            job = self(client, "GET", f"/jobs/{job_id}", "/jobs/{job_id}", 200).json()
            if done(job):
                return dict(job)
            assert time.monotonic() < deadline, job
            time.sleep(0.2)


def make_user(stack: Stack, label: str) -> tuple[str, str, str]:
    """A user of this test only: (id, name, API key)."""
    name = f"{label}-{uuid.uuid4().hex[:8]}"
    with stack.admin() as admin:
        user = admin.post("/users", json={"name": name})
        assert user.status_code == 201, user.text
        key = admin.post(f"/users/{user.json()['id']}/keys", json={"name": "metrics"})
        assert key.status_code == 201, key.text
    return str(user.json()["id"]), name, str(key.json()["key"])


def wait_until_idle(stack: Stack) -> None:
    """No queued or running job of any user (jobs of earlier tests), so that the job
    gauges move only with this test's jobs."""
    deadline = time.monotonic() + 180
    while True:
        _, samples = scrape(stack)
        active = sum(value(samples, "keiko_jobs", status=s) for s in ("queued", "running"))
        if active == 0:
            return
        assert time.monotonic() < deadline, f"{active} jobs still active"
        time.sleep(0.5)


def test_metrics_count_requests_predictions_and_jobs_and_name_no_object(stack: Stack) -> None:
    alice_id, alice_name, alice_key = make_user(stack, "metrics-alice")
    bob_id, bob_name, bob_key = make_user(stack, "metrics-bob")
    alice, bob = stack.client_for(alice_key), stack.client_for(bob_key)
    wait_until_idle(stack)
    text_before, before = scrape(stack)
    call = Calls()

    # Alice trains a classifier and predicts with it: 3 calls, 5 + 1 + 10 rows.
    secret_dataset = f"secret-dataset-{uuid.uuid4().hex}"
    frame = iris_frame()
    uploaded = upload(alice, csv_bytes(frame), f"{secret_dataset}.csv", name=secret_dataset)
    assert uploaded.status_code == 201, uploaded.text
    call.expected[("POST", "/datasets", "201")] += 1
    dataset_id = uploaded.json()["id"]
    job_id = call(alice, "POST", "/jobs", "/jobs", 202, json=job_spec(dataset_id)).json()["id"]
    job = call.wait_for_job(alice, job_id, lambda j: j["status"] in FINISHED)
    assert job["status"] == "succeeded", job
    model_id = job["model_id"]
    inputs = frame.drop(columns=["species"]).to_dict(orient="records")
    for rows in (5, 1, 10):
        body = {"model_id": model_id, "inputs": inputs[:rows]}
        answer = call(alice, "POST", "/predict", "/predict", 200, json=body).json()
        assert len(answer["predictions"]) == rows
    # Refused predictions are requests, not predictions.
    call(alice, "POST", "/predict", "/predict", 404, json={"model_id": uuid.uuid4().hex,
         "inputs": inputs[:2]})  # fmt: skip
    call(alice, "POST", "/predict", "/predict", 422,
         json={"model_id": model_id, "inputs": [{"sepal_length": "long"}]})  # fmt: skip
    # A raw path with an id in it never becomes a label.
    stray = uuid.uuid4().hex
    call(alice, "GET", f"/nothing/{stray}", "unmatched", 404)
    call(alice, "GET", f"/jobs/{stray}", "/jobs/{job_id}", 404)
    # Neither the web app's static files nor the scrape itself are counted.
    assert alice.get("/ui/app.js").status_code == 200

    # Bob's long job runs: the running gauges see it (one job on one worker, a recent
    # heartbeat, a training rate), then he cancels it.
    big = diabetes_frame().sample(n=6000, replace=True, random_state=0)
    bob_data = f"bob-data-{uuid.uuid4().hex}"
    uploaded = upload(bob, csv_bytes(big), "bob.csv", name=bob_data)
    assert uploaded.status_code == 201, uploaded.text
    call.expected[("POST", "/datasets", "201")] += 1
    bob_dataset = uploaded.json()["id"]
    spec = job_spec(bob_dataset, task="regression", target="target",
                    model={"kind": "mlp", "hidden_layers": [64, 64]},
                    training={"epochs": 200, "batch_size": 8, "seed": 0})  # fmt: skip
    bob_job = call(bob, "POST", "/jobs", "/jobs", 202, json=spec).json()["id"]
    call.wait_for_job(bob, bob_job, lambda j: j["progress"]["epoch"] >= 1)
    deadline = time.monotonic() + 60
    while True:
        running_text, running = scrape(stack)
        workers = series(running, "keiko_worker_running_jobs")
        rate = value(running, "keiko_training_epochs_per_second", kind="mlp")
        if sum(workers.values()) == 1 and rate > 0:
            break
        assert time.monotonic() < deadline, running_text
        time.sleep(0.2)
    assert value(running, "keiko_jobs", status="running") == 1
    ages = series(running, "keiko_worker_heartbeat_age_seconds")
    assert len(ages) == 1 and 0 <= next(iter(ages.values())) <= 3  # the stacks' 3 s lease
    assert value(running, "keiko_jobs_lease_expired") == 0
    call(bob, "POST", f"/jobs/{bob_job}/cancel", "/jobs/{job_id}/cancel", 202)
    cancelled = call.wait_for_job(bob, bob_job, lambda j: j["status"] in FINISHED)
    assert cancelled["status"] == "cancelled", cancelled

    listed = {
        user: call(client, "GET", "/jobs", "/jobs", 200, params={"limit": 500}).json()
        for user, client in (("alice", alice), ("bob", bob))
    }
    text_after, after = scrape(stack)

    # Requests: exactly what was sent, per route template and status, and nothing else
    # (but event streams: one an earlier test left may end only now, when the server sees
    # its client gone).
    moved = {
        labels: n
        for labels, n in delta(before, after, "keiko_http_requests_total").items()
        if dict(labels)["route"] != EVENTS
    }
    expected = {
        frozenset({"method": m, "route": r, "status": s}.items()): float(n)
        for (m, r, s), n in call.expected.items()
    }
    assert moved == expected
    timed = {
        labels: n
        for labels, n in delta(before, after, "keiko_http_request_duration_seconds_count").items()
        if dict(labels)["route"] != EVENTS
    }
    per_route: Counter[frozenset[tuple[str, str]]] = Counter()
    for (method, route, _status), count in call.expected.items():
        per_route[frozenset({"method": method, "route": route}.items())] += count
    assert timed == {labels: float(n) for labels, n in per_route.items()}
    for labels, count in per_route.items():
        inf = dict(labels) | {"le": "+Inf"}
        assert (
            value(after, "keiko_http_request_duration_seconds_bucket", **inf)
            - value(before, "keiko_http_request_duration_seconds_bucket", **inf)
            == count
        )
        took = value(after, "keiko_http_request_duration_seconds_sum", **dict(labels))
        assert took > value(before, "keiko_http_request_duration_seconds_sum", **dict(labels))
    assert not any(
        dict(labels)["route"].startswith(("/ui", "/metrics"))
        for labels in series(after, "keiko_http_requests_total")
    )

    # Predictions: 3 calls, 16 rows (the refused ones are not predictions).
    assert delta(before, after, "keiko_predictions_total") == {frozenset(): 3.0}
    assert delta(before, after, "keiko_predicted_rows_total") == {frozenset(): 16.0}
    assert delta(before, after, "keiko_predict_duration_seconds_count") == {frozenset(): 3.0}
    inf_bucket = ("keiko_predict_duration_seconds_bucket", frozenset({("le", "+Inf")}))
    assert after[inf_bucket] - before.get(inf_bucket, 0.0) == 3

    # Jobs by status: what GET /jobs says of this test's users, the only ones that moved.
    statuses = Counter(j["status"] for page in listed.values() for j in page["items"])
    assert statuses == {"succeeded": 1, "cancelled": 1}
    for status in ("queued", "running", "succeeded", "failed", "cancelled"):
        moved_by = value(after, "keiko_jobs", status=status) - value(
            before, "keiko_jobs", status=status
        )
        assert moved_by == statuses.get(status, 0), status
    assert value(after, "keiko_jobs_queued", queue="celery") == 0
    assert value(after, "keiko_database_up") == 1

    # The open scrape names nothing of anyone's: no id, no name, no key, no raw path.
    secrets = [alice_id, alice_name, alice_key, bob_id, bob_name, bob_key, dataset_id,
               bob_dataset, bob_data, secret_dataset, job_id, bob_job, model_id, stray]  # fmt: skip
    for text in (text_before, running_text, text_after):
        for secret in secrets:
            assert secret not in text, secret
    alice.close()
    bob.close()


def test_several_api_processes_share_their_counts(tmp_path: Path) -> None:
    """`uvicorn --workers 2` with PROMETHEUS_MULTIPROC_DIR: whichever process answers a
    scrape, it counts the requests that every process answered."""
    folder = tmp_path / "prometheus"
    env = stack_env(tmp_path, PROMETHEUS_MULTIPROC_DIR=str(folder))
    subprocess.run([sys.executable, "-m", "service.cli", "migrate"], cwd=ROOT, env=env,
                   check=True, capture_output=True)  # fmt: skip
    port = free_port()
    log = (tmp_path / "api.log").open("wb")
    api = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "service.main:app", "--host", "127.0.0.1",
         "--port", str(port), "--workers", "2", "--no-access-log"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:  # the scrape itself is not counted, so it can tell when the API is up
            try:
                if httpx.get(f"{base}/metrics").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert api.poll() is None and time.monotonic() < deadline, tmp_path / "api.log"
            time.sleep(0.2)

        def served() -> dict[str, float]:
            """/health requests each process counted, from its own file."""
            counts = {}
            for path in folder.glob("counter_*.db"):
                for family in MultiProcessCollector.merge([str(path)]):
                    for sample in family.samples:
                        if sample.name == "keiko_http_requests_total" and (
                            sample.labels["route"] == "/health"
                        ):
                            counts[path.name] = counts.get(path.name, 0) + sample.value
            return counts

        def answering() -> int:
            return sum(1 for count in served().values() if count > 0)

        def settled(sent: int) -> float:
            """The processes' total once the last answer is counted: the middleware counts
            a request as its answer ends, a moment after the client has read it."""
            deadline = time.monotonic() + 10
            while sum(served().values()) < sent and time.monotonic() < deadline:
                time.sleep(0.05)
            return sum(served().values())

        sent = 0
        while answering() < 2 and sent < 3000:  # a new connection each: any process
            assert httpx.get(f"{base}/health").status_code == 200
            sent += 1
        assert settled(sent) == sent
        assert answering() == 2, f"one process answered all {sent} requests"
        labels = {"method": "GET", "route": "/health", "status": "200"}
        for _ in range(6):  # each scrape, from either process, sees the sum
            text = httpx.get(f"{base}/metrics").text
            samples = {
                (s.name, frozenset(s.labels.items())): s.value
                for family in text_string_to_metric_families(text)
                for s in family.samples
            }
            assert samples[("keiko_http_requests_total", frozenset(labels.items()))] == sent
            assert value(samples, "keiko_database_up") == 1
    finally:
        api.terminate()
        api.wait(timeout=30)
        log.close()
