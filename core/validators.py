"""attrs validators for component options, with messages that say what is valid.

Use them in options classes, built-in or third-party::

    from genfw import validators as check

    @attrs.define
    class Options:
        alpha: float = attrs.field(default=0.5, validator=check.in_interval(0, 1, low_open=True))
        kernel: str = attrs.field(default="imq", validator=check.one_of("imq", "rbf"))

A failed check raises ``ValueError("alpha must be in (0, 1], got 0.0")``; the config layer turns
it into a one-line error with the option's path.

A ``float`` option is finite: the registry refuses ``.inf`` and ``.nan`` for it (and for each
element of a ``list[float]``) before any validator runs. An option where infinity or NaN means
something says so with the type :data:`AnyFloat` (``max_norm: AnyFloat = math.inf``).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from types import SimpleNamespace
from typing import Any, NewType

import attrs

Validator = Callable[[Any, "attrs.Attribute[Any]", Any], None]

# A float option that may be infinite or NaN; plain ``float`` options must be finite.
AnyFloat = NewType("AnyFloat", float)
# A list of names that may also be given as one comma-separated string: ``"mlflow,wandb"`` (as a
# flag is typed) is ``["mlflow", "wandb"]``, ``"mlflow"`` is ``["mlflow"]``.
Names = NewType("Names", list)


def positive(_: Any, attribute: attrs.Attribute, value: float) -> None:
    """``value > 0``."""
    if not value > 0:
        raise ValueError(f"{attribute.name} must be positive, got {value!r}")


def non_negative(_: Any, attribute: attrs.Attribute, value: float) -> None:
    """``value >= 0``."""
    if not value >= 0:
        raise ValueError(f"{attribute.name} must be >= 0, got {value!r}")


def at_least(minimum: float) -> Validator:
    """``value >= minimum`` (e.g. ``at_least(1)`` for counts)."""

    def check(_: Any, attribute: attrs.Attribute, value: float) -> None:
        if not value >= minimum:
            raise ValueError(f"{attribute.name} must be at least {minimum}, got {value!r}")

    return check


def _number(x: float) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"  # 4294967295, not 4.29497e+09


def in_interval(low: float, high: float, *, low_open: bool = False, high_open: bool = False) -> Validator:
    """``low <= value <= high``, with either end open: ``in_interval(0, 1, low_open=True)``
    is ``(0, 1]``."""
    text = f"{'(' if low_open else '['}{_number(low)}, {_number(high)}{')' if high_open else ']'}"

    def check(_: Any, attribute: attrs.Attribute, value: float) -> None:
        above = value > low if low_open else value >= low
        below = value < high if high_open else value <= high
        if not (above and below):
            raise ValueError(f"{attribute.name} must be in {text}, got {value!r}")

    return check


def one_of(*choices: Hashable) -> Validator:
    """``value`` is one of ``choices``: strings, ints, floats, any hashable values
    (``one_of("imq", "rbf")``, ``one_of(1, 2, 4)``). The message lists names bare when all are
    strings, else every choice as its ``repr`` (so ``'1'`` and ``1`` stay apart)."""
    bare = all(isinstance(c, str) for c in choices)
    listed = ", ".join(str(c) if bare else repr(c) for c in choices)

    def check(_: Any, attribute: attrs.Attribute, value: Any) -> None:
        if value not in choices:
            raise ValueError(f"{attribute.name} must be one of {listed}, got {value!r}")

    return check


def each(inner: Validator) -> Validator:
    """Apply ``inner`` to every element of a list option (``each(positive)``); the list must not
    be empty. The error names the entry: ``scales[1] must be positive, got 0.0``."""

    def check(instance: Any, attribute: attrs.Attribute, value: Iterable[Any]) -> None:
        items = list(value)
        if not items:
            raise ValueError(f"{attribute.name} must not be empty")
        for i, item in enumerate(items):
            inner(instance, SimpleNamespace(name=f"{attribute.name}[{i}]"), item)  # type: ignore[arg-type]

    return check
