"""StyleGAN2: its layers against hand computations, its regularisers, training, resume, truncation."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from genfw import GenfwError, testing
from genfw.config import resolve
from genfw.train import Trainer, build, read_run
from genfw_plugins._layers import EqualizedLinear
from genfw_plugins.stylegan2 import (
    ResidualCritic,
    StyleGenerator,
    blur,
    downsample2d,
    lazy_optim,
    mix_styles,
    modulated_conv2d,
    normalize_2nd_moment,
    path_length_penalty,
    path_lengths,
    projection,
    truncate,
    upsample2d,
)
from genfw_plugins.tricks import half_life_decay

TINY = {"latent_dim": 8, "w_dim": 8, "mapping_layers": 2, "channel_base": 64, "channel_max": 8}


def raw(steps: int, **variant) -> dict:
    return {
        "variant": {"name": "stylegan2", **TINY, **variant},
        "dataset": "digits",
        "metrics": {},
        "train": {
            "steps": steps,
            "batch_size": 8,
            "log_every": 1,
            "progress": False,
            "grid": 4,
            "sample_every": 0,
            "checkpoint_every": 0,
        },
    }


# --- layers ------------------------------------------------------------------------------------------


def test_modulated_demodulated_conv_of_one_channel_by_hand():
    # One pixel x = 2 in a 1x1 image, same padding: only the kernel's centre meets it.
    w = torch.tensor([[1.0, 2.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 1.0]]).reshape(1, 1, 3, 3)
    x = torch.full((1, 1, 1, 1), 2.0)
    s = torch.tensor([[0.5]])
    # w s = [[.5, 1, 0], [0, 1.5, 0], [0, 0, .5]]: sum of squares 0.25 + 1 + 2.25 + 0.25 = 3.75
    out = modulated_conv2d(x, w, s)
    assert out.item() == pytest.approx(2 * 1.5 / math.sqrt(3.75 + 1e-8), rel=1e-6)
    assert modulated_conv2d(x, w, s, demodulate=False).item() == pytest.approx(2 * 1.5)
    # A larger one-channel case: conv with w s / sqrt(sum (w s)^2 + eps), one style per sample.
    torch.manual_seed(0)
    x = torch.randn(2, 1, 5, 5)
    s = torch.tensor([[0.3], [-2.0]])
    out = modulated_conv2d(x, w, s)
    for b in range(2):
        ws = w * s[b]
        want = F.conv2d(x[b : b + 1], ws / torch.sqrt(ws.square().sum() + 1e-8), padding=1)
        torch.testing.assert_close(out[b : b + 1], want)


def test_modulated_conv_of_several_channels_equals_the_fused_weights():
    torch.manual_seed(1)
    x, w, s = torch.randn(3, 4, 6, 6), torch.randn(5, 4, 3, 3), torch.randn(3, 4)
    out = modulated_conv2d(x, w, s)
    for b in range(3):
        wb = w * s[b].reshape(1, 4, 1, 1)  # (O, I, k, k)
        wb = wb / torch.sqrt(wb.square().sum(dim=(1, 2, 3), keepdim=True) + 1e-8)
        torch.testing.assert_close(
            out[b : b + 1], F.conv2d(x[b : b + 1], wb, padding=1), atol=1e-5, rtol=1e-5
        )


def test_demodulation_gives_unit_variance_outputs_for_unit_variance_inputs():
    # Each output pixel is a sum of 3 x 3 x I independent N(0, 1) inputs with weights of unit L2
    # norm: variance 1 whatever the weights and styles (interior pixels, away from the padding).
    torch.manual_seed(2)
    x = torch.randn(64, 8, 12, 12)
    w, s = torch.randn(6, 8, 3, 3) * 5.0, torch.rand(64, 8) * 3.0 + 0.1
    out = modulated_conv2d(x, w, s)[:, :, 1:-1, 1:-1]
    var = out.var(dim=(0, 2, 3))  # per output channel
    assert torch.allclose(var, torch.ones(6), atol=0.05), var
    raw_var = modulated_conv2d(x, w, s, demodulate=False)[:, :, 1:-1, 1:-1].var()
    assert raw_var > 10  # without demodulation the scale follows the weights and styles


def test_equalised_linear_with_a_learning_rate_multiplier():
    torch.manual_seed(3)
    layer = EqualizedLinear(16, 4, gain=1.0, lr_multiplier=0.01, bias_init=0.5)
    assert layer.scale == pytest.approx(0.01 / 4) and layer.bias_scale == 0.01
    assert layer.weight.std().item() == pytest.approx(100, rel=0.2)  # N(0, 1) / 0.01
    x = torch.randn(3, 16)
    want = x @ (layer.weight * 0.01 / 4).T + 0.5 * 0.01
    torch.testing.assert_close(layer(x), want)
    # Adam's first step moves each raw weight by lr: the used weight moves by lr * 0.01 / sqrt(16).
    before = (layer.weight * layer.scale).detach().clone()
    opt = torch.optim.Adam(layer.parameters(), lr=0.1)
    layer(x).sum().backward()
    opt.step()
    moved = ((layer.weight * layer.scale).detach() - before).abs()
    torch.testing.assert_close(moved, torch.full_like(moved, 0.1 * 0.01 / 4), rtol=1e-3, atol=1e-9)


def test_fir_resampling_by_hand():
    # Upsampling: zeros inserted, [1, 3, 3, 1] / 4 * 2 per axis: 0.75 / 0.25 of the two nearest
    # inputs (bilinear in the interior), zeros outside.
    # Row [1, 5] -> [.75 * 1, .75 * 1 + .25 * 5, .25 * 1 + .75 * 5, .75 * 5].
    x = torch.tensor([[1.0, 5.0]]).reshape(1, 1, 1, 2).expand(1, 1, 2, 2)  # rows alike
    up = upsample2d(x)[0, 0, 1]  # an interior row: the rows above and below are alike
    torch.testing.assert_close(up, torch.tensor([0.75, 2.0, 4.0, 3.75]))
    # the border row sees the zero padding: 0.75 of the rows' value
    torch.testing.assert_close(upsample2d(x)[0, 0, 0], 0.75 * up)
    y = torch.randn(2, 3, 6, 6)
    bilinear = F.interpolate(y, scale_factor=2, mode="bilinear")
    torch.testing.assert_close(upsample2d(y)[..., 1:-1, 1:-1], bilinear[..., 1:-1, 1:-1])
    # Downsampling a constant keeps it away from the border; blur keeps the sum.
    c = torch.ones(1, 2, 8, 8)
    assert torch.allclose(downsample2d(c)[:, :, 1:-1, 1:-1], torch.ones(1, 2, 2, 2))
    assert blur(c, 2).shape == (1, 2, 9, 9)
    torch.testing.assert_close(blur(torch.eye(4).reshape(1, 1, 4, 4), 3).sum(), torch.tensor(4.0))


# --- mixing, truncation, path length -----------------------------------------------------------------


def tiny_generator() -> StyleGenerator:
    torch.manual_seed(4)
    return StyleGenerator(
        8,
        (1, 8, 8),
        w_dim=8,
        mapping_layers=2,
        mapping_lr=0.01,
        channel_base=64,
        channel_max=8,
        w_avg_beta=0.995,
    )


def test_style_mixing_crosses_at_the_cutoff():
    ws, ws2 = torch.zeros(2, 4, 3), torch.ones(2, 4, 3)
    for cutoff in (1, 2, 3):
        mixed = mix_styles(ws, ws2, cutoff)
        assert (mixed[:, :cutoff] == 0).all() and (mixed[:, cutoff:] == 1).all()
    g = tiny_generator().eval()
    assert g.num_ws == 4  # 4x4: one conv; 8x8: two convs; the last toRGB
    z, z2 = torch.randn(3, 8), torch.randn(3, 8)
    ws = g.styles(z, mix=(z2, 2))
    w1, w2 = g.mapping(z), g.mapping(z2)
    assert torch.equal(ws[:, 0], w1) and torch.equal(ws[:, 1], w1)
    assert torch.equal(ws[:, 2], w2) and torch.equal(ws[:, 3], w2)


def test_style_mixing_probability_and_cutoffs_of_the_variant(registry):
    built = build(resolve(raw(1), registry))
    variant = built.model.phases[0].step.__self__
    torch.manual_seed(5)
    draws = [variant.mixing(2, torch.device("cpu")) for _ in range(2000)]
    mixed = [d for d in draws if d is not None]
    assert len(mixed) / 2000 == pytest.approx(0.9, abs=0.03)
    assert {c for _, c in mixed} == {1, 2, 3}  # 1 .. num_ws - 1
    off = build(resolve(raw(1, style_mixing=0.0), registry)).model.phases[0].step.__self__
    assert all(off.mixing(2, torch.device("cpu")) is None for _ in range(50))


def test_truncation_psi_zero_gives_w_avg_and_one_the_identity():
    g = tiny_generator()
    g.mapping.w_avg.copy_(torch.arange(8.0))
    z = torch.randn(5, 8)
    g.eval()
    w = g.styles(z)
    torch.testing.assert_close(g.styles(z, psi=0.0), g.mapping.w_avg.expand(5, 4, 8))
    assert torch.equal(g.styles(z, psi=1.0), w)
    torch.testing.assert_close(g.styles(z, psi=0.5), 0.5 * (w + g.mapping.w_avg))
    torch.testing.assert_close(truncate(w, g.mapping.w_avg, 2.0), g.mapping.w_avg + 2 * (w - g.mapping.w_avg))


def test_w_avg_follows_the_mean_w_in_training_only():
    g = tiny_generator()
    z = torch.randn(6, 8)
    g.train()
    w = g.mapping(z)
    torch.testing.assert_close(g.mapping.w_avg, 0.005 * w.mean(0))  # lerp(mean, 0, 0.995)
    g.eval()
    g.mapping(torch.randn(6, 8))
    torch.testing.assert_close(g.mapping.w_avg, 0.005 * w.mean(0))


def test_path_length_of_a_linear_generator_is_the_norm_of_a_transposed_jacobian():
    # img = sum_l A_l w_l (4 pixels, 2 layers of w in R^3): J_{w_l}^T y = A_l^T y.
    torch.manual_seed(6)
    a = torch.randn(2, 4, 3)  # (L, P, d)
    ws = torch.randn(5, 2, 3, requires_grad=True)
    img = torch.einsum("lpd,bld->bp", a, ws).reshape(5, 1, 2, 2)
    y = torch.randn(5, 1, 2, 2)
    lengths = path_lengths(img, ws, y)
    jty = torch.einsum("lpd,bp->bld", a, y.reshape(5, 4))  # (B, L, d)
    want = jty.square().sum(2).mean(1).sqrt()
    torch.testing.assert_close(lengths, want)
    # The penalty uses a' = a + 0.01 (mean - a), and its gradient flows through a' too.
    pl_mean = torch.tensor(0.5)
    penalty, new = path_length_penalty(lengths, pl_mean, 0.01)
    torch.testing.assert_close(new, 0.5 + 0.01 * (want.mean() - 0.5))
    torch.testing.assert_close(penalty, (want - new).square())
    # d/dl_i of sum_j (l_j - a')^2 with a' = .99 a + .01 mean(l): 2 (l_i - a') - .01 * 2 mean(l - a')
    ls = want.detach().clone().requires_grad_(True)
    p, _ = path_length_penalty(ls, pl_mean, 0.01)
    (g,) = torch.autograd.grad(p.sum(), ls)
    ap = 0.99 * 0.5 + 0.01 * ls.detach().mean()
    torch.testing.assert_close(g, 2 * (ls.detach() - ap) - 0.02 * (ls.detach() - ap).sum() / 5)


def test_path_length_is_lazy_and_weighted_by_its_interval(registry):
    built = build(resolve(raw(1), registry))
    variant = built.model.phases[0].step.__self__
    from genfw import Batch, Modules

    m = Modules(built.model.modules)
    batch = Batch(torch.randn(8, 1, 8, 8), torch.zeros(8, dtype=torch.long))
    terms = []
    for _ in range(9):
        t = variant.draw(m, batch)
        fake = variant.generate(t)
        terms.append(variant.generator_extra(t, variant.score(t, fake, None)))
    on = [i for i, (term, _) in enumerate(terms) if term is not None]
    assert on == [0, 4, 8]
    term, logs = terms[0]
    # 2 * 4 * mean (length - a')^2 over B / 2 = 4 fakes; a' = 0.01 * mean(length) from a = 0
    assert logs["pl_penalty"].item() * 8 == pytest.approx(term.item(), rel=1e-5)
    assert term.requires_grad and int(built.model.modules["path_length"].steps) == 9
    assert built.model.modules["path_length"].pl_mean.item() > 0


# --- the recipe --------------------------------------------------------------------------------------


def test_lazy_regularisation_corrects_adams_learning_rate_and_betas(registry):
    cfg = resolve(raw(1), registry)
    critic, generator = build(cfg).model.phases
    c = 16 / 17
    assert critic.optim.lr == pytest.approx(0.002 * c)
    assert critic.optim.betas == (0.0, pytest.approx(0.99**c))
    assert generator.optim.lr == pytest.approx(0.002 * 0.8)
    assert generator.optim.betas == (0.0, pytest.approx(0.99**0.8))
    assert lazy_optim(0.1, (0.5, 0.9), 1) == lazy_optim(0.1, (0.5, 0.9), 1).__class__("adam", 0.1, (0.5, 0.9))
    assert lazy_optim(0.1, (0.5, 0.9), 3).betas == (pytest.approx(0.5**0.75), pytest.approx(0.9**0.75))
    # Without the regulariser there is nothing to correct.
    plain = build(resolve(raw(1, r1_gamma=0.0, pl_weight=0.0), registry))
    assert [p.optim.lr for p in plain.model.phases] == [0.002, 0.002]
    assert "r1" not in plain.regularisers["critic"] and "path_length" not in plain.model.modules


@pytest.mark.parametrize(
    "r1, c",
    [
        ({"interval": 4}, 4 / 5),
        ({"interval": 1}, 1.0),
        ({"gamma": 2.0, "interval": 8}, 8 / 9),
        ({"gamma": 2.0}, 16 / 17),
    ],
)
def test_adams_correction_follows_the_r1_the_run_attaches(registry, r1, c):
    """--regulariser.r1.* merged over the variant's own r1: the correction follows the interval
    the penalty runs at (it kept the variant's 16 before)."""
    cfg = resolve({**raw(1), "regularisers": {"r1": r1}}, registry)
    built = build(cfg)
    critic, _ = built.model.phases
    assert critic.optim.lr == pytest.approx(0.002 * c)
    assert critic.optim.betas == (0.0, pytest.approx(0.99**c))
    assert cfg.regularisers["r1"].options.interval == r1.get("interval", 16)


def test_lazy_r1_every_16th_critic_step_times_16(registry):
    cfg = resolve(raw(1), registry)
    assert cfg.regularisers["r1"].options.gamma == 10.0 and cfg.regularisers["r1"].options.interval == 16
    built = build(cfg)
    ((name, r1),) = built.regularisers["critic"]
    assert name == "r1"
    critic = built.model.modules["critic"]
    torch.manual_seed(7)
    real = torch.randn(4, 1, 8, 8)
    x = real.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x).sum(), x)
    want = 0.5 * 10.0 * 16 * grad.flatten(1).square().sum(1).mean()
    ctx = {"real": real, "critic": lambda v, y=None: critic(v).squeeze(1), "labels": None}
    values = [r1.penalty(ctx) for _ in range(17)]
    assert [i for i, v in enumerate(values) if v is not None] == [0, 16]
    torch.testing.assert_close(values[0], want, rtol=1e-5, atol=1e-7)


def test_ema_half_life_gives_the_decay_per_step_from_the_batch_size(registry):
    assert half_life_decay(10, 64) == pytest.approx(0.5 ** (64 / 10_000))
    cfg = resolve(raw(1, ema_kimg=0.5), registry)
    ema = cfg.callbacks["ema"].options
    assert (ema.half_life_kimg, ema.warmup) == (0.5, False)
    built = build(cfg)
    ((_, callback),) = list(built.callbacks)
    assert callback.decay == pytest.approx(0.5 ** (8 / 500))  # batch 8, one process
    # After 500 / 8 updates the initial weights weigh a half.
    assert callback.decay ** (500 / 8) == pytest.approx(0.5)
    assert "ema" not in resolve(raw(1, ema_kimg=0), registry).callbacks


def test_stylegan2_keeps_the_variant_contract():
    testing.check_variant("stylegan2", options=TINY)
    testing.check_variant("stylegan2", options={**TINY, "conditional": True})


def test_refuses_data_it_cannot_make_in_one_line(registry):
    with pytest.raises(GenfwError, match="stylegan2 makes square images of 8, 16, 32, 64"):
        build(resolve({**raw(1), "dataset": "toy2d"}, registry))


# --- training ----------------------------------------------------------------------------------------


def test_trains_on_digits_and_samples_with_truncation(tmp_path, registry, run_cli):
    t = Trainer(resolve(raw(6), registry), tmp_path / "r")
    result = t.fit()
    rows = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    logged = {k for r in rows for k in r}
    assert {"critic/loss", "critic/r1", "generator/loss", "generator/path_length"} <= logged
    assert all(math.isfinite(v) for r in rows for v in r.values())
    assert [r["step"] for r in rows if "critic/r1" in r] == [1]  # critic steps 0 (and 16)
    assert [r["step"] for r in rows if "generator/path_length" in r] == [1, 5]  # generator steps 0, 4
    assert result.step == 6 and t.plain.generator_ema.updates.item() == 6
    g = t.plain.generator_ema.average
    assert torch.equal(g.mapping.w_avg, t.plain.generator.mapping.w_avg)  # buffers copied
    code, _, err = run_cli(
        "sample", tmp_path / "r", "-n", "4", "--truncation", "0.0", "--out", tmp_path / "t0.safetensors"
    )
    assert code == 0, err
    import safetensors.torch

    t0 = safetensors.torch.load_file(str(tmp_path / "t0.safetensors"))["samples"]
    assert t0.shape == (4, 1, 8, 8)
    # psi = 0: every sample has the styles of w_avg; only the per-pixel noise differs between them.
    spread = (t0 - t0.mean(0)).abs().max()
    code, _, err = run_cli("sample", tmp_path / "r", "-n", "4", "--out", tmp_path / "t1.safetensors")
    t1 = safetensors.torch.load_file(str(tmp_path / "t1.safetensors"))["samples"]
    assert code == 0 and spread < (t1 - t1.mean(0)).abs().max()
    # The Python API draws what the CLI draws, truncated alike (the same seed: 0, the CLI's default).
    import genfw

    assert torch.equal(genfw.load(tmp_path / "r").sample(4, seed=0, truncation=0.0), t0)
    # The truncated sampler at psi = 1 is the sampler itself (the same draws).
    model, modules = t.built.model, t.sampling_modules()
    torch.manual_seed(0)
    a = model.sample(modules, 3, None)
    torch.manual_seed(0)
    assert torch.equal(model.truncate(modules, 3, None, 1.0), a)


def test_truncation_is_refused_for_a_variant_without_it_and_the_run_folder_is_untouched(
    tmp_path, registry, run_cli
):
    gan = {
        "variant": "gan",
        "generator": {"name": "mlp", "hidden": [8]},
        "critic": {"name": "mlp", "hidden": [8]},
    }
    cfg = {**raw(1), **gan}
    Trainer(resolve(cfg, registry), tmp_path / "g").fit()
    before = sorted(p.relative_to(tmp_path) for p in (tmp_path / "g").rglob("*"))
    code, _, err = run_cli("sample", tmp_path / "g", "--truncation", "0.7")
    assert code == 2
    (line,) = err.strip().splitlines()  # one line; other variants with a truncation may be listed
    assert line.startswith(
        "genfw: error: --truncation 0.7: variant 'gan' has no truncation trick (its sampler takes no psi); "
        "variants with one: "
    )
    assert "stylegan2" in line.split("variants with one: ")[1].split(", ")
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "g").rglob("*")) == before
    code, _, err = run_cli("sample", tmp_path / "g", "--truncation", "nan")
    assert code == 2 and "truncation must be a finite number" in err
    import genfw

    with pytest.raises(genfw.GenfwError, match="variant 'gan' has no truncation trick"):
        genfw.load(tmp_path / "g").sample(2, truncation=0.7)  # the Python API refuses alike


def test_resume_continues_exactly(tmp_path, registry):
    straight = Trainer(resolve(raw(6), registry), tmp_path / "straight")
    straight.fit()
    Trainer(resolve(raw(3), registry), tmp_path / "split").fit()
    cfg = read_run(tmp_path / "split", registry, [("train.steps", 6)])
    resumed = Trainer(cfg, tmp_path / "split", resume=True)
    resumed.fit()
    for name in ("generator", "critic", "generator_ema", "path_length", "r1"):
        a, b = straight.plain[name].state_dict(), resumed.plain[name].state_dict()
        for k in a:
            assert torch.equal(a[k], b[k]), f"{name}.{k} differs after resuming"


def test_bf16_mixed_precision_trains_a_few_steps_on_the_cpu(tmp_path, registry):
    cfg = raw(3)
    cfg["train"]["mixed_precision"] = "bf16"
    cfg["train"]["cpu"] = True
    result = Trainer(resolve(cfg, registry), tmp_path / "bf16").fit()
    assert result.step == 3 and all(math.isfinite(v) for v in result.last_logs.values())
    assert "generator/path_length" in json.loads(
        (tmp_path / "bf16" / "metrics.jsonl").read_text().splitlines()[0]
    )


def test_listed_with_its_options(run_cli):
    code, out, _ = run_cli("list", "variant")
    assert code == 0
    entry = out.split("\n  stylegan2 - ")[1]
    assert "regularisers: r1, ema" in entry
    assert "--plugin.pl_weight float = 2.0" in entry and "--plugin.style_mixing float = 0.9" in entry


# --- conditional -------------------------------------------------------------------------------------


def test_projection_by_hand():
    out, cmap = torch.tensor([[1.0, 2.0], [0.5, -1.0]]), torch.tensor([[3.0, 4.0], [2.0, 2.0]])
    torch.testing.assert_close(projection(out, cmap), torch.tensor([[11.0], [-1.0]]) / math.sqrt(2))


def test_conditional_networks_embed_and_project_the_label():
    torch.manual_seed(8)
    g = StyleGenerator(
        8, (1, 8, 8), w_dim=6, mapping_layers=2, mapping_lr=0.01, channel_base=64, channel_max=8,
        w_avg_beta=0.995, num_classes=3,
    )  # fmt: skip
    seen = []
    g.mapping.fc[0].register_forward_hook(lambda mod, args, out: seen.append(args[0]))
    z, y = torch.randn(4, 8), torch.tensor([0, 1, 2, 1])
    g.eval()
    g(z, y)
    embed = g.mapping.embed(F.one_hot(y, 3).float())
    want = torch.cat([normalize_2nd_moment(z), normalize_2nd_moment(embed)], dim=1)  # (4, 8 + 6)
    torch.testing.assert_close(seen[0], want)
    assert not torch.allclose(g.styles(z, torch.zeros(4, dtype=torch.long)), g.styles(z, y))
    # The critic: the linear output (8 features: channels at 4x4) projected onto the label's map.
    critic = ResidualCritic((1, 8, 8), channel_base=64, channel_max=8, mbstd_group=4, num_classes=3)
    outs = []
    critic.out.register_forward_hook(lambda mod, args, out: outs.append(out))
    x = torch.randn(4, 1, 8, 8)
    scores = critic(x, y)
    torch.testing.assert_close(scores, projection(outs[0], critic.mapping(None, y)))
    assert scores.shape == (4, 1) and outs[0].shape == (4, 8)
    with pytest.raises(GenfwError, match="needs the labels"):
        critic(x)


def test_conditional_trains_and_samples_a_chosen_class_truncated(tmp_path, registry, run_cli):
    t = Trainer(resolve(raw(2, conditional=True), registry), tmp_path / "c")
    t.fit()
    assert t.built.model.num_classes == 10 and t.plain.critic.num_classes == 10
    code, _, err = run_cli(
        "sample",
        tmp_path / "c",
        "-n",
        "3",
        "--label",
        "7",
        "--truncation",
        "0.5",
        "--out",
        tmp_path / "c7.png",
    )
    assert code == 0, err
    with pytest.raises(
        GenfwError, match="its critic scores labelled fakes, which experience_replay would strip"
    ):
        resolve({**raw(1, conditional=True), "regularisers": {"experience_replay": {}}}, registry)


def test_conditional_refuses_data_without_labels(registry):
    from genfw import BuildContext, DataInfo

    spec = resolve(raw(1, conditional=True), registry)
    variant = spec.variant.build()
    with pytest.raises(GenfwError, match="needs labelled data"):
        variant.build(BuildContext(components=spec.slots, data=DataInfo(shape=(1, 8, 8))))


# --- half precision ----------------------------------------------------------------------------------


def test_gradient_norms_survive_the_first_fp16_loss_scale():
    # GradScaler starts at 65536, above float16's largest value (65504): a score's gradient must not be it.
    from genfw_plugins.regularisers import gradient_norms

    torch.manual_seed(9)
    critic = ResidualCritic((1, 8, 8), channel_base=64, channel_max=8, mbstd_group=4)
    x = torch.randn(4, 1, 8, 8)
    want = gradient_norms(lambda v, y=None: critic(v).squeeze(1), x, None)
    with torch.autocast("cpu", dtype=torch.float16):
        got = gradient_norms(lambda v, y=None: critic(v).squeeze(1), x, None, torch.tensor(65536.0))
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, want, rtol=0.05, atol=1e-3)


def test_fp16_trains_a_few_steps_with_lazy_r1_and_path_length(tmp_path, registry):
    cfg = raw(2)
    cfg["train"].update(mixed_precision="fp16", cpu=True)
    result = Trainer(resolve(cfg, registry), tmp_path / "fp16").fit()
    first = json.loads((tmp_path / "fp16" / "metrics.jsonl").read_text().splitlines()[0])
    assert (
        result.step == 2
        and math.isfinite(first["critic/r1"])
        and math.isfinite(first["generator/path_length"])
    )
