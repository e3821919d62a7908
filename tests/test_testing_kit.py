"""``genfw.testing`` catches what it promises to catch: each check against a broken component.

The built-ins passing the kit is ``tests/test_contracts.py``; here, components that each break one
rule are registered in a private host, and the check of their kind must fail, naming the rule.
"""

from __future__ import annotations

import random
import subprocess
import sys
from typing import Any, ClassVar

import attrs
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import genfw
from genfw import testing
from genfw.registry import NoOptions
from genfw_plugins.gan import GAN, GANOptions
from genfw_plugins.losses import NonSaturatingLoss
from genfw_plugins.networks import MLPOptions, mlp_critic
from genfw_plugins.priors import NormalPrior


class DetachedFakeLoss(NonSaturatingLoss):
    def critic_loss(self, real_scores: Tensor, fake_scores: Tensor) -> Tensor:
        return F.softplus(-real_scores).mean() + F.softplus(fake_scores.detach()).mean()


class PerExampleCriticLoss(NonSaturatingLoss):
    def critic_loss(self, real_scores: Tensor, fake_scores: Tensor) -> Tensor:
        return F.softplus(-real_scores) + F.softplus(fake_scores)  # (B,), not a scalar


class BatchMeanReconstruction:
    role = "reconstruction"

    def __init__(self, options: Any = None) -> None:
        pass

    def __call__(self, x_hat: Tensor, x: Tensor) -> Tensor:
        cost = (x_hat - x).flatten(1).square().sum(1)
        return cost + cost.mean()  # leaks the other examples into each cost


class SquaredErrorClaimingLikelihood:
    role = "reconstruction"
    likelihood = True  # but ||x - x_hat||^2 lacks log N's constant: exp(-cost) integrates to sqrt(pi)

    def __init__(self, options: Any = None) -> None:
        pass

    def __call__(self, x_hat: Tensor, x: Tensor) -> Tensor:
        return (x_hat - x).flatten(1).square().sum(1)


class UnnormalisedNormal(NormalPrior):
    def log_prob(self, z: Tensor) -> Tensor:
        return (-0.5 * z.square()).sum(-1)  # forgets -log(2 pi) / 2


class NoisyNormal(NormalPrior):
    def sample(self, n: int, *, device: Any, generator: torch.Generator | None = None) -> Tensor:
        return torch.randn(n, self.dim, device=device)  # ignores the generator


class WrongVariance(NormalPrior):
    variance = 2.0


class WrongKL(NormalPrior):
    def kl_from_normal(self, mu: Tensor, logvar: Tensor) -> Tensor:
        return 0.5 * (mu.square() + logvar.exp() - logvar).sum(-1)  # forgets the -1


class NoDensity(NormalPrior):
    def log_prob(self, z: Tensor) -> Tensor:
        raise NotImplementedError


class DetachedPenalty:
    phases = ("critic",)
    needs = ("real_scores",)

    def __init__(self, options: Any = None) -> None:
        pass

    def penalty(self, ctx: dict[str, Any]) -> Tensor:
        return ctx["real_scores"].detach().square().mean()


class NeedsNothingAnyoneProvides(DetachedPenalty):
    needs = ("tea",)


class RandomMetric:
    def __init__(self, options: Any = None) -> None:
        pass

    def __call__(self, ctx: genfw.EvalContext) -> dict[str, float]:
        return {"value": float(ctx.sample(4).mean()) + random.random()}  # unseeded


class LabelBlindCritic(nn.Module):
    """The built-in MLP critic, fed label 0 whatever the label."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return self.inner(x, None if y is None else torch.zeros_like(y))


def label_blind_critic(options: Any, **context: Any) -> nn.Module:
    return LabelBlindCritic(mlp_critic(MLPOptions(), **context))


class LazyGenerator(GAN):
    """A GAN whose generator phase never moves the generator."""

    slots: ClassVar = GAN.slots

    def generator_step(self, batch: genfw.Batch, m: genfw.Modules) -> genfw.PhaseOutput:
        fake = m.generator(self.noise(len(batch), batch.x.device))
        return genfw.PhaseOutput(0.0 * fake.sum())


class Picky(GAN):
    """A GAN that refuses every data set, naming its shape."""

    slots: ClassVar = GAN.slots

    def build(self, ctx: genfw.BuildContext) -> genfw.Model:
        raise genfw.GenfwError(f"picky takes no data of shape {tuple(ctx.data.shape)}")


@attrs.define
class OddOptions:
    # The converter doubles on every structuring: unstructure then structure is not the identity.
    value: float = attrs.field(default=0.5, converter=lambda v: 2 * v)


class Broken:
    """A test plugin registering one broken component per rule."""

    @genfw.hookimpl
    def genfw_register_losses(self, register):
        register(
            "detached_fake",
            DetachedFakeLoss,
            options=attrs.make_class("O", {"real_label": attrs.field(default=1.0)}),
        )
        register(
            "per_example_critic",
            PerExampleCriticLoss,
            options=attrs.make_class("O2", {"real_label": attrs.field(default=1.0)}),
        )
        register("batch_mean", BatchMeanReconstruction)
        register("mse_as_likelihood", SquaredErrorClaimingLikelihood)
        register("odd_options", NonSaturatingLoss, options=OddOptions)

    @genfw.hookimpl
    def genfw_register_priors(self, register):
        register("unnormalised", UnnormalisedNormal)
        register("noisy", NoisyNormal)
        register("wrong_variance", WrongVariance)
        register("wrong_kl", WrongKL)
        register("no_density", NoDensity)

    @genfw.hookimpl
    def genfw_register_regularisers(self, register):
        register("detached_penalty", DetachedPenalty)
        register("needs_tea", NeedsNothingAnyoneProvides)

    @genfw.hookimpl
    def genfw_register_metrics(self, register):
        register("random_metric", RandomMetric)

    @genfw.hookimpl
    def genfw_register_critics(self, register):
        register("label_blind", label_blind_critic)

    @genfw.hookimpl
    def genfw_register_variants(self, register):
        register("lazy", LazyGenerator, options=GANOptions)
        register("picky", Picky, options=GANOptions)


@pytest.fixture(scope="module")
def registry():
    return testing.registry_with(Broken())


@pytest.mark.parametrize(
    ("kind", "name", "message"),
    [
        ("loss", "detached_fake", "critic_loss must pass gradients to both the real and the fake scores"),
        ("loss", "per_example_critic", r"returned shape \(8,\), expected a scalar"),
        ("loss", "batch_mean", "changing example 0 must change its cost and no other"),
        # sqrt(pi) = 1.7725 by hand: the integral of exp(-(x - x_hat)^2) over the line
        ("loss", "mse_as_likelihood", r"integrates to \[1\.77245\d*, 1\.77245\d*\] over the line"),
        ("loss", "odd_options", "options do not round-trip through cattrs"),
        (
            "prior",
            "unnormalised",
            r"exp\(log_prob\) integrates to 2\.50\d+ over the samples' range, expected 1",
        ),
        ("prior", "noisy", "must be reproducible: two generators with seed 0 differ"),
        ("prior", "wrong_variance", "variance says 2.0"),
        ("prior", "wrong_kl", "kl_from_normal gives"),
        ("regulariser", "detached_penalty", "the penalty is not differentiable"),
        (
            "regulariser",
            "needs_tea",
            r"no registered variant has a phase in \('critic',\) providing \('tea',\)",
        ),
        ("metric", "random_metric", "not deterministic for a seed"),
        ("critic", "label_blind", "the output ignores the labels y although num_classes > 0"),
        (
            "variant",
            "lazy",
            r"one step of phase 'generator' left the parameters of \('generator',\) unchanged",
        ),
        ("variant", "picky", r"builds on none of the data sets toy2d, digits: on toy2d: picky takes no"),
    ],
)
def test_a_broken_component_fails_its_contract(registry, kind, name, message):
    torch.manual_seed(0)
    with pytest.raises(AssertionError, match=message) as info:
        testing.check(kind, name, registry=registry)
    # Every failure names the component and the plugin it came from.
    assert str(info.value).startswith(f"{kind} '{name}' (plugin 'Broken'") or f"{kind} '{name}'" in str(
        info.value
    )


def test_a_prior_without_a_density_is_skipped_after_its_sampling_checks(registry):
    with pytest.raises(pytest.skip.Exception, match="has no log_prob"):
        testing.check("prior", "no_density", registry=registry)


def test_the_fixtures_are_there_for_authors(pytestconfig, genfw_registry, genfw_contract):
    # genfw.pytest_plugin is loaded through the pytest11 entry point.
    assert pytestconfig.pluginmanager.has_plugin("genfw")
    assert "non_saturating" in genfw_registry.names("loss")
    genfw_contract("loss", "hinge")
    with pytest.raises(AssertionError, match="unknown loss 'nope'"):
        genfw_contract("loss", "nope")


def test_the_pytest_plugin_does_not_import_torch():
    # pytest loads it in every project of an environment with genfw: it must stay light.
    code = "import sys, genfw.pytest_plugin; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_no_options_class_is_fine(registry):
    assert registry.get("loss", "batch_mean").options is NoOptions


def test_small_run_lets_a_refusal_reach_the_test_as_a_genfw_error(registry):
    # The same refusal on every data set: the GenfwError itself, as the config layer raised it.
    with pytest.raises(genfw.GenfwError, match=r"^regulariser 'mmd' applies to autoencoder phases, ") as info:
        testing.small_run("gan", extra={"regularisers": {"mmd": {}}})
    assert type(info.value) is genfw.GenfwError
    with pytest.raises(genfw.GenfwError, match=r"^variant: n_critic must be at least 1, got 0; options of "):
        testing.small_run("gan", extra={"variant": {"name": "gan", "n_critic": 0}})
    # One data set: its refusal as it is. Several, refusing differently: one error giving each.
    with pytest.raises(genfw.GenfwError, match=r"^picky takes no data of shape \(2,\)$"):
        testing.small_run("picky", registry=registry, datasets=("toy2d",))
    with pytest.raises(genfw.GenfwError) as info:
        testing.small_run("picky", registry=registry)
    assert str(info.value) == (
        "variant 'picky' builds on none of the data sets toy2d, digits: on toy2d: picky takes no data "
        "of shape (2,); on digits: picky takes no data of shape (1, 8, 8)"
    )
    with pytest.raises(genfw.GenfwError, match=r"^none of the data sets nope is registered; registered data"):
        testing.small_run("gan", datasets=("nope",))


def test_run_phase_takes_a_phase_or_its_name():
    by_name = testing.small_run("gan", datasets=("toy2d",))
    by_phase = testing.small_run("gan", datasets=("toy2d",))  # built from the same seed
    critic = by_phase.built.model.phases[0]
    assert critic.name == "critic"
    torch.manual_seed(3)
    loss_by_name, _, _ = testing.run_phase(by_name, "critic")
    torch.manual_seed(3)
    loss_by_phase, _, _ = testing.run_phase(by_phase, critic)
    assert torch.equal(loss_by_name, loss_by_phase)
    # The same step: both runs hold the same weights after it.
    for name in ("critic", "generator"):
        a, b = by_name.modules[name].state_dict(), by_phase.modules[name].state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(genfw.GenfwError) as info:
        testing.run_phase(by_name, "citic")
    assert str(info.value) == "variant 'gan' has no phase 'citic'; its phases: critic, generator"
