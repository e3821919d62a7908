"""genfw from Python: train a run, load a trained generator, sample, encode and decode.

::

    import genfw

    run = genfw.train({"variant": "vae", "dataset": "digits"}, out="runs/vae", steps=2000)
    run.path, run.step, run.metrics          # the run folder, its last step, its final metrics
    gen = run.load()                         # or genfw.load("runs/vae"), an exported folder, "hf://user/repo"
    x = gen.sample(64, seed=0)               # (64, 1, 8, 8) on the CPU; = genfw sample runs/vae -n 64 --seed 0
    z = gen.encode(x)                        # autoencoders: codes (64, d); gen.decode(z) maps them back

``genfw train`` and ``genfw sample`` are a thin layer over :func:`run_training` and
:func:`load`: a config resolves to the same run, in the same run folder, with the same progress
bar and the same samples.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from genfw.errors import GenfwError

if TYPE_CHECKING:
    import torch
    from torch import Tensor

    from genfw.config import RunConfig
    from genfw.model import DataInfo, Model, Modules
    from genfw.registry import Registry

__all__ = ["Generator", "Run", "keyword_overrides", "load", "run_training", "train"]

ConfigSource = Mapping[str, Any] | str | os.PathLike[str] | None

#: Keywords of :func:`train` that add components to a named map, as ``--regulariser``/``--metric``.
_ADDS = {"regulariser": "regularisers", "metric": "metrics"}


@attrs.frozen
class Run:
    """A finished ``genfw.train``: its folder, its last step, the losses of its last log and its
    final metrics (``{"metric/key": value}``, empty where the run computed none)."""

    path: Path
    step: int
    logs: dict[str, float]
    metrics: dict[str, float]

    def load(self) -> Generator:
        """The run's generator, as :func:`load` reads it from :attr:`path`."""
        return load(self.path)

    def __fspath__(self) -> str:  # a Run is a path: genfw.load(run), Path(run)
        return str(self.path)

    def summary(self) -> dict[str, Any]:
        """What ``genfw train`` prints: the folder, the step, the last logs and the metrics."""
        return {"run": str(self.path), "step": self.step, **self.logs, **self.metrics}


# --- training --------------------------------------------------------------------------------------


def train(
    config: ConfigSource = None,
    *,
    out: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    resume: bool | str | os.PathLike[str] = False,
    default_metrics: bool = True,
    **overrides: Any,
) -> Run:
    """Train a run, exactly as ``genfw train`` does, and return it.

    :param config: a mapping (as a config file holds), or the path of a YAML/TOML config file;
        ``None``: the defaults (``gan`` on ``digits``).
    :param out: the run folder (default: ``runs/VARIANT-DATASET-TIME``).
    :param overwrite: replace an existing run folder (``--overwrite``).
    :param resume: ``True`` continues the run in ``out``, a path the run there (``--resume``);
        only train options may then change (``steps=6000``).
    :param default_metrics: ``False`` leaves out the data set's and the variant's default metrics
        (``--no-default-metrics``).
    :param overrides: the command line's flags, one keyword each (:func:`keyword_overrides`):
        ``variant="vae"``, ``prior="spike_slab"``, ``prior__alpha=0.3`` (``--prior.alpha 0.3``),
        any train option by its name (``steps=100``, ``batch_size=32``, ``progress=False``),
        ``regulariser="ema"`` and ``metric="fid"`` (a name or a list) to add remedies and
        metrics; a mapping sets its key whole (``--set prior={...}``).
    :returns: the :class:`Run`.

    A mistake (an unknown key, a bad value, an existing folder) is a one-line
    :class:`genfw.GenfwError`, raised before anything is written.
    """
    pairs = keyword_overrides(overrides)
    folder: Path | None = None
    if resume is not False:
        if resume is True:
            if out is None:
                raise GenfwError("resume=True needs the run folder: out=RUN_DIR (or resume=RUN_DIR)")
            folder = Path(out)
        else:
            folder = Path(resume)
            if out is not None and Path(out) != folder:
                raise GenfwError(
                    f"resume={str(folder)!r} and out={str(out)!r} name two folders; give the run folder once"
                )
        bad = [p for p, _ in pairs if not p.startswith("train.")]
        if bad or config is not None:
            raise GenfwError(
                f"on resume only train options may change (e.g. steps=6000); got "
                f"{bad[0] if bad else 'a config'}"
            )
        if not default_metrics:
            raise GenfwError("default_metrics=False is for a new run; a resumed run keeps its metrics")
    return run_training(
        config, pairs, out=out, resume=folder, overwrite=overwrite, default_metrics=default_metrics
    )


def keyword_overrides(keywords: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """:func:`train`'s keywords as the ``(config path, value)`` pairs of the command line's flags:
    ``prior__alpha=0.3`` is ``("prior.alpha", 0.3)``, a train option ``steps=10`` is
    ``("train.steps", 10)``, ``regulariser="ema"`` is ``("regularisers.ema", {})``, ``plugin`` is
    ``variant`` (``plugin__beta=4``)."""
    from genfw.config import TrainOptions

    train_options = set(attrs.fields_dict(TrainOptions))
    out: list[tuple[str, Any]] = []
    for key, value in keywords.items():
        path = key.replace("__", ".")
        head, dot, rest = path.partition(".")
        if head == "plugin":  # --plugin vae, --plugin.beta 4: the variant
            path = f"variant{dot}{rest}"
        if path in _ADDS:
            names = [value] if isinstance(value, str) else value
            if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
                raise GenfwError(f"{key}= takes a name or a list of names, got {value!r}")
            out.extend((f"{_ADDS[path]}.{name}", {}) for name in names)
        elif path in train_options:
            out.append((f"train.{path}", value))
        else:
            out.append((path, value))
    return out


def _config_mapping(config: ConfigSource) -> dict[str, Any]:
    from genfw import config as config_mod

    if config is None:
        return {}
    if isinstance(config, (str, os.PathLike)):
        return config_mod.load_file(config)
    if isinstance(config, Mapping):
        return dict(config)
    raise GenfwError(
        f"config must be a mapping or the path of a .yaml, .yml or .toml file, got {type(config).__name__}"
    )


def run_training(
    config: ConfigSource,
    overrides: list[tuple[str, Any]],
    *,
    out: str | os.PathLike[str] | None = None,
    resume: Path | None = None,
    overwrite: bool = False,
    default_metrics: bool = True,
    registry: Registry | None = None,
) -> Run:
    """The one training path of :func:`train` and ``genfw train``: ``config`` with ``overrides``
    (``(path, value)`` pairs, as :func:`genfw.cli.parse_overrides` reads flags) on top, resolved
    against ``registry`` (default: the installed plugins), trained into ``out``; or the run in
    ``resume`` continued (``overrides`` then change train options only)."""
    from genfw import config as config_mod
    from genfw import export
    from genfw.plugins import get_host
    from genfw.train import Trainer, read_run

    registry = get_host().registry if registry is None else registry
    if resume is not None:
        run_dir = Path(resume)
        if (run_dir / export.MODEL_FILE).is_file() and export.folder_kind(run_dir) == "export":
            raise GenfwError(f"{run_dir} is an exported model, not a run folder: it cannot be resumed")
        cfg = read_run(run_dir, registry, overrides)
    else:
        raw = config_mod.with_command_line(
            _config_mapping(config), overrides, registry, default_metrics=default_metrics
        )
        cfg = config_mod.resolve(raw, registry)
        if out is not None:
            run_dir = Path(out)
        else:
            if int(os.environ.get("WORLD_SIZE", "1")) > 1:
                raise GenfwError(
                    "give --out DIR (out=) when launching several processes, so they share one run folder"
                )
            run_dir = Path("runs") / f"{cfg.variant.name}-{cfg.dataset.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    trainer = Trainer(cfg, run_dir, resume=resume is not None, overwrite=overwrite)
    if trainer.accelerator.is_main_process:  # once the run is set up (a refusal before it stays one line)
        when = f"every {cfg.train.eval_every} steps and at the end" if cfg.train.eval_every else "at the end"
        names = f"{', '.join(cfg.metrics)} ({when})" if cfg.metrics else "none"
        print(f"genfw: metrics: {names}", file=sys.stderr)
    result = trainer.fit()
    return Run(path=result.run_dir, step=result.step, logs=result.last_logs, metrics=result.metrics)


# --- loading ---------------------------------------------------------------------------------------


class Generator:
    """A trained model, loaded for sampling (and, for autoencoders, encoding and decoding).

    Made by :func:`load`. ``path`` is the folder it was read from (a run folder or an exported
    one), ``config`` the run's resolved config, ``variant`` its name, ``data`` the shape, number
    of classes and kind (``image`` or ``points``) of its data, ``num_classes`` the classes it draws
    (0: unconditional), ``model`` and ``modules`` what the variant built, with the sampling weights,
    ``encoders`` the names of an autoencoder's encoder modules (empty for a GAN). Results are float32 tensors on the CPU, whatever the device the modules are on.
    """

    def __init__(
        self,
        path: Path,
        config: RunConfig,
        model: Model,
        modules: Modules,
        data: DataInfo,
        *,
        encoders: tuple[str, ...] = (),
        encoder_weights: Path | None = None,
    ) -> None:
        self.path, self.config, self.model, self.modules, self.data = path, config, model, modules, data
        # The encoders' weights: loaded with the rest (an exported folder) or, from a run folder,
        # from its latest checkpoint on the first encode (sampling needs only the generator).
        self.encoders, self._encoder_weights = encoders, encoder_weights
        for mod in modules.values():
            mod.eval()

    @property
    def variant(self) -> str:
        return self.config.variant.name

    @property
    def num_classes(self) -> int:
        return int(self.model.num_classes)

    @property
    def device(self) -> torch.device:
        from genfw.model import device_of

        return device_of(*self.modules.values())

    def to(self, device: str | torch.device) -> Generator:
        """Move the modules to ``device`` (``"cuda"``, ``"cpu"``); returns this generator."""
        import torch

        try:
            device = torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise GenfwError(f"unknown device {device!r} ({exc}); e.g. 'cpu', 'cuda', 'cuda:1'") from None
        before = self.device
        try:
            for mod in self.modules.values():
                mod.to(device)
        except (RuntimeError, AssertionError) as exc:  # no such device (a CPU-only torch: AssertionError)
            for mod in self.modules.values():
                mod.to(before)  # all on one device again
            raise GenfwError(f"cannot move the model to {device}: {' '.join(str(exc).split())}") from None
        return self

    def __repr__(self) -> str:
        shape = "x".join(map(str, self.data.shape))
        return f"Generator(variant={self.variant!r}, data={self.data.kind} {shape}, path='{self.path}')"

    # -- sampling ---------------------------------------------------------------------------------
    def sample(
        self,
        n: int,
        labels: int | Tensor | None = None,
        seed: int | None = None,
        truncation: float | None = None,
    ) -> Tensor:
        """``n`` samples ``(n, *data shape)``, float32 on the CPU.

        :param labels: a conditional model's classes: an int draws that class, a tensor ``(n,)``
            one class per sample; ``None``: every class in turn, in blocks (``0 0 .. 1 1 ..``), as
            ``genfw sample`` draws its grid. An unconditional model takes none.
        :param seed: ``0 .. 2**32-1``: the same seed gives the same samples, bit for bit, as
            ``genfw sample PATH -n N --seed SEED`` (on the same device), leaving torch's global
            random state as it was; ``None`` draws from torch's global random state.
        :param truncation: the truncation trick's ``psi`` (``genfw sample --truncation``), for a
            variant that declares one (:attr:`genfw.contracts.Variant.truncation`); refused in one
            line for the others.
        """
        return self.sample_with_labels(n, labels, seed, truncation)[0]

    def sample_with_labels(
        self,
        n: int,
        labels: int | Tensor | None = None,
        seed: int | None = None,
        truncation: float | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """:meth:`sample`, and the labels ``(n,)`` it drew with (``None`` for an unconditional model)."""
        from genfw import validators as check
        from genfw.config import MAX_SEED
        from genfw.sampling import class_rows, forked, generate, sample_labels, truncated_sampler

        _check_int("n", n, check.at_least(1))
        if seed is not None:
            _check_int("seed", seed, check.in_interval(0, MAX_SEED))
        model, device = self.model, self.device
        if truncation is not None:  # refused before anything is drawn
            truncated_sampler(model, truncation, f"variant '{self.variant}'")
        k = self.num_classes
        if labels is None and k:
            labels = class_rows(k, -(-n // k))[:n]
        y = sample_labels(model, n, labels, device)  # checks the labels

        def draw() -> Tensor:
            return generate(model, self.modules, n, labels=y, truncation=truncation)

        samples = draw() if seed is None else forked(seed, device, draw)
        return samples, (None if y is None else y.cpu())

    # -- autoencoders -----------------------------------------------------------------------------
    def encode(self, x: Tensor, labels: int | Tensor | None = None) -> Tensor:
        """An autoencoder's codes ``(B, d)`` of data ``x (B, *data shape)``: the code it
        reconstructs from (a stochastic encoder's mean). Refused for a variant with no encoder."""
        fn = self._autoencoder("encode")
        x = self._batch(x, self.data.shape, "x", "the data's shape")
        self._load_encoders()
        return self._apply(fn, x, labels)

    def decode(self, z: Tensor, labels: int | Tensor | None = None) -> Tensor:
        """An autoencoder's decodings ``(B, *data shape)`` of codes ``z (B, d)`` (the decoder's
        mean). Refused for a variant with no encoder."""
        fn = self._autoencoder("decode")
        z = self._batch(z, None, "z", "")
        return self._apply(fn, z, labels)

    def _autoencoder(self, what: str) -> Any:
        from genfw.plugins import variants_where

        fn = getattr(self.model, what, None)
        if not self.encoders or not callable(fn):
            fits = variants_where(lambda v: bool(v.players.encoders), self.config.registry)
            raise GenfwError(
                f"{what}() needs an autoencoder; this model's variant '{self.variant}' has no encoder "
                f"(variants with one: {fits})"
            )
        return fn

    def _batch(self, t: Any, shape: tuple[int, ...] | None, name: str, what: str) -> Tensor:
        import torch

        if (
            not isinstance(t, torch.Tensor)
            or t.dim() < 2
            or (shape is not None and tuple(t.shape[1:]) != shape)
        ):
            got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            want = f"(B, {', '.join(map(str, shape))}), {what}" if shape is not None else "(B, d)"
            raise GenfwError(f"{name} must be a tensor of shape {want}; got {got}")
        return t.to(self.device, torch.float32)

    def _apply(self, fn: Any, t: Tensor, labels: int | Tensor | None) -> Tensor:
        import torch

        from genfw.sampling import sample_labels

        y = None if labels is None else sample_labels(self.model, t.shape[0], labels, self.device)
        with torch.no_grad():
            return fn(self.modules, t, y).float().cpu()

    def _load_encoders(self) -> None:
        if self._encoder_weights is None:
            return
        from genfw import checkpoint
        from genfw.rundir import load_checkpoint_weights

        weights = load_checkpoint_weights(self._encoder_weights, self.config, self.data, self.encoders)
        for name in self.encoders:
            checkpoint.load_state(self.modules[name], weights[name], f"{self._encoder_weights} [{name}]")
        self._encoder_weights = None


def _check_int(name: str, value: Any, validator: Any) -> None:
    import types

    if not isinstance(value, int) or isinstance(value, bool):
        raise GenfwError(f"{name} must be an integer, got {value!r}")
    try:
        validator(None, types.SimpleNamespace(name=name), value)
    except ValueError as exc:
        raise GenfwError(str(exc)) from None


def load(
    path: str | os.PathLike[str], *, download: bool = True, registry: Registry | None = None
) -> Generator:
    """The generator of a run folder (``genfw train``), of an exported folder (``genfw
    export``) or of a Hugging Face Hub model repository ``hf://USER/NAME`` (``@REVISION``
    optional), on the CPU.

    ``hf://`` reads the hub cache first and downloads only what is not there (with ``download``
    true and ``HF_HUB_OFFLINE`` unset). Only the model's own components must be installed: its
    variant, slots and remedies, not its data set or metrics (a missing one is named with the
    distribution to install). ``registry``: the components to resolve with (default: the
    installed plugins).
    """
    from genfw import export, hub
    from genfw.plugins import get_host
    from genfw.rundir import EXPORT_FILE, SAMPLING, load_sampler, read_data_info, read_run

    text = os.fspath(path)
    folder = hub.snapshot(text, download=download) if text.startswith(hub.SCHEME) else Path(text)
    kind = export.folder_kind(folder)
    registry = get_host().registry if registry is None else registry
    cfg = read_run(folder, registry, parts=SAMPLING)
    data = read_data_info(folder)
    encoders = tuple(n for n in cfg.variant.component.factory.players.encoders)
    if kind == "export":
        names = export.exported_modules(folder)
        model, modules = load_sampler(folder, cfg, data, weights=export.MODEL_FILE, names=names)
        encoders = tuple(n for n in encoders if n in names)
        return Generator(folder, cfg, model, modules, data, encoders=encoders)
    model, modules = load_sampler(folder, cfg, data, weights=EXPORT_FILE)
    encoders = tuple(n for n in encoders if n in model.modules)
    # A run folder's encoders come from its latest checkpoint, read on the first encode().
    ckpt = folder / "checkpoints" if encoders else None
    return Generator(folder, cfg, model, modules, data, encoders=encoders, encoder_weights=ckpt)
