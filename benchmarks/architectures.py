"""The architectures of modern GANs side by side on digits: dcgan vs sngan vs sagan vs biggan vs stylegan2.

Each recipe trains on ``digits`` (or, with ``--dataset image-folder --dataset-root DIR``, on a folder
of images) for the same number of steps and seed, with its own defaults (the variants' optimisers,
losses, n_critic and remedies: the recipes as a user gets them). Printed side by side:

- ``fid``, ``precision``, ``recall``: against all the real data, in the feature space of a digits
  classifier (``genfw train-evaluator``, trained here once; on other data, raw pixels);
- ``s/step``: wall-clock seconds per training step (each variant's n_critic included) on this
  machine, measured in the same process one recipe after the other;
- ``class hit``: for the conditional recipes (those whose model has classes), the share of samples
  a separate MLP classifier assigns to the class they were asked for (as
  ``benchmarks/conditional_accuracy.py``; chance 10%), beside that classifier's held-out accuracy on
  real digits (the ceiling).

A recipe whose variant is not registered here is skipped with a line saying so.

    OMP_NUM_THREADS=1 python benchmarks/architectures.py [--steps 2000] [--seed 0]
    OMP_NUM_THREADS=1 python benchmarks/architectures.py --runs dcgan sngan --steps 200

Not run in CI; the numbers belong in the README and in notes.
"""

from __future__ import annotations

import argparse
import functools
import json
import tempfile
import time
from pathlib import Path

import torch
from _common import classifier_metrics, digits_evaluator
from conditional_accuracy import train_classifier

from genfw.config import resolve
from genfw.plugins import get_registry
from genfw.train import Trainer, forked, generate

# name -> the raw config over the shared base; the variants' own defaults otherwise.
RECIPES: dict[str, dict] = {
    "dcgan": {"variant": {"name": "gan"}, "generator": {"name": "dcgan"}, "critic": {"name": "dcgan"}},
    "sngan": {"variant": {"name": "sngan"}},
    "sagan": {"variant": {"name": "sagan"}},
    "biggan": {"variant": {"name": "biggan"}},
    "stylegan2": {"variant": {"name": "stylegan2"}},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--runs", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    ap.add_argument("--dataset", default="digits", help="digits, or image-folder with --dataset-root")
    ap.add_argument("--dataset-root", help="the image folder, for --dataset image-folder")
    ap.add_argument("--evaluator", help="a digits classifier's weights (default: train one here)")
    ap.add_argument("--per-class", type=int, default=100, help="samples per class for the class hit rate")
    args = ap.parse_args()
    registry = get_registry()
    workdir = Path(tempfile.mkdtemp(prefix="genfw-architectures-"))
    digits = args.dataset == "digits"
    if digits:
        weights = digits_evaluator(workdir, args.evaluator)
        if weights is None:
            raise SystemExit("could not train the digits classifier (genfw train-evaluator)")
        metrics = classifier_metrics(weights)
        classifier, ceiling = train_classifier(args.seed)
    else:
        metrics = {"fid": {"extractor": "raw", "progress": False}, "precision_recall": {"extractor": "raw"}}
        classifier, ceiling = None, None
    dataset = {"name": args.dataset} if digits else {"name": args.dataset, "root": args.dataset_root}

    rows = {}
    for name in args.runs:
        recipe = RECIPES[name]
        if recipe["variant"]["name"] not in registry.names("variant"):
            print(f"skipping {name}: variant {recipe['variant']['name']!r} is not registered here")
            continue
        raw = {
            **recipe,
            "dataset": dataset,
            "metrics": metrics,
            "train": {
                "steps": args.steps,
                "batch_size": args.batch_size,
                "seed": args.seed,
                "eval_every": 0,
                "sample_every": 0,
                "checkpoint_every": 0,
                "progress": False,
            },
        }
        trainer = Trainer(resolve(raw, registry), workdir / name)
        t0 = time.perf_counter()
        for _ in range(min(20, args.steps)):  # warm-up, not timed
            trainer.train_step()
        t1 = time.perf_counter()
        result = trainer.fit()
        per_step = (time.perf_counter() - t1) / max(args.steps - min(20, args.steps), 1)
        row = {
            "fid": result.metrics["fid/fid"],
            "precision": result.metrics["precision_recall/precision"],
            "recall": result.metrics["precision_recall/recall"],
            "s_per_step": per_step,
            "seconds": time.perf_counter() - t0,
        }
        model = trainer.built.model
        if classifier is not None and model.num_classes:
            labels = torch.arange(model.num_classes).repeat_interleave(args.per_class)
            draw = functools.partial(generate, model, trainer.sampling_modules(), len(labels), labels=labels)
            samples = forked(args.seed + 1, torch.device("cpu"), draw)
            with torch.no_grad():
                hit = (classifier(samples.flatten(1)).argmax(1) == labels).float().mean().item()
            row["class_hit"] = hit
        rows[name] = row
        print(json.dumps({"recipe": name, **row}), flush=True)

    print()
    print(
        f"{args.dataset}, {args.steps} steps, batch {args.batch_size}, seed {args.seed}; "
        f"{'classifier' if digits else 'raw-pixel'} FID and precision/recall against all the real data"
        + (f"; class-hit ceiling (the classifier on real digits) {ceiling:.1%}" if ceiling else "")
    )
    print(f"{'recipe':12s}{'fid':>10s}{'precision':>11s}{'recall':>9s}{'s/step':>9s}{'class hit':>11s}")
    for name, r in rows.items():
        hit = f"{r['class_hit']:11.1%}" if "class_hit" in r else f"{'-':>11s}"
        print(
            f"{name:12s}{r['fid']:10.3g}{r['precision']:11.3f}{r['recall']:9.3f}{r['s_per_step']:9.4f}{hit}"
        )


if __name__ == "__main__":
    main()
