"""Sample grids as images: tiles for image data, a scatter plot for 2-D points."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont


def image_grid(x: torch.Tensor, nrow: int | None = None, pad: int = 2, min_tile: int = 32) -> np.ndarray:
    """Tile images ``(B, C, H, W)`` in [-1, 1] into one ``(H', W', 3)`` uint8 array.

    Small images are enlarged (nearest neighbour) to at least ``min_tile`` pixels a side.
    """
    x = x.detach().float().cpu().clamp(-1, 1)
    if x.dim() != 4:
        raise ValueError(f"image_grid expects (B, C, H, W), got {tuple(x.shape)}")
    b, c, h, w = x.shape
    if c == 1:
        x = x.expand(b, 3, h, w)
    elif c != 3:
        x = x[:, :3]
    scale = max(1, math.ceil(min_tile / max(h, w)))
    if scale > 1:
        x = x.repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3)
        h, w = h * scale, w * scale
    nrow = nrow or math.ceil(math.sqrt(b))
    ncol = math.ceil(b / nrow)
    grid = torch.ones(3, ncol * (h + pad) + pad, nrow * (w + pad) + pad)
    for i in range(b):
        r, col = divmod(i, nrow)
        top, left = pad + r * (h + pad), pad + col * (w + pad)
        grid[:, top : top + h, left : left + w] = x[i]
    return ((grid.permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.uint8)


def scatter(
    fake: torch.Tensor,
    real: torch.Tensor | None = None,
    size: int = 512,
    extent: float | None = None,
) -> np.ndarray:
    """Plot 2-D points as a ``(size, size, 3)`` uint8 image: real in grey, generated in red."""
    pts = [p.detach().float().cpu() for p in (real, fake) if p is not None]
    if extent is None:
        extent = 1.1 * max(float(p.abs().max()) for p in pts) if pts else 1.0
        extent = max(extent, 1e-3)
    img = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(img)
    mid = size // 2
    draw.line([(0, mid), (size, mid)], fill=(230, 230, 230))
    draw.line([(mid, 0), (mid, size)], fill=(230, 230, 230))

    def plot(p: torch.Tensor, color: tuple[int, int, int], r: int) -> None:
        uv = ((p[:, :2] / extent + 1) * 0.5 * (size - 1)).numpy()
        for u, v in uv:
            v = size - 1 - v  # y grows upwards
            draw.ellipse([u - r, v - r, u + r, v + r], fill=color)

    if real is not None:
        plot(real.detach().float().cpu(), (170, 170, 170), 2)
    plot(fake.detach().float().cpu(), (214, 39, 40), 1)
    return np.asarray(img)


def class_grid(x: torch.Tensor, labels: torch.Tensor, pad: int = 2, min_tile: int = 32) -> np.ndarray:
    """Tile images ``(B, C, H, W)`` with one row per run of equal ``labels (B,)``, each row
    labelled with its class on the left (e.g. ``class_rows(10, 8)``: ten rows of eight)."""
    labels = labels.detach().cpu()
    starts = [0] + [i for i in range(1, len(labels)) if labels[i] != labels[i - 1]]
    cols = max(b - a for a, b in itertools.pairwise([*starts, len(labels)]))
    rows = []
    for a, b in itertools.pairwise([*starts, len(labels)]):
        row = torch.ones(cols, *x.shape[1:])  # white where a row is short
        row[: b - a] = x[a:b].detach().float().cpu()
        rows.append(row)
    grid = image_grid(torch.cat(rows), nrow=cols, pad=pad, min_tile=min_tile)
    tile = (grid.shape[0] - pad) // len(rows)  # tile height plus padding
    img = Image.new("RGB", (grid.shape[1] + 28, grid.shape[0]), "white")
    img.paste(Image.fromarray(grid), (28, 0))
    draw = ImageDraw.Draw(img)
    for r, a in enumerate(starts):
        draw.text((4, pad + r * tile + tile // 2 - 6), str(int(labels[a])), fill=(0, 0, 0))
    return np.asarray(img)


def pairs_grid(originals: torch.Tensor, reconstructions: torch.Tensor, pairs_per_row: int = 8) -> np.ndarray:
    """Originals beside their reconstructions: each row holds ``pairs_per_row`` pairs
    ``original, reconstruction`` of images ``(B, C, H, W)`` in [-1, 1]."""
    if originals.shape != reconstructions.shape:
        raise ValueError(
            f"pairs_grid: originals {tuple(originals.shape)} and reconstructions "
            f"{tuple(reconstructions.shape)} differ in shape"
        )
    both = torch.stack([originals.detach().float().cpu(), reconstructions.detach().float().cpu()], dim=1)
    return image_grid(both.flatten(0, 1), nrow=2 * min(pairs_per_row, originals.shape[0]))


# Ten distinguishable colours (matplotlib's tab10, navy in place of its grey, which is the colour
# of real data and prior samples here), for labels 0..9 and the series of a line plot; cycled.
PALETTE = [
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (0, 0, 128), (188, 189, 34), (23, 190, 207),
]  # fmt: skip


def latent_scatter(
    codes: torch.Tensor, labels: torch.Tensor | None, prior: torch.Tensor, size: int = 512
) -> np.ndarray:
    """2-D codes coloured by label (:data:`PALETTE`, a legend at the top left) over prior samples
    in light grey, on the axes of :func:`scatter`; unlabelled codes (``-1``) are black."""
    codes, prior = codes.detach().float().cpu(), prior.detach().float().cpu()
    if codes.dim() != 2 or codes.shape[1] != 2 or prior.shape[1:] != (2,):
        raise ValueError(f"latent_scatter needs 2-D codes and prior samples, got {tuple(codes.shape)}")
    extent = max(1.1 * max(float(codes.abs().max()), float(prior.abs().max())), 1e-3)
    img = Image.fromarray(scatter(torch.empty(0, 2), prior, size=size, extent=extent))
    draw = ImageDraw.Draw(img)
    labels = torch.full((codes.shape[0],), -1) if labels is None else labels.detach().cpu().long()
    uv = ((codes / extent + 1) * 0.5 * (size - 1)).numpy()
    for (u, v), y in zip(uv, labels.tolist(), strict=True):
        v = size - 1 - v
        color = PALETTE[y % len(PALETTE)] if y >= 0 else (0, 0, 0)
        draw.ellipse([u - 2, v - 2, u + 2, v + 2], fill=color)
    for i, y in enumerate(sorted({int(t) for t in labels.tolist() if t >= 0})):
        draw.rectangle([6, 6 + 14 * i, 16, 16 + 14 * i], fill=PALETTE[y % len(PALETTE)])
        draw.text((20, 5 + 14 * i), str(y), fill=(0, 0, 0))
    return np.asarray(img)


def traversal_grid(x: torch.Tensor, dims: list[int]) -> np.ndarray:
    """Latent traversals: images ``(len(dims) * V, C, H, W)``, row ``i`` the ``V`` decodings of a
    code whose coordinate ``dims[i]`` sweeps a range; each row is labelled with its dimension."""
    labels = torch.tensor(dims).repeat_interleave(x.shape[0] // len(dims))
    return class_grid(x, labels)


def render(
    samples: torch.Tensor, kind: str, real: torch.Tensor | None = None, labels: torch.Tensor | None = None
) -> np.ndarray:
    """An ``(H, W, 3)`` uint8 picture of samples: a grid for images (with one labelled row per
    class where ``labels`` are given, see :func:`class_grid`), a scatter plot for points."""
    if kind == "points":
        return scatter(samples, real)
    if labels is not None:
        return class_grid(samples, labels)
    return image_grid(samples)


def save_png(array: np.ndarray, path: Path | str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _tick(value: float) -> str:
    return f"{value:.3g}"


def line_plot(
    series: dict[str, tuple[list[float], list[float]]],
    title: str = "",
    size: tuple[int, int] = (800, 500),
) -> np.ndarray:
    """Plot ``{label: (xs, ys)}`` as lines on shared axes, with a legend: ``(H, W, 3)`` uint8.

    Non-finite points are skipped (a line breaks there). An empty series draws no line.
    """
    width, height = size
    left, right, top, bottom = 70, 20, 30, 40
    legend_h = 16 * len(series)
    img = Image.new("RGB", (width, height + legend_h), "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    pts = [(x, y) for xs, ys in series.values() for x, y in zip(xs, ys, strict=True) if math.isfinite(y)]
    x0, x1 = (min(p[0] for p in pts), max(p[0] for p in pts)) if pts else (0.0, 1.0)
    y0, y1 = (min(p[1] for p in pts), max(p[1] for p in pts)) if pts else (0.0, 1.0)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    if y1 == y0:
        y0, y1 = y0 - 1, y1 + 1
    pad = 0.05 * (y1 - y0)
    y0, y1 = y0 - pad, y1 + pad
    pw, ph = width - left - right, height - top - bottom

    def to_px(x: float, y: float) -> tuple[float, float]:
        return left + (x - x0) / (x1 - x0) * pw, top + (1 - (y - y0) / (y1 - y0)) * ph

    # Axes, grid and ticks.
    for i in range(5):
        fy = y0 + (y1 - y0) * i / 4
        _, py = to_px(x0, fy)
        draw.line([(left, py), (left + pw, py)], fill=(235, 235, 235))
        draw.text((4, py - 6), _tick(fy), fill=(80, 80, 80), font=font)
        fx = x0 + (x1 - x0) * i / 4
        px, _ = to_px(fx, y0)
        draw.line([(px, top), (px, top + ph)], fill=(235, 235, 235))
        draw.text((px - 10, top + ph + 6), _tick(fx), fill=(80, 80, 80), font=font)
    draw.rectangle([left, top, left + pw, top + ph], outline=(120, 120, 120))
    if title:
        draw.text((left, 8), title, fill=(0, 0, 0), font=font)
    draw.text((left + pw - 30, top + ph + 22), "step", fill=(80, 80, 80), font=font)

    for i, (label, (xs, ys)) in enumerate(series.items()):
        color = PALETTE[i % len(PALETTE)]
        segment: list[tuple[float, float]] = []
        for x, y in zip(xs, ys, strict=True):
            if math.isfinite(y):
                segment.append(to_px(x, y))
                continue
            if len(segment) > 1:
                draw.line(segment, fill=color, width=2)
            segment = []
        if len(segment) > 1:
            draw.line(segment, fill=color, width=2)
        elif len(segment) == 1:
            (px, py) = segment[0]
            draw.ellipse([px - 2, py - 2, px + 2, py + 2], fill=color)
        ly = height + 16 * i
        draw.line([(left, ly + 6), (left + 24, ly + 6)], fill=color, width=3)
        draw.text((left + 32, ly), label, fill=(0, 0, 0), font=font)
    return np.asarray(img)
