"""Opt-Disc: the continuous adjoint, solved backward in time as its own ODE."""

from __future__ import annotations

import itertools

import torch
from torch import Tensor

from physode._errors import (
    InvalidArgumentError,
    SolverError,
    UnsupportedError,
    one_tolerance,
    positive_finite,
)
from physode._repr import never_raising
from physode.gradients.base import (
    GradientMode,
    Problem,
    check_switch,
    needs_gradient,
    refuse_second_derivatives,
    stack_outputs,
    step_vjp,
)
from physode.solvers import (
    ADAPTIVE_METHODS,
    METHODS,
    SYMPLECTIC_METHODS,
    integrate,
    make_stepper,
    unknown_method,
)
from physode.solvers._autograd import private_query
from physode.solvers.control import warn_unattainable
from physode.solvers.loop import LoopResult, Stats, Status, Trace

__all__ = ["OptDisc"]


class OptDisc(GradientMode):
    """Optimise-then-discretise: the continuous adjoint method (approximate gradients).

    Backward solves the augmented system ``(y, a, g)`` from the last output time to the first,
    with ``dy/dt = f``, ``da/dt = -a^T df/dy`` and ``dg/dt = -a^T df/dtheta``, adding the loss
    gradient to ``a`` at each output time. Memory is O(1) in the number of steps, but the gradient
    is only as accurate as the backward solve, and re-solving the state backward can be unstable
    (Onken & Ruthotto).

    Parameters
    ----------
    method : str, optional
        Method of the backward solve; default: the forward method.
    rtol, atol : float, optional
        Tolerances of an adaptive backward solve; default: the forward ones. Refused with a
        fixed-step backward method, which would ignore them.
    step_size : float, optional
        Step of a fixed-step backward method; default: the forward one. Refused with an
        adaptive backward method, which chooses its own steps.
    restart : bool or "steps"
        Where the backward solve takes the state from the forward pass instead of carrying its
        own re-solve of it through (the stable variant). ``False`` (the classic adjoint, as in
        the papers' comparisons): never, memory O(1). ``True``: at every output time, from the
        outputs the solve returns anyway. ``"steps"``: also at the start of every accepted
        forward step, whose states the forward pass then keeps (memory grows with the steps,
        as ACA's), so the re-solved state never drifts further than one step: for a flow
        that contracts forward (an attracting limit cycle, a damped system), whose re-solve
        backward diverges between the outputs.
    seminorm : bool
        Leave the parameter-gradient components out of the backward error control, which usually
        saves steps (Kidger et al., 2021).

    An adaptive backward solve takes the forward solve's ``max_step`` (``physode.solve(...,
    max_step=...)``) as its own: a feature too narrow for the forward steps to see is as
    narrow backward. A fixed-step backward method takes its ``step_size``.

    The backward error control takes the largest of the RMS error ratios of the state, of the
    adjoint and of the gradient of each parameter tensor, so that a large network (or parameters
    that the loss does not depend on) does not dilute the control of a small state.

    Examples
    --------
    >>> import torch, physode
    >>> y0 = torch.tensor([1.0], dtype=torch.float64, requires_grad=True)
    >>> mode = physode.OptDisc(rtol=1e-10, atol=1e-12)
    >>> ys = physode.odeint(lambda t, y: -y, y0, torch.tensor([0.0, 1.0]), gradient=mode)
    >>> ys[-1].sum().backward()
    >>> round(y0.grad.item(), 6)
    0.367879
    """

    name = "opt-disc"
    exact = False

    def __init__(
        self,
        method: str | None = None,
        rtol: float | None = None,
        atol: float | None = None,
        step_size: float | None = None,
        restart: bool | str = False,
        seminorm: bool = False,
    ):
        backward_methods = [m for m in METHODS if m not in SYMPLECTIC_METHODS]
        if method is not None and (not isinstance(method, str) or method not in backward_methods):
            why = (
                " (the augmented adjoint system is not separable, so symplectic methods cannot "
                "solve it)"
                if isinstance(method, str) and method in SYMPLECTIC_METHODS
                else ""
            )
            raise InvalidArgumentError(
                f"OptDisc: unknown backward method {method!r}{why}; valid methods: "
                f"{', '.join(backward_methods)}"
                if why
                else "OptDisc: " + unknown_method(method, backward_methods, "backward method")
            )
        rtol, atol = (
            None if value is None else one_tolerance(f"OptDisc: {label}", value)
            for label, value in (("rtol", rtol), ("atol", atol))
        )
        step_size = None if step_size is None else positive_finite("OptDisc: step_size", step_size)
        self.method, self.rtol, self.atol, self.step_size = method, rtol, atol, step_size
        if not (isinstance(restart, str) and restart == "steps"):
            restart = check_switch(
                "OptDisc", "restart", restart, also="or 'steps' (restart at every forward step)"
            )
        self.restart = restart
        self.seminorm = check_switch("OptDisc", "seminorm", seminorm)
        if method is not None:
            self._refuse_unused_settings(method)

    @never_raising
    def __repr__(self) -> str:
        return (
            f"OptDisc(method={self.method!r}, rtol={self.rtol!r}, atol={self.atol!r}, "
            f"step_size={self.step_size!r}, restart={self.restart!r}, seminorm={self.seminorm})"
        )

    def _refuse_unused_settings(self, method: str, forward: str | None = None) -> None:
        """Refuse tolerances for a fixed-step backward method, or a step for an adaptive one:
        they would be ignored, and the gradient silently less accurate than asked for.
        ``forward`` is the forward method, which the default backward method follows."""
        if self.method is not None:
            which = ""
        elif method == forward:
            which = " (the default: the forward method)"
        else:
            which = f" (the default after the symplectic forward method {forward!r})"
        if method in ADAPTIVE_METHODS and self.step_size is not None:
            raise InvalidArgumentError(
                f"OptDisc: step_size is for a fixed-step backward method, but the backward "
                f"method {method!r}{which} chooses its own steps; set its tolerances instead: "
                f"physode.OptDisc(rtol=..., atol=...)"
            )
        if method not in ADAPTIVE_METHODS and (self.rtol, self.atol) != (None, None):
            raise InvalidArgumentError(
                f"OptDisc: rtol and atol control an adaptive backward solve, but the backward "
                f"method {method!r}{which} is fixed-step; name an adaptive one, e.g. "
                f"physode.OptDisc(method='dopri5', rtol=..., atol=...), or set the step: "
                f"physode.OptDisc(method={method!r}, step_size=...)"
            )

    def backward_method(self, problem: Problem) -> str:
        """The method of the backward solve: this mode's own, else the forward one. The augmented
        adjoint system does not separate, so a symplectic forward method is followed backward by
        rk4 with the same step."""
        method = self.method or (
            "rk4" if problem.method in SYMPLECTIC_METHODS else problem.method
        )
        self._refuse_unused_settings(method, problem.method)
        if method not in ADAPTIVE_METHODS and (self.step_size or problem.step_size) is None:
            raise InvalidArgumentError(
                f"OptDisc: backward method {method!r} is fixed-step and needs a step size: "
                f"physode.OptDisc(method={method!r}, step_size=...)"
            )
        return method

    def solve(self, problem: Problem) -> tuple[Tensor, LoopResult]:
        if not needs_gradient(problem):
            result = problem.run(problem.y0)
            return stack_outputs(result, len(problem.times), problem.y0), result
        # Refuse a bad combination before the forward solve.
        # Its own rtol only: the forward solve has warned about the forward one.
        if self.backward_method(problem) in ADAPTIVE_METHODS and self.rtol is not None:
            warn_unattainable(
                self.rtol, problem.y0, "the backward solve", stacklevel=4, prefix="OptDisc: "
            )
        holder: list[LoopResult] = []
        ys = _OptDiscFunction.apply(self, problem, holder, problem.y0, *problem.params)
        return ys, holder[0]


class _OptDiscFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, mode, problem, holder, y0, *params):
        trace = Trace() if mode.restart == "steps" else None
        with torch.no_grad():
            result = problem.run(y0.detach(), trace)
        holder.append(result)
        ctx.mode, ctx.problem = mode, problem
        # The loop's own outputs, not the stacked copy returned: the caller may change that in
        # place (ys -= mean). After a failed solve (throw=False) only those reached carry a
        # gradient. The parameters are saved so that autograd refuses a backward pass after one
        # has been changed in place (an optimizer step), which the backward solve would use.
        ctx.knots = _knots(problem.times, result.ys, trace)
        ctx.save_for_backward(*params)
        return stack_outputs(result, len(problem.times), y0)

    @staticmethod
    def backward(ctx, grad_ys):
        refuse_second_derivatives("Opt-Disc")
        _refuse_batched(grad_ys)
        params = ctx.saved_tensors
        knots, mode, problem = ctx.knots, ctx.mode, ctx.problem
        method = mode.backward_method(problem)
        _, y_last, last = knots[-1]
        shape, n = y_last.shape, y_last.numel()
        sizes = [p.numel() for p in params]
        augmented = _Augmented(problem.func, shape, n, params)
        stepper = make_stepper(method, augmented)
        stats = Stats()
        backward_base = problem.stats.nfe_backward  # a second backward pass adds to the first
        z = torch.cat(
            [y_last.reshape(-1), grad_ys[last].reshape(-1), y_last.new_zeros(sum(sizes))]
        )
        # The error norm is the largest of the RMS norms of the state, the adjoint and the
        # gradient of each parameter tensor (the seminorm leaves the gradients out), so that
        # neither a large network nor parameters the loss ignores loosen the control of the rest.
        groups = [n, 2 * n]
        if not mode.seminorm:
            groups += [2 * n + end for end in itertools.accumulate(sizes)]
        # Each interval after the first starts from the step size the previous one would have
        # taken next, instead of estimating one again (an evaluation and a host read each).
        first_step = None
        for i in range(len(knots) - 1, 0, -1):
            (t_start, y_stored, _), (t_end, _, k) = knots[i], knots[i - 1]
            if mode.restart:
                z = torch.cat([y_stored.reshape(-1), z[n:]])
            result = integrate(
                stepper,
                augmented,
                z,
                [t_start, t_end],
                rtol=mode.rtol or problem.rtol,
                atol=mode.atol or problem.atol,
                step_size=mode.step_size or problem.step_size,
                first_step=first_step,
                max_steps=problem.max_steps,
                stats=stats,
                norm_groups=groups,
                max_step=problem.max_step,
            )
            problem.stats.nfe_backward = backward_base + stats.nfe
            if result.status is not Status.SUCCESS:
                raise SolverError(
                    "Opt-Disc backward solve failed: "
                    + result.message
                    + " The backward solve uses OptDisc's own settings, e.g. "
                    "physode.OptDisc(rtol=..., atol=...), and the solve's max_steps for all its "
                    "intervals together"
                    + _restart_hint(mode, len(problem.times)),
                    status=result.status,
                    t=result.t,
                    step_size=result.h,
                )
            if method in ADAPTIVE_METHODS:
                first_step = abs(result.h)
            z = result.ys[-1]
            if k is not None:
                z = torch.cat([z[:n], z[n : 2 * n] + grad_ys[k].reshape(-1), z[2 * n :]])
        adjoint = z[n : 2 * n].reshape(shape)
        param_grads, offset = [], 2 * n
        for p, size, used in zip(params, sizes, augmented.used):
            grad = z[offset : offset + size].reshape(p.shape).to(p.device, p.dtype)
            param_grads.append(grad if used else None)
            offset += size
        return (None, None, None, adjoint, *param_grads)


_is_legacy_batched = private_query("is_legacy_batchedtensor")


def _refuse_batched(grad_ys: Tensor) -> None:
    """Raise :class:`~physode.UnsupportedError` in a batched backward pass, where ``grad_ys``
    holds many cotangents at once: the backward solve integrates one adjoint, its steps chosen
    and checked from that adjoint's values, so torch cannot batch it (it failed with 'Batching
    rule not implemented for aten::detach').

    The query is private to torch; a torch without it answers nothing, and such a backward pass
    fails as before.
    """
    if _is_legacy_batched(grad_ys):
        raise UnsupportedError(
            "Opt-Disc cannot take a batched backward pass (torch.autograd.functional.jacobian "
            "with vectorize=True, torch.autograd.grad with is_grads_batched=True): its backward "
            "solve integrates one adjoint at a time, choosing and checking its steps from the "
            "adjoint's values. Use vectorize=False (one backward pass per output), or "
            "gradient='aca' or 'disc-opt', which support it."
        )


def _knots(
    times: list[float], ys: list[Tensor], trace: Trace | None
) -> list[tuple[float, Tensor, int | None]]:
    """Where the backward solve stops, in the order of the forward solve: ``(time, stored
    state, output index)`` for every output reached, and with a trace ``(time, state, None)``
    for the start of every accepted step before the last output reached.

    A step that starts on an output time is that output's knot. After a failed solve
    (``throw=False``) the steps past the last output reached are left out: nothing there has
    a gradient.

    Examples
    --------
    >>> ys = [torch.zeros(1), torch.ones(1)]
    >>> [(t, k) for t, _, k in _knots([0.0, 1.0], ys, None)]
    [(0.0, 0), (1.0, 1)]
    >>> trace = Trace(t=[0.0, 0.4, 0.9], h=[0.4, 0.5, 0.3], y=[ys[0]] * 3)
    >>> [(t, k) for t, _, k in _knots([0.0, 1.0], ys, trace)]
    [(0.0, 0), (0.4, None), (0.9, None), (1.0, 1)]
    """
    outputs = [(times[k], y, k) for k, y in enumerate(ys)]
    if trace is None:
        return outputs
    direction = 1.0 if times[-1] > times[0] else -1.0
    end = times[len(ys) - 1]
    starts = [(t, y, None) for t, y in zip(trace.t, trace.y) if direction * (end - t) > 0.0]
    # An output sorts before a step starting at the same time, which then drops out.
    merged = sorted(outputs + starts, key=lambda knot: (direction * knot[0], knot[2] is None))
    return [knot for i, knot in enumerate(merged) if i == 0 or knot[0] != merged[i - 1][0]]


def _restart_hint(mode: OptDisc, n_times: int) -> str:
    """What to try when the backward solve fails, given where it restarts the state now."""
    if mode.restart == "steps":
        return "."
    outputs = (
        "physode.OptDisc(restart=True) restarts it from the outputs at no cost in memory, and "
        if not mode.restart and n_times > 2
        else ""
    )
    return (
        "; where the state re-solved backward is unstable (a flow that contracts forward), "
        f"{outputs}physode.OptDisc(restart='steps') from the state at every forward step "
        "(memory grows with the steps), or gradient='aca' gives the exact gradient."
    )


class _Augmented:
    """The adjoint system on the flat state ``[y, a, g]``; each call is one evaluation of func
    and one vector-Jacobian product."""

    def __init__(self, func, shape, n, params):
        self.func, self.shape, self.n, self.params = func, shape, n, params
        # Which parameters some evaluation depended on; the others get no gradient (None).
        self.used = [False] * len(params)

    def __call__(self, t: Tensor, z: Tensor) -> Tensor:
        n, shape = self.n, self.shape
        with torch.enable_grad():
            y = z[:n].reshape(shape).detach().requires_grad_(True)
            f = self.func(t, y)
            adjoint = z[n : 2 * n].reshape(shape)
            if f.requires_grad:
                vjps = step_vjp("Opt-Disc", [f], [y, *self.params], [-adjoint])
            else:  # f depends on neither y nor any parameter
                vjps = (None,) * (1 + len(self.params))
        pieces = [f.detach().reshape(-1)]
        for i, (v, like) in enumerate(zip(vjps, [y, *self.params])):
            if i > 0 and v is not None:
                self.used[i - 1] = True
            piece = v if v is not None else torch.zeros_like(like)
            # A 0-dim CPU parameter of a solve on another device has its product on the CPU.
            pieces.append(piece.reshape(-1).to(z.device, z.dtype))
        return torch.cat(pieces)
