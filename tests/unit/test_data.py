"""Reading stored datasets: every refusal names the problem; accepted files are described."""

from __future__ import annotations

import decimal
import io
import math
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from models import data
from models.data import DataError, detect_format, inspect_dataset, read_arrays, read_table


def write(tmp_path: Path, name: str, content: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


def npz(**arrays: Any) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def refused(path: Path, fmt: str) -> str:
    with pytest.raises(DataError) as info:
        inspect_dataset(path, fmt)
    return str(info.value)


def columns_by_name(path: Path, fmt: str) -> dict[str, dict[str, Any]]:
    info = inspect_dataset(path, fmt)
    assert info.columns is not None
    return {column["name"]: column for column in info.columns}


# Formats ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("filename", "fmt"),
    [
        ("a.csv", "csv"),
        ("A.CSV", "csv"),
        ("t.parquet", "parquet"),
        ("t.pq", "parquet"),
        ("arrays.npz", "npz"),
    ],
)
def test_detect_format_from_extension(filename: str, fmt: str) -> None:
    assert detect_format(filename) == fmt


@pytest.mark.parametrize("filename", ["data.txt", "noextension", "data.csv.gz"])
def test_detect_format_names_the_supported_formats(filename: str) -> None:
    with pytest.raises(DataError, match=r"\.csv, \.parquet .*\.npz"):
        detect_format(filename)


@pytest.mark.parametrize(
    ("name", "fmt"), [("e.csv", "csv"), ("e.parquet", "parquet"), ("e.npz", "npz")]
)
def test_empty_file_is_refused(tmp_path: Path, name: str, fmt: str) -> None:
    assert refused(write(tmp_path, name, b""), fmt) == "file is empty"


# CSV: refusals --------------------------------------------------------------------------


def test_binary_garbage_named_csv(tmp_path: Path) -> None:
    message = refused(write(tmp_path, "g.csv", bytes(range(256)) * 4), "csv")
    assert message.startswith("not a UTF-8 CSV file") and "NUL byte at offset 0" in message


def test_parquet_file_named_csv(tmp_path: Path) -> None:
    path = tmp_path / "real.csv"
    pd.DataFrame({"a": [1, 2]}).to_parquet(path)
    assert refused(path, "csv").startswith("not a UTF-8 CSV file")


def test_undecodable_utf8_names_the_byte(tmp_path: Path) -> None:
    message = refused(write(tmp_path, "l1.csv", b"a,b\n1,caf\xe9\n"), "csv")
    assert message == "not a UTF-8 CSV file: byte 0xe9 at offset 9 is not valid UTF-8"


@pytest.mark.parametrize(
    ("tail", "offset"),
    [
        ("é".encode() + b"\n\xff", (1 << 20) + 2),  # a valid character across the chunk seam
        (b"\xc3(", (1 << 20) - 1),  # a broken one across it
    ],
)
def test_utf8_offsets_are_exact_across_read_chunks(
    tmp_path: Path, tail: bytes, offset: int
) -> None:
    content = b"a\n" + b"x" * ((1 << 20) - 3) + tail  # the scan reads 1 MiB at a time
    message = refused(write(tmp_path, "seam.csv", content), "csv")
    assert f"at offset {offset} is not valid UTF-8" in message


def test_row_with_too_many_fields(tmp_path: Path) -> None:
    message = refused(write(tmp_path, "r.csv", b"a,b\n1,2\n3,4,5\n"), "csv")
    assert message.startswith("row 3 has 3 fields, expected 2")


def test_row_with_too_few_fields_is_not_padded(tmp_path: Path) -> None:
    message = refused(write(tmp_path, "s.csv", b"a,b,c\n1,2,3\n4,5\n"), "csv")
    assert message.startswith("row 3 has 2 fields, expected 3")


def test_bad_row_is_located_deep_in_a_file(tmp_path: Path) -> None:
    content = b"a,b\n" + b"1,2\n" * 5000 + b"7\n" + b"1,2\n" * 10
    message = refused(write(tmp_path, "deep.csv", content), "csv")
    assert message.startswith("row 5002 has 1 field, expected 2")


def test_duplicate_column_names(tmp_path: Path) -> None:
    message = refused(write(tmp_path, "d.csv", b"a,b,a,c,b\n1,2,3,4,5\n"), "csv")
    assert message == "duplicate column names: a, b"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"a,b\n", "the file has a header but no data rows"),
        (b"a,b", "the file has a header but no data rows"),
        (b"\n\n\n", "the file has no header row (it holds only blank lines)"),
    ],
)
def test_no_data_rows(tmp_path: Path, content: bytes, expected: str) -> None:
    assert refused(write(tmp_path, "h.csv", content), "csv") == expected


def test_column_name_with_control_characters(tmp_path: Path) -> None:
    message = refused(write(tmp_path, "c.csv", b"a\tb,c\n1,2\n"), "csv")
    assert message == "column name 'a\\tb' contains NUL or other control characters"


def test_column_without_a_name(tmp_path: Path) -> None:
    message = refused(write(tmp_path, "i.csv", b",x\n0,1\n1,2\n"), "csv")
    assert message == "column 1 has no name; every column needs a header"


def test_too_many_columns(tmp_path: Path) -> None:
    header = ",".join(f"c{i}" for i in range(100_001)).encode()
    message = refused(write(tmp_path, "w.csv", header + b"\n"), "csv")
    assert message == "the file has 100001 columns; at most 100000 are supported"


# CSV: accepted files --------------------------------------------------------------------


def test_csv_dtypes_missing_and_unique(tmp_path: Path) -> None:
    content = (
        b"i,f,b,s,d,blank\n"
        b"1,1.5,true,x,2020-01-01,\n"
        b",NaN,,,2020-01-02 10:00,\n"
        b"3,2.5,False,y,,\n"
        b"3,2.5,True,x,2020-01-01,\n"
    )
    path = write(tmp_path, "t.csv", content)
    info = inspect_dataset(path, "csv")
    assert info.format == "csv" and info.num_rows == 4 and info.shape is None
    assert info.columns == [
        {"name": "i", "dtype": "integer", "missing": 1, "unique": 2},
        {"name": "f", "dtype": "float", "missing": 1, "unique": 2},
        {"name": "b", "dtype": "boolean", "missing": 1, "unique": 2},
        {"name": "s", "dtype": "string", "missing": 1, "unique": 2},
        {"name": "d", "dtype": "string", "missing": 1, "unique": 2},
        {"name": "blank", "dtype": "string", "missing": 4, "unique": 0},
    ]


def test_read_table_matches_inspect(tmp_path: Path) -> None:
    path = write(tmp_path, "t.csv", b"i,b,d,s\n1,true,2020-01-01,x\n,false,2020-01-02 10:00,\n")
    frame = read_table(path, "csv")
    assert list(frame.columns) == ["i", "b", "d", "s"]
    assert pd.api.types.is_float_dtype(frame["i"]) and math.isnan(frame["i"][1])
    assert frame["b"].dtype == pd.BooleanDtype()
    # Dates stay the text of the file, so predict inputs spelt the same way match them.
    assert frame["d"].tolist() == ["2020-01-01", "2020-01-02 10:00"]
    assert frame["s"].tolist()[0] == "x" and pd.isna(frame["s"][1])


def test_integers_beyond_64_bits_become_a_float_column(tmp_path: Path) -> None:
    huge = 123456789012345678901234567890
    path = write(tmp_path, "big.csv", f"id,v\n{huge},1\n{2**64},2\n3,3\n".encode())
    assert columns_by_name(path, "csv")["id"]["dtype"] == "float"
    values = read_table(path, "csv")["id"].tolist()
    assert values == [float(huge), float(2**64), 3.0]


def test_integer_beyond_float_range_is_read_as_infinity(tmp_path: Path) -> None:
    path = write(tmp_path, "inf.csv", b"id,v\n" + b"9" * 400 + b",1\n2,2\n")
    assert columns_by_name(path, "csv")["id"]["dtype"] == "float"
    assert read_table(path, "csv")["id"].tolist()[0] == math.inf


def test_utf8_bom_and_crlf_are_accepted(tmp_path: Path) -> None:
    path = write(tmp_path, "bom.csv", "\ufeffnom,x\r\nété,1\r\n".encode())
    frame = read_table(path, "csv")
    assert list(frame.columns) == ["nom", "x"] and frame["nom"].tolist() == ["été"]


# Parquet --------------------------------------------------------------------------------


def test_parquet_dtypes_are_normalised(tmp_path: Path) -> None:
    table = pa.table(
        {
            "i8": pa.array([1, None, 3], pa.int8()),
            "u64": pa.array([2**64 - 1, 0, 1], pa.uint64()),
            "f32": pa.array([1.5, float("nan"), None], pa.float32()),
            "flag": pa.array([True, False, True]),
            "text": pa.array(["a", "b", None]),
            "cat": pa.array(["u", "v", "u"]).dictionary_encode(),
            "when": pa.array([0, 1, 2], pa.timestamp("s")),
            "price": pa.array([decimal.Decimal("1.25"), None, decimal.Decimal("2")]),
        }
    )
    path = tmp_path / "t.parquet"
    pq.write_table(table, path)
    info = inspect_dataset(path, "parquet")
    assert info.num_rows == 3
    dtypes = {c["name"]: (c["dtype"], c["missing"], c["unique"]) for c in info.columns or []}
    assert dtypes == {
        "i8": ("integer", 1, 2),
        "u64": ("integer", 0, 3),
        "f32": ("float", 2, 1),
        "flag": ("boolean", 0, 2),
        "text": ("string", 1, 2),
        "cat": ("string", 0, 2),
        "when": ("string", 0, 3),
        "price": ("float", 1, 2),
    }
    frame = read_table(path, "parquet")
    assert frame["when"].tolist()[0].startswith("1970-01-01 00:00:00")
    assert frame["price"].tolist()[0] == 1.25


def test_parquet_drops_a_saved_pandas_index(tmp_path: Path) -> None:
    path = tmp_path / "indexed.parquet"
    pd.DataFrame({"a": [1, 2]}, index=[10, 20]).to_parquet(path)
    assert [c["name"] for c in inspect_dataset(path, "parquet").columns or []] == ["a"]
    assert list(read_table(path, "parquet").columns) == ["a"]


def test_parquet_nested_column_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "nested.parquet"
    pq.write_table(pa.table({"a": [1, 2], "l": [[1], [2, 3]]}), path)
    assert refused(path, "parquet").startswith("column 'l' has the nested type list")


def test_invalid_parquet(tmp_path: Path) -> None:
    message = refused(write(tmp_path, "bad.parquet", b"PAR1 not really parquet"), "parquet")
    assert message.startswith("not a valid Parquet file: ")


def test_parquet_without_rows(tmp_path: Path) -> None:
    path = tmp_path / "none.parquet"
    pq.write_table(pa.table({"a": pa.array([], pa.int64())}), path)
    assert refused(path, "parquet") == "the file has a header but no data rows"


# NPZ ------------------------------------------------------------------------------------


def test_npz_is_described(tmp_path: Path) -> None:
    x = np.array([[[1.0, np.nan]], [[np.inf, 2.0]], [[0.0, 0.0]]])  # (3, 1, 2)
    path = write(tmp_path, "ok.npz", npz(x=x, y=np.array(["a", "b", "a"])))
    info = inspect_dataset(path, "npz")
    assert info.num_rows == 3 and info.columns is None
    assert info.shape == {
        "x": [3, 1, 2],
        "y": [3],
        "x_dtype": "float64",
        "y_dtype": "<U1",
        "x_nonfinite": 2,
        "y_nonfinite": 0,
        "num_classes": 2,
        "class_counts": {"a": 2, "b": 1},
        # Read as (N, H, W) grayscale images; an rnn job reads the same x as (N, T, F).
        "channels": 1,
        "height": 1,
        "width": 2,
        "layout": "NHW",
    }
    x_read, y_read = read_arrays(path)
    np.testing.assert_array_equal(x_read, x)
    assert y_read.tolist() == ["a", "b", "a"]


@pytest.mark.parametrize(
    ("shape", "geometry"),
    [
        ((5, 28, 28, 3), {"channels": 3, "height": 28, "width": 28, "layout": "NHWC"}),
        ((5, 1, 28, 20), {"channels": 1, "height": 28, "width": 20, "layout": "NCHW"}),
        ((5, 7, 6, 5), None),  # no axis of 1 or 3 channels: not images
    ],
)
def test_npz_of_images_shows_channels_and_classes(
    tmp_path: Path, shape: tuple[int, ...], geometry: dict[str, object] | None
) -> None:
    y = np.array([3, 1, 3, 3, 1])
    path = write(tmp_path, "images.npz", npz(x=np.zeros(shape, np.uint8), y=y))
    described = inspect_dataset(path, "npz").shape or {}
    assert described["num_classes"] == 2 and described["class_counts"] == {"1": 2, "3": 3}
    assert {
        k: described[k] for k in ("channels", "height", "width", "layout") if k in described
    } == (geometry or {})


def test_npz_regression_target_has_no_classes(tmp_path: Path) -> None:
    path = write(tmp_path, "r.npz", npz(x=np.zeros((3, 2)), y=np.array([0.5, 1.5, 2.0])))
    described = inspect_dataset(path, "npz").shape or {}
    assert "num_classes" not in described and "channels" not in described


def test_npz_without_y(tmp_path: Path) -> None:
    path = write(tmp_path, "noy.npz", npz(a=np.zeros(3), x=np.zeros((3, 2))))
    assert refused(path, "npz") == "NPZ must contain arrays 'x' and 'y' (found: a, x)"


class _Tripwire:
    """Unpickling this would call `_tripped`: the test proves it never happens."""

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return (_tripped, ())


_TRIPPED: list[bool] = []


def _tripped() -> None:
    _TRIPPED.append(True)


def test_npz_object_array_is_refused_unread(tmp_path: Path) -> None:
    y = np.array([_Tripwire(), 1, "a"], dtype=object)
    path = write(tmp_path, "obj.npz", npz(x=np.zeros((3, 2)), y=y))
    _TRIPPED.clear()
    message = refused(path, "npz")
    assert message.startswith("array 'y' holds Python objects (dtype object)")
    assert not _TRIPPED
    with np.load(path, allow_pickle=True) as unsafe:  # the payload is live: loading trips it
        unsafe["y"]
    assert _TRIPPED


def test_npz_lengths_must_match(tmp_path: Path) -> None:
    path = write(tmp_path, "len.npz", npz(x=np.zeros((100, 2)), y=np.zeros(99)))
    assert refused(path, "npz") == "x has 100 rows but y has 99"


@pytest.mark.parametrize(
    ("arrays", "expected"),
    [
        ({"x": np.zeros((0, 2)), "y": np.zeros(0)}, "x and y have 0 rows"),
        ({"x": np.array(["a", "b"]), "y": np.zeros(2)}, "x must be numeric"),
        ({"x": np.zeros(2), "y": np.zeros(2, dtype=complex)}, "y must be numeric"),
        ({"x": np.float64(1.0), "y": np.zeros(1)}, "at least one dimension"),
        ({"x": np.zeros((2, 0)), "y": np.zeros(2)}, "x has no values per row"),
    ],
)
def test_npz_bad_arrays(tmp_path: Path, arrays: dict[str, Any], expected: str) -> None:
    assert expected in refused(write(tmp_path, "bad.npz", npz(**arrays)), "npz")


def test_npz_that_is_not_a_zip(tmp_path: Path) -> None:
    assert "not a zip archive" in refused(write(tmp_path, "a.npz", b"a,b\n1,2\n"), "npz")
    buffer = io.BytesIO()
    np.save(buffer, np.zeros(3))
    assert "single .npy array" in refused(write(tmp_path, "b.npz", buffer.getvalue()), "npz")


def test_an_npz_whose_header_claims_a_huge_array_is_refused_before_decoding(
    tmp_path: Path,
) -> None:
    """A few hundred bytes whose x.npy header claims 3 billion floats (12 GB): refused from
    the header, before numpy allocates anything."""
    header = io.BytesIO()
    header_fields = {"descr": "<f4", "fortran_order": False, "shape": (3_000_000_000,)}
    np.lib.format.write_array_header_1_0(header, header_fields)
    y = io.BytesIO()
    np.save(y, np.zeros(3))
    path = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x.npy", header.getvalue())
        archive.writestr("y.npy", y.getvalue())
    assert path.stat().st_size < 1000
    message = refused(path, "npz")
    assert "3,000,000,000" in message and "at most" in message


def test_a_compressed_npz_within_the_caps_loads(tmp_path: Path) -> None:
    path = tmp_path / "ok.npz"
    np.savez_compressed(path, x=np.zeros((1000, 5), np.float32), y=np.arange(1000) % 2)
    x, y = read_arrays(path)
    assert x.shape == (1000, 5) and y.shape == (1000,)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_tables_past_the_row_and_value_caps_are_refused(
    tmp_path: Path, fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    frame = pd.DataFrame({"a": np.zeros(50), "b": np.ones(50)})
    path = tmp_path / f"t.{fmt}"
    frame.to_csv(path, index=False) if fmt == "csv" else frame.to_parquet(path)
    monkeypatch.setattr(data, "MAX_ROWS", 49)
    assert "50 rows" in refused(path, fmt)
    monkeypatch.setattr(data, "MAX_ROWS", 50)
    monkeypatch.setattr(data, "MAX_CELLS", 99)
    assert "and 99 values are supported" in refused(path, fmt)
    monkeypatch.setattr(data, "MAX_CELLS", 100)
    assert inspect_dataset(path, fmt).num_rows == 50
