"""Small data, where augmentation remedies matter: ``gan`` on digits with all and with 10% of the data.

Every run trains ``gan`` (non-saturating loss) with the ``dcgan`` generator and critic (the critic
without batch norm, so that ``r1`` applies and every run has the same critic) on ``digits``, for
the same step budget, batch size and seeds, on ``train.data_fraction`` 1.0 and 0.1 of the
training examples (the 10% are one fixed subset for every run and seed). Recipes:

- ``plain``: no remedy;
- ``diffaugment``: DiffAugment (Zhao et al. 2020), policy ``color,translation,cutout``;
- ``ada``: adaptive discriminator augmentation (Karras et al. 2020), target 0.6, with p's speed
  scaled to the budget: ``kimg`` 10 (p can move by 1 over 10k images) where the authors use 500
  over runs of ~25M images;
- ``diffaugment+lecam``: DiffAugment with the LeCam regulariser (Tseng et al. 2021);
- ``r1``: the R1 penalty (Mescheder et al. 2018);
- ``sngan``: the ``sngan`` variant, where it is registered.

Each run is scored against all 1,797 real digits in the feature space of a digits classifier
(``genfw train-evaluator``, trained here once): FID and precision/recall (Kynkäänniemi et al. 2019,
k = 3). The table gives each recipe's mean and standard deviation over the seeds, and the gain over
``plain`` at each data fraction: DiffAugment's paper reports the gain growing as data shrinks
(CIFAR-10 FID with BigGAN: 100% data 9.59 -> 8.70, 20% 21.58 -> 14.04, 10% 39.78 -> 22.40).

    OMP_NUM_THREADS=1 python benchmarks/data_efficient.py [--steps 2000] [--seeds 0 1 2]
    OMP_NUM_THREADS=1 python benchmarks/data_efficient.py --runs plain diffaugment --fractions 0.1

Not run in CI; the numbers belong in the README and in notes. ``--grids DIR`` also writes each
recipe's sample grid (seed 0) side by side as one PNG per data fraction.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from _common import classifier_metrics, digits_evaluator, is_remedy

from genfw.config import resolve
from genfw.plugins import get_registry
from genfw.train import Trainer, forked, generate, load_model, read_run

RECIPES: dict[str, dict] = {
    "plain": {},
    "diffaugment": {"regularisers": {"diffaugment": {"policy": "color,translation,cutout"}}},
    # The authors adjust p over 500k images in runs of ~25M; this budget sees tens of thousands.
    "ada": {"regularisers": {"ada": {"kimg": 10}}},
    "diffaugment+lecam": {
        "regularisers": {"diffaugment": {"policy": "color,translation,cutout"}, "lecam": {}}
    },
    "r1": {"regularisers": {"r1": {}}},
    "sngan": {"variant": {"name": "sngan"}},
}


def config(recipe: str, fraction: float, seed: int, args: argparse.Namespace, metrics: dict) -> dict:
    """The run's raw config: the recipe over the shared base."""
    raw = {
        "variant": {"name": "gan"},
        "dataset": "digits",
        "generator": {"name": "dcgan"},
        "critic": {"name": "dcgan", "batch_norm": False},
        "metrics": metrics,
        "train": {
            "steps": args.steps,
            "batch_size": args.batch_size,
            "seed": seed,
            "data_fraction": fraction,
            "eval_every": 0,
            "sample_every": 0,
            "checkpoint_every": 0,
            "progress": False,
        },
    }
    extra = RECIPES[recipe]
    if "variant" in extra:  # a variant with networks of its own
        raw = {k: v for k, v in raw.items() if k not in ("generator", "critic")}
    return {**raw, **extra}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--fractions", type=float, nargs="+", default=[1.0, 0.1])
    ap.add_argument("--runs", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    ap.add_argument("--evaluator", help="a digits classifier's weights (default: train one here)")
    ap.add_argument("--grids", type=Path, help="write the seed-0 sample grids side by side here")
    args = ap.parse_args()
    registry = get_registry()
    runs = [r for r in args.runs if all(registered(registry, k, n) for k, n in needs(r))]
    for r in set(args.runs) - set(runs):
        print(f"skipping {r}: not registered here ({', '.join(f'{k} {n}' for k, n in needs(r))})")
    workdir = Path(tempfile.mkdtemp(prefix="genfw-data-efficient-"))
    weights = digits_evaluator(workdir, args.evaluator)
    if weights is None:
        raise SystemExit("could not train the digits classifier (genfw train-evaluator)")
    metrics = classifier_metrics(weights)

    results: dict[tuple[str, float], list[dict]] = {}
    for fraction in args.fractions:
        for recipe in runs:
            for seed in args.seeds:
                out = workdir / f"{recipe}-{fraction}-{seed}"
                raw = config(recipe, fraction, seed, args, metrics)
                t0 = time.perf_counter()
                result = Trainer(resolve(raw, registry), out).fit()
                row = {
                    "fid": result.metrics["fid/fid"],
                    "precision": result.metrics["precision_recall/precision"],
                    "recall": result.metrics["precision_recall/recall"],
                    "seconds": time.perf_counter() - t0,
                }
                results.setdefault((recipe, fraction), []).append(row)
                print(json.dumps({"recipe": recipe, "fraction": fraction, "seed": seed, **row}), flush=True)

    print()
    print(
        f"digits, gan + dcgan (critic without batch norm), {args.steps} steps, batch {args.batch_size}, "
        f"seeds {' '.join(map(str, args.seeds))}; classifier FID and precision/recall against all 1,797 digits"
    )
    print(f"{'recipe':20s}{'data':>6s}{'FID':>16s}{'vs plain':>10s}{'precision':>16s}{'recall':>16s}")
    for fraction in args.fractions:
        base = results.get(("plain", fraction))
        for recipe in runs:
            rows = results[(recipe, fraction)]
            fid = [r["fid"] for r in rows]
            gain = f"{statistics.mean(fid) / statistics.mean(r['fid'] for r in base):9.2f}x" if base else "-"
            print(
                f"{recipe:20s}{fraction:6.0%}{cell(fid, 8.3)}{gain:>10s}"
                f"{cell([r['precision'] for r in rows], 5.3)}{cell([r['recall'] for r in rows], 5.3)}"
            )
    if args.grids:
        write_grids(args, runs, workdir)


def needs(recipe: str) -> list[tuple[str, str]]:
    """The components a recipe needs: its regularisers (or callbacks) and its variant."""
    extra = RECIPES[recipe]
    named = [("remedy", name) for name in extra.get("regularisers", {})]
    if "variant" in extra:
        named.append(("variant", extra["variant"]["name"]))
    return named


def registered(registry, kind: str, name: str) -> bool:
    return is_remedy(registry, name) if kind == "remedy" else name in registry.names(kind)


def cell(values: list[float], fmt: float) -> str:
    """``mean ± sd`` over the seeds, right-aligned in a column of 16 (``fmt``: the mean's significant
    digits after the point, e.g. ``8.3``)."""
    digits = str(fmt).split(".")[1]
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{f'{statistics.mean(values):.{digits}g} ± {sd:.2g}':>16s}"


def write_grids(args: argparse.Namespace, runs: list[str], workdir: Path) -> None:
    """One PNG per data fraction: a row of 16 samples per recipe (seed 0), as ``genfw sample``
    draws them (seed 0)."""
    import torch

    from genfw.images import image_grid, save_png

    args.grids.mkdir(parents=True, exist_ok=True)
    registry = get_registry()
    for fraction in args.fractions:
        rows = []
        for recipe in runs:
            run = workdir / f"{recipe}-{fraction}-{args.seeds[0]}"
            _, model, modules = load_model(run, read_run(run, registry), with_data=False)
            rows.append(forked(0, torch.device("cpu"), lambda m=model, mods=modules: generate(m, mods, 16)))
        path = args.grids / f"data_efficient_{round(fraction * 100)}.png"
        save_png(image_grid(torch.cat(rows), nrow=16), path)
        print(f"wrote {path} (rows: {', '.join(runs)})")


if __name__ == "__main__":
    main()
