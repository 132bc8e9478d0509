"""Pendulums of known lengths, simulated tightly, for the tests of per-trajectory parameters,
their calibration and the trainer."""

from __future__ import annotations

import torch

import physode
import physode.systems
from physode.train import Trajectories


def swinging(
    lengths: list[float], points: int = 11, t_end: float = 1.0, g: float = 9.81,
    spacing: float = 0.15,
) -> Trajectories:
    """Pendulums of the given lengths and masses 1 + i/4, released at rest from the angles
    0.4 + i * spacing, sampled at ``points`` times over ``[0, t_end]``; their parameters are
    stored."""
    pendulum = physode.systems.load("pendulum")
    n = len(lengths)
    params = torch.tensor(
        [[1.0 + i / 4, g, length] for i, length in enumerate(lengths)], dtype=torch.float64
    )
    y0 = torch.stack([0.4 + spacing * torch.arange(n, dtype=torch.float64), torch.zeros(n)], -1)
    t = torch.linspace(0, t_end, points, dtype=torch.float64)
    ys = physode.odeint(lambda s, y: pendulum.rhs(s, y, params), y0, t, rtol=1e-11, atol=1e-11)
    return Trajectories(t, ys.transpose(0, 1), params=params, system=pendulum)
