"""Metric ``mode_coverage``: modes captured and share of high-quality samples on a known mixture.

The definition is the one of VEEGAN (Srivastava et al. 2017, "VEEGAN: Reducing mode collapse in
GANs using implicit variational learning", experiments on synthetic data), reused unchanged by PacGAN
(Lin et al. 2018, "PacGAN: The power of two samples in generative adversarial networks", section
on synthetic data: 2D-ring and 2D-grid, Table 1). Draw 2500 samples from the generator:

- a sample is *high quality* if it lies within three standard deviations of its nearest mode;
- the *number of modes captured* is the number of mixture components whose centre is the
  nearest centre of at least one high-quality sample;
- the *percentage of high-quality samples* measures sample quality.

PacGAN's reference code (``fjxmlzn/PacGAN``, ``synthetic_data_experiments/PacGAN/pacgan/
extensions.py``, class ``MetricLogger``) computes exactly this: each sample goes to the mode at
the smallest standard-deviation-scaled distance, it is high quality when that distance is ``< 3``
(``dis_thre=3``), and a mode counts when its number of high-quality samples is non-zero. Hence the
defaults ``num_samples=2500``, ``threshold_std=3.0`` and ``min_samples=1``; ``min_samples > 1`` is
a stricter variant, not the papers'.

``kl_modes`` is the reverse KL divergence ``KL(p || uniform) = sum_k p_k log(K p_k)``, ``p`` being
the normalised histogram of the high-quality samples over the ``K`` modes: PacGAN's Table 1 reports
a reverse KL beside the two measures above, and its code builds that histogram
(``detail_of_coverage``) and its entropy ``H(p)``, with ``KL(p || uniform) = log K - H(p)``. It is
0 for a perfectly balanced generator, ``log K`` when every high-quality sample sits on one mode,
and NaN when no sample is high quality (``p`` is undefined).
"""

from __future__ import annotations

import math

import attrs
import torch

import genfw
from genfw import validators as check
from genfw.hookspecs import Register


@attrs.define
class ModeCoverageOptions:
    num_samples: int = attrs.field(default=2500, validator=check.at_least(1))
    """Generated samples to draw (2500 in VEEGAN and PacGAN)."""
    threshold_std: float = attrs.field(default=3.0, validator=check.positive)
    """A sample is high quality within this many standard deviations of its nearest mode."""
    min_samples: int = attrs.field(default=1, validator=check.at_least(1))
    """High-quality samples a mode needs to count as captured (1 in the papers)."""


def mode_coverage(
    samples: torch.Tensor,
    modes: torch.Tensor,
    std: float,
    threshold_std: float = 3.0,
    min_samples: int = 1,
) -> dict[str, float]:
    """Mode coverage of ``samples (N, D)`` on an isotropic mixture with centres ``modes (K, D)``.

    Each sample is assigned to its nearest centre (Euclidean; with one ``std`` for every mode
    this is also the nearest in standard deviations); it is high quality when that distance is
    below ``threshold_std * std``. Returns ``modes`` (modes with at least ``min_samples``
    high-quality samples), ``modes_total`` (``K``), ``high_quality`` (share of samples in
    ``[0, 1]``) and ``kl_modes`` (``KL(p || uniform)`` of the high-quality samples' modes).
    Non-finite samples are never high quality.
    """
    x = samples.detach().reshape(samples.shape[0], -1).to(torch.float64)
    centres = modes.detach().to(torch.float64)
    k = centres.shape[0]
    if x.shape[1] != centres.shape[1]:
        raise ValueError(f"samples have {x.shape[1]} dimensions but modes have {centres.shape[1]}")

    dist, nearest = torch.cdist(x, centres).min(dim=1)
    high = dist < threshold_std * std  # NaN compares false
    counts = torch.bincount(nearest[high], minlength=k)

    n_high = int(counts.sum())
    if n_high > 0:
        p = counts[counts > 0].to(torch.float64) / n_high
        kl = float((p * (p * k).log()).sum())
    else:
        kl = math.nan
    return {
        "modes": float((counts >= min_samples).sum()),
        "modes_total": float(k),
        "high_quality": n_high / x.shape[0] if x.shape[0] else 0.0,
        "kl_modes": kl,
    }


class ModeCoverage:
    """Modes captured and share of samples within 3 std of a mode (VEEGAN/PacGAN; toy2d)."""

    def __init__(self, options: ModeCoverageOptions) -> None:
        self.options = options

    def __call__(self, ctx: genfw.EvalContext) -> dict[str, float]:
        dataset = ctx.dataset
        modes = getattr(dataset, "modes", None)
        std = getattr(dataset, "mode_std", None)
        if modes is None or std is None:
            raise genfw.GenfwError(
                "metric 'mode_coverage' needs a data set with known modes (toy2d); "
                f"got dataset {type(dataset).__name__}, which has no 'modes' and 'mode_std'"
            )
        samples = ctx.sample(self.options.num_samples)
        return mode_coverage(
            samples,
            torch.as_tensor(modes),
            float(std),
            threshold_std=self.options.threshold_std,
            min_samples=self.options.min_samples,
        )


@genfw.hookimpl
def genfw_register_metrics(register: Register) -> None:
    register("mode_coverage", ModeCoverage, options=ModeCoverageOptions)
