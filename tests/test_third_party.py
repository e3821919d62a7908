"""Packages from outside the repository plug in through their entry points, as after ``pip install``.

The four examples in ``examples/`` are third-party packages: ``genfw-ragan`` (a loss,
``relativistic_average``), ``genfw-laplace`` (a prior, ``laplace``), ``genfw-bigan`` (a whole
variant, ``bigan``) and ``genfw-cr`` (a regulariser, ``consistency``, and a callback, ``lr_warmup``,
written only against ``genfw.contracts``). A session fixture copies them to a temp dir and runs the
real ``pip install --no-deps --no-build-isolation --no-index --target SITE`` on the copies. pip
builds a wheel from each example's own ``pyproject.toml`` with the venv's setuptools (torch 2.13
requires setuptools >= 77, whose ``bdist_wheel`` is built in; no network) and unpacks it,
``*.dist-info/entry_points.txt`` included, into ``SITE``. Every ``genfw`` command then runs in a subprocess
(``python -m genfw``) with ``SITE`` on its ``PYTHONPATH``, where ``importlib.metadata`` finds the
distributions exactly as in site-packages.

Why not ``pip install -e`` into the test venv: that venv is shared (other test sessions and
developers use it at the same time, and would briefly see extra plugins), and a run killed before
its teardown would leave them installed. ``--target`` exercises the same build and the same
metadata with nothing to undo: the temp dir goes away with the session. Building from copies keeps
``build/`` and ``*.egg-info`` out of the checkout. (``tests/test_new_plugin.py`` does the
``pip install -e`` of a scaffolded package, into a throw-away venv.)

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

from genfw.hookspecs import KINDS
from genfw.plugins import ENV_LOAD

ROOT = Path(__file__).resolve().parents[1]
# folder -> (entry-point name, module, {kind: [components]})
EXAMPLES = {
    "genfw-ragan": ("ragan", "genfw_ragan", {"loss": ["relativistic_average"]}),
    "genfw-laplace": ("laplace", "genfw_laplace", {"prior": ["laplace"]}),
    "genfw-bigan": ("bigan", "genfw_bigan", {"variant": ["bigan"]}),
    "genfw-cr": ("cr", "genfw_cr", {"regulariser": ["consistency"], "callback": ["lr_warmup"]}),
}
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


PIP_OFFLINE = ["-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index"]
PIP_OFFLINE += ["--disable-pip-version-check", "--quiet"]


@pytest.fixture(scope="session")
def examples(tmp_path_factory) -> tuple[Path, Path]:
    """(folder with copies of the examples' sources, the SITE dir pip installed them into)."""
    tmp = tmp_path_factory.mktemp("examples")
    src, site = tmp / "src", tmp / "site"
    for folder in EXAMPLES:
        shutil.copytree(
            ROOT / "examples" / folder,
            src / folder,
            ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", ".*_cache"),
        )
    proc = run([*PIP_OFFLINE, "--target", str(site), *(str(src / f) for f in EXAMPLES)])
    assert proc.returncode == 0, f"pip could not build and install the examples offline:\n{explain(proc)}"
    for name, module, _ in EXAMPLES.values():
        (dist_info,) = site.glob(f"{module}-0.1.0.dist-info")
        assert f"[genfw]\n{name} = {module}" in (dist_info / "entry_points.txt").read_text()
    return src, site


def test_plugins_lists_each_distribution_and_its_components(examples):
    _, site = examples
    proc = genfw("plugins", "--json", path=[site])
    assert proc.returncode == 0, explain(proc)
    rows = {row["name"]: row for row in json.loads(proc.stdout)}
    for folder, (name, module, components) in EXAMPLES.items():
        assert rows[name] == {
            "name": name,
            "distribution": folder,
            "version": "0.1.0",
            "module": module,
            "hooks": sorted(KINDS[kind] for kind in components),
            "components": components,
        }
    assert rows["losses"]["distribution"] == "genfw"  # the built-ins are still there
    # The plain listing names the distribution and version too.
    proc = genfw("plugins", path=[site])
    assert "ragan  (genfw-ragan 0.1.0, genfw_ragan)" in proc.stdout, proc.stdout


def test_list_shows_the_components_with_their_roles_slots_and_options(examples):
    _, site = examples
    proc = genfw("list", "--json", path=[site])
    assert proc.returncode == 0, explain(proc)
    rows = {(r["kind"], r["name"]): r for r in json.loads(proc.stdout)}
    loss = rows["loss", "relativistic_average"]
    assert loss["role"] == "adversarial" and "Jolicoeur-Martineau 2019" in loss["help"]
    assert loss["plugin"] == "ragan" and loss["distribution"] == "genfw-ragan"
    assert loss["options"] == {"form": {"type": "str", "default": "sgan"}}
    prior = rows["prior", "laplace"]
    assert prior["distribution"] == "genfw-laplace" and prior["options"]["scale"]["default"] == pytest.approx(
        0.7071068
    )
    bigan = rows["variant", "bigan"]
    assert bigan["distribution"] == "genfw-bigan" and list(bigan["phases"]) == ["critic", "generator"]
    assert bigan["phases"]["generator"]["provides"]["real"] == "Tensor (B, *shape)"
    assert bigan["players"] == {"generators": ["generator"], "critics": ["critic"], "encoders": ["encoder"]}
    assert set(bigan["slots"]) == {"generator", "encoder", "critic", "prior", "loss"}
    consistency = rows["regulariser", "consistency"]
    assert consistency["distribution"] == "genfw-cr" and "Zhang et al. 2020" in consistency["help"]
    assert consistency["phases"] == ["critic"]
    assert consistency["needs"] == ["real", "fake", "critic", "labels"]
    assert consistency["options"]["weight_real"] == {"type": "float", "default": 10.0}
    warmup = rows["callback", "lr_warmup"]
    assert warmup["distribution"] == "genfw-cr" and "Goyal et al. 2017" in warmup["help"]
    assert warmup["options"] == {
        "steps": {"type": "int", "default": 1000},
        "start_factor": {"type": "float", "default": 0.1},
    }


def test_without_the_package_the_loss_is_unknown(tmp_path):
    proc = genfw(
        "train", "--plugin", "gan", "--loss", "relativistic_average", "--out", tmp_path / "run", cwd=tmp_path
    )
    assert proc.returncode == 2, explain(proc)
    assert "unknown loss 'relativistic_average'" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()


def records_of(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


QUICK = ("--steps", "20", "--train.log_every", "10", "--no-progress", "--batch-size", "32")


@pytest.mark.slow
def test_train_with_the_third_party_loss(examples, tmp_path):
    _, site = examples
    out = tmp_path / "run"
    proc = genfw(
        "train", "--plugin", "gan", "--dataset", "toy2d", "--loss", "relativistic_average",
        "--loss.form", "hinge", *QUICK, "--out", out, path=[site], cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, explain(proc)
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["loss"] == {"name": "relativistic_average", "form": "hinge"}
    losses = [r for r in records_of(out) if "critic/loss" in r]
    assert [r["step"] for r in losses] == [10, 20]
    for r in losses:
        # Hinge terms are non-negative: a finite objective >= 0 for both players.
        assert math.isfinite(r["critic/loss"]) and r["critic/loss"] >= 0, r
        assert math.isfinite(r["generator/loss"]) and r["generator/loss"] >= 0, r
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["step"] == 20 and summary["critic/loss"] == losses[-1]["critic/loss"]


@pytest.mark.slow
def test_train_a_vae_with_the_third_party_prior(examples, tmp_path):
    # The VAE needs the prior's closed-form KL (kl_from_normal), which genfw-laplace provides.
    _, site = examples
    out = tmp_path / "run"
    proc = genfw(
        "train", "--plugin", "vae", "--dataset", "toy2d", "--prior", "laplace", "--prior.scale", "0.5",
        *QUICK, "--out", out, path=[site], cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, explain(proc)
    assert yaml.safe_load((out / "config.yaml").read_text())["prior"] == {"name": "laplace", "scale": 0.5}
    losses = [r for r in records_of(out) if any(k.endswith("/loss") for k in r)]
    assert [r["step"] for r in losses] == [10, 20]
    assert all(math.isfinite(v) for r in losses for k, v in r.items() if k.endswith("/loss"))


@pytest.mark.slow
def test_train_and_sample_the_third_party_variant(examples, tmp_path):
    _, site = examples
    out = tmp_path / "run"
    proc = genfw(
        "train", "--plugin", "bigan", "--dataset", "toy2d", "--plugin.latent_dim", "2", *QUICK,
        "--out", out, path=[site], cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, explain(proc)
    assert yaml.safe_load((out / "config.yaml").read_text())["variant"]["name"] == "bigan"
    last = [r for r in records_of(out) if "critic/loss" in r][-1]
    assert last["step"] == 20 and math.isfinite(last["critic/loss"]) and math.isfinite(last["generator/loss"])
    # The exported generator samples from the run folder, through the plugin's own sampler.
    proc = genfw("sample", out, "-n", "16", "--out", tmp_path / "s.safetensors", path=[site], cwd=tmp_path)
    assert proc.returncode == 0, explain(proc)


@pytest.mark.slow
def test_train_and_resume_with_the_third_party_remedies(examples, tmp_path):
    # A regulariser and a callback of one package, both attached with --regulariser.
    _, site = examples
    out = tmp_path / "run"
    proc = genfw(
        "train", "--plugin", "gan", "--critic", "dcgan", "--generator", "dcgan", "--dataset", "digits",
        "--regulariser", "consistency", "--regulariser.consistency.weight_fake", "10",
        "--regulariser", "lr_warmup", "--regulariser.lr_warmup.steps", "8", "--steps", "2",
        "--train.log_every", "1", "--train.checkpoint_every", "2", "--batch-size", "16", "--no-progress",
        "--out", out, path=[site], cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, explain(proc)
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    remedies = {**cfg.get("regularisers", {}), **cfg.get("callbacks", {})}
    assert remedies == {
        "consistency": {"weight_real": 10.0, "weight_fake": 10.0, "translate": None, "flip": True},
        "lr_warmup": {"steps": 8, "start_factor": 0.1},
    }
    proc = genfw("train", "--resume", out, "--steps", "4", "--no-progress", path=[site], cwd=tmp_path)
    assert proc.returncode == 0, explain(proc)
    logs = [r for r in records_of(out) if "critic/loss" in r]
    assert [r["step"] for r in logs] == [1, 2, 3, 4]
    for r in logs:  # CR + bCR on the critic; both players warm up by 0.1 + 0.9 * s / 8 in step s
        assert math.isfinite(r["critic/consistency"]) and r["critic/consistency"] > 0, r
        factor = pytest.approx(0.1 + 0.9 * (r["step"] - 1) / 8)
        assert r["critic/lr_factor"] == factor and r["generator/lr_factor"] == factor, r
    # The resumed run kept the base rates (the optimisers came back with warmed-down ones): the
    # rate of step 3, the last trained, is 2e-4 times its factor.
    state = json.loads((out / "checkpoints" / "step_0000004" / "state.json").read_text())["state"]
    assert state["callbacks"]["lr_warmup"] == {"base_lr/critic/0": 2e-4, "base_lr/generator/0": 2e-4}
    for phase in ("critic", "generator"):
        assert state["optimizers"][phase]["param_groups"][0]["lr"] == pytest.approx(
            2e-4 * (0.1 + 0.9 * 3 / 8)
        )


def test_the_packages_own_tests_pass(examples):
    # One pytest process for the four packages' tests (their test files have distinct names).
    src, site = examples
    proc = run(
        ["-m", "pytest", "-q", "-p", "no:cacheprovider", *(str(src / f / "tests") for f in EXAMPLES)],
        path=[site],
        cwd=src,
    )
    assert proc.returncode == 0, explain(proc)
    assert re.search(r"\b\d+ passed\b", proc.stdout) and "failed" not in proc.stdout, proc.stdout
    # ragan 9, laplace 8, bigan 4, cr 20 (its resumed run included: installed, the CLI sees it)
    assert int(re.search(r"(\d+) passed", proc.stdout).group(1)) >= 41, proc.stdout
    assert "skipped" not in proc.stdout, proc.stdout


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
