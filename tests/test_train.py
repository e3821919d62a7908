"""The loop and the first variants: each phase's objective against a hand computation,
reproducibility, resume, and the run folder's safety rules."""

from __future__ import annotations

import json
import math

import pytest
import torch

from genfw import Batch, GenfwError, Modules, checkpoint
from genfw.config import resolve
from genfw.plugins import get_registry
from genfw.train import Trainer, build, read_run

SMALL = {"hidden": [16, 16]}


def small(variant: str, dataset="toy2d", **extra):
    raw = {
        "variant": variant,
        "dataset": dataset,
        "train": {"steps": 10, "batch_size": 16, "log_every": 1, "progress": False, "grid": 4},
    }
    for slot in get_registry().get("variant", variant).factory.slots:
        if slot in ("generator", "critic", "encoder"):
            raw[slot] = {"name": "mlp", **SMALL}
    raw.update(extra)
    return raw


def built_for(registry, raw):
    return build(resolve(raw, registry))


def batch_of(b, n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, len(b.dataset), (n,), generator=g)
    x, y = b.dataset.tensors
    return Batch(x[idx], y[idx])


def test_gan_phases_match_the_paper(registry):
    b = built_for(registry, small("gan", loss="minimax"))
    m = Modules(b.model.modules)
    critic_phase, gen_phase = b.model.phases
    batch = batch_of(b)
    torch.manual_seed(3)
    out = critic_phase.step(batch, m)
    torch.manual_seed(3)  # same noise again, by hand
    z = torch.randn(len(batch), 64)
    fake = m.generator(z)
    d_real = torch.sigmoid(m.critic(batch.x).squeeze(1))
    d_fake = torch.sigmoid(m.critic(fake).squeeze(1))
    # The critic ascends E log D(x) + E log(1 - D(G(z))): its loss is the negation.
    expected = -(torch.log(d_real).mean() + torch.log(1 - d_fake).mean())
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert torch.equal(out.context["fake"], fake.detach())
    torch.manual_seed(4)
    out = gen_phase.step(batch, m)
    torch.manual_seed(4)
    d_fake = torch.sigmoid(m.critic(m.generator(torch.randn(len(batch), 64))).squeeze(1))
    assert out.loss.item() == pytest.approx(torch.log(1 - d_fake).mean().item(), rel=1e-5)  # minimax G
    assert gen_phase.fresh_batch is False and gen_phase.modules == ("generator",)


def test_wgan_gp_critic_objective(registry):
    b = built_for(registry, small("wgan-gp"))
    m = Modules(b.model.modules)
    phase = b.model.phases[0]
    # toy2d: the authors' toy preset (beta1 0.5, lambda 0.1); n_critic and lr are the paper's.
    assert phase.repeats == 5 and phase.optim.betas == (0.5, 0.9) and phase.optim.lr == 1e-4
    [(name, gp)] = b.regularisers["critic"]
    assert name == "gradient_penalty"
    batch = batch_of(b)
    out = phase.step(batch, m)
    w = (m.critic(out.context["fake"]).mean() - m.critic(batch.x).mean()).item()
    assert out.loss.item() == pytest.approx(w, rel=1e-5)
    # The penalty, by hand, with the same per-example eps.
    torch.manual_seed(11)
    got = gp.penalty(out.context).item()
    torch.manual_seed(11)
    eps = torch.rand(len(batch), 1)
    x_hat = (eps * batch.x + (1 - eps) * out.context["fake"]).requires_grad_(True)
    (grad,) = torch.autograd.grad(m.critic(x_hat).sum(), x_hat)
    assert gp.weight == 0.1
    assert got == pytest.approx(0.1 * ((grad.norm(dim=1) - 1) ** 2).mean().item(), rel=1e-4)


def test_vae_objective_is_the_negative_elbo(registry):
    raw = small("vae", dataset="digits")
    raw["variant"] = {"name": "vae", "latent_dim": 3, "beta": 2.0}
    b = built_for(registry, raw)
    m = Modules(b.model.modules)
    batch = batch_of(b)
    torch.manual_seed(5)
    out = b.model.phases[0].step(batch, m)
    torch.manual_seed(5)
    mu, logvar = m.encoder(batch.x).chunk(2, dim=1)
    z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
    x_hat = m.generator(z)
    d = batch.x[0].numel()
    nll = 0.5 * ((batch.x - x_hat) ** 2).flatten(1).sum(1) + 0.5 * d * math.log(2 * math.pi)
    kl = 0.5 * (mu**2 + logvar.exp() - 1 - logvar).sum(1)
    assert out.loss.item() == pytest.approx((nll + 2.0 * kl).mean().item(), rel=1e-5)
    assert torch.allclose(out.logs["elbo"], -(nll + kl).detach(), rtol=1e-5)


def test_vae_refuses_a_prior_without_closed_form_kl(registry):
    raw = small("vae", dataset="digits")
    raw["prior"] = "spike_slab"
    with pytest.raises(GenfwError, match=r"prior 'spike_slab' cannot be used with vae.*: vsc, aae, wae"):
        built_for(registry, raw)


def test_wae_objective(registry):
    raw = small("wae", dataset="digits")
    raw["variant"] = {"name": "wae", "code": "dense"}  # the paper's linear code (sparse: test_autoencoders)
    raw["prior"] = {"name": "spike_slab", "alpha": 0.5}
    b = built_for(registry, raw)
    m = Modules(b.model.modules)
    batch = batch_of(b, n=16)
    out = b.model.phases[0].step(batch, m)
    x_hat = m.generator(m.encoder(batch.x))
    assert out.loss.item() == pytest.approx(
        ((batch.x - x_hat) ** 2).flatten(1).sum(1).mean().item(), rel=1e-5
    )
    [(name, mmd)] = b.regularisers["autoencoder"]
    assert name == "mmd" and mmd.penalty(out.context).item() > 0


def test_n_critic_steps_per_generator_step(tmp_path, registry):
    """wgan-gp: 5 critic updates per generator update, each on the loader's next batch (none
    repeated, none skipped), and the generator update on the batch of the last of them."""
    cfg = resolve(
        small("wgan-gp") | {"train": {"steps": 3, "batch_size": 16, "progress": False, "grid": 4}}, registry
    )
    t = Trainer(cfg, tmp_path / "run")
    drawn, seen = [], {"critic": [], "generator": []}
    loader = t.loader

    def recording():
        while True:
            drawn.append(next(loader))
            yield drawn[-1]

    t.loader = recording()
    for phase in t.phases:

        def spy(batch, m, _step=phase.step, _name=phase.name):
            seen[_name].append(batch)
            return _step(batch, m)

        phase.step = spy
    for _ in range(3):
        t.train_step()
    assert len(drawn) == 15 and [id(b) for b in seen["critic"]] == [id(b) for b in drawn]
    assert [id(b) for b in seen["generator"]] == [id(drawn[i]) for i in (4, 9, 14)]
    assert all(not torch.equal(a.x, b.x) for i, a in enumerate(drawn[:5]) for b in drawn[i + 1 : 5])
    steps = {
        name: next(iter(opt.state_dict()["state"].values()))["step"].item()
        for name, opt in t.optimizers.items()
    }
    assert steps == {"critic": 15, "generator": 3}


def run_once(registry, path, steps=10, **train):
    raw = small("gan")
    raw["train"].update({"steps": steps, **train})
    t = Trainer(resolve(raw, registry), path)
    t.fit()
    return t


def losses(path):
    return [
        json.loads(line)
        for line in (path / "metrics.jsonl").read_text().splitlines()
        if "critic/loss" in line
    ]


def test_same_command_twice_gives_the_same_losses(tmp_path, registry):
    run_once(registry, tmp_path / "a")
    run_once(registry, tmp_path / "b")
    strip = lambda rows: [{k: v for k, v in r.items() if k != "time"} for r in rows]  # noqa: E731
    assert strip(losses(tmp_path / "a")) == strip(losses(tmp_path / "b"))
    assert len(losses(tmp_path / "a")) == 10


def test_resume_continues_exactly(tmp_path, registry):
    straight = run_once(registry, tmp_path / "straight", steps=10, checkpoint_every=5)
    run_once(registry, tmp_path / "split", steps=5)
    cfg = read_run(tmp_path / "split", registry, [("train.steps", 10)])
    resumed = Trainer(cfg, tmp_path / "split", resume=True)
    assert resumed.step == 5
    resumed.fit()
    for name in ("generator", "critic"):
        for (k, a), (_, b) in zip(
            straight.plain[name].state_dict().items(), resumed.plain[name].state_dict().items(), strict=True
        ):
            assert torch.equal(a, b), f"{name}.{k} differs after resume"


def test_run_folder_is_complete(tmp_path, registry):
    run = tmp_path / "r"
    run_once(registry, run, steps=4)
    assert (run / "config.yaml").is_file() and (run / "run.json").is_file()
    assert (run / "samples" / "step_0000004.png").is_file()
    assert any((run / "tb").glob("events.out.tfevents.*"))
    assert (run / "generator.safetensors").is_file()
    assert (run / "checkpoints" / "latest").read_text().strip() == "step_0000004"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("mode_coverage/modes" in r for r in rows)  # toy2d's default metric, at the end


def test_existing_run_folder_is_refused_and_untouched(tmp_path, registry):
    run = tmp_path / "r"
    run_once(registry, run, steps=2)
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*")}
    with pytest.raises(GenfwError, match="already exists; pass --resume"):
        run_once(registry, run, steps=2)
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*")} == before
    other = tmp_path / "not_a_run"
    other.mkdir()
    (other / "precious.txt").write_text("keep")
    raw = small("gan")
    with pytest.raises(GenfwError, match="refusing to overwrite"):
        Trainer(resolve(raw, registry), other, overwrite=True)
    assert (other / "precious.txt").read_text() == "keep"


@pytest.mark.parametrize("damage", ["truncate", "flip", "json", "missing"])
def test_corrupted_checkpoint_is_a_clear_error_and_nothing_is_deleted(tmp_path, registry, damage):
    run = tmp_path / "r"
    run_once(registry, run, steps=2)
    ckpt = checkpoint.find(run / "checkpoints")
    tensors = ckpt / checkpoint.TENSOR_FILE
    if damage == "truncate":
        tensors.write_bytes(tensors.read_bytes()[:100])
    elif damage == "flip":
        data = bytearray(tensors.read_bytes())
        data[-1] ^= 0xFF
        tensors.write_bytes(bytes(data))
    elif damage == "json":
        (ckpt / checkpoint.META_FILE).write_text("{not json")
    else:
        tensors.unlink()
    files = sorted(p.relative_to(run) for p in run.rglob("*"))
    cfg = read_run(run, registry, [("train.steps", 4)])
    with pytest.raises(GenfwError, match=f"checkpoint {ckpt} is (corrupted|incomplete)") as info:
        Trainer(cfg, run, resume=True)
    assert "\n" not in str(info.value)
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == files


def test_checkpoint_round_trip_keeps_int_keys_and_nested_values(tmp_path):
    state = {
        "optim": {
            "state": {0: {"step": torch.tensor(3.0), "m": torch.ones(2)}},
            "groups": [{"lr": 0.1, "betas": [0.5, 0.9]}],
        },
        "step": 7,
    }
    path = checkpoint.save(tmp_path, 7, state)
    step, back = checkpoint.load(path)
    assert step == 7 and back["optim"]["groups"] == [{"lr": 0.1, "betas": [0.5, 0.9]}]
    assert torch.equal(back["optim"]["state"][0]["m"], torch.ones(2))
    for s in (8, 9):
        checkpoint.save(tmp_path, s, state, keep=2)
    assert sorted(p.name for p in tmp_path.glob("step_*")) == ["step_0000008", "step_0000009"]


def test_divergence_is_reported(tmp_path, registry):
    raw = small("gan")
    raw["variant"] = {"name": "gan", "lr_critic": 1e30, "lr_generator": 1e30}
    raw["train"]["steps"] = 20
    with pytest.raises(GenfwError, match="training diverged at step"):
        Trainer(resolve(raw, registry), tmp_path / "r").fit()


def test_resume_never_unpickles(tmp_path, registry, monkeypatch):
    """Checkpoints are safetensors + JSON: resuming must work with every unpickler disabled."""
    import pickle

    run_once(registry, tmp_path / "r", steps=2)

    def refuse(*args, **kwargs):
        raise AssertionError("a checkpoint load tried to unpickle")

    for module, name in ((pickle, "load"), (pickle, "loads"), (pickle, "Unpickler"), (torch, "load")):
        monkeypatch.setattr(module, name, refuse)
    cfg = read_run(tmp_path / "r", registry, [("train.steps", 3)])
    resumed = Trainer(cfg, tmp_path / "r", resume=True)
    assert resumed.step == 2
    resumed.fit()
    assert checkpoint.find(tmp_path / "r" / "checkpoints").name == "step_0000003"


@pytest.mark.parametrize("output", ["none", "auto"])
def test_vae_with_bernoulli_likelihood_samples_in_data_space(registry, output):
    """Decoder outputs are logits; samples and reconstructions are the mean 2 sigmoid(l) - 1.
    The default output (auto) is linear for a loss on logits, as none is: no tanh caps them."""
    raw = small("vae", dataset="digits")
    raw["loss"] = "bernoulli"
    raw["generator"] = {"name": "mlp", "hidden": [16, 16], "output": output}
    b = built_for(registry, raw)
    m = Modules(b.model.modules)
    assert isinstance(m.generator.net[-1], torch.nn.Identity)
    torch.manual_seed(0)
    samples = b.model.sample(m, 5, None)
    torch.manual_seed(0)
    logits = m.generator(torch.randn(5, 16))
    assert torch.allclose(samples, 2 * torch.sigmoid(logits) - 1)
    x = batch_of(b, n=4).x
    mu, _ = m.encoder(x).chunk(2, dim=1)
    assert torch.allclose(b.model.reconstruct(m, x, None), 2 * torch.sigmoid(m.generator(mu)) - 1)


def test_process_seeds_wrap_into_numpys_range():
    """seed + rank (and a resume's seed + 7919 * step) past 2**32 - 1 wraps rather than crashing
    numpy: train.seed 2**32 - 1 on rank 1 seeds as 0 does."""
    from accelerate.utils import set_seed

    from genfw.train import seed_process

    seed_process(2**32 - 1, 1)
    wrapped = torch.rand(3)
    set_seed(0)
    assert torch.equal(wrapped, torch.rand(3))
    seed_process(0, 7919 * 600_000)  # a resume at another world size, far into training


def test_data_fraction_trains_on_one_fixed_nested_subset(tmp_path, registry):
    """train.data_fraction: the same subset for every seed, inside the training split, a 10%
    subset inside the 20% one, and the run's loader draws from it alone."""
    from genfw.data import holdout_split, training_subset

    keep = holdout_split(1797, 0.1)[0]
    tenth, fifth = training_subset(keep, 0.1), training_subset(keep, 0.2)
    assert len(tenth) == round(0.1 * len(keep)) and len(fifth) == round(0.2 * len(keep))
    assert set(tenth.tolist()) <= set(fifth.tolist()) <= set(keep.tolist())
    assert torch.equal(tenth, training_subset(keep, 0.1)) and torch.equal(tenth, tenth.sort().values)
    assert not torch.equal(tenth, keep[: len(tenth)])  # drawn, not the first examples

    raw = small("gan", dataset="digits")
    raw["train"].update({"holdout": 0.1, "data_fraction": 0.1, "seed": 3})
    t = Trainer(resolve(raw, registry), tmp_path / "run")
    x_all = t.built.dataset.tensors[0].flatten(1)
    assert torch.equal(t.loader.x.flatten(1).cpu(), x_all[tenth].float())
    with pytest.raises(GenfwError, match=r"data_fraction must be in \(0, 1\]"):
        resolve(small("gan") | {"train": {"data_fraction": 0.0}}, registry)
    with pytest.raises(GenfwError, match="keeps none of the 10 training examples"):
        training_subset(torch.arange(10), 0.01)
