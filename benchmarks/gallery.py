"""The gallery: every built-in variant trained on its natural data set, side by side.

Each variant of the built-in plugins (``genfw list variant``, distribution ``genfw``; new ones are
picked up from the registry) trains for ``--steps`` steps on its default data set (its
``default_dataset``, else digits) with its default options and metrics, through the public API
(``genfw.train``, ``genfw.load(...).sample``, ``encode``/``decode``). The script writes
``docs/img/gallery/NAME.png`` (64 samples; one row per class for conditional models; a scatter
over the data for 2-D points), ``NAME-rec.png`` for autoencoders (held-out digits above their
reconstructions) and ``docs/gallery.md``, with each variant's final metrics, steps and seconds.
Results are kept in ``docs/img/gallery/results.json``, so ``--only`` refreshes some variants and
keeps the others; a variant with no result is listed on the page as missing, with the reason.

    nice -n 10 env OMP_NUM_THREADS=1 python benchmarks/gallery.py             # every variant
    OMP_NUM_THREADS=1 python benchmarks/gallery.py --only vae sagan            # refresh two
    python benchmarks/gallery.py --page-only                                   # rewrite the page
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import runpy
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import yaml

import genfw
from genfw import images
from genfw.errors import GenfwError
from genfw.plugins import get_host

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "gallery.md"
IMAGES = ROOT / "docs" / "img" / "gallery"
RESULTS = IMAGES / "results.json"
# The generated variant pages show the gallery's pictures; the two pick the built-in variants and
# their family alike (docs/generate.py's builtin and is_autoencoder).
GENERATE = runpy.run_path(str(ROOT / "docs" / "generate.py"))
is_autoencoder = GENERATE["is_autoencoder"]
STEPS = 2000  # the default budget: about 10 minutes of CPU for every variant (docs/gallery.md)
SAMPLES = {"image": 64, "points": 1000}
RECONSTRUCTIONS = 16


def builtin_variants() -> dict[str, Any]:
    """The registry's variants from the built-in plugins, by name, in registration order."""
    return GENERATE["builtin"](get_host().registry, "variant")


def train_one(name: str, steps: int, seed: int, work: Path) -> dict[str, Any]:
    """Train variant ``name`` with its defaults, draw its pictures; what the page shows of it."""
    folder = work / name
    start, cpu = time.perf_counter(), time.process_time()
    run = genfw.train({"variant": name}, out=folder, overwrite=True, steps=steps, seed=seed, progress=False)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    config = yaml.safe_load((folder / "config.yaml").read_text())
    dataset = config["dataset"]["name"] if isinstance(config["dataset"], dict) else config["dataset"]
    gen = genfw.load(run)
    data = _dataset(folder)
    n = SAMPLES[gen.data.kind]
    samples, labels = gen.sample_with_labels(n, seed=seed)
    real = _held_out(data, n) if gen.data.kind == "points" else None  # the scatter's background
    IMAGES.mkdir(parents=True, exist_ok=True)
    images.save_png(images.render(samples, gen.data.kind, real, labels), IMAGES / f"{name}.png")
    record: dict[str, Any] = {
        "dataset": dataset,
        "kind": gen.data.kind,
        "steps": run.step,
        "seconds": round(seconds, 1),  # wall-clock, training and the final metrics
        "cpu_seconds": round(cpu, 1),  # this process's CPU time: the cost on a quiet core
        "seed": seed,
        "metrics": sorted(config.get("metrics") or {}),
        "values": {k: v for k, v in run.metrics.items() if isinstance(v, (int, float))},
        "samples": f"{name}.png",
    }
    if gen.encoders and gen.data.kind == "image":
        x = _held_out(data, RECONSTRUCTIONS)
        rec = gen.decode(gen.encode(x))
        images.save_png(images.pairs_grid(x, rec), IMAGES / f"{name}-rec.png")
        record["reconstructions"] = f"{name}-rec.png"
    return record


def _dataset(folder: Path) -> tuple[Any, float]:
    """The run's data set, built from its config, and its held-out fraction."""
    from genfw.rundir import EVALUATION, read_run

    cfg = read_run(folder, get_host().registry, parts=EVALUATION)
    return cfg.dataset.build(), cfg.train.holdout


def _held_out(data: tuple[Any, float], n: int) -> torch.Tensor:
    """The first ``n`` held-out examples (the split ``genfw eval`` uses; training ones without)."""
    from genfw.data import held_out_examples

    dataset, holdout = data
    if holdout > 0:
        return held_out_examples(dataset, holdout, n)[0]
    return torch.stack([dataset[i][0] for i in range(min(n, len(dataset)))]).float()


def _time(r: dict[str, Any]) -> str:
    """Training and final metrics: CPU seconds (a quiet core's cost) and wall-clock seconds."""
    cpu = f"{r['cpu_seconds']} s of CPU, " if "cpu_seconds" in r else ""
    return f"{cpu}{r['seconds']} s wall-clock"


def _number(v: float) -> str:
    return "n/a" if not math.isfinite(v) else f"{v:.4g}"


def write_page(results: dict[str, dict[str, Any]], variants: dict[str, Any]) -> str:
    """``docs/gallery.md`` from ``results``: a section per built-in variant, missing ones named."""
    lines = [
        "# Gallery",
        "",
        "Every built-in variant, trained with its default options on its default data set (the variant's",
        "`default_dataset`, else `digits`) for a small fixed CPU budget, with the metrics the run",
        "computes by default (the variant's `default_metrics`, else the data set's: `autoencoding` for the",
        "autoencoders on digits, `mode_coverage` on `toy2d`; the GANs on digits have none). These are",
        "short runs to compare methods by looking, not converged results. Written by",
        "`benchmarks/gallery.py` (`--only NAME` refreshes one variant, `--steps` sets the budget); the",
        "sample grids are `genfw.load(run).sample(64, seed=0)` (1000 points on `toy2d`), the reconstructions",
        "held-out digits (top of each pair) through `encode` and `decode`.",
        "",
    ]
    machines = sorted({r.get("machine", "") for r in results.values()} - {""})
    if machines:
        lines += [f"Measured on: {'; '.join(machines)}.", ""]
    missing = []
    families = [
        ("GAN family", [n for n, c in variants.items() if not is_autoencoder(c)]),
        ("Autoencoders", [n for n, c in variants.items() if is_autoencoder(c)]),
    ]
    for family, names in families:
        lines += [f"## {family}", ""]
        for name in names:
            r = results.get(name)
            if r is None or "error" in r:
                reason = r["error"] if r else f"not trained yet: `python benchmarks/gallery.py --only {name}`"
                missing.append((name, reason))
                continue
            lines += [f"### {name}", ""]
            values = ", ".join(f"`{k}` {_number(v)}" for k, v in sorted(r["values"].items()))
            which = ", ".join(f"`{m}`" for m in r["metrics"]) or "none"
            lines += [
                f"{variants[name].help.rstrip('.')}. Data set `{r['dataset']}`, {r['steps']} steps (seed "
                f"{r['seed']}): {_time(r)}. Metrics: {which}{': ' + values if values else ''}.",
                "",
                f"![{name}: samples](img/gallery/{r['samples']})",
            ]
            if "reconstructions" in r:
                lines += [f"![{name}: reconstructions](img/gallery/{r['reconstructions']})"]
            lines += [""]
    if missing:
        lines += ["## Missing", ""]
        lines += [f"- `{name}`: {reason}" for name, reason in missing]
        lines += [""]
    done = [r for r in results.values() if "seconds" in r]
    total = {k: sum(r.get(k, 0.0) for r in done) for k in ("cpu_seconds", "seconds")}
    lines += [
        f"All {len(done)} variants shown: {total['cpu_seconds'] / 60:.1f} minutes of CPU "
        f"({total['seconds'] / 60:.1f} minutes wall-clock), training and final metrics.",
        "",
    ]
    return "\n".join(lines)


def load_results() -> dict[str, dict[str, Any]]:
    return json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--steps", type=int, default=STEPS, help=f"training steps per variant (default {STEPS})"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--only", nargs="+", metavar="NAME", help="these variants only; the others keep their results"
    )
    parser.add_argument("--page-only", action="store_true", help="rewrite docs/gallery.md from results.json")
    parser.add_argument("--work", help="the run folders (default: a temporary folder, removed)")
    args = parser.parse_args(argv)
    variants = builtin_variants()
    unknown = sorted(set(args.only or ()) - set(variants))
    if unknown:
        raise SystemExit(f"gallery: unknown variant {unknown[0]!r}; built-in variants: {', '.join(variants)}")
    results = load_results()
    results = {n: r for n, r in results.items() if n in variants}  # a variant that is gone leaves
    if not args.page_only:
        names = args.only or list(variants)
        machine = f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} thread(s)"
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(args.work) if args.work else Path(tmp)
            for name in names:
                for old in IMAGES.glob(f"{name}*.png"):
                    if old.stem in (name, f"{name}-rec"):
                        old.unlink()
                try:
                    results[name] = train_one(name, args.steps, args.seed, work)
                    results[name]["machine"] = machine
                except GenfwError as exc:  # e.g. a variant with required options
                    results[name] = {"error": f"refused with its defaults: {exc}"}
                except Exception as exc:  # the gallery names the failure and goes on
                    results[name] = {"error": f"failed: {type(exc).__name__}: {' '.join(str(exc).split())}"}
                r = results[name]
                print(f"{name}: {r.get('seconds', '-')} s {r.get('values', r.get('error'))}", file=sys.stderr)
                RESULTS.parent.mkdir(parents=True, exist_ok=True)
                RESULTS.write_text(json.dumps(dict(sorted(results.items())), indent=1) + "\n")
    PAGE.write_text(write_page(results, variants))
    print(PAGE)
    # The variant pages show the gallery's pictures: regenerate them (docs/generate.py).
    GENERATE["main"]([])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
