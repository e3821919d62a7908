"""Consistency regularisation for GANs, and a learning-rate warm-up, for genfw: two remedies written
only against genfw's documented plugin API (:mod:`genfw.contracts`, :mod:`genfw.hookspecs`).

``consistency`` (a regulariser on the critic phase)
    CR-GAN (Zhang, Zhang, Odena & Lee 2020, "Consistency regularization for generative adversarial
    networks", ICLR): the critic should score an image and a semantics-preserving augmentation of
    it alike. With ``D`` the critic's raw score (the output of its last layer, before any
    activation) and ``T`` a random augmentation (a horizontal flip with probability 1/2, then a
    translation by up to ``translate`` pixels on each axis with reflection padding), the critic
    adds::

        weight_real * E_x (D(x) - D(T(x)))^2                    (CR, weight_real = 10)
      + weight_fake * E_z (D(G(z)) - D(T(G(z))))^2              (bCR, weight_fake = 10 too)

    to its objective. The second term is the balanced form bCR of Zhao, Singh, Lee, Zhang, Odena &
    Zhang (2021, "Improved consistency regularization for GANs", AAAI): regularising on real images
    only lets the generator learn the augmentation's artefacts; ``weight_fake: 0`` (the default) is
    CR, ``weight_fake: 10`` bCR as in that paper. Expectations are batch means; gradients flow
    through both ``D(x)`` and ``D(T(x))`` (the papers' algorithms); the generator is untouched.
    The critic scores a batch and its augmentation in two calls, so a batch-normalised critic
    normalises each with its own statistics.

``lr_warmup`` (a callback)
    Linear learning-rate warm-up (Goyal et al. 2017, "Accurate, large minibatch SGD: training
    ImageNet in 1 hour"): in training step ``s`` (``s`` steps done before it) every optimiser's
    learning rate is its base rate times::

        start_factor + (1 - start_factor) * min(s, steps) / steps

    so step 0 trains at ``start_factor`` times the base rate and step ``steps`` and later at the
    base rate. Each phase's optimiser is set just before its step; where genfw sets a phase's rate
    itself before every step (its callback ``lr_schedule``: ``train.lr_schedule``, or a variant's
    ``genfw.Phase.lr_scale`` such as BEGAN's decay) the warm-up multiplies that rate. The factor is
    logged as ``PHASE/lr_factor``.

Use::

    genfw train --plugin gan --critic dcgan --generator dcgan --regulariser consistency --regulariser lr_warmup
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import attrs
import genfw
import torch
import torch.nn.functional as F
from genfw import validators as check
from genfw.contracts import Callback, LoopState
from genfw.hookspecs import Register
from torch import Tensor

__version__ = "0.1.0"


# --- the augmentation T ---------------------------------------------------------------------------


def shift_and_flip(x: Tensor, dy: Tensor, dx: Tensor, flip: Tensor) -> Tensor:
    """``T(x)`` for given draws: images ``x (B, C, H, W)``, flipped left-right where ``flip (B,)``
    is true, then moved down by ``dy (B,)`` and right by ``dx (B,)`` pixels (negative: up, left),
    the uncovered border filled by reflection (``out[i, j] = reflect(x)[i - dy, j - dx]``)."""
    b, _, h, w = x.shape
    x = torch.where(flip.view(b, 1, 1, 1), x.flip(3), x)
    pad = int(max(dy.abs().max(), dx.abs().max())) if b else 0
    if pad == 0:
        return x
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")  # (B, C, H + 2 pad, W + 2 pad)
    rows = torch.arange(h, device=x.device) + pad - dy.view(b, 1)  # (B, H) rows of `padded`
    cols = torch.arange(w, device=x.device) + pad - dx.view(b, 1)  # (B, W)
    batch = torch.arange(b, device=x.device).view(b, 1, 1)
    out = padded.permute(0, 2, 3, 1)[batch, rows.view(b, h, 1), cols.view(b, 1, w)]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2)


def augment(x: Tensor, translate: int, flip: bool) -> Tensor:
    """A random ``T(x)``: each image of ``x (B, C, H, W)`` flipped with probability 1/2 (if
    ``flip``), then shifted by whole pixels drawn uniformly from ``-translate..translate`` on each
    axis, independently per image. Draws from torch's global generator, which the loop seeds and
    checkpoints, so a resumed run draws the same."""
    b = len(x)
    dy = torch.randint(-translate, translate + 1, (b,), device=x.device)
    dx = torch.randint(-translate, translate + 1, (b,), device=x.device)
    flips = (
        torch.rand(b, device=x.device) < 0.5 if flip else torch.zeros(b, dtype=torch.bool, device=x.device)
    )
    return shift_and_flip(x, dy, dx, flips)


# --- the regulariser ------------------------------------------------------------------------------


@attrs.define
class ConsistencyOptions:
    """Options of the consistency penalty (defaults: CR as in Zhang et al. 2020)."""

    # lambda on real images (the papers' 10).
    weight_real: float = attrs.field(default=10.0, validator=check.non_negative)
    # lambda on the generator's samples: 0 is CR, > 0 the balanced bCR (Zhao et al. 2021: 10).
    weight_fake: float = attrs.field(default=0.0, validator=check.non_negative)
    # Largest shift in pixels on each axis; None: an eighth of the image's smaller side (4 on 32x32).
    translate: int | None = attrs.field(default=None, validator=attrs.validators.optional(check.non_negative))
    # Flip each image left-right with probability 1/2.
    flip: bool = True

    def __attrs_post_init__(self) -> None:
        if self.weight_real == 0 and self.weight_fake == 0:
            raise ValueError(
                "weight_real and weight_fake are both 0: set at least one above 0 (CR: weight_real)"
            )
        if self.translate == 0 and not self.flip:
            raise ValueError("translate is 0 and flip is false: the augmentation would change nothing")


class Consistency:
    """Consistency regularisation (CR, Zhang et al. 2020; bCR with weight_fake > 0, Zhao et al. 2021): the critic scores x and a flipped, shifted x alike."""

    phases = ("critic",)
    needs = ("real", "fake", "critic", "labels")

    def __init__(self, options: ConsistencyOptions) -> None:
        self.options = options

    def shift(self, shape: tuple[int, ...]) -> int:
        """The largest shift for images of ``shape (C, H, W)``, refusing one reflection cannot fill."""
        side = min(shape[-2:])
        t = side // 8 if self.options.translate is None else self.options.translate
        if t >= side:
            raise genfw.GenfwError(
                f"regulariser consistency: translate {t} needs images larger than {t} pixels "
                f"(reflection padding), got {shape[-2]}x{shape[-1]}; use translate 0..{side - 1}"
            )
        return t

    def setup(self, model: Any, ctx: Any) -> None:
        """Refuse data that is not images before anything trains."""
        shape = tuple(ctx.data.shape)
        if len(shape) != 3:
            raise genfw.GenfwError(
                f"regulariser consistency flips and shifts images (C, H, W); this data set has "
                f"samples of shape {shape}: use an image data set (digits, ...)"
            )
        self.shift(shape)

    def term(
        self, critic: Callable[[Tensor, Tensor | None], Tensor], x: Tensor, labels: Tensor | None
    ) -> Tensor:
        """``E (D(x) - D(T(x)))^2`` over the batch ``x (B, C, H, W)``."""
        if x.dim() != 4:
            raise genfw.GenfwError(
                f"regulariser consistency flips and shifts images (B, C, H, W), got a batch of shape "
                f"{tuple(x.shape)}"
            )
        t = augment(x, self.shift(tuple(x.shape[1:])), self.options.flip)
        return (critic(x, labels) - critic(t, labels)).square().mean()

    def penalty(self, ctx: Mapping[str, Any]) -> Tensor:
        o, critic, labels = self.options, ctx["critic"], ctx["labels"]
        total = o.weight_real * self.term(critic, ctx["real"], labels) if o.weight_real > 0 else None
        if o.weight_fake > 0:
            fake = o.weight_fake * self.term(critic, ctx["fake"], labels)
            total = fake if total is None else total + fake
        return total


# --- the callback ---------------------------------------------------------------------------------


@attrs.define
class WarmupOptions:
    """Options of the linear learning-rate warm-up."""

    # Training steps over which the factor rises to 1.
    steps: int = attrs.field(default=1000, validator=check.at_least(1))
    # The factor in the first step.
    start_factor: float = attrs.field(
        default=0.1, validator=check.in_interval(0, 1, low_open=True, high_open=True)
    )


class LinearWarmup(Callback):
    """Linear learning-rate warm-up of every optimiser (Goyal et al. 2017), from start_factor to 1 over steps."""

    def __init__(self, options: WarmupOptions) -> None:
        super().__init__(options)
        # optimiser (phase) name -> the base learning rate of each of its parameter groups, read the
        # first time the optimiser is seen and kept in checkpoints: after --resume the optimisers
        # hold warmed-down rates, not their base ones.
        self.base: dict[str, list[float]] = {}
        # Phases whose rate genfw sets before every step (train.lr_schedule, genfw.Phase.lr_scale
        # e.g. BEGAN's decay): their base is the rate genfw just set, so the two schedules multiply.
        self.scheduled: frozenset[str] = frozenset()

    def factor(self, step: int) -> float:
        """The factor of training step ``step`` (steps done before it)."""
        o = self.options
        return o.start_factor + (1.0 - o.start_factor) * min(step, o.steps) / o.steps

    def on_model_built(self, model: Any, variant: Any, ctx: Any) -> None:
        # genfw attaches its callback "lr_schedule" where it sets rates: then it sets every phase's.
        every = ctx is not None and "lr_schedule" in ctx.events.names()
        self.scheduled = frozenset(p.name for p in model.phases if every or p.lr_scale is not None)

    def on_phase_output(self, phase: str, output: Any, state: LoopState) -> None:
        # Fired before the phase's optimiser step: the rates set here are the ones this step uses.
        f = self.factor(state.step)
        optimizer = state.optimizers.get(phase)
        if optimizer is not None:
            groups = optimizer.param_groups
            current = [float(g["lr"]) for g in groups]
            base = current if phase in self.scheduled else self.base.setdefault(phase, current)
            if len(base) != len(groups):
                raise genfw.GenfwError(
                    f"callback lr_warmup: optimiser '{phase}' has {len(groups)} parameter groups, "
                    f"it had {len(base)} when its base rates were recorded"
                )
            for group, lr in zip(groups, base, strict=True):
                group["lr"] = lr * f
        output.logs["lr_factor"] = torch.tensor(f)

    def state_dict(self) -> dict[str, Any]:
        return {f"base_lr/{name}/{i}": lr for name, rates in self.base.items() for i, lr in enumerate(rates)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        base: dict[str, dict[int, float]] = {}
        for key, lr in state.items():
            name, i = key.removeprefix("base_lr/").rsplit("/", 1)
            base.setdefault(name, {})[int(i)] = float(lr)
        self.base = {name: [rates[i] for i in sorted(rates)] for name, rates in base.items()}


@genfw.hookimpl
def genfw_register_regularisers(register: Register) -> None:
    register("consistency", Consistency, options=ConsistencyOptions)


@genfw.hookimpl
def genfw_register_callbacks(register: Register) -> None:
    register("lr_warmup", LinearWarmup, options=WarmupOptions)
