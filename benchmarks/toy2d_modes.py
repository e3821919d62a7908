"""Mode collapse made visible: GAN variants and remedies on the 2-D mixtures of Gaussians.

Each run trains one recipe on ``toy2d`` (``--which grid``, the default: 25 centres on
``{-4, -2, 0, 2, 4}^2``, std 0.05; ``--which ring``: 8 centres on the unit circle, std 0.01) for a
fixed number of steps with each seed of a fixed set, then measures ``mode_coverage`` as VEEGAN
and PacGAN define it (2500 samples; a sample is high quality within 3 std of its nearest mode; a
mode is captured when it has one high-quality sample). The table prints the mean (and min-max
over seeds) of modes captured and % high-quality samples, beside the published figures of that
mixture (PacGAN, Lin et al. 2018, Table 1). A PNG of each run's samples (red) over the data
(grey) is saved as ``OUT/<which>_<run>_seed<S>.png``.

    OMP_NUM_THREADS=1 python benchmarks/toy2d_modes.py [--which grid|ring] [--steps 4000]
        [--seeds 0 1 2] [--runs gan wgan ...] [--out runs/toy2d_modes]
    # the wgan-gp points preset on the ring (its goal: 8/8 modes, >= 95% high quality):
    OMP_NUM_THREADS=1 python benchmarks/toy2d_modes.py --which ring --runs wgan-gp --steps 5000
    # the grid's recipe (goal: 25 modes, >= 95% high quality on seeds 0-2 in 150,000 steps), then
    # its ablation: each run takes one thing out of it (or adds top_k)
    OMP_NUM_THREADS=1 python benchmarks/toy2d_modes.py --runs recipe --steps 150000
    OMP_NUM_THREADS=1 python benchmarks/toy2d_modes.py --steps 150000 --seeds 0 \
        --runs recipe-relu recipe-fast_lr recipe-decay recipe-packing recipe-ema recipe+top_k

Remedies (regularisers from ``genfw_plugins/tricks.py``) join the table when they are
registered; a run whose component is missing is listed as skipped. Not run in CI: the numbers
belong in notes, never in assertions.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import is_remedy

from genfw.config import resolve
from genfw.errors import GenfwError
from genfw.plugins import get_registry
from genfw.train import Trainer

# Published figures per mixture (PacGAN Table 1: mean over runs).
PUBLISHED = {
    "grid": [
        ("VEEGAN (PacGAN Table 1)", 24.6, 40.0),
        ("PacGAN4 (PacGAN Table 1)", 24.8, 93.6),
    ],
    "ring": [
        ("GAN (PacGAN Table 1)", 6.3, 98.2),
        ("PacGAN4 (PacGAN Table 1)", 7.8, 95.9),
    ],
}

# The GAN-loss recipes get the toy settings that wgan, wgan-gp and madgan carry as their "points"
# presets (2-D noise, batches of 256: the WGAN-GP authors' gan_toy.py); the plain gan has no preset
# (its defaults serve images), so the benchmark sets them.
TOY = {"variant": {"latent_dim": 2}, "train": {"batch_size": 256}}

# Five times the default learning rates for both players, decaying linearly to 0 over the run (the
# grid's recipe, below).
FAST = {
    "variant": {"latent_dim": 2, "lr_generator": 1e-3, "lr_critic": 1e-3},
    "train": {"batch_size": 256, "lr_schedule": "linear"},
}

RELU = {"activation": "relu"}
PACK_EMA = {"packing": {"m": 4}, "ema": {}}

# name -> (variant, extra config); anything not set comes from the variant and its preset.
RUNS: dict[str, tuple[str, dict[str, Any]]] = {
    "gan": ("gan", TOY),
    "wgan": ("wgan", {}),
    "wgan-gp": ("wgan-gp", {}),
    "wgan-gp+ema": ("wgan-gp", {"regularisers": {"ema": {}}}),
    "dragan": ("dragan", TOY),
    "lsgan": ("lsgan", TOY),
    "madgan": ("madgan", {}),
    "gan+minibatch_discrimination": ("gan", {**TOY, "regularisers": {"minibatch_discrimination": {}}}),
    "gan+instance_noise": ("gan", {**TOY, "regularisers": {"instance_noise": {}}}),
    "gan+feature_matching": ("gan", {**TOY, "regularisers": {"feature_matching": {}}}),
    "gan+experience_replay": ("gan", {**TOY, "regularisers": {"experience_replay": {}}}),
    "gan+ema": ("gan", {**TOY, "regularisers": {"ema": {}}}),
    # PacGAN4: packs of 4 (64 packs per batch of 256).
    "gan+packing": ("gan", {**TOY, "regularisers": {"packing": {"m": 4}}}),
    "gan+packing+ema": ("gan", {**TOY, "regularisers": {"packing": {"m": 4}, "ema": {}}}),
    # The grid's recipe: a ReLU generator (PacGAN's; genfw's mlp default is leaky ReLU), both
    # learning rates five times the default (1e-3) decaying linearly to 0 over the run
    # (train.lr_schedule), packing and ema. Each run after it takes one thing out or adds one.
    "recipe": ("gan", {**FAST, "generator": RELU, "regularisers": PACK_EMA}),
    "recipe-relu": ("gan", {**FAST, "regularisers": PACK_EMA}),
    "recipe-fast_lr": ("gan", {**TOY, "train": FAST["train"], "generator": RELU, "regularisers": PACK_EMA}),
    "recipe-decay": (
        "gan",
        {**FAST, "train": TOY["train"], "generator": RELU, "regularisers": PACK_EMA},
    ),
    "recipe-packing": ("gan", {**FAST, "generator": RELU, "regularisers": {"ema": {}}}),
    "recipe-ema": ("gan", {**FAST, "generator": RELU, "regularisers": {"packing": {"m": 4}}}),
    "recipe+top_k": ("gan", {**FAST, "generator": RELU, "regularisers": {**PACK_EMA, "top_k": {}}}),
}
DEFAULT_RUNS = list(RUNS)


def config(variant: str, extra: dict[str, Any], steps: int, seed: int, which: str = "grid") -> dict[str, Any]:
    raw: dict[str, Any] = {
        "variant": {"name": variant},
        "dataset": {"name": "toy2d", "which": which},
        "metrics": {"mode_coverage": {}},
        "train": {
            "steps": steps,
            "seed": seed,
            "log_every": 100,
            "sample_every": 0,
            "eval_every": 0,
            "checkpoint_every": 0,
            "progress": False,
        },
    }
    for key, value in extra.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    return raw


def missing(registry, extra: dict[str, Any]) -> list[str]:
    """The remedies a run names that are registered neither as regulariser nor as callback."""
    return [r for r in extra.get("regularisers", {}) if not is_remedy(registry, r)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--which", default="grid", choices=list(PUBLISHED))
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--runs", nargs="+", default=DEFAULT_RUNS, choices=list(RUNS))
    ap.add_argument("--out", type=Path, default=Path("runs/toy2d_modes"))
    args = ap.parse_args()
    registry = get_registry()
    args.out.mkdir(parents=True, exist_ok=True)
    rows: list[tuple[str, str, str, str, str]] = []
    for name in args.runs:
        variant, extra = RUNS[name]
        lacking = missing(registry, extra)
        if lacking:
            print(f"{name}: skipped ({', '.join(lacking)} not registered)", flush=True)
            continue
        modes, hq, secs = [], [], []
        for seed in args.seeds:
            with tempfile.TemporaryDirectory() as tmp:
                run = Path(tmp) / "run"
                t0 = time.perf_counter()
                try:
                    cfg = resolve(config(variant, extra, args.steps, seed, args.which), registry)
                    result = Trainer(cfg, run).fit()
                except GenfwError as exc:
                    print(f"{name} seed {seed}: {exc}", flush=True)
                    modes.append(float("nan"))
                    hq.append(float("nan"))
                    continue
                secs.append(time.perf_counter() - t0)
                modes.append(result.metrics["mode_coverage/modes"])
                hq.append(100.0 * result.metrics["mode_coverage/high_quality"])
                total = result.metrics["mode_coverage/modes_total"]
                png = sorted((run / "samples").glob("*.png"))[-1]
                shutil.copy(png, args.out / f"{args.which}_{name}_seed{seed}.png")
            print(
                f"{name} seed {seed}: modes {modes[-1]:.0f}/{total:.0f}, high quality {hq[-1]:.1f}% "
                f"({secs[-1]:.0f} s)",
                flush=True,
            )
        ok = [(m, h) for m, h in zip(modes, hq, strict=True) if m == m]
        if not ok:
            rows.append((name, "diverged", "", "", ""))
            continue
        ms, hs = [m for m, _ in ok], [h for _, h in ok]
        rows.append(
            (
                name,
                f"{statistics.mean(ms):.1f} ({min(ms):.0f}-{max(ms):.0f})",
                f"{statistics.mean(hs):.1f} ({min(hs):.1f}-{max(hs):.1f})",
                f"{len(ok)}/{len(modes)}",
                f"{statistics.mean(secs):.0f}",
            )
        )
    print()
    print(f"toy2d {args.which}; {args.steps} steps, seeds {args.seeds}; PNGs in {args.out}")
    print(
        f"| {'run':32} | {'modes (min-max)':16} | {'% high quality (min-max)':24} | {'runs':5} | {'s/run':5} |"
    )
    print(f"|{'-' * 34}|{'-' * 18}|{'-' * 26}|{'-' * 7}|{'-' * 7}|")
    for r in rows:
        print(f"| {r[0]:32} | {r[1]:16} | {r[2]:24} | {r[3]:5} | {r[4]:5} |")
    for label, m, h in PUBLISHED[args.which]:
        print(f"| {label:32} | {m:<16} | {h:<24} | {'':5} | {'':5} |")


if __name__ == "__main__":
    main()
