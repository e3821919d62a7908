"""The GAN of Goodfellow et al. (2014): a critic phase, then a generator phase.

The critic ascends ``E log D(x) + E log(1 - D(G(z)))``; the generator descends
``E log(1 - D(G(z)))`` (``--loss minimax``) or, by default, ascends ``E log D(G(z))``
(``--loss non_saturating``, the paper's practical advice). Both objectives live in
``genfw_plugins/losses.py``; this module only wires them into phases.
"""

from __future__ import annotations

from typing import Any, ClassVar

import attrs
import torch
from torch import Tensor

import genfw
from genfw import Batch, BuildContext, Model, Modules, Optim, Phase, PhaseOutput, Slot, device_of
from genfw import validators as check


@attrs.define
class GANOptions:
    latent_dim: int = attrs.field(default=64, validator=check.at_least(1))
    lr_generator: float = attrs.field(default=2e-4, validator=check.positive)
    lr_critic: float = attrs.field(default=2e-4, validator=check.positive)
    beta1: float = attrs.field(default=0.5, validator=check.in_interval(0, 1, high_open=True))
    beta2: float = attrs.field(default=0.999, validator=check.in_interval(0, 1, high_open=True))
    n_critic: int = attrs.field(default=1, validator=check.at_least(1))  # critic steps per generator step


class GAN:
    """Adversarial training of a generator against a critic (Goodfellow et al. 2014)."""

    slots: ClassVar[dict[str, Slot]] = {
        "generator": Slot("generator", "mlp", help="maps prior codes to samples"),
        "critic": Slot("critic", "mlp", help="scores samples"),
        "prior": Slot("prior", "normal", help="distribution of the generator's input codes"),
        "loss": Slot("loss", "non_saturating", role="adversarial"),
    }
    phases: ClassVar[tuple[str, ...]] = ("critic", "generator")
    regularisers: ClassVar[dict[str, dict[str, Any]]] = {}
    optimizer: ClassVar[str] = "adam"

    def __init__(self, options: GANOptions):
        self.options = options

    def build(self, ctx: BuildContext) -> Model:
        o = self.options
        generator = ctx["generator"].build(latent_dim=o.latent_dim, out_shape=ctx.data.shape, num_classes=0)
        critic = ctx["critic"].build(in_shape=ctx.data.shape, out_dim=1, num_classes=0)
        self.prior = ctx["prior"].build(dim=o.latent_dim)
        self.loss = ctx["loss"].build()
        betas = (o.beta1, o.beta2)
        return Model(
            modules={"generator": generator, "critic": critic},
            phases=[
                Phase(
                    "critic",
                    ("critic",),
                    self.critic_step,
                    Optim(self.optimizer, o.lr_critic, betas),
                    repeats=o.n_critic,
                    provides=frozenset({"real", "fake", "critic", "labels", "real_scores", "fake_scores"}),
                ),
                Phase(
                    "generator",
                    ("generator",),
                    self.generator_step,
                    Optim(self.optimizer, o.lr_generator, betas),
                    fresh_batch=False,  # needs only the batch size
                    provides=frozenset({"fake", "critic", "labels", "fake_scores"}),
                ),
            ],
            sample=self.sample,
        )

    def noise(self, n: int, device: torch.device) -> Tensor:
        return self.prior.sample(n, device=device)  # (n, latent_dim)

    def critic_step(self, batch: Batch, m: Modules) -> PhaseOutput:
        with torch.no_grad():
            fake = m.generator(self.noise(len(batch), batch.x.device))

        def critic(x: Tensor, y: Tensor | None = None) -> Tensor:
            return m.critic(x).squeeze(1)  # (B,)

        real_scores, fake_scores = critic(batch.x), critic(fake)
        loss = self.loss.critic_loss(real_scores, fake_scores)
        return PhaseOutput(
            loss,
            context={
                "real": batch.x,
                "fake": fake,
                "critic": critic,
                "labels": None,
                "real_scores": real_scores,
                "fake_scores": fake_scores,
            },
            # Raw tensors: the loop averages them only when it logs (no sync per step).
            logs={"real_score": real_scores.detach(), "fake_score": fake_scores.detach()},
        )

    def generator_step(self, batch: Batch, m: Modules) -> PhaseOutput:
        fake = m.generator(self.noise(len(batch), batch.x.device))

        def critic(x: Tensor, y: Tensor | None = None) -> Tensor:
            return m.critic(x).squeeze(1)

        fake_scores = critic(fake)
        loss = self.loss.generator_loss(fake_scores)
        return PhaseOutput(
            loss, context={"fake": fake, "critic": critic, "labels": None, "fake_scores": fake_scores}
        )

    def sample(self, m: Modules, n: int, y: Tensor | None = None) -> Tensor:
        return m.generator(self.noise(n, device_of(m.generator)))


@genfw.hookimpl
def genfw_register_variants(register):
    register("gan", GAN, options=GANOptions)
