"""Modern GAN remedies (genfw_plugins/modern.py): r1, r2, orthogonal, lecam, top_k. Each formula
against a hand computation or the authors' formula, training with the GAN variants they fit,
resume, refusals and the contract."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from genfw import GenfwError, Modules, testing
from genfw.config import resolve
from genfw.plugins import variants_where
from genfw.train import Trainer, read_run
from genfw_plugins.modern import (
    R1,
    R2,
    LeCam,
    LeCamOptions,
    Orthogonal,
    OrthogonalOptions,
    ScoreAnchors,
    ZeroCentredOptions,
    orthogonality,
    regularised_weights,
    top_k_size,
)
from genfw_plugins.tricks import pack, unpack
from tests.conftest import QUICK
from tests.test_tricks import a_batch, built, raw

# --- R1 and R2 ------------------------------------------------------------------------------------

W = torch.tensor([1.0, -2.0, 0.5])


def square_critic(x, y=None):
    """D(x) = (w . x)^2: grad = 2 (w . x) w, so ||grad||^2 = 4 (w . x)^2 ||w||^2."""
    return (x @ W).square()[:, None]


def context(real, fake, critic=square_critic, labels=None, **more):
    return {
        "phase": "critic",
        "step": 0,
        "real": real,
        "fake": fake,
        "critic": critic,
        "labels": labels,
        **more,
    }


@pytest.mark.parametrize("cls, on", [(R1, "real"), (R2, "fake")])
def test_r1_and_r2_are_half_gamma_mean_squared_gradient_norms_by_hand(cls, on):
    real = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 2.0]])  # w.x = 1, -1
    fake = torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.0, 4.0]])  # w.x = 0, 2
    wx = {"real": [1.0, -1.0], "fake": [0.0, 2.0]}[on]
    w2 = 1 + 4 + 0.25
    expected = 3.0 / 2 * sum(4 * v * v * w2 for v in wx) / 2  # gamma 3
    reg = cls(ZeroCentredOptions(gamma=3.0))
    got = reg.penalty(context(real, fake))
    assert got.item() == pytest.approx(expected)
    # The fp16 loss scale is scaled in and divided out: the same penalty.
    scaled = reg.penalty(context(real, fake, grad_scale=torch.tensor(1024.0)))
    assert scaled.item() == pytest.approx(expected)


def test_r1_reads_the_labels_of_a_conditional_critic():
    rows = torch.tensor([[1.0, 0.0], [0.0, 3.0], [2.0, 2.0]])  # D(x, y) = rows[y] . x, grad = rows[y]

    def critic(x, y):
        return (x * rows[y]).sum(1, keepdim=True)

    x = torch.randn(4, 2)
    y = torch.tensor([0, 1, 2, 1])
    got = R1(ZeroCentredOptions(gamma=2.0)).penalty(context(x, x, critic, labels=y))
    assert got.item() == pytest.approx((1 + 9 + 8 + 9) / 4)  # gamma/2 = 1


def test_r1_trains_the_critic_and_not_the_data():
    w = W.clone().requires_grad_(True)

    def critic(x, y=None):
        return (x @ w).square()[:, None]

    real = torch.randn(5, 3, requires_grad=True)
    penalty = R1(ZeroCentredOptions()).penalty(context(real, real, critic))
    (gw,) = torch.autograd.grad(penalty, w)
    # d/dw of gamma/2 mean 4 (w.x)^2 ||w||^2
    with torch.no_grad():
        wx = real @ W
        ref = 5.0 * (8 * (wx[:, None] * real) * W.square().sum() + 8 * wx.square()[:, None] * W).mean(0)
    torch.testing.assert_close(gw, ref)
    assert real.grad is None


def test_lazy_r1_penalises_every_interval_th_critic_step_times_interval(registry):
    b = built(registry, {"r1": {"gamma": 2.0, "interval": 3}})
    reg = dict(b.regularisers["critic"])["r1"]
    real = torch.tensor([[1.0, 0.0, 0.0]])
    plain = 2.0 / 2 * 4 * 1 * 5.25
    got = [reg.penalty(context(real, real)) for _ in range(7)]
    assert [g is None for g in got] == [False, True, True, False, True, True, False]
    assert all(g.item() == pytest.approx(3 * plain) for g in got if g is not None)
    assert b.model.modules["r1"].steps.item() == 7


def test_r1_with_packing_takes_one_gradient_norm_per_pack(registry):
    b = built(registry, {"r1": {}, "packing": {"m": 2}}, steps=1)
    critic = b.model.modules["critic"]
    batch = a_batch(b)
    out = b.model.phases[0].step(batch, Modules(b.model.modules))
    out.context.update(phase="critic", step=0)
    b.callbacks.phase_output("critic", out, None)
    torch.testing.assert_close(out.context["real"], pack(batch.x, 2))  # 16 points in 8 packs of 2
    penalty = dict(b.regularisers["critic"])["r1"].penalty(out.context)
    packs = pack(batch.x, 2).requires_grad_(True)
    (g,) = torch.autograd.grad(critic(unpack(packs, 2)).sum(), packs)  # (8, 4): one row per pack
    torch.testing.assert_close(penalty, 5.0 * g.square().sum(1).mean())
    # Per sample it would be 1/m of it: a pack's squared norm is the sum of its samples'.
    assert penalty.item() > 0


def test_r1_refuses_a_critic_with_batch_norm(registry):
    with pytest.raises(GenfwError, match=r"r1 penalises each example's gradient norm.*batch norm"):
        built(registry, {"r1": {}}, critic={"name": "mlp", "hidden": [8, 8], "batch_norm": True})


# --- orthogonal -----------------------------------------------------------------------------------


def test_orthogonality_of_a_two_by_two_weight_by_hand():
    w = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    # W W^T = [[5, 11], [11, 25]]: the off-diagonal entries squared, 2 * 121.
    assert orthogonality(w).item() == 242.0
    reg = Orthogonal(OrthogonalOptions(beta=0.5))
    reg.weights = {"generator": [(w, False)]}
    assert reg.penalty({"phase": "generator"}).item() == 121.0
    assert reg.penalty({"phase": "critic"}) is None
    # Orthogonal rows cost nothing, whatever their norms.
    assert orthogonality(torch.tensor([[3.0, 0.0], [0.0, -2.0]])).item() == 0.0


def test_orthogonality_reshapes_to_one_row_per_output_unit():
    conv = torch.tensor([[[[1.0, 0.0]]], [[[1.0, 1.0]]]])  # Conv2d (out 2, in 1, 1, 2): rows [1, 0], [1, 1]
    assert orthogonality(conv).item() == 2.0  # off-diagonal 1, twice
    # A transposed convolution's weight is (in, out, kh, kw): output channel o is w[:, o].
    convt = torch.tensor([[[[1.0]], [[1.0]]], [[[0.0]], [[1.0]]]])  # (in 2, out 2, 1, 1)
    # rows per output: [1, 0] and [1, 1] -> 2; read per input instead ([1, 1], [0, 1]) it is also 2,
    # so use three inputs to tell them apart.
    convt = torch.tensor([[[[1.0]], [[2.0]]], [[[0.0]], [[1.0]]], [[[1.0]], [[0.0]]]])  # (3, 2, 1, 1)
    # per output: [1, 0, 1] . [2, 1, 0] = 2 -> 8; per input (3 rows of 2) it would be
    # [1,2].[0,1]=2, [1,2].[1,0]=1, [0,1].[1,0]=0 -> 2 * (4 + 1) = 10.
    assert orthogonality(convt, transposed=True).item() == 8.0
    assert orthogonality(convt).item() == 10.0


def test_orthogonal_gradient_is_biggan_pytorch_s_update_with_beta_half_its_strength():
    torch.manual_seed(0)
    w = torch.randn(4, 6, requires_grad=True)
    strength = 1e-4
    (grad,) = torch.autograd.grad((strength / 2) * orthogonality(w), w)
    # BigGAN-PyTorch utils.ortho: param.grad += strength * 2 ((W W^T) * (1 - I)) W
    with torch.no_grad():
        ref = strength * 2 * ((w @ w.T) * (1.0 - torch.eye(4))) @ w
    torch.testing.assert_close(grad, ref)


def test_orthogonal_covers_every_weight_of_the_chosen_phases(registry):
    b = built(
        registry,
        {"orthogonal": {"phases": ["generator", "critic"]}, "spectral_norm": {"generator": True}},
        dataset="digits",
        generator={"name": "dcgan", "channels": 4, "batch_norm": False},
        critic={"name": "dcgan", "channels": 4, "batch_norm": False},
    )
    reg = dict(b.regularisers["generator"])["orthogonal"]
    assert dict(b.regularisers["critic"])["orthogonal"] is reg
    g, c = b.model.modules["generator"], b.model.modules["critic"]
    ids = {id(w) for w, _ in reg.weights["generator"]}
    assert ids == {id(p) for p in g.parameters() if p.dim() >= 2}
    assert {id(w) for w, _ in reg.weights["critic"]} == {id(p) for p in c.parameters() if p.dim() >= 2}
    # The transposed convolutions' weights (their spectral-norm originals) are read per output channel.
    convt = [m for m in g.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert convt
    marked = {id(w) for w, t in regularised_weights(g) if t}
    assert marked == {id(m.parametrizations.weight.original) for m in convt}
    expected = 1e-4 * sum(orthogonality(w, t) for w, t in reg.weights["generator"])
    torch.testing.assert_close(reg.penalty({"phase": "generator"}), expected)


def test_orthogonal_attaches_to_the_generator_by_default_and_refuses_a_missing_phase(registry):
    b = built(registry, {"orthogonal": {}})
    assert "orthogonal" in dict(b.regularisers["generator"])
    assert "orthogonal" not in dict(b.regularisers["critic"])
    with pytest.raises(
        GenfwError, match="orthogonal: phases critic were chosen, but this model has phases autoencoder"
    ):
        build_vae(registry, {"orthogonal": {"phases": ["autoencoder", "critic"]}})
    b = build_vae(registry, {"orthogonal": {"phases": ["autoencoder"]}})
    reg = dict(b.regularisers["autoencoder"])["orthogonal"]
    modules = [p for n in ("encoder", "generator") for p in b.model.modules[n].parameters() if p.dim() >= 2]
    assert {id(w) for w, _ in reg.weights["autoencoder"]} == {id(p) for p in modules}


def build_vae(registry, regs):
    from genfw.train import build

    return build(
        resolve({"variant": "vae", "dataset": "toy2d", "regularisers": regs, "metrics": {}}, registry)
    )


def test_orthogonal_is_computed_in_float32_under_autocast():
    torch.manual_seed(0)
    w = torch.randn(8, 16)
    reg = Orthogonal(OrthogonalOptions())
    reg.weights = {"generator": [(w, False)]}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = reg.penalty({"phase": "generator"})
    assert mixed.dtype == torch.float32
    torch.testing.assert_close(mixed, 1e-4 * orthogonality(w))  # bf16 would be off by ~1e-2 relative


# --- LeCam ----------------------------------------------------------------------------------------


def test_lecam_anchors_and_penalty_hand_stepped():
    reg = LeCam(LeCamOptions(weight=2.0, decay=0.9))
    reg.anchors = ScoreAnchors()
    paper = LeCam(LeCamOptions(weight=2.0, decay=0.9, relu=False))
    paper.anchors = ScoreAnchors()

    def step(real, fake):
        ctx = {"real_scores": torch.tensor(real), "fake_scores": torch.tensor(fake)}
        return reg.penalty(ctx).item(), paper.penalty(ctx).item()

    # Step 1: b_R = 0.1 * 2 = 0.2, debias 1 - 0.9 = 0.1 -> alpha_R = 2; alpha_F = -0.5.
    ours, theirs = step([1.0, 3.0], [-1.0, 0.0])
    above = ((1 + 0.5) ** 2 + (3 + 0.5) ** 2) / 2  # D(x) - alpha_F, both positive
    below = ((2 + 1) ** 2 + (2 - 0) ** 2) / 2  # alpha_R - D(G(z)), both positive
    assert ours == pytest.approx(2 * (above + below))
    assert theirs == pytest.approx(2 * (above + below))
    # Step 2 (the EMA folds this step's means in first, then is used):
    # b_R = 0.9 * 0.2 + 0.1 * 1 = 0.28, b_F = 0.9 * -0.05 + 0.1 * 1 = 0.055, debias 1 - 0.81 = 0.19.
    a_r, a_f = 0.28 / 0.19, 0.055 / 0.19
    ours, theirs = step([0.0, 2.0], [1.0, 1.0])
    relu_above = (0.0 + (2 - a_f) ** 2) / 2  # 0 - a_f < 0: no pull
    below = (a_r - 1) ** 2
    assert ours == pytest.approx(2 * (relu_above + below), rel=1e-6)
    assert theirs == pytest.approx(2 * (((0 - a_f) ** 2 + (2 - a_f) ** 2) / 2 + below), rel=1e-6)
    assert reg.anchors.updates.item() == 2
    assert reg.anchors.real_biased.item() == pytest.approx(0.28)


def test_lecam_gradient_reaches_the_scores_not_the_anchors():
    reg = LeCam(LeCamOptions(weight=1.0, decay=0.5, relu=False))
    reg.anchors = ScoreAnchors()
    real = torch.tensor([1.0, 2.0], requires_grad=True)
    fake = torch.tensor([0.0, -2.0], requires_grad=True)
    penalty = reg.penalty({"real_scores": real, "fake_scores": fake})
    gr, gf = torch.autograd.grad(penalty, (real, fake))
    # alpha_R = 1.5, alpha_F = -1 (first step: the means); d/dr mean (r - a_F)^2 = (r - a_F).
    torch.testing.assert_close(gr, torch.tensor([2.0, 3.0]))
    torch.testing.assert_close(gf, torch.tensor([-1.5, -3.5]))


# --- top-k ----------------------------------------------------------------------------------------


def test_top_k_size_decays_per_epoch_to_nu_b():
    assert [top_k_size(5, e, 0.8, 0.5) for e in range(5)] == [5, 4, 3, 2, 2]
    assert top_k_size(64, 0, 0.99, 0.5) == 64
    assert top_k_size(64, 1, 0.99, 0.5) == 63  # int(63.36)
    assert top_k_size(64, 1000, 0.99, 0.5) == 32
    assert top_k_size(3, 9, 0.5, 0.1) == 1  # never fewer than one


def test_top_k_uses_the_best_scored_fakes_and_anneals_k(registry):
    b = built(registry, {"top_k": {"gamma": 0.8, "nu": 0.5, "epoch_steps": 2}})
    reg = dict(b.regularisers["generator"])["top_k"]
    scores = torch.tensor([0.5, -1.0, 2.0, 0.0, 1.0], requires_grad=True)
    best = {5: [0.5, -1.0, 2.0, 0.0, 1.0], 4: [2.0, 1.0, 0.5, 0.0], 3: [2.0, 1.0, 0.5], 2: [2.0, 1.0]}
    for step, k in enumerate([5, 5, 4, 4, 3, 3, 2, 2, 2]):
        penalty = reg.penalty({"fake_scores": scores})
        # non_saturating: G minimises mean softplus(-s) over the k best.
        assert penalty.item() == pytest.approx(sum(F.softplus(torch.tensor(-s)).item() for s in best[k]) / k)
        assert b.model.modules["top_k"].k.item() == k
        (g,) = torch.autograd.grad(penalty, scores)
        assert (g != 0).sum().item() == k, f"step {step}: only the k best fakes get gradient"
    assert b.model.modules["top_k"].steps.item() == 9
    assert reg.replaces_loss


def test_top_k_gives_a_relativistic_loss_the_real_scores(registry):
    b = built(registry, {"top_k": {"gamma": 0.5, "epoch_steps": 1}})
    reg = dict(b.regularisers["generator"])["top_k"]
    seen = {}

    class Relativistic:
        needs_real_scores = True

        def generator_loss(self, fake_scores, real_scores=None):
            seen["fake"], seen["real"] = fake_scores, real_scores
            return (fake_scores.mean() - real_scores.mean()).square()

    reg.loss = Relativistic()
    real = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    ctx = {"fake_scores": torch.tensor([0.0, 3.0, 1.0, 2.0]), "real": real, "labels": None}
    ctx["critic"] = lambda x, y=None: 10 * x[:, 0]
    reg.penalty(ctx)  # k = 4
    reg.penalty(ctx)  # k = 2
    torch.testing.assert_close(seen["fake"], torch.tensor([3.0, 2.0]))
    torch.testing.assert_close(seen["real"], torch.tensor([10.0, 20.0, 30.0, 40.0]))


def test_top_k_fits_the_variants_whose_generator_objective_is_the_loss_alone(registry):
    from genfw_plugins.modern import top_k_fits

    fits = {v.strip() for v in variants_where(top_k_fits, registry).split(",")}
    assert fits == {"gan", "lsgan", "dragan", "wgan", "wgan-gp", "sagan", "sngan", "biggan", "cgan"}
    with pytest.raises(
        GenfwError, match=r"top_k replaces the generator's objective.*ACGAN.*variants it applies to: "
    ):
        built(registry, {"top_k": {}}, variant="acgan", dataset="digits")


def test_which_variants_the_gradient_and_score_remedies_fit(registry):
    r1 = {v.strip() for v in variants_where(R1.fits, registry).split(",")}
    lecam = {v.strip() for v in variants_where(LeCam.fits, registry).split(",")}
    assert {"gan", "wgan-gp", "cgan", "acgan", "progan", "ebgan", "aae", "wae"} <= r1
    assert "vae" not in r1 and "ae" not in r1
    assert {"gan", "wgan-gp", "cgan", "progan", "wae"} <= lecam
    assert not {"ebgan", "began", "madgan", "vae"} & lecam


# --- training, resume, refusals, contract ---------------------------------------------------------

ALL = {
    "r1": {"interval": 2},
    "r2": {"gamma": 1.0},
    "lecam": {},
    "orthogonal": {"phases": ["generator", "critic"]},
    "top_k": {"epoch_steps": 2},
}


@pytest.mark.parametrize("variant, dataset", [("gan", "toy2d"), ("wgan-gp", "toy2d"), ("cgan", "digits")])
def test_they_train_together(tmp_path, registry, variant, dataset):
    r = raw(variant=variant, dataset=dataset, regs=ALL, steps=4)
    if variant == "wgan-gp":
        r["variant"] = {"name": "wgan-gp", "n_critic": 2}
    t = Trainer(resolve(r, registry), tmp_path / "run")
    result = t.fit()
    logs = result.last_logs
    for key in ("critic/r2", "critic/lecam", "critic/orthogonal", "generator/orthogonal", "generator/top_k"):
        assert math.isfinite(logs[key]), key
    assert "generator/replaced_loss" in logs
    n_critic = 2 if variant == "wgan-gp" else 1
    assert t.plain["r1"].steps.item() == 4 * n_critic
    assert t.plain["lecam"].updates.item() == 4 * n_critic
    assert t.plain["top_k"].steps.item() == 4
    assert t.plain["top_k"].k.item() == top_k_size(16, 1, 0.99, 0.5)  # step 3 is in epoch 1


def test_they_train_under_fp16_with_its_loss_scales(tmp_path, registry):
    r = raw(regs=ALL, steps=3)
    r["train"]["mixed_precision"] = "fp16"
    t = Trainer(resolve(r, registry), tmp_path / "run")
    # A first scale of 65536 overflows every gradient penalty's input gradients in fp16 at step 0
    # (gradient_penalty's too), which the loop then reports as divergence; start lower.
    t._scalers = {n: torch.amp.GradScaler("cpu", init_scale=256.0) for n in t._scalers}
    logs = t.fit().last_logs
    for key in ("critic/r2", "critic/lecam", "critic/orthogonal", "generator/top_k"):
        assert math.isfinite(logs[key]), key
    assert t.plain["lecam"].updates.item() == 3


def test_resume_is_exact_with_the_stateful_remedies(tmp_path, registry):
    regs = {"r1": {"interval": 3}, "lecam": {"decay": 0.9}, "top_k": {"epoch_steps": 2, "gamma": 0.7}}
    regs["orthogonal"] = {}

    def run(path, steps, **train):
        r = raw(regs=regs, steps=steps)
        r["train"].update(train)
        t = Trainer(resolve(r, registry), path)
        t.fit()
        return t

    straight = run(tmp_path / "straight", 10, checkpoint_every=5)
    run(tmp_path / "split", 5)
    resumed = Trainer(
        read_run(tmp_path / "split", registry, [("train.steps", 10)]), tmp_path / "split", resume=True
    )
    assert resumed.plain["r1"].steps.item() == 5 and resumed.plain["top_k"].steps.item() == 5
    resumed.fit()
    names = ("generator", "critic", "r1", "lecam", "top_k")
    assert set(names) == set(straight.plain)
    for name in names:
        a, b = straight.plain[name].state_dict(), resumed.plain[name].state_dict()
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), f"{name}.{k} differs after resume"
    assert straight.plain["top_k"].k.item() == top_k_size(16, 4, 0.7, 0.5) == 8


@pytest.mark.parametrize("remedy", ["r1", "r2", "lecam", "top_k", "orthogonal"])
def test_a_variant_they_cannot_apply_to_is_refused_in_one_line(tmp_path, run_cli, remedy):
    code, _, err = run_cli(
        "train", "--plugin", "vae", "--regulariser", remedy, "--steps", "2", "--out", tmp_path / "r", *QUICK
    )
    assert code == 2 and not (tmp_path / "r").exists()
    [line] = err.strip().splitlines()
    assert remedy in line and "variants it applies to:" in line
    listed = [v.strip() for v in line.split("variants it applies to:")[1].split(",")]
    assert "gan" in listed


def test_top_k_on_acgan_is_refused_in_one_line_before_a_run_folder(tmp_path, run_cli):
    code, _, err = run_cli(
        "train", "--plugin", "acgan", "--dataset", "digits", "--regulariser", "top_k", "--steps", "2",
        "--out", tmp_path / "r", *QUICK,
    )  # fmt: skip
    assert code == 2 and not (tmp_path / "r").exists()
    [line] = err.strip().splitlines()
    assert "top_k" in line and "acgan" not in line.split("variants it applies to:")[1]


@pytest.mark.parametrize(
    "name, variant, options",
    [
        ("r1", "cgan", {"interval": 2}),
        ("r2", "wgan-gp", {}),
        ("lecam", "wgan-gp", {}),
        ("top_k", "wgan-gp", {}),
        ("orthogonal", "gan", {"phases": ["critic"]}),
    ],
)
def test_they_keep_the_regulariser_contract(name, variant, options):
    torch.manual_seed(0)
    testing.check_regulariser(name, options=options, variant=variant)
