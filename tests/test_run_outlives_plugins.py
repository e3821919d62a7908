"""A run outlives its plugins: ``run.json`` records where every component came from (plugin,
distribution, version); ``genfw sample`` reads only the variant, its slots and regularisers (not
the data set, not the metrics), ``genfw eval --metric X`` only the metric X besides the model and
its data; a component the command needs that is gone is named with the distribution to install."""

from __future__ import annotations

import json
import types
from importlib import metadata
from pathlib import Path

import pytest

import genfw
from genfw import cli
from genfw.plugins import PluginHost, get_host, selected_entry_points
from genfw.registry import PluginInfo
from tests.conftest import QUICK

TINY = ("--generator.hidden", "[16, 16]", "--critic.hidden", "[16, 16]")
GENFW = metadata.version("genfw")


class Const:
    """A metric that always gives 1 (a stand-in for a third-party metric)."""

    def __init__(self, options) -> None:
        self.options = options

    def __call__(self, ctx) -> dict[str, float]:
        return {"value": 1.0}


def const_plugin() -> types.SimpleNamespace:
    return types.SimpleNamespace(
        genfw_register_metrics=genfw.hookimpl(lambda register: register("const", Const))
    )


def host_with_const() -> PluginHost:
    """The installed plugins plus ``const``, as if installed from distribution genfw-const 0.2.0."""
    host = PluginHost()
    host.load_entry_points()
    host.add(const_plugin(), PluginInfo("const", "genfw-const", "0.2.0", "genfw_const"))
    return host


def host_without(*names: str) -> PluginHost:
    """The installed plugins but ``names`` (what GENFW_SKIP_PLUGINS does)."""
    host = PluginHost()
    host.load_entry_points(selected_entry_points(env=None, skip=",".join(names)))
    return host


def cli_with(host: PluginHost, capsys, *args) -> tuple[int, str, str]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cli, "get_host", lambda: host)
        code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code: int, err: str) -> str:
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("genfw: error: "), err
    return lines[0][len("genfw: error: ") :]


@pytest.fixture
def run(tmp_path, capsys) -> Path:
    """A gan on toy2d trained with the third-party metric ``const`` beside the data set's
    default ``mode_coverage``."""
    run = tmp_path / "g"
    code, _, err = cli_with(
        host_with_const(), capsys,
        "train", "--plugin", "gan", "--dataset", "toy2d", "--steps", "2", "--out", run,
        "--metric", "const", "--metric", "mode_coverage", "--metric.mode_coverage.num_samples", "200",
        "--regulariser", "gradient_penalty", *TINY, *QUICK,
    )  # fmt: skip
    assert code == 0, err
    return run


def test_run_json_records_every_component_and_distribution(run):
    record = json.loads((run / "run.json").read_text())
    assert record["distributions"] == {"genfw": GENFW, "genfw-const": "0.2.0"}
    components = record["components"]

    def builtin(kind: str, name: str, plugin: str) -> dict[str, str]:
        return {"kind": kind, "name": name, "plugin": plugin, "distribution": "genfw", "version": GENFW}

    assert components["metrics.const"] == {
        "kind": "metric", "name": "const", "plugin": "const", "distribution": "genfw-const", "version": "0.2.0"
    }  # fmt: skip
    assert components["variant"] == builtin("variant", "gan", "gan")
    assert components["dataset"] == builtin("dataset", "toy2d", "toy2d")
    assert components["generator"] == builtin("generator", "mlp", "networks")
    assert components["loss"] == builtin("loss", "non_saturating", "losses")
    assert components["regularisers.gradient_penalty"] == builtin(
        "regulariser", "gradient_penalty", "regularisers"
    )
    assert components["metrics.mode_coverage"] == builtin("metric", "mode_coverage", "mode_coverage")
    # Every component of the resolved config, by its path there, and nothing else.
    assert set(components) == {
        "variant", "dataset", "generator", "critic", "prior", "loss",
        "regularisers.gradient_penalty", "metrics.const", "metrics.mode_coverage",
    }  # fmt: skip
    assert record["data"] == {"shape": [2], "num_classes": 0, "kind": "points"}


def test_sample_needs_neither_the_metrics_nor_the_data_set(run, capsys, tmp_path):
    # The metric's plugin is not installed, the data set's and a built-in metric's are left out.
    host = host_without("toy2d", "mode_coverage")
    assert "toy2d" not in host.registry.names("dataset") and "const" not in host.registry.names("metric")
    code, out, err = cli_with(host, capsys, "sample", run, "-n", "5", "--out", tmp_path / "s.safetensors")
    assert code == 0, err
    assert out.strip() == str(tmp_path / "s.safetensors")


def test_eval_loads_only_the_metric_it_computes(run, capsys):
    # const is not installed: eval of another metric does not need it.
    code, out, err = cli_with(
        get_host(),
        capsys,
        "eval",
        run,
        "--metric",
        "mode_coverage",
        "--metric.mode_coverage.num_samples",
        "200",
    )
    assert code == 0, err
    results = json.loads(out)
    assert results["mode_coverage/modes_total"] == 8
    assert all(k.startswith("mode_coverage/") for k in results)


def test_eval_metric_replaces_the_presets_metrics(tmp_path, run_cli):
    # An autoencoder's image preset adds the autoencoding metric when a run is made; evaluating
    # another metric later computes that metric alone (the recorded config is not preset again).
    run = tmp_path / "ae"
    code, _, err = run_cli(
        "train", "--plugin", "ae", "--steps", "2", "--out", run, "--encoder.hidden", "[16]",
        "--generator.hidden", "[16]", *QUICK,
    )  # fmt: skip
    assert code == 0, err
    assert "autoencoding" in (run / "config.yaml").read_text()
    code, out, err = run_cli(
        "eval", run, "--metric", "fid", "--metric.fid.extractor", "raw", "--metric.fid.num_samples", "100",
        "--metric.fid.progress", "false",
    )  # fmt: skip
    assert code == 0, err
    assert set(json.loads(out)) == {"fid/fid"}


def test_a_missing_plugin_is_named_with_the_distribution_to_install(run, capsys):
    expected = (
        "metric 'const' of this run came from distribution genfw-const 0.2.0, which is not installed: "
        "pip install genfw-const"
    )
    assert one_line_error(*cli_with(get_host(), capsys, "eval", run)[::2]) == expected
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    resume = cli_with(get_host(), capsys, "train", "--resume", run, "--steps", "4")
    assert one_line_error(*resume[::2]) == expected
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before  # nothing touched

    # Installed, but left out (GENFW_SKIP_PLUGINS): the same distribution, the plugin to load.
    line = one_line_error(*cli_with(host_without("gan"), capsys, "sample", run)[::2])
    assert line == (
        f"variant 'gan' of this run came from distribution genfw {GENFW} (plugin 'gan'); genfw {GENFW} is "
        f"installed but registers no variant 'gan' now: check GENFW_SKIP_PLUGINS and GENFW_LOAD_PLUGINS, "
        f"or pip install 'genfw=={GENFW}'"
    )
    line = one_line_error(
        *cli_with(host_without("regularisers"), capsys, "sample", run, "--out", run / "s.png")[::2]
    )
    assert line.startswith("regulariser 'gradient_penalty' of this run came from distribution genfw")
    assert not (run / "s.png").exists()
