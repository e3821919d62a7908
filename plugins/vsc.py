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
``eta ~ U(0, 1)``, which tends to ``Bernoulli(gamma)`` as the sharpness ``c`` grows (``c = 50`` by
default, as in the PyTorch reproduction Alfo5123/Variational-Sparse-Coding; the authors' code
fixes ``c = 100``). ``gamma = exp(min(h, 0))`` from the encoder's third head, clamped to
``[1e-6, 1 - 1e-6]`` so the KL stays finite, as in the authors' code.

Warm-up (``warmup_start`` S < ``warmup_end`` E, in training steps; off by default, both 0) is the
authors' (Tonolini, ``models/VSC_model.py`` and ``vae_ss_ss_vamp_ept_sp.py``): the training code
is drawn from a slab whose mean and log-variance are multiplied by a factor ``lam``,
``z = s * (lam mu + exp(lam log sigma^2 / 2) eps)``, ``lam = clamp((t - S) / (E - S), 0, 1)`` at
step ``t``, the number of updates of the ``autoencoder`` phase before this one (0 on the first
step; the loop's step counter, the phase running once per step). Until S the decoder sees
``s * eps``, so only which coordinates are on carries information (their "spike warm-up"); lam
then grows by ``1 / (E - S)`` per step and is 1 from E on. The KL, ``gamma``, ``encode`` and the
likelihood estimates use the unscaled ``mu`` and ``log sigma^2`` throughout, as theirs; while
lam < 1 the training log's ``elbo`` is that of the warmed-up sample, not an ELBO of q. One
departure: their loop adds ``1 / (E - S)`` for ``S < i < E`` only, so their factor stops one
step short of 1, at ``(E - S - 1) / (E - S)`` (0.9998 for the 45,000 and 50,000 of their
Fashion-MNIST example); here it reaches 1 at E. The count ``t`` is the buffer ``step`` of the
module ``warmup`` (present only with a warm-up), so checkpoints carry it and ``--resume``
continues the ramp exactly; the training log shows ``lam`` as ``warmup``. The paper's
supplement (B.1) describes the warm-up as raising ``c``; the authors' code keeps ``c`` fixed
and ramps ``lam`` instead, and the reproduction raises ``c`` (by 0.001 per update).

The code used to reconstruct (``encode``) is the posterior's most probable configuration per
coordinate: ``mu_j`` where ``gamma_j >= 0.5``, exactly 0 elsewhere; sparsity is therefore
measured on exact zeros. Likelihood estimates (``log_weights``) draw the *exact* mixture
posterior (a Bernoulli spike), whose density and the prior's are both taken with respect to
Lebesgue measure plus a unit atom at 0, so their ratio is a valid importance weight.

The paper's full model also learns the prior from pseudo-inputs (a VampPrior-like "recycling"
of the prior); that is not part of this variant: the prior here is the fixed spike and slab of
the lecture.

A reconstruction loss that is not a normalised likelihood (``mse``, ``l1``) trains, but leaves
out the ELBO and log-likelihood, as in ``vae``.
"""

from __future__ import annotations

import math
from typing import ClassVar

import attrs
import torch
from torch import Tensor, nn

import genfw
from genfw import Batch, BuildContext, GenfwError, Model, Modules, Optim, PhaseOutput, Slot
from genfw import validators as check
from genfw.contracts import ContextKey, PhaseSpec
from genfw_plugins._autoencoder import AutoencoderBase, build_prior

_GAMMA_EPS = 1e-6


@attrs.define
class VSCOptions:
    latent_dim: int = attrs.field(default=16, validator=check.at_least(1))
    beta: float = attrs.field(default=1.0, validator=check.non_negative)
    lr: float = attrs.field(default=1e-3, validator=check.positive)
    c: float = attrs.field(default=50.0, validator=check.positive)  # sharpness of the relaxed spike
    # The authors' warm-up (module doc): the slab's mean and log-variance enter the training code
    # times lam, 0 up to step warmup_start, rising linearly to 1 at step warmup_end; 0 and 0: none.
    warmup_start: int = attrs.field(default=0, validator=check.at_least(0))
    warmup_end: int = attrs.field(default=0, validator=check.at_least(0))

    def __attrs_post_init__(self) -> None:
        if (self.warmup_start or self.warmup_end) and not self.warmup_end > self.warmup_start:
            raise ValueError(
                f"warmup_end must be greater than warmup_start (lam rises from 0 at the one to 1 at the "
                f"other), got {self.warmup_start} and {self.warmup_end}; both 0 (the default): no warm-up"
            )

    @property
    def warms_up(self) -> bool:
        return self.warmup_end > 0


class WarmupStep(nn.Module):
    """``t`` of the warm-up, the ``autoencoder`` phase's updates so far, as a checkpointed buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("step", torch.zeros((), dtype=torch.long))


def warmup_factor(step: Tensor, start: int, end: int) -> Tensor:
    """``lam = clamp((step - start) / (end - start), 0, 1)``, a float32 scalar on ``step``'s device."""
    return ((step - start).float() / (end - start)).clamp(0.0, 1.0)


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
    phases: ClassVar[dict[str, PhaseSpec]] = {
        "autoencoder": PhaseSpec(
            {"x", "x_hat", "z", "mu", "logvar", "gamma"},
            help="the encoder and decoder minimise reconstruction + beta KL to the spike-and-slab prior",
            extra={"gamma": ContextKey("Tensor (B, d)", "the posterior's slab probabilities")},
        )
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
        model = self.single_phase_model(
            ctx,
            3 * o.latent_dim,
            Optim("adam", o.lr, (0.9, 0.999)),
            log_weights=self.log_weights,
        )
        if o.warms_up:
            model.modules["warmup"] = WarmupStep()
        return model

    def posterior(self, m: Modules, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(mu, logvar, gamma)``, each ``(B, d)``; ``gamma`` is the slab probability."""
        mu, logvar, h = m.encoder(x).chunk(3, dim=1)
        gamma = torch.exp(-torch.relu(-h)).clamp(_GAMMA_EPS, 1.0 - _GAMMA_EPS)
        return mu, logvar, gamma

    def code(self, m: Modules, x: Tensor) -> Tensor:
        mu, _, gamma = self.posterior(m, x)
        return torch.where(gamma >= 0.5, mu, torch.zeros_like(mu))

    def step(self, batch: Batch, m: Modules) -> PhaseOutput:
        o = self.options
        mu, logvar, gamma = self.posterior(m, batch.x)
        slab_mu, slab_logvar, lam = mu, logvar, None
        if o.warms_up:  # the authors' warm-up: lam scales the slab's parameters in the sample only
            lam = warmup_factor(m.warmup.step, o.warmup_start, o.warmup_end)
            slab_mu, slab_logvar = lam * mu, lam * logvar
            m.warmup.step.add_(1)
        slab = slab_mu + torch.exp(0.5 * slab_logvar) * torch.randn_like(mu)
        eta = torch.rand_like(mu)
        z = torch.sigmoid(o.c * (eta + gamma - 1.0)) * slab  # relaxed spike selection
        x_hat = m.generator(z)
        rec = self.loss(x_hat, batch.x)  # (B,)
        kl = self.prior.kl_from_spike_slab(mu, logvar, gamma)  # (B,): of the unscaled posterior
        loss = (rec + o.beta * kl).mean()
        logs = {"reconstruction": rec.detach(), "kl": kl.detach()}
        if self.likelihood:  # an ELBO in nats only where the loss is a normalised -log p(x|z)
            logs["elbo"] = -(rec + kl).detach()
        logs["slab_probability"] = gamma.detach()
        if lam is not None:
            logs["warmup"] = lam
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
