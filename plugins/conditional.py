"""Class-conditional GANs: ``cgan`` (Mirza & Osindero 2014) and ``acgan`` (Odena et al. 2017).

Labels flow from the data set: each batch's labels ``y`` condition the generator, so the fakes of a
step are drawn for the real batch's classes (the data's class distribution). Both variants declare
``Model.num_classes``, so the loop saves sample grids with one labelled row per class and
``genfw sample RUN --label 3`` draws class 3.

- ``cgan``: G(z, y) and D(x, y), the label one-hot encoded into both networks' inputs
  (``genfw_plugins/networks.py``); otherwise the GAN of ``genfw_plugins/gan.py``.
- ``acgan``: G(z, y); the critic sees no label but predicts it: it returns ``1 + K`` outputs, the
  real/fake score and K class logits. With ``L_S`` the adversarial loss of the loss slot and
  ``CE`` the cross-entropy of the class logits against the labels (``-log P(C = c | X)``)::

      critic:    L_S(critic) + class_weight * (CE(real, y) + CE(G(z, y), y))
      generator: L_S(generator) + class_weight * CE(G(z, y), y)

  i.e. the critic maximises ``L_S + L_C`` and the generator ``L_C - L_S`` of the paper, where
  ``L_C`` is the class log-likelihood of real and generated samples.
"""

from __future__ import annotations

from typing import ClassVar

import attrs
import torch.nn.functional as F
from torch import Tensor, nn

import genfw
from genfw import BuildContext, GenfwError, Slot
from genfw import validators as check
from genfw_plugins._adversarial import HeadedCritic, Scores, Turn
from genfw_plugins.gan import GAN, GANOptions


def data_classes(ctx: BuildContext, variant: str) -> int:
    """The data set's number of classes; a data set without labels cannot condition a GAN."""
    if ctx.data.num_classes < 1:
        raise GenfwError(
            f"variant '{variant}' needs a labelled data set (one with classes, e.g. digits); this one has none"
        )
    return ctx.data.num_classes


class CGAN(GAN):
    """Conditional GAN (Mirza & Osindero 2014): G(z, y) and D(x, y)."""

    slots: ClassVar[dict[str, Slot]] = {
        **GAN.slots,
        "generator": Slot("generator", "mlp", help="maps prior codes and a label to samples"),
        "critic": Slot("critic", "mlp", help="scores a sample given its label"),
    }
    replayable: ClassVar[bool] = False  # experience replay: a past fake has no label

    def classes(self, ctx: BuildContext) -> int:
        return data_classes(ctx, "cgan")


@attrs.define
class ACGANOptions(GANOptions):
    # Weight of the class cross-entropy in both players' objectives (the paper adds L_C with weight 1).
    class_weight: float = attrs.field(default=1.0, validator=check.non_negative)


class ACGAN(HeadedCritic, GAN):
    """Auxiliary-classifier GAN (Odena et al. 2017): G(z, y); the critic also classifies."""

    slots: ClassVar[dict[str, Slot]] = {
        **GAN.slots,
        "generator": Slot("generator", "mlp", help="maps prior codes and a label to samples"),
        "critic": Slot("critic", "mlp", help="scores samples and predicts their class (1 + K outputs)"),
    }
    replayable: ClassVar[bool] = False  # experience replay: a past fake has no label

    def classes(self, ctx: BuildContext) -> int:
        return data_classes(ctx, "acgan")

    def networks(self, ctx: BuildContext) -> tuple[nn.Module, nn.Module]:
        k, shape = self.num_classes, ctx.data.shape
        generator = ctx["generator"].build(latent_dim=self.options.latent_dim, out_shape=shape, num_classes=k)
        # The critic is not given the label: it predicts it (column 0: score, 1..K: class logits).
        critic = ctx["critic"].build(in_shape=shape, out_dim=1 + k, num_classes=0)
        return generator, critic

    # Scores and features: HeadedCritic (the class logits are the heads).
    def critic_extra(self, t: Turn, real: Scores, fake: Scores) -> tuple[Tensor, dict[str, Tensor]]:
        labels = t.labels
        class_real = F.cross_entropy(real.heads, labels)
        class_fake = F.cross_entropy(fake.heads, labels)
        return self.options.class_weight * (class_real + class_fake), {
            "class_real": class_real.detach(),
            "class_fake": class_fake.detach(),
            "accuracy_real": (real.heads.argmax(1) == labels).float().mean(),
            "accuracy_fake": (fake.heads.argmax(1) == labels).float().mean(),
        }

    def generator_extra(self, t: Turn, fake: Scores) -> tuple[Tensor, dict[str, Tensor]]:
        class_fake = F.cross_entropy(fake.heads, t.labels)
        return self.options.class_weight * class_fake, {"class_fake": class_fake.detach()}


@genfw.hookimpl
def genfw_register_variants(register):
    register(
        "cgan",
        CGAN,
        options=GANOptions,
        help="Conditional GAN (Mirza & Osindero 2014): generator and critic both see the label.",
    )
    register(
        "acgan",
        ACGAN,
        options=ACGANOptions,
        help="Auxiliary-classifier GAN (Odena et al. 2017): the critic also predicts the class.",
    )
