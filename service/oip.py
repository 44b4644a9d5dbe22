"""The Open Inference Protocol (KServe v2, Triton's HTTP/REST API) for Keiko's models: the
tensors a model takes and gives, and the translation between them and `POST /predict`'s
inputs and answers, so both endpoints run the same validation, preprocessing and network.

A model's tensors follow its input schema: a table takes one tensor per feature column
(`FP64`, or `BYTES` for a string column), shape `[-1]`; arrays, images and sequences one
tensor `input` of one example's shape after a `-1` batch axis (`UINT8` for 8-bit images,
else `FP32`); an RL policy one `observation` (`INT64` state numbers, or `FP32` vectors).
Outputs: `label` and `probabilities` for classification, `prediction` for regression and
forecasting, `action` and `q_values` for policies.

Tensor data comes as JSON (nested or flat, row-major) or, with Triton's binary-data
extension, as raw little-endian bytes after a JSON header whose length the
`Inference-Header-Content-Length` header gives; answers use the same extension when the
request asks for it (`binary_data_output`, or `binary_data` on a requested output).
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
import pydantic_core

from models.metrics import json_safe

HEADER_LENGTH = "Inference-Header-Content-Length"
# Protocol datatype -> numpy dtype (BYTES: Python objects, each bytes).
DTYPES: dict[str, Any] = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "BYTES": np.object_,
}


class ProtocolError(ValueError):
    """A request the protocol refuses: the message is the `{"error": ...}` answer (400)."""


@dataclass(frozen=True)
class TensorMeta:
    name: str
    datatype: str
    shape: list[int]

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": self.shape}


def model_tensors(
    task: str, input_schema: dict[str, Any], output: dict[str, Any]
) -> tuple[list[TensorMeta], list[TensorMeta]]:
    """The inputs and outputs a model with this stored input schema and output takes and
    gives (its `GET /v2/models/{id}` metadata)."""
    if task == "reinforcement":
        observation = input_schema["observation"]
        if observation["type"] == "discrete":
            inputs = [TensorMeta("observation", "INT64", [-1])]
        else:
            inputs = [TensorMeta("observation", "FP32", [-1, *observation["shape"]])]
        actions = int(output["num_actions"])
        outputs = [
            TensorMeta("action", "INT64", [-1]),
            TensorMeta("q_values", "FP32", [-1, actions]),
        ]
        return inputs, outputs
    if "features" in input_schema:  # a table
        inputs = [
            TensorMeta(f["name"], "BYTES" if f["type"] == "string" else "FP64", [-1])
            for f in input_schema["features"]
        ]
    else:
        datatype = "UINT8" if input_schema.get("dtype") == "uint8" else "FP32"
        inputs = [TensorMeta("input", datatype, [-1, *input_schema["shape"]])]
    if task == "classification":
        labels = output.get("labels") or []
        integer = all(isinstance(x, int) and not isinstance(x, bool) for x in labels)
        outputs = [
            TensorMeta("label", "INT64" if integer and labels else "BYTES", [-1]),
            TensorMeta("probabilities", "FP64", [-1, len(labels)]),
        ]
    elif task == "forecasting":
        outputs = [TensorMeta("prediction", "FP64", [-1, int(input_schema["horizon"])])]
    else:
        outputs = [TensorMeta("prediction", "FP64", [-1])]
    return inputs, outputs


# --- requests ------------------------------------------------------------------------------


@dataclass(frozen=True)
class InferRequest:
    id: str | None
    tensors: dict[str, np.ndarray]  # by input name, shaped as sent
    binary_outputs: set[str]  # outputs to answer as raw bytes
    all_binary: bool  # `binary_data_output`: every output as raw bytes
    wanted: list[str] | None  # the outputs asked for (None: all)


def parse_infer(body: bytes, header_length: str | None) -> InferRequest:
    """An infer request's JSON header and tensors, raw bytes included."""
    if header_length is not None:
        try:
            split = int(header_length)
        except ValueError:
            raise ProtocolError(f"{HEADER_LENGTH} is not a number: {header_length!r}") from None
        if not 0 < split <= len(body):
            raise ProtocolError(f"{HEADER_LENGTH} {split} does not fit a {len(body)}-byte body")
        head, rest = body[:split], memoryview(body)[split:]
    else:
        head, rest = body, memoryview(b"")
    try:
        request = pydantic_core.from_json(head)  # Rust's parser: a third of json.loads' time
    except ValueError as exc:
        raise ProtocolError(f"the request is not JSON: {exc}") from None
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list):
        raise ProtocolError("an inference request is a JSON object with a list of 'inputs'")
    tensors: dict[str, np.ndarray] = {}
    offset = 0
    for item in request["inputs"]:
        if not isinstance(item, dict):
            raise ProtocolError("each input is an object with name, shape, datatype and data")
        name, array, used = _input_tensor(item, rest[offset:])
        if name in tensors:
            raise ProtocolError(f"input {name!r} is given twice")
        tensors[name] = array
        offset += used
    if offset != len(rest):
        raise ProtocolError(f"{len(rest) - offset} bytes of binary data belong to no input")
    parameters = request.get("parameters") or {}
    outputs = request.get("outputs")
    wanted = None
    binary: set[str] = set()
    if isinstance(outputs, list):
        wanted = []
        for out in outputs:
            if not isinstance(out, dict) or not isinstance(out.get("name"), str):
                raise ProtocolError("each requested output is an object with a 'name'")
            wanted.append(out["name"])
            if (out.get("parameters") or {}).get("binary_data"):
                binary.add(out["name"])
    request_id = request.get("id")
    return InferRequest(
        id=str(request_id) if request_id is not None else None,
        tensors=tensors,
        binary_outputs=binary,
        all_binary=bool(parameters.get("binary_data_output")),
        wanted=wanted,
    )


def _input_tensor(item: dict[str, Any], raw: memoryview) -> tuple[str, np.ndarray, int]:
    name, datatype, shape = item.get("name"), item.get("datatype"), item.get("shape")
    if not isinstance(name, str) or not name:
        raise ProtocolError("an input has no 'name'")
    if datatype not in DTYPES:
        raise ProtocolError(f"input {name!r}: unknown datatype {datatype!r}")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise ProtocolError(f"input {name!r}: 'shape' must be a list of sizes, got {shape!r}")
    count = math.prod(shape)
    size = (item.get("parameters") or {}).get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or size < 0 or size > len(raw):
            raise ProtocolError(f"input {name!r}: binary_data_size {size!r} overruns the body")
        data = bytes(raw[:size])
        if datatype == "BYTES":
            flat = _unpack_bytes(data, name)
        else:
            dtype = np.dtype(DTYPES[datatype]).newbyteorder("<")
            if size != count * dtype.itemsize:
                raise ProtocolError(
                    f"input {name!r}: {size} bytes for shape {shape} of {datatype}; expected "
                    f"{count * dtype.itemsize}"
                )
            flat = np.frombuffer(data, dtype=dtype).astype(dtype.newbyteorder("="))
        used = size
    else:
        if "data" not in item:
            raise ProtocolError(f"input {name!r} has no 'data'")
        flat = _json_data(item["data"], datatype, name)
        used = 0
    if flat.size != count:
        raise ProtocolError(
            f"input {name!r}: shape {shape} holds {count} values, the data has {flat.size}"
        )
    return name, flat.reshape(shape), used


def _json_data(data: Any, datatype: str, name: str) -> np.ndarray:
    if datatype == "BYTES":
        values = list(_flatten(data))
        if not all(isinstance(v, str) for v in values):
            raise ProtocolError(f"input {name!r}: BYTES data must be strings")
        return np.array([v.encode() for v in values], dtype=np.object_)
    try:  # flat, as clients send it (row-major), or nested to the tensor's shape
        array = np.array(data).reshape(-1)  # numpy reads the types: bool, int, float or not
    except ValueError:
        raise ProtocolError(f"input {name!r}: 'data' is not a rectangular array") from None
    if datatype == "BOOL":
        if array.size and array.dtype != np.bool_:
            raise ProtocolError(f"input {name!r}: BOOL data must be true or false")
        return array.astype(np.bool_)
    if array.size and array.dtype.kind not in "iuf":
        raise ProtocolError(f"input {name!r}: {datatype} data must be numbers")
    target = np.dtype(DTYPES[datatype])
    if target.kind in "iu" and array.size:
        bounds = np.iinfo(target)
        if array.min() < bounds.min or array.max() > bounds.max:
            raise ProtocolError(
                f"input {name!r}: values outside {bounds.min}..{bounds.max} for {datatype}"
            )
    return array.astype(target)


def _flatten(data: Any) -> Any:
    if isinstance(data, list):
        for item in data:
            yield from _flatten(item)
    else:
        yield data


def _unpack_bytes(data: bytes, name: str) -> np.ndarray:
    """Triton's BYTES serialisation: each element a 4-byte little-endian length, then it."""
    items, offset = [], 0
    while offset < len(data):
        if offset + 4 > len(data):
            raise ProtocolError(f"input {name!r}: a BYTES element's length is cut off")
        (length,) = struct.unpack_from("<I", data, offset)
        offset += 4
        if offset + length > len(data):
            raise ProtocolError(f"input {name!r}: a BYTES element overruns its data")
        items.append(data[offset : offset + length])
        offset += length
    return np.array(items, dtype=np.object_)


def predict_inputs(
    tensors: dict[str, np.ndarray], inputs: list[TensorMeta], max_rows: int
) -> list[Any] | np.ndarray:
    """The `POST /predict` inputs that the request's tensors stand for.
    Each expected tensor must be there with its datatype, and its shape must fit."""
    unknown = sorted(set(tensors) - {t.name for t in inputs})
    if unknown:
        raise ProtocolError(
            f"unexpected inputs {unknown}; the model takes {[t.name for t in inputs]}"
        )
    rows: int | None = None
    for meta in inputs:
        array = tensors.get(meta.name)
        if array is None:
            raise ProtocolError(f"missing input {meta.name!r}")
        datatype = next(k for k, v in DTYPES.items() if np.dtype(v) == array.dtype)
        if datatype != meta.datatype:
            raise ProtocolError(
                f"input {meta.name!r} has datatype {datatype}; the model expects {meta.datatype}"
            )
        fits = len(array.shape) == len(meta.shape) and all(
            want in (-1, got) for want, got in zip(meta.shape, array.shape, strict=True)
        )
        if not fits:
            raise ProtocolError(
                f"input {meta.name!r} has shape {list(array.shape)}; the model expects "
                f"{meta.shape} (-1: any size)"
            )
        if rows is not None and array.shape[0] != rows:
            raise ProtocolError("every input must hold the same number of rows")
        rows = array.shape[0]
    assert rows is not None
    if rows > max_rows:
        raise TooManyRows(f"{rows} inputs in one call; the limit is {max_rows}")
    if len(inputs) == 1 and inputs[0].name == "input":
        return tensors["input"]  # (N, ...): encoders that take arrays take it as it is
    if len(inputs) == 1 and inputs[0].name == "observation":
        return list(tensors["observation"].tolist())
    columns = {
        meta.name: (
            [v.decode("utf-8", "replace") for v in tensors[meta.name]]
            if meta.datatype == "BYTES"
            else tensors[meta.name].tolist()
        )
        for meta in inputs
    }
    return [{name: values[i] for name, values in columns.items()} for i in range(rows)]


class TooManyRows(ProtocolError):
    """More rows than `KEIKO_MAX_PREDICT_ROWS` in one call (413)."""


# --- answers -------------------------------------------------------------------------------


def output_arrays(result: dict[str, Any], outputs: list[TensorMeta]) -> dict[str, np.ndarray]:
    """`POST /predict`'s answer as the model's output tensors."""
    arrays: dict[str, np.ndarray] = {}
    for meta in outputs:
        if meta.name == "label":
            values = result["predictions"]
            if meta.datatype == "BYTES":
                arrays["label"] = np.array([str(v).encode() for v in values], dtype=np.object_)
            else:
                arrays["label"] = np.array(values, dtype=np.int64)
        elif meta.name == "probabilities":
            arrays[meta.name] = _floats(result["probabilities"], np.float64)
        elif meta.name == "prediction":
            arrays[meta.name] = _floats(result["predictions"], np.float64)
        elif meta.name == "action":
            arrays[meta.name] = np.array(result["actions"], dtype=np.int64)
        else:  # q_values
            arrays[meta.name] = _floats(result["q_values"], np.float32)
    return arrays


def _floats(values: Any, dtype: Any) -> np.ndarray:
    """JSON-safe answers hold None where a value was not finite: back to NaN."""
    return np.array(values, dtype=np.float64).astype(dtype)


def infer_answer(
    model_id: str, request: InferRequest, arrays: dict[str, np.ndarray], outputs: list[TensorMeta]
) -> tuple[bytes, int | None]:
    """The response body, and the JSON header's length when binary data follows it."""
    names = [meta.name for meta in outputs]
    wanted = request.wanted if request.wanted is not None else names
    unknown = [name for name in wanted if name not in names]
    if unknown:
        raise ProtocolError(f"unknown outputs {unknown}; the model gives {names}")
    described, blobs = [], []
    for meta in outputs:
        if meta.name not in wanted:
            continue
        array = arrays[meta.name]
        tensor: dict[str, Any] = {
            "name": meta.name,
            "datatype": meta.datatype,
            "shape": list(array.shape),
        }
        if request.all_binary or meta.name in request.binary_outputs:
            blob = _pack(array, meta.datatype)
            tensor["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        elif meta.datatype == "BYTES":
            tensor["data"] = [v.decode("utf-8", "replace") for v in array.reshape(-1)]
        else:
            tensor["data"] = json_safe(array.reshape(-1).tolist())
        described.append(tensor)
    answer: dict[str, Any] = {"model_name": model_id, "model_version": "1", "outputs": described}
    if request.id is not None:
        answer["id"] = request.id
    head = json.dumps(answer, allow_nan=False).encode()
    if not blobs:
        return head, None
    return head + b"".join(blobs), len(head)


def _pack(array: np.ndarray, datatype: str) -> bytes:
    if datatype == "BYTES":
        return b"".join(struct.pack("<I", len(v)) + v for v in array.reshape(-1))
    dtype = np.dtype(DTYPES[datatype]).newbyteorder("<")
    return np.ascontiguousarray(array, dtype=dtype).tobytes()
