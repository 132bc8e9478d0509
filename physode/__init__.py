"""physode: physics-informed dynamics in PyTorch.

Symbolic physical systems turned into batched torch code, hybrid physics + neural models, simulated
data sets in HDF5, conservation diagnostics, and one ODE solver layer with three ways to
differentiate through it (Disc-Opt, Opt-Disc, ACA).

>>> import torch, physode
>>> ys = physode.odeint(lambda t, y: -y, torch.tensor([1.0]), torch.linspace(0, 1, 3))
>>> ys.shape
torch.Size([3, 1])
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

from physode._errors import (
    DataFormatError,
    InvalidArgumentError,
    PhysodeError,
    SolverError,
    SystemDefinitionError,
    UnsupportedError,
)
from physode.gradients import ACA, DiscOpt, OptDisc
from physode.integrate import Solution, Stats, Status, odeint, solve

# Subpackages that pull in SymPy, h5py or matplotlib load on first use, so `import physode`
# stays light for code that only needs the solver layer.
_SUBMODULES = (
    "data",
    "diagnostics",
    "gradients",
    "models",
    "solvers",
    "symbolic",
    "systems",
    "train",
)
_LAZY_NAMES = {"System": "physode.symbolic"}


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"physode.{name}")
    if name in _LAZY_NAMES:
        return getattr(importlib.import_module(_LAZY_NAMES[name]), name)
    raise AttributeError(f"module 'physode' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_SUBMODULES) | set(_LAZY_NAMES))


__all__ = [
    "ACA",
    "DataFormatError",
    "DiscOpt",
    "InvalidArgumentError",
    "OptDisc",
    "PhysodeError",
    "Solution",
    "SolverError",
    "Stats",
    "System",
    "Status",
    "SystemDefinitionError",
    "UnsupportedError",
    "__version__",
    "data",
    "diagnostics",
    "models",
    "odeint",
    "solve",
    "systems",
    "train",
]
