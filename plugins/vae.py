"""The variational autoencoder (Kingma & Welling 2014), with beta-VAE's weight (Higgins et al. 2017).

One phase minimises the negative ELBO per example,
``-E_q log p(x|z) + beta * KL(q(z|x) || p(z))``, with a Gaussian encoder
``q(z|x) = N(mu, diag(exp(logvar)))``, the reparameterisation ``z = mu + sigma * eps`` and the
prior's closed-form KL (``kl_from_normal``). ``-log p(x|z)`` is the reconstruction loss of the
``loss`` slot: ``gaussian`` (default) or ``bernoulli`` (then the decoder must output logits:
``--generator.output none``).
"""

from __future__ import annotations

from typing import Any, ClassVar

import attrs
import torch
from torch import Tensor

import genfw
from genfw import Batch, BuildContext, GenfwError, Model, Modules, Optim, Phase, PhaseOutput, Slot, device_of
from genfw import validators as check


@attrs.define
class VAEOptions:
    latent_dim: int = attrs.field(default=16, validator=check.at_least(1))
    beta: float = attrs.field(default=1.0, validator=check.non_negative)  # 1: the ELBO; beta-VAE otherwise
    lr: float = attrs.field(default=1e-3, validator=check.positive)


def decoded_mean(loss: Any, x_hat: Tensor) -> Tensor:
    """Map a decoder output to data space with the likelihood's mean (logits -> [-1, 1])."""
    mean = getattr(loss, "mean", None)
    return mean(x_hat) if mean is not None else x_hat


class VAE:
    """Variational autoencoder: Gaussian encoder, reparameterisation, closed-form KL."""

    slots: ClassVar[dict[str, Slot]] = {
        "encoder": Slot("encoder", "mlp", help="x -> (mu, logvar)"),
        "generator": Slot("generator", "mlp", help="the decoder, z -> x"),
        "prior": Slot("prior", "normal"),
        "loss": Slot("loss", "gaussian", role="reconstruction", help="-log p(x|z) per example"),
    }
    phases: ClassVar[tuple[str, ...]] = ("autoencoder",)
    regularisers: ClassVar[dict[str, dict[str, Any]]] = {}

    def __init__(self, options: VAEOptions):
        self.options = options

    def build(self, ctx: BuildContext) -> Model:
        o = self.options
        self.prior = ctx["prior"].build(dim=o.latent_dim)
        if not hasattr(self.prior, "kl_from_normal"):
            raise GenfwError(
                f"prior '{ctx['prior'].name}' has no closed-form KL from the VAE's Gaussian posterior; "
                f"use it with a variant that compares code distributions (wae), or choose a prior "
                f"with one for vae (normal)"
            )
        encoder = ctx["encoder"].build(in_shape=ctx.data.shape, out_dim=2 * o.latent_dim, num_classes=0)
        decoder = ctx["generator"].build(latent_dim=o.latent_dim, out_shape=ctx.data.shape, num_classes=0)
        self.loss = ctx["loss"].build()
        return Model(
            modules={"encoder": encoder, "generator": decoder},
            phases=[
                Phase(
                    "autoencoder",
                    ("encoder", "generator"),
                    self.step,
                    Optim("adam", o.lr, (0.9, 0.999)),
                    provides=frozenset({"x", "x_hat", "z", "mu", "logvar"}),
                )
            ],
            sample=self.sample,
            reconstruct=self.reconstruct,
        )

    def encode(self, m: Modules, x: Tensor) -> tuple[Tensor, Tensor]:
        mu, logvar = m.encoder(x).chunk(2, dim=1)  # (B, d) each
        return mu, logvar

    def step(self, batch: Batch, m: Modules) -> PhaseOutput:
        mu, logvar = self.encode(m, batch.x)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)  # reparameterisation
        x_hat = m.generator(z)
        rec = self.loss(x_hat, batch.x)  # (B,) = -log p(x|z)
        kl = self.prior.kl_from_normal(mu, logvar)  # (B,)
        loss = (rec + self.options.beta * kl).mean()
        return PhaseOutput(
            loss,
            context={"x": batch.x, "x_hat": x_hat, "z": z, "mu": mu, "logvar": logvar},
            logs={"reconstruction": rec.detach(), "kl": kl.detach(), "elbo": -(rec + kl).detach()},
        )

    def sample(self, m: Modules, n: int, y: Tensor | None = None) -> Tensor:
        z = self.prior.sample(n, device=device_of(m.generator))
        return decoded_mean(self.loss, m.generator(z))

    def reconstruct(self, m: Modules, x: Tensor, y: Tensor | None = None) -> Tensor:
        mu, _ = self.encode(m, x)
        return decoded_mean(self.loss, m.generator(mu))


@genfw.hookimpl
def genfw_register_variants(register):
    register("vae", VAE, options=VAEOptions)
