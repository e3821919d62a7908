"""Learning-rate schedules: ``train.lr_schedule``, per phase, and the one place genfw sets a rate.

A phase's optimiser trains training step ``s`` (``s`` steps done before it) at::

    lr(s) = optim.lr * factor(s) * lr_scale()

``optim.lr`` is the phase's base rate (the variant's option), ``lr_scale()`` a variant's own
factor (:attr:`genfw.Phase.lr_scale`, BEGAN's decay; 1 where the phase has none) and ``factor`` the
schedule's: a linear warm-up over the first ``W = warmup`` steps times the decay::

    warm(s)  = start + (1 - start) * s / W     for s < W, else 1
    p(s)     = clip((s - W) / (T - W), 0, 1)   progress of the decay after the warm-up
    constant:  1
    linear:    m + (1 - m) * (1 - p)
    cosine:    m + (1 - m) * (1 + cos(pi p)) / 2
    step:      gamma ** (number of milestones <= s)

with ``T`` the horizon (``train.lr_steps``, by default ``train.steps``) and ``m`` the final factor
(``lr_min_factor``). These are the schedules of Hugging Face's ``get_*_schedule_with_warmup``
(warm-up from ``start = 0`` by default, decay over the steps after it) and torch's
``MultiStepLR`` (milestones in absolute steps), with the minimum as a fraction of each phase's own
base rate, so that players with different rates (TTUR) keep their ratio.

:class:`LRSchedule` is a :class:`genfw.contracts.Callback` that the core attaches, as
``lr_schedule``, whenever a phase's rate changes during a run (a schedule other than a constant
without warm-up, or a variant's ``lr_scale``). It sets the rate of every phase in
``on_phase_start``, before each repeat, and logs the rate each step used as ``PHASE/lr`` (with
any other callback's factor on it). The factor depends only on the
step and the horizon, which rides in checkpoints (``callbacks.lr_schedule``): ``--resume`` sets the
same rates, and a resume with more ``--steps`` keeps the horizon the run started with (as torch's
schedulers keep theirs), unless ``train.lr_steps`` says otherwise.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs
import torch

from genfw import validators as check
from genfw.contracts import Callback, LoopState
from genfw.errors import GenfwError, choices, nearest

if TYPE_CHECKING:
    from genfw.config import TrainOptions
    from genfw.model import BuildContext, Model, PhaseOutput

#: The name under which the core attaches :class:`LRSchedule` (``callbacks.lr_schedule`` in
#: checkpoints; a callback of another plugin may check ``NAME in ctx.events.names()``).
NAME = "lr_schedule"
SCHEDULES = ("constant", "linear", "cosine", "step")
#: The train keys of a schedule, each with the field of :class:`Schedule` it sets: the keys a phase
#: of ``train.lr_schedules`` may override.
KEYS = {
    "lr_schedule": "name",
    "lr_warmup": "warmup",
    "lr_warmup_start": "warmup_start",
    "lr_min_factor": "min_factor",
    "lr_milestones": "milestones",
    "lr_gamma": "gamma",
}
#: The schedules each key applies to (a key given where it does nothing is refused).
APPLIES = {
    "lr_min_factor": ("linear", "cosine"),
    "lr_milestones": ("step",),
    "lr_gamma": ("step",),
}


def increasing(_: Any, attribute: attrs.Attribute, value: Sequence[int]) -> None:
    """Steps >= 1, strictly increasing (milestones)."""
    if any(b <= a for a, b in itertools.pairwise(value)) or any(v < 1 for v in value):
        raise ValueError(f"{attribute.name} must be steps >= 1 in increasing order, got {list(value)}")


@attrs.frozen
class Schedule:
    """One phase's learning-rate schedule (the ``lr_*`` train keys without their prefix)."""

    name: str = attrs.field(default="constant", validator=check.one_of(*SCHEDULES))
    warmup: int = attrs.field(default=0, validator=check.at_least(0))
    warmup_start: float = attrs.field(default=0.0, validator=check.in_interval(0, 1, high_open=True))
    min_factor: float = attrs.field(default=0.0, validator=check.in_interval(0, 1))
    milestones: tuple[int, ...] = attrs.field(default=(), converter=tuple, validator=increasing)
    gamma: float = attrs.field(default=0.1, validator=check.positive)

    @property
    def trivial(self) -> bool:
        """Whether its factor is 1 at every step."""
        return self.warmup == 0 and self.name == "constant"

    def factor(self, step: int, horizon: int) -> float:
        """The factor on the base rate in training step ``step`` (steps done before it) of a decay
        that ends at step ``horizon``."""
        f = 1.0
        w = self.warmup
        if step < w:
            f = self.warmup_start + (1.0 - self.warmup_start) * step / w
        if self.name == "linear" or self.name == "cosine":
            p = min(max(step - w, 0) / max(horizon - w, 1), 1.0)
            decay = 1.0 - p if self.name == "linear" else 0.5 * (1.0 + math.cos(math.pi * p))
            f *= self.min_factor + (1.0 - self.min_factor) * decay
        elif self.name == "step" and self.milestones:
            f *= self.gamma ** bisect.bisect_right(self.milestones, step)
        return f


@attrs.define
class LRScheduleOptions:
    """What :class:`LRSchedule` is built from: the schedule of each phase (a phase not named keeps
    its base rate), the horizon, and whether the horizon was given (``train.lr_steps``) rather than
    taken from ``train.steps``."""

    schedules: dict[str, Schedule] = attrs.field(factory=dict)
    horizon: int = attrs.field(default=1, validator=check.at_least(1))
    fixed: bool = False


class LRSchedule(Callback):
    """Sets every phase's learning rate before each step: base rate x schedule factor x the variant's lr_scale."""

    def __init__(self, options: LRScheduleOptions) -> None:
        super().__init__(options)
        self.horizon = options.horizon
        # phase -> (base rate, schedule, the variant's factor or None), from the built model.
        self.plan: dict[str, tuple[float, Schedule, Callable[[], float] | None]] = {}
        self.logged: dict[str, tuple[float, torch.Tensor]] = {}  # phase -> the last rate logged, as a tensor

    def on_model_built(self, model: Model, variant: Any, ctx: BuildContext) -> None:
        unknown = sorted(set(self.options.schedules) - {p.name for p in model.phases})
        if unknown:
            raise GenfwError(
                f"lr_schedule: the model has no phase '{unknown[0]}'; its phases: "
                f"{', '.join(p.name for p in model.phases)}"
            )
        constant = Schedule()
        self.plan = {
            p.name: (p.optim.lr, self.options.schedules.get(p.name, constant), p.lr_scale)
            for p in model.phases
        }

    def rate(self, phase: str, step: int) -> float:
        """The learning rate of ``phase`` in training step ``step``."""
        base, schedule, scale = self.plan[phase]
        lr = base * schedule.factor(step, self.horizon)
        return lr * scale() if scale is not None else lr

    def on_phase_start(self, phase: str, state: LoopState) -> None:
        optimizer = state.optimizers.get(phase)
        if optimizer is not None and phase in self.plan:
            lr = self.rate(phase, state.step)
            for group in optimizer.param_groups:
                group["lr"] = lr

    def on_phase_end(self, phase: str, output: PhaseOutput, state: LoopState) -> None:
        optimizer = state.optimizers.get(phase)
        if optimizer is not None:  # the rate this repeat's optimiser stepped with, on the loss's device
            lr, loss = optimizer.param_groups[0]["lr"], output.loss
            last = self.logged.get(phase)
            if last is None or last[0] != lr or last[1].device != loss.device:  # a new tensor only then
                last = self.logged[phase] = (lr, loss.new_full((), lr, dtype=torch.float32))
            output.logs["lr"] = last[1]

    def state_dict(self) -> dict[str, Any]:
        return {"horizon": self.horizon}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if "horizon" in state and not self.options.fixed:
            self.horizon = int(state["horizon"])


def unscheduled_resume(
    saved: Mapping[str, Any], attached: Sequence[str], phases: Sequence[Any], optimizers: Mapping[str, Any]
) -> None:
    """A run resumed without the schedule its checkpoint was saved with (``--train.lr_schedule
    constant`` on ``--resume``): its optimisers came back with the last scheduled rates; from here
    each phase trains at its base rate ``optim.lr``, as the config now says. ``saved``: the
    checkpoint's callback states; ``attached``: the names of the callbacks attached now."""
    if NAME in saved and NAME not in attached:
        for phase in phases:
            for group in optimizers[phase.name].param_groups:
                group["lr"] = phase.optim.lr


# --- from the train options -------------------------------------------------------------------------


def _given(train: TrainOptions, key: str) -> bool:
    """Whether the train key ``key`` was set (its default means: not given)."""
    field = attrs.fields_dict(type(train))[key]
    default = field.default.factory() if isinstance(field.default, attrs.Factory) else field.default
    return getattr(train, key) != default


def phase_schedules(train: TrainOptions, phases: Sequence[str], variant: str = "") -> dict[str, Schedule]:
    """The schedule of each phase from the train options: the ``lr_*`` keys, with a phase's own
    keys of ``train.lr_schedules`` over them. Every mistake is a one-line :class:`GenfwError` with the
    key's path: a phase the variant does not build, a key a phase may not set, a key that does
    nothing with its schedule, a ``step`` schedule without milestones, a warm-up or milestone at or
    past the horizon."""
    from genfw.config import TRAIN
    from genfw.registry import structure_options

    horizon = train.lr_steps or train.steps
    horizon_text = f"train.lr_steps {train.lr_steps}" if train.lr_steps else f"train.steps {train.steps}"
    of = f"variant '{variant}'" if variant else "the variant"
    for phase, keys in train.lr_schedules.items():
        if phase not in phases:
            guess = nearest(phase, phases)
            raise GenfwError(
                f"train.lr_schedules.{phase}: {of} has no phase '{phase}'"
                f"{f' (did you mean {guess}?)' if guess else ''}; its phases: {', '.join(phases)}"
            )
        if not isinstance(keys, Mapping):
            raise GenfwError(f"train.lr_schedules.{phase}: expected a mapping of lr_* keys, got {keys!r}")
        bad = sorted(set(keys) - set(KEYS))
        if bad:
            guess = nearest(bad[0], KEYS)
            raise GenfwError(
                f"train.lr_schedules.{phase}.{bad[0]}: not a key of a phase's schedule"
                f"{f' (did you mean {guess}?)' if guess else ''}; valid: {choices(KEYS)}"
            )

    out: dict[str, Schedule] = {}
    used: dict[str, set[str]] = {key: set() for key in APPLIES}  # key -> schedules that read it
    for phase in phases:
        own = train.lr_schedules.get(phase, {})
        # The phase's own keys, validated as train keys (types and ranges), over the top level's.
        theirs = structure_options(TRAIN, dict(own), where=f"train.lr_schedules.{phase}") if own else train
        values = {key: getattr(theirs if key in own else train, key) for key in KEYS}
        name = values["lr_schedule"]

        def where(key: str, phase: str = phase, own: Mapping[str, Any] = own) -> str:
            return f"train.lr_schedules.{phase}.{key}" if key in own else f"train.{key}"

        for key, schedules in APPLIES.items():
            if key in own and own[key] is not None and name not in schedules:
                raise GenfwError(
                    f"{where(key)} applies to lr_schedule {' and '.join(schedules)}, not {name} "
                    f"(phase '{phase}'); drop it or choose one of those schedules"
                )
            if key not in own and name in schedules:
                used[key].add(name)
        if name == "step" and not values["lr_milestones"]:
            raise GenfwError(
                f"{where('lr_schedule')} step needs the steps at which the rate is multiplied by "
                f"lr_gamma: {where('lr_milestones')} [N, ...] (phase '{phase}')"
            )
        if values["lr_milestones"] and values["lr_milestones"][-1] >= horizon:
            raise GenfwError(
                f"{where('lr_milestones')}: the last milestone {values['lr_milestones'][-1]} is not before the "
                f"end of the schedule ({horizon_text}); give steps in 1 .. {horizon - 1}"
            )
        if values["lr_warmup"] >= horizon:
            raise GenfwError(
                f"{where('lr_warmup')} {values['lr_warmup']} is not shorter than the schedule "
                f"({horizon_text}); the warm-up must end before the run does"
            )
        if values["lr_warmup_start"] is not None and not values["lr_warmup"]:
            raise GenfwError(
                f"{where('lr_warmup_start')} applies to a warm-up; give {where('lr_warmup')} N too (phase '{phase}')"
            )
        defaults = Schedule()
        # Keys its schedule does not read (a top-level key for another phase's) keep their defaults.
        fields = {
            KEYS[key]: value
            for key, value in values.items()
            if value is not None and name in APPLIES.get(key, (name,))
        }
        fields.setdefault("warmup_start", defaults.warmup_start)
        try:
            out[phase] = Schedule(**fields)
        except ValueError as exc:  # ranges are the train keys' own; this only guards the field names
            raise GenfwError(f"train.lr_schedules.{phase}: {exc}") from None

    # A top-level key that no phase's schedule reads does nothing: refused too.
    for key, schedules in APPLIES.items():
        if _given(train, key) and not used[key]:
            names = sorted({s.name for s in out.values()})
            raise GenfwError(
                f"train.{key} applies to lr_schedule {' and '.join(schedules)}; no phase uses one "
                f"(the run's: {', '.join(names)}); drop it or choose one of those schedules"
            )
    if train.lr_warmup_start is not None and not any(
        s.warmup for p, s in out.items() if "lr_warmup_start" not in train.lr_schedules.get(p, {})
    ):
        raise GenfwError("train.lr_warmup_start applies to a warm-up; give train.lr_warmup N too")
    return out


def schedule_callback(train: TrainOptions, model: Model, variant: str = "") -> LRSchedule | None:
    """The callback that sets ``model``'s rates, or ``None`` where every phase keeps its base rate
    (no schedule, no warm-up, no ``lr_scale``)."""
    schedules = phase_schedules(train, [p.name for p in model.phases], variant)
    if all(s.trivial for s in schedules.values()) and all(p.lr_scale is None for p in model.phases):
        return None
    options = LRScheduleOptions(
        schedules={p: s for p, s in schedules.items() if s != Schedule()},
        horizon=train.lr_steps or train.steps,
        fixed=bool(train.lr_steps),
    )
    return LRSchedule(options)
