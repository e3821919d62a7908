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

With a categorical prior the paper (section 5, figure 8) uses two adversaries: one tells the
softmax head from one-hot ``Cat(y)`` samples, the other the style from the continuous part of the
prior. That is ``critics: split`` (the default, ``auto``, for a categorical prior with a style):
the module ``critic`` judges the style and ``critic_cat`` the category; both train in the
``critic`` phase and the encoder fools both. Regularisers of the ``critic`` phase act on the style
critic. ``critics: joint`` keeps one critic on the whole code.
"""

from __future__ import annotations

from typing import ClassVar

import attrs
import torch
import torch.nn.functional as F

import genfw
from genfw import Batch, BuildContext, GenfwError, Model, Modules, Optim, Phase, PhaseOutput, Slot
from genfw import validators as check
from genfw.contracts import PhaseSpec, Players
from genfw_plugins._adversarial import generator_term
from genfw_plugins._autoencoder import (
    LATENT_CRITIC_PHASE,
    AutoencoderBase,
    AutoencoderModel,
    build_prior,
    categorical_block,
    latent_critic_fn,
    shape_code,
)


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
    # Categorical prior: one critic for the category and one for the style (the paper's, "split"),
    # or one on the whole code ("joint"); "auto" splits where the prior has both parts.
    critics: str = attrs.field(default="auto", validator=check.one_of("auto", "split", "joint"))


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
    # With a categorical prior split in two (critics: split), "critic_cat" judges the category.
    players: ClassVar[Players] = Players(
        generators="generator", encoders="encoder", latent_critics=("critic", "critic_cat")
    )
    # The critic and encoder phases see the style critic where there are two.
    phases: ClassVar[dict[str, PhaseSpec]] = {
        "autoencoder": PhaseSpec(
            {"x", "x_hat", "z"}, help="the encoder and decoder minimise the reconstruction loss"
        ),
        "critic": LATENT_CRITIC_PHASE,
        "encoder": PhaseSpec(
            {"fake", "critic", "labels", "fake_scores"},
            help="the encoder makes its codes look like prior samples to the latent critic",
        ),
    }

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
        style = o.latent_dim - k
        self.split = bool(k) and (o.critics == "split" or (o.critics == "auto" and style > 0))
        if self.split and style == 0:
            raise GenfwError(
                f"aae --plugin.critics split needs a style part: latent_dim ({o.latent_dim}) > "
                f"categories ({k}); raise --plugin.latent_dim or use --plugin.critics joint"
            )
        if o.critics == "split" and not k:
            raise GenfwError(
                f"aae --plugin.critics split needs a categorical prior (--prior categorical); "
                f"prior '{ctx['prior'].name}' has no category to judge apart"
            )
        betas = (o.beta1, 0.999)
        modules = {"encoder": encoder, "generator": decoder}
        if self.split:
            modules["critic"] = self.build_latent_critic(ctx, style)
            modules["critic_cat"] = self.build_latent_critic(ctx, k)
            critic_phase = self.critic_phase(
                o.lr_critic, betas, False, ("critic", "critic_cat"), self.split_critic_step
            )
        else:
            modules["critic"] = self.build_latent_critic(ctx)
            critic_phase = self.critic_phase(o.lr_critic, betas, fresh_batch=False)
        return AutoencoderModel(
            modules=modules,
            phases=[
                Phase(
                    "autoencoder",
                    ("encoder", "generator"),
                    self.autoencoder_step,
                    Optim("adam", o.lr, betas),
                    provides=self.phases["autoencoder"].provides,
                ),
                critic_phase,  # the same minibatch, as in the paper
                Phase(
                    "encoder",
                    ("encoder",),
                    self.encoder_step,
                    Optim("adam", o.lr_encoder, betas),
                    fresh_batch=False,
                    provides=self.phases["encoder"].provides,
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

    def split_critic_step(self, batch: Batch, m: Modules) -> PhaseOutput:
        """The two adversaries of the paper: style codes against the prior's continuous part,
        softmax heads against its one-hot samples; the sum of their critic objectives."""
        k = categorical_block(self.prior)
        with torch.no_grad():
            z = self.code(m, batch.x)
        prior_z = self.prior.sample(len(batch), device=z.device)
        style, category = latent_critic_fn(m), latent_critic_fn(m, "critic_cat")
        real_s, fake_s = style(prior_z[:, k:]), style(z[:, k:])
        real_c, fake_c = category(prior_z[:, :k]), category(z[:, :k])
        loss = self.adversarial.critic_loss(real_s, fake_s) + self.adversarial.critic_loss(real_c, fake_c)
        return PhaseOutput(
            loss,
            # Regularisers of this phase see the style critic.
            context={
                "real": prior_z[:, k:],
                "fake": z[:, k:],
                "critic": style,
                "labels": None,
                "real_scores": real_s,
                "fake_scores": fake_s,
            },
            logs={
                "prior_score": real_s.detach(),
                "code_score": fake_s.detach(),
                "category_prior_score": real_c.detach(),
                "category_code_score": fake_c.detach(),
            },
        )

    def encoder_step(self, batch: Batch, m: Modules) -> PhaseOutput:
        z = self.code(m, batch.x)
        w = self.options.adversarial_weight
        if self.split:
            k = categorical_block(self.prior)
            style, category = latent_critic_fn(m), latent_critic_fn(m, "critic_cat")
            prior = lambda: self.prior.sample(len(batch), device=z.device)  # noqa: E731
            fake_scores = style(z[:, k:])
            loss = w * (
                generator_term(self.adversarial, fake_scores, lambda: style(prior()[:, k:]))
                + generator_term(self.adversarial, category(z[:, :k]), lambda: category(prior()[:, :k]))
            )
            context = {"fake": z[:, k:], "critic": style, "labels": None, "fake_scores": fake_scores}
            return PhaseOutput(loss, context=context)
        critic = latent_critic_fn(m)
        fake_scores = critic(z)
        prior_scores = lambda: critic(self.prior.sample(len(batch), device=z.device))  # noqa: E731
        loss = w * generator_term(self.adversarial, fake_scores, prior_scores)
        return PhaseOutput(
            loss, context={"fake": z, "critic": critic, "labels": None, "fake_scores": fake_scores}
        )


@genfw.hookimpl
def genfw_register_variants(register):
    register("aae", AAE, options=AAEOptions, help="adversarial autoencoder (three phases)")
