"""One generic explicit Runge-Kutta step that serves every tableau, and its dense output."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from physode.solvers._arrays import Array
from physode.solvers.tableau import ButcherTableau

__all__ = ["RungeKutta", "StepResult", "lincomb"]


class StepResult(NamedTuple):
    """What one step returns; nothing is mutated.

    ``f1`` is ``f(t + h, y1)`` when the method computes it anyway (FSAL), else None. ``error`` is
    the embedded error estimate (``None`` for fixed-step methods), ``error_low`` the second
    estimate of methods that combine two, and ``ks`` the stage derivatives for dense output.
    """

    y1: Tensor
    f1: Tensor | None
    error: Tensor | None
    error_low: Tensor | None
    ks: list[Tensor]


def lincomb(weights: Sequence[float], ks: Sequence[Tensor]) -> Tensor | None:
    """``sum_i weights[i] * ks[i]`` skipping zero weights; None if every weight is zero.

    Element-wise only (no matrix products), so each row of a batch is computed exactly as it would
    be alone.
    """
    return _combine(_terms(weights), ks)


def _terms(weights: Sequence[float]) -> tuple[tuple[int, float], ...]:
    """The nonzero ``(index, weight)`` pairs of ``weights``."""
    return tuple((i, w) for i, w in enumerate(weights) if w != 0.0)


def _combine(terms: Sequence[tuple[int, float]], ks: Sequence[Array]) -> Array | None:
    acc = None
    if isinstance(ks[0], Tensor):  # one fused operation per term
        for i, w in terms:
            acc = ks[i] * w if acc is None else torch.add(acc, ks[i], alpha=w)
        return acc
    for i, w in terms:  # NumPy arrays (per-sample solves without gradients)
        acc = ks[i] * w if acc is None else acc + ks[i] * w
    return acc


def _stage_time(t: float | Array, h: float | Array, c: float, time):
    """The time ``t + c h`` of a stage, as handed to ``func``; one operation per row-wise step."""
    if isinstance(h, Tensor):
        return torch.add(t, h, alpha=c)
    if isinstance(h, np.ndarray):
        return t + h * c
    return time(t + c * h)


def _advance(y: Array, h: float | Array, direction: Array | None) -> Array:
    """``y + h * direction`` for a Python-float or a per-row array step."""
    if direction is None:
        return y
    if isinstance(h, Tensor):
        return torch.addcmul(y, h, direction)
    if isinstance(h, np.ndarray):
        return y + h * direction
    return torch.add(y, direction, alpha=h)


class RungeKutta:
    """Explicit Runge-Kutta stepper over a :class:`ButcherTableau`.

    Parameters
    ----------
    tableau : ButcherTableau
        The method's coefficients.

    Examples
    --------
    >>> import torch
    >>> from physode.solvers.tableau import TABLEAUS
    >>> rk4 = RungeKutta(TABLEAUS["rk4"])
    >>> f = lambda t, y: -y
    >>> y0 = torch.ones(1, dtype=torch.float64)
    >>> out = rk4.step(f, 0.0, y0, 0.1, f(0.0, y0), lambda s: s)
    >>> round(out.y1.item(), 8)
    0.9048375
    """

    def __init__(self, tableau: ButcherTableau):
        self.tableau = tableau
        self.name = tableau.name
        self.order = tableau.order
        self.adaptive = tableau.adaptive
        # Dense output from the step's own stages; the shared loop and events use only that.
        self.has_dense = tableau.dense is not None and not tableau.dense_stages
        self._dense_rows = [(ci, _terms(row)) for ci, row in tableau.dense_stages or ()]
        # Evaluations a step makes on top of the f0 it is handed.
        self.nfe_per_step = tableau.stages - 1
        # Each stage's time and the nonzero terms of its combination, worked out once.
        self._rows = [(ci, _terms(row)) for ci, row in zip(tableau.c[1:], tableau.a[1:])]
        self._b, self._b_error, self._b_error_low = (
            None if weights is None else _terms(weights)
            for weights in (tableau.b, tableau.b_error, tableau.b_error_low)
        )
        # Trailing stages with zero weight in b (the FSAL stage) do not affect y1.
        used = max(i for i, w in enumerate(tableau.b) if w != 0.0) + 1
        self._replay_rows = self._rows[: used - 1]
        self.nfe_per_replay = used - 1
        # FSAL: the last stage is evaluated at y1 itself (its row of a is b, the weight of the last
        # stage in b being zero), so y1 is computed once and serves as that stage's input, with the
        # same operations and hence the same bits as a separate combination would give.
        self._last_stage_at_y1 = tableau.fsal and tableau.b[-1] == 0.0

    def step(
        self,
        func: Callable[[Tensor, Tensor], Tensor],
        t: float | Tensor,
        y: Tensor,
        h: float | Tensor,
        f0: Tensor,
        time: Callable[[float], Tensor],
        *,
        replay: bool = False,
    ) -> StepResult:
        """Take one step of size ``h`` from ``(t, y)`` given ``f0 = func(t, y)``.

        ``t`` and ``h`` are Python floats (one step size for the whole state) or arrays
        broadcastable against ``y`` (one step per row: torch tensors, or NumPy arrays where ``y``
        and ``func`` are NumPy's too); ``time`` turns a float time into the tensor
        handed to ``func``. ``replay=True`` rebuilds only what ``y1`` depends on (ACA's backward
        pass): no error estimate, and no FSAL stage, whose weight in ``b`` is zero; dense output
        is then unavailable.
        """
        tab = self.tableau
        ks = [f0]
        rows = self._replay_rows if replay else self._rows
        last_at_y1 = self._last_stage_at_y1 and not replay
        for ci, terms in rows[:-1] if last_at_y1 else rows:
            ks.append(func(_stage_time(t, h, ci, time), _advance(y, h, _combine(terms, ks))))
        y1 = _advance(y, h, _combine(self._b, ks))
        if replay:
            return StepResult(y1, None, None, None, ks)
        if last_at_y1:
            ks.append(func(_stage_time(t, h, rows[-1][0], time), y1))
        f1 = ks[-1] if tab.fsal else None
        error = error_low = None
        if self._b_error is not None:
            error = _combine(self._b_error, ks) * h
            if self._b_error_low is not None:
                error_low = _combine(self._b_error_low, ks) * h
        return StepResult(y1, f1, error, error_low, ks)

    def dense_stages(
        self, func, t: Array, y: Array, h: Array, ks: Sequence[Array], f1: Array
    ) -> list[Array]:
        """The stages of an accepted step's continuous extension: its stages ``ks``, then
        ``f1 = f(t + h, y1)`` and the tableau's ``dense_stages`` (per-row ``t`` and ``h``), for
        methods whose extension needs more than the step's stages (see ButcherTableau)."""
        ks = [*ks, f1]
        for ci, terms in self._dense_rows:
            ks.append(func(_stage_time(t, h, ci, None), _advance(y, h, _combine(terms, ks))))
        return ks

    def interpolate(self, y: Tensor, h: float, ks: Sequence[Tensor], theta: float) -> Tensor:
        """The method's continuous extension at ``t + theta * h`` within an accepted step."""
        return _advance(y, h, lincomb(self.tableau.dense_weights(theta), ks))
