"""beta-TC-VAE (Chen, Li, Grosse & Duvenaud 2018, "Isolating Sources of Disentanglement in VAEs").

The VAE's KL term, averaged over the data, splits into three (the paper's eq. 2)::

    E_p(n) KL(q(z|n) || p(z)) = KL(q(z, n) || q(z) p(n))            index-code mutual information
                              + KL(q(z) || prod_j q(z_j))           total correlation
                              + sum_j KL(q(z_j) || p(z_j))          dimension-wise KL

and one phase minimises ``E[-log p(x|z)] + alpha MI + beta TC + gamma DWKL``, each term estimated
at the reparameterised sample ``z_i ~ q(z|x_i)`` of each example ``i`` of the batch, as the
authors' code (rtqichen/beta-tcvae, ``vae_quant.py``, ``VAE.elbo``)::

    MI_i   = log q(z_i|x_i) - log q(z_i)
    TC_i   = log q(z_i) - sum_j log q(z_ij)
    DWKL_i = sum_j log q(z_ij) - log p(z_i)

The aggregate posterior ``q(z) = 1/N sum_n q(z|x_n)`` (N the number of training examples, taken
from the data) and its marginals ``q(z_j)`` are estimated from the batch ``x_1..x_B``:

- ``estimator: mws``, minibatch-weighted sampling (the paper's eq. 5, the code's default):
  ``log q(z_i) ~ logsumexp_k log q(z_i|x_k) - log(N B)``, and per coordinate the same with
  ``log q(z_ij|x_k)``;
- ``estimator: mss``, minibatch-stratified sampling (the paper's appendix C.2, the code's
  ``--mss``): ``log q(z_i) ~ logsumexp_k (log W_ik + log q(z_i|x_k))`` with, for ``M = B - 1``,
  ``W_ii = 1/N``, ``W_ik = (N - M)/(N M)`` for one other ``k = i + 1 (mod B)``, ``W_ik = 1/M``
  for the rest, so every row sums to 1. Departure: the authors' ``_log_importance_weight_matrix``
  fills columns 0 and 1 instead of the diagonal and the next entry (``W.view(-1)[::M+1]`` strides
  by a whole row; the open pull request rtqichen/beta-tcvae#1 says the same); here it is the
  paper's matrix.

With ``alpha = beta = gamma = 1`` the three estimates telescope to ``log q(z_i|x_i) - log p(z_i)``,
the single-sample KL whose expectation is the VAE's: the objective is the negative ELBO whatever
the estimator. Defaults: ``alpha = gamma = 1`` and ``beta = 6`` (the authors' README command,
``vae_quant.py --beta 6 --tcvae``), Adam at ``1e-3`` and 10 latent coordinates (their defaults).
The three terms are logged per example (``mutual_information``, ``total_correlation``,
``dimension_kl``) beside ``kl`` (the closed-form KL, as ``vae``) and, with a likelihood loss,
``elbo``; ``encode``, ``log_weights`` and the metric's ELBO and IWAE bound are the VAE's.

The prior is the ``prior`` slot: ``normal`` (the paper's), or any prior with a density everywhere;
``DWKL`` is a sum of per-coordinate KLs only for a prior that factorises over coordinates.
"""

from __future__ import annotations

import math
from typing import ClassVar

import attrs
import torch
from torch import Tensor

import genfw
from genfw import Batch, BuildContext, GenfwError, Model, Modules, PhaseOutput
from genfw import validators as check
from genfw.contracts import PhaseSpec
from genfw_plugins._autoencoder import build_prior
from genfw_plugins.vae import VAE, gaussian_log_density

_LOG_2PI = math.log(2 * math.pi)


@attrs.define
class TCVAEOptions:
    latent_dim: int = attrs.field(default=10, validator=check.at_least(1))
    alpha: float = attrs.field(default=1.0, validator=check.non_negative)  # index-code mutual information
    beta: float = attrs.field(default=6.0, validator=check.non_negative)  # total correlation
    gamma: float = attrs.field(default=1.0, validator=check.non_negative)  # dimension-wise KL
    # mws: minibatch-weighted sampling (the paper's); mss: minibatch-stratified sampling.
    estimator: str = attrs.field(default="mws", validator=check.one_of("mws", "mss"))
    # N of q(z) = 1/N sum_n q(z|x_n); 0: the number of training examples of the run's data.
    dataset_size: int = attrs.field(default=0, validator=check.at_least(0))
    lr: float = attrs.field(default=1e-3, validator=check.positive)


def pairwise_log_density(z: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """``log q(z_ij | x_k)`` for every pair of examples: ``z, mu, logvar (B, d)`` -> ``(B, B, d)``
    with entry ``[i, k, j]`` the density of coordinate ``j`` of code ``i`` under the posterior
    of example ``k``."""
    zi, mk, lk = z.unsqueeze(1), mu.unsqueeze(0), logvar.unsqueeze(0)
    return -0.5 * ((zi - mk).square() / lk.exp() + lk + _LOG_2PI)


def stratified_log_weights(batch: int, size: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """``log W (B, B)`` of minibatch-stratified sampling (module doc), ``M = B - 1``:
    ``1/N`` on the diagonal, ``(N - M)/(N M)`` at ``(i, i + 1 mod B)``, ``1/M`` elsewhere."""
    m = batch - 1
    w = torch.full((batch, batch), 1.0 / m, dtype=torch.float64)
    idx = torch.arange(batch)
    w[idx, (idx + 1) % batch] = (size - m) / (size * m)
    w[idx, idx] = 1.0 / size
    return w.log().to(dtype)


def aggregate_log_densities(
    z: Tensor, mu: Tensor, logvar: Tensor, size: int, estimator: str = "mws"
) -> tuple[Tensor, Tensor]:
    """``(log q(z_i), sum_j log q(z_ij))``, each ``(B,)``, estimated from the batch's posteriors
    with ``estimator`` ``"mws"`` or ``"mss"`` for a data set of ``size`` examples (module doc)."""
    b = z.shape[0]
    pair = pairwise_log_density(z, mu, logvar)  # (B, B, d)
    if estimator == "mws":
        log_nb = math.log(size * b)
        log_qz = torch.logsumexp(pair.sum(2), dim=1) - log_nb
        log_prod = (torch.logsumexp(pair, dim=1) - log_nb).sum(1)
        return log_qz, log_prod
    log_w = stratified_log_weights(b, size, z.dtype).to(z.device)  # (B, B)
    log_qz = torch.logsumexp(log_w + pair.sum(2), dim=1)
    log_prod = torch.logsumexp(log_w.unsqueeze(2) + pair, dim=1).sum(1)
    return log_qz, log_prod


class TCVAE(VAE):
    """beta-TC-VAE: the KL split into mutual information, total correlation and dimension-wise KL."""

    phases: ClassVar[dict[str, PhaseSpec]] = {
        "autoencoder": PhaseSpec(
            {"x", "x_hat", "z", "mu", "logvar"},
            help="the encoder and decoder minimise reconstruction + alpha MI + beta TC + gamma "
            "dimension-wise KL (minibatch estimates of q(z))",
        )
    }
    options: TCVAEOptions

    def build(self, ctx: BuildContext) -> Model:
        # N of the estimator: the option, else the training examples (0 where the model is rebuilt
        # without its data, for sampling: the phase, which needs it, does not run then).
        self.size = self.options.dataset_size or ctx.data.size
        prior = build_prior(ctx, self.options.latent_dim)
        if not (hasattr(prior, "kl_from_normal") or getattr(prior, "full_support", False)):
            raise GenfwError(
                f"prior '{ctx['prior'].name}' cannot be used with tcvae: it has no density on all of the "
                f"Gaussian posterior's support, so log p(z) and the KL are infinite; tcvae takes priors "
                f"with a density everywhere: normal, mog"
            )
        return super().build(ctx)

    def step(self, batch: Batch, m: Modules) -> PhaseOutput:
        o = self.options
        b = len(batch)
        if self.size < 1:
            raise GenfwError(
                "tcvae needs the number of training examples N of q(z) = 1/N sum q(z|x_n): give "
                "--plugin.dataset_size N, or train it on a data set (N is then taken from it)"
            )
        if o.estimator == "mss" and (b < 2 or self.size < b - 1):
            raise GenfwError(
                f"tcvae estimator mss needs a batch of at least 2 and at most N + 1 = {self.size + 1} "
                f"examples, got {b}; use a batch size in that range, or --plugin.estimator mws"
            )
        mu, logvar = self.posterior(m, batch.x)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)  # reparameterisation
        x_hat = m.generator(z)
        rec = self.loss(x_hat, batch.x)  # (B,) = -log p(x|z)
        log_qz_x = gaussian_log_density(z, mu, logvar)  # (B,)
        log_qz, log_prod = aggregate_log_densities(z, mu, logvar, self.size, o.estimator)
        log_pz = self.prior.log_prob(z)
        mi, tc, dwkl = log_qz_x - log_qz, log_qz - log_prod, log_prod - log_pz
        loss = (rec + o.alpha * mi + o.beta * tc + o.gamma * dwkl).mean()
        with torch.no_grad():
            kl = self.kl(mu, logvar, z)
        rec = rec.detach()
        logs = {
            "reconstruction": rec,
            "kl": kl,
            "mutual_information": mi.detach(),
            "total_correlation": tc.detach(),
            "dimension_kl": dwkl.detach(),
        }
        if self.likelihood:  # an ELBO in nats only where the loss is a normalised -log p(x|z)
            logs["elbo"] = -(rec + kl)
        return PhaseOutput(
            loss, context={"x": batch.x, "x_hat": x_hat, "z": z, "mu": mu, "logvar": logvar}, logs=logs
        )


@genfw.hookimpl
def genfw_register_variants(register):
    register(
        "tcvae",
        TCVAE,
        options=TCVAEOptions,
        help="beta-TC-VAE: KL split into MI, total correlation, dimension-wise KL (alpha, beta, gamma)",
    )
