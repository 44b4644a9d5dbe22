"""Streaming multipart upload: the file part goes straight to disk, hashed on the way,
and the request is refused with 413 the moment it passes the size limit."""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from service.errors import BadRequest, PayloadTooLarge

MAX_TEXT_FIELD = 4096
MAX_PARTS = 8


@dataclass
class UploadedFile:
    path: Path
    filename: str
    size: int
    sha256: str


@dataclass
class _Part:
    headers: dict[str, bytes] = field(default_factory=dict)
    name: str = ""
    text: bytearray = field(default_factory=bytearray)


class _Collector:
    """python-multipart callbacks: one file part to disk, the other parts as short text."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.sink = path.open("wb")
        self.max_bytes = max_bytes
        self.digest = hashlib.sha256()
        self.size = 0
        self.filename: str | None = None
        self.parts: list[_Part] = []
        self.in_file = False
        self._field = b""
        self._value = b""

    def callbacks(self) -> dict[str, object]:
        return {
            "on_part_begin": self.on_part_begin,
            "on_part_data": self.on_part_data,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
        }

    def on_part_begin(self) -> None:
        if len(self.parts) >= MAX_PARTS:
            raise BadRequest(f"too many form fields (at most {MAX_PARTS})")
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
        self.in_file = part.name == "file"
        if self.in_file:
            filename = disposition.get(b"filename")
            if self.filename is not None:
                raise BadRequest("send exactly one 'file' part")
            if filename is None:
                raise BadRequest("the 'file' field must be a file upload")
            self.filename = filename.decode("utf-8", "replace")

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self.in_file:
            self.size += len(chunk)
            if self.size > self.max_bytes:
                raise PayloadTooLarge(f"upload exceeds the limit of {self.max_bytes} bytes")
            self.digest.update(chunk)
            self.sink.write(chunk)
            return
        part = self.parts[-1]
        part.text.extend(chunk)
        if len(part.text) > MAX_TEXT_FIELD:
            raise BadRequest(f"form field {part.name!r} is longer than {MAX_TEXT_FIELD} bytes")

    def text_fields(self) -> dict[str, str]:
        fields: dict[str, str] = {}
        for part in self.parts:
            if part.name and part.name != "file":
                try:
                    fields[part.name] = part.text.decode("utf-8")
                except UnicodeDecodeError:
                    raise BadRequest(f"form field {part.name!r} is not UTF-8 text") from None
        return fields


async def receive_upload(
    request: Request, *, max_bytes: int, folder: Path
) -> tuple[UploadedFile, dict[str, str]]:
    """Parse a multipart body with one `file` part and small text fields.

    Returns the stored file and the text fields. On any error the partial file is removed.
    """
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data" or b"boundary" not in params:
        raise BadRequest("expected a multipart/form-data body with a 'file' field")
    declared = request.headers.get("content-length", "")
    # Multipart framing adds a little to the file itself; allow for it before refusing.
    if declared.isdigit() and int(declared) > max_bytes + 64 * 1024:
        raise PayloadTooLarge(f"upload is {int(declared)} bytes; the limit is {max_bytes} bytes")

    fd, name = tempfile.mkstemp(dir=folder, prefix="upload-", suffix=".part")
    os.close(fd)
    path = Path(name)
    collector = _Collector(path, max_bytes)
    try:
        parser = MultipartParser(params[b"boundary"], collector.callbacks())  # type: ignore[arg-type]
        try:
            async for chunk in request.stream():
                parser.write(chunk)
            parser.finalize()
        except (BadRequest, PayloadTooLarge):
            raise
        except Exception as exc:
            raise BadRequest(f"malformed multipart body: {exc}") from exc
        collector.sink.flush()
        os.fsync(collector.sink.fileno())
        collector.sink.close()
        if collector.filename is None:
            raise BadRequest("missing the 'file' field")
        fields = collector.text_fields()
    except BaseException:
        collector.sink.close()
        path.unlink(missing_ok=True)
        raise
    upload = UploadedFile(path, collector.filename, collector.size, collector.digest.hexdigest())
    return upload, fields
