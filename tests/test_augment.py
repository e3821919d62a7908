"""Differentiable augmentation (genfw_plugins/augment.py): each op against a hand computation or the
authors' formula for the drawn values, ADA's p update by hand, bCR's penalty by hand, the critic
wrapper in both phases, contracts, refusals, a short run on digits and a bit-exact resume."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from genfw import GenfwError, Modules
from genfw.config import resolve
from genfw.contracts import LoopState
from genfw.model import PhaseOutput
from genfw.testing import run_phase, small_run
from genfw.train import Trainer, read_run
from genfw_plugins import augment as A
from tests.conftest import QUICK

IMAGE = torch.arange(1.0, 10.0).view(1, 1, 3, 3)  # [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
TINY = {"name": "mlp", "hidden": [8]}


def raw(regs, steps=4, **train):
    return {
        "variant": "gan",
        "dataset": "digits",
        "generator": dict(TINY),
        "critic": dict(TINY),
        "regularisers": regs,
        "metrics": {},
        "train": {"steps": steps, "batch_size": 16, "log_every": 1, "progress": False, "grid": 4, **train},
    }


def shift(x, dy, dx, padding):
    return A.translate(x, torch.tensor([dy]), torch.tensor([dx]), padding)[0, 0].tolist()


# --- shared: translation ----------------------------------------------------------------------------


def test_translation_by_a_known_shift_with_zero_padding():
    # out[i, j] = x[i + dy, j + dx]: the content moves up by dy and left by dx; zeros come in.
    assert shift(IMAGE, 1, 0, "zeros") == [[4, 5, 6], [7, 8, 9], [0, 0, 0]]
    assert shift(IMAGE, 0, -1, "zeros") == [[0, 1, 2], [0, 4, 5], [0, 7, 8]]
    assert shift(IMAGE, -2, 2, "zeros") == [[0, 0, 0], [0, 0, 0], [3, 0, 0]]
    assert shift(IMAGE, 0, 0, "zeros") == IMAGE[0, 0].tolist()


def test_translation_with_reflection_and_reflected_indices():
    # Row [1, 2, 3] reflected about its edge pixels: ... 3, 2 | 1, 2, 3 | 2, 1 ...
    assert A.reflect_index(torch.arange(-4, 7), 3).tolist() == [0, 1, 2, 1, 0, 1, 2, 1, 0, 1, 2]
    assert A.reflect_index(torch.tensor([-3, 5]), 1).tolist() == [0, 0]
    assert shift(IMAGE, 0, -1, "reflect") == [[2, 1, 2], [5, 4, 5], [8, 7, 8]]
    assert shift(IMAGE, 2, 0, "reflect") == [[7, 8, 9], [4, 5, 6], [1, 2, 3]]


# --- DiffAugment --------------------------------------------------------------------------------------


def test_color_policy_is_the_authors_formulas_for_the_drawn_values():
    x = torch.randn(5, 3, 4, 6)
    torch.manual_seed(3)
    out = A.diff_augment(x, ("color",))
    torch.manual_seed(3)
    r1, r2, r3 = (torch.rand(5, 1, 1, 1) for _ in range(3))
    expected = x + (r1 - 0.5)  # brightness adds exactly the drawn value
    m = expected.mean(1, keepdim=True)
    expected = (expected - m) * (2 * r2) + m  # saturation about the channel mean
    m = expected.mean((1, 2, 3), keepdim=True)
    expected = (expected - m) * (r3 + 0.5) + m  # contrast about the image mean
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)


def test_saturation_on_one_channel_is_the_identity_and_brightness_by_hand():
    x = torch.randn(4, 1, 3, 3)
    torch.testing.assert_close(A.rand_saturation(x), x)
    torch.manual_seed(0)
    out = A.rand_brightness(IMAGE)
    torch.manual_seed(0)
    b = torch.rand(1) - 0.5
    assert torch.equal(out, IMAGE + b) and -0.5 <= b.item() < 0.5


def test_translation_and_cutout_sizes_follow_the_side():
    assert [A.side(n, 1 / 8) for n in (4, 8, 12, 28, 32)] == [1, 1, 2, 4, 4]
    assert [A.side(n, 1 / 2) for n in (3, 8, 28)] == [2, 4, 14]


def test_rand_translation_draws_rows_then_columns_and_pads_with_zeros():
    x = torch.arange(64.0).view(1, 1, 8, 8).expand(20, 1, 8, 8)
    torch.manual_seed(1)
    out = A.rand_translation(x)
    torch.manual_seed(1)
    dy = torch.randint(-1, 2, (20, 1, 1)).view(20)
    dx = torch.randint(-1, 2, (20, 1, 1)).view(20)
    for b in range(20):
        for i in range(8):
            for j in range(8):
                si, sj = i + dy[b].item(), j + dx[b].item()
                want = 8 * si + sj if 0 <= si < 8 and 0 <= sj < 8 else 0
                assert out[b, 0, i, j].item() == want


def test_cutout_mask_by_hand():
    # A 2 x 2 square centred at offset (1, 3) of a 4 x 4 image: rows 0-1, columns 2-3.
    mask = A.cutout_mask(4, 4, (2, 2), torch.tensor([1]), torch.tensor([3]))[0, 0]
    assert mask.int().tolist() == [[1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1]]
    # Offset 0 with an even size: the square is clipped to the first row and column.
    mask = A.cutout_mask(4, 4, (2, 2), torch.tensor([0]), torch.tensor([0]))[0, 0]
    assert (~mask).sum().item() == 1 and not mask[0, 0]
    # The drawn cutout zeroes exactly side(H, 1/2)^2 = 16 pixels where the square fits.
    torch.manual_seed(0)
    out = A.rand_cutout(torch.ones(200, 2, 8, 8))
    zeros = (out[:, 0] == 0).sum((1, 2))
    assert zeros.max().item() == 16 and zeros.min().item() >= 4
    assert torch.equal(out[:, 0], out[:, 1])  # every channel of an image alike


@pytest.mark.parametrize("shape", [(1, 1, 1), (2, 5, 7), (4, 16, 16), (3, 12, 9)])
def test_diffaugment_and_bcr_take_images_of_any_size_and_channel_count(shape):
    x = torch.randn(6, *shape, requires_grad=True)
    for out in (A.diff_augment(x, tuple(A.POLICIES)), A.consistency_augment(x)):
        assert out.shape == x.shape and torch.isfinite(out).all()
        (grad,) = torch.autograd.grad(out.sum(), x)
        assert torch.isfinite(grad).all()


def test_diffaugment_policy_option_is_checked():
    assert A.DiffAugmentOptions("translation, color").policy == "translation, color"
    for bad in ("colour", "color,color", ""):
        with pytest.raises(ValueError, match="policy must be a comma-separated selection of color"):
            A.DiffAugmentOptions(bad)


def test_diffaugment_reaches_every_critic_input_in_both_phases(registry):
    run = small_run(
        "gan", datasets=("digits",), extra={"regularisers": {"diffaugment": {"policy": "translation"}}}
    )
    critic = run.modules["critic"]
    assert isinstance(critic, A.AugmentedCritic)
    inner = critic.inner
    torch.manual_seed(5)
    out = run.built.model.phases[0].step(run.batch, run.modules)
    torch.manual_seed(5)
    fake = run.modules["generator"](torch.randn(16, 64))
    real_in = A.rand_translation(run.batch.x)  # the real batch is scored first, then the fakes
    fake_in = A.rand_translation(fake)
    torch.testing.assert_close(out.context["real_scores"], inner(real_in).squeeze(1))
    torch.testing.assert_close(out.context["fake_scores"], inner(fake_in).squeeze(1))
    # Generator phase: gradients reach the generator through T.
    out = run.built.model.phases[1].step(run.batch, run.modules)
    grads = torch.autograd.grad(out.loss, list(run.modules["generator"].parameters()))
    assert all(torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)


# --- ADA: the ops -------------------------------------------------------------------------------------


def test_rot90_flip_and_integer_translation_are_exact_blits():
    x = torch.randn(4, 2, 5, 5)
    for k in range(4):
        g = A.rot90_2d(torch.full((4,), k))
        assert torch.equal(A.apply_geometric(x, g), torch.rot90(x, k, dims=(2, 3)))
    flip = A.scale2d(-torch.ones(4), torch.ones(4))
    assert torch.equal(A.apply_geometric(x, flip), x.flip(3))
    # G_inv = translate2d(-tx, -ty): out[i, j] = x[i - ty, j - tx], reflected outside.
    g = A.translate2d(torch.tensor([1.0]), torch.tensor([-1.0]))  # tx = -1, ty = 1
    out = A.apply_geometric(IMAGE, g)[0, 0].tolist()
    assert out == [[5, 6, 5], [2, 3, 2], [5, 6, 5]]
    # Non-square images: a flip of 3 x 4.
    y = torch.arange(12.0).view(1, 1, 3, 4)
    assert torch.equal(A.apply_geometric(y, A.scale2d(-torch.ones(1), torch.ones(1))), y.flip(3))


def test_general_geometry_is_bilinear_about_the_centre():
    # Zooming in by 2 (G_inv = scale 1/2) reads a ramp x[i, j] = j at cx + (j - cx) / 2 exactly.
    ramp = torch.arange(6.0).view(1, 1, 1, 6).expand(1, 1, 4, 6)
    out = A.apply_geometric(ramp, A.scale2d(torch.tensor([0.5]), torch.tensor([0.5])))
    cx = 2.5
    torch.testing.assert_close(out[0, 0, 0], torch.tensor([cx + (j - cx) / 2 for j in range(6)]))
    # A rotation by pi/2 through cos/sin agrees with the exact rot90 up to rounding.
    x = torch.randn(2, 3, 6, 6)
    rotated = A.apply_geometric(x, A.rotate2d(torch.full((2,), math.pi / 2)))
    torch.testing.assert_close(rotated, torch.rot90(x, 1, dims=(2, 3)), rtol=0, atol=1e-5)


def test_colour_matrices_by_hand():
    rgb = torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1)

    def apply(m):
        return A.apply_color(rgb, m)[0, :, 0, 0]

    torch.testing.assert_close(
        apply(A.brightness_matrix(torch.tensor([0.25]), 3)), torch.tensor([1.25, 2.25, 3.25])
    )
    torch.testing.assert_close(
        apply(A.contrast_matrix(torch.tensor([2.0]), 3)), torch.tensor([2.0, 4.0, 6.0])
    )
    # Luma flip: the channel mean (2) negated, the deviations (-1, 0, 1) kept.
    torch.testing.assert_close(
        apply(A.lumaflip_matrix(torch.tensor([1.0]), 3)), torch.tensor([-3.0, -2.0, -1.0])
    )
    torch.testing.assert_close(
        apply(A.lumaflip_matrix(torch.tensor([0.0]), 3)), torch.tensor([1.0, 2.0, 3.0])
    )
    # Hue: a third of a turn about the grey axis moves R to G, G to B, B to R.
    torch.testing.assert_close(
        apply(A.hue_matrix(torch.tensor([2 * math.pi / 3]))), torch.tensor([3.0, 1.0, 2.0])
    )
    # Saturation: 0 leaves the mean, 2 doubles each deviation from it.
    torch.testing.assert_close(
        apply(A.saturation_matrix(torch.tensor([0.0]), 3)), torch.tensor([2.0, 2.0, 2.0])
    )
    torch.testing.assert_close(
        apply(A.saturation_matrix(torch.tensor([2.0]), 3)), torch.tensor([0.0, 2.0, 4.0])
    )
    # Grey images: the one-channel matrices are the authors' RGB ones averaged over rows.
    grey = torch.tensor([0.5]).view(1, 1, 1, 1)
    m3 = A.lumaflip_matrix(torch.tensor([1.0]), 3) @ A.brightness_matrix(torch.tensor([0.3]), 3)
    m1 = A.lumaflip_matrix(torch.tensor([1.0]), 1) @ A.brightness_matrix(torch.tensor([0.3]), 1)
    authors = m3[:, :3, :].mean(1)  # (1, 4): grey = x * sum(row[:3]) + row[3]
    want = 0.5 * authors[0, :3].sum() + authors[0, 3]
    torch.testing.assert_close(A.apply_color(grey, m1)[0, 0, 0, 0], want)
    torch.testing.assert_close(want, torch.tensor(-0.8))


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_ada_with_p_zero_is_the_identity_and_p_one_changes_every_image(channels):
    x = torch.randn(8, channels, 5, 7)
    torch.manual_seed(0)
    assert torch.equal(A.ada_augment(x, torch.tensor(0.0), A.GROUPS), x)
    out = A.ada_augment(x, torch.tensor(1.0), ("color",))
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert all(not torch.equal(out[i], x[i]) for i in range(8))


def test_ada_applies_each_op_per_image_with_probability_p():
    # Each op's gate is open with probability p = 1/2, then the op draws its value.
    torch.manual_seed(0)
    n = 4000
    g = A.geometric_matrix(n, 8, 8, torch.tensor(0.5), ("blit",), torch.device("cpu"))
    share = lambda mask: mask.float().mean().item()  # noqa: E731
    # x-flip: the coin floor(2 U) is 1 half the time: flipped (det < 0) with probability p / 2.
    assert abs(share(torch.linalg.det(g[:, :2, :2]) < 0) - 0.25) < 0.03
    # rot90: k = floor(4 U), odd (a zero diagonal) with probability p / 2.
    assert abs(share(g[:, 0, 0] == 0) - 0.25) < 0.03
    # Integer translation: round(8 t), t ~ U[-1/8, 1/8]: whole pixels, -1..1, non-zero for p / 2.
    t = g[:, :2, 2]
    assert torch.equal(t.round(), t) and t.abs().max() == 1
    assert abs(share(t[:, 0] != 0) - 0.25) < 0.03


def test_ada_draws_are_stylegan2_adas_parameterisation_at_p_one():
    # With p = 1 every gate is open; the draws, in the authors' order, give these matrices.
    b, h, w = 6, 8, 10
    torch.manual_seed(7)
    g = A.geometric_matrix(b, h, w, torch.tensor(1.0), ("blit", "geom"), torch.device("cpu"))
    torch.manual_seed(7)
    flip = torch.floor(torch.rand(b) * 2)
    torch.rand(b)
    k = torch.floor(torch.rand(b) * 4)
    torch.rand(b)
    t = (torch.rand(b, 2) * 2 - 1) * 0.125
    torch.rand(b, 1)
    s = torch.exp2(torch.randn(b) * 0.2)
    torch.rand(b)
    pre = (torch.rand(b) * 2 - 1) * math.pi
    torch.rand(b)
    aniso = torch.exp2(torch.randn(b) * 0.2)
    torch.rand(b)
    post = (torch.rand(b) * 2 - 1) * math.pi
    torch.rand(b)
    frac = torch.randn(b, 2) * 0.125
    for i in range(b):

        def rot(a):
            return torch.tensor([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])

        def move(x, y):
            return torch.tensor([[1.0, 0, x], [0, 1, y], [0, 0, 1]])

        want = torch.diag(torch.tensor([1 - 2 * flip[i].item(), 1, 1]))
        want = want @ rot(math.pi / 2 * k[i].item())
        want = want @ move(-round(t[i, 0].item() * w), -round(t[i, 1].item() * h))
        want = want @ torch.diag(torch.tensor([1 / s[i].item(), 1 / s[i].item(), 1]))
        want = want @ rot(pre[i].item()) @ torch.diag(torch.tensor([1 / aniso[i].item(), aniso[i].item(), 1]))
        want = want @ rot(post[i].item()) @ move(-frac[i, 0].item() * w, -frac[i, 1].item() * h)
        torch.testing.assert_close(g[i], want, rtol=1e-5, atol=1e-5)


def test_ada_colour_draws_and_ops_by_hand_at_p_one():
    x = torch.randn(5, 3, 2, 2)
    torch.manual_seed(11)
    out = A.apply_color(x, A.color_matrix(5, 3, torch.tensor(1.0), torch.device("cpu")))
    torch.manual_seed(11)
    bright = torch.randn(5) * 0.2
    torch.rand(5)
    con = torch.exp2(torch.randn(5) * 0.5)
    torch.rand(5)
    flip = torch.floor(torch.rand(5, 1, 1) * 2)
    torch.rand(5, 1, 1)
    theta = (torch.rand(5) * 2 - 1) * math.pi
    torch.rand(5)
    sat = torch.exp2(torch.randn(5, 1, 1))
    axis = torch.ones(3) / math.sqrt(3)
    for i in range(5):
        y = (x[i] + bright[i]) * con[i]  # (3, 2, 2)
        if flip[i]:
            y = y - 2 * y.mean(0)  # the grey component negated
        # Rodrigues' rotation about the grey axis.
        v = y.permute(1, 2, 0)  # (2, 2, 3)
        c, sn = math.cos(theta[i]), math.sin(theta[i])
        v = v * c + torch.linalg.cross(axis.expand_as(v), v) * sn + axis * (v @ axis)[..., None] * (1 - c)
        y = v.permute(2, 0, 1)
        y = y.mean(0) + sat[i] * (y - y.mean(0))
        torch.testing.assert_close(out[i], y, rtol=1e-5, atol=1e-5)


def test_ada_is_differentiable():
    x = torch.randn(4, 3, 6, 6, requires_grad=True)
    A.ada_augment(x, torch.tensor(1.0), A.GROUPS).square().sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


# --- ADA: p -------------------------------------------------------------------------------------------


def test_p_update_by_hand_for_a_sequence_of_rt():
    state = A.AdaState(0.0)
    # Window 1: signs of 8 scores +1 x 6, -1 x 2: r_t = 0.5 < 0.6, p stays at 0 (clipped).
    state.observe(torch.tensor([1.0, 2, 3, 4, 5, 6, -1, -2]), 1)
    state.adjust(0.6, 0.01)  # 8 images / 10 -> steps of 0.8
    assert state.p.item() == 0.0 and state.rt.item() == 0.5
    # Window 2: 16 scores, all positive, one batch of packs of 2 (32 images): p += 32 / 1000.
    state.observe(torch.ones(16), 2)
    state.adjust(0.6, 1.0)
    assert state.p.item() == pytest.approx(0.032) and state.rt.item() == 1.0
    # Window 3: r_t exactly the target: no change; then an empty window: nothing changes.
    state.observe(torch.tensor([1.0, 1, 1, -1, -1, 0, 1, 1, 1, -1]), 1)  # (6 - 3) / 10
    state.adjust(0.3, 1.0)
    assert state.p.item() == pytest.approx(0.032) and state.rt.item() == pytest.approx(0.3)
    state.adjust(0.6, 1.0)
    assert state.p.item() == pytest.approx(0.032) and state.rt.item() == pytest.approx(0.3)
    # Clipped at 1.
    state.observe(torch.ones(64), 1)
    state.adjust(0.6, 0.001)
    assert state.p.item() == 1.0


def test_ada_adjusts_every_interval_steps_from_the_critic_real_scores(registry):
    run = small_run(
        "gan", datasets=("digits",), extra={"regularisers": {"ada": {"interval": 2, "kimg": 0.1}}}
    )
    ada = dict(run.built.callbacks)["ada"]
    scores = [torch.ones(16), -torch.ones(16), torch.ones(16), torch.ones(16)]  # r_t: 0, then 1
    p = []
    for step, s in enumerate(scores, start=1):
        out = PhaseOutput(torch.zeros(()), context={"real_scores": s})
        ada.on_phase_output("critic", out, None)
        assert out.logs["ada_p"].item() == pytest.approx(p[-1] if p else 0.0)
        ada.on_step_end(LoopState(step, run.modules, run.modules, {}))
        p.append(run.modules["ada"].p.item())
    # Step 2: r_t = 0 < 0.6, p stays 0; step 4: r_t = 1, p += 32 / 100.
    assert p == pytest.approx([0.0, 0.0, 0.0, 0.32])


# --- bCR ----------------------------------------------------------------------------------------------


def test_bcr_augmentation_flip_then_translate_by_hand():
    out = A.flip_translate(IMAGE, torch.tensor([True]), torch.tensor([0]), torch.tensor([1]))
    # Flipped rows [3, 2, 1]; moved left by one with reflection: [2, 1, 2].
    assert out[0, 0].tolist() == [[2, 1, 2], [5, 4, 5], [8, 7, 8]]
    torch.manual_seed(0)
    x = torch.randn(300, 1, 8, 8)
    out = A.consistency_augment(x)
    outcomes = [
        A.flip_translate(x, torch.full((300,), f), torch.full((300,), dy), torch.full((300,), dx))
        for f in (False, True)
        for dy in (-1, 0, 1)
        for dx in (-1, 0, 1)
    ]
    which = torch.stack([(out == o).flatten(1).all(1) for o in outcomes], 1)  # (300, 18)
    assert (which.sum(1) >= 1).all() and (which.sum(0) > 0).all()  # every outcome, shift 8 // 8 = 1


W = torch.tensor([[1.0, 2.0], [3.0, 5.0]])
REAL = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]], [[[0.0, 0.0], [1.0, 3.0]]]])  # (2, 1, 2, 2)
FAKE = torch.tensor([[[[1.0, 0.0], [2.0, 0.0]]], [[[0.0, 1.0], [0.0, 0.0]]]])


def test_bcr_penalty_by_hand(monkeypatch):
    # D(x) = <W, x>; T a fixed left-right flip.
    monkeypatch.setattr(A, "consistency_augment", lambda x: x.flip(3))

    def critic(x, y=None):
        return (x[:, 0] * W).sum((1, 2))

    ctx = {"real": REAL, "fake": FAKE, "critic": critic, "labels": None}
    ctx.update(real_scores=critic(REAL), fake_scores=critic(FAKE))
    # Real: D = 1, D(T) = 2 -> 1; D = 18, D(T) = 14 -> 16; mean 8.5.
    # Fake: D = 7, D(T) = 12 -> 25; D = 2, D(T) = 1 -> 1; mean 13.
    reg = A.BalancedConsistency(A.BCROptions())
    assert reg.penalty(ctx).item() == pytest.approx(10 * 8.5 + 10 * 13)
    reg = A.BalancedConsistency(A.BCROptions(lambda_real=2.0, lambda_fake=0.0))
    assert reg.penalty(ctx).item() == pytest.approx(2 * 8.5)
    with pytest.raises(ValueError, match="both 0"):
        A.BCROptions(0.0, 0.0)


def test_bcr_trains_the_critic_phase_of_gan(registry):
    run = small_run("gan", datasets=("digits",), extra={"regularisers": {"bcr": {}}})
    assert [n for n, _ in run.built.regularisers["critic"]] == ["bcr"] and not run.built.regularisers[
        "generator"
    ]
    _, _, terms = run_phase(run, "critic")
    assert torch.isfinite(terms["bcr"]) and terms["bcr"] > 0


# --- contracts, refusals, a run -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "name", "options"),
    [
        ("callback", "diffaugment", None),
        ("callback", "ada", {"p": 0.5, "interval": 1, "kimg": 0.01}),
        ("regulariser", "bcr", None),
    ],
)
def test_contracts(genfw_contract, kind, name, options):
    genfw_contract(kind, name, options=options)


@pytest.mark.parametrize("name", ["diffaugment", "ada", "bcr"])
def test_points_are_refused_in_one_line(registry, name):
    with pytest.raises(
        GenfwError, match=rf"{name} augments images \(C, H, W\); this data set has samples of shape \(2,\)"
    ) as info:
        small_run("gan", datasets=("toy2d",), extra={"regularisers": {name: {}}})
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name", ["diffaugment", "ada"])
def test_variants_without_a_data_critic_are_refused(registry, name):
    with pytest.raises(
        GenfwError,
        match=f"{name} augments what the data-space critics see; variant 'vae' declares none; variants it applies to: .*gan",
    ) as info:
        small_run("vae", datasets=("digits",), extra={"regularisers": {name: {}}})
    assert "\n" not in str(info.value)


def test_ada_refuses_a_critic_without_real_scores(registry):
    with pytest.raises(
        GenfwError, match=r"ada tunes p from the critic's real scores.*variant 'ebgan' gives none"
    ) as info:
        small_run("ebgan", datasets=("digits",), extra={"regularisers": {"ada": {}}})
    listed = [v.strip() for v in str(info.value).split("variants it applies to:")[1].split(",")]
    assert "gan" in listed and "ebgan" not in listed and "madgan" not in listed


def test_bcr_refuses_a_latent_critic(registry):
    with pytest.raises(
        GenfwError, match=r"bcr augments the images .* of shape \(8,\) .*variants it applies to: acgan"
    ):
        small_run("aae", datasets=("digits",), extra={"regularisers": {"bcr": {}}})
    # A critic phase on codes that setup could not tell (a network without in_shape): at its first step.
    reg = A.BalancedConsistency(A.BCROptions())
    ctx = {"real": torch.zeros(4, 8), "fake": torch.zeros(4, 8), "critic": None, "labels": None}
    with pytest.raises(GenfwError, match=r"scores samples of shape \(8,\)"):
        reg.penalty({**ctx, "real_scores": torch.zeros(4), "fake_scores": torch.zeros(4)})


@pytest.mark.parametrize("name", ["diffaugment", "ada", "bcr"])
def test_every_variant_it_fits_trains_with_it_and_the_others_refuse_in_one_line(registry, name):
    from genfw.contracts import VariantInfo

    fits = {"diffaugment": A.DiffAugment, "ada": A.Ada, "bcr": A.BalancedConsistency}[name].fits
    options = {"p": 0.8} if name == "ada" else {}
    for v in registry.names("variant"):
        info = VariantInfo(v, registry.get("variant", v).factory, registry=registry)
        try:
            run = small_run(v, datasets=("digits",), extra={"regularisers": {name: options}})
        except GenfwError as exc:
            assert not fits(info), f"{name} fits {v} but was refused: {exc}"
            assert "\n" not in str(exc) and f"{name}" in str(exc) and "variants it applies to:" in str(exc)
            continue
        assert fits(info), f"{name} does not fit {v} but was not refused"
        for phase in run.built.model.phases:
            loss, _, _ = run_phase(run, phase)
            assert torch.isfinite(loss), (v, phase.name)


def test_a_short_gan_run_on_digits_with_all_three_logs_p(tmp_path, run_cli):
    code, _, err = run_cli(
        "train", "--plugin", "gan", "--dataset", "digits", "--generator.hidden", "[8]", "--critic.hidden", "[8]",
        "--steps", "4", "--out", tmp_path / "run", "--regulariser", "diffaugment", "--regulariser", "ada",
        "--regulariser.ada.p", "0.5", "--regulariser", "bcr", "--no-default-metrics", *QUICK,
    )  # fmt: skip
    assert code == 0, err
    logs = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in logs if "critic/ada_p" in r][-1]
    assert last["critic/ada_p"] == pytest.approx(0.5) and math.isfinite(last["critic/bcr"])


def test_resume_is_bit_exact_with_every_augmentation(tmp_path, registry):
    regs = {
        "diffaugment": {},
        "ada": {"interval": 1, "kimg": 0.5, "p": 0.3},
        "bcr": {},
        "packing": {"m": 2},
    }

    def run(path, steps, **train):
        t = Trainer(resolve(raw(regs, steps=steps, **train), registry), path)
        t.fit()
        return t

    straight = run(tmp_path / "straight", 6)
    run(tmp_path / "split", 3)
    resumed = Trainer(
        read_run(tmp_path / "split", registry, [("train.steps", 6)]), tmp_path / "split", resume=True
    )
    assert resumed.step == 3
    p3 = resumed.plain["ada"].p.item()
    resumed.fit()
    assert set(straight.plain) == {"generator", "critic", "ada"}
    for name in straight.plain:
        a, b = straight.plain[name].state_dict(), resumed.plain[name].state_dict()
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), f"{name}.{k} differs after resume"
    assert p3 != 0.3 and straight.plain["ada"].p.item() != p3  # p moved, and is in the checkpoint


def test_augmentations_wrap_after_the_layer_tricks_and_sample_packs_never(registry):
    run = small_run(
        "gan",
        datasets=("digits",),
        extra={"regularisers": {"ada": {}, "packing": {"m": 2}, "instance_noise": {}, "spectral_norm": {}}},
    )
    critic = run.modules["critic"]
    assert isinstance(critic, A.AugmentedCritic)
    assert (
        type(critic.inner).__name__ == "NoisyCritic" and type(critic.inner.inner).__name__ == "PackedCritic"
    )
    assert isinstance(Modules(run.modules).critic, nn.Module)
