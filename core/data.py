"""Training data: endless sharded batches, the fixed hold-out split, reproducible real examples."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch
from accelerate import Accelerator
from torch import Tensor

from genfw.errors import GenfwError
from genfw.model import Batch, GenDataset


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


class StreamLoader:
    """Endless batches from a streamed data set (``dataset.streaming``), each process its own shard.

    Each epoch is a new pass over ``dataset.stream(seed, epoch, rank, world)`` (its order re-seeded
    by the epoch), batched by a ``DataLoader`` with ``dataset.num_workers`` decoding workers; a
    shard's last incomplete batch is dropped. The position is the epoch and the number of batches
    this process has consumed in it: a resumed run opens that epoch again and skips that many
    batches (reading and decoding them again), so it continues with the batch it would have
    drawn next. The position is per process (the checkpoint holds each one's): resumed on another
    number of processes, each takes rank 0's, in its new shard.
    """

    def __init__(
        self,
        dataset: GenDataset,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world: int = 1,
        device: torch.device | str = "cpu",
    ):
        self.dataset, self.batch_size, self.seed = dataset, batch_size, seed
        self.rank, self.world, self.device = rank, world, torch.device(device)
        self.epoch, self.batches = 0, 0
        self._it: Iterator[Any] | None = None

    def _open(self) -> Iterator[Any]:
        """The current epoch's batches, the first ``self.batches`` of them skipped."""
        items = self.dataset.stream(self.seed, self.epoch, self.rank, self.world)
        workers = self.dataset.num_workers
        loader = torch.utils.data.DataLoader(
            items,  # type: ignore[arg-type]
            batch_size=self.batch_size,
            drop_last=True,
            num_workers=workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
            # its own generator: opening an epoch leaves the training RNG alone (a resume reopens
            # one at another step than the run it continues did)
            generator=torch.Generator().manual_seed(self.seed * 100_003 + self.epoch),
        )
        it = iter(loader)
        for _ in range(self.batches):
            next(it)  # a resumed run: the batches this epoch had already given
        return it

    def __next__(self) -> Batch:
        if self._it is None:
            self._it = self._open()
        try:
            x, y = next(self._it)
        except StopIteration:
            if self.batches == 0:
                raise GenfwError(
                    f"train.batch_size {self.batch_size} exceeds the examples of process {self.rank}'s "
                    f"shard of the streamed data set ({self.world} process(es)); choose a smaller batch"
                ) from None
            self.epoch, self.batches = self.epoch + 1, 0
            self._it = self._open()
            return next(self)
        self.batches += 1
        nb = self.device.type == "cuda"
        return Batch(x.to(self.device, torch.float32, non_blocking=nb), y.to(self.device, torch.long))

    def __iter__(self) -> Iterator[Batch]:
        return self

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batches": self.batches}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Rank 0's position ``{"epoch", "batches"}``, and under ``"ranks"`` each process's
        ``[epoch, batches]`` where several wrote it: the same number of processes each take their
        own, another number rank 0's."""
        ranks = state.get("ranks")
        pairs = [state.get("epoch"), state.get("batches")]
        if isinstance(ranks, list) and len(ranks) == self.world:
            pairs = ranks[self.rank] if isinstance(ranks[self.rank], list) else [None]
        if not (len(pairs) == 2 and all(type(v) is int and v >= 0 for v in pairs)):
            raise GenfwError(
                f"the streamed loader's position must be a whole epoch and number of batches >= 0, "
                f"not {dict(state)!r}"
            )
        self.epoch, self.batches = pairs
        self._it = None


def refuse_for_streams(dataset: GenDataset, holdout: float, data_fraction: float) -> None:
    """``train.holdout`` and ``train.data_fraction`` pick examples by index: a stream has none."""
    if getattr(dataset, "streaming", False) and (holdout > 0 or data_fraction < 1):
        option = "train.holdout" if holdout > 0 else "train.data_fraction"
        raise GenfwError(
            f"{option} picks examples by index, which a streamed data set does not have; leave it "
            f"out, or read the data set without streaming"
        )


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


SUBSET_SEED = 20_240_602  # one fixed training subset for every run and seed, like the hold-out


def training_subset(keep: Tensor, fraction: float) -> Tensor:
    """The sorted ``round(fraction * len(keep))`` of the training indices ``keep`` a run with
    ``train.data_fraction`` trains on, chosen by a permutation with a fixed seed (``SUBSET_SEED``):
    the subset depends only on ``keep`` and ``fraction``, so runs and seeds compare on one subset,
    and a smaller fraction's subset is a prefix of a larger one's permutation (10% lies inside 20%)."""
    k = round(fraction * len(keep))
    if k < 1:
        raise GenfwError(
            f"train.data_fraction {fraction} keeps none of the {len(keep)} training examples; "
            f"choose a fraction of at least {1 / len(keep):.2g}"
        )
    perm = torch.randperm(len(keep), generator=torch.Generator().manual_seed(SUBSET_SEED))
    return keep[perm[:k].sort().values]


def held_out_examples(dataset: GenDataset, fraction: float, n: int) -> tuple[Tensor, Tensor]:
    """The first ``n`` held-out examples ``(x, y)`` (all of them if fewer), in a fixed order."""
    refuse_for_streams(dataset, fraction, 1.0)
    idx = holdout_split(len(dataset), fraction)[1][:n]
    if dataset.tensors is not None:
        return dataset.tensors[0][idx].float(), dataset.tensors[1][idx].long()
    items = [dataset[int(i)] for i in idx]
    return torch.stack([x for x, _ in items]).float(), torch.tensor([int(y) for _, y in items])


def make_loader(
    dataset: GenDataset,
    batch_size: int,
    seed: int,
    accelerator: Accelerator,
    holdout: float = 0.0,
    data_fraction: float = 1.0,
) -> Iterator[Batch]:
    """Endless training batches; with ``holdout > 0`` the held-out split (:func:`holdout_split`)
    is left out; with ``data_fraction < 1`` only the fixed :func:`training_subset` of the rest is
    used. A streamed data set (``dataset.streaming``) is read by a :class:`StreamLoader`."""
    refuse_for_streams(dataset, holdout, data_fraction)
    if getattr(dataset, "streaming", False):
        return StreamLoader(
            dataset,
            batch_size,
            seed,
            accelerator.process_index,
            accelerator.num_processes,
            accelerator.device,
        )
    keep = holdout_split(len(dataset), holdout)[0] if holdout > 0 else None
    if data_fraction < 1:
        keep = training_subset(torch.arange(len(dataset)) if keep is None else keep, data_fraction)
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
    workers = getattr(dataset, "num_workers", 0)  # duck-typed data sets may lack the attribute
    source = dataset if keep is None else torch.utils.data.Subset(dataset, keep.tolist())
    loader = torch.utils.data.DataLoader(
        source,
        batch_size=batch_size,
        shuffle=True,
        drop_last=True,
        generator=g,
        num_workers=workers,
        persistent_workers=workers > 0,
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
    """``n`` real examples drawn without replacement (all of them if fewer), reproducibly; of a
    streamed data set, the first ``n`` of its epoch 0 in the order of ``seed``."""
    if getattr(dataset, "streaming", False):
        items = []
        for x, _ in dataset.stream(seed, 0):
            if len(items) == n:
                break
            items.append(torch.as_tensor(x))
        return torch.stack(items).float()
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(dataset), generator=g)[:n]
    if dataset.tensors is not None:
        return dataset.tensors[0][idx].float()
    return torch.stack([dataset[int(i)][0] for i in idx]).float()
