"""ACA: the adaptive checkpoint adjoint, exact gradients with memory of the accepted states only."""

from __future__ import annotations

from collections import defaultdict

import torch
from torch import Tensor

from physode.gradients.base import GradientMode, Problem, needs_gradient, stack_outputs
from physode.solvers.loop import LoopResult, Trace, time_maker

__all__ = ["ACA"]


class _ACAFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, problem: Problem, holder: list, y0: Tensor, *params: Tensor) -> Tensor:
        trace = Trace()
        with torch.no_grad():
            result = problem.run(y0.detach(), trace)
        holder.append(result)
        ctx.problem, ctx.trace = problem, trace
        return stack_outputs(result, len(problem.times), y0)

    @staticmethod
    def backward(ctx, grad_ys: Tensor):
        problem, trace = ctx.problem, ctx.trace
        func, stepper, params = problem.func, problem.stepper, problem.params
        time = time_maker(grad_ys)
        outputs_of_step = defaultdict(list)
        for k, (n, theta) in enumerate(trace.outputs, start=1):
            outputs_of_step[n].append((k, theta))
        param_grads = [torch.zeros_like(p) for p in params]
        adjoint = torch.zeros_like(grad_ys[0])
        nfe = 0
        for n in range(len(trace.t) - 1, -1, -1):
            t, h = trace.t[n], trace.h[n]
            outputs = outputs_of_step[n]
            replay = all(theta is None for _, theta in outputs)
            with torch.enable_grad():
                y = trace.y[n].detach().requires_grad_(True)
                step = stepper.step(func, t, y, h, func(time(t), y), time, replay=replay)
                nfe += 1 + (stepper.nfe_per_replay if replay else stepper.nfe_per_step)
                targets, cotangents = [step.y1], [adjoint]
                for k, theta in outputs:
                    if theta is None:
                        cotangents[0] = cotangents[0] + grad_ys[k]
                    else:
                        targets.append(stepper.interpolate(y, h, step.ks, theta))
                        cotangents.append(grad_ys[k])
                grads = torch.autograd.grad(targets, [y, *params], cotangents, allow_unused=True)
            adjoint = grads[0] if grads[0] is not None else torch.zeros_like(adjoint)
            for acc, g in zip(param_grads, grads[1:]):
                if g is not None:
                    acc.add_(g)
        problem.stats.nfe_backward += nfe
        return (None, None, adjoint + grad_ys[0], *param_grads)


class ACA(GradientMode):
    """Adaptive checkpoint adjoint (Zhuang et al., 2020): exact gradients, memory of states only.

    Forward runs the adaptive solve without building any graph and keeps the accepted step times,
    sizes and input states. Backward walks the accepted steps from last to first, rebuilds one
    step with autograd from its stored input, takes its vector-Jacobian product with the incoming
    adjoint (plus the gradients of any outputs that step produced), accumulates the parameter
    gradients and frees the step's graph. Rejected trial steps never enter a graph.

    The gradient equals :class:`DiscOpt`'s to rounding; memory grows with the number of accepted
    steps times the state size, not with the graph of every step. Each step is evaluated once more
    in the backward pass.

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

    def solve(self, problem: Problem) -> tuple[Tensor, LoopResult]:
        if not needs_gradient(problem):
            result = problem.run(problem.y0)
            return stack_outputs(result, len(problem.times), problem.y0), result
        holder: list[LoopResult] = []
        ys = _ACAFunction.apply(problem, holder, problem.y0, *problem.params)
        return ys, holder[0]
