"""genfw: train and evaluate generative models from a small core and plugins."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from genfw.errors import GenfwError
from genfw.hookspecs import hookimpl

if TYPE_CHECKING:
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


def __getattr__(name: str) -> Any:
    if name in _FROM_MODEL:
        from genfw import model

        return getattr(model, name)
    raise AttributeError(f"module 'genfw' has no attribute {name!r}")


def __dir__() -> list[str]:
    # The lazy names too (tab completion, dir(genfw)), without importing torch.
    return sorted({*globals(), *_FROM_MODEL})


__all__ = [
    "Batch",
    "BuildContext",
    "DataInfo",
    "EvalContext",
    "GenDataset",
    "GenfwError",
    "Model",
    "Modules",
    "Optim",
    "Phase",
    "PhaseOutput",
    "Slot",
    "__version__",
    "device_of",
    "hookimpl",
]
