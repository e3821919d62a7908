"""Layers shared by several built-in plugins (private: no entry point, no registration).

- :class:`MinibatchStdDev`: the minibatch standard-deviation layer of ProGAN (Karras et al. 2018,
  section 3), used by the ProGAN critic and available to any critic as a GAN trick.
- :class:`PixelNorm`: pixel-wise feature normalisation (ProGAN, section 4.2).
- :class:`MinibatchDiscrimination`: the minibatch discrimination layer of Salimans et al. (2016).
- :class:`EqualizedLinear`, :class:`EqualizedConv2d`: equalised learning rate (ProGAN, section
  4.1): weights are stored as N(0, 1) draws and multiplied at run time by the He constant
  ``gain / sqrt(fan_in)``, so Adam's per-parameter step sizes act alike on every layer.
- :class:`ConditionalBatchNorm2d`: conditional batch norm (de Vries et al. 2017), the generators'
  ``conditioning: cbn``; :func:`projection`, :func:`with_projection`, :func:`label_embedding`: the
  projection critic (Miyato & Koyama 2018), the critics' ``conditioning: projection``.
- :class:`VectorConditionalBatchNorm2d`: BigGAN's conditional batch norm (Brock et al. 2019),
  whose gain and bias are linear maps of a conditioning vector (class embedding and latent chunk).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm


def group_size_for(batch: int, group_size: int) -> int:
    """The largest group size ``<= group_size`` that divides ``batch`` (the batch is split evenly)."""
    g = max(1, min(group_size, batch))
    while batch % g:
        g -= 1
    return g


def minibatch_stddev(x: Tensor, group_size: int = 4, eps: float = 1e-8) -> Tensor:
    """``x (B, C, H, W)`` -> ``(B, C + 1, H, W)``: one more feature map holding, for each group of
    examples, the standard deviation of every feature over the group averaged over features and
    positions (the layer of Karras et al. 2018; their code's grouping: example ``i`` belongs to
    group ``i mod (B / G)``). Computed in float32 (variance of nearby values loses precision in
    half precision)."""
    b, _, h, w = x.shape
    g = group_size_for(b, group_size)
    y = x.float().reshape(g, -1, *x.shape[1:])  # (G, B/G, C, H, W)
    y = y - y.mean(dim=0, keepdim=True)
    y = (y.square().mean(dim=0) + eps).sqrt()  # (B/G, C, H, W): stddev over each group
    y = y.mean(dim=(1, 2, 3))  # (B/G,)
    y = y.repeat(g).reshape(b, 1, 1, 1).expand(b, 1, h, w)  # example i gets group i mod (B/G)
    return torch.cat([x, y.to(x.dtype)], dim=1)


class MinibatchStdDev(nn.Module):
    """Appends the minibatch standard deviation as one feature map (see :func:`minibatch_stddev`)."""

    def __init__(self, group_size: int = 4, eps: float = 1e-8) -> None:
        super().__init__()
        self.group_size, self.eps = group_size, eps

    def forward(self, x: Tensor) -> Tensor:
        return minibatch_stddev(x, self.group_size, self.eps)

    def extra_repr(self) -> str:
        return f"group_size={self.group_size}"


def pixel_norm(x: Tensor, eps: float = 1e-8) -> Tensor:
    """``x / sqrt(mean over channels of x^2 + eps)``, for ``(B, C)`` or ``(B, C, H, W)``.

    Computed in float32 and returned in ``x``'s dtype: in half precision ``eps`` rounds to 0 (an
    all-zero pixel would give NaN) and squares above 256 overflow."""
    xf = x.float()
    return (xf * torch.rsqrt(xf.square().mean(dim=1, keepdim=True) + eps)).to(x.dtype)


class PixelNorm(nn.Module):
    def __init__(self, eps: float = 1e-8) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return pixel_norm(x, self.eps)


def he_scale(fan_in: int, gain: float = math.sqrt(2.0)) -> float:
    """The He constant ``gain / sqrt(fan_in)`` by which equalised layers scale their weights."""
    return gain / math.sqrt(fan_in)


class EqualizedLinear(nn.Module):
    """``y = x (c W)^T + b_s b`` with ``W ~ N(0, 1) / lr_multiplier``, ``c = gain * lr_multiplier /
    sqrt(in_features)``, ``b`` filled with ``bias_init`` and ``b_s = lr_multiplier``.

    ``lr_multiplier`` (StyleGAN's mapping network: 0.01) scales the effective learning rate of the
    layer by that factor under Adam, as the authors' ``FullyConnectedLayer``; 1 gives ProGAN's layer.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        gain: float = math.sqrt(2.0),
        *,
        lr_multiplier: float = 1.0,
        bias_init: float = 0.0,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init)))
        self.scale = he_scale(in_features, gain) * lr_multiplier
        self.bias_scale = lr_multiplier

    def forward(self, x: Tensor) -> Tensor:
        bias = self.bias if self.bias_scale == 1.0 else self.bias * self.bias_scale
        return F.linear(x, self.weight * self.scale, bias)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[1]}, {self.weight.shape[0]}, scale={self.scale:.4g}"


class EqualizedConv2d(nn.Module):
    """A convolution with ``W ~ N(0, 1)`` scaled by ``gain / sqrt(in_ch * k * k)``: same-padded
    unless ``padding`` is given, with ``stride``, and without bias where ``bias`` is false."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int,
        gain: float = math.sqrt(2.0),
        *,
        stride: int = 1,
        padding: int | None = None,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.scale = he_scale(in_channels * kernel * kernel, gain)
        self.padding = kernel // 2 if padding is None else padding
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, stride=self.stride, padding=self.padding)

    def extra_repr(self) -> str:
        o, i, k, _ = self.weight.shape
        return f"{i}, {o}, kernel={k}, scale={self.scale:.4g}"


def minibatch_features(x: Tensor, t: Tensor) -> Tensor:
    """Minibatch discrimination (Salimans et al. 2016, section 3.2): ``x (N, A)``, ``t (A, B, C)``
    -> ``o (N, B)``.

    ``M_i = x_i T`` reshaped ``(B, C)``; ``c_b(x_i, x_j) = exp(-||M_i,b - M_j,b||_1)`` and
    ``o(x_i)_b = sum_j c_b(x_i, x_j)`` over the whole minibatch, ``j = i`` included as in the paper
    (the authors' code leaves ``j = i`` out: a constant 1 that the next layer's bias absorbs).
    """
    m = (x @ t.flatten(1)).view(x.shape[0], t.shape[1], t.shape[2]).transpose(0, 1)  # (B, N, C)
    l1 = torch.cdist(m, m, p=1.0)  # (B, N, N); 2x faster than broadcasting (N, N, B, C) on a CPU
    return torch.exp(-l1).sum(dim=2).T  # (N, B)


class MinibatchDiscrimination(nn.Module):
    """``x (N, A)`` -> ``(N, A + num_kernels)``: the features with their minibatch statistics
    :func:`minibatch_features` appended. ``T`` starts as N(0, 0.05^2), as in the authors' code."""

    def __init__(self, in_features: int, num_kernels: int = 100, kernel_dim: int = 5) -> None:
        super().__init__()
        self.T = nn.Parameter(torch.randn(in_features, num_kernels, kernel_dim) * 0.05)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([x, minibatch_features(x, self.T.to(x.dtype)).to(x.dtype)], dim=1)

    def extra_repr(self) -> str:
        a, b, c = self.T.shape
        return f"{a}, num_kernels={b}, kernel_dim={c}"


class ConditionalBatchNorm2d(nn.Module):
    """Conditional batch norm (de Vries et al. 2017): batch norm without affine parameters, then a
    per-class gain and bias, ``gamma[y] * BN(x) + beta[y]``.

    ``gamma (K, C)`` starts at N(1, 0.02) and ``beta (K, C)`` at 0 (the SNGAN authors' code starts
    ``gamma`` at exactly 1; the small spread lets labels matter from the first step). They are
    plain parameters indexed by the label, not embedding layers: spectral normalisation of a
    generator refuses them in one line rather than normalise a table of gains."""

    def __init__(self, channels: int, num_classes: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, eps=eps, affine=False)
        self.gamma = nn.Parameter(torch.empty(num_classes, channels).normal_(1.0, 0.02))
        self.beta = nn.Parameter(torch.zeros(num_classes, channels))

    def forward(self, x: Tensor, y: Tensor | None) -> Tensor:
        if y is None:
            raise ValueError(f"conditional batch norm needs labels y (B,) ({self.gamma.shape[0]} classes)")
        h = self.bn(x)  # (B, C, H, W)
        y = y.long()
        gamma, beta = self.gamma[y].to(h.dtype), self.beta[y].to(h.dtype)  # (B, C)
        return gamma[:, :, None, None] * h + beta[:, :, None, None]


class VectorConditionalBatchNorm2d(nn.Module):
    """BigGAN's conditional batch norm (Brock et al. 2019; BigGAN-PyTorch ``layers.ccbn``): batch
    norm without affine parameters, then ``(1 + G c) * BN(x) + B c`` for a conditioning vector
    ``c (B, cond_dim)`` (the shared class embedding and the block's latent chunk), ``G`` and ``B``
    linear maps without bias (spectrally normalised with ``sn``, as the authors' ``SNLinear``)."""

    def __init__(self, channels: int, cond_dim: int, eps: float = 1e-5, sn: bool = False) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, eps=eps, affine=False)
        self.gain = nn.Linear(cond_dim, channels, bias=False)
        self.bias = nn.Linear(cond_dim, channels, bias=False)
        for lin in (self.gain, self.bias):
            nn.init.xavier_uniform_(lin.weight)
        if sn:
            self.gain, self.bias = spectral_norm(self.gain), spectral_norm(self.bias)

    def forward(self, x: Tensor, c: Tensor | None) -> Tensor:
        if c is None:
            raise ValueError("this conditional batch norm needs a conditioning vector c (B, cond_dim)")
        h = self.bn(x)  # (B, C, H, W)
        gain = 1.0 + self.gain(c.to(h.dtype))  # (B, C)
        return gain[:, :, None, None] * h + self.bias(c.to(h.dtype))[:, :, None, None]


def projection(features: Tensor, embedding: Tensor) -> Tensor:
    """The projection term of Miyato & Koyama (2018): ``<embed(y), phi(x)>`` per example, from
    ``features (B, F)`` and ``embedding (B, F)`` (the label embedding's rows) -> ``(B, 1)``."""
    return (embedding * features).sum(dim=1, keepdim=True)


def with_projection(scores: Tensor, features: Tensor, embedding: Tensor) -> Tensor:
    """A projection critic's output: ``scores (B, D)`` (``psi(phi(x))``, the head's) plus the
    projection term on the first column, the adversarial score; further columns (extra heads) are
    the head's alone."""
    term = projection(features, embedding.to(features.dtype)).to(scores.dtype)  # (B, 1)
    return scores + F.pad(term, (0, scores.shape[1] - 1))


class ProjectionCritic(nn.Module):
    """Base of the convolutional critics with ``conditioning: projection`` (Miyato & Koyama 2018):
    ``forward = head(features)``, plus ``<embed(y), features>`` on the first output where the
    subclass sets ``embed`` (else ``None``: concatenation or no labels). Subclasses define
    ``features(x, y)``, ``head``, ``embed`` and ``num_classes``."""

    embed: nn.Module | None

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        h = self.features(x, y)
        out = self.head(h)  # (B, out_dim)
        if self.embed is None:
            return out
        if y is None:
            raise ValueError(f"this critic is conditional ({self.num_classes} classes): pass labels y (B,)")
        return with_projection(out, h, self.embed(y.long()))


def label_embedding(num_classes: int, features: int) -> nn.Embedding:
    """The projection critic's class embedding ``(K, F)``, Glorot uniform as in the authors' code."""
    embed = nn.Embedding(num_classes, features)
    nn.init.xavier_uniform_(embed.weight)
    return embed
