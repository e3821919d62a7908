"""The run folder: checks before a run writes, the resolved config and run.json, TensorBoard's
hyper-parameters, and reading a finished run back (config, weights) for ``sample`` and ``eval``."""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import attrs
import torch
import yaml
from torch import nn

import genfw
from genfw import checkpoint
from genfw.assemble import Built, build, build_model
from genfw.config import RunConfig
from genfw.errors import GenfwError
from genfw.model import DataInfo, Model, Modules
from genfw.registry import ComponentSpec, structure_options

CONFIG_FILE = "config.yaml"
RUN_FILE = "run.json"
METRICS_FILE = "metrics.jsonl"
EXPORT_FILE = "generator.safetensors"


def check_run_dir(run_dir: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse to write into an existing run unless asked to, or where no folder can be made.
    Leaves everything as it was."""
    if resume:
        if not (run_dir / CONFIG_FILE).is_file():
            raise GenfwError(f"cannot resume: {run_dir} is not a genfw run folder (no {CONFIG_FILE})")
        return
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        if not overwrite:
            raise GenfwError(
                f"run folder {run_dir} already exists; pass --resume to continue it, "
                f"--overwrite to replace it, or choose another --out"
            )
        if not (run_dir / CONFIG_FILE).is_file():
            raise GenfwError(
                f"refusing to overwrite {run_dir}: it is not a genfw run folder (no {CONFIG_FILE}); "
                f"choose another --out"
            )
    _check_writable(run_dir, into=run_dir.is_dir() and not overwrite)


def _check_writable(run_dir: Path, *, into: bool) -> None:
    """Refuse a run folder that cannot be made (under a file, in a read-only place) now, before
    the data set is built, rather than after. ``into``: the run writes inside an existing (empty)
    ``run_dir``; otherwise it creates ``run_dir`` in its nearest existing ancestor. A probe folder
    is made there and removed: permissions alone do not tell (root, read-only mounts, /proc)."""
    import tempfile

    place = run_dir if into else run_dir.parent
    while not place.exists() and place != place.parent:
        place = place.parent
    if not place.is_dir():
        raise GenfwError(
            f"cannot create run folder {run_dir}: {place} is a file, not a folder; choose another --out"
        )
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".genfw-write-check-", dir=place))
    except OSError as exc:
        raise GenfwError(
            f"cannot create run folder {run_dir}: cannot write in {place} ({exc.strerror}); choose another --out"
        ) from None


def create_run_dir(run_dir: Path, *, resume: bool, overwrite: bool) -> None:
    """After :func:`check_run_dir` and a successful build: replace (``overwrite``) or create."""
    if resume:
        return
    if overwrite and run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)


def json_safe(record: dict[str, Any]) -> dict[str, Any]:
    """Non-finite floats as ``null``: strict JSON readers reject ``NaN``."""
    return {k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in record.items()}


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def write_config(run_dir: Path, cfg: RunConfig) -> None:
    (run_dir / CONFIG_FILE).write_text(yaml.safe_dump(_plain(cfg.to_dict()), sort_keys=False))


def flat_config(cfg: RunConfig) -> dict[str, Any]:
    """The resolved config as ``{"variant.latent_dim": 64, "train.steps": 3000, ...}``; lists and
    other values TensorBoard cannot show as a hyper-parameter become strings."""
    out: dict[str, Any] = {}

    def walk(prefix: str, obj: Any) -> None:
        if isinstance(obj, dict):
            if not obj and prefix:
                out[prefix] = "{}"
            for k, v in obj.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        elif obj is None or isinstance(obj, (bool, int, float, str)):
            out[prefix] = obj
        else:
            out[prefix] = json.dumps(_plain(obj))

    walk("", _plain(cfg.to_dict()))
    return out


def write_hparams(writer: Any, cfg: RunConfig, final: dict[str, float], step: int) -> None:
    """Hyper-parameters and final metrics into the run's own TensorBoard folder (the HParams
    view), the metrics as ``hparam/KEY`` scalars so they do not join the training curves."""
    # torch's hparams() stores a bool as a number (bool is an int): give TensorBoard "true"/"false".
    hp = {
        k: "none" if v is None else (str(v).lower() if isinstance(v, bool) else v)
        for k, v in flat_config(cfg).items()
    }
    metrics = {f"hparam/{k}": float(v) for k, v in final.items() if k != "time" and math.isfinite(v)}
    # run_name ".": the run's own folder (add_hparams would otherwise open a sub-run per call).
    writer.add_hparams(hp, metrics, run_name=".", global_step=step)


#: The parts of a run's config each reading command resolves (``read_run``'s ``parts``): the
#: variant (with its slots) and its regularisers make the model; the data set and metrics evaluate it.
SAMPLING = ("variant", "regularisers")
EVALUATION = ("variant", "regularisers", "dataset", "metrics")
_MAPS = {"regularisers": "regulariser", "metrics": "metric"}  # named maps of a config and their kinds


def write_run_json(run_dir: Path, cfg: RunConfig, data: DataInfo, processes: int) -> None:
    """``run.json``: genfw's version, the data's shape, the number of processes, the command line,
    and where every component came from: ``components`` by config path (``variant``, ``prior``,
    ``metrics.fid``: kind, name, plugin, distribution, version) and ``distributions`` (name ->
    version of each one used, genfw's own included), so that a run whose plugin is gone names the
    distribution to install."""
    components = {
        path: {
            "kind": spec.component.kind,
            "name": spec.name,
            "plugin": spec.component.plugin.name,
            "distribution": spec.component.plugin.dist,
            "version": spec.component.plugin.version,
        }
        for path, spec in cfg.components().items()
    }
    distributions = {"genfw": genfw.__version__}
    distributions.update({c["distribution"]: c["version"] for c in components.values() if c["version"]})
    record = {
        "genfw": genfw.__version__,
        # What sampling rebuilds the model from (the training set's size is not needed for that).
        "data": attrs.asdict(data, filter=attrs.filters.exclude(attrs.fields(DataInfo).size)),
        "processes": processes,
        "command": sys.argv,
        "distributions": dict(sorted(distributions.items())),
        "components": components,
    }
    (run_dir / RUN_FILE).write_text(json.dumps(record, indent=1))


def read_run(
    run_dir: Path,
    registry: Any,
    overrides: list[tuple[str, Any]] | None = None,
    *,
    parts: tuple[str, ...] | None = None,
) -> RunConfig:
    """The config of a run folder (plus ``overrides``).

    ``parts=None``: all of it, resolved as a new run's config is (``--resume``, which trains on).
    Otherwise only those parts (:data:`SAMPLING`, :data:`EVALUATION`): ``config.yaml`` names every
    component with all its options, so each is looked up by that name, and nothing is defaulted or
    preset again; the others are not looked up (``dataset`` is ``None`` and ``metrics`` empty when
    left out), so a plugin the command does not need may be gone. A component it needs that is no
    longer registered is named with the distribution it came from (``run.json``), in one line.
    """
    from genfw import config as config_mod

    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).is_file():
        raise GenfwError(
            f"{run_dir} is not a genfw run folder (no {CONFIG_FILE}); give the folder `genfw train` wrote"
        )
    raw = config_mod.merge(config_mod.load_file(run_dir / CONFIG_FILE), overrides or [])
    _check_installed(run_dir, raw, registry, parts)
    if parts is None:
        return config_mod.resolve(raw, registry)
    return _resolve_recorded(run_dir, raw, registry, parts)


def _resolve_recorded(run_dir: Path, raw: dict[str, Any], registry: Any, parts: tuple[str, ...]) -> RunConfig:
    """A recorded (complete) config's ``parts``, each component looked up by its name."""
    from genfw import config as config_mod

    def spec(kind: str, entry: Any, where: str) -> ComponentSpec:
        name, options = config_mod._split(entry, where)
        if name is None:
            raise GenfwError(
                f"{run_dir / CONFIG_FILE}: '{where}' names no {kind}; the file was changed by hand"
            )
        return registry.spec(kind, name, options, where=where)

    variant = spec("variant", raw.get("variant"), "variant")
    slots = variant.component.factory.slots
    unknown = sorted(set(raw) - set(config_mod.SECTIONS) - set(slots))
    if unknown:
        raise GenfwError(
            f"{run_dir / CONFIG_FILE}: unknown key '{unknown[0]}'; variant '{variant.name}' has the slots "
            f"{', '.join(slots) or 'none'}"
        )
    maps = {
        section: {
            # A remedy is a regulariser or a callback (one spelling, one namespace).
            name: registry.spec(
                "callback" if section == "regularisers" and name in registry.all("callback") else kind,
                name,
                options,
                where=f"{section}.{name}",
            )
            for name, options in config_mod._named_map(raw.get(section), section).items()
        }
        if section in parts
        else {}
        for section, kind in _MAPS.items()
    }
    remedies = maps["regularisers"]
    return RunConfig(
        variant=variant,
        dataset=spec("dataset", raw.get("dataset"), "dataset") if "dataset" in parts else None,
        slots={slot: spec(s.kind, raw.get(slot, s.default), slot) for slot, s in slots.items()},
        regularisers={n: r for n, r in remedies.items() if r.component.kind == "regulariser"},
        callbacks={n: r for n, r in remedies.items() if r.component.kind == "callback"},
        metrics=maps["metrics"],
        train=structure_options(config_mod.TRAIN, raw.get("train") or {}, where="train"),
        registry=registry,
    )


def _check_installed(
    run_dir: Path, raw: dict[str, Any], registry: Any, parts: tuple[str, ...] | None
) -> None:
    """Refuse, naming the distribution to install, a component of ``parts`` (all: ``None``) that
    the run recorded in ``run.json`` and the config still names, but that is not registered now."""
    try:
        recorded = json.loads((run_dir / RUN_FILE).read_text()).get("components", {})
    except (OSError, ValueError, AttributeError):
        return  # a run from before run.json recorded components: the registry's own error follows
    for path, rec in recorded.items() if isinstance(recorded, dict) else ():
        section, _, name = path.partition(".")
        part = section if section in ("variant", "dataset", *_MAPS) else "variant"  # slots: the variant's
        if parts is not None and part not in parts:
            continue
        try:
            kind, recorded_name = rec["kind"], rec["name"]
            if section in _MAPS:
                named = name in (raw.get(section) or {})
            else:
                entry = raw.get(path)
                named = (entry.get("name") if isinstance(entry, dict) else entry) == recorded_name
            if not named or recorded_name in registry.names(kind):
                continue
        except (KeyError, TypeError, AttributeError):
            continue  # a hand-edited run.json: the registry's own error follows
        raise _missing(rec)


def _missing(rec: dict[str, Any]) -> GenfwError:
    """``metric 'swd' of this run came from distribution genfw-swd 0.2.0, which is not installed:
    pip install genfw-swd``, or why an installed one does not provide it."""
    from importlib import metadata

    what = f"{rec['kind']} '{rec['name']}' of this run"
    dist, version, plugin = rec.get("distribution"), rec.get("version"), rec.get("plugin")
    if not version:
        return GenfwError(
            f"{what} came from plugin '{plugin}', which is not part of an installed distribution and "
            f"is not loaded now"
        )
    try:
        installed = metadata.version(dist)
    except metadata.PackageNotFoundError:
        return GenfwError(
            f"{what} came from distribution {dist} {version}, which is not installed: pip install {dist}"
        )
    return GenfwError(
        f"{what} came from distribution {dist} {version} (plugin '{plugin}'); {dist} {installed} is installed "
        f"but registers no {rec['kind']} '{rec['name']}' now: check GENFW_SKIP_PLUGINS and GENFW_LOAD_PLUGINS, "
        f"or pip install '{dist}=={version}'"
    )


def load_model(run_dir: Path, cfg: RunConfig, *, with_data: bool) -> tuple[Built | None, Model, Modules]:
    """Rebuild a run's model and load its weights.

    With ``with_data`` the data set is built too and every module is loaded from the latest
    checkpoint (for metrics and reconstructions) and the modules returned are those samples are
    drawn with (the callbacks' choice: EMA weights); an exported folder (``genfw export``) has no
    checkpoint, and its modules (those ``model.safetensors`` holds, already the sampling weights)
    are loaded from it. Without, only the exported sampling modules are loaded from
    ``generator.safetensors`` and the data set is not needed.
    """
    from genfw import export

    run_dir = Path(run_dir)
    if with_data:
        built = build(cfg)
        model = built.model
        if export.folder_kind(run_dir) == "export":
            names = export.exported_modules(run_dir)
            load_sampling_weights(run_dir, model, weights=export.MODEL_FILE, names=names)
            return built, model, Modules(model.modules)
        load_checkpoint(run_dir / "checkpoints", model)
        return built, model, built.callbacks.sampler(Modules(model.modules))
    data = read_data_info(run_dir)
    model, modules = load_sampler(run_dir, cfg, data, weights=EXPORT_FILE)
    return None, model, modules


def load_checkpoint(ckpt_root: Path, model: Model) -> None:
    """Load every module of ``model`` from the latest checkpoint in ``ckpt_root``, after checking
    that it holds each one's tensors, of their shapes, and that they are finite."""
    path = checkpoint.find(ckpt_root)
    _, state = checkpoint.load(path)
    modules = state.get("modules")
    check_weights(path, modules, model.modules)
    check_finite({"modules": modules}, f"checkpoint {path}", checkpoint.others(path))
    for name, mod in model.modules.items():
        checkpoint.load_state(mod, modules[name], f"checkpoint {path} [{name}]")


def read_data_info(folder: Path) -> DataInfo:
    """The shape, classes and kind of a run's data, as ``run.json`` recorded them."""
    try:
        info = json.loads((Path(folder) / RUN_FILE).read_text())["data"]
        return DataInfo(shape=tuple(info["shape"]), num_classes=info["num_classes"], kind=info["kind"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise GenfwError(f"{folder}/{RUN_FILE} is missing or unreadable ({exc})") from None


def load_sampler(
    folder: Path, cfg: RunConfig, data: DataInfo, *, weights: str, names: tuple[str, ...] | None = None
) -> tuple[Model, Modules]:
    """The model of ``cfg`` for ``data``, with the modules ``names`` (default: the model's
    ``export``) loaded from the weights file ``folder/weights`` (``generator.safetensors`` of a
    run, ``model.safetensors`` of an export); the other modules keep their initial weights."""
    # The callbacks shape the modules (spectral norm, EMA copies); the weights file holds the
    # sampling weights (the callbacks' sampler's choice) under the export names.
    model, _ = build_model(cfg, data)
    load_sampling_weights(folder, model, weights=weights, names=names)
    return model, Modules(model.modules)


def load_sampling_weights(
    folder: Path, model: Model, *, weights: str, names: tuple[str, ...] | None = None
) -> None:
    """Load the modules ``names`` (default: the model's ``export``) of ``model`` from the weights
    file ``folder/weights``, after checking that the model has each one; they are then the weights
    samples are drawn with, whatever the callbacks' sampler would choose."""
    names = tuple(model.export) if names is None else names
    missing = [n for n in names if n not in model.modules]
    if missing:
        raise GenfwError(
            f"{folder / weights} holds module '{missing[0]}', which the model built from "
            f"{folder / CONFIG_FILE} does not have (it has {', '.join(model.modules)})"
        )
    chosen = {n: model.modules[n] for n in names}
    checkpoint.load_weights(Path(folder) / weights, chosen)
    tensors = {f"{n}.{k}": v for n, mod in chosen.items() for k, v in mod.state_dict().items()}  # its keys
    check_finite(tensors, str(Path(folder) / weights))


def load_checkpoint_weights(
    ckpt_root: Path, cfg: RunConfig, data: DataInfo, names: tuple[str, ...]
) -> dict[str, dict[str, torch.Tensor]]:
    """The state dicts of modules ``names`` as the run samples with them (the callbacks'
    sampler's choice) at its latest checkpoint in ``ckpt_root``: an autoencoder's encoders, which
    ``generator.safetensors`` leaves out. The whole checkpoint's modules are checked first."""
    model, ctx = build_model(cfg, data)
    load_checkpoint(Path(ckpt_root), model)
    sampling = ctx.events.sampler(Modules(model.modules))
    return {n: sampling[n].state_dict() for n in names}


def is_empty_run(run_dir: Path) -> bool:
    """A run folder whose run stopped before its first checkpoint: no checkpoint, no export."""
    return checkpoint.is_empty(run_dir / "checkpoints") and not (run_dir / EXPORT_FILE).exists()


def check_weights(path: Path, state: Any, modules: dict[str, nn.Module]) -> None:
    """The ``modules`` part of checkpoint ``path`` holds every module's tensors, of their shapes."""
    if not isinstance(state, dict):
        raise GenfwError(
            f"checkpoint {path} does not fit this run: 'modules' must be a mapping by name"
            f"{checkpoint.others(path)}"
        )
    for name, mod in modules.items():
        if name not in state:
            raise GenfwError(f"checkpoint {path} has no weights for module '{name}'{checkpoint.others(path)}")
        checkpoint.check_module_state(mod, state[name], f"checkpoint {path} [{name}]")


def check_finite(tree: dict[str, Any], where: str, hint: str = "") -> None:
    """Refuse weights (or optimiser moments) with a NaN or an infinity, from a run that diverged,
    in one line; ``hint`` ends it (e.g. the run's other checkpoints)."""
    bad = checkpoint.non_finite(tree)
    if bad:
        raise GenfwError(
            f"{where} holds non-finite values ({', '.join(bad[:3])}): the run had diverged when it "
            f"was written{hint}"
        )


def check_run_state(
    path: Path,
    state: dict[str, Any],
    run_modules: dict[str, nn.Module],
    run_optimizers: dict[str, Any],
    run_scalers: dict[str, Any],
    loader_size: int | None,
) -> None:
    """Refuse, in one line, a checkpoint whose structure or tensor shapes do not fit this run's
    ``run_modules``, ``run_optimizers`` (by phase), fp16 ``run_scalers`` and in-memory loader of
    ``loader_size`` examples (what ``Trainer.state`` writes), or whose weights or moments are not
    finite; loads nothing."""

    def fail(what: str) -> GenfwError:
        return GenfwError(f"checkpoint {path} does not fit this run: {what}{checkpoint.others(path)}")

    def is_int(v: Any) -> bool:
        return type(v) is int

    modules, optimizers, rng = state.get("modules"), state.get("optimizers"), state.get("rng")
    check_weights(path, modules, run_modules)
    if not isinstance(optimizers, dict):
        raise fail("'optimizers' must be a mapping by phase")
    for name, opt in run_optimizers.items():
        if name not in optimizers:
            raise fail(f"it has no optimiser state for phase '{name}'")
        checkpoint.check_optimizer_state(opt, optimizers[name], f"checkpoint {path} [optimiser {name}]")
    if "world" in state and not (is_int(state["world"]) and state["world"] >= 1):
        raise fail("'world' must be a number of processes")
    if not isinstance(rng, dict) or "cpu" not in rng:
        raise fail("'rng' must be a mapping with the CPU generator's state 'cpu'")
    rngs = {"cpu": torch.get_rng_state()}
    if "cuda" in rng and torch.cuda.is_available():
        rngs["cuda"] = torch.cuda.get_rng_state()
    ranks = rng.get("ranks", [])
    if not isinstance(ranks, list) or not all(isinstance(r, dict) for r in ranks):
        raise fail("'rng/ranks' must be a list of each process's random states")
    for where, states in [("rng", rng)] + [(f"rng/ranks/{i}", r) for i, r in enumerate(ranks)]:
        for key, mine in rngs.items():
            value = states.get(key)
            if not isinstance(value, torch.Tensor) or value.dtype != mine.dtype or value.shape != mine.shape:
                raise fail(f"{where}/{key} must be a {mine.dtype} tensor of shape {list(mine.shape)}")
    loader = state.get("loader", {"epoch": 0, "pos": 0})
    if loader_size is not None and not (
        isinstance(loader, dict)
        and is_int(loader.get("epoch"))
        and is_int(loader.get("pos"))
        and loader["epoch"] >= 0
        and 0 <= loader["pos"] <= loader_size
    ):
        raise fail(f"'loader' must hold an epoch and a position in 0..{loader_size}")
    scalers = state.get("scalers", {})
    if not isinstance(scalers, dict):
        raise fail("'scalers' must be a mapping by phase")
    for name in set(scalers) & set(run_scalers):
        value = scalers[name]
        if not (
            isinstance(value, dict)
            and set(value) == set(run_scalers[name].state_dict())
            and all(isinstance(v, (int, float)) for v in value.values())
        ):
            raise fail(f"scalers/{name} is {value!r}")
    if "stage" in state and not is_int(state["stage"]):
        raise fail(f"stage is {state['stage']!r}, not a whole number")
    callbacks = state.get("callbacks", {})
    if not isinstance(callbacks, dict) or not all(isinstance(v, dict) for v in callbacks.values()):
        raise fail("'callbacks' must be a mapping by callback name of their states")
    check_finite(
        {"modules": modules, "optimizers": optimizers}, f"checkpoint {path}", checkpoint.others(path)
    )
