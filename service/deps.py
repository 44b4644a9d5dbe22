"""Typed dependency aliases for routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from sqlalchemy.orm import Session

from service.db import get_session
from service.settings import Settings, get_settings
from service.storage import ArtifactStore, open_store


def get_store() -> ArtifactStore:
    return open_store(get_settings())


SessionDep = Annotated[Session, Depends(get_session)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[ArtifactStore, Depends(get_store)]
