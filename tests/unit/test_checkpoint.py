"""Checkpoints: safetensors + JSON round trips, optimizer state, integrity and atomic writes."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import struct
from pathlib import Path
from typing import Any

import pydantic
import pytest
import torch
from safetensors import safe_open
from torch import nn

import models.checkpoint as checkpoint_module
from models.checkpoint import (
    CorruptCheckpointError,
    flatten_optimizer_state,
    load_checkpoint,
    restore_optimizer_state,
    save_checkpoint,
    sha256_file,
)
from models.optimizers import build_optimizer
from models.specs import OptimizerSpec

OPTIMIZERS: list[dict[str, Any]] = [
    {"name": "sgd", "lr": 0.05, "weight_decay": 0.01},
    {"name": "momentum", "lr": 0.05, "momentum": 0.9, "dampening": 0.1},
    {"name": "nesterov", "lr": 0.05, "momentum": 0.9},
    {"name": "adagrad", "lr": 0.1, "lr_decay": 0.01, "initial_accumulator_value": 0.1},
    {"name": "rmsprop", "lr": 0.01, "momentum": 0.5, "centered": True},
    {"name": "adam", "lr": 0.01, "betas": [0.8, 0.95], "amsgrad": True},
    {"name": "adam", "lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True},
]


def _spec(raw: dict[str, Any]) -> OptimizerSpec:
    return pydantic.TypeAdapter(OptimizerSpec).validate_python(raw)


def _net(seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))


def _batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 + step)
    return torch.randn(16, 4, generator=g), torch.randn(16, 2, generator=g)  # (B, 4), (B, 2)


def _train(net: nn.Module, optimizer: torch.optim.Optimizer, steps: range) -> None:
    net.train()
    for step in steps:
        x, y = _batch(step)
        optimizer.zero_grad(set_to_none=True)
        nn.functional.mse_loss(net(x), y).backward()
        optimizer.step()


def _state(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach() for k, v in net.state_dict().items()}


def _assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        assert torch.equal(a[key], b[key]), key


# --- model round trip ------------------------------------------------------------------------


def test_model_round_trip_includes_buffers(tmp_path: Path) -> None:
    net = _net(0)
    _train(net, torch.optim.SGD(net.parameters(), lr=0.1), range(3))  # moves running stats
    path = tmp_path / "epoch-00003.safetensors"
    meta = {"epoch": 3, "metrics": {"val_loss": 0.25, "labels": ["a", "b"]}, "note": None}

    digest = save_checkpoint(path, model_state=_state(net), optimizer=None, meta=meta)
    loaded = load_checkpoint(path, expected_sha256=digest)

    assert {"1.running_mean", "1.running_var", "1.num_batches_tracked"} <= loaded.model_state.keys()
    assert loaded.model_state["1.num_batches_tracked"].item() == 3
    _assert_same_state(loaded.model_state, _state(net))
    assert loaded.optimizer_tensors == {}
    assert loaded.meta == meta

    fresh = _net(1)
    fresh.load_state_dict(loaded.model_state)  # strict: every parameter and buffer present
    x, _ = _batch(99)
    net.eval()
    fresh.eval()
    assert torch.equal(net(x), fresh(x))


def test_tied_and_non_contiguous_tensors_are_stored(tmp_path: Path) -> None:
    weight = torch.randn(3, 5)
    state = {"a": weight, "tied": weight, "transposed": weight.t(), "row": weight[1]}
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, model_state=state, optimizer=None, meta={})
    loaded = load_checkpoint(path).model_state
    for key, tensor in state.items():
        assert torch.equal(loaded[key], tensor), key


# --- optimizer round trip --------------------------------------------------------------------


def _resumed_pair(
    raw: dict[str, Any], tmp_path: Path | None
) -> tuple[nn.Module, torch.optim.Optimizer, nn.Module, torch.optim.Optimizer]:
    """A net trained 3 steps, and a fresh net + optimizer restored from its checkpoint (through
    a file when tmp_path is given, else in memory)."""
    net = _net(0)
    optimizer = build_optimizer(_spec(raw), net.parameters())
    _train(net, optimizer, range(3))

    fresh = _net(1)
    fresh_optimizer = build_optimizer(_spec(raw), fresh.parameters())
    if tmp_path is None:
        tensors, optim_meta = flatten_optimizer_state(optimizer)
        fresh.load_state_dict(_state(net))
        restore_optimizer_state(fresh_optimizer, tensors, json.loads(json.dumps(optim_meta)))
    else:
        path = tmp_path / "epoch-00003.safetensors"
        digest = save_checkpoint(path, model_state=_state(net), optimizer=optimizer, meta={})
        loaded = load_checkpoint(path, expected_sha256=digest)
        fresh.load_state_dict(loaded.model_state)
        restore_optimizer_state(fresh_optimizer, loaded.optimizer_tensors, loaded.meta)
    return net, optimizer, fresh, fresh_optimizer


@pytest.mark.parametrize("through_file", [True, False], ids=["file", "memory"])
@pytest.mark.parametrize("raw", OPTIMIZERS, ids=lambda r: "-".join(map(str, r.values())))
def test_optimizer_round_trip(raw: dict[str, Any], through_file: bool, tmp_path: Path) -> None:
    net, optimizer, fresh, fresh_optimizer = _resumed_pair(raw, tmp_path if through_file else None)
    before = _state(net)["0.weight"].clone()

    _train(net, optimizer, range(3, 5))
    _train(fresh, fresh_optimizer, range(3, 5))

    assert not torch.equal(_state(net)["0.weight"], before)  # the two steps did move it
    _assert_same_state(_state(fresh), _state(net))
    assert fresh_optimizer.param_groups[0].keys() == optimizer.param_groups[0].keys()
    for key, value in optimizer.param_groups[0].items():
        if key != "params":
            assert fresh_optimizer.param_groups[0][key] == value, key
            assert type(fresh_optimizer.param_groups[0][key]) is type(value), key  # betas tuple


def test_optimizer_tensors_are_named_by_index_and_key(tmp_path: Path) -> None:
    net = _net(0)
    optimizer = build_optimizer(_spec({"name": "adam"}), net.parameters())
    _train(net, optimizer, range(1))
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, model_state=_state(net), optimizer=optimizer, meta={"epoch": 1})
    loaded = load_checkpoint(path)
    assert {
        "optim.0.exp_avg",
        "optim.0.exp_avg_sq",
        "optim.0.step",
    } <= loaded.optimizer_tensors.keys()
    assert loaded.meta["epoch"] == 1
    assert loaded.meta["optimizer"]["param_groups"][0]["betas"] == [0.9, 0.999]


def test_restore_refuses_mismatched_groups() -> None:
    net = _net(0)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    tensors, meta = flatten_optimizer_state(optimizer)
    two_groups = torch.optim.SGD(
        [{"params": net[0].parameters()}, {"params": net[3].parameters()}], lr=0.1
    )
    with pytest.raises(ValueError, match="param groups"):
        restore_optimizer_state(two_groups, tensors, meta)
    with pytest.raises(ValueError, match="no optimizer state"):
        restore_optimizer_state(optimizer, tensors, {"epoch": 1})


def test_meta_key_optimizer_is_reserved(tmp_path: Path) -> None:
    net = _net(0)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="reserved"):
        save_checkpoint(
            tmp_path / "c.safetensors", model_state={}, optimizer=optimizer, meta={"optimizer": 1}
        )


# --- file format and integrity ---------------------------------------------------------------


def test_file_is_plain_safetensors(tmp_path: Path) -> None:
    net = _net(0)
    optimizer = build_optimizer(_spec({"name": "momentum"}), net.parameters())
    _train(net, optimizer, range(2))
    path = tmp_path / "epoch-00002.safetensors"
    digest = save_checkpoint(path, model_state=_state(net), optimizer=optimizer, meta={"epoch": 2})

    raw = path.read_bytes()
    assert digest == hashlib.sha256(raw).hexdigest() == sha256_file(path)
    # Format: u64 little-endian header size, JSON header, then the tensor bytes.
    (header_size,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + header_size])
    names = set(header) - {"__metadata__"}
    assert all(n.startswith(("model.", "optim.")) for n in names)
    assert header["model.0.weight"]["dtype"] == "F32"
    assert header["model.0.weight"]["shape"] == [8, 4]
    assert "optim.0.momentum_buffer" in names
    with safe_open(path, framework="pt") as f:
        assert set(f.keys()) == names

    sidecar = json.loads(path.with_suffix(".json").read_text())
    assert sidecar["epoch"] == 2
    assert sidecar["optimizer"]["param_groups"][0]["momentum"] == 0.9
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "epoch-00002.json",
        "epoch-00002.safetensors",
    ]


def test_sha_mismatch_raises(tmp_path: Path) -> None:
    path = tmp_path / "c.safetensors"
    digest = save_checkpoint(path, model_state={"w": torch.ones(3)}, optimizer=None, meta={})
    with pytest.raises(CorruptCheckpointError, match="sha256"):
        load_checkpoint(path, expected_sha256="0" * 64)
    load_checkpoint(path, expected_sha256=digest.upper())  # hex case does not matter

    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF  # flip one bit pattern in the tensor data
    path.write_bytes(bytes(raw))
    with pytest.raises(CorruptCheckpointError):
        load_checkpoint(path, expected_sha256=digest)


def test_garbage_files_raise_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, model_state={"w": torch.ones(3)}, optimizer=None, meta={})
    path.with_suffix(".json").write_text("{not json")
    with pytest.raises(CorruptCheckpointError):
        load_checkpoint(path)
    path.write_bytes(b"\x80\x04pickle")
    with pytest.raises(CorruptCheckpointError, match="safetensors"):
        load_checkpoint(path)


def test_non_finite_meta_is_refused_before_writing(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        save_checkpoint(
            tmp_path / "c.safetensors", model_state={}, optimizer=None, meta={"loss": float("nan")}
        )
    assert list(tmp_path.iterdir()) == []


# --- atomic writes ---------------------------------------------------------------------------


def _save(path: Path, value: float, epoch: int) -> str:
    return save_checkpoint(
        path, model_state={"w": torch.full((4,), value)}, optimizer=None, meta={"epoch": epoch}
    )


def test_leftover_temp_files_do_not_affect_loading(tmp_path: Path) -> None:
    first = tmp_path / "epoch-00001.safetensors"
    digest = _save(first, 1.0, 1)
    # What a worker killed while writing epoch 2 leaves behind: half-written temp files.
    (tmp_path / ".epoch-00002.json.k3j2.tmp").write_text('{"epoch": 2, "opt')
    (tmp_path / ".epoch-00002.safetensors.x81q.tmp").write_bytes(b"\x10\x00\x00\x00garbage")

    loaded = load_checkpoint(first, expected_sha256=digest)
    assert torch.equal(loaded.model_state["w"], torch.full((4,), 1.0))
    assert loaded.meta == {"epoch": 1}
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "epoch-00002.safetensors")

    second = tmp_path / "epoch-00002.safetensors"  # the retry writes over the leftovers' names
    assert load_checkpoint(second, expected_sha256=_save(second, 2.0, 2)).meta == {"epoch": 2}


def test_failed_write_keeps_previous_file_and_cleans_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "model.safetensors"
    digest = _save(path, 1.0, 1)

    def crash(tensors: dict[str, torch.Tensor], filename: str, **_: Any) -> None:
        Path(filename).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_module, "save_file", crash)
    with pytest.raises(OSError, match="disk full"):
        _save(path, 2.0, 2)
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".tmp"]
    assert sha256_file(path) == digest
    assert torch.equal(load_checkpoint(path).model_state["w"], torch.full((4,), 1.0))


def test_crash_between_renames_is_detected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "model.safetensors"
    digest = _save(path, 1.0, 1)
    real_replace = checkpoint_module.os.replace

    def replace_sidecar_only(src: str, dst: str) -> None:
        if str(dst).endswith(".safetensors"):
            raise KeyboardInterrupt  # the process dies after the sidecar's rename
        real_replace(src, dst)

    monkeypatch.setattr(checkpoint_module.os, "replace", replace_sidecar_only)
    with pytest.raises(KeyboardInterrupt):
        _save(path, 2.0, 2)
    monkeypatch.undo()

    # Old weights (whose digest the caller recorded) beside the new sidecar: refused.
    assert sha256_file(path) == digest
    with pytest.raises(CorruptCheckpointError, match="does not belong"):
        load_checkpoint(path, expected_sha256=digest)


def test_files_get_the_usual_permissions(tmp_path: Path) -> None:
    path = tmp_path / "c.safetensors"
    _save(path, 1.0, 1)
    umask = os.umask(0)
    os.umask(umask)
    for file in (path, path.with_suffix(".json")):
        assert stat.S_IMODE(file.stat().st_mode) == 0o666 & ~umask, file


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_optimizer_round_trip(tmp_path: Path) -> None:
    cuda = torch.device("cuda")
    raw = {"name": "adam", "lr": 0.01, "amsgrad": True}
    net = _net(0).to(cuda)
    optimizer = build_optimizer(_spec(raw), net.parameters())
    _train_on(net, optimizer, range(3), cuda)
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, model_state=_state(net), optimizer=optimizer, meta={})

    loaded = load_checkpoint(path)
    assert all(t.device.type == "cpu" for t in loaded.optimizer_tensors.values())
    fresh = _net(1).to(cuda)
    fresh.load_state_dict(loaded.model_state)
    fresh_optimizer = build_optimizer(_spec(raw), fresh.parameters())
    restore_optimizer_state(fresh_optimizer, loaded.optimizer_tensors, loaded.meta)
    _train_on(net, optimizer, range(3, 5), cuda)
    _train_on(fresh, fresh_optimizer, range(3, 5), cuda)
    for key, value in _state(net).items():
        torch.testing.assert_close(_state(fresh)[key], value, rtol=1e-6, atol=1e-7)


def _train_on(
    net: nn.Module, optimizer: torch.optim.Optimizer, steps: range, device: torch.device
) -> None:
    net.train()
    for step in steps:
        x, y = (t.to(device) for t in _batch(step))
        optimizer.zero_grad(set_to_none=True)
        nn.functional.mse_loss(net(x), y).backward()
        optimizer.step()
