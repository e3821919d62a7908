"""genfw's pytest plugin (entry point ``genfw`` in the ``pytest11`` group): the fixtures of
:mod:`genfw.testing`, available in any project with genfw installed.

- ``genfw_registry``: the registry of every installed plugin (yours included once installed);
- ``genfw_contract``: :func:`genfw.testing.check`, e.g. ``genfw_contract("loss", "mine")``.

Nothing heavy is imported until a test asks for a fixture, so pytest sessions of other projects in
the same environment do not pay for torch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest


@pytest.fixture(scope="session")
def genfw_registry() -> Any:
    """The registry of every installed genfw plugin."""
    from genfw.testing import default_registry

    return default_registry()


@pytest.fixture
def genfw_contract(genfw_registry: Any) -> Callable[..., None]:
    """``genfw_contract(kind, name, options=None)`` runs that kind's contract check."""
    import torch

    from genfw.testing import check

    def run(kind: str, name: str, options: Any = None) -> None:
        torch.manual_seed(0)
        check(kind, name, registry=genfw_registry, options=options)

    return run
