"""MAD-GAN (genfw_plugins.madgan): the critic's k + 1-way objective and the generators' objective
on hand-computed tensors, the phases against them, and sampling from a uniformly chosen generator."""

from __future__ import annotations

import math

import pytest
import torch

from genfw import Batch, GenfwError, Modules
from genfw.config import resolve
from genfw.train import build
from genfw_plugins.madgan import MultiGenerator, critic_loss, generator_loss, real_log_odds

# k = 2 generators: 3 outputs (gen 1, gen 2, real). Softmax of [0, 0, 0] is 1/3 each, of
# [ln 2, 0, 0] is (1/2, 1/4, 1/4).
L2 = math.log(2.0)


def test_critic_objective_by_hand() -> None:
    real = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, L2]])  # D_3 = 1/3, 1/2
    fake = torch.tensor(
        [
            [[L2, 0.0, 0.0], [0.0, 0.0, 0.0]],  # from generator 1: D_1 = 1/2, 1/3
            [[0.0, L2, 0.0], [0.0, 0.0, L2]],  # from generator 2: D_2 = 1/2, 1/4
        ]
    )
    # -E log D_3(x) - E log D_1(G_1(z)) - E log D_2(G_2(z))
    expected = (
        -(math.log(1 / 3) + math.log(1 / 2)) / 2
        - (math.log(1 / 2) + math.log(1 / 3)) / 2
        - (math.log(1 / 2) + math.log(1 / 4)) / 2
    )
    assert critic_loss(real, fake).item() == pytest.approx(expected, rel=1e-6)


def test_generator_objectives_by_hand() -> None:
    fake = torch.tensor([[[L2, 0.0, 0.0], [0.0, 0.0, 0.0]], [[0.0, 0.0, L2], [0.0, 0.0, 0.0]]])
    # D_3 on the fakes: generator 1: 1/4, 1/3; generator 2: 1/2, 1/3
    ns = -(math.log(1 / 4) + math.log(1 / 3)) / 2 - (math.log(1 / 2) + math.log(1 / 3)) / 2
    assert generator_loss(fake).item() == pytest.approx(ns, rel=1e-6)
    mm = (math.log(3 / 4) + math.log(2 / 3)) / 2 + (math.log(1 / 2) + math.log(2 / 3)) / 2
    assert generator_loss(fake, "minimax").item() == pytest.approx(mm, rel=1e-6)
    # log D_3 - log(1 - D_3): 1/2 -> 0; 1/3 -> log(1/2)
    torch.testing.assert_close(real_log_odds(fake[1]), torch.tensor([0.0, -L2]))


def test_phases_use_each_generator_for_its_own_class(registry) -> None:
    raw = {
        "variant": {"name": "madgan", "num_generators": 3, "latent_dim": 2},
        "dataset": "toy2d",
        "generator": {"name": "mlp", "hidden": [8]},
        "critic": {"name": "mlp", "hidden": [8]},
        "metrics": {},
    }
    b = build(resolve(raw, registry))
    m = Modules(b.model.modules)
    x = b.dataset.tensors[0][:5]
    torch.manual_seed(0)
    out = b.model.phases[0].step(Batch(x, torch.zeros(5, dtype=torch.long)), m)
    torch.manual_seed(0)
    z = torch.randn(15, 2).view(3, 5, 2)  # generator i gets rows 5 i .. 5 i + 4 of the noise
    fakes = torch.stack([g(z[i]) for i, g in enumerate(m.generator.generators)])  # (3, 5, 2)
    expected = critic_loss(m.critic(x), m.critic(fakes.flatten(0, 1)).view(3, 5, 4))
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert m.critic(x).shape == (5, 4)  # k + 1 outputs
    torch.manual_seed(1)
    out = b.model.phases[1].step(Batch(x, torch.zeros(5, dtype=torch.long)), m)
    torch.manual_seed(1)
    z = torch.randn(15, 2).view(3, 5, 2)
    fakes = torch.stack([g(z[i]) for i, g in enumerate(m.generator.generators)])
    expected = generator_loss(m.critic(fakes.flatten(0, 1)).view(3, 5, 4))
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_sampling_draws_a_uniformly_chosen_generator() -> None:
    # Generator i outputs the constant i: the samples reveal which generator made each.
    class Const(torch.nn.Module):
        def __init__(self, value: float) -> None:
            super().__init__()
            self.value = value

        def forward(self, z, y=None):
            return torch.full((z.shape[0], 2), self.value)

    multi = MultiGenerator([Const(float(i)) for i in range(4)])
    torch.manual_seed(0)
    out = multi(torch.randn(4000, 3))
    counts = torch.bincount(out[:, 0].long(), minlength=4)
    assert counts.sum() == 4000 and (counts > 850).all() and (counts < 1150).all()
    which = torch.tensor([3, 0, 0, 2])
    torch.testing.assert_close(multi(torch.randn(4, 3), which=which)[:, 0], which.float())


def _madgan(registry, **extra) -> dict:
    raw = {
        "variant": {"name": "madgan", "num_generators": 3, "latent_dim": 2},
        "dataset": "toy2d",
        "generator": {"name": "mlp", "hidden": [8]},
        "critic": {"name": "mlp", "hidden": [8]},
        "metrics": {},
    }
    raw.update(extra)
    return raw


def test_experience_replay_is_refused_in_one_line_naming_the_variants_it_applies_to(registry) -> None:
    """Replaying would overwrite the first rows of the k n fakes, which the critic labels as
    generator 0's: MAD-GAN refuses it, as cgan/acgan/infogan do, and names where it works."""
    with pytest.raises(GenfwError) as info:
        build(resolve(_madgan(registry, regularisers={"experience_replay": {}}), registry))
    [line] = str(info.value).splitlines()
    assert "wrong label" in line and "MultiGenerator" in line
    listed = {v.strip() for v in line.split("variants it applies to:")[1].split(",")}
    assert {"gan", "wgan-gp", "ebgan"} <= listed
    assert not listed & {"madgan", "cgan", "acgan", "infogan", "progan"}
    for name in sorted(listed & {"gan", "wgan", "lsgan"}):  # what it names does build with it
        raw = {**_madgan(registry, regularisers={"experience_replay": {}}), "variant": name}
        build(resolve(raw, registry))


def test_real_scores_do_not_depend_on_the_fakes_with_minibatch_stddev(registry) -> None:
    """The critic scores the real batch in a call of its own, so a batch-level feature (minibatch
    standard deviation) of a real example is computed over real examples only."""
    b = build(resolve(_madgan(registry, regularisers={"minibatch_stddev": {"group_size": 4}}), registry))
    m = Modules(b.model.modules)
    critic = m.critic
    x = b.dataset.tensors[0][:8]
    batch = Batch(x, torch.zeros(8, dtype=torch.long))
    torch.manual_seed(0)
    first = b.model.phases[0].step(batch, m)
    with torch.no_grad():  # very different fakes for the second call
        for p in m.generator.parameters():
            p.mul_(-5.0).add_(1.0)
    torch.manual_seed(1)
    second = b.model.phases[0].step(batch, m)
    alone = real_log_odds(critic(x))  # the real batch by itself
    torch.testing.assert_close(first.logs["real_score"], alone)
    torch.testing.assert_close(second.logs["real_score"], alone)
    assert not torch.allclose(first.logs["fake_score"], second.logs["fake_score"])
    # The objective is the same loss on the two separate calls.
    torch.manual_seed(1)
    z = torch.randn(24, 2).view(3, 8, 2)
    fakes = torch.stack([g(z[i]) for i, g in enumerate(m.generator.generators)])
    expected = critic_loss(critic(x), critic(fakes.flatten(0, 1)).view(3, 8, 4))
    assert second.loss.item() == pytest.approx(expected.item(), rel=1e-5)
