"""The plugin API, declared: what a component of each kind must provide.

This module is the one place a plugin author reads. Every hook spec in :mod:`genfw.hookspecs`
points here; :class:`genfw.registry.Registry` checks a component against its kind's contract when
it is registered (what can be seen on the factory before it is built: class attributes, methods)
and refuses in one line naming the missing or wrong member; the contract kit
(:mod:`genfw.testing`) checks the built object against the same contract.

Kinds and their contracts:

========== ========================================== =============================================
kind       contract                                   what the factory returns
========== ========================================== =============================================
variant    :class:`Variant` (subclass it)             a recipe whose ``build(ctx)`` makes a Model
generator  :class:`Generator`                         ``nn.Module``: ``forward(z, y=None)``
critic     :class:`Critic`                            ``nn.Module``: ``forward(x, y=None)``
encoder    :class:`Encoder`                           ``nn.Module``: ``forward(x, y=None)``
prior      :class:`Prior`                             ``sample(n, device=...)``, ``log_prob(z)``
loss       :class:`AdversarialLoss` /                 scores -> scalar / ``(x_hat, x) -> (B,)``
           :class:`ReconstructionLoss`
regulariser :class:`Regulariser`                      ``penalty(ctx)`` on named phases
callback   :class:`Callback` (subclass it)            reacts to the loop's events, keeps state
metric     :class:`Metric`                            ``metric(EvalContext) -> dict[str, float]``
extractor  :class:`Extractor`                         ``features(x) -> (N, d)``
dataset    :class:`genfw.GenDataset` (subclass it)    ``(x, y)`` items with shape/num_classes/kind
========== ========================================== =============================================

Every factory is called as ``factory(options, **context)`` with its validated attrs options
object; the context keywords of each kind are in the hook spec.

A data set too large for memory is streamed: it sets ``streaming = True`` and gives
``stream(seed, epoch, rank, world)``, each process's shard of an epoch, which the loop reads in
order in ``num_workers`` ``DataLoader`` workers (:class:`genfw.GenDataset`, ``genfw.data.StreamLoader``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

import attrs

from genfw.hookspecs import KINDS

if TYPE_CHECKING:
    import torch
    from torch import Tensor

    from genfw.model import BuildContext, EvalContext, Model, Modules, PhaseOutput, Slot


# --- variants -------------------------------------------------------------------------------------


def _names(value: Any) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


@attrs.frozen
class Players:
    """Which of a variant's modules (names in ``Model.modules``) play which part.

    ``generators: tuple[str, ...]`` make samples (the decoder of an autoencoder is one);
    ``critics: tuple[str, ...]`` score samples in data space; ``latent_critics: tuple[str, ...]``
    score codes (AAE, WAE-GAN); ``encoders: tuple[str, ...]`` map data to codes; ``priors:
    tuple[str, ...]`` are learned priors trained with the model (a prior that is a module, such as
    the VampPrior's pseudo-inputs: :class:`Prior`). Every module a phase trains is one of them (the
    contract kit checks it); a declared player may be absent where the variant's options or
    components leave it out (WAE's critic with ``penalty: mmd``, VAE's prior module with a fixed
    prior). A remedy that
    acts on critics (spectral norm, packing, instance noise, minibatch layers) acts on every name
    in ``critics`` or refuses; one that acts on generators (EMA) on every name in ``generators``.
    """

    generators: tuple[str, ...] = attrs.field(default=("generator",), converter=_names)
    critics: tuple[str, ...] = attrs.field(default=(), converter=_names)
    latent_critics: tuple[str, ...] = attrs.field(default=(), converter=_names)
    encoders: tuple[str, ...] = attrs.field(default=(), converter=_names)
    priors: tuple[str, ...] = attrs.field(default=(), converter=_names)
    #: The slot a player is built from, where it is not the slot of the same name (two critics
    #: ``critic_a`` and ``critic_b`` built from slot ``critic``): packing rebuilds a critic from it.
    built_from: Mapping[str, str] = attrs.field(factory=dict)

    def slot_of(self, module: str) -> str:
        return self.built_from.get(module, module)

    def all(self) -> tuple[str, ...]:
        """Every player's module name: generators, critics, latent critics, encoders, priors."""
        return (*self.generators, *self.critics, *self.latent_critics, *self.encoders, *self.priors)


@attrs.frozen
class ContextKey:
    """One key of a phase's context: its type and what it holds."""

    type: str
    meaning: str


@attrs.frozen
class PhaseSpec:
    """A phase a variant builds, declared on the class.

    ``provides: frozenset[str]``: the context keys it gives regularisers, each a key of
    :data:`PHASE_CONTEXT` or one of its own documented in ``extra``; ``help: str``: one line on
    what the phase optimises (shown by ``genfw list variant``); ``extra: Mapping[str,
    ContextKey]``: the type and meaning of keys only this variant provides. The built
    :class:`genfw.Phase` of that name gives the same ``provides`` and its context holds every one
    of these keys (the contract kit checks both).
    """

    provides: frozenset[str] = attrs.field(default=frozenset(), converter=frozenset)
    help: str = ""
    extra: Mapping[str, ContextKey] = attrs.field(factory=dict)


PHASE_CONTEXT: Mapping[str, ContextKey] = {
    # Present in every phase: the loop adds it.
    "phase": ContextKey("str", "the name of the phase being optimised (always present)"),
    "step": ContextKey("int", "training steps completed before this one (always present)"),
    "grad_scale": ContextKey(
        "Tensor ()", "the fp16 loss scale, for penalties on gradients (only under train.mixed_precision fp16)"
    ),
    # Adversarial phases.
    "real": ContextKey(
        "Tensor (B, *shape)",
        "the real batch (in a generator phase: the one the critic phase last saw); a latent "
        "critic's phase: prior samples (B, d)",
    ),
    "fake": ContextKey(
        "Tensor (B, *shape)", "the generator's samples scored in this phase; a latent critic's: codes (B, d)"
    ),
    "critic": ContextKey(
        "Callable[[Tensor, Tensor | None], Tensor]",
        "scores (B,) of samples (and labels) by the critic as this phase sees it",
    ),
    "labels": ContextKey("Tensor (B,) | None", "the class labels the players are conditioned on, or None"),
    "real_scores": ContextKey("Tensor (B,)", "the critic's scores of the real batch"),
    "fake_scores": ContextKey("Tensor (B,)", "the critic's scores of the fakes"),
    "features": ContextKey(
        "Callable[[Tensor, Tensor | None], Tensor]",
        "the critic's features (B, F) before its head (feature matching)",
    ),
    # Autoencoder phases.
    "x": ContextKey("Tensor (B, *shape)", "the input batch"),
    "x_hat": ContextKey("Tensor (B, *shape)", "the decoder's output for it (before the loss's mean)"),
    "z": ContextKey("Tensor (B, d)", "the codes the encoder gave (a sample for a stochastic encoder)"),
    "prior_z": ContextKey("Tensor (B, d)", "codes drawn from the prior"),
    "mu": ContextKey("Tensor (B, d)", "a Gaussian encoder's posterior means"),
    "logvar": ContextKey("Tensor (B, d)", "a Gaussian encoder's posterior log-variances"),
}
"""Every phase-context key the built-in variants provide, with its type. A regulariser's ``needs``
names keys of this table (or a variant's documented ``PhaseSpec.extra`` keys)."""

#: Keys the loop adds to every phase's context, declared or not.
ALWAYS_PROVIDED = frozenset({"phase", "step"})


class Variant:
    """Base class of variants: a named training recipe.

    Subclass it and override what differs; every member below is read by the core and documented
    here, nowhere else. Registered as ``register("name", MyVariant, options=MyOptions)``; the
    host calls ``MyVariant(options)`` and then ``build(ctx)``. The registry refuses a variant
    class whose members have the wrong type, naming the member; a class that does not subclass
    this one must define every member itself.
    """

    #: ``Mapping[str, genfw.Slot]``: the components it is built from, with their defaults:
    #: ``{"prior": Slot("prior", "normal")}``. Each slot is a config key (``--prior laplace``).
    slots: ClassVar[Mapping[str, Slot]] = {}
    #: :class:`Players`: which of the built model's modules are generators, critics, latent
    #: critics, encoders.
    players: ClassVar[Players] = Players()
    #: ``Mapping[str, PhaseSpec]``: every phase ``build`` may make, in the order it runs them,
    #: with the context keys each provides. At least one.
    phases: ClassVar[Mapping[str, PhaseSpec]] = {}
    #: ``Mapping[str, Mapping]``: config overlays by data kind (``"points"``, ``"image"``): the
    #: authors' settings for that kind of data; anything the user sets wins.
    presets: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    #: ``str | None``: the data set when none is given (``None``: the framework's default,
    #: ``genfw.config.DEFAULT_DATASET``).
    default_dataset: ClassVar[str | None] = None
    #: ``tuple[str, ...] | None``: metrics when none are given (``None``: the data set's
    #: ``default_metrics``).
    default_metrics: ClassVar[tuple[str, ...] | None] = None
    #: ``bool``: its critic phase scores unconditional fakes of its generators, each labelled only
    #: as fake, which experience replay may swap for past ones.
    replayable: ClassVar[bool] = False
    #: ``bool``: the models it builds draw truncated samples (the truncation trick: StyleGAN's
    #: ``w' = w_avg + psi (w - w_avg)``, BigGAN's resampled latents): ``build`` then sets
    #: ``Model.truncate``, which ``genfw sample --truncation PSI`` calls; a variant without it is
    #: refused there in one line. Optional on a class that does not subclass this one (``False``).
    truncation: ClassVar[bool] = False

    def __init__(self, options: Any) -> None:
        self.options = options

    @classmethod
    def phases_for(cls, options: Any) -> tuple[str, ...]:
        """The names of the phases ``build`` makes with ``options``, in the declared order
        (default: every declared phase). WAE overrides it: its critic phase exists only with
        ``penalty: gan``."""
        return tuple(cls.phases)

    @classmethod
    def remedies(cls, options: Any) -> Mapping[str, Mapping[str, Any]]:
        """The remedies (regularisers, by name, with options) it always attaches with ``options``;
        the user's options for the same name are merged over them."""
        return {}

    @classmethod
    def refuse(cls, remedy: str, options: Any) -> str | None:
        """Why this variant cannot take the remedy ``remedy`` with ``options`` (one line, no
        trailing period), or ``None`` where it can. The resolver asks before anything is built."""
        return None

    def build(self, ctx: BuildContext) -> Model:
        """Build the modules, the phases (named as ``phases_for(options)`` says, in that order)
        and the sampler from the chosen components."""
        raise NotImplementedError


@attrs.frozen
class VariantInfo:
    """What a remedy may know of the variant it is attached to, without building it: its
    ``name``, its class (``factory``), its validated ``options`` (``None`` when judged for every
    configuration, as in listings) and the ``registry`` the run was resolved with."""

    name: str
    factory: type
    options: Any = None
    registry: Any = attrs.field(default=None, eq=False, repr=False)

    @property
    def players(self) -> Players:
        return self.factory.players

    @property
    def phases(self) -> Mapping[str, PhaseSpec]:
        return self.factory.phases

    @property
    def truncation(self) -> bool:
        """Whether its models draw truncated samples (:attr:`Variant.truncation`)."""
        return bool(getattr(self.factory, "truncation", False))

    def provides(self, phase: str) -> frozenset[str]:
        """The keys phase ``phase`` declares, with those the loop always adds (empty when the
        variant has no such phase)."""
        spec = self.factory.phases.get(phase)
        return frozenset() if spec is None else spec.provides | ALWAYS_PROVIDED

    def fitting(self, fits: Callable[[VariantInfo], bool]) -> str:
        """The variants of this run's registry that ``fits`` accepts, comma-separated, for the
        last words of a refusal (``variants it applies to: ...``)."""
        from genfw.plugins import variants_where

        return variants_where(fits, self.registry)


# --- callbacks ------------------------------------------------------------------------------------


@attrs.define
class LoopState:
    """What the loop hands callbacks at its events.

    ``step``: training steps completed (within a step: those before it); ``modules``: the modules
    as the phases see them (possibly DDP-wrapped); ``plain``: the same, unwrapped (update weights
    in place through these); ``optimizers``: by phase name (Accelerate's wrappers: their
    ``param_groups`` and ``state`` are torch's); ``stage``: the model's stage (``Model.stage()``),
    0 for a model without stages.
    """

    step: int
    modules: Modules
    plain: Modules
    optimizers: Mapping[str, torch.optim.Optimizer]
    stage: int = 0


class Callback:
    """Base class of callbacks: react to the loop's named events and keep state in checkpoints.

    Model transforms (EMA, spectral norm, packing, instance noise, minibatch layers, experience
    replay), schedules and anything else that reacts to training are callbacks. A callback never
    rebinds a method of the model, a phase or the loop: it changes modules (``on_model_built``),
    reads and updates state at events, and chooses the modules samples are drawn with.

    Order is declared: ``after`` names the callbacks whose events must run before this one's
    (when both are attached), ``before`` those that must run after it. The host sorts them
    topologically; config order breaks ties; a cycle is a one-line error. Every callback's
    ``on_model_built`` runs before any regulariser's ``setup``.

    On the command line and in config files a callback is attached like a regulariser
    (``--regulariser NAME``, ``regularisers: {NAME: {...}}``): a user need not know which kind a
    remedy is.
    """

    #: Callbacks that must run before this one, and those that must run after it.
    after: ClassVar[tuple[str, ...]] = ()
    before: ClassVar[tuple[str, ...]] = ()

    def __init__(self, options: Any) -> None:
        self.options = options

    @classmethod
    def fits(cls, variant: VariantInfo) -> bool:
        """Whether it works with ``variant`` (judged from its declarations, without building);
        refusals name the variants for which this is true."""
        return True

    # -- events, in the order the loop fires them --
    def on_model_built(self, model: Model, variant: VariantInfo, ctx: BuildContext) -> None:
        """Once, after the variant built ``model`` and before anything is prepared or loaded
        (also when ``genfw sample``/``eval`` rebuild a run): replace or wrap modules of the
        declared players (``model.modules[name] = Wrapped(...)``), add modules (averaged weights:
        their parameters and buffers ride in checkpoints). Applies to every player it claims or
        raises ``GenfwError`` in one line."""

    def on_stage_change(self, state: LoopState) -> None:
        """Before the first phase repeat that sees a new ``Model.stage()`` (a new resolution fades
        in, a curriculum moves on)."""

    def on_phase_start(self, phase: str, state: LoopState) -> None:
        """Before each repeat of ``phase``, before its objective is computed: set what the repeat
        uses. genfw's learning-rate schedule (:mod:`genfw.schedules`, attached as ``lr_schedule``
        where rates change) sets every phase's optimiser's rate here; a callback that schedules
        rates too multiplies ``param_groups[i]["lr"]`` in :meth:`on_phase_output`."""

    def on_fakes(self, phase: str, fakes: Tensor) -> Tensor:
        """Fired by the shared adversarial step with the fakes ``(B, *shape)`` a critic phase is
        about to score; returns the fakes to score (experience replay swaps some for past ones)."""
        return fakes

    def on_phase_output(self, phase: str, output: PhaseOutput, state: LoopState) -> None:
        """After ``phase`` computed its objective, before its regularisers read ``output.context``:
        a callback may put an equivalent view of context entries there (packing gives packs)."""

    def on_phase_end(self, phase: str, output: PhaseOutput, state: LoopState) -> None:
        """After the optimiser step (and constraints) of each repeat of ``phase``."""

    def on_step_end(self, state: LoopState) -> None:
        """After every phase of a training step; ``state.step`` counts it."""

    def sampler(self, modules: Modules) -> Modules:
        """The modules samples are drawn with (grids, metrics, ``genfw sample``, and what
        ``generator.safetensors`` holds under ``Model.export``'s names): EMA swaps its averaged
        generators in. Return ``modules`` unchanged otherwise."""
        return modules

    # -- state --
    def state_dict(self) -> dict[str, Any]:
        """State kept outside modules (ints, floats, strings, tensors), saved in checkpoints under
        ``callbacks.NAME``. State in modules the callback added rides with the modules."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned; ``--resume`` stays bit-exact."""


# --- the other kinds (Protocols: a plugin class need not inherit from them) ------------------------


@runtime_checkable
class Generator(Protocol):
    """A ``torch.nn.Module``; ``forward(z (B, latent_dim), y (B,) | None) -> (B, *out_shape)``."""

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor: ...


@runtime_checkable
class Critic(Protocol):
    """A ``torch.nn.Module``; ``forward(x (B, *in_shape), y (B,) | None) -> (B, out_dim)`` raw
    scores. Optionally ``features(x, y) -> (B, F)`` and a linear ``head`` with
    ``forward(x, y) == head(features(x, y))``: feature matching reads the features, minibatch
    layers go before the head."""

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor: ...


@runtime_checkable
class Encoder(Protocol):
    """A ``torch.nn.Module``; ``forward(x (B, *in_shape), y (B,) | None) -> (B, out_dim)``."""

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor: ...


@runtime_checkable
class Prior(Protocol):
    """A latent distribution. ``dim`` is set from the factory's ``dim=`` keyword. Optionally
    ``kl_from_normal(mu, logvar) -> (n,)`` (closed-form KL from a diagonal Gaussian; the VAE
    needs it) and ``variance: float`` (per coordinate; kernel scales of MMD).

    A prior built from the variant's Gaussian encoder (the VampPrior, ``p(z) = (1/K) sum_k
    q(z | u_k)``) declares the class attribute ``needs_encoder = True``, read before it is built.
    Such a prior:

    - is built as ``factory(options, dim=int, data=genfw.DataInfo)`` (the data's shape and kind:
      its inputs ``u_k`` live in data space); a factory given no ``data`` refuses in one line (a
      variant without a Gaussian encoder cannot use it);
    - is a ``torch.nn.Module`` whose parameters are trained with the model: the variant adds it
      to ``Model.modules`` (as ``"prior"``, declared in ``Players.priors``), trains it in the phase
      that trains the encoder, and exports it with the encoder for sampling;
    - ``forward() -> (K, *shape)``: the inputs to encode; the variant calls it through the
      modules a phase is given (DDP-wrapped on several processes) and encodes them with its
      encoder, ``encoded = (mu (K, dim), logvar (K, dim))``;
    - ``log_prob(z, encoded=None)`` and ``sample(n, *, device, generator=None, encoded=None)``
      take those posteriors; without them they encode its inputs with the posterior given to
      ``bind(posterior)``, ``posterior(x) -> (mu, logvar)``, which the variant calls once after
      building (metrics, pictures and the contract kit use the prior so)."""

    dim: int

    def sample(self, n: int, *, device: Any, generator: Any = None) -> Tensor: ...

    def log_prob(self, z: Tensor) -> Tensor: ...


@runtime_checkable
class AdversarialLoss(Protocol):
    """``role = "adversarial"``: objectives on raw scores ``(B,)``, each minimised by its player.
    ``needs_real_scores = True`` where the generator's objective reads the real scores
    (relativistic losses)."""

    role: str
    needs_real_scores: bool

    def critic_loss(self, real_scores: Tensor, fake_scores: Tensor) -> Tensor: ...

    def generator_loss(self, fake_scores: Tensor, real_scores: Tensor | None = None) -> Tensor: ...


@runtime_checkable
class ReconstructionLoss(Protocol):
    """``role = "reconstruction"``: ``__call__(x_hat, x) -> (B,)`` a per-example cost summed over
    dimensions; ``likelihood = True`` where it is a normalised negative log-likelihood (then the
    ELBO and IWAE bound are reported)."""

    role: str
    likelihood: bool

    def __call__(self, x_hat: Tensor, x: Tensor) -> Tensor: ...


@runtime_checkable
class Regulariser(Protocol):
    """A term added to the objective of the phases it attaches to, or a constraint after their
    step. Registered as a class: ``phases: tuple[str, ...]``, the phase names it can attach to,
    and ``needs: tuple[str, ...]``, the context keys it reads (:data:`PHASE_CONTEXT`), are class
    attributes read before it is built; ``penalty(ctx: dict[str, Any]) -> Tensor | None``, a
    scalar already weighted, or ``None`` for a pure constraint; optionally
    ``after_step(modules: list[nn.Module], phase: str) -> None`` (a constraint such as weight
    clipping, told the phase it ran after), ``replaces_loss: bool`` (its penalty is the phase's
    whole objective), ``setup(model, ctx)`` (adds state modules, nothing else) and the static
    ``fits(variant: VariantInfo) -> bool`` (whether it works with a registered variant,
    judged from its declarations: refusals list the variants where it is true)."""

    phases: tuple[str, ...]
    needs: tuple[str, ...]

    def penalty(self, ctx: dict[str, Any]) -> Tensor | None: ...


@runtime_checkable
class Metric(Protocol):
    """``metric(ctx: EvalContext) -> dict[str, float]``; refuses data it cannot measure in one line."""

    def __call__(self, ctx: EvalContext) -> dict[str, float]: ...


@runtime_checkable
class Extractor(Protocol):
    """A ``torch.nn.Module`` in eval mode. ``features(x) -> (N, d)``; ``accepts: str`` (one line);
    ``identity: str`` (changes whenever the features would); optionally ``logits(x) -> (N, K)``."""

    accepts: str
    identity: str

    def features(self, x: Tensor) -> Tensor: ...


# --- checks at registration -----------------------------------------------------------------------

#: kind -> the contract named in refusals (losses: by their role).
CONTRACTS: Mapping[str, str] = {
    "variant": "genfw.contracts.Variant",
    "dataset": "genfw.GenDataset",
    "generator": "genfw.contracts.Generator",
    "critic": "genfw.contracts.Critic",
    "encoder": "genfw.contracts.Encoder",
    "prior": "genfw.contracts.Prior",
    "loss": "genfw.contracts.AdversarialLoss or ReconstructionLoss",
    "regulariser": "genfw.contracts.Regulariser",
    "callback": "genfw.contracts.Callback",
    "metric": "genfw.contracts.Metric",
    "extractor": "genfw.contracts.Extractor",
}
_LOSS_CONTRACTS = {
    "adversarial": ("genfw.contracts.AdversarialLoss", ("critic_loss", "generator_loss")),
    "reconstruction": ("genfw.contracts.ReconstructionLoss", ("__call__",)),
}
# Methods an instance of a class factory must have, by kind (a plain function factory is checked
# by the contract kit once built).
_METHODS: Mapping[str, tuple[str, ...]] = {
    "prior": ("sample", "log_prob"),
    "regulariser": ("penalty",),
    "metric": ("__call__",),
    "extractor": ("features",),
    "generator": ("forward",),
    "critic": ("forward",),
    "encoder": ("forward",),
}
_VARIANT_MEMBERS = (
    "slots",
    "players",
    "phases",
    "presets",
    "default_dataset",
    "default_metrics",
    "replayable",
    "phases_for",
    "remedies",
    "refuse",
    "build",
)
_EVENTS = (
    "on_model_built",
    "on_stage_change",
    "on_phase_start",
    "on_fakes",
    "on_phase_output",
    "on_phase_end",
    "on_step_end",
    "sampler",
)


def _is_names(value: Any) -> bool:
    """A tuple (or list, set) of strings."""
    return isinstance(value, (tuple, list, frozenset, set)) and all(isinstance(v, str) for v in value)


def _kind_of(value: Any) -> str:
    return type(value).__name__


def _has_method(cls: type, name: str) -> bool:
    """Whether instances of ``cls`` have method ``name`` of their own (``object``'s do not count:
    every class has a ``__call__``, as a type)."""
    return any(callable(vars(k).get(name)) for k in cls.__mro__ if k is not object)


def _check_variant(cls: Any) -> str | None:
    from genfw.model import Slot

    if not isinstance(cls, type):
        return f"a variant is registered as a class (subclass genfw.contracts.Variant), not a {_kind_of(cls)}"
    for member in _VARIANT_MEMBERS:
        if not hasattr(cls, member):
            return f"missing class attribute '{member}'"
    for member in ("phases_for", "remedies", "refuse", "build"):
        if not callable(getattr(cls, member)):
            return f"'{member}' must be a method"
    if not isinstance(cls.slots, Mapping) or not all(isinstance(s, Slot) for s in cls.slots.values()):
        return f"class attribute 'slots' must map slot names to genfw.Slot, not {cls.slots!r}"
    for name, slot in cls.slots.items():
        if slot.kind not in KINDS:
            return f"slot '{name}' has kind '{slot.kind}'; valid kinds: {', '.join(KINDS)}"
        if slot.role is not None and (slot.kind != "loss" or slot.role not in _LOSS_CONTRACTS):
            return f"slot '{name}' has role {slot.role!r}; only loss slots take one, 'adversarial' or 'reconstruction'"
    if not isinstance(cls.players, Players):
        return f"class attribute 'players' must be a genfw.contracts.Players, not a {_kind_of(cls.players)}"
    names = cls.players.all()
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice or not all(names):
        return f"class attribute 'players' names module '{(twice or [''])[0]}' twice or empty"
    if not isinstance(cls.phases, Mapping) or not cls.phases:
        return (
            f"class attribute 'phases' must map each phase name to a genfw.contracts.PhaseSpec "
            f"(at least one), not {cls.phases!r}"
        )
    for name, spec in cls.phases.items():
        if not isinstance(spec, PhaseSpec):
            return f"class attribute 'phases['{name}']' must be a genfw.contracts.PhaseSpec, not a {_kind_of(spec)}"
        if not all(isinstance(v, ContextKey) for v in spec.extra.values()):
            return f"'phases['{name}'].extra' must map keys to genfw.contracts.ContextKey"
        unknown = sorted(set(spec.provides) - set(PHASE_CONTEXT) - set(spec.extra))
        if unknown:
            return (
                f"phase '{name}' provides '{unknown[0]}', which is neither a key of "
                f"genfw.contracts.PHASE_CONTEXT nor documented in its PhaseSpec.extra"
            )
    if not isinstance(cls.presets, Mapping) or not all(isinstance(p, Mapping) for p in cls.presets.values()):
        return "class attribute 'presets' must map data kinds ('image', 'points') to config mappings"
    if not (cls.default_dataset is None or isinstance(cls.default_dataset, str)):
        return (
            f"class attribute 'default_dataset' must be a data set name or None, not {cls.default_dataset!r}"
        )
    if not (
        cls.default_metrics is None
        or (isinstance(cls.default_metrics, tuple) and _is_names(cls.default_metrics))
    ):
        return f"class attribute 'default_metrics' must be a tuple of metric names or None, not {cls.default_metrics!r}"
    if not isinstance(cls.replayable, bool):
        return f"class attribute 'replayable' must be True or False, not {cls.replayable!r}"
    if not isinstance(getattr(cls, "truncation", False), bool):
        return f"class attribute 'truncation' must be True or False, not {cls.truncation!r}"
    return None


def _check_dataset(cls: Any) -> str | None:
    from genfw.model import GenDataset

    if not (isinstance(cls, type) and issubclass(cls, GenDataset)):
        return f"a data set is registered as a subclass of genfw.GenDataset, not {cls!r}"
    if cls.kind not in ("image", "points"):
        return f"class attribute 'kind' must be 'image' or 'points', not {cls.kind!r}"
    if not (isinstance(cls.default_metrics, tuple) and _is_names(cls.default_metrics)):
        return (
            f"class attribute 'default_metrics' must be a tuple of metric names, not {cls.default_metrics!r}"
        )
    return None


def _check_callback(cls: Any) -> str | None:
    if not (isinstance(cls, type) and issubclass(cls, Callback)):
        return f"a callback is registered as a subclass of genfw.contracts.Callback, not {cls!r}"
    for attr in ("after", "before"):
        if not (isinstance(getattr(cls, attr), tuple) and _is_names(getattr(cls, attr))):
            return f"class attribute '{attr}' must be a tuple of names, not {getattr(cls, attr)!r}"
    return None


def _problem(kind: str, factory: Any) -> tuple[str, str | None]:
    """``(contract, what is wrong or None)``."""
    contract = CONTRACTS.get(kind, kind)
    if kind == "variant":
        return contract, _check_variant(factory)
    if kind == "dataset":
        return contract, _check_dataset(factory)
    if kind == "callback":
        return contract, _check_callback(factory)
    if kind == "loss":
        # Visible on any factory, function or class: a slot's role is checked before building.
        role = getattr(factory, "role", None)
        if role not in _LOSS_CONTRACTS:
            return (
                contract,
                f"missing class attribute 'role' ('adversarial' or 'reconstruction'), got {role!r}",
            )
        contract, methods = _LOSS_CONTRACTS[role]
    else:
        methods = _METHODS.get(kind, ())
    if not isinstance(factory, type):
        if kind == "regulariser":
            return (
                contract,
                f"a regulariser is registered as a class (its phases and needs are read before it is built), not {factory!r}",
            )
        return contract, None
    for method in methods:
        if not _has_method(factory, method):
            return contract, f"missing method '{method}'"
    if kind == "regulariser":
        for attr in ("phases", "needs"):
            if not (isinstance(getattr(factory, attr, None), tuple) and _is_names(getattr(factory, attr))):
                return (
                    contract,
                    f"class attribute '{attr}' must be a tuple of names, not {getattr(factory, attr, None)!r}",
                )
    return contract, None


def check_factory(kind: str, factory: Any) -> str | None:
    """What is wrong with ``factory`` as a component of ``kind``, as the end of a one-line refusal
    naming the member and the contract (``missing class attribute 'players'
    (genfw.contracts.Variant)``), or ``None``.

    Only what is visible before building is checked here: a variant's, data set's and
    callback's class members; a loss's ``role``; the methods of a class factory of the other
    kinds. A plain function factory is checked by the contract kit once built.
    """
    contract, problem = _problem(kind, factory)
    return None if problem is None else f"{problem} ({contract})"


def describe_variant_phases(cls: type) -> list[dict[str, Any]]:
    """``[{"name", "help", "provides"}]`` of a variant class, in order, for listings (``genfw
    list variant``); ``provides`` maps each key to its type."""
    rows = []
    for name, spec in cls.phases.items():
        types = {k: (spec.extra.get(k) or PHASE_CONTEXT[k]).type for k in sorted(spec.provides)}
        rows.append({"name": name, "help": spec.help, "provides": types})
    return rows


# For readers of hook specs: which events a callback may implement.
CALLBACK_EVENTS: tuple[str, ...] = _EVENTS

__all__ = [
    "ALWAYS_PROVIDED",
    "CALLBACK_EVENTS",
    "CONTRACTS",
    "PHASE_CONTEXT",
    "AdversarialLoss",
    "Callback",
    "ContextKey",
    "Critic",
    "Encoder",
    "Extractor",
    "Generator",
    "LoopState",
    "Metric",
    "PhaseSpec",
    "Players",
    "Prior",
    "ReconstructionLoss",
    "Regulariser",
    "Variant",
    "VariantInfo",
    "check_factory",
    "describe_variant_phases",
]
