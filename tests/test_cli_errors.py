"""Bad input through the ``genfw`` command is one line, ``genfw: error: ...``, naming what was wrong
and what is valid, with exit code 2, never a traceback, and nothing written (issue 11, items 5, 7).
"""

from __future__ import annotations

import math
import os
import random
import types
import typing
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import pytest
import torch
import yaml

from genfw import cli
from genfw import train as train_mod
from genfw.config import MAX_SEED, TRAIN, load_file
from genfw.errors import GenfwError
from genfw.plugins import get_registry
from genfw.registry import Component, PluginInfo, structure_options
from genfw.validators import AnyFloat
from tests.conftest import QUICK

TOY = ("--plugin", "gan", "--dataset", "toy2d", "--generator.hidden", "[8]", "--critic.hidden", "[8]")


def one_line_error(run_cli: Any, *args: Any) -> str:
    """Run ``genfw ARGS``; assert exit code 2 and a single ``genfw: error:`` line; return it."""
    code, _, err = run_cli(*args)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("genfw: error: "), err
    return lines[0]


# --- every float option is finite unless its type says otherwise ---------------------------------


def _has_float(tp: Any) -> bool:
    return tp is float or any(_has_float(a) for a in typing.get_args(tp))


def _holding(tp: Any, value: float) -> Any:
    """A raw option value of type ``tp`` with ``value`` in every float place."""
    if tp is float:
        return value
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return _holding(next(a for a in args if _has_float(a)), value)
    if origin in (list, tuple) and (len(args) == 1 or args[-1] is Ellipsis):
        return [_holding(args[0], value)]
    if origin is tuple:
        return [_holding(a, value) if _has_float(a) else a() for a in args]
    if origin is dict:
        return {"k": _holding(args[1], value)}
    raise AssertionError(f"the sweep cannot fill an option of type {tp}; teach _holding")


def _float_options() -> list[tuple[Component, str, Any]]:
    out = []
    for component in [*get_registry(), TRAIN]:
        attrs.resolve_types(component.options)
        out += [(component, f.name, f.type) for f in attrs.fields(component.options) if _has_float(f.type)]
    return out


FLOAT_OPTIONS = _float_options()


def _required(component: Component) -> dict[str, Any]:
    """Placeholders for required options (only strings so far: a data set's path)."""
    fields = [f for f in attrs.fields(component.options) if f.default is attrs.NOTHING]
    assert all(f.type is str for f in fields), fields
    return {f.name: "x" for f in fields}


def test_the_sweep_covers_the_float_options():
    names = {(c.kind, c.name, n) for c, n, _ in FLOAT_OPTIONS}
    assert {("variant", "wgan-gp", "lr_critic"), ("regulariser", "mmd", "scales")} <= names
    assert ("section", "train", "holdout") in names and len(names) > 40


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
@pytest.mark.parametrize(
    ("component", "option", "tp"), FLOAT_OPTIONS, ids=[f"{c.kind}-{c.name}-{n}" for c, n, _ in FLOAT_OPTIONS]
)
def test_every_float_option_refuses_non_finite_values(component, option, tp, value):
    raw = {**_required(component), option: _holding(tp, value)}
    with pytest.raises(
        GenfwError, match=rf"^x\.{option}(\[0\]|\.k)?: expected a finite number, got {value}; "
    ):
        structure_options(component, raw, where="x")


def test_an_option_typed_any_float_may_be_infinite():
    @attrs.define
    class Options:
        limit: AnyFloat = 1.0
        scale: float = 1.0

    component = Component("loss", "l", object, Options, PluginInfo("p"))
    assert structure_options(component, {"limit": math.inf}, where="loss").limit == math.inf
    assert math.isnan(structure_options(component, {"limit": math.nan}, where="loss").limit)
    with pytest.raises(GenfwError, match=r"^loss\.scale: expected a finite number, got inf; "):
        structure_options(component, {"scale": math.inf}, where="loss")
    # Past the floats: an integer too large for one is not finite either.
    with pytest.raises(GenfwError, match=r"^loss\.scale: expected a finite number, got inf; "):
        structure_options(component, {"scale": 10**400}, where="loss")


def test_infinite_learning_rate_is_refused_before_the_run_starts(tmp_path, run_cli):
    line = one_line_error(
        run_cli, "train", *TOY, "--plugin", "wgan-gp", "--plugin.lr_critic", ".inf", "--out", tmp_path / "r"
    )
    assert "variant.lr_critic: expected a finite number, got inf; options of variant 'wgan-gp'" in line
    assert not (tmp_path / "r").exists()


def test_an_attrs_validator_message_has_no_attribute_repr(tmp_path, run_cli):
    # TrainOptions.mixed_precision uses attrs.validators.in_, whose ValueError carries the Attribute.
    line = one_line_error(run_cli, "train", *TOY, "--mixed-precision", "fp8", "--out", tmp_path / "r")
    assert "train: 'mixed_precision' must be in ('no', 'fp16', 'bf16') (got 'fp8'); options of" in line
    assert "Attribute(" not in line
    assert not (tmp_path / "r").exists()


def test_a_misspelt_option_names_the_nearest(tmp_path, run_cli):
    line = one_line_error(run_cli, "train", *TOY, "--train.stpes", "3", "--out", tmp_path / "r")
    assert "train.stpes: unknown option (did you mean steps?); options of section 'train'" in line
    line = one_line_error(run_cli, "train", *TOY, "--generator.zzz", "3", "--out", tmp_path / "r")
    assert "generator.zzz: unknown option; options of generator 'mlp'" in line  # nothing close: no guess


# --- seeds ---------------------------------------------------------------------------------------


def test_max_seed_is_what_set_seed_takes():
    # Accelerate's set_seed seeds random, numpy and torch; numpy's legacy seeding is the narrowest.
    from accelerate.utils import set_seed

    state = random.getstate(), np.random.get_state(), torch.get_rng_state()
    try:
        set_seed(0)
        set_seed(MAX_SEED)
        for bad in (-1, MAX_SEED + 1):
            with pytest.raises(ValueError, match="Seed must be between 0 and 2\\*\\*32 - 1"):
                set_seed(bad)
    finally:
        random.setstate(state[0]), np.random.set_state(state[1]), torch.set_rng_state(state[2])
    assert MAX_SEED == 2**32 - 1


@pytest.mark.parametrize("seed", ["-1", "5000000000", str(2**32)])
def test_train_seed_out_of_range_is_refused(tmp_path, run_cli, seed):
    line = one_line_error(run_cli, "train", *TOY, "--seed", seed, "--out", tmp_path / "r")
    assert f"train: seed must be in [0, 4294967295], got {seed}; options of section 'train'" in line
    assert not (tmp_path / "r").exists()


def test_train_takes_the_largest_seed(tmp_path, run_cli):
    run = tmp_path / "r"
    code, _, err = run_cli("train", *TOY, "--steps", "2", "--seed", str(MAX_SEED), "--out", run, *QUICK)
    assert code == 0, err
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["seed"] == MAX_SEED


# --- config files --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "where"),
    [(b"\xff\xfe t\x00r\x00", "byte 0 is 0xff"), (b"train:\n  steps: 3 # caf\xe9\n", "byte 23 is 0xe9")],
)
def test_config_that_is_not_utf8_is_refused(tmp_path, run_cli, data, where):
    path = tmp_path / "run.yaml"
    path.write_bytes(data)
    line = one_line_error(run_cli, "train", *TOY, "--config", path, "--out", tmp_path / "r")
    assert line == f"genfw: error: config file {path} is not UTF-8 text ({where}); save it as UTF-8"
    assert not (tmp_path / "r").exists()


def test_config_with_a_utf8_byte_order_mark_is_read(tmp_path):
    for name, text in [("a.toml", "[train]\nsteps = 3\n"), ("a.yaml", "train: {steps: 3}\n")]:
        (tmp_path / name).write_bytes(b"\xef\xbb\xbf" + text.encode())
        assert load_file(tmp_path / name) == {"train": {"steps": 3}}


def test_a_misspelt_config_key_names_the_nearest(tmp_path, run_cli):
    line = one_line_error(run_cli, "train", *TOY, "--set", "trian.steps=3", "--out", tmp_path / "r")
    assert line.endswith(
        "critic, dataset, generator, loss, metrics, prior, regularisers, train, variant (did you mean train?)"
    )


# --- the run folder: checked before the data set is built ---------------------------------------


@pytest.fixture
def no_build(monkeypatch):
    """``genfw.train.build`` (data set and networks) replaced by a recorder that refuses."""
    calls = []

    def build(cfg):
        calls.append(cfg)
        raise GenfwError("the data set was built")

    monkeypatch.setattr(train_mod, "build", build)
    return calls


def _tree(root):
    return sorted((str(p), p.is_dir() or p.read_bytes()) for p in root.rglob("*"))


def test_out_under_a_regular_file_is_refused_before_the_build(tmp_path, run_cli, no_build):
    (tmp_path / "notes").write_text("mine")
    before = _tree(tmp_path)
    for out in (tmp_path / "notes" / "run", tmp_path / "notes" / "a" / "b"):
        line = one_line_error(run_cli, "train", *TOY, "--out", out)
        assert line == (
            f"genfw: error: cannot create run folder {out}: {tmp_path / 'notes'} is a file, not a folder; "
            f"choose another --out"
        )
    assert no_build == [] and _tree(tmp_path) == before


@pytest.mark.skipif(
    not Path("/proc/self").is_dir(), reason="needs Linux's /proc, where nobody may create folders"
)
def test_out_where_no_folder_can_be_made_is_refused_before_the_build(run_cli, no_build):
    line = one_line_error(run_cli, "train", *TOY, "--out", "/proc/genfw-test/run")
    assert line.startswith(
        "genfw: error: cannot create run folder /proc/genfw-test/run: cannot write in /proc ("
    )
    assert line.endswith("); choose another --out") and no_build == []


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes in read-only folders")
def test_out_in_a_read_only_folder_is_refused_before_the_build(tmp_path, run_cli, no_build):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        line = one_line_error(run_cli, "train", *TOY, "--out", locked / "run")
    finally:
        locked.chmod(0o755)
    assert f"cannot create run folder {locked / 'run'}: cannot write in {locked} (Permission denied)" in line
    assert no_build == [] and list(locked.iterdir()) == []


def test_the_writability_check_leaves_nothing_behind(tmp_path):
    train_mod.check_run_dir(tmp_path / "a" / "b", resume=False, overwrite=False)
    (tmp_path / "empty").mkdir()
    train_mod.check_run_dir(tmp_path / "empty", resume=False, overwrite=False)
    assert _tree(tmp_path) == [(str(tmp_path / "empty"), True)]


# --- the command line itself ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("cli") / "run"
    assert cli.main(["train", *TOY, "--steps", "2", "--out", str(run), *QUICK]) == 0
    return run


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["-n", "0"], "argument -n: n must be at least 1, got 0; see genfw sample --help"),
        (["-n", "-5"], "argument -n: n must be at least 1, got -5; see genfw sample --help"),
        (["-n", "many"], "argument -n: expected an integer, got 'many'; see genfw sample --help"),
        (
            ["--seed", "-1"],
            "argument --seed: seed must be in [0, 4294967295], got -1; see genfw sample --help",
        ),
        (["--seed", str(2**64)], f"argument --seed: seed must be in [0, 4294967295], got {2**64};"),
    ],
)
def test_sample_refuses_bad_counts_and_seeds(tmp_path, run_cli, toy_run, args, expected):
    out = tmp_path / "s.png"
    line = one_line_error(run_cli, "sample", toy_run, *args, "--out", out)
    assert line.startswith(f"genfw: error: {expected}")
    assert not out.exists()


def test_argparse_mistakes_are_one_line(run_cli):
    line = one_line_error(run_cli, "sample")
    assert line == "genfw: error: the following arguments are required: run; see genfw sample --help"
    line = one_line_error(run_cli, "train-evaluator", "--dataset", "digits", "--steps", "0")
    assert (
        line
        == "genfw: error: argument --steps: steps must be at least 1, got 0; see genfw train-evaluator --help"
    )


@pytest.mark.parametrize("args", [["--resume"], ["--resume", "--steps", "4"]])
def test_resume_without_a_folder_asks_for_one(tmp_path, run_cli, monkeypatch, args):
    monkeypatch.chdir(tmp_path)
    line = one_line_error(run_cli, "train", *args)
    assert line == "genfw: error: --resume needs the run folder: --resume RUN_DIR (or --resume --out RUN_DIR)"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["train", *TOY, "--stpes", "3"], "unknown option --stpes; did you mean --steps? (--help lists"),
        (["train", *TOY, "--overwite"], "unknown option --overwite; did you mean --overwrite? (--help"),
        (
            ["train", *TOY, "--generater.hidden", "[3]"],
            "--generater.hidden; did you mean --generator.hidden?",
        ),
        (["train", *TOY, "--xyzzy", "3"], "unknown option --xyzzy (--help lists the options, genfw list"),
        (
            ["sample", "RUN", "--seeed", "3"],
            "unrecognized arguments: --seeed 3 (did you mean --seed?); see genfw",
        ),
    ],
)
def test_a_misspelt_flag_names_the_nearest(tmp_path, run_cli, args, expected):
    line = one_line_error(run_cli, *args, "--out", tmp_path / "r")
    assert expected in line
    assert not (tmp_path / "r").exists()


def test_train_help_lists_the_shortcuts(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["train", "--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0
    for flag in ("--steps N", "--batch-size N", "--seed N", "--mixed-precision MODE"):
        assert flag in out
    assert "random seed, 0 .. 4294967295 (train.seed, default 0)" in " ".join(out.split())


def test_shortcuts_still_set_train_options_and_dotted_flags_win(tmp_path, run_cli):
    run = tmp_path / "r"
    code, _, err = run_cli(
        "train", *TOY, "--steps", "5", "--train.steps", "2", "--batch_size", "16", "--out", run, *QUICK
    )
    assert code == 0, err
    train = yaml.safe_load((run / "config.yaml").read_text())["train"]
    assert train["steps"] == 2 and train["batch_size"] == 16
