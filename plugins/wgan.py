"""WGAN (Arjovsky et al. 2017) and WGAN-GP (Gulrajani et al. 2017): Wasserstein critics.

WGAN: critic ``E f(G(z)) - E f(x)``, generator ``-E f(G(z))``; the critic is kept Lipschitz by
clamping its weights to ``[-c, c]`` after every critic step (the ``weight_clipping``
regulariser, whose ``after_step`` the loop runs after each of the ``n_critic`` repeats). The
paper's Algorithm 1: RMSProp(5e-5), c = 0.01, n_critic = 5.

WGAN-GP: the Wasserstein critic with a gradient penalty.

Critic: ``E f(G(z)) - E f(x) + lambda E (||grad f(x_hat)||_2 - 1)^2`` with
``x_hat = eps x + (1 - eps) G(z)``, one ``eps ~ U[0, 1]`` per example (the penalty is the
``gradient_penalty`` regulariser in ``genfw_plugins/regularisers.py``). Generator:
``-E f(G(z))``. The paper's defaults: lambda = 10, n_critic = 5, Adam(1e-4, beta1 0, beta2 0.9).
"""

from __future__ import annotations

from typing import Any, ClassVar

import attrs

import genfw
from genfw import Optim, Slot
from genfw import validators as check
from genfw_plugins.gan import GAN

# The generator and the critic of gan_toy.py, the WGAN-GP authors' code for the 2-D toy data
# (igul222/improved_wgan_training): DIM = 512, three hidden ReLU layers each
# (``ReLULayer`` x 3, then a linear output). Their He initialisation is not reproduced: the mlp
# keeps PyTorch's default.
GAN_TOY_NETWORK: dict[str, Any] = {"name": "mlp", "hidden": [512, 512, 512], "activation": "relu"}
# PacGAN's toy networks (Lin et al. 2018, the 2-D experiments): a generator of four hidden ReLU
# layers of 400 units and a critic of three of 200.
PACGAN_TOY_GENERATOR: dict[str, Any] = {"name": "mlp", "hidden": [400, 400, 400, 400], "activation": "relu"}
PACGAN_TOY_CRITIC: dict[str, Any] = {"name": "mlp", "hidden": [200, 200, 200], "activation": "relu"}


@attrs.define
class WGANOptions:
    latent_dim: int = attrs.field(default=64, validator=check.at_least(1))
    lr_generator: float = attrs.field(default=5e-5, validator=check.positive)
    lr_critic: float = attrs.field(default=5e-5, validator=check.positive)
    n_critic: int = attrs.field(default=5, validator=check.at_least(1))
    n_generator: int = attrs.field(default=1, validator=check.at_least(1))  # generator steps per step


class WGAN(GAN):
    """Wasserstein GAN with weight clipping (Arjovsky et al. 2017); c is
    ``--regularisers.weight_clipping.clip``."""

    slots: ClassVar[dict[str, Slot]] = {**GAN.slots, "loss": Slot("loss", "wasserstein", role="adversarial")}
    optimizer: ClassVar[str] = "rmsprop"
    # 2-D toy data: the settings of the 'wgan' mode of the WGAN-GP authors' gan_toy.py (same
    # RMSProp(5e-5), c = 0.01 and n_critic 5; its networks GAN_TOY_NETWORK, 2-D noise and batches
    # of 256). With the default 2 x 256 leaky-ReLU networks the ring of 8 ends at 4 modes.
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "points": {
            "variant": {"latent_dim": 2},
            "generator": GAN_TOY_NETWORK,
            "critic": GAN_TOY_NETWORK,
            "train": {"batch_size": 256},
        },
    }

    @classmethod
    def remedies(cls, options: WGANOptions) -> dict[str, dict[str, Any]]:
        return {"weight_clipping": {"clip": 0.01}}

    def optim(self, lr: float) -> Optim:
        return Optim(self.optimizer, lr)


@attrs.define
class WGANGPOptions:
    latent_dim: int = attrs.field(default=64, validator=check.at_least(1))
    lr_generator: float = attrs.field(default=1e-4, validator=check.positive)
    lr_critic: float = attrs.field(default=1e-4, validator=check.positive)
    beta1: float = attrs.field(default=0.0, validator=check.in_interval(0, 1, high_open=True))
    beta2: float = attrs.field(default=0.9, validator=check.in_interval(0, 1, high_open=True))
    n_critic: int = attrs.field(default=5, validator=check.at_least(1))
    n_generator: int = attrs.field(default=1, validator=check.at_least(1))  # generator steps per step


class WGANGP(GAN):
    """Wasserstein GAN with gradient penalty (Gulrajani et al. 2017)."""

    slots: ClassVar[dict[str, Slot]] = {**GAN.slots, "loss": Slot("loss", "wasserstein", role="adversarial")}
    # On 2-D toy data: the authors' own settings (gan_toy.py in igul222/improved_wgan_training):
    # lambda = 0.1, batches of 256, 2-D noise and Adam beta1 = 0.5 (lr 1e-4, beta2 0.9 and
    # n_critic 5 are the paper's): with lambda = 10 the penalty swamps the Wasserstein term at this
    # scale. The networks are PacGAN's toy ones, and samples come from an EMA of G (a departure
    # from both papers' toy code, stated in the README): on the ring of 8 at 5000 steps this gives
    # 8/8 modes and 96.4%, 96.0%, 95.3% high-quality samples (seeds 0-2), where gan_toy.py's
    # 3 x 512 networks gave 75.5% (seed 0) and PacGAN's without EMA oscillate (94.0% at 4500
    # steps, 64.7% at 5000).
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "points": {
            "variant": {"latent_dim": 2, "beta1": 0.5},
            "generator": PACGAN_TOY_GENERATOR,
            "critic": PACGAN_TOY_CRITIC,
            "regularisers": {"gradient_penalty": {"weight": 0.1}, "ema": {}},
            "train": {"batch_size": 256},
        }
    }

    @classmethod
    def remedies(cls, options: WGANGPOptions) -> dict[str, dict[str, Any]]:
        return {"gradient_penalty": {"weight": 10.0}}


@genfw.hookimpl
def genfw_register_variants(register):
    register(
        "wgan",
        WGAN,
        options=WGANOptions,
        help="WGAN (Arjovsky et al. 2017): Wasserstein critic, weight clipping, RMSProp, n_critic 5.",
    )
    register(
        "wgan-gp",
        WGANGP,
        options=WGANGPOptions,
        help="WGAN-GP (Gulrajani et al. 2017): Wasserstein critic with a gradient penalty.",
    )
