"""The artifact store's two backends, and the S3 backend's machine cache, against a real S3
API server (moto's)."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from models.checkpoint import CorruptCheckpointError, fsync_path, sidecar_path
from service.storage import (
    ArtifactCache,
    LocalStore,
    S3Store,
    StoreUnavailable,
    dataset_key,
    job_key,
    open_store,
)
from tests.services import S3Server, s3_server


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with s3_server() as server:
        yield server


@pytest.fixture
def s3_env(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    for name, value in s3.env.items():
        monkeypatch.setenv(name, value)
    return s3


def _s3_store(s3: S3Server, folder: Path, prefix: str = "unit", **cache: float) -> S3Store:
    return S3Store(
        s3.url(prefix),
        folder / "scratch",
        ArtifactCache(folder / "cache", int(cache.get("max_bytes", 1 << 30)),
                      cache.get("grace_seconds", 60.0)),
        attempts=2,
    )  # fmt: skip


def _file(folder: Path, name: str, body: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(body)
    return path


def _cached(folder: Path) -> list[Path]:
    return sorted(p for p in (folder / "cache").glob("??/*"))


def test_local_store_keys_stay_inside_its_folder(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "artifacts")
    store.put_file("datasets/a.csv", _file(tmp_path, "up.csv", b"x,y\n1,2\n"))
    assert store.local("datasets/a.csv", None).read_bytes() == b"x,y\n1,2\n"
    assert not (tmp_path / "up.csv").exists()  # consumed
    store.put_bytes("jobs/j/mistakes.json", b"{}")
    assert store.get_bytes("jobs/j/mistakes.json") == b"{}"
    assert store.get_bytes("jobs/j/nothing.json") is None
    store.delete("jobs/j")
    assert store.get_bytes("jobs/j/mistakes.json") is None
    for bad in ("../escape", "/etc/passwd", "a//b", ""):
        with pytest.raises(ValueError):
            store.path(bad)


def test_s3_store_round_trip_and_delete(s3_env: S3Server, tmp_path: Path) -> None:
    store = _s3_store(s3_env, tmp_path)
    body = os.urandom(100_000)
    store.put_file(dataset_key("d1", "csv"), _file(tmp_path / "in", "d1.csv", body))
    keys = [o["Key"] for o in s3_env.client().list_objects_v2(Bucket=s3_env.bucket)["Contents"]]
    assert "unit/datasets/d1.csv" in keys
    local = store.local("datasets/d1.csv", hashlib.sha256(body).hexdigest())
    assert local.read_bytes() == body and local.is_relative_to(tmp_path / "cache")
    store.put_bytes(job_key("j1", "a.json"), b"1")
    store.put_bytes(job_key("j1", "b.json"), b"2")
    assert store.get_bytes("jobs/j1/b.json") == b"2"
    store.delete("jobs/j1")
    assert store.get_bytes("jobs/j1/a.json") is None and store.get_bytes("jobs/j1/b.json") is None
    with pytest.raises(FileNotFoundError):
        store.local("datasets/none.csv", None)


def test_s3_large_files_go_up_in_parts(s3_env: S3Server, tmp_path: Path) -> None:
    store = _s3_store(s3_env, tmp_path)
    store.multipart_bytes = 5 << 20  # S3's smallest part
    body = os.urandom(12 << 20)
    store.put_file("datasets/big.npz", _file(tmp_path / "in", "big.npz", body))
    head = s3_env.client().head_object(
        Bucket=s3_env.bucket, Key="unit/datasets/big.npz", ChecksumMode="ENABLED"
    )
    assert head["ContentLength"] == len(body)
    assert head["ETag"].strip('"').endswith("-3")  # a multipart upload's ETag: 3 parts
    assert "ChecksumCRC32" in head  # each part went with its CRC32, which the store checked
    assert store.local("datasets/big.npz", hashlib.sha256(body).hexdigest()).read_bytes() == body


def test_checksums_can_be_turned_off_for_a_store_that_refuses_them(
    s3_env: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = _s3_store(s3_env, tmp_path, prefix="plain")
    store.put_file("datasets/a.csv", _file(tmp_path / "in", "a.csv", b"a\n1\n"))
    monkeypatch.setenv("AWS_REQUEST_CHECKSUM_CALCULATION", "when_required")
    plain = _s3_store(s3_env, tmp_path, prefix="plain")
    plain.put_file("datasets/b.csv", _file(tmp_path / "in", "b.csv", b"b\n2\n"))

    def checksums(key: str) -> list[str]:
        head = s3_env.client().head_object(Bucket=s3_env.bucket, Key=key, ChecksumMode="ENABLED")
        return [name for name in head if name.startswith("Checksum") and name != "ChecksumType"]

    assert checksums("plain/datasets/a.csv") == ["ChecksumCRC32"]
    assert plain.get_bytes("datasets/b.csv") == b"b\n2\n"
    assert checksums("plain/datasets/b.csv") == []


def test_a_checkpoint_and_its_sidecar_are_stored_and_read_together(
    s3_env: S3Server, tmp_path: Path
) -> None:
    store = _s3_store(s3_env, tmp_path)
    with store.writing("models/m1/model.safetensors", sidecar=True) as path:
        path.write_bytes(b"weights")
        sidecar_path(path).write_text('{"meta": 1}')
    assert not list((tmp_path / "scratch" / "staging").iterdir())  # nothing left behind
    local = store.local(
        "models/m1/model.safetensors", hashlib.sha256(b"weights").hexdigest(), sidecar=True
    )
    assert local.read_bytes() == b"weights"
    assert sidecar_path(local).read_text() == '{"meta": 1}'
    store.delete_with_sidecar("models/m1/model.safetensors")
    assert store.get_bytes("models/m1/model.json") is None


def test_a_second_read_downloads_nothing(s3_env: S3Server, tmp_path: Path) -> None:
    store = _s3_store(s3_env, tmp_path)
    store.put_bytes("models/m2/model.safetensors", b"abc")
    sha = hashlib.sha256(b"abc").hexdigest()
    first = store.local("models/m2/model.safetensors", sha)
    inode = first.stat().st_ino
    again = _s3_store(s3_env, tmp_path)  # another process of the machine, same cache folder
    assert again.local("models/m2/model.safetensors", sha) == first
    assert (store.cache.downloads, again.cache.downloads) == (1, 0)
    assert first.stat().st_ino == inode


def test_a_corrupted_object_is_refused_and_not_cached(s3_env: S3Server, tmp_path: Path) -> None:
    store = _s3_store(s3_env, tmp_path)
    store.put_bytes("models/m3/model.safetensors", b"the weights")
    sha = hashlib.sha256(b"the weights").hexdigest()
    s3_env.client().put_object(  # swapped in the bucket behind Keiko's back
        Bucket=s3_env.bucket, Key="unit/models/m3/model.safetensors", Body=b"other weights"
    )
    with pytest.raises(CorruptCheckpointError, match="altered or truncated"):
        store.local("models/m3/model.safetensors", sha)
    assert _cached(tmp_path) == [] and not list((tmp_path / "cache" / "tmp").iterdir())


def _fill(url: str, env: dict[str, str], folder: str, sha: str, ready: object) -> None:
    os.environ.update(env)
    store = S3Store(url, Path(folder) / "scratch", ArtifactCache(Path(folder) / "cache", 1 << 30))
    ready.wait()  # type: ignore[attr-defined]
    store.local("datasets/shared.csv", sha)


def test_two_processes_filling_the_cache_at_once_leave_one_good_file(
    s3_env: S3Server, tmp_path: Path
) -> None:
    body = os.urandom(3 << 20)
    store = _s3_store(s3_env, tmp_path)
    store.put_file("datasets/shared.csv", _file(tmp_path / "in", "shared.csv", body))
    sha = hashlib.sha256(body).hexdigest()
    context = multiprocessing.get_context("spawn")
    start = context.Event()
    fillers = [
        context.Process(
            target=_fill, args=(s3_env.url("unit"), s3_env.env, str(tmp_path), sha, start)
        )
        for _ in range(2)
    ]
    for filler in fillers:
        filler.start()
    start.set()
    for filler in fillers:
        filler.join(60)
        assert filler.exitcode == 0
    [cached] = _cached(tmp_path)
    assert cached.name == f"{sha}.csv" and cached.read_bytes() == body
    assert not list((tmp_path / "cache" / "tmp").iterdir())


def test_the_cache_evicts_the_least_recently_used(s3_env: S3Server, tmp_path: Path) -> None:
    store = _s3_store(s3_env, tmp_path, max_bytes=2500, grace_seconds=0)
    shas = []
    for name in ("a", "b", "c"):
        body = name.encode() * 1000
        store.put_bytes(f"datasets/{name}.csv", body)
        shas.append(hashlib.sha256(body).hexdigest())
    store.local("datasets/a.csv", shas[0])
    os.utime(store.cache.path(shas[0], ".csv"), (1, 1))  # used long ago
    store.local("datasets/b.csv", shas[1])
    store.local("datasets/c.csv", shas[2])  # over 2,500 bytes: a goes, b and c stay
    assert [p.name.split(".")[0] for p in _cached(tmp_path)] == sorted(shas[1:])


def test_an_unreachable_store_is_an_error_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed once this block ends: nothing listens
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    store = S3Store(
        "s3://nowhere/p", tmp_path / "scratch", ArtifactCache(tmp_path / "cache", 1 << 20),
        attempts=2,
    )  # fmt: skip
    with pytest.raises(StoreUnavailable, match=r"s3://nowhere/p could not store datasets/x\.csv"):
        store.put_file("datasets/x.csv", _file(tmp_path, "x.csv", b"1"))
    with pytest.raises(StoreUnavailable):
        store.local("datasets/x.csv", None)


def test_settings_choose_the_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from service.settings import Settings

    local = open_store(Settings(data_dir=tmp_path))
    assert isinstance(local, LocalStore) and local.root == (tmp_path / "artifacts").resolve()
    s3 = open_store(Settings(data_dir=tmp_path, artifact_url="s3://bucket/some/prefix"))
    assert isinstance(s3, S3Store)
    assert (s3.bucket, s3.prefix) == ("bucket", "some/prefix")
    assert s3.cache.root == (tmp_path / "cache").resolve()
    assert open_store(Settings(data_dir=tmp_path, artifact_url="s3://bucket/some/prefix")) is s3
    with pytest.raises(ValueError, match="s3://bucket/prefix"):
        Settings(data_dir=tmp_path, artifact_url="gs://bucket")


@pytest.mark.parametrize("backend", ["local", "s3"])
def test_storing_keeps_the_file_only_when_the_block_succeeds(
    backend: str, s3_env: S3Server, tmp_path: Path
) -> None:
    store = _s3_store(s3_env, tmp_path) if backend == "s3" else LocalStore(tmp_path / "artifacts")
    good = _file(tmp_path / "in", "good.csv", b"a\n1\n")
    with store.storing("datasets/good.csv", good):
        assert good.read_bytes() == b"a\n1\n"  # the block reads it while it is stored
    assert not good.exists()
    assert store.get_bytes("datasets/good.csv") == b"a\n1\n"
    bad = _file(tmp_path / "in", "bad.csv", b"not a table")
    with pytest.raises(RuntimeError), store.storing("datasets/bad.csv", bad):
        raise RuntimeError("the description refused it")
    assert not bad.exists()
    assert store.get_bytes("datasets/bad.csv") is None


def test_the_local_store_puts_an_upload_on_disk_before_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The receiver leaves uploads in the page cache (one bound for S3 never needs the disk);
    # the local store flushes what it keeps while the block runs, then makes the name durable.
    store = LocalStore(tmp_path / "artifacts")
    target = store.path("datasets/d.csv")
    flushed: list[tuple[Path, bool]] = []

    def recording(path: Path) -> None:
        flushed.append((path, target.exists()))
        fsync_path(path)

    monkeypatch.setattr("service.storage.fsync_path", recording)
    upload = _file(tmp_path / "in", "up.csv", b"a\n1\n")
    with store.storing("datasets/d.csv", upload):
        pass
    assert (upload, False) in flushed
    assert flushed[-1] == (target.parent, True)  # the rename, once it is done
    assert all(not named for path, named in flushed if path != target.parent)
    assert target.read_bytes() == b"a\n1\n"


def test_what_the_local_store_writes_in_place_is_on_disk_after_the_block(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An image upload's NPZ is written at its key, then recorded in SQL.
    store = LocalStore(tmp_path / "artifacts")
    flushed: list[Path] = []
    monkeypatch.setattr("service.storage.fsync_path", flushed.append)
    with store.writing("datasets/images.npz") as path:
        path.write_bytes(b"npz")
        assert flushed == []
    assert flushed == [path, path.parent]
