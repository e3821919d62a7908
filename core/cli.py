"""The ``genfw`` command: train, sample, eval, plugins, list.

User errors (:class:`genfw.GenfwError`) print one line, ``genfw: error: ...``, and exit with 2.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from genfw import config as config_mod
from genfw.errors import GenfwError, choices, plural
from genfw.hookspecs import KINDS
from genfw.model import device_of
from genfw.plugins import get_host

# Flags that name a component in a keyed map rather than a slot.
MAPS = {
    "regulariser": "regularisers",
    "regularisers": "regularisers",
    "metric": "metrics",
    "metrics": "metrics",
}
SHORTCUTS = {  # --flag -> config path
    "steps": "train.steps",
    "batch_size": "train.batch_size",
    "seed": "train.seed",
    "mixed_precision": "train.mixed_precision",
}


def parse_overrides(tokens: list[str], sets: list[str]) -> list[tuple[str, Any]]:
    """``--prior spike_slab --prior.alpha 0.3 --regulariser gp --set train.steps=10`` as
    ``[(path, value), ...]``; values are read as YAML."""
    out: list[tuple[str, Any]] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if not tok.startswith("--") or len(tok) == 2:
            raise GenfwError(
                f"unexpected argument '{tok}'; options look like --prior spike_slab or --prior.alpha 0.3"
            )
        key, eq, value = tok[2:].partition("=")
        if not eq:
            if i + 1 >= len(tokens) or tokens[i + 1].startswith("--"):
                raise GenfwError(f"option --{key} needs a value")
            value = tokens[i + 1]
            i += 1
        i += 1
        key = key.replace("-", "_") if key in ("batch-size", "mixed-precision") else key
        head, _, rest = key.partition(".")
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


# --- commands ------------------------------------------------------------------------------------


def cmd_train(args: argparse.Namespace, extra: list[str]) -> int:
    from genfw import train as train_mod

    overrides = parse_overrides(extra, args.set)
    if args.plugin:
        overrides.insert(0, ("variant", args.plugin))
    if args.cpu:
        overrides.append(("train.cpu", True))
    if args.no_progress:
        overrides.append(("train.progress", False))
    registry = get_host().registry

    resume = args.resume is not None
    if resume:
        run_dir = Path(args.resume if isinstance(args.resume, str) else (args.out or ""))
        if not str(run_dir):
            raise GenfwError("--resume needs the run folder: --resume RUN_DIR")
        bad = [p for p, _ in overrides if not p.startswith("train.")]
        if bad or args.config:
            raise GenfwError(
                f"on --resume only train options may change (e.g. --steps); got {bad[0] if bad else '--config'}"
            )
        cfg = train_mod.read_run(run_dir, registry, overrides)
    else:
        raw = config_mod.load_file(args.config) if args.config else {}
        cfg = config_mod.resolve(config_mod.merge(raw, overrides), registry)
        if args.out:
            run_dir = Path(args.out)
        else:
            if int(os.environ.get("WORLD_SIZE", "1")) > 1:
                raise GenfwError(
                    "give --out DIR when launching several processes, so they share one run folder"
                )
            run_dir = Path("runs") / f"{cfg.variant.name}-{cfg.dataset.name}-{time.strftime('%Y%m%d-%H%M%S')}"

    result = train_mod.train(cfg, run_dir, resume=resume, overwrite=args.overwrite)
    if _is_main():
        summary = {"run": str(result.run_dir), "step": result.step, **result.last_logs, **result.metrics}
        print(json.dumps(train_mod.json_safe(summary)))
    return 0


def _is_main() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def cmd_sample(args: argparse.Namespace, extra: list[str]) -> int:
    import safetensors.torch

    from genfw import images
    from genfw import train as train_mod

    if extra:
        raise GenfwError(f"unexpected argument '{extra[0]}' for sample")
    run_dir = Path(args.run)
    cfg = train_mod.read_run(run_dir, get_host().registry)
    out = Path(args.out) if args.out else run_dir / f"sample-seed{args.seed}-n{args.n}.png"
    if out.suffix not in (".png", ".safetensors"):
        raise GenfwError(
            f"--out {out}: unknown format '{out.suffix}'; use .png (a grid) or .safetensors (tensors)"
        )
    if out.exists() and not args.overwrite:
        raise GenfwError(f"{out} already exists; pass --overwrite to replace it or choose another --out")
    _, model, modules = train_mod.load_model(run_dir, cfg, with_data=False)
    info = json.loads((run_dir / train_mod.RUN_FILE).read_text())["data"]
    samples = train_mod.forked(
        args.seed,
        device_of(*modules.values()),
        lambda: train_mod.generate(model, modules, args.n, info["num_classes"]),
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".png":
        images.save_png(images.render(samples, info["kind"]), out)
    else:
        safetensors.torch.save_file({"samples": samples.contiguous()}, str(out))
    print(str(out))
    return 0


def cmd_eval(args: argparse.Namespace, extra: list[str]) -> int:
    from genfw import train as train_mod

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
    cfg = train_mod.read_run(run_dir, registry, overrides)
    if not cfg.metrics:
        raise GenfwError(
            f"no metrics to compute; name some with --metric NAME (registered: {choices(registry.names('metric'))})"
        )
    built, _, modules = train_mod.load_model(run_dir, cfg, with_data=True)
    assert built is not None
    results = train_mod.json_safe(train_mod.evaluate(built, modules, device_of(*modules.values())))
    (run_dir / "eval.json").write_text(json.dumps(results, indent=1))
    print(json.dumps(results))
    return 0


def _plugin_rows() -> list[dict[str, Any]]:
    host = get_host()
    registry = host.registry
    rows = []
    for name, info in sorted(host.infos.items()):
        comps: dict[str, list[str]] = {}
        for c in registry:
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
    return rows


def cmd_plugins(args: argparse.Namespace, extra: list[str]) -> int:
    rows = _plugin_rows()
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    for r in rows:
        print(f"{r['name']}  ({r['distribution']} {r['version']}, {r['module']})")
        for kind, names in r["components"].items():
            print(f"    {kind}: {', '.join(sorted(names))}")
    return 0


def _component_row(c: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "kind": c.kind,
        "name": c.name,
        "plugin": c.plugin.name,
        "distribution": c.plugin.dist,
        "help": c.help,
        "options": {n: {"type": t, "default": d} for n, t, d in c.option_fields()},
    }
    if c.kind == "variant":
        row["slots"] = {
            s: {"kind": sl.kind, "default": sl.default, "role": sl.role} for s, sl in c.factory.slots.items()
        }
        row["phases"] = list(getattr(c.factory, "phases", ()))
        row["regularisers"] = list(getattr(c.factory, "regularisers", {}))
        row["presets"] = getattr(c.factory, "presets", {})
    role = getattr(c.factory, "role", None)
    if role:
        row["role"] = role
    for attr in ("phases", "needs"):
        if c.kind == "regulariser" and hasattr(c.factory, attr):
            row[attr] = list(getattr(c.factory, attr))
    return row


def cmd_list(args: argparse.Namespace, extra: list[str]) -> int:
    registry = get_host().registry
    kinds = list(KINDS)
    if args.kind:
        kind = {plural(k): k for k in KINDS}.get(args.kind, args.kind)  # `losses` works as `loss`
        if kind not in KINDS:
            raise GenfwError(f"unknown kind '{args.kind}'; valid kinds: {choices(KINDS)}")
        kinds = [kind]
    rows = [_component_row(c) for k in kinds for c in registry.all(k).values()]
    if args.json:
        print(json.dumps(rows, indent=1, default=str))
        return 0
    current = None
    for r in sorted(rows, key=lambda r: (kinds.index(r["kind"]), r["name"])):
        if r["kind"] != current:
            current = r["kind"]
            print(f"{plural(current)}:")
        extra_bits = f" [{r['role']}]" if "role" in r else ""
        print(f"  {r['name']}{extra_bits} - {r['help']}  (plugin {r['plugin']})")
        if "slots" in r:
            slots = ", ".join(f"{s}={v['default']}" for s, v in r["slots"].items())
            print(f"      slots: {slots}; phases: {', '.join(r['phases'])}")
            if r["regularisers"]:
                print(f"      regularisers: {', '.join(r['regularisers'])}")
            for data_kind, preset in r["presets"].items():
                print(f"      preset for {data_kind} data: {json.dumps(preset)}")
        for name, o in r["options"].items():
            print(
                f"      --{r['kind'] if r['kind'] != 'variant' else 'plugin'}.{name} {o['type']} = {o['default']!r}"
            )
    return 0


# --- entry point -----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="genfw", description="Train and evaluate generative models.", allow_abbrev=False
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser = functools.partial(sub.add_parser, allow_abbrev=False)  # type: ignore[method-assign]

    p = sub.add_parser(
        "train",
        help="train a variant",
        description="Train a variant. Any slot, option or section can be set: --prior spike_slab, "
        "--prior.alpha 0.3, --regulariser gradient_penalty, --train.log_every 10, --set KEY=VALUE.",
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
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sample", help="draw samples from a trained run")
    p.add_argument("run", help="the run folder")
    p.add_argument("-n", type=int, default=64, help="number of samples")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="output file: .png (grid) or .safetensors (tensor 'samples')")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser(
        "eval",
        help="compute metrics on a trained run",
        description="e.g. genfw eval RUN --metric mode_coverage",
    )
    p.add_argument("run", help="the run folder")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("plugins", help="installed plugins and what they register")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_plugins)

    p = sub.add_parser("list", help="components with their options and defaults")
    p.add_argument("kind", nargs="?", help=f"one of: {', '.join(KINDS)}")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.func not in (cmd_train, cmd_eval):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.func(args, extra)
    except GenfwError as exc:
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
