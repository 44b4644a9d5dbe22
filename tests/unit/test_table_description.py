"""Uploads described in constant memory: batch by batch, the same description the whole
table read at once gives (the types `read_table` hands the worker), distinct values exact up
to a cap and estimated beyond it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models import data
from models.data import DistinctCounter, inspect_dataset, read_table


def expected(path: Path, fmt: str) -> list[dict]:
    """The description from the whole table in memory (what uploads computed before): the
    dtype of Arrow's whole-file read, missing and distinct values counted by pandas."""
    table = data._load_table(path, fmt)
    frame = read_table(path, fmt)
    return [
        {
            "name": name,
            "dtype": data._dtype_name(table.schema.field(name).type),
            "missing": int(frame[name].isna().sum()),
            "unique": int(frame[name].nunique(dropna=True)),
        }
        for name in frame.columns
    ]


def mixed_frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "count": rng.integers(0, 50, n),
            "value": rng.normal(size=n).round(3),
            "city": rng.choice(["Kyoto", "Osaka", "Nara", ""], n),
            "flag": rng.choice(["true", "false"], n),
            "day": rng.choice(["2024-01-31", "2024-02-01"], n),
        }
    )
    frame.loc[frame.index[::7], "value"] = np.nan
    return frame


@pytest.fixture
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks of 4 KiB: a few hundred rows each, so even small files stream in many."""
    monkeypatch.setattr(data, "CSV_BLOCK_BYTES", 4096)


def test_streamed_description_equals_the_whole_table(tmp_path: Path, small_blocks: None) -> None:
    path = tmp_path / "mixed.csv"
    mixed_frame(5000, seed=0).to_csv(path, index=False)
    info = inspect_dataset(path, "csv")
    assert info.num_rows == 5000
    assert info.columns == expected(path, "csv")
    assert [c["dtype"] for c in info.columns] == ["integer", "float", "string", "boolean", "string"]


def test_parquet_is_described_by_row_groups(tmp_path: Path) -> None:
    path = tmp_path / "mixed.parquet"
    frame = mixed_frame(3000, seed=1).set_index("count")  # a stored index is not data
    frame.to_parquet(path, row_group_size=500)
    info = inspect_dataset(path, "parquet")
    assert info.num_rows == 3000
    assert [c["name"] for c in info.columns] == ["value", "city", "flag", "day"]
    assert info.columns == expected(path, "parquet")


@pytest.mark.parametrize(
    ("late", "dtype"),
    [("2.5", "float"), ("seven", "string"), ("1e400", "float"), ("", "integer")],
)
def test_a_late_value_widens_its_column_as_the_whole_file_would(
    tmp_path: Path, small_blocks: None, late: str, dtype: str
) -> None:
    """The first blocks say integer; a value near the end decides otherwise."""
    rows = [f"{i},{i % 3}" for i in range(3000)] + [f"{late},1"]
    path = tmp_path / "late.csv"
    path.write_text("a,b\n" + "\n".join(rows) + "\n")
    info = inspect_dataset(path, "csv")
    assert info.columns == expected(path, "csv")
    assert info.columns[0]["dtype"] == dtype


def test_a_column_empty_at_first_takes_the_type_of_its_later_values(
    tmp_path: Path, small_blocks: None
) -> None:
    rows = ["1," for _ in range(2000)] + ["2,3.5", "3,4"]
    path = tmp_path / "empty-first.csv"
    path.write_text("a,b\n" + "\n".join(rows) + "\n")
    info = inspect_dataset(path, "csv")
    assert info.columns == expected(path, "csv")
    assert info.columns[1] == {"name": "b", "dtype": "float", "missing": 2000, "unique": 2}


def test_a_bad_row_late_in_the_file_is_named(tmp_path: Path, small_blocks: None) -> None:
    rows = [f"{i},{i}" for i in range(2000)] + ["1,2,3"]
    path = tmp_path / "bad.csv"
    path.write_text("a,b\n" + "\n".join(rows) + "\n")
    with pytest.raises(data.DataError, match="row 2002 has 3 fields, expected 2"):
        inspect_dataset(path, "csv")


def test_distinct_counts_are_exact_to_the_cap_and_estimated_beyond() -> None:
    import pyarrow as pa

    rng = np.random.default_rng(0)
    exact = DistinctCounter(cap=1000)
    drawn = [rng.integers(0, 900, 400) for _ in range(5)]
    for chunk in drawn:
        exact.add(pa.array(chunk))
    assert exact.exact and exact.count() == len(np.unique(np.concatenate(drawn)))
    estimated = DistinctCounter(cap=1000)
    values = rng.permutation(50_000).astype(str)
    for chunk in np.array_split(values, 25):
        estimated.add(pa.array(chunk))
    assert not estimated.exact
    assert abs(estimated.count() - 50_000) < 50_000 * 0.1  # k = 1000: about 3 % typical


def test_a_column_past_the_cap_says_its_count_is_an_estimate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(DistinctCounter.__init__, "__defaults__", (500,))
    path = tmp_path / "ids.csv"
    pd.DataFrame({"id": [f"u{i}" for i in range(4000)], "y": [i % 2 for i in range(4000)]}).to_csv(
        path, index=False
    )
    ids, y = inspect_dataset(path, "csv").columns
    assert ids["unique_exact"] is False and abs(ids["unique"] - 4000) < 400
    assert y == {"name": "y", "dtype": "integer", "missing": 0, "unique": 2}


def test_columns_too_diverse_to_train_on_are_refused_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from models.base import SpecError
    from models.describe import describe
    from models.specs import JobSpec

    monkeypatch.setattr(DistinctCounter.__init__, "__defaults__", (500,))
    path = tmp_path / "users.csv"
    rng = np.random.default_rng(0)
    pd.DataFrame(
        {
            "user": [f"u{i}" for i in range(3000)],
            "x": rng.normal(size=3000),
            "y": rng.integers(0, 2, 3000),
        }
    ).to_csv(path, index=False)
    info = inspect_dataset(path, "csv")

    def spec(**fields: object) -> JobSpec:
        return JobSpec.model_validate(
            {"dataset_id": "d", "task": "classification", "model": {"kind": "mlp"}, **fields}
        )

    with pytest.raises(SpecError, match=r"'user' is text with about .* too many to one-hot"):
        describe(spec(target="y"), info)
    with pytest.raises(SpecError, match=r"target 'user' has about .* too many classes"):
        describe(spec(target="user", features=["x"]), info)
    assert describe(spec(target="y", features=["x"]), info).shape.example == (1,)


# NPZ arrays: x read a block at a time ---------------------------------------------------


def whole_npz_description(path: Path) -> dict:
    """What uploads computed before: both arrays loaded whole."""
    x, y = data.read_arrays(path)
    described = {
        "x": list(x.shape),
        "y": list(y.shape),
        "x_dtype": str(x.dtype),
        "y_dtype": str(y.dtype),
        "x_nonfinite": int(x.size - np.count_nonzero(np.isfinite(x))) if x.dtype.kind == "f" else 0,
        "y_nonfinite": int(y.size - np.count_nonzero(np.isfinite(y))) if y.dtype.kind == "f" else 0,
    }
    if y.ndim == 1 and y.dtype.kind in "biuU":
        described["num_classes"], described["class_counts"] = data.class_counts(y)
    if x.ndim in (3, 4):
        described.update(data.image_geometry(x.shape) or {})
    return described


def with_gaps(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    flat = x.reshape(-1)
    flat[rng.choice(flat.size, 37, replace=False)] = np.nan
    flat[rng.choice(flat.size, 5, replace=False)] = np.inf
    return x


@pytest.mark.parametrize(
    "case", ["float64", "fortran", "big-endian float32", "int", "bool", "images", "compressed"]
)
def test_npz_described_a_block_at_a_time_as_when_read_whole(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(data, "NPZ_BLOCK_BYTES", 1000)  # many blocks, not a whole number of rows
    rng = np.random.default_rng(3)
    y = rng.integers(0, 4, 600)
    x: np.ndarray = {
        "float64": lambda: with_gaps(rng.normal(size=(600, 7)), rng),
        "fortran": lambda: np.asfortranarray(with_gaps(rng.normal(size=(600, 7)), rng)),
        "big-endian float32": lambda: with_gaps(rng.normal(size=(600, 5)).astype(">f4"), rng),
        "int": lambda: rng.integers(-9, 9, (600, 3)),
        "bool": lambda: rng.random((600, 3)) > 0.5,
        "images": lambda: rng.integers(0, 256, (600, 1, 8, 8), dtype=np.uint8),
        "compressed": lambda: with_gaps(rng.normal(size=(600, 7)), rng),
    }[case]()
    path = tmp_path / "arrays.npz"
    (np.savez_compressed if case == "compressed" else np.savez)(path, x=x, y=y)
    info = inspect_dataset(path, "npz")
    assert info.num_rows == 600
    assert info.shape == whole_npz_description(path)
    if x.dtype.kind == "f":
        assert info.shape["x_nonfinite"] == 42


def test_npz_description_holds_one_block_of_x_at_a_time(tmp_path: Path) -> None:
    import tracemalloc

    path = tmp_path / "large.npz"
    np.savez(path, x=np.ones((40_000, 128)), y=np.zeros(40_000))  # x: 41 MB
    tracemalloc.start()
    try:
        info = inspect_dataset(path, "npz")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.shape is not None and info.shape["x"] == [40_000, 128]
    assert peak < 4 * data.NPZ_BLOCK_BYTES, peak  # read whole, it was 41 MB and more


def test_a_damaged_npz_member_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "damaged.npz"
    np.savez(path, x=np.arange(20_000, dtype=np.float64).reshape(-1, 4), y=np.zeros(5_000))
    body = bytearray(path.read_bytes())
    start = body.index(b"\x93NUMPY", body.index(b"x.npy"))
    body[start + 200 : start + 208] = b"\xff" * 8  # a value changed inside x: its CRC fails
    path.write_bytes(bytes(body))
    with pytest.raises(data.DataError, match="array 'x' could not be read"):
        inspect_dataset(path, "npz")
    path.write_bytes(bytes(body[: start + 1000]))  # cut off inside x
    with pytest.raises(data.DataError, match="NPZ"):
        inspect_dataset(path, "npz")
