"""The contract between a variant and the training loop.

A variant turns its components into a :class:`Model`: named modules and a list of
:class:`Phase` objects. A phase is one optimisation step of one player. The loop knows nothing
of GANs or autoencoders; it runs phases in order (each ``repeats`` times per training step),
adds the attached regularisers' penalties, back-propagates through Accelerate and steps.

A GAN is "critic phase, then generator phase"; a VAE is one "autoencoder" phase.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import attrs
import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from genfw.callbacks import Callbacks
    from genfw.registry import ComponentSpec


@attrs.frozen
class Slot:
    """A component a variant is built from, e.g. ``Slot("prior", "normal")``.

    ``role`` narrows the kind where one kind has several interfaces: losses are
    ``"adversarial"`` or ``"reconstruction"``.
    """

    kind: str
    default: str
    role: str | None = None
    help: str = ""


@attrs.frozen
class Optim:
    """An optimiser recipe; ``genfw.train.make_optimizer`` turns it into a torch optimiser."""

    name: str = "adam"  # adam | rmsprop | sgd
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    weight_decay: float = 0.0
    eps: float = 1e-8  # Adam's epsilon (BigGAN: 1e-6)


@attrs.frozen
class Batch:
    """One batch on the training device: data ``x (B, *shape)`` and labels ``y (B,)``."""

    x: Tensor
    y: Tensor

    def __len__(self) -> int:
        return self.x.shape[0]


@attrs.define
class PhaseOutput:
    """What a phase computed.

    ``loss`` is the scalar the phase minimises, before regularisers. ``context`` holds the
    tensors regularisers may read (the keys the phase declares in ``provides``). ``logs`` holds
    extra scalars to log, as tensors (the loop syncs them only when it logs).
    """

    loss: Tensor
    context: dict[str, Any] = attrs.field(factory=dict)
    logs: dict[str, Tensor] = attrs.field(factory=dict)


def device_of(*modules: nn.Module) -> torch.device:
    """The device of the first parameter or buffer of ``modules`` (CPU when they have none)."""
    for module in modules:
        for t in module.parameters():
            return t.device
        for t in module.buffers():
            return t.device
    return torch.device("cpu")


class Modules(dict):
    """The model's modules by name, readable as attributes: ``m.generator``, ``m.critic``.

    The loop hands phases the modules as prepared by Accelerate (possibly DDP-wrapped), so a
    phase must read its networks from here, never from the variant object.
    """

    def __getattr__(self, name: str) -> nn.Module:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


@attrs.define
class Phase:
    """One optimisation step of one player.

    ``step(batch, m)`` computes the objective. ``modules`` names the modules whose parameters the
    phase's optimiser updates. ``repeats`` runs the phase several times per training step (e.g.
    ``n_critic = 5``), each on a fresh batch when ``fresh_batch`` is true; a phase that only needs
    the batch size and labels (a generator step) sets ``fresh_batch=False`` and reuses the last.
    ``provides`` lists the context keys regularisers may ask for (the loop adds ``phase`` and
    ``step``: :data:`genfw.contracts.PHASE_CONTEXT`). ``lr_scale``, where given, returns a float before
    each repeat: the optimiser's learning rate is then ``optim.lr`` times it, times the factor of
    ``train.lr_schedule`` (:mod:`genfw.schedules` sets it; a decay such as BEGAN's; it must be a host
    value, and derived from module buffers so that ``--resume`` gives the same).
    """

    name: str
    modules: tuple[str, ...]
    step: Callable[[Batch, Modules], PhaseOutput]
    optim: Optim = Optim()
    repeats: int = 1
    fresh_batch: bool = True
    provides: frozenset[str] = frozenset()
    lr_scale: Callable[[], float] | None = None


@attrs.define
class Model:
    """What a variant builds.

    ``sample(m, n, y)`` draws ``n`` samples (labels ``y (n,)`` or ``None``) with the modules ``m``.
    ``export`` names the modules saved as ``generator.safetensors`` for sampling.
    ``num_classes`` says whether the model is conditional: ``0`` (the default) means ``sample``
    ignores ``y``; ``K > 0`` means ``sample`` draws class ``y[i]`` in ``0..K-1`` for sample ``i``
    (a conditional variant's classes, or the values of a categorical code). The loop then saves
    sample grids with one row per class, and ``genfw sample --label k`` is allowed.

    A family of variants whose metrics or commands need more (an autoencoder's ``encode`` and
    ``decode``) returns an attrs subclass with those fields; the core reads only these.
    ``truncate(m, n, y, psi)``, where given, draws ``n`` samples as ``sample`` does with the
    truncation trick at ``psi`` (its meaning is the variant's: StyleGAN2's ``w_avg + psi (w -
    w_avg)``); a variant that sets it declares ``truncation = True``
    (:attr:`genfw.contracts.Variant.truncation`), and an invalid ``psi`` is a one-line GenfwError.
    ``stage()``, where given, returns the model's current stage (an int: a resolution of a growing
    model, a curriculum's step), read before each phase repeat; when it changes the loop fires
    callbacks' ``on_stage_change`` (ProGAN resets its optimisers then), and checkpoints keep it.
    """

    modules: dict[str, nn.Module]
    phases: list[Phase]
    sample: Callable[[Modules, int, Tensor | None], Tensor]
    export: tuple[str, ...] = ("generator",)
    num_classes: int = 0
    stage: Callable[[], int] | None = None
    truncate: Callable[[Modules, int, Tensor | None, float], Tensor] | None = None


@attrs.frozen
class DataInfo:
    """What a variant may know of the data: sample shape, number of classes (0: none), kind, and
    ``size``, the number of examples it trains on (those left after ``train.holdout``; 0 where the
    model is rebuilt without its data, as ``genfw sample`` does)."""

    shape: tuple[int, ...]
    num_classes: int = 0
    kind: str = "image"
    size: int = 0


@attrs.frozen
class BuildContext:
    """Passed to ``Variant.build``: the chosen component for each slot, and the data's shape.

    ``components["prior"].build(dim=8)`` calls the chosen prior's factory with its validated
    options.
    """

    components: Mapping[str, ComponentSpec]
    data: DataInfo
    # The run's callbacks: a variant keeps it to fire ``events.fakes(phase, fakes)`` from its
    # adversarial step (:class:`genfw.callbacks.Callbacks`; empty until the model is built).
    events: Callbacks = attrs.field(factory=lambda: _callbacks())
    # The registry the run was resolved with (refusals list its variants); None: the process-wide.
    registry: Any = attrs.field(default=None, eq=False, repr=False)
    # The run's train.batch_size (per process): schedules counted in images (an EMA's half-life)
    # read it; None where no run config is at hand.
    batch_size: int | None = None
    # The validated options of every remedy the run attaches (regularisers and callbacks: the
    # variant's own with the user's merged over them), by name: a variant whose other settings
    # follow one of them reads it here (StyleGAN2's Adam correction follows r1's interval).
    remedies: Mapping[str, Any] = attrs.field(factory=dict)

    def __getitem__(self, slot: str) -> ComponentSpec:
        return self.components[slot]


def _callbacks() -> Callbacks:
    from genfw.callbacks import Callbacks

    return Callbacks()


class GenDataset(torch.utils.data.Dataset):
    """Base class for data sets: ``(x, y)`` items, with ``shape``, ``num_classes``, ``kind``.

    In-memory data sets set ``tensors = (X, Y)`` with ``X (N, *shape)`` float and ``Y (N,)``
    long (``-1`` where unlabelled); the base class then provides ``__len__``/``__getitem__``.
    ``kind`` and ``default_metrics`` (the metrics of a run that names none) are class
    attributes: the config is resolved from them before the data set is built.

    A streamed data set (too large for memory, read in order) sets ``streaming = True`` and
    implements :meth:`stream`; it need not support indexing, and ``len`` is its number of
    examples where known (0 where not). ``num_workers`` is the number of ``DataLoader`` worker
    processes that decode its items (0: in the training process).
    """

    shape: tuple[int, ...]
    num_classes: int = 0
    kind: str = "image"
    default_metrics: tuple[str, ...] = ()
    tensors: tuple[Tensor, Tensor] | None = None
    streaming: bool = False
    num_workers: int = 0

    def stream(self, seed: int, epoch: int, rank: int = 0, world: int = 1) -> Iterable[tuple[Tensor, int]]:
        """A streamed data set's items ``(x, y)`` for one epoch: process ``rank`` of ``world``'s
        own shard (disjoint from the other processes'), in an order fixed by ``seed`` and
        ``epoch``; a ``torch.utils.data.IterableDataset`` where ``num_workers > 0`` (each worker
        then yields its own part)."""
        raise NotImplementedError(f"{type(self).__name__} is not a streamed data set")

    def __len__(self) -> int:
        assert self.tensors is not None, "set tensors or override __len__"
        return self.tensors[0].shape[0]

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        assert self.tensors is not None, "set tensors or override __getitem__"
        return self.tensors[0][i], int(self.tensors[1][i])

    @property
    def info(self) -> DataInfo:
        return DataInfo(shape=tuple(self.shape), num_classes=self.num_classes, kind=self.kind)


@attrs.define
class EvalContext:
    """What a metric sees.

    ``sample(n)`` draws ``n`` generated samples (on CPU, float32). ``real(n)`` draws ``n`` real
    examples, reproducibly. ``dataset`` is the run's :class:`GenDataset`; ``modules`` and
    ``model`` the trained model (for reconstructions and likelihoods), ``device`` where it lives.
    ``held_out(n)`` gives up to ``n`` examples ``(x, y)`` of the run's held-out split
    (``train.holdout``, never seen in training), or is ``None`` when the run holds none out.
    """

    sample: Callable[[int], Tensor]
    real: Callable[[int], Tensor]
    dataset: GenDataset
    model: Model | None = None
    modules: Modules | None = None
    device: torch.device = attrs.field(factory=lambda: torch.device("cpu"))
    held_out: Callable[[int], tuple[Tensor, Tensor]] | None = None
