"""Sample grids as images: tiles for image data, a scatter plot for 2-D points."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw


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


def render(samples: torch.Tensor, kind: str, real: torch.Tensor | None = None) -> np.ndarray:
    """An ``(H, W, 3)`` uint8 picture of samples: a grid for images, a scatter plot for points."""
    if kind == "points":
        return scatter(samples, real)
    return image_grid(samples)


def save_png(array: np.ndarray, path: Path | str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
