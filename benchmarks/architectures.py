"""GAN architectures side by side on digits (or any labelled image data set) for the same CPU time:
dcgan vs sagan vs sngan (unconditional and conditional) vs biggan vs stylegan2 (where registered).

Each architecture trains as a user gets it (its variant's defaults: learning rates, loss, n_critic,
network widths), on the same data with the same seed, for the same wall-clock budget: a short
calibration run measures its seconds per training step, then it trains for ``budget / that``
steps. Then the script prints, side by side:

- ``fid``: FID of 1,797 samples against the data in the feature space of a digits classifier
  (``genfw train-evaluator``, trained here unless ``--evaluator PATH`` is given);
- ``prec``/``rec``: improved precision and recall (Kynkäänniemi et al. 2019, k = 3) in the same
  feature space;
- ``acc``: for conditional models, the share of ``--per-class`` samples per class that the
  classifier puts in the class asked for (chance 10%; as ``benchmarks/conditional_accuracy.py``);
- ``s/step`` and ``steps``: the measured time of one training step (every phase, n_critic
  included) and the steps the budget bought.

    OMP_NUM_THREADS=1 python benchmarks/architectures.py                       # 300 s each
    OMP_NUM_THREADS=1 python benchmarks/architectures.py --seconds 60 --only dcgan sngan-cond
    OMP_NUM_THREADS=1 python benchmarks/architectures.py --steps 400 --only sngan-cond sngan-concat
    OMP_NUM_THREADS=1 python benchmarks/architectures.py --dataset image-folder --dataset-option path=DIR

Not run in CI; the numbers belong in notes (the README quotes a run with its command).
"""

from __future__ import annotations

import argparse
import functools
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from _common import digits_evaluator

from genfw.config import resolve
from genfw.plugins import get_registry
from genfw.sampling import forked, generate
from genfw.train import Trainer

ARCHITECTURES: dict[str, dict[str, Any]] = {
    # The DCGAN recipe: the gan variant (non-saturating loss, Adam(2e-4, 0.5)) with DCGAN networks.
    "dcgan": {"variant": {"name": "gan"}, "generator": "dcgan", "critic": "dcgan"},
    "sagan": {"variant": {"name": "sagan"}},
    "sngan": {"variant": {"name": "sngan", "conditional": "never"}},
    # Projection critic and conditional batch norm (the data's labels).
    "sngan-cond": {"variant": {"name": "sngan"}},
    # The same with one-hot labels on z and on the critic's input (not run unless asked: --only).
    "sngan-concat": {
        "variant": {"name": "sngan"},
        "generator": {"name": "resnet", "conditioning": "concat"},
        "critic": {"name": "resnet", "conditioning": "concat"},
    },
}
ARCHITECTURES["biggan"] = {"variant": {"name": "biggan"}}
ARCHITECTURES["stylegan2"] = {"variant": {"name": "stylegan2"}}
DEFAULT = ("dcgan", "sagan", "sngan", "sngan-cond", "biggan", "stylegan2")


def config(name: str, dataset: dict[str, Any], steps: int, args: argparse.Namespace, metrics: dict) -> dict:
    arch = dict(ARCHITECTURES[name])
    if args.resnet_channels and name.startswith("sngan"):
        for player in ("generator", "critic"):
            arch[player] = {"name": "resnet", **arch.get(player, {}), "channels": args.resnet_channels}
    return {
        **arch,
        "dataset": dataset,
        "metrics": metrics,
        "train": {
            "steps": steps,
            "batch_size": args.batch_size,
            "seed": args.seed,
            "log_every": max(1, steps),
            "sample_every": 0,
            "eval_every": 0,
            "checkpoint_every": 0,
            "progress": False,
            "cpu": True,
        },
    }


def seconds_per_step(trainer: Trainer) -> float:
    """The loop's own clock at its last log (set-up excluded) over the steps it ran."""
    rows = [json.loads(line) for line in (trainer.run_dir / "metrics.jsonl").read_text().splitlines()]
    timed = [r for r in rows if "time" in r]
    return timed[-1]["time"] / timed[-1]["step"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=300.0, help="training budget of each architecture")
    ap.add_argument("--steps", type=int, default=0, help="train this many steps instead (no time budget)")
    ap.add_argument("--calibration-steps", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--per-class", type=int, default=100)
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--dataset-option", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--evaluator", default="auto", help="classifier weights for the metrics, or 'auto'")
    ap.add_argument("--only", nargs="*", choices=list(ARCHITECTURES), help="a subset of the architectures")
    ap.add_argument(
        "--resnet-channels",
        type=int,
        default=0,
        help="width of both resnet networks (0: the authors', G 256 / D 128)",
    )
    args = ap.parse_args()
    torch.set_num_threads(1)
    registry = get_registry()
    options = dict(kv.split("=", 1) for kv in args.dataset_option)
    dataset = {"name": args.dataset, **options}
    workdir = Path(tempfile.mkdtemp(prefix="genfw-arch-bench-"))
    weights = digits_evaluator(workdir, args.evaluator, args.dataset, options)
    if weights is None:
        raise SystemExit("could not train the classifier evaluator (genfw train-evaluator)")
    feature = {"extractor": "classifier", "weights": weights, "num_samples": 1797, "progress": False}
    metrics = {"fid": dict(feature), "precision_recall": dict(feature)}
    classifier = registry.get("extractor", "classifier")
    clf = classifier.factory(classifier.options(weights=weights))

    rows = {}
    for name in args.only or DEFAULT:
        if ARCHITECTURES[name]["variant"]["name"] not in registry.names("variant"):
            print(f"skipping {name}: its variant is not registered here")
            continue
        steps = args.steps
        if not steps:
            calib = Trainer(
                resolve(config(name, dataset, args.calibration_steps, args, {}), registry),
                workdir / f"{name}-calib",
            )
            calib.fit()
            steps = max(1, int(args.seconds / seconds_per_step(calib)))
        trainer = Trainer(resolve(config(name, dataset, steps, args, metrics), registry), workdir / name)
        t0 = time.perf_counter()
        result = trainer.fit()
        row = {
            "steps": steps,
            "s/step": seconds_per_step(trainer),
            "train_s": time.perf_counter() - t0,
            "fid": result.metrics.get("fid/fid"),
            "prec": result.metrics.get("precision_recall/precision"),
            "rec": result.metrics.get("precision_recall/recall"),
        }
        model = trainer.built.model
        if model.num_classes:
            labels = torch.arange(model.num_classes).repeat_interleave(args.per_class)
            draw = functools.partial(generate, model, trainer.sampling_modules(), len(labels), labels=labels)
            samples = forked(args.seed + 1, torch.device("cpu"), draw)
            row["acc"] = (clf.logits(samples).argmax(1) == labels).float().mean().item()
        rows[name] = row
        print(json.dumps({"architecture": name, **row}), flush=True)

    cols = ["fid", "prec", "rec", "acc", "s/step", "steps"]
    print()
    width = f"resnet width {args.resnet_channels}" if args.resnet_channels else "authors' resnet widths"
    budget = f"{args.steps} steps" if args.steps else f"{args.seconds:g} s of training"
    print(f"{args.dataset}, {budget} each, batch {args.batch_size}, seed {args.seed}, {width}")
    print(f"{'architecture':12s}" + "".join(f"{c:>9s}" for c in cols))
    for name, r in rows.items():
        cells = [r.get(c) for c in cols]
        print(f"{name:12s}" + "".join(f"{v:9.4g}" if v is not None else f"{'-':>9s}" for v in cells))


if __name__ == "__main__":
    main()
