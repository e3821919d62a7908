"""The one exception type for mistakes a user can make.

A :class:`GenfwError` is printed by the CLI as a single line (``genfw: error: ...``) with exit
code 2 and no traceback. Anything else that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations

from collections.abc import Iterable


class GenfwError(Exception):
    """A user error: bad config, unknown name, missing file, broken plugin or checkpoint."""


def choices(names: Iterable[str]) -> str:
    """Format valid names for an error message: ``a, b, c`` (or ``none`` when empty)."""
    names = sorted(names)
    return ", ".join(names) if names else "none"


def plural(kind: str) -> str:
    """``loss`` -> ``losses``, ``prior`` -> ``priors``."""
    return kind + ("es" if kind.endswith("s") else "s")
