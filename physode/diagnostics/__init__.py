"""Diagnostics: conservation of a system's invariants along trajectories, as tables and plots.

>>> import physode, torch
>>> kep = physode.systems.load("kepler")
>>> t = torch.linspace(0, 5, 6, dtype=torch.float64)
>>> ys = physode.odeint(kep.vector_field(), kep.initial_state(), t, method="dop853",
...                     rtol=1e-10, atol=1e-12)
>>> physode.diagnostics.conservation(kep, ys, t, tolerance=1e-7).ok
True
"""

from __future__ import annotations

from physode.diagnostics._conservation import (
    DEFAULT_TOLERANCE,
    ConservationReport,
    InvariantDrift,
    conservation,
    drift_scales,
)

__all__ = [
    "DEFAULT_TOLERANCE", "ConservationReport", "InvariantDrift", "conservation", "drift_scales",
]
