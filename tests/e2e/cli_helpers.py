"""Running the installed `keiko` console script against a test deployment: its address and
key in the environment, a config directory of the test's own (never the user's)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.stack import ROOT, Stack

KEIKO = str(Path(sys.executable).parent / "keiko")


def stack_key(stack: Stack) -> str | None:
    """The key the stack's own client sends (None where authentication is off)."""
    header = stack.http().headers.get("Authorization")
    return header.removeprefix("Bearer ") if header else None


def cli_env(stack: Stack | None, config_home: Path, **overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEIKO_")}
    env["XDG_CONFIG_HOME"] = str(config_home)
    if stack is not None:
        env["KEIKO_URL"] = stack.base_url
        if (key := stack_key(stack)) is not None:
            env["KEIKO_API_KEY"] = key
    env.update(overrides)
    return env


def run_keiko(
    env: dict[str, str], *args: str, cwd: Path | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [KEIKO, *args], env=env, cwd=cwd or ROOT, capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip


def keiko_json(env: dict[str, str], *args: str, cwd: Path | None = None) -> Any:
    """A command's --json answer; fails the test on a non-zero exit."""
    done = run_keiko(env, *args, "--json", cwd=cwd)
    assert done.returncode == 0, (done.returncode, done.stdout, done.stderr)
    return json.loads(done.stdout)
