"""datasets.stored_sha256: the sha256 of the object kept in the artifact store

An image upload is stored as a canonical NPZ, not as the bytes sent (`sha256`); caches and
integrity checks of the object store need the stored object's own digest.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("datasets") as batch:
        batch.add_column(sa.Column("stored_sha256", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("datasets") as batch:
        batch.drop_column("stored_sha256")
