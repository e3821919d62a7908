"""The training loop, on Hugging Face Accelerate.

``genfw.train(config, *, out=None, **overrides) -> Run``, the Python API's way to train a run, is
this module called (see :func:`genfw.api.train`); what follows is the loop behind it.

A run is assembled in :mod:`genfw.assemble` (data set, model, remedies, metrics), fed by
:mod:`genfw.data`, sampled and evaluated by :mod:`genfw.sampling`, and written to the run folder by
:mod:`genfw.rundir`; this module prepares it with Accelerate and trains it. The names of those
modules that scripts and tests use are importable from here too (``__all__``).

The loop knows nothing of GANs or autoencoders: it builds the variant's :class:`~genfw.Model`, then for
each step runs every phase (``repeats`` times), adds the attached regularisers' penalties,
back-propagates with ``accelerator.backward``, steps that phase's optimiser and applies
post-step constraints. Around that: logging (``metrics.jsonl``, the experiment trackers of
``train.log_with`` through Accelerate, TensorBoard by default: :mod:`genfw.trackers`; tqdm), sample grids,
metrics and checkpoints, all on the main process.

Where is a loss computed? In the variant's phase ``step`` (e.g. ``genfw_plugins/gan.py``) with the
loss component of its slot (``genfw_plugins/losses.py``); regularisers in
``genfw_plugins/regularisers.py``.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import inspect
import json
import math
import os
import shutil
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, is_initialized
from accelerate.utils import DistributedType, set_seed
from torch import Tensor, nn

from genfw import api, checkpoint, images, schedules, trackers
from genfw.assemble import Built, attach_regularisers, build, make_optimizer
from genfw.config import RunConfig
from genfw.contracts import LoopState
from genfw.data import (
    StreamLoader,
    TensorLoader,
    held_out_examples,
    holdout_split,
    make_loader,
    real_examples,
)
from genfw.errors import GenfwError
from genfw.model import Batch, Modules, Phase
from genfw.rundir import (
    CONFIG_FILE,
    EXPORT_FILE,
    METRICS_FILE,
    RUN_FILE,
    check_run_dir,
    check_run_state,
    create_run_dir,
    flat_config,
    is_empty_run,
    json_safe,
    load_model,
    read_run,
    write_config,
    write_hparams,
    write_run_json,
)
from genfw.sampling import GRID_SEED, class_rows, evaluate, forked, generate, sample_labels

__all__ = [  # the run API: what scripts, benchmarks and tests import from genfw.train
    "EXPORT_FILE",
    "RUN_FILE",
    "Built",
    "Result",
    "Trainer",
    "attach_regularisers",
    "build",
    "check_compiler",
    "check_run_dir",
    "class_rows",
    "evaluate",
    "forked",
    "generate",
    "held_out_examples",
    "holdout_split",
    "json_safe",
    "load_model",
    "make_loader",
    "make_optimizer",
    "phase_objective",
    "read_run",
    "sample_labels",
    "train",
]

#: fp16: a loss scale below this means every step overflows (each skipped step halves it from
#: 2**16): the run diverged, whatever its weights.
MIN_LOSS_SCALE = 2.0**-10


def check_compiler(device: torch.device) -> None:
    """torch.compile on the CPU generates C++: refuse early, in one line, where no compiler exists."""
    if device.type == "cpu":
        cxx = os.environ.get("CXX") or "g++"
        if not any(shutil.which(c) for c in (cxx, "g++", "c++", "clang++")):
            raise GenfwError(
                "train.compile on the CPU needs a C++ compiler (g++ or clang++, or $CXX); "
                "install one or drop --compile"
            )


@attrs.define
class Result:
    run_dir: Path
    step: int
    last_logs: dict[str, float]
    metrics: dict[str, float]


def phase_objective(
    out: Any, regs: list[tuple[str, Any]], *, replaces: bool
) -> tuple[Tensor, dict[str, Tensor]]:
    """A phase's objective: its loss plus its regularisers' penalties, and the terms to log. Where
    a regulariser ``replaces_loss`` (feature matching's paper form) the objective is the penalties
    alone, and the phase's own loss is logged as ``replaced_loss``."""
    loss, terms = out.loss, {}
    if replaces:
        terms["replaced_loss"] = out.loss.detach()
        loss = out.loss.new_zeros(())
    for name, reg in regs:
        penalty = reg.penalty(out.context)
        if penalty is not None:
            loss = loss + penalty
            terms[name] = penalty
    return loss, terms


def make_accelerator(opts: Any, run_dir: Path | None = None) -> Accelerator:
    """The run's Accelerator, checked against the launcher's world size, with the trackers of
    ``opts.log_with`` for ``run_dir`` (none without one; :mod:`genfw.trackers` starts them)."""
    # Under torchrun on a machine without a GPU, Accelerate starts no process group unless told
    # to use the CPU (gloo); each process would then train alone and race on the run folder.
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cpu = opts.cpu or (world > 1 and not torch.cuda.is_available())
    # Accelerate keeps its settings in a process-wide singleton; a second run in one process
    # (tests, benchmarks, notebooks) with another precision needs fresh settings, same processes.
    # Accelerate has no public way to change them: `_reset_state` is what its own test utilities
    # call (accelerate.test_utils), and its state says which precision it holds.
    if is_initialized() and AcceleratorState().mixed_precision != opts.mixed_precision:
        AcceleratorState._reset_state()
    log_with = trackers.log_with(opts.log_with, run_dir) if run_dir is not None else []
    acc = Accelerator(
        cpu=cpu,
        mixed_precision=opts.mixed_precision,
        log_with=log_with or None,
        project_config=trackers.project_config(run_dir) if run_dir is not None else None,
    )
    if world > 1:
        atexit.unregister(_close_process_group)  # once per process, however many runs it makes
        atexit.register(_close_process_group)
    if acc.num_processes != world:
        raise GenfwError(
            f"launched as {world} processes but Accelerate formed a group of {acc.num_processes}; "
            f"check the launcher's settings (accelerate config, --nproc_per_node)"
        )
    return acc


def seed_process(seed: int, rank: int) -> None:
    """Seed Python, numpy and torch with ``seed + rank`` (each process its own noise), wrapped into
    numpy's 0 .. 2**32 - 1: ``train.seed`` may be 2**32 - 1 on several processes, and a resume at
    another world size adds 7919 per step."""
    set_seed((seed + rank) % 2**32)


def _close_process_group() -> None:
    """Tear the process group down, together, before the interpreter exits. A rank that exits while
    another's gloo threads still listen to it makes that rank abort ("terminate called without an
    active exception"), failing a run that trained well: so every rank waits for the others first."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


class Trainer:
    """One run: assembles it, prepares it with Accelerate, trains it, and writes the run folder.

    Read :meth:`fit` (the loop) and :meth:`train_step` (one step of every phase) first; the rest
    sets up, checkpoints and logs around them.
    """

    def __init__(self, cfg: RunConfig, run_dir: Path, *, resume: bool = False, overwrite: bool = False):
        self.cfg, self.run_dir, self.opts = cfg, Path(run_dir), cfg.train
        acc = self.accelerator = make_accelerator(self.opts, self.run_dir)
        check_run_dir(self.run_dir, resume=resume, overwrite=overwrite)
        # Every process builds the same modules, also those DDP does not synchronise (EMA weights,
        # historical means); then seed + rank: each process its own noise.
        set_seed(self.opts.seed)
        self.built = build(cfg)  # bad data paths and the like fail here, before anything is written
        if acc.num_processes > 1:
            seed_process(self.opts.seed, acc.process_index)
        acc.wait_for_everyone()  # every rank has checked the folder before the main one changes it
        if acc.is_main_process:
            create_run_dir(self.run_dir, resume=resume, overwrite=overwrite)
        acc.wait_for_everyone()

        model = self.built.model
        self.phases: list[Phase] = model.phases
        self.callbacks = self.built.callbacks
        self._prepare(model)
        self.loader = make_loader(
            self.built.dataset,
            self.opts.batch_size,
            self.opts.seed,
            acc,
            holdout=self.opts.holdout,
            data_fraction=self.opts.data_fraction,
        )
        self._hot_path()
        self.step = 0
        self._stage = model.stage() if model.stage is not None else 0
        self.state_view = LoopState(self.step, self.m, self.plain, self.optimizers, self._stage)
        if resume:
            self._resume_or_restart()
        self.writer = None  # TensorBoard's SummaryWriter, where the run logs to TensorBoard
        if acc.is_main_process:
            write_config(self.run_dir, cfg)
            write_run_json(self.run_dir, cfg, self.built.dataset.info, acc.num_processes)
            try:
                trackers.start(acc, self.run_dir, flat_config(cfg), resume=resume)
            except BaseException as exc:  # those started are closed (an mlflow run ends as failed)
                trackers.finish(acc, exc)
                raise
            self.writer = next((t.writer for t in acc.trackers if t.name == "tensorboard"), None)
        self._real_cache: Tensor | None = None

    # -- setting up -------------------------------------------------------------------------------
    def _prepare(self, model: Any) -> None:
        """Optimisers per phase; modules and optimisers through Accelerate (DDP on several
        processes); ``self.m`` the modules the phases see, ``self.plain`` the same unwrapped."""
        acc = self.accelerator
        if self.opts.sync_batch_norm and acc.num_processes > 1:
            if acc.device.type == "cpu":
                raise GenfwError(
                    "train.sync_batch_norm needs GPUs (torch's SyncBatchNorm does not run on the CPU); "
                    "drop --sync-batch-norm for CPU processes"
                )
            model.modules = {
                n: nn.SyncBatchNorm.convert_sync_batchnorm(mod) for n, mod in model.modules.items()
            }
        optimizers = {}
        for phase in self.phases:
            params = list({id(p): p for n in phase.modules for p in model.modules[n].parameters()}.values())
            optimizers[phase.name] = make_optimizer(phase.optim, params)
        # Modules with nothing to train (EMA weights, state of callbacks) are only moved: DDP refuses them.
        names = [n for n, mod in model.modules.items() if any(p.requires_grad for p in mod.parameters())]
        prepared = acc.prepare(*(model.modules[n] for n in names), *optimizers.values())
        if len(names) + len(optimizers) == 1:
            prepared = (prepared,)
        wrapped = dict(zip(names, prepared[: len(names)], strict=True))
        self.m = Modules({n: wrapped.get(n) or mod.to(acc.device) for n, mod in model.modules.items()})
        self.optimizers: dict[str, torch.optim.Optimizer] = dict(
            zip(optimizers, prepared[len(names) :], strict=True)
        )
        # Sampling and metrics run on the main process alone: unwrapped modules (a DDP forward on
        # one rank would wait for the others).
        self.plain = Modules({n: acc.unwrap_model(mod) for n, mod in self.m.items()})
        if self.opts.compile:
            check_compiler(acc.device)
            for mod in self.plain.values():
                mod.compile()  # in place: the DDP wrapper and state_dict keys stay as they are

    def _hot_path(self) -> None:
        """What :meth:`train_step` reads per phase, resolved once.

        Accelerate's optimizer wrapper and backward only add work (a loss division, a signature
        inspection per zero_grad) unless there is a gradient scaler, gradient accumulation or an
        engine such as DeepSpeed; without those, torch is called directly. fp16: one gradient scaler
        per phase (each player's loss has its own scale; Accelerate keeps one for all optimisers);
        bf16 needs none. Autocast is torch's own, since Accelerate enters no fp16 autocast on the CPU.
        """
        acc = self.accelerator
        regs = self.built.regularisers
        self._regs = {p.name: regs[p.name] for p in self.phases}
        self._constraints = {
            p.name: [r.after_step for _, r in regs[p.name] if hasattr(r, "after_step")] for p in self.phases
        }
        self._constrained = {p.name: [self.plain[n] for n in p.modules] for p in self.phases}
        self._replaces = {
            p.name: any(getattr(r, "replaces_loss", False) for _, r in regs[p.name]) for p in self.phases
        }
        self.pending: dict[str, list[Tensor]] = {}  # scalars since the last log, synced when logged
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
        self._on_start = self.callbacks.wants("on_phase_start")
        self._on_output = self.callbacks.wants("on_phase_output")
        self._on_phase_end = self.callbacks.wants("on_phase_end")
        self._on_step_end = self.callbacks.wants("on_step_end")

    def _resume_or_restart(self) -> None:
        if is_empty_run(self.run_dir):
            # A run that stopped before its first checkpoint (killed, a bad image): it starts again
            # from step 0 with its recorded config, as the same command would have.
            if self.accelerator.is_main_process:
                print(
                    f"genfw: note: {self.run_dir} has no checkpoint yet; starting it from step 0 "
                    f"with its {CONFIG_FILE}",
                    file=sys.stderr,
                )
            return
        self._resume()
        if self.step >= self.opts.steps:
            raise GenfwError(
                f"{self.run_dir} is already at step {self.step} (train.steps {self.opts.steps}); "
                f"nothing to do: give --steps above {self.step} to train it further"
            )

    # -- training -------------------------------------------------------------------------------
    def fit(self) -> Result:
        """The loop (:meth:`loop`), then the trackers closed, also when it fails."""
        try:
            result = self.loop()
        except BaseException as exc:
            trackers.finish(self.accelerator, exc)
            raise
        trackers.finish(self.accelerator)
        self.accelerator.wait_for_everyone()
        return result

    def loop(self) -> Result:
        """Train steps; log, sample, evaluate and checkpoint on their schedules."""
        opts, is_main = self.opts, self.accelerator.is_main_process
        last: dict[str, float] = {}
        metrics: dict[str, float] = {}
        bar = self._progress_bar()
        t0 = time.perf_counter()
        while self.step < opts.steps:
            self._guarded_step()
            final = self.step == opts.steps
            if self.step % opts.log_every == 0 or final:
                last = self.flush_logs()
                if is_main:
                    self.log({**last, "time": time.perf_counter() - t0})
                    if bar is not None:
                        bar.set_postfix(
                            {k: f"{v:.3g}" for k, v in last.items() if k.endswith("/loss")}, refresh=False
                        )
                bad = [k for k, v in last.items() if not math.isfinite(v)]
                if bad and not self._skipped_by_scalers():
                    raise self._divergence(bad)
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
        return Result(run_dir=self.run_dir, step=self.step, last_logs=last, metrics=metrics)

    def train_step(self) -> None:
        """One training step: every phase, ``repeats`` times, then ``self.step += 1``.

        Each repeat: the phase's objective, its regularisers' penalties, backward, the optimiser
        step, post-step constraints, with the callbacks' events around them (the learning rate is
        set by the ``lr_schedule`` callback's ``on_phase_start``: :mod:`genfw.schedules`). Logged scalars stay
        tensors in ``self.pending``: nothing here waits for the device.
        """
        m, pending, backward, events, state = (
            self.m,
            self.pending,
            self._backward,
            self.callbacks,
            self.state_view,
        )
        state.step, batch, stage_of = self.step, self._batch, self.built.model.stage
        for phase in self.phases:
            opt, scaler = self._hot_optimizers[phase.name], self._scalers.get(phase.name)
            regs, constraints = self._regs[phase.name], self._constraints[phase.name]
            replaces = self._replaces[phase.name]
            for _ in range(phase.repeats):
                if stage_of is not None and stage_of() != self._stage:
                    self._new_stage(stage_of())
                if self._on_start:  # genfw's learning-rate schedule sets the rate here
                    events.phase_start(phase.name, state)
                if phase.fresh_batch or batch is None:
                    batch = next(self.loader)
                with self._autocast():
                    out = phase.step(batch, m)
                    out.context["phase"], out.context["step"] = phase.name, self.step
                    if scaler is not None:  # fp16: the loss scale, for penalties on gradients
                        out.context["grad_scale"] = scaler.scale(self._one)
                    if self._on_output:
                        events.phase_output(phase.name, out, state)
                    loss, terms = phase_objective(out, regs, replaces=replaces)
                opt.zero_grad(set_to_none=True)
                if scaler is None:
                    backward(loss)
                    opt.step()
                else:  # fp16: the scaler skips the step when a gradient overflowed
                    backward(scaler.scale(loss))
                    scaler.step(opt)
                    scaler.update()
                for constrain in constraints:
                    constrain(self._constrained[phase.name], phase.name)
                if self._on_phase_end:
                    events.phase_end(phase.name, out, state)
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
        if self._on_step_end:
            state.step = self.step
            events.step_end(state)

    def _new_stage(self, stage: int) -> None:
        """The model's stage moved on (ProGAN: a fade starts or ends): tell the callbacks."""
        self._stage = self.state_view.stage = stage
        self.callbacks.stage_change(self.state_view)

    def _guarded_step(self) -> None:
        try:
            self.train_step()
        except RuntimeError as exc:
            if self.opts.compile and ("double backward" in str(exc) or "create_graph" in str(exc)):
                raise GenfwError(
                    "train.compile: torch.compile does not support the double backward of a gradient "
                    f"penalty (regularisers: {', '.join(self.cfg.regularisers) or 'none'}); drop --compile"
                ) from None
            raise

    def flush_logs(self) -> dict[str, float]:
        """Means of the scalars logged since the last flush, averaged over processes: one device
        sync (and, on several processes, one all-reduce) for all of them. Every process calls it."""
        keys = list(self.pending)
        means = []
        if keys:
            stacked = torch.stack([self._mean(torch.stack(self.pending[k]).float()) for k in keys])
            if self.accelerator.num_processes > 1:
                stacked = self.accelerator.reduce(stacked, "mean")
            means = stacked.tolist()
        self.pending.clear()
        return dict(zip(keys, means, strict=True))

    def _mean(self, values: Tensor) -> Tensor:
        """The mean of one key's logged values; under fp16, of its finite ones (NaN if none): a step
        whose gradients overflowed was skipped by the loss scaler, and its scaled penalties are not
        finite by design."""
        if not self._scalers:
            return values.mean()
        finite = values.isfinite()
        return torch.where(finite, values, 0.0).sum() / finite.sum()

    def _skipped_by_scalers(self) -> bool:
        """fp16: whether values that are not finite may be the overflows the loss scalers skip.
        They back off (halve) at each, so a run whose losses truly diverged drives a scale below
        :data:`MIN_LOSS_SCALE` within a few dozen steps; until then its weights are never updated
        with a non-finite gradient (and every checkpoint's are checked)."""
        return bool(self._scalers) and self._loss_scale() >= MIN_LOSS_SCALE

    def _loss_scale(self) -> float:
        """fp16: the smallest of the players' loss scales."""
        return min(s.get_scale() for s in self._scalers.values())

    # -- sampling, metrics and logs (main process) ------------------------------------------------
    def sampling_modules(self) -> Modules:
        """The modules samples are drawn with: the callbacks' choice (EMA weights) over the live ones."""
        return self.callbacks.sampler(self.plain)

    def sample_grid(self) -> None:
        data, model = self.built.dataset, self.built.model
        n, labels = (2000 if data.kind == "points" else self.opts.grid), None
        if model.num_classes and data.kind != "points":
            # A conditional model: one row per class, about `grid` samples in all.
            labels = class_rows(model.num_classes, math.ceil(self.opts.grid / model.num_classes))
            n = len(labels)
        modules = self.sampling_modules()
        samples = forked(
            GRID_SEED, self.accelerator.device, lambda: generate(model, modules, n, labels=labels)
        )
        real = None
        if data.kind == "points":
            if self._real_cache is None:
                self._real_cache = real_examples(data, 2000)
            real = self._real_cache
        picture = images.render(samples, data.kind, real, labels=labels)
        path = self.run_dir / "samples" / f"step_{self.step:07d}.png"
        images.save_png(picture, path)
        trackers.log_image(self.accelerator, "samples", picture, path, self.step)

    def evaluate(self) -> dict[str, float]:
        return evaluate(self.built, self.sampling_modules(), self.accelerator.device)

    def log(self, record: dict[str, float]) -> None:
        """The one path of every scalar: a line of ``metrics.jsonl``, and the finite values to
        each tracker (``accelerator.log``)."""
        with open(self.run_dir / METRICS_FILE, "a") as f:
            f.write(json.dumps(json_safe({"step": self.step, **record})) + "\n")
        self.accelerator.log({k: v for k, v in record.items() if math.isfinite(v)}, step=self.step)

    def _progress_bar(self) -> Any:
        if not (self.accelerator.is_main_process and self.opts.progress):
            return None
        from tqdm.auto import tqdm

        return tqdm(total=self.opts.steps, initial=self.step, dynamic_ncols=True, file=sys.stderr)

    # -- checkpoints ----------------------------------------------------------------------------
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
        if self.accelerator.num_processes > 1:
            # Every process's own random state (its noise, its augmentations' draws): a resume on as
            # many processes hands each rank its own and continues bit for bit.
            rows = {
                key: self.accelerator.gather(value.to(self.accelerator.device)[None]).cpu()
                for key, value in state["rng"].items()
            }
            world = self.accelerator.num_processes
            state["rng"]["ranks"] = [{key: rows[key][r].clone() for key in rows} for r in range(world)]
        if isinstance(self.loader, (TensorLoader, StreamLoader)):
            state["loader"] = self.loader.state_dict()
        if isinstance(self.loader, StreamLoader) and self.accelerator.num_processes > 1:
            # Every process's own position (its shard's epochs may be longer or shorter than rank 0's).
            mine = torch.tensor([self.loader.epoch, self.loader.batches], device=self.accelerator.device)
            state["loader"]["ranks"] = self.accelerator.gather(mine).view(-1, 2).tolist()
        if self._scalers:
            state["scalers"] = {n: s.state_dict() for n, s in self._scalers.items()}
        if self.built.model.stage is not None:
            state["stage"] = self._stage
        callbacks = self.callbacks.state_dict()
        if callbacks:
            state["callbacks"] = callbacks
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
        bad = (
            []
            if self._skipped_by_scalers()
            else sorted({path.rsplit("/", 1)[0] for path in checkpoint.non_finite(self.pending)})
        )
        bad += checkpoint.non_finite({"modules": state["modules"], "optimizers": state["optimizers"]})
        if acc.num_processes > 1:  # every rank stops together
            count = acc.reduce(torch.tensor(float(len(bad)), device=acc.device), "sum")
            if count.item() and not bad:
                bad = ["a value on another process"]
        if bad:
            raise self._divergence(bad)
        if acc.is_main_process:
            checkpoint.save(self.run_dir / "checkpoints", self.step, state, keep=self.opts.keep_checkpoints)
            sampling = self.sampling_modules()
            export = {n: sampling[n] for n in self.built.model.export}
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
            f"variant's options ({kept}{self._scale_note()})"
        )

    def _scale_note(self) -> str:
        if not self._scalers:
            return ""
        return f"; the fp16 loss scale fell to {self._loss_scale():.3g}"

    def _resume(self) -> None:
        """Load the latest checkpoint, after checking all of it against this run's model."""
        try:
            path = checkpoint.find(self.run_dir / "checkpoints")
            step, state = checkpoint.load(path)
            loader = self.loader.x.shape[0] if isinstance(self.loader, TensorLoader) else None
            check_run_state(path, state, self.plain, self.optimizers, self._scalers, loader)
            if isinstance(self.loader, StreamLoader) and "loader" in state:
                self.loader.load_state_dict(state["loader"])  # checked here, before anything is loaded
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
        if "stage" in state:
            self._stage = self.state_view.stage = state["stage"]
        self.callbacks.load_state_dict(state.get("callbacks", {}))
        schedules.unscheduled_resume(
            state.get("callbacks", {}), self.callbacks.names(), self.phases, self.optimizers
        )
        rng = own_random_state(state, self.accelerator.num_processes, self.accelerator.process_index)
        if rng is not None:
            torch.set_rng_state(rng["cpu"])
            if "cuda" in rng and torch.cuda.is_available():
                torch.cuda.set_rng_state(rng["cuda"])
        else:  # another world size: fresh, deterministic streams per process
            seed_process(self.opts.seed + 7919 * step, self.accelerator.process_index)
        self.step = step


def own_random_state(state: dict[str, Any], world: int, rank: int) -> dict[str, Any] | None:
    """The random state a checkpoint holds for process ``rank`` of ``world``: the one state of a
    one-process checkpoint, each rank's own of a checkpoint of as many processes; ``None`` for
    another world size (or a multi-process checkpoint of a genfw that kept the main process's alone)."""
    if state.get("world", 1) != world:
        return None
    if world == 1:
        return state["rng"]
    ranks = state["rng"].get("ranks")
    return ranks[rank] if isinstance(ranks, list) and len(ranks) == world else None


def train(cfg: RunConfig, run_dir: Path, *, resume: bool = False, overwrite: bool = False) -> Result:
    return Trainer(cfg, run_dir, resume=resume, overwrite=overwrite).fit()


# `genfw.train` is this module (the package attribute Python sets on import, which `from genfw
# import train` returns) and the public function alike: calling the module is genfw.api.train.
class _TrainModule(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> api.Run:
        return api.train(*args, **kwargs)


__signature__ = inspect.signature(api.train)
sys.modules[__name__].__class__ = _TrainModule
