"""A Laplace latent prior for genfw, registered as the prior ``laplace``.

Each coordinate is independent ``Laplace(0, b)``::

    p(z) = prod_j 1 / (2b) exp(-|z_j| / b)        variance per coordinate: 2 b^2

Heavier tails than the normal prior and a sharp peak at 0: codes are encouraged to be sparse
without being exactly 0 (compare ``spike_slab``). The default ``b = 1/sqrt(2)`` gives unit
variance, so it swaps in for ``normal`` at the same scale.

Sampling is exact: a Laplace variable is ``b (E1 - E2)`` with ``E1, E2`` independent
Exponential(1), and ``E = -log(1 - U)`` for ``U`` uniform on ``[0, 1)``.

Because a VAE needs ``KL(q(z|x) || p(z))`` for a Gaussian posterior, the prior also gives it in
closed form. With ``q = N(mu, s^2)`` per coordinate::

    KL = E_q log q - E_q log p = -1/2 log(2 pi e s^2) + log(2b) + E_q|z| / b
    E_q|z| = s sqrt(2/pi) exp(-mu^2 / (2 s^2)) + mu erf(mu / (s sqrt 2))    (folded normal mean)

so ``genfw train --plugin vae --prior laplace`` works, as do the AAE and the WAE, which only
sample.
"""

from __future__ import annotations

import math

import attrs
import genfw
import torch
from genfw import validators as check
from genfw.hookspecs import Register
from torch import Tensor

__version__ = "0.1.0"


@attrs.define
class LaplaceOptions:
    """Options of the Laplace prior."""

    # The scale b of each coordinate; the default 1/sqrt(2) gives unit variance (2 b^2 = 1).
    scale: float = attrs.field(default=math.sqrt(0.5), validator=check.positive)


class LaplacePrior:
    """Independent Laplace(0, b) coordinates: sparse-leaning codes with a closed-form KL."""

    def __init__(self, options: LaplaceOptions, *, dim: int) -> None:
        if dim <= 0:
            raise ValueError(f"a prior needs a positive dimension, got dim={dim}")
        self.dim, self.scale = dim, options.scale

    @property
    def variance(self) -> float:
        """Per-coordinate variance ``2 b^2``."""
        return 2.0 * self.scale**2

    def sample(
        self, n: int, *, device: torch.device | str, generator: torch.Generator | None = None
    ) -> Tensor:
        u = torch.rand(2, n, self.dim, device=device, generator=generator)
        e = -torch.log1p(-u)  # two independent Exponential(1), finite since u < 1
        return self.scale * (e[0] - e[1])

    def log_prob(self, z: Tensor) -> Tensor:
        """``sum_j -|z_j| / b - log(2b)``: ``(n, dim) -> (n,)``."""
        return (-z.abs() / self.scale - math.log(2.0 * self.scale)).sum(dim=-1)

    def kl_from_normal(self, mu: Tensor, logvar: Tensor) -> Tensor:
        """KL(N(mu, diag exp(logvar)) || Laplace(0, b)^dim) per row: ``(n, dim) -> (n,)``."""
        std = (0.5 * logvar).exp()
        mean_abs = std * math.sqrt(2.0 / math.pi) * torch.exp(-0.5 * (mu / std).square()) + mu * torch.erf(
            mu / (std * math.sqrt(2.0))
        )
        neg_entropy = -0.5 * (math.log(2.0 * math.pi) + 1.0 + logvar)
        return (neg_entropy + math.log(2.0 * self.scale) + mean_abs / self.scale).sum(dim=-1)


@genfw.hookimpl
def genfw_register_priors(register: Register) -> None:
    register("laplace", LaplacePrior, options=LaplaceOptions)
