"""Metrics without a run: scoring two sets of images (``genfw eval --real A --fake B``).

Image sets are read from a folder of image files (searched recursively; png, jpg, jpeg, bmp, webp)
or from one tensor file: ``.npy``, ``.npz`` (key ``samples``, or its only array) or
``.safetensors`` (key ``samples``, as ``genfw sample --out x.safetensors`` writes, or its only
tensor). Tensors are ``(N, C, H, W)`` or ``(N, H, W, C)`` with 1 or 3 channels; ``uint8`` values are
0..255, floating values must already be in ``[-1, 1]``, genfw's range for images.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genfw.errors import GenfwError, choices
from genfw.model import EvalContext, GenDataset

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
TENSOR_EXTENSIONS = (".npy", ".npz", ".safetensors")


def _image_files(root: Path) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found += [
            Path(dirpath, n)
            for n in filenames
            if not n.startswith(".") and n.lower().endswith(IMAGE_EXTENSIONS)
        ]
    return sorted(found)


def _read_folder(root: Path, limit: int | None = None) -> torch.Tensor:
    from PIL import Image

    files = _image_files(root)
    if not files:
        raise GenfwError(
            f"{root} holds no images ({', '.join(e[1:] for e in IMAGE_EXTENSIONS)}), searched recursively"
        )
    files = files[:limit]  # the first ones in sorted order: no more are decoded than are scored
    pictures = []
    for f in files:
        with Image.open(f) as im:
            pictures.append((f, im.size, im.mode in ("L", "I;16", "I", "1"), im.copy()))
    sizes = {size for _, size, _, _ in pictures}
    if len(sizes) > 1:
        (w1, h1), (w2, h2) = sorted(sizes)[0], sorted(sizes)[-1]
        raise GenfwError(
            f"images in {root} have different sizes ({w1}x{h1} and {w2}x{h2}); resize them to one size first"
        )
    grey = all(g for _, _, g, _ in pictures)
    arrays = [np.asarray(im.convert("L" if grey else "RGB"), dtype=np.uint8) for _, _, _, im in pictures]
    x = torch.from_numpy(np.stack(arrays))
    x = x[:, None] if grey else x.permute(0, 3, 1, 2)
    return x.float() / 127.5 - 1.0


def _read_tensor(path: Path, limit: int | None = None) -> torch.Tensor:
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            arr = np.load(path, allow_pickle=False, mmap_mode="r")  # only the rows used are read
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                keys = list(z.keys())
                key = "samples" if "samples" in keys else (keys[0] if len(keys) == 1 else None)
                if key is None:
                    raise GenfwError(
                        f"{path} holds arrays {choices(keys)}; name the images 'samples' (statistics files "
                        f"such as pytorch-fid's mu/sigma are not image sets)"
                    )
                arr = z[key]
        else:
            import safetensors.torch

            tensors = safetensors.torch.load_file(str(path))
            key = "samples" if "samples" in tensors else (next(iter(tensors)) if len(tensors) == 1 else None)
            if key is None:
                raise GenfwError(f"{path} holds tensors {choices(tensors)}; name the images 'samples'")
            arr = tensors[key].numpy()
    except GenfwError:
        raise
    except Exception as exc:
        raise GenfwError(f"{path} is unreadable ({type(exc).__name__}: {exc})") from None
    x = torch.from_numpy(np.array(arr[:limit]))  # a writable copy of the rows used (not the memory map)
    if x.dim() != 4:
        raise GenfwError(
            f"{path} holds a tensor of shape {tuple(x.shape)}; expected images (N, C, H, W) or (N, H, W, C)"
        )
    if x.shape[1] not in (1, 3) and x.shape[-1] in (1, 3):
        x = x.permute(0, 3, 1, 2)
    if x.shape[1] not in (1, 3):
        raise GenfwError(
            f"{path} holds images of shape {tuple(x.shape[1:])}; expected 1 (grey) or 3 (RGB) channels, "
            f"as (N, C, H, W) or (N, H, W, C)"
        )
    if x.dtype == torch.uint8:
        return x.float() / 127.5 - 1.0
    if not x.is_floating_point():
        raise GenfwError(f"{path} holds {x.dtype} values; give uint8 (0..255) or floats in [-1, 1]")
    x = x.float()
    finite = x[torch.isfinite(x)]
    if finite.numel() and (finite.min() < -1.001 or finite.max() > 1.001):
        raise GenfwError(
            f"{path} holds values in [{float(finite.min()):.3g}, {float(finite.max()):.3g}]; floating images "
            f"must be in [-1, 1] (or give uint8 0..255)"
        )
    return x


def read_samples(path: str | Path, limit: int | None = None) -> torch.Tensor:
    """Images from a folder or a tensor file as ``(N, C, H, W)`` float32 in ``[-1, 1]``: the first
    ``limit`` of them (all with ``None``; a folder's files in sorted order)."""
    path = Path(path)
    if path.is_dir():
        return _read_folder(path, limit)
    if not path.is_file():
        raise GenfwError(f"{path} does not exist; give a folder of images or a .npy/.npz/.safetensors file")
    if path.suffix.lower() not in TENSOR_EXTENSIONS:
        raise GenfwError(
            f"{path}: unknown format '{path.suffix}'; give a folder of images or a "
            f"{'/'.join(TENSOR_EXTENSIONS)} file"
        )
    return _read_tensor(path, limit)


def samples_needed(metrics: dict[str, Any]) -> int | None:
    """The most samples any of ``metrics`` uses (its ``num_samples`` option); ``None`` when one of
    them does not say, so that all are read."""
    counts = [getattr(getattr(m, "options", None), "num_samples", None) for m in metrics.values()]
    return None if not counts or None in counts else max(counts)


class TensorImages(GenDataset):
    """Images read by :func:`read_samples`, unlabelled."""

    kind = "image"
    num_classes = 0

    def __init__(self, x: torch.Tensor) -> None:
        self.shape = tuple(x.shape[1:])
        self.tensors = (x, torch.full((x.shape[0],), -1, dtype=torch.long))


def score(
    real: torch.Tensor, fake: torch.Tensor, metrics: dict[str, Any], device: Any = "cpu"
) -> dict[str, float]:
    """Every metric on two image sets, as ``{"metric/key": value}``; the first ``n`` of each set
    are used where a metric asks for ``n``."""
    ctx = EvalContext(
        sample=lambda n: fake[:n],
        real=lambda n: real[:n],
        dataset=TensorImages(real),
        device=torch.device(device),
    )
    results: dict[str, float] = {}
    for name, metric in metrics.items():
        torch.manual_seed(0)
        results.update({f"{name}/{k}": float(v) for k, v in metric(ctx).items()})
    return results


def metric_specs(registry: Any, raw: Any) -> dict[str, Any]:
    """Built metrics from a ``metrics`` config entry (mapping name -> options, or names)."""
    from genfw.config import _named_map

    named = _named_map(raw, "metrics")
    return {n: registry.spec("metric", n, o, where=f"metrics.{n}").build() for n, o in named.items()}
