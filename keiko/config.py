"""Where the client finds its API and key: an argument, else `KEIKO_URL` / `KEIKO_API_KEY`,
else the config file (`keiko config set url|key`), else the embedded default address.

The file is TOML in the user's config directory (`~/.config/keiko/config.toml` on Linux,
`$XDG_CONFIG_HOME` respected), written readable by its owner only since it holds a key."""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from platformdirs import user_config_path

from keiko.errors import ConfigError

DEFAULT_URL = "http://127.0.0.1:8000"
URL_ENV = "KEIKO_URL"
KEY_ENV = "KEIKO_API_KEY"
Setting = Literal["url", "key"]
SETTINGS: tuple[Setting, ...] = ("url", "key")


@dataclass(frozen=True)
class Connection:
    url: str
    key: str | None


def config_path() -> Path:
    return user_config_path("keiko") / "config.toml"


def read_config() -> dict[str, str]:
    path = config_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from exc
    try:
        values = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    return {k: v for k, v in values.items() if k in SETTINGS and isinstance(v, str)}


def write_config(setting: Setting, value: str | None) -> Path:
    """Set (or, with None, remove) one setting and keep the others."""
    values = read_config()
    if value is None:
        values.pop(setting, None)
    else:
        values[setting] = value
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    # A JSON string is a valid TOML basic string: the same quotes and escapes.
    text = "".join(f"{name} = {json.dumps(values[name])}\n" for name in SETTINGS if name in values)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write(text)
    path.chmod(0o600)  # an older file may have been readable by others
    return path


def resolve(url: str | None = None, key: str | None = None) -> Connection:
    """Arguments first, then the environment, then the config file."""
    url = url or os.environ.get(URL_ENV) or None
    key = key or os.environ.get(KEY_ENV) or None
    if url is None or key is None:
        stored = read_config()
        url = url or stored.get("url")
        key = key or stored.get("key")
    return Connection(url=(url or DEFAULT_URL).rstrip("/"), key=key)
