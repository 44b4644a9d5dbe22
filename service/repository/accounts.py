"""Users, their API keys, and the idempotent requests remembered for them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from service.repository._common import _storable
from service.tables import ApiKey, IdempotentRequest, User

# Users and keys ---------------------------------------------------------------------------


def get_user(session: Session, *, user_id: str) -> User | None:
    return session.get(User, user_id) if _storable(user_id) else None


def user_named(session: Session, *, name: str) -> User | None:
    return session.scalars(select(User).where(User.name == name)).first()


def list_users(session: Session, *, limit: int, offset: int) -> tuple[Sequence[User], int]:
    """A page of users, oldest first, and how many there are."""
    total = session.scalar(select(func.count()).select_from(User)) or 0
    query = select(User).order_by(User.created_at, User.id).limit(limit).offset(offset)
    return session.scalars(query).all(), total


def list_keys(
    session: Session, *, user_id: str, limit: int, offset: int
) -> tuple[Sequence[ApiKey], int]:
    """A page of a user's keys, oldest first, and how many they have."""
    mine = ApiKey.user_id == user_id
    total = session.scalar(select(func.count()).select_from(ApiKey).where(mine)) or 0
    query = select(ApiKey).where(mine).order_by(ApiKey.created_at, ApiKey.id)
    return session.scalars(query.limit(limit).offset(offset)).all(), total


def find_key(session: Session, *, key_hash: str) -> ApiKey | None:
    return session.scalars(select(ApiKey).where(ApiKey.key_hash == key_hash)).first()


def get_key(session: Session, *, key_id: str) -> ApiKey | None:
    return session.get(ApiKey, key_id) if _storable(key_id) else None


# Idempotent requests ----------------------------------------------------------------------


def idempotent_request(
    session: Session, *, owner_id: str, key: str, newer_than: datetime
) -> IdempotentRequest | None:
    query = select(IdempotentRequest).where(
        IdempotentRequest.owner_id == owner_id,
        IdempotentRequest.key == key,
        IdempotentRequest.created_at >= newer_than,
    )
    return session.scalars(query).first()


def forget_idempotent_requests(session: Session, *, owner_id: str, older_than: datetime) -> None:
    session.execute(
        delete(IdempotentRequest).where(
            IdempotentRequest.owner_id == owner_id, IdempotentRequest.created_at < older_than
        )
    )
