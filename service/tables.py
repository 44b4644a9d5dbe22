"""ORM tables. `tables`, not `models`: `models/` holds the networks."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def new_id() -> str:
    return uuid.uuid4().hex


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime,
        dict[str, Any]: JSON,
        list[Any]: JSON,
    }


LOCAL_USER = "local"  # owns everything when authentication is off (migration 0002 makes it)


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    keys: Mapped[list[ApiKey]] = relationship(
        back_populates="user", order_by="ApiKey.created_at", cascade="all, delete-orphan"
    )


class ApiKey(Base):
    """An API key: only its SHA-256 is stored. Keys are 256 random bits, so a fast hash is
    enough (there is nothing to brute-force); the prefix lets a user recognise a key."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    user: Mapped[User] = relationship(back_populates="keys")


class IdempotentRequest(Base):
    """The first answer to a request sent with an `Idempotency-Key`, replayed on retries."""

    __tablename__ = "idempotent_requests"
    __table_args__ = (UniqueConstraint("owner_id", "key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(256))
    endpoint: Mapped[str] = mapped_column(String(64))  # "POST /jobs"
    fingerprint: Mapped[str] = mapped_column(String(64))  # sha256 of what was sent
    status_code: Mapped[int] = mapped_column(Integer)
    response: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


def _owner() -> Mapped[str]:
    return mapped_column(ForeignKey("users.id"), index=True, default=LOCAL_USER)


class Dataset(Base):
    __tablename__ = "datasets"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    owner_id: Mapped[str] = _owner()
    name: Mapped[str] = mapped_column(String(256))
    format: Mapped[str] = mapped_column(String(16))  # csv, parquet, npz
    filename: Mapped[str] = mapped_column(Text)  # the uploaded file names, comma-separated
    path: Mapped[str] = mapped_column(Text)  # relative to the artifact store
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))  # of the bytes uploaded
    # Of the object stored (an image upload's canonical NPZ); null for rows from before 0005.
    stored_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    num_rows: Mapped[int] = mapped_column(BigInteger)
    # Tables: [{"name", "dtype", "missing", "unique"}]; arrays: null.
    columns: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    # Arrays: {"x": [...], "y": [...]}; tables: null.
    shape: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    owner_id: Mapped[str] = _owner()
    status: Mapped[str] = mapped_column(String(16), index=True, default="queued")
    kind: Mapped[str] = mapped_column(String(32))
    task: Mapped[str] = mapped_column(String(32))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    dataset_id: Mapped[str | None] = mapped_column(
        ForeignKey("datasets.id", ondelete="SET NULL"), index=True, nullable=True
    )
    test_dataset_id: Mapped[str | None] = mapped_column(
        ForeignKey("datasets.id", ondelete="SET NULL"), nullable=True
    )
    queue: Mapped[str] = mapped_column(String(64))
    epoch: Mapped[int] = mapped_column(Integer, default=0)
    epochs: Mapped[int] = mapped_column(Integer)
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    error_type: Mapped[str | None] = mapped_column(String(128), nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    worker: Mapped[str | None] = mapped_column(String(256), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(nullable=True)
    device: Mapped[str | None] = mapped_column(String(32), nullable=True)
    # Set once the broker accepted the job's message; NULL means "still to send" (outbox).
    dispatched_at: Mapped[datetime | None] = mapped_column(nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    started_at: Mapped[datetime | None] = mapped_column(nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(nullable=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    # The seq of the job's latest event (see JobEvent); bumped by the UPDATE that writes one.
    event_seq: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Where the running epoch (RL: evaluation interval) is, and the latest history entry;
    # rewritten at most a few times a second, never kept as history.
    progress: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # A study's trial (issue 17): the study, and the trial's number in it (0, 1, ...).
    study_id: Mapped[str | None] = mapped_column(
        ForeignKey("studies.id", ondelete="SET NULL"), index=True, nullable=True
    )
    trial_number: Mapped[int | None] = mapped_column(Integer, nullable=True)

    history: Mapped[list[EpochMetric]] = relationship(
        back_populates="job", order_by="EpochMetric.epoch", cascade="all, delete-orphan"
    )
    checkpoints: Mapped[list[Checkpoint]] = relationship(
        back_populates="job", order_by="Checkpoint.epoch", cascade="all, delete-orphan"
    )
    model: Mapped[Model | None] = relationship(back_populates="job")


class Study(Base):
    """A hyperparameter search (issue 17): its spec as posted, and where it stands. Its
    trials are jobs (`jobs.study_id`); Optuna's own record of them (parameters, values,
    intermediate values) lives in Optuna's storage under the study's name
    (service.studies)."""

    __tablename__ = "studies"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    owner_id: Mapped[str] = _owner()
    status: Mapped[str] = mapped_column(String(16), index=True, default="running")
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    metric: Mapped[str] = mapped_column(String(64))
    direction: Mapped[str] = mapped_column(String(8))  # maximize, minimize
    n_trials: Mapped[int] = mapped_column(Integer)
    parallelism: Mapped[int] = mapped_column(Integer)
    best_job_id: Mapped[str | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="SET NULL", use_alter=True), nullable=True
    )
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    finished_at: Mapped[datetime | None] = mapped_column(nullable=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class EpochMetric(Base):
    __tablename__ = "epoch_metrics"
    __table_args__ = (UniqueConstraint("job_id", "epoch"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    epoch: Mapped[int] = mapped_column(Integer)
    train_loss: Mapped[float | None] = mapped_column(Float, nullable=True)
    val_loss: Mapped[float | None] = mapped_column(Float, nullable=True)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    seconds: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    job: Mapped[Job] = relationship(back_populates="history")


class JobEvent(Base):
    """One entry of a job's event log, the durable source of `GET /jobs/{id}/events`.

    `seq` counts 1, 2, 3... per job with no gap, in commit order: each writer takes the
    next number by incrementing `jobs.event_seq` in its own transaction, which holds the
    job's row lock (PostgreSQL; SQLite has one writer) until it commits. So a reader that
    sees event n has seen every event before it, and `Last-Event-ID: n` resumes exactly."""

    __tablename__ = "job_events"
    __table_args__ = (UniqueConstraint("job_id", "seq"),)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    type: Mapped[str] = mapped_column(String(16))  # status, epoch, checkpoint, rewind
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Checkpoint(Base):
    __tablename__ = "checkpoints"
    __table_args__ = (UniqueConstraint("job_id", "epoch"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    epoch: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    job: Mapped[Job] = relationship(back_populates="checkpoints")


class Model(Base):
    __tablename__ = "models"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    owner_id: Mapped[str] = _owner()
    job_id: Mapped[str | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="SET NULL"), unique=True, nullable=True
    )
    kind: Mapped[str] = mapped_column(String(32))
    task: Mapped[str] = mapped_column(String(32))
    input_schema: Mapped[dict[str, Any]] = mapped_column(JSON)
    output: Mapped[dict[str, Any]] = mapped_column(JSON)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    path: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    job: Mapped[Job | None] = relationship(back_populates="model")
