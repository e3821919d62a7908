"""Data set ``toy2d``: the 2D mixtures of Gaussians used to measure mode collapse.

Both follow the synthetic experiments of VEEGAN (Srivastava et al. 2017) and PacGAN (Lin et al.
2018), whose reference code (``fjxmlzn/PacGAN``, ``synthetic_data_experiments/2D*_GAN&PacGAN/
config.py``) uses exactly these centres and standard deviations, equal mixture weights and
100,000 training points:

- ``ring``: 8 Gaussians with centres evenly spaced on the unit circle, ``(cos 2πk/8, sin 2πk/8)``,
  standard deviation 0.01;
- ``grid``: 25 Gaussians with centres on ``{-4, -2, 0, 2, 4}^2``, standard deviation 0.05.

The points are drawn once, at construction, from a local ``torch.Generator`` seeded with ``seed``:
the same options always give the same tensors, and global RNG state is neither read nor changed.
"""

from __future__ import annotations

import math

import attrs
import torch

import genfw
from genfw import validators as check
from genfw.hookspecs import Register

WHICH = ("ring", "grid")


def _check_seed(_: object, attribute: attrs.Attribute, value: int) -> None:
    if not 0 <= value < 2**63:
        raise ValueError(f"{attribute.name} must be an integer in [0, 2**63); got {value}")


@attrs.define
class Toy2DOptions:
    which: str = attrs.field(default="ring", validator=check.one_of(*WHICH))
    """``ring`` (8 modes, std 0.01) or ``grid`` (25 modes, std 0.05)."""
    size: int = attrs.field(default=100_000, validator=check.at_least(1))
    """Number of points, drawn once."""
    seed: int = attrs.field(default=0, validator=_check_seed)
    """Seed of the local generator the points are drawn with."""


def ring_modes(k: int = 8, radius: float = 1.0) -> torch.Tensor:
    """``k`` centres evenly spaced on a circle, starting at ``(radius, 0)``: a ``(k, 2)`` tensor."""
    angles = torch.arange(k, dtype=torch.float64) * (2 * math.pi / k)
    return (radius * torch.stack([angles.cos(), angles.sin()], dim=1)).float()


def grid_modes(values: tuple[float, ...] = (-4.0, -2.0, 0.0, 2.0, 4.0)) -> torch.Tensor:
    """Centres on the grid ``values x values``, row-major in ``x``: a ``(len(values)**2, 2)`` tensor."""
    v = torch.tensor(values, dtype=torch.float32)
    xs, ys = torch.meshgrid(v, v, indexing="ij")
    return torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=1)


# which -> (centres, standard deviation of every component)
MIXTURES = {
    "ring": (ring_modes, 0.01),
    "grid": (grid_modes, 0.05),
}


class Toy2D(genfw.GenDataset):
    """2D mixture of Gaussians: 8 on a ring (std 0.01) or 25 on a grid (std 0.05), as in PacGAN."""

    shape = (2,)
    kind = "points"
    num_classes = 0
    # The config layer reads this from the factory class to choose default metrics.
    default_metrics = ("mode_coverage",)

    modes: torch.Tensor
    """Centres of the mixture components, ``(K, 2)`` float."""
    mode_std: float
    """Standard deviation of every component (isotropic)."""
    mode_index: torch.Tensor
    """Component each point was drawn from, ``(size,)`` long. Not a label: ``y`` is ``-1``."""

    def __init__(self, options: Toy2DOptions) -> None:
        self.options = options
        make_modes, std = MIXTURES[options.which]
        self.modes = make_modes()
        self.mode_std = float(std)

        gen = torch.Generator().manual_seed(options.seed)
        k = self.modes.shape[0]
        # Equal mixture weights: pick a component per point, then add isotropic Gaussian noise.
        self.mode_index = torch.randint(0, k, (options.size,), generator=gen)
        noise = torch.randn(options.size, 2, generator=gen)
        x = self.modes[self.mode_index] + self.mode_std * noise
        y = torch.full((options.size,), -1, dtype=torch.long)
        self.tensors = (x, y)


@genfw.hookimpl
def genfw_register_datasets(register: Register) -> None:
    register("toy2d", Toy2D, options=Toy2DOptions)
