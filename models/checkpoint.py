"""Checkpoints on disk: tensors in one safetensors file, everything else in a JSON sidecar.

Nothing is pickled, so loading a checkpoint cannot run code. Layout for `epoch-00003.safetensors`:

    epoch-00003.safetensors   model tensors as `model.<name>`, optimizer tensors as
                              `optim.<param_index>.<key>` (e.g. `optim.0.exp_avg`)
    epoch-00003.json          the caller's `meta`, plus under "optimizer" the optimizer's
                              non-tensor state and its param_groups

Both files are written in full to temporary names in the same directory and fsynced, then
renamed into place, sidecar first, so a failed or interrupted write never leaves half a file
under a checkpoint's name. The weights file's header holds the sidecar's sha256, so the
digest `save_checkpoint` returns (which the caller records once it returns) vouches for both
files; a weights file beside a sidecar it was not written with (a crash between the two
renames) raises `CorruptCheckpointError` on load.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

MODEL_PREFIX = "model."
OPTIM_PREFIX = "optim."
OPTIMIZER_META_KEY = "optimizer"
SIDECAR_DIGEST_KEY = "sidecar_sha256"  # in the safetensors header's __metadata__
_CHUNK = 1 << 20  # 1 MiB
_JSON_SCALARS = (bool, int, float, str, type(None))


class CorruptCheckpointError(RuntimeError):
    """The checkpoint on disk is not the one recorded, or cannot be parsed."""


@dataclass
class Checkpoint:
    model_state: dict[str, torch.Tensor]  # names without the `model.` prefix, on CPU
    optimizer_tensors: dict[str, torch.Tensor]  # `optim.<param_index>.<key>`, on CPU
    meta: dict[str, Any]  # the sidecar: the caller's meta plus "optimizer" when one was saved


# --- optimizer state -------------------------------------------------------------------------


def _json_group_value(key: str, value: Any) -> Any:
    if isinstance(value, _JSON_SCALARS):
        return value
    if isinstance(value, list | tuple) and all(isinstance(v, _JSON_SCALARS) for v in value):
        return list(value)  # betas: tuple -> list; turned back into a tuple on restore
    raise TypeError(
        f"optimizer param_group entry {key!r} of type {type(value).__name__} "
        "cannot be stored as JSON"
    )


def flatten_optimizer_state(
    optimizer: torch.optim.Optimizer,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split `optimizer.state_dict()` into tensors (`optim.<param_index>.<key>`) and a JSON-able
    dict {"state": {index: {key: scalar}}, "param_groups": [...]}.

    The tensors are the optimizer's own (not copies): save them before the next step.
    """
    state_dict = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entries in state_dict["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{OPTIM_PREFIX}{index}.{key}"] = value.detach()
            elif isinstance(value, _JSON_SCALARS):
                scalars.setdefault(str(index), {})[key] = value
            else:
                raise TypeError(
                    f"optimizer state {key!r} of type {type(value).__name__} "
                    "is neither a tensor nor a JSON scalar"
                )
    groups = [
        {key: _json_group_value(key, value) for key, value in group.items()}
        for group in state_dict["param_groups"]
    ]
    return tensors, {"state": scalars, "param_groups": groups}


def _optimizer_part(meta: Mapping[str, Any]) -> Mapping[str, Any]:
    if "param_groups" in meta:
        return meta
    part = meta.get(OPTIMIZER_META_KEY)
    if not isinstance(part, Mapping) or "param_groups" not in part:
        raise ValueError("meta holds no optimizer state (no 'param_groups')")
    return part


def restore_optimizer_state(
    optimizer: torch.optim.Optimizer,
    tensors: Mapping[str, torch.Tensor],
    meta: Mapping[str, Any],
) -> None:
    """Load what `flatten_optimizer_state` produced back into `optimizer`.

    `meta` is either the optimizer's JSON part or a checkpoint's meta holding it under
    "optimizer". The optimizer must have been built over the same parameters, in order.
    """
    part = _optimizer_part(meta)
    state: dict[int, dict[str, Any]] = {}
    for name, tensor in tensors.items():
        if not name.startswith(OPTIM_PREFIX):
            raise ValueError(f"optimizer tensor {name!r} lacks the {OPTIM_PREFIX!r} prefix")
        index, _, key = name[len(OPTIM_PREFIX) :].partition(".")
        # Cloned so the restored optimizer never updates a tensor someone else holds.
        state.setdefault(int(index), {})[key] = tensor.clone()
    for index, entries in part.get("state", {}).items():
        state.setdefault(int(index), {}).update(entries)

    saved_groups = part["param_groups"]
    if len(saved_groups) != len(optimizer.param_groups):
        raise ValueError(
            f"checkpoint has {len(saved_groups)} param groups, "
            f"the optimizer {len(optimizer.param_groups)}"
        )
    groups = []
    for saved, live in zip(saved_groups, optimizer.param_groups, strict=True):
        # JSON has no tuples; give back the type the live optimizer uses (e.g. Adam's betas).
        groups.append(
            {
                key: tuple(value) if isinstance(live.get(key), tuple) else value
                for key, value in saved.items()
            }
        )
    optimizer.load_state_dict({"state": state, "param_groups": groups})


# --- files -----------------------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _storable(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU, contiguous tensors that share no storage (safetensors refuses shared storage,
    which tied weights or several views of one buffer would otherwise have)."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, tensor in tensors.items():
        t = tensor.detach().cpu().contiguous()
        if t.numel() > 0:
            ptr = t.untyped_storage().data_ptr()
            if ptr in seen:
                t = t.clone()
            else:
                seen.add(ptr)
        out[name] = t
    return out


def fsync_path(path: Path) -> None:
    """Flush a file's data (or a directory's entries) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def _temp_beside(final: Path) -> Iterator[Path]:
    """A fresh temporary path in `final`'s directory (so the rename is atomic), removed on
    error. Created with open(mode "x") rather than mkstemp, whose 0600 mode would follow the
    file onto its final name and hide it from a server running as another user."""
    tmp = final.parent / f".{final.name}.{secrets.token_hex(8)}.tmp"
    tmp.open("xb").close()
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_text(text: str, path: Path) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def write_atomic(path: Path, body: bytes) -> None:
    """`body` at `path`, whole or not at all: written beside it, fsynced, renamed into place,
    and the rename made durable."""
    with _temp_beside(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    fsync_path(path.parent)


def sidecar_path(path: Path) -> Path:
    return path.with_suffix(".json")


def save_checkpoint(
    path: Path,
    *,
    model_state: Mapping[str, torch.Tensor],
    optimizer: torch.optim.Optimizer | None,
    meta: Mapping[str, Any],
) -> str:
    """Write `path` (safetensors) and its JSON sidecar atomically; returns the sha256 of `path`."""
    if path.suffix == ".json":
        raise ValueError(f"{path} would be its own JSON sidecar; use a .safetensors name")
    tensors = {f"{MODEL_PREFIX}{name}": t for name, t in model_state.items()}
    sidecar = dict(meta)
    if optimizer is not None:
        if OPTIMIZER_META_KEY in sidecar:
            raise ValueError(f"meta key {OPTIMIZER_META_KEY!r} is reserved for the optimizer")
        optim_tensors, sidecar[OPTIMIZER_META_KEY] = flatten_optimizer_state(optimizer)
        tensors.update(optim_tensors)
    # Serialised before any file is touched, so a bad meta leaves the directory as it was.
    # Strict JSON: NaN/inf would make the sidecar unreadable to other tools (use json_safe).
    text = json.dumps(sidecar, allow_nan=False, indent=1)
    storable = _storable(tensors)
    # The weights file names its sidecar's digest, so the one sha256 the caller records covers
    # both files, and an old weights file beside a newer sidecar is detected on load.
    header = {SIDECAR_DIGEST_KEY: hashlib.sha256(text.encode()).hexdigest()}

    path.parent.mkdir(parents=True, exist_ok=True)
    # Both files are complete on disk before either is renamed, so a failed write (a full
    # disk, say) leaves the previous checkpoint at `path` whole.
    with _temp_beside(sidecar_path(path)) as json_tmp, _temp_beside(path) as weights_tmp:
        _write_text(text, json_tmp)
        save_file(storable, weights_tmp, metadata=header)
        # safetensors recreates the file as 0600; give it the umask's mode like the sidecar.
        shutil.copymode(json_tmp, weights_tmp)
        fsync_path(weights_tmp)
        digest = sha256_file(weights_tmp)
        os.replace(json_tmp, sidecar_path(path))
        os.replace(weights_tmp, path)
    fsync_path(path.parent)  # make both renames durable
    return digest


def _read_sidecar(path: Path, expected_sha256: str | None) -> dict[str, Any]:
    raw = path.read_bytes()
    if expected_sha256 is not None and hashlib.sha256(raw).hexdigest() != expected_sha256:
        raise CorruptCheckpointError(f"{path}: does not belong to its weights file")
    try:
        meta = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptCheckpointError(f"{path}: not JSON ({exc})") from exc
    if not isinstance(meta, dict):
        raise CorruptCheckpointError(f"{path}: expected a JSON object")
    return meta


def load_checkpoint(path: Path, *, expected_sha256: str | None = None) -> Checkpoint:
    """Read a checkpoint written by `save_checkpoint`; tensors land on the CPU.

    Raises CorruptCheckpointError when the digest differs from `expected_sha256`, the sidecar
    is not the one written with the weights, or a file cannot be parsed; FileNotFoundError
    when a file is missing.
    """
    if expected_sha256 is not None:
        actual = sha256_file(path)
        if actual != expected_sha256.lower():
            raise CorruptCheckpointError(
                f"{path}: sha256 {actual} differs from the recorded {expected_sha256}"
            )
    try:
        with safe_open(path, framework="pt") as f:
            header = f.metadata() or {}
        tensors = load_file(path)
    except SafetensorError as exc:
        raise CorruptCheckpointError(f"{path}: not a safetensors file ({exc})") from exc
    meta = _read_sidecar(sidecar_path(path), header.get(SIDECAR_DIGEST_KEY))

    model_state: dict[str, torch.Tensor] = {}
    optimizer_tensors: dict[str, torch.Tensor] = {}
    for name, tensor in tensors.items():
        if name.startswith(MODEL_PREFIX):
            model_state[name[len(MODEL_PREFIX) :]] = tensor
        elif name.startswith(OPTIM_PREFIX):
            optimizer_tensors[name] = tensor
        else:
            raise CorruptCheckpointError(f"{path}: unexpected tensor name {name!r}")
    return Checkpoint(model_state, optimizer_tensors, meta)


def prefixed(
    state: dict[str, torch.Tensor], prefix: str, device: torch.device
) -> dict[str, torch.Tensor]:
    """The tensors of `state` saved under `prefix` ("net.", "best.", "online."), with the
    prefix taken off and moved to `device`: one checkpoint holds several state dicts."""
    return {k[len(prefix) :]: v.to(device) for k, v in state.items() if k.startswith(prefix)}
