"""The Open Inference Protocol driven by Triton's own HTTP client (`tritonclient[http]`), on
both deployments: server and model health, model metadata, and inference on a table MLP
(with a string column), an image CNN and a DQN, in JSON and in the binary-data extension;
every answer equals `POST /predict`'s. Wrong shapes, wrong datatypes, unknown or another
user's models get the protocol's errors."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pandas as pd
import pytest
import tritonclient.http as triton
from sklearn.datasets import load_digits
from tritonclient.utils import InferenceServerException

from tests.e2e.helpers import iris_frame, job_spec, upload, upload_frame
from tests.stack import Stack


def client(stack: Stack) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(url=stack.base_url.removeprefix("http://"))


def auth(stack: Stack) -> dict[str, str]:
    return {"Authorization": stack.http().headers["Authorization"]}


def trained(stack: Stack, spec: dict[str, Any]) -> str:
    response = stack.http().post("/jobs", json=spec)
    assert response.status_code == 202, response.text
    job = stack.wait_for_job(response.json()["id"], timeout=300)
    assert job["status"] == "succeeded", (job["error"], stack.log("worker"))
    return str(job["model_id"])


def predict(stack: Stack, model_id: str, inputs: list[Any]) -> dict[str, Any]:
    response = stack.http().post("/predict", json={"model_id": model_id, "inputs": inputs})
    assert response.status_code == 200, response.text
    return dict(response.json())


def infer(
    stack: Stack, model_id: str, tensors: list[triton.InferInput], *, binary: bool
) -> triton.InferResult:
    outputs = None
    if binary:  # ask for every output as raw bytes, as Triton's examples do
        metadata = client(stack).get_model_metadata(model_id, headers=auth(stack))
        outputs = [triton.InferRequestedOutput(o["name"]) for o in metadata["outputs"]]
    return client(stack).infer(model_id, tensors, outputs=outputs, headers=auth(stack))


def tensor(name: str, array: np.ndarray, datatype: str, *, binary: bool) -> triton.InferInput:
    given = triton.InferInput(name, list(array.shape), datatype)
    given.set_data_from_numpy(array, binary_data=binary)
    return given


def iris_with_colour() -> pd.DataFrame:
    frame = iris_frame()
    frame["colour"] = np.random.default_rng(0).choice(["red", "green", "blue"], len(frame))
    return frame


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_a_table_mlp_answers_as_predict_does(stack: Stack, binary: bool) -> None:
    frame = iris_with_colour()
    spec = job_spec(upload_frame(stack.http(), frame), model={"kind": "mlp", "hidden_layers": [8]})
    model_id = trained(stack, spec)
    server = client(stack)
    assert server.is_server_live() and server.is_server_ready()
    assert server.is_model_ready(model_id, headers=auth(stack))
    metadata = server.get_model_metadata(model_id, headers=auth(stack))
    assert metadata["name"] == model_id and metadata["platform"] == "keiko_mlp"
    columns = [c for c in frame.columns if c != "species"]
    assert [i["name"] for i in metadata["inputs"]] == columns
    types = {i["name"]: i["datatype"] for i in metadata["inputs"]}
    assert types["colour"] == "BYTES" and types[columns[0]] == "FP64"
    assert {o["name"]: o["shape"] for o in metadata["outputs"]} == {
        "label": [-1],
        "probabilities": [-1, 3],
    }

    rows = frame.drop(columns=["species"]).sample(7, random_state=1)
    inputs = [
        tensor(
            name,
            rows[name].to_numpy(dtype=object if types[name] == "BYTES" else np.float64),
            types[name],
            binary=binary,
        )
        for name in columns
    ]
    result = infer(stack, model_id, inputs, binary=binary)
    expected = predict(stack, model_id, rows.to_dict(orient="records"))
    assert [v.decode() for v in result.as_numpy("label")] == expected["predictions"]
    np.testing.assert_array_equal(result.as_numpy("probabilities"), expected["probabilities"])


def test_an_image_cnn_and_a_dqn_answer_as_predict_does(stack: Stack) -> None:
    digits = load_digits()
    x, y = (digits.images[:400] * 16).astype(np.uint8), digits.target[:400]
    buffer = io.BytesIO()
    np.savez(buffer, x=x, y=y)
    dataset = upload(stack.http(), buffer.getvalue(), "digits.npz").json()["id"]
    layers = [
        {"type": "conv", "out_channels": 8, "kernel_size": 3, "padding": 1},
        {"type": "relu"},
        {"type": "max_pool", "kernel_size": 2},
    ]
    spec = job_spec(dataset, target=None, model={"kind": "cnn", "layers": layers, "head": [16]})
    cnn = trained(stack, spec)
    metadata = client(stack).get_model_metadata(cnn, headers=auth(stack))
    assert metadata["inputs"] == [{"name": "input", "datatype": "UINT8", "shape": [-1, 8, 8]}]
    images = x[:5]
    result = infer(stack, cnn, [tensor("input", images, "UINT8", binary=True)], binary=True)
    expected = predict(stack, cnn, images.tolist())
    assert result.as_numpy("label").tolist() == expected["predictions"]
    np.testing.assert_array_equal(result.as_numpy("probabilities"), expected["probabilities"])

    dqn = trained(
        stack,
        {
            "model": {"kind": "dqn", "env": "CartPole-v1", "hidden_layers": [16],
                      "learning_starts": 100},
            "training": {"total_steps": 400, "eval_interval": 200, "eval_episodes": 1},
        },
    )  # fmt: skip
    metadata = client(stack).get_model_metadata(dqn, headers=auth(stack))
    assert metadata["inputs"] == [{"name": "observation", "datatype": "FP32", "shape": [-1, 4]}]
    observations = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)
    result = infer(stack, dqn, [tensor("observation", observations, "FP32", binary=False)],
                   binary=False)  # fmt: skip
    expected = predict(stack, dqn, observations.tolist())
    assert result.as_numpy("action").tolist() == expected["actions"]
    np.testing.assert_array_equal(result.as_numpy("q_values"), np.float32(expected["q_values"]))


def test_the_protocols_errors(stack: Stack) -> None:
    frame = iris_frame()
    model_id = trained(stack, job_spec(upload_frame(stack.http(), frame)))
    columns = [c for c in frame.columns if c != "species"]
    values = frame[columns].to_numpy(dtype=np.float64)[:3]

    def refused(inputs: list[triton.InferInput], name: str = model_id) -> str:
        with pytest.raises(InferenceServerException) as caught:
            client(stack).infer(name, inputs, headers=auth(stack))
        return str(caught.value)

    good = [tensor(c, values[:, i], "FP64", binary=False) for i, c in enumerate(columns)]
    assert client(stack).infer(model_id, good, headers=auth(stack)).as_numpy("label").shape == (3,)
    wrong_type = [tensor(c, values[:, i].astype(np.float32), "FP32", binary=False)
                  for i, c in enumerate(columns)]  # fmt: skip
    assert "datatype FP32; the model expects FP64" in refused(wrong_type)
    wrong_shape = [tensor(c, values[:, i : i + 1], "FP64", binary=True)
                   for i, c in enumerate(columns)]  # fmt: skip
    assert "shape [3, 1]" in refused(wrong_shape)
    assert "missing input" in refused(good[:-1])
    assert "no model with id 'nope'" in refused(good, "nope")
    other = stack.client_for(stack.new_user("eve"))
    answer = other.post(f"/v2/models/{model_id}/infer", json={"inputs": []})
    assert answer.status_code == 404 and "error" in answer.json()  # another user's: unknown
    answer = stack.client_for(None).get(f"/v2/models/{model_id}")
    assert answer.status_code == 401 and "error" in answer.json()
    answer = stack.http().post(f"/v2/models/{model_id}/infer", content=b"{not json")
    assert answer.status_code == 400 and "not JSON" in answer.json()["error"]
    answer = stack.http().get(f"/v2/models/{model_id}/versions/2")
    assert answer.status_code == 404 and "only one is 1" in answer.json()["error"]
