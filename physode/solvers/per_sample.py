"""Per-sample step control: each row of a batched state keeps its own time, step size and status.

Rows that finish or fail leave the active set, so they stop costing compute, and a row's result
does not depend on which rows share its batch: every operation on the state is element-wise or a
reduction within one row, so a row is computed exactly as it would be alone, provided ``func``
treats rows independently (as generated system vector fields do). Each row steps onto every
output time (no dense output).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from physode._errors import InvalidArgumentError
from physode.solvers.control import PIController, round_to_grid
from physode.solvers.loop import _LANDING_SLACK, Stats, Status

__all__ = ["PerSampleResult", "PerSampleTrace", "integrate_per_sample", "solve_per_sample"]



@dataclass
class PerSampleTrace:
    """Accepted row-steps of each iteration, for ACA: ``(rows, t, h, y, landed, k)`` tuples.

    ``rows`` are global row indices, ``t``/``h`` their start times and step sizes, ``y`` their input
    states; ``landed`` indexes (within ``rows``) the rows whose step ended on output ``k``.
    """

    steps: list[tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]] = field(default_factory=list)


@dataclass
class PerSampleResult:
    ys: Tensor
    status: Tensor
    t: Tensor
    h: Tensor


def _row_sum_of_squares(x: Tensor) -> Tensor:
    """Sum of squares within each row.

    A reduction over the contiguous last dimension adds each row's elements in an order set by the
    row's length alone, so a row's value does not depend on how many rows share the tensor (the
    per-sample tests check this bit for bit).
    """
    return x.reshape(x.shape[0], -1).square().sum(1)


def _row_ratio(step, y: Tensor, rtol: float, atol: float) -> Tensor:
    scale = torch.maximum(y.abs(), step.y1.abs()).mul_(rtol).add_(atol)
    n = y[0].numel()
    e5 = _row_sum_of_squares(step.error / scale)
    if step.error_low is None:
        return torch.sqrt(e5 / n)
    e3 = _row_sum_of_squares(step.error_low / scale)
    denominator = (e5 + 0.01 * e3).clamp_min(torch.finfo(y.dtype).tiny)
    return e5 / torch.sqrt(denominator * n)


def _row_rms(x: Tensor, scale: Tensor) -> Tensor:
    return torch.sqrt(_row_sum_of_squares(x / scale) / x[0].numel())


def _initial_steps(func, t, y, f0, direction, order, rtol, atol, view):
    """Hairer's starting step, row by row (one batched evaluation of ``func``)."""
    scale = y.abs().mul(rtol).add_(atol)
    d0, d1 = _row_rms(y, scale), _row_rms(f0, scale)
    h0 = torch.where((d0 < 1e-5) | (d1 < 1e-5), torch.full_like(d0, 1e-6), 0.01 * d0 / d1)
    y1 = torch.addcmul(y, (direction * h0).view(view), f0)
    f1 = func((t + direction * h0).view(view), y1)
    d2 = _row_rms(f1 - f0, scale) / h0
    dmax = torch.maximum(d1, d2)
    h1 = torch.where(
        dmax <= 1e-15,
        torch.clamp(h0 * 1e-3, min=1e-6),
        (0.01 / dmax) ** (1.0 / (order + 1)),
    )
    h = torch.minimum(100 * h0, h1)
    h = torch.where(torch.isfinite(h), h, h0)
    # Rounded like the step factor, to keep each row's steps independent of its batch.
    return direction * round_to_grid(h)


def integrate_per_sample(
    stepper,
    func,
    y0: Tensor,
    times: list[float],
    *,
    rtol: float,
    atol: float,
    step_size: float | None,
    first_step: float | None,
    max_steps: int,
    stats: Stats,
    trace: PerSampleTrace | None = None,
    f0: Tensor | None = None,
) -> PerSampleResult:
    """Integrate every row of ``y0`` (its first dimension) with its own adaptive steps.

    Returns outputs ``(len(times), *y0.shape)`` (NaN where a row stopped early), and per row the
    status code, the time reached and the last step size. ``stats`` receives per-row tensors of
    accepted steps, rejected steps and evaluations of ``func``. ``step_size`` must be None: rows
    choose their own steps. ``f0`` is accepted for the shared loop's signature and not used: here
    ``func`` first sees one time per row.
    """
    if step_size is not None:
        raise InvalidArgumentError("step_control='per-sample' needs an adaptive method")
    batch = y0.shape[0]
    dtype, device = y0.dtype, y0.device
    view = (-1,) + (1,) * (y0.ndim - 1)
    direction = 1.0 if times[-1] > times[0] else -1.0
    times_t = torch.tensor(times, dtype=dtype, device=device)
    n_out = len(times)
    tab = stepper.tableau
    controller = PIController(q=tab.error_order + 1)
    eps = 4.0 * torch.finfo(dtype).eps

    # Outputs are collected as (output index, row, state) pieces and written once at the end:
    # one scatter instead of one per iteration.
    out_k: list[Tensor] = []
    out_rows: list[Tensor] = []
    out_y: list[Tensor] = []
    status = torch.full((batch,), int(Status.SUCCESS), dtype=torch.int64, device=device)
    t_final = torch.full((batch,), times[0], dtype=dtype, device=device)
    h_final = torch.zeros(batch, dtype=dtype, device=device)
    n_steps = torch.zeros(batch, dtype=torch.int64, device=device)
    n_rejected = torch.zeros(batch, dtype=torch.int64, device=device)

    rows = torch.arange(batch, device=device)
    t = torch.full((batch,), times[0], dtype=dtype, device=device)
    y = y0
    k = torch.ones(batch, dtype=torch.int64, device=device)
    f0 = func(t.view(view), y)
    stats.nfe += 1
    if f0.shape != y0.shape:
        raise InvalidArgumentError(
            f"func(t, y) must return dy/dt with y's shape {tuple(y0.shape)}, got {tuple(f0.shape)}"
        )
    if first_step is not None:
        h = torch.full((batch,), direction * first_step, dtype=dtype, device=device)
    else:
        with torch.no_grad():
            h = _initial_steps(func, t, y, f0, direction, stepper.order, rtol, atol, view)
        stats.nfe += 1
    previous = torch.ones(batch, dtype=dtype, device=device)
    local_steps = torch.zeros(batch, dtype=torch.int64, device=device)
    # Every row still active has made one attempt per iteration, so the attempts are counted once
    # for all, and a row's rejections are its attempts less its accepted steps.
    attempts = 0

    while rows.numel() > 0:
        attempts += 1
        target = times_t[k]
        remaining = target - t
        # h and remaining both point in `direction`, so |h| (1 + slack) >= |remaining| is:
        grown = h * (1.0 + _LANDING_SLACK)
        landing = grown >= remaining if direction > 0 else grown <= remaining
        h_step = torch.where(landing, remaining, h)
        step = stepper.step(func, t.view(view), y, h_step.view(view), f0, None)
        stats.nfe += stepper.nfe_per_step
        # Detached: step sizes are constants of the graph (Disc-Opt differentiates the steps taken).
        ratio = _row_ratio(step, y.detach(), rtol, atol).detach()
        accept = ratio <= 1.0
        landed = accept & landing

        if trace is not None and bool(accept.any()):
            acc = accept.nonzero().squeeze(1)
            land_local = landed.index_select(0, acc).nonzero().squeeze(1)
            trace.steps.append(
                (
                    *(x.index_select(0, acc) for x in (rows, t, h_step, y)),
                    land_local,
                    k.index_select(0, acc).index_select(0, land_local),
                )
            )
        accept_b = accept.view(view)
        y = torch.where(accept_b, step.y1, y)
        t = torch.where(accept, torch.where(landing, target, t + h_step), t)
        if bool(landed.any()):
            where = landed.nonzero().squeeze(1)
            out_k.append(k.index_select(0, where))
            out_rows.append(rows.index_select(0, where))
            out_y.append(y.index_select(0, where))
            k = k + landed.long()

        # PI control, row by row; non-finite errors shrink hardest, rejections never grow.
        factor = controller.factor_per_row(ratio, previous, accept)
        h_next = h_step * factor
        # A step cut short to land on an output time does not shrink the next one.
        longer = torch.maximum(h_next, h) if direction > 0 else torch.minimum(h_next, h)
        h = torch.where(landed, longer, h_next)
        previous = torch.where(accept, ratio, previous)
        local_steps = local_steps + accept

        if tab.fsal:
            f0 = torch.where(accept_b, step.f1, f0)
        else:
            # Rejected rows have the same (t, y) as before, so re-evaluating every row gives them
            # their old f0 bit for bit, and costs less than gathering the accepted ones.
            f0 = func(t.view(view), y)
            stats.nfe += 1

        finished = k >= n_out
        # `~(>)` also catches a NaN step, which a NaN first evaluation produces.
        if bool(accept.all()):
            underflow = torch.zeros_like(accept)
        else:
            underflow = (~accept) & ~(h.abs() > eps * torch.clamp(t.abs(), min=1.0))
        done = finished | underflow
        if attempts >= max_steps:
            done = torch.ones_like(done)
        if bool(done.any()):
            code = torch.where(
                finished,
                int(Status.SUCCESS),
                torch.where(
                    underflow,
                    torch.where(
                        torch.isfinite(ratio),
                        int(Status.STEP_SIZE_UNDERFLOW),
                        int(Status.NON_FINITE),
                    ),
                    int(Status.MAX_STEPS),
                ),
            )
            out = done.nonzero().squeeze(1)
            gone = rows.index_select(0, out)
            for record, value in (
                (status, code),
                (t_final, t),
                (h_final, h),
                (n_steps, local_steps),
                (n_rejected, attempts - local_steps),
            ):
                record.index_copy_(0, gone, value.index_select(0, out))
            keep = (~done).nonzero().squeeze(1)
            rows, t, y, h, k, f0, previous, local_steps = (
                x.index_select(0, keep) for x in (rows, t, y, h, k, f0, previous, local_steps)
            )

    ys = y0.new_full((n_out, *y0.shape), float("nan"))
    first = torch.zeros(batch, dtype=torch.int64, device=device)
    all_rows = torch.arange(batch, device=device)
    ys = ys.index_put(
        (torch.cat([first, *out_k]), torch.cat([all_rows, *out_rows])),
        torch.cat([y0, *out_y]),
    )

    stats.n_steps = n_steps
    stats.n_rejected = n_rejected
    # Evaluations per row: the first f0 and starting step, then the stages of every attempt and,
    # for methods without FSAL, f at the row's new (or unchanged) state after every attempt.
    attempts = n_steps + n_rejected
    per_attempt = stepper.nfe_per_step + (0 if tab.fsal else 1)
    stats.nfe = 1 + (first_step is None) + attempts * per_attempt
    return PerSampleResult(ys=ys, status=status, t=t_final, h=h_final)


class _PerSampleACA(torch.autograd.Function):
    @staticmethod
    def forward(ctx, problem, holder, y0, *params):
        trace = PerSampleTrace()
        with torch.no_grad():
            result = _run(problem, y0.detach(), trace)
        holder.append(result)
        ctx.problem, ctx.trace = problem, trace
        return result.ys

    @staticmethod
    def backward(ctx, grad_ys):
        problem, trace = ctx.problem, ctx.trace
        func, stepper, params = problem.func, problem.stepper, problem.params
        view = (-1,) + (1,) * (grad_ys.ndim - 2)
        adjoint = torch.zeros_like(grad_ys[0])
        param_grads = [torch.zeros_like(p) for p in params]
        nfe = 0
        for rows, t, h, y_in, land_local, k in reversed(trace.steps):
            cotangent = adjoint[rows]
            if land_local.numel():
                cotangent = cotangent.index_add(0, land_local, grad_ys[k, rows[land_local]])
            with torch.enable_grad():
                y = y_in.detach().requires_grad_(True)
                tv, hv = t.view(view), h.view(view)
                step = stepper.step(func, tv, y, hv, func(tv, y), None, replay=True)
                grads = torch.autograd.grad(step.y1, [y, *params], cotangent, allow_unused=True)
            nfe += 1 + stepper.nfe_per_replay
            adjoint[rows] = grads[0] if grads[0] is not None else torch.zeros_like(y)
            for acc, g in zip(param_grads, grads[1:]):
                if g is not None:
                    acc.add_(g)
        problem.stats.nfe_backward += nfe
        return (None, None, adjoint + grad_ys[0], *param_grads)


def _run(problem, y0: Tensor, trace: PerSampleTrace | None = None) -> PerSampleResult:
    return problem.run(y0, trace, loop=integrate_per_sample)


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

    if mode.name == "disc-opt" or not needs_gradient(problem):
        result = _run(problem, problem.y0)
        ys = result.ys
    elif mode.name == "aca":
        holder: list[PerSampleResult] = []
        ys = _PerSampleACA.apply(problem, holder, problem.y0, *problem.params)
        result = holder[0]
    else:
        raise InvalidArgumentError(
            f"step_control='per-sample' supports gradient='disc-opt' and 'aca', got {mode.name!r}; "
            "use step_control='shared' with Opt-Disc"
        )
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
