"""The Laplace prior against scipy-free references written here, and genfw's prior contract."""

from __future__ import annotations

import math

import pytest
import torch
from genfw import GenfwError
from genfw.testing import check_prior, registry_with

import genfw_laplace
from genfw_laplace import LaplaceOptions, LaplacePrior


def prior(scale: float = 0.5, dim: int = 3) -> LaplacePrior:
    return LaplacePrior(LaplaceOptions(scale=scale), dim=dim)


def test_log_prob_by_hand():
    # b = 0.5: log p(z) = sum -|z_j| / 0.5 - log(1) = -2 (|z_1| + |z_2|)
    z = torch.tensor([[0.0, 0.0], [1.0, -0.25]])
    torch.testing.assert_close(prior(0.5, 2).log_prob(z), torch.tensor([0.0, -2.5]))
    # b = 2: -|z| / 2 - log 4
    assert prior(2.0, 1).log_prob(torch.tensor([[3.0]])).item() == pytest.approx(-1.5 - math.log(4.0))


def test_samples_follow_the_laplace_cdf():
    # P(|z| <= t) = 1 - exp(-t / b) for Laplace(0, b); 40000 draws, 4 standard errors.
    z = prior(0.5, 4).sample(10000, device="cpu", generator=torch.Generator().manual_seed(0)).flatten()
    for t in (0.1, 0.5, 1.5):
        expected = 1 - math.exp(-t / 0.5)
        share = (z.abs() <= t).double().mean().item()
        assert abs(share - expected) < 4 * math.sqrt(expected * (1 - expected) / z.numel())
    assert abs(z.mean().item()) < 4 * math.sqrt(2 * 0.25 / z.numel())
    assert prior(0.5).variance == pytest.approx(0.5)


def test_kl_from_normal_matches_a_monte_carlo_estimate():
    # KL = E_q[log q(z) - log p(z)], estimated from 200000 draws of q = N(mu, s^2).
    mu, logvar = torch.tensor([[0.8, -0.3]]), torch.tensor([[-1.0, 0.5]])
    closed = prior(0.7, 2).kl_from_normal(mu, logvar)
    g = torch.Generator().manual_seed(1)
    std = (0.5 * logvar).exp()
    eps = torch.randn(200000, 2, generator=g, dtype=torch.float64)
    z = mu.double() + std.double() * eps
    log_q = (-0.5 * eps.square() - 0.5 * math.log(2 * math.pi) - std.double().log()).sum(1)
    log_p = (-z.abs() / 0.7 - math.log(1.4)).sum(1)
    diff = log_q - log_p
    assert abs(closed.item() - diff.mean().item()) < 4 * diff.std().item() / math.sqrt(len(diff))


def test_kl_is_zero_nowhere_but_small_for_a_matching_posterior():
    # No Gaussian equals a Laplace, so KL > 0; the best Gaussian (mu 0, unit variance here) is close.
    kl = prior(math.sqrt(0.5), 1).kl_from_normal(torch.zeros(1, 1), torch.zeros(1, 1))
    # -1/2 log(2 pi e) + log(sqrt 2) + sqrt(2/pi) * sqrt 2 = 0.0724...
    expected = -0.5 * math.log(2 * math.pi * math.e) + math.log(math.sqrt(2)) + 2 / math.sqrt(math.pi)
    assert kl.item() == pytest.approx(expected, rel=1e-5) and kl.item() > 0


@pytest.mark.parametrize("scale", [0.1, 1.0, 3.0])
def test_keeps_genfws_prior_contract(scale):
    # Shapes, reproducible sampling, log_prob integrating to 1 and matching the samples, the KL
    # against Monte Carlo: genfw's own kit.
    check_prior("laplace", registry=registry_with(genfw_laplace), options={"scale": scale})


def test_registered_with_validated_options():
    registry = registry_with(genfw_laplace)
    assert registry.spec("prior", "laplace", {}, where="prior").build(dim=2).scale == pytest.approx(0.7071068)
    with pytest.raises(GenfwError, match="scale must be positive"):
        registry.spec("prior", "laplace", {"scale": 0.0}, where="prior")
