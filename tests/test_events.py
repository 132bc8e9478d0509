"""Terminal events (physode.odeint_event): where they are found, their gradients, and failures."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.integrate import solve_ivp

import physode

torch.set_num_threads(1)

G = 9.81
F64 = torch.float64
ADAPTIVE = ["dopri5", "bosh3", "tsit5", "dop853", "heun"]
GRADIENTS = ["aca", "disc-opt", "opt-disc"]


def fall(t, y):
    """A body falling under gravity: y = [height, velocity]."""
    return torch.stack([y[..., 1], torch.full_like(y[..., 0], -G)], dim=-1)


def height(t, y):
    return y[0]


def oscillator(t, y):
    """x'' = -x: from x = 1 at rest, x = cos t."""
    return torch.stack([y[..., 1], -y[..., 0]], dim=-1)


def landing_time(h0: float, v0: float) -> float:
    return (v0 + math.sqrt(v0 * v0 + 2 * G * h0)) / G


class Gravity(torch.nn.Module):
    """Free fall with a learnable gravity."""

    def __init__(self, g: float = G):
        super().__init__()
        self.g = torch.nn.Parameter(torch.tensor(g, dtype=F64))

    def forward(self, t, y):
        return torch.stack([y[..., 1], -self.g * torch.ones_like(y[..., 0])], dim=-1)


@pytest.mark.parametrize(
    ("method", "options"),
    [(m, {}) for m in ADAPTIVE] + [("rk4", {"step_size": 0.1}), ("midpoint", {"step_size": 0.1})],
)
def test_a_falling_body_lands_at_the_closed_form_time(method, options):
    y0 = torch.tensor([10.0, 2.0], dtype=F64)
    t_event, ys = physode.odeint_event(fall, y0, 0.0, height, method=method, **options)
    t_exact = landing_time(10.0, 2.0)
    # A quadratic trajectory: every method of order 2 and up, and each interpolant, is exact.
    assert abs(t_event.item() - t_exact) < 1e-12
    assert ys.shape == (2, 2)
    assert torch.equal(ys[0], y0)
    assert abs(ys[1, 0].item()) < 1e-11
    assert abs(ys[1, 1].item() - (2.0 - G * t_exact)) < 1e-10


@pytest.mark.parametrize("method", ["dopri5", "dop853", "tsit5", "bosh3"])
def test_an_oscillator_crosses_zero_at_a_quarter_period(method):
    y0 = torch.tensor([1.0, 0.0], dtype=F64)
    sol = physode.odeint_event(oscillator, y0, 0.0, height, method=method, rtol=1e-10, atol=1e-12)
    assert sol.found and sol.success and sol.status is physode.Status.SUCCESS
    assert abs(sol.t_event.item() - math.pi / 2) < 1e-8
    assert abs(sol.ys[1, 1].item() + 1.0) < 1e-8
    assert sol.t_final == pytest.approx(sol.t_event.item(), abs=1e-12)
    assert sol.gradient_stats is None  # nothing requires grad: one solve only


@pytest.mark.parametrize("gradient", ["aca", "disc-opt", "opt-disc"])
@pytest.mark.parametrize("tuple_state", [False, True])
def test_a_state_made_under_inference_mode_starts_a_differentiated_event_search(
    gradient, tuple_state
):
    # As for solve: the event time's gradient failed with 'Inference tensors cannot be saved
    # for backward' where y0 came from torch.inference_mode() (a rollout made there).
    w = torch.tensor(1.0, dtype=F64, requires_grad=True)
    with torch.inference_mode():
        y0 = torch.tensor([1.0, 0.0], dtype=F64)
        start = (y0[:1], y0[1:]) if tuple_state else y0
    if tuple_state:
        sol = physode.odeint_event(lambda t, y: (y[1], -w * y[0]), start, 0.0,
                                   lambda t, y: y[0][0], gradient=gradient)  # fmt: skip
    else:
        sol = physode.odeint_event(lambda t, y: torch.stack([y[1], -w * y[0]]), start, 0.0,
                                   lambda t, y: y[0], gradient=gradient)  # fmt: skip
    sol.t_event.backward()
    # t = pi / (2 sqrt(w)): dt/dw = -pi / 4 at w = 1
    assert sol.t_event.item() == pytest.approx(math.pi / 2, abs=1e-6)
    assert w.grad.item() == pytest.approx(-math.pi / 4, abs=1e-5)


@pytest.mark.parametrize(("direction", "expected"), [(0, 0.5), (-1, 0.5), (1, 1.5)])
def test_direction_passes_over_crossings_the_other_way(direction, expected):
    y0 = torch.tensor([1.0, 0.0], dtype=F64)
    t_event, _ = physode.odeint_event(
        oscillator, y0, 0.0, height, direction=direction, rtol=1e-10, atol=1e-12
    )
    assert abs(t_event.item() - expected * math.pi) < 1e-8


def test_a_start_on_zero_is_not_an_event():
    # x = sin t: zero at t0, the event is the next crossing at pi.
    y0 = torch.tensor([0.0, 1.0], dtype=F64)
    t_event, _ = physode.odeint_event(oscillator, y0, 0.0, height, rtol=1e-10, atol=1e-12)
    assert abs(t_event.item() - math.pi) < 1e-8


def test_backward_in_time_finds_the_crossing_before_t0():
    y0 = torch.tensor([1.0, 0.0], dtype=F64)
    t_event, ys = physode.odeint_event(
        oscillator, y0, 0.0, height, t_max=-5.0, rtol=1e-10, atol=1e-12
    )
    assert abs(t_event.item() + math.pi / 2) < 1e-8
    assert abs(ys[1, 1].item() - 1.0) < 1e-8  # v = -sin t = 1 at t = -pi/2


@pytest.mark.parametrize("direction", [1, -1])
def test_backward_in_time_direction_is_as_the_search_runs_as_in_scipy(direction):
    # x = 0.5 cos t + 0.3 sin t: going back from 0, x first falls through zero, later rises.
    def event(t, y):
        return y[0]

    event.terminal, event.direction = True, direction
    y0 = [0.5, 0.3]
    reference = solve_ivp(
        lambda t, y: [y[1], -y[0]], (0.0, -10.0), y0, events=event, rtol=1e-12, atol=1e-12
    ).t_events[0][0]
    t_event, _ = physode.odeint_event(
        oscillator, torch.tensor(y0, dtype=F64), 0.0, height, t_max=-10.0,
        direction=direction, rtol=1e-10, atol=1e-12,
    )  # fmt: skip
    assert abs(t_event.item() - reference) < 1e-8


def test_a_pendulum_reaches_the_vertical_when_scipy_says():
    system = physode.systems.load("damped_pendulum")
    func = system.vector_field()
    y0 = torch.tensor([2.5, 0.0], dtype=F64)

    def numpy_rhs(t, y):
        return func(torch.tensor(t, dtype=F64), torch.from_numpy(y)).numpy()

    def vertical(t, y):
        return y[0]

    vertical.terminal = True
    reference = solve_ivp(
        numpy_rhs, (0.0, 20.0), y0.numpy(), method="DOP853", rtol=1e-12, atol=1e-12,
        events=vertical,
    )  # fmt: skip
    t_scipy = reference.t_events[0][0]
    t_event, ys = physode.odeint_event(
        func, y0, 0.0, height, t_max=20.0, method="dop853", rtol=1e-11, atol=1e-12
    )
    assert abs(t_event.item() - t_scipy) < 1e-8
    assert torch.allclose(ys[1], torch.from_numpy(reference.y_events[0][0]), atol=1e-8, rtol=0)


def test_a_batch_has_one_event_when_its_first_row_lands():
    y0 = torch.tensor([[10.0, 0.0], [5.0, 0.0], [20.0, 1.0]], dtype=F64)
    t_event, ys = physode.odeint_event(fall, y0, 0.0, lambda t, y: y[:, 0].min())
    assert abs(t_event.item() - landing_time(5.0, 0.0)) < 1e-12
    assert ys.shape == (2, 3, 2)
    assert abs(ys[1, 1, 0].item()) < 1e-11


@pytest.mark.parametrize("gradient", GRADIENTS)
def test_the_landing_time_has_the_closed_form_gradient(gradient):
    h0, v0 = 10.0, 2.0
    func = Gravity()
    y0 = torch.tensor([h0, v0], dtype=F64, requires_grad=True)
    sol = physode.odeint_event(func, y0, 0.0, height, gradient=gradient, rtol=1e-10, atol=1e-12)
    t_event, ys = sol
    root = math.sqrt(v0 * v0 + 2 * G * h0)
    d_h0, d_v0 = 1 / root, (1 + v0 / root) / G
    d_g = -landing_time(h0, v0) / G + (h0 / root) / G  # d/dg of (v0 + root) / g
    grads = torch.autograd.grad(t_event, [y0, func.g], retain_graph=True)
    assert grads[0].tolist() == pytest.approx([d_h0, d_v0], rel=1e-7)
    assert grads[1].item() == pytest.approx(d_g, rel=1e-7)
    # The velocity at landing, v0 - g t: its gradient includes the event time's.
    (v_grad,) = torch.autograd.grad(ys[1, 1], [y0])
    assert v_grad.tolist() == pytest.approx([-G * d_h0, 1 - G * d_v0], rel=1e-7)
    assert sol.gradient_stats is not None and sol.gradient_stats.n_steps > 0


def test_a_parameter_of_event_fn_gets_its_gradient():
    # Landing on a floor at height b: t = (v0 + sqrt(v0^2 + 2 g (h0 - b))) / g.
    floor = torch.tensor(1.0, dtype=F64, requires_grad=True)
    y0 = torch.tensor([10.0, 0.0], dtype=F64)
    t_event, ys = physode.odeint_event(fall, y0, 0.0, lambda t, y: y[0] - floor)
    t_event.backward()
    assert t_event.item() == pytest.approx(landing_time(9.0, 0.0), rel=1e-12)
    assert floor.grad.item() == pytest.approx(-1 / math.sqrt(2 * G * 9.0), rel=1e-9)


class Pendulum(torch.nn.Module):
    """A damped pendulum with learnable stiffness and damping, for the gradient checks."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor([4.0, 0.3], dtype=F64))

    def forward(self, t, y):
        q, v = y[..., 0], y[..., 1]
        return torch.stack([v, -self.w[0] * torch.sin(q) - self.w[1] * v], dim=-1)


def _event_loss(func, y0, gradient, **options):
    t_event, ys = physode.odeint_event(
        func, y0, 0.0, lambda t, y: y[0] - 0.2 * t, gradient=gradient, **options
    )
    return t_event + ys[1].square().sum()


@pytest.mark.parametrize("gradient", GRADIENTS)
def test_the_event_gradient_matches_central_differences(gradient):
    func = Pendulum()
    y0 = torch.tensor([1.0, 0.5], dtype=F64, requires_grad=True)
    options = {"rtol": 1e-11, "atol": 1e-12, "method": "dop853"}
    loss = _event_loss(func, y0, gradient, **options)
    grads = torch.cat([g.flatten() for g in torch.autograd.grad(loss, [y0, func.w])])
    eps = 1e-6
    numeric = []
    with torch.no_grad():
        for tensor in (y0, func.w):
            for i in range(tensor.numel()):
                values = []
                for sign in (1, -1):
                    tensor[i] += sign * eps
                    values.append(_event_loss(func, y0, gradient, **options).item())
                    tensor[i] -= sign * eps
                numeric.append((values[0] - values[1]) / (2 * eps))
    assert grads.tolist() == pytest.approx(numeric, rel=1e-6, abs=1e-8)


def test_the_event_gradient_passes_a_taylor_test():
    func = Pendulum()
    y0 = torch.tensor([1.0, 0.5], dtype=F64, requires_grad=True)
    options = {"rtol": 1e-12, "atol": 1e-13, "method": "dop853"}
    loss = _event_loss(func, y0, "aca", **options)
    grad = torch.autograd.grad(loss, [func.w])[0]
    direction = torch.tensor([0.6, -0.8], dtype=F64)
    base = func.w.detach().clone()
    e1 = []
    for h in (1e-2, 5e-3, 2.5e-3):
        with torch.no_grad():
            func.w.copy_(base + h * direction)
            shifted = _event_loss(func, y0.detach(), "aca", **options).item()
        e1.append(abs(shifted - loss.item() - h * (grad @ direction).item()))
    with torch.no_grad():
        func.w.copy_(base)
    orders = [math.log2(e1[i] / e1[i + 1]) for i in range(2)]
    assert all(abs(order - 2.0) < 0.2 for order in orders), orders


@pytest.mark.parametrize("rows", [False, True], ids=["one-event", "per-row"])
def test_a_second_derivative_through_the_event_is_refused_not_wrong(rows):
    # The Newton step at the event holds dg/dt constant: with Disc-Opt, d2/dw2 of this loss
    # came out silently wrong (the first derivative had a graph, without the rate's terms),
    # and where the step left no graph the caller got torch's bare "does not require grad".
    func = Pendulum()
    y0 = torch.tensor([[1.0, 0.5], [0.8, 0.4]] if rows else [1.0, 0.5], dtype=F64)
    t_event, ys = physode.odeint_event(
        func, y0, 0.0, lambda t, y: y[..., 0] - 0.2 * t, gradient="disc-opt", method="rk4",
        step_size=0.05,
    )  # fmt: skip
    loss = (t_event + ys[1].square().sum(-1)).sum()
    with pytest.raises(physode.UnsupportedError, match="create_graph=True.*Newton step"):
        torch.autograd.grad(loss, [func.w], create_graph=True)
    # A first derivative is unchanged (test_the_event_gradient_matches_central_differences).
    assert torch.autograd.grad(loss, [func.w])[0].isfinite().all()


def test_the_gradient_modes_agree_with_one_another():
    results = []
    for gradient in GRADIENTS:
        func = Pendulum()
        y0 = torch.tensor([1.0, 0.5], dtype=F64, requires_grad=True)
        loss = _event_loss(func, y0, gradient, rtol=1e-10, atol=1e-12)
        results.append(torch.cat([g.flatten() for g in torch.autograd.grad(loss, [y0, func.w])]))
    # ACA and Disc-Opt differentiate the same steps; Opt-Disc's adjoint is close.
    assert torch.allclose(results[0], results[1], rtol=1e-12, atol=0)
    assert torch.allclose(results[0], results[2], rtol=1e-6, atol=0)


def test_float32_finds_the_event_and_its_gradient():
    y0 = torch.tensor([10.0, 0.0], dtype=torch.float32, requires_grad=True)
    t_event, ys = physode.odeint_event(fall, y0, 0.0, height, rtol=1e-6, atol=1e-7)
    assert t_event.dtype == torch.float32 and ys.dtype == torch.float32
    assert t_event.item() == pytest.approx(landing_time(10.0, 0.0), rel=1e-6)
    t_event.backward()
    assert y0.grad[0].item() == pytest.approx(1 / math.sqrt(2 * G * 10.0), rel=1e-5)


def test_no_event_before_t_max_raises_with_the_time_reached():
    y0 = torch.tensor([10.0, 0.0], dtype=F64)
    with pytest.raises(physode.SolverError, match="no event before t_max=1.0") as info:
        physode.odeint_event(fall, y0, 0.0, height, t_max=1.0)
    assert info.value.t == 1.0
    assert "Extend t_max" in str(info.value)
    assert not info.value.solution.found


def test_no_event_with_throw_false_returns_nan_and_says_why():
    y0 = torch.tensor([10.0, 0.0], dtype=F64)
    sol = physode.odeint_event(fall, y0, 0.0, height, t_max=1.0, throw=False)
    assert not sol.found and not sol.success
    assert math.isnan(sol.t_event.item()) and torch.isnan(sol.ys[1]).all()
    assert torch.equal(sol.ys[0], y0)
    assert sol.t_final == 1.0 and "no event" in sol.message


def test_a_search_without_t_max_stops_at_max_steps():
    y0 = torch.tensor([1.0, 0.0], dtype=F64)
    with pytest.raises(physode.SolverError, match="max_steps=20") as info:
        physode.odeint_event(oscillator, y0, 0.0, lambda t, y: y[0] - 5.0, max_steps=20)
    assert info.value.status is physode.Status.MAX_STEPS
    assert info.value.t > 0.0


@pytest.mark.parametrize(
    ("event_fn", "match"),
    [
        (lambda t, y: y, r"0-dim tensor .* got shape \(2,\)"),
        (lambda t, y: 1.0, "0-dim tensor .* got float; a Python number .* e.g. y.0. - 1.0"),
        (lambda t, y: float(y[0]), r"got float; a Python number \(from .item\(\) or float"),
        (lambda t, y: y[0:1], r"got shape \(1,\): one value, .*\(y\[0\], not y\[0:1\]\)"),
        (lambda t, y: y[None, :1], r"got shape \(1, 1\): .* g.squeeze\(\)"),
        (lambda t, y: (y[0] > 0).long(), "floating point"),
        (lambda t, y: y[0] / 0.0 * 0.0, "returned nan"),
    ],
)
def test_a_bad_event_fn_output_is_refused(event_fn, match):
    y0 = torch.tensor([1.0, 0.0], dtype=F64)
    with pytest.raises(physode.InvalidArgumentError, match=match):
        physode.odeint_event(oscillator, y0, 0.0, event_fn)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"direction": 2}, "direction must be 0"),
        ({"t_max": 0.0}, "t_max must differ from t0"),
        ({"method": "rk45"}, "unknown method 'rk45'"),
        ({"method": "rk4"}, "step_size"),
        ({"gradient": "adjoint"}, "unknown gradient"),
        ({"reverse_time": True}, "t_max < t0"),
        ({"step_control": "per-sample"}, r"one value per row from event_fn, shape \(batch,\)"),
        ({"max_step": 0.0}, "max_step must be positive and finite, got 0.0"),
        ({"first_step": 0.2, "max_step": 0.1}, "first_step=0.2 is longer than max_step=0.1"),
        ({"method": "rk4", "step_size": 0.1, "max_step": 0.1}, "max_step=0.1 is for adaptive"),
    ],
)
def test_bad_settings_are_refused_with_the_choices(options, match):
    y0 = torch.tensor([1.0, 0.0], dtype=F64)
    with pytest.raises(physode.InvalidArgumentError, match=match):
        physode.odeint_event(oscillator, y0, 0.0, height, **options)


# x = sin t reaches 0.9999 at asin(0.9999) and falls below it 0.028 later: the steps that
# rtol=1e-6 allows there are longer, and both sign changes fall within one of them, between two
# of the candidate points where dop853 also evaluates event_fn. It reaches 0.99999 and falls
# below it 0.0089 later, less than a fifth of those steps: between two of the points inside the
# step where a method with dense output also evaluates event_fn.
NEAR_TOP, NEARER_TOP = 0.9999, 0.99999


@pytest.mark.parametrize(("method", "mark"),
                         [("dopri5", NEARER_TOP), ("tsit5", NEARER_TOP), ("dop853", NEAR_TOP)])
def test_two_crossings_within_one_step_are_missed_and_max_step_finds_the_first(method, mark):
    y0 = torch.tensor([0.0, 1.0], dtype=F64)

    def event_fn(t, y):
        return y[0] - mark

    options = {"t_max": 3.0, "method": method, "throw": False}
    missed = physode.odeint_event(oscillator, y0, 0.0, event_fn, **options)
    assert not missed.found
    with pytest.raises(physode.SolverError, match="max_step=... caps the steps"):
        physode.odeint_event(oscillator, y0, 0.0, event_fn, t_max=3.0, method=method)
    y0.requires_grad_(True)
    sol = physode.odeint_event(oscillator, y0, 0.0, event_fn, **options, max_step=0.02)
    assert sol.found
    t_event = math.asin(mark)
    assert sol.t_event.item() == pytest.approx(t_event, abs=1e-7)
    # The solve for the gradient takes the search's capped steps too (1.56 / 0.02, not 18).
    assert sol.gradient_stats.n_steps >= t_event / 0.02
    # x = v0 sin t: dt/dv0 = -mark / cos(t_event) at v0 = 1.
    (grad,) = torch.autograd.grad(sol.t_event, [y0])
    assert grad[1].item() == pytest.approx(-mark / math.cos(t_event), rel=1e-4)


@pytest.mark.parametrize("gradient", GRADIENTS)
def test_max_step_caps_the_per_row_search_and_the_solve_for_the_gradient(gradient):
    # Rows of amplitudes 1 and 2 cross NEAR_TOP times their amplitude at t = asin(NEAR_TOP) / w,
    # so dt/dw = -asin(NEAR_TOP) / w^2 in each row.
    w = torch.tensor(1.0, dtype=F64, requires_grad=True)
    amplitude = torch.tensor([1.0, 2.0], dtype=F64)
    y0 = torch.stack([torch.zeros(2, dtype=F64), amplitude], dim=-1)

    def event_fn(t, y):
        return y[:, 0] - NEAR_TOP * amplitude

    def field(t, y):
        return w * oscillator(t, y)

    options = {"t_max": 3.0, "gradient": gradient, "throw": False}
    sol = physode.odeint_event(field, y0, 0.0, event_fn, **options, max_step=0.02)
    assert bool(sol.found.all())
    expected = math.asin(NEAR_TOP)
    torch.testing.assert_close(sol.t_event, torch.full((2,), expected, dtype=F64), rtol=1e-7,
                               atol=0)  # fmt: skip
    (grad,) = torch.autograd.grad(sol.t_event.sum(), [w])
    assert grad.item() == pytest.approx(-2 * expected, rel=1e-5)
    # The search and the solve for the gradient take capped steps: 1.56 / 0.02, not 11.
    assert sol.stats.n_steps >= expected / 0.02
    assert sol.gradient_stats.n_steps >= expected / 0.02


# A ball thrown up at 5 m/s from the floor rises past a mark 1 m up and falls back below it
# within one step of dopri5, tsit5 or bosh3, which solve its quadratic path exactly and so take
# long steps: the ends of that step are both below the mark.
MARK, THROW = 1.0, 5.0


def passing_times(v0: float) -> tuple[float, float]:
    """When a ball thrown up at v0 from the floor rises past MARK, and when it falls past it."""
    root = math.sqrt(v0 * v0 - 2 * G * MARK)
    return (v0 - root) / G, (v0 + root) / G


@pytest.mark.parametrize("method", ["dopri5", "bosh3", "tsit5"])
@pytest.mark.parametrize(("direction", "crossing"), [(0, 0), (1, 0), (-1, 1)])
def test_two_crossings_within_one_step_are_found_on_the_dense_output(method, direction, crossing):
    y0 = torch.tensor([0.0, THROW], dtype=F64, requires_grad=True)
    sol = physode.odeint_event(fall, y0, 0.0, lambda t, y: y[0] - MARK, t_max=3.0,
                               method=method, direction=direction)  # fmt: skip
    assert sol.stats.n_steps <= 4  # both crossings fell within its steps' last
    t_event = passing_times(THROW)[crossing]
    assert sol.t_event.item() == pytest.approx(t_event, abs=1e-12)
    assert sol.ys[1, 0].item() == pytest.approx(MARK, abs=1e-12)
    # t = (v0 -+ sqrt(v0^2 - 2 g MARK)) / g: dt/dv0 = (1 -+ v0 / sqrt(...)) / g.
    sign = 1 if crossing else -1
    (grad,) = torch.autograd.grad(sol.t_event, [y0])
    root = math.sqrt(THROW * THROW - 2 * G * MARK)
    assert grad[1].item() == pytest.approx((1 + sign * THROW / root) / G, rel=1e-9)


@pytest.mark.parametrize("method", ["dopri5", "bosh3", "tsit5"])
def test_each_row_s_two_crossings_within_one_step_are_found_on_the_dense_output(method):
    throws = [THROW, 6.0, 8.0]  # 6 m/s crosses twice within one step too, 8 m/s does not
    y0 = torch.tensor([[0.0, v] for v in throws], dtype=F64, requires_grad=True)
    sol = physode.odeint_event(fall, y0, 0.0, lambda t, y: y[:, 0] - MARK, t_max=3.0,
                               method=method)  # fmt: skip
    assert sol.found.tolist() == [True] * 3
    expected = torch.tensor([passing_times(v)[0] for v in throws], dtype=F64)
    torch.testing.assert_close(sol.t_event, expected, rtol=0, atol=1e-12)
    (grad,) = torch.autograd.grad(sol.t_event.sum(), [y0])
    roots = torch.sqrt(torch.tensor(throws, dtype=F64) ** 2 - 2 * G * MARK)
    torch.testing.assert_close(grad[:, 1], (1 - torch.tensor(throws, dtype=F64) / roots) / G)
    falls = physode.odeint_event(fall, y0.detach(), 0.0, lambda t, y: y[:, 0] - MARK,
                                 t_max=3.0, method=method, direction=-1)  # fmt: skip
    expected = torch.tensor([passing_times(v)[1] for v in throws], dtype=F64)
    torch.testing.assert_close(falls.t_event, expected, rtol=0, atol=1e-12)


class SeparableFall:
    """``fall`` as a symplectic method reads it (q = height, v = velocity); with
    ``drift_is_velocity`` the method drifts by ``v`` itself, else it evaluates ``dq/dt``."""

    separable, n_coordinates = True, 1

    def __init__(self, drift_is_velocity: bool):
        self.drift_is_velocity = drift_is_velocity

    def __call__(self, t, y):
        return fall(t, y)


# Methods without dense output, at settings where the ball thrown at THROW rises past MARK and
# falls back within their first step; each is exact on the quadratic path (order 2 and up).
WITHOUT_DENSE = [
    ("dop853", fall, {}),
    ("heun", fall, {"first_step": 1.0, "rtol": 1.0, "atol": 10.0}),
    ("rk4", fall, {"step_size": 1.0}),
    ("midpoint", fall, {"step_size": 1.0}),
    ("leapfrog", SeparableFall(True), {"step_size": 1.0}),
    ("yoshida4", SeparableFall(False), {"step_size": 1.0}),
]


@pytest.mark.parametrize(("method", "func", "options"), WITHOUT_DENSE)
@pytest.mark.parametrize(("direction", "crossing"), [(0, 0), (1, 0), (-1, 1)])
def test_two_crossings_within_one_step_are_found_without_dense_output(
    method, func, options, direction, crossing
):
    y0 = torch.tensor([0.0, THROW], dtype=F64, requires_grad=True)
    event_fn = _counted(lambda t, y: y[0] - MARK)
    sol = physode.odeint_event(func, y0, 0.0, event_fn, t_max=3.0, method=method,
                               direction=direction, **options)  # fmt: skip
    t_event = passing_times(THROW)[crossing]
    assert sol.t_event.item() == pytest.approx(t_event, abs=1e-12)
    assert sol.ys[1, 0].item() == pytest.approx(MARK, abs=1e-12)
    (grad,) = torch.autograd.grad(sol.t_event, [y0])
    root = math.sqrt(THROW * THROW - 2 * G * MARK)
    assert grad[1].item() == pytest.approx((1 + (1 if crossing else -1) * THROW / root) / G,
                                           rel=1e-9)  # fmt: skip


@pytest.mark.parametrize("gradient", GRADIENTS)
@pytest.mark.parametrize(("method", "func", "options"), [WITHOUT_DENSE[0], WITHOUT_DENSE[2],
                                                         WITHOUT_DENSE[5]])  # fmt: skip
def test_each_row_s_two_crossings_within_one_step_are_found_without_dense_output(
    method, func, options, gradient
):
    throws = [THROW, 6.0, 8.0]  # 8 m/s is still above the mark at the end of rk4's first step
    y0 = torch.tensor([[0.0, v] for v in throws], dtype=F64, requires_grad=True)
    sol = physode.odeint_event(func, y0, 0.0, lambda t, y: y[:, 0] - MARK, t_max=3.0,
                               method=method, gradient=gradient, **options)  # fmt: skip
    expected = torch.tensor([passing_times(v)[0] for v in throws], dtype=F64)
    torch.testing.assert_close(sol.t_event, expected, rtol=0, atol=1e-12)
    (grad,) = torch.autograd.grad(sol.t_event.sum(), [y0])
    v0 = torch.tensor(throws, dtype=F64)
    torch.testing.assert_close(grad[:, 1], (1 - v0 / torch.sqrt(v0**2 - 2 * G * MARK)) / G)
    falls = physode.odeint_event(func, y0.detach(), 0.0, lambda t, y: y[:, 0] - MARK,
                                 t_max=3.0, method=method, direction=-1, **options)  # fmt: skip
    expected = torch.tensor([passing_times(v)[1] for v in throws], dtype=F64)
    torch.testing.assert_close(falls.t_event, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("per_row", [False, True])
def test_the_method_not_the_candidate_curve_decides_the_event(per_row):
    # Euler's first step of 1 from height 0 at 5 m/s moves the height along 5 t to 5, and its
    # second falls from there; the cubic through the step's ends and slopes rises to 5.26 at
    # t = 0.8. It shows a crossing of 5.1 that Euler's states never make, a crossing of 4.5 at
    # t = 0.62 that Euler's states make at 0.9, and passes 5 where sqrt(5 - height) is NaN.
    y0 = torch.tensor([[0.0, THROW]], dtype=F64)
    options = {"method": "euler", "step_size": 1.0, "t_max": 3.0, "throw": False}

    def solve_for(event_fn):
        if per_row:
            return physode.odeint_event(fall, y0, 0.0, lambda t, y: event_fn(y[:, 0]),
                                        **options)  # fmt: skip
        return physode.odeint_event(fall, y0[0], 0.0, lambda t, y: event_fn(y[0]), **options)

    assert not solve_for(lambda height: height - 5.1).success
    assert solve_for(lambda height: height - 4.5).t_event.item() == pytest.approx(0.9, abs=1e-15)
    root = solve_for(lambda height: torch.sqrt(5.0 - height) - 0.5)
    assert root.t_event.item() == pytest.approx(0.95, abs=1e-15)


@pytest.mark.parametrize(
    ("method", "func", "options", "extra_nfe"),
    [("dop853", oscillator, {}, 1), ("heun", oscillator, {}, 1),
     ("rk4", oscillator, {"step_size": 0.1}, 1), ("euler", oscillator, {"step_size": 0.1}, 1),
     ("leapfrog", SeparableFall(True), {"step_size": 0.1}, 0),
     ("yoshida4", SeparableFall(False), {"step_size": 0.1}, 100)],
)  # fmt: skip
def test_the_search_without_dense_output_evaluates_event_fn_at_candidate_points(
    method, func, options, extra_nfe
):
    # At 4 points inside each step too; the slope at each step's end is a Runge-Kutta method's
    # next first stage (one evaluation more in all), free for a symplectic method that drifts
    # by v, and one evaluation per step for one that does not (100 steps here).
    event_fn = _counted(lambda t, y: y[0] - 50.0)
    y0 = torch.tensor([1.0, 0.0], dtype=F64)
    sol = physode.odeint_event(func, y0, 0.0, event_fn, t_max=10.0, throw=False, method=method,
                               **options)  # fmt: skip
    assert not sol.found
    assert event_fn.calls == 5 * sol.stats.n_steps + 1
    reached = physode.solve(func, y0, [0.0, 10.0], method=method, **options)
    assert sol.stats.n_steps == reached.stats.n_steps
    assert sol.stats.nfe == reached.stats.nfe + extra_nfe


def test_the_event_is_located_on_a_symplectic_method():
    func = physode.systems.load("harmonic_oscillator").vector_field()
    y0 = torch.tensor([1.0, 0.0], dtype=F64)
    omega = math.sqrt(func(torch.tensor(0.0), torch.tensor([-1.0, 0.0], dtype=F64))[1].item())
    t_event, _ = physode.odeint_event(func, y0, 0.0, height, method="yoshida4", step_size=0.01)
    assert abs(t_event.item() - math.pi / (2 * omega)) < 1e-8


def _counted(event_fn):
    def counted(t, y):
        counted.calls += 1
        return event_fn(t, y)

    counted.calls = 0
    return counted


@pytest.mark.parametrize(("method", "per_step"), [("dopri5", 5), ("bosh3", 5), ("tsit5", 5)])
def test_the_search_evaluates_event_fn_at_each_step_s_end_and_dense_points(method, per_step):
    # With dense output, at the points inside each step too (4 of them); no evaluation of func.
    event_fn = _counted(lambda t, y: y[0] - 5.0)
    y0 = torch.tensor([1.0, 0.0], dtype=F64)
    sol = physode.odeint_event(oscillator, y0, 0.0, event_fn, t_max=10.0, throw=False,
                               method=method)  # fmt: skip
    assert not sol.found
    assert event_fn.calls == per_step * sol.stats.n_steps + 1  # and once at t0
    reached = physode.solve(oscillator, y0, [0.0, 10.0], method=method)
    assert sol.stats.nfe == reached.stats.nfe


def test_the_root_is_located_in_a_few_evaluations_of_event_fn():
    event_fn = _counted(lambda t, y: y[0] - 0.3)
    y0 = torch.tensor([1.0, 0.0], dtype=F64)
    with torch.no_grad():  # no Newton step: only the search and the root's bracketing
        sol = physode.odeint_event(oscillator, y0, 0.0, event_fn, rtol=1e-3)
    # Illinois converges superlinearly: 8 evaluations here on the whole step, where plain
    # regula falsi takes 12 and bisection over 40 to reach the resolution of t.
    assert event_fn.calls - (5 * sol.stats.n_steps + 1) <= 9
    assert abs(sol.t_event.item() - math.acos(0.3)) < 1e-3  # rtol=1e-3: the solve's own error


@pytest.mark.parametrize("method", ["rk4", "midpoint"])
def test_a_root_next_to_a_trial_time_closes_the_bracket_instead_of_bisecting(method):
    # A trial lands within rounding of the root (midpoint's, in the bracket its own states at
    # the step's candidate points leave): the secant then falls on that end of the bracket,
    # and the search must try the time next to it, not halve the bracket down to the
    # resolution of t (about twenty more evaluations).
    event_fn = _counted(height)
    y0 = torch.tensor([1.0, 0.0], dtype=F64)
    with torch.no_grad():
        sol = physode.odeint_event(oscillator, y0, 0.0, event_fn, method=method, step_size=0.05)
    # The search: 4 candidate points and the end of each step, and the method's own states at
    # the 4 points of the step whose candidates show the crossing; then the root's trials.
    assert event_fn.calls - (5 * sol.stats.n_steps + 1) - 4 <= 6
    # pi / 2 to the method's own error at this step size
    assert abs(sol.t_event.item() - math.pi / 2) < (1e-6 if method == "rk4" else 1e-3)
    # The root to the resolution of t: the state there is on the surface to rounding.
    assert abs(sol.ys[1, 0].item()) < 1e-15


def test_a_fixed_step_search_that_blows_up_says_so():
    y0 = torch.tensor([10.0], dtype=F64)
    with pytest.raises(physode.SolverError, match="no event found: non-finite state") as info:
        physode.odeint_event(
            lambda t, y: y * y, y0, 0.0, lambda t, y: y[0] + 1.0, method="euler", step_size=0.5
        )
    assert info.value.status is physode.Status.NON_FINITE


def test_an_event_fn_outside_autograd_warns_that_t_event_has_no_gradient():
    y0 = torch.tensor([10.0, 0.0], dtype=F64, requires_grad=True)
    detached = lambda t, y: torch.tensor(y[0].item(), dtype=y.dtype)  # noqa: E731
    with pytest.warns(physode.PhysodeWarning, match="not differentiable with respect to t and y"):
        t_event, _ = physode.odeint_event(fall, y0, 0.0, detached)
    assert not t_event.requires_grad
    assert t_event.item() == pytest.approx(landing_time(10.0, 0.0), rel=1e-12)


@pytest.mark.parametrize("gradient", GRADIENTS)
def test_a_tuple_state_finds_the_event_and_gradients_of_the_flat_state(gradient):
    h0, v0 = (torch.tensor([x], dtype=F64, requires_grad=True) for x in (10.0, 2.0))
    t_event, (hs, vs) = physode.odeint_event(
        lambda t, y: (y[1], torch.full_like(y[1], -G)), (h0, v0), 0.0,
        lambda t, y: y[0][0], gradient=gradient, rtol=1e-10, atol=1e-12,
    )  # fmt: skip
    assert hs.shape == vs.shape == (2, 1)
    assert t_event.item() == pytest.approx(landing_time(10.0, 2.0), rel=1e-12)
    assert hs[1, 0].item() == pytest.approx(0.0, abs=1e-9)
    grads = torch.autograd.grad(t_event + vs[1, 0], (h0, v0))
    y0 = torch.tensor([10.0, 2.0], dtype=F64, requires_grad=True)
    t_flat, ys = physode.odeint_event(
        fall, y0, 0.0, height, gradient=gradient, rtol=1e-10, atol=1e-12
    )
    (flat,) = torch.autograd.grad(t_flat + ys[1, 1], y0)
    torch.testing.assert_close(torch.cat(grads), flat, rtol=1e-10, atol=0)


def test_a_tuple_state_that_is_not_one_dtype_is_refused_naming_its_parts():
    parts = (torch.ones(1, dtype=F64), torch.zeros(1))
    with pytest.raises(physode.InvalidArgumentError, match=r"y0\[1\] is torch.float32"):
        physode.odeint_event(lambda t, y: y, parts, 0.0, lambda t, y: y[0][0])


def test_forward_mode_through_an_event_search_is_refused():
    y0 = torch.tensor([10.0, 2.0], dtype=F64)
    with pytest.raises(physode.UnsupportedError, match="forward-mode"):
        torch.func.jvp(lambda y: physode.odeint_event(fall, y, 0.0, height)[0], (y0,), (y0,))


@pytest.mark.parametrize("transform", ["jvp", "grad", "forward_ad"])
def test_torch_func_or_forward_mode_over_a_tensor_func_captures_is_refused_by_an_event_search(
    transform,
):
    # torch.func.jvp over the gravity that func captures gave t_event a tangent of 0 (the true
    # derivative is not), torch.func.grad failed inside torch with a bare RuntimeError, and
    # torch.autograd.forward_ad gave no tangent at all.
    y0 = torch.tensor([10.0, 2.0], dtype=F64)

    def landing(g):
        return physode.odeint_event(
            lambda t, y: torch.stack([y[1], -g * torch.ones_like(y[0])]), y0, 0.0, height,
            gradient="disc-opt",
        ).t_event  # fmt: skip

    g, tangent = torch.tensor(G, dtype=F64), torch.tensor(1.0, dtype=F64)
    with pytest.raises(physode.UnsupportedError, match="torch.autograd.grad"):
        if transform == "jvp":
            torch.func.jvp(landing, (g,), (tangent,))
        elif transform == "grad":
            torch.func.grad(landing)(g)
        else:
            with torch.autograd.forward_ad.dual_level():
                landing(torch.autograd.forward_ad.make_dual(g, tangent))


# One event per row of a batch: event_fn returns shape (batch,).


def rows_height(t, y):
    return y[:, 0]


def falling_batch(heights, velocities, dtype=F64):
    h0 = torch.tensor(heights, dtype=dtype)
    return torch.stack([h0, torch.tensor(velocities, dtype=dtype)], dim=-1)


HEIGHTS, VELOCITIES = [1.0, 5.0, 10.0, 20.0, 0.5], [0.0, 2.0, -1.0, 3.0, 0.5]


@pytest.mark.parametrize(
    ("method", "options"),
    [(m, {}) for m in ["dopri5", "bosh3", "tsit5", "dop853"]] + [("rk4", {"step_size": 0.1})],
)
def test_a_batch_of_falling_bodies_lands_row_by_row_at_the_closed_form_times(method, options):
    y0 = falling_batch(HEIGHTS, VELOCITIES)
    sol = physode.odeint_event(fall, y0, 0.0, rows_height, method=method, **options)
    exact = torch.tensor([landing_time(h, v) for h, v in zip(HEIGHTS, VELOCITIES)], dtype=F64)
    assert sol.t_event.shape == (5,) and sol.ys.shape == (2, 5, 2)
    assert sol.found.tolist() == [True] * 5 and sol.success
    assert torch.allclose(sol.t_event, exact, atol=1e-12, rtol=0)
    assert torch.equal(sol.ys[0], y0)
    # Row i of ys[1] is row i's state at its own event.
    assert sol.ys[1, :, 0].abs().max() < 1e-11
    velocity = torch.tensor(VELOCITIES, dtype=F64) - G * exact
    assert torch.allclose(sol.ys[1, :, 1], velocity, atol=1e-10, rtol=0)
    assert sol.t_final == pytest.approx(exact.max().item(), abs=1e-12)


@pytest.mark.parametrize("gradient", GRADIENTS)
def test_each_row_s_event_time_has_the_closed_form_gradient_by_its_own_height(gradient):
    y0 = falling_batch(HEIGHTS, VELOCITIES).requires_grad_(True)
    sol = physode.odeint_event(fall, y0, 0.0, rows_height, gradient=gradient, rtol=1e-10)
    # The Jacobian of the event times by the initial heights is diagonal: no row depends on another.
    jac = torch.stack([torch.autograd.grad(sol.t_event[i], y0, retain_graph=True)[0][:, 0]
                       for i in range(len(HEIGHTS))])  # fmt: skip
    h0, v0 = torch.tensor(HEIGHTS, dtype=F64), torch.tensor(VELOCITIES, dtype=F64)
    expected = 1.0 / torch.sqrt(v0 * v0 + 2 * G * h0)
    assert torch.allclose(jac, torch.diag(expected), atol=1e-10, rtol=0)
    assert sol.gradient_stats is not None and sol.gradient_stats.n_steps > 0


@pytest.mark.parametrize("gradient", GRADIENTS)
def test_each_row_s_event_time_has_the_closed_form_gradient_by_a_shared_parameter(gradient):
    gravity = Gravity()
    y0 = falling_batch(HEIGHTS, VELOCITIES)
    t_event, ys = physode.odeint_event(gravity, y0, 0.0, rows_height, gradient=gradient,
                                       rtol=1e-10)  # fmt: skip
    h0, v0 = torch.tensor(HEIGHTS, dtype=F64), torch.tensor(VELOCITIES, dtype=F64)
    # t = (v0 + sqrt(v0^2 + 2 g h0)) / g, so dt/dg = (h0 / sqrt(v0^2 + 2 g h0) - t) / g.
    t_exact = (v0 + torch.sqrt(v0 * v0 + 2 * G * h0)) / G
    expected = (h0 / torch.sqrt(v0 * v0 + 2 * G * h0) - t_exact) / G
    for i in range(len(HEIGHTS)):
        (grad,) = torch.autograd.grad(t_event[i], gravity.g, retain_graph=True)
        assert abs(grad.item() - expected[i].item()) < 1e-10


def test_per_row_gradient_modes_agree_with_one_another():
    results = []
    for gradient in GRADIENTS:
        gravity = Gravity()
        y0 = falling_batch(HEIGHTS, VELOCITIES).requires_grad_(True)
        t_event, ys = physode.odeint_event(gravity, y0, 0.0, rows_height, gradient=gradient,
                                           rtol=1e-8)  # fmt: skip
        loss = (t_event * torch.arange(1.0, 6.0, dtype=F64)).sum() + ys[1, :, 1].pow(2).sum()
        results.append(torch.autograd.grad(loss, (y0, gravity.g)))
    aca, disc_opt, opt_disc = results
    for a, b in zip(aca, disc_opt, strict=True):
        assert torch.allclose(a, b, atol=1e-10, rtol=0)
    for a, b in zip(aca, opt_disc, strict=True):
        assert torch.allclose(a, b, atol=1e-6, rtol=0)


def test_rows_that_never_cross_get_nan_and_found_false_with_throw_false():
    y0 = falling_batch([1.0, 50.0, 5.0], [0.0, 0.0, 0.0]).requires_grad_(True)
    sol = physode.odeint_event(fall, y0, 0.0, rows_height, t_max=2.0, throw=False)
    assert sol.found.tolist() == [True, False, True] and not sol.success
    assert sol.status is physode.Status.SUCCESS
    assert "1 of 3 rows (rows 1)" in sol.message and "t_max=2.0" in sol.message
    assert math.isnan(sol.t_event[1].item()) and torch.isnan(sol.ys[1, 1]).all()
    assert abs(sol.t_event[0].item() - landing_time(1.0, 0.0)) < 1e-12
    assert abs(sol.t_event[2].item() - landing_time(5.0, 0.0)) < 1e-12
    assert sol.t_final == 2.0
    # The rows found keep their gradients, and the row not found adds no NaN to them.
    sol.t_event[sol.found].sum().backward()
    assert torch.isfinite(y0.grad).all() and y0.grad[1].abs().max() == 0
    assert abs(y0.grad[2, 0].item() - 1 / math.sqrt(2 * G * 5.0)) < 1e-10


def test_rows_that_never_cross_raise_with_throw_true_naming_them():
    y0 = falling_batch([1.0, 50.0, 60.0], [0.0, 0.0, 0.0])
    with pytest.raises(physode.SolverError, match=r"2 of 3 rows \(rows 1, 2\)") as info:
        physode.odeint_event(fall, y0, 0.0, rows_height, t_max=2.0)
    solution = info.value.solution
    assert solution.found.tolist() == [True, False, False]
    assert abs(solution.t_event[0].item() - landing_time(1.0, 0.0)) < 1e-12


def test_a_per_row_search_that_stops_early_keeps_the_rows_it_found():
    y0 = torch.tensor([[1.0, 0.0], [1.0, 0.0]], dtype=F64)
    levels = torch.tensor([0.0, 5.0], dtype=F64)  # the second row never gets there
    sol = physode.odeint_event(oscillator, y0, 0.0, lambda t, y: y[:, 0] - levels,
                               max_steps=30, throw=False)  # fmt: skip
    assert sol.status is physode.Status.MAX_STEPS and "max_steps=30" in sol.message
    assert sol.found.tolist() == [True, False]
    assert abs(sol.t_event[0].item() - math.pi / 2) < 1e-6 and math.isnan(sol.t_event[1].item())


@pytest.mark.parametrize(("direction", "phase_to_zero"), [(1, 1.5 * math.pi), (-1, 0.5 * math.pi)])
def test_direction_is_taken_row_by_row(direction, phase_to_zero):
    # x = cos(t + phase): each row rises through zero at t + phase = 3 pi / 2 (mod 2 pi) and
    # falls through it at pi / 2.
    phases = torch.tensor([0.0, 0.5, 2.0, 4.0], dtype=F64)
    y0 = torch.stack([torch.cos(phases), -torch.sin(phases)], dim=-1)
    t_event, _ = physode.odeint_event(oscillator, y0, 0.0, rows_height, direction=direction,
                                      rtol=1e-10, atol=1e-12)  # fmt: skip
    expected = torch.remainder(phase_to_zero - phases, 2 * math.pi)
    assert torch.allclose(t_event, expected, atol=1e-8, rtol=0)


@pytest.mark.parametrize("method", ["dopri5", "dop853"])
def test_per_row_events_agree_with_one_call_per_row(method):
    phases = torch.tensor([0.3, 1.0, 2.5], dtype=F64)
    y0 = torch.stack([torch.cos(phases) + 0.2, -torch.sin(phases)], dim=-1).requires_grad_(True)
    options = {"method": method, "rtol": 1e-10, "atol": 1e-12}
    t_event, ys = physode.odeint_event(oscillator, y0, 0.0, rows_height, **options)
    t_event.sum().backward()
    for i in range(len(phases)):
        row = y0[i].detach().clone().requires_grad_(True)
        t_one, ys_one = physode.odeint_event(oscillator, row, 0.0, height, **options)
        t_one.backward()
        assert abs(t_event[i].item() - t_one.item()) < 1e-9
        assert torch.allclose(ys[1, i], ys_one[1], atol=1e-9, rtol=0)
        assert torch.allclose(y0.grad[i], row.grad, atol=1e-8, rtol=0)


def test_an_event_fn_of_t_gets_each_row_s_time_and_its_gradient():
    # A floor rising at unit speed: h0 - G t^2 / 2 = t at t = (sqrt(1 + 2 G h0) - 1) / G.
    y0 = falling_batch([1.0, 5.0, 10.0], [0.0, 0.0, 0.0]).requires_grad_(True)
    seen = []

    def above_floor(t, y):
        seen.append(tuple(t.shape))
        return y[:, 0] - t

    t_event, _ = physode.odeint_event(fall, y0, 0.0, above_floor)
    h0 = torch.tensor([1.0, 5.0, 10.0], dtype=F64)
    assert torch.allclose(t_event, (torch.sqrt(1 + 2 * G * h0) - 1) / G, atol=1e-12, rtol=0)
    assert set(seen) == {(), (3,)}  # the search's shared time, each row's own while locating
    t_event.sum().backward()
    expected = 1 / torch.sqrt(1 + 2 * G * h0)
    assert torch.allclose(y0.grad[:, 0], expected, atol=1e-10, rtol=0)


def test_backward_in_time_finds_each_row_s_crossing_before_t0():
    phases = torch.tensor([0.5, 1.0], dtype=F64)
    y0 = torch.stack([torch.cos(phases), -torch.sin(phases)], dim=-1)
    t_event, _ = physode.odeint_event(oscillator, y0, 0.0, rows_height, t_max=-5.0,
                                      rtol=1e-10, atol=1e-12)  # fmt: skip
    assert torch.allclose(t_event, -0.5 * math.pi - phases, atol=1e-8, rtol=0)


def test_float32_finds_each_row_s_event_and_its_gradient():
    y0 = falling_batch(HEIGHTS, VELOCITIES, dtype=torch.float32).requires_grad_(True)
    sol = physode.odeint_event(fall, y0, 0.0, rows_height, rtol=1e-5, atol=1e-6)
    assert sol.t_event.dtype == torch.float32 and sol.ys.dtype == torch.float32
    exact = torch.tensor([landing_time(h, v) for h, v in zip(HEIGHTS, VELOCITIES)])
    assert torch.allclose(sol.t_event, exact, atol=1e-5, rtol=0)
    sol.t_event.sum().backward()
    h0, v0 = torch.tensor(HEIGHTS), torch.tensor(VELOCITIES)
    assert torch.allclose(y0.grad[:, 0], 1 / torch.sqrt(v0 * v0 + 2 * G * h0), atol=1e-5)


class SeparableGravity(Gravity):
    """Free fall as a symplectic method reads it: q = height, v = velocity."""

    separable, n_coordinates = True, 1


def unit_oscillator():
    """The catalogue's harmonic oscillator (separable) and its angular frequency."""
    func = physode.systems.load("harmonic_oscillator").vector_field()
    omega = math.sqrt(func(torch.tensor(0.0), torch.tensor([-1.0, 0.0], dtype=F64))[1].item())
    return func, omega


def oscillator_rows(omega, phases):
    """Rows x = cos(omega t + phase): each crosses zero falling at omega t + phase = pi / 2."""
    phases = torch.tensor(phases, dtype=F64)
    y0 = torch.stack([torch.cos(phases), -omega * torch.sin(phases)], dim=-1)
    return y0, (0.5 * math.pi - phases) / omega


@pytest.mark.parametrize("method", ["leapfrog", "yoshida4"])
def test_a_batch_of_falling_bodies_lands_row_by_row_on_a_symplectic_method(method):
    y0 = falling_batch(HEIGHTS, VELOCITIES)
    sol = physode.odeint_event(SeparableGravity(), y0, 0.0, rows_height, method=method,
                               step_size=0.1)  # fmt: skip
    exact = torch.tensor([landing_time(h, v) for h, v in zip(HEIGHTS, VELOCITIES)], dtype=F64)
    # Constant acceleration: velocity Verlet and its compositions are exact.
    assert sol.found.all() and sol.t_event.shape == (5,) and sol.ys.shape == (2, 5, 2)
    assert torch.allclose(sol.t_event, exact, atol=1e-12, rtol=0)
    assert sol.ys[1, :, 0].abs().max() < 1e-11


@pytest.mark.parametrize(("method", "order"), [("leapfrog", 2), ("yoshida4", 4)])
def test_symplectic_per_row_events_converge_at_the_method_s_order(method, order):
    func, omega = unit_oscillator()
    y0, exact = oscillator_rows(omega, [0.3, 1.0, 1.4, -0.5])
    errors = []
    for step_size in (0.04, 0.02, 0.01):
        sol = physode.odeint_event(func, y0, 0.0, rows_height, method=method,
                                   step_size=step_size)  # fmt: skip
        errors.append((sol.t_event - exact).abs().max().item())
        # Each row's root is the one a search for that row alone locates.
        for i in range(len(exact)):
            t_one, _ = physode.odeint_event(func, y0[i], 0.0, height, method=method,
                                            step_size=step_size)  # fmt: skip
            assert abs(sol.t_event[i].item() - t_one.item()) < 1e-12
    for coarse, fine in zip(errors, errors[1:]):
        assert 0.75 * 2**order < coarse / fine < 1.3 * 2**order


@pytest.mark.parametrize("gradient", GRADIENTS)
@pytest.mark.parametrize("method", ["leapfrog", "yoshida4"])
def test_symplectic_per_row_event_times_have_the_closed_form_gradients(method, gradient):
    gravity = SeparableGravity()
    y0 = falling_batch(HEIGHTS, VELOCITIES).requires_grad_(True)
    t_event, _ = physode.odeint_event(gravity, y0, 0.0, rows_height, method=method,
                                      step_size=0.05, gradient=gradient)  # fmt: skip
    h0, v0 = torch.tensor(HEIGHTS, dtype=F64), torch.tensor(VELOCITIES, dtype=F64)
    root = torch.sqrt(v0 * v0 + 2 * G * h0)
    weights = torch.arange(1.0, 6.0, dtype=F64)
    grad_y0, grad_g = torch.autograd.grad((weights * t_event).sum(), (y0, gravity.g))
    assert torch.allclose(grad_y0[:, 0], weights / root, atol=1e-10, rtol=0)
    t_exact = (v0 + root) / G
    assert abs(grad_g.item() - (weights * (h0 / root - t_exact) / G).sum().item()) < 1e-9


@pytest.mark.parametrize(("method", "order"), [("leapfrog", 2), ("yoshida4", 4)])
def test_symplectic_per_row_gradients_match_central_differences_and_rk4(method, order):
    func, omega = unit_oscillator()
    y0, _ = oscillator_rows(omega, [0.3, 1.0, 1.4])
    options = {"method": method, "step_size": 0.005}
    weights = torch.tensor([1.0, -2.0, 0.5], dtype=F64)

    def loss(y):
        t_event, ys = physode.odeint_event(func, y, 0.0, rows_height, **options)
        return (weights * t_event).sum() + ys[1, :, 1].pow(2).sum()

    y = y0.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(loss(y), y)
    eps, numeric = 1e-6, torch.zeros_like(y0)
    with torch.no_grad():
        for index in torch.cartesian_prod(torch.arange(3), torch.arange(2)).tolist():
            shift = torch.zeros_like(y0)
            shift[tuple(index)] = eps
            numeric[tuple(index)] = (loss(y0 + shift) - loss(y0 - shift)) / (2 * eps)
    assert torch.allclose(grad, numeric, atol=1e-6, rtol=0)
    options = {"method": "rk4", "step_size": 0.005}
    y = y0.clone().requires_grad_(True)
    (with_rk4,) = torch.autograd.grad(loss(y), y)
    # Both approximate the exact gradient, to the order of their methods.
    assert torch.allclose(grad, with_rk4, atol=2 * 0.005**order, rtol=0)


@pytest.mark.parametrize("method", ["rk4", "yoshida4"])
def test_a_fixed_step_per_row_event_time_is_the_same_with_a_gradient_as_without(method):
    # The gradient's solve reaches each row's crossing step on the search's own grid: outputs at
    # the earlier rows' roots must not shift the later rows' steps.
    func, omega = unit_oscillator()
    y0, _ = oscillator_rows(omega, [0.3, 1.0, 1.4, 2.9])
    options = {"method": method, "step_size": 0.1}
    plain, _ = physode.odeint_event(func, y0, 0.0, rows_height, **options)
    t_event, ys = physode.odeint_event(func, y0.clone().requires_grad_(True), 0.0, rows_height,
                                       **options)  # fmt: skip
    assert t_event.requires_grad
    assert (t_event.detach() - plain).abs().max() < 1e-13
    assert ys[1, :, 0].detach().abs().max() < 1e-13


@pytest.mark.parametrize("gradient", GRADIENTS)
@pytest.mark.parametrize(
    ("method", "options"),
    [("dopri5", {}), ("rk4", {"step_size": 0.05}), ("yoshida4", {"step_size": 0.05})],
)
def test_a_tuple_state_has_one_event_per_row_as_its_concatenation_does(method, options, gradient):
    gravity = SeparableGravity()
    parts = [torch.tensor(x, dtype=F64).unsqueeze(-1).requires_grad_(True)
             for x in (HEIGHTS, VELOCITIES)]  # fmt: skip

    def field(t, y):
        return y[1], -gravity.g * torch.ones_like(y[1]) + 0.0 * t

    field.drift_is_velocity = True
    settings = {"method": method, "gradient": gradient, "rtol": 1e-10, **options}
    sol = physode.odeint_event(field, tuple(parts), 0.0, lambda t, y: y[0][:, 0] - 0.1 * t,
                               **settings)  # fmt: skip
    assert sol.t_event.shape == (5,) and sol.found.all()
    assert [tuple(p.shape) for p in sol.ys] == [(2, 5, 1), (2, 5, 1)]
    loss = sol.t_event.sum() + sol.ys[1][1].pow(2).sum()
    grads = torch.autograd.grad(loss, (*parts, gravity.g))
    y0 = torch.cat([p.detach() for p in parts], dim=-1).requires_grad_(True)
    flat = physode.odeint_event(gravity, y0, 0.0, lambda t, y: y[:, 0] - 0.1 * t, **settings)
    torch.testing.assert_close(sol.t_event, flat.t_event, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(torch.cat([p[1] for p in sol.ys], -1), flat.ys[1])
    loss = flat.t_event.sum() + flat.ys[1, :, 1].pow(2).sum()
    expected = torch.autograd.grad(loss, (y0, gravity.g))
    torch.testing.assert_close(torch.cat(grads[:2], -1), expected[0], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(grads[2], expected[1], rtol=1e-10, atol=1e-12)


def test_a_per_row_tuple_state_s_func_gets_times_that_broadcast_against_its_parts():
    seen = []

    def func(t, y):
        seen.append(tuple(t.shape))
        x, v, clock = y  # (batch, 2), (batch, 2), (batch,)
        return v, -x, torch.ones_like(clock) + 0.0 * t

    x0 = torch.tensor([[1.0, 0.0], [0.5, 2.0], [0.2, 0.1]], dtype=F64, requires_grad=True)
    state = (x0, torch.zeros_like(x0), torch.zeros(3, dtype=F64))
    sol = physode.odeint_event(func, state, 0.0, lambda t, y: y[0][:, 0], rtol=1e-10)
    assert torch.allclose(sol.t_event, torch.full((3,), math.pi / 2, dtype=F64), atol=1e-8)
    assert torch.allclose(sol.ys[2][1], sol.t_event, atol=1e-8)  # the clock's part
    # Parts of two and one dimensions: each row's time comes as (batch,) for the Newton step.
    assert set(seen) == {(), (3,)}


def test_a_per_row_event_for_a_tuple_state_whose_parts_do_not_share_rows_is_refused():
    parts = (torch.ones(3, 2, dtype=F64), torch.zeros(2, 3, dtype=F64))
    with pytest.raises(physode.InvalidArgumentError,
                       match=r"not every part has 3 rows.*y0\[1\] \(2, 3\)"):  # fmt: skip
        physode.odeint_event(lambda t, y: (y[1].T, y[0].T), parts, 0.0, lambda t, y: y[0][:, 0])


@pytest.mark.parametrize(
    ("event_fn", "match"),
    [
        (lambda t, y: y[:, 0] if t.item() == 0 else y[:1, 0], r"shape \(2,\), at first, then"),
        (lambda t, y: torch.where(t > 0.2, torch.log(y[:, 0] - 0.5), y[:, 0]),
         r"returned nan for row 0 at t="),
    ],
)  # fmt: skip
def test_a_per_row_event_fn_that_changes_shape_or_is_not_finite_is_refused(event_fn, match):
    y0 = falling_batch([0.6, 2.0], [0.0, 0.0])
    with pytest.raises(physode.InvalidArgumentError, match=match):
        physode.odeint_event(fall, y0, 0.0, event_fn)


def test_one_value_per_element_of_an_unbatched_state_is_refused_saying_how_to_batch():
    y0 = torch.tensor([1.0, 0.0], dtype=F64)
    with pytest.raises(physode.InvalidArgumentError, match=r"give a batch of scalars the shape"):
        physode.odeint_event(oscillator, y0, 0.0, lambda t, y: y)


# Reprs: an event's result prints as one short line, per-row events by count and range.


def test_a_large_per_row_event_solution_prints_the_rows_found_and_the_shapes():
    y0 = falling_batch([1.0] * 1000 + [5.0] * 1000, [0.0] * 2000)
    sol = physode.odeint_event(fall, y0, 0.0, rows_height)
    text = repr(sol)
    assert len(text) < 300 and "\n" not in text
    first, last = landing_time(1.0, 0.0), landing_time(5.0, 0.0)
    assert f"found=2000 of 2000 rows, t_event={first:.6g}..{last:.6g}, status=SUCCESS" in text
    assert "ys=Tensor(shape=(2, 2000, 2), dtype=float64)" in text


def test_an_event_not_found_prints_its_status_and_nan_time_without_raising():
    y0 = torch.tensor([[1.0, 0.0], [1.0, 0.0]], dtype=F64)
    levels = torch.tensor([5.0, 5.0], dtype=F64)  # no row gets there
    sol = physode.odeint_event(oscillator, y0, 0.0, lambda t, y: y[:, 0] - levels,
                               max_steps=30, throw=False)  # fmt: skip
    assert repr(sol).startswith("EventSolution(found=0 of 2 rows, t_event=nan, status=MAX_STEPS")
    assert repr(physode.EventSolution.__new__(physode.EventSolution)) == "EventSolution()"
