"""EBGAN and BEGAN (genfw_plugins.energy): margin loss, pulling-away term, k_t control, against
hand-computed values; the autoencoder critic built from network plugins; k_t in checkpoints."""

from __future__ import annotations

import json

import pytest
import torch

from genfw import Batch, Modules
from genfw.config import resolve
from genfw.train import Trainer, build, read_run
from genfw_plugins.energy import (
    AutoencoderCritic,
    began_k_update,
    ebgan_critic_loss,
    pulling_away,
)

TINY = {"name": "mlp", "hidden": [16]}


def raw(variant: str, steps: int = 3, **extra) -> dict:
    out = {
        "variant": variant,
        "dataset": "digits",
        "generator": TINY,
        "critic_encoder": TINY,
        "critic_decoder": TINY,
        "metrics": {},
        "train": {"steps": steps, "batch_size": 16, "log_every": 1, "progress": False, "grid": 4},
    }
    out.update(extra)
    return out


def test_ebgan_margin_loss_by_hand() -> None:
    real = torch.tensor([0.1, 0.3])
    fake = torch.tensor([0.2, 1.5, 0.9])
    # E D(x) = 0.2; max(0, 1 - f): 0.8, 0 (beyond the margin: no push), 0.1 -> mean 0.3
    assert ebgan_critic_loss(real, fake, 1.0).item() == pytest.approx(0.2 + 0.3)
    assert ebgan_critic_loss(real, fake, 2.0).item() == pytest.approx(0.2 + (1.8 + 0.5 + 1.1) / 3)


def test_pulling_away_term_by_hand() -> None:
    s = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])
    # cosines: (1,2) 0, (1,3) 1/sqrt2, (2,3) 1/sqrt2 -> squares 0, 0.5, 0.5; each pair twice over N(N-1) = 6
    assert pulling_away(s).item() == pytest.approx(2 * (0 + 0.5 + 0.5) / 6)
    assert pulling_away(torch.tensor([[1.0, 1.0], [2.0, 2.0]])).item() == pytest.approx(1.0)  # collapsed
    assert pulling_away(torch.eye(4)).item() == pytest.approx(0.0)  # orthogonal codes


def test_began_k_update_and_clipping() -> None:
    k = torch.tensor(0.5)
    # k + 0.001 (0.5 * 0.4 - 0.1) = 0.5001
    assert began_k_update(k, torch.tensor(0.4), torch.tensor(0.1), 0.5, 1e-3).item() == pytest.approx(0.5001)
    # would leave [0, 1]: 0.9995 + 0.001 * (0.5 * 2 - 0) = 1.0005 -> 1; 0.0002 - 0.001 * 1 -> 0
    assert began_k_update(torch.tensor(0.9995), torch.tensor(2.0), torch.tensor(0.0), 0.5, 1e-3).item() == 1.0
    assert began_k_update(torch.tensor(0.0002), torch.tensor(0.0), torch.tensor(1.0), 0.5, 1e-3).item() == 0.0


def test_autoencoder_critic_is_built_from_network_plugins(registry) -> None:
    b = build(resolve(raw("ebgan", critic_encoder={"name": "dcgan", "channels": 4}), registry))
    critic = b.model.modules["critic"]
    assert isinstance(critic, AutoencoderCritic)
    assert type(critic.encoder).__name__ == "DCGANCritic" and type(critic.decoder).__name__ == "MLPGenerator"
    x = b.dataset.tensors[0][:4]
    code, x_hat = critic.encode_decode(x)
    assert code.shape == (4, 32) and x_hat.shape == x.shape
    # EBGAN's energy: squared error per dimension.
    torch.testing.assert_close(critic(x).squeeze(1), (x_hat - x).square().flatten(1).mean(1))


def test_ebgan_phases_by_hand(registry) -> None:
    b = build(resolve(raw("ebgan"), registry))
    m = Modules(b.model.modules)
    critic_phase, gen_phase = b.model.phases
    x = b.dataset.tensors[0][:8]
    batch = Batch(x, torch.zeros(8, dtype=torch.long))
    torch.manual_seed(0)
    out = critic_phase.step(batch, m)
    energy = lambda v: (m.critic.encode_decode(v)[1] - v).square().flatten(1).mean(1)  # noqa: E731
    expected = energy(x).mean() + (1.0 - energy(out.context["fake"])).clamp_min(0).mean()
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    torch.manual_seed(1)
    out = gen_phase.step(batch, m)
    torch.manual_seed(1)
    fake = m.generator(torch.randn(8, 64))
    codes = m.critic.encoder(fake)
    expected = energy(fake).mean() + 0.1 * pulling_away(codes)
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert out.logs["pulling_away"].item() == pytest.approx(pulling_away(codes).item(), rel=1e-5)


def test_began_k_update_uses_the_generator_steps_energy(registry) -> None:
    """Algorithm 1 of the paper: L_D = L(x) - k_t L(G(z_D)); L_G = L(G(z_G));
    k_{t+1} = clip(k_t + lambda_k (gamma L(x) - L(G(z_G)))), with z_G the generator step's noise
    and L(x) from the critic step of the same training step; M = L(x) + |gamma L(x) - L(G(z_G))|."""
    r = raw("began")
    r["variant"] = {"name": "began", "k_init": 0.3, "lambda_k": 0.1}
    b = build(resolve(r, registry))
    m = Modules(b.model.modules)
    x = b.dataset.tensors[0][:8]
    batch = Batch(x, torch.zeros(8, dtype=torch.long))

    def energy(v):  # BEGAN's L1 energy, mean over the batch
        return (m.critic.encode_decode(v)[1] - v).abs().flatten(1).mean(1).mean()

    torch.manual_seed(0)
    out = b.model.phases[0].step(batch, m)
    e_real, e_fake_d = energy(x), energy(out.context["fake"])
    assert out.loss.item() == pytest.approx((e_real - 0.3 * e_fake_d).item(), rel=1e-5)
    assert out.logs["k"].item() == pytest.approx(0.3)
    assert m.critic.k.item() == pytest.approx(0.3)  # not updated by the critic step
    out.loss.backward()

    torch.manual_seed(1)
    gen = b.model.phases[1].step(batch, m)
    torch.manual_seed(1)
    fake_g = m.generator(torch.randn(8, 64))  # G(z_G): the generator step's own noise
    torch.testing.assert_close(gen.context["fake"], fake_g)
    e_gen = energy(fake_g)
    assert gen.loss.item() == pytest.approx(e_gen.item(), rel=1e-5)
    k_next = min(max(0.3 + 0.1 * (0.5 * e_real.item() - e_gen.item()), 0.0), 1.0)
    assert m.critic.k.item() == pytest.approx(k_next, rel=1e-5)
    k_with_critic_fakes = 0.3 + 0.1 * (0.5 * e_real.item() - e_fake_d.item())
    assert abs(k_next - k_with_critic_fakes) > 1e-4  # the test tells the two updates apart
    m_measure = e_real + (0.5 * e_real - e_gen).abs()
    assert gen.logs["convergence"].item() == pytest.approx(m_measure.item(), rel=1e-5)
    gen.loss.backward()  # the in-place update of k did not break the graph


def test_began_k_resumes_exactly(tmp_path, registry) -> None:
    def run(path, steps, **train):
        r = raw("began", steps=steps)
        r["variant"] = {"name": "began", "lambda_k": 0.5}
        r["train"].update(train)
        t = Trainer(resolve(r, registry), path)
        t.fit()
        return t

    straight = run(tmp_path / "straight", 6, checkpoint_every=3)
    run(tmp_path / "split", 3)
    resumed = Trainer(
        read_run(tmp_path / "split", registry, [("train.steps", 6)]), tmp_path / "split", resume=True
    )
    resumed.fit()
    assert 0.0 < straight.plain.critic.k.item() <= 1.0
    for name in ("critic", "generator"):
        a, b = straight.plain[name].state_dict(), resumed.plain[name].state_dict()
        for key in a:
            assert torch.equal(a[key], b[key]), f"{name}.{key} differs after resume"


@pytest.mark.parametrize("variant", ["ebgan", "began"])
def test_instance_noise_reaches_the_critic_in_the_generator_phase(registry, variant) -> None:
    """With instance noise, the autoencoder critic's input in the generator phase is G(z) + noise
    (EBGAN's energies and codes, BEGAN's energy), not the clean fakes."""
    sigma = 50.0
    b = build(
        resolve(raw(variant, regularisers={"instance_noise": {"sigma": sigma, "anneal_steps": 0}}), registry)
    )
    m = Modules(b.model.modules)
    seen = []
    hook = m.critic.encoder.register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach()))
    x = b.dataset.tensors[0][:16]
    out = b.model.phases[1].step(Batch(x, torch.zeros(16, dtype=torch.long)), m)
    hook.remove()
    [inp] = seen
    noise = inp - out.context["fake"].detach()
    assert noise.std().item() == pytest.approx(sigma, rel=0.1)
    assert noise.mean().abs().item() < 0.1 * sigma


def test_began_k_stays_in_unit_interval_and_is_checkpointed(tmp_path, registry) -> None:
    r = raw("began", steps=6)
    r["variant"] = {"name": "began", "lambda_k": 5.0}  # large steps: k would leave [0, 1] at once
    r["train"]["checkpoint_every"] = 3
    t = Trainer(resolve(r, registry), tmp_path / "run")
    ks = []
    step = t.phases[0].step

    def spy(batch, m):
        out = step(batch, m)
        ks.append(t.plain.critic.k.item())
        return out

    t.phases[0].step = spy
    t.fit()
    assert all(0.0 <= k <= 1.0 for k in ks) and any(k in (0.0, 1.0) for k in ks)
    k_end = t.plain.critic.k.item()
    resumed = Trainer(
        read_run(tmp_path / "run", registry, [("train.steps", 7)]), tmp_path / "run", resume=True
    )
    assert resumed.plain.critic.k.item() == k_end  # k_t travels with the checkpoint


# --- BEGAN's learning-rate decay --------------------------------------------------------------------


def test_began_lr_decay_halves_when_the_convergence_measure_stalls() -> None:
    """``stall``: at the end of each window, halve unless the window's mean M fell below 0.99 times
    the previous window's; ``every``: halve at the end of each window."""
    from genfw_plugins.energy import LRDecay

    decay = LRDecay("stall", window=2)
    seen = []
    for m in [1.0, 1.0, 0.5, 0.5, 0.5, 0.496, 0.2, 0.2, 0.3, 0.3]:
        decay.observe(torch.tensor(m))
        seen.append(decay.value)
    # windows: 1.0 (the first: nothing to compare), 0.5 (fell), 0.498 (> 0.99 * 0.5: stalled),
    # 0.2 (fell), 0.3 (rose: stalled)
    assert seen == [1, 1, 1, 1, 1, 0.5, 0.5, 0.5, 0.5, 0.25]
    assert decay.scale.item() == 0.25 and decay.steps.item() == 10
    assert decay.previous.item() == pytest.approx(0.3) and decay.total.item() == 0.0
    every = LRDecay("every", window=3)
    for _ in range(7):
        every.observe(torch.tensor(1.0))
    assert every.value == 0.25 and every.scale.item() == 0.25
    # The host mirrors are re-read when weights are loaded.
    fresh = LRDecay("stall", window=2)
    fresh.load_state_dict(decay.state_dict())
    assert (fresh.value, fresh.n, fresh.last) == (0.25, 10, pytest.approx(0.3))


def test_began_lr_decay_sets_both_players_learning_rates(tmp_path, registry) -> None:
    r = raw("began", steps=5)
    r["variant"] = {"name": "began", "lr_decay": "every", "lr_decay_steps": 2}
    t = Trainer(resolve(r, registry), tmp_path / "run")
    lrs = {"critic": [], "generator": []}
    for name, opt in t._hot_optimizers.items():
        real_step = opt.step

        def step(*args, _real=real_step, _opt=opt, _name=name, **kwargs):
            lrs[_name].append([g["lr"] for g in _opt.param_groups])
            return _real(*args, **kwargs)

        opt.step = step
    t.fit()
    expected = [[1e-4 * s] for s in (1, 1, 0.5, 0.5, 0.25)]
    assert lrs == {"critic": expected, "generator": expected}
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["generator/lr_scale"] for r in rows if "generator/lr_scale" in r] == [1, 1, 0.5, 0.5, 0.25]
    # Off by default: no decay module, no factor on the learning rates.
    b = build(resolve(raw("began"), registry))
    assert "lr_decay" not in b.model.modules and all(p.lr_scale is None for p in b.model.phases)


def test_began_lr_decay_on_a_stall_resumes_exactly(tmp_path, registry) -> None:
    def run(path, steps, **train):
        r = raw("began", steps=steps)
        r["variant"] = {"name": "began", "lr_decay": "stall", "lr_decay_steps": 2, "lr_generator": 1e-3}
        r["train"].update(train)
        t = Trainer(resolve(r, registry), path)
        t.fit()
        return t

    straight = run(tmp_path / "straight", 8, checkpoint_every=3)
    run(tmp_path / "split", 3)  # stops in the middle of the second window
    resumed = Trainer(
        read_run(tmp_path / "split", registry, [("train.steps", 8)]), tmp_path / "split", resume=True
    )
    assert resumed.plain.lr_decay.n == 3
    resumed.fit()
    assert straight.plain.lr_decay.value < 1.0  # M stalled at least once in 8 steps
    for name in ("critic", "generator", "lr_decay"):
        a, b = straight.plain[name].state_dict(), resumed.plain[name].state_dict()
        for key in a:
            assert torch.equal(a[key], b[key]), f"{name}.{key} differs after resume"
    for name in ("critic", "generator"):
        assert [g["lr"] for g in straight.optimizers[name].param_groups] == [
            g["lr"] for g in resumed.optimizers[name].param_groups
        ]
