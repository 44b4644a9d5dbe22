"""Who may predict with what, without SQL on every call: each API process keeps the API keys
and model rows that the predict path read, and trusts them only while no key or model has
been deleted since (service.revocations); the first call after a delete anywhere reads SQL
again. Only what exists is kept: an unknown key or model is looked up every time, so a new
key or model works at once, and rows never change once written, so deletion is all there is
to hear of.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Generic, TypeVar

from fastapi.security import HTTPAuthorizationCredentials

from service import repository
from service.auth import Caller, current_caller, current_caller_refuses_admin, hash_key
from service.db import get_sessionmaker
from service.errors import Unauthorized
from service.revocations import Revocations, Token, get_revocations
from service.settings import Settings
from service.tables import LOCAL_USER, Model

CAPACITY = 10_000  # keys, and model rows, kept per process


@dataclass(frozen=True)
class ModelRef:
    """What serving needs of a model's row (rows are never updated, only deleted)."""

    id: str
    owner_id: str
    path: str
    sha256: str
    task: str
    input_schema: dict[str, Any]
    output: dict[str, Any]

    @classmethod
    def of(cls, model: Model) -> ModelRef:
        return cls(model.id, model.owner_id, model.path, model.sha256, model.task,
                   model.input_schema, model.output)  # fmt: skip


V = TypeVar("V")


class _Lru(Generic[V]):
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.items: OrderedDict[str, tuple[Token, V]] = OrderedDict()

    def get(self, key: str, token: Token) -> V | None:
        found = self.items.get(key)
        if found is None or found[0] != token:
            return None
        return found[1]

    def put(self, key: str, token: Token, value: V) -> None:
        self.items[key] = (token, value)
        self.items.move_to_end(key)
        while len(self.items) > self.capacity:
            self.items.popitem(last=False)


class Admissions:
    def __init__(self, revocations: Revocations, capacity: int = CAPACITY) -> None:
        self.revocations = revocations
        self.keys: _Lru[Caller] = _Lru(capacity)
        self.models: _Lru[ModelRef] = _Lru(capacity)
        self._lock = threading.Lock()  # misses are filled from worker threads

    def cached(
        self, credentials: HTTPAuthorizationCredentials | None, model_id: str, settings: Settings
    ) -> tuple[Caller, ModelRef | None] | None:
        """The caller and their model (None: they have no such model) from memory, with no
        I/O; None when memory cannot tell (then `admit`). 401/403 as `current_caller`."""
        token = self.revocations.token()
        if token is None:
            return None
        if not settings.auth_enabled:
            caller = Caller(LOCAL_USER, None)
        else:
            if credentials is None:
                raise Unauthorized("missing API key: send the header 'Authorization: Bearer <key>'")
            current_caller_refuses_admin(credentials.credentials, settings)
            with self._lock:
                known = self.keys.get(hash_key(credentials.credentials), token)
            if known is None:
                return None
            caller = known
        with self._lock:
            model = self.models.get(model_id, token)
        if model is None or model.owner_id != caller.user_id:
            return None  # perhaps theirs and not read yet, or a 404: SQL tells
        return caller, model

    def admit(
        self, credentials: HTTPAuthorizationCredentials | None, model_id: str, settings: Settings
    ) -> tuple[Caller, ModelRef | None]:
        """`cached`'s answer read from SQL (one query), remembered when it names a key and
        a model (blocking: run it in a worker thread)."""
        token = self.revocations.token()  # before the read: a delete during it wins
        with get_sessionmaker()() as session:
            caller, model = owned_model(credentials, model_id, session, settings)
            ref = None if model is None else ModelRef.of(model)
        if token is not None:
            with self._lock:
                if caller.key_id is not None and credentials is not None:
                    self.keys.put(hash_key(credentials.credentials), token, caller)
                if ref is not None:
                    self.models.put(ref.id, token, ref)
        return caller, ref


def owned_model(
    credentials: HTTPAuthorizationCredentials | None,
    model_id: str,
    session: Any,
    settings: Settings,
) -> tuple[Caller, Model | None]:
    """The caller (by their key, as `current_caller` decides) and their model `model_id`
    (None: they have no such model, a 404 once the caller's rate limit is counted), in one
    SQL query; 401/403 for the key."""
    if not settings.auth_enabled:
        caller = current_caller(credentials, session, settings)
        model = repository.get_model(session, model_id=model_id, owner_id=caller.user_id)
    else:
        if credentials is None:
            raise Unauthorized("missing API key: send the header 'Authorization: Bearer <key>'")
        current_caller_refuses_admin(credentials.credentials, settings)
        found = repository.key_and_model(
            session, key_hash=hash_key(credentials.credentials), model_id=model_id
        )
        if found is None:
            raise Unauthorized("unknown or deleted API key")
        key_id, user_id, model = found
        caller = Caller(user_id, key_id)
    return caller, model


@lru_cache
def get_admissions() -> Admissions:
    return Admissions(get_revocations())
