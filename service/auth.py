"""Who is calling: a user's API key, the admin key, or nobody when auth is off.

Keys are `keiko_` plus 256 random bits. Only their SHA-256 is stored: with that much entropy
there is nothing to brute-force, so a slow password hash would only slow every request.
The admin key comes from the environment and manages users and keys; it owns no data.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from service import repository
from service.db import get_sessionmaker
from service.deps import SessionDep, SettingsDep
from service.errors import Forbidden, Unauthorized
from service.settings import Settings, get_settings
from service.tables import LOCAL_USER, ApiKey

log = logging.getLogger("keiko")

KEY_PREFIX = "keiko_"

bearer = HTTPBearer(
    auto_error=False,
    description="A user's API key (`POST /users/{id}/keys`), or the admin key for /users.",
)
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


@dataclass(frozen=True)
class Caller:
    """The user a request acts for; `key_id` is None when authentication is off."""

    user_id: str
    key_id: str | None


PREFIX_LENGTH = 12  # "keiko_" and six random characters: enough to recognise a key


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def issue_key(session: Session, *, user_id: str, name: str) -> tuple[ApiKey, str]:
    """A new key row for the user (not yet committed) and the key itself."""
    secret = new_key()
    key = ApiKey(
        user_id=user_id, name=name, prefix=secret[:PREFIX_LENGTH], key_hash=hash_key(secret)
    )
    session.add(key)
    return key, secret


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _is_admin_key(token: str, settings: Settings) -> bool:
    if settings.admin_key is None:
        return False
    return hmac.compare_digest(token.encode(), settings.admin_key.get_secret_value().encode())


def current_caller_refuses_admin(token: str, settings: Settings) -> None:
    if _is_admin_key(token, settings):
        raise Forbidden("the admin key manages users and keys only; use a user's API key")


def current_caller(credentials: Credentials, session: SessionDep, settings: SettingsDep) -> Caller:
    if not settings.auth_enabled:
        return Caller(LOCAL_USER, None)
    if credentials is None:
        raise Unauthorized("missing API key: send the header 'Authorization: Bearer <key>'")
    token = credentials.credentials
    current_caller_refuses_admin(token, settings)
    key = repository.find_key(session, key_hash=hash_key(token))
    if key is None:
        raise Unauthorized("unknown or deleted API key")
    return Caller(key.user_id, key.id)


def authenticate(credentials: HTTPAuthorizationCredentials | None, settings: Settings) -> Caller:
    """`current_caller` in a short session of its own, for long responses (event streams)
    that must not hold a database connection while they wait."""
    with get_sessionmaker()() as session:
        return current_caller(credentials, session, settings)


def require_admin(credentials: Credentials, settings: SettingsDep) -> None:
    if settings.admin_key is None:
        raise Unauthorized("no admin key is configured: set KEIKO_ADMIN_KEY on the API")
    if credentials is None:
        raise Unauthorized("this endpoint needs the admin key: 'Authorization: Bearer <key>'")
    if not _is_admin_key(credentials.credentials, settings):
        raise Forbidden("this endpoint needs the admin key")


def require_any_key(credentials: Credentials, session: SessionDep, settings: SettingsDep) -> None:
    """A user's key or the admin key (operations endpoints such as /ready)."""
    if not settings.auth_enabled:
        return
    if credentials is not None and _is_admin_key(credentials.credentials, settings):
        return
    current_caller(credentials, session, settings)


async def key_present(credentials: Credentials) -> HTTPAuthorizationCredentials | None:
    """For routes that check the key in their own worker thread (one hop, not one per
    dependency): a missing key is a 401 at once, before the body is looked at; the key
    itself is checked by `current_caller` in the route."""
    if credentials is None and get_settings().auth_enabled:
        raise Unauthorized("missing API key: send the header 'Authorization: Bearer <key>'")
    return credentials


CallerDep = Annotated[Caller, Depends(current_caller)]
KeyDep = Annotated[HTTPAuthorizationCredentials | None, Depends(key_present)]
AdminDep = Annotated[None, Depends(require_admin)]
AnyKeyDep = Annotated[None, Depends(require_any_key)]


def warn_if_open(settings: Settings) -> None:
    """Say loudly, at start-up, when anyone who can reach the port can use everything."""
    if not settings.auth_enabled:
        banner = "!" * 78
        log.warning(
            "\n%s\n  AUTHENTICATION IS OFF: every request acts as the user 'local'.\n"
            "  Fine for one person on this machine (the API listens on loopback by default).\n"
            "  Before exposing the port, set KEIKO_AUTH=true and KEIKO_ADMIN_KEY.\n%s",
            banner,
            banner,
        )
    elif settings.admin_key is None:
        log.warning("authentication is on but KEIKO_ADMIN_KEY is not set: no one can create users")
