"""One settings object, read from `KEIKO_*` environment variables (or a `.env` file)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from limits import parse
from pydantic import Field, SecretStr, computed_field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KEIKO_", env_file=".env", extra="ignore")

    data_dir: Path = Field(
        Path("var"), description="Root for the embedded database, broker folders and artifacts."
    )
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; default: SQLite file in data_dir."
    )
    broker_url: str | None = Field(
        None, description="Celery broker URL; default: kombu's filesystem transport in data_dir."
    )
    broker_key_prefix: str = Field(
        "", description="Prefix for every Redis key of the broker (isolates deployments)."
    )
    broker_visibility_timeout: int = Field(
        6 * 3600,
        ge=60,
        description="Seconds before Redis re-delivers an unacknowledged job message.",
    )
    artifact_dir: Path | None = Field(
        None, description="Artifact store folder (local backend); default: data_dir/artifacts."
    )
    artifact_url: str | None = Field(
        None,
        description="s3://bucket/prefix: keep artifacts in S3-compatible object storage "
        "(endpoint and credentials from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...) instead of "
        "artifact_dir.",
    )
    artifact_attempts: int = Field(
        5, ge=1, le=20, description="Tries of each object-store call before it is given up."
    )
    cache_dir: Path | None = Field(
        None, description="This machine's cache of downloaded artifacts; default: data_dir/cache."
    )
    cache_max_bytes: int = Field(
        10 << 30, ge=1 << 20, description="Size above which the artifact cache evicts."
    )
    max_upload_bytes: int = Field(1 << 30, ge=1, description="Largest accepted dataset upload.")
    max_archive_files: int = Field(100_000, ge=1, description="Most files in an uploaded archive.")
    max_extracted_bytes: int = Field(
        4 << 30, ge=1, description="Largest total size an uploaded archive may extract to."
    )
    max_image_pixels: int = Field(
        50_000_000, ge=1, description="Largest image (width x height) accepted in an upload."
    )
    max_predict_rows: int = Field(10_000, ge=1, description="Most inputs in one predict call.")
    max_request_bytes: int = Field(
        64 << 20,
        ge=1024,
        description="Largest request body of every endpoint but the uploads (JSON: job specs, "
        "predict inputs).",
    )
    max_predict_upload_bytes: int = Field(
        32 << 20, ge=1, description="Largest multipart body of image files for prediction."
    )
    model_cache_size: int = Field(16, ge=1, description="Models kept in memory for prediction.")
    predict_batch_rows: int = Field(
        1024,
        ge=1,
        description="Most rows that concurrent predict calls for one model share in one "
        "forward pass (dynamic batching; a call larger than this runs alone).",
    )
    predict_batch_delay_ms: float = Field(
        0.0,
        ge=0,
        le=1000,
        description="How long a batch waits for more calls before it runs (0: never waits; "
        "calls that arrive while the model is busy join the next pass).",
    )
    auth: bool | None = Field(
        None,
        description="Require an API key on every endpoint but health and docs. Default: off "
        "for the embedded defaults (SQLite and the filesystem broker, one machine, loopback "
        "only), on for any other deployment.",
    )
    admin_key: SecretStr | None = Field(
        None, description="The key that creates users and their API keys (at least 32 chars)."
    )
    rate_limit_predict: str = Field(
        "600/minute", description="Calls of POST /predict per API key (limits' notation)."
    )
    rate_limit_jobs: str = Field(
        "60/minute", description="Calls of POST /jobs per API key (limits' notation)."
    )
    rate_limit_storage_url: str | None = Field(
        None,
        description="Where rate-limit counters live (limits' storage URL). Default: the "
        "broker's Redis when the broker is Redis, else memory (one API process).",
    )
    max_active_jobs: int = Field(20, ge=1, description="Most queued plus running jobs of one user.")
    torch_threads: int | None = Field(
        None,
        ge=1,
        le=1024,
        description="Intra-op threads of torch in each worker (default: torch's, one per core). "
        "Lower it when workers share a CPU with other work: small networks slow down many "
        "times over when their threads compete.",
    )
    job_lease_seconds: float = Field(
        120, ge=1, description="A running job whose heartbeat is older than this is taken over."
    )
    max_attempts: int = Field(
        3,
        ge=1,
        description="Attempts a job gets when its worker dies under it (killed, out of "
        "memory); after the last it ends failed, 'worker lost'.",
    )
    dispatch_sweep_seconds: float = Field(
        5.0, gt=0, description="How often the API re-sends unsent jobs and orphaned jobs."
    )
    redispatch_seconds: float = Field(
        300,
        gt=0,
        description="A job still queued this long after its message was sent is sent again "
        "(the message may be lost, e.g. Redis restarted empty); at most once per period.",
    )
    cancel_poll_seconds: float = Field(
        1.0, gt=0, description="How often a running job checks whether it was cancelled."
    )
    event_poll_seconds: float = Field(
        0.5,
        gt=0,
        le=60,
        description="How often the API checks SQL for news of the jobs whose event streams "
        "are open (one query for all of them); Redis pub/sub wakes streams sooner.",
    )
    progress_seconds: float = Field(
        0.5,
        gt=0,
        description="How often a running job records where its epoch (RL: evaluation "
        "interval) is, for progress bars and event streams.",
    )
    gpu_queue: str = Field("gpu", description="Celery queue that GPU workers listen on.")
    cpu_queue: str = Field("celery", description="Celery queue that CPU workers listen on.")
    route_to_gpu: bool = Field(
        False,
        description="Send jobs whose device is auto or cuda to the GPU queue (set when a GPU "
        "worker runs).",
    )
    max_job_seconds: float = Field(
        86_400,
        ge=1,
        description="Longest wall-clock run of a job, and its limit unless its spec sets a "
        "lower training.time_limit_seconds.",
    )
    max_parameters: int = Field(
        50_000_000, ge=1, description="Most trainable parameters of a job's network."
    )
    metrics_auth: bool = Field(
        False,
        description="GET /metrics takes the admin key (and then counts predictions per model). "
        "Off: open to scrapers, which usually send no key, and every label is an aggregate.",
    )

    @field_validator("rate_limit_predict", "rate_limit_jobs")
    @classmethod
    def _rate(cls, value: str) -> str:
        parse(value)  # ValueError names the bad notation
        return value

    @field_validator("admin_key")
    @classmethod
    def _admin_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError("the admin key must be at least 32 characters")
        return value

    @property
    def auth_enabled(self) -> bool:
        if self.auth is not None:
            return self.auth
        return not (self.database_url is None and self.uses_embedded_broker)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'keiko.db').resolve()}"

    @computed_field  # type: ignore[prop-decorator]
    @property
    def resolved_broker_url(self) -> str:
        return self.broker_url or "filesystem://"

    @property
    def broker_folder(self) -> Path:
        return (self.data_dir / "broker").resolve()

    @property
    def artifacts(self) -> Path:
        return (self.artifact_dir or self.data_dir / "artifacts").resolve()

    @property
    def artifact_cache(self) -> Path:
        return (self.cache_dir or self.data_dir / "cache").resolve()

    @property
    def scratch(self) -> Path:
        """This machine's folder for uploads as they arrive and files not yet stored."""
        return (self.data_dir / "scratch").resolve()

    @field_validator("artifact_url")
    @classmethod
    def _s3_url(cls, value: str | None) -> str | None:
        if value is not None and value.strip() == "":
            return None
        if value is not None and not value.startswith("s3://"):
            raise ValueError("KEIKO_ARTIFACT_URL must be s3://bucket/prefix")
        return value

    @property
    def uses_embedded_broker(self) -> bool:
        return self.resolved_broker_url.startswith("filesystem://")


@lru_cache
def get_settings() -> Settings:
    return Settings()
