"""BigGAN (genfw_plugins.biggan): the hierarchical latent and the vector-conditioned batch norm on
hand-set weights, the shared embedding reaching every block, the truncated normal (redrawn, not
clipped), the EMA's start, the recipe, contracts, short trainings on digits (conditional, bf16) and
``genfw sample --truncation``."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import genfw
from genfw import GenfwError
from genfw.config import resolve
from genfw.train import Trainer, build
from genfw_plugins._layers import VectorConditionalBatchNorm2d
from genfw_plugins.biggan import (
    BigGANGenerator,
    BigGANGeneratorOptions,
    latent_chunks,
    truncated_normal,
)
from genfw_plugins.resnet import ResNetCritic
from genfw_plugins.tricks import AveragedGenerator
from tests.conftest import QUICK


def has_sn(module: nn.Module) -> bool:
    return hasattr(module, "parametrizations") and "weight" in module.parametrizations


def bn_hand(x: torch.Tensor, eps: float) -> torch.Tensor:
    mean = x.mean(dim=(0, 2, 3), keepdim=True)
    var = ((x - mean) ** 2).mean(dim=(0, 2, 3), keepdim=True)
    return (x - mean) / torch.sqrt(var + eps)


# --- formulas -------------------------------------------------------------------------------------


def test_latent_chunks():
    assert latent_chunks(128, 4) == [32, 32, 32, 32]  # BigGAN's 32-pixel G: 3 blocks + the linear
    assert latent_chunks(10, 4) == [3, 3, 2, 2]
    assert sum(latent_chunks(120, 6)) == 120


def test_vector_conditional_batch_norm_is_one_plus_gain_times_bn_plus_bias():
    """BigGAN's ccbn: (1 + G c) * BN(x) + B c, on hand-set G and B (2 channels, 2-d c)."""
    torch.manual_seed(0)
    norm = VectorConditionalBatchNorm2d(2, 2, eps=1e-5)
    with torch.no_grad():
        norm.gain.weight.copy_(torch.tensor([[1.0, 0.0], [0.5, -1.0]]))
        norm.bias.weight.copy_(torch.tensor([[0.0, 2.0], [1.0, 1.0]]))
    x = torch.randn(3, 2, 2, 2)
    c = torch.tensor([[1.0, 2.0], [0.0, 0.0], [-1.0, 3.0]])
    got = norm(x, c)
    gain = torch.tensor([[2.0, 1.0 + 0.5 - 2.0], [1.0, 1.0], [0.0, 1.0 - 0.5 - 3.0]])  # 1 + G c
    bias = torch.tensor([[4.0, 3.0], [0.0, 0.0], [6.0, 2.0]])  # B c
    want = gain[:, :, None, None] * bn_hand(x, 1e-5) + bias[:, :, None, None]
    torch.testing.assert_close(got, want)
    with pytest.raises(ValueError, match="conditioning vector"):
        norm(x, None)


def test_hierarchical_latent_and_shared_embedding_reach_every_block():
    """z (B, 12) for 3 blocks at 32 px: 4 chunks of 3; the linear sees chunk 0 alone and block i's
    norms see [shared(y), chunk i] (the same embedding table for every block)."""
    torch.manual_seed(0)
    opts = BigGANGeneratorOptions(channels=4, shared_dim=5)
    g = BigGANGenerator(opts, 12, (3, 32, 32), num_classes=7)
    assert g.chunks == [3, 3, 3, 3] and g.linear.in_features == 3
    z, y = torch.randn(2, 12), torch.tensor([4, 1])
    z0, cs = g.conditions(z, y)
    torch.testing.assert_close(z0, z[:, :3])
    emb = g.shared.weight[y]
    for i, c in enumerate(cs):
        torch.testing.assert_close(c, torch.cat([emb, z[:, 3 * (i + 1) : 3 * (i + 2)]], dim=1))
    norms = [m for m in g.modules() if isinstance(m, VectorConditionalBatchNorm2d)]
    assert len(norms) == 6 and all(n.gain.in_features == 5 + 3 for n in norms)
    # Every block's norms read the embedding: its gradient gets a contribution from each block.
    seen = []
    for i, block in enumerate(g.blocks):
        block.b1.register_forward_hook(lambda mod, args, out, i=i: seen.append((i, args[1])))
    g(z, y).sum().backward()
    assert [i for i, _ in seen] == [0, 1, 2]
    assert all(torch.equal(c[:, :5], emb) for _, c in seen)
    assert g.shared.weight.grad[[4, 1]].abs().sum() > 0 and g.shared.weight.grad[0].abs().sum() == 0
    # The generator's output follows z's last chunk (block 3's) as well as its first.
    z2 = z.clone()
    z2[:, 9:] += 1.0
    assert not torch.allclose(g(z, y), g(z2, y))


def test_block_norm_is_the_hand_formula_inside_the_generator():
    """The first norm of block 0 applied to the linear's output is (1 + G c_1) BN(h) + B c_1 with
    c_1 = [shared(y), z_1] (no spectral norm, so the weights are the ones set)."""
    torch.manual_seed(1)
    g = BigGANGenerator(
        BigGANGeneratorOptions(channels=2, shared_dim=2, spectral_norm=False), 4, (1, 8, 8), 3
    )
    assert g.chunks == [2, 2]
    norm = g.blocks[0].b1
    with torch.no_grad():
        g.shared.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
        norm.gain.weight.copy_(torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0]]))
        norm.bias.weight.copy_(torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.0, 2.0, 1.0, 0.0]]))
    z, y = torch.tensor([[0.3, -0.2, 0.5, 1.0], [1.0, 0.1, -1.0, 2.0]]), torch.tensor([0, 2])
    captured = {}
    norm.register_forward_hook(lambda mod, args, out: captured.update(h=args[0], out=out))
    g(z, y)
    # c = [emb(y), z[:, 2:]]: row 0 [1, 0, 0.5, 1], row 1 [1, 1, -1, 2]
    gain = torch.tensor([[1 + 1.0 + 1.0, 1.0], [1 + 1.0 + 2.0, 1.0]])
    bias = torch.tensor([[0.0, 0.5], [0.0, 2.0 - 1.0]])
    want = gain[:, :, None, None] * bn_hand(captured["h"], 1e-5) + bias[:, :, None, None]
    torch.testing.assert_close(captured["out"], want)


def test_spectral_norm_everywhere_in_g_but_the_shared_embedding():
    g = BigGANGenerator(BigGANGeneratorOptions(channels=4, attention_side=16), 8, (3, 32, 32), 10)
    weighted = [m for m in g.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(weighted) > 10 and all(has_sn(m) for m in weighted)
    assert not has_sn(g.shared) and "1" in g.attention


def test_unconditional_and_flat_generators():
    g = BigGANGenerator(BigGANGeneratorOptions(channels=4), 8, (1, 8, 8), 0)
    assert g.shared is None and g.blocks[0].b1.gain.in_features == 4  # z chunk alone
    assert g(torch.randn(3, 8)).shape == (3, 1, 8, 8)
    flat = BigGANGenerator(BigGANGeneratorOptions(channels=4, hierarchical=False), 8, (1, 8, 8), 0)
    assert type(flat.blocks[0].b1).__name__ == "BatchNorm2d" and flat.linear.in_features == 8
    with pytest.raises(ValueError, match="latent_dim must be at least 4"):
        BigGANGenerator(BigGANGeneratorOptions(channels=4), 3, (1, 32, 32), 0)
    with pytest.raises(ValueError, match="pass labels"):
        BigGANGenerator(BigGANGeneratorOptions(channels=4), 8, (1, 8, 8), 3)(torch.randn(2, 8))


def test_truncated_normal_redraws_out_of_range_entries():
    psi = 0.5
    torch.manual_seed(3)
    z = truncated_normal(2000, 8, psi)
    assert z.shape == (2000, 8) and z.abs().max() <= psi
    # Redrawn, not clipped: no mass piles up at +-psi, and the variance is the truncated normal's
    # (1 - 2 psi phi(psi) / (2 Phi(psi) - 1)), far below a clipped normal's.
    assert (z.abs() > psi - 1e-3).float().mean() < 0.01
    phi = math.exp(-(psi**2) / 2) / math.sqrt(2 * math.pi)
    mass = math.erf(psi / math.sqrt(2))
    want_var = 1 - 2 * psi * phi / mass
    assert abs(z.var().item() - want_var) < 0.01
    # The first draw's in-range entries are kept: same seed, same entries where |z| <= psi.
    torch.manual_seed(3)
    first = torch.randn(2000, 8)
    inside = first.abs() <= psi
    assert torch.equal(z[inside], first[inside])
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(GenfwError, match="positive finite"):
            truncated_normal(2, 2, bad)


def test_ema_start_copies_until_then():
    """BigGAN's ema_start (utils.ema.update: decay 0 while itr < start, itr counted from 1): with
    start 3, updates 1 and 2 copy the generator, update 3 averages with the decay."""
    net = nn.Linear(1, 1, bias=False)
    avg = AveragedGenerator(net)
    for value in (1.0, 2.0):
        net.weight.data.fill_(value)
        avg.update(net, 0.9, warmup=False, start=3)
        assert avg.average.weight.item() == value
    net.weight.data.fill_(12.0)
    avg.update(net, 0.9, warmup=False, start=3)
    assert avg.average.weight.item() == pytest.approx(0.9 * 2.0 + 0.1 * 12.0)
    fresh = AveragedGenerator(nn.Linear(1, 1, bias=False).requires_grad_(False))
    net.weight.data.fill_(5.0)
    before = fresh.average.weight.item()
    fresh.update(net, 0.9, warmup=False, start=1)  # 1 (and 0): averaging from the first update
    assert fresh.average.weight.item() == pytest.approx(0.9 * before + 0.1 * 5.0)


# --- the variant ----------------------------------------------------------------------------------


def test_biggan_recipe(registry):
    raw = {"variant": "biggan", "dataset": "digits", "metrics": {}}
    b = build(resolve(raw, registry))
    critic, gen = b.model.phases
    assert critic.optim.lr == gen.optim.lr == 2e-4 and critic.optim.betas == (0.0, 0.999)
    assert critic.optim.eps == gen.optim.eps == 1e-6
    assert critic.repeats == 4 and gen.repeats == 1
    assert type(critic.step.__self__.loss).__name__ == "HingeLoss"
    g, d = b.model.modules["generator"], b.model.modules["critic"]
    assert isinstance(g, BigGANGenerator) and isinstance(d, ResNetCritic)
    assert b.model.num_classes == 10 and d.embed is not None and g.shared is not None
    assert g.chunks == [64, 64]  # digits: one block, latent 128
    weighted = [m for m in d.modules() if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding))]
    assert weighted and all(has_sn(m) for m in weighted)
    ema_callback = [c for name, c in b.callbacks.items if name == "ema"]
    assert isinstance(b.model.modules["generator_ema"], AveragedGenerator)
    assert ema_callback and ema_callback[0].decay == 0.9999 and ema_callback[0].options.start == 1000
    assert ema_callback[0].options.warmup is False
    regs = {name for name, _ in b.regularisers["generator"]}
    assert "orthogonal" in regs and not b.regularisers.get("critic")
    (ortho,) = [r for name, r in b.regularisers["generator"] if name == "orthogonal"]
    assert ortho.beta == 1e-4
    assert b.model.truncate is not None
    raw["variant"] = {"name": "biggan", "ortho": 0.0, "conditional": "never"}
    b = build(resolve(raw, registry))
    assert "orthogonal" not in {name for name, _ in b.regularisers["generator"]}
    g = b.model.modules["generator"]
    assert b.model.num_classes == 0 and g.shared is None and b.model.modules["critic"].embed is None


def test_biggan_refuses_another_prior(registry):
    raw = {"variant": "biggan", "dataset": "digits", "prior": "uniform", "metrics": {}}
    with pytest.raises(GenfwError, match="use --prior normal"):
        build(resolve(raw, registry))


@pytest.mark.parametrize(
    "options",
    [{"channels": 4}, {"channels": 4, "hierarchical": False, "attention_side": 8, "spectral_norm": False}],
)
def test_generator_keeps_the_contract(genfw_contract, options):
    genfw_contract("generator", "biggan", options=options)


def tiny(steps=3, variant=None, **train):
    return {
        "variant": {"name": "biggan", "latent_dim": 16, "n_critic": 2, **(variant or {})},
        "dataset": "digits",
        "generator": {"name": "biggan", "channels": 8, "shared_dim": 8},
        "critic": {"name": "resnet", "channels": 8},
        "metrics": {},
        "train": {"steps": steps, "batch_size": 16, "log_every": 1, "progress": False, "grid": 4, **train},
    }


def test_biggan_trains_on_digits(tmp_path, registry):
    trainer = Trainer(resolve(tiny(variant={"ema_start": 3}), registry), tmp_path / "run")
    before = {k: v.clone() for k, v in trainer.plain["generator"].state_dict().items()}
    result = trainer.fit()
    assert result.step == 3 and all(math.isfinite(v) for v in result.last_logs.values())
    after = trainer.plain["generator"].state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert trainer.built.model.num_classes == 10
    ema = trainer.plain["generator_ema"]
    assert int(ema.updates) == 3
    # Two copies, then one average at update 3: the average is not the live generator.
    live = trainer.plain["generator"].linear.parametrizations.weight.original
    avg = ema.average.linear.parametrizations.weight.original
    assert not torch.equal(live, avg)
    with torch.no_grad():
        x = trainer.built.model.truncate(trainer.plain, 4, torch.arange(4), 0.5)
    assert x.shape == (4, 1, 8, 8) and torch.isfinite(x).all()


def test_biggan_trains_under_bf16_autocast(tmp_path, registry):
    trainer = Trainer(resolve(tiny(steps=2, mixed_precision="bf16"), registry), tmp_path / "run")
    result = trainer.fit()
    assert result.step == 2 and all(math.isfinite(v) for v in result.last_logs.values())
    with torch.no_grad():
        x = trainer.built.model.sample(trainer.plain, 4, torch.arange(4))
    assert x.shape == (4, 1, 8, 8) and torch.isfinite(x).all()


def test_sample_with_truncation_from_the_command_line(tmp_path, run_cli):
    small = [
        "--generator.channels", "4", "--generator.shared_dim", "4", "--critic.channels", "4",
        "--plugin.latent_dim", "8", "--plugin.n_critic", "1", "--steps", "1",
    ]  # fmt: skip
    code, _, err = run_cli("train", "--plugin", "biggan", *small, "--out", tmp_path / "r", *QUICK)
    assert code == 0, err
    code, _, err = run_cli(
        "sample", tmp_path / "r", "-n", "4", "--truncation", "0.5", "--out", tmp_path / "s.png"
    )
    assert code == 0, err
    assert (tmp_path / "s.png").exists()
    gen = genfw.load(tmp_path / "r")
    a, b = gen.sample(4, seed=1, truncation=0.5), gen.sample(4, seed=1, truncation=0.5)
    assert torch.equal(a, b) and not torch.equal(a, gen.sample(4, seed=1))  # seeded; psi changes z
    code, _, err = run_cli(
        "sample", tmp_path / "r", "-n", "4", "--truncation", "0", "--out", tmp_path / "t.png"
    )
    assert code == 2 and len(err.strip().splitlines()) == 1 and "positive finite" in err


def test_biggan_resumes_bit_exactly(tmp_path, registry):
    """Spectral norm's vectors, the norms' statistics, the EMA and its update count are buffers: a
    run split at step 2 (the EMA started at 1) and resumed ends where a straight run does."""
    from genfw.train import read_run

    cfg = tiny(steps=4, variant={"ema_start": 2}, checkpoint_every=2)
    straight = Trainer(resolve(cfg, registry), tmp_path / "a")
    straight.fit()
    Trainer(resolve(tiny(steps=2, variant={"ema_start": 2}), registry), tmp_path / "b").fit()
    resumed = Trainer(read_run(tmp_path / "b", registry, [("train.steps", 4)]), tmp_path / "b", resume=True)
    assert resumed.step == 2
    resumed.fit()
    for name in ("generator", "critic", "generator_ema"):
        a, b = straight.plain[name].state_dict(), resumed.plain[name].state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), f"{name} differs"


def test_adam_eps_reaches_the_optimisers(tmp_path, registry):
    trainer = Trainer(resolve(tiny(steps=1, variant={"adam_eps": 1e-7}), registry), tmp_path / "run")
    eps = {g["eps"] for opt in trainer.optimizers.values() for g in opt.param_groups}
    assert eps == {1e-7}
