"""The consistency penalty and the warm-up against values computed by hand, genfw's contracts for
both, and a resumed run that continues bit for bit."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import torch
from genfw import GenfwError, Model, Optim, Phase, PhaseOutput
from genfw.contracts import LoopState
from genfw.testing import registry_with, run_phase, small_run
from safetensors.torch import load_file

import genfw_cr
from genfw_cr import Consistency, ConsistencyOptions, LinearWarmup, WarmupOptions, augment, shift_and_flip


@pytest.fixture(scope="module")
def genfw_registry():
    # genfw's fixture is the registry of the installed plugins; this one also holds genfw_cr when
    # its tests run from a checkout that is not installed (registry_with adds it only once).
    return registry_with(genfw_cr)


# --- the augmentation -----------------------------------------------------------------------------

IMAGE = torch.arange(1.0, 10.0).view(1, 1, 3, 3)  # [[1, 2, 3], [4, 5, 6], [7, 8, 9]]


def T(dy: int, dx: int, flip: bool) -> torch.Tensor:
    return shift_and_flip(IMAGE, torch.tensor([dy]), torch.tensor([dx]), torch.tensor([flip]))[0, 0]


def test_shifts_fill_the_border_by_reflection():
    # Reflection pads row [1, 2, 3] as [2 | 1, 2, 3 | 2]: moved right by one it reads [2, 1, 2].
    assert T(0, 1, False).tolist() == [[2, 1, 2], [5, 4, 5], [8, 7, 8]]
    assert T(0, -1, False).tolist() == [[2, 3, 2], [5, 6, 5], [8, 9, 8]]
    assert T(1, 0, False).tolist() == [[4, 5, 6], [1, 2, 3], [4, 5, 6]]
    # Column [1, 4, 7] padded by two, [7, 4 | 1, 4, 7 | 4, 1], moved up by two reads [7, 4, 1].
    assert T(-2, 0, False).tolist() == [[7, 8, 9], [4, 5, 6], [1, 2, 3]]
    assert T(0, 0, True).tolist() == [[3, 2, 1], [6, 5, 4], [9, 8, 7]]  # left-right flip
    # Flip first, then move: [3, 2, 1] moved right by one is [2, 3, 2]; then down by one.
    assert T(1, 1, True).tolist() == [[5, 6, 5], [2, 3, 2], [5, 6, 5]]


def test_each_image_gets_its_own_draw_uniformly():
    # translate 1: 3 x 3 shifts, times flipped or not: 18 distinct outcomes of probability 1/18.
    image = torch.randperm(25, generator=torch.Generator().manual_seed(0)).float().view(1, 1, 5, 5)

    def t(dy, dx, f):
        return shift_and_flip(image, torch.tensor([dy]), torch.tensor([dx]), torch.tensor([f]))[0, 0]

    outcomes = [t(dy, dx, f) for dy in (-1, 0, 1) for dx in (-1, 0, 1) for f in (False, True)]
    assert len({tuple(o.flatten().tolist()) for o in outcomes}) == 18
    torch.manual_seed(0)
    n = 3600
    out = augment(image.expand(n, 1, 5, 5), 1, True)
    which = torch.stack([(out[:, 0] == o).all(-1).all(-1) for o in outcomes], 1)  # (n, 18)
    assert (which.sum(1) == 1).all()  # every image is one of them
    counts = which.sum(0).double()
    p = 1 / 18
    assert ((counts - n * p).abs() < 4 * math.sqrt(n * p * (1 - p))).all(), counts
    # Without flip: the 9 shifts only, never a mirrored image.
    out = augment(image.expand(n, 1, 5, 5), 1, False)
    which = torch.stack([(out[:, 0] == o).all(-1).all(-1) for o in outcomes], 1)
    assert (which[:, 0::2].sum(1) == 1).all() and not which[:, 1::2].any()


# --- the penalty ----------------------------------------------------------------------------------

W = torch.tensor([[1.0, 2.0], [3.0, 5.0]])


def linear_critic(seen: list):
    def critic(x, y=None):
        seen.append(y)
        return (x[:, 0] * W).sum((1, 2))  # D(x) = <W, x>, (B,)

    return critic


REAL = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]], [[[0.0, 0.0], [1.0, 3.0]]]])  # (2, 1, 2, 2)
FAKE = torch.tensor([[[[1.0, 0.0], [2.0, 0.0]]], [[[0.0, 1.0], [0.0, 0.0]]]])


def penalty(monkeypatch, **options) -> tuple[torch.Tensor, list]:
    # T is a fixed left-right flip of every image.
    monkeypatch.setattr(genfw_cr, "augment", lambda x, translate, flip: x.flip(3))
    seen: list = []
    labels = torch.tensor([3, 1])
    reg = Consistency(ConsistencyOptions(**options))
    value = reg.penalty({"real": REAL, "fake": FAKE, "critic": linear_critic(seen), "labels": labels})
    assert all(y is labels for y in seen)  # both scores are conditioned on the batch's labels
    return value, seen


def test_cr_penalty_by_hand(monkeypatch):
    # Real: D = 1 and D(flip) = 2 -> (1 - 2)^2 = 1;  D = 3 + 15 = 18 and D(flip) = 9 + 5 = 14 -> 16.
    # Mean 8.5, times lambda 10.
    value, seen = penalty(monkeypatch)
    assert value.item() == pytest.approx(85.0)
    assert len(seen) == 2  # CR scores the real batch and its augmentation, no fakes


def test_bcr_adds_the_fakes_by_hand(monkeypatch):
    # Fake: D = 1 + 6 = 7 and D(flip) = 2 + 10 = 12 -> 25;  D = 2 and D(flip) = 1 -> 1. Mean 13.
    value, seen = penalty(monkeypatch, weight_fake=4.0)
    assert value.item() == pytest.approx(85.0 + 4 * 13.0) and len(seen) == 4
    value, seen = penalty(monkeypatch, weight_real=0.0, weight_fake=4.0)  # fakes alone
    assert value.item() == pytest.approx(4 * 13.0) and len(seen) == 2


def test_gradient_reaches_both_scores(monkeypatch):
    # d/dW of lambda * mean (<W, x> - <W, T x>)^2 = lambda * mean 2 (<W, x - T x>) (x - T x).
    monkeypatch.setattr(genfw_cr, "augment", lambda x, translate, flip: x.flip(3))
    w = W.clone().requires_grad_()
    reg = Consistency(ConsistencyOptions())
    value = reg.penalty(
        {"real": REAL, "fake": FAKE, "critic": lambda x, y=None: (x[:, 0] * w).sum((1, 2)), "labels": None}
    )
    value.backward()
    d = REAL[:, 0] - REAL[:, 0].flip(2)  # (2, 2, 2)
    expected = 10 * (2 * (d * W).sum((1, 2)).view(2, 1, 1) * d).mean(0)
    torch.testing.assert_close(w.grad, expected)


def test_translate_defaults_to_an_eighth_of_the_side():
    reg = Consistency(ConsistencyOptions())
    assert reg.shift((3, 32, 32)) == 4 and reg.shift((1, 8, 8)) == 1 and reg.shift((1, 4, 4)) == 0
    assert Consistency(ConsistencyOptions(translate=3)).shift((1, 8, 8)) == 3


# --- in a genfw run -------------------------------------------------------------------------------


def test_keeps_genfws_regulariser_contract(genfw_contract):
    # Attached to a critic phase that provides real, fake, critic and labels: a finite scalar whose
    # gradient reaches the critic (genfw's own kit picks the variant and an image data set).
    genfw_contract("regulariser", "consistency")
    genfw_contract("regulariser", "consistency", options={"weight_fake": 10.0, "translate": 2})


def test_attached_to_the_critic_phase_of_a_gan(genfw_registry):
    run = small_run(
        "gan", registry=genfw_registry, datasets=("digits",), extra={"regularisers": {"consistency": {}}}
    )
    assert [n for n, _ in run.built.regularisers["critic"]] == ["consistency"]
    assert not run.built.regularisers["generator"]
    _, _, terms = run_phase(run, "critic")
    assert torch.isfinite(terms["consistency"]) and terms["consistency"] > 0


@pytest.mark.parametrize(
    ("options", "dataset", "message"),
    [
        (
            {},
            "toy2d",
            r"consistency flips and shifts images \(C, H, W\); this data set has samples of shape \(2,\)",
        ),
        (
            {"translate": 8},
            "digits",
            r"translate 8 needs images larger than 8 pixels .* got 8x8; use translate 0..7",
        ),
        ({"weight_real": 0.0}, "digits", "weight_real and weight_fake are both 0"),
        ({"translate": 0, "flip": False}, "digits", "the augmentation would change nothing"),
        ({"weight_fake": -1.0}, "digits", "weight_fake must be >= 0, got -1.0"),
    ],
)
def test_refuses_what_it_cannot_do_in_one_line(genfw_registry, options, dataset, message):
    with pytest.raises(GenfwError, match=message) as info:
        small_run(
            "gan",
            registry=genfw_registry,
            datasets=(dataset,),
            extra={"regularisers": {"consistency": options}},
        )
    assert "\n" not in str(info.value)


def test_a_variant_without_a_critic_phase_is_refused(genfw_registry):
    with pytest.raises(GenfwError, match="consistency"):
        small_run(
            "vae", registry=genfw_registry, datasets=("digits",), extra={"regularisers": {"consistency": {}}}
        )


# --- the warm-up ----------------------------------------------------------------------------------


def optimizer(*rates: float) -> torch.optim.Optimizer:
    groups = [{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": lr} for lr in rates]
    return torch.optim.SGD(groups)


def fire(cb: LinearWarmup, step: int, phase: str = "critic", **optimizers) -> PhaseOutput:
    out = PhaseOutput(torch.tensor(0.0))
    cb.on_phase_output(phase, out, LoopState(step, {}, {}, optimizers))
    return out


def test_warmup_factor_by_hand():
    cb = LinearWarmup(WarmupOptions(steps=4, start_factor=0.2))
    # 0.2 + 0.8 * min(s, 4) / 4
    assert [cb.factor(s) for s in range(7)] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0, 1.0, 1.0])
    assert cb.factor(4) == 1.0 and cb.factor(100) == 1.0  # exactly the base rate after the warm-up


def test_each_phase_sets_its_optimisers_groups_from_their_base_rates():
    cb = LinearWarmup(WarmupOptions(steps=4, start_factor=0.2))
    d, g = optimizer(1.0, 0.5), optimizer(0.1)
    for step, f in [(0, 0.2), (1, 0.4), (1, 0.4), (3, 0.8), (9, 1.0)]:  # step 1 twice: no compounding
        out = fire(cb, step, "critic", critic=d, generator=g)
        assert [x["lr"] for x in d.param_groups] == pytest.approx([f, 0.5 * f])
        assert out.logs["lr_factor"].dtype == torch.float32 and out.logs["lr_factor"].item() == pytest.approx(
            f
        )
        out = fire(cb, step, "generator", critic=d, generator=g)
        assert g.param_groups[0]["lr"] == pytest.approx(0.1 * f)
    assert cb.state_dict() == {"base_lr/critic/0": 1.0, "base_lr/critic/1": 0.5, "base_lr/generator/0": 0.1}


def test_resumed_warmup_keeps_the_base_rates():
    cb = LinearWarmup(WarmupOptions(steps=4, start_factor=0.2))
    d = optimizer(1.0)
    fire(cb, 1, critic=d)
    # A resumed run: a fresh callback, the optimiser restored with the warmed-down rate 0.4.
    again = LinearWarmup(WarmupOptions(steps=4, start_factor=0.2))
    again.load_state_dict(cb.state_dict())
    fire(again, 2, critic=d)
    assert d.param_groups[0]["lr"] == pytest.approx(0.6)  # 1.0 * 0.6, not 0.4 * 0.6


def test_a_variants_own_rate_schedule_is_multiplied_not_replaced():
    # A phase with lr_scale (BEGAN's decay): the loop sets optim.lr * lr_scale() before each step;
    # the warm-up multiplies that rate instead of restoring the first one it saw.
    model = Model(
        modules={},
        phases=[
            Phase("critic", (), lambda batch, m: None, Optim("adam", 1.0), lr_scale=lambda: 0.5),
            Phase("generator", (), lambda batch, m: None, Optim("adam", 1.0)),
        ],
        sample=lambda m, n, y=None: None,
    )
    cb = LinearWarmup(WarmupOptions(steps=4, start_factor=0.2))
    cb.on_model_built(model, None, None)
    d, g = optimizer(0.5), optimizer(1.0)
    for step, decayed in [(0, 0.5), (1, 0.5), (2, 0.25)]:
        d.param_groups[0]["lr"] = decayed  # what the loop sets: optim.lr * lr_scale()
        fire(cb, step, "critic", critic=d, generator=g)
        fire(cb, step, "generator", critic=d, generator=g)
        f = 0.2 + 0.2 * step
        assert d.param_groups[0]["lr"] == pytest.approx(decayed * f)
        assert g.param_groups[0]["lr"] == pytest.approx(f)
    assert cb.state_dict() == {"base_lr/generator/0": 1.0}


def test_genfws_own_schedule_is_multiplied_not_replaced(genfw_registry):
    # train.lr_schedule cosine: genfw's callback lr_schedule sets every phase's rate before each
    # repeat (2e-4 times the cosine's factor over 8 steps); the warm-up multiplies that rate.
    run = small_run(
        "gan",
        registry=genfw_registry,
        datasets=("toy2d",),
        extra={
            "regularisers": {"lr_warmup": {"steps": 4, "start_factor": 0.2}},
            "train": {"steps": 8, "lr_schedule": "cosine"},
        },
    )
    assert run.built.callbacks.names() == ["lr_schedule", "lr_warmup"]
    optimizers = {
        p.name: torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))]) for p in run.built.model.phases
    }
    for step in range(6):
        for phase in optimizers:
            state = LoopState(step, run.modules, run.modules, optimizers)
            run.built.callbacks.phase_start(phase, state)
            run.built.callbacks.phase_output(phase, PhaseOutput(torch.tensor(0.0)), state)
            cosine = (1 + math.cos(math.pi * step / 8)) / 2
            warm = 0.2 + 0.8 * min(step, 4) / 4
            assert optimizers[phase].param_groups[0]["lr"] == pytest.approx(2e-4 * cosine * warm, rel=1e-12)


def test_keeps_genfws_callback_contract(genfw_contract):
    genfw_contract("callback", "lr_warmup", options={"steps": 3})


# --- a resumed run --------------------------------------------------------------------------------

INSTALLED = any(ep.value == "genfw_cr" for ep in entry_points(group="genfw"))
RUN = (
    "--plugin", "gan", "--critic", "dcgan", "--generator", "dcgan", "--regulariser", "consistency",
    "--regulariser.consistency.weight_fake", "10", "--regulariser", "lr_warmup",
    "--regulariser.lr_warmup.steps", "10", "--batch-size", "16", "--train.log_every", "1",
    "--train.checkpoint_every", "3", "--no-progress",
)  # fmt: skip


def genfw(*args, cwd: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "genfw", *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def last_checkpoint(run: Path) -> tuple[dict, dict]:
    folder = run / "checkpoints" / "step_0000006"
    return json.loads((folder / "state.json").read_text()), load_file(folder / "state.safetensors")


@pytest.mark.skipif(
    not INSTALLED, reason="genfw-cr is not installed (pip install -e .): the CLI cannot see it"
)
def test_a_resumed_run_is_the_straight_run_bit_for_bit(tmp_path):
    # 6 steps straight against 3 steps, then --resume to 6, inside the 10-step warm-up.
    genfw("train", *RUN, "--steps", "6", "--out", tmp_path / "straight", cwd=tmp_path)
    genfw("train", *RUN, "--steps", "3", "--out", tmp_path / "split", cwd=tmp_path)
    genfw("train", "--resume", tmp_path / "split", "--steps", "6", "--no-progress", cwd=tmp_path)
    (state_a, tensors_a), (state_b, tensors_b) = (
        last_checkpoint(tmp_path / "straight"),
        last_checkpoint(tmp_path / "split"),
    )
    assert tensors_a.keys() == tensors_b.keys()
    for key in tensors_a:  # weights, optimiser moments, every buffer
        assert torch.equal(tensors_a[key], tensors_b[key]), key
    assert state_a == state_b  # learning rates, the callback's state, random state
    # The rates of step 5 (the last trained): 2e-4 * (0.1 + 0.9 * 5 / 10), base rates kept.
    for phase in ("critic", "generator"):
        assert state_b["state"]["optimizers"][phase]["param_groups"][0]["lr"] == pytest.approx(
            2e-4 * (0.1 + 0.9 * 0.5)
        )
    assert state_b["state"]["callbacks"]["lr_warmup"] == {
        "base_lr/critic/0": 2e-4,
        "base_lr/generator/0": 2e-4,
    }
    logs = [json.loads(line) for line in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    factors = [r["critic/lr_factor"] for r in logs if "critic/lr_factor" in r]
    assert factors == pytest.approx([0.1 + 0.09 * s for s in range(6)])
