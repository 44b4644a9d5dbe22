"""Optuna's RDB storage in Keiko's own database, so that studies need no server of their own
(issue 17).

Optuna keeps its tables (`studies`, `trials`, ...) and its own Alembic version table under
names that Keiko's schema also uses (`alembic_version`), so the two must not share a
namespace:

- PostgreSQL: the same database, in a schema of its own (`optuna`), reached by setting
  each connection's `search_path`; Keiko's tables stay in `public`.
- SQLite (the embedded default): a file of its own beside Keiko's, `optuna.sqlite3` in
  the data directory (SQLite has no schemas).

`upgrade_storage` creates or upgrades Optuna's tables and runs from Keiko's own `migrate`
(`./keiko.sh serve` and `test` run it), so there is no Optuna command to run by hand.
"""

from __future__ import annotations

import threading
from typing import Any

import optuna
from sqlalchemy import text
from sqlalchemy.engine import make_url

from service.db import make_engine
from service.settings import Settings

SCHEMA = "optuna"
SQLITE_FILE = "optuna.sqlite3"


def storage_location(settings: Settings) -> tuple[str, dict[str, Any]]:
    """Optuna's database URL and the engine arguments that keep it apart from Keiko's
    tables."""
    url = settings.resolved_database_url
    backend = make_url(url).get_backend_name()
    if backend == "sqlite":
        return f"sqlite:///{settings.data_dir.resolve() / SQLITE_FILE}", {
            "connect_args": {"timeout": 30}
        }
    if backend == "postgresql":
        options = f"-csearch_path={SCHEMA}"
        return url, {"pool_pre_ping": True, "connect_args": {"options": options}}
    raise ValueError(f"studies need PostgreSQL or SQLite, not {backend}")


def upgrade_storage(settings: Settings) -> None:
    """Create Optuna's schema and tables, or bring them to this Optuna's version."""
    url, kwargs = storage_location(settings)
    if make_url(url).get_backend_name() == "postgresql":
        engine = make_engine(url)
        try:
            with engine.begin() as connection:
                connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{SCHEMA}"'))
        finally:
            engine.dispose()
    storage = optuna.storages.RDBStorage(url, engine_kwargs=kwargs, skip_compatibility_check=True)
    try:
        if storage.get_current_version() != storage.get_head_version():
            storage.upgrade()
    finally:
        storage.engine.dispose()


def open_storage(settings: Settings) -> optuna.storages.RDBStorage:
    """The storage of this deployment's studies (upgraded by `upgrade_storage` already)."""
    url, kwargs = storage_location(settings)
    return optuna.storages.RDBStorage(url, engine_kwargs=kwargs, skip_table_creation=True)


_storages: dict[str, optuna.storages.RDBStorage] = {}
_storages_lock = threading.Lock()


def shared_storage(settings: Settings) -> optuna.storages.RDBStorage:
    """This process's storage for the deployment's database (one engine and its pool per
    database, not one per call)."""
    url, _ = storage_location(settings)
    with _storages_lock:
        storage = _storages.get(url)
        if storage is None:
            storage = _storages[url] = open_storage(settings)
        return storage
