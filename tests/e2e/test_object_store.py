"""Several machines sharing only PostgreSQL, Redis and S3-compatible object storage (moto's S3
server): the API and each worker on its own empty data directory, no shared filesystem.
The whole walk, a worker killed mid-job and taken over by another on its own directory,
corrupted objects, the store going away, and the per-machine cache."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.helpers import (
    iris_frame,
    job_spec,
    start_long_job,
    upload,
    upload_frame,
    wait_until,
)
from tests.e2e.test_gallery import bars, train
from tests.e2e.test_images import idx_images, idx_labels, upload_files
from tests.stack import Stack, started_deployment, worker_env_for


@pytest.fixture
def s3_stack(tmp_path: Path) -> Iterator[Stack]:
    with started_deployment("object_store", tmp_path, KEIKO_ARTIFACT_ATTEMPTS="2") as stack:
        yield stack


def bucket_keys(stack: Stack) -> list[str]:
    assert stack.s3 is not None
    found = stack.s3.client().list_objects_v2(Bucket=stack.s3.bucket).get("Contents", [])
    return sorted(str(item["Key"]) for item in found)


def cached(folder: Path) -> list[Path]:
    return sorted((folder / "cache").glob("??/*"))


def test_the_whole_walk_shares_no_filesystem(s3_stack: Stack, tmp_path: Path) -> None:
    stack = s3_stack
    http = stack.http()
    dataset_id = upload_frame(http, iris_frame())
    assert f"keiko/datasets/{dataset_id}.csv" in bucket_keys(stack)
    spec = job_spec(dataset_id, training={"epochs": 3, "batch_size": 16, "seed": 0})
    job = train(stack, spec)
    assert [c["epoch"] for c in job["checkpoints"]]
    model_id = job["model_id"]
    keys = bucket_keys(stack)
    assert f"keiko/models/{model_id}/model.safetensors" in keys
    assert f"keiko/models/{model_id}/model.json" in keys
    assert any(k.startswith(f"keiko/jobs/{job['id']}/epoch-") for k in keys)

    rows = iris_frame().drop(columns=["species"]).head(5).to_dict(orient="records")
    first = http.post("/predict", json={"model_id": model_id, "inputs": rows})
    assert first.status_code == 200, first.text
    # Nothing was written where a shared folder used to be, on either machine.
    for machine in ("api", "worker"):
        assert not (tmp_path / machine / "artifacts").exists()
    [model_file] = [p for p in cached(tmp_path / "api") if p.suffix == ".safetensors"]
    inode = model_file.stat().st_ino

    # A new API process on the same machine reads the model from its cache: no download.
    stack.restart_api()
    again = http.post("/predict", json={"model_id": model_id, "inputs": rows})
    assert again.json()["predictions"] == first.json()["predictions"]
    assert model_file.stat().st_ino == inode
    assert [p for p in cached(tmp_path / "api") if p.suffix == ".safetensors"] == [model_file]

    samples = http.get(f"/datasets/{dataset_id}/samples", params={"n": 3})
    assert samples.status_code == 200, samples.text
    exported = http.get(f"/models/{model_id}/export", params={"format": "onnx"})
    assert exported.status_code == 200, exported.text

    assert http.delete(f"/models/{model_id}").status_code == 204
    assert not [k for k in bucket_keys(stack) if k.startswith(f"keiko/models/{model_id}")]
    assert http.delete(f"/datasets/{dataset_id}").status_code == 204
    assert f"keiko/datasets/{dataset_id}.csv" not in bucket_keys(stack)


def test_image_uploads_and_the_gallery_through_the_store(s3_stack: Stack) -> None:
    stack = s3_stack
    x, y = bars(200, seed=2)
    uploaded = upload_files(stack, [("images.idx", idx_images(x)), ("labels.idx", idx_labels(y))])
    assert uploaded.status_code == 201, uploaded.text
    dataset = uploaded.json()
    spec = job_spec(
        dataset["id"],
        target=None,
        model={"kind": "mlp", "hidden_layers": [4]},
        optimizer={"name": "sgd", "lr": 0.001},
        training={"epochs": 1, "batch_size": 64, "seed": 0, "test_split": 0.3},
    )
    job = train(stack, spec)
    mistakes = stack.http().get(f"/jobs/{job['id']}/mistakes").json()
    assert mistakes["split"] == "test" and mistakes["items"]
    assert f"keiko/jobs/{job['id']}/mistakes.json" in bucket_keys(stack)
    samples = stack.http().get(f"/datasets/{dataset['id']}/samples", params={"n": 2}).json()
    assert samples["kind"] == "images" and len(samples["items"]) == 2


def test_a_killed_worker_is_taken_over_from_the_store(s3_stack: Stack, tmp_path: Path) -> None:
    stack = s3_stack
    job_id = start_long_job(stack, seed=5)
    job = wait_until(stack, job_id, lambda job: len(job["checkpoints"]) >= 2)
    stack.kill_worker()
    survived = {c["epoch"]: c["created_at"] for c in job["checkpoints"]}
    stack.start_worker("worker2", worker_env_for(stack, tmp_path / "worker2"))

    job = stack.wait_for_job(job_id, timeout=240)
    assert job["status"] == "succeeded", (job["error"], stack.log("worker2"))
    assert job["attempts"] == 2
    assert [entry["epoch"] for entry in job["history"]] == list(range(1, 13))
    kept = {c["epoch"]: c["created_at"] for c in job["checkpoints"] if c["epoch"] in survived}
    assert kept == survived  # resumed, not redone
    assert [c["epoch"] for c in job["checkpoints"]] == list(range(1, 13))
    models = stack.http().get("/models", params={"limit": 500}).json()["items"]
    assert [m["id"] for m in models if m["job_id"] == job_id] == [job["model_id"]]
    # The second worker read the checkpoint it resumed from out of the store.
    assert "resuming after epoch" in stack.log("worker2")
    assert any(p.suffix == ".safetensors" for p in cached(tmp_path / "worker2"))
    assert not (tmp_path / "worker2" / "artifacts").exists()


def test_corrupted_objects_are_refused(s3_stack: Stack) -> None:
    stack = s3_stack
    assert stack.s3 is not None
    client = stack.s3.client()
    dataset_id = upload_frame(stack.http(), iris_frame())
    job = train(stack, job_spec(dataset_id))
    model_id = job["model_id"]
    key = f"keiko/models/{model_id}/model.safetensors"
    weights = client.get_object(Bucket=stack.s3.bucket, Key=key)["Body"].read()
    client.put_object(Bucket=stack.s3.bucket, Key=key, Body=weights[: len(weights) // 2])
    rows = iris_frame().drop(columns=["species"]).head(2).to_dict(orient="records")
    refused = stack.http().post("/predict", json={"model_id": model_id, "inputs": rows})
    assert refused.status_code == 409, refused.text
    assert "does not match the sha256" in refused.json()["detail"]

    # A dataset swapped in the bucket before any worker read it: the job fails saying so.
    # (The first one is safe in the worker's cache, checked when it was downloaded.)
    other_id = upload_frame(stack.http(), iris_frame().head(120))
    data_key = f"keiko/datasets/{other_id}.csv"
    swapped = iris_frame().sample(frac=1.0, random_state=1).to_csv(index=False).encode()
    client.put_object(Bucket=stack.s3.bucket, Key=data_key, Body=swapped)
    failed = stack.http().post("/jobs", json=job_spec(other_id)).json()
    failed = stack.wait_for_job(failed["id"])
    assert failed["status"] == "failed"
    assert "dataset file is refused" in failed["error"]["message"]
    assert hashlib.sha256(swapped).hexdigest() in failed["error"]["message"]
    # Swapping the first dataset too changes nothing for this worker: it trains on the copy
    # in its cache, checked against the sha256 recorded at upload.
    client.put_object(Bucket=stack.s3.bucket, Key=f"keiko/datasets/{dataset_id}.csv", Body=swapped)
    reused = stack.wait_for_job(stack.http().post("/jobs", json=job_spec(dataset_id)).json()["id"])
    assert reused["status"] == "succeeded", reused["error"]


def test_the_store_going_away(s3_stack: Stack, tmp_path: Path) -> None:
    """At a checkpoint, the worker's calls retry and then the job fails with the reason; an
    upload answers 503 and records nothing."""
    stack = s3_stack
    assert stack.s3 is not None
    job_id = start_long_job(stack, seed=7, epochs=40)
    wait_until(stack, job_id, lambda job: len(job["checkpoints"]) >= 1)
    before = stack.http().get("/datasets").json()["total"]
    stack.s3.process.terminate()
    stack.s3.process.wait()

    job = stack.wait_for_job(job_id, timeout=120)
    assert job["status"] == "failed", job
    assert job["error"]["type"] == "StoreUnavailable"
    assert "could not store" in job["error"]["message"]
    assert "after 2 attempts" in job["error"]["message"]

    refused = upload(stack.http(), iris_frame().to_csv(index=False).encode(), "iris.csv")
    assert refused.status_code == 503, refused.text
    assert "send the upload again" in refused.json()["detail"]
    assert refused.headers["Retry-After"] == "30"
    assert stack.http().get("/datasets").json()["total"] == before
    # A read the API cannot make (this dataset is not in its cache) is a 503 too.
    unread = stack.http().get(f"/datasets/{job['spec']['dataset_id']}/samples")
    assert unread.status_code == 503, unread.text
    assert unread.headers["Retry-After"] == "30"
    assert "could not read" in unread.json()["detail"]
    assert not list((tmp_path / "api" / "scratch" / "incoming").iterdir())
