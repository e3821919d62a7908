"""Data set ``digits``: 1,797 handwritten digits of 8x8 pixels, shipped with genfw.

Provenance: the test set of the UCI "Optical Recognition of Handwritten Digits" data set
(Alpaydin & Kaynak, 1998; https://archive.ics.uci.edu/dataset/80), as shipped by scikit-learn
(``sklearn.datasets.load_digits``), licensed CC BY 4.0. Each image is a 4x4-block count of
32x32 bitmaps, so pixels are integers in 0..16.

``data/digits.csv.gz`` holds one row per image: 64 pixel values (row-major) then the label.
It is small enough to live in memory and to make a quick, offline real data set for tests,
examples and CPU runs.
"""

from __future__ import annotations

import functools
import gzip
import importlib.resources

import attrs
import numpy as np
import torch

import genfw
from genfw.hookspecs import Register

NUM_CLASSES = 10
SIDE = 8


def _check_classes(_: object, attribute: attrs.Attribute, value: list[int] | None) -> None:
    if value is None:
        return
    if not value:
        raise ValueError(f"{attribute.name} must name at least one digit (0..9), or be left out for all")
    bad = [c for c in value if not 0 <= c < NUM_CLASSES]
    if bad:
        raise ValueError(f"{attribute.name} must be digits in 0..9; got {bad[0]}")


@attrs.define
class DigitsOptions:
    classes: list[int] | None = attrs.field(default=None, validator=_check_classes)
    """Keep only these labels (e.g. ``[3]``); all ten when left out."""


@functools.cache
def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """Parse the embedded CSV once: pixels ``(1797, 64)`` int64 in 0..16 and labels ``(1797,)``.

    The arrays are read-only because they are shared by every call.
    """
    resource = importlib.resources.files("genfw_plugins.datasets").joinpath("data/digits.csv.gz")
    with resource.open("rb") as raw, gzip.open(raw, "rt") as text:
        table = np.loadtxt(text, delimiter=",", dtype=np.int64, ndmin=2)
    pixels, labels = table[:, :-1], table[:, -1]
    pixels.setflags(write=False)
    labels.setflags(write=False)
    return pixels, labels


class Digits(genfw.GenDataset):
    """1,797 handwritten 8x8 digits (UCI, as in scikit-learn), embedded: works offline."""

    shape = (1, SIDE, SIDE)
    kind = "image"
    # Labels keep their digit value even for a subset, so num_classes stays 10.
    num_classes = NUM_CLASSES

    def __init__(self, options: DigitsOptions) -> None:
        self.options = options
        pixels, labels = load_digits()
        if options.classes is not None:
            keep = np.isin(labels, options.classes)
            pixels, labels = pixels[keep], labels[keep]
        # 0..16 -> [-1, 1]; the arithmetic makes fresh (writable) arrays, leaving the cache alone.
        x = torch.from_numpy(pixels.astype(np.float32) / 8.0 - 1.0).reshape(-1, *self.shape)
        y = torch.from_numpy(labels.astype(np.int64))
        self.tensors = (x, y)


@genfw.hookimpl
def genfw_register_datasets(register: Register) -> None:
    register("digits", Digits, options=DigitsOptions)
