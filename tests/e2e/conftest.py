"""Two real deployments, each started once per test session: the embedded defaults
(SQLite + filesystem broker) and PostgreSQL + Redis (this run's own database and prefix)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.stack import Stack, stack_env
from tests.stack import postgres_redis_stack as deployment


@pytest.fixture(scope="session")
def embedded_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    data_dir: Path = tmp_path_factory.mktemp("embedded")
    stack = Stack("embedded", data_dir, stack_env(data_dir))
    try:
        yield stack.start()
    finally:
        stack.stop()


@pytest.fixture(scope="session")
def postgres_redis_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    data_dir = tmp_path_factory.mktemp("postgres_redis")
    with deployment("postgres_redis", data_dir) as stack:
        yield stack


@pytest.fixture(params=["embedded", "postgres_redis"])
def stack(request: pytest.FixtureRequest) -> Stack:
    return request.getfixturevalue(f"{request.param}_stack")  # type: ignore[no-any-return]
