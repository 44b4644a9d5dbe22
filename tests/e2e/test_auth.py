"""Accounts and isolation over HTTP: keys, users, 401 without a key, 404 for another user's
ids, lists of one's own only; rate limits and the cap on active jobs; Idempotency-Key."""

from __future__ import annotations

import io
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.helpers import iris_frame, job_spec, upload_frame
from tests.stack import ROOT, Stack, postgres_redis_stack

PUBLIC = {"/health", "/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"}
# The Open Inference Protocol's probes and server metadata, for orchestrators: no user data.
PUBLIC |= {"/v2/health/live", "/v2/health/ready", "/v2"}


def test_every_other_endpoint_needs_a_key(stack: Stack) -> None:
    schema = stack.http().get("/openapi.json").json()
    anonymous = stack.client_for(None)
    checked = 0
    for path, operations in schema["paths"].items():
        if path in PUBLIC:
            continue
        concrete = path
        for name in (
            "dataset_id",
            "job_id",
            "model_id",
            "study_id",
            "user_id",
            "key_id",
            "version",
            "name",
        ):
            concrete = concrete.replace("{" + name + "}", uuid.uuid4().hex)
        assert "{" not in concrete, path
        for method in operations:
            response = anonymous.request(method, concrete, json={})
            assert response.status_code == 401, (method, path, response.text)
            assert response.headers["WWW-Authenticate"] == "Bearer"
            checked += 1
    assert checked >= 15
    for public in ("/health", "/openapi.json", "/docs", "/redoc", "/v2/health/live", "/v2"):
        assert anonymous.get(public).status_code == 200, public
    with stack.admin() as admin:  # operations: /ready takes the admin key too
        assert admin.get("/ready").status_code == 200
    wrong = stack.client_for("keiko_not-a-key")
    assert wrong.get("/jobs").status_code == 401
    assert "unknown" in wrong.get("/jobs").json()["detail"]


def test_users_and_keys_are_managed_with_the_admin_key(stack: Stack) -> None:
    key = stack.new_user("bob")
    bob = stack.client_for(key)
    assert bob.get("/datasets").json()["items"] == []
    # A user's key cannot manage users; the admin key owns no data.
    assert bob.post("/users", json={"name": "mallory"}).status_code == 403
    with stack.admin() as admin:
        assert admin.get("/jobs").status_code == 403
        users = admin.get("/users", params={"limit": 500}).json()["items"]
        # Other tests on this stack make their own bob-... users: this one holds the key.
        bob_row = next(
            u
            for u in users
            if u["name"].startswith("bob-")
            and [k["prefix"] for k in admin.get(f"/users/{u['id']}/keys").json()["items"]]
            == [key[:12]]
        )
        keys = admin.get(f"/users/{bob_row['id']}/keys").json()["items"]
        assert [k["prefix"] for k in keys] == [key[:12]]
        assert "key" not in keys[0] and "key_hash" not in keys[0]
        page = admin.get("/users", params={"limit": 1, "offset": 1}).json()
        assert len(page["items"]) == 1 and page["total"] == len(users) and page["offset"] == 1
        assert page["items"][0] == users[1]  # oldest first, pages in order
        assert admin.post("/users", json={"name": bob_row["name"]}).status_code == 409
        assert admin.post("/users", json={"name": "../etc"}).status_code == 422
        second = admin.post(f"/users/{bob_row['id']}/keys", json={"name": "ci"}).json()
        assert stack.client_for(second["key"]).get("/jobs").status_code == 200
        # Deleting a key ends it at once; the other key goes on working.
        assert admin.delete(f"/keys/{keys[0]['id']}").status_code == 204
        assert admin.delete(f"/keys/{keys[0]['id']}").status_code == 404
        assert admin.post(f"/users/{uuid.uuid4().hex}/keys", json={}).status_code == 404
    assert bob.get("/datasets").status_code == 401
    assert stack.client_for(second["key"]).get("/datasets").status_code == 200


def test_another_users_ids_are_404(stack: Stack) -> None:
    owner = stack.http()
    dataset_id = upload_frame(owner, iris_frame())
    job = owner.post("/jobs", json=job_spec(dataset_id)).json()
    finished = stack.wait_for_job(job["id"])
    assert finished["status"] == "succeeded", finished
    model_id = finished["model_id"]

    other = stack.client_for(stack.new_user("eve"))
    attempts: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", f"/datasets/{dataset_id}", {}),
        ("DELETE", f"/datasets/{dataset_id}", {}),
        ("GET", f"/jobs/{job['id']}", {}),
        ("POST", f"/jobs/{job['id']}/cancel", {}),
        ("GET", f"/models/{model_id}", {}),
        ("DELETE", f"/models/{model_id}", {}),
        ("POST", f"/models/{model_id}/rollout", {"json": {"episodes": 1}}),
        ("POST", "/predict", {"json": {"model_id": model_id, "inputs": [[1, 2, 3, 4]]}}),
        ("POST", "/predict/files", {"data": {"model_id": model_id},
                                    "files": {"file": ("a.png", io.BytesIO(b"x"), "image/png")}}),
    ]  # fmt: skip
    for method, path, kwargs in attempts:
        response = other.request(method, path, **kwargs)
        assert response.status_code == 404, (method, path, response.text)
    # A job on another user's dataset: the dataset does not exist for them.
    refused = other.post("/jobs", json=job_spec(dataset_id))
    assert refused.status_code == 422 and "no dataset" in refused.json()["detail"]
    for listing in ("/datasets", "/jobs", "/models"):
        assert other.get(listing).json() == {"items": [], "total": 0, "limit": 50, "offset": 0}
        mine = owner.get(listing, params={"limit": 500}).json()["items"]
        assert mine, listing
    # Nothing was touched: the owner still has all three.
    assert owner.get(f"/datasets/{dataset_id}").status_code == 200
    assert owner.get(f"/models/{model_id}").status_code == 200
    assert owner.get(f"/jobs/{job['id']}").json()["status"] == "succeeded"


def test_idempotency_key_returns_the_first_answer(stack: Stack) -> None:
    client = stack.http()
    key = {"Idempotency-Key": uuid.uuid4().hex}
    frame = iris_frame().to_csv(index=False).encode()
    first = client.post("/datasets", files={"file": ("iris.csv", frame)}, headers=key)
    again = client.post("/datasets", files={"file": ("iris.csv", frame)}, headers=key)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() and again.headers["Idempotent-Replayed"] == "true"
    other_file = client.post("/datasets", files={"file": ("x.csv", b"a,b\n1,2\n")}, headers=key)
    assert other_file.status_code == 422 and "different request" in other_file.json()["detail"]
    dataset_id = first.json()["id"]
    names = [d["id"] for d in client.get("/datasets", params={"limit": 500}).json()["items"]]
    assert names.count(dataset_id) == 1

    spec = job_spec(dataset_id, training={"epochs": 1})
    job_key = {"Idempotency-Key": uuid.uuid4().hex}
    # Retries racing each other: one job, every answer the same.
    answers: list[httpx.Response] = []

    def submit() -> None:
        with stack.client_for(client.headers["Authorization"].split()[1]) as c:
            answers.append(c.post("/jobs", json=spec, headers=job_key))

    threads = [threading.Thread(target=submit) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert {a.status_code for a in answers} == {202}
    assert len({a.json()["id"] for a in answers}) == 1
    job_id = answers[0].json()["id"]
    jobs = client.get("/jobs", params={"limit": 500}).json()["items"]
    assert [j["id"] for j in jobs].count(job_id) == 1
    assert sum(1 for j in jobs if j["dataset_id"] == dataset_id) == 1
    changed = client.post("/jobs", json=job_spec(dataset_id), headers=job_key)
    assert changed.status_code == 422
    assert stack.wait_for_job(job_id)["status"] == "succeeded"
    # Keys belong to a user: another user's same key is a new request.
    other = stack.client_for(stack.new_user("carol"))
    assert other.post("/datasets", files={"file": ("i.csv", frame)}, headers=key).status_code == 201


@pytest.fixture(scope="module")
def limited_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The API alone (no worker) on PostgreSQL and Redis, with small limits."""
    with postgres_redis_stack(
        "limited",
        tmp_path_factory.mktemp("limited"),
        worker=False,
        KEIKO_RATE_LIMIT_PREDICT="5/minute",
        KEIKO_RATE_LIMIT_JOBS="100/minute",
        KEIKO_MAX_ACTIVE_JOBS="3",
    ) as stack:
        yield stack


def test_predict_rate_limit_per_key(limited_stack: Stack) -> None:
    stack = limited_stack
    body = {"model_id": uuid.uuid4().hex, "inputs": [[1.0]]}
    codes = [stack.http().post("/predict", json=body).status_code for _ in range(5)]
    assert codes == [404] * 5  # counted, then answered as usual
    limited = stack.http().post("/predict", json=body)
    assert limited.status_code == 429
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert "5/minute" in limited.json()["detail"]
    # Another key has its own budget.
    assert stack.client_for(stack.new_user("dan")).post("/predict", json=body).status_code == 404


def test_cap_on_queued_and_running_jobs(limited_stack: Stack) -> None:
    client = stack_client = limited_stack.client_for(limited_stack.new_user("fay"))
    dataset_id = upload_frame(stack_client, iris_frame())
    ids = [client.post("/jobs", json=job_spec(dataset_id)).json()["id"] for _ in range(3)]
    refused = client.post("/jobs", json=job_spec(dataset_id))  # no worker: all still queued
    assert refused.status_code == 429 and "3 of your jobs" in refused.json()["detail"]
    assert client.post(f"/jobs/{ids[0]}/cancel").status_code == 202
    assert client.post("/jobs", json=job_spec(dataset_id)).status_code == 202
    # The cap is per user.
    other = limited_stack.client_for(limited_stack.new_user("gus"))
    assert other.post("/jobs", json=job_spec(upload_frame(other, iris_frame()))).status_code == 202


def test_the_cap_holds_for_simultaneous_submissions(limited_stack: Stack) -> None:
    key = limited_stack.new_user("hal")
    dataset_id = upload_frame(limited_stack.client_for(key), iris_frame())
    codes: list[int] = []

    def submit() -> None:
        with limited_stack.client_for(key) as client:
            codes.append(client.post("/jobs", json=job_spec(dataset_id)).status_code)

    threads = [threading.Thread(target=submit) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(codes) == [202] * 3 + [429] * 5


def test_add_user_from_the_command_line(stack: Stack) -> None:
    def add_user(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "service.cli", "add-user", *args]
        return subprocess.run(command, cwd=ROOT, env=stack.env, capture_output=True, text=True)

    name = f"ops-{uuid.uuid4().hex[:8]}"
    created = add_user(name)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    assert stack.client_for(key).get("/jobs").status_code == 200
    again = add_user(name, "--key-name", "second")  # same user, another key
    assert again.returncode == 0 and again.stdout.strip().splitlines()[-1] != key
    with stack.admin() as admin:
        users = admin.get("/users", params={"limit": 500}).json()["items"]
        user = next(u for u in users if u["name"] == name)
        keys = admin.get(f"/users/{user['id']}/keys").json()["items"]
    assert [k["name"] for k in keys] == ["default", "second"]
    assert add_user("../nope").returncode == 2


def test_racing_uploads_with_one_key_make_one_dataset_and_no_orphan_file(stack: Stack) -> None:
    key = stack.new_user("ivy")
    headers = {"Idempotency-Key": uuid.uuid4().hex}
    content = iris_frame().to_csv(index=False).encode()
    folder = stack.data_dir / "artifacts" / "datasets"
    files_before = set(folder.glob("*"))
    answers: list[httpx.Response] = []

    def upload_once() -> None:
        with stack.client_for(key) as client:
            files = {"file": ("iris.csv", content)}
            answers.append(client.post("/datasets", files=files, headers=headers))

    threads = [threading.Thread(target=upload_once) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [a.status_code for a in answers] == [201] * 4, [a.text for a in answers]
    assert len({a.json()["id"] for a in answers}) == 1
    with stack.client_for(key) as client:
        assert client.get("/datasets").json()["total"] == 1
    new_files = set(folder.glob("*")) - files_before
    assert [p.name.split(".")[0] for p in new_files] == [answers[0].json()["id"]]
