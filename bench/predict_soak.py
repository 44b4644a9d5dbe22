"""Soak: many predictions through the batcher from many clients; does the API's memory stay
put, and does every call get exactly its own answer?

    .venv/bin/python bench/predict_soak.py [--calls 100000] [--clients 32]

One embedded deployment serves a regression MLP (scikit-learn's diabetes table). Every
call carries one of 400 distinct rows whose answers were first taken one call at a time;
each answer must match its own row's (to float rounding: a batched pass may sum in
another order) and every call must be answered once. The API process's resident memory
(VmRSS) is read after a warm-up of 2,000 calls and at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.e2e.helpers import diabetes_frame, job_spec, upload_frame
from tests.stack import SHIPPED_TIMINGS, started_deployment

errors: list[str] = []  # transport errors of the last soak


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


async def soak(
    url: str, headers: dict[str, str], model_id: str, rows: list[dict], expected: list[float],
    calls: int, clients: int,
) -> tuple[int, int]:  # fmt: skip
    """(answered correctly, wrong or failed) over `calls` calls from `clients` clients."""
    limits = httpx.Limits(max_connections=clients + 4)
    good = bad = 0
    counter = iter(range(calls))
    errors.clear()

    async def one(client: httpx.AsyncClient) -> None:
        nonlocal good, bad
        for i in counter:
            k = i % len(rows)
            try:
                answer = await client.post(url, json={"model_id": model_id, "inputs": [rows[k]]})
            except httpx.TransportError as exc:  # counted, not fatal: the soak goes on
                errors.append(f"{type(exc).__name__}: {exc}")
                bad += 1
                continue
            value = answer.json()["predictions"][0] if answer.status_code == 200 else None
            if value is not None and abs(value - expected[k]) <= 1e-6 * max(1, abs(value)):
                good += 1
            else:
                bad += 1

    async with httpx.AsyncClient(headers=headers, timeout=120, limits=limits) as client:
        await asyncio.gather(*(one(client) for _ in range(clients)))
    return good, bad


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=32)
    args = parser.parse_args()
    frame = diabetes_frame()
    rows = frame.drop(columns=["target"]).head(400).to_dict(orient="records")
    with (
        tempfile.TemporaryDirectory() as folder,
        started_deployment(
            "embedded", Path(folder), **SHIPPED_TIMINGS,
            KEIKO_RATE_LIMIT_PREDICT="100000000/minute",
        ) as stack,
    ):  # fmt: skip
        spec = job_spec(
            upload_frame(stack.http(), frame),
            task="regression",
            target="target",
            model={"kind": "mlp", "hidden_layers": [64, 64]},
        )
        job = stack.wait_for_job(stack.http().post("/jobs", json=spec).json()["id"])
        assert job["status"] == "succeeded", job["error"]
        model_id = job["model_id"]
        url = f"{stack.base_url}/predict"
        expected = [
            stack.http()
            .post(url, json={"model_id": model_id, "inputs": [r]})
            .json()["predictions"][0]
            for r in rows
        ]
        headers = {"Authorization": stack.http().headers["Authorization"]}
        pid = stack.processes["api"].pid
        asyncio.run(soak(url, headers, model_id, rows, expected, 2000, args.clients))
        before = rss_mb(pid)
        started = time.perf_counter()
        good, bad = asyncio.run(
            soak(url, headers, model_id, rows, expected, args.calls, args.clients)
        )
        seconds = time.perf_counter() - started
        after = rss_mb(pid)
        metrics = httpx.get(f"{stack.base_url}/metrics").text
        batches = [
            line for line in metrics.splitlines()
            if line.startswith(("keiko_predict_batch_calls_count", "keiko_predict_batch_calls_sum"))
        ]  # fmt: skip
        print(f"machine: {platform.machine()}, {os.cpu_count()} cores")
        print(f"{args.calls} calls from {args.clients} clients in {seconds:.0f} s "
              f"({args.calls / seconds:.0f} req/s)")  # fmt: skip
        print(f"answered with their own row's value: {good}; wrong, lost or failed: {bad}")
        print(f"API resident memory: {before:.1f} MB after warm-up, {after:.1f} MB at the end "
              f"({after - before:+.1f} MB)")  # fmt: skip
        print("batcher:", "; ".join(batches))
        if errors:
            print(f"transport errors: {len(errors)}, e.g. {errors[:3]}")
        print("API alive at the end:", stack.processes["api"].poll() is None)


if __name__ == "__main__":
    main()
