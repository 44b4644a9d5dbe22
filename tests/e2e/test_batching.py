"""Dynamic batching over HTTP with the real API: concurrent predict calls for one model
share forward passes, each call gets exactly its own answers, a bad call in the crowd gets
its own 422 and harms nobody, and a model deleted while calls are on their way answers
404 from then on."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.helpers import diabetes_frame, job_spec, upload_frame
from tests.stack import Stack


def trained_regression(stack: Stack) -> str:
    spec = job_spec(
        upload_frame(stack.http(), diabetes_frame()),
        task="regression",
        target="target",
        model={"kind": "mlp", "hidden_layers": [32]},
    )
    job = stack.wait_for_job(stack.http().post("/jobs", json=spec).json()["id"])
    assert job["status"] == "succeeded", (job["error"], stack.log("worker"))
    return str(job["model_id"])


def batch_counts(stack: Stack) -> tuple[float, float]:
    """(passes run, calls served) of the predict batcher, from /metrics."""
    text = httpx.get(f"{stack.base_url}/metrics").text
    for family in text_string_to_metric_families(text):
        if family.name == "keiko_predict_batch_calls":
            samples = {s.name: s.value for s in family.samples}
            return samples["keiko_predict_batch_calls_count"], samples[
                "keiko_predict_batch_calls_sum"
            ]
    return 0.0, 0.0


def test_concurrent_calls_each_get_their_own_answers(stack: Stack) -> None:
    model_id = trained_regression(stack)
    rows = diabetes_frame().drop(columns=["target"]).head(60).to_dict(orient="records")
    alone = [
        stack.http().post("/predict", json={"model_id": model_id, "inputs": [row]}).json()
        for row in rows
    ]
    bad = {7: [{"age": 1.0}], 23: [{**rows[0], "bmi": "tall"}], 41: [[1, 2, 3]]}
    passes, calls = batch_counts(stack)

    def one(i: int) -> httpx.Response:
        inputs: list[Any] = bad.get(i, [rows[i]])
        return stack.http().post("/predict", json={"model_id": model_id, "inputs": inputs})

    with ThreadPoolExecutor(max_workers=32) as pool:
        answers = list(pool.map(one, range(len(rows))))
    for i, answer in enumerate(answers):
        if i in bad:
            assert answer.status_code == 422, answer.text
            continue
        assert answer.status_code == 200, answer.text
        [value] = answer.json()["predictions"]
        assert value == pytest.approx(alone[i]["predictions"][0], rel=1e-6, abs=1e-9)
    after_passes, after_calls = batch_counts(stack)
    assert after_calls - calls == len(rows)  # each call in one batch, once (bad ones refused in it)
    assert after_passes - passes <= after_calls - calls


def test_a_model_deleted_while_calls_arrive_answers_404_after(stack: Stack) -> None:
    model_id = trained_regression(stack)
    row = diabetes_frame().drop(columns=["target"]).head(1).to_dict(orient="records")
    body = {"model_id": model_id, "inputs": row}

    def one(_: int) -> int:
        return stack.http().post("/predict", json=body).status_code

    with ThreadPoolExecutor(max_workers=16) as pool:
        flying = [pool.submit(one, i) for i in range(64)]
        assert stack.http().delete(f"/models/{model_id}").status_code == 204
        codes = [f.result() for f in flying]
    assert set(codes) <= {200, 404}  # each answered, none with a 500
    assert stack.http().post("/predict", json=body).status_code == 404
