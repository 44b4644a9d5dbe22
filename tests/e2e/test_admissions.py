"""Predict calls answered from each API process's memory (no SQL once a key and a model
are known) while deletes still reach every process before they answer: a second API
process, started beside the deployment's, refuses a deleted key and a deleted model on its
very next call. On the embedded deployment the two processes share the data directory (its
revocation counter); on PostgreSQL + Redis the second has a data directory of its own, as
on another machine, so only Redis can tell it."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.helpers import diabetes_frame, job_spec, upload_frame
from tests.stack import ROOT, Stack, free_port


@contextmanager
def second_api(stack: Stack, tmp_path: Path) -> Iterator[str]:
    """Another API process on the same deployment; yields its base URL."""
    env = dict(stack.env)
    if stack.name == "postgres_redis":  # its own folder: nothing shared but SQL, Redis, artifacts
        env["KEIKO_DATA_DIR"] = str(tmp_path / "elsewhere")
        env["KEIKO_ARTIFACT_DIR"] = str(stack.data_dir / "artifacts")
    port = free_port()
    log = (tmp_path / "second-api.log").open("wb")
    api = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "service.main:app", "--host", "127.0.0.1",
         "--port", str(port), "--no-access-log"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert api.poll() is None and time.monotonic() < deadline, (
                tmp_path / "second-api.log"
            ).read_text()
            time.sleep(0.2)
        yield base
    finally:
        api.terminate()
        api.wait(20)


def lookups(base: str) -> dict[str, float]:
    text = httpx.get(f"{base}/metrics").text
    for family in text_string_to_metric_families(text):
        if family.name == "keiko_predict_lookups":
            return {
                s.labels["source"]: s.value for s in family.samples if s.name.endswith("_total")
            }
    return {}


def key_id_of(stack: Stack, key: str) -> tuple[str, str]:
    """(user id, key id) of a key, found by its prefix with the admin key."""
    with stack.admin() as admin:
        for user in admin.get("/users", params={"limit": 500}).json()["items"]:
            for listed in admin.get(f"/users/{user['id']}/keys").json()["items"]:
                if key.startswith(listed["prefix"]):
                    return user["id"], listed["id"]
    raise AssertionError("key not found")


def test_deletes_reach_a_process_that_answers_from_memory(stack: Stack, tmp_path: Path) -> None:
    owner = stack.new_user("cached")
    with stack.client_for(owner) as client:
        spec = job_spec(
            upload_frame(client, diabetes_frame()), task="regression", target="target",
            model={"kind": "mlp", "hidden_layers": [8]}, training={"epochs": 2},
        )  # fmt: skip
        job_id = client.post("/jobs", json=spec).json()["id"]
        deadline = time.monotonic() + 180
        while (job := client.get(f"/jobs/{job_id}").json())["status"] not in (
            "succeeded",
            "failed",
        ):
            assert time.monotonic() < deadline
            time.sleep(0.25)
    assert job["status"] == "succeeded", job["error"]
    model_id = job["model_id"]
    user_id, _ = key_id_of(stack, owner)
    with stack.admin() as admin:
        spare = admin.post(f"/users/{user_id}/keys", json={"name": "spare"}).json()
    row = diabetes_frame().drop(columns=["target"]).head(1).to_dict(orient="records")
    body = {"model_id": model_id, "inputs": row}

    with second_api(stack, tmp_path) as other:

        def predict(base: str, key: str) -> httpx.Response:
            headers = {"Authorization": f"Bearer {key}"}
            return httpx.post(f"{base}/predict", json=body, headers=headers, timeout=30)

        for base in (stack.base_url, other):
            for key in (owner, spare["key"]):
                assert predict(base, key).status_code == 200  # read once from SQL
        before = lookups(other)
        answers = [predict(other, key).json() for key in (owner, spare["key"]) * 5]
        after = lookups(other)
        assert after.get("memory", 0) - before.get("memory", 0) == 10  # no SQL for these
        assert after.get("database", 0) == before.get("database", 0)
        assert all(a["predictions"] == answers[0]["predictions"] for a in answers)

        # A deleted key: refused by the other process on its very next call.
        with stack.admin() as admin:
            assert admin.delete(f"/keys/{spare['id']}").status_code == 204
        assert predict(other, spare["key"]).status_code == 401
        assert predict(stack.base_url, spare["key"]).status_code == 401
        assert predict(other, owner).status_code == 200  # the owner's other key still works

        # A deleted model: the same.
        with stack.client_for(owner) as client:
            assert client.delete(f"/models/{model_id}").status_code == 204
        assert predict(other, owner).status_code == 404
        assert predict(stack.base_url, owner).status_code == 404
        infer = {"inputs": [{"name": "input", "datatype": "FP64", "shape": [1, 10],
                             "data": [0.0] * 10}]}  # fmt: skip
        answer = httpx.post(f"{other}/v2/models/{model_id}/infer", json=infer,
                            headers={"Authorization": f"Bearer {owner}"})  # fmt: skip
        assert answer.status_code == 404, answer.text
