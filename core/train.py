"""The training loop, on Hugging Face Accelerate.

It knows nothing of GANs or autoencoders: it builds the variant's :class:`~genfw.Model`, then for
each step runs every phase (``repeats`` times), adds the attached regularisers' penalties,
back-propagates with ``accelerator.backward``, steps that phase's optimiser and applies
post-step constraints. Around that: logging (``metrics.jsonl``, TensorBoard, tqdm), sample grids,
metrics and checkpoints, all on the main process.

Where is a loss computed? In the variant's phase ``step`` (e.g. ``genfw_plugins/gan.py``) with the
loss component of its slot (``genfw_plugins/losses.py``); regularisers in
``genfw_plugins/regularisers.py``.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import torch
import yaml
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import DistributedType, set_seed
from torch import Tensor, nn

import genfw
from genfw import checkpoint, images
from genfw.config import RunConfig
from genfw.errors import GenfwError
from genfw.model import (
    Batch,
    BuildContext,
    EvalContext,
    GenDataset,
    Model,
    Modules,
    Optim,
    Phase,
    device_of,
)

CONFIG_FILE = "config.yaml"
RUN_FILE = "run.json"
METRICS_FILE = "metrics.jsonl"
EXPORT_FILE = "generator.safetensors"
GRID_SEED = 1234  # fixed noise for sample grids, so grids over training are comparable


# --- building ------------------------------------------------------------------------------------


def make_optimizer(optim: Optim, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    if optim.name == "adam":
        return torch.optim.Adam(params, lr=optim.lr, betas=optim.betas, weight_decay=optim.weight_decay)
    if optim.name == "rmsprop":
        return torch.optim.RMSprop(params, lr=optim.lr, weight_decay=optim.weight_decay)
    if optim.name == "sgd":
        return torch.optim.SGD(params, lr=optim.lr, momentum=optim.betas[0], weight_decay=optim.weight_decay)
    raise GenfwError(f"unknown optimiser '{optim.name}'; valid: adam, rmsprop, sgd")


@attrs.define
class Built:
    """Everything a run is made of, before Accelerate wraps it."""

    cfg: RunConfig
    dataset: GenDataset
    model: Model
    regularisers: dict[str, list[tuple[str, Any]]]  # phase name -> [(name, regulariser)]
    metrics: dict[str, Any]


def build(cfg: RunConfig, dataset: GenDataset | None = None) -> Built:
    """Build the data set, the variant's model, its regularisers and metrics from a config."""
    dataset = cfg.dataset.build() if dataset is None else dataset
    ctx = BuildContext(components=cfg.slots, data=dataset.info)
    model = cfg.variant.build().build(ctx)
    regs = attach_regularisers(cfg, model, ctx)
    metrics = {name: spec.build() for name, spec in cfg.metrics.items()}
    return Built(cfg=cfg, dataset=dataset, model=model, regularisers=regs, metrics=metrics)


def attach_regularisers(cfg: RunConfig, model: Model, ctx: BuildContext) -> dict[str, list[tuple[str, Any]]]:
    """Build the run's regularisers, check that the model's phases fit them, and let each one's
    optional ``setup(model, ctx)`` change the model (wrap modules or phase steps, add modules such
    as EMA weights) before anything is prepared or loaded. Phase name -> ``[(name, regulariser)]``.

    A refusal here names the variants the regulariser works with where it says so itself, with an
    optional ``fits(variant_component) -> bool`` (judged from the variant class, not by building it)."""
    phase_names = [p.name for p in model.phases]
    regs: dict[str, list[tuple[str, Any]]] = {p.name: [] for p in model.phases}
    built: list[Any] = []

    def fitting(reg: Any) -> str:
        fits = getattr(reg, "fits", None)
        if fits is None:
            return ""
        from genfw.plugins import variants_where

        return f"; variants it applies to: {variants_where(fits)}"

    for name, spec in cfg.regularisers.items():
        reg = spec.build()
        targets = [p for p in model.phases if p.name in reg.phases]
        if not targets:
            raise GenfwError(
                f"regulariser '{name}' applies to {'/'.join(reg.phases)} phases; variant "
                f"'{cfg.variant.name}' has phases {', '.join(phase_names)}{fitting(reg)}"
            )
        for phase in targets:
            missing = sorted(set(reg.needs) - set(phase.provides))
            if missing:
                raise GenfwError(
                    f"regulariser '{name}' needs {', '.join(missing)}, which phase '{phase.name}' of "
                    f"variant '{cfg.variant.name}' does not provide (it provides "
                    f"{', '.join(sorted(phase.provides)) or 'nothing'}){fitting(reg)}"
                )
            regs[phase.name].append((name, reg))
        built.append(reg)
    # Setups run by ``setup_order`` (default 0), then in config order: those that copy or track
    # parameters (EMA, historical averaging) come last, so they see the final modules.
    for reg in sorted(built, key=lambda r: getattr(r, "setup_order", 0)):
        if hasattr(reg, "setup"):
            reg.setup(model, ctx)
    return regs


# --- data ----------------------------------------------------------------------------------------


class TensorLoader:
    """Endless shuffled batches from in-memory tensors, sharded over processes.

    Every process draws the same permutation (seeded by seed and epoch) and takes its own slice of
    each global batch, so ``world`` processes see ``world`` different batches per step. The
    position is checkpointed, so a resumed run continues the same sequence.
    """

    def __init__(self, x: Tensor, y: Tensor, batch_size: int, seed: int, rank: int = 0, world: int = 1):
        if batch_size * world > x.shape[0]:
            raise GenfwError(
                f"train.batch_size {batch_size} x {world} process(es) exceeds the data set's {x.shape[0]} examples"
            )
        self.x, self.y = x, y
        self.batch_size, self.seed, self.rank, self.world = batch_size, seed, rank, world
        self.epoch, self.pos = 0, 0
        self._perm = self._permutation()

    def _permutation(self) -> Tensor:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return torch.randperm(self.x.shape[0], generator=g).to(self.x.device)

    def __next__(self) -> Batch:
        span = self.batch_size * self.world
        if self.pos + span > self.x.shape[0]:
            self.epoch, self.pos = self.epoch + 1, 0
            self._perm = self._permutation()
        start = self.pos + self.rank * self.batch_size
        idx = self._perm[start : start + self.batch_size]
        self.pos += span
        # index_select: the same rows as x[idx] at about half the per-call cost (hot path).
        return Batch(self.x.index_select(0, idx), self.y.index_select(0, idx))

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.pos = int(state["epoch"]), int(state["pos"])
        self._perm = self._permutation()


HOLDOUT_SEED = 20_240_601  # one fixed split for every run and seed: runs compare on the same examples


def holdout_split(n: int, fraction: float) -> tuple[Tensor, Tensor]:
    """Indices ``(train, held_out)`` of a data set of ``n`` examples, each sorted.

    ``round(fraction * n)`` examples are held out, chosen by a permutation with a fixed seed
    (``HOLDOUT_SEED``), independent of ``train.seed``: the split depends only on ``n`` and
    ``fraction``, so training (``make_loader``) and evaluation (``genfw eval``) agree on it.
    """
    k = round(fraction * n)
    if fraction > 0 and (k < 1 or k >= n):
        raise GenfwError(
            f"train.holdout {fraction} leaves {n - k} of {n} examples for training and {k} held out; "
            f"choose a fraction that keeps at least one on each side"
        )
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(HOLDOUT_SEED))
    return perm[k:].sort().values, perm[:k].sort().values


def held_out_examples(dataset: GenDataset, fraction: float, n: int) -> tuple[Tensor, Tensor]:
    """The first ``n`` held-out examples ``(x, y)`` (all of them if fewer), in a fixed order."""
    idx = holdout_split(len(dataset), fraction)[1][:n]
    if dataset.tensors is not None:
        return dataset.tensors[0][idx].float(), dataset.tensors[1][idx].long()
    items = [dataset[int(i)] for i in idx]
    return torch.stack([x for x, _ in items]).float(), torch.tensor([int(y) for _, y in items])


def make_loader(
    dataset: GenDataset, batch_size: int, seed: int, accelerator: Accelerator, holdout: float = 0.0
) -> Iterator[Batch]:
    """Endless training batches; with ``holdout > 0`` the held-out split (:func:`holdout_split`)
    is left out."""
    keep = holdout_split(len(dataset), holdout)[0] if holdout > 0 else None
    if dataset.tensors is not None:
        x, y = dataset.tensors
        if keep is not None:
            x, y = x[keep], y[keep]
        return TensorLoader(
            x.to(accelerator.device, torch.float32),
            y.to(accelerator.device, torch.long),
            batch_size,
            seed,
            accelerator.process_index,
            accelerator.num_processes,
        )
    g = torch.Generator().manual_seed(seed)
    source = dataset if keep is None else torch.utils.data.Subset(dataset, keep.tolist())
    loader = torch.utils.data.DataLoader(
        source, batch_size=batch_size, shuffle=True, drop_last=True, generator=g
    )
    if len(loader) == 0:
        raise GenfwError(
            f"train.batch_size {batch_size} exceeds the data set's {len(source)} training examples"
        )
    loader = accelerator.prepare(loader)

    def endless() -> Iterator[Batch]:
        while True:
            for x, y in loader:
                yield Batch(x.float(), y.long())

    return endless()


def real_examples(dataset: GenDataset, n: int, seed: int = 0) -> Tensor:
    """``n`` real examples drawn without replacement (all of them if fewer), reproducibly."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(dataset), generator=g)[:n]
    if dataset.tensors is not None:
        return dataset.tensors[0][idx].float()
    return torch.stack([dataset[int(i)][0] for i in idx]).float()


def sample_labels(model: Model, n: int, labels: int | Tensor | None, device: torch.device) -> Tensor | None:
    """The labels ``(n,)`` on ``device`` with which ``model`` draws ``n`` samples, or ``None``.

    For a conditional model (``model.num_classes = K > 0``): an int draws that class only, a
    tensor ``(n,)`` one class per sample, and ``None`` cycles through the classes (0, 1, ..., K-1,
    0, ...). An unconditional model takes no labels. A label outside ``0..K-1`` is a GenfwError.
    """
    k = model.num_classes
    if labels is None:
        return torch.arange(n, device=device) % k if k else None
    y = torch.as_tensor(labels, dtype=torch.long).to(device).expand(n)
    if not k:
        raise GenfwError(
            f"label {int(y[0])} given, but this model is unconditional (it takes no labels); "
            f"train a conditional variant (e.g. cgan) to draw a chosen class"
        )
    bad = y[(y < 0) | (y >= k)]
    if len(bad):
        raise GenfwError(f"label {int(bad[0])} is outside this model's {k} classes; valid labels: 0..{k - 1}")
    return y


def class_rows(num_classes: int, per_class: int) -> Tensor:
    """Labels for a grid with one row per class: ``0 x per_class, 1 x per_class, ...``."""
    return torch.arange(num_classes).repeat_interleave(per_class)


@torch.no_grad()
def generate(
    model: Model, modules: Modules, n: int, *, labels: int | Tensor | None = None, chunk: int = 1000
) -> Tensor:
    """``n`` samples on the CPU, made in eval mode in chunks.

    A conditional model draws the classes ``labels`` chooses (see :func:`sample_labels`; by
    default it cycles through all classes); the labels live on the modules' device.
    """
    y_all = sample_labels(model, n, labels, device_of(*modules.values()))
    was_training = {k: mod.training for k, mod in modules.items()}
    for mod in modules.values():
        mod.eval()
    out = []
    try:
        for start in range(0, n, chunk):
            k = min(chunk, n - start)
            y = None if y_all is None else y_all[start : start + k]
            out.append(model.sample(modules, k, y).float().cpu())
    finally:
        for k, mod in modules.items():
            mod.train(was_training[k])
    return torch.cat(out)


def forked(seed: int, device: torch.device, fn: Callable[[], Any]) -> Any:
    """Run ``fn`` with fixed RNG state, leaving the training streams untouched."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        return fn()


def evaluate(built: Built, modules: Modules, device: torch.device) -> dict[str, float]:
    """Every metric of the run, as ``{"metric/key": value}``; reproducible (fixed seed)."""
    ctx = EvalContext(
        sample=lambda n: generate(built.model, modules, n),
        real=lambda n: real_examples(built.dataset, n),
        dataset=built.dataset,
        model=built.model,
        modules=modules,
        device=device,
        held_out=(
            (lambda n: held_out_examples(built.dataset, built.cfg.train.holdout, n))
            if built.cfg.train.holdout > 0
            else None
        ),
    )
    results: dict[str, float] = {}
    for name, metric in built.metrics.items():
        values = forked(GRID_SEED + 1, device, lambda metric=metric: metric(ctx))
        results.update({f"{name}/{k}": float(v) for k, v in values.items()})
    return results


def check_compiler(device: torch.device) -> None:
    """torch.compile on the CPU generates C++: refuse early, in one line, where no compiler exists."""
    if device.type == "cpu":
        cxx = os.environ.get("CXX") or "g++"
        if not any(shutil.which(c) for c in (cxx, "g++", "c++", "clang++")):
            raise GenfwError(
                "train.compile on the CPU needs a C++ compiler (g++ or clang++, or $CXX); "
                "install one or drop --compile"
            )


# --- run folder ----------------------------------------------------------------------------------


def check_run_dir(run_dir: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse to write into an existing run unless asked to, or where no folder can be made.
    Leaves everything as it was."""
    if resume:
        if not (run_dir / CONFIG_FILE).is_file():
            raise GenfwError(f"cannot resume: {run_dir} is not a genfw run folder (no {CONFIG_FILE})")
        return
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        if not overwrite:
            raise GenfwError(
                f"run folder {run_dir} already exists; pass --resume to continue it, "
                f"--overwrite to replace it, or choose another --out"
            )
        if not (run_dir / CONFIG_FILE).is_file():
            raise GenfwError(
                f"refusing to overwrite {run_dir}: it is not a genfw run folder (no {CONFIG_FILE}); "
                f"choose another --out"
            )
    _check_writable(run_dir, into=run_dir.is_dir() and not overwrite)


def _check_writable(run_dir: Path, *, into: bool) -> None:
    """Refuse a run folder that cannot be made (under a file, in a read-only place) now, before
    the data set is built, rather than after. ``into``: the run writes inside an existing (empty)
    ``run_dir``; otherwise it creates ``run_dir`` in its nearest existing ancestor. A probe folder
    is made there and removed: permissions alone do not tell (root, read-only mounts, /proc)."""
    import tempfile

    place = run_dir if into else run_dir.parent
    while not place.exists() and place != place.parent:
        place = place.parent
    if not place.is_dir():
        raise GenfwError(
            f"cannot create run folder {run_dir}: {place} is a file, not a folder; choose another --out"
        )
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".genfw-write-check-", dir=place))
    except OSError as exc:
        raise GenfwError(
            f"cannot create run folder {run_dir}: cannot write in {place} ({exc.strerror}); choose another --out"
        ) from None


def create_run_dir(run_dir: Path, *, resume: bool, overwrite: bool) -> None:
    """After :func:`check_run_dir` and a successful build: replace (``overwrite``) or create."""
    if resume:
        return
    if overwrite and run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)


def json_safe(record: dict[str, Any]) -> dict[str, Any]:
    """Non-finite floats as ``null``: strict JSON readers reject ``NaN``."""
    return {k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in record.items()}


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def write_config(run_dir: Path, cfg: RunConfig) -> None:
    (run_dir / CONFIG_FILE).write_text(yaml.safe_dump(_plain(cfg.to_dict()), sort_keys=False))


def flat_config(cfg: RunConfig) -> dict[str, Any]:
    """The resolved config as ``{"variant.latent_dim": 64, "train.steps": 3000, ...}``; lists and
    other values TensorBoard cannot show as a hyper-parameter become strings."""
    out: dict[str, Any] = {}

    def walk(prefix: str, obj: Any) -> None:
        if isinstance(obj, dict):
            if not obj and prefix:
                out[prefix] = "{}"
            for k, v in obj.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        elif obj is None or isinstance(obj, (bool, int, float, str)):
            out[prefix] = obj
        else:
            out[prefix] = json.dumps(_plain(obj))

    walk("", _plain(cfg.to_dict()))
    return out


def write_hparams(writer: Any, cfg: RunConfig, final: dict[str, float], step: int) -> None:
    """Hyper-parameters and final metrics into the run's own TensorBoard folder (the HParams
    view), the metrics as ``hparam/KEY`` scalars so they do not join the training curves."""
    from torch.utils.tensorboard.summary import hparams

    # torch's hparams() stores a bool as a number (bool is an int): give TensorBoard "true"/"false".
    hp = {
        k: "none" if v is None else (str(v).lower() if isinstance(v, bool) else v)
        for k, v in flat_config(cfg).items()
    }
    metrics = {f"hparam/{k}": float(v) for k, v in final.items() if k != "time" and math.isfinite(v)}
    for summary in hparams(hp, metrics):
        writer._get_file_writer().add_summary(summary, step)
    for k, v in metrics.items():
        writer.add_scalar(k, v, step)


# --- the loop --------------------------------------------------------------------------------------


@attrs.define
class Result:
    run_dir: Path
    step: int
    last_logs: dict[str, float]
    metrics: dict[str, float]


def _close_process_group() -> None:
    """Tear the process group down, together, before the interpreter exits. A rank that exits while
    another's gloo threads still listen to it makes that rank abort ("terminate called without an
    active exception"), failing a run that trained well: so every rank waits for the others first."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


class Trainer:
    """One run: builds, prepares with Accelerate, trains, and writes the run folder."""

    def __init__(self, cfg: RunConfig, run_dir: Path, *, resume: bool = False, overwrite: bool = False):
        self.cfg, self.run_dir, self.opts = cfg, Path(run_dir), cfg.train
        # Under torchrun on a machine without a GPU, Accelerate starts no process group unless told
        # to use the CPU (gloo); each process would then train alone and race on the run folder.
        world = int(os.environ.get("WORLD_SIZE", "1"))
        cpu = self.opts.cpu or (world > 1 and not torch.cuda.is_available())
        # Accelerate keeps its settings in a process-wide singleton; a second run in one process
        # (tests, benchmarks, notebooks) with another precision gets fresh settings, same processes.
        if AcceleratorState._shared_state.get("_mixed_precision", self.opts.mixed_precision) != (
            self.opts.mixed_precision
        ):
            AcceleratorState._reset_state()
        self.accelerator = Accelerator(cpu=cpu, mixed_precision=self.opts.mixed_precision)
        acc = self.accelerator
        if world > 1:
            atexit.unregister(_close_process_group)  # once per process, however many runs it makes
            atexit.register(_close_process_group)
        if acc.num_processes != world:
            raise GenfwError(
                f"launched as {world} processes but Accelerate formed a group of {acc.num_processes}; "
                f"check the launcher's settings (accelerate config, --nproc_per_node)"
            )
        check_run_dir(self.run_dir, resume=resume, overwrite=overwrite)
        set_seed(self.opts.seed, device_specific=True)  # seed + rank: each process its own noise
        self.built = build(cfg)  # bad data paths and the like fail here, before anything is written
        acc.wait_for_everyone()  # every rank has checked the folder before the main one changes it
        if acc.is_main_process:
            create_run_dir(self.run_dir, resume=resume, overwrite=overwrite)
        acc.wait_for_everyone()
        model = self.built.model
        if self.opts.sync_batch_norm and acc.num_processes > 1:
            if acc.device.type == "cpu":
                raise GenfwError(
                    "train.sync_batch_norm needs GPUs (torch's SyncBatchNorm does not run on the CPU); "
                    "drop --sync-batch-norm for CPU processes"
                )
            model.modules = {
                n: nn.SyncBatchNorm.convert_sync_batchnorm(mod) for n, mod in model.modules.items()
            }
        self.phases: list[Phase] = model.phases
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        for phase in self.phases:
            params = list({id(p): p for n in phase.modules for p in model.modules[n].parameters()}.values())
            self.optimizers[phase.name] = make_optimizer(phase.optim, params)

        # Accelerate wraps modules (DDP on several processes) and optimisers. Modules with nothing
        # to train (EMA weights, buffers of tricks) are only moved: DDP refuses them.
        names = [n for n, mod in model.modules.items() if any(p.requires_grad for p in mod.parameters())]
        prepared = acc.prepare(*(model.modules[n] for n in names), *self.optimizers.values())
        if len(names) + len(self.optimizers) == 1:
            prepared = (prepared,)
        wrapped = dict(zip(names, prepared[: len(names)], strict=True))
        self.m = Modules(
            {n: wrapped[n] if n in wrapped else mod.to(acc.device) for n, mod in model.modules.items()}
        )
        self.optimizers = dict(zip(self.optimizers, prepared[len(names) :], strict=True))
        # Sampling and metrics run on the main process alone: use unwrapped modules (a DDP forward
        # on one rank would wait for the others).
        self.plain = Modules({n: acc.unwrap_model(mod) for n, mod in self.m.items()})
        if self.opts.compile:
            check_compiler(acc.device)
            for mod in self.plain.values():
                mod.compile()  # in place: the DDP wrapper and state_dict keys stay as they are
        self.loader = make_loader(
            self.built.dataset, self.opts.batch_size, self.opts.seed, acc, holdout=self.opts.holdout
        )
        # Per phase: attached regularisers, post-step constraints and the modules they constrain.
        self._regs = {p.name: self.built.regularisers[p.name] for p in self.phases}
        self._constraints = {
            p.name: [r.after_step for _, r in self._regs[p.name] if hasattr(r, "after_step")]
            for p in self.phases
        }
        self._constrained = {p.name: [self.plain[n] for n in p.modules] for p in self.phases}
        self.pending: dict[str, list[Tensor]] = {}  # scalars since the last log, synced when logged
        # The hot path. Accelerate's optimizer wrapper and backward only add work (a loss division,
        # a signature inspection per zero_grad) unless there is a gradient scaler, gradient
        # accumulation or an engine such as DeepSpeed; without those, call torch directly.
        # fp16: one gradient scaler per phase (each player's loss has its own scale; Accelerate
        # keeps one for all optimisers). bf16 needs none. Autocast is torch's own, since
        # Accelerate enters no fp16 autocast on the CPU.
        self._scalers: dict[str, torch.amp.GradScaler] = {}
        self._one = torch.ones((), device=acc.device)
        if acc.mixed_precision == "fp16":
            self._scalers = {p.name: torch.amp.GradScaler(acc.device.type) for p in self.phases}
        plain_path = (
            (acc.scaler is None or bool(self._scalers))
            and acc.gradient_accumulation_steps == 1
            and acc.distributed_type
            in (DistributedType.NO, DistributedType.MULTI_CPU, DistributedType.MULTI_GPU)
        )
        self._hot_optimizers = {n: (o.optimizer if plain_path else o) for n, o in self.optimizers.items()}
        self._backward: Callable[[Tensor], None] = Tensor.backward if plain_path else acc.backward
        self._autocast: Callable[[], Any] = contextlib.nullcontext
        if acc.mixed_precision in ("fp16", "bf16"):
            dtype = torch.float16 if acc.mixed_precision == "fp16" else torch.bfloat16
            self._autocast = functools.partial(torch.autocast, acc.device.type, dtype=dtype)
        self._batch: Batch | None = None
        self._log_keys = {p.name: {"loss": f"{p.name}/loss"} for p in self.phases}  # "phase/name"
        # Phases whose optimiser state is cleared when their epoch changes, and its last value.
        self._epochs = {p.name: p.optimizer_epoch() for p in self.phases if p.optimizer_epoch is not None}

        self.step = 0
        if resume and is_empty_run(self.run_dir):
            # A run that stopped before its first checkpoint (killed, a bad image): it starts again
            # from step 0 with its recorded config, as the same command would have.
            if acc.is_main_process:
                print(
                    f"genfw: note: {self.run_dir} has no checkpoint yet; starting it from step 0 "
                    f"with its {CONFIG_FILE}",
                    file=sys.stderr,
                )
        elif resume:
            self._resume()
            if self.step >= self.opts.steps:
                raise GenfwError(
                    f"{self.run_dir} is already at step {self.step} (train.steps {self.opts.steps}); "
                    f"nothing to do: give --steps above {self.step} to train it further"
                )
        self.writer = None
        if acc.is_main_process:
            write_config(self.run_dir, cfg)
            (self.run_dir / RUN_FILE).write_text(
                json.dumps(
                    {
                        "genfw": genfw.__version__,
                        "data": attrs.asdict(self.built.dataset.info),
                        "processes": acc.num_processes,
                        "command": sys.argv,
                    },
                    indent=1,
                )
            )
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.run_dir / "tb"))
        self._real_cache: Tensor | None = None

    # -- checkpoints --------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "modules": {n: mod.state_dict() for n, mod in self.plain.items()},
            "optimizers": {n: opt.state_dict() for n, opt in self.optimizers.items()},
            "step": self.step,
            "world": self.accelerator.num_processes,
            "rng": {"cpu": torch.get_rng_state()},
        }
        if torch.cuda.is_available():
            state["rng"]["cuda"] = torch.cuda.get_rng_state()
        if isinstance(self.loader, TensorLoader):
            state["loader"] = self.loader.state_dict()
        if self._scalers:
            state["scalers"] = {n: s.state_dict() for n, s in self._scalers.items()}
        if self._epochs:
            state["optimizer_epochs"] = dict(self._epochs)
        return state

    def save(self) -> None:
        """Write the checkpoint of this step and ``generator.safetensors``, only if every weight,
        optimiser moment and loss logged since the last log is finite: otherwise raise the
        divergence error and leave the last finite checkpoint and export as they are."""
        acc = self.accelerator
        if acc.num_processes > 1:
            # DDP gives every rank rank 0's buffers (batch-norm statistics) at each forward, but the
            # last forward's update is each rank's own: align them on what the checkpoint holds.
            for mod in self.plain.values():
                for buf in mod.buffers():
                    torch.distributed.broadcast(buf, 0)
        state = self.state()
        bad = sorted({path.rsplit("/", 1)[0] for path in checkpoint.non_finite(self.pending)})
        bad += checkpoint.non_finite({"modules": state["modules"], "optimizers": state["optimizers"]})
        if acc.num_processes > 1:  # every rank stops together
            count = acc.reduce(torch.tensor(float(len(bad)), device=acc.device), "sum")
            if count.item() and not bad:
                bad = ["a value on another process"]
        if bad:
            raise self._divergence(bad)
        if acc.is_main_process:
            checkpoint.save(self.run_dir / "checkpoints", self.step, state, keep=self.opts.keep_checkpoints)
            export = {n: self.plain[n] for n in self.built.model.export}
            checkpoint.save_weights(self.run_dir / EXPORT_FILE, export)
        acc.wait_for_everyone()

    def _divergence(self, bad: list[str]) -> GenfwError:
        """The one-line error of a run whose values stopped being finite, naming what it kept."""
        more = f" and {len(bad) - 4} more" if len(bad) > 5 else ""
        pointer = self.run_dir / "checkpoints" / checkpoint.LATEST
        kept = (
            f"checkpoints/{pointer.read_text(errors='replace').strip()} and {EXPORT_FILE} hold the last "
            f"finite weights"
            if pointer.is_file()
            else "no checkpoint was written"
        )
        return GenfwError(
            f"training diverged at step {self.step}: {', '.join(bad[: 4 if more else 5])}{more} "
            f"{'is' if len(bad) == 1 else 'are'} not finite; lower the learning rate or change the "
            f"variant's options ({kept})"
        )

    def _resume(self) -> None:
        """Load the latest checkpoint, after checking all of it against this run's model."""
        try:
            path = checkpoint.find(self.run_dir / "checkpoints")
            step, state = checkpoint.load(path)
            self._check_state(path, state)
        except GenfwError as exc:
            raise GenfwError(
                f"cannot resume: {exc}; to start the run again from step 0: genfw train --config "
                f"{self.run_dir / CONFIG_FILE} --out {self.run_dir} --overwrite"
            ) from None
        for name, mod in self.plain.items():
            checkpoint.load_state(mod, state["modules"][name], f"checkpoint {path} [{name}]")
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][name])
        if "loader" in state and isinstance(self.loader, TensorLoader):
            self.loader.load_state_dict(state["loader"])
        for name, scaler_state in state.get("scalers", {}).items():
            if name in self._scalers:
                self._scalers[name].load_state_dict(scaler_state)
        for name, epoch in state.get("optimizer_epochs", {}).items():
            if name in self._epochs:
                self._epochs[name] = epoch
        if state.get("world") == 1 and self.accelerator.num_processes == 1:
            torch.set_rng_state(state["rng"]["cpu"])
            if "cuda" in state["rng"] and torch.cuda.is_available():
                torch.cuda.set_rng_state(state["rng"]["cuda"])
        else:  # another world size: fresh, deterministic streams per process
            set_seed(self.opts.seed + 7919 * step, device_specific=True)
        self.step = step

    def _check_state(self, path: Path, state: dict[str, Any]) -> None:
        """Refuse, in one line, a checkpoint whose structure or tensor shapes do not fit this run
        (what :meth:`state` writes), or whose weights or moments are not finite; loads nothing."""

        def fail(what: str) -> GenfwError:
            return GenfwError(f"checkpoint {path} does not fit this run: {what}{checkpoint.others(path)}")

        def is_int(v: Any) -> bool:
            return type(v) is int

        modules, optimizers, rng = state.get("modules"), state.get("optimizers"), state.get("rng")
        check_weights(path, modules, self.plain)
        if not isinstance(optimizers, dict):
            raise fail("'optimizers' must be a mapping by phase")
        for name, opt in self.optimizers.items():
            if name not in optimizers:
                raise fail(f"it has no optimiser state for phase '{name}'")
            checkpoint.check_optimizer_state(opt, optimizers[name], f"checkpoint {path} [optimiser {name}]")
        if "world" in state and not (is_int(state["world"]) and state["world"] >= 1):
            raise fail("'world' must be a number of processes")
        if not isinstance(rng, dict) or "cpu" not in rng:
            raise fail("'rng' must be a mapping with the CPU generator's state 'cpu'")
        rngs = {"cpu": torch.get_rng_state()}
        if "cuda" in rng and torch.cuda.is_available():
            rngs["cuda"] = torch.cuda.get_rng_state()
        for key, mine in rngs.items():
            if (
                not isinstance(rng[key], torch.Tensor)
                or rng[key].dtype != mine.dtype
                or rng[key].shape != mine.shape
            ):
                raise fail(f"rng/{key} must be a {mine.dtype} tensor of shape {list(mine.shape)}")
        loader = state.get("loader", {"epoch": 0, "pos": 0})
        if isinstance(self.loader, TensorLoader) and not (
            isinstance(loader, dict)
            and is_int(loader.get("epoch"))
            and is_int(loader.get("pos"))
            and loader["epoch"] >= 0
            and 0 <= loader["pos"] <= self.loader.x.shape[0]
        ):
            raise fail(f"'loader' must hold an epoch and a position in 0..{self.loader.x.shape[0]}")
        for key, want in (("scalers", self._scalers), ("optimizer_epochs", self._epochs)):
            got = state.get(key, {})
            if not isinstance(got, dict):
                raise fail(f"'{key}' must be a mapping by phase")
            for name in set(got) & set(want):
                value = got[name]
                ok = (
                    is_int(value)
                    if key == "optimizer_epochs"
                    else isinstance(value, dict)
                    and set(value) == set(want[name].state_dict())
                    and all(isinstance(v, (int, float)) for v in value.values())
                )
                if not ok:
                    raise fail(f"{key}/{name} is {value!r}")
        check_finite(
            {"modules": modules, "optimizers": optimizers}, f"checkpoint {path}", checkpoint.others(path)
        )

    # -- sampling and metrics (main process) ---------------------------------------------------
    def sample_grid(self) -> None:
        data, model = self.built.dataset, self.built.model
        n, labels = (2000 if data.kind == "points" else self.opts.grid), None
        if model.num_classes and data.kind != "points":
            # A conditional model: one row per class, about `grid` samples in all.
            labels = class_rows(model.num_classes, math.ceil(self.opts.grid / model.num_classes))
            n = len(labels)
        samples = forked(
            GRID_SEED, self.accelerator.device, lambda: generate(model, self.plain, n, labels=labels)
        )
        real = None
        if data.kind == "points":
            if self._real_cache is None:
                self._real_cache = real_examples(data, 2000)
            real = self._real_cache
        picture = images.render(samples, data.kind, real, labels=labels)
        images.save_png(picture, self.run_dir / "samples" / f"step_{self.step:07d}.png")
        if self.writer is not None:
            self.writer.add_image("samples", picture, self.step, dataformats="HWC")

    def evaluate(self) -> dict[str, float]:
        return evaluate(self.built, self.plain, self.accelerator.device)

    def log(self, record: dict[str, float]) -> None:
        with open(self.run_dir / METRICS_FILE, "a") as f:
            f.write(json.dumps(json_safe({"step": self.step, **record})) + "\n")
        if self.writer is not None:
            for k, v in record.items():
                if k != "time" and math.isfinite(v):
                    self.writer.add_scalar(k, v, self.step)

    # -- training -----------------------------------------------------------------------------
    def train_step(self) -> None:
        """One training step: every phase, ``repeats`` times, then ``self.step += 1``.

        Logged scalars are kept as tensors in ``self.pending``; nothing here waits for the device.
        """
        m, pending, backward = self.m, self.pending, self._backward
        batch = self._batch
        for phase in self.phases:
            opt, scaler = self._hot_optimizers[phase.name], self._scalers.get(phase.name)
            regs, constraints = self._regs[phase.name], self._constraints[phase.name]
            for _ in range(phase.repeats):
                if phase.optimizer_epoch is not None:
                    self._new_epoch(phase)
                if phase.fresh_batch or batch is None:
                    batch = next(self.loader)
                with self._autocast():
                    out = phase.step(batch, m)
                    out.context["phase"] = phase.name  # for regularisers attached to several phases
                    if scaler is not None:  # fp16: the loss scale, for penalties on gradients
                        out.context["grad_scale"] = scaler.scale(self._one)
                    loss = out.loss
                    terms = {}
                    for name, reg in regs:
                        penalty = reg.penalty(out.context)
                        if penalty is not None:
                            loss = loss + penalty
                            terms[name] = penalty
                opt.zero_grad(set_to_none=True)
                if scaler is None:
                    backward(loss)
                    opt.step()
                else:  # fp16: the scaler skips the step when a gradient overflowed
                    backward(scaler.scale(loss))
                    scaler.step(opt)
                    scaler.update()
                for constrain in constraints:
                    constrain(self._constrained[phase.name])
            # Log the last repeat of each phase: its whole objective, penalties and extra scalars
            # (detached where they still carry a graph; most logs already do not).
            keys = self._log_keys[phase.name]
            pending.setdefault(keys["loss"], []).append(loss.detach())
            for items in (terms.items(), out.logs.items()):
                for name, value in items:
                    key = keys.get(name) or keys.setdefault(name, f"{phase.name}/{name}")
                    pending.setdefault(key, []).append(value.detach() if value.requires_grad else value)
        self._batch = batch
        self.step += 1

    def _new_epoch(self, phase: Phase) -> None:
        """Clear the phase's optimiser state (Adam's moments and step count) if its epoch changed."""
        epoch = phase.optimizer_epoch()
        if epoch != self._epochs[phase.name]:
            self._epochs[phase.name] = epoch
            opt = self.optimizers[phase.name]
            getattr(opt, "optimizer", opt).state.clear()

    def flush_logs(self) -> dict[str, float]:
        """Means of the scalars logged since the last flush, averaged over processes: one device
        sync (and, on several processes, one all-reduce) for all of them. Every process calls it."""
        keys = list(self.pending)
        means = []
        if keys:
            stacked = torch.stack([torch.stack(self.pending[k]).float().mean() for k in keys])
            if self.accelerator.num_processes > 1:
                stacked = self.accelerator.reduce(stacked, "mean")
            means = stacked.tolist()
        self.pending.clear()
        return dict(zip(keys, means, strict=True))

    def fit(self) -> Result:
        acc, opts = self.accelerator, self.opts
        is_main = acc.is_main_process
        last: dict[str, float] = {}
        metrics: dict[str, float] = {}
        bar = None
        if is_main and opts.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=opts.steps, initial=self.step, dynamic_ncols=True, file=sys.stderr)
        t0 = time.perf_counter()

        while self.step < opts.steps:
            try:
                self.train_step()
            except RuntimeError as exc:
                if opts.compile and ("double backward" in str(exc) or "create_graph" in str(exc)):
                    raise GenfwError(
                        "train.compile: torch.compile does not support the double backward of a gradient "
                        f"penalty (regularisers: {', '.join(self.cfg.regularisers) or 'none'}); drop --compile"
                    ) from None
                raise

            final = self.step == opts.steps
            if self.step % opts.log_every == 0 or final:
                last = self.flush_logs()
                if not all(math.isfinite(v) for v in last.values()):
                    bad = [k for k, v in last.items() if not math.isfinite(v)]
                    if is_main:
                        self.log({**last, "time": time.perf_counter() - t0})
                    raise self._divergence(bad)
                if is_main:
                    self.log({**last, "time": time.perf_counter() - t0})
                    if bar is not None:
                        bar.set_postfix(
                            {k: f"{v:.3g}" for k, v in last.items() if k.endswith("/loss")}, refresh=False
                        )
            if bar is not None:
                bar.update(1)
            if is_main and ((opts.sample_every and self.step % opts.sample_every == 0) or final):
                self.sample_grid()
            if is_main and ((opts.eval_every and self.step % opts.eval_every == 0) or final):
                metrics = self.evaluate()
                if metrics:
                    self.log(metrics)
            if (opts.checkpoint_every and self.step % opts.checkpoint_every == 0) or final:
                self.save()

        if bar is not None:
            bar.close()
        if self.writer is not None:
            write_hparams(self.writer, self.cfg, {**last, **metrics}, self.step)
            self.writer.close()
        acc.wait_for_everyone()
        return Result(run_dir=self.run_dir, step=self.step, last_logs=last, metrics=metrics)


def train(cfg: RunConfig, run_dir: Path, *, resume: bool = False, overwrite: bool = False) -> Result:
    return Trainer(cfg, run_dir, resume=resume, overwrite=overwrite).fit()


# --- reading a finished run ------------------------------------------------------------------------


def read_run(run_dir: Path, registry: Any, overrides: list[tuple[str, Any]] | None = None) -> RunConfig:
    """The resolved config of a run folder (plus ``overrides``)."""
    from genfw import config as config_mod

    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).is_file():
        raise GenfwError(
            f"{run_dir} is not a genfw run folder (no {CONFIG_FILE}); give the folder `genfw train` wrote"
        )
    raw = config_mod.merge(config_mod.load_file(run_dir / CONFIG_FILE), overrides or [])
    return config_mod.resolve(raw, registry)


def load_model(run_dir: Path, cfg: RunConfig, *, with_data: bool) -> tuple[Built | None, Model, Modules]:
    """Rebuild a run's model and load its weights.

    With ``with_data`` the data set is built too and every module is loaded from the latest
    checkpoint (for metrics and reconstructions); without, only the exported sampling modules are
    loaded from ``generator.safetensors`` and the data set is not needed.
    """
    from genfw.model import DataInfo

    run_dir = Path(run_dir)
    if with_data:
        built = build(cfg)
        model = built.model
        path = checkpoint.find(run_dir / "checkpoints")
        _, state = checkpoint.load(path)
        modules = state.get("modules")
        check_weights(path, modules, model.modules)
        check_finite({"modules": modules}, f"checkpoint {path}", checkpoint.others(path))
        for name, mod in model.modules.items():
            checkpoint.load_state(mod, modules[name], f"checkpoint {path} [{name}]")
        return built, model, Modules(model.modules)
    try:
        info = json.loads((run_dir / RUN_FILE).read_text())["data"]
        data = DataInfo(shape=tuple(info["shape"]), num_classes=info["num_classes"], kind=info["kind"])
    except (OSError, ValueError, KeyError) as exc:
        raise GenfwError(f"{run_dir}/{RUN_FILE} is missing or unreadable ({exc})") from None
    ctx = BuildContext(components=cfg.slots, data=data)
    model = cfg.variant.build().build(ctx)
    attach_regularisers(cfg, model, ctx)  # their setup may change the exported modules (EMA weights)
    export = {n: model.modules[n] for n in model.export}
    checkpoint.load_weights(run_dir / EXPORT_FILE, export)
    weights = {f"{n}.{k}": v for n, mod in export.items() for k, v in mod.state_dict().items()}  # its keys
    check_finite(weights, str(run_dir / EXPORT_FILE))
    return None, model, Modules(model.modules)


def is_empty_run(run_dir: Path) -> bool:
    """A run folder whose run stopped before its first checkpoint: no checkpoint, no export."""
    return checkpoint.is_empty(run_dir / "checkpoints") and not (run_dir / EXPORT_FILE).exists()


def check_weights(path: Path, state: Any, modules: dict[str, nn.Module]) -> None:
    """The ``modules`` part of checkpoint ``path`` holds every module's tensors, of their shapes."""
    if not isinstance(state, dict):
        raise GenfwError(
            f"checkpoint {path} does not fit this run: 'modules' must be a mapping by name"
            f"{checkpoint.others(path)}"
        )
    for name, mod in modules.items():
        if name not in state:
            raise GenfwError(f"checkpoint {path} has no weights for module '{name}'{checkpoint.others(path)}")
        checkpoint.check_module_state(mod, state[name], f"checkpoint {path} [{name}]")


def check_finite(tree: dict[str, Any], where: str, hint: str = "") -> None:
    """Refuse weights (or optimiser moments) with a NaN or an infinity, from a run that diverged,
    in one line; ``hint`` ends it (e.g. the run's other checkpoints)."""
    bad = checkpoint.non_finite(tree)
    if bad:
        raise GenfwError(
            f"{where} holds non-finite values ({', '.join(bad[:3])}): the run had diverged when it "
            f"was written{hint}"
        )
