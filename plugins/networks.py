"""Built-in networks: ``mlp`` and ``dcgan``, each as a generator, a critic and an encoder.

Every network takes labels as ``forward(x, y=None)``. With ``num_classes > 0`` the label is
one-hot encoded and concatenated to the input (the code ``z`` of a generator, the flattened
sample of an MLP critic, the image channels of a DCGAN critic), as in the conditional GAN of
Mirza & Osindero (2014). The DCGAN networks also take ``conditioning: cbn`` (generator:
conditional batch norm, de Vries et al. 2017) and ``conditioning: projection`` (critic: the
projection critic of Miyato & Koyama 2018), as the ``resnet`` networks do.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import attrs
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import genfw
from genfw import validators as check
from genfw.hookspecs import Register
from genfw_plugins._layers import ConditionalBatchNorm2d, ProjectionCritic, label_embedding

# --- shared pieces ------------------------------------------------------------------------------

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "leaky_relu": lambda: nn.LeakyReLU(0.2),
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
}

OUTPUTS: dict[str, Callable[[], nn.Module]] = {
    # resolved by output_layer: tanh for images, none for vectors; an autoencoder whose
    # reconstruction loss takes logits (bernoulli) makes its decoder's auto none before building
    "auto": nn.Identity,
    "tanh": nn.Tanh,  # samples in [-1, 1], the range of image data sets
    "sigmoid": nn.Sigmoid,  # samples in [0, 1]
    "none": nn.Identity,  # raw values, e.g. logits for the bernoulli reconstruction loss
}


def activation(name: str) -> nn.Module:
    """A fresh activation module by name (``leaky_relu`` has slope 0.2)."""
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(f"unknown activation '{name}'; choose one of {', '.join(ACTIVATIONS)}") from None


def one_hot(y: Tensor | None, num_classes: int, like: Tensor) -> Tensor:
    """Labels ``y (B,)`` as one-hot rows ``(B, num_classes)`` with the dtype and device of ``like``."""
    if y is None:
        raise ValueError(f"this network is conditional ({num_classes} classes): pass labels y (B,)")
    return F.one_hot(y.long(), num_classes).to(dtype=like.dtype, device=like.device)


def condition(v: Tensor, y: Tensor | None, num_classes: int) -> Tensor:
    """Concatenate one-hot labels to flat rows ``v (B, n)`` -> ``(B, n + num_classes)``.

    Unconditional networks (``num_classes == 0``) return ``v`` unchanged and ignore ``y``.
    """
    if num_classes == 0:
        return v
    return torch.cat([v, one_hot(y, num_classes, v)], dim=1)


def _check_input(x: Tensor, shape: tuple[int, ...], what: str) -> None:
    if tuple(x.shape[1:]) != shape:
        raise ValueError(
            f"{what} expects inputs of shape (B, {', '.join(map(str, shape))}), got {tuple(x.shape)}"
        )


# --- MLP ----------------------------------------------------------------------------------------


@attrs.define
class MLPOptions:
    """Options of an MLP critic or encoder."""

    # Widths of the hidden layers; [] is allowed (a linear map), so not check.each.
    hidden: list[int] = attrs.field(
        factory=lambda: [256, 256], validator=attrs.validators.deep_iterable(check.positive)
    )
    activation: str = attrs.field(default="leaky_relu", validator=check.one_of(*ACTIVATIONS))
    # Batch norm after the hidden layers (a critic or encoder skips the first, as in DCGAN).
    batch_norm: bool = False


@attrs.define
class MLPGeneratorOptions(MLPOptions):
    """Options of an MLP generator."""

    output: str = attrs.field(default="auto", validator=check.one_of(*OUTPUTS))


def output_layer(name: str, out_shape: tuple[int, ...]) -> nn.Module:
    """The generator's last activation; ``auto`` is tanh for images ``(C, H, W)`` (data in
    [-1, 1]) and none for vectors such as 2-D points, which are unbounded. An autoencoder's
    decoder reaches here with ``none`` instead of ``auto`` when its reconstruction loss takes
    logits (``bernoulli``: ``genfw_plugins._autoencoder.decoder_spec``), since a tanh would cap
    them to [-1, 1]."""
    if name == "auto":
        name = "tanh" if len(out_shape) == 3 else "none"
    return OUTPUTS[name]()


def _mlp_body(sizes: list[int], act: str, batch_norm: bool, skip_first_norm: bool) -> list[nn.Module]:
    """Linear layers ``sizes[0] -> sizes[1] -> ...``, each followed by (batch norm and) ``act``."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        norm = batch_norm and not (skip_first_norm and i == 0)
        layers.append(nn.Linear(n_in, n_out, bias=not norm))
        if norm:
            layers.append(nn.BatchNorm1d(n_out))
        layers.append(activation(act))
    return layers


class MLPGenerator(nn.Module):
    """Fully connected generator: ``z (B, latent_dim)`` -> ``(B, *out_shape)``."""

    def __init__(
        self, options: MLPGeneratorOptions, latent_dim: int, out_shape: tuple[int, ...], num_classes: int
    ) -> None:
        super().__init__()
        self.latent_dim, self.out_shape, self.num_classes = latent_dim, tuple(out_shape), num_classes
        sizes = [latent_dim + num_classes, *options.hidden]
        self.net = nn.Sequential(
            *_mlp_body(sizes, options.activation, options.batch_norm, skip_first_norm=False),
            nn.Linear(sizes[-1], math.prod(self.out_shape)),
            output_layer(options.output, self.out_shape),
        )

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        _check_input(z, (self.latent_dim,), "generator")
        out = self.net(condition(z, y, self.num_classes))  # (B, prod(out_shape))
        return out.view(z.shape[0], *self.out_shape)


class MLPCritic(nn.Module):
    """Fully connected critic or encoder: ``x (B, *in_shape)`` -> ``(B, out_dim)``.

    ``forward(x, y) == head(features(x, y))``: ``features`` are the last hidden layer's outputs
    (the critic features of feature matching), ``head`` the final linear layer.
    """

    def __init__(
        self, options: MLPOptions, in_shape: tuple[int, ...], out_dim: int, num_classes: int
    ) -> None:
        super().__init__()
        self.in_shape, self.num_classes = tuple(in_shape), num_classes
        sizes = [math.prod(self.in_shape) + num_classes, *options.hidden]
        self.net = nn.Sequential(
            *_mlp_body(sizes, options.activation, options.batch_norm, skip_first_norm=True)
        )
        self.head = nn.Linear(sizes[-1], out_dim)

    def features(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """The input of ``head``: ``(B, hidden[-1])`` (the conditioned, flattened input without
        hidden layers)."""
        _check_input(x, self.in_shape, "network")
        return self.net(condition(x.flatten(1), y, self.num_classes))

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return self.head(self.features(x, y))


def mlp_generator(
    options: MLPGeneratorOptions, *, latent_dim: int, out_shape: tuple[int, ...], num_classes: int
) -> MLPGenerator:
    """Fully connected generator for any output shape."""
    return MLPGenerator(options, latent_dim, out_shape, num_classes)


def mlp_critic(
    options: MLPOptions, *, in_shape: tuple[int, ...], out_dim: int, num_classes: int
) -> MLPCritic:
    """Fully connected network for any input shape."""
    return MLPCritic(options, in_shape, out_dim, num_classes)


# --- DCGAN --------------------------------------------------------------------------------------

# Image sides are base * 2**steps with one of these bases and steps >= 1: 8, 16, 32, 64, ...
# from a 4x4 base and 14, 28, 56, ... from a 7x7 base (MNIST).
_BASES = (4, 7)
SUPPORTED_SHAPES = "(C, S, S) with S = 4 * 2**k or 7 * 2**k, k >= 1 (8, 16, 32, 64, ... or 14, 28, 56, ...)"
_MAX_WIDTH_FACTOR = 8  # widths stop growing at 8 * channels, as in DCGAN (128 -> 1024)


def dcgan_geometry(shape: tuple[int, ...]) -> tuple[int, int]:
    """``(base, steps)`` with ``side == base * 2**steps`` for an image shape ``(C, side, side)``."""
    if len(shape) == 3 and shape[1] == shape[2]:
        side = shape[1]
        for base in _BASES:
            steps = 0
            while base * 2**steps < side:
                steps += 1
            if steps >= 1 and base * 2**steps == side:
                return base, steps
    raise ValueError(f"dcgan networks cannot handle shape {tuple(shape)}; supported: {SUPPORTED_SHAPES}")


def _width(channels: int, level: int) -> int:
    """Width at ``level`` halvings of resolution from the image: channels * 2**level, capped."""
    return channels * min(2**level, _MAX_WIDTH_FACTOR)


def dcgan_init(module: nn.Module) -> None:
    """DCGAN's initialisation (Radford et al. 2016 and their code): weights N(0, 0.02), biases 0,
    batch-norm gains N(1, 0.02)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) and m.affine:  # cbn's gains are its own
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


@attrs.define
class DCGANOptions:
    """Options of a DCGAN critic or encoder."""

    # Width of the highest-resolution layer; it doubles at each halving, up to 8x.
    channels: int = attrs.field(default=64, validator=check.positive)
    # Batch norm after each layer (a critic or encoder skips its first conv, as in DCGAN).
    batch_norm: bool = True
    # Weights N(0, 0.02) as in the DCGAN paper; false keeps PyTorch's default initialisation.
    dcgan_init: bool = True


@attrs.define
class DCGANCriticOptions(DCGANOptions):
    """Options of a DCGAN critic."""

    # With labels: one-hot planes beside the image channels (concat) or the projection critic of
    # Miyato & Koyama 2018 on the flattened features (projection).
    conditioning: str = attrs.field(default="concat", validator=check.one_of("concat", "projection"))


@attrs.define
class DCGANGeneratorOptions(DCGANOptions):
    """Options of a DCGAN generator."""

    output: str = attrs.field(default="auto", validator=check.one_of(*OUTPUTS))
    # With labels: one-hot concatenated to z (concat) or conditional batch norm in place of each
    # batch norm (cbn, de Vries et al. 2017; needs batch_norm).
    conditioning: str = attrs.field(default="concat", validator=check.one_of("concat", "cbn"))


class DCGANGenerator(nn.Module):
    """DCGAN-style generator: ``z (B, latent_dim)`` -> images ``(B, C, S, S)``.

    A linear projection to ``(width, base, base)``, then 4x4 stride-2 transposed convs (batch
    norm, ReLU) doubling the side up to ``S``, then a 3x3 conv to the image channels and the
    output activation.
    """

    def __init__(
        self, options: DCGANGeneratorOptions, latent_dim: int, out_shape: tuple[int, ...], num_classes: int
    ) -> None:
        super().__init__()
        self.latent_dim, self.out_shape, self.num_classes = latent_dim, tuple(out_shape), num_classes
        base, steps = dcgan_geometry(self.out_shape)
        ch, bn = options.channels, options.batch_norm
        cbn = num_classes > 0 and options.conditioning == "cbn"
        if cbn and not bn:
            raise ValueError(
                "conditioning cbn conditions the batch norms: it needs batch_norm true (or use concat)"
            )
        self.concat = 0 if cbn else num_classes  # one-hot labels concatenated to z

        def norm(n: int) -> nn.Module:
            return ConditionalBatchNorm2d(n, num_classes) if cbn else nn.BatchNorm2d(n)

        top = _width(ch, steps)
        self.project = nn.Linear(latent_dim + self.concat, top * base * base, bias=not bn)
        blocks: list[nn.Module] = [nn.Unflatten(1, (top, base, base))]  # (B, top, base, base)
        if bn:
            blocks.append(norm(top))
        blocks.append(nn.ReLU())
        for level in range(steps, 0, -1):  # (width(level), s, s) -> (width(level - 1), 2s, 2s)
            n_in, n_out = _width(ch, level), _width(ch, level - 1)
            blocks.append(nn.ConvTranspose2d(n_in, n_out, 4, stride=2, padding=1, bias=not bn))
            if bn:
                blocks.append(norm(n_out))
            blocks.append(nn.ReLU())
        blocks.append(nn.Conv2d(ch, self.out_shape[0], 3, padding=1))
        blocks.append(output_layer(options.output, self.out_shape))
        self.body = nn.Sequential(*blocks)
        if options.dcgan_init:
            dcgan_init(self)

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        _check_input(z, (self.latent_dim,), "generator")
        h = self.project(condition(z, y, self.concat))
        if self.concat or not self.num_classes:
            return self.body(h)  # (B, C, S, S)
        for layer in self.body:  # conditional batch norms take the labels
            h = layer(h, y) if isinstance(layer, ConditionalBatchNorm2d) else layer(h)
        return h


class DCGANCritic(ProjectionCritic):
    """DCGAN-style critic or encoder: images ``(B, C, S, S)`` -> ``(B, out_dim)``.

    4x4 stride-2 convs with LeakyReLU(0.2) (batch norm from the second on) halve the side down to
    the base, then a linear layer maps to ``out_dim``: ``forward(x, y) == head(features(x, y))``.
    """

    def __init__(
        self, options: DCGANOptions, in_shape: tuple[int, ...], out_dim: int, num_classes: int
    ) -> None:
        super().__init__()
        self.in_shape, self.num_classes = tuple(in_shape), num_classes
        base, steps = dcgan_geometry(self.in_shape)
        ch = options.channels
        # Labels enter as constant one-hot planes beside the image channels, or (projection) as
        # the projection term on the features; an encoder's options have no conditioning.
        project = num_classes > 0 and getattr(options, "conditioning", "concat") == "projection"
        self.concat = 0 if project else num_classes
        n_in = self.in_shape[0] + self.concat
        layers: list[nn.Module] = []
        for level in range(steps):  # (n_in, s, s) -> (width(level), s/2, s/2)
            n_out = _width(ch, level)
            norm = options.batch_norm and level > 0
            layers.append(nn.Conv2d(n_in, n_out, 4, stride=2, padding=1, bias=not norm))
            if norm:
                layers.append(nn.BatchNorm2d(n_out))
            layers.append(nn.LeakyReLU(0.2))
            n_in = n_out
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(n_in * base * base, out_dim)
        if options.dcgan_init:
            dcgan_init(self)
        # After dcgan_init: the projection embedding keeps the authors' Glorot initialisation.
        self.embed = label_embedding(num_classes, n_in * base * base) if project else None

    def features(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """The input of ``head``: the last conv block's output, flattened ``(B, width * base**2)``."""
        _check_input(x, self.in_shape, "network")
        if self.concat:
            planes = one_hot(y, self.num_classes, x)[:, :, None, None]  # (B, K, 1, 1)
            x = torch.cat([x, planes.expand(-1, -1, *x.shape[2:])], dim=1)  # (B, C + K, S, S)
        return self.body(x).flatten(1)


def dcgan_generator(
    options: DCGANGeneratorOptions, *, latent_dim: int, out_shape: tuple[int, ...], num_classes: int
) -> DCGANGenerator:
    """DCGAN-style convolutional generator for square images (8, 16, 28, 32, 64, ... pixels)."""
    return DCGANGenerator(options, latent_dim, out_shape, num_classes)


def dcgan_critic(
    options: DCGANOptions | DCGANCriticOptions, *, in_shape: tuple[int, ...], out_dim: int, num_classes: int
) -> DCGANCritic:
    """DCGAN-style convolutional network for square images (8, 16, 28, 32, 64, ... pixels)."""
    return DCGANCritic(options, in_shape, out_dim, num_classes)


# --- registration -------------------------------------------------------------------------------


@genfw.hookimpl
def genfw_register_generators(register: Register) -> None:
    register(
        "mlp",
        mlp_generator,
        options=MLPGeneratorOptions,
        help="Fully connected generator for any output shape.",
    )
    register(
        "dcgan",
        dcgan_generator,
        options=DCGANGeneratorOptions,
        help="DCGAN-style convolutional generator for square images (8, 16, 28, 32, 64, ... pixels).",
    )


@genfw.hookimpl
def genfw_register_critics(register: Register) -> None:
    register("mlp", mlp_critic, options=MLPOptions, help="Fully connected critic for any input shape.")
    register(
        "dcgan",
        dcgan_critic,
        options=DCGANCriticOptions,
        help="DCGAN-style convolutional critic for square images.",
    )


@genfw.hookimpl
def genfw_register_encoders(register: Register) -> None:
    register("mlp", mlp_critic, options=MLPOptions, help="Fully connected encoder for any input shape.")
    register(
        "dcgan",
        dcgan_critic,
        options=DCGANOptions,
        help="DCGAN-style convolutional encoder for square images.",
    )
