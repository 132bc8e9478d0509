"""What a gradient mode receives: one solve, fully specified and validated."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from physode._checks import is_switch
from physode._errors import InvalidArgumentError, UnsupportedError
from physode._repr import short_repr, value_text
from physode.solvers import Stats, integrate
from physode.solvers.loop import LoopResult, Trace

__all__ = [
    "GradientMode",
    "Problem",
    "DOUBLE_BACKWARD",
    "add_gradients",
    "check_switch",
    "needs_gradient",
    "refuse_second_derivatives",
    "stack_outputs",
    "step_vjp",
]


@dataclass
class Problem:
    """A validated solve: ``func``, ``y0``, output ``times`` (floats), stepper and settings."""

    func: Callable[[Tensor, Tensor], Tensor]
    y0: Tensor
    times: list[float]
    stepper: object
    method: str
    rtol: float
    atol: float
    step_size: float | None
    first_step: float | None
    max_steps: int
    params: list[Tensor]
    stats: Stats
    f0: Tensor | None = None  # func(times[0], y0), when already evaluated (and counted)
    max_step: float | None = None  # the cap on an adaptive method's steps

    def __repr__(self) -> str:
        # The settings, the states and weights by shape: a model's weights can be millions.
        return short_repr(
            self,
            ("func", lambda f: type(f).__name__),
            "y0",
            ("times", value_text),
            "method",
            "rtol",
            "atol",
            "step_size",
            "max_steps",
            "params",
        )

    def run(
        self,
        y0: Tensor,
        trace: Trace | None = None,
        loop: Callable = integrate,
        func: Callable | None = None,
    ):
        """The forward loop from ``y0`` with this problem's settings.

        ``loop`` is the shared-step loop by default, or the per-sample one, which takes the same
        arguments. ``func`` replaces the problem's (the per-sample loop's NumPy twin, with ``y0``
        a NumPy array).
        """
        if func is not None:
            return loop(self.stepper, func, y0, self.times, **self._settings(), trace=trace)
        return loop(
            self.stepper,
            self.func,
            y0,
            self.times,
            **self._settings(),
            trace=trace,
            f0=self.f0 if y0 is self.y0 or y0.data_ptr() == self.y0.data_ptr() else None,
        )

    def _settings(self) -> dict:
        return {
            "rtol": self.rtol,
            "atol": self.atol,
            "step_size": self.step_size,
            "first_step": self.first_step,
            "max_steps": self.max_steps,
            "max_step": self.max_step,
            "stats": self.stats,
        }


def check_switch(owner: str, name: str, value: object, also: str = "") -> bool:
    """``value`` as a bool if it is one (Python's or NumPy's), else :class:`InvalidArgumentError`.

    A string such as ``"False"`` would count as true, and an array has no truth value. ``also``
    names the other values the setting takes, if any.

    Examples
    --------
    >>> check_switch("ACA", "keep_last_graph", False)
    False
    """
    if not is_switch(value):
        choices = f"True, False {also}" if also else "True or False"
        raise InvalidArgumentError(f"{owner}: {name} must be {choices}, got {value!r}")
    return bool(value)


def needs_gradient(problem: Problem) -> bool:
    """Whether autograd will ask for a gradient of this solve's outputs."""
    if not torch.is_grad_enabled():
        return False
    return problem.y0.requires_grad or any(p.requires_grad for p in problem.params)


# What differentiates a backward pass without the caller writing create_graph=True.
DOUBLE_BACKWARD = (
    "torch.autograd.functional.jvp, hvp, vhp and hessian do so too, differentiating a backward pass"
)


def refuse_second_derivatives(mode: str) -> None:
    """Raise :class:`~physode.UnsupportedError` if a backward pass runs with ``create_graph=True``
    (grad mode on during backward).

    ACA and Opt-Disc compute their backward pass outside autograd's view of it, so a graph of
    the gradient, and with it any second derivative, would silently miss terms.
    """
    if torch.is_grad_enabled():
        raise UnsupportedError(
            f"{mode} cannot differentiate its gradient (create_graph=True, second derivatives; "
            f"{DOUBLE_BACKWARD}): its backward pass is not recorded by autograd. Use "
            "gradient='disc-opt', which backpropagates through the recorded steps and supports it."
        )


def step_vjp(
    mode: str, outputs: Sequence[Tensor], inputs: Sequence[Tensor], cotangents: Sequence[Tensor]
) -> tuple[Tensor | None, ...]:
    """``torch.autograd.grad`` of one step (ACA) or one evaluation (Opt-Disc), keeping the graph.

    The graph is kept because ``func`` may use tensors computed from the parameters before the
    solve (``w2 = softplus(w)``), whose history every step differentiates again. A
    ``torch.compile``-d ``func`` refuses that while its compiled backward donates its buffers;
    the refusal is said in physode's terms, with the two ways out.
    """
    try:
        return torch.autograd.grad(
            outputs, inputs, cotangents, allow_unused=True, retain_graph=True
        )
    except RuntimeError as error:
        if "donated buffers" not in str(error):
            raise
        raise UnsupportedError(
            f"{mode}'s backward pass differentiates func once per step and keeps the graph "
            "(retain_graph=True), which a torch.compile-d func refuses while its compiled "
            "backward donates buffers. Set torch._functorch.config.donated_buffer = False "
            "before the compiled func's first call, or use gradient='disc-opt'."
        ) from error


def add_gradients(totals: list[Tensor | None], grads: Sequence[Tensor | None]) -> None:
    """Add one step's parameter gradients into ``totals``, in place.

    A total stays ``None`` until some step gives it a gradient, so a parameter that ``func``
    never uses keeps ``.grad is None``, as autograd (and Disc-Opt) leave it. The first gradient
    is copied: autograd may hand back a cotangent itself (for ``f = y + p``).
    """
    for i, g in enumerate(grads):
        if g is not None:
            totals[i] = g.clone() if totals[i] is None else totals[i].add_(g)


def stack_outputs(result: LoopResult, n_times: int, like: Tensor) -> Tensor:
    """``(n_times, *y0.shape)`` outputs, NaN where the solve stopped before reaching them."""
    ys = result.ys
    if len(ys) < n_times:
        missing = like.new_full((n_times - len(ys), *like.shape), float("nan"))
        return torch.cat([torch.stack(ys), missing])
    return torch.stack(ys)


class GradientMode:
    """Base of the three ways to differentiate through a solve.

    Subclasses implement :meth:`solve`, returning the stacked outputs and the loop's result.
    """

    name: str = ""
    exact: bool = True

    def solve(self, problem: Problem) -> tuple[Tensor, LoopResult]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
