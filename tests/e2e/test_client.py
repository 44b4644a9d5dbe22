"""The Python client (`keiko.client.Keiko`) against real deployments: upload, train, wait
with and without a progress display, events() as the stream gives them, predict, export,
the API's errors as exceptions, and events() carrying on across an API restart mid-job."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from rich.console import Console

from keiko.client import Job, JobEvent, Keiko
from keiko.errors import APIError, Unreachable
from service.schemas import DatasetRead, JobRead, PredictResponse
from tests.e2e.cli_helpers import stack_key
from tests.e2e.helpers import csv_bytes, iris_frame, job_spec, start_long_job
from tests.stack import Stack, free_port


def logged(events: list[JobEvent]) -> list[JobEvent]:
    """The events kept in the job's log (progress events are not)."""
    return [e for e in events if e.type != "progress"]


def test_upload_train_wait_predict_export(stack: Stack, tmp_path: Path) -> None:
    frame = iris_frame()
    (tmp_path / "iris.csv").write_bytes(csv_bytes(frame))
    with Keiko(stack.base_url, stack_key(stack)) as keiko:
        dataset = keiko.upload(tmp_path / "iris.csv", name="iris")
        assert isinstance(dataset, DatasetRead) and dataset.num_rows == 150
        assert keiko.dataset(dataset.id) == dataset

        job = keiko.train(job_spec(dataset.id, training={"epochs": 3, "batch_size": 16}))
        assert isinstance(job.submitted, JobRead) and job.submitted.status == "queued"
        shown = io.StringIO()
        finished = job.wait(progress=True, console=Console(file=shown, width=200))
        assert isinstance(finished, JobRead) and finished.status == "succeeded"
        raw = stack.http().get(f"/jobs/{job.id}").json()
        assert finished.model_id == raw["model_id"] and finished.metrics == raw["metrics"]
        # Not a terminal: a line per epoch.
        lines = shown.getvalue().splitlines()
        label = f"job {job.id[:8]}"
        assert [line.split("  ")[0] for line in lines if " epoch " in line] == [
            f"{label} epoch {i}/3" for i in (1, 2, 3)
        ]
        assert lines[-1] == f"{label} succeeded"

        # A terminal: the bar, replayed to the end (100%, the last epoch, the last loss).
        bar = io.StringIO()
        job.wait(progress=True, console=Console(file=bar, force_terminal=True, width=200))
        assert "100%" in bar.getvalue() and "epoch 3/3" in bar.getvalue()
        assert f"loss {raw['history'][-1]['train_loss']:.4g}" in bar.getvalue()

        # events(): every logged event once, in order, ending with the final status.
        events = list(job.events())
        kept = logged(events)
        assert [int(e.id) for e in kept] == list(range(1, len(kept) + 1))
        assert [e.data for e in kept if e.type == "epoch"] == raw["history"]
        assert events[-1].final and events[-1].data["model_id"] == finished.model_id
        assert list(job.events(after=kept[-2].id)) == [kept[-1]]

        rows = frame.drop(columns=["species"]).head(5).to_dict("records")
        answer = keiko.predict(finished.model_id or "", rows)
        assert isinstance(answer, PredictResponse)
        direct = (
            stack.http()
            .post("/predict", json={"model_id": finished.model_id, "inputs": rows})
            .json()
        )
        assert answer.predictions == direct["predictions"]
        assert np.allclose(answer.probabilities or [], direct["probabilities"])

        path = keiko.export(finished.model_id or "", tmp_path)
        assert path.name == f"keiko-mlp-{finished.model_id}.onnx"
        meta = {p.key: json.loads(p.value) for p in onnx.load(path).metadata_props}
        assert meta["model_id"] == finished.model_id

        # A spec from a file, a dataset from a file (uploaded first), and a cancel.
        long = job_spec("replaced", training={"epochs": 500, "batch_size": 4})
        (tmp_path / "spec.json").write_text(json.dumps(long))
        queued = keiko.train(tmp_path / "spec.json", dataset=tmp_path / "iris.csv")
        assert queued.submitted is not None
        assert queued.submitted.spec.dataset_id not in ("replaced", dataset.id)
        queued.cancel()
        assert queued.wait().status == "cancelled"

        with pytest.raises(APIError) as missing:
            keiko.job("no-such-job").read()
        assert missing.value.status_code == 404
        assert str(missing.value) == "no job with id 'no-such-job' (HTTP 404)"
        with pytest.raises(APIError) as refused:
            keiko.train(job_spec(dataset.id, training={"epochs": 0}))
        assert refused.value.status_code == 422 and "training.epochs" in str(refused.value)


def test_events_carry_on_across_an_api_restart(embedded_stack: Stack) -> None:
    """The API is killed mid-job while the iterator waits on its stream: the iterator
    reconnects with Last-Event-ID and ends with every logged event exactly once."""
    stack = embedded_stack
    job_id = start_long_job(stack, seed=31, epochs=16)
    seen: list[JobEvent] = []
    restarted_after: int | None = None
    with Keiko(stack.base_url, stack_key(stack)) as keiko:
        for event in keiko.job(job_id).events():
            seen.append(event)
            if restarted_after is None and event.type == "epoch" and event.data["epoch"] == 2:
                stack.restart_api()
                restarted_after = len(seen)
    assert restarted_after is not None
    history = stack.http().get(f"/jobs/{job_id}").json()["history"]
    kept = logged(seen)
    assert [int(e.id) for e in kept] == list(range(1, len(kept) + 1))  # no gap, no repeat
    assert kept[-1].final and kept[-1].data["status"] == "succeeded"
    assert [e.data for e in kept if e.type == "epoch"] == history
    after = [e.data["epoch"] for e in seen[restarted_after:] if e.type == "epoch"]
    assert after == list(range(3, 17))  # what came after the restart arrived through it


def test_an_api_that_stays_down_ends_the_iterator_with_unreachable() -> None:
    keiko = Keiko(f"http://127.0.0.1:{free_port()}", reconnect_seconds=1)
    with keiko, pytest.raises(Unreachable, match="could not reconnect"):
        next(iter(Job(keiko, "some-job").events()))
