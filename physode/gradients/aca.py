"""ACA: the adaptive checkpoint adjoint, exact gradients with memory of the accepted states only."""

from __future__ import annotations

from collections import defaultdict

import torch
from torch import Tensor

from physode._repr import never_raising
from physode.gradients.base import (
    GradientMode,
    Problem,
    add_gradients,
    check_switch,
    needs_gradient,
    refuse_second_derivatives,
    stack_outputs,
    step_vjp,
)
from physode.solvers.loop import LoopResult, Trace, time_maker

__all__ = ["ACA"]


class _ACAFunction(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx, problem: Problem, holder: list, keep_last_graph: bool, y0: Tensor, *params: Tensor
    ) -> Tensor:
        # No graph, but for the step that lands on the last output time (see Trace). Not inference
        # mode: it saves little here (evaluations of func dominate), and a func that builds and
        # keeps a tensor on first use (a lazily made constant) would then hand the backward pass an
        # inference tensor that no graph can take.
        trace = Trace(graph_final=keep_last_graph)
        with torch.no_grad():
            result = problem.run(y0.detach(), trace)
        _drop_steps_past_the_last_output(trace)
        holder.append(result)
        ctx.problem, ctx.trace = problem, trace
        # Saved only so that autograd refuses a backward pass after y0 or a parameter has been
        # changed in place (an optimizer step): the replay would silently use the new values.
        ctx.save_for_backward(y0, *params)
        return stack_outputs(result, len(problem.times), y0)

    @staticmethod
    def backward(ctx, grad_ys: Tensor):
        refuse_second_derivatives("ACA")
        problem, trace = ctx.problem, ctx.trace
        func, stepper = problem.func, problem.stepper
        _, *params = ctx.saved_tensors  # raises if y0 or a parameter was changed in place
        time = time_maker(grad_ys)
        outputs_of_step = defaultdict(list)
        for k, (n, theta) in enumerate(trace.outputs, start=1):
            outputs_of_step[n].append((k, theta))
        # The graph of the last step, taken in the forward pass, serves once: a second backward
        # pass (retain_graph=True) rebuilds that step like the others.
        final, trace.final = trace.final, None
        param_grads: list[Tensor | None] = [None] * len(params)  # see add_gradients
        adjoint = None
        nfe = 0
        with torch.enable_grad():
            for n in range(len(trace.t) - 1, -1, -1):
                t, h = trace.t[n], trace.h[n]
                outputs = outputs_of_step[n]
                if final is not None and final[0] == n:
                    _, y, step = final
                    final = None
                else:
                    replay = all(theta is None for _, theta in outputs)
                    y = trace.y[n].detach().requires_grad_(True)
                    step = stepper.step(func, t, y, h, func(time(t), y), time, replay=replay)
                    nfe += 1 + (stepper.nfe_per_replay if replay else stepper.nfe_per_step)
                targets, cotangents = [step.y1], [adjoint]
                for k, theta in outputs:
                    if theta is None:
                        cotangents[0] = (
                            grad_ys[k] if cotangents[0] is None else cotangents[0] + grad_ys[k]
                        )
                    else:
                        targets.append(stepper.interpolate(y, h, step.ks, theta))
                        cotangents.append(grad_ys[k])
                if cotangents[0] is None:  # the last output reached is inside this step
                    cotangents[0] = torch.zeros_like(grad_ys[0])
                # step_vjp keeps the graph: func may use tensors computed from the parameters
                # outside the solve (w2 = softplus(w)); every step differentiates through that
                # history again. The step's own graph goes with `del` below all the same.
                grads = step_vjp("ACA", targets, [y, *params], cotangents)
                adjoint = grads[0] if grads[0] is not None else torch.zeros_like(grad_ys[0])
                add_gradients(param_grads, grads[1:])
                del step, targets, grads
        problem.stats.nfe_backward += nfe
        grad_y0 = grad_ys[0] if adjoint is None else adjoint + grad_ys[0]
        return (None, None, None, grad_y0, *param_grads)


def _drop_steps_past_the_last_output(trace: Trace) -> None:
    """Forget the accepted steps after the one that gave the last output reached, in place.

    Only a solve that stopped early (``throw=False``) has such steps; no output depends on
    them, so replaying them would add zeros at the cost of a full step each (a solve blowing up
    after its last output took nine in ten of its steps there).

    Examples
    --------
    >>> trace = Trace(t=[0.0, 0.5, 0.9], h=[0.5, 0.4, 0.1], y=[None] * 3, outputs=[(0, None)])
    >>> _drop_steps_past_the_last_output(trace)
    >>> trace.t, trace.h
    ([0.0], [0.5])
    """
    kept = trace.outputs[-1][0] + 1 if trace.outputs else 0
    del trace.t[kept:], trace.h[kept:], trace.y[kept:]


class ACA(GradientMode):
    """Adaptive checkpoint adjoint (Zhuang et al., 2020): exact gradients, memory of states only.

    Forward runs the adaptive solve without building any graph and keeps the accepted step times,
    sizes and input states. Backward walks the accepted steps from last to first, rebuilds one
    step with autograd from its stored input, takes its vector-Jacobian product with the incoming
    adjoint (plus the gradients of any outputs that step produced), accumulates the parameter
    gradients and frees the step's graph. Rejected trial steps never enter a graph.

    The one exception is the step that lands on the last output time: the forward pass takes it
    with autograd (evaluating its first stage once more) and keeps its graph, which is the first
    the backward pass needs, so that step is not rebuilt. Within one solve at most one step's
    graph is alive at any time, as before: the kept one until the backward pass has used it, then
    each rebuilt one in turn.

    The gradient equals :class:`DiscOpt`'s to rounding; memory grows with the number of accepted
    steps times the state size, not with the graph of every step. Each step but the last is
    evaluated once more in the backward pass, so ``func`` must be deterministic: a random one
    (dropout in training mode) gets the gradient of other steps than those taken forward; use
    :class:`DiscOpt` for it.

    Parameters
    ----------
    keep_last_graph : bool
        Keep the last step's graph from the forward pass (default) instead of rebuilding that
        step. Turn it off where many solves run before one backward pass (a stack of ODE blocks)
        and one step's graph per solve, held until then, is too much memory.

    Examples
    --------
    >>> import torch, physode
    >>> w = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    >>> ys = physode.odeint(lambda t, y: -w * y, torch.ones(1, dtype=torch.float64),
    ...                     torch.tensor([0.0, 1.0]), gradient="aca", params=[w])
    >>> ys[-1].sum().backward()
    >>> round(w.grad.item(), 5)   # d/dw exp(-w) = -exp(-2)
    -0.13534
    """

    name = "aca"
    exact = True

    def __init__(self, keep_last_graph: bool = True):
        self.keep_last_graph = check_switch("ACA", "keep_last_graph", keep_last_graph)

    @never_raising
    def __repr__(self) -> str:
        return f"ACA(keep_last_graph={self.keep_last_graph})"

    def solve(self, problem: Problem) -> tuple[Tensor, LoopResult]:
        if not needs_gradient(problem):
            result = problem.run(problem.y0)
            return stack_outputs(result, len(problem.times), problem.y0), result
        holder: list[LoopResult] = []
        ys = _ACAFunction.apply(problem, holder, self.keep_last_graph, problem.y0, *problem.params)
        return ys, holder[0]
