"""The ``genfw`` command: train, sample, eval, plugins, list.

User errors (:class:`genfw.GenfwError`) print one line, ``genfw: error: ...``, and exit with 2;
with ``GENFW_DEBUG=1`` their full traceback comes first (on stderr).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import traceback
from collections.abc import Callable, Collection, Iterable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, NoReturn

import attrs

from genfw import config as config_mod
from genfw import rundir
from genfw import validators as check
from genfw.commands import Applied, CommandTable, LoadedRun, apply_extension
from genfw.contracts import describe_variant_phases
from genfw.errors import GenfwError, choices, nearest, plural
from genfw.hookspecs import KINDS
from genfw.model import device_of
from genfw.plugins import get_host
from genfw.registry import structure_options

# GENFW_DEBUG=1: a GenfwError also prints its full traceback (a plugin's own error included).
ENV_DEBUG = "GENFW_DEBUG"

# Flags that name a component in a keyed map rather than a slot.
MAPS = {
    "regulariser": "regularisers",
    "regularisers": "regularisers",
    "metric": "metrics",
    "metrics": "metrics",
}
# genfw eval --real A --fake B without --metric: the metrics computed (a configurable default).
DEFAULT_FILE_METRICS = ("fid",)
SHORTCUTS = {  # --flag -> config path
    "steps": "train.steps",
    "batch_size": "train.batch_size",
    "seed": "train.seed",
    "mixed_precision": "train.mixed_precision",
    "lr_schedule": "train.lr_schedule",
    "lr_warmup": "train.lr_warmup",
    "log_with": "train.log_with",
}


def parse_overrides(
    tokens: list[str], sets: list[str], heads: Collection[str] | None = None, flags: Iterable[str] = ()
) -> list[tuple[str, Any]]:
    """``--prior spike_slab --prior.alpha 0.3 --regulariser gp --set train.steps=10`` as
    ``[(path, value), ...]``; values are read as YAML.

    ``heads``: the valid first parts of a flag (``prior`` of ``--prior.alpha``); any other flag is
    refused, naming the nearest of them or of ``flags`` (the command's own options).
    """
    out: list[tuple[str, Any]] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if not tok.startswith("--") or len(tok) == 2:
            raise GenfwError(
                f"unexpected argument '{tok}'; options look like --prior spike_slab or --prior.alpha 0.3"
            )
        name, eq, value = tok[2:].partition("=")
        key = name.replace("-", "_") if name in ("batch-size", "mixed-precision", "log-with") else name
        head, _, rest = key.partition(".")
        if heads is not None and head not in heads:
            raise GenfwError(_unknown_flag(name, heads, flags))
        if not eq:
            if i + 1 >= len(tokens) or tokens[i + 1].startswith("--"):
                raise GenfwError(f"option --{name} needs a value")
            value = tokens[i + 1]
            i += 1
        i += 1
        if key in SHORTCUTS:
            out.append((SHORTCUTS[key], config_mod.parse_value(value)))
        elif head in MAPS and not rest:  # --regulariser gradient_penalty
            out.append((f"{MAPS[head]}.{value}", {}))
        elif head in MAPS:  # --regulariser.gradient_penalty.weight 5
            out.append((f"{MAPS[head]}.{rest}", config_mod.parse_value(value)))
        elif head == "plugin":
            out.append((f"variant.{rest}" if rest else "variant", config_mod.parse_value(value)))
        else:
            out.append((key, value if not rest else config_mod.parse_value(value)))
    for item in sets:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise GenfwError(f"--set takes KEY=VALUE (e.g. --set prior.alpha=0.3), got '{item}'")
        out.append((key, config_mod.parse_value(value)))
    return out


def _unknown_flag(name: str, heads: Iterable[str], flags: Iterable[str]) -> str:
    """``unknown option --stpes; did you mean --steps?``: the nearest of the command's own flags
    or of the config's sections and slots (keeping a misspelt head's ``.option``)."""
    head, dot, rest = name.partition(".")
    own = [f[2:] for f in flags if f.startswith("--")]
    guess = nearest(head, [*heads, *own])
    hint = f"; did you mean --{guess}{dot + rest if guess in heads else ''}?" if guess else ""
    return f"unknown option --{name}{hint} (--help lists the options, genfw list the components)"


def _flag_heads(registry: Any) -> set[str]:
    """What may start a ``genfw train`` flag: sections, kinds, every variant's slots, shortcuts, maps."""
    slots = {s for v in registry.all("variant").values() for s in v.factory.slots}
    return {*config_mod.SECTIONS, *KINDS, *slots, *SHORTCUTS, *MAPS, "plugin"}


def _own_flags(args: argparse.Namespace) -> list[str]:
    """The option strings of the command that parsed ``args`` (for suggestions)."""
    return [s for action in args.parser._actions for s in action.option_strings]


class Parser(argparse.ArgumentParser):
    """argparse whose mistakes are one line, like every other genfw error (plain argparse prints
    its usage first): ``genfw: error: argument -n: n must be at least 1, got 0; see genfw sample
    --help``."""

    def error(self, message: str) -> NoReturn:
        raise GenfwError(f"{message}; see {self.prog} --help")


def int_arg(name: str, validator: check.Validator) -> Callable[[str], int]:
    """An argparse ``type``: an integer checked by a :mod:`genfw.validators` validator."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got '{text}'") from None
        try:
            validator(None, SimpleNamespace(name=name), value)  # type: ignore[arg-type]
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return value

    return parse


def float_arg(name: str) -> Callable[[str], float]:
    """An argparse ``type``: a finite float."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got '{text}'") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise argparse.ArgumentTypeError(f"{name} must be a finite number, got {text}")
        return value

    return parse


SEED = int_arg("seed", check.in_interval(0, config_mod.MAX_SEED))


def _default(field: attrs.Attribute) -> str:
    """An option's default as the help shows it: ``tensorboard`` for the list ``["tensorboard"]``."""
    value = field.default.factory() if isinstance(field.default, attrs.Factory) else field.default  # type: ignore[arg-type]
    return ",".join(value) if isinstance(value, list) else str(value)


class _Shortcut(argparse.Action):
    """``--steps 10``: kept as written, in order, for :func:`parse_overrides` (the one place that
    maps a shortcut to its config path and reads its value)."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: str | None = None) -> None:
        namespace.shortcuts = [*namespace.shortcuts, f"--{self.dest}", values]


# --- commands ------------------------------------------------------------------------------------


def cmd_train(args: argparse.Namespace, extra: list[str]) -> int:
    from genfw import api
    from genfw.train import json_safe

    registry = get_host().registry
    # Shortcuts first: --train.steps and --set, given too, win over --steps.
    overrides = parse_overrides(args.shortcuts + extra, args.set, _flag_heads(registry), _own_flags(args))
    if args.plugin:
        overrides.insert(0, ("variant", args.plugin))
    if args.cpu:
        overrides.append(("train.cpu", True))
    if args.compile:
        overrides.append(("train.compile", True))
    if args.sync_batch_norm:
        overrides.append(("train.sync_batch_norm", True))
    if args.no_progress:
        overrides.append(("train.progress", False))

    resume = None
    if args.resume is not None:
        if args.no_default_metrics:
            raise GenfwError("--no-default-metrics is for a new run; --resume keeps the run's metrics")
        folder = args.resume if isinstance(args.resume, str) else args.out
        if not folder:  # Path("") would be "."
            raise GenfwError("--resume needs the run folder: --resume RUN_DIR (or --resume --out RUN_DIR)")
        resume = Path(folder)
        bad = [p for p, _ in overrides if not p.startswith("train.")]
        if bad or args.config:
            raise GenfwError(
                f"on --resume only train options may change (e.g. --steps); got {bad[0] if bad else '--config'}"
            )
    run = api.run_training(
        args.config,
        overrides,
        out=args.out,
        resume=resume,
        overwrite=args.overwrite,
        default_metrics=not args.no_default_metrics,
        registry=registry,
    )
    if _is_main():
        print(json.dumps(json_safe(run.summary())))
    return 0


def _is_main() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def cmd_sample(args: argparse.Namespace, extra: list[str]) -> int:
    import safetensors.torch

    from genfw import api, export, hub, images

    if extra:
        raise GenfwError(f"unexpected argument '{extra[0]}' for sample")
    from_hub = args.run.startswith(hub.SCHEME)
    where = Path(".") if from_hub else Path(args.run)  # a Hub model's samples: here, not in the hub cache
    if not from_hub:
        export.folder_kind(where)  # a folder that is neither a run nor an export is the first thing said
    tag = f"-label{args.label}" if args.label is not None else ""
    out = Path(args.out) if args.out else where / f"sample-seed{args.seed}-n{args.n}{tag}.png"
    if out.suffix not in (".png", ".safetensors"):
        raise GenfwError(
            f"--out {out}: unknown format '{out.suffix}'; use .png (a grid) or .safetensors (tensors)"
        )
    if out.exists() and not args.overwrite:
        raise GenfwError(f"{out} already exists; pass --overwrite to replace it or choose another --out")
    gen = api.load(args.run, registry=get_host().registry)  # no data, no metrics
    # A conditional model draws --label's class, or else one row per class: labels 0 0 .. 1 1 ..
    samples, labels = gen.sample_with_labels(args.n, args.label, args.seed, args.truncation)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".png":
        rows = labels if labels is not None and args.label is None else None
        images.save_png(images.render(samples, gen.data.kind, labels=rows), out)
    else:
        tensors = {"samples": samples.contiguous()}
        if labels is not None:
            tensors["labels"] = labels.contiguous()
        safetensors.torch.save_file(tensors, str(out))
    print(str(out))
    return 0


def cmd_eval_files(args: argparse.Namespace, extra: list[str]) -> int:
    """``genfw eval --real A --fake B``: metrics on two image sets, no run."""
    import torch

    from genfw import scoring
    from genfw.train import json_safe

    if not (args.real and args.fake):
        raise GenfwError(
            "give both --real and --fake (folders or .npy/.npz/.safetensors files) and no run folder"
        )
    if args.run is not None:
        # With no run folder, argparse took the first option value (`NAME` of `--metric NAME`) for
        # the run: put it back where a value is missing.
        extra = list(extra)
        i = 0
        while i < len(extra) and (
            "=" in extra[i] or (i + 1 < len(extra) and not extra[i + 1].startswith("--"))
        ):
            i += 1 if "=" in extra[i] else 2
        extra.insert(i + 1 if i < len(extra) else i, args.run)
    overrides = parse_overrides(extra, args.set)
    bad = [p for p, _ in overrides if not p.startswith("metrics")]
    if bad:
        raise GenfwError(
            f"genfw eval --real/--fake takes --metric NAME and --metric.NAME.OPTION VALUE; got {bad[0]}"
        )
    raw = config_mod.merge({}, overrides).get("metrics") or list(DEFAULT_FILE_METRICS)
    metrics = scoring.metric_specs(get_host().registry, raw)
    limit = scoring.samples_needed(metrics)
    real, fake = scoring.read_samples(args.real, limit), scoring.read_samples(args.fake, limit)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    results = json_safe(scoring.score(real, fake, metrics, device))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))
    print(json.dumps(results))
    return 0


def cmd_eval(args: argparse.Namespace, extra: list[str]) -> int:
    from genfw import train as train_mod

    if args.real or args.fake:
        return cmd_eval_files(args, extra)
    if not args.run:
        raise GenfwError("give a run folder (genfw eval RUN) or two image sets (--real A --fake B)")
    run_dir = Path(args.run)
    overrides = parse_overrides(extra, args.set)
    bad = [p for p, _ in overrides if not p.startswith(("metrics", "dataset"))]
    if bad:
        raise GenfwError(
            f"genfw eval takes --metric NAME, --metric.NAME.OPTION VALUE and --dataset.*; got {bad[0]}"
        )
    if any(p.startswith("metrics") for p, _ in overrides):
        # Metrics named on the command line replace the run's.
        overrides.insert(0, ("metrics", {}))
    registry = get_host().registry
    cfg = rundir.read_run(run_dir, registry, overrides, parts=rundir.EVALUATION)
    # Plugins' options of eval whose user gave them (e.g. an autoencoder's pictures).
    after = [a.extension.run_after for a in args.extensions if a.extension.run_after and a.given(args)]
    if not cfg.metrics and not after:
        raise GenfwError(
            f"no metrics to compute; name some with --metric NAME (registered: {choices(registry.names('metric'))})"
        )
    built, _, modules = train_mod.load_model(run_dir, cfg, with_data=True)
    assert built is not None
    run = LoadedRun(run_dir=run_dir, cfg=cfg, model=built.model, modules=modules, dataset=built.dataset)
    # Before the metrics, so that a refusal comes before their work; the files print after them.
    files = [str(f) for run_after in after for f in run_after(args, run) or ()]
    if cfg.metrics:
        results = train_mod.json_safe(train_mod.evaluate(built, modules, device_of(*modules.values())))
        (run_dir / "eval.json").write_text(json.dumps(results, indent=1))
        print(json.dumps(results))
    for f in files:
        print(f)
    return 0


def _plugin_rows() -> tuple[list[dict[str, Any]], GenfwError | None]:
    """A row per loaded plugin, and the error that kept the registry from being filled, if any
    (two plugins registering one name): the plugins are still listed, so the user sees them."""
    host = get_host()
    try:
        components = list(host.registry)
        error = None
    except GenfwError as exc:
        components, error = [], exc
    rows = []
    for name, info in sorted(host.infos.items()):
        comps: dict[str, list[str]] = {}
        for c in components:
            if c.plugin.name == name:
                comps.setdefault(c.kind, []).append(c.name)
        rows.append(
            {
                "name": name,
                "distribution": info.dist,
                "version": info.version,
                "module": info.module,
                "hooks": host.hooks_of(name),
                "components": comps,
            }
        )
    return rows, error


def cmd_plugins(args: argparse.Namespace, extra: list[str]) -> int:
    rows, error = _plugin_rows()
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        for r in rows:
            print(f"{r['name']}  ({r['distribution']} {r['version']}, {r['module']})")
            for kind, names in r["components"].items():
                print(f"    {kind}: {', '.join(sorted(names))}")
    if error is not None:
        raise error
    return 0


def component_row(c: Any) -> dict[str, Any]:
    """What ``genfw list --json`` says of component ``c``: kind, name, plugin, help, options (and a
    variant's slots, players, phases, remedies, presets, default data set and metrics)."""
    row: dict[str, Any] = {
        "kind": c.kind,
        "name": c.name,
        "plugin": c.plugin.name,
        "distribution": c.plugin.dist,
        "help": c.help,
        "options": {n: {"type": t, "default": d} for n, t, d in c.option_fields()},
    }
    if c.kind == "variant":
        v = c.factory  # its members are declared (genfw.contracts.Variant), checked at registration
        row["slots"] = {
            s: {"kind": sl.kind, "default": sl.default, "role": sl.role} for s, sl in v.slots.items()
        }
        row["players"] = {role: list(names) for role, names in attrs.asdict(v.players).items() if names}
        try:  # its default options (None where some are required)
            defaults = structure_options(c, {}, where="variant")
        except GenfwError:
            defaults = None
        # Each phase, in order, with the context keys it gives regularisers and their types, and
        # whether the default options build it (WAE's critic: only with penalty gan).
        built = set(v.phases) if defaults is None else set(v.phases_for(defaults))
        row["phases"] = {
            p["name"]: {"help": p["help"], "provides": p["provides"], "by_default": p["name"] in built}
            for p in describe_variant_phases(v)
        }
        # What it attaches itself with its default options.
        row["regularisers"] = [] if defaults is None else list(v.remedies(defaults))
        row["presets"] = dict(v.presets)
        row["default_dataset"] = v.default_dataset
        row["default_metrics"] = v.default_metrics
        row["replayable"] = v.replayable
    if c.kind == "loss":
        row["role"] = c.factory.role
    if c.kind == "regulariser":
        row["phases"] = list(c.factory.phases)
        row["needs"] = list(c.factory.needs)
    return row


def describe_component(r: dict[str, Any]) -> list[str]:
    """The lines ``genfw list`` prints for one component (a row of :func:`component_row`)."""
    out: list[str] = []
    extra_bits = f" [{r['role']}]" if "role" in r else ""
    out.append(f"  {r['name']}{extra_bits} - {r['help']}  (plugin {r['plugin']})")
    if r["kind"] == "variant":
        slots = ", ".join(f"{s}={v['default']}" for s, v in r["slots"].items())
        players = "; ".join(f"{role} {', '.join(names)}" for role, names in r["players"].items())
        out.append(f"      slots: {slots}")
        out.append(f"      players: {players}")
        for phase, spec in r["phases"].items():
            when = "" if spec["by_default"] else " (not with the default options)"
            out.append(f"      phase {phase}{when}: {spec['help'] or '(no help)'}")
            out.append(f"          provides: {', '.join(spec['provides']) or 'nothing'}")
        if r["regularisers"]:
            out.append(f"      regularisers: {', '.join(r['regularisers'])}")
        for data_kind, preset in r["presets"].items():
            out.append(f"      preset for {data_kind} data: {json.dumps(preset)}")
    if r["kind"] == "regulariser":
        out.append(f"      phases: {', '.join(r['phases'])}; needs: {', '.join(r['needs']) or 'nothing'}")
    # The flag that sets each option: --plugin.X for variants, --regulariser.NAME.X (every
    # remedy, callbacks too) and --metric.NAME.X for the kinds a run holds several of,
    # --KIND.X (the slot) otherwise.
    prefix = {
        "variant": "plugin",
        "regulariser": f"regulariser.{r['name']}",
        "callback": f"regulariser.{r['name']}",
        "metric": f"metric.{r['name']}",
    }
    flag = prefix.get(r["kind"], r["kind"])
    for name, o in r["options"].items():
        out.append(f"      --{flag}.{name} {o['type']} = {o['default']!r}")
    return out


def cmd_list(args: argparse.Namespace, extra: list[str]) -> int:
    registry = get_host().registry
    kinds = list(KINDS)
    if args.kind:
        kind = {plural(k): k for k in KINDS}.get(args.kind, args.kind)  # `losses` works as `loss`
        if kind not in KINDS:
            raise GenfwError(f"unknown kind '{args.kind}'; valid kinds: {choices(KINDS)}")
        kinds = [kind]
    rows = [component_row(c) for k in kinds for c in registry.all(k).values()]
    if args.json:
        print(json.dumps(rows, indent=1, default=str))
        return 0
    current = None
    for r in sorted(rows, key=lambda r: (kinds.index(r["kind"]), r["name"])):
        if r["kind"] != current:
            current = r["kind"]
            print(f"{plural(current)}:")
        print("\n".join(describe_component(r)))
    return 0


def cmd_new_plugin(args: argparse.Namespace, extra: list[str]) -> int:
    from genfw import scaffold

    root = scaffold.new_plugin(args.name, args.kind, args.dir)
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    print(f"wrote {root}: {', '.join(files)}")
    print(f"next: pip install -e {root} && pytest {root} && genfw plugins")
    return 0


def cmd_compare(args: argparse.Namespace, extra: list[str]) -> int:
    from genfw import compare

    runs = [Path(r) for r in args.runs]
    text, out, metric = compare.compare(runs, metric=args.metric, out=args.out, overwrite=args.overwrite)
    print(text)
    print(f"\n{metric} over steps: {out}")
    return 0


# --- entry point -----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="genfw", description="Train and evaluate generative models.", allow_abbrev=False)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser = functools.partial(sub.add_parser, allow_abbrev=False)  # type: ignore[method-assign]

    p = sub.add_parser(
        "train",
        help="train a variant",
        description="Train a variant. Any slot, option or section can be set: --prior spike_slab, "
        "--prior.alpha 0.3, --regulariser gradient_penalty, --train.log_every 10, --train.lr_schedule "
        "cosine, --set KEY=VALUE. "
        "--metric NAME adds a metric to those the run computes anyway: a config file's metrics: (exactly "
        "those), else the defaults of the data set and the variant (mode_coverage on toy2d, autoencoding "
        "for autoencoders on images); --no-default-metrics leaves the defaults out.",
    )
    p.add_argument("--plugin", "--variant", dest="plugin", help="the variant to train (genfw list variant)")
    p.add_argument("--config", help="a YAML or TOML config file; flags override it")
    p.add_argument("--out", help="the run folder (default: runs/VARIANT-DATASET-TIME)")
    p.add_argument(
        "--resume", nargs="?", const=True, metavar="RUN_DIR", help="continue a run from its latest checkpoint"
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="set any config key")
    p.add_argument("--cpu", action="store_true", help="train on the CPU even if a GPU is available")
    p.add_argument("--compile", action="store_true", help="torch.compile the networks (train.compile)")
    p.add_argument(
        "--sync-batch-norm",
        action="store_true",
        help="SyncBatchNorm over processes (GPUs; train.sync_batch_norm)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--no-default-metrics",
        action="store_true",
        help="leave out the data set's and the variant's default metrics: only those named by --metric",
    )
    group = p.add_argument_group("shortcuts", "train options; --train.X or --set given too win over them")
    defaults = attrs.fields_dict(config_mod.TrainOptions)
    for flag, meaning in {
        "steps": "N: training steps",
        "batch_size": "N: examples per step and process",
        "seed": f"N: random seed, 0 .. {config_mod.MAX_SEED}",
        "mixed_precision": "MODE: no, fp16 or bf16",
        "lr_schedule": "NAME: learning-rate schedule of every phase, constant, linear, cosine or step "
        "(one phase's: --train.lr_schedules.PHASE.lr_schedule; more keys in the README)",
        "lr_warmup": "N: steps of linear learning-rate warm-up before the schedule",
        "log_with": "NAMES: experiment trackers, tensorboard, mlflow, wandb, aim or all, separated by commas",
    }.items():
        metavar, text = meaning.split(": ", 1)
        dashed = f"--{flag.replace('_', '-')}"
        group.add_argument(
            *dict.fromkeys([dashed, f"--{flag}"]),
            dest=flag,
            action=_Shortcut,
            default=argparse.SUPPRESS,
            metavar=metavar,
            help=f"{text} ({SHORTCUTS[flag]}, default {_default(defaults[flag])})",
        )
    p.set_defaults(func=cmd_train, shortcuts=[], passthrough=True)

    p = sub.add_parser("sample", help="draw samples from a trained run or an exported model")
    p.add_argument("run", help="the run folder, an exported folder (genfw export) or hf://USER/NAME")
    p.add_argument("-n", type=int_arg("n", check.at_least(1)), default=64, help="number of samples")
    p.add_argument("--seed", type=SEED, default=0, help=f"0 .. {config_mod.MAX_SEED} (default 0)")
    p.add_argument(
        "--label",
        type=int,
        help="draw this class only (conditional runs; a categorical code's value for codes)",
    )
    p.add_argument("--out", help="output file: .png (grid) or .safetensors (tensors 'samples', 'labels')")
    p.add_argument(
        "--truncation",
        type=float_arg("truncation"),
        metavar="PSI",
        help="the truncation trick at PSI, for variants that declare one (its meaning is the variant's: "
        "StyleGAN's w_avg + PSI (w - w_avg); BigGAN's z redrawn where |z| > PSI)",
    )
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser(
        "eval",
        help="compute metrics on a trained run",
        description="e.g. genfw eval RUN --metric mode_coverage. --metric NAME computes only the metrics "
        "named (they replace the run's); without it, the run's own.",
    )
    p.add_argument("run", nargs="?", help="the run folder")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--real", help="instead of a run: real images (a folder, or .npy/.npz/.safetensors)")
    p.add_argument("--fake", help="instead of a run: generated images (a folder, or .npy/.npz/.safetensors)")
    p.add_argument("--out", help="with --real/--fake: also write the results to this JSON file")
    p.set_defaults(func=cmd_eval, passthrough=True)

    p = sub.add_parser("plugins", help="installed plugins and what they register")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_plugins)

    p = sub.add_parser("list", help="components with their options and defaults")
    p.add_argument("kind", nargs="?", help=f"one of: {', '.join(KINDS)}")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser(
        "new-plugin",
        help="write a ready plugin package (genfw-NAME/)",
        description="Write genfw-NAME/: pyproject with the genfw entry point, one module with a documented "
        "component, a test using genfw.testing, a README and a .gitignore. It installs with pip install -e "
        "and passes its tests.",
    )
    p.add_argument(
        "name", help="the component's name, e.g. mine or MyLoss (letters, digits, _; its case is kept)"
    )
    p.add_argument(
        "--kind",
        required=True,
        help="loss, prior, regulariser, metric, generator, critic, encoder, dataset or variant",
    )
    p.add_argument("--dir", default=".", help="where to create genfw-NAME/ (default: here)")
    p.set_defaults(func=cmd_new_plugin)

    p = sub.add_parser(
        "compare",
        help="final metrics of several runs, and one metric over steps as a PNG",
        description="e.g. genfw compare runs/a runs/b --metric mode_coverage/modes --out modes.png",
    )
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders")
    p.add_argument(
        "--metric", help="the key to plot (default: an evaluated metric all runs share, else a loss)"
    )
    p.add_argument("--out", help="the PNG to write (default: compare-METRIC.png here)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.set_defaults(func=cmd_compare)
    for sub_parser in sub.choices.values():
        passthrough = bool(sub_parser.get_default("passthrough"))  # train, eval: --prior.alpha 0.3, ...
        sub_parser.set_defaults(parser=sub_parser, extensions=[], passthrough=passthrough)
    add_plugin_commands(sub, get_host().commands)
    return parser


def add_plugin_commands(sub: Any, table: CommandTable) -> None:
    """The plugins' commands (``genfw_register_commands``), then their options on existing
    commands; each command's parser keeps its extensions in the default ``extensions``."""
    for command in table.commands.values():
        if command.name in sub.choices:
            raise GenfwError(
                f"{command.plugin.describe()} adds command '{command.name}', which genfw already has; rename it"
            )
        p = sub.add_parser(
            command.name,
            help=f"{command.help} (plugin {command.plugin.name})",
            description=command.description or command.help,
        )
        p.set_defaults(
            func=functools.partial(_run_plugin_command, command.run),
            parser=p,
            extensions=[],
            passthrough=command.passthrough,
        )
        try:
            command.configure(p)
        except argparse.ArgumentError as exc:
            raise GenfwError(
                f"{command.plugin.describe()} cannot add command '{command.name}': {exc}"
            ) from None
    for extension in table.extensions:
        p = sub.choices.get(extension.command)
        if p is None:
            raise GenfwError(
                f"{extension.plugin.describe()} extends command '{extension.command}', which does not "
                f"exist; commands: {choices(sub.choices)}"
            )
        applied: list[Applied] = p.get_default("extensions")
        applied.append(apply_extension(extension, p))


def _run_plugin_command(
    run: Callable[[argparse.Namespace], int], args: argparse.Namespace, extra: list[str]
) -> int:
    args.extra = extra
    return run(args)


def main(argv: list[str] | None = None) -> int:
    try:
        args, extra = build_parser().parse_known_args(argv)
        if extra and not args.passthrough:
            flag = next((t.partition("=")[0] for t in extra if t.startswith("-")), None)
            guess = nearest(flag, _own_flags(args)) if flag else None
            hint = f" (did you mean {guess}?)" if guess else ""
            args.parser.error(f"unrecognized arguments: {' '.join(extra)}{hint}")
        for applied in args.extensions:  # plugins' options of this command that the user gave
            if applied.extension.run_before and applied.given(args):
                applied.extension.run_before(args)
        return args.func(args, extra)
    except GenfwError as exc:
        if os.environ.get(ENV_DEBUG, "") not in ("", "0"):
            # The whole chain, the plugin's own error (hidden by `from None`) included.
            exc.__suppress_context__ = False
            traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
        print(f"genfw: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("genfw: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `genfw list | head`
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
