"""Disc-Opt: backpropagate through the accepted steps of the discrete solver."""

from __future__ import annotations

from torch import Tensor

from physode.gradients.base import GradientMode, Problem, stack_outputs
from physode.solvers.loop import LoopResult

__all__ = ["DiscOpt"]


class DiscOpt(GradientMode):
    """Discretise-then-optimise: autograd through every accepted step (exact).

    The gradient is the exact derivative of the computed outputs, whatever the tolerance
    (Onken & Ruthotto). Step sizes are chosen by the controller from detached error norms, so they
    are constants of the graph; rejected trial steps are dropped before they are used, and their
    graphs are freed. Memory grows with the number of steps times the graph of one step; for long
    solves with large models prefer :class:`ACA`, which gives the same gradient.

    Examples
    --------
    >>> import torch, physode
    >>> y0 = torch.tensor([1.0], dtype=torch.float64, requires_grad=True)
    >>> t = torch.tensor([0.0, 1.0])
    >>> ys = physode.odeint(lambda t, y: -y, y0, t, gradient=physode.DiscOpt())
    >>> ys[-1].sum().backward()
    >>> round(y0.grad.item(), 5)
    0.36788
    """

    name = "disc-opt"
    exact = True

    def solve(self, problem: Problem) -> tuple[Tensor, LoopResult]:
        result = problem.run(problem.y0)
        return stack_outputs(result, len(problem.times), problem.y0), result
