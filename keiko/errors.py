"""The client's errors, importable without the client (which pulls PyTorch): the command
line catches them to print one line and exit non-zero."""

from __future__ import annotations

from typing import Any


class KeikoError(Exception):
    """Anything the client cannot do; `str()` is one line naming the problem."""


class APIError(KeikoError):
    """The API answered with an error: its status and `detail`."""

    def __init__(self, status_code: int, detail: Any) -> None:
        super().__init__(f"{one_line(detail)} (HTTP {status_code})")
        self.status_code = status_code
        self.detail = detail


class Unreachable(KeikoError):
    """No answer from the API's address."""


class ConfigError(KeikoError):
    """The config file cannot be read; the message names the file and why."""


class InputFileError(KeikoError):
    """A local file cannot be used; the message names the file and why."""


def one_line(detail: Any) -> str:
    """A message, or FastAPI's list of field errors as `training.epochs: must be > 0; ...`."""
    if isinstance(detail, list):
        parts = []
        for error in detail:
            if isinstance(error, dict):
                where = ".".join(str(p) for p in error.get("loc", []) if p != "body")
                message = str(error.get("msg", ""))
                parts.append(f"{where}: {message}" if where else message)
            else:
                parts.append(str(error))
        return "; ".join(parts)
    return " ".join(str(detail).split())
