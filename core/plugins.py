"""Plugin loading: entry points of the ``genfw`` group, lazily and once.

Built-ins and third-party packages load the same way. ``GENFW_LOAD_PLUGINS`` (a comma list of
entry-point names; empty means none) limits which entry points load, and ``GENFW_SKIP_PLUGINS``
(a comma list of entry-point or distribution names) leaves some out, so a broken plugin never
locks the user out.

A plugin is known by its entry-point name. Where two distributions use the same entry-point name
(a third-party ``energy`` beside the built-in one), both are known as ``DISTRIBUTION:NAME``.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable
from importlib import metadata
from typing import Any

import pluggy

from genfw import hookspecs
from genfw.commands import Commands, CommandTable
from genfw.errors import GenfwError, choices
from genfw.registry import PluginInfo, Registry

ENTRY_POINT_GROUP = "genfw"
ENV_LOAD = "GENFW_LOAD_PLUGINS"
ENV_SKIP = "GENFW_SKIP_PLUGINS"


def _dist_name(ep: metadata.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return dist.metadata["Name"] if dist is not None else "(unknown)"


def _plugin_infos(eps: list[metadata.EntryPoint]) -> list[PluginInfo]:
    """One :class:`PluginInfo` per entry point; a name two distributions share is qualified."""
    shared = {n for n in (ep.name for ep in eps) if sum(e.name == n for e in eps) > 1}
    infos = []
    for ep in eps:
        dist, version = _dist_name(ep), getattr(getattr(ep, "dist", None), "version", "")
        name = f"{dist}:{ep.name}" if ep.name in shared else ep.name
        infos.append(PluginInfo(name=name, dist=dist, version=version, module=ep.value))
    return infos


def _names_in(env: str) -> list[str]:
    return [n.strip() for n in env.split(",") if n.strip()]


def _matches(ep: metadata.EntryPoint, names: set[str]) -> bool:
    return bool({ep.name, _dist_name(ep), f"{_dist_name(ep)}:{ep.name}"} & names)


def selected_entry_points(env: str | None = None, skip: str | None = None) -> list[metadata.EntryPoint]:
    """Entry points of the ``genfw`` group, filtered by ``GENFW_LOAD_PLUGINS`` when set and
    without those ``GENFW_SKIP_PLUGINS`` names (entry-point, distribution or ``DIST:NAME``)."""
    eps = sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: (ep.name, _dist_name(ep)))
    env = os.environ.get(ENV_LOAD) if env is None else env
    skip = os.environ.get(ENV_SKIP, "") if skip is None else skip
    for var, value in ((ENV_LOAD, env), (ENV_SKIP, skip)):
        names = _names_in(value or "")
        missing = [n for n in names if not any(_matches(ep, {n}) for ep in eps)]
        if missing:
            raise GenfwError(
                f"{var} names '{missing[0]}', which is not an installed genfw plugin; "
                f"installed: {choices({ep.name for ep in eps})}"
            )
    if env is not None:
        eps = [ep for ep in eps if _matches(ep, set(_names_in(env)))]
    return [ep for ep in eps if not _matches(ep, set(_names_in(skip)))]


class PluginHost:
    """A pluggy manager plus the registry it fills. Tests build their own; the CLI uses
    :func:`get_host`."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}
        self._registry: Registry | None = None
        self._commands: CommandTable | None = None

    # -- loading ----------------------------------------------------------------------------------
    def load_entry_points(self, entry_points: Iterable[metadata.EntryPoint] | None = None) -> None:
        eps = list(selected_entry_points() if entry_points is None else entry_points)
        for ep, info in zip(eps, _plugin_infos(eps), strict=True):
            try:
                obj = ep.load()
            except Exception as exc:  # any import failure is the plugin's, not ours
                others = ",".join(e.name for e in eps if e.name != ep.name)
                raise GenfwError(
                    f"error importing {info.describe()}: {type(exc).__name__}: {_one_line(exc)}; "
                    f"to skip it, set {ENV_SKIP}={info.name} (or {ENV_LOAD} to the plugins you want, "
                    f"e.g. {ENV_LOAD}={others})"
                ) from None
            self.add(obj, info)

    def add(self, obj: Any, info: PluginInfo | str) -> None:
        """Register a plugin object (module or instance) under ``info``."""
        if isinstance(info, str):
            info = PluginInfo(name=info, module=getattr(obj, "__name__", type(obj).__name__))
        if self.pm.has_plugin(info.name):
            other = self.infos.get(info.name, PluginInfo(name=info.name)).describe()
            raise GenfwError(f"two plugins are named '{info.name}': {other} and {info.describe()}")
        try:
            self.pm.register(obj, name=info.name)
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            if self.pm.has_plugin(info.name):
                self.pm.unregister(name=info.name)
            raise GenfwError(
                f"{info.describe()} has an invalid hook implementation: {_one_line(exc)}"
            ) from None
        self.infos[info.name] = info
        self._registry = None
        self._commands = None

    # -- the table --------------------------------------------------------------------------------
    @property
    def registry(self) -> Registry:
        if self._registry is None:
            self._registry = self._collect()
        return self._registry

    def _collect(self) -> Registry:
        registry = Registry()
        for kind, hook_name in hookspecs.KINDS.items():
            self._call_each(hook_name, lambda info, kind=kind: {"register": registry.registrar(kind, info)})
        return registry

    def _call_each(self, hook_name: str, arguments: Callable[[PluginInfo], dict[str, Any]]) -> None:
        """Call each implementation of ``hook_name`` once, with ``arguments(its plugin's info)``,
        so that what it registers knows the plugin that made it; a failure names the plugin."""
        for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
            info = self.infos.get(impl.plugin_name, PluginInfo(name=impl.plugin_name))
            try:
                impl.function(**arguments(info))
            except GenfwError:
                raise
            except Exception as exc:
                raise GenfwError(
                    f"{info.describe()} failed in {hook_name}: {type(exc).__name__}: {_one_line(exc)}"
                ) from None

    @property
    def commands(self) -> CommandTable:
        """The commands and command options the plugins add (``genfw_register_commands``)."""
        if self._commands is None:
            table = CommandTable()
            self._call_each("genfw_register_commands", lambda info: {"commands": Commands(table, info)})
            self._commands = table
        return self._commands

    def hooks_of(self, name: str) -> list[str]:
        plugin = self.pm.get_plugin(name)
        return sorted(c.name for c in self.pm.get_hookcallers(plugin) or [])


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


@functools.cache
def get_host() -> PluginHost:
    """The process-wide host with every selected entry point loaded (once, on first use)."""
    host = PluginHost()
    host.load_entry_points()
    return host


def get_registry() -> Registry:
    return get_host().registry


def variants_where(fits: Any, registry: Registry | None = None) -> str:
    """The variants of ``registry`` (the run's; the process-wide one when ``None``) that
    ``fits(info: genfw.contracts.VariantInfo)`` accepts, comma-separated (``none registered`` if
    none), for the last words of a refusal."""
    from genfw.contracts import VariantInfo

    registry = get_registry() if registry is None else registry
    names = sorted(
        v.name
        for v in registry.all("variant").values()
        if fits(VariantInfo(v.name, v.factory, registry=registry))
    )
    return ", ".join(names) or "none registered"
