"""Tests of the built-in regularisers (genfw_plugins.regularisers): gradient penalty, MMD, clipping."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import Tensor, nn

from genfw import GenfwError
from genfw.plugins import PluginHost
from genfw_plugins import regularisers
from genfw_plugins.regularisers import WAE_SCALES, mmd_imq, mmd_rbf


@pytest.fixture(scope="module")
def registry():
    host = PluginHost()
    host.add(regularisers, "regularisers")
    return host.registry


def build(registry, name: str, options: dict | None = None):
    return registry.spec("regulariser", name, options or {}, where=f"regularisers.{name}").build()


def test_protocol(registry) -> None:
    gp, mmd, clip = (build(registry, n) for n in ("gradient_penalty", "mmd", "weight_clipping"))
    assert gp.phases == ("critic",) and gp.needs == ("real", "fake", "critic", "labels")
    assert mmd.phases == ("autoencoder",) and mmd.needs == ("z", "prior_z")
    assert clip.phases == ("critic",) and clip.needs == ()
    assert clip.penalty({}) is None


# --- gradient penalty ---------------------------------------------------------------------------


def linear_critic(w: Tensor):
    """f(x) = w . flatten(x): its gradient is w everywhere."""
    return lambda x, y: x.flatten(1) @ w


def test_gradient_penalty_of_a_linear_critic(registry) -> None:
    w = torch.tensor([2.0, 0.0, -1.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0])  # ||w|| = 3
    ctx = {
        "real": torch.randn(5, 1, 3, 3),
        "fake": torch.randn(5, 1, 3, 3),
        "critic": linear_critic(w),
        "labels": None,
    }
    assert build(registry, "gradient_penalty").penalty(ctx).item() == pytest.approx(10.0 * (3.0 - 1.0) ** 2)
    gp = build(registry, "gradient_penalty", {"weight": 2.0, "center": 0.0})
    assert gp.penalty(ctx).item() == pytest.approx(2.0 * 9.0)


def test_gradient_penalty_draws_one_eps_per_example(registry) -> None:
    """x_hat_i = eps_i real_i + (1 - eps_i) fake_i with eps_i constant within a row, varying across rows."""
    seen = {}

    def critic(x: Tensor, y: Tensor | None) -> Tensor:
        seen["x_hat"] = x
        return 0.5 * x.flatten(1).square().sum(1)  # gradient = x, so ||grad|| = ||x_hat||

    real = torch.randn(6, 2, 4, 4) + 3.0
    fake = torch.randn(6, 2, 4, 4) - 3.0
    torch.manual_seed(7)
    penalty = build(registry, "gradient_penalty").penalty(
        {"real": real, "fake": fake, "critic": critic, "labels": None}
    )
    eps = ((seen["x_hat"] - fake) / (real - fake)).flatten(1)  # (6, 32): recovered per element
    torch.testing.assert_close(eps, eps[:, :1].expand_as(eps))  # one eps per example ...
    assert eps[:, 0].unique().numel() == 6  # ... different across examples
    assert ((eps >= 0) & (eps <= 1)).all()

    # The same computation by hand, with the same random state.
    torch.manual_seed(7)
    eps_ref = torch.rand(6, 1, 1, 1)
    x_hat = eps_ref * real + (1 - eps_ref) * fake
    expected = 10.0 * ((x_hat.flatten(1).norm(dim=1) - 1.0) ** 2).mean()
    torch.testing.assert_close(penalty, expected)
    # One eps shared by the batch would give something else.
    shared = eps_ref[0] * real + (1 - eps_ref[0]) * fake
    assert not torch.isclose(penalty, 10.0 * ((shared.flatten(1).norm(dim=1) - 1.0) ** 2).mean())


def test_gradient_penalty_trains_the_critic_only(registry) -> None:
    """The penalty back-propagates to the critic's weights (double backward) and not into G."""
    w = nn.Parameter(torch.tensor([3.0, 4.0]))  # ||w|| = 5
    generator = nn.Linear(2, 2)
    fake = generator(torch.randn(4, 2))
    labels_seen = []

    def critic(x: Tensor, y: Tensor | None) -> Tensor:
        labels_seen.append(y)
        return x @ w

    labels = torch.tensor([0, 1, 0, 1])
    gp = build(registry, "gradient_penalty")
    gp.penalty({"real": torch.randn(4, 2), "fake": fake, "critic": critic, "labels": labels}).backward()
    # d/dw 10 (||w|| - 1)^2 = 20 (||w|| - 1) w / ||w||
    torch.testing.assert_close(w.grad, 20.0 * 4.0 * torch.tensor([3.0, 4.0]) / 5.0)
    assert generator.weight.grad is None
    assert labels_seen[0] is labels


def test_gradient_penalty_reaches_network_weights(registry) -> None:
    critic = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1))
    gp = build(registry, "gradient_penalty")
    ctx = {
        "real": torch.randn(4, 3),
        "fake": torch.randn(4, 3),
        "critic": lambda x, y: critic(x)[:, 0],
        "labels": None,
    }
    gp.penalty(ctx).backward()
    # Every parameter but the output bias (which does not change the input gradient) gets one.
    for p in (critic[0].weight, critic[0].bias, critic[2].weight):
        assert p.grad is not None and p.grad.abs().sum() > 0


# --- MMD ----------------------------------------------------------------------------------------


def sqdist(a: Tensor, b: Tensor) -> float:
    return float(((a - b) ** 2).sum())


def mmd_loop(qz: Tensor, pz: Tensor, kernel) -> float:
    """tolstikhin/wae wae.py mmd_penalty, one pair at a time (equal batch sizes n):
    sum_{i != j} [k(q_i, q_j) + k(p_i, p_j)] / (n^2 - n) - 2 sum_{i, j} k(q_i, p_j) / n^2."""
    n = len(qz)
    within = sum(kernel(qz[i], qz[j]) + kernel(pz[i], pz[j]) for i in range(n) for j in range(n) if i != j)
    cross = sum(kernel(qz[i], pz[j]) for i in range(n) for j in range(n))
    return within / (n * n - n) - 2.0 * cross / (n * n)


def test_mmd_imq_matches_the_official_estimator() -> None:
    g = torch.Generator().manual_seed(0)
    qz = torch.randn(6, 3, generator=g, dtype=torch.float64) + 0.3
    pz = torch.randn(6, 3, generator=g, dtype=torch.float64)
    sigma2 = 1.5
    expected = 0.0
    for s in WAE_SCALES:
        c = s * 2 * 3 * sigma2  # C = scale * 2 * zdim * pz_scale^2
        expected += mmd_loop(qz, pz, lambda a, b, c=c: c / (c + sqdist(a, b)))
    assert mmd_imq(qz, pz, WAE_SCALES, sigma2=sigma2).item() == pytest.approx(expected, rel=1e-10)


def test_mmd_rbf_matches_the_official_estimator() -> None:
    g = torch.Generator().manual_seed(1)
    qz = torch.randn(5, 2, generator=g, dtype=torch.float64)
    pz = torch.randn(5, 2, generator=g, dtype=torch.float64) - 0.5
    n, half = 5, (5 * 5 - 5) // 2
    # Median heuristic: the half-th largest of all n^2 entries of each distance matrix.
    cross = sorted((sqdist(a, b) for a, b in itertools.product(qz, pz)), reverse=True)
    within = sorted((sqdist(a, b) for a, b in itertools.product(qz, qz)), reverse=True)
    sigma2_k = cross[half - 1] + within[half - 1]
    expected = mmd_loop(qz, pz, lambda a, b: math.exp(-sqdist(a, b) / 2.0 / sigma2_k))
    assert len(cross) == n * n
    assert mmd_rbf(qz, pz).item() == pytest.approx(expected, rel=1e-10)
    fixed = mmd_loop(qz, pz, lambda a, b: math.exp(-sqdist(a, b) / 2.0 / 0.7))
    assert mmd_rbf(qz, pz, sigma2_k=0.7).item() == pytest.approx(fixed, rel=1e-10)


@pytest.mark.parametrize("mmd", [mmd_imq, mmd_rbf])
def test_mmd_tells_same_from_shifted(mmd) -> None:
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(300, 4, generator=g), torch.randn(300, 4, generator=g)
    same, shifted = mmd(x, y).item(), mmd(x, y + 0.5).item()
    # Null standard deviations at n = 300 are about 0.005 (imq) and 0.001 (rbf).
    assert abs(same) < 0.03 if mmd is mmd_imq else abs(same) < 0.006
    assert shifted > 5 * abs(same) and shifted > 0.03
    assert mmd(x, x + 0.0).item() < 0  # identical samples: the unbiased estimate is negative, not 0


def test_mmd_is_unbiased() -> None:
    """Mean of the estimate over independent small batches from one distribution is ~0.

    A biased (V-statistic) estimator that kept the diagonal k(x_i, x_i) = 1 would average about
    +1.5 here (7 scales, n = 4).
    """
    g = torch.Generator().manual_seed(3)
    values = torch.tensor(
        [mmd_imq(torch.randn(4, 2, generator=g), torch.randn(4, 2, generator=g)) for _ in range(300)]
    )
    assert abs(values.mean().item()) < 5 * values.std().item() / math.sqrt(len(values))


def test_mmd_penalty(registry) -> None:
    g = torch.Generator().manual_seed(4)
    z = torch.randn(16, 3, generator=g, requires_grad=True)
    prior_z = torch.randn(16, 3, generator=g)
    ctx = {"z": z, "prior_z": prior_z}
    penalty = build(registry, "mmd", {"weight": 3.0, "sigma2": 2.0, "scales": [0.5, 1.0]}).penalty(ctx)
    torch.testing.assert_close(penalty, 3.0 * mmd_imq(z, prior_z, [0.5, 1.0], sigma2=2.0))
    penalty.backward()
    assert z.grad is not None and z.grad.abs().sum() > 0  # trains the encoder
    default = build(registry, "mmd").penalty(ctx)
    torch.testing.assert_close(default, 10.0 * mmd_imq(z, prior_z, WAE_SCALES, sigma2=1.0))
    rbf = build(registry, "mmd", {"kernel": "rbf"}).penalty(ctx)
    torch.testing.assert_close(rbf, 10.0 * mmd_rbf(z, prior_z))


def test_mmd_errors(registry) -> None:
    with pytest.raises(ValueError, match="at least 2 samples"):
        mmd_imq(torch.zeros(1, 3), torch.zeros(5, 3))
    with pytest.raises(ValueError, match=r"samples \(n, d\) and \(m, d\)"):
        mmd_imq(torch.zeros(4, 3), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="kernel must be one of imq, rbf"):
        regularisers.MMDOptions(kernel="gauss")
    with pytest.raises(ValueError, match="scales must not be empty"):
        regularisers.MMDOptions(scales=[])
    with pytest.raises(ValueError, match=r"^scales\[1\] must be positive, got 0.0$"):
        regularisers.MMDOptions(scales=[1.0, 0.0])
    with pytest.raises(GenfwError):
        registry.spec("regulariser", "mmd", {"sigma2": 0.0}, where="regularisers.mmd")


# --- weight clipping ----------------------------------------------------------------------------


def test_weight_clipping_clamps_every_parameter(registry) -> None:
    a, b = nn.Linear(4, 3), nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    with torch.no_grad():
        for p in itertools.chain(a.parameters(), b.parameters()):
            p.copy_(torch.linspace(-1, 1, p.numel()).view_as(p))
    before = [p.detach().clone() for p in itertools.chain(a.parameters(), b.parameters())]
    clip = build(registry, "weight_clipping", {"clip": 0.05})
    clip.after_step([a, b])
    for p, old in zip(itertools.chain(a.parameters(), b.parameters()), before, strict=True):
        torch.testing.assert_close(p.detach(), old.clamp(-0.05, 0.05))
        assert p.requires_grad  # clamped in place, still a trainable parameter
    assert build(registry, "weight_clipping").clip == 0.01


def test_weight_clipping_refuses_bad_clip() -> None:
    with pytest.raises(ValueError, match="clip must be positive"):
        regularisers.WeightClippingOptions(clip=0.0)


# --- DRAGAN -------------------------------------------------------------------------------------


def test_dragan_perturbs_real_data_only_as_the_authors_code(registry) -> None:
    """x_hat = x + alpha (x_p - x), x_p = x + 0.5 std(x) u, u ~ U[0, 1] per element, alpha per example."""
    seen = {}

    def critic(x: Tensor, y: Tensor | None) -> Tensor:
        seen["x_hat"] = x
        return 0.5 * x.flatten(1).square().sum(1)  # gradient = x

    dragan = build(registry, "dragan")
    assert dragan.phases == ("critic",) and "fake" not in dragan.needs
    real = torch.randn(5, 1, 3, 3) * 2.0 + 1.0
    torch.manual_seed(3)
    got = dragan.penalty({"real": real, "critic": critic, "labels": None})  # no fakes needed
    torch.manual_seed(3)
    u = torch.rand_like(real)
    alpha = torch.rand(5, 1, 1, 1)
    x_hat = real + alpha * (0.5 * real.std() * u)
    torch.testing.assert_close(seen["x_hat"], x_hat)
    shift = (seen["x_hat"] - real) / (0.5 * real.std())
    assert (shift >= 0).all() and (shift <= 1).all()  # only ever up to 0.5 std away from the data
    norms = x_hat.flatten(1).norm(dim=1)
    assert got.item() == pytest.approx(10.0 * ((norms - 1) ** 2).mean().item(), rel=1e-5)


def test_dragan_shares_the_gradient_norm_code(registry) -> None:
    """Same critic, same points: the penalty equals the WGAN-GP penalty's norm computation."""
    w = torch.tensor([2.0, 0.0, -1.0, 2.0])  # linear critic: ||grad|| = 3 everywhere
    ctx = {"real": torch.randn(7, 4), "critic": linear_critic(w), "labels": None}
    assert build(registry, "dragan", {"weight": 2.0}).penalty(ctx).item() == pytest.approx(2.0 * 4.0)
    norms = regularisers.gradient_norms(linear_critic(w), torch.randn(3, 4), None)
    torch.testing.assert_close(norms, torch.full((3,), 3.0))


# --- gradient penalties and batch norm ------------------------------------------------------------


def _gp_run(variant: str, critic: dict) -> dict:
    return {
        "variant": variant,
        "dataset": "toy2d",
        "generator": {"name": "mlp", "hidden": [8]},
        "critic": critic,
        "metrics": {},
        "train": {"batch_size": 16},
    }


@pytest.mark.parametrize("variant, penalty", [("wgan-gp", "gradient_penalty"), ("dragan", "dragan")])
def test_gradient_penalties_refuse_a_critic_with_batch_norm(variant, penalty) -> None:
    """Both penalties are one gradient norm per example (WGAN-GP: one eps per example; DRAGAN's
    paper and code: one alpha and one slope per perturbed example); batch norm makes a score
    depend on the whole batch, so Gulrajani et al. (section 4) drop it. Refused in one line."""
    from genfw.config import resolve
    from genfw.plugins import get_registry
    from genfw.train import build as build_run

    reg = get_registry()
    bn = {"name": "mlp", "hidden": [8, 8], "batch_norm": True}
    with pytest.raises(GenfwError) as info:
        build_run(resolve(_gp_run(variant, bn), reg))
    [line] = str(info.value).splitlines()
    assert line.startswith(f"{penalty} penalises each example's gradient norm")
    assert "(BatchNorm1d)" in line and line.endswith("--critic.batch_norm false")
    b = build_run(resolve(_gp_run(variant, {**bn, "batch_norm": False}), reg))  # the fix works
    [(name, _)] = b.regularisers["critic"]
    assert name == penalty


def test_gradient_penalty_refuses_the_default_dcgan_critic_on_larger_images() -> None:
    """The dcgan critic has batch norm from its second conv on (16x16 and up): refused; with
    ``batch_norm: false`` it has none and the penalty is set up."""
    from genfw import Model, Phase
    from genfw.plugins import get_registry

    reg = get_registry()

    def model(batch_norm: bool) -> Model:
        critic = reg.spec("critic", "dcgan", {"channels": 4, "batch_norm": batch_norm}, where="critic").build(
            in_shape=(1, 16, 16), out_dim=1, num_classes=0
        )
        return Model(
            modules={"critic": critic, "generator": nn.Linear(1, 1)},
            phases=[Phase("critic", ("critic",), None), Phase("generator", ("generator",), None)],
            sample=None,
        )

    for name in ("gradient_penalty", "dragan"):
        with pytest.raises(GenfwError, match=r"\(BatchNorm2d\).*--critic\.batch_norm false$"):
            build(reg, name).setup(model(True), None)
        build(reg, name).setup(model(False), None)
