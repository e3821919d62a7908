"""Run configuration: a config file (YAML or TOML) plus command-line overrides, resolved against
the registry into validated components.

The config is a mapping. Component keys hold a name, or a name with options::

    variant: {name: wae, latent_dim: 8}
    dataset: digits
    prior: {name: spike_slab, alpha: 0.3}
    regularisers: {mmd: {weight: 10.0}}   # remedies: regularisers and callbacks, name -> options;
                                          # the variant's own are merged in
    metrics: {mode_coverage: {}}          # exactly these; without the key, the defaults
    train: {steps: 3000, batch_size: 64, seed: 0}

Besides ``variant``, ``dataset``, ``regularisers``, ``metrics`` and ``train``, the valid keys
are the variant's slots (``genfw list variant`` shows them). On the command line,
``--prior spike_slab`` sets a name, ``--prior.alpha 0.3`` (or ``--set prior.alpha=0.3``) an
option; values are read as YAML (``0.3``, ``true``, ``[64, 64]``). The resolved config, with
every default filled in, is written to the run folder and replays the run exactly.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import tomllib
import yaml

from genfw import trackers
from genfw.errors import GenfwError, choices, nearest
from genfw.registry import Component, ComponentSpec, PluginInfo, Registry, converter, structure_options
from genfw.schedules import SCHEDULES, increasing
from genfw.validators import Names, in_interval, one_of, positive

DEFAULT_VARIANT = "gan"
DEFAULT_DATASET = "digits"  # embedded, no download
# Seeds go to Accelerate's set_seed, which seeds numpy too: numpy takes 0 .. 2**32 - 1 (torch more).
MAX_SEED = 2**32 - 1


@attrs.define
class TrainOptions:
    """How long and how a run trains, logs, samples, evaluates and checkpoints."""

    steps: int = attrs.field(default=3000, validator=attrs.validators.ge(1))
    batch_size: int = attrs.field(default=64, validator=attrs.validators.ge(1))
    seed: int = attrs.field(default=0, validator=in_interval(0, MAX_SEED))
    log_every: int = attrs.field(default=50, validator=attrs.validators.ge(1))  # steps between logs
    sample_every: int = attrs.field(default=1000, validator=attrs.validators.ge(0))  # 0: at the end only
    eval_every: int = attrs.field(default=0, validator=attrs.validators.ge(0))  # 0: at the end only
    checkpoint_every: int = attrs.field(default=1000, validator=attrs.validators.ge(0))  # 0: at the end
    keep_checkpoints: int = attrs.field(default=2, validator=attrs.validators.ge(1))
    grid: int = attrs.field(default=64, validator=attrs.validators.ge(1))  # samples in a PNG grid
    mixed_precision: str = attrs.field(default="no", validator=attrs.validators.in_(("no", "fp16", "bf16")))
    cpu: bool = False  # train on the CPU even where a GPU is available
    # torch.compile every module (on the CPU it needs a C++ compiler). Not with gradient penalties:
    # compiled graphs have no double backward.
    compile: bool = False
    sync_batch_norm: bool = False  # batch norm as SyncBatchNorm over processes (GPUs only)
    progress: bool = True  # tqdm progress bar
    # Experiment trackers (genfw.trackers): tensorboard, mlflow, wandb, aim, or all (tensorboard and
    # every other one installed); a list or names separated by commas; [] for metrics.jsonl alone.
    log_with: Names = attrs.field(factory=lambda: ["tensorboard"], validator=trackers.names)
    # Fraction of the data set held out from training (a fixed split, the same for every run and
    # seed: see genfw.train.holdout_split); metrics and `genfw eval` reconstruct it. 0: none.
    holdout: float = attrs.field(default=0.0, validator=in_interval(0, 1, high_open=True))
    # Share of the training examples (after the hold-out) the run trains on: a fixed subset, the
    # same for every run and seed (see genfw.data.training_subset), for data-efficient GAN
    # experiments (DiffAugment's CIFAR-10 at 10% and 20%). Metrics' real statistics use all data.
    data_fraction: float = attrs.field(default=1.0, validator=in_interval(0, 1, low_open=True))
    # Learning-rate schedule of every phase (genfw.schedules): constant, linear, cosine or step, after
    # a linear warm-up over lr_warmup steps from lr_warmup_start (default 0) times the rate.
    lr_schedule: str = attrs.field(default="constant", validator=one_of(*SCHEDULES))
    lr_warmup: int = attrs.field(default=0, validator=attrs.validators.ge(0))
    lr_warmup_start: float | None = attrs.field(
        default=None, validator=attrs.validators.optional(in_interval(0, 1, high_open=True))
    )
    # linear, cosine: the rate's final factor (default 0); step: the steps at which it is multiplied
    # by lr_gamma (default 0.1).
    lr_min_factor: float | None = attrs.field(
        default=None, validator=attrs.validators.optional(in_interval(0, 1))
    )
    lr_milestones: list[int] = attrs.field(factory=list, validator=increasing)
    lr_gamma: float | None = attrs.field(default=None, validator=attrs.validators.optional(positive))
    # The step at which linear and cosine end; 0: train.steps (a --resume with more steps keeps the
    # horizon the run started with).
    lr_steps: int = attrs.field(default=0, validator=attrs.validators.ge(0))
    # Phase name -> its own lr_* keys over those above: {critic: {lr_schedule: cosine}}.
    lr_schedules: dict[str, dict[str, Any]] = attrs.field(factory=dict)


TRAIN = Component(
    kind="section",
    name="train",
    factory=TrainOptions,
    options=TrainOptions,
    plugin=PluginInfo(name="genfw"),
)

SECTIONS = ("variant", "dataset", "regularisers", "metrics", "train")
NAMED_MAPS = ("regularisers", "metrics")  # name -> options, not one component


@attrs.frozen
class RunConfig:
    """A resolved run: every component chosen and its options validated."""

    variant: ComponentSpec
    dataset: ComponentSpec | None  # None where a command reads no data (genfw sample)
    slots: dict[str, ComponentSpec]
    regularisers: dict[str, ComponentSpec]
    metrics: dict[str, ComponentSpec]
    train: TrainOptions
    # Callbacks (model transforms, schedules), given like regularisers: ``--regulariser ema``.
    callbacks: dict[str, ComponentSpec] = attrs.field(factory=dict)
    # The registry it was resolved against: fit checks and refusals name the variants of this one.
    registry: Registry | None = attrs.field(default=None, eq=False, repr=False)

    def components(self) -> dict[str, ComponentSpec]:
        """Every chosen component by its config path: ``variant``, ``dataset``, each slot,
        ``regularisers.NAME``, ``metrics.NAME``."""
        out = {"variant": self.variant, **({"dataset": self.dataset} if self.dataset else {}), **self.slots}
        remedies = {**self.regularisers, **self.callbacks}  # one spelling: regularisers.NAME
        for section, specs in (("regularisers", remedies), ("metrics", self.metrics)):
            out.update({f"{section}.{name}": spec for name, spec in specs.items()})
        return out

    def to_dict(self) -> dict[str, Any]:
        """The resolved config as plain data; :func:`resolve` of it gives this config back."""

        def entry(spec: ComponentSpec) -> dict[str, Any]:
            return {"name": spec.name, **converter.unstructure(spec.options)}

        out: dict[str, Any] = {"variant": entry(self.variant), "dataset": entry(self.dataset)}
        out.update({slot: entry(spec) for slot, spec in self.slots.items()})
        # Every remedy under one key, as the user gives them: regularisers, then callbacks.
        remedies = {**self.regularisers, **self.callbacks}
        out["regularisers"] = {n: converter.unstructure(s.options) for n, s in remedies.items()}
        out["metrics"] = {n: converter.unstructure(s.options) for n, s in self.metrics.items()}
        out["train"] = converter.unstructure(self.train)
        return out


# --- reading ---------------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """YAML as researchers write it: ``1e-4`` is a float. PyYAML follows YAML 1.1, where a float
    needs a dot (``1.0e-4``) and ``1e-4`` is the string "1e-4"; YAML 1.2 and Python read a number."""


_Loader.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass: no Python objects


def load_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML (``.yaml``/``.yml``) or TOML (``.toml``) config file into a mapping."""
    path = Path(path)
    if not path.is_file():
        raise GenfwError(f"config file {path} does not exist; give a .yaml, .yml or .toml file")
    try:
        text = path.read_text(encoding="utf-8-sig")  # a byte-order mark is fine
    except UnicodeDecodeError as exc:
        raise GenfwError(
            f"config file {path} is not UTF-8 text (byte {exc.start} is {exc.object[exc.start]:#04x}); "
            f"save it as UTF-8"
        ) from None
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            data = _yaml(text) or {}
        else:
            raise GenfwError(f"config file {path}: unknown format '{path.suffix}'; use .yaml, .yml or .toml")
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as exc:
        raise GenfwError(f"config file {path} is not valid: {' '.join(str(exc).split())}") from None
    if not isinstance(data, dict):
        raise GenfwError(f"config file {path}: expected a mapping at the top level")
    return data


def parse_value(text: str) -> Any:
    """A command-line value, read as YAML: ``0.3`` -> float, ``[1, 2]`` -> list, ``abc`` -> str."""
    try:
        return _yaml(text)
    except yaml.YAMLError:
        return text


def set_path(tree: dict[str, Any], path: str, value: Any) -> None:
    """Set ``a.b.c = value`` in a nested mapping. A component given by name becomes
    ``{"name": name}`` so options can be set beside it; ``regularisers``/``metrics`` given as a
    list of names become a mapping, and adding a name there (``regularisers.mmd = {}``) keeps the
    options it already has."""
    parts = path.split(".")
    if any(not p for p in parts):
        raise GenfwError(f"invalid config key '{path}'")
    node = tree
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if i == 0 and part in NAMED_MAPS:
            child = _named_map(child, part)
        elif isinstance(child, str) and i == 0 and part != "train":
            child = {"name": child}
        if child is None:
            child = {}
        if not isinstance(child, dict):
            raise GenfwError(f"config key '{'.'.join(parts[: i + 1])}' holds {child!r}, not a mapping")
        node[part] = child
        node = child
    last = parts[-1]
    if len(parts) == 1 and isinstance(node.get(last), dict) and not isinstance(value, dict):
        node[last]["name"] = value  # --prior spike_slab keeps --prior.alpha given before it
    elif len(parts) == 2 and parts[0] in NAMED_MAPS and value == {} and isinstance(node.get(last), dict):
        pass  # --regulariser mmd keeps mmd's options from the file
    else:
        node[last] = value


def merge(base: dict[str, Any], overrides: list[tuple[str, Any]]) -> dict[str, Any]:
    tree = _deepcopy(base)
    for path, value in overrides:
        set_path(tree, path, value)
    return tree


def _deepcopy(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _deepcopy(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_deepcopy(v) for v in obj]
    return obj


# --- resolving -------------------------------------------------------------------------------------


def _split(value: Any, where: str) -> tuple[str | None, dict[str, Any]]:
    """A component entry, ``"name"`` or ``{"name": ..., **options}``, as (name, options)."""
    if value is None:
        return None, {}
    if isinstance(value, str):
        return value, {}
    if isinstance(value, Mapping):
        opts = dict(value)
        name = opts.pop("name", None)
        if name is not None and not isinstance(name, str):
            raise GenfwError(f"{where}.name: expected a component name, got {name!r}")
        return name, opts
    raise GenfwError(f"{where}: expected a component name or a mapping with 'name', got {value!r}")


def _named_map(value: Any, where: str) -> dict[str, dict[str, Any]]:
    """``regularisers``/``metrics``: a mapping name -> options (a list of names also works)."""
    if value is None:
        return {}
    if isinstance(value, str):
        value = [value]
    if isinstance(value, list):
        value = {str(v): {} for v in value}
    if not isinstance(value, Mapping):
        raise GenfwError(f"{where}: expected a mapping of name -> options, got {value!r}")
    out = {}
    for name, opts in value.items():
        if opts is None:
            opts = {}
        if not isinstance(opts, Mapping):
            raise GenfwError(f"{where}.{name}: expected a mapping of options, got {opts!r}")
        out[str(name)] = dict(opts)
    return out


def overlay(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """``top`` over ``base``, key by key; a component name over a mapping of options keeps the
    options (``variant: wgan-gp`` over ``variant: {latent_dim: 2}``), unless that mapping names
    another component: ``critic: mine`` over ``critic: {name: mlp, hidden: [512]}`` is ``mine``
    with its own defaults."""
    out = dict(base)
    for key, value in top.items():
        below = out.get(key)
        if key in NAMED_MAPS:
            value = _named_map(value, key)
            below = _named_map(below, key) if below is not None else None
        if isinstance(below, Mapping) and isinstance(value, str):
            value = {"name": value}
        if isinstance(below, Mapping) and isinstance(value, Mapping):
            names = {below.get("name"), value.get("name")} - {None}
            # The options of another component are dropped; the same (or an unnamed) one keeps them.
            out[key] = overlay(below, value) if len(names) < 2 else dict(value)
        else:
            out[key] = value
    return out


def with_command_line(
    raw: Mapping[str, Any],
    overrides: list[tuple[str, Any]],
    registry: Registry,
    *,
    default_metrics: bool = True,
) -> dict[str, Any]:
    """``raw`` (a config file) with the command line's ``overrides`` on top, as ``genfw train``
    reads them. Metrics named by flags (``--metric fid``, ``--metric.fid.num_samples 500``) are
    added to those the run computes without them: the file's ``metrics:`` where it has the key,
    else the defaults (see :func:`resolve`). ``default_metrics=False`` (``--no-default-metrics``)
    leaves the defaults out. ``--set metrics=...`` sets the whole list."""
    if "metrics" not in raw and all(path != "metrics" for path, _ in overrides):
        if not default_metrics:
            raw = {**raw, "metrics": {}}
        elif any(path.startswith("metrics.") for path, _ in overrides):
            rest = [(path, value) for path, value in overrides if not path.startswith("metrics.")]
            raw = {**raw, "metrics": resolve(merge(dict(raw), rest), registry).to_dict()["metrics"]}
    return merge(dict(raw), overrides)


def applies_to(name: str, regulariser: Any, registry: Registry | None) -> str:
    """The last words of a refusal of remedy ``name`` (its class ``regulariser``, or a callback's): the
    variants of ``registry`` it works with, by its own ``fits(VariantInfo)`` where it declares one,
    else those with a phase it attaches to; less those that refuse it with their default options."""
    from genfw.plugins import get_registry, variants_where

    registry = get_registry() if registry is None else registry
    fits = getattr(regulariser, "fits", None)  # optional for a regulariser; every callback has one

    def takes(v: Any) -> bool:
        if not (fits(v) if fits is not None else bool(set(regulariser.phases) & set(v.phases))):
            return False
        try:
            options = registry.spec("variant", v.name, {}, where="variant").options
        except GenfwError:  # required options: it cannot be judged without them
            return True
        return v.factory.refuse(name, options) is None

    return f"; variants it applies to: {variants_where(takes, registry)}"


def resolve(raw: Mapping[str, Any], registry: Registry) -> RunConfig:
    """Validate a config mapping against the registry; fill in every default.

    The variant's declared members (:class:`genfw.contracts.Variant`) choose the defaults: its
    slots, data set, preset for the data's kind, remedies and metrics."""
    metrics_asked = raw.get("metrics")  # a config's own metrics, before any preset: exactly those
    variant_name, variant_opts = _split(raw.get("variant"), "variant")
    variant = registry.spec("variant", variant_name or DEFAULT_VARIANT, variant_opts, where="variant")
    vcls = variant.component.factory
    slots: Mapping[str, Any] = vcls.slots

    unknown = sorted(set(raw) - set(SECTIONS) - set(slots))
    if unknown:
        key = unknown[0]
        kinds = {"generator", "critic", "encoder", "prior", "loss", "regulariser", "metric"}
        if key in kinds or any(key in v.factory.slots for v in registry.all("variant").values()):
            raise GenfwError(f"variant '{variant.name}' has no slot '{key}'; its slots: {choices(slots)}")
        guess = nearest(key, [*SECTIONS, *slots])
        raise GenfwError(
            f"unknown config key '{key}'; valid keys for variant '{variant.name}': "
            f"{choices([*SECTIONS, *slots])}{f' (did you mean {guess}?)' if guess else ''}"
        )

    dataset_name, dataset_opts = _split(raw.get("dataset"), "dataset")
    dataset_default = vcls.default_dataset or DEFAULT_DATASET
    dataset = registry.spec("dataset", dataset_name or dataset_default, dataset_opts, where="dataset")

    # A variant may carry a preset per kind of data (e.g. the settings its authors used on 2-D toy
    # data); anything the user set wins over it, and the resolved config records the outcome.
    preset = vcls.presets.get(dataset.component.factory.kind)
    if preset and getattr(dataset.options, "streaming", False) is True:
        # A streamed data set (its option streaming: true) has no indices to hold out or subsample
        # by: a preset's train.holdout / data_fraction are left out (the user's own are refused).
        train_preset = {
            k: v for k, v in preset.get("train", {}).items() if k not in ("holdout", "data_fraction")
        }
        preset = {**preset, "train": train_preset}
    if preset:
        raw = overlay(preset, raw)
        variant_name, variant_opts = _split(raw.get("variant"), "variant")
        variant = registry.spec("variant", variant.name, variant_opts, where="variant")

    chosen: dict[str, ComponentSpec] = {}
    for slot_name, slot in slots.items():
        name, opts = _split(raw.get(slot_name), slot_name)
        spec = registry.spec(slot.kind, name or slot.default, opts, where=slot_name)
        # Only loss slots take a role, and every loss declares one (both checked at registration).
        if slot.role is not None and spec.component.factory.role != slot.role:
            role = spec.component.factory.role
            fitting = [c.name for c in registry.all(slot.kind).values() if c.factory.role == slot.role]
            raise GenfwError(
                f"{slot_name}: {slot.kind} '{spec.name}' is a {role} {slot.kind}, "
                f"but slot '{slot_name}' of variant '{variant.name}' takes {slot.role} ones: {choices(fitting)}"
            )
        chosen[slot_name] = spec

    # The variant's own remedies (they may depend on its options: the WAE's mmd only with
    # ``penalty: mmd``), with the user's over them.
    regs_raw = {n: dict(o) for n, o in vcls.remedies(variant.options).items()}
    for name, opts in _named_map(raw.get("regularisers"), "regularisers").items():
        regs_raw.setdefault(name, {}).update(opts)
    phases = vcls.phases_for(variant.options)
    regularisers, callbacks = {}, {}
    for name, opts in regs_raw.items():
        if name in registry.all("callback"):  # one spelling for every remedy, one namespace
            why = vcls.refuse(name, variant.options)
            if why is not None:
                factory = registry.get("callback", name).factory
                raise GenfwError(
                    f"variant '{variant.name}' refuses regulariser '{name}': {why}"
                    f"{applies_to(name, factory, registry)}"
                )
            callbacks[name] = registry.spec("callback", name, opts, where=f"regularisers.{name}")
            continue
        if name not in registry.all("regulariser"):
            raise GenfwError(
                f"unknown remedy '{name}' for regularisers; registered regularisers: "
                f"{choices(registry.all('regulariser'))}; callbacks: {choices(registry.all('callback'))}"
            )
        spec = registry.spec("regulariser", name, opts, where=f"regularisers.{name}")
        reg = spec.component.factory
        why = vcls.refuse(name, variant.options)
        if why is not None:
            raise GenfwError(
                f"variant '{variant.name}' refuses regulariser '{name}': {why}{applies_to(name, reg, registry)}"
            )
        if not set(reg.phases) & set(phases):
            raise GenfwError(
                f"regulariser '{name}' applies to {'/'.join(reg.phases)} phases, which variant "
                f"'{variant.name}' does not build with its options (it builds {', '.join(phases)})"
                f"{applies_to(name, reg, registry)}"
            )
        regularisers[name] = spec

    # A config that names metrics gets exactly those; one that names none gets the defaults: the
    # variant's (default_metrics) or else the data set's (mode_coverage on toy2d), and the
    # variant's preset ones (autoencoding on images).
    if metrics_asked is None:
        own = vcls.default_metrics
        base = dataset.component.factory.default_metrics if own is None else own
        metrics_raw = {name: {} for name in base}
        metrics_raw.update(_named_map(raw.get("metrics"), "metrics"))
    else:
        metrics_raw = _named_map(metrics_asked, "metrics")
    metrics = {
        name: registry.spec("metric", name, opts, where=f"metrics.{name}")
        for name, opts in metrics_raw.items()
    }

    train = structure_options(TRAIN, raw.get("train") or {}, where="train")
    trackers.check_installed(train.log_with)  # before anything is written
    return RunConfig(
        variant=variant,
        dataset=dataset,
        slots=chosen,
        regularisers=regularisers,
        callbacks=callbacks,
        metrics=metrics,
        train=train,
        registry=registry,
    )
