"""Commands from plugins (``genfw_register_commands``): a plugin adds a subcommand and options of
``genfw eval``; mistakes are one line naming the plugin; genfw's own plugin commands (the
autoencoder pictures, ``--fid-weights``, ``train-evaluator``) come and go with their plugins; the
core names no plugin and its ``Model`` carries no autoencoder's fields."""

from __future__ import annotations

import ast
import json
import os
import types
from pathlib import Path

import attrs
import pytest
import safetensors.torch

import genfw
from genfw import cli
from genfw.model import Model
from genfw.plugins import PluginHost, selected_entry_points
from genfw.registry import PluginInfo
from tests.conftest import QUICK

ROOT = Path(__file__).resolve().parents[1]
TINY = ("--generator.hidden", "[16, 16]", "--critic.hidden", "[16, 16]")


def host_with(*plugins: tuple[object, str], skip: str = "") -> PluginHost:
    """The installed plugins (but ``skip``) plus ``(plugin, name)`` pairs, each from its own
    distribution ``genfw-NAME 1.0``."""
    host = PluginHost()
    host.load_entry_points(selected_entry_points(env=None, skip=skip))
    for plugin, name in plugins:
        host.add(plugin, PluginInfo(name, f"genfw-{name}", "1.0", f"genfw_{name}"))
    return host


def commands_plugin(register) -> types.SimpleNamespace:
    def genfw_register_commands(commands) -> None:
        register(commands)

    return types.SimpleNamespace(genfw_register_commands=genfw.hookimpl(genfw_register_commands))


@pytest.fixture
def use(monkeypatch):
    """Make the CLI use a given host."""

    def set_host(host: PluginHost) -> None:
        monkeypatch.setattr(cli, "get_host", lambda: host)

    return set_host


def one_line_error(code: int, err: str) -> str:
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("genfw: error: "), err
    return lines[0][len("genfw: error: ") :]


# --- a plugin's command and eval options ----------------------------------------------------------


def test_a_plugin_adds_a_command_and_options_of_eval(tmp_path, run_cli, use):
    calls: list[tuple[str, object]] = []

    def hello_options(parser):
        parser.add_argument("--name", default="world")

    def hello(args) -> int:
        print(f"hello {args.name} {args.extra}")
        return 3

    def weights_options(parser):
        parser.add_argument("--dump-generator", metavar="FILE")

    def check(args) -> None:
        calls.append(("before", args.dump_generator))

    def dump(args, run) -> list[Path]:
        calls.append(("after", run))
        out = Path(args.dump_generator)
        safetensors.torch.save_file(run.modules["generator"].state_dict(), str(out))
        return [out]

    def register(commands) -> None:
        commands.add("hello", help="greet someone", configure=hello_options, run=hello, passthrough=True)
        commands.extend("eval", configure=weights_options, run_before=check, run_after=dump)

    use(host_with((commands_plugin(register), "hello")))
    code, out, err = run_cli("hello", "--name", "genfw", "--colour", "red")
    assert (code, out, err) == (3, "hello genfw ['--colour', 'red']\n", "")
    assert "greet someone (plugin hello)" in cli.build_parser().format_help()

    run = tmp_path / "g"
    code, _, err = run_cli(
        "train", "--plugin", "gan", "--dataset", "toy2d", "--steps", "3", "--out", run, *TINY, *QUICK,
        "--metric.mode_coverage.num_samples", "200",
    )  # fmt: skip
    assert code == 0, err
    code, out, err = run_cli("eval", run)  # the option not given: the plugin does nothing
    assert code == 0, err
    assert calls == []

    dumped = tmp_path / "g.safetensors"
    code, out, err = run_cli("eval", run, "--dump-generator", dumped)
    assert code == 0, err
    lines = out.strip().splitlines()
    assert "mode_coverage/modes_total" in json.loads(lines[0]) and lines[1:] == [str(dumped)]
    assert [c[0] for c in calls] == ["before", "after"] and calls[0][1] == str(dumped)
    loaded = calls[1][1]
    assert loaded.run_dir == run and loaded.cfg.variant.name == "gan" and loaded.dataset.kind == "points"
    # run_after saw the run's trained weights: those of its export.
    export = safetensors.torch.load_file(str(run / "generator.safetensors"))
    mine = safetensors.torch.load_file(str(dumped))
    assert export.keys() == {f"generator.{k}" for k in mine}
    assert all((export[f"generator.{k}"] == v).all() for k, v in mine.items())


@pytest.mark.parametrize(
    ("register", "expected"),
    [
        (
            lambda c: c.add("train", help="h", configure=print, run=print),
            "plugin 'p' (distribution genfw-p 1.0) adds command 'train', which genfw already has; rename it",
        ),
        (
            lambda c: c.add("Hello World", help="h", configure=print, run=print),
            "plugin 'p' (distribution genfw-p 1.0) adds command 'Hello World': a command name is lower "
            "case letters, digits and -, starting with a letter",
        ),
        (
            lambda c: c.add("hello", help="h", configure=print, run="not a function"),
            "adds command 'hello': run must be a function, got 'not a function'",
        ),
        (
            lambda c: c.extend("evaluate", configure=print),
            "plugin 'p' (distribution genfw-p 1.0) extends command 'evaluate', which does not exist; "
            "commands: compare, eval, export, list, new-plugin, plugins, push, sample, train, train-evaluator",
        ),
        (
            lambda c: c.extend("train", configure=print, run_after=print),
            "extends command 'train' with run_after, which only eval calls; use run_before",
        ),
        (
            lambda c: c.extend("eval", configure=lambda p: p.add_argument("--out")),
            "plugin 'p' (distribution genfw-p 1.0) cannot extend command 'eval': argument --out: "
            "conflicting option string: --out",
        ),
    ],
)
def test_command_mistakes_are_one_line_naming_the_plugin(run_cli, use, register, expected):
    use(host_with((commands_plugin(register), "p")))
    assert expected in one_line_error(*run_cli("list", "loss")[::2])


def test_two_plugins_adding_one_command_are_both_named(run_cli, use):
    def register(commands) -> None:
        commands.add("hello", help="h", configure=print, run=print)

    use(host_with((commands_plugin(register), "a"), (commands_plugin(register), "b")))
    assert one_line_error(*run_cli("plugins")[::2]) == (
        "command 'hello' is added twice: by plugin 'a' (distribution genfw-a 1.0) and by plugin 'b' "
        "(distribution genfw-b 1.0); uninstall one, or leave one out with GENFW_SKIP_PLUGINS=b"
    )


# --- genfw's own plugin commands ------------------------------------------------------------------


def test_builtin_commands_come_and_go_with_their_plugins(tmp_path, run_cli, use, monkeypatch):
    monkeypatch.delenv("GENFW_FID_WEIGHTS", raising=False)
    use(host_with())
    assert "(plugin classifier)" in cli.build_parser().format_help()
    # --fid-weights (the inception plugin's) sets $GENFW_FID_WEIGHTS before eval runs.
    line = one_line_error(*run_cli("eval", "--fid-weights", tmp_path / "w.pth")[::2])
    assert line.startswith("give a run folder")
    assert os.environ["GENFW_FID_WEIGHTS"] == str((tmp_path / "w.pth").resolve())
    os.environ.pop("GENFW_FID_WEIGHTS")  # set by the command itself: monkeypatch would restore it

    use(host_with(skip="classifier,inception,autoencoder_cli"))
    line = one_line_error(*run_cli("train-evaluator", "--dataset", "digits")[::2])
    assert "argument command: invalid choice: 'train-evaluator'" in line
    for args in (
        ("eval", "runs/x", "--fid-weights"),
        ("train", "--fid-weights"),
        ("eval", "runs/x", "--reconstruct"),
    ):
        option = args[-1]
        line = one_line_error(*run_cli(*args, "1")[::2])  # an unknown option, refused
        assert option.lstrip("-") in line and "GENFW_FID_WEIGHTS" not in os.environ


def test_eval_pictures_options_refuse_what_they_cannot_draw(tmp_path, run_cli):
    # Checked before the run is loaded.
    line = one_line_error(*run_cli("eval", tmp_path / "none", "--reconstruct", "0")[::2])
    assert line == "--reconstruct takes a number of examples >= 1, got 0"
    line = one_line_error(*run_cli("eval", tmp_path / "none", "--traverse-range", "5")[::2])
    assert line == "--traverse-range and --traverse-steps shape a traversal; give --traverse DIMS too"
    # A run without an autoencoder.
    run = tmp_path / "g"
    code, _, err = run_cli(
        "train", "--plugin", "gan", "--dataset", "toy2d", "--steps", "2", "--out", run, *TINY, *QUICK
    )
    assert code == 0, err
    line = one_line_error(*run_cli("eval", run, "--latent-plot")[::2])
    assert line.startswith("--reconstruct, --latent-plot and --traverse need an autoencoder (")
    assert line.endswith("this run's variant is 'gan'")
    # The autoencoders named are the registered variants with a reconstructing phase, new ones too.
    named = line.split("need an autoencoder (")[1].split(");")[0].split(", ")
    assert {"ae", "vae", "iwae", "tcvae", "rae", "vqvae"} <= set(named) and "gan" not in named
    assert not (run / "eval.json").exists()  # refused before any metric ran


# --- the core knows no plugin ---------------------------------------------------------------------

# Documented, configurable defaults of the core: (file, constant).
DEFAULTS = {
    ("config.py", "DEFAULT_VARIANT"),
    ("config.py", "DEFAULT_DATASET"),
    ("cli.py", "DEFAULT_FILE_METRICS"),
    ("testing.py", "DATASETS"),
    ("testing.py", "VARIANTS"),
    ("testing.py", "METRIC_RUNS"),
}


def test_the_core_names_no_variant_data_set_metric_or_extractor(registry):
    """No string in the code of ``core/`` (docstrings aside) is the name of a built-in variant,
    data set, metric or extractor, nor lists autoencoders, except the documented defaults."""
    names = {n for kind in ("variant", "dataset", "metric", "extractor") for n in registry.names(kind)}
    names.discard("is")  # the Inception Score's name is an English word (``"is" if ... else "are"``)
    found = []
    for path in sorted((ROOT / "core").glob("*.py")):
        tree = ast.parse(path.read_text())
        allowed: set[int] = set()
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and (path.name, t.id) in DEFAULTS for t in node.targets
            ):
                allowed |= {id(n) for n in ast.walk(node)}
        docstrings = {
            id(n.value)
            for n in ast.walk(tree)
            if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)
        }
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and id(node) not in allowed | docstrings
                and (node.value in names or "ae, vae" in node.value)
            ):
                found.append(f"{path.name}:{node.lineno}: {node.value!r}")
    assert found == []


def test_model_has_no_autoencoder_fields():
    fields = {f.name for f in attrs.fields(Model)}
    assert not fields & {"encode", "decode", "reconstruct", "prior", "log_weights"}
