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
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

import attrs

if TYPE_CHECKING:
    import torch
    from torch import Tensor

    from genfw.model import BuildContext, EvalContext, Model, Modules, PhaseOutput, Slot


# --- variants -------------------------------------------------------------------------------------


@attrs.frozen
class Players:
    """Which of a variant's modules (names in ``Model.modules``) play which part.

    ``generators`` make samples (the decoder of an autoencoder is one); ``critics`` score
    samples in data space; ``latent_critics`` score codes (AAE, WAE-GAN); ``encoders`` map data
    to codes. A remedy that acts on critics (spectral norm, packing, instance noise, minibatch
    layers) acts on every name in ``critics`` or refuses; one that acts on generators (EMA)
    on every name in ``generators``.
    """

    generators: tuple[str, ...] = ("generator",)
    critics: tuple[str, ...] = ()
    latent_critics: tuple[str, ...] = ()
    encoders: tuple[str, ...] = ()

    def all(self) -> tuple[str, ...]:
        return (*self.generators, *self.critics, *self.latent_critics, *self.encoders)


@attrs.frozen
class PhaseSpec:
    """A phase a variant builds, declared on the class: the context keys it gives regularisers
    (``provides``, each one of :data:`PHASE_CONTEXT` or documented in ``extra``: key -> meaning)
    and one line on what it optimises."""

    provides: frozenset[str] = frozenset()
    help: str = ""
    extra: Mapping[str, str] = attrs.field(factory=dict)


@attrs.frozen
class ContextKey:
    """One key of a phase's context: its type and what it holds."""

    type: str
    meaning: str


PHASE_CONTEXT: Mapping[str, ContextKey] = {
    # Always present: the loop adds them to every phase's context.
    "phase": ContextKey("str", "the name of the phase being optimised (always present)"),
    "step": ContextKey("int", "training steps completed before this one (always present)"),
    "grad_scale": ContextKey("Tensor ()", "fp16 only: the loss scale, for penalties on gradients"),
    # Adversarial phases.
    "real": ContextKey(
        "Tensor (B, *shape)", "the real batch (the critic phase's last one in a generator phase)"
    ),
    "fake": ContextKey("Tensor (B, *shape)", "the generator's samples scored in this phase"),
    "critic": ContextKey(
        "Callable[[Tensor, Tensor | None], Tensor]",
        "scores (B,) of samples (and labels) by the critic as this phase sees it",
    ),
    "labels": ContextKey("Tensor (B,) | None", "the class labels the players are conditioned on, or None"),
    "real_scores": ContextKey("Tensor (B,)", "the critic's scores of the real batch"),
    "fake_scores": ContextKey("Tensor (B,)", "the critic's scores of the fakes"),
    "features": ContextKey(
        "Callable[[Tensor, Tensor | None], Tensor]", "the critic's features (B, F) before its head"
    ),
    # Autoencoder phases.
    "x": ContextKey("Tensor (B, *shape)", "the input batch"),
    "x_hat": ContextKey("Tensor (B, *shape)", "its reconstruction"),
    "z": ContextKey("Tensor (B, d)", "the codes the encoder gave (a sample for a stochastic encoder)"),
    "prior_z": ContextKey("Tensor (B, d)", "codes drawn from the prior"),
    "mu": ContextKey("Tensor (B, d)", "a Gaussian encoder's posterior means"),
    "logvar": ContextKey("Tensor (B, d)", "a Gaussian encoder's posterior log-variances"),
}
"""Every phase-context key a built-in variant provides, with its type. A regulariser's ``needs``
names keys of this table (or a variant's documented ``PhaseSpec.extra`` keys)."""

ALWAYS_PROVIDED = frozenset({"phase", "step"})


class Variant:
    """Base class of variants: a named training recipe.

    Subclass it and override what differs; every member below is read by the core and documented
    here, nowhere else. Registered as ``register("name", MyVariant, options=MyOptions)``; the
    host calls ``MyVariant(options)`` and then ``build(ctx)``.
    """

    #: The components it is built from, with their defaults: ``{"prior": Slot("prior", "normal")}``.
    slots: ClassVar[Mapping[str, Slot]] = {}
    #: Which of the built model's modules are generators, critics, latent critics, encoders.
    players: ClassVar[Players] = Players()
    #: The phases ``build`` makes, in order, with the context keys each provides.
    phases: ClassVar[Mapping[str, PhaseSpec]] = {}
    #: Config overlays by data kind (``"points"``, ``"image"``): the authors' settings for that
    #: kind of data; anything the user sets wins.
    presets: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    #: The data set when none is given (``None``: the framework's default, ``digits``).
    default_dataset: ClassVar[str | None] = None
    #: Metrics when none are given (``None``: the data set's defaults).
    default_metrics: ClassVar[tuple[str, ...] | None] = None
    #: Its critic phase scores unconditional fakes of its generators, which experience replay
    #: may swap for past ones.
    replayable: ClassVar[bool] = False

    def __init__(self, options: Any) -> None:
        self.options = options

    @classmethod
    def remedies(cls, options: Any) -> Mapping[str, Mapping[str, Any]]:
        """The remedies (regularisers or callbacks, by name, with options) it always attaches."""
        return {}

    @classmethod
    def refuse(cls, remedy: str, options: Any) -> str | None:
        """Why this variant cannot take ``remedy`` (one line), or ``None`` where it can."""
        return None

    def build(self, ctx: BuildContext) -> Model:
        """Build the modules, phases (named as in ``phases``) and sampler from the chosen components."""
        raise NotImplementedError


@attrs.frozen
class VariantInfo:
    """What a remedy may know of the variant it is attached to, without building it."""

    name: str
    factory: type
    options: Any = None

    @property
    def players(self) -> Players:
        players = getattr(self.factory, "players", None)
        if isinstance(players, Players):
            return players
        # A variant class written before players were declared: the modules named by convention.
        phases = getattr(self.factory, "phases", ())
        return Players(generators=("generator",), critics=("critic",) if "critic" in phases else ())

    @property
    def phases(self) -> Mapping[str, PhaseSpec]:
        return self.factory.phases

    def provides(self, phase: str) -> frozenset[str]:
        spec = self.factory.phases.get(phase)
        return frozenset() if spec is None else spec.provides | ALWAYS_PROVIDED


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
    needs it) and ``variance: float`` (per coordinate; kernel scales of MMD)."""

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
    step. ``phases``: names it can attach to; ``needs``: context keys it reads
    (:data:`PHASE_CONTEXT`); ``penalty(ctx) -> scalar`` already weighted, or ``None``;
    optionally ``after_step(modules)`` (a constraint such as weight clipping) and
    ``fits(variant: VariantInfo) -> bool``."""

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

#: kind -> the contract class named in refusals.
CONTRACTS: Mapping[str, type] = {
    "variant": Variant,
    "generator": Generator,
    "critic": Critic,
    "encoder": Encoder,
    "prior": Prior,
    "loss": AdversarialLoss,
    "regulariser": Regulariser,
    "callback": Callback,
    "metric": Metric,
    "extractor": Extractor,
}

# Members a class factory of a kind must have (visible before building).
_CLASS_MEMBERS: Mapping[str, tuple[str, ...]] = {
    "prior": ("sample", "log_prob"),
    "regulariser": ("phases", "needs", "penalty"),
    "metric": ("__call__",),
    "extractor": ("features",),
    "generator": ("forward",),
    "critic": ("forward",),
    "encoder": ("forward",),
}
_LOSS_MEMBERS: Mapping[str, tuple[str, ...]] = {
    "adversarial": ("critic_loss", "generator_loss"),
    "reconstruction": ("__call__",),
}
_EVENTS = (
    "on_model_built",
    "on_stage_change",
    "on_fakes",
    "on_phase_output",
    "on_phase_end",
    "on_step_end",
    "sampler",
)


def _is_str_tuple(value: Any) -> bool:
    return isinstance(value, (tuple, list, frozenset, set)) and all(isinstance(v, str) for v in value)


def _check_variant(cls: type) -> str | None:
    from genfw.model import Slot

    if not isinstance(cls, type):
        return "a variant is registered as a class (subclass genfw.contracts.Variant)"
    for member in ("slots", "players", "phases", "presets", "remedies", "refuse", "build", "replayable"):
        if not hasattr(cls, member):
            return f"missing class attribute '{member}' (subclass genfw.contracts.Variant for its defaults)"
    if not isinstance(cls.slots, Mapping) or not all(isinstance(s, Slot) for s in cls.slots.values()):
        return "'slots' must map slot names to genfw.Slot"
    if not isinstance(cls.players, Players):
        return f"'players' must be a genfw.contracts.Players, not {type(cls.players).__name__}"
    if not isinstance(cls.phases, Mapping) or not cls.phases:
        return "'phases' must map each phase name to a genfw.contracts.PhaseSpec (at least one)"
    for name, spec in cls.phases.items():
        if not isinstance(spec, PhaseSpec):
            return f"'phases[{name!r}]' must be a genfw.contracts.PhaseSpec, not {type(spec).__name__}"
        unknown = sorted(set(spec.provides) - set(PHASE_CONTEXT) - set(spec.extra))
        if unknown:
            return (
                f"phase '{name}' provides '{unknown[0]}', which is neither a key of "
                f"genfw.contracts.PHASE_CONTEXT nor documented in its PhaseSpec.extra"
            )
    if not isinstance(cls.presets, Mapping) or not all(isinstance(p, Mapping) for p in cls.presets.values()):
        return "'presets' must map data kinds ('image', 'points') to config mappings"
    if not (cls.default_dataset is None or isinstance(cls.default_dataset, str)):
        return "'default_dataset' must be a data set name or None"
    if not (cls.default_metrics is None or _is_str_tuple(cls.default_metrics)):
        return "'default_metrics' must be a tuple of metric names or None"
    if not isinstance(cls.replayable, bool):
        return "'replayable' must be true or false"
    return None


def check_factory(kind: str, factory: Any) -> str | None:
    """What is wrong with ``factory`` as a component of ``kind`` (one line), or ``None``.

    Only what is visible before building is checked here; a factory that is a plain function is
    checked by the contract kit once built.
    """
    if kind == "variant":
        return _check_variant(factory)
    if not isinstance(factory, type):
        return None
    if kind == "callback":
        if not issubclass(factory, Callback):
            return "a callback is a subclass of genfw.contracts.Callback"
        for attr in ("after", "before"):
            if not _is_str_tuple(getattr(factory, attr)):
                return f"'{attr}' must be a tuple of names"
        return None
    if kind == "loss":
        role = getattr(factory, "role", None)
        if role not in _LOSS_MEMBERS:
            return f"class attribute 'role' must be 'adversarial' or 'reconstruction', not {role!r}"
        members = _LOSS_MEMBERS[role]
    else:
        members = _CLASS_MEMBERS.get(kind, ())
    for member in members:
        if not callable(getattr(factory, member, None)) and member not in ("phases", "needs"):
            return f"missing method '{member}'"
    if kind == "regulariser":
        for attr in ("phases", "needs"):
            if not _is_str_tuple(getattr(factory, attr, None)):
                return f"class attribute '{attr}' must be a tuple of names"
        if not callable(getattr(factory, "penalty", None)):
            return "missing method 'penalty'"
    return None


def describe_variant_phases(cls: type) -> list[dict[str, Any]]:
    """``[{"name", "help", "provides"}]`` for listings (``genfw list variant``)."""
    return [
        {"name": name, "help": spec.help, "provides": sorted(spec.provides)}
        for name, spec in cls.phases.items()
    ]


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
