"""The worker's Celery app: `celery -A workers.celery_app worker` runs it. Its settings come
from service/queue.py, shared with the API that sends the jobs; the tasks it runs are in
workers/tasks.py, which it imports when the worker starts."""

from __future__ import annotations

from service.queue import make_celery
from service.settings import get_settings

app = make_celery(get_settings(), include=["workers.tasks"])
