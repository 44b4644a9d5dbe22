"""Revocations: when an API key or a model is deleted, every API process hears of it before
the delete answers, so that what they cache for the predict path (service.admissions) is
never used again.

A revocation bumps two generation counters, and a cached entry is trusted only while both
are what they were when it was read from SQL:

- a counter in shared memory, a file in the data directory that every process on this
  machine maps: the embedded deployment (one machine, SQLite) needs nothing else;
- where the broker is Redis, a message on one channel to every API process on every machine:
  each bumps its own counter and acknowledges, and the deleting request waits for as many
  acknowledgements as Redis delivered the message (a few milliseconds; at most
  `ACK_TIMEOUT`). A process whose subscription is down or not yet up trusts no cache, since
  it could miss a revocation: it reads SQL on every call until it hears again.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import mmap
import os
import struct
import time
import uuid
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

import redis
import redis.asyncio

from service.announce import redis_url
from service.settings import Settings, get_settings

log = logging.getLogger("keiko")

ACK_TIMEOUT = 2.0  # seconds a delete waits for every API process to acknowledge
COUNTER = struct.Struct("<Q")

Token = tuple[int, int]


class Revocations:
    def __init__(self, folder: Path, url: str | None, channel: str) -> None:
        self.path = folder / "revocations"
        self.url, self.channel = url, channel
        self._heard = 0  # revocations heard on Redis, and losses of the subscription
        try:
            self._shared: mmap.mmap | None = self._map()
        except OSError as exc:  # a read-only data directory: Redis alone, or no cache
            log.warning("revocations: no shared counter at %s (%s)", self.path, exc)
            self._shared = None
        # Without Redis the shared counter is the whole story; without either, no cache.
        self._listening = url is None and self._shared is not None

    def _map(self) -> mmap.mmap:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if os.fstat(fd).st_size < COUNTER.size:
                with _locked(fd):
                    if os.fstat(fd).st_size < COUNTER.size:
                        os.ftruncate(fd, COUNTER.size)
            return mmap.mmap(fd, COUNTER.size)
        finally:
            os.close(fd)

    def token(self) -> Token | None:
        """The generation to stamp an entry read from SQL with (taken before the read), and
        to compare a cached entry's stamp with; None: trust no cache now."""
        if not self._listening:
            return None
        shared = COUNTER.unpack_from(self._shared)[0] if self._shared is not None else 0
        return shared, self._heard

    def revoke(self) -> None:
        """Tell every API process that a key or model is gone (after its delete committed)."""
        if self._shared is not None:
            fd = os.open(self.path, os.O_RDWR)
            try:
                with _locked(fd):
                    (value,) = COUNTER.unpack_from(self._shared)
                    COUNTER.pack_into(self._shared, 0, value + 1)
            finally:
                os.close(fd)
        self._heard += 1
        if self.url is not None:
            self._announce()

    def _announce(self) -> None:
        assert self.url is not None
        ack = f"{self.channel}:ack:{uuid.uuid4().hex}"
        client = redis.Redis.from_url(self.url, socket_timeout=1.0, socket_connect_timeout=1.0)
        try:
            listeners = client.publish(self.channel, ack)
            deadline = time.monotonic() + ACK_TIMEOUT
            while int(client.get(ack) or 0) < listeners:
                if time.monotonic() > deadline:
                    log.warning(
                        "revocation: %d of %d API processes acknowledged within %.0f s",
                        int(client.get(ack) or 0), listeners, ACK_TIMEOUT,
                    )  # fmt: skip
                    break
                time.sleep(0.002)
            client.delete(ack)
        except redis.RedisError as exc:
            # The other processes' subscriptions are most likely down too, and then they
            # trust no cache; one that still listens misses this revocation.
            log.error("revocation not announced on Redis: %s", exc)
        finally:
            client.close()

    async def listen(self) -> None:
        """Hear other processes' revocations (run by each API process while it serves)."""
        if self.url is None:
            return
        while True:
            client = redis.asyncio.Redis.from_url(self.url)
            try:
                async with client.pubsub() as pubsub:
                    await pubsub.subscribe(self.channel)
                    async for message in pubsub.listen():
                        if message.get("type") == "subscribe":
                            self._heard += 1  # whatever was missed while deaf is dropped
                            self._listening = True
                        elif message.get("type") == "message":
                            self._heard += 1
                            ack = message["data"].decode()
                            await client.incr(ack)
                            await client.expire(ack, 60)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("revocations: Redis subscription lost (%s); no cache until back", exc)
            finally:
                self._listening = False
                self._heard += 1
                with contextlib.suppress(Exception):
                    await client.aclose()
            await asyncio.sleep(1.0)


@contextlib.contextmanager
def _locked(fd: int) -> Iterator[None]:
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


def channel(settings: Settings) -> str:
    return f"{settings.broker_key_prefix}keiko:revoked"


@lru_cache
def get_revocations() -> Revocations:
    settings = get_settings()
    return Revocations(settings.data_dir.resolve(), redis_url(settings), channel(settings))
