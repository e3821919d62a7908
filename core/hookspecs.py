"""Hook specifications: one registration hook per kind of component.

What a component of each kind must provide, member by member with its type, is its contract in
:mod:`genfw.contracts` (named in each hook below); the registry checks a component against it as
it registers and refuses in one line naming the missing or wrong member.

Every hook receives ``register``, a callback owned by the host::

    register(name, factory, options=OptionsClass, help="one line")

``factory`` is called later as ``factory(options_instance, **context)`` where ``context`` is the
keyword set documented on each hook below. ``options`` is an attrs class (the component's
options, validated from config with cattrs); omit it for a component without options.
The host owns the table: a duplicate name, a factory that is not callable or an options class that
is not attrs is an error naming the plugin and its distribution.

Hooks are called with keyword arguments only, so a spec may gain arguments later without
breaking implementations. A plugin implements any subset of them::

    import genfw

    @genfw.hookimpl
    def genfw_register_losses(register):
        register("least_squares", LeastSquares, options=LeastSquaresOptions)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import pluggy

if TYPE_CHECKING:
    from genfw.commands import Commands

PROJECT = "genfw"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class Register(Protocol):
    def __call__(
        self, name: str, factory: Any, *, options: type | None = None, help: str | None = None
    ) -> None: ...


# ---------------------------------------------------------------------------------------------
# Networks
# ---------------------------------------------------------------------------------------------


@hookspec
def genfw_register_generators(register: Register) -> None:
    """Register generator networks (also the decoders of autoencoders).

    The factory is called as ``factory(options, latent_dim=int, out_shape=tuple[int, ...],
    num_classes=int)`` and returns a ``torch.nn.Module`` whose ``forward(z, y=None)`` maps codes
    ``(B, latent_dim)`` (and labels ``(B,)`` when ``num_classes > 0``) to samples
    ``(B, *out_shape)``. Image outputs live in ``[-1, 1]`` unless the variant asks otherwise
    through options. Contract: :class:`genfw.contracts.Generator`.

    :param register: the host's callback, ``register(name, factory, options=..., help=...)``.
    """


@hookspec
def genfw_register_critics(register: Register) -> None:
    """Register critic (discriminator) networks.

    The factory is called as ``factory(options, in_shape=tuple[int, ...], out_dim=int,
    num_classes=int)`` and returns a ``torch.nn.Module`` whose ``forward(x, y=None)`` maps
    ``(B, *in_shape)`` to raw scores ``(B, out_dim)`` (logits, no final activation). A latent
    critic (AAE, WAE-GAN) is the same thing with ``in_shape=(latent_dim,)``.

    A critic may also expose ``features(x, y=None) -> (B, F)`` and a linear ``head`` attribute
    with ``forward(x, y) == head(features(x, y))``: feature matching reads the features, and the
    minibatch discrimination / standard-deviation tricks insert their layer before the head.
    Contract: :class:`genfw.contracts.Critic`.

    :param register: the host's callback, ``register(name, factory, options=..., help=...)``.
    """


@hookspec
def genfw_register_encoders(register: Register) -> None:
    """Register encoder networks.

    The factory is called as ``factory(options, in_shape=tuple[int, ...], out_dim=int,
    num_classes=int)`` and returns a ``torch.nn.Module`` whose ``forward(x, y=None)`` maps
    ``(B, *in_shape)`` to ``(B, out_dim)``. A stochastic encoder is asked for
    ``out_dim = 2 * latent_dim`` (mean and log-variance) by its variant. Contract:
    :class:`genfw.contracts.Encoder`.

    :param register: the host's callback, ``register(name, factory, options=..., help=...)``.
    """


# ---------------------------------------------------------------------------------------------
# Distributions and objectives
# ---------------------------------------------------------------------------------------------


@hookspec
def genfw_register_priors(register: Register) -> None:
    """Register latent priors.

    The factory is called as ``factory(options, dim=int)`` and returns an object with
    ``dim: int``, ``sample(n, *, device, generator=None) -> Tensor (n, dim)`` and
    ``log_prob(z) -> Tensor (n,)`` (raise ``NotImplementedError`` where no density exists).
    A prior may define ``kl_from_normal(mu, logvar) -> Tensor (n,)`` when the KL divergence
    from a diagonal Gaussian posterior has a closed form (the VAE needs it). A prior that declares
    ``needs_encoder = True`` (the VampPrior: a mixture of the encoder's posteriors of learned
    inputs) is called as ``factory(options, dim=int, data=genfw.DataInfo)`` by a variant with a
    Gaussian encoder, is a ``torch.nn.Module`` trained with it, and is bound to that encoder; a
    factory called without ``data`` refuses in one line. Contract: :class:`genfw.contracts.Prior`.

    :param register: the host's callback, ``register(name, factory, options=..., help=...)``.
    """


@hookspec
def genfw_register_losses(register: Register) -> None:
    """Register losses. The factory is called as ``factory(options)``.

    The object declares ``role``:

    - ``"adversarial"``: ``critic_loss(real_scores, fake_scores) -> scalar`` (minimised by the
      critic) and ``generator_loss(fake_scores, real_scores=None) -> scalar`` (minimised by the
      generator). Scores are raw critic outputs of shape ``(B,)``. A loss whose generator
      objective needs the real scores (a relativistic loss) sets ``needs_real_scores = True``;
      adversarial variants then pass them.
    - ``"reconstruction"``: ``__call__(x_hat, x) -> Tensor (B,)``, a per-example cost (e.g. a
      negative log-likelihood summed over dimensions). A cost that is a normalised
      ``-log p(x | x_hat)`` sets ``likelihood = True``; ``vae`` and ``vsc`` report an ELBO and a
      log-likelihood only with such a loss.

    A variant's loss slot takes losses of one role; the error for a mismatch lists the valid ones.
    ``role`` is read before the loss is built: it is a class attribute (or an attribute of the
    factory). Contracts: :class:`genfw.contracts.AdversarialLoss`,
    :class:`genfw.contracts.ReconstructionLoss`.

    :param register: the host's callback, ``register(name, factory, options=..., help=...)``.
    """


@hookspec
def genfw_register_regularisers(register: Register) -> None:
    """Register regularisers: a term added to one phase's objective, or a constraint after it.

    The factory is called as ``factory(options)`` and returns an object with

    - ``phases: tuple[str, ...]``: phase names it can attach to (``"critic"``, ``"generator"``,
      ``"autoencoder"``, ...);
    - ``needs: tuple[str, ...]``: keys of the phase context it reads, each documented with its
      type in :data:`genfw.contracts.PHASE_CONTEXT` (``"real"``, ``"fake"``, ``"critic"``,
      ``"mu"``, ...) or in a variant's ``PhaseSpec.extra``; ``genfw list variant`` shows what
      each phase provides;
    - ``penalty(ctx: dict) -> Tensor`` scalar, already multiplied by its weight, or ``None``
      for a pure constraint; ``ctx["phase"]`` is always the name of the phase being optimised;
    - optionally ``after_step(modules: list[torch.nn.Module], phase: str) -> None``, run after
      each optimiser step of the phase ``phase`` it is attached to (e.g. weight clipping);
    - optionally ``replaces_loss: bool``: true where its penalty replaces the phase's own
      objective (feature matching's paper form); the loop then logs that objective as
      ``replaced_loss``;
    - optionally ``setup(model: genfw.Model, ctx: genfw.BuildContext) -> None``, called once
      after the variant built ``model`` and every callback changed it, before anything is
      prepared, trained or loaded. It may add state modules to ``model.modules`` (running means:
      checkpoints and ``--resume`` carry them) or refuse in one line, nothing else: a change to
      the model is a callback's (:class:`genfw.contracts.Callback`);
    - optionally ``fits(variant: genfw.contracts.VariantInfo) -> bool``: whether it works with a
      registered variant, judged from its declarations; refusals list the variants it fits.

    ``phases`` and ``needs`` are class attributes (read before building). Contract:
    :class:`genfw.contracts.Regulariser`.

    :param register: the host's callback, ``register(name, factory, options=..., help=...)``.
    """


@hookspec
def genfw_register_metrics(register: Register) -> None:
    """Register metrics. The factory is called as ``factory(options)``.

    The object is called as ``metric(ctx: genfw.EvalContext) -> dict[str, float]``; ``ctx``
    gives generated samples, real data, the dataset and the model. A metric that cannot apply
    (wrong data set) raises :class:`genfw.GenfwError` saying what it needs. Contract:
    :class:`genfw.contracts.Metric`.

    :param register: the host's callback, ``register(name, factory, options=..., help=...)``.
    """


@hookspec
def genfw_register_callbacks(register: Register) -> None:
    """Register callbacks: model transforms, schedules and anything else that reacts to training.

    The factory is a subclass of :class:`genfw.contracts.Callback`, called as ``factory(options)``.
    The loop fires its named events (model built, stage change, fakes, phase output, phase end,
    step end, sampler chosen) on the attached callbacks in their declared order
    (``after``/``before``), and saves each one's ``state_dict()`` in checkpoints. Users attach a
    callback exactly as a regulariser: ``--regulariser NAME``. Its name must not also be a
    regulariser's. Contract: :class:`genfw.contracts.Callback` (it documents every event).

    :param register: the host's callback, ``register(name, factory, options=..., help=...)``.
    """


# ---------------------------------------------------------------------------------------------
# Recipes and data
# ---------------------------------------------------------------------------------------------


@hookspec
def genfw_register_variants(register: Register) -> None:
    """Register variants: named training recipes (``gan``, ``wgan-gp``, ``vae``, ``wae``, ...).

    The factory is a subclass of :class:`genfw.contracts.Variant`, whose members it declares:
    ``slots`` (the components it is built from), ``players`` (which modules are generators,
    critics, latent critics, encoders), ``phases`` (each phase it builds, in order, with the
    context keys it provides: :class:`genfw.contracts.PhaseSpec`), ``presets``,
    ``default_dataset``, ``default_metrics``, ``replayable``, and the class methods
    ``phases_for(options)``, ``remedies(options)`` (the regularisers it always attaches) and
    ``refuse(remedy, options)``. It is called as ``factory(options)`` and the object's
    ``build(ctx: genfw.BuildContext)`` returns a :class:`genfw.Model`: modules, phases (named and
    ordered as declared) and a sampler.

    :param register: the host's callback, ``register(name, factory, options=..., help=...)``.
    """


@hookspec
def genfw_register_datasets(register: Register) -> None:
    """Register data sets. The factory is called as ``factory(options)``.

    It returns a :class:`genfw.GenDataset`: a ``torch.utils.data.Dataset`` of ``(x, y)`` pairs
    (``y`` an int label, ``-1`` where there is none) with ``shape``, ``num_classes`` and
    ``kind`` (``"image"`` or ``"points"``). In-memory data sets also expose ``tensors``
    ``(X, Y)`` so the loop can batch by indexing. A missing path is a :class:`genfw.GenfwError`.
    The factory is the subclass itself: its class attributes ``kind`` and ``default_metrics``
    (the metrics of a run that names none) are read before it is built.

    :param register: the host's callback, ``register(name, factory, options=..., help=...)``.
    """


@hookspec
def genfw_register_extractors(register: Register) -> None:
    """Register feature extractors: the networks quality metrics (FID, IS, KID, precision/recall,
    density/coverage) measure samples with.

    The factory is called as ``factory(options)`` and returns a ``torch.nn.Module`` (in eval mode,
    no gradients needed) with

    - ``features(x) -> Tensor (N, d)``: embeddings of a batch ``x`` of samples as the data sets
      give them: images ``(N, C, H, W)`` in ``[-1, 1]`` (or points ``(N, D)``). Each extractor
      states what it accepts (``accepts: str``, one line, e.g. "images (N, 1 or 3, H, W) in
      [-1, 1], resized to 299x299") and raises :class:`genfw.GenfwError` for anything else
      (wrong shape or channel count), saying what it expects;
    - optionally ``logits(x) -> Tensor (N, K)``: class logits, for the Inception Score;
    - ``identity: str``: a string that changes whenever the features would (name, options that
      matter, sha256 of the weights); reference statistics of real data are cached under it.

    A missing or wrong weights file is a :class:`genfw.GenfwError` telling where to put it. An
    extractor whose factory has ``fit(dataset, out: Path, *, name, dataset_options, steps, seed,
    progress) -> dict`` (train on a labelled data set, write the weights to ``out``, return their
    metadata) can be trained by ``genfw train-evaluator``. Contract:
    :class:`genfw.contracts.Extractor`.

    :param register: the host's callback, ``register(name, factory, options=..., help=...)``.
    """


# ---------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------


@hookspec
def genfw_register_commands(commands: Commands) -> None:
    """Add subcommands to ``genfw``, or options to an existing command (as llm's
    ``register_commands``). Not a kind of component: nothing is registered in the registry.

    ``commands.add(name, *, help, configure, run)`` adds ``genfw NAME``: ``configure(parser)``
    adds its arguments to an ``argparse.ArgumentParser`` and ``run(args) -> int`` runs it with
    the parsed ``argparse.Namespace``, returning the exit code.
    ``commands.extend(command, *, configure, run_before=None, run_after=None)`` adds options to
    ``command`` (e.g. ``"eval"``): ``run_before(args)`` runs before its body, ``run_after(args,
    run: genfw.commands.LoadedRun)`` inside it (``eval``: once the run is loaded), and both only
    when the user gave one of the options. The full contract is :class:`genfw.commands.Commands`.

    A user's mistake is a :class:`genfw.GenfwError`, one line. A command name genfw or another
    plugin has, or an option the command has already, is an error naming the plugin.

    :param commands: the host's :class:`genfw.commands.Commands` for this plugin.
    """


KINDS: dict[str, str] = {
    # kind -> hook name. The order is the order of `genfw list`.
    "variant": "genfw_register_variants",
    "dataset": "genfw_register_datasets",
    "generator": "genfw_register_generators",
    "critic": "genfw_register_critics",
    "encoder": "genfw_register_encoders",
    "prior": "genfw_register_priors",
    "loss": "genfw_register_losses",
    "regulariser": "genfw_register_regularisers",
    "callback": "genfw_register_callbacks",
    "metric": "genfw_register_metrics",
    "extractor": "genfw_register_extractors",
}
