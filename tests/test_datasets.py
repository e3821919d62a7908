"""Built-in data sets: toy2d, digits, image-folder, torchvision (without torchvision installed)."""

from __future__ import annotations

import itertools
import math
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from genfw import GenfwError
from genfw.plugins import PluginHost
from genfw_plugins.datasets import digits, image_folder, toy2d
from genfw_plugins.datasets import torchvision as tv_plugin


def build(module: types.ModuleType, name: str, options: dict[str, Any] | None = None) -> Any:
    """Build data set ``name`` from a host that has only ``module`` loaded."""
    host = PluginHost()
    host.add(module, name)
    return host.registry.spec("dataset", name, options or {}, where="dataset").build()


# --- toy2d ---------------------------------------------------------------------------------------


def test_toy2d_grid_centres_are_the_25_grid_points() -> None:
    ds = build(toy2d, "toy2d", {"which": "grid", "size": 1000})
    expected = {(float(a), float(b)) for a, b in itertools.product([-4, -2, 0, 2, 4], repeat=2)}
    got = {tuple(p) for p in ds.modes.tolist()}
    assert ds.modes.shape == (25, 2) and got == expected
    assert ds.mode_std == 0.05


def test_toy2d_ring_centres_are_8_evenly_spaced_on_the_unit_circle() -> None:
    ds = build(toy2d, "toy2d", {"which": "ring", "size": 1000})
    angles = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
    expected = torch.stack([angles.cos(), angles.sin()], dim=1).float()
    assert ds.modes.shape == (8, 2)
    torch.testing.assert_close(ds.modes, expected, atol=1e-7, rtol=0)
    assert ds.mode_std == 0.01


@pytest.mark.parametrize(("which", "std", "k"), [("grid", 0.05, 25), ("ring", 0.01, 8)])
def test_toy2d_points_scatter_around_their_mode_with_the_stated_std(which: str, std: float, k: int) -> None:
    ds = build(toy2d, "toy2d", {"which": which})  # default size: 100,000 points
    x, y = ds.tensors
    assert x.shape == (100_000, 2) and x.dtype == torch.float32
    assert ds.shape == (2,) and ds.kind == "points" and ds.num_classes == 0
    assert torch.all(y == -1) and ds[0][1] == -1
    # Deviations from the drawn centre: 200,000 values, so the empirical std is within ~0.5 %
    # (relative standard error 1/sqrt(2n) = 0.16 %); allow 2 %. Mean ~ 0 within 5 standard errors.
    dev = x - ds.modes[ds.mode_index]
    assert abs(dev.std().item() / std - 1) < 0.02
    assert dev.mean(dim=0).abs().max().item() < 5 * std / math.sqrt(100_000)
    # Modes are far apart relative to std: every point is nearest to the centre it came from.
    assert torch.equal(torch.cdist(x, ds.modes).argmin(dim=1), ds.mode_index)
    # Equal weights: each count within 5 binomial standard deviations of n / k.
    counts = torch.bincount(ds.mode_index, minlength=k).double()
    n, p = 100_000, 1 / k
    assert (counts - n * p).abs().max().item() < 5 * math.sqrt(n * p * (1 - p))


def test_toy2d_same_seed_same_points_other_seed_other_points() -> None:
    a = build(toy2d, "toy2d", {"which": "grid", "size": 500, "seed": 7})
    b = build(toy2d, "toy2d", {"which": "grid", "size": 500, "seed": 7})
    c = build(toy2d, "toy2d", {"which": "grid", "size": 500, "seed": 8})
    assert torch.equal(a.tensors[0], b.tensors[0]) and torch.equal(a.mode_index, b.mode_index)
    assert not torch.equal(a.tensors[0], c.tensors[0])


def test_toy2d_leaves_the_global_rng_alone() -> None:
    state = torch.get_rng_state()
    build(toy2d, "toy2d", {"size": 100})
    assert torch.equal(torch.get_rng_state(), state)


def test_toy2d_declares_its_default_metric_and_help() -> None:
    host = PluginHost()
    host.add(toy2d, "toy2d")
    component = host.registry.get("dataset", "toy2d")
    assert component.factory.default_metrics == ("mode_coverage",)
    assert "ring" in component.help and "grid" in component.help


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"which": "square"}, "which must be one of ring, grid, got 'square'"),
        ({"size": 0}, "size"),
        ({"seed": -1}, "seed"),
    ],
)
def test_toy2d_rejects_bad_options(options: dict[str, Any], words: str) -> None:
    with pytest.raises(ValueError, match=words):  # the validator's own message ...
        toy2d.Toy2DOptions(**options)
    with pytest.raises(GenfwError):  # ... which the host turns into a user error
        build(toy2d, "toy2d", options)


# --- digits --------------------------------------------------------------------------------------

# Per-digit counts of the 1,797 images (the UCI test set as in scikit-learn's load_digits).
DIGIT_COUNTS = [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
# First row of data/digits.csv.gz: 64 pixels (0..16), label 0.
FIRST_ROW = [
    0, 0, 5, 13, 9, 1, 0, 0, 0, 0, 13, 15, 10, 15, 5, 0, 0, 3, 15, 2, 0, 11, 8, 0, 0, 4, 12, 0,
    0, 8, 8, 0, 0, 5, 8, 0, 0, 9, 8, 0, 0, 4, 11, 0, 1, 12, 7, 0, 0, 2, 14, 5, 10, 12, 0, 0, 0,
    0, 6, 13, 10, 0, 0, 0,
]  # fmt: skip


def test_digits_size_labels_and_range() -> None:
    ds = build(digits, "digits")
    x, y = ds.tensors
    assert len(ds) == 1797 and x.shape == (1797, 1, 8, 8) and x.dtype == torch.float32
    assert ds.shape == (1, 8, 8) and ds.kind == "image" and ds.num_classes == 10
    assert torch.bincount(y, minlength=10).tolist() == DIGIT_COUNTS
    assert x.min().item() == -1.0 and x.max().item() == 1.0


def test_digits_first_image_is_the_first_csv_row_scaled() -> None:
    ds = build(digits, "digits")
    x0, y0 = ds[0]
    expected = torch.tensor([v / 8 - 1 for v in FIRST_ROW], dtype=torch.float32).reshape(1, 8, 8)
    assert y0 == 0
    assert torch.equal(x0, expected)


def test_digits_subset_of_classes() -> None:
    three = build(digits, "digits", {"classes": [3]})
    assert len(three) == 183 and torch.all(three.tensors[1] == 3) and three.num_classes == 10
    pair = build(digits, "digits", {"classes": [7, 3]})
    assert len(pair) == 183 + 179 and set(pair.tensors[1].tolist()) == {3, 7}


@pytest.mark.parametrize(
    ("classes", "words"), [([10], "digits in 0..9; got 10"), ([-1], "got -1"), ([], "at least one digit")]
)
def test_digits_rejects_bad_classes(classes: list[int], words: str) -> None:
    with pytest.raises(ValueError, match=f"classes must .*{words}"):
        digits.DigitsOptions(classes=classes)
    with pytest.raises(GenfwError):
        build(digits, "digits", {"classes": classes})


@pytest.mark.parametrize(
    ("options", "per_class"),
    [
        ({"labelled": 100}, {c: 10 for c in range(10)}),
        ({"labelled": 25}, {c: 3 if c < 5 else 2 for c in range(10)}),  # the remainder to the lowest digits
        ({"labelled": 0}, {c: 0 for c in range(10)}),
        ({"labelled": 5, "classes": [7, 3]}, {3: 3, 7: 2}),
        ({"labelled": 1740}, {c: 174 for c in range(10)}),  # every 8 (the smallest class) labelled
    ],
)
def test_digits_labelled_keeps_a_balanced_fixed_subset_of_labels(
    options: dict[str, Any], per_class: dict[int, int]
) -> None:
    ds = build(digits, "digits", options)
    full = build(digits, "digits", {"classes": options["classes"]} if "classes" in options else {})
    x, y = ds.tensors
    x_all, y_all = full.tensors
    assert torch.equal(x, x_all) and ds.num_classes == 10  # same images, same classes
    kept = y >= 0
    counts = torch.bincount(y[kept], minlength=10)
    assert {c: int(counts[c]) for c in per_class} == per_class
    assert int(kept.sum()) == options["labelled"] and torch.all(y[~kept] == -1)
    assert torch.equal(y[kept], y_all[kept])  # a kept label is the true one
    assert torch.equal(build(digits, "digits", options).tensors[1], y)  # the same examples every time


def test_digits_labelled_examples_are_drawn_at_random_not_the_first() -> None:
    _, y = build(digits, "digits", {"labelled": 30}).tensors
    _, y_all = build(digits, "digits").tensors
    for c in range(10):
        members = torch.nonzero(y_all == c).flatten()
        chosen = torch.nonzero(y == c).flatten()
        assert len(chosen) == 3 and not torch.equal(chosen, members[:3])


def test_digits_labelled_refuses_more_than_a_balanced_subset_allows() -> None:
    with pytest.raises(GenfwError, match=r"digit 8 has only 174 examples, so labelled can be at most 1740"):
        build(digits, "digits", {"labelled": 1741})
    with pytest.raises(GenfwError, match=r"digit 7 has only 179 .* at most 358 \(2 classes x 179\)"):
        build(digits, "digits", {"labelled": 359, "classes": [3, 7]})
    assert (build(digits, "digits", {"labelled": 358, "classes": [3, 7]}).tensors[1] >= 0).sum() == 358
    with pytest.raises(ValueError, match="labelled must be at least 0, got -1"):
        digits.DigitsOptions(labelled=-1)


def test_digits_parses_once_and_the_cache_is_safe_from_callers() -> None:
    assert digits.load_digits() is digits.load_digits()
    ds = build(digits, "digits")
    ds.tensors[0].fill_(0.0)  # a caller scribbling on its own copy ...
    assert build(digits, "digits").tensors[0].min().item() == -1.0  # ... does not touch the cache


# --- image-folder --------------------------------------------------------------------------------


def save(
    path: Path, color: tuple[int, ...] | int, size: tuple[int, int] = (12, 12), mode: str = "RGB"
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)
    return path


def test_image_folder_flat_is_unlabelled_and_scales_pixels(tmp_path: Path) -> None:
    save(tmp_path / "a.png", (255, 0, 51), size=(40, 20))
    save(tmp_path / "b.PNG", (0, 0, 0))  # extensions in any case
    save(tmp_path / "c.jpg", (10, 20, 30))
    (tmp_path / "notes.txt").write_text("not an image")
    save(tmp_path / ".hidden.png", (1, 2, 3))
    ds = build(image_folder, "image-folder", {"path": str(tmp_path), "size": 8})
    assert len(ds) == 3 and ds.num_classes == 0 and ds.shape == (3, 8, 8) and ds.kind == "image"
    x, y = ds[0]  # a.png: a solid colour survives crop and resize unchanged
    assert y == -1 and x.shape == (3, 8, 8) and x.dtype == torch.float32
    assert torch.all(x[0] == 1.0) and torch.all(x[1] == -1.0)
    torch.testing.assert_close(x[2], torch.full((8, 8), 51 / 127.5 - 1))  # 51 -> -0.6
    assert [ds[i][1] for i in range(3)] == [-1, -1, -1]


def test_image_folder_center_crops_to_a_square(tmp_path: Path) -> None:
    # 30x10: red | green | blue thirds; the centre 10x10 square is all green.
    im = Image.new("RGB", (30, 10), (255, 0, 0))
    im.paste((0, 255, 0), (10, 0, 20, 10))
    im.paste((0, 0, 255), (20, 0, 30, 10))
    im.save(tmp_path / "wide.png")
    x, _ = build(image_folder, "image-folder", {"path": str(tmp_path), "size": 10})[0]
    assert torch.all(x[0] == -1.0) and torch.all(x[1] == 1.0) and torch.all(x[2] == -1.0)


def test_image_folder_grey(tmp_path: Path) -> None:
    save(tmp_path / "g.png", 51, mode="L")
    ds = build(image_folder, "image-folder", {"path": str(tmp_path), "size": 4, "channels": 1})
    x, _ = ds[0]
    assert ds.shape == (1, 4, 4) and x.shape == (1, 4, 4)
    torch.testing.assert_close(x, torch.full((1, 4, 4), -0.6))


def test_image_folder_class_subfolders_give_sorted_labels(tmp_path: Path) -> None:
    save(tmp_path / "dog" / "1.png", (0, 0, 0))
    save(tmp_path / "cat" / "1.png", (0, 0, 0))
    save(tmp_path / "cat" / "deeper" / "2.jpeg", (0, 0, 0))
    ds = build(image_folder, "image-folder", {"path": str(tmp_path), "size": 4})
    assert ds.num_classes == 2 and ds.classes == ["cat", "dog"]
    labels = {str(f): ds[i][1] for i, f in enumerate(ds.files)}
    assert labels == {"cat/1.png": 0, "cat/deeper/2.jpeg": 0, "dog/1.png": 1}


def test_image_folder_an_image_at_the_top_means_no_labels(tmp_path: Path) -> None:
    save(tmp_path / "cat" / "1.png", (0, 0, 0))
    save(tmp_path / "top.png", (0, 0, 0))
    ds = build(image_folder, "image-folder", {"path": str(tmp_path), "size": 4})
    assert ds.num_classes == 0 and [ds[i][1] for i in range(len(ds))] == [-1, -1]


def test_image_folder_is_lazy(tmp_path: Path) -> None:
    save(tmp_path / "a.png", (0, 0, 0))
    ds = build(image_folder, "image-folder", {"path": str(tmp_path), "size": 4})
    assert ds.tensors is None
    save(tmp_path / "a.png", (255, 255, 255))  # changed after construction: read at access
    assert torch.all(ds[0][0] == 1.0)


def test_image_folder_missing_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(GenfwError) as info:
        build(image_folder, "image-folder", {"path": str(missing)})
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"dataset.path: {missing} does not exist")
    assert "png" in message and "jpg" in message


def test_image_folder_without_images(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("hi")
    with pytest.raises(GenfwError, match=r"dataset.path: .* holds no images; give a folder of images"):
        build(image_folder, "image-folder", {"path": str(tmp_path)})


def test_image_folder_path_is_a_file(tmp_path: Path) -> None:
    file = save(tmp_path / "a.png", (0, 0, 0))
    with pytest.raises(GenfwError, match="is a file, not a folder"):
        build(image_folder, "image-folder", {"path": str(file)})


def test_image_folder_unreadable_image_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "broken.png").write_bytes(b"not a png")
    ds = build(image_folder, "image-folder", {"path": str(tmp_path)})
    with pytest.raises(GenfwError, match=r"cannot read image .*broken\.png"):
        ds[0]


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"channels": 2}, "channels must be 1 .* or 3"),
        ({"size": 0}, "size must be at least 1, got 0"),
    ],
)
def test_image_folder_rejects_bad_options(tmp_path: Path, options: dict[str, Any], words: str) -> None:
    with pytest.raises(ValueError, match=words):
        image_folder.ImageFolderOptions(path=str(tmp_path), **options)
    with pytest.raises(GenfwError):
        build(image_folder, "image-folder", {"path": str(tmp_path), **options})


def test_image_folder_requires_path() -> None:
    with pytest.raises(GenfwError, match="path"):
        build(image_folder, "image-folder", {})


# --- torchvision ---------------------------------------------------------------------------------


def test_torchvision_registers_and_explains_the_missing_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torchvision", None)  # "import torchvision" now fails
    host = PluginHost()
    host.add(tv_plugin, "torchvision")
    assert "torchvision" in host.registry.names("dataset")
    with pytest.raises(GenfwError) as info:
        host.registry.spec("dataset", "torchvision", {"root": "/data"}, where="dataset").build()
    assert str(info.value) == (
        "dataset 'torchvision' needs the optional extra: pip install 'genfw[vision]' "
        "(torchvision is not installed)"
    )


def fake_torchvision(monkeypatch: pytest.MonkeyPatch, **classes: type) -> list[dict[str, Any]]:
    """Install a stand-in ``torchvision`` with ``datasets.<name>`` classes; returns their calls."""
    calls: list[dict[str, Any]] = []
    module = types.ModuleType("torchvision")
    wrapped = {}
    for name, cls in classes.items():

        def make(*args: Any, _cls: type = cls, **kwargs: Any) -> Any:
            calls.append({"args": args, **kwargs})
            return _cls(*args, **kwargs)

        wrapped[name] = make
    module.datasets = types.SimpleNamespace(**wrapped)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torchvision", module)
    return calls


class NotDownloaded:
    def __init__(self, root: str, train: bool = True, download: bool = False) -> None:
        raise RuntimeError("Dataset not found. You can use download=True to download it")


class FakeMNIST:
    def __init__(self, root: str, train: bool = True, download: bool = False) -> None:
        self.data = torch.zeros(4, 28, 28, dtype=torch.uint8)
        self.data[1] = 255
        self.targets = torch.tensor([0, 1, 2, 9])


class FakeCIFAR10:
    def __init__(self, root: str, train: bool = True, download: bool = False) -> None:
        self.data = np.zeros((3, 32, 32, 3), dtype=np.uint8)
        self.data[..., 0] = 255  # pure red images, channels last as in torchvision
        self.targets = [5, 6, 7]


def test_torchvision_missing_files_say_where_and_that_genfw_never_downloads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = fake_torchvision(monkeypatch, MNIST=NotDownloaded)
    with pytest.raises(GenfwError) as info:
        build(tv_plugin, "torchvision", {"root": "/data/vision"})
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("dataset.root: no MNIST files under /data/vision")
    assert "never downloads" in message and "beforehand" in message
    assert calls == [{"args": ("/data/vision",), "train": True, "download": False}]


def test_torchvision_mnist_is_scaled_to_unit_range(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = fake_torchvision(monkeypatch, FashionMNIST=FakeMNIST)
    ds = build(tv_plugin, "torchvision", {"root": "/r", "name": "fashion-mnist", "train": False})
    x, y = ds.tensors
    assert calls[0]["train"] is False and calls[0]["download"] is False
    assert ds.shape == (1, 28, 28) and x.shape == (4, 1, 28, 28) and ds.num_classes == 10
    assert torch.all(x[0] == -1.0) and torch.all(x[1] == 1.0)
    assert y.tolist() == [0, 1, 2, 9] and y.dtype == torch.long


def test_torchvision_cifar_channels_first_and_resize(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_torchvision(monkeypatch, CIFAR10=FakeCIFAR10)
    ds = build(tv_plugin, "torchvision", {"root": "/r", "name": "cifar10", "size": 16})
    x, y = ds.tensors
    assert ds.shape == (3, 16, 16) and x.shape == (3, 3, 16, 16)
    torch.testing.assert_close(x[:, 0], torch.ones(3, 16, 16))
    torch.testing.assert_close(x[:, 1:], -torch.ones(3, 2, 16, 16))
    assert y.tolist() == [5, 6, 7]


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"name": "svhn"}, "name must be one of mnist, fashion-mnist, cifar10, got 'svhn'"),
        ({"size": 0}, "size"),
    ],
)
def test_torchvision_rejects_bad_options(options: dict[str, Any], words: str) -> None:
    with pytest.raises(ValueError, match=words):
        tv_plugin.TorchvisionOptions(root="/r", **options)
    with pytest.raises(GenfwError):
        build(tv_plugin, "torchvision", {"root": "/r", **options})


def test_torchvision_requires_root() -> None:
    with pytest.raises(GenfwError, match="root"):
        build(tv_plugin, "torchvision", {})
