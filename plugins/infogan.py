"""InfoGAN (Chen et al. 2016): a GAN whose generator input holds interpretable codes.

The generator sees ``[z, c]``: noise ``z`` from the prior slot and codes ``c`` — categorical codes
(one-hot; default one 10-way code) and continuous codes ``U[-1, 1]`` (default two). A Q head
shares the critic's body: the critic returns ``1 + Q`` outputs, column 0 the real/fake score and
the rest Q's prediction of the codes from ``G(z, c)``: logits for each categorical code, then a mean
per continuous code (and a log-variance per code with ``learn_std``). The mutual-information
lower bound ``L_I = H(c) - E[-log Q(c | G(z, c))]`` is maximised by BOTH players, so each adds
``info_weight * (CE_cat + continuous_weight * NLL_cont)`` to its loss (``H(c)`` is a constant):

- ``CE_cat``: the cross-entropy of Q's logits against the categorical codes, summed over codes;
- ``NLL_cont``: the Gaussian negative log-likelihood ``0.5 ((c - mu) / sigma)^2 + log sigma +
  0.5 log(2 pi)`` summed over continuous codes, with ``sigma = 1`` fixed by default (the
  authors' MNIST code: ``Uniform(1, fix_std=True)``) or learned (``learn_std``).

All averaged over the batch. Defaults follow the authors' MNIST launcher (openai/InfoGAN,
``run_mnist_exp.py``): 62 uniform noise variables, one 10-way code, two continuous codes,
``info_reg_coeff = 1`` for both kinds of code, Adam with lr 1e-3 (G) and 2e-4 (D), beta1 0.5.

``genfw sample RUN --label k`` fixes the first categorical code to ``k`` (``Model.num_classes`` is
its size), and sample grids show one row per value of that code; the other codes and the noise are
drawn at random. The categorical code is unsupervised: which digit a value stands for is learned.
"""

from __future__ import annotations

import math
from typing import ClassVar

import attrs
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import genfw
from genfw import Batch, BuildContext, Modules, Slot, device_of
from genfw import validators as check
from genfw_plugins._adversarial import HeadedCritic, Scores, Turn
from genfw_plugins.gan import GAN

_LOG_2PI = math.log(2 * math.pi)


def _has_a_code(instance: InfoGANOptions, attribute: attrs.Attribute, value: int) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name} must be >= 0, got {value}")
    if not instance.categorical and value == 0:
        raise ValueError("infogan needs at least one code: a categorical size (e.g. [10]) or continuous >= 1")


@attrs.define
class InfoGANOptions:
    latent_dim: int = attrs.field(default=62, validator=check.at_least(1))  # noise z, besides the codes
    # Sizes of the categorical codes (each one-hot); the first is the one `--label` sets.
    # [] is allowed (continuous codes only), so not check.each.
    categorical: list[int] = attrs.field(
        factory=lambda: [10], validator=attrs.validators.deep_iterable(check.at_least(2))
    )
    continuous: int = attrs.field(default=2, validator=_has_a_code)  # codes U[-1, 1]
    info_weight: float = attrs.field(default=1.0, validator=check.non_negative)  # lambda
    continuous_weight: float = attrs.field(default=1.0, validator=check.non_negative)  # on NLL_cont
    learn_std: bool = False  # Q predicts a log-variance per continuous code; else sigma = 1
    lr_generator: float = attrs.field(default=1e-3, validator=check.positive)
    lr_critic: float = attrs.field(default=2e-4, validator=check.positive)
    beta1: float = attrs.field(default=0.5, validator=check.in_interval(0, 1, high_open=True))
    beta2: float = attrs.field(default=0.999, validator=check.in_interval(0, 1, high_open=True))
    n_critic: int = attrs.field(default=1, validator=check.at_least(1))
    n_generator: int = attrs.field(default=1, validator=check.at_least(1))  # generator steps per step


@attrs.frozen
class Codes:
    """A draw of InfoGAN's codes for ``n`` samples."""

    categorical: Tensor  # (n, number of categorical codes) long, code values
    continuous: Tensor  # (n, continuous) in [-1, 1]

    def inputs(self, sizes: list[int]) -> Tensor:
        """The generator's code inputs: one-hot categorical codes, then the continuous ones."""
        onehots = [
            F.one_hot(self.categorical[:, i], k).to(self.continuous.dtype) for i, k in enumerate(sizes)
        ]
        return torch.cat([*onehots, self.continuous], dim=1)


class InfoGAN(HeadedCritic, GAN):
    """InfoGAN (Chen et al. 2016): categorical and continuous codes recovered by a Q head."""

    slots: ClassVar[dict[str, Slot]] = {
        **GAN.slots,
        "generator": Slot("generator", "mlp", help="maps noise and codes to samples"),
        "critic": Slot("critic", "mlp", help="scores samples; its Q head predicts the codes"),
        # The authors' code draws the noise from U[-1, 1] too.
        "prior": Slot("prior", "uniform", help="distribution of the noise z (the codes have their own)"),
    }
    replayable: ClassVar[bool] = False  # experience replay: a past fake has no codes

    def __init__(self, options: InfoGANOptions):
        self.options = options
        o = options
        self.code_dim = sum(o.categorical) + o.continuous  # generator inputs besides z
        self.q_dim = sum(o.categorical) + o.continuous * (2 if o.learn_std else 1)  # Q head outputs

    def classes(self, ctx: BuildContext) -> int:
        """`--label` and the per-class grids choose the first categorical code's value."""
        return self.options.categorical[0] if self.options.categorical else 0

    def networks(self, ctx: BuildContext) -> tuple[nn.Module, nn.Module]:
        shape = ctx.data.shape
        generator = ctx["generator"].build(
            latent_dim=self.options.latent_dim + self.code_dim, out_shape=shape, num_classes=0
        )
        critic = ctx["critic"].build(in_shape=shape, out_dim=1 + self.q_dim, num_classes=0)
        return generator, critic

    # -- codes and the information term ---------------------------------------------------------
    def codes(self, n: int, device: torch.device, label: Tensor | None = None) -> Codes:
        """Uniform categorical codes (the first set to ``label`` where given) and U[-1, 1] ones."""
        cat = [torch.randint(0, k, (n,), device=device) for k in self.options.categorical]
        if label is not None:
            cat[0] = label.to(device=device, dtype=torch.long)
        categorical = torch.stack(cat, dim=1) if cat else torch.zeros(n, 0, dtype=torch.long, device=device)
        return Codes(categorical, torch.rand(n, self.options.continuous, device=device) * 2 - 1)

    def latent(self, n: int, device: torch.device, codes: Codes) -> Tensor:
        return torch.cat([self.noise(n, device), codes.inputs(self.options.categorical)], dim=1)

    def information(self, q: Tensor, codes: Codes) -> tuple[Tensor, dict[str, Tensor]]:
        """``CE_cat + continuous_weight * NLL_cont`` from Q's outputs ``q (B, q_dim)``, and logs."""
        o, logs = self.options, {}
        loss = q.new_zeros(())
        start = 0
        for i, k in enumerate(o.categorical):
            logits = q[:, start : start + k]
            ce = F.cross_entropy(logits, codes.categorical[:, i])
            loss = loss + ce
            # The MI lower bound of this code: H(c) - CE, in nats (at most log k).
            logs[f"mi_categorical_{i}"] = (math.log(k) - ce).detach()
            logs[f"q_accuracy_{i}"] = (logits.argmax(1) == codes.categorical[:, i]).float().mean()
            start += k
        if o.continuous:
            c = o.continuous
            mu = q[:, start : start + c]
            log_var = q[:, start + c : start + 2 * c] if o.learn_std else torch.zeros_like(mu)
            nll = 0.5 * ((codes.continuous - mu).square() * torch.exp(-log_var) + log_var + _LOG_2PI)
            nll = nll.sum(1).mean()
            loss = loss + o.continuous_weight * nll
            logs["nll_continuous"] = nll.detach()
        return loss, logs

    # -- hooks of the adversarial step (score and features: HeadedCritic, Q is the head) -----------
    def draw(self, m: Modules, batch: Batch) -> Turn:
        """Codes, then noise; no labels (the codes are unsupervised)."""
        n, device = len(batch), batch.x.device
        codes = self.codes(n, device)
        return Turn(m, batch, self.latent(n, device, codes), None, codes)

    def critic_extra(self, t: Turn, real: Scores, fake: Scores) -> tuple[Tensor, dict[str, Tensor]]:
        info, logs = self.information(fake.heads, t.extra)
        return self.options.info_weight * info, logs

    def generator_extra(self, t: Turn, fake: Scores) -> tuple[Tensor, dict[str, Tensor]]:
        info, logs = self.information(fake.heads, t.extra)
        return self.options.info_weight * info, logs

    def sample(self, m: Modules, n: int, y: Tensor | None = None) -> Tensor:
        """``n`` samples; ``y`` (where given) sets the first categorical code."""
        device = device_of(m.generator)
        return m.generator(self.latent(n, device, self.codes(n, device, y)))


@genfw.hookimpl
def genfw_register_variants(register):
    register(
        "infogan",
        InfoGAN,
        options=InfoGANOptions,
        help="InfoGAN (Chen et al. 2016): categorical and continuous codes, a Q head, mutual information.",
    )
