"""Benchmark of the machine, not of Keiko: how long writing 1 GB into the page cache takes
when the memory it lands on was freed a moment ago, and when it was freed a few seconds
earlier.

On a virtual machine whose kernel reports free memory to its hypervisor (Linux's
`page_reporting`, as Firecracker and cloud VMs with free page reporting or a balloon do),
memory freed for a while is handed back to the host, and touching it again costs a fault
in the host for each block. An upload written to disk just after a gigabyte was freed (the
previous upload's file deleted, a process ended) then takes longer to receive, whatever
the service does. This script measures the effect in isolation, so that the upload
benchmark's slow receives (BENCHMARKS.md) can be told apart from Keiko's own costs.

    .venv/bin/python bench/memory_reuse.py [--gigabytes 1.0] [--pause 3] [--rounds 4]

Each round writes a file, deletes it (freeing its page cache), waits 0 s or `--pause` s,
then times the next write of the same size: the 0 s pause is the baseline, in the same
script. Where the kernel exposes its reporting counter, the megabytes it reported during
the pause are printed beside.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import machine

REPORTED = Path("/sys/module/page_reporting/parameters/reported_kib")
BLOCK = os.urandom(1 << 16)


def reported_mib() -> float | None:
    try:
        return int(REPORTED.read_text()) / 1024
    except (OSError, ValueError):
        return None


def write(path: Path, size: int) -> float:
    started = time.perf_counter()
    with path.open("wb") as out:
        for _ in range(size // len(BLOCK)):
            out.write(BLOCK)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gigabytes", type=float, default=1.0)
    parser.add_argument("--pause", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    if args.pause <= 0:
        parser.error("--pause must be positive: a pause of 0 s is the baseline")
    size = int(args.gigabytes * 1e9)
    print(f"machine: {machine.describe()}")
    print(f"free page reporting: {'yes' if reported_mib() is not None else 'not exposed'}")
    print(f"\n{'pause':>7} {'reported meanwhile':>19} {'next write':>11}")
    seconds: dict[float, list[float]] = {0.0: [], args.pause: []}
    with tempfile.TemporaryDirectory(dir=os.environ.get("KEIKO_BENCH_TMP")) as tmp:
        freed, timed = Path(tmp) / "freed", Path(tmp) / "timed"
        for _ in range(args.rounds):
            for pause in seconds:
                write(freed, size)
                freed.unlink()  # its page cache goes back to the free lists
                before = reported_mib()
                time.sleep(pause)
                after = reported_mib()
                took = write(timed, size)
                timed.unlink()
                seconds[pause].append(took)
                meanwhile = "" if before is None or after is None else f"{after - before:.0f} MiB"
                print(f"{pause:6.1f}s {meanwhile:>19} {took:10.2f}s")
    fresh, idle = (statistics.median(seconds[p]) for p in seconds)
    print(
        f"\nmedian write: {fresh:.2f} s onto memory freed at once, {idle:.2f} s onto memory "
        f"freed {args.pause:.0f} s earlier ({idle / fresh:.1f} x)"
    )


if __name__ == "__main__":
    main()
