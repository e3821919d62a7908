"""Regularised autoencoders (``rae``) and the ex-post density (``_expost``, also ``ae --plugin.ex_post
gmm``): EM against a known mixture, the ring buffer of codes, the objective of each decoder
regulariser against a hand computation, the default weights, and sampling that a run reproduces
from its folder."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch.distributions import MultivariateNormal

from genfw import Batch, GenfwError, Modules
from genfw.config import resolve
from genfw.rundir import load_model, read_run
from genfw.train import Trainer, build
from genfw_plugins._expost import ExPostGMM, fit_gmm, gaussian_log_densities
from genfw_plugins.rae import decoder_l2, default_weights

from .conftest import QUICK

SMALL = {"name": "mlp", "hidden": [16]}

# A known two-component mixture in 2-D.
WEIGHTS = torch.tensor([0.3, 0.7], dtype=torch.float64)
MEANS = torch.tensor([[-3.0, 0.0], [2.0, 1.0]], dtype=torch.float64)
COVS = torch.tensor([[[1.0, 0.6], [0.6, 0.8]], [[0.5, -0.2], [-0.2, 1.5]]], dtype=torch.float64)


def mixture_sample(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    c = torch.multinomial(WEIGHTS, n, replacement=True, generator=g)
    eps = torch.randn(n, 2, 1, generator=g, dtype=torch.float64)
    return MEANS[c] + (torch.linalg.cholesky(COVS)[c] @ eps).squeeze(2)


def test_em_recovers_a_known_two_component_mixture():
    """4000 draws: weights within 0.03, means within 0.1, covariances within 0.15 of the truth
    (sampling error ~ 1/sqrt(n) ~ 0.02-0.05), and the fitted log-likelihood per point at least the
    true mixture's (EM's maximum-likelihood fit) but within 0.02 nats of it."""
    x = mixture_sample(4000)
    w, mu, tril, iterations = fit_gmm(x, 2)
    order = mu[:, 0].argsort()
    w, mu, cov = w[order], mu[order], (tril @ tril.transpose(1, 2))[order]
    torch.testing.assert_close(w, WEIGHTS, atol=0.03, rtol=0)
    torch.testing.assert_close(mu, MEANS, atol=0.1, rtol=0)
    torch.testing.assert_close(cov, COVS, atol=0.15, rtol=0)
    assert 1 <= iterations < 2000

    def loglik(weights, means, covs):
        comps = MultivariateNormal(means, covariance_matrix=covs).log_prob(x.unsqueeze(1))  # (n, K)
        return torch.logsumexp(comps + weights.log(), 1).mean().item()

    fitted, true = loglik(w, mu, cov), loglik(WEIGHTS, MEANS, COVS)
    assert true - 1e-3 <= fitted <= true + 0.02


def test_component_densities_match_torch():
    x = mixture_sample(50)
    ours = gaussian_log_densities(x, MEANS, torch.linalg.cholesky(COVS))
    ref = MultivariateNormal(MEANS, covariance_matrix=COVS).log_prob(x.unsqueeze(1))
    torch.testing.assert_close(ours, ref)


def test_the_density_keeps_the_last_codes_and_refits_only_on_new_ones():
    d = ExPostGMM(dim=2, components=2, capacity=5)
    z0 = torch.zeros(3, 2)
    # Before any code: the standard normal.
    torch.testing.assert_close(d.log_prob(z0), MultivariateNormal(torch.zeros(2), torch.eye(2)).log_prob(z0))
    d.push(torch.arange(8.0).view(4, 2))  # codes 0..3
    d.push(torch.arange(8.0, 14.0).view(3, 2))  # codes 4..6: 4 and 5 overwrite 0 and 1
    assert int(d.pushed) == 7
    torch.testing.assert_close(d.codes[:, 0], torch.tensor([10.0, 12.0, 4.0, 6.0, 8.0]))
    d.refit()
    assert int(d.fitted) == 7
    w, mu, tril, _ = fit_gmm(d.codes.double(), 2)
    torch.testing.assert_close(d.weights, w.float())
    torch.testing.assert_close(d.scale_tril, tril.float())
    torch.testing.assert_close(d.means, mu.float())
    before = d.means.clone()
    d.refit()  # nothing new: the same mixture
    assert torch.equal(d.means, before)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(d.sample(6, device="cpu", generator=g1), d.sample(6, device="cpu", generator=g2))


def test_density_samples_and_log_prob_agree():
    """Fitted to draws of the known mixture: its own samples' mean and covariance are the mixture's,
    and log_prob is the mixture's log-density (logsumexp over weighted components)."""
    d = ExPostGMM(dim=2, components=2, capacity=3000)
    d.push(mixture_sample(3000).float())
    s = d.sample(20000, device="cpu", generator=torch.Generator().manual_seed(1)).double()
    w, mu = d.weights.double(), d.means.double()
    cov = d.scale_tril.double() @ d.scale_tril.double().transpose(1, 2)
    mean = (w.view(-1, 1) * mu).sum(0)
    torch.testing.assert_close(s.mean(0), mean, atol=0.05, rtol=0)
    second = (w.view(-1, 1, 1) * (cov + mu.unsqueeze(2) * mu.unsqueeze(1))).sum(0)
    torch.testing.assert_close(torch.cov(s.T), second - torch.outer(mean, mean), atol=0.1, rtol=0)
    z = s[:10].float()
    comps = MultivariateNormal(mu.float(), scale_tril=d.scale_tril).log_prob(z.unsqueeze(1))
    torch.testing.assert_close(d.log_prob(z), torch.logsumexp(comps + d.weights.log(), 1))
    assert d.variance == pytest.approx(
        float(torch.diagonal(second - torch.outer(mean, mean)).mean()), rel=1e-5
    )


def test_default_weights_are_the_authors_mnist_constants_carried_over():
    """beta = 8 D beta_c / d, lambda = 4 D lambda_c (/ d for gp), on digits D = 64, d = 16."""
    assert default_weights("l2", 64, 16) == pytest.approx(
        (8 * 64 * 1e-4 / 16, 4 * 64 * 1e-7)
    )  # 3.2e-3, 2.56e-5
    assert default_weights("gp", 64, 16) == pytest.approx((3.2e-3, 4 * 64 * 0.5e-7 / 16))
    assert default_weights("spectral_norm", 64, 16) == pytest.approx((0.288, 0.0))
    assert default_weights("none", 64, 16) == pytest.approx((0.016, 0.0))


def built(registry, **variant):
    raw = {
        "variant": {"name": "rae", "latent_dim": 3, **variant},
        "dataset": "digits",
        "encoder": SMALL,
        "generator": SMALL,
        "train": {"batch_size": 8, "progress": False},
    }
    return build(resolve(raw, registry))


def batch_of(b, n=8):
    return Batch(b.dataset.tensors[0][:n], torch.zeros(n, dtype=torch.long))


@pytest.mark.parametrize("penalty", ["l2", "gp", "none"])
def test_rae_objective_by_hand(registry, penalty):
    """loss = mean(||x - D(z)||^2 + beta ||z||^2 / 2) + lambda R, with R the sum of the squared
    decoder weights (l2) or the mean over examples of ||grad_z sum_i D(z)_i^2||^2 = ||2 J^T D(z)||^2,
    J the decoder's Jacobian at each example's code (gp), computed here one example at a time."""
    b = built(registry, penalty=penalty, beta=0.3, weight=0.7)
    m = Modules(b.model.modules)
    batch = batch_of(b)
    out = b.model.phases[0].step(batch, m)
    z = m.encoder(batch.x).detach()
    dec = m.generator
    rec = (dec(z) - batch.x).flatten(1).square().sum(1)
    expected = (rec + 0.3 * 0.5 * z.square().sum(1)).mean()
    if penalty == "l2":
        weights = [v for k, v in dec.state_dict().items() if k.endswith("weight") and v.dim() == 2]
        expected = expected + 0.7 * sum(w.square().sum() for w in weights)
    elif penalty == "gp":
        gps = []
        for zb in z:
            jac = torch.autograd.functional.jacobian(lambda c: dec(c.unsqueeze(0)).flatten(), zb)  # (64, 3)
            gps.append((2 * jac.T @ dec(zb.unsqueeze(0)).flatten()).square().sum())
        expected = expected + 0.7 * torch.stack(gps).mean()
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    out.loss.backward()  # the gradient penalty is differentiable (a double backward)
    assert all(p.grad is not None for p in dec.parameters())
    assert int(m.density.pushed) == 8  # the phase keeps its codes


def test_ae_ex_post_refuses_a_prior_it_would_not_use(registry):
    raw = {"variant": {"name": "ae", "ex_post": "gmm"}, "dataset": "digits", "prior": "uniform"}
    with pytest.raises(GenfwError, match="prior 'uniform' would go unused; leave --prior out"):
        build(resolve(raw, registry))


def test_rae_default_weights_and_spectral_norm(registry):
    rae = built(registry, latent_dim=16).model.sample.__self__
    assert (rae.beta, rae.lam) == pytest.approx((3.2e-3, 2.56e-5))
    b = built(registry, penalty="spectral_norm")
    linears = [mod for mod in b.model.modules["generator"].modules() if isinstance(mod, torch.nn.Linear)]
    assert linears and all(torch.nn.utils.parametrize.is_parametrized(mod, "weight") for mod in linears)
    assert not any(
        torch.nn.utils.parametrize.is_parametrized(mod)
        for mod in b.model.modules["encoder"].modules()
        if isinstance(mod, torch.nn.Linear)
    )
    assert decoder_l2(b.model.modules["generator"]).item() > 0


@pytest.mark.parametrize(
    ("variant", "extra"), [("rae", ("--plugin.penalty", "gp")), ("ae", ("--plugin.ex_post", "gmm"))]
)
def test_ex_post_samples_are_reproduced_from_the_run_folder(tmp_path, run_cli, registry, variant, extra):
    """Train a few steps; the mixture in the checkpoint and in generator.safetensors is the one the
    trainer sampled with, so `genfw sample` and a rebuilt model draw the same images; the metric and
    the eval pictures work."""
    run = tmp_path / variant
    code, out, err = run_cli(
        "train", "--plugin", variant, "--plugin.latent_dim", "2", "--steps", "6", "--out", run,
        "--encoder.hidden", "[16]",
        "--generator.hidden", "[16]", "--plugin.gmm_codes", "100", *extra, *QUICK,
    )  # fmt: skip
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    for key in ("reconstruction", "latent_mmd", "near_zero"):
        assert math.isfinite(summary[f"autoencoding/{key}"]), key
    assert "autoencoding/elbo" not in summary  # no likelihood
    cfg = read_run(run, registry)
    _, exported, m1 = load_model(run, cfg, with_data=False)
    _, full, m2 = load_model(run, cfg, with_data=True)
    d1, d2 = m1.density, m2.density
    assert int(d1.pushed) == 6 * cfg.train.batch_size and int(d1.fitted) == int(
        d1.pushed
    )  # fitted at the last step
    for name in ("codes", "weights", "means", "scale_tril"):
        assert torch.equal(getattr(d1, name), getattr(d2, name)), name
    assert d1.weights.count_nonzero() == 10  # 100 codes: all 10 components in use
    torch.manual_seed(0)
    a = exported.sample(m1, 5, None)
    torch.manual_seed(0)
    b = full.sample(m2, 5, None)
    assert torch.equal(a, b)
    for k in (1, 2):
        assert run_cli("sample", run, "-n", "4", "--seed", "7", "--out", tmp_path / f"s{k}.png")[0] == 0
    assert (tmp_path / "s1.png").read_bytes() == (tmp_path / "s2.png").read_bytes()
    code, out, err = run_cli("eval", run, "--reconstruct", "4", "--latent-plot", "--traverse", "0,1")
    assert code == 0, err
    assert out.strip().splitlines()[-3:] == [
        str(run / f) for f in ("reconstructions.png", "latent.png", "traversals.png")
    ]


def test_rae_resumes_exactly(tmp_path, registry):
    """The codes buffer and the mixture ride in checkpoints: 3 steps + --resume to 6 end where 6
    straight steps do (weights, buffer, mixture)."""

    def raw(steps: int, **train) -> dict:
        return {
            "variant": {"name": "rae", "latent_dim": 3, "penalty": "gp", "gmm_codes": 50},
            "dataset": "digits",
            "encoder": SMALL,
            "generator": SMALL,
            "metrics": {},
            "train": {"steps": steps, "batch_size": 16, "progress": False, "grid": 4, **train},
        }

    straight = Trainer(resolve(raw(6, checkpoint_every=3), registry), tmp_path / "a")
    straight.fit()
    Trainer(resolve(raw(3), registry), tmp_path / "b").fit()
    resumed = Trainer(read_run(tmp_path / "b", registry, [("train.steps", 6)]), tmp_path / "b", resume=True)
    assert int(resumed.plain.density.pushed) == 48
    resumed.fit()
    for name in ("encoder", "generator", "density"):
        a, b = straight.plain[name].state_dict(), resumed.plain[name].state_dict()
        for key in a:
            assert torch.equal(a[key], b[key]), f"{name}.{key} differs after resume"
    assert int(straight.plain.density.fitted) == 96  # refitted for the last grid
