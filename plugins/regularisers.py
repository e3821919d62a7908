"""Built-in regularisers: ``gradient_penalty`` (WGAN-GP), ``dragan`` (DRAGAN), ``mmd`` (WAE-MMD),
``weight_clipping`` (WGAN).

A regulariser declares the ``phases`` it attaches to and the context keys it ``needs``;
``penalty(ctx)`` returns the weighted scalar to add to the phase's loss (``None`` for a pure
constraint) and ``after_step(modules, phase)``, where defined, runs after the phase's optimiser step.
The MMD estimators are plain functions (:func:`mmd_imq`, :func:`mmd_rbf`) for reuse by metrics.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import attrs
import torch
from torch import Tensor, nn

import genfw
from genfw import BuildContext, GenfwError, Model
from genfw import validators as check
from genfw.hookspecs import Register

# --- gradient penalty ---------------------------------------------------------------------------


def refuse_batch_norm(model: Model, phases: tuple[str, ...], penalty: str, why: str) -> None:
    """A one-line error if a module the ``phases`` train (the critic) has batch-norm layers.

    A gradient penalty on each example's gradient norm assumes each score depends on its own
    input alone; batch norm in training mode makes it depend on the whole batch, so the gradient
    of ``sum_j D(x_j)`` at ``x_i`` is no longer ``D``'s gradient at ``x_i``.
    """
    for phase in model.phases:
        if phase.name not in phases:
            continue
        for name in phase.modules:
            norms = {
                type(m).__name__
                for m in model.modules[name].modules()
                if isinstance(m, nn.modules.batchnorm._BatchNorm)
            }
            if norms:
                raise GenfwError(
                    f"{penalty} penalises each example's gradient norm, but the {name} has batch norm "
                    f"({', '.join(sorted(norms))}), which makes each score depend on the whole batch ({why}); "
                    f"use one without it: --{name}.batch_norm false"
                )


@attrs.define
class GradientPenaltyOptions:
    """Options of the WGAN-GP gradient penalty."""

    weight: float = attrs.field(default=10.0, validator=check.non_negative)  # lambda
    # Target gradient norm; 1 in WGAN-GP, 0 gives a zero-centred penalty.
    center: float = attrs.field(default=1.0, validator=check.non_negative)


class GradientPenalty:
    """WGAN-GP (Gulrajani et al. 2017): lambda E (||grad f(x_hat)||_2 - 1)^2 on interpolates.

    ``x_hat = eps * real + (1 - eps) * fake`` with one ``eps ~ U[0, 1]`` per example, drawn from
    the default generator of the data's device. The gradient of ``critic(x_hat, labels).sum()``
    is taken with ``create_graph=True`` so the penalty trains the critic; its norm is over all
    non-batch dimensions, in float32. An "example" is what the context's critic scores: with
    ``packing`` the context holds packs of m samples, so eps and the norm are per pack.
    """

    phases: tuple[str, ...] = ("critic",)
    needs: tuple[str, ...] = ("real", "fake", "critic", "labels")

    def __init__(self, options: GradientPenaltyOptions) -> None:
        self.weight, self.center = options.weight, options.center

    def setup(self, model: Model, ctx: BuildContext) -> None:
        """Refuse a critic with batch norm: Gulrajani et al. (section 4) drop it for this reason."""
        refuse_batch_norm(
            model,
            self.phases,
            "gradient_penalty",
            "Gulrajani et al. 2017, section 4, drop it for this reason",
        )

    def penalty(self, ctx: dict[str, Any]) -> Tensor:
        real: Tensor = ctx["real"].detach().float()  # (B, ...)
        fake: Tensor = ctx["fake"].detach().float()  # (B, ...)
        critic: Callable[[Tensor, Tensor | None], Tensor] = ctx["critic"]
        labels: Tensor | None = ctx.get("labels")
        eps = torch.rand((real.shape[0],) + (1,) * (real.dim() - 1), device=real.device)  # (B, 1, ...)
        x_hat = eps * real + (1.0 - eps) * fake
        norms = gradient_norms(critic, x_hat, labels, ctx.get("grad_scale"))  # (B,)
        return self.weight * (norms - self.center).square().mean()


def gradient_norms(
    critic: Callable[[Tensor, Tensor | None], Tensor],
    x: Tensor,
    labels: Tensor | None,
    scale: Tensor | None = None,
) -> Tensor:
    """``||grad_x critic(x)_i||_2`` per example ``(B,)``, in float32, differentiable.

    The gradient of ``critic(x, labels).sum()`` is taken with ``create_graph=True`` so a penalty
    on the norms trains the critic. Shared by every gradient penalty (WGAN-GP, DRAGAN).
    ``scale`` (the loop's fp16 loss scale, context key ``grad_scale``) scales the sum before the
    gradient and divides it out after, so half-precision gradients do not underflow (the AMP
    recipe for gradient penalties).
    """
    x = x.detach().requires_grad_(True)
    total = critic(x, labels).float().sum()
    if scale is not None:
        # scale / B per score: GradScaler's first scale, 65536, is itself above float16's largest
        # value (65504), so each half-precision score's gradient would be inf.
        total = total * (scale / x.shape[0])
    (grad,) = torch.autograd.grad(total, x, create_graph=True)
    grad = grad.float()
    if scale is not None:
        grad = grad * (x.shape[0] / scale)
    return torch.linalg.vector_norm(grad.flatten(1), dim=1)


# --- DRAGAN -------------------------------------------------------------------------------------


@attrs.define
class DraganOptions:
    """Options of the DRAGAN penalty (defaults: the authors' code)."""

    weight: float = attrs.field(default=10.0, validator=check.non_negative)  # lambda
    # x_p = x + scale * std(x) * U[0, 1] noise; std over the whole batch, as in the authors' code.
    scale: float = attrs.field(default=0.5, validator=check.positive)
    center: float = attrs.field(default=1.0, validator=check.non_negative)


class DraganPenalty:
    """DRAGAN (Kodali et al. 2017): lambda E (||grad D(x_hat)||_2 - 1)^2 around REAL data only.

    Following the authors' code (kodalinaveen3/DRAGAN): ``x_p = x + 0.5 std(x) u`` with
    ``u ~ U[0, 1]`` elementwise and ``std(x)`` the standard deviation of the whole batch, then
    ``x_hat = x + alpha (x_p - x)`` with one ``alpha ~ U[0, 1]`` per example (per pack with
    ``packing``, whose context holds packs). Fakes play no part.
    """

    phases: tuple[str, ...] = ("critic",)
    needs: tuple[str, ...] = ("real", "critic", "labels")

    def __init__(self, options: DraganOptions) -> None:
        self.weight, self.scale, self.center = options.weight, options.scale, options.center

    def setup(self, model: Model, ctx: BuildContext) -> None:
        """Refuse a critic with batch norm. The paper's penalty,
        ``lambda E_{x, delta} (||grad_x D(x + delta)|| - k)^2``, is one gradient norm per perturbed
        example, exactly as in WGAN-GP, and the authors' code computes it so (one ``alpha`` and one
        slope per example) on a discriminator without batch norm: the reason WGAN-GP drops batch
        norm holds here too."""
        refuse_batch_norm(
            model, self.phases, "dragan", "the per-example penalty of Gulrajani et al. 2017, section 4"
        )

    def penalty(self, ctx: dict[str, Any]) -> Tensor:
        real: Tensor = ctx["real"].detach().float()  # (B, ...)
        perturbed = real + self.scale * real.std() * torch.rand_like(real)
        alpha = torch.rand((real.shape[0],) + (1,) * (real.dim() - 1), device=real.device)  # (B, 1, ...)
        x_hat = real + alpha * (perturbed - real)
        norms = gradient_norms(ctx["critic"], x_hat, ctx.get("labels"), ctx.get("grad_scale"))  # (B,)
        return self.weight * (norms - self.center).square().mean()


# --- MMD ----------------------------------------------------------------------------------------

# Kernel scales of the official WAE code (tolstikhin/wae, wae.py, mmd_penalty).
WAE_SCALES = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)


def squared_distances(a: Tensor, b: Tensor) -> Tensor:
    """Pairwise squared Euclidean distances ``(n, d), (m, d) -> (n, m)``."""
    d = a.square().sum(1, keepdim=True) + b.square().sum(1).unsqueeze(0) - 2.0 * a @ b.T
    return d.clamp_min(0.0)


def _mmd_from_kernels(k_xx: Tensor, k_yy: Tensor, k_xy: Tensor) -> Tensor:
    """Unbiased MMD^2 from kernel matrices, as in the WAE code and the paper's Algorithm 2.

    ``sum_{i != j} k(x_i, x_j) / (n(n-1)) + sum_{i != j} k(y_i, y_j) / (m(m-1))
    - 2 sum_{i, j} k(x_i, y_j) / (n m)``: the within-sample diagonals are left out; the cross
    term keeps all pairs (x and y are independent, so it is unbiased as it is).
    """
    n, m = k_xx.shape[0], k_yy.shape[0]
    within_x = (k_xx.sum() - k_xx.diagonal().sum()) / (n * (n - 1))
    within_y = (k_yy.sum() - k_yy.diagonal().sum()) / (m * (m - 1))
    return within_x + within_y - 2.0 * k_xy.mean()


def _check_samples(x: Tensor, y: Tensor) -> None:
    if x.dim() != 2 or y.dim() != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"mmd expects samples (n, d) and (m, d), got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.shape[0] < 2 or y.shape[0] < 2:
        raise ValueError(f"mmd needs at least 2 samples on each side, got {x.shape[0]} and {y.shape[0]}")


def mmd_imq(x: Tensor, y: Tensor, scales: Sequence[float] = WAE_SCALES, sigma2: float = 1.0) -> Tensor:
    """Unbiased MMD^2 between ``x (n, d)`` and ``y (m, d)`` with inverse multiquadratics kernels.

    ``k_C(a, b) = C / (C + ||a - b||^2)`` summed over ``C = s * 2 * d * sigma2`` for ``s`` in
    ``scales`` (``2 d sigma2`` is the expected squared distance of two draws from
    ``N(0, sigma2 I)``), as in the WAE paper and its code.
    """
    _check_samples(x, y)
    d_xx, d_yy, d_xy = squared_distances(x, x), squared_distances(y, y), squared_distances(x, y)
    base = 2.0 * x.shape[1] * sigma2
    total = x.new_zeros(())
    for s in scales:
        c = s * base
        total = total + _mmd_from_kernels(c / (c + d_xx), c / (c + d_yy), c / (c + d_xy))
    return total


def mmd_rbf(x: Tensor, y: Tensor, sigma2_k: float | Tensor | None = None) -> Tensor:
    """Unbiased MMD^2 between ``x (n, d)`` and ``y (n, d)`` with ``exp(-||a - b||^2 / (2 sigma2_k))``.

    Without ``sigma2_k``, the bandwidth is the WAE code's median heuristic: the sum of the
    ``(n^2 - n) / 2``-th largest entries of the ``x``-``y`` and the ``x``-``x`` distance matrices.
    """
    _check_samples(x, y)
    d_xx, d_yy, d_xy = squared_distances(x, x), squared_distances(y, y), squared_distances(x, y)
    if sigma2_k is None:
        n = x.shape[0]
        if y.shape[0] != n:
            raise ValueError("the median heuristic of mmd_rbf needs equal sample sizes; pass sigma2_k")
        half = (n * n - n) // 2
        sigma2_k = d_xy.flatten().topk(half).values[-1] + d_xx.flatten().topk(half).values[-1]
    return _mmd_from_kernels(
        torch.exp(-d_xx / (2.0 * sigma2_k)),
        torch.exp(-d_yy / (2.0 * sigma2_k)),
        torch.exp(-d_xy / (2.0 * sigma2_k)),
    )


@attrs.define
class MMDOptions:
    """Options of the WAE-MMD penalty."""

    weight: float = attrs.field(default=10.0, validator=check.non_negative)  # lambda
    # imq: sum of inverse multiquadratics kernels over scales; rbf: one Gaussian kernel whose
    # width is the median heuristic of the WAE code (scales and sigma2 then do not apply).
    kernel: str = attrs.field(default="imq", validator=check.one_of("imq", "rbf"))
    # sigma_z^2 of the imq kernels' C = s * 2 * d * sigma_z^2: the prior's per-coordinate variance.
    # Left out (null), it is the variant's prior's ``variance`` (1 for normal, alpha for spike_slab,
    # (high - low)^2 / 12 for uniform; 1 for a model without a prior), taken when the run is built,
    # so training uses the kernel of the autoencoding metric's latent_mmd; a number given wins.
    sigma2: float | None = attrs.field(default=None, validator=attrs.validators.optional(check.positive))
    scales: list[float] = attrs.field(factory=lambda: list(WAE_SCALES), validator=check.each(check.positive))


def prior_variance(prior: Any) -> float:
    """The per-coordinate variance ``sigma_z^2`` of a latent prior (its ``variance``; 1 without)."""
    return float(getattr(prior, "variance", 1.0))


class MMDPenalty:
    """WAE-MMD (Tolstikhin et al. 2018): lambda * MMD^2 between encoded codes and prior samples.

    The imq kernels' base scale is ``C = 2 d sigma_z^2`` with ``sigma_z^2`` the prior's variance
    (``sigma2`` left out: resolved in ``setup`` from ``model.prior``; ``self.sigma2`` is the value
    used, 1 until then) or the ``sigma2`` option when given.
    """

    phases: tuple[str, ...] = ("autoencoder",)
    needs: tuple[str, ...] = ("z", "prior_z")

    def __init__(self, options: MMDOptions) -> None:
        self.options = options
        self.sigma2 = 1.0 if options.sigma2 is None else options.sigma2

    def setup(self, model: Any, ctx: Any) -> None:
        """Take ``sigma_z^2`` from the model's prior unless ``sigma2`` was given."""
        if self.options.sigma2 is None:
            self.sigma2 = prior_variance(getattr(model, "prior", None))

    def penalty(self, ctx: dict[str, Any]) -> Tensor:
        z, prior_z = ctx["z"].float(), ctx["prior_z"].float()  # (B, d) each
        if self.options.kernel == "rbf":
            mmd = mmd_rbf(z, prior_z)
        else:
            mmd = mmd_imq(z, prior_z, self.options.scales, self.sigma2)
        return self.options.weight * mmd


# --- weight clipping ----------------------------------------------------------------------------


@attrs.define
class WeightClippingOptions:
    """Options of WGAN weight clipping."""

    clip: float = attrs.field(default=0.01, validator=check.positive)  # c: parameters stay in [-c, c]


class WeightClipping:
    """WGAN (Arjovsky et al. 2017): clamp every critic parameter to [-c, c] after each step."""

    phases: tuple[str, ...] = ("critic",)
    needs: tuple[str, ...] = ()

    def __init__(self, options: WeightClippingOptions) -> None:
        self.clip = options.clip

    def penalty(self, ctx: dict[str, Any]) -> None:
        return None

    @torch.no_grad()
    def after_step(self, modules: list[nn.Module], phase: str = "") -> None:
        for module in modules:
            for p in module.parameters():
                p.clamp_(-self.clip, self.clip)


# --- registration -------------------------------------------------------------------------------


@genfw.hookimpl
def genfw_register_regularisers(register: Register) -> None:
    register("gradient_penalty", GradientPenalty, options=GradientPenaltyOptions)
    register(
        "mmd",
        MMDPenalty,
        options=MMDOptions,
        help="WAE-MMD (Tolstikhin et al. 2018); imq scale C = 2 d sigma2, "
        "sigma2 = the prior's variance unless set",
    )
    register("weight_clipping", WeightClipping, options=WeightClippingOptions)
    register(
        "dragan",
        DraganPenalty,
        options=DraganOptions,
        help="DRAGAN (Kodali et al. 2017): gradient penalty on perturbations of real data.",
    )
