"""The importance-weighted autoencoder (``iwae``, with the ``iwae`` and ``dreg`` gradient
estimators) and the VampPrior (``vamp``): the bound and both gradients against hand derivations on
a 1-d model, k = 1 against the VAE, DReG's expectation against IWAE's, the prior's density against
a hand log-sum-exp, contracts, refusals, and short runs through the CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

import genfw
from genfw import Batch, DataInfo, GenfwError, Modules, testing
from genfw.config import resolve
from genfw.train import Trainer, build, read_run
from genfw_plugins import priors
from genfw_plugins.iwae import IWAE, IWAEOptions, iwae_objective
from genfw_plugins.losses import GaussianNLL, GaussianOptions
from genfw_plugins.vae import gaussian_log_density

from .conftest import QUICK

LOG_2PI = math.log(2 * math.pi)
TINY = ("--encoder.hidden", "[16]", "--generator.hidden", "[16]")


def built(registry, variant: dict, dataset="toy2d", **extra):
    raw = {"variant": variant, "dataset": dataset, "train": {"batch_size": 16, "progress": False}}
    raw.update({"encoder": {"name": "mlp", "hidden": [16]}, "generator": {"name": "mlp", "hidden": [16]}})
    raw.update(extra)
    return build(resolve(raw, registry))


# --- a 1-d model written out: x = theta z + t + noise(s), q(z|x) = N(a x + b, exp(c x + e)) -------

A, B_MU, C, E = 0.7, -0.3, 0.4, -0.5  # encoder: mu = A x + B_MU, logvar = C x + E
THETA, T, S = 1.3, 0.2, 0.8  # decoder: x_hat = THETA z + T; p(x|z) = N(x; x_hat, S^2)
XS = [0.9, -1.4]


def tiny_iwae(k: int, estimator: str) -> tuple[IWAE, Modules]:
    iwae = IWAE(IWAEOptions(latent_dim=1, k=k, estimator=estimator))
    iwae.prior = priors.NormalPrior(dim=1)
    iwae.loss = GaussianNLL(GaussianOptions(sigma=S))
    iwae.likelihood = True
    encoder, decoder = nn.Linear(1, 2).double(), nn.Linear(1, 1).double()
    encoder.weight.data = torch.tensor([[A], [C]], dtype=torch.float64)
    encoder.bias.data = torch.tensor([B_MU, E], dtype=torch.float64)
    decoder.weight.data = torch.tensor([[THETA]], dtype=torch.float64)
    decoder.bias.data = torch.tensor([T], dtype=torch.float64)
    return iwae, Modules({"encoder": encoder, "generator": decoder})


def step_with_noise(k: int, estimator: str, seed: int = 0):
    """One step of the tiny model on XS; the noise eps (k, B) it drew; its gradients."""
    iwae, m = tiny_iwae(k, estimator)
    x = torch.tensor(XS, dtype=torch.float64).unsqueeze(1)
    torch.manual_seed(seed)
    out = iwae.step(Batch(x, torch.zeros(len(XS), dtype=torch.long)), m)
    torch.manual_seed(seed)
    eps = torch.randn(k, len(XS), 1, dtype=torch.float64)[..., 0].tolist()
    out.loss.backward()
    grads = {
        "a": m.encoder.weight.grad[0, 0].item(),
        "b_mu": m.encoder.bias.grad[0].item(),
        "c": m.encoder.weight.grad[1, 0].item(),
        "e": m.encoder.bias.grad[1].item(),
        "theta": m.generator.weight.grad[0, 0].item(),
        "t": m.generator.bias.grad[0].item(),
    }
    return out, eps, grads


def by_hand(eps: list[list[float]], estimator: str):
    """The negative bound -mean_b log (1/k) sum_i w_i and its gradients, in plain floats.

    log w_i = log N(x; THETA z_i + T, S^2) + log N(z_i; 0, 1) - log N(z_i; mu, sigma^2) with
    z_i = mu + sigma eps_i; r_i = x - THETA z_i - T; normalised weights w~_i.
    iwae: d log w_i / d mu = THETA r_i / S^2 - z_i (log q(z_i) = -eps_i^2/2 - logvar/2 - ... has no
    mu in it) and d log w_i / d logvar = (THETA r_i / S^2 - z_i) sigma eps_i / 2 + 1/2;
    dreg: sum_i w~_i^2 g_i dz_i/d(mu, logvar) with g_i = d log w_i / d z_i at fixed q,
    THETA r_i / S^2 - z_i + eps_i / sigma, and dz_i / d logvar = sigma eps_i / 2;
    decoder (both): d log w_i / d THETA = r_i z_i / S^2, d / d T = r_i / S^2, weighted by w~_i.
    """
    k, n = len(eps), len(XS)
    loss, g = 0.0, dict.fromkeys(("a", "b_mu", "c", "e", "theta", "t"), 0.0)
    for b, x in enumerate(XS):
        mu, logvar = A * x + B_MU, C * x + E
        sigma = math.exp(0.5 * logvar)
        zs = [mu + sigma * eps[i][b] for i in range(k)]
        rs = [x - THETA * z - T for z in zs]
        log_w = [
            (-0.5 * r**2 / S**2 - math.log(S) - 0.5 * LOG_2PI)
            + (-0.5 * z**2 - 0.5 * LOG_2PI)
            - (-0.5 * (z - mu) ** 2 / sigma**2 - 0.5 * logvar - 0.5 * LOG_2PI)
            for z, r in zip(zs, rs, strict=True)
        ]
        top = max(log_w)
        total = sum(math.exp(lw - top) for lw in log_w)
        loss -= (top + math.log(total / k)) / n
        w = [math.exp(lw - top) / total for lw in log_w]
        d_mu = d_logvar = 0.0
        for i in range(k):
            z, r, e = zs[i], rs[i], eps[i][b]
            if estimator == "iwae":
                d_mu += w[i] * (THETA * r / S**2 - z)
                d_logvar += w[i] * ((THETA * r / S**2 - z) * sigma * e / 2 + 0.5)
            else:
                gz = THETA * r / S**2 - z + e / sigma
                d_mu += w[i] ** 2 * gz
                d_logvar += w[i] ** 2 * gz * sigma * e / 2
            g["theta"] -= w[i] * r * z / S**2 / n
            g["t"] -= w[i] * r / S**2 / n
        g["a"] -= d_mu * x / n
        g["b_mu"] -= d_mu / n
        g["c"] -= d_logvar * x / n
        g["e"] -= d_logvar / n
    return loss, g


@pytest.mark.parametrize("estimator", ["iwae", "dreg"])
@pytest.mark.parametrize("k", [1, 4])
def test_bound_and_gradients_match_the_hand_derivation(k, estimator):
    out, eps, grads = step_with_noise(k, estimator)
    loss, expected = by_hand(eps, estimator)
    assert out.loss.item() == pytest.approx(loss, rel=1e-12)
    assert out.logs["iwae_bound"].mean().item() == pytest.approx(-loss, rel=1e-12)
    for name, value in expected.items():
        assert grads[name] == pytest.approx(value, rel=1e-9, abs=1e-12), name


def test_the_estimators_differ_in_the_encoder_only():
    _, _, iwae = step_with_noise(4, "iwae")
    _, _, dreg = step_with_noise(4, "dreg")
    assert iwae["theta"] == pytest.approx(dreg["theta"], rel=1e-12)
    assert iwae["t"] == pytest.approx(dreg["t"], rel=1e-12)
    assert abs(iwae["b_mu"] - dreg["b_mu"]) > 1e-3 and abs(iwae["e"] - dreg["e"]) > 1e-3


# --- k = 1 is the VAE -------------------------------------------------------------------------------


def test_k_1_is_the_vaes_single_sample_elbo(registry):
    """Same weights, same noise: with a prior the VAE takes by Monte Carlo (mog) the objectives and
    every gradient are the VAE's; with the normal prior they differ by exactly the closed-form KL
    against its one-sample estimate at the same z."""
    for prior in ("mog", "normal"):
        vae = built(registry, {"name": "vae", "latent_dim": 2}, prior=prior)
        iwae = built(registry, {"name": "iwae", "latent_dim": 2, "k": 1}, prior=prior)
        for name, mod in iwae.model.modules.items():
            mod.load_state_dict(vae.model.modules[name].state_dict())
        x = vae.dataset.tensors[0][:16]
        batch = Batch(x, torch.zeros(16, dtype=torch.long))
        mv, mi = Modules(vae.model.modules), Modules(iwae.model.modules)
        torch.manual_seed(3)
        out_v = vae.model.phases[0].step(batch, mv)
        torch.manual_seed(3)
        out_i = iwae.model.phases[0].step(batch, mi)
        torch.testing.assert_close(out_i.context["z"], out_v.context["z"], rtol=0, atol=0)
        if prior == "mog":
            torch.testing.assert_close(out_i.loss, out_v.loss, rtol=1e-6, atol=0)
            gv = torch.autograd.grad(
                out_v.loss, list(mv.encoder.parameters()) + list(mv.generator.parameters())
            )
            gi = torch.autograd.grad(
                out_i.loss, list(mi.encoder.parameters()) + list(mi.generator.parameters())
            )
            for a, b in zip(gv, gi, strict=True):
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        else:
            mu, logvar, z = out_v.context["mu"], out_v.context["logvar"], out_v.context["z"]
            one_sample = gaussian_log_density(z, mu, logvar) - vae.model.prior.log_prob(z)
            closed = vae.model.prior.kl_from_normal(mu, logvar)
            expected = out_v.loss + (one_sample - closed).mean()
            torch.testing.assert_close(out_i.loss, expected, rtol=1e-6, atol=0)


# --- DReG against IWAE on a linear-Gaussian model ------------------------------------------------------


def linear_gaussian_iwae(estimator: str, k: int, offset: float, d=3, sigma=0.5, seed=0):
    """p(z) = N(0, 1), p(x|z) = N(w z + b, sigma^2 I); the encoder is the true posterior, its mean
    and log-variance shifted by ``offset``."""
    g = torch.Generator().manual_seed(seed)
    w, b = (
        torch.randn(d, 1, generator=g, dtype=torch.float64),
        torch.randn(d, generator=g, dtype=torch.float64),
    )
    iwae = IWAE(IWAEOptions(latent_dim=1, k=k, estimator=estimator))
    iwae.prior = priors.NormalPrior(dim=1)
    iwae.loss = GaussianNLL(GaussianOptions(sigma=sigma))
    iwae.likelihood = True
    decoder = nn.Linear(1, d).double()
    decoder.weight.data, decoder.bias.data = w.clone(), b.clone()
    v = 1.0 / (1.0 + (w.square().sum() / sigma**2))  # posterior variance; mean v w^T (x - b) / sigma^2
    encoder = nn.Linear(d, 2).double()
    encoder.weight.data = torch.cat([v * w.T / sigma**2, torch.zeros(1, d, dtype=torch.float64)])
    encoder.bias.data = torch.stack([-(v * w.T @ b / sigma**2).squeeze() + offset, v.log() + offset])
    x = (
        (w @ torch.randn(1, 1, generator=g, dtype=torch.float64)).T
        + b
        + sigma * torch.randn(1, d, generator=g, dtype=torch.float64)
    )
    return iwae, Modules({"encoder": encoder, "generator": decoder}), x


def encoder_gradient(iwae, m, x, n: int) -> torch.Tensor:
    """The encoder's gradient (weights and biases, flat) averaged over ``n`` copies of ``x``."""
    out = iwae.step(Batch(x.repeat(n, 1), torch.zeros(n, dtype=torch.long)), m)
    grads = torch.autograd.grad(out.loss, list(m.encoder.parameters()))
    return torch.cat([g.flatten() for g in grads])


def test_dreg_is_zero_at_the_true_posterior_where_iwae_is_noisy():
    torch.manual_seed(0)
    dreg = encoder_gradient(*linear_gaussian_iwae("dreg", 5, 0.0), n=7)
    iwae = encoder_gradient(*linear_gaussian_iwae("iwae", 5, 0.0), n=7)
    # q = p(z|x): every log w_i is log p(x) whatever z_i, so d log w_i / d z_i = 0 exactly.
    assert dreg.abs().max() < 1e-10
    assert iwae.abs().max() > 1e-3  # the score-function part: zero only in expectation


def test_dreg_has_iwaes_expected_gradient():
    """Both estimate the gradient of E L_k: means over 40 x 1000 examples agree within 4.5
    standard errors (the standard errors from the spread of the 40 chunk means)."""
    torch.manual_seed(0)
    chunks = {
        est: torch.stack([encoder_gradient(*linear_gaussian_iwae(est, 5, 0.7), n=1000) for _ in range(40)])
        for est in ("iwae", "dreg")
    }
    mean = {est: c.mean(0) for est, c in chunks.items()}
    se = {est: c.std(0) / math.sqrt(c.shape[0]) for est, c in chunks.items()}
    active = mean["iwae"].abs() > 1e-8  # the encoder's weights on x (all of its entries move)
    diff = (mean["iwae"] - mean["dreg"]).abs()[active]
    tol = 4.5 * (se["iwae"].square() + se["dreg"].square()).sqrt()[active]
    assert (diff < tol).all(), (mean, se)
    assert mean["iwae"].abs().max() > 10 * tol.max()  # a gradient well away from 0


def test_iwae_objective_refuses_an_unknown_estimator():
    mu = torch.zeros(2, 1, requires_grad=True)
    with pytest.raises(ValueError, match="estimator must be 'iwae' or 'dreg'"):
        iwae_objective(mu, mu, torch.zeros(3, 2, 1), lambda z: z.sum(-1), "vimco")


# --- the VampPrior ------------------------------------------------------------------------------------

U = [[0.5, -1.0, 2.0], [-0.3, 0.8, 0.1]]  # two pseudo-inputs in R^3
ENC_W = [[0.6, -0.2, 0.1], [0.0, 0.5, -0.4], [0.3, 0.1, 0.2], [-0.2, 0.0, 0.3]]  # rows: mu1, mu2, lv1, lv2
ENC_B = [0.1, -0.2, -0.5, 0.2]


def hand_vamp(components=2) -> priors.VampPrior:
    p = priors.VampPrior(
        priors.VampOptions(components=components), dim=2, data=DataInfo(shape=(3,), kind="points")
    )
    p.pseudo_inputs.data = torch.tensor(U, dtype=torch.float64)
    w, b = torch.tensor(ENC_W, dtype=torch.float64), torch.tensor(ENC_B, dtype=torch.float64)
    p.bind(lambda x: (x @ w.T + b).chunk(2, dim=1))
    return p


def vamp_log_prob_by_hand(z: list[float]) -> float:
    """log (1/2) sum_k N(z; mu_k, diag exp(logvar_k)), (mu_k, logvar_k) the encoder's output at u_k."""
    terms = []
    for u in U:
        out = [
            sum(wi * ui for wi, ui in zip(row, u, strict=True)) + b
            for row, b in zip(ENC_W, ENC_B, strict=True)
        ]
        mu, logvar = out[:2], out[2:]
        terms.append(
            sum(
                -0.5 * (zj - m) ** 2 / math.exp(lv) - 0.5 * lv - 0.5 * LOG_2PI
                for zj, m, lv in zip(z, mu, logvar, strict=True)
            )
        )
    top = max(terms)
    return top + math.log(sum(math.exp(t - top) for t in terms) / 2)


def test_vamp_log_prob_is_the_hand_log_sum_exp_over_two_pseudo_inputs():
    p = hand_vamp()
    zs = [[0.0, 0.0], [1.5, -2.0], [-3.0, 4.0]]
    got = p.log_prob(torch.tensor(zs, dtype=torch.float64))
    for value, z in zip(got.tolist(), zs, strict=True):
        assert value == pytest.approx(vamp_log_prob_by_hand(z), rel=1e-12)
    # The same with the posteriors passed in (as the variant does in training), chunk by chunk.
    mu, logvar = p.encoded()
    chunked = priors.diagonal_gaussian_mixture_log_prob(torch.tensor(zs, dtype=torch.float64), mu, logvar, 4)
    torch.testing.assert_close(chunked, got, rtol=1e-14, atol=0)


def test_vamp_samples_pick_a_pseudo_input_uniformly_and_draw_its_posterior():
    p = hand_vamp()
    mu, logvar = p.encoded()
    z = p.sample(40000, device="cpu", generator=torch.Generator().manual_seed(0)).double()
    # Mixture moments: mean = mean_k mu_k; variance = mean_k (var_k + mu_k^2) - mean^2.
    mean = mu.mean(0)
    var = (logvar.exp() + mu.square()).mean(0) - mean.square()
    torch.testing.assert_close(z.mean(0), mean, atol=4 * (var / 40000).sqrt().max().item(), rtol=0)
    torch.testing.assert_close(z.var(0), var, atol=0.05 * var.max().item(), rtol=0)
    assert p.variance == pytest.approx(float(var.mean()), rel=1e-12)


def test_vamp_pseudo_inputs_start_as_set_and_stay_in_the_image_range():
    torch.manual_seed(0)
    p = priors.VampPrior(priors.VampOptions(components=50), dim=2, data=DataInfo(shape=(1, 4, 4)))
    assert p().shape == (50, 1, 4, 4)
    assert abs(p.pseudo_inputs.mean().item()) < 0.003 and p.pseudo_inputs.std().item() == pytest.approx(
        0.01, rel=0.1
    )
    p.pseudo_inputs.data.mul_(500.0)  # far outside [-1, 1]
    assert p().abs().max().item() == 1.0  # hardtanh: the image range


def test_vamp_needs_a_variant_with_a_gaussian_encoder(registry, run_cli, tmp_path):
    with pytest.raises(GenfwError, match=r"needs a variant with a Gaussian encoder .*\(vae, iwae\)"):
        priors.VampPrior(priors.VampOptions(), dim=2)
    for variant in ("aae", "gan"):
        code, _, err = run_cli(
            "train", "--plugin", variant, "--prior", "vamp", "--steps", "1", "--out", tmp_path / variant
        )
        assert code == 2 and "prior 'vamp' is a mixture of the encoder's posteriors" in err
        assert len(err.strip().splitlines()) == 1


def test_iwae_refuses_a_prior_without_a_density_everywhere(registry):
    with pytest.raises(GenfwError, match=r"prior 'uniform' cannot be used with iwae: .*\(iwae takes priors"):
        built(registry, {"name": "iwae"}, prior="uniform")


def test_vae_with_vamp_trains_the_pseudo_inputs_through_a_monte_carlo_kl(registry):
    b = built(registry, {"name": "vae", "latent_dim": 2}, prior={"name": "vamp", "components": 5})
    model, vae = b.model, b.model.sample.__self__
    assert model.phases[0].modules == ("encoder", "generator", "prior")
    assert model.export == ("generator", "encoder", "prior")  # sampling needs the encoder
    m = Modules(model.modules)
    x = b.dataset.tensors[0][:8]
    torch.manual_seed(0)
    out = model.phases[0].step(Batch(x, torch.zeros(8, dtype=torch.long)), m)
    mu, logvar, z = out.context["mu"], out.context["logvar"], out.context["z"]
    u_mu, u_logvar = m.encoder(model.modules["prior"]()).chunk(2, dim=1)
    log_p = torch.logsumexp(
        torch.stack([gaussian_log_density(z, u_mu[k], u_logvar[k]) for k in range(5)]), 0
    ) - math.log(5)
    torch.testing.assert_close(out.logs["kl"], (gaussian_log_density(z, mu, logvar) - log_p).detach())
    out.loss.backward()
    assert model.modules["prior"].pseudo_inputs.grad.abs().sum() > 0
    assert vae.prior is model.modules["prior"]


# --- contracts ------------------------------------------------------------------------------------------


def test_vamp_keeps_the_prior_contract(genfw_contract):
    genfw_contract("prior", "vamp", options={"components": 7})


def test_iwae_with_dreg_keeps_the_variant_contract(genfw_contract):
    # (iwae with its defaults is in tests/test_contracts.py, with every registered component)
    genfw_contract("variant", "iwae", options={"estimator": "dreg", "k": 3})


class VampIgnoringItsPosteriors(priors.VampPrior):
    def log_prob(self, z, encoded=None):
        return super().log_prob(z)  # always the bound encoder's: wrong in training


class VampWithoutItsInputs(priors.VampPrior):
    def forward(self):
        return self.pseudo_inputs.flatten(1)[:, :2]  # not the data's shape


class BrokenEncoderPriors:
    @genfw.hookimpl
    def genfw_register_priors(self, register):
        register("deaf_vamp", VampIgnoringItsPosteriors, options=priors.VampOptions)
        register("shapeless_vamp", VampWithoutItsInputs, options=priors.VampOptions)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("deaf_vamp", r"log_prob\(z, encoded=\(mu, logvar\)\) ignores the posteriors it is given"),
        ("shapeless_vamp", r"forward\(\) gave \(500, 2\), expected inputs \(K, 3\)"),
    ],
)
def test_the_kit_catches_a_broken_encoder_prior(name, message):
    registry = testing.registry_with(BrokenEncoderPriors())
    with pytest.raises(AssertionError, match=message):
        testing.check("prior", name, registry=registry)


@pytest.mark.parametrize("variant", ["vae", "iwae"])
def test_variants_keep_the_contract_with_vamp(variant):
    testing.check_variant(variant, config={"prior": {"name": "vamp", "components": 6}})


def test_iwae_with_vamp_resumes_exactly(tmp_path, registry):
    """The pseudo-inputs ride in the checkpoint with the networks: 3 + 3 resumed steps give the
    weights of 6 straight ones, bit for bit."""

    def raw(steps: int, **train) -> dict:
        small = {"name": "mlp", "hidden": [16]}
        return {
            "variant": {"name": "iwae", "latent_dim": 3, "k": 3, "estimator": "dreg"},
            "prior": {"name": "vamp", "components": 10},
            "dataset": "digits",
            "encoder": small,
            "generator": small,
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
    Trainer(resolve(raw(3), registry), tmp_path / "b").fit()
    resumed = Trainer(read_run(tmp_path / "b", registry, [("train.steps", 6)]), tmp_path / "b", resume=True)
    resumed.fit()
    for name in ("encoder", "generator", "prior"):
        a, b = straight.plain[name].state_dict(), resumed.plain[name].state_dict()
        for key in a:
            assert torch.equal(a[key], b[key]), f"{name}.{key} differs after resume"


# --- through the CLI -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra",
    [
        ("--plugin", "iwae", "--plugin.k", "3"),
        ("--plugin", "iwae", "--plugin.estimator", "dreg", "--prior", "vamp", "--prior.components", "20"),
        ("--plugin", "vae", "--prior", "vamp", "--prior.components", "20", "--plugin.latent_dim", "2"),
    ],
)
def test_trains_on_digits_samples_and_draws_the_eval_pictures(tmp_path, run_cli, extra):
    run = tmp_path / "run"
    code, out, err = run_cli(
        "train", *extra, "--steps", "4", "--out", run, *TINY, *QUICK,
        "--metric.autoencoding.importance_samples", "4",
    )  # fmt: skip
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    for key in ("reconstruction", "elbo", "log_likelihood", "latent_mmd"):
        assert math.isfinite(summary[f"autoencoding/{key}"]), key
    assert summary["autoencoding/log_likelihood"] >= summary["autoencoding/elbo"] - 1.0
    if "iwae" in extra:
        assert 1.0 <= summary["autoencoder/effective_samples"] <= 3.0
        assert summary["autoencoder/iwae_bound"] >= summary["autoencoder/elbo"]
    code, _, err = run_cli("sample", run, "-n", "4", "--out", tmp_path / "s.png")
    assert code == 0, err
    pictures = ["--reconstruct", "4", "--traverse", "0,1"] + (["--latent-plot"] if "2" in extra else [])
    code, out, err = run_cli("eval", run, *pictures)
    assert code == 0, err
    assert all((run / f).exists() for f in ("reconstructions.png", "traversals.png"))
