"""Per-key rate limits (the `limits` library): a moving window, counted in Redis when the
deployment has one, so that every API process shares the counters, else in memory.

A limiter whose storage is down lets requests through and logs it: a broken counter must not
take predictions or job submissions down with it.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from functools import lru_cache

from limits import parse
from limits.storage import MemoryStorage, Storage, storage_from_string
from limits.strategies import MovingWindowRateLimiter
from starlette.concurrency import run_in_threadpool

from service.auth import Caller
from service.errors import TooManyRequests
from service.settings import Settings, get_settings

log = logging.getLogger("keiko")


def storage_url(settings: Settings) -> str:
    if settings.rate_limit_storage_url:
        return settings.rate_limit_storage_url
    broker = settings.resolved_broker_url
    if broker.startswith(("redis://", "rediss://")):
        return broker
    return "memory://"


class RateLimiter:
    def __init__(self, storage: Storage) -> None:
        self.limiter = MovingWindowRateLimiter(storage)
        self.in_memory = isinstance(storage, MemoryStorage)

    async def hit_async(self, what: str, rate: str, caller: Caller) -> None:
        """`hit` from the event loop: at once where the counters are in memory, in a worker
        thread where they are in Redis (a round trip must not stall the loop)."""
        if caller.key_id is None:
            return
        if self.in_memory:
            self.hit(what, rate, caller)
        else:
            await run_in_threadpool(self.hit, what, rate, caller)

    def hit(self, what: str, rate: str, caller: Caller) -> None:
        """Count one call of `what` by the caller's key; 429 with Retry-After when over."""
        if caller.key_id is None:  # authentication off: no keys to tell callers apart
            return
        item = parse(rate)
        try:
            if self.limiter.hit(item, what, caller.key_id):
                return
            stats = self.limiter.get_window_stats(item, what, caller.key_id)
        except Exception:  # storage down: fail open
            log.exception("rate limiter storage failed; letting the request through")
            return
        retry_after = max(1, math.ceil(stats.reset_time - time.time()))
        raise TooManyRequests(
            f"rate limit of {rate} for {what} reached for this API key; retry in {retry_after} s",
            retry_after=retry_after,
        )


_building = threading.Lock()


def get_rate_limiter() -> RateLimiter:
    """The process's limiter. Built once under a lock (the API builds it at start-up):
    limits checks its Redis client's version lazily, and two first requests building it at
    once made that check fail."""
    with _building:
        return _build_rate_limiter()


@lru_cache
def _build_rate_limiter() -> RateLimiter:
    settings = get_settings()
    url = storage_url(settings)
    options: dict[str, float | str | bool] = {}
    if url.startswith(("redis://", "rediss://")):
        options = {
            "key_prefix": f"{settings.broker_key_prefix}keiko-ratelimit",
            "socket_timeout": 1.0,
            "socket_connect_timeout": 1.0,
        }
    storage = storage_from_string(url, **options)
    assert isinstance(storage, Storage)  # a synchronous one: no "async+" URL
    return RateLimiter(storage)
