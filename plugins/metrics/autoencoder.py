"""Metric ``autoencoding``: reconstruction, likelihood, sparsity and latent match of an autoencoder.

Computed on up to ``num_examples`` examples of the run's held-out split (``train.holdout``; the
key ``held_out`` is 1) or, when the run holds none out, of the training data (``held_out`` 0):

- ``reconstruction``: mean over examples of ``||x - x_rec||^2`` summed over dimensions, in data
  space (``x_rec`` = ``model.reconstruct``: the decoder's mean at the code), the same for every
  variant whatever its training loss; ``reconstruction_pixel`` is the same per dimension.
- ``elbo`` and ``log_likelihood`` (models with ``log_weights``: ``vae`` and ``vsc`` with a loss
  that is a normalised likelihood, ``gaussian`` or ``bernoulli``; with ``mse`` or ``l1``, costs
  without their normalising constant, they give none and both are left out): with
  ``w_i = log p(x, z_i) - log q(z_i | x)``, ``z_i ~ q(z | x)``, ``i = 1..k``, ``elbo`` is the mean
  of ``w_i`` and ``log_likelihood`` is ``log (1/k) sum_i exp(w_i)``, the importance-weighted
  bound of Burda et al. 2016 (IWAE), a lower bound on ``log p(x)`` that tightens as ``k`` grows;
  nats per example, averaged. ``k = importance_samples`` (default 64).
- ``near_zero``: the fraction of code coordinates ``|z_j| < threshold``; ``near_zero_prior``: the
  same fraction for as many prior samples, so codes and prior are compared at one threshold;
  ``exact_zero``: coordinates exactly 0; ``prior_zero``: the prior's fraction of exact zeros,
  ``1 - alpha`` for ``spike_slab`` (0 for a prior without an atom). ``threshold = 0.1`` by
  default: 0.1 standard deviations of the spike-and-slab's N(0, 1) slab, whose own mass within
  it is ``P(|N(0,1)| < 0.1) = 0.0797``; so a prior with slab weight ``alpha`` has
  ``near_zero_prior = (1 - alpha) + 0.0797 alpha`` in expectation.
- ``latent_mmd``: unbiased MMD^2 between the codes and as many prior samples, inverse
  multiquadratics kernels at the WAE scales with ``sigma2`` the prior's per-coordinate variance
  (``mmd_imq``; the kernel the ``mmd`` regulariser trains a WAE with, unless its ``sigma2`` is
  set); about 0 (within sampling noise, it can be negative) when they match.
  ``marginal_mmd``: the sum over coordinates of the same 1-D MMD^2 per coordinate
  (``marginal_mmd``), which sees a mismatch of each marginal, e.g. missing zeros of a
  spike-and-slab prior, that the joint kernel on all coordinates barely registers.
"""

from __future__ import annotations

import math

import attrs
import torch

import genfw
from genfw import validators as check
from genfw.hookspecs import Register
from genfw_plugins._autoencoder import AutoencoderModel, autoencoders, marginal_mmd
from genfw_plugins.regularisers import mmd_imq, prior_variance


@attrs.define
class AutoencoderMetricOptions:
    num_examples: int = attrs.field(default=1000, validator=check.at_least(2))
    """Examples to encode (held-out ones where the run holds some out)."""
    importance_samples: int = attrs.field(default=64, validator=check.at_least(1))
    """k of the IWAE estimate (models with a likelihood)."""
    threshold: float = attrs.field(default=0.1, validator=check.positive)
    """A code coordinate is near zero when ``|z_j| < threshold``."""
    batch_size: int = attrs.field(default=250, validator=check.at_least(1))


def near_zero_fraction(z: torch.Tensor, threshold: float) -> float:
    """Fraction of entries of ``z`` with ``|z| < threshold``."""
    return float((z.abs() < threshold).float().mean())


def iwae_bound(log_weights: torch.Tensor) -> torch.Tensor:
    """``log (1/k) sum_i exp(w_i)`` over the first dimension of ``(k, B)`` log-weights -> ``(B,)``."""
    return torch.logsumexp(log_weights, dim=0) - math.log(log_weights.shape[0])


class AutoencoderMetric:
    """Reconstruction error, ELBO and IWAE log-likelihood, code sparsity, MMD to the prior."""

    def __init__(self, options: AutoencoderMetricOptions) -> None:
        self.options = options

    @torch.no_grad()
    def __call__(self, ctx: genfw.EvalContext) -> dict[str, float]:
        model, modules, o = ctx.model, ctx.modules, self.options
        if (
            not isinstance(model, AutoencoderModel)
            or modules is None
            or model.encode is None
            or model.reconstruct is None
        ):
            raise genfw.GenfwError(
                f"metric 'autoencoding' needs an autoencoder variant ({autoencoders()}): "
                "a model with encode and reconstruct"
            )
        if ctx.held_out is not None:
            x, y = ctx.held_out(o.num_examples)
            held = 1.0
        else:
            x, y = ctx.real(o.num_examples), None
            held = 0.0
        was_training = {k: mod.training for k, mod in modules.items()}
        for mod in modules.values():
            mod.eval()
        try:
            codes, sq, elbo, iwae = [], [], [], []
            for start in range(0, x.shape[0], o.batch_size):
                xb = x[start : start + o.batch_size].to(ctx.device)
                yb = None if y is None else y[start : start + o.batch_size].to(ctx.device)
                codes.append(model.encode(modules, xb, yb).float().cpu())
                rec = model.reconstruct(modules, xb, yb).float()
                sq.append((rec - xb.float()).square().flatten(1).sum(1).cpu())
                if model.log_weights is not None:
                    w = model.log_weights(modules, xb, o.importance_samples).double()  # (k, B)
                    elbo.append(w.mean(0).cpu())
                    iwae.append(iwae_bound(w).cpu())
        finally:
            for k, mod in modules.items():
                mod.train(was_training[k])
        z = torch.cat(codes)
        sq_err = torch.cat(sq)
        dims = x[0].numel()
        out = {
            "held_out": held,
            "reconstruction": float(sq_err.mean()),
            "reconstruction_pixel": float(sq_err.mean()) / dims,
            "near_zero": near_zero_fraction(z, o.threshold),
            "exact_zero": float((z == 0).float().mean()),
        }
        prior = model.prior
        if prior is not None:
            # Its own generator: the same prior samples whatever the model drew before.
            pz = prior.sample(z.shape[0], device="cpu", generator=torch.Generator().manual_seed(0)).float()
            out["near_zero_prior"] = near_zero_fraction(pz, o.threshold)
            out["prior_zero"] = float(getattr(prior, "sparsity", 0.0))
            sigma2 = prior_variance(prior)  # the mmd regulariser's default kernel too
            out["latent_mmd"] = float(mmd_imq(z.double(), pz.double(), sigma2=sigma2))
            out["marginal_mmd"] = float(marginal_mmd(z.double(), pz.double(), sigma2=sigma2))
        if elbo:
            out["elbo"] = float(torch.cat(elbo).mean())
            out["log_likelihood"] = float(torch.cat(iwae).mean())
        return out


@genfw.hookimpl
def genfw_register_metrics(register: Register) -> None:
    register(
        "autoencoding",
        AutoencoderMetric,
        options=AutoencoderMetricOptions,
        help="reconstruction, ELBO/IWAE, code sparsity, MMD codes vs prior",
    )
