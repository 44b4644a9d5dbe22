"""`python -m service.cli serve|api|worker|migrate|add-user`: run Keiko's processes."""

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

from service.optuna_storage import upgrade_storage
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
    upgrade_storage(settings)  # Optuna's tables for studies, apart from Keiko's


def worker_command(queues: str | None = None, concurrency: int = 1) -> list[str]:
    settings = get_settings()
    queues = queues or settings.cpu_queue
    return [
        sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker",
        "-Q", queues, "--pool", "solo", "--concurrency", str(concurrency),
        "--without-gossip", "--without-mingle", "--loglevel", "INFO",
    ]  # fmt: skip


def api_command(host: str, port: int, workers: int = 1) -> list[str]:
    command = [
        sys.executable, "-m", "uvicorn", "service.main:app",
        "--host", host, "--port", str(port), "--no-access-log",
    ]  # fmt: skip
    if workers > 1:
        command += ["--workers", str(workers)]
    return command


def share_metrics(workers: int) -> None:
    """Several API processes count requests into one folder, so that any of them answers a
    scrape with the sum (prometheus-client's multiprocess mode): PROMETHEUS_MULTIPROC_DIR,
    by default <data dir>/prometheus, cleared of the last run's files."""
    if workers < 2:
        return
    folder = Path(
        os.environ.get("PROMETHEUS_MULTIPROC_DIR") or get_settings().data_dir / "prometheus"
    ).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.db"):
        stale.unlink()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)


def serve(host: str, port: int, queues: str | None, workers: int = 1) -> int:
    """Migrate, then run one worker and the API until either exits or Ctrl-C."""
    migrate()
    share_metrics(workers)
    settings = get_settings()
    print(
        f"Keiko on http://{host}:{port} (docs: /docs)\n"
        f"  database: {settings.resolved_database_url}\n"
        f"  broker:   {settings.resolved_broker_url}\n"
        f"  artifacts: {settings.artifact_url or settings.artifacts}",
        flush=True,
    )
    worker = subprocess.Popen(worker_command(queues), cwd=ROOT)
    api = subprocess.Popen(api_command(host, port, workers), cwd=ROOT)
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


def add_user(name: str, key_name: str) -> int:
    """Create a user and one API key straight in the database (no admin key needed: whoever
    runs this can reach the database anyway); prints the key, which is shown only here."""
    from sqlalchemy.exc import SQLAlchemyError

    from service import repository
    from service.auth import issue_key
    from service.db import session_scope
    from service.schemas import UserCreate
    from service.tables import User

    try:
        UserCreate(name=name)
    except ValueError as exc:
        print(f"not a valid user name: {name!r} ({exc})", file=sys.stderr)
        return 2
    try:
        with session_scope() as session:
            user = repository.user_named(session, name=name)
            if user is None:
                user = User(name=name)
                session.add(user)
                session.flush()
            _, secret = issue_key(session, user_id=user.id, name=key_name)
            user_id = user.id
    except SQLAlchemyError as exc:
        print(f"cannot write to the database ({exc.__class__.__name__}); run migrate first?",
              file=sys.stderr)  # fmt: skip
        return 1
    print(f"user {name} ({user_id}), new API key:\n{secret}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="keiko")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("serve", "api"):
        p = sub.add_parser(name)
        p.add_argument("--host", default=os.environ.get("KEIKO_HOST", "127.0.0.1"))
        p.add_argument("--port", type=int, default=int(os.environ.get("KEIKO_PORT", "8000")))
        p.add_argument("--workers", type=int, default=1, help="API processes (uvicorn's)")
        if name == "serve":
            p.add_argument("--queues", default=None)
    w = sub.add_parser("worker")
    w.add_argument("--queues", default=None, help="Comma-separated queues, e.g. gpu,celery")
    sub.add_parser("migrate")
    u = sub.add_parser("add-user", help="create a user (if new) and print a new API key")
    u.add_argument("name")
    u.add_argument("--key-name", default="default")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    if args.command == "migrate":
        migrate()
        return 0
    if args.command == "serve":
        return serve(args.host, args.port, args.queues, args.workers)
    if args.command == "add-user":
        return add_user(args.name, args.key_name)
    if args.command == "api":
        share_metrics(args.workers)
        command_line = api_command(args.host, args.port, args.workers)
    else:
        command_line = worker_command(args.queues)
    os.execv(command_line[0], command_line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
