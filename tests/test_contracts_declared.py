"""The plugin API, declared (``genfw.contracts``): registration refuses a component that lacks a
member of its contract, in one line naming it; the core reads what variants declare (players,
phases and what each provides, remedies, refusals, phases per options); refusals list the variants
of the registry a run was resolved with; the contract kit holds variants to their declarations."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, ClassVar

import attrs
import pytest
import torch
from torch import Tensor

import genfw
from genfw import GenfwError, Slot, hookspecs, testing
from genfw.config import resolve
from genfw.contracts import CONTRACTS, PHASE_CONTEXT, Callback, ContextKey, PhaseSpec, Players, Variant
from genfw.plugins import PluginHost
from genfw.registry import PluginInfo
from genfw.train import build
from genfw_plugins.gan import GAN, GANOptions
from genfw_plugins.losses import NonSaturatingLoss

ROOT = Path(__file__).resolve().parents[1]
WHERE = "plugin 'p' (distribution dist-p 1.0)"


def refusal(kind: str, factory: Any) -> str:
    """The one-line error of registering ``factory`` as a ``kind`` named 'x' by plugin 'p'."""
    host = PluginHost()

    class Plugin:
        pass

    def hook(register: Any) -> None:
        register("x", factory)

    setattr(Plugin, hookspecs.KINDS[kind], staticmethod(genfw.hookimpl(hook)))
    host.add(Plugin(), PluginInfo("p", "dist-p", "1.0"))
    with pytest.raises(GenfwError) as info:
        host.registry  # noqa: B018
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{WHERE} registered {kind} 'x': ")
    return message.removeprefix(f"{WHERE} registered {kind} 'x': ")


# --- registration ---------------------------------------------------------------------------------


class NoPlayers:
    """A variant that does not subclass Variant and forgets its players."""

    slots: ClassVar = {}
    phases: ClassVar = {"critic": PhaseSpec()}

    def build(self, ctx: Any) -> Any: ...


class PhasesAsTuple(GAN):
    phases: ClassVar = ("critic", "generator")


class UndocumentedKey(GAN):
    phases: ClassVar = {**GAN.phases, "critic": PhaseSpec({"real", "tea"})}


class DocumentedKey(GAN):
    phases: ClassVar = {
        **GAN.phases,
        "critic": PhaseSpec({"real", "tea"}, extra={"tea": ContextKey("Tensor (B,)", "a cup per example")}),
    }


class PlayersAsNames(GAN):
    players: ClassVar = ("generator", "critic")


class NoRole:
    def critic_loss(self, real_scores: Tensor, fake_scores: Tensor) -> Tensor: ...

    def generator_loss(self, fake_scores: Tensor, real_scores: Tensor | None = None) -> Tensor: ...


class HalfALoss:
    role = "adversarial"

    def critic_loss(self, real_scores: Tensor, fake_scores: Tensor) -> Tensor: ...


class NoPenalty:
    phases = ("critic",)
    needs = ("real",)


class NeedsAsString:
    phases = ("critic",)
    needs = "real"

    def penalty(self, ctx: dict[str, Any]) -> Tensor: ...


class NotACallback:
    def on_step_end(self, step: int, modules: Any) -> None: ...


class NoDensity:
    def sample(self, n: int, *, device: Any, generator: Any = None) -> Tensor: ...


class NotCallable:
    pass


@pytest.mark.parametrize(
    ("kind", "factory", "message"),
    [
        ("variant", NoPlayers, "missing class attribute 'players' (genfw.contracts.Variant)"),
        (
            "variant",
            PhasesAsTuple,
            "class attribute 'phases' must map each phase name to a genfw.contracts.PhaseSpec",
        ),
        (
            "variant",
            UndocumentedKey,
            "phase 'critic' provides 'tea', which is neither a key of genfw.contracts.PHASE_CONTEXT nor "
            "documented in its PhaseSpec.extra (genfw.contracts.Variant)",
        ),
        (
            "variant",
            PlayersAsNames,
            "class attribute 'players' must be a genfw.contracts.Players, not a tuple",
        ),
        ("variant", lambda options: None, "a variant is registered as a class"),
        (
            "loss",
            NoRole,
            "missing class attribute 'role' ('adversarial' or 'reconstruction'), got None "
            "(genfw.contracts.AdversarialLoss or ReconstructionLoss)",
        ),
        ("loss", HalfALoss, "missing method 'generator_loss' (genfw.contracts.AdversarialLoss)"),
        ("regulariser", NoPenalty, "missing method 'penalty' (genfw.contracts.Regulariser)"),
        ("regulariser", NeedsAsString, "class attribute 'needs' must be a tuple of names, not 'real'"),
        ("callback", NotACallback, "a callback is registered as a subclass of genfw.contracts.Callback"),
        ("prior", NoDensity, "missing method 'log_prob' (genfw.contracts.Prior)"),
        ("metric", NotCallable, "missing method '__call__' (genfw.contracts.Metric)"),
        ("dataset", lambda options: None, "a data set is registered as a subclass of genfw.GenDataset"),
    ],
    ids=lambda v: v if isinstance(v, str) and " " not in v else None,
)
def test_a_component_missing_a_member_is_refused_at_registration_naming_it(kind, factory, message):
    assert message in refusal(kind, factory)


def test_what_keeps_its_contract_registers():
    host = PluginHost()

    class Plugin:
        @genfw.hookimpl
        def genfw_register_variants(self, register):
            register("documented", DocumentedKey, options=GANOptions)

        @genfw.hookimpl
        def genfw_register_callbacks(self, register):
            register("nothing", Callback)

    host.add(Plugin(), PluginInfo("p", "dist-p", "1.0"))
    assert host.registry.get("variant", "documented").factory is DocumentedKey
    assert host.registry.names("callback") == ["nothing"]


def test_every_hook_names_its_contract():
    for kind, hook in hookspecs.KINDS.items():
        contract = CONTRACTS[kind].split(" or ")[0]  # losses: AdversarialLoss or ReconstructionLoss
        assert contract in getattr(hookspecs, hook).__doc__, kind


def test_docs_give_every_phase_context_key_with_its_type():
    docs = (ROOT / "docs" / "plugins.md").read_text()
    for key, spec in PHASE_CONTEXT.items():
        row = f"| `{key}` | `{spec.type.replace('|', chr(92) + '|')}` |"
        assert row in docs, row


# --- what the built-ins declare ---------------------------------------------------------------------


def test_players_are_declared(registry):
    def players(name: str) -> Players:
        return registry.get("variant", name).factory.players

    assert players("gan") == Players(generators=("generator",), critics=("critic",))
    # AAE's and WAE's critics judge codes: latent critics, which data-space tricks leave alone.
    assert players("aae").critics == () and players("aae").latent_critics == ("critic", "critic_cat")
    assert players("wae").latent_critics == ("critic",) and players("wae").encoders == ("encoder",)
    assert players("madgan").generators == ("generator",)  # the MultiGenerator of the k networks
    assert players("progan") == Players(generators=("generator",), critics=("critic",))
    assert players("ebgan").critics == ("critic",)  # the autoencoder critic


def test_genfw_list_variant_shows_each_phase_and_the_keys_it_provides(run_cli):
    code, out, _ = run_cli("list", "variant")
    assert code == 0
    gan = out.split("\n  gan - ")[1].split("\n  infogan - ")[0]
    assert "\n      players: generators generator; critics critic\n" in gan
    assert "\n      phase critic: the critic minimises" in gan
    assert "\n          provides: critic, fake, fake_scores, labels, real, real_scores\n" in gan
    assert "\n          provides: critic, fake, fake_scores, features, labels, real\n" in gan
    wae = out.split("\n  wae - ")[1].split("\n  wgan - ")[0]
    assert "\n      phase critic (not with the default options): the latent critic" in wae
    code, out, _ = run_cli("list", "regulariser")
    gp = out.split("\n  gradient_penalty - ")[1].split("\n  historical_averaging - ")[0]
    assert "\n      phases: critic; needs: real, fake, critic, labels\n" in gp
    code, out, _ = run_cli("list", "variant", "--json")
    rows = {r["name"]: r for r in json.loads(out)}
    assert list(rows["aae"]["phases"]) == ["autoencoder", "critic", "encoder"]
    assert rows["gan"]["phases"]["generator"]["provides"]["features"] == PHASE_CONTEXT["features"].type
    assert rows["vsc"]["phases"]["autoencoder"]["provides"]["gamma"] == "Tensor (B, d)"  # its own key
    assert rows["wae"]["phases"]["critic"]["by_default"] is False
    assert rows["aae"]["players"] == {
        "generators": ["generator"],
        "latent_critics": ["critic", "critic_cat"],
        "encoders": ["encoder"],
    }


# --- the resolver reads declarations --------------------------------------------------------------


class Picky(GAN):
    """A GAN that refuses feature matching."""

    @classmethod
    def refuse(cls, remedy: str, options: Any) -> str | None:
        return "its critic has no features worth matching" if remedy == "feature_matching" else None


class QuietGAN(GAN):
    """A GAN with no default metrics, whatever the data set's."""

    default_metrics: ClassVar = ()


class Extra:
    """A plugin adding variants to a private registry."""

    @genfw.hookimpl
    def genfw_register_variants(self, register):
        register("extra_gan", GAN, options=GANOptions)
        register("picky", Picky, options=GANOptions)
        register("quiet", QuietGAN, options=GANOptions)


@pytest.fixture(scope="module")
def extra():
    return testing.registry_with(Extra())


def test_a_variant_refusing_a_remedy_is_honoured_in_one_line(extra):
    with pytest.raises(GenfwError) as info:
        resolve({"variant": "picky", "regularisers": {"feature_matching": {}}}, extra)
    [line] = str(info.value).splitlines()
    assert line.startswith(
        "variant 'picky' refuses regulariser 'feature_matching': its critic has no features worth matching; "
        "variants it applies to: "
    )
    listed = line.split("applies to: ")[1].split(", ")
    assert "extra_gan" in listed and "picky" not in listed  # fits alone cannot know it refuses
    assert list(resolve({"variant": "picky", "regularisers": {"packing": {}}}, extra).callbacks) == [
        "packing"
    ]


def test_builtins_refuse_experience_replay_before_anything_is_built(registry):
    for name, why in (("madgan", "wrong label"), ("progan", "resolution grows during training")):
        with pytest.raises(
            GenfwError, match=f"^variant '{name}' refuses regulariser 'experience_replay': .*{why}"
        ):
            resolve({"variant": name, "regularisers": {"experience_replay": {}}}, registry)


def test_a_refusal_lists_the_variants_of_the_runs_registry(extra, registry):
    assert "extra_gan" not in registry.names("variant")
    # At build time: ebgan's critic phase does not provide real scores (label smoothing's need).
    cfg = resolve({"variant": "ebgan", "regularisers": {"label_smoothing": {}}}, extra)
    assert cfg.registry is extra
    with pytest.raises(GenfwError, match="does not provide") as info:
        build(cfg)
    listed = str(info.value).split("variants it applies to: ")[1].split(", ")
    assert "extra_gan" in listed and "gan" in listed and "ebgan" not in listed
    # At resolve time: a phase the variant does not have.
    with pytest.raises(GenfwError) as info:
        resolve({"variant": "vae", "regularisers": {"feature_matching": {}}}, extra)
    assert "extra_gan" in str(info.value).split("variants it applies to: ")[1].split(", ")


def test_phases_follow_the_options(registry):
    """WAE's latent critic phase exists only with ``penalty: gan``: a critic regulariser is refused at
    resolve time without it, and attaches with it."""
    with pytest.raises(
        GenfwError, match=r"variant 'wae' does not build with its options \(it builds autoencoder\)"
    ):
        resolve({"variant": "wae", "regularisers": {"gradient_penalty": {}}}, registry)
    cfg = resolve(
        {"variant": {"name": "wae", "penalty": "gan"}, "regularisers": {"gradient_penalty": {}}}, registry
    )
    assert list(cfg.regularisers) == ["gradient_penalty"]


def test_variant_default_metrics_replace_the_data_sets(extra):
    assert list(resolve({"variant": "gan", "dataset": "toy2d"}, extra).metrics) == ["mode_coverage"]
    assert list(resolve({"variant": "quiet", "dataset": "toy2d"}, extra).metrics) == []


# --- the contract kit holds variants to their declarations ----------------------------------------


class SwappedPhases(GAN):
    """Declares the generator phase first but builds the critic phase first."""

    phases: ClassVar = {"generator": GAN.phases["generator"], "critic": GAN.phases["critic"]}


class WrongProvides(GAN):
    """Builds its critic phase with fewer keys than it declares."""

    def build(self, ctx: Any) -> Any:
        model = super().build(ctx)
        model.phases[0].provides = frozenset({"real", "fake"})
        return model


class ClaimsFeatures(GAN):
    """Declares (and builds) a critic phase providing an encoder's means, which the adversarial
    step's context cannot hold (it gives every adversarial key a phase declares, ``features`` too)."""

    phases: ClassVar = {**GAN.phases, "critic": PhaseSpec(GAN.phases["critic"].provides | {"mu"})}


class HiddenPlayer(GAN):
    """Trains a module it does not declare as a player."""

    players: ClassVar = Players(generators="generator")


@attrs.define
class Opts(GANOptions):
    latent_dim: int = 4


class Misdeclared:
    @genfw.hookimpl
    def genfw_register_variants(self, register):
        register("swapped", SwappedPhases, options=Opts)
        register("wrong_provides", WrongProvides, options=Opts)
        register("claims_features", ClaimsFeatures, options=Opts)
        register("hidden_player", HiddenPlayer, options=Opts)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("swapped", "it built the phases ['critic', 'generator']; it declares ['generator', 'critic']"),
        (
            "wrong_provides",
            "phase 'critic' is built with provides ['fake', 'real'], but its PhaseSpec declares",
        ),
        ("claims_features", "phase 'critic' declares it provides 'mu', but its context has only"),
        ("hidden_player", "phase 'critic' trains module 'critic', which is not one of the declared players"),
    ],
)
def test_the_contract_kit_holds_a_variant_to_its_declarations(name, message):
    torch.manual_seed(0)
    with pytest.raises(AssertionError, match=re.escape(message)):
        testing.check_variant(name, registry=testing.registry_with(Misdeclared()))


@pytest.mark.parametrize(
    ("name", "options"),
    [("wae", {"penalty": "gan"}), ("began", {"lr_decay": "stall"}), ("aae", {"critics": "joint"})],
)
def test_builtins_keep_their_declarations_with_other_options(registry, name, options):
    torch.manual_seed(0)
    testing.check_variant(name, registry=registry, options=options)


def test_a_loss_slot_role_is_read_from_the_declaration(registry):
    with pytest.raises(GenfwError, match="slot 'loss' of variant 'gan' takes adversarial ones"):
        resolve({"variant": "gan", "loss": "mse"}, registry)
    assert resolve({"variant": "gan", "loss": "hinge"}, registry).slots["loss"].component.factory.role == (
        NonSaturatingLoss.role
    )


def test_a_slot_with_a_role_must_be_a_loss_slot():
    class RoleOnAPrior(GAN):
        slots: ClassVar = {**GAN.slots, "prior": Slot("prior", "normal", role="adversarial")}

    assert "slot 'prior' has role 'adversarial'; only loss slots take one" in refusal("variant", RoleOnAPrior)


def test_variant_base_gives_the_documented_defaults():
    assert Variant.players == Players(generators=("generator",))
    assert Variant.default_dataset is None and Variant.default_metrics is None and Variant.replayable is False
    assert Variant.remedies(None) == {} and Variant.refuse("ema", None) is None
    assert GAN.phases_for(GANOptions()) == ("critic", "generator")
