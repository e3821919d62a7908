"""Shared pieces of the autoencoder variants (``ae``, ``vae``, ``aae``, ``wae``, ``vsc``).

:class:`AutoencoderBase` gives every variant the same sampler (prior samples through the
decoder), ``encode``/``decode``/``reconstruct`` for metrics and pictures, and the wiring of a
latent critic (AAE, WAE-GAN). A variant sets ``self.prior`` and ``self.loss`` in ``build`` and
implements ``code(m, x)``: the deterministic code used to reconstruct.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from genfw import GenfwError, Modules, device_of


def decoded_mean(loss: Any, x_hat: Tensor) -> Tensor:
    """Map a decoder output to data space with the likelihood's mean (logits -> [-1, 1])."""
    mean = getattr(loss, "mean", None)
    return mean(x_hat) if mean is not None else x_hat


def categorical_block(prior: Any) -> int:
    """``K`` when the prior has a one-hot block of ``K`` categories in front (``categorical``), else 0."""
    return int(getattr(prior, "categories", 0) or 0)


def shape_code(prior: Any, raw: Tensor) -> Tensor:
    """A deterministic encoder's raw output as a code in the prior's support.

    With a ``categorical`` prior the first ``K`` coordinates go through a softmax (a point on the
    simplex, which the latent critic compares with the prior's one-hot vertices, as the
    semi-supervised AAE of Makhzani et al. 2016); the rest are left as they are.
    """
    k = categorical_block(prior)
    if k == 0:
        return raw
    return torch.cat([F.softmax(raw[:, :k], dim=1), raw[:, k:]], dim=1)


def prior_sample(prior: Any, n: int, device: torch.device, y: Tensor | None = None) -> Tensor:
    """``n`` prior samples; a categorical prior fixes its category to ``y`` when given."""
    if y is not None and categorical_block(prior):
        return prior.sample(n, device=device, labels=y)
    return prior.sample(n, device=device)


# Every autoencoder's preset for image data: hold out 10% of the data set and log the
# autoencoder metrics (reconstruction, sparsity, latent MMD, ELBO) every 500 steps.
AUTOENCODER_PRESETS: dict[str, dict[str, Any]] = {
    "image": {"train": {"holdout": 0.1, "eval_every": 500}, "metrics": {"autoencoding": {}}}
}


class AutoencoderBase:
    """Sampling, encoding, decoding and reconstruction shared by the autoencoder variants, and
    their common declarations (one ``autoencoder`` phase, no fixed regularisers, the image preset)."""

    phases: ClassVar[tuple[str, ...]] = ("autoencoder",)
    regularisers: ClassVar[dict[str, dict[str, Any]]] = {}
    presets: ClassVar[dict[str, dict[str, Any]]] = AUTOENCODER_PRESETS
    prior: Any
    loss: Any

    def __init__(self, options: Any):
        self.options = options

    def code(self, m: Modules, x: Tensor) -> Tensor:
        raise NotImplementedError

    def encode(self, m: Modules, x: Tensor, y: Tensor | None = None) -> Tensor:
        return self.code(m, x)

    def decode(self, m: Modules, z: Tensor, y: Tensor | None = None) -> Tensor:
        return decoded_mean(self.loss, m.generator(z))

    def sample(self, m: Modules, n: int, y: Tensor | None = None) -> Tensor:
        z = prior_sample(self.prior, n, device_of(m.generator), y)
        return self.decode(m, z)

    def reconstruct(self, m: Modules, x: Tensor, y: Tensor | None = None) -> Tensor:
        return self.decode(m, self.code(m, x))

    def model_fields(self) -> dict[str, Any]:
        """The :class:`genfw.Model` fields every autoencoder fills the same way."""
        return {
            "sample": self.sample,
            "reconstruct": self.reconstruct,
            "encode": self.encode,
            "decode": self.decode,
            "prior": self.prior,
            "num_classes": categorical_block(self.prior),
        }


def build_prior(ctx: Any, dim: int) -> Any:
    """The prior of slot ``prior``; a prior that cannot take this dimension is a GenfwError."""
    try:
        return ctx["prior"].build(dim=dim)
    except ValueError as exc:
        raise GenfwError(f"prior '{ctx['prior'].name}': {exc}") from None


def marginal_mmd(
    z: Tensor, prior_z: Tensor, sigma2: float = 1.0, scales: Sequence[float] | None = None
) -> Tensor:
    """Sum over coordinates ``j`` of the 1-D MMD^2 between ``z[:, j]`` and ``prior_z[:, j]``
    (``mmd_imq`` on one coordinate: inverse multiquadratics ``C / (C + (a - b)^2)`` with
    ``C = 2 sigma2 s`` for ``s`` in ``scales``, the WAE scales by default). It is the MMD of
    the additive kernel ``sum_j k(a_j, b_j)``: it compares the marginals one by one, and so sees
    a per-coordinate atom (spike and slab) that the joint kernel on all coordinates barely does."""
    from genfw_plugins.regularisers import WAE_SCALES

    n, m = z.shape[0], prior_z.shape[0]
    if n < 2 or m < 2:
        raise ValueError(f"marginal_mmd needs at least 2 samples on each side, got {n} and {m}")
    c = 2.0 * sigma2 * z.new_tensor(WAE_SCALES if scales is None else list(scales)).view(-1, 1, 1, 1)
    d_xx = (z.unsqueeze(1) - z.unsqueeze(0)).square()  # (n, n, d): one matrix per coordinate
    d_yy = (prior_z.unsqueeze(1) - prior_z.unsqueeze(0)).square()
    d_xy = (z.unsqueeze(1) - prior_z.unsqueeze(0)).square()
    k_xx, k_yy, k_xy = c / (c + d_xx), c / (c + d_yy), c / (c + d_xy)  # (scales, ., ., d)
    # Unbiased: the within-sample diagonals (each exactly 1) are left out, as in mmd_imq.
    within_x = (k_xx.sum((1, 2)) - n) / (n * (n - 1))
    within_y = (k_yy.sum((1, 2)) - m) / (m * (m - 1))
    return (within_x + within_y - 2.0 * k_xy.mean((1, 2))).sum()


def latent_critic_fn(m: Modules):
    """The latent critic as ``critic(z, y=None) -> (B,)`` raw scores."""

    def critic(z: Tensor, y: Tensor | None = None) -> Tensor:
        return m.critic(z).squeeze(1)

    return critic
