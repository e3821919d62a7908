"""What the feature extractors and the quality metrics share: the cache folder, file hashes and
input checks."""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

import torch

import genfw

ENV_CACHE = "GENFW_CACHE"


def cache_dir() -> Path:
    """genfw's cache folder: ``$GENFW_CACHE``, else ``$XDG_CACHE_HOME/genfw``, else
    ``~/.cache/genfw``. Reference statistics live under ``reference/`` there."""
    env = os.environ.get(ENV_CACHE)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "genfw"


@functools.lru_cache(maxsize=16)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    """The sha256 hex digest of a file (memoised while its size and mtime stay the same)."""
    st = path.stat()
    return _sha256(str(path.resolve()), st.st_size, st.st_mtime_ns)


def check_finite(x: torch.Tensor, what: str) -> None:
    """A one-line error when ``x`` holds NaN or infinity."""
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).flatten(1).any(1).sum()) if x.dim() > 1 else -1
        count = f"{bad} of {x.shape[0]} rows" if bad >= 0 else "some values"
        raise genfw.GenfwError(
            f"{what} contain NaN or infinity ({count}); the samples are not finite (a diverged "
            f"generator?): check the run's losses, or evaluate an earlier checkpoint"
        )


def image_batch(x: torch.Tensor, who: str) -> torch.Tensor:
    """``x`` as float images ``(N, C, H, W)``; a one-line error for anything else."""
    if x.dim() != 4:
        raise genfw.GenfwError(
            f"extractor '{who}' takes images (N, C, H, W), got a tensor of shape {tuple(x.shape)}; "
            f"for points or other data use --metric.NAME.extractor raw"
        )
    return x.float()
