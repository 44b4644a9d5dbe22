"""Optuna's storage beside Keiko's tables (issue 17): Keiko's `migrate` creates it, in a
schema of its own on PostgreSQL and a file of its own on SQLite, so neither's Alembic
version table nor its `studies` table meets the other's."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from alembic import command
from sqlalchemy import create_engine, inspect, text

from service.optuna_storage import SCHEMA, open_storage, upgrade_storage
from service.settings import Settings
from tests.services import temporary_postgres_database
from tests.test_migrations import alembic_config


@pytest.fixture(params=["sqlite", "postgresql"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Settings]:
    if request.param == "sqlite":
        yield Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'keiko.db'}")
    else:
        with temporary_postgres_database() as url:
            yield Settings(data_dir=tmp_path, database_url=url)


def keiko_revision(url: str) -> str:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return str(connection.execute(text("SELECT version_num FROM alembic_version")).scalar())
    finally:
        engine.dispose()


def test_optuna_keeps_its_tables_apart_from_keikos(settings: Settings) -> None:
    url = settings.resolved_database_url
    command.upgrade(alembic_config(url), "head")
    revision = keiko_revision(url)
    upgrade_storage(settings)
    upgrade_storage(settings)  # a second migrate changes nothing
    assert keiko_revision(url) == revision

    storage = open_storage(settings)
    try:
        study = optuna.create_study(storage=storage, study_name="s1", direction="maximize")
        study.enqueue_trial({"x": 0.5})
        trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
        study.tell(trial, 0.75)
        again = optuna.load_study(storage=open_storage(settings), study_name="s1")
        assert again.best_value == 0.75 and again.best_params == {"x": 0.5}
    finally:
        storage.engine.dispose()

    engine = create_engine(url)
    try:
        if url.startswith("postgresql"):
            schemas = inspect(engine)
            assert "trials" in schemas.get_table_names(schema=SCHEMA)
            assert "trials" not in schemas.get_table_names()
        else:
            assert "trials" not in inspect(engine).get_table_names()
            assert (settings.data_dir / "optuna.sqlite3").exists()
    finally:
        engine.dispose()
