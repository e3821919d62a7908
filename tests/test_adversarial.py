"""The one adversarial step (genfw_plugins/_adversarial.py) that every GAN variant configures by
hooks: experience replay's event fires in it for every variant, each phase's context holds exactly
the keys the phase declares, and a variant that overrides one hook gets the rest of the step."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import genfw
from genfw.contracts import PHASE_CONTEXT, Callback
from genfw.testing import registry_with, small_run
from genfw_plugins.gan import GAN, GANOptions

# Every GAN variant, with the options that keep it small.
ADVERSARIAL = {
    "gan": {},
    "lsgan": {},
    "dragan": {},
    "wgan": {},
    "wgan-gp": {},
    "sagan": {},
    "cgan": {},
    "acgan": {},
    "infogan": {},
    "ebgan": {},
    "began": {},
    "madgan": {},
    "progan": {"variant": {"name": "progan", "channels": 16, "min_channels": 8, "latent_dim": 8}},
    "stylegan2": {"variant": {"name": "stylegan2", "channel_base": 64, "channel_max": 8, "w_dim": 8}},
    "sngan": {
        "variant": {"name": "sngan", "latent_dim": 16, "n_critic": 1},
        "generator": {"name": "resnet", "channels": 8},
        "critic": {"name": "resnet", "channels": 8},
    },
    "biggan": {
        "variant": {"name": "biggan", "latent_dim": 16, "n_critic": 1},
        "generator": {"name": "biggan", "channels": 8},
        "critic": {"name": "resnet", "channels": 8},
    },
}


def test_the_list_holds_every_registered_variant_with_a_critic_and_a_generator_phase(registry):
    gans = {
        name
        for name in registry.names("variant")
        if tuple(registry.get("variant", name).factory.phases) == ("critic", "generator")
    }
    assert gans == set(ADVERSARIAL)


class SwapFakes(Callback):
    """Records each ``on_fakes`` event and swaps every fake for zeros."""

    def __init__(self) -> None:
        super().__init__(None)
        self.seen: list[tuple[str, tuple[int, ...]]] = []

    def on_fakes(self, phase: str, fakes: torch.Tensor) -> torch.Tensor:
        self.seen.append((phase, tuple(fakes.shape)))
        return torch.zeros_like(fakes)


@pytest.mark.parametrize("variant", sorted(ADVERSARIAL))
def test_every_critic_phase_fires_on_fakes_and_scores_what_the_callbacks_return(variant):
    """The fakes a critic phase scores go through ``events.fakes("critic", ...)`` in every variant
    (acgan, infogan, madgan and progan skipped it), once per critic step and never in the generator
    phase; what the callbacks return is what the critic scores and regularisers see."""
    run = small_run(variant, extra=ADVERSARIAL[variant])
    spy = SwapFakes()
    run.built.callbacks.attach([("spy", spy)])
    critic, generator = run.built.model.phases
    out = critic.step(run.batch, run.modules)
    assert [phase for phase, _ in spy.seen] == ["critic"]
    fake = out.context["fake"]
    assert torch.equal(fake, torch.zeros_like(fake))
    # The critic's scores of the fakes (madgan: all k n of them) are its scores of zeros.
    with torch.no_grad():
        expected = out.context["critic"](torch.zeros(spy.seen[0][1]), out.context["labels"])
    logged = out.logs["fake_score"] if "fake_score" in out.logs else out.logs["fake_energy"]
    torch.testing.assert_close(logged, expected if logged.dim() else expected.mean())  # began: the mean
    generator.step(run.batch, run.modules)
    assert len(spy.seen) == 1


@pytest.mark.parametrize("variant", sorted(ADVERSARIAL))
def test_every_variant_runs_the_shared_step_with_exactly_its_declared_context(variant):
    from genfw_plugins._adversarial import AdversarialGAN

    run = small_run(variant, extra=ADVERSARIAL[variant])
    for phase in run.built.model.phases:
        assert phase.step.__func__ is getattr(AdversarialGAN, f"{phase.name}_step")  # not a copy
        out = phase.step(run.batch, run.modules)
        assert set(out.context) == set(phase.provides) and set(out.context) <= set(PHASE_CONTEXT)
        if "real_scores" in out.context:  # "critic" scores as the step did (spectral norm's power
            # iteration moves on at each call of a spectrally normalised critic in training mode,
            # sagan's, sngan's, biggan's: a difference of a few per cent at initialisation)
            real = out.context["critic"](out.context["real"], out.context["labels"])
            torch.testing.assert_close(real, out.context["real_scores"], rtol=3e-2, atol=5e-3)


class SquaredRealScores(GAN):
    """A GAN configured by two hooks: the critic adds ``0.5 E D(x)^2``; the generator logs its
    mean score."""

    def critic_extra(self, t, real, fake):
        term = real.scores.square().mean()
        return 0.5 * term, {"real_square": term.detach()}

    def generator_extra(self, t, fake):
        return None, {"fake_mean": fake.scores.mean().detach()}


class _Plugin:
    @genfw.hookimpl
    def genfw_register_variants(self, register):
        register("gan_squared_real", SquaredRealScores, options=GANOptions)


def test_a_variant_overriding_one_hook_gets_the_rest_of_the_step():
    run = small_run("gan_squared_real", registry=registry_with(_Plugin()), datasets=("toy2d",))
    critic, generator = run.built.model.phases
    m, x = run.modules, run.batch.x
    out = critic.step(run.batch, m)
    with torch.no_grad():
        r, f = m.critic(x).squeeze(1), m.critic(out.context["fake"]).squeeze(1)
    # Non-saturating critic loss plus the hook's term, by hand.
    expected = F.softplus(-r).mean() + F.softplus(f).mean() + 0.5 * r.square().mean()
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert list(out.logs) == ["real_score", "fake_score", "real_square"]
    assert out.logs["real_square"].item() == pytest.approx(r.square().mean().item(), rel=1e-6)
    out = generator.step(run.batch, m)
    with torch.no_grad():
        f = m.critic(out.context["fake"]).squeeze(1)
    assert out.loss.item() == pytest.approx(F.softplus(-f).mean().item(), rel=1e-6)  # no term added
    assert out.logs["fake_mean"].item() == pytest.approx(f.mean().item(), rel=1e-6)
