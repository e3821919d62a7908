"""Plugin loading: entry points of the ``genfw`` group, lazily and once.

Built-ins and third-party packages load the same way. ``GENFW_LOAD_PLUGINS`` (a comma list of
entry-point names; empty means none) limits which entry points load, so a broken plugin never
locks the user out.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable
from importlib import metadata
from typing import Any

import pluggy

from genfw import hookspecs
from genfw.errors import GenfwError, choices
from genfw.registry import PluginInfo, Registry

ENTRY_POINT_GROUP = "genfw"
ENV_LOAD = "GENFW_LOAD_PLUGINS"


def _plugin_info(ep: metadata.EntryPoint) -> PluginInfo:
    dist = getattr(ep, "dist", None)
    return PluginInfo(
        name=ep.name,
        dist=dist.metadata["Name"] if dist is not None else "(unknown)",
        version=dist.version if dist is not None else "",
        module=ep.value,
    )


def selected_entry_points(env: str | None = None) -> list[metadata.EntryPoint]:
    """Entry points of the ``genfw`` group, filtered by ``GENFW_LOAD_PLUGINS`` when set."""
    eps = sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)
    env = os.environ.get(ENV_LOAD) if env is None else env
    if env is None:
        return eps
    wanted = [n.strip() for n in env.split(",") if n.strip()]
    known = {ep.name for ep in eps}
    missing = [n for n in wanted if n not in known]
    if missing:
        raise GenfwError(
            f"{ENV_LOAD} names '{missing[0]}', which is not an installed genfw plugin; "
            f"installed: {choices(known)}"
        )
    return [ep for ep in eps if ep.name in wanted]


class PluginHost:
    """A pluggy manager plus the registry it fills. Tests build their own; the CLI uses
    :func:`get_host`."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}
        self._registry: Registry | None = None

    # -- loading ----------------------------------------------------------------------------------
    def load_entry_points(self, entry_points: Iterable[metadata.EntryPoint] | None = None) -> None:
        eps = list(selected_entry_points() if entry_points is None else entry_points)
        for ep in eps:
            info = _plugin_info(ep)
            try:
                obj = ep.load()
            except Exception as exc:  # any import failure is the plugin's, not ours
                others = ",".join(e.name for e in eps if e.name != ep.name)
                raise GenfwError(
                    f"error importing {info.describe()}: {type(exc).__name__}: {_one_line(exc)}; "
                    f"to skip it, set {ENV_LOAD} to the plugins you want (e.g. {ENV_LOAD}={others})"
                ) from None
            self.add(obj, info)

    def add(self, obj: Any, info: PluginInfo | str) -> None:
        """Register a plugin object (module or instance) under ``info``."""
        if isinstance(info, str):
            info = PluginInfo(name=info, module=getattr(obj, "__name__", type(obj).__name__))
        if self.pm.has_plugin(info.name):
            raise GenfwError(f"two plugins are named '{info.name}': {info.describe()} and another")
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

    # -- the table --------------------------------------------------------------------------------
    @property
    def registry(self) -> Registry:
        if self._registry is None:
            self._registry = self._collect()
        return self._registry

    def _collect(self) -> Registry:
        registry = Registry()
        for kind, hook_name in hookspecs.KINDS.items():
            caller = getattr(self.pm.hook, hook_name)
            # One call per implementation, so every component knows the plugin that made it.
            for impl in caller.get_hookimpls():
                info = self.infos.get(impl.plugin_name, PluginInfo(name=impl.plugin_name))
                try:
                    impl.function(register=registry.registrar(kind, info))
                except GenfwError:
                    raise
                except Exception as exc:
                    raise GenfwError(
                        f"{info.describe()} failed in {hook_name}: {type(exc).__name__}: {_one_line(exc)}"
                    ) from None
        return registry

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
