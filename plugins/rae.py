"""Regularised deterministic autoencoders (Ghosh, Sajjadi, Vergari, Black & Schölkopf 2020, "From
Variational to Deterministic Autoencoders").

A deterministic encoder and decoder; one phase minimises the paper's eq. 11 per example::

    c(x, D(z)) + beta * ||z||^2 / 2 + lambda * R(D),      z = E(x)

with ``c`` the reconstruction loss of the ``loss`` slot (``mse``: ``||x - D(z)||^2``) and the
decoder regulariser ``R`` chosen by ``penalty``:

- ``l2``: ``||theta_D||^2``, the sum of the squares of the decoder's weights (every parameter with
  two or more dimensions; biases are left out, as keras' ``kernel_regularizer`` of the authors'
  code, whose MNIST decoder also leaves its first dense layer out);
- ``gp``: the gradient penalty of the authors' code (``models/rae/loss_functions.py``,
  ``grad_pen_loss``): ``||grad_z sum_i D(z)_i^2||^2``, the squared norm of the gradient with
  respect to the code of the decoder output's squared norm, summed over code coordinates;
- ``spectral_norm``: every weight of the decoder is spectrally normalised
  (:func:`genfw_plugins.tricks.apply_spectral_norm`), ``lambda`` unused (the authors' MNIST config
  normalises the encoder too, ``spec_norm_on_dec_only: False``; the paper names the decoder);
- ``none``: only ``beta``'s term (the paper's "RAE" row).

Defaults (``beta``, ``weight`` left out) are the authors' MNIST constants (``configurations/
config.py``: beta_c = 1e-4 and lambda_c = 1e-7 for L2, 1e-4 and 0.5e-7 for GP, 0.009 for SN, 5e-4
without a regulariser) carried over to this objective. Their code minimises the per-pixel mean of
the squared error on [0, 1] pixels plus ``beta_c mean_j z_j^2`` plus ``lambda_c R``; genfw's
pixels are in [-1, 1] (4 times the squared error) and ``c`` sums over the D pixels, so the same
balance is ``beta = 8 D beta_c / d`` and ``lambda = 4 D lambda_c`` (``/ d`` more for GP, whose
mean over code coordinates is a sum here): on digits (D = 64, d = 16) beta = 3.2e-3 and
lambda = 2.56e-5 for L2. Adam at 5e-4, as theirs; 16 latent coordinates (their MNIST bottleneck).

Samples come from the ex-post density (:mod:`genfw_plugins._expost`): a Gaussian mixture of
``gmm_components`` full-covariance components (10, as the paper) fitted by EM to the last
``gmm_codes`` training codes, saved with the run.
"""

from __future__ import annotations

from typing import ClassVar

import attrs
import torch
from torch import Tensor

import genfw
from genfw import Batch, BuildContext, Model, Modules, Optim, PhaseOutput, Slot
from genfw import validators as check
from genfw.contracts import PhaseSpec
from genfw_plugins._autoencoder import AutoencoderBase
from genfw_plugins._expost import add_expost_density, sample_expost
from genfw_plugins.tricks import apply_spectral_norm

# The authors' MNIST weights (configurations/config.py): penalty -> (beta_c, lambda_c).
AUTHORS_MNIST: dict[str, tuple[float, float]] = {
    "l2": (1e-4, 1e-7),
    "gp": (1e-4, 0.5e-7),
    "spectral_norm": (0.009, 0.0),
    "none": (5e-4, 0.0),
}


@attrs.define
class RAEOptions:
    latent_dim: int = attrs.field(default=16, validator=check.at_least(1))
    # The decoder regulariser R: l2 (weight decay), gp (gradient penalty), spectral_norm, none.
    penalty: str = attrs.field(default="l2", validator=check.one_of("l2", "gp", "spectral_norm", "none"))
    # Weight of ||z||^2 / 2; unset: the authors' MNIST constant for the penalty, rescaled (module doc).
    beta: float | None = attrs.field(default=None, validator=attrs.validators.optional(check.non_negative))
    # lambda, the weight of R (l2, gp); unset: the authors' MNIST constant, rescaled.
    weight: float | None = attrs.field(default=None, validator=attrs.validators.optional(check.non_negative))
    lr: float = attrs.field(default=5e-4, validator=check.positive)
    gmm_components: int = attrs.field(default=10, validator=check.at_least(1))  # of the ex-post mixture
    gmm_codes: int = attrs.field(default=2048, validator=check.at_least(2))  # training codes it is fitted to


def default_weights(penalty: str, pixels: int, latent_dim: int) -> tuple[float, float]:
    """``(beta, lambda)`` of the authors' MNIST config for ``penalty``, carried over to genfw's
    objective for data of ``pixels`` dimensions in [-1, 1] and ``latent_dim`` code coordinates:
    ``beta = 8 D beta_c / d``, ``lambda = 4 D lambda_c`` (and ``/ d`` for ``gp``)."""
    beta_c, lambda_c = AUTHORS_MNIST[penalty]
    lam = 4 * pixels * lambda_c / (latent_dim if penalty == "gp" else 1)
    return 8 * pixels * beta_c / latent_dim, lam


def decoder_l2(decoder: torch.nn.Module) -> Tensor:
    """``sum ||W||^2`` over the decoder's parameters with two or more dimensions (no biases)."""
    return sum(p.square().sum() for p in decoder.parameters() if p.dim() >= 2)


def decoder_gradient_penalty(x_hat: Tensor, z: Tensor) -> Tensor:
    """``||grad_z sum_i x_hat_i^2||^2`` per example ``(B,)``, differentiable (a double backward);
    ``x_hat`` must have been computed from ``z``."""
    (g,) = torch.autograd.grad(x_hat.square().sum(), z, create_graph=True)
    return g.square().sum(1)


class RAE(AutoencoderBase):
    """Regularised autoencoder: reconstruction + beta ||z||^2/2 + lambda R(decoder); GMM sampling."""

    slots: ClassVar[dict[str, Slot]] = {
        "encoder": Slot("encoder", "mlp", help="deterministic, x -> z"),
        "generator": Slot("generator", "mlp", help="the decoder, z -> x"),
        "loss": Slot("loss", "mse", role="reconstruction", help="c(x, D(z)) per example"),
    }
    phases: ClassVar[dict[str, PhaseSpec]] = {
        "autoencoder": PhaseSpec(
            {"x", "x_hat", "z"},
            help="the encoder and decoder minimise reconstruction + beta ||z||^2/2 + lambda R(decoder)",
        )
    }
    options: RAEOptions

    def build(self, ctx: BuildContext) -> Model:
        o = self.options
        pixels = 1
        for s in ctx.data.shape:
            pixels *= s
        beta, lam = default_weights(o.penalty, pixels, o.latent_dim)
        self.beta = beta if o.beta is None else o.beta
        self.lam = lam if o.weight is None else o.weight
        self.prior = None  # the ex-post density, below
        model = self.single_phase_model(ctx, o.latent_dim, Optim("adam", o.lr, (0.9, 0.999)))
        if o.penalty == "spectral_norm":
            apply_spectral_norm(model.modules["generator"], what="decoder")
        add_expost_density(self, model, o)
        return model

    def sample(self, m: Modules, n: int, y: Tensor | None = None) -> Tensor:
        return sample_expost(self, m, n)

    def step(self, batch: Batch, m: Modules) -> PhaseOutput:
        o = self.options
        z = self.code(m, batch.x)  # (B, d)
        x_hat = m.generator(z)
        rec = self.loss(x_hat, batch.x)  # (B,)
        code_norm = 0.5 * z.square().sum(1)  # (B,)
        loss = (rec + self.beta * code_norm).mean()
        logs = {"reconstruction": rec.detach(), "code_norm": code_norm.detach()}
        if o.penalty == "l2":
            reg = decoder_l2(m.generator)
            loss = loss + self.lam * reg
            logs["decoder_l2"] = reg.detach()
        elif o.penalty == "gp":
            gp = decoder_gradient_penalty(x_hat, z)
            loss = loss + self.lam * gp.mean()
            logs["gradient_penalty"] = gp.detach()
        m.density.push(z)
        return PhaseOutput(loss, context={"x": batch.x, "x_hat": x_hat, "z": z}, logs=logs)


@genfw.hookimpl
def genfw_register_variants(register):
    register(
        "rae",
        RAE,
        options=RAEOptions,
        help="regularised deterministic autoencoder (l2, gp or spectral-norm decoder), ex-post GMM sampling",
    )
