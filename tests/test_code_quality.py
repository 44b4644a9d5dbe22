"""ruff (lint and format), mypy and the import contracts (lint-imports, configured in
pyproject.toml) over the packages: the same checks as `./keiko.sh lint`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from service.cli import ROOT

CHECKS = {
    "ruff check": [
        sys.executable, "-m", "ruff", "check", "service", "workers", "models", "keiko", "tests",
    ],
    "ruff format": [
        sys.executable, "-m", "ruff", "format", "--check", "service", "workers", "models",
        "keiko", "tests",
    ],
    "mypy": [sys.executable, "-m", "mypy", "service", "workers", "models", "keiko"],
    # [tool.importlinter] in pyproject.toml: which package may import which.
    "import contracts": [
        str(Path(sys.executable).parent / "lint-imports"), "--no-cache", "--no-logo",
    ],
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_code_quality(name: str) -> None:
    result = subprocess.run(CHECKS[name], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
