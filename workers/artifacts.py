"""Registering a trained model: its bundle in the artifact store and its row in SQL."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from models.base import TrainResult
from models.bundle import save_bundle
from models.specs import JobSpec
from service import repository
from service.storage import ArtifactStore, model_key


def save_model(
    session: Session,
    store: ArtifactStore,
    *,
    job_id: str,
    spec: JobSpec,
    interface: dict[str, Any],
    result: TrainResult,
    metrics: dict[str, Any],
) -> str:
    existing = repository.model_for_job(session, job_id=job_id)
    if existing is not None:  # a redelivered job that had already registered its model
        return existing.id
    job = repository.get_job(session, job_id=job_id, owner_id=None)
    assert job is not None
    model_id = repository.new_model_id()
    key = model_key(model_id)
    with store.writing(key, sidecar=True) as path:
        sha = save_bundle(path, kind=spec.model.kind, interface=interface, result=result)
    repository.add_model(
        session,
        model_id=model_id,
        owner_id=job.owner_id,
        job_id=job_id,
        kind=spec.model.kind,
        task=spec.task,
        input_schema=interface["input_schema"],
        output=interface["output"],
        metrics=metrics,
        path=key,
        sha256=sha,
    )
    return model_id
