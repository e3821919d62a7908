"""Data set ``huggingface``: images read with the Hugging Face ``datasets`` library.

``datasets`` is an optional extra (``pip install 'genfw[huggingface]'``), imported only when the
data set is built, so this plugin registers, and ``genfw list`` works, without it.

Where the data comes from (exactly one of ``path`` and ``files``):

- ``path``, a local folder written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``
  (a ``DatasetDict``'s ``split`` is taken);
- ``files``, Arrow or Parquet files: a glob or several separated by commas
  (``'data/train-*.parquet'``), all of one format;
- ``path``, a hub id (``cifar10``, ``uoft-cs/cifar10``) that is not a local folder: read from the
  hub cache (``cache_dir``, else ``HF_DATASETS_CACHE``) with the network off, so a data set that was
  never fetched is refused in one line that says how to fetch it. ``download: true`` lets
  ``datasets`` download it (and, with ``streaming: true``, stream it from the hub unstored).

The image column is ``image_column``, else the first ``Image`` feature; the label column is
``label_column``, else the first ``ClassLabel`` feature (none: unlabelled, ``y = -1``);
``label_column: none`` ignores the labels. ``num_classes`` is the ``ClassLabel``'s number of names.
Each image is center-cropped to a square, resized to ``size x size`` (bicubic; by default the side
of the first image), made grey (``channels = 1``) or RGB (``3``) and scaled to ``[-1, 1]``, as
``image-folder`` does (the same code).

Without streaming the data set is memory-mapped Arrow (nothing is held in memory) and each item is
decoded when the loop's ``DataLoader`` asks for it, in ``num_workers`` worker processes. Arrow files
are mapped where they lie; Parquet files are converted once into Arrow in the cache (``cache_dir``),
as ``datasets`` does (streamed, they are read as they are).

With ``streaming: true`` the items are read in order, never indexed: each process reads its own
shard (``datasets.distributed.split_dataset_by_node``), its shards in an order drawn from the
seed (``train.seed``, re-drawn every epoch) and its examples shuffled through a buffer of
``shuffle_buffer`` examples filled from one shard at a time (datasets' default of ten shards at
once costs a 5 s pause at the end of every pass), and decoded in
``num_workers`` ``DataLoader`` workers, each reading its own shards (Parquet/Arrow files are the
shards; a local folder or a cached hub set is cut into ``16`` or more, a multiple of the number
of processes x workers). ``train.holdout`` and ``train.data_fraction`` are refused for a stream
(a variant's preset of them, as the autoencoders' 10% hold-out, is left out).
``--resume`` restores the epoch and the number of batches this process has consumed in it, and
skips that many batches (reading them again) to go on with the next one (``genfw.data.StreamLoader``).

``num_workers`` is an option of this data set, not of ``train``: how much decoding a batch costs
depends on where the data comes from.
"""

from __future__ import annotations

import contextlib
import glob
import inspect
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import torch

import genfw
from genfw import validators as check
from genfw.hookspecs import Register

from .image_folder import _check_channels, image_to_tensor

MISSING_EXTRA = (
    "dataset 'huggingface' needs the optional extra: pip install 'genfw[huggingface]' "
    "(the datasets library is not installed)"
)
NO_LABELS = "none"
FORMATS = {".parquet": "parquet", ".arrow": "arrow"}
MIN_SHARDS = 16  # a folder or a cached hub set read as a stream is cut into at least this many


@attrs.define
class HuggingFaceOptions:
    path: str | None = None
    """A save_to_disk folder, or a hub id read from the hub cache."""
    files: str | None = None
    """Arrow or Parquet files: globs separated by commas."""
    split: str = "train"
    """The split to read."""
    subset: str | None = None
    """The hub data set's subset (configuration), if it has several."""
    image_column: str | None = None
    """Column of images; default: the first Image feature."""
    label_column: str | None = None
    """Column of labels (a ClassLabel); default: the first ClassLabel; 'none': unlabelled."""
    size: int | None = attrs.field(default=None, validator=attrs.validators.optional(check.at_least(1)))
    """Side of the square images; default: the first image's shorter side."""
    channels: int = attrs.field(default=3, validator=_check_channels)
    """1 (grey) or 3 (RGB)."""
    streaming: bool = False
    """Read in order, sharded over processes, never all at once."""
    shuffle_buffer: int = attrs.field(default=1000, validator=check.at_least(1))
    """Examples in a stream's shuffle buffer."""
    num_workers: int = attrs.field(default=0, validator=check.at_least(0))
    """DataLoader worker processes that decode images (0: in the training process)."""
    cache_dir: str | None = None
    """The hub cache; default: HF_DATASETS_CACHE."""
    download: bool = False
    """Let datasets download a hub id that is not cached (the network is never used otherwise)."""


@attrs.frozen
class Decode:
    """One row of the data set -> ``(x, y)``; picklable, for ``DataLoader`` workers."""

    image: str
    label: str | None
    size: int
    channels: int

    def __call__(self, row: dict[str, Any]) -> tuple[torch.Tensor, int]:
        x = image_to_tensor(row[self.image], self.size, self.channels)
        return x, (-1 if self.label is None else int(row[self.label]))


class Items(torch.utils.data.IterableDataset):
    """A ``datasets.IterableDataset``'s rows decoded to ``(x, y)``; in ``DataLoader`` workers the
    ``datasets`` iterable gives each worker its own shards."""

    def __init__(self, rows: Any, decode: Decode) -> None:
        self.rows, self.decode = rows, decode

    def __iter__(self) -> Iterator[tuple[torch.Tensor, int]]:
        for row in self.rows:
            yield self.decode(row)


def _import_datasets() -> Any:
    try:
        import datasets
    except ImportError:
        raise genfw.GenfwError(MISSING_EXTRA) from None
    return datasets


@contextlib.contextmanager
def _offline(datasets: Any) -> Iterator[None]:
    """The hub unreachable for ``datasets`` (and ``huggingface_hub``) inside the block."""
    import huggingface_hub.constants as hub

    flags = [
        (datasets.config, "HF_HUB_OFFLINE"),
        (datasets.config, "HF_DATASETS_OFFLINE"),
        (hub, "HF_HUB_OFFLINE"),
    ]
    saved = {(m, k): getattr(m, k) for m, k in flags if hasattr(m, k)}
    try:
        for module, key in saved:
            setattr(module, key, True)
        yield
    finally:
        for (module, key), value in saved.items():
            setattr(module, key, value)


def _expand(files: str) -> list[str]:
    found: list[str] = []
    for pattern in (p.strip() for p in files.split(",")):
        if pattern:
            found += sorted(glob.glob(os.path.expanduser(pattern)))
    return found


class HuggingFaceDataset(genfw.GenDataset):
    """Images from a datasets folder, Arrow/Parquet files or the hub cache (extra: genfw[huggingface])."""

    kind = "image"

    def __init__(self, options: HuggingFaceOptions) -> None:
        self.options = options
        datasets = _import_datasets()
        if (options.path is None) == (options.files is None):
            raise genfw.GenfwError(
                "dataset 'huggingface' reads from exactly one of dataset.path (a save_to_disk folder or "
                "a hub id) and dataset.files (Arrow or Parquet files); "
                + ("give one" if options.path is None else "give only one")
            )
        self.streaming = options.streaming
        self.num_workers = options.num_workers
        self._rows = 0  # the number of examples where known, 0 where not
        self._table: Any = None  # a datasets.Dataset (memory-mapped Arrow), or None
        self._stream: Any = None  # a datasets.IterableDataset read as it is, or None
        if options.files is not None:
            self._open_files(datasets, options.files)
        elif Path(options.path).expanduser().is_dir():
            self._open_folder(datasets, Path(options.path).expanduser())
        else:
            self._open_hub(datasets, options.path)
        source = self._table if self._table is not None else self._stream
        features = source.features
        if features is None:  # a stream whose files declare no schema: read one row to learn it
            source = source._resolve_features()
            features = source.features
        self.image_column, self.label_column = self._columns(datasets, features)
        if self.label_column is not None:
            self.classes = list(features[self.label_column].names)
        else:
            self.classes = []
        self.num_classes = len(self.classes)
        columns = [c for c in (self.image_column, self.label_column) if c is not None]
        if self._table is not None:
            self._table = self._table.select_columns(columns)
            self._rows = len(self._table)
        else:
            self._stream = self._stream.select_columns(columns)
        size = options.size if options.size is not None else self._first_side()
        self.shape = (options.channels, size, size)
        self.decode = Decode(self.image_column, self.label_column, size, options.channels)

    # -- where the data comes from ----------------------------------------------------------------
    def _open_files(self, datasets: Any, files: str) -> None:
        found = _expand(files)
        if not found:
            raise genfw.GenfwError(f"dataset.files: no file matches {files!r}; give Arrow or Parquet files")
        kinds = {FORMATS.get(Path(f).suffix.lower()) for f in found}
        if None in kinds or len(kinds) > 1:
            raise genfw.GenfwError(
                f"dataset.files: {files!r} matches {', '.join(sorted({Path(f).suffix or '(none)' for f in found}))} "
                f"files; give files of one format, .parquet or .arrow"
            )
        kind = kinds.pop()
        if kind == "arrow" and not self.streaming:
            # Memory-mapped where they lie: no copy into the cache.
            tables = [datasets.Dataset.from_file(f) for f in found]
            self._table = tables[0] if len(tables) == 1 else datasets.concatenate_datasets(tables)
            return
        split = self.options.split
        with _offline(datasets):  # local files: nothing to fetch (datasets would count a download)
            ds = datasets.load_dataset(
                kind,
                data_files={split: found},
                split=split,
                streaming=self.streaming,
                cache_dir=self.options.cache_dir,
            )
        if self.streaming:
            self._stream, self._rows = ds, _count_rows(kind, found)
        else:
            self._table = ds

    def _open_folder(self, datasets: Any, folder: Path) -> None:
        try:
            ds = datasets.load_from_disk(str(folder))
        except (FileNotFoundError, ValueError) as exc:
            raise genfw.GenfwError(
                f"dataset.path: {folder} is not a folder written by save_to_disk ({_one_line(exc)}); "
                f"give such a folder, a hub id, or Arrow/Parquet files with dataset.files"
            ) from None
        self._table = self._pick_split(ds, str(folder))

    def _pick_split(self, ds: Any, where: str) -> Any:
        if hasattr(ds, "keys") and not hasattr(ds, "features"):  # a DatasetDict
            if self.options.split not in ds:
                raise genfw.GenfwError(
                    f"dataset.split: {where} has no split {self.options.split!r}; valid: {', '.join(ds)}"
                )
            return ds[self.options.split]
        return ds

    def _open_hub(self, datasets: Any, hub_id: str) -> None:
        o = self.options
        if o.download:  # the network allowed: datasets downloads, or streams from the hub
            self._load_hub(datasets, hub_id, streaming=self.streaming)
            return
        with _offline(datasets):
            self._load_hub(datasets, hub_id, streaming=False)

    def _load_hub(self, datasets: Any, hub_id: str, streaming: bool) -> None:
        o = self.options
        try:
            ds = datasets.load_dataset(
                hub_id, o.subset, split=o.split, streaming=streaming, cache_dir=o.cache_dir
            )
        except Exception as exc:  # datasets raises many kinds (ConnectionError, FileNotFoundError, ...)
            if o.download:
                raise genfw.GenfwError(
                    f"dataset.path: cannot load {hub_id!r} (split {o.split!r}): {_one_line(exc)}"
                ) from None
            cache = o.cache_dir or datasets.config.HF_DATASETS_CACHE
            name = "" if o.subset is None else f", {o.subset!r}"
            raise genfw.GenfwError(
                f"dataset.path: {hub_id!r} is neither a local folder nor in the hub cache {cache} "
                f"(split {o.split!r}; datasets says: {_one_line(exc)}); genfw reads the hub offline: fetch it "
                f'once with python -c "import datasets; datasets.load_dataset({hub_id!r}{name})", or pass '
                f"--dataset.download true"
            ) from None
        if streaming:
            self._stream = ds
            splits = getattr(ds.info, "splits", None) or {}
            self._rows = int(getattr(splits.get(o.split), "num_examples", 0) or 0)
        else:
            self._table = ds

    def _columns(self, datasets: Any, features: Any) -> tuple[str, str | None]:
        o = self.options
        names = ", ".join(features)
        images = [c for c, f in features.items() if isinstance(f, datasets.Image)]
        labels = [c for c, f in features.items() if isinstance(f, datasets.ClassLabel)]
        if o.image_column is None:
            if not images:
                raise genfw.GenfwError(
                    f"dataset 'huggingface': no column is an Image feature (columns: {names}); name the "
                    f"column of images with dataset.image_column, cast to datasets.Image()"
                )
            image = images[0]
        elif o.image_column not in features or o.image_column not in images:
            raise genfw.GenfwError(
                f"dataset.image_column: {o.image_column!r} is not an Image column; Image columns: "
                f"{', '.join(images) or 'none'} (all columns: {names})"
            )
        else:
            image = o.image_column
        if o.label_column == NO_LABELS:
            return image, None
        if o.label_column is None:
            return image, (labels[0] if labels else None)
        if o.label_column not in labels:
            raise genfw.GenfwError(
                f"dataset.label_column: {o.label_column!r} is not a ClassLabel column; ClassLabel columns: "
                f"{', '.join(labels) or 'none'} (all columns: {names}), or 'none' for no labels"
            )
        return image, o.label_column

    def _first_side(self) -> int:
        row = self._table[0] if self._table is not None else next(iter(self._stream))
        w, h = row[self.image_column].size
        return min(w, h)

    # -- items ------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._rows

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        if self._table is None:
            raise genfw.GenfwError(
                "dataset 'huggingface': a stream read from files or the hub has no indexed items; read "
                "it in order (stream), or without --dataset.streaming true"
            )
        return self.decode(self._table[int(i)])

    def stream(self, seed: int, epoch: int, rank: int = 0, world: int = 1) -> Items:
        from datasets.distributed import split_dataset_by_node

        rows = self._stream
        if rows is None:  # a memory-mapped table, read as a stream in contiguous shards
            unit = world * max(1, self.num_workers)
            shards = max(1, min(len(self._table), unit * -(-MIN_SHARDS // unit)) // unit) * unit
            rows = self._table.to_iterable_dataset(num_shards=min(shards, len(self._table)))
        rows = split_dataset_by_node(rows, rank=rank, world_size=world)
        shuffle = {"seed": seed, "buffer_size": self.options.shuffle_buffer}
        if "max_buffer_input_shards" in inspect.signature(rows.shuffle).parameters:
            # datasets >= 4.x fills the buffer from several shards at once in threads, and then
            # sleeps 5 s at the end of every pass (an Arrow work-around): one shard at a time.
            shuffle["max_buffer_input_shards"] = 1
        rows = rows.shuffle(**shuffle)
        rows.set_epoch(epoch)
        return Items(rows, self.decode)


def _count_rows(kind: str, files: list[str]) -> int:
    """Rows in Parquet files (from their footers) or Arrow files (memory-mapped), unread."""
    if kind == "parquet":
        import pyarrow.parquet as pq

        return sum(pq.read_metadata(f).num_rows for f in files)
    import datasets

    return sum(len(datasets.Dataset.from_file(f)) for f in files)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


@genfw.hookimpl
def genfw_register_datasets(register: Register) -> None:
    register("huggingface", HuggingFaceDataset, options=HuggingFaceOptions)
