"""Prometheus metrics for `GET /metrics` (prometheus-client).

Three sources:

- counted as they happen, in each API process: HTTP requests (`RequestMetrics`, a pure
  ASGI middleware labelling by route template, never by raw path) and predictions
  (`record_prediction`);
- read from SQL at scrape time (`JobCollector`): jobs by status, queued jobs per queue,
  running jobs and the latest lease renewal per worker, and the training throughput of the
  running jobs, from the progress their workers already record;
- this process's view of the GPU (`GpuCollector`), nothing on a CPU-only machine.

Several API processes (`uvicorn --workers N`) share their counts through prometheus-client's
multiprocess mode: set `PROMETHEUS_MULTIPROC_DIR` to an empty folder before they start, and
every scrape, whichever process answers it, sums every process's files. Without it (one
process) nothing needs setting up.

With `KEIKO_METRICS_AUTH` off (the default) the scrape is open, so no label names a user's
object: no job, model, dataset or user id or name, only aggregates. With it on, `/metrics`
takes the admin key and predictions are also counted per model.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import repository
from service.db import get_sessionmaker
from service.settings import get_settings

log = logging.getLogger("keiko")

disable_created_metrics()  # no `_created` twin of every counter and histogram

MULTIPROC_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None
if MULTIPROC_DIR is not None:
    os.makedirs(MULTIPROC_DIR, exist_ok=True)  # each process's counts are files in it

# Seconds: a small network's predict is well under a millisecond, an event stream minutes.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

# The instruments below live in this registry. One process: it is what a scrape reads,
# with the process, platform and garbage-collector collectors. Several: each scrape reads
# every process's files instead (`MultiProcessCollector`), and this registry is never read.
REGISTRY = CollectorRegistry(auto_describe=True)

HTTP_REQUESTS = Counter(
    "keiko_http_requests",
    "HTTP requests answered, by method, route template and status code.",
    ("method", "route", "status"),
    registry=REGISTRY,
)
HTTP_DURATION = Histogram(
    "keiko_http_request_duration_seconds",
    "Seconds from a request's arrival to the end of its answer, by method and route template.",
    ("method", "route"),
    buckets=BUCKETS,
    registry=REGISTRY,
)

PREDICT_BATCH_CALLS = Histogram(
    "keiko_predict_batch_calls",
    "Predict calls that shared one forward pass (dynamic batching; 1: a call ran alone).",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
    registry=REGISTRY,
)
PREDICT_BATCH_ROWS = Histogram(
    "keiko_predict_batch_rows",
    "Rows in one forward pass of a served model.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096),
    registry=REGISTRY,
)


PREDICT_LOOKUPS = Counter(
    "keiko_predict_lookups",
    "Key and model lookups of predict calls, by where they were answered: `memory` (this "
    "process's cache, no query) or `database`.",
    ("source",),
    registry=REGISTRY,
)


def record_lookup(source: str) -> None:
    PREDICT_LOOKUPS.labels(source=source).inc()


def record_batch(calls: int, rows: int) -> None:
    """One forward pass of the predict batcher (service.batching)."""
    PREDICT_BATCH_CALLS.observe(calls)
    PREDICT_BATCH_ROWS.observe(rows)


UNMATCHED = "unmatched"  # no route: 404s for unknown paths, 405s
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
EXCLUDED_PREFIXES = ("/metrics", "/ui/")  # the scrape itself; the web app's static files


class RequestMetrics:
    """Pure ASGI middleware: counts each HTTP request by method, route template and status,
    and observes its duration. The template (`/jobs/{job_id}`) is the route FastAPI matched,
    read from the scope after the app answered, so ids never become labels. Per request it
    costs two clock reads, one wrapped `send` and two dictionary-cached metric updates."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(EXCLUDED_PREFIXES):
            await self.app(scope, receive, send)
            return
        status = 500  # what the client gets when the app raises before answering

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_status)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path_format", None) or UNMATCHED
            key = (scope["method"], template, status)
            children = self._children.get(key)
            if children is None:
                children = self._children.setdefault(key, _children(*key))
            children[0].inc()
            children[1].observe(elapsed)


def _children(method: str, route: str, status: int) -> tuple[Any, Any]:
    method = method if method in METHODS else "other"
    return (
        HTTP_REQUESTS.labels(method, route, str(status)),
        HTTP_DURATION.labels(method, route),
    )


# Predictions -------------------------------------------------------------------------------


class _Predictions:
    def __init__(self, per_model: bool, registry: CollectorRegistry | None = REGISTRY) -> None:
        labels = ("model",) if per_model else ()
        self.per_model = per_model
        self.calls = Counter(
            "keiko_predictions",
            "Predict calls answered with predictions (POST /predict, /predict/files, OIP infer).",
            labels,
            registry=registry,
        )
        self.rows = Counter(
            "keiko_predicted_rows",
            "Inputs predicted (rows, sequences, images or observations).",
            labels,
            registry=registry,
        )
        self.seconds = Histogram(
            "keiko_predict_duration_seconds",
            "Seconds the model took to predict one call (encoding the inputs and the "
            "network), without the HTTP request around it.",
            labels,
            buckets=BUCKETS,
            registry=registry,
        )


@lru_cache
def _predictions() -> _Predictions:
    # Per model only behind the admin key: an open scrape must not name users' models.
    return _Predictions(per_model=get_settings().metrics_auth)


def record_prediction(model_id: str, rows: int, seconds: float) -> None:
    """One predict call that answered `rows` predictions in `seconds`."""
    metrics = _predictions()
    if metrics.per_model:
        metrics.calls.labels(model_id).inc()
        metrics.rows.labels(model_id).inc(rows)
        metrics.seconds.labels(model_id).observe(seconds)
    else:
        metrics.calls.inc()
        metrics.rows.inc(rows)
        metrics.seconds.observe(seconds)


# Read at scrape time -------------------------------------------------------------------------

STATUSES = ("queued", "running", "succeeded", "failed", "cancelled", "pruned")


def _gauge(name: str, documentation: str, labels: Iterable[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, labels=list(labels))


class JobCollector(Collector):
    """Jobs of every user, in aggregate, from two queries per scrape (see
    `service.repository.monitoring`)."""

    def describe(self) -> Iterable[Metric]:
        return []  # no query when the collector is registered

    def collect(self) -> Iterator[Metric]:
        up = _gauge("keiko_database_up", "1 when the scrape could read the jobs from SQL.")
        try:
            with get_sessionmaker()() as session:
                counts = repository.job_counts(session)
                running = repository.running_jobs(session)
        except Exception as exc:
            log.warning("metrics: cannot read the jobs: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from self._counts(counts)
        yield from self._running(running, datetime.now(UTC))

    def _counts(self, counts: list[tuple[str, str, int]]) -> Iterator[Metric]:
        settings = get_settings()
        by_status = dict.fromkeys(STATUSES, 0)
        queued = {settings.cpu_queue: 0, settings.gpu_queue: 0}
        for status, queue, count in counts:
            by_status[status] = by_status.get(status, 0) + count
            if status == "queued":
                queued[queue] = queued.get(queue, 0) + count
        jobs = _gauge("keiko_jobs", "Jobs of every user by status.", ["status"])
        for status, count in by_status.items():
            jobs.add_metric([status], count)
        yield jobs
        waiting = _gauge("keiko_jobs_queued", "Queued jobs by Celery queue.", ["queue"])
        for queue, count in queued.items():
            waiting.add_metric([queue], count)
        yield waiting

    def _running(self, running: list[repository.RunningJob], now: datetime) -> Iterator[Metric]:
        lease = timedelta(seconds=get_settings().job_lease_seconds)
        per_worker: dict[str, int] = {}
        renewed: dict[str, datetime] = {}
        expired = 0
        epochs: dict[str, float] = {}
        steps: dict[str, float] = {}
        for job in running:
            worker = job.worker or UNMATCHED
            per_worker[worker] = per_worker.get(worker, 0) + 1
            if job.lease_expires_at is None:
                continue
            # The heartbeat sets the lease to (renewal time + KEIKO_JOB_LEASE_SECONDS).
            renewal = job.lease_expires_at - lease
            if worker not in renewed or renewal > renewed[worker]:
                renewed[worker] = renewal
            if job.lease_expires_at < now:
                expired += 1
                continue  # its worker is gone: it trains nothing
            latest = (job.progress or {}).get("latest") or {}
            rate = latest.get("steps_per_second")
            if isinstance(rate, int | float):
                steps[job.kind] = steps.get(job.kind, 0.0) + float(rate)
            elif isinstance(seconds := latest.get("seconds"), int | float) and seconds > 0:
                epochs[job.kind] = epochs.get(job.kind, 0.0) + 1.0 / float(seconds)

        jobs = _gauge(
            "keiko_worker_running_jobs", "Running jobs per worker (host:pid).", ["worker"]
        )
        for worker, count in sorted(per_worker.items()):
            jobs.add_metric([worker], count)
        yield jobs
        stamp = _gauge(
            "keiko_worker_last_heartbeat_timestamp_seconds",
            "Unix time of the latest lease renewal of any running job of the worker.",
            ["worker"],
        )
        age = _gauge(
            "keiko_worker_heartbeat_age_seconds",
            "Seconds since that renewal: up to a third of KEIKO_JOB_LEASE_SECONDS while the "
            "worker lives; past the lease its jobs are taken over.",
            ["worker"],
        )
        for worker, renewal in sorted(renewed.items()):
            stamp.add_metric([worker], renewal.timestamp())
            age.add_metric([worker], max((now - renewal).total_seconds(), 0.0))
        yield stamp
        yield age
        lapsed = _gauge(
            "keiko_jobs_lease_expired",
            "Running jobs whose lease ran out (their worker died); the API re-sends them.",
        )
        lapsed.add_metric([], expired)
        yield lapsed
        per_epoch = _gauge(
            "keiko_training_epochs_per_second",
            "Epochs per second of the running supervised jobs, summed by model kind (from "
            "each job's latest epoch time).",
            ["kind"],
        )
        for kind, rate in sorted(epochs.items()):
            per_epoch.add_metric([kind], rate)
        yield per_epoch
        per_step = _gauge(
            "keiko_training_rl_steps_per_second",
            "Environment steps per second of the running reinforcement-learning jobs, summed "
            "by model kind (from each job's latest evaluation interval).",
            ["kind"],
        )
        for kind, rate in sorted(steps.items()):
            per_step.add_metric([kind], rate)
        yield per_step


class GpuCollector(Collector):
    """Memory of each GPU this API process sees (nothing on a CPU-only machine). Never
    creates a CUDA context: the device-wide figures need the process to have one already
    (a model served on the GPU); the allocator's are 0 until then."""

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        torch = sys.modules.get("torch")
        if torch is None or not torch.cuda.is_available():
            return
        allocated = _gauge(
            "keiko_gpu_memory_allocated_bytes",
            "GPU memory held by tensors of the API process that answered the scrape.",
            ["device"],
        )
        reserved = _gauge(
            "keiko_gpu_memory_reserved_bytes",
            "GPU memory reserved by the caching allocator of that API process.",
            ["device"],
        )
        used = _gauge(
            "keiko_gpu_memory_used_bytes",
            "GPU memory in use on the device by every process (the workers' too).",
            ["device"],
        )
        total = _gauge("keiko_gpu_memory_total_bytes", "GPU memory of the device.", ["device"])
        initialized = torch.cuda.is_initialized()
        for index in range(torch.cuda.device_count()):
            device = f"cuda:{index}"
            allocated.add_metric([device], torch.cuda.memory_allocated(index))
            reserved.add_metric([device], torch.cuda.memory_reserved(index))
            if initialized:
                free, size = torch.cuda.mem_get_info(index)
                used.add_metric([device], size - free)
                total.add_metric([device], size)
        yield from (allocated, reserved)
        if initialized:
            yield from (used, total)


JOBS = JobCollector()
GPU = GpuCollector()

if MULTIPROC_DIR is None:
    for collector in (JOBS, GPU, PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        REGISTRY.register(collector)


def render() -> bytes:
    """The text exposition of every metric, as a scrape gets it."""
    _predictions()  # the prediction counters appear, at 0, before the first prediction
    if MULTIPROC_DIR is None:
        return generate_latest(REGISTRY)
    registry = CollectorRegistry(auto_describe=True)
    MultiProcessCollector(registry, MULTIPROC_DIR)
    registry.register(JOBS)
    registry.register(GPU)
    return generate_latest(registry)
