"""Shared fixtures: the registry of built-ins, a quick config, and the CLI run in-process."""

from __future__ import annotations

import os

import pytest
import torch

from genfw import cli
from genfw.plugins import get_registry

# Tests run on small models; one thread each avoids oversubscribing the CI's two cores.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def registry():
    return get_registry()


@pytest.fixture
def run_cli(capsys):
    """Run ``genfw ARGS`` in this process; return (exit code, stdout, stderr)."""

    def run(*args: str) -> tuple[int, str, str]:
        code = cli.main([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


# Fast settings for end-to-end runs.
QUICK = ("--no-progress", "--train.log_every", "5", "--train.grid", "16")
