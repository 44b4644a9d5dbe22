"""Trying models in the browser: a digit drawn with the mouse is sent exactly as the Python
reference preprocesses the same canvas pixels, the grid world shows the rollout's path, and
a table model's form predicts. Models are trained in the test through the real API."""

from __future__ import annotations

import base64
import io
import json
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Page, expect

from tests.browser.digit_reference import SIDE, preprocess_digit, to_input
from tests.e2e.helpers import iris_frame, job_spec, upload_frame
from tests.stack import Stack

Screenshot = Callable[[Any, str], Path]


def train(stack: Stack, spec: dict[str, Any]) -> dict[str, Any]:
    response = stack.http().post("/jobs", json=spec)
    assert response.status_code == 202, response.text
    job = stack.wait_for_job(response.json()["id"], timeout=120)
    assert job["status"] == "succeeded", (job["error"], stack.log("worker"))
    return job


def predict(stack: Stack, model_id: str, inputs: list[Any]) -> dict[str, Any]:
    response = stack.http().post("/predict", json={"model_id": model_id, "inputs": inputs})
    assert response.status_code == 200, response.text
    return dict(response.json())


def strokes_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """28x28 uint8 'digits': a vertical stroke (label 1) or a ring (label 0), placed and
    sized at random, white on black like MNIST."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:SIDE, 0:SIDE]
    x = np.zeros((n, SIDE, SIDE), dtype=np.uint8)
    y = rng.integers(0, 2, n)
    for i in range(n):
        cy, cx = rng.uniform(11, 17, 2)
        if y[i] == 1:
            x[i][(abs(xs - cx) < 1.5) & (abs(ys - cy) < rng.uniform(7, 10))] = 255
        else:
            r = np.hypot(ys - cy, xs - cx)
            x[i][(r > rng.uniform(4, 5)) & (r < rng.uniform(6.5, 8))] = 255
    return x, y


def small_mnist() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 handwritten 8x8 digits (ten classes), made as MNIST was and as
    the page makes a drawing: upscaled 4x, then cropped to the ink, fitted to 20x20 and
    centred by its centre of mass in 28x28 (the reference preprocessing). 28x28 uint8."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = np.empty((len(digits.images), SIDE, SIDE), dtype=np.uint8)
    for i, image in enumerate(digits.images):  # (8, 8) in 0..16
        big = np.kron(image / 16.0, np.ones((4, 4)))  # (32, 32)
        rgba = np.repeat(np.round(big * 255).astype(np.uint8)[:, :, None], 4, axis=2)
        field = preprocess_digit(rgba)
        assert field is not None
        x[i] = np.round(to_input(field, [SIDE, SIDE], 255.0)).astype(np.uint8)
    return x, digits.target.astype(np.uint8)


@pytest.fixture(scope="module")
def digit_model(stack: Stack) -> str:
    x, y = small_mnist()
    images = struct.pack(">IIII", 0x803, len(x), SIDE, SIDE) + x.tobytes()
    labels = struct.pack(">II", 0x801, len(y)) + y.astype(np.uint8).tobytes()
    files = [("file", ("images.idx", images)), ("file", ("labels.idx", labels))]
    uploaded = stack.http().post("/datasets", files=files)
    assert uploaded.status_code == 201, uploaded.text
    spec = job_spec(
        uploaded.json()["id"],
        target=None,
        model={"kind": "mlp", "hidden_layers": [128]},
        training={"epochs": 15, "batch_size": 32, "seed": 0},
    )
    return str(train(stack, spec)["model_id"])


def canvas_pixels(page: Page) -> np.ndarray:
    """The drawing canvas's pixels as the page holds them: (H, W, 4) uint8."""
    size, data = page.evaluate(
        """() => {
            const canvas = document.querySelector('[data-testid="digit-canvas"]');
            const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height);
            return [[canvas.height, canvas.width], Array.from(pixels.data)];
        }"""
    )
    return np.asarray(data, dtype=np.uint8).reshape(size[0], size[1], 4)


def draw(page: Page, strokes: list[list[tuple[float, float]]]) -> None:
    """Mouse strokes on the canvas; points are fractions of its width and height."""
    box = page.get_by_test_id("digit-canvas").bounding_box()
    assert box is not None
    for stroke in strokes:
        points = [
            (box["x"] + fx * box["width"], box["y"] + fy * box["height"]) for fx, fy in stroke
        ]
        page.mouse.move(*points[0])
        page.mouse.down()
        for point in points[1:]:
            page.mouse.move(*point, steps=4)
        page.mouse.up()


SEVEN = [
    [(0.30, 0.25), (0.62, 0.22), (0.66, 0.26), (0.48, 0.55), (0.40, 0.78)],
    [(0.42, 0.5), (0.6, 0.5)],
]


def predict_drawing(page: Page, model_id: str) -> np.ndarray:
    """Click Predict; check that the 28x28 input sent is what the reference makes of the
    canvas's pixels, and return it."""
    pixels = canvas_pixels(page)
    assert (pixels[:, :, 0] > 0).sum() > 500  # the strokes are on the canvas
    with page.expect_request(lambda r: r.url.endswith("/predict") and r.method == "POST") as sent:
        page.get_by_test_id("digit-predict").click()
    body = json.loads(sent.value.post_data or "{}")
    assert body["model_id"] == model_id and len(body["inputs"]) == 1
    got = np.asarray(body["inputs"][0], dtype=np.float64)
    field = preprocess_digit(pixels)
    assert field is not None
    expected = to_input(field, [SIDE, SIDE], 255.0)
    assert got.shape == (SIDE, SIDE)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    return expected


def test_drawn_digit_is_sent_as_the_reference_preprocesses_it(
    page: Page, stack: Stack, digit_model: str, screenshot: Screenshot
) -> None:
    page.goto(f"/#/models/{digit_model}")
    expect(page.get_by_test_id("digit-canvas")).to_be_visible()
    draw(page, SEVEN)
    sent = predict_drawing(page, digit_model)
    # It was cropped, scaled to fit 20x20 and centred: ink within a 20-pixel box, a border.
    rows, cols = np.flatnonzero(sent.any(axis=1)), np.flatnonzero(sent.any(axis=0))
    assert max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 == 20
    centre = (np.mgrid[0:SIDE, 0:SIDE] * sent).sum(axis=(1, 2)) / sent.sum()
    assert np.all(np.abs(centre - 13.5) <= 0.5)

    answer = predict(stack, digit_model, [sent.tolist()])
    shown = page.get_by_test_id("prediction")
    expect(shown).to_have_attribute("data-label", str(answer["predictions"][0]))
    bars = page.get_by_test_id("probabilities").locator("[data-p]")
    expect(bars).to_have_count(len(answer["labels"]))
    shown_p = [float(p) for p in bars.evaluate_all("rows => rows.map(r => r.dataset.p)")]
    np.testing.assert_allclose(shown_p, answer["probabilities"][0], atol=1e-9)
    screenshot(page, "draw.png")

    page.get_by_test_id("digit-clear").click()
    assert canvas_pixels(page)[:, :, 0].max() == 0


def test_touch_strokes_draw_too(page: Page, stack: Stack, digit_model: str) -> None:
    """A finger on a touch screen (Chromium's touch input, as pointer events of type touch)
    draws, and the drawing is sent as the reference preprocesses it."""
    page.goto(f"/#/models/{digit_model}")
    canvas = page.get_by_test_id("digit-canvas")
    expect(canvas).to_be_visible()
    box = canvas.bounding_box()
    assert box is not None
    touch = page.context.new_cdp_session(page)
    points = [(box["x"] + 120 + 3 * i, box["y"] + 40 + 12 * i) for i in range(16)]
    for kind, (x, y) in zip(["touchStart"] + ["touchMove"] * 15, points, strict=True):
        touch.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": [{"x": x, "y": y}]})
    touch.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
    sent = predict_drawing(page, digit_model)
    answer = predict(stack, digit_model, [sent.tolist()])
    expect(page.get_by_test_id("prediction")).to_have_attribute(
        "data-label", str(answer["predictions"][0])
    )
    assert page.evaluate("() => window.scrollY") == 0  # the finger drew; it did not scroll


def test_image_upload_predicts(page: Page, stack: Stack, digit_model: str) -> None:
    x, _ = strokes_images(1, seed=9)
    buffer = io.BytesIO()
    Image.fromarray(x[0]).save(buffer, format="PNG")
    files = [("file", ("digit.png", buffer.getvalue(), "image/png"))]
    answer = stack.http().post("/predict/files", data={"model_id": digit_model}, files=files)
    assert answer.status_code == 200, answer.text
    page.goto(f"/#/models/{digit_model}")
    page.get_by_test_id("image-upload").set_input_files(
        {"name": "digit.png", "mimeType": "image/png", "buffer": buffer.getvalue()}
    )
    shown = page.get_by_test_id("prediction")
    expect(shown).to_have_attribute("data-label", str(answer.json()["predictions"][0]))
    bars = page.get_by_test_id("probabilities").locator("[data-p]")
    shown_p = [float(p) for p in bars.evaluate_all("rows => rows.map(r => r.dataset.p)")]
    np.testing.assert_allclose(shown_p, answer.json()["probabilities"][0], atol=1e-9)


def test_digit_preprocessing_agrees_with_the_reference_on_many_shapes(
    page: Page, digit_model: str
) -> None:
    """The page's own function on pixels made here (thin, wide, off-centre, grey), so that
    rounding and edge cases are compared beyond one drawing; and a case worked by hand."""
    page.goto(f"/#/models/{digit_model}")
    expect(page.get_by_test_id("digit-canvas")).to_be_visible()
    rng = np.random.default_rng(3)
    cases = []
    for top, left, h, w in [(10, 10, 40, 20), (0, 0, 280, 3), (200, 5, 7, 270), (50, 60, 33, 31)]:
        rgba = np.zeros((280, 280, 4), dtype=np.uint8)
        rgba[top : top + h, left : left + w, :3] = rng.integers(1, 256, (h, w, 1))
        rgba[:, :, 3] = 255
        cases.append(rgba)
    for rgba in cases:
        got = page.evaluate(
            """async (data) => {
                const { preprocessDigit } = await import('/ui/widgets/digit.js');
                const bytes = Uint8ClampedArray.from(atob(data), (c) => c.charCodeAt(0));
                return preprocessDigit(bytes, 280, 280);
            }""",
            base64.b64encode(rgba.tobytes()).decode(),
        )
        expected = preprocess_digit(rgba)
        assert expected is not None
        np.testing.assert_allclose(np.asarray(got), expected, rtol=0, atol=1e-9)
    # By hand: a 40x20 block of full ink becomes 20x10 ones; its centre of mass (9.5, 4.5)
    # moves to (13.5, 13.5) with the shift (4, 9).
    block = np.zeros((280, 280, 4), dtype=np.uint8)
    block[10:50, 10:30, :3] = 255
    field = preprocess_digit(block)
    assert field is not None
    hand = np.zeros((SIDE, SIDE))
    hand[4:24, 9:19] = 1.0
    np.testing.assert_allclose(field, hand, atol=1e-12)


@pytest.fixture(scope="module")
def grid_model(stack: Stack) -> str:
    spec = {
        "model": {
            "kind": "q_learning",
            "alpha": 0.5,
            "gamma": 0.9,
            "exploration": {"start": 1.0, "end": 0.05, "fraction": 0.5},
        },
        "training": {"total_steps": 3000, "eval_interval": 1000},
    }
    return str(train(stack, spec)["model_id"])


def test_grid_world_page_draws_the_rollout_path(
    page: Page, stack: Stack, grid_model: str, screenshot: Screenshot
) -> None:
    played = stack.http().post(f"/models/{grid_model}/rollout", json={"episodes": 1, "seed": 0})
    assert played.status_code == 200, played.text
    path = played.json()["paths"][0]
    assert path[0] == [0, 0] and path[-1] == [1, 2]  # start to goal on the course's grid
    page.goto(f"/#/models/{grid_model}")
    grid = page.get_by_test_id("grid-world")
    expect(grid).to_be_visible()
    assert json.loads(grid.get_attribute("data-path") or "null") == path
    assert grid.locator("rect").count() == 6  # the 2x3 grid
    points = grid.get_by_test_id("grid-path").get_attribute("points") or ""
    assert len(points.split()) == len(path)
    expect(page.get_by_test_id("rollout-summary")).to_contain_text(
        f"{played.json()['returns'][0]:g}"
    )
    screenshot(page, "grid.png")


@pytest.fixture(scope="module")
def table_model(stack: Stack) -> str:
    frame = iris_frame()
    frame["colour"] = np.where(frame.index % 3 == 0, "red", "blue")
    spec = job_spec(upload_frame(stack.http(), frame), training={"epochs": 5, "seed": 0})
    return str(train(stack, spec)["model_id"])


def test_table_model_form_predicts(page: Page, stack: Stack, table_model: str) -> None:
    page.goto(f"/#/models/{table_model}")
    form = page.get_by_test_id("try-form")
    expect(form).to_be_visible()
    first = iris_frame().iloc[0]
    # The form starts from the dataset's first row; categories are a select.
    expect(form.locator('[data-feature="sepal_length"]')).to_have_value(str(first["sepal_length"]))
    expect(form.locator('select[data-feature="colour"]')).to_have_value("red")
    form.locator('[data-feature="petal_length"]').fill("6.1")
    form.locator('[data-feature="petal_width"]').fill("2.3")
    form.locator('select[data-feature="colour"]').select_option("blue")
    with page.expect_request(lambda r: r.url.endswith("/predict") and r.method == "POST") as sent:
        page.get_by_test_id("try-submit").click()
    record = json.loads(sent.value.post_data or "{}")["inputs"][0]
    assert record == {
        "sepal_length": first["sepal_length"],
        "sepal_width": first["sepal_width"],
        "petal_length": 6.1,
        "petal_width": 2.3,
        "colour": "blue",
    }
    answer = predict(stack, table_model, [record])
    expect(page.get_by_test_id("prediction")).to_have_attribute(
        "data-label", answer["predictions"][0]
    )
    expect(page.get_by_test_id("probabilities").locator("[data-p]")).to_have_count(3)


@pytest.mark.locale("ja-JP")
def test_models_pages_in_japanese(page: Page, table_model: str) -> None:
    page.goto("/#/models")
    expect(page.get_by_role("heading", name="モデル")).to_be_visible()
    row = page.locator(f'[data-testid="model-row"][data-model-id="{table_model}"]')
    expect(row).to_be_visible()
    row.get_by_role("link", name="試す").click()
    expect(page.get_by_role("heading", name="試してみる")).to_be_visible()
    expect(page.get_by_test_id("model-metrics")).to_contain_text("評価指標")
    page.get_by_test_id("lang-switch").select_option("en")
    expect(page.get_by_role("heading", name="Try it")).to_be_visible()
