"""Data: simulating data sets from systems, the HDF5 store, torch datasets, and real data.

>>> import physode
>>> physode.data.load_lynx_hare().ys.shape
torch.Size([21, 2])

The layout of the HDF5 files, their versioning and the reproducibility and resume guarantees of
:func:`simulate` are described in ``docs/data.md``.
"""

from __future__ import annotations

from physode.data._store import FORMAT_NAME, FORMAT_VERSION, H5Array
from physode.data.checking import (
    CheckReport,
    InvariantSummary,
    NonFiniteStates,
    SolverFailure,
    check,
    drift_per_trajectory,
)
from physode.data.real import TimeSeries, load_csv, load_lynx_hare
from physode.data.simulation import SimulationResult, simulate
from physode.data.stored import TrajectoryFile, load
from physode.data.torch_dataset import TrajectoryDataset

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "CheckReport",
    "H5Array",
    "InvariantSummary",
    "NonFiniteStates",
    "SimulationResult",
    "SolverFailure",
    "TimeSeries",
    "TrajectoryDataset",
    "TrajectoryFile",
    "check",
    "drift_per_trajectory",
    "load",
    "load_csv",
    "load_lynx_hare",
    "simulate",
]
