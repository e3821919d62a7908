"""genfw: train and evaluate generative models from a small core and plugins."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from genfw.errors import GenfwError
from genfw.hookspecs import hookimpl

if TYPE_CHECKING:
    # `train` is left out: the submodule genfw.train is what type checkers should see (it is
    # callable at run time, see _FROM_API).
    from genfw.api import Generator, Run, load
    from genfw.contracts import Callback, PhaseSpec, Players, Variant, VariantInfo
    from genfw.model import (
        Batch,
        BuildContext,
        DataInfo,
        EvalContext,
        GenDataset,
        Model,
        Modules,
        Optim,
        Phase,
        PhaseOutput,
        Slot,
        device_of,
    )

__version__ = "0.1.0"

# The model's names are imported on first use: `import genfw` (and so genfw's pytest plugin, which
# pytest loads in every project of an environment with genfw) does not import torch.
_FROM_MODEL = frozenset(
    {
        "Batch",
        "BuildContext",
        "DataInfo",
        "EvalContext",
        "GenDataset",
        "Model",
        "Modules",
        "Optim",
        "Phase",
        "PhaseOutput",
        "Slot",
        "device_of",
    }
)


# The plugin API's main names (genfw.contracts), also lazily.
_FROM_CONTRACTS = frozenset({"Callback", "PhaseSpec", "Players", "Variant", "VariantInfo"})


# The Python API (genfw.api): train, load, and what they return. `genfw.train` is the module of
# the loop (`from genfw import train` has always given it), made callable: genfw.train(config, ...)
# is genfw.api.train.
_FROM_API = frozenset({"Generator", "Run", "load", "train"})


def __getattr__(name: str) -> Any:
    if name == "train":
        import importlib

        return importlib.import_module("genfw.train")
    if name in _FROM_API:
        from genfw import api

        return getattr(api, name)
    if name in _FROM_MODEL:
        from genfw import model

        return getattr(model, name)
    if name in _FROM_CONTRACTS:
        from genfw import contracts

        return getattr(contracts, name)
    raise AttributeError(f"module 'genfw' has no attribute {name!r}")


def __dir__() -> list[str]:
    # The lazy names too (tab completion, dir(genfw)), without importing torch.
    return sorted({*globals(), *_FROM_MODEL, *_FROM_CONTRACTS, *_FROM_API})


__all__ = [
    "Batch",
    "BuildContext",
    "Callback",
    "DataInfo",
    "EvalContext",
    "GenDataset",
    "Generator",
    "GenfwError",
    "Model",
    "Modules",
    "Optim",
    "Phase",
    "PhaseOutput",
    "PhaseSpec",
    "Players",
    "Run",
    "Slot",
    "Variant",
    "VariantInfo",
    "__version__",
    "device_of",
    "hookimpl",
    "load",
    "train",
]
