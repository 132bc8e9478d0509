"""The Illinois root search over many brackets at once, shared by the Poincaré sections
(:mod:`physode.diagnostics._sections`) and the per-row events of :func:`physode.odeint_event`."""

from __future__ import annotations

from collections.abc import Callable

import torch

#: Steps of the Illinois method that place each crossing on its interval. It converges
#: superlinearly and keeps the root bracketed; 40 steps reach the rounding of float64 from any
#: bracket a smooth surface gives, and cost 40 evaluations of the surface for all crossings at once.
ROOT_STEPS = 40


def _root(
    g: Callable[[torch.Tensor], torch.Tensor],
    g_lo: torch.Tensor,
    g_hi: torch.Tensor,
    *,
    nudge: torch.Tensor | None = None,
) -> torch.Tensor:
    """A zero of ``g`` on [0, 1] for each crossing, ``g(0) = g_lo`` and ``g(1) = g_hi`` of
    opposite signs (``g_hi`` may be 0), by at most :data:`ROOT_STEPS` steps of the Illinois method.

    Every step evaluates ``g`` on all crossings; no loop over them. Without ``nudge`` it takes
    all :data:`ROOT_STEPS` steps, with no host synchronisation, and returns the last trial.

    ``nudge`` (one per crossing, the least fraction of [0, 1] that moves the time) makes it stop
    early: each trial is kept that far inside its bracket (a secant that rounds onto an end then
    tries the point next to it, which closes the bracket), a crossing is done once its bracket is
    at most two nudges wide or ``g`` is zero at its trial (``g_lo == 0`` is done at once, at 0),
    the steps end when all are done (one host synchronisation per step), and each crossing's
    answer is its trial with the least ``|g|``, the end 1 included.
    """
    lo, hi = torch.zeros_like(g_lo), torch.ones_like(g_hi)
    lo_negative = g_lo < 0
    moved_lo = torch.zeros_like(lo_negative)
    if nudge is not None:
        at_lo = g_lo == 0
        best = torch.where(at_lo, lo, hi)
        best_g = torch.where(at_lo, g_lo, g_hi).abs()
        done = at_lo | (g_hi == 0) | (hi - lo <= 2 * nudge)
        if bool(done.all()):
            return best
    for step_index in range(ROOT_STEPS):
        step = g_lo / (g_lo - g_hi)
        s = torch.where(torch.isfinite(step), lo + step * (hi - lo), (lo + hi) / 2)
        if nudge is None:
            s = torch.minimum(torch.maximum(s, lo), hi)
        else:
            s = torch.minimum(torch.maximum(s, lo + nudge), hi - nudge)
        g_s = g(s)
        # The side of the root s is on: where g has g(lo)'s sign, s replaces lo.
        moves_lo = ((g_s < 0) == lo_negative) & (g_s != 0)
        # Illinois: an end that stays put twice in a row has its value halved, which keeps
        # the secant from creeping up on the root from one side only.
        again = (moves_lo == moved_lo) & (step_index > 0)
        new_g_hi = torch.where(moves_lo, torch.where(again, g_hi / 2, g_hi), g_s)
        new_g_lo = torch.where(moves_lo, g_s, torch.where(again, g_lo / 2, g_lo))
        new_lo = torch.where(moves_lo, s, lo)
        new_hi = torch.where(moves_lo, hi, s)
        if nudge is None:
            g_lo, g_hi, lo, hi, moved_lo = new_g_lo, new_g_hi, new_lo, new_hi, moves_lo
            continue
        # Crossings already done keep their bracket and answer.
        better = ~done & (g_s.abs() <= best_g)
        best = torch.where(better, s, best)
        best_g = torch.where(better, g_s.abs(), best_g)
        g_lo, g_hi = torch.where(done, g_lo, new_g_lo), torch.where(done, g_hi, new_g_hi)
        lo, hi = torch.where(done, lo, new_lo), torch.where(done, hi, new_hi)
        moved_lo = torch.where(done, moved_lo, moves_lo)
        done = done | (g_s == 0) | (hi - lo <= 2 * nudge)
        if bool(done.all()):
            break
    return s if nudge is None else best
