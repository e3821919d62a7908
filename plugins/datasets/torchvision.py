"""Data set ``torchvision``: MNIST, Fashion-MNIST or CIFAR-10 read from local files by torchvision.

torchvision is an optional extra (``pip install 'genfw[vision]'``): it is imported only when the
data set is built, so this plugin registers, and ``genfw list`` works, without it.

genfw never downloads: the files must already be under ``root`` in torchvision's layout
(``root/MNIST/raw/...``, ``root/FashionMNIST/raw/...``, ``root/cifar-10-batches-py/...``), e.g.
fetched once with ``torchvision.datasets.MNIST(root, download=True)``.

The whole split is converted once into in-memory ``tensors`` (float32 in ``[-1, 1]``; about
190 MB for MNIST's training split, 620 MB for CIFAR-10's at native size), so the loop can batch
by indexing. ``size`` resizes every image (bilinear, antialiased) to ``size x size``.
"""

from __future__ import annotations

import attrs
import numpy as np
import torch
import torch.nn.functional as F

import genfw
from genfw import validators as check
from genfw.hookspecs import Register

# name -> (torchvision.datasets class name, channels, native side)
NAMES: dict[str, tuple[str, int, int]] = {
    "mnist": ("MNIST", 1, 28),
    "fashion-mnist": ("FashionMNIST", 1, 28),
    "cifar10": ("CIFAR10", 3, 32),
}
MISSING_EXTRA = (
    "dataset 'torchvision' needs the optional extra: pip install 'genfw[vision]' "
    "(torchvision is not installed)"
)
_CHUNK = 10_000  # images converted at once, to bound the temporary memory of a resize


@attrs.define
class TorchvisionOptions:
    root: str
    """Local folder holding the files (never downloaded)."""
    name: str = attrs.field(default="mnist", validator=check.one_of(*NAMES))
    """mnist, fashion-mnist or cifar10."""
    train: bool = True
    """Training split (true) or test split (false)."""
    size: int | None = attrs.field(default=None, validator=attrs.validators.optional(check.at_least(1)))
    """Resize to size x size; native size (28 or 32) when left out."""


def to_unit_range(images: torch.Tensor, size: int | None) -> torch.Tensor:
    """uint8 images ``(N, C, H, W)`` -> float32 in ``[-1, 1]``, resized to ``size`` if given."""
    n, c, h, w = images.shape
    out_h, out_w = (h, w) if size is None else (size, size)
    out = torch.empty(n, c, out_h, out_w, dtype=torch.float32)
    for start in range(0, n, _CHUNK):
        chunk = images[start : start + _CHUNK].float() / 127.5 - 1.0
        if (out_h, out_w) != (h, w):
            chunk = F.interpolate(chunk, size=(out_h, out_w), mode="bilinear", antialias=True)
            chunk = chunk.clamp_(-1.0, 1.0)
        out[start : start + _CHUNK] = chunk
    return out


class TorchvisionDataset(genfw.GenDataset):
    """MNIST, Fashion-MNIST or CIFAR-10 from local files via torchvision (extra: genfw[vision])."""

    kind = "image"
    num_classes = 10

    def __init__(self, options: TorchvisionOptions) -> None:
        self.options = options
        try:
            import torchvision
        except ImportError:
            raise genfw.GenfwError(MISSING_EXTRA) from None

        class_name, channels, _native_side = NAMES[options.name]
        cls = getattr(torchvision.datasets, class_name)
        try:
            ds = cls(options.root, train=options.train, download=False)
        except RuntimeError as exc:  # torchvision: "Dataset not found. You can use download=True ..."
            raise genfw.GenfwError(
                f"dataset.root: no {class_name} files under {options.root} (torchvision says: "
                f"{' '.join(str(exc).split())}); genfw never downloads, so put them there beforehand, "
                f'e.g. python -c "from torchvision.datasets import {class_name}; '
                f'{class_name}({options.root!r}, train={options.train}, download=True)"'
            ) from None

        # MNIST-like: uint8 tensor (N, H, W); CIFAR-10: uint8 ndarray (N, H, W, C).
        data = torch.as_tensor(np.asarray(ds.data))
        data = data.unsqueeze(1) if data.ndim == 3 else data.permute(0, 3, 1, 2)
        x = to_unit_range(data, options.size)
        y = torch.as_tensor(np.asarray(ds.targets), dtype=torch.long)
        self.shape = (channels, *x.shape[2:])
        self.tensors = (x, y)


@genfw.hookimpl
def genfw_register_datasets(register: Register) -> None:
    register("torchvision", TorchvisionDataset, options=TorchvisionOptions)
