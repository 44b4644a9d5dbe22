"""The artifact store: dataset files, checkpoints, models and job outputs, behind one
interface with two backends.

- `LocalStore`, a folder (by default data_dir/artifacts), today's embedded default; every
  API and worker machine must then share that folder.
- `S3Store`, S3-compatible object storage (`KEIKO_ARTIFACT_URL=s3://bucket/prefix`; the
  endpoint and credentials come from boto3's usual environment: `AWS_ENDPOINT_URL`,
  `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_DEFAULT_REGION`), so that machines
  share only PostgreSQL, Redis and the bucket. Objects appear whole or not at all (a PUT, or
  a multipart upload's completion, is atomic), and what a process reads is downloaded once
  into its machine's `ArtifactCache`, checked against the sha256 recorded with it.

SQL rows keep keys ("datasets/<id>.csv", "models/<id>/model.safetensors",
"jobs/<id>/epoch-00003-1.safetensors"), the same on both backends. Files being worked on
(uploads as they arrive, a checkpoint before it is stored) live in a local scratch folder.
A checkpoint or model is a weights file and its JSON sidecar (models/checkpoint.py): the
sidecar is stored first and read with it.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager, suppress
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from models.checkpoint import (
    CorruptCheckpointError,
    fsync_path,
    sha256_file,
    sidecar_path,
    write_atomic,
)

if TYPE_CHECKING:
    from service.settings import Settings

log = logging.getLogger(__name__)

CACHE_GRACE_SECONDS = 60.0  # a file used this recently is never evicted (a reader may open it)


class StoreUnavailable(Exception):
    """The object store did not answer (or refused) after its retries; nothing was stored."""


def _check_key(key: str) -> str:
    path = PurePosixPath(key)
    if path.is_absolute() or ".." in path.parts or not path.parts or key != path.as_posix():
        raise ValueError(f"not an artifact key: {key!r}")
    return key


def dataset_key(dataset_id: str, fmt: str) -> str:
    return f"datasets/{dataset_id}.{fmt}"


def model_key(model_id: str) -> str:
    return f"models/{model_id}/model.safetensors"


def job_key(job_id: str, name: str) -> str:
    return f"jobs/{job_id}/{name}"


def _sidecar_key(key: str) -> str:
    return PurePosixPath(key).with_suffix(".json").as_posix()


class ArtifactStore(ABC):
    """Keys in, local files out. `scratch` is this machine's folder for work in progress."""

    url: str

    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch.resolve()

    def prepare(self) -> None:  # noqa: B027 (the local store has nothing to build)
        """Build what the first call would (a client), so that it happens at start-up."""

    def incoming_dir(self) -> Path:
        folder = self.scratch / "incoming"
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    @abstractmethod
    def writing(self, key: str, *, sidecar: bool = False) -> Any:
        """A context manager giving a local path to write `key` at (and its JSON sidecar
        beside it when `sidecar`); once the block ends without an error, it is stored."""

    @abstractmethod
    def put_file(self, key: str, source: Path) -> None:
        """Store the local file `source` under `key`; `source` is consumed."""

    @abstractmethod
    def storing(self, key: str, source: Path) -> Any:
        """A context manager: store the local file `source` under `key` once the block
        (which may read `source`) ends without an error; `source` is consumed either way.
        Both backends do their slow part while the block runs: the local one flushes the
        file to disk, the S3 one uploads it (and removes the object if the block fails)."""

    @abstractmethod
    def put_bytes(self, key: str, body: bytes) -> None: ...

    @abstractmethod
    def get_bytes(self, key: str) -> bytes | None:
        """A small object's bytes; None when there is none."""

    @abstractmethod
    def local(self, key: str, sha256: str | None, *, sidecar: bool = False) -> Path:
        """A local file holding `key` (and its sidecar beside it), to be opened now. Callers
        still check the sha256 as they read; the S3 backend also checks it as it downloads
        (CorruptCheckpointError). FileNotFoundError when there is no such object."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Delete the object `key`, or everything under the folder `key`."""

    def delete_with_sidecar(self, key: str) -> None:
        self.delete(key)
        self.delete(_sidecar_key(key))


class LocalStore(ArtifactStore):
    """A folder every API and worker process can read and write."""

    def __init__(self, root: Path, scratch: Path | None = None) -> None:
        super().__init__(scratch or root)
        self.root = root.resolve()
        self.url = self.root.as_uri()

    def path(self, key: str) -> Path:
        resolved = (self.root / _check_key(key)).resolve()
        if not resolved.is_relative_to(self.root):
            raise ValueError(f"artifact key escapes the store: {key!r}")
        return resolved

    @contextmanager
    def writing(self, key: str, *, sidecar: bool = False) -> Iterator[Path]:
        # The writers (safetensors + sidecar, NPZ) are atomic or are recorded in SQL only
        # once whole; they write in place. What they wrote is on disk before it is recorded
        # (checkpoints flush themselves; then this finds nothing left to write).
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        yield target
        fsync_path(target)
        fsync_path(target.parent)

    def put_file(self, key: str, source: Path) -> None:
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.parent / f".{target.name}.{secrets.token_hex(8)}.tmp"
        try:
            shutil.move(source, tmp)  # a rename on one filesystem, a copy across two
            fsync_path(tmp)  # its bytes on disk before its name (at once if storing flushed)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        fsync_path(target.parent)  # and the name

    @contextmanager
    def storing(self, key: str, source: Path) -> Iterator[None]:
        # An upload reaches this disk while it is described (a gigabyte takes seconds of
        # the disk's time and a little of a core's), not after.
        with ThreadPoolExecutor(1, thread_name_prefix="keiko-flush") as pool:
            flushing = pool.submit(fsync_path, source)
            try:
                yield
                flushing.result()
            except BaseException:
                wait([flushing])
                source.unlink(missing_ok=True)
                raise
        self.put_file(key, source)

    def put_bytes(self, key: str, body: bytes) -> None:
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(target, body)

    def get_bytes(self, key: str) -> bytes | None:
        try:
            return self.path(key).read_bytes()
        except FileNotFoundError:
            return None

    def local(self, key: str, sha256: str | None, *, sidecar: bool = False) -> Path:
        return self.path(key)

    def delete(self, key: str) -> None:
        target = self.path(key)
        if target.is_dir():
            shutil.rmtree(target, ignore_errors=True)
        else:
            target.unlink(missing_ok=True)


class ArtifactCache:
    """A bounded folder of downloaded objects named by their sha256 (`ab/abcd....suffix`),
    shared by the processes of one machine. A file is filled under a unique temporary name,
    checked, and renamed into place, so two processes filling it at once leave one good
    file; the least recently used files go once the folder is over `max_bytes` (never one
    used in the last minute: a reader may be about to open it)."""

    def __init__(
        self, root: Path, max_bytes: int, grace_seconds: float = CACHE_GRACE_SECONDS
    ) -> None:
        self.root = root.resolve()
        self.max_bytes = max_bytes
        self.grace_seconds = grace_seconds
        self.downloads = 0  # objects this process downloaded (tests, metrics)
        self._lock = threading.Lock()

    def path(self, sha256: str, suffix: str) -> Path:
        if len(sha256) != 64 or not all(c in "0123456789abcdef" for c in sha256):
            raise ValueError(f"not a sha256: {sha256!r}")
        return self.root / sha256[:2] / f"{sha256}{suffix}"

    def lookup(self, sha256: str, suffix: str, *, sidecar: bool = False) -> Path | None:
        found = self.path(sha256, suffix)
        if not found.exists() or (sidecar and not sidecar_path(found).exists()):
            return None
        with suppress(FileNotFoundError):
            os.utime(found)
            return found
        return None

    @contextmanager
    def temporary(self) -> Iterator[Path]:
        folder = self.root / "tmp"
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f"{os.getpid()}-{secrets.token_hex(8)}"
        try:
            yield tmp
        finally:
            tmp.unlink(missing_ok=True)

    def admit(self, sha256: str, suffix: str, filled: Path, sidecar: Path | None) -> Path:
        """Move a downloaded file (and its sidecar) into place; raises CorruptCheckpointError
        when its bytes are not the recorded ones."""
        actual = sha256_file(filled)
        if actual != sha256:
            raise CorruptCheckpointError(
                f"the stored object's sha256 is {actual}, not the {sha256} recorded with it: "
                "it was altered or truncated in the store, and is refused"
            )
        final = self.path(sha256, suffix)
        final.parent.mkdir(parents=True, exist_ok=True)
        if sidecar is not None:
            os.replace(sidecar, sidecar_path(final))
        os.replace(filled, final)
        self.downloads += 1
        self.evict(keep=final)
        return final

    def evict(self, keep: Path | None = None) -> None:
        with self._lock:
            entries = []
            for path in self.root.glob("??/*"):
                with suppress(FileNotFoundError):
                    stat = path.stat()
                    entries.append((stat.st_mtime, stat.st_size, path))
            total = sum(size for _, size, _ in entries)
            if total <= self.max_bytes:
                return
            recent = time.time() - self.grace_seconds
            for mtime, size, path in sorted(entries):
                if total <= self.max_bytes:
                    break
                if path == keep or mtime > recent or path.suffix == ".json":
                    continue
                path.unlink(missing_ok=True)
                total -= size
                sidecar = sidecar_path(path)
                with suppress(FileNotFoundError):
                    total -= sidecar.stat().st_size
                    sidecar.unlink()


class S3Store(ArtifactStore):
    """S3-compatible object storage through boto3 (multipart uploads for large files, its
    standard retry mode for connection errors, throttling and 5xx answers)."""

    # Files above it go up in parts of this size, two at a time (at most 10,000 parts: 80 GB,
    # beyond any upload limit Keiko allows by default).
    multipart_bytes = 8 << 20

    def __init__(self, url: str, scratch: Path, cache: ArtifactCache, *, attempts: int = 5) -> None:
        super().__init__(scratch)
        parsed = urlparse(url)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise ValueError(f"not an S3 URL: {url!r} (expected s3://bucket/prefix)")
        self.url = url
        self.bucket = parsed.netloc
        self.prefix = parsed.path.strip("/")
        self.cache = cache
        self.attempts = attempts
        self._client: Any = None
        self._client_pid = -1
        self._client_lock = threading.Lock()

    # boto3 ------------------------------------------------------------------------------

    @property
    def client(self) -> Any:
        # One client per process: Celery's prefork workers must not share the parent's.
        if self._client is None or self._client_pid != os.getpid():
            with self._client_lock:
                if self._client is None or self._client_pid != os.getpid():
                    self._client = self._new_client()
                    self._client_pid = os.getpid()
        return self._client

    def _new_client(self) -> Any:
        import boto3
        from botocore.config import Config

        custom = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        config = Config(
            retries={"max_attempts": self.attempts, "mode": "standard"},
            connect_timeout=5,
            read_timeout=60,
            s3={
                # MinIO, Ceph, R2 and moto behind an IP or one host name: bucket in the path.
                "addressing_style": "path" if custom else "auto",
                # Bodies go unsigned (UNSIGNED-PAYLOAD), as boto3 sends them over HTTPS when
                # a checksum goes with them: a part's CRC32 is in a signed header, and every
                # read is checked against the sha256 recorded in SQL. Signing them over plain
                # HTTP (MinIO inside a private network) would read and hash every byte once
                # more in the API process: uploads to moto took 15 % longer.
                "payload_signing_enabled": False,
            },
            # Checksums as boto3 sends them by default (a CRC32 of each part, checked by the
            # store; `AWS_REQUEST_CHECKSUM_CALCULATION=when_required` turns them off for a
            # store that refuses them), on top of the sha256 recorded in SQL and checked on
            # every read. Without them a store computes its own over the whole object at
            # completion (CRC64NVME); moto does that in Python, a fifth of an upload's time.
        )
        return boto3.session.Session().client("s3", config=config)

    def _key(self, key: str) -> str:
        _check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    @contextmanager
    def _calling(self, what: str) -> Iterator[None]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("404", "NoSuchKey", "NotFound"):
                raise FileNotFoundError(f"{what}: no such object in {self.url}") from None
            raise StoreUnavailable(
                f"the artifact store {self.url} refused to {what}: {exc}"
            ) from exc
        except BotoCoreError as exc:
            raise StoreUnavailable(
                f"the artifact store {self.url} could not {what} after {self.attempts} "
                f"attempts: {exc}"
            ) from exc

    # The interface ----------------------------------------------------------------------

    def prepare(self) -> None:
        self.client  # noqa: B018 (builds it)

    @contextmanager
    def writing(self, key: str, *, sidecar: bool = False) -> Iterator[Path]:
        folder = self.scratch / "staging"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{secrets.token_hex(8)}-{PurePosixPath(key).name}"
        try:
            yield path
            if sidecar:
                self.put_file(_sidecar_key(key), sidecar_path(path))
            self.put_file(key, path)
        finally:
            path.unlink(missing_ok=True)
            if sidecar:
                sidecar_path(path).unlink(missing_ok=True)

    def put_file(self, key: str, source: Path) -> None:
        try:
            self._upload(key, source)
        finally:
            source.unlink(missing_ok=True)

    def _upload(self, key: str, source: Path) -> None:
        from boto3.s3.transfer import TransferConfig

        transfer = TransferConfig(
            multipart_threshold=self.multipart_bytes,
            multipart_chunksize=self.multipart_bytes,
            max_concurrency=2,
        )
        with self._calling(f"store {key}"):
            self.client.upload_file(str(source), self.bucket, self._key(key), Config=transfer)

    @contextmanager
    def storing(self, key: str, source: Path) -> Iterator[None]:
        # The upload runs beside the block (describing a large upload takes as long as
        # sending it), so an upload costs the longer of the two, not their sum.
        with ThreadPoolExecutor(1, thread_name_prefix="keiko-store") as pool:
            uploading = pool.submit(self._upload, key, source)
            try:
                yield
            except BaseException:
                with suppress(Exception):
                    uploading.result()
                    self.delete(key)
                raise
            finally:
                wait([uploading])  # the file is read until the upload ends
                source.unlink(missing_ok=True)
            uploading.result()  # StoreUnavailable when it could not be stored

    def put_bytes(self, key: str, body: bytes) -> None:
        with self._calling(f"store {key}"):
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=body)

    def get_bytes(self, key: str) -> bytes | None:
        try:
            with self._calling(f"read {key}"):
                answer = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
                return bytes(answer["Body"].read())
        except FileNotFoundError:
            return None

    def local(self, key: str, sha256: str | None, *, sidecar: bool = False) -> Path:
        suffix = PurePosixPath(key).suffix
        if sha256 is not None:
            found = self.cache.lookup(sha256, suffix, sidecar=sidecar)
            if found is not None:
                return found
        with self.cache.temporary() as filled, self.cache.temporary() as beside:
            self._download(key, filled)
            if sidecar:
                self._download(_sidecar_key(key), beside)
            expected = sha256 or sha256_file(filled)  # rows from before sha256 was recorded
            return self.cache.admit(expected, suffix, filled, beside if sidecar else None)

    def _download(self, key: str, target: Path) -> None:
        with self._calling(f"read {key}"):
            self.client.download_file(self.bucket, self._key(key), str(target))

    def delete(self, key: str) -> None:
        full = self._key(key)
        with self._calling(f"delete {key}"):
            doomed = [{"Key": full}]
            pages = self.client.get_paginator("list_objects_v2")
            for page in pages.paginate(Bucket=self.bucket, Prefix=f"{full}/"):
                doomed += [{"Key": item["Key"]} for item in page.get("Contents", [])]
            for start in range(0, len(doomed), 1000):
                self.client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": doomed[start : start + 1000]}
                )


def delete_quietly(store: ArtifactStore, key: str, *, sidecar: bool = False) -> None:
    """Delete `key` (and its sidecar) once its row is gone; a store that cannot be reached
    leaves an orphan object (logged), never an error for a caller whose row is already
    deleted."""
    try:
        if sidecar:
            store.delete_with_sidecar(key)
        else:
            store.delete(key)
    except StoreUnavailable as exc:
        log.warning("left %s in the artifact store: %s", key, exc)


_stores: dict[tuple[Any, ...], ArtifactStore] = {}
_stores_lock = threading.Lock()


def open_store(settings: Settings) -> ArtifactStore:
    """The store the settings name, one per process and configuration (its S3 client and
    cache counters are kept)."""
    config = (
        settings.artifact_url,
        settings.artifacts,
        settings.scratch,
        settings.artifact_cache,
        settings.cache_max_bytes,
        settings.artifact_attempts,
    )
    with _stores_lock:
        store = _stores.get(config)
        if store is None:
            if settings.artifact_url:
                cache = ArtifactCache(settings.artifact_cache, settings.cache_max_bytes)
                store = S3Store(
                    settings.artifact_url,
                    settings.scratch,
                    cache,
                    attempts=settings.artifact_attempts,
                )
            else:
                store = LocalStore(settings.artifacts)
            _stores[config] = store
        return store
