"""``genfw new-plugin``: the path of a new author, from an empty folder to training with the plugin.

The end-to-end test does what the README tells an author to do, each step in its own process:
scaffold with the CLI, ``pip install -e`` the package (offline: ``--no-deps --no-build-isolation
--no-index``) into a throw-away virtual environment, run the package's own tests with pytest,
see it in ``genfw plugins`` and train with it. The venv is created without pip and sees the test
venv's packages (genfw, torch, pip, setuptools, pytest) through a ``.pth`` file that calls
``site.addsitedir``; the editable install itself lands in the throw-away venv only, so the
shared test venv never sees the plugin.

The other tests scaffold every kind in this process and run the generated tests' functions
directly (cheap), and check the refusals.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

import genfw
from genfw import scaffold
from genfw.plugins import ENV_LOAD

TIMEOUT = 300


def run(python: Path | str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in (ENV_LOAD, "PYTHONPATH")}
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run(
        [str(python), *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env, timeout=TIMEOUT
    )


def explain(proc: subprocess.CompletedProcess) -> str:
    return f"exit {proc.returncode}\n--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-3000:]}"


def throwaway_venv(root: Path) -> Path:
    """A venv at ``root`` that sees this venv's packages; returns its python."""
    venv.EnvBuilder(with_pip=False).create(root)
    python = root / "bin" / "python"
    purelib = run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=root)
    outer = sysconfig.get_paths()["purelib"]  # where genfw (editable), torch, pip, pytest live
    (Path(purelib.stdout.strip()) / "outer.pth").write_text(f"import site; site.addsitedir({outer!r})\n")
    return python


@pytest.mark.slow
def test_from_an_empty_folder_to_training_with_a_new_loss(tmp_path):
    author = tmp_path / "author"
    author.mkdir()
    # 1. Scaffold.
    proc = run(sys.executable, "-m", "genfw", "new-plugin", "mine", "--kind", "loss", cwd=author)
    assert proc.returncode == 0, explain(proc)
    package = author / "genfw-mine"
    assert sorted(str(p.relative_to(package)) for p in package.rglob("*") if p.is_file()) == [
        ".gitignore",
        "README.md",
        "pyproject.toml",
        "src/genfw_mine/__init__.py",
        "tests/test_mine.py",
    ]
    # 2. pip install -e, offline, into a fresh venv.
    python = throwaway_venv(tmp_path / "venv")
    pip = ("-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", "--quiet")
    proc = run(python, *pip, "--disable-pip-version-check", "-e", package, cwd=author)
    assert proc.returncode == 0, explain(proc)
    # Editable: the venv imports the module from the author's folder.
    proc = run(python, "-c", "import genfw_mine; print(genfw_mine.__file__)", cwd=tmp_path)
    assert proc.stdout.strip() == str(package / "src" / "genfw_mine" / "__init__.py"), explain(proc)
    # 3. The author's own tests are green.
    proc = run(python, "-m", "pytest", "-q", "-p", "no:cacheprovider", cwd=package)
    assert proc.returncode == 0 and "2 passed" in proc.stdout, explain(proc)
    # 4. genfw plugins lists it, with its distribution.
    proc = run(python, "-m", "genfw", "plugins", "--json", cwd=author)
    assert proc.returncode == 0, explain(proc)
    (row,) = [r for r in json.loads(proc.stdout) if r["name"] == "mine"]
    assert row["distribution"] == "genfw-mine" and row["version"] == "0.1.0"
    assert row["module"] == "genfw_mine" and row["components"] == {"loss": ["mine"]}
    # 5. genfw train --plugin gan --loss mine trains.
    out = author / "run"
    proc = run(
        python, "-m", "genfw", "train", "--plugin", "gan", "--dataset", "toy2d", "--loss", "mine",
        "--loss.weight", "2", "--steps", "10", "--train.log_every", "5", "--batch-size", "32",
        "--no-progress", "--out", out, cwd=author,
    )  # fmt: skip
    assert proc.returncode == 0, explain(proc)
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["step"] == 10 and math.isfinite(summary["critic/loss"])
    assert "name: mine" in (out / "config.yaml").read_text()
    # The shared test venv never saw it.
    assert not any("genfw_mine" in p for p in sys.path)


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("kind", scaffold.KINDS)
def test_every_kind_scaffolds_a_package_whose_tests_pass(tmp_path, kind):
    root = scaffold.new_plugin(f"my_{kind}", kind, tmp_path)
    text = (root / "pyproject.toml").read_text()
    assert f'[project.entry-points.genfw]\nmy_{kind} = "genfw_my_{kind}"' in text
    assert (
        f"genfw train {scaffold.TEMPLATES[kind][3].format(name=f'my_{kind}')}"
        in (root / "README.md").read_text()
    )
    module_name = f"genfw_my_{kind}"
    try:
        plugin = _load(root / "src" / module_name / "__init__.py", module_name)
        assert plugin.__doc__ and f"``my_{kind}``" in plugin.__doc__
        tests = _load(root / "tests" / f"test_my_{kind}.py", f"test_my_{kind}_generated")
        names = [n for n in dir(tests) if n.startswith("test_")]
        assert any("contract" in n for n in names)
        for name in names:
            getattr(tests, name)()
    finally:
        sys.modules.pop(module_name, None)
        sys.modules.pop(f"test_my_{kind}_generated", None)


@pytest.mark.parametrize(
    ("name", "kind", "cls"),
    [
        ("MyLoss", "loss", "MyLoss"),
        ("SlicedW", "metric", "SlicedWMetric"),
        ("DualD", "variant", "DualDVariant"),
    ],
)
def test_the_name_keeps_its_case_and_the_package_ignores_its_build_files(tmp_path, name, kind, cls):
    import tomllib

    from genfw.testing import registry_with

    root = scaffold.new_plugin(name, kind, tmp_path)
    lower = name.lower()  # the module and the test file: PEP 8 module names
    assert root == tmp_path / f"genfw-{name}"
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) == [
        ".gitignore",
        "README.md",
        "pyproject.toml",
        f"src/genfw_{lower}/__init__.py",
        f"tests/test_{lower}.py",
    ]
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    assert project["name"] == f"genfw-{name}"
    assert project["entry-points"]["genfw"] == {name: f"genfw_{lower}"}
    assert (root / ".gitignore").read_text().split() == [
        "build/",
        "dist/",
        "*.egg-info/",
        "__pycache__/",
        ".venv/",
    ]
    try:
        plugin = _load(root / "src" / f"genfw_{lower}" / "__init__.py", f"genfw_{lower}")
        # Registered under the name as typed, by the class named after it.
        assert registry_with(plugin).get(kind, name).factory is getattr(plugin, cls)
        tests = _load(root / "tests" / f"test_{lower}.py", f"test_{lower}_generated")
        for test in [n for n in dir(tests) if n.startswith("test_")]:
            getattr(tests, test)()
    finally:
        sys.modules.pop(f"genfw_{lower}", None)
        sys.modules.pop(f"test_{lower}_generated", None)


def test_refuses_an_existing_folder_a_bad_name_and_an_unknown_kind(tmp_path, run_cli):
    code, out, _ = run_cli("new-plugin", "mine", "--kind", "prior", "--dir", tmp_path)
    assert code == 0 and "genfw-mine" in out
    before = (tmp_path / "genfw-mine" / "src" / "genfw_mine" / "__init__.py").read_text()
    code, out, err = run_cli("new-plugin", "mine", "--kind", "loss", "--dir", tmp_path)
    assert code == 2 and out == ""
    assert err.strip() == (
        f"genfw: error: {tmp_path / 'genfw-mine'} already exists; choose another name or remove it first "
        "(nothing was written)"
    )
    assert (tmp_path / "genfw-mine" / "src" / "genfw_mine" / "__init__.py").read_text() == before
    code, _, err = run_cli("new-plugin", "My-Loss", "--kind", "loss", "--dir", tmp_path)
    assert code == 2 and "plugin name 'My-Loss' is not valid" in err and len(err.splitlines()) == 1
    code, _, err = run_cli("new-plugin", "mine2", "--kind", "optimiser", "--dir", tmp_path)
    assert code == 2 and "unknown kind 'optimiser'" in err and "loss, metric" in err
    # A name an installed plugin already registers for the kind would fail its own tests at once.
    code, _, err = run_cli("new-plugin", "hinge", "--kind", "loss", "--dir", tmp_path)
    assert code == 2 and err.strip() == (
        "genfw: error: loss 'hinge' is already registered by plugin 'losses' (distribution genfw "
        f"{genfw.__version__}); choose another name (nothing was written)"
    )
    code, _, _ = run_cli("new-plugin", "hinge", "--kind", "prior", "--dir", tmp_path)
    assert code == 0  # no prior is called hinge
    assert sorted(p.name for p in tmp_path.iterdir()) == ["genfw-hinge", "genfw-mine"]


def test_the_loss_plugin_in_docs_is_under_20_lines_and_keeps_the_contract(tmp_path):
    import re

    import tomllib

    from genfw.testing import check_loss, registry_with

    doc = (Path(__file__).resolve().parents[1] / "docs" / "plugins.md").read_text()
    toml = re.search(r"```toml\n# pyproject.toml\n(.*?)```", doc, re.S).group(1)
    code = re.search(r"```python\n# genfw_mine.py\n(.*?)```", doc, re.S).group(1)
    assert sum(1 for line in (toml + code).splitlines() if line.strip()) < 20
    assert tomllib.loads(toml)["project"]["entry-points"]["genfw"] == {"mine": "genfw_mine"}
    (tmp_path / "genfw_mine.py").write_text(code)
    try:
        module = _load(tmp_path / "genfw_mine.py", "genfw_mine")
        check_loss("mine", registry=registry_with(module))
    finally:
        sys.modules.pop("genfw_mine", None)
