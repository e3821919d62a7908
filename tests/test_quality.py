"""Quality metrics: FID, IS, KID, precision/recall, density/coverage against reference formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import genfw
from genfw_plugins.metrics import quality as q

scipy_linalg = pytest.importorskip("scipy.linalg")


def _stats(f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return f.mean(0), np.cov(f, rowvar=False)


def fid_sqrtm(mu1, s1, mu2, s2, eps=1e-6):
    """pytorch-fid's calculate_frechet_distance (scipy sqrtm), restated."""
    diff = mu1 - mu2
    covmean = scipy_linalg.sqrtm(s1.dot(s2))
    if not np.isfinite(covmean).all():
        offset = np.eye(s1.shape[0]) * eps
        covmean = scipy_linalg.sqrtm((s1 + offset).dot(s2 + offset))
    covmean = covmean.real
    return diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)


def fid_eigvals(mu1, s1, mu2, s2):
    """torch-fidelity's fid_statistics_to_metric (complex eigenvalues of S1 S2), restated."""
    diff = mu1 - mu2
    tr_covmean = np.sum(np.sqrt(np.linalg.eigvals(s1.dot(s2)).astype(complex)).real)
    return diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2 * tr_covmean


@pytest.mark.parametrize(("n", "d"), [(200, 8), (500, 32), (40, 64), (30, 100), (1000, 128)])
def test_fid_agrees_with_sqrtm_and_eigvals(n, d):
    rng = np.random.default_rng(n * 1000 + d)
    mix = rng.normal(size=(d, d)) / math.sqrt(d)
    real = rng.normal(size=(n, d)) @ mix
    fake = rng.normal(size=(n + 7, d)) @ (mix + 0.3 * rng.normal(size=(d, d)) / math.sqrt(d)) + 0.2
    ours = q.fid_from_features(torch.from_numpy(real), torch.from_numpy(fake))
    stats = (*_stats(real), *_stats(fake))
    assert ours == pytest.approx(fid_sqrtm(*stats), rel=1e-6)
    assert ours == pytest.approx(fid_eigvals(*stats), rel=1e-6)
    # The Cholesky factor (positive definite S1) and R = sqrt(S1) by eigh give the same trace.
    s1, s2 = torch.from_numpy(stats[1]), torch.from_numpy(stats[3])
    assert q.trace_sqrt_product(s1, s2) == pytest.approx(q.trace_sqrt_product(s1, s2, "eigh"), rel=1e-9)


@pytest.mark.parametrize(("n", "d", "power"), [(400, 512, 1.5), (200, 512, 2.0), (2000, 256, 2.0)])
def test_fid_agrees_on_decaying_spectra(n, d, power):
    # Features whose covariance has many small but real eigenvalues (as Inception features do):
    # they must be kept, not cut at a rank tolerance.
    rng = np.random.default_rng(n + d)
    decay = 1.0 / (1.0 + np.arange(d)) ** power
    real = rng.normal(size=(n, d)) @ (rng.normal(size=(d, d)) * decay)
    fake = rng.normal(size=(n, d)) @ (rng.normal(size=(d, d)) * decay) + 0.01
    ours = q.fid_from_features(torch.from_numpy(real), torch.from_numpy(fake))
    stats = (*_stats(real), *_stats(fake))
    assert ours == pytest.approx(fid_eigvals(*stats), rel=1e-6)
    assert ours == pytest.approx(fid_sqrtm(*stats), rel=1e-6)


def test_fid_hand_cases():
    # 1-D: (0 - 1)^2 + 4 + 9 - 2 sqrt(36) = 2
    fid = q.frechet_distance(
        torch.tensor([0.0]), torch.tensor([[4.0]]), torch.tensor([1.0]), torch.tensor([[9.0]])
    )
    assert fid == pytest.approx(2.0, abs=1e-12)
    # Diagonal covariances: sum (sqrt(a) - sqrt(b))^2 + |mu1 - mu2|^2
    a, b = torch.tensor([1.0, 4.0, 9.0]), torch.tensor([4.0, 4.0, 1.0])
    mu1, mu2 = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 2.0, 0.0])
    expected = float(((a.sqrt() - b.sqrt()) ** 2).sum() + ((mu1 - mu2) ** 2).sum())
    assert q.frechet_distance(mu1, a.diag(), mu2, b.diag()) == pytest.approx(expected, abs=1e-12)
    # The same features: 0 up to rounding, with n < d too (singular covariances; each set is its
    # own factor there, so no square roots of rounding eigenvalues, ~1e-8 each, creep in).
    f = torch.randn(20, 50, generator=torch.Generator().manual_seed(0))
    _, s = q.feature_statistics(f)
    assert abs(q.fid_from_features(f, f)) < 1e-12 * float(s.trace())


def test_fid_statistics_are_float64_with_ddof_1():
    f = torch.tensor([[1.0, 2.0], [3.0, 0.0], [5.0, 1.0]])
    mu, sigma = q.feature_statistics(f)
    assert mu.dtype == sigma.dtype == torch.float64
    np.testing.assert_allclose(sigma.numpy(), np.cov(f.numpy(), rowvar=False), rtol=1e-12)
    # By BLAS syrk (half the work of a general product): exactly symmetric, np.cov's values.
    f = torch.from_numpy(np.random.default_rng(0).random((300, 100)).astype(np.float32))
    mu, sigma = q.feature_statistics(f)
    assert torch.equal(sigma, sigma.T)
    expected = np.cov(f.numpy().astype(np.float64), rowvar=False)
    np.testing.assert_allclose(sigma.numpy(), expected, rtol=1e-12, atol=1e-16)
    np.testing.assert_allclose(mu.numpy(), f.double().numpy().mean(0), rtol=1e-14)


def pooled_relu_features(n: int, d: int, decay: float, seed: int, perturb: float = 0.0) -> np.ndarray:
    """Like Inception's pool3 features: float32, non-negative, each the mean of 4 ReLUs of
    correlated Gaussians whose covariance spectrum decays (mixing columns scaled by k^-decay)."""
    rng = np.random.default_rng(d)  # the mixing, shared by the sets of one d
    scale = (1.0 + np.arange(d)) ** -decay
    mix = rng.normal(size=(d, d)) * scale / math.sqrt(d)
    bias = 0.5 * scale * rng.normal(size=d)
    rng = np.random.default_rng(seed)
    mix = mix + perturb * rng.normal(size=(d, d)) * scale / math.sqrt(d)
    pooled = np.mean([np.maximum(rng.normal(size=(n, d)) @ mix + bias, 0) for _ in range(4)], axis=0)
    return pooled.astype(np.float32)


@pytest.mark.parametrize(
    ("n_real", "n_fake", "d", "decay"),
    [
        (600, 500, 64, 0.5),  # N > d: the Cholesky factors of both covariances
        (1000, 800, 128, 2.0),  # close to singular: condition number 2e9, FID 7e-4 of the traces
        (1500, 1500, 128, 3.0),  # condition number 3e13
        (50, 70, 128, 0.5),  # N < d: both sets are their own factors
        (700, 60, 128, 1.0),  # one of each
        (40, 600, 128, 1.0),
    ],
)
def test_fid_agrees_with_pytorch_fid_on_pooled_relu_features(n_real, n_fake, d, decay):
    real = pooled_relu_features(n_real, d, decay, 1)
    fake = pooled_relu_features(n_fake, d, decay, 2, perturb=0.3)
    ours = q.fid_from_features(torch.from_numpy(real), torch.from_numpy(fake))
    # pytorch-fid: float64 activations, np.cov, sqrtm (measured: 1e-11 apart for N > d, 1e-7 for
    # N < d, where sqrtm's square roots of rounding noise in the null directions are the difference).
    reference = fid_sqrtm(*_stats(real.astype(np.float64)), *_stats(fake.astype(np.float64)))
    assert ours == pytest.approx(reference, rel=1e-6)
    # The metric: the real set's statistics from the cache (its features where N <= d).
    mu, sigma = q.feature_statistics(torch.from_numpy(real))
    entry = {"mu": mu, "sigma": sigma, "features": torch.from_numpy(real)}
    assert q.FID(None).compute(entry, torch.from_numpy(fake))["fid"] == pytest.approx(ours, rel=1e-9)


def _hadamard(n: int) -> np.ndarray:
    h = np.ones((1, 1))
    while h.shape[0] < n:
        h = np.block([[h, h], [h, -h]])
    return h


@pytest.mark.parametrize(("n", "d", "k"), [(16, 64, 15), (32, 64, 20), (16, 256, 15)])
def test_fid_of_fewer_samples_than_dimensions_is_exact(n, d, k):
    # A closed form: the centred sets are H diag(a) Q^T and H diag(b) Q^T, H (n, k) and Q (d, k)
    # orthogonal Hadamard columns (H's of mean 0), a_i = 2^-i, so S = n/(n-1) Q diag(a^2) Q^T: the
    # covariances commute, FID = n/(n-1) sum (a_i - b_i)^2, and every feature is exact in float32.
    # sqrtm and eigvals on np.cov are ~1e-6 off here, and so was genfw's former S^(1/2) by eigh
    # (4e-6 to 1.4e-5): the square roots of rounding noise in the d - k null directions.
    h = _hadamard(n)[:, 1 : k + 1]
    basis = _hadamard(d)[:, 3 : k + 3] / math.sqrt(d)
    a = 2.0 ** -np.arange(k)
    b = a * np.where(np.arange(k) % 2 == 0, 1.0, np.where(np.arange(k) % 3 == 0, 2.0, 0.5))
    real = torch.from_numpy((h * a) @ basis.T + 0.25).float()
    fake = torch.from_numpy((h * b) @ basis.T + 0.25).float()
    assert torch.equal(real.double(), torch.from_numpy((h * a) @ basis.T + 0.25))
    truth = n / (n - 1) * np.sum((a - b) ** 2)
    assert q.fid_from_features(real, fake) == pytest.approx(truth, rel=1e-12)
    mu, sigma = q.feature_statistics(real)
    fid = q.FID(None).compute({"mu": mu, "sigma": sigma, "features": real}, fake)["fid"]
    assert fid == pytest.approx(truth, rel=1e-12)


def test_fid_of_few_samples_decomposes_no_d_by_d_matrix(monkeypatch):
    # N <= d samples are their own covariance factor: an N x N problem however large d is, not an
    # eigendecomposition of a singular d x d covariance (Inception's d = 2048: seconds each).
    sizes = []
    for module, names in (
        (torch.linalg, ("eigh", "eigvalsh", "svd", "svdvals", "cholesky", "cholesky_ex")),
        (np.linalg, ("eigh", "eigvalsh", "eig", "eigvals", "svd", "cholesky")),
    ):
        for name in names:
            fn = getattr(module, name)
            spy = lambda a, *args, _fn=fn, **kw: sizes.append(max(a.shape)) or _fn(a, *args, **kw)  # noqa: E731
            monkeypatch.setattr(module, name, spy)
    rng = np.random.default_rng(0)
    real, fake = torch.from_numpy(rng.random((30, 512))), torch.from_numpy(rng.random((45, 512)))
    assert q.fid_from_features(real, fake) > 0
    assert sizes and max(sizes) <= 45


def test_trace_sqrt_product_refuses_an_unknown_method():
    s = torch.eye(3, dtype=torch.float64)
    with pytest.raises(genfw.GenfwError, match="'auto' or 'eigh'") as err:
        q.trace_sqrt_product(s, s, "cholesky")
    assert "\n" not in str(err.value)


def is_direct(logits: np.ndarray, splits: int) -> tuple[float, float]:
    """Salimans et al.'s definition, as OpenAI's improved-gan code computes it."""
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    n, scores = p.shape[0], []
    for i in range(splits):
        part = p[i * n // splits : (i + 1) * n // splits]
        py = part.mean(0, keepdims=True)
        kl = part * (np.log(part) - np.log(py))
        scores.append(np.exp(kl.sum(1).mean()))
    return float(np.mean(scores)), float(np.std(scores))


def test_inception_score_hand_cases_and_direct_formula():
    k = 7
    # Confident and balanced over k classes: IS = k; the same prediction everywhere: IS = 1.
    confident = 60.0 * torch.eye(k).repeat(10, 1)
    mean, std = q.inception_score(confident, splits=10)
    assert mean == pytest.approx(k, rel=1e-9) and std == pytest.approx(0, abs=1e-9)
    assert q.inception_score(torch.zeros(50, k), splits=5)[0] == pytest.approx(1.0, abs=1e-12)
    logits = np.random.default_rng(1).normal(size=(103, 12)) * 3
    ours = q.inception_score(torch.from_numpy(logits), splits=10)
    np.testing.assert_allclose(ours, is_direct(logits, 10), rtol=1e-10)
    with pytest.raises(genfw.GenfwError, match="splits=10"):
        q.inception_score(torch.zeros(5, 3), splits=10)


def mmd2_direct(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 (Gretton et al.) with KID's kernel k(a, b) = (a.b / d + 1)^3, by the sums."""
    d = x.shape[1]

    def k(a, b):
        return (a @ b / d + 1) ** 3

    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_kid_matches_the_unbiased_mmd_definition():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(12, 5)), rng.normal(size=(12, 5)) + 0.5
    # One subset of all samples: KID is exactly the unbiased MMD^2 of the two sets.
    mean, std = q.kernel_inception_distance(
        torch.from_numpy(x), torch.from_numpy(y), subsets=1, subset_size=12
    )
    assert mean == pytest.approx(mmd2_direct(x, y), rel=1e-10) and std == 0
    # Several subsets: the mean and std over subsets of that quantity, reproducibly.
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    a = q.kernel_inception_distance(xt, yt, subsets=5, subset_size=6, seed=3)
    assert a == q.kernel_inception_distance(xt, yt, subsets=5, subset_size=6, seed=3)
    g = torch.Generator().manual_seed(3)
    vals = []
    for _ in range(5):
        i, j = torch.randperm(12, generator=g)[:6], torch.randperm(12, generator=g)[:6]
        vals.append(mmd2_direct(x[i.numpy()], y[j.numpy()]))
    np.testing.assert_allclose(a, (np.mean(vals), np.std(vals)), rtol=1e-9)


def test_kid_with_fewer_samples_than_the_subset_size_says_what_to_change():
    with pytest.raises(genfw.GenfwError, match=r"subset_size=1000.*lower --metric.kid.subset_size"):
        q.kernel_inception_distance(torch.randn(500, 4), torch.randn(2000, 4))


def test_precision_recall_hand_case():
    real = torch.tensor([[0.0], [1.0], [2.0], [3.0], [10.0]])
    fake = torch.tensor([[0.5], [5.0], [20.0]])
    # k = 1: real radii 1, 1, 1, 1, 7 -> 0.5 and 5 are inside, 20 is not: precision 2/3.
    # fake radii 4.5, 4.5, 15 -> every real point is inside some fake ball: recall 1.
    assert q.precision_recall(real, fake, k=1) == pytest.approx((2 / 3, 1.0))
    # A ball includes its boundary (Kynkäänniemi et al.: distance <= radius).
    assert q.precision_recall(torch.tensor([[0.0], [1.0]]), torch.tensor([[2.0], [5.0]]), k=1)[0] == 0.5


def pr_direct(real: np.ndarray, fake: np.ndarray, k: int) -> tuple[float, float]:
    def radii(x):
        d = np.linalg.norm(x[:, None] - x[None], axis=-1)
        return np.sort(d, axis=1)[:, k]

    def inside(points, centres, r):
        d = np.linalg.norm(points[:, None] - centres[None], axis=-1)
        return np.mean([(d[i] <= r).any() for i in range(len(points))])

    return inside(fake, real, radii(real)), inside(real, fake, radii(fake))


def dc_direct(real: np.ndarray, fake: np.ndarray, k: int) -> tuple[float, float]:
    """Naeem et al. 2020, equations for density and coverage, by the sums."""
    n, m = len(real), len(fake)
    r = np.sort(np.linalg.norm(real[:, None] - real[None], axis=-1), axis=1)[:, k]
    inside = np.linalg.norm(real[:, None] - fake[None], axis=-1) < r[:, None]  # (N, M)
    density = sum(inside[i, j] for i in range(n) for j in range(m)) / (k * m)
    coverage = sum(inside[i].any() for i in range(n)) / n
    return density, coverage


@pytest.mark.parametrize("d", [2, 80])
def test_precision_recall_and_density_coverage_match_direct_implementations(d):
    rng = np.random.default_rng(d)
    real, fake = rng.normal(size=(60, d)), rng.normal(size=(45, d)) * 1.3 + 0.2
    rt, ft = torch.from_numpy(real), torch.from_numpy(fake)
    np.testing.assert_allclose(q.precision_recall(rt, ft, k=3), pr_direct(real, fake, 3), rtol=1e-12)
    np.testing.assert_allclose(q.density_coverage(rt, ft, k=5), dc_direct(real, fake, 5), rtol=1e-12)


def test_density_coverage_hand_case():
    real = torch.tensor([[0.0], [1.0], [2.0], [10.0]])
    fake = torch.tensor([[0.5], [1.5], [50.0]])
    # k = 1: radii 1, 1, 1, 8. 0.5 is strictly inside the balls of 0 and 1, 1.5 inside those of 1
    # and 2, 50 in none: density = 4 / (1 * 3). Covered: 0, 1, 2 (10's ball holds no fake): 3/4.
    assert q.density_coverage(real, fake, k=1) == pytest.approx((4 / 3, 0.75))
    # A ball excludes its boundary (Naeem et al.'s code: distance < radius): 2 is on 1's.
    assert q.density_coverage(torch.tensor([[0.0], [1.0]]), torch.tensor([[2.0]]), k=1) == (0.0, 0.0)


def test_nan_and_bad_shapes_are_one_line_errors():
    f = torch.randn(10, 3)
    f[4, 1] = float("nan")
    for fn in (q.fid_from_features, q.precision_recall, q.density_coverage):
        with pytest.raises(genfw.GenfwError, match="NaN") as err:
            fn(torch.randn(10, 3), f)
        assert "\n" not in str(err.value)
    with pytest.raises(genfw.GenfwError, match=r"\(N, d\) matrix"):
        q.precision_recall(torch.randn(10, 3, 2), torch.randn(10, 3, 2))
    with pytest.raises(genfw.GenfwError, match="one extractor"):
        q.fid_from_features(torch.randn(10, 3), torch.randn(10, 4))
