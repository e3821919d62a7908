"""Callbacks: a kind of component with declared order, events fired by the loop, state in
checkpoints; the model-changing tricks act on every player a variant declares."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
import torch

import genfw
from genfw import BuildContext, GenfwError, Model, Modules, Phase, PhaseOutput, Slot
from genfw.callbacks import Callbacks, declared_order
from genfw.config import resolve
from genfw.contracts import Callback, LoopState, PhaseSpec, Players, Variant
from genfw.testing import registry_with
from genfw.train import Trainer, build, read_run

ADVERSARIAL = frozenset({"real", "fake", "critic", "labels", "real_scores", "fake_scores"})


class DualCritic(Variant):
    """Two critics judge the same fakes (a dual-discriminator GAN); the generator fools both."""

    slots: ClassVar[dict[str, Slot]] = {
        "generator": Slot("generator", "mlp"),
        "critic": Slot("critic", "mlp"),
        "prior": Slot("prior", "normal"),
        "loss": Slot("loss", "non_saturating", role="adversarial"),
    }
    players = Players(
        generators=("generator",),
        critics=("critic_a", "critic_b"),
        built_from={"critic_a": "critic", "critic_b": "critic"},  # both from the critic slot
    )
    phases: ClassVar[dict[str, PhaseSpec]] = {
        "critic": PhaseSpec(provides=ADVERSARIAL, help="both critics"),
        "generator": PhaseSpec(provides=frozenset({"fake"}), help="the generator against both"),
    }
    replayable = True

    def build(self, ctx: BuildContext) -> Model:
        shape = ctx.data.shape
        self.prior, self.loss, self.events = ctx["prior"].build(dim=4), ctx["loss"].build(), ctx.events
        generator = ctx["generator"].build(latent_dim=4, out_shape=shape, num_classes=0)
        critics = {
            n: ctx["critic"].build(in_shape=shape, out_dim=1, num_classes=0) for n in self.players.critics
        }
        return Model(
            modules={"generator": generator, **critics},
            phases=[
                Phase("critic", self.players.critics, self.critic_step, provides=ADVERSARIAL),
                Phase("generator", ("generator",), self.generator_step, provides=frozenset({"fake"})),
            ],
            sample=lambda m, n, y=None: m.generator(self.prior.sample(n, device=torch.device("cpu"))),
        )

    def critic_step(self, batch: genfw.Batch, m: Modules) -> PhaseOutput:
        with torch.no_grad():
            fake = m.generator(self.prior.sample(len(batch), device=batch.x.device))
        fake = self.events.fakes("critic", fake)

        def critic(x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
            return (m.critic_a(x) + m.critic_b(x)).squeeze(1) / 2

        real_scores, fake_scores = critic(batch.x), critic(fake)
        loss = self.loss.critic_loss(real_scores, fake_scores)
        context = {"real": batch.x, "fake": fake, "critic": critic, "labels": None}
        return PhaseOutput(loss, context={**context, "real_scores": real_scores, "fake_scores": fake_scores})

    def generator_step(self, batch: genfw.Batch, m: Modules) -> PhaseOutput:
        fake = m.generator(self.prior.sample(len(batch), device=batch.x.device))
        scores = [m.critic_a(fake).squeeze(1), m.critic_b(fake).squeeze(1)]
        return PhaseOutput(sum(self.loss.generator_loss(s) for s in scores), context={"fake": fake})


class DualPlugin:
    @genfw.hookimpl
    def genfw_register_variants(self, register: Any) -> None:
        register("dual", DualCritic)


@pytest.fixture(scope="module")
def dual_registry():
    return registry_with(DualPlugin())


def dual(regs: dict, steps: int = 2) -> dict:
    return {
        "variant": "dual",
        "dataset": "toy2d",
        "generator": {"name": "mlp", "hidden": [8]},
        "critic": {"name": "mlp", "hidden": [8]},
        "regularisers": regs,
        "train": {"steps": steps, "batch_size": 16, "log_every": 1, "progress": False, "sample_every": 0},
    }


def normalised(module: torch.nn.Module) -> list[bool]:
    """For each weight (a parameter of 2+ dimensions) of ``module``: spectrally normalised?"""
    from genfw_plugins.tricks import spectrally_normalised

    done = spectrally_normalised(module)
    return [id(p) in done for p in module.parameters() if p.dim() >= 2]


def test_spectral_norm_reaches_both_critics_of_a_two_critic_variant(dual_registry):
    b = build(resolve(dual({"spectral_norm": {}}), dual_registry))
    for name in ("critic_a", "critic_b"):
        marks = normalised(b.model.modules[name])
        assert marks and all(marks), f"{name}: {marks}"
    assert not any(normalised(b.model.modules["generator"]))


def test_every_critic_trick_reaches_both_critics_and_the_run_trains(dual_registry, tmp_path):
    regs = {"spectral_norm": {}, "instance_noise": {"sigma": 0.1}, "minibatch_stddev": {}, "ema": {}}
    t = Trainer(resolve(dual(regs, steps=3), dual_registry), tmp_path / "run")
    for name in ("critic_a", "critic_b"):
        critic = t.plain[name]
        assert type(critic).__name__ == "NoisyCritic", name  # noise wraps each critic
        assert any(type(m).__name__ == "StdDevFeature" for m in critic.modules()), name
        assert all(normalised(critic.inner)), name
    t.fit()
    assert t.plain["instance_noise"].step.item() == 3 and t.plain["generator_ema"].updates.item() == 3


def test_packing_rebuilds_each_critic(dual_registry):
    b = build(resolve(dual({"packing": {"m": 2}}), dual_registry))
    for name in ("critic_a", "critic_b"):
        critic = b.model.modules[name]
        assert type(critic).__name__ == "PackedCritic" and critic.inner.net[0].in_features == 4  # 2 x 2-D


def test_a_critic_trick_on_a_variant_without_critics_names_those_it_fits(tmp_path, run_cli):
    code, _, err = run_cli(
        "train", "--plugin", "vae", "--regulariser", "spectral_norm", "--steps", "1", "--out", tmp_path / "r"
    )
    [line] = err.strip().splitlines()
    assert code == 2 and "spectral_norm acts on critics; variant 'vae' declares none" in line
    assert "variants it applies to:" in line and "wgan-gp" in line and not (tmp_path / "r").exists()


# --- declared order -----------------------------------------------------------------------------


def cb(name: str, after: tuple[str, ...] = (), before: tuple[str, ...] = ()) -> tuple[str, Callback]:
    cls = type(name, (Callback,), {"after": after, "before": before})
    return name, cls(None)


def test_callbacks_run_in_declared_order_with_config_order_breaking_ties():
    items = [
        cb("ema", after=("spectral_norm",)),
        cb("noise", after=("packing",)),
        cb("spectral_norm"),
        cb("packing"),
    ]
    order = [n for n, _ in declared_order(items)]
    assert order.index("spectral_norm") < order.index("ema") and order.index("packing") < order.index("noise")
    assert order == ["spectral_norm", "ema", "packing", "noise"]  # stable: the earliest ready first
    order = [n for n, _ in declared_order([cb("a"), cb("b", before=("a",))])]
    assert order == ["b", "a"]
    assert [n for n, _ in declared_order([cb("x", after=("absent",))])] == ["x"]  # not attached: ignored
    with pytest.raises(GenfwError, match="callbacks a, b order each other in a cycle"):
        declared_order([cb("a", after=("b",)), cb("b", after=("a",))])


def test_only_callbacks_that_implement_an_event_receive_it():
    seen = []

    class Ender(Callback):
        def on_step_end(self, state: LoopState) -> None:
            seen.append(state.step)

    events = Callbacks([("plain", Callback(None)), ("ender", Ender(None))])
    assert events.wants("on_step_end") and not events.wants("on_phase_end")
    events.step_end(LoopState(7, Modules(), Modules(), {}))
    assert seen == [7]


# --- one spelling, one namespace -----------------------------------------------------------------


def test_a_callback_is_attached_as_a_regulariser_and_replays_from_config_yaml(tmp_path, dual_registry):
    cfg = resolve(dual({"ema": {"decay": 0.5}, "gradient_penalty": {}}), dual_registry)
    assert set(cfg.callbacks) == {"ema"} and set(cfg.regularisers) == {"gradient_penalty"}
    assert list(cfg.to_dict()["regularisers"]) == ["gradient_penalty", "ema"]  # both under one key
    assert cfg.to_dict()["regularisers"]["ema"] == {
        "decay": 0.5,
        "warmup": True,
        "half_life_kimg": None,
        "start": 0,
    }
    t = Trainer(cfg, tmp_path / "run")
    t.fit()
    again = read_run(tmp_path / "run", dual_registry)
    assert again.callbacks["ema"].options == cfg.callbacks["ema"].options and set(again.regularisers) == {
        "gradient_penalty"
    }


def test_a_callback_named_like_a_regulariser_is_refused_at_registration():
    class Clash:
        @genfw.hookimpl
        def genfw_register_callbacks(self, register: Any) -> None:
            register("gradient_penalty", Callback)

    with pytest.raises(GenfwError, match="'gradient_penalty' is registered twice"):
        registry_with(Clash())


def test_an_unknown_remedy_lists_both_kinds(dual_registry):
    with pytest.raises(GenfwError, match=r"unknown remedy 'emma'.*regularisers: .*callbacks: .*ema"):
        resolve(dual({"emma": {}}), dual_registry)


def test_callback_state_rides_in_the_checkpoint_and_resumes(tmp_path, dual_registry):
    counts = []

    class Counter(Callback):
        def __init__(self, options: Any) -> None:
            super().__init__(options)
            self.n = 0

        def on_step_end(self, state: LoopState) -> None:
            self.n += 1
            counts.append(self.n)

        def state_dict(self) -> dict[str, Any]:
            return {"n": self.n}

        def load_state_dict(self, state: Any) -> None:
            self.n = int(state["n"])

    class CounterPlugin:
        @genfw.hookimpl
        def genfw_register_callbacks(self, register: Any) -> None:
            register("counter", Counter)

    registry = registry_with(DualPlugin(), CounterPlugin())
    Trainer(resolve(dual({"counter": {}}, steps=2), registry), tmp_path / "run").fit()
    resumed = Trainer(
        read_run(tmp_path / "run", registry, [("train.steps", 4)]), tmp_path / "run", resume=True
    )
    assert dict(resumed.callbacks)["counter"].n == 2
    resumed.fit()
    assert counts == [1, 2, 3, 4]
