"""Built-in latent priors: ``normal``, ``uniform`` and ``spike_slab``.

Each prior has ``dim``, ``sample(n, *, device, generator=None) -> (n, dim)`` and
``log_prob(z) -> (n,)``; ``normal`` also gives the closed-form KL from a diagonal Gaussian
(``kl_from_normal``), which the VAE needs. ``variance`` is the per-dimension variance, e.g. for
the kernel scale of the WAE's MMD.
"""

from __future__ import annotations

import math
from typing import Any

import attrs
import torch
from torch import Tensor

import genfw
from genfw import validators as check
from genfw.hookspecs import Register

_LOG_2PI = math.log(2 * math.pi)


def _standard_normal_log_density(z: Tensor) -> Tensor:
    """Elementwise log N(z; 0, 1)."""
    return -0.5 * (z.square() + _LOG_2PI)


def _check_dim(dim: int) -> int:
    if dim <= 0:
        raise ValueError(f"a prior needs a positive dimension, got dim={dim}")
    return dim


# --- normal -------------------------------------------------------------------------------------


class NormalPrior:
    """Standard normal N(0, I)."""

    variance = 1.0

    def __init__(self, options: Any = None, *, dim: int) -> None:
        self.dim = _check_dim(dim)

    def sample(
        self, n: int, *, device: torch.device | str, generator: torch.Generator | None = None
    ) -> Tensor:
        return torch.randn(n, self.dim, device=device, generator=generator)

    def log_prob(self, z: Tensor) -> Tensor:
        return _standard_normal_log_density(z).sum(dim=-1)

    def kl_from_normal(self, mu: Tensor, logvar: Tensor) -> Tensor:
        """KL(N(mu, diag exp(logvar)) || N(0, I)) per row: ``(n, dim) -> (n,)``.

        ``0.5 * sum_j (mu_j^2 + exp(logvar_j) - 1 - logvar_j)`` (Kingma & Welling 2014, app. B).
        """
        return 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar).sum(dim=-1)


# --- uniform ------------------------------------------------------------------------------------


def _above_low(instance: UniformOptions, _: attrs.Attribute, high: float) -> None:
    if not high > instance.low:
        raise ValueError(f"uniform prior needs low < high, got low={instance.low}, high={high}")


@attrs.define
class UniformOptions:
    """Options of the uniform prior."""

    low: float = -1.0
    high: float = attrs.field(default=1.0, validator=_above_low)


class UniformPrior:
    """Uniform on the cube [low, high]^dim."""

    def __init__(self, options: UniformOptions, *, dim: int) -> None:
        self.dim = _check_dim(dim)
        self.low, self.high = options.low, options.high

    @property
    def variance(self) -> float:
        return (self.high - self.low) ** 2 / 12.0

    def sample(
        self, n: int, *, device: torch.device | str, generator: torch.Generator | None = None
    ) -> Tensor:
        u = torch.rand(n, self.dim, device=device, generator=generator)
        return self.low + (self.high - self.low) * u

    def log_prob(self, z: Tensor) -> Tensor:
        """``-dim * log(high - low)`` inside the cube (boundary included), ``-inf`` outside."""
        inside = ((z >= self.low) & (z <= self.high)).all(dim=-1)
        log_density = -self.dim * math.log(self.high - self.low)
        return torch.where(inside, log_density, -math.inf).to(z.dtype)


# --- spike and slab -----------------------------------------------------------------------------


@attrs.define
class SpikeSlabOptions:
    """Options of the spike-and-slab prior."""

    # Slab weight: each coordinate is N(0, 1) with probability alpha, exactly 0 otherwise.
    alpha: float = attrs.field(default=0.5, validator=check.in_interval(0, 1, low_open=True))


class SpikeSlabPrior:
    """Spike and slab: per dimension alpha N(0, 1) + (1 - alpha) delta_0, for sparse codes.

    ``p(z) = prod_j (alpha N(z_j; 0, 1) + (1 - alpha) delta(z_j))``. The distribution has an atom
    at 0, so it has no density with respect to Lebesgue measure. ``log_prob`` is the density
    with respect to the mixed measure (Lebesgue + a unit point mass at 0) in each coordinate:

    - ``log(alpha) + log N(z_j; 0, 1)`` where ``z_j != 0``,
    - ``log(1 - alpha)`` where ``z_j == 0`` exactly (``-inf`` when ``alpha == 1``),

    summed over coordinates. There is no ``kl_from_normal``: a Gaussian posterior puts no mass on
    the atom, so its KL divergence to this prior is infinite (use it with an AAE or a WAE, which
    only need samples).
    """

    def __init__(self, options: SpikeSlabOptions, *, dim: int) -> None:
        self.dim = _check_dim(dim)
        self.alpha = options.alpha

    @property
    def sparsity(self) -> float:
        """Expected fraction of coordinates that are exactly zero: ``1 - alpha``."""
        return 1.0 - self.alpha

    @property
    def variance(self) -> float:
        return self.alpha

    def sample(
        self, n: int, *, device: torch.device | str, generator: torch.Generator | None = None
    ) -> Tensor:
        # Exact: a Bernoulli(alpha) mask times standard normal noise.
        slab = torch.rand(n, self.dim, device=device, generator=generator) < self.alpha
        noise = torch.randn(n, self.dim, device=device, generator=generator)
        return torch.where(slab, noise, 0.0)

    def log_prob(self, z: Tensor) -> Tensor:
        log_spike = math.log(1.0 - self.alpha) if self.alpha < 1.0 else -math.inf
        log_slab = math.log(self.alpha) + _standard_normal_log_density(z)
        return torch.where(z == 0, log_spike, log_slab).sum(dim=-1)


# --- registration -------------------------------------------------------------------------------


@genfw.hookimpl
def genfw_register_priors(register: Register) -> None:
    register("normal", NormalPrior)
    register("uniform", UniformPrior, options=UniformOptions)
    register("spike_slab", SpikeSlabPrior, options=SpikeSlabOptions)
