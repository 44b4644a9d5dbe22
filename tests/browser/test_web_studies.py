"""The study pages in a real browser (issue 17): a finished study's trials over time with
the best so far, the parallel-coordinates plot of its parameters against the metric, and
the trials table, all equal to what `GET /studies/{id}` says; the studies list."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.helpers import iris_frame, job_spec, upload_frame
from tests.stack import Stack

WIDTHS = [[4], [16, 8]]


def finished_study(stack: Stack) -> dict[str, Any]:
    dataset = upload_frame(stack.http(), iris_frame(), "iris-study.csv")
    answer = stack.http().post(
        "/studies",
        json={
            "base": job_spec(dataset, training={"epochs": 4, "batch_size": 16, "seed": 0}),
            "space": {
                "optimizer.lr": {"type": "float", "low": 1e-3, "high": 1e-1, "log": True},
                "model.hidden_layers": {"type": "categorical", "choices": WIDTHS},
            },
            "metric": "validation.accuracy",
            "n_trials": 4,
            "parallelism": 2,
            "sampler": {"name": "random", "seed": 3},
            "pruner": {"name": "none"},
        },
    )
    assert answer.status_code == 202, answer.text
    deadline = time.monotonic() + 180
    while (study := stack.http().get(f"/studies/{answer.json()['id']}").json())[
        "finished_at"
    ] is None:
        assert time.monotonic() < deadline, stack.log("worker")[-3000:]
        time.sleep(0.3)
    assert study["status"] == "succeeded", study
    return dict(study)


def test_a_study_page_draws_its_trials_best_so_far_and_parameters(
    page: Any, stack: Stack, screenshot: Callable[[Any, str], Path]
) -> None:
    study = finished_study(stack)
    trials = study["trials"]
    page.goto(f"/#/studies/{study['id']}")
    page.wait_for_function(
        "() => document.querySelector('[data-testid=study-parcoords]')?.data?.length === 1"
    )
    assert page.get_by_test_id("study-status").get_attribute("data-status") == "succeeded"
    assert page.get_by_test_id("study-cancel").is_hidden()

    traces = page.evaluate(
        """() => Object.fromEntries(document.querySelector('[data-testid=study-over-time]').data
            .map(t => [t.meta, {x: t.x, y: t.y}]))"""
    )
    scored = [t for t in trials if t["value"] is not None]
    assert traces["value"]["x"] == [t["number"] for t in scored]
    assert traces["value"]["y"] == pytest.approx([t["value"] for t in scored])
    running_best = [max(t["value"] for t in scored[: i + 1]) for i in range(len(scored))]
    assert traces["best"]["y"] == pytest.approx(running_best)  # maximize: accuracy

    dims = page.evaluate(
        """() => document.querySelector('[data-testid=study-parcoords]').data[0].dimensions
            .map(d => ({label: d.label, values: Array.from(d.values),
                        ticktext: d.ticktext || null}))"""
    )
    assert [d["label"] for d in dims] == [
        "log10 optimizer.lr",
        "model.hidden_layers",
        "validation.accuracy",
    ]
    assert dims[0]["values"] == pytest.approx(
        [math.log10(t["params"]["optimizer.lr"]) for t in scored]
    )
    assert dims[1]["ticktext"] == ["[4]", "[16,8]"]
    assert dims[1]["values"] == [WIDTHS.index(t["params"]["model.hidden_layers"]) for t in scored]
    assert dims[2]["values"] == pytest.approx([t["value"] for t in scored])

    screenshot(page, "study.png")
    rows = page.get_by_test_id("study-trials").locator("tbody tr")
    assert rows.count() == len(trials)
    best = study["best"]
    assert f"#{best['number']}" in page.get_by_test_id("study-best").inner_text()
    page.get_by_test_id("study-best-model").click()
    page.wait_for_url(f"**/#/models/{best['model_id']}")


def test_the_studies_list_links_each_study(page: Any, stack: Stack) -> None:
    listed = stack.http().get("/studies").json()["items"]
    if not listed:
        finished_study(stack)
        listed = stack.http().get("/studies").json()["items"]
    page.goto("/#/studies")
    page.get_by_test_id("studies-table").wait_for()
    rows = page.get_by_test_id("study-row")
    assert rows.count() == len(listed)
    first = rows.first
    assert first.get_attribute("data-study-id") == listed[0]["id"]
    first.locator("a").first.click()
    page.get_by_test_id("study-status").wait_for()
    assert page.get_by_test_id("study-spec").inner_text().count("optimizer.lr") >= 1
