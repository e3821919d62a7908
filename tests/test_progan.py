"""ProGAN: the growth schedule, its layers against hand-computed values, and exact resume mid-fade."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from genfw import Batch, GenfwError, Modules
from genfw.config import resolve
from genfw.train import Trainer, read_run
from genfw_plugins._layers import (
    EqualizedConv2d,
    EqualizedLinear,
    MinibatchStdDev,
    group_size_for,
    pixel_norm,
)
from genfw_plugins.progan import num_stages, progress, real_at, resolution


def test_alpha_schedule_is_linear_during_each_fade_then_stable():
    # 3 stages (4, 8, 16 px), stage 0 stable for 100 images, each later stage: fade 50, stable 100.
    def p(i):
        return progress(i, 3, fade_images=50, stable_images=100)

    assert p(0) == (0, 1.0) and p(99) == (0, 1.0)
    assert p(100) == (1, 0.0)
    assert p(110) == (1, 0.2)
    assert p(125) == (1, 0.5)
    assert p(149) == (1, 49 / 50)
    assert p(150) == (1, 1.0) and p(249) == (1, 1.0)
    assert p(250) == (2, 0.0)
    assert p(290) == (2, 0.8)
    assert p(300) == (2, 1.0) and p(10**9) == (2, 1.0)  # the last stage trains for ever
    assert progress(500, 1, 50, 100) == (0, 1.0)  # 4x4 data: one stage
    assert progress(100, 2, 0, 100) == (1, 1.0)  # no fade: straight to alpha 1


def test_resolution_schedule_and_real_images_at_each_stage():
    assert [num_stages(s) for s in (4, 8, 16, 32, 256)] == [1, 2, 3, 4, 7]
    assert [resolution(s) for s in range(4)] == [4, 8, 16, 32]
    x = torch.arange(2 * 1 * 8 * 8, dtype=torch.float32).reshape(2, 1, 8, 8)
    # Stage 0: 2x2 average pooling of the 8x8 images, by hand.
    by_hand = x.reshape(2, 1, 4, 2, 4, 2).mean(dim=(3, 5))
    assert torch.equal(real_at(x, 0, 1.0), by_hand)
    assert torch.equal(real_at(x, 1, 1.0), x)
    # Mid-fade at 8x8: (1 - a) * upsampled 4x4 + a * 8x8.
    a = 0.25
    up = by_hand.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    torch.testing.assert_close(real_at(x, 1, a), (1 - a) * up + a * x)


def test_equalised_learning_rate_scales_weights_by_the_he_constant():
    torch.manual_seed(0)
    lin = EqualizedLinear(50, 30)
    assert lin.scale == pytest.approx(math.sqrt(2) / math.sqrt(50))
    with torch.no_grad():
        lin.bias.normal_()
    x = torch.randn(4, 50)
    torch.testing.assert_close(lin(x), x @ (lin.weight * math.sqrt(2 / 50)).T + lin.bias)
    # Stored weights are N(0, 1) draws (the scaling is not baked in).
    big = EqualizedLinear(512, 512)
    assert abs(big.weight.std().item() - 1.0) < 0.01 and abs(big.weight.mean().item()) < 0.01

    conv = EqualizedConv2d(3, 5, 3, gain=1.0)
    assert conv.scale == pytest.approx(1 / math.sqrt(3 * 3 * 3))
    img = torch.randn(2, 3, 6, 6)
    ref = F.conv2d(img, conv.weight / math.sqrt(27), conv.bias, padding=1)
    torch.testing.assert_close(conv(img), ref)
    # The gradient w.r.t. the stored weight carries the constant too (that is the point).
    conv(img).sum().backward()
    w = conv.weight.detach().clone().requires_grad_(True)
    F.conv2d(img, w / math.sqrt(27), conv.bias.detach(), padding=1).sum().backward()
    torch.testing.assert_close(conv.weight.grad, w.grad)


def test_pixel_norm_by_hand():
    x = torch.tensor([[3.0, 4.0], [0.0, 2.0]])
    out = pixel_norm(x, eps=0.0)
    torch.testing.assert_close(
        out, torch.tensor([[3 / math.sqrt(12.5), 4 / math.sqrt(12.5)], [0.0, math.sqrt(2)]])
    )
    # Per pixel over channels for feature maps: every pixel's channel vector has mean square 1.
    maps = torch.randn(2, 8, 3, 3) * 5
    assert torch.allclose(pixel_norm(maps).square().mean(dim=1), torch.ones(2, 3, 3), atol=1e-5)


def test_pixel_norm_is_safe_in_half_precision():
    # In fp16 eps = 1e-8 rounds to 0 and 300^2 overflows: the norm is taken in float32.
    x = torch.tensor([[0.0, 0.0], [300.0, 400.0]], dtype=torch.float16)
    out = pixel_norm(x)
    assert out.dtype == torch.float16
    torch.testing.assert_close(
        out.float(),
        torch.tensor([[0.0, 0.0], [300 / math.sqrt(125000), 400 / math.sqrt(125000)]]),
        rtol=1e-3,
        atol=1e-3,
    )


def test_minibatch_stddev_by_hand():
    # B = 4, group size 2: groups are examples {0, 2} and {1, 3} (the authors' reshape).
    x = torch.zeros(4, 2, 1, 1)
    x[:, 0, 0, 0] = torch.tensor([1.0, 10.0, 3.0, 10.0])  # group {0,2}: 1, 3 -> std 1; group {1,3}: std 0
    x[:, 1, 0, 0] = torch.tensor([0.0, 2.0, 4.0, 6.0])  # group {0,2}: 0, 4 -> std 2; {1,3}: 2, 6 -> std 2
    out = MinibatchStdDev(group_size=2, eps=0.0)(x)
    assert out.shape == (4, 3, 1, 1)
    assert torch.equal(out[:, :2], x)
    torch.testing.assert_close(out[:, 2, 0, 0], torch.tensor([1.5, 1.0, 1.5, 1.0]))
    # Against a direct loop on random maps: group g = i mod (B / G), biased std, averaged.
    torch.manual_seed(1)
    x = torch.randn(6, 3, 2, 2)
    out = MinibatchStdDev(group_size=4)(x)  # 6 is not a multiple of 4: groups of 3
    assert group_size_for(6, 4) == 3
    for i in range(6):
        members = x[[j for j in range(6) if j % 2 == i % 2]]
        expected = (members.var(dim=0, unbiased=False) + 1e-8).sqrt().mean()
        torch.testing.assert_close(out[i, 3], torch.full((2, 2), expected.item()))


def progan_raw(steps, **variant):
    return {
        "variant": {"name": "progan", "channels": 16, "min_channels": 8, "latent_dim": 8, **variant},
        "dataset": "digits",
        "metrics": {},
        "train": {
            "steps": steps,
            "batch_size": 8,
            "log_every": 2,
            "progress": False,
            "grid": 4,
            "sample_every": 0,
            "checkpoint_every": 0,
        },
    }


def test_resume_mid_fade_restores_stage_and_alpha_and_continues_exactly(tmp_path, registry):
    # 8x8 digits: 4x4 for 5 steps of 8 images, then 8x8 fades in over 10 steps.
    schedule = {"stable_images": 40, "fade_images": 80}
    straight = Trainer(resolve(progan_raw(12, **schedule), registry), tmp_path / "straight")
    straight.fit()
    split = Trainer(resolve(progan_raw(8, **schedule), registry), tmp_path / "split")
    split.fit()
    variant = split.built.model.phases[0].step.__self__
    assert variant.stage() == (1, pytest.approx(0.3))  # (64 - 40) / 80
    cfg = read_run(tmp_path / "split", registry, [("train.steps", 12)])
    resumed = Trainer(cfg, tmp_path / "split", resume=True)
    rv = resumed.built.model.phases[0].step.__self__
    assert resumed.step == 8 and resumed.plain.generator.images == 64
    assert rv.stage() == (1, pytest.approx(0.3))
    resumed.fit()
    assert rv.stage() == (1, pytest.approx(0.7))
    for name in ("generator", "critic", "generator_ema"):  # the EMA of G is on by default
        a, b = straight.plain[name].state_dict(), resumed.plain[name].state_dict()
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), f"{name}.{k} differs after resuming mid-fade"
    # Blocks of the 8x8 stage trained once they faded in; samples are full size at every stage.
    g = resumed.plain.generator
    assert int(g.images_seen) == 96
    assert resumed.built.model.sample(resumed.plain, 3, None).shape == (3, 1, 8, 8)


def test_samples_are_upsampled_to_full_size_and_grids_are_written(tmp_path, registry):
    raw = progan_raw(4, stable_images=10**6)
    raw["train"]["sample_every"] = 2
    t = Trainer(resolve(raw, registry), tmp_path / "r")
    t.fit()
    variant = t.built.model.phases[0].step.__self__
    assert variant.stage() == (0, 1.0)
    s = t.built.model.sample(t.plain, 5, None)
    assert s.shape == (5, 1, 8, 8)
    # 4x4 content upsampled by nearest neighbour: every 2x2 block is constant.
    assert torch.equal(s, s[:, :, ::2, ::2].repeat_interleave(2, 2).repeat_interleave(2, 3))
    assert sorted(p.name for p in (tmp_path / "r" / "samples").iterdir()) == [
        "step_0000002.png",
        "step_0000004.png",
    ]
    logged = (tmp_path / "r" / "metrics.jsonl").read_text()
    assert '"generator/resolution": 4.0' in logged and '"critic/drift"' in logged


def test_critic_objective_is_wgan_gp_plus_the_drift_term(registry):
    from genfw.train import build

    built = build(resolve(progan_raw(1), registry))
    model, (reg_name, gp) = built.model, built.regularisers["critic"][0]
    assert reg_name == "gradient_penalty" and gp.weight == 10.0 and gp.center == 1.0
    variant = model.phases[0].step.__self__
    torch.manual_seed(0)
    x = torch.randn(8, 1, 8, 8)
    batch = Batch(x, torch.full((8,), -1))
    out = model.phases[0].step(batch, Modules(model.modules))
    real, fake = out.context["real_scores"], out.context["fake_scores"]
    # L_D = E D(G(z)) - E D(x) + 0.001 E D(x)^2 (before the gradient penalty, which is added by
    # the regulariser), at stage 0 on 4x4 pooled reals.
    assert out.context["real"].shape == (8, 1, 4, 4)
    expected = fake.mean() - real.mean() + 0.001 * real.square().mean()
    torch.testing.assert_close(out.loss, expected)
    assert variant.options.eps_drift == 0.001


def test_ema_samples_at_the_training_stage(tmp_path, registry):
    # The EMA copy of the generator does not count images: samples follow the live schedule.
    raw = progan_raw(6, stable_images=16, fade_images=16)
    raw["regularisers"] = {"ema": {}}
    t = Trainer(resolve(raw, registry), tmp_path / "r")
    t.fit()
    variant = t.built.model.phases[0].step.__self__
    assert variant.stage() == (1, 1.0)  # 48 images: 16 at 4x4, 16 fading, then 8x8
    s = t.built.model.sample(t.sampling_modules(), 4, None)
    # At 8x8 the samples are not 4x4 content upsampled (2x2 blocks would be constant).
    assert not torch.equal(s, s[:, :, ::2, ::2].repeat_interleave(2, 2).repeat_interleave(2, 3))
    ema = t.plain.generator_ema.average
    torch.manual_seed(3)
    z = torch.randn(4, 8)
    torch.manual_seed(3)
    assert torch.equal(t.built.model.sample(t.sampling_modules(), 4, None), ema(z, stage=1, alpha=1.0))


def test_optimiser_state_is_reset_when_a_fade_starts_and_when_it_ends(tmp_path, registry):
    # Batches of 8; 4x4 for 2 steps, the 8x8 fade over 3 steps, then 8x8 stable.
    raw = progan_raw(7, stable_images=16, fade_images=24)
    t = Trainer(resolve(raw, registry), tmp_path / "r")

    def adam_steps():
        opt = t.optimizers["generator"]
        states = list(getattr(opt, "optimizer", opt).state.values())
        return int(states[0]["step"]) if states else 0

    seen = []
    for _ in range(7):
        t.train_step()
        seen.append(adam_steps())
    # Step k trains on images 8(k-1)..8k-1: epochs 0, 0 | 1, 1, 1 (fading) | 2, 2 (stable 8x8).
    assert seen == [1, 2, 1, 2, 3, 1, 2]
    assert t.state()["stage"] == 2  # the schedule's regime, kept by checkpoints
    raw["variant"]["reset_optimizers"] = False
    t = Trainer(resolve(raw, registry), tmp_path / "r2")
    for _ in range(7):
        t.train_step()
    assert adam_steps() == 7


def test_schedule_needs_images_per_stage(registry):
    with pytest.raises(GenfwError, match="fade_images \\+ stable_images must be at least 1"):
        resolve(progan_raw(1, stable_images=0, fade_images=0), registry)


def test_progan_refuses_non_square_or_non_power_of_two_data(registry):
    from genfw.train import build

    raw = progan_raw(2)
    raw["dataset"] = "toy2d"
    with pytest.raises(GenfwError, match="progan grows square images"):
        build(resolve(raw, registry))


def test_networks_grow_to_larger_images_and_fade_in_by_linear_blending(registry):
    from genfw import BuildContext, DataInfo

    spec = resolve(
        {"variant": {"name": "progan", "channels": 16, "min_channels": 4, "latent_dim": 8}}, registry
    )
    variant = spec.variant.build()
    model = variant.build(BuildContext(components=spec.slots, data=DataInfo(shape=(3, 16, 16))))
    g, d = model.modules["generator"], model.modules["critic"]
    assert variant.n_stages == 3 and g.widths == [16, 8, 4]
    torch.manual_seed(0)
    z = torch.randn(4, 8)
    for stage, side in enumerate((4, 8, 16)):
        img = g(z, stage=stage, alpha=1.0)
        assert img.shape == (4, 3, side, side)
        assert d(img, stage=stage, alpha=1.0).shape == (4, 1)
    # Mid-fade at 16x16: (1 - a) * upsampled 8x8 image of to_rgb[1] + a * to_rgb[2] of the new block.
    a = 0.3
    with torch.no_grad():
        old = g(z, stage=1, alpha=1.0)  # to_rgb[1] of the 8x8 features
        new = g(z, stage=2, alpha=1.0)
        mid = g(z, stage=2, alpha=a)
    torch.testing.assert_close(mid, (1 - a) * F.interpolate(old, scale_factor=2) + a * new)
    # At alpha 0 the critic sees exactly what its previous stage saw of the pooled image.
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(d(x, stage=2, alpha=0.0), d(F.avg_pool2d(x, 2), stage=1, alpha=1.0))
    # Every parameter gets a gradient (zero where unused), so DDP needs no unused-parameter search.
    d(g(z, stage=0, alpha=1.0), stage=0, alpha=1.0).sum().backward()
    assert all(p.grad is not None for p in [*g.parameters(), *d.parameters()])
    assert all(p.grad.abs().sum() == 0 for p in g.blocks.parameters())


def test_experience_replay_is_refused_in_one_line(registry):
    from genfw.train import build

    raw = progan_raw(1)
    raw["regularisers"] = {"experience_replay": {}}
    with pytest.raises(GenfwError, match="resolution grows during training") as info:
        build(resolve(raw, registry))
    assert "\n" not in str(info.value)


def test_spectral_norm_normalises_every_weight_of_the_equalised_networks(registry):
    """ProGAN's layers are equalised (``c W``, neither nn.Linear nor nn.Conv2d): spectral_norm
    normalises each of them, so the weight a layer uses, ``c W / sigma(c W)``, has spectral norm 1."""
    from genfw.train import build
    from tests.test_tricks import sn_weights

    raw = progan_raw(1)
    raw["regularisers"] = {"spectral_norm": {"generator": True}}
    b = build(resolve(raw, registry))
    for name in ("critic", "generator"):
        net = b.model.modules[name]
        weights = [p for p in net.parameters() if p.dim() >= 2]
        done = sn_weights(net)
        assert len(weights) > 5 and all(id(p) in done for p in weights), name
        layers = [m for m in net.modules() if isinstance(m, (EqualizedLinear, EqualizedConv2d))]
        assert len(layers) == len(weights)
        for layer in layers:
            for _ in range(100):  # one power iteration per access in training mode
                layer.weight  # noqa: B018
            used = (layer.weight * layer.scale).detach().flatten(1)
            assert torch.linalg.matrix_norm(used, 2).item() == pytest.approx(1.0, abs=1e-2)
    # It still trains: a step of the critic and the generator with finite losses.
    m = Modules(b.model.modules)
    batch = Batch(torch.randn(8, 1, 8, 8), torch.full((8,), -1))
    assert all(torch.isfinite(phase.step(batch, m).loss) for phase in b.model.phases)


def test_samples_come_from_the_ema_of_the_generator_by_default(tmp_path, registry, run_cli):
    """Karras et al. report every result from an EMA of G (G_smoothing 0.999, no warm-up): progan
    adds the ema regulariser by default, visibly (genfw list, config.yaml), and ema: false drops it."""
    import safetensors.torch
    import yaml

    cfg = resolve(progan_raw(3), registry)
    ema = cfg.callbacks["ema"].options
    assert (ema.decay, ema.warmup) == (0.999, False)
    t = Trainer(cfg, tmp_path / "r")
    t.fit()
    assert t.plain.generator_ema.updates.item() == 3
    recorded = yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())
    assert recorded["regularisers"]["ema"] == {
        "decay": 0.999,
        "warmup": False,
        "half_life_kimg": None,
        "start": 0,
    }
    assert recorded["variant"]["ema"] is True
    weights = safetensors.torch.load_file(str(tmp_path / "r" / "generator.safetensors"))
    average = t.plain.generator_ema.average.state_dict()
    assert weights.keys() == {f"generator.{k}" for k in average}  # the average, as the generator
    assert all(torch.equal(weights[f"generator.{k}"], v) for k, v in average.items())
    # Samples are the average's (at the training stage), not the live generator's.
    torch.manual_seed(3)
    z = torch.randn(4, 8)
    torch.manual_seed(3)
    s = t.built.model.sample(t.sampling_modules(), 4, None)
    torch.testing.assert_close(
        s, F.interpolate(t.plain.generator_ema.average(z, stage=0, alpha=1.0), scale_factor=2)
    )
    assert not torch.allclose(s, F.interpolate(t.plain.generator(z, stage=0, alpha=1.0), scale_factor=2))
    code, out, _ = run_cli("list", "variant")
    assert code == 0
    progan = out.split("\n  progan - ")[1].split("\n  sagan - ")[0]
    assert "\n      regularisers: gradient_penalty, ema, optimizer_reset\n" in progan
    assert "\n      --plugin.ema bool = True" in progan
    off = resolve(progan_raw(1, ema=False), registry)
    assert set(off.regularisers) == {"gradient_penalty"}
