"""GET /jobs/{id}/events through HTTP, read with httpx-sse (a client we did not write), on
the embedded defaults and on PostgreSQL + Redis: order, resume with Last-Event-ID, the end
of the stream, live progress, isolation, and streams that hold no database connection."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpx_sse import ServerSentEvent, connect_sse

from tests.e2e.helpers import iris_frame, job_spec, start_long_job, upload_frame, wait_until
from tests.stack import Stack, postgres_redis_stack

TERMINAL = ("succeeded", "failed", "cancelled")


def read_events(
    client: httpx.Client,
    job_id: str,
    *,
    last_event_id: str | None = None,
    stop_after: int = 0,
    into: list[ServerSentEvent] | None = None,
) -> list[ServerSentEvent]:
    """Every event until the server ends the stream (or the first `stop_after`), appended
    to `into` as they arrive."""
    headers = {"Last-Event-ID": last_event_id} if last_event_id is not None else {}
    seen: list[ServerSentEvent] = [] if into is None else into
    with connect_sse(
        client, "GET", f"/jobs/{job_id}/events", headers=headers, timeout=120
    ) as source:
        assert source.response.status_code == 200, source.response.read()
        assert source.response.headers["content-type"].startswith("text/event-stream")
        for sse in source.iter_sse():
            seen.append(sse)
            if stop_after and len(seen) >= stop_after:
                break
    return seen


def logged(events: list[ServerSentEvent]) -> list[ServerSentEvent]:
    """The events kept in the job's log (progress events are not)."""
    return [e for e in events if e.event != "progress"]


def finished_job(stack: Stack, epochs: int = 6) -> dict[str, Any]:
    dataset_id = upload_frame(stack.http(), iris_frame())
    training = {"epochs": epochs, "batch_size": 16, "seed": 0, "checkpoint_every": 2,
                "keep_best_checkpoint": False}  # fmt: skip
    spec = job_spec(dataset_id, training=training)
    job = stack.http().post("/jobs", json=spec).json()
    return stack.wait_for_job(job["id"])


def test_a_finished_jobs_stream_replays_it_in_order_and_ends(stack: Stack) -> None:
    job = finished_job(stack)
    events = read_events(stack.http(), job["id"])
    kept = logged(events)
    assert [int(e.id) for e in kept] == list(range(1, len(kept) + 1))  # gap-free, in order
    data = [e.json() for e in kept]
    statuses = [d["status"] for e, d in zip(kept, data, strict=True) if e.event == "status"]
    assert statuses == ["queued", "running", "succeeded"]
    assert kept[-1].event == "status"  # the stream ended after the final status
    final = data[-1]
    assert final["model_id"] == job["model_id"] and final["metrics"] == job["metrics"]
    epochs = [d for e, d in zip(kept, data, strict=True) if e.event == "epoch"]
    assert epochs == job["history"]  # exactly the history GET /jobs/{id} shows
    checkpoints = [d for e, d in zip(kept, data, strict=True) if e.event == "checkpoint"]
    assert [c["epoch"] for c in checkpoints] == [2, 4, 6]  # checkpoint_every 2
    # Retention (the latest 2) removed the first, and the event of the third said so.
    assert [c["removed"] for c in checkpoints] == [[], [], [2]]
    still = checkpoints[1:]
    assert [c["epoch"] for c in still] == [c["epoch"] for c in job["checkpoints"]] == [4, 6]
    assert [c["sha256"] for c in still] == [c["sha256"] for c in job["checkpoints"]]
    # Each checkpoint comes after its epoch's entry.
    order = [(e.event, e.json()["epoch"]) for e in kept if e.event in ("epoch", "checkpoint")]
    assert order.index(("checkpoint", 2)) == order.index(("epoch", 2)) + 1
    # The list's headline number is the final test accuracy.
    listed = {j["id"]: j for j in stack.http().get("/jobs", params={"limit": 500}).json()["items"]}
    test_accuracy = job["metrics"]["test"]["accuracy"]
    assert listed[job["id"]]["main_metric"] == {"name": "test_accuracy", "value": test_accuracy}
    # /history says where the stream stood, to follow on from there.
    page = stack.http().get(f"/jobs/{job['id']}/history").json()
    assert page["items"] == job["history"] and page["last_event_id"] == kept[-1].id


def test_last_event_id_resumes_without_loss_or_repeat(stack: Stack) -> None:
    job = finished_job(stack)
    everything = logged(read_events(stack.http(), job["id"]))
    first = read_events(stack.http(), job["id"], stop_after=4)  # then the client drops
    rest = read_events(stack.http(), job["id"], last_event_id=first[-1].id)
    assert [e.id for e in first + rest] == [e.id for e in everything]
    assert [e.data for e in first + rest] == [e.data for e in everything]
    # Resuming after the last event: nothing more, and the stream still ends.
    assert read_events(stack.http(), job["id"], last_event_id=everything[-1].id) == []


def test_a_running_job_streams_live_and_ends_when_cancelled(stack: Stack) -> None:
    job_id = start_long_job(stack, seed=11, epochs=40)
    events: list[ServerSentEvent] = []
    reader = threading.Thread(
        target=lambda: read_events(stack.http(), job_id, into=events), daemon=True
    )
    reader.start()
    # Live: the stream shows epochs and in-epoch progress while the job is still running.
    wait_until(stack, job_id, lambda j: j["progress"]["epoch"] >= 2)
    deadline = time.monotonic() + 30
    while not any(e.event == "progress" for e in events) and time.monotonic() < deadline:
        time.sleep(0.1)
    seen_while_running = list(events)
    assert stack.http().get(f"/jobs/{job_id}").json()["status"] == "running"
    assert any(e.event == "epoch" for e in seen_while_running), seen_while_running
    progress = [e for e in seen_while_running if e.event == "progress"]
    assert progress, "no progress event within an epoch"
    for event in progress:
        where = event.json()
        assert 0 < where["batch"] <= where["batches"] and 0 <= where["fraction"] <= 1
        assert event.id.partition(".")[0].isdigit()
    # The list shows where the epoch is and the latest validation RMSE.
    deadline = time.monotonic() + 30
    while True:
        listed = stack.http().get("/jobs", params={"status": "running"}).json()["items"]
        mine = next(j for j in listed if j["id"] == job_id)
        if mine["progress"]["batch"] is not None or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert 0 < mine["progress"]["batch"] <= mine["progress"]["batches"]
    assert mine["progress"]["epoch"] < mine["progress"]["fraction"] * 40 < 40
    assert mine["main_metric"]["name"] == "val_rmse" and mine["main_metric"]["value"] > 0
    assert stack.http().post(f"/jobs/{job_id}/cancel").status_code == 202
    reader.join(timeout=60)
    assert not reader.is_alive(), "the stream did not end after the job was cancelled"
    statuses = [e.json() for e in events if e.event == "status"]
    assert statuses[-1]["status"] == "cancelled"
    assert any(s["status"] == "running" and s["cancel_requested"] for s in statuses)
    assert events[-1].event == "status"
    # Cancelled, with no final metrics: the list still shows the last epoch's RMSE.
    cancelled = stack.http().get(f"/jobs/{job_id}?history=last:1").json()
    assert cancelled["main_metric"] == {
        "name": "val_rmse",
        "value": cancelled["history"][-1]["val_rmse"],
    }


def test_streams_follow_the_rules_of_get_job(stack: Stack) -> None:
    job = finished_job(stack, epochs=1)
    other = stack.client_for(stack.new_user("mallory"))
    nobody = stack.client_for(None)
    try:
        assert other.get(f"/jobs/{job['id']}/events").status_code == 404
        assert nobody.get(f"/jobs/{job['id']}/events").status_code == 401
        assert stack.http().get("/jobs/no-such-job/events").status_code == 404
        bad = stack.http().get(f"/jobs/{job['id']}/events", headers={"Last-Event-ID": "x1"})
        assert bad.status_code == 400 and "Last-Event-ID" in bad.json()["detail"]
    finally:
        other.close()
        nobody.close()


@pytest.mark.parametrize("backend", ["embedded", "postgres_redis"])
def test_many_open_streams_hold_no_database_connection(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """More streams than the API's connection pool has connections (5 + 10 overflow): were
    any held while waiting, the later streams and every other request would stall."""
    stack: Stack = request.getfixturevalue(f"{backend}_stack")
    job_id = start_long_job(stack, seed=12, epochs=30)
    wait_until(stack, job_id, lambda j: j["status"] == "running")
    clients = [httpx.Client(base_url=stack.base_url, headers=stack.http().headers)
               for _ in range(40)]  # fmt: skip
    streams = []
    try:
        for client in clients:
            cm = connect_sse(client, "GET", f"/jobs/{job_id}/events", timeout=30)
            source = cm.__enter__()
            assert source.response.status_code == 200
            events = source.iter_sse()
            first = next(events)
            assert first.id == "1" and json.loads(first.data)["status"] == "queued"
            streams.append((cm, events))
        started = time.perf_counter()
        assert stack.http().get("/health").status_code == 200
        assert stack.http().get(f"/jobs/{job_id}?history=none").status_code == 200
        assert time.perf_counter() - started < 5
        # Every stream still gets the job's next epoch.
        epoch = stack.http().get(f"/jobs/{job_id}").json()["progress"]["epoch"]
        for _, events in streams:
            for sse in events:
                if sse.event == "epoch" and sse.json()["epoch"] > epoch:
                    break
    finally:
        stack.http().post(f"/jobs/{job_id}/cancel")
        for cm, _ in streams:
            cm.__exit__(None, None, None)
        for client in clients:
            client.close()


def test_a_stream_resumes_across_an_api_restart(tmp_path: Path) -> None:
    """SQL is the truth: the API dies mid-job, the client reconnects with Last-Event-ID to
    the new process and ends with every event exactly once."""
    with postgres_redis_stack("events-restart", tmp_path) as stack:
        job_id = start_long_job(stack, seed=13, epochs=8)
        first = read_events(stack.http(), job_id, stop_after=5)
        stack.restart_api()
        rest = read_events(stack.http(), job_id, last_event_id=first[-1].id)
        kept = logged(first + rest)
        assert [int(e.id) for e in kept] == list(range(1, len(kept) + 1))
        assert kept[-1].json()["status"] == "succeeded"
        job = stack.http().get(f"/jobs/{job_id}").json()
        assert [e.json() for e in kept if e.event == "epoch"] == job["history"]
