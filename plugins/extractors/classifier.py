"""Extractors that work offline: ``classifier`` (a small CNN trained on a labelled data set by
``genfw train-evaluator``, the command this plugin adds) and ``raw`` (the samples themselves,
flattened).

``classifier`` is how MNIST-style papers score generators without Inception: its penultimate
layer gives the features (FID, KID, precision/recall, density/coverage) and its last layer the
class logits (Inception Score). Numbers made with it are comparable only with numbers made with
the same classifier file (its sha256 is part of every cache key) and never with Inception ones.

A trained evaluator is two files: ``NAME.safetensors`` (weights, key ``classifier.<param>``) and
``NAME.json`` beside it (what it was trained on, its architecture, held-out accuracy and the
weights' sha256, checked on load).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import attrs
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import genfw
from genfw import checkpoint
from genfw import validators as check
from genfw.commands import Commands
from genfw.hookspecs import Register
from genfw_plugins.extractors._common import check_finite, sha256_file

FORMAT = "genfw-classifier-evaluator"
VERSION = 1


class ConvClassifier(nn.Module):
    """Three 3x3 convolutions (the last two with stride 2), global average pooling to a
    ``4 * width`` feature vector, then a linear layer to the class logits."""

    def __init__(self, channels: int, num_classes: int, width: int = 32) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
            nn.BatchNorm2d(2 * width),
            nn.LeakyReLU(0.2),
            nn.Conv2d(2 * width, 4 * width, 3, stride=2, padding=1),
            nn.BatchNorm2d(4 * width),
            nn.LeakyReLU(0.2),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(4 * width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))


def meta_path(weights: Path) -> Path:
    return weights.with_suffix(".json")


def fit(
    dataset: genfw.GenDataset,
    out: Path,
    *,
    name: str,
    dataset_options: dict[str, Any] | None = None,
    steps: int = 2000,
    seed: int = 0,
    progress: bool = True,
    batch_size: int = 128,
    lr: float = 1e-3,
    width: int = 32,
    held_out: float = 0.1,
) -> dict[str, Any]:
    """Train a :class:`ConvClassifier` on ``dataset`` (labelled images) and write ``out`` and its
    JSON metadata atomically. Returns the metadata (with ``accuracy`` on the held-out share)."""
    info = dataset.info
    if info.kind != "image" or len(info.shape) != 3:
        raise genfw.GenfwError(
            f"train-evaluator trains an image classifier; data set '{name}' holds {info.kind} of shape "
            f"{info.shape}; for points use --metric.NAME.extractor raw"
        )
    if info.num_classes < 2:
        raise genfw.GenfwError(
            f"train-evaluator needs a labelled data set (2 or more classes); '{name}' has "
            f"{info.num_classes} classes; give class subfolders (image_folder) or another data set"
        )
    gen = torch.Generator().manual_seed(seed)
    if dataset.tensors is not None:
        x, y = dataset.tensors[0].float(), dataset.tensors[1].long()
    else:
        loader = torch.utils.data.DataLoader(dataset, batch_size=256)
        pairs = list(loader)
        x, y = torch.cat([p[0] for p in pairs]).float(), torch.cat([p[1] for p in pairs]).long()
    keep = y >= 0
    x, y = x[keep], y[keep]
    perm = torch.randperm(x.shape[0], generator=gen)
    n_test = max(1, round(held_out * x.shape[0])) if held_out > 0 else 0
    test, train_idx = perm[:n_test], perm[n_test:]
    if train_idx.numel() < 2:
        raise genfw.GenfwError(f"data set '{name}' has too few labelled examples ({x.shape[0]}) to train on")

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = ConvClassifier(info.shape[0], info.num_classes, width)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc="train-evaluator", file=sys.stderr, dynamic_ncols=True)
    net.train()
    for step in range(steps):
        idx = train_idx[
            torch.randint(train_idx.numel(), (min(batch_size, train_idx.numel()),), generator=gen)
        ]
        loss = F.cross_entropy(net(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if bar is not None:
            bar.update(1)
            if step % 50 == 0:
                bar.set_postfix(loss=f"{loss.item():.3g}", refresh=False)
    if bar is not None:
        bar.close()
    net.eval()
    with torch.no_grad():
        accuracy = float((net(x[test]).argmax(1) == y[test]).float().mean()) if n_test else math.nan

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    checkpoint.save_weights(out, {"classifier": net})
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "dataset": name,
        "dataset_options": dataset_options or {},
        "shape": list(info.shape),
        "num_classes": info.num_classes,
        "width": width,
        "feature_dim": 4 * width,
        "steps": steps,
        "seed": seed,
        "held_out": n_test,
        "accuracy": accuracy,
        "sha256": sha256_file(out),
        "note": "features of this classifier are not comparable with Inception (standard FID) numbers",
    }
    tmp = meta_path(out).with_name(meta_path(out).name + ".tmp")
    tmp.write_text(json.dumps(meta, indent=1))
    tmp.replace(meta_path(out))
    return meta


# --- the extractors --------------------------------------------------------------------------------


@attrs.define
class ClassifierOptions:
    weights: str = ""
    """The .safetensors file written by `genfw train-evaluator` (its .json must lie beside it)."""


class ClassifierExtractor(nn.Module):
    """A data set's own classifier (genfw train-evaluator): offline, not comparable with Inception."""

    def __init__(self, options: ClassifierOptions) -> None:
        super().__init__()
        if not options.weights:
            raise genfw.GenfwError(
                "extractor 'classifier' needs its weights: train them with `genfw train-evaluator "
                "--dataset NAME`, then pass --metric.NAME.weights PATH.safetensors"
            )
        path = Path(options.weights).expanduser()
        meta_file = meta_path(path)
        if not path.is_file() or not meta_file.is_file():
            missing = path if not path.is_file() else meta_file
            raise genfw.GenfwError(
                f"classifier evaluator file {missing} does not exist; train one with "
                f"`genfw train-evaluator --dataset NAME --out {path}`"
            )
        try:
            meta = json.loads(meta_file.read_text())
            if meta.get("format") != FORMAT:
                raise ValueError(f"format is {meta.get('format')!r}, not {FORMAT!r}")
            self.shape = tuple(int(s) for s in meta["shape"])
            num_classes, width, expected = int(meta["num_classes"]), int(meta["width"]), meta["sha256"]
        except (ValueError, KeyError, TypeError) as exc:
            raise genfw.GenfwError(
                f"{meta_file} is not a genfw evaluator description ({exc}); re-run genfw train-evaluator"
            ) from None
        digest = sha256_file(path)
        if digest != expected:
            raise genfw.GenfwError(
                f"{path} has sha256 {digest[:12]}..., but {meta_file.name} records {expected[:12]}...; "
                f"the weights were changed or belong to another evaluator: re-run genfw train-evaluator"
            )
        self.meta = meta
        self.net = ConvClassifier(self.shape[0], num_classes, width)
        checkpoint.load_weights(path, {"classifier": self.net})
        self.net.eval().requires_grad_(False)
        self.identity = f"classifier:{digest}"
        self.accepts = f"images of shape {self.shape} in [-1, 1] (data set '{meta.get('dataset')}')"

    def _check(self, x: Tensor) -> Tensor:
        if tuple(x.shape[1:]) != self.shape:
            raise genfw.GenfwError(
                f"extractor 'classifier' was trained on '{self.meta.get('dataset')}' images of shape "
                f"{self.shape}, got samples of shape {tuple(x.shape[1:])}; train an evaluator on this "
                f"data set with genfw train-evaluator"
            )
        x = x.float()
        check_finite(x, "samples given to the classifier extractor")
        return x

    @torch.no_grad()
    def features(self, x: Tensor) -> Tensor:
        return self.net.body(self._check(x))

    @torch.no_grad()
    def logits(self, x: Tensor) -> Tensor:
        return self.net(self._check(x))

    fit = staticmethod(fit)


@attrs.define
class RawOptions:
    max_dim: int = attrs.field(default=4096, validator=check.at_least(1))
    """Refuse samples with more values than this (covariances grow with the square)."""


class RawExtractor(nn.Module):
    """The samples themselves, flattened: for 2-D points and small data; no weights."""

    accepts = "any samples (N, ...), flattened to (N, d)"

    def __init__(self, options: RawOptions) -> None:
        super().__init__()
        self.options = options
        self.identity = "raw"

    @torch.no_grad()
    def features(self, x: Tensor) -> Tensor:
        x = x.reshape(x.shape[0], -1).float()
        if x.shape[1] > self.options.max_dim:
            raise genfw.GenfwError(
                f"extractor 'raw' got samples of {x.shape[1]} values, more than max_dim="
                f"{self.options.max_dim}; use a feature extractor (inception, classifier) for images"
            )
        return x


@genfw.hookimpl
def genfw_register_extractors(register: Register) -> None:
    register("classifier", ClassifierExtractor, options=ClassifierOptions)
    register("raw", RawExtractor, options=RawOptions)


# --- genfw train-evaluator -------------------------------------------------------------------------


def configure_train_evaluator(parser: argparse.ArgumentParser) -> None:
    from genfw.cli import SEED, int_arg

    parser.add_argument(
        "--dataset", help="the labelled data set (genfw list dataset); --dataset.OPTION VALUE sets options"
    )
    parser.add_argument(
        "--extractor", default="classifier", help="the trainable extractor (default classifier)"
    )
    parser.add_argument("--out", help="weights file (default evaluators/EXTRACTOR-DATASET.safetensors)")
    parser.add_argument("--steps", type=int_arg("steps", check.at_least(1)), default=2000)
    parser.add_argument("--seed", type=SEED, default=0)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing evaluator file")
    parser.add_argument("--no-progress", action="store_true")


def train_evaluator(
    registry: Any,
    dataset_raw: dict[str, Any],
    *,
    extractor: str,
    out: Path | None,
    steps: int,
    seed: int,
    progress: bool,
    overwrite: bool,
) -> tuple[Path, dict[str, Any]]:
    """Train the ``extractor``'s network (an extractor whose factory has ``fit``) on a data set;
    returns the weights path and metadata."""
    from genfw.config import _split
    from genfw.errors import choices

    component = registry.get("extractor", extractor, where="--extractor")
    fit_fn = getattr(component.factory, "fit", None)
    if fit_fn is None:
        trainable = [c.name for c in registry.all("extractor").values() if hasattr(c.factory, "fit")]
        raise genfw.GenfwError(
            f"extractor '{extractor}' cannot be trained; trainable extractors: {choices(trainable)}"
        )
    name, opts = _split(dataset_raw, "dataset")
    if not name:
        raise genfw.GenfwError("give the data set to train on: --dataset NAME (genfw list dataset)")
    spec = registry.spec("dataset", name, opts, where="dataset")
    out = Path(out) if out else Path("evaluators") / f"{extractor}-{name}.safetensors"
    if out.suffix != ".safetensors":
        raise genfw.GenfwError(
            f"--out {out}: the evaluator is written as .safetensors; give a path ending in .safetensors"
        )
    if out.exists() and not overwrite:
        raise genfw.GenfwError(
            f"{out} already exists; pass --overwrite to replace it or choose another --out"
        )
    dataset = spec.build()
    meta = fit_fn(dataset, out, name=name, dataset_options=opts, steps=steps, seed=seed, progress=progress)
    return out, meta


def run_train_evaluator(args: argparse.Namespace) -> int:
    from genfw import config as config_mod
    from genfw.cli import parse_overrides
    from genfw.plugins import get_registry
    from genfw.rundir import json_safe

    overrides = parse_overrides(args.extra, [])
    bad = [p for p, _ in overrides if not p.startswith("dataset")]
    if bad or not args.dataset:
        raise genfw.GenfwError(
            f"genfw train-evaluator takes --dataset NAME and --dataset.OPTION VALUE; got {bad[0] if bad else 'no --dataset'}"
        )
    raw = config_mod.merge({"dataset": args.dataset}, overrides)["dataset"]
    out, meta = train_evaluator(
        get_registry(),
        raw,
        extractor=args.extractor,
        out=args.out,
        steps=args.steps,
        seed=args.seed,
        progress=not args.no_progress,
        overwrite=args.overwrite,
    )
    print(json.dumps(json_safe({"evaluator": str(out), **meta})))
    print(
        f"use it with: --metric.fid.extractor {args.extractor} --metric.fid.weights {out} "
        f"(numbers are comparable only with this evaluator, not with Inception FID)",
        file=sys.stderr,
    )
    return 0


@genfw.hookimpl
def genfw_register_commands(commands: Commands) -> None:
    commands.add(
        "train-evaluator",
        help="train a classifier to measure FID/IS/... offline on a labelled data set",
        description="e.g. genfw train-evaluator --dataset digits; its numbers are not comparable with "
        "Inception FID. Then: genfw eval RUN --metric fid --metric.fid.extractor classifier "
        "--metric.fid.weights evaluators/classifier-digits.safetensors",
        configure=configure_train_evaluator,
        run=run_train_evaluator,
        passthrough=True,
    )
