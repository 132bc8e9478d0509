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

__version__ = "0.1.0"

from physode._errors import (
    DataFormatError,
    InvalidArgumentError,
    PhysodeError,
    SolverError,
    SystemDefinitionError,
)
from physode.gradients import ACA, DiscOpt, OptDisc
from physode.integrate import Solution, Stats, Status, odeint, solve

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
    "Status",
    "SystemDefinitionError",
    "__version__",
    "odeint",
    "solve",
]
