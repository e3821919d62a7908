"""BiGAN / ALI for genfw: a whole training recipe as a third-party plugin, registered as the
variant ``bigan``.

Bidirectional GAN (Donahue, Krähenbühl & Darrell 2017, "Adversarial feature learning") and
Adversarially Learned Inference (Dumoulin et al. 2017) learn a generator ``G: z -> x`` and an
encoder ``E: x -> z`` at once. The critic sees *pairs*: ``(x, E(x))`` for data and
``(G(z), z)`` for codes drawn from the prior, and solves::

    min_{G,E} max_D  V(D, E, G) = E_x log D(x, E(x)) + E_z log(1 - D(G(z), z))

At the optimum ``E`` and ``G`` invert each other (the paper's Theorem 2), so ``G(E(x))``
reconstructs ``x`` although no reconstruction loss is ever computed.

In genfw terms: two phases. ``critic`` minimises the loss slot's ``critic_loss(real, fake)``
with ``real = D(x, E(x))`` and ``fake = D(G(z), z)`` (``E`` and ``G`` held fixed); ``generator``
trains ``G`` and ``E`` together on the same objective with the two sides swapped,
``critic_loss(fake, real)``. With the default ``non_saturating`` loss this is the "inverted
labels" objective both papers train with, ``-E log D(G(z), z) - E log(1 - D(x, E(x)))``; with
``wasserstein`` it is exactly the minimax game.

The critic reads a pair as one flat vector ``[x flattened, z]`` (``in_shape = (prod(shape) +
latent_dim,)``), so its slot takes a network for vectors (``mlp``, the default). The critic
phase provides ``real``, ``fake`` (the pairs) and ``critic`` to regularisers, so
``--regulariser gradient_penalty`` penalises the critic on the joint space.

    genfw train --plugin bigan --dataset toy2d --plugin.latent_dim 2
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import ClassVar

import attrs
import genfw
import torch
from genfw import Batch, BuildContext, Model, Modules, Optim, Phase, PhaseOutput, Slot, device_of
from genfw import validators as check
from genfw.contracts import PhaseSpec, Players, Variant
from genfw.hookspecs import Register
from torch import Tensor

__version__ = "0.1.0"


@attrs.define
class BiGANModel(Model):
    """genfw's Model plus ``reconstruct(m, x, y) = G(E(x))``, the inversion BiGAN learns."""

    reconstruct: Callable[[Modules, Tensor, Tensor | None], Tensor] | None = None


@attrs.define
class BiGANOptions:
    """Options of the BiGAN variant (defaults: the BiGAN paper's Adam settings)."""

    latent_dim: int = attrs.field(default=16, validator=check.at_least(1))
    lr_generator: float = attrs.field(default=2e-4, validator=check.positive)  # G and E together
    lr_critic: float = attrs.field(default=2e-4, validator=check.positive)
    beta1: float = attrs.field(default=0.5, validator=check.in_interval(0, 1, high_open=True))
    beta2: float = attrs.field(default=0.999, validator=check.in_interval(0, 1, high_open=True))


# Both phases score the same pairs: "real" is (x, E(x)) and "fake" (G(z), z), flattened.
PAIRS = frozenset({"real", "fake", "critic", "labels", "real_scores", "fake_scores"})


class BiGAN(Variant):
    """BiGAN / ALI (Donahue et al. 2017; Dumoulin et al. 2017): a critic on (x, z) pairs trains G and an encoder."""

    slots: ClassVar[dict[str, Slot]] = {
        "generator": Slot("generator", "mlp", help="maps prior codes to samples"),
        "encoder": Slot("encoder", "mlp", help="maps samples to codes (the inverse of the generator)"),
        "critic": Slot("critic", "mlp", help="scores (x, z) pairs, flattened to one vector"),
        "prior": Slot("prior", "normal", help="distribution of the codes"),
        "loss": Slot("loss", "non_saturating", role="adversarial"),
    }
    players: ClassVar[Players] = Players(generators="generator", encoders="encoder", critics="critic")
    phases: ClassVar[dict[str, PhaseSpec]] = {
        "critic": PhaseSpec(PAIRS, help="the critic tells data pairs (x, E(x)) from code pairs (G(z), z)"),
        "generator": PhaseSpec(
            PAIRS, help="G and E together, on the critic's objective with the sides swapped"
        ),
    }
    options: BiGANOptions

    def build(self, ctx: BuildContext) -> Model:
        o = self.options
        shape = ctx.data.shape
        generator = ctx["generator"].build(latent_dim=o.latent_dim, out_shape=shape, num_classes=0)
        encoder = ctx["encoder"].build(in_shape=shape, out_dim=o.latent_dim, num_classes=0)
        pair_dim = math.prod(shape) + o.latent_dim
        critic = ctx["critic"].build(in_shape=(pair_dim,), out_dim=1, num_classes=0)
        self.prior = ctx["prior"].build(dim=o.latent_dim)
        self.loss = ctx["loss"].build()
        betas = (o.beta1, o.beta2)
        return BiGANModel(
            modules={"generator": generator, "encoder": encoder, "critic": critic},
            phases=[
                Phase(
                    "critic",
                    ("critic",),
                    self.critic_step,
                    Optim("adam", o.lr_critic, betas),
                    provides=self.phases["critic"].provides,
                ),
                Phase(
                    "generator",
                    ("generator", "encoder"),
                    self.generator_step,
                    Optim("adam", o.lr_generator, betas),
                    fresh_batch=False,  # the same data batch as the critic's step
                    provides=self.phases["generator"].provides,
                ),
            ],
            sample=self.sample,
            reconstruct=self.reconstruct,
        )

    @staticmethod
    def pair(x: Tensor, z: Tensor) -> Tensor:
        """``(B, *shape), (B, latent_dim) -> (B, prod(shape) + latent_dim)``: what the critic reads."""
        return torch.cat([x.flatten(1), z], dim=1)

    def _scores(self, batch: Batch, m: Modules, *, train_players: bool) -> PhaseOutput:
        x = batch.x
        z = self.prior.sample(len(batch), device=x.device)  # (B, latent_dim)
        with torch.set_grad_enabled(train_players):
            real = self.pair(x, m.encoder(x))  # (x, E(x))
            fake = self.pair(m.generator(z), z)  # (G(z), z)
        if not train_players:
            real, fake = real.detach(), fake.detach()

        def critic(v: Tensor, y: Tensor | None = None) -> Tensor:
            return m.critic(v).squeeze(1)  # (B,)

        real_scores, fake_scores = critic(real), critic(fake)
        if train_players:  # G and E swap the sides: they want data pairs to look generated
            loss = self.loss.critic_loss(fake_scores, real_scores)
        else:
            loss = self.loss.critic_loss(real_scores, fake_scores)
        return PhaseOutput(
            loss,
            context={
                "real": real,
                "fake": fake,
                "critic": critic,
                "labels": None,
                "real_scores": real_scores,
                "fake_scores": fake_scores,
            },
            logs={"real_score": real_scores.detach(), "fake_score": fake_scores.detach()},
        )

    def critic_step(self, batch: Batch, m: Modules) -> PhaseOutput:
        return self._scores(batch, m, train_players=False)

    def generator_step(self, batch: Batch, m: Modules) -> PhaseOutput:
        return self._scores(batch, m, train_players=True)

    def sample(self, m: Modules, n: int, y: Tensor | None = None) -> Tensor:
        return m.generator(self.prior.sample(n, device=device_of(m.generator)))

    def reconstruct(self, m: Modules, x: Tensor, y: Tensor | None = None) -> Tensor:
        """``G(E(x))``: BiGAN's inversion, learnt without a reconstruction loss."""
        return m.generator(m.encoder(x))


@genfw.hookimpl
def genfw_register_variants(register: Register) -> None:
    register("bigan", BiGAN, options=BiGANOptions)
