"""The autoencoder family side by side on digits: ae, vae, aae, wae-mmd, wae-gan.

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
- ``elbo``/``iwae``: nats per example where the model has a likelihood (vae).

    python benchmarks/autoencoders.py [--steps 3000] [--latent-dim 8] [--seed 0] [--evaluator auto]

Not run in CI; the numbers belong in notes. Each variant uses its own defaults otherwise (its
learning rates, lambda = 10 for WAE-MMD and 1 for WAE-GAN, the VAE's Gaussian likelihood with
sigma = 1), i.e. the recipes as a user gets them.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

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
}


def evaluator(choice: str, workdir: Path) -> str | None:
    """A digits classifier's weights for FID, or None."""
    if choice == "none":
        return None
    if choice != "auto":
        return choice
    out = workdir / "classifier-digits.safetensors"
    try:
        code = cli.main(["train-evaluator", "--dataset", "digits", "--out", str(out), "--no-progress"])
    except SystemExit as exc:  # an older CLI without the command
        code = exc.code
    return str(out) if code == 0 and out.is_file() else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--latent-dim", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--evaluator", default="auto", help="classifier weights for FID, 'auto' or 'none'")
    ap.add_argument("--only", nargs="*", choices=list(VARIANTS), help="a subset of the variants")
    args = ap.parse_args()
    registry = get_registry()
    workdir = Path(tempfile.mkdtemp(prefix="genfw-ae-bench-"))
    weights = evaluator(args.evaluator, workdir)
    metrics = {
        "autoencoding": {"importance_samples": 64},
        "fid": {"extractor": "raw", "num_samples": 1797, "progress": False},
    }
    rows = {}
    for name, raw in VARIANTS.items():
        if args.only and name not in args.only:
            continue
        raw = {
            **raw,
            "dataset": "digits",
            "metrics": dict(metrics),
            "train": {
                "steps": args.steps,
                "batch_size": args.batch_size,
                "seed": args.seed,
                "holdout": 0.1,
                "eval_every": 0,
                "sample_every": 0,
                "checkpoint_every": 0,
                "progress": False,
            },
        }
        raw["variant"] = {**raw["variant"], "latent_dim": args.latent_dim}
        cfg = resolve(raw, registry)
        t0 = time.perf_counter()
        result = Trainer(cfg, workdir / name).fit()
        seconds = time.perf_counter() - t0
        r = dict(result.metrics)
        if weights:  # the same run, scored again in the classifier's feature space
            clf = {
                "fid": {"extractor": "classifier", "weights": weights, "num_samples": 1797, "progress": False}
            }
            built, _, modules = load_model(
                workdir / name, resolve({**raw, "metrics": clf}, registry), with_data=True
            )
            r["fid_clf"] = evaluate(built, modules, device_of(*modules.values()))["fid/fid"]
        rows[name] = {**r, "seconds": seconds}
        print(json.dumps({"variant": name, **rows[name]}), flush=True)

    cols = [
        ("rec", "autoencoding/reconstruction"),
        ("fid_px", "fid/fid"),
        ("mmd", "autoencoding/latent_mmd"),
        ("mmd_marg", "autoencoding/marginal_mmd"),
        ("elbo", "autoencoding/elbo"),
        ("iwae", "autoencoding/log_likelihood"),
        ("s", "seconds"),
    ]
    if weights:
        cols.insert(2, ("fid_clf", "fid_clf"))
    print()
    print(f"digits, {args.steps} steps, batch {args.batch_size}, latent {args.latent_dim}, seed {args.seed}")
    print(f"{'variant':10s}" + "".join(f"{c:>10s}" for c, _ in cols))
    for name, r in rows.items():
        cells = [r.get(k) for _, k in cols]
        print(f"{name:10s}" + "".join(f"{v:10.4g}" if v is not None else f"{'-':>10s}" for v in cells))


if __name__ == "__main__":
    main()
