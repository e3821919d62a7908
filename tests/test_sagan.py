"""SAGAN (genfw_plugins.sagan): the self-attention block against a hand-written reference, the
identity at gamma = 0, spectral norm everywhere, and the variant's hinge loss and TTUR."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from genfw.config import resolve
from genfw.train import build
from genfw_plugins.sagan import SAGANCritic, SAGANGenerator, SelfAttention


def reference_attention(block: SelfAttention, x: torch.Tensor) -> torch.Tensor:
    """Zhang et al. 2019, section 3, position by position with explicit loops."""
    b, c, h, w = x.shape
    n = h * w
    wf, wg = block.f.weight[:, :, 0, 0], block.g.weight[:, :, 0, 0]  # (C/8, C), spectrally normalised
    wh, wv = block.h.weight[:, :, 0, 0], block.v.weight[:, :, 0, 0]  # (C/2, C), (C, C/2)
    out = torch.empty_like(x)
    for bi in range(b):
        xs = x[bi].reshape(c, n)  # columns are positions
        f, g, hh = wf @ xs, wg @ xs, wh @ xs
        for j in range(n):
            s = torch.stack([f[:, i] @ g[:, j] for i in range(n)])  # s_ij over i
            beta = torch.exp(s) / torch.exp(s).sum()  # softmax over i
            o_j = wv @ sum(beta[i] * hh[:, i] for i in range(n))
            out[bi, :, j // w, j % w] = block.gamma * o_j + xs[:, j]
    return out


def test_attention_matches_the_paper() -> None:
    torch.manual_seed(0)
    block = SelfAttention(16).eval()  # eval: spectral norm does not iterate again
    with torch.no_grad():
        block.gamma.fill_(0.7)
    x = torch.randn(2, 16, 3, 3)
    with torch.no_grad():
        got = block(x)
        want = reference_attention(block, x)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    beta = block.attention(x)
    torch.testing.assert_close(beta.sum(-1), torch.ones(2, 9))  # each position's weights sum to 1


def test_gamma_zero_is_the_identity_and_still_learns() -> None:
    torch.manual_seed(1)
    block = SelfAttention(8)
    assert block.gamma.item() == 0.0  # the paper's initialisation
    x = torch.randn(3, 8, 4, 4, requires_grad=True)
    y = block(x)
    torch.testing.assert_close(y, x)
    y.square().sum().backward()
    assert block.gamma.grad is not None and block.gamma.grad.abs() > 0  # gamma is trained


def _has_spectral_norm(module: nn.Module) -> bool:
    return hasattr(module, "parametrizations") and "weight" in module.parametrizations


def test_networks_have_spectral_norm_and_one_attention_block() -> None:
    from genfw_plugins.sagan import SAGANGeneratorOptions, SAGANOptions

    g = SAGANGenerator(SAGANGeneratorOptions(channels=8), 16, (1, 16, 16), 0)
    d = SAGANCritic(SAGANOptions(channels=8), (1, 16, 16), 1, 0)
    for net in (g, d):
        weighted = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))]
        assert weighted and all(_has_spectral_norm(m) for m in weighted)
        assert sum(isinstance(m, SelfAttention) for m in net.modules()) == 1
    assert not any(isinstance(m, nn.BatchNorm2d) for m in d.modules())
    assert g(torch.randn(2, 16)).shape == (2, 1, 16, 16) and d(torch.randn(2, 1, 16, 16)).shape == (2, 1)
    x = torch.randn(2, 1, 16, 16)
    d.eval()  # no power iteration between the two calls
    torch.testing.assert_close(d(x), d.head(d.features(x)))  # the critic contract feature tricks use
    with pytest.raises(ValueError, match="attention_side 5 is not a feature-map side"):
        SAGANCritic(SAGANOptions(attention_side=5), (1, 16, 16), 1, 0)


def test_sagan_variant_recipe(registry) -> None:
    raw = {"variant": "sagan", "dataset": "digits", "metrics": {}}
    b = build(resolve(raw, registry))
    critic, gen = b.model.phases
    assert critic.optim.lr == 4e-4 and gen.optim.lr == 1e-4
    assert critic.optim.betas == (0.0, 0.9) == gen.optim.betas and critic.repeats == 1
    assert type(critic.step.__self__.loss).__name__ == "HingeLoss"
    assert isinstance(b.model.modules["generator"], SAGANGenerator)
    assert isinstance(b.model.modules["critic"], SAGANCritic)
