"""ResNet networks ``resnet`` (generator and critic) of Miyato et al. (2018) and Gulrajani et al.
(2017), with the conditioning of Miyato & Koyama (2018) and de Vries et al. (2017).

The layout is that of the SNGAN authors' code (pfnet-research/sngan_projection,
``gen_models/resnet_32.py``, ``resnet_64.py``, ``dis_models/snresnet_32.py``, ``snresnet_64.py``):

- generator: ``z`` -> linear -> ``(w, 4, 4)`` -> up-blocks ``BN-ReLU-up-conv3-BN-ReLU-conv3`` with
  an ``up-conv1`` shortcut (identity where the width and side do not change), each doubling the
  side -> ``BN-ReLU-conv3`` to the image channels -> tanh. Up-sampling is nearest-neighbour.
- critic: an optimised first block (``conv3-ReLU-conv3-avgpool`` + ``avgpool-conv1``), then blocks
  ``ReLU-conv3-ReLU-conv3 [-avgpool]`` with a ``conv1 [-avgpool]`` shortcut where the width or side
  changes, then ReLU, global sum pooling and a linear head.

Widths: ``constant`` (the 32-pixel networks: every block ``channels`` wide, G 256 and D 128; the
critic down-samples to 8x8, or once below, then adds two blocks without down-sampling) or
``pyramid`` (the 64-pixel networks: ``channels`` at the image side, doubling at each halving up
to 16x; the critic down-samples to 2x2). ``auto`` is constant up to 32 pixels, pyramid above.
Any square side ``4 * 2**k`` (k >= 1: 8, 16, 32, 64, 128, ...) and any number of channels work
(digits are ``(1, 8, 8)``).

Conditioning (``num_classes > 0``):

- ``--generator.conditioning cbn`` (default): every batch norm of the up-blocks is a conditional
  batch norm (:class:`ConditionalBatchNorm2d`); the last one is plain, as in the authors' code.
  ``concat``: the one-hot label is concatenated to ``z``.
- ``--critic.conditioning projection`` (default): ``D(x, y) = psi(phi(x)) + <embed(y), phi(x)>``
  (:class:`ProjectionCritic`); ``concat``: one-hot planes beside the image channels.

The blocks (:class:`GeneratorBlock`, :class:`CriticBlock`) are public so BigGAN-style networks can
reuse them; conditional batch norm and the projection term live in ``genfw_plugins/_layers.py``
(the ``dcgan`` networks use them too).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import attrs
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm as _sn

import genfw
from genfw import validators as check
from genfw.hookspecs import Register
from genfw_plugins._layers import ConditionalBatchNorm2d, ProjectionCritic, label_embedding
from genfw_plugins.networks import OUTPUTS, _check_input, condition, one_hot, output_layer
from genfw_plugins.sagan import SelfAttention

SUPPORTED_SHAPES = "(C, S, S) with S = 4 * 2**k, k >= 1 (8, 16, 32, 64, 128, ...)"
# The authors' batch-norm epsilon (chainer's BatchNormalization default).
BN_EPS = 2e-5
_MAX_FACTOR = 16  # pyramid widths stop growing at 16 * channels, as in the authors' code


def resnet_steps(shape: tuple[int, ...], what: str) -> int:
    """``k`` with ``side == 4 * 2**k`` (k >= 1) for an image shape ``(C, side, side)``."""
    if len(shape) == 3 and shape[1] == shape[2] and shape[1] >= 8:
        k = int(math.log2(shape[1] // 4))
        if 4 * 2**k == shape[1]:
            return k
    raise ValueError(f"resnet {what}s cannot handle shape {tuple(shape)}; supported: {SUPPORTED_SHAPES}")


def _maybe_sn(module: nn.Module, on: bool) -> nn.Module:
    return _sn(module) if on else module


def _conv(n_in: int, n_out: int, kernel: int, gain: float, sn: bool) -> nn.Module:
    """A same-padded convolution with the authors' Glorot-uniform initialisation (``gain``) and
    zero bias."""
    conv = nn.Conv2d(n_in, n_out, kernel, padding=kernel // 2)
    nn.init.xavier_uniform_(conv.weight, gain=gain)
    nn.init.zeros_(conv.bias)
    return _maybe_sn(conv, sn)


def _linear(n_in: int, n_out: int, sn: bool, bias: bool = True) -> nn.Module:
    lin = nn.Linear(n_in, n_out, bias=bias)
    nn.init.xavier_uniform_(lin.weight)
    if bias:
        nn.init.zeros_(lin.bias)
    return _maybe_sn(lin, sn)


def _up(x: Tensor) -> Tensor:
    return F.interpolate(x, scale_factor=2, mode="nearest")  # (B, C, 2H, 2W), chainer's unpooling_2d


# --- conditioning ---------------------------------------------------------------------------------


class BatchNorm2d(nn.BatchNorm2d):
    """Batch norm that takes (and ignores) labels, so blocks call every norm alike."""

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:  # type: ignore[override]
        return super().forward(x)


def batch_norm(channels: int, num_classes: int) -> nn.Module:
    """A conditional batch norm with ``num_classes > 0``, else a plain one (authors' eps)."""
    if num_classes > 0:
        return ConditionalBatchNorm2d(channels, num_classes, eps=BN_EPS)
    return BatchNorm2d(channels, eps=BN_EPS)


# --- blocks ---------------------------------------------------------------------------------------


class GeneratorBlock(nn.Module):
    """``x + F(x)`` with ``F = BN-ReLU-up-conv3-BN-ReLU-conv3``; the shortcut is ``up-conv1`` where the
    width or side changes, else the identity (the authors' ``gen_models/resblocks.py``). The norms
    are conditional with ``num_classes > 0``; ``norm(channels)`` replaces them (each is called as
    ``norm(h, y)``, ``y`` what ``forward`` is given: BigGAN's norms take a vector)."""

    def __init__(
        self,
        n_in: int,
        n_out: int,
        num_classes: int = 0,
        up: bool = True,
        sn: bool = False,
        norm: Callable[[int], nn.Module] | None = None,
    ) -> None:
        super().__init__()
        self.up = up
        norm = norm or (lambda n: batch_norm(n, num_classes))
        self.b1, self.b2 = norm(n_in), norm(n_out)
        self.c1 = _conv(n_in, n_out, 3, math.sqrt(2), sn)
        self.c2 = _conv(n_out, n_out, 3, math.sqrt(2), sn)
        self.c_sc = _conv(n_in, n_out, 1, 1.0, sn) if (n_in != n_out or up) else None

    def residual(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        h = F.relu(self.b1(x, y))
        h = self.c1(_up(h) if self.up else h)
        return self.c2(F.relu(self.b2(h, y)))

    def shortcut(self, x: Tensor) -> Tensor:
        if self.c_sc is None:
            return x
        return self.c_sc(_up(x) if self.up else x)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return self.residual(x, y) + self.shortcut(x)


class CriticBlock(nn.Module):
    """``x + F(x)`` with ``F = ReLU-conv3-ReLU-conv3 [-avgpool]`` (hidden width = input width); the
    shortcut is ``conv1 [-avgpool]`` where the width or side changes, else the identity. With
    ``optimized`` (the first block): ``F = conv3-ReLU-conv3-avgpool`` (no ReLU on the image) and the
    shortcut ``avgpool-conv1`` (the authors' ``dis_models/resblocks.py``)."""

    def __init__(
        self, n_in: int, n_out: int, down: bool = True, sn: bool = False, optimized: bool = False
    ) -> None:
        super().__init__()
        self.down, self.optimized = down or optimized, optimized
        hidden = n_out if optimized else n_in
        self.c1 = _conv(n_in, hidden, 3, math.sqrt(2), sn)
        self.c2 = _conv(hidden, n_out, 3, math.sqrt(2), sn)
        learnable = optimized or n_in != n_out or down
        self.c_sc = _conv(n_in, n_out, 1, 1.0, sn) if learnable else None

    def residual(self, x: Tensor) -> Tensor:
        h = x if self.optimized else F.relu(x)
        h = self.c2(F.relu(self.c1(h)))
        return F.avg_pool2d(h, 2) if self.down else h

    def shortcut(self, x: Tensor) -> Tensor:
        if self.c_sc is None:
            return x
        if self.optimized:
            return self.c_sc(F.avg_pool2d(x, 2))
        h = self.c_sc(x)
        return F.avg_pool2d(h, 2) if self.down else h

    def forward(self, x: Tensor) -> Tensor:
        return self.residual(x) + self.shortcut(x)


# --- options --------------------------------------------------------------------------------------

WIDTHS = ("auto", "constant", "pyramid")


@attrs.define
class ResNetCriticOptions:
    """Options of the ResNet critic."""

    # Width: of every block (constant) or of the first block (pyramid); 0: the authors' (128
    # constant, 64 pyramid).
    channels: int = attrs.field(default=0, validator=check.non_negative)
    widths: str = attrs.field(default="auto", validator=check.one_of(*WIDTHS))
    # Spectral norm on every conv, the linear head and the projection embedding.
    spectral_norm: bool = False
    # Side of the feature maps after which a self-attention block (SAGAN's) goes; 0: none.
    attention_side: int = attrs.field(default=0, validator=check.non_negative)
    conditioning: str = attrs.field(default="projection", validator=check.one_of("projection", "concat"))


@attrs.define
class ResNetGeneratorOptions:
    """Options of the ResNet generator."""

    # Width: of every block (constant) or of the last block (pyramid); 0: the authors' (256
    # constant, 64 pyramid).
    channels: int = attrs.field(default=0, validator=check.non_negative)
    widths: str = attrs.field(default="auto", validator=check.one_of(*WIDTHS))
    spectral_norm: bool = False  # on every conv and linear layer (BigGAN, SAGAN)
    attention_side: int = attrs.field(default=0, validator=check.non_negative)
    conditioning: str = attrs.field(default="cbn", validator=check.one_of("cbn", "concat"))
    output: str = attrs.field(default="auto", validator=check.one_of(*OUTPUTS))


def _pyramid(widths: str, side: int) -> bool:
    return widths == "pyramid" or (widths == "auto" and side > 32)


def _attention_at(side: int, sides: list[int], what: str) -> int:
    if side and side not in sides:
        raise ValueError(
            f"attention_side {side} is not a feature-map side of this resnet {what}; valid: "
            f"{', '.join(map(str, sides))} (or 0 for none)"
        )
    return side


def generator_widths(options: ResNetGeneratorOptions, side: int) -> list[int]:
    """The widths from the 4x4 base to the last block: ``k + 1`` numbers for ``side = 4 * 2**k``."""
    k = int(math.log2(side // 4))
    if _pyramid(options.widths, side):
        ch = options.channels or 64
        return [ch * min(2**level, _MAX_FACTOR) for level in range(k, -1, -1)]
    return [options.channels or 256] * (k + 1)


def critic_plan(options: ResNetCriticOptions, side: int) -> list[tuple[int, bool]]:
    """``(width, down-samples)`` of each block, the optimised first block included."""
    k = int(math.log2(side // 4))
    if _pyramid(options.widths, side):
        ch = options.channels or 64
        # 64 px (snresnet_64.py): k + 1 down-blocks to 2x2; 128 px and above (snresnet.py): down
        # to 4x4, then one more block at the top width.
        n_down = k + 1 if side <= 64 else k
        plan = [(ch * min(2**i, _MAX_FACTOR), True) for i in range(n_down)]
        return plan if side <= 64 else [*plan, (plan[-1][0], False)]
    ch = options.channels or 128
    # 32 px (snresnet_32.py): down to 8x8, then two blocks that keep the side.
    n_down = max(1, k - 1)
    return [(ch, True)] * n_down + [(ch, False)] * 2


# --- networks -------------------------------------------------------------------------------------


class ResNetGenerator(nn.Module):
    """ResNet generator: ``z (B, latent_dim)`` -> images ``(B, C, S, S)`` (see the module's docstring)."""

    def __init__(
        self, options: ResNetGeneratorOptions, latent_dim: int, out_shape: tuple[int, ...], num_classes: int
    ) -> None:
        super().__init__()
        self.latent_dim, self.out_shape, self.num_classes = latent_dim, tuple(out_shape), num_classes
        k = resnet_steps(self.out_shape, "generator")
        widths = generator_widths(options, self.out_shape[1])
        sn = options.spectral_norm
        self.cbn = num_classes > 0 and options.conditioning == "cbn"
        self.concat = num_classes if num_classes > 0 and not self.cbn else 0
        self.base = widths[0]
        self.linear = _linear(latent_dim + self.concat, 16 * widths[0], sn)  # -> (w0, 4, 4)
        at = _attention_at(options.attention_side, [4 * 2**i for i in range(1, k + 1)], "generator")
        self.blocks = nn.ModuleList()
        self.attention = nn.ModuleDict()
        for i in range(k):  # (w_i, s, s) -> (w_{i+1}, 2s, 2s)
            self.blocks.append(
                GeneratorBlock(widths[i], widths[i + 1], num_classes if self.cbn else 0, sn=sn)
            )
            if at == 4 * 2 ** (i + 1):
                self.attention[str(i)] = SelfAttention(widths[i + 1], spectral=sn)
        self.bn = BatchNorm2d(widths[-1], eps=BN_EPS)  # plain, as the authors' last norm
        self.conv = _conv(widths[-1], self.out_shape[0], 3, 1.0, sn)
        self.out = output_layer(options.output, self.out_shape)

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        _check_input(z, (self.latent_dim,), "generator")
        if self.cbn and y is None:
            raise ValueError(
                f"this generator is conditional ({self.num_classes} classes): pass labels y (B,)"
            )
        h = self.linear(condition(z, y, self.concat)).view(z.shape[0], self.base, 4, 4)
        yc = y if self.cbn else None
        for i, block in enumerate(self.blocks):
            h = block(h, yc)
            if str(i) in self.attention:
                h = self.attention[str(i)](h)
        return self.out(self.conv(F.relu(self.bn(h))))  # (B, C, S, S)


class ResNetCritic(ProjectionCritic):
    """ResNet critic: images ``(B, C, S, S)`` -> ``(B, out_dim)``.

    ``features(x, y) = phi(x)``, the globally sum-pooled ReLU of the last block ``(B, F)``;
    ``head`` is the linear ``psi``. Unconditional or with ``concat``: ``forward == head(features)``.
    With ``projection``: ``forward(x, y) = head(phi) + <embed(y), phi>`` on the first output (the
    adversarial score; further outputs are ``head``'s only)."""

    def __init__(
        self, options: ResNetCriticOptions, in_shape: tuple[int, ...], out_dim: int, num_classes: int
    ) -> None:
        super().__init__()
        self.in_shape, self.num_classes = tuple(in_shape), num_classes
        resnet_steps(self.in_shape, "critic")
        side, sn = self.in_shape[1], options.spectral_norm
        plan = critic_plan(options, side)
        self.project = num_classes > 0 and options.conditioning == "projection"
        self.concat = num_classes if num_classes > 0 and not self.project else 0
        sides, s = [], side
        for _, down in plan:
            s = s // 2 if down else s
            sides.append(s)
        at = _attention_at(options.attention_side, sorted(set(sides), reverse=True), "critic")
        self.blocks = nn.ModuleList()
        n_in = self.in_shape[0] + self.concat
        placed = False
        for i, (width, down) in enumerate(plan):
            self.blocks.append(CriticBlock(n_in, width, down=down, sn=sn, optimized=i == 0))
            if at == sides[i] and not placed:  # after the first block that reaches that side
                self.blocks.append(SelfAttention(width, spectral=sn))
                placed = True
            n_in = width
        # The 32-pixel critic's head has no bias, the 64-pixel one has (the authors' code).
        self.head = _linear(n_in, out_dim, sn, bias=_pyramid(options.widths, side))
        self.embed: nn.Module | None = None
        if self.project:
            self.embed = _maybe_sn(label_embedding(num_classes, n_in), sn)

    def features(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """``phi(x)``: ReLU then global sum pooling of the last block's maps, ``(B, F)``."""
        _check_input(x, self.in_shape, "network")
        if self.concat:
            planes = one_hot(y, self.num_classes, x)[:, :, None, None]  # (B, K, 1, 1)
            x = torch.cat([x, planes.expand(-1, -1, *x.shape[2:])], dim=1)  # (B, C + K, S, S)
        h = x
        for block in self.blocks:
            h = block(h)
        return F.relu(h).sum(dim=(2, 3))


def resnet_generator(
    options: ResNetGeneratorOptions, *, latent_dim: int, out_shape: tuple[int, ...], num_classes: int
) -> ResNetGenerator:
    """ResNet generator (Miyato et al. 2018) for square images of side 4 * 2**k."""
    return ResNetGenerator(options, latent_dim, out_shape, num_classes)


def resnet_critic(
    options: ResNetCriticOptions, *, in_shape: tuple[int, ...], out_dim: int, num_classes: int
) -> ResNetCritic:
    """ResNet critic (Miyato et al. 2018) for square images of side 4 * 2**k."""
    return ResNetCritic(options, in_shape, out_dim, num_classes)


@genfw.hookimpl
def genfw_register_generators(register: Register) -> None:
    register(
        "resnet",
        resnet_generator,
        options=ResNetGeneratorOptions,
        help="ResNet generator of SNGAN (Miyato et al. 2018): up-sampling residual blocks, conditional "
        "batch norm (square images of side 4 * 2**k).",
    )


@genfw.hookimpl
def genfw_register_critics(register: Register) -> None:
    register(
        "resnet",
        resnet_critic,
        options=ResNetCriticOptions,
        help="ResNet critic of SNGAN (Miyato et al. 2018): residual blocks, global sum pooling, "
        "projection conditioning (square images of side 4 * 2**k).",
    )
