"""GAN remedies and tricks (genfw_plugins/tricks.py): each formula against a hand computation or a
reference written here, their effect on the model, combined flags, resume, and refusals."""

from __future__ import annotations

import math

import pytest
import safetensors.torch
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from genfw import Batch, GenfwError, Modules
from genfw.assemble import variant_info
from genfw.config import resolve
from genfw.contracts import LoopState
from genfw.train import Trainer, build, load_model, phase_objective, read_run
from genfw_plugins._layers import MinibatchDiscrimination, minibatch_features
from genfw_plugins.tricks import (
    ReplayBuffer,
    StdDevFeature,
    instance_noise_sigma,
    replay,
)
from tests.conftest import QUICK

SMALL = {"name": "mlp", "hidden": [8, 8]}


def raw(variant="gan", dataset="toy2d", regs=None, steps=6, **slots):
    out = {
        "variant": variant,
        "dataset": dataset,
        "generator": dict(SMALL),
        "critic": dict(SMALL),
        "regularisers": regs or {},
        "metrics": {},
        "train": {"steps": steps, "batch_size": 16, "log_every": 1, "progress": False, "grid": 4},
    }
    out.update(slots)
    return out


def built(registry, regs, **kw):
    return build(resolve(raw(regs=regs, **kw), registry))


def a_batch(b, n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x, y = b.dataset.tensors
    idx = torch.randint(0, len(x), (n,), generator=g)
    return Batch(x[idx].float(), y[idx])


# --- minibatch discrimination and standard deviation ---------------------------------------------


def test_minibatch_discrimination_on_three_examples_by_hand():
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    # One kernel of dimension 1: M = x @ [1, 2] = [1, 2, 3].
    t = torch.tensor([[[1.0]], [[2.0]]])  # (A=2, B=1, C=1)
    e1, e2 = math.exp(-1), math.exp(-2)
    expected = torch.tensor([[1 + e1 + e2], [e1 + 1 + e1], [e2 + e1 + 1]])
    torch.testing.assert_close(minibatch_features(x, t), expected)
    # Two kernels of dimension 2, against a loop over pairs written from the paper's formula.
    t = torch.tensor([[[0.5, -1.0], [2.0, 0.0]], [[1.0, 1.0], [-0.5, 3.0]]])  # (A=2, B=2, C=2)
    m = torch.einsum("na,abc->nbc", x, t)
    ref = torch.zeros(3, 2)
    for i in range(3):
        for b in range(2):
            ref[i, b] = sum(math.exp(-(m[i, b] - m[j, b]).abs().sum().item()) for j in range(3))
    torch.testing.assert_close(minibatch_features(x, t), ref)
    layer = MinibatchDiscrimination(2, num_kernels=2, kernel_dim=2)
    with torch.no_grad():
        layer.T.copy_(t)
    torch.testing.assert_close(layer(x), torch.cat([x, ref], dim=1))


def test_minibatch_stddev_feature_by_hand():
    x = torch.tensor([[0.0, 2.0], [2.0, 2.0], [1.0, 0.0], [1.0, 4.0]])
    # Group size 2: example i is in group i mod 2, i.e. {0, 2} and {1, 3}.
    # Group {0, 2}: per-feature std (population) [0.5, 1.0] -> mean 0.75; group {1, 3}: [0.5, 1.0] -> 0.75.
    x[3, 1] = 6.0  # group {1, 3}: stds [0.5, 2.0] -> 1.25
    out = StdDevFeature(group_size=2)(x)
    expected = torch.tensor([0.75, 1.25, 0.75, 1.25])
    torch.testing.assert_close(out[:, :2], x)
    torch.testing.assert_close(out[:, 2], expected, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("trick, extra", [("minibatch_discrimination", 7), ("minibatch_stddev", 1)])
def test_minibatch_layers_sit_before_the_critic_head(registry, tmp_path, trick, extra):
    opts = {"kernels": 7, "kernel_dim": 3} if trick == "minibatch_discrimination" else {}
    b = built(registry, {trick: opts})
    critic = b.model.modules["critic"]
    layer, head = critic.head
    assert head.in_features == 8 + extra and head.out_features == 1
    x = a_batch(b).x
    torch.testing.assert_close(critic(x), head(layer(critic.features(x))))
    # Its parameters are trained with the critic's: they are in the critic phase's optimiser.
    t = Trainer(resolve(raw(regs={trick: opts}, steps=1), registry), tmp_path / "run")
    params = {id(p) for group in t.optimizers["critic"].param_groups for p in group["params"]}
    assert all(id(p) in params for p in t.plain["critic"].head.parameters())


def test_both_minibatch_layers_together_on_dcgan(registry):
    b = built(
        registry,
        {"minibatch_discrimination": {"kernels": 4}, "minibatch_stddev": {}},
        dataset="digits",
        generator={"name": "dcgan", "channels": 4},
        critic={"name": "dcgan", "channels": 4},
    )
    critic = b.model.modules["critic"]
    _, _, head = critic.head  # minibatch discrimination, stddev, widened linear
    width = critic.features(a_batch(b).x).shape[1]
    assert head.in_features == width + 4 + 1
    assert critic(a_batch(b).x).shape == (16, 1)


# --- feature matching ---------------------------------------------------------------------------


def test_feature_matching_value(registry):
    b = built(registry, {"feature_matching": {"weight": 2.0}})
    m = Modules(b.model.modules)
    gen_phase = b.model.phases[1]
    batch = a_batch(b)
    out = gen_phase.step(batch, m)
    [fm] = [r for n, r in b.regularisers["generator"] if n == "feature_matching"]
    critic = m.critic
    # Features of the mlp critic: its hidden layers, by hand.
    h = batch.x
    for layer in critic.net:
        h = layer(h)
    torch.testing.assert_close(critic.features(batch.x), h)
    f_real = critic.features(batch.x).mean(0)
    f_fake = critic.features(out.context["fake"]).mean(0)
    expected = 2.0 * ((f_real - f_fake) ** 2).sum()
    assert fm.penalty(out.context).item() == pytest.approx(expected.item(), rel=1e-5)
    # Only the generator gets gradients from it (the real features are constants).
    fm.penalty(out.context).backward()
    assert b.model.modules["generator"].net[0].weight.grad is not None


def test_feature_matching_can_replace_the_generator_objective(registry):
    """With ``replace`` the generator's whole objective (phase loss + penalties) is
    ``weight * ||E f(x) - E f(G(z))||^2``, in value and in gradient: the adversarial loss adds
    nothing to either (it is only logged, checked here by hand)."""
    b = built(registry, {"feature_matching": {"replace": True, "weight": 2.0}})
    m, batch = Modules(b.model.modules), a_batch(b)
    out = b.model.phases[1].step(batch, m)
    total, terms = phase_objective(out, b.regularisers["generator"], replaces=True)  # the loop's
    critic, fake = m.critic, out.context["fake"]
    expected = (
        2.0 * (critic.features(batch.x).mean(0).detach() - critic.features(fake).mean(0)).square().sum()
    )
    assert total.item() == pytest.approx(expected.item(), rel=1e-5) and expected.item() > 0
    params = list(b.model.modules["generator"].parameters())
    for got, want in zip(
        torch.autograd.grad(total, params, retain_graph=True),
        torch.autograd.grad(expected, params),
        strict=True,
    ):
        torch.testing.assert_close(got, want)
    torch.testing.assert_close(terms["replaced_loss"], F.softplus(-critic(fake).squeeze(1)).mean())
    assert all(getattr(r, "replaces_loss", False) for _, r in b.regularisers["generator"])


# --- historical averaging -----------------------------------------------------------------------


def test_historical_averaging_after_known_updates(registry):
    b = built(registry, {"historical_averaging": {"weight": 0.5}}, critic={"name": "mlp", "hidden": []})
    critic = b.model.modules["critic"]  # one linear layer: weight (1, 2), bias (1,)
    [(_, ha)] = b.regularisers["critic"]
    theta0 = [p.detach().clone() for p in critic.parameters()]
    assert ha.penalty({"phase": "critic"}).item() == 0.0  # the mean starts at theta_0
    with torch.no_grad():
        for p, p0 in zip(critic.parameters(), theta0, strict=True):
            p.copy_(p0 + 1.0)
    ha.after_step([critic], "critic")  # mean of theta_0, theta_0 + 1
    with torch.no_grad():
        for p, p0 in zip(critic.parameters(), theta0, strict=True):
            p.copy_(p0 + 4.0)
    # Before this update is recorded: 3 parameters, each at theta_0 + 4 vs mean theta_0 + 0.5.
    assert ha.penalty({"phase": "critic"}).item() == pytest.approx(0.5 * 3 * 3.5**2, rel=1e-5)
    ha.after_step([critic], "critic")  # mean of theta_0, +1, +4 = theta_0 + 5/3
    assert ha.penalty({"phase": "critic"}).item() == pytest.approx(0.5 * 3 * (4 - 5 / 3) ** 2, rel=1e-5)
    state = b.model.modules["historical_averaging"].state_dict()
    assert state["critic_count"].item() == 3
    torch.testing.assert_close(state["critic_0"], theta0[0] + 5 / 3)
    # The generator's mean did not move: after_step of the critic phase touches the critic's only.
    gen0 = next(b.model.modules["generator"].parameters())
    torch.testing.assert_close(state["generator_0"], gen0.detach())
    assert ha.penalty({"phase": "generator"}).item() == 0.0
    # Its gradient is 2 * weight * (theta - mean).
    ha.penalty({"phase": "critic"}).backward()
    torch.testing.assert_close(critic.head.bias.grad, 2 * 0.5 * (4 - 5 / 3) * torch.ones(1))


# --- label smoothing ----------------------------------------------------------------------------


def test_label_smoothing_equals_a_real_target_of_09(registry):
    b = built(registry, {"label_smoothing": {}}, loss="minimax")
    out = b.model.phases[0].step(a_batch(b), Modules(b.model.modules))
    [(_, ls)] = b.regularisers["critic"]
    r, f = out.context["real_scores"], out.context["fake_scores"]
    smoothed = out.loss + ls.penalty(out.context)
    # -E[0.9 log D(x) + 0.1 log(1 - D(x))] - E log(1 - D(G(z))), D = sigmoid.
    d_real, d_fake = torch.sigmoid(r), torch.sigmoid(f)
    expected = -(0.9 * d_real.log() + 0.1 * (1 - d_real).log()).mean() - (1 - d_fake).log().mean()
    assert smoothed.item() == pytest.approx(expected.item(), rel=1e-5)
    assert smoothed.item() == pytest.approx(
        (F.binary_cross_entropy_with_logits(r, torch.full_like(r, 0.9)) + F.softplus(f).mean()).item(),
        rel=1e-6,
    )


def test_label_smoothing_refuses_other_losses_and_double_smoothing(registry):
    with pytest.raises(GenfwError, match=r"cross-entropy losses .*'wasserstein'"):
        built(registry, {"label_smoothing": {}}, loss="wasserstein")
    with pytest.raises(GenfwError, match="use one of them"):
        built(registry, {"label_smoothing": {}}, loss={"name": "non_saturating", "real_label": 0.9})


# --- instance noise -----------------------------------------------------------------------------


def step_with_events(b, i, batch, mods):
    """Phase ``i``'s step as the loop runs it: its context then goes through the callbacks'
    ``on_phase_output`` (packing gives packs there)."""
    phase = b.model.phases[i]
    out = phase.step(batch, mods)
    out.context.update(phase=phase.name, step=0)
    b.callbacks.phase_output(phase.name, out, LoopState(0, mods, mods, {}))
    return out


def test_instance_noise_sigma_schedule():
    steps = torch.tensor([0, 250, 500, 1000, 1500])
    sigmas = [instance_noise_sigma(0.2, 1000, s).item() for s in steps]
    assert sigmas == pytest.approx([0.2, 0.15, 0.1, 0.0, 0.0])
    assert instance_noise_sigma(0.2, 0, torch.tensor(10**6)).item() == pytest.approx(0.2)


def test_instance_noise_reaches_every_critic_input(registry, tmp_path):
    cfg = resolve(raw(regs={"instance_noise": {"sigma": 0.5, "anneal_steps": 4}}, steps=3), registry)
    t = Trainer(cfg, tmp_path / "run")
    t.fit()
    assert t.plain["instance_noise"].step.item() == 3  # one per training step, not per phase
    b = t.built
    m = Modules(b.model.modules)
    critic = b.model.modules["critic"].inner  # the critic inside the noise
    batch = a_batch(b)
    torch.manual_seed(5)
    out = b.model.phases[0].step(batch, m)
    torch.manual_seed(5)
    z = torch.randn(16, 64)  # the step's noise for the fakes, then the instance noise in call order
    fake = m.generator(z)
    sigma = 0.5 * (1 - 3 / 4)
    real_in = batch.x + sigma * torch.randn_like(batch.x)
    fake_in = fake + sigma * torch.randn_like(fake)
    torch.testing.assert_close(out.context["real_scores"], critic(real_in).squeeze(1))
    torch.testing.assert_close(out.context["fake_scores"], critic(fake_in).squeeze(1))
    torch.testing.assert_close(out.context["fake"], fake)  # the fakes themselves stay clean


# --- experience replay --------------------------------------------------------------------------


def test_replay_buffer_contents():
    buf = ReplayBuffer(capacity=5, shape=(2,))
    first = torch.arange(6.0).view(3, 2)
    buf.push(first)
    assert buf.count.item() == 3
    torch.testing.assert_close(buf.samples[:3], first)
    assert torch.equal(buf.samples[3:], torch.zeros(2, 2))
    second = 100 + torch.arange(6.0).view(3, 2)
    torch.manual_seed(0)
    buf.push(second)  # two free slots, then one random old one
    assert buf.count.item() == 5
    torch.testing.assert_close(buf.samples[3:], second[:2])
    rows = {tuple(r.tolist()) for r in buf.samples}
    assert tuple(second[2].tolist()) in rows
    assert len(rows & {tuple(r.tolist()) for r in first}) == 2  # one of the first three was replaced
    drawn = buf.draw(50)
    assert {tuple(r.tolist()) for r in drawn} <= rows


def test_replaying_generator_mixes_past_fakes():
    buf = ReplayBuffer(capacity=100, shape=(2,))
    calls = iter([torch.zeros(4, 2), torch.ones(4, 2)])

    def g(_):
        return replay(buf, next(calls), share=0.5)

    first = g(None)
    assert torch.equal(first, torch.zeros(4, 2))  # nothing stored yet: all fresh
    second = g(None)
    assert torch.equal(second[:2], torch.zeros(2, 2))  # half replayed from the first batch
    assert torch.equal(second[2:], torch.ones(2, 2))
    assert buf.count.item() == 4  # b/2 new fakes stored per critic step


def test_experience_replay_replaces_half_a_batch_per_critic_step():
    """Shrivastava et al. (section 2.3): the critic's b fakes are b/2 new and b/2 from the buffer,
    and after the step b/2 buffer entries are replaced with the new fakes it scored, not all b."""
    buf = ReplayBuffer(capacity=6, shape=(1,))
    batches = iter(torch.arange(float(10 * i), 10 * i + 4).view(4, 1) for i in range(3))

    def g(_):
        return replay(buf, next(batches), share=0.5)

    assert g(None).flatten().tolist() == [0, 1, 2, 3]  # the buffer is empty: all new
    assert buf.count.item() == 2 and buf.samples[:2].flatten().tolist() == [2, 3]
    second = g(None).flatten().tolist()
    assert set(second[:2]) <= {2, 3} and second[2:] == [12, 13]
    assert buf.count.item() == 4 and buf.samples[:4].flatten().tolist() == [2, 3, 12, 13]
    torch.manual_seed(0)
    g(None)  # two free slots left: 22 and 23 go there, nothing is overwritten yet
    assert buf.samples.flatten().tolist() == [2, 3, 12, 13, 22, 23] and buf.count.item() == 6
    # Batch sizes where a share would round to no old or no new fakes keep one of each.
    from genfw_plugins.tricks import replayed

    assert [replayed(b, 0.5) for b in (2, 3, 16)] == [1, 2, 8]
    assert replayed(4, 0.05) == 1 and replayed(4, 0.95) == 3
    with pytest.raises(GenfwError, match="at least 2 fakes"):
        replayed(1, 0.5)


def test_experience_replay_refuses_conditional_generators(registry):
    if "cgan" not in registry.names("variant"):
        pytest.skip("no cgan variant registered")
    with pytest.raises(GenfwError, match="unconditional generators only"):
        build(resolve(raw("cgan", "digits", regs={"experience_replay": {}}), registry))


def test_experience_replay_refuses_a_latent_critic(registry):
    if "aae" not in registry.names("variant"):
        pytest.skip("no aae variant registered")
    with pytest.raises(GenfwError, match=r"variants it applies to: .*\bgan\b"):
        build(
            resolve(
                {"variant": "aae", "dataset": "toy2d", "regularisers": {"experience_replay": {}}}, registry
            )
        )


# --- spectral normalisation ---------------------------------------------------------------------


def test_spectral_norm_bounds_every_critic_layer(registry):
    b = built(registry, {"spectral_norm": {"generator": True}})
    critic, generator = b.model.modules["critic"], b.model.modules["generator"]
    x = a_batch(b).x
    for _ in range(30):  # power iterations run on each training-mode forward
        critic(x)
        generator(torch.randn(4, 64))
    for net in (critic, generator):
        layers = [m for m in net.modules() if isinstance(m, nn.Linear)]
        assert len(layers) == 3
        for layer in layers:
            assert torch.linalg.matrix_norm(layer.weight.detach(), 2).item() == pytest.approx(1.0, abs=1e-3)
    plain = built(registry, {})
    assert not any(hasattr(m, "parametrizations") for m in plain.model.modules["critic"].modules())


def sn_weights(net: nn.Module) -> set[int]:
    """The ids of the parameters of ``net`` under a spectral-norm parametrization."""
    from torch.nn.utils.parametrizations import _SpectralNorm

    return {
        id(plist.original)
        for layer in net.modules()
        if parametrize.is_parametrized(layer)
        for plist in layer.parametrizations.values()
        if any(isinstance(p, _SpectralNorm) for p in plist)
    }


# --- EMA ----------------------------------------------------------------------------------------


def test_ema_update_and_sampling_use_the_average(registry):
    b = built(registry, {"ema": {"decay": 0.9, "warmup": False}})
    gen, ema = b.model.modules["generator"], b.model.modules["generator_ema"]
    [(_, cb)] = list(b.callbacks)
    m = Modules(b.model.modules)
    before = [p.detach().clone() for p in ema.average.parameters()]
    with torch.no_grad():
        for p in gen.parameters():
            p.add_(1.0)
    cb.on_phase_end("critic", None, LoopState(0, m, m, {}))  # not a phase that trains the generator
    assert ema.updates.item() == 0
    cb.on_phase_end("generator", None, LoopState(0, m, m, {}))
    for avg, old, p in zip(ema.average.parameters(), before, gen.parameters(), strict=True):
        torch.testing.assert_close(avg, 0.9 * old + 0.1 * p.detach())
        assert not avg.requires_grad
    assert ema.updates.item() == 1
    sampling = b.callbacks.sampler(m)  # grids, metrics, sample and the export draw with it
    assert sampling["generator"] is ema.average and m["generator"] is gen
    torch.manual_seed(1)
    samples = b.model.sample(sampling, 5, None)
    torch.manual_seed(1)
    torch.testing.assert_close(samples, ema.average(torch.randn(5, 64)))


def test_ema_warmup_decay():
    from genfw_plugins.tricks import AveragedGenerator

    g = nn.Linear(1, 1, bias=False)
    nn.init.zeros_(g.weight)
    ema = AveragedGenerator(g)
    with torch.no_grad():
        g.weight.fill_(1.0)
    ema.update(g, 0.999, warmup=True)  # d = min(0.999, 1/10)
    assert ema.average.weight.item() == pytest.approx(0.9)
    ema.update(g, 0.999, warmup=True)  # d = 2/11
    assert ema.average.weight.item() == pytest.approx(1 - 0.1 * 2 / 11)


# --- training with combined flags, resume, export -----------------------------------------------


def test_combined_flags_train_gan_on_toy2d(tmp_path, run_cli):
    regs = ["feature_matching", "historical_averaging", "minibatch_discrimination", "minibatch_stddev"]
    regs += ["label_smoothing", "experience_replay", "instance_noise", "spectral_norm", "ema"]
    flags = [a for r in regs for a in ("--regulariser", r)]
    code, _, err = run_cli(
        "train", "--plugin", "gan", "--dataset", "toy2d", "--generator.hidden", "[16, 16]",
        "--critic.hidden", "[16, 16]", "--steps", "6", "--out", tmp_path / "run", *flags, *QUICK,
    )  # fmt: skip
    assert code == 0, err
    code, _, err = run_cli("sample", tmp_path / "run", "-n", "7", "--out", tmp_path / "s.safetensors")
    assert code == 0, err
    # The exported file carries the averaged generator as the generator, and sampling uses it.
    weights = safetensors.torch.load_file(str(tmp_path / "run" / "generator.safetensors"))
    assert weights and all(k.startswith("generator.") for k in weights)
    state = safetensors.torch.load_file(
        str(tmp_path / "run" / "checkpoints" / "step_0000006" / "state.safetensors")
    )
    prefix = "modules/generator_ema/average."
    averaged = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    assert averaged and all(torch.equal(weights[f"generator.{k}"], v) for k, v in averaged.items())


def test_combined_flags_train_gan_on_digits_with_dcgan(tmp_path, run_cli):
    code, _, err = run_cli(
        "train", "--plugin", "gan", "--dataset", "digits", "--generator", "dcgan", "--critic", "dcgan",
        "--generator.channels", "4", "--critic.channels", "4", "--steps", "4", "--out", tmp_path / "run",
        "--regulariser", "feature_matching", "--regulariser", "instance_noise", "--regulariser",
        "minibatch_discrimination", "--regulariser", "spectral_norm", "--regulariser", "ema",
        "--regulariser", "experience_replay", *QUICK,
    )  # fmt: skip
    assert code == 0, err


STATEFUL = {
    "ema": {"decay": 0.9},
    "experience_replay": {"capacity": 40},
    "instance_noise": {"anneal_steps": 8},
    "historical_averaging": {},
    "spectral_norm": {},
}


def test_resume_is_exact_with_stateful_tricks(tmp_path, registry):
    def run(path, steps, **train):
        r = raw(regs=STATEFUL, steps=steps)
        r["train"].update(train)
        t = Trainer(resolve(r, registry), path)
        t.fit()
        return t

    straight = run(tmp_path / "straight", 10, checkpoint_every=5)
    run(tmp_path / "split", 5)
    resumed = Trainer(
        read_run(tmp_path / "split", registry, [("train.steps", 10)]), tmp_path / "split", resume=True
    )
    assert resumed.step == 5
    assert resumed.plain["instance_noise"].step.item() == 5
    resumed.fit()
    names = (
        "generator",
        "critic",
        "generator_ema",
        "experience_replay",
        "instance_noise",
        "historical_averaging",
    )
    assert set(names) == set(straight.plain)
    for name in names:
        a, b = straight.plain[name].state_dict(), resumed.plain[name].state_dict()
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), f"{name}.{k} differs after resume"
    assert straight.plain["experience_replay"].count.item() == 40


def test_sampling_a_finished_run_loads_the_averaged_generator(tmp_path, registry):
    r = raw(regs={"ema": {"decay": 0.5}, "spectral_norm": {"generator": True}}, steps=3)
    t = Trainer(resolve(r, registry), tmp_path / "run")
    t.fit()
    _, model, modules = load_model(tmp_path / "run", read_run(tmp_path / "run", registry), with_data=False)
    for (k, a), (_, b) in zip(
        t.plain["generator_ema"].average.state_dict().items(),
        modules["generator"].state_dict().items(),
        strict=True,
    ):
        assert torch.equal(a, b), k
    assert not torch.equal(next(t.plain["generator"].parameters()), next(modules["generator"].parameters()))
    torch.manual_seed(0)
    ours = model.sample(modules, 4, None)
    torch.manual_seed(0)
    torch.testing.assert_close(ours, t.built.model.sample(t.sampling_modules(), 4, None))


# --- refusals -----------------------------------------------------------------------------------


@pytest.mark.parametrize("trick", ["weight_clipping", "feature_matching", "instance_noise", "packing"])
def test_a_trick_a_variant_cannot_use_is_refused_in_one_line(tmp_path, run_cli, registry, trick):
    code, _, err = run_cli(
        "train", "--plugin", "vae", "--regulariser", trick, "--steps", "2", "--out", tmp_path / "r", *QUICK
    )
    assert code == 2 and not (tmp_path / "r").exists()
    [line] = err.strip().splitlines()
    assert f"{trick}" in line and "variants it applies to:" in line
    listed = line.split("variants it applies to:")[1]
    assert "gan" in [v.strip() for v in listed.split(",")]
    assert "vae" not in [v.strip() for v in listed.split(",")]


def test_feature_matching_needs_a_critic_with_features(registry):
    import genfw_plugins.tricks as tricks

    class Bare(nn.Module):
        def forward(self, x, y=None):
            return x.sum(1, keepdim=True)

    b = built(registry, {})
    b.model.modules["critic"] = Bare()
    with pytest.raises(GenfwError, match="features"):
        tricks.FeatureMatching(tricks.FeatureMatchingOptions()).setup(b.model, None)


# --- TTUR, update ratios and batch norm: options every GAN variant exposes ------------------------


def test_every_gan_variant_exposes_learning_rates_and_update_ratio(registry):
    import attrs

    gans = [
        c
        for c in registry.all("variant").values()
        if {"critic", "generator"} <= set(getattr(c.factory, "phases", ()))
    ]
    assert {"gan", "wgan-gp"} <= {c.name for c in gans}
    for c in gans:
        fields = {f.name for f in attrs.fields(c.options)}
        assert {"lr_critic", "lr_generator", "n_critic"} <= fields, f"variant {c.name} lacks TTUR options"


def test_ttur_options_reach_the_phases(registry):
    b = build(
        resolve(
            raw(variant={"name": "gan", "lr_critic": 4e-4, "lr_generator": 1e-4, "n_critic": 3}), registry
        )
    )
    critic, generator = b.model.phases
    assert (critic.optim.lr, critic.repeats) == (4e-4, 3)
    assert (generator.optim.lr, generator.repeats) == (1e-4, 1)


# --- minibatch layers on a spectral-normalised head (SAGAN) --------------------------------------


def test_minibatch_stddev_keeps_the_spectral_norm_of_a_sagan_head(registry):
    from torch.nn.utils import parametrize

    b = build(
        resolve(
            raw(
                "sagan",
                "digits",
                regs={"minibatch_stddev": {}},
                generator={"name": "sagan", "channels": 8},
                critic={"name": "sagan", "channels": 8},
            ),
            registry,
        )
    )
    critic = b.model.modules["critic"]
    layer, head = critic.head
    assert isinstance(layer, StdDevFeature) and head.in_features == critic.features(a_batch(b).x).shape[1] + 1
    assert parametrize.is_parametrized(head, "weight")  # the widened layer is normalised too
    x = a_batch(b).x
    for _ in range(30):  # power iterations run on each training-mode forward
        critic(x)
    assert torch.linalg.matrix_norm(head.weight.detach(), 2).item() == pytest.approx(1.0, abs=1e-3)
    # A head without spectral norm stays a plain linear layer.
    plain = built(registry, {"minibatch_stddev": {}}).model.modules["critic"].head[-1]
    assert not parametrize.is_parametrized(plain, "weight")


def test_widening_copies_the_older_spectral_norm_hook_too():
    from genfw_plugins.tricks import copy_spectral_norm

    old = torch.nn.utils.spectral_norm(nn.Linear(3, 1), n_power_iterations=2)
    new = nn.Linear(4, 1)
    copy_spectral_norm(old, new)
    [hook] = [h for h in new._forward_pre_hooks.values() if type(h).__name__ == "SpectralNorm"]
    assert hook.n_power_iterations == 2 and hasattr(new, "weight_orig")


# --- refusals name the variants a trick works with --------------------------------------------------


def _listed(line: str) -> set[str]:
    return {v.strip() for v in line.split("variants it applies to:")[1].split(",")}


@pytest.mark.parametrize(
    "variant, trick, refusers",
    [
        (
            "wgan",
            "label_smoothing",
            {"wgan", "wgan-gp", "lsgan", "sagan", "ebgan", "began", "madgan", "progan"},
        ),
        ("ebgan", "feature_matching", {"ebgan", "began", "madgan", "progan"}),
        ("ebgan", "minibatch_discrimination", {"ebgan", "began", "progan"}),
    ],
)
def test_a_refusal_names_the_variants_the_trick_works_with(
    tmp_path, run_cli, registry, variant, trick, refusers
):
    code, _, err = run_cli(
        "train", "--plugin", variant, "--regulariser", trick, "--steps", "1", "--out", tmp_path / "r", *QUICK
    )
    assert code == 2
    [line] = err.strip().splitlines()
    listed = _listed(line)
    assert "gan" in listed and not listed & refusers
    # Honest: each variant it names builds with the trick (on digits, with small networks).
    for name in sorted(listed & set(registry.names("variant"))):
        nets = {"name": "sagan", "channels": 8} if name == "sagan" else dict(SMALL)
        cfg = raw(name, "digits", regs={trick: {}}, generator=dict(nets), critic=dict(nets))
        for slot in ("generator", "critic"):
            if slot not in registry.get("variant", name).factory.slots:  # its own networks (stylegan2)
                del cfg[slot]
        build(resolve(cfg, registry))


def test_label_smoothing_names_exactly_the_cross_entropy_recipes(registry):
    with pytest.raises(GenfwError) as info:
        built(registry, {"label_smoothing": {}}, variant="wgan")
    builtin = {"gan", "cgan", "acgan", "dragan", "infogan"}
    assert _listed(str(info.value)) & set(registry.names("variant")) >= builtin
    others = {"lsgan", "wgan", "wgan-gp", "sagan", "ebgan", "began", "madgan", "progan", "aae", "wae"}
    assert not _listed(str(info.value)) & others


# --- instance noise with several generator steps ---------------------------------------------------


def test_instance_noise_schedule_counts_training_steps_with_n_generator(registry, tmp_path):
    r = raw(variant={"name": "gan", "n_generator": 3}, regs={"instance_noise": {"anneal_steps": 8}}, steps=4)
    t = Trainer(resolve(r, registry), tmp_path / "run")
    t.fit()
    assert t.plain["instance_noise"].step.item() == 4  # not 12: once per training step


# --- packing (PacGAN) -----------------------------------------------------------------------------


def test_packing_scores_packs_of_m_samples(registry):
    from genfw_plugins.tricks import PackedCritic

    b = built(registry, {"packing": {"m": 4}})
    critic = b.model.modules["critic"]
    assert isinstance(critic, PackedCritic) and critic.inner.in_shape == (8,)  # 4 points of 2-D
    batch = a_batch(b)  # 16 points -> 4 packs
    m = Modules(b.model.modules)
    out = b.model.phases[0].step(batch, m)
    real, fake = out.context["real_scores"], out.context["fake_scores"]
    assert real.shape == fake.shape == (4,)
    # Pack i is points 4i .. 4i + 3, concatenated.
    packs = torch.stack([batch.x[4 * k : 4 * k + 4].flatten() for k in range(4)])  # (4, 8)
    torch.testing.assert_close(real, critic.inner(packs).squeeze(1))
    # The non-saturating critic loss averages over packs.
    expected = F.softplus(-real).mean() + F.softplus(fake).mean()
    torch.testing.assert_close(out.loss, expected)


def test_packing_on_images_concatenates_channels_and_combines_with_head_tricks(registry):
    b = built(
        registry,
        {"packing": {"m": 2}, "minibatch_stddev": {}, "spectral_norm": {}},
        dataset="digits",
        critic={"name": "dcgan", "channels": 8, "batch_norm": False},
        generator={"name": "dcgan", "channels": 8},
    )
    critic = b.model.modules["critic"]
    assert critic.inner.in_shape == (2, 8, 8)  # 2 grey 8x8 digits per pack
    batch = a_batch(b, n=8)
    assert critic(batch.x).shape == (4, 1)
    assert isinstance(critic.inner.head, nn.Sequential)  # minibatch stddev sits before the head
    assert "head" not in critic._modules  # and only there
    assert parametrize.is_parametrized(critic.inner.head[-1], "weight")  # spectral norm after it


def test_packing_refusals(registry, tmp_path):
    with pytest.raises(GenfwError, match="packing judges packs of unlabelled samples") as info:
        built(registry, {"packing": {}}, variant="cgan", dataset="digits")
    assert "variants it applies to: " in str(info.value) and "madgan" not in str(info.value)
    with pytest.raises(GenfwError, match="packing"):
        built(registry, {"packing": {}}, variant="madgan")
    r = raw(regs={"packing": {"m": 3}})  # batches of 16
    with pytest.raises(GenfwError, match="packing m=3 needs batches divisible by 3, got 16"):
        Trainer(resolve(r, registry), tmp_path / "r").fit()


@pytest.mark.parametrize("trick", ["packing", "experience_replay"])
def test_sngan_and_biggan_take_packing_and_replay_when_unconditional(registry, trick):
    """Their conditional option decides: never builds with the remedy (a packed critic, a replay
    buffer), auto on labelled digits is refused in one line that names the option."""
    from genfw_plugins.tricks import PackedCritic

    for name in ("sngan", "biggan"):
        nets = {"name": "resnet", "channels": 8}
        kw = {"critic": dict(nets)} if name == "biggan" else {"generator": dict(nets), "critic": dict(nets)}
        if name == "biggan":
            kw["generator"] = {"name": "biggan", "channels": 8}
        plain = build(
            resolve(raw({"name": name, "conditional": "never"}, "digits", {trick: {}}, **kw), registry)
        )
        assert plain.model.num_classes == 0
        if trick == "packing":
            assert isinstance(plain.model.modules["critic"], PackedCritic)
        else:
            assert "experience_replay" in plain.model.modules
        with pytest.raises(GenfwError) as info:
            build(resolve(raw(name, "digits", {trick: {}}, **kw), registry))
        assert f"this {name} is class-conditional (conditional: auto): --plugin.conditional never" in str(
            info.value
        )


@pytest.mark.parametrize("penalty", ["gradient_penalty", "dragan"])
def test_gradient_penalties_take_one_norm_per_pack(registry, penalty):
    """The packed critic is a function of a whole pack, so its Lipschitz constraint is on the
    gradient with respect to the pack: a linear critic on packs of 4 two-dimensional points,
    ``f(pack) = w . pack``, has gradient norm ``||w||`` at every pack, and pays nothing when
    ``||w|| = 1`` (one norm per sample, the blocks of w, paid 2.5 here before)."""
    b = built(registry, {"packing": {"m": 4}, penalty: {}}, critic={"name": "mlp", "hidden": []})
    inner = b.model.modules["critic"].inner.head  # the whole inner critic: Linear(8, 1)
    [reg] = [r for n, r in b.regularisers["critic"] if n == penalty]
    batch, mods = a_batch(b), Modules(b.model.modules)
    for norm, expected in ((1.0, 0.0), (3.0, 10.0 * (3.0 - 1.0) ** 2)):
        with torch.no_grad():
            inner.weight.copy_(torch.full((1, 8), norm / math.sqrt(8)))
            inner.bias.zero_()
        out = step_with_events(b, 0, batch, mods)
        assert reg.penalty(out.context).item() == pytest.approx(expected, abs=1e-4)
        assert out.context["real"].shape == (4, 8)  # the penalty sees the 4 packs of the batch


def test_gradient_penalty_interpolates_whole_packs(registry):
    """WGAN-GP on a packed critic: ``x_hat = eps real_pack + (1 - eps) fake_pack`` with one eps
    per pack, and the scores of the context's critic on packs are the packed critic's."""
    b = built(registry, {"packing": {"m": 4}, "gradient_penalty": {}})
    out = step_with_events(b, 0, a_batch(b), Modules(b.model.modules))
    seen = {}
    critic = out.context["critic"]

    def spy(x, y=None):
        seen["x_hat"] = x
        return critic(x, y)

    torch.testing.assert_close(critic(out.context["real"]), out.context["real_scores"])
    [gp] = [r for n, r in b.regularisers["critic"] if n == "gradient_penalty"]
    gp.penalty({**out.context, "critic": spy})
    real, fake = out.context["real"], out.context["fake"]  # (4, 8) packs
    eps = (seen["x_hat"] - fake) / (real - fake)
    torch.testing.assert_close(eps, eps[:, :1].expand_as(eps))  # one eps per pack
    assert eps[:, 0].unique().numel() == 4


def test_spectral_norm_refuses_a_weight_it_cannot_normalise(registry):
    """A critic weight of a kind spectral_norm does not know would stay unnormalised: refused in
    one line, and neither network is changed."""
    from genfw_plugins.tricks import SpectralNorm, SpectralNormOptions

    b = built(registry, {})
    b.model.modules["critic"].extra = nn.Bilinear(2, 2, 1)
    trick = SpectralNorm(SpectralNormOptions(generator=True))
    with pytest.raises(GenfwError) as info:
        trick.on_model_built(b.model, variant_info(b.cfg), None)
    [line] = str(info.value).splitlines()
    assert "critic's weight extra.weight (Bilinear)" in line and "leave spectral_norm out" in line
    assert not sn_weights(b.model.modules["generator"]) and not sn_weights(b.model.modules["critic"])
    # Minibatch discrimination's kernel T is a weight of the critic too, and is normalised.
    b = built(registry, {"minibatch_discrimination": {"kernels": 3}, "spectral_norm": {}})
    critic = b.model.modules["critic"]
    done = sn_weights(critic)
    assert all(id(p) in done for p in critic.parameters() if p.dim() >= 2)
    layer = critic.head[0]
    for _ in range(100):
        layer.T  # noqa: B018
    assert torch.linalg.matrix_norm(layer.T.detach().flatten(1), 2).item() == pytest.approx(1.0, abs=1e-2)
