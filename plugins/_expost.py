"""Ex-post density estimation (Ghosh et al. 2020, sec. 4): a Gaussian mixture fitted to the codes
of a deterministic autoencoder, to sample from after training (``rae``; ``ae --plugin.ex_post gmm``).

:func:`fit_gmm` is expectation-maximisation for a mixture of ``K`` full-covariance Gaussians, as
scikit-learn's ``GaussianMixture(covariance_type="full")`` that the authors' code fits
(``my_utility/estimate_density_and_sample.py``: 10 components, ``max_iter=2000``, ``tol=1e-3``):
k-means++ seeds drawn with a fixed generator, Lloyd's k-means from them, its hard assignments as
the first responsibilities (scikit-learn's ``init_params="kmeans"``), then EM until the mean
log-likelihood per code improves by less than ``tol``;
``1e-6`` is added to every covariance's diagonal (scikit-learn's ``reg_covar``). It runs in
float64 and draws nothing from torch's global generator, so it is a function of the codes alone.

:class:`ExPostGMM` is the module a variant adds as ``density``. The phase ``push``-es the codes of
every training batch into ``codes``, a ring buffer of the last ``capacity`` of them; the mixture is
(re)fitted to that buffer whenever samples are drawn after new codes came in (``pushed`` differs
from ``fitted``). Buffer and mixture are buffers of the module, in every checkpoint and in
``generator.safetensors``; since the fit depends on the buffer alone, ``genfw sample`` and
``--resume`` give the same mixture as training. Before any code was pushed the density is the
standard normal. The module is also the model's ``prior`` (``sample``, ``log_prob``, ``variance``):
the ``autoencoding`` metric compares the codes with the density samples are drawn from.

One departure from the authors: they fit the mixture once, to the codes the final encoder gives
the whole training set; here the buffer holds the codes of the last ``capacity`` training
examples as the encoder gave them during training (about the last epoch of digits by default).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from genfw import Model, Modules, device_of

_LOG_2PI = math.log(2 * math.pi)
REG_COVAR = 1e-6  # scikit-learn's default, added to each covariance's diagonal
KMEANS_ITERS = 300  # scikit-learn's KMeans max_iter


def kmeans_pp(x: Tensor, k: int, generator: torch.Generator) -> Tensor:
    """``k`` k-means++ seeds (Arthur & Vassilvitskii 2007) among the rows of ``x (N, d)``: the
    first uniformly, each next one with probability proportional to its squared distance to the
    nearest seed so far. ``(k, d)``."""
    n = x.shape[0]
    first = int(torch.randint(n, (1,), generator=generator))
    seeds = [x[first]]
    d2 = (x - x[first]).square().sum(1)
    for _ in range(1, k):
        if d2.sum() <= 0:  # every code sits on a seed already
            nxt = int(torch.randint(n, (1,), generator=generator))
        else:
            nxt = int(torch.multinomial((d2 / d2.sum()).float().cpu(), 1, generator=generator))
        seeds.append(x[nxt])
        d2 = torch.minimum(d2, (x - x[nxt]).square().sum(1))
    return torch.stack(seeds)


def gaussian_log_densities(x: Tensor, means: Tensor, scale_tril: Tensor) -> Tensor:
    """``log N(x_n; mu_k, L_k L_k^T)`` for every code and component: ``x (N, d)``, ``means (K, d)``,
    ``scale_tril (K, d, d)`` -> ``(N, K)``."""
    d = x.shape[1]
    diff = (x.unsqueeze(0) - means.unsqueeze(1)).transpose(1, 2)  # (K, d, N)
    sol = torch.linalg.solve_triangular(scale_tril, diff, upper=False)  # L^-1 (x - mu): (K, d, N)
    maha = sol.square().sum(1)  # (K, N)
    log_det = 2 * torch.log(torch.diagonal(scale_tril, dim1=1, dim2=2)).sum(1)  # (K,)
    return (-0.5 * (maha + log_det.unsqueeze(1) + d * _LOG_2PI)).T


def _m_step(x: Tensor, resp: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Weights ``(K,)``, means ``(K, d)`` and covariance factors ``(K, d, d)`` from
    responsibilities ``resp (N, K)``."""
    nk = resp.sum(0) + 10 * torch.finfo(resp.dtype).eps  # (K,)
    means = resp.T @ x / nk.unsqueeze(1)
    diff = x.unsqueeze(0) - means.unsqueeze(1)  # (K, N, d)
    cov = torch.einsum("nk,kni,knj->kij", resp, diff, diff) / nk.view(-1, 1, 1)
    cov = cov + REG_COVAR * torch.eye(x.shape[1], dtype=x.dtype, device=x.device)
    return nk / x.shape[0], means, torch.linalg.cholesky(cov)


def fit_gmm(
    x: Tensor, k: int, *, max_iter: int = 2000, tol: float = 1e-3, seed: int = 0
) -> tuple[Tensor, Tensor, Tensor, int]:
    """EM for a ``k``-component full-covariance Gaussian mixture on ``x (N, d)`` (``N >= 1``).

    Returns ``(weights (K,), means (K, d), scale_tril (K, d, d), iterations)`` in float64 on
    ``x``'s device. With fewer codes than components, ``k`` is ``N`` (a component per code)."""
    x = x.double()
    k = min(k, x.shape[0])
    generator = torch.Generator().manual_seed(seed)
    centres = kmeans_pp(x.cpu(), k, generator).to(x.device)
    nearest = torch.cdist(x, centres).argmin(1)
    for _ in range(KMEANS_ITERS):  # Lloyd's k-means from the seeds, as scikit-learn's init="kmeans"
        counts = torch.bincount(nearest, minlength=k).to(x.dtype)
        sums = torch.zeros_like(centres).index_add_(0, nearest, x)
        centres = torch.where(counts.unsqueeze(1) > 0, sums / counts.clamp(min=1).unsqueeze(1), centres)
        moved = torch.cdist(x, centres).argmin(1)
        if torch.equal(moved, nearest):
            break
        nearest = moved
    resp = torch.nn.functional.one_hot(nearest, k).to(x.dtype)
    weights, means, tril = _m_step(x, resp)
    previous = -math.inf
    iterations = 0
    while iterations < max_iter:
        iterations += 1
        joint = gaussian_log_densities(x, means, tril) + weights.log()  # (N, K)
        norm = torch.logsumexp(joint, 1, keepdim=True)
        current = float(norm.mean())
        resp = (joint - norm).exp()
        weights, means, tril = _m_step(x, resp)
        if abs(current - previous) < tol:
            break
        previous = current
    return weights, means, tril, iterations


class ExPostGMM(nn.Module):
    """A ring buffer of training codes and the Gaussian mixture fitted to it (see the module
    doc). ``dim``: the code size; ``components``: K; ``capacity``: codes kept."""

    full_support = True  # a positive density everywhere

    def __init__(self, dim: int, components: int, capacity: int) -> None:
        super().__init__()
        self.dim, self.components, self.capacity = dim, components, capacity
        self.register_buffer("codes", torch.zeros(capacity, dim))
        self.register_buffer("pushed", torch.zeros((), dtype=torch.long))  # codes pushed so far
        self.register_buffer("fitted", torch.zeros((), dtype=torch.long))  # ``pushed`` at the last fit
        # The mixture; before any fit, one component N(0, I) (the others weigh 0).
        self.register_buffer("weights", torch.nn.functional.one_hot(torch.tensor(0), components).float())
        self.register_buffer("means", torch.zeros(components, dim))
        self.register_buffer("scale_tril", torch.eye(dim).repeat(components, 1, 1))

    @torch.no_grad()
    def push(self, z: Tensor) -> None:
        """Keep the codes ``z (B, d)`` (detached), overwriting the oldest beyond ``capacity``."""
        z = z.detach()[-self.capacity :]
        idx = (self.pushed + torch.arange(z.shape[0], device=z.device)) % self.capacity
        self.codes[idx] = z.to(self.codes.dtype)
        self.pushed += z.shape[0]

    @torch.no_grad()
    def refit(self) -> None:
        """Fit the mixture to the buffer if codes came in since the last fit."""
        pushed = int(self.pushed)
        if pushed == int(self.fitted) or pushed == 0:
            return
        x = self.codes[: min(pushed, self.capacity)]
        w, mu, tril, _ = fit_gmm(x, self.components)
        k = w.shape[0]  # fewer codes than components: the rest weigh 0
        self.weights.zero_()
        self.weights[:k] = w.to(self.weights.dtype)
        self.means[:k] = mu.to(self.means.dtype)
        self.scale_tril[:k] = tril.to(self.scale_tril.dtype)
        self.fitted.fill_(pushed)

    # -- the prior interface (genfw.contracts.Prior) --
    @torch.no_grad()
    def sample(
        self, n: int, *, device: torch.device | str, generator: torch.Generator | None = None
    ) -> Tensor:
        self.refit()
        w, mu, tril = (t.to(device) for t in (self.weights, self.means, self.scale_tril))
        c = torch.multinomial(w, n, replacement=True, generator=generator)  # (n,)
        eps = torch.randn(n, self.dim, 1, device=device, generator=generator)
        return mu[c] + (tril[c] @ eps).squeeze(2)

    def log_prob(self, z: Tensor) -> Tensor:
        self.refit()
        w, mu, tril = (
            t.to(device=z.device, dtype=z.dtype) for t in (self.weights, self.means, self.scale_tril)
        )
        return torch.logsumexp(gaussian_log_densities(z, mu, tril) + w.log(), dim=1)

    @property
    def variance(self) -> float:
        """Per-coordinate variance of the mixture, averaged over coordinates."""
        self.refit()
        w, mu, tril = self.weights.double(), self.means.double(), self.scale_tril.double()
        cov = tril @ tril.transpose(1, 2)
        second = (w.view(-1, 1) * (torch.diagonal(cov, dim1=1, dim2=2) + mu.square())).sum(0)
        mean = (w.view(-1, 1) * mu).sum(0)
        return float((second - mean.square()).mean())

    def extra_repr(self) -> str:
        return f"dim={self.dim}, components={self.components}, capacity={self.capacity}"


def add_expost_density(variant: Any, model: Model, options: Any) -> ExPostGMM:
    """Give ``model`` the ex-post mixture as module ``density`` (checkpointed and exported with the
    decoder) and make it the model's and the variant's prior."""
    density = ExPostGMM(options.latent_dim, options.gmm_components, options.gmm_codes)
    model.modules["density"] = density
    model.export = (*model.export, "density")
    model.prior = variant.prior = density
    return density


def sample_expost(variant: Any, m: Modules, n: int) -> Tensor:
    """``n`` samples: codes from the ex-post mixture ``m.density`` through the decoder."""
    return variant.decode(m, m.density.sample(n, device=device_of(m.generator)))
