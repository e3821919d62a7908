"""ProGAN (Karras et al. 2018): generator and critic grow together from 4x4 to the data's size.

Training starts at 4x4. Each later resolution (8x8, 16x16, ... up to the data set's side) is
faded in: its new blocks are blended with the previous resolution's output (the generator's
``to_rgb`` of the lower resolution, upsampled; the critic's ``from_rgb`` of the down-sampled
input) with ``alpha`` rising linearly from 0 to 1 over ``fade_images`` training images, then the
networks train at that resolution for ``stable_images`` images (stabilisation). Real images are
average-pooled to the current resolution (and blended the same way during a fade, as in the
authors' code), so the critic compares like with like.

The paper's stabilisers: pixel-wise feature normalisation in the generator, a minibatch
standard-deviation feature map before the critic's last block, equalised learning rate (weights
N(0, 1) scaled at run time by the He constant) and the WGAN-GP objective with a small drift term
``eps_drift E[D(x)^2]`` that keeps the critic's output near zero. Optimiser: Adam(1e-3, 0, 0.99).

Where the schedule lives: the number of images trained on is a buffer of the generator
(``images_seen``), so checkpoints carry it and a run resumed in the middle of a fade continues with
the same stage and alpha. The loop never reads it back from the device: a Python mirror follows it
and is re-read from the buffer only when weights are loaded.

Samples (grids, ``genfw sample``) are drawn at the current stage and alpha and upsampled (nearest
neighbour) to the data's size, so the grids written during training show each stage. They come,
as every result of the paper (appendix A.1), from an exponential moving average of G's weights
(the ``ema`` regulariser, decay 0.999 as the authors' ``G_smoothing``; ``ema: false`` samples the
live generator).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import attrs
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import genfw
from genfw import Batch, BuildContext, GenfwError, Model, Modules, Optim, Slot, device_of
from genfw import validators as check
from genfw.contracts import Callback, LoopState, PhaseSpec, Players, Variant
from genfw_plugins._adversarial import AdversarialGAN, Scores, Turn
from genfw_plugins._layers import EqualizedConv2d, EqualizedLinear, MinibatchStdDev, pixel_norm

BASE = 4  # the first resolution


@attrs.define
class ProGANOptions:
    latent_dim: int = attrs.field(default=128, validator=check.at_least(1))
    # Feature maps at 4x4; halved at each doubling of the resolution, down to min_channels.
    channels: int = attrs.field(default=128, validator=check.at_least(1))
    min_channels: int = attrs.field(default=16, validator=check.at_least(1))
    # Images (over all processes, as the paper's kimg) over which alpha rises from 0 to 1 for each
    # new resolution, and images trained at each resolution before the next is faded in. The paper
    # uses 800k each; the defaults fit the embedded 8x8 digits in a CPU-sized run (3000 steps of
    # 64 = 192k images). Every critic minibatch counts, as in the authors' code.
    fade_images: int = attrs.field(default=64_000, validator=check.at_least(0))
    stable_images: int = attrs.field(default=64_000, validator=check.at_least(0))
    lr_generator: float = attrs.field(default=1e-3, validator=check.positive)
    lr_critic: float = attrs.field(default=1e-3, validator=check.positive)
    beta1: float = attrs.field(default=0.0, validator=check.in_interval(0, 1, high_open=True))
    beta2: float = attrs.field(default=0.99, validator=check.in_interval(0, 1, high_open=True))
    n_critic: int = attrs.field(default=1, validator=check.at_least(1))
    eps_drift: float = attrs.field(default=0.001, validator=check.non_negative)
    mbstd_group: int = attrs.field(default=4, validator=check.at_least(1))  # minibatch stddev group size
    # The authors' reset_opt_for_new_lod: Adam's moments are cleared when a fade-in starts and when
    # it ends, so new blocks do not take their first steps with an empty second moment.
    reset_optimizers: bool = True
    # Grids, metrics, `genfw sample` and generator.safetensors use an exponential moving average
    # of G's weights, as every result of the paper (appendix A.1; the authors' G_smoothing 0.999):
    # the ema regulariser, added with decay 0.999 and no warm-up. false: the live generator.
    ema: bool = True

    def __attrs_post_init__(self) -> None:
        if self.fade_images + self.stable_images < 1:
            raise ValueError("fade_images + stable_images must be at least 1 (images per stage), got 0")


# --- the schedule -------------------------------------------------------------------------------


def num_stages(side: int) -> int:
    """Resolutions from 4x4 up to ``side`` (a power of two times 4): 4 -> 1, 8 -> 2, 32 -> 4."""
    return int(math.log2(side // BASE)) + 1


def progress(images: int, n_stages: int, fade_images: int, stable_images: int) -> tuple[int, float]:
    """``(stage, alpha)`` after ``images`` training images.

    Stage 0 (4x4) trains ``stable_images`` images; every later stage fades in over
    ``fade_images`` (alpha = images into the fade / fade_images) then stabilises for
    ``stable_images``; the last stage trains at alpha 1 for ever.
    """
    if images < stable_images or n_stages == 1:
        return 0, 1.0
    t = images - stable_images
    period = fade_images + stable_images
    stage, into = 1 + t // period, t % period
    if stage >= n_stages:
        return n_stages - 1, 1.0
    alpha = 1.0 if into >= fade_images else into / fade_images
    return stage, alpha


def optimizer_epoch(stage: int, alpha: float) -> int:
    """Counts the schedule's changes of regime: 0 at 4x4, then ``2s - 1`` while stage ``s`` fades
    in and ``2s`` once it is stable. The authors' code resets Adam whenever the floor or ceiling of
    its level of detail changes, which is exactly when this number does."""
    return 2 * stage - int(stage > 0 and alpha < 1.0)


def resolution(stage: int) -> int:
    return BASE * 2**stage


def downsample(x: Tensor, side: int) -> Tensor:
    """Average-pool images ``(B, C, S, S)`` to ``(B, C, side, side)``."""
    factor = x.shape[-1] // side
    return x if factor == 1 else F.avg_pool2d(x, factor)


def upsample(x: Tensor, side: int) -> Tensor:
    """Nearest-neighbour upsampling of ``(B, C, s, s)`` to ``(B, C, side, side)``."""
    factor = side // x.shape[-1]
    return x if factor == 1 else F.interpolate(x, scale_factor=factor, mode="nearest")


def real_at(x: Tensor, stage: int, alpha: float) -> Tensor:
    """Real images as the critic sees them at ``stage``: pooled to its resolution and, during a
    fade, blended with the previous resolution's (pooled further, then upsampled back)."""
    side = resolution(stage)
    x = downsample(x, side)
    if stage > 0 and alpha < 1.0:
        x = torch.lerp(upsample(downsample(x, side // 2), side), x, alpha)
    return x


def _zero_touch(params: list[nn.Parameter], like: Tensor) -> Tensor:
    """0 times the sum of ``params``: gives the blocks not used at this stage zero gradients, so
    every parameter takes part in every step. DDP then needs no unused-parameter search, and Adam
    treats the same set of parameters in every run (a zero gradient moves no weight: its first
    moment stays 0)."""
    if not params:
        return like.new_zeros(())
    return torch.stack([p.sum() for p in params]).sum().to(like.dtype) * 0.0


# --- networks -----------------------------------------------------------------------------------


def _lrelu(x: Tensor) -> Tensor:
    return F.leaky_relu(x, 0.2)


class ProGenerator(nn.Module):
    """``z (B, latent_dim)`` -> images ``(B, C, r, r)`` at the current stage's resolution ``r``.

    4x4: pixel norm of ``z``, an equalised dense layer to ``(ch, 4, 4)``, a 3x3 conv; each later
    block: nearest 2x upsampling and two 3x3 convs; every conv/dense layer followed by leaky ReLU
    (0.2) and pixel norm. ``to_rgb[s]`` (1x1 conv, gain 1, linear output) maps stage ``s``'s
    features to images.
    """

    replayable: ClassVar[bool] = False  # experience replay: see replay_refusal
    replay_refusal: ClassVar[str] = (
        "its resolution grows during training, so past fakes stop fitting the critic"
    )

    def __init__(self, latent_dim: int, out_shape: tuple[int, ...], widths: list[int], schedule: Any) -> None:
        super().__init__()
        self.latent_dim, self.out_shape, self.schedule = latent_dim, tuple(out_shape), schedule
        c = self.out_shape[0]
        self.widths = widths
        self.dense = EqualizedLinear(latent_dim, widths[0] * BASE * BASE, gain=math.sqrt(2.0) / 4)
        self.conv0 = EqualizedConv2d(widths[0], widths[0], 3)
        self.blocks = nn.ModuleList(
            nn.ModuleList(
                [EqualizedConv2d(widths[s - 1], widths[s], 3), EqualizedConv2d(widths[s], widths[s], 3)]
            )
            for s in range(1, len(widths))
        )
        self.to_rgb = nn.ModuleList(EqualizedConv2d(w, c, 1, gain=1.0) for w in widths)
        # Images trained on so far: the schedule's state, carried by checkpoints.
        self.register_buffer("images_seen", torch.zeros((), dtype=torch.long))
        self.images = 0  # its mirror on the host, so the hot path never reads the device
        self.register_load_state_dict_post_hook(_reread_images)
        self._unused: dict[tuple[int, bool], list[nn.Parameter]] = {}

    def advance(self, n: int) -> None:
        """Count ``n`` more training images (buffer and mirror)."""
        self.images += n
        self.images_seen.fill_(self.images)

    def unused(self, stage: int, fading: bool) -> list[nn.Parameter]:
        key = (stage, fading)
        if key not in self._unused:
            used = {id(p) for p in self.dense.parameters()} | {id(p) for p in self.conv0.parameters()}
            for s in range(1, stage + 1):
                used |= {id(p) for p in self.blocks[s - 1].parameters()}
            used |= {id(p) for p in self.to_rgb[stage].parameters()}
            if fading:
                used |= {id(p) for p in self.to_rgb[stage - 1].parameters()}
            self._unused[key] = [p for p in self.parameters() if id(p) not in used]
        return self._unused[key]

    def forward(
        self, z: Tensor, y: Tensor | None = None, stage: int | None = None, alpha: float | None = None
    ):
        if stage is None or alpha is None:
            stage, alpha = self.schedule(self.images)
        h = pixel_norm(z)
        h = pixel_norm(_lrelu(self.dense(h))).view(z.shape[0], self.widths[0], BASE, BASE)
        h = pixel_norm(_lrelu(self.conv0(h)))
        prev = h
        for s in range(1, stage + 1):
            prev = h
            h = F.interpolate(h, scale_factor=2, mode="nearest")
            for conv in self.blocks[s - 1]:
                h = pixel_norm(_lrelu(conv(h)))
        out = self.to_rgb[stage](h)
        fading = stage > 0 and alpha < 1.0
        if fading:
            out = torch.lerp(upsample(self.to_rgb[stage - 1](prev), out.shape[-1]), out, alpha)
        return out + _zero_touch(self.unused(stage, fading), out)


def _reread_images(module: nn.Module, incompatible: Any) -> None:
    module.images = int(module.images_seen)  # once per load, not per step


class ProCritic(nn.Module):
    """Images ``(B, C, r, r)`` at stage ``s`` -> scores ``(B, 1)``.

    ``from_rgb[s]`` (1x1 conv), then for each stage down to 1 a block of two 3x3 convs and 2x
    average pooling, then the 4x4 block: minibatch stddev, a 3x3 conv, an equalised dense layer
    and a linear output (gain 1). Leaky ReLU (0.2) after each conv and hidden dense layer.
    """

    def __init__(self, in_shape: tuple[int, ...], widths: list[int], group_size: int, schedule: Any) -> None:
        super().__init__()
        c = in_shape[0]
        self.schedule, self.widths = schedule, widths
        self.from_rgb = nn.ModuleList(EqualizedConv2d(c, w, 1) for w in widths)
        self.blocks = nn.ModuleList(
            nn.ModuleList(
                [EqualizedConv2d(widths[s], widths[s], 3), EqualizedConv2d(widths[s], widths[s - 1], 3)]
            )
            for s in range(1, len(widths))
        )
        self.mbstd = MinibatchStdDev(group_size)
        self.conv0 = EqualizedConv2d(widths[0] + 1, widths[0], 3)
        self.dense = EqualizedLinear(widths[0] * BASE * BASE, widths[0])
        self.out = EqualizedLinear(widths[0], 1, gain=1.0)
        self._unused: dict[tuple[int, bool], list[nn.Parameter]] = {}

    def unused(self, stage: int, fading: bool) -> list[nn.Parameter]:
        key = (stage, fading)
        if key not in self._unused:
            used = {id(p) for m in (self.conv0, self.dense, self.out) for p in m.parameters()}
            for s in range(1, stage + 1):
                used |= {id(p) for p in self.blocks[s - 1].parameters()}
            used |= {id(p) for p in self.from_rgb[stage].parameters()}
            if fading:
                used |= {id(p) for p in self.from_rgb[stage - 1].parameters()}
            self._unused[key] = [p for p in self.parameters() if id(p) not in used]
        return self._unused[key]

    def forward(
        self, x: Tensor, y: Tensor | None = None, stage: int | None = None, alpha: float | None = None
    ):
        if stage is None or alpha is None:
            stage, alpha = self.schedule()
        if x.shape[-1] != resolution(stage):
            raise ValueError(
                f"the critic at stage {stage} takes {resolution(stage)}px images, got {tuple(x.shape)}"
            )
        h = _lrelu(self.from_rgb[stage](x))
        fading = stage > 0 and alpha < 1.0
        for s in range(stage, 0, -1):
            for conv in self.blocks[s - 1]:
                h = _lrelu(conv(h))
            h = F.avg_pool2d(h, 2)
            if s == stage and fading:
                h = torch.lerp(_lrelu(self.from_rgb[stage - 1](F.avg_pool2d(x, 2))), h, alpha)
        h = _lrelu(self.conv0(self.mbstd(h)))
        h = _lrelu(self.dense(h.flatten(1)))
        out = self.out(h)
        return out + _zero_touch(self.unused(stage, fading), out)


# --- the variant --------------------------------------------------------------------------------


class ProGAN(AdversarialGAN, Variant):
    """Progressive growing of GANs (Karras et al. 2018), with the WGAN-GP objective."""

    slots: ClassVar[dict[str, Slot]] = {
        "prior": Slot("prior", "normal", help="distribution of the generator's input codes"),
        "loss": Slot("loss", "wasserstein", role="adversarial"),
    }
    # Its own growing networks (ProGenerator, ProCritic), not slots.
    players: ClassVar[Players] = Players(generators="generator", critics="critic")
    # Both phases run at the schedule's current resolution and fade-in alpha: "real" is the real
    # batch at that resolution, "critic" scores images of it.
    phases: ClassVar[dict[str, PhaseSpec]] = {
        "critic": PhaseSpec(
            {"real", "fake", "critic", "labels", "real_scores", "fake_scores"},
            help="the critic minimises the Wasserstein critic objective plus eps_drift * E D(x)^2",
        ),
        "generator": PhaseSpec(
            {"fake", "critic", "labels", "fake_scores"},
            help="the generator minimises the loss's generator objective at the current resolution",
        ),
    }
    options: ProGANOptions

    @classmethod
    def remedies(cls, options: ProGANOptions) -> dict[str, dict[str, Any]]:
        """The paper's: WGAN-GP's penalty (lambda 10); with ``ema: true`` (the default), the EMA
        of G as in the authors' code: Gs starts as a copy of G and follows it with a constant
        beta = G_smoothing = 0.999 (no warm-up); with ``reset_optimizers: true``, the optimisers'
        reset at each change of regime (the ``optimizer_reset`` callback on ``Model.stage``)."""
        own: dict[str, dict[str, Any]] = {"gradient_penalty": {"weight": 10.0}}
        if options.ema:
            own["ema"] = {"decay": 0.999, "warmup": False}
        if options.reset_optimizers:
            own["optimizer_reset"] = {}
        return own

    @classmethod
    def refuse(cls, remedy: str, options: ProGANOptions) -> str | None:
        if remedy == "experience_replay":
            return f"its ProGenerator's fakes cannot be replayed: {ProGenerator.replay_refusal}"
        return None

    def build(self, ctx: BuildContext) -> Model:
        o = self.options
        shape = tuple(ctx.data.shape)
        side = shape[-1] if len(shape) == 3 else 0
        if len(shape) != 3 or shape[1] != shape[2] or side < BASE or side & (side - 1):
            raise GenfwError(
                f"progan grows square images from 4x4 by doubling; the data have shape {shape}, "
                f"valid: (C, S, S) with S = 4, 8, 16, 32, ... (e.g. --dataset digits, or image_folder --dataset.size 32)"
            )
        self.side, self.n_stages = side, num_stages(side)
        widths = [max(o.min_channels, o.channels >> s) for s in range(self.n_stages)]
        self.generator = ProGenerator(o.latent_dim, shape, widths, self.progress)
        critic = ProCritic(shape, widths, o.mbstd_group, lambda: self.progress(self.generator.images))
        self.prior = ctx["prior"].build(dim=o.latent_dim)
        self.loss = ctx["loss"].build()
        betas = (o.beta1, o.beta2)
        phases = self.adversarial_phases(
            ctx,
            Optim("adam", o.lr_critic, betas),
            Optim("adam", o.lr_generator, betas),
            n_critic=o.n_critic,
            critic_provides=self.phases["critic"].provides,
            generator_provides=self.phases["generator"].provides,
        )
        self._world = 0  # processes, read once at the first step (the group exists by then)
        return Model(
            modules={"generator": self.generator, "critic": critic},
            phases=phases,
            sample=self.sample,
            # The schedule's regime (``optimizer_epoch``): the optimiser_reset callback, one of
            # this variant's remedies with reset_optimizers, clears Adam whenever it changes.
            stage=lambda: optimizer_epoch(*self.stage()),
        )

    def progress(self, images: int) -> tuple[int, float]:
        o = self.options
        return progress(images, self.n_stages, o.fade_images, o.stable_images)

    def stage(self) -> tuple[int, float]:
        """The current ``(stage, alpha)`` (from the generator's count of images)."""
        return self.progress(self.generator.images)

    # -- hooks of the adversarial step: both players at the stage and alpha read once per step ----
    def draw(self, m: Modules, batch: Batch) -> Turn:
        """Prior noise; ``extra``: the schedule's ``(stage, alpha)`` for the whole step (the
        generator step counts images before regularisers score with it)."""
        stage_alpha = self.stage()
        return Turn(m, batch, self.noise(len(batch), batch.x.device), None, stage_alpha)

    def generate(self, t: Turn) -> Tensor:
        stage, alpha = t.extra
        return t.m.generator(t.z, stage=stage, alpha=alpha)

    def real(self, t: Turn) -> Tensor:
        return real_at(t.batch.x, *t.extra)  # at the stage's resolution, blended during a fade

    def score(self, t: Turn, x: Tensor, y: Tensor | None) -> Scores:
        stage, alpha = t.extra
        return Scores(t.m.critic(x, stage=stage, alpha=alpha).squeeze(1))  # (B,)

    def critic_extra(self, t: Turn, real: Scores, fake: Scores) -> tuple[Tensor, dict[str, Tensor]]:
        drift = real.scores.float().square().mean()  # eps_drift E[D(x)^2]
        return self.options.eps_drift * drift, {"drift": drift.detach()}

    def generator_extra(self, t: Turn, fake: Scores) -> tuple[None, dict[str, Tensor]]:
        """No term. The step is done for both players: count the critic's images on every process
        (host mirror and buffer, no sync)."""
        if not self._world:
            dist = torch.distributed
            self._world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        self.generator.advance(len(t.batch) * self.options.n_critic * self._world)
        stage, alpha = t.extra
        return None, {
            "resolution": fake.scores.new_full((), float(resolution(stage))),
            "alpha": fake.scores.new_full((), alpha),
        }

    def sample(self, m: Modules, n: int, y: Tensor | None = None) -> Tensor:
        # At the training schedule's stage and alpha: ``m.generator`` may be a copy (the EMA of
        # the weights) whose host mirror of the image count is not kept up to date.
        g, (stage, alpha) = m.generator, self.stage()
        out = g(self.prior.sample(n, device=device_of(g)), stage=stage, alpha=alpha)
        return upsample(out, self.side)


class OptimizerReset(Callback):
    """Clears every optimiser's state (Adam's moments and step count) when the model's stage
    changes: ProGAN's ``reset_opt_for_new_lod`` (Karras et al.'s code), when a fade-in starts and
    when it ends."""

    def on_stage_change(self, state: LoopState) -> None:
        for opt in state.optimizers.values():
            opt.state.clear()  # Accelerate's wrapper gives the torch optimiser's state


@genfw.hookimpl
def genfw_register_callbacks(register):
    register("optimizer_reset", OptimizerReset)


@genfw.hookimpl
def genfw_register_variants(register):
    register(
        "progan", ProGAN, options=ProGANOptions, help="Progressive growing of GANs (Karras et al. 2018)."
    )
