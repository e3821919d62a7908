"""Shared pieces of the autoencoder variants (``ae``, ``vae``, ``aae``, ``wae``, ``vsc``).

:class:`AutoencoderBase` gives every variant the same sampler (prior samples through the
decoder), ``encode``/``decode``/``reconstruct`` for metrics and pictures, and the wiring of a
latent critic (AAE, WAE-GAN). A variant sets ``self.prior`` and ``self.loss`` in ``build`` and
may override ``code(m, x)``: the deterministic code used to reconstruct (by default the
encoder's output, shaped by :func:`shape_code`).

The pieces every variant's ``build`` shares live here too: :meth:`AutoencoderBase.build_networks`
(the reconstruction loss, the encoder and the decoder, whose ``output: auto`` is linear when the
loss takes logits), :meth:`AutoencoderBase.single_phase_model` (the one ``autoencoder`` phase of
``ae``, ``vae`` and ``vsc``) and :meth:`AutoencoderBase.critic_step` (the latent critic's phase
of ``aae`` and ``wae --plugin.penalty gan``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import attrs
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genfw import Batch, BuildContext, GenfwError, Model, Modules, Optim, Phase, PhaseOutput, device_of
from genfw.contracts import PhaseSpec, Players, Variant, VariantInfo
from genfw.registry import ComponentSpec


def decoded_mean(loss: Any, x_hat: Tensor) -> Tensor:
    """Map a decoder output to data space with the likelihood's mean (logits -> [-1, 1])."""
    mean = getattr(loss, "mean", None)
    return mean(x_hat) if mean is not None else x_hat


def takes_logits(loss: Any) -> bool:
    """Whether a reconstruction loss reads the decoder's output as logits (it declares
    ``logits = True``, as ``bernoulli``): the decoder's ``output: auto`` is then linear."""
    return bool(getattr(loss, "logits", False))


def is_likelihood(loss: Any) -> bool:
    """Whether a reconstruction loss is a normalised ``-log p(x | x_hat)`` (it declares
    ``likelihood = True``: ``gaussian``, ``bernoulli``), so that an ELBO built on it is in nats.
    ``mse`` and ``l1`` are not: ``mse`` is ``-log N(x; x_hat, I/2)`` less ``D/2 log pi`` nats."""
    return bool(getattr(loss, "likelihood", False))


def decoder_spec(spec: ComponentSpec, loss: Any) -> ComponentSpec:
    """The generator slot's spec with ``output: auto`` made ``none`` (a linear output) when
    ``loss`` takes logits: a tanh would cap the logits to [-1, 1], i.e. the Bernoulli mean to
    ``2 sigmoid(1) - 1 = 0.46``. Any other output, and any other loss, is left as chosen."""
    options = spec.options
    if not takes_logits(loss) or getattr(options, "output", None) != "auto":
        return spec
    try:
        return attrs.evolve(spec, options=attrs.evolve(options, output="none"))
    except (TypeError, ValueError) as exc:  # a third-party generator without output "none"
        raise GenfwError(
            f"generator '{spec.name}' cannot give the logits the reconstruction loss needs "
            f"({exc}); set its output option to a linear one"
        ) from None


def needs_encoder(prior: Any) -> bool:
    """Whether a prior is built from the variant's Gaussian encoder (``needs_encoder``, the
    VampPrior: :class:`genfw.contracts.Prior`): a module the variant trains, binds and exports."""
    return bool(getattr(prior, "needs_encoder", False))


def categorical_block(prior: Any) -> int:
    """``K`` when the prior has a one-hot block of ``K`` categories in front (``categorical``), else 0."""
    return int(getattr(prior, "categories", 0) or 0)


def shape_code(prior: Any, raw: Tensor) -> Tensor:
    """A deterministic encoder's raw output as a code in the prior's support.

    With a ``categorical`` prior the first ``K`` coordinates go through a softmax (a point on the
    simplex, which the latent critic compares with the prior's one-hot vertices, as the
    semi-supervised AAE of Makhzani et al. 2016); the rest are left as they are.
    """
    k = categorical_block(prior)
    if k == 0:
        return raw
    return torch.cat([F.softmax(raw[:, :k], dim=1), raw[:, k:]], dim=1)


def prior_sample(prior: Any, n: int, device: torch.device, y: Tensor | None = None) -> Tensor:
    """``n`` prior samples; a categorical prior fixes its category to ``y`` when given."""
    if y is not None and categorical_block(prior):
        return prior.sample(n, device=device, labels=y)
    return prior.sample(n, device=device)


def reconstructs(variant: VariantInfo) -> bool:
    """Whether a variant is an autoencoder in the sense of the autoencoding metric and the eval
    pictures: a phase of it provides reconstructions (``x_hat``)."""
    return any("x_hat" in spec.provides for spec in variant.phases.values())


def autoencoders() -> str:
    """The registered autoencoders, comma-separated, for the last words of a refusal."""
    from genfw.plugins import variants_where

    return variants_where(reconstructs)


@attrs.define
class AutoencoderModel(Model):
    """The :class:`genfw.Model` of an autoencoder: what its metric (``autoencoding``) and the
    pictures of ``genfw eval`` (``--reconstruct``, ``--latent-plot``, ``--traverse``) read.

    ``encode(m, x, y) -> z (B, d)`` is the code used to reconstruct (the posterior mean of a
    stochastic encoder), ``decode(m, z, y) -> x`` maps codes to data space,
    ``reconstruct(m, x, y)`` is the two in turn, ``prior`` the latent prior object.
    Likelihood-based autoencoders give ``log_weights(m, x, k) -> (k, B)``: importance log-weights
    ``log p(x, z_i) - log q(z_i | x)`` with ``z_i ~ q(z | x)`` (ELBO and IWAE estimates).
    """

    encode: Callable[[Modules, Tensor, Tensor | None], Tensor] | None = None
    decode: Callable[[Modules, Tensor, Tensor | None], Tensor] | None = None
    reconstruct: Callable[[Modules, Tensor, Tensor | None], Tensor] | None = None
    prior: Any = None
    log_weights: Callable[[Modules, Tensor, int], Tensor] | None = None


# The latent critic's phase (aae, wae-gan): what it gives its regularisers (those of a GAN
# critic's phase, on codes).
LATENT_CRITIC_PHASE = PhaseSpec(
    {"real", "fake", "critic", "labels", "real_scores", "fake_scores"},
    help="the latent critic tells prior samples (real) from the encoder's codes (fake)",
)

# Every autoencoder's preset for image data: hold out 10% of the data set and log the
# autoencoder metrics (reconstruction, sparsity, latent MMD, ELBO) every 500 steps.
AUTOENCODER_PRESETS: dict[str, dict[str, Any]] = {
    "image": {"train": {"holdout": 0.1, "eval_every": 500}, "metrics": {"autoencoding": {}}}
}


class AutoencoderBase(Variant):
    """Sampling, encoding, decoding and reconstruction shared by the autoencoder variants, and
    their common declarations (an encoder and a decoder, the image preset); each variant declares
    its phases."""

    # The decoder is the module "generator": it makes the samples.
    players: ClassVar[Players] = Players(generators="generator", encoders="encoder")
    presets: ClassVar[dict[str, dict[str, Any]]] = AUTOENCODER_PRESETS
    prior: Any
    loss: Any
    likelihood: bool = False  # the loss is a normalised -log p(x|z) (is_likelihood); set by build_networks

    def code(self, m: Modules, x: Tensor) -> Tensor:
        """The deterministic code: the encoder's output, in the prior's support (``shape_code``)."""
        return shape_code(self.prior, m.encoder(x))

    def encode(self, m: Modules, x: Tensor, y: Tensor | None = None) -> Tensor:
        return self.code(m, x)

    def decode(self, m: Modules, z: Tensor, y: Tensor | None = None) -> Tensor:
        return decoded_mean(self.loss, m.generator(z))

    def sample(self, m: Modules, n: int, y: Tensor | None = None) -> Tensor:
        z = prior_sample(self.prior, n, device_of(m.generator), y)
        return self.decode(m, z)

    def reconstruct(self, m: Modules, x: Tensor, y: Tensor | None = None) -> Tensor:
        return self.decode(m, self.code(m, x))

    def model_fields(self) -> dict[str, Any]:
        """The :class:`AutoencoderModel` fields every autoencoder fills the same way."""
        return {
            "sample": self.sample,
            "reconstruct": self.reconstruct,
            "encode": self.encode,
            "decode": self.decode,
            "prior": self.prior,
            "num_classes": categorical_block(self.prior),
        }

    # --- building ---------------------------------------------------------------------------

    def build_networks(self, ctx: BuildContext, encoder_dim: int) -> tuple[nn.Module, nn.Module]:
        """Build ``self.loss`` (the ``loss`` slot), then the encoder ``x -> encoder_dim`` outputs
        and the decoder ``z (latent_dim) -> x`` (a linear output for a loss on logits, see
        :func:`decoder_spec`), in that order (the order of their initial weights)."""
        latent_dim, shape = self.options.latent_dim, ctx.data.shape
        self.loss = ctx["loss"].build()
        self.likelihood = is_likelihood(self.loss)
        encoder = ctx["encoder"].build(in_shape=shape, out_dim=encoder_dim, num_classes=0)
        decoder = decoder_spec(ctx["generator"], self.loss).build(
            latent_dim=latent_dim, out_shape=shape, num_classes=0
        )
        return encoder, decoder

    def single_phase_model(
        self,
        ctx: BuildContext,
        encoder_dim: int,
        optim: Optim,
        log_weights: Callable[[Modules, Tensor, int], Tensor] | None = None,
    ) -> AutoencoderModel:
        """The model of a one-phase autoencoder (``ae``, ``vae``, ``vsc``): the networks of
        :meth:`build_networks` and one ``autoencoder`` phase that runs ``self.step`` on both and
        provides what the variant declares for it.

        ``log_weights`` (ELBO and IWAE estimates) is dropped, with a one-line note in the log,
        when the loss is not a likelihood (:func:`is_likelihood`): those numbers would be off by
        the cost's missing normalising constant (``32 log pi = 36.6`` nats for ``mse`` on digits).

        A prior that is built from the encoder (:func:`needs_encoder`) is the module ``prior``:
        the phase trains it with the networks and the export holds it with the encoder, which
        sampling needs."""
        encoder, decoder = self.build_networks(ctx, encoder_dim)
        if log_weights is not None and not self.likelihood:
            log_weights = None
            name, loss = type(self).__name__.lower(), ctx["loss"].name
            logging.getLogger(__name__).warning(
                f"{name}: loss '{loss}' is not a normalised likelihood -log p(x|z), so elbo and "
                f"log_likelihood are not reported; a likelihood loss reports them: gaussian (with "
                f"--loss.sigma 0.70710678 it is mse plus a constant) or bernoulli (binary data)"
            )
        provides = self.phases["autoencoder"].provides
        modules = {"encoder": encoder, "generator": decoder}
        export: tuple[str, ...] = ("generator",)
        if needs_encoder(self.prior):
            modules["prior"] = self.prior
            export = ("generator", "encoder", "prior")
        phase = Phase("autoencoder", tuple(modules), self.step, optim, provides=provides)
        return AutoencoderModel(
            modules=modules,
            phases=[phase],
            export=export,
            **self.model_fields(),
            log_weights=log_weights,
        )

    def step(self, batch: Batch, m: Modules) -> PhaseOutput:
        raise NotImplementedError

    # --- the latent critic (aae, wae-gan) ---------------------------------------------------

    adversarial: Any
    critic_weight: float = 1.0  # the critic's loss is scaled by it (WAE-GAN's lambda)

    def build_latent_critic(self, ctx: BuildContext, dim: int | None = None) -> nn.Module:
        """A latent critic ``(B, dim) -> (B, 1)`` of the ``critic`` slot (``dim``: the latent
        size by default); also builds ``self.adversarial``, the loss of its game."""
        dim = self.options.latent_dim if dim is None else dim
        critic = ctx["critic"].build(in_shape=(dim,), out_dim=1, num_classes=0)
        self.adversarial = ctx["adversarial"].build()
        return critic

    def critic_phase(
        self,
        lr: float,
        betas: tuple[float, float],
        fresh_batch: bool = True,
        modules: tuple[str, ...] = ("critic",),
        step: Callable[[Batch, Modules], PhaseOutput] | None = None,
    ) -> Phase:
        """The ``critic`` phase: ``step`` (:meth:`critic_step` by default) on the ``modules``."""
        return Phase(
            "critic",
            modules,
            step or self.critic_step,
            Optim("adam", lr, betas),
            fresh_batch=fresh_batch,
            provides=self.phases["critic"].provides,
        )

    def critic_step(self, batch: Batch, m: Modules) -> PhaseOutput:
        """The latent critic learns to tell prior samples (real) from the batch's codes (fake):
        ``critic_weight`` times the ``adversarial`` loss's critic objective."""
        with torch.no_grad():
            z = self.code(m, batch.x)
        prior_z = self.prior.sample(len(batch), device=device_of(m.critic))
        critic = latent_critic_fn(m)
        real_scores, fake_scores = critic(prior_z), critic(z)
        loss = self.critic_weight * self.adversarial.critic_loss(real_scores, fake_scores)
        return PhaseOutput(
            loss,
            context={
                "real": prior_z,
                "fake": z,
                "critic": critic,
                "labels": None,
                "real_scores": real_scores,
                "fake_scores": fake_scores,
            },
            logs={"prior_score": real_scores.detach(), "code_score": fake_scores.detach()},
        )


def build_prior(ctx: Any, dim: int, gaussian_encoder: bool = False) -> Any:
    """The prior of slot ``prior``; a prior that cannot take this dimension is a GenfwError.

    A variant with a Gaussian encoder says ``gaussian_encoder``: a prior that ``needs_encoder``
    is then built with the data (``data=ctx.data``); without it such a prior refuses itself."""
    spec = ctx["prior"]
    context = {"data": ctx.data} if gaussian_encoder and needs_encoder(spec.component.factory) else {}
    try:
        return spec.build(dim=dim, **context)
    except ValueError as exc:
        raise GenfwError(f"prior '{spec.name}': {exc}") from None


def marginal_mmd(
    z: Tensor,
    prior_z: Tensor,
    sigma2: float = 1.0,
    scales: Sequence[float] | None = None,
    max_elements: int = 2**22,
) -> Tensor:
    """Sum over coordinates ``j`` of the 1-D MMD^2 between ``z[:, j]`` and ``prior_z[:, j]``
    (``mmd_imq`` on one coordinate: inverse multiquadratics ``C / (C + (a - b)^2)`` with
    ``C = 2 sigma2 s`` for ``s`` in ``scales``, the WAE scales by default). It is the MMD of
    the additive kernel ``sum_j k(a_j, b_j)``: it compares the marginals one by one, and so sees
    a per-coordinate atom (spike and slab) that the joint kernel on all coordinates barely does.

    Coordinates are taken in chunks of at most ``max_elements / (scales * n * m)`` (all at once
    for training batches; a few at a time for a metric's thousand samples), so memory stays
    ``O(max_elements)`` whatever the latent size."""
    from genfw_plugins.regularisers import WAE_SCALES

    n, m = z.shape[0], prior_z.shape[0]
    if n < 2 or m < 2:
        raise ValueError(f"marginal_mmd needs at least 2 samples on each side, got {n} and {m}")
    c = 2.0 * sigma2 * z.new_tensor(WAE_SCALES if scales is None else list(scales)).view(-1, 1, 1, 1)
    chunk = max(1, max_elements // (c.numel() * max(n, m) ** 2))
    total = z.new_zeros(())
    for j in range(0, z.shape[1], chunk):
        a, b = z[:, j : j + chunk], prior_z[:, j : j + chunk]  # (n, J), (m, J)
        d_xx = (a.unsqueeze(1) - a.unsqueeze(0)).square()  # (n, n, J): one matrix per coordinate
        d_yy = (b.unsqueeze(1) - b.unsqueeze(0)).square()  # (m, m, J)
        d_xy = (a.unsqueeze(1) - b.unsqueeze(0)).square()  # (n, m, J)
        k_xx, k_yy, k_xy = c / (c + d_xx), c / (c + d_yy), c / (c + d_xy)  # (scales, ., ., J)
        # Unbiased: the within-sample diagonals (each exactly 1) are left out, as in mmd_imq.
        within_x = (k_xx.sum((1, 2)) - n) / (n * (n - 1))
        within_y = (k_yy.sum((1, 2)) - m) / (m * (m - 1))
        total = total + (within_x + within_y - 2.0 * k_xy.mean((1, 2))).sum()
    return total


def latent_critic_fn(m: Modules, name: str = "critic"):
    """The latent critic ``m[name]`` as ``critic(z, y=None) -> (B,)`` raw scores."""

    def critic(z: Tensor, y: Tensor | None = None) -> Tensor:
        return m[name](z).squeeze(1)

    return critic
