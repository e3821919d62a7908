"""The relativistic average objectives against the paper's formulas, and genfw's contract."""

from __future__ import annotations

import pytest
import torch
from genfw import GenfwError
from genfw.testing import check_loss, registry_with

import genfw_ragan
from genfw_ragan import RelativisticAverageLoss, RelativisticOptions

REAL = torch.tensor([2.0, 0.0, -1.0, 1.0])  # mean 0.5
FAKE = torch.tensor([0.5, -2.0, 3.0, 1.0])  # mean 0.625
# D~(x_r) = C(x_r) - mean C(x_f) and D~(x_f) = C(x_f) - mean C(x_r):
REAL_REL = torch.tensor([1.375, -0.625, -1.625, 0.375])
FAKE_REL = torch.tensor([0.0, -2.5, 2.5, 0.5])


def loss(form: str) -> RelativisticAverageLoss:
    return RelativisticAverageLoss(RelativisticOptions(form=form))


def test_rasgan_is_the_papers_cross_entropy():
    # Jolicoeur-Martineau (2019), RaSGAN: L_D = -E log(sigmoid(D~(x_r))) - E log(1 - sigmoid(D~(x_f))),
    # L_G = -E log(sigmoid(D~(x_f))) - E log(1 - sigmoid(D~(x_r))), written out with sigmoid.
    d = -torch.log(torch.sigmoid(REAL_REL)).mean() - torch.log(1 - torch.sigmoid(FAKE_REL)).mean()
    g = -torch.log(torch.sigmoid(FAKE_REL)).mean() - torch.log(1 - torch.sigmoid(REAL_REL)).mean()
    torch.testing.assert_close(loss("sgan").critic_loss(REAL, FAKE), d)
    torch.testing.assert_close(loss("sgan").generator_loss(FAKE, real_scores=REAL), g)


def test_ralsgan_by_hand():
    # (D~(x_r) - 1)^2 = 0.140625, 2.640625, 6.890625, 0.390625 -> mean 2.515625
    # (D~(x_f) + 1)^2 = 1, 2.25, 12.25, 2.25 -> mean 4.4375
    assert loss("lsgan").critic_loss(REAL, FAKE).item() == pytest.approx(2.515625 + 4.4375)
    # (D~(x_f) - 1)^2 = 1, 12.25, 2.25, 0.25 -> 3.9375; (D~(x_r) + 1)^2 = 5.640625, 0.140625,
    # 0.390625, 1.890625 -> 2.015625
    assert loss("lsgan").generator_loss(FAKE, real_scores=REAL).item() == pytest.approx(3.9375 + 2.015625)


def test_rahinge_by_hand():
    # max(0, 1 - D~(x_r)) = 0, 1.625, 2.625, 0.625 -> 1.21875; max(0, 1 + D~(x_f)) = 1, 0, 3.5, 1.5 -> 1.5
    assert loss("hinge").critic_loss(REAL, FAKE).item() == pytest.approx(1.21875 + 1.5)
    # max(0, 1 - D~(x_f)) = 1, 3.5, 0, 0.5 -> 1.25; max(0, 1 + D~(x_r)) = 2.375, 0.375, 0, 1.375 -> 1.03125
    assert loss("hinge").generator_loss(FAKE, real_scores=REAL).item() == pytest.approx(1.25 + 1.03125)


def test_shifting_every_score_by_a_constant_changes_nothing():
    # Only differences between real and fake scores matter: the critic is relativistic.
    for form in ("sgan", "lsgan", "hinge"):
        torch.testing.assert_close(
            loss(form).critic_loss(REAL + 3, FAKE + 3), loss(form).critic_loss(REAL, FAKE)
        )


def test_the_generator_loss_moves_the_fake_scores_up_and_needs_the_real_ones():
    fake = FAKE.clone().requires_grad_()
    loss("sgan").generator_loss(fake, real_scores=REAL).backward()
    assert (fake.grad < 0).all()  # descending it raises every fake score
    with pytest.raises(GenfwError, match="needs the critic's real scores"):
        loss("sgan").generator_loss(FAKE)


@pytest.mark.parametrize("form", ["sgan", "lsgan", "hinge"])
def test_keeps_genfws_loss_contract(form):
    # Scalars, gradients to the right scores, options that round-trip: genfw's own kit.
    check_loss("relativistic_average", registry=registry_with(genfw_ragan), options={"form": form})


def test_registered_with_validated_options():
    registry = registry_with(genfw_ragan)
    component = registry.get("loss", "relativistic_average")
    assert component.factory.role == "adversarial" and component.factory.needs_real_scores
    assert (
        registry.spec("loss", "relativistic_average", {"form": "hinge"}, where="loss").build().form == "hinge"
    )
    with pytest.raises(GenfwError, match=r"form must be one of sgan, lsgan, hinge, got 'wgan'"):
        registry.spec("loss", "relativistic_average", {"form": "wgan"}, where="loss")
