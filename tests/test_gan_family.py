"""The GAN family beyond the plain GAN: wgan (clipping after EVERY critic step), dragan, lsgan,
and every variant of issue 3 trains a few steps on digits (and toy2d where suited) with finite
losses. EBGAN/BEGAN, SAGAN and MAD-GAN have their own test files for their formulas."""

from __future__ import annotations

import math
from pathlib import Path
from typing import ClassVar

import pytest
import torch

import genfw
from genfw import Modules
from genfw.config import resolve
from genfw.plugins import get_registry
from genfw.train import Trainer, build

TINY_MLP = {"name": "mlp", "hidden": [16, 16]}
TINY_CONV = {"name": "dcgan", "channels": 4}


def small(name: str, dataset: str = "digits", steps: int = 3, **extra) -> dict:
    raw = {
        "variant": name,
        "dataset": dataset,
        "train": {
            "steps": steps,
            "batch_size": 16,
            "log_every": 1,
            "progress": False,
            "grid": 4,
            "sample_every": 0,
            "checkpoint_every": 0,
        },
        "metrics": {},
    }
    slots = get_registry().get("variant", name).factory.slots
    for slot, spec in slots.items():
        if spec.kind in ("generator", "critic", "encoder") and spec.default == "mlp":
            raw[slot] = dict(TINY_MLP)
    raw.update(extra)
    return raw


# --- wgan -----------------------------------------------------------------------------------------


def _layers(net: torch.nn.Module) -> list[str]:
    """The leaf layers of a network in order: ``Linear(in, out)`` or the activation's class name."""
    leaves = [m for m in net.modules() if not list(m.children())]
    return [
        f"Linear({m.in_features}, {m.out_features})" if isinstance(m, torch.nn.Linear) else type(m).__name__
        for m in leaves
    ]


@pytest.mark.parametrize("variant", ["wgan", "wgan-gp"])
def test_wgan_points_presets_build_the_authors_toy_networks(registry, variant) -> None:
    """On 2-D points wgan's generator and critic are gan_toy.py's (igul222/improved_wgan_training):
    three hidden layers of 512 units with ReLU each (DIM = 512), a linear output; wgan-gp's are
    PacGAN's toy networks (G 4 x 400, D 3 x 200, ReLU) with an EMA of G; on images the mlp keeps
    its defaults (2 x 256, leaky ReLU)."""
    b = build(resolve({"variant": variant, "dataset": "toy2d"}, registry))
    m = b.model.modules
    if variant == "wgan":
        hidden = ["Linear(2, 512)", "ReLU", "Linear(512, 512)", "ReLU", "Linear(512, 512)", "ReLU"]
        assert _layers(m["generator"]) == [*hidden, "Linear(512, 2)", "Identity"]
        assert _layers(m["critic"]) == [*hidden, "Linear(512, 1)"]
    else:
        g = ["Linear(2, 400)", "ReLU", *["Linear(400, 400)", "ReLU"] * 3, "Linear(400, 2)", "Identity"]
        assert _layers(m["generator"]) == g
        c = ["Linear(2, 200)", "ReLU", *["Linear(200, 200)", "ReLU"] * 2, "Linear(200, 1)"]
        assert _layers(m["critic"]) == c
        assert "generator_ema" in m and list(b.callbacks.names()) == ["ema"]
    digits = resolve({"variant": variant, "dataset": "digits"}, registry).slots
    assert digits["generator"].options.hidden == [256, 256] == digits["critic"].options.hidden
    assert digits["critic"].options.activation == "leaky_relu"


def test_wgan_is_the_papers_algorithm_1(registry) -> None:
    b = build(resolve(small("wgan"), registry))
    critic, gen = b.model.phases
    assert critic.repeats == 5 and critic.optim.name == "rmsprop" and critic.optim.lr == 5e-5
    assert gen.optim.name == "rmsprop" and gen.optim.lr == 5e-5
    [(name, clip)] = b.regularisers["critic"]
    assert name == "weight_clipping" and clip.clip == 0.01
    assert b.regularisers["generator"] == []
    m = Modules(b.model.modules)
    x = b.dataset.tensors[0][:8]
    from genfw import Batch

    out = critic.step(Batch(x, torch.zeros(8, dtype=torch.long)), m)
    expected = m.critic(out.context["fake"]).mean() - m.critic(x).mean()  # E f(G(z)) - E f(x)
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_wgan_clips_after_every_critic_step(tmp_path, registry) -> None:
    """Every critic optimiser step after the first starts from weights inside [-c, c]: the clamp
    runs after each of the n_critic repeats, not once per training step."""
    raw = small("wgan", steps=3)
    raw["regularisers"] = {"weight_clipping": {"clip": 0.02}}
    t = Trainer(resolve(raw, registry), tmp_path / "run")
    critic = t.plain.critic
    opt = t._hot_optimizers["critic"]
    entries: list[float] = []
    real_step = opt.step

    def step(*args, **kwargs):
        entries.append(max(p.detach().abs().max().item() for p in critic.parameters()))
        out = real_step(*args, **kwargs)
        return out

    opt.step = step
    [(_, clip)] = t._regs["critic"]
    calls = []
    real_after = clip.after_step

    def after_step(modules, phase):
        real_after(modules, phase)
        calls.append(max(p.detach().abs().max().item() for p in critic.parameters()))

    t._constraints["critic"] = [after_step]
    t.fit()
    assert len(entries) == 15 and len(calls) == 15  # 3 steps x n_critic 5
    assert entries[0] > 0.02  # the initial weights were not clipped ...
    assert all(e <= 0.02 + 1e-7 for e in entries[1:])  # ... every later step starts clipped
    assert all(c <= 0.02 + 1e-7 for c in calls)


# --- lsgan, dragan --------------------------------------------------------------------------------


def test_lsgan_and_dragan_recipes(registry) -> None:
    b = build(resolve(small("lsgan"), registry))
    assert type(b.model.phases[0].step.__self__.loss).__name__ == "LeastSquaresLoss"
    assert b.model.phases[0].optim.lr == 2e-4 and b.model.phases[0].optim.betas == (0.5, 0.999)
    b = build(resolve(small("dragan"), registry))
    [(name, reg)] = b.regularisers["critic"]
    assert name == "dragan" and reg.weight == 10.0 and reg.scale == 0.5
    assert type(b.model.phases[0].step.__self__.loss).__name__ == "NonSaturatingLoss"
    assert b.model.phases[0].optim.betas == (0.5, 0.9) and b.model.phases[0].optim.lr == 1e-4


# --- every variant trains -------------------------------------------------------------------------

ON_DIGITS = {
    "wgan": {},
    "dragan": {},
    "lsgan": {},
    "ebgan": {},
    "began": {},
    "sagan": {"generator": {"name": "sagan", "channels": 8}, "critic": {"name": "sagan", "channels": 8}},
    "madgan": {"variant": {"name": "madgan", "num_generators": 3}},
}
ON_TOY2D = ["wgan", "dragan", "lsgan", "ebgan", "began", "madgan"]


def _check_finite(t: Trainer, result) -> None:
    assert result.last_logs, "nothing was logged"
    bad = {k: v for k, v in result.last_logs.items() if not math.isfinite(v)}
    assert not bad
    for mod in t.plain.values():
        assert all(torch.isfinite(p).all() for p in mod.parameters())


@pytest.mark.parametrize("variant", list(ON_DIGITS))
def test_variant_trains_on_digits(tmp_path, registry, variant) -> None:
    raw = small(variant, **ON_DIGITS[variant])
    t = Trainer(resolve(raw, registry), tmp_path / "run")
    result = t.fit()
    _check_finite(t, result)
    samples = t.built.model.sample(t.plain, 4, None)
    assert samples.shape == (4, 1, 8, 8) and torch.isfinite(samples).all()
    assert (tmp_path / "run" / "samples" / "step_0000003.png").is_file()


@pytest.mark.parametrize("variant", ON_TOY2D)
def test_variant_trains_on_toy2d(tmp_path, registry, variant) -> None:
    extra = {"variant": {"name": "madgan", "num_generators": 3}} if variant == "madgan" else {}
    raw = small(variant, dataset="toy2d", **extra)
    raw["train"]["batch_size"] = 32  # below the points presets' 256: keep the test fast
    t = Trainer(resolve(raw, registry), tmp_path / "run")
    _check_finite(t, t.fit())


def readme_gan_papers() -> dict[str, str]:
    """The README's table of the GAN family: variant -> the paper it cites ("Arjovsky et al. 2017")."""
    text = (Path(__file__).parents[1] / "README.md").read_text()
    table = text.split("### The GAN family")[1].split("\n\n")[1]
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in table.splitlines()[2:]]
    return {cells[0].strip("`"): cells[1] for cells in rows}


GAN_PAPERS = readme_gan_papers()


def test_the_readme_table_lists_every_gan_variant(registry) -> None:
    gans = {
        c.name
        for c in registry.all("variant").values()
        if c.plugin.dist == "genfw" and {"critic", "generator"} <= set(getattr(c.factory, "phases", ()))
    }
    assert gans == set(GAN_PAPERS)


@pytest.mark.parametrize("variant", sorted(GAN_PAPERS))
def test_variant_is_documented(run_cli, variant) -> None:
    """``genfw list variant`` names the paper the README cites for the variant (authors and year)
    and no other variant's paper: a generic help text, or one copied from another variant, fails."""
    code, out, _ = run_cli("list", "variant")
    assert code == 0
    line = next(line for line in out.splitlines() if line.startswith(f"  {variant} - "))
    help_text = line.split(" - ", 1)[1].rsplit("  (plugin ", 1)[0]
    paper = GAN_PAPERS[variant]
    assert paper in help_text, f"{variant}: help {help_text!r} does not name {paper}"
    assert not [p for p in set(GAN_PAPERS.values()) - {paper} if p in help_text]


# --- relativistic losses reach every adversarial variant -------------------------------------------


class _Relativistic:
    """A loss that needs the real scores in the generator's objective (as RaGAN's does): it records
    what it was given, and is ``mean(fake) - mean(real)`` for the generator."""

    role = "adversarial"
    needs_real_scores = True
    seen: ClassVar[list] = []

    def __init__(self, options=None):
        pass

    def critic_loss(self, real_scores, fake_scores):
        return fake_scores.mean() - real_scores.mean()

    def generator_loss(self, fake_scores, real_scores=None):
        type(self).seen.append((fake_scores.shape, None if real_scores is None else real_scores.shape))
        return real_scores.mean() - fake_scores.mean()


class _RelativisticPlugin:
    @genfw.hookimpl
    def genfw_register_losses(self, register):
        register("relativistic_spy", _Relativistic)


@pytest.mark.parametrize(
    ("variant", "slot", "extra"),
    [
        ("gan", "loss", {}),
        (
            "progan",
            "loss",
            {"variant": {"name": "progan", "channels": 16, "min_channels": 8, "latent_dim": 8}},
        ),
        ("aae", "adversarial", {}),
        ("wae", "adversarial", {"variant": {"name": "wae", "penalty": "gan"}}),
    ],
)
def test_a_relativistic_loss_gets_the_real_scores_in_every_adversarial_variant(variant, slot, extra):
    from genfw.testing import registry_with, run_phase, small_run

    registry = registry_with(_RelativisticPlugin())
    _Relativistic.seen.clear()
    run = small_run(
        variant, registry=registry, datasets=("digits",), extra={**extra, slot: "relativistic_spy"}
    )
    for phase in run.built.model.phases:
        run_phase(run, phase)
    assert _Relativistic.seen, "the generator-side phase never called generator_loss"
    for fake_shape, real_shape in _Relativistic.seen:
        assert real_shape is not None and real_shape == fake_shape


# --- slowing the critic by update ratio: n_generator ---------------------------------------------


def test_n_generator_repeats_the_generator_step(tmp_path, registry) -> None:
    """With n_generator 3 a training step is one critic update and three generator updates, each
    on fresh noise; the critic's optimiser steps once."""
    raw = small("gan", dataset="toy2d", steps=2, variant={"name": "gan", "n_generator": 3})
    t = Trainer(resolve(raw, registry), tmp_path / "run")
    critic_phase, gen_phase = t.built.model.phases
    assert (critic_phase.repeats, gen_phase.repeats) == (1, 3) and not gen_phase.fresh_batch
    calls = {"critic": 0, "generator": 0}
    fakes = []
    for name, opt in t._hot_optimizers.items():
        real_step = opt.step

        def step(*args, _real=real_step, _name=name, **kwargs):
            calls[_name] += 1
            return _real(*args, **kwargs)

        opt.step = step
    step_fn = gen_phase.step

    def spy(batch, m):
        out = step_fn(batch, m)
        fakes.append(out.context["fake"].detach())
        return out

    gen_phase.step = spy
    t.train_step()
    assert calls == {"critic": 1, "generator": 3}
    assert not torch.equal(fakes[0], fakes[1]) and not torch.equal(fakes[1], fakes[2])
    adam = {n: getattr(o, "optimizer", o) for n, o in t.optimizers.items()}
    assert all(s["step"].item() == 3 for s in adam["generator"].state.values())
    assert all(s["step"].item() == 1 for s in adam["critic"].state.values())


def test_n_generator_reaches_every_gan_recipe_and_is_validated(registry) -> None:
    for name in ("gan", "lsgan", "dragan", "wgan", "wgan-gp"):
        b = build(resolve(small(name, dataset="toy2d", variant={"name": name, "n_generator": 2}), registry))
        assert [p.repeats for p in b.model.phases][1] == 2
        assert registry.get("variant", name).options().n_generator == 1  # the default: one step
    with pytest.raises(genfw.GenfwError, match="n_generator"):
        resolve(small("gan", variant={"name": "gan", "n_generator": 0}), registry)
