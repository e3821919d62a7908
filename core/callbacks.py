"""The host side of callbacks: their declared order, and the loop's events fanned out to them.

A plugin writes a :class:`genfw.contracts.Callback`; this module is what the loop calls. Each event
goes only to the callbacks that implement it, so a run without callbacks pays nothing per step.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from genfw.contracts import Callback, LoopState, VariantInfo
from genfw.errors import GenfwError

if TYPE_CHECKING:
    from torch import Tensor

    from genfw.model import BuildContext, Model, Modules, PhaseOutput


def declared_order(items: Iterable[tuple[str, Callback]]) -> list[tuple[str, Callback]]:
    """``items`` sorted so that every callback runs after those it names in ``after`` and before
    those it names in ``before`` (names not attached are ignored); the given order breaks ties.
    A cycle is a one-line error naming it."""
    items = list(items)
    names = [n for n, _ in items]
    rank = {n: i for i, n in enumerate(names)}
    preds: dict[str, set[str]] = {n: set() for n in names}
    for name, cb in items:
        preds[name] |= {a for a in type(cb).after if a in rank}
        for b in type(cb).before:
            if b in rank:
                preds[b].add(name)
    done: list[str] = []
    while len(done) < len(names):
        ready = [n for n in names if n not in done and preds[n] <= set(done)]
        if not ready:
            stuck = sorted(n for n in names if n not in done)
            raise GenfwError(
                f"callbacks {', '.join(stuck)} order each other in a cycle (their 'after'/'before'); "
                f"leave one of them out"
            )
        done.append(min(ready, key=rank.__getitem__))
    by_name = dict(items)
    return [(n, by_name[n]) for n in done]


def _implements(cb: Callback, event: str) -> bool:
    return getattr(type(cb), event) is not getattr(Callback, event)


class Callbacks:
    """A run's callbacks in declared order. The loop, the sampler and the shared adversarial step
    fire events through it (a variant reaches it as ``BuildContext.events``)."""

    def __init__(self, items: Iterable[tuple[str, Callback]] = ()) -> None:
        self.attach(items)

    def attach(self, items: Iterable[tuple[str, Callback]]) -> None:
        """Set the callbacks (sorted by :func:`declared_order`)."""
        self.items = declared_order(items)
        cbs = [cb for _, cb in self.items]
        self._start = [cb for cb in cbs if _implements(cb, "on_phase_start")]
        self._fakes = [cb for cb in cbs if _implements(cb, "on_fakes")]
        self._output = [cb for cb in cbs if _implements(cb, "on_phase_output")]
        self._phase_end = [cb for cb in cbs if _implements(cb, "on_phase_end")]
        self._step_end = [cb for cb in cbs if _implements(cb, "on_step_end")]
        self._stage = [cb for cb in cbs if _implements(cb, "on_stage_change")]
        self._sampler = [cb for cb in cbs if _implements(cb, "sampler")]

    def __iter__(self):
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def names(self) -> list[str]:
        return [n for n, _ in self.items]

    # -- events --
    def model_built(self, model: Model, variant: VariantInfo, ctx: BuildContext) -> None:
        for _, cb in self.items:
            cb.on_model_built(model, variant, ctx)

    def phase_start(self, phase: str, state: LoopState) -> None:
        for cb in self._start:
            cb.on_phase_start(phase, state)

    def fakes(self, phase: str, fakes: Tensor) -> Tensor:
        for cb in self._fakes:
            fakes = cb.on_fakes(phase, fakes)
        return fakes

    def phase_output(self, phase: str, output: PhaseOutput, state: LoopState) -> None:
        for cb in self._output:
            cb.on_phase_output(phase, output, state)

    def phase_end(self, phase: str, output: PhaseOutput, state: LoopState) -> None:
        for cb in self._phase_end:
            cb.on_phase_end(phase, output, state)

    def step_end(self, state: LoopState) -> None:
        for cb in self._step_end:
            cb.on_step_end(state)

    def stage_change(self, state: LoopState) -> None:
        for cb in self._stage:
            cb.on_stage_change(state)

    def sampler(self, modules: Modules) -> Modules:
        for cb in self._sampler:
            modules = cb.sampler(modules)
        return modules

    def wants(self, event: str) -> bool:
        """Whether any callback implements ``event`` (``"on_phase_end"``, ...): the loop skips the
        work of building an event's arguments where none does."""
        return any(_implements(cb, event) for _, cb in self.items)

    # -- state --
    def state_dict(self) -> dict[str, dict[str, Any]]:
        return {name: cb.state_dict() for name, cb in self.items if cb.state_dict()}

    def load_state_dict(self, states: Mapping[str, Mapping[str, Any]]) -> None:
        for name, cb in self.items:
            if name in states:
                cb.load_state_dict(states[name])
