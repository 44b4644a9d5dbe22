"""After a transaction that wrote job events commits, name its jobs on a Redis channel so
that the API processes' event hubs (service.events) wake those streams at once. Only a
hint: the events are in SQL, and streams poll it as well."""

from __future__ import annotations

import logging
import time
from functools import lru_cache

import redis
from sqlalchemy.orm import Session

from service.settings import Settings, get_settings

log = logging.getLogger(__name__)

# Session.info key: ids of the jobs that got events in the current transaction.
EVENTS_WRITTEN = "keiko_job_events"


def channel(settings: Settings) -> str:
    return f"{settings.broker_key_prefix}keiko:job-events"


def redis_url(settings: Settings) -> str | None:
    url = settings.resolved_broker_url
    return url if url.startswith(("redis://", "rediss://")) else None


class _Announcer:
    """Publishes job ids after the transactions that gave them events commit. A Redis that
    is down costs one short timeout, then nothing for a while: streams still get the
    events from SQL at their next poll."""

    RETRY_AFTER = 5.0

    def __init__(self, url: str, channel: str) -> None:
        self.client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self.channel = channel
        self.down_until = 0.0

    def publish(self, job_ids: set[str]) -> None:
        if time.monotonic() < self.down_until:
            return
        try:
            for job_id in job_ids:
                self.client.publish(self.channel, job_id)
        except redis.RedisError as exc:
            log.warning("job events not announced on Redis (%s); streams will poll", exc)
            self.down_until = time.monotonic() + self.RETRY_AFTER


@lru_cache
def _announcer() -> _Announcer | None:
    settings = get_settings()
    url = redis_url(settings)
    return _Announcer(url, channel(settings)) if url else None


def announce_committed(session: Session) -> None:
    """SQLAlchemy `after_commit` hook (service.db): wake the streams of the jobs whose
    events this transaction wrote."""
    job_ids = session.info.pop(EVENTS_WRITTEN, None)
    if job_ids and (announcer := _announcer()) is not None:
        announcer.publish(job_ids)


def forget_uncommitted(session: Session) -> None:
    """`after_rollback`: events that were rolled back are nobody's news."""
    session.info.pop(EVENTS_WRITTEN, None)
