"""The GAN of Goodfellow et al. (2014): a critic phase, then a generator phase.

The critic ascends ``E log D(x) + E log(1 - D(G(z)))``; the generator descends
``E log(1 - D(G(z)))`` (``--loss minimax``) or, by default, ascends ``E log D(G(z))``
(``--loss non_saturating``, the paper's practical advice). Both objectives live in
``genfw_plugins/losses.py``; the phases are the shared adversarial step of
``genfw_plugins/_adversarial.py`` with its default hooks.
"""

from __future__ import annotations

from typing import Any, ClassVar

import attrs
from torch import Tensor, nn

import genfw
from genfw import Batch, BuildContext, Model, Modules, Optim, Slot, device_of
from genfw import validators as check
from genfw.contracts import PhaseSpec, Players, Variant
from genfw_plugins._adversarial import AdversarialGAN


@attrs.define
class GANOptions:
    latent_dim: int = attrs.field(default=64, validator=check.at_least(1))
    lr_generator: float = attrs.field(default=2e-4, validator=check.positive)
    lr_critic: float = attrs.field(default=2e-4, validator=check.positive)
    beta1: float = attrs.field(default=0.5, validator=check.in_interval(0, 1, high_open=True))
    beta2: float = attrs.field(default=0.999, validator=check.in_interval(0, 1, high_open=True))
    n_critic: int = attrs.field(default=1, validator=check.at_least(1))  # critic steps per training step
    # Generator steps per training step (each on fresh noise): slows the critic by update ratio.
    n_generator: int = attrs.field(default=1, validator=check.at_least(1))


class GAN(AdversarialGAN, Variant):
    """Adversarial training of a generator against a critic (Goodfellow et al. 2014)."""

    slots: ClassVar[dict[str, Slot]] = {
        "generator": Slot("generator", "mlp", help="maps prior codes to samples"),
        "critic": Slot("critic", "mlp", help="scores samples"),
        "prior": Slot("prior", "normal", help="distribution of the generator's input codes"),
        "loss": Slot("loss", "non_saturating", role="adversarial"),
    }
    players: ClassVar[Players] = Players(generators="generator", critics="critic")
    # "real" in the generator phase is the batch the critic phase last saw; "features" the
    # critic's features before its head (feature matching).
    phases: ClassVar[dict[str, PhaseSpec]] = {
        "critic": PhaseSpec(
            {"real", "fake", "critic", "labels", "real_scores", "fake_scores"},
            help="the critic minimises the loss's critic objective on a real batch and as many fakes",
        ),
        "generator": PhaseSpec(
            {"real", "fake", "critic", "features", "labels", "fake_scores"},
            help="the generator minimises the loss's generator objective on fresh fakes",
        ),
    }
    # The critic step scores unconditional fakes of ``m.generator`` that experience replay may
    # swap for past ones (a conditional variant sets it false: a past fake has no label).
    replayable: ClassVar[bool] = True
    optimizer: ClassVar[str] = "adam"
    options: GANOptions
    num_classes: int = 0  # classes the players are conditioned on; build sets it from classes()

    def build(self, ctx: BuildContext) -> Model:
        o = self.options
        self.num_classes = self.classes(ctx)
        generator, critic = self.networks(ctx)
        self.prior = ctx["prior"].build(dim=o.latent_dim)
        self.loss = ctx["loss"].build()
        return Model(
            modules={"generator": generator, "critic": critic},
            phases=self.adversarial_phases(
                ctx,
                self.optim(o.lr_critic),
                self.optim(o.lr_generator),
                n_critic=o.n_critic,
                # Options of a subclass's own may lack it (one generator step then).
                n_generator=getattr(o, "n_generator", 1),
                critic_provides=self.phases["critic"].provides,
                generator_provides=self.phases["generator"].provides,
            ),
            sample=self.sample,
            num_classes=self.num_classes,
        )

    def classes(self, ctx: BuildContext) -> int:
        """How many classes the players are conditioned on: none here (cgan: the data's)."""
        return 0

    def networks(self, ctx: BuildContext) -> tuple[nn.Module, nn.Module]:
        """The generator and the critic (one score per sample), both given labels where
        ``self.num_classes > 0`` (one-hot, as in Mirza & Osindero 2014)."""
        k, shape = self.num_classes, ctx.data.shape
        generator = ctx["generator"].build(latent_dim=self.options.latent_dim, out_shape=shape, num_classes=k)
        critic = ctx["critic"].build(in_shape=shape, out_dim=1, num_classes=k)
        return generator, critic

    def labels(self, batch: Batch) -> Tensor | None:
        """The batch's labels where the players are conditional, else ``None``."""
        return batch.y if self.num_classes else None

    def optim(self, lr: float) -> Optim:
        """A player's optimiser recipe (WGAN overrides it: RMSProp has no betas)."""
        return Optim(self.optimizer, lr, (self.options.beta1, self.options.beta2))

    def sample(self, m: Modules, n: int, y: Tensor | None = None) -> Tensor:
        return m.generator(self.noise(n, device_of(m.generator)), y if self.num_classes else None)


class LSGAN(GAN):
    """Least-squares GAN (Mao et al. 2017): the GAN recipe with the ``least_squares`` loss.

    The paper's settings: 0-1 coding (a = 0, b = c = 1), Adam(2e-4, beta1 0.5).
    """

    slots: ClassVar[dict[str, Slot]] = {
        **GAN.slots,
        "loss": Slot("loss", "least_squares", role="adversarial"),
    }


@attrs.define
class DRAGANOptions(GANOptions):
    # The authors' code (kodalinaveen3/DRAGAN): Adam(1e-4, 0.5, 0.9).
    lr_generator: float = attrs.field(default=1e-4, validator=check.positive)
    lr_critic: float = attrs.field(default=1e-4, validator=check.positive)
    beta2: float = attrs.field(default=0.9, validator=check.in_interval(0, 1, high_open=True))


class DRAGAN(GAN):
    """DRAGAN (Kodali et al. 2017): the GAN loss plus a gradient penalty around real data.

    The penalty is the ``dragan`` regulariser (``genfw_plugins/regularisers.py``), lambda = 10.
    """

    @classmethod
    def remedies(cls, options: DRAGANOptions) -> dict[str, dict[str, Any]]:
        return {"dragan": {"weight": 10.0}}


@genfw.hookimpl
def genfw_register_variants(register):
    register("gan", GAN, options=GANOptions)
    register(
        "lsgan",
        LSGAN,
        options=GANOptions,
        help="Least-squares GAN (Mao et al. 2017): GAN recipe with the least_squares loss.",
    )
    register(
        "dragan",
        DRAGAN,
        options=DRAGANOptions,
        help="DRAGAN (Kodali et al. 2017): GAN loss + gradient penalty around perturbed real data.",
    )
