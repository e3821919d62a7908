"""The importance-weighted autoencoder (Burda et al. 2016), trained on its k-sample bound.

One phase maximises, per example,

    L_k(x) = log (1/k) sum_i w_i,   w_i = p(x | z_i) p(z_i) / q(z_i | x),   z_i ~ q(z | x),

with the VAE's Gaussian encoder and reparameterisation ``z_i = mu + sigma * eps_i``; the phase
minimises ``-mean_b L_k(x_b)``. ``k = 1`` is the VAE's single-sample ELBO (the Monte Carlo KL
``log q(z|x) - log p(z)`` at the sampled ``z``, not the closed form). Any prior with a
``log_prob`` works (``normal``, ``mog``, ``vamp``, a third party's ``laplace``).

Gradient estimators (``estimator``):

- ``iwae``: the paper's, the reparameterised gradient of ``L_k``: ``sum_i w~_i grad log w_i``
  with the normalised weights ``w~_i = w_i / sum_j w_j`` (Burda et al. 2016).
- ``dreg``: doubly reparameterised (Tucker et al. 2019, IWAE-DReG) for the encoder:
  ``sum_i w~_i^2 (d log w_i / d z_i) (d z_i / d phi)``, where ``log w_i`` is taken with ``q``'s
  parameters held fixed (only the path through ``z_i``); the decoder's (and the prior's)
  parameters get the IWAE gradient ``sum_i w~_i grad log p(x, z_i)`` at fixed ``z_i``. Unbiased for
  the same gradient as ``iwae``; the encoder's signal-to-noise ratio does not shrink as ``k``
  grows, as IWAE's does (Rainforth et al. 2018), and the estimate is exactly 0 where ``q`` is the
  true posterior. With a prior built from the encoder (``vamp``) the
  encoder also gets the prior's part, as a model parameter: ``sum_i w~_i grad log p(z_i)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import attrs
import torch
from torch import Tensor

import genfw
from genfw import Batch, Modules, PhaseOutput
from genfw import validators as check
from genfw.contracts import PhaseSpec
from genfw_plugins.metrics.autoencoder import iwae_bound
from genfw_plugins.vae import VAE, gaussian_log_density

__all__ = ["IWAE", "IWAEOptions", "iwae_objective"]


@attrs.define
class IWAEOptions:
    latent_dim: int = attrs.field(default=16, validator=check.at_least(1))
    # Importance samples per example in training (Burda et al. compare k = 1, 5, 50).
    k: int = attrs.field(default=5, validator=check.at_least(1))
    # The encoder's gradient estimator: iwae (the paper's) or dreg (Tucker et al. 2019).
    estimator: str = attrs.field(default="iwae", validator=check.one_of("iwae", "dreg"))
    lr: float = attrs.field(default=1e-3, validator=check.positive)


def iwae_objective(
    mu: Tensor,
    logvar: Tensor,
    eps: Tensor,
    log_joint: Callable[[Tensor], Tensor],
    estimator: str = "iwae",
) -> tuple[Tensor, Tensor]:
    """``(-L_k (B,), log-weights (k, B))`` for a Gaussian posterior ``mu, logvar (B, d)``, noise
    ``eps (k, B, d)`` and ``log_joint(z (k, B, d)) -> log p(x, z) (k, B)``.

    The value is ``-L_k`` for both estimators; its gradient is the estimator's. ``dreg`` builds
    it as ``-(L_k + sum_i g_i . z_i - stop(sum_i g_i . z_i))``, where ``L_k`` is computed at
    ``z_i`` held fixed with ``q``'s parameters stopped (so it gives the model's parameters
    ``sum_i w~_i grad log p(x, z_i)`` and the encoder nothing) and ``g_i = w~_i^2 d log w_i / d z_i``
    (a constant), so the encoder gets ``sum_i g_i dz_i/dphi`` through ``z_i = mu + sigma eps_i``.
    Without autograd (``torch.no_grad``) both give the value alone.
    """
    z = mu + torch.exp(0.5 * logvar) * eps  # (k, B, d)
    if estimator == "iwae" or not torch.is_grad_enabled():
        log_w = log_joint(z) - gaussian_log_density(z, mu, logvar)  # (k, B)
        return -iwae_bound(log_w), log_w
    if estimator != "dreg":
        raise ValueError(f"estimator must be 'iwae' or 'dreg', got {estimator!r}")
    z_fixed = z.detach().requires_grad_()
    log_w = log_joint(z_fixed) - gaussian_log_density(z_fixed, mu.detach(), logvar.detach())
    w = torch.softmax(log_w.detach(), dim=0)  # normalised weights w~ (k, B)
    (g,) = torch.autograd.grad((w.square() * log_w).sum(), z_fixed, retain_graph=True)  # (k, B, d)
    path = (g * z).sum(dim=(0, 2))  # (B,): its gradient is the encoder's DReG term, its value dropped
    return -(iwae_bound(log_w) + (path - path.detach())), log_w


class IWAE(VAE):
    """Importance-weighted autoencoder: trained on the k-sample bound, iwae or dreg gradients."""

    phases: ClassVar[dict[str, PhaseSpec]] = {
        "autoencoder": PhaseSpec(
            {"x", "x_hat", "z", "mu", "logvar"},
            help="the encoder and decoder maximise log (1/k) sum_i p(x, z_i) / q(z_i|x) (x_hat, z: "
            "those of the first of the k samples)",
        )
    }
    options: IWAEOptions

    def step(self, batch: Batch, m: Modules) -> PhaseOutput:
        x, o = batch.x, self.options
        mu, logvar = self.posterior(m, x)
        eps = torch.randn(o.k, *mu.shape, device=mu.device, dtype=mu.dtype)
        parts: dict[str, Tensor] = {}

        def log_joint(z: Tensor) -> Tensor:
            log_px, log_pz, x_hat = self.log_joint(m, x, z)
            parts.update(log_px=log_px, log_pz=log_pz, x_hat=x_hat, z=z)
            return log_px + log_pz

        neg_bound, log_w = iwae_objective(mu, logvar, eps, log_joint, o.estimator)
        loss = neg_bound.mean()
        log_w, log_px = log_w.detach(), parts["log_px"].detach()
        w = torch.softmax(log_w, dim=0)
        logs = {
            "reconstruction": -log_px.mean(0),  # -log p(x|z_i), averaged over the k samples
            "kl": (log_px - log_w).mean(0),  # log q(z_i|x) - log p(z_i), averaged: Monte Carlo KL
            "effective_samples": 1.0 / w.square().sum(0),  # (sum w~)^2 / sum w~^2, in [1, k]
        }
        if self.likelihood:  # bounds in nats only where the loss is a normalised -log p(x|z)
            logs["elbo"] = log_w.mean(0)
            logs["iwae_bound"] = -neg_bound.detach()
        z0 = mu + torch.exp(0.5 * logvar) * eps[0]  # the first sample, with its graph to the encoder
        x_hat = parts["x_hat"][: x.shape[0]]
        return PhaseOutput(
            loss, context={"x": x, "x_hat": x_hat, "z": z0, "mu": mu, "logvar": logvar}, logs=logs
        )


@genfw.hookimpl
def genfw_register_variants(register):
    register(
        "iwae",
        IWAE,
        options=IWAEOptions,
        help="importance-weighted autoencoder (k samples, iwae or dreg gradients)",
    )
