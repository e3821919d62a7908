"""The plain autoencoder: a deterministic encoder and decoder trained on reconstruction alone.

One phase minimises ``E c(x, G(Q(x)))`` with the reconstruction loss of the ``loss`` slot:
``mse`` (default, squared error) or ``bernoulli`` (binary cross-entropy on decoder logits; the
decoder's default ``output: auto`` is then linear). Nothing pulls the codes towards a
distribution, so the ``prior`` slot only serves ``genfw sample`` (prior samples through the
decoder): it shows why a plain autoencoder is not a generative model, and the ``autoencoder``
metric's ``latent_mmd`` measures how far its codes are from that prior.

``ex_post: gmm`` samples instead from the ex-post density of the regularised autoencoders (Ghosh
et al. 2020, ``rae``): a Gaussian mixture of ``gmm_components`` components fitted by EM to the
last ``gmm_codes`` training codes (:mod:`genfw_plugins._expost`), saved with the run. It is then
the model's prior, so ``latent_mmd`` compares the codes with it; the ``prior`` slot is unused, and
a prior other than the default ``normal`` is refused.
"""

from __future__ import annotations

from typing import ClassVar

import attrs
from torch import Tensor

import genfw
from genfw import Batch, BuildContext, GenfwError, Model, Modules, Optim, PhaseOutput, Slot
from genfw import validators as check
from genfw.contracts import PhaseSpec
from genfw_plugins._autoencoder import AutoencoderBase, build_prior
from genfw_plugins._expost import add_expost_density, sample_expost


@attrs.define
class AEOptions:
    latent_dim: int = attrs.field(default=8, validator=check.at_least(1))
    lr: float = attrs.field(default=1e-3, validator=check.positive)
    beta1: float = attrs.field(default=0.9, validator=check.in_interval(0, 1, high_open=True))
    # Where samples come from: none, the prior slot; gmm, a mixture fitted to the training codes.
    ex_post: str = attrs.field(default="none", validator=check.one_of("none", "gmm"))
    gmm_components: int = attrs.field(default=10, validator=check.at_least(1))  # ex_post gmm only
    gmm_codes: int = attrs.field(default=2048, validator=check.at_least(2))  # ex_post gmm only


class AE(AutoencoderBase):
    """Deterministic autoencoder: reconstruction loss only."""

    slots: ClassVar[dict[str, Slot]] = {
        "encoder": Slot("encoder", "mlp", help="deterministic, x -> z"),
        "generator": Slot("generator", "mlp", help="the decoder, z -> x"),
        "prior": Slot("prior", "normal", help="only for sampling: codes are not trained towards it"),
        "loss": Slot("loss", "mse", role="reconstruction", help="mse, or bernoulli (BCE on logits)"),
    }
    phases: ClassVar[dict[str, PhaseSpec]] = {
        "autoencoder": PhaseSpec(
            {"x", "x_hat", "z"}, help="the encoder and decoder minimise the reconstruction loss"
        )
    }
    options: AEOptions

    def build(self, ctx: BuildContext) -> Model:
        o = self.options
        if o.ex_post == "gmm" and ctx["prior"].name != "normal":
            raise GenfwError(
                f"ae --plugin.ex_post gmm samples from a mixture fitted to the codes, so prior "
                f"'{ctx['prior'].name}' would go unused; leave --prior out, or use --plugin.ex_post none"
            )
        self.prior = build_prior(ctx, o.latent_dim) if o.ex_post == "none" else None
        model = self.single_phase_model(ctx, o.latent_dim, Optim("adam", o.lr, (o.beta1, 0.999)))
        if o.ex_post == "gmm":
            add_expost_density(self, model, o)
        return model

    def sample(self, m: Modules, n: int, y: Tensor | None = None) -> Tensor:
        if self.options.ex_post == "gmm":
            return sample_expost(self, m, n)
        return super().sample(m, n, y)

    def step(self, batch: Batch, m: Modules) -> PhaseOutput:
        z = self.code(m, batch.x)  # (B, d)
        x_hat = m.generator(z)
        rec = self.loss(x_hat, batch.x)  # (B,)
        if self.options.ex_post == "gmm":
            m.density.push(z)
        return PhaseOutput(
            rec.mean(), context={"x": batch.x, "x_hat": x_hat, "z": z}, logs={"reconstruction": rec.detach()}
        )


@genfw.hookimpl
def genfw_register_variants(register):
    register(
        "ae", AE, options=AEOptions, help="deterministic autoencoder (mse or bce reconstruction; ex_post gmm)"
    )
