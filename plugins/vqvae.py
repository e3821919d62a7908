"""VQ-VAE (van den Oord et al. 2017, "Neural Discrete Representation Learning") with a learned
autoregressive prior over its code grid, so that it samples.

A convolutional encoder maps an image to a grid ``z_e (B, D, h, w)`` of ``D``-dimensional vectors
(``h = H / 2**downsample``); each is replaced by its nearest entry of a codebook of ``K`` vectors,
``z_q = e_k`` with ``k = argmin_j ||z_e - e_j||^2``, and the decoder reconstructs from ``z_q``. The
``autoencoder`` phase minimises, per example (sums over the grid and the ``D`` coordinates, as the
paper's norms; the reconstruction loss is per example summed over pixels, as every autoencoder
of genfw)::

    rec(x, D(z_q)) + ||sg[z_e] - e||^2 + beta ||z_e - sg[e]||^2

with the straight-through estimator (the decoder's gradient with respect to ``z_q`` is passed
to ``z_e`` unchanged: ``z_q = z_e + sg[e - z_e]``) and ``beta = 0.25``. With ``codebook: ema`` the
codebook term is dropped and the codebook follows exponential moving averages of its clusters
(the paper's appendix, as Sonnet's ``VectorQuantizerEMA``): counts ``N_k`` and sums ``m_k`` of the
vectors assigned to each code are averaged with ``decay`` (debiased by ``1 - decay**t``, as
Sonnet 2's moving averages), the counts Laplace-smoothed, ``N_k <- (N_k + eps) / (n + K eps) n``
with ``n = sum_k N_k``, and ``e_k = m_k / N_k``. With ``dead_code_restart: N`` a code that no
vector of the batch chose for ``N`` consecutive training steps is replaced, at the start of the
next step, by an encoder output of that step's batch drawn uniformly at random (a count of idle
steps; Jukebox restarts codes whose moving-average count fell below 1 instead).

The ``prior`` phase trains a PixelCNN (van den Oord et al. 2016, plain, not gated: a 7x7 mask-A
convolution, residual blocks of 3x3 mask-B convolutions, two 1x1 layers) on the code indices of
the same batch, detached (``fresh_batch=False``): cross-entropy of each index given those before
it in raster order. ``sample`` draws the indices one position at a time from it, looks them up in
the codebook and decodes them.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import attrs
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import genfw
from genfw import Batch, BuildContext, GenfwError, Model, Modules, Optim, Phase, PhaseOutput, Slot
from genfw import validators as check
from genfw.contracts import ContextKey, PhaseSpec, Players
from genfw_plugins._autoencoder import AutoencoderBase, AutoencoderModel, is_likelihood, takes_logits


@attrs.define
class VQVAEOptions:
    codebook_size: int = attrs.field(default=64, validator=check.at_least(2))
    """K, the number of codes (the paper: 512; 64 suits the 16 positions of digits' 4x4 grid)."""
    code_dim: int = attrs.field(default=16, validator=check.at_least(1))
    """D, the dimension of each code vector (the paper: 64)."""
    beta: float = attrs.field(default=0.25, validator=check.non_negative)
    """Weight of the commitment term ``||z_e - sg[e]||^2``."""
    codebook: str = attrs.field(default="loss", validator=check.one_of("loss", "ema"))
    """``loss``: the codebook term ``||sg[z_e] - e||^2`` trains it; ``ema``: moving averages."""
    decay: float = attrs.field(default=0.99, validator=check.in_interval(0, 1, high_open=True))
    """Decay of the moving averages (``codebook: ema``)."""
    epsilon: float = attrs.field(default=1e-5, validator=check.positive)
    """Laplace smoothing of the moving-average counts (``codebook: ema``)."""
    dead_code_restart: int = attrs.field(default=0, validator=check.at_least(0))
    """Restart a code unused for this many consecutive steps from a random encoder output (0: off)."""
    channels: int = attrs.field(default=64, validator=check.at_least(2))
    """Hidden channels of the encoder and decoder."""
    residual_blocks: int = attrs.field(default=2, validator=check.at_least(0))
    """Residual blocks (ReLU, 3x3 conv, ReLU, 1x1 conv) of the encoder and of the decoder."""
    downsample: int = attrs.field(default=1, validator=check.at_least(1))
    """Stride-2 4x4 convolutions of the encoder: the grid is the image side / 2**downsample."""
    lr: float = attrs.field(default=1e-3, validator=check.positive)
    """Adam's learning rate of the autoencoder phase (the paper: 2e-4)."""
    prior_channels: int = attrs.field(default=64, validator=check.at_least(1))
    """Channels of the PixelCNN prior."""
    prior_blocks: int = attrs.field(default=3, validator=check.at_least(0))
    """Residual mask-B blocks of the PixelCNN prior."""
    prior_lr: float = attrs.field(default=1e-3, validator=check.positive)
    """Adam's learning rate of the prior phase."""


# --- quantisation -----------------------------------------------------------------------------------


def perplexity(counts: Tensor) -> Tensor:
    """``exp(H(p))`` of the code usage ``p = counts / sum(counts)`` (``0 log 0 = 0``): the number of
    equally used codes with the same entropy (K when all are used alike, 1 when one is)."""
    p = counts.float() / counts.sum().clamp_min(1)
    return torch.exp(-torch.xlogy(p, p).sum())


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def plain(module: nn.Module) -> nn.Module:
    """The module itself where Accelerate wrapped it (DDP)."""
    return getattr(module, "module", module)


class Codebook(nn.Module):
    """``K`` code vectors of dimension ``D`` and their nearest-code quantisation.

    ``embedding (K, D)`` is a parameter (``ema=False``: the codebook term trains it) or a buffer
    updated by moving averages (``ema=True``: buffers ``ema_count (K,)``, ``ema_sum (K, D)`` hold
    Sonnet's hidden, not yet debiased, averages and ``ema_steps`` the updates made). ``idle (K,)``
    counts the consecutive training steps each code went unused (dead-code restarts). Initial codes:
    uniform on ``[-sqrt(3 / D), sqrt(3 / D)]`` (variance 1 / D per coordinate), Sonnet's
    ``VarianceScaling(distribution='uniform')`` of its ``(D, K)`` embeddings.
    """

    def __init__(self, size: int, dim: int, *, ema: bool, decay: float, epsilon: float, restart: int):
        super().__init__()
        self.size, self.dim, self.ema = size, dim, ema
        self.decay, self.epsilon, self.restart = decay, epsilon, restart
        bound = math.sqrt(3.0 / dim)
        init = torch.empty(size, dim).uniform_(-bound, bound)
        if ema:
            self.register_buffer("embedding", init)
            self.register_buffer("ema_count", torch.zeros(size))
            self.register_buffer("ema_sum", torch.zeros(size, dim))
            self.register_buffer("ema_steps", torch.zeros((), dtype=torch.long))
        else:
            self.embedding = nn.Parameter(init)
        self.register_buffer("idle", torch.zeros(size, dtype=torch.long))

    def nearest(self, flat: Tensor) -> Tensor:
        """Indices ``(N,)`` of the nearest code of each row of ``flat (N, D)`` in squared Euclidean
        distance (the first on ties)."""
        e = self.embedding.detach().float()
        flat = flat.float()
        with torch.autocast(flat.device.type, enabled=False):  # distances in float32 under bf16/fp16
            d = flat.square().sum(1, keepdim=True) - 2.0 * flat @ e.t() + e.square().sum(1)  # (N, K)
        return d.argmin(1)

    def lookup(self, indices: Tensor) -> Tensor:
        """Code vectors of ``indices (B, h, w)`` as a grid ``(B, D, h, w)``."""
        return F.embedding(indices, self.embedding).permute(0, 3, 1, 2)

    def indices(self, z_e: Tensor) -> Tensor:
        """The nearest codes ``(B, h, w)`` of a grid ``z_e (B, D, h, w)``; no state changes."""
        b, _, h, w = z_e.shape
        return self.nearest(z_e.detach().permute(0, 2, 3, 1).reshape(-1, self.dim)).view(b, h, w)

    def forward(self, z_e: Tensor) -> tuple[Tensor, Tensor, Tensor | None, Tensor, Tensor]:
        """Quantise ``z_e (B, D, h, w)``: ``(z_q, indices, codebook, commitment, counts)``.

        ``z_q (B, D, h, w)`` is straight-through (its value the codes, its gradient passed to
        ``z_e``); ``codebook (B,) = ||sg[z_e] - e||^2`` per example (``None`` with moving
        averages) and ``commitment (B,) = ||z_e - sg[e]||^2``; ``counts (K,)`` how many vectors
        chose each code (over all processes). In training mode it first restarts dead codes, then
        quantises, then counts idle steps and updates the moving averages."""
        b, _, h, w = z_e.shape
        flat = z_e.detach().permute(0, 2, 3, 1).reshape(-1, self.dim).float()  # (B h w, D)
        if self.training and self.restart:
            self._restart_dead(flat)
        idx = self.nearest(flat)  # (B h w,)
        counts = torch.bincount(idx, minlength=self.size).float()  # (K,)
        if self.training and _distributed():
            torch.distributed.all_reduce(counts)
        indices = idx.view(b, h, w)
        z_q = self.lookup(indices)  # (B, D, h, w), with the codes before this step's update
        commitment = (z_e - z_q.detach()).square().flatten(1).sum(1)
        codebook = None if self.ema else (z_e.detach() - z_q).square().flatten(1).sum(1)
        if self.training:
            with torch.no_grad():
                self.idle.copy_(torch.where(counts > 0, 0, self.idle + 1))
                if self.ema:
                    self._ema_update(flat, idx, counts)
        z_q = z_e + (z_q - z_e).detach()  # straight-through
        return z_q, indices, codebook, commitment, counts

    @torch.no_grad()
    def _ema_update(self, flat: Tensor, idx: Tensor, counts: Tensor) -> None:
        sums = torch.zeros_like(self.ema_sum).index_add_(0, idx, flat)  # (K, D): sum of assigned vectors
        if _distributed():
            torch.distributed.all_reduce(sums)
        g = self.decay
        self.ema_steps += 1
        self.ema_count.mul_(g).add_(counts, alpha=1 - g)
        self.ema_sum.mul_(g).add_(sums, alpha=1 - g)
        debias = 1 - torch.pow(torch.tensor(g, device=counts.device, dtype=counts.dtype), self.ema_steps)
        n_k = self.ema_count / debias
        n = n_k.sum()
        smoothed = (n_k + self.epsilon) / (n + self.size * self.epsilon) * n  # Laplace smoothing
        self.embedding.copy_(self.ema_sum / debias / smoothed.unsqueeze(1))

    @torch.no_grad()
    def _restart_dead(self, flat: Tensor) -> None:
        dead = self.idle >= self.restart  # (K,)
        n_dead = int(dead.sum())
        if n_dead == 0:
            return
        new = flat[torch.randint(flat.shape[0], (n_dead,), device=flat.device)]  # (n_dead, D)
        if _distributed():  # the same new codes on every process
            torch.distributed.broadcast(new, 0)
        new = new.to(self.embedding.dtype)
        self.embedding.data[dead] = new
        if self.ema:  # moving averages that give back the new code: a count of 1, a sum of it
            steps = self.ema_steps.to(flat.dtype)
            debias = 1 - torch.pow(torch.tensor(self.decay, device=flat.device, dtype=flat.dtype), steps)
            self.ema_count[dead] = debias
            self.ema_sum[dead] = new * debias
        self.idle[dead] = 0


# --- encoder and decoder ----------------------------------------------------------------------------


class Residual(nn.Module):
    """``x + conv1x1(relu(conv3x3(relu(x))))``, the paper's residual block."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block(x)


class VQEncoder(nn.Module):
    """``x (B, C, H, W)`` -> ``z_e (B, D, H / 2**downsample, W / 2**downsample)``: 4x4 stride-2
    convolutions (ReLU), a 3x3 convolution, residual blocks, ReLU, a 1x1 convolution to ``D``
    (the layout of Sonnet's VQ-VAE example; the strided ones have ``channels / 2`` outputs but the
    last)."""

    def __init__(self, in_channels: int, channels: int, code_dim: int, downsample: int, blocks: int):
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for i in range(downsample):
            out = channels if i == downsample - 1 else channels // 2
            layers += [nn.Conv2d(c, out, 4, stride=2, padding=1), nn.ReLU()]
            c = out
        layers.append(nn.Conv2d(c, channels, 3, padding=1))
        layers += [Residual(channels) for _ in range(blocks)]
        layers += [nn.ReLU(), nn.Conv2d(channels, code_dim, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return self.net(x)


class VQDecoder(nn.Module):
    """``z_q (B, D, h, w)``, or the same flattened in ``(h, w, D)`` order ``(B, h w D)``, ->
    ``(B, C, H, W)``: a 3x3 convolution, residual blocks, ReLU, 4x4 stride-2 transposed
    convolutions (ReLU between them), then ``tanh`` (data in [-1, 1]) or nothing (logits)."""

    def __init__(
        self,
        out_channels: int,
        channels: int,
        code_dim: int,
        grid: tuple[int, int],
        downsample: int,
        blocks: int,
        logits: bool,
    ):
        super().__init__()
        self.code_dim, self.grid = code_dim, grid
        layers: list[nn.Module] = [nn.Conv2d(code_dim, channels, 3, padding=1)]
        layers += [Residual(channels) for _ in range(blocks)]
        layers.append(nn.ReLU())
        c = channels
        for i in range(downsample):
            last = i == downsample - 1
            out = out_channels if last else channels // 2
            layers.append(nn.ConvTranspose2d(c, out, 4, stride=2, padding=1))
            if not last:
                layers.append(nn.ReLU())
            c = out
        layers.append(nn.Identity() if logits else nn.Tanh())
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        if z.dim() == 2:  # flat codes (B, h w D)
            h, w = self.grid
            z = z.view(z.shape[0], h, w, self.code_dim).permute(0, 3, 1, 2)
        return self.net(z)


# --- the PixelCNN prior -----------------------------------------------------------------------------


class MaskedConv2d(nn.Conv2d):
    """A convolution that sees only positions before the centre in raster order (mask ``A``), or
    those and the centre (mask ``B``), as in PixelCNN (one input channel group: codes have no
    colour channels to order)."""

    def __init__(self, mask: str, in_channels: int, out_channels: int, kernel: int) -> None:
        super().__init__(in_channels, out_channels, kernel, padding=kernel // 2)
        m = torch.ones_like(self.weight)  # (out, in, k, k)
        c = kernel // 2
        m[:, :, c, c + (mask == "B") :] = 0  # the centre (mask A) and what is right of it
        m[:, :, c + 1 :, :] = 0  # the rows below
        self.register_buffer("mask", m, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight * self.mask, self.bias, self.stride, self.padding)


class MaskedResidual(nn.Module):
    """``x + conv1x1(relu(maskB3x3(relu(x))))``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.ReLU(), MaskedConv2d("B", channels, channels, 3), nn.ReLU(), nn.Conv2d(channels, channels, 1)
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block(x)


class PixelCNN(nn.Module):
    """Logits ``(B, K, h, w)`` of each code index given those before it in raster order, from
    indices ``(B, h, w)``: an embedding of the indices, a 7x7 mask-A convolution, residual mask-B
    blocks, then ReLU, 1x1, ReLU, 1x1 to ``K`` logits."""

    def __init__(self, codes: int, channels: int, blocks: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(codes, channels)
        self.net = nn.Sequential(
            MaskedConv2d("A", channels, channels, 7),
            *[MaskedResidual(channels) for _ in range(blocks)],
            nn.ReLU(),
            nn.Conv2d(channels, channels, 1),
            nn.ReLU(),
            nn.Conv2d(channels, codes, 1),
        )

    def forward(self, indices: Tensor) -> Tensor:
        return self.net(self.embed(indices).permute(0, 3, 1, 2))


def code_nll(pixelcnn: nn.Module, indices: Tensor) -> Tensor:
    """``-log p(indices)`` per example ``(B,)``, nats, summed over the grid."""
    logits = pixelcnn(indices).float()
    return F.cross_entropy(logits, indices, reduction="none").flatten(1).sum(1)


@torch.no_grad()
def sample_indices(pixelcnn: nn.Module, n: int, grid: tuple[int, int], device: torch.device) -> Tensor:
    """``n`` grids of indices ``(n, h, w)`` drawn from the PixelCNN one position at a time in raster
    order (torch's seeded generator of ``device``)."""
    h, w = grid
    idx = torch.zeros(n, h, w, dtype=torch.long, device=device)
    for i in range(h):
        for j in range(w):
            probs = pixelcnn(idx)[:, :, i, j].float().softmax(1)  # (n, K)
            idx[:, i, j] = torch.multinomial(probs, 1).squeeze(1)
    return idx


# --- the variant ------------------------------------------------------------------------------------

_GRID = "Tensor (B, D, h, w)"


class VQVAE(AutoencoderBase):
    """VQ-VAE: codebook, straight-through gradients, commitment; a PixelCNN prior over the code grid."""

    slots: ClassVar[dict[str, Slot]] = {
        "loss": Slot("loss", "mse", role="reconstruction", help="rec(x, D(z_q)) per example"),
    }
    players: ClassVar[Players] = Players(
        generators=("generator", "pixelcnn"), encoders=("encoder", "codebook")
    )
    phases: ClassVar[dict[str, PhaseSpec]] = {
        "autoencoder": PhaseSpec(
            {"x", "x_hat", "z_e", "z_q", "indices"},
            help="encoder, decoder (and codebook) minimise rec + ||sg[z_e] - e||^2 + beta ||z_e - sg[e]||^2",
            extra={
                "z_e": ContextKey(_GRID, "the encoder's output grid"),
                "z_q": ContextKey(_GRID, "its nearest codes (straight-through: gradients reach z_e)"),
                "indices": ContextKey("Tensor (B, h, w)", "the indices of the nearest codes"),
            },
        ),
        "prior": PhaseSpec(
            {"indices", "logits"},
            help="the PixelCNN prior maximises log p(indices) of the batch's detached codes",
            extra={
                "indices": ContextKey("Tensor (B, h, w)", "the batch's code indices (detached)"),
                "logits": ContextKey("Tensor (B, K, h, w)", "the PixelCNN's logits of each index"),
            },
        ),
    }
    default_dataset: ClassVar[str | None] = "digits"
    options: VQVAEOptions
    grid: tuple[int, int]

    def build(self, ctx: BuildContext) -> Model:
        o, shape = self.options, tuple(ctx.data.shape)
        if ctx.data.kind != "image" or len(shape) != 3:
            raise GenfwError(
                f"vqvae quantises a grid of encoder outputs and takes images (C, H, W); this data set's "
                f"samples have shape {shape} ({ctx.data.kind}): choose an image data set, e.g. --dataset digits"
            )
        c, h, w = shape
        f = 2**o.downsample
        if h % f or w % f:
            raise GenfwError(
                f"vqvae: --plugin.downsample {o.downsample} halves the image side {o.downsample} times, "
                f"but {h}x{w} is not divisible by {f}; choose a downsample whose 2**downsample divides both"
            )
        self.grid = (h // f, w // f)
        self.loss = ctx["loss"].build()
        self.likelihood = is_likelihood(self.loss)
        self.prior = None  # codes are indices: the PixelCNN is their prior, not a distribution object
        encoder = VQEncoder(c, o.channels, o.code_dim, o.downsample, o.residual_blocks)
        codebook = Codebook(
            o.codebook_size,
            o.code_dim,
            ema=o.codebook == "ema",
            decay=o.decay,
            epsilon=o.epsilon,
            restart=o.dead_code_restart,
        )
        decoder = VQDecoder(
            c, o.channels, o.code_dim, self.grid, o.downsample, o.residual_blocks, takes_logits(self.loss)
        )
        pixelcnn = PixelCNN(o.codebook_size, o.prior_channels, o.prior_blocks)
        trained = ("encoder", "generator") + (() if o.codebook == "ema" else ("codebook",))
        phases = [
            Phase(
                "autoencoder",
                trained,
                self.step,
                Optim("adam", o.lr, (0.9, 0.999)),
                provides=self.phases["autoencoder"].provides,
            ),
            Phase(
                "prior",
                ("pixelcnn",),
                self.prior_step,
                Optim("adam", o.prior_lr, (0.9, 0.999)),
                fresh_batch=False,
                provides=self.phases["prior"].provides,
            ),
        ]
        return AutoencoderModel(
            modules={"encoder": encoder, "codebook": codebook, "generator": decoder, "pixelcnn": pixelcnn},
            phases=phases,
            export=("generator", "codebook", "pixelcnn"),
            **self.model_fields(),
            log_weights=self.log_weights if self.likelihood else None,
        )

    # --- codes ----------------------------------------------------------------------------------

    def indices(self, m: Modules, x: Tensor) -> Tensor:
        """The code indices ``(B, h, w)`` of ``x``, without gradients or state changes."""
        with torch.no_grad():
            return plain(m.codebook).indices(m.encoder(x))

    def code(self, m: Modules, x: Tensor) -> Tensor:
        """The quantised grid flattened in ``(h, w, D)`` order: ``(B, h w D)`` (what ``decode``
        takes; ``--traverse j`` sweeps coordinate ``j % D`` of the code at position ``j // D``)."""
        z_q = plain(m.codebook).lookup(self.indices(m, x))  # (B, D, h, w)
        return z_q.permute(0, 2, 3, 1).flatten(1)

    def sample(self, m: Modules, n: int, y: Tensor | None = None) -> Tensor:
        codebook = plain(m.codebook)
        idx = sample_indices(m.pixelcnn, n, self.grid, codebook.embedding.device)
        return self.decode(m, codebook.lookup(idx))

    # --- phases ---------------------------------------------------------------------------------

    def step(self, batch: Batch, m: Modules) -> PhaseOutput:
        z_e = m.encoder(batch.x)  # (B, D, h, w)
        z_q, indices, codebook, commitment, counts = m.codebook(z_e)
        x_hat = m.generator(z_q)
        rec = self.loss(x_hat, batch.x)  # (B,)
        total = rec + self.options.beta * commitment
        logs = {"reconstruction": rec.detach(), "commitment": commitment.detach()}
        if codebook is not None:
            total = total + codebook
            logs["codebook"] = codebook.detach()
        logs["perplexity"] = perplexity(counts)
        logs["usage"] = (counts > 0).float().mean()  # share of the codes this batch used
        return PhaseOutput(
            total.mean(),
            context={"x": batch.x, "x_hat": x_hat, "z_e": z_e, "z_q": z_q, "indices": indices},
            logs=logs,
        )

    def prior_step(self, batch: Batch, m: Modules) -> PhaseOutput:
        indices = self.indices(m, batch.x)  # (B, h, w), detached
        logits = m.pixelcnn(indices)  # (B, K, h, w)
        nll = F.cross_entropy(logits.float(), indices, reduction="none").flatten(1).sum(1)  # (B,) nats
        return PhaseOutput(
            nll.mean(), context={"indices": indices, "logits": logits}, logs={"nll": nll.detach()}
        )

    def log_weights(self, m: Modules, x: Tensor, k: int) -> Tensor:
        """``log p(x | z_q) + log p(indices)`` with the PixelCNN prior, ``(k, B)``, every row the
        same: the posterior is a point mass on the nearest codes (``log q = 0``), so this is the
        ELBO, and every importance sample is the same one (the IWAE bound equals it)."""
        idx = self.indices(m, x)
        codebook = plain(m.codebook)
        log_px = -self.loss(m.generator(codebook.lookup(idx)), x)
        return (log_px - code_nll(m.pixelcnn, idx)).expand(k, -1)


@genfw.hookimpl
def genfw_register_variants(register: Any) -> None:
    register(
        "vqvae",
        VQVAE,
        options=VQVAEOptions,
        help="VQ-VAE (van den Oord et al. 2017): codebook, straight-through, EMA option; PixelCNN prior",
    )
