"""The plugin host: entry points, the registry's rules, and the errors plugins can cause."""

from __future__ import annotations

import types
from pathlib import Path

import attrs
import pytest
import tomllib

import genfw
from genfw import GenfwError, hookspecs
from genfw.plugins import ENV_LOAD, PluginHost, selected_entry_points
from genfw.registry import PluginInfo

ROOT = Path(__file__).resolve().parents[1]


def plugin(**hooks):
    """A plugin object whose attributes are hook implementations."""
    ns = types.SimpleNamespace()
    for name, fn in hooks.items():
        setattr(ns, name, genfw.hookimpl(fn))
    return ns


@attrs.define
class Opts:
    x: int = 1


# The callback kind's built-ins (the model-changing tricks) come with issue 12's callbacks work;
# until they are merged, it is the one kind without one.


class Loss:
    """A loss as far as registration can tell (what it computes does not matter here)."""

    role = "adversarial"

    def __init__(self, options=None):
        pass

    def critic_loss(self, real_scores, fake_scores): ...

    def generator_loss(self, fake_scores, real_scores=None): ...


class Prior:
    def __init__(self, options=None, *, dim=1):
        pass

    def sample(self, n, *, device, generator=None): ...

    def log_prob(self, z): ...


def test_every_builtin_module_is_an_entry_point_and_loads():
    eps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]["genfw"]
    modules = {
        ".".join(("genfw_plugins", *p.relative_to(ROOT / "plugins").with_suffix("").parts))
        for p in (ROOT / "plugins").rglob("*.py")
        if not p.name.startswith("_")
    }
    assert set(eps.values()) == modules
    installed = {ep.name: ep.value for ep in selected_entry_points(env=None)}
    assert {k: installed.get(k) for k in eps} == eps
    host = PluginHost()
    host.load_entry_points(ep for ep in selected_entry_points() if ep.name in eps)
    # Every kind has at least one built-in.
    assert all(host.registry.names(kind) for kind in set(hookspecs.KINDS))
    assert host.infos["wae"].dist == "genfw"


def test_every_hook_has_a_builtin_implementation_and_a_spec_docstring(registry):
    for kind, hook in hookspecs.KINDS.items():
        spec = getattr(hookspecs, hook)
        assert spec.__doc__ and ":param register:" in spec.__doc__
        assert registry.names(kind), f"no built-in {kind}"


def test_register_and_lookup():
    host = PluginHost()

    def make(options):
        return ("built", options)

    make.role = "adversarial"  # read before building: a loss factory declares its role

    host.add(
        plugin(genfw_register_losses=lambda register: register("mine", make, options=Opts, help="h")), "p1"
    )
    comp = host.registry.get("loss", "mine")
    assert comp.plugin.name == "p1" and comp.help == "h" and comp.options is Opts
    spec = host.registry.spec("loss", "mine", {"x": 3}, where="loss")
    assert spec.build() == ("built", Opts(3))
    with pytest.raises(GenfwError, match=r"unknown loss 'other' for loss; registered losses: mine$"):
        host.registry.get("loss", "other")


def test_duplicate_names_name_both_plugins():
    host = PluginHost()
    host.add(
        plugin(genfw_register_priors=lambda register: register("p", Prior)), PluginInfo("a", "dist-a", "1.0")
    )
    host.add(
        plugin(genfw_register_priors=lambda register: register("p", Prior)), PluginInfo("b", "dist-b", "2.0")
    )
    with pytest.raises(GenfwError) as info:
        host.registry  # noqa: B018
    msg = str(info.value)
    assert "prior 'p' is registered twice" in msg and "dist-a 1.0" in msg and "dist-b 2.0" in msg


def test_bad_registrations_are_errors():
    class NotAttrs:
        pass

    for call, match in [
        (lambda register: register("x", 42), "not callable"),
        (lambda register: register("x", Opts, options=NotAttrs), "not an attrs class"),
        (lambda register: register("", Opts), "invalid name"),
        (lambda register: 1 / 0, "failed in genfw_register_metrics: ZeroDivisionError"),
    ]:
        host = PluginHost()
        host.add(plugin(genfw_register_metrics=call), PluginInfo("bad", "bad-dist", "0.1"))
        with pytest.raises(GenfwError, match=match) as info:
            host.registry  # noqa: B018
        assert "bad-dist 0.1" in str(info.value)


def test_hook_with_wrong_arguments_is_named():
    host = PluginHost()
    with pytest.raises(
        GenfwError, match=r"plugin 'w' \(distribution w-dist 3\) has an invalid hook implementation"
    ):
        host.add(plugin(genfw_register_losses=lambda registrar: None), PluginInfo("w", "w-dist", "3"))
    assert not host.pm.has_plugin("w")


def test_misspelt_hook_is_caught():
    host = PluginHost()
    with pytest.raises(GenfwError, match="genfw_register_lossses"):
        host.add(plugin(genfw_register_lossses=lambda register: None), "typo")


def test_load_plugins_env_filters_and_validates(monkeypatch):
    monkeypatch.setenv(ENV_LOAD, "priors, losses")
    assert [ep.name for ep in selected_entry_points()] == ["losses", "priors"]
    monkeypatch.setenv(ENV_LOAD, "")
    assert selected_entry_points() == []
    monkeypatch.setenv(ENV_LOAD, "priors,nope")
    with pytest.raises(GenfwError, match=f"{ENV_LOAD} names 'nope'"):
        selected_entry_points()


def test_plugin_that_fails_to_import_is_named(monkeypatch):
    from importlib import metadata

    ep = metadata.EntryPoint(name="broken", value="genfw_no_such_module_xyz", group="genfw")
    host = PluginHost()
    with pytest.raises(GenfwError) as info:
        host.load_entry_points([ep])
    msg = str(info.value)
    assert "error importing plugin 'broken'" in msg and "ModuleNotFoundError" in msg and ENV_LOAD in msg


def _ep(name, value, dist_name):
    from importlib import metadata

    dist = types.SimpleNamespace(metadata={"Name": dist_name}, version="1.0")
    return metadata.EntryPoint(name=name, value=value, group="genfw")._for(dist)


def test_entry_point_names_shared_by_two_distributions_are_qualified_and_can_be_skipped(monkeypatch):
    import genfw.plugins as plugins_mod
    from genfw.plugins import ENV_SKIP, _plugin_infos

    eps = [
        _ep("energy", "genfw_plugins.energy", "genfw"),
        _ep("energy", "genfw_plugins.priors", "genfw-energy"),
        _ep("losses", "genfw_plugins.losses", "genfw"),
    ]
    monkeypatch.setattr(plugins_mod.metadata, "entry_points", lambda group: list(eps))
    names = [i.name for i in _plugin_infos(selected_entry_points(env=None, skip=""))]
    assert names == ["genfw:energy", "genfw-energy:energy", "losses"]
    host = PluginHost()
    host.load_entry_points(selected_entry_points(env=None, skip=""))
    assert host.infos["genfw-energy:energy"].dist == "genfw-energy"
    assert "ebgan" in host.registry.names("variant") and "spike_slab" in host.registry.names("prior")
    # Left out by distribution, by DIST:NAME, or (both) by entry-point name.
    monkeypatch.setenv(ENV_SKIP, "genfw-energy")
    assert [_plugin_infos([e])[0].name for e in selected_entry_points()] == ["energy", "losses"]
    monkeypatch.setenv(ENV_SKIP, "genfw:energy")
    assert [e.value for e in selected_entry_points()] == ["genfw_plugins.priors", "genfw_plugins.losses"]
    monkeypatch.setenv(ENV_SKIP, "energy")
    assert [e.name for e in selected_entry_points()] == ["losses"]
    monkeypatch.setenv(ENV_SKIP, "nope")
    with pytest.raises(GenfwError, match=f"{ENV_SKIP} names 'nope'"):
        selected_entry_points()


def test_a_component_registered_twice_names_both_and_the_way_out():
    host = PluginHost()
    host.add(plugin(genfw_register_losses=lambda register: register("x", Loss)), PluginInfo("a", "dist-a"))
    host.add(plugin(genfw_register_losses=lambda register: register("x", Loss)), PluginInfo("b", "dist-b"))
    with pytest.raises(GenfwError) as info:
        host.registry  # noqa: B018
    msg = str(info.value)
    assert "distribution dist-a" in msg and "distribution dist-b" in msg
    assert "GENFW_SKIP_PLUGINS=b" in msg and "\n" not in msg
    with pytest.raises(GenfwError, match=r"two plugins are named 'a': plugin 'a' \(distribution dist-a\)"):
        host.add(plugin(), PluginInfo("a", "dist-c"))


def test_dir_of_genfw_lists_the_lazy_names_without_importing_torch():
    import subprocess
    import sys

    # Every public name, the ones imported on first use (Model, Slot, ...) included, for
    # dir(genfw) and tab completion; each of them resolves.
    assert set(genfw.__all__) <= set(dir(genfw))
    assert all(getattr(genfw, name) is not None for name in genfw.__all__)
    code = "import sys, genfw; names = dir(genfw); print('Slot' in names, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "False"]
