"""``genfw compare`` (table of final values, PNG plot over steps) and the HParams record of a run."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

from genfw import images
from tests.conftest import QUICK


def write_run(path, records):
    path.mkdir(parents=True)
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture
def runs(tmp_path):
    a = write_run(
        tmp_path / "a",
        [
            {"step": 5, "critic/loss": 1.5, "generator/loss": 0.7, "time": 0.1},
            {"step": 10, "critic/loss": 1.25, "generator/loss": 0.75, "time": 0.2},
            {"step": 10, "mode_coverage/modes": 3, "mode_coverage/kl_modes": None},
        ],
    )
    b = write_run(
        tmp_path / "b",
        [
            {"step": 5, "critic/loss": 2.0, "generator/loss": 0.5, "extra/only_b": 7.0, "time": 0.1},
            {"step": 10, "critic/loss": 1.0, "generator/loss": 0.25, "time": 0.2},
            {"step": 10, "mode_coverage/modes": 8, "mode_coverage/kl_modes": 0.125},
        ],
    )
    return a, b


def test_table_has_the_last_value_of_every_key_per_run(runs, tmp_path, run_cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli("compare", *runs)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["key", "a", "b"]
    rows = {
        line.split()[0]: line.split()[1:] for line in lines[2:] if line.strip() and "over steps" not in line
    }
    assert rows["step"] == ["10", "10"]
    assert rows["critic/loss"] == ["1.25", "1"] and rows["generator/loss"] == ["0.75", "0.25"]
    assert rows["mode_coverage/modes"] == ["3", "8"]
    assert rows["mode_coverage/kl_modes"] == ["nan", "0.125"]  # null in the JSON: not finite
    assert rows["extra/only_b"] == ["-", "7"]  # never logged by a
    assert "time" not in rows
    # By default the plot is of an evaluated metric all runs share.
    assert lines[-1] == "mode_coverage/kl_modes over steps: compare-mode_coverage_kl_modes.png"
    assert (tmp_path / "compare-mode_coverage_kl_modes.png").is_file()


def test_plot_of_a_chosen_metric_and_no_overwrite(runs, tmp_path, run_cli):
    out = tmp_path / "loss.png"
    code, stdout, err = run_cli("compare", *runs, "--metric", "critic/loss", "--out", out)
    assert code == 0, err
    assert stdout.endswith(f"critic/loss over steps: {out}\n")
    picture = np.asarray(Image.open(out).convert("RGB"))
    assert picture.shape == (500 + 2 * 16, 800, 3)  # the plot plus one legend row per run
    colours = {tuple(c) for c in picture.reshape(-1, 3)}
    assert images.PALETTE[0] in colours and images.PALETTE[1] in colours
    before = out.read_bytes()
    code, _, err = run_cli("compare", *runs, "--metric", "generator/loss", "--out", out)
    assert code == 2 and "already exists; pass --overwrite" in err and out.read_bytes() == before
    code, _, err = run_cli("compare", *runs, "--metric", "generator/loss", "--out", out, "--overwrite")
    assert code == 0 and out.read_bytes() != before


def test_errors_name_what_is_valid(runs, tmp_path, run_cli):
    code, _, err = run_cli("compare", *runs, "--metric", "fid/fid", "--out", tmp_path / "x.png")
    assert code == 2 and "no run logged 'fid/fid'; logged keys: critic/loss, extra/only_b" in err
    code, _, err = run_cli("compare", tmp_path, "--out", tmp_path / "x.png")
    assert code == 2 and "is not a genfw run folder with metrics" in err
    code, _, err = run_cli("compare", *runs, "--out", tmp_path / "x.jpg")
    assert code == 2 and "give a path ending in .png" in err
    assert not (tmp_path / "x.png").exists()


def test_line_plot_puts_points_where_the_axes_say():
    # One line from (0, 0) to (10, 1). Plot area: x in [70, 780], y in [30, 460]; the y range is
    # padded by 5% each side, so (5, 0.5) lands at (70 + 355, 30 + 0.5 * 430) = (425, 245).
    picture = images.line_plot({"a": ([0.0, 10.0], [0.0, 1.0])})
    patch = picture[243:248, 423:428].reshape(-1, 3)
    assert any(tuple(c) == images.PALETTE[0] for c in patch)
    assert tuple(picture[100, 300]) == (255, 255, 255)  # far from the line and the grid: background
    # A non-finite value breaks the line instead of failing.
    images.line_plot({"a": ([0.0, 1.0, 2.0], [0.0, math.nan, 1.0])})


def test_a_run_records_hyper_parameters_and_final_metrics_for_tensorboard(tmp_path, run_cli):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    out = tmp_path / "run"
    code, stdout, err = run_cli(
        "train", "--plugin", "gan", "--dataset", "toy2d", "--steps", "4", "--batch-size", "16",
        "--out", out, *QUICK,
    )  # fmt: skip
    assert code == 0, err
    summary = json.loads(stdout.strip().splitlines()[-1])
    acc = EventAccumulator(str(out / "tb"))
    acc.Reload()
    content = acc.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hp = start.session_start_info.hparams
    assert hp["variant.name"].string_value == "gan" and hp["train.steps"].number_value == 4
    assert hp["loss.name"].string_value == "non_saturating" and hp["train.batch_size"].number_value == 16
    assert hp["train.progress"].string_value == "false"  # a bool, not the number 0
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert "hparam/critic/loss" in {m.name.tag for m in experiment.metric_infos}
    (final,) = acc.Scalars("hparam/critic/loss")
    assert final.step == 4 and final.value == pytest.approx(summary["critic/loss"], rel=1e-6)
    # The training curve itself has no extra point.
    assert [e.step for e in acc.Scalars("critic/loss")] == [4]
