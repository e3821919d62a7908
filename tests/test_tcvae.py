"""beta-TC-VAE (``tcvae``): the minibatch estimators of log q(z) against densities written out by
hand, the decomposition identity, the objective, refusals, and a few steps on digits through the
CLI (metrics, sampling, the eval pictures)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from genfw import Batch, GenfwError, Modules
from genfw.config import resolve
from genfw.train import build
from genfw_plugins.tcvae import aggregate_log_densities, stratified_log_weights
from genfw_plugins.vae import gaussian_log_density

from .conftest import QUICK

SMALL = {"name": "mlp", "hidden": [16]}


def normal_pdf(x: float, mean: float, var: float) -> float:
    return math.exp(-0.5 * (x - mean) ** 2 / var) / math.sqrt(2 * math.pi * var)


# Two examples, two coordinates: codes, posterior means and variances.
Z = [[0.5, 1.0], [-1.0, 0.0]]
MU = [[0.0, 0.5], [-0.5, 0.0]]
VAR = [[1.0, 1.0], [4.0, 0.25]]
N = 10


def q(i: int, k: int, j: int | None = None) -> float:
    """q(z_i | x_k), or q(z_ij | x_k) for one coordinate j, by hand."""
    dims = range(2) if j is None else [j]
    return math.prod(normal_pdf(Z[i][jj], MU[k][jj], VAR[k][jj]) for jj in dims)


def tensors():
    return (
        torch.tensor(Z, dtype=torch.float64),
        torch.tensor(MU, dtype=torch.float64),
        torch.tensor(VAR, dtype=torch.float64).log(),
    )


def test_minibatch_weighted_sampling_by_hand():
    """MWS: q(z_i) ~ 1/(N B) sum_k q(z_i|x_k); prod_j q(z_ij) ~ prod_j 1/(N B) sum_k q(z_ij|x_k)."""
    z, mu, logvar = tensors()
    log_qz, log_prod = aggregate_log_densities(z, mu, logvar, N, "mws")
    for i in range(2):
        assert log_qz[i].item() == pytest.approx(math.log((q(i, 0) + q(i, 1)) / (N * 2)), rel=1e-12)
        prod = math.prod((q(i, 0, j) + q(i, 1, j)) / (N * 2) for j in range(2))
        assert log_prod[i].item() == pytest.approx(math.log(prod), rel=1e-12)


def test_minibatch_stratified_sampling_by_hand():
    """MSS with B = 2 (M = 1): each code's own posterior weighs 1/N, the other (N - M)/(N M) = 9/10."""
    z, mu, logvar = tensors()
    own, other = 1 / N, (N - 1) / N
    log_qz, log_prod = aggregate_log_densities(z, mu, logvar, N, "mss")
    for i in range(2):
        k = 1 - i
        assert log_qz[i].item() == pytest.approx(math.log(own * q(i, i) + other * q(i, k)), rel=1e-12)
        prod = math.prod(own * q(i, i, j) + other * q(i, k, j) for j in range(2))
        assert log_prod[i].item() == pytest.approx(math.log(prod), rel=1e-12)


def test_stratified_weights_are_the_papers():
    """B = 4, N = 100, M = 3: 1/N on the diagonal, (N - M)/(N M) once per row at (i, i+1 mod B), 1/M
    elsewhere; every row sums to 1 (the authors' matrix fills columns 0 and 1 instead)."""
    w = stratified_log_weights(4, 100, torch.float64).exp()
    strat = (100 - 3) / (100 * 3)
    expected = torch.tensor(
        [
            [0.01, strat, 1 / 3, 1 / 3],
            [1 / 3, 0.01, strat, 1 / 3],
            [1 / 3, 1 / 3, 0.01, strat],
            [strat, 1 / 3, 1 / 3, 0.01],
        ],
        dtype=torch.float64,
    )
    torch.testing.assert_close(w, expected)
    torch.testing.assert_close(w.sum(1), torch.ones(4, dtype=torch.float64))


def built(registry, dataset="digits", **variant):
    raw = {
        "variant": {"name": "tcvae", "latent_dim": 3, **variant},
        "dataset": dataset,
        "encoder": SMALL,
        "generator": SMALL,
        "train": {"batch_size": 16, "progress": False, "holdout": 0.1},
    }
    return build(resolve(raw, registry))


def batch_of(b, n=16):
    x = b.dataset.tensors[0][:n]
    return Batch(x, torch.zeros(n, dtype=torch.long))


@pytest.mark.parametrize("estimator", ["mws", "mss"])
def test_objective_is_the_weighted_decomposition(registry, estimator):
    """loss = mean(rec + alpha MI + beta TC + gamma DWKL) at the phase's own sample, with the terms
    recomputed here from the posterior; with alpha = beta = gamma = 1 they telescope to the
    single-sample KL log q(z|x) - log p(z) whatever the estimator."""
    b = built(registry, alpha=0.5, beta=6.0, gamma=2.0, estimator=estimator)
    m = Modules(b.model.modules)
    batch = batch_of(b)
    torch.manual_seed(0)
    out = b.model.phases[0].step(batch, m)
    z, mu, logvar = out.context["z"], out.context["mu"], out.context["logvar"]
    log_qz_x = gaussian_log_density(z, mu, logvar)
    log_qz, log_prod = aggregate_log_densities(z, mu, logvar, 1617, estimator)
    log_pz = -0.5 * (z.square() + math.log(2 * math.pi)).sum(1)
    mi, tc, dw = log_qz_x - log_qz, log_qz - log_prod, log_prod - log_pz
    rec = 0.5 * (m.generator(z) - batch.x).flatten(1).square().sum(1) + 32 * math.log(2 * math.pi)
    expected = (rec + 0.5 * mi + 6.0 * tc + 2.0 * dw).mean()
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    for key, value in (("mutual_information", mi), ("total_correlation", tc), ("dimension_kl", dw)):
        torch.testing.assert_close(out.logs[key], value.detach())
    torch.testing.assert_close(mi + tc + dw, log_qz_x - log_pz)  # the telescoping sum
    closed = 0.5 * (mu.square() + logvar.exp() - 1 - logvar).sum(1)
    torch.testing.assert_close(out.logs["kl"], closed.detach())
    torch.testing.assert_close(out.logs["elbo"], -(out.logs["reconstruction"] + closed.detach()))


def test_unit_weights_recover_the_vae_kl_in_expectation():
    """alpha = beta = gamma = 1: the sum of the three estimates is log q(z|x) - log p(z) at
    z ~ q(z|x), whose mean over many draws is the closed-form KL of the VAE,
    0.5 sum_j (mu_j^2 + s_j^2 - 1 - log s_j^2), within 5 standard errors."""
    mu = torch.tensor([[0.5, -1.0], [1.5, 0.0], [0.0, 0.3]], dtype=torch.float64)
    logvar = torch.tensor(
        [[0.0, math.log(0.5)], [math.log(2.0), 0.0], [math.log(0.1), math.log(3.0)]], dtype=torch.float64
    )
    kl = 0.5 * (mu.square() + logvar.exp() - 1 - logvar).sum(1)  # (3,)
    g = torch.Generator().manual_seed(0)
    draws = 4000
    z = mu + (0.5 * logvar).exp() * torch.randn(draws, 3, 2, generator=g, dtype=torch.float64)
    totals = []
    for s in z:  # a minibatch of the same 3 examples per draw, each with its own estimate
        log_qz, log_prod = aggregate_log_densities(s, mu, logvar, 100, "mws")
        log_qz_x = gaussian_log_density(s, mu, logvar)
        log_pz = -0.5 * (s.square() + math.log(2 * math.pi)).sum(1)
        totals.append((log_qz_x - log_qz) + (log_qz - log_prod) + (log_prod - log_pz))
    t = torch.stack(totals)  # (draws, 3)
    se = t.std(0) / math.sqrt(draws)
    assert ((t.mean(0) - kl).abs() < 5 * se).all(), (t.mean(0), kl, se)


def test_dataset_size_is_the_training_examples(registry):
    assert built(registry).model.sample.__self__.size == 1797 - 180  # digits less its 10% held out
    assert built(registry, dataset_size=50).model.sample.__self__.size == 50


def test_refusals(registry, tmp_path, run_cli):
    with pytest.raises(GenfwError, match="prior 'spike_slab' cannot be used with tcvae"):
        build(resolve({"variant": "tcvae", "dataset": "digits", "prior": "spike_slab"}, registry))
    b = built(registry, estimator="mss", dataset_size=10)
    with pytest.raises(GenfwError, match="mss needs a batch of at least 2 and at most N \\+ 1 = 11"):
        b.model.phases[0].step(batch_of(b), Modules(b.model.modules))
    with pytest.raises(GenfwError, match="estimator must be one of"):
        resolve({"variant": {"name": "tcvae", "estimator": "mc"}}, registry)


def test_tcvae_trains_samples_and_draws_on_digits(tmp_path, run_cli):
    run = tmp_path / "tc"
    code, out, err = run_cli(
        "train", "--plugin", "tcvae", "--plugin.latent_dim", "2", "--steps", "6", "--out", run, "--encoder.hidden", "[16]",
        "--generator.hidden", "[16]", "--metric.autoencoding.importance_samples", "4", *QUICK,
    )  # fmt: skip
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    for key in ("mutual_information", "total_correlation", "dimension_kl", "kl", "elbo"):
        assert math.isfinite(summary[f"autoencoder/{key}"]), key
    for key in ("reconstruction", "elbo", "log_likelihood", "latent_mmd", "near_zero"):
        assert math.isfinite(summary[f"autoencoding/{key}"]), key
    assert run_cli("sample", run, "-n", "4", "--out", tmp_path / "s.png")[0] == 0
    code, out, err = run_cli("eval", run, "--reconstruct", "4", "--latent-plot", "--traverse", "0,1")
    assert code == 0, err
    assert out.strip().splitlines()[-3:] == [
        str(run / f) for f in ("reconstructions.png", "latent.png", "traversals.png")
    ]
