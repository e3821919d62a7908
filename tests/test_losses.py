"""Tests of the built-in losses (genfw_plugins.losses) against numbers computed by hand."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Bernoulli, Normal

from genfw import GenfwError
from genfw.plugins import PluginHost
from genfw_plugins import losses

REAL = [2.0, -1.0, 0.5]  # critic logits on real examples
FAKE = [0.3, -3.0]  # critic logits on generated examples (a different batch size on purpose)


def sigmoid(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


@pytest.fixture(scope="module")
def registry():
    host = PluginHost()
    host.add(losses, "losses")
    return host.registry


def build(registry, name: str, options: dict | None = None):
    return registry.spec("loss", name, options or {}, where="loss").build()


def test_roles(registry) -> None:
    roles = {name: build(registry, name).role for name in registry.names("loss")}
    assert roles == {
        "minimax": "adversarial",
        "non_saturating": "adversarial",
        "wasserstein": "adversarial",
        "hinge": "adversarial",
        "least_squares": "adversarial",
        "mse": "reconstruction",
        "l1": "reconstruction",
        "gaussian": "reconstruction",
        "bernoulli": "reconstruction",
    }


# --- adversarial --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["minimax", "non_saturating"])
def test_gan_critic_loss_by_hand(registry, name: str) -> None:
    loss = build(registry, name)
    # -E log D(x) - E log(1 - D(G(z)))
    expected = -mean([math.log(sigmoid(r)) for r in REAL]) - mean([math.log(1 - sigmoid(f)) for f in FAKE])
    assert loss.critic_loss(torch.tensor(REAL), torch.tensor(FAKE)).item() == pytest.approx(
        expected, rel=1e-6
    )


@pytest.mark.parametrize("name", ["minimax", "non_saturating"])
def test_one_sided_label_smoothing_by_hand(registry, name: str) -> None:
    loss = build(registry, name, {"real_label": 0.9})
    real = -mean([0.9 * math.log(sigmoid(r)) + 0.1 * math.log(1 - sigmoid(r)) for r in REAL])
    fake = -mean([math.log(1 - sigmoid(f)) for f in FAKE])  # fakes keep target 0: one-sided
    assert loss.critic_loss(torch.tensor(REAL), torch.tensor(FAKE)).item() == pytest.approx(
        real + fake, rel=1e-6
    )


@pytest.mark.parametrize("label", [0.0, 1.1])
def test_label_smoothing_range(registry, label: float) -> None:
    with pytest.raises(ValueError, match=r"real_label must be in \(0, 1\]"):
        losses.GANLossOptions(real_label=label)
    with pytest.raises(GenfwError):
        registry.spec("loss", "minimax", {"real_label": label}, where="loss")


def test_generator_losses_by_hand(registry) -> None:
    fake = torch.tensor(FAKE)
    minimax = mean([math.log(1 - sigmoid(f)) for f in FAKE])  # G minimises log(1 - D(G(z)))
    non_saturating = -mean([math.log(sigmoid(f)) for f in FAKE])  # G minimises -log D(G(z))
    assert build(registry, "minimax").generator_loss(fake).item() == pytest.approx(minimax, rel=1e-6)
    assert build(registry, "non_saturating").generator_loss(fake).item() == pytest.approx(
        non_saturating, rel=1e-6
    )


def test_non_saturating_gradient_where_minimax_saturates(registry) -> None:
    """Where D(G(z)) ~ 0, log(1 - D) is flat but -log D is steep (Goodfellow et al. 2014, sec. 3)."""
    grads = {}
    for name in ("minimax", "non_saturating"):
        f = torch.tensor([-10.0], requires_grad=True)  # D(G(z)) = sigmoid(-10) ~ 4.5e-5
        build(registry, name).generator_loss(f).backward()
        grads[name] = f.grad.item()
    # d/df log(1 - sigmoid(f)) = -sigmoid(f); d/df -log sigmoid(f) = -(1 - sigmoid(f)).
    assert grads["minimax"] == pytest.approx(-sigmoid(-10.0), rel=1e-4)
    assert grads["non_saturating"] == pytest.approx(-(1 - sigmoid(-10.0)), rel=1e-4)
    assert abs(grads["minimax"]) < 1e-4 < 0.99 < abs(grads["non_saturating"])


def test_gan_losses_are_stable_for_large_logits(registry) -> None:
    loss = build(registry, "non_saturating")
    critic = loss.critic_loss(torch.tensor([-200.0]), torch.tensor([200.0]))
    generator = loss.generator_loss(torch.tensor([-200.0]))
    assert critic.item() == pytest.approx(400.0) and generator.item() == pytest.approx(200.0)
    assert build(registry, "minimax").generator_loss(torch.tensor([200.0])).item() == pytest.approx(-200.0)


def test_wasserstein_by_hand(registry) -> None:
    loss = build(registry, "wasserstein")
    # The critic maximises E f(x) - E f(G(z)), i.e. minimises E f(G(z)) - E f(x).
    critic = loss.critic_loss(torch.tensor(REAL), torch.tensor(FAKE))
    assert critic.item() == pytest.approx(mean(FAKE) - mean(REAL))
    assert loss.generator_loss(torch.tensor(FAKE)).item() == pytest.approx(-mean(FAKE))


def test_hinge_by_hand(registry) -> None:
    loss = build(registry, "hinge")
    # relu(1 - r): 2.0 -> 0 (clipped), -1.0 -> 2, 0.5 -> 0.5; relu(1 + f): 0.3 -> 1.3, -3.0 -> 0.
    critic = loss.critic_loss(torch.tensor(REAL), torch.tensor(FAKE))
    assert critic.item() == pytest.approx((0 + 2 + 0.5) / 3 + (1.3 + 0) / 2)
    assert loss.generator_loss(torch.tensor(FAKE)).item() == pytest.approx(-mean(FAKE))


def test_least_squares_by_hand(registry) -> None:
    """LSGAN (Mao et al. 2017, eq. 2): 1/2 E (D(x) - b)^2 + 1/2 E (D(G(z)) - a)^2; G 1/2 E (D(G(z)) - c)^2."""
    loss = build(registry, "least_squares")  # 0-1 coding: a = 0, b = c = 1
    critic = loss.critic_loss(torch.tensor(REAL), torch.tensor(FAKE))
    # (2-1)^2 = 1, (-1-1)^2 = 4, (0.5-1)^2 = 0.25; fakes 0.3^2 = 0.09, 3^2 = 9.
    assert critic.item() == pytest.approx(0.5 * (1 + 4 + 0.25) / 3 + 0.5 * (0.09 + 9) / 2)
    # (0.3 - 1)^2 = 0.49, (-3 - 1)^2 = 16
    assert loss.generator_loss(torch.tensor(FAKE)).item() == pytest.approx(0.5 * (0.49 + 16) / 2)
    chi2 = build(registry, "least_squares", {"a": -1.0, "b": 1.0, "c": 0.0})
    critic = chi2.critic_loss(torch.tensor(REAL), torch.tensor(FAKE))
    assert critic.item() == pytest.approx(0.5 * (1 + 4 + 0.25) / 3 + 0.5 * (1.3**2 + 2**2) / 2)
    assert chi2.generator_loss(torch.tensor(FAKE)).item() == pytest.approx(0.5 * (0.09 + 9) / 2)


def test_least_squares_refuses_equal_targets(registry) -> None:
    with pytest.raises(GenfwError, match="a and b must differ"):
        build(registry, "least_squares", {"a": 1.0, "b": 1.0})


# --- reconstruction -----------------------------------------------------------------------------


def test_mse_and_l1_by_hand(registry) -> None:
    x = torch.tensor([[[1.0, -1.0], [0.0, 0.5]], [[0.0, 0.0], [0.0, 0.0]]])  # (2, 2, 2)
    x_hat = torch.tensor([[[0.0, -1.0], [2.0, 0.5]], [[1.0, -1.0], [0.5, 0.0]]])
    mse = build(registry, "mse")(x_hat, x)
    l1 = build(registry, "l1")(x_hat, x)
    torch.testing.assert_close(mse, torch.tensor([1.0 + 4.0, 1.0 + 1.0 + 0.25]))
    torch.testing.assert_close(l1, torch.tensor([1.0 + 2.0, 1.0 + 1.0 + 0.5]))


@pytest.mark.parametrize("sigma", [1.0, 0.3])
def test_gaussian_nll_matches_torch(registry, sigma: float) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 5, 5, generator=g, dtype=torch.float64)
    x_hat = torch.randn(4, 3, 5, 5, generator=g, dtype=torch.float64)
    nll = build(registry, "gaussian", {"sigma": sigma})(x_hat, x)
    expected = -Normal(x_hat, sigma).log_prob(x).flatten(1).sum(1)
    assert nll.shape == (4,)
    torch.testing.assert_close(nll, expected)


def test_gaussian_refuses_bad_sigma(registry) -> None:
    with pytest.raises(ValueError, match="sigma must be positive"):
        losses.GaussianOptions(sigma=0.0)


def test_bernoulli_nll_matches_torch(registry) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 2, (4, 1, 6, 6), generator=g).double() * 2 - 1  # binary data in {-1, 1}
    logits = 3 * torch.randn(4, 1, 6, 6, generator=g, dtype=torch.float64)
    nll = build(registry, "bernoulli")(logits, x)
    expected = -Bernoulli(logits=logits).log_prob((x + 1) / 2).flatten(1).sum(1)
    assert nll.shape == (4,)
    torch.testing.assert_close(nll, expected)
