"""Relativistic average GAN losses for genfw (Jolicoeur-Martineau 2019, "The relativistic
discriminator: a key element missing from standard GAN", ICLR), registered as the adversarial loss
``relativistic_average``.

The critic does not judge a sample alone but whether it is more realistic than the other side on
average. With ``C`` the critic's raw output, the relativistic average scores are::

    D~(x_r) = C(x_r) - E_{x_f} C(x_f)        D~(x_f) = C(x_f) - E_{x_r} C(x_r)

and the objectives of the paper's section 4.2 (eq. for RaSGAN, RaLSGAN and RaHingeGAN) are, with
``f1, f2, g1, g2`` depending on ``form``::

    critic:    E_{x_r} f1(D~(x_r)) + E_{x_f} f2(D~(x_f))
    generator: E_{x_f} g1(D~(x_f)) + E_{x_r} g2(D~(x_r))

- ``form: sgan`` (RaSGAN, the default): ``f1(y) = g1(y) = -log sigmoid(y) = softplus(-y)``,
  ``f2(y) = g2(y) = -log(1 - sigmoid(y)) = softplus(y)``;
- ``form: lsgan`` (RaLSGAN): ``f1(y) = g1(y) = (y - 1)^2``, ``f2(y) = g2(y) = (y + 1)^2``;
- ``form: hinge`` (RaHingeGAN): ``f1(y) = g1(y) = max(0, 1 - y)``, ``f2(y) = g2(y) = max(0, 1 + y)``.

Unlike the standard GAN, the generator's objective depends on the real scores too (its
``g2`` term), so the loss sets ``needs_real_scores = True`` and genfw's adversarial variants pass
them. Expectations are batch means, as in the paper's code.

Use it with any variant whose loss slot is adversarial::

    genfw train --plugin gan --loss relativistic_average --loss.form hinge
"""

from __future__ import annotations

import attrs
import genfw
import torch.nn.functional as F
from genfw import validators as check
from genfw.hookspecs import Register
from torch import Tensor

__version__ = "0.1.0"

FORMS = ("sgan", "lsgan", "hinge")


@attrs.define
class RelativisticOptions:
    """Options of the relativistic average losses."""

    # Which f1, f2 (critic) and g1, g2 (generator): the paper's RaSGAN, RaLSGAN or RaHingeGAN.
    form: str = attrs.field(default="sgan", validator=check.one_of(*FORMS))


def _more_real(y: Tensor, form: str) -> Tensor:
    """``f1 = g1``: the cost of a relativistic score ``y`` for a side that should look more real."""
    if form == "sgan":
        return F.softplus(-y)  # -log sigmoid(y)
    if form == "lsgan":
        return (y - 1.0).square()
    return F.relu(1.0 - y)


def _less_real(y: Tensor, form: str) -> Tensor:
    """``f2 = g2``: the cost of ``y`` for a side that should look less real."""
    if form == "sgan":
        return F.softplus(y)  # -log(1 - sigmoid(y))
    if form == "lsgan":
        return (y + 1.0).square()
    return F.relu(1.0 + y)


class RelativisticAverageLoss:
    """Relativistic average GAN (Jolicoeur-Martineau 2019): is real data more realistic than fake on average?"""

    role = "adversarial"
    needs_real_scores = True

    def __init__(self, options: RelativisticOptions) -> None:
        self.form = options.form

    def critic_loss(self, real_scores: Tensor, fake_scores: Tensor) -> Tensor:
        """``E f1(C(x_r) - E C(x_f)) + E f2(C(x_f) - E C(x_r))`` over scores of shape ``(B,)``."""
        real_rel = real_scores - fake_scores.mean()
        fake_rel = fake_scores - real_scores.mean()
        return _more_real(real_rel, self.form).mean() + _less_real(fake_rel, self.form).mean()

    def generator_loss(self, fake_scores: Tensor, real_scores: Tensor | None = None) -> Tensor:
        """``E g1(C(x_f) - E C(x_r)) + E g2(C(x_r) - E C(x_f))``: the critic's objective, sides swapped."""
        if real_scores is None:
            raise genfw.GenfwError(
                "the relativistic_average loss needs the critic's real scores in the generator step; "
                "use a variant that passes them (gan, wgan-gp)"
            )
        return self.critic_loss(fake_scores, real_scores)


@genfw.hookimpl
def genfw_register_losses(register: Register) -> None:
    register("relativistic_average", RelativisticAverageLoss, options=RelativisticOptions)
