"""Terminal events: solve until a function of the state changes sign (``odeint_event``), with an
event time and state that are differentiable in every gradient mode."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.autograd import forward_ad

from physode._checks import is_finite_real
from physode._defaults import MAX_STEPS
from physode._errors import (
    InvalidArgumentError,
    PhysodeWarning,
    SolverError,
    UnsupportedError,
)
from physode._repr import number_text, short_repr, stats_text, status_text
from physode.gradients import GradientMode
from physode.gradients.base import DOUBLE_BACKWARD
from physode.integrate import (
    _check_state,
    _check_tuple_settings,
    _find_params,
    _gradient_mode,
    _is_batched,
    _refuse_transforms,
    _transforms_active,
    _tuple_state,
    check_initial_state,
    check_settings,
    checked_split,
    refuse_keywords,
    solve,
)
from physode.solvers import SYMPLECTIC_METHODS, Stats, Status, integrate, make_stepper
from physode.solvers._roots import _root
from physode.solvers._tuples import Parts, RowParts, RowTupleFunc, TupleFunc
from physode.solvers.control import attainable_rtol, warn_unattainable
from physode.solvers.loop import time_maker

__all__ = ["EventSolution", "odeint_event"]

DIRECTIONS = (-1, 0, 1)
# How the messages name each direction's sign change, and what they advise where none was found.
_SIGN_CHANGE = {0: "", 1: " from negative to positive", -1: " from positive to negative"}
_NO_EVENT_ADVICE = (
    "Extend t_max, check event_fn's sign there, or look for two crossings between two points "
    "the search evaluates event_fn at (the ends of each step and 4 points inside it; "
    "max_step=... caps the steps below the time between two crossings)"
)
_NOT_DIFFERENTIABLE = (
    "event_fn(t, y) is not differentiable with respect to t and y (its result does not require "
    "grad when they do), so t_event has no gradient; compute it from t and y with torch "
    "operations"
)



@dataclass
class EventSolution:
    """The result of :func:`odeint_event`; unpacks as ``t_event, ys = ...``, as torchdiffeq's.

    Attributes
    ----------
    t_event : Tensor
        0-dim, ``y0``'s dtype: the time of the event (NaN where none was found, ``throw=False``);
        with one event per row, shape ``(batch,)``, each row's own.
    ys : Tensor
        ``(2, *y0.shape)``: ``y0`` and the state at ``t_event`` (NaN where no event was found);
        with one event per row, row ``i`` of ``ys[1]`` is row ``i``'s state at its own event.
    found : bool or Tensor
        Whether an event was found; with one event per row, a bool tensor of shape
        ``(batch,)``, one per row.
    status : Status
        How the search solve stopped: ``Status.SUCCESS`` when it reached the event or ``t_max``,
        otherwise why it stopped early.
    message : str
        ``"success"``, or what went wrong, where, and what to try.
    t_final : float
        The time the search reached (the event's time, the last row's with one event per row,
        or where it gave up).
    stats : Stats
        The search's work: its steps, and its evaluations of ``func`` (not of ``event_fn``).
    gradient_stats : Stats or None
        A differentiable call solves a second time, from ``t0`` to the event with the gradient
        mode; that solve's counters (``nfe_backward`` filled in once backward has run).
    h_final : float or None
        The last step size the search tried.
    """

    t_event: Tensor
    ys: Tensor
    found: bool
    status: Status
    message: str
    t_final: float
    stats: Stats
    gradient_stats: Stats | None = None
    h_final: float | None = None

    @property
    def success(self) -> bool:
        """Whether an event was found (per-row events: in every row)."""
        return bool(self.found.all()) if isinstance(self.found, Tensor) else self.found

    def __iter__(self) -> Iterator[Tensor]:
        return iter((self.t_event, self.ys))

    def __repr__(self) -> str:
        # t_event and found as figures (per-row events: their range and count), ys by shape.
        return short_repr(
            self, ("found", _found_text), ("t_event", number_text), ("status", status_text),
            "ys", ("stats", stats_text), ("t_final", number_text),
        )


def _found_text(found: bool | Tensor) -> str:
    """Whether the event was found; per-row events as how many rows found theirs."""
    if isinstance(found, Tensor):
        return f"{int(found.sum())} of {found.numel()} rows"
    return repr(found)


@dataclass
class _Crossing:
    """The accepted step in which ``event_fn`` changed sign, the fractions ``lo < hi`` of it
    between which it did (first), and its values there."""

    t: float
    y: Tensor
    t_new: float
    y1: Tensor
    step: Any
    lo: float
    hi: float
    g_lo: float
    g_hi: float


#: Points inside each accepted step, evenly spaced, at which the search also evaluates
#: ``event_fn`` on the method's dense output (``dopri5``, ``tsit5``, ``bosh3``), so that two
#: crossings within one step are seen where one of them falls between two of the points. They
#: cost no evaluation of ``func``: one interpolation of the step and one call of ``event_fn`` each.
INTERIOR_POINTS = 4


class _Interior:
    """The states inside an accepted step at which the search evaluates ``event_fn``: the
    dense output at :data:`INTERIOR_POINTS` evenly spaced fractions of the step, for a method
    that has one; none for the others."""

    def __init__(self, stepper, y0: Tensor):
        dense = stepper.has_dense and stepper.adaptive
        n = INTERIOR_POINTS if dense else 0
        self.fractions = tuple((i + 1) / (n + 1) for i in range(n))
        if n:
            weights = [stepper.tableau.dense_weights(theta) for theta in self.fractions]
            # (points, stages): every point's state from one product with the stacked stages
            self.weights = torch.tensor(weights, dtype=y0.dtype, device=y0.device)

    def states(self, y: Tensor, h: float, ks: Sequence[Tensor]) -> Tensor | tuple[()]:
        """The states at the fractions of the step of size ``h`` from ``y`` with stages ``ks``,
        stacked along a leading dimension."""
        if not self.fractions:
            return ()
        return y + h * torch.tensordot(self.weights, torch.stack(list(ks)), dims=1)


class _Hermite:
    """For a method without dense output: the candidate states inside each accepted step at
    which the search evaluates ``event_fn``, and the method's own states there where a
    candidate shows a sign change.

    The candidates lie on the cubic Hermite curve through the step's two ends and the slopes
    ``f`` there, at the :data:`INTERIOR_POINTS` fractions of the step that the dense output
    uses. A candidate only points at a crossing: where the candidates show one, the method
    re-steps from the step's start to each of those fractions (``INTERIOR_POINTS`` steps'
    evaluations of ``func``, once) and its own states decide whether and where the sign
    changed, as they locate the root.

    The slope at a step's start is the one at the previous step's end (``f0`` at first). The
    slope at the end is an FSAL method's last stage (free); for a symplectic step that drifts
    by ``v`` itself, ``(v, the last kick)`` (free); for a symplectic one that does not, one
    evaluation of ``func`` per step; and for a Runge-Kutta method one evaluation that its next
    step takes as its first stage, through :meth:`func` (free but at the step that ends the
    search).
    """

    def __init__(self, stepper, func, y0: Tensor, f0: Tensor, time, stats: Stats):
        self.stepper, self.raw, self.time, self.stats = stepper, func, time, stats
        self.fractions = tuple((i + 1) / (INTERIOR_POINTS + 1) for i in range(INTERIOR_POINTS))
        # (points, 4): the weights of y, h f(y), y1 and h f(y1) at each fraction
        weights = [
            (2 * s**3 - 3 * s**2 + 1, s**3 - 2 * s**2 + s, 3 * s**2 - 2 * s**3, s**3 - s**2)
            for s in self.fractions
        ]
        self.weights = torch.tensor(weights, dtype=y0.dtype, device=y0.device)
        tableau = getattr(stepper, "tableau", None)
        self.fsal = tableau is not None and tableau.fsal
        self.hands_over = tableau is not None and not tableau.fsal
        self.velocity = getattr(stepper, "drift_is_velocity", False)
        self.f_a = f0
        self.handed: tuple[Tensor, Tensor] | None = None

    def func(self, t: Tensor, y: Tensor) -> Tensor:
        """``func`` for the search's loop: its first call after an accepted step, the next
        step's first stage at that step's end state, gets the slope :meth:`end_slope` made."""
        handed, self.handed = self.handed, None
        if handed is not None and y is handed[0]:
            self.stats.nfe -= 1  # the loop counts it again; end_slope has counted it
            return handed[1]
        return self.raw(t, y)

    def end_slope(self, t_new: float, y1: Tensor, step) -> Tensor:
        """``f(t_new, y1)``, the slope at the end of the accepted ``step``."""
        if self.fsal:
            return step.f1
        if self.velocity:
            n = self.stepper.n
            return torch.cat([y1[..., n:], step.f1[..., n:]], dim=-1)
        f1 = self.raw(self.time(t_new), y1)
        self.stats.nfe += 1
        if self.hands_over:
            self.handed = (y1, f1)
        return f1

    def states(self, y: Tensor, h: float, y1: Tensor, f1: Tensor) -> Tensor:
        """The candidate states of the step of size ``h`` from ``y`` to ``y1`` (slope ``f1``
        there), stacked along a leading dimension."""
        points = torch.stack([y, h * self.f_a, y1, h * f1])
        return torch.tensordot(self.weights, points, dims=1)

    def method_states(self, t: float, y: Tensor, h: float) -> list[Tensor]:
        """The method's own states at the fractions of the step of size ``h`` from ``(t, y)``,
        each from one step of the method from ``y``."""
        self.stats.nfe += self.stepper.nfe_per_replay * len(self.fractions)
        return [
            self.stepper.step(self.raw, t, y, theta * h, self.f_a, self.time, replay=True).y1
            for theta in self.fractions
        ]


def odeint_event(
    func: Callable[[Tensor, Tensor], Tensor],
    y0: Tensor,
    t0: float | Tensor,
    event_fn: Callable[[Tensor, Tensor], Tensor],
    *,
    t_max: float | None = None,
    direction: int = 0,
    method: str = "dopri5",
    rtol: float = 1e-6,
    atol: float = 1e-8,
    step_size: float | None = None,
    gradient: str | GradientMode = "aca",
    max_steps: int = MAX_STEPS,
    first_step: float | None = None,
    max_step: float | None = None,
    params: Sequence[Tensor] | None = None,
    throw: bool = True,
    **unknown: Any,
) -> EventSolution:
    """Solve ``dy/dt = func(t, y)`` from ``y0`` at ``t0`` until ``event_fn(t, y)`` changes sign.

    The event is the first sign change of ``event_fn`` after ``t0`` (a terminal event). The
    solver steps as :func:`physode.solve` does, evaluating ``event_fn`` at the end of every
    accepted step and at 4 evenly spaced points inside it: for a method with dense output
    (``dopri5``, ``tsit5``, ``bosh3``) on that output (no evaluation of ``func``); for the
    others on the cubic Hermite curve through the step's ends and slopes, whose points only
    point at a crossing: where they show one, the method steps from the step's start to each
    point (4 steps' evaluations, once) and its own states there decide. The first sign change
    among them is the event, and its root is located to the resolution of ``t`` by a
    bracketing search (Illinois) on the dense output, or for the other methods on steps of the
    method from the start of that step to each trial time (a few steps' evaluations of
    ``func``, once: 4 to 11 steps on smooth problems). Two crossings that both fall between two
    points evaluated (within a fifth of a step) cancel out and go unseen: where the crossings
    can come that close together, cap the steps with ``max_step``.

    The event time and the state there are differentiable with respect to ``y0``, ``func``'s
    parameters and ``event_fn``'s, in every gradient mode, by the implicit function theorem:
    the call solves again from ``t0`` to the located root ``t_r`` with ``gradient``, and takes
    one Newton step ``t_event = t_r - g(t_r, y_r) / (dg/dt)`` with the total derivative
    ``dg/dt = dg/dt + dg/dy . func`` held constant, and ``y_event = y_r + func(t_r, y_r) *
    (t_event - t_r)``, both exact to first order since ``g(t_r, y_r)`` is zero to rounding. That
    second solve is made only where a gradient can be asked for (grad mode on, and ``y0`` or a
    parameter requiring grad); ``t0`` and ``t_max`` are not differentiated. Being exact to
    first order only, they refuse a second derivative (``create_graph=True``) with
    :class:`~physode.UnsupportedError`, in every gradient mode.

    Parameters
    ----------
    func : callable ``(t, y) -> dy/dt``
        As for :func:`physode.solve`.
    y0 : Tensor, or tuple or list of Tensor
        Initial state, any shape; the whole state has one event, unless ``event_fn`` returns one
        value per row of a batch ``(batch, ...)`` (at least two dimensions). A tuple of
        tensors is a state in parts, as for :func:`physode.solve`: ``func`` and ``event_fn``
        then receive tuples, and ``ys`` is a tuple of parts, each ``(2, *part.shape)``.
    t0 : float or 0-dim Tensor
        Initial time.
    event_fn : callable ``(t, y) -> Tensor``
        Returns a 0-dim tensor; the event is where it crosses zero. A start on zero
        (``event_fn(t0, y0) == 0``) is not an event: the search takes the sign the function has
        next. For a batched ``y0`` of shape ``(batch, ...)`` it may instead return one value
        per row, shape ``(batch,)`` (e.g. ``y[:, 0]``): each row then has its own event, its
        first sign change, and ``t_event`` has shape ``(batch,)``. Each row's value must depend
        on that row of ``y`` (and ``t``) only, and ``func`` must compute each row from that row
        alone (the rows are separate systems); the search steps the batch with one step size
        and ends when every row has crossed. While a row's root is located and for its Newton
        step, ``t`` is a tensor of shape ``(batch,)``, one time per row (``func`` then gets
        shape ``(batch, 1, ...)``, as with ``step_control="per-sample"``); during the search it
        is 0-dim, shared. Every method takes them, ``leapfrog`` and ``yoshida4`` included. For
        a tuple ``y0`` the rows are every part's first dimension (parts that do not share it
        are refused), and ``func`` gets the per-row times with the shape that broadcasts
        against every part where the parts have one number of dimensions, else ``(batch,)``.
        To find the first of a batch's events instead, reduce the rows to one value, e.g.
        ``y[:, 0].min()``.
    t_max : float, optional
        Give up at this time (``t_max < t0`` integrates backward in time). By default the search
        runs forward until the event or ``max_steps``.
    direction : int
        ``0``: either sign change (default); ``1``: only a rise from negative to positive;
        ``-1``: only a fall from positive to negative. Crossings the other way are passed over.
        Rise and fall are as the search runs: backward in time (``t_max < t0``) a rise is
        negative at the later time and positive at the earlier one (SciPy's ``solve_ivp``
        convention).
    method, rtol, atol, step_size, gradient, max_steps, first_step, max_step, params
        As for :func:`physode.solve` (``max_steps`` limits the search and the second solve each;
        ``max_step`` caps the steps of both).
    throw : bool
        Raise :class:`physode.SolverError` when no event is found (none before ``t_max``, or the
        search stopped early) (default); with ``False`` return an ``EventSolution`` whose
        ``found`` is False and whose ``t_event`` and state are NaN. With one event per row, it
        raises if any row has none, naming those rows (the error's ``solution`` holds the
        others' events, without gradients); with ``False`` those rows get ``found`` False and
        NaN, and the others their events and gradients.

    Returns
    -------
    EventSolution
        Unpacks as ``t_event, ys``; ``ys`` has shape ``(2, *y0.shape)``, the states at ``t0`` and
        ``t_event`` (for a tuple ``y0``, a tuple of such tensors).

    Raises
    ------
    physode.InvalidArgumentError
        On bad input, e.g. an ``event_fn`` that returns neither a 0-dim tensor nor one value
        per row of a batched ``y0``.
    physode.SolverError
        When no event is found and ``throw`` is true; carries the time reached.

    Examples
    --------
    A ball dropped from 10 m reaches the floor at ``t = sqrt(2 * 10 / 9.81)``:

    >>> import torch, physode
    >>> fall = lambda t, y: torch.stack([y[1], torch.tensor(-9.81, dtype=y.dtype)])
    >>> y0 = torch.tensor([10.0, 0.0], dtype=torch.float64, requires_grad=True)
    >>> t_event, ys = physode.odeint_event(fall, y0, 0.0, lambda t, y: y[0], rtol=1e-10)
    >>> round(t_event.item(), 9), round(ys[1, 1].item(), 6)
    (1.427843123, -14.007141)
    >>> t_event.backward()  # dt/dh0 = 1 / sqrt(2 * 9.81 * h0)
    >>> round(y0.grad[0].item(), 9)
    0.071392156

    A batch of balls from 1, 5 and 20 m, one event per row (``event_fn`` returns ``(batch,)``):

    >>> fall_rows = lambda t, y: torch.stack([y[:, 1], torch.full_like(y[:, 1], -9.81)], -1)
    >>> y0 = torch.tensor([[1.0, 0.0], [5.0, 0.0], [20.0, 0.0]], dtype=torch.float64)
    >>> sol = physode.odeint_event(fall_rows, y0, 0.0, lambda t, y: y[:, 0])
    >>> sol.t_event  # sqrt(2 * h0 / 9.81), row by row
    tensor([0.4515, 1.0096, 2.0193], dtype=torch.float64)
    >>> sol.found
    tensor([True, True, True])

    The same balls as a tuple state ``(height, velocity)``, each part of shape ``(batch,)``,
    on the symplectic ``yoshida4`` (a tuple ``(q, v)`` declares its own split):

    >>> state = (y0[:, 0], y0[:, 1])
    >>> kick = lambda t, y: (y[1], torch.full_like(y[1], -9.81))
    >>> sol = physode.odeint_event(kick, state, 0.0, lambda t, y: y[0], method="yoshida4",
    ...                            step_size=0.05)
    >>> sol.t_event
    tensor([0.4515, 1.0096, 2.0193], dtype=torch.float64)
    >>> [tuple(part.shape) for part in sol.ys]
    [(2, 3), (2, 3)]
    """
    if unknown:
        refuse_keywords(unknown, "odeint_event", _TORCHDIFFEQ_KEYWORDS)
    state, parts = y0, None
    if isinstance(y0, tuple | list):
        y0, parts = _tuple_state(y0)
    else:
        _check_state(y0)
    for name, f in (("func", func), ("event_fn", event_fn)):
        if not callable(f):
            raise InvalidArgumentError(
                f"{name} must be callable as {name}(t, y), got {type(f).__name__}"
            )
    t0 = _time("t0", t0)
    if t_max is not None:
        t_max = _time("t_max", t_max)
        if t_max == t0:
            raise InvalidArgumentError(
                f"t_max must differ from t0={t0!r}: greater to solve forward, smaller to solve "
                "backward in time"
            )
    end = math.inf if t_max is None else t_max
    if isinstance(direction, bool) or direction not in DIRECTIONS:
        raise InvalidArgumentError(
            f"direction must be 0 (either sign change), 1 (rising) or -1 (falling), "
            f"got {direction!r}"
        )
    mode = _gradient_mode(gradient)  # refuse an unknown one before solving
    if parts is not None:
        _check_tuple_settings(parts, method, "shared", rtol, atol)
    rtol, atol, step_size, first_step, max_steps, max_step = check_settings(
        method, rtol, atol, step_size, first_step, max_steps, max_step
    )
    # A tangent or a vmap batch on y0 itself is refused by _refuse_transforms, saying which.
    own = isinstance(y0, Tensor) and (
        forward_ad.unpack_dual(y0).tangent is not None or _is_batched(y0)
    )
    if not own and _transforms_active([y0]):
        # With Disc-Opt too: the Newton step at the event differentiates event_fn with autograd
        # inside the call, which torch.func refuses (a bare RuntimeError), and jvp over a
        # tensor that func captures gave the event time a tangent of 0.
        raise UnsupportedError(
            "torch.func transforms (grad, jacrev, jvp, jacfwd, vmap) cannot differentiate "
            "odeint_event: the gradient at the event is taken with autograd inside the call. "
            "Use torch.autograd.grad or torch.autograd.functional.jacobian, which work with "
            "every gradient mode"
        )
    _refuse_transforms([y0], mode.name)
    y0 = check_initial_state(y0)
    # Said once: the second solve, if any, gets the rtol already raised.
    warn_unattainable(rtol, y0, "the event search", stacklevel=2)
    rtol = attainable_rtol(rtol, y0)

    # What the search steps and evaluates: for a tuple state, func and event_fn of the flat
    # state (the second solve takes the tuple itself).
    field, event = func, event_fn
    time = time_maker(y0)
    if parts is not None:
        # One event per row steps the parts in rows, (batch, -1), from the start: event_fn's
        # first value says which layout.
        with torch.no_grad():
            g0 = event_fn(time(t0), tuple(part.detach() for part in state))
        if _tuple_rows(g0, state):
            parts = RowParts(state)
            y0 = parts.flatten(state)
        wrap = RowTupleFunc if isinstance(parts, RowParts) else TupleFunc
        field = wrap(func, parts, method in SYMPLECTIC_METHODS)
        event = _TupleEvent(event_fn, parts)
    stats = Stats()
    stepper = checked_split(make_stepper(method, field), field, method, t0, y0, stats)

    # The first evaluation, with autograd on where a gradient may be asked for: its graph shows
    # whether func reaches tensors that require grad, and so whether the second solve is needed.
    differentiable = torch.is_grad_enabled()
    with torch.enable_grad() if differentiable else torch.no_grad():
        f0 = field(time(t0), y0.detach())
    stats.nfe += 1
    if isinstance(f0, Tensor) and forward_ad.unpack_dual(f0).tangent is not None:
        # A tangent that func's own tensors carry (torch.autograd.forward_ad): the search and
        # the Newton step evaluate func without it, so t_event came back with none.
        raise UnsupportedError(
            "forward-mode differentiation (torch.autograd.forward_ad) through odeint_event is "
            "not supported: func(t, y) carries a tangent that the event search drops. Take the "
            "derivatives in reverse mode: torch.autograd.grad or "
            "torch.autograd.functional.jacobian"
        )
    solve_again = differentiable and (
        y0.requires_grad
        or bool(_find_params(func, params))
        or (isinstance(f0, Tensor) and f0.requires_grad)
    )
    with torch.no_grad():
        if parts is None:
            g0 = event(time(t0), y0.detach())
        f0 = f0.detach() if isinstance(f0, Tensor) else f0
        per_row = _is_per_row(g0, y0)
        if per_row:
            rows = _Rows(field, event, stepper, y0, time, stats)
            rows.check(g0, t0)
    if per_row:
        return _odeint_event_rows(
            rows, func, state, parts, y0, t0, end, t_max, direction, g0, f0, solve_again,
            differentiable, throw, method=method, rtol=rtol, atol=atol, step_size=step_size,
            gradient=gradient, max_steps=max_steps, first_step=first_step, max_step=max_step,
            params=params,
        )  # fmt: skip
    with torch.no_grad():
        g0 = _checked_value(g0, time(t0), y0)
        crossing, result = _search(
            stepper, field, event, y0.detach(), t0, end, direction, g0, f0, time, stats,
            rtol=rtol, atol=atol, step_size=step_size, first_step=first_step,
            max_steps=max_steps, max_step=max_step,
        )  # fmt: skip
    if crossing is None:
        return _not_found(result, y0, parts, t0, t_max, g0, direction, stats, throw)

    with torch.no_grad():
        t_root, y_root = _locate(stepper, field, event, crossing, time, stats)
    gradient_stats = None
    if solve_again:
        sol = solve(
            func, state, [t0, t_root], method=method, rtol=rtol, atol=atol, step_size=step_size,
            gradient=gradient, max_steps=max_steps, first_step=first_step, max_step=max_step,
            params=params,
        )  # fmt: skip
        y_root = sol.ys[-1] if parts is None else parts.flatten([ys[-1] for ys in sol.ys])
        gradient_stats = sol.stats
    t_event, y_event = time(t_root), y_root
    if differentiable:
        t_event, y_event = _first_order(*_newton_step(field, event, t_root, y_root, time, stats))
    return EventSolution(
        t_event=t_event,
        ys=_states(torch.stack([y0, y_event]), parts),
        found=True,
        status=Status.SUCCESS,
        message="success",
        t_final=t_root,
        stats=stats,
        gradient_stats=gradient_stats,
        h_final=result.h,
    )


def _states(ys: Tensor, parts: Parts | None) -> Tensor | tuple[Tensor, ...]:
    """The flat states at ``t0`` and the event, as the caller's ``y0`` is: a tensor, or a
    tuple of parts."""
    return ys if parts is None else parts.split(ys, lead=(len(ys),))


class _TupleEvent:
    """``event_fn`` of a tuple state, as a function of the flat state the search steps."""

    def __init__(self, event_fn: Callable, parts: Parts):
        self.event_fn, self.parts = event_fn, parts

    def __call__(self, t: Tensor, y: Tensor) -> Tensor:
        return self.event_fn(t, self.parts.split(y))


def _time(name: str, value: object) -> float:
    """``t0`` or ``t_max`` as a finite float (a Python number or a tensor of one element)."""
    if isinstance(value, Tensor):
        if value.numel() != 1 or value.is_complex() or value.dtype == torch.bool:
            raise InvalidArgumentError(
                f"{name} must be one real time, got a tensor of shape {tuple(value.shape)} "
                f"and dtype {value.dtype}"
            )
        if value.requires_grad and torch.is_grad_enabled():
            warnings.warn(
                f"{name} requires grad, but odeint_event does not differentiate with respect to "
                f"it: {name}.grad stays None. Pass {name}.detach() to silence this warning.",
                PhysodeWarning,
                stacklevel=3,
            )
        value = value.item()
    if not is_finite_real(value):
        raise InvalidArgumentError(f"{name} must be a finite real time, got {value!r}")
    return float(value)


def _event_value(event_fn: Callable, t: Tensor, y: Tensor, y0: Tensor) -> float:
    """``event_fn(t, y)`` as a float, after checking that it is one finite real value."""
    return _checked_value(event_fn(t, y), t, y0)


def _is_per_row(g: object, y0: Tensor) -> bool:
    """Whether ``event_fn``'s value ``g`` is one value per row of a batched ``y0``."""
    return isinstance(g, Tensor) and g.ndim == 1 and y0.ndim >= 2 and g.shape == y0.shape[:1]


def _checked_value(g: object, t: Tensor, y0: Tensor) -> float:
    """``event_fn``'s value ``g`` as a float, after checking that it is one finite real value."""
    if not isinstance(g, Tensor):
        raise InvalidArgumentError(
            f"event_fn(t, y) must return a 0-dim tensor computed from t and y with torch "
            f"operations, got {type(g).__name__}; a Python number (from .item() or float()) "
            "carries no gradient to t_event: return e.g. y[0] - 1.0"
        )
    if g.ndim != 0 and g.numel() == 1:
        raise InvalidArgumentError(
            f"event_fn(t, y) must return a 0-dim tensor, got shape {tuple(g.shape)}: one value, "
            "but with dimensions; index rather than slice (y[0], not y[0:1]) or return "
            "g.squeeze()"
        )
    if g.ndim != 0:
        rows = (
            f"one value per row, shape y0.shape[:1] = {tuple(y0.shape[:1])}"
            if y0.ndim >= 2
            else f"one value per row of a batched y0 of shape (batch, ...) (this y0 has shape "
            f"{tuple(y0.shape)}: give a batch of scalars the shape (batch, 1))"
        )
        raise InvalidArgumentError(
            f"event_fn(t, y) must return a 0-dim tensor (one event for the whole state) or "
            f"{rows}, got shape {tuple(g.shape)}"
        )
    _check_kind(g, y0.device)
    value = g.item()
    if not math.isfinite(value):
        raise InvalidArgumentError(
            f"event_fn(t, y) returned {value} at t={t.item():.17g}; it must be finite along "
            "the trajectory"
        )
    return value


def _check_kind(g: Tensor, device: torch.device) -> None:
    """Refuse an ``event_fn`` value that is not floating point or not on ``y``'s device."""
    if not g.is_floating_point():
        raise InvalidArgumentError(
            f"event_fn(t, y) must return a floating point tensor, got dtype {g.dtype}; its sign "
            "changes are located to the resolution of t, e.g. return y[0] - 1.0"
        )
    if g.device != device:
        raise InvalidArgumentError(
            f"event_fn(t, y) must return a tensor on y's device {device}, got {g.device}"
        )


def _search(stepper, func, event_fn, y0, t0, end, direction, g0, f0, time, stats, **settings):
    """Step from ``t0`` towards ``end`` until ``event_fn`` changes sign (in ``direction``);
    return that step's :class:`_Crossing` (None if there is none) and the loop's result.

    Within each accepted step ``event_fn`` is evaluated at the step's interior points (see
    :class:`_Interior` and :class:`_Hermite`) and at its end, in order; the first sign change
    among them is the one located. Without dense output the interior points count only where
    their candidates show a sign change, and then as the method's own states."""
    # The sign of the last nonzero value (0 until the trajectory leaves a start on zero), and
    # the value at the last point evaluated.
    last = {"sign": _sign(g0), "g": g0}
    found: list[_Crossing] = []
    interior = _Interior(stepper, y0)
    hermite = None if interior.fractions else _Hermite(stepper, func, y0, f0, time, stats)
    points = interior.fractions or hermite.fractions
    fractions = (*points, 1.0)

    def stop(t, y, t_new, y1, step) -> bool:
        if not stepper.adaptive and not bool(torch.isfinite(y1).all()):
            return True  # the loop then reports the non-finite state (adaptive ones reject it)
        h = t_new - t
        times = [t + theta * h for theta in points] + [t_new]
        seen = fractions
        if hermite is None:
            states = [*interior.states(y, h, step.ks), y1]
            values = _event_values(event_fn, times, states, time, y0)
        else:
            f1 = hermite.end_slope(t_new, y1, step)
            states = [*hermite.states(y, h, y1, f1), y1]
            values = _event_values(event_fn, times, states, time, y0, unchecked=len(points))
            if _points_at_crossing(last, values, direction):
                states = hermite.method_states(t, y, h)
                values = [*_event_values(event_fn, times[:-1], states, time, y0), values[-1]]
            else:  # the end alone, as the method gives it
                seen, values = (1.0,), values[-1:]
            hermite.f_a = f1
        change = _first_change(last, values, direction)
        if change is None:
            return False
        i, g = change
        lo = seen[i - 1] if i else 0.0
        found.append(_Crossing(t, y, t_new, y1, step, lo, seen[i], g, values[i]))
        return True

    result = integrate(stepper, func if hermite is None else hermite.func, y0, [t0, end],
                       stats=stats, f0=f0, stop=stop, **settings)  # fmt: skip
    return (found[0] if found and result.status is Status.SUCCESS else None), result


def _first_change(last: dict, values: list[float], direction: int) -> tuple[int, float] | None:
    """The index of the first sign change (in ``direction``) among ``values``, after the sign
    ``last["sign"]`` (the last nonzero one) and the value ``last["g"]``, and the value before
    it; None if there is none. ``last`` is carried along up to that point.

    A change is a nonzero sign left for another (a zero included, unless the value was already
    zero there); a start on zero takes the sign that comes next."""
    for i, g1 in enumerate(values):
        g, sign, sign1 = last["g"], last["sign"], _sign(g1)
        last["g"] = g1
        if sign1 == sign or sign == 0 or (sign1 == 0 and g == 0):
            last["sign"] = sign1 or sign
            continue
        if direction in (0, -sign):  # a rise leaves a negative sign behind, a fall a positive
            return i, g
        last["sign"] = sign1 or sign
    return None


def _points_at_crossing(last: dict, values: list[float], direction: int) -> bool:
    """Whether the values at a step's candidate points and (last) its end show a sign change
    (in ``direction``) that the end alone does not: a candidate off the sign carried in (or
    not finite), and a change in the sequence."""
    candidates = values[:-1]
    if not all(math.isfinite(g) for g in candidates):
        return True
    if all(_sign(g) == last["sign"] for g in candidates):
        return False
    return _first_change(dict(last), values, direction) is not None


def _event_values(
    event_fn, times: list[float], states, time, y0: Tensor, unchecked: int = 0
) -> list[float]:
    """``event_fn`` at each time and state, as floats read back together (one host
    synchronisation), after checking that each is one finite real value (the first
    ``unchecked``, at candidate states, may be any real value)."""
    values = []
    for t, y in zip(times, states, strict=True):
        g = event_fn(time(t), y)
        if not (isinstance(g, Tensor) and g.ndim == 0 and g.is_floating_point()
                and g.device == y0.device):  # fmt: skip
            _checked_value(g, time(t), y0)  # says what is wrong
        values.append(g)
    floats = torch.stack(values).tolist() if len(values) > 1 else [values[0].item()]
    for t, value in zip(times[unchecked:], floats[unchecked:], strict=True):
        if not math.isfinite(value):
            raise InvalidArgumentError(
                f"event_fn(t, y) returned {value} at t={t:.17g}; it must be finite along "
                "the trajectory"
            )
    return floats


def _sign(value: float) -> int:
    return (value > 0) - (value < 0)


def _locate(stepper, func, event_fn, crossing: _Crossing, time, stats) -> tuple[float, Tensor]:
    """The root of ``event_fn`` within the crossing step and the state there, by the Illinois
    variant of regula falsi on the step's interpolant, between the fractions ``lo`` and ``hi``
    of the step that bracket it."""
    c = crossing
    h, step = c.t_new - c.t, c.step
    if stepper.has_dense and stepper.adaptive:

        def state(theta: float) -> Tensor:
            return stepper.interpolate(c.y, h, step.ks, theta)

    else:
        # Re-step from the step's start to each trial time: the state the method itself gives
        # there, to its own order (a cubic Hermite interpolant would be accurate to the fourth).
        f_a = step.ks[0] if step.ks else func(time(c.t), c.y)
        stats.nfe += not step.ks

        def state(theta: float) -> Tensor:
            stats.nfe += stepper.nfe_per_replay
            return stepper.step(func, c.t, c.y, theta * h, f_a, time, replay=True).y1

    states: dict[float, Tensor] = {0.0: c.y, 1.0: c.y1}

    def at(theta: float) -> tuple[float, Tensor]:
        if theta not in states:
            states[theta] = state(theta)
        return (c.t_new if theta == 1.0 else c.t + theta * h), states[theta]

    if c.g_hi == 0.0:
        return at(c.hi)
    if c.g_lo == 0.0:
        return at(c.lo)
    # Times closer than this are one time for func (and event_fn), which get t in y's dtype: the
    # least fraction of the bracket that moves the time is the search's nudge (see _root).
    resolution = torch.finfo(c.y.dtype).eps * max(abs(c.t), abs(c.t_new))
    width = c.hi - c.lo

    def value(s: Tensor) -> Tensor:
        theta = c.lo + float(s) * width
        states[theta] = state(theta)
        g = _event_value(event_fn, time(c.t + theta * h), states[theta], c.y)
        return torch.tensor([g], dtype=torch.float64)

    def bound(g: float) -> Tensor:
        return torch.tensor([g], dtype=torch.float64)

    s = float(_root(value, bound(c.g_lo), bound(c.g_hi), nudge=bound(resolution / abs(h * width))))
    return at(c.lo + s * width)


def _newton_step(func, event_fn, t_root: float, y_root: Tensor, time, stats):
    """``t_event`` and ``y_event`` from one Newton step at the root, differentiable through
    ``y_root`` and ``event_fn``'s parameters (the implicit function theorem; see
    :func:`odeint_event`)."""
    t_r = time(t_root)
    g_r = event_fn(t_r, y_root)
    if not (g_r.requires_grad or y_root.requires_grad):
        return t_r, y_root  # nothing to differentiate: the root as found
    with torch.no_grad():
        f_r = func(t_r, y_root.detach())
    stats.nfe += 1
    with torch.enable_grad():
        t_leaf = t_r.clone().requires_grad_(True)
        y_leaf = y_root.detach().clone().requires_grad_(True)
        g = event_fn(t_leaf, y_leaf)
        if not g.requires_grad:
            warnings.warn(_NOT_DIFFERENTIABLE, PhysodeWarning, stacklevel=3)
            return t_r, y_root.detach()
        g_t, g_y = torch.autograd.grad(g, (t_leaf, y_leaf), allow_unused=True)
    dg_dt = (0.0 if g_t is None else g_t) + (0.0 if g_y is None else (g_y * f_r).sum())
    rate = float(dg_dt)
    if rate == 0.0 or not math.isfinite(rate):
        warnings.warn(
            f"event_fn's rate of change along the trajectory is {rate} at the event "
            f"(t={t_root:.17g}): the trajectory touches the surface rather than crossing it, "
            "and the event time has no gradient there; t_event and its state are returned "
            "without one",
            PhysodeWarning,
            stacklevel=3,
        )
        return t_r, y_root.detach()
    t_event = t_r - g_r / dg_dt
    return t_event, y_root + f_r * (t_event - t_r)


class _FirstOrderOnly(torch.autograd.Function):
    """The identity on ``(t_event, y_event)``, whose backward pass refuses to be differentiated.

    The Newton step at the event holds its rate ``dg/dt`` and ``func(t_r, y_r)`` constant: its
    first derivatives are the implicit function theorem's, its second ones are not (they miss
    the curvature of ``g`` along the trajectory and the rate's own derivatives). A falling body
    with quadratic drag gave d2/dc2 of ``t_event`` plus the speed at impact as -2.65 where
    finite differences of the gradient gave -1.40.
    """

    @staticmethod
    def forward(ctx, t_event: Tensor, y_event: Tensor) -> tuple[Tensor, Tensor]:
        return t_event.clone(), y_event.clone()

    @staticmethod
    def backward(ctx, grad_t: Tensor, grad_y: Tensor) -> tuple[Tensor, Tensor]:
        if torch.is_grad_enabled():
            raise UnsupportedError(
                "odeint_event's t_event and state at the event cannot be differentiated twice "
                f"(create_graph=True, second derivatives; {DOUBLE_BACKWARD}): their gradient "
                "comes from one Newton step at the event with its rate dg/dt held constant, "
                "which gives first derivatives only. For second derivatives, differentiate "
                "physode.solve(..., gradient='disc-opt') to a fixed time, e.g. "
                "t=[t0, float(t_event)]."
            )
        return grad_t, grad_y


def _first_order(t_event: Tensor, y_event: Tensor) -> tuple[Tensor, Tensor]:
    """``t_event`` and ``y_event`` as they are, refusing a second derivative if they have a
    gradient (see :class:`_FirstOrderOnly`)."""
    if not (t_event.requires_grad or y_event.requires_grad):
        return t_event, y_event
    return _FirstOrderOnly.apply(t_event, y_event)


def _not_found(result, y0, parts, t0, t_max, g0, direction, stats, throw) -> EventSolution:
    """The answer, or the SolverError, of a search that found no event."""
    if result.status is Status.SUCCESS:
        message = (
            f"no event before t_max={t_max!r}: event_fn did not change sign"
            f"{_SIGN_CHANGE[direction]} between t0={t0!r} (where it is {g0:.6g}) and t_max. "
            f"{_NO_EVENT_ADVICE}"
        )
    else:
        message = f"no event found: {result.message}"
    nan = torch.full_like(y0.detach(), math.nan)
    solution = EventSolution(
        t_event=torch.tensor(math.nan, dtype=y0.dtype, device=y0.device),
        ys=_states(torch.stack([y0, nan]), parts),
        found=False,
        status=result.status,
        message=message,
        t_final=result.t,
        stats=stats,
        h_final=result.h,
    )
    if throw:
        raise SolverError(
            message, status=result.status, t=result.t, step_size=result.h, solution=solution
        )
    return solution


def _tuple_rows(g: object, state: Sequence[Tensor]) -> bool:
    """Whether ``event_fn``'s first value ``g`` is one value per row of a tuple state, the rows
    being every part's first dimension; refuse one value per row that the parts do not share."""
    if not isinstance(g, Tensor) or g.ndim != 1:
        return False
    if all(part.ndim and part.shape[0] == g.shape[0] for part in state):
        return True
    if g.numel() == 1:
        return False  # one value with a dimension: _checked_value says how to return it
    shapes = ", ".join(f"y0[{i}] {tuple(part.shape)}" for i, part in enumerate(state))
    raise InvalidArgumentError(
        f"event_fn returned one value per row (shape {tuple(g.shape)}) for a tuple state, but "
        f"not every part has {g.shape[0]} rows along its first dimension ({shapes}); one event "
        "per row takes the rows along every part's first dimension: give each part the shape "
        "(batch, ...), or return a 0-dim tensor for one event of the whole state"
    )


class _Rows:
    """One event per row of a batch: the search's per-row bookkeeping, the location of every
    row's root at once, and the Newton step per row.

    While the batch is stepped with one step size, each row's first sign change (in
    ``direction``) is noted together with what locates it: the step's start time, size and
    state, its end state and its stages (the dense output's, or the first one, from which the
    method re-steps). Times are held in float64; ``event_fn`` gets them as a tensor of shape
    ``(batch,)`` in ``y``'s dtype (one per row) and ``func`` as ``(batch, 1, ...)``, the shape
    ``step_control="per-sample"`` gives it.
    """

    def __init__(self, func, event_fn, stepper, y0: Tensor, time, stats: Stats):
        self.func, self.event_fn, self.stepper, self.time, self.stats = (
            func, event_fn, stepper, time, stats,
        )  # fmt: skip
        self.batch = y0.shape[0]
        self.shape = (self.batch,) + (1,) * (y0.ndim - 1)  # one value per row, against y
        self.dtype, self.device = y0.dtype, y0.device
        self.dense = stepper.has_dense and stepper.adaptive
        self.crossed = torch.zeros(self.batch, dtype=torch.bool, device=y0.device)
        self.kept: dict[str, Any] | None = None

    def row_time(self, t: Tensor, lead: bool = False) -> Tensor:
        """Per-row float64 times as the tensor ``event_fn`` (or, with ``lead``, ``func``) gets."""
        t = t.to(self.dtype)
        return t.view(self.shape) if lead else t

    def check(self, g: object, t: float) -> None:
        """Refuse a per-row value that changed shape or kind, or is not finite (one sync)."""
        if not isinstance(g, Tensor) or g.shape != (self.batch,):
            shape = tuple(g.shape) if isinstance(g, Tensor) else type(g).__name__
            raise InvalidArgumentError(
                f"event_fn(t, y) returned one value per row, shape ({self.batch},), at first, "
                f"then {shape} at t={t:.17g}; it must return the same shape throughout"
            )
        _check_kind(g, self.device)
        bad = ~torch.isfinite(g)
        if bool(bad.any()):
            self.refuse_non_finite(g, bad, t)

    @staticmethod
    def refuse_non_finite(g: Tensor, bad: Tensor, t: float | str) -> None:
        row = int(bad.nonzero()[0, 0])
        at = t if isinstance(t, str) else f"t={t:.17g}"
        raise InvalidArgumentError(
            f"event_fn(t, y) returned {g[row].item()} for row {row} at {at}; it must be finite "
            "along the trajectory"
        )

    def search(self, y0, t0, end, direction, g0, f0, **settings):
        """Step from ``t0`` towards ``end`` until every row's ``event_fn`` has changed sign (in
        ``direction``); return the loop's result.

        Within each accepted step ``event_fn`` is evaluated at the step's interior points (see
        :class:`_Interior` and :class:`_Hermite`) and at its end, in order; each row's first
        sign change among them is the one located. Without dense output a row's interior points
        count only where its candidates show a sign change, and then as the method's own
        states (of the whole batch, re-stepped once for all such rows)."""
        stepper, time = self.stepper, self.time
        interior = _Interior(stepper, y0)
        hermite = None if interior.fractions else _Hermite(
            stepper, self.func, y0, f0, time, self.stats
        )
        points = interior.fractions or hermite.fractions
        fractions = (0.0, *points, 1.0)
        # Per row: the sign of the last nonzero value (0 until a start on zero is left), and the
        # value at the start of the coming step.
        last = {"sign": torch.sign(g0), "g": g0}

        def stop(t, y, t_new, y1, step) -> bool:
            h = t_new - t
            times = [t + theta * h for theta in points] + [t_new]
            sign, g = last["sign"], last["g"]
            if hermite is None:
                values = self.values(times, [*interior.states(y, h, step.ks), y1])
                found = _first_changes(sign, g, values, fractions, direction)
                checked, points_at = values, None
            else:
                f1 = hermite.end_slope(t_new, y1, step)
                values = self.values(times, [*hermite.states(y, h, y1, f1), y1])
                # The end alone, unless a row's candidates show a change (checked below).
                found = _first_changes(sign, g, values[-1:], (0.0, 1.0), direction)
                candidates = torch.stack(values[:-1])
                off = (torch.sign(candidates) != sign).any(0)
                shown = _first_changes(sign, g, values, fractions, direction)[0]
                unknown = ~torch.isfinite(candidates).all(0)
                points_at = ~self.crossed & (unknown | (off & shown))
                checked = values[-1:]
            hit = found[0] & ~self.crossed
            # One host synchronisation per step for everything the loop must know.
            flags = [hit.any(), (self.crossed | hit).all(),
                     torch.isfinite(torch.stack(checked)).all()]  # fmt: skip
            if points_at is not None:
                flags.append(points_at.any())
            if not stepper.adaptive:
                flags.append(torch.isfinite(y1).all())
            any_hit, all_crossed, finite, *more = torch.stack(flags).tolist()
            look = bool(more.pop(0)) if points_at is not None else False
            if more and not more[0]:
                return True  # the loop then reports the non-finite state
            if not finite:
                self.refuse_any_non_finite(times[-len(checked):], checked)
            if look:
                # The method's own states at the points, for the rows whose candidates showed
                # a change: a second synchronisation, in those steps only.
                own = self.values(times[:-1], hermite.method_states(t, y, h))
                self.refuse_any_non_finite(times[:-1], own)
                closer = _first_changes(sign, g, [*own, values[-1]], fractions, direction)
                found = tuple(torch.where(points_at, a, b)
                              for a, b in zip(closer, found, strict=True))  # fmt: skip
                hit = found[0] & ~self.crossed
                any_hit, all_crossed = torch.stack([hit.any(), (self.crossed | hit).all()]).tolist()
            if hermite is not None:
                hermite.f_a = f1  # the next step's slope at its start
            _, lo, hi, g_lo, g_hi, last["sign"], last["g"] = found
            if any_hit:
                self.keep(hit, t, t_new, y, y1, step, lo, hi, g_lo, g_hi)
                self.crossed = self.crossed | hit
            return bool(all_crossed)

        func = self.func if hermite is None else hermite.func
        return integrate(stepper, func, y0, [t0, end], stats=self.stats, f0=f0, stop=stop,
                         **settings)  # fmt: skip

    def values(self, times: list[float], states) -> list[Tensor]:
        """``event_fn`` at each (shared) time and state, each checked to be one value per row."""
        values = []
        for t_i, y_i in zip(times, states, strict=True):
            g_i = self.event_fn(self.time(t_i), y_i)
            if not isinstance(g_i, Tensor) or g_i.shape != (self.batch,):
                self.check(g_i, t_i)
            values.append(g_i)
        return values

    def refuse_any_non_finite(self, times: list[float], values: list[Tensor]) -> None:
        """Refuse the first of ``values`` (at ``times``) that is not finite in some row."""
        for t_i, g_i in zip(times, values, strict=True):
            bad = ~torch.isfinite(g_i)
            if bool(bad.any()):
                self.refuse_non_finite(g_i, bad, t_i)

    def keep(self, hit, t, t_new, y, y1, step, lo, hi, g_lo, g_hi) -> None:
        """Note, for the rows in ``hit``, the step that locates their root, and the fractions of
        it (and ``event_fn``'s values there) that bracket the root."""
        # Without dense output, the step's first stage f(t, y) where the method keeps it (a
        # symplectic step keeps none: locate evaluates it).
        ks = list(step.ks) if self.dense else step.ks[:1]
        new = {"y": y, "y1": y1, "ks": ks, "g": g_lo, "g1": g_hi, "lo": lo, "hi": hi}
        if self.kept is None:  # the first crossing: every row takes this step for now
            f64 = {"dtype": torch.float64, "device": self.device}
            self.kept = {**new, "t": torch.full((self.batch,), t, **f64),
                         "t_new": torch.full((self.batch,), t_new, **f64)}  # fmt: skip
            return
        k, rows = self.kept, hit.view(self.shape)
        k["y"], k["y1"] = torch.where(rows, y, k["y"]), torch.where(rows, y1, k["y1"])
        k["ks"] = [torch.where(rows, a, b) for a, b in zip(ks, k["ks"], strict=True)]
        for name in ("g", "g1", "lo", "hi"):
            k[name] = torch.where(hit, new[name], k[name])
        k["t"], k["t_new"] = k["t"].masked_fill(hit, t), k["t_new"].masked_fill(hit, t_new)

    def locate(self) -> tuple[Tensor, Tensor]:
        """Every crossed row's root (float64 times, NaN elsewhere) and state there, located at
        once by the Illinois search on the steps noted, between each row's bracketing
        fractions of its step."""
        k, crossed, stepper = self.kept, self.crossed, self.stepper
        t_a, h = k["t"], k["t_new"] - k["t"]
        y_a, ks = k["y"], k["ks"]
        lo, width = k["lo"], k["hi"] - k["lo"]
        # Rows with no event are done from the start (g_lo = 0) and never read.
        g_lo = torch.where(crossed, k["g"], 0.0).double()
        # The least fraction of each bracket that moves its time (see _locate).
        eps = torch.finfo(self.dtype).eps
        nudge = eps * torch.maximum(t_a.abs(), k["t_new"].abs()) / (h * width).abs()
        nudge = torch.where(crossed, nudge, 0.0)
        h_y = h.to(self.dtype).view(self.shape)
        if not self.dense:
            t_lead = self.row_time(t_a, lead=True)
            f_a = ks[0] if ks else self.func(t_lead, y_a)
            self.stats.nfe += not ks

        def state(theta: Tensor) -> Tensor:
            if self.dense:
                weights = stepper.tableau.dense_weights(theta.to(self.dtype).view(self.shape))
                return y_a + h_y * sum(w * k_ for w, k_ in zip(weights, ks, strict=True))
            self.stats.nfe += stepper.nfe_per_replay
            h_s = (theta * h).to(self.dtype).view(self.shape)
            return stepper.step(self.func, t_lead, y_a, h_s, f_a, self.time, replay=True).y1

        def g(s: Tensor) -> Tensor:
            theta = lo + s * width
            value = self.event_fn(self.row_time(t_a + theta * h), state(theta))
            bad = crossed & ~torch.isfinite(value)
            if bool(bad.any()):
                self.refuse_non_finite(value, bad, "a time within its event's step")
            return value.double()

        s = _root(g, g_lo, k["g1"].double(), nudge=nudge)
        theta = lo + s * width
        k["s"] = torch.where(crossed, theta, 0.0)  # for states_with_gradient
        t_root = torch.where(theta == 1, k["t_new"], t_a + theta * h)
        y_root = torch.where((theta == 1).view(self.shape), k["y1"], state(theta))
        y_root = torch.where((theta == 0).view(self.shape), y_a, y_root)
        nan = torch.tensor(math.nan, dtype=self.dtype, device=self.device)
        t_root = torch.where(crossed, t_root, math.nan)
        return t_root, torch.where(crossed.view(self.shape), y_root, nan)

    def states_with_gradient(
        self, func, state, parts, y0: Tensor, t0: float, t_root: Tensor, backward: bool, settings
    ) -> tuple[Tensor, Stats]:
        """Every row's state at its root again, from one solve with the gradient mode (rows
        with no event: ``y0``), and that solve's counters.

        With dense output, the solve's outputs are the roots themselves. Otherwise they are the
        starts of the crossing steps, which a fixed-step solve reaches on the search's own grid
        (outputs at the roots would shift the grid after the first, and the later rows' states
        would no longer be the search's), and each row then takes its step's fraction ``s`` as
        :meth:`locate` did, with autograd.
        """
        k, crossed, batch = self.kept, self.crossed, self.batch
        wanted = t_root if self.dense else k["t"]
        # The distinct times in the order the search runs; each row then takes its own.
        times, index = torch.unique(wanted[crossed], sorted=True, return_inverse=True)
        if backward:
            times, index = times.flip(0), len(times) - 1 - index
        times = times.tolist()
        start = int(times[0] == t0)  # a crossing in the first step starts from y0 itself
        at = torch.zeros(batch, dtype=torch.long, device=self.device)
        at[crossed] = index + 1 - start
        stats, ys = Stats(), y0.unsqueeze(0)
        if len(times) > start:
            sol = solve(func, state, [t0, *times[start:]], **settings)
            stats = sol.stats
            ys = sol.ys if parts is None else parts.flatten(sol.ys, lead=(len(sol.ys[0]),))
        y_at = ys[at, torch.arange(batch, device=self.device)]
        if self.dense:
            return y_at, stats
        t_lead = self.row_time(k["t"], lead=True)
        h_s = (k["s"] * (k["t_new"] - k["t"])).to(self.dtype).view(self.shape)
        f_a = self.func(t_lead, y_at)
        self.stats.nfe += 1 + self.stepper.nfe_per_replay
        step = self.stepper.step(self.func, t_lead, y_at, h_s, f_a, self.time, replay=True)
        return step.y1, stats

    def newton_step(self, t_root: Tensor, y_root: Tensor) -> tuple[Tensor, Tensor]:
        """Each row's ``t_event`` and state from one Newton step at its root, differentiable
        as :func:`_newton_step`'s (rows with no event: NaN, no gradient)."""
        crossed, shape = self.crossed, self.shape
        t_r = self.row_time(t_root)
        # Rows with no event are evaluated at a finite stand-in and masked out at the end.
        t_safe = torch.where(crossed, t_r, 0.0)
        y_safe = torch.where(crossed.view(shape), y_root, torch.zeros_like(y_root.detach()))
        g_r = self.event_fn(t_safe, y_safe)
        if not (g_r.requires_grad or y_root.requires_grad):
            return t_r, y_root
        with torch.no_grad():
            f_r = self.func(t_safe.view(shape), y_safe.detach())
        self.stats.nfe += 1
        with torch.enable_grad():
            t_leaf = t_safe.detach().clone().requires_grad_(True)
            y_leaf = y_safe.detach().clone().requires_grad_(True)
            g = self.event_fn(t_leaf, y_leaf)
            if not g.requires_grad:
                warnings.warn(_NOT_DIFFERENTIABLE, PhysodeWarning, stacklevel=4)
                return t_r, y_root.detach()
            # Each row's value depends on its own row and time only, so the gradient of the
            # sum is, row by row, that row's own derivative.
            g_t, g_y = torch.autograd.grad(g.sum(), (t_leaf, y_leaf), allow_unused=True)
        rate = (g_y * f_r).flatten(1).sum(1) if g_y is not None else torch.zeros_like(t_safe)
        if g_t is not None:
            rate = rate + g_t
        flat = crossed & ((rate == 0) | ~torch.isfinite(rate))
        if bool(flat.any()):
            row = int(flat.nonzero()[0, 0])
            warnings.warn(
                f"event_fn's rate of change along the trajectory is {rate[row].item()} at the "
                f"event of row {row} (t={t_root[row].item():.17g}), and in "
                f"{int(flat.sum())} row(s) in all: the trajectory touches the surface rather "
                "than crossing it, and the event time has no gradient there; those rows' "
                "t_event and state are returned without one",
                PhysodeWarning,
                stacklevel=4,
            )
        keep = crossed & ~flat
        step = g_r / torch.where(keep, rate, 1.0)
        t_event = torch.where(keep, t_safe - step, t_r)
        y_event = y_safe + f_r * (t_event - t_safe).view(shape)
        y_event = torch.where(keep.view(shape), y_event, y_root.detach())
        return t_event, y_event


def _first_changes(sign: Tensor, g: Tensor, values: list[Tensor], fractions, direction: int):
    """Each row's first sign change (in ``direction``) among the values ``event_fn`` took at the
    ``fractions`` of a step after ``fractions[0]``, where the row had the sign ``sign`` (its last
    nonzero one) and the value ``g``: the rows with one, the fractions and values bracketing it,
    and each row's sign and value at the step's end, for the next step.

    The same rule as the single event's search, for every point at once: a change is a nonzero
    sign left for another (a zero included, unless the value was already zero there)."""
    gs = torch.stack([g, *values])  # (points + 1, batch)
    signs = torch.sign(gs)
    signs[0] = sign
    # The last nonzero sign up to each point (a start on zero keeps 0 until it is left).
    points = torch.arange(len(gs), device=gs.device).view(-1, 1).expand_as(gs)
    last_nonzero = torch.where(signs != 0, points, 0).cummax(0).values
    carried = signs.gather(0, last_nonzero)
    before, after, g_before = carried[:-1], signs[1:], gs[:-1]
    changed = (after != before) & (before != 0) & ~((after == 0) & (g_before == 0))
    if direction:  # a rise leaves a negative sign behind, a fall a positive
        changed &= before == -direction
    hit = changed.any(0)
    first = changed.int().argmax(0, keepdim=True)  # 0 where none: then unused
    f64 = torch.tensor(fractions, dtype=torch.float64, device=gs.device)
    lo, hi = f64[first[0]], f64[first[0] + 1]
    g_lo, g_hi = gs.gather(0, first)[0], gs.gather(0, first + 1)[0]
    return hit, lo, hi, g_lo, g_hi, carried[-1], gs[-1]


def _odeint_event_rows(rows: _Rows, func, state, parts, y0, t0, end, t_max, direction, g0, f0,
                       solve_again, differentiable, throw, **settings) -> EventSolution:
    """:func:`odeint_event` with one event per row of a batch (``event_fn`` returned ``g0`` of
    shape ``(batch,)``)."""
    loop = {name: settings[name] for name in ("rtol", "atol", "step_size", "first_step",
                                              "max_steps", "max_step")}  # fmt: skip
    with torch.no_grad():
        result = rows.search(y0.detach(), t0, end, direction, g0, f0, **loop)
        crossed = rows.crossed
        if rows.kept is not None:
            t_root, y_root = rows.locate()
        else:
            t_root = torch.full((rows.batch,), math.nan, dtype=torch.float64, device=y0.device)
            y_root = torch.full_like(y0, math.nan)
    n_found = int(crossed.sum())
    found_all = n_found == rows.batch
    gradient_stats = None
    t_event, y_event = rows.row_time(t_root), y_root
    if found_all or not throw:
        if n_found and solve_again:
            y_root, gradient_stats = rows.states_with_gradient(
                func, state, parts, y0, t0, t_root, end < t0, settings
            )
        if n_found and differentiable:
            t_event, y_event = _first_order(*rows.newton_step(t_root, y_root))
    nan_rows = (~crossed).view(rows.shape)
    if n_found < rows.batch:
        t_event = torch.where(crossed, t_event, math.nan)
        y_event = torch.where(nan_rows, math.nan, y_event)
    message = "success" if found_all else _rows_not_found(
        result, crossed, t0, t_max, direction, rows.batch - n_found
    )
    solution = EventSolution(
        t_event=t_event,
        ys=_states(torch.stack([y0, y_event]), parts),
        found=crossed,
        status=result.status,
        message=message,
        # Where the search ends: the last row's event, or where it gave up.
        t_final=(t_root.max() if end > t0 else t_root.min()).item() if found_all else result.t,
        stats=rows.stats,
        gradient_stats=gradient_stats,
        h_final=result.h,
    )
    if throw and not found_all:
        raise SolverError(
            message, status=result.status, t=result.t, step_size=result.h, solution=solution
        )
    return solution


def _rows_not_found(result, crossed, t0, t_max, direction, missing: int) -> str:
    """What to say of the rows whose event was not found."""
    none = (~crossed).nonzero()[:, 0].tolist()
    listed = ", ".join(map(str, none[:5])) + (", ..." if len(none) > 5 else "")
    if result.status is Status.SUCCESS:
        return (
            f"no event before t_max={t_max!r} in {missing} of {len(crossed)} rows (rows "
            f"{listed}): their event_fn did not change sign{_SIGN_CHANGE[direction]} between "
            f"t0={t0!r} and t_max. {_NO_EVENT_ADVICE}"
        )
    return f"no event found in {missing} of {len(crossed)} rows (rows {listed}): {result.message}"


# torchdiffeq's odeint_event keywords, and what physode takes instead.
_TORCHDIFFEQ_KEYWORDS = {
    "reverse_time": "pass t_max < t0 to integrate backward in time",
    "odeint_interface": "choose the gradient with gradient='aca', 'disc-opt' or 'opt-disc'",
    "options": "pass its entries as keywords (step_size=..., first_step=..., max_steps=...)",
    "adjoint_params": "params=[...] (for every gradient mode)",
    "step_control": "odeint_event steps the whole batch with one step size; for one event per "
    "row return one value per row from event_fn, shape (batch,)",
}
