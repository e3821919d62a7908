"""The documentation: generated pages are up to date with the registry, every built-in variant is
in the gallery (or listed there as missing, with a reason), and README sections reach the site."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

from genfw.plugins import get_host

ROOT = Path(__file__).resolve().parents[1]


def _module(path: Path) -> ModuleType:
    name = f"_genfw_docs_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


generate = _module(ROOT / "docs" / "generate.py")
hooks = _module(ROOT / "docs" / "hooks.py")
gallery = _module(ROOT / "benchmarks" / "gallery.py")


def _builtin_variants() -> list[str]:
    return list(generate.builtin(get_host().registry, "variant"))


def test_generated_pages_are_up_to_date_with_the_registry() -> None:
    assert generate.stale() == [], "run: python docs/generate.py"
    pages = generate.pages()
    for name in _builtin_variants():
        page = pages[Path("variants") / f"{name}.md"]
        # its `genfw list variant` entry, and a row of the index
        assert f"  {name} - " in page
        assert f"[`{name}`]({name}.md)" in pages[Path("variants") / "index.md"]


def test_a_new_variant_makes_the_committed_pages_stale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A variant registered without its page regenerated is caught (a page for it is missing)."""
    pages = generate.pages()
    for rel, text in pages.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    assert generate.stale(tmp_path) == []
    gone = Path("variants") / f"{_builtin_variants()[0]}.md"
    (tmp_path / gone).unlink()
    (tmp_path / "variants" / "left-over.md").write_text(generate.GENERATED + "\n# left-over\n")
    assert generate.stale(tmp_path) == [str(gone), "variants/left-over.md (its variant is gone)"]


def test_every_builtin_variant_is_in_the_gallery_or_missing_with_a_reason() -> None:
    page = (ROOT / "docs" / "gallery.md").read_text()
    shown = set(re.findall(r"^### (\S+)$", page, re.M))
    missing = dict(re.findall(r"^- `([^`]+)`: (.+)$", page, re.M))
    for name in _builtin_variants():
        assert name in shown or missing.get(name, "").strip(), (
            f"{name} is not in docs/gallery.md: run python benchmarks/gallery.py --only {name} "
            "(or --page-only, which lists it as missing)"
        )
    for image in re.findall(r"\]\((img/gallery/[^)]+)\)", page):
        assert (ROOT / "docs" / image).is_file(), image


def test_gallery_page_lists_a_variant_without_results_as_missing() -> None:
    variants = gallery.builtin_variants()
    first, second = list(variants)[:2]
    results = {
        first: {
            "dataset": "digits", "kind": "image", "steps": 3, "seconds": 1.5, "cpu_seconds": 1.2, "seed": 0,
            "metrics": ["autoencoding"], "values": {"autoencoding/mse": 0.25}, "samples": f"{first}.png",
        },
        second: {"error": "refused with its defaults: needs --plugin.k"},
    }  # fmt: skip
    page = gallery.write_page(results, variants)
    assert (
        f"### {first}" in page
        and "`autoencoding/mse` 0.25" in page
        and "3 steps (seed 0): 1.2 s of CPU, 1.5 s wall-clock" in page
    )
    assert f"- `{second}`: refused with its defaults: needs --plugin.k" in page
    third = list(variants)[2]
    assert f"- `{third}`: not trained yet: `python benchmarks/gallery.py --only {third}`" in page


README = """# title
intro
## Alpha
a [plugins](docs/plugins.md#x), a ![pic](docs/img/a.png), [c](CONTRIBUTING.md), [u](https://x.org)
```bash
# not a heading
```
### Alpha sub
text
## Beta
b
"""


def test_readme_section_is_cut_at_its_level_with_its_headings_raised_and_links_fixed() -> None:
    out = hooks.expand("# Page\n\n{{ readme: Alpha }}\n", "sub/page.md", readme=README)
    assert out == (
        "# Page\n\n"
        "a [plugins](../plugins.md#x), a ![pic](../img/a.png), c (`CONTRIBUTING.md`), [u](https://x.org)\n"
        "```bash\n# not a heading\n```\n## Alpha sub\ntext\n"
    )
    with pytest.raises(hooks.ReadmeError, match="no section 'Gamma'; its headings: 'title', 'Alpha'"):
        hooks.expand("{{ readme: Gamma }}", "page.md", readme=README)


def test_every_readme_section_the_pages_name_exists() -> None:
    readme = (ROOT / "README.md").read_text()
    for page in (ROOT / "docs").rglob("*.md"):
        for title in hooks.DIRECTIVE.findall(page.read_text()):
            assert hooks.section(readme, title).strip(), (page, title)


def test_rst_docstrings_become_markdown_for_the_reference() -> None:
    rst = _module(ROOT / "docs" / "griffe_rst.py")
    text = (
        "See :class:`~genfw.Variant` and :func:`load`::\n\n    code()\n\n"
        "=== ====\na   :class:`B`\n=== ====\n\nafter"
    )
    assert rst.markdown(text) == (
        "See `genfw.Variant` and `load`:\n\n    code()\n\n"
        "```text\n=== ====\na   :class:`B`\n=== ====\n```\n\nafter"
    )


def test_option_types_read_the_same_before_and_after_attrs_resolves_them() -> None:
    """The generated pages (and ``genfw list``) must not depend on whether cattrs has structured
    an options class yet: ``list[int]`` stays ``list[int]``, not ``list``."""
    import attrs

    from genfw.registry import Component, PluginInfo

    ns: dict[str, object] = {}
    exec(  # an options class with string annotations, as under `from __future__ import annotations`
        "from __future__ import annotations\nimport attrs\n"
        "@attrs.define\nclass Opts:\n    hidden: list[int] = [1]\n    scale: float | None = None\n    n: int = 2\n",
        ns,
    )
    opts = ns["Opts"]
    component = Component("generator", "x", object, opts, PluginInfo("p"))  # type: ignore[arg-type]
    before = component.option_fields()
    attrs.resolve_types(opts)
    assert (
        component.option_fields()
        == before
        == [
            ("hidden", "list[int]", [1]),
            ("scale", "float | None", None),
            ("n", "int", 2),
        ]
    )
