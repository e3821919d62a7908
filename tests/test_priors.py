"""Tests of the built-in priors (genfw_plugins.priors): densities, KL, sampling."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from genfw import GenfwError
from genfw.plugins import PluginHost
from genfw_plugins import priors


@pytest.fixture(scope="module")
def registry():
    host = PluginHost()
    host.add(priors, "priors")
    return host.registry


def build(registry, name: str, options: dict | None = None, dim: int = 4):
    return registry.spec("prior", name, options or {}, where="prior").build(dim=dim)


def test_registered_names(registry) -> None:
    assert registry.names("prior") == ["categorical", "mog", "normal", "spike_slab", "uniform", "vamp"]


@pytest.mark.parametrize(
    ("name", "options"),
    [("normal", {}), ("uniform", {}), ("spike_slab", {}), ("mog", {}), ("categorical", {"categories": 3})],
)
def test_sampling_uses_the_given_generator(registry, name: str, options: dict) -> None:
    prior = build(registry, name, options, dim=5)
    state = torch.get_rng_state()
    a = prior.sample(64, device="cpu", generator=torch.Generator().manual_seed(3))
    b = prior.sample(64, device="cpu", generator=torch.Generator().manual_seed(3))
    c = prior.sample(64, device="cpu", generator=torch.Generator().manual_seed(4))
    assert torch.equal(torch.get_rng_state(), state)  # the global generator was not touched
    assert a.shape == (64, 5) and a.dtype == torch.float32
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, c)
    assert prior.dim == 5


@pytest.mark.parametrize(
    ("name", "options", "exact"),
    [
        ("normal", {}, 1.0),
        ("uniform", {"low": -2.0, "high": 1.0}, 9 / 12),  # (high - low)^2 / 12
        ("spike_slab", {"alpha": 0.3}, 0.3),  # alpha * 1 + (1 - alpha) * 0, mean 0
        ("mog", {"components": 4, "radius": 2.0, "std": 0.5}, 0.25 + 2 * 2.0 / 5),  # std^2 + centres' spread
        ("categorical", {"categories": 3}, (3 * (1 / 3) * (2 / 3) + 2 * 1.0) / 5),
    ],
)
def test_variance_is_the_mean_per_coordinate_sample_variance(registry, name, options, exact) -> None:
    """``variance`` (the sigma_z^2 of the WAE-MMD kernel C = 2 d sigma_z^2 and of latent_mmd) is
    the per-coordinate variance averaged over coordinates; 200,000 draws agree within 0.02."""
    prior = build(registry, name, options, dim=5)
    assert prior.variance == pytest.approx(exact)
    z = prior.sample(200_000, device="cpu", generator=torch.Generator().manual_seed(7)).double()
    assert z.var(0).mean().item() == pytest.approx(exact, abs=0.02)


# --- normal -------------------------------------------------------------------------------------


def test_normal_log_prob(registry) -> None:
    prior = build(registry, "normal", dim=3)
    z = torch.randn(10, 3)
    torch.testing.assert_close(prior.log_prob(z), Normal(0.0, 1.0).log_prob(z).sum(-1))
    # At the origin: -d/2 log(2 pi).
    assert prior.log_prob(torch.zeros(1, 3)).item() == pytest.approx(-1.5 * math.log(2 * math.pi))


def test_normal_kl_matches_torch(registry) -> None:
    prior = build(registry, "normal", dim=6)
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(8, 6, generator=g, dtype=torch.float64)
    logvar = 2.0 * torch.randn(8, 6, generator=g, dtype=torch.float64)
    expected = kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(0.0, 1.0)).sum(-1)
    kl = prior.kl_from_normal(mu, logvar)
    assert kl.shape == (8,)
    torch.testing.assert_close(kl, expected)
    assert prior.kl_from_normal(torch.zeros(2, 6), torch.zeros(2, 6)).abs().max() == 0


def test_normal_samples_are_standard(registry) -> None:
    z = build(registry, "normal", dim=4).sample(
        20_000, device="cpu", generator=torch.Generator().manual_seed(0)
    )
    # 5 standard errors: mean 1/sqrt(n) ~ 0.007, variance sqrt(2/n) ~ 0.01.
    assert z.mean(0).abs().max() < 5 * 0.0071
    assert (z.var(0) - 1).abs().max() < 5 * 0.01


# --- uniform ------------------------------------------------------------------------------------


def test_uniform_samples_and_log_prob(registry) -> None:
    prior = build(registry, "uniform", {"low": -2.0, "high": 3.0}, dim=3)
    z = prior.sample(20_000, device="cpu", generator=torch.Generator().manual_seed(0))
    assert z.min() >= -2.0 and z.max() < 3.0
    assert (z.mean(0) - 0.5).abs().max() < 5 * math.sqrt(25 / 12 / 20_000)
    assert prior.variance == pytest.approx(25 / 12)
    inside = torch.tensor([[0.0, -2.0, 2.9], [1.0, 1.0, 1.0]])
    torch.testing.assert_close(prior.log_prob(inside), torch.full((2,), -3 * math.log(5.0)))
    outside = torch.tensor([[0.0, 0.0, 3.1], [-2.01, 0.0, 0.0]])
    assert torch.isneginf(prior.log_prob(outside)).all()
    assert not hasattr(prior, "kl_from_normal")


@pytest.mark.parametrize(("low", "high"), [(1.0, 1.0), (1.0, -1.0)])
def test_uniform_refuses_empty_interval(registry, low: float, high: float) -> None:
    with pytest.raises(ValueError, match="uniform prior needs low < high"):
        priors.UniformOptions(low=low, high=high)
    with pytest.raises(GenfwError):
        registry.spec("prior", "uniform", {"low": low, "high": high}, where="prior")


# --- spike and slab -----------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [0.3, 0.8])
def test_spike_slab_sparsity_and_slab(registry, alpha: float) -> None:
    prior = build(registry, "spike_slab", {"alpha": alpha}, dim=8)
    n = 25_000
    z = prior.sample(n, device="cpu", generator=torch.Generator().manual_seed(1))
    total = z.numel()
    zeros = (z == 0).sum().item()
    # Binomial(total, 1 - alpha): within 5 standard deviations.
    sd = math.sqrt(total * alpha * (1 - alpha))
    assert abs(zeros - total * (1 - alpha)) < 5 * sd
    assert prior.sparsity == pytest.approx(1 - alpha)
    slab = z[z != 0]
    # Slab is N(0, 1): mean within 5 standard errors, std within 5 standard errors (~1/sqrt(2m)).
    m = slab.numel()
    assert abs(slab.mean().item()) < 5 / math.sqrt(m)
    assert abs(slab.std().item() - 1.0) < 5 / math.sqrt(2 * m)
    # Every dimension is sparse, not only some of them.
    per_dim = (z == 0).float().mean(0)
    assert (per_dim - (1 - alpha)).abs().max() < 5 * math.sqrt(alpha * (1 - alpha) / n)


def test_spike_slab_log_prob_by_hand(registry) -> None:
    prior = build(registry, "spike_slab", {"alpha": 0.3}, dim=4)
    z = torch.tensor([[0.0, 1.0, 0.0, -2.0], [0.0, 0.0, 0.0, 0.0], [0.5, 0.5, 0.5, 0.5]])

    def log_n(v: float) -> float:
        return -0.5 * v * v - 0.5 * math.log(2 * math.pi)

    expected = [
        2 * math.log(0.7) + 2 * math.log(0.3) + log_n(1.0) + log_n(-2.0),
        4 * math.log(0.7),
        4 * (math.log(0.3) + log_n(0.5)),
    ]
    torch.testing.assert_close(prior.log_prob(z), torch.tensor(expected))


def test_spike_slab_without_spike_is_normal(registry) -> None:
    prior = build(registry, "spike_slab", {"alpha": 1.0}, dim=3)
    z = prior.sample(1000, device="cpu", generator=torch.Generator().manual_seed(0))
    assert (z != 0).all()
    torch.testing.assert_close(prior.log_prob(z), Normal(0.0, 1.0).log_prob(z).sum(-1))
    assert torch.isneginf(prior.log_prob(torch.zeros(1, 3))).all()  # no atom at 0 when alpha = 1


def test_spike_slab_has_no_gaussian_kl(registry) -> None:
    assert not hasattr(build(registry, "spike_slab"), "kl_from_normal")


@pytest.mark.parametrize("alpha", [0.0, -0.1, 1.5])
def test_spike_slab_refuses_bad_alpha(registry, alpha: float) -> None:
    with pytest.raises(ValueError, match=r"alpha must be in \(0, 1\], got"):
        priors.SpikeSlabOptions(alpha=alpha)
    with pytest.raises(GenfwError):
        registry.spec("prior", "spike_slab", {"alpha": alpha}, where="prior")
