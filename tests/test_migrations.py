"""Alembic: one upgrade from empty creates everything the ORM declares; downgrade removes it;
on SQLite and on PostgreSQL (this run's own database)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, inspect, text

from service.cli import ROOT
from service.tables import LOCAL_USER, Base
from tests.services import temporary_postgres_database


def alembic_config(url: str) -> Config:
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    config.set_main_option("sqlalchemy.url", url)
    config.attributes["configure_logging"] = False
    return config


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'migrations.db'}"
    else:
        with temporary_postgres_database() as url:
            yield url


def test_upgrade_matches_the_orm_and_downgrade_empties(database_url: str) -> None:
    config = alembic_config(database_url)
    command.upgrade(config, "head")
    command.check(config)  # raises if the ORM declares anything the migrations lack
    engine = create_engine(database_url)
    try:
        tables = set(inspect(engine).get_table_names())
        assert set(Base.metadata.tables) <= tables
        command.downgrade(config, "base")
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        command.upgrade(config, "head")
        assert set(Base.metadata.tables) <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_rows_from_before_accounts_belong_to_the_local_user(database_url: str) -> None:
    config = alembic_config(database_url)
    command.upgrade(config, "0001")
    engine = create_engine(database_url)
    try:
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO datasets (id, name, format, filename, path, size_bytes, sha256,"
                    " num_rows, created_at) VALUES ('d1', 'old', 'csv', 'old.csv', 'x', 1,"
                    " 'ab', 1, CURRENT_TIMESTAMP)"
                )
            )
        command.upgrade(config, "head")
        with engine.connect() as connection:
            owner = connection.execute(text("SELECT owner_id FROM datasets")).scalar_one()
            users = connection.execute(text("SELECT id, name FROM users")).all()
        assert owner == LOCAL_USER
        assert [tuple(u) for u in users] == [(LOCAL_USER, LOCAL_USER)]
    finally:
        engine.dispose()
