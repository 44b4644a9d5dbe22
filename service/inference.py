"""In-memory cache of loaded models, so a model is read from disk once, not per request."""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from fastapi.security import HTTPAuthorizationCredentials
from sqlalchemy.orm import Session

from models.bundle import load_bundle
from models.checkpoint import CorruptCheckpointError
from models.predictors import Servable
from models.registry import get_kind
from service import repository
from service.auth import Caller, current_caller, current_caller_refuses_admin, hash_key
from service.batching import Batcher
from service.errors import Conflict, NotFound, Unauthorized
from service.metrics import record_batch, record_prediction
from service.settings import Settings
from service.storage import ArtifactStore
from service.tables import Model

log = logging.getLogger("keiko")


@dataclass(frozen=True)
class Served:
    """A loaded model and the batcher its concurrent calls share."""

    predictor: Servable
    batcher: Batcher

    def predict(self, model_id: str, inputs: list[Any]) -> dict[str, Any]:
        """`inputs` checked and encoded on their own (`InputError` names what is wrong; a
        bad call never joins a batch), the network's pass shared with concurrent calls,
        this call's rows decoded; counted in the prediction metrics."""
        started = time.perf_counter()
        x = self.predictor.encode(inputs)
        result = self.predictor.decode(self.batcher.run(x))
        record_prediction(model_id, len(inputs), time.perf_counter() - started)
        return result


class ModelCache:
    """LRU of loaded models keyed by model id; loading happens outside the lock."""

    def __init__(
        self, capacity: int, batch_rows: int = 1024, batch_delay_seconds: float = 0.0
    ) -> None:
        self.capacity = capacity
        self.batch_rows, self.batch_delay_seconds = batch_rows, batch_delay_seconds
        self._items: OrderedDict[str, Served] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, model_id: str, path: Path, sha256: str) -> Servable:
        return self.served(model_id, path, sha256).predictor

    def served(self, model_id: str, path: Path, sha256: str) -> Served:
        with self._lock:
            if model_id in self._items:
                self._items.move_to_end(model_id)
                return self._items[model_id]
        predictor = load_bundle(path, expected_sha256=sha256, kinds=get_kind)
        batcher = Batcher(
            predictor.forward,
            max_rows=self.batch_rows,
            delay_seconds=self.batch_delay_seconds,
            on_batch=record_batch,
        )
        with self._lock:
            served = self._items.setdefault(model_id, Served(predictor, batcher))
            self._items.move_to_end(model_id)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return served

    def __len__(self) -> int:
        return len(self._items)


@lru_cache
def model_cache(capacity: int, batch_rows: int = 1024, batch_delay_ms: float = 0.0) -> ModelCache:
    return ModelCache(capacity, batch_rows, batch_delay_ms / 1000)


def owned_model(
    credentials: HTTPAuthorizationCredentials | None,
    model_id: str,
    session: Session,
    settings: Settings,
) -> tuple[Caller, Model | None]:
    """The caller (by their key, as `current_caller` decides) and their model `model_id`
    (None: they have no such model, a 404 once the caller's rate limit is counted), in one
    SQL query; 401/403 for the key. Read on every call: a deleted key or model is gone at
    once in every API process."""
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


def load_served(
    model: Model | None, model_id: str, settings: Settings, store: ArtifactStore
) -> Served:
    """`model` loaded (cached) with its batcher; 404 for no model, 409 when its file is
    missing or altered."""
    if model is None:
        raise NotFound(f"no model with id {model_id!r}")
    cache = model_cache(
        settings.model_cache_size, settings.predict_batch_rows, settings.predict_batch_delay_ms
    )
    try:
        return cache.served(model.id, store.path(model.path), model.sha256)
    except (CorruptCheckpointError, FileNotFoundError) as exc:
        raise unloadable(model.id, exc) from exc


def unloadable(model_id: str, exc: Exception) -> Conflict:
    """The 409 for a model whose stored file is missing or altered (logged)."""
    log.error("model %s refused: %s", model_id, exc)
    return Conflict(
        f"model {model_id!r} cannot be loaded: its stored file is missing or does not "
        "match the sha256 recorded when it was trained; retrain it or restore the file"
    )


def load_predictor(
    model_id: str, caller: Caller, session: Session, settings: Settings, store: ArtifactStore
) -> tuple[Servable, str]:
    """The cached predictor of one of the caller's models; 404 when they have no such model."""
    model = repository.get_model(session, model_id=model_id, owner_id=caller.user_id)
    if model is None:
        raise NotFound(f"no model with id {model_id!r}")
    return load_served(model, model_id, settings, store).predictor, model.id
