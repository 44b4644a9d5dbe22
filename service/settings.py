"""One settings object, read from `KEIKO_*` environment variables (or a `.env` file)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, computed_field
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
        None, description="Artifact store; default: data_dir/artifacts."
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
    max_predict_upload_bytes: int = Field(
        32 << 20, ge=1, description="Largest multipart body of image files for prediction."
    )
    model_cache_size: int = Field(16, ge=1, description="Models kept in memory for prediction.")
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
    dispatch_sweep_seconds: float = Field(
        5.0, gt=0, description="How often the API re-sends unsent jobs and orphaned jobs."
    )
    cancel_poll_seconds: float = Field(
        1.0, gt=0, description="How often a running job checks whether it was cancelled."
    )
    gpu_queue: str = Field("gpu", description="Celery queue that GPU workers listen on.")
    cpu_queue: str = Field("celery", description="Celery queue that CPU workers listen on.")
    route_to_gpu: bool = Field(
        False,
        description="Send jobs whose device is auto or cuda to the GPU queue (set when a GPU "
        "worker runs).",
    )

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
    def uses_embedded_broker(self) -> bool:
        return self.resolved_broker_url.startswith("filesystem://")


@lru_cache
def get_settings() -> Settings:
    return Settings()
