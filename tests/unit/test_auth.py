"""Settings and pieces of authentication, rate limiting and idempotency (no server)."""

from __future__ import annotations

import time

import pytest
from limits.storage import MemoryStorage
from pydantic import ValidationError

from service.auth import KEY_PREFIX, Caller, hash_key, new_key
from service.errors import TooManyRequests
from service.idempotency import check_key, fingerprint
from service.ratelimit import RateLimiter, storage_url
from service.settings import Settings


@pytest.mark.parametrize(
    ("fields", "enabled"),
    [
        ({}, False),  # the embedded defaults: one machine, loopback
        ({"database_url": "postgresql+psycopg://db/keiko"}, True),
        ({"broker_url": "redis://r:6379/0"}, True),
        ({"auth": True}, True),
        ({"database_url": "postgresql+psycopg://db/keiko", "auth": False}, False),
    ],
)
def test_auth_is_off_only_for_the_embedded_defaults(fields: dict, enabled: bool) -> None:
    assert Settings(**fields).auth_enabled is enabled


def test_settings_refuse_a_short_admin_key_and_bad_rates() -> None:
    with pytest.raises(ValidationError, match="32 characters"):
        Settings(admin_key="short")
    with pytest.raises(ValidationError):
        Settings(rate_limit_predict="lots per second")


def test_keys_are_random_and_only_their_hash_is_kept() -> None:
    first, second = new_key(), new_key()
    assert first.startswith(KEY_PREFIX) and first != second and len(first) > 40
    assert len(hash_key(first)) == 64 and hash_key(first) != hash_key(second)
    assert first not in hash_key(first)


def test_rate_limit_counts_per_key_and_says_when_to_retry() -> None:
    limiter = RateLimiter(MemoryStorage())
    alice, bob = Caller("u1", "k1"), Caller("u2", "k2")
    for _ in range(3):
        limiter.hit("POST /predict", "3/minute", alice)
    with pytest.raises(TooManyRequests) as refused:
        limiter.hit("POST /predict", "3/minute", alice)
    assert refused.value.headers is not None
    assert 1 <= int(refused.value.headers["Retry-After"]) <= 60
    limiter.hit("POST /predict", "3/minute", bob)  # another key, another budget
    limiter.hit("POST /jobs", "3/minute", alice)  # another endpoint, another budget
    for _ in range(10):  # authentication off: no key to count by
        limiter.hit("POST /predict", "3/minute", Caller("local", None))


def test_the_window_moves() -> None:
    limiter = RateLimiter(MemoryStorage())
    alice = Caller("u1", "k1")
    limiter.hit("POST /predict", "2/second", alice)
    time.sleep(0.5)
    limiter.hit("POST /predict", "2/second", alice)
    with pytest.raises(TooManyRequests):
        limiter.hit("POST /predict", "2/second", alice)
    time.sleep(0.55)  # the first hit has left the window, the second has not
    limiter.hit("POST /predict", "2/second", alice)
    with pytest.raises(TooManyRequests):
        limiter.hit("POST /predict", "2/second", alice)


def test_rate_limit_storage_follows_the_broker() -> None:
    assert storage_url(Settings()) == "memory://"
    assert storage_url(Settings(broker_url="redis://r:6379/1")) == "redis://r:6379/1"
    explicit = Settings(broker_url="redis://r/1", rate_limit_storage_url="memcached://m:11211")
    assert storage_url(explicit) == "memcached://m:11211"


def test_idempotency_keys_and_fingerprints() -> None:
    assert check_key(None) is None and check_key("a-b_c") == "a-b_c"
    for bad in ("", "x" * 256, "new\nline"):
        with pytest.raises(Exception, match="Idempotency-Key"):
            check_key(bad)
    assert fingerprint("a", "bc") != fingerprint("ab", "c")
    assert fingerprint("a", "b") == fingerprint("a", "b")
