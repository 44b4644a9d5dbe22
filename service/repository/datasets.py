"""Dataset rows: lookups for their owner, pages of them, and whether an active job uses
one."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from service.repository._common import ACTIVE, _owned, _page
from service.tables import Dataset, Job

# Datasets ---------------------------------------------------------------------------------


def get_dataset(session: Session, *, dataset_id: str, owner_id: str | None) -> Dataset | None:
    return _owned(session, Dataset, dataset_id, owner_id)


def list_datasets(
    session: Session, *, owner_id: str, limit: int, offset: int
) -> tuple[Sequence[Dataset], int]:
    query = select(Dataset).where(Dataset.owner_id == owner_id)
    return _page(session, query, Dataset, limit, offset)


def dataset_in_use(session: Session, *, dataset_id: str) -> bool:
    query = select(func.count()).where(
        or_(Job.dataset_id == dataset_id, Job.test_dataset_id == dataset_id),
        Job.status.in_(ACTIVE),
    )
    return bool(session.scalar(query))
