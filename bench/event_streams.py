"""Benchmark: does an API with hundreds of open event streams still answer quickly?

    .venv/bin/python bench/event_streams.py [--streams 200] [--requests 300]
        [--deployment postgres_redis|embedded|both]

One real deployment (API + worker) with a job training (its events flowing: epochs,
checkpoints, progress twice a second) and a finished job of 50 epochs. The latency of
`GET /health` and of `GET /jobs/{id}` of the finished job (with `?history=none`, what the
web app asks for, and whole: a fixed size, so the runs compare) is measured from one
client, sequentially: with no stream open (the baseline, before and after), then with
`--streams` streams of the training job open in another process that reads every event.
Prints p50/p95/p99 per endpoint and the ratio of the p50 to the baselines' p50.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.e2e.helpers import diabetes_frame, job_spec, upload_frame, wait_until
from tests.stack import DEPLOYMENTS, SHIPPED_TIMINGS, Stack, started_deployment

ENDPOINTS = ("/health", "/jobs/{id}?history=none", "/jobs/{id}")


def hold_streams(base_url: str, headers: dict[str, str], job_id: str, count: int,
                 opened: multiprocessing.synchronize.Event, stop: multiprocessing.synchronize.Event,
                 received: multiprocessing.sharedctypes.Synchronized) -> None:  # fmt: skip
    """In a process of its own: `count` streams, each reading every event until `stop`."""

    async def one(client: httpx.AsyncClient, ready: list[int]) -> None:
        async with client.stream("GET", f"/jobs/{job_id}/events", timeout=None) as response:
            assert response.status_code == 200, response.status_code
            ready.append(1)
            async for line in response.aiter_lines():
                if line.startswith("id:"):
                    with received.get_lock():
                        received.value += 1

    async def main() -> None:
        limits = httpx.Limits(max_connections=count + 10)
        async with httpx.AsyncClient(base_url=base_url, headers=headers, limits=limits) as c:
            ready: list[int] = []
            tasks = [asyncio.create_task(one(c, ready)) for _ in range(count)]
            while len(ready) < count:
                await asyncio.sleep(0.05)
                for task in tasks:
                    if task.done() and task.exception():
                        raise task.exception()  # type: ignore[misc]
            opened.set()
            while not stop.is_set():
                await asyncio.sleep(0.1)
            for task in tasks:
                task.cancel()

    asyncio.run(main())


def latencies(client: httpx.Client, path: str, requests: int) -> list[float]:
    out = []
    for _ in range(requests):
        started = time.perf_counter()
        response = client.get(path)
        out.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, response.text
    return out


def describe(values: list[float]) -> str:
    q = statistics.quantiles(values, n=100)
    return f"p50 {q[49]:6.2f} ms  p95 {q[94]:6.2f} ms  p99 {q[98]:6.2f} ms"


def run(stack: Stack, streams: int, requests: int) -> None:
    client = stack.http()
    small = job_spec(upload_frame(client, diabetes_frame()), task="regression", target="target",
                     training={"epochs": 50, "batch_size": 64, "seed": 0})  # fmt: skip
    finished = stack.wait_for_job(client.post("/jobs", json=small).json()["id"])["id"]
    big = diabetes_frame().sample(n=20000, replace=True, random_state=0)
    spec = job_spec(upload_frame(client, big), task="regression", target="target",
                    model={"kind": "mlp", "hidden_layers": [64, 64]},
                    training={"epochs": 500, "batch_size": 32, "seed": 0})  # fmt: skip
    job_id = client.post("/jobs", json=spec).json()["id"]
    wait_until(stack, job_id, lambda j: j["progress"]["epoch"] >= 1)
    paths = [p.replace("{id}", finished) for p in ENDPOINTS]
    for path in paths:
        latencies(client, path, 20)  # warm up
    before = {path: latencies(client, path, requests) for path in paths}

    opened, stop = multiprocessing.Event(), multiprocessing.Event()
    received = multiprocessing.Value("l", 0)
    holder = multiprocessing.Process(
        target=hold_streams,
        args=(stack.base_url, dict(client.headers), job_id, streams, opened, stop, received),
    )
    holder.start()
    try:
        assert opened.wait(120), "the streams did not open"
        time.sleep(2)
        loaded = {path: latencies(client, path, requests) for path in paths}
        events_read = received.value
    finally:
        stop.set()
        holder.join(30)
    after = {path: latencies(client, path, requests) for path in paths}
    client.post(f"/jobs/{job_id}/cancel")
    baseline = {path: before[path] + after[path] for path in paths}
    print(f"\n{stack.name}: {streams} streams open on a training job; {requests} sequential "
          f"requests per endpoint; {events_read} events read by the streams meanwhile")  # fmt: skip
    for path, template in zip(paths, ENDPOINTS, strict=True):
        ratio = statistics.median(loaded[path]) / statistics.median(baseline[path])
        print(f"  GET {template:24s} no streams: {describe(baseline[path])}")
        print(f"  GET {template:24s} {streams} streams: {describe(loaded[path])}  "
              f"p50 ratio {ratio:.2f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--deployment", default="both",
                        choices=["postgres_redis", "embedded", "both"])  # fmt: skip
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}")
    chosen = DEPLOYMENTS if args.deployment == "both" else [args.deployment]
    for deployment in chosen:
        with (
            tempfile.TemporaryDirectory() as folder,
            started_deployment(deployment, Path(folder), **SHIPPED_TIMINGS) as stack,
        ):
            run(stack, args.streams, args.requests)


if __name__ == "__main__":
    main()
