"""Pictures for people: the test images a classifier gets wrong, and a dataset's first
examples. The worker computes the mistakes once, at the end of training; these routes only
read stored files."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from models.checkpoint import CorruptCheckpointError
from models.data import DataError
from models.gallery import (
    MAX_MISTAKES,
    MAX_SAMPLES,
    MISTAKES_FILE,
    array_samples,
    image_samples,
    parse_mistakes,
    table_samples,
)
from service import repository
from service.auth import CallerDep
from service.deps import SessionDep, StoreDep
from service.errors import Conflict, NotFound, Unprocessable, responses
from service.storage import job_key

router = APIRouter(responses=responses(401, 403, 404))

IMAGE_DATASET_FORMATS = ("idx", "images")


class Mistake(BaseModel):
    image: str = Field(description="The image as uploaded, a PNG data URL.")
    label: Any = Field(description="The true label, as in the model's `output.labels`.")
    predicted: Any = Field(description="The label the model predicted.")
    confidence: float = Field(description="The model's probability for its prediction.")


class Mistakes(BaseModel):
    split: Literal["test", "validation", "train"] | None = Field(
        description="The part of the data the images come from: the test part, else the "
        "validation part, else the training part; null for a model that is not an image "
        "classifier, or a job that has not finished."
    )
    total: int | None = Field(None, description="Images in that part.")
    wrong: int | None = Field(None, description="How many of them the model gets wrong.")
    items: list[Mistake] = Field(description="The wrong ones, most confident first.")


class Sample(BaseModel):
    image: str = Field(description="A PNG data URL of the image.")
    label: Any = Field(description="Its label.")


class Samples(BaseModel):
    kind: Literal["images", "table"] = Field(
        description="images for image datasets; table for tables and other arrays."
    )
    items: list[Sample] | None = Field(None, description="Images: the first n with labels.")
    columns: list[str] | None = Field(None, description="Tables: the column names.")
    rows: list[list[Any]] | None = Field(
        None, description="Tables: the first n rows, values in `columns` order (null: missing)."
    )


@router.get(
    "/jobs/{job_id}/mistakes",
    response_model=Mistakes,
    response_model_exclude_none=False,
    tags=["jobs"],
    summary="Images an image classifier gets wrong",
)
def get_mistakes(
    job_id: str,
    caller: CallerDep,
    session: SessionDep,
    store: StoreDep,
    limit: Annotated[int, Query(ge=1, le=MAX_MISTAKES)] = 36,
) -> Mistakes:
    """For a finished image classification job: the images of its test part (else its
    validation part) that the trained model labels wrongly, with the true and predicted
    labels and the model's confidence, most confident first. Other jobs answer an empty list."""
    job = repository.get_job(session, job_id=job_id, owner_id=caller.user_id)
    if job is None:
        raise NotFound(f"no job with id {job_id!r}")
    found = parse_mistakes(
        store.get_bytes(job_key(job.id, MISTAKES_FILE)),
        store.get_bytes(job_key(job.id, f"{MISTAKES_FILE}.sha256")),
    )
    if found is None:
        return Mistakes(split=None, items=[])
    return Mistakes.model_validate({**found, "items": found["items"][:limit]})


@router.get(
    "/datasets/{dataset_id}/samples",
    response_model=Samples,
    response_model_exclude_none=True,
    tags=["datasets"],
    summary="A dataset's first examples",
    responses=responses(422),
)
def get_samples(
    dataset_id: str,
    caller: CallerDep,
    session: SessionDep,
    store: StoreDep,
    n: Annotated[int, Query(ge=1, le=MAX_SAMPLES)] = 8,
) -> dict[str, Any]:
    """Images (IDX, class folders, NPZ of images): the first n as PNG data URLs with their
    labels. Tables (CSV, Parquet) and other arrays: the first n rows. Only the start of the
    stored file is read."""
    dataset = repository.get_dataset(session, dataset_id=dataset_id, owner_id=caller.user_id)
    if dataset is None:
        raise NotFound(f"no dataset with id {dataset_id!r}")
    try:
        path = store.local(dataset.path, dataset.stored_sha256)
    except CorruptCheckpointError as exc:
        raise Conflict(f"dataset {dataset.id!r} cannot be read: {exc}") from exc
    try:
        if dataset.format in ("csv", "parquet"):
            return table_samples(path, dataset.format, n)
        found = image_samples(path, dataset.format, n)
        return found if found is not None else array_samples(path, n)
    except (DataError, OSError, ValueError) as exc:
        raise Unprocessable(f"the stored dataset cannot be read: {exc}") from exc
