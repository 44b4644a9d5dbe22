"""Benchmark: Keiko's `POST /predict` (and the Open Inference Protocol's infer) against a
bare FastAPI endpoint serving the same network, from the same client, in one run.

    .venv/bin/python bench/predict_serving.py [--requests 1000] [--seconds 8]
        [--clients 1 8 32] [--kind mlp|cnn]

The network is the issue's MNIST MLP (784-256-128-10; `--kind cnn`: a small MNIST CNN),
trained for one epoch through a real embedded deployment (API + worker) on 28x28 8-bit
images, so Keiko serves it as it serves any model: the key checked, the model looked up
and owned, the rate limit counted, the stored preprocessing applied. The bare endpoint is
what a user writes in ten lines: the same weights and the same input encoding (scaling and
standardising with the stored statistics) in memory, a `def` route taking the same JSON
body (one raw 28x28 image), the forward pass and a softmax. Each request carries one
image. Sequential: p50/p99 of `--requests` calls to each endpoint from one client, taking
the three in turn call by call. Concurrent: `--clients`
clients (asyncio and aiohttp, one process: httpx's own cost per call hid the servers'
at 32 clients) for `--seconds` seconds each: requests per second and p50/p99.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import multiprocessing
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
from pydantic import BaseModel

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.e2e.helpers import job_spec, upload
from tests.stack import SHIPPED_TIMINGS, free_port, started_deployment

CNN = [
    {"type": "conv", "out_channels": 16, "kernel_size": 3, "padding": 1},
    {"type": "relu"},
    {"type": "max_pool", "kernel_size": 2},
    {"type": "conv", "out_channels": 32, "kernel_size": 3, "padding": 1},
    {"type": "relu"},
    {"type": "max_pool", "kernel_size": 2},
]


class Body(BaseModel):
    """The bare endpoint's body: Keiko's `POST /predict` body."""

    model_id: str
    inputs: list[Any]


def bare_server(port: int, bundle: str, ready: Any) -> None:
    """The ten-line endpoint, with the weights and statistics of Keiko's trained model."""
    import torch
    import uvicorn
    from fastapi import FastAPI

    from models.bundle import load_bundle
    from models.registry import get_kind

    predictor: Any = load_bundle(Path(bundle), expected_sha256=None, kinds=get_kind)
    network, encoder = predictor.network.eval(), predictor.encoder
    app = FastAPI()

    @app.post("/predict")
    def predict(body: Body) -> dict[str, Any]:
        x = torch.from_numpy(encoder.encode(body.inputs))  # the same scaling and statistics
        with torch.inference_mode():
            probabilities = torch.softmax(network(x).double(), dim=-1)
        return {
            "predictions": probabilities.argmax(dim=-1).tolist(),
            "probabilities": probabilities.tolist(),
        }

    ready.set()
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


async def sequential(
    targets: list[tuple[str, dict[str, Any]]], headers: dict[str, str], n: int
) -> list[list[float]]:
    """`n` calls to each of `targets` from one client, the targets taken in turn call by
    call (a slower moment of this shared machine falls on all of them alike), their order
    rotated every round (none always follows the same one)."""
    async with aiohttp.ClientSession(headers=headers) as client:

        async def call(url: str, body: dict[str, Any]) -> float:
            started = time.perf_counter()
            async with client.post(url, json=body) as response:
                await response.read()
            elapsed = time.perf_counter() - started
            assert response.status == 200, (url, (await response.text())[:300])
            return elapsed

        for _ in range(20):  # warm up
            for url, body in targets:
                await call(url, body)
        times: list[list[float]] = [[] for _ in targets]
        for round_ in range(n):
            for i in range(len(targets)):
                which = (round_ + i) % len(targets)
                times[which].append(await call(*targets[which]))
    return times


async def concurrent(
    url: str, body: dict[str, Any], headers: dict[str, str], clients: int, seconds: float
) -> tuple[float, list[float]]:
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(headers=headers, connector=connector) as client:
        times: list[float] = []
        stop = time.perf_counter() + seconds

        async def one() -> None:
            while time.perf_counter() < stop:
                started = time.perf_counter()
                async with client.post(url, json=body) as response:
                    await response.read()
                times.append(time.perf_counter() - started)
                assert response.status == 200

        await asyncio.gather(*(one() for _ in range(clients)))
        return len(times) / seconds, times


def pct(times: list[float], q: float) -> float:
    return statistics.quantiles(times, n=100)[int(q) - 1] * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--kind", choices=["mlp", "cnn"], default="mlp")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (2000, 28, 28), dtype=np.uint8)
    y = rng.integers(0, 10, 2000)
    buffer = io.BytesIO()
    np.savez(buffer, x=x, y=y)
    image = x[0].tolist()
    with (
        tempfile.TemporaryDirectory() as folder,
        started_deployment(
            "embedded",
            Path(folder),
            **SHIPPED_TIMINGS,
            KEIKO_RATE_LIMIT_PREDICT="10000000/minute",
        ) as stack,
    ):
        dataset = upload(stack.http(), buffer.getvalue(), "images.npz").json()["id"]
        model = (
            {"kind": "mlp", "hidden_layers": [256, 128]}
            if args.kind == "mlp"
            else {"kind": "cnn", "layers": CNN, "head": [64]}
        )
        spec = job_spec(dataset, target=None, model=model, training={"epochs": 1})
        job = stack.wait_for_job(stack.http().post("/jobs", json=spec).json()["id"], timeout=600)
        assert job["status"] == "succeeded", job["error"]
        model_id = job["model_id"]
        record = stack.http().get(f"/models/{model_id}").json()
        bundle = next(Path(folder).glob(f"artifacts/models/{model_id}/*.safetensors"))
        headers = {"Authorization": stack.http().headers["Authorization"]}

        port = free_port()
        ready = multiprocessing.Event()
        bare = multiprocessing.Process(target=bare_server, args=(port, str(bundle), ready))
        bare.start()
        ready.wait(60)
        time.sleep(1.5)
        body = {"model_id": model_id, "inputs": [image]}
        keiko, plain = f"{stack.base_url}/predict", f"http://127.0.0.1:{port}/predict"
        infer = f"{stack.base_url}/v2/models/{model_id}/infer"
        [given] = stack.http().get(f"/v2/models/{model_id}").json()["inputs"]
        tensor = {"name": "input", "datatype": given["datatype"], "shape": [1, 28, 28]}
        infer_body = {"inputs": [{**tensor, "data": x[0].reshape(-1).tolist()}]}
        try:
            print(f"machine: {platform.machine()}, {os.cpu_count()} cores; {args.kind} "
                  f"({record['kind']}), one 28x28 image per request")  # fmt: skip
            # Call by call, the three in turn, so that a slower moment of this shared
            # machine falls on all of them alike.
            targets = {
                "bare FastAPI": (plain, body),
                "Keiko /predict": (keiko, body),
                "Keiko OIP infer": (infer, infer_body),
            }
            times = asyncio.run(sequential(list(targets.values()), headers, args.requests))
            samples = dict(zip(targets, times, strict=True))
            rows = [
                (name, statistics.median(times) * 1000, pct(times, 99))
                for name, times in samples.items()
            ]
            print("\nsequential (one client)        p50 ms    p99 ms")
            for name, p50, p99 in rows:
                print(f"  {name:<26} {p50:8.2f}  {p99:8.2f}")
            print(f"  Keiko /predict / bare p50: {rows[1][1] / rows[0][1]:.2f}; "
                  f"OIP / predict p50: {rows[2][1] / rows[1][1]:.2f}")  # fmt: skip
            print("\nconcurrent                  clients    req/s    p50 ms    p99 ms")
            for clients in args.clients:
                for name, url in (("bare FastAPI", plain), ("Keiko /predict", keiko)):
                    rate, times = asyncio.run(concurrent(url, body, headers, clients, args.seconds))
                    print(f"  {name:<26} {clients:7d} {rate:8.0f}  {pct(times, 50):8.2f}  "
                          f"{pct(times, 99):8.2f}")  # fmt: skip
        finally:
            bare.terminate()
            bare.join()


if __name__ == "__main__":
    main()
