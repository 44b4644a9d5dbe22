"""The streaming multipart receiver, fed bodies that httpx encoded: however the body is cut
into chunks on its way in, each file lands on disk whole and hashed, and the text fields
are read; a body over the limit leaves nothing behind."""

from __future__ import annotations

import asyncio
import hashlib
import random
from pathlib import Path

import httpx
import pytest
from starlette.requests import Request
from starlette.types import Message

from service.errors import PayloadTooLarge
from service.uploads import Upload, receive_upload


def _encoded(content: bytes) -> tuple[httpx.Headers, bytes]:
    request = httpx.Request(
        "POST",
        "http://keiko/datasets",
        data={"name": "frame"},
        files={"file": ("table.csv", content, "text/csv")},
    )
    return request.headers, request.read()


def _content() -> bytes:
    # Pieces of the framing itself (line ends, dashes, the start of a boundary) among data.
    rng = random.Random(0)
    pieces = [b"\r\n", b"--", b"\r\n--", b"\r\n--boundary", b"x,y\n", b"\xff"]
    return b"".join(rng.choice(pieces) for _ in range(12_000))


def _receive(headers: httpx.Headers, body: bytes, size: int, folder: Path, limit: int) -> Upload:
    chunks = [body[i : i + size] for i in range(0, len(body), size)]

    async def receive() -> Message:
        if chunks:
            chunk = chunks.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}
        return {"type": "http.disconnect"}

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/datasets",
        "query_string": b"",
        "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
    }
    return asyncio.run(receive_upload(Request(scope, receive), max_bytes=limit, folder=folder))


@pytest.fixture(autouse=True)
def small_handovers(monkeypatch: pytest.MonkeyPatch) -> None:
    # Chunks go to the parsing thread every 1000 bytes, not every megabyte: a body of tens
    # of kilobytes is handed over many times, as a large upload is.
    monkeypatch.setattr("service.uploads.WRITE_BYTES", 1000)


@pytest.mark.parametrize("size", [1, 7, 999, 4096, 65_536, 3 << 20])
def test_every_chunking_gives_the_file_and_fields(tmp_path: Path, size: int) -> None:
    content = _content()
    headers, body = _encoded(content)
    upload = _receive(headers, body, size, tmp_path, limit=1 << 30)
    [uploaded] = upload.files
    assert uploaded.filename == "table.csv"
    assert uploaded.path.read_bytes() == content
    assert uploaded.size == upload.size == len(content)
    assert upload.sha256 == hashlib.sha256(content).hexdigest()
    assert upload.fields == {"name": "frame"}
    assert upload.seconds > 0


@pytest.mark.parametrize("size", [7, 65_536])
def test_a_body_over_the_limit_leaves_no_file(tmp_path: Path, size: int) -> None:
    content = _content()
    headers, body = _encoded(content)
    with pytest.raises(PayloadTooLarge):
        _receive(headers, body, size, tmp_path, limit=len(content) - 1)
    assert list(tmp_path.iterdir()) == []
