"""Extractor ``inception``: the Inception-v3 of the standard FID, with its weights from a local file.

The network is the TensorFlow "2015-12-05" Inception-v3 that Heusel et al. (2017) computed FID
with, in the PyTorch layout of pytorch-fid (``FIDInceptionA/C/E_1/E_2`` blocks) and torch-fidelity:
the weights file ``pt_inception-2015-12-05-6726825d.pth`` (torch-fidelity names the same file
``weights-inception-2015-12-05-6726825d.pth``) loads into it key for key. Differences from
torchvision's Inception-v3, all reproduced here: the average pools of the A, C and first E blocks
do not count padded zeros; the last E block pools with a max; the classifier has 1008 outputs.

Input pipeline (pytorch-fid's): images in ``[-1, 1]`` are mapped to ``[0, 1]`` and, with
``quantize`` (default), rounded to 256 levels, as if written to PNG and read back (pytorch-fid
and torch-fidelity score image files); grey images are repeated to RGB; the batch is resized
bilinearly to 299x299 (``align_corners=False``, no antialiasing) and scaled to ``[-1, 1]``.
``features`` are the 2048-d pool3 activations (FID, KID, precision/recall, density/coverage);
``logits`` the 1008 class scores without the bias, as the original Inception Score code
(OpenAI's ``improved-gan``) and torch-fidelity's ``logits_unbiased`` compute them.

Weights are looked up, first found wins: the ``weights`` option (``--metric.fid.weights``),
``$GENFW_FID_WEIGHTS`` (``--fid-weights PATH`` of ``genfw train`` and ``genfw eval``, which this
plugin adds, sets it), then the torch hub cache
``$TORCH_HOME/hub/checkpoints/`` (default ``~/.cache/torch/hub/checkpoints/``). Nothing is ever
downloaded. The file's sha256 must equal :data:`FID_WEIGHTS_SHA256`; the file name carries its
first 8 hex digits (``6726825d``), as torch hub's naming convention has it.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import attrs
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import genfw
from genfw.commands import Commands
from genfw.hookspecs import Register
from genfw_plugins.extractors._common import check_finite, image_batch, sha256_file

FID_WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
FID_WEIGHTS_ALIASES = (FID_WEIGHTS_FILE, "weights-inception-2015-12-05-6726825d.pth")
FID_WEIGHTS_URL = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + FID_WEIGHTS_FILE
# Full sha256 of the file. Its first 8 digits are the "6726825d" of the file name (torch hub's
# convention); the full digest is as published for torch-fidelity's copy of the same file.
FID_WEIGHTS_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"
ENV_WEIGHTS = "GENFW_FID_WEIGHTS"
SIZE = 299


class BasicConv2d(nn.Module):
    """Convolution without bias, batch norm (eps 1e-3), ReLU."""

    def __init__(self, cin: int, cout: int, **kwargs) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg_pool(x: Tensor) -> Tensor:
    # TensorFlow's average pool leaves padded zeros out of the mean.
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class BlockA(nn.Module):
    def __init__(self, cin: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(cin, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch1x1(x), b5, b3, self.branch_pool(_avg_pool(x))], 1)


class BlockB(nn.Module):
    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), b3, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class BlockC(nn.Module):
    def __init__(self, cin: int, c7: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(cin, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            d = layer(d)
        return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(_avg_pool(x))], 1)


class BlockD(nn.Module):
    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([b3, b7, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class BlockE(nn.Module):
    """``pool="avg"`` for Mixed_7b; ``"max"`` for Mixed_7c (a quirk of the FID graph)."""

    def __init__(self, cin: int, pool: str) -> None:
        super().__init__()
        self.pool = pool
        self.branch1x1 = BasicConv2d(cin, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(cin, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        d = torch.cat([self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)], 1)
        pooled = _avg_pool(x) if self.pool == "avg" else F.max_pool2d(x, 3, stride=1, padding=1)
        return torch.cat([self.branch1x1(x), b3, d, self.branch_pool(pooled)], 1)


class FIDInceptionV3(nn.Module):
    """The network alone (no input pipeline): ``(N, 3, 299, 299)`` in ``[-1, 1]`` -> pool3
    ``(N, 2048)``; ``fc`` maps pool3 to the 1008 logits. Module names are the weights file's."""

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.Mixed_5b = BlockA(192, pool_features=32)
        self.Mixed_5c = BlockA(256, pool_features=64)
        self.Mixed_5d = BlockA(288, pool_features=64)
        self.Mixed_6a = BlockB(288)
        self.Mixed_6b = BlockC(768, c7=128)
        self.Mixed_6c = BlockC(768, c7=160)
        self.Mixed_6d = BlockC(768, c7=160)
        self.Mixed_6e = BlockC(768, c7=192)
        self.Mixed_7a = BlockD(768)
        self.Mixed_7b = BlockE(1280, pool="avg")
        self.Mixed_7c = BlockE(2048, pool="max")
        self.fc = nn.Linear(2048, 1008)

    def forward(self, x: Tensor) -> Tensor:
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for block in (
            self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c,
            self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c,
        ):  # fmt: skip
            x = block(x)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)


# --- weights ---------------------------------------------------------------------------------------


def hub_checkpoints() -> Path:
    """torch hub's checkpoint folder: ``$TORCH_HOME/hub/checkpoints`` (torch's default
    ``~/.cache/torch/hub/checkpoints``)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def find_weights(path: str = "") -> Path:
    """The weights file: ``path``, else ``$GENFW_FID_WEIGHTS``, else the torch hub cache."""
    for given, source in ((path, "the weights option"), (os.environ.get(ENV_WEIGHTS, ""), ENV_WEIGHTS)):
        if given:
            p = Path(given).expanduser()
            if p.is_dir():  # a folder: either tool's file name
                p = next((p / n for n in FID_WEIGHTS_ALIASES if (p / n).is_file()), p / FID_WEIGHTS_FILE)
            if not p.is_file():
                raise genfw.GenfwError(
                    f"FID weights file {p} (from {source}) does not exist; download {FID_WEIGHTS_FILE} "
                    f"from {FID_WEIGHTS_URL} and give its path"
                )
            return p
    hub = hub_checkpoints()
    for name in FID_WEIGHTS_ALIASES:
        if (hub / name).is_file():
            return hub / name
    raise genfw.GenfwError(
        f"no FID Inception weights: put {FID_WEIGHTS_FILE} (from {FID_WEIGHTS_URL}) in {hub}/, "
        f"or give its path with --fid-weights PATH or ${ENV_WEIGHTS}; genfw never downloads"
    )


def load_network(path: Path, sha256: str = FID_WEIGHTS_SHA256) -> FIDInceptionV3:
    """Build the network and load ``path`` into it after checking the file's sha256.

    The file is read with ``torch.load(weights_only=True)``: tensors only, no code.
    """
    digest = sha256_file(path)
    if digest != sha256:
        raise genfw.GenfwError(
            f"FID weights {path} have sha256 {digest[:12]}..., expected {sha256[:12]}... "
            f"({FID_WEIGHTS_FILE}); the file is corrupt or another network: download it again from "
            f"{FID_WEIGHTS_URL}"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise genfw.GenfwError(f"FID weights {path} are unreadable ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict):
        raise genfw.GenfwError(f"FID weights {path} hold a {type(state).__name__}, not a state dict")
    net = FIDInceptionV3()
    expected = net.state_dict()
    # Files saved by older PyTorch carry no batch-norm counters; nothing reads them at inference.
    state = {
        **{k: v for k, v in expected.items() if k.endswith("num_batches_tracked")},
        **state,
    }
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        what = f"lacks {missing[0]}" if missing else f"has an unknown key {unexpected[0]}"
        raise genfw.GenfwError(
            f"FID weights {path} do not fit the FID Inception-v3 ({what}; {len(missing)} missing, "
            f"{len(unexpected)} unknown)"
        )
    for k, v in expected.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise genfw.GenfwError(
                f"FID weights {path}: {k} has shape {tuple(state[k].shape)}, expected {tuple(v.shape)}"
            )
    net.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})
    return net.eval().requires_grad_(False)


# --- the extractor ---------------------------------------------------------------------------------


def _check_sha(_: object, attribute: attrs.Attribute, value: str) -> None:
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise ValueError(
            f"{attribute.name} must be a sha256 hex digest (64 lowercase hex digits), got {value!r}"
        )


@attrs.define
class InceptionOptions:
    weights: str = ""
    """Path of pt_inception-2015-12-05-6726825d.pth; empty: $GENFW_FID_WEIGHTS, then the torch hub cache."""
    quantize: bool = True
    """Round images to 256 levels first, as if saved to PNG (the standard tools score image files)."""
    sha256: str = attrs.field(default=FID_WEIGHTS_SHA256, validator=_check_sha)
    """Expected sha256 of the weights; change only for weights you converted (numbers are then not standard FID)."""


class InceptionExtractor(nn.Module):
    """Inception-v3 of the standard FID (pytorch-fid weights): 2048-d pool3 features, 1008 logits."""

    accepts = "images (N, 1 or 3, H, W) in [-1, 1], any size (resized to 299x299)"

    def __init__(self, options: InceptionOptions) -> None:
        super().__init__()
        self.options = options
        path = find_weights(options.weights)
        self.net = load_network(path, options.sha256)
        self.identity = f"inception-fid:{options.sha256}:quantize={options.quantize}"

    def prepare(self, x: Tensor) -> Tensor:
        """Samples in ``[-1, 1]`` -> the network's input ``(N, 3, 299, 299)`` in ``[-1, 1]``."""
        x = image_batch(x, "inception")
        if x.shape[1] not in (1, 3):
            raise genfw.GenfwError(
                f"extractor 'inception' takes grey or RGB images (1 or 3 channels), got {x.shape[1]} "
                f"channels; convert the images to RGB, or use --metric.NAME.extractor classifier"
            )
        check_finite(x, "samples given to the inception extractor")
        x = ((x + 1) / 2).clamp(0, 1)
        if self.options.quantize:
            x = torch.round(x * 255) / 255
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
        return 2 * x - 1

    @torch.no_grad()
    def features(self, x: Tensor) -> Tensor:
        return self.net(self.prepare(x))

    @torch.no_grad()
    def logits(self, x: Tensor) -> Tensor:
        return self.features(x) @ self.net.fc.weight.T


@genfw.hookimpl
def genfw_register_extractors(register: Register) -> None:
    register("inception", InceptionExtractor, options=InceptionOptions)


# --- --fid-weights on genfw train and genfw eval ---------------------------------------------------


def add_weights_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--fid-weights", metavar="PATH", help=f"{FID_WEIGHTS_FILE} (same as ${ENV_WEIGHTS})")


def set_weights_variable(args: argparse.Namespace) -> None:
    """``--fid-weights PATH`` is ``$GENFW_FID_WEIGHTS`` for this process (:func:`find_weights`)."""
    os.environ[ENV_WEIGHTS] = str(Path(args.fid_weights).expanduser().resolve())


@genfw.hookimpl
def genfw_register_commands(commands: Commands) -> None:
    for command in ("train", "eval"):
        commands.extend(command, configure=add_weights_option, run_before=set_weights_variable)
