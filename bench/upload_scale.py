"""Benchmark: uploading a 1 GB CSV, on the local artifact store and on S3-compatible object
storage on this machine, through HTTP to a real API process. Two S3 servers: moto's (the
tests' store, a Python server keeping objects in memory) and s3rver (a Node.js server
keeping them on disk, installed from npm into bench/s3rver on first use).

For each backend: the API process's resident memory before and during the upload (its
growth must stay under 100 MB: the upload streams to disk and is described batch by batch),
`GET /health` answered throughout (every 100 ms; each within 50 ms), and the upload's
throughput (bytes / seconds until the 201). All backends run on the same PostgreSQL and
Redis, in one script, so the S3 throughput is compared with the local one on the same
machine in the same minutes.

    .venv/bin/python bench/upload_scale.py [--gigabytes 1.0] [--rounds 2]
        [--backends local s3 s3rver] [--pin] [--warm 2.0]

Before each upload the script touches and frees twice the CSV's size of memory
(`--warm`), so that on a VM handing free memory back to its host every backend's upload
lands on recently touched memory, whatever the previous deployment freed
(`touch_and_free`).
"""

from __future__ import annotations

import argparse
import mmap
import multiprocessing
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import machine
from tests.stack import Stack, free_port, object_store_stack, postgres_redis_stack

COLUMNS = 21  # as the 480 MB file of the issue: 2.5 million rows, 21 columns
BACKENDS = ("local", "s3", "s3rver")  # s3: moto's server


def make_csv(path: Path, target_bytes: int) -> int:
    """A CSV of about `target_bytes`: 15 float, 3 integer and 3 text columns (and the
    float target `y`), written in chunks; returns its row count."""
    rng = np.random.default_rng(0)
    cities = np.array(["Kyoto", "Osaka", "Nara", "Kobe", "Otsu", "Wakayama"])
    rows = 0
    options = pa_csv.WriteOptions(include_header=True)
    with pa_csv.CSVWriter(str(path), _schema(), write_options=options) as writer:
        while path.stat().st_size < target_bytes:
            n = 200_000
            columns: dict[str, pa.Array] = {}
            for i in range(14):
                columns[f"f{i}"] = pa.array(rng.normal(size=n).round(6))
            for i in range(3):
                columns[f"n{i}"] = pa.array(rng.integers(0, 10_000, n))
            for i in range(3):
                columns[f"c{i}"] = pa.array(rng.choice(cities, n))
            columns["y"] = pa.array(rng.normal(size=n).round(6))
            writer.write_table(pa.table(columns, schema=_schema()))
            rows += n
    return rows


def _schema() -> pa.Schema:
    fields = [pa.field(f"f{i}", pa.float64()) for i in range(14)]
    fields += [pa.field(f"n{i}", pa.int64()) for i in range(3)]
    fields += [pa.field(f"c{i}", pa.string()) for i in range(3)]
    fields.append(pa.field("y", pa.float64()))
    assert len(fields) == COLUMNS
    return pa.schema(fields)


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def cpu_times(pid: int) -> tuple[float, float]:
    """The process's user and system CPU seconds so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def cpu_seconds(pid: int) -> float:
    """The process's user + system CPU time so far."""
    return sum(cpu_times(pid))


def probe_health(base_url: str, ready: Any, stop: Any, out: Any) -> None:
    """In its own process, so that the bench's own upload (Python streaming a gigabyte)
    never delays a probe: only the API's answer is timed."""
    times: list[float] = []
    failures = 0
    with httpx.Client(base_url=base_url, timeout=10) as client:
        while not stop.is_set():
            started = time.perf_counter()
            answered = client.get("/health")
            times.append((time.perf_counter() - started) * 1000)
            failures += answered.status_code != 200
            ready.set()
            time.sleep(0.1)
    out.put((times, failures))


@dataclass
class Watch:
    """Samples the API's memory and CPU times every 50 ms (a thread) and times /health
    every 100 ms (a process of its own)."""

    stack: Stack
    rss: list[int] = field(default_factory=list)
    cpu: list[tuple[float, float, float]] = field(default_factory=list)  # when, user, system
    health_ms: list[float] = field(default_factory=list)
    failures: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> Watch:
        pid = self.stack.processes["api"].pid
        self._thread = threading.Thread(target=self._memory, args=(pid,), daemon=True)
        self._thread.start()
        context = multiprocessing.get_context("spawn")
        ready, self._probe_stop, self._out = context.Event(), context.Event(), context.Queue()
        self._probe = context.Process(
            target=probe_health, args=(self.stack.base_url, ready, self._probe_stop, self._out)
        )
        self._probe.start()
        if not ready.wait(60):
            raise RuntimeError("the /health probe did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._probe_stop.set()
        self.health_ms, self.failures = self._out.get(timeout=60)
        self._probe.join()
        self._thread.join()

    def _memory(self, pid: int) -> None:
        while not self._stop.is_set():
            self.rss.append(rss_bytes(pid))
            self.cpu.append((time.perf_counter(), *cpu_times(pid)))
            time.sleep(0.05)

    def cpu_between(self, start: float, end: float) -> tuple[float, float]:
        """The API's user and system CPU seconds from the last sample at or before `start`
        to the first at or after `end` (50 ms more at most on each side)."""
        first = max((s for s in self.cpu if s[0] <= start), key=lambda s: s[0])
        last = min((s for s in self.cpu if s[0] >= end), key=lambda s: s[0])
        return last[1] - first[1], last[2] - first[2]


S3RVER = Path(__file__).resolve().parent / "s3rver"


@contextmanager
def s3rver(folder: Path) -> Iterator[tuple[dict[str, str], int]]:
    """s3rver on a free loopback port, its objects under `folder`, one bucket; yields the
    settings and boto3 environment that point Keiko at it, and the server's process id."""
    binary = S3RVER / "node_modules" / ".bin" / "s3rver"
    if not binary.exists():
        npm = shutil.which("npm")
        if npm is None:
            raise SystemExit("the s3rver backend needs Node.js and npm")
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=S3RVER, check=True)
    port = free_port()
    folder.mkdir(parents=True)
    server = subprocess.Popen(
        [str(binary), "-d", str(folder), "-a", "127.0.0.1", "-p", str(port),
         "--configure-bucket", "keiko-bench", "--silent"],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("s3rver did not start") from None
                time.sleep(0.1)
        env = {
            "KEIKO_ARTIFACT_URL": "s3://keiko-bench/keiko",
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
            "AWS_ACCESS_KEY_ID": "S3RVER",  # its default credentials
            "AWS_SECRET_ACCESS_KEY": "S3RVER",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        yield env, server.pid
    finally:
        server.terminate()
        server.wait(timeout=30)


@contextmanager
def deployment(backend: str, folder: Path) -> Iterator[tuple[Stack, int | None]]:
    """The API (no worker: an upload needs none, and one starting, importing torch, would
    take a core from whichever upload it overlapped) and the store's process id."""
    limit = {"KEIKO_MAX_UPLOAD_BYTES": str(4 << 30)}
    if backend == "s3rver":
        with (
            s3rver(folder / "s3rver") as (store, pid),
            postgres_redis_stack(backend, folder, worker=False, **limit, **store) as stack,
        ):
            yield stack, pid
        return
    if backend == "s3":
        with object_store_stack(backend, folder, worker=False, **limit) as stack:
            assert stack.s3 is not None
            yield stack, stack.s3.process.pid
        return
    with postgres_redis_stack(backend, folder, worker=False, **limit) as stack:
        yield stack, None


def pin(pid: int, cpus: set[int]) -> None:
    """Every thread of process `pid` (and those it starts later) on `cpus`."""
    for task in os.listdir(f"/proc/{pid}/task"):
        os.sched_setaffinity(int(task), cpus)


def touch_and_free(size: int) -> None:
    """Touch `size` bytes of fresh memory, then free them.

    On a VM that hands free memory back to its host (Firecracker, cloud VMs with free page
    reporting), the first touch of a page the host took back is likely to cost a fault in
    the host. An upload's page cache lands on what the kernel freed last, so what the
    previous deployment freed (moto's process holds the last object; an API alone, little)
    decided which uploads wrote onto such pages: the kernel's copy into the page cache then
    took several times the CPU (BENCHMARKS.md). Freed just before each upload, the same
    amount of recently touched memory waits for every backend."""
    with mmap.mmap(-1, size) as block:
        for offset in range(0, size, mmap.PAGESIZE):
            block[offset] = 1


def run(backend: str, csv: Path, folder: Path, pinned: bool, warm_bytes: int) -> dict[str, float]:
    size = csv.stat().st_size
    with deployment(backend, folder) as (stack, store_pid):
        if pinned:
            # The API on one core, the store and this client on the other: as if the store
            # ran on a machine of its own, and the API had the same one core either way.
            pin(stack.processes["api"].pid, {0})
            for other in (os.getpid(), store_pid):
                if other is not None:
                    pin(other, {1})
        time.sleep(2)  # the API settles (its start-up heap freeze, first requests)
        # What the last upload (or the CSV's writing) left to the disk is written now, not
        # during this upload: it would slow whichever backend came next.
        os.sync()
        stack.http().get("/health")
        api = stack.processes["api"].pid
        before = rss_bytes(api)
        cpu_before = cpu_seconds(api)
        with Watch(stack) as watch, csv.open("rb") as body:
            touch_and_free(warm_bytes)
            started = time.perf_counter()
            answer = httpx.post(
                f"{stack.base_url}/datasets",
                files={"file": (csv.name, body, "text/csv")},
                headers=stack.http().headers,
                timeout=3600,
            )
            seconds = time.perf_counter() - started
        api_cpu = cpu_seconds(api) - cpu_before  # the API's own work, whatever the store's
        assert answer.status_code == 201, answer.text
        described = answer.json()
        # The API's own account: seconds receiving the body, describing the file, and until
        # it was stored.
        timed = re.search(
            r"received in ([\d.]+) s, described in ([\d.]+) s, stored in ([\d.]+) s",
            stack.log("api"),
        )
        assert timed is not None, "the API logged no timing for the upload"
        # Where a slow receive goes: the API's own CPU (user: parsing, hashing; system: the
        # kernel taking the bytes in and into the page cache) while it received.
        receive_user, receive_system = watch.cpu_between(started, started + float(timed[1]))
        return {
            "receive_user_s": receive_user,
            "receive_system_s": receive_system,
            "received_s": float(timed[1]),
            "described_s": float(timed[2]),
            "stored_s": float(timed[3]),
            "api_cpu_s": api_cpu,
            "seconds": seconds,
            "mb_per_s": size / seconds / 1e6,
            "rss_before_mb": before / 1e6,
            "rss_growth_mb": (max(watch.rss) - before) / 1e6,
            "health_max_ms": max(watch.health_ms),
            "health_p50_ms": statistics.median(watch.health_ms),
            "health_calls": len(watch.health_ms),
            "health_failures": watch.failures,
            "rows": described["num_rows"],
        }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gigabytes", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS),
        help="local: the folder; s3: moto's S3 server; s3rver: s3rver",
    )  # fmt: skip
    parser.add_argument(
        "--pin", action="store_true",
        help="the API on CPU 0, the store and the client on CPU 1 (two cores or more)",
    )  # fmt: skip
    parser.add_argument(
        "--warm", type=float, default=2.0, metavar="TIMES",
        help="before each upload, touch and free TIMES the CSV's size of memory (0: not)",
    )  # fmt: skip
    args = parser.parse_args()
    if args.pin and len(os.sched_getaffinity(0)) < 2:
        raise SystemExit("--pin needs two CPUs")
    with tempfile.TemporaryDirectory(dir=os.environ.get("KEIKO_BENCH_TMP")) as tmp:
        csv = Path(tmp) / "big.csv"
        started = time.perf_counter()
        rows = make_csv(csv, int(args.gigabytes * 1e9))
        size = csv.stat().st_size
        print(f"machine: {machine.describe()}")
        print(f"CSV: {size / 1e9:.2f} GB, {rows:,} rows x {COLUMNS} columns "
              f"(written in {time.perf_counter() - started:.0f} s)")  # fmt: skip
        # In rounds, the two in turn, so that a slower minute of this shared machine (its
        # disk flushing the last gigabyte) falls on both alike.
        results: dict[str, list[dict[str, float]]] = {b: [] for b in args.backends}
        for round_ in range(args.rounds):
            for backend in results:
                folder = Path(tmp) / f"{backend}-{round_}"
                found = run(backend, csv, folder, args.pin, int(args.warm * size))
                assert found["rows"] == rows
                results[backend].append(found)
        print(
            "\n(receive: until the body was on the API's disk; then the description, beside "
            "which the file is stored, and the storing's end; other: the rest of the request "
            "(SQL, the answer); API CPU: the CPU seconds the API process spent, whatever the "
            "store's; user+sys: the API's CPU seconds while it received)"
        )
        print(
            "\nbackend    seconds  receive (user+sys) describe  stored   other  API CPU   MB/s"
            "   API RSS before   growth   /health p50   max   calls"
        )
        for backend, runs in results.items():
            for r in runs:
                # The API logs tenths of seconds: a rest under 0.05 s may come out negative.
                other = max(0.0, r["seconds"] - r["received_s"] - r["stored_s"])
                print(f"  {backend:<7} {r['seconds']:8.1f} {r['received_s']:8.1f} "
                      f"({r['receive_user_s']:.1f}+{r['receive_system_s']:.1f}) "
                      f"{r['described_s']:8.1f} {r['stored_s']:7.1f} {other:7.1f} "
                      f"{r['api_cpu_s']:8.1f} "
                      f"{r['mb_per_s']:6.1f} "
                      f"{r['rss_before_mb']:12.0f} MB {r['rss_growth_mb']:7.1f} MB "
                      f"{r['health_p50_ms']:8.1f} ms {r['health_max_ms']:6.1f} ms "
                      f"{r['health_calls']:5d}" + (f" ({r['health_failures']} failed)"
                                                    if r["health_failures"] else ""))  # fmt: skip
        if "local" not in results:
            return
        medians = {b: statistics.median(r["mb_per_s"] for r in runs) for b, runs in results.items()}
        for backend in [b for b in results if b != "local"]:
            ratios = [
                s3["mb_per_s"] / local["mb_per_s"]
                for local, s3 in zip(results["local"], results[backend], strict=True)
            ]
            print(f"\n{backend} / local throughput by round: "
                  f"{', '.join(f'{r:.2f}' for r in ratios)}; "
                  f"of the medians: {medians[backend] / medians['local']:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
