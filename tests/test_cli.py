"""The ``genfw`` command as a user types it: the main job, sample, eval, plugins, list, and
bad input (one line, exit code 2, no traceback, nothing already written touched)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import safetensors.torch
from PIL import Image

from tests.conftest import QUICK

TINY = ("--generator.hidden", "[16, 16]", "--critic.hidden", "[16, 16]")


def test_readme_main_job_writes_a_complete_run(tmp_path, run_cli):
    run = tmp_path / "wae"
    code, out, err = run_cli(
        "train", "--plugin", "wae", "--prior", "spike_slab", "--steps", "30", "--out", run, *QUICK
    )
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["step"] == 30 and summary["run"] == str(run)
    assert "autoencoder/mmd" in summary and "autoencoder/reconstruction" in summary
    cfg = (run / "config.yaml").read_text()
    assert "name: spike_slab" in cfg and "name: wae" in cfg and "name: digits" in cfg
    assert Image.open(run / "samples" / "step_0000030.png").size[0] > 64
    assert any((run / "tb").glob("events.out.tfevents.*"))
    assert (run / "checkpoints" / "step_0000030" / "state.safetensors").is_file()

    # genfw sample: a PNG grid and a tensor file, from the run folder alone.
    code, out, err = run_cli("sample", run, "-n", "9", "--out", tmp_path / "s.png")
    assert code == 0, err and (tmp_path / "s.png").is_file()
    code, out, err = run_cli("sample", run, "-n", "5", "--out", tmp_path / "s.safetensors")
    assert code == 0, err
    samples = safetensors.torch.load_file(str(tmp_path / "s.safetensors"))["samples"]
    assert samples.shape == (5, 1, 8, 8) and samples.abs().max() <= 1
    code, _, err = run_cli("sample", run, "-n", "5", "--out", tmp_path / "s.safetensors")
    assert code == 2 and "already exists" in err  # never overwritten by mistake

    # --resume continues from the checkpoint to more steps.
    code, out, err = run_cli("train", "--resume", run, "--steps", "35", *QUICK)
    assert code == 0, err
    assert json.loads(out.strip().splitlines()[-1])["step"] == 35


def test_eval_on_a_toy_run(tmp_path, run_cli):
    run = tmp_path / "g"
    code, _, err = run_cli(
        "train", "--plugin", "gan", "--dataset", "toy2d", "--steps", "5", "--out", run, *TINY, *QUICK
    )
    assert code == 0, err
    code, out, err = run_cli(
        "eval", run, "--metric", "mode_coverage", "--metric.mode_coverage.num_samples", "500"
    )
    assert code == 0, err
    results = json.loads(out)
    assert results["mode_coverage/modes_total"] == 8
    assert 0 <= results["mode_coverage/high_quality"] <= 1
    assert json.loads((run / "eval.json").read_text()) == results


def test_plugins_and_list(run_cli):
    code, out, _ = run_cli("plugins", "--json")
    assert code == 0
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["wae"]["distribution"] == "genfw" and rows["wae"]["components"] == {"variant": ["wae"]}
    assert rows["priors"]["hooks"] == ["genfw_register_priors"]
    code, out, _ = run_cli("list", "prior")
    assert code == 0 and "spike_slab" in out and "--prior.alpha float = 0.5" in out
    # Each option is shown as the flag that sets it.
    code, out, _ = run_cli("list", "callback")  # a callback is attached as a regulariser is
    assert code == 0 and "--regulariser.ema.decay float = 0.999" in out
    code, out, _ = run_cli("list", "metric")
    assert code == 0 and "--metric.kid.subset_size int = 1000" in out
    code, out, _ = run_cli("list", "variant", "--json")
    wae = next(r for r in json.loads(out) if r["name"] == "wae")
    assert wae["slots"]["prior"]["default"] == "normal" and wae["regularisers"] == ["mmd"]


def test_plugins_are_listed_even_when_two_register_one_name(run_cli, monkeypatch):
    import types

    import genfw
    from genfw import cli
    from genfw.plugins import PluginHost
    from genfw.registry import PluginInfo
    from genfw_plugins.losses import NonSaturatingLoss

    host = PluginHost()
    for name in ("a", "b"):
        ns = types.SimpleNamespace(
            genfw_register_losses=genfw.hookimpl(lambda register: register("x", NonSaturatingLoss))
        )
        host.add(ns, PluginInfo(name, f"dist-{name}", "1"))
    monkeypatch.setattr(cli, "get_host", lambda: host)
    code, out, err = run_cli("plugins")
    assert code == 2
    assert "a  (dist-a 1" in out and "b  (dist-b 1" in out
    assert "loss 'x' is registered twice" in err and "GENFW_SKIP_PLUGINS=b" in err


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["train", "--plugin", "nope"],
            "unknown variant 'nope' for variant; registered variants: aae, acgan,",
        ),
        (
            ["train", "--plugin", "wae", "--prior", "nope"],
            "unknown prior 'nope' for prior; registered priors:",
        ),
        (["train", "--plugin", "wae", "--prior.beta", "1"], "prior.beta: unknown option"),
        (
            ["train", "--plugin", "wae", "--prior", "spike_slab", "--prior.alpha", "high"],
            "prior.alpha: expected a number, got 'high'",
        ),
        (
            ["train", "--plugin", "gan", "--encoder", "mlp"],
            "variant 'gan' has no slot 'encoder'; its slots: critic, generator, loss, prior",
        ),
        (
            ["train", "--plugin", "gan", "--dataset", "image-folder", "--dataset.path", "/no/such/folder"],
            "/no/such/folder",
        ),
        (
            ["train", "--plugin", "gan", "--config", "/no/such.yaml"],
            "config file /no/such.yaml does not exist",
        ),
        (
            ["train", "--plugin", "vae", "--regulariser", "weight_clipping"],
            "regulariser 'weight_clipping' applies to critic phases",
        ),
        (["sample", "/no/run"], "/no/run is not a genfw run folder"),
        (["list", "widgets"], "unknown kind 'widgets'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, run_cli, args, expected):
    code, _, err = run_cli(*args, "--out", tmp_path / "never") if args[0] == "train" else run_cli(*args)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("genfw: error: "), err
    assert expected in lines[0]
    assert not (tmp_path / "never").exists()


def test_existing_run_is_refused_without_resume_or_overwrite(tmp_path, run_cli):
    run = tmp_path / "r"
    args = ("train", "--plugin", "gan", "--dataset", "toy2d", "--steps", "2", "--out", run, *TINY, *QUICK)
    assert run_cli(*args)[0] == 0
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    code, _, err = run_cli(*args)
    assert code == 2 and "already exists; pass --resume to continue it, --overwrite to replace it" in err
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    code, _, err = run_cli(*args, "--overwrite")
    assert code == 0, err


def test_resume_refuses_changes_beyond_train(tmp_path, run_cli):
    run = tmp_path / "r"
    assert (
        run_cli(
            "train", "--plugin", "gan", "--dataset", "toy2d", "--steps", "2", "--out", run, *TINY, *QUICK
        )[0]
        == 0
    )
    code, _, err = run_cli("train", "--resume", run, "--prior", "uniform")
    assert code == 2 and "on --resume only train options may change" in err


def test_console_script_runs_without_traceback(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "genfw",
            "train",
            "--plugin",
            "wae",
            "--prior",
            "spike_slab",
            "--prior.alpha",
            "0",
            "--out",
            str(tmp_path / "x"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "genfw: error: prior: alpha must be in (0, 1], got 0.0; options of prior 'spike_slab': alpha: float = 0.5"
    )


def test_genfw_debug_prints_the_full_traceback_of_a_user_or_plugin_error(tmp_path, run_cli, monkeypatch):
    from importlib import metadata

    from genfw import cli
    from genfw.plugins import PluginHost

    monkeypatch.delenv("GENFW_DEBUG", raising=False)
    one_line = "genfw: error: unknown variant 'nope' for variant; registered variants: "
    code, _, err = run_cli("train", "--plugin", "nope", "--out", tmp_path / "never")
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith(one_line)
    # GENFW_DEBUG=1: the traceback first, on stderr, then the same one line; "0" is off.
    monkeypatch.setenv("GENFW_DEBUG", "1")
    code, out, err = run_cli("train", "--plugin", "nope", "--out", tmp_path / "never")
    lines = err.splitlines()
    assert code == 2 and out == "" and not (tmp_path / "never").exists()
    assert lines[0] == "Traceback (most recent call last):" and lines[-1].startswith(one_line)
    assert "genfw.errors.GenfwError: unknown variant 'nope'" in err and "in resolve" in err
    monkeypatch.setenv("GENFW_DEBUG", "0")
    assert len(run_cli("train", "--plugin", "nope", "--out", tmp_path / "never")[2].splitlines()) == 1

    # A plugin that fails to import: its own frame and error, which the one line only summarises.
    (tmp_path / "genfw_debug_broken.py").write_text(
        "def register():\n    raise RuntimeError('boom in the plugin')\n\n\nregister()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    ep = metadata.EntryPoint(name="broken", value="genfw_debug_broken", group="genfw")

    def host() -> PluginHost:
        h = PluginHost()
        h.load_entry_points([ep])
        return h

    monkeypatch.setattr(cli, "get_host", host)
    monkeypatch.delenv("GENFW_DEBUG")
    code, _, err = run_cli("plugins")
    assert code == 2 and len(err.splitlines()) == 1
    assert err.startswith(
        "genfw: error: error importing plugin 'broken' (distribution (unknown)): RuntimeError: boom in the "
        "plugin; to skip it, set GENFW_SKIP_PLUGINS=broken"
    )
    monkeypatch.setenv("GENFW_DEBUG", "1")
    code, _, debug = run_cli("plugins")
    assert code == 2 and debug.splitlines()[-1] == err.strip()
    assert f'File "{tmp_path / "genfw_debug_broken.py"}", line 2, in register' in debug
    assert (
        "raise RuntimeError('boom in the plugin')" in debug
        and "\nRuntimeError: boom in the plugin\n" in debug
    )
    assert "genfw.errors.GenfwError: error importing plugin 'broken'" in debug


def test_metric_flag_adds_to_the_data_sets_default_and_the_run_says_which(tmp_path, run_cli, monkeypatch):
    import math

    import yaml

    monkeypatch.setenv("GENFW_CACHE", str(tmp_path / "cache"))
    base = ("train", "--plugin", "gan", "--dataset", "toy2d", "--steps", "2", *TINY, *QUICK)
    fid = ("--metric", "fid", "--metric.fid.extractor", "raw", "--metric.fid.num_samples", "200")
    code, out, err = run_cli(*base, *fid, "--out", tmp_path / "both")
    assert code == 0, err
    assert "genfw: metrics: mode_coverage, fid (at the end)" in err.splitlines()
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["mode_coverage/modes_total"] == 8 and math.isfinite(summary["fid/fid"])
    config = yaml.safe_load((tmp_path / "both" / "config.yaml").read_text())
    assert list(config["metrics"]) == ["mode_coverage", "fid"]
    # --no-default-metrics: the named ones only, or none.
    code, out, err = run_cli(*base, *fid, "--no-default-metrics", "--out", tmp_path / "fid")
    assert code == 0, err
    assert "genfw: metrics: fid (at the end)" in err.splitlines()
    assert not any(k.startswith("mode_coverage/") for k in json.loads(out.strip().splitlines()[-1]))
    code, out, err = run_cli(
        *base, "--no-default-metrics", "--train.eval_every", "1", "--out", tmp_path / "no"
    )
    assert code == 0 and "genfw: metrics: none" in err.splitlines(), err
    # A resumed run keeps its metrics: the flag is refused in one line, the run untouched.
    before = (tmp_path / "fid" / "config.yaml").read_text()
    code, _, err = run_cli("train", "--resume", tmp_path / "fid", "--steps", "3", "--no-default-metrics")
    assert code == 2 and err.strip() == (
        "genfw: error: --no-default-metrics is for a new run; --resume keeps the run's metrics"
    )
    assert (tmp_path / "fid" / "config.yaml").read_text() == before
