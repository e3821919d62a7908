"""genfw: train and evaluate generative models from a small core and plugins."""

from genfw.errors import GenfwError
from genfw.hookspecs import hookimpl
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
