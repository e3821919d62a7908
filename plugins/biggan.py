"""BigGAN (Brock et al. 2019, "Large Scale GAN Training for High Fidelity Natural Image Synthesis")
at CIFAR scale: the generator network ``biggan`` and the variant ``biggan``.

Generator (BigGAN-PyTorch ``BigGAN.py``, ``layers.py``): ``z`` is split into ``k + 1`` chunks
(hierarchical latent, ``k`` the number of up-blocks); the first goes through a linear layer to
``(w0, 4, 4)``; block ``i`` gets ``c_i = [shared(y), z_{i+1}]``, the shared class embedding
(``shared_dim``, one table for every block) beside its own chunk, and each of its batch norms is
``(1 + G c_i) * BN(h) + B c_i`` (:class:`genfw_plugins._layers.VectorConditionalBatchNorm2d`, ``G``
and ``B`` linear maps without bias). The blocks are the ``resnet`` up-blocks
(:class:`genfw_plugins.resnet.GeneratorBlock`) given those norms, the widths those of the
``resnet`` generator (BigGAN's ``arch[32]`` is 3 blocks of ``4 * ch = 256``), SAGAN's
self-attention after the block that reaches ``attention_side``; then ``BN-ReLU-conv3-tanh``. Spectral
norm on every conv and linear layer of G (not the shared embedding, as the authors').

The variant: that generator, the ``resnet`` critic with projection (spectral norm through the
``spectral_norm`` remedy), the hinge loss, Adam(beta1 0, beta2 0.999, eps 1e-6), orthogonal
regularisation of G (``orthogonal``, beta 1e-4) and the EMA of G (``ema``, decay 0.9999 from step
``ema_start``) as remedies, and the truncation trick: ``genfw sample --truncation PSI`` draws ``z``
from the normal truncated to ``[-psi, psi]`` (out-of-range entries redrawn, not clipped).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import attrs
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import genfw
from genfw import BuildContext, GenfwError, Model, Modules, Optim, Slot, device_of
from genfw import validators as check
from genfw.hookspecs import Register
from genfw_plugins._layers import VectorConditionalBatchNorm2d
from genfw_plugins.networks import OUTPUTS, _check_input, output_layer
from genfw_plugins.resnet import (
    WIDTHS,
    BatchNorm2d,
    GeneratorBlock,
    _attention_at,
    _conv,
    _linear,
    generator_widths,
    resnet_steps,
)
from genfw_plugins.sagan import SelfAttention
from genfw_plugins.sngan import SNGAN

BN_EPS = 1e-5  # BigGAN-PyTorch's BN_eps


@attrs.define
class BigGANGeneratorOptions:
    """Options of the BigGAN generator."""

    # Width of every block (constant, BigGAN's 32-pixel arch: 4 * G_ch = 256) or of the last one
    # (pyramid); 0: the resnet generator's defaults (256 constant, 64 pyramid).
    channels: int = attrs.field(default=0, validator=check.non_negative)
    widths: str = attrs.field(default="auto", validator=check.one_of(*WIDTHS))
    spectral_norm: bool = True  # every conv and linear layer, the shared embedding excepted
    attention_side: int = attrs.field(default=0, validator=check.non_negative)
    shared_dim: int = attrs.field(default=128, validator=check.at_least(1))  # the class embedding
    hierarchical: bool = True  # z split into one chunk per block plus one for the first linear
    output: str = attrs.field(default="auto", validator=check.one_of(*OUTPUTS))


def latent_chunks(latent_dim: int, slots: int) -> list[int]:
    """The sizes of the ``slots`` chunks ``z`` is split into: equal where ``slots`` divides
    ``latent_dim`` (BigGAN's), else the first ``latent_dim % slots`` one larger."""
    base, extra = divmod(latent_dim, slots)
    return [base + (i < extra) for i in range(slots)]


class BigGANGenerator(nn.Module):
    """BigGAN generator: ``z (B, latent_dim)`` (and labels ``y (B,)``) -> images ``(B, C, S, S)``."""

    def __init__(
        self, options: BigGANGeneratorOptions, latent_dim: int, out_shape: tuple[int, ...], num_classes: int
    ) -> None:
        super().__init__()
        self.latent_dim, self.out_shape, self.num_classes = latent_dim, tuple(out_shape), num_classes
        k = resnet_steps(self.out_shape, "generator")
        widths = generator_widths(options, self.out_shape[1])  # type: ignore[arg-type]
        sn = options.spectral_norm
        self.hierarchical = options.hierarchical
        if self.hierarchical and latent_dim < k + 1:
            raise ValueError(
                f"a hierarchical biggan generator of {k} blocks splits z into {k + 1} chunks: latent_dim must "
                f"be at least {k + 1}, got {latent_dim} (or set --generator.hierarchical false)"
            )
        self.chunks = latent_chunks(latent_dim, k + 1) if self.hierarchical else [latent_dim] + [0] * k
        # Not spectrally normalised, as the authors' ("applying SN to G's embedding seems to
        # randomly cripple G"); Glorot uniform as their CIFAR init.
        self.shared: nn.Embedding | None = None
        shared_dim = 0
        if num_classes > 0:
            self.shared = nn.Embedding(num_classes, options.shared_dim)
            nn.init.xavier_uniform_(self.shared.weight)
            shared_dim = options.shared_dim
        self.base = widths[0]
        self.linear = _linear(self.chunks[0], 16 * widths[0], sn)  # -> (w0, 4, 4)
        at = _attention_at(options.attention_side, [4 * 2**i for i in range(1, k + 1)], "generator")
        self.blocks = nn.ModuleList()
        self.attention = nn.ModuleDict()
        for i in range(k):  # (w_i, s, s) -> (w_{i+1}, 2s, 2s)
            cond = shared_dim + self.chunks[i + 1]

            def norm(n: int, cond: int = cond) -> nn.Module:
                if cond == 0:  # unconditional and not hierarchical: plain batch norm
                    return BatchNorm2d(n, eps=BN_EPS)
                return VectorConditionalBatchNorm2d(n, cond, eps=BN_EPS, sn=sn)

            self.blocks.append(GeneratorBlock(widths[i], widths[i + 1], sn=sn, norm=norm))
            if at == 4 * 2 ** (i + 1):
                self.attention[str(i)] = SelfAttention(widths[i + 1], spectral=sn)
        self.bn = BatchNorm2d(widths[-1], eps=BN_EPS)  # plain, as the authors' output layer
        self.conv = _conv(widths[-1], self.out_shape[0], 3, 1.0, sn)
        self.out = output_layer(options.output, self.out_shape)

    def conditions(self, z: Tensor, y: Tensor | None) -> tuple[Tensor, list[Tensor | None]]:
        """``(z_0, [c_1 .. c_k])``: the first linear layer's input and each block's conditioning
        vector ``c_i = [shared(y), z_i]`` (``None`` where a block has none)."""
        zs = list(torch.split(z, self.chunks, dim=1))  # (B, chunk_i) each
        parts: list[Tensor] = []
        if self.shared is not None:
            if y is None:
                raise ValueError(
                    f"this generator is conditional ({self.num_classes} classes): pass labels y (B,)"
                )
            parts.append(self.shared(y.long()).to(z.dtype))  # (B, shared_dim), once for every block
        cs: list[Tensor | None] = []
        for zi in zs[1:]:
            c = torch.cat([*parts, zi], dim=1)
            cs.append(c if c.shape[1] else None)
        return zs[0], cs

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        _check_input(z, (self.latent_dim,), "generator")
        z0, cs = self.conditions(z, y)
        h = self.linear(z0).view(z.shape[0], self.base, 4, 4)
        for i, block in enumerate(self.blocks):
            h = block(h, cs[i])
            if str(i) in self.attention:
                h = self.attention[str(i)](h)
        return self.out(self.conv(F.relu(self.bn(h))))  # (B, C, S, S)


def biggan_generator(
    options: BigGANGeneratorOptions, *, latent_dim: int, out_shape: tuple[int, ...], num_classes: int
) -> BigGANGenerator:
    """BigGAN generator (Brock et al. 2019) for square images of side 4 * 2**k."""
    return BigGANGenerator(options, latent_dim, out_shape, num_classes)


# --- the truncation trick -------------------------------------------------------------------------


def truncated_normal(n: int, dim: int, psi: float, device: torch.device | str = "cpu") -> Tensor:
    """``(n, dim)`` draws of the standard normal truncated to ``[-psi, psi]``: every entry outside
    is redrawn until it falls inside (BigGAN's truncation trick; not clipped). From torch's seeded
    generator."""
    if not (math.isfinite(psi) and psi > 0):
        raise GenfwError(
            f"truncation psi must be a positive finite number, got {psi}; BigGAN's z is redrawn "
            f"where |z| > psi (e.g. --truncation 0.5; large psi is no truncation)"
        )
    z = torch.randn(n, dim, device=device)
    out = z.abs() > psi
    while bool(out.any()):
        z[out] = torch.randn(int(out.sum()), device=device)
        out = z.abs() > psi
    return z


# --- the variant ----------------------------------------------------------------------------------


@attrs.define
class BigGANOptions:
    latent_dim: int = attrs.field(default=128, validator=check.at_least(1))
    # The authors' CIFAR-10 script (BigGAN-PyTorch README): Adam(2e-4, 2e-4), 4 D steps, batch 50.
    lr_generator: float = attrs.field(default=2e-4, validator=check.positive)
    lr_critic: float = attrs.field(default=2e-4, validator=check.positive)
    beta1: float = attrs.field(default=0.0, validator=check.in_interval(0, 1, high_open=True))
    beta2: float = attrs.field(default=0.999, validator=check.in_interval(0, 1, high_open=True))
    adam_eps: float = attrs.field(default=1e-6, validator=check.positive)
    n_critic: int = attrs.field(default=4, validator=check.at_least(1))
    n_generator: int = attrs.field(default=1, validator=check.at_least(1))
    # Orthogonal regularisation of G (the paper's 1e-4); 0: none (the authors' CIFAR script).
    ortho: float = attrs.field(default=1e-4, validator=check.non_negative)
    # EMA of G: decay, and the generator steps before it starts averaging (copies until then).
    ema_decay: float = attrs.field(default=0.9999, validator=check.in_interval(0, 1, high_open=True))
    ema_start: int = attrs.field(default=1000, validator=check.non_negative)
    conditional: str = attrs.field(default="auto", validator=check.one_of("auto", "always", "never"))


class BigGAN(SNGAN):
    """BigGAN (Brock et al. 2019): shared embedding, hierarchical z, cBN, projection, orthogonal reg., EMA."""

    slots: ClassVar[dict[str, Slot]] = {
        **SNGAN.slots,
        "generator": Slot("generator", "biggan", help="maps prior codes (and a label) to samples"),
    }
    truncation: ClassVar[bool] = True
    options: BigGANOptions  # type: ignore[assignment]

    @classmethod
    def remedies(cls, options: BigGANOptions) -> dict[str, dict[str, Any]]:  # type: ignore[override]
        own: dict[str, dict[str, Any]] = {
            "spectral_norm": {},  # the critic's; the biggan generator normalises its own layers
            "ema": {"decay": options.ema_decay, "warmup": False, "start": options.ema_start},
        }
        if options.ortho > 0:
            own["orthogonal"] = {"beta": options.ortho}
        return own

    def build(self, ctx: BuildContext) -> Model:
        if ctx["prior"].name != "normal":
            raise GenfwError(
                f"biggan draws z from the standard normal (its truncation trick truncates it); "
                f"--prior {ctx['prior'].name} is not valid, use --prior normal"
            )
        model = super().build(ctx)
        model.truncate = self.truncated
        return model

    def optim(self, lr: float) -> Optim:
        o = self.options
        return Optim("adam", lr, (o.beta1, o.beta2), eps=o.adam_eps)

    def truncated(self, m: Modules, n: int, y: Tensor | None, psi: float) -> Tensor:
        """``n`` samples from ``z`` drawn from the normal truncated to ``[-psi, psi]``."""
        g = m.generator
        z = truncated_normal(n, self.options.latent_dim, psi, device_of(g))
        return g(z, y if self.num_classes else None)


@genfw.hookimpl
def genfw_register_generators(register: Register) -> None:
    register(
        "biggan",
        biggan_generator,
        options=BigGANGeneratorOptions,
        help="BigGAN generator (Brock et al. 2019): resnet blocks, shared class embedding, hierarchical "
        "latent, conditional batch norm from [embedding, z chunk], spectral norm.",
    )


@genfw.hookimpl
def genfw_register_variants(register: Register) -> None:
    register(
        "biggan",
        BigGAN,
        options=BigGANOptions,
        help="BigGAN (Brock et al. 2019) at CIFAR scale: hierarchical z, shared embedding, cBN, projection, "
        "hinge, orthogonal reg., EMA of G, truncated z (genfw sample --truncation).",
    )
