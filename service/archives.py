"""Unpacking uploaded zip and tar archives (tar optionally gzip, bzip2 or xz compressed)
safely, before models/image_io.py reads the image datasets inside them. Only the upload path
(service/ingest.py) unpacks archives: workers read the canonical NPZ stored from them.

Uploads come from strangers, so what an archive declares (member names, kinds and sizes) is
checked before anything is written: no absolute paths or `..`, no links or special files, at
most `max_files` files and `max_total_bytes` bytes; the bytes actually written are counted
again, since members can hold more than they declare. Refusals are a `DataError` whose
message reaches the user as it is.
"""

from __future__ import annotations

import lzma
import re
import shutil
import stat
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from models.data import DataError
from models.image_io import ImageLimits, is_ignored

_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # a member first, or an empty archive
_COPY_BYTES = 1 << 20
# What reading a damaged archive raises (besides OSError, which bad gzip or bzip2 data raises).
_READ_ERRORS = (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, lzma.LZMAError)
# A tar's headers are listed before anything is extracted; this many entries per allowed file
# (folders, macOS metadata) bounds the memory that listing takes.
_TAR_ENTRIES_PER_FILE = 4


@dataclass(frozen=True)
class ArchiveLimits(ImageLimits):
    """What one upload may hold: at most `max_files` files per archive, and the image limits.
    `max_total_bytes` caps the extracted archive and also the decoded images
    (N * C * H * W bytes)."""

    max_files: int = 100_000


def extract_archive(archive: Path, dest: Path, limits: ArchiveLimits) -> Path:
    """Unpack a zip or tar archive (tar optionally gzip, bzip2 or xz compressed), told apart
    by content, into `dest` (created; it must be new or empty); returns `dest`.

    Every member is checked before anything is written: relative paths inside `dest`, regular
    files and folders only, at most `max_files` files and `max_total_bytes` declared. The
    bytes written are counted again. On any failure `dest` is removed.
    """
    kind = archive_kind(archive)
    if kind is None:
        raise DataError("not a zip or tar archive")
    if dest.exists() and any(dest.iterdir()):
        raise ValueError(f"extraction folder {dest} is not empty")
    dest.mkdir(parents=True, exist_ok=True)
    try:
        if kind == "zip":
            _extract_zip(archive, dest, limits)
        else:
            _extract_tar(archive, dest, limits)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)  # a half-extracted archive is never used
        raise
    return dest


def archive_kind(path: Path) -> str | None:
    """zip, tar (any compression) or None, told by content."""
    with path.open("rb") as file:
        head = file.read(4)
    # The zip magic first: zipfile.is_zipfile also accepts a tar whose last member is a zip.
    if head in _ZIP_MAGICS:
        return "zip"
    if tarfile.is_tarfile(path):
        return "tar"
    if zipfile.is_zipfile(path):  # e.g. a zip with a prefix (self-extracting)
        return "zip"
    return None


def _member_parts(name: str) -> list[str]:
    """The member's path components; refuses paths that would land outside the folder."""
    normalised = name.replace("\\", "/")  # zips made on Windows may use backslashes
    if normalised.startswith("/") or re.match(r"[A-Za-z]:/", normalised):
        raise DataError(f"archive member {name!r} has an absolute path")
    parts = [part for part in normalised.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise DataError(f"archive member {name!r} escapes the extraction folder")
    return parts


def _skipped(parts: list[str]) -> bool:
    return not parts or any(is_ignored(part) for part in parts)


def _check_declared(files: int, declared: int, limits: ArchiveLimits, *, exact: bool) -> None:
    """Refuse too many files or bytes; a tar is refused mid-listing, so its counts are lower
    bounds there (exact=False)."""
    if files > limits.max_files:
        holds = (
            f"{files} files, more than the {limits.max_files}"
            if exact
            else f"more than the {limits.max_files} files"
        )
        raise DataError(f"archive holds {holds} allowed")
    if declared > limits.max_total_bytes:
        total = f"{declared} bytes" if exact else "more than that"
        raise DataError(
            f"archive members add up to {total} uncompressed; at most "
            f"{limits.max_total_bytes} bytes are allowed"
        )


def _copy_member(source: IO[bytes], dest: Path, name: str, written: int, cap: int) -> int:
    """Write one member under `dest`, counting bytes; returns the archive's running total.

    Read errors are the archive's fault (DataError); write errors (a full disk) are not, and
    propagate as OSError.
    """
    target = dest.joinpath(*_member_parts(name))
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        out = target.open("wb")
    except OSError as exc:  # a name too long, a file where a folder should be...
        raise DataError(f"archive member {name!r} could not be extracted: {exc}") from None
    with out:
        while chunk := _read_chunk(source, name):
            written += len(chunk)
            if written > cap:  # members can hold more than they declare
                raise DataError(
                    f"archive expands to more than the {cap} bytes allowed, more than its "
                    "members declare"
                )
            out.write(chunk)
    return written


def _read_chunk(source: IO[bytes], name: str) -> bytes:
    try:
        return source.read(_COPY_BYTES)
    except (*_READ_ERRORS, OSError) as exc:  # OSError: bad gzip or bzip2 data
        raise DataError(f"archive member {name!r} is corrupt: {exc}") from None


def _zip_members(archive: zipfile.ZipFile, limits: ArchiveLimits) -> list[zipfile.ZipInfo]:
    """The members to extract, after checking every one."""
    chosen: list[zipfile.ZipInfo] = []
    for info in archive.infolist():
        parts = _member_parts(info.filename)
        if stat.S_ISLNK(info.external_attr >> 16):  # Unix mode bits, where the zip has them
            raise DataError(f"archive member {info.filename!r} is a symbolic link")
        if not info.is_dir() and not _skipped(parts):
            chosen.append(info)
    declared = sum(info.file_size for info in chosen)
    _check_declared(len(chosen), declared, limits, exact=True)
    return chosen


def _open_zip_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> IO[bytes]:
    try:
        return archive.open(info)
    except RuntimeError:  # zipfile's words for "encrypted"
        raise DataError(f"archive member {info.filename!r} is encrypted") from None
    except NotImplementedError as exc:  # e.g. a compression method zipfile lacks
        raise DataError(f"archive member {info.filename!r} cannot be read: {exc}") from None
    except (*_READ_ERRORS, OSError) as exc:
        raise DataError(f"archive member {info.filename!r} is corrupt: {exc}") from None


def _extract_zip(path: Path, dest: Path, limits: ArchiveLimits) -> None:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"not a valid zip archive: {exc}") from None
    with archive:
        written = 0
        for info in _zip_members(archive, limits):
            with _open_zip_member(archive, info) as source:
                written = _copy_member(source, dest, info.filename, written, limits.max_total_bytes)


def _tar_members(archive: tarfile.TarFile, limits: ArchiveLimits) -> list[tarfile.TarInfo]:
    """The members to extract, after checking every one; headers are read one at a time, so
    a huge archive is refused without listing it all."""
    chosen: list[tarfile.TarInfo] = []
    declared = 0
    for entries, member in enumerate(archive, start=1):
        parts = _member_parts(member.name)
        if member.issym() or member.islnk():
            kind = "symbolic" if member.issym() else "hard"
            raise DataError(f"archive member {member.name!r} is a {kind} link")
        if not (member.isfile() or member.isdir()):
            raise DataError(f"archive member {member.name!r} is a device, pipe or special file")
        if member.isfile() and not _skipped(parts):
            chosen.append(member)
            declared += member.size
            _check_declared(len(chosen), declared, limits, exact=False)
        if entries > _TAR_ENTRIES_PER_FILE * limits.max_files:
            raise DataError(f"archive holds more than {entries - 1} entries")
    return chosen


def _open_tar_member(archive: tarfile.TarFile, member: tarfile.TarInfo) -> IO[bytes]:
    try:
        source = archive.extractfile(member)
    except (*_READ_ERRORS, OSError) as exc:
        raise DataError(f"archive member {member.name!r} is corrupt: {exc}") from None
    assert source is not None  # regular files only
    return source


def _open_tar(path: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(path, "r:*")  # compression told by content
    except (*_READ_ERRORS, OSError) as exc:
        raise DataError(f"not a valid tar archive: {exc}") from None


def _extract_tar(path: Path, dest: Path, limits: ArchiveLimits) -> None:
    with _open_tar(path) as archive:
        try:
            members = _tar_members(archive, limits)
        except (*_READ_ERRORS, OSError) as exc:  # OSError: bad gzip or bzip2 data
            raise DataError(f"not a valid tar archive: {exc}") from None
        written = 0
        for member in members:
            with _open_tar_member(archive, member) as source:
                written = _copy_member(source, dest, member.name, written, limits.max_total_bytes)
