"""Local files the client sends: job specs (JSON or YAML), CSV rows to predict, images."""

from __future__ import annotations

import csv
import json
from os import PathLike
from pathlib import Path
from typing import Any

import yaml

from keiko.errors import InputFileError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg"})
TRUTHS = {"true": True, "false": False}


def load_spec(path: str | PathLike[str]) -> dict[str, Any]:
    """A job spec from a .json file, or YAML (a superset of JSON) from any other."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputFileError(f"{path}: {exc.strerror}") from exc
    try:
        spec = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        detail = str(exc).replace("\n", " ")
        raise InputFileError(f"{path}: not valid {_language(path)}: {detail}") from exc
    if not isinstance(spec, dict):
        raise InputFileError(f"{path}: a job spec is a mapping, not {type(spec).__name__}")
    return spec


def _language(path: Path) -> str:
    return "JSON" if path.suffix.lower() == ".json" else "YAML"


def read_csv(path: str | PathLike[str]) -> list[dict[str, Any]]:
    """Rows as records, each column typed as the upload's parser would have typed it: numbers
    when every filled cell is one, booleans when every one is true/false, else strings; an
    empty cell is missing (None)."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as file:
            rows = list(csv.DictReader(file))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputFileError(f"{path}: {getattr(exc, 'strerror', None) or exc}") from exc
    if not rows:
        raise InputFileError(f"{path}: no rows under the header")
    columns = list(rows[0])
    kinds = {name: _column_kind([row[name] for row in rows if row[name]]) for name in columns}
    return [
        {name: _typed(row[name], kinds[name]) if row[name] else None for name in columns}
        for row in rows
    ]


def _column_kind(cells: list[str]) -> str:
    if cells and all(cell.lower() in TRUTHS for cell in cells):
        return "bool"
    if all(_is_int(cell) for cell in cells):
        return "int"
    if all(_is_float(cell) for cell in cells):
        return "float"
    return "str"


def _is_int(cell: str) -> bool:
    try:
        int(cell)
    except ValueError:
        return False
    return True


def _is_float(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _typed(cell: str, kind: str) -> Any:
    match kind:
        case "bool":
            return TRUTHS[cell.lower()]
        case "int":
            return int(cell)
        case "float":
            return float(cell)
    return cell


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def parse_inputs(text: str) -> list[Any]:
    """Inputs given as JSON text: a list of them, or one record (an object)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputFileError(f"inputs are not valid JSON: {exc}") from exc
    if isinstance(value, dict):
        return [value]
    if not isinstance(value, list) or not value:
        raise InputFileError("inputs are a JSON list of records, arrays or values, or one record")
    return value
