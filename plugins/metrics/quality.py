"""Sample-quality metrics on features: ``fid``, ``is``, ``kid``, ``precision_recall``,
``density_coverage``.

Each metric embeds generated samples (``ctx.sample``) and, except ``is``, real examples
(``ctx.real``) with a feature extractor (an ``extractor`` plugin: ``inception`` by default, the
standard FID network; ``classifier`` for a data set's own classifier from ``genfw
train-evaluator``; ``raw`` for the samples themselves), in batches with a progress bar.

Definitions (the papers'; the formulas below are the functions of this module):

- **FID** (Heusel et al. 2017): ``|mu_r - mu_g|^2 + Tr(S_r) + Tr(S_g) - 2 Tr((S_r S_g)^(1/2))``,
  means and covariances (``ddof=1``) in float64, covariances by BLAS ``syrk``. The trace term is
  the sum of the singular values of ``F_r^T F_g`` for factors ``S = F F^T``: a set of ``N <= d``
  samples is its own factor (its centred features; an ``N x N`` SVD, exact where the square roots
  of rounding noise in a singular covariance's null directions put ``sqrtm`` up to 1e-6 off), a larger
  one the Cholesky factor of its covariance (``sum sqrt(eigvalsh(W W^T))``, ``W = L_r^T L_g``),
  ``S^(1/2)`` by ``eigh`` without one (see :func:`trace_sqrt_product`). It agrees with pytorch-fid's
  ``np.cov`` + ``scipy.linalg.sqrtm`` and torch-fidelity's complex ``eigvals`` to 1e-6 relative
  (tests; 1e-11 for ``N > d``), several times faster end to end (``benchmarks/fid.py``).
- **IS** (Salimans et al. 2016): ``exp(E_x KL(p(y|x) || p(y)))`` on ``splits`` (10) contiguous
  splits of the samples, ``p(y)`` the split's mean; mean and standard deviation (``ddof=0``) over
  splits, as OpenAI's code. With ``inception`` the logits are the 1008 unbiased ones.
- **KID** (Binkowski et al. 2018): unbiased MMD^2 with the kernel ``(x.y / d + 1)^3``, averaged
  over ``subsets`` (100) random subsets of ``subset_size`` (1000) samples of each set; mean and
  standard deviation over subsets.
- **Precision/recall** (Kynkäänniemi et al. 2019), ``k = 3``: the real manifold is the union of
  balls around each real feature with radius its distance to its k-th nearest real neighbour;
  precision is the share of generated samples inside it, recall the share of real samples inside
  the generated manifold (built the same way). Inside means distance ``<=`` radius.
- **Density/coverage** (Naeem et al. 2020), ``k = 5``: density ``= (1 / kM) sum_j sum_i 1[Y_j in
  B(X_i, NND_k(X_i))]``, coverage ``= (1/N) sum_i 1[exists j: Y_j in B(X_i, NND_k(X_i))]`` with the
  real ``X_i`` (N) and generated ``Y_j`` (M); inside means distance ``<`` radius (their code).

Nearest-neighbour radii include the point itself as its 0-th neighbour, as both papers' code
does. Distances are float64; for more than 64 dimensions they use the matrix-product expansion.

Real features and their statistics are computed once per (extractor identity, real data
content, sample count) and cached under ``$GENFW_CACHE/reference`` (default
``~/.cache/genfw/reference``); a cached file is keyed by a hash of all three, so a changed data
set, classifier or weights file never reuses stale numbers.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable
from typing import Any, ClassVar

import attrs
import numpy as np
import safetensors.torch
import torch
from torch import Tensor

import genfw
from genfw import validators as check
from genfw.hookspecs import Register
from genfw_plugins.extractors._common import cache_dir, check_finite

# --- the formulas ------------------------------------------------------------------------------------


# FID. For any factors S1 = F1 F1^T and S2 = F2 F2^T, the eigenvalues of S1 S2 are those of
# (F1^T F2)(F1^T F2)^T, so Tr((S1 S2)^(1/2)) is the sum of the singular values of F1^T F2 (its
# nuclear norm). The cheapest factor of a set of N <= d samples is the set itself (centred, over
# sqrt(N - 1)), of a larger one the Cholesky factor of its covariance, S^(1/2) from eigh for a
# covariance that has none (singular). Float64 throughout.


def _centre(features: Tensor) -> tuple[Tensor, np.ndarray]:
    """Mean ``(d,)`` and centred rows ``(N, d)`` (numpy) of ``features (N, d)``, in float64."""
    if features.dim() != 2:
        raise genfw.GenfwError(f"features must be a (N, d) matrix, got shape {tuple(features.shape)}")
    if features.shape[0] < 2:
        raise genfw.GenfwError(
            f"FID needs at least 2 samples per set, got {features.shape[0]}; raise num_samples"
        )
    c = features.detach().to("cpu", torch.float64, copy=True).numpy()  # centred in place below
    mu = c.mean(0)
    if not np.isfinite(mu).all():  # a NaN or infinity makes its column's mean one
        check_finite(features, "features")
        raise genfw.GenfwError("features overflow float64 sums; scale them down")
    c -= mu
    return torch.from_numpy(mu), c


def _gram(x: np.ndarray) -> np.ndarray:
    """``x^T x`` for ``x (m, k)``. numpy hands ``a.T @ a`` of one array to BLAS ``syrk``: half the
    work of a general product (torch's ``mm`` does the whole product), and exactly symmetric."""
    return x.T @ x


def feature_statistics(features: Tensor) -> tuple[Tensor, Tensor]:
    """Mean ``(d,)`` and covariance ``(d, d)`` (``ddof=1``) of ``features (N, d)``, in float64."""
    mu, c = _centre(features)
    return mu, torch.from_numpy(_gram(c) / (c.shape[0] - 1))


def _cholesky(s: np.ndarray) -> np.ndarray | None:
    """The lower Cholesky factor of ``s``, or None when ``s`` is not numerically positive definite."""
    factor, info = torch.linalg.cholesky_ex(torch.from_numpy(s))
    return factor.numpy() if int(info) == 0 else None


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    """``s^(1/2)`` of a symmetric PSD ``s`` by ``eigh``, negative rounding eigenvalues taken as 0."""
    w, v = torch.linalg.eigh(torch.from_numpy(s))
    return ((v * w.clamp_min(0).sqrt()) @ v.T).numpy()


def _sum_sqrt_eigvalsh(m: np.ndarray) -> float:
    """``sum sqrt(max(eigvalsh(m), 0))`` of a symmetric PSD ``m`` (LAPACK ``syevd``). Clipped at 0,
    not at a rank tolerance: small true eigenvalues (a decaying spectrum) count."""
    m = (m + m.T) / 2  # exact symmetry for the symmetric solver
    return float(torch.linalg.eigvalsh(torch.from_numpy(m)).clamp_min(0).sqrt().sum())


def trace_sqrt_product(s1: Tensor, s2: Tensor, method: str = "auto") -> float:
    """``Tr((S1 S2)^(1/2))`` of covariances ``(d, d)`` by a symmetric eigensolver: the eigenvalues of
    ``S1 S2`` are those of the symmetric PSD ``F^T S2 F`` for ``S1 = F F^T``.

    ``method="auto"``: with the Cholesky factors of both, ``F^T S2 F = W W^T`` with ``W = L1^T L2``
    (one product and a ``syrk``); with that of one only (the other singular), ``L^T S L``; with
    none, or ``method="eigh"``, ``F = S1^(1/2)`` from ``eigh`` (several times slower). All give one
    value to rounding (tests). Float64.
    """
    if method not in ("auto", "eigh"):
        raise genfw.GenfwError(f"trace_sqrt_product's method is 'auto' or 'eigh', got {method!r}")
    a, b = (s.detach().double().cpu().numpy() for s in (s1, s2))
    if a.ndim != 2 or a.shape[0] != a.shape[1] or a.shape != b.shape:
        raise genfw.GenfwError(
            f"FID compares covariances of one size (d, d), got {a.shape} and {b.shape}; use one extractor"
        )
    la, lb = (_cholesky(a), _cholesky(b)) if method == "auto" else (None, None)
    if la is not None and lb is not None:
        return _sum_sqrt_eigvalsh(_gram((la.T @ lb).T))  # W W^T
    if la is None and lb is not None:
        a, b, la = b, a, lb
    f = _psd_sqrt(a) if la is None else la
    return _sum_sqrt_eigvalsh(f.T @ b @ f)


@attrs.frozen
class _Gaussian:
    """Mean ``(d,)``, trace of the covariance, and either the covariance ``sigma (d, d)`` or, for
    ``N <= d`` samples, the factor ``x (d, N)`` of it that the centred samples are."""

    mu: np.ndarray
    trace: float
    sigma: np.ndarray | None = None
    x: np.ndarray | None = None

    @classmethod
    def of(cls, features: Tensor, statistics: tuple[Tensor, Tensor] | None = None) -> _Gaussian:
        """The set ``features (N, d)``; ``statistics``: its mean and covariance, if already known."""
        if features.dim() == 2 and features.shape[0] > features.shape[1]:
            return cls.of_statistics(*(statistics or feature_statistics(features)))
        mu, c = _centre(features)
        x = c.T / np.sqrt(c.shape[0] - 1)
        return cls(mu.numpy(), float(np.vdot(x, x)), x=x)

    @classmethod
    def of_statistics(cls, mu: Tensor, sigma: Tensor) -> _Gaussian:
        sigma = sigma.detach().double().cpu().numpy()
        return cls(mu.detach().double().cpu().numpy(), float(np.trace(sigma)), sigma=sigma)


def _trace_sqrt(p: _Gaussian, q: _Gaussian) -> float:
    """``Tr((S_p S_q)^(1/2))``. With a set's own factor ``x (d, N)``: the singular values of
    ``F_q^T x`` by an SVD (the eigenvalues of its square lose the small singular values of a
    decaying spectrum to rounding: 1e-5 off in tests); with two covariances, which are squares
    already, :func:`trace_sqrt_product` (as exact as an SVD there, several times faster)."""
    if p.x is None:
        p, q = q, p
    if p.x is None:
        return trace_sqrt_product(torch.from_numpy(p.sigma), torch.from_numpy(q.sigma))
    if q.x is not None:
        f = q.x
    else:
        f = _cholesky(q.sigma)
        f = _psd_sqrt(q.sigma) if f is None else f
    return float(torch.linalg.svdvals(torch.from_numpy(f.T @ p.x)).sum())


def _frechet(p: _Gaussian, q: _Gaussian) -> float:
    if p.mu.shape != q.mu.shape:
        raise genfw.GenfwError(
            f"FID compares features of one size: got {p.mu.shape} and {q.mu.shape}; use one extractor"
        )
    diff = p.mu - q.mu
    return float(diff @ diff + p.trace + q.trace - 2 * _trace_sqrt(p, q))


def frechet_distance(mu1: Tensor, s1: Tensor, mu2: Tensor, s2: Tensor) -> float:
    """The Fréchet distance between ``N(mu1, S1)`` and ``N(mu2, S2)``, in float64."""
    return _frechet(_Gaussian.of_statistics(mu1, s1), _Gaussian.of_statistics(mu2, s2))


def fid_from_features(real: Tensor, fake: Tensor) -> float:
    """FID of two sets of features ``(N, d)``: each set's cheapest factor (see above), float64."""
    return _frechet(_Gaussian.of(real), _Gaussian.of(fake))


def inception_score(logits: Tensor, splits: int = 10) -> tuple[float, float]:
    """Mean and standard deviation over ``splits`` contiguous splits of ``exp(E KL(p(y|x) || p(y)))``."""
    logits = _as_features(logits, "logits")
    n = logits.shape[0]
    if n < splits:
        raise genfw.GenfwError(f"IS needs at least splits={splits} samples, got {n}; raise num_samples")
    logp = torch.log_softmax(logits, dim=1)
    scores = []
    for i in range(splits):
        part = logp[i * n // splits : (i + 1) * n // splits]
        log_py = torch.logsumexp(part, 0) - np.log(part.shape[0])  # log of the split's mean p(y)
        kl = (part.exp() * (part - log_py)).sum(1).mean()
        scores.append(float(kl.exp()))
    s = np.asarray(scores)
    return float(s.mean()), float(s.std())


def polynomial_mmd2(
    x: Tensor, y: Tensor, degree: int = 3, gamma: float | None = None, coef0: float = 1.0
) -> float:
    """Unbiased MMD^2 between ``x (m, d)`` and ``y (n, d)`` with the kernel ``(gamma x.y + coef0)^degree``."""
    x, y = x.double(), y.double()
    gamma = 1.0 / x.shape[1] if gamma is None else gamma
    kxx = (gamma * (x @ x.T) + coef0) ** degree
    kyy = (gamma * (y @ y.T) + coef0) ** degree
    kxy = (gamma * (x @ y.T) + coef0) ** degree
    m, n = x.shape[0], y.shape[0]
    return float(
        (kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
        + (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
        - 2 * kxy.mean()
    )


def kernel_inception_distance(
    real: Tensor,
    fake: Tensor,
    subsets: int = 100,
    subset_size: int = 1000,
    degree: int = 3,
    gamma: float | None = None,
    coef0: float = 1.0,
    seed: int = 0,
) -> tuple[float, float]:
    """KID: mean and standard deviation of :func:`polynomial_mmd2` over random subsets."""
    real, fake = _as_features(real, "real features"), _as_features(fake, "generated features")
    smallest = min(real.shape[0], fake.shape[0])
    if smallest < subset_size:
        raise genfw.GenfwError(
            f"KID draws subsets of subset_size={subset_size} samples but got {smallest} "
            f"({'real' if real.shape[0] == smallest else 'generated'}); lower --metric.kid.subset_size "
            f"or raise --metric.kid.num_samples"
        )
    g = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(subsets):
        i = torch.randperm(real.shape[0], generator=g)[:subset_size]
        j = torch.randperm(fake.shape[0], generator=g)[:subset_size]
        values.append(polynomial_mmd2(real[i], fake[j], degree, gamma, coef0))
    v = np.asarray(values)
    return float(v.mean()), float(v.std())


def pairwise_distances(a: Tensor, b: Tensor) -> Tensor:
    """Euclidean distances ``(len(a), len(b))`` in float64."""
    mode = "donot_use_mm_for_euclid_dist" if a.shape[1] <= 64 else "use_mm_for_euclid_dist"
    return torch.cdist(a.double(), b.double(), compute_mode=mode)


def _row_chunks(n: int, cols: int) -> range:
    step = max(1, min(n, 2**24 // max(cols, 1)))  # about 128 MiB of float64 per block
    return range(0, n, step)


def knn_radii(x: Tensor, k: int) -> Tensor:
    """Distance of each row of ``x`` to its k-th nearest neighbour in ``x`` (itself is the 0-th)."""
    if x.shape[0] <= k:
        raise genfw.GenfwError(f"k={k} nearest neighbours need more than {k} samples, got {x.shape[0]}")
    chunks = _row_chunks(x.shape[0], x.shape[0])
    out = [pairwise_distances(x[s : s + chunks.step], x).kthvalue(k + 1, dim=1).values for s in chunks]
    return torch.cat(out)


def _inside(points: Tensor, centres: Tensor, radii: Tensor, strict: bool) -> Tensor:
    """Per point: how many balls ``B(centres_i, radii_i)`` contain it."""
    counts = []
    chunks = _row_chunks(points.shape[0], centres.shape[0])
    for s in chunks:
        d = pairwise_distances(points[s : s + chunks.step], centres)
        inside = d < radii[None] if strict else d <= radii[None]
        counts.append(inside.sum(1))
    return torch.cat(counts)


def precision_recall(real: Tensor, fake: Tensor, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019)."""
    real, fake = _as_features(real, "real features"), _as_features(fake, "generated features")
    precision = (_inside(fake, real, knn_radii(real, k), strict=False) > 0).double().mean()
    recall = (_inside(real, fake, knn_radii(fake, k), strict=False) > 0).double().mean()
    return float(precision), float(recall)


def density_coverage(real: Tensor, fake: Tensor, k: int = 5) -> tuple[float, float]:
    """Density and coverage (Naeem et al. 2020)."""
    real, fake = _as_features(real, "real features"), _as_features(fake, "generated features")
    radii = knn_radii(real, k)
    density = _inside(fake, real, radii, strict=True).double().sum() / (k * fake.shape[0])
    nearest = []
    chunks = _row_chunks(real.shape[0], fake.shape[0])
    for s in chunks:
        nearest.append(pairwise_distances(real[s : s + chunks.step], fake).min(1).values)
    coverage = (torch.cat(nearest) < radii).double().mean()
    return float(density), float(coverage)


def _as_features(x: Tensor, what: str) -> Tensor:
    if x.dim() != 2:
        raise genfw.GenfwError(f"{what} must be a (N, d) matrix, got shape {tuple(x.shape)}")
    check_finite(x, what)
    return x.double()


# --- features of samples -----------------------------------------------------------------------------


def build_extractor(name: str, weights: str, metric: str, options: dict[str, Any] | None = None) -> Any:
    from genfw.plugins import get_registry

    options = {**(options or {}), **({"weights": weights} if weights else {})}
    where = f"metrics.{metric}.extractor_options"
    extractor = get_registry().spec("extractor", name, options, where=where).build()
    if not callable(getattr(extractor, "features", None)) or not isinstance(
        getattr(extractor, "identity", None), str
    ):
        raise genfw.GenfwError(
            f"extractor '{name}' does not follow the extractor contract (features(x) and identity: str, "
            f"see genfw_register_extractors); fix the plugin or choose another with --metric.{metric}.extractor"
        )
    return extractor


def extract(
    extractor: Any,
    x: Tensor,
    *,
    method: str = "features",
    batch_size: int = 50,
    device: torch.device | str = "cpu",
    progress: bool = True,
    desc: str = "features",
) -> Tensor:
    """``extractor.<method>`` over ``x`` in batches on ``device``; a float32 CPU tensor ``(N, d)``."""
    fn = getattr(extractor, method, None)
    if fn is None:
        raise genfw.GenfwError(
            f"extractor {getattr(extractor, 'identity', type(extractor).__name__)} has no {method}(); "
            f"the Inception Score needs class logits: use --metric.is.extractor inception or classifier"
        )
    check_finite(
        x.reshape(x.shape[0], -1) if x.dim() > 1 else x[:, None], desc.replace("features", "samples")
    )
    extractor.to(device)
    out = []
    from tqdm.auto import tqdm

    starts = range(0, x.shape[0], batch_size)
    for s in tqdm(starts, desc=desc, disable=not progress, leave=False, file=sys.stderr):
        out.append(fn(x[s : s + batch_size].to(device)).float().cpu())
    feats = torch.cat(out) if out else torch.empty(0, 0)
    check_finite(feats, f"{desc} (extractor output)")
    return feats


def _fingerprint(x: Tensor) -> str:
    h = hashlib.sha256(str(tuple(x.shape)).encode())
    h.update(x.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


def reference_features(
    real: Tensor, extractor: Any, *, method: str, batch_size: int, device: Any, progress: bool
) -> dict[str, Tensor]:
    """Features (and for ``features``, their mean and covariance) of real data, cached on disk."""
    key = json.dumps(
        {"extractor": extractor.identity, "method": method, "data": _fingerprint(real)}, sort_keys=True
    )
    path = cache_dir() / "reference" / f"{hashlib.sha256(key.encode()).hexdigest()[:40]}.safetensors"
    if path.is_file():
        try:
            return safetensors.torch.load_file(str(path))
        except Exception:  # a damaged cache file is recomputed, never trusted
            pass
    feats = extract(
        extractor, real, method=method, batch_size=batch_size, device=device, progress=progress,
        desc="real features",
    )  # fmt: skip
    entry = {"features": feats.contiguous()}
    if method == "features":
        mu, sigma = feature_statistics(feats)
        entry.update(mu=mu.contiguous(), sigma=sigma.contiguous())
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        safetensors.torch.save_file(entry, str(tmp), metadata={"key": key})
        os.replace(tmp, path)
    except OSError:  # a read-only cache only costs time
        pass
    return entry


class _LastContext:
    """Generated-sample features of the last :class:`genfw.EvalContext`, so metrics evaluated
    together embed the same samples once (they draw the same samples: the loop seeds each metric
    alike)."""

    ctx: Any = None
    entries: ClassVar[dict[tuple, Tensor]] = {}

    @classmethod
    def get(cls, ctx: Any, key: tuple, make: Callable[[], Tensor]) -> Tensor:
        if cls.ctx is not ctx:
            cls.ctx, cls.entries = ctx, {}
        if key not in cls.entries:
            cls.entries[key] = make()
        return cls.entries[key]


# --- the metrics -------------------------------------------------------------------------------------


def _extractor_name(_: object, attribute: attrs.Attribute, value: str) -> None:
    if not value:
        raise ValueError(f"{attribute.name} must name a registered extractor (genfw list extractor)")


@attrs.define
class FeatureOptions:
    extractor: str = attrs.field(default="inception", validator=_extractor_name)
    """Feature extractor (genfw list extractor): inception (standard), classifier (genfw train-evaluator), raw."""
    weights: str = ""
    """Weights file of the extractor (empty: the extractor's default lookup)."""
    extractor_options: dict[str, Any] = attrs.field(factory=dict)
    """Other options of the extractor (genfw list extractor), e.g. {quantize: false}."""
    num_samples: int = attrs.field(default=10000, validator=check.at_least(2))
    """Generated samples, and real examples (all of them if the data set has fewer)."""
    batch_size: int = attrs.field(default=50, validator=check.at_least(1))
    """Samples per batch through the extractor."""
    progress: bool = True
    """Progress bar while extracting features."""


class FeatureMetric:
    name: ClassVar[str] = ""
    method: ClassVar[str] = "features"
    needs_real: ClassVar[bool] = True

    def __init__(self, options: Any) -> None:
        self.options = options

    def fake_features(self, ctx: genfw.EvalContext, extractor: Any) -> Tensor:
        o = self.options

        def make() -> Tensor:
            return extract(
                extractor, ctx.sample(o.num_samples), method=self.method, batch_size=o.batch_size,
                device=ctx.device, progress=o.progress, desc="generated features",
            )  # fmt: skip

        return _LastContext.get(ctx, (extractor.identity, self.method, o.num_samples), make)

    def real_features(self, ctx: genfw.EvalContext, extractor: Any) -> dict[str, Tensor]:
        o = self.options
        return reference_features(
            ctx.real(o.num_samples), extractor, method=self.method, batch_size=o.batch_size,
            device=ctx.device, progress=o.progress,
        )  # fmt: skip

    def __call__(self, ctx: genfw.EvalContext) -> dict[str, float]:
        o = self.options
        extractor = build_extractor(o.extractor, o.weights, self.name, o.extractor_options)
        fake = self.fake_features(ctx, extractor)
        real = self.real_features(ctx, extractor) if self.needs_real else {}
        return self.compute(real, fake)

    def compute(self, real: dict[str, Tensor], fake: Tensor) -> dict[str, float]:
        raise NotImplementedError


class FID(FeatureMetric):
    """Fréchet Inception Distance (Heusel et al. 2017), float64, symmetric eigensolvers."""

    name = "fid"

    def compute(self, real: dict[str, Tensor], fake: Tensor) -> dict[str, float]:
        reference = _Gaussian.of(real["features"], (real["mu"], real["sigma"]))
        return {"fid": _frechet(reference, _Gaussian.of(fake))}


@attrs.define
class ISOptions(FeatureOptions):
    splits: int = attrs.field(default=10, validator=check.at_least(1))
    """Splits of the samples; mean and std of the score over them (10 in Salimans et al.)."""


class InceptionScore(FeatureMetric):
    """Inception Score (Salimans et al. 2016): 10 splits, mean and std."""

    name = "is"
    method = "logits"
    needs_real = False

    def compute(self, real: dict[str, Tensor], fake: Tensor) -> dict[str, float]:
        mean, std = inception_score(fake, self.options.splits)
        return {"mean": mean, "std": std}


@attrs.define
class KIDOptions(FeatureOptions):
    subsets: int = attrs.field(default=100, validator=check.at_least(1))
    """Random subsets to average MMD^2 over."""
    subset_size: int = attrs.field(default=1000, validator=check.at_least(2))
    """Samples of each set in a subset."""
    degree: int = attrs.field(default=3, validator=check.at_least(1))
    """Degree of the polynomial kernel (gamma x.y + coef0)^degree."""
    gamma: float = attrs.field(default=0.0, validator=check.non_negative)
    """Kernel scale; 0 means 1 / feature dimension."""
    coef0: float = 1.0
    """Kernel offset."""
    seed: int = 0
    """Seed of the subsets, so the metric is reproducible."""


class KID(FeatureMetric):
    """Kernel Inception Distance (Binkowski et al. 2018): unbiased polynomial MMD^2 on subsets."""

    name = "kid"

    def compute(self, real: dict[str, Tensor], fake: Tensor) -> dict[str, float]:
        o = self.options
        mean, std = kernel_inception_distance(
            real["features"], fake, o.subsets, o.subset_size, o.degree, o.gamma or None, o.coef0, o.seed
        )
        return {"mean": mean, "std": std}


@attrs.define
class PROptions(FeatureOptions):
    k: int = attrs.field(default=3, validator=check.at_least(1))
    """Nearest neighbour that sets each ball's radius (3 in Kynkäänniemi et al.)."""


class PrecisionRecall(FeatureMetric):
    """Improved precision and recall (Kynkäänniemi et al. 2019), k = 3."""

    name = "precision_recall"

    def compute(self, real: dict[str, Tensor], fake: Tensor) -> dict[str, float]:
        p, r = precision_recall(real["features"], fake, self.options.k)
        return {"precision": p, "recall": r}


@attrs.define
class DCOptions(FeatureOptions):
    k: int = attrs.field(default=5, validator=check.at_least(1))
    """Nearest neighbour that sets each ball's radius (5 in Naeem et al.)."""


class DensityCoverage(FeatureMetric):
    """Density and coverage (Naeem et al. 2020), k = 5."""

    name = "density_coverage"

    def compute(self, real: dict[str, Tensor], fake: Tensor) -> dict[str, float]:
        d, c = density_coverage(real["features"], fake, self.options.k)
        return {"density": d, "coverage": c}


@genfw.hookimpl
def genfw_register_metrics(register: Register) -> None:
    register("fid", FID, options=FeatureOptions)
    register("is", InceptionScore, options=ISOptions)
    register("kid", KID, options=KIDOptions)
    register("precision_recall", PrecisionRecall, options=PROptions)
    register("density_coverage", DensityCoverage, options=DCOptions)
