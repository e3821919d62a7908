"""The autoencoder family (ae, vae, aae, wae-mmd, wae-gan, vsc), its priors (mog, categorical,
spike-and-slab KL) and the ``autoencoding`` metric: formulas against hand computations, closed
forms or Monte Carlo estimates with stated tolerances; bad input; a few training steps each."""

from __future__ import annotations

import json
import logging
import math

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.distributions import Categorical, Independent, MixtureSameFamily, MultivariateNormal, Normal
from torch.utils._python_dispatch import TorchDispatchMode

from genfw import Batch, EvalContext, GenfwError, Modules
from genfw.config import resolve
from genfw.train import Trainer, build, holdout_split, make_loader, read_run
from genfw_plugins import priors
from genfw_plugins._autoencoder import AutoencoderModel, marginal_mmd
from genfw_plugins.losses import GaussianNLL, GaussianOptions
from genfw_plugins.metrics.autoencoder import (
    AutoencoderMetric,
    AutoencoderMetricOptions,
    iwae_bound,
    near_zero_fraction,
)
from genfw_plugins.regularisers import WAE_SCALES, mmd_imq
from genfw_plugins.vae import VAE, VAEOptions
from genfw_plugins.vsc import VSC, VSCOptions, spike_slab_log_density, warmup_factor
from genfw_plugins.wae import MARGINAL_SCALES, WAEOptions

from .conftest import QUICK

SMALL = {"name": "mlp", "hidden": [16]}


def prior(registry, name, dim, **options):
    return registry.spec("prior", name, options, where="prior").build(dim=dim)


def built(registry, variant, dataset="toy2d", **extra):
    raw = {"variant": variant, "dataset": dataset, "train": {"batch_size": 16, "progress": False}}
    for slot in registry.get(
        "variant", variant["name"] if isinstance(variant, dict) else variant
    ).factory.slots:
        if slot in ("generator", "critic", "encoder"):
            raw[slot] = dict(SMALL)
    raw.update(extra)
    return build(resolve(raw, registry))


# --- priors ---------------------------------------------------------------------------------------


def test_mog_log_prob_matches_torch_and_integrates_to_one(registry):
    p = prior(registry, "mog", 2, components=6, radius=3.0, std=0.4)
    angles = 2 * math.pi * torch.arange(6) / 6
    centres = 3.0 * torch.stack([angles.cos(), angles.sin()], 1)
    torch.testing.assert_close(p.centres, centres)
    ref = MixtureSameFamily(
        Categorical(torch.ones(6)), Independent(Normal(centres, torch.full_like(centres, 0.4)), 1)
    )
    z = 4 * torch.randn(50, 2, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(p.log_prob(z), ref.log_prob(z))
    # Riemann sum of the density over [-6, 6]^2 (all mass within 3 + 7 std of 0.4): 1 to 1e-4.
    g = torch.linspace(-6, 6, 601, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    mass = p.log_prob(grid.float()).double().exp().sum() * (g[1] - g[0]) ** 2
    assert mass.item() == pytest.approx(1.0, abs=1e-4)


def test_mog_sampling_moments(registry):
    p = prior(registry, "mog", 3, components=4, radius=2.0, std=0.5)
    z = p.sample(40_000, device="cpu", generator=torch.Generator().manual_seed(1))
    # Mean of the centres is 0; per-coordinate variance std^2 + Var_k(c_kj): 0.25 + 2 (x, y), 0.25 (z).
    assert z.mean(0).abs().max() < 5 * math.sqrt(2.25 / 40_000)
    torch.testing.assert_close(z.var(0), torch.tensor([2.25, 2.25, 0.25]), atol=0.06, rtol=0)
    assert p.variance == pytest.approx((2.25 + 2.25 + 0.25) / 3)
    # Every component is used about equally: nearest centre counts within 5 sd of n/4.
    counts = torch.bincount(torch.cdist(z, p.centres).argmin(1), minlength=4).float()
    assert (counts - 10_000).abs().max() < 5 * math.sqrt(40_000 * 0.25 * 0.75)


def test_categorical_log_prob_and_sampling(registry):
    p = prior(registry, "categorical", 5, categories=3)
    z = torch.tensor([[0.0, 1.0, 0.0, 0.3, -1.2], [0.5, 0.5, 0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0, 0.0]])
    lp = p.log_prob(z)
    expected = -math.log(3) - 0.5 * (0.09 + 1.44) - math.log(2 * math.pi)  # two N(0, 1) coordinates
    assert lp[0].item() == pytest.approx(expected, rel=1e-6)
    assert torch.isneginf(lp[1:]).all()  # off the one-hot vertices
    s = p.sample(30_000, device="cpu", generator=torch.Generator().manual_seed(2))
    assert ((s[:, :3] == 0) | (s[:, :3] == 1)).all() and (s[:, :3].sum(1) == 1).all()
    freq = s[:, :3].mean(0)
    assert (freq - 1 / 3).abs().max() < 5 * math.sqrt((1 / 3) * (2 / 3) / 30_000)
    assert s[:, 3:].mean().abs() < 5 / math.sqrt(60_000) and abs(s[:, 3:].var().item() - 1) < 0.03
    fixed = p.sample(4, device="cpu", labels=torch.tensor([2, 0, 1, 2]))
    assert fixed[:, :3].argmax(1).tolist() == [2, 0, 1, 2]


def test_spike_slab_kl_hand_values(registry):
    p = prior(registry, "spike_slab", 1, alpha=0.3)
    mu, logvar = torch.tensor([[0.7]]), torch.tensor([[-0.4]])
    # gamma = alpha with the slab equal to the prior's: KL = 0.
    assert p.kl_from_spike_slab(torch.zeros(1, 1), torch.zeros(1, 1), torch.full((1, 1), 0.3)).item() == (
        pytest.approx(0.0, abs=1e-7)
    )
    # gamma = 1: the Gaussian KL plus log(1 / alpha).
    gauss = 0.5 * (0.49 + math.exp(-0.4) - 1 + 0.4)
    assert p.kl_from_spike_slab(mu, logvar, torch.ones(1, 1)).item() == pytest.approx(
        gauss - math.log(0.3), rel=1e-6
    )
    # gamma = 0.6 by hand: 0.6 * gauss + 0.4 log(0.4 / 0.7) + 0.6 log(0.6 / 0.3).
    hand = 0.6 * gauss + 0.4 * math.log(0.4 / 0.7) + 0.6 * math.log(2.0)
    assert p.kl_from_spike_slab(mu, logvar, torch.full((1, 1), 0.6)).item() == pytest.approx(hand, rel=1e-6)


def test_spike_slab_kl_matches_monte_carlo(registry):
    """E_q [log q(z) - log p(z)], both densities w.r.t. Lebesgue + a unit atom at 0, estimated from
    200,000 exact posterior draws, agrees with the closed form within 5 standard errors."""
    p = prior(registry, "spike_slab", 3, alpha=0.4)
    mu = torch.tensor([[0.5, -1.0, 2.0]], dtype=torch.float64)
    logvar = torch.tensor([[-1.0, 0.3, 0.0]], dtype=torch.float64)
    gamma = torch.tensor([[0.2, 0.9, 0.55]], dtype=torch.float64)
    n = 200_000
    g = torch.Generator().manual_seed(5)
    slab = mu + (0.5 * logvar).exp() * torch.randn(n, 3, generator=g, dtype=torch.float64)
    z = torch.where(torch.rand(n, 3, generator=g, dtype=torch.float64) < gamma, slab, 0.0)
    terms = spike_slab_log_density(z, mu, logvar, gamma) - p.log_prob(z)
    se = terms.std() / math.sqrt(n)
    exact = p.kl_from_spike_slab(mu, logvar, gamma)
    assert abs(terms.mean() - exact.item()) < 5 * se


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("spike_slab", {"alpha": 0.0}, "alpha must be in (0, 1], got 0.0"),
        ("spike_slab", {"alpha": 1.5}, "alpha must be in (0, 1], got 1.5"),
        ("mog", {"std": 0.0}, "std must be positive, got 0.0"),
        ("mog", {"radius": -1.0}, "radius must be positive, got -1.0"),
        ("mog", {"layout": "grid"}, "layout must be one of circle, random"),
        ("categorical", {"categories": 1}, "categories must be at least 2"),
    ],
)
def test_bad_prior_options_are_refused_at_config_time(registry, name, options, message):
    with pytest.raises(GenfwError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        resolve({"variant": "wae", "prior": {"name": name, **options}}, registry)


def test_vae_refuses_priors_without_a_finite_kl(registry):
    with pytest.raises(GenfwError) as err:
        built(registry, "vae", prior="spike_slab")
    msg = str(err.value)
    assert "\n" not in msg and "prior 'spike_slab' cannot be used with vae" in msg
    assert "variants that can use it: vsc, aae, wae" in msg
    with pytest.raises(GenfwError, match="variants that can use it: aae, wae"):
        built(registry, "vae", prior="uniform")
    with pytest.raises(GenfwError, match="vsc needs a spike-and-slab prior"):
        built(registry, "vsc", prior="normal")
    with pytest.raises(GenfwError, match=r"needs latent_dim >= categories \(10\), got 8"):
        built(registry, "aae", prior="categorical")


def test_vsc_refuses_a_prior_without_a_spike(registry, tmp_path, run_cli):
    """alpha = 1 passes the prior's own check (0 < alpha <= 1) but makes vsc's KL infinite."""
    with pytest.raises(GenfwError) as err:
        built(registry, "vsc", prior={"name": "spike_slab", "alpha": 1.0})
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith("vsc needs a spike in its prior, --prior.alpha < 1 (got 1)")
    assert "valid: 0 < alpha < 1" in msg
    code, _, err_text = run_cli("train", "--plugin", "vsc", "--prior.alpha", "1", "--out", tmp_path / "r")
    assert code == 2 and "--prior.alpha < 1" in err_text and "diverged" not in err_text
    assert not (tmp_path / "r").exists()  # refused before anything is written
    b = built(registry, "vsc", prior={"name": "spike_slab", "alpha": 0.999})  # any alpha < 1 builds
    vsc = b.model.sample.__self__
    mu, logvar, gamma = torch.zeros(1, 16), torch.zeros(1, 16), torch.full((1, 16), 0.5)
    assert math.isfinite(vsc.prior.kl_from_spike_slab(mu, logvar, gamma).item())


def test_vae_with_a_mixture_prior_uses_the_monte_carlo_kl(registry):
    b = built(registry, {"name": "vae", "latent_dim": 2}, prior="mog")
    vae = b.model.sample.__self__
    mu, logvar = torch.zeros(1, 2), torch.zeros(1, 2)
    z = torch.tensor([[0.3, -0.2]])
    expected = Normal(0.0, 1.0).log_prob(z).sum() - vae.prior.log_prob(z)[0]
    assert vae.kl(mu, logvar, z).item() == pytest.approx(expected.item(), rel=1e-6)


# --- the IWAE estimate on a linear-Gaussian model ---------------------------------------------------


def linear_gaussian(d=3, sigma=0.5, seed=0):
    """p(z) = N(0, 1), p(x|z) = N(w z + b, sigma^2 I): p(x) = N(b, w w^T + sigma^2 I) exactly."""
    g = torch.Generator().manual_seed(seed)
    w, b = torch.randn(d, 1, generator=g), torch.randn(d, generator=g)
    vae = VAE(VAEOptions(latent_dim=1))
    vae.prior = priors.NormalPrior(dim=1)
    vae.loss = GaussianNLL(GaussianOptions(sigma=sigma))
    decoder = nn.Linear(1, d)
    decoder.weight.data, decoder.bias.data = w.clone(), b.clone()
    exact = MultivariateNormal(b, w @ w.T + sigma**2 * torch.eye(d))
    # The true posterior: v = 1 / (1 + |w|^2 / sigma^2), m = v w^T (x - b) / sigma^2.
    v = 1.0 / (1.0 + (w.square().sum() / sigma**2))
    encoder = nn.Linear(d, 2)
    encoder.weight.data = torch.cat([v * w.T / sigma**2, torch.zeros(1, d)])
    encoder.bias.data = torch.stack([-(v * w.T @ b / sigma**2).squeeze(), v.log()])
    return vae, Modules({"encoder": encoder, "generator": decoder}), exact


@torch.no_grad()
def test_iwae_is_exact_with_the_true_posterior():
    vae, m, exact = linear_gaussian()
    x = exact.sample((5,))
    w = vae.log_weights(m, x, 16).double()
    # With q(z|x) = p(z|x) every weight is p(x): zero variance, the bound is the log-likelihood.
    torch.testing.assert_close(iwae_bound(w), exact.log_prob(x).double(), atol=1e-4, rtol=0)
    torch.testing.assert_close(w.mean(0), exact.log_prob(x).double(), atol=1e-4, rtol=0)


@torch.no_grad()
def test_iwae_tightens_towards_the_log_likelihood():
    vae, m, exact = linear_gaussian(seed=1)
    m.encoder.bias.data[0] += 1.0  # a wrong posterior mean
    m.encoder.bias.data[1] += 1.0  # and a too wide one (so the weights have a finite variance)
    x = exact.sample((4,))
    truth = exact.log_prob(x).double()
    torch.manual_seed(0)
    elbo = vae.log_weights(m, x, 2000).double().mean(0)
    iwae_5 = torch.stack([iwae_bound(vae.log_weights(m, x, 5).double()) for _ in range(400)]).mean(0)
    iwae_many = iwae_bound(vae.log_weights(m, x, 20_000).double())
    # ELBO <= E IWAE_5 <= log p(x) (Burda et al. 2016, Theorem 1), with Monte Carlo slack 0.02;
    # 20,000 samples come within 0.05 nats of the exact log-likelihood.
    assert (elbo < iwae_5 + 0.02).all() and (iwae_5 < truth + 0.02).all()
    assert (elbo < truth - 0.1).all()  # the wrong posterior leaves a visible gap
    torch.testing.assert_close(iwae_many, truth, atol=0.05, rtol=0)


# --- vsc's importance weights on a tiny fixed model ------------------------------------------------

# x in R^3, z in R^2; encoder rows: mu_1, mu_2, logvar_1, logvar_2, h_1, h_2 (gamma = min(e^h, 1)).
VSC_ENC_W = [
    [0.5, -0.2, 0.1],
    [0.0, 0.3, -0.4],
    [0.1, 0.0, 0.2],
    [-0.1, 0.2, 0.0],
    [0.2, -0.1, 0.3],
    [-0.3, 0.1, 0.1],
]
VSC_ENC_B = [0.1, -0.2, 0.4, 0.3, -0.5, -1.0]
VSC_DEC_W = [[1.0, -0.5], [0.3, 0.8], [-0.7, 0.2]]  # x_hat = W z + b
VSC_DEC_B = [0.2, -0.1, 0.05]
VSC_ALPHA, VSC_SIGMA = 0.35, 0.8


def tiny_vsc():
    vsc = VSC(VSCOptions(latent_dim=2))
    vsc.prior = priors.SpikeSlabPrior(priors.SpikeSlabOptions(alpha=VSC_ALPHA), dim=2)
    vsc.loss = GaussianNLL(GaussianOptions(sigma=VSC_SIGMA))
    encoder, decoder = nn.Linear(3, 6).double(), nn.Linear(2, 3).double()
    for layer, w, b in ((encoder, VSC_ENC_W, VSC_ENC_B), (decoder, VSC_DEC_W, VSC_DEC_B)):
        layer.weight.data = torch.tensor(w, dtype=torch.float64)
        layer.bias.data = torch.tensor(b, dtype=torch.float64)
    return vsc, Modules({"encoder": encoder, "generator": decoder})


def vsc_log_weight_by_hand(x: list[float], z: list[float]) -> float:
    """log p(x|z) + log p(z) - log q(z|x), every density written out, in plain floats."""
    log_2pi = math.log(2 * math.pi)
    out = [
        sum(w * v for w, v in zip(row, x, strict=True)) + b
        for row, b in zip(VSC_ENC_W, VSC_ENC_B, strict=True)
    ]
    mu, logvar, h = out[0:2], out[2:4], out[4:6]
    gamma = [min(max(math.exp(min(hj, 0.0)), 1e-6), 1 - 1e-6) for hj in h]
    # p(x|z) = N(x; W z + b, sigma^2 I)
    x_hat = [
        sum(w * v for w, v in zip(row, z, strict=True)) + b
        for row, b in zip(VSC_DEC_W, VSC_DEC_B, strict=True)
    ]
    log_px = sum(
        -0.5 * (xi - mi) ** 2 / VSC_SIGMA**2 - math.log(VSC_SIGMA) - 0.5 * log_2pi
        for xi, mi in zip(x, x_hat, strict=True)
    )
    # p(z_j) = alpha N(z_j; 0, 1) + (1 - alpha) delta(z_j): density w.r.t. Lebesgue + unit atom at 0
    log_pz = sum(
        math.log(1 - VSC_ALPHA) if zj == 0 else math.log(VSC_ALPHA) - 0.5 * zj**2 - 0.5 * log_2pi for zj in z
    )
    # q(z_j|x) = gamma_j N(z_j; mu_j, exp(logvar_j)) + (1 - gamma_j) delta(z_j), same measure
    log_q = 0.0
    for zj, mj, lv, gj in zip(z, mu, logvar, gamma, strict=True):
        if zj == 0:
            log_q += math.log(1 - gj)
        else:
            log_q += math.log(gj) - 0.5 * (zj - mj) ** 2 / math.exp(lv) - 0.5 * lv - 0.5 * log_2pi
    return log_px + log_pz - log_q


@torch.no_grad()
def test_vsc_log_weights_match_the_densities_written_out():
    vsc, m = tiny_vsc()
    x = torch.tensor([[0.5, -1.0, 2.0], [-0.3, 0.8, 0.1]], dtype=torch.float64)
    # Codes with each pattern of spike (exact 0) and slab, per example.
    z = torch.tensor(
        [
            [[0.0, 0.7], [-1.2, 0.0]],
            [[0.4, -0.3], [0.0, 0.0]],
            [[0.0, 0.0], [0.9, 1.5]],
        ],
        dtype=torch.float64,
    )  # (k = 3, B = 2, d = 2)
    got = vsc.log_weights_at(m, x, z)
    assert got.shape == (3, 2)
    for i in range(3):
        for b in range(2):
            hand = vsc_log_weight_by_hand(x[b].tolist(), z[i, b].tolist())
            assert got[i, b].item() == pytest.approx(hand, rel=1e-12, abs=1e-12)
    # log_weights draws z from the exact mixture posterior, then weighs it the same way.
    torch.manual_seed(3)
    w = vsc.log_weights(m, x, 6)
    torch.manual_seed(3)
    mu, logvar, gamma = vsc.posterior(m, x)
    slab = mu + (0.5 * logvar).exp() * torch.randn(6, 2, 2)
    drawn = torch.where(torch.rand(6, 2, 2) < gamma, slab, 0.0)
    assert (drawn == 0).any() and (drawn != 0).any()  # both branches of the densities
    for i in range(6):
        for b in range(2):
            hand = vsc_log_weight_by_hand(x[b].tolist(), drawn[i, b].tolist())
            assert w[i, b].item() == pytest.approx(hand, rel=1e-12, abs=1e-12)


@torch.no_grad()
def test_vsc_importance_weights_are_unbiased_for_the_marginal_likelihood():
    """E_q exp(w) = p(x) exactly when the weights are valid: here p(x) is a sum over the 4 spike
    patterns s of P(s) N(x; b, W_s W_s^T + sigma^2 I). q's slabs are wider than the posterior's,
    so the weights are bounded; 200,000 draws agree with p(x) within 5 standard errors."""
    vsc, m = tiny_vsc()
    x = torch.tensor([[0.4, 0.2, -0.3]], dtype=torch.float64)
    w_dec, b_dec = torch.tensor(VSC_DEC_W, dtype=torch.float64), torch.tensor(VSC_DEC_B, dtype=torch.float64)
    p_x = 0.0
    for s in ((0, 0), (0, 1), (1, 0), (1, 1)):
        mask = torch.tensor(s, dtype=torch.float64)
        cov = (w_dec * mask) @ (w_dec * mask).T + VSC_SIGMA**2 * torch.eye(3, dtype=torch.float64)
        p_s = math.prod(VSC_ALPHA if sj else 1 - VSC_ALPHA for sj in s)
        p_x += p_s * MultivariateNormal(b_dec, cov).log_prob(x[0]).exp().item()
    torch.manual_seed(0)
    weights = vsc.log_weights(m, x, 200_000)[:, 0].exp()
    se = weights.std().item() / math.sqrt(len(weights))
    assert abs(weights.mean().item() - p_x) < 5 * se
    assert se < 0.01 * p_x  # the check is tight: 5 se is within 5% of p(x)


# --- phase objectives -------------------------------------------------------------------------------


def toy_batch(b, n=8):
    x, y = b.dataset.tensors
    return Batch(x[:n], y[:n])


def test_aae_three_phases_match_the_paper(registry):
    b = built(registry, {"name": "aae", "latent_dim": 2})
    m = Modules(b.model.modules)
    ae, critic, enc = b.model.phases
    assert [p.name for p in b.model.phases] == ["autoencoder", "critic", "encoder"]
    assert (
        ae.modules == ("encoder", "generator")
        and critic.modules == ("critic",)
        and enc.modules == ("encoder",)
    )
    assert not critic.fresh_batch and not enc.fresh_batch  # the three phases share one minibatch
    batch = toy_batch(b)
    z = m.encoder(batch.x)
    out = ae.step(batch, m)
    assert out.loss.item() == pytest.approx(
        (m.generator(z) - batch.x).square().sum(1).mean().item(), rel=1e-5
    )
    torch.manual_seed(0)
    out = critic.step(batch, m)
    torch.manual_seed(0)
    prior_z = torch.randn(8, 2)
    torch.testing.assert_close(out.context["real"], prior_z)
    torch.testing.assert_close(out.context["fake"], z.detach())
    d_prior, d_code = torch.sigmoid(m.critic(prior_z)), torch.sigmoid(m.critic(z))
    # The critic ascends E log D(z') + E log(1 - D(Q(x))), z' from the prior.
    expected = -(d_prior.log().mean() + (1 - d_code).log().mean())
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    # The encoder fools it: -E log D(Q(x)) (non-saturating).
    out = enc.step(batch, m)
    assert out.loss.item() == pytest.approx(-d_code.log().mean().item(), rel=1e-5)


def test_aae_categorical_head_is_a_softmax_trained_on_labels(registry):
    raw = {"variant": {"name": "aae", "latent_dim": 12}, "dataset": "digits", "prior": "categorical"}
    raw.update({s: dict(SMALL) for s in ("generator", "critic", "encoder")})
    b = build(resolve(raw, registry))
    m = Modules(b.model.modules)
    x, y = b.dataset.tensors
    y = y[:6].clone()
    y[3:] = -1  # unlabelled examples do not count
    out = b.model.phases[0].step(Batch(x[:6], y), m)
    raw_out = m.encoder(x[:6])
    code = b.model.encode(m, x[:6], None)
    torch.testing.assert_close(code[:, :10], F.softmax(raw_out[:, :10], 1))
    torch.testing.assert_close(code[:, 10:], raw_out[:, 10:])
    ce = F.cross_entropy(raw_out[:3, :10], y[:3])
    assert out.logs["label_ce"].item() == pytest.approx(ce.item(), rel=1e-5)
    assert b.model.num_classes == 10  # genfw sample draws the class of the label


def test_categorical_aae_has_two_adversaries_as_in_the_paper(registry):
    # Makhzani et al. 2016, section 5: one critic on the softmax head against one-hot Cat(y), one on
    # the style against N(0, I); the encoder fools both.
    raw = {"variant": {"name": "aae", "latent_dim": 12}, "dataset": "digits", "prior": "categorical"}
    raw.update({s: dict(SMALL) for s in ("generator", "critic", "encoder")})
    b = build(resolve(raw, registry))
    m = Modules(b.model.modules)
    _, critic, enc = b.model.phases
    assert critic.modules == ("critic", "critic_cat")
    assert m.critic.in_shape == (2,) and m.critic_cat.in_shape == (10,)
    x, y = b.dataset.tensors
    batch = Batch(x[:8], y[:8])
    code = b.model.encode(m, batch.x, None)
    torch.manual_seed(0)
    out = critic.step(batch, m)
    torch.manual_seed(0)
    prior_z = b.model.prior.sample(8, device="cpu")
    d = {  # sigmoid scores: (prior part, code part) for each critic
        "style": (torch.sigmoid(m.critic(prior_z[:, 10:])), torch.sigmoid(m.critic(code[:, 10:]))),
        "cat": (torch.sigmoid(m.critic_cat(prior_z[:, :10])), torch.sigmoid(m.critic_cat(code[:, :10]))),
    }
    expected = sum(-(p.log().mean() + (1 - q).log().mean()) for p, q in d.values())
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert torch.equal(out.context["real"], prior_z[:, 10:])  # regularisers see the style critic
    out = enc.step(batch, m)
    fool = -(d["style"][1].log().mean() + d["cat"][1].log().mean())
    assert out.loss.item() == pytest.approx(fool.item(), rel=1e-5)
    # One critic on the whole code on request; split needs a categorical prior.
    raw["variant"]["critics"] = "joint"
    assert build(resolve(raw, registry)).model.phases[1].modules == ("critic",)
    with pytest.raises(GenfwError, match="critics split needs a categorical prior"):
        built(registry, {"name": "aae", "latent_dim": 2, "critics": "split"})


def test_wae_penalties(registry):
    assert list(resolve({"variant": "wae"}, registry).regularisers) == ["mmd"]
    assert resolve({"variant": {"name": "wae", "penalty": "gan"}}, registry).regularisers == {}
    b = built(registry, {"name": "wae", "latent_dim": 2, "penalty": "gan", "gan_weight": 2.0})
    m = Modules(b.model.modules)
    critic, ae = b.model.phases
    assert (critic.name, ae.name, ae.fresh_batch) == ("critic", "autoencoder", False)
    batch = toy_batch(b)
    z = m.encoder(batch.x)
    torch.manual_seed(0)
    out = critic.step(batch, m)
    torch.manual_seed(0)
    d_prior, d_code = torch.sigmoid(m.critic(torch.randn(8, 2))), torch.sigmoid(m.critic(z))
    expected = -2.0 * (d_prior.log().mean() + (1 - d_code).log().mean())  # lambda = 2
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    out = ae.step(batch, m)
    rec = (m.generator(z) - batch.x).square().sum(1).mean()
    assert out.loss.item() == pytest.approx((rec - 2.0 * d_code.log().mean()).item(), rel=1e-5)


def imq_mmd_by_hand(x: torch.Tensor, y: torch.Tensor, sigma2: float, scales=WAE_SCALES) -> float:
    """Unbiased MMD^2 with k(a, b) = sum_s C_s / (C_s + ||a - b||^2), C_s = s * 2 * d * sigma2
    (Tolstikhin et al. 2018), summed pair by pair in plain floats."""
    xs, ys, d = x.double().tolist(), y.double().tolist(), x.shape[1]

    def k(a, b):
        sq = sum((ai - bi) ** 2 for ai, bi in zip(a, b, strict=True))
        return sum(s * 2 * d * sigma2 / (s * 2 * d * sigma2 + sq) for s in scales)

    n, m = len(xs), len(ys)
    kxx = sum(k(a, b) for i, a in enumerate(xs) for j, b in enumerate(xs) if i != j) / (n * (n - 1))
    kyy = sum(k(a, b) for i, a in enumerate(ys) for j, b in enumerate(ys) if i != j) / (m * (m - 1))
    kxy = sum(k(a, b) for a in xs for b in ys) / (n * m)
    return kxx + kyy - 2 * kxy


@pytest.mark.parametrize(
    ("prior_spec", "variance"),
    [
        ({"name": "uniform", "low": -2.0, "high": 2.0}, 16 / 12),  # (high - low)^2 / 12
        ({"name": "spike_slab", "alpha": 0.3}, 0.3),  # alpha * Var N(0, 1) + (1 - alpha) * 0
    ],
)
def test_wae_mmd_kernel_scale_is_the_priors_variance(registry, prior_spec, variance):
    """The WAE's default mmd penalty uses C = 2 d sigma_z^2 with sigma_z^2 the prior's variance,
    as the autoencoding metric's latent_mmd does; an explicit sigma2 still wins."""
    b = built(registry, {"name": "wae", "latent_dim": 3, "code": "dense"}, prior=prior_spec)
    reg = dict(b.regularisers["autoencoder"])["mmd"]
    assert reg.sigma2 == pytest.approx(variance) and b.model.prior.variance == pytest.approx(variance)
    out = b.model.phases[0].step(toy_batch(b), Modules(b.model.modules))
    z, prior_z = out.context["z"].detach(), out.context["prior_z"]
    penalty = reg.penalty(out.context).item()
    assert penalty == pytest.approx(10.0 * imq_mmd_by_hand(z, prior_z, variance), rel=1e-4)
    # ... which is not the kernel of a unit variance (the former default): the test sees it.
    assert abs(penalty - 10.0 * imq_mmd_by_hand(z, prior_z, 1.0)) > 1e-3 * abs(penalty)
    mine = built(
        registry,
        {"name": "wae", "latent_dim": 3, "code": "dense"},
        prior=prior_spec,
        regularisers={"mmd": {"sigma2": 2.0}},
    )
    reg = dict(mine.regularisers["autoencoder"])["mmd"]
    assert reg.sigma2 == 2.0 and reg.options.weight == 10.0  # the WAE's weight is kept
    out = mine.model.phases[0].step(toy_batch(mine), Modules(mine.model.modules))
    expected = 10.0 * imq_mmd_by_hand(out.context["z"].detach(), out.context["prior_z"], 2.0)
    assert reg.penalty(out.context).item() == pytest.approx(expected, rel=1e-4)


def test_mmd_regulariser_option_says_where_its_default_comes_from(registry):
    component = registry.get("regulariser", "mmd")
    assert dict((n, d) for n, _, d in component.option_fields())["sigma2"] is None
    assert "prior's variance" in component.help


def test_wae_sparse_code_has_exact_zeros(registry):
    b = built(registry, {"name": "wae", "latent_dim": 4, "shrink": 0.2}, prior="spike_slab")
    m = Modules(b.model.modules)
    x = b.dataset.tensors[0][:32]
    u = m.encoder(x)
    z = b.model.encode(m, x, None)
    torch.testing.assert_close(z, torch.sign(u) * (u.abs() - 0.2).clamp_min(0))
    assert ((z == 0) == (u.abs() <= 0.2)).all()
    assert built(registry, "wae").model.sample.__self__.sparse is False  # normal prior: linear codes


def test_marginal_mmd_against_a_direct_computation():
    g = torch.Generator().manual_seed(0)
    x, y = (
        torch.randn(20, 3, generator=g, dtype=torch.float64),
        torch.randn(25, 3, generator=g, dtype=torch.float64),
    )
    expected = 0.0
    for j in range(3):
        a, b = x[:, j], y[:, j]
        for s in (0.01, 1.0):
            c = s * 2 * 1 * 0.5  # scale * 2 * (one coordinate) * sigma2

            def k(u, v, c=c):
                return c / (c + (u[:, None] - v[None, :]) ** 2)

            kxx, kyy = k(a, a), k(b, b)
            expected += (kxx.sum() - kxx.trace()) / (20 * 19) + (kyy.sum() - kyy.trace()) / (25 * 24)
            expected -= 2 * k(a, b).mean()
    assert marginal_mmd(x, y, sigma2=0.5, scales=(0.01, 1.0)).item() == pytest.approx(
        expected.item(), rel=1e-10
    )
    # The same as the mmd regulariser's estimator applied to each coordinate.
    per_coordinate = sum(mmd_imq(x[:, j : j + 1], y[:, j : j + 1], (0.01, 1.0), 0.5) for j in range(3))
    assert per_coordinate.item() == pytest.approx(expected.item(), rel=1e-10)


def marginal_mmd_all_coordinates_at_once(z, prior_z, sigma2, scales):
    """The former marginal_mmd, kept as a reference: (scales, n, n, d) kernel tensors."""
    n, m = z.shape[0], prior_z.shape[0]
    c = 2.0 * sigma2 * z.new_tensor(list(scales)).view(-1, 1, 1, 1)
    d_xx = (z.unsqueeze(1) - z.unsqueeze(0)).square()
    d_yy = (prior_z.unsqueeze(1) - prior_z.unsqueeze(0)).square()
    d_xy = (z.unsqueeze(1) - prior_z.unsqueeze(0)).square()
    k_xx, k_yy, k_xy = c / (c + d_xx), c / (c + d_yy), c / (c + d_xy)
    within_x = (k_xx.sum((1, 2)) - n) / (n * (n - 1))
    within_y = (k_yy.sum((1, 2)) - m) / (m * (m - 1))
    return (within_x + within_y - 2.0 * k_xy.mean((1, 2))).sum()


class LargestTensor(TorchDispatchMode):
    """Records the most elements of any tensor an operation returns."""

    def __init__(self):
        super().__init__()
        self.most = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.most = max(self.most, t.numel())
        return out


@pytest.mark.parametrize(("n", "m", "d"), [(2, 2, 1), (7, 11, 4), (40, 33, 16)])
def test_marginal_mmd_in_chunks_of_coordinates_is_the_former_formula(n, m, d):
    g = torch.Generator().manual_seed(n + m + d)
    z = torch.randn(n, d, generator=g, dtype=torch.float64)
    prior_z = torch.where(torch.rand(m, d, generator=g, dtype=torch.float64) < 0.5, 0.0, 1.0) * torch.randn(
        m, d, generator=g, dtype=torch.float64
    )
    for sigma2, scales in ((0.5, MARGINAL_SCALES), (1.7, WAE_SCALES)):
        expected = marginal_mmd_all_coordinates_at_once(z, prior_z, sigma2, scales)
        got = marginal_mmd(z, prior_z, sigma2, scales)
        assert got.item() == pytest.approx(expected.item(), rel=1e-12, abs=1e-14)
    # Memory is bounded by max_elements, in chunks of coordinates: with room for one coordinate
    # no intermediate is larger than scales x n x m (all at once made scales x n x m x d: 5 GB at
    # n = m = 1000, d = 16 in float64), and the value does not depend on the chunking.
    one = len(MARGINAL_SCALES) * max(n, m) ** 2
    with LargestTensor() as probe:
        chunked = marginal_mmd(z, prior_z, 0.5, MARGINAL_SCALES, max_elements=one)
    assert probe.most <= one
    assert chunked.item() == pytest.approx(marginal_mmd(z, prior_z, 0.5, MARGINAL_SCALES).item(), rel=1e-12)
    if d > 1:
        with LargestTensor() as former:
            marginal_mmd_all_coordinates_at_once(z, prior_z, 0.5, MARGINAL_SCALES)
        assert former.most > probe.most  # the probe sees the difference


def test_sparse_wae_adds_the_marginal_mmd(registry):
    b = built(registry, {"name": "wae", "latent_dim": 3}, prior={"name": "spike_slab", "alpha": 0.5})
    m = Modules(b.model.modules)
    batch = toy_batch(b)
    out = b.model.phases[0].step(batch, m)
    z, prior_z = out.context["z"], out.context["prior_z"]
    rec = (m.generator(z) - batch.x).square().sum(1).mean()
    marginal = marginal_mmd(z, prior_z, 0.5, MARGINAL_SCALES)  # sigma2 = the prior's variance, alpha
    assert out.loss.item() == pytest.approx((rec + 10.0 * marginal).item(), rel=1e-5)
    assert list(b.regularisers["autoencoder"][0][:1]) == ["mmd"]  # the joint MMD stays


@pytest.mark.parametrize("penalty", ["mmd", "gan"])
def test_wae_reconstruction_scale_is_the_authors_constant_on_request(registry, penalty):
    """tolstikhin/wae, wae.py, reconstruction_loss, cost l2sq: ``0.05 * mean_i ||x_i - x_hat_i||^2``,
    then ``+ lambda * penalty``; the paper's objective (scale 1) stays the default."""
    assert WAEOptions().recon_scale == 1.0
    b = built(registry, {"name": "wae", "latent_dim": 2, "penalty": penalty, "recon_scale": 0.05})
    m = Modules(b.model.modules)
    batch = toy_batch(b)
    out = b.model.phases[-1].step(batch, m)  # the autoencoder phase
    z = m.encoder(batch.x)
    sq = (m.generator(z) - batch.x).square().sum(1)  # (B,) squared errors
    expected = 0.05 * sq.mean()
    if penalty == "gan":  # - lambda E log D(Q(x)), lambda = gan_weight = 1
        expected = expected - torch.sigmoid(m.critic(z)).log().mean()
    else:  # the mmd regulariser (lambda = 10) is added by the loop, unscaled
        assert b.regularisers["autoencoder"][0][1].options.weight == 10.0
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    torch.testing.assert_close(out.logs["reconstruction"], sq)  # the log keeps c unscaled
    with pytest.raises(GenfwError, match="recon_scale must be positive"):
        resolve({"variant": {"name": "wae", "recon_scale": 0.0}}, registry)


def test_vsc_objective(registry):
    b = built(
        registry, {"name": "vsc", "latent_dim": 3, "c": 1e6}, prior={"name": "spike_slab", "alpha": 0.2}
    )
    m = Modules(b.model.modules)
    batch = toy_batch(b)
    torch.manual_seed(0)
    out = b.model.phases[0].step(batch, m)
    mu, logvar, h = m.encoder(batch.x).chunk(3, 1)
    gamma = torch.exp(-torch.relu(-h)).clamp(1e-6, 1 - 1e-6)
    torch.manual_seed(0)
    slab = mu + (0.5 * logvar).exp() * torch.randn_like(mu)
    eta = torch.rand_like(mu)
    z = torch.where(eta > 1 - gamma, slab, 0.0)  # c -> infinity: the exact Bernoulli(gamma) spike
    torch.testing.assert_close(out.context["z"], z)
    kl = prior(registry, "spike_slab", 3, alpha=0.2).kl_from_spike_slab(mu, logvar, gamma)
    # Gaussian likelihood with sigma = 1: 0.5 ||x - x_hat||^2 + D/2 log(2 pi).
    rec = 0.5 * (m.generator(z) - batch.x).square().sum(1) + math.log(2 * math.pi)
    assert out.loss.item() == pytest.approx((rec + kl).mean().item(), rel=1e-5)
    code = b.model.encode(m, batch.x, None)
    torch.testing.assert_close(code, torch.where(gamma >= 0.5, mu, 0.0))


def authors_warmup(steps: int, start: int, end: int) -> list[float]:
    """The factor of the authors' training loop (Tonolini, models/VSC_model.py) at iterations
    ``0..steps-1``: ``lam = 0``, then before iteration ``i``, ``lam += 1 / (end - start)`` if
    ``start < i < end``."""
    lam, out = 0.0, []
    for i in range(steps):
        if start < i < end:
            lam += 1.0 / (end - start)
        out.append(lam)
    return out


def test_vsc_warmup_factor_is_the_authors_ramp():
    start, end = 3, 8
    ours = [warmup_factor(torch.tensor(t), start, end).item() for t in range(12)]
    theirs = authors_warmup(12, start, end)
    # By hand: 0 up to step 3, then (t - 3) / 5: 0.2, 0.4, 0.6, 0.8, then 1 from step 8 on.
    assert ours == pytest.approx([0, 0, 0, 0, 0.2, 0.4, 0.6, 0.8, 1, 1, 1, 1], abs=1e-7)
    assert ours[:end] == pytest.approx(theirs[:end], abs=1e-7)
    # The one departure: their loop stops one increment short of 1, at (end - start - 1) / (end - start).
    assert theirs[end:] == pytest.approx([0.8] * 4, abs=1e-7)


def test_vsc_warmup_scales_the_slab_in_the_training_sample_only(registry):
    """The authors' warm-up: ``z = s * (lam mu + exp(lam logvar / 2) eps)``; the KL, gamma and the
    code keep the unscaled posterior. ``lam`` is read from the step count, which each step advances."""
    assert "warmup" not in built(registry, {"name": "vsc", "latent_dim": 3}).model.modules  # off by default
    opts = {"name": "vsc", "latent_dim": 3, "c": 1e6, "warmup_start": 2, "warmup_end": 6}
    b = built(registry, opts, prior={"name": "spike_slab", "alpha": 0.2})
    m = Modules(b.model.modules)
    batch = toy_batch(b)
    assert m.warmup.step.item() == 0
    mu, logvar, h = m.encoder(batch.x).chunk(3, 1)
    gamma = torch.exp(-torch.relu(-h)).clamp(1e-6, 1 - 1e-6)
    kl = prior(registry, "spike_slab", 3, alpha=0.2).kl_from_spike_slab(mu, logvar, gamma)
    for t, lam in [(0, 0.0), (2, 0.0), (3, 0.25), (5, 0.75), (6, 1.0), (9, 1.0)]:  # (t - 2) / 4 in [0, 1]
        m.warmup.step.fill_(t)
        torch.manual_seed(0)
        out = b.model.phases[0].step(batch, m)
        assert m.warmup.step.item() == t + 1
        assert out.logs["warmup"].item() == lam
        torch.manual_seed(0)
        eps, eta = torch.randn_like(mu), torch.rand_like(mu)
        z = torch.where(eta > 1 - gamma, lam * mu + torch.exp(0.5 * lam * logvar) * eps, 0.0)
        torch.testing.assert_close(out.context["z"], z)
        rec = 0.5 * (m.generator(z) - batch.x).square().sum(1) + math.log(2 * math.pi)
        assert out.loss.item() == pytest.approx((rec + kl).mean().item(), rel=1e-5)
        torch.testing.assert_close(out.context["mu"], mu)
    torch.testing.assert_close(b.model.encode(m, batch.x, None), torch.where(gamma >= 0.5, mu, 0.0))
    with pytest.raises(GenfwError, match="warmup_end must be greater than warmup_start"):
        resolve({"variant": {"name": "vsc", "warmup_start": 5, "warmup_end": 5}}, registry)


def test_vsc_warmup_resumes_exactly(tmp_path, registry):
    def raw(steps: int, **train) -> dict:
        return {
            "variant": {"name": "vsc", "latent_dim": 3, "warmup_start": 1, "warmup_end": 5},
            "dataset": "digits",
            "encoder": SMALL,
            "generator": SMALL,
            "metrics": {},
            "train": {
                "steps": steps,
                "batch_size": 16,
                "log_every": 1,
                "progress": False,
                "grid": 4,
                **train,
            },
        }

    straight = Trainer(resolve(raw(6, checkpoint_every=3), registry), tmp_path / "a")
    straight.fit()
    Trainer(resolve(raw(3), registry), tmp_path / "b").fit()  # mid-ramp: step t = 3 uses lam = 0.5
    resumed = Trainer(read_run(tmp_path / "b", registry, [("train.steps", 6)]), tmp_path / "b", resume=True)
    assert resumed.plain.warmup.step.item() == 3
    resumed.fit()
    assert straight.plain.warmup.step.item() == 6
    for name in ("encoder", "generator", "warmup"):
        a, b = straight.plain[name].state_dict(), resumed.plain[name].state_dict()
        for key in a:
            assert torch.equal(a[key], b[key]), f"{name}.{key} differs after resume"
    rows = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["autoencoder/warmup"] for r in rows if "autoencoder/warmup" in r] == pytest.approx(
        [0, 0, 0.25, 0.5, 0.75, 1]  # steps t = 0..5 use (t - 1) / 4 in [0, 1], the split after t = 2
    )


# --- a cost that is not a likelihood gets no ELBO --------------------------------------------------


@pytest.mark.parametrize("variant", ["vae", "vsc"])
def test_a_cost_that_is_not_a_likelihood_reports_no_elbo(registry, variant, caplog):
    """``mse`` is ``-log N(x; x_hat, I/2)`` less ``D/2 log pi``: an "ELBO" on it is ``32 log pi``
    nats too high on the 64 pixels of digits. vae and vsc train with it but leave the ELBO and the
    log-likelihood out, with a one-line note; gaussian with sigma = 1/sqrt(2) trains the same
    objective plus that constant, and reports them."""

    def make(loss):
        torch.manual_seed(0)
        return built(registry, {"name": variant, "latent_dim": 3}, dataset="digits", loss=loss)

    with caplog.at_level(logging.WARNING):
        mse = make("mse")
    [note] = [r.getMessage() for r in caplog.records]
    assert note.startswith(f"{variant}: loss 'mse' is not a normalised likelihood -log p(x|z), so elbo and ")
    assert "\n" not in note
    caplog.clear()
    gauss = make({"name": "gaussian", "sigma": math.sqrt(0.5)})
    assert not caplog.records
    assert make("l1").model.log_weights is None
    assert mse.model.log_weights is None and gauss.model.log_weights is not None
    for k, v in mse.model.modules["encoder"].state_dict().items():
        assert torch.equal(v, gauss.model.modules["encoder"].state_dict()[k])  # the same weights
    batch = toy_batch(mse, 16)
    outs = {}
    for name, b in (("mse", mse), ("gaussian", gauss)):
        torch.manual_seed(1)
        outs[name] = b.model.phases[0].step(batch, Modules(b.model.modules))
    # Same weights and draws: the objectives differ by D/2 log pi = 32 x 1.144730 = 36.6314 by hand.
    assert (outs["gaussian"].loss - outs["mse"].loss).item() == pytest.approx(36.6314, abs=1e-3)
    assert "elbo" not in outs["mse"].logs
    g = outs["gaussian"].logs
    torch.testing.assert_close(g["elbo"], -(g["reconstruction"] + g["kl"]))

    def metric(b):
        x = b.dataset.tensors[0]
        ctx = EvalContext(
            sample=lambda n: x[:n], real=lambda n: x[:n], dataset=b.dataset, model=b.model,
            modules=Modules(b.model.modules),
        )  # fmt: skip
        return AutoencoderMetric(AutoencoderMetricOptions(num_examples=20, importance_samples=2))(ctx)

    assert not {"elbo", "log_likelihood"} & metric(mse).keys()
    assert {"elbo", "log_likelihood"} <= metric(gauss).keys()


# --- a reconstruction loss on logits gets a linear decoder output ----------------------------------


def last_layers(generator: nn.Module) -> tuple[nn.Module, nn.Linear]:
    """The MLP decoder's output module and its last linear layer."""
    layers = list(generator.net)
    return layers[-1], next(mod for mod in reversed(layers) if isinstance(mod, nn.Linear))


@pytest.mark.parametrize("variant", ["ae", "vae", "aae", "wae", "vsc"])
@torch.no_grad()
def test_bernoulli_loss_gets_a_linear_decoder_output(registry, variant):
    """With a tanh output the logits stay in [-1, 1], so the Bernoulli mean 2 sigmoid(l) - 1
    cannot leave [-0.462, 0.462]; output auto must be linear for a loss on logits."""
    b = built(registry, variant, dataset="digits", loss="bernoulli")
    decoder = b.model.modules["generator"]
    out, linear = last_layers(decoder)
    assert not any(isinstance(mod, nn.Tanh) for mod in decoder.modules())
    assert isinstance(out, nn.Identity)
    m = Modules(b.model.modules)
    x = b.dataset.tensors[0][:4]
    for bias, mean in ((3.0, 2 / (1 + math.exp(-3.0)) - 1), (-3.0, 2 / (1 + math.exp(3.0)) - 1)):
        linear.weight.zero_()
        linear.bias.fill_(bias)  # every logit = bias
        rec = b.model.reconstruct(m, x, None)
        torch.testing.assert_close(rec, torch.full_like(rec, mean))  # +-0.905: beyond +-0.462
        assert rec.abs().min().item() > 0.9
        torch.testing.assert_close(
            decoder(torch.zeros(2, decoder.latent_dim)), torch.full((2, 1, 8, 8), bias)
        )


def test_decoder_output_stays_as_chosen(registry):
    # A loss on data-space values keeps tanh for images; an explicit output always wins.
    assert isinstance(
        last_layers(built(registry, "vae", dataset="digits").model.modules["generator"])[0], nn.Tanh
    )
    chosen = built(registry, "vae", dataset="digits", loss="bernoulli", generator={**SMALL, "output": "tanh"})
    assert isinstance(last_layers(chosen.model.modules["generator"])[0], nn.Tanh)


# --- the metric -----------------------------------------------------------------------------------


def test_sparsity_fraction_on_constructed_codes():
    z = torch.tensor([[0.0, 0.05, -0.2], [0.5, -0.09, 0.1]])
    assert near_zero_fraction(z, 0.1) == pytest.approx(3 / 6)  # 0, 0.05, -0.09; 0.1 is not < 0.1


def test_autoencoding_metric_on_a_known_model(registry):
    """Codes = the data's first 4 coordinates with half of them zeroed; reconstruction off by 0.1."""
    x = torch.randn(400, 6, generator=torch.Generator().manual_seed(0))
    mask = torch.tensor([1.0, 0.0, 1.0, 0.0])
    sparse = prior(registry, "spike_slab", 4, alpha=0.5)
    model = AutoencoderModel(
        modules={},
        phases=[],
        sample=lambda m, n, y: torch.zeros(n, 6),
        reconstruct=lambda m, x, y: x + 0.1,
        encode=lambda m, x, y: x[:, :4] * mask,
        prior=sparse,
    )
    ctx = EvalContext(
        sample=lambda n: torch.zeros(n, 6),
        real=lambda n: x[:n],
        dataset=None,
        model=model,
        modules=Modules(),
        held_out=lambda n: (x[:n], torch.zeros(min(n, 400), dtype=torch.long)),
    )
    out = AutoencoderMetric(AutoencoderMetricOptions(num_examples=300))(ctx)
    assert out["held_out"] == 1.0
    assert out["reconstruction"] == pytest.approx(6 * 0.01, rel=1e-5)
    assert out["reconstruction_pixel"] == pytest.approx(0.01, rel=1e-5)
    codes = x[:300, :4] * mask
    assert out["exact_zero"] == pytest.approx(0.5)
    assert out["near_zero"] == pytest.approx(near_zero_fraction(codes, 0.1))
    assert out["prior_zero"] == pytest.approx(0.5)
    # Prior's near-zero share: (1 - alpha) + alpha P(|N(0,1)| < 0.1) = 0.5 + 0.5 * 0.0797, within 5 sd.
    assert abs(out["near_zero_prior"] - 0.5399) < 5 * math.sqrt(0.54 * 0.46 / 1200)
    assert "elbo" not in out  # no likelihood for this model


# --- the held-out split ------------------------------------------------------------------------------


def test_holdout_split_is_fixed_disjoint_and_never_trained_on(registry):
    train, held = holdout_split(100, 0.2)
    assert len(held) == 20 and len(train) == 80
    assert sorted(torch.cat([train, held]).tolist()) == list(range(100))
    t2, h2 = holdout_split(100, 0.2)
    assert torch.equal(held, h2) and torch.equal(train, t2)

    class Indexed:
        tensors = (torch.arange(100.0).view(100, 1), torch.zeros(100, dtype=torch.long))

        def __len__(self):
            return 100

    class Acc:
        device, process_index, num_processes = torch.device("cpu"), 0, 1

    loader = make_loader(Indexed(), 16, 0, Acc(), holdout=0.2)
    seen = {int(v) for _ in range(30) for v in next(loader).x.flatten()}
    assert seen == set(train.tolist())
    with pytest.raises(GenfwError, match="holdout must be in"):
        resolve({"variant": "ae", "train": {"holdout": 1.0}}, registry)


# --- end to end -------------------------------------------------------------------------------------

TINY = ("--encoder.hidden", "[16]", "--generator.hidden", "[16]")


@pytest.mark.parametrize(
    ("variant", "extra"),
    [
        ("ae", ()),
        ("ae", ("--loss", "bernoulli", "--generator.output", "none")),
        ("vae", ()),
        ("vae", ("--loss", "bernoulli")),  # output auto: a linear decoder output (logits)
        ("aae", ("--critic.hidden", "[16]", "--prior", "mog")),
        ("wae", ("--prior", "spike_slab")),
        ("wae", ("--plugin.penalty", "gan", "--critic.hidden", "[16]")),
        ("vsc", ()),
    ],
)
def test_each_variant_trains_on_digits_and_logs_its_metrics(tmp_path, run_cli, variant, extra):
    run = tmp_path / "run"
    code, out, err = run_cli(
        "train", "--plugin", variant, "--steps", "4", "--out", run, *TINY, *extra, *QUICK,
        "--metric.autoencoding.importance_samples", "4",
    )  # fmt: skip
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["autoencoding/held_out"] == 1.0  # the preset holds 10% out
    assert math.isfinite(summary["autoencoding/reconstruction"])
    assert math.isfinite(summary["autoencoding/latent_mmd"])
    assert ("autoencoding/log_likelihood" in summary) == (variant in ("vae", "vsc"))
    if variant in ("vae", "vsc"):
        assert summary["autoencoding/log_likelihood"] >= summary["autoencoding/elbo"] - 1.0
    code, _, err = run_cli("sample", run, "-n", "4", "--out", tmp_path / "s.png")
    assert code == 0, err


def test_semi_supervised_aae_trains_on_digits_with_few_labels(tmp_path, run_cli, registry):
    b = built(
        registry,
        {"name": "aae", "latent_dim": 12},
        dataset={"name": "digits", "labelled": 100},
        prior="categorical",
    )
    y = b.dataset.tensors[1]
    assert torch.bincount(y[y >= 0], minlength=10).tolist() == [10] * 10 and (y == -1).sum() == 1697
    assert b.model.sample.__self__.supervised  # the categorical head trains on the labelled ones
    x = b.dataset.tensors[0]
    labelled = torch.nonzero(y >= 0).flatten()[:3]
    unlabelled = torch.nonzero(y < 0).flatten()[:5]
    idx = torch.cat([labelled, unlabelled])
    m = Modules(b.model.modules)
    out = b.model.phases[0].step(Batch(x[idx], y[idx]), m)
    ce = F.cross_entropy(m.encoder(x[labelled])[:, :10], y[labelled])  # the unlabelled are left out
    assert out.logs["label_ce"].item() == pytest.approx(ce.item(), rel=1e-5)
    code, out_text, err = run_cli(
        "train", "--plugin", "aae", "--plugin.latent_dim", "12", "--prior", "categorical",
        "--dataset", "digits", "--dataset.labelled", "100", "--steps", "4", "--out", tmp_path / "ss",
        *TINY, "--critic.hidden", "[16]", *QUICK,
    )  # fmt: skip
    assert code == 0, err
    summary = json.loads(out_text.strip().splitlines()[-1])
    assert math.isfinite(summary["autoencoder/label_ce"])
    assert math.isfinite(summary["autoencoding/reconstruction"])


def test_eval_pictures(tmp_path, run_cli):
    run = tmp_path / "aae2"
    code, out, err = run_cli(
        "train", "--plugin", "aae", "--plugin.latent_dim", "2", "--prior", "mog", "--steps", "3",
        "--out", run, *TINY, "--critic.hidden", "[16]", *QUICK,
    )  # fmt: skip
    assert code == 0, err
    code, out, err = run_cli("eval", run, "--reconstruct", "6", "--latent-plot", "--traverse", "0,1")
    assert code == 0, err
    assert out.strip().splitlines()[-3:] == [
        str(run / f) for f in ("reconstructions.png", "latent.png", "traversals.png")
    ]
    assert Image.open(run / "reconstructions.png").size == (2 + 12 * 34, 2 + 34)  # 6 pairs in one row
    assert Image.open(run / "traversals.png").size[1] == 2 + 2 * 34  # one row per dimension
    code, _, err = run_cli("eval", run, "--traverse", "5")
    assert code == 2 and "dimension 5 is not in 0..1" in err
    run8 = tmp_path / "ae8"
    assert run_cli("train", "--plugin", "ae", "--steps", "2", "--out", run8, *TINY, *QUICK)[0] == 0
    code, _, err = run_cli("eval", run8, "--latent-plot")
    assert code == 2 and "--latent-plot needs a 2-D latent; this run's has 8 dimensions" in err
