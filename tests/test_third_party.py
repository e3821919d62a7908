"""A package from outside the repository plugs in through its entry point, as after ``pip install``.

How the example ``examples/genfw-lsgan`` gets installed: a session fixture copies it to a temp
dir and runs the real ``pip install --no-deps --no-build-isolation --no-index --target SITE``
on the copy. pip builds a wheel from the example's own ``pyproject.toml`` with the venv's
setuptools (torch 2.13 requires setuptools >= 77, whose ``bdist_wheel`` is built in; no network)
and unpacks it, ``genfw_lsgan-0.1.0.dist-info/entry_points.txt`` included, into ``SITE``. Every
``genfw`` command then runs in a subprocess (``python -m genfw``) with ``SITE`` on its
``PYTHONPATH``, where ``importlib.metadata`` finds the distribution exactly as in site-packages.

Why not ``pip install -e`` into the test venv: that venv is shared (other test sessions and
developers use it at the same time, and would briefly see an extra plugin), and a run killed
before its teardown would leave it installed. ``--target`` exercises the same build and the same
metadata with nothing to undo: the temp dir goes away with the session. Building from a copy keeps
``build/`` and ``*.egg-info`` out of the checkout.

The broken plugin is a hand-written ``.dist-info`` on a temp ``PYTHONPATH`` entry: it has no
package to build, only an entry point whose module raises on import.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
import yaml

from genfw.plugins import ENV_LOAD

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "genfw-lsgan"
TIMEOUT = 300


def run(
    args: list[str], *, path: Sequence[Path] = (), cwd: Path | None = None, **env: str
) -> subprocess.CompletedProcess:
    """``python ARGS`` in a subprocess with ``path`` prepended to ``PYTHONPATH``."""
    full_env = {k: v for k, v in os.environ.items() if k != ENV_LOAD}
    full_env["OMP_NUM_THREADS"] = "1"  # 2 threads on 2 shared cores can be 100x slower here
    pythonpath = [str(p) for p in path] + [p for p in full_env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if pythonpath:
        full_env["PYTHONPATH"] = os.pathsep.join(pythonpath)
    full_env.update(env)
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=full_env, cwd=cwd, timeout=TIMEOUT
    )


def genfw(
    *args: str, path: Sequence[Path] = (), cwd: Path | None = None, **env: str
) -> subprocess.CompletedProcess:
    return run(["-m", "genfw", *map(str, args)], path=path, cwd=cwd, **env)


def explain(proc: subprocess.CompletedProcess) -> str:
    return f"exit {proc.returncode}\n--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-3000:]}"


@pytest.fixture(scope="session")
def example(tmp_path_factory) -> tuple[Path, Path]:
    """(copy of the example's source, the SITE dir pip installed it into)."""
    tmp = tmp_path_factory.mktemp("genfw-lsgan")
    src, site = tmp / "src", tmp / "site"
    shutil.copytree(
        EXAMPLE, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", ".*_cache")
    )
    proc = run(
        [
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--disable-pip-version-check",
            "--quiet",
            "--target",
            str(site),
            str(src),
        ]
    )
    assert proc.returncode == 0, f"pip could not build and install the example offline:\n{explain(proc)}"
    (dist_info,) = site.glob("genfw_lsgan-0.1.0.dist-info")
    assert "[genfw]\nlsgan = genfw_lsgan" in (dist_info / "entry_points.txt").read_text()
    return src, site


def test_plugins_lists_the_distribution_and_its_component(example):
    _, site = example
    proc = genfw("plugins", "--json", path=[site])
    assert proc.returncode == 0, explain(proc)
    rows = {row["name"]: row for row in json.loads(proc.stdout)}
    assert rows["lsgan"] == {
        "name": "lsgan",
        "distribution": "genfw-lsgan",
        "version": "0.1.0",
        "module": "genfw_lsgan",
        "hooks": ["genfw_register_losses"],
        "components": {"loss": ["least_squares"]},
    }
    assert rows["losses"]["distribution"] == "genfw"  # the built-ins are still there


def test_list_shows_the_loss_with_its_role_and_options(example):
    _, site = example
    proc = genfw("list", "loss", path=[site])
    assert proc.returncode == 0, explain(proc)
    lines = proc.stdout.splitlines()
    (i,) = [i for i, line in enumerate(lines) if line.strip().startswith("least_squares ")]
    assert "[adversarial]" in lines[i] and "Mao et al. 2017" in lines[i] and "(plugin lsgan)" in lines[i]
    assert [line.strip() for line in lines[i + 1 : i + 4]] == [
        "--loss.a float = 0.0",
        "--loss.b float = 1.0",
        "--loss.c float = 1.0",
    ]


def test_without_the_package_the_loss_is_unknown(tmp_path):
    proc = genfw(
        "train", "--plugin", "gan", "--loss", "least_squares", "--out", tmp_path / "run", cwd=tmp_path
    )
    assert proc.returncode == 2, explain(proc)
    assert "unknown loss 'least_squares'" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_train_with_the_third_party_loss(example, tmp_path):
    _, site = example
    out = tmp_path / "run"
    proc = genfw(
        "train",
        "--plugin",
        "gan",
        "--dataset",
        "toy2d",
        "--loss",
        "least_squares",
        "--loss.a",
        "-1",
        "--loss.c",
        "0",
        "--steps",
        "30",
        "--train.log_every",
        "10",
        "--out",
        out,
        "--no-progress",
        path=[site],
        cwd=tmp_path,
    )
    assert proc.returncode == 0, explain(proc)
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["loss"] == {"name": "least_squares", "a": -1.0, "b": 1.0, "c": 0.0}
    assert cfg["variant"]["name"] == "gan"
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r for r in records if "critic/loss" in r]
    assert [r["step"] for r in losses] == [10, 20, 30]
    for r in losses:
        assert math.isfinite(r["critic/loss"]) and math.isfinite(r["generator/loss"]), r
        # Least-squares objectives are halved mean squares: never negative.
        assert r["critic/loss"] >= 0 and r["generator/loss"] >= 0, r
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["step"] == 30 and summary["critic/loss"] == losses[-1]["critic/loss"]


def test_the_packages_own_tests_pass(example):
    src, site = example
    proc = run(["-m", "pytest", "-q", "-p", "no:cacheprovider", str(src / "tests")], path=[site], cwd=src)
    assert proc.returncode == 0, explain(proc)
    assert re.search(r"\b\d+ passed\b", proc.stdout) and "failed" not in proc.stdout, proc.stdout


# --- a plugin that cannot be imported ---------------------------------------------------------


def broken_distribution(root: Path, error: str) -> Path:
    """A dist-info for ``broken-pkg 0.0.1`` whose one entry point's module raises ``error``."""
    dist = root / "broken_pkg-0.0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-pkg\nVersion: 0.0.1\n")
    (dist / "entry_points.txt").write_text("[genfw]\nbroken = broken_mod\n")
    (root / "broken_mod.py").write_text(f"raise RuntimeError({error!r})\n")
    return root


@pytest.mark.parametrize(
    "error",
    [
        "the broken plugin cannot be imported",
        pytest.param(
            "the broken plugin cannot be imported\nsecond line of the message", id="multi-line-message"
        ),
    ],
)
def test_plugin_that_raises_on_import_is_one_line_and_can_be_skipped(tmp_path, error):
    site = broken_distribution(tmp_path / "site", error)
    proc = genfw("list", "loss", path=[site], cwd=tmp_path)
    assert proc.returncode == 2, explain(proc)
    assert proc.stdout == "" and "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    (line,) = lines
    assert line.startswith("genfw: error: error importing plugin 'broken' (distribution broken-pkg 0.0.1)")
    assert "RuntimeError: the broken plugin cannot be imported" in line

    # The message says how to get past it; doing what it says works.
    suggested = re.search(rf"{ENV_LOAD}=([\w,-]+)", line)
    assert suggested, line
    names = suggested.group(1).split(",")
    assert "broken" not in names and {"gan", "losses", "toy2d"} <= set(names)
    proc = genfw("list", "loss", path=[site], cwd=tmp_path, **{ENV_LOAD: ",".join(names)})
    assert proc.returncode == 0, explain(proc)
    assert "non_saturating [adversarial]" in proc.stdout
    # Naming only the plugins a run needs is enough to train.
    proc = genfw(
        "train",
        "--plugin",
        "gan",
        "--dataset",
        "toy2d",
        "--steps",
        "2",
        "--out",
        tmp_path / "run",
        "--no-progress",
        path=[site],
        cwd=tmp_path,
        **{ENV_LOAD: "gan,losses,networks,priors,toy2d,mode_coverage"},
    )
    assert proc.returncode == 0, explain(proc)
