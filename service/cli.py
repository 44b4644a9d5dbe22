"""`python -m service.cli serve|api|worker|migrate`: run Keiko's processes."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

from alembic import command
from alembic.config import Config

from service.settings import get_settings

ROOT = Path(__file__).resolve().parent.parent
log = logging.getLogger("keiko")


def migrate() -> None:
    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    config.set_main_option("sqlalchemy.url", settings.resolved_database_url.replace("%", "%%"))
    command.upgrade(config, "head")


def worker_command(queues: str | None = None, concurrency: int = 1) -> list[str]:
    settings = get_settings()
    queues = queues or settings.cpu_queue
    return [
        sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker",
        "-Q", queues, "--pool", "solo", "--concurrency", str(concurrency),
        "--without-gossip", "--without-mingle", "--loglevel", "INFO",
    ]  # fmt: skip


def api_command(host: str, port: int) -> list[str]:
    return [
        sys.executable, "-m", "uvicorn", "service.main:app",
        "--host", host, "--port", str(port), "--no-access-log",
    ]  # fmt: skip


def serve(host: str, port: int, queues: str | None) -> int:
    """Migrate, then run one worker and the API until either exits or Ctrl-C."""
    migrate()
    settings = get_settings()
    print(
        f"Keiko on http://{host}:{port} (docs: /docs)\n"
        f"  database: {settings.resolved_database_url}\n"
        f"  broker:   {settings.resolved_broker_url}\n"
        f"  artifacts: {settings.artifacts}",
        flush=True,
    )
    worker = subprocess.Popen(worker_command(queues), cwd=ROOT)
    api = subprocess.Popen(api_command(host, port), cwd=ROOT)
    children = [api, worker]

    def stop(*_args: object) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        while all(child.poll() is None for child in children):
            try:
                os.wait()
            except ChildProcessError:
                break
    finally:
        stop()
        for child in children:
            child.wait()
    return max((child.returncode or 0) for child in children)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="keiko")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("serve", "api"):
        p = sub.add_parser(name)
        p.add_argument("--host", default=os.environ.get("KEIKO_HOST", "127.0.0.1"))
        p.add_argument("--port", type=int, default=int(os.environ.get("KEIKO_PORT", "8000")))
        if name == "serve":
            p.add_argument("--queues", default=None)
    w = sub.add_parser("worker")
    w.add_argument("--queues", default=None, help="Comma-separated queues, e.g. gpu,celery")
    sub.add_parser("migrate")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    if args.command == "migrate":
        migrate()
        return 0
    if args.command == "serve":
        return serve(args.host, args.port, args.queues)
    command_line = (
        api_command(args.host, args.port) if args.command == "api" else worker_command(args.queues)
    )
    os.execv(command_line[0], command_line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
