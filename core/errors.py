"""The one exception type for mistakes a user can make.

A :class:`GenfwError` is printed by the CLI as a single line (``genfw: error: ...``) with exit
code 2 and no traceback. Anything else that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
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


def nearest(word: str, candidates: Iterable[str]) -> str | None:
    """The candidate closest to a misspelt ``word`` (``stpes`` -> ``steps``), or ``None`` when
    none is close (difflib's similarity ratio below 0.6)."""
    match = difflib.get_close_matches(word, sorted(set(candidates)), n=1)
    return match[0] if match else None
