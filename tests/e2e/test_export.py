"""`GET /models/{id}/export?format=onnx` over HTTP: the file onnxruntime loads answers what
`POST /predict` answers, given the same records encoded as the file's metadata says;
another user's model, an unknown one and an unknown format are refused like elsewhere."""

from __future__ import annotations

import json
import uuid
from typing import Any

import numpy as np
import onnxruntime as ort

from tests.e2e.helpers import iris_frame, job_spec, upload_frame
from tests.stack import Stack


def encode(metadata: dict[str, Any], records: list[dict[str, Any]]) -> np.ndarray:
    """The records as the graph takes them, from the metadata alone: numbers as they are,
    strings one-hot over their column's categories, at the positions it names."""
    rows = np.zeros((len(records), len(metadata["inputs"][0]["features"])), dtype=np.float32)
    for i, record in enumerate(records):
        for column in metadata["columns"]:
            value = record[column["name"]]
            if column["type"] == "number":
                rows[i, column["positions"][0]] = value
            elif value in column["categories"]:
                rows[i, column["positions"][column["categories"].index(value)]] = 1.0
    return rows


def test_an_exported_model_answers_like_predict(stack: Stack) -> None:
    client = stack.http()
    frame = iris_frame()
    frame["shade"] = np.where(frame.index % 3 == 0, "dark", "light")  # a string column
    dataset_id = upload_frame(client, frame)
    spec = job_spec(dataset_id, model={"kind": "mlp", "hidden_layers": [16], "batch_norm": True})
    job = stack.wait_for_job(client.post("/jobs", json=spec).json()["id"])
    assert job["status"] == "succeeded", job
    model_id = job["model_id"]

    response = client.get(f"/models/{model_id}/export", params={"format": "onnx"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    disposition = response.headers["content-disposition"]
    assert disposition == f'attachment; filename="keiko-mlp-{model_id}.onnx"'
    session = ort.InferenceSession(response.content, providers=["CPUExecutionProvider"])
    metadata = {
        key: json.loads(value) for key, value in session.get_modelmeta().custom_metadata_map.items()
    }
    assert metadata["model_id"] == model_id and metadata["task"] == "classification"
    assert metadata["columns"][-1]["categories"] == ["dark", "light"]

    records = frame.drop(columns=["species"]).iloc[::10].to_dict(orient="records")
    answer = client.post("/predict", json={"model_id": model_id, "inputs": records})
    assert answer.status_code == 200, answer.text
    expected = answer.json()
    probabilities, prediction = session.run(None, {"input": encode(metadata, records)})
    np.testing.assert_allclose(probabilities, expected["probabilities"], rtol=0, atol=1e-5)
    assert [metadata["labels"][i] for i in prediction] == expected["predictions"]

    other = stack.client_for(stack.new_user("mallory"))
    assert other.get(f"/models/{model_id}/export").status_code == 404
    unknown = client.get(f"/models/{uuid.uuid4()}/export")
    assert unknown.status_code == 404 and "no model with id" in unknown.json()["detail"]
    refused = client.get(f"/models/{model_id}/export", params={"format": "pmml"})
    assert refused.status_code == 422 and "'onnx'" in refused.text
