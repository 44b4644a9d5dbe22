"""docker-compose.yml and the Dockerfile: no container engine runs here, so check that the
services exist and that their commands and variables are ones the code really reads."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.cli import ROOT, build_parser
from service.settings import Settings

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def service(name: str) -> dict[str, Any]:
    return dict(COMPOSE["services"][name])


def test_services_exist_with_health_checks() -> None:
    assert {"api", "worker", "redis", "postgres", "migrate"} <= set(COMPOSE["services"])
    for name in ("api", "redis", "postgres"):
        assert "healthcheck" in service(name), name


def test_migrations_run_before_the_api_and_worker() -> None:
    assert service("migrate")["command"][-1] == "migrate"
    for name in ("api", "worker"):
        depends = service(name)["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully"
        assert depends["redis"]["condition"] == "service_healthy"
    assert service("migrate")["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_worker_reserves_a_gpu_and_takes_the_gpu_queue() -> None:
    worker = service("worker")
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]
    assert "gpu" in worker["command"][worker["command"].index("--queues") + 1].split(",")


@pytest.mark.parametrize("name", ["api", "worker", "migrate"])
def test_environment_is_read_by_settings(name: str) -> None:
    fields = {f"KEIKO_{field.upper()}" for field in Settings.model_fields}
    env = service(name)["environment"]
    keiko = {k: v for k, v in env.items() if k.startswith("KEIKO_")}
    assert set(keiko) <= fields, set(keiko) - fields
    # The rest is boto3's own environment for the object store.
    assert set(env) - set(keiko) <= {
        "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"
    }  # fmt: skip
    settings = Settings(**{k.removeprefix("KEIKO_").lower(): v for k, v in keiko.items()})
    assert settings.resolved_database_url.startswith("postgresql+psycopg://")
    assert settings.resolved_broker_url.startswith("redis://")
    assert settings.artifact_url == "s3://keiko/artifacts"


def test_api_and_worker_share_only_the_object_store() -> None:
    """No volume in common: artifacts go through MinIO, whose bucket exists before they start."""
    api, worker = service("api"), service("worker")
    assert not set(api.get("volumes", [])) & set(worker.get("volumes", []))
    for definition in (api, worker):
        assert definition["environment"]["AWS_ENDPOINT_URL"] == "http://minio:9000"
        assert definition["depends_on"]["bucket"]["condition"] == "service_completed_successfully"
    assert service("bucket")["depends_on"]["minio"]["condition"] == "service_healthy"
    assert "mc mb --ignore-existing keiko/keiko" in service("bucket")["command"][0]
    assert "healthcheck" in service("minio")


@pytest.mark.parametrize("name", ["api", "worker", "migrate"])
def test_commands_are_real_cli_commands(name: str) -> None:
    command = service(name)["command"]
    assert command[:3] == ["python", "-m", "service.cli"]
    parsed = build_parser().parse_args(command[3:])  # exits on an unknown command or flag
    assert parsed.command == command[3]


def test_ports_are_published_on_loopback_only() -> None:
    for name, definition in COMPOSE["services"].items():
        for port in definition.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (name, port)


def test_dockerfile_copies_every_package() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    for needed in ("service", "workers", "models", "migrations", "alembic.ini", "pyproject.toml"):
        assert needed in dockerfile, needed
    cmd = next(line for line in dockerfile.splitlines() if line.startswith("CMD"))
    assert "service.cli" in shlex.join([cmd])


def test_compose_file_is_where_the_readme_says() -> None:
    assert Path(ROOT / "docker-compose.yml").exists()
    assert "docker-compose.yml" in (ROOT / "README.md").read_text()
