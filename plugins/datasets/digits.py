"""Data set ``digits``: 1,797 handwritten digits of 8x8 pixels, shipped with genfw.

Provenance: the test set of the UCI "Optical Recognition of Handwritten Digits" data set
(Alpaydin & Kaynak, 1998; https://archive.ics.uci.edu/dataset/80), as shipped by scikit-learn
(``sklearn.datasets.load_digits``), licensed CC BY 4.0. Each image is a 4x4-block count of
32x32 bitmaps, so pixels are integers in 0..16.

``data/digits.csv.gz`` holds one row per image: 64 pixel values (row-major) then the label.
It is small enough to live in memory and to make a quick, offline real data set for tests,
examples and CPU runs. ``labelled: N`` keeps only ``N`` labels (the rest ``y = -1``), for
semi-supervised runs such as ``aae --prior categorical``.
"""

from __future__ import annotations

import functools
import gzip
import importlib.resources

import attrs
import numpy as np
import torch

import genfw
from genfw import validators as check
from genfw.hookspecs import Register

NUM_CLASSES = 10
SIDE = 8
LABEL_SEED = 0  # which examples keep their label under ``labelled``: fixed, for every run


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
    labelled: int | None = attrs.field(default=None, validator=attrs.validators.optional(check.at_least(0)))
    """Keep the labels of only this many examples, balanced over the (kept) classes: ``N // K``
    per class and one more for each of the ``N % K`` lowest digits, chosen at random with a fixed
    seed (the same examples in every run); the others get ``y = -1`` (unlabelled), which the
    semi-supervised AAE (``aae --prior categorical``) leaves out of its label loss. All examples
    keep their labels when left out; at most ``K`` times the smallest class's size."""


def labelled_subset(labels: np.ndarray, n: int, seed: int = LABEL_SEED) -> np.ndarray:
    """Indices of ``n`` examples balanced over the ``K`` classes present in ``labels`` (``n // K``
    per class, one more for the ``n % K`` lowest classes), drawn without replacement with
    ``seed``. More than ``K`` times the smallest class's size is a GenfwError."""
    classes, sizes = np.unique(labels, return_counts=True)
    k, most = len(classes), len(classes) * int(sizes.min())
    if n > most:
        raise genfw.GenfwError(
            f"digits: labelled {n} is more than a balanced subset allows: digit {classes[sizes.argmin()]} "
            f"has only {sizes.min()} examples, so labelled can be at most {most} ({k} classes x {sizes.min()})"
        )
    rng = np.random.default_rng(seed)
    picked = [
        rng.choice(np.flatnonzero(labels == c), size=n // k + (1 if i < n % k else 0), replace=False)
        for i, c in enumerate(classes)
    ]
    return np.sort(np.concatenate(picked))


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
        if options.labelled is not None:
            keep = torch.from_numpy(labelled_subset(labels, options.labelled))
            masked = torch.full_like(y, -1)
            masked[keep] = y[keep]
            y = masked
        self.tensors = (x, y)


@genfw.hookimpl
def genfw_register_datasets(register: Register) -> None:
    register("digits", Digits, options=DigitsOptions)
