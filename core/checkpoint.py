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
import re
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
STEP_NAME = re.compile(r"step_(\d+)")  # a checkpoint folder's name: step_0001000


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


def step_dirs(ckpt_root: Path) -> list[str]:
    """The names of the checkpoint folders (``step_*``) in ``ckpt_root``, oldest first."""
    if not ckpt_root.is_dir():
        return []
    return sorted(p.name for p in ckpt_root.iterdir() if STEP_NAME.fullmatch(p.name) and p.is_dir())


def is_empty(ckpt_root: Path) -> bool:
    """True where a run has written no checkpoint yet: no ``latest`` and no ``step_*`` folder
    (a ``.tmp_step_*`` folder is a first checkpoint that was never completed)."""
    return not (ckpt_root / LATEST).exists() and not step_dirs(ckpt_root)


def find(ckpt_root: Path) -> Path:
    """The checkpoint ``latest`` points to; it must be a ``step_*`` folder inside ``ckpt_root``."""
    pointer = ckpt_root / LATEST
    names = step_dirs(ckpt_root)
    there = f"; {ckpt_root} holds {', '.join(names)}" if names else ""
    if not pointer.is_file():
        if names:
            raise GenfwError(f"{pointer} is missing{there}; write the name of the one to use into {pointer}")
        raise GenfwError(f"no checkpoint in {ckpt_root} (no '{LATEST}' file and no step_* folder)")
    name = pointer.read_text(errors="replace").strip()
    path = ckpt_root / name
    if not STEP_NAME.fullmatch(name) or path.resolve().parent != ckpt_root.resolve():
        raise GenfwError(
            f"{pointer} names {name[:80]!r}, which is not a checkpoint of this run: it must name a "
            f"step_NNNNNNN folder inside {ckpt_root}{there}"
        )
    if not path.is_dir():
        raise GenfwError(f"checkpoint {path} named by {pointer} does not exist{there}")
    return path


def others(path: Path) -> str:
    """``"; other checkpoints: step_..."``, naming the run's checkpoints but ``path`` (or ``""``)."""
    names = [n for n in step_dirs(path.parent) if n != path.name]
    return f"; other checkpoints: {', '.join(names)}" if names else ""


def load(path: Path) -> tuple[int, dict[str, Any]]:
    """Read a checkpoint folder: ``(step, state)``. Checks its hash and the frame of its
    ``state.json`` (format, a step that agrees with the folder's name); unpickles nothing. What
    the state holds is checked against the model by the caller (:func:`check_module_state`,
    :func:`check_optimizer_state`)."""
    meta_path, tensor_path = path / META_FILE, path / TENSOR_FILE
    hint = others(path)
    if not meta_path.is_file() or not tensor_path.is_file():
        raise GenfwError(f"checkpoint {path} is incomplete (needs {META_FILE} and {TENSOR_FILE}){hint}")
    try:
        meta = json.loads(meta_path.read_text())
        step, tree, digest = meta["step"], meta["state"], meta["sha256"]
        fmt = meta.get("format")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise GenfwError(f"checkpoint {path} is corrupted: {META_FILE} is unreadable ({exc}){hint}") from None
    named = STEP_NAME.fullmatch(path.name)
    problem = ""
    if fmt != FORMAT:
        problem = f"format {fmt!r} (this genfw reads {FORMAT})"
    elif type(step) is not int or step < 0:
        problem = f"step {step!r} is not a step number"
    elif named and int(named.group(1)) != step:
        problem = f"step {step} disagrees with the folder's name"
    elif not isinstance(tree, dict) or not isinstance(digest, str):
        problem = "'state' must be a mapping and 'sha256' a string"
    if problem:
        raise GenfwError(f"checkpoint {path} is corrupted: {META_FILE}: {problem}{hint}")
    if sha256(tensor_path) != digest:
        raise GenfwError(
            f"checkpoint {path} is corrupted: {TENSOR_FILE} does not match its recorded sha256 "
            f"(truncated or modified){hint}"
        )
    try:
        tensors = safetensors.torch.load_file(str(tensor_path))
        return step, unflatten(tree, tensors)
    except (SafetensorError, KeyError, OSError, TypeError, ValueError) as exc:
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


# --- checking what a checkpoint holds, before anything is loaded -----------------------------------


def non_finite(tree: Any, prefix: str = "") -> list[str]:
    """The paths (``a/b/c``) of the floating-point tensors in a nested dict/list that hold a NaN or
    an infinity; one device sync per device, whatever the number of tensors."""
    found: list[tuple[str, torch.Tensor]] = []

    def walk(obj: Any, path: str) -> None:
        if isinstance(obj, torch.Tensor):
            if obj.is_floating_point() or obj.is_complex():
                found.append((path, obj))
        elif isinstance(obj, dict):
            for k, v in obj.items():
                walk(v, f"{path}/{k}" if path else str(k))
        elif isinstance(obj, (list, tuple)):
            for i, v in enumerate(obj):
                walk(v, f"{path}/{i}" if path else str(i))

    walk(tree, prefix)
    bad: list[str] = []
    for device in {t.device for _, t in found}:
        group = [(p, t) for p, t in found if t.device == device]
        flags = torch.stack([torch.isfinite(t).all() for _, t in group]).tolist()
        bad += [p for (p, _), ok in zip(group, flags, strict=True) if not ok]
    return sorted(bad)


def _kind(value: Any) -> str:
    if value is None or isinstance(value, bool):
        return "flag"  # torch keeps some switches as None or a bool (foreach, fused)
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, (list, tuple)):
        return "sequence"
    return type(value).__name__


def _mismatch(where: str, detail: str) -> GenfwError:
    return GenfwError(f"{where} does not match the model built from the run's config ({detail})")


def _check_tensor(got: Any, shape: torch.Size, dtype: torch.dtype | None, where: str, key: str) -> None:
    if not isinstance(got, torch.Tensor):
        raise _mismatch(where, f"{key} is a {type(got).__name__}, not a tensor")
    if got.shape != shape or (dtype is not None and got.dtype != dtype):
        raise _mismatch(
            where,
            f"{key} is {got.dtype} {list(got.shape)}, the model's is {dtype or got.dtype} {list(shape)}",
        )


def check_module_state(module: torch.nn.Module, state: Any, where: str) -> None:
    """``state`` has exactly the keys of ``module.state_dict()``, each a tensor of its shape."""
    expected = module.state_dict()
    if not isinstance(state, dict):
        raise _mismatch(where, f"its weights are a {type(state).__name__}, not a mapping of names to tensors")
    missing = [k for k in expected if k not in state]
    extra = [str(k) for k in state if k not in expected]
    if missing or extra:
        what = f"missing {', '.join(missing[:3])}" if missing else f"unexpected {', '.join(extra[:3])}"
        raise _mismatch(where, what)
    for key, want in expected.items():
        if isinstance(want, torch.Tensor):
            _check_tensor(state[key], want.shape, None, where, key)


def check_optimizer_state(optimizer: torch.optim.Optimizer, state: Any, where: str) -> None:
    """``state`` is what ``optimizer.state_dict()`` would give for these parameters: the same
    groups of the same sizes with hyper-parameters of the same kinds, and per parameter floating
    tensors: a scalar ``step`` and moments of the parameter's shape (Adam, RMSprop, SGD)."""
    optimizer = getattr(optimizer, "optimizer", optimizer)  # Accelerate's wrapper
    groups = optimizer.param_groups
    if not isinstance(state, dict) or not isinstance(state.get("state"), dict):
        raise _mismatch(where, "optimiser state must be a mapping with 'state' and 'param_groups'")
    saved = state.get("param_groups")
    if not isinstance(saved, list) or len(saved) != len(groups):
        raise _mismatch(where, f"'param_groups' must be a list of {len(groups)} group(s)")
    params: dict[Any, torch.Tensor] = {}
    for i, (group, mine) in enumerate(zip(saved, groups, strict=True)):
        if not isinstance(group, dict) or not isinstance(group.get("params"), list):
            raise _mismatch(where, f"param group {i} must be a mapping with a list 'params'")
        if any(type(index) is not int for index in group["params"]):
            raise _mismatch(where, f"param group {i}: 'params' must list parameter numbers")
        if len(group["params"]) != len(mine["params"]):
            raise _mismatch(
                where,
                f"param group {i} has {len(group['params'])} parameters, the model's {len(mine['params'])}",
            )
        params.update(zip(group["params"], mine["params"], strict=True))
        for key, value in mine.items():
            if key == "params" or key not in group:
                continue
            got = group[key]
            if _kind(got) != _kind(value) or (
                _kind(value) == "sequence"
                and (len(got) != len(value) or any(_kind(g) != "number" for g in got))
            ):
                raise _mismatch(where, f"param group {i}: {key} is {got!r}, not like {value!r}")
    for index, per_param in state["state"].items():
        if index not in params:
            raise _mismatch(where, f"optimiser state for parameter {index!r}, which no group lists")
        if not isinstance(per_param, dict):
            raise _mismatch(where, f"optimiser state of parameter {index} is not a mapping")
        shape = params[index].shape
        for key, value in per_param.items():
            if isinstance(value, torch.Tensor):
                want = torch.Size([]) if key == "step" else shape  # a step count, or a moment
                if value.shape != want:
                    raise _mismatch(
                        where, f"parameter {index}: {key} has shape {list(value.shape)}, not {list(want)}"
                    )
                if not (value.is_floating_point() or value.is_complex()):
                    raise _mismatch(where, f"parameter {index}: {key} is {value.dtype}, not floating point")
            elif _kind(value) not in ("flag", "number"):
                raise _mismatch(where, f"parameter {index}: {key} is a {type(value).__name__}")
