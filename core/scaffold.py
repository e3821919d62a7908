"""``genfw new-plugin NAME --kind KIND``: a ready third-party plugin package.

The package it writes installs with ``pip install -e`` and passes its own tests at once:

    genfw-NAME/
        pyproject.toml            the ``genfw`` entry point ``NAME = "genfw_name"``
        README.md                 install, test, use
        .gitignore                build/, dist/, *.egg-info/, __pycache__/, .venv/
        src/genfw_name/__init__.py  one documented component and its registration hook
        tests/test_name.py        a check of its formula and genfw's contract (genfw.testing)

``NAME`` keeps the case it is typed in where Python allows it: the component's name, the entry
point, the distribution and the class (``MyLoss`` gives ``--loss MyLoss``, ``genfw-MyLoss`` and
``class MyLoss``); the module and the test file are in lower case (``genfw_myloss``), as PEP 8 has
module names.

Each kind's template is a small but working component (a loss, a prior, ...) meant to be edited
into the author's own; its test already holds it to the contract of its kind.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from genfw.errors import GenfwError, choices

NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")

# --- the component templates, by kind ------------------------------------------------------------
# {name} is the component name, {cls} its class, {module} the import name, {title} a readable name.

LOSS = '''
@attrs.define
class Options:
    """Options of the ``{name}`` loss (validated from the config: ``--loss.weight 2``)."""

    weight: float = attrs.field(default=1.0, validator=check.positive)  # scales both objectives


class {cls}:
    """{title}: a non-saturating logistic GAN loss to start from; put your objective here."""

    # "adversarial": critic_loss / generator_loss on raw critic scores (B,).
    # "reconstruction" would instead be __call__(x_hat, x) -> (B,) per-example costs.
    role = "adversarial"
    # Set to True if generator_loss needs the real scores (a relativistic loss).
    needs_real_scores = False

    def __init__(self, options: Options) -> None:
        self.weight = options.weight

    def critic_loss(self, real_scores: Tensor, fake_scores: Tensor) -> Tensor:
        """Minimised by the critic: ``weight * (-E log sigmoid(r) - E log(1 - sigmoid(f)))``."""
        return self.weight * (F.softplus(-real_scores).mean() + F.softplus(fake_scores).mean())

    def generator_loss(self, fake_scores: Tensor, real_scores: Tensor | None = None) -> Tensor:
        """Minimised by the generator: ``weight * -E log sigmoid(f)``."""
        return self.weight * F.softplus(-fake_scores).mean()


@genfw.hookimpl
def genfw_register_losses(register: Register) -> None:
    """Called once by genfw; registers the loss under its name with its options class."""
    register("{name}", {cls}, options=Options)
'''

LOSS_TEST = """
def test_values_by_hand():
    loss = plugin.{cls}(plugin.Options(weight=2.0))
    zero = torch.zeros(3)
    # softplus(0) = log 2 on each side
    assert loss.critic_loss(zero, zero).item() == pytest.approx(2 * 2 * math.log(2))
    assert loss.generator_loss(zero).item() == pytest.approx(2 * math.log(2))


def test_keeps_the_loss_contract():
    check_loss("{name}", registry=registry_with(plugin))
"""

PRIOR = '''
@attrs.define
class Options:
    """Options of the ``{name}`` prior (``--prior.scale 0.5``)."""

    scale: float = attrs.field(default=1.0, validator=check.positive)  # standard deviation


class {cls}:
    """{title}: an isotropic Gaussian N(0, scale^2 I) to start from; put your distribution here."""

    def __init__(self, options: Options, *, dim: int) -> None:
        if dim <= 0:
            raise ValueError(f"a prior needs a positive dimension, got dim={{dim}}")
        self.dim, self.scale = dim, options.scale

    @property
    def variance(self) -> float:
        """Per-coordinate variance (kernel scales of the WAE use it)."""
        return self.scale**2

    def sample(
        self, n: int, *, device: torch.device | str, generator: torch.Generator | None = None
    ) -> Tensor:
        """``(n, dim)`` codes; reproducible for a given ``generator``."""
        return self.scale * torch.randn(n, self.dim, device=device, generator=generator)

    def log_prob(self, z: Tensor) -> Tensor:
        """``(n, dim) -> (n,)``; raise NotImplementedError where there is no density."""
        return (-0.5 * (z / self.scale).square() - math.log(self.scale) - 0.5 * math.log(2 * math.pi)).sum(-1)

    def kl_from_normal(self, mu: Tensor, logvar: Tensor) -> Tensor:
        """KL(N(mu, exp(logvar)) || N(0, scale^2)) per row, for the VAE (delete if none exists)."""
        s2 = self.scale**2
        return 0.5 * ((mu.square() + logvar.exp()) / s2 - 1.0 - logvar + math.log(s2)).sum(-1)


@genfw.hookimpl
def genfw_register_priors(register: Register) -> None:
    """Called once by genfw; genfw builds the prior as ``{cls}(options, dim=latent_dim)``."""
    register("{name}", {cls}, options=Options)
'''

PRIOR_TEST = """
def test_values_by_hand():
    prior = plugin.{cls}(plugin.Options(scale=2.0), dim=1)
    zero = torch.zeros(1, 1)
    # log N(0; 0, 4) = -log 2 - log(2 pi) / 2
    assert prior.log_prob(zero).item() == pytest.approx(-math.log(2) - 0.5 * math.log(2 * math.pi))
    # KL(N(0, 4) || N(0, 4)) = 0
    assert prior.kl_from_normal(zero, torch.full((1, 1), math.log(4.0))).item() == pytest.approx(0.0)


def test_keeps_the_prior_contract():
    check_prior("{name}", registry=registry_with(plugin))
"""

REGULARISER = '''
@attrs.define
class Options:
    """Options of the ``{name}`` regulariser (``--regulariser.{name}.weight 0.01``)."""

    weight: float = attrs.field(default=0.001, validator=check.non_negative)


class {cls}:
    """{title}: a drift penalty weight * E D(x)^2 on the critic (as in ProGAN) to start from."""

    phases = ("critic",)  # the phases it can attach to
    needs = ("real_scores",)  # the context keys it reads (genfw checks the phase provides them)

    def __init__(self, options: Options) -> None:
        self.weight = options.weight

    def penalty(self, ctx: dict[str, Any]) -> Tensor | None:
        """Added to the phase's objective; return None for a pure constraint (see after_step)."""
        return self.weight * ctx["real_scores"].square().mean()

    # def after_step(self, modules: list[torch.nn.Module]) -> None:
    #     """Optional: runs after the phase's optimiser step (e.g. clip weights)."""


@genfw.hookimpl
def genfw_register_regularisers(register: Register) -> None:
    """Called once by genfw; registers the regulariser under its name with its options class."""
    register("{name}", {cls}, options=Options)
'''

REGULARISER_TEST = """
def test_values_by_hand():
    reg = plugin.{cls}(plugin.Options(weight=0.5))
    assert reg.penalty({{"real_scores": torch.tensor([1.0, -3.0])}}).item() == pytest.approx(0.5 * 5.0)


def test_keeps_the_regulariser_contract():
    check_regulariser("{name}", registry=registry_with(plugin))
"""

METRIC = '''
@attrs.define
class Options:
    """Options of the ``{name}`` metric (``--metric.{name}.num_samples 500``)."""

    num_samples: int = attrs.field(default=1000, validator=check.at_least(2))


class {cls}:
    """{title}: distance between the means of generated and real samples, to start from."""

    def __init__(self, options: Options) -> None:
        self.num_samples = options.num_samples

    def __call__(self, ctx: genfw.EvalContext) -> dict[str, float]:
        """``ctx.sample(n)`` draws generated samples, ``ctx.real(n)`` real ones (CPU, float32)."""
        fake, real = ctx.sample(self.num_samples), ctx.real(self.num_samples)
        gap = (fake.flatten(1).mean(0) - real.flatten(1).mean(0)).norm()
        return {{"mean_gap": float(gap)}}


@genfw.hookimpl
def genfw_register_metrics(register: Register) -> None:
    """Called once by genfw; registers the metric under its name with its options class."""
    register("{name}", {cls}, options=Options)
'''

METRIC_TEST = """
def test_values_by_hand():
    metric = plugin.{cls}(plugin.Options(num_samples=2))
    ctx = genfw.EvalContext(
        sample=lambda n: torch.tensor([[3.0, 0.0], [3.0, 0.0]]),
        real=lambda n: torch.zeros(n, 2),
        dataset=None,
    )
    assert metric(ctx) == {{"mean_gap": pytest.approx(3.0)}}


def test_keeps_the_metric_contract():
    check_metric("{name}", registry=registry_with(plugin))
"""

NETWORK = '''
@attrs.define
class Options:
    """Options of the ``{name}`` {kind} (``--{kind}.hidden 128``)."""

    hidden: int = attrs.field(default=128, validator=check.at_least(1))


class {cls}(nn.Module):
    """{title}: a two-layer MLP {kind}, labels fed as one-hot vectors; put your network here."""

    def __init__(self, in_dim: int, out_shape: tuple[int, ...], hidden: int, num_classes: int, tanh: bool):
        super().__init__()
        self.out_shape, self.num_classes = out_shape, num_classes
        self.net = nn.Sequential(
            nn.Linear(in_dim + num_classes, hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden, math.prod(out_shape)),
            nn.Tanh() if tanh else nn.Identity(),
        )

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        h = x.flatten(1)
        if self.num_classes:
            h = torch.cat([h, F.one_hot(y, self.num_classes).to(h.dtype)], dim=1)
        return self.net(h).view(-1, *self.out_shape)


{factory}


@genfw.hookimpl
def genfw_register_{plural}(register: Register) -> None:
    """Called once by genfw; registers the network under its name with its options class."""
    register("{name}", build, options=Options)
'''

NETWORK_FACTORIES = {
    "generator": '''def build(
    options: Options,
    *,
    latent_dim: int,
    out_shape: tuple[int, ...],
    num_classes: int,
) -> {cls}:
    """genfw calls this with the code size and the data's shape; images come out in [-1, 1]."""
    images = len(out_shape) == 3
    return {cls}(latent_dim, tuple(out_shape), options.hidden, num_classes, tanh=images)''',
    "critic": '''def build(
    options: Options,
    *,
    in_shape: tuple[int, ...],
    out_dim: int,
    num_classes: int,
) -> {cls}:
    """genfw calls this with the data's shape; the critic returns raw scores (B, out_dim)."""
    return {cls}(math.prod(in_shape), (out_dim,), options.hidden, num_classes, tanh=False)''',
    "encoder": '''def build(
    options: Options,
    *,
    in_shape: tuple[int, ...],
    out_dim: int,
    num_classes: int,
) -> {cls}:
    """genfw calls this with the data's shape; the encoder returns codes (B, out_dim)."""
    return {cls}(math.prod(in_shape), (out_dim,), options.hidden, num_classes, tanh=False)''',
}

NETWORK_TEST = """
def test_shapes_by_hand():
    net = plugin.build(plugin.Options(hidden=8), {call})
    assert net({input}, torch.tensor([0, 1, 2, 0])).shape == {shape}


def test_keeps_the_{kind}_contract():
    check_network("{kind}", "{name}", registry=registry_with(plugin))
"""

NETWORK_CALLS = {
    "generator": ("latent_dim=5, out_shape=(1, 8, 8), num_classes=3", "torch.randn(4, 5)", "(4, 1, 8, 8)"),
    "critic": ("in_shape=(1, 8, 8), out_dim=1, num_classes=3", "torch.randn(4, 1, 8, 8)", "(4, 1)"),
    "encoder": ("in_shape=(1, 8, 8), out_dim=6, num_classes=3", "torch.randn(4, 1, 8, 8)", "(4, 6)"),
}

DATASET = '''
@attrs.define
class Options:
    """Options of the ``{name}`` data set (``--dataset.size 2000``)."""

    size: int = attrs.field(default=1000, validator=check.at_least(1))
    noise: float = attrs.field(default=0.05, validator=check.non_negative)
    seed: int = 0


class {cls}(genfw.GenDataset):
    """{title}: points on the unit circle with Gaussian noise, to start from; load your data here."""

    shape = (2,)
    kind = "points"  # "image" for (C, H, W) tensors in [-1, 1]
    num_classes = 0  # labels are -1 when there are none

    def __init__(self, options: Options) -> None:
        g = torch.Generator().manual_seed(options.seed)
        angle = 2 * math.pi * torch.rand(options.size, generator=g)
        noise = options.noise * torch.randn(options.size, 2, generator=g)
        x = torch.stack([angle.cos(), angle.sin()], 1) + noise
        # In memory: (X (N, *shape) float, Y (N,) long); genfw batches by indexing.
        self.tensors = (x, torch.full((options.size,), -1, dtype=torch.long))


@genfw.hookimpl
def genfw_register_datasets(register: Register) -> None:
    """Called once by genfw; registers the data set under its name with its options class."""
    register("{name}", {cls}, options=Options)
'''

DATASET_TEST = """
def test_values_by_hand():
    data = plugin.{cls}(plugin.Options(size=50, noise=0.0))
    x, y = data[0]
    assert len(data) == 50 and y == -1
    assert x.norm().item() == pytest.approx(1.0)


def test_keeps_the_dataset_contract():
    check_dataset("{name}", registry=registry_with(plugin))
"""

VARIANT = '''
@attrs.define
class Options:
    """Options of the ``{name}`` variant (``--plugin.latent_dim 8``)."""

    latent_dim: int = attrs.field(default=16, validator=check.at_least(1))
    lr: float = attrs.field(default=2e-4, validator=check.positive)


class {cls}(contracts.Variant):
    """{title}: a two-phase adversarial recipe to start from; put your training scheme here."""

    # What genfw reads before building (every member is documented in genfw.contracts.Variant,
    # with the others you may declare: presets, default_dataset, remedies, refuse, ...).
    # The components it is built from; each is swappable on the command line (--prior laplace).
    slots: ClassVar[dict[str, Slot]] = {{
        "generator": Slot("generator", "mlp"),
        "critic": Slot("critic", "mlp"),
        "prior": Slot("prior", "normal"),
        "loss": Slot("loss", "non_saturating", role="adversarial"),
    }}
    # Which modules of the model play which part (tricks such as spectral_norm act on the critics).
    players: ClassVar[contracts.Players] = contracts.Players(generators="generator", critics="critic")
    # The phases build makes, in order, with the context keys each gives regularisers
    # (genfw.contracts.PHASE_CONTEXT documents every key).
    phases: ClassVar[dict[str, contracts.PhaseSpec]] = {{
        "critic": contracts.PhaseSpec(
            {{"real", "fake", "critic", "labels", "real_scores", "fake_scores"}},
            help="the critic scores a real batch against as many fakes",
        ),
        "generator": contracts.PhaseSpec(help="the generator makes fakes the critic scores as real"),
    }}
    options: Options

    def build(self, ctx: genfw.BuildContext) -> Model:
        """Build the networks for the data's shape and return the model's modules and phases."""
        o = self.options
        generator = ctx["generator"].build(latent_dim=o.latent_dim, out_shape=ctx.data.shape, num_classes=0)
        critic = ctx["critic"].build(in_shape=ctx.data.shape, out_dim=1, num_classes=0)
        self.prior = ctx["prior"].build(dim=o.latent_dim)
        self.loss = ctx["loss"].build()
        optim = Optim("adam", o.lr, (0.5, 0.999))
        provides = self.phases["critic"].provides
        return Model(
            modules={{"generator": generator, "critic": critic}},
            phases=[
                Phase("critic", ("critic",), self.critic_step, optim, provides=provides),
                Phase("generator", ("generator",), self.generator_step, optim, fresh_batch=False),
            ],
            sample=self.sample,
        )

    def critic_step(self, batch: Batch, m: Modules) -> PhaseOutput:
        """The critic's objective on a real batch and as many generated samples."""
        with torch.no_grad():
            fake = self.sample(m, len(batch))
        real_scores, fake_scores = m.critic(batch.x).squeeze(1), m.critic(fake).squeeze(1)
        context = {{
            "real": batch.x,
            "fake": fake,
            "critic": lambda x, y=None: m.critic(x).squeeze(1),
            "labels": None,
            "real_scores": real_scores,
            "fake_scores": fake_scores,
        }}
        return PhaseOutput(self.loss.critic_loss(real_scores, fake_scores), context=context)

    def generator_step(self, batch: Batch, m: Modules) -> PhaseOutput:
        fake_scores = m.critic(self.sample(m, len(batch))).squeeze(1)
        real_scores = m.critic(batch.x).squeeze(1) if getattr(self.loss, "needs_real_scores", False) else None
        return PhaseOutput(self.loss.generator_loss(fake_scores, real_scores=real_scores))

    def sample(self, m: Modules, n: int, y: Tensor | None = None) -> Tensor:
        return m.generator(self.prior.sample(n, device=device_of(m.generator)))


@genfw.hookimpl
def genfw_register_variants(register: Register) -> None:
    """Called once by genfw; `genfw train --plugin {name}` trains it."""
    register("{name}", {cls}, options=Options)
'''

VARIANT_TEST = """
def test_two_phases():
    assert list(plugin.{cls}.phases) == ["critic", "generator"]


def test_keeps_the_variant_contract():
    check_variant("{name}", registry=registry_with(plugin))
"""

IMPORTS = {
    "loss": "import attrs\nimport genfw\nimport torch.nn.functional as F\n"
    "from genfw import validators as check\nfrom genfw.hookspecs import Register\nfrom torch import Tensor",
    "prior": "import math\n\nimport attrs\nimport genfw\nimport torch\n"
    "from genfw import validators as check\nfrom genfw.hookspecs import Register\nfrom torch import Tensor",
    "regulariser": "from typing import Any\n\nimport attrs\nimport genfw\n"
    "from genfw import validators as check\nfrom genfw.hookspecs import Register\nfrom torch import Tensor",
    "metric": "import attrs\nimport genfw\nfrom genfw import validators as check\nfrom genfw.hookspecs import Register",
    "network": "import math\n\nimport attrs\nimport genfw\nimport torch\nimport torch.nn.functional as F\n"
    "from genfw import validators as check\nfrom genfw.hookspecs import Register\nfrom torch import Tensor, nn",
    "dataset": "import math\n\nimport attrs\nimport genfw\nimport torch\n"
    "from genfw import validators as check\nfrom genfw.hookspecs import Register",
    "variant": "from typing import ClassVar\n\nimport attrs\nimport genfw\nimport torch\n"
    "from genfw import Batch, Model, Modules, Optim, Phase, PhaseOutput, Slot, contracts, device_of\n"
    "from genfw import validators as check\nfrom genfw.hookspecs import Register\nfrom torch import Tensor",
}

TEMPLATES = {
    "loss": (LOSS, LOSS_TEST, "check_loss", "--plugin gan --loss {name}"),
    "prior": (PRIOR, PRIOR_TEST, "check_prior", "--plugin vae --prior {name}"),
    "regulariser": (REGULARISER, REGULARISER_TEST, "check_regulariser", "--plugin gan --regulariser {name}"),
    "metric": (METRIC, METRIC_TEST, "check_metric", "--plugin gan --dataset toy2d --metric {name}"),
    "generator": (NETWORK, NETWORK_TEST, "check_network", "--plugin gan --generator {name}"),
    "critic": (NETWORK, NETWORK_TEST, "check_network", "--plugin gan --critic {name}"),
    "encoder": (NETWORK, NETWORK_TEST, "check_network", "--plugin vae --encoder {name}"),
    "dataset": (DATASET, DATASET_TEST, "check_dataset", "--plugin gan --dataset {name}"),
    "variant": (VARIANT, VARIANT_TEST, "check_variant", "--plugin {name}"),
}
KINDS = tuple(TEMPLATES)

PYPROJECT = """[build-system]
requires = ["setuptools>=77"]
build-backend = "setuptools.build_meta"

[project]
name = "{dist}"
version = "0.1.0"
description = "{title}: a genfw {kind} plugin."
readme = "README.md"
requires-python = ">=3.10"
dependencies = ["genfw"]

[project.optional-dependencies]
test = ["pytest>=8"]

# The plugin mechanism: genfw imports the module named here and calls its hook implementations.
# `genfw plugins` lists it under the name on the left.
[project.entry-points.genfw]
{name} = "{module}"

[tool.setuptools.packages.find]
where = ["src"]

[tool.pytest.ini_options]
testpaths = ["tests"]

[tool.ruff]
line-length = 110

[tool.ruff.lint.isort]
known-first-party = ["{module}"]
known-third-party = ["genfw"]
"""

MODULE = '''"""{title}: a genfw {kind} plugin, registered as the {kind} ``{name}``.

Written by ``genfw new-plugin``: replace the formulas with yours and keep the tests green.
Use it with::

    genfw train {usage}
"""

from __future__ import annotations

{imports}

__version__ = "0.1.0"


{body}'''

TEST = '''"""{title}: its own values, and genfw's contract for a {kind} (genfw.testing)."""

from __future__ import annotations

import math

import genfw
import pytest
import torch
from genfw.testing import {check}, registry_with

import {module} as plugin

# The imports above are used by the tests you will add; keep linters quiet about them.
_ = (genfw, math, pytest, torch)

{body}'''

GITIGNORE = """build/
dist/
*.egg-info/
__pycache__/
.venv/
"""

README = """# {dist}

{title}: a [genfw](https://pypi.org/project/genfw/) {kind} plugin, registered as the {kind} `{name}`.

## Install

    pip install -e .

(Offline, where pip cannot fetch the build back-end: `pip install --no-build-isolation -e .`.)

## Test

    pip install pytest
    pytest

`tests/{test}` checks the component's own values and runs genfw's contract for a {kind}
(`genfw.testing.{check}`), the same checks genfw's built-in components pass.

## Use

    genfw plugins            # lists "{name} ({dist} 0.1.0, {module})"
    genfw list {kind}        # shows `{name}` and its options
    genfw train {usage}

## Where things are

- `pyproject.toml`: the entry point `[project.entry-points.genfw] {name} = "{module}"`.
- `src/{module}/__init__.py`: the component, its attrs options class and the hook that registers it.
- `tests/{test}`: the tests.

Set `GENFW_SKIP_PLUGINS` to a comma list of plugin or distribution names to leave them out (e.g.
a broken one), or `GENFW_LOAD_PLUGINS` to a comma list of plugin names to load only those.
"""


def _registered(kind: str) -> dict[str, Any]:
    """The installed components of ``kind`` by name (none if the plugins cannot be loaded: the
    scaffold must work even when an installed plugin is broken)."""
    from genfw.plugins import get_registry

    try:
        return dict(get_registry().all(kind))
    except GenfwError:
        return {}


def class_name(name: str, kind: str) -> str:
    """The component's class: ``name`` in CamelCase, its case kept, ending in the kind
    (``mine`` -> ``MineLoss``, ``my_loss`` -> ``MyLoss``, ``R1Penalty`` -> ``R1PenaltyRegulariser``)."""
    camel = "".join(part[0].upper() + part[1:] for part in name.split("_") if part)
    return camel if camel.lower().endswith(kind) else camel + kind.capitalize()


def new_plugin(name: str, kind: str, where: Path | str = ".") -> Path:
    """Write the package ``genfw-NAME`` for a ``kind`` component named ``name`` under ``where``.

    Refuses a name that is not an identifier, an unknown kind, an existing folder and a name that
    an installed plugin already registers for that kind (the package would fail at once).
    """
    if not NAME_RE.match(name):
        raise GenfwError(
            f"plugin name '{name}' is not valid; use letters, digits and _, starting with a letter "
            f"(e.g. mine, my_loss or MyLoss)"
        )
    if kind not in TEMPLATES:
        raise GenfwError(f"unknown kind '{kind}' for new-plugin; valid kinds: {choices(KINDS)}")
    taken = _registered(kind)
    if name in taken:
        c = taken[name]
        raise GenfwError(
            f"{kind} '{name}' is already registered by {c.plugin.describe()}; choose another name "
            f"(nothing was written)"
        )
    dist, module = f"genfw-{name.replace('_', '-')}", f"genfw_{name.lower()}"
    root = Path(where) / dist
    if root.exists():
        raise GenfwError(
            f"{root} already exists; choose another name or remove it first (nothing was written)"
        )
    body, test_body, check, usage = TEMPLATES[kind]
    title = name.replace("_", " ")
    title = title[0].upper() + title[1:]  # the rest as typed: "MyLoss", "My loss"
    plural = {"generator": "generators", "critic": "critics", "encoder": "encoders"}.get(kind, "")
    fields = {
        "name": name,
        "kind": kind,
        "module": module,
        "dist": dist,
        "title": title,
        "check": check,
        "usage": usage.format(name=name),
        "plural": plural,
        "cls": class_name(name, kind),
        "test": f"test_{name.lower()}.py",
    }
    fields["factory"] = NETWORK_FACTORIES.get(kind, "").format(**fields)
    if kind in NETWORK_CALLS:
        call, inp, shape = NETWORK_CALLS[kind]
        fields.update(call=call, input=inp, shape=shape)
    imports = IMPORTS["network" if kind in NETWORK_FACTORIES else kind]
    files = {
        "pyproject.toml": PYPROJECT.format(**fields),
        "README.md": README.format(**fields),
        f"src/{module}/__init__.py": MODULE.format(
            imports=imports, body=body.format(**fields).lstrip(), **fields
        ),
        f"tests/{fields['test']}": TEST.format(body=test_body.format(**fields), **fields),
        ".gitignore": GITIGNORE,
    }
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root
