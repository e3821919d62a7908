"""The least-squares objectives against values worked out by hand, and the registration."""

from __future__ import annotations

import pytest
import torch
from genfw import GenfwError
from genfw.plugins import PluginHost

import genfw_lsgan
from genfw_lsgan import LeastSquaresLoss, LeastSquaresOptions

REAL = torch.tensor([2.0, 0.0, -1.0, 1.0])
FAKE = torch.tensor([0.5, -2.0, 3.0, 1.0])


def test_default_coding_a0_b1_c1():
    loss = LeastSquaresLoss(LeastSquaresOptions())
    # critic: real - 1 = [1, -1, -2, 0] -> squares 1, 1, 4, 0 -> mean 1.5 -> half 0.75
    #         fake - 0 = [0.5, -2, 3, 1] -> squares 0.25, 4, 9, 1 -> mean 3.5625 -> half 1.78125
    assert loss.critic_loss(REAL, FAKE).item() == pytest.approx(0.75 + 1.78125)
    # generator: fake - 1 = [-0.5, -3, 2, 0] -> squares 0.25, 9, 4, 0 -> mean 3.3125 -> half 1.65625
    assert loss.generator_loss(FAKE).item() == pytest.approx(1.65625)


def test_pearson_coding_a_minus1_b1_c0():
    loss = LeastSquaresLoss(LeastSquaresOptions(a=-1.0, b=1.0, c=0.0))
    # critic: real part as above, 0.75; fake + 1 = [1.5, -1, 4, 2] -> 2.25, 1, 16, 4 -> mean 5.8125 -> 2.90625
    assert loss.critic_loss(REAL, FAKE).item() == pytest.approx(0.75 + 2.90625)
    # generator: fake - 0 -> squares 0.25, 4, 9, 1 -> mean 3.5625 -> half 1.78125
    assert loss.generator_loss(FAKE).item() == pytest.approx(1.78125)


def test_real_scores_do_not_change_the_generator_loss():
    loss = LeastSquaresLoss(LeastSquaresOptions())
    assert loss.generator_loss(FAKE, real_scores=REAL).item() == loss.generator_loss(FAKE).item()


def test_minimum_at_the_targets():
    loss = LeastSquaresLoss(LeastSquaresOptions(a=-1.0, b=1.0, c=0.0))
    assert loss.critic_loss(torch.ones(3), -torch.ones(3)).item() == 0.0
    assert loss.generator_loss(torch.zeros(3)).item() == 0.0


def test_gradients_pull_scores_to_their_targets():
    # d/ds_i of 1/2 mean (s - t)^2 is (s_i - t) / B.
    real, fake = REAL.clone().requires_grad_(), FAKE.clone().requires_grad_()
    LeastSquaresLoss(LeastSquaresOptions()).critic_loss(real, fake).backward()
    torch.testing.assert_close(real.grad, torch.tensor([1.0, -1.0, -2.0, 0.0]) / 4)
    torch.testing.assert_close(fake.grad, torch.tensor([0.5, -2.0, 3.0, 1.0]) / 4)


def test_registered_as_an_adversarial_loss_with_validated_options():
    host = PluginHost()
    host.add(genfw_lsgan, "lsgan")
    component = host.registry.get("loss", "least_squares")
    assert component.factory.role == "adversarial"
    assert [(n, d) for n, _, d in component.option_fields()] == [("a", 0.0), ("b", 1.0), ("c", 1.0)]
    spec = host.registry.spec("loss", "least_squares", {"a": -1, "c": 0}, where="loss")
    built = spec.build()
    assert (built.a, built.b, built.c) == (-1.0, 1.0, 0.0)
    with pytest.raises(GenfwError, match="must differ from a"):
        host.registry.spec("loss", "least_squares", {"a": 1.0}, where="loss")
    with pytest.raises(GenfwError, match=r"loss\.d: unknown option"):
        host.registry.spec("loss", "least_squares", {"d": 1.0}, where="loss")
