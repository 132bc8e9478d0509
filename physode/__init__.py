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
from typing import TYPE_CHECKING

__version__ = "0.1.0"

from physode._errors import (
    DataFormatError,
    DistributedError,
    InternalError,
    InvalidArgumentError,
    PhysodeError,
    PhysodeWarning,
    SolverError,
    SystemDefinitionError,
    TrainingError,
    UnsupportedError,
)

# Everything that needs torch, SymPy, h5py or matplotlib loads on first use: `import physode`
# itself reads no more than the error classes. So the `physode` command loads torch inside its
# main(), where Ctrl-C while torch loads stops it as any interruption does (one line, exit 130).
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
_LAZY_NAMES = {
    "ACA": "physode.gradients",
    "DiscOpt": "physode.gradients",
    "EventSolution": "physode.events",
    "OptDisc": "physode.gradients",
    "Solution": "physode.integrate",
    "Stats": "physode.integrate",
    "Status": "physode.integrate",
    "System": "physode.symbolic",
    "odeint": "physode.integrate",
    "odeint_event": "physode.events",
    "solve": "physode.integrate",
}

if TYPE_CHECKING:  # what the lazy names are, for type checkers and editors
    from physode.events import EventSolution, odeint_event
    from physode.gradients import ACA, DiscOpt, OptDisc
    from physode.integrate import Solution, Stats, Status, odeint, solve
    from physode.symbolic import System


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"physode.{name}")
    if name in _LAZY_NAMES:
        value = getattr(importlib.import_module(_LAZY_NAMES[name]), name)
        globals()[name] = value  # found directly from now on
        return value
    raise AttributeError(f"module 'physode' has no attribute {name!r}")


def __dir__() -> list[str]:
    # The public names and the module's own dunders; not the helpers this file imports
    # (importlib, TYPE_CHECKING, annotations) nor private submodules loaded on the way.
    dunders = {name for name in globals() if name.startswith("__") and name.endswith("__")}
    return sorted(set(__all__) | set(_SUBMODULES) | set(_LAZY_NAMES) | dunders)


__all__ = [
    "ACA",
    "DataFormatError",
    "DiscOpt",
    "DistributedError",
    "EventSolution",
    "InternalError",
    "InvalidArgumentError",
    "OptDisc",
    "PhysodeError",
    "PhysodeWarning",
    "Solution",
    "SolverError",
    "Stats",
    "System",
    "Status",
    "SystemDefinitionError",
    "TrainingError",
    "UnsupportedError",
    "__version__",
    "data",
    "diagnostics",
    "models",
    "odeint",
    "odeint_event",
    "solve",
    "systems",
    "train",
]
