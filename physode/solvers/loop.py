"""The stepping loop with one step size for the whole state: accepts, rejects, and lands on outputs.

Every gradient mode drives this one loop, so Disc-Opt, ACA and Opt-Disc share one discretisation.
Time and step size are Python floats: the controller's arithmetic never enters an autograd graph,
which is what makes the step sizes constants for Disc-Opt and lets ACA replay a step bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from physode._errors import InvalidArgumentError
from physode._repr import number_text, short_repr, stats_text, status_text
from physode.solvers._arrays import Array
from physode.solvers.control import PIController, attainable_rtol, error_ratio, initial_step

__all__ = ["LoopResult", "Stats", "Status", "Trace", "integrate"]

# An output within this fraction of a step past the end of the step lands on it exactly, so
# rounding never leaves a sliver of a step behind.
_LANDING_SLACK = 1e-9
# A step also lands within this many float64 epsilons of |t| of it: its times are rounded to
# that resolution (near t = 1e4 that is 2e-9 of a step of 1e-3).
_LANDING_ULPS = 4.0

_EPS64 = float(torch.finfo(torch.float64).eps)

# Fixed-step solves on a GPU read the finiteness of their states once per this many steps (and
# at the end), not after every step: there each read makes the host wait for the device. On the
# CPU a read waits for nothing, and they read it after every step, so func is never evaluated
# past the first non-finite state and stats.nfe counts every evaluation made.
_FINITE_CHECK_EVERY = 32


def _on_host(y0) -> bool:
    """Whether the solve runs on the host (NumPy, or tensors on the CPU), where reading a value of
    the state waits for nothing."""
    return not isinstance(y0, Tensor) or y0.device.type == "cpu"


class Status(IntEnum):
    """Why a solve stopped; ``SUCCESS`` when it reached the last output time."""

    SUCCESS = 0
    MAX_STEPS = 1
    STEP_SIZE_UNDERFLOW = 2
    NON_FINITE = 3


@dataclass
class Stats:
    """Work counters of one solve.

    ``n_steps`` accepted steps, ``n_rejected`` rejected trial steps, ``nfe`` evaluations of
    ``func`` in the forward pass, ``nfe_backward`` evaluations made by the backward pass once it
    has run (ACA: the replayed steps; Opt-Disc: the augmented adjoint system; Disc-Opt: none, as
    it backpropagates through the graph recorded in the forward pass). Per-sample solves count
    each row's evaluations: every counter is then an int64 CPU tensor with one entry per row.
    """

    n_steps: int = 0
    n_rejected: int = 0
    nfe: int = 0
    nfe_backward: int = 0

    def __repr__(self) -> str:
        return stats_text(self)  # per-row counters as their range: one line for any batch


@dataclass
class Trace:
    """The accepted steps of a solve: what ACA needs to rebuild them one at a time.

    ``t[n]``, ``h[n]`` and ``y[n]`` are the start time, size and input state of accepted step
    ``n``. ``outputs[k - 1] = (n, theta)`` says output ``k`` came from step ``n``: its end point
    (``theta is None``) or its dense output at ``t[n] + theta * h[n]``.

    With ``graph_final=True`` the loop takes every attempt at the step that lands on the last
    output time with autograd on, from a fresh leaf copy of its input, and keeps the accepted one
    as ``final = (n, y_leaf, step)``: its graph is the one ACA's backward pass needs first, so it
    does not have to rebuild that step. Only this one step's graph is ever kept.
    """

    t: list[float] = field(default_factory=list)
    h: list[float] = field(default_factory=list)
    y: list[Tensor] = field(default_factory=list)
    outputs: list[tuple[int, float | None]] = field(default_factory=list)
    graph_final: bool = False
    final: tuple[int, Tensor, object] | None = None

    def __repr__(self) -> str:
        return short_repr(self, "t", "h", "y", "outputs", "graph_final")  # lists cut short


class _Unchecked(NamedTuple):
    """An accepted fixed step whose state's finiteness is still on the device: the 0-dim flag,
    and what to go back to if it is the first non-finite one (its start time, the evaluations
    made up to and including it, the outputs before it)."""

    finite: Tensor
    t: float
    nfe: int
    n_outputs: int


def _first_non_finite(unchecked: list[_Unchecked]) -> int | None:
    """Index of the first step in ``unchecked`` whose state is not finite, or None; one read of
    the device for all of them."""
    if len(unchecked) == 1:  # on the host, after every step: no stack to build
        return None if bool(unchecked[0].finite) else 0
    finite = torch.stack([step.finite for step in unchecked]).tolist()
    return None if all(finite) else finite.index(False)


@dataclass
class LoopResult:
    """Outputs reached (``ys[0]`` is ``y0``), why the loop stopped, and where."""

    ys: list[Tensor]
    status: Status
    t: float
    h: float
    message: str

    def __repr__(self) -> str:
        return short_repr(self, ("status", status_text), ("t", number_text), "ys")


def time_maker(y: Tensor) -> Callable[[float], Tensor]:
    """A function turning a float time into the 0-dim tensor, of ``y``'s dtype and device, that
    ``func`` receives."""
    dtype, device = y.dtype, y.device

    def time(s: float) -> Tensor:
        return torch.scalar_tensor(s, dtype=dtype, device=device)

    return time


def _step_with_graph(stepper, func, t: float, y: Tensor, h: float, time, whole: bool):
    """One step with autograd on from a leaf copy of ``y``, whatever the caller's grad or inference
    mode; returns the leaf and the step. ``f(t, y)`` is evaluated again, as part of the graph.

    Unless ``whole``, the evaluations past the ``1 + stepper.nfe_per_replay`` that ``y1`` depends
    on (a step evaluates its stages in order; for an FSAL method, its last stage) are made without
    autograd: they then serve only the error estimate, and the step's graph is no larger than a
    rebuilt one.
    """
    graphed = math.inf if whole else 1 + stepper.nfe_per_replay
    calls = 0

    def f(s: Tensor, x: Tensor) -> Tensor:
        nonlocal calls
        calls += 1
        if calls <= graphed:
            return func(s, x)
        with torch.no_grad():
            return func(s, x)

    with torch.inference_mode(False), torch.enable_grad():
        y_leaf = y.detach().clone().requires_grad_(True)
        step = stepper.step(f, t, y_leaf, h, f(time(t), y_leaf), time)
    return y_leaf, step


def check_derivative(f0: object, y0: Array, name: str = "func(t, y)") -> None:
    """Refuse a first evaluation of ``func`` that is not ``dy/dt`` of ``y0``'s shape, dtype and
    device (tensors, or NumPy arrays for the per-sample NumPy loop); ``name`` is the function
    the message blames (the NumPy twin ``func.numpy(t, y)`` there)."""
    if not isinstance(f0, Tensor | np.ndarray) or f0.shape != y0.shape:
        got = tuple(f0.shape) if isinstance(f0, Tensor | np.ndarray) else type(f0).__name__
        raise InvalidArgumentError(
            f"{name} must return dy/dt with y's shape {tuple(y0.shape)}, got {got}"
        )
    if f0.dtype != y0.dtype:
        raise InvalidArgumentError(
            f"{name} must return dy/dt with y's dtype {y0.dtype}, got {f0.dtype}"
            + autocast_hint(f0)
        )
    if getattr(f0, "device", None) != getattr(y0, "device", None):
        raise InvalidArgumentError(
            f"{name} must return dy/dt on y's device {y0.device}, got {f0.device}"
        )


def autocast_hint(f: object) -> str:
    """Why ``func`` returned a lower precision than ``y``'s, where ``torch.autocast`` is on for
    its device: autocast runs ``func``'s matrix products in float16 or bfloat16. Empty otherwise.

    The solver cannot take such a field: its rounding (bfloat16 keeps 3 significant digits)
    is noise to an adaptive error estimate, and it is refused as half-precision states are.

    >>> autocast_hint(torch.ones(1, dtype=torch.bfloat16))
    ''
    >>> with torch.autocast("cpu"):
    ...     autocast_hint(torch.ones(1, dtype=torch.bfloat16))[:45]
    '. torch.autocast is on for cpu around the sol'
    """
    device = getattr(f, "device", None)
    if device is None or not torch.is_autocast_enabled(device.type):
        return ""
    return (
        f". torch.autocast is on for {device.type} around the solve and evaluates func in "
        f"{torch.get_autocast_dtype(device.type)}, which the solver cannot integrate (as it "
        "refuses a half-precision y0); turn it off for the solve: "
        f'with torch.autocast("{device.type}", enabled=False): ys = physode.odeint(...)'
    )


def _failure_message(
    status: Status,
    t: float,
    h: float,
    max_steps: int,
    adaptive: bool,
    dtype: torch.dtype,
    max_step: float = math.inf,
) -> str:
    """Why the solve stopped, where, and what to change; built once, after the loop stopped.

    ``dtype`` is the state's: only a state not in float64 already is advised to solve in float64.
    ``max_step`` is the solve's cap on adaptive steps: where the steps ran out at it, the cap is
    what to change, not the tolerances.

    >>> underflow = Status.STEP_SIZE_UNDERFLOW
    >>> _failure_message(underflow, 0.5, 1e-15, 100, True, torch.float64).split(", or ")[-1]
    'loosen rtol/atol.'
    >>> _failure_message(underflow, 0.5, 1e-15, 100, True, torch.float32).split(", or ")[-1]
    'solve in float64 rather than torch.float32, with looser rtol/atol.'
    """
    if math.isnan(h):
        where = f"at t={t:.17g}, before the first step"
    else:
        where = f"at t={t:.17g} with step size {h:.3g}"
    if status is Status.MAX_STEPS and not adaptive:
        return (
            f"max_steps={max_steps} steps reached {where}: the time span needs more steps of "
            f"step_size. Raise max_steps (e.g. max_steps={10 * max_steps}), raise step_size, or "
            "shorten the time span."
        )
    if status is Status.MAX_STEPS and abs(h) >= max_step:
        return (
            f"max_steps={max_steps} step attempts reached {where}: the steps were held at "
            f"max_step={max_step:g}, which caps them where the error control would take longer "
            f"ones. Raise max_step, raise max_steps (e.g. max_steps={10 * max_steps}), or shorten "
            "the time span."
        )
    if status is Status.MAX_STEPS:
        return (
            f"max_steps={max_steps} step attempts reached {where}. The problem may be stiff or the "
            f"tolerances too tight: raise max_steps (e.g. max_steps={10 * max_steps}), loosen "
            "rtol/atol, or shorten the time span."
        )
    if status is Status.STEP_SIZE_UNDERFLOW and t + h == t:
        fix = "raise step_size" if not adaptive else "pass a larger first_step, if you gave one"
        return (
            f"step size underflow {where}: the step is below the resolution of t there "
            f"(t + h == t in float64), so t cannot advance. {fix.capitalize()}, or shift the "
            "times closer to 0 (solve in t - t[0])."
        )
    if status is Status.STEP_SIZE_UNDERFLOW:
        wider = (
            "loosen rtol/atol"
            if dtype == torch.float64
            else f"solve in float64 rather than {dtype}, with looser rtol/atol"
        )
        return (
            f"step size underflow {where}: the error control rejected every step down to the "
            "limit of floating point resolution. The solution may blow up or be discontinuous "
            f"here; check func near this time, or {wider}."
        )
    hint = (
        "lower step_size" if not adaptive else "the solution blows up or func returns NaN/inf here"
    )
    return (
        f"non-finite state {where}: func produced NaN or inf ({hint}). Check func's inputs and "
        "parameters near this time."
    )


def integrate(
    stepper,
    func: Callable[[Tensor, Tensor], Tensor],
    y0: Tensor,
    times: list[float],
    *,
    rtol: float,
    atol: float,
    step_size: float | None,
    first_step: float | None,
    max_steps: int,
    stats: Stats,
    trace: Trace | None = None,
    norm_groups: Sequence[int] | None = None,
    f0: Tensor | None = None,
    stop: Callable[[float, Tensor, float, Tensor, object], bool] | None = None,
    max_step: float | None = None,
) -> LoopResult:
    """Integrate ``dy/dt = func(t, y)`` from ``times[0]`` through every later time in ``times``.

    Adaptive steppers control the error with a PI controller; fixed-step steppers take
    ``step_size`` and shorten only the step that lands on an output time. Methods with a dense
    output step freely and interpolate at the output times; the others land on every output time.
    Gradients flow through whatever ``func`` and the stepper compute, so the caller decides with
    ``torch.no_grad`` / ``enable_grad`` whether a graph is built. ``f0``, if given, is
    ``func(times[0], y0)`` already evaluated (and counted) by the caller. ``norm_groups`` splits
    the flattened state into groups whose error ratios are taken separately, the largest one
    deciding (see :func:`~physode.solvers.control.error_ratio`); by default one RMS covers all.
    ``stop``, if given, is called after each accepted step as ``stop(t, y, t_new, y1, step)``;
    when it returns True the loop ends there with ``Status.SUCCESS`` and ``LoopResult.t = t_new``
    (terminal events, :func:`physode.odeint_event`). ``max_step``, if given, caps the size of
    an adaptive stepper's first step and of every step its controller proposes (fixed-step
    steppers take ``step_size`` and ignore it).
    """
    time = time_maker(y0)
    direction = 1.0 if times[-1] > times[0] else -1.0
    adaptive = stepper.adaptive
    rtol = attainable_rtol(rtol, y0)  # no tighter than the dtype resolves (see there)
    dense = adaptive and stepper.has_dense
    t, y = times[0], y0
    ys = [y0]

    if f0 is None:
        f0 = func(time(t), y)
        stats.nfe += 1
    check_derivative(f0, y0)
    status = Status.SUCCESS
    # No cap is an infinite one: min and > leave every step, NaN included, as it is.
    h_max = math.inf if max_step is None else max_step
    if adaptive:
        controller = PIController(q=stepper.tableau.error_order + 1)
        if not bool(torch.isfinite(f0).all()):
            h = math.nan
        elif first_step is not None:
            h = direction * min(first_step, h_max)
        else:
            h_first = initial_step(
                func, t, y, f0, direction, stepper.order, rtol, atol, time, norm_groups
            )
            h = direction * min(h_first, h_max)
            stats.nfe += 1
        if math.isnan(h):
            # func(t0, y0) holds NaN or inf: no error estimate can be trusted from here, so stop
            # at once rather than shrink the step to underflow.
            status = Status.NON_FINITE
    else:
        h = direction * step_size
    # Fixed steps end at anchor + j * h, j steps after the last time landed on: each time is
    # rounded once, where a running sum t + h drifts by its rounding at every step (1000 steps of
    # 2 pi / 200 near t = 3000 drifted 7e-9 of a step past the slack, and each output interval
    # took a sliver of a step more, 67 over 100,000 steps).
    anchor, n_from_anchor = t, 0
    previous_ratio = 1.0
    # The loop holds t in float64 whatever y0's dtype, so a rejected step underflows where it is
    # below float64's resolution of t, relative to |t| as in Hairer's DOPRI5: an absolute floor
    # (or y0's dtype) would stop solves on short time scales, or float32 ones far from t = 0.
    underflow = 4.0 * _EPS64
    k, n_out, t_end = 1, len(times), times[-1]
    ratio = 0.0
    # Fixed steps whose states are not yet known to be finite (see _FINITE_CHECK_EVERY).
    unchecked: list[_Unchecked] = []
    first_bad: int | None = None
    check_every = 1 if _on_host(y0) else _FINITE_CHECK_EVERY

    while k < n_out and status is Status.SUCCESS:
        if stats.n_steps + stats.n_rejected >= max_steps:
            status = Status.MAX_STEPS
            break
        target = t_end if dense else times[k]
        remaining = target - t
        t_next = t + h if adaptive else anchor + (n_from_anchor + 1) * h
        # Within a few roundings of t of the output time, a step lands on it: else t + h could
        # round onto the output time without landing, and the next step would be one of nothing.
        rounding = _LANDING_ULPS * _EPS64 * max(abs(t), abs(t_next))
        landing = abs(h) * (1.0 + _LANDING_SLACK) + rounding >= abs(remaining)
        # The step actually taken is the difference of the times it joins, as rounded: summed,
        # the steps then span exactly the distance between the output times.
        h_step = remaining if landing else t_next - t
        if h_step == 0.0:
            # t + h rounds to t: a step of nothing would be accepted (its error is zero) and set
            # h to zero for good, until max_steps ran out.
            status = Status.STEP_SIZE_UNDERFLOW
            break
        # The step that would end the solve, when the caller wants its graph (see Trace).
        graph = trace is not None and trace.graph_final and landing and (dense or k == n_out - 1)
        if graph:
            # Outputs before the last one fall inside this step if it is accepted: they are
            # interpolated from all its stages, which then all need a graph.
            interpolates = dense and k < n_out - 1
            y_leaf, step = _step_with_graph(stepper, func, t, y, h_step, time, interpolates)
            stats.nfe += 1
        else:
            if f0 is None:
                f0 = func(time(t), y)
                stats.nfe += 1
            step = stepper.step(func, t, y, h_step, f0, time)
        stats.nfe += stepper.nfe_per_step
        if adaptive:
            ratio = error_ratio(
                step.error, step.error_low, y, step.y1, rtol, atol, norm_groups
            ).item()
            accepted = ratio <= 1.0
        else:
            accepted = True

        if not accepted:
            stats.n_rejected += 1
            h = h_step * controller.factor(ratio, previous_ratio, accepted=False)
            # `not >` also stops on a NaN step, which a NaN first evaluation produces.
            if not abs(h) > underflow * abs(t):
                status = Status.STEP_SIZE_UNDERFLOW if math.isfinite(ratio) else Status.NON_FINITE
                break
            continue

        t_new = target if landing else t + h_step
        anchor, n_from_anchor = (t_new, 0) if landing else (anchor, n_from_anchor + 1)
        y1 = step.y1.detach() if graph else step.y1
        if not adaptive:
            # (Adaptive steps are not checked: a NaN or inf stage makes the error ratio
            # non-finite, which rejects the step.)
            unchecked.append(_Unchecked(torch.isfinite(y1).all(), t, stats.nfe, len(ys)))
        n = stats.n_steps
        stats.n_steps += 1
        if trace is not None:
            trace.t.append(t)
            trace.h.append(h_step)
            trace.y.append(y)
        if dense:
            while k < n_out and direction * (times[k] - t_new) <= 0.0:
                if times[k] == t_new:
                    ys.append(y1)
                    theta = None
                else:
                    theta = (times[k] - t) / h_step
                    ys.append(stepper.interpolate(y, h_step, step.ks, theta))
                if trace is not None:
                    trace.outputs.append((n, theta))
                k += 1
        elif landing:
            ys.append(y1)
            if trace is not None:
                trace.outputs.append((n, None))
            k += 1
        if graph:
            # Keep only what the step's outputs depend on (its stages only where an output is
            # interpolated), so that the graph of the error estimate goes now.
            ks = step.ks if interpolates else []
            trace.final = (n, y_leaf, step._replace(f1=None, error=None, error_low=None, ks=ks))
        if stop is not None and stop(t, y, t_new, y1, step):
            t = t_new
            break
        t, y, f0 = t_new, y1, step.f1
        if adaptive:
            h_next = h_step * controller.factor(ratio, previous_ratio, accepted=True)
            # A step shortened to land on an output says nothing about the natural step size.
            h = direction * max(abs(h_next), abs(h)) if landing else h_next
            if abs(h) > h_max:
                h = direction * h_max
            previous_ratio = ratio
        elif len(unchecked) >= check_every:
            first_bad = _first_non_finite(unchecked)
            if first_bad is not None:
                break
            unchecked.clear()

    if first_bad is None and unchecked:
        first_bad = _first_non_finite(unchecked)
    if first_bad is not None:
        # Back to the first non-finite step, as if the loop had stopped there: its start time,
        # the evaluations up to it, the steps and outputs before it.
        first = unchecked[first_bad]
        n = stats.n_steps - len(unchecked) + first_bad
        status, t, stats.nfe, stats.n_steps = Status.NON_FINITE, first.t, first.nfe, n
        del ys[first.n_outputs :]
        if trace is not None:
            del trace.t[n:], trace.h[n:], trace.y[n:], trace.outputs[len(ys) - 1 :]
            if trace.final is not None and trace.final[0] >= n:
                trace.final = None

    message = (
        "success"
        if status is Status.SUCCESS
        else _failure_message(status, t, h, max_steps, adaptive, y0.dtype, h_max)
    )
    return LoopResult(ys=ys, status=status, t=t, h=h, message=message)
