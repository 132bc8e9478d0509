"""Recording every ``physode.solve`` a computation makes (``odeint``'s included), to check the
solver settings that reach it and the steps it took."""

from __future__ import annotations

from typing import Any

import torch

import physode
import physode.integrate


def recorded_solves(monkeypatch) -> list[dict[str, Any]]:
    """Every ``physode.solve`` from now on, until ``monkeypatch`` undoes it: its ``max_step``,
    method, whether it differentiates given ``params`` (a calibration), whether gradients are
    on, its time span and the fewest steps a row accepted."""
    calls: list[dict[str, Any]] = []
    solve = physode.integrate.solve

    def recording(func, y0, t, **options):
        solution = solve(func, y0, t, **options)
        calls.append({
            "max_step": options.get("max_step"), "method": options.get("method"),
            "calibration": "params" in options, "grad": torch.is_grad_enabled(),
            "span": abs(float(t[-1] - t[0])),
            "steps": int(torch.as_tensor(solution.stats.n_steps).min()),
        })  # fmt: skip
        return solution

    monkeypatch.setattr(physode, "solve", recording)
    monkeypatch.setattr(physode.integrate, "solve", recording)
    return calls
