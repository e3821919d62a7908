"""The Wasserstein autoencoder (Tolstikhin et al. 2018), WAE-MMD.

One phase minimises ``E c(x, G(Q(x))) + lambda * D_Z(q(z), p(z))`` with a deterministic encoder
``Q``. ``c`` is the reconstruction loss of the ``loss`` slot (``mse``: squared Euclidean, as in
the paper); ``D_Z`` is the ``mmd`` regulariser (inverse multiquadratics kernel, lambda = 10),
which compares the batch of codes with a batch drawn from the prior: distributions of codes,
not a per-example KL, so any prior that can be sampled works (``--prior spike_slab``).
"""

from __future__ import annotations

from typing import Any, ClassVar

import attrs
from torch import Tensor

import genfw
from genfw import Batch, BuildContext, Model, Modules, Optim, Phase, PhaseOutput, Slot, device_of
from genfw import validators as check
from genfw_plugins.vae import decoded_mean


@attrs.define
class WAEOptions:
    latent_dim: int = attrs.field(default=8, validator=check.at_least(1))
    lr: float = attrs.field(default=1e-3, validator=check.positive)  # the paper: Adam 1e-3 on MNIST
    beta1: float = attrs.field(default=0.5, validator=check.in_interval(0, 1, high_open=True))


class WAE:
    """Wasserstein autoencoder: reconstruction + lambda * MMD between codes and prior samples."""

    slots: ClassVar[dict[str, Slot]] = {
        "encoder": Slot("encoder", "mlp", help="deterministic, x -> z"),
        "generator": Slot("generator", "mlp", help="the decoder, z -> x"),
        "prior": Slot("prior", "normal"),
        "loss": Slot("loss", "mse", role="reconstruction", help="the cost c(x, G(z))"),
    }
    phases: ClassVar[tuple[str, ...]] = ("autoencoder",)
    regularisers: ClassVar[dict[str, dict[str, Any]]] = {"mmd": {"weight": 10.0}}

    def __init__(self, options: WAEOptions):
        self.options = options

    def build(self, ctx: BuildContext) -> Model:
        o = self.options
        self.prior = ctx["prior"].build(dim=o.latent_dim)
        encoder = ctx["encoder"].build(in_shape=ctx.data.shape, out_dim=o.latent_dim, num_classes=0)
        decoder = ctx["generator"].build(latent_dim=o.latent_dim, out_shape=ctx.data.shape, num_classes=0)
        self.loss = ctx["loss"].build()
        return Model(
            modules={"encoder": encoder, "generator": decoder},
            phases=[
                Phase(
                    "autoencoder",
                    ("encoder", "generator"),
                    self.step,
                    Optim("adam", o.lr, (o.beta1, 0.999)),
                    provides=frozenset({"x", "x_hat", "z", "prior_z"}),
                )
            ],
            sample=self.sample,
            reconstruct=self.reconstruct,
        )

    def step(self, batch: Batch, m: Modules) -> PhaseOutput:
        z = m.encoder(batch.x)  # (B, d)
        x_hat = m.generator(z)
        rec = self.loss(x_hat, batch.x)  # (B,)
        prior_z = self.prior.sample(len(batch), device=z.device)  # (B, d), for D_Z
        return PhaseOutput(
            rec.mean(),
            context={"x": batch.x, "x_hat": x_hat, "z": z, "prior_z": prior_z},
            logs={"reconstruction": rec.detach()},
        )

    def sample(self, m: Modules, n: int, y: Tensor | None = None) -> Tensor:
        z = self.prior.sample(n, device=device_of(m.generator))
        return decoded_mean(self.loss, m.generator(z))

    def reconstruct(self, m: Modules, x: Tensor, y: Tensor | None = None) -> Tensor:
        return decoded_mean(self.loss, m.generator(m.encoder(x)))


@genfw.hookimpl
def genfw_register_variants(register):
    register("wae", WAE, options=WAEOptions)
