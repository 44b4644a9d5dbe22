"""Feature and target encoding: numbers checked by hand, and JSON that repeats it exactly."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from models import preprocessing
from models.data import DataError, read_table
from models.image_preprocessing import ImagePreprocessor
from models.preprocessing import (
    ArrayPreprocessor,
    LabelEncoder,
    TabularPreprocessor,
    constant_as_one,
    regression_target,
    row_chunks,
    standardise,
    validate_columns,
)
from models.sequences import SequencePreprocessor


def json_round_trip(data: dict[str, Any]) -> dict[str, Any]:
    # The way it is stored: tagged by the caller, through a JSON text.
    return dict(json.loads(json.dumps({"type": "tag", **data}, allow_nan=False)))


@pytest.fixture
def train() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "age": [1.0, 2.0, 3.0, None],
            "color": pd.Series(["red", "blue", None, "red"], dtype="str"),
            "flag": pd.array([True, False, True, True], dtype="boolean"),
            "const": [5, 5, 5, 5],
            "ignored": [9, 9, 9, 9],
        }
    )


FEATURES = ["age", "color", "flag", "const"]


# Tables ---------------------------------------------------------------------------------


def test_standardisation_and_one_hot_by_hand(train: pd.DataFrame) -> None:
    pre = TabularPreprocessor.fit(train, features=FEATURES)
    assert pre.output_names == ["age", "color=blue", "color=red", "flag", "const"]
    s = math.sqrt(2 / 3)  # population std of 1, 2, 3 (the missing value left out)
    f_mean, f_std = 0.75, math.sqrt(0.75 * 0.25)
    expected = np.array(
        [
            [-1 / s, 0, 1, (1 - f_mean) / f_std, 0],
            [0, 1, 0, (0 - f_mean) / f_std, 0],
            [1 / s, 0, 0, (1 - f_mean) / f_std, 0],  # missing color: all zeros
            [0, 0, 1, (1 - f_mean) / f_std, 0],  # missing age: the mean, 0
        ]
    )
    out = pre.transform(train)
    assert out.dtype == np.float32 and out.shape == (4, 5)
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-7)


def test_constant_column_keeps_std_one(train: pd.DataFrame) -> None:
    pre = TabularPreprocessor.fit(train, features=["const"])
    assert pre.to_json()["columns"] == [{"name": "const", "mean": 5.0, "std": 1.0}]
    shifted = pd.DataFrame({"const": [7]})
    assert pre.transform(shifted).tolist() == [[2.0]]


def test_unseen_category_gives_all_zeros(train: pd.DataFrame) -> None:
    pre = TabularPreprocessor.fit(train, features=["color"])
    new = pd.DataFrame({"color": ["green", "blue", None]})
    assert pre.transform(new).tolist() == [[0, 0], [1, 0], [0, 0]]


def test_statistics_come_from_the_rows_given(train: pd.DataFrame) -> None:
    pre = TabularPreprocessor.fit(train.iloc[:2], features=["age", "color"])
    assert pre.input_schema() == {
        "features": [
            {"name": "age", "type": "number"},
            {"name": "color", "type": "string", "categories": ["blue", "red"]},
        ]
    }
    assert pre.to_json()["columns"][0] == {"name": "age", "mean": 1.5, "std": 0.5}
    assert pre.transform(train.iloc[2:3]).tolist() == [[3.0, 0.0, 0.0]]


def test_json_round_trip_gives_identical_transforms(train: pd.DataFrame) -> None:
    pre = TabularPreprocessor.fit(train, features=FEATURES)
    again = TabularPreprocessor.from_json(json_round_trip(pre.to_json()))
    new = pd.DataFrame(
        {"age": [0.1, 1e6], "color": ["blue", "mauve"], "flag": [False, True], "const": [1, 5]}
    )
    for frame in (train, new):
        np.testing.assert_array_equal(again.transform(frame), pre.transform(frame))
    assert again.output_names == pre.output_names
    assert again.input_schema() == pre.input_schema()


def test_predict_style_records_encode_like_the_training_frame(train: pd.DataFrame) -> None:
    pre = TabularPreprocessor.fit(train, features=FEATURES)
    records = [
        {"age": 1, "color": "red", "flag": True, "const": 5},
        {"age": None, "color": None, "flag": False, "const": 5},
    ]
    frame = pd.DataFrame.from_records(records, columns=FEATURES)
    typed = pd.DataFrame(
        {
            "age": [1.0, float("nan")],
            "color": pd.Series(["red", None], dtype="str"),
            "flag": [True, False],
            "const": [5, 5],
        }
    )
    np.testing.assert_array_equal(pre.transform(frame), pre.transform(typed))


def test_transform_refuses_what_training_never_saw(train: pd.DataFrame) -> None:
    pre = TabularPreprocessor.fit(train, features=FEATURES)
    with pytest.raises(DataError, match=r"^missing feature columns: color, const$"):
        pre.transform(train[["age", "flag"]])
    text_age = train.assign(age=pd.Series(["old", "1", None, "2"], dtype=object))
    with pytest.raises(DataError, match=r"column 'age' must be numeric .*found 'old'"):
        pre.transform(text_age)


def test_fit_refusals(train: pd.DataFrame) -> None:
    with pytest.raises(DataError, match="no feature columns"):
        TabularPreprocessor.fit(train, features=[])
    with pytest.raises(DataError, match=r"3 distinct values .* \(limit 2\)"):
        TabularPreprocessor.fit(
            pd.DataFrame({"id": ["a", "b", "c"]}), features=["id"], max_categories=2
        )
    with pytest.raises(DataError, match="hold no values"):
        TabularPreprocessor.fit(pd.DataFrame({"s": pd.Series([None], dtype="str")}), features=["s"])


def test_huge_integers_from_a_csv_train_as_floats(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    path.write_text(f"id,v\n{2**100},1\n{2**101},2\n{3 * 2**100},3\n")
    pre = TabularPreprocessor.fit(read_table(path, "csv"), features=["id"])
    column = pre.to_json()["columns"][0]
    assert column["mean"] == pytest.approx(2**101)
    out = pre.transform(read_table(path, "csv"))
    np.testing.assert_allclose(out[:, 0], [-1.2247449, 0.0, 1.2247449], rtol=1e-6, atol=1e-7)


def test_integers_beyond_float_range_are_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "inf.csv"
    path.write_text("id,v\n" + "9" * 400 + ",1\n2,2\n")
    with pytest.raises(DataError, match=r"column 'id' has 1 infinite values"):
        TabularPreprocessor.fit(read_table(path, "csv"), features=["id", "v"])


# Labels and regression targets -----------------------------------------------------------


def test_string_labels_round_trip() -> None:
    encoder = LabelEncoder.fit(pd.Series(["dog", "cat", "dog", "emu"], name="y"))
    assert encoder.classes == ["cat", "dog", "emu"]
    codes = encoder.encode(pd.Series(["emu", "cat", "dog"]))
    assert codes.dtype == np.int64 and codes.tolist() == [2, 0, 1]
    assert encoder.decode(codes) == ["emu", "cat", "dog"]
    again = LabelEncoder.from_json(json_round_trip(encoder.to_json()))
    assert again.classes == encoder.classes
    assert again.encode(pd.Series(["dog"])).tolist() == [1]


def test_integer_labels_stay_python_ints() -> None:
    encoder = LabelEncoder.fit(pd.Series(np.array([7, -1, 7, 3], dtype=np.int64)))
    assert encoder.classes == [-1, 3, 7]
    decoded = encoder.decode(np.array([2, 0]))
    assert decoded == [7, -1] and all(type(v) is int for v in decoded)
    json.dumps(decoded)  # numpy scalars would not serialise
    again = LabelEncoder.from_json(json_round_trip(encoder.to_json()))
    assert again.decode([1]) == [3] and type(again.decode([1])[0]) is int


def test_boolean_and_float_labels() -> None:
    booleans = LabelEncoder.fit(pd.Series(pd.array([True, False, True], dtype="boolean")))
    assert booleans.classes == [False, True] and type(booleans.decode([1])[0]) is bool
    floats = LabelEncoder.fit(pd.Series([0.5, 2.0, 0.5]))
    assert floats.encode(pd.Series([2.0, 0.5])).tolist() == [1, 0]


def test_label_refusals() -> None:
    with pytest.raises(DataError) as info:
        LabelEncoder.fit(pd.Series(["a", "a"], name="y"))
    assert (
        str(info.value) == "classification needs at least 2 classes; target 'y' has only 1: ['a']"
    )
    with pytest.raises(DataError, match=r"^target column 'y' has 3 missing values$"):
        LabelEncoder.fit(pd.Series(["a", None, "b", None, None], name="y"))
    encoder = LabelEncoder.fit(pd.Series(["a", "b"], name="y"))
    with pytest.raises(DataError, match=r"labels not seen when fitting: 'z'"):
        encoder.encode(pd.Series(["a", "z"]))


def test_regression_target() -> None:
    values = regression_target(pd.Series([1, 2, 4], name="price"))
    assert values.dtype == np.float32 and values.tolist() == [1.0, 2.0, 4.0]
    with pytest.raises(DataError) as info:
        regression_target(pd.Series(["1", "abc"], name="price"))
    assert str(info.value) == (
        "regression target 'price' must be numeric, found string values such as 'abc'"
    )
    with pytest.raises(DataError, match=r"^regression target 'price' has 1 missing value$"):
        regression_target(pd.Series([1.0, None], name="price"))
    with pytest.raises(DataError, match="infinite"):
        regression_target(pd.Series([1.0, math.inf], name="price"))


# Columns --------------------------------------------------------------------------------


def test_validate_columns() -> None:
    columns = ["a", "b", "c"]
    assert validate_columns(columns, target="b", features=None) == ["a", "c"]
    assert validate_columns(columns, target="a", features=["c", "b"]) == ["c", "b"]
    with pytest.raises(DataError) as info:
        validate_columns(columns, target="foo", features=None)
    assert str(info.value) == "unknown target column 'foo'; columns are: a, b, c"
    with pytest.raises(DataError) as info:
        validate_columns(columns, target="a", features=["x", "b", "y"])
    assert str(info.value) == "unknown feature columns: x, y"


def test_validate_columns_shortens_a_long_listing() -> None:
    columns = [f"c{i}" for i in range(1000)]
    with pytest.raises(DataError, match=r"c29, \.\.\. \(970 more\)$"):
        validate_columns(columns, target="nope", features=None)


# Arrays ---------------------------------------------------------------------------------


def test_array_preprocessor_by_hand() -> None:
    x = np.array(
        [
            [[1.0, 10.0], [0.0, np.nan]],
            [[3.0, 10.0], [4.0, 2.0]],
        ]
    )  # (2, 2, 2)
    pre = ArrayPreprocessor.fit(x)
    assert pre.input_shape == [2, 2] and pre.input_schema() == {"shape": [2, 2]}
    np.testing.assert_allclose(pre.mean, [2.0, 10.0, 2.0, 2.0])
    np.testing.assert_allclose(pre.std, [1.0, 1.0, 2.0, 1.0])  # constant and 1-valued: 1
    out = pre.transform(x)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[-1.0, 0.0, -1.0, 0.0], [1.0, 0.0, 1.0, 0.0]])


def test_array_json_round_trip_and_shape_check() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, size=(50, 3, 4)).astype(np.float32)
    pre = ArrayPreprocessor.fit(x[:40])
    again = ArrayPreprocessor.from_json(json_round_trip(pre.to_json()))
    np.testing.assert_array_equal(again.transform(x), pre.transform(x))
    assert pre.transform(x).shape == (50, 12)
    with pytest.raises(DataError, match=r"x rows have shape \[4, 3\], expected \[3, 4\]"):
        pre.transform(x.reshape(50, 4, 3))


def test_one_dimensional_and_integer_arrays() -> None:
    pre = ArrayPreprocessor.fit(np.array([0, 2, 4], dtype=np.uint8))
    assert pre.input_shape == []
    std = math.sqrt(8 / 3)
    out = pre.transform(np.array([0, 2, 6], dtype=np.uint8))  # no uint8 wrap-around below 0
    np.testing.assert_allclose(out, [[-2 / std], [0.0], [4 / std]], rtol=1e-6)


def test_array_with_infinity_is_refused() -> None:
    with pytest.raises(DataError, match="x has 1 infinite values"):
        ArrayPreprocessor.fit(np.array([[1.0], [np.inf]]))


# Standardisation, shared by the array, image and sequence preprocessors -----------------

# Small enough that every scan below takes several chunks, one row at least each; and the
# shipped size, for which each scan is one chunk.
CHUNK_SIZES = [7, 1 << 22]


@pytest.mark.parametrize(("n", "width"), [(0, 5), (1, 0), (10, 3), (10, 7), (9, 100)])
def test_row_chunks_cover_every_row_once(
    n: int, width: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(preprocessing, "_CHUNK_VALUES", 7)
    chunks = list(row_chunks(n, width))
    assert [i for rows in chunks for i in range(rows.start, rows.stop)] == list(range(n))
    assert all(rows.stop - rows.start == max(1, 7 // max(1, width)) for rows in chunks[:-1])


@pytest.mark.parametrize("chunk_values", CHUNK_SIZES)
def test_standardise_matches_plain_numpy(
    chunk_values: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(preprocessing, "_CHUNK_VALUES", chunk_values)
    rng = np.random.default_rng(1)
    x = rng.normal(5.0, 3.0, size=(37, 4, 3)).astype(np.float32)
    wide = x.astype(np.float64)
    mean, std = wide.mean(axis=(0, 1)), wide.std(axis=(0, 1))  # per feature, the last axis
    out = standardise(x, mean, std)
    assert out.dtype == np.float32 and out.shape == x.shape
    np.testing.assert_array_equal(out, ((wide - mean) / std).astype(np.float32))
    np.testing.assert_allclose(out.mean(axis=(0, 1)), 0.0, atol=1e-6)
    np.testing.assert_allclose(out.std(axis=(0, 1)), 1.0, rtol=1e-5)
    pixels = rng.integers(0, 256, size=(11, 2, 3), dtype=np.uint8)
    scaled = standardise(pixels, np.array(0.5), np.array(0.25), scale=1 / 255)
    expected = ((pixels.astype(np.float64) / 255 - 0.5) / 0.25).astype(np.float32)
    np.testing.assert_allclose(scaled, expected, rtol=1e-6)


def test_standardise_replaces_missing_values_only_when_asked() -> None:
    x = np.array([[1.0, np.nan], [3.0, np.inf]])
    mean, std = np.array([2.0, 0.0]), np.array([1.0, 1.0])
    kept = standardise(x, mean, std)
    np.testing.assert_array_equal(kept, [[-1.0, np.nan], [1.0, np.inf]])
    filled = standardise(x, mean, std, missing=0.0)
    np.testing.assert_array_equal(filled, [[-1.0, 0.0], [1.0, np.inf]])  # inf: the caller's


def test_constant_features_keep_std_one() -> None:
    mean = np.array([0.0, 1e6, 3.0, 2.0])
    std = np.array([0.0, 1e-7, np.nan, 0.5])
    np.testing.assert_array_equal(constant_as_one(std, mean), [1.0, 1.0, 1.0, 0.5])


@pytest.mark.parametrize("chunk_values", CHUNK_SIZES)
def test_chunked_fits_match_plain_numpy(chunk_values: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(preprocessing, "_CHUNK_VALUES", chunk_values)
    rng = np.random.default_rng(2)
    arrays = rng.normal(-2.0, 4.0, size=(29, 3, 2))
    arrays[rng.random(arrays.shape) < 0.2] = np.nan
    pre = ArrayPreprocessor.fit(arrays)
    flat = arrays.reshape(29, 6)
    np.testing.assert_allclose(pre.mean, np.nanmean(flat, axis=0), rtol=1e-12)
    np.testing.assert_allclose(pre.std, np.nanstd(flat, axis=0), rtol=1e-12)

    images = rng.integers(0, 256, size=(13, 3, 4, 5), dtype=np.uint8)
    fitted = ImagePreprocessor.fit(images)
    unit = images.astype(np.float64) / 255
    np.testing.assert_allclose(fitted.mean, unit.mean(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(fitted.std, unit.std(axis=(0, 2, 3)), rtol=1e-12)
    normalised = fitted.transform(images)
    np.testing.assert_allclose(normalised.mean(axis=(0, 2, 3)), 0.0, atol=1e-5)
    np.testing.assert_allclose(normalised.std(axis=(0, 2, 3)), 1.0, rtol=1e-5)

    sequences = rng.normal(1.0, 2.0, size=(17, 6, 3))
    sequence = SequencePreprocessor.fit(sequences)
    np.testing.assert_allclose(sequence.mean, sequences.mean(axis=(0, 1)), rtol=1e-12)
    np.testing.assert_allclose(sequence.std, sequences.std(axis=(0, 1)), rtol=1e-12)
