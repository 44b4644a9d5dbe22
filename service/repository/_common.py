"""What the repository's modules share: the job states callers test against, and the
ownership lookups and paging of datasets, jobs and models."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from service.tables import Dataset, Job, Model, Study

ACTIVE = ("queued", "running")

FINISHED = ("succeeded", "failed", "cancelled", "pruned")  # pruned: a study stopped it


Owned = TypeVar("Owned", Dataset, Job, Model, Study)

# Ownership: every lookup made for a caller passes `owner_id`; workers pass None (any owner).
# Another user's row is then simply not found, and the API answers 404 as for a missing one.


def _storable(row_id: str) -> bool:
    # PostgreSQL text cannot hold NUL: no row has such an id, and asking for one is an error.
    return "\x00" not in row_id


def _owned(session: Session, table: type[Owned], row_id: str, owner_id: str | None) -> Owned | None:
    row = session.get(table, row_id) if _storable(row_id) else None
    if row is None or (owner_id is not None and row.owner_id != owner_id):
        return None
    return row


def _page(
    session: Session, query: Select[Owned], table: type[Owned], limit: int, offset: int
) -> tuple[Sequence[Owned], int]:
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(
        query.order_by(table.created_at.desc(), table.id).limit(limit).offset(offset)
    ).all()
    return rows, total
