"""Energy-based GANs with an autoencoder critic: EBGAN (Zhao et al. 2017), BEGAN (Berthelot et al. 2017).

The critic is an autoencoder ``Dec(Enc(x))`` and a sample's energy is its reconstruction error
per dimension, ``D(x) = cost(Dec(Enc(x)), x) / dim(x)`` with ``cost`` the ``loss`` slot's
reconstruction loss (``mse`` for EBGAN, ``l1`` for BEGAN, whose ``L(v) = |v - D(v)|^eta`` with
eta = 1 is the mean absolute error); the mean over dimensions keeps the margin and the
equilibrium constants independent of the image size.

The autoencoder is built from the network plugins: its encoder from the ``critic_encoder`` slot
(an encoder network: ``--critic_encoder dcgan``) and its decoder from the ``critic_decoder`` slot
(a generator network mapping the code back to a sample: ``--critic_decoder dcgan``), so every
encoder and generator plugin can serve. ``code_dim`` is the size of the code between them.

EBGAN: ``L_D = D(x) + max(0, m - D(G(z)))``, ``L_G = D(G(z)) + lambda_PT f_PT(S)`` where ``S`` are
the encoder's codes of the fakes and ``f_PT(S) = 1/(N(N-1)) sum_{i != j} cos(S_i, S_j)^2`` is the
pulling-away term (the paper's eq. 6).

BEGAN: ``L_D = D(x) - k_t D(G(z_D))``, ``L_G = D(G(z_G))``, and after the generator step
``k_{t+1} = clip(k_t + lambda_k (gamma D(x) - D(G(z_G))), 0, 1)`` (the paper's Algorithm 1): ``D(x)``
from the critic step of the same training step (the last one when ``n_critic > 1``), ``D(G(z_G))``
the generator step's own energy, on its noise ``z_G``. ``k_t`` is a buffer of the critic module
(checkpoints and ``--resume`` carry it); ``D(x)`` lives only from the critic step to the generator
step of one training step, so a checkpoint (taken between training steps) needs no more. The
convergence measure ``M = D(x) + |gamma D(x) - D(G(z_G))|`` is logged as ``generator/convergence``;
``critic/k`` is the ``k_t`` the critic step used. With ``lr_decay`` both learning rates halve when M
stalls (or on a fixed period): the state is the module ``lr_decay`` (:class:`LRDecay`), the factor
is logged as ``generator/lr_scale``.

Every input of the critic goes through ``m.critic(...)`` (the module's ``forward``, which gives
the codes too with ``codes=True``), so wrappers such as instance noise reach both phases.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

import attrs
import torch
from torch import Tensor, nn

import genfw
from genfw import BuildContext, Model, Modules, Optim, Slot, device_of
from genfw import validators as check
from genfw.contracts import PhaseSpec, Players, Variant
from genfw_plugins._adversarial import AdversarialGAN, Scores, Turn


class AutoencoderCritic(nn.Module):
    """Autoencoder critic: ``forward(x)`` gives the energy ``(B, 1)``; ``encode_decode(x)`` the code
    and the reconstruction. ``k`` is BEGAN's equilibrium variable (unused by EBGAN)."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module, cost: Any) -> None:
        super().__init__()
        self.encoder, self.decoder, self.cost = encoder, decoder, cost
        self.register_buffer("k", torch.zeros(()))

    def encode_decode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        code = self.encoder(x)  # (B, code_dim)
        return code, self.decoder(code)  # (B, *shape)

    def energy(self, x: Tensor, x_hat: Tensor) -> Tensor:
        """Reconstruction cost per dimension ``(B,)``."""
        return self.cost(x_hat, x) / math.prod(x.shape[1:])

    def forward(
        self, x: Tensor, y: Tensor | None = None, codes: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Energies ``(B, 1)``; with ``codes``, energies ``(B,)`` and codes ``(B, code_dim)``."""
        code, x_hat = self.encode_decode(x)
        energy = self.energy(x, x_hat)  # (B,)
        return (energy, code) if codes else energy.unsqueeze(1)

    def energies(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Energies ``(B,)`` and codes ``(B, code_dim)``."""
        return self(x, codes=True)


def pulling_away(codes: Tensor) -> Tensor:
    """EBGAN's pulling-away term ``1/(N(N-1)) sum_{i != j} (S_i . S_j / (|S_i| |S_j|))^2``, ``codes (N, d)``."""
    n = codes.shape[0]
    if n < 2:
        return codes.new_zeros(())
    unit = codes.flatten(1) / codes.flatten(1).norm(dim=1, keepdim=True).clamp_min(1e-12)
    cos2 = (unit @ unit.T).square()  # (N, N), diagonal 1
    return (cos2.sum() - cos2.diagonal().sum()) / (n * (n - 1))


def ebgan_critic_loss(real_energy: Tensor, fake_energy: Tensor, margin: float) -> Tensor:
    """``E D(x) + E max(0, m - D(G(z)))`` from per-example energies ``(B,)``."""
    return real_energy.mean() + (margin - fake_energy).clamp_min(0.0).mean()


def began_k_update(
    k: Tensor, real_energy: Tensor, fake_energy: Tensor, gamma: float, lambda_k: float
) -> Tensor:
    """``clip(k + lambda_k (gamma D(x) - D(G(z_G))), 0, 1)`` from mean energies (scalars)."""
    return (k + lambda_k * (gamma * real_energy - fake_energy)).clamp(0.0, 1.0)


def _unwrap(module: nn.Module) -> nn.Module:
    return getattr(module, "module", module)  # DDP keeps the module as .module


@attrs.define
class EnergyOptions:
    latent_dim: int = attrs.field(default=64, validator=check.at_least(1))
    code_dim: int = attrs.field(default=32, validator=check.at_least(1))  # the autoencoder's code
    lr_generator: float = attrs.field(default=2e-4, validator=check.positive)
    lr_critic: float = attrs.field(default=2e-4, validator=check.positive)
    beta1: float = attrs.field(default=0.5, validator=check.in_interval(0, 1, high_open=True))
    beta2: float = attrs.field(default=0.999, validator=check.in_interval(0, 1, high_open=True))
    n_critic: int = attrs.field(default=1, validator=check.at_least(1))


@attrs.define
class EBGANOptions(EnergyOptions):
    # 1e-3 for both players: on digits, 2e-4 collapsed to one image
    # within 1500 steps while 1e-3 kept the samples diverse (notes/B.md).
    lr_generator: float = attrs.field(default=1e-3, validator=check.positive)
    lr_critic: float = attrs.field(default=1e-3, validator=check.positive)
    margin: float = attrs.field(default=1.0, validator=check.positive)  # m, in energy per dimension
    pt_weight: float = attrs.field(default=0.1, validator=check.non_negative)  # lambda_PT (paper: 0.1)


@attrs.define
class BEGANOptions(EnergyOptions):
    # The paper's Adam(1e-4); gamma 0.5 and lambda_k 0.001 as in its experiments.
    lr_generator: float = attrs.field(default=1e-4, validator=check.positive)
    lr_critic: float = attrs.field(default=1e-4, validator=check.positive)
    gamma: float = attrs.field(default=0.5, validator=check.in_interval(0, 1, low_open=True))
    lambda_k: float = attrs.field(default=1e-3, validator=check.non_negative)
    k_init: float = attrs.field(default=0.0, validator=check.in_interval(0, 1))
    # Halving both learning rates (the paper: "decaying by a factor of 2 when the measure of
    # convergence stalls"). stall: at the end of each window of lr_decay_steps training steps,
    # halve when the window's mean M is not 1% below the previous window's (the rule left in a
    # comment of carpedm20/BEGAN-tensorflow); every: halve every lr_decay_steps steps (what that
    # code runs, with 100000); none: constant.
    lr_decay: str = attrs.field(default="none", validator=check.one_of("none", "stall", "every"))
    lr_decay_steps: int = attrs.field(default=100_000, validator=check.at_least(1))


class EnergyGAN(AdversarialGAN, Variant):
    """Shared wiring of EBGAN and BEGAN: a generator against an autoencoder critic."""

    slots: ClassVar[dict[str, Slot]] = {
        "generator": Slot("generator", "mlp", help="maps prior codes to samples"),
        "critic_encoder": Slot("encoder", "mlp", help="encoder of the autoencoder critic"),
        "critic_decoder": Slot("generator", "mlp", help="decoder of the autoencoder critic"),
        "prior": Slot("prior", "normal", help="distribution of the generator's input codes"),
        "loss": Slot("loss", "mse", role="reconstruction", help="the critic's energy, per dimension"),
    }
    # The critic is the autoencoder made of the critic_encoder and critic_decoder slots' networks.
    players: ClassVar[Players] = Players(generators="generator", critics="critic")
    # "critic" is the energy (B,), low on data.
    phases: ClassVar[dict[str, PhaseSpec]] = {
        "critic": PhaseSpec(
            {"real", "fake", "critic", "labels"},
            help="the autoencoder critic lowers the energy of real data and raises that of fakes",
        ),
        "generator": PhaseSpec(
            {"fake", "critic", "labels"}, help="the generator lowers the energy of its fakes"
        ),
    }
    replayable: ClassVar[bool] = True  # the critic step scores unconditional fakes of m.generator

    def build(self, ctx: BuildContext) -> Model:
        o = self.options
        shape = ctx.data.shape
        generator = ctx["generator"].build(latent_dim=o.latent_dim, out_shape=shape, num_classes=0)
        encoder = ctx["critic_encoder"].build(in_shape=shape, out_dim=o.code_dim, num_classes=0)
        decoder = ctx["critic_decoder"].build(latent_dim=o.code_dim, out_shape=shape, num_classes=0)
        critic = AutoencoderCritic(encoder, decoder, ctx["loss"].build())
        self.init_critic(critic)
        self.prior = ctx["prior"].build(dim=o.latent_dim)
        betas = (o.beta1, o.beta2)
        return Model(
            modules={"generator": generator, "critic": critic},
            phases=self.adversarial_phases(
                ctx,
                Optim("adam", o.lr_critic, betas),
                Optim("adam", o.lr_generator, betas),
                n_critic=o.n_critic,
                critic_provides=self.phases["critic"].provides,
                generator_provides=self.phases["generator"].provides,
            ),
            sample=self.sample,
        )

    def init_critic(self, critic: AutoencoderCritic) -> None:
        pass

    # -- hooks of the adversarial step: energies (low on data) stand where scores are ------------
    def score(self, t: Turn, x: Tensor, y: Tensor | None) -> Scores:
        """Energies ``(B,)`` and the autoencoder's codes ``(B, code_dim)``, through the module's
        forward: instance noise (and a DDP wrapper) see every input."""
        return Scores(*t.m.critic(x, codes=True))

    def score_both(self, t: Turn, real: Tensor, fake: Tensor) -> tuple[Scores, Scores]:
        """One critic call on the real batch and the fakes together."""
        energy = self.score(t, torch.cat([real, fake]), None).scores  # (2B,)
        n = len(real)
        return Scores(energy[:n]), Scores(energy[n:])

    def generator_objective(
        self, t: Turn, fake: Scores, real_scores: Callable[[], Tensor]
    ) -> tuple[Tensor, dict[str, Tensor]]:
        return fake.scores.mean(), {}  # D(G(z))

    def sample(self, m: Modules, n: int, y: Tensor | None = None) -> Tensor:
        return m.generator(self.noise(n, device_of(m.generator)))


class EBGAN(EnergyGAN):
    """EBGAN (Zhao et al. 2017): margin loss on autoencoder energies, pulling-away term for G."""

    def __init__(self, options: EBGANOptions) -> None:
        super().__init__(options)

    def critic_objective(self, t: Turn, real: Scores, fake: Scores) -> tuple[Tensor, dict[str, Tensor]]:
        loss = ebgan_critic_loss(real.scores, fake.scores, self.options.margin)
        return loss, {"real_energy": real.scores.detach(), "fake_energy": fake.scores.detach()}

    def generator_extra(self, t: Turn, fake: Scores) -> tuple[Tensor, dict[str, Tensor]]:
        pt = pulling_away(fake.heads)  # the fakes' codes
        return self.options.pt_weight * pt, {"pulling_away": pt.detach()}


STALL = 0.99  # a window's mean M must be below 0.99 times the previous window's, or the lr halves


class LRDecay(nn.Module):
    """BEGAN's learning-rate decay: buffers ``scale`` (the factor on both learning rates),
    ``steps`` (training steps seen), ``total`` (sum of M over the current window) and ``previous``
    (the previous window's mean M; -1 before the first), with host mirrors so that the loop reads
    the factor without a device sync (re-read from the buffers when weights are loaded)."""

    def __init__(self, mode: str, window: int) -> None:
        super().__init__()
        self.mode, self.window = mode, window
        self.register_buffer("scale", torch.ones(()))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("total", torch.zeros(()))
        self.register_buffer("previous", torch.full((), -1.0))
        self.register_load_state_dict_post_hook(_reread_decay)
        self.value, self.n, self.last = 1.0, 0, -1.0  # mirrors of scale, steps, previous

    @torch.no_grad()
    def observe(self, convergence: Tensor) -> None:
        """Count one training step with convergence measure ``M`` (a scalar tensor); at the end of
        a window, decide (one device read per window, averaged over processes)."""
        self.n += 1
        self.steps.fill_(self.n)
        if self.mode == "stall":
            self.total.add_(convergence.float())
        if self.n % self.window:
            return
        if self.mode == "every":
            self.halve()
            return
        mean = self.total / self.window
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized():  # one decision for every process
            dist.all_reduce(mean)
            mean = mean / dist.get_world_size()
        mean = float(mean)
        if self.last >= 0 and mean > STALL * self.last:
            self.halve()
        self.last = mean
        self.previous.fill_(mean)
        self.total.zero_()

    def halve(self) -> None:
        self.value *= 0.5
        self.scale.fill_(self.value)


def _reread_decay(module: nn.Module, incompatible: Any) -> None:
    module.value, module.n, module.last = float(module.scale), int(module.steps), float(module.previous)


class BEGAN(EnergyGAN):
    """BEGAN (Berthelot et al. 2017): L1 autoencoder critic with equilibrium control of k_t."""

    slots: ClassVar[dict[str, Slot]] = {
        **EnergyGAN.slots,
        "loss": Slot("loss", "l1", role="reconstruction", help="the critic's energy, per dimension"),
    }

    def __init__(self, options: BEGANOptions) -> None:
        super().__init__(options)
        # D(x) of the last critic step, for the k update after the generator step of the same
        # training step (then cleared).
        self.real_energy: Tensor | None = None
        self.decay: LRDecay | None = None  # with lr_decay: the learning rates' factor (build)

    def init_critic(self, critic: AutoencoderCritic) -> None:
        critic.k.fill_(self.options.k_init)

    def build(self, ctx: BuildContext) -> Model:
        model = super().build(ctx)
        o = self.options
        if o.lr_decay != "none":  # both players' learning rates, times the decay's factor
            self.decay = LRDecay(o.lr_decay, o.lr_decay_steps)
            model.modules["lr_decay"] = self.decay
            for phase in model.phases:
                phase.lr_scale = lambda: self.decay.value
        return model

    def critic_objective(self, t: Turn, real: Scores, fake: Scores) -> tuple[Tensor, dict[str, Tensor]]:
        real_e, fake_e = real.scores.mean(), fake.scores.mean()
        k = _unwrap(t.m.critic).k.clone()  # k_t: the generator step updates the buffer in place
        self.real_energy = real_e.detach()
        return real_e - k * fake_e, {"k": k, "real_energy": real_e.detach(), "fake_energy": fake_e.detach()}

    def generator_extra(self, t: Turn, fake: Scores) -> tuple[None, dict[str, Tensor]]:
        """No term: the update of k_t from this step's ``L(G(z_G))``, and M."""
        o = self.options
        fake_e = fake.scores.mean()  # L(G(z_G)), the objective
        logs = {"fake_energy": fake_e.detach()}
        real_e, self.real_energy = self.real_energy, None
        if real_e is not None:  # the loop always runs a critic step first
            with torch.no_grad():
                state = _unwrap(t.m.critic)
                gen_e = fake_e.detach()
                state.k.copy_(began_k_update(state.k, real_e, gen_e, o.gamma, o.lambda_k))
                logs["convergence"] = real_e + (o.gamma * real_e - gen_e).abs()
            if self.decay is not None:
                logs["lr_scale"] = fake_e.new_full((), self.decay.value).detach()  # used by this step
                self.decay.observe(logs["convergence"])
        return None, logs


@genfw.hookimpl
def genfw_register_variants(register):
    register(
        "ebgan",
        EBGAN,
        options=EBGANOptions,
        help="EBGAN (Zhao et al. 2017): autoencoder critic, margin loss, pulling-away term.",
    )
    register(
        "began",
        BEGAN,
        options=BEGANOptions,
        help="BEGAN (Berthelot et al. 2017): L1 autoencoder critic, equilibrium k_t, convergence M logged.",
    )
