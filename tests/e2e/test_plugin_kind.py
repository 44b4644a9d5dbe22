"""A model kind registered from a module outside Keiko (tests/plugins/tanh_net.py: a spec
and a network, nothing of Keiko changed), named in KEIKO_KINDS, goes through everything a
built-in kind does over HTTP with a real worker: validation, training, a checkpoint, a
resume after the worker stops, predictions."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.helpers import diabetes_frame, job_spec, upload_frame, wait_until
from tests.stack import Stack, started_deployment


@pytest.fixture(scope="module")
def plugin_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    data_dir: Path = tmp_path_factory.mktemp("plugin")
    with started_deployment("embedded", data_dir, KEIKO_KINDS="tests.plugins.tanh_net") as stack:
        yield stack


def test_a_kind_from_a_plugin_module_trains_resumes_and_predicts(plugin_stack: Stack) -> None:
    stack = plugin_stack
    http = stack.http()
    schema = http.get("/openapi.json").json()["components"]["schemas"]
    assert "TanhNetSpec" in schema
    assert "tanh_net" in schema["JobSpec"]["properties"]["model"]["discriminator"]["mapping"]

    big = diabetes_frame().sample(n=6000, replace=True, random_state=41)
    dataset_id = upload_frame(http, big)
    spec = job_spec(
        dataset_id,
        task="regression",
        target="target",
        model={"kind": "tanh_net", "width": 32},
        training={"epochs": 4, "batch_size": 8, "seed": 41, "checkpoint_every": 1},
    )
    for bad, words in (
        ({"kind": "tanh_net", "width": 0}, "width"),
        ({"kind": "tanh_net", "depth": 3}, "depth"),
    ):
        answer = http.post("/jobs", json={**spec, "model": bad})
        assert answer.status_code == 422 and words in answer.text, answer.text
    answer = http.post("/jobs", json={**spec, "target": "no_such_column"})
    assert answer.status_code == 422 and "no_such_column" in answer.text, answer.text

    job_id = http.post("/jobs", json=spec).json()["id"]
    wait_until(stack, job_id, lambda j: (j["progress"] or {}).get("epoch", 0) >= 2)
    stack.stop_worker()  # released: back in the queue with a checkpoint where it stopped
    job = http.get(f"/jobs/{job_id}").json()
    assert job["status"] == "queued" and job["checkpoints"], stack.log("worker")
    stack.start_worker()
    job = stack.wait_for_job(job_id)
    assert job["status"] == "succeeded", (job["error"], stack.log("worker"))
    assert job["kind"] == "tanh_net" and job["spec"]["model"] == {"kind": "tanh_net", "width": 32}
    assert [e["epoch"] for e in job["history"]] == [1, 2, 3, 4]
    assert job["metrics"]["test"]["rmse"] < big["target"].std()  # it learned something

    rows = big.drop(columns=["target"]).head(3).to_dict(orient="records")
    answer = http.post("/predict", json={"model_id": job["model_id"], "inputs": rows})
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["predictions"]) == 3
