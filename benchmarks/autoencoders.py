"""The autoencoder family side by side on digits: ae, vae, aae, wae-mmd, wae-gan, and (where
registered) iwae, vae with the VampPrior, tcvae, rae, ae sampled from an ex-post Gaussian mixture,
and vqvae.

Every variant trains with the same networks (the default ``mlp`` encoder, decoder and, where
there is one, latent critic), the same latent dimension, batch size, number of steps and seed, on
the same 90% of ``digits`` (``train.holdout 0.1``). Then, on the held-out 10% and on samples
drawn from the prior through the decoder, the script prints side by side:

- ``rec``: held-out reconstruction error, ``||x - x_rec||^2`` per example (data in [-1, 1], 64
  pixels), the ``autoencoding`` metric's ``reconstruction``;
- ``fid_px``: FID of 1,797 samples against the whole data set on raw pixels (``fid`` with the
  ``raw`` extractor: a Fréchet distance between 64-d pixel Gaussians; no network involved);
- ``fid_clf``: FID in the feature space of a digits classifier (``genfw train-evaluator``), when
  one is given (``--evaluator PATH``) or can be trained here (``--evaluator auto``, the default);
- ``mmd``: MMD^2 between held-out codes and prior samples (IMQ kernels, WAE scales), and
  ``mmd_marg``: the sum of per-coordinate MMD^2 (see ``genfw_plugins/metrics/autoencoder.py``);
- ``elbo``/``iwae``: nats per example where the model has a likelihood (vae, iwae, tcvae): the
  IWAE bound with k = 64 importance samples, a log-likelihood estimate.

Each cell is the mean ± standard deviation over ``--seeds`` (three by default). With ``--pictures
DIR`` the first seed's final samples and held-out reconstructions (``genfw eval --reconstruct``) of
each model are copied there as ``<model>_samples.png`` and ``<model>_reconstructions.png``.

    python benchmarks/autoencoders.py [--steps 3000] [--latent-dim 8] [--seeds 0 1 2] [--evaluator auto]

Not run in CI; the numbers belong in notes. Each variant uses its own defaults otherwise (its
learning rates, lambda = 10 for WAE-MMD and 1 for WAE-GAN, the VAE's Gaussian likelihood with
sigma = 1), i.e. the recipes as a user gets them.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import attrs
from _common import digits_evaluator

from genfw import cli, device_of
from genfw.config import resolve
from genfw.plugins import get_registry
from genfw.train import Trainer, evaluate, load_model

VARIANTS = {
    "ae": {"variant": {"name": "ae"}},
    "vae": {"variant": {"name": "vae"}},
    "aae": {"variant": {"name": "aae"}},
    "wae-mmd": {"variant": {"name": "wae", "penalty": "mmd"}},
    "wae-gan": {"variant": {"name": "wae", "penalty": "gan"}},
    "iwae": {"variant": {"name": "iwae"}},
    "vae+vamp": {"variant": {"name": "vae"}, "prior": {"name": "vamp"}},
    "tcvae": {"variant": {"name": "tcvae"}},
    "rae": {"variant": {"name": "rae"}},
    "ae+gmm": {"variant": {"name": "ae", "ex_post": "gmm"}},
    "vqvae": {"variant": {"name": "vqvae"}},
}


def available(registry, raw: dict) -> bool:
    """Whether the model's variant (and prior) are registered here."""
    return raw["variant"]["name"] in registry.names("variant") and (
        "prior" not in raw or raw["prior"]["name"] in registry.names("prior")
    )


def with_latent_dim(registry, raw: dict, latent_dim: int) -> dict:
    """The model's variant options with ``latent_dim`` where the variant has that option."""
    options = registry.get("variant", raw["variant"]["name"]).options
    fields = {f.name for f in attrs.fields(options)} if options is not None else set()
    variant = {**raw["variant"], **({"latent_dim": latent_dim} if "latent_dim" in fields else {})}
    return {**raw, "variant": variant}


def run(raw: dict, args: argparse.Namespace, seed: int, out: Path, registry, metrics: dict, weights) -> dict:
    """Train one model with one seed; its metrics (and classifier FID) and seconds."""
    raw = {
        **raw,
        "dataset": "digits",
        "metrics": dict(metrics),
        "train": {
            "steps": args.steps,
            "batch_size": args.batch_size,
            "seed": seed,
            "holdout": 0.1,
            "eval_every": 0,
            "sample_every": 0,
            "checkpoint_every": 0,
            "progress": False,
        },
    }
    t0 = time.perf_counter()
    result = Trainer(resolve(raw, registry), out).fit()
    seconds = time.perf_counter() - t0
    r = dict(result.metrics)
    if weights:  # the same run, scored again in the classifier's feature space
        clf = {"fid": {"extractor": "classifier", "weights": weights, "num_samples": 1797, "progress": False}}
        built, _, modules = load_model(out, resolve({**raw, "metrics": clf}, registry), with_data=True)
        r["fid_clf"] = evaluate(built, modules, device_of(*modules.values()))["fid/fid"]
    return {**r, "seconds": seconds}


def pictures(name: str, out: Path, folder: Path) -> None:
    """The run's final sample grid and 16 held-out reconstructions (``genfw eval --reconstruct``)."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(sorted((out / "samples").glob("step_*.png"))[-1], folder / f"{name}_samples.png")
    if cli.main(["eval", str(out), "--reconstruct", "16"]) == 0:
        shutil.copy(out / "reconstructions.png", folder / f"{name}_reconstructions.png")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--latent-dim", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--evaluator", default="auto", help="classifier weights for FID, 'auto' or 'none'")
    ap.add_argument("--only", nargs="*", choices=list(VARIANTS), help="a subset of the models")
    ap.add_argument("--pictures", type=Path, help="copy each model's samples and reconstructions here")
    args = ap.parse_args()
    registry = get_registry()
    workdir = Path(tempfile.mkdtemp(prefix="genfw-ae-bench-"))
    weights = digits_evaluator(workdir, args.evaluator)
    metrics = {
        "autoencoding": {"importance_samples": 64},
        "fid": {"extractor": "raw", "num_samples": 1797, "progress": False},
    }
    rows: dict[str, list[dict]] = {}
    for name, raw in VARIANTS.items():
        if args.only and name not in args.only:
            continue
        if not available(registry, raw):
            print(f"skipping {name}: not registered here")
            continue
        raw = with_latent_dim(registry, raw, args.latent_dim)
        for seed in args.seeds:
            out = workdir / f"{name}-{seed}"
            row = run(raw, args, seed, out, registry, metrics, weights)
            rows.setdefault(name, []).append(row)
            print(json.dumps({"variant": name, "seed": seed, **row}), flush=True)
            if args.pictures and seed == args.seeds[0]:
                pictures(name, out, args.pictures)

    cols = [
        ("rec", "autoencoding/reconstruction"),
        ("fid_px", "fid/fid"),
        ("mmd", "autoencoding/latent_mmd"),
        ("elbo", "autoencoding/elbo"),
        ("iwae", "autoencoding/log_likelihood"),
        ("s", "seconds"),
    ]
    if weights:
        cols.insert(2, ("fid_clf", "fid_clf"))
    print()
    print(
        f"digits, {args.steps} steps, batch {args.batch_size}, latent {args.latent_dim}, "
        f"seeds {' '.join(map(str, args.seeds))}: mean ± sd"
    )
    print(f"{'model':10s}" + "".join(f"{c:>18s}" for c, _ in cols))
    for name, runs in rows.items():
        cells = []
        for _, key in cols:
            values = [r[key] for r in runs if r.get(key) is not None]
            if not values:
                cells.append(f"{'-':>18s}")
                continue
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values):>10.4g} ± {sd:<5.2g}")
        print(f"{name:10s}" + "".join(cells))


if __name__ == "__main__":
    main()
