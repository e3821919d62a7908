"""Checkpoints that never unpickle: tensors in safetensors, everything else in JSON.

A checkpoint is a folder ``checkpoints/step_XXXXXXX/`` holding ``state.safetensors`` (every
tensor: module weights, optimiser moments, RNG state) and ``state.json`` (the structure around
them, the step, and the sha256 of the tensor file). It is written to a temporary folder first and
renamed into place, and ``checkpoints/latest`` is replaced atomically after it, so a crash never
leaves a half-written checkpoint where a resume would find it.

Why not ``Accelerator.save_state``: it pickles optimiser and RNG state (``optimizer.bin``,
``random_states_*.pkl``), and loading a pickle can run arbitrary code.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from safetensors import SafetensorError

from genfw.errors import GenfwError

TENSOR_FILE = "state.safetensors"
META_FILE = "state.json"
LATEST = "latest"
FORMAT = 1


def flatten(obj: Any, tensors: dict[str, torch.Tensor], prefix: str = "") -> Any:
    """Replace every tensor in a nested dict/list by ``{"__tensor__": key}``; collect tensors."""
    if isinstance(obj, torch.Tensor):
        key = prefix.strip("/") or "_"
        tensors[key] = obj.detach().to("cpu").contiguous().clone()
        return {"__tensor__": key}
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, (str, int)):
                raise TypeError(f"cannot checkpoint a dict key of type {type(k).__name__}")
            # JSON keys are strings: remember int keys (optimiser state is keyed by int).
            sk = f"#{k}" if isinstance(k, int) else k
            out[sk] = flatten(v, tensors, f"{prefix}/{k}")
        return out
    if isinstance(obj, (list, tuple)):
        return [flatten(v, tensors, f"{prefix}/{i}") for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot checkpoint a value of type {type(obj).__name__}")


def unflatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"__tensor__"}:
            return tensors[obj["__tensor__"]]
        return {(int(k[1:]) if k.startswith("#") else k): unflatten(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [unflatten(v, tensors) for v in obj]
    return obj


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def save(ckpt_root: Path, step: int, state: dict[str, Any], keep: int = 2) -> Path:
    """Write ``state`` (nested dicts/lists of tensors and plain values) as the checkpoint of
    ``step``; point ``latest`` at it; remove all but the newest ``keep`` checkpoints."""
    ckpt_root.mkdir(parents=True, exist_ok=True)
    final = ckpt_root / f"step_{step:07d}"
    tmp = ckpt_root / f".tmp_step_{step:07d}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    tensors: dict[str, torch.Tensor] = {}
    tree = flatten(state, tensors)
    safetensors.torch.save_file(tensors, str(tmp / TENSOR_FILE))
    meta = {"format": FORMAT, "step": step, "sha256": sha256(tmp / TENSOR_FILE), "state": tree}
    (tmp / META_FILE).write_text(json.dumps(meta))
    if final.exists():  # the same step saved again (e.g. a resumed run ending where it started)
        shutil.rmtree(final)
    os.replace(tmp, final)
    _write_text_atomic(ckpt_root / LATEST, final.name + "\n")
    for old in sorted(p for p in ckpt_root.glob("step_*") if p.is_dir())[:-keep]:
        shutil.rmtree(old)
    return final


def find(ckpt_root: Path) -> Path:
    """The checkpoint ``latest`` points to."""
    pointer = ckpt_root / LATEST
    if not pointer.is_file():
        raise GenfwError(f"no checkpoint to resume from in {ckpt_root} (no '{LATEST}' file)")
    path = ckpt_root / pointer.read_text().strip()
    if not path.is_dir():
        raise GenfwError(f"checkpoint {path} named by {pointer} does not exist")
    return path


def load(path: Path) -> tuple[int, dict[str, Any]]:
    """Read a checkpoint folder: ``(step, state)``. Checks its hash; unpickles nothing."""
    meta_path, tensor_path = path / META_FILE, path / TENSOR_FILE
    others = sorted(p.name for p in path.parent.glob("step_*") if p != path)
    hint = f"; other checkpoints: {', '.join(others)}" if others else ""
    if not meta_path.is_file() or not tensor_path.is_file():
        raise GenfwError(f"checkpoint {path} is incomplete (needs {META_FILE} and {TENSOR_FILE}){hint}")
    try:
        meta = json.loads(meta_path.read_text())
        step, tree, digest = int(meta["step"]), meta["state"], meta["sha256"]
    except (ValueError, KeyError, TypeError) as exc:
        raise GenfwError(f"checkpoint {path} is corrupted: {META_FILE} is unreadable ({exc}){hint}") from None
    if sha256(tensor_path) != digest:
        raise GenfwError(
            f"checkpoint {path} is corrupted: {TENSOR_FILE} does not match its recorded sha256 "
            f"(truncated or modified){hint}"
        )
    try:
        tensors = safetensors.torch.load_file(str(tensor_path))
        return step, unflatten(tree, tensors)
    except (SafetensorError, KeyError, OSError) as exc:
        raise GenfwError(f"checkpoint {path} is corrupted: {exc}{hint}") from None


def save_weights(path: Path, modules: dict[str, torch.nn.Module]) -> None:
    """Module weights as one safetensors file, keys ``<module>.<param>``; written atomically."""
    tensors = {
        f"{name}.{k}": v.detach().to("cpu").contiguous().clone()
        for name, module in modules.items()
        for k, v in module.state_dict().items()
    }
    tmp = path.with_name(path.name + ".tmp")
    safetensors.torch.save_file(tensors, str(tmp))
    os.replace(tmp, path)


def load_weights(path: Path, modules: dict[str, torch.nn.Module]) -> None:
    """Load what :func:`save_weights` wrote into ``modules`` (strictly)."""
    if not path.is_file():
        raise GenfwError(f"weights file {path} does not exist")
    try:
        tensors = safetensors.torch.load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise GenfwError(f"weights file {path} is unreadable: {exc}") from None
    for name, module in modules.items():
        sub = {k[len(name) + 1 :]: v for k, v in tensors.items() if k.startswith(name + ".")}
        load_state(module, sub, f"{path} [{name}]")


def load_state(module: torch.nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "mismatch"
        raise GenfwError(f"{where} does not match the model built from the run's config ({first})") from None
