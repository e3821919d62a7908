"""The run folder can be trusted: a diverging run never replaces its finite checkpoints, a resume
with nothing to do touches nothing, a run that stopped before its first checkpoint can be resumed,
``checkpoints/latest`` names only this run's checkpoints, and a tampered checkpoint (its sha256
recomputed) is refused in one line before anything is loaded."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import safetensors.torch
import torch

from genfw import GenfwError, checkpoint
from genfw.config import resolve
from genfw.train import EXPORT_FILE, Trainer, read_run
from tests.conftest import QUICK
from tests.test_train import small

TINY = ("--generator.hidden", "[16, 16]", "--critic.hidden", "[16, 16]")


def gan_run(run_cli, run: Path, steps: int = 2) -> None:
    code, _, err = run_cli(
        "train", "--plugin", "gan", "--dataset", "toy2d", "--steps", steps, "--out", run, *TINY, *QUICK
    )
    assert code == 0, err


def snapshot(run: Path) -> dict[Path, bytes]:
    """Every file of the run folder with its bytes (a new or changed file shows)."""
    return {p: p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def steps_in(run: Path) -> list[str]:
    return sorted(p.name for p in (run / "checkpoints").glob("step_*"))


def one_line_error(code: int, err: str) -> str:
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("genfw: error: "), err
    return lines[0]


# --- 1. a diverging run keeps its finite checkpoints; NaN weights are refused ----------------------


def diverging_vae(keep: int = 2) -> dict[str, Any]:
    """A VAE on digits whose weights stop being finite after a few steps (lr 0.3, tiny nets),
    checkpointed every step but logged only every 10 steps."""
    raw = small("vae", dataset="digits")
    raw["variant"] = {"name": "vae", "lr": 0.3}
    raw["train"].update(steps=20, log_every=10, checkpoint_every=1, keep_checkpoints=keep, sample_every=0)
    return raw


@pytest.mark.parametrize("keep", [1, 2])
def test_divergence_between_log_steps_keeps_the_last_finite_checkpoint(tmp_path, registry, run_cli, keep):
    run = tmp_path / "r"
    with pytest.raises(GenfwError, match=r"training diverged at step (\d+): ") as info:
        Trainer(resolve(diverging_vae(keep), registry), run).fit()
    message = str(info.value)
    step = int(message.split("at step ")[1].split(":")[0])
    # Found at the checkpoint of the step the weights broke, not at the next log step (10).
    assert 1 < step < 10 and "\n" not in message
    assert "modules/" in message and "are not finite" in message
    last = f"step_{step - 1:07d}"
    assert f"checkpoints/{last} and generator.safetensors hold the last finite weights" in message
    ckpts = run / "checkpoints"
    assert checkpoint.find(ckpts).name == last
    assert steps_in(run) == [f"step_{s:07d}" for s in range(step - keep, step)]
    for name in steps_in(run):
        _, state = checkpoint.load(ckpts / name)
        assert checkpoint.non_finite(state) == []
    export = safetensors.torch.load_file(str(run / EXPORT_FILE))
    assert all(torch.isfinite(t).all() for t in export.values())
    # What is left is usable: samples from the export, a resume from the last finite checkpoint.
    code, _, err = run_cli("sample", run, "-n", "4", "--out", tmp_path / "s.safetensors")
    assert code == 0, err
    assert torch.isfinite(safetensors.torch.load_file(str(tmp_path / "s.safetensors"))["samples"]).all()
    assert Trainer(read_run(run, registry), run, resume=True).step == step - 1


def nan_weights(tensors: dict[str, torch.Tensor], prefix: str) -> str:
    key = next(k for k in sorted(tensors) if k.startswith(prefix) and tensors[k].is_floating_point())
    tensors[key] = torch.full_like(tensors[key], float("nan"))
    return key


def test_sample_eval_and_resume_refuse_non_finite_weights(tmp_path, run_cli):
    run = tmp_path / "g"
    gan_run(run_cli, run)
    export = safetensors.torch.load_file(str(run / EXPORT_FILE))
    key = nan_weights(export, "generator.")
    safetensors.torch.save_file(export, str(run / EXPORT_FILE))
    line = one_line_error(*run_cli("sample", run, "-n", "4", "--out", tmp_path / "s.png")[::2])
    assert f"{run / EXPORT_FILE} holds non-finite values ({key})" in line
    assert not (tmp_path / "s.png").exists()

    tamper(run, lambda meta, tensors: nan_weights(tensors, "modules/critic/"))
    before = snapshot(run)
    line = one_line_error(*run_cli("eval", run, "--metric", "mode_coverage")[::2])
    assert "holds non-finite values (modules/critic/" in line and "the run had diverged" in line
    line = one_line_error(*run_cli("train", "--resume", run, "--steps", "4", *QUICK)[::2])
    assert "cannot resume: checkpoint" in line and "holds non-finite values (modules/critic/" in line
    assert snapshot(run) == before


# --- 2. a resume with nothing to do --------------------------------------------------------------


@pytest.mark.parametrize("steps", [4, 2])
def test_resume_to_a_step_already_reached_touches_nothing(tmp_path, run_cli, steps):
    run = tmp_path / "g"
    gan_run(run_cli, run, steps=4)
    before = snapshot(run)
    line = one_line_error(*run_cli("train", "--resume", run, "--steps", steps, *QUICK)[::2])
    assert f"{run} is already at step 4 (train.steps {steps}); nothing to do" in line
    assert snapshot(run) == before  # config.yaml, run.json, tb/: nothing rewritten or added


# --- 3. a run that stopped before its first checkpoint ---------------------------------------------


def stopped_early(registry, run: Path, raw: dict[str, Any]) -> None:
    """A run killed at its third step: config, run.json, logs and TensorBoard events, no checkpoint."""
    t = Trainer(resolve(raw, registry), run)
    for _ in range(3):
        t.train_step()
    t.log(t.flush_logs())
    t.writer.close()


def test_run_stopped_before_its_first_checkpoint_resumes_from_step_0(tmp_path, registry, run_cli):
    raw = small("gan")
    raw["train"].update(steps=6, checkpoint_every=0)
    run = tmp_path / "r"
    stopped_early(registry, run, raw)
    assert not steps_in(run) and (run / "config.yaml").is_file()
    code, _, err = run_cli("train", "--resume", run)
    assert code == 0, err
    assert "has no checkpoint yet; starting it from step 0 with its config.yaml" in err
    # The same run as the same command uninterrupted.
    straight = Trainer(resolve(raw, registry), tmp_path / "straight")
    straight.fit()
    _, state = checkpoint.load(checkpoint.find(run / "checkpoints"))
    assert state["step"] == 6
    for name in ("generator", "critic"):
        for k, v in straight.plain[name].state_dict().items():
            assert torch.equal(state["modules"][name][k], v), f"{name}.{k}"


def test_a_run_without_a_usable_checkpoint_names_the_way_out(tmp_path, registry, run_cli):
    run = tmp_path / "g"
    gan_run(run_cli, run)
    # Its checkpoints deleted, its export kept: no silent restart over generator.safetensors.
    for name in steps_in(run):
        (run / "checkpoints" / name / checkpoint.TENSOR_FILE).unlink()
    before = snapshot(run)
    line = one_line_error(*run_cli("train", "--resume", run, "--steps", "4", *QUICK)[::2])
    assert "cannot resume: checkpoint" in line and "is incomplete" in line
    assert line.endswith(
        f"to start the run again from step 0: genfw train --config {run}/config.yaml --out {run} --overwrite"
    )
    (run / "checkpoints" / checkpoint.LATEST).unlink()
    line = one_line_error(*run_cli("train", "--resume", run, "--steps", "4", *QUICK)[::2])
    assert "latest is missing; " in line and line.endswith("--overwrite")
    assert snapshot(run) == {p: b for p, b in before.items() if p.name != checkpoint.LATEST}
    # The way out works.
    code, _, err = run_cli("train", "--config", run / "config.yaml", "--out", run, "--overwrite", *QUICK)
    assert code == 0, err


# --- 4. checkpoints/latest names only this run's checkpoints ------------------------------------------


@pytest.mark.parametrize("pointer", ["relative", "absolute", "symlink"])
def test_latest_naming_another_runs_checkpoint_is_refused(tmp_path, run_cli, pointer):
    mine, other = tmp_path / "mine", tmp_path / "other"
    gan_run(run_cli, mine, steps=2)
    gan_run(run_cli, other, steps=3)
    target = other / "checkpoints" / "step_0000003"
    if pointer == "relative":
        name = "../../other/checkpoints/step_0000003"
    elif pointer == "absolute":
        name = str(target)
    else:  # a folder of the right name that is another run's checkpoint
        name = "step_0000003"
        (mine / "checkpoints" / name).symlink_to(target, target_is_directory=True)
    (mine / "checkpoints" / checkpoint.LATEST).write_text(name + "\n")
    before = snapshot(mine)
    line = one_line_error(*run_cli("eval", mine, "--metric", "mode_coverage")[::2])
    assert "which is not a checkpoint of this run: it must name a step_NNNNNNN folder inside" in line
    line = one_line_error(*run_cli("train", "--resume", mine, "--steps", "5", *QUICK)[::2])
    assert "which is not a checkpoint of this run" in line
    assert snapshot(mine) == before and not (mine / "eval.json").exists()


# --- 6. a tampered checkpoint whose sha256 was recomputed ------------------------------------------


def tamper(run: Path, edit: Callable[[dict[str, Any], dict[str, torch.Tensor]], Any]) -> None:
    """Change the latest checkpoint's ``state.json`` and tensors, and record the new sha256."""
    ckpt = checkpoint.find(run / "checkpoints")
    meta = json.loads((ckpt / checkpoint.META_FILE).read_text())
    tensors = safetensors.torch.load_file(str(ckpt / checkpoint.TENSOR_FILE))
    edit(meta, tensors)
    safetensors.torch.save_file(tensors, str(ckpt / checkpoint.TENSOR_FILE))
    meta["sha256"] = checkpoint.sha256(ckpt / checkpoint.TENSOR_FILE)
    (ckpt / checkpoint.META_FILE).write_text(json.dumps(meta))


def _moment(meta, tensors):
    tensors["optimizers/critic/state/0/exp_avg"] = torch.zeros(3, 5)


def _state(meta, tensors, path, value):
    *parents, last = path.split("/")
    node = meta["state"]
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node[p]
    node[int(last) if isinstance(node, list) else last] = value


TAMPERED = {
    "moment of the wrong shape": (_moment, "parameter 0: exp_avg has shape [3, 5], not [16, 2]"),
    "optimiser state a string": (
        lambda m, t: _state(m, t, "optimizers/critic", "adam"),
        "optimiser state must be a mapping with 'state' and 'param_groups'",
    ),
    "learning rate a string": (
        lambda m, t: _state(m, t, "optimizers/generator/param_groups/0/lr", "fast"),
        "param group 0: lr is 'fast', not like 0.0002",
    ),
    "modules a list": (lambda m, t: _state(m, t, "modules", []), "'modules' must be a mapping by name"),
    "weight of the wrong shape": (
        lambda m, t: t.update({"modules/generator/net.0.weight": torch.zeros(16, 3)}),
        "net.0.weight is torch.float32 [16, 3], the model's is torch.float32 [16, 64]",
    ),
    "rng.cpu a list": (lambda m, t: _state(m, t, "rng/cpu", [1, 2]), "rng/cpu must be a torch.uint8 tensor"),
    "rng.ranks a mapping": (
        lambda m, t: _state(m, t, "rng/ranks", {"0": 1}),
        "'rng/ranks' must be a list of each process's random states",
    ),
    "a rank's rng without cpu": (
        lambda m, t: _state(m, t, "rng/ranks", [{}]),
        "rng/ranks/0/cpu must be a torch.uint8 tensor",
    ),
    "loader position a string": (
        lambda m, t: _state(m, t, "loader/pos", "x"),
        "'loader' must hold an epoch and a position",
    ),
    "step of another folder": (
        lambda m, t: m.update(step=7),
        "state.json: step 7 disagrees with the folder's name",
    ),
    "tensor reference a list": (
        lambda m, t: _state(m, t, "rng/cpu", {"__tensor__": [1]}),
        "is corrupted",
    ),
}


@pytest.mark.parametrize("case", list(TAMPERED))
def test_tampered_checkpoint_is_refused_in_one_line_before_loading(tmp_path, run_cli, case):
    edit, expected = TAMPERED[case]
    run = tmp_path / "g"
    gan_run(run_cli, run)
    tamper(run, edit)
    before = snapshot(run)
    if case.startswith(("modules", "weight")):  # what eval reads
        line = one_line_error(*run_cli("eval", run, "--metric", "mode_coverage")[::2])
        assert expected in line
    line = one_line_error(*run_cli("train", "--resume", run, "--steps", "4", *QUICK)[::2])
    assert line.startswith("genfw: error: cannot resume: checkpoint ") and expected in line
    assert snapshot(run) == before
