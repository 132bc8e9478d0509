"""Tableaus, the generic Runge-Kutta step, step-size control, symplectic steppers and the loops."""

from __future__ import annotations

from collections.abc import Sequence

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
    "unknown_method",
]

SYMPLECTIC_METHODS = {"leapfrog": Leapfrog, "yoshida4": Yoshida4}
ADAPTIVE_METHODS = tuple(name for name, tab in TABLEAUS.items() if tab.adaptive)
FIXED_METHODS = tuple(name for name, tab in TABLEAUS.items() if not tab.adaptive) + tuple(
    SYMPLECTIC_METHODS
)
METHODS = ADAPTIVE_METHODS + FIXED_METHODS


# Other libraries' names (torchdiffeq, SciPy's solve_ivp, diffrax), matched in lower case: the
# method of physode's that stands for each, or why there is none.
_NO_MULTISTEP = "physode has no multistep (Adams) methods; use 'dopri5', or 'rk4' with step_size"
_NO_STIFF = "physode has no stiff (implicit) solver; every method here is explicit"
_OTHER_NAMES = {
    "dopri8": "use 'dop853', Hairer's 8th-order Dormand-Prince pair",
    "adaptive_heun": "use 'heun', adaptive with Euler's error estimate",
    "fehlberg2": "use 'heun' or 'bosh3', the low-order adaptive pairs here",
    "heun2": "use 'midpoint', the fixed-step 2nd-order method here, or the adaptive 'heun'",
    "heun3": "physode has no fixed-step 3rd-order method; use 'rk4' with step_size, or the "
    "adaptive 'bosh3'",
    "ralston": "use 'heun', adaptive and 2nd order with Euler's error estimate, or the "
    "fixed-step 'midpoint'",
    "rk45": "use 'dopri5', the same Dormand-Prince 5(4) pair as SciPy's RK45",
    "rk23": "use 'bosh3', the same Bogacki-Shampine 3(2) pair as SciPy's RK23",
    "explicit_adams": _NO_MULTISTEP,
    "implicit_adams": _NO_MULTISTEP,
    "fixed_adams": _NO_MULTISTEP,
    "scipy_solver": "call scipy.integrate.solve_ivp itself; its RK45, RK23 and DOP853 are "
    "'dopri5', 'bosh3' and 'dop853' here",
    "radau": _NO_STIFF,
    "bdf": _NO_STIFF,
    "lsoda": _NO_STIFF,
    "impliciteuler": _NO_STIFF,
    "kvaerno3": _NO_STIFF,
    "kvaerno4": _NO_STIFF,
    "kvaerno5": _NO_STIFF,
    "kencarp3": _NO_STIFF,
    "kencarp4": _NO_STIFF,
    "kencarp5": _NO_STIFF,
    "sil3": _NO_STIFF,
}


def unknown_method(method: object, valid: Sequence[str] = (), kind: str = "method") -> str:
    """What to say of a method name that is not one of ``valid`` (by default every method), the
    message calling it an unknown ``kind``: another library's name gets physode's nearest method
    (``'dopri8'``: ``'dop853'``).

    >>> unknown_method("dopri8").split(",")[0]
    "unknown method 'dopri8' (another library's name): use 'dop853'"
    """
    choices = (
        ", ".join(valid)
        if valid
        else f"adaptive: {', '.join(ADAPTIVE_METHODS)}; fixed-step: {', '.join(FIXED_METHODS)}"
    )
    message = f"unknown {kind} {method!r}"
    if isinstance(method, str):
        name = method.lower()
        if name in (valid or METHODS):
            message += f"; method names are lower case: method={name!r}"
        elif name in _OTHER_NAMES:
            message += f" (another library's name): {_OTHER_NAMES[name]}"
    return f"{message}; valid methods: {choices}"


# One stepper per Runge-Kutta tableau, built once: it holds nothing of a solve (its stage terms
# are worked out from the tableau when it is built), and every solve asks for one.
_RUNGE_KUTTA: dict[str, RungeKutta] = {}


def _runge_kutta(method: str) -> RungeKutta:
    tableau = TABLEAUS[method]
    stepper = _RUNGE_KUTTA.get(method)
    if stepper is None or stepper.tableau is not tableau:  # a tableau replaced in TABLEAUS
        stepper = _RUNGE_KUTTA[method] = RungeKutta(tableau)
    return stepper


def make_stepper(method: str, func: object = None):
    """The stepper object for a method name (symplectic methods check that ``func`` separates)."""
    if method in TABLEAUS:
        return _runge_kutta(method)
    if method in SYMPLECTIC_METHODS:
        return SYMPLECTIC_METHODS[method](check_separable(func, method))
    raise InvalidArgumentError(unknown_method(method))
