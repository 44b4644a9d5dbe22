"""Users and their API keys, managed with the admin key (KEIKO_ADMIN_KEY)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from sqlalchemy.exc import IntegrityError

from service import repository
from service.auth import AdminDep, issue_key
from service.deps import SessionDep
from service.errors import Conflict, NotFound, responses
from service.revocations import get_revocations
from service.schemas import KeyCreate, KeyCreated, KeyRead, UserCreate, UserRead
from service.tables import ApiKey, User

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


@router.get("/users", response_model=list[UserRead], summary="List users")
def list_users(_admin: AdminDep, session: SessionDep) -> list[User]:
    """Every user, oldest first (the built-in `local` owns what was made with auth off)."""
    return list(repository.list_users(session))


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
    "/users/{user_id}/keys", response_model=list[KeyRead], summary="List a user's keys",
    responses=responses(404),
)  # fmt: skip
def list_keys(user_id: str, _admin: AdminDep, session: SessionDep) -> list[ApiKey]:
    """A user's keys: names, prefixes and dates, never the keys themselves."""
    user = repository.get_user(session, user_id=user_id)
    if user is None:
        raise NotFound(f"no user with id {user_id!r}")
    return list(user.keys)


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
