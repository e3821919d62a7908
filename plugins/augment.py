"""Differentiable augmentation for GANs trained on little data.

=============== ============ ==================================================================
``diffaugment`` callback     the same differentiable T on every critic input, real and fake, in
                             both players' phases (Zhao et al. 2020, DiffAugment)
``ada``         callback     adaptive discriminator augmentation: each op applied with
                             probability p, p tuned from ``r_t = E[sign D(real)]`` (Karras et
                             al. 2020, StyleGAN2-ADA)
``bcr``         regulariser  balanced consistency: the critic adds ``lambda_real ||D(x) -
                             D(T(x))||^2 + lambda_fake ||D(G(z)) - D(T(G(z)))||^2`` (Zhao et al. 2021)
=============== ============ ==================================================================

The two augmentations wrap each data-space critic the variant declares (``Players.critics``) in
:class:`AugmentedCritic`, the pattern of instance noise's ``NoisyCritic``: every input the
critic scores, in the critic's and the generator's phase, from the variant or from a regulariser
(gradient penalties, feature matching), goes through T first, and gradients flow through T into
the generator. They wrap after the tricks that change the critic's layers (packing,
minibatch layers, spectral norm) and after instance noise, so T sees single samples (never
packs) and the noise is added to the augmented image.

Images are ``(B, C, H, W)`` of any size and channel count; data of another shape (toy2d points)
is refused in one line. Every random draw comes from torch's default generator on the data's
device, which the loop seeds and checkpoints, so a run is reproducible for a seed and
``--resume`` is bit-exact. ADA's p and its sign statistics are buffers of the module ``ada``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import attrs
import torch
from torch import Tensor, nn

import genfw
from genfw import BuildContext, GenfwError, Model, PhaseOutput
from genfw import validators as check
from genfw.contracts import Callback, LoopState, VariantInfo
from genfw.hookspecs import Register
from genfw.plugins import variants_where
from genfw_plugins.tricks import (
    PackedCritic,
    TransformedCritic,
    add_module,
    declares,
    phases_training,
    players,
)

# --- shared pieces --------------------------------------------------------------------------------


def image_shape(shape: tuple[int, ...], what: str) -> tuple[int, int, int]:
    """``(C, H, W)``, or a one-line refusal of data that is not images (toy2d points)."""
    if len(shape) != 3:
        raise GenfwError(
            f"{what} augments images (C, H, W); this data set has samples of shape {tuple(shape)}: "
            f"use an image data set (digits, image-folder, torchvision)"
        )
    return shape  # type: ignore[return-value]


def reflect_index(i: Tensor, n: int) -> Tensor:
    """Indices ``i`` (any integers) folded into ``0 .. n - 1`` by reflection about the edge pixels,
    as ``F.pad(mode="reflect")`` pads (``-1 -> 1``, ``n -> n - 2``), repeated periodically."""
    if n == 1:
        return torch.zeros_like(i)
    period = 2 * (n - 1)
    i = i.remainder(period)
    return torch.where(i >= n, period - i, i)


def translate(x: Tensor, dy: Tensor, dx: Tensor, padding: str = "zeros") -> Tensor:
    """``out[b, :, i, j] = x[b, :, i + dy[b], j + dx[b]]`` for images ``x (B, C, H, W)`` and integer
    shifts ``dy, dx (B,)`` (the content moves up by ``dy`` and left by ``dx``, as in DiffAugment's
    code); outside the image ``zeros`` or ``reflect`` (:func:`reflect_index`). Differentiable in ``x``."""
    b, _, h, w = x.shape
    rows = torch.arange(h, device=x.device) + dy.view(b, 1)  # (B, H)
    cols = torch.arange(w, device=x.device) + dx.view(b, 1)  # (B, W)
    if padding == "reflect":
        r, c = reflect_index(rows, h), reflect_index(cols, w)
    else:
        r, c = rows.clamp(0, h - 1), cols.clamp(0, w - 1)
    batch = torch.arange(b, device=x.device).view(b, 1, 1)
    out = x.permute(0, 2, 3, 1)[batch, r.view(b, h, 1), c.view(b, 1, w)].permute(0, 3, 1, 2)  # (B, C, H, W)
    if padding == "reflect":
        return out
    inside = ((rows >= 0) & (rows < h)).view(b, 1, h, 1) & ((cols >= 0) & (cols < w)).view(b, 1, 1, w)
    return torch.where(inside, out, torch.zeros((), dtype=x.dtype, device=x.device))


class AugmentedCritic(TransformedCritic):
    """A critic whose every input ``x (B, C, H, W)`` is augmented first: ``AugmentedCritic(inner,
    augment)``, ``augment`` its ``transform`` (a plain attribute, not a submodule: the
    augmentation's state is a module of the model). ``features`` and ``head`` are the inner
    critic's, with the same augmentation; other members are the inner critic's."""


def has_data_critics(variant: VariantInfo) -> bool:
    """``fits`` of the augmentations: the variant declares critics of samples in data space."""
    return bool(variant.players.critics)


def wrap_critics(
    model: Model, variant: VariantInfo, ctx: BuildContext, name: str, fits: Any, augment: Any
) -> list[str]:
    """Wrap every data-space critic of ``model`` in :class:`AugmentedCritic`; refuse, in one line,
    variants without one and data that is not images."""
    if not variant.players.critics:
        raise GenfwError(
            f"{name} augments what the data-space critics see; variant '{variant.name}' declares none; "
            f"variants it applies to: {variant.fitting(fits)}"
        )
    image_shape(tuple(ctx.data.shape), name)
    names = players(model, variant.players.critics, name, "critics", variant)
    for n in names:
        model.modules[n] = AugmentedCritic(model.modules[n], augment)
    return names


# Callbacks that change the critics' layers or wrap them: the augmentations wrap the result.
WRAP_AFTER = ("packing", "minibatch_discrimination", "minibatch_stddev", "spectral_norm", "instance_noise")


# --- DiffAugment ----------------------------------------------------------------------------------


def _uniform(x: Tensor) -> Tensor:
    """One ``U[0, 1)`` draw per image, ``(B, 1, 1, 1)``, as DiffAugment's code draws them."""
    return torch.rand(x.shape[0], 1, 1, 1, dtype=x.dtype, device=x.device)


def rand_brightness(x: Tensor) -> Tensor:
    """``x + (r - 0.5)``, ``r ~ U[0, 1)`` per image: brightness in ``[-0.5, 0.5)``."""
    return x + (_uniform(x) - 0.5)


def rand_saturation(x: Tensor) -> Tensor:
    """``m + 2 r (x - m)``, ``m`` the mean over channels at each pixel, ``r ~ U[0, 1)`` per image.
    On one channel ``x - m = 0``: the identity (as in the authors' code), the draw still made."""
    mean = x.mean(dim=1, keepdim=True)
    return (x - mean) * (_uniform(x) * 2) + mean


def rand_contrast(x: Tensor) -> Tensor:
    """``m + (r + 0.5)(x - m)``, ``m`` the image's mean over channels and pixels, ``r ~ U[0, 1)``."""
    mean = x.mean(dim=[1, 2, 3], keepdim=True)
    return (x - mean) * (_uniform(x) + 0.5) + mean


def side(n: int, ratio: float) -> int:
    """``int(n * ratio + 0.5)``: DiffAugment's shift and cutout sizes (1 and 4 on 8x8, 4 and 16 on 32x32)."""
    return int(n * ratio + 0.5)


def rand_translation(x: Tensor, ratio: float = 0.125) -> Tensor:
    """Integer shifts uniform in ``-s .. s`` per axis and image, ``s = side(H or W, 1/8)``, zero
    padding (:func:`translate`); rows drawn first, as in the authors' code."""
    b, _, h, w = x.shape
    sy, sx = side(h, ratio), side(w, ratio)
    dy = torch.randint(-sy, sy + 1, size=[b, 1, 1], device=x.device)
    dx = torch.randint(-sx, sx + 1, size=[b, 1, 1], device=x.device)
    return translate(x, dy.view(b), dx.view(b), "zeros")


def cutout_mask(h: int, w: int, size: tuple[int, int], oy: Tensor, ox: Tensor) -> Tensor:
    """``(B, 1, H, W)``: 0 on rows ``oy - size_y // 2 ..`` (``size_y`` of them) and the same for
    columns, clipped to the image, 1 elsewhere; ``oy, ox (B,)`` the offsets drawn."""
    rows = torch.arange(h, device=oy.device).view(1, h) - (oy.view(-1, 1) - size[0] // 2)  # (B, H)
    cols = torch.arange(w, device=ox.device).view(1, w) - (ox.view(-1, 1) - size[1] // 2)  # (B, W)
    in_rows = (rows >= 0) & (rows < size[0])
    in_cols = (cols >= 0) & (cols < size[1])
    return ~(in_rows[:, None, :, None] & in_cols[:, None, None, :])


def rand_cutout(x: Tensor, ratio: float = 0.5) -> Tensor:
    """A ``side(H, 1/2) x side(W, 1/2)`` square set to 0 per image, its centre offset uniform in
    ``0 .. H - 1`` (``0 .. H`` for an even size), clipped to the image, as in the authors' code."""
    b, _, h, w = x.shape
    size = side(h, ratio), side(w, ratio)
    oy = torch.randint(0, h + (1 - size[0] % 2), size=[b, 1, 1], device=x.device)
    ox = torch.randint(0, w + (1 - size[1] % 2), size=[b, 1, 1], device=x.device)
    return x * cutout_mask(h, w, size, oy.view(b), ox.view(b)).to(x.dtype)


POLICIES: dict[str, tuple[Callable[[Tensor], Tensor], ...]] = {
    "color": (rand_brightness, rand_saturation, rand_contrast),
    "translation": (rand_translation,),
    "cutout": (rand_cutout,),
}


def diff_augment(x: Tensor, policy: tuple[str, ...]) -> Tensor:
    """DiffAugment's T: the ops of each policy in ``policy``, in that order."""
    for name in policy:
        for op in POLICIES[name]:
            x = op(x)
    return x


def policy_names(text: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in text.split(",") if p.strip())


def selection_of(choices: Any, example: str) -> Callable[[Any, attrs.Attribute, str], None]:
    """Validator of a comma-separated selection of ``choices`` without repeats (``example``: the
    authors' choice, quoted in the message)."""

    def check(_: Any, attribute: attrs.Attribute, value: str) -> None:
        names = policy_names(value)
        wrong = [n for n in names if n not in choices]
        if not names or wrong or len(set(names)) != len(names):
            raise ValueError(
                f"{attribute.name} must be a comma-separated selection of {', '.join(choices)} without "
                f"repeats ({example}), got {value!r}"
            )

    return check


@attrs.define
class DiffAugmentOptions:
    """Options of DiffAugment."""

    # Comma-separated policies, applied in this order: color (brightness, saturation, contrast),
    # translation (1/8 of the side, zero padding), cutout (half the side).
    policy: str = attrs.field(
        default="color,translation,cutout",
        validator=selection_of(POLICIES, "the authors': color,translation,cutout"),
    )


class DiffAugment(Callback):
    """DiffAugment (Zhao et al. 2020): the same differentiable T on real and fake in both players' phases.

    Every critic input, real and fake, in the critic's and the generator's phase, goes through
    ``T`` (:func:`diff_augment`): the policies ``color`` (brightness ``+U[-0.5, 0.5)``,
    saturation ``x U[0, 2)`` about the channel mean, contrast ``x U[0.5, 1.5)`` about the image
    mean), ``translation`` (up to 1/8 of each side, zero padding) and ``cutout`` (a square of half
    the side), each draw per image, exactly the ops of the authors' ``DiffAugment_pytorch.py``.
    """

    after = WRAP_AFTER
    fits = staticmethod(has_data_critics)

    def on_model_built(self, model: Model, variant: VariantInfo, ctx: BuildContext) -> None:
        self.policy = policy_names(self.options.policy)
        wrap_critics(model, variant, ctx, "diffaugment", self.fits, self.augment)

    def augment(self, x: Tensor) -> Tensor:
        return diff_augment(x, self.policy)


# --- ADA ------------------------------------------------------------------------------------------

# The strengths of stylegan2-ada-pytorch's AugmentPipe (training/augment.py), pipeline 'bgc'.
XINT_MAX = 0.125  # integer translation: up to 1/8 of the side
SCALE_STD = 0.2  # log2 std of isotropic scaling
ROTATE_MAX = 1.0  # arbitrary rotation: up to the full circle
ANISO_STD = 0.2  # log2 std of anisotropic scaling
XFRAC_STD = 0.125  # fractional translation: std 1/8 of the side
BRIGHTNESS_STD = 0.2
CONTRAST_STD = 0.5  # log2
HUE_MAX = 1.0  # full circle
SATURATION_STD = 1.0  # log2
GROUPS = ("blit", "geom", "color")


def _mat(rows: list[list[Any]], b: int, device: torch.device) -> Tensor:
    """``(B, n, n)`` from rows of scalars and ``(B,)`` tensors."""
    cols = [
        [v if isinstance(v, Tensor) else torch.full((b,), float(v), device=device) for v in row]
        for row in rows
    ]
    return torch.stack([torch.stack(r, dim=-1) for r in cols], dim=-2)


def translate2d(tx: Tensor, ty: Tensor) -> Tensor:
    return _mat([[1, 0, tx], [0, 1, ty], [0, 0, 1]], tx.shape[0], tx.device)


def scale2d(sx: Tensor, sy: Tensor) -> Tensor:
    return _mat([[sx, 0, 0], [0, sy, 0], [0, 0, 1]], sx.shape[0], sx.device)


def rotate2d(theta: Tensor) -> Tensor:
    c, s = torch.cos(theta), torch.sin(theta)
    return _mat([[c, -s, 0], [s, c, 0], [0, 0, 1]], theta.shape[0], theta.device)


def rot90_2d(k: Tensor) -> Tensor:
    """``rotate2d(pi / 2 * k)`` for integers ``k (B,)`` with exact entries (0, 1, -1), so a blit
    samples whole pixels exactly; as the authors' ``rotate2d_inv(-pi / 2 * k)``."""
    k = k.long().remainder(4)
    c = torch.tensor([1.0, 0.0, -1.0, 0.0], device=k.device)[k]
    s = torch.tensor([0.0, 1.0, 0.0, -1.0], device=k.device)[k]
    return _mat([[c, -s, 0], [s, c, 0], [0, 0, 1]], k.shape[0], k.device)


def _gate(p: Tensor, value: Tensor, identity: float, shape: tuple[int, ...]) -> Tensor:
    """``value`` where a fresh ``U[0, 1)`` draw per image is below ``p``, else ``identity``."""
    return torch.where(torch.rand(shape, device=value.device) < p, value, torch.full_like(value, identity))


def geometric_matrix(
    b: int, h: int, w: int, p: Tensor, groups: tuple[str, ...], device: torch.device
) -> Tensor:
    """``G_inv (B, 3, 3)``: output pixel -> input pixel, in pixel units about the image centre (x
    right, y down), drawn as stylegan2-ada-pytorch's AugmentPipe draws it, op by op, each applied
    to an image with probability ``p``. ``blit``: x-flip, rotation by a multiple of 90 degrees,
    integer translation up to 1/8 of the side; ``geom``: isotropic scaling, rotation (before and
    after anisotropic scaling, each with ``1 - sqrt(1 - p)``), anisotropic scaling, fractional
    translation."""
    g = torch.eye(3, device=device).expand(b, 3, 3)
    one = torch.ones(b, device=device)
    if "blit" in groups:
        i = _gate(p, torch.floor(torch.rand(b, device=device) * 2), 0.0, (b,))
        g = g @ scale2d(1 - 2 * i, one)  # x-flip: scale2d_inv(1 - 2i, 1)
        k = _gate(p, torch.floor(torch.rand(b, device=device) * 4), 0.0, (b,))
        g = g @ rot90_2d(k)
        t = (torch.rand(b, 2, device=device) * 2 - 1) * XINT_MAX
        t = torch.where(torch.rand(b, 1, device=device) < p, t, torch.zeros_like(t))
        g = g @ translate2d(-torch.round(t[:, 0] * w), -torch.round(t[:, 1] * h))
    if "geom" in groups:
        s = _gate(p, torch.exp2(torch.randn(b, device=device) * SCALE_STD), 1.0, (b,))
        g = g @ scale2d(1 / s, 1 / s)
        p_rot = 1 - torch.sqrt((1 - p).clamp(0, 1))  # P(pre or post rotation) = p
        theta = _gate(p_rot, (torch.rand(b, device=device) * 2 - 1) * math.pi * ROTATE_MAX, 0.0, (b,))
        g = g @ rotate2d(theta)  # rotate2d_inv(-theta)
        s = _gate(p, torch.exp2(torch.randn(b, device=device) * ANISO_STD), 1.0, (b,))
        g = g @ scale2d(1 / s, s)
        theta = _gate(p_rot, (torch.rand(b, device=device) * 2 - 1) * math.pi * ROTATE_MAX, 0.0, (b,))
        g = g @ rotate2d(theta)
        t = torch.randn(b, 2, device=device) * XFRAC_STD
        t = torch.where(torch.rand(b, 1, device=device) < p, t, torch.zeros_like(t))
        g = g @ translate2d(-t[:, 0] * w, -t[:, 1] * h)
    return g


def sample_bilinear(x: Tensor, sy: Tensor, sx: Tensor) -> Tensor:
    """``x (B, C, H, W)`` read at pixel coordinates ``sy, sx (B, H', W')`` (row, column), bilinear,
    reflected outside the image (:func:`reflect_index`). At whole-pixel coordinates the weights are
    exactly 0 and 1, so a blit copies pixels exactly. Differentiable in ``x``."""
    b, c, h, w = x.shape
    y0, x0 = torch.floor(sy), torch.floor(sx)
    wy, wx = (sy - y0).unsqueeze(1).to(x.dtype), (sx - x0).unsqueeze(1).to(x.dtype)  # (B, 1, H', W')
    y0, x0 = y0.long(), x0.long()
    flat = x.reshape(b, c, h * w)
    n = sy.shape[1] * sy.shape[2]

    def at(yi: Tensor, xi: Tensor) -> Tensor:
        idx = (reflect_index(yi, h) * w + reflect_index(xi, w)).reshape(b, 1, n).expand(b, c, n)
        return flat.gather(2, idx).reshape(b, c, *sy.shape[1:])

    top = at(y0, x0) * (1 - wx) + at(y0, x0 + 1) * wx
    bottom = at(y0 + 1, x0) * (1 - wx) + at(y0 + 1, x0 + 1) * wx
    return top * (1 - wy) + bottom * wy


def apply_geometric(x: Tensor, g: Tensor) -> Tensor:
    """The images ``x (B, C, H, W)`` transformed by ``G_inv (B, 3, 3)`` (output pixel -> input pixel
    about the image centre), same size, bilinear with reflection (:func:`sample_bilinear`)."""
    _, _, h, w = x.shape
    cy, cx = (h - 1) / 2, (w - 1) / 2
    yc = (torch.arange(h, device=x.device, dtype=torch.float32) - cy).view(1, h, 1)
    xc = (torch.arange(w, device=x.device, dtype=torch.float32) - cx).view(1, 1, w)
    g = g.float().unsqueeze(-1).unsqueeze(-1)  # (B, 3, 3, 1, 1)
    sx = g[:, 0, 0] * xc + g[:, 0, 1] * yc + g[:, 0, 2] + cx  # (B, H, W)
    sy = g[:, 1, 0] * xc + g[:, 1, 1] * yc + g[:, 1, 2] + cy
    return sample_bilinear(x, sy, sx)


def luma_axis(c: int, device: torch.device) -> Tensor:
    """``v (C + 1,)``: the unit vector of equal channels, homogeneous (``[1, 1, 1, 0] / sqrt(3)``
    on RGB, the authors' luma axis)."""
    v = torch.zeros(c + 1, device=device)
    v[:c] = 1 / math.sqrt(c)
    return v


def brightness_matrix(b: Tensor, c: int) -> Tensor:
    """``(B, C+1, C+1)``: adds ``b (B,)`` to every channel."""
    m = torch.eye(c + 1, device=b.device).repeat(b.shape[0], 1, 1)
    m[:, :c, c] = b.view(-1, 1)
    return m


def contrast_matrix(s: Tensor, c: int) -> Tensor:
    """``(B, C+1, C+1)``: multiplies every channel by ``s (B,)``."""
    diag = torch.cat([s.view(-1, 1).expand(-1, c), torch.ones_like(s).view(-1, 1)], dim=1)
    return torch.diag_embed(diag)


def lumaflip_matrix(i: Tensor, c: int) -> Tensor:
    """``I - 2 v v^T i``: with ``i = 1`` the Householder reflection that negates the channel mean
    and keeps each channel's deviation from it; ``i (B,)`` in {0, 1}."""
    v = luma_axis(c, i.device)
    return torch.eye(c + 1, device=i.device) - 2 * torch.outer(v, v) * i.view(-1, 1, 1)


def hue_matrix(theta: Tensor) -> Tensor:
    """``(B, 4, 4)``: RGB rotated by ``theta (B,)`` about the luma axis (the authors' ``rotate3d``)."""
    v = luma_axis(3, theta.device)
    vx, vy, vz = (float(v[0]),) * 3
    s, co = torch.sin(theta), torch.cos(theta)
    cc = 1 - co
    rows = [
        [vx * vx * cc + co, vx * vy * cc - vz * s, vx * vz * cc + vy * s, 0],
        [vy * vx * cc + vz * s, vy * vy * cc + co, vy * vz * cc - vx * s, 0],
        [vz * vx * cc - vy * s, vz * vy * cc + vx * s, vz * vz * cc + co, 0],
        [0, 0, 0, 1],
    ]
    return _mat(rows, theta.shape[0], theta.device)


def saturation_matrix(s: Tensor, c: int) -> Tensor:
    """``v v^T + (I - v v^T) s``: each channel's deviation from the channel mean times ``s (B,)``."""
    v = luma_axis(c, s.device)
    vv = torch.outer(v, v)
    return vv + (torch.eye(c + 1, device=s.device) - vv) * s.view(-1, 1, 1)


def color_matrix(b: int, c: int, p: Tensor, device: torch.device) -> Tensor:
    """``C (B, C+1, C+1)``: colour in -> colour out, drawn as the authors' AugmentPipe draws it,
    each op with probability ``p``: brightness ``N(0, 0.2)``, contrast ``2^N(0, 0.5)``, luma flip,
    hue rotation ``U[-pi, pi]`` (RGB only: it needs 3 channels) and saturation ``2^N(0, 1)``
    (2 channels or more: on one it is the identity). On RGB and grey images these are the authors'
    matrices (their grey path averages the RGB rows, which is this with one channel)."""
    m = torch.eye(c + 1, device=device).expand(b, c + 1, c + 1)
    bright = _gate(p, torch.randn(b, device=device) * BRIGHTNESS_STD, 0.0, (b,))
    m = brightness_matrix(bright, c) @ m
    con = _gate(p, torch.exp2(torch.randn(b, device=device) * CONTRAST_STD), 1.0, (b,))
    m = contrast_matrix(con, c) @ m
    i = _gate(p, torch.floor(torch.rand(b, 1, 1, device=device) * 2), 0.0, (b, 1, 1))
    m = lumaflip_matrix(i.view(b), c) @ m
    if c == 3:
        theta = _gate(p, (torch.rand(b, device=device) * 2 - 1) * math.pi * HUE_MAX, 0.0, (b,))
        m = hue_matrix(theta) @ m
    if c > 1:
        s = _gate(p, torch.exp2(torch.randn(b, 1, 1, device=device) * SATURATION_STD), 1.0, (b, 1, 1))
        m = saturation_matrix(s.view(b), c) @ m
    return m


def apply_color(x: Tensor, m: Tensor) -> Tensor:
    """``x (B, C, H, W)`` through the affine colour maps ``m (B, C+1, C+1)``."""
    b, c, h, w = x.shape
    m = m.to(x.dtype)
    out = m[:, :c, :c] @ x.reshape(b, c, h * w) + m[:, :c, c:]
    return out.reshape(b, c, h, w)


def ada_augment(x: Tensor, p: Tensor, groups: tuple[str, ...]) -> Tensor:
    """ADA's augmentation of ``x (B, C, H, W)`` with probability ``p`` (a 0-d tensor) per image and
    op: the geometric groups (``blit``, ``geom``) in one resampling, then ``color``."""
    b, c, h, w = x.shape
    geometric = "blit" in groups or "geom" in groups
    # The matrices in float32 under mixed precision too: whole-pixel blits stay exact.
    with torch.autocast(x.device.type, enabled=False):
        g = geometric_matrix(b, h, w, p, groups, x.device) if geometric else None
        m = color_matrix(b, c, p, x.device) if "color" in groups else None
    if g is not None:
        x = apply_geometric(x, g)
    if m is not None:
        x = apply_color(x, m)
    return x


def pack_size(critic: nn.Module) -> int:
    """``m`` where the critic, through its wrappers (``inner``), is a packed one; else 1."""
    while critic is not None:
        if isinstance(critic, PackedCritic):
            return critic.m
        critic = getattr(critic, "inner", None)
    return 1


class AdaState(nn.Module):
    """ADA's state, checkpointed with the model: ``p`` (the augmentation probability), and since
    the last adjustment the sum of ``sign(D(real))`` (``signs``), the number of real scores
    (``scores``) and of real images (``images``); ``rt`` the last ``r_t``."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.register_buffer("p", torch.tensor(float(p)))
        self.register_buffer("signs", torch.zeros(()))
        self.register_buffer("scores", torch.zeros(()))
        self.register_buffer("images", torch.zeros(()))
        self.register_buffer("rt", torch.zeros(()))

    @torch.no_grad()
    def observe(self, real_scores: Tensor, images_per_score: int) -> None:
        """Accumulate one critic step's real scores ``(B,)``."""
        s = real_scores.detach().float()
        self.signs.add_(torch.sign(s).sum())
        self.scores.add_(s.numel())
        self.images.add_(s.numel() * images_per_score)

    @torch.no_grad()
    def adjust(self, target: float, kimg: float) -> None:
        """``r_t = signs / scores``; ``p <- clip(p + sign(r_t - target) * images / (kimg * 1000), 0, 1)``
        (``images``: real images the critic saw since the last adjustment, ``batch * interval``
        with one critic step per training step, as the authors' ``batch_size * ada_interval``);
        then the counts restart. Nothing changes when no real score was seen."""
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            stats = torch.stack([self.signs, self.scores, self.images])
            torch.distributed.all_reduce(stats)  # every process gets the same p
            self.signs.copy_(stats[0]), self.scores.copy_(stats[1]), self.images.copy_(stats[2])
        seen = self.scores > 0
        rt = self.signs / self.scores.clamp_min(1)
        step = torch.sign(rt - target) * self.images / (kimg * 1000)
        self.p.copy_(torch.where(seen, (self.p + step).clamp(0, 1), self.p))
        self.rt.copy_(torch.where(seen, rt, self.rt))
        for buf in (self.signs, self.scores, self.images):
            buf.zero_()


@attrs.define
class AdaOptions:
    """Options of adaptive discriminator augmentation (defaults: the authors' code)."""

    # r_t target: p rises while E[sign D(real)] is above it (0.6).
    target: float = attrs.field(default=0.6, validator=check.in_interval(0, 1))
    # Training steps between adjustments of p (the authors' ada_interval, 4 minibatches).
    interval: int = attrs.field(default=4, validator=check.at_least(1))
    # Thousands of real images over which p can go from 0 to 1 (the authors' ada_kimg, 500).
    kimg: float = attrs.field(default=500.0, validator=check.positive)
    # p at the start (0, the authors'); with adjust false p stays at this value.
    p: float = attrs.field(default=0.0, validator=check.in_interval(0, 1))
    adjust: bool = True
    # Comma-separated groups of ops: blit (x-flip, rot90, integer translation), geom (scaling,
    # rotation, anisotropic scaling, fractional translation), color (brightness, contrast, luma
    # flip, hue, saturation): the authors' 'bgc'.
    groups: str = attrs.field(
        default="blit,geom,color", validator=selection_of(GROUPS, "the authors' bgc: blit,geom,color")
    )


class Ada(Callback):
    """Adaptive discriminator augmentation (Karras et al. 2020): p tuned from r_t = E[sign D(real)].

    Every critic input, real and fake, in both players' phases, goes through :func:`ada_augment`:
    each op of the chosen groups applied to an image with probability ``p``. The critic phase's
    real scores are accumulated; every ``interval`` training steps ``r_t = E[sign(D(real))]``
    over them and ``p`` moves by ``sign(r_t - target) * images / (kimg * 1000)``, clipped to
    ``[0, 1]``. ``p`` and the last ``r_t`` are logged as ``critic/ada_p`` and ``critic/ada_rt``
    and live in the module ``ada`` (checkpointed). Variants whose critic phase gives real scores.
    """

    after = WRAP_AFTER

    @staticmethod
    def fits(variant: VariantInfo) -> bool:
        return has_data_critics(variant) and any(
            declares(variant, phase, ("real_scores",)) for phase in variant.phases
        )

    def on_model_built(self, model: Model, variant: VariantInfo, ctx: BuildContext) -> None:
        if variant.players.critics and not self.fits(variant):
            raise GenfwError(
                f"ada tunes p from the critic's real scores (r_t = E[sign D(real)]); variant "
                f"'{variant.name}' gives none (no phase provides real_scores); variants it applies to: "
                f"{variant.fitting(self.fits)}"
            )
        self.groups = policy_names(self.options.groups)
        names = wrap_critics(model, variant, ctx, "ada", self.fits, self.augment)
        self.state = AdaState(self.options.p)
        add_module(model, "ada", self.state)
        scored = {p.name for p in model.phases if "real_scores" in p.provides}
        self.phases = set(phases_training(model, names)) & scored
        # Under packing one score stands for a pack of m images.
        self.images_per_score = max(pack_size(model.modules[n]) for n in names)

    def augment(self, x: Tensor) -> Tensor:
        return ada_augment(x, self.state.p, self.groups)

    def on_phase_output(self, phase: str, output: PhaseOutput, state: LoopState) -> None:
        if phase not in self.phases:
            return
        self.state.observe(output.context["real_scores"], self.images_per_score)
        # Copies: the buffers change in place before the loop reads its logs.
        output.logs["ada_p"] = self.state.p.clone()
        output.logs["ada_rt"] = self.state.rt.clone()

    def on_step_end(self, state: LoopState) -> None:
        if self.options.adjust and state.step % self.options.interval == 0:
            self.state.adjust(self.options.target, self.options.kimg)


# --- bCR ------------------------------------------------------------------------------------------


def flip_translate(x: Tensor, flip: Tensor, dy: Tensor, dx: Tensor) -> Tensor:
    """bCR's T for given draws: images ``x (B, C, H, W)`` flipped left-right where ``flip (B,)``,
    then :func:`translate` by ``dy, dx (B,)`` with reflection."""
    x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
    return translate(x, dy, dx, "reflect")


def consistency_augment(x: Tensor) -> Tensor:
    """bCR's T (the CR augmentation of Zhang et al. 2020): a left-right flip with probability 1/2,
    then a shift uniform in ``-int(H / 8) .. int(H / 8)`` rows and the same for columns, with
    reflection (as PyTorch-StudioGAN's CR/bCR augmentation)."""
    b, _, h, w = x.shape
    flip = torch.rand(b, device=x.device) < 0.5
    sy, sx = int(h / 8), int(w / 8)
    dy = torch.randint(-sy, sy + 1, (b,), device=x.device)
    dx = torch.randint(-sx, sx + 1, (b,), device=x.device)
    return flip_translate(x, flip, dy, dx)


@attrs.define
class BCROptions:
    """Options of balanced consistency regularisation (defaults: the paper's)."""

    lambda_real: float = attrs.field(default=10.0, validator=check.non_negative)
    lambda_fake: float = attrs.field(default=10.0, validator=check.non_negative)

    def __attrs_post_init__(self) -> None:
        if self.lambda_real == 0 and self.lambda_fake == 0:
            raise ValueError("lambda_real and lambda_fake are both 0: set at least one above 0")


class BalancedConsistency:
    """Balanced consistency regularisation (bCR, Zhao et al. 2021): ||D(x) - D(T(x))||^2 on real and fake.

    The critic phase adds ``lambda_real * mean_i (D(x_i) - D(T(x_i)))^2 + lambda_fake * mean_i
    (D(G(z_i)) - D(T(G(z_i))))^2``, ``D`` the critic's raw score, ``D(x)`` and ``D(G(z))`` the scores
    the adversarial loss used (the phase's ``real_scores``/``fake_scores``, as in the paper's
    algorithm), ``T`` a flip and a translation (:func:`consistency_augment`); gradients flow
    through both terms of each difference. The examples' ``genfw-cr`` is a third-party
    consistency regulariser (CR by default); this is the built-in balanced one.
    """

    phases: tuple[str, ...] = ("critic",)
    needs: tuple[str, ...] = ("real", "fake", "critic", "labels", "real_scores", "fake_scores")

    def __init__(self, options: BCROptions) -> None:
        self.lambda_real, self.lambda_fake = options.lambda_real, options.lambda_fake

    @staticmethod
    def fits(variant: VariantInfo) -> bool:
        return has_data_critics(variant) and declares(variant, "critic", BalancedConsistency.needs)

    def setup(self, model: Model, ctx: BuildContext) -> None:
        """Refuse data that is not images before anything trains."""
        image_shape(tuple(ctx.data.shape), "bcr")
        self.registry = ctx.registry
        for phase in model.phases:
            for name in phase.modules if phase.name in self.phases else ():
                shape = getattr(model.modules[name], "in_shape", None)  # the built-in networks'
                if shape is not None and len(shape) != 3:
                    raise GenfwError(self.refusal(tuple(shape)))

    def refusal(self, shape: tuple[int, ...]) -> str:
        return (
            f"bcr augments the images a data-space critic scores; this critic phase scores samples of "
            f"shape {shape} (codes of a latent critic); variants it applies to: "
            f"{variants_where(self.fits, getattr(self, 'registry', None))}"
        )

    def penalty(self, ctx: dict[str, Any]) -> Tensor:
        critic, labels = ctx["critic"], ctx["labels"]
        if ctx["real"].dim() != 4:  # a latent critic of a network setup could not see
            raise GenfwError(self.refusal(tuple(ctx["real"].shape[1:])))
        total = ctx["real_scores"].new_zeros((), dtype=torch.float32)
        for weight, x, scores in (
            (self.lambda_real, ctx["real"], ctx["real_scores"]),
            (self.lambda_fake, ctx["fake"], ctx["fake_scores"]),
        ):
            if weight:
                augmented = critic(consistency_augment(x.detach()), labels)  # (B,)
                total = total + weight * (scores.float() - augmented.float()).square().mean()
        return total


# --- registration ---------------------------------------------------------------------------------


@genfw.hookimpl
def genfw_register_regularisers(register: Register) -> None:
    register(
        "bcr",
        BalancedConsistency,
        options=BCROptions,
        help="Balanced consistency regularisation (Zhao et al. 2021): ||D(x) - D(T(x))||^2 on real and fake.",
    )


@genfw.hookimpl
def genfw_register_callbacks(register: Register) -> None:
    register(
        "diffaugment",
        DiffAugment,
        options=DiffAugmentOptions,
        help="DiffAugment (Zhao et al. 2020): the same differentiable T on real and fake in both phases.",
    )
    register(
        "ada",
        Ada,
        options=AdaOptions,
        help="Adaptive discriminator augmentation (Karras et al. 2020): p tuned from E[sign D(real)].",
    )
