"""The variational autoencoder (Kingma & Welling 2014), with beta-VAE's weight (Higgins et al. 2017).

One phase minimises the negative ELBO per example,
``-E_q log p(x|z) + beta * KL(q(z|x) || p(z))``, with a Gaussian encoder
``q(z|x) = N(mu, diag(exp(logvar)))``, the reparameterisation ``z = mu + sigma * eps`` and the
prior's closed-form KL (``kl_from_normal``: ``normal``). A prior with a positive density
everywhere but no closed form (``mog``) gets the single-sample Monte Carlo KL
``log q(z|x) - log p(z)`` at the reparameterised ``z`` (unbiased); so does ``vamp`` (the
VampPrior, a mixture of the encoder's posteriors of learned pseudo-inputs, which has no closed-form
KL), whose pseudo-inputs are the module ``prior``, trained in the same phase through its
``log p(z)``. A prior with an atom or a
bounded support (``spike_slab``, ``categorical``, ``uniform``) makes the KL from a Gaussian
infinite: it is refused, naming the variants that can use it.

``-log p(x|z)`` is the reconstruction loss of the ``loss`` slot: ``gaussian`` (default) or
``bernoulli`` (on decoder logits: the decoder's default ``output: auto`` is then linear). A cost
that is not a normalised likelihood (``mse``, ``l1``) trains, but the ELBO and log-likelihood
(the training log's ``elbo``, the ``autoencoding`` metric's ``elbo`` and ``log_likelihood``) are
left out, with a one-line note: they would miss its normalising constant (``mse`` is
``-log N(x; x_hat, I/2)`` less ``D/2 log pi``, 36.6 nats on the 64 pixels of digits).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import attrs
import torch
from torch import Tensor

import genfw
from genfw import Batch, BuildContext, GenfwError, Model, Modules, Optim, PhaseOutput, Slot, device_of
from genfw import validators as check
from genfw.contracts import PhaseSpec, Players
from genfw_plugins._autoencoder import AutoencoderBase, build_prior, decoded_mean, needs_encoder

__all__ = ["VAE", "VAEOptions", "decoded_mean", "gaussian_log_density", "refuse_prior"]

_LOG_2PI = math.log(2 * math.pi)


@attrs.define
class VAEOptions:
    latent_dim: int = attrs.field(default=16, validator=check.at_least(1))
    beta: float = attrs.field(default=1.0, validator=check.non_negative)  # 1: the ELBO; beta-VAE otherwise
    lr: float = attrs.field(default=1e-3, validator=check.positive)


def gaussian_log_density(z: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """``log N(z; mu, diag exp(logvar))`` summed over the last dimension."""
    return -0.5 * ((z - mu).square() / logvar.exp() + logvar + _LOG_2PI).sum(-1)


def refuse_prior(name: str, prior: Any, variant: str = "vae") -> None:
    """One-line error for a prior a Gaussian posterior has no finite KL from (``variant``: the
    variant refusing it, ``vae`` or ``iwae``)."""
    sparse = hasattr(prior, "kl_from_spike_slab")
    fit = "vsc, aae, wae" if sparse else "aae, wae"
    why = (
        "its point mass at 0 gets no posterior mass, so KL(q || p) is infinite"
        if sparse
        else "it has no density on all of the Gaussian posterior's support, so KL(q || p) is infinite"
    )
    raise GenfwError(
        f"prior '{name}' cannot be used with {variant}: {why}; variants that can use it: {fit} "
        f"({variant} takes priors with a density everywhere: normal, mog, vamp)"
    )


class VAE(AutoencoderBase):
    """Variational autoencoder: Gaussian encoder, reparameterisation, closed-form KL."""

    slots: ClassVar[dict[str, Slot]] = {
        "encoder": Slot("encoder", "mlp", help="x -> (mu, logvar)"),
        "generator": Slot("generator", "mlp", help="the decoder, z -> x"),
        "prior": Slot("prior", "normal"),
        "loss": Slot("loss", "gaussian", role="reconstruction", help="-log p(x|z) per example"),
    }
    phases: ClassVar[dict[str, PhaseSpec]] = {
        "autoencoder": PhaseSpec(
            {"x", "x_hat", "z", "mu", "logvar"},
            help="the encoder and decoder minimise reconstruction + beta KL(q(z|x) || p(z))",
        )
    }
    # The module "prior" exists with a prior built from the encoder (vamp): its pseudo-inputs.
    players: ClassVar[Players] = Players(generators="generator", encoders="encoder", priors="prior")
    options: VAEOptions

    def build(self, ctx: BuildContext) -> Model:
        o = self.options
        self.prior = build_prior(ctx, o.latent_dim, gaussian_encoder=True)
        self.closed_form = hasattr(self.prior, "kl_from_normal")
        if not self.closed_form and not getattr(self.prior, "full_support", False):
            refuse_prior(ctx["prior"].name, self.prior, type(self).__name__.lower())
        model = self.single_phase_model(
            ctx,
            2 * o.latent_dim,
            Optim("adam", o.lr, (0.9, 0.999)),
            log_weights=self.log_weights,
        )
        if needs_encoder(self.prior):
            # Metrics and pictures sample the prior alone: through the model's (plain) modules.
            self.prior.bind(lambda x: self.posterior(Modules(model.modules), x))
        return model

    def posterior(self, m: Modules, x: Tensor) -> tuple[Tensor, Tensor]:
        mu, logvar = m.encoder(x).chunk(2, dim=1)  # (B, d) each
        return mu, logvar

    def code(self, m: Modules, x: Tensor) -> Tensor:
        return self.posterior(m, x)[0]  # the posterior mean

    def prior_posteriors(self, m: Modules) -> tuple[Tensor, Tensor] | None:
        """``(mu, logvar)`` ``(K, d)`` of a prior built from the encoder (vamp): its inputs
        encoded through the modules ``m`` (those a phase is given); ``None`` for other priors."""
        if not needs_encoder(self.prior):
            return None
        return self.posterior(m, m.prior())

    def log_prior(self, m: Modules | None, z: Tensor) -> Tensor:
        """``log p(z)`` over the last dimension, with the modules ``m`` where the prior is built
        from the encoder (its gradient then reaches the encoder and the pseudo-inputs)."""
        encoded = None if m is None else self.prior_posteriors(m)
        return self.prior.log_prob(z) if encoded is None else self.prior.log_prob(z, encoded=encoded)

    def sample(self, m: Modules, n: int, y: Tensor | None = None) -> Tensor:
        encoded = self.prior_posteriors(m)
        if encoded is None:
            return super().sample(m, n, y)
        return self.decode(m, self.prior.sample(n, device=device_of(m.generator), encoded=encoded))

    def kl(self, mu: Tensor, logvar: Tensor, z: Tensor, m: Modules | None = None) -> Tensor:
        """KL(q(z|x) || p(z)) per example: closed form, or ``log q(z|x) - log p(z)`` at ``z``."""
        if self.closed_form:
            return self.prior.kl_from_normal(mu, logvar)
        return gaussian_log_density(z, mu, logvar) - self.log_prior(m, z)

    def step(self, batch: Batch, m: Modules) -> PhaseOutput:
        mu, logvar = self.posterior(m, batch.x)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)  # reparameterisation
        x_hat = m.generator(z)
        rec = self.loss(x_hat, batch.x)  # (B,) = -log p(x|z)
        kl = self.kl(mu, logvar, z, m)  # (B,)
        loss = torch.add(rec, kl, alpha=self.options.beta).mean()  # E[rec + beta KL], one op
        rec, kl = rec.detach(), kl.detach()  # the logs need no graph
        logs = {"reconstruction": rec, "kl": kl}
        if self.likelihood:  # an ELBO in nats only where the loss is a normalised -log p(x|z)
            logs["elbo"] = (rec + kl).neg_()
        return PhaseOutput(
            loss, context={"x": batch.x, "x_hat": x_hat, "z": z, "mu": mu, "logvar": logvar}, logs=logs
        )

    def log_weights(self, m: Modules, x: Tensor, k: int) -> Tensor:
        """Importance log-weights ``log p(x|z_i) + log p(z_i) - log q(z_i|x)``, ``z_i ~ q(z|x)``:
        ``(k, B)``. Their mean is an ELBO estimate; ``logsumexp - log k`` the IWAE bound."""
        mu, logvar = self.posterior(m, x)
        z = mu + torch.exp(0.5 * logvar) * torch.randn(k, *mu.shape, device=mu.device)  # (k, B, d)
        log_px, log_pz, _ = self.log_joint(m, x, z)
        return log_px + log_pz - gaussian_log_density(z, mu, logvar)

    def log_joint(self, m: Modules, x: Tensor, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``log p(x|z_i)`` and ``log p(z_i)``, each ``(k, B)``, for codes ``z (k, B, d)`` of the
        batch ``x (B, *shape)``, and the decoder's outputs ``(k B, *shape)``."""
        k = z.shape[0]
        x_hat = m.generator(z.flatten(0, 1))
        log_px = -self.loss(x_hat, x.repeat(k, *([1] * (x.dim() - 1)))).view(k, -1)
        log_pz = self.log_prior(m, z.flatten(0, 1)).view(k, -1)
        return log_px, log_pz, x_hat


@genfw.hookimpl
def genfw_register_variants(register):
    register("vae", VAE, options=VAEOptions, help="variational autoencoder (beta option)")
