"""Reading stored dataset files (CSV, Parquet, NPZ): parsed once and checked at upload, and
parsed again the same way when a job trains on them.

Tables go through Arrow so that CSV and Parquet end up with the same four column kinds
(integer, float, boolean, string) and the same notion of "missing". Every refusal is a
`DataError` whose message is shown to the API user as it is.
"""

from __future__ import annotations

import codecs
import csv
import math
import re
import zipfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".npz": "npz"}
MAX_COLUMNS = 100_000
# Decoded sizes, checked before anything is decoded: a compressed file (Parquet, an NPZ made
# with savez_compressed) can expand a thousand times over its upload size.
MAX_ROWS = 100_000_000
MAX_CELLS = 2_000_000_000  # rows x columns of a table, elements of an array
# Arrow needs every CSV row (the header included) to fit in one block; 1 MiB, its default,
# is too small for wide files.
CSV_BLOCK_BYTES = 16 << 20
NPZ_BLOCK_BYTES = 4 << 20  # an uploaded NPZ's x is read in blocks of this size
STREAM_BLOCK_BYTES = 256 << 10  # an upload is read in blocks of this size, or larger
STATS_GROUP_BYTES = 1 << 20  # and counted in groups of blocks this large
_SCAN_BYTES = 1 << 20
_NPY_MAGIC = b"\x93NUMPY"


class DataError(ValueError):
    """A dataset that cannot be used; the message says exactly why and reaches the user."""


@dataclass
class DatasetInfo:
    format: str
    num_rows: int
    columns: list[dict[str, Any]] | None  # tables: name, dtype, missing, unique
    shape: dict[str, Any] | None  # arrays: x, y, x_dtype, y_dtype, x_nonfinite, y_nonfinite


def detect_format(filename: str) -> str:
    """csv, parquet or npz, from the file name's extension."""
    suffix = Path(filename).suffix.lower()
    if suffix not in FORMATS:
        found = f"{suffix!r} ({filename!r})" if suffix else f"({filename!r} has no extension)"
        raise DataError(
            f"unsupported file format {found}: upload .csv, .parquet (or .pq) or .npz, two "
            "MNIST IDX files, or a zip/tar of IDX files or of class folders of images"
        )
    return FORMATS[suffix]


MAX_DESCRIBED_CLASSES = 1_000


def image_layout(x: np.ndarray) -> str:
    """NHW, NHWC or NCHW: how an array of images is laid out, judged by its shape."""
    if x.ndim == 3:
        return "NHW"
    if x.ndim == 4:
        # Both axes 1 or 3 (e.g. (N, 3, 32, 3)) is ambiguous: NCHW wins, being PyTorch's own
        # layout and far likelier than images 1 or 3 pixels wide.
        if x.shape[1] in (1, 3):
            return "NCHW"
        if x.shape[3] in (1, 3):
            return "NHWC"
    raise DataError(
        f"x has shape {list(x.shape)}; images must be (N, H, W), (N, H, W, C) or (N, C, H, W) "
        "with C = 1 (grayscale) or 3 (RGB)"
    )


def image_geometry(shape: tuple[int, ...]) -> dict[str, Any] | None:
    """Channels, height and width of an array of images shaped `shape`, or None when it
    cannot be images. A 3-D array is read as (N, H, W) grayscale images here; the same array
    given to an `rnn` job is (N, T, F) sequences."""
    try:
        layout = image_layout(np.empty((0, *shape[1:]), dtype=np.uint8))
    except DataError:
        return None
    c, h, w = {"NHW": (1, 1, 2), "NCHW": (1, 2, 3), "NHWC": (3, 1, 2)}[layout]
    channels = 1 if layout == "NHW" else int(shape[c])
    return {"channels": channels, "height": int(shape[h]), "width": int(shape[w]), "layout": layout}


def class_counts(
    y: np.ndarray, names: list[str] | None = None
) -> tuple[int, dict[str, int] | None]:
    """The number of distinct labels in `y` and how many rows hold each (None past
    MAX_DESCRIBED_CLASSES). `names[code]` names integer codes when given."""
    labels, counts = np.unique(y, return_counts=True)
    if len(labels) > MAX_DESCRIBED_CLASSES:
        return len(labels), None
    keys = [names[int(label)] if names is not None else str(label.item()) for label in labels]
    return len(labels), dict(zip(keys, counts.tolist(), strict=True))


def inspect_dataset(path: Path, fmt: str) -> DatasetInfo:
    """Parse the whole file, refuse what training could not use, and describe it."""
    if fmt == "npz":
        return _describe_npz(path)
    return _describe_table(path, fmt)


def _describe_npz(path: Path) -> DatasetInfo:
    """`x` read in blocks of NPZ_BLOCK_BYTES (its shape, dtype and non-finite values are
    all a description needs), `y` whole (one label or a few values a row)."""
    with _open_npz(path) as archive:
        y = _load_member(archive, "y")
        x_shape, x_dtype, x_nonfinite = _scan_member(archive, "x")
    _check_shapes(x_shape, x_dtype, y.shape, y.dtype)
    shape = {
        "x": list(x_shape),
        "y": list(y.shape),
        "x_dtype": str(x_dtype),
        "y_dtype": str(y.dtype),
        # Recorded, not refused: a job imputes NaN features, and refuses infinite ones
        # or a NaN target with a message about that job.
        "x_nonfinite": x_nonfinite,
        "y_nonfinite": _count_nonfinite(y),
    }
    # What a classification or image job will see: set only where it can apply.
    if y.ndim == 1 and y.dtype.kind in "biuU":
        shape["num_classes"], shape["class_counts"] = class_counts(y)
    if len(x_shape) in (3, 4):
        shape.update(image_geometry(x_shape) or {})
    return DatasetInfo(format="npz", num_rows=int(x_shape[0]), columns=None, shape=shape)


def read_table(path: Path, fmt: str) -> pd.DataFrame:
    """A CSV or Parquet file as a DataFrame, parsed exactly as `inspect_dataset` parses it.

    Column dtypes: int64 (float64 when the column has missing values), float64, pandas'
    nullable `boolean`, or `str`; missing values are NaN / NA.
    """
    table = _load_table(path, fmt)
    return table.to_pandas(types_mapper={pa.bool_(): pd.BooleanDtype()}.get)


def read_arrays(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Arrays `x` (N, ...) and `y` (N, ...) of an NPZ file, checked; nothing is unpickled."""
    with _open_npz(path) as archive:
        x = _load_member(archive, "x")
        y = _load_member(archive, "y")
    _check_shapes(x.shape, x.dtype, y.shape, y.dtype)
    return x, y


def _open_npz(path: Path) -> np.lib.npyio.NpzFile:
    """The NPZ file at `path`, holding members x and y (not read yet)."""
    _refuse_empty(path)
    with path.open("rb") as file:
        magic = file.read(len(_NPY_MAGIC))
    if magic == _NPY_MAGIC:
        raise DataError(
            "not a valid NPZ file: this is a single .npy array; save x and y with np.savez"
        )
    if not zipfile.is_zipfile(path):
        raise DataError(
            "not a valid NPZ file: it is not a zip archive (save x and y with np.savez)"
        )
    try:
        archive = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"not a valid NPZ file: {exc}") from None
    if "x" not in archive.files or "y" not in archive.files:
        found = ", ".join(archive.files) or "none"
        archive.close()
        raise DataError(f"NPZ must contain arrays 'x' and 'y' (found: {found})")
    return archive


# Tables ---------------------------------------------------------------------------------


def _load_table(path: Path, fmt: str) -> pa.Table:
    if fmt == "csv":
        table = _read_csv(path)
    elif fmt == "parquet":
        table = _read_parquet(path)
    else:
        raise DataError(f"format {fmt!r} is not a table: expected csv or parquet")
    _check_column_names(table.column_names)
    if table.num_rows == 0:
        raise DataError("the file has a header but no data rows")
    _check_table_size(table.num_rows, table.num_columns)
    return _normalise_columns(table)


def _refuse_empty(path: Path) -> None:
    if path.stat().st_size == 0:
        raise DataError("file is empty")


def _check_table_size(rows: int, columns: int) -> None:
    if rows > MAX_ROWS or rows * columns > MAX_CELLS:
        raise DataError(
            f"the table has {rows:,} rows and {columns:,} columns; at most {MAX_ROWS:,} rows "
            f"and {MAX_CELLS:,} values are supported"
        )


def _check_column_names(names: list[str]) -> None:
    if not names:
        raise DataError("the file has no columns")
    if len(names) > MAX_COLUMNS:
        raise DataError(f"the file has {len(names)} columns; at most {MAX_COLUMNS} are supported")
    for position, name in enumerate(names, start=1):
        if name == "":
            raise DataError(f"column {position} has no name; every column needs a header")
        # Same rule as job specs: such a name could never be given as a target or feature.
        if any(ord(ch) < 32 for ch in name):
            raise DataError(f"column name {name!r} contains NUL or other control characters")
    duplicates = sorted(name for name, count in Counter(names).items() if count > 1)
    if duplicates:
        raise DataError(f"duplicate column names: {', '.join(duplicates)}")


# Describing a table in constant memory ---------------------------------------------------
#
# An upload is described batch by batch (Arrow's streaming CSV reader, Parquet row groups),
# so the API's memory does not grow with the file: rows, dtypes and missing cells counted
# exactly, distinct values exactly up to MAX_EXACT_UNIQUE and estimated beyond.

MAX_EXACT_UNIQUE = 100_000


class DistinctCounter:
    """Distinct values of one column: the MAX_EXACT_UNIQUE smallest of their 64-bit hashes
    are kept. While no more were seen the count is exact (a 64-bit collision among 100,000
    values has odds of about 3e-10); beyond, it is the k-minimum-values estimate
    (k - 1) / (k-th smallest hash / 2^64), within about 1/sqrt(k) = 0.3 %. Batches' hashes
    are merged in groups of at least k/8, so small batches cost no sort of all k each."""

    def __init__(self, cap: int = MAX_EXACT_UNIQUE) -> None:
        self.cap = cap
        self.kept = np.empty(0, dtype=np.uint64)
        self.exact = True
        self._pending: list[np.ndarray] = []
        self._pending_count = 0

    def add(self, values: pa.Array) -> None:
        if len(values) == 0:
            return
        if not (pa.types.is_integer(values.type) or pa.types.is_floating(values.type)):
            values = pc.unique(values)  # text: few distinct values, made Python strings once
        hashes = pd.util.hash_array(values.to_numpy(zero_copy_only=False))
        if not self.exact:  # only hashes below the largest kept can change what is kept
            hashes = hashes[hashes < self.kept[-1]]  # (before sorting: few are)
        hashes = _distinct_sorted(np.sort(hashes))
        self._pending.append(hashes)
        self._pending_count += len(hashes)
        if self._pending_count >= self.cap // 8:
            self._merge()

    def _merge(self) -> None:
        if not self._pending:
            return
        merged = np.concatenate([self.kept, *self._pending])
        self._pending, self._pending_count = [], 0
        merged.sort(kind="stable")  # runs already sorted: Timsort merges them in linear time
        merged = _distinct_sorted(merged)
        if len(merged) > self.cap:
            merged, self.exact = merged[: self.cap], False
        self.kept = merged

    def count(self) -> int:
        self._merge()
        if self.exact:
            return len(self.kept)
        return round((self.cap - 1) / (float(self.kept[-1]) / 2.0**64))


def _distinct_sorted(values: np.ndarray) -> np.ndarray:
    if len(values) < 2:
        return values
    return values[np.concatenate(([True], values[1:] != values[:-1]))]


@dataclass
class _ColumnStats:
    name: str
    dtype: str = "string"
    missing: int = 0
    distinct: DistinctCounter = field(default_factory=DistinctCounter)

    def add(self, column: pa.Array) -> None:
        self.dtype = _dtype_name(column.type)
        self.missing += column.null_count
        present = column.drop_null()
        if pa.types.is_floating(column.type):
            # Arrow counts NaN as a value; users (and pandas) count it as missing.
            is_nan = pc.is_nan(present)
            self.missing += int(pc.sum(is_nan).as_py() or 0)
            present = pc.filter(present, pc.invert(is_nan))
        self.distinct.add(present)

    def info(self) -> dict[str, Any]:
        found = {"name": self.name, "dtype": self.dtype, "missing": self.missing}
        found["unique"] = self.distinct.count()
        if not self.distinct.exact:
            found["unique_exact"] = False
        return found


def _describe_table(path: Path, fmt: str) -> DatasetInfo:
    if fmt == "parquet":
        return _describe_batches(fmt, _parquet_batches(path))
    if fmt != "csv":
        raise DataError(f"format {fmt!r} is not a table: expected csv or parquet")
    # Arrow's streaming reader infers types from the first block; a later value that does
    # not fit (a float among integers, text among numbers) widens that column the way
    # Arrow's whole-file inference (`read_table`) would, and the file is read again.
    _refuse_empty(path)
    _check_utf8(path)
    _check_header(path)
    # Small blocks keep what Arrow reads ahead (dozens of blocks) small; a row longer than
    # one (a very wide file, long text) makes them larger, up to CSV_BLOCK_BYTES.
    types: dict[str, pa.DataType] = {}
    block = min(STREAM_BLOCK_BYTES, CSV_BLOCK_BYTES)
    while True:
        try:
            return _describe_batches(fmt, _csv_pass(path, types, block))
        except _Widen as widen:
            types[widen.column] = widen.to
        except _LargerBlocks:
            block = min(block * 4, CSV_BLOCK_BYTES)


def _describe_batches(fmt: str, batches: Iterator[pa.RecordBatch]) -> DatasetInfo:
    """Counts over `batches`, taken in groups of about STATS_GROUP_BYTES: small blocks keep
    what the reader holds ahead small, groups keep the per-call work of counting few."""
    stats: list[_ColumnStats] | None = None
    rows = 0
    group: list[pa.RecordBatch] = []
    grouped = 0

    def count(group: list[pa.RecordBatch]) -> None:
        assert stats is not None
        for i, column in enumerate(stats):
            parts = pa.chunked_array([batch.column(i) for batch in group], group[0].schema[i].type)
            column.add(_normalise(column.name, parts).combine_chunks())

    for batch in batches:
        if stats is None:
            _check_column_names(batch.schema.names)
            stats = [_ColumnStats(name) for name in batch.schema.names]
        rows += batch.num_rows
        _check_table_size(rows, len(stats))
        group.append(batch)
        grouped += batch.nbytes
        if grouped >= STATS_GROUP_BYTES:
            count(group)
            group, grouped = [], 0
    if group:
        count(group)
    if stats is None or rows == 0:
        raise DataError("the file has a header but no data rows")
    return DatasetInfo(format=fmt, num_rows=rows, columns=[c.info() for c in stats], shape=None)


class _Widen(Exception):
    """A column's type must be wider than the pass so far read it as."""

    def __init__(self, column: str, to: pa.DataType) -> None:
        self.column, self.to = column, to


_WIDER = {"null": pa.int64(), "int64": pa.float64(), "bool": pa.string(), "double": pa.string()}
_CONVERSION = re.compile(r"In CSV column #(\d+): .*CSV conversion error to (\w+)")


class _LargerBlocks(Exception):
    """A row did not fit in one block."""


def _csv_pass(path: Path, types: dict[str, pa.DataType], block: int) -> Iterator[pa.RecordBatch]:
    invalid: list[pa_csv.InvalidRow] = []

    def on_invalid_row(row: pa_csv.InvalidRow) -> str:
        invalid.append(row)
        return "error"

    read = pa_csv.ReadOptions(block_size=block, use_threads=False)
    parse = pa_csv.ParseOptions(invalid_row_handler=on_invalid_row)
    convert = pa_csv.ConvertOptions(strings_can_be_null=True, column_types=types)
    names: list[str] = []
    try:
        # A Python file, not the path: Arrow then reads ahead one block, not several.
        with (
            path.open("rb") as file,
            pa_csv.open_csv(
                file, read_options=read, parse_options=parse, convert_options=convert
            ) as reader,
        ):
            names = reader.schema.names
            # Dates stay the text they were (see _read_csv).
            temporal = [f.name for f in reader.schema if pa.types.is_temporal(f.type)]
            if temporal:
                raise _Widen(temporal[0], pa.string())
            yield from reader
    except pa.ArrowInvalid as exc:
        found = _CONVERSION.search(str(exc))
        if found is not None and not invalid:
            column = names[int(found.group(1))]
            wider = _WIDER.get(found.group(2), pa.string())
            if types.get(column) == wider:
                raise DataError(_csv_error_message(str(exc))) from None
            raise _Widen(column, wider) from None
        if invalid:
            raise DataError(_invalid_row_message(invalid[0])) from None
        raise DataError(_csv_error_message(str(exc))) from None
    except pa.ArrowException as exc:
        if invalid:
            raise DataError(_invalid_row_message(invalid[0])) from None
        if "straddling" in str(exc) and block < CSV_BLOCK_BYTES:
            raise _LargerBlocks() from None
        raise DataError(_csv_error_message(str(exc))) from None


def _parquet_batches(path: Path) -> Iterator[pa.RecordBatch]:
    parquet, columns = _open_parquet(path)
    try:
        yield from parquet.iter_batches(batch_size=65_536, columns=columns)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"not a valid Parquet file: {exc}") from None


def _dtype_name(arrow_type: pa.DataType) -> str:
    """One of integer, float, boolean, string for a column that went through normalising."""
    if pa.types.is_integer(arrow_type):
        return "integer"
    if pa.types.is_floating(arrow_type):
        return "float"
    if pa.types.is_boolean(arrow_type):
        return "boolean"
    return "string"


def _normalise_columns(table: pa.Table) -> pa.Table:
    columns = [_normalise(name, table.column(i)) for i, name in enumerate(table.column_names)]
    return pa.Table.from_arrays(columns, names=table.column_names)


def _normalise(name: str, column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Cast a column to integer, float64/float32, bool or string, or refuse it."""
    kind = column.type
    if pa.types.is_dictionary(kind):
        return _normalise(name, column.cast(kind.value_type))
    if pa.types.is_float16(kind):
        return column.cast(pa.float32())
    if pa.types.is_decimal(kind):
        return column.cast(pa.float64())
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind):
        return column
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return column
    if pa.types.is_nested(kind):
        raise DataError(_nested_message(name, kind))
    # Dates, times, binary, all-null...: text. A CSV's dates never get here (kept as read).
    try:
        return column.cast(pa.string())
    except pa.ArrowInvalid as exc:
        raise DataError(f"column {name!r} of type {kind} cannot be read as text: {exc}") from None
    except pa.ArrowNotImplementedError:
        raise DataError(f"column {name!r} has the unsupported type {kind}") from None


def _nested_message(name: str, kind: pa.DataType) -> str:
    return (
        f"column {name!r} has the nested type {kind}; only flat columns "
        "(numbers, booleans, strings, dates) are supported"
    )


# CSV ------------------------------------------------------------------------------------


def _read_csv(path: Path) -> pa.Table:
    _refuse_empty(path)
    _check_utf8(path)
    _check_header(path)
    table = _parse_csv(path, string_columns=[])
    # Arrow turns ISO dates into timestamps; re-read those columns as the text they were,
    # so a prediction input spelt like the file ("2024-01-31") finds the same category.
    temporal = [f.name for f in table.schema if pa.types.is_temporal(f.type)]
    if temporal:
        table = _parse_csv(path, string_columns=temporal)
    # Integers beyond 64 bits are read by Arrow as float64 (rounded; beyond ~1.8e308 they
    # become inf, which training refuses by name): a "float" column, never an error here.
    return table


def _check_utf8(path: Path) -> None:
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    with path.open("rb") as file:
        while chunk := file.read(_SCAN_BYTES):
            nul = chunk.find(b"\x00")
            if nul >= 0:
                raise DataError(
                    f"not a UTF-8 CSV file: it contains a NUL byte at offset {offset + nul} "
                    "(binary data?)"
                )
            pending = len(decoder.getstate()[0])
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                at = offset - pending + exc.start
                raise DataError(
                    f"not a UTF-8 CSV file: byte {exc.object[exc.start]:#04x} at offset {at} "
                    "is not valid UTF-8"
                ) from None
            offset += len(chunk)
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise DataError("not a UTF-8 CSV file: it ends in the middle of a character") from None


def _check_header(path: Path) -> None:
    """Refuse a blank file, and count the header's fields before parsing a too-wide file."""
    with path.open(encoding="utf-8-sig", newline="") as file:
        try:
            header = next((row for row in csv.reader(file) if row), None)
        except csv.Error:
            return  # e.g. a huge quoted header field: Arrow's parser will judge
    if header is None:
        raise DataError("the file has no header row (it holds only blank lines)")
    if len(header) > MAX_COLUMNS:
        raise DataError(f"the file has {len(header)} columns; at most {MAX_COLUMNS} are supported")


def _parse_csv(path: Path, *, string_columns: list[str], threads: bool = True) -> pa.Table:
    invalid: list[pa_csv.InvalidRow] = []

    def on_invalid_row(row: pa_csv.InvalidRow) -> str:
        invalid.append(row)
        return "error"

    read = pa_csv.ReadOptions(block_size=CSV_BLOCK_BYTES, use_threads=threads)
    parse = pa_csv.ParseOptions(invalid_row_handler=on_invalid_row)
    # Empty cells (and NA, null, NaN...) are missing in every column, strings included.
    convert = pa_csv.ConvertOptions(
        strings_can_be_null=True, column_types=dict.fromkeys(string_columns, pa.string())
    )
    try:
        return pa_csv.read_csv(
            str(path), read_options=read, parse_options=parse, convert_options=convert
        )
    except pa.ArrowException as exc:
        if invalid:
            row = invalid[0]
            if row.number is None and threads:  # row numbers are only known single-threaded
                return _parse_csv(path, string_columns=string_columns, threads=False)
            raise DataError(_invalid_row_message(row)) from None
        raise DataError(_csv_error_message(str(exc))) from None


def _invalid_row_message(row: pa_csv.InvalidRow) -> str:
    where = f"row {row.number}" if row.number is not None else f"the row {row.text[:80]!r}"
    fields = "field" if row.actual_columns == 1 else "fields"
    return (
        f"{where} has {row.actual_columns} {fields}, expected {row.expected_columns} "
        "(counting the header as row 1)"
    )


def _csv_error_message(arrow_message: str) -> str:
    if "Empty CSV file" in arrow_message:
        return "the file has a header but no data rows"
    if "straddling" in arrow_message:
        return (
            f'a row is longer than {CSV_BLOCK_BYTES >> 20} MiB, or a quote (") is opened '
            "and never closed"
        )
    return f"not a valid CSV file: {arrow_message}"


# Parquet --------------------------------------------------------------------------------


def _read_parquet(path: Path) -> pa.Table:
    parquet, columns = _open_parquet(path)
    try:
        return parquet.read(columns=columns).replace_schema_metadata(None)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"not a valid Parquet file: {exc}") from None


def _open_parquet(path: Path) -> tuple[pq.ParquetFile, list[str]]:
    """The file, checked on its schema before any data is read, and its data columns: a
    DataFrame saved with its index has it as an extra column, which is not data."""
    _refuse_empty(path)
    try:
        parquet = pq.ParquetFile(path)
        schema = parquet.schema_arrow
        _check_column_names(schema.names)
        for field_ in schema:
            if pa.types.is_nested(field_.type):
                raise DataError(_nested_message(field_.name, field_.type))
        _check_table_size(parquet.metadata.num_rows, len(schema.names))
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"not a valid Parquet file: {exc}") from None
    index_columns = (schema.pandas_metadata or {}).get("index_columns", [])
    stored = {name for name in index_columns if isinstance(name, str)}
    return parquet, [name for name in schema.names if name not in stored]


# NPZ ------------------------------------------------------------------------------------


def _npy_header(member: IO[bytes]) -> tuple[tuple[int, ...], np.dtype[Any]]:
    """The shape and dtype in a .npy header, the stream left at the array's first byte."""
    version = np.lib.format.read_magic(member)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(member)
    else:
        shape, _, dtype = np.lib.format.read_array_header_2_0(member)
    return tuple(shape), dtype


def _scan_member(archive: np.lib.npyio.NpzFile, name: str) -> tuple[tuple[int, ...], Any, int]:
    """The shape, dtype and number of non-finite values of the array `name`, read a block at
    a time; refused as loading it would be (objects, a size too large, damaged data)."""
    if archive.zip is not None:
        try:
            return _scan_npy(archive.zip, name)
        except DataError:
            raise
        except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile):
            pass  # not a plain .npy member, or a damaged one: loading it says which
    array = _load_member(archive, name)
    return array.shape, array.dtype, _count_nonfinite(array)


def _scan_npy(archive: zipfile.ZipFile, name: str) -> tuple[tuple[int, ...], Any, int]:
    with archive.open(f"{name}.npy") as member:
        shape, dtype = _npy_header(member)
        _refuse_too_large(name, shape, dtype)
        if dtype.hasobject:
            raise ValueError("an array of Python objects")
        left = math.prod(shape) * dtype.itemsize
        block = max(1, NPZ_BLOCK_BYTES // dtype.itemsize) * dtype.itemsize
        nonfinite = 0
        while left:
            data = member.read(min(block, left))
            if not data:
                raise EOFError(f"the data ends {left} bytes early")
            left -= len(data)
            if dtype.kind == "f":  # in C or Fortran order alike: the count is the same
                nonfinite += _count_nonfinite(np.frombuffer(data, dtype))
        member.read(1)  # to the member's end, where zipfile checks its CRC
    return shape, dtype, nonfinite


def _check_member_size(archive: np.lib.npyio.NpzFile, name: str) -> None:
    """Read the array's .npy header only, and refuse a shape too large to decode."""
    if archive.zip is None:
        return
    try:
        with archive.zip.open(f"{name}.npy") as member:
            shape, dtype = _npy_header(member)
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile):
        return  # not a plain .npy member: loading it will say what is wrong
    _refuse_too_large(name, shape, dtype)


def _refuse_too_large(name: str, shape: tuple[int, ...], dtype: Any) -> None:
    elements = math.prod(shape)
    if elements > MAX_CELLS or (shape and shape[0] > MAX_ROWS):
        raise DataError(
            f"array {name!r} has shape {list(shape)} ({elements:,} {dtype} values); at most "
            f"{MAX_CELLS:,} values and {MAX_ROWS:,} rows are supported"
        )


def _load_member(archive: np.lib.npyio.NpzFile, name: str) -> np.ndarray:
    _check_member_size(archive, name)
    try:
        array = archive[name]
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise DataError(
                f"array {name!r} holds Python objects (dtype object), which are never "
                "unpickled: save numbers or fixed-width strings"
            ) from None
        raise DataError(f"array {name!r} could not be read: {exc}") from None
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"array {name!r} could not be read: {exc}") from None
    return np.asarray(array)


def _check_shapes(
    x_shape: tuple[int, ...], x_dtype: Any, y_shape: tuple[int, ...], y_dtype: Any
) -> None:
    if not x_shape or not y_shape:
        raise DataError("x and y must have at least one dimension (one entry per row)")
    if x_dtype.kind not in "biuf":
        raise DataError(f"x must be numeric (bool, integer or float), found dtype {x_dtype}")
    if y_dtype.kind not in "biufU":
        raise DataError(
            f"y must be numeric (bool, integer or float) or unicode strings, found dtype {y_dtype}"
        )
    if x_shape[0] != y_shape[0]:
        raise DataError(f"x has {x_shape[0]} rows but y has {y_shape[0]}")
    if x_shape[0] == 0:
        raise DataError("x and y have 0 rows")
    if math.prod(x_shape[1:]) == 0:
        raise DataError(f"x has no values per row (shape {list(x_shape)})")


def _count_nonfinite(array: np.ndarray) -> int:
    if array.dtype.kind != "f":
        return 0
    return int(array.size - np.count_nonzero(np.isfinite(array)))
