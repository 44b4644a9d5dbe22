"""Pictures for the web page: normalisation undone exactly, mistakes found and ordered, their
file checked by its sha256, and dataset samples read from the start of the file only."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn

from models.base import PreparedData, Split
from models.gallery import (
    find_mistakes,
    image_samples,
    mistakes_files,
    original_images,
    parse_mistakes,
    png_data_url,
    table_samples,
)
from models.image_io import ImageSet, save_image_set
from models.image_preprocessing import ImagePreprocessor
from models.loop import scored_training_part
from models.preprocessing import ArrayPreprocessor
from models.specs import TrainingSpec

RNG = np.random.default_rng(0)


def pixels_of(url: str) -> np.ndarray:
    assert url.startswith("data:image/png;base64,")
    with Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))) as image:
        return np.asarray(image)


def test_png_data_url_keeps_grey_and_rgb_pixels() -> None:
    grey = RNG.integers(0, 256, (1, 5, 7), dtype=np.uint8)
    rgb = RNG.integers(0, 256, (3, 5, 7), dtype=np.uint8)
    assert np.array_equal(pixels_of(png_data_url(grey)), grey[0])
    assert np.array_equal(pixels_of(png_data_url(rgb)), rgb.transpose(1, 2, 0))


def test_image_normalisation_is_undone_exactly() -> None:
    x = RNG.integers(0, 256, (20, 3, 6, 4), dtype=np.uint8)
    pre = ImagePreprocessor.fit(x, layout="NCHW")
    encoded = torch.from_numpy(pre.transform(x))
    back = original_images(encoded, {"type": "image", **pre.to_json()})
    assert back is not None and np.array_equal(back, x)


@pytest.mark.parametrize("shape", [(28, 28), (28, 28, 1), (1, 28, 28)])
def test_array_normalisation_is_undone_for_image_shapes(shape: tuple[int, ...]) -> None:
    x = RNG.integers(0, 256, (30, *shape)).astype(np.uint8)
    pre = ArrayPreprocessor.fit(x)
    back = original_images(torch.from_numpy(pre.transform(x)), {"type": "array", **pre.to_json()})
    assert back is not None and back.shape == (30, 1, 28, 28)
    assert np.array_equal(back.reshape(30, -1), x.reshape(30, -1))


def test_arrays_that_are_not_images_have_no_pictures() -> None:
    x = RNG.normal(size=(10, 5))
    pre = ArrayPreprocessor.fit(x)
    assert (
        original_images(torch.from_numpy(pre.transform(x)), {"type": "array", **pre.to_json()})
        is None
    )


class FirstPixel(nn.Module):
    """Two-class logits from the first input value: class 1 when it is positive."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = x.reshape(len(x), -1)[:, :1] * 3.0
        return torch.cat([-first, first], dim=1)


def image_data(n: int) -> tuple[PreparedData, np.ndarray, np.ndarray]:
    x = RNG.integers(0, 256, (n, 1, 4, 4), dtype=np.uint8)
    y = RNG.integers(0, 2, n)
    pre = ImagePreprocessor.fit(x, layout="NHW")
    split = Split(torch.from_numpy(pre.transform(x)), torch.from_numpy(y))
    data = PreparedData(
        task="classification",
        train=split,
        val=None,
        test=split,
        num_features=16,
        num_classes=2,
        preprocessing={"type": "image", **pre.to_json()},
        input_schema=pre.input_schema(),
        output={"labels": ["cat", "dog"]},
    )
    return data, x, y


def test_mistakes_are_the_wrong_images_most_confident_first() -> None:
    data, x, y = image_data(50)
    found = find_mistakes(FirstPixel(), data, limit=100)
    assert found is not None and found["split"] == "test" and found["total"] == 50
    logits = FirstPixel()(data.test.x).detach()  # type: ignore[union-attr]
    probs = torch.softmax(logits.double(), dim=1)
    predicted = probs.argmax(dim=1).numpy()
    wrong = np.flatnonzero(predicted != y)
    assert found["wrong"] == len(wrong) == len(found["items"]) > 0
    confidences = [item["confidence"] for item in found["items"]]
    assert confidences == sorted(confidences, reverse=True)
    by_pixels = {x[i].tobytes(): i for i in wrong}
    for item in found["items"]:
        i = by_pixels[pixels_of(item["image"])[None].tobytes()]
        assert item["label"] == ["cat", "dog"][y[i]]
        assert item["predicted"] == ["cat", "dog"][predicted[i]]
        assert item["confidence"] == pytest.approx(float(probs[i].max()))
    assert len(find_mistakes(FirstPixel(), data, limit=3)["items"]) == 3  # type: ignore[index]


def test_without_a_test_part_the_mistakes_come_from_the_scored_training_rows() -> None:
    """The training part's mistakes are found on the rows its final metrics scored (a
    seeded sample when it is large), not on every training image again."""
    data, _, _ = image_data(60)
    data.test = None
    whole = find_mistakes(FirstPixel(), data, limit=100)
    assert whole is not None and whole["split"] == "train" and whole["total"] == 60
    training = TrainingSpec(score_training_rows=20, seed=3)
    sampled = find_mistakes(FirstPixel(), data, limit=100, training=training)
    assert sampled is not None and sampled["split"] == "train" and sampled["total"] == 20
    rows = scored_training_part(data.train, training)
    predicted = FirstPixel()(rows.x).argmax(dim=1)
    assert sampled["wrong"] == int((predicted != rows.y).sum())


class Refuses(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise AssertionError("the outputs scored already were not reused")


def test_the_outputs_scored_after_training_are_reused() -> None:
    """The final metrics' outputs on the test part (`TrainResult.outputs`) make the gallery
    without a second pass over the images."""
    data, _, _ = image_data(40)
    assert data.test is not None
    outputs = {"test": FirstPixel()(data.test.x)}
    reused = find_mistakes(Refuses(), data, limit=100, outputs=outputs)
    assert reused == find_mistakes(FirstPixel(), data, limit=100)


def test_regression_has_no_mistakes() -> None:
    data, _, _ = image_data(5)
    data.task, data.output = "regression", {"target": "y"}
    assert find_mistakes(FirstPixel(), data) is None


def test_mistakes_file_is_refused_when_it_does_not_match_its_sha256() -> None:
    assert parse_mistakes(None, None) is None
    body, digest = mistakes_files({"split": "test", "items": []}).values()
    assert parse_mistakes(body, digest) == {"split": "test", "items": []}
    assert parse_mistakes(b'{"split": "train", "items": []}', digest) is None
    assert parse_mistakes(body, None) is None


def test_samples_of_an_image_set_and_of_a_compressed_npz(tmp_path: Path) -> None:
    x = RNG.integers(0, 256, (40, 1, 28, 28), dtype=np.uint8)
    y = RNG.integers(0, 3, 40)
    save_image_set(ImageSet(x, y, ["a", "b", "c"], "NHW"), tmp_path / "set.npz")
    got = image_samples(tmp_path / "set.npz", "idx", 5)
    assert got is not None and got["kind"] == "images" and len(got["items"]) == 5
    for i, item in enumerate(got["items"]):
        assert np.array_equal(pixels_of(item["image"]), x[i, 0])
        assert item["label"] == "abc"[y[i]]
    np.savez_compressed(tmp_path / "rgb.npz", x=x[:, 0, :, :, None].repeat(3, axis=3), y=y)
    got = image_samples(tmp_path / "rgb.npz", "npz", 64)
    assert got is not None and len(got["items"]) == 40 and got["items"][2]["label"] == y[2]
    assert np.array_equal(pixels_of(got["items"][2]["image"])[..., 0], x[2, 0])
    np.savez(tmp_path / "flat.npz", x=RNG.normal(size=(9, 4)), y=np.arange(9))
    assert image_samples(tmp_path / "flat.npz", "npz", 3) is None


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_table_samples_are_the_first_rows_json_safe(tmp_path: Path, fmt: str) -> None:
    frame = pd.DataFrame(
        {"a": [1.5, np.nan, 3.0, 4.0], "b": ["x", None, "z", "w"], "c": [True, False, True, None]}
    )
    path = tmp_path / f"t.{fmt}"
    frame.to_csv(path, index=False) if fmt == "csv" else frame.to_parquet(path)
    got = table_samples(path, fmt, 3)
    assert got == {
        "kind": "table",
        "columns": ["a", "b", "c"],
        "rows": [[1.5, "x", True], [None, None, False], [3.0, "z", True]],
    }
