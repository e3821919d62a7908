"""The framework must cost nothing: genfw's training step against a hand-written PyTorch loop,
side by side in one process.

For each variant, both sides start from the same weights and use the same networks, batch size,
optimiser settings and objectives on the same in-memory data. Blocks of steps alternate between
the two sides (so drifts in machine load hit both alike) and the script prints the ratio
genfw / plain of the summed step times. genfw's side is ``Trainer.train_step`` plus its logging
flush every ``log_every`` steps: what ``genfw train`` runs per step, without sample grids,
metrics and checkpoints (periodic, and absent from a bare loop).

    OMP_NUM_THREADS=1 python benchmarks/overhead.py [--batch-size 64] [--rounds 40] [--block 10]
        [--device cpu|cuda|auto] [--variants gan,wgan-gp,vae]

On the CPU it times the process's CPU time (robust on a shared machine; run with
OMP_NUM_THREADS=1 so CPU time is one core's), on a GPU wall time after a device sync. It prints, per variant, the milliseconds per step of each side, the ratio genfw / plain of the
summed times and the median of the per-block ratios (the robust one on a loaded machine). Goal:
at most 1.03 at batch 64. Not run in CI: timings on a shared machine are noisy, so the numbers
belong in notes, never in assertions. (This script supersedes benchmarks/step_overhead.py.)
"""

from __future__ import annotations

import argparse
import copy
import math
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from genfw.config import resolve
from genfw.plugins import get_registry
from genfw.train import Trainer


def players(m: dict, lr: float, betas) -> tuple:
    """Generator, critic and an Adam optimiser for each (both GAN loops)."""
    g, d = m["generator"], m["critic"]
    return (
        g,
        d,
        torch.optim.Adam(g.parameters(), lr=lr, betas=betas),
        torch.optim.Adam(d.parameters(), lr=lr, betas=betas),
    )


def plain_gan(m: dict, x_all: torch.Tensor, batch: int, latent: int, lr: float, betas) -> Callable[[], None]:
    """Non-saturating GAN (Goodfellow et al. 2014), critic step then generator step."""
    g, d, opt_g, opt_d = players(m, lr, betas)
    sample, dev = batches(x_all, batch), x_all.device

    def step() -> None:
        x = sample()
        with torch.no_grad():
            fake = g(torch.randn(batch, latent, device=dev))
        loss_d = F.softplus(-d(x).squeeze(1)).mean() + F.softplus(d(fake).squeeze(1)).mean()
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        loss_g = F.softplus(-d(g(torch.randn(batch, latent, device=dev))).squeeze(1)).mean()
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()

    return step


def plain_wgan_gp(
    m: dict, x_all: torch.Tensor, batch: int, latent: int, lr: float, betas, n_critic: int, lam: float
):
    """WGAN-GP (Gulrajani et al. 2017, Algorithm 1)."""
    g, d, opt_g, opt_d = players(m, lr, betas)
    sample, dev = batches(x_all, batch), x_all.device

    def step() -> None:
        for _ in range(n_critic):
            x = sample()
            with torch.no_grad():
                fake = g(torch.randn(batch, latent, device=dev))
            loss = d(fake).mean() - d(x).mean()
            eps = torch.rand(batch, *([1] * (x.dim() - 1)), device=dev)
            x_hat = (eps * x + (1 - eps) * fake).requires_grad_(True)
            (grad,) = torch.autograd.grad(d(x_hat).sum(), x_hat, create_graph=True)
            loss = loss + lam * (grad.flatten(1).norm(dim=1) - 1).square().mean()
            opt_d.zero_grad(set_to_none=True)
            loss.backward()
            opt_d.step()
        loss_g = -d(g(torch.randn(batch, latent, device=dev))).mean()
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()

    return step


def plain_vae(m: dict, x_all: torch.Tensor, batch: int, lr: float):
    """VAE (Kingma & Welling 2014): Gaussian likelihood with sigma 1, closed-form KL."""
    enc, dec = m["encoder"], m["generator"]
    opt = torch.optim.Adam([*enc.parameters(), *dec.parameters()], lr=lr, betas=(0.9, 0.999))
    sample = batches(x_all, batch)
    half_log_2pi = 0.5 * math.log(2 * math.pi)

    def step() -> None:
        x = sample()
        mu, logvar = enc(x).chunk(2, dim=1)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        x_hat = dec(z)
        nll = (0.5 * (x - x_hat).square() + half_log_2pi).flatten(1).sum(1)
        kl = 0.5 * (mu.square() + logvar.exp() - 1 - logvar).sum(1)
        loss = (nll + kl).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def batches(x_all: torch.Tensor, batch: int) -> Callable[[], torch.Tensor]:
    """Shuffled batches by indexing, epoch after epoch (what genfw's TensorLoader does)."""
    state = {"perm": torch.randperm(len(x_all), device=x_all.device), "pos": 0}

    def next_batch() -> torch.Tensor:
        if state["pos"] + batch > len(x_all):
            state["perm"], state["pos"] = torch.randperm(len(x_all), device=x_all.device), 0
        idx = state["perm"][state["pos"] : state["pos"] + batch]
        state["pos"] += batch
        return x_all[idx]

    return next_batch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(variant: str, args: argparse.Namespace, tmp: Path) -> tuple[float, float, float]:
    registry = get_registry()
    raw = {
        "variant": variant,
        "dataset": "digits",
        "train": {
            "steps": 10**9,
            "batch_size": args.batch_size,
            "progress": False,
            "cpu": args.device == "cpu",
        },
    }
    cfg = resolve(raw, registry)
    trainer = Trainer(cfg, tmp / variant)
    device = trainer.accelerator.device
    modules = {n: copy.deepcopy(mod) for n, mod in trainer.plain.items()}  # the same initial weights
    x_all = trainer.built.dataset.tensors[0].to(device)
    o = cfg.variant.options
    if variant == "gan":
        plain = plain_gan(modules, x_all, args.batch_size, o.latent_dim, o.lr_critic, (o.beta1, o.beta2))
    elif variant == "wgan-gp":
        lam = cfg.regularisers["gradient_penalty"].options.weight
        plain = plain_wgan_gp(
            modules, x_all, args.batch_size, o.latent_dim, o.lr_critic, (o.beta1, o.beta2), o.n_critic, lam
        )
    else:
        plain = plain_vae(modules, x_all, args.batch_size, o.lr)

    log_every = cfg.train.log_every

    def genfw_block() -> None:
        for _ in range(args.block):
            trainer.train_step()
            if trainer.step % log_every == 0:
                trainer.flush_logs()

    def plain_block() -> None:
        for _ in range(args.block):
            plain()

    for block in (genfw_block, plain_block):  # warm-up
        block()
    sync(device)
    t_genfw, t_plain, ratios = 0.0, 0.0, []

    # On the CPU, the process's CPU time: what other processes on a shared machine do while this
    # one waits for a core does not count (wall time would). On a GPU, wall time after a sync.
    clock = time.process_time if device.type == "cpu" else time.perf_counter

    def timed(block: Callable[[], None]) -> float:
        t0 = clock()
        block()
        sync(device)
        return clock() - t0

    for r in range(args.rounds):
        # Alternate which side goes first (ABBA), so neither always runs on the other's caches.
        if r % 2 == 0:
            g, p = timed(genfw_block), timed(plain_block)
        else:
            p, g = timed(plain_block), timed(genfw_block)
        t_genfw += g
        t_plain += p
        ratios.append(g / p)
    steps = args.rounds * args.block
    return t_genfw / steps * 1e3, t_plain / steps * 1e3, statistics.median(ratios)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--block", type=int, default=10, help="steps per timed block")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--variants", default="gan,wgan-gp,vae")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: this machine (or this torch build) has no CUDA device")
    torch.manual_seed(0)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch_size}, "
        f"{args.rounds} rounds x {args.block} steps per side, digits 8x8, default networks (mlp), "
        f"device {args.device}"
    )
    print(
        f"{'variant':10s} {'genfw ms/step':>14s} {'plain ms/step':>14s} {'genfw/plain':>12s} {'median block ratio':>19s}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for variant in args.variants.split(","):
            g, p, med = measure(variant, args, Path(tmp))
            print(f"{variant:10s} {g:14.3f} {p:14.3f} {g / p:12.3f} {med:19.3f}")


if __name__ == "__main__":
    main()
