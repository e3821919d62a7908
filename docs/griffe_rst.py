"""A griffe extension for the API reference: genfw's docstrings are written in reStructuredText
for ``help()`` and pydoc; the site renders Markdown. Roles (``:class:`Variant```) become code
spans, simple tables (as written) (rows between ``=====`` rules) and ``::`` literal blocks become code blocks.
The docstrings themselves stay as they are. ``docs/generate.py`` uses :func:`markdown` for the
variant pages too (without griffe, which only the docs extra installs)."""

from __future__ import annotations

import re
from typing import Any

try:
    import griffe
except ImportError:  # docs/generate.py needs only markdown()
    griffe = None

ROLE = re.compile(r":(?:py:)?[a-z]+:`~?([^`]+)`")
RULE = re.compile(r"^\s*=+( +=+)+\s*$")


def markdown(text: str) -> str:
    """``text`` (reStructuredText) with its roles, simple tables and literal blocks in Markdown."""
    out: list[str] = []
    in_table = False
    for line in text.splitlines():
        if not in_table:  # a table stays as it is written, in a code block
            line = ROLE.sub(r"`\1`", line)
        if RULE.match(line):
            if not in_table:  # the first rule opens the table
                out.append("```text")
                in_table = True
            out.append(line)
            continue
        if in_table and not line.strip():  # a blank line after the closing rule ends it
            out.append("```")
            in_table = False
        out.append(line)
    if in_table:
        out.append("```")
    # "Example::" introduces an indented literal block: Markdown's indented code needs only ":".
    return re.sub(r"(\S)::$", r"\1:", "\n".join(out), flags=re.M).replace("\n::\n", "\n")


if griffe is not None:

    class RstToMarkdown(griffe.Extension):
        def on_instance(self, *, obj: Any, **_: Any) -> None:
            if obj.docstring is not None:
                obj.docstring.value = markdown(obj.docstring.value)
