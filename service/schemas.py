"""API request and response models. Field descriptions are the user's manual on /docs."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

import models.registry  # noqa: F401  (kinds named in KEIKO_KINDS join JobSpec before JobRead)
from models.specs import JobSpec

T = TypeVar("T")

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled", "pruned"]


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int = Field(description="Items matching the filter, over all pages.")
    limit: int
    offset: int


class ColumnInfo(BaseModel):
    name: str
    dtype: str = Field(description="integer, float, boolean or string.")
    missing: int = Field(description="Empty or NaN cells.")
    unique: int = Field(description="Distinct non-missing values.")
    unique_exact: bool = Field(
        True,
        description="False when the column has more than 100,000 distinct values: `unique` "
        "is then an estimate (within about 0.3 %).",
    )


class DatasetRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    format: str = Field(description="csv, parquet or npz.")
    filename: str = Field(description="The uploaded file's name.")
    num_rows: int
    columns: list[ColumnInfo] | None = Field(None, description="Tables: name and dtype per column.")
    shape: dict[str, Any] | None = Field(None, description="Arrays: shapes and dtypes of x and y.")
    size_bytes: int
    sha256: str
    created_at: datetime


MAX_ROLLOUT_EPISODES = 100


class Progress(BaseModel):
    epoch: int = Field(description="Epochs completed (RL: evaluations done).")
    epochs: int
    step: int | None = Field(None, description="RL: environment steps done.")
    steps: int | None = Field(None, description="RL: training.total_steps.")
    fraction: float = Field(description="epoch / epochs (RL: step / steps), 0 to 1.")
    eta_seconds: float | None = Field(
        None, description="Estimated seconds left, from the mean epoch time so far."
    )
    batch: int | None = Field(
        None,
        description="Mini-batches done in the running epoch (RL: steps since the last "
        "evaluation); moves a few times a second.",
    )
    batches: int | None = Field(
        None, description="Mini-batches in an epoch (RL: steps between evaluations)."
    )


class MainMetric(BaseModel):
    name: str = Field(
        description="e.g. test_accuracy, validation_rmse, val_accuracy (the latest epoch of a "
        "running job) or eval_return_mean."
    )
    value: float | None


class HistoryEntry(BaseModel):
    """One epoch: losses plus the task's scalar metrics on the validation part
    (`val_accuracy`, `val_rmse`, ...)."""

    model_config = ConfigDict(extra="allow")

    epoch: int
    train_loss: float | None
    val_loss: float | None
    seconds: float = Field(description="Wall time of the epoch.")


class CheckpointRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    epoch: int
    sha256: str
    metrics: dict[str, Any]
    created_at: datetime


class JobError(BaseModel):
    type: str = Field(description="Error class, e.g. DivergedError, DataError, WorkerLost.")
    message: str


class JobSummary(BaseModel):
    id: str
    status: JobStatus
    kind: str
    task: str
    dataset_id: str | None
    progress: Progress
    model_id: str | None
    error: JobError | None
    study_id: str | None = Field(None, description="The study this job is a trial of.")
    trial_number: int | None = Field(None, description="Its trial's number in that study.")
    main_metric: MainMetric | None = Field(
        None,
        description="The job's headline number: accuracy (classification), RMSE (regression, "
        "forecasting) or the evaluation return (RL), from the final metrics' test part, else "
        "validation, else train; without final metrics (running, cancelled, failed), from "
        "the latest history entry.",
    )
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class JobRead(JobSummary):
    spec: JobSpec
    test_dataset_id: str | None
    history: list[HistoryEntry] = Field(
        description="Per-epoch entries (RL: per evaluation); all of them unless the `history` "
        "query parameter limits them (`GET /jobs/{id}/history` pages through them)."
    )
    history_total: int = Field(description="History entries the job has in all.")
    metrics: dict[str, Any] | None = Field(
        None,
        description='Final metrics: {"train": {...}, "validation": {...}, "test": {...}}; '
        "NaN or infinite values are null.",
    )
    checkpoints: list[CheckpointRead]
    device: str | None = Field(None, description="Device the job trained on.")
    attempts: int = Field(description="Times a worker has started (or resumed) the job.")
    updated_at: datetime


class HistoryPage(BaseModel):
    job_id: str
    total: int = Field(description="History entries the job has in all.")
    downsampled: bool = Field(
        description="True when `points` thinned the entries (LTTB per series, keeping each "
        "series' shape, minimum and maximum; the first and last entries always kept)."
    )
    last_event_id: str = Field(
        description="The job's latest event when this was read: open `GET /jobs/{id}/events` "
        "with `Last-Event-ID` set to it to follow on from here (an entry may come again; "
        "key them by epoch)."
    )
    items: list[HistoryEntry]


class ModelRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    kind: str
    task: str
    job_id: str | None
    input_schema: dict[str, Any] = Field(
        description='{"features": [{"name", "type", "categories"?}]} for tables, '
        '{"shape": [...]} for arrays.'
    )
    output: dict[str, Any] = Field(description='{"labels": [...]} for classification.')
    metrics: dict[str, Any]
    created_at: datetime


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_id: str = Field(min_length=1, max_length=64)
    inputs: list[dict[str, Any] | list[Any] | str | int | float] = Field(
        min_length=1,
        description="Records ({column: value}) or arrays in feature order (tables); nested "
        "arrays of the training input shape (arrays, images, sequences); base64-encoded "
        "PNG/JPEG strings (image models); observations (dqn: vectors, or state numbers for "
        "environments with discrete states, as for q_learning and sarsa).",
    )


class RecipeRead(BaseModel):
    name: str = Field(description="What `POST /jobs` takes as `recipe`.")
    title: str
    description: str
    spec: dict[str, Any] = Field(
        description="The job spec it stands for, without a dataset; the job's own fields go "
        "on top of it."
    )
    needs: list[str] = Field(description="Fields the job must add (`dataset_id`, `target`).")
    reached: str = Field(description="What it reached where Keiko measured it (BENCHMARKS.md).")


class RolloutRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    episodes: int = Field(1, ge=1, le=MAX_ROLLOUT_EPISODES, description="Episodes to play.")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Episode k starts from seed + k.")


class RolloutResponse(BaseModel):
    model_id: str
    returns: list[float] = Field(description="Undiscounted return of each episode.")
    lengths: list[int] = Field(description="Steps of each episode.")
    paths: list[list[list[int]]] | None = Field(
        None, description="GridWorld: the [row, col] cells visited, start included."
    )


class PredictResponse(BaseModel):
    model_id: str
    predictions: list[Any] = Field(description="Original labels (classification) or values.")
    probabilities: list[list[float]] | None = Field(
        None, description="Classification: one row per input, columns in `labels` order."
    )
    labels: list[Any] | None = Field(None, description="Classification: the class labels.")
    actions: list[int] | None = Field(
        None, description="Reinforcement learning: the greedy action for each observation."
    )
    q_values: list[list[float]] | None = Field(
        None, description="Reinforcement learning: Q-value of every action, one row per input."
    )


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    database: str
    broker: str


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]*$", examples=["ada"]
    )


class UserRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    created_at: datetime


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        "default", min_length=1, max_length=128, description="What the key is for.",
        pattern=r"^[^\x00-\x1f\x7f]+$",
    )  # fmt: skip


class KeyRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    user_id: str
    name: str
    prefix: str = Field(description="The key's first characters, to recognise it.")
    created_at: datetime


class KeyCreated(KeyRead):
    key: str = Field(description="The key itself. Shown once: only its hash is stored.")


StudyStatus = Literal["running", "succeeded", "failed", "cancelled"]


class TrialRead(BaseModel):
    number: int = Field(description="The trial's number in its study: 0, 1, 2...")
    job_id: str | None = Field(
        description="The trial's job (`GET /jobs/{id}`); null for a sample that failed the "
        "job spec's validation (`error` says why)."
    )
    status: JobStatus = Field(description="Its job's status; `pruned`: the pruner stopped it.")
    params: dict[str, Any] = Field(description="The sampled value of each path of the space.")
    value: float | None = Field(description="The study's metric when the trial succeeded.")
    epochs_reported: int = Field(
        description="Epochs (RL: evaluations) whose metric the pruner has seen."
    )
    model_id: str | None
    error: str | None


class BestTrial(BaseModel):
    number: int
    job_id: str | None
    model_id: str | None
    value: float
    params: dict[str, Any]


class StudySummary(BaseModel):
    id: str
    status: StudyStatus = Field(
        description="`running` until no trial runs and none is left to ask for; then "
        "`succeeded` (a trial ended with a value), `failed` (none did) or `cancelled`."
    )
    metric: str
    direction: Literal["maximize", "minimize"]
    n_trials: int = Field(description="Trials in all (a grid's size when that is fewer).")
    parallelism: int = Field(description="Trials queued or running at once.")
    counts: dict[str, int] = Field(description="Its trials by status.")
    best_value: float | None
    best_job_id: str | None
    error: str | None = Field(description="Why a `failed` study failed.")
    created_at: datetime
    finished_at: datetime | None


class StudyRead(StudySummary):
    spec: dict[str, Any] = Field(description="The study as posted, with its defaults filled in.")
    trials: list[TrialRead] = Field(description="Every trial asked for, in order.")
    best: BestTrial | None = Field(description="The trial with the best value so far.")
    importances: dict[str, float] | None = Field(
        description="How much each parameter explains of the metric's spread (Optuna's "
        "fANOVA; they sum to 1), once at least 4 trials have a value."
    )
