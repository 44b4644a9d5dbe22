"""In-memory cache of loaded models, so a model is read from disk once, not per request."""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fastapi.security import HTTPAuthorizationCredentials
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from models.bundle import load_bundle
from models.checkpoint import CorruptCheckpointError
from models.predictors import Servable
from models.registry import get_kind
from service import repository
from service.admissions import ModelRef, get_admissions
from service.auth import Caller
from service.batching import Batcher
from service.deps import get_store
from service.errors import Conflict, NotFound, ServiceUnavailable
from service.metrics import record_batch, record_lookup, record_prediction
from service.settings import Settings
from service.storage import ArtifactStore, StoreUnavailable
from service.tables import Model

log = logging.getLogger("keiko")


Inputs = list[Any] | np.ndarray  # one call's inputs: JSON's lists, or the OIP's tensor
Call = tuple[str, Inputs]  # (model id, inputs) of one predict call


@dataclass(frozen=True)
class Served:
    """A loaded model and the batcher its concurrent calls share."""

    predictor: Servable
    batcher: Batcher[Inputs, dict[str, Any]]

    async def predict(self, model_id: str, inputs: Inputs) -> dict[str, Any]:
        """The answer for `inputs`; the network's pass shared with concurrent calls, each
        call checked and decoded on its own (`InputError` names what is wrong with its
        inputs; a bad call never harms the others of its batch). Counted in the metrics."""
        started = time.perf_counter()
        result = await self.batcher.run(inputs, len(inputs))
        record_prediction(model_id, len(inputs), time.perf_counter() - started)
        return result


def answer_batch(predictor: Servable, calls: list[Inputs]) -> list[dict[str, Any] | Exception]:
    """Each call's inputs encoded on their own, one forward pass for all that were
    accepted, each call's rows decoded (in a worker thread)."""
    refused: dict[int, Exception] = {}
    encoded: dict[int, np.ndarray] = {}
    for i, inputs in enumerate(calls):
        try:
            # An array reaches only encoders that take one (`takes_arrays`: the OIP route).
            encoded[i] = predictor.encode(inputs)  # type: ignore[arg-type]
        except Exception as exc:  # InputError (a 422), or a bug that fails this call alone
            refused[i] = exc
    rows: dict[int, torch.Tensor] = {}
    if encoded:
        xs = list(encoded.values())
        out = predictor.forward(xs[0] if len(xs) == 1 else np.concatenate(xs))
        start = 0
        for i, x in encoded.items():
            rows[i] = out[start : start + len(x)]
            start += len(x)
    return [refused[i] if i in refused else predictor.decode(rows[i]) for i in range(len(calls))]


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
        return self.served(model_id, lambda: path, sha256).predictor

    def loaded(self, model_id: str) -> Served | None:
        """The model if it is in memory (no I/O: the event loop may ask)."""
        with self._lock:
            served = self._items.get(model_id)
            if served is not None:
                self._items.move_to_end(model_id)
            return served

    def discard(self, model_id: str) -> None:
        with self._lock:
            self._items.pop(model_id, None)

    def served(self, model_id: str, locate: Callable[[], Path], sha256: str) -> Served:
        """The model in memory, or loaded from the local file `locate()` gives (for the S3
        store, a download into this machine's cache, once)."""
        with self._lock:
            if model_id in self._items:
                self._items.move_to_end(model_id)
                return self._items[model_id]
        predictor = load_bundle(locate(), expected_sha256=sha256, kinds=get_kind)
        batcher: Batcher[Inputs, dict[str, Any]] = Batcher(
            functools.partial(answer_batch, predictor),
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


def settings_cache(settings: Settings) -> ModelCache:
    return model_cache(
        settings.model_cache_size, settings.predict_batch_rows, settings.predict_batch_delay_ms
    )


def load_served(
    model: ModelRef | Model | None, model_id: str, settings: Settings, store: ArtifactStore
) -> Served:
    """`model` loaded (cached) with its batcher; 404 for no model, 409 when its file is
    missing or altered."""
    if model is None:
        raise NotFound(f"no model with id {model_id!r}")
    cache = settings_cache(settings)
    try:
        locate = functools.partial(store.local, model.path, model.sha256, sidecar=True)
        return cache.served(model.id, locate, model.sha256)
    except (CorruptCheckpointError, FileNotFoundError) as exc:
        raise unloadable(model.id, exc) from exc
    except StoreUnavailable as exc:
        raise ServiceUnavailable(f"model {model.id!r} cannot be read now: {exc}") from exc


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


async def admit(
    credentials: HTTPAuthorizationCredentials | None, model_id: str, settings: Settings
) -> tuple[Caller, ModelRef | None]:
    """The caller and their model `model_id` (None: no such model of theirs): from the
    process's memory when it can tell, else from SQL in a worker thread. 401/403 for the key."""
    admissions = get_admissions()
    found = admissions.cached(credentials, model_id, settings)
    if found is not None:
        record_lookup("memory")
        return found
    record_lookup("database")
    return await run_in_threadpool(admissions.admit, credentials, model_id, settings)


async def serve(model: ModelRef | None, model_id: str, settings: Settings) -> Served:
    """`load_served`, without a worker thread when the model is in memory already."""
    if model is not None and (served := settings_cache(settings).loaded(model.id)) is not None:
        return served
    return await run_in_threadpool(load_served, model, model_id, settings, get_store())
