"""Modern GAN remedies beyond the lecture: gradient and weight regularisers, and top-k updates.

=============== ============ ==================================================================
``r1``          regulariser  ``gamma/2 E ||grad_x D(x)||^2`` on real data (Mescheder et al. 2018)
``r2``          regulariser  the same on the fakes the critic scores
``orthogonal``  regulariser  BigGAN's ``beta ||W W^T * (1 - I)||_F^2`` on every weight (Brock et al. 2019)
``lecam``       regulariser  LeCam: critic scores pulled towards EMA anchors (Tseng et al. 2021)
``top_k``       regulariser  the generator learns from its k best-scored fakes (Sinha et al. 2020)
=============== ============ ==================================================================

Each is a regulariser (:class:`genfw.contracts.Regulariser`) attached with ``--regulariser NAME``.
What they keep across steps (the lazy-regularisation counter, LeCam's anchors, top-k's decay
count) lives in buffers of a module they add to the model (``r1``, ``r2``, ``lecam``, ``top_k``), so
checkpoints and ``--resume`` carry it. Where a counter decides something on the host (whether this
is a penalty step, the current k), a host copy is read from the buffer once, at the first step after
building or resuming, and advanced beside it: no device sync per step.
"""

from __future__ import annotations

from typing import Any

import attrs
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize

import genfw
from genfw import BuildContext, GenfwError, Model
from genfw import validators as check
from genfw.contracts import VariantInfo
from genfw.hookspecs import Register
from genfw.plugins import variants_where
from genfw_plugins._adversarial import AdversarialGAN, generator_term
from genfw_plugins.regularisers import gradient_norms, refuse_batch_norm
from genfw_plugins.tricks import add_module, declares

# --- shared: a step counter in a buffer, read on the host once ------------------------------------


class StepCounter(nn.Module):
    """``steps``: how many steps of a phase a regulariser has seen (a buffer: checkpointed)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))


class HostCount:
    """A counter kept in ``counter.steps`` and mirrored on the host: :meth:`tick` returns the count
    before this step and advances both, reading the buffer only the first time (after building or
    loading a checkpoint), so a step costs no device sync."""

    def __init__(self, counter: StepCounter) -> None:
        self.counter, self.host = counter, None

    def tick(self) -> int:
        if self.host is None:
            self.host = int(self.counter.steps.item())
        n = self.host
        self.host += 1
        self.counter.steps.add_(1)
        return n


# --- R1 and R2 ------------------------------------------------------------------------------------


@attrs.define
class ZeroCentredOptions:
    """Options of the R1 / R2 penalties."""

    # The penalty is gamma/2 E ||grad||^2. 10: Mescheder et al.'s experiments and StyleGAN2 on FFHQ
    # (stylegan2-ada uses 0.01 on CIFAR-10, 1 at 256x256).
    gamma: float = attrs.field(default=10.0, validator=check.positive)
    # Lazy regularisation (Karras et al. 2020): the penalty on every interval-th critic step only,
    # multiplied by interval (StyleGAN2: 16). 1: every step.
    interval: int = attrs.field(default=1, validator=check.at_least(1))


class ZeroCentredPenalty:
    """``gamma/2 E ||grad_x D(x)||^2`` at the data the critic phase scores (``on``: real or fake).

    The gradient of ``critic(x, labels).sum()`` at ``x`` is taken with :func:`gradient_norms` (the
    gradient penalties' own: float32, the fp16 ``grad_scale`` scaled in and out, labels for
    conditional critics). An example is what the context's critic scores: with ``packing`` the
    context holds packs, so the norm is per pack. With ``interval > 1`` the penalty is added on
    critic steps ``0, interval, 2 interval, ...`` only, times ``interval``.
    """

    phases: tuple[str, ...] = ("critic",)
    needs: tuple[str, ...] = ("real", "fake", "critic", "labels")
    name = ""
    on = ""

    def __init__(self, options: ZeroCentredOptions) -> None:
        self.gamma, self.interval = options.gamma, options.interval
        self.count: HostCount | None = None

    @classmethod
    def fits(cls, variant: VariantInfo) -> bool:
        return declares(variant, "critic", cls.needs)

    def setup(self, model: Model, ctx: BuildContext) -> None:
        """Refuse a critic with batch norm (as the gradient penalty does); with lazy regularisation,
        add the step counter as the module ``r1`` (``r2``)."""
        refuse_batch_norm(
            model,
            self.phases,
            self.name,
            "the penalty of Mescheder et al. 2018 is on each example's gradient, as WGAN-GP's",
        )
        if self.interval > 1:
            counter = StepCounter()
            add_module(model, self.name, counter)
            self.count = HostCount(counter)

    def penalty(self, ctx: dict[str, Any]) -> Tensor | None:
        if self.count is not None and self.count.tick() % self.interval:
            return None  # lazy regularisation: not this step
        x: Tensor = ctx[self.on].detach().float()  # (B, ...), packs with packing
        norms = gradient_norms(ctx["critic"], x, ctx.get("labels"), ctx.get("grad_scale"))  # (B,)
        return (0.5 * self.gamma * self.interval) * norms.square().mean()


class R1(ZeroCentredPenalty):
    """R1 (Mescheder et al. 2018): gamma/2 E ||grad_x D(x)||^2 on real data; interval: lazy (Karras et al. 2020)."""

    name, on = "r1", "real"
    needs: tuple[str, ...] = ("real", "critic", "labels")


class R2(ZeroCentredPenalty):
    """R2 (Mescheder et al. 2018): gamma/2 E ||grad_x D(x)||^2 on the fakes; interval: lazy (Karras et al. 2020)."""

    name, on = "r2", "fake"
    needs: tuple[str, ...] = ("fake", "critic", "labels")


# --- orthogonal regularisation (BigGAN) ------------------------------------------------------------

#: Phases whose trained modules orthogonal regularisation may act on.
ORTHO_PHASES = ("generator", "critic", "autoencoder", "encoder")


def orthogonality(w: Tensor, transposed: bool = False) -> Tensor:
    """``||M M^T * (1 - I)||_F^2`` for a weight ``w`` as the matrix ``M (out, -1)`` (one row per
    output unit; ``transposed``: a transposed convolution's ``(in, out, ...)`` weight, whose
    output channels are its second dimension), in float32."""
    m = (w.transpose(0, 1) if transposed else w).reshape(w.shape[1] if transposed else w.shape[0], -1)
    m = m.float()
    gram = m @ m.T  # (out, out)
    return (gram - torch.diag_embed(gram.diagonal())).square().sum()


def regularised_weights(module: nn.Module) -> list[tuple[Tensor, bool]]:
    """Every weight of ``module`` (a parameter with two or more dimensions), each once, with
    whether it is a transposed convolution's. A spectrally normalised weight is its unnormalised
    original (the parameter the optimiser steps), as in BigGAN."""
    transposed: set[int] = set()
    for layer in module.modules():
        if isinstance(layer, nn.modules.conv._ConvTransposeNd):
            if parametrize.is_parametrized(layer, "weight"):
                transposed.add(id(layer.parametrizations.weight.original))
            else:  # the older spectral-norm hook keeps the parameter as weight_orig
                transposed.add(id(getattr(layer, "weight_orig", layer.weight)))
    return [(p, id(p) in transposed) for p in module.parameters() if p.dim() >= 2 and p.requires_grad]


@attrs.define
class OrthogonalOptions:
    """Options of BigGAN's orthogonal regularisation."""

    beta: float = attrs.field(default=1e-4, validator=check.positive)  # the paper's 1e-4
    # The phases whose players' weights are regularised: generator (G, the paper's choice);
    # add critic for D (BigGAN-PyTorch's D_ortho); autoencoder/encoder for autoencoders.
    phases: list[str] = attrs.field(
        factory=lambda: ["generator"], validator=check.each(check.one_of(*ORTHO_PHASES))
    )


class Orthogonal:
    """BigGAN's orthogonal regularisation (Brock et al. 2019, section 3.1).

    ``beta * sum_W ||W W^T * (1 - I)||_F^2`` over every weight ``W`` (reshaped to ``(out, -1)``)
    of the modules each chosen phase trains, added to that phase's objective. BigGAN-PyTorch
    (``utils.ortho``) adds ``s * 2 (W W^T * (1 - I)) W`` to each weight's gradient instead: the
    gradient of this penalty with ``beta = s / 2`` (tested), so its ``G_ortho`` ``s`` is ``beta = s/2``
    here.
    """

    phases: tuple[str, ...] = ORTHO_PHASES
    needs: tuple[str, ...] = ()

    def __init__(self, options: OrthogonalOptions) -> None:
        self.beta = options.beta
        self.phases = tuple(dict.fromkeys(options.phases))  # the chosen ones: attached there only
        self.weights: dict[str, list[tuple[Tensor, bool]]] = {}

    @staticmethod
    def fits(variant: VariantInfo) -> bool:
        return bool(set(ORTHO_PHASES) & set(variant.phases))

    def setup(self, model: Model, ctx: BuildContext) -> None:
        """The weights of the modules each chosen phase trains, after every callback changed them;
        a chosen phase the model does not have is refused in one line."""
        built = {p.name: p for p in model.phases}
        missing = [p for p in self.phases if p not in built]
        if missing:
            raise GenfwError(
                f"orthogonal: phases {', '.join(missing)} were chosen, but this model has phases "
                f"{', '.join(built)}; pick among those with --regulariser.orthogonal.phases"
            )
        for name in self.phases:
            unique: dict[int, tuple[Tensor, bool]] = {}
            for module in built[name].modules:
                for w, t in regularised_weights(model.modules[module]):
                    unique.setdefault(id(w), (w, t))
            self.weights[name] = list(unique.values())

    def penalty(self, ctx: dict[str, Any]) -> Tensor | None:
        weights = self.weights.get(ctx["phase"])
        if not weights:
            return None
        # float32 even under autocast, whose fp16 matmul would square the weights in half precision
        with torch.autocast(weights[0][0].device.type, enabled=False):
            return self.beta * sum(orthogonality(w, t) for w, t in weights)


# --- LeCam ----------------------------------------------------------------------------------------


class ScoreAnchors(nn.Module):
    """LeCam's anchors: zero-debiased EMAs of the mean real and fake critic scores (buffers)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("real_biased", torch.zeros(()))
        self.register_buffer("fake_biased", torch.zeros(()))
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def update(self, real: Tensor, fake: Tensor, decay: float) -> tuple[Tensor, Tensor]:
        """Fold in this step's means and return the anchors ``(alpha_R, alpha_F)``:
        ``b <- d b + (1 - d) mean`` from ``b = 0``, then ``alpha = b / (1 - d^t)`` after ``t``
        updates (TensorFlow's ``assign_moving_average(..., zero_debias=True)``, as the authors')."""
        self.real_biased.lerp_(real.to(self.real_biased.dtype), 1.0 - decay)
        self.fake_biased.lerp_(fake.to(self.fake_biased.dtype), 1.0 - decay)
        self.updates.add_(1)
        debias = 1.0 - torch.full((), decay, device=self.updates.device).pow(self.updates)
        return self.real_biased / debias, self.fake_biased / debias


@attrs.define
class LeCamOptions:
    """Options of the LeCam regulariser."""

    # lambda: 0.3, the authors' BigGAN runs on CIFAR-10/100 (their StyleGAN2 runs use other scales).
    weight: float = attrs.field(default=0.3, validator=check.positive)
    # Decay of the anchors' EMAs (the paper's and the authors' StyleGAN2 code's 0.99).
    decay: float = attrs.field(default=0.99, validator=check.in_interval(0, 1, high_open=True))
    # true: only scores on the wrong side of the other anchor are pulled, relu(D(x) - alpha_F)^2 and
    # relu(alpha_R - D(G(z)))^2, as both of the authors' implementations; false: the paper's R_LC.
    relu: bool = True


class LeCam:
    """LeCam regularisation (Tseng et al. 2021).

    ``lambda (E (D(x) - alpha_F)^2 + E (D(G(z)) - alpha_R)^2)`` on the critic phase's raw scores,
    ``alpha_R`` and ``alpha_F`` the EMAs of the mean real and fake scores (module ``lecam``). As in
    the authors' code, each critic step first folds its own (detached) means into the EMAs, then
    uses the updated anchors; with ``relu`` (their code's form) each squared term is taken only
    where it is positive. On several processes the means are averaged over them first (the
    authors' TensorFlow variables aggregate by mean), so every process keeps the same anchors.
    """

    phases: tuple[str, ...] = ("critic",)
    needs: tuple[str, ...] = ("real_scores", "fake_scores")

    def __init__(self, options: LeCamOptions) -> None:
        self.weight, self.decay, self.relu = options.weight, options.decay, options.relu

    @staticmethod
    def fits(variant: VariantInfo) -> bool:
        return declares(variant, "critic", LeCam.needs)

    def setup(self, model: Model, ctx: BuildContext) -> None:
        self.anchors = ScoreAnchors()
        add_module(model, "lecam", self.anchors)

    def penalty(self, ctx: dict[str, Any]) -> Tensor:
        real: Tensor = ctx["real_scores"].float()  # (B,)
        fake: Tensor = ctx["fake_scores"].float()  # (B,)
        means = torch.stack([real.detach().mean(), fake.detach().mean()])  # (2,)
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized():  # one pair of anchors for every process
            dist.all_reduce(means)
            means = means / dist.get_world_size()
        alpha_r, alpha_f = self.anchors.update(means[0], means[1], self.decay)
        above, below = real - alpha_f, alpha_r - fake
        if self.relu:
            above, below = F.relu(above), F.relu(below)
        return self.weight * (above.square().mean() + below.square().mean())


# --- top-k ----------------------------------------------------------------------------------------


class TopKState(StepCounter):
    """Top-k's state (buffers): ``steps``, the generator steps taken, and ``k``, the k last used."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("k", torch.zeros((), dtype=torch.long))


def top_k_size(batch: int, decays: int, gamma: float, nu: float) -> int:
    """``k = int(max(gamma^decays, nu) * B)``, at least 1: all ``B`` at first, times ``gamma`` per
    epoch-equivalent, never below ``nu B`` (as the reference implementation's ``topk_rate``)."""
    return max(1, int(max(gamma**decays, nu) * batch))


@attrs.define
class TopKOptions:
    """Options of top-k training."""

    gamma: float = attrs.field(default=0.99, validator=check.in_interval(0, 1, low_open=True))  # decay
    nu: float = attrs.field(default=0.5, validator=check.in_interval(0, 1, low_open=True))  # min k / B
    # Generator steps per decay. The paper decays once an epoch, N / B steps (toy2d: 100,000 / 64 =
    # 1,563; digits: 28): the regulariser is built without the data set's size, so say it here.
    epoch_steps: int = attrs.field(default=1000, validator=check.at_least(1))


def top_k_fits(variant: VariantInfo) -> bool:
    """An adversarial variant whose generator objective is its adversarial loss's generator term
    alone (no ``generator_objective``/``generator_extra`` of its own), with a loss slot of role
    adversarial and a generator phase that gives the fakes' scores."""
    cls, slot = variant.factory, getattr(variant.factory, "slots", {}).get("loss")
    return (
        isinstance(cls, type)
        and issubclass(cls, AdversarialGAN)
        and cls.generator_objective is AdversarialGAN.generator_objective
        and cls.generator_extra is AdversarialGAN.generator_extra
        and slot is not None
        and slot.role == "adversarial"
        and declares(variant, "generator", TopK.needs)
    )


class TopK:
    """Top-k training (Sinha et al. 2020): the generator's update uses only the ``k`` fakes the
    critic scores highest (most real).

    The generator's objective becomes the run's adversarial loss's generator term on the top ``k``
    fake scores (``replaces_loss``: the phase's own objective, that term on all ``B``, is logged as
    ``replaced_loss``); relativistic losses compare them with the critic's scores of the real batch.
    ``k = int(max(gamma^e, nu) B)``, ``e`` the epoch-equivalents (``epoch_steps`` generator steps)
    so far. State: module ``top_k`` (``steps``, ``k``).
    """

    phases: tuple[str, ...] = ("generator",)
    needs: tuple[str, ...] = ("fake_scores", "real", "critic", "labels")
    replaces_loss = True

    def __init__(self, options: TopKOptions) -> None:
        self.options = options
        self.count: HostCount | None = None

    fits = staticmethod(top_k_fits)

    def setup(self, model: Model, ctx: BuildContext) -> None:
        """Refuse a variant whose generator objective is more than its loss's generator term (its
        extra terms would be dropped), judged from the variant that built the generator phase; build
        the run's adversarial loss; add the state module ``top_k``."""
        registry = ctx and ctx.registry
        applies = f"variants it applies to: {variants_where(top_k_fits, registry)}"
        for phase in model.phases:
            if phase.name not in self.phases:
                continue
            owner = getattr(phase.step, "__self__", None)  # the variant whose method the phase runs
            cls = type(owner)
            if owner is None or not top_k_fits(VariantInfo(cls.__name__, cls)):
                whose = f"{cls.__name__}'s" if owner is not None else "this variant's"
                raise GenfwError(
                    f"top_k replaces the generator's objective by its adversarial loss on the k best fakes, "
                    f"which would drop what {whose} generator phase adds; {applies}"
                )
        loss = ctx.components.get("loss") if ctx is not None else None
        if loss is None or getattr(loss.component.factory, "role", None) != "adversarial":
            raise GenfwError(f"top_k needs an adversarial loss slot; {applies}")
        self.loss = loss.build()
        self.state = TopKState()
        add_module(model, "top_k", self.state)
        self.count = HostCount(self.state)

    def k(self, batch: int, step: int) -> int:
        """The k of generator step ``step`` (0-based) for ``batch`` fake scores."""
        o = self.options
        return top_k_size(batch, step // o.epoch_steps, o.gamma, o.nu)

    def penalty(self, ctx: dict[str, Any]) -> Tensor:
        scores: Tensor = ctx["fake_scores"]  # (B,), one per pack with packing
        assert self.count is not None, "setup() runs before the first step"
        k = self.k(scores.shape[0], self.count.tick())
        self.state.k.fill_(k)
        best = scores.topk(k).values  # (k,), the most real first

        def real_scores() -> Tensor:
            return ctx["critic"](ctx["real"], ctx["labels"])

        return generator_term(self.loss, best, real_scores)


# --- registration ---------------------------------------------------------------------------------


@genfw.hookimpl
def genfw_register_regularisers(register: Register) -> None:
    register("r1", R1, options=ZeroCentredOptions)
    register("r2", R2, options=ZeroCentredOptions)
    register(
        "orthogonal",
        Orthogonal,
        options=OrthogonalOptions,
        help="BigGAN's orthogonal regularisation (Brock et al. 2019): beta ||W W^T * (1 - I)||_F^2 per weight.",
    )
    register(
        "lecam",
        LeCam,
        options=LeCamOptions,
        help="LeCam (Tseng et al. 2021): critic scores pulled towards EMA anchors of the other side's.",
    )
    register(
        "top_k",
        TopK,
        options=TopKOptions,
        help="Top-k training (Sinha et al. 2020): G's loss on the k best-scored fakes, k annealed.",
    )


__all__ = [
    "R1",
    "R2",
    "HostCount",
    "LeCam",
    "Orthogonal",
    "ScoreAnchors",
    "StepCounter",
    "TopK",
    "orthogonality",
    "regularised_weights",
    "top_k_size",
]
