"""What every command shares: the API's address and key from the command line, the
client (imported on first use: it pulls the API's models and PyTorch), and output: tables
for people, JSON for scripts, notes on stderr."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console

if TYPE_CHECKING:
    from pydantic import BaseModel
    from rich.table import Table

    from keiko.client import Keiko

T = TypeVar("T", bound="BaseModel | dict[str, Any]")

out = Console()
notes = Console(stderr=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON (for scripts), not tables.")]
Limit = Annotated[int, typer.Option(min=1, max=500, help="At most this many.")]
Offset = Annotated[int, typer.Option(min=0, help="Skip this many (newest first).")]


@dataclass
class Connection:
    url: str | None = None
    key: str | None = None


connection = Connection()


def client() -> Keiko:
    from keiko.client import Keiko

    return Keiko(connection.url, connection.key)


def note(text: str) -> None:
    """A message for the person at the terminal, on stderr, never wrapped."""
    notes.print(text, highlight=False, markup=False, soft_wrap=True)


def emit(value: BaseModel | dict[str, Any]) -> None:
    """JSON on stdout, unwrapped and uncoloured."""
    data = value if isinstance(value, dict) else value.model_dump(mode="json")
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


def present(value: T, as_json: bool, tables: Callable[[T], Table | list[Table]]) -> None:
    """`value` as JSON for a script, else as a person reads it."""
    if as_json:
        emit(value)
        return
    drawn = tables(value)
    for table in drawn if isinstance(drawn, list) else [drawn]:
        show(table)


def show(table: Table) -> None:
    """A table in the terminal's width (its ids are never cut), or at its natural width
    into a pipe or a file, where nothing would wrap it."""
    from rich.measure import Measurement

    if out.is_terminal:
        out.print(table)
    else:
        natural = Measurement.get(out, out.options.update_width(10_000), table).maximum
        Console(width=max(out.width, natural)).print(table)
