"""The one adversarial step every GAN variant runs, configured by small hooks instead of copied.

:class:`AdversarialGAN` writes the critic phase and the generator phase once:

critic phase (fakes made without gradients, then scored beside the real batch)::

    t = draw(m, batch)                      # the generator's inputs and labels, once per step
    fake = events.fakes("critic", generate(t))   # callbacks may swap some (experience replay)
    real = real(t)
    real_s, fake_s = score_both(t, real, fake)   # Scores: scores (B,) and the critic's extra heads
    loss = critic_objective(t, real_s, fake_s) [+ critic_extra(t, real_s, fake_s)]

generator phase (fresh inputs, gradients through the generator)::

    t = draw(m, batch); fake = generate(t); fake_s = score(t, fake, t.labels)
    loss = generator_objective(t, fake_s, real_scores) [+ generator_extra(t, fake_s)]

Each objective hook returns ``(loss, logs)``, each extra hook ``(term or None, logs)``: the term is
already weighted and is added to the objective. ``real_scores`` is a function that scores the real
batch when called (relativistic losses need it; others never call it). The context regularisers
read is built in one place, :meth:`AdversarialGAN.context`, with the keys of
:data:`genfw.contracts.PHASE_CONTEXT` each phase declares and no others.

What each variant overrides (the rest are the defaults below, which are the GAN of Goodfellow et
al. with labels for conditional variants):

- ``gan``, ``lsgan``, ``dragan``, ``wgan``, ``wgan-gp``, ``sagan``, ``cgan``: none (``labels``);
- ``acgan``: ``score``/``features`` (score and class logits; the critic sees no label), both extras
  (class cross-entropy);
- ``infogan``: ``draw`` (codes, then noise), ``score``/``features`` (score and Q head), both extras
  (mutual information);
- ``ebgan``/``began``: ``score`` (energies and codes), ``score_both`` (one critic call on real and
  fake), both objectives (margin; k_t), ``generator_extra`` (pulling-away term; the k_t update);
- ``madgan``: ``draw``/``generate`` (k n fakes, generator by generator), ``score`` (log-odds of
  "real" and the k + 1 logits), ``shown`` (one fake per example), both objectives (which
  generator), ``critic_extra`` (its accuracy);
- ``progan``: ``draw``/``generate``/``real``/``score`` (at the schedule's stage and alpha),
  ``critic_extra`` (drift), ``generator_extra`` (counts the images, logs the stage).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import attrs
import torch
from torch import Tensor

from genfw import Batch, BuildContext, Modules, Optim, Phase, PhaseOutput


@attrs.define(slots=True)
class Turn:
    """One step of an adversarial phase as the hooks see it: the modules (``m``, possibly
    DDP-wrapped), the data batch, and what :meth:`AdversarialGAN.draw` drew for the generator."""

    m: Modules
    batch: Batch
    z: Any  # the generator's inputs (B, latent): noise, InfoGAN's noise and codes
    labels: Tensor | None = None  # (B,) the labels the players are conditioned on, or None
    # What else the variant's hooks read: InfoGAN's Codes, MAD-GAN's generator of each fake,
    # ProGAN's (stage, alpha).
    extra: Any = None


class Scores(NamedTuple):
    """The critic's output for a batch: ``scores (B,)`` (what losses and regularisers read) and
    its extra ``heads`` (ACGAN's class logits, InfoGAN's Q head, EBGAN's codes; None)."""

    scores: Tensor
    heads: Any = None


def score_logs(real: Scores, fake: Scores) -> dict[str, Tensor]:
    """The critic phase's usual logs: the scores of the real batch and of the fakes (raw tensors:
    the loop averages them only when it logs)."""
    return {"real_score": real.scores.detach(), "fake_score": fake.scores.detach()}


def generator_term(loss: Any, fake_scores: Tensor, real_scores: Callable[[], Tensor]) -> Tensor:
    """The adversarial loss's generator term. Relativistic losses (``needs_real_scores``) compare
    fakes with the real batch the critic phase last saw: ``real_scores()`` scores it."""
    if getattr(loss, "needs_real_scores", False):
        return loss.generator_loss(fake_scores, real_scores=real_scores())
    return loss.generator_loss(fake_scores)


def critic_features(critic: Any, x: Tensor, y: Tensor | None = None) -> Tensor:
    """The critic's intermediate features ``(B, F)``: its ``features(x, y)`` method (see the critic
    hook), reached through a DDP wrapper. A critic without one raises ``AttributeError``."""
    inner = critic if hasattr(critic, "features") else critic.module
    return inner.features(x, y)


# The keys :meth:`AdversarialGAN.context` can give (each phase gives those it provides).
CANDIDATE_KEYS = frozenset({"real", "fake", "critic", "labels", "real_scores", "fake_scores", "features"})


class AdversarialGAN:
    """The critic and generator phases of an adversarial variant, written once.

    A variant subclasses it, sets ``self.prior`` (and ``self.loss``, the adversarial loss, where it
    keeps the default objectives) in ``build``, makes its phases with :meth:`adversarial_phases`
    and overrides only the hooks where it differs (see the module's docstring).
    """

    prior: Any
    loss: Any

    def adversarial_phases(
        self,
        ctx: BuildContext,
        critic_optim: Optim,
        generator_optim: Optim,
        *,
        n_critic: int,
        critic_provides: Iterable[str],
        generator_provides: Iterable[str],
        n_generator: int = 1,
    ) -> list[Phase]:
        """The two phases: ``n_critic`` critic steps on fresh batches, then ``n_generator``
        generator steps, each on fresh noise, that reuse the last batch (they need only its size
        and labels). Each phase's context holds exactly the keys it provides."""
        self.events = ctx.events  # the run's callbacks: the critic phase fires events.fakes
        self.context_keys = {"critic": frozenset(critic_provides), "generator": frozenset(generator_provides)}
        # The candidate keys (see ``context``) each phase does not provide, dropped at every step.
        self._dropped = {p: tuple(CANDIDATE_KEYS - keys) for p, keys in self.context_keys.items()}
        return [
            Phase(
                "critic",
                ("critic",),
                self.critic_step,
                critic_optim,
                repeats=n_critic,
                provides=self.context_keys["critic"],
            ),
            Phase(
                "generator",
                ("generator",),
                self.generator_step,
                generator_optim,
                repeats=n_generator,
                fresh_batch=False,
                provides=self.context_keys["generator"],
            ),
        ]

    # --- the step, written once -------------------------------------------------------------------
    def critic_step(self, batch: Batch, m: Modules) -> PhaseOutput:
        t = self.draw(m, batch)
        with torch.no_grad():
            fake = self.generate(t)
        fake = self.events.fakes("critic", fake)  # callbacks may swap some (experience replay)
        real = self.real(t)
        real_s, fake_s = self.score_both(t, real, fake)
        loss, logs = self.critic_objective(t, real_s, fake_s)
        term, more = self.critic_extra(t, real_s, fake_s)
        if term is not None:
            loss = loss + term
        logs.update(more)
        return PhaseOutput(
            loss, context=self.context("critic", t, real, fake, real_s.scores, fake_s.scores), logs=logs
        )

    def generator_step(self, batch: Batch, m: Modules) -> PhaseOutput:
        t = self.draw(m, batch)
        fake = self.generate(t)
        fake_s = self.score(t, fake, t.labels)
        loss, logs = self.generator_objective(t, fake_s, lambda: self.score(t, self.real(t), t.labels).scores)
        term, more = self.generator_extra(t, fake_s)
        if term is not None:
            loss = loss + term
        logs.update(more)
        real = self.real(t) if "real" in self.context_keys["generator"] else None
        return PhaseOutput(
            loss, context=self.context("generator", t, real, fake, None, fake_s.scores), logs=logs
        )

    def context(
        self,
        phase: str,
        t: Turn,
        real: Tensor | None,
        fake: Tensor,
        real_scores: Tensor | None,
        fake_scores: Tensor,
    ) -> dict[str, Any]:
        """What ``phase`` gives regularisers (:data:`genfw.contracts.PHASE_CONTEXT`): the keys of
        ``CANDIDATE_KEYS`` it provides, and no others. ``critic`` scores as this step does (same
        stage, same heads). A variant with keys of its own extends the dict ``super()`` returns."""
        context = {
            "real": real,
            "fake": self.shown(t, fake),
            "critic": lambda x, y=None: self.score(t, x, y).scores,  # (B,)
            "labels": t.labels,
            "real_scores": real_scores,
            "fake_scores": fake_scores,
            "features": lambda x, y=None: self.features(t, x, y),  # (B, F)
        }
        for key in self._dropped[phase]:
            del context[key]
        return context

    # --- hooks: how fakes are made ----------------------------------------------------------------
    def draw(self, m: Modules, batch: Batch) -> Turn:
        """The generator's inputs for one step: prior noise, and the batch's labels where the
        players are conditional (so fakes are drawn for the real batch's classes)."""
        return Turn(m, batch, self.noise(len(batch), batch.x.device), self.labels(batch))

    def noise(self, n: int, device: torch.device) -> Tensor:
        return self.prior.sample(n, device=device)  # (n, latent_dim)

    def labels(self, batch: Batch) -> Tensor | None:
        """The labels the players are conditioned on: none by default."""
        return None

    def generate(self, t: Turn) -> Tensor:
        """The fakes ``(B, *shape)`` from the drawn inputs."""
        return t.m.generator(t.z, t.labels)

    # --- hooks: how they are scored ---------------------------------------------------------------
    def real(self, t: Turn) -> Tensor:
        """The real batch as the critic sees it."""
        return t.batch.x

    def score(self, t: Turn, x: Tensor, y: Tensor | None) -> Scores:
        """The critic's scores of ``x`` (with labels ``y``): one output per sample."""
        return Scores(t.m.critic(x, y).squeeze(1))

    def score_both(self, t: Turn, real: Tensor, fake: Tensor) -> tuple[Scores, Scores]:
        """The critic phase's scores of the real batch and of the fakes, in separate calls (real
        first), so batch-level layers (minibatch stddev, batch norm) see real data alone."""
        return self.score(t, real, t.labels), self.score(t, fake, t.labels)

    def features(self, t: Turn, x: Tensor, y: Tensor | None) -> Tensor:
        """The critic's features ``(B, F)`` before its head (feature matching)."""
        return critic_features(t.m.critic, x, y)

    def shown(self, t: Turn, fake: Tensor) -> Tensor:
        """The fakes regularisers see as ``fake``: those scored."""
        return fake

    # --- hooks: the objectives --------------------------------------------------------------------
    def critic_objective(self, t: Turn, real: Scores, fake: Scores) -> tuple[Tensor, dict[str, Tensor]]:
        """The critic's loss (the adversarial loss slot's) and its logs."""
        return self.loss.critic_loss(real.scores, fake.scores), score_logs(real, fake)

    def generator_objective(
        self, t: Turn, fake: Scores, real_scores: Callable[[], Tensor]
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """The generator's loss (the adversarial loss slot's) and its logs."""
        return generator_term(self.loss, fake.scores, real_scores), {}

    def critic_extra(self, t: Turn, real: Scores, fake: Scores) -> tuple[Tensor | None, dict[str, Tensor]]:
        """A weighted term the variant adds to the critic's loss (or None), and its logs."""
        return None, {}

    def generator_extra(self, t: Turn, fake: Scores) -> tuple[Tensor | None, dict[str, Tensor]]:
        """A weighted term the variant adds to the generator's loss (or None), and its logs."""
        return None, {}


class HeadedCritic:
    """Hooks for a critic that is given no label and returns ``1 + H`` outputs: column 0 the
    adversarial score, the rest extra heads (ACGAN's class logits, InfoGAN's Q head). Put it
    before the variant's base class: ``class ACGAN(HeadedCritic, GAN)``."""

    def score(self, t: Turn, x: Tensor, y: Tensor | None) -> Scores:
        out = t.m.critic(x)  # (B, 1 + H)
        return Scores(out[:, 0], out[:, 1:])

    def features(self, t: Turn, x: Tensor, y: Tensor | None) -> Tensor:
        return critic_features(t.m.critic, x)
