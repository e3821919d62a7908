"""Metric mode_coverage (VEEGAN / PacGAN): hand-built samples with known answers, then on toy2d."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

import genfw
from genfw import GenfwError
from genfw.plugins import PluginHost
from genfw_plugins.datasets import digits, toy2d
from genfw_plugins.metrics import mode_coverage as mc_plugin
from genfw_plugins.metrics.mode_coverage import mode_coverage

STD = 0.01
RING = toy2d.ring_modes()  # 8 centres on the unit circle; neighbours 0.765 apart


def at(mode: int, n: int, offset_std: float = 0.0) -> torch.Tensor:
    """``n`` samples at ring mode ``mode``, moved outwards (radially) by ``offset_std`` stds."""
    centre = RING[mode]
    return (centre * (1 + offset_std * STD)).expand(n, 2).clone()


def test_all_samples_on_three_of_eight_modes() -> None:
    samples = torch.cat([at(0, 10), at(2, 10), at(5, 10)])
    r = mode_coverage(samples, RING, STD)
    assert r["modes"] == 3.0 and r["modes_total"] == 8.0 and r["high_quality"] == 1.0
    # p uniform over 3 of 8 modes: KL(p || U_8) = log(8 / 3).
    assert r["kl_modes"] == pytest.approx(math.log(8 / 3), abs=1e-12)


def test_all_eight_modes_evenly_gives_zero_kl() -> None:
    samples = torch.cat([at(k, 4, offset_std=1.0) for k in range(8)])
    r = mode_coverage(samples, RING, STD)
    assert r["modes"] == 8.0 and r["high_quality"] == 1.0
    assert r["kl_modes"] == pytest.approx(0.0, abs=1e-12)


def test_samples_far_from_every_mode_are_not_high_quality() -> None:
    samples = torch.tensor([[10.0, 10.0], [0.0, 0.0], [-3.0, 0.5]]).repeat(5, 1)
    r = mode_coverage(samples, RING, STD)
    assert r["modes"] == 0.0 and r["high_quality"] == 0.0 and r["modes_total"] == 8.0
    assert math.isnan(r["kl_modes"])  # no high-quality sample: p is undefined


def test_mix_with_exact_fractions() -> None:
    samples = torch.cat(
        [
            at(0, 30, offset_std=1.0),  # high quality, mode 0
            at(1, 10, offset_std=2.5),  # high quality, mode 1
            at(1, 15, offset_std=5.0),  # nearest to mode 1 but 5 std away: low quality
            torch.zeros(45, 2),  # the centre of the ring: 1 (100 std) from every mode
        ]
    )
    r = mode_coverage(samples, RING, STD)
    assert r["modes"] == 2.0
    assert r["high_quality"] == pytest.approx(40 / 100, abs=1e-12)
    # p = (3/4, 1/4) on K = 8 modes: 3/4 log(8 * 3/4) + 1/4 log(8 * 1/4).
    assert r["kl_modes"] == pytest.approx(0.75 * math.log(6) + 0.25 * math.log(2), abs=1e-12)


def test_threshold_is_in_standard_deviations() -> None:
    inside, outside = at(3, 1, offset_std=2.9), at(3, 1, offset_std=3.1)
    assert mode_coverage(inside, RING, STD)["high_quality"] == 1.0
    assert mode_coverage(outside, RING, STD)["high_quality"] == 0.0
    # The same points with a looser threshold, or a larger std, count.
    assert mode_coverage(outside, RING, STD, threshold_std=3.2)["high_quality"] == 1.0
    assert mode_coverage(outside, RING, 2 * STD)["high_quality"] == 1.0


def test_min_samples_boundary() -> None:
    samples = torch.cat([at(0, 5), at(1, 4), at(2, 1)])
    assert mode_coverage(samples, RING, STD)["modes"] == 3.0  # the papers' rule: one is enough
    assert mode_coverage(samples, RING, STD, min_samples=4)["modes"] == 2.0
    assert mode_coverage(samples, RING, STD, min_samples=5)["modes"] == 1.0
    assert mode_coverage(samples, RING, STD, min_samples=6)["modes"] == 0.0
    # high_quality does not depend on min_samples
    assert mode_coverage(samples, RING, STD, min_samples=6)["high_quality"] == 1.0


def test_samples_go_to_their_nearest_mode() -> None:
    grid = toy2d.grid_modes()
    # 0.1 (2 std) from (2, 2) and far from the others: counts for (2, 2) only.
    r = mode_coverage(torch.tensor([[2.1, 2.0]] * 3), grid, 0.05, min_samples=3)
    assert r["modes"] == 1.0 and r["modes_total"] == 25.0 and r["high_quality"] == 1.0


def test_non_finite_samples_are_low_quality() -> None:
    samples = torch.cat([at(0, 2), torch.full((2, 2), float("nan")), torch.full((1, 2), float("inf"))])
    r = mode_coverage(samples, RING, STD)
    assert r["modes"] == 1.0 and r["high_quality"] == pytest.approx(2 / 5)


def test_dimension_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="3 dimensions but modes have 2"):
        mode_coverage(torch.zeros(4, 3), RING, STD)


# --- through the plugin host ---------------------------------------------------------------------


def build_metric(options: dict[str, Any] | None = None) -> Any:
    host = PluginHost()
    host.add(mc_plugin, "mode_coverage")
    return host.registry.spec("metric", "mode_coverage", options or {}, where="metrics.mode_coverage").build()


def context(dataset: genfw.GenDataset, points: torch.Tensor, asked: list[int]) -> genfw.EvalContext:
    def sample(n: int) -> torch.Tensor:
        asked.append(n)
        return points[:n]

    return genfw.EvalContext(sample=sample, real=sample, dataset=dataset)


def make_toy(which: str) -> toy2d.Toy2D:
    return toy2d.Toy2D(toy2d.Toy2DOptions(which=which, size=5000, seed=1))


@pytest.mark.parametrize(("which", "k"), [("ring", 8), ("grid", 25)])
def test_real_toy2d_data_captures_every_mode(which: str, k: int) -> None:
    ds = make_toy(which)
    asked: list[int] = []
    r = build_metric()(context(ds, ds.tensors[0], asked))
    assert asked == [2500]  # the papers' sample count is the default
    assert r["modes"] == float(k) and r["modes_total"] == float(k)
    # A 2D Gaussian lies within 3 std of its centre with probability 1 - exp(-9/2) = 0.98889;
    # with 2500 samples the standard error is 0.0021, so allow 0.01.
    assert r["high_quality"] == pytest.approx(1 - math.exp(-4.5), abs=0.01)
    assert 0.0 <= r["kl_modes"] < 0.05


def test_collapsed_generator_on_the_grid() -> None:
    ds = make_toy("grid")
    x = ds.tensors[0][ds.mode_index < 5]  # a generator that only knows 5 of the 25 modes
    r = build_metric({"num_samples": 1000})(context(ds, x, []))
    assert r["modes"] == 5.0 and r["modes_total"] == 25.0
    assert r["kl_modes"] == pytest.approx(math.log(5), abs=0.05)  # near-uniform on 5 of 25


def test_data_set_without_modes_is_a_clear_error() -> None:
    ds = digits.Digits(digits.DigitsOptions())
    with pytest.raises(GenfwError) as info:
        build_metric()(context(ds, ds.tensors[0], []))
    assert str(info.value).startswith(
        "metric 'mode_coverage' needs a data set with known modes (toy2d); got dataset Digits"
    )


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"threshold_std": 0.0}, "threshold_std must be positive"),
        ({"min_samples": 0}, "min_samples must be at least 1"),
        ({"num_samples": 0}, "num_samples must be at least 1"),
    ],
)
def test_bad_options(options: dict[str, Any], words: str) -> None:
    with pytest.raises(ValueError, match=words):
        mc_plugin.ModeCoverageOptions(**options)
    with pytest.raises(GenfwError):
        build_metric(options)
