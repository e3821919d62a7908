"""The ``huggingface`` data set on small data sets the tests write (``save_to_disk`` folders,
Parquet and Arrow files), and the core's loader of streamed data sets (``genfw.data.StreamLoader``).

Every image is 8x8 RGB with one known pixel: the red value of pixel (0, 0) is ``5 * index``, so a
decoded item says which example it is (``(5 * i) / 127.5 - 1``); the rest is a flat colour
``(40 * label, 100, 200)``. Nothing touches the network: a hub id is read offline, and the
socket is blocked where one is tried.
"""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

from genfw import GenfwError
from genfw.config import resolve
from genfw.data import StreamLoader, real_examples
from genfw.plugins import get_registry
from genfw.train import Trainer, read_run

datasets = pytest.importorskip("datasets")
from PIL import Image  # noqa: E402

from genfw_plugins.datasets.huggingface import HuggingFaceDataset, HuggingFaceOptions  # noqa: E402

N, CLASSES = 40, ["cat", "dog", "fox"]
SMALL = {"hidden": [16]}


def picture(i: int) -> Image.Image:
    arr = np.zeros((8, 8, 3), dtype=np.uint8)
    arr[...] = (40 * (i % 3), 100, 200)
    arr[0, 0, 0] = 5 * i
    return Image.fromarray(arr)


def table(n: int = N) -> datasets.Dataset:
    """Columns in an order that makes detection work: a caption and an int before the image and
    its ClassLabel."""
    features = datasets.Features(
        {
            "caption": datasets.Value("string"),
            "number": datasets.Value("int64"),
            "img": datasets.Image(),
            "fine": datasets.ClassLabel(names=CLASSES),
        }
    )
    rows = {
        "caption": [f"picture {i}" for i in range(n)],
        "number": list(range(n)),
        "img": [picture(i) for i in range(n)],
        "fine": [i % 3 for i in range(n)],
    }
    return datasets.Dataset.from_dict(rows, features=features)


def index_of(x: torch.Tensor) -> int:
    return round((float(x[0, 0, 0]) + 1) * 127.5 / 5)


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same 40 examples as a save_to_disk folder, a DatasetDict folder, 4 Parquet files and
    2 Arrow files."""
    root = tmp_path_factory.mktemp("hf")
    ds = table()
    ds.save_to_disk(str(root / "folder"))
    datasets.DatasetDict({"train": ds, "test": table(6)}).save_to_disk(str(root / "dict"))
    (root / "parquet").mkdir()
    for k in range(4):
        ds.shard(4, k, contiguous=True).to_parquet(str(root / "parquet" / f"train-{k}.parquet"))
    (root / "arrow").mkdir()
    for k in range(2):
        part = ds.shard(2, k, contiguous=True)
        part.save_to_disk(str(root / f"arrow-{k}"))
        arrow = next((root / f"arrow-{k}").glob("*.arrow"))
        arrow.rename(root / "arrow" / f"train-{k}.arrow")
    return {
        "folder": root / "folder",
        "dict": root / "dict",
        "parquet": root / "parquet",
        "arrow": root / "arrow",
        "cache": root / "cache",
    }


def make(**options) -> HuggingFaceDataset:
    return HuggingFaceDataset(HuggingFaceOptions(**options))


def sources(written: dict[str, Path]) -> dict[str, dict]:
    return {
        "folder": {"path": str(written["folder"])},
        "dict": {"path": str(written["dict"])},
        "parquet": {"files": str(written["parquet"] / "*.parquet"), "cache_dir": str(written["cache"])},
        "arrow": {"files": str(written["arrow"] / "*.arrow")},
    }


@pytest.mark.parametrize("source", ["folder", "dict", "parquet", "arrow"])
def test_items_shapes_ranges_labels_and_classes(written, source) -> None:
    data = make(**sources(written)[source])
    assert data.shape == (3, 8, 8) and len(data) == N and data.kind == "image"
    assert data.num_classes == 3 and data.classes == CLASSES
    assert (data.image_column, data.label_column) == ("img", "fine")  # detected, not the first columns
    for i in (0, 7, N - 1):
        x, y = data[i]
        assert x.dtype == torch.float32 and tuple(x.shape) == (3, 8, 8)
        assert y == i % 3
        # by hand: pixel p -> p / 127.5 - 1
        assert float(x[0, 0, 0]) == pytest.approx(5 * i / 127.5 - 1)
        assert float(x[0, 3, 4]) == pytest.approx(40 * (i % 3) / 127.5 - 1)
        assert float(x[1, 3, 4]) == pytest.approx(100 / 127.5 - 1)
        assert float(x[2, 7, 7]) == pytest.approx(200 / 127.5 - 1)
        assert -1 <= float(x.min()) and float(x.max()) <= 1


def test_grey_and_resize(written) -> None:
    data = make(path=str(written["folder"]), channels=1, size=4)
    x, _ = data[4]
    assert data.shape == (1, 4, 4) and tuple(x.shape) == (1, 4, 4)
    # Pillow's L = (299 R + 587 G + 114 B) / 1000, rounded; a flat area stays flat under bicubic.
    r, g, b = 40 * (4 % 3), 100, 200
    grey = round((299 * r + 587 * g + 114 * b) / 1000)
    assert float(x[0, 3, 3]) == pytest.approx(grey / 127.5 - 1, abs=1 / 127.5)


def test_labels_can_be_ignored_and_columns_named(written) -> None:
    data = make(path=str(written["folder"]), label_column="none", image_column="img")
    assert data.num_classes == 0 and data[5][1] == -1


def test_split_of_a_dataset_dict(written) -> None:
    assert len(make(path=str(written["dict"]), split="test")) == 6
    with pytest.raises(GenfwError, match=r"has no split 'valid'; valid: train, test"):
        make(path=str(written["dict"]), split="valid")


def test_without_the_extra_it_registers_and_says_what_to_install(monkeypatch) -> None:
    import sys

    from genfw_plugins.datasets.huggingface import MISSING_EXTRA

    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
    assert "huggingface" in get_registry().names("dataset")
    with pytest.raises(GenfwError, match=r"pip install 'genfw\[huggingface\]'") as err:
        make(path="anything")
    assert str(err.value) == MISSING_EXTRA


@pytest.mark.parametrize(
    "options, words",
    [
        ({}, "exactly one of dataset.path"),
        ({"path": "FOLDER", "files": "x.parquet"}, "give only one"),
        ({"files": "/nowhere/*.parquet"}, "no file matches"),
        (
            {"path": "FOLDER", "image_column": "caption"},
            "'caption' is not an Image column; Image columns: img",
        ),
        (
            {"path": "FOLDER", "label_column": "number"},
            "'number' is not a ClassLabel column; ClassLabel columns: fine",
        ),
    ],
)
def test_bad_options_are_refused_in_one_line(written, options, words) -> None:
    options = {k: (str(written["folder"]) if v == "FOLDER" else v) for k, v in options.items()}
    with pytest.raises(GenfwError, match=words) as err:
        make(**options)
    assert "\n" not in str(err.value)


def test_a_table_without_images_says_which_columns_it_has(tmp_path) -> None:
    datasets.Dataset.from_dict({"a": [1, 2], "b": ["x", "y"]}).save_to_disk(str(tmp_path / "d"))
    with pytest.raises(GenfwError, match=r"no column is an Image feature \(columns: a, b\)"):
        make(path=str(tmp_path / "d"))


class NetworkUsed(BaseException):
    """Not an Exception: no ``except Exception`` on the way may turn it into a refusal."""


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test of this file: an internet connection raises (a Unix socket, which DataLoader
    workers use to hand over tensors, is let through)."""
    connect = socket.socket.connect

    def refuse(*args, **kwargs):
        raise NetworkUsed("the test tried to reach the network")

    def local_only(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            refuse()
        return connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", local_only)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_a_hub_id_not_in_the_cache_is_refused_offline_in_one_line(tmp_path) -> None:
    with pytest.raises(GenfwError) as err:
        make(path="someone/not-cached", cache_dir=str(tmp_path / "cache"))
    message = str(err.value)
    assert "\n" not in message
    assert "'someone/not-cached' is neither a local folder nor in the hub cache" in message
    assert "datasets.load_dataset('someone/not-cached')" in message and "--dataset.download true" in message


def test_a_hub_id_in_the_cache_is_read_offline(written, tmp_path, monkeypatch) -> None:
    """A hub cache laid out as ``datasets`` lays one out after ``load_dataset('someone/tiny')``:
    ``<cache>/someone___tiny/default/0.0.0/<hash>/tiny-train.arrow`` and its dataset_info.json (made
    here from the Parquet files' own cache, the files renamed)."""
    files = sorted(str(f) for f in written["parquet"].glob("*.parquet"))
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)  # else datasets counts a download
    built = datasets.load_dataset(
        "parquet", data_files={"train": files}, split="train", cache_dir=str(tmp_path / "c")
    )
    prepared = Path(built.cache_files[0]["filename"]).parent
    cached = tmp_path / "hub" / "someone___tiny" / "default" / "0.0.0" / prepared.name
    shutil.copytree(prepared, cached)
    for arrow in cached.glob("parquet-*.arrow"):
        arrow.rename(cached / arrow.name.replace("parquet-", "tiny-"))
    for streaming in (False, True):
        data = make(path="someone/tiny", cache_dir=str(tmp_path / "hub"), streaming=streaming)
        assert len(data) == N and data.num_classes == 3 and data.shape == (3, 8, 8)
        items = [data[7]] if not streaming else [item for item in data.stream(0, 0) if index_of(item[0]) == 7]
        assert len(items) == 1 and items[0][1] == 7 % 3


# -- streams -----------------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["folder", "parquet", "arrow"])
def test_streams_over_two_ranks_are_disjoint_and_cover_the_data(written, source) -> None:
    data = make(streaming=True, **sources(written)[source])
    assert data.streaming and len(data) == N
    shards = [[index_of(x) for x, _ in data.stream(seed=3, epoch=0, rank=r, world=2)] for r in (0, 1)]
    assert set(shards[0]).isdisjoint(shards[1])
    assert sorted(shards[0] + shards[1]) == list(range(N))
    if source != "folder":  # 4 Parquet files of 10, 2 Arrow files of 20: whole files per rank
        assert all(len(s) == N // 2 for s in shards)


def test_a_stream_is_reshuffled_each_epoch_and_fixed_by_seed_and_epoch(written) -> None:
    data = make(streaming=True, path=str(written["folder"]), shuffle_buffer=16)
    order = lambda seed, epoch: [index_of(x) for x, _ in data.stream(seed, epoch)]  # noqa: E731
    first = order(0, 0)
    assert sorted(first) == list(range(N))
    assert first == order(0, 0)
    assert first != order(0, 1) and sorted(order(0, 1)) == list(range(N))
    assert first != list(range(N))


def test_stream_loader_resumes_at_the_batch_it_stopped_before(written) -> None:
    """Batches of 4 from one of 2 ranks (20 examples, 5 batches an epoch): 12 batches straight
    equal 7, then a new loader with the first's position, then 5 more (into the third epoch)."""
    data = make(streaming=True, files=str(written["parquet"] / "*.parquet"), cache_dir=str(written["cache"]))
    straight = StreamLoader(data, 4, seed=1, rank=1, world=2)
    expected = [next(straight) for _ in range(12)]
    assert straight.state_dict() == {"epoch": 2, "batches": 2}
    first = StreamLoader(data, 4, seed=1, rank=1, world=2)
    got = [next(first) for _ in range(7)]
    state = first.state_dict()
    assert state == {"epoch": 1, "batches": 2}
    second = StreamLoader(data, 4, seed=1, rank=1, world=2)
    second.load_state_dict(state)
    got += [next(second) for _ in range(5)]
    for a, b in zip(expected, got, strict=True):
        assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    # each epoch is the rank's whole shard, reshuffled
    epochs = [sorted(index_of(x) for b in expected[e * 5 : e * 5 + 5] for x in b.x) for e in (0, 1)]
    assert epochs[0] == epochs[1] and len(epochs[0]) == N // 2
    with pytest.raises(GenfwError, match="whole epoch and number of batches"):
        second.load_state_dict({"epoch": 0, "pos": 3})


def test_stream_loader_takes_its_own_rank_position_where_the_checkpoint_has_each() -> None:
    """Shards may differ in length, so a 2-process checkpoint holds both positions."""
    state = {"epoch": 3, "batches": 1, "ranks": [[3, 1], [2, 4]]}
    loaders = [StreamLoader(None, 4, seed=0, rank=r, world=2) for r in (0, 1)]  # type: ignore[arg-type]
    for loader in loaders:
        loader.load_state_dict(state)
    assert [loader.state_dict() for loader in loaders] == [
        {"epoch": 3, "batches": 1},
        {"epoch": 2, "batches": 4},
    ]
    alone = StreamLoader(None, 4, seed=0)  # type: ignore[arg-type]
    alone.load_state_dict(state)  # another number of processes: rank 0's
    assert alone.state_dict() == {"epoch": 3, "batches": 1}
    with pytest.raises(GenfwError, match="whole epoch and number of batches"):
        loaders[1].load_state_dict({"epoch": 3, "batches": 1, "ranks": [[3, 1], [2, -1]]})


def test_stream_workers_decode_the_same_data(written) -> None:
    data = make(
        streaming=True,
        files=str(written["parquet"] / "*.parquet"),
        cache_dir=str(written["cache"]),
        num_workers=2,
    )
    loader = StreamLoader(data, 5, seed=0)
    seen = sorted(index_of(x) for _ in range(8) for x in next(loader).x)
    assert seen == list(range(N))


def test_a_batch_larger_than_a_shard_is_refused(written) -> None:
    data = make(streaming=True, path=str(written["folder"]))
    with pytest.raises(GenfwError, match="exceeds the examples of process 0's shard"):
        next(StreamLoader(data, 64, seed=0, world=2))


def test_real_examples_of_a_stream_are_its_first_in_the_seeds_order(written) -> None:
    data = make(streaming=True, path=str(written["folder"]))
    real = real_examples(data, 6, seed=2)
    assert real.shape == (6, 3, 8, 8)
    assert [index_of(x) for x in real] == [index_of(x) for x, _ in data.stream(2, 0)][:6]


# -- training through the loop -----------------------------------------------------------------


def config(variant: str, dataset: dict, steps: int, **train) -> dict:
    raw = {
        "variant": variant,
        "dataset": {"name": "huggingface", **dataset},
        "train": {"steps": steps, "batch_size": 8, "log_every": 1, "progress": False, "grid": 4, **train},
    }
    for slot in get_registry().get("variant", variant).factory.slots:
        if slot in ("generator", "critic", "encoder"):
            raw[slot] = {"name": "mlp", **SMALL}
    return raw


@pytest.mark.parametrize("variant, source, streaming", [("gan", "folder", False), ("vae", "parquet", True)])
def test_a_short_run_trains_on_it(tmp_path, registry, run_cli, written, variant, source, streaming) -> None:
    # the in-memory-mapped folder through one DataLoader worker (the data set is pickled to it)
    workers = 0 if streaming else 1
    raw = config(
        variant, {"streaming": streaming, "num_workers": workers, **sources(written)[source]}, steps=3
    )
    t = Trainer(resolve(raw, registry), tmp_path / "run")
    before = {k: v.clone() for k, v in t.plain["generator"].state_dict().items()}
    t.fit()
    after = t.plain["generator"].state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert (tmp_path / "run" / "samples" / "step_0000003.png").is_file()
    if variant == "vae":  # the reconstructions of a streamed set: its first examples, never indexed
        code, out, err = run_cli("eval", tmp_path / "run", "--reconstruct", "4")
        assert code == 0, err
        assert out.strip().splitlines()[-1] == str(tmp_path / "run" / "reconstructions.png")


def test_a_resumed_streamed_run_continues_where_it_stopped(tmp_path, registry, written) -> None:
    """6 steps straight equal 4 steps, then --resume to 6, bit for bit: the stream's position
    (the epoch and the batches taken in it; 40 examples are 5 batches of 8) is restored."""
    source = {"streaming": True, **sources(written)["parquet"]}
    straight = Trainer(resolve(config("gan", source, steps=6, checkpoint_every=4), registry), tmp_path / "a")
    straight.fit()
    stopped = Trainer(resolve(config("gan", source, steps=4), registry), tmp_path / "b")
    stopped.fit()
    position = stopped.loader.state_dict()
    assert position["batches"] > 0
    resumed = Trainer(read_run(tmp_path / "b", registry, [("train.steps", 6)]), tmp_path / "b", resume=True)
    assert resumed.step == 4 and resumed.loader.state_dict() == position
    resumed.fit()
    assert resumed.loader.state_dict() == straight.loader.state_dict()
    for name in ("generator", "critic"):
        for (k, a), (_, b) in zip(
            straight.plain[name].state_dict().items(), resumed.plain[name].state_dict().items(), strict=True
        ):
            assert torch.equal(a, b), f"{name}.{k} differs after resume"


@pytest.mark.parametrize("option", [("holdout", 0.1), ("data_fraction", 0.5)])
def test_holdout_and_data_fraction_are_refused_for_a_stream(tmp_path, run_cli, written, option) -> None:
    name, value = option
    code, _, err = run_cli(
        "train", "--variant", "gan", "--dataset", "huggingface", "--dataset.path", written["folder"],
        "--dataset.streaming", "true", f"--train.{name}", value, "--out", tmp_path / "r", "--no-progress",
    )  # fmt: skip
    assert code == 2
    assert f"train.{name} picks examples by index, which a streamed data set does not have" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_an_autoencoders_preset_holds_out_data_except_from_a_stream(registry, written) -> None:
    """The autoencoders' image preset holds out 10%; a stream has no indices, so not from it."""
    folder = sources(written)["folder"]
    assert resolve(config("vae", folder, steps=1), registry).train.holdout == 0.1
    assert resolve(config("vae", {"streaming": True, **folder}, steps=1), registry).train.holdout == 0


def test_the_contract_kit_passes_it(written) -> None:
    from genfw.testing import check_dataset

    check_dataset("huggingface", options={"path": str(written["folder"])})
    check_dataset("huggingface", options={"path": str(written["folder"]), "streaming": True})
