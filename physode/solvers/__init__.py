"""Tableaus, the generic Runge-Kutta step, step-size control, symplectic steppers and the loops."""

from __future__ import annotations

from physode._errors import InvalidArgumentError
from physode.solvers.loop import LoopResult, Stats, Status, Trace, integrate
from physode.solvers.rk import RungeKutta
from physode.solvers.symplectic import Leapfrog, Yoshida4, check_separable
from physode.solvers.tableau import TABLEAUS, ButcherTableau

__all__ = [
    "ADAPTIVE_METHODS",
    "FIXED_METHODS",
    "METHODS",
    "SYMPLECTIC_METHODS",
    "ButcherTableau",
    "LoopResult",
    "RungeKutta",
    "Stats",
    "Status",
    "TABLEAUS",
    "Trace",
    "integrate",
    "make_stepper",
]

SYMPLECTIC_METHODS = {"leapfrog": Leapfrog, "yoshida4": Yoshida4}
ADAPTIVE_METHODS = tuple(name for name, tab in TABLEAUS.items() if tab.adaptive)
FIXED_METHODS = tuple(name for name, tab in TABLEAUS.items() if not tab.adaptive) + tuple(
    SYMPLECTIC_METHODS
)
METHODS = ADAPTIVE_METHODS + FIXED_METHODS


def make_stepper(method: str, func: object = None):
    """The stepper object for a method name (symplectic methods check that ``func`` separates)."""
    if method in TABLEAUS:
        return RungeKutta(TABLEAUS[method])
    if method in SYMPLECTIC_METHODS:
        return SYMPLECTIC_METHODS[method](check_separable(func, method))
    raise InvalidArgumentError(
        f"unknown method {method!r}; valid methods: adaptive {', '.join(ADAPTIVE_METHODS)}; "
        f"fixed-step {', '.join(FIXED_METHODS)}"
    )
