"""Gradients with respect to the output times ``t``, the same for every gradient mode.

Two autograd functions wrap a solve that differentiates ``t``; neither touches the step loop,
and a solve whose ``t`` does not require grad meets neither.

* :func:`start_time` sits between ``y0`` and the solve. Its value is ``y0``; its backward pass
  receives the total gradient ``G`` arriving at ``y0`` (what the gradient mode computes for
  ``y0``, the direct term of ``ys[0]`` included) and gives ``t[0]`` the term ``-<G, f(t0, y0)>``.
* :func:`output_times` sits on the stacked outputs ``ys``. Its value is a copy of ``ys``; its
  backward pass gives every ``t[k]`` the term ``<dL/dys[k], f(t[k], ys[k])>``.

For ``k >= 1`` that is the derivative of the exact flow's output, ``d y(t_k)/d t_k = f``. For
``t[0]`` the two terms add up to ``-<a(t0), f(t0, y0)>``, ``a(t0)`` being the adjoint arriving
at ``y0`` from the later outputs: ``ys[0] = y0`` is one output that does not move with ``t[0]``,
and its own term, given once by each function, cancels. ``f`` is evaluated without a graph at
the stored outputs, once per output time (and once more at ``y0``), in the backward pass only.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from physode._errors import UnsupportedError
from physode.gradients.base import DOUBLE_BACKWARD
from physode.solvers import Stats

__all__ = ["FieldAt", "output_times", "start_time"]


class FieldAt:
    """``func`` at one output time, without a graph, counted in ``stats.nfe_backward``.

    ``per_sample``: ``func`` takes one time per row, shaped ``(batch,) + (1,) * (y.ndim - 1)``,
    as the per-sample loop hands it.
    """

    def __init__(self, func: Callable, stats: Stats, per_sample: bool):
        self.func, self.stats, self.per_sample = func, stats, per_sample

    def __call__(self, s: float, y: Tensor) -> Tensor:
        t = torch.scalar_tensor(s, dtype=y.dtype, device=y.device)
        if self.per_sample:
            t = t.expand(y.shape[0]).reshape((-1,) + (1,) * (y.ndim - 1))
        with torch.no_grad():
            f = self.func(t, y)
        # An int for a shared solve, a tensor of one count per row for a per-sample one: every
        # row is evaluated.
        self.stats.nfe_backward = self.stats.nfe_backward + 1
        return f


def _padded(terms: Tensor, like: Tensor) -> Tensor:
    """``terms`` followed by zeros, in ``like``'s length and dtype: the gradient of the first
    ``len(terms)`` times.

    Built out of place, not written into a tensor of zeros: in a batched backward pass
    (``torch.autograd.functional.jacobian(..., vectorize=True)``, ``is_grads_batched=True``)
    ``terms`` carries the batch and a tensor of zeros made here does not, so vmap refuses the
    write.

    Examples
    --------
    >>> _padded(torch.tensor([1.0, 2.0]), torch.zeros(4, dtype=torch.float64))
    tensor([1., 2., 0., 0.], dtype=torch.float64)
    """
    zeros = like.new_zeros(len(like) - len(terms))
    return torch.cat([terms.to(like.dtype), zeros])


def _refuse_second_derivatives() -> None:
    if torch.is_grad_enabled():
        raise UnsupportedError(
            "the gradient with respect to the output times t cannot be differentiated again "
            f"(create_graph=True, second derivatives; {DOUBLE_BACKWARD}): it evaluates func "
            "without a graph. Pass "
            "t.detach() to the solve where only y0 and the parameters need second derivatives."
        )


def _start_term(grad: Tensor, f: Tensor) -> Tensor:
    """``<grad, f(t0, y0)>`` over the components where ``f`` is finite.

    Where ``func`` is not finite at ``y0`` the solve stops at its start (per sample: that row
    does), so no later output depends on those components: the adjoint reaching them is zero,
    and the terms that :func:`start_time` and :func:`output_times` give them cancel. Taken as
    they are, they would be NaN (``grad * nan``) and make ``t[0]``'s whole gradient NaN.

    Examples
    --------
    >>> _start_term(torch.tensor([2.0, 0.0]), torch.tensor([3.0, float("nan")]))
    tensor(6.)
    """
    return torch.where(torch.isfinite(f), grad * f, 0.0).sum()


class _StartTime(torch.autograd.Function):
    @staticmethod
    def forward(y0: Tensor, t: Tensor, field: FieldAt, t0: float) -> Tensor:
        return y0.view_as(y0)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        y0, t, ctx.field, ctx.t0 = inputs
        ctx.n_times, ctx.t_like = len(t), t.detach()
        # Saved so that autograd refuses a backward pass after y0 was changed in place: f(t0, y0)
        # would be evaluated at the new values.
        ctx.save_for_backward(y0)

    @staticmethod
    def backward(ctx, grad_y0: Tensor):
        _refuse_second_derivatives()
        (y0,) = ctx.saved_tensors
        grad_t = None
        if ctx.needs_input_grad[1]:
            term = -_start_term(grad_y0, ctx.field(ctx.t0, y0.detach()))
            grad_t = _padded(term.reshape(1), ctx.t_like)
        return grad_y0, grad_t, None, None


class _OutputTimes(torch.autograd.Function):
    @staticmethod
    def forward(ys: Tensor, t: Tensor, field: FieldAt, times: list, reached: int) -> Tensor:
        # A copy: ys may be changed in place after the solve (ys -= mean), which autograd refuses
        # for an input returned as it is; the original, which nobody else sees, keeps the states
        # that f is evaluated at.
        return ys.clone()

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ys, t, ctx.field, ctx.times, ctx.reached = inputs
        ctx.states, ctx.t_like = ys.detach(), t.detach()

    @staticmethod
    def backward(ctx, grad_ys: Tensor):
        _refuse_second_derivatives()
        grad_t = None
        if ctx.needs_input_grad[1]:
            field, states = ctx.field, ctx.states
            terms = []
            for k in range(ctx.reached):
                y = states[k]
                if k == 0:
                    terms.append(_start_term(grad_ys[0], field(ctx.times[0], y)))
                elif field.per_sample:
                    # Rows that failed before t[k] are NaN there: they get no term, and func
                    # sees zeros in their place.
                    ok = torch.isfinite(y)
                    f = field(ctx.times[k], torch.where(ok, y, 0.0))
                    terms.append(torch.where(ok, grad_ys[k] * f, 0.0).sum())
                else:
                    terms.append((grad_ys[k] * field(ctx.times[k], y)).sum())
            grad_t = _padded(torch.stack(terms), ctx.t_like)
        return grad_ys, grad_t, None, None, None


def start_time(y0: Tensor, t: Tensor, field: FieldAt, t0: float) -> Tensor:
    """``y0`` itself (a view), whose gradient also reaches ``t[0]``: ``-<G, f(t0, y0)>``."""
    return _StartTime.apply(y0, t, field, t0)


def output_times(ys: Tensor, t: Tensor, field: FieldAt, times: list[float], reached: int) -> Tensor:
    """A copy of ``ys`` whose gradient also reaches ``t``: ``<dL/dys[k], f(t[k], ys[k])>`` for
    each of the first ``reached`` outputs; the outputs a failed solve did not reach get none."""
    return _OutputTimes.apply(ys, t, field, times, reached)
