"""The Wasserstein autoencoder (Tolstikhin et al. 2018): WAE-MMD and WAE-GAN.

The objective is ``recon_scale * E c(x, G(Q(x))) + lambda * D_Z(q(z), p(z))`` with a
deterministic encoder ``Q``; ``c`` is the reconstruction loss of the ``loss`` slot (``mse``:
squared Euclidean, as in the paper). ``recon_scale`` is 1 by default, the paper's objective; the
authors' code (tolstikhin/wae, ``wae.py``, ``reconstruction_loss`` with ``cost: l2sq``) computes
``0.05 * mean_i ||x_i - G(Q(x_i))||^2`` (``l1``: 0.02, ``l2``: 0.2 times the norm), i.e.
``recon_scale 0.05``, which weighs D_Z 20 times more against the reconstruction. Their MNIST
pixels are in [0, 1] (``input_normalize_sym: False``), genfw's in [-1, 1], where the same images
have 4 times the squared error: their balance on MNIST is ``recon_scale 0.0125`` here. The
training log's ``reconstruction`` is ``c`` unscaled. ``D_Z`` compares the distribution of codes
with the prior, not a per-example KL, so any prior that can be sampled works
(``--prior spike_slab``). ``penalty`` chooses ``D_Z``:

- ``mmd`` (default): the ``mmd`` regulariser, inverse multiquadratics kernels at the WAE code's
  scales, lambda = 10 (the paper's MNIST setting), between the batch of codes and a batch of
  prior samples (Algorithm 2). The kernels' base scale is the paper's ``C = 2 d_z sigma_z^2``
  with ``sigma_z^2`` the prior's variance (``--regulariser.mmd.sigma2`` left out; e.g. alpha for
  ``spike_slab``), the kernel of the ``autoencoding`` metric's ``latent_mmd``.
- ``gan``: a latent critic ``D`` (Algorithm 1). Per step, first ``D`` ascends
  ``lambda/n sum log D(z'_i) + log(1 - D(Q(x_i)))`` (``z' ~ p(z)``; the ``critic`` phase, with
  the ``adversarial`` loss), then ``Q`` and ``G`` descend
  ``recon_scale/n sum c(x_i, G(Q(x_i))) - lambda log D(Q(x_i))`` on the same batch. lambda = ``gan_weight``
  (1 in the paper's MNIST experiments).

Sparse codes (``code: sparse``; ``auto``, the default, picks it for a prior with an atom at 0,
i.e. ``spike_slab``, and the paper's linear ``dense`` output otherwise). ``spike_slab`` puts a
fraction ``1 - alpha`` of coordinates exactly at 0. Two things keep a plain WAE from matching
that (measured: about 13% of codes within 0.1 of 0 against the prior's 56%, at alpha 0.5):
a linear encoder output is (almost surely) never exactly 0, and the MMD on whole code vectors,
with kernels as wide as the WAE scales, barely tells a per-coordinate atom from a smooth cloud of
the same spread (its value is then already within batch noise of 0). So ``sparse``

- ends the encoder with soft thresholding, ``z = sign(u) max(|u| - t, 0)`` (the L1 proximal map,
  the non-linearity of ISTA-style sparse coding; ``t = shrink``), so codes can be exactly 0;
  keep ``t`` small: codes in the dead zone get no gradient, and a large ``t`` can zero them all;
- adds ``marginal_weight`` times the sum over coordinates of the 1-D MMD^2 between codes and
  prior samples (``marginal_mmd``; IMQ kernels at ``marginal_scales``, which add small scales
  to the WAE's): the MMD of the additive kernel ``sum_j k(a_j, b_j)``, still a divergence between
  q(z) and p(z) like D_Z (the joint penalty stays), but one that sees each coordinate's atom.
"""

from __future__ import annotations

from typing import Any, ClassVar

import attrs
import torch
from torch import Tensor

import genfw
from genfw import Batch, BuildContext, Model, Modules, Optim, Phase, PhaseOutput, Slot
from genfw import validators as check
from genfw.contracts import PhaseSpec, Players
from genfw_plugins._adversarial import generator_term
from genfw_plugins._autoencoder import (
    LATENT_CRITIC_PHASE,
    AutoencoderBase,
    AutoencoderModel,
    build_prior,
    marginal_mmd,
    shape_code,
)
from genfw_plugins.regularisers import WAE_SCALES, prior_variance

MARGINAL_SCALES = (0.001, 0.003, 0.01, 0.03, *WAE_SCALES)


@attrs.define
class WAEOptions:
    latent_dim: int = attrs.field(default=8, validator=check.at_least(1))
    lr: float = attrs.field(default=1e-3, validator=check.positive)  # the paper: Adam 1e-3 on MNIST
    beta1: float = attrs.field(default=0.5, validator=check.in_interval(0, 1, high_open=True))
    penalty: str = attrs.field(default="mmd", validator=check.one_of("mmd", "gan"))
    gan_weight: float = attrs.field(default=1.0, validator=check.non_negative)  # lambda of WAE-GAN
    lr_critic: float = attrs.field(default=5e-4, validator=check.positive)  # WAE-GAN: 5e-4 in the paper
    # Multiplies the reconstruction cost: 1 is the paper's objective, 0.05 the authors' code (l2sq).
    recon_scale: float = attrs.field(default=1.0, validator=check.positive)
    # sparse: soft-thresholded encoder output and per-coordinate MMD (see the module doc); dense:
    # a linear output, the paper's; auto: sparse for a prior with an atom at 0 (spike_slab).
    code: str = attrs.field(default="auto", validator=check.one_of("auto", "sparse", "dense"))
    shrink: float = attrs.field(default=0.1, validator=check.positive)  # threshold t of the sparse code
    marginal_weight: float = attrs.field(default=10.0, validator=check.non_negative)  # of the marginal MMD
    # Kernel scales of the marginal MMD (times 2 * sigma2, as the mmd regulariser's): the WAE
    # scales plus small ones, which resolve codes near 0 from exact zeros.
    marginal_scales: list[float] = attrs.field(
        factory=lambda: list(MARGINAL_SCALES), validator=check.each(check.positive)
    )


def soft_threshold(u: Tensor, t: float) -> Tensor:
    """``sign(u) * max(|u| - t, 0)``: exact zeros for ``|u| <= t``."""
    return torch.sign(u) * torch.relu(u.abs() - t)


class WAE(AutoencoderBase):
    """Wasserstein autoencoder: reconstruction + lambda * D_Z(codes, prior), D_Z = MMD or a critic."""

    slots: ClassVar[dict[str, Slot]] = {
        "encoder": Slot("encoder", "mlp", help="deterministic, x -> z"),
        "generator": Slot("generator", "mlp", help="the decoder, z -> x"),
        "critic": Slot("critic", "mlp", help="latent critic (penalty: gan only)"),
        "prior": Slot("prior", "normal"),
        "loss": Slot("loss", "mse", role="reconstruction", help="the cost c(x, G(z))"),
        "adversarial": Slot("loss", "non_saturating", role="adversarial", help="penalty: gan only"),
    }
    players: ClassVar[Players] = Players(generators="generator", encoders="encoder", latent_critics="critic")
    # WAE-GAN's Algorithm 1: the latent critic, then Q and G on the same batch.
    phases: ClassVar[dict[str, PhaseSpec]] = {
        "critic": LATENT_CRITIC_PHASE,
        "autoencoder": PhaseSpec(
            {"x", "x_hat", "z", "prior_z"},
            help="the encoder and decoder minimise reconstruction + lambda D_Z(codes, prior)",
        ),
    }

    @classmethod
    def phases_for(cls, options: WAEOptions) -> tuple[str, ...]:
        """The latent critic's phase only with ``penalty: gan``."""
        return ("critic", "autoencoder") if options.penalty == "gan" else ("autoencoder",)

    @classmethod
    def remedies(cls, options: WAEOptions) -> dict[str, dict[str, Any]]:
        """The mmd regulariser is D_Z with ``penalty: mmd`` (lambda 10, as the paper's MNIST runs)."""
        return {"mmd": {"weight": 10.0}} if options.penalty == "mmd" else {}

    options: WAEOptions

    def build(self, ctx: BuildContext) -> Model:
        o = self.options
        self.prior = build_prior(ctx, o.latent_dim)
        has_atom = hasattr(self.prior, "sparsity")
        self.sparse = o.code == "sparse" or (o.code == "auto" and has_atom)
        self.sigma2 = prior_variance(self.prior)  # sigma_z^2 of the marginal MMD's kernels
        encoder, decoder = self.build_networks(ctx, o.latent_dim)
        modules = {"encoder": encoder, "generator": decoder}
        betas = (o.beta1, 0.999)
        autoencoder = Phase(
            "autoencoder",
            ("encoder", "generator"),
            self.step,
            Optim("adam", o.lr, betas),
            provides=self.phases["autoencoder"].provides,
        )
        phases = [autoencoder]
        if o.penalty == "gan":
            modules["critic"] = self.build_latent_critic(ctx)
            critic = self.critic_phase(o.lr_critic, betas)
            autoencoder.fresh_batch = False  # Algorithm 1: D, then Q and G, on one batch
            phases = [critic, autoencoder]
        return AutoencoderModel(modules=modules, phases=phases, **self.model_fields())

    @property
    def critic_weight(self) -> float:
        """WAE-GAN's lambda also scales the critic's objective (Algorithm 1)."""
        return self.options.gan_weight

    def code(self, m: Modules, x: Tensor) -> Tensor:
        u = m.encoder(x)
        return soft_threshold(u, self.options.shrink) if self.sparse else shape_code(self.prior, u)

    def step(self, batch: Batch, m: Modules) -> PhaseOutput:
        z = self.code(m, batch.x)  # (B, d)
        x_hat = m.generator(z)
        rec = self.loss(x_hat, batch.x)  # (B,)
        prior_z = self.prior.sample(len(batch), device=z.device)  # (B, d), for D_Z
        loss = rec.mean() * self.options.recon_scale  # the authors' code: 0.05 (module doc)
        logs = {"reconstruction": rec.detach(), "zero_codes": (z == 0).float().mean().detach()}
        if self.options.penalty == "gan":
            # -E log D(Q(x)); relativistic losses also score the prior samples
            fool = generator_term(
                self.adversarial, m.critic(z).squeeze(1), lambda: m.critic(prior_z).squeeze(1)
            )
            loss = loss + self.options.gan_weight * fool
            logs["adversarial"] = fool.detach()
        if self.sparse and self.options.marginal_weight > 0:
            marginal = marginal_mmd(z.float(), prior_z.float(), self.sigma2, self.options.marginal_scales)
            loss = loss + self.options.marginal_weight * marginal
            logs["marginal_mmd"] = marginal.detach()
        return PhaseOutput(
            loss, context={"x": batch.x, "x_hat": x_hat, "z": z, "prior_z": prior_z}, logs=logs
        )


@genfw.hookimpl
def genfw_register_variants(register):
    register("wae", WAE, options=WAEOptions, help="Wasserstein autoencoder (penalty mmd or gan)")
