"""job events (the live stream's durable log), each job's event counter and live progress

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 12:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(
            sa.Column("event_seq", sa.Integer(), nullable=False, server_default=sa.text("0"))
        )
        batch.add_column(sa.Column("progress", sa.JSON(), nullable=True))
    op.create_table(
        "job_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("job_id", "seq"),
    )
    backfill()


def backfill() -> None:
    """Jobs recorded before events existed get theirs from what SQL already holds, so a
    finished job's stream replays its history like any other: its epochs, checkpoints and
    final status."""
    bind = op.get_bind()
    meta = sa.MetaData()
    jobs = sa.Table("jobs", meta, autoload_with=bind)
    epochs = sa.Table("epoch_metrics", meta, autoload_with=bind)
    checkpoints = sa.Table("checkpoints", meta, autoload_with=bind)
    models = sa.Table("models", meta, autoload_with=bind)
    events = sa.Table("job_events", meta, autoload_with=bind)
    for job in bind.execute(sa.select(jobs)).mappings().all():
        rows: list[tuple[object, str, dict[str, object]]] = [
            (job["created_at"], "status", _status("queued", job, None, None))
        ]
        if job["started_at"] is not None:
            rows.append((job["started_at"], "status", _status("running", job, None, None)))
        # Per epoch: its history entry, then its checkpoint.
        progress: list[tuple[int, int, dict[str, object]]] = []
        for e in bind.execute(sa.select(epochs).where(epochs.c.job_id == job["id"])).mappings():
            entry = {"epoch": e["epoch"], "train_loss": e["train_loss"],
                     "val_loss": e["val_loss"], "seconds": e["seconds"], **(e["metrics"] or {})}  # fmt: skip
            progress.append((e["epoch"], 0, entry))
        for c in bind.execute(
            sa.select(checkpoints).where(checkpoints.c.job_id == job["id"])
        ).mappings():
            progress.append((c["epoch"], 1, {"epoch": c["epoch"], "sha256": c["sha256"],
                             "created_at": c["created_at"].isoformat()}))  # fmt: skip
        progress.sort(key=lambda p: (p[0], p[1]))
        at = job["updated_at"]
        rows += [(at, "checkpoint" if order else "epoch", data) for _, order, data in progress]
        if job["status"] in ("succeeded", "failed", "cancelled"):
            model_id = bind.execute(
                sa.select(models.c.id).where(models.c.job_id == job["id"])
            ).scalar()
            rows.append(
                (
                    job["finished_at"] or at,
                    "status",
                    _status(job["status"], job, job["metrics"], model_id),
                )
            )
        values = [
            {"job_id": job["id"], "seq": seq, "type": kind, "data": data, "created_at": at}
            for seq, (at, kind, data) in enumerate(rows, start=1)
        ]
        bind.execute(sa.insert(events), values)
        bind.execute(sa.update(jobs).where(jobs.c.id == job["id"]).values(event_seq=len(values)))


def _status(
    status: str, job: sa.RowMapping, metrics: object, model_id: object
) -> dict[str, object]:
    error = None
    if status == "failed" and job["error_type"] is not None:
        error = {"type": job["error_type"], "message": job["error_message"] or ""}
    return {"status": status, "cancel_requested": bool(job["cancel_requested"]),
            "attempt": job["attempts"], "error": error, "metrics": metrics,
            "model_id": model_id}  # fmt: skip


def downgrade() -> None:
    op.drop_table("job_events")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("progress")
        batch.drop_column("event_seq")
