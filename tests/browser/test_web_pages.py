"""More of the web app in a real browser: a reinforcement-learning job's curves, a failed
job's error, the new-job form (its 422s next to the fields), the datasets pages, and the
history download."""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import pytest

from tests.e2e.helpers import diabetes_frame, iris_frame, job_spec, upload, upload_frame
from tests.stack import Stack


def post_job(stack: Stack, spec: dict[str, Any]) -> str:
    response = stack.http().post("/jobs", json=spec)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


@pytest.fixture(scope="module")
def iris(stack: Stack) -> str:
    return upload_frame(stack.http(), iris_frame(), "iris-pages.csv")


def test_rl_job_page_draws_the_return_with_its_spread_and_epsilon(page: Any, stack: Stack) -> None:
    spec = {
        "model": {"kind": "q_learning", "env": "GridWorld"},
        "training": {"total_steps": 2000, "eval_interval": 250, "eval_episodes": 3},
    }
    job = stack.wait_for_job(post_job(stack, spec))
    assert job["status"] == "succeeded", job
    history = job["history"]
    page.goto(f"/#/jobs/{job['id']}")
    page.wait_for_function(
        "() => document.querySelector('[data-testid=curve-return]')?.data?.length >= 3"
    )
    traces = page.evaluate(
        """() => Object.fromEntries(document.querySelector('[data-testid=curve-return]').data
            .map(t => [t.meta, {x: t.x, y: t.y, fill: t.fill || null}]))"""
    )
    steps = [e["step"] for e in history]
    mean = [e["eval_return_mean"] for e in history]
    std = [e["eval_return_std"] for e in history]
    assert traces["eval_return_mean"]["x"] == steps
    assert traces["eval_return_mean"]["y"] == pytest.approx(mean)
    assert traces["eval_upper"]["y"] == pytest.approx(
        [m + s for m, s in zip(mean, std, strict=True)]
    )
    assert traces["eval_lower"]["y"] == pytest.approx(
        [m - s for m, s in zip(mean, std, strict=True)]
    )
    assert traces["eval_lower"]["fill"] == "tonexty"  # the band between the two
    assert "train_return_mean" in traces
    epsilon = page.evaluate("() => document.querySelector('[data-testid=curve-epsilon]').data[0].y")
    assert epsilon == pytest.approx([e["epsilon"] for e in history])


def test_failed_job_shows_its_error(page: Any, stack: Stack) -> None:
    spec = job_spec(
        upload_frame(stack.http(), diabetes_frame(), "diabetes-diverges.csv"),
        task="regression",
        target="target",
        model={"kind": "mlp", "hidden_layers": [64, 64]},
        optimizer={"name": "sgd", "lr": 10},
        training={"epochs": 5, "batch_size": 8},
    )
    job = stack.wait_for_job(post_job(stack, spec))
    assert job["status"] == "failed"
    page.goto(f"/#/jobs/{job['id']}")
    error = page.locator("[data-testid=job-error]")
    error.wait_for()
    assert job["error"]["type"] in error.inner_text()
    assert job["error"]["message"] in error.inner_text()
    assert page.locator("[data-testid=job-status] [data-status=failed]").count() == 1


def test_new_job_form_shows_422s_next_to_their_fields_then_starts_the_job(
    page: Any, stack: Stack, iris: str
) -> None:
    page.goto(f"/#/new?dataset={iris}")
    form = page.locator("[data-testid=newjob-form]")
    form.wait_for()
    page.select_option("[data-testid=newjob-dataset]", iris)
    page.select_option("[data-testid=newjob-target]", "species")
    page.select_option("[data-testid=newjob-kind]", "mlp")
    page.select_option("[data-testid=newjob-optimizer]", "momentum")
    page.fill("[data-testid=newjob-epochs]", "2")
    page.locator("[data-testid=newjob-epochs]").dispatch_event("change")
    spec = page.locator("[data-testid=newjob-spec]")
    shown = json.loads(spec.input_value())
    assert shown["dataset_id"] == iris and shown["target"] == "species"
    assert shown["optimizer"]["name"] == "momentum" and shown["training"]["epochs"] == 2

    # An edit in the text survives a change in the form.
    shown["model"]["hidden_layers"] = [8]
    spec.fill(json.dumps(shown))
    page.fill("[data-testid=newjob-epochs]", "3")
    page.locator("[data-testid=newjob-epochs]").dispatch_event("change")
    shown = json.loads(spec.input_value())
    assert shown["model"]["hidden_layers"] == [8] and shown["training"]["epochs"] == 3

    # Edited by hand: a learning rate the API refuses.
    shown["optimizer"]["lr"] = -1
    spec.fill(json.dumps(shown))
    page.click("[data-testid=newjob-submit]")
    error = page.locator("[data-testid=field-error][data-field='optimizer.lr']")
    error.wait_for()
    assert error.locator("xpath=..").get_attribute("data-field-name") == "optimizer.lr"
    assert page.url.endswith(f"#/new?dataset={iris}")

    # A target the dataset lacks: the API's message names the field.
    shown["optimizer"]["lr"] = 0.05
    shown["target"] = "no_such_column"
    spec.fill(json.dumps(shown))
    page.click("[data-testid=newjob-submit]")
    error = page.locator("[data-testid=field-error][data-field=target]")
    error.wait_for()
    assert "no_such_column" in error.inner_text()
    assert error.locator("xpath=..").get_attribute("data-field-name") == "target"
    assert page.locator("[data-testid=field-error][data-field='optimizer.lr']").count() == 0

    shown["target"] = "species"
    spec.fill(json.dumps(shown))
    page.click("[data-testid=newjob-submit]")
    page.wait_for_url("**/#/jobs/*")
    job_id = page.url.rsplit("/", 1)[1]
    job = stack.wait_for_job(job_id)
    assert job["spec"]["optimizer"]["name"] == "momentum"
    assert job["spec"]["optimizer"]["lr"] == 0.05
    assert job["spec"]["model"]["hidden_layers"] == [8]
    page.locator("[data-testid=job-status] [data-status=succeeded]").wait_for()


def test_datasets_pages_show_columns_class_counts_and_samples(
    page: Any, stack: Stack, iris: str
) -> None:
    rng = np.random.default_rng(0)
    x = (rng.random((24, 28, 28)) * 255).astype(np.uint8)
    y = np.arange(24) % 3
    buffer = io.BytesIO()
    np.savez(buffer, x=x, y=y)
    response = upload(stack.http(), buffer.getvalue(), "digits.npz")
    assert response.status_code == 201, response.text
    images = response.json()["id"]

    page.goto("/#/datasets")
    page.locator(f"[data-testid=dataset-row][data-dataset-id='{iris}']").wait_for()
    page.click(f"[data-testid=dataset-row][data-dataset-id='{iris}'] a")
    columns = page.locator("[data-testid=dataset-columns] tbody tr")
    columns.first.wait_for()
    assert columns.count() == 5
    samples = page.locator("[data-testid=dataset-samples] tbody tr")
    samples.first.wait_for()
    assert samples.count() >= 5

    page.goto(f"/#/datasets/{images}")
    page.locator("[data-testid=dataset-samples] img").first.wait_for()
    assert page.locator("[data-testid=dataset-samples] img").count() >= 8
    page.wait_for_function(
        "() => document.querySelector('[data-testid=dataset-classes]')?.data?.length === 1"
    )
    counts = page.evaluate(
        "() => document.querySelector('[data-testid=dataset-classes]').data[0].y"
    )
    assert counts == [8, 8, 8]


def test_an_estimated_distinct_count_is_shown_as_one(page: Any, stack: Stack) -> None:
    ids = "".join(f"u{i},{i % 2}\n" for i in range(100_050))  # past 100,000 distinct values
    response = upload(stack.http(), f"user,y\n{ids}".encode(), "users.csv")
    assert response.status_code == 201, response.text
    user, y = response.json()["columns"]
    assert user["unique_exact"] is False and y["unique_exact"] is True
    page.goto(f"/#/datasets/{response.json()['id']}")
    cells = page.locator("[data-testid=dataset-columns] tbody tr td:nth-child(4)")
    cells.first.wait_for()
    assert cells.all_inner_texts() == [f"≈ {user['unique']}", "2"]
