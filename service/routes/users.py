"""Users and their API keys, managed with the admin key (KEIKO_ADMIN_KEY)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response
from sqlalchemy.exc import IntegrityError

from service import repository
from service.auth import AdminDep, issue_key
from service.deps import SessionDep
from service.errors import Conflict, NotFound, responses
from service.revocations import get_revocations
from service.schemas import KeyCreate, KeyCreated, KeyRead, Page, UserCreate, UserRead
from service.tables import User

router = APIRouter(tags=["users"], responses=responses(401, 403))


@router.post(
    "/users", status_code=201, response_model=UserRead, summary="Create a user",
    responses=responses(400, 409, 422),
)  # fmt: skip
def create_user(body: UserCreate, _admin: AdminDep, session: SessionDep) -> User:
    """A user owns the datasets, jobs and models made with their keys."""
    if repository.user_named(session, name=body.name) is not None:
        raise Conflict(f"a user named {body.name!r} exists")
    user = User(name=body.name)
    session.add(user)
    try:
        session.commit()
    except IntegrityError as exc:  # created concurrently
        raise Conflict(f"a user named {body.name!r} exists") from exc
    return user


@router.get("/users", response_model=Page[UserRead], summary="List users")
def list_users(
    _admin: AdminDep,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**31)] = 0,
) -> Page[UserRead]:
    """Users, oldest first (the built-in `local` owns what was made with auth off), in the
    envelope every list has: `items`, `total`, `limit`, `offset`."""
    rows, total = repository.list_users(session, limit=limit, offset=offset)
    items = [UserRead.model_validate(row) for row in rows]
    return Page[UserRead](items=items, total=total, limit=limit, offset=offset)


@router.post(
    "/users/{user_id}/keys", status_code=201, response_model=KeyCreated,
    summary="Create an API key", responses=responses(400, 404, 422),
)  # fmt: skip
def create_key(
    user_id: str, _admin: AdminDep, session: SessionDep, body: KeyCreate | None = None
) -> KeyCreated:
    """A new key for the user; the answer is the only time the key itself is shown."""
    if repository.get_user(session, user_id=user_id) is None:
        raise NotFound(f"no user with id {user_id!r}")
    key, secret = issue_key(session, user_id=user_id, name=(body or KeyCreate()).name)
    session.commit()
    return KeyCreated(**KeyRead.model_validate(key).model_dump(), key=secret)


@router.get(
    "/users/{user_id}/keys", response_model=Page[KeyRead], summary="List a user's keys",
    responses=responses(404),
)  # fmt: skip
def list_keys(
    user_id: str,
    _admin: AdminDep,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**31)] = 0,
) -> Page[KeyRead]:
    """A user's keys, oldest first: names, prefixes and dates, never the keys themselves."""
    if repository.get_user(session, user_id=user_id) is None:
        raise NotFound(f"no user with id {user_id!r}")
    rows, total = repository.list_keys(session, user_id=user_id, limit=limit, offset=offset)
    items = [KeyRead.model_validate(row) for row in rows]
    return Page[KeyRead](items=items, total=total, limit=limit, offset=offset)


@router.delete(
    "/keys/{key_id}", status_code=204, summary="Delete an API key", responses=responses(404)
)
def delete_key(key_id: str, _admin: AdminDep, session: SessionDep) -> Response:
    """The key stops working at once, on every API process."""
    key = repository.get_key(session, key_id=key_id)
    if key is None:
        raise NotFound(f"no API key with id {key_id!r}")
    session.delete(key)
    session.commit()
    get_revocations().revoke()  # every API process forgets it before this answers
    return Response(status_code=204)
