"""Bad input gets a clear 4xx naming the problem and changes nothing, on both deployments."""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import pytest

from tests.e2e.helpers import diabetes_frame, iris_frame, job_spec, upload, upload_frame
from tests.stack import Stack


def counts(stack: Stack) -> tuple[int, int, int]:
    client = stack.http()
    return (
        client.get("/datasets").json()["total"],
        client.get("/jobs").json()["total"],
        client.get("/models").json()["total"],
    )


@pytest.fixture
def iris_id(stack: Stack) -> str:
    return upload_frame(stack.http(), iris_frame())


def _npz_bytes(**arrays: Any) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


BAD_UPLOADS = [
    ("empty.csv", b"", "empty"),
    ("garbage.csv", bytes(range(256)) * 4, "UTF-8"),
    ("ragged.csv", b"a,b\n1,2\n3,4,5\n", "field"),
    ("short.csv", b"a,b,c\n1,2,3\n4,5\n", "field"),
    ("noextension", b"a,b\n1,2\n", "format"),
    ("bad.parquet", b"PAR1 not really parquet", "Parquet"),
    ("noy.npz", _npz_bytes(x=np.zeros((3, 2))), "'y'"),
]


@pytest.mark.parametrize(("filename", "content", "needle"), BAD_UPLOADS)
def test_bad_uploads_are_refused(stack: Stack, filename: str, content: bytes, needle: str) -> None:
    before = counts(stack)
    response = upload(stack.http(), content, filename)
    assert 400 <= response.status_code < 500, response.text
    assert needle.lower() in response.json()["detail"].lower()
    assert counts(stack) == before
    incoming = stack.data_dir / "artifacts" / "incoming"
    assert not incoming.exists() or not any(incoming.iterdir())


def test_upload_over_the_size_limit_is_413(stack: Stack) -> None:
    before = counts(stack)
    response = upload(stack.http(), b"a,b\n" + b"1,2\n" * 600_000, "big.csv")  # 2.4 MB > 2 MB
    assert response.status_code == 413
    assert "limit" in response.json()["detail"]
    assert counts(stack) == before


def test_nul_byte_in_a_name_is_422(stack: Stack) -> None:
    before = counts(stack)
    response = upload(stack.http(), b"a,b\n1,2\n2,3\n", "ok.csv", name="bad\x00name")
    assert response.status_code == 422
    assert "NUL" in response.json()["detail"]
    assert counts(stack) == before


def test_integer_beyond_64_bits_in_a_csv(stack: Stack) -> None:
    content = f"a,b\n{2**70},1\n2,2\n3,1\n".encode()
    response = upload(stack.http(), content, "big_int.csv")
    assert response.status_code == 201, response.text
    assert response.json()["columns"][0] == {
        "name": "a",
        "dtype": "float",
        "missing": 0,
        "unique": 3,
        "unique_exact": True,
    }


def test_dataset_lifecycle(stack: Stack) -> None:
    response = upload(stack.http(), b"x,label\n1,a\n2,b\n3,a\n", "tiny.csv", name="tiny")
    assert response.status_code == 201
    body = response.json()
    assert body["name"] == "tiny" and body["num_rows"] == 3 and body["format"] == "csv"
    assert [c["name"] for c in body["columns"]] == ["x", "label"]
    assert len(body["sha256"]) == 64 and body["size_bytes"] == 20
    assert stack.http().get(f"/datasets/{body['id']}").json() == body
    assert stack.http().delete(f"/datasets/{body['id']}").status_code == 204
    assert stack.http().get(f"/datasets/{body['id']}").status_code == 404


def test_dataset_in_use_cannot_be_deleted(stack: Stack, iris_id: str) -> None:
    job = stack.http().post("/jobs", json=job_spec(iris_id, training={"epochs": 300})).json()
    response = stack.http().delete(f"/datasets/{iris_id}")
    assert response.status_code == 409
    stack.http().post(f"/jobs/{job['id']}/cancel")
    stack.wait_for_job(job["id"])


BAD_SPECS = [
    ({"target": "nope"}, "unknown target column 'nope'"),
    ({"features": ["sepal_length", "ghost"]}, "ghost"),
    ({"task": "regression"}, "must be numeric"),
    ({"optimizer": {"name": "adam", "lr": float("nan")}}, "lr"),
    ({"optimizer": {"name": "sgd", "lr": -0.1}}, "lr"),
    ({"optimizer": {"name": "lbfgs", "lr": 0.1}}, "lbfgs"),
    ({"optimizer": {"name": "adam", "momentum": 0.9}}, "momentum"),
    ({"training": {"epochs": 0}}, "epochs"),
    ({"training": {"seed": 2**70}}, "seed"),
    ({"training": {"validation_split": 0.5, "test_split": 0.5}}, "training"),
    ({"model": {"kind": "transformer"}}, "transformer"),
    ({"model": {"kind": "linear", "solver": "normal_equation"}}, "closed form"),
    ({"dataset_id": "does-not-exist"}, "does-not-exist"),
    ({"target": "species\x00"}, "NUL"),
]


@pytest.mark.parametrize(("override", "needle"), BAD_SPECS)
def test_bad_job_specs_are_422(
    stack: Stack, iris_id: str, override: dict[str, Any], needle: str
) -> None:
    before = counts(stack)
    spec = {**job_spec(iris_id), **override}
    # NaN is not JSON: send it the way a careless client would, as a bare NaN token.
    content = json.dumps(spec, allow_nan=True)
    response = stack.http().post(
        "/jobs", content=content, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert needle in str(response.json()["detail"])
    assert counts(stack) == before


def test_single_class_and_regression_targets(stack: Stack) -> None:
    one_class = upload(stack.http(), b"x,y\n1,a\n2,a\n3,a\n", "one.csv").json()["id"]
    response = stack.http().post("/jobs", json=job_spec(one_class, target="y"))
    assert response.status_code == 422
    assert "at least 2 classes" in response.json()["detail"]


@pytest.fixture
def trained_model(stack: Stack) -> str:
    dataset_id = upload_frame(stack.http(), diabetes_frame())
    spec = job_spec(dataset_id, task="regression", target="target", model={"kind": "linear"})
    job = stack.wait_for_job(stack.http().post("/jobs", json=spec).json()["id"])
    assert job["status"] == "succeeded", job
    return str(job["model_id"])


def test_predict_with_wrong_inputs_is_422(stack: Stack, trained_model: str) -> None:
    good = diabetes_frame().drop(columns=["target"]).iloc[0].to_dict()
    cases = [
        ([{k: v for k, v in good.items() if k != "bmi"}], "missing columns: bmi"),
        ([{**good, "extra": 1}], "unknown columns: extra"),
        ([[1.0, 2.0]], "expected 10"),
        ([{**good, "age": "old"}], "expected a finite number"),
        ([{**good, "age": 10**400}], "expected a finite number"),
    ]
    for inputs, needle in cases:
        response = stack.http().post("/predict", json={"model_id": trained_model, "inputs": inputs})
        assert response.status_code == 422, (inputs, response.text)
        assert needle in str(response.json()["detail"]), response.text
    unknown = stack.http().post("/predict", json={"model_id": "nope", "inputs": [good]})
    assert unknown.status_code == 404
    assert "nope" in unknown.json()["detail"]
    ok = stack.http().post("/predict", json={"model_id": trained_model, "inputs": [good]})
    assert ok.status_code == 200


def test_unknown_ids_are_404(stack: Stack) -> None:
    for path in ("/datasets/x", "/jobs/x", "/models/x"):
        response = stack.http().get(path)
        assert response.status_code == 404
        assert "'x'" in response.json()["detail"]
    assert stack.http().post("/jobs/x/cancel").status_code == 404


def test_ids_with_a_nul_byte_are_404(stack: Stack) -> None:
    # PostgreSQL text cannot hold NUL: looking such an id up was a 500 there.
    client = stack.http()
    attempts: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", "/datasets/%00", {}),
        ("DELETE", "/datasets/a%00", {}),
        ("GET", "/jobs/%00", {}),
        ("POST", "/jobs/%00/cancel", {}),
        ("GET", "/models/%00", {}),
        ("POST", "/models/%00/rollout", {"json": {}}),
        ("POST", "/predict", {"json": {"model_id": "\x00", "inputs": [[1.0]]}}),
        ("POST", "/predict/files", {"data": {"model_id": "\x00"},
                                    "files": {"file": ("a.png", io.BytesIO(b"x"), "image/png")}}),
    ]  # fmt: skip
    for method, path, kwargs in attempts:
        response = client.request(method, path, **kwargs)
        assert response.status_code == 404, (method, path, response.text)
    with stack.admin() as admin:
        for method, path in (("GET", "/users/%00/keys"), ("DELETE", "/keys/%00")):
            assert admin.request(method, path).status_code == 404, path


def test_a_body_that_is_not_utf8_is_a_declared_400(stack: Stack) -> None:
    # FastAPI answers 400 when a JSON body does not decode; the schema must say so.
    paths = stack.http().get("/openapi.json").json()["paths"]
    body, headers = b"\xff{}", {"Content-Type": "application/json"}
    for path in ("/jobs", "/predict", "/models/x/rollout"):
        assert "400" in paths[path.replace("x", "{model_id}")]["post"]["responses"], path
        response = stack.http().post(path, content=body, headers=headers)
        assert response.status_code == 400, (path, response.text)
    with stack.admin() as admin:
        for path in ("/users", "/users/x/keys"):
            assert "400" in paths[path.replace("x", "{user_id}")]["post"]["responses"], path
            assert admin.post(path, content=body, headers=headers).status_code == 400, path
