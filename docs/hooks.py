"""MkDocs hook: pages take sections of README.md, so the front page and the site say one thing.

A line ``{{ readme: TITLE }}`` in a page becomes the README's section whose heading starts with
TITLE (its subsections included, the heading itself left out, headings raised so the section's
subsections are the page's ``##``). Links into ``docs/`` are made relative to the page; links to
other files of the repository, which the site does not hold, become their text and path. A title
the README lacks stops the build, naming the README's headings.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from typing import Any

README = Path(__file__).resolve().parents[1] / "README.md"
DIRECTIVE = re.compile(r"^\{\{ readme: (.+?) \}\}[ \t]*$", re.M)
HEADING = re.compile(r"^(#{1,6}) (.+?)\s*$")
LINK = re.compile(r"(!?)\[([^\]]*)\]\(([^)\s]+)\)")


class ReadmeError(Exception):
    """A page names a README section that does not exist."""


def headings(text: str) -> list[tuple[int, int, str]]:
    """``(line index, level, title)`` of every heading outside code fences."""
    out, fenced = [], False
    for i, line in enumerate(text.splitlines()):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        m = None if fenced else HEADING.match(line)
        if m:
            out.append((i, len(m.group(1)), m.group(2)))
    return out


def section(text: str, title: str) -> str:
    """The body of the section of ``text`` whose heading starts with ``title``, its headings
    raised so that its subsections are level 2."""
    lines = text.splitlines()
    found = headings(text)
    for n, (start, level, name) in enumerate(found):
        if name.startswith(title):
            end = next((i for i, lv, _ in found[n + 1 :] if lv <= level), len(lines))
            subs = {i: lv for i, lv, _ in found[n + 1 :] if i < end}
            body = []
            for i in range(start + 1, end):
                line = lines[i]
                if i in subs:  # level+1 -> 2
                    line = "#" * (subs[i] - level + 1) + line[subs[i] :]
                body.append(line)
            return "\n".join(body).strip("\n")
    names = ", ".join(repr(name) for _, _, name in found)
    raise ReadmeError(f"README.md has no section {title!r}; its headings: {names}")


def relink(text: str, page: str) -> str:
    """Links of README text as seen from the docs page ``page`` (a path under ``docs/``)."""
    depth = len(PurePosixPath(page).parent.parts)

    def fix(m: re.Match[str]) -> str:
        bang, label, target = m.groups()
        if re.match(r"^[a-z]+:|^#", target):  # a URL or an anchor
            return m.group(0)
        if target.startswith("docs/"):
            return f"{bang}[{label}]({'../' * depth}{target[len('docs/') :]})"
        return f"{label} (`{target}`)" if label != target else f"`{target}`"

    return LINK.sub(fix, text)


def expand(markdown: str, page: str, readme: str | None = None) -> str:
    """``markdown`` with every ``{{ readme: TITLE }}`` line replaced by that README section."""
    text = README.read_text() if readme is None else readme
    return DIRECTIVE.sub(lambda m: relink(section(text, m.group(1)), page), markdown)


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    return expand(markdown, page.file.src_uri)
