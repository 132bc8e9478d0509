"""Diagnostics: conservation of a system's invariants along trajectories, as tables and plots,
and Poincaré sections (the states where trajectories cross a surface, or once per period).

>>> import physode, torch
>>> kep = physode.systems.load("kepler")
>>> t = torch.linspace(0, 20, 41, dtype=torch.float64)
>>> ys = physode.odeint(kep.vector_field(), kep.initial_state(), t, method="dop853",
...                     rtol=1e-10, atol=1e-12)
>>> physode.diagnostics.conservation(kep, ys, t, tolerance=1e-7).ok
True
>>> section = physode.diagnostics.poincare_section(kep, ys, t, surface="y", direction=0)
>>> section.t  # y = 0 at the far end of the orbit (half a period), then back at the start
tensor([ 8.8858, 17.7715], dtype=torch.float64)
"""

from __future__ import annotations

from physode.diagnostics._conservation import (
    DEFAULT_TOLERANCE,
    ConservationReport,
    InvariantDrift,
    conservation,
    drift_scales,
)
from physode.diagnostics._sections import PoincareSection, poincare_section, stroboscopic

__all__ = [
    "DEFAULT_TOLERANCE", "ConservationReport", "InvariantDrift", "PoincareSection",
    "conservation", "drift_scales", "poincare_section", "stroboscopic",
]
