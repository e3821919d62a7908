"""Least-squares GAN loss for genfw (Mao et al. 2017, "Least Squares Generative Adversarial
Networks"), registered as the adversarial loss ``least_squares``.

With the paper's a-b-c coding (``a`` the target of fakes, ``b`` the target of real examples,
``c`` the value the generator wants the critic to give its fakes)::

    critic:    min_D  1/2 E_x (D(x) - b)^2 + 1/2 E_z (D(G(z)) - a)^2
    generator: min_G  1/2 E_z (D(G(z)) - c)^2

``D`` is the critic's raw (linear) output, which is what genfw hands an adversarial loss. The
defaults ``a = 0, b = c = 1`` are the paper's common choice; ``a = -1, b = 1, c = 0`` satisfies
``b - c = 1, b - a = 2`` and makes the objective the Pearson chi^2 divergence (its section 3.2).

Use it with any variant whose loss slot is adversarial::

    genfw train --plugin gan --loss least_squares --loss.a -1 --loss.b 1 --loss.c 0
"""

from __future__ import annotations

from typing import Any

import attrs
import genfw
import torch.nn.functional as F
from genfw.hookspecs import Register
from torch import Tensor

__version__ = "0.1.0"


def _differs_from_a(instance: Any, attribute: attrs.Attribute, value: float) -> None:
    # With b == a the critic has nothing to tell apart and the generator gets no signal.
    if value == instance.a:
        raise ValueError(
            f"{attribute.name} (the target of real examples) must differ from a, both are {value}"
        )


@attrs.define
class LeastSquaresOptions:
    """Targets of the least-squares losses, in the paper's a-b-c coding."""

    a: float = 0.0  # the critic's target for generated examples
    b: float = attrs.field(default=1.0, validator=_differs_from_a)  # the critic's target for real examples
    c: float = 1.0  # the score the generator wants the critic to give its samples


class LeastSquaresLoss:
    """Least-squares GAN (Mao et al. 2017): critic 1/2 (D(x) - b)^2 + 1/2 (D(G(z)) - a)^2, G 1/2 (D(G(z)) - c)^2."""

    role = "adversarial"

    def __init__(self, options: LeastSquaresOptions) -> None:
        self.a, self.b, self.c = options.a, options.b, options.c

    @staticmethod
    def _half_mse(scores: Tensor, target: float) -> Tensor:
        # F.mse_loss runs in float32 under autocast, so mixed precision cannot overflow the squares.
        return 0.5 * F.mse_loss(scores, scores.new_full(scores.shape, target))

    def critic_loss(self, real_scores: Tensor, fake_scores: Tensor) -> Tensor:
        """``1/2 E (D(x) - b)^2 + 1/2 E (D(G(z)) - a)^2`` over scores of shape ``(B,)``."""
        return self._half_mse(real_scores, self.b) + self._half_mse(fake_scores, self.a)

    def generator_loss(self, fake_scores: Tensor, real_scores: Tensor | None = None) -> Tensor:
        """``1/2 E (D(G(z)) - c)^2``; the real scores are not needed."""
        return self._half_mse(fake_scores, self.c)


@genfw.hookimpl
def genfw_register_losses(register: Register) -> None:
    register("least_squares", LeastSquaresLoss, options=LeastSquaresOptions)
