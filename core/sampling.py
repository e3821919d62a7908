"""Drawing samples from a model (labels, chunks, fixed seeds) and evaluating its metrics."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from genfw.data import held_out_examples, real_examples
from genfw.errors import GenfwError
from genfw.model import EvalContext, Model, Modules, device_of

if TYPE_CHECKING:
    from genfw.assemble import Built

GRID_SEED = 1234  # fixed noise for sample grids, so grids over training are comparable


def sample_labels(model: Model, n: int, labels: int | Tensor | None, device: torch.device) -> Tensor | None:
    """The labels ``(n,)`` on ``device`` with which ``model`` draws ``n`` samples, or ``None``.

    For a conditional model (``model.num_classes = K > 0``): an int draws that class only, a
    tensor ``(n,)`` one class per sample, and ``None`` cycles through the classes (0, 1, ..., K-1,
    0, ...). An unconditional model takes no labels. A label outside ``0..K-1`` is a GenfwError.
    """
    k = model.num_classes
    if labels is None:
        return torch.arange(n, device=device) % k if k else None
    y = torch.as_tensor(labels, dtype=torch.long).to(device).expand(n)
    if not k:
        raise GenfwError(
            f"label {int(y[0])} given, but this model is unconditional (it takes no labels); "
            f"train a conditional variant to draw a chosen class"
        )
    bad = y[(y < 0) | (y >= k)]
    if len(bad):
        raise GenfwError(f"label {int(bad[0])} is outside this model's {k} classes; valid labels: 0..{k - 1}")
    return y


def class_rows(num_classes: int, per_class: int) -> Tensor:
    """Labels for a grid with one row per class: ``0 x per_class, 1 x per_class, ...``."""
    return torch.arange(num_classes).repeat_interleave(per_class)


def truncated_sampler(model: Model, psi: float, variant: str = "this variant") -> Callable[..., Tensor]:
    """``model``'s sampler with the truncation trick at ``psi`` (``Model.truncate``), or a one-line
    GenfwError naming the variants that have one (:attr:`genfw.contracts.Variant.truncation`)."""
    if model.truncate is None:
        from genfw.plugins import variants_where

        raise GenfwError(
            f"--truncation {psi}: {variant} has no truncation trick (its sampler takes no psi); "
            f"variants with one: {variants_where(lambda v: v.truncation)}"
        )
    return lambda m, k, y: model.truncate(m, k, y, psi)


@torch.no_grad()
def generate(
    model: Model,
    modules: Modules,
    n: int,
    *,
    labels: int | Tensor | None = None,
    chunk: int = 1000,
    truncation: float | None = None,
) -> Tensor:
    """``n`` samples on the CPU, made in eval mode in chunks.

    A conditional model draws the classes ``labels`` chooses (see :func:`sample_labels`; by
    default it cycles through all classes); the labels live on the modules' device. With
    ``truncation`` the model's truncated sampler draws them (:func:`truncated_sampler`).
    """
    sample = model.sample if truncation is None else truncated_sampler(model, truncation)
    y_all = sample_labels(model, n, labels, device_of(*modules.values()))
    was_training = {k: mod.training for k, mod in modules.items()}
    for mod in modules.values():
        mod.eval()
    out = []
    try:
        for start in range(0, n, chunk):
            k = min(chunk, n - start)
            y = None if y_all is None else y_all[start : start + k]
            out.append(sample(modules, k, y).float().cpu())
    finally:
        for k, mod in modules.items():
            mod.train(was_training[k])
    return torch.cat(out)


def forked(seed: int, device: torch.device, fn: Callable[[], Any]) -> Any:
    """Run ``fn`` with fixed RNG state, leaving the training streams untouched."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        return fn()


def evaluate(built: Built, modules: Modules, device: torch.device) -> dict[str, float]:
    """Every metric of the run, as ``{"metric/key": value}``; reproducible (fixed seed)."""
    ctx = EvalContext(
        sample=lambda n: generate(built.model, modules, n),
        real=lambda n: real_examples(built.dataset, n),
        dataset=built.dataset,
        model=built.model,
        modules=modules,
        device=device,
        held_out=(
            (lambda n: held_out_examples(built.dataset, built.cfg.train.holdout, n))
            if built.cfg.train.holdout > 0
            else None
        ),
    )
    results: dict[str, float] = {}
    for name, metric in built.metrics.items():
        values = forked(GRID_SEED + 1, device, lambda metric=metric: metric(ctx))
        results.update({f"{name}/{k}": float(v) for k, v in values.items()})
    return results
