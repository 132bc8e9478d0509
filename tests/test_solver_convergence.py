"""Empirical convergence orders of the Runge-Kutta methods, their dense output and error estimates.

Every order is the slope of a log-log least-squares fit of the error against the step size, on
problems with exact solutions, in float64. The step grids keep the error well above rounding and
inside the asymptotic regime, so a wrong tableau coefficient (which drops the order to one or two)
fails by far more than the +-0.3 allowed.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import physode
from physode.solvers import make_stepper
from physode.solvers.control import error_ratio

DTYPE = torch.float64


def _time(s: float) -> torch.Tensor:
    return torch.scalar_tensor(s, dtype=DTYPE)


# name -> (f, exact solution, t0, t1). Non-autonomous (tests the nodes c), nonlinear autonomous
# (tests the order conditions that linear problems do not see), and a 3-component system whose
# components have different scales.
PROBLEMS = {
    "exp_sin": (
        lambda t, y: y * torch.cos(t),
        lambda t: np.array([math.exp(math.sin(t))]),
        0.0,
        3.0,
    ),
    "logistic": (
        lambda t, y: y * (1.0 - y),
        lambda t: np.array([1.0 / (1.0 + 9.0 * math.exp(-t))]),
        0.0,
        2.0,
    ),
    "gauss_rot": (
        lambda t, y: torch.stack([-2.0 * t * y[0], y[2], -y[1]]),
        lambda t: np.array([math.exp(-t * t), math.sin(t), math.cos(t)]),
        0.0,
        1.25,
    ),
}

# (method, order, {problem: (t1, N0)}): the global error at t1 after N steps of size (t1 - t0) / N
# for N in N0 * (1, 1.5, 2, 3). The spans and step counts put each method in its asymptotic regime
# with the error still far above rounding; tsit5's tiny principal error coefficients (by design)
# and dop853's order 8 need their own.
ORDERS = [
    ("euler", 1, {"exp_sin": (3.0, 32), "logistic": (2.0, 32), "gauss_rot": (1.25, 32)}),
    ("midpoint", 2, {"exp_sin": (3.0, 64), "logistic": (2.0, 64), "gauss_rot": (1.25, 64)}),
    ("rk4", 4, {"exp_sin": (3.0, 64), "logistic": (2.0, 64), "gauss_rot": (1.25, 64)}),
    ("heun", 2, {"exp_sin": (3.0, 64), "logistic": (2.0, 64), "gauss_rot": (1.25, 64)}),
    ("bosh3", 3, {"exp_sin": (3.0, 64), "logistic": (2.0, 64), "gauss_rot": (1.25, 64)}),
    ("dopri5", 5, {"exp_sin": (3.0, 32), "logistic": (2.0, 32), "gauss_rot": (1.25, 32)}),
    ("tsit5", 5, {"exp_sin": (3.0, 32), "logistic": (2.0, 16), "gauss_rot": (1.25, 32)}),
    ("dop853", 8, {"exp_sin": (3.0, 6), "logistic": (6.0, 6), "gauss_rot": (2.0, 8)}),
]
CASES = [
    pytest.param(
        method, order, problem, t1, [n0, 3 * n0 // 2, 2 * n0, 3 * n0], id=f"{method}-{problem}"
    )
    for method, order, spans in ORDERS
    for problem, (t1, n0) in spans.items()
]


def _fitted_slope(hs: list[float], errors: list[float]) -> float:
    return float(np.polyfit(np.log(hs), np.log(errors), 1)[0])


def _y0(problem: str) -> torch.Tensor:
    _, exact, t0, _ = PROBLEMS[problem]
    return torch.tensor(exact(t0), dtype=DTYPE)


def _global_error_by_stepper(method: str, problem: str, t1: float, n_steps: int) -> float:
    f, exact, t0, _ = PROBLEMS[problem]
    stepper = make_stepper(method)
    h = (t1 - t0) / n_steps
    y = _y0(problem)
    for i in range(n_steps):
        t = t0 + i * h
        y = stepper.step(f, t, y, h, f(_time(t), y), _time).y1
    return float(np.max(np.abs(y.numpy() - exact(t1))))


@pytest.mark.parametrize(("method", "order", "problem", "t1", "grid"), CASES)
def test_each_method_converges_at_its_order_with_a_fixed_step(method, order, problem, t1, grid):
    t0 = PROBLEMS[problem][2]
    hs = [(t1 - t0) / n for n in grid]
    errors = [_global_error_by_stepper(method, problem, t1, n) for n in grid]
    assert min(errors) > 2e-14, f"grid too fine, rounding dominates: {errors}"
    slope = _fitted_slope(hs, errors)
    assert abs(slope - order) <= 0.3, f"{method} on {problem}: slope {slope:.3f}, errors {errors}"


@pytest.mark.parametrize(("method", "order"), [("euler", 1), ("midpoint", 2), ("rk4", 4)])
def test_fixed_step_methods_converge_at_their_order_through_solve(method, order):
    # Several output times and a step that does not divide the output spacing: the steps that
    # land on outputs are shortened, which must not cost order.
    f, exact, t0, t1 = PROBLEMS["exp_sin"]
    t = torch.linspace(t0, t1, 5, dtype=DTYPE)
    y0 = _y0("exp_sin")
    hs = [0.5 / (n + 0.3) for n in (8, 16, 32, 64)]
    errors = []
    for h in hs:
        ys = physode.odeint(f, y0, t, method=method, step_size=h)
        reference = np.stack([exact(s) for s in t.tolist()])
        errors.append(float(np.max(np.abs(ys.numpy() - reference))))
    slope = _fitted_slope(hs, errors)
    assert abs(slope - order) <= 0.3, f"{method}: slope {slope:.3f}, errors {errors}"


@pytest.mark.parametrize(("method", "stages"), [("euler", 1), ("midpoint", 2), ("rk4", 4)])
def test_fixed_step_methods_take_step_size_not_the_output_grid(method, stages):
    f = PROBLEMS["logistic"][0]
    sol = physode.solve(f, _y0("logistic"), [0.0, 0.5, 1.0], method=method, step_size=0.01)
    assert sol.stats.n_steps == 100
    assert sol.stats.n_rejected == 0
    assert sol.stats.nfe == 100 * stages


@pytest.mark.parametrize("method", ["euler", "leapfrog"])
@pytest.mark.parametrize(
    ("t0", "step_size", "per_output"),
    [(3000.0, 2 * math.pi / 200, 1000), (-3000.0, 2 * math.pi / 200, 1000), (1e4, 1e-3, 1000)],
)
def test_fixed_steps_that_divide_the_output_spacing_take_exactly_that_many_steps(
    method, t0, step_size, per_output
):
    # Far from t = 0 a running sum t + h drifted by its rounding past the landing slack: each
    # output interval then took a sliver of a step more (3003 steps for these 3000), and a solve
    # needing exactly max_steps steps failed.
    t = [t0 + per_output * step_size * k for k in range(4)]
    f = physode.systems.load("harmonic_oscillator").vector_field()
    y0 = torch.tensor([1.0, 0.0], dtype=DTYPE)
    n = 3 * per_output
    for times in (t, t[::-1]):
        sol = physode.solve(f, y0, times, method=method, step_size=step_size, max_steps=n)
        assert sol.stats.n_steps == n


def test_a_fixed_step_solve_far_from_t_zero_lands_without_a_step_of_nothing():
    # Six steps of h from t0: the sixth t + h rounded onto the output time while the time left
    # exceeded h by more than the slack, so it did not land; the next step was of nothing, and
    # the solve stopped with a "step size underflow" (1 in 14 of random such solves).
    t0, h = 193030.14098379872, 0.00016869400768720186
    sol = physode.solve(lambda t, y: -y, torch.ones(1, dtype=DTYPE), [t0, t0 + 6 * h],
                        method="euler", step_size=h)  # fmt: skip
    assert sol.stats.n_steps == 6
    # Each step is the difference of the rounded times (2.9e-11 apart here).
    assert sol.ys[-1].item() == pytest.approx((1 - h) ** 6, abs=1e-9)


@pytest.mark.parametrize("method", ["heun", "tsit5", "dop853"])
def test_an_adaptive_step_that_rounds_onto_the_output_time_lands_on_it(method):
    # Far from t = 0, t0 + h rounds onto the output time although h falls short of the time left
    # by more than the slack of 1e-9 h: the step did not land, the next one was of nothing, and
    # a solve of dy/dt = 0 stopped with a "step size underflow".
    t0 = 1e6
    target = t0 + 0.01
    first_step = (target - t0) - 5e-11
    assert t0 + first_step == target and first_step * (1 + 1e-9) < target - t0
    sol = physode.solve(lambda t, y: 0 * y, torch.ones(1, dtype=DTYPE), [t0, target],
                        method=method, first_step=first_step)  # fmt: skip
    assert sol.stats.n_steps == 1
    assert sol.ys[-1].item() == 1.0


@pytest.mark.parametrize(("method", "dense_order"), [("bosh3", 3), ("dopri5", 4), ("tsit5", 4)])
@pytest.mark.parametrize("theta", [0.3, 0.5, 0.8])
def test_dense_output_has_its_order_inside_one_step(method, dense_order, theta):
    # From the exact state, the continuous extension of order p is off by O(h^(p+1)) at t + theta h.
    f, exact, _, _ = PROBLEMS["exp_sin"]
    stepper = make_stepper(method)
    t0 = 0.3
    hs = [0.1 / 2**k for k in range(5)]
    errors = []
    for h in hs:
        y = torch.tensor(exact(t0), dtype=DTYPE)
        step = stepper.step(f, t0, y, h, f(_time(t0), y), _time)
        y_theta = stepper.interpolate(y, h, step.ks, theta)
        errors.append(float(np.max(np.abs(y_theta.numpy() - exact(t0 + theta * h)))))
    slope = _fitted_slope(hs, errors)
    assert abs(slope - (dense_order + 1)) <= 0.3, f"slope {slope:.3f}, errors {errors}"


@pytest.mark.parametrize(("method", "tol"), [("bosh3", 1e-6), ("dopri5", 1e-9), ("tsit5", 1e-9)])
def test_dense_output_meets_the_tolerance_between_steps(method, tol):
    # Many more output times than steps: the interpolated values are as accurate as the steps.
    f, exact, t0, t1 = PROBLEMS["gauss_rot"]
    t = torch.linspace(t0, t1, 401, dtype=DTYPE)
    sol = physode.solve(f, _y0("gauss_rot"), t, method=method, rtol=tol, atol=tol)
    assert sol.stats.n_steps < 200
    reference = np.stack([exact(s) for s in t.tolist()])
    assert np.max(np.abs(sol.ys.numpy() - reference)) < 100 * tol


@pytest.mark.parametrize("method", ["bosh3", "dopri5", "tsit5"])
def test_output_times_cost_no_evaluation_with_dense_output(method):
    # The steps do not depend on the output times, and the continuous extension uses only the
    # step's own stages (the FSAL one included): 401 outputs cost what the two ends do.
    f, _, t0, t1 = PROBLEMS["gauss_rot"]
    ends = physode.solve(f, _y0("gauss_rot"), [t0, t1], method=method, rtol=1e-8, atol=1e-8)
    t = torch.linspace(t0, t1, 401, dtype=DTYPE)
    many = physode.solve(f, _y0("gauss_rot"), t, method=method, rtol=1e-8, atol=1e-8)
    assert (many.stats.nfe, many.stats.n_steps) == (ends.stats.nfe, ends.stats.n_steps)
    assert many.ys[-1].tolist() == ends.ys[-1].tolist()


@pytest.mark.parametrize(
    ("method", "estimate_order"),
    [("heun", 2), ("bosh3", 3), ("dopri5", 5), ("tsit5", 5), ("dop853", 8)],
)
def test_error_estimate_scales_with_the_embedded_order(method, estimate_order):
    # The estimate of one step is O(h^(q+1)), q the embedded order; DOP853 combines its two
    # estimators (O(h^6) and O(h^4)) into one that scales like h^8.
    f, exact, _, _ = PROBLEMS["logistic"]
    stepper = make_stepper(method)
    t0 = 0.5
    hs = [(0.1 if method == "dop853" else 0.4) / 1.5**k for k in range(6)]
    ratios = []
    for h in hs:
        y = torch.tensor(exact(t0), dtype=DTYPE)
        step = stepper.step(f, t0, y, h, f(_time(t0), y), _time)
        ratios.append(error_ratio(step.error, step.error_low, y, step.y1, 1.0, 1.0).item())
    slope = _fitted_slope(hs, ratios)
    assert abs(slope - estimate_order) <= 0.3, f"slope {slope:.3f}, ratios {ratios}"


@pytest.mark.parametrize(
    ("method", "tolerances"),
    [
        ("heun", (1e-3, 1e-5, 1e-7)),
        ("bosh3", (1e-3, 1e-6, 1e-9)),
        ("dopri5", (1e-3, 1e-6, 1e-9)),
        ("tsit5", (1e-3, 1e-6, 1e-9)),
        ("dop853", (1e-3, 1e-6, 1e-9)),
    ],
)
def test_adaptive_error_is_within_the_tolerance_and_falls_with_it(method, tolerances):
    f, exact, t0, t1 = PROBLEMS["exp_sin"]
    errors = []
    for tol in tolerances:
        ys = physode.odeint(f, _y0("exp_sin"), [t0, t1], method=method, rtol=tol, atol=tol)
        errors.append(abs(ys[-1].item() - exact(t1)[0]))
    assert all(e < 30 * tol for e, tol in zip(errors, tolerances)), errors
    assert errors[2] < errors[0] / 100, errors


@pytest.mark.parametrize("combined", [False, True], ids=["one-estimate", "dop853-two-estimates"])
def test_grouped_error_ratio_is_the_largest_ratio_of_its_groups(combined):
    # Opt-Disc's backward solve splits its state [y, a, g1, g2, ...] into groups this way.
    generator = torch.Generator().manual_seed(0)
    error, low, y0, y1 = (torch.randn(3, 4, dtype=DTYPE, generator=generator) for _ in range(4))
    low = low if combined else None
    groups = (2, 7, 7, 10)  # an empty group, and elements 10 and 11 left out

    def part(x, p):
        return None if x is None else x.reshape(-1)[p]

    expected = max(
        error_ratio(part(error, p), part(low, p), part(y0, p), part(y1, p), 1e-3, 1e-6).item()
        for p in (slice(0, 2), slice(2, 7), slice(7, 10))
    )
    got = error_ratio(error, low, y0, y1, 1e-3, 1e-6, groups=groups).item()
    assert got == pytest.approx(expected, rel=1e-14)
    outside = error.clone()
    outside.view(-1)[10:] = 1e6
    assert error_ratio(outside, low, y0, y1, 1e-3, 1e-6, groups=groups).item() == got


def _van_der_pol(t, y):
    return torch.stack([y[..., 1], 5.0 * (1.0 - y[..., 0] ** 2) * y[..., 1] - y[..., 0]], -1)


@pytest.mark.parametrize("step_control", ["shared", "per-sample"])
@pytest.mark.parametrize("method", ["dopri5", "tsit5", "dop853"])
def test_a_tolerance_below_float32_resolution_is_raised_to_it_instead_of_grinding(
    method, step_control
):
    # The error estimate of a float32 step carries rounding noise ~ eps * h * |f| that no step
    # size removes. Asked for rtol = 1e-10, the controller used to shrink the step until that
    # noise fit: 1 200 (dopri5), 10 000 (tsit5) and 36 000 (dop853) attempts on Van der Pol
    # (mu = 5) over [0, 10], for no better a result than at rtol = eps. Now the solve warns and
    # uses rtol = eps: about 240 attempts.
    t = [0.0, 10.0]
    y0 = torch.tensor([[2.0, 0.0]])
    options = dict(method=method, atol=1e-10, max_steps=600, step_control=step_control)
    with pytest.warns(UserWarning, match="below the resolution of torch.float32"):
        tight = physode.solve(_van_der_pol, y0, t, rtol=1e-10, **options)
    assert tight.success
    at_eps = physode.solve(_van_der_pol, y0, t, rtol=2.0**-23, **options)
    torch.testing.assert_close(tight.ys, at_eps.ys, rtol=0, atol=0)
    reference = physode.odeint(_van_der_pol, y0[0].double(), t, method="dop853", rtol=1e-12,
                               atol=1e-12)[-1]  # fmt: skip
    assert (tight.ys[-1, 0].double() - reference).abs().max() < 1e-4


def test_a_runge_kutta_stepper_is_built_once_per_tableau(monkeypatch):
    # make_stepper keeps one stepper per method (every solve asks for one); a tableau replaced
    # in TABLEAUS gets a stepper of its own.
    import dataclasses

    from physode.solvers.tableau import TABLEAUS

    assert make_stepper("dopri5") is make_stepper("dopri5")
    replaced = dataclasses.replace(TABLEAUS["rk4"], b=(0.0, 0.0, 0.0, 1.0))
    monkeypatch.setitem(TABLEAUS, "rk4", replaced)
    assert make_stepper("rk4").tableau is replaced
