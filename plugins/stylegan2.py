"""StyleGAN2 (Karras et al. 2020, "Analyzing and Improving the Image Quality of StyleGAN").

Written from the paper and the authors' PyTorch code (NVlabs/stylegan2-ada-pytorch,
``training/networks.py`` and ``training/loss.py``), at small resolution (8 to 64 pixels).

Generator: a mapping network (``z`` normalised by its second moment, ``mapping_layers`` equalised
dense layers with learning-rate multiplier 0.01 and leaky ReLU) gives ``w``; ``w_avg`` (a buffer,
``w_avg <- lerp(mean w, w_avg, 0.995)`` at every training call) is the centre of the truncation
trick ``w' = w_avg + psi (w - w_avg)``. The synthesis network starts from a learned constant 4x4
and doubles the resolution per block; each layer is a modulated and demodulated 3x3 convolution
(``w_ijk s_i / sqrt(sum_ik (w_ijk s_i)^2 + 1e-8)``, ``s`` an affine map of ``w`` with bias 1),
per-pixel noise times a learned strength, bias, leaky ReLU(0.2) times sqrt 2. The "skip"
architecture: a toRGB (modulated 1x1, not demodulated) at every resolution, the image so far
upsampled by the FIR filter [1, 3, 3, 1] and added. Style mixing: during training, with
probability 0.9, the ``w`` of a second ``z`` replaces the first from a random layer on.

Critic: the "resnet" architecture: fromRGB at the data's resolution, then per resolution two 3x3
convolutions (the second downsampling) plus a 1x1 downsampling skip, summed and scaled by
1/sqrt 2; at 4x4 the minibatch standard deviation (groups of 4), a 3x3 convolution, a dense layer
and a linear output. Every layer has an equalised learning rate.

Conditional (``conditional: true``, labelled data): G's mapping network takes the normalised
embedding of the one-hot label beside ``z``; the critic's output has as many features as its 4x4
maps and is projected onto a mapping network's output for the label, divided by sqrt of their
number (the authors' ``cmap``).

Losses: non-saturating logistic (the ``loss`` slot); lazy R1 on the critic (the ``r1``
regulariser with ``interval`` 16: on every 16th critic step, times 16); path-length
regularisation of the generator on every 4th generator step, times 4 (below); an EMA of the
generator with a half-life of ``ema_kimg`` thousand images (the ``ema`` callback). Adam(0.002,
0, 0.99, eps 1e-8), the learning rate times ``c = k / (k + 1)`` and the betas to the power ``c`` for
a player regularised every ``k`` steps (appendix B).

Path length: ``a`` (``pl_mean``, a buffer of the module ``path_length``) is the running mean of
``||J_w^T y||_2`` (decay 0.01); the penalty is ``pl_weight E (||J_w^T y||_2 - a)^2`` with
``y ~ N(0, I) / sqrt(H W)``, over a batch of ``B / pl_batch_shrink`` fresh fakes. ``J_w^T y`` is
the gradient of ``sum(G(w) * y)`` with respect to every layer's ``w``; as in the authors' code the
squared norm is summed over ``w``'s coordinates and averaged over layers.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, ClassVar

import attrs
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import genfw
from genfw import Batch, BuildContext, GenfwError, Model, Modules, Optim, Slot, device_of
from genfw import validators as check
from genfw.contracts import PhaseSpec, Players, Variant
from genfw_plugins._adversarial import AdversarialGAN, Scores, Turn
from genfw_plugins._layers import EqualizedConv2d, EqualizedLinear, MinibatchStdDev
from genfw_plugins.modern import HostCount, StepCounter
from genfw_plugins.tricks import add_module

SQRT2 = math.sqrt(2.0)
FIR = (1.0, 3.0, 3.0, 1.0)  # the authors' resample filter


def lrelu(x: Tensor, gain: float = 1.0) -> Tensor:
    """Leaky ReLU (0.2) times ``sqrt(2) * gain`` (the authors' ``bias_act`` with ``lrelu``)."""
    return F.leaky_relu(x, 0.2) * (SQRT2 * gain)


def normalize_2nd_moment(x: Tensor, eps: float = 1e-8) -> Tensor:
    """``x / sqrt(mean over features of x^2 + eps)`` per row ``(B, d)``."""
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


# --- the FIR filter [1, 3, 3, 1] -------------------------------------------------------------------


def fir_kernel(channels: int, like: Tensor, gain: float = 1.0) -> Tensor:
    """The separable 4x4 filter ``outer(f, f) / sum(f)^2 * gain`` as a depthwise kernel ``(C, 1, 4, 4)``."""
    f = torch.tensor(FIR, device=like.device, dtype=like.dtype)
    k = torch.outer(f, f)
    k = k / k.sum() * gain
    return k.expand(channels, 1, 4, 4)


def upsample2d(x: Tensor) -> Tensor:
    """``(B, C, H, W) -> (B, C, 2H, 2W)``: zeros inserted, then the FIR filter (gain 4), zero
    padding outside: the authors' ``upfirdn2d.upsample2d`` (away from the border, bilinear)."""
    c = x.shape[1]
    return F.conv_transpose2d(x, fir_kernel(c, x, 4.0), stride=2, padding=1, groups=c)


def blur(x: Tensor, pad: int) -> Tensor:
    """The FIR filter on ``(B, C, H, W)`` with ``pad`` zeros each side: ``(H + 2 pad - 3)``."""
    c = x.shape[1]
    return F.conv2d(F.pad(x, (pad, pad, pad, pad)), fir_kernel(c, x), groups=c)


def downsample2d(x: Tensor) -> Tensor:
    """``(B, C, H, W) -> (B, C, H/2, W/2)``: the FIR filter then every second pixel (the authors'
    ``upfirdn2d.downsample2d``, padding 1 each side)."""
    c = x.shape[1]
    return F.conv2d(x, fir_kernel(c, x), stride=2, padding=1, groups=c)


# --- modulated convolution -------------------------------------------------------------------------


def modulated_conv2d(x: Tensor, weight: Tensor, styles: Tensor, demodulate: bool = True) -> Tensor:
    """StyleGAN2's modulated convolution, same-padded: ``x (B, I, H, W)``, ``weight (O, I, k, k)``,
    ``styles (B, I)`` -> ``(B, O, H, W)``.

    Sample ``b`` is convolved with ``w'_oik = w_oik s_bi``, divided (``demodulate``) by
    ``sqrt(sum_ik w'_oik^2 + 1e-8)``. Computed as the authors' non-fused path: the input scaled by
    the styles, one shared convolution, the output scaled by the demodulation coefficients.
    """
    b = x.shape[0]
    x = x * styles.reshape(b, -1, 1, 1).to(x.dtype)
    x = F.conv2d(x, weight.to(x.dtype), padding=weight.shape[-1] // 2)
    if demodulate:
        w = weight.float().unsqueeze(0) * styles.float().reshape(b, 1, -1, 1, 1)  # (B, O, I, k, k)
        d = (w.square().sum(dim=(2, 3, 4)) + 1e-8).rsqrt()  # (B, O)
        x = x * d.reshape(b, -1, 1, 1).to(x.dtype)
    return x


class SynthesisLayer(nn.Module):
    """Modulated 3x3 convolution (after FIR upsampling where ``up``), noise, bias, leaky ReLU."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, up: bool) -> None:
        super().__init__()
        self.up, self.resolution = up, resolution
        self.affine = EqualizedLinear(w_dim, in_channels, gain=1.0, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 3, 3))
        self.noise_strength = nn.Parameter(torch.zeros(()))
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        if self.up:
            x = upsample2d(x)
        x = modulated_conv2d(x, self.weight, self.affine(w))
        noise = torch.randn(x.shape[0], 1, self.resolution, self.resolution, device=x.device, dtype=x.dtype)
        x = x + noise * self.noise_strength.to(x.dtype)
        return lrelu(x + self.bias.to(x.dtype).reshape(1, -1, 1, 1))


class ToRGB(nn.Module):
    """Modulated 1x1 convolution to the image's channels, not demodulated, plus bias (linear)."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int) -> None:
        super().__init__()
        self.affine = EqualizedLinear(w_dim, in_channels, gain=1.0, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.weight_gain = 1.0 / math.sqrt(in_channels)

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        x = modulated_conv2d(x, self.weight, self.affine(w) * self.weight_gain, demodulate=False)
        return x + self.bias.to(x.dtype).reshape(1, -1, 1, 1)


def channels_at(resolution: int, channel_base: int, channel_max: int) -> int:
    """Feature maps at ``resolution``: ``min(channel_base // resolution, channel_max)`` (the
    authors' rule), at least 1."""
    return max(1, min(channel_base // resolution, channel_max))


class MappingNetwork(nn.Module):
    """``z (B, z_dim)`` and labels ``y (B,)`` -> ``w (B, w_dim)``: ``z`` normalised by its second
    moment and, with ``num_classes``, beside it the embedding of the one-hot label (an equalised
    dense layer to ``w_dim``) normalised the same way; then ``layers`` equalised dense layers
    (learning-rate multiplier ``lr_multiplier``) with leaky ReLU (the authors'
    ``MappingNetwork``). With ``w_avg_beta``, ``w_avg`` follows the mean ``w`` of every call in
    training mode. ``z_dim`` 0: the label alone (the critic's projection)."""

    def __init__(
        self,
        z_dim: int,
        w_dim: int,
        layers: int,
        lr_multiplier: float,
        w_avg_beta: float | None,
        num_classes: int = 0,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.embed = EqualizedLinear(num_classes, w_dim, gain=1.0) if num_classes else None
        dims = [z_dim + (w_dim if num_classes else 0)] + [w_dim] * layers
        self.fc = nn.ModuleList(
            EqualizedLinear(a, b, gain=1.0, lr_multiplier=lr_multiplier) for a, b in itertools.pairwise(dims)
        )
        self.w_avg_beta = w_avg_beta
        if w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z: Tensor | None, y: Tensor | None = None, update_w_avg: bool = True) -> Tensor:
        parts = [] if z is None else [normalize_2nd_moment(z.float())]
        if self.embed is not None:
            if y is None:
                raise GenfwError("this stylegan2 is conditional: it needs a label per sample (--label k)")
            onehot = F.one_hot(y.long(), self.num_classes).float()
            parts.append(normalize_2nd_moment(self.embed(onehot).float()))
        x = torch.cat(parts, dim=1)
        if z is not None:
            x = x.to(z.dtype)
        for layer in self.fc:
            x = lrelu(layer(x))
        if update_w_avg and self.training and self.w_avg_beta is not None:
            with torch.no_grad():
                self.w_avg.copy_(x.detach().float().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        return x


def truncate(w: Tensor, w_avg: Tensor, psi: float) -> Tensor:
    """The truncation trick: ``w_avg + psi (w - w_avg)`` (``w (B, ..., w_dim)``)."""
    return w_avg.to(w.dtype).lerp(w, psi) if psi != 1.0 else w


def mix_styles(ws: Tensor, ws2: Tensor, cutoff: int) -> Tensor:
    """Style mixing: layers ``cutoff`` and up take ``ws2``'s styles (``ws (B, L, w_dim)``)."""
    return torch.cat([ws[:, :cutoff], ws2[:, cutoff:]], dim=1)


class StyleGenerator(nn.Module):
    """``z (B, latent_dim)`` -> images ``(B, C, S, S)``: mapping network, then the synthesis network
    ("skip" architecture) with one ``w`` per layer (``num_ws`` of them: each convolution, and the
    last toRGB; every other toRGB shares the next convolution's ``w``, as the authors' code).

    ``forward(z, y=None, *, mix=None, psi=1.0, path_length=False)``: ``mix = (z2, cutoff)`` crosses
    in the ``w`` of ``z2`` from layer ``cutoff`` on (style mixing); ``psi`` truncates towards
    ``w_avg``; ``path_length`` returns, instead of the images, their path lengths ``||J_w^T y||``
    ``(B,)`` (:func:`path_lengths`), differentiable, computed in float32. They are computed inside
    ``forward`` so that the gradient with respect to the per-layer ``ws`` is taken on the graph that
    made the images, whatever wraps the module (DDP; Accelerate's mixed precision casts outputs).
    """

    def __init__(
        self,
        latent_dim: int,
        out_shape: tuple[int, ...],
        *,
        w_dim: int,
        mapping_layers: int,
        mapping_lr: float,
        channel_base: int,
        channel_max: int,
        w_avg_beta: float,
        num_classes: int = 0,
    ) -> None:
        super().__init__()
        self.latent_dim, self.out_shape, self.num_classes = latent_dim, tuple(out_shape), num_classes
        c, side = self.out_shape[0], self.out_shape[-1]
        self.mapping = MappingNetwork(latent_dim, w_dim, mapping_layers, mapping_lr, w_avg_beta, num_classes)
        ch = lambda r: channels_at(r, channel_base, channel_max)  # noqa: E731
        self.const = nn.Parameter(torch.randn(ch(4), 4, 4))
        self.resolutions = [4 * 2**i for i in range(int(math.log2(side // 4)) + 1)]
        self.convs = nn.ModuleList()  # per resolution: [conv] at 4x4, [conv0 (up), conv1] above
        self.torgb = nn.ModuleList()
        for r in self.resolutions:
            if r == 4:
                layers = [SynthesisLayer(ch(4), ch(4), w_dim, 4, up=False)]
            else:
                layers = [
                    SynthesisLayer(ch(r // 2), ch(r), w_dim, r, up=True),
                    SynthesisLayer(ch(r), ch(r), w_dim, r, up=False),
                ]
            self.convs.append(nn.ModuleList(layers))
            self.torgb.append(ToRGB(ch(r), c, w_dim))
        self.num_ws = sum(len(layers) for layers in self.convs) + 1

    def styles(
        self, z: Tensor, y: Tensor | None = None, mix: tuple[Tensor, int] | None = None, psi: float = 1.0
    ) -> Tensor:
        """``ws (B, num_ws, w_dim)``: the mapped ``w`` per layer (labels ``y`` where conditional),
        mixed and truncated."""
        y = y if self.num_classes else None
        ws = self.mapping(z, y).unsqueeze(1).repeat(1, self.num_ws, 1)
        if mix is not None:
            z2, cutoff = mix
            ws2 = self.mapping(z2, y, update_w_avg=False).unsqueeze(1).repeat(1, self.num_ws, 1)
            ws = mix_styles(ws, ws2, cutoff)
        return truncate(ws, self.mapping.w_avg, psi)

    def synthesis(self, ws: Tensor) -> Tensor:
        x = self.const.to(ws.dtype).unsqueeze(0).repeat(ws.shape[0], 1, 1, 1)
        img, i = None, 0
        for layers, torgb in zip(self.convs, self.torgb, strict=True):
            for layer in layers:
                x = layer(x, ws[:, i])
                i += 1
            y = torgb(x, ws[:, i])  # the next convolution's w (the last: its own)
            img = y if img is None else upsample2d(img) + y
        return img

    def forward(
        self,
        z: Tensor,
        y: Tensor | None = None,
        *,
        mix: tuple[Tensor, int] | None = None,
        psi: float = 1.0,
        path_length: bool = False,
    ) -> Tensor:
        if path_length:  # float32: the double backward of a half-precision image underflows
            with torch.autocast(z.device.type, enabled=False):
                ws = self.styles(z.float(), y, None if mix is None else (mix[0].float(), mix[1]), psi)
                img = self.synthesis(ws)
                noise = torch.randn_like(img) / math.sqrt(img.shape[2] * img.shape[3])
                return path_lengths(img, ws, noise)
        return self.synthesis(self.styles(z, y, mix, psi))


class ResidualBlock(nn.Module):
    """The critic's block: ``(x_skip + conv1(conv0(x))) / sqrt 2`` at half the resolution, the skip a
    1x1 convolution without bias after FIR downsampling, ``conv1`` a 3x3 convolution after the FIR
    filter, with stride 2 (the authors' ``DiscriminatorBlock``, ``resnet``)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv0 = EqualizedConv2d(in_channels, in_channels, 3, gain=1.0)
        self.conv1 = EqualizedConv2d(in_channels, out_channels, 3, gain=1.0, stride=2, padding=0)
        self.skip = EqualizedConv2d(in_channels, out_channels, 1, gain=1.0, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        y = self.skip(downsample2d(x)) * math.sqrt(0.5)
        x = lrelu(self.conv0(x))
        x = lrelu(self.conv1(blur(x, 2)), gain=math.sqrt(0.5))
        return y + x


def projection(out: Tensor, cmap: Tensor) -> Tensor:
    """The conditional critic's score ``(out . cmap) / sqrt(d)`` per row (``(B, d)`` each) -> ``(B, 1)``."""
    return (out * cmap).sum(dim=1, keepdim=True) / math.sqrt(out.shape[1])


class ResidualCritic(nn.Module):
    """Images ``(B, C, S, S)`` (and labels ``y (B,)`` where ``num_classes``) -> scores ``(B, 1)``:
    fromRGB (1x1), a residual block per resolution down to 4x4, then minibatch stddev, a 3x3
    convolution, a dense layer and a linear output (the authors' ``DiscriminatorEpilogue``). A
    conditional critic's output has ``cmap_dim = channels at 4x4`` features, projected onto the
    label's mapped embedding (:func:`projection`; the authors' ``cmap``, a mapping network of the
    label alone)."""

    def __init__(
        self,
        in_shape: tuple[int, ...],
        *,
        channel_base: int,
        channel_max: int,
        mbstd_group: int,
        num_classes: int = 0,
        mapping_layers: int = 8,
        mapping_lr: float = 0.01,
    ) -> None:
        super().__init__()
        c, side = in_shape[0], in_shape[-1]
        ch = lambda r: channels_at(r, channel_base, channel_max)  # noqa: E731
        self.fromrgb = EqualizedConv2d(c, ch(side), 1, gain=1.0)
        resolutions = [side // 2**i for i in range(int(math.log2(side // 4)))]  # side, ..., 8
        self.blocks = nn.ModuleList(ResidualBlock(ch(r), ch(r // 2)) for r in resolutions)
        self.mbstd = MinibatchStdDev(mbstd_group)
        self.conv = EqualizedConv2d(ch(4) + 1, ch(4), 3, gain=1.0)
        self.fc = EqualizedLinear(ch(4) * 16, ch(4), gain=1.0)
        self.num_classes = num_classes
        self.out = EqualizedLinear(ch(4), ch(4) if num_classes else 1, gain=1.0)
        if num_classes:
            self.mapping = MappingNetwork(0, ch(4), mapping_layers, mapping_lr, None, num_classes)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        x = lrelu(self.fromrgb(x))
        for block in self.blocks:
            x = block(x)
        x = lrelu(self.conv(self.mbstd(x)))
        x = lrelu(self.fc(x.flatten(1)))
        out = self.out(x)
        if self.num_classes:
            if y is None:
                raise GenfwError("this stylegan2 critic is conditional: it needs the labels of the images")
            out = projection(out, self.mapping(None, y).to(out.dtype))
        return out


# --- path-length regularisation --------------------------------------------------------------------


class PathLength(StepCounter):
    """The path-length regulariser's state: ``pl_mean`` (the running mean ``a``) and ``steps`` (the
    generator steps seen, which choose the lazy steps)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("pl_mean", torch.zeros(()))


def path_lengths(img: Tensor, ws: Tensor, noise: Tensor) -> Tensor:
    """``||J_w^T y||`` per example ``(B,)``, differentiable: the gradient of ``sum(img * noise)``
    with respect to ``ws (B, L, w_dim)``, its square summed over ``w_dim``, averaged over the
    ``L`` layers, square-rooted (the authors' ``pl_lengths``), in float32."""
    (grad,) = torch.autograd.grad((img.float() * noise).sum(), ws, create_graph=True)
    return grad.float().square().sum(dim=2).mean(dim=1).sqrt()


def path_length_penalty(lengths: Tensor, pl_mean: Tensor, decay: float) -> tuple[Tensor, Tensor]:
    """``((lengths - a')^2 (B,), a')`` with ``a' = a + decay (mean(lengths) - a)``: the penalty uses
    the updated mean, through which the gradient also flows (as the authors' code)."""
    a = pl_mean.lerp(lengths.mean(), decay)
    return (lengths - a).square(), a


# --- the variant -----------------------------------------------------------------------------------


@attrs.define
class StyleGAN2Options:
    latent_dim: int = attrs.field(default=128, validator=check.at_least(1))  # z (the authors': 512)
    w_dim: int = attrs.field(default=128, validator=check.at_least(1))  # w (the authors': 512)
    mapping_layers: int = attrs.field(default=8, validator=check.at_least(1))  # the paper's 8
    mapping_lr: float = attrs.field(default=0.01, validator=check.positive)  # lr multiplier
    # Feature maps at resolution r: min(channel_base // r, channel_max) (the authors' CIFAR
    # config: 32768 and 512; these defaults fit a CPU).
    channel_base: int = attrs.field(default=4096, validator=check.at_least(1))
    channel_max: int = attrs.field(default=128, validator=check.at_least(1))
    lr_generator: float = attrs.field(default=0.002, validator=check.positive)
    lr_critic: float = attrs.field(default=0.002, validator=check.positive)
    beta1: float = attrs.field(default=0.0, validator=check.in_interval(0, 1, high_open=True))
    beta2: float = attrs.field(default=0.99, validator=check.in_interval(0, 1, high_open=True))
    n_critic: int = attrs.field(default=1, validator=check.at_least(1))  # critic steps per step (1)
    # Lazy R1: gamma/2 E||grad D(x)||^2 on every r1_interval-th critic step, times r1_interval
    # (the r1 regulariser). 0: no R1. The paper's FFHQ gamma is 10 (CIFAR-10: 0.01).
    r1_gamma: float = attrs.field(default=10.0, validator=check.non_negative)
    r1_interval: int = attrs.field(default=16, validator=check.at_least(1))
    # Path-length regularisation on every pl_interval-th generator step, times pl_interval; 0: none.
    pl_weight: float = attrs.field(default=2.0, validator=check.non_negative)
    pl_interval: int = attrs.field(default=4, validator=check.at_least(1))
    pl_decay: float = attrs.field(default=0.01, validator=check.in_interval(0, 1, low_open=True))
    pl_batch_shrink: int = attrs.field(default=2, validator=check.at_least(1))
    style_mixing: float = attrs.field(default=0.9, validator=check.in_interval(0, 1))  # probability
    mbstd_group: int = attrs.field(default=4, validator=check.at_least(1))
    w_avg_beta: float = attrs.field(default=0.995, validator=check.in_interval(0, 1, high_open=True))
    # Half-life of the generator's EMA in thousands of images (the ema callback's half_life_kimg);
    # 0: sample from the live generator.
    ema_kimg: float = attrs.field(default=10.0, validator=check.non_negative)
    # true: G and D see the data's labels, as the authors' conditional networks: G's mapping takes
    # the label's embedding beside z, D projects its output onto the label's mapped embedding.
    conditional: bool = False


def lazy_optim(lr: float, betas: tuple[float, float], interval: int) -> Optim:
    """Adam for a player regularised every ``interval`` steps (appendix B of the paper, as the
    authors' ``mb_ratio``): ``c = interval / (interval + 1)``, learning rate ``c lr``, betas ``b^c``.
    ``interval`` 1 is no lazy regularisation (the penalty is in every step's loss): ``c = 1``."""
    c = interval / (interval + 1) if interval > 1 else 1.0
    return Optim("adam", lr * c, (betas[0] ** c, betas[1] ** c))


class StyleGAN2(AdversarialGAN, Variant):
    """StyleGAN2 (Karras et al. 2020): mapping network, modulated convolutions, lazy R1, path length."""

    slots: ClassVar[dict[str, Slot]] = {
        "prior": Slot("prior", "normal", help="distribution of z, the mapping network's input"),
        "loss": Slot("loss", "non_saturating", role="adversarial"),
    }
    # Its own networks (StyleGenerator, ResidualCritic), not slots.
    players: ClassVar[Players] = Players(generators="generator", critics="critic")
    phases: ClassVar[dict[str, PhaseSpec]] = {
        "critic": PhaseSpec(
            {"real", "fake", "critic", "labels", "real_scores", "fake_scores"},
            help="the critic minimises the logistic loss on a real batch and style-mixed fakes (+ lazy R1)",
        ),
        "generator": PhaseSpec(
            {"fake", "critic", "labels", "fake_scores"},
            help="the generator minimises the non-saturating loss (+ lazy path-length regularisation)",
        ),
    }
    replayable: ClassVar[bool] = True
    truncation: ClassVar[bool] = True
    options: StyleGAN2Options
    num_classes: int = 0  # classes the players are conditioned on (conditional: true); set by build

    @classmethod
    def refuse(cls, remedy: str, options: StyleGAN2Options) -> str | None:
        if options.conditional and remedy in ("experience_replay", "packing"):
            return f"with conditional: true its critic scores labelled fakes, which {remedy} would strip"
        return None

    @classmethod
    def remedies(cls, options: StyleGAN2Options) -> dict[str, dict[str, Any]]:
        """Lazy R1 (``r1``: gamma, interval) and the EMA of G (half-life ``ema_kimg``, no warm-up)."""
        own: dict[str, dict[str, Any]] = {}
        if options.r1_gamma > 0:
            own["r1"] = {"gamma": options.r1_gamma, "interval": options.r1_interval}
        if options.ema_kimg > 0:
            own["ema"] = {"half_life_kimg": options.ema_kimg, "warmup": False}
        return own

    def build(self, ctx: BuildContext) -> Model:
        o = self.options
        shape = tuple(ctx.data.shape)
        side = shape[-1] if len(shape) == 3 else 0
        if len(shape) != 3 or shape[1] != shape[2] or side < 8 or side & (side - 1):
            raise GenfwError(
                f"stylegan2 makes square images of 8, 16, 32, 64, ... pixels; the data have shape {shape} "
                f"(e.g. --dataset digits, or image_folder --dataset.size 32)"
            )
        self.num_classes = ctx.data.num_classes if o.conditional else 0
        if o.conditional and not self.num_classes:
            raise GenfwError(
                "stylegan2 with conditional: true needs labelled data, and this data set has no classes; "
                "drop --plugin.conditional or use a data set with labels (e.g. --dataset digits)"
            )
        nets = {"channel_base": o.channel_base, "channel_max": o.channel_max, "num_classes": self.num_classes}
        generator = StyleGenerator(
            o.latent_dim,
            shape,
            w_dim=o.w_dim,
            mapping_layers=o.mapping_layers,
            mapping_lr=o.mapping_lr,
            w_avg_beta=o.w_avg_beta,
            **nets,
        )
        # The conditional critic's label mapping has the authors' default 8 layers whatever G's has.
        critic = ResidualCritic(shape, mbstd_group=o.mbstd_group, mapping_lr=o.mapping_lr, **nets)
        self.num_ws = generator.num_ws
        self.prior = ctx["prior"].build(dim=o.latent_dim)
        self.loss = ctx["loss"].build()
        betas = (o.beta1, o.beta2)
        # Adam's correction follows the r1 the run attaches (its own, with a user's
        # --regulariser.r1.* merged over it), not only the options it was attached with.
        r1 = ctx.remedies.get("r1")
        d_interval = r1.interval if r1 is not None else 1
        g_interval = o.pl_interval if o.pl_weight > 0 else 1
        phases = self.adversarial_phases(
            ctx,
            lazy_optim(o.lr_critic, betas, d_interval),
            lazy_optim(o.lr_generator, betas, g_interval),
            n_critic=o.n_critic,
            critic_provides=self.phases["critic"].provides,
            generator_provides=self.phases["generator"].provides,
        )
        modules: dict[str, nn.Module] = {"generator": generator, "critic": critic}
        model = Model(
            modules=modules,
            phases=phases,
            sample=self.sample,
            truncate=self.truncated,
            num_classes=self.num_classes,
        )
        self.count: HostCount | None = None
        if o.pl_weight > 0:
            self.path_length = PathLength()
            add_module(model, "path_length", self.path_length)
            self.count = HostCount(self.path_length)
        return model

    # -- hooks of the adversarial step ------------------------------------------------------------
    def mixing(self, n: int, device: torch.device) -> tuple[Tensor, int] | None:
        """Style mixing for one batch: with probability ``style_mixing`` a second ``z`` and the
        first layer it takes over, uniform in ``1 .. num_ws - 1`` (the draws on the CPU generator,
        so no device sync)."""
        if self.num_ws < 2 or float(torch.rand(())) >= self.options.style_mixing:
            return None
        cutoff = int(torch.randint(1, self.num_ws, ()))
        return self.noise(n, device), cutoff

    def draw(self, m: Modules, batch: Batch) -> Turn:
        device = batch.x.device
        n = len(batch)
        return Turn(m, batch, self.noise(n, device), self.labels(batch), self.mixing(n, device))

    def labels(self, batch: Batch) -> Tensor | None:
        return batch.y if self.num_classes else None

    def generate(self, t: Turn) -> Tensor:
        return t.m.generator(t.z, t.labels, mix=t.extra)

    def score(self, t: Turn, x: Tensor, y: Tensor | None) -> Scores:
        return Scores(t.m.critic(x, y).squeeze(1))

    def generator_extra(self, t: Turn, fake: Scores) -> tuple[Tensor | None, dict[str, Tensor]]:
        """Lazy path-length regularisation: on every ``pl_interval``-th generator step, ``pl_weight
        * pl_interval * E (||J_w^T y|| - a)^2`` on ``B / pl_batch_shrink`` fresh style-mixed fakes,
        in float32."""
        o = self.options
        if self.count is None or self.count.tick() % o.pl_interval:
            return None, {}
        device = t.batch.x.device
        n = max(1, len(t.batch) // o.pl_batch_shrink)
        y = None if t.labels is None else t.labels[:n]
        lengths = t.m.generator(
            self.noise(n, device), y, mix=self.mixing(n, device), path_length=True
        ).float()
        penalty, a = path_length_penalty(lengths, self.path_length.pl_mean, o.pl_decay)
        self.path_length.pl_mean.copy_(a.detach())
        term = penalty.mean() * (o.pl_weight * o.pl_interval)
        return term, {"path_length": lengths.detach().mean(), "pl_penalty": penalty.detach().mean()}

    def sample(self, m: Modules, n: int, y: Tensor | None = None) -> Tensor:
        g = m.generator
        return g(self.noise(n, device_of(g)), y if self.num_classes else None)

    def truncated(self, m: Modules, n: int, y: Tensor | None, psi: float) -> Tensor:
        """``n`` samples with every layer's ``w`` truncated: ``w_avg + psi (w - w_avg)``."""
        if not math.isfinite(psi):
            raise GenfwError(f"truncation psi must be a finite number, got {psi}; 1 leaves w as it is")
        g = m.generator
        return g(self.noise(n, device_of(g)), y if self.num_classes else None, psi=psi)


@genfw.hookimpl
def genfw_register_variants(register):
    register(
        "stylegan2",
        StyleGAN2,
        options=StyleGAN2Options,
        help="StyleGAN2 (Karras et al. 2020): mapping network, modulated convolutions, lazy R1, path length.",
    )
