"""`keiko train --follow` and `keiko jobs watch` in a real terminal (a pseudo-terminal
driven by pexpect), against an embedded deployment with authentication off: the bar
advances while the job runs and the final metrics table follows; Ctrl-C asks whether to
cancel, and either leaves the job running (exit 130) or cancels it (exit 2)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest

from tests.e2e.cli_helpers import KEIKO, cli_env
from tests.e2e.helpers import csv_bytes, diabetes_frame
from tests.stack import ROOT, Stack, stack_env

# What one frame of the bar shows: `42% epoch 5/12 batch 300/750 ETA 0:00:08 loss ...`,
# with colour codes (no spaces) between the parts.
FRAME = re.compile(r"(\d+)%\S* epoch (\d+)/(\d+)")


@pytest.fixture(scope="module")
def open_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    data_dir = tmp_path_factory.mktemp("cli-open")
    stack = Stack("cli-open", data_dir, stack_env(data_dir, KEIKO_AUTH="false"))
    try:
        yield stack.start()
    finally:
        stack.stop()


def long_spec(tmp_path: Path, epochs: int) -> list[str]:
    """`train` arguments for a regression MLP of about a second an epoch here."""
    big = diabetes_frame().sample(n=6000, replace=True, random_state=0)
    (tmp_path / "big.csv").write_bytes(csv_bytes(big))
    spec = (
        '{"task": "regression", "target": "target", '
        '"model": {"kind": "mlp", "hidden_layers": [64, 64]}, '
        f'"training": {{"epochs": {epochs}, "batch_size": 8, "seed": 0}}}}'
    )
    (tmp_path / "spec.json").write_text(spec)
    return ["train", str(tmp_path / "spec.json"), "--dataset", str(tmp_path / "big.csv")]


def terminal(env: dict[str, str], *args: str) -> pexpect.spawn:
    """The command in a 40x160 pseudo-terminal of its own, as a person would run it."""
    env = {**env, "TERM": "xterm-256color"}
    env.pop("NO_COLOR", None)
    return pexpect.spawn(KEIKO, list(args), env=env, cwd=str(ROOT), encoding="utf-8",
                         timeout=120, dimensions=(40, 160))  # fmt: skip


def job_of(child: pexpect.spawn) -> str:
    child.expect(r"job ([0-9a-f]{32}) queued")
    return str(child.match.group(1))


def test_the_bar_advances_while_the_job_runs(open_stack: Stack, tmp_path: Path) -> None:
    stack = open_stack
    env = cli_env(stack, tmp_path / "config")
    assert "KEIKO_API_KEY" not in env  # authentication is off: no key needed
    child = terminal(env, *long_spec(tmp_path, epochs=12), "--follow")
    job_id = job_of(child)
    frames: list[tuple[int, float, str]] = []  # (percent, epoch, the job's status then)
    while True:
        seen = child.expect([FRAME, "final metrics"])
        if seen == 1:
            break
        percent, epoch = int(child.match.group(1)), int(child.match.group(2))
        assert child.match.group(3) == "12"
        status = stack.http().get(f"/jobs/{job_id}?history=none").json()["status"]
        frames.append((percent, epoch, status))
    child.expect(r"rmse")
    child.expect(f"job {job_id} succeeded: model [0-9a-f]{{32}}")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    while_running = [(p, e) for p, e, status in frames if status == "running" and p < 100]
    percents = [p for p, _ in while_running]
    assert len(set(percents)) >= 5, frames  # it moved, several times, before the end
    assert percents == sorted(percents), frames  # and only forwards
    assert len({e for _, e in while_running}) >= 3, frames  # through the epochs
    assert frames[-1][0] == 100


def test_ctrl_c_leaves_the_job_running_or_cancels_it(open_stack: Stack, tmp_path: Path) -> None:
    stack = open_stack
    env = cli_env(stack, tmp_path / "config")
    child = terminal(env, *long_spec(tmp_path, epochs=60), "--follow")
    job_id = job_of(child)
    child.expect(r"epoch \d+/60 batch")  # drawing, mid-epoch
    child.sendintr()
    child.expect(r"cancel the job\? \[y/N\]")
    child.sendline("n")
    child.expect(f"job {job_id} is still running; follow it again with: "
                 f"keiko jobs watch {job_id}")  # fmt: skip
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 130
    time.sleep(1)  # a cancel would be seen within a poll (0.2 s here)
    job = stack.http().get(f"/jobs/{job_id}?history=none").json()
    assert job["status"] == "running", job

    watcher = terminal(env, "jobs", "watch", job_id)
    watcher.expect(r"epoch \d+/60 batch")
    watcher.sendintr()
    watcher.expect(r"cancel the job\? \[y/N\]")
    watcher.sendline("y")
    watcher.expect(f"job {job_id} cancelled")
    watcher.expect(pexpect.EOF)
    watcher.close()
    assert watcher.exitstatus == 2
    assert stack.http().get(f"/jobs/{job_id}?history=none").json()["status"] == "cancelled"


def test_no_terminal_means_a_line_per_epoch(open_stack: Stack, tmp_path: Path) -> None:
    """The same command with its output piped: plain lines, no bar, no escape codes."""
    env = cli_env(open_stack, tmp_path / "config")
    child = pexpect.spawn(
        "/bin/sh", ["-c", f"{KEIKO} {' '.join(long_spec(tmp_path, epochs=3))} --follow 2>&1 | cat"],
        env={**env, "TERM": "xterm-256color"}, cwd=str(ROOT), encoding="utf-8", timeout=120,
    )  # fmt: skip
    output = child.read()
    child.close()
    assert child.exitstatus == 0, output
    assert "\x1b[" not in output and "%" not in output
    assert re.findall(r"epoch (\d+)/3  loss", output) == ["1", "2", "3"]
    assert "final metrics" in output
