"""Datasets: upload (streamed to the artifact store), list, read, delete."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from models.data import DataError
from service import repository
from service.archives import ArchiveLimits
from service.auth import CallerDep
from service.deps import SessionDep, SettingsDep, StoreDep
from service.errors import Conflict, NotFound, ServiceUnavailable, Unprocessable, responses
from service.idempotency import IdempotencyKey, check_key, commit_once, fingerprint, replay
from service.ingest import ingest
from service.schemas import DatasetRead, Page
from service.storage import StoreUnavailable, delete_quietly
from service.tables import Dataset, new_id
from service.uploads import receive_upload

router = APIRouter(prefix="/datasets", tags=["datasets"], responses=responses(401, 403))
ENDPOINT = "POST /datasets"

UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "CSV, Parquet (.parquet/.pq) or NPZ (arrays x, y).",
                        },
                        "name": {
                            "type": "string",
                            "description": "Display name (default: file name).",
                        },
                    },
                }
            }
        },
    }
}


def _clean_name(name: str) -> str:
    if any(ord(ch) < 32 for ch in name):
        raise Unprocessable("name must not contain NUL or other control characters")
    if not name.strip() or len(name) > 256:
        raise Unprocessable("name must be 1 to 256 characters")
    return name


@router.post(
    "",
    status_code=201,
    response_model=DatasetRead,
    summary="Upload a dataset",
    openapi_extra=UPLOAD_BODY,
    responses=responses(400, 413, 422, 503),
)
async def upload_dataset(
    request: Request,
    caller: CallerDep,
    session: SessionDep,
    settings: SettingsDep,
    store: StoreDep,
    idempotency_key: IdempotencyKey = None,
) -> Dataset | JSONResponse:
    """Stream a CSV, Parquet or NPZ file to the artifact store, parse it once and record it."""
    key = check_key(idempotency_key)
    upload = await receive_upload(
        request, max_bytes=settings.max_upload_bytes, folder=store.incoming_dir()
    )
    dataset_id = new_id()
    stored: str | None = None
    try:
        name = _clean_name(upload.fields.get("name") or upload.files[0].filename)
        for uploaded in upload.files:
            _clean_name(uploaded.filename)
        sent = fingerprint(name, upload.sha256, *(f.filename for f in upload.files))
        # SQL off the event loop: a wait for SQLite's lock must not stall other requests.
        replayed = await run_in_threadpool(
            replay, session, owner_id=caller.user_id, key=key, endpoint=ENDPOINT, print_=sent
        )
        if replayed is not None:
            upload.discard()
            return replayed
        try:
            limits = ArchiveLimits(
                max_files=settings.max_archive_files,
                max_total_bytes=settings.max_extracted_bytes,
                max_image_pixels=settings.max_image_pixels,
            )
            ingested = await run_in_threadpool(ingest, upload, store, dataset_id, limits)
        except DataError as exc:
            raise Unprocessable(str(exc)) from exc
        except StoreUnavailable as exc:
            raise ServiceUnavailable(
                f"{exc}; nothing was recorded, send the upload again later",
                headers={"Retry-After": "30"},
            ) from exc
        stored = ingested.key
        dataset = Dataset(
            id=dataset_id,
            owner_id=caller.user_id,
            name=name,
            format=ingested.format,
            filename=", ".join(f.filename for f in upload.files),
            path=ingested.key,
            size_bytes=upload.size,
            sha256=upload.sha256,
            stored_sha256=ingested.sha256,
            num_rows=ingested.info.num_rows,
            columns=ingested.info.columns,
            shape=ingested.info.shape,
        )
        session.add(dataset)
        replayed = await run_in_threadpool(
            commit_once,
            session,
            owner_id=caller.user_id,
            key=key,
            endpoint=ENDPOINT,
            print_=sent,
            status_code=201,
            answer=lambda: DatasetRead.model_validate(dataset).model_dump(mode="json"),
        )
    except BaseException:
        upload.discard()
        if stored is not None:
            await run_in_threadpool(delete_quietly, store, stored)
        raise
    if replayed is not None:  # a concurrent retry with the same key recorded it first
        upload.discard()
        # This request's copy: its row was rolled back.
        await run_in_threadpool(delete_quietly, store, ingested.key)
        return replayed
    return dataset


@router.get("", response_model=Page[DatasetRead], summary="List datasets")
def list_datasets(
    caller: CallerDep,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**31)] = 0,
) -> Page[DatasetRead]:
    """Datasets, newest first."""
    rows, total = repository.list_datasets(
        session, owner_id=caller.user_id, limit=limit, offset=offset
    )
    items = [DatasetRead.model_validate(row) for row in rows]
    return Page[DatasetRead](items=items, total=total, limit=limit, offset=offset)


@router.get(
    "/{dataset_id}", response_model=DatasetRead, summary="Get a dataset", responses=responses(404)
)
def get_dataset(dataset_id: str, caller: CallerDep, session: SessionDep) -> Dataset:
    """One dataset's record: format, rows, columns or shapes, size and checksum."""
    dataset = repository.get_dataset(session, dataset_id=dataset_id, owner_id=caller.user_id)
    if dataset is None:
        raise NotFound(f"no dataset with id {dataset_id!r}")
    return dataset


@router.delete(
    "/{dataset_id}",
    status_code=204,
    summary="Delete a dataset",
    responses=responses(404, 409),
)
def delete_dataset(
    dataset_id: str, caller: CallerDep, session: SessionDep, store: StoreDep
) -> Response:
    """Delete a dataset and its file; refused while a queued or running job uses it."""
    dataset = repository.get_dataset(session, dataset_id=dataset_id, owner_id=caller.user_id)
    if dataset is None:
        raise NotFound(f"no dataset with id {dataset_id!r}")
    if repository.dataset_in_use(session, dataset_id=dataset_id):
        raise Conflict(f"dataset {dataset_id!r} is used by a queued or running job")
    studies = repository.studies_using(session, dataset_id=dataset_id, owner_id=caller.user_id)
    if studies:
        raise Conflict(f"dataset {dataset_id!r} is used by study {studies[0]!r}, still running")
    path = dataset.path
    session.delete(dataset)
    session.commit()
    delete_quietly(store, path)
    return Response(status_code=204)
