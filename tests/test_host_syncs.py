"""Host synchronisations of the solver loops, counted on the CPU with :class:`HostSyncs`.

On a GPU every read of a value on the device (a step's error ratio, a finiteness flag) stops the
host until the device has run everything queued before it. The loops read as little as they can: the
adaptive loops once per step attempt (per-sample step control: once per iteration), the fixed-step
loop once per ``_FINITE_CHECK_EVERY`` steps. Counting the reads on the CPU bounds them without a
GPU; the solves that read less often must still stop where reading every step would.
"""

from __future__ import annotations

import math

import pytest
import torch
from _host_syncs import HostSyncs

import physode
import physode.solvers.loop as loop
import physode.solvers.per_sample as per_sample

DTYPE = torch.float64
T = [0.0, 2.0, 5.0]
# Reads made once per solve: the times, the first evaluation's finiteness, the starting step
# (three norms), the status at the end, ...
PER_SOLVE = 10


def _vdp(t, z):
    x, v = z[..., 0], z[..., 1]
    return torch.stack([v, 2.0 * (1 - x * x) * v - x], dim=-1)


def _y0(requires_grad: bool) -> torch.Tensor:
    y0 = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.5, 0.3]], dtype=DTYPE)
    return y0.requires_grad_(requires_grad)


def _attempts(stats) -> int:
    attempts = stats.n_steps + stats.n_rejected
    return int(attempts.max()) if isinstance(attempts, torch.Tensor) else attempts


def _forward_syncs(gradient, **options) -> tuple[int, int, dict]:
    """Reads of one forward solve that needs a gradient (none without a gradient), and its
    attempts."""
    y0 = _y0(gradient is not None)
    options = {"gradient": gradient or "disc-opt", **options}
    with HostSyncs() as syncs:
        solution = physode.solve(_vdp, y0, T, **options)
    assert solution.success
    return syncs.count, _attempts(solution.stats), syncs.ops


GRADIENTS = [None, "disc-opt", "aca", "opt-disc"]


@pytest.mark.parametrize("method", ["dopri5", "dop853"])
@pytest.mark.parametrize("gradient", GRADIENTS)
def test_an_adaptive_solve_reads_the_device_once_per_step_attempt(gradient, method):
    count, attempts, ops = _forward_syncs(gradient, method=method)
    assert attempts > 30
    assert count <= attempts + PER_SOLVE, ops


@pytest.mark.parametrize("gradient", GRADIENTS)
def test_a_fixed_step_solve_reads_the_finiteness_of_its_states_once_per_few_steps(
    gradient, monkeypatch
):
    # Once read after every step; now, on a GPU, once per _FINITE_CHECK_EVERY = 32 steps.
    monkeypatch.setattr(loop, "_on_host", lambda y0: False)
    count, steps, ops = _forward_syncs(gradient, method="rk4", step_size=0.01)
    assert steps == 500
    assert count <= steps / 20, ops


@pytest.mark.parametrize("gradient", [None, "disc-opt", "aca"])
def test_per_sample_step_control_on_a_gpu_reads_the_device_once_per_iteration(
    gradient, monkeypatch
):
    # On a GPU, which the CPU loop does as it would there. The loop read three to nine flags per
    # iteration, and a nonzero found the rows that landed, finished or (ACA) were accepted.
    monkeypatch.setattr(per_sample, "_on_host", lambda y0: False)
    count, iterations, ops = _forward_syncs(gradient, step_control="per-sample")
    assert iterations > 30
    assert count <= iterations + PER_SOLVE, ops
    assert "nonzero" not in ops


# ----------------------------------------------------------- the same results, with fewer reads


def _poisoned(t_bad: float):
    """``dy/dt = -y``, NaN from ``t_bad`` on."""

    def func(t, y):
        return -y + torch.where(t > t_bad, math.nan, 0.0)

    return func


def _outcome(solution) -> list:
    """What a solve returns, as plain values (NaN as None, so that equal NaN compare equal)."""
    stats = solution.stats
    values = [solution.status, solution.t_final, solution.h_final, solution.ys]
    values += [stats.n_steps, stats.n_rejected, stats.nfe]
    plain = [v.tolist() if isinstance(v, torch.Tensor) else v for v in values]
    return [solution.message, *_nan_as_none(plain)]


def _nan_as_none(x):
    if isinstance(x, list):
        return [_nan_as_none(item) for item in x]
    return None if isinstance(x, float) and math.isnan(x) else x


@pytest.mark.parametrize(
    ("t_bad", "max_steps"),
    [
        (0.042, 1000),  # in the first _FINITE_CHECK_EVERY = 32 steps
        (0.315, 1000),  # the last of them
        (0.325, 1000),  # the first after them
        (0.727, 1000),
        (0.995, 1000),  # the last step
        (0.4075, 41),  # the last step that max_steps allows
        (0.4175, 41),  # the one after it: stops for max_steps
    ],
)
@pytest.mark.parametrize("gradient", ["disc-opt", "aca", "opt-disc"])
def test_a_fixed_step_solve_stops_at_the_first_non_finite_step_as_if_it_read_every_step(
    t_bad, max_steps, gradient, monkeypatch
):
    def solve():
        y0 = torch.ones(2, dtype=DTYPE, requires_grad=True)
        solution = physode.solve(
            _poisoned(t_bad),
            y0,
            [0.0, 0.25, 0.5, 0.75, 1.0],
            method="rk4",
            step_size=0.01,
            max_steps=max_steps,
            gradient=gradient,
            throw=False,
        )
        # The outputs reached are differentiable as ever (ACA rebuilds the steps kept).
        (grad,) = torch.autograd.grad(solution.ys[1].sum(), [y0])
        return [*_outcome(solution), _nan_as_none(grad.tolist())]

    assert loop._FINITE_CHECK_EVERY == 32  # as the cases above assume
    every_step = solve()  # on the host, which reads after every step
    monkeypatch.setattr(loop, "_on_host", lambda y0: False)
    every_few_steps = solve()  # as on a GPU
    assert every_few_steps == every_step
    stopped = physode.Status.MAX_STEPS if t_bad == 0.4175 else physode.Status.NON_FINITE
    assert every_step[1] is stopped


def _mixed(t, z):
    """Rows ``[y, c, poison]``: ``dy/dt = c y^2`` blows up at ``t = 1 / (c y0)`` (step size
    underflow), and turns NaN from ``t = 0.5`` where ``poison > 0``."""
    y, c, poison = z[..., 0], z[..., 1], z[..., 2]
    dy = c * y * y + torch.where((t[..., 0] > 0.5) & (poison > 0), math.nan, 0.0)
    return torch.stack([dy, torch.zeros_like(c), torch.zeros_like(poison)], dim=-1)


def _mixed_y0() -> torch.Tensor:
    rows = [[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.5, -1.0, 0.0], [1.0, 0.3, 1.0], [2.0, 0.7, 0.0]]
    return torch.tensor(rows, dtype=DTYPE)


@pytest.mark.parametrize("max_steps", [1000, 25])
@pytest.mark.parametrize("gradient", ["disc-opt", "aca"])
def test_per_sample_step_control_on_a_gpu_takes_the_steps_it_takes_on_the_host(
    gradient, max_steps, monkeypatch
):
    def solve():
        z0 = _mixed_y0().requires_grad_(True)
        solution = physode.solve(
            _mixed,
            z0,
            [0.0, 0.3, 0.7, 2.0],
            step_control="per-sample",
            gradient=gradient,
            throw=False,
            max_steps=max_steps,
            rtol=1e-4,
            atol=1e-4,
        )
        (grad,) = torch.autograd.grad(solution.ys[1].sum(), [z0])
        return [*_outcome(solution), _nan_as_none(grad.tolist())]

    on_host = solve()
    monkeypatch.setattr(per_sample, "_on_host", lambda y0: False)
    on_a_gpu = solve()
    assert on_a_gpu == on_host
    status = {physode.Status(code) for code in on_host[1]}
    if max_steps == 1000:  # every way a row stops
        assert status == {
            physode.Status.SUCCESS,
            physode.Status.STEP_SIZE_UNDERFLOW,
            physode.Status.NON_FINITE,
        }
    else:
        assert physode.Status.MAX_STEPS in status


def test_a_fixed_step_solve_on_the_host_evaluates_func_on_no_state_past_the_first_non_finite():
    # On the CPU the finiteness is read after every step, as reading waits for nothing: func is
    # not evaluated on up to 31 more non-finite states, and stats.nfe counts every evaluation.
    calls = []

    def func(t, y):
        calls.append(bool(torch.isfinite(y).all()))
        return y * y  # y' = y^2 from y0 = 1 reaches inf before t = 1

    y0 = torch.tensor([1.0], dtype=DTYPE)
    solution = physode.solve(func, y0, [0.0, 5.0], method="rk4", step_size=0.05, throw=False)
    assert solution.status is physode.Status.NON_FINITE
    assert solution.stats.nfe == len(calls)
    assert calls.count(False) <= 4  # the stages of the step that turned non-finite
