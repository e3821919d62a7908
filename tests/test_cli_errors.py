"""Bad input through the ``genfw`` command is one line, ``genfw: error: ...``, naming what was wrong
and what is valid, with exit code 2, never a traceback, and nothing written (issue 11, items 5, 7).
"""

from __future__ import annotations

import math
import types
import typing
from typing import Any

import attrs
import pytest

from genfw.config import TRAIN
from genfw.errors import GenfwError
from genfw.plugins import get_registry
from genfw.registry import Component, PluginInfo, structure_options
from genfw.validators import AnyFloat

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
