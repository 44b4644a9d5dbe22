"""Streaming multipart upload: file parts go straight to disk, hashed on the way, and the
request is refused with 413 the moment the files together pass the size limit."""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from service.errors import BadRequest, PayloadTooLarge

MAX_TEXT_FIELD = 4096
MAX_TEXT_PARTS = 8
FILE_FIELD = "file"


@dataclass
class UploadedFile:
    path: Path
    filename: str
    size: int


@dataclass
class Upload:
    files: list[UploadedFile]
    fields: dict[str, str]
    sha256: str  # of every file's bytes, in the order sent
    seconds: float  # from the request's start to its last byte on disk

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    def discard(self) -> None:
        for uploaded in self.files:
            uploaded.path.unlink(missing_ok=True)


@dataclass
class _Part:
    headers: dict[str, bytes] = field(default_factory=dict)
    name: str = ""
    text: bytearray = field(default_factory=bytearray)
    file: UploadedFile | None = None
    sink: IO[bytes] | None = None


class _Collector:
    """python-multipart callbacks: `file` parts to disk, the other parts as short text."""

    def __init__(self, folder: Path, max_bytes: int, max_files: int) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self.max_files = max_files
        self.digest = hashlib.sha256()
        self.size = 0
        self.parts: list[_Part] = []
        self._field = b""
        self._value = b""

    def callbacks(self) -> dict[str, object]:
        return {
            "on_part_begin": self.on_part_begin,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
        }

    @property
    def files(self) -> list[UploadedFile]:
        return [part.file for part in self.parts if part.file is not None]

    def on_part_begin(self) -> None:
        if len(self.parts) >= MAX_TEXT_PARTS + self.max_files:
            raise BadRequest(f"too many form fields (at most {MAX_TEXT_PARTS + self.max_files})")
        self.parts.append(_Part())

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def on_header_end(self) -> None:
        self.parts[-1].headers[self._field.decode("latin-1").lower()] = self._value
        self._field, self._value = b"", b""

    def on_headers_finished(self) -> None:
        part = self.parts[-1]
        _, disposition = parse_options_header(part.headers.get("content-disposition", b""))
        part.name = disposition.get(b"name", b"").decode("utf-8", "replace")
        if part.name != FILE_FIELD:
            return
        filename = disposition.get(b"filename")
        if filename is None:
            raise BadRequest(f"the '{FILE_FIELD}' field must be a file upload")
        if len(self.files) >= self.max_files:
            raise BadRequest(f"send at most {self.max_files} '{FILE_FIELD}' parts")
        # Not mkstemp: its 0600 would follow a table into the local store and hide it from
        # a worker running as another user; this file gets the umask's mode, as others do.
        path = self.folder / f"upload-{secrets.token_hex(8)}.part"
        part.sink = path.open("xb")
        part.file = UploadedFile(path, filename.decode("utf-8", "replace"), 0)

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = memoryview(data)[start:end]  # hashed and written without a copy
        part = self.parts[-1]
        if part.file is not None and part.sink is not None:
            self.size += len(chunk)
            if self.size > self.max_bytes:
                raise PayloadTooLarge(f"upload exceeds the limit of {self.max_bytes} bytes")
            part.file.size += len(chunk)
            self.digest.update(chunk)
            part.sink.write(chunk)
            return
        part.text.extend(chunk)
        if len(part.text) > MAX_TEXT_FIELD:
            raise BadRequest(f"form field {part.name!r} is longer than {MAX_TEXT_FIELD} bytes")

    def on_part_end(self) -> None:
        sink = self.parts[-1].sink
        if sink is not None:
            # Not fsynced here: a file the local store keeps is made durable there, while
            # it is described; one that goes to S3, or is decoded into another, never
            # needs to reach this disk.
            sink.close()

    def close_and_discard(self) -> None:
        for part in self.parts:
            if part.sink is not None:
                part.sink.close()
            if part.file is not None:
                part.file.path.unlink(missing_ok=True)

    def text_fields(self) -> dict[str, str]:
        fields: dict[str, str] = {}
        for part in self.parts:
            if part.name and part.file is None:
                try:
                    fields[part.name] = part.text.decode("utf-8")
                except UnicodeDecodeError:
                    raise BadRequest(f"form field {part.name!r} is not UTF-8 text") from None
        return fields


WRITE_BYTES = 1 << 20


def _write(parser: MultipartParser, chunks: list[bytes]) -> None:
    for chunk in chunks:
        parser.write(chunk)


def _finish(parser: MultipartParser, rest: list[bytes]) -> None:
    _write(parser, rest)
    parser.finalize()


async def receive_upload(
    request: Request, *, max_bytes: int, folder: Path, max_files: int = 2
) -> Upload:
    """Parse a multipart body with one or more `file` parts and small text fields.

    On any error every partial file is removed before the error propagates.
    """
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data" or b"boundary" not in params:
        raise BadRequest(f"expected a multipart/form-data body with a '{FILE_FIELD}' field")
    declared = request.headers.get("content-length", "")
    # Multipart framing adds a little to the files themselves; allow for it before refusing.
    if declared.isdigit() and int(declared) > max_bytes + 64 * 1024:
        raise PayloadTooLarge(f"upload is {int(declared)} bytes; the limit is {max_bytes} bytes")

    started = time.perf_counter()
    collector = _Collector(folder, max_bytes, max_files)
    try:
        parser = MultipartParser(params[b"boundary"], collector.callbacks())  # type: ignore[arg-type]
        try:
            # Parsed, hashed and written in a worker thread a megabyte at a time: a disk
            # that throttles writes never stalls the event loop, and with it every other
            # request.
            # The chunks are handed over as received, not joined: the event loop copies
            # nothing.
            pending: list[bytes] = []
            buffered = 0
            async for chunk in request.stream():
                pending.append(chunk)
                buffered += len(chunk)
                if buffered >= WRITE_BYTES:
                    await run_in_threadpool(_write, parser, pending)
                    pending, buffered = [], 0
            await run_in_threadpool(_finish, parser, pending)
        except (BadRequest, PayloadTooLarge):
            raise
        except Exception as exc:
            raise BadRequest(f"malformed multipart body: {exc}") from exc
        if not collector.files:
            raise BadRequest(f"missing the '{FILE_FIELD}' field")
        fields = collector.text_fields()
    except BaseException:
        collector.close_and_discard()
        raise
    seconds = time.perf_counter() - started
    return Upload(collector.files, fields, collector.digest.hexdigest(), seconds)
