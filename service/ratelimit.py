"""Per-key rate limits: a moving window, counted in Redis when the deployment has one (the
`limits` library), so that every API process shares the counters, else in memory.

A limiter whose storage is down lets requests through and logs it: a broken counter must not
take predictions or job submissions down with it.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from functools import lru_cache

from limits import RateLimitItem, parse
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


class LocalWindows:
    """Moving windows in this process's memory, for one API process without Redis.

    limits' MemoryStorage expires its entries with a timer thread that it starts again
    10 ms after the last one ended: under load that is a thread start (and a wait for it)
    inside a request every few calls, about a tenth of a busy API's event loop. Here each
    key keeps the times of its hits within the window (at most its limit), and the window
    is read from them."""

    def __init__(self) -> None:
        self._hits: dict[tuple[str, str], deque[float]] = {}
        self._lock = threading.Lock()

    def hit(self, item: RateLimitItem, what: str, key: str) -> float | None:
        """Count a hit if the window has room (None); else the Unix time it will have."""
        limit, seconds = item.amount, item.get_expiry()
        now = time.time()
        with self._lock:
            hits = self._hits.get((what, key))
            if hits is None:
                hits = self._hits[(what, key)] = deque(maxlen=limit)
            while hits and hits[0] <= now - seconds:  # memory: the window's hits only
                hits.popleft()
            if len(hits) == limit:
                return hits[0] + seconds
            hits.append(now)
            return None


class RateLimiter:
    def __init__(self, storage: Storage) -> None:
        self.in_memory = isinstance(storage, MemoryStorage)
        self.limiter = MovingWindowRateLimiter(storage)
        self.local = LocalWindows()

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
        if self.in_memory:
            reset_time = self.local.hit(item, what, caller.key_id)
            if reset_time is None:
                return
        else:
            try:
                if self.limiter.hit(item, what, caller.key_id):
                    return
                reset_time = self.limiter.get_window_stats(item, what, caller.key_id).reset_time
            except Exception:  # storage down: fail open
                log.exception("rate limiter storage failed; letting the request through")
                return
        retry_after = max(1, math.ceil(reset_time - time.time()))
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
