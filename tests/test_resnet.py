"""ResNet networks (genfw_plugins.resnet) and the sngan variant (genfw_plugins.sngan): the projection
term, conditional batch norm and the residual blocks against hand computations, the authors'
layouts at 32 and 64 pixels, spectral norm everywhere on the critic, contracts, and short trainings
on digits (conditional, unconditional, bf16)."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from genfw import GenfwError
from genfw.config import resolve
from genfw.train import Trainer, build
from genfw_plugins._layers import ConditionalBatchNorm2d, projection
from genfw_plugins.resnet import (
    CriticBlock,
    GeneratorBlock,
    ResNetCritic,
    ResNetCriticOptions,
    ResNetGenerator,
    ResNetGeneratorOptions,
)
from genfw_plugins.sagan import SelfAttention
from genfw_plugins.sngan import SNGAN, SNGANOptions
from tests.conftest import QUICK


def has_sn(module: nn.Module) -> bool:
    return hasattr(module, "parametrizations") and "weight" in module.parametrizations


def up(x: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour up-sampling by hand: each pixel becomes a 2x2 square."""
    return x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)


def pool(x: torch.Tensor) -> torch.Tensor:
    """2x2 average pooling by hand."""
    b, c, h, w = x.shape
    return x.reshape(b, c, h // 2, 2, w // 2, 2).mean(dim=(3, 5))


def bn_hand(x: torch.Tensor, eps: float) -> torch.Tensor:
    """Batch norm in training mode without affine: per channel, biased variance over (B, H, W)."""
    mean = x.mean(dim=(0, 2, 3), keepdim=True)
    var = ((x - mean) ** 2).mean(dim=(0, 2, 3), keepdim=True)
    return (x - mean) / torch.sqrt(var + eps)


# --- formulas -------------------------------------------------------------------------------------


def test_projection_term_on_numbers():
    phi = torch.tensor([[1.0, 2.0], [-1.0, 0.5]])
    emb = torch.tensor([[3.0, 4.0], [2.0, -2.0]])
    torch.testing.assert_close(projection(phi, emb), torch.tensor([[11.0], [-3.0]]))


def test_projection_critic_is_psi_of_phi_plus_label_embedding_dot_phi():
    """Miyato & Koyama 2018, eq. 3: D(x, y) = psi(phi(x)) + embed(y) . phi(x), on hand-set head and
    embedding weights."""
    torch.manual_seed(0)
    d = ResNetCritic(ResNetCriticOptions(channels=2), (1, 8, 8), 1, 2).eval()
    with torch.no_grad():
        d.head.weight.copy_(torch.tensor([[1.0, -2.0]]))  # psi(h) = h0 - 2 h1 (no bias at 8 px)
        d.embed.weight.copy_(torch.tensor([[0.5, 0.0], [0.0, 3.0]]))
    assert d.head.bias is None
    x, y = torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 1, 0])
    with torch.no_grad():
        phi = d.features(x, y)
        got = d(x, y)[:, 0]
    h0, h1 = phi[:, 0], phi[:, 1]
    want = h0 - 2 * h1 + torch.where(y == 0, 0.5 * h0, 3.0 * h1)
    torch.testing.assert_close(got, want)
    assert (phi >= 0).all()  # ReLU then global sum pooling
    # Only the first output (the adversarial score) gets the projection term.
    d3 = ResNetCritic(ResNetCriticOptions(channels=2), (1, 8, 8), 3, 2).eval()
    with torch.no_grad():
        torch.testing.assert_close(d3(x, y)[:, 1:], d3.head(d3.features(x))[:, 1:])
        assert not torch.allclose(d3(x, y)[:, 0], d3.head(d3.features(x))[:, 0])


def test_conditional_batch_norm_is_the_hand_formula_for_two_classes():
    """gamma[y] * (x - mean) / sqrt(var + eps) + beta[y] with batch statistics in training, running
    ones in eval (momentum 0.1, unbiased variance in the running average)."""
    torch.manual_seed(0)
    cbn = ConditionalBatchNorm2d(2, 2, eps=2e-5)
    with torch.no_grad():
        cbn.gamma.copy_(torch.tensor([[2.0, 3.0], [0.5, -1.0]]))
        cbn.beta.copy_(torch.tensor([[0.1, 0.2], [-0.3, 0.4]]))
    x, y = torch.randn(4, 2, 3, 3) * 2 + 1, torch.tensor([0, 1, 1, 0])
    gamma, beta = cbn.gamma[y][:, :, None, None], cbn.beta[y][:, :, None, None]
    torch.testing.assert_close(cbn(x, y), gamma * bn_hand(x, 2e-5) + beta)
    mean, var = x.mean(dim=(0, 2, 3)), x.var(dim=(0, 2, 3), unbiased=True)
    running_mean, running_var = 0.1 * mean, 0.9 + 0.1 * var
    cbn.eval()
    x2 = torch.randn(2, 2, 3, 3)
    y2 = torch.tensor([1, 0])
    hat = (x2 - running_mean[None, :, None, None]) / torch.sqrt(running_var[None, :, None, None] + 2e-5)
    want = cbn.gamma[y2][:, :, None, None] * hat + cbn.beta[y2][:, :, None, None]
    torch.testing.assert_close(cbn(x2, y2), want)
    # Fresh gains start near 1 (N(1, 0.02)) and biases at 0.
    fresh = ConditionalBatchNorm2d(64, 10)
    assert abs(fresh.gamma.mean().item() - 1) < 0.01 and 0.01 < fresh.gamma.std().item() < 0.03
    assert torch.equal(fresh.beta, torch.zeros(10, 64))


def test_generator_block_is_the_hand_composition_of_its_layers():
    """BN-ReLU-up-conv3-BN-ReLU-conv3 plus up-conv1, with the block's (fixed) weights."""
    torch.manual_seed(0)
    block = GeneratorBlock(2, 3, num_classes=2)
    x, y = torch.randn(4, 2, 4, 4), torch.tensor([0, 1, 0, 1])

    def cbn(layer, h):
        return layer.gamma[y][:, :, None, None] * bn_hand(h, 2e-5) + layer.beta[y][:, :, None, None]

    h = up(F.relu(cbn(block.b1, x)))
    h = F.conv2d(h, block.c1.weight, block.c1.bias, padding=1)
    h = F.conv2d(F.relu(cbn(block.b2, h)), block.c2.weight, block.c2.bias, padding=1)
    short = F.conv2d(up(x), block.c_sc.weight, block.c_sc.bias)
    torch.testing.assert_close(block(x, y), h + short, rtol=1e-5, atol=1e-5)
    assert block(x, y).shape == (4, 3, 8, 8)
    # Same width, no up-sampling: the shortcut is the identity.
    same = GeneratorBlock(3, 3, up=False)
    assert same.c_sc is None
    z = torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(same(z) - same.residual(z), z)
    # Another norm (BigGAN's take a vector): called as norm(h, y) with what the block is given.

    class Scale(nn.Module):
        def __init__(self, n: int) -> None:
            super().__init__()

        def forward(self, h: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            return h * v[:, None, None, None]

    scaled = GeneratorBlock(3, 3, up=False, norm=Scale)
    v = torch.tensor([2.0, -1.0])
    h = F.conv2d(F.relu(z * v[:, None, None, None]), scaled.c1.weight, scaled.c1.bias, padding=1)
    h = F.conv2d(F.relu(h * v[:, None, None, None]), scaled.c2.weight, scaled.c2.bias, padding=1)
    torch.testing.assert_close(scaled(z, v), h + z, rtol=1e-5, atol=1e-5)


def test_critic_blocks_are_the_hand_composition_of_their_layers():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 8)

    def conv(layer, h, pad):
        return F.conv2d(h, layer.weight, layer.bias, padding=pad)

    # The optimised first block: conv3-ReLU-conv3-avgpool + avgpool-conv1 (no ReLU on the image).
    first = CriticBlock(3, 4, optimized=True)
    want = pool(conv(first.c2, F.relu(conv(first.c1, x, 1)), 1)) + conv(first.c_sc, pool(x), 0)
    torch.testing.assert_close(first(x), want, rtol=1e-5, atol=1e-5)
    # A down-block: ReLU-conv3-ReLU-conv3-avgpool + conv1-avgpool; hidden width = input width.
    down = CriticBlock(3, 4, down=True)
    assert down.c1.weight.shape == (3, 3, 3, 3)
    want = pool(conv(down.c2, F.relu(conv(down.c1, F.relu(x), 1)), 1)) + pool(conv(down.c_sc, x, 0))
    torch.testing.assert_close(down(x), want, rtol=1e-5, atol=1e-5)
    # Same width, same side: identity shortcut.
    plain = CriticBlock(3, 3, down=False)
    assert plain.c_sc is None
    want = conv(plain.c2, F.relu(conv(plain.c1, F.relu(x), 1)), 1) + x
    torch.testing.assert_close(plain(x), want, rtol=1e-5, atol=1e-5)


def test_authors_initialisation():
    """Glorot uniform with gain sqrt(2) in the residual convs, gain 1 in shortcuts, zero biases."""
    torch.manual_seed(0)
    block = CriticBlock(64, 64, down=True)
    bound = math.sqrt(2) * math.sqrt(6 / (64 * 9 + 64 * 9))
    assert block.c1.weight.abs().max() <= bound and block.c1.weight.abs().max() > 0.9 * bound
    bound_sc = math.sqrt(6 / (64 + 64))
    assert block.c_sc.weight.abs().max() <= bound_sc and block.c_sc.weight.abs().max() > 0.9 * bound_sc
    assert torch.equal(block.c1.bias, torch.zeros(64))


# --- layouts and shapes ---------------------------------------------------------------------------


def _blocks(net):
    return [b for b in net.blocks if isinstance(b, (CriticBlock, GeneratorBlock))]


def test_the_authors_layouts_at_32_and_64_pixels():
    # 32 px (resnet_32.py / snresnet_32.py): G 256 wide, three up-blocks; D 128 wide, blocks
    # 32 -> 16 -> 8 -> 8 -> 8.
    g = ResNetGenerator(ResNetGeneratorOptions(), 128, (3, 32, 32), 0)
    assert g.linear.out_features == 256 * 16
    assert [(b.c1.in_channels, b.c2.out_channels) for b in _blocks(g)] == [(256, 256)] * 3
    d = ResNetCritic(ResNetCriticOptions(), (3, 32, 32), 1, 0)
    assert [(b.c2.out_channels, b.down) for b in _blocks(d)] == [
        (128, True),
        (128, True),
        (128, False),
        (128, False),
    ]
    assert [b.c_sc is None for b in _blocks(d)] == [False, False, True, True]
    # 64 px (resnet_64.py / snresnet_64.py): pyramids of ch = 64.
    g = ResNetGenerator(ResNetGeneratorOptions(), 128, (3, 64, 64), 0)
    assert g.linear.out_features == 1024 * 16
    assert [b.c2.out_channels for b in _blocks(g)] == [512, 256, 128, 64]
    d = ResNetCritic(ResNetCriticOptions(), (3, 64, 64), 1, 0)
    assert [(b.c2.out_channels, b.down) for b in _blocks(d)] == [
        (64, True),
        (128, True),
        (256, True),
        (512, True),
        (1024, True),
    ]
    assert d.head.bias is not None  # the 64-pixel head has a bias, the 32-pixel one none


@pytest.mark.parametrize("side", [8, 16, 32, 64])
@pytest.mark.parametrize("channels", [1, 3])
def test_shapes(side, channels):
    torch.manual_seed(0)
    shape = (channels, side, side)
    g = ResNetGenerator(ResNetGeneratorOptions(channels=4), 8, shape, 3)
    d = ResNetCritic(ResNetCriticOptions(channels=4), shape, 1, 3)
    y = torch.tensor([0, 1])
    x = g(torch.randn(2, 8), y)
    assert x.shape == (2, *shape) and x.abs().max() <= 1
    assert d(x, y).shape == (2, 1)
    assert len(_blocks(g)) == int(math.log2(side // 4))


def test_bad_shapes_and_options_are_refused_in_one_line(registry):
    with pytest.raises(ValueError, match=r"resnet generators cannot handle shape \(1, 28, 28\); supported"):
        ResNetGenerator(ResNetGeneratorOptions(), 8, (1, 28, 28), 0)
    with pytest.raises(ValueError, match=r"resnet critics cannot handle shape \(2,\)"):
        ResNetCritic(ResNetCriticOptions(), (2,), 1, 0)
    raw = {
        "variant": "sngan",
        "dataset": "digits",
        "metrics": {},
        "critic": {"name": "resnet", "attention_side": 3},
    }
    with pytest.raises(
        GenfwError, match="attention_side 3 is not a feature-map side of this resnet critic; valid: 4"
    ) as e:
        build(resolve(raw, registry))
    assert "\n" not in str(e.value)
    raw = {
        "variant": "sngan",
        "dataset": "digits",
        "metrics": {},
        "generator": {"name": "resnet", "conditioning": "x"},
    }
    with pytest.raises(GenfwError, match="conditioning must be one of"):
        resolve(raw, registry)


def test_self_attention_at_the_chosen_side():
    g = ResNetGenerator(ResNetGeneratorOptions(channels=8, attention_side=16), 8, (1, 32, 32), 0)
    d = ResNetCritic(ResNetCriticOptions(channels=8, attention_side=8), (1, 32, 32), 1, 0)
    assert list(g.attention) == ["1"]  # after the second up-block: 4 -> 8 -> 16
    assert isinstance(g.attention["1"], SelfAttention) and g.attention["1"].v.out_channels == 8
    kinds = [type(b).__name__ for b in d.blocks]
    assert kinds == ["CriticBlock", "CriticBlock", "SelfAttention", "CriticBlock", "CriticBlock"]
    assert g(torch.randn(2, 8)).shape == (2, 1, 32, 32) and d(torch.randn(2, 1, 32, 32)).shape == (2, 1)


def test_spectral_norm_on_every_critic_weight_and_the_embedding():
    d = ResNetCritic(ResNetCriticOptions(channels=4, spectral_norm=True, attention_side=4), (1, 8, 8), 1, 3)
    weighted = [m for m in d.modules() if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding))]
    # the optimised block (3 convs), two blocks with identity shortcuts (2 each), the attention's 4
    # convs, the head and the embedding
    assert len(weighted) == 3 + 2 + 2 + 4 + 1 + 1
    assert all(has_sn(m) for m in weighted)
    plain = ResNetCritic(ResNetCriticOptions(channels=4), (1, 8, 8), 1, 3)
    assert not any(has_sn(m) for m in plain.modules())


# --- conditioning -------------------------------------------------------------------------------


def test_conditioning_options():
    torch.manual_seed(0)
    g = ResNetGenerator(ResNetGeneratorOptions(channels=4), 8, (1, 8, 8), 3)
    assert g.linear.in_features == 8 and isinstance(g.blocks[0].b1, ConditionalBatchNorm2d)
    assert not isinstance(g.bn, ConditionalBatchNorm2d)  # the last norm is plain, as the authors'
    gc = ResNetGenerator(ResNetGeneratorOptions(channels=4, conditioning="concat"), 8, (1, 8, 8), 3)
    assert gc.linear.in_features == 8 + 3
    assert not any(isinstance(m, ConditionalBatchNorm2d) for m in gc.modules())
    dc = ResNetCritic(ResNetCriticOptions(channels=4, conditioning="concat"), (1, 8, 8), 1, 3)
    assert dc.embed is None and dc.blocks[0].c1.in_channels == 1 + 3
    d0 = ResNetCritic(ResNetCriticOptions(channels=4), (1, 8, 8), 1, 0)
    assert d0.embed is None and d0.blocks[0].c1.in_channels == 1
    with pytest.raises(ValueError, match="pass labels"):
        g(torch.randn(2, 8))


@pytest.mark.parametrize(
    ("kind", "options"),
    [
        ("generator", {"channels": 4}),
        ("generator", {"channels": 4, "conditioning": "concat", "attention_side": 8}),
        ("critic", {"channels": 4, "spectral_norm": True}),
        ("critic", {"channels": 4, "conditioning": "concat", "attention_side": 8}),
    ],
)
def test_networks_keep_the_contract(genfw_contract, kind, options):
    genfw_contract(kind, "resnet", options=options)


# --- the variant ----------------------------------------------------------------------------------


def test_sngan_recipe(registry):
    raw = {"variant": "sngan", "dataset": "digits", "metrics": {}}
    b = build(resolve(raw, registry))
    critic, gen = b.model.phases
    assert critic.optim.lr == gen.optim.lr == 2e-4 and critic.optim.betas == gen.optim.betas == (0.0, 0.9)
    assert critic.repeats == 5 and gen.repeats == 1
    assert type(critic.step.__self__.loss).__name__ == "HingeLoss"
    assert critic.step.__self__.options.latent_dim == 128
    g, d = b.model.modules["generator"], b.model.modules["critic"]
    assert isinstance(g, ResNetGenerator) and isinstance(d, ResNetCritic)
    # Digits have labels: projection critic and conditional batch norm.
    assert b.model.num_classes == 10 and d.embed is not None and g.cbn
    # Spectral norm (the remedy) on every critic weight, the projection embedding included; none in G.
    weighted = [m for m in d.modules() if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding))]
    assert weighted and all(has_sn(m) for m in weighted)
    assert not any(has_sn(m) for m in g.modules())
    raw["variant"] = {"name": "sngan", "conditional": "never"}
    b = build(resolve(raw, registry))
    assert b.model.num_classes == 0 and b.model.modules["critic"].embed is None


def test_sngan_conditional_modes():
    def ctx(k):
        return SimpleNamespace(data=SimpleNamespace(num_classes=k))

    assert SNGAN(SNGANOptions()).classes(ctx(10)) == 10
    assert SNGAN(SNGANOptions()).classes(ctx(0)) == 0
    assert SNGAN(SNGANOptions(conditional="never")).classes(ctx(10)) == 0
    with pytest.raises(GenfwError, match="variant 'sngan' needs a labelled data set"):
        SNGAN(SNGANOptions(conditional="always")).classes(ctx(0))


def tiny(tmp_path, steps=3, variant=None, **train):
    return {
        "variant": {"name": "sngan", "latent_dim": 16, "n_critic": 2, **(variant or {})},
        "dataset": "digits",
        "generator": {"name": "resnet", "channels": 8},
        "critic": {"name": "resnet", "channels": 8},
        "metrics": {},
        "train": {"steps": steps, "batch_size": 16, "log_every": 1, "progress": False, "grid": 4, **train},
    }


@pytest.mark.parametrize("conditional", ["auto", "never"])
def test_sngan_trains_on_digits(tmp_path, registry, conditional):
    cfg = resolve(tiny(tmp_path, variant={"conditional": conditional}), registry)
    trainer = Trainer(cfg, tmp_path / "run")
    before = {k: v.clone() for k, v in trainer.plain["generator"].state_dict().items()}
    result = trainer.fit()
    assert result.step == 3 and all(math.isfinite(v) for v in result.last_logs.values())
    after = trainer.plain["generator"].state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "critic/loss" in r] == [1, 2, 3]
    assert trainer.built.model.num_classes == (10 if conditional == "auto" else 0)


def test_sngan_trains_under_bf16_autocast(tmp_path, registry):
    trainer = Trainer(resolve(tiny(tmp_path, steps=2, mixed_precision="bf16"), registry), tmp_path / "run")
    result = trainer.fit()
    assert result.step == 2 and all(math.isfinite(v) for v in result.last_logs.values())
    with torch.no_grad():
        x = trainer.built.model.sample(trainer.plain, 4, torch.arange(4))
    assert x.shape == (4, 1, 8, 8) and torch.isfinite(x).all()


# --- the same conditioning on the dcgan and sagan networks ---------------------------------------


@pytest.mark.parametrize("name", ["dcgan", "sagan"])
def test_projection_on_dcgan_and_sagan_critics(registry, name):
    torch.manual_seed(0)
    spec = registry.get("critic", name)
    opts = spec.options(channels=4, conditioning="projection")
    d = spec.factory(opts, in_shape=(1, 8, 8), out_dim=1, num_classes=3).eval()
    x, y = torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 1])
    with torch.no_grad():
        h = d.features(x, y)
        want = d.head(h)[:, 0] + (d.embed.weight[y] * h).sum(1)  # psi(phi) + embed(y) . phi
        torch.testing.assert_close(d(x, y)[:, 0], want)
    assert d.body[0].in_channels == 1  # no one-hot planes
    assert has_sn(d.embed) == (name == "sagan")  # the sagan critic normalises every weight


@pytest.mark.parametrize("name", ["dcgan", "sagan"])
def test_cbn_on_dcgan_and_sagan_generators(registry, name):
    spec = registry.get("generator", name)
    g = spec.factory(
        spec.options(channels=4, conditioning="cbn"), latent_dim=8, out_shape=(1, 8, 8), num_classes=3
    )
    norms = [m for m in g.modules() if isinstance(m, (ConditionalBatchNorm2d, nn.BatchNorm2d))]
    cbns = [m for m in norms if isinstance(m, ConditionalBatchNorm2d)]
    assert cbns and len(norms) == 2 * len(cbns)  # every norm conditional (each holds an affine-less BN)
    assert g.project.in_features == 8  # no one-hot on z
    z, y = torch.randn(4, 8), torch.tensor([0, 1, 2, 0])
    assert g(z, y).shape == (4, 1, 8, 8)


def test_dcgan_cbn_needs_batch_norm(registry):
    raw = {
        "variant": "cgan",
        "dataset": "digits",
        "metrics": {},
        "generator": {"name": "dcgan", "channels": 4, "batch_norm": False, "conditioning": "cbn"},
    }
    with pytest.raises(
        GenfwError, match="conditioning cbn conditions the batch norms: it needs batch_norm true"
    ) as e:
        build(resolve(raw, registry))
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    ("kind", "name", "options"),
    [
        ("generator", "dcgan", {"channels": 4, "conditioning": "cbn"}),
        ("critic", "dcgan", {"channels": 4, "conditioning": "projection"}),
        ("generator", "sagan", {"channels": 4, "conditioning": "cbn"}),
        ("critic", "sagan", {"channels": 4, "conditioning": "projection"}),
    ],
)
def test_conditioned_dcgan_and_sagan_keep_the_contract(genfw_contract, kind, name, options):
    genfw_contract(kind, name, options=options)


def test_cgan_trains_with_dcgan_cbn_and_projection_and_spectral_norm(tmp_path, registry):
    raw = {
        "variant": "cgan",
        "dataset": "digits",
        "metrics": {},
        "generator": {"name": "dcgan", "channels": 8, "conditioning": "cbn"},
        "critic": {"name": "dcgan", "channels": 8, "conditioning": "projection"},
        "regularisers": {"spectral_norm": {}},
        "train": {"steps": 2, "batch_size": 16, "log_every": 1, "progress": False, "grid": 4},
    }
    trainer = Trainer(resolve(raw, registry), tmp_path / "run")
    assert has_sn(trainer.plain["critic"].embed)  # the callback normalises the embedding too
    result = trainer.fit()
    assert result.step == 2 and all(math.isfinite(v) for v in result.last_logs.values())


def test_sngan_resumes_bit_exactly(tmp_path, registry):
    """Spectral norm's power-iteration vectors and the conditional batch norms' statistics are
    buffers: a run split at step 2 and resumed ends where a straight run does."""
    from genfw.train import read_run

    straight = Trainer(resolve(tiny(tmp_path, steps=4, checkpoint_every=2), registry), tmp_path / "a")
    straight.fit()
    Trainer(resolve(tiny(tmp_path, steps=2), registry), tmp_path / "b").fit()
    resumed = Trainer(read_run(tmp_path / "b", registry, [("train.steps", 4)]), tmp_path / "b", resume=True)
    assert resumed.step == 2
    resumed.fit()
    for name in ("generator", "critic"):
        a, b = straight.plain[name].state_dict(), resumed.plain[name].state_dict()
        assert any("_u" in k for k in a) or name == "generator"  # spectral norm's vectors ride along
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), f"{name} differs"


def test_sngan_options_from_the_command_line(tmp_path, run_cli):
    """The words of ``--plugin.conditional`` survive YAML parsing of flags (yes/no would be booleans)."""
    small = ["--generator.channels", "4", "--critic.channels", "4", "--plugin.n_critic", "1", "--steps", "1"]
    code, _, err = run_cli(
        "train", "--plugin", "sngan", "--plugin.conditional", "never", *small, "--out", tmp_path / "r", *QUICK
    )
    assert code == 0, err
    config = (tmp_path / "r" / "config.yaml").read_text()
    assert "conditional: never" in config
    code, _, err = run_cli(
        "train", "--plugin", "sngan", "--plugin.conditional", "no", *small, "--out", tmp_path / "s"
    )
    assert code == 2 and len(err.strip().splitlines()) == 1 and "variant.conditional" in err
