"""The host's table of components: one namespace per kind, filled by registration hooks."""

from __future__ import annotations

import math
import types
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import attrs
import cattrs
import cattrs.v

from genfw.contracts import check_factory
from genfw.errors import GenfwError, choices, nearest, plural
from genfw.hookspecs import KINDS
from genfw.validators import AnyFloat, Names


@attrs.define
class NoOptions:
    """Options class of a component that takes none."""


@attrs.frozen
class PluginInfo:
    """Where components came from: entry-point name, distribution and version, module."""

    name: str
    dist: str = "(not installed)"
    version: str = ""
    module: str = ""

    def describe(self) -> str:
        dist = f"{self.dist} {self.version}".strip()
        return f"plugin '{self.name}' (distribution {dist})"


@attrs.frozen
class Component:
    kind: str
    name: str
    factory: Callable[..., Any]
    options: type
    plugin: PluginInfo
    help: str = ""

    def option_fields(self) -> list[tuple[str, str, Any]]:
        """``(name, type, default)`` for each option, for listings and error messages."""
        out = []
        for f in attrs.fields(self.options):
            if f.default is attrs.NOTHING:
                default: Any = "(required)"
            elif isinstance(f.default, attrs.Factory):  # type: ignore[arg-type]
                default = f.default.factory()
            else:
                default = f.default
            out.append((f.name, _type_name(f.type), default))
        return out


@attrs.frozen
class ComponentSpec:
    """A chosen component with validated options; ``build(**context)`` makes the object."""

    component: Component
    options: Any

    @property
    def name(self) -> str:
        return self.component.name

    def build(self, **context: Any) -> Any:
        try:
            return self.component.factory(self.options, **context)
        except ValueError as exc:
            if self.component.kind not in SHAPED_KINDS:
                raise
            # A network or prior refusing the shape or size it was asked for (the hook specs'
            # convention): the user chose a component that does not fit the data.
            raise GenfwError(f"{self.component.kind} '{self.name}' cannot be built here: {exc}") from None


# Remedies: regularisers and callbacks share one namespace (users attach both with --regulariser).
REMEDY_KINDS = {"regulariser": "callback", "callback": "regulariser"}

# Kinds whose factories take shapes or sizes and may refuse them with ValueError.
SHAPED_KINDS = frozenset({"generator", "critic", "encoder", "prior"})


def _type_name(t: Any) -> str:
    """An option's type as its annotation reads (``list[int]``, ``float | None``), the same whether
    attrs has resolved the annotation (after cattrs structured the options) or not."""
    if isinstance(t, str):
        return t
    if isinstance(t, type) and not isinstance(t, types.GenericAlias):
        return t.__name__
    return str(t).replace("typing.", "")


def _first_line(obj: Any) -> str:
    doc = getattr(obj, "__doc__", None) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


class Registry:
    """Components by kind and name. Duplicate names and malformed registrations are errors: a
    component is checked against its kind's contract (:mod:`genfw.contracts`) as it registers."""

    def __init__(self) -> None:
        self._table: dict[str, dict[str, Component]] = {kind: {} for kind in KINDS}

    def registrar(self, kind: str, plugin: PluginInfo) -> Callable[..., None]:
        """The ``register`` callback handed to one plugin's hook for ``kind``."""

        def register(
            name: str, factory: Any, *, options: type | None = None, help: str | None = None
        ) -> None:
            where = plugin.describe()
            if not isinstance(name, str) or not name:
                raise GenfwError(f"{where} registered a {kind} with an invalid name {name!r}")
            if not callable(factory):
                raise GenfwError(f"{where} registered {kind} '{name}' with a factory that is not callable")
            if options is None:
                options = NoOptions
            if not attrs.has(options):
                raise GenfwError(
                    f"{where} registered {kind} '{name}' with options {options!r}, which is not an attrs class"
                )
            problem = check_factory(kind, factory)
            if problem is not None:
                raise GenfwError(f"{where} registered {kind} '{name}': {problem}")
            existing = self._table[kind].get(name)
            other = REMEDY_KINDS.get(kind)
            if existing is None and other is not None:  # one spelling for both: --regulariser NAME
                existing = self._table[other].get(name)
            if existing is not None:
                raise GenfwError(
                    f"{kind} '{name}' is registered twice: by {existing.plugin.describe()} and by {where}; "
                    f"uninstall one, or leave one out with GENFW_SKIP_PLUGINS={plugin.name}"
                )
            self._table[kind][name] = Component(
                kind=kind,
                name=name,
                factory=factory,
                options=options,
                plugin=plugin,
                help=help if help is not None else _first_line(factory),
            )

        return register

    def names(self, kind: str) -> list[str]:
        return sorted(self._table[kind])

    def all(self, kind: str) -> Mapping[str, Component]:
        return self._table[kind]

    def __iter__(self) -> Iterator[Component]:
        for kind in KINDS:
            yield from self._table[kind].values()

    def get(self, kind: str, name: str, *, where: str | None = None) -> Component:
        if kind not in self._table:
            raise GenfwError(f"unknown component kind '{kind}'; valid kinds: {choices(KINDS)}")
        try:
            return self._table[kind][name]
        except KeyError:
            label = where or kind
            raise GenfwError(
                f"unknown {kind} '{name}' for {label}; registered {plural(kind)}: {choices(self._table[kind])}"
            ) from None

    def spec(
        self, kind: str, name: str, options: Mapping[str, Any] | None = None, *, where: str
    ) -> ComponentSpec:
        """Look up ``name`` and validate ``options`` against its options class.

        ``where`` is the config path used in errors (``prior``, ``regularisers.mmd``).
        """
        component = self.get(kind, name, where=where)
        return ComponentSpec(component, structure_options(component, options or {}, where=where))


# --- options validation -------------------------------------------------------------------------


def _strict_int(value: Any, _: type) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {value!r}")
    return value


def _any_float(value: Any, _: type) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"expected a number, got {value!r}")
    try:
        return float(value)
    except OverflowError:  # an integer beyond the floats (10**400)
        return math.inf if value > 0 else -math.inf


def _strict_float(value: Any, type_: type) -> float:
    # Every float option is finite (a learning rate of .inf, a weight of .nan) unless its type
    # says otherwise (genfw.validators.AnyFloat): the rule lives here, not in each validator.
    number = _any_float(value, type_)
    if not math.isfinite(number):
        raise ValueError(f"expected a finite number, got {number}")
    return number


def _strict_bool(value: Any, _: type) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"expected true or false, got {value!r}")
    return value


def _strict_str(value: Any, _: type) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {value!r}")
    return value


def _names(value: Any, _: type) -> list[str]:
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise TypeError(f"expected a name, names separated by commas, or a list of names, got {value!r}")
    return list(value)


def make_converter() -> cattrs.Converter:
    """A cattrs converter that refuses unknown keys and does not coerce types silently."""
    conv = cattrs.Converter(forbid_extra_keys=True)
    conv.register_structure_hook(int, _strict_int)
    conv.register_structure_hook(float, _strict_float)
    conv.register_structure_hook(AnyFloat, _any_float)
    conv.register_structure_hook(bool, _strict_bool)
    conv.register_structure_hook(str, _strict_str)
    conv.register_structure_hook(Names, _names)
    return conv


converter = make_converter()


def describe_options(component: Component) -> str:
    fields = component.option_fields()
    if not fields:
        return f"{component.kind} '{component.name}' takes no options"
    listed = ", ".join(f"{n}: {t} = {d!r}" for n, t, d in fields)
    return f"options of {component.kind} '{component.name}': {listed}"


def _message(exc: BaseException) -> str:
    """An exception's message on one line. attrs' own validators (``attrs.validators.in_``,
    ``instance_of``) raise ``ValueError(message, attribute, ...)``, whose ``str`` is the repr of
    that tuple, ``Attribute(...)`` and all: keep the message."""
    text = exc.args[0] if len(exc.args) > 1 and isinstance(exc.args[0], str) else str(exc)
    return " ".join(text.split())


def _format_exception(exc: BaseException, type_: type | None) -> str:
    # Our strict hooks and attrs validators say what was wrong; keep their words.
    if (
        isinstance(exc, (TypeError, ValueError))
        and str(exc)
        and not isinstance(exc, cattrs.BaseValidationError)
    ):
        return _message(exc)
    return cattrs.v.format_exception(exc, type_)


def structure_options(component: Component, raw: Mapping[str, Any], *, where: str) -> Any:
    """Structure ``raw`` into ``component.options``; errors give the full key path."""
    if not isinstance(raw, Mapping):
        raise GenfwError(f"{where}: expected a mapping of options, got {raw!r}")
    valid = {f.name for f in attrs.fields(component.options)}
    unknown = sorted(set(raw) - valid)
    if unknown:
        guess = nearest(unknown[0], valid)
        hint = f" (did you mean {guess}?)" if guess else ""
        raise GenfwError(f"{where}.{unknown[0]}: unknown option{hint}; {describe_options(component)}")
    try:
        return converter.structure(dict(raw), component.options)
    except cattrs.BaseValidationError as exc:
        messages = cattrs.transform_error(exc, path=where, format_exception=_format_exception)
        first = messages[0] if messages else str(exc)
        # cattrs says "invalid value for type, expected int @ $.x"; make it "x: ...".
        if " @ " in first:
            msg, path = first.rsplit(" @ ", 1)
            first = f"{path}: {msg}"
        raise GenfwError(f"{first}; {describe_options(component)}") from None
    except (TypeError, ValueError) as exc:  # attrs validators raise these from __init__
        raise GenfwError(f"{where}: {_message(exc)}") from None
