"""Learning-rate schedules (``train.lr_schedule``, :mod:`genfw.schedules`): each schedule's factor
by hand, the rates a real run's optimisers step with (per phase), BEGAN's decay times a schedule,
``--resume`` bit for bit, and one-line refusals."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
import torch

import genfw
from genfw import cli
from genfw.config import resolve
from genfw.errors import GenfwError
from genfw.schedules import NAME, LRSchedule, LRScheduleOptions, Schedule
from genfw.testing import check_callback, registry_with
from genfw.train import Trainer, build, read_run

BASE = 2e-4  # the gan variant's rates, both players


def raw(steps: int = 6, variant: str = "gan", **train: Any) -> dict:
    return {
        "variant": variant,
        "dataset": "toy2d",
        "generator": {"name": "mlp", "hidden": [8]},
        "critic": {"name": "mlp", "hidden": [8]},
        "metrics": {},
        "train": {
            "steps": steps,
            "batch_size": 8,
            "log_every": 1,
            "progress": False,
            "sample_every": 0,
            "grid": 4,
            **train,
        },
    }


def record_rates(t: Trainer) -> dict[str, list[float]]:
    """The rate each optimiser step of ``t`` uses, by phase (read at the step itself)."""
    rates: dict[str, list[float]] = {name: [] for name in t._hot_optimizers}
    for name, opt in t._hot_optimizers.items():
        real_step = opt.step

        def step(*args, _real=real_step, _opt=opt, _name=name, **kwargs):
            rates[_name].append(_opt.param_groups[0]["lr"])
            return _real(*args, **kwargs)

        opt.step = step
    return rates


def logs(run) -> list[dict]:
    """The training records of ``run``'s metrics.jsonl (not those of its metrics)."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [row for row in rows if "critic/loss" in row]


# --- the factors by hand ------------------------------------------------------------------------


def test_cosine_by_hand() -> None:
    s = Schedule("cosine")
    # Half-way: (1 + cos(pi/2)) / 2 is exactly 1/2, so the rate is exactly base / 2.
    assert s.factor(50, 100) == 0.5 and BASE * s.factor(50, 100) == BASE / 2
    assert s.factor(0, 100) == 1.0
    assert s.factor(25, 100) == pytest.approx((2 + math.sqrt(2)) / 4, abs=1e-15)  # (1 + cos(pi/4)) / 2
    assert s.factor(100, 100) == 0.0 and s.factor(150, 100) == 0.0  # past the horizon: the minimum
    # A minimum of 0.1: 0.1 + 0.9 * (1 + cos(pi p)) / 2.
    m = Schedule("cosine", min_factor=0.1)
    assert m.factor(50, 100) == pytest.approx(0.55, abs=1e-15) and m.factor(100, 100) == pytest.approx(0.1)


def test_linear_decay_by_hand() -> None:
    s = Schedule("linear")
    assert [s.factor(k, 4) for k in range(6)] == [1.0, 0.75, 0.5, 0.25, 0.0, 0.0]
    m = Schedule("linear", min_factor=0.2)  # 0.2 + 0.8 * (1 - s/4)
    assert [m.factor(k, 4) for k in range(5)] == pytest.approx([1.0, 0.8, 0.6, 0.4, 0.2], abs=1e-15)


def test_step_by_hand() -> None:
    s = Schedule("step", milestones=(3, 5), gamma=0.5)  # gamma once the step reaches each milestone
    assert [s.factor(k, 10) for k in range(8)] == [1, 1, 1, 0.5, 0.5, 0.25, 0.25, 0.25]
    assert Schedule("step", milestones=(2,)).factor(2, 10) == pytest.approx(0.1)  # torch's gamma


def test_warmup_by_hand() -> None:
    # start + (1 - start) * s / W over the first W steps, then the base rate.
    assert [Schedule(warmup=4).factor(k, 100) for k in range(6)] == [0, 0.25, 0.5, 0.75, 1, 1]
    ramp = [Schedule(warmup=4, warmup_start=0.2).factor(k, 100) for k in range(5)]
    assert ramp == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0], abs=1e-15)
    # The decay runs over the steps after the warm-up: W = 2, T = 6, p = (s - 2) / 4.
    cos = Schedule("cosine", warmup=2)
    expected = [0, 0.5, 1, (1 + math.cos(math.pi / 4)) / 2, 0.5, (1 + math.cos(3 * math.pi / 4)) / 2]
    assert [cos.factor(k, 6) for k in range(6)] == pytest.approx(expected, abs=1e-15)
    lin = Schedule("linear", warmup=2)
    assert [lin.factor(k, 6) for k in range(6)] == [0, 0.5, 1, 0.75, 0.5, 0.25]
    # Milestones are absolute steps, also inside the warm-up: both factors.
    step = Schedule("step", warmup=4, milestones=(2, 5), gamma=0.5)
    assert [step.factor(k, 10) for k in range(7)] == [0, 0.25, 0.25, 0.375, 0.5, 0.25, 0.25]


# --- real runs ----------------------------------------------------------------------------------


def test_the_optimisers_step_with_each_phases_schedule(tmp_path, registry) -> None:
    # The critic on a cosine after a 2-step warm-up; the generator on its own step schedule.
    r = raw(
        6,
        lr_schedule="cosine",
        lr_warmup=2,
        lr_schedules={"generator": {"lr_schedule": "step", "lr_milestones": [3, 5], "lr_gamma": 0.5}},
    )
    t = Trainer(resolve(r, registry), tmp_path / "run")
    assert t.callbacks.names() == [NAME]
    rates = record_rates(t)
    t.fit()
    c = [0, 0.5, 1, (1 + math.cos(math.pi / 4)) / 2, 0.5, (1 + math.cos(3 * math.pi / 4)) / 2]
    assert rates["critic"] == [BASE * f for f in c]
    # The generator keeps the top level's warm-up (2 steps), then 1, 0.5 from step 3, 0.25 from 5.
    assert rates["generator"] == [BASE * f for f in (0, 0.5, 1, 0.5, 0.5, 0.25)]
    rows = logs(tmp_path / "run")
    for phase in ("critic", "generator"):  # logged as PHASE/lr (float32)
        assert [row[f"{phase}/lr"] for row in rows] == pytest.approx(rates[phase], rel=1e-6)


def test_an_autoencoders_phases_schedule_separately(tmp_path, registry) -> None:
    r = raw(3, variant="aae", lr_schedule="linear", lr_schedules={"critic": {"lr_schedule": "constant"}})
    del r["critic"]
    t = Trainer(resolve(r, registry), tmp_path / "run")
    base = {p.name: p.optim.lr for p in t.built.model.phases}
    rates = record_rates(t)
    t.fit()
    assert set(base) == {"autoencoder", "critic", "encoder"}
    assert rates["critic"] == [base["critic"]] * 3
    for phase in ("autoencoder", "encoder"):
        assert rates[phase] == pytest.approx([base[phase] * f for f in (1, 2 / 3, 1 / 3)], rel=1e-12)


def test_no_schedule_attaches_nothing(registry) -> None:
    b = build(resolve(raw(), registry))
    assert NAME not in b.callbacks.names()
    # A constant schedule without warm-up is the same.
    b = build(resolve(raw(lr_schedule="constant", lr_schedules={"critic": {"lr_warmup": 0}}), registry))
    assert NAME not in b.callbacks.names()


def test_begans_decay_times_the_schedule(tmp_path, registry) -> None:
    # BEGAN halves both rates every 2 steps (its own factor, lr_scale); the cosine multiplies it.
    tiny = {"name": "mlp", "hidden": [8]}
    r = raw(5, variant="began", lr_schedule="cosine")
    r.update(generator=tiny, critic_encoder=tiny, critic_decoder=tiny, dataset="digits")
    del r["critic"]
    r["variant"] = {"name": "began", "lr_decay": "every", "lr_decay_steps": 2}
    t = Trainer(resolve(r, registry), tmp_path / "run")
    rates = record_rates(t)
    t.fit()
    decay = (1, 1, 0.5, 0.5, 0.25)  # BEGAN's factor in steps 0..4 (test_energy's numbers)
    expected = [1e-4 * Schedule("cosine").factor(s, 5) * decay[s] for s in range(5)]
    assert rates == {"critic": expected, "generator": expected}
    assert expected[2] == 1e-4 * (1 + math.cos(math.pi * 2 / 5)) / 2 * 0.5
    # Without a schedule BEGAN's decay still applies, through the same callback.
    del r["train"]["lr_schedule"]
    t = Trainer(resolve(r, registry), tmp_path / "plain")
    assert t.callbacks.names() == [NAME]
    rates = record_rates(t)
    t.fit()
    assert rates["critic"] == [1e-4 * f for f in decay]


def test_resume_is_bit_exact(tmp_path, registry) -> None:
    def run(steps: int) -> dict:
        # The schedule's horizon is 8 steps in both runs (train.lr_steps).
        return raw(
            steps,
            lr_schedule="cosine",
            lr_warmup=2,
            lr_steps=8,
            lr_schedules={"generator": {"lr_schedule": "step", "lr_milestones": [3, 6]}},
        )

    straight = Trainer(resolve(run(8), registry), tmp_path / "straight")
    straight.fit()
    Trainer(resolve(run(4), registry), tmp_path / "split").fit()
    state = json.loads((tmp_path / "split" / "checkpoints" / "step_0000004" / "state.json").read_text())
    assert state["state"]["callbacks"][NAME] == {"horizon": 8}
    more = [("train.steps", 8)]
    resumed = Trainer(read_run(tmp_path / "split", registry, more), tmp_path / "split", resume=True)
    assert resumed.step == 4
    resumed.fit()
    for name in ("critic", "generator"):
        a, b = straight.plain[name].state_dict(), resumed.plain[name].state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
        sa, sb = straight.optimizers[name].state_dict(), resumed.optimizers[name].state_dict()
        assert [g["lr"] for g in sa["param_groups"]] == [g["lr"] for g in sb["param_groups"]]  # exactly
        for i in sa["state"]:
            assert all(torch.equal(sa["state"][i][k], sb["state"][i][k]) for k in sa["state"][i])
    assert straight.optimizers["critic"].param_groups[0]["lr"] == BASE * Schedule("cosine", warmup=2).factor(
        7, 8
    )


def test_a_resume_with_more_steps_keeps_the_horizon(tmp_path, registry) -> None:
    Trainer(resolve(raw(4, lr_schedule="linear"), registry), tmp_path / "run").fit()
    resumed = Trainer(
        read_run(tmp_path / "run", registry, [("train.steps", 6)]), tmp_path / "run", resume=True
    )
    assert dict(resumed.callbacks)[NAME].horizon == 4  # the checkpoint's, not the new train.steps
    rates = record_rates(resumed)
    resumed.fit()
    assert rates["critic"] == [0.0, 0.0]  # linear ended at step 4: its final factor, 0
    # train.lr_steps given: that horizon, on a resume too.
    Trainer(resolve(raw(4, lr_schedule="linear", lr_steps=8), registry), tmp_path / "fixed").fit()
    more = [("train.steps", 6), ("train.lr_steps", 12)]
    resumed = Trainer(read_run(tmp_path / "fixed", registry, more), tmp_path / "fixed", resume=True)
    rates = record_rates(resumed)
    resumed.fit()
    assert rates["critic"] == [BASE * (1 - 4 / 12), BASE * (1 - 5 / 12)]


def test_a_resume_without_the_schedule_trains_at_the_base_rates(tmp_path, registry) -> None:
    # The checkpoint's optimisers hold the last scheduled rate (BASE / 4 at step 3 of a linear decay
    # over 4); resumed with a constant schedule, the run trains at the base rate, as its config says.
    Trainer(resolve(raw(4, lr_schedule="linear"), registry), tmp_path / "run").fit()
    more = [("train.steps", 6), ("train.lr_schedule", "constant")]
    resumed = Trainer(read_run(tmp_path / "run", registry, more), tmp_path / "run", resume=True)
    assert NAME not in resumed.callbacks.names()
    rates = record_rates(resumed)
    resumed.fit()
    assert rates == {"critic": [BASE, BASE], "generator": [BASE, BASE]}


# --- refusals -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("train", "message"),
    [
        ({"lr_schedule": "cosin"}, "lr_schedule must be one of constant, linear, cosine, step, got 'cosin'"),
        ({"lr_warmup": 6}, r"train.lr_warmup 6 is not shorter than the schedule \(train.steps 6\)"),
        ({"lr_warmup": 10, "lr_steps": 10}, r"train.lr_warmup 10 is not shorter .*train.lr_steps 10"),
        ({"lr_schedule": "step"}, "train.lr_schedule step needs the steps at which"),
        ({"lr_schedule": "step", "lr_milestones": [2, 6]}, "last milestone 6 is not before the end"),
        ({"lr_schedule": "step", "lr_milestones": [3, 2]}, r"lr_milestones must be steps >= 1 in increasing"),
        (
            {"lr_schedule": "step", "lr_milestones": [2], "lr_min_factor": 0.1},
            "train.lr_min_factor applies to",
        ),
        ({"lr_schedule": "cosine", "lr_gamma": 0.5}, "train.lr_gamma applies to lr_schedule step; no phase"),
        ({"lr_milestones": [2]}, "train.lr_milestones applies to lr_schedule step"),
        ({"lr_warmup_start": 0.1}, "train.lr_warmup_start applies to a warm-up"),
        ({"lr_min_factor": 1.5}, r"lr_min_factor must be in \[0, 1\], got 1.5"),
        ({"lr_schedules": {"critc": {"lr_warmup": 2}}}, r"train.lr_schedules.critc: variant 'gan' has no "),
        (
            {"lr_schedules": {"critic": {"warmup": 2}}},
            r"train.lr_schedules.critic.warmup: not a key .*lr_warmup",
        ),
        (
            {"lr_schedules": {"critic": {"lr_schedule": "exp"}}},
            r"train.lr_schedules.critic: lr_schedule must",
        ),
        (
            {"lr_schedule": "cosine", "lr_schedules": {"critic": {"lr_schedule": "linear", "lr_gamma": 0.5}}},
            r"train.lr_schedules.critic.lr_gamma applies to lr_schedule step, not linear",
        ),
    ],
)
def test_bad_schedules_are_refused_in_one_line(registry, train, message) -> None:
    with pytest.raises(GenfwError, match=message) as info:
        build(resolve(raw(**train), registry))
    assert "\n" not in str(info.value)
    if "critc" in str(info.value):
        assert "did you mean critic?" in str(info.value) and "its phases: critic, generator" in str(
            info.value
        )


def test_a_top_level_key_that_one_phase_uses_is_fine(registry) -> None:
    # lr_gamma at the top level, read by the generator's step schedule only.
    r = raw(lr_gamma=0.5, lr_schedules={"generator": {"lr_schedule": "step", "lr_milestones": [2]}})
    callback = dict(build(resolve(r, registry)).callbacks)[NAME]
    assert callback.plan["generator"][1] == Schedule("step", milestones=(2,), gamma=0.5)
    assert callback.plan["critic"][1] == Schedule()


# --- the command line and the contract ----------------------------------------------------------


def test_train_help_lists_the_schedule(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert exit_.value.code == 0
    assert "--lr-schedule NAME" in out and "constant, linear, cosine or step" in out
    assert "(train.lr_schedule, default constant)" in out and "--train.lr_schedule cosine" in out
    assert "--lr-warmup N" in out and "(train.lr_warmup, default 0)" in out


def test_the_flags_train_with_a_schedule(run_cli, tmp_path) -> None:
    code, _, err = run_cli(
        "train", "--plugin", "gan", "--dataset", "toy2d", "--generator.hidden", "[8]", "--critic.hidden", "[8]",
        "--steps", "4", "--lr-schedule", "linear", "--lr-warmup", "1", "--train.lr_schedules.generator.lr_schedule",
        "constant", "--no-progress", "--train.log_every", "1", "--train.sample_every", "0", "--batch-size", "8",
        "--out", tmp_path / "run",
    )  # fmt: skip
    assert code == 0, err
    rows = logs(tmp_path / "run")
    # linear after a 1-step warm-up over T = 4: 0, then 1, 2/3, 1/3; the generator warms up only.
    assert [row["critic/lr"] for row in rows] == pytest.approx([0, BASE, BASE * 2 / 3, BASE / 3], rel=1e-6)
    assert [row["generator/lr"] for row in rows] == pytest.approx([0, BASE, BASE, BASE], rel=1e-6)
    # The run's commands rebuild it with its schedule.
    code, _, err = run_cli("sample", tmp_path / "run", "-n", "4", "--out", tmp_path / "s.safetensors")
    assert code == 0, err


class _ContractPlugin:
    @genfw.hookimpl
    def genfw_register_callbacks(self, register):
        register("lr_schedule_contract", LRSchedule, options=LRScheduleOptions)


def test_keeps_the_callback_contract() -> None:
    registry = registry_with(_ContractPlugin())
    options = {"schedules": {"critic": {"name": "cosine", "warmup": 1}}, "horizon": 4}
    check_callback("lr_schedule_contract", registry=registry, options=options, variant="gan")
