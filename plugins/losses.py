"""Built-in losses.

Adversarial losses (``role = "adversarial"``) take raw critic scores (logits), shape ``(B,)``:
``minimax``, ``non_saturating``, ``wasserstein``, ``hinge`` and ``least_squares``. Reconstruction losses
(``role = "reconstruction"``) return a per-example cost ``(B,)`` summed over all non-batch
dimensions: ``mse``, ``l1``, ``gaussian`` and ``bernoulli``. The last two are normalised negative
log-likelihoods and declare ``likelihood = True``; ``mse`` and ``l1`` are costs without the
normalising constant (``mse`` is ``-log N(x; x_hat, I/2)`` less ``D/2 log pi``).
"""

from __future__ import annotations

import math
from typing import Any

import attrs
import torch
import torch.nn.functional as F
from torch import Tensor

import genfw
from genfw import validators as check
from genfw.hookspecs import Register

# --- adversarial --------------------------------------------------------------------------------


@attrs.define
class GANLossOptions:
    """Options of the minimax and non-saturating losses."""

    # Target of real examples in the critic's cross-entropy; 0.9 is one-sided label smoothing
    # (Salimans et al. 2016). Fake examples always have target 0.
    real_label: float = attrs.field(default=1.0, validator=check.in_interval(0, 1, low_open=True))


class MinimaxLoss:
    """Minimax GAN (Goodfellow et al. 2014): G minimises log(1 - D(G(z)))."""

    role = "adversarial"

    def __init__(self, options: GANLossOptions) -> None:
        self.real_label = options.real_label

    def critic_loss(self, real_scores: Tensor, fake_scores: Tensor) -> Tensor:
        """``-E log D(x) - E log(1 - D(G(z)))`` with ``D = sigmoid(score)``.

        Written as cross-entropy against targets ``real_label`` and 0, i.e.
        ``mean softplus(-r) + mean softplus(f)`` when ``real_label == 1``.
        """
        if self.real_label == 1.0:  # the common case, without a target tensor per step
            real = F.softplus(-real_scores).mean()
        else:
            real_target = real_scores.new_full(real_scores.shape, self.real_label)
            real = F.binary_cross_entropy_with_logits(real_scores, real_target)
        return real + F.softplus(fake_scores).mean()

    def generator_loss(self, fake_scores: Tensor, real_scores: Tensor | None = None) -> Tensor:
        # log(1 - sigmoid(f)) = -softplus(f); its gradient vanishes when D rejects the fakes.
        return -F.softplus(fake_scores).mean()


class NonSaturatingLoss(MinimaxLoss):
    """Non-saturating GAN (Goodfellow et al. 2014): G minimises -log D(G(z))."""

    def generator_loss(self, fake_scores: Tensor, real_scores: Tensor | None = None) -> Tensor:
        # -log sigmoid(f) = softplus(-f)
        return F.softplus(-fake_scores).mean()


class WassersteinLoss:
    """Wasserstein GAN (Arjovsky et al. 2017): critic maximises E f(x) - E f(G(z))."""

    role = "adversarial"

    def __init__(self, options: Any = None) -> None:
        pass

    def critic_loss(self, real_scores: Tensor, fake_scores: Tensor) -> Tensor:
        return fake_scores.mean() - real_scores.mean()

    def generator_loss(self, fake_scores: Tensor, real_scores: Tensor | None = None) -> Tensor:
        return -fake_scores.mean()


class HingeLoss:
    """Hinge GAN (Lim & Ye 2017; SAGAN): critic relu(1 - r) + relu(1 + f), G -E f."""

    role = "adversarial"

    def __init__(self, options: Any = None) -> None:
        pass

    def critic_loss(self, real_scores: Tensor, fake_scores: Tensor) -> Tensor:
        return F.relu(1.0 - real_scores).mean() + F.relu(1.0 + fake_scores).mean()

    def generator_loss(self, fake_scores: Tensor, real_scores: Tensor | None = None) -> Tensor:
        return -fake_scores.mean()


@attrs.define
class LeastSquaresOptions:
    """Targets of the least-squares GAN (Mao et al. 2017, eq. 2): the critic codes fakes as ``a``
    and data as ``b``; the generator wants its fakes scored ``c``. The defaults are the paper's
    0-1 coding (section 3.2.3); ``a = -1, b = 1, c = 0`` is its Pearson chi^2 setting."""

    a: float = 0.0
    b: float = 1.0
    c: float = 1.0

    def __attrs_post_init__(self) -> None:
        if self.a == self.b:
            raise ValueError(
                f"a and b must differ (the critic must tell fakes from data), got {self.a} for both"
            )


class LeastSquaresLoss:
    """Least-squares GAN (Mao et al. 2017): critic 1/2 E (D(x) - b)^2 + 1/2 E (D(G(z)) - a)^2,
    generator 1/2 E (D(G(z)) - c)^2, on raw scores (no sigmoid)."""

    role = "adversarial"

    def __init__(self, options: LeastSquaresOptions) -> None:
        self.a, self.b, self.c = options.a, options.b, options.c

    def critic_loss(self, real_scores: Tensor, fake_scores: Tensor) -> Tensor:
        return 0.5 * (real_scores - self.b).square().mean() + 0.5 * (fake_scores - self.a).square().mean()

    def generator_loss(self, fake_scores: Tensor, real_scores: Tensor | None = None) -> Tensor:
        return 0.5 * (fake_scores - self.c).square().mean()


# --- reconstruction -----------------------------------------------------------------------------


def _per_example(cost: Tensor) -> Tensor:
    """Sum an elementwise cost ``(B, ...)`` over all non-batch dimensions -> ``(B,)``."""
    return cost.flatten(1).sum(dim=1)


class SquaredErrorLoss:
    """Sum of squared errors ||x - x_hat||^2 per example."""

    role = "reconstruction"

    def __init__(self, options: Any = None) -> None:
        pass

    def __call__(self, x_hat: Tensor, x: Tensor) -> Tensor:
        return _per_example((x_hat - x).square())


class AbsoluteErrorLoss:
    """Sum of absolute errors ||x - x_hat||_1 per example."""

    role = "reconstruction"

    def __init__(self, options: Any = None) -> None:
        pass

    def __call__(self, x_hat: Tensor, x: Tensor) -> Tensor:
        return _per_example((x_hat - x).abs())


@attrs.define
class GaussianOptions:
    """Options of the Gaussian likelihood."""

    # Fixed standard deviation of p(x | z) = N(x; x_hat, sigma^2 I).
    sigma: float = attrs.field(default=1.0, validator=check.positive)


class GaussianNLL:
    """Gaussian negative log-likelihood -log N(x; x_hat, sigma^2 I) per example."""

    role = "reconstruction"
    likelihood = True  # a normalised -log p(x | x_hat): vae and vsc report ELBO and log-likelihood

    def __init__(self, options: GaussianOptions) -> None:
        self.sigma = options.sigma
        self._scale = 0.5 / self.sigma**2

    def __call__(self, x_hat: Tensor, x: Tensor) -> Tensor:
        # 0.5 ||x - x_hat||^2 / sigma^2 + D log(sigma) + D/2 log(2 pi), D = prod(x.shape[1:])
        d = math.prod(x.shape[1:])
        const = d * (math.log(self.sigma) + 0.5 * math.log(2 * math.pi))
        return _per_example((x - x_hat).square()).mul(self._scale).add(const)


class BernoulliNLL:
    """Bernoulli negative log-likelihood of (x + 1) / 2 given decoder logits, per example.

    The decoder must output logits: the loss declares ``logits = True``, so the autoencoders
    build their decoder with a linear output when its ``output`` is ``auto`` (an explicit
    ``output`` is kept). Data in ``[-1, 1]`` is mapped to targets in ``[0, 1]``. Binary data
    gives the exact Bernoulli likelihood.
    """

    role = "reconstruction"
    logits = True  # reads the decoder's output as logits: a decoder's output "auto" is linear
    likelihood = True  # of binary data: exp(-cost) sums to 1 over x in {-1, 1}

    def __init__(self, options: Any = None) -> None:
        pass

    @staticmethod
    def mean(logits: Tensor) -> Tensor:
        """The likelihood's mean in data space: ``2 sigmoid(l) - 1`` in ``[-1, 1]`` (for samples)."""
        return 2.0 * torch.sigmoid(logits) - 1.0

    def __call__(self, x_hat: Tensor, x: Tensor) -> Tensor:
        target = (x + 1.0) / 2.0
        return _per_example(F.binary_cross_entropy_with_logits(x_hat, target, reduction="none"))


# --- registration -------------------------------------------------------------------------------


@genfw.hookimpl
def genfw_register_losses(register: Register) -> None:
    register("minimax", MinimaxLoss, options=GANLossOptions)
    register("non_saturating", NonSaturatingLoss, options=GANLossOptions)
    register("wasserstein", WassersteinLoss)
    register("hinge", HingeLoss)
    register(
        "least_squares",
        LeastSquaresLoss,
        options=LeastSquaresOptions,
        help="Least-squares GAN loss (Mao et al. 2017): targets a (fake), b (real), c (generator).",
    )
    register("mse", SquaredErrorLoss)
    register("l1", AbsoluteErrorLoss)
    register("gaussian", GaussianNLL, options=GaussianOptions)
    register("bernoulli", BernoulliNLL)
