"""Commands from plugins: what the ``genfw_register_commands`` hook receives.

A plugin adds a subcommand of ``genfw`` or options to an existing one through the
:class:`Commands` object the host hands its hook (as llm's ``register_commands``)::

    import genfw


    @genfw.hookimpl
    def genfw_register_commands(commands: genfw.Commands) -> None:
        commands.add("hello", help="say hello", configure=add_options, run=hello)
        commands.extend("eval", configure=add_eval_options, run_after=draw_pictures)

``configure(parser)`` adds argparse arguments to the command's parser; ``run(args)`` is the new
command's body and returns its exit code. An extension's ``run_before(args)`` runs before the
command's own body (set an environment variable, check its options) and ``run_after(args, run)``
inside it, at the command's extension point (see :data:`RUN_AFTER`); both run only when the user
gave at least one of the options ``configure`` added (always, where it added none). A mistake the
user made is a :class:`genfw.GenfwError` (one line, exit code 2), as everywhere in genfw.

The names are checked when ``genfw`` builds its parser: a command name taken by genfw or by
another plugin, an extension of a command that does not exist and an option another part of the
command already has are one-line errors naming the plugin and its distribution.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from genfw.errors import GenfwError

if TYPE_CHECKING:
    import torch

    from genfw.config import RunConfig
    from genfw.model import GenDataset, Model, Modules
    from genfw.registry import PluginInfo

#: Commands whose body calls its extensions' ``run_after``, and when.
RUN_AFTER: dict[str, str] = {
    "eval": "after the run's config, data set and weights are loaded and before its metrics are "
    "computed; the files it returns are printed after the metrics",
}

_NAME = re.compile(r"[a-z][a-z0-9-]*\Z")


@attrs.frozen
class LoadedRun:
    """A trained run as ``genfw eval`` loaded it: what an ``eval`` extension's ``run_after`` sees.

    ``cfg`` is the run's resolved config (with the command line's changes), ``model`` the model
    its variant built, with the weights of the latest checkpoint in ``modules`` (unwrapped, on
    ``device``), ``dataset`` the run's data set.
    """

    run_dir: Path
    cfg: RunConfig
    model: Model
    modules: Modules
    dataset: GenDataset

    @property
    def device(self) -> torch.device:
        from genfw.model import device_of

        return device_of(*self.modules.values())


Configure = Callable[[argparse.ArgumentParser], None]
RunBefore = Callable[[argparse.Namespace], None]
RunAfter = Callable[[argparse.Namespace, LoadedRun], "Iterable[Path | str] | None"]


@attrs.frozen
class Command:
    """A subcommand a plugin added."""

    name: str
    help: str
    configure: Configure
    run: Callable[[argparse.Namespace], int]
    plugin: PluginInfo
    description: str | None = None
    passthrough: bool = False


@attrs.frozen
class Extension:
    """Options a plugin added to an existing command, and what it does with them."""

    command: str
    configure: Configure
    plugin: PluginInfo
    run_before: RunBefore | None = None
    run_after: RunAfter | None = None


@attrs.define
class CommandTable:
    """Every plugin's commands and extensions, in the order the plugins registered them."""

    commands: dict[str, Command] = attrs.field(factory=dict)
    extensions: list[Extension] = attrs.field(factory=list)


def _check_callable(where: str, what: str, value: Any, *, optional: bool = False) -> None:
    if (value is None and not optional) or (value is not None and not callable(value)):
        raise GenfwError(f"{where}: {what} must be a function, got {value!r}")


class Commands:
    """The object a plugin's ``genfw_register_commands`` hook receives: ``add`` a subcommand,
    ``extend`` an existing one. One per plugin, so every command knows the plugin it came from."""

    def __init__(self, table: CommandTable, plugin: PluginInfo) -> None:
        self._table = table
        self._plugin = plugin

    def add(
        self,
        name: str,
        *,
        help: str,
        configure: Configure,
        run: Callable[[argparse.Namespace], int],
        description: str | None = None,
        passthrough: bool = False,
    ) -> None:
        """A new subcommand ``genfw NAME``.

        :param name: lower case letters, digits and ``-``, starting with a letter.
        :param help: one line, shown by ``genfw --help`` (followed by the plugin's name).
        :param configure: ``configure(parser)`` adds the command's arguments to its
            ``argparse.ArgumentParser``.
        :param run: ``run(args) -> int``: the command, given the parsed ``argparse.Namespace``;
            returns the exit code.
        :param description: the text of ``genfw NAME --help`` (default: ``help``).
        :param passthrough: options the parser does not know are left, in order, in
            ``args.extra: list[str]`` (e.g. ``--dataset.OPTION VALUE``) instead of refused.
        """
        where = f"{self._plugin.describe()} adds command {name!r}"
        if not isinstance(name, str) or not _NAME.match(name):
            raise GenfwError(
                f"{where}: a command name is lower case letters, digits and -, starting with a letter"
            )
        if not isinstance(help, str) or not help.strip():
            raise GenfwError(f"{where}: give it a one-line help text")
        _check_callable(where, "configure", configure)
        _check_callable(where, "run", run)
        other = self._table.commands.get(name)
        if other is not None:
            raise GenfwError(
                f"command '{name}' is added twice: by {other.plugin.describe()} and by {self._plugin.describe()}; "
                f"uninstall one, or leave one out with GENFW_SKIP_PLUGINS={self._plugin.name}"
            )
        self._table.commands[name] = Command(
            name, help.strip(), configure, run, self._plugin, description, passthrough
        )

    def extend(
        self,
        command: str,
        *,
        configure: Configure,
        run_before: RunBefore | None = None,
        run_after: RunAfter | None = None,
    ) -> None:
        """Options for an existing command (genfw's or another plugin's).

        :param command: the command's name, e.g. ``"eval"``.
        :param configure: ``configure(parser)`` adds the options to the command's parser; their
            names must be new to it.
        :param run_before: ``run_before(args)``, before the command's own body: set the
            environment, check the options.
        :param run_after: ``run_after(args, run: LoadedRun) -> files | None``, inside the command,
            for the commands of :data:`RUN_AFTER` (``eval``); the files (paths) it returns are
            printed after the command's own output.

        Both run only when the user gave one of the options ``configure`` added (always, where it
        added none).
        """
        where = f"{self._plugin.describe()} extends command {command!r}"
        _check_callable(where, "configure", configure)
        _check_callable(where, "run_before", run_before, optional=True)
        _check_callable(where, "run_after", run_after, optional=True)
        if run_after is not None and command not in RUN_AFTER:
            raise GenfwError(
                f"{where} with run_after, which only {', '.join(sorted(RUN_AFTER))} calls; use run_before"
            )
        self._table.extensions.append(Extension(command, configure, self._plugin, run_before, run_after))


@attrs.frozen
class Applied:
    """An extension as applied to its command's parser: the argparse actions it added."""

    extension: Extension
    actions: tuple[argparse.Action, ...]

    def given(self, args: argparse.Namespace) -> bool:
        """Whether the user gave one of its options (always true where it added none)."""
        return not self.actions or any(
            getattr(args, a.dest, a.default) != a.default
            for a in self.actions
            if a.dest is not argparse.SUPPRESS
        )


def apply_extension(extension: Extension, parser: argparse.ArgumentParser) -> Applied:
    """Let ``extension`` add its options to ``parser``; an option the command has already is a
    one-line error naming the plugin."""
    before = list(parser._actions)  # argparse keeps no public list of a parser's actions
    try:
        extension.configure(parser)
    except argparse.ArgumentError as exc:
        raise GenfwError(
            f"{extension.plugin.describe()} cannot extend command '{extension.command}': {exc}"
        ) from None
    return Applied(extension, tuple(a for a in parser._actions if a not in before))
