"""`Idempotency-Key` on creating requests: a retry gets the first answer, not a duplicate.

The first answer is stored with the row it describes, in the same transaction; two requests
racing with one key both try, the unique (owner, key) constraint lets one commit, and the
other rolls back (its row and files with it) and replays the winner's answer. Keys are kept
for 24 hours per user. Reusing a key for a different request is a 422.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import timedelta
from typing import Annotated, Any

from fastapi import Header
from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service import repository
from service.errors import Unprocessable
from service.tables import IdempotentRequest, utcnow

KEEP_FOR = timedelta(hours=24)
REPLAYED = "Idempotent-Replayed"

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="Any unique string (a UUID): a retry with the same key and request "
        "returns the first answer instead of creating a duplicate. Kept 24 hours.",
    ),
]


def check_key(key: str | None) -> str | None:
    if key is None:
        return None
    if not 1 <= len(key) <= 255 or not key.isprintable():
        raise Unprocessable("Idempotency-Key must be 1 to 255 printable characters")
    return key


def fingerprint(*parts: str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()


def replay(
    session: Session, *, owner_id: str, key: str | None, endpoint: str, print_: str
) -> JSONResponse | None:
    """The stored answer for this key, or None when the request is new."""
    if key is None:
        return None
    found = repository.idempotent_request(
        session, owner_id=owner_id, key=key, newer_than=utcnow() - KEEP_FOR
    )
    if found is None:
        return None
    if found.endpoint != endpoint or found.fingerprint != print_:
        raise Unprocessable(
            f"Idempotency-Key {key!r} was used for a different request "
            f"({found.endpoint}); use a new key for a new request"
        )
    return JSONResponse(found.response, status_code=found.status_code, headers={REPLAYED: "true"})


def commit_once(
    session: Session,
    *,
    owner_id: str,
    key: str | None,
    endpoint: str,
    print_: str,
    status_code: int,
    answer: Callable[[], dict[str, Any]],
) -> JSONResponse | None:
    """Commit the session's new rows with the answer for this key. None: committed, this
    request won. A response: a concurrent request with the key won; this one rolled back."""
    if key is None:
        session.commit()
        return None
    session.flush()  # ids and defaults, for the answer
    # Written only here, in the transaction that commits anyway: looking a key up writes
    # nothing, so no lock is held while an upload is parsed.
    repository.forget_idempotent_requests(
        session, owner_id=owner_id, older_than=utcnow() - KEEP_FOR
    )
    session.add(
        IdempotentRequest(
            owner_id=owner_id,
            key=key,
            endpoint=endpoint,
            fingerprint=print_,
            status_code=status_code,
            response=answer(),
        )
    )
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        replayed = replay(session, owner_id=owner_id, key=key, endpoint=endpoint, print_=print_)
        if replayed is None:  # the constraint that failed was another one: not ours to hide
            raise
        return replayed
    return None
