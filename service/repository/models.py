"""Model rows: lookups for their owner, pages of them, a job's model, and a trained model's
new row."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.repository._common import _owned, _page, _storable
from service.tables import ApiKey, Model, new_id

# Models -----------------------------------------------------------------------------------


def get_model(session: Session, *, model_id: str, owner_id: str | None) -> Model | None:
    return _owned(session, Model, model_id, owner_id)


def key_and_model(
    session: Session, *, key_hash: str, model_id: str
) -> tuple[str, str, Model | None] | None:
    """An API key's (id, user id) and that user's model `model_id` (None when they have no
    such model), in one query: the predict path's only round trip to the database. None
    when no key has this hash."""
    if not _storable(model_id):
        model_id = ""  # no row has such an id; the key is still looked up
    query = (
        select(ApiKey.id, ApiKey.user_id, Model)
        .outerjoin(Model, (Model.owner_id == ApiKey.user_id) & (Model.id == model_id))
        .where(ApiKey.key_hash == key_hash)
    )
    row = session.execute(query).first()
    return None if row is None else (row[0], row[1], row[2])


def list_models(
    session: Session, *, owner_id: str, limit: int, offset: int
) -> tuple[Sequence[Model], int]:
    query = select(Model).where(Model.owner_id == owner_id)
    return _page(session, query, Model, limit, offset)


def model_for_job(session: Session, *, job_id: str) -> Model | None:
    return session.scalars(select(Model).where(Model.job_id == job_id)).first()


def new_model_id() -> str:
    """An id for a model about to be trained: its bundle's folder is named by it, and the
    bundle is written before its row."""
    return new_id()


def add_model(
    session: Session,
    *,
    model_id: str,
    owner_id: str,
    job_id: str,
    kind: str,
    task: str,
    input_schema: dict[str, Any],
    output: dict[str, Any],
    metrics: dict[str, Any],
    path: str,
    sha256: str,
) -> None:
    """A trained model's row, once its bundle is in the artifact store at `path`; written
    when the session flushes, in the transaction that records how its job ended."""
    session.add(
        Model(
            id=model_id,
            owner_id=owner_id,
            job_id=job_id,
            kind=kind,
            task=task,
            input_schema=input_schema,
            output=output,
            metrics=metrics,
            path=path,
            sha256=sha256,
        )
    )
