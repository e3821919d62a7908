"""SAGAN (Zhang et al. 2019): self-attention in both networks, spectral norm, hinge loss, TTUR.

:class:`SelfAttention` is the paper's block (section 3): with ``x`` the ``C`` feature maps over
``N`` positions, ``f(x) = W_f x``, ``g(x) = W_g x``, ``h(x) = W_h x`` are 1x1 convolutions,
``s_ij = f(x_i)^T g(x_j)``, ``beta_{j,i} = softmax_i(s_ij)`` (how much position ``j`` attends to
``i``), ``o_j = v(sum_i beta_{j,i} h(x_i))`` and ``y = gamma o + x`` with ``gamma`` a learned
scalar initialised to 0 (the block starts as the identity). Channel sizes follow the authors'
code (brain-research/self-attention-gan): ``C/8`` for f and g, ``C/2`` for h, and ``v`` maps
back to ``C``; the code's max-pooling of g and h, a memory saving the paper does not describe, is
left out.

The ``sagan`` generator and critic are the DCGAN-style networks of ``networks.py`` with spectral
normalisation (Miyato et al. 2018) on every convolution and linear layer (attention included),
one self-attention block at a chosen feature-map side, batch norm in the generator only, and
no batch norm in the critic. The ``sagan`` variant is the GAN recipe with these networks, the
``hinge`` loss and the two time-scale update rule: Adam(beta1 0, beta2 0.9), critic lr 4e-4,
generator lr 1e-4, one critic step per generator step.
"""

from __future__ import annotations

from typing import ClassVar

import attrs
import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

import genfw
from genfw import Slot
from genfw import validators as check
from genfw.hookspecs import Register
from genfw_plugins._layers import ConditionalBatchNorm2d, ProjectionCritic, label_embedding
from genfw_plugins.gan import GAN
from genfw_plugins.networks import _width, condition, dcgan_geometry, one_hot, output_layer

# --- the attention block --------------------------------------------------------------------


class SelfAttention(nn.Module):
    """Self-attention over the positions of ``(B, C, H, W)`` feature maps; ``y = gamma o + x``."""

    def __init__(self, channels: int, spectral: bool = True) -> None:
        super().__init__()
        sn = spectral_norm if spectral else (lambda m: m)
        qk, val = max(channels // 8, 1), max(channels // 2, 1)
        self.f = sn(nn.Conv2d(channels, qk, 1, bias=False))
        self.g = sn(nn.Conv2d(channels, qk, 1, bias=False))
        self.h = sn(nn.Conv2d(channels, val, 1, bias=False))
        self.v = sn(nn.Conv2d(val, channels, 1, bias=False))
        self.gamma = nn.Parameter(torch.zeros(()))

    def attention(self, x: Tensor) -> Tensor:
        """``beta (B, N, N)`` with ``beta[b, j, i] = softmax_i(f(x_i) . g(x_j))``."""
        f, g = self.f(x).flatten(2), self.g(x).flatten(2)  # (B, C/8, N)
        s = torch.bmm(g.transpose(1, 2), f)  # s[b, j, i] = g(x_j) . f(x_i), (B, N, N)
        return s.softmax(dim=-1)

    def forward(self, x: Tensor) -> Tensor:
        b, _, hh, ww = x.shape
        beta = self.attention(x)  # (B, N, N)
        h = self.h(x).flatten(2)  # (B, C/2, N)
        o = torch.bmm(h, beta.transpose(1, 2)).view(b, -1, hh, ww)  # o_j = sum_i beta_ji h_i
        return self.gamma * self.v(o) + x


# --- networks ---------------------------------------------------------------------------------


@attrs.define
class SAGANOptions:
    """Options of the SAGAN critic."""

    channels: int = attrs.field(default=64, validator=check.positive)
    # Side of the feature maps that get the attention block; 0: the largest side <= 32.
    attention_side: int = attrs.field(default=0, validator=check.non_negative)


@attrs.define
class SAGANCriticOptions(SAGANOptions):
    """Options of the SAGAN critic."""

    # With labels: one-hot planes beside the image channels, or the projection critic (Miyato &
    # Koyama 2018; SAGAN's own conditional ImageNet critic), its embedding spectrally normalised.
    conditioning: str = attrs.field(default="concat", validator=check.one_of("concat", "projection"))


@attrs.define
class SAGANGeneratorOptions(SAGANOptions):
    """Options of the SAGAN generator."""

    output: str = attrs.field(default="auto", validator=check.one_of("auto", "tanh", "sigmoid", "none"))
    # With labels: one-hot on z, or conditional batch norm (SAGAN's own conditional generator).
    conditioning: str = attrs.field(default="concat", validator=check.one_of("concat", "cbn"))


def _attention_side(requested: int, sides: list[int], what: str) -> int:
    if requested == 0:
        return max([s for s in sides if s <= 32] or [min(sides)])
    if requested not in sides:
        raise ValueError(
            f"attention_side {requested} is not a feature-map side of this {what}; valid: "
            f"{', '.join(map(str, sides))} (or 0 for automatic)"
        )
    return requested


class SAGANGenerator(nn.Module):
    """Spectral-norm DCGAN generator with one self-attention block: ``z`` -> images ``(B, C, S, S)``."""

    def __init__(
        self, options: SAGANGeneratorOptions, latent_dim: int, out_shape: tuple[int, ...], num_classes: int
    ) -> None:
        super().__init__()
        self.latent_dim, self.out_shape, self.num_classes = latent_dim, tuple(out_shape), num_classes
        base, steps = dcgan_geometry(self.out_shape)
        ch = options.channels
        at = _attention_side(options.attention_side, [base * 2**i for i in range(steps + 1)], "generator")
        top = _width(ch, steps)
        cbn = num_classes > 0 and options.conditioning == "cbn"
        self.concat = 0 if cbn else num_classes  # one-hot labels concatenated to z

        def norm(n: int) -> nn.Module:
            return ConditionalBatchNorm2d(n, num_classes) if cbn else nn.BatchNorm2d(n)

        self.project = spectral_norm(nn.Linear(latent_dim + self.concat, top * base * base))
        blocks: list[nn.Module] = [nn.Unflatten(1, (top, base, base)), norm(top), nn.ReLU()]
        side = base
        if side == at:
            blocks.append(SelfAttention(top))
        for level in range(steps, 0, -1):
            n_in, n_out = _width(ch, level), _width(ch, level - 1)
            blocks += [
                spectral_norm(nn.ConvTranspose2d(n_in, n_out, 4, stride=2, padding=1)),
                norm(n_out),
                nn.ReLU(),
            ]
            side *= 2
            if side == at:
                blocks.append(SelfAttention(n_out))
        blocks += [spectral_norm(nn.Conv2d(ch, self.out_shape[0], 3, padding=1))]
        blocks.append(output_layer(options.output, self.out_shape))
        self.body = nn.Sequential(*blocks)

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        h = self.project(condition(z, y, self.concat))
        if self.concat or not self.num_classes:
            return self.body(h)
        for layer in self.body:  # conditional batch norms take the labels
            h = layer(h, y) if isinstance(layer, ConditionalBatchNorm2d) else layer(h)
        return h


class SAGANCritic(ProjectionCritic):
    """Spectral-norm DCGAN critic with one self-attention block: images -> ``(B, out_dim)``."""

    def __init__(
        self, options: SAGANOptions, in_shape: tuple[int, ...], out_dim: int, num_classes: int
    ) -> None:
        super().__init__()
        self.in_shape, self.num_classes = tuple(in_shape), num_classes
        base, steps = dcgan_geometry(self.in_shape)
        side, ch = self.in_shape[1], options.channels
        at = _attention_side(options.attention_side, [side // 2**i for i in range(1, steps + 1)], "critic")
        project = num_classes > 0 and getattr(options, "conditioning", "concat") == "projection"
        self.concat = 0 if project else num_classes
        n_in = self.in_shape[0] + self.concat
        layers: list[nn.Module] = []
        for level in range(steps):
            n_out = _width(ch, level)
            layers += [spectral_norm(nn.Conv2d(n_in, n_out, 4, stride=2, padding=1)), nn.LeakyReLU(0.1)]
            side //= 2
            if side == at:
                layers.append(SelfAttention(n_out))
            n_in = n_out
        self.body = nn.Sequential(*layers)
        self.head = spectral_norm(nn.Linear(n_in * base * base, out_dim))
        self.embed = spectral_norm(label_embedding(num_classes, n_in * base * base)) if project else None

    def features(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """The input of ``head``: the last block's output, flattened (feature matching reads it)."""
        if self.concat:
            planes = one_hot(y, self.num_classes, x)[:, :, None, None]
            x = torch.cat([x, planes.expand(-1, -1, *x.shape[2:])], dim=1)
        return self.body(x).flatten(1)


def sagan_generator(
    options: SAGANGeneratorOptions, *, latent_dim: int, out_shape: tuple[int, ...], num_classes: int
) -> SAGANGenerator:
    """SAGAN generator: spectral norm, batch norm, one self-attention block (square images)."""
    return SAGANGenerator(options, latent_dim, out_shape, num_classes)


def sagan_critic(
    options: SAGANCriticOptions, *, in_shape: tuple[int, ...], out_dim: int, num_classes: int
) -> SAGANCritic:
    """SAGAN critic: spectral norm, one self-attention block (square images)."""
    return SAGANCritic(options, in_shape, out_dim, num_classes)


# --- the variant ------------------------------------------------------------------------------


@attrs.define
class SAGANVariantOptions:
    latent_dim: int = attrs.field(default=128, validator=check.at_least(1))
    lr_generator: float = attrs.field(default=1e-4, validator=check.positive)
    lr_critic: float = attrs.field(default=4e-4, validator=check.positive)
    beta1: float = attrs.field(default=0.0, validator=check.in_interval(0, 1, high_open=True))
    beta2: float = attrs.field(default=0.9, validator=check.in_interval(0, 1, high_open=True))
    n_critic: int = attrs.field(default=1, validator=check.at_least(1))
    n_generator: int = attrs.field(default=1, validator=check.at_least(1))  # generator steps per step


class SAGAN(GAN):
    """SAGAN (Zhang et al. 2019): self-attention networks, spectral norm, hinge loss, TTUR."""

    slots: ClassVar[dict[str, Slot]] = {
        **GAN.slots,
        "generator": Slot("generator", "sagan", help="maps prior codes to samples"),
        "critic": Slot("critic", "sagan", help="scores samples"),
        "loss": Slot("loss", "hinge", role="adversarial"),
    }


@genfw.hookimpl
def genfw_register_generators(register: Register) -> None:
    register(
        "sagan",
        sagan_generator,
        options=SAGANGeneratorOptions,
        help="SAGAN generator: spectral norm, one self-attention block (square images).",
    )


@genfw.hookimpl
def genfw_register_critics(register: Register) -> None:
    register(
        "sagan",
        sagan_critic,
        options=SAGANCriticOptions,
        help="SAGAN critic: spectral norm, one self-attention block (square images).",
    )


@genfw.hookimpl
def genfw_register_variants(register: Register) -> None:
    register(
        "sagan",
        SAGAN,
        options=SAGANVariantOptions,
        help="SAGAN (Zhang et al. 2019): self-attention, spectral norm, hinge loss, TTUR (4e-4 / 1e-4).",
    )
