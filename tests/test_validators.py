"""The shared attrs validators of genfw.validators: boundaries, refusals and exact messages."""

from __future__ import annotations

import math
import re
from typing import Any

import attrs
import pytest

from genfw import validators as check


def options_with(validator: Any) -> type:
    """An options class whose one field ``x`` is checked by ``validator``."""

    @attrs.define
    class Options:
        x: Any = attrs.field(validator=validator)

    return Options


def accepts(validator: Any, value: Any) -> bool:
    try:
        options_with(validator)(value)
    except ValueError:
        return False
    return True


def refuses_with(validator: Any, value: Any, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        options_with(validator)(value)


# --- positive, non_negative, at_least ------------------------------------------------------------


@pytest.mark.parametrize("value", [1e-12, 0.5, 1, 3, math.inf])
def test_positive_accepts(value: float) -> None:
    assert accepts(check.positive, value)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (0, "x must be positive, got 0"),
        (0.0, "x must be positive, got 0.0"),
        (-1e-12, "x must be positive, got -1e-12"),
        (-math.inf, "x must be positive, got -inf"),
        (math.nan, "x must be positive, got nan"),
    ],
)
def test_positive_refuses(value: float, message: str) -> None:
    refuses_with(check.positive, value, message)


@pytest.mark.parametrize("value", [0, 0.0, 1e-12, 7, math.inf])
def test_non_negative_accepts(value: float) -> None:
    assert accepts(check.non_negative, value)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (-1, "x must be >= 0, got -1"),
        (-1e-12, "x must be >= 0, got -1e-12"),
        (math.nan, "x must be >= 0, got nan"),
    ],
)
def test_non_negative_refuses(value: float, message: str) -> None:
    refuses_with(check.non_negative, value, message)


def test_at_least_boundaries_and_message() -> None:
    assert accepts(check.at_least(1), 1)
    assert accepts(check.at_least(1), 2)
    refuses_with(check.at_least(1), 0, "x must be at least 1, got 0")
    refuses_with(check.at_least(1), -5, "x must be at least 1, got -5")
    refuses_with(check.at_least(1), math.nan, "x must be at least 1, got nan")
    assert accepts(check.at_least(0.5), 0.5)
    refuses_with(check.at_least(0.5), 0.25, "x must be at least 0.5, got 0.25")


# --- in_interval ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("low_open", "high_open", "text", "accepted", "refused"),
    [
        (False, False, "[0, 1]", [0, 0.0, 0.5, 1, 1.0], [-1e-9, 1.0 + 1e-9]),
        (True, False, "(0, 1]", [1e-9, 0.5, 1.0], [0, 0.0, -1.0, 1.5]),
        (False, True, "[0, 1)", [0.0, 0.5, 0.999], [1, 1.0, -0.5]),
        (True, True, "(0, 1)", [1e-9, 0.5, 0.999], [0.0, 1.0]),
    ],
)
def test_in_interval_ends(
    low_open: bool, high_open: bool, text: str, accepted: list[float], refused: list[float]
) -> None:
    validator = check.in_interval(0, 1, low_open=low_open, high_open=high_open)
    for value in accepted:
        assert accepts(validator, value), value
    for value in [*refused, math.nan, math.inf, -math.inf]:
        refuses_with(validator, value, f"x must be in {text}, got {value!r}")


def test_in_interval_messages() -> None:
    # The spike-and-slab prior's alpha: the float's repr, not a rounded form.
    refuses_with(check.in_interval(0, 1, low_open=True), 0.0, "x must be in (0, 1], got 0.0")
    refuses_with(check.in_interval(0, 1, high_open=True), 1.0, "x must be in [0, 1), got 1.0")
    refuses_with(check.in_interval(-1, 2.5), 3, "x must be in [-1, 2.5], got 3")
    assert accepts(check.in_interval(-1, 2.5), -1) and accepts(check.in_interval(-1, 2.5), 2.5)


# --- one_of --------------------------------------------------------------------------------------


def test_one_of() -> None:
    validator = check.one_of("imq", "rbf")
    assert accepts(validator, "imq") and accepts(validator, "rbf")
    refuses_with(validator, "gauss", "x must be one of imq, rbf, got 'gauss'")
    refuses_with(validator, "", "x must be one of imq, rbf, got ''")
    refuses_with(validator, "IMQ", "x must be one of imq, rbf, got 'IMQ'")  # case matters


def test_one_of_takes_any_hashable_values() -> None:
    # Group sizes, a float schedule, a mix: each refusal is one message listing the choices.
    ints = check.one_of(1, 2, 4)
    assert accepts(ints, 1) and accepts(ints, 4)
    refuses_with(ints, 3, "x must be one of 1, 2, 4, got 3")
    refuses_with(ints, "2", "x must be one of 1, 2, 4, got '2'")
    floats = check.one_of(0.5, 0.9, 0.999)
    assert accepts(floats, 0.9)
    refuses_with(floats, 0.95, "x must be one of 0.5, 0.9, 0.999, got 0.95")
    mixed = check.one_of("auto", 0, 2.5)
    assert accepts(mixed, "auto") and accepts(mixed, 0) and accepts(mixed, 2.5)
    refuses_with(mixed, "1", "x must be one of 'auto', 0, 2.5, got '1'")
    refuses_with(check.each(ints), [1, 8], "x[1] must be one of 1, 2, 4, got 8")


def test_one_of_on_ints_is_one_line_through_the_config() -> None:
    from genfw.errors import GenfwError
    from genfw.registry import Component, PluginInfo, structure_options

    @attrs.define
    class Options:
        group: int = attrs.field(default=4, validator=check.one_of(1, 2, 4))

    component = Component("regulariser", "mine", Options, Options, PluginInfo("p"))
    assert structure_options(component, {"group": 2}, where="regularisers.mine") == Options(2)
    with pytest.raises(GenfwError) as info:
        structure_options(component, {"group": 3}, where="regularisers.mine")
    assert str(info.value) == (
        "regularisers.mine: group must be one of 1, 2, 4, got 3; options of regulariser 'mine': group: int = 4"
    )


# --- each ----------------------------------------------------------------------------------------


def test_each_accepts_valid_lists() -> None:
    assert accepts(check.each(check.positive), [1.0])
    assert accepts(check.each(check.positive), [0.5, 2, 3.0])
    assert accepts(check.each(check.in_interval(0, 9)), [0, 9])


def test_each_refuses_an_empty_list() -> None:
    refuses_with(check.each(check.positive), [], "x must not be empty")
    refuses_with(check.each(check.positive), (), "x must not be empty")


@pytest.mark.parametrize(
    ("inner", "value", "message"),
    [
        (check.positive, [1.0, 0.0], "x[1] must be positive, got 0.0"),
        (check.positive, [-1], "x[0] must be positive, got -1"),
        (check.positive, [2.0, math.nan], "x[1] must be positive, got nan"),
        (check.in_interval(0, 9), [3, 10], "x[1] must be in [0, 9], got 10"),
        (check.one_of("a", "b"), ["a", "c"], "x[1] must be one of a, b, got 'c'"),
    ],
)
def test_each_refuses_a_bad_element(inner: Any, value: list[Any], message: str) -> None:
    refuses_with(check.each(inner), value, message)
