"""BiGAN's two phases against the paper's objective written out here, and genfw's variant contract."""

from __future__ import annotations

import pytest
import torch
from genfw.testing import check_variant, registry_with, small_run

import genfw_bigan


@pytest.fixture(scope="module")
def registry():
    return registry_with(genfw_bigan)


@pytest.fixture
def run(registry):
    torch.manual_seed(0)
    return small_run(
        "bigan", registry=registry, datasets=("toy2d",), extra={"variant": {"name": "bigan", "latent_dim": 3}}
    )


def phase(run, name):
    (p,) = [p for p in run.built.model.phases if p.name == name]
    return p


def reference(run, seed):
    """D(x, E(x)) and D(G(z), z) computed directly, with the prior's noise drawn from ``seed``."""
    m, x = run.modules, run.batch.x
    torch.manual_seed(seed)
    z = torch.randn(len(x), 3)  # the normal prior draws randn(n, latent_dim)
    real = m.critic(torch.cat([x.flatten(1), m.encoder(x)], 1)).squeeze(1)
    fake = m.critic(torch.cat([m.generator(z).flatten(1), z], 1)).squeeze(1)
    return real, fake


def test_critic_objective_is_the_bigan_value_function(run):
    torch.manual_seed(5)
    out = phase(run, "critic").step(run.batch, run.modules)
    real, fake = reference(run, 5)
    # max_D E log D(x, E(x)) + E log(1 - D(G(z), z)), as a loss: its negative, D = sigmoid.
    expected = -torch.log(torch.sigmoid(real)).mean() - torch.log(1 - torch.sigmoid(fake)).mean()
    torch.testing.assert_close(out.loss, expected)
    # The pairs are what the critic saw: (x, E(x)) and (G(z), z), flattened.
    assert out.context["real"].shape == (16, 2 + 3) and torch.equal(out.context["real"][:, :2], run.batch.x)
    # The critic step trains the critic only: no graph back into G or E.
    out.loss.backward()
    assert all(p.grad is None for n in ("generator", "encoder") for p in run.modules[n].parameters())
    assert any(p.grad is not None for p in run.modules.critic.parameters())


def test_generator_and_encoder_swap_the_labels(run):
    torch.manual_seed(6)
    out = phase(run, "generator").step(run.batch, run.modules)
    real, fake = reference(run, 6)
    # The papers' non-saturating form: -E log D(G(z), z) - E log(1 - D(x, E(x))).
    expected = -torch.log(torch.sigmoid(fake)).mean() - torch.log(1 - torch.sigmoid(real)).mean()
    torch.testing.assert_close(out.loss, expected)
    out.loss.backward()
    for name in ("generator", "encoder"):  # both players learn from the one objective
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in run.modules[name].parameters())
    assert phase(run, "generator").modules == ("generator", "encoder")


def test_samples_and_reconstructions_have_the_data_shape(run):
    model, m = run.built.model, run.modules
    assert model.sample(m, 7, None).shape == (7, 2)
    x = run.batch.x[:5]
    torch.testing.assert_close(model.reconstruct(m, x, None), m.generator(m.encoder(x)))


def test_keeps_genfws_variant_contract(registry):
    # Builds on a small data set, every phase takes a step that changes its parameters, samples
    # have the data's shape: genfw's own kit.
    check_variant("bigan", registry=registry)
