"""The step-size controller and the error norm, held to the formulas their docstrings state, and
the loop's use of them: every accepted step meets the tolerance, consecutive steps follow the PI
controller, and a step shortened to land on an output does not shrink the steps after it.

The accuracy tests elsewhere would pass with a looser controller too (a solution within its
tolerance says little about how the steps were chosen); these pin the choices themselves.
"""

from __future__ import annotations

import math

import pytest
import torch

import physode
from physode.solvers import Stats, Trace, integrate, make_stepper
from physode.solvers.control import (
    PIController,
    combined_ratio,
    error_ratio,
    initial_step,
    round_to_grid,
)
from physode.solvers.loop import time_maker
from physode.solvers.per_sample import PerSampleTrace, _initial_steps, integrate_per_sample

F64 = torch.float64


def _time(s: float) -> torch.Tensor:
    return torch.tensor(s, dtype=F64)


def test_the_pi_gains_of_dopri5_are_hairers_defaults():
    controller = PIController(q=5)  # error estimate of order 4, plus one
    assert controller.beta == pytest.approx(0.04, rel=1e-15)
    assert controller.alpha == pytest.approx(0.17, rel=1e-15)


@pytest.mark.parametrize("ratio, previous", [(0.5, 0.8), (0.01, 0.3), (0.9, 1e-6), (1e-9, 0.5)])
def test_after_an_accepted_step_the_factor_is_the_pi_formula(ratio, previous):
    expected = min(10.0, max(0.2, 0.9 * ratio**-0.17 * max(previous, 1e-4) ** 0.04))
    got = PIController(q=5).factor(ratio, previous, accepted=True)
    assert got == pytest.approx(expected, rel=1e-14)


@pytest.mark.parametrize("ratio", [1.0001, 1.3, 3.0, 1e6])
def test_after_a_rejection_the_factor_ignores_the_previous_ratio_and_never_grows(ratio):
    expected = min(1.0, max(0.2, 0.9 * ratio**-0.17))
    for previous in (1e-6, 0.5, 1.0):
        got = PIController(q=5).factor(ratio, previous, accepted=False)
        assert got == pytest.approx(expected, rel=1e-14)


def test_a_zero_error_grows_the_step_most_and_a_non_finite_one_shrinks_it_most():
    controller = PIController(q=5)
    assert controller.factor(0.0, 0.5, accepted=True) == 10.0
    assert controller.factor(math.inf, 0.5, accepted=False) == 0.2
    assert controller.factor(math.nan, 0.5, accepted=False) == 0.2


def test_per_row_factors_are_the_scalar_ones_rounded_to_1e_6():
    controller = PIController(q=5)
    cases = [(0.5, 0.8, True), (0.01, 0.3, True), (0.0, 0.5, True), (1.3, 0.5, False),
             (math.inf, 0.5, False), (math.nan, 0.5, False), (1e6, 1e-6, False)]  # fmt: skip
    ratio, previous, accepted = (torch.tensor(column) for column in zip(*cases))
    got = controller.factor_per_row(ratio.to(F64), previous.to(F64), accepted)
    expected = torch.tensor([controller.factor(*case) for case in cases], dtype=F64)
    torch.testing.assert_close(got, expected, rtol=0, atol=5.1e-7)


def test_the_error_scale_takes_the_larger_end_of_the_step():
    error = torch.tensor([1e-3], dtype=F64)
    zero, ten = torch.zeros(1, dtype=F64), torch.tensor([10.0], dtype=F64)
    expected = 1e-3 / (1e-6 + 1e-3 * 10.0)  # atol + rtol * max(|y0|, |y1|)
    for y0, y1 in ((zero, ten), (ten, zero), (-ten, zero)):
        got = error_ratio(error, None, y0, y1, rtol=1e-3, atol=1e-6).item()
        assert got == pytest.approx(expected, rel=1e-14)


def test_dop853s_two_estimates_combine_as_in_hairers_code():
    # err = e5 / sqrt(n (e5 + 0.01 e3)), e5 and e3 the sums of squares of the scaled estimates.
    e5, e3 = torch.tensor(4.0, dtype=F64), torch.tensor(900.0, dtype=F64)
    expected = 4.0 / math.sqrt(3 * (4.0 + 0.01 * 900.0))
    assert combined_ratio(e5, e3, 3).item() == pytest.approx(expected, rel=1e-14)


def _van_der_pol(t, y):
    x, v = y[..., 0], y[..., 1]
    return torch.stack([v, 5.0 * (1.0 - x * x) * v - x], dim=-1)


def _traced(func, y0, times, method="dopri5", tol=1e-6):
    stepper, stats, trace = make_stepper(method), Stats(), Trace()
    integrate(stepper, func, y0, times, rtol=tol, atol=tol, step_size=None, first_step=None,
              max_steps=10**5, stats=stats, trace=trace)  # fmt: skip
    ratios = []
    for t, h, y in zip(trace.t, trace.h, trace.y):
        step = stepper.step(func, t, y, h, func(_time(t), y), _time)
        ratios.append(error_ratio(step.error, step.error_low, y, step.y1, tol, tol).item())
    return stats, trace, ratios


@pytest.mark.parametrize("method", ["bosh3", "dopri5", "tsit5", "dop853"])
def test_every_accepted_step_meets_the_tolerance(method):
    # Van der Pol at mu = 5 makes the controller overshoot often: the acceptance test, not the
    # controller's aim, is what keeps the steps within the tolerance.
    y0 = torch.tensor([2.0, 0.0], dtype=F64)
    stats, _, ratios = _traced(_van_der_pol, y0, [0.0, 20.0], method)
    assert stats.n_rejected >= 3
    assert max(ratios) <= 1.0
    assert max(ratios) > 0.6  # steps come close to the limit, so a looser test would show


def test_consecutive_steps_follow_the_pi_controller():
    # A smooth rotation: no step is rejected, so each step is the last one times the PI factor
    # of the last two error ratios (the first after a ratio of 1, as if the step before fit).
    def rotation(t, y):
        return torch.stack([y[..., 1], -y[..., 0]], dim=-1)

    stats, trace, ratios = _traced(rotation, torch.tensor([1.0, 0.0], dtype=F64), [0.0, 10.0])
    assert stats.n_rejected == 0 and stats.n_steps >= 20
    controller = PIController(q=5)
    previous = [1.0, *ratios]
    for n in range(1, len(trace.h) - 1):  # the last step is shortened to land on t = 10
        expected = trace.h[n - 1] * controller.factor(ratios[n - 1], previous[n - 1], True)
        assert trace.h[n] == pytest.approx(expected, rel=1e-12), n


@pytest.mark.parametrize("step_control", ["shared", "per-sample"])
def test_a_step_shortened_to_land_on_an_output_does_not_shrink_the_steps_after_it(step_control):
    # dop853 lands on every output. Outputs at k and k + 1e-6 force a step of 1e-6 after each
    # k; the steps after it go on at the natural size instead of growing back from 1e-6.
    def decay(t, y):
        return -0.3 * y

    y0 = torch.ones(2, 1, dtype=F64)
    settings = {"method": "dop853", "rtol": 1e-8, "atol": 1e-8, "step_control": step_control}
    alone = physode.solve(decay, y0, [0.0, 10.0], **settings).stats.n_steps
    times = sorted([0.0, 10.0, *range(1, 10), *(k + 1e-6 for k in range(1, 10))])
    crowded = physode.solve(decay, y0, times, **settings).stats.n_steps
    assert bool(torch.as_tensor(crowded <= alone + 2 * 9 + 2).all()), (alone, crowded)


# ----------------------------------------------------------------------------- per-sample loop


def _traced_rows(func, y0, times, tol=1e-6, method="dopri5"):
    """A per-sample solve with its trace; per row, the accepted steps' sizes and error ratios."""
    stepper, stats, trace = make_stepper(method), Stats(), PerSampleTrace()
    integrate_per_sample(stepper, func, y0, times, rtol=tol, atol=tol, step_size=None,
                         first_step=None, max_steps=10**5, stats=stats, trace=trace)  # fmt: skip
    steps: dict[int, list[tuple[float, float]]] = {row: [] for row in range(y0.shape[0])}
    for rows, t, h, y, *_ in trace.steps:
        for row, t_row, h_row, y_row in zip(rows.tolist(), t.tolist(), h.tolist(), y):
            step = stepper.step(func, t_row, y_row, h_row, func(_time(t_row), y_row), _time)
            ratio = error_ratio(step.error, step.error_low, y_row, step.y1, tol, tol).item()
            steps[row].append((h_row, ratio))
    return stats, steps


def test_every_accepted_row_step_meets_the_tolerance():
    y0 = torch.tensor([[2.0, 0.0], [0.5, 1.0], [-1.0, 3.0]], dtype=F64)
    stats, steps = _traced_rows(_van_der_pol, y0, [0.0, 20.0])
    assert bool((stats.n_rejected >= 3).all())
    ratios = [ratio for row in steps.values() for _, ratio in row]
    assert max(ratios) <= 1.0 and max(ratios) > 0.6


def test_each_rows_consecutive_steps_follow_the_pi_controller():
    # As for the shared loop, with the per-row factors (rounded to 1e-6).
    def rotation(t, y):
        return torch.stack([y[..., 1], -y[..., 0]], dim=-1)

    y0 = torch.tensor([[1.0, 0.0], [0.0, 3.0]], dtype=F64)
    stats, steps = _traced_rows(rotation, y0, [0.0, 10.0])
    assert bool((stats.n_rejected == 0).all()) and bool((stats.n_steps >= 20).all())
    controller = PIController(q=5)
    for row in steps.values():
        h, ratios = zip(*row)
        previous = [1.0, *ratios]
        for n in range(1, len(h) - 1):  # the last step lands on t = 10
            factor = controller.factor_per_row(
                torch.tensor([ratios[n - 1]], dtype=F64),
                torch.tensor([previous[n - 1]], dtype=F64),
                torch.tensor([True]),
            ).item()
            assert h[n] == pytest.approx(h[n - 1] * factor, rel=1e-12), n


# ----------------------------------------------------------------------------- Opt-Disc


def test_opt_disc_seminorm_leaves_the_parameter_gradients_out_of_the_error_control():
    # Without the seminorm the gradients' own errors limit the backward steps too, so it takes
    # more of them; with it only the state and the adjoint do (Kidger et al., 2021).
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    net = net.double()
    nfe = {}
    for seminorm in (False, True):
        y0 = torch.randn(16, 2, dtype=F64, generator=torch.Generator().manual_seed(1))
        mode = physode.OptDisc(seminorm=seminorm)
        solution = physode.solve(lambda t, y: net(y), y0.requires_grad_(True), [0.0, 5.0],
                                 rtol=1e-5, atol=1e-5, gradient=mode)  # fmt: skip
        solution.ys[-1].sum().backward()
        nfe[seminorm] = solution.stats.nfe_backward
    assert nfe[True] < nfe[False], nfe  # 44 and 56 when written


# ----------------------------------------------------------------------------- first step


def _first_step(func, y0: float, rtol=1e-6, atol=1e-6, order=5):
    y = torch.tensor([y0], dtype=F64)
    f0 = func(_time(0.0), y)
    return initial_step(func, 0.0, y, f0, 1.0, order, rtol, atol, _time)


def test_the_first_step_follows_hairers_algorithm():
    # Hairer, Norsett & Wanner I, II.4 for y' = -y^3, y(0) = 1, order 5, rtol = atol = 1e-6.
    scale = 1e-6 + 1e-6 * 1.0
    d0 = d1 = 1.0 / scale
    h0 = 0.01 * d0 / d1
    f1 = -((1.0 - h0) ** 3)
    d2 = abs(f1 + 1.0) / scale / h0
    expected = min(100 * h0, (0.01 / max(d1, d2)) ** (1 / 6))
    assert _first_step(lambda t, y: -(y**3), 1.0) == pytest.approx(expected, rel=1e-12)


def test_the_first_step_grows_at_most_a_hundredfold_from_its_trial():
    # From y = 0 the trial step is 1e-6; the estimate, 10^(1/6), is capped at 100 times that.
    step = _first_step(lambda t, y: torch.full_like(y, 1e-9), 0.0)
    assert step == pytest.approx(1e-4, rel=1e-12)


def test_per_sample_first_steps_are_the_shared_loops_row_by_row():
    def cubic(t, y):
        return -(y**3)

    y = torch.tensor([[1.0], [0.3], [2.0], [0.0]], dtype=F64)
    t = torch.zeros(4, dtype=F64)
    got = _initial_steps(cubic, t, y, cubic(t[:, None], y), 1.0, 5, 1e-6, 1e-6, (-1, 1))
    for row in range(4):
        # Rounded to 24 bits of mantissa, to keep each row's steps independent of its batch.
        shared = round_to_grid(torch.tensor(_first_step(cubic, y[row, 0].item()), dtype=F64))
        assert got[row].item() == shared.item()


def test_a_first_step_whose_trial_derivative_is_infinite_is_the_trial_step_per_sample_too():
    # f1 is inf at the trial point: the shared loop takes the trial step h0; per sample the
    # estimate (0.01 / inf) ** (1 / 6) = 0 made it a step of nothing, which underflowed at once.
    def poisoned_after_t0(t, y):
        return -y + torch.where(t > 0, math.inf, 0.0)

    y = torch.tensor([[1.0], [0.3]], dtype=F64)
    t = torch.zeros(2, dtype=F64)
    f0 = poisoned_after_t0(t[:, None], y)
    got = _initial_steps(poisoned_after_t0, t, y, f0, 1.0, 5, 1e-6, 1e-6, (-1, 1))
    for row in range(2):
        shared = _first_step(poisoned_after_t0, y[row, 0].item())
        assert shared == pytest.approx(0.01, rel=1e-12)  # h0 = 0.01 d0 / d1 with f0 = -y0
        assert got[row].item() == round_to_grid(torch.tensor(shared, dtype=F64)).item()


@pytest.mark.parametrize("per_sample", [False, True], ids=["shared", "per-sample"])
def test_the_first_step_is_finite_where_the_squares_of_the_scaled_derivative_overflow(per_sample):
    # In float32, |dy/dt| / atol = 4e11 / 1e-8 squares to inf: the norm of f0 was inf and the
    # solve stopped before its first step as "non-finite", though func returned finite values.
    def ringing(t, y):
        return torch.stack([1e9 * y[..., 1], -4e11 * y[..., 0]], dim=-1)

    def first_steps(y: torch.Tensor) -> torch.Tensor:
        if per_sample:
            t = torch.zeros(2, dtype=y.dtype)
            f0 = ringing(t[:, None], y)
            return _initial_steps(ringing, t, y, f0, 1.0, 5, 1.2e-7, 1e-8, (-1, 1))
        time = time_maker(y)
        step = initial_step(ringing, 0.0, y, ringing(time(0.0), y), 1.0, 5, 1.2e-7, 1e-8, time)
        return torch.tensor([step])

    rows = torch.tensor([[1.0, 0.0], [0.5, 0.0]])
    steps = [first_steps(rows), first_steps(rows.double())]
    assert torch.isfinite(steps[0]).all() and (steps[0] > 0).all()
    torch.testing.assert_close(steps[0].double(), steps[1].double(), rtol=1e-5, atol=0)


@pytest.mark.parametrize("atol", [1e-200, 5e-324])
def test_a_float64_solve_with_an_atol_far_below_a_zero_components_derivative_runs(atol):
    # Pure relative control, as near as a positive atol comes: v = 0 at t0 with dv/dt = -1 made
    # |f0| / atol 1e200 (its square, and 2**-100 of it squared, overflow) or inf (1 / 5e-324):
    # the solve stopped before its first step as "non-finite", though func returned finite values.
    def oscillator(t, y):
        return torch.stack([y[1], -y[0]])

    y0 = torch.tensor([1.0, 0.0], dtype=F64)
    sol = physode.solve(oscillator, y0, [0.0, 2.0], atol=atol, throw=False)
    assert sol.status is physode.Status.SUCCESS, sol.message
    exact = torch.tensor([math.cos(2.0), -math.sin(2.0)], dtype=F64)
    torch.testing.assert_close(sol.ys[-1], exact, rtol=0, atol=1e-5)


@pytest.mark.parametrize("step_control", ["shared", "per-sample"])
def test_a_float32_solve_with_a_derivative_of_4e11_from_a_zero_component_runs(step_control):
    # The ringing oscillator of the unit time scale, on a nanosecond one: dv/dt = -4e11 at v = 0.
    def ringing(rate):
        def field(t, y):
            x, v = y[..., 0], y[..., 1]
            return torch.stack([rate * v, rate * (-400.0 * x - 0.5 * v)], dim=-1)

        return field

    y0 = torch.tensor([[1.0, 0.0], [0.5, 0.0]])
    unit = physode.solve(ringing(1.0), y0, [0.0, 5.0], step_control=step_control)
    sol = physode.solve(ringing(1e9), y0, [0.0, 5e-9], step_control=step_control)
    assert sol.success
    torch.testing.assert_close(sol.ys[-1], unit.ys[-1], rtol=1e-3, atol=1e-3)


# ----------------------------------------------------------------------------- max_step

CAP = 0.01
# A step that ends within the landing slack (1e-9 of it) of an output is stretched to land on
# it, and every step is the difference of two rounded times: the cap holds to that much.
CAP_SLACK = 1e-9


def _decay(t, y):
    return -0.5 * y


def _steps(func, y0, times, method, **options):
    """The sizes of the accepted steps of one solve by the shared loop, and its counters."""
    settings = {"rtol": 1e-6, "atol": 1e-8, "step_size": None, "first_step": None}
    stepper, stats, trace = make_stepper(method), Stats(), Trace()
    integrate(stepper, func, y0, times, max_steps=10**5, stats=stats, trace=trace,
              **{**settings, **options})  # fmt: skip
    return [abs(h) for h in trace.h], stats


@pytest.mark.parametrize("times", [[0.0, 0.5, 1.0, 2.0], [2.0, 1.0, 0.0]], ids=["fwd", "bwd"])
@pytest.mark.parametrize("method", ["heun", "bosh3", "dopri5", "tsit5", "dop853"])
def test_no_accepted_step_is_longer_than_max_step_the_first_included(method, times):
    y0 = torch.tensor([1.0, -2.0], dtype=F64)
    free, _ = _steps(_decay, y0, times, method)
    # A cap that binds from the first step on: left alone, the automatic first step is four
    # times as long.
    cap = min(CAP, free[0] / 4)
    capped, stats = _steps(_decay, y0, times, method, max_step=cap)
    assert max(capped) <= cap * (1 + CAP_SLACK)
    assert capped[0] == pytest.approx(cap, rel=CAP_SLACK)
    # The steps are the cap itself where the tolerance allows more, not some fraction of it.
    assert stats.n_rejected == 0 and stats.n_steps <= 2.0 / cap + 3


def test_a_first_step_below_max_step_is_taken_as_given():
    y0 = torch.tensor([1.0], dtype=F64)
    steps, _ = _steps(_decay, y0, [0.0, 1.0], "dopri5", first_step=1e-3, max_step=CAP)
    assert steps[0] == 1e-3 and max(steps) <= CAP * (1 + CAP_SLACK)


# Methods that land on every output; heun's rtol lets it take the cap where it is not short.
@pytest.mark.parametrize(("method", "rtol"), [("heun", 1e-4), ("dop853", 1e-6)])
def test_a_step_shortened_to_land_on_an_output_under_max_step_stays_short(method, rtol):
    # An output 1e-6 after t = 0.5: the step landing there is 1e-6 long, and the next is the
    # cap again (the landing neither stretches to the cap nor shrinks the steps after it).
    times = [0.0, 0.5, 0.5 + 1e-6, 1.0]
    steps, stats = _steps(_decay, torch.ones(1, dtype=F64), times, method, max_step=CAP,
                          rtol=rtol)  # fmt: skip
    assert min(steps) == pytest.approx(1e-6, rel=1e-6)
    assert max(steps) <= CAP * (1 + CAP_SLACK) and stats.n_steps <= 1.0 / CAP + 4


@pytest.mark.parametrize("step_control", ["shared", "per-sample"])
def test_solve_passes_max_step_to_the_loop_and_its_steps_span_the_interval(step_control):
    y0 = torch.tensor([[1.0, 0.0], [0.5, 1.0]], dtype=F64)
    free = physode.solve(_van_der_pol, y0, [0.0, 2.0], step_control=step_control)
    capped = physode.solve(_van_der_pol, y0, [0.0, 2.0], step_control=step_control, max_step=CAP)
    # At least 2 / CAP steps of at most CAP each, where the tolerance alone needed far fewer.
    assert bool(torch.as_tensor(free.stats.n_steps < 0.5 * 2.0 / CAP).all())
    assert bool(torch.as_tensor(capped.stats.n_steps >= 2.0 / CAP).all())
    assert bool(torch.as_tensor(capped.stats.n_steps <= 2.0 / CAP + 3).all())
    torch.testing.assert_close(capped.ys, free.ys, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("method", ["bosh3", "dopri5", "dop853"])
def test_max_step_caps_each_rows_steps_per_sample(method):
    y0 = torch.tensor([[2.0, 0.0], [0.5, 1.0], [-1.0, 3.0]], dtype=F64)
    stepper, steps, cap = make_stepper(method), {}, 0.02
    for max_step in (None, cap):
        stats, trace = Stats(), PerSampleTrace()
        integrate_per_sample(stepper, _van_der_pol, y0, [0.0, 1.0, 3.0], rtol=1e-6, atol=1e-6,
                             step_size=None, first_step=None, max_steps=10**5, stats=stats,
                             trace=trace, max_step=max_step)  # fmt: skip
        steps[max_step] = {row: [] for row in range(3)}
        for rows, _, h, *_ in trace.steps:
            for row, h_row in zip(rows.tolist(), h.abs().tolist()):
                steps[max_step][row].append(h_row)
    for row in range(3):
        assert max(steps[None][row]) > 1.5 * cap  # the cap binds in every row
        assert steps[cap][row][0] <= cap
        assert max(steps[cap][row]) <= cap * (1 + CAP_SLACK)
        assert len(steps[cap][row]) >= 3.0 / cap


@pytest.mark.parametrize("step_control", ["shared", "per-sample"])
@pytest.mark.parametrize("method", ["bosh3", "dopri5", "tsit5", "dop853"])
def test_a_max_step_that_never_binds_changes_no_bit_of_the_solve(method, step_control):
    # No cap and a cap longer than any step take the same steps as a solve without the option,
    # bit for bit: the cap adds no rounding and moves no decision.
    y0 = torch.tensor([[2.0, 0.0], [0.5, 1.0]], dtype=F64)
    times = torch.linspace(0.0, 10.0, 11, dtype=F64)
    runs = [
        physode.solve(_van_der_pol, y0, times, method=method, step_control=step_control, **cap)
        for cap in ({}, {"max_step": None}, {"max_step": 1e300})
    ]
    for sol in runs[1:]:
        assert torch.equal(sol.ys, runs[0].ys)
        for name in ("n_steps", "n_rejected", "nfe"):
            assert torch.equal(
                torch.as_tensor(getattr(sol.stats, name)),
                torch.as_tensor(getattr(runs[0].stats, name)),
            )
        assert torch.equal(torch.as_tensor(sol.h_final), torch.as_tensor(runs[0].h_final))
