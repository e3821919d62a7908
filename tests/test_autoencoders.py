"""The autoencoder family (ae, vae, aae, wae-mmd, wae-gan, vsc), its priors (mog, categorical,
spike-and-slab KL) and the ``autoencoding`` metric: formulas against hand computations, closed
forms or Monte Carlo estimates with stated tolerances; bad input; a few training steps each."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.distributions import Categorical, Independent, MixtureSameFamily, MultivariateNormal, Normal

from genfw import Batch, EvalContext, GenfwError, Model, Modules
from genfw.config import resolve
from genfw.train import build, holdout_split, make_loader
from genfw_plugins import priors
from genfw_plugins._autoencoder import marginal_mmd
from genfw_plugins.losses import GaussianNLL, GaussianOptions
from genfw_plugins.metrics.autoencoder import (
    AutoencoderMetric,
    AutoencoderMetricOptions,
    iwae_bound,
    near_zero_fraction,
)
from genfw_plugins.regularisers import mmd_imq
from genfw_plugins.vae import VAE, VAEOptions
from genfw_plugins.vsc import spike_slab_log_density
from genfw_plugins.wae import MARGINAL_SCALES

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


# --- the metric -----------------------------------------------------------------------------------


def test_sparsity_fraction_on_constructed_codes():
    z = torch.tensor([[0.0, 0.05, -0.2], [0.5, -0.09, 0.1]])
    assert near_zero_fraction(z, 0.1) == pytest.approx(3 / 6)  # 0, 0.05, -0.09; 0.1 is not < 0.1


def test_autoencoding_metric_on_a_known_model(registry):
    """Codes = the data's first 4 coordinates with half of them zeroed; reconstruction off by 0.1."""
    x = torch.randn(400, 6, generator=torch.Generator().manual_seed(0))
    mask = torch.tensor([1.0, 0.0, 1.0, 0.0])
    sparse = prior(registry, "spike_slab", 4, alpha=0.5)
    model = Model(
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
