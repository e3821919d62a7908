"""SNGAN (Miyato et al. 2018): ResNet networks, spectral norm on the critic, hinge loss.

The recipe of the authors' CIFAR-10 configs (pfnet-research/sngan_projection,
``configs/sn_cifar10_conditional.yml`` and ``sn_cifar10_unconditional.yml``): the ``resnet``
generator and critic (``genfw_plugins/resnet.py``), spectral normalisation of every critic weight
(the ``spectral_norm`` callback, attached as a remedy), the ``hinge`` loss, n_critic 5 and
Adam(2e-4, beta1 0, beta2 0.9) for both players, latent size 128. Conditional (Miyato & Koyama
2018) when the data has labels (``conditional: auto``): the critic projects (``--critic.conditioning
projection``) and the generator uses conditional batch norm (``--generator.conditioning cbn``), the
networks' defaults. ``conditional: always`` refuses unlabelled data, ``never`` ignores labels.

The phases are the shared adversarial step (``genfw_plugins/_adversarial.py``): fakes are drawn for
the real batch's labels. Where genfw departs from the authors' code (README, section ``sngan``): no
linear decay of the learning rates to 0, and the generator's batch is the critic's (the authors'
is twice as large, 128 for 64).
"""

from __future__ import annotations

from typing import Any, ClassVar

import attrs

import genfw
from genfw import BuildContext, Slot
from genfw import validators as check
from genfw.hookspecs import Register
from genfw_plugins.conditional import data_classes
from genfw_plugins.gan import GAN


@attrs.define
class SNGANOptions:
    latent_dim: int = attrs.field(default=128, validator=check.at_least(1))
    lr_generator: float = attrs.field(default=2e-4, validator=check.positive)
    lr_critic: float = attrs.field(default=2e-4, validator=check.positive)
    beta1: float = attrs.field(default=0.0, validator=check.in_interval(0, 1, high_open=True))
    beta2: float = attrs.field(default=0.9, validator=check.in_interval(0, 1, high_open=True))
    n_critic: int = attrs.field(default=5, validator=check.at_least(1))  # critic steps per training step
    n_generator: int = attrs.field(default=1, validator=check.at_least(1))  # generator steps per step
    # auto: conditioned on the labels when the data set has classes; always: refuses unlabelled
    # data; never: unconditional even on labelled data. (Not yes/no: YAML reads those as booleans.)
    conditional: str = attrs.field(default="auto", validator=check.one_of("auto", "always", "never"))


class SNGAN(GAN):
    """SNGAN (Miyato et al. 2018): ResNet networks, spectral-norm critic, hinge loss, n_critic 5."""

    slots: ClassVar[dict[str, Slot]] = {
        **GAN.slots,
        "generator": Slot("generator", "resnet", help="maps prior codes (and a label) to samples"),
        "critic": Slot("critic", "resnet", help="scores samples (given their label)"),
        "loss": Slot("loss", "hinge", role="adversarial"),
    }
    # Unconditional with conditional: never or unlabelled data; a conditional model is refused by
    # experience replay and packing when it is built (a past fake, a pack, has no label).
    replayable: ClassVar[bool] = True
    options: SNGANOptions

    @classmethod
    def remedies(cls, options: SNGANOptions) -> dict[str, dict[str, Any]]:
        return {"spectral_norm": {}}

    def classes(self, ctx: BuildContext) -> int:
        mode = self.options.conditional
        if mode == "never":
            return 0
        if mode == "always":
            return data_classes(ctx, type(self).__name__.lower())  # sngan, biggan
        return max(ctx.data.num_classes, 0)


@genfw.hookimpl
def genfw_register_variants(register: Register) -> None:
    register(
        "sngan",
        SNGAN,
        options=SNGANOptions,
        help="SNGAN (Miyato et al. 2018): ResNet networks, spectral-norm critic, hinge loss, n_critic 5, "
        "Adam(2e-4, 0, 0.9); projection and conditional BN when the data has labels.",
    )
