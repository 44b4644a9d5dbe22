"""Celery configuration, shared by the API (which sends jobs) and the workers (which run
them): the app's settings, the broker's transport options and the task's name. The task
carries only a job id; the database owns job state. The worker's own app, the one
`celery -A workers.celery_app worker` runs, is built from `make_celery` in
workers/celery_app.py; the API sends by the task's name and never imports `workers`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from celery import Celery

from service.settings import Settings

RUN_JOB = "training.run_job"


def transport_options(settings: Settings) -> dict[str, Any]:
    if settings.uses_embedded_broker:
        folder = settings.broker_folder
        (folder / "queue").mkdir(parents=True, exist_ok=True)
        (folder / "control").mkdir(parents=True, exist_ok=True)
        return {
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "control_folder": str(folder / "control"),  # exchange bindings; default is CWD
            "store_processed": False,
            "polling_interval": 0.2,  # seconds; the default 1 s delays every job start
        }
    options: dict[str, Any] = {
        # Redis re-delivers an unacknowledged message after this many seconds. Job state and
        # the lease live in SQL, so a re-delivery of a job still running finds nothing to
        # claim; the timeout only bounds how long a job whose worker vanished waits for
        # its message to come back. Keep it above the longest expected epoch.
        "visibility_timeout": settings.broker_visibility_timeout,
    }
    if settings.broker_key_prefix:
        options["global_keyprefix"] = settings.broker_key_prefix
    return options


def make_celery(settings: Settings, include: Sequence[str] = ()) -> Celery:
    """The Celery app for these settings; `include` names the modules that define tasks
    (the worker's), which the worker imports when it starts. A sender needs none."""
    app = Celery("keiko", broker=settings.resolved_broker_url, include=list(include))
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=settings.cpu_queue,
        broker_connection_retry_on_startup=True,
        broker_transport_options=transport_options(settings),
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )
    if settings.uses_embedded_broker:
        # kombu's filesystem transport with atomic writes (see service/broker.py).
        app.conf.broker_transport = "service.broker:Transport"
        # The filesystem transport has no fanout exchanges for remote control.
        app.conf.worker_enable_remote_control = False
    return app
