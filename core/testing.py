"""Contract checks for genfw components, for built-ins and third-party plugins alike.

Every kind of component has a check that builds it from the registry with its default options
(or the options you give) and tests what its contract in :mod:`genfw.contracts` promises::

    from genfw.testing import check_loss, check_prior

    def test_my_loss_keeps_the_contract():
        check_loss("relativistic_average")

    def test_my_prior_keeps_the_contract():
        check_prior("laplace", options={"scale": 0.5})

A failed check raises ``AssertionError`` with a message that names the component and says what
is wrong; a check that cannot apply (a prior without a density, a metric whose weights are not
installed) calls ``pytest.skip`` with the reason. :func:`check` dispatches on the kind, and
:func:`contract_cases` lists ``(kind, name)`` for every registered component, which is how
genfw's own ``tests/test_contracts.py`` holds every built-in to the same contract.

Its pytest plugin (:mod:`genfw.pytest_plugin`, entry point ``genfw`` in the ``pytest11`` group)
makes these fixtures available without imports in any project with genfw installed:

- ``genfw_registry``: the registry of every installed plugin (yours included once installed);
- ``genfw_contract``: :func:`check`, e.g. ``genfw_contract("loss", "mine")``.

What each check does:

- **loss** (adversarial): ``critic_loss`` is a finite scalar with gradients to the real and the
  fake scores; ``generator_loss`` a finite scalar with gradients to the fake scores (given the
  real scores where the loss sets ``needs_real_scores``). (reconstruction): ``loss(x_hat, x)``
  is ``(B,)``, finite, differentiable in ``x_hat`` and per example (changing one example
  changes only its cost); one that declares ``likelihood = True`` is normalised: on one
  dimension ``exp(-loss)`` sums to 1 over ``x`` in ``{-1, 1}`` or integrates to 1 over the line.
- **prior**: ``sample`` has shape ``(n, dim)`` for several ``dim``, is reproducible for a
  ``torch.Generator`` and differs between seeds; ``log_prob`` is ``(n,)`` and finite on the
  prior's own samples; in 1-D and 2-D it integrates to 1 (point masses found in the samples are
  added) and the mass of a central box matches the share of samples in it; ``variance`` and
  ``kl_from_normal``, where defined, agree with Monte-Carlo estimates. A prior that declares
  ``needs_encoder`` is built with ``data`` (3-D points) and bound to a fixed random linear
  Gaussian encoder first; it must then be a ``torch.nn.Module`` whose ``forward()`` gives inputs
  of the data's shape, and ``log_prob`` must not depend on whether the posteriors of those inputs
  come from the bound encoder or are passed as ``encoded``.
- **regulariser**: attached to a phase of a registered variant that provides what it
  ``needs``, its penalty is a finite scalar whose gradient reaches the phase's parameters (or it
  is a constraint with ``after_step``).
- **metric**: a ``dict[str, float]``, identical for the same seed.
- **generator / critic / encoder**: forward shapes for image and point data, with and without
  classes (labels ``(B,)``), gradients to every parameter that takes part.
- **variant**: builds on a small data set exactly the phases it declares
  (``Variant.phases``, ``phases_for(options)``), in order, each with the declared ``provides``
  and training only declared ``players``; runs one step of every phase, with its own
  regularisers: every phase changes its parameters and its context holds every declared key;
  ``sample`` gives the data's shape.
- **callback**: builds from its options; ``load_state_dict(state_dict())`` keeps the state.
- **dataset**: items ``(x, y)`` with ``x`` of the declared ``shape``, ``kind`` one of image/points,
  labels in ``-1..num_classes-1`` (the check skips a data set whose files are absent).
- every kind: the options round-trip through cattrs (unstructure, structure, equal).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import attrs
import torch
from torch import Tensor, nn

from genfw.errors import GenfwError, choices
from genfw.hookspecs import KINDS
from genfw.model import Batch, DataInfo, EvalContext, Modules
from genfw.registry import Component, Registry, converter, structure_options

try:  # the checks work without pytest; the fixtures need it
    import pytest
except ImportError:  # pragma: no cover
    pytest = None  # type: ignore[assignment]

NETWORK_KINDS = ("generator", "critic", "encoder")


class ContractSkipped(Exception):
    """Raised instead of ``pytest.skip`` when pytest is not installed."""


def _skip(reason: str) -> None:
    if pytest is not None:
        pytest.skip(reason)
    raise ContractSkipped(reason)


def _fail(where: str, message: str) -> AssertionError:
    return AssertionError(f"{where}: {message}")


# --- finding components -------------------------------------------------------------------------


def default_registry() -> Registry:
    """The registry of every installed plugin (the CLI's)."""
    from genfw.plugins import get_registry

    return get_registry()


def registry_with(*plugins: Any) -> Registry:
    """The installed plugins plus ``plugins`` (modules with hook implementations), for testing a
    plugin before it is installed. A module already loaded through its entry point is not added
    twice."""
    from genfw.plugins import PluginHost

    host = PluginHost()
    host.load_entry_points()
    for plugin in plugins:
        if not host.pm.is_registered(plugin):
            host.add(plugin, getattr(plugin, "__name__", type(plugin).__name__))
    return host.registry


def contract_cases(registry: Registry | None = None) -> list[tuple[str, str]]:
    """``(kind, name)`` of every registered component, in ``genfw list`` order."""
    registry = default_registry() if registry is None else registry
    return [(kind, name) for kind in KINDS for name in registry.names(kind)]


def _component(kind: str, name: str, registry: Registry | None) -> Component:
    registry = default_registry() if registry is None else registry
    try:
        return registry.get(kind, name)
    except GenfwError as exc:
        raise AssertionError(str(exc)) from None


def _options(component: Component, options: Mapping[str, Any] | None) -> Any:
    try:
        return structure_options(component, dict(options or {}), where=component.kind)
    except Exception as exc:  # GenfwError, or a type cattrs cannot structure
        raise _fail(_where(component), f"its options do not validate: {type(exc).__name__}: {exc}") from None


def _where(component: Component) -> str:
    return f"{component.kind} '{component.name}' ({component.plugin.describe()})"


def check_options(kind: str, name: str, *, registry: Registry | None = None, options: Any = None) -> None:
    """The options class has defaults for every field (or ``options`` fills them) and its values
    round-trip through cattrs: ``structure(unstructure(o)) == o``."""
    component = _component(kind, name, registry)
    where = _where(component)
    if not attrs.has(component.options):
        raise _fail(where, f"options {component.options!r} is not an attrs class")
    opts = _options(component, options)
    plain = converter.unstructure(opts)
    if not isinstance(plain, dict):
        raise _fail(where, f"options unstructure to {type(plain).__name__}, expected a mapping")
    try:
        again = converter.structure(plain, component.options)
    except Exception as exc:
        raise _fail(where, f"options do not round-trip through cattrs: {plain!r} -> {exc}") from None
    if again != opts:
        raise _fail(where, f"options do not round-trip through cattrs: {opts!r} became {again!r}")


# --- helpers ------------------------------------------------------------------------------------


def _scalar(value: Any, where: str, what: str) -> Tensor:
    if not isinstance(value, Tensor):
        raise _fail(where, f"{what} returned {type(value).__name__}, expected a scalar tensor")
    if value.dim() != 0:
        raise _fail(where, f"{what} returned shape {tuple(value.shape)}, expected a scalar ()")
    if not value.is_floating_point() or not torch.isfinite(value):
        raise _fail(where, f"{what} returned {value!r}, expected a finite float")
    return value


def _has_gradient(t: Tensor | None) -> bool:
    return t is not None and bool(torch.isfinite(t).all()) and bool((t != 0).any())


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- losses -------------------------------------------------------------------------------------


def check_loss(name: str, *, registry: Registry | None = None, options: Any = None) -> None:
    """The loss contract (see the module docs); ``options`` are its options as in a config."""
    component = _component("loss", name, registry)
    where = _where(component)
    check_options("loss", name, registry=registry, options=options)
    loss = component.factory(_options(component, options))
    role = getattr(loss, "role", None)
    if role == "adversarial":
        _check_adversarial(loss, where)
    elif role == "reconstruction":
        _check_reconstruction(loss, where)
    else:
        raise _fail(where, f"role is {role!r}; a loss declares role 'adversarial' or 'reconstruction'")


def _check_adversarial(loss: Any, where: str) -> None:
    g = _gen(0)
    for batch in (8, 1):
        real = torch.randn(batch, generator=g).requires_grad_()
        fake = torch.randn(batch, generator=g).requires_grad_()
        value = _scalar(loss.critic_loss(real, fake), where, "critic_loss(real_scores, fake_scores)")
        value.backward()
        if batch > 1 and not (_has_gradient(real.grad) and _has_gradient(fake.grad)):
            raise _fail(
                where,
                "critic_loss must pass gradients to both the real and the fake scores "
                f"(real: {real.grad}, fake: {fake.grad})",
            )
        fake = fake.detach().clone().requires_grad_()
        real = real.detach()
        if getattr(loss, "needs_real_scores", False):
            value = loss.generator_loss(fake, real_scores=real)
            what = "generator_loss(fake_scores, real_scores=...)"
        else:
            value = loss.generator_loss(fake)
            what = "generator_loss(fake_scores) (set needs_real_scores = True if it needs the real scores)"
        _scalar(value, where, what).backward()
        if batch > 1 and not _has_gradient(fake.grad):
            raise _fail(where, f"generator_loss must pass gradients to the fake scores (got {fake.grad})")


def _check_reconstruction(loss: Any, where: str) -> None:
    g = _gen(0)
    for shape in ((3, 1, 4, 4), (3, 2)):
        x = torch.rand(shape, generator=g) * 2 - 1
        x_hat = (torch.rand(shape, generator=g) * 2 - 1).requires_grad_()
        cost = loss(x_hat, x)
        if not isinstance(cost, Tensor) or tuple(cost.shape) != (shape[0],):
            got = tuple(cost.shape) if isinstance(cost, Tensor) else type(cost).__name__
            raise _fail(
                where,
                f"loss(x_hat, x) on {shape} returned {got}, expected one cost per example ({shape[0]},)",
            )
        if not torch.isfinite(cost).all():
            raise _fail(where, f"loss(x_hat, x) is not finite: {cost}")
        cost.sum().backward()
        if not _has_gradient(x_hat.grad):
            raise _fail(where, "loss(x_hat, x) must pass gradients to x_hat")
        other = x.clone()
        other[0] = -other[0]
        changed = loss(x_hat.detach(), other)
        if not torch.equal(changed[1:], cost.detach()[1:]) or torch.equal(changed[0], cost.detach()[0]):
            raise _fail(where, "changing example 0 must change its cost and no other (costs are per example)")
    if getattr(loss, "likelihood", False):
        _check_normalised(loss, where)


def _check_normalised(loss: Any, where: str) -> None:
    """A loss declaring ``likelihood = True`` is ``-log p(x | x_hat)``: on one dimension,
    ``exp(-loss)`` sums to 1 over ``x`` in ``{-1, 1}`` (binary data) or integrates to 1 over
    ``x`` in ``[-50, 50]`` (trapezoids of width 1e-3; continuous data)."""
    x_hat = torch.tensor([[-0.3], [0.4]], dtype=torch.float64)
    with torch.no_grad():
        binary = sum(torch.exp(-loss(x_hat, torch.full_like(x_hat, v))) for v in (-1.0, 1.0))
        grid = torch.linspace(-50.0, 50.0, 100_001, dtype=torch.float64)  # (G,)
        density = torch.stack([torch.exp(-loss(row.expand(len(grid), 1), grid[:, None])) for row in x_hat])
        integral = torch.trapezoid(density, grid, dim=1)  # (2,)
    ok = [bool(torch.allclose(t, torch.ones_like(t), atol=1e-3)) for t in (binary, integral)]
    if not any(ok):
        raise _fail(
            where,
            "declares likelihood = True, but exp(-loss) is not a normalised density of x: on one dimension "
            f"it sums to {binary.tolist()} over x in {{-1, 1}} and integrates to {integral.tolist()} over "
            "the line (expected 1); a cost without its normalising constant leaves likelihood unset",
        )


# --- priors -------------------------------------------------------------------------------------


def check_prior(
    name: str, *, registry: Registry | None = None, options: Any = None, dims: tuple[int, ...] = (1, 2, 5, 16)
) -> None:
    """The prior contract (see the module docs)."""
    component = _component("prior", name, registry)
    where = _where(component)
    check_options("prior", name, registry=registry, options=options)
    opts = _options(component, options)
    density_skipped: str | None = None
    built, refused = 0, []
    needs_encoder = bool(getattr(component.factory, "needs_encoder", False))
    for dim in dims:
        try:
            prior = _build_prior(component.factory, opts, dim, needs_encoder)
        except (GenfwError, ValueError) as exc:  # a dimension it does not support
            refused.append(f"dim={dim}: {exc}")
            continue
        built += 1
        at = f"{where} with dim={dim}"
        if needs_encoder:
            _check_encoder_prior(prior, at)
        if getattr(prior, "dim", None) != dim:
            raise _fail(at, f"prior.dim is {getattr(prior, 'dim', None)!r}, expected {dim}")
        n = 4000
        z = prior.sample(n, device="cpu", generator=_gen(0))
        if not isinstance(z, Tensor) or tuple(z.shape) != (n, dim) or not z.is_floating_point():
            got = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
            raise _fail(at, f"sample({n}) returned {got}, expected a float tensor ({n}, {dim})")
        if not torch.isfinite(z).all():
            raise _fail(at, "sample() returned values that are not finite")
        if not torch.equal(z, prior.sample(n, device="cpu", generator=_gen(0))):
            raise _fail(at, "sample(n, generator=g) must be reproducible: two generators with seed 0 differ")
        if torch.equal(z, prior.sample(n, device="cpu", generator=_gen(1))):
            raise _fail(at, "sample(n, generator=g) ignores the generator: seeds 0 and 1 give the same codes")
        if tuple(prior.sample(3, device="cpu").shape) != (3, dim):
            raise _fail(at, "sample(3, device='cpu') without a generator must give shape (3, dim)")
        variance = getattr(prior, "variance", None)
        if isinstance(variance, (int, float)):
            # The per-dimension variance, averaged over dimensions (what kernel scales need).
            var = float(z.double().var(dim=0).mean())
            tol = 0.1 * variance + 6 * math.sqrt(max(float((z.double() ** 4).mean()), 1e-12) / (n * dim))
            if abs(var - variance) > tol:
                raise _fail(at, f"variance says {variance} but the samples' mean variance is {var:.4f}")
        try:
            lp = prior.log_prob(z)
        except NotImplementedError:
            density_skipped = f"{where} has no log_prob (NotImplementedError); density checks skipped"
            continue
        if not isinstance(lp, Tensor) or tuple(lp.shape) != (n,):
            got = tuple(lp.shape) if isinstance(lp, Tensor) else type(lp).__name__
            raise _fail(at, f"log_prob(z) on ({n}, {dim}) returned {got}, expected ({n},)")
        if not torch.isfinite(lp).all():
            raise _fail(at, "log_prob is not finite on the prior's own samples")
        if dim <= 2:
            _check_mass(prior, z, at)
        if hasattr(prior, "kl_from_normal"):
            _check_kl(prior, at)
    if not built:
        raise _fail(where, f"it builds for none of the dimensions {dims}: {'; '.join(refused)}")
    if density_skipped:
        _skip(density_skipped)


# The data a prior that needs the encoder is built with in the contract check: 3-D points.
_ENCODER_PRIOR_DATA = DataInfo(shape=(3,), num_classes=0, kind="points")


def _build_prior(factory: Any, opts: Any, dim: int, needs_encoder: bool) -> Any:
    """The prior; one that ``needs_encoder`` built with ``data`` and bound to a fixed random
    linear Gaussian encoder ``x (B, 3) -> (mu, logvar)``, each ``(B, dim)``."""
    if not needs_encoder:
        return factory(opts, dim=dim)
    prior = factory(opts, dim=dim, data=_ENCODER_PRIOR_DATA)
    g = _gen(3)
    weight, bias = torch.randn(2 * dim, 3, generator=g), 0.5 * torch.randn(2 * dim, generator=g)

    def posterior(x: Tensor) -> tuple[Tensor, Tensor]:
        mu, logvar = (x.flatten(1) @ weight.T + bias).chunk(2, dim=1)
        return mu, logvar

    if callable(getattr(prior, "bind", None)):
        prior.bind(posterior)
    return prior


def _check_encoder_prior(prior: Any, where: str) -> None:
    """A prior that needs the encoder: a module with ``forward() -> (K, *shape)`` and ``bind``;
    ``log_prob(z, encoded=...)`` agrees with the bound encoder's."""
    if not isinstance(prior, nn.Module) or not callable(getattr(prior, "bind", None)):
        raise _fail(where, "a prior that needs_encoder is a torch.nn.Module with bind(posterior)")
    inputs = prior()
    if not isinstance(inputs, Tensor) or tuple(inputs.shape[1:]) != _ENCODER_PRIOR_DATA.shape:
        got = tuple(inputs.shape) if isinstance(inputs, Tensor) else type(inputs).__name__
        raise _fail(where, f"forward() gave {got}, expected inputs (K, 3) of the data's shape (3,)")
    g = _gen(4)
    z = torch.randn(8, prior.dim, generator=g)
    weight, bias = torch.randn(2 * prior.dim, 3, generator=g), torch.randn(2 * prior.dim, generator=g)
    bound = prior.log_prob(z)
    mu, logvar = (inputs.detach() @ weight.T + bias).chunk(2, dim=1)
    other = prior.log_prob(z, encoded=(mu, logvar))
    if tuple(other.shape) != (8,) or torch.allclose(other, bound):
        raise _fail(where, "log_prob(z, encoded=(mu, logvar)) ignores the posteriors it is given")


def _atoms(z: Tensor) -> Tensor:
    """Values that occur in at least 0.5% of the 1-D samples ``z`` (point masses)."""
    values, counts = torch.unique(z, return_counts=True)
    return values[counts >= 0.005 * z.numel()]


def _check_mass(prior: Any, z: Tensor, where: str) -> None:
    """In 1-D and 2-D: the density (plus point masses) integrates to 1, and a central box holds
    the mass the samples say it holds."""
    n, dim = z.shape
    z = z.double()
    lo, hi = z.min(dim=0).values, z.max(dim=0).values
    span = (hi - lo).clamp_min(1e-3)
    # A wide window (samples' range plus half of it each side) for the total; a central box.
    wide_lo, wide_hi = lo - 0.5 * span, hi + 0.5 * span
    box_lo, box_hi = z.quantile(0.1, dim=0), z.quantile(0.9, dim=0)

    def density(points: Tensor) -> Tensor:
        return prior.log_prob(points.to(torch.float32)).double().exp()

    if dim == 1:
        atoms = _atoms(z[:, 0])
        # An irrational shift keeps grid points off the atoms (they are summed separately).
        grid = (
            torch.linspace(0, 1, 40001, dtype=torch.float64) * (wide_hi - wide_lo) + wide_lo + 1e-7 * math.pi
        )

        def mass(a: Tensor, b: Tensor) -> float:
            pts = grid[(grid >= a) & (grid <= b)]
            cont = float(torch.trapezoid(density(pts[:, None]), pts)) if len(pts) > 1 else 0.0
            inside = atoms[(atoms >= a) & (atoms <= b)]
            return cont + (float(density(inside[:, None]).sum()) if len(inside) else 0.0)

        total, box = mass(wide_lo[0], wide_hi[0]), mass(box_lo[0], box_hi[0])
        share = float(((z[:, 0] >= box_lo[0]) & (z[:, 0] <= box_hi[0])).double().mean())
    else:
        if any(len(_atoms(z[:, j])) for j in range(dim)):
            return  # point masses in 2-D: the 1-D check covers the construction
        k = 601
        axes = [
            torch.linspace(0, 1, k, dtype=torch.float64) * (wide_hi[j] - wide_lo[j]) + wide_lo[j]
            for j in range(dim)
        ]
        gx, gy = torch.meshgrid(axes[0], axes[1], indexing="ij")
        dens = density(torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)).reshape(k, k)
        total = float(torch.trapezoid(torch.trapezoid(dens, axes[1], dim=1), axes[0]))
        in_box = (gx >= box_lo[0]) & (gx <= box_hi[0]) & (gy >= box_lo[1]) & (gy <= box_hi[1])
        cell = float((axes[0][1] - axes[0][0]) * (axes[1][1] - axes[1][0]))
        box = float((dens * in_box).sum()) * cell
        share = float(((z >= box_lo) & (z <= box_hi)).all(dim=1).double().mean())
    if abs(total - 1.0) > 0.03:
        raise _fail(where, f"exp(log_prob) integrates to {total:.4f} over the samples' range, expected 1")
    tol = 5 * math.sqrt(share * (1 - share) / n) + 0.02
    if abs(box - share) > tol:
        raise _fail(
            where,
            f"log_prob gives the box between the 10% and 90% quantiles mass {box:.4f}, "
            f"but {share:.4f} of the samples fall in it: log_prob and sample disagree",
        )


def _check_kl(prior: Any, where: str) -> None:
    """``kl_from_normal(mu, logvar)`` against a Monte-Carlo estimate of E_q[log q - log p]."""
    g = _gen(2)
    dim = prior.dim
    mu = 0.5 * torch.randn(2, dim, generator=g)
    logvar = 0.3 * torch.randn(2, dim, generator=g)
    kl = prior.kl_from_normal(mu, logvar)
    if not isinstance(kl, Tensor) or tuple(kl.shape) != (2,):
        raise _fail(where, f"kl_from_normal(mu, logvar) on (2, {dim}) must return (2,), got {kl!r}")
    m = 20000
    for i in range(2):
        std = (0.5 * logvar[i]).exp()
        eps = torch.randn(m, dim, generator=g)
        zq = mu[i] + std * eps
        log_q = (-0.5 * eps.square() - 0.5 * math.log(2 * math.pi) - std.log()).sum(dim=1)
        diff = (log_q - prior.log_prob(zq)).double()
        est, se = float(diff.mean()), float(diff.std()) / math.sqrt(m)
        if abs(float(kl[i]) - est) > 5 * se + 1e-3:
            raise _fail(
                where,
                f"kl_from_normal gives {float(kl[i]):.4f}, Monte Carlo E_q[log q - log p] = {est:.4f} +- {se:.4f}",
            )


# --- variants, and the small runs the other checks use ------------------------------------------

# Data sets a variant is tried on, in order: the first it builds on is used.
DATASETS = ("toy2d", "digits")
# Variants a regulariser or metric is tried with first (then every registered one), and the
# (variant, data set) pairs a metric is tried on: configurable defaults of the kit.
VARIANTS = ("gan", "vae", "wae")
METRIC_RUNS = (("gan", "toy2d"), ("gan", "digits"), ("vae", "digits"), ("vae", "toy2d"))


@attrs.define
class SmallRun:
    """A variant built on a small data set, as the loop would build it (without Accelerate)."""

    built: Any  # genfw.train.Built
    modules: Modules
    batch: Batch


def small_run(
    variant: str,
    *,
    registry: Registry | None = None,
    datasets: tuple[str, ...] = DATASETS,
    extra: Mapping[str, Any] | None = None,
    batch_size: int = 16,
) -> SmallRun:
    """Build ``variant`` (default components) on the first of ``datasets`` it accepts.

    ``extra`` is merged into the raw config (e.g. ``{"regularisers": {"mmd": {}}}``). A refusal
    reaches the caller as the :class:`GenfwError` itself when every data set refuses with the same
    message (a bad option, a regulariser the variant does not take), so a test can write
    ``with pytest.raises(GenfwError, match=...)``; different refusals per data set are one
    :class:`GenfwError` that gives each.
    """
    from genfw import config as config_mod
    from genfw import train as train_mod

    registry = default_registry() if registry is None else registry
    errors: list[tuple[str, Exception]] = []
    for data in datasets:
        if data not in registry.names("dataset"):
            continue
        raw = {"variant": variant, "dataset": data, "train": {"batch_size": batch_size}, **(extra or {})}
        try:
            torch.manual_seed(0)
            cfg = config_mod.resolve(raw, registry)
            built = train_mod.build(cfg)
        except (GenfwError, ValueError) as exc:  # data this variant (or its networks) does not take
            errors.append((data, exc))
            continue
        idx = torch.randperm(len(built.dataset), generator=_gen(0))[:batch_size]
        items = [built.dataset[int(i)] for i in idx]
        x = torch.stack([torch.as_tensor(item[0]) for item in items]).float()
        y = torch.tensor([int(item[1]) for item in items], dtype=torch.long)
        return SmallRun(built=built, modules=Modules(built.model.modules), batch=Batch(x, y))
    if not errors:
        raise GenfwError(
            f"none of the data sets {', '.join(datasets)} is registered; registered data sets: "
            f"{choices(registry.names('dataset'))}"
        )
    first = errors[0][1]
    if isinstance(first, GenfwError) and all(str(e) == str(first) for _, e in errors):
        raise first
    raise GenfwError(
        f"variant '{variant}' builds on none of the data sets {', '.join(d for d, _ in errors)}: "
        + "; ".join(f"on {d}: {e}" for d, e in errors)
    ) from errors[-1][1]


def run_phase(
    run: SmallRun, phase: Any, *, step: bool = True
) -> tuple[Tensor, dict[str, Any], dict[str, Tensor]]:
    """One step of ``phase`` (a :class:`genfw.Phase` of ``run``'s model, or its name such as
    ``"critic"``) as the loop runs it: objective plus attached penalties (the loop's
    :func:`genfw.train.phase_objective`), the callbacks' events, backward, optimiser step,
    post-step constraints. Returns ``(objective, context, penalties)``."""
    from genfw import train as train_mod
    from genfw.contracts import LoopState

    if isinstance(phase, str):
        phases = {p.name: p for p in run.built.model.phases}
        if phase not in phases:
            raise GenfwError(
                f"variant '{run.built.cfg.variant.name}' has no phase '{phase}'; its phases: "
                f"{', '.join(phases)}"
            )
        phase = phases[phase]
    params = list({id(p): p for n in phase.modules for p in run.modules[n].parameters()}.values())
    opt = train_mod.make_optimizer(phase.optim, params)
    events, state = run.built.callbacks, LoopState(0, run.modules, run.modules, {phase.name: opt})
    events.phase_start(phase.name, state)
    out = phase.step(run.batch, run.modules)
    out.context.update(phase=phase.name, step=0)  # as the loop does
    events.phase_output(phase.name, out, state)
    regs = run.built.regularisers[phase.name]
    replaces = any(getattr(r, "replaces_loss", False) for _, r in regs)
    loss, terms = train_mod.phase_objective(out, regs, replaces=replaces)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if step:
        opt.step()
        for _, reg in regs:
            if hasattr(reg, "after_step"):
                reg.after_step([run.modules[n] for n in phase.modules], phase.name)
        events.phase_end(phase.name, out, state)
    return loss, out.context, terms


def check_variant(
    name: str,
    *,
    registry: Registry | None = None,
    options: Any = None,
    config: Mapping[str, Any] | None = None,
) -> None:
    """The variant contract: its declarations (:class:`genfw.contracts.Variant`) hold: the
    registry has checked their types; slots default to registered components; it builds on a
    small data set the phases ``phases_for(options)`` names, in that order, each giving the
    ``provides`` its ``PhaseSpec`` declares and training only declared players; one step of every
    phase updates its parameters and its context holds every declared key; samples (and truncated
    samples, where it declares ``truncation``) have the data's shape. ``config`` is merged into the
    small run's config: other components for its slots (``{"prior": "vamp"}``)."""
    component = _component("variant", name, registry)
    where = _where(component)
    registry = default_registry() if registry is None else registry
    check_options("variant", name, registry=registry, options=options)
    factory = component.factory
    for slot, spec in factory.slots.items():
        if spec.default not in registry.names(spec.kind):
            raise _fail(
                where, f"slot '{slot}' defaults to {spec.kind} '{spec.default}', which is not registered"
            )
    extra = {"variant": {"name": name, **dict(options or {})}} if options else {}
    extra.update(config or {})
    try:
        run = small_run(name, registry=registry, extra=extra)
    except GenfwError as exc:
        raise _fail(where, str(exc)) from exc
    model = run.built.model
    _check_declared_phases(factory, run, where)
    for phase in model.phases:
        missing = [n for n in phase.modules if n not in model.modules]
        if missing:
            raise _fail(where, f"phase '{phase.name}' trains module '{missing[0]}', which the model lacks")
        before = {
            k: v.detach().clone()
            for n in phase.modules
            for k, v in run.modules[n].state_dict(prefix=f"{n}.").items()
        }
        try:
            loss, context, _ = run_phase(run, phase)
        except Exception as exc:
            raise _fail(where, f"phase '{phase.name}' failed: {type(exc).__name__}: {exc}") from exc
        if not torch.isfinite(loss):
            raise _fail(where, f"phase '{phase.name}' objective is not finite: {loss}")
        after = {k: v for n in phase.modules for k, v in run.modules[n].state_dict(prefix=f"{n}.").items()}
        if all(torch.equal(before[k], after[k]) for k in before):
            raise _fail(
                where, f"one step of phase '{phase.name}' left the parameters of {phase.modules} unchanged"
            )
        absent = sorted(factory.phases[phase.name].provides - set(context))
        if absent:
            raise _fail(
                where,
                f"phase '{phase.name}' declares it provides '{absent[0]}', but its context has only "
                f"{', '.join(sorted(context))}",
            )
    shape = tuple(run.built.dataset.shape)
    num_classes = model.num_classes
    y = torch.arange(4) % num_classes if num_classes else None
    with torch.no_grad():
        samples = model.sample(run.modules, 4, y)
    if tuple(samples.shape) != (4, *shape) or not torch.isfinite(samples).all():
        raise _fail(
            where,
            f"sample(m, 4, y) gave {tuple(samples.shape)}, expected finite (4, {', '.join(map(str, shape))})",
        )
    declared = bool(getattr(factory, "truncation", False))
    if declared != (model.truncate is not None):
        raise _fail(
            where,
            f"it declares truncation = {declared}, but its Model.truncate is "
            f"{'None' if model.truncate is None else 'set'}; set both or neither",
        )
    if model.truncate is not None:
        with torch.no_grad():
            samples = model.truncate(run.modules, 4, y, 0.5)
        if tuple(samples.shape) != (4, *shape) or not torch.isfinite(samples).all():
            raise _fail(
                where, f"truncate(m, 4, y, 0.5) gave {tuple(samples.shape)}, expected finite (4, *shape)"
            )


def _check_declared_phases(factory: Any, run: SmallRun, where: str) -> None:
    """The built phases are those ``phases_for(options)`` names (a subsequence of the declared
    ``phases``), in order, each with the declared ``provides``; the modules a phase trains are
    declared players."""
    options = run.built.cfg.variant.options
    built = [p.name for p in run.built.model.phases]
    expected = list(factory.phases_for(options))
    declared = list(factory.phases)
    unknown = [n for n in expected if n not in declared]
    if unknown or expected != [n for n in declared if n in expected]:
        raise _fail(
            where,
            f"phases_for(options) gives {expected}, which is not a selection of the declared phases "
            f"{declared} in their order",
        )
    if built != expected:
        raise _fail(
            where, f"it built the phases {built}; it declares {expected} (phases, phases_for) in this order"
        )
    players = set(factory.players.all())
    for phase in run.built.model.phases:
        declared_keys = factory.phases[phase.name].provides
        if set(phase.provides) != set(declared_keys):
            raise _fail(
                where,
                f"phase '{phase.name}' is built with provides {sorted(phase.provides)}, but its PhaseSpec "
                f"declares {sorted(declared_keys)}",
            )
        undeclared = [n for n in phase.modules if n not in players]
        if undeclared:
            raise _fail(
                where,
                f"phase '{phase.name}' trains module '{undeclared[0]}', which is not one of the declared "
                f"players ({', '.join(sorted(players)) or 'none'}); declare it in players",
            )


# --- regularisers -------------------------------------------------------------------------------


def _own_remedies(component: Component) -> Mapping[str, Any]:
    """The remedies a variant attaches itself with its default options (none where it has
    required options)."""
    try:
        options = structure_options(component, {}, where="variant")
    except GenfwError:
        return {}
    return component.factory.remedies(options)


def _variants_for(name: str, registry: Registry) -> Iterator[str]:
    """Variants to attach regulariser ``name`` to: those that attach it themselves first."""
    variants = registry.names("variant")
    own = [v for v in variants if name in _own_remedies(registry.get("variant", v))]
    yield from own
    yield from VARIANTS
    yield from variants


def check_regulariser(
    name: str, *, registry: Registry | None = None, options: Any = None, variant: str | None = None
) -> None:
    """The regulariser contract: attached to a phase that provides its ``needs`` (of ``variant``,
    or of the first registered variant that has one), its penalty is a finite scalar whose
    gradient reaches the phase's parameters; a constraint (``penalty`` gives ``None``) has
    ``after_step``."""
    component = _component("regulariser", name, registry)
    where = _where(component)
    registry = default_registry() if registry is None else registry
    check_options("regulariser", name, registry=registry, options=options)
    reg = component.factory(_options(component, options))
    for attr in ("phases", "needs"):
        if not isinstance(getattr(reg, attr, None), (tuple, list, frozenset, set)):
            raise _fail(where, f"a regulariser declares {attr}: tuple[str, ...]")
    if not callable(getattr(reg, "penalty", None)):
        raise _fail(where, "a regulariser has penalty(ctx) (returning None for a pure constraint)")
    tried = []
    seen = set()
    for v in [variant] if variant else _variants_for(name, registry):
        if v in seen or v not in registry.names("variant"):
            continue
        seen.add(v)
        run = _try_small_run(v, name, options, registry)
        if run is None:
            tried.append(v)
            continue
        phases = [
            p for p in run.built.model.phases if p.name in reg.phases and set(reg.needs) <= set(p.provides)
        ]
        if not phases:
            tried.append(v)
            continue
        phase = phases[0]
        at = f"{where} on phase '{phase.name}' of variant '{v}'"
        attached = dict(run.built.regularisers[phase.name])[name]
        out = phase.step(run.batch, run.modules)
        out.context["phase"] = phase.name
        penalty = attached.penalty(out.context)
        if penalty is None:
            # A constraint (after_step) or a change to the model (setup, run by build): the phase
            # must still train with it, constraint applied.
            if not (hasattr(attached, "after_step") or hasattr(attached, "setup")):
                raise _fail(
                    at, "penalty(ctx) returned None and there is no after_step or setup: it does nothing"
                )
            loss, _, _ = run_phase(run, phase)
            if not torch.isfinite(loss):
                raise _fail(at, f"the phase's objective with it is not finite: {loss}")
            return
        _scalar(penalty, at, "penalty(ctx)")
        if not penalty.requires_grad:
            raise _fail(at, "the penalty is not differentiable (no graph to the phase's parameters)")
        params = [p for n in phase.modules for p in run.modules[n].parameters()]
        grads = torch.autograd.grad(penalty, params, allow_unused=True)
        # Reached, not necessarily non-zero: historical averaging is flat at its first step.
        if all(g is None for g in grads):
            raise _fail(at, f"the penalty's gradient does not reach the parameters of {phase.modules}")
        if any(g is not None and not torch.isfinite(g).all() for g in grads):
            raise _fail(at, "the penalty's gradient is not finite")
        return
    raise _fail(
        where,
        f"no registered variant has a phase in {tuple(reg.phases)} providing {tuple(reg.needs)} "
        f"(tried {', '.join(tried) or 'none'}); pass variant=... to check it",
    )


def _try_small_run(variant: str, reg: str, options: Any, registry: Registry) -> SmallRun | None:
    try:
        return small_run(variant, registry=registry, extra={"regularisers": {reg: dict(options or {})}})
    except GenfwError:
        return None


# --- callbacks ----------------------------------------------------------------------------------


def check_callback(
    name: str, *, registry: Registry | None = None, options: Any = None, variant: str | None = None
) -> None:
    """The callback contract: a subclass of :class:`genfw.contracts.Callback`; attached to
    ``variant`` (or the first registered variant it ``fits``), two training steps of every phase
    run with its events and stay finite, and its ``state_dict()`` (JSON values or tensors) is
    restored by ``load_state_dict``."""
    from genfw.contracts import Callback, LoopState, VariantInfo

    component = _component("callback", name, registry)
    where = _where(component)
    registry = default_registry() if registry is None else registry
    check_options("callback", name, registry=registry, options=options)
    if not (isinstance(component.factory, type) and issubclass(component.factory, Callback)):
        raise _fail(where, "a callback is a subclass of genfw.contracts.Callback")
    tried = []
    for v in [variant] if variant else registry.names("variant"):
        info = VariantInfo(v, registry.get("variant", v).factory, registry=registry)
        if not component.factory.fits(info):
            tried.append(v)
            continue
        run = _try_small_run(v, name, options, registry)
        if run is None:
            tried.append(v)
            continue
        at = f"{where} on variant '{v}'"
        for step in range(2):
            for phase in run.built.model.phases:
                loss, _, _ = run_phase(run, phase)
                if not torch.isfinite(loss):
                    raise _fail(at, f"phase '{phase.name}' with it has a non-finite objective: {loss}")
            run.built.callbacks.step_end(LoopState(step + 1, run.modules, run.modules, {}))
        attached = dict(run.built.callbacks)[name]
        state = attached.state_dict()
        if not isinstance(state, dict) or not all(
            isinstance(x, (Tensor, int, float, str, bool, list, dict)) or x is None for x in state.values()
        ):
            raise _fail(at, f"state_dict() must map names to tensors or JSON values, got {state!r}")
        attached.load_state_dict(state)
        again = attached.state_dict()
        if again.keys() != state.keys() or any(
            not (torch.equal(a, b) if isinstance(a, Tensor) else a == b)
            for a, b in zip(state.values(), again.values(), strict=True)
        ):
            raise _fail(at, "load_state_dict(state_dict()) does not restore the state")
        return
    raise _fail(
        where, f"it fits no registered variant (tried {', '.join(tried) or 'none'}); pass variant=..."
    )


# --- metrics ------------------------------------------------------------------------------------


def check_metric(name: str, *, registry: Registry | None = None, options: Any = None) -> None:
    """The metric contract: on a small model it returns ``dict[str, float]``, the same twice for
    the same seed. A metric that raises :class:`GenfwError` for every model tried (it needs data,
    a model or weights that are not there) is skipped with its message."""
    from genfw import train as train_mod

    component = _component("metric", name, registry)
    where = _where(component)
    registry = default_registry() if registry is None else registry
    check_options("metric", name, registry=registry, options=options)
    metric = component.factory(_options(component, options))
    reasons = []
    for variant, data in METRIC_RUNS:
        if variant not in registry.names("variant"):
            continue
        try:
            run = small_run(variant, registry=registry, datasets=(data,))
        except GenfwError:
            continue
        ctx = EvalContext(
            sample=lambda n, run=run: train_mod.generate(run.built.model, run.modules, n),
            real=lambda n, run=run: train_mod.real_examples(run.built.dataset, n),
            dataset=run.built.dataset,
            model=run.built.model,
            modules=run.modules,
        )
        try:
            first = train_mod.forked(7, torch.device("cpu"), lambda ctx=ctx: metric(ctx))
        except GenfwError as exc:
            reasons.append(f"{variant} on {data}: {exc}")
            continue
        second = train_mod.forked(7, torch.device("cpu"), lambda ctx=ctx: metric(ctx))
        if not isinstance(first, Mapping) or not first:
            raise _fail(where, f"returned {first!r}, expected a non-empty dict[str, float]")
        for key, value in first.items():
            if not isinstance(key, str) or not isinstance(float(value), float):
                raise _fail(where, f"returned {key!r}: {value!r}, expected str keys and float values")
        same = first.keys() == second.keys() and all(
            float(first[k]) == float(second[k])
            or (math.isnan(float(first[k])) and math.isnan(float(second[k])))
            for k in first
        )
        if not same:
            raise _fail(where, f"not deterministic for a seed: {dict(first)} then {dict(second)}")
        return
    first = reasons[0] if reasons else "no small model could be built"
    _skip(f"{where} applies to none of the {len(reasons)} small models tried; first: {first}")


# --- networks -----------------------------------------------------------------------------------

_SHAPES = ((2,), (1, 16, 16), (3, 32, 32))


def check_network(
    kind: str,
    name: str,
    *,
    registry: Registry | None = None,
    options: Any = None,
    shapes: tuple[tuple[int, ...], ...] = _SHAPES,
) -> None:
    """The network contract for ``kind`` generator, critic or encoder: the declared forward
    shapes for each data shape in ``shapes`` it accepts (a :class:`GenfwError` at build time
    means a shape it does not support; it must accept at least one), with and without classes."""
    if kind not in NETWORK_KINDS:
        raise ValueError(f"kind must be one of {NETWORK_KINDS}, got {kind!r}")
    component = _component(kind, name, registry)
    where = _where(component)
    check_options(kind, name, registry=registry, options=options)
    opts = _options(component, options)
    g = _gen(0)
    supported, refused = 0, []
    for shape in shapes:
        for num_classes in (0, 3):
            latent = 5
            try:
                if kind == "generator":
                    net = component.factory(opts, latent_dim=latent, out_shape=shape, num_classes=num_classes)
                    inp, want = torch.randn(4, latent, generator=g), (4, *shape)
                else:
                    out_dim = 3
                    net = component.factory(opts, in_shape=shape, out_dim=out_dim, num_classes=num_classes)
                    inp, want = torch.randn(4, *shape, generator=g).clamp(-1, 1), (4, out_dim)
            except (GenfwError, ValueError) as exc:  # a shape it does not support
                refused.append(f"{shape} with {num_classes} classes: {exc}")
                continue
            at = f"{where} for shape {shape}, num_classes={num_classes}"
            if not isinstance(net, nn.Module):
                raise _fail(at, f"the factory returned {type(net).__name__}, expected a torch.nn.Module")
            supported += 1
            y = torch.arange(4) % num_classes if num_classes else None
            net.train()
            out = net(inp, y) if y is not None else net(inp)
            if not isinstance(out, Tensor) or tuple(out.shape) != want:
                got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
                raise _fail(at, f"forward gave {got}, expected {want}")
            if not torch.isfinite(out).all():
                raise _fail(at, "forward output is not finite")
            if kind == "generator" and len(shape) == 3 and (out.abs() > 1 + 1e-5).any():
                # Image outputs live in [-1, 1] unless options ask otherwise (e.g. output: none).
                if not any("output" in f.name for f in attrs.fields(type(opts))):
                    raise _fail(at, "image outputs must lie in [-1, 1]")
            out.square().mean().backward()
            params = [p for p in net.parameters() if p.requires_grad]
            if params and not any(_has_gradient(p.grad) for p in params):
                raise _fail(at, "no gradient reaches the network's parameters")
            if num_classes and y is not None:
                with torch.no_grad():
                    net.eval()
                    a = net(inp, y)
                    b = net(inp, (y + 1) % num_classes)
                if torch.equal(a, b):
                    raise _fail(at, "the output ignores the labels y although num_classes > 0")
    if not supported:
        raise _fail(where, f"it accepts none of the shapes {shapes}: {'; '.join(refused)}")


# --- data sets ----------------------------------------------------------------------------------


def check_dataset(name: str, *, registry: Registry | None = None, options: Any = None) -> None:
    """The data set contract: ``shape``, ``kind`` and ``num_classes`` declared; items ``(x, y)``
    with ``x`` float of ``shape`` and ``y`` in ``-1..num_classes-1`` (of a streamed data set, the
    first items of ``stream(0, 0)``). A data set that needs files or downloads it does not find (a
    :class:`GenfwError` when built) is skipped."""
    component = _component("dataset", name, registry)
    where = _where(component)
    check_options("dataset", name, registry=registry, options=options)
    try:
        data = component.factory(_options(component, options))
    except GenfwError as exc:
        _skip(f"{where} cannot be built here: {exc}")
        return
    shape = tuple(getattr(data, "shape", ()))
    if not shape or not all(isinstance(s, int) and s > 0 for s in shape):
        raise _fail(where, f"shape is {shape!r}, expected a tuple of positive ints")
    if data.kind not in ("image", "points"):
        raise _fail(where, f"kind is {data.kind!r}, expected 'image' or 'points'")
    if data.kind == "image" and len(shape) != 3:
        raise _fail(where, f"an image data set has shape (C, H, W), got {shape}")
    if getattr(data, "streaming", False):  # read in order, never indexed: its first items
        items = []
        for item in data.stream(0, 0):
            items.append((len(items), item))
            if len(items) == 3:
                break
    else:
        items = [(i, data[i]) for i in sorted({0, len(data) // 2, len(data) - 1})] if len(data) else []
    if not items:
        raise _fail(where, "the data set is empty")
    for i, (x, y) in items:
        x = torch.as_tensor(x)
        if tuple(x.shape) != shape or not x.is_floating_point():
            raise _fail(
                where, f"item {i} has x of shape {tuple(x.shape)} ({x.dtype}), expected float {shape}"
            )
        if not -1 <= int(y) < max(data.num_classes, 0) or (data.num_classes == 0 and int(y) != -1):
            raise _fail(where, f"item {i} has label {int(y)}; labels are -1 (none) or 0..num_classes-1")
    if data.tensors is not None:
        xs, ys = data.tensors
        if tuple(xs.shape[1:]) != shape or xs.shape[0] != ys.shape[0] or len(data) != xs.shape[0]:
            raise _fail(where, f"tensors have shapes {tuple(xs.shape)}, {tuple(ys.shape)} for shape {shape}")
    if not isinstance(data.info, DataInfo):
        raise _fail(where, "info must be a genfw.DataInfo")


# --- feature extractors -------------------------------------------------------------------------

_EXTRACTOR_INPUTS = ((1, 28, 28), (3, 32, 32), (1, 8, 8), (2,))


def check_extractor(name: str, *, registry: Registry | None = None, options: Any = None) -> None:
    """The extractor contract: a module with ``accepts`` and ``identity`` strings whose
    ``features(x)`` is ``(N, d)``, finite and deterministic for at least one kind of input (a
    :class:`GenfwError` for inputs it does not take), and ``logits(x)`` ``(N, K)`` where
    defined. An extractor whose weights are not installed is skipped with its message."""
    component = _component("extractor", name, registry)
    where = _where(component)
    check_options("extractor", name, registry=registry, options=options)
    try:
        net = component.factory(_options(component, options))
    except GenfwError as exc:
        _skip(f"{where} cannot be built here: {exc}")
        return
    if not isinstance(net, nn.Module):
        raise _fail(where, f"the factory returned {type(net).__name__}, expected a torch.nn.Module")
    for attr in ("accepts", "identity"):
        if not isinstance(getattr(net, attr, None), str) or not getattr(net, attr):
            raise _fail(where, f"an extractor has a non-empty string {attr}")
    g = _gen(0)
    refused = []
    for shape in _EXTRACTOR_INPUTS:
        x = (torch.rand(4, *shape, generator=g) * 2 - 1).float()
        try:
            with torch.no_grad():
                feats = net.features(x)
        except GenfwError as exc:
            refused.append(f"{shape}: {exc}")
            continue
        at = f"{where} on inputs (4, {', '.join(map(str, shape))})"
        if not isinstance(feats, Tensor) or feats.dim() != 2 or feats.shape[0] != 4:
            got = tuple(feats.shape) if isinstance(feats, Tensor) else type(feats).__name__
            raise _fail(at, f"features(x) gave {got}, expected (4, d)")
        if not torch.isfinite(feats).all():
            raise _fail(at, "features(x) is not finite")
        with torch.no_grad():
            if not torch.equal(feats, net.features(x)):
                raise _fail(at, "features(x) is not deterministic")
            if hasattr(net, "logits"):
                logits = net.logits(x)
                if not isinstance(logits, Tensor) or logits.dim() != 2 or logits.shape[0] != 4:
                    raise _fail(at, f"logits(x) gave {getattr(logits, 'shape', logits)!r}, expected (4, K)")
        return
    raise _fail(where, f"features(x) accepts none of the inputs {_EXTRACTOR_INPUTS}: {'; '.join(refused)}")


# --- one entry point ----------------------------------------------------------------------------

CHECKS: dict[str, Callable[..., None]] = {
    "loss": check_loss,
    "prior": check_prior,
    "regulariser": check_regulariser,
    "callback": check_callback,
    "metric": check_metric,
    "variant": check_variant,
    "dataset": check_dataset,
    "extractor": check_extractor,
}


def check(kind: str, name: str, *, registry: Registry | None = None, options: Any = None) -> None:
    """Run the contract of ``kind`` on component ``name``. A component with required options
    is skipped unless ``options`` gives them."""
    registry = default_registry() if registry is None else registry
    component = _component(kind, name, registry)
    required = [n for n, _, d in component.option_fields() if d == "(required)" and n not in (options or {})]
    if required:
        _skip(
            f"{_where(component)} has required options ({', '.join(required)}); pass options=... to check it"
        )
    if kind in NETWORK_KINDS:
        check_network(kind, name, registry=registry, options=options)
    elif kind in CHECKS:
        CHECKS[kind](name, registry=registry, options=options)
    else:
        raise ValueError(f"unknown kind {kind!r}; valid kinds: {', '.join(KINDS)}")


__all__ = [
    "CHECKS",
    "ContractSkipped",
    "SmallRun",
    "check",
    "check_callback",
    "check_dataset",
    "check_extractor",
    "check_loss",
    "check_metric",
    "check_network",
    "check_options",
    "check_prior",
    "check_regulariser",
    "check_variant",
    "contract_cases",
    "default_registry",
    "registry_with",
    "run_phase",
    "small_run",
]
