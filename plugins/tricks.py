"""GAN remedies and tricks: regularisers and callbacks usable with any variant where they make sense.

Each is picked with ``--regulariser NAME`` whatever its kind, and they combine:
``genfw train --plugin gan --regulariser feature_matching --regulariser instance_noise``.

=========================== ============ =========================================================
``feature_matching``        regulariser  G matches the mean critic features of real and fake (Salimans et al. 2016)
``historical_averaging``    regulariser  each player pays ``||theta - mean of past theta||^2`` (Salimans et al. 2016)
``label_smoothing``         regulariser  one-sided: the critic's real target is 0.9 (Salimans et al. 2016)
``minibatch_discrimination`` callback    a layer before each critic's head sees the whole minibatch (Salimans et al. 2016)
``minibatch_stddev``        callback     ProGAN's minibatch standard-deviation feature before each critic's head
``experience_replay``       callback     the critic also sees past fakes from a buffer (Shrivastava et al. 2017)
``instance_noise``          callback     Gaussian noise on every critic's inputs, annealed to 0 (Sønderby et al. 2017)
``spectral_norm``           callback     spectral normalisation of every critic's layers (Miyato et al. 2018)
``ema``                     callback     samples from an exponential moving average of each generator (Yazici et al. 2019)
``packing``                 callback     each critic judges packs of m samples at once (PacGAN, Lin et al. 2018)
=========================== ============ =========================================================

The model transforms are callbacks (:class:`genfw.contracts.Callback`): they change the modules of
the players the variant declares (``Variant.players``: every critic, every generator) in
``on_model_built``, before Accelerate prepares anything, and react to the loop's events. Their
order is declared (``after``): packing rebuilds the critics before the minibatch layers widen their
heads, spectral norm normalises the final layers, instance noise wraps the result, and EMA copies
the generators last. Whatever they keep across steps (EMA weights, the replay buffer, the noise
schedule's step) lives in buffers of modules in ``model.modules``, so checkpoints and ``--resume``
carry it.

Critic-side layers rely on the critic convention of the critic hook: ``features(x, y)`` and a
linear ``head`` with ``forward(x, y) == head(features(x, y))`` (the ``mlp`` and ``dcgan`` critics).

A remedy that can refuse a variant declares ``fits(variant: genfw.contracts.VariantInfo) -> bool``:
whether it works with that registered variant, judged from what the variant declares
(``genfw.contracts.Variant``: ``players``, ``phases`` and what each provides, ``slots``,
``replayable``) without building it. Refusals name the variants it fits.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import attrs
import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import _SpectralNorm, spectral_norm
from torch.nn.utils.spectral_norm import SpectralNorm as LegacySpectralNorm

import genfw
from genfw import BuildContext, GenfwError, Model, Modules, Phase, PhaseOutput
from genfw import validators as check
from genfw.contracts import Callback, LoopState, VariantInfo
from genfw.hookspecs import Register
from genfw.plugins import get_registry
from genfw.plugins import variants_where as fitting_variants
from genfw_plugins._adversarial import critic_features
from genfw_plugins._layers import (
    EqualizedConv2d,
    EqualizedLinear,
    MinibatchDiscrimination,
    minibatch_stddev,
)
from genfw_plugins.losses import MinimaxLoss

# --- shared pieces ------------------------------------------------------------------------------


def add_module(model: Model, name: str, module: nn.Module) -> None:
    """Add a callback's state module to the model (checkpointed with it)."""
    if name in model.modules:
        raise GenfwError(f"module name '{name}' is already taken in this model; it cannot be added twice")
    model.modules[name] = module


def players(model: Model, names: tuple[str, ...], trick: str, what: str, variant: VariantInfo) -> list[str]:
    """The declared players ``names`` (checked against the built model), or a one-line refusal
    naming the variants that declare such players when the variant declares none."""
    if not names:
        kind = "generators" if what == "generators" else "critics"
        fits = has_generators if kind == "generators" else has_critics
        raise GenfwError(
            f"{trick} acts on {what}; variant '{variant.name}' declares none; variants it applies to: "
            f"{variant.fitting(fits)}"
        )
    present = [n for n in names if n in model.modules]  # a player the options leave out (WAE's critic)
    if not present:
        raise GenfwError(
            f"{trick} acts on {what}; variant '{variant.name}' builds none with these options "
            f"(its modules: {', '.join(model.modules)})"
        )
    return present


def critics(variant: VariantInfo) -> tuple[str, ...]:
    """Every module that scores samples or codes: the critic-side tricks act on all of them."""
    p = variant.players
    return (*p.critics, *p.latent_critics)


def has_critics(variant: Any) -> bool:
    """``fits`` of the tricks that act on every critic: the variant declares at least one."""
    return bool(critics(VariantInfo(variant.name, variant.factory)))


def has_generators(variant: Any) -> bool:
    return bool(VariantInfo(variant.name, variant.factory).players.generators)


def declares(variant: VariantInfo, phase: str, keys: tuple[str, ...]) -> bool:
    """Whether the variant declares a phase ``phase`` that provides all of ``keys``
    (``Variant.phases``, :class:`genfw.contracts.PhaseSpec`)."""
    return phase in variant.phases and set(keys) <= variant.provides(phase)


def has_critic_network(variant: VariantInfo) -> bool:
    """Whether the variant declares data-space critics and each is the network of its slot of
    kind critic (module ``critic`` from slot ``critic``), which by the critic hook's convention
    has ``features`` and a linear ``head``."""
    critics, slots = variant.players.critics, variant.factory.slots
    return bool(critics) and all(name in slots and slots[name].kind == "critic" for name in critics)


def phases_of(model: Model, names: tuple[str, ...]) -> list[Phase]:
    return [p for p in model.phases if p.name in names]


def phases_training(model: Model, modules: list[str]) -> list[str]:
    """The names of the phases whose optimisers update any of ``modules``."""
    return [p.name for p in model.phases if set(p.modules) & set(modules)]


def insert_before_head(
    critic: nn.Module, layer: nn.Module, extra: int, trick: str, variant: VariantInfo | None = None
) -> None:
    """Put ``layer`` (which adds ``extra`` features) before the critic's final linear layer, and
    widen that layer: ``head = Sequential(..., layer, Linear(F + extra, out))``."""
    head = getattr(critic, "head", None)
    if not hasattr(critic, "features") or not isinstance(head, (nn.Linear, nn.Sequential)):
        raise GenfwError(
            f"{trick} needs a critic with features(x, y) and a linear head (the mlp and dcgan critics); "
            f"{type(critic).__name__} has none; variants it applies to: "
            f"{variant.fitting(critic_layer_fits) if variant else fitting_variants(critic_layer_fits)}"
        )
    *before, last = head if isinstance(head, nn.Sequential) else (head,)
    if not isinstance(last, nn.Linear):
        raise GenfwError(
            f"{trick} needs the critic's head to end in a linear layer, not {type(last).__name__}"
        )
    widened = nn.Linear(last.in_features + extra, last.out_features).to(last.weight.device)
    copy_spectral_norm(last, widened)
    critic.head = nn.Sequential(*before, layer.to(last.weight.device), widened)


def critic_layer_fits(variant: VariantInfo) -> bool:
    """``fits`` of the tricks that insert a layer before the critic's head."""
    return declares(variant, "critic", ()) and has_critic_network(variant)


def copy_spectral_norm(old: nn.Linear, new: nn.Linear) -> None:
    """Spectral normalisation on ``new`` with ``old``'s settings where ``old`` has it (a SAGAN
    head), as a parametrization or as the older ``torch.nn.utils.spectral_norm`` hook."""
    if parametrize.is_parametrized(old, "weight"):
        for p in old.parametrizations.weight:
            if isinstance(p, _SpectralNorm):
                spectral_norm(new, n_power_iterations=p.n_power_iterations, eps=p.eps, dim=p.dim)
                return
    for hook in old._forward_pre_hooks.values():
        if isinstance(hook, LegacySpectralNorm):
            torch.nn.utils.spectral_norm(
                new, name=hook.name, n_power_iterations=hook.n_power_iterations, eps=hook.eps, dim=hook.dim
            )
            return


def _width(critic: nn.Module) -> int:
    """The number of features entering the critic's final linear layer."""
    head = critic.head
    last = head[-1] if isinstance(head, nn.Sequential) else head
    return last.in_features


# --- feature matching ---------------------------------------------------------------------------


@attrs.define
class FeatureMatchingOptions:
    """Options of feature matching."""

    weight: float = attrs.field(default=1.0, validator=check.positive)
    # true: the generator's objective is feature matching alone (the paper's form); false: it is
    # added to the adversarial objective.
    replace: bool = False


class FeatureMatching:
    """Feature matching (Salimans et al. 2016, section 3.1).

    The generator minimises ``weight * ||E_x f(x) - E_z f(G(z))||_2^2``, ``f`` the critic's
    intermediate features (the input of its head, the phase's ``features`` context entry), means
    over the batch; the real features are constants. With ``replace`` this is the generator's
    whole objective, as in the paper (``replaces_loss``: the loop leaves the adversarial loss out).
    """

    phases: tuple[str, ...] = ("generator",)
    needs: tuple[str, ...] = ("real", "fake", "features", "labels")

    def __init__(self, options: FeatureMatchingOptions) -> None:
        self.weight, self.replace = options.weight, options.replace

    @staticmethod
    def fits(variant: VariantInfo) -> bool:
        return declares(variant, "generator", FeatureMatching.needs) and has_critic_network(variant)

    def setup(self, model: Model, ctx: BuildContext) -> None:
        """Refuse, in one line, critics (the modules the critic phase trains) without features."""
        for phase in phases_of(model, ("critic",)):
            for name in phase.modules:
                if not hasattr(model.modules[name], "features"):
                    raise GenfwError(
                        f"feature_matching needs a critic with features(x, y) (the mlp and dcgan critics "
                        f"have it); {type(model.modules[name]).__name__} has none; variants it applies to: "
                        f"{fitting_variants(self.fits, ctx and ctx.registry)}"
                    )

    @property
    def replaces_loss(self) -> bool:
        """With ``replace`` the loop drops the phase's own objective (logged as ``replaced_loss``)."""
        return self.replace

    def penalty(self, ctx: dict[str, Any]) -> Tensor:
        features, labels = ctx["features"], ctx["labels"]
        with torch.no_grad():
            real = features(ctx["real"], labels).float().mean(dim=0)  # (F,)
        fake = features(ctx["fake"], labels).float().mean(dim=0)  # (F,)
        return self.weight * (real - fake).square().sum()


# --- historical averaging -----------------------------------------------------------------------


class ParameterHistory(nn.Module):
    """Running means of each player's parameters: buffers ``<phase>_<i>`` and ``<phase>_count``."""

    def __init__(self, players: dict[str, list[nn.Parameter]]) -> None:
        super().__init__()
        for phase, params in players.items():
            for i, p in enumerate(params):
                self.register_buffer(f"{phase}_{i}", p.detach().clone())
            self.register_buffer(f"{phase}_count", torch.ones((), dtype=torch.long))

    def means(self, phase: str, n: int) -> list[Tensor]:
        return [self._buffers[f"{phase}_{i}"] for i in range(n)]


@attrs.define
class HistoricalAveragingOptions:
    """Options of historical averaging."""

    weight: float = attrs.field(default=1.0, validator=check.positive)


class HistoricalAveraging:
    """Historical averaging (Salimans et al. 2016, section 3.3).

    Each player adds ``weight * sum_params ||theta - theta_bar||^2`` to its objective, where
    ``theta_bar = (1 / (t + 1)) sum_{i=0..t} theta_i`` is the mean of the player's parameters at
    the start and after each of its ``t`` updates so far (a constant in the gradient). The means
    are buffers of the module ``historical_averaging``.
    """

    phases: tuple[str, ...] = ("critic", "generator")
    needs: tuple[str, ...] = ()

    def __init__(self, options: HistoricalAveragingOptions) -> None:
        self.weight = options.weight

    def setup(self, model: Model, ctx: BuildContext) -> None:
        """Runs after every callback changed the model, so it sees the final parameters."""
        self.params: dict[str, list[nn.Parameter]] = {}
        for phase in phases_of(model, self.phases):
            unique = {
                id(p): p for n in phase.modules for p in model.modules[n].parameters() if p.requires_grad
            }
            self.params[phase.name] = list(unique.values())
        self.history = ParameterHistory(self.params)
        add_module(model, "historical_averaging", self.history)

    def penalty(self, ctx: dict[str, Any]) -> Tensor:
        params = self.params[ctx["phase"]]
        means = self.history.means(ctx["phase"], len(params))
        return self.weight * sum(
            (p.float() - mu.float()).square().sum() for p, mu in zip(params, means, strict=True)
        )

    @torch.no_grad()
    def after_step(self, modules: list[nn.Module], phase: str = "") -> None:
        if phase not in self.params:
            return
        count = self.history._buffers[f"{phase}_count"]
        count.add_(1)
        params = self.params[phase]
        for p, mu in zip(params, self.history.means(phase, len(params)), strict=True):
            mu.add_((p.detach().to(mu.dtype) - mu) / count)  # running mean, no device sync


# --- minibatch discrimination and minibatch standard deviation ---------------------------------


@attrs.define
class MinibatchDiscriminationOptions:
    """Options of minibatch discrimination."""

    kernels: int = attrs.field(default=100, validator=check.at_least(1))  # B
    kernel_dim: int = attrs.field(default=5, validator=check.at_least(1))  # C


class MinibatchDiscriminationTrick(Callback):
    """Minibatch discrimination (Salimans et al. 2016, section 3.2).

    Inserts :class:`~genfw_plugins._layers.MinibatchDiscrimination` (a learnt ``T`` of shape
    ``(A, B, C)``; ``o(x_i)_b = sum_j exp(-||M_i,b - M_j,b||_1)``) between each critic's features
    and its head, which is widened by ``B`` inputs. Real and fake batches are scored separately,
    so each is compared with itself, as in the paper.
    """

    after = ("packing",)
    fits = staticmethod(critic_layer_fits)

    def on_model_built(self, model: Model, variant: VariantInfo, ctx: BuildContext) -> None:
        o = self.options
        for name in players(model, critics(variant), "minibatch_discrimination", "critics", variant):
            critic = model.modules[name]
            width = _width(critic) if hasattr(critic, "head") else 0
            layer = MinibatchDiscrimination(width, o.kernels, o.kernel_dim)
            insert_before_head(critic, layer, o.kernels, "minibatch_discrimination", variant)


class StdDevFeature(nn.Module):
    """``(N, F)`` -> ``(N, F + 1)``: ProGAN's minibatch standard deviation of flat features
    (:func:`~genfw_plugins._layers.minibatch_stddev` on ``(N, F, 1, 1)``)."""

    def __init__(self, group_size: int = 4) -> None:
        super().__init__()
        self.group_size = group_size

    def forward(self, x: Tensor) -> Tensor:
        return minibatch_stddev(x[:, :, None, None], self.group_size)[:, :, 0, 0]

    def extra_repr(self) -> str:
        return f"group_size={self.group_size}"


@attrs.define
class MinibatchStdDevOptions:
    """Options of the minibatch standard-deviation feature."""

    # Examples per group (ProGAN: 4); the largest divisor of the batch size up to it is used.
    group_size: int = attrs.field(default=4, validator=check.at_least(1))


class MinibatchStdDevTrick(Callback):
    """Minibatch standard deviation (Karras et al. 2018, section 3).

    Appends one feature before each critic's head: for each group of ``group_size`` examples,
    the standard deviation of every feature over the group, averaged over features.
    """

    after = ("packing",)
    fits = staticmethod(critic_layer_fits)

    def on_model_built(self, model: Model, variant: VariantInfo, ctx: BuildContext) -> None:
        for name in players(model, critics(variant), "minibatch_stddev", "critics", variant):
            layer = StdDevFeature(self.options.group_size)
            insert_before_head(model.modules[name], layer, 1, "minibatch_stddev", variant)


# --- one-sided label smoothing ------------------------------------------------------------------


@attrs.define
class LabelSmoothingOptions:
    """Options of one-sided label smoothing."""

    real_label: float = attrs.field(
        default=0.9, validator=check.in_interval(0, 1, low_open=True, high_open=True)
    )


class LabelSmoothing:
    """One-sided label smoothing (Salimans et al. 2016, section 3.4): the critic's target for real
    examples is ``real_label`` (0.9), fakes keep 0.

    For the cross-entropy losses, ``BCE(s, r) = BCE(s, 1) + (1 - r) s`` exactly, so the trick adds
    ``(1 - real_label) * mean(real_scores)`` to the critic's objective; the same as
    ``--loss.real_label 0.9`` (choose one of the two).
    """

    phases: tuple[str, ...] = ("critic",)
    needs: tuple[str, ...] = ("real_scores",)

    def __init__(self, options: LabelSmoothingOptions) -> None:
        self.real_label = options.real_label

    @staticmethod
    def fits(variant: VariantInfo) -> bool:
        """A critic phase with real scores and, by default, a cross-entropy ``loss`` slot (of the
        registry the variant was found in)."""
        slot = variant.factory.slots.get("loss")
        if slot is None or slot.kind != "loss" or not declares(variant, "critic", LabelSmoothing.needs):
            return False
        registry = get_registry() if variant.registry is None else variant.registry
        loss = registry.all("loss").get(slot.default)
        return loss is not None and isinstance(loss.factory, type) and issubclass(loss.factory, MinimaxLoss)

    def setup(self, model: Model, ctx: BuildContext) -> None:
        loss = ctx.components.get("loss")
        factory = getattr(loss, "component", None) and loss.component.factory
        if not (isinstance(factory, type) and issubclass(factory, MinimaxLoss)):
            name = loss.name if loss is not None else "none"
            raise GenfwError(
                f"label_smoothing applies to the cross-entropy losses (minimax, non_saturating); this run's "
                f"loss is '{name}' (pick one with --loss); variants it applies to: {fitting_variants(self.fits, ctx and ctx.registry)}"
            )
        if loss.options.real_label != 1.0:
            raise GenfwError(
                f"label_smoothing and loss.real_label {loss.options.real_label} both smooth the real target; use one of them"
            )

    def penalty(self, ctx: dict[str, Any]) -> Tensor:
        return (1.0 - self.real_label) * ctx["real_scores"].float().mean()


# --- experience replay --------------------------------------------------------------------------


class ReplayBuffer(nn.Module):
    """Past fakes: ``samples (capacity, *shape)`` and ``count`` (how many are stored)."""

    def __init__(self, capacity: int, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.register_buffer("samples", torch.zeros(capacity, *shape))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def draw(self, k: int) -> Tensor:
        """``k`` stored samples, uniformly with replacement (zeros while empty)."""
        j = (torch.rand(k, device=self.samples.device) * self.count).long()
        return self.samples[j.clamp_max(self.samples.shape[0] - 1)]

    @torch.no_grad()
    def push(self, fakes: Tensor) -> None:
        """Store ``fakes``: into free slots while there are some, then over random ones among those
        filled before this call (all slots if none was)."""
        n, capacity = fakes.shape[0], self.samples.shape[0]
        pos = self.count + torch.arange(n, device=self.samples.device)
        old = torch.where(self.count > 0, self.count, capacity)
        random = (torch.rand(n, device=self.samples.device) * old).long().clamp_max(capacity - 1)
        self.samples[torch.where(pos < capacity, pos, random)] = fakes.detach().to(self.samples.dtype)
        self.count.copy_((self.count + n).clamp_max(capacity))


def replayed(batch: int, share: float) -> int:
    """How many of a critic batch of ``batch`` fakes come from the buffer: ``round(share * batch)``,
    kept within ``1 .. batch - 1`` so that both old and new fakes are in every batch."""
    if batch < 2:
        raise GenfwError(
            f"experience_replay needs batches of at least 2 fakes (past and new ones), got {batch}; "
            f"raise --batch-size"
        )
    return min(max(round(share * batch), 1), batch - 1)


def replay(buffer: ReplayBuffer, fake: Tensor, share: float) -> Tensor:
    """Of a critic batch of ``b`` fakes, the first ``k = replayed(b, share)`` are swapped for past
    fakes drawn from the buffer (the first batch, with the buffer empty, stays new), then the
    ``b - k`` new fakes the critic scores replace random buffer entries (into free slots first):
    Shrivastava et al.'s rule, b/2 and b/2."""
    k = replayed(fake.shape[0], share)
    stored = buffer.count > 0  # a tensor: no device sync
    old = torch.where(stored, buffer.draw(k).to(fake.dtype), fake[:k])  # the first batch: none yet
    buffer.push(fake[k:])
    return torch.cat([old, fake[k:]])


@attrs.define
class ExperienceReplayOptions:
    """Options of experience replay."""

    capacity: int = attrs.field(default=1024, validator=check.at_least(1))  # past fakes kept
    # Of each critic batch of fakes, the share drawn from the buffer; the rest are new and then
    # replace buffer entries (0.5: the paper's b/2 and b/2).
    share: float = attrs.field(default=0.5, validator=check.in_interval(0, 1, low_open=True, high_open=True))


def unconditional_hint(variant: VariantInfo) -> str:
    """How to train ``variant`` unconditionally, where its ``conditional`` option (SNGAN's,
    BigGAN's: auto, always, never) made it class-conditional; empty otherwise."""
    mode = getattr(variant.options, "conditional", None)
    if mode in ("auto", "always"):
        return f", and this {variant.name} is class-conditional (conditional: {mode}): --plugin.conditional never"
    return ""


class ExperienceReplay(Callback):
    """Experience replay (Shrivastava et al. 2017, section 2.3; Pfau & Vinyals 2016).

    In each critic step a ``share`` of the ``b`` fakes (b/2, as in the paper) is drawn from a
    buffer of past fakes; after it, the new fakes of the step (the other b/2) replace random
    buffer entries, into free slots first: "we randomly replace b/2 samples in the buffer with the
    newly generated refined images" (section 2.3), not all ``b``. The buffer is the module
    ``experience_replay``; the fakes arrive through the ``on_fakes`` event of the variant's critic
    phase. Variants that declare ``replayable`` (unconditional: a replayed fake would not match
    the batch's labels) only.
    """

    @staticmethod
    def fits(variant: VariantInfo) -> bool:
        """A critic and a generator phase, and a variant that declares its fakes replayable
        (``replayable = True``: unconditional, each fake labelled only as fake)."""
        return {"critic", "generator"} <= set(variant.phases) and variant.factory.replayable

    def on_model_built(self, model: Model, variant: VariantInfo, ctx: BuildContext) -> None:
        applies = f"variants it applies to: {variant.fitting(self.fits)}"
        generators = players(model, variant.players.generators, "experience_replay", "generators", variant)
        if model.num_classes or any(getattr(model.modules[g], "num_classes", 0) for g in generators):
            raise GenfwError(
                f"experience_replay works with unconditional generators only (a past fake has no label)"
                f"{unconditional_hint(variant)}; {applies}"
            )
        for g in generators:
            if not getattr(model.modules[g], "replayable", True):
                why = getattr(model.modules[g], "replay_refusal", "its fakes cannot stand in for one another")
                raise GenfwError(
                    f"experience_replay cannot replay the fakes of {type(model.modules[g]).__name__}: {why}; {applies}"
                )
        if not variant.factory.replayable:
            raise GenfwError(
                f"experience_replay needs a variant whose critic phase scores unconditional fakes it may "
                f"swap for past ones (replayable); '{variant.name}' is not; {applies}"
            )
        self.buffer = ReplayBuffer(self.options.capacity, tuple(ctx.data.shape))
        add_module(model, "experience_replay", self.buffer)

    def on_fakes(self, phase: str, fakes: Tensor) -> Tensor:
        if phase != "critic":
            return fakes
        return replay(self.buffer, fakes, self.options.share)


# --- instance noise -----------------------------------------------------------------------------


class NoiseSchedule(nn.Module):
    """The training step of the instance-noise schedule, as a buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("step", torch.zeros((), dtype=torch.long))


def instance_noise_sigma(sigma: float, anneal_steps: int, step: Tensor) -> Tensor:
    """``sigma * max(0, 1 - step / anneal_steps)`` (``sigma`` throughout when ``anneal_steps == 0``)."""
    if anneal_steps == 0:
        return torch.full((), sigma, device=step.device)
    return sigma * (1.0 - step.float() / anneal_steps).clamp_min(0.0)


class TransformedCritic(nn.Module):
    """A critic whose every input goes through ``transform`` first (instance noise, augmentations):
    real and fake alike, in every phase, and through ``features`` too; ``head`` and any other member
    are the inner critic's. ``transform`` is a plain attribute, not a submodule: its state (a
    schedule, an augmentation probability) is a module of the model of its own."""

    def __init__(self, inner: nn.Module, transform: Callable[[Tensor], Tensor]) -> None:
        super().__init__()
        self.inner, self.transform = inner, transform

    def forward(self, x: Tensor, *args: Any, **kwargs: Any) -> Any:
        return self.inner(self.transform(x), *args, **kwargs)

    def features(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return critic_features(self.inner, self.transform(x), y)

    @property
    def head(self) -> nn.Module:
        return self.inner.head

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:  # the inner critic's own members (an energy critic's k, encoder)
            return getattr(self.inner, name)


class NoisyCritic(TransformedCritic):
    """A critic whose every input gets ``x + sigma * N(0, I)``; ``sigma()`` is the schedule's
    current value."""

    def __init__(self, inner: nn.Module, sigma: Any) -> None:
        super().__init__(inner, self.noisy)
        self.sigma = sigma

    def noisy(self, x: Tensor) -> Tensor:
        return x + self.sigma().to(x.dtype) * torch.randn_like(x)


@attrs.define
class InstanceNoiseOptions:
    """Options of instance noise."""

    sigma: float = attrs.field(default=0.1, validator=check.positive)  # at the start
    # Training steps over which sigma falls linearly to 0; 0 keeps it constant.
    anneal_steps: int = attrs.field(default=2000, validator=check.at_least(0))


class InstanceNoise(Callback):
    """Instance noise (Sønderby et al. 2017, appendix C; Arjovsky & Bottou 2017).

    Every input of every critic, real and fake, in every phase, gets Gaussian noise of standard
    deviation ``sigma_t = sigma * max(0, 1 - t / anneal_steps)``, ``t`` the training step (a
    buffer of the module ``instance_noise``, advanced at the end of each training step). Each
    critic is wrapped in :class:`NoisyCritic` after the tricks that change its layers.
    """

    after = ("packing", "minibatch_discrimination", "minibatch_stddev", "spectral_norm")

    def on_model_built(self, model: Model, variant: VariantInfo, ctx: BuildContext) -> None:
        names = players(model, critics(variant), "instance_noise", "critics", variant)
        self.schedule = NoiseSchedule()
        add_module(model, "instance_noise", self.schedule)
        for name in names:
            model.modules[name] = NoisyCritic(model.modules[name], self.sigma)

    def sigma(self) -> Tensor:
        return instance_noise_sigma(self.options.sigma, self.options.anneal_steps, self.schedule.step)

    @torch.no_grad()
    def on_step_end(self, state: LoopState) -> None:
        self.schedule.step.add_(1)


# --- spectral normalisation ---------------------------------------------------------------------

NORMALISED = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
    nn.Embedding,
)
EQUALISED = (EqualizedLinear, EqualizedConv2d)


def spectrally_normalised(module: nn.Module) -> set[int]:
    """The ids of the parameters of ``module`` that spectral normalisation reparametrises (as a
    ``torch.nn.utils.parametrizations.spectral_norm`` parametrization or as the older hook)."""
    done: set[int] = set()
    for layer in module.modules():
        if parametrize.is_parametrized(layer):
            for plist in layer.parametrizations.values():
                if any(isinstance(p, _SpectralNorm) for p in plist):
                    done.add(id(plist.original))
        for hook in layer._forward_pre_hooks.values():
            if isinstance(hook, LegacySpectralNorm):
                done.add(id(getattr(layer, hook.name + "_orig")))
    return done


def spectral_norm_plan(module: nn.Module, what: str = "critic") -> list[tuple[nn.Module, str]]:
    """The ``(layer, parameter name)`` pairs :func:`apply_spectral_norm` normalises: every weight
    of ``module`` (a parameter with two or more dimensions) not already normalised. A weight of a
    kind it cannot normalise is refused in one line (``what`` names the network)."""
    normalised = spectrally_normalised(module)
    plan: list[tuple[nn.Module, str]] = []
    for path, layer in module.named_modules():
        for name, p in layer.named_parameters(recurse=False):
            if p.dim() < 2 or id(p) in normalised:
                continue
            known = (isinstance(layer, (*NORMALISED, *EQUALISED)) and name == "weight") or (
                isinstance(layer, MinibatchDiscrimination) and name == "T"
            )
            if not known:
                where = f"{path}.{name}" if path else name
                raise GenfwError(
                    f"spectral_norm cannot normalise the {what}'s weight {where} ({type(layer).__name__}); it "
                    f"normalises linear, convolutional, embedding, equalised-learning-rate and minibatch-"
                    f"discrimination layers: use a {what} of those, or leave spectral_norm out"
                )
            plan.append((layer, name))
    return plan


def apply_spectral_norm(module: nn.Module, n_power_iterations: int = 1, what: str = "critic") -> int:
    """Spectral normalisation of every weight of ``module`` not already normalised (see
    :func:`spectral_norm_plan`; refused in one line, before anything changes, if one cannot be);
    returns how many it normalised.

    Linear, convolutional and embedding layers use ``W / sigma(W)``. An equalised-learning-rate
    layer (ProGAN) uses ``c W``, ``c`` its He constant, and ``c W / sigma(c W) = W / sigma(W)``:
    its constant becomes 1. Minibatch discrimination's ``T (A, B, C)`` is normalised as the matrix
    ``(A, B C)`` of its linear map ``x -> x T``."""
    return _normalise(spectral_norm_plan(module, what), n_power_iterations)


def _normalise(plan: list[tuple[nn.Module, str]], n_power_iterations: int) -> int:
    for layer, name in plan:
        spectral_norm(layer, name=name, n_power_iterations=n_power_iterations)
        if isinstance(layer, EQUALISED):
            layer.scale = 1.0  # c W / sigma(c W) = W / sigma(W): the He constant cancels
    return len(plan)


@attrs.define
class SpectralNormOptions:
    """Options of spectral normalisation."""

    generator: bool = False  # also normalise the generator's layers (as SAGAN does)
    n_power_iterations: int = attrs.field(default=1, validator=check.at_least(1))


class SpectralNorm(Callback):
    """Spectral normalisation (Miyato et al. 2018): each weight ``W`` of every critic (and, with
    ``generator: true``, of every generator) is used as ``W / sigma(W)``, ``sigma`` its largest
    singular value estimated by power iteration
    (``torch.nn.utils.parametrizations.spectral_norm``): see :func:`apply_spectral_norm` for the
    layers it covers; a network with any other weight is refused before any network changes."""

    after = ("packing", "minibatch_discrimination", "minibatch_stddev")

    def on_model_built(self, model: Model, variant: VariantInfo, ctx: BuildContext) -> None:
        names = players(model, critics(variant), "spectral_norm", "critics", variant)
        if self.options.generator:
            names += players(model, variant.players.generators, "spectral_norm", "generators", variant)
        # Every network's plan first: a refusal leaves all of them untouched.
        plans = [spectral_norm_plan(model.modules[name], name) for name in names]
        for plan in plans:
            _normalise(plan, self.options.n_power_iterations)


# --- exponential moving average of the generator -------------------------------------------------


class AveragedGenerator(nn.Module):
    """A copy of the generator whose weights follow an exponential moving average (no gradients)."""

    def __init__(self, generator: nn.Module) -> None:
        super().__init__()
        self.average = copy.deepcopy(generator).requires_grad_(False)
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def update(self, generator: nn.Module, decay: float, warmup: bool, start: int = 0) -> None:
        """``avg <- d avg + (1 - d) theta`` with ``d = decay`` (``min(decay, (1 + t) / (10 + t))``
        with ``warmup``, ``t`` the number of updates so far; 0, a copy, while ``t + 1 < start``:
        BigGAN's ``ema_start``, whose update ``itr`` counts from 1 and copies while ``itr < start``);
        buffers (batch-norm statistics) are copied, as in StyleGAN2's G_ema."""
        d = torch.full((), decay, device=self.updates.device)
        if warmup:
            d = torch.minimum(d, (1.0 + self.updates) / (10.0 + self.updates))
        d = torch.where(self.updates + 1 < start, torch.zeros_like(d), d)
        for avg, p in zip(self.average.parameters(), generator.parameters(), strict=True):
            avg.lerp_(p.detach().to(avg.dtype), (1.0 - d).to(avg.dtype))
        for avg, b in zip(self.average.buffers(), generator.buffers(), strict=True):
            avg.copy_(b)
        self.updates.add_(1)


@attrs.define
class EMAOptions:
    """Options of the generator's exponential moving average."""

    decay: float = attrs.field(default=0.999, validator=check.in_interval(0, 1, high_open=True))
    # Early on, decay min(decay, (1 + t) / (10 + t)) (TensorFlow's num_updates rule), so the
    # average forgets the initial weights quickly.
    warmup: bool = True
    # The half-life of the average in thousands of training images (StyleGAN2's ema_kimg). Given,
    # it replaces decay: decay = 0.5 ** (batch_size * processes / (1000 * half_life_kimg)), the
    # images of one update over all processes. null: decay as given.
    half_life_kimg: float | None = attrs.field(
        default=None, validator=attrs.validators.optional(check.positive)
    )
    # Updates 1 .. start - 1 copy the generator (decay 0), BigGAN's ema_start: the average starts
    # from the weights after start - 1 steps, not from the initial ones. 0 or 1: from the first.
    start: int = attrs.field(default=0, validator=check.non_negative)


def half_life_decay(half_life_kimg: float, images_per_update: int) -> float:
    """The per-update decay ``0.5 ** (images / (1000 half_life_kimg))`` after which the average's
    weight on the past halves every ``half_life_kimg`` thousand images (StyleGAN2's ``ema_beta``)."""
    return 0.5 ** (images_per_update / (1000.0 * half_life_kimg))


class EMA(Callback):
    """Exponential moving average of each generator's weights (Yazici et al. 2019).

    After each step of a phase that trains generator ``G``, ``theta_ema <- decay * theta_ema +
    (1 - decay) * theta`` in the module ``G_ema`` (``generator_ema``); with ``half_life_kimg``,
    ``decay`` follows from the batch size (:func:`half_life_decay`, StyleGAN2's ``ema_kimg``). Sample grids, metrics,
    ``genfw sample`` and ``generator.safetensors`` use the averaged weights (the ``sampler``
    event); training uses the live ones. It copies the generators after every callback that
    changes them.
    """

    after = ("spectral_norm",)

    def on_model_built(self, model: Model, variant: VariantInfo, ctx: BuildContext) -> None:
        self.generators = players(model, variant.players.generators, "ema", "generators", variant)
        self.phases = set(phases_training(model, self.generators))
        for g in self.generators:
            add_module(model, f"{g}_ema", AveragedGenerator(model.modules[g]))
        self.decay = self.options.decay
        if self.options.half_life_kimg is not None:
            if not ctx.batch_size:
                raise GenfwError("ema: half_life_kimg needs the run's batch size; give decay instead")
            dist = torch.distributed
            world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
            self.decay = half_life_decay(self.options.half_life_kimg, ctx.batch_size * world)

    def on_phase_end(self, phase: str, output: PhaseOutput, state: LoopState) -> None:
        if phase in self.phases:
            for g in self.generators:
                state.plain[f"{g}_ema"].update(
                    state.plain[g], self.decay, self.options.warmup, self.options.start
                )

    def sampler(self, modules: Modules) -> Modules:
        return Modules({**modules, **{g: modules[f"{g}_ema"].average for g in self.generators}})


# --- packing (PacGAN) ---------------------------------------------------------------------------


def pack(x: Tensor, m: int) -> Tensor:
    """Samples ``(B, C, ...)`` -> packs ``(B / m, m C, ...)``: pack ``i`` is rows ``i m .. i m + m - 1``
    concatenated along the first data dimension (as PacGAN concatenates its m samples)."""
    b = x.shape[0]
    if b % m:
        raise GenfwError(
            f"packing m={m} needs batches divisible by {m}, got {b}; set --batch-size to a multiple of {m}"
        )
    # (B, C, ...) -> (B/m, m, C, ...) -> (B/m, m*C, ...): sample j of a pack is row i*m + j.
    return x.reshape(b // m, m * x.shape[1], *x.shape[2:])


def unpack(packs: Tensor, m: int) -> Tensor:
    """The inverse of :func:`pack`: ``(B / m, m C, ...)`` -> ``(B, C, ...)``."""
    return packs.reshape(packs.shape[0] * m, packs.shape[1] // m, *packs.shape[2:])


class PackedCritic(nn.Module):
    """``m`` samples judged together: ``x (B, *shape)`` -> packs ``(B / m, m * shape[0], ...)``
    (:func:`pack`) -> the inner critic's scores ``(B / m, out)``. ``features`` and ``head`` are the
    inner critic's, so the tricks that read features or widen the head see the packed critic."""

    def __init__(self, inner: nn.Module, m: int) -> None:
        super().__init__()
        self.inner, self.m = inner, m

    def pack(self, x: Tensor) -> Tensor:
        return pack(x, self.m)

    def features(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return self.inner.features(self.pack(x), None)

    @property
    def head(self) -> nn.Module:
        return self.inner.head

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "head":  # a widened head (minibatch layers) goes to the inner critic
            self.inner.head = value
        else:  # nn.Module's own bookkeeping would register a module here and bypass a setter
            super().__setattr__(name, value)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return self.inner(self.pack(x), None)

    def extra_repr(self) -> str:
        return f"m={self.m}"


@attrs.define
class PackingOptions:
    """Options of PacGAN's packing."""

    m: int = attrs.field(default=4, validator=check.at_least(2))  # samples per pack (PacGAN4: 4)


class Packing(Callback):
    """PacGAN (Lin et al. 2018): each critic scores packs of ``m`` samples, all real or all fake,
    concatenated; a generator that drops modes makes packs that look alike, which a packed critic
    sees. Each critic is rebuilt from its slot (the slot of the same name) with ``m`` times the
    input (points ``(m d,)``; images ``(m C, H, W)``), and every critic score stands for one pack,
    so the losses average over packs. A batch of ``B`` gives ``B / m`` packs (PacGAN draws ``m``
    batches instead: raise ``--batch-size`` to keep the number of packs). The packed critic is a
    function of the whole pack, so the phases that train the critics give regularisers packs
    (``on_phase_output``): ``real`` and ``fake`` ``(B / m, m C, ...)`` and a ``critic`` that scores
    packs; a gradient penalty (WGAN-GP, DRAGAN) then draws one interpolation factor and takes one
    gradient norm per pack, the Lipschitz constraint on the function the critic is. Unconditional
    variants whose critics score samples alone (``replayable``) only."""

    @staticmethod
    def fits(variant: VariantInfo) -> bool:
        return bool(variant.players.critics) and variant.factory.replayable

    def on_model_built(self, model: Model, variant: VariantInfo, ctx: BuildContext) -> None:
        applies = f"variants it applies to: {variant.fitting(self.fits)}"
        names = players(model, variant.players.critics, "packing", "critics", variant)
        generators = players(model, variant.players.generators, "packing", "generators", variant)
        if model.num_classes or any(getattr(model.modules[g], "num_classes", 0) for g in generators):
            raise GenfwError(
                f"packing judges packs of unlabelled samples{unconditional_hint(variant)}; {applies}"
            )
        slots = {n: variant.players.slot_of(n) for n in names}
        if not variant.factory.replayable or not all(s in ctx.components for s in slots.values()):
            raise GenfwError(
                f"packing rebuilds each critic from its slot, for critics that score samples alone; {applies}"
            )
        shape, m = tuple(ctx.data.shape), self.options.m
        for name in names:
            inner = ctx[slots[name]].build(in_shape=(m * shape[0], *shape[1:]), out_dim=1, num_classes=0)
            model.modules[name] = PackedCritic(inner, m)
        self.phases = set(phases_training(model, names))

    def on_phase_output(self, phase: str, output: PhaseOutput, state: LoopState) -> None:
        """The context as the packed critic sees it: ``real`` and ``fake`` as packs and
        ``critic(packs, y)`` the phase's own critic on the unpacked samples (the same scores:
        :func:`unpack` then :func:`pack` is the identity, and wrappers such as instance noise stay
        in the path)."""
        if phase not in self.phases:
            return
        ctx, m = output.context, self.options.m
        for key in ("real", "fake"):
            if key in ctx:
                ctx[key] = pack(ctx[key], m)
        if "critic" in ctx:
            critic = ctx["critic"]
            ctx["critic"] = lambda x, y=None: critic(unpack(x, m), y)


# --- registration -------------------------------------------------------------------------------


@genfw.hookimpl
def genfw_register_regularisers(register: Register) -> None:
    register("feature_matching", FeatureMatching, options=FeatureMatchingOptions)
    register("historical_averaging", HistoricalAveraging, options=HistoricalAveragingOptions)
    register(
        "label_smoothing",
        LabelSmoothing,
        options=LabelSmoothingOptions,
        help="One-sided label smoothing (Salimans et al. 2016): the critic's real target is 0.9.",
    )


@genfw.hookimpl
def genfw_register_callbacks(register: Register) -> None:
    register(
        "minibatch_discrimination",
        MinibatchDiscriminationTrick,
        options=MinibatchDiscriminationOptions,
        help="Minibatch discrimination (Salimans et al. 2016): a layer before each critic's head.",
    )
    register(
        "minibatch_stddev",
        MinibatchStdDevTrick,
        options=MinibatchStdDevOptions,
        help="Minibatch standard deviation (Karras et al. 2018): one feature before each critic's head.",
    )
    register(
        "experience_replay",
        ExperienceReplay,
        options=ExperienceReplayOptions,
        help="Experience replay (Shrivastava et al. 2017): the critic also sees past fakes from a buffer.",
    )
    register("instance_noise", InstanceNoise, options=InstanceNoiseOptions)
    register(
        "spectral_norm",
        SpectralNorm,
        options=SpectralNormOptions,
        help="Spectral normalisation (Miyato et al. 2018) of every critic (and optionally generator).",
    )
    register("ema", EMA, options=EMAOptions)
    register(
        "packing",
        Packing,
        options=PackingOptions,
        help="PacGAN (Lin et al. 2018): every critic scores packs of m samples at once.",
    )
