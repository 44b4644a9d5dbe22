"""In-memory cache of loaded models, so a model is read from disk once, not per request."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from functools import lru_cache
from pathlib import Path

from sqlalchemy.orm import Session

from models.bundle import load_bundle
from models.checkpoint import CorruptCheckpointError
from models.predictors import Servable
from models.registry import get_kind
from service import repository
from service.auth import Caller
from service.errors import Conflict, NotFound
from service.settings import Settings
from service.storage import ArtifactStore

log = logging.getLogger("keiko")


class ModelCache:
    """LRU of predictors keyed by model id; loading happens outside the lock."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, Servable] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, model_id: str, path: Path, sha256: str) -> Servable:
        with self._lock:
            if model_id in self._items:
                self._items.move_to_end(model_id)
                return self._items[model_id]
        predictor = load_bundle(path, expected_sha256=sha256, kinds=get_kind)
        with self._lock:
            self._items[model_id] = predictor
            self._items.move_to_end(model_id)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return predictor

    def __len__(self) -> int:
        return len(self._items)


@lru_cache
def model_cache(capacity: int) -> ModelCache:
    return ModelCache(capacity)


def load_predictor(
    model_id: str, caller: Caller, session: Session, settings: Settings, store: ArtifactStore
) -> tuple[Servable, str]:
    """The cached predictor of one of the caller's models; 404 when they have no such model."""
    model = repository.get_model(session, model_id=model_id, owner_id=caller.user_id)
    if model is None:
        raise NotFound(f"no model with id {model_id!r}")
    cache = model_cache(settings.model_cache_size)
    try:
        return cache.get(model.id, store.path(model.path), model.sha256), model.id
    except (CorruptCheckpointError, FileNotFoundError) as exc:
        log.error("model %s refused: %s", model.id, exc)
        raise Conflict(
            f"model {model.id!r} cannot be loaded: its stored file is missing or does not "
            "match the sha256 recorded when it was trained; retrain it or restore the file"
        ) from exc
