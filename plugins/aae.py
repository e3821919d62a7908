"""The adversarial autoencoder (Makhzani et al. 2016): three phases per training step.

1. ``autoencoder``: encoder ``Q`` and decoder ``G`` minimise the reconstruction loss
   ``E c(x, G(Q(x)))`` (``loss`` slot, ``mse`` by default).
2. ``critic``: the latent critic ``D`` learns to tell prior samples ``z' ~ p(z)`` ("real") from
   codes ``z = Q(x)`` ("fake"): it minimises the ``adversarial`` loss's critic objective
   (non-saturating by default: ``-E log D(z') - E log(1 - D(Q(x)))``).
3. ``encoder``: ``Q`` alone learns to fool ``D``: the generator objective on ``D(Q(x))``
   (``-E log D(Q(x))``), times ``adversarial_weight``.

The three phases use the same minibatch, as in the paper's training loop. Any prior that can be
sampled works (``--prior spike_slab``, ``mog``, ``uniform``, ...), since ``D`` only sees samples.
With ``--prior categorical`` the first ``K`` code coordinates go through a softmax and the latent
critic compares them with one-hot prior vertices (the categorical-plus-style latent of the
paper's semi-supervised AAE); examples with a label ``0 <= y < K`` then also train that head
by cross-entropy (``label_weight``), so a data set whose unlabelled examples carry ``y = -1``
trains semi-supervised, a fully labelled one supervised. ``genfw sample`` then draws the class
given by the label.
"""

from __future__ import annotations

from typing import Any, ClassVar

import attrs
import torch.nn.functional as F

import genfw
from genfw import Batch, BuildContext, GenfwError, Model, Modules, Optim, Phase, PhaseOutput, Slot
from genfw import validators as check
from genfw_plugins._autoencoder import (
    AutoencoderBase,
    build_prior,
    categorical_block,
    latent_critic_fn,
    shape_code,
)
from genfw_plugins.gan import generator_objective


@attrs.define
class AAEOptions:
    latent_dim: int = attrs.field(default=8, validator=check.at_least(1))
    lr: float = attrs.field(default=1e-3, validator=check.positive)  # autoencoder phase
    lr_critic: float = attrs.field(default=5e-4, validator=check.positive)  # latent critic phase
    lr_encoder: float = attrs.field(default=5e-4, validator=check.positive)  # encoder-fools-critic phase
    beta1: float = attrs.field(default=0.5, validator=check.in_interval(0, 1, high_open=True))
    adversarial_weight: float = attrs.field(default=1.0, validator=check.non_negative)
    # Cross-entropy weight of the categorical head on labelled examples (categorical prior only).
    label_weight: float = attrs.field(default=1.0, validator=check.non_negative)


class AAE(AutoencoderBase):
    """Adversarial autoencoder: reconstruction, latent critic, encoder fools the critic."""

    slots: ClassVar[dict[str, Slot]] = {
        "encoder": Slot("encoder", "mlp", help="deterministic, x -> z"),
        "generator": Slot("generator", "mlp", help="the decoder, z -> x"),
        "critic": Slot("critic", "mlp", help="latent critic: prior samples vs codes"),
        "prior": Slot("prior", "normal", help="any prior that can be sampled"),
        "loss": Slot("loss", "mse", role="reconstruction", help="the cost c(x, G(z))"),
        "adversarial": Slot("loss", "non_saturating", role="adversarial", help="latent critic's game"),
    }
    phases: ClassVar[tuple[str, ...]] = ("autoencoder", "critic", "encoder")
    regularisers: ClassVar[dict[str, dict[str, Any]]] = {}

    options: AAEOptions

    def build(self, ctx: BuildContext) -> Model:
        o = self.options
        self.prior = build_prior(ctx, o.latent_dim)
        k = categorical_block(self.prior)
        self.supervised = bool(k and o.label_weight > 0 and ctx.data.num_classes > 0)
        if self.supervised and k != ctx.data.num_classes:
            raise GenfwError(
                f"prior 'categorical' has {k} categories but the data set has {ctx.data.num_classes} "
                f"classes; set --prior.categories {ctx.data.num_classes}, or --plugin.label_weight 0 "
                f"to leave the categories unsupervised"
            )
        encoder, decoder = self.build_networks(ctx, o.latent_dim)
        critic = self.build_latent_critic(ctx)
        betas = (o.beta1, 0.999)
        return Model(
            modules={"encoder": encoder, "generator": decoder, "critic": critic},
            phases=[
                Phase(
                    "autoencoder",
                    ("encoder", "generator"),
                    self.autoencoder_step,
                    Optim("adam", o.lr, betas),
                    provides=frozenset({"x", "x_hat", "z"}),
                ),
                # the same minibatch, as in the paper
                self.critic_phase(o.lr_critic, betas, fresh_batch=False),
                Phase(
                    "encoder",
                    ("encoder",),
                    self.encoder_step,
                    Optim("adam", o.lr_encoder, betas),
                    fresh_batch=False,
                    provides=frozenset({"fake", "critic", "labels", "fake_scores"}),
                ),
            ],
            **self.model_fields(),
        )

    def autoencoder_step(self, batch: Batch, m: Modules) -> PhaseOutput:
        raw = m.encoder(batch.x)
        z = shape_code(self.prior, raw)
        x_hat = m.generator(z)
        rec = self.loss(x_hat, batch.x)  # (B,)
        loss = rec.mean()
        logs = {"reconstruction": rec.detach()}
        if self.supervised:
            k = categorical_block(self.prior)
            labelled = (batch.y >= 0) & (batch.y < k)
            ce = F.cross_entropy(raw[:, :k], batch.y.clamp(0, k - 1), reduction="none")
            ce = (ce * labelled).sum() / labelled.sum().clamp_min(1)  # mean over labelled examples
            loss = loss + self.options.label_weight * ce
            logs["label_ce"] = ce.detach()
        return PhaseOutput(loss, context={"x": batch.x, "x_hat": x_hat, "z": z}, logs=logs)

    def encoder_step(self, batch: Batch, m: Modules) -> PhaseOutput:
        z = self.code(m, batch.x)
        critic = latent_critic_fn(m)
        fake_scores = critic(z)
        prior_scores = lambda: critic(self.prior.sample(len(batch), device=z.device))  # noqa: E731
        loss = self.options.adversarial_weight * generator_objective(
            self.adversarial, fake_scores, prior_scores
        )
        return PhaseOutput(
            loss, context={"fake": z, "critic": critic, "labels": None, "fake_scores": fake_scores}
        )


@genfw.hookimpl
def genfw_register_variants(register):
    register("aae", AAE, options=AAEOptions, help="adversarial autoencoder (three phases)")
