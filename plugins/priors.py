"""Built-in latent priors: ``normal``, ``uniform``, ``spike_slab``, ``mog``, ``categorical`` and
``vamp``.

Each prior has ``dim``, ``sample(n, *, device, generator=None) -> (n, dim)`` and
``log_prob(z) -> (n,)``; ``normal`` also gives the closed-form KL from a diagonal Gaussian
(``kl_from_normal``), which the VAE needs. ``variance`` is the per-dimension variance, e.g. for
the kernel scale of the WAE's MMD. ``vamp`` is built from the variant's Gaussian encoder
(``needs_encoder``, :class:`genfw.contracts.Prior`).
"""

from __future__ import annotations

import math
from typing import Any

import attrs
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import genfw
from genfw import DataInfo, GenfwError
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
    full_support = True  # a positive density on all of R^dim

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

    def kl_from_spike_slab(self, mu: Tensor, logvar: Tensor, gamma: Tensor) -> Tensor:
        """KL(q || p) per row for the spike-and-slab posterior of variational sparse coding.

        ``q(z_j) = gamma_j N(z_j; mu_j, exp(logvar_j)) + (1 - gamma_j) delta(z_j)`` against this
        prior (Tonolini et al. 2020, eq. 6, with the sign of a divergence)::

            KL = sum_j [ -gamma_j / 2 (1 + logvar_j - mu_j^2 - exp(logvar_j))
                         + (1 - gamma_j) log((1 - gamma_j) / (1 - alpha))
                         + gamma_j log(gamma_j / alpha) ]

        Exact: both measures share the atom at 0, where the density ratio is
        ``(1 - gamma) / (1 - alpha)``; off the atom it is ``gamma N_q / (alpha N_p)``. The
        ``0 log 0`` terms are 0 (``gamma`` in ``{0, 1}`` is allowed); ``alpha == 1`` with
        ``gamma < 1`` is infinite, as it should be.
        """
        gauss = -0.5 * gamma * (1.0 + logvar - mu.square() - logvar.exp())
        log_spike = math.log(1.0 - self.alpha) if self.alpha < 1.0 else -math.inf
        spike = torch.xlogy(1.0 - gamma, 1.0 - gamma) - (1.0 - gamma) * log_spike
        spike = torch.where(gamma < 1.0, spike, torch.zeros_like(spike))
        slab = torch.xlogy(gamma, gamma) - gamma * math.log(self.alpha)
        return (gauss + spike + slab).sum(dim=-1)


# --- mixture of Gaussians -----------------------------------------------------------------------


@attrs.define
class MixtureOptions:
    """Options of the mixture-of-Gaussians prior (equal weights, isotropic components)."""

    components: int = attrs.field(default=10, validator=check.at_least(1))
    # circle: centres evenly spaced on a circle of this radius in the first two coordinates
    # (zero in the others), as the 10-component 2-D prior of the adversarial autoencoder;
    # random: centres drawn once from N(0, radius^2 I) with ``seed``.
    layout: str = attrs.field(default="circle", validator=check.one_of("circle", "random"))
    radius: float = attrs.field(default=4.0, validator=check.positive)
    std: float = attrs.field(default=0.5, validator=check.positive)  # of each component, per coordinate
    seed: int = 0


class MixturePrior:
    """Mixture of ``K`` Gaussians ``(1/K) sum_k N(z; c_k, std^2 I)`` (Makhzani et al. 2016).

    ``log_prob`` is exact (log-sum-exp over components); ``sample`` picks a component uniformly,
    then adds isotropic noise. ``centres`` is the ``(K, dim)`` tensor of means.
    """

    full_support = True  # a positive density on all of R^dim (the VAE's Monte Carlo KL works)

    def __init__(self, options: MixtureOptions, *, dim: int) -> None:
        self.dim = _check_dim(dim)
        self.std, k = options.std, options.components
        if options.layout == "circle":
            angle = 2 * math.pi * torch.arange(k, dtype=torch.float64) / k
            centres = torch.zeros(k, dim, dtype=torch.float64)
            centres[:, 0] = options.radius * angle.cos()
            if dim > 1:
                centres[:, 1] = options.radius * angle.sin()
        else:
            g = torch.Generator().manual_seed(options.seed)
            centres = options.radius * torch.randn(k, dim, generator=g, dtype=torch.float64)
        self.centres = centres.float()

    @property
    def variance(self) -> float:
        """Per-coordinate variance, averaged over coordinates: ``std^2 + mean_j Var_k(c_kj)``."""
        spread = self.centres.double().var(dim=0, unbiased=False).mean().item()
        return self.std**2 + spread

    def sample(
        self, n: int, *, device: torch.device | str, generator: torch.Generator | None = None
    ) -> Tensor:
        k = torch.randint(self.centres.shape[0], (n,), device=device, generator=generator)
        noise = torch.randn(n, self.dim, device=device, generator=generator)
        return self.centres.to(device)[k] + self.std * noise

    def log_prob(self, z: Tensor) -> Tensor:
        c = self.centres.to(device=z.device, dtype=z.dtype)
        sq = (z.unsqueeze(-2) - c).square().sum(-1)  # (n, K)
        log_comp = -0.5 * sq / self.std**2 - self.dim * (math.log(self.std) + 0.5 * _LOG_2PI)
        return torch.logsumexp(log_comp, dim=-1) - math.log(c.shape[0])


# --- categorical + continuous codes -------------------------------------------------------------


@attrs.define
class CategoricalOptions:
    """Options of the categorical-plus-continuous prior."""

    categories: int = attrs.field(default=10, validator=check.at_least(2))  # K: one-hot block size
    # Distribution of the remaining dim - K continuous coordinates.
    continuous: str = attrs.field(default="normal", validator=check.one_of("normal", "uniform"))


class CategoricalPrior:
    """A one-hot categorical code and continuous codes: ``z = [onehot(c), s]``.

    ``c ~ Uniform{0..K-1}`` fills the first ``K = categories`` coordinates; the other ``dim - K``
    are ``N(0, 1)`` (or ``U[-1, 1]``). This is the latent of the (semi-)supervised adversarial
    autoencoder (Makhzani et al. 2016, sec. 4-5: a categorical ``y`` and a continuous style
    ``z``) and of InfoGAN's codes. ``log_prob`` is the density with respect to counting measure
    on the one-hot vertices times Lebesgue measure on the rest: ``-log K + log p(s)`` on a vertex,
    ``-inf`` off them. ``sample(n, labels=y)`` fixes the categories (class-conditional samples).
    """

    def __init__(self, options: CategoricalOptions, *, dim: int) -> None:
        self.dim = _check_dim(dim)
        self.categories, self.continuous = options.categories, options.continuous
        if dim < self.categories:
            raise ValueError(
                f"the categorical prior needs latent_dim >= categories ({self.categories}), got {dim}"
            )

    @property
    def variance(self) -> float:
        k, rest = self.categories, self.dim - self.categories
        cont = 1.0 if self.continuous == "normal" else 1.0 / 3.0
        return (k * (1 / k) * (1 - 1 / k) + rest * cont) / self.dim

    def sample(
        self,
        n: int,
        *,
        device: torch.device | str,
        generator: torch.Generator | None = None,
        labels: Tensor | None = None,
    ) -> Tensor:
        if labels is None:
            labels = torch.randint(self.categories, (n,), device=device, generator=generator)
        onehot = torch.nn.functional.one_hot(labels.to(device).long(), self.categories).float()
        rest = self.dim - self.categories
        if self.continuous == "normal":
            s = torch.randn(n, rest, device=device, generator=generator)
        else:
            s = 2.0 * torch.rand(n, rest, device=device, generator=generator) - 1.0
        return torch.cat([onehot, s], dim=1)

    def log_prob(self, z: Tensor) -> Tensor:
        head, s = z[..., : self.categories], z[..., self.categories :]
        vertex = ((head == 0) | (head == 1)).all(-1) & (head.sum(-1) == 1)
        if self.continuous == "normal":
            log_s = _standard_normal_log_density(s).sum(-1)
        else:
            inside = (s.abs() <= 1).all(-1)
            log_s = torch.where(inside, -s.shape[-1] * math.log(2.0), -math.inf)
        out = log_s - math.log(self.categories)
        return torch.where(vertex, out, torch.full_like(out, -math.inf))


# --- VampPrior -----------------------------------------------------------------------------------


@attrs.define
class VampOptions:
    """Options of the VampPrior."""

    components: int = attrs.field(
        default=500, validator=check.at_least(1)
    )  # K pseudo-inputs (the paper's 500)
    # Each coordinate of each pseudo-input starts at N(init_mean, init_std^2) in data space: 0 is
    # the middle of the image range [-1, 1] (see VampPrior for the authors' start).
    init_mean: float = 0.0
    init_std: float = attrs.field(default=0.01, validator=check.non_negative)


def diagonal_gaussian_mixture_log_prob(
    z: Tensor, mu: Tensor, logvar: Tensor, max_elements: int = 2**22
) -> Tensor:
    """``log (1/K) sum_k N(z; mu_k, diag exp(logvar_k))`` for ``z (..., d)`` and ``mu, logvar
    (K, d)`` -> ``(...)``, computed on at most ``max_elements / (K d)`` rows of ``z`` at a time."""
    k, d = mu.shape
    flat = z.reshape(-1, d)
    inv_var = torch.exp(-logvar)  # (K, d)
    norm = -0.5 * (logvar.sum(-1) + d * _LOG_2PI) - math.log(k)  # (K,): log of 1/K times the constant
    rows = max(1, max_elements // (k * d))
    out = []
    for start in range(0, flat.shape[0], rows):
        diff = flat[start : start + rows].unsqueeze(1) - mu  # (rows, K, d)
        log_comp = norm - 0.5 * (diff.square() * inv_var).sum(-1)  # (rows, K)
        out.append(torch.logsumexp(log_comp, dim=-1))
    return torch.cat(out).reshape(z.shape[:-1]) if out else flat.new_zeros(z.shape[:-1])


class VampPrior(nn.Module):
    """VampPrior: (1/K) sum_k q(z | u_k), the encoder's posteriors of K learned pseudo-inputs.

    Tomczak & Welling 2018: ``p(z) = (1/K) sum_k q(z | u_k)`` with ``q`` the variant's
    Gaussian encoder and ``u_k`` pseudo-inputs of the data's shape, trained with the model (the
    encoder's parameters get the prior's gradient too). ``log_prob`` is the exact log-sum-exp
    over the components; ``sample`` picks a pseudo-input uniformly, encodes it and draws from that
    posterior. It declares ``needs_encoder`` (:class:`genfw.contracts.Prior`): built with the
    run's ``data``, added to the model's modules as ``prior``; ``forward()`` gives the pseudo-inputs.

    Pseudo-inputs: ``u_k = hardtanh(w_k)`` for image data (the image range [-1, 1]; points are left
    unbounded), ``w_k`` a parameter (the authors' linear layer without bias applied to the one-hot
    ``e_k``). Start: ``w_k ~ N(0, 0.01^2)`` per coordinate, grey images in the middle of the range.
    The authors' last code starts them at ``N(-0.05, 0.01^2)`` under ``Hardtanh(0, 1)`` (their
    pixels in [0, 1]): every pre-activation is then 5 standard deviations below the clamp, where
    hardtanh passes no gradient; their earlier code put a sigmoid there, which starts them at 0.49,
    mid-grey, as here.
    """

    needs_encoder = True
    full_support = True  # a positive density on all of R^dim (the VAE's Monte Carlo KL works)

    def __init__(self, options: VampOptions, *, dim: int, data: DataInfo | None = None) -> None:
        super().__init__()
        if data is None:
            raise GenfwError(
                "prior 'vamp' is a mixture of the encoder's posteriors of learned pseudo-inputs: it "
                "needs a variant with a Gaussian encoder that builds it with the data (vae, iwae)"
            )
        self.dim = _check_dim(dim)
        self.image = data.kind == "image"
        self.components = options.components
        weights = torch.empty(options.components, *data.shape).normal_(options.init_mean, options.init_std)
        self.pseudo_inputs = nn.Parameter(weights)  # (K, *shape), before the hardtanh
        self._posterior: Any = None

    def forward(self) -> Tensor:
        """The pseudo-inputs ``(K, *shape)``, in the image range for image data."""
        return F.hardtanh(self.pseudo_inputs) if self.image else self.pseudo_inputs

    def bind(self, posterior: Any) -> None:
        """``posterior(x) -> (mu, logvar)``: the encoder that ``log_prob``, ``sample`` and
        ``variance`` use when not given ``encoded``."""
        self._posterior = posterior

    def encoded(self) -> tuple[Tensor, Tensor]:
        """``(mu, logvar)``, each ``(K, dim)``: the bound encoder's posteriors of the pseudo-inputs
        (no gradient: the variant computes them through its modules in training)."""
        if self._posterior is None:
            raise GenfwError(
                "prior 'vamp' has no encoder: the variant calls prior.bind(posterior) once built"
            )
        with torch.no_grad():
            mu, logvar = self._posterior(self())
        return mu, logvar

    @property
    def variance(self) -> float:
        """Per-coordinate variance, averaged over coordinates: ``mean_j (E_k var_kj + Var_k mu_kj)``."""
        mu, logvar = (t.double() for t in self.encoded())
        return float((logvar.exp().mean(0) + mu.var(0, unbiased=False)).mean())

    def log_prob(self, z: Tensor, encoded: tuple[Tensor, Tensor] | None = None) -> Tensor:
        mu, logvar = self.encoded() if encoded is None else encoded
        return diagonal_gaussian_mixture_log_prob(z, mu.to(z), logvar.to(z))

    def sample(
        self,
        n: int,
        *,
        device: torch.device | str,
        generator: torch.Generator | None = None,
        encoded: tuple[Tensor, Tensor] | None = None,
    ) -> Tensor:
        mu, logvar = self.encoded() if encoded is None else encoded
        k = torch.randint(mu.shape[0], (n,), device=device, generator=generator)
        eps = torch.randn(n, self.dim, device=device, generator=generator)
        mu, std = mu.to(device)[k], torch.exp(0.5 * logvar).to(device)[k]
        return mu + std * eps


# --- registration -------------------------------------------------------------------------------


@genfw.hookimpl
def genfw_register_priors(register: Register) -> None:
    register("normal", NormalPrior)
    register("uniform", UniformPrior, options=UniformOptions)
    register("spike_slab", SpikeSlabPrior, options=SpikeSlabOptions)
    register("mog", MixturePrior, options=MixtureOptions, help="mixture of Gaussians (AAE's circle)")
    register(
        "categorical",
        CategoricalPrior,
        options=CategoricalOptions,
        help="one-hot category + continuous codes",
    )
    register("vamp", VampPrior, options=VampOptions, help="VampPrior: mixture of the encoder's posteriors")
