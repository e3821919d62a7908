"""Data set ``image-folder``: any folder of images, searched recursively, read with Pillow.

Files with the extensions in :data:`EXTENSIONS` (any case) are images; hidden files and folders
(names starting with ``.``) are skipped. Files are taken in sorted order of their relative path.

Labels: when every image lies inside an immediate subfolder of ``path`` (``path/cat/1.png``,
``path/dog/x/2.png``), each such subfolder that holds images is a class, numbered in sorted order
of its name, and ``y`` is that number. Otherwise (some image sits directly in ``path``) the data set
is unlabelled: ``y = -1`` and ``num_classes = 0``.

Each image is center-cropped to a square, resized to ``size x size`` (bicubic), converted to
grey (``channels = 1``) or RGB (``channels = 3``; alpha is dropped) and scaled from 0..255 to
``[-1, 1]``.

Loading is lazy, always: only the list of files is kept, and each item is decoded when asked for,
so memory does not grow with the folder. ``tensors`` is therefore ``None``; batch it with a
``DataLoader`` (with workers, decoding runs in parallel).
"""

from __future__ import annotations

import os
from pathlib import Path

import attrs
import numpy as np
import torch
from PIL import Image, ImageOps

import genfw
from genfw import validators as check
from genfw.hookspecs import Register

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
# Image.Resampling is Pillow >= 9.1; the bare constant works everywhere else.
BICUBIC = getattr(Image, "Resampling", Image).BICUBIC
_VALID = "give a folder of images (" + ", ".join(e[1:] for e in EXTENSIONS) + "), searched recursively"


def _check_channels(_: object, attribute: attrs.Attribute, value: int) -> None:
    if value not in (1, 3):
        raise ValueError(f"{attribute.name} must be 1 (grey) or 3 (RGB); got {value}")


@attrs.define
class ImageFolderOptions:
    path: str
    """Folder of images; class subfolders give labels."""
    size: int = attrs.field(default=32, validator=check.at_least(1))
    """Side of the square images, in pixels."""
    channels: int = attrs.field(default=3, validator=_check_channels)
    """1 (grey) or 3 (RGB)."""


def find_images(root: Path) -> list[Path]:
    """Image files under ``root``, recursively, as paths relative to ``root``, sorted."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]  # prune hidden folders
        for name in filenames:
            if not name.startswith(".") and name.lower().endswith(EXTENSIONS):
                found.append(Path(dirpath, name).relative_to(root))
    return sorted(found)


def load_image(file: Path, size: int, channels: int) -> torch.Tensor:
    """Read one image as a ``(channels, size, size)`` float tensor in ``[-1, 1]``."""
    with Image.open(file) as im:
        im = ImageOps.exif_transpose(im)  # photos stored sideways with an orientation tag
        return image_to_tensor(im, size, channels)


def image_to_tensor(im: Image.Image, size: int, channels: int) -> torch.Tensor:
    """A Pillow image, center-cropped to a square and resized to ``size`` (bicubic), as a
    ``(channels, size, size)`` float tensor in ``[-1, 1]`` (grey for 1 channel, RGB for 3)."""
    im = im.convert("L" if channels == 1 else "RGB")
    w, h = im.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    im = im.crop((left, top, left + side, top + side))
    if side != size:
        im = im.resize((size, size), BICUBIC)
    arr = np.asarray(im, dtype=np.float32).reshape(size, size, channels)
    return torch.from_numpy(arr / 127.5 - 1.0).permute(2, 0, 1).contiguous()


class ImageFolder(genfw.GenDataset):
    """Any folder of images (png, jpg, bmp, gif, webp), recursively; class subfolders give labels."""

    kind = "image"

    def __init__(self, options: ImageFolderOptions) -> None:
        self.options = options
        self.root = Path(options.path).expanduser()
        if not self.root.exists():
            raise genfw.GenfwError(f"dataset.path: {options.path} does not exist; {_VALID}")
        if not self.root.is_dir():
            raise genfw.GenfwError(f"dataset.path: {options.path} is a file, not a folder; {_VALID}")
        self.files = find_images(self.root)
        if not self.files:
            raise genfw.GenfwError(f"dataset.path: {options.path} holds no images; {_VALID}")

        self.shape = (options.channels, options.size, options.size)
        # Labelled iff every image is inside an immediate subfolder (its path has 2+ parts).
        if all(len(f.parts) > 1 for f in self.files):
            self.classes = sorted({f.parts[0] for f in self.files})
            index = {name: i for i, name in enumerate(self.classes)}
            self.labels = torch.tensor([index[f.parts[0]] for f in self.files], dtype=torch.long)
        else:
            self.classes = []
            self.labels = torch.full((len(self.files),), -1, dtype=torch.long)
        self.num_classes = len(self.classes)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        file = self.root / self.files[i]
        try:
            x = load_image(file, self.options.size, self.options.channels)
        except (OSError, ValueError) as exc:  # Pillow's UnidentifiedImageError is an OSError
            raise genfw.GenfwError(f"dataset.path: cannot read image {file}: {exc}") from None
        return x, int(self.labels[i])


@genfw.hookimpl
def genfw_register_datasets(register: Register) -> None:
    register("image-folder", ImageFolder, options=ImageFolderOptions)
