"""Variational sparse coding (Tonolini, Jensen & Murray-Smith 2020): the VAE route to sparse codes.

The prior is the spike and slab ``p(z) = prod_j (alpha N(z_j; 0, 1) + (1 - alpha) delta(z_j))``
and so is the posterior, ``q(z|x) = prod_j (gamma_j N(z_j; mu_j, sigma_j^2) + (1 - gamma_j)
delta(z_j))``, with ``(mu, log sigma^2, gamma)`` from the encoder. One phase minimises the
negative ELBO ``-E_q log p(x|z) + beta * KL(q || p)`` with the closed-form KL of the paper's eq. 6
(``SpikeSlabPrior.kl_from_spike_slab``; alpha is the prior's ``--prior.alpha``). The prior must
keep its spike, ``0 < alpha < 1``: with ``alpha = 1`` (the normal prior) the posterior's atom at 0,
where ``gamma < 1`` puts mass, has prior mass 0 and the KL is infinite, so build refuses it.

Sampling ``z`` differentiably follows the paper (sec. 3.2): ``z = s * (mu + sigma * eps)`` with
``eps ~ N(0, 1)`` and the spike selector relaxed to ``s = sigmoid(c (eta + gamma - 1))``,
``eta ~ U(0, 1)``, which tends to ``Bernoulli(gamma)`` as the sharpness ``c`` grows (``c = 50`` in
the paper's code). ``gamma = exp(min(h, 0))`` from the encoder's third head, clamped to
``[1e-6, 1 - 1e-6]`` so the KL stays finite, as in the authors' code.

The code used to reconstruct (``encode``) is the posterior's most probable configuration per
coordinate: ``mu_j`` where ``gamma_j >= 0.5``, exactly 0 elsewhere; sparsity is therefore
measured on exact zeros. Likelihood estimates (``log_weights``) draw the *exact* mixture
posterior (a Bernoulli spike), whose density and the prior's are both taken with respect to
Lebesgue measure plus a unit atom at 0, so their ratio is a valid importance weight.

The paper's full model also learns the prior from pseudo-inputs (a VampPrior-like "recycling"
of the prior) and warms up ``c``; neither is part of this variant: the prior here is the fixed
spike and slab of the lecture.

A reconstruction loss that is not a normalised likelihood (``mse``, ``l1``) trains, but leaves
out the ELBO and log-likelihood, as in ``vae``.
"""

from __future__ import annotations

import math
from typing import ClassVar

import attrs
import torch
from torch import Tensor

import genfw
from genfw import Batch, BuildContext, GenfwError, Model, Modules, Optim, PhaseOutput, Slot
from genfw import validators as check
from genfw_plugins._autoencoder import AutoencoderBase, build_prior

_GAMMA_EPS = 1e-6


@attrs.define
class VSCOptions:
    latent_dim: int = attrs.field(default=16, validator=check.at_least(1))
    beta: float = attrs.field(default=1.0, validator=check.non_negative)
    lr: float = attrs.field(default=1e-3, validator=check.positive)
    c: float = attrs.field(default=50.0, validator=check.positive)  # sharpness of the relaxed spike


def spike_slab_log_density(z: Tensor, mu: Tensor, logvar: Tensor, gamma: Tensor) -> Tensor:
    """``log q(z)`` of the spike-and-slab posterior w.r.t. Lebesgue + a unit atom at 0, summed over
    the last dimension: ``log(1 - gamma)`` where ``z == 0``, ``log gamma + log N(z; mu, sigma^2)``
    elsewhere."""
    slab = torch.log(gamma) - 0.5 * ((z - mu).square() / logvar.exp() + logvar + math.log(2 * math.pi))
    return torch.where(z == 0, torch.log1p(-gamma), slab).sum(-1)


class VSC(AutoencoderBase):
    """Variational sparse coding: spike-and-slab posterior and prior, closed-form KL."""

    slots: ClassVar[dict[str, Slot]] = {
        "encoder": Slot("encoder", "mlp", help="x -> (mu, logvar, spike logit)"),
        "generator": Slot("generator", "mlp", help="the decoder, z -> x"),
        "prior": Slot("prior", "spike_slab", help="spike and slab (alpha = prior sparsity)"),
        "loss": Slot("loss", "gaussian", role="reconstruction", help="-log p(x|z) per example"),
    }
    options: VSCOptions

    def build(self, ctx: BuildContext) -> Model:
        o = self.options
        self.prior = build_prior(ctx, o.latent_dim)
        if not hasattr(self.prior, "kl_from_spike_slab"):
            raise GenfwError(
                f"vsc needs a spike-and-slab prior (its KL is in closed form only there); got prior "
                f"'{ctx['prior'].name}': use --prior spike_slab, or vae/aae/wae for other priors"
            )
        if not self.prior.alpha < 1.0:
            raise GenfwError(
                f"vsc needs a spike in its prior, --prior.alpha < 1 (got {self.prior.alpha:g}): with "
                f"alpha = 1 the prior has no mass at 0, where the posterior puts some, so KL(q || p) is "
                f"infinite; valid: 0 < alpha < 1 (default 0.5); alpha = 1 is the normal prior: use vae"
            )
        return self.single_phase_model(
            ctx,
            3 * o.latent_dim,
            Optim("adam", o.lr, (0.9, 0.999)),
            frozenset({"x", "x_hat", "z", "mu", "logvar", "gamma"}),
            log_weights=self.log_weights,
        )

    def posterior(self, m: Modules, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(mu, logvar, gamma)``, each ``(B, d)``; ``gamma`` is the slab probability."""
        mu, logvar, h = m.encoder(x).chunk(3, dim=1)
        gamma = torch.exp(-torch.relu(-h)).clamp(_GAMMA_EPS, 1.0 - _GAMMA_EPS)
        return mu, logvar, gamma

    def code(self, m: Modules, x: Tensor) -> Tensor:
        mu, _, gamma = self.posterior(m, x)
        return torch.where(gamma >= 0.5, mu, torch.zeros_like(mu))

    def step(self, batch: Batch, m: Modules) -> PhaseOutput:
        mu, logvar, gamma = self.posterior(m, batch.x)
        slab = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        eta = torch.rand_like(mu)
        z = torch.sigmoid(self.options.c * (eta + gamma - 1.0)) * slab  # relaxed spike selection
        x_hat = m.generator(z)
        rec = self.loss(x_hat, batch.x)  # (B,)
        kl = self.prior.kl_from_spike_slab(mu, logvar, gamma)  # (B,)
        loss = (rec + self.options.beta * kl).mean()
        logs = {"reconstruction": rec.detach(), "kl": kl.detach()}
        if self.likelihood:  # an ELBO in nats only where the loss is a normalised -log p(x|z)
            logs["elbo"] = -(rec + kl).detach()
        logs["slab_probability"] = gamma.detach()
        return PhaseOutput(
            loss,
            context={"x": batch.x, "x_hat": x_hat, "z": z, "mu": mu, "logvar": logvar, "gamma": gamma},
            logs=logs,
        )

    def log_weights(self, m: Modules, x: Tensor, k: int) -> Tensor:
        """``(k, B)`` importance log-weights with ``z_i`` drawn from the exact mixture posterior."""
        mu, logvar, gamma = self.posterior(m, x)
        shape = (k, *mu.shape)
        slab = mu + torch.exp(0.5 * logvar) * torch.randn(shape, device=mu.device)
        keep = torch.rand(shape, device=mu.device) < gamma
        z = torch.where(keep, slab, torch.zeros_like(slab))  # (k, B, d)
        return self.log_weights_at(m, x, z, (mu, logvar, gamma))

    def log_weights_at(
        self, m: Modules, x: Tensor, z: Tensor, posterior: tuple[Tensor, Tensor, Tensor] | None = None
    ) -> Tensor:
        """``log p(x|z) + log p(z) - log q(z|x)`` at given codes ``z (k, B, d)`` -> ``(k, B)``; the
        densities of ``z`` are w.r.t. Lebesgue + a unit atom at 0 (``z_j == 0`` is the spike).
        ``posterior`` is ``self.posterior(m, x)`` when already computed."""
        mu, logvar, gamma = self.posterior(m, x) if posterior is None else posterior
        k = z.shape[0]
        x_hat = m.generator(z.flatten(0, 1))
        log_px = -self.loss(x_hat, x.repeat(k, *([1] * (x.dim() - 1)))).view(k, -1)
        log_pz = self.prior.log_prob(z.flatten(0, 1)).view(k, -1)
        return log_px + log_pz - spike_slab_log_density(z, mu, logvar, gamma)


@genfw.hookimpl
def genfw_register_variants(register):
    register("vsc", VSC, options=VSCOptions, help="variational sparse coding (spike-and-slab VAE)")
