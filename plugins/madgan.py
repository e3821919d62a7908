"""MAD-GAN (Ghosh et al. 2018): k generators against one critic that also says which one made a fake.

The critic has ``k + 1`` outputs, a softmax over "made by generator 1 .. k" and "real" (the
paper's ``D_{k+1}``). It maximises ``E_x log D_{k+1}(x) + sum_i E_z log D_i(G_i(z))``: the
optimal critic is then ``D_{k+1}(x) = p_d(x) / (p_d(x) + sum_i p_{g_i}(x))`` (the paper's
Theorem 1), so the generators are pushed apart, towards different modes. Generator ``i``
minimises ``E_z log(1 - D_{k+1}(G_i(z)))`` (``generator_loss: minimax``, the paper's objective)
or, by default, maximises ``E_z log D_{k+1}(G_i(z))`` (``non_saturating``: Goodfellow et al.'s
practical advice, as in the ``gan`` variant); each generator gets a batch of the data batch's size.

The generators are kept fully separate (k copies of the ``generator`` slot's network, each
with its own weights; the paper shares all but the last layer in its image experiments, which
only saves parameters): any generator plugin works unchanged. Samples come from a generator
chosen uniformly at random per sample, so the model is the mixture ``1/k sum_i p_{g_i}``.
AdaGAN (Tolstikhin et al. 2017) is not provided: its boosting re-weights the data set between
whole training runs, which does not fit one run of this loop cleanly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import attrs
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import genfw
from genfw import Batch, BuildContext, Model, Modules, Optim, Slot, device_of
from genfw import validators as check
from genfw.contracts import PhaseSpec, Players, Variant
from genfw_plugins._adversarial import AdversarialGAN, Scores, Turn, score_logs


@attrs.define
class MADGANOptions:
    num_generators: int = attrs.field(default=8, validator=check.at_least(2))  # k
    latent_dim: int = attrs.field(default=64, validator=check.at_least(1))
    lr_generator: float = attrs.field(default=2e-4, validator=check.positive)
    lr_critic: float = attrs.field(default=2e-4, validator=check.positive)
    beta1: float = attrs.field(default=0.5, validator=check.in_interval(0, 1, high_open=True))
    beta2: float = attrs.field(default=0.999, validator=check.in_interval(0, 1, high_open=True))
    n_critic: int = attrs.field(default=1, validator=check.at_least(1))
    generator_loss: str = attrs.field(
        default="non_saturating", validator=check.one_of("non_saturating", "minimax")
    )


class MultiGenerator(nn.Module):
    """``k`` generators; ``forward(z, which=None)`` runs generator ``which[b]`` on ``z[b]``.

    Without ``which``, each sample's generator is drawn uniformly at random (the mixture).
    """

    # The critic labels a fake by its position (block i of the k n fakes: generator i), so
    # experience replay, which swaps fakes for past ones, would mislabel them: it refuses.
    replayable: ClassVar[bool] = False
    replay_refusal: ClassVar[str] = (
        "the critic labels each fake by its position (which generator made it), so a past fake in its "
        "place would carry the wrong label"
    )

    def __init__(self, generators: list[nn.Module]) -> None:
        super().__init__()
        self.generators = nn.ModuleList(generators)

    def forward(self, z: Tensor, y: Tensor | None = None, which: Tensor | None = None) -> Tensor:
        k = len(self.generators)
        if which is None:
            which = torch.randint(0, k, (z.shape[0],), device=z.device)
        out: Tensor | None = None
        for i, g in enumerate(self.generators):
            rows = (which == i).nonzero().squeeze(1)
            x = g(z[rows])  # (n_i, *shape)
            if out is None:
                out = x.new_empty((z.shape[0], *x.shape[1:]))
            out[rows] = x
        assert out is not None
        return out


def critic_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """``-E log D_{k+1}(x) - sum_i E log D_i(G_i(z))``.

    ``real_logits (B, k+1)``; ``fake_logits (k, B, k+1)``, row ``i`` from generator ``i``.
    """
    k = fake_logits.shape[0]
    real_target = torch.full((real_logits.shape[0],), k, dtype=torch.long, device=real_logits.device)
    loss = F.cross_entropy(real_logits, real_target)
    for i in range(k):
        target = torch.full((fake_logits.shape[1],), i, dtype=torch.long, device=fake_logits.device)
        loss = loss + F.cross_entropy(fake_logits[i], target)
    return loss


def generator_loss(fake_logits: Tensor, kind: str = "non_saturating") -> Tensor:
    """Sum over generators of ``-E log D_{k+1}(G_i(z))`` (non-saturating) or
    ``E log(1 - D_{k+1}(G_i(z)))`` (minimax); ``fake_logits (k, B, k+1)``."""
    log_p = fake_logits.log_softmax(-1)  # (k, B, k+1)
    log_real = log_p[..., -1]  # log D_{k+1}
    if kind == "minimax":
        log_not_real = torch.logsumexp(log_p[..., :-1], dim=-1)  # log(1 - D_{k+1})
        return log_not_real.mean(1).sum()
    return -log_real.mean(1).sum()


def real_log_odds(logits: Tensor) -> Tensor:
    """A scalar score per example, ``log D_{k+1} - log(1 - D_{k+1})``: what regularisers that
    expect one score (gradient penalties) see as the critic."""
    return logits[:, -1] - torch.logsumexp(logits[:, :-1], dim=1)


class MADGAN(AdversarialGAN, Variant):
    """MAD-GAN (Ghosh et al. 2018): k generators, a critic that classifies real vs which generator."""

    slots: ClassVar[dict[str, Slot]] = {
        "generator": Slot("generator", "mlp", help="network of each of the k generators"),
        "critic": Slot("critic", "mlp", help="scores samples with k + 1 outputs"),
        "prior": Slot("prior", "normal", help="distribution of the generators' input codes"),
    }
    # The module "generator" is a MultiGenerator holding the k networks.
    players: ClassVar[Players] = Players(generators="generator", critics="critic")
    # "critic" scores with the log-odds of "real"; "fake" holds one fake per example, taken in
    # turn from the k generators.
    phases: ClassVar[dict[str, PhaseSpec]] = {
        "critic": PhaseSpec(
            {"real", "fake", "critic", "labels"},
            help="the critic classifies a real batch as real and each generator's fakes as its own",
        ),
        "generator": PhaseSpec(
            {"fake", "critic", "labels"}, help="each generator makes its fakes look real to the critic"
        ),
    }
    replayable: ClassVar[bool] = MultiGenerator.replayable
    default_dataset: ClassVar[str] = "toy2d"
    # 2-D toy data: 2-D noise as in the wgan-gp points preset; each of the k generators gets a batch
    # of the data batch's size, so batches of 64 already give the critic 8 x 64 fakes per step.
    presets: ClassVar[dict[str, dict]] = {
        "points": {"variant": {"latent_dim": 2}, "train": {"batch_size": 64}},
    }
    options: MADGANOptions

    @classmethod
    def refuse(cls, remedy: str, options: MADGANOptions) -> str | None:
        if remedy == "experience_replay":
            return f"its MultiGenerator's fakes cannot be replayed: {MultiGenerator.replay_refusal}"
        return None

    def build(self, ctx: BuildContext) -> Model:
        o = self.options
        gens = [
            ctx["generator"].build(latent_dim=o.latent_dim, out_shape=ctx.data.shape, num_classes=0)
            for _ in range(o.num_generators)
        ]
        critic = ctx["critic"].build(in_shape=ctx.data.shape, out_dim=o.num_generators + 1, num_classes=0)
        self.prior = ctx["prior"].build(dim=o.latent_dim)
        betas = (o.beta1, o.beta2)
        return Model(
            modules={"generator": MultiGenerator(gens), "critic": critic},
            phases=self.adversarial_phases(
                ctx,
                Optim("adam", o.lr_critic, betas),
                Optim("adam", o.lr_generator, betas),
                n_critic=o.n_critic,
                critic_provides=self.phases["critic"].provides,
                generator_provides=self.phases["generator"].provides,
            ),
            sample=self.sample,
        )

    # -- hooks of the adversarial step: k n fakes, each labelled by its generator ----------------
    def draw(self, m: Modules, batch: Batch) -> Turn:
        """Noise for ``n`` fakes of each generator; ``extra``: which generator makes each fake,
        ``(k n,)`` as ``0 0 .. 1 1 ..``."""
        k, n, device = self.options.num_generators, len(batch), batch.x.device
        z = self.prior.sample(k * n, device=device)  # (k n, d)
        return Turn(m, batch, z, None, torch.arange(k, device=device).repeat_interleave(n))

    def generate(self, t: Turn) -> Tensor:
        """``(k n, *shape)``: rows ``i n .. i n + n - 1`` from generator ``i``. Through the module's
        ``forward`` (with ``which``), so a DDP wrapper syncs the gradients."""
        return t.m.generator(t.z, which=t.extra)

    def score(self, t: Turn, x: Tensor, y: Tensor | None) -> Scores:
        """The log-odds of "real" (what regularisers see as the critic) and the ``k + 1`` logits.
        Real and fake batches are scored in separate calls (``score_both``), so batch-level
        layers (minibatch discrimination / stddev, batch norm) see real data alone."""
        logits = t.m.critic(x)  # (B, k+1)
        return Scores(real_log_odds(logits), logits)

    def shown(self, t: Turn, fake: Tensor) -> Tensor:
        """One fake per example, taken in turn from the k generators."""
        k, n = self.options.num_generators, len(t.batch)
        i = torch.arange(n, device=fake.device)
        return fake.view(k, n, *fake.shape[1:])[i % k, i]

    def critic_objective(self, t: Turn, real: Scores, fake: Scores) -> tuple[Tensor, dict[str, Tensor]]:
        k = self.options.num_generators
        return critic_loss(real.heads, fake.heads.view(k, len(t.batch), -1)), score_logs(real, fake)

    def critic_extra(self, t: Turn, real: Scores, fake: Scores) -> tuple[None, dict[str, Tensor]]:
        accuracy = (fake.heads.argmax(-1) == t.extra).float().mean()
        return None, {"which_accuracy": accuracy.detach()}  # fakes attributed to their own generator

    def generator_objective(
        self, t: Turn, fake: Scores, real_scores: Callable[[], Tensor]
    ) -> tuple[Tensor, dict[str, Tensor]]:
        k = self.options.num_generators
        return generator_loss(fake.heads.view(k, len(t.batch), -1), self.options.generator_loss), {}

    def sample(self, m: Modules, n: int, y: Tensor | None = None) -> Tensor:
        z = self.prior.sample(n, device=device_of(m.generator))
        return m.generator(z)  # one uniformly chosen generator per sample


@genfw.hookimpl
def genfw_register_variants(register):
    register(
        "madgan",
        MADGAN,
        options=MADGANOptions,
        help="MAD-GAN (Ghosh et al. 2018): k generators; the critic also tells which one made a fake.",
    )
