"""Do conditional GANs draw the class they are asked for? cgan and acgan on ``digits``, side by side.

A small MLP classifier is trained here on the real digits (1,500 for training, the other 297 held
out; its held-out accuracy is printed as the ceiling). Each variant then trains on ``digits`` on the
CPU with a fixed seed, draws ``--per-class`` samples for each class k through ``genfw.train.generate``
(the path of ``genfw sample --label k``), and the script prints the share classified as k (chance:
10%). The unconditional ``gan`` is the control: its "requested" label is ignored.

InfoGAN is unsupervised, so it has no requested class; for it the script prints the mutual-
information bound of its categorical code over training (from ``metrics.jsonl``), the empirical
mutual information between the code value and the classifier's digit (at most log 10 = 2.303 nats;
0 for a code that says nothing of the digit), and for each code value the share of its samples in
its most frequent digit (purity) with the number of distinct digits those majorities cover.

    OMP_NUM_THREADS=1 python benchmarks/conditional_accuracy.py            # 3000 steps each
    OMP_NUM_THREADS=1 python benchmarks/conditional_accuracy.py --steps 200 --variants cgan
"""

from __future__ import annotations

import argparse
import functools
import json
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from genfw.config import merge, resolve
from genfw.plugins import get_registry
from genfw.train import Trainer, forked, generate
from genfw_plugins.datasets.digits import Digits, DigitsOptions


def train_classifier(seed: int) -> tuple[nn.Module, float]:
    """An MLP on the real digits (in [-1, 1]); returns it and its held-out accuracy."""
    x, y = Digits(DigitsOptions()).tensors
    x = x.flatten(1)
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(x), generator=g)
    train, test = perm[:1500], perm[1500:]
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Dropout(0.2), nn.Linear(256, 10))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, weight_decay=1e-4)
    for _ in range(60):  # epochs of mini-batches of 64
        net.train()
        for idx in train[torch.randperm(len(train), generator=g)].split(64):
            loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        acc = (net(x[test]).argmax(1) == y[test]).float().mean().item()
    return net, acc


def train_variant(variant: str, steps: int, seed: int, out: Path) -> Trainer:
    raw = merge(
        {"variant": variant, "dataset": "digits"},
        [("train.steps", steps), ("train.seed", seed), ("train.progress", False), ("train.cpu", True)],
    )
    trainer = Trainer(resolve(raw, get_registry()), out / variant, overwrite=True)
    trainer.fit()
    return trainer


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-class", type=int, default=200)
    parser.add_argument("--variants", nargs="+", default=["gan", "cgan", "acgan", "infogan"])
    args = parser.parse_args()
    torch.set_num_threads(1)

    classifier, ceiling = train_classifier(args.seed)
    print(f"classifier held-out accuracy on real digits: {ceiling:.1%} (the ceiling)")
    print(f"{args.steps} steps per variant, seed {args.seed}, {args.per_class} samples per class")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for variant in args.variants:
            t0 = time.perf_counter()
            trainer = train_variant(variant, args.steps, args.seed, Path(tmp))
            seconds = time.perf_counter() - t0
            model, modules = trainer.built.model, trainer.plain
            k = model.num_classes or 10
            labels = torch.arange(k).repeat_interleave(args.per_class)
            asked = labels if model.num_classes else None
            draw = functools.partial(generate, model, modules, len(labels), labels=asked)
            samples = forked(args.seed + 1, torch.device("cpu"), draw)
            with torch.no_grad():
                predicted = classifier(samples.flatten(1)).argmax(1)
            row = {"variant": variant, "seconds": round(seconds, 1)}
            if variant == "infogan":
                # Purity of each code value: the share of its samples in its most frequent class.
                counts = torch.zeros(k, 10)
                counts.index_put_((labels, predicted), torch.ones(len(labels)), accumulate=True)
                purity = counts.max(1).values / counts.sum(1)
                joint = counts / counts.sum()
                outer = joint.sum(1, keepdim=True) * joint.sum(0, keepdim=True)
                mi = (joint * (joint / outer).log()).nan_to_num().sum()  # I(code; classified digit)
                row["purity_per_code"] = [round(p, 3) for p in purity.tolist()]
                row["mean_purity"] = round(purity.mean().item(), 3)
                row["majority_class_per_code"] = counts.argmax(1).tolist()
                row["distinct_majority_classes"] = len(set(row["majority_class_per_code"]))
                row["mi_code_digit_nats"] = round(mi.item(), 3)
                logs = [
                    json.loads(line)
                    for line in (Path(tmp) / variant / "metrics.jsonl").read_text().splitlines()
                ]
                mi = [
                    (r["step"], r["critic/mi_categorical_0"]) for r in logs if "critic/mi_categorical_0" in r
                ]
                row["mi_categorical_nats"] = {s: round(v, 3) for s, v in (mi[0], mi[len(mi) // 2], mi[-1])}
                row["mi_bound_max_nats"] = round(torch.log(torch.tensor(float(k))).item(), 3)
            else:
                per_class = [(predicted[labels == c] == c).float().mean().item() for c in range(k)]
                row["accuracy"] = round((predicted == labels).float().mean().item(), 3)
                row["per_class"] = [round(a, 2) for a in per_class]
            rows.append(row)
            print(json.dumps(row), flush=True)

    print()
    print(f"{'variant':<8} {'requested class hit':>20} {'/ chance':>9} {'/ ceiling':>10} {'seconds':>8}")
    for row in rows:
        if "accuracy" in row:
            acc = row["accuracy"]
            print(
                f"{row['variant']:<8} {acc:>20.1%} {acc / 0.1:>9.2f} {acc / ceiling:>10.2f} {row['seconds']:>8}"
            )
        else:
            print(
                f"{row['variant']:<8} code purity {row['mean_purity']:.1%}, "
                f"{row['distinct_majority_classes']} distinct digits, "
                f"I(code; digit) {row['mi_code_digit_nats']:.2f} of 2.30 nats, {row['seconds']} s"
            )


if __name__ == "__main__":
    main()
