"""Real PostgreSQL, Redis and an S3 API server for tests: each run gets its own database,
key prefix and bucket, dropped afterwards. In CI (CI=true) a missing service fails the run
instead of skipping."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest

PG_ADMIN_URL = os.environ.get(
    "KEIKO_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("KEIKO_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def unavailable(what: str, exc: BaseException) -> None:
    message = f"{what} is not reachable ({type(exc).__name__}: {exc})"
    if in_ci():
        pytest.fail(f"{message}; CI requires it", pytrace=False)
    pytest.skip(f"{message}; start it to run these tests")


@contextmanager
def temporary_postgres_database() -> Iterator[str]:
    """CREATE DATABASE keiko_test_<random>; yield its URL; DROP it (forcefully) after."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"keiko_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        admin.dispose()
        unavailable(f"PostgreSQL at {PG_ADMIN_URL}", exc)
    try:
        yield make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def temporary_redis_prefix() -> Iterator[tuple[str, str]]:
    """Yield (broker URL, key prefix) for a fresh prefix; delete every key under it after."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except Exception as exc:
        unavailable(f"Redis at {REDIS_URL}", exc)
    prefix = f"keiko-test-{uuid.uuid4().hex[:12]}:"
    try:
        yield REDIS_URL, prefix
    finally:
        for key in client.scan_iter(match=f"{prefix}*", count=1000):
            client.delete(key)
        client.close()


@dataclass
class S3Server:
    """moto's standalone S3 server (the one s3fs's own tests use): the S3 protocol over
    HTTP on this machine, kept in its memory."""

    endpoint: str
    bucket: str
    process: subprocess.Popen[bytes]

    @property
    def env(self) -> dict[str, str]:
        """boto3's usual environment, pointing at this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "keiko-test",
            "AWS_SECRET_ACCESS_KEY": "keiko-test-secret",
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def url(self, prefix: str = "keiko") -> str:
        return f"s3://{self.bucket}/{prefix}"

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id="keiko-test",
            aws_secret_access_key="keiko-test-secret",
            region_name="us-east-1",
        )


@contextmanager
def s3_server() -> Iterator[S3Server]:
    """A moto S3 server on a free loopback port with one fresh bucket; stopped after."""
    import httpx

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    endpoint = f"http://127.0.0.1:{port}"
    # Objects stay in the server's memory, not in temporary files on this machine's disk: a
    # real store keeps them on its own machines' disks, not on the API's.
    env = {**os.environ, "MOTO_S3_DEFAULT_KEY_BUFFER_SIZE": str(8 << 30)}
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{endpoint}/moto-api/", timeout=2)
                break
            except httpx.TransportError as exc:
                if process.poll() is not None or time.monotonic() > deadline:
                    unavailable(f"moto's S3 server on {endpoint}", exc)
                time.sleep(0.1)
        server = S3Server(endpoint, f"keiko-test-{uuid.uuid4().hex[:12]}", process)
        server.client().create_bucket(Bucket=server.bucket)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
