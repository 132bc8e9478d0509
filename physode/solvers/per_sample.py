"""Per-sample step control: each row of a batched state keeps its own time, step size and status.

Rows that finish or fail leave the active set, so they stop costing compute, and a row's result
does not depend on which rows share its batch: every operation on the state is element-wise or a
reduction within one row, so a row is computed exactly as it would be alone, provided ``func``
treats rows independently (as generated system vector fields do).

Methods with a dense output step toward the last output time alone, and fill every output time
an accepted step passes over from that step's stages, so a row's steps do not depend on how
many outputs it has: ``bosh3``, ``dopri5`` and ``tsit5`` always (ACA's backward pass takes such
a step whole, to differentiate its interpolated outputs), ``dop853`` through Hairer's continuous
extension of order 7 (three more evaluations of ``func`` for a step with an output inside it)
where nothing differentiates, and only for a step that passes over ``_DENSE_FROM`` (3) output
times or more: that step heads for the last output time and interpolates them, while a step
that would pass over fewer lands on the next output time, as the extension's three evaluations
cost about what landing on one or two outputs does, and a step's end is more accurate than its
interpolant. ``heun``, and ``dop853`` under a gradient (Disc-Opt or ACA), step onto every output
time.

The loop is written once for torch tensors and NumPy arrays (:mod:`physode.solvers._arrays`). A
solve that nothing differentiates, on the CPU, whose ``func`` carries a NumPy twin of itself as
``func.numpy``, runs on NumPy: it makes the same decisions with a fraction of torch's overhead
per operation, which is what a batch of small states spends most of its time on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from physode._errors import InvalidArgumentError, PhysodeError
from physode.solvers._arrays import (
    Array,
    arange,
    asarray,
    finfo,
    flatnonzero,
    full,
    namespace,
    put_,
    repeat,
    searchsorted,
    take,
)
from physode.solvers.control import (
    PIController,
    attainable_rtol,
    combined_ratio,
    round_to_grid,
)
from physode.solvers.loop import _LANDING_SLACK, Stats, Status, _on_host, check_derivative
from physode.solvers.rk import _advance

# dop853 interpolates the outputs of a step that passes over this many or more, and steps onto
# each output otherwise (measured on scripts/bench_simulate.py's three-body case, 101 outputs).
_DENSE_FROM = 3

__all__ = ["PerSampleResult", "PerSampleTrace", "integrate_per_sample", "solve_per_sample"]


@dataclass
class PerSampleTrace:
    """Accepted row-steps of each iteration, for ACA: ``(rows, t, h, y, landed, k, pairs)``.

    ``rows`` are global row indices, ``t``/``h`` their start times and step sizes, ``y`` their input
    states; ``landed`` indexes (within ``rows``) the rows whose step ended on output ``k``.
    ``pairs`` is None, or with dense output ``(where, index, time, end)``: the outputs the steps
    passed over, each by its row's position in ``rows``, its index and time, and whether it
    is the step's end point.
    """

    steps: list[tuple] = field(default_factory=list)


@dataclass
class PerSampleResult:
    ys: Tensor
    status: Tensor
    t: Tensor
    h: Tensor


def _row_sum_of_squares(x: Array) -> Array:
    """Sum of squares within each row.

    A reduction over the contiguous last dimension adds each row's elements in an order set by the
    row's length alone, so a row's value does not depend on how many rows share the array (the
    per-sample tests check this bit for bit).
    """
    x = x.reshape(x.shape[0], -1)
    return (x * x).sum(1)


def _row_ratio(step, y: Array, rtol: float, atol: float) -> Array:
    xp = namespace(y)
    scale = xp.maximum(abs(y), abs(step.y1)) * rtol + atol
    n = math.prod(y.shape[1:])
    e5 = _row_sum_of_squares(step.error / scale)
    if step.error_low is None:
        return xp.sqrt(e5 / n)
    return combined_ratio(e5, _row_sum_of_squares(step.error_low / scale), n)


def _row_rms(x: Array, scale: Array) -> Array:
    """The RMS of ``x / scale`` within each row; finite wherever that row of ``x / scale`` is,
    also where the sum of its squares overflows. There (and only there: other rows keep the
    plain RMS, bit for bit) the row is scaled by the power of two that brings its largest
    element to about one, exactly, and the RMS scaled back: a float64 ratio of 1e200, an O(1)
    derivative over ``atol=1e-200`` where a component is 0, is past what
    :data:`~physode.solvers.control.SHRINK` can bring back."""
    xp, n = namespace(x), math.prod(x.shape[1:])
    x = x / scale
    value = xp.sqrt(_row_sum_of_squares(x) / n)
    # Both computed for every row and chosen by a mask, with no read of the device: three
    # calls per solve, each a few element-wise passes over one batch.
    overflow = xp.isinf(value)
    flat = abs(x.reshape(x.shape[0], -1))
    top = flat.amax(1) if isinstance(flat, Tensor) else flat.max(1)
    exponent = xp.where(xp.isfinite(top) & (top > 0), _exponent(top), 0)
    shrunk = _row_sum_of_squares(_ldexp(x, -exponent.reshape((-1,) + (1,) * (x.ndim - 1))))
    rescaled = _ldexp(xp.sqrt(shrunk / n), exponent)
    return xp.where(overflow, rescaled, value)


def _exponent(x: Array) -> Array:
    """The binary exponent ``e`` of each element, ``x = m * 2**e`` with ``0.5 <= |m| < 1``
    (int64)."""
    if isinstance(x, Tensor):
        return torch.frexp(x).exponent.to(torch.int64)
    return np.frexp(x)[1].astype(np.int64)


def _ldexp(x: Array, exponent: Array) -> Array:
    """``x * 2**exponent``, exact where the result is a normal number."""
    if isinstance(x, Tensor):
        # Two halves: 2**-1024 alone is subnormal in float64, and 2**1024 past its range.
        half = exponent // 2
        return torch.ldexp(torch.ldexp(x, half), exponent - half)
    return np.ldexp(x, exponent)


def _initial_steps(func, t, y, f0, direction, order, rtol, atol, view):
    """Hairer's starting step, row by row (one batched evaluation of ``func``)."""
    xp = namespace(y)
    scale = abs(y) * rtol + atol
    d0, d1 = _row_rms(y, scale), _row_rms(f0, scale)
    # As the shared loop's initial_step: a finite row of f0 whose scaled norm is still infinite
    # (f0 / scale overflowed: a component at 0 with atol below |dy/dt| by more than the dtype's
    # range, 5e-324) takes the shortest step the largest finite norm gives; the controller then
    # grows it. A row of f0 holding NaN or inf keeps its norm, and stops as non-finite.
    largest = float(finfo(y).max)
    finite = xp.isfinite(f0.reshape(f0.shape[0], -1)).all(1)
    d0 = xp.clip(d0, None, largest)
    d1 = xp.where(finite & xp.isinf(d1), largest, d1)
    h0 = xp.where((d0 < 1e-5) | (d1 < 1e-5), xp.full_like(d0, 1e-6), 0.01 * d0 / d1)
    y1 = _advance(y, (direction * h0).reshape(view), f0)
    f1 = func((t + direction * h0).reshape(view), y1)
    d2 = _row_rms(f1 - f0, scale) / h0
    dmax = xp.maximum(d1, d2)
    h1 = xp.where(
        dmax <= 1e-15, xp.clip(h0 * 1e-3, 1e-6, None), (0.01 / dmax) ** (1.0 / (order + 1))
    )
    h = xp.minimum(100 * h0, h1)
    # As the shared loop's: where d2 is not finite (an inf in f1, or its norm beyond the dtype's
    # range), the trial step h0; h1 is then 0, and h would be a step of nothing.
    h = xp.where(xp.isfinite(h) & xp.isfinite(d2), h, h0)
    # Rounded like the step factor, to keep each row's steps independent of its batch.
    return direction * round_to_grid(h)


def _check_distinct(times: list[float], times_a: Array) -> None:
    """Refuse output times that ``y0``'s dtype, in which each row keeps its time, cannot tell
    apart: two outputs would land at one time and the later one come out silently wrong."""
    cast = [float(value) for value in times_a.tolist()]
    for k in range(1, len(cast)):
        if cast[k] == cast[k - 1]:
            raise InvalidArgumentError(
                f"t[{k - 1}] = {times[k - 1]!r} and t[{k}] = {times[k]!r} are the same time in "
                f"{times_a.dtype}, in which step_control='per-sample' keeps each row's time; "
                "pass y0 in float64, or shift the times closer to 0 (solve in t - t[0])"
            )


def integrate_per_sample(
    stepper,
    func,
    y0: Array,
    times: list[float],
    *,
    rtol: float,
    atol: float,
    step_size: float | None,
    first_step: float | None,
    max_steps: int,
    stats: Stats,
    trace: PerSampleTrace | None = None,
    f0: Array | None = None,
    max_step: float | None = None,
) -> PerSampleResult:
    """Integrate every row of ``y0`` (its first dimension) with its own adaptive steps.

    Returns outputs ``(len(times), *y0.shape)`` (NaN where a row stopped early), and per row the
    status code, the time reached and the last step size. ``stats`` receives per-row arrays of
    accepted steps, rejected steps and evaluations of ``func``. ``step_size`` must be None: rows
    choose their own steps. ``f0`` is accepted for the shared loop's signature and not used: here
    ``func`` first sees one time per row. ``max_step``, if given, caps each row's first step and
    every step its controller proposes.

    ``y0`` is a torch tensor, or a NumPy array when ``func`` maps NumPy arrays to NumPy arrays
    (see :func:`solve_per_sample`); everything returned is then NumPy's too. ``trace`` (ACA)
    needs tensors.
    """
    nfe_before = stats.nfe  # evaluations the caller made already (finding parameters)
    if step_size is not None:
        raise InvalidArgumentError("step_control='per-sample' needs an adaptive method")
    xp = namespace(y0)
    rtol = attainable_rtol(rtol, y0)  # no tighter than the dtype resolves (see there)
    batch = y0.shape[0]
    view = (-1,) + (1,) * (y0.ndim - 1)
    direction = 1.0 if times[-1] > times[0] else -1.0
    n_out = len(times)
    times_a = asarray(times, y0)
    _check_distinct(times, times_a)
    tab = stepper.tableau
    controller = PIController(q=tab.error_order + 1)
    eps = 4.0 * finfo(y0).eps

    # Outputs are collected as (output index, row, state) pieces and written once at the end:
    # one scatter instead of one per iteration.
    out_k: list[Array] = []
    out_rows: list[Array] = []
    out_y: list[Array] = []
    status = full((batch,), int(Status.SUCCESS), y0, dtype=xp.int64)
    t_final = full((batch,), times[0], y0)
    h_final = full((batch,), 0.0, y0)
    n_steps = full((batch,), 0, y0, dtype=xp.int64)
    n_rejected = full((batch,), 0, y0, dtype=xp.int64)

    rows = arange(batch, y0)
    t = full((batch,), times[0], y0)
    y = y0
    k = full((batch,), 1, y0, dtype=xp.int64)
    f0 = func(t.reshape(view), y)
    stats.nfe += 1
    on_numpy = isinstance(y0, np.ndarray)
    if on_numpy and not (isinstance(f0, np.ndarray) and f0.dtype == y0.dtype):
        got = f"{type(f0).__name__} of dtype {getattr(f0, 'dtype', None)}"
        raise InvalidArgumentError(
            f"func.numpy(t, y) must return a NumPy array of y's dtype {y0.dtype}, got {got}"
        )
    check_derivative(f0, y0, "func.numpy(t, y)" if on_numpy else "func(t, y)")
    # Dense output: rows step toward the last output time alone and fill every output their
    # accepted steps pass over from the steps' stages. dop853 lands on every output where a
    # gradient is taken (a graph, or ACA's trace): its extension's stages past the step, which
    # no error estimate checks, may be non-finite where the step was not, and would bring a NaN
    # into the gradient of the other rows.
    graph = trace is not None or (isinstance(f0, Tensor) and f0.requires_grad)
    dense = tab.dense is not None and not (tab.dense_stages and graph)
    if dense:
        ascending = times_a * direction  # k, the outputs a row has, is those not past its time
        polynomials = _dense_polynomials(tab, y0)
    costly = dense and bool(tab.dense_stages)  # its dense output costs evaluations
    sparse = False  # an iteration where no row interpolates, known on the host
    if costly:  # past the last output, times no row reaches
        padded = xp.concatenate([times_a, full((_DENSE_FROM,), direction * math.inf, y0)])
    if first_step is not None:
        h = full((batch,), direction * first_step, y0)
    else:
        with torch.no_grad():
            h = _initial_steps(func, t, y, f0, direction, stepper.order, rtol, atol, view)
        stats.nfe += 1
    if max_step is not None:
        h = xp.clip(h, -max_step, max_step)
    previous = full((batch,), 1.0, y0)
    local_steps = full((batch,), 0, y0, dtype=xp.int64)
    redone = full((batch,), 0, y0, dtype=xp.int64)  # evaluations of steps taken again (Disc-Opt)
    extended = full((batch,), 0, y0, dtype=xp.int64)  # evaluations of dense_stages
    # On the host (NumPy, or tensors on the CPU) a flag is read as fast as it is computed, and the
    # loop reads the ones that let it skip work. On a GPU each read makes the host wait for the
    # device: the loop reads once per iteration, the numbers of rows accepted, landed and done,
    # with which the rows are then found without another read.
    on_host = _on_host(y0)

    def count(n: int) -> int | None:
        return None if on_host else n

    # Every row still active has made one attempt per iteration, so the attempts are counted once
    # for all, and a row's rejections are its attempts less its accepted steps.
    attempts = 0

    while rows.shape[0] > 0:
        attempts += 1
        grown = h * (1.0 + _LANDING_SLACK)
        if costly:
            # Dense output only for a row whose step would pass _DENSE_FROM outputs or more:
            # below that, stepping onto each costs about as much as the extension's
            # evaluations and interpolation, and the end of a step is more accurate.
            after = take(padded, k + (_DENSE_FROM - 1)) - t
            many = grown >= after if direction > 0 else grown <= after
            sparse = on_host and not bool(many.any())  # as without dense output
            target = (
                take(times_a, k) if sparse else xp.where(many, times_a[n_out - 1], take(times_a, k))
            )
        else:
            target = times_a[n_out - 1 :] if dense else take(times_a, k)
        remaining = target - t
        # h and remaining both point in `direction`, so |h| (1 + slack) >= |remaining| is:
        landing = grown >= remaining if direction > 0 else grown <= remaining
        h_step = xp.where(landing, remaining, (t + h) - t)  # as rounded: see the shared loop
        step = stepper.step(func, t.reshape(view), y, h_step.reshape(view), f0, None)
        stats.nfe += stepper.nfe_per_step
        # Detached: step sizes are constants of the graph (Disc-Opt differentiates the steps taken).
        ratio = _detach(_row_ratio(step, _detach(y), rtol, atol))
        accept = ratio <= 1.0
        landed = accept & landing

        t_in, y_in, k_in = t, y, k  # what the trace and the outputs take, before the update
        t = xp.where(accept, xp.where(landing, target, t + h_step), t)
        k = searchsorted(ascending, t * direction) if dense and not sparse else k + landed

        # PI control, row by row; non-finite errors shrink hardest, rejections never grow.
        factor = controller.factor_per_row(ratio, previous, accept)
        h_next = h_step * factor
        # A step cut short to land on an output time does not shrink the next one.
        longer = xp.maximum(h_next, h) if direction > 0 else xp.minimum(h_next, h)
        h = xp.where(landed, longer, h_next)
        if max_step is not None:
            h = xp.clip(h, -max_step, max_step)
        previous = xp.where(accept, ratio, previous)
        local_steps = local_steps + accept

        finished = k >= n_out
        # A rejected row underflows where its step is below the resolution of t, an accepted
        # one where its step became 0: a step below that resolution (t + h == t) is accepted, as
        # its error is zero, and the row would step nowhere until max_steps. `~(>)` also
        # catches a NaN step, which a NaN first evaluation produces (such rows are rejected).
        # The resolution (in y0's dtype, in which each row keeps its time) is relative to |t|,
        # with no absolute floor, which would stop rows on short time scales.
        if on_host and bool(accept.all()):
            underflow = h == 0  # the same, in one operation instead of six
        else:
            underflow = ~(abs(h) > xp.where(accept, 0.0, eps * abs(t)))
        done = finished | underflow
        if attempts >= max_steps:
            done = xp.ones_like(done)
        # Disc-Opt records every attempt in the batch's graph. A rejected row's attempt gets a
        # zero cotangent, exact where its stages are finite; where they are not, 0 * NaN would
        # spoil the gradient of every output that shares the graph. Those iterations take the
        # step again for the accepted rows alone, and only that enters the graph.
        recorded = isinstance(step.y1, Tensor) and step.y1.requires_grad
        broken = ~xp.isfinite(ratio) if recorded else None
        # A row that landed on its one output stores its new state; a row whose step passed
        # over outputs otherwise interpolates them all (its end point among them, if one).
        if dense and not sparse:
            passed = k - k_in  # outputs each row's step passed over
            direct = landed & (passed == 1)
            between = (passed > 1) | ((passed == 1) & ~landed)  # rows that interpolate
            passed = xp.where(between, passed, 0)
        else:
            direct, between = landed, None
        extend = between if costly else None  # rows that need the extension's stages
        if on_host:
            n_accept = (trace is not None or recorded) and bool(accept.any())
            n_landed, n_done = bool(direct.any()), bool(done.any())
            n_broken = recorded and bool(broken.any())
            n_between = int(between.sum()) if between is not None else 0
            n_passed = int(passed.sum()) if n_between else 0
        else:  # the iteration's one read of the device
            counted = [broken] if recorded else []
            counted += [between, passed] if dense else []
            n_accept, n_landed, n_done, *rest = _count_true(accept, direct, done, *counted)
            n_passed = rest.pop() if dense else 0
            n_between = rest.pop() if dense else 0
            n_broken = bool(rest and rest[0])

        ks = None  # the stages the accepted rows' outputs are interpolated from
        if n_broken:
            # A row whose f0 is not finite (func undefined at its state from the start, e.g. the
            # sqrt of a negative) would otherwise stay in the graph of the retaken rows' f0 too.
            f0 = _finite_rows_graph(func, t_in, y_in, f0, view, rows, redone, on_host)
            acc = flatnonzero(accept, count(n_accept))
            y = y_in
            if n_accept:
                retaken = stepper.step(
                    func, take(t_in, acc).reshape(view), take(y_in, acc),
                    take(h_step, acc).reshape(view), take(f0, acc), None,
                )  # fmt: skip
                redone[take(rows, acc)] += stepper.nfe_per_step
                y = y_in.index_copy(0, acc, retaken.y1)
                if tab.fsal:
                    f0 = f0.index_copy(0, acc, retaken.f1)
                if n_passed:  # the accepted rows' stages, without the others' graph
                    ks = [a.detach().index_copy(0, acc, b) for a, b in zip(step.ks, retaken.ks)]
        else:
            accept_b = accept.reshape(view)
            y = xp.where(accept_b, step.y1, y)
            if tab.fsal:
                f0 = xp.where(accept_b, step.f1, f0)
            ks = step.ks
        if not tab.fsal:
            # Rejected rows have the same (t, y) as before, so re-evaluating every row gives them
            # their old f0 bit for bit, and costs less than gathering the accepted ones.
            f0 = func(t.reshape(view), y)
            stats.nfe += 1
            if recorded and n_done:  # a finished row's f0 may be non-finite; it leaves below
                f0 = _finite_rows_graph(func, t, y, f0, view, rows, redone, on_host)

        pairs = None  # for ACA: the outputs interpolated, by position among the accepted rows
        if n_passed:
            states = (passed, k_in, t_in, y_in, h_step, t, y)
            if trace is not None:  # positions as in the trace
                sub = flatnonzero(accept, count(n_accept))
            else:  # the rows that interpolate
                sub = flatnonzero(between, count(n_between))
            states = tuple(take(x, sub) for x in states)
            ids = take(rows, sub)
            if extend is not None:
                _, _, t_s, y_s, h_s, _, _ = states
                ks = stepper.dense_stages(
                    func, t_s.reshape(view), y_s, h_s.reshape(view),
                    [take(x, sub) for x in ks], take(f0, sub),
                )  # fmt: skip
                put_(extended, ids, take(extended, ids) + len(tab.dense_stages))
            else:
                ks = [take(x, sub) for x in ks]
            if trace is None and n_passed == n_between:  # one output a row: the pairs are the rows
                where, index = None, states[1]
            else:
                where, index = _output_pairs(n_passed, *states[:2])
            time = take(times_a, index)
            end = time == _pick(states[5], where)  # the output is the step's end point
            values = _interpolate(polynomials, ks, where, time, end, *states[2:5], states[6], view)
            out_k.append(index)
            out_rows.append(_pick(ids, where))
            out_y.append(values)
            pairs = (where, index, time, end)
        if trace is not None and n_accept:
            acc = flatnonzero(accept, count(n_accept))
            land_local = flatnonzero(take(direct, acc), count(n_landed))
            trace.steps.append(
                (
                    *(take(x, acc) for x in (rows, t_in, h_step, y_in)),
                    land_local,
                    take(take(k_in, acc), land_local),
                    pairs,
                )
            )
        if n_landed:
            where = flatnonzero(direct, count(n_landed))
            out_k.append(take(k_in, where))
            out_rows.append(take(rows, where))
            out_y.append(take(y, where))
        if n_done:
            code = xp.where(
                finished,
                int(Status.SUCCESS),
                xp.where(
                    underflow,
                    xp.where(
                        xp.isfinite(ratio),
                        int(Status.STEP_SIZE_UNDERFLOW),
                        int(Status.NON_FINITE),
                    ),
                    int(Status.MAX_STEPS),
                ),
            )
            out = flatnonzero(done, count(n_done))
            gone = take(rows, out)
            for record, value in (
                (status, code),
                (t_final, t),
                (h_final, h),
                (n_steps, local_steps),
                (n_rejected, attempts - local_steps),
            ):
                put_(record, gone, take(value, out))
            keep = flatnonzero(~done, count(rows.shape[0] - n_done))
            rows, t, y, h, k, f0, previous, local_steps = (
                take(x, keep) for x in (rows, t, y, h, k, f0, previous, local_steps)
            )

    first = full((batch,), 0, y0, dtype=xp.int64)
    all_rows = arange(batch, y0)
    index = (xp.concatenate([first, *out_k]), xp.concatenate([all_rows, *out_rows]))
    values = xp.concatenate([y0, *out_y])
    if isinstance(y0, Tensor):  # out of place: the outputs may carry a graph (Disc-Opt)
        ys = y0.new_full((n_out, *y0.shape), float("nan")).index_put(index, values)
    else:
        ys = np.full((n_out, *y0.shape), np.nan, dtype=y0.dtype)
        ys[index] = values

    # The counters are bookkeeping: on the host, whatever the state's device (as the backward
    # pass's count, which adds to them).
    stats.n_steps, stats.n_rejected = _host(n_steps), _host(n_rejected)
    # Evaluations per row: the first f0 and starting step, then the stages of every attempt and,
    # for methods without FSAL, f at the row's new (or unchanged) state after every attempt.
    attempts = stats.n_steps + stats.n_rejected
    per_attempt = stepper.nfe_per_step + (0 if tab.fsal else 1)
    stats.nfe = (
        nfe_before
        + 1
        + (first_step is None)
        + attempts * per_attempt
        + _host(redone + extended)  # one read of the device, not two
    )
    return PerSampleResult(ys=ys, status=status, t=t_final, h=h_final)


def _finite_rows_graph(func, t, y, f0, view, rows, redone, on_host: bool):
    """``f0`` (``func`` at ``t``, ``y``) whose rows that are not finite carry no graph.

    Disc-Opt records ``func``'s evaluations of the whole batch. A row where ``func`` is not
    finite has a non-finite derivative there too (``sqrt`` of a negative), and autograd
    multiplies it by the zero cotangent that the row receives when others use the batch's
    ``f0``: 0 * NaN spoiled the gradients of every parameter and row. Where some row is not
    finite, the finite rows are evaluated again alone (counted in ``redone``) and the others
    keep their values without a graph. One read of the device; the loop calls this only in
    the rare iterations where a row is non-finite or leaves the batch.
    """
    finite = torch.isfinite(f0.reshape(f0.shape[0], -1)).all(1)
    n_finite = int(finite.sum())
    if n_finite == f0.shape[0]:
        return f0
    if n_finite == 0:
        return f0.detach()
    good = flatnonzero(finite, None if on_host else n_finite)
    fresh = func(take(t, good).reshape(view), take(y, good))
    redone[take(rows, good)] += 1
    return f0.detach().index_copy(0, good, fresh)


def _count_true(*masks: Tensor) -> list[int]:
    """The number of true entries of each one-dimensional mask (of one length), or the sum of
    each integer array among them, read at once."""
    return torch.stack([mask.to(torch.int64) for mask in masks]).sum(1).tolist()


def _dense_polynomials(tab, like: Array) -> tuple[list[int], Array]:
    """The stages that enter ``tab``'s dense output, and their polynomials' coefficients of
    ``theta, theta**2, ...`` (see :class:`~physode.solvers.tableau.ButcherTableau`) as an array
    of ``like``'s kind, one row per power and one column per stage."""
    used = [i for i, poly in enumerate(tab.dense) if any(poly)]
    degree = max(len(tab.dense[i]) for i in used)
    table = [[(list(tab.dense[i]) + [0.0] * degree)[j] for i in used] for j in range(degree)]
    return used, asarray(table, like)


def _output_pairs(total: int, passed: Array, k_in: Array) -> tuple[Array, Array]:
    """The outputs that steps passed over, as (row, output index) pairs: row ``r`` passed
    ``passed[r]`` outputs from ``k_in[r]`` on, ``total`` in all."""
    xp = namespace(passed)
    where = repeat(arange(passed.shape[0], passed), passed, total)
    start = xp.cumsum(passed, 0) - passed  # each row's first pair
    return where, take(k_in, where) + (arange(total, passed) - take(start, where))


def _interpolate(polynomials, ks, where, time, end, t_in, y_in, h, y1, view) -> Array:
    """The states at ``time`` of the steps of rows ``where``, from ``t_in`` by ``h``: ``y1``
    itself where ``end`` (the step's end point), else the method's interpolant from the stages
    ``ks`` at ``theta = (time - t_in) / h``. Every stage's weight is evaluated at once, in
    Horner's form: products and sums alone, element by element, so that a row's outputs do
    not depend on its batch."""
    used, table = polynomials
    h = _pick(h, where)
    theta = ((time - _pick(t_in, where)) / h)[:, None]
    weights = table[-1]
    for j in range(table.shape[0] - 2, -1, -1):
        weights = weights * theta + table[j]
    weights = weights * theta  # (pairs, stages used)
    combined = None
    for m, i in enumerate(used):
        term = weights[:, m].reshape(view) * _pick(ks[i], where)
        combined = term if combined is None else combined + term
    values = _pick(y_in, where) + h.reshape(view) * combined
    return namespace(values).where(end.reshape(view), _pick(y1, where), values)


def _pick(x: Array, where: Array | None) -> Array:
    """``x[where]`` along the first dimension; all of ``x`` where ``where`` is None."""
    return x if where is None else take(x, where)


def _host(x: Array) -> Array:
    return x.cpu() if isinstance(x, Tensor) else x


def _detach(x: Array) -> Array:
    return x.detach() if isinstance(x, Tensor) else x


class _PerSampleACA(torch.autograd.Function):
    @staticmethod
    def forward(ctx, problem, holder, y0, *params):
        trace = PerSampleTrace()
        with torch.no_grad():
            result = _run(problem, y0.detach(), trace)
        holder.append(result)
        ctx.problem, ctx.trace = problem, trace
        # Saved so that autograd refuses a backward pass after a parameter has been changed in
        # place (an optimizer step): the replay would silently use the new values.
        ctx.save_for_backward(*params)
        return result.ys

    @staticmethod
    def backward(ctx, grad_ys):
        from physode.gradients.base import add_gradients, refuse_second_derivatives, step_vjp

        refuse_second_derivatives("ACA")
        problem, trace = ctx.problem, ctx.trace
        func, stepper, params = problem.func, problem.stepper, ctx.saved_tensors
        view = (-1,) + (1,) * (grad_ys.ndim - 2)
        adjoint = torch.zeros_like(grad_ys[0])
        param_grads: list[Tensor | None] = [None] * len(params)  # see add_gradients
        # Evaluations per row, as the forward pass counts them.
        nfe = torch.zeros(grad_ys.shape[1], dtype=torch.int64, device=grad_ys.device)
        dense = stepper.tableau.dense
        polynomials = _dense_polynomials(stepper.tableau, grad_ys) if dense else None
        for rows, t, h, y_in, land_local, k, pairs in reversed(trace.steps):
            cotangent = adjoint[rows]
            if land_local.numel():
                cotangent = cotangent.index_add(0, land_local, grad_ys[k, rows[land_local]])
            if pairs is not None and bool(pairs[3].all()):  # outputs at the steps' ends alone
                where, index = pairs[:2]
                cotangent = cotangent.index_add(0, where, grad_ys[index, rows[where]])
                pairs = None
            with torch.enable_grad():
                y = y_in.detach().requires_grad_(True)
                tv, hv = t.view(view), h.view(view)
                # A step with interpolated outputs is taken whole: they need every stage.
                step = stepper.step(func, tv, y, hv, func(tv, y), None, replay=pairs is None)
                outputs, cotangents = [step.y1], [cotangent]
                if pairs is not None:
                    where, index, time, end = pairs
                    outputs.append(
                        _interpolate(polynomials, step.ks, where, time, end, t, y, h, step.y1, view)
                    )
                    cotangents.append(grad_ys[index, rows[where]])
                grads = step_vjp("ACA", outputs, [y, *params], cotangents)
            replayed = stepper.nfe_per_replay if pairs is None else stepper.nfe_per_step
            nfe[rows] += 1 + replayed
            adjoint[rows] = grads[0] if grads[0] is not None else torch.zeros_like(y)
            add_gradients(param_grads, grads[1:])
        problem.stats.nfe_backward = problem.stats.nfe_backward + nfe.cpu()  # one copy
        return (None, None, adjoint + grad_ys[0], *param_grads)


def _run(problem, y0: Tensor, trace: PerSampleTrace | None = None) -> PerSampleResult:
    from physode.gradients.base import needs_gradient

    on_numpy = _numpy_twin(problem.func)
    if (
        on_numpy is not None
        and trace is None
        and y0.device.type == "cpu"
        and y0.dtype in (torch.float32, torch.float64)
        and not needs_gradient(problem)
    ):
        return _run_on_numpy(problem, on_numpy, y0)
    return problem.run(y0, trace, loop=integrate_per_sample)


def _numpy_twin(func):
    """``func.numpy``, the NumPy twin of ``func``, or None where it has none (no such attribute,
    or None).

    Raises
    ------
    physode.InvalidArgumentError
        When ``func.numpy`` is something else that cannot be called (an array computed once, a
        flag): a twin set by mistake, which would leave the solve on torch without a word.
    """
    twin = getattr(func, "numpy", None)
    if twin is None or callable(twin):
        return twin
    shown = repr(twin)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    raise InvalidArgumentError(
        f"func.numpy is {shown} ({type(twin).__name__}), which cannot be called; a per-sample "
        "solve reads func.numpy as func's NumPy twin, a function numpy(t, y) of NumPy arrays "
        "returning dy/dt (docs/solvers.md, 'The NumPy loop'): make it one, or set it to None "
        "for none"
    )


def _run_on_numpy(problem, on_numpy, y0: Tensor) -> PerSampleResult:
    """The per-sample loop on NumPy arrays, with ``func``'s NumPy twin; results as tensors."""
    with np.errstate(all="ignore"):  # inf and NaN arise silently, as they do in torch
        result = problem.run(y0.detach().numpy(), loop=integrate_per_sample, func=on_numpy)
    stats = problem.stats
    stats.n_steps, stats.n_rejected, stats.nfe = (
        torch.from_numpy(x) for x in (stats.n_steps, stats.n_rejected, stats.nfe)
    )
    return PerSampleResult(
        *(torch.from_numpy(x) for x in (result.ys, result.status, result.t, result.h))
    )


# Added to an error raised in a per-sample solve (by func, as a rule): func that reads y as one
# state (y[1], y.sum()) fails once rows leave the batch, or a y0 of shape (n,) meant as one state.
_ROWS_NOTE = (
    "physode: with step_control='per-sample', func gets the rows of y0 (its first dimension) "
    "still running, a subset that shrinks as rows finish, and a time per row of shape (rows, 1, "
    "...); it must treat each row on its own, reading components as y[..., k], not y[k]. y0 has "
    "shape {shape}: a y0 of shape (n,) is n rows of one component each; for one state of n "
    "components pass y0[None] (shape (1, n)), or use step_control='shared'"
)


def solve_per_sample(problem, mode, t_tensor: Tensor):
    """``physode.solve`` with ``step_control="per-sample"``; failures are reported per row."""
    from physode.integrate import Solution

    if not problem.stepper.adaptive:
        raise InvalidArgumentError(
            f"step_control='per-sample' needs an adaptive method, got method={problem.method!r}; "
            "fixed-step methods take the same steps for every row, so use step_control='shared'"
        )
    if problem.y0.ndim < 1:
        raise InvalidArgumentError("step_control='per-sample' needs y0 with a batch dimension")
    from physode.gradients.base import needs_gradient

    if mode.name not in ("disc-opt", "aca"):
        raise InvalidArgumentError(
            f"step_control='per-sample' supports gradient='disc-opt' and 'aca', got {mode.name!r}; "
            "use step_control='shared' with Opt-Disc"
        )
    try:
        if mode.name == "disc-opt" or not needs_gradient(problem):
            result = _run(problem, problem.y0)
            ys = result.ys
        else:
            holder: list[PerSampleResult] = []
            ys = _PerSampleACA.apply(problem, holder, problem.y0, *problem.params)
            result = holder[0]
    except PhysodeError:
        raise
    except Exception as exc:  # most likely raised by func: say what it is handed
        exc.add_note(_ROWS_NOTE.format(shape=tuple(problem.y0.shape)))
        raise
    stats = problem.stats
    if not isinstance(stats.nfe_backward, Tensor):  # per row, as every counter (ACA adds to it)
        stats.nfe_backward = torch.zeros(len(result.status), dtype=torch.int64)
    failed = int((result.status != Status.SUCCESS).sum())
    message = (
        "success"
        if failed == 0
        else (
            f"{failed} of {len(result.status)} rows stopped early; see Solution.status per row "
            "(codes: physode.Status) and Solution.t_final for the time each reached"
        )
    )
    return Solution(
        t=t_tensor,
        ys=ys,
        status=result.status,
        stats=problem.stats,
        message=message,
        t_final=result.t,
        h_final=result.h,
    )
