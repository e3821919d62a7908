"""Mixed precision (bf16, fp16 with one gradient scaler per phase), torch.compile and SyncBatchNorm
options of the loop, on the CPU."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch

from genfw import GenfwError, checkpoint
from genfw.config import resolve
from genfw.train import Trainer, check_compiler, read_run
from genfw_plugins.regularisers import GradientPenalty, GradientPenaltyOptions, gradient_norms


def raw(variant="wgan-gp", steps=4, **train):
    return {
        "variant": {"name": variant, "latent_dim": 2},
        "dataset": {"name": "toy2d", "size": 512},
        "generator": {"name": "mlp", "hidden": [16]},
        "critic": {"name": "mlp", "hidden": [16]},
        "metrics": {},
        "train": {"steps": steps, "batch_size": 16, "log_every": 2, "progress": False, "grid": 4, **train},
    }


def test_gradient_penalty_under_bf16_autocast_matches_float32():
    torch.manual_seed(0)
    critic_net = torch.nn.Sequential(torch.nn.Linear(2, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1))

    def critic(x, y=None):
        return critic_net(x).squeeze(1)

    real, fake = torch.randn(64, 2), torch.randn(64, 2) + 1
    gp = GradientPenalty(GradientPenaltyOptions(weight=1.0))
    ctx = {"real": real, "fake": fake, "critic": critic, "labels": None}
    torch.manual_seed(1)
    reference = gp.penalty(ctx)
    torch.manual_seed(1)  # the same interpolation weights
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = gp.penalty(ctx)
    assert mixed.dtype == torch.float32  # the norm and the penalty are computed in float32
    torch.testing.assert_close(mixed, reference, rtol=3e-2, atol=1e-3)
    mixed.backward()  # and it trains the critic
    grad = critic_net[0].weight.grad  # (the output bias has no say in the input gradient)
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_bf16_autocasts_the_phases_and_trains(tmp_path, registry):
    t = Trainer(resolve(raw(mixed_precision="bf16"), registry), tmp_path / "r")
    assert not t._scalers
    seen = []
    step = t.phases[0].step

    def spy(batch, m):
        out = step(batch, m)
        seen.append(torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16)
        return out

    t.phases[0].step = spy
    result = t.fit()
    assert seen and all(seen)
    assert result.step == 4 and result.last_logs["critic/gradient_penalty"] > 0


def test_fp16_keeps_one_gradient_scaler_per_phase_and_checkpoints_them(tmp_path, registry):
    t = Trainer(resolve(raw(mixed_precision="fp16", checkpoint_every=2), registry), tmp_path / "r")
    assert set(t._scalers) == {"critic", "generator"}
    assert t._scalers["critic"] is not t._scalers["generator"]
    t.fit()
    _, state = checkpoint.load(checkpoint.find(tmp_path / "r" / "checkpoints"))
    assert set(state["scalers"]) == {"critic", "generator"}
    # Give the two scalers different states, save, resume: each comes back to its own phase.
    t._scalers["critic"].update(new_scale=512.0)
    t._scalers["generator"].update(new_scale=64.0)
    t.save()
    resumed = Trainer(read_run(tmp_path / "r", registry, [("train.steps", 6)]), tmp_path / "r", resume=True)
    assert resumed._scalers["critic"].get_scale() == 512.0
    assert resumed._scalers["generator"].get_scale() == 64.0
    assert resumed.fit().step == 6


def test_fp16_scaler_skips_a_step_whose_gradients_overflowed(tmp_path, registry):
    t = Trainer(resolve(raw("gan", mixed_precision="fp16"), registry), tmp_path / "r")
    before = {k: v.clone() for k, v in t.plain.critic.state_dict().items()}
    step = t.phases[0].step

    def overflow(batch, m):
        out = step(batch, m)
        out.loss = out.loss * float("inf")
        return out

    t.phases[0].step = overflow
    # Scales small enough for the generator's gradients not to overflow in fp16.
    t._scalers = {n: torch.amp.GradScaler("cpu", init_scale=1.0) for n in t._scalers}
    t.train_step()
    assert all(torch.equal(before[k], v) for k, v in t.plain.critic.state_dict().items())
    assert t._scalers["critic"].get_scale() == 0.5  # backed off; the generator's scaler did not
    assert t._scalers["generator"].get_scale() == 1.0


def test_compile_without_a_cpp_compiler_is_a_one_line_error(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(GenfwError, match="needs a C\\+\\+ compiler") as info:
        check_compiler(torch.device("cpu"))
    assert "\n" not in str(info.value)
    check_compiler(torch.device("cuda"))  # nothing to check there


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("g++") is None, reason="torch.compile on the CPU needs g++")
def test_compile_trains_the_same_as_eager(tmp_path, registry):
    eager = Trainer(resolve(raw("gan", steps=3), registry), tmp_path / "eager")
    eager.fit()
    compiled = Trainer(resolve(raw("gan", steps=3, compile=True), registry), tmp_path / "compiled")
    compiled.fit()
    for name in ("generator", "critic"):
        a, b = eager.plain[name].state_dict(), compiled.plain[name].state_dict()
        assert a.keys() == b.keys()  # checkpoints of compiled runs load into eager modules
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)


def test_sync_batch_norm_is_a_no_op_on_one_process(tmp_path, registry):
    r = raw("gan", steps=2, sync_batch_norm=True)
    r["critic"].update(batch_norm=True, hidden=[16, 16])
    t = Trainer(resolve(r, registry), tmp_path / "r")
    assert any(isinstance(m, torch.nn.BatchNorm1d) for m in t.plain.critic.modules())
    assert t.fit().step == 2


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("g++") is None, reason="torch.compile on the CPU needs g++")
def test_compile_with_a_gradient_penalty_is_a_one_line_error(tmp_path, registry):
    t = Trainer(resolve(raw("wgan-gp", steps=2, compile=True), registry), tmp_path / "r")
    with pytest.raises(GenfwError, match=r"does not support the double backward.*gradient_penalty") as info:
        t.fit()
    assert "\n" not in str(info.value)


def test_gradient_norms_under_a_loss_scale_equal_the_unscaled_ones():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    x = torch.randn(8, 3)
    plain = gradient_norms(lambda v, y=None: net(v).squeeze(1), x, None)
    scaled = gradient_norms(lambda v, y=None: net(v).squeeze(1), x, None, torch.tensor(65536.0))
    torch.testing.assert_close(scaled, plain)
    # By hand for a linear critic: the gradient is the weight vector for every example.
    lin = torch.nn.Linear(3, 1)
    norms = gradient_norms(lambda v, y=None: lin(v).squeeze(1), x, None, torch.tensor(8.0))
    torch.testing.assert_close(norms, lin.weight.norm().expand(8))


def test_fp16_hands_each_phase_its_loss_scale_for_gradient_penalties(tmp_path, registry):
    t = Trainer(resolve(raw("wgan-gp", steps=1, mixed_precision="fp16"), registry), tmp_path / "r")
    t._scalers["critic"] = torch.amp.GradScaler("cpu", init_scale=256.0)
    seen = []
    gp = t._regs["critic"][0][1]
    penalty = gp.penalty

    def spy(ctx):
        seen.append(ctx["grad_scale"].item())
        return penalty(ctx)

    gp.penalty = spy
    t.train_step()
    assert seen and seen[0] == 256.0


def test_fp16_overflows_the_scaler_skips_are_not_a_divergence(tmp_path, registry):
    """A gradient penalty on scaled gradients overflows at a large loss scale (with dcgan critics
    on digits, at fp16's first, 2**16): the scaler skips those steps and backs off. The run goes on,
    checkpoints, and logs the means of the finite values; the skipped steps' are left out."""
    cfg = raw("wgan-gp", steps=40, mixed_precision="fp16", log_every=1, checkpoint_every=1)
    t = Trainer(resolve(cfg, registry), tmp_path / "r")
    t._scalers["critic"] = torch.amp.GradScaler("cpu", init_scale=2.0**40)  # overflows at first
    result = t.fit()  # before: "training diverged at step 1: critic/gradient_penalty ... not finite"
    scale = t._scalers["critic"].get_scale()
    assert result.step == 40 and scale < 2.0**20  # it backed off through many skipped steps
    assert checkpoint.find(tmp_path / "r" / "checkpoints").name == "step_0000040"
    lines = (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()
    penalties = [json.loads(line).get("critic/gradient_penalty") for line in lines]
    assert any(p is None or p != p or p == float("inf") for p in penalties[:5])  # skipped: NaN (no finite)
    assert all(isinstance(p, float) and math.isfinite(p) for p in penalties[-5:])


def test_fp16_run_whose_every_step_overflows_still_diverges(tmp_path, registry):
    """A loss that is never finite drives the scale below MIN_LOSS_SCALE: a one-line divergence."""
    t = Trainer(
        resolve(raw("wgan-gp", steps=200, mixed_precision="fp16", log_every=1), registry), tmp_path / "r"
    )
    step = t.phases[0].step

    def broken(batch, m):
        out = step(batch, m)
        out.loss = out.loss * float("nan")
        return out

    t.phases[0].step = broken
    with pytest.raises(
        GenfwError, match=r"training diverged at step \d+: critic/loss.*fp16 loss scale fell to"
    ):
        t.fit()
    assert t.step < 60  # from 2**16 below 2**-10: 27 skipped steps
