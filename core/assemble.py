"""Assembling a run: the data set, the variant's model, its remedies and metrics, from a config.

Nothing here trains; :class:`genfw.train.Trainer` prepares what :func:`build` returns.
"""

from __future__ import annotations

import functools
from typing import Any

import attrs
import torch
from torch import nn

from genfw import schedules
from genfw.callbacks import Callbacks
from genfw.config import RunConfig, applies_to
from genfw.contracts import ALWAYS_PROVIDED, VariantInfo
from genfw.data import refuse_for_streams
from genfw.errors import GenfwError
from genfw.model import BuildContext, DataInfo, GenDataset, Model, Optim


def make_optimizer(optim: Optim, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    if optim.name == "adam":
        return torch.optim.Adam(
            params, lr=optim.lr, betas=optim.betas, eps=optim.eps, weight_decay=optim.weight_decay
        )
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
    callbacks: Callbacks = attrs.field(factory=Callbacks)


def build(cfg: RunConfig, dataset: GenDataset | None = None) -> Built:
    """Build the data set, the variant's model with its callbacks, its regularisers and metrics."""
    dataset = cfg.dataset.build() if dataset is None else dataset
    refuse_for_streams(dataset, cfg.train.holdout, cfg.train.data_fraction)  # before a run folder exists
    n = len(dataset)
    info = attrs.evolve(dataset.info, size=n - round(cfg.train.holdout * n))  # the training examples
    model, ctx = build_model(cfg, info)
    regs = attach_regularisers(cfg, model, ctx)
    metrics = {name: spec.build() for name, spec in cfg.metrics.items()}
    return Built(
        cfg=cfg, dataset=dataset, model=model, regularisers=regs, metrics=metrics, callbacks=ctx.events
    )


def variant_info(cfg: RunConfig) -> VariantInfo:
    return VariantInfo(cfg.variant.name, cfg.variant.component.factory, cfg.variant.options)


def build_model(cfg: RunConfig, data: DataInfo) -> tuple[Model, BuildContext]:
    """The variant's model for data of ``data``'s shape, with the run's callbacks attached (in
    their declared order; genfw's ``lr_schedule`` first where rates change) and their
    ``on_model_built`` applied; ``ctx.events`` fires their events."""
    ctx = BuildContext(
        components=cfg.slots,
        data=data,
        events=Callbacks(),
        registry=cfg.registry,
        batch_size=cfg.train.batch_size,
        remedies={n: spec.options for n, spec in {**cfg.regularisers, **cfg.callbacks}.items()},
    )
    model = cfg.variant.build().build(ctx)
    callbacks = [(name, spec.build()) for name, spec in cfg.callbacks.items()]
    # The learning rates (train.lr_schedule, a variant's Phase.lr_scale): genfw's own callback, first.
    rates = schedules.schedule_callback(cfg.train, model, cfg.variant.name)
    if rates is not None:
        if schedules.NAME in cfg.callbacks:
            raise GenfwError(
                f"remedy '{schedules.NAME}' has the name of genfw's learning-rate schedule "
                f"(train.lr_schedule); leave it out or rename it in its plugin"
            )
        callbacks.insert(0, (schedules.NAME, rates))
    ctx.events.attach(callbacks)
    ctx.events.model_built(model, variant_info(cfg), ctx)
    return model, ctx


def attach_regularisers(cfg: RunConfig, model: Model, ctx: BuildContext) -> dict[str, list[tuple[str, Any]]]:
    """Build the run's regularisers, check that the model's phases fit them, and run each one's
    optional ``setup(model, ctx)`` (which may add state modules, after every callback changed the
    model). Phase name -> ``[(name, regulariser)]``.

    A refusal here names the variants of the run's registry the regulariser works with
    (:func:`genfw.config.applies_to`)."""
    phase_names = [p.name for p in model.phases]
    regs: dict[str, list[tuple[str, Any]]] = {p.name: [] for p in model.phases}

    for name, spec in cfg.regularisers.items():
        reg = spec.build()
        fitting = functools.partial(applies_to, name, spec.component.factory, cfg.registry)
        targets = [p for p in model.phases if p.name in reg.phases]
        if not targets:
            raise GenfwError(
                f"regulariser '{name}' applies to {'/'.join(reg.phases)} phases; variant "
                f"'{cfg.variant.name}' has phases {', '.join(phase_names)}{fitting()}"
            )
        for phase in targets:
            missing = sorted(set(reg.needs) - set(phase.provides) - ALWAYS_PROVIDED)
            if missing:
                raise GenfwError(
                    f"regulariser '{name}' needs {', '.join(missing)}, which phase '{phase.name}' of "
                    f"variant '{cfg.variant.name}' does not provide (it provides "
                    f"{', '.join(sorted(phase.provides)) or 'nothing'}){fitting()}"
                )
            regs[phase.name].append((name, reg))
        if hasattr(reg, "setup"):
            reg.setup(model, ctx)
    return regs
