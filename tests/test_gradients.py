"""The gradient modes: Disc-Opt and ACA exact and equal, Opt-Disc converging with its tolerance.

Exact means: the derivative of the computed (discrete) outputs with the accepted step sizes held
constant. Tests of exactness therefore use fixed-step methods, tight tolerances (where the step
sizes' own dependence on the inputs is negligible), or replay the accepted step grid.
"""

from __future__ import annotations

import functools
import math
import warnings

import numpy as np
import pytest
import torch
import torchdiffeq
from torch import nn

import physode
from physode.solvers import Trace, integrate, make_stepper

DTYPE = torch.float64
ADAPTIVE = ["heun", "bosh3", "dopri5", "tsit5", "dop853"]
FIXED = ["euler", "midpoint", "rk4"]


class Field(nn.Module):
    """A small nonlinear, non-autonomous vector field with parameters: an MLP plus damping."""

    def __init__(self, dim: int = 2, width: int = 16, seed: int = 0, dtype=DTYPE):
        super().__init__()
        torch.manual_seed(seed)
        self.inner = nn.Linear(dim, width).to(dtype)
        self.outer = nn.Linear(width, dim).to(dtype)
        self.damping = nn.Parameter(torch.tensor(0.2, dtype=dtype))

    def forward(self, t, y):
        return self.outer(torch.tanh(self.inner(y))) * torch.cos(t) - self.damping * y


def _field_and_start(seed: int) -> tuple[Field, torch.Tensor]:
    """A fresh :class:`Field` and a random batch of 3 starting states that requires grad."""
    y0 = torch.randn(3, 2, dtype=DTYPE, generator=torch.Generator().manual_seed(seed))
    return Field(), y0.requires_grad_(True)


def _options(method: str, tol: float = 1e-6) -> dict:
    if method in FIXED:
        return {"method": method, "step_size": 0.07}
    if method == "heun":  # second order: a looser tolerance keeps the step count moderate
        tol = max(tol, 1e-4)
    return {"method": method, "rtol": tol, "atol": tol}


def _weights(shape, seed: int = 1) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=DTYPE)


def _gradients(func, y0, t, gradient, wrt, **options) -> list[torch.Tensor]:
    """Gradient of a weighted sum of every output w.r.t. y0 and the tensors in ``wrt``."""
    ys = physode.odeint(func, y0, t, gradient=gradient, **options)
    loss = (ys * _weights(ys.shape)).sum()
    return list(torch.autograd.grad(loss, [y0, *wrt]))


def _flat(tensors) -> torch.Tensor:
    return torch.cat([x.reshape(-1) for x in tensors])


def _relative(a, b) -> float:
    a, b = _flat(a), _flat(b)
    return ((a - b).norm() / b.norm()).item()


T_OUT = torch.tensor([0.0, 0.3, 1.1, 2.0], dtype=DTYPE)


@pytest.mark.parametrize("method", FIXED + ADAPTIVE)
def test_aca_gradient_equals_disc_opt_for_y0_and_module_parameters(method):
    func, y0 = _field_and_start(seed=2)
    params = list(func.parameters())
    disc = _gradients(func, y0, T_OUT, "disc-opt", params, **_options(method))
    aca = _gradients(func, y0, T_OUT, "aca", params, **_options(method))
    assert _relative(aca, disc) <= 1e-10
    assert torch.isfinite(_flat(disc)).all() and _flat(disc).norm() > 0.1


@pytest.mark.parametrize("method", ADAPTIVE)
def test_aca_gradient_equals_disc_opt_with_a_max_step_that_binds(method):
    # ACA replays the steps the forward pass took, capped ones included, and Disc-Opt
    # differentiates them: the two agree wherever the cap sets the steps.
    func, y0 = _field_and_start(seed=2)
    params = list(func.parameters())
    options = {**_options(method), "max_step": 0.02}
    free = physode.solve(func, y0, T_OUT, **_options(method)).stats.n_steps
    capped = physode.solve(func, y0, T_OUT, **options).stats.n_steps
    assert free < 2.0 / 0.02 <= capped  # the cap binds
    disc = _gradients(func, y0, T_OUT, "disc-opt", params, **options)
    aca = _gradients(func, y0, T_OUT, "aca", params, **options)
    assert _relative(aca, disc) <= 1e-10
    assert torch.isfinite(_flat(disc)).all() and _flat(disc).norm() > 0.1


def test_opt_disc_caps_its_backward_steps_at_the_forward_max_step():
    # The backward solve takes the forward's max_step: at least 2 / 0.05 steps of six
    # evaluations each (dopri5, FSAL) over t in [0, 2], where the tolerance alone takes a few.
    func, y0 = _field_and_start(seed=2)
    params = list(func.parameters())
    nfe, grads = {}, {}
    for cap in (None, 0.05):
        sol = physode.solve(func, y0, T_OUT, gradient="opt-disc", max_step=cap, rtol=1e-8,
                            atol=1e-8)  # fmt: skip
        loss = (sol.ys * _weights(sol.ys.shape)).sum()
        grads[cap] = torch.autograd.grad(loss, [y0, *params])
        nfe[cap] = sol.stats.nfe_backward
    assert nfe[None] < 6 * 2.0 / 0.05 / 2 and nfe[0.05] >= 6 * 2.0 / 0.05
    assert _relative(grads[0.05], grads[None]) <= 1e-6


@pytest.mark.parametrize("gradient", ["disc-opt", "aca", "opt-disc"])
@pytest.mark.parametrize("method", ["rk4", "dopri5"])
def test_plain_function_with_explicit_params_gets_the_same_gradient_as_the_module(gradient, method):
    module = Field()
    params = list(module.parameters())
    # Held in a dict, the module is invisible to the automatic search: only params= names them.
    registry = {"field": module}

    def plain(t, y):
        return registry["field"](t, y)

    y0 = torch.tensor([[0.5, -0.3]], dtype=DTYPE, requires_grad=True)
    options = _options(method, tol=1e-9)
    reference = _gradients(module, y0, T_OUT, "disc-opt", params, **options)
    got = _gradients(plain, y0, T_OUT, gradient, params, params=params, **options)
    assert _relative(got, reference) <= (1e-10 if gradient != "opt-disc" else 1e-6)


@pytest.mark.parametrize("gradient", ["disc-opt", "aca", "opt-disc"])
def test_every_mode_matches_the_analytic_gradient_of_exponential_decay(gradient):
    # y' = -k y: y(T) = y0 exp(-k T), dy(T)/dk = -T y(T), dy(T)/dy0 = exp(-k T).
    k = torch.tensor(0.7, dtype=DTYPE, requires_grad=True)
    y0 = torch.tensor([1.5], dtype=DTYPE, requires_grad=True)
    ys = physode.odeint(
        lambda t, y: -k * y, y0, [0.0, 2.0], gradient=gradient, rtol=1e-11, atol=1e-11
    )
    grad_y0, grad_k = torch.autograd.grad(ys[-1].sum(), [y0, k])
    exact_end = 1.5 * math.exp(-1.4)
    assert grad_y0.item() == pytest.approx(math.exp(-1.4), rel=1e-8)
    assert grad_k.item() == pytest.approx(-2.0 * exact_end, rel=1e-8)


@pytest.mark.parametrize("gradient", ["disc-opt", "aca", "opt-disc"])
def test_gradients_flow_backward_in_time(gradient):
    # From t = 2 back to t = 0 on y' = -k y: y(0) = y(2) exp(2k).
    k = torch.tensor(0.7, dtype=DTYPE, requires_grad=True)
    y2 = torch.tensor([0.4], dtype=DTYPE, requires_grad=True)
    t = torch.tensor([2.0, 1.0, 0.0], dtype=DTYPE)
    ys = physode.odeint(lambda t, y: -k * y, y2, t, gradient=gradient, rtol=1e-11, atol=1e-11)
    assert ys[-1].item() == pytest.approx(0.4 * math.exp(1.4), rel=1e-9)
    grad_y2, grad_k = torch.autograd.grad(ys[-1].sum(), [y2, k])
    assert grad_y2.item() == pytest.approx(math.exp(1.4), rel=1e-8)
    assert grad_k.item() == pytest.approx(2.0 * 0.4 * math.exp(1.4), rel=1e-8)


@pytest.mark.parametrize("method", ["rk4", "dopri5", "tsit5"])
def test_aca_equals_disc_opt_backward_in_time_on_a_batched_state(method):
    func = Field(dim=2)
    y0 = torch.randn(4, 3, 2, dtype=DTYPE, generator=torch.Generator().manual_seed(3))
    y0.requires_grad_(True)
    t = torch.flip(T_OUT, [0])
    params = list(func.parameters())
    disc = _gradients(func, y0, t, "disc-opt", params, **_options(method))
    aca = _gradients(func, y0, t, "aca", params, **_options(method))
    assert disc[0].shape == (4, 3, 2)
    assert _relative(aca, disc) <= 1e-10


@pytest.mark.parametrize("gradient", ["disc-opt", "aca", "opt-disc"])
def test_float32_gradients_agree_with_float64(gradient):
    func64 = Field()
    func32 = Field(dtype=torch.float32)
    y0 = torch.randn(4, 3, 2, dtype=DTYPE, generator=torch.Generator().manual_seed(4))
    y0_64 = y0.clone().requires_grad_(True)
    y0_32 = y0.float().requires_grad_(True)
    t = T_OUT
    g64 = _gradients(func64, y0_64, t, gradient, list(func64.parameters()), rtol=1e-5, atol=1e-6)
    ys = physode.odeint(func32, y0_32, t.float(), gradient=gradient, rtol=1e-5, atol=1e-6)
    assert ys.dtype == torch.float32 and ys.shape == (4, 4, 3, 2)
    loss = (ys * _weights(ys.shape).float()).sum()
    g32 = torch.autograd.grad(loss, [y0_32, *func32.parameters()])
    assert all(g.dtype == torch.float32 for g in g32)
    assert _relative([g.double() for g in g32], g64) < 1e-3


@pytest.mark.parametrize(
    ("gradient", "method", "options"),
    [
        ("disc-opt", "rk4", {"step_size": 0.1}),
        ("aca", "rk4", {"step_size": 0.1}),
        ("disc-opt", "dopri5", {"rtol": 1e-9, "atol": 1e-9}),
        ("aca", "dopri5", {"rtol": 1e-9, "atol": 1e-9}),
    ],
)
def test_gradcheck_passes_on_a_small_problem(gradient, method, options):
    # At loose tolerance finite differences also see the step sizes move with the inputs, which
    # the exact modes treat as constants; fixed steps or tight tolerances remove that term.
    generator = torch.Generator().manual_seed(5)
    w = torch.randn(2, 2, dtype=DTYPE, generator=generator, requires_grad=True)
    y0 = torch.randn(2, 2, dtype=DTYPE, generator=generator, requires_grad=True)

    def solve(y0, w):
        return physode.odeint(
            lambda t, y: torch.tanh(y @ w) * torch.sin(t + 1.0),
            y0,
            [0.0, 0.5, 1.0],
            method=method,
            gradient=gradient,
            params=[w],
            **options,
        )

    assert torch.autograd.gradcheck(solve, (y0, w))


# ----------------------------------------------------------------------------- Taylor test


def _taylor_errors(loss_at, theta, gradient, direction, hs):
    """E0(h) = |J(θ+hd) − J(θ)| and E1(h) = |J(θ+hd) − J(θ) − h ∇J·d|."""
    j0 = loss_at(theta)
    slope = torch.dot(gradient, direction).item()
    e0, e1 = [], []
    for h in hs:
        jh = loss_at(theta + h * direction)
        e0.append(abs(jh - j0))
        e1.append(abs(jh - j0 - h * slope))
    return np.array(e0), np.array(e1)


def _fit(hs, errors) -> float:
    return float(np.polyfit(np.log(hs), np.log(errors), 1)[0])


class _FlatField(nn.Module):
    """The cubic-spiral model of Onken & Ruthotto with all parameters in one flat vector."""

    def __init__(self, theta: torch.Tensor):
        super().__init__()
        self.theta = nn.Parameter(theta)

    def forward(self, t, y):
        w1 = self.theta[:100].reshape(50, 2)
        b1 = self.theta[100:150]
        w2 = self.theta[150:250].reshape(2, 50)
        b2 = self.theta[250:252]
        return torch.tanh((y**3) @ w1.T + b1) @ w2.T + b2


def _spiral_setup():
    generator = torch.Generator().manual_seed(6)
    theta = 0.3 * torch.randn(252, dtype=DTYPE, generator=generator)
    direction = torch.randn(252, dtype=DTYPE, generator=generator)
    direction /= direction.norm()
    y0 = torch.tensor([[2.0, 0.0]], dtype=DTYPE)
    t = torch.linspace(0.0, 1.5, 30, dtype=DTYPE)
    weights = _weights((30, 1, 2), seed=7)
    return theta, direction, y0, t, weights


HS = [2.0**-k for k in range(4, 12)]


@pytest.mark.parametrize("gradient", ["disc-opt", "aca"])
@pytest.mark.parametrize(
    "options", [{"method": "rk4", "step_size": 0.05}, {"method": "dopri5", "rtol": 1e-9}]
)
def test_taylor_test_first_order_remainder_falls_like_h_squared(gradient, options):
    theta, direction, y0, t, weights = _spiral_setup()
    options = {"atol": options.get("rtol", 1e-6), **options}

    def loss_at(point):
        with torch.no_grad():
            ys = physode.odeint(_FlatField(point), y0, t, gradient="disc-opt", **options)
        return (ys * weights).sum().item()

    func = _FlatField(theta.clone())
    ys = physode.odeint(func, y0, t, gradient=gradient, **options)
    (grad,) = torch.autograd.grad((ys * weights).sum(), [func.theta])
    e0, e1 = _taylor_errors(loss_at, theta, grad, direction, HS)
    assert abs(_fit(HS, e0) - 1.0) < 0.2, e0
    assert abs(_fit(HS, e1) - 2.0) < 0.2, e1
    assert np.all(e1 < e0) and e1[-1] < 0.01 * e0[-1]


def _frozen_grid_loss(theta, y0, times, trace, method, weights):
    """The discrete map of a solve with its accepted steps held fixed (what the exact modes
    differentiate), rebuilt from the trace of the accepted steps."""
    func = _FlatField(theta)
    stepper = make_stepper(method)

    def time(s):
        return torch.scalar_tensor(s, dtype=DTYPE)

    outputs = [y0]
    y = y0
    by_step = {}
    for n, theta_out in trace.outputs:
        by_step.setdefault(n, []).append(theta_out)
    for n, (t, h) in enumerate(zip(trace.t, trace.h)):
        step = stepper.step(func, t, y, h, func(time(t), y), time)
        for theta_out in by_step.get(n, []):
            if theta_out is None:
                outputs.append(step.y1)
            else:
                outputs.append(stepper.interpolate(y, h, step.ks, theta_out))
        y = step.y1
    return torch.stack(outputs), (torch.stack(outputs) * weights).sum()


@pytest.mark.parametrize("gradient", ["disc-opt", "aca"])
def test_taylor_test_at_loose_tolerance_is_exact_for_the_accepted_step_grid(gradient):
    # rtol = 1e-2: few, large steps. Disc-Opt's gradient is still the exact derivative of the
    # computed outputs, seen on the same accepted steps evaluated at theta + h d.
    theta, direction, y0, t, weights = _spiral_setup()
    method, tol = "dopri5", 1e-2
    trace = Trace()
    stats = physode.Stats()
    with torch.no_grad():
        integrate(
            make_stepper(method),
            _FlatField(theta),
            y0,
            t.tolist(),
            rtol=tol,
            atol=tol,
            step_size=None,
            first_step=None,
            max_steps=10_000,
            stats=stats,
            trace=trace,
        )
    func = _FlatField(theta.clone())
    ys = physode.odeint(func, y0, t, method=method, rtol=tol, atol=tol, gradient=gradient)
    assert stats.n_steps < 15
    with torch.no_grad():
        replayed, _ = _frozen_grid_loss(theta, y0, t, trace, method, weights)
    torch.testing.assert_close(replayed, ys.detach(), rtol=0, atol=1e-14)
    (grad,) = torch.autograd.grad((ys * weights).sum(), [func.theta])

    def loss_at(point):
        with torch.no_grad():
            return _frozen_grid_loss(point, y0, t, trace, method, weights)[1].item()

    e0, e1 = _taylor_errors(loss_at, theta, grad, direction, HS)
    assert abs(_fit(HS, e0) - 1.0) < 0.2, e0
    assert abs(_fit(HS, e1) - 2.0) < 0.2, e1


# ----------------------------------------------------------------------------- Opt-Disc


def _spiral_gradient(gradient, **options) -> torch.Tensor:
    theta, _, y0, t, weights = _spiral_setup()
    func = _FlatField(theta.clone())
    y0 = y0.clone().requires_grad_(True)
    ys = physode.odeint(func, y0, t, gradient=gradient, **options)
    return _flat(torch.autograd.grad((ys * weights).sum(), [y0, func.theta]))


@pytest.fixture(scope="module")
def tight_reference() -> torch.Tensor:
    return _spiral_gradient("disc-opt", method="dop853", rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "variant",
    [{}, {"restart": True}, {"restart": "steps"}, {"seminorm": True}],
    ids=["plain", "restart", "restart-steps", "seminorm"],
)
def test_opt_disc_gradient_error_shrinks_as_its_tolerance_tightens(variant, tight_reference):
    errors = []
    for tol in (1e-3, 1e-5, 1e-7, 1e-9):
        g = _spiral_gradient(physode.OptDisc(**variant), rtol=tol, atol=tol)
        errors.append(((g - tight_reference).norm() / tight_reference.norm()).item())
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 1e-8 and errors[0] / errors[-1] > 1e3, errors


def test_opt_disc_error_control_is_not_loosened_by_parameters_the_loss_ignores():
    # The backward error norm is the largest of the RMS norms of the state, the adjoint and each
    # parameter tensor's gradient. One RMS over the whole augmented state would let 20000
    # parameters that func never uses (zero gradient, zero error) dilute the control of the
    # others: the backward solve would take longer steps and lose accuracy for no reason.
    theta, _, y0, t, weights = _spiral_setup()
    reference = _spiral_gradient("disc-opt", method="dop853", rtol=1e-12, atol=1e-12)
    results = []
    for n_idle in (0, 20_000):
        func = _FlatField(theta.clone())
        idle = torch.zeros(n_idle, dtype=DTYPE, requires_grad=True)
        start = y0.clone().requires_grad_(True)
        sol = physode.solve(
            func,
            start,
            t,
            rtol=1e-11,
            atol=1e-11,
            gradient=physode.OptDisc(rtol=1e-6, atol=1e-6),
            params=[func.theta, idle],
        )
        g = _flat(torch.autograd.grad((sol.ys * weights).sum(), [start, func.theta]))
        results.append((_relative(g, reference), sol.stats.nfe_backward))
    assert results[1] == results[0]


def test_opt_disc_restart_stays_accurate_where_the_backward_state_re_solve_is_unstable():
    # Van der Pol's limit cycle attracts forward in time, so re-solving the state backward from
    # t = 20 drifts off it (Onken & Ruthotto); restarting from the stored outputs at every
    # observation time keeps the adjoint on the forward trajectory.
    mu = torch.tensor(1.0, dtype=DTYPE, requires_grad=True)

    def van_der_pol(t, y):
        x, v = y[..., 0:1], y[..., 1:2]
        return torch.cat([v, mu * (1.0 - x * x) * v - x], dim=-1)

    t = torch.linspace(0.0, 20.0, 21, dtype=DTYPE)
    grads = {}
    for name, gradient in [
        ("disc-opt", "disc-opt"),
        ("re-solve", physode.OptDisc()),
        ("restart", physode.OptDisc(restart=True)),
        ("steps", physode.OptDisc(restart="steps")),
    ]:
        y0 = torch.tensor([[2.0, 0.0]], dtype=DTYPE, requires_grad=True)
        ys = physode.odeint(
            van_der_pol, y0, t, rtol=1e-8, atol=1e-8, gradient=gradient, params=[mu]
        )
        grads[name] = torch.autograd.grad(ys[-1].sum(), [y0, mu])
    restart_error = _relative(grads["restart"], grads["disc-opt"])
    assert restart_error < 1e-5
    assert _relative(grads["re-solve"], grads["disc-opt"]) > 100 * restart_error
    assert _relative(grads["steps"], grads["disc-opt"]) < 1e-5


def _van_der_pol_gradient(gradient, t, tol):
    """Gradient of a weighted sum of Van der Pol's states at ``t`` (mu = 1 learnable) w.r.t.
    ``(y0, mu)``."""
    mu = torch.tensor(1.0, dtype=DTYPE, requires_grad=True)

    def van_der_pol(t, y):
        x, v = y[..., 0:1], y[..., 1:2]
        return torch.cat([v, mu * (1.0 - x * x) * v - x], dim=-1)

    y0 = torch.tensor([[2.0, 0.0]], dtype=DTYPE, requires_grad=True)
    ys = physode.odeint(van_der_pol, y0, t, rtol=tol, atol=tol, gradient=gradient, params=[mu])
    weights = torch.tensor([0.7, -1.3], dtype=DTYPE)
    return _flat(torch.autograd.grad((ys[1:] * weights).sum(), [y0, mu]))


def test_opt_disc_restart_at_steps_stays_accurate_without_outputs_in_between():
    # With only the two ends as outputs, restart=True has nothing to restart from, and the state
    # re-solved backward over t in [0, 10] leaves Van der Pol's attracting cycle: the classic
    # gradient is wrong by about 1e-2 at 1e-6 (it fails outright at 1e-4). restart="steps"
    # takes the state stored at each forward step and is as accurate as the tolerance.
    t = torch.tensor([0.0, 10.0], dtype=DTYPE)
    exact = _van_der_pol_gradient("disc-opt", t, 1e-12)
    classic = _relative(_van_der_pol_gradient("opt-disc", t, 1e-6), exact)
    outputs = _relative(_van_der_pol_gradient(physode.OptDisc(restart=True), t, 1e-6), exact)
    steps = _relative(_van_der_pol_gradient(physode.OptDisc(restart="steps"), t, 1e-6), exact)
    assert outputs == classic
    assert steps < 1e-4 and classic > 100 * steps, (classic, steps)


@pytest.mark.parametrize(
    "t",
    [
        [0.0, 1.3, 2.0, 4.7, 5.0],  # outputs between the steps, dense output there
        [5.0, 3.7, 3.0, 0.0],  # backward in time
    ],
    ids=["dense-outputs", "backward-in-time"],
)
def test_opt_disc_restart_at_steps_handles_outputs_between_steps_and_either_direction(t):
    t = torch.tensor(t, dtype=DTYPE)
    exact = _van_der_pol_gradient("disc-opt", t, 1e-12)
    errors = [
        _relative(_van_der_pol_gradient(physode.OptDisc(restart="steps"), t, tol), exact)
        for tol in (1e-4, 1e-6, 1e-8)
    ]
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-6, errors


def test_opt_disc_restart_at_steps_with_a_fixed_step_method_restarts_every_step():
    t = torch.tensor([0.0, 3.0], dtype=DTYPE)
    exact = _van_der_pol_gradient("disc-opt", t, 1e-12)
    mu = torch.tensor(1.0, dtype=DTYPE, requires_grad=True)
    errors = []
    for step_size in (0.1, 0.05):
        y0 = torch.tensor([[2.0, 0.0]], dtype=DTYPE, requires_grad=True)
        sol = physode.solve(
            lambda t, y: torch.cat([y[..., 1:], mu * (1 - y[..., :1] ** 2) * y[..., 1:]
                                    - y[..., :1]], -1),
            y0, t, method="rk4", step_size=step_size,
            gradient=physode.OptDisc(restart="steps"), params=[mu],
        )
        weights = torch.tensor([0.7, -1.3], dtype=DTYPE)
        grad = _flat(torch.autograd.grad((sol.ys[1:] * weights).sum(), [y0, mu]))
        errors.append(_relative(grad, exact))
        # One backward rk4 step per forward step, as many evaluations as the forward solve.
        assert sol.stats.nfe_backward == sol.stats.nfe == 4 * sol.stats.n_steps
    # rk4 is fourth order backward too: halving the step cuts the error about 16-fold.
    assert 10 < errors[0] / errors[1] < 25, errors


def test_opt_disc_with_its_own_backward_method_converges_to_the_reference(tight_reference):
    forward = {"method": "rk4", "step_size": 0.01}
    loose = _spiral_gradient(physode.OptDisc(method="bosh3", rtol=1e-4, atol=1e-4), **forward)
    tight = _spiral_gradient(physode.OptDisc(method="dop853", rtol=1e-11, atol=1e-11), **forward)
    exact = _spiral_gradient("disc-opt", **forward)
    error = lambda g: ((g - tight_reference).norm() / tight_reference.norm()).item()  # noqa: E731
    assert error(tight) < error(loose)
    # Opt-Disc approximates the continuous gradient, not the discrete one of the rk4 forward.
    assert error(tight) < 1e-6 and error(exact) > 1e-9


def test_backward_evaluations_are_counted_for_each_mode():
    func = Field()
    y0 = torch.randn(3, 2, dtype=DTYPE, requires_grad=True)
    counts = {}
    for gradient in ("disc-opt", "aca", "opt-disc"):
        sol = physode.solve(func, y0, T_OUT, gradient=gradient, method="dopri5")
        assert sol.stats.nfe_backward == 0
        (sol.ys * _weights(sol.ys.shape)).sum().backward()
        counts[gradient] = (sol.stats.n_steps, sol.stats.nfe_backward)
    assert counts["disc-opt"][1] == 0
    n_steps, nfe_backward = counts["aca"]
    # Each accepted step but the last (whose graph the forward pass kept) is rebuilt once: f0 and
    # the five stages y1 depends on, plus dopri5's last (FSAL) stage only in steps whose dense
    # output gives an output time.
    assert 6 * (n_steps - 1) < nfe_backward <= 7 * (n_steps - 1)
    assert counts["opt-disc"][1] > n_steps


def test_aca_replays_only_the_stages_the_step_end_depends_on():
    y0 = torch.randn(3, 2, dtype=DTYPE, requires_grad=True)
    sol = physode.solve(Field(), y0, [0.0, 1.0], gradient="aca", method="dopri5")
    sol.ys[-1].sum().backward()
    # The only output is the end of the last step: no dense output, no FSAL stage. The last step
    # is not rebuilt: the forward pass took it with autograd and kept its graph.
    assert sol.stats.nfe_backward == 6 * (sol.stats.n_steps - 1)


@pytest.mark.parametrize("method", ["dopri5", "tsit5", "dop853"])
def test_aca_keeps_the_last_steps_graph_with_outputs_interpolated_inside_it(method):
    # Loose tolerance, so the last step is long and the outputs just before the end fall inside
    # it (interpolated where the method has dense output, stepped onto where it has not).
    func, y0 = _field_and_start(seed=5)
    t = torch.tensor([0.0, 1.0, 1.93, 1.97, 2.0], dtype=DTYPE)
    params = list(func.parameters())
    disc = _gradients(func, y0, t, "disc-opt", params, **_options(method, tol=1e-3))
    aca = _gradients(func, y0, t, "aca", params, **_options(method, tol=1e-3))
    assert _relative(aca, disc) <= 1e-10


def test_aca_drops_a_rejected_attempt_at_the_last_step():
    # A first step over the whole span lands on the end and is rejected; the graph of that attempt
    # must not stand in for the step finally accepted there.
    func, y0 = _field_and_start(seed=6)
    params = list(func.parameters())
    options = {"method": "dopri5", "rtol": 1e-8, "atol": 1e-8, "first_step": 2.0}
    sol = physode.solve(func, y0, [0.0, 2.0], gradient="aca", **options)
    assert sol.stats.n_rejected >= 1
    disc = _gradients(func, y0, [0.0, 2.0], "disc-opt", params, **options)
    aca = _gradients(func, y0, [0.0, 2.0], "aca", params, **options)
    assert _relative(aca, disc) <= 1e-10


@pytest.mark.parametrize("keep_last_graph", [True, False])
def test_aca_after_a_failed_solve_replays_only_the_steps_up_to_its_last_output(keep_last_graph):
    # dy/dt = w y^2 from y = 1 blows up at t = 1/w: the solve reaches t = 0.5 and then takes
    # hundreds of ever shorter steps towards the blow-up, which no output depends on. ACA
    # replayed them all (2160 evaluations instead of 42 with tsit5, then landing on t = 0.5),
    # adding zeros. dop853 lands on every output, so the solve to 0.5 alone takes the same steps.
    w = torch.tensor(0.7, dtype=DTYPE, requires_grad=True)
    options = {"method": "dop853", "rtol": 1e-8, "atol": 1e-10}
    gradients, replays, success = {}, {}, {}
    for t, gradient in (
        ([0.0, 0.5, 2.0], "disc-opt"),
        ([0.0, 0.5, 2.0], physode.ACA(keep_last_graph=keep_last_graph)),
        ([0.0, 0.5], physode.ACA(keep_last_graph=False)),  # the same steps, up to t = 0.5
    ):
        y0 = torch.ones(1, dtype=DTYPE, requires_grad=True)
        w.grad = None
        sol = physode.solve(lambda t, y: w * y**2, y0, t, gradient=gradient, throw=False, **options)
        sol.ys[:2].sum().backward()
        key = (len(t), gradient if isinstance(gradient, str) else "aca")
        gradients[key] = torch.cat([y0.grad, w.grad.reshape(1)])
        replays[key], success[key] = sol.stats.nfe_backward, sol.success
    assert success == {(3, "disc-opt"): False, (3, "aca"): False, (2, "aca"): True}
    assert replays[(3, "aca")] == replays[(2, "aca")]
    assert _relative(gradients[(3, "aca")], gradients[(3, "disc-opt")]) <= 1e-12
    assert _relative(gradients[(2, "aca")], gradients[(3, "disc-opt")]) <= 1e-12


def test_aca_backward_runs_twice_with_retain_graph():
    # The kept graph of the last step serves the first backward pass; a second one rebuilds it.
    func, y0 = _field_and_start(seed=7)
    params = list(func.parameters())
    sol = physode.solve(func, y0, T_OUT, gradient="aca", method="dopri5")
    loss = (sol.ys * _weights(sol.ys.shape)).sum()
    first = torch.autograd.grad(loss, [y0, *params], retain_graph=True)
    replayed = sol.stats.nfe_backward
    second = torch.autograd.grad(loss, [y0, *params])
    assert _relative(second, first) <= 1e-14
    assert sol.stats.nfe_backward - replayed > replayed  # the second pass rebuilt every step


class _LiveSavedBytes:
    """Peak bytes of the distinct storages autograd holds for backward, freed with their nodes."""

    def __init__(self):
        self.live, self.peak, self.count = 0, 0, {}

    def pack(self, tensor):
        return _Saved(tensor, self)

    def change(self, key, nbytes, delta):
        self.count[key] = self.count.get(key, 0) + delta
        if self.count[key] == (1 if delta > 0 else 0):
            self.live += delta * nbytes
            self.peak = max(self.peak, self.live)


class _Saved:
    def __init__(self, tensor, meter):
        storage = tensor.untyped_storage()
        # Detached: holding the tensor itself would tie its grad_fn to the node that saved it,
        # a reference cycle that only the garbage collector frees, unlike autograd's own saving.
        self.tensor, self.meter = tensor.detach(), meter
        self.key, self.nbytes = storage.data_ptr(), storage.nbytes()
        meter.change(self.key, self.nbytes, +1)

    def __del__(self):
        self.meter.change(self.key, self.nbytes, -1)


def _peak_saved_bytes(gradient: str, n_steps: int) -> int:
    func = Field(width=256)
    y0 = torch.randn(8, 2, dtype=DTYPE, generator=torch.Generator().manual_seed(8))
    y0.requires_grad_(True)
    meter = _LiveSavedBytes()
    with torch.autograd.graph.saved_tensors_hooks(meter.pack, lambda saved: saved.tensor):
        ys = physode.odeint(
            func, y0, [0.0, 1.0], method="rk4", step_size=1.0 / n_steps, gradient=gradient
        )
        ys[-1].sum().backward()
    return meter.peak


@pytest.mark.parametrize("t", [[0.0, 1.0], [0.0, 0.9, 0.95, 1.0]])
def test_aca_kept_last_graph_is_no_larger_than_a_rebuilt_step_and_gives_the_same_gradient(t):
    func = Field(width=256)
    y0 = torch.randn(8, 2, dtype=DTYPE, generator=torch.Generator().manual_seed(9))
    y0.requires_grad_(True)
    params = list(func.parameters())
    peaks, grads, counts = [], [], []
    for mode in (physode.ACA(keep_last_graph=False), physode.ACA()):
        meter = _LiveSavedBytes()
        with torch.autograd.graph.saved_tensors_hooks(meter.pack, lambda saved: saved.tensor):
            sol = physode.solve(func, y0, t, method="dopri5", rtol=1e-3, atol=1e-3, gradient=mode)
            loss = (sol.ys * _weights(sol.ys.shape)).sum()
            grads.append(torch.autograd.grad(loss, [y0, *params]))
        peaks.append(meter.peak)
        counts.append((sol.stats.nfe, sol.stats.nfe_backward))
    assert _relative(grads[1], grads[0]) <= 1e-14
    assert peaks[1] <= peaks[0] * 1.01
    # One more evaluation forward (the last step's first stage, with a graph), one step fewer back.
    assert counts[1][0] == counts[0][0] + 1 and counts[1][1] < counts[0][1]


def test_aca_memory_stays_flat_as_steps_grow_while_disc_opt_grows_with_them():
    # A width-256 MLP on an 8 x 2 state: one step's graph is far larger than the state. Measured
    # is the graph (saved tensors); ACA's checkpoints add one 8 x 2 state per step on top.
    disc = [_peak_saved_bytes("disc-opt", n) for n in (10, 100)]
    aca = [_peak_saved_bytes("aca", n) for n in (10, 100)]
    assert disc[1] > 8 * disc[0]
    assert 0 < aca[0] and aca[1] <= 1.2 * aca[0]
    assert disc[0] > 5 * aca[0]


@pytest.mark.parametrize("gradient", ["aca", "opt-disc"])
def test_a_module_a_plain_function_closes_over_is_found_without_params(gradient):
    module = Field()

    def plain(t, y):
        return module(t, y)

    y0 = torch.tensor([[0.5, -0.3]], dtype=DTYPE, requires_grad=True)
    params = list(module.parameters())
    options = _options("dopri5", tol=1e-9)
    reference = _gradients(module, y0, T_OUT, "disc-opt", params, **options)
    got = _gradients(plain, y0, T_OUT, gradient, params, **options)
    assert _relative(got, reference) <= (1e-10 if gradient == "aca" else 1e-6)


@pytest.mark.parametrize("y0_needs_grad", [True, False])
@pytest.mark.parametrize("gradient", ["disc-opt", "aca", "opt-disc"])
def test_parameters_reached_through_globals_get_the_gradient_the_module_gets(
    gradient, y0_needs_grad
):
    # A plain function reaching a module through a global: its parameters are found from the
    # first evaluation's graph. Disc-Opt once looked only through y0's graph, so with a y0 that
    # needs no gradient the solve ran without autograd and backward() found no graph at all.
    def weight_gradient(func, mode):
        _GLOBAL_MODEL.zero_grad()
        y0 = torch.tensor([[0.5, -0.3]], dtype=DTYPE, requires_grad=y0_needs_grad)
        ys = physode.odeint(func, y0, [0.0, 1.0], gradient=mode, rtol=1e-10, atol=1e-12)
        ys.sum().backward()
        return _GLOBAL_MODEL.outer.weight.grad.clone()

    reference = weight_gradient(_GLOBAL_MODEL, "disc-opt")  # the module itself: no search
    tolerance = 1e-6 if gradient == "opt-disc" else 1e-10
    assert _relative(weight_gradient(_global_field, gradient), reference) <= tolerance


@pytest.mark.parametrize(
    "gradient, step_control",
    # Per-sample step control has no Opt-Disc mode.
    [(g, "shared") for g in ("disc-opt", "aca", "opt-disc")]
    + [(g, "per-sample") for g in ("disc-opt", "aca")],
)
def test_a_tensor_listed_twice_in_params_gets_its_gradient_once(gradient, step_control):
    w = torch.tensor(1.0, dtype=DTYPE, requires_grad=True)
    y0 = torch.ones(2, 1, dtype=DTYPE)
    ys = physode.odeint(
        lambda t, y: -w * y,
        y0,
        [0.0, 1.0],
        gradient=gradient,
        params=[w, w],
        step_control=step_control,
        rtol=1e-10,
        atol=1e-12,
    )
    (grad,) = torch.autograd.grad(ys[-1].sum(), [w])
    assert grad.item() == pytest.approx(-2 * math.exp(-1.0), rel=1e-6)  # d/dw 2 exp(-w)


@pytest.mark.parametrize(
    "gradient, step_control",
    [(g, "shared") for g in ("disc-opt", "aca", "opt-disc")]
    + [(g, "per-sample") for g in ("disc-opt", "aca")],
)
def test_a_parameter_func_never_uses_keeps_no_gradient_in_every_mode(gradient, step_control):
    class Decay(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rate = torch.nn.Parameter(torch.tensor(0.5, dtype=DTYPE))
            self.unused = torch.nn.Parameter(torch.tensor(1.0, dtype=DTYPE))  # weight decay sees it

        def forward(self, t, y):
            return -self.rate * y + 0.0 * y  # `+ y`-like terms hand back the cotangent itself

    func = Decay()
    y0 = torch.ones(3, 1, dtype=DTYPE)
    ys = physode.odeint(func, y0, [0.0, 1.0], gradient=gradient, step_control=step_control)
    ys[-1].sum().backward()
    assert func.unused.grad is None
    assert func.rate.grad.item() == pytest.approx(-3 * math.exp(-0.5), rel=1e-5)


@pytest.mark.parametrize("step_control", ["shared", "per-sample"])
@pytest.mark.parametrize("listed", ["none", "frozen", "unrelated"])
def test_params_decide_the_gradients_whatever_else_requires_grad(listed, step_control):
    # docs/solvers.md: given params, ACA and Opt-Disc differentiate those tensors alone, while
    # Disc-Opt records whatever func uses. Before 2026-12-07 Disc-Opt recorded nothing where
    # neither y0 nor a listed tensor required grad (params=[]), so w's gradient hung on
    # whether an unrelated tensor was listed.
    unrelated = torch.tensor(1.0, dtype=DTYPE, requires_grad=True)
    params = {"none": [], "frozen": [torch.tensor(1.0, dtype=DTYPE)], "unrelated": [unrelated]}
    modes = ["disc-opt", "aca"] + (["opt-disc"] if step_control == "shared" else [])
    for gradient in modes:
        w = torch.tensor(0.5, dtype=DTYPE, requires_grad=True)
        sol = physode.solve(lambda t, y, w=w: -w * y, torch.ones(2, 1, dtype=DTYPE), [0.0, 1.0],
                            gradient=gradient, params=params[listed], step_control=step_control)
        if gradient == "disc-opt":
            sol.ys[-1].sum().backward()
            assert w.grad.item() == pytest.approx(-2 * math.exp(-0.5), rel=1e-5)
        else:
            assert sol.ys.requires_grad == (listed == "unrelated")
            assert w.grad is None
        assert unrelated.grad is None


def test_finding_a_plain_functions_parameters_hands_per_sample_times_by_row():
    seen = []
    w = torch.tensor(0.5, dtype=DTYPE, requires_grad=True)

    def field(t, y):
        seen.append(tuple(t.shape))
        return -w * y * (1.0 + t)

    y0 = torch.ones(4, 2, dtype=DTYPE)
    ys = physode.odeint(field, y0, [0.0, 1.0], step_control="per-sample", rtol=1e-8, atol=1e-8)
    ys[-1].sum().backward()
    assert set(seen) == {(4, 1)}
    assert w.grad.item() == pytest.approx(-8 * 1.5 * math.exp(-0.75), rel=1e-6)


_GLOBAL_MODEL = Field()


def _global_field(t, y):
    return _GLOBAL_MODEL(t, y)


@pytest.mark.parametrize("step_control", ["shared", "per-sample"])
def test_a_solve_without_gradient_returns_ordinary_tensors(step_control):
    # What a solve nobody differentiates returns must still work in place and inside later
    # autograd graphs, like any other tensor.
    y0 = torch.ones(3, 2, dtype=torch.float64)
    with torch.no_grad():
        sol = physode.solve(lambda t, y: -y, y0, [0.0, 0.5, 1.0], step_control=step_control)
    for tensor in (sol.ys, sol.status, sol.t_final, sol.h_final, sol.stats.n_steps):
        if isinstance(tensor, torch.Tensor):
            assert not tensor.is_inference()
    sol.ys.mul_(2.0)
    w = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
    (w * sol.ys[-1]).sum().backward()
    assert w.grad.item() == pytest.approx(12.0 * math.exp(-1.0), rel=1e-6)


@pytest.mark.parametrize("times_require_grad", [False, True])
@pytest.mark.parametrize(
    ("gradient", "step_control"),
    [("aca", "shared"), ("disc-opt", "shared"), ("opt-disc", "shared"), ("aca", "per-sample")],
)
def test_a_state_made_under_inference_mode_starts_a_differentiated_solve(
    gradient, step_control, times_require_grad
):
    # A rollout run under torch.inference_mode(), as "Solves without gradients" suggests, gives
    # inference tensors; starting a training solve from one failed in ACA (the default) and
    # wherever t requires grad: "Inference tensors cannot be saved for backward".
    w = torch.tensor(0.5, dtype=DTYPE, requires_grad=True)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=DTYPE, requires_grad=times_require_grad)
    with torch.inference_mode():
        y0 = physode.odeint(lambda t, y: -y, torch.ones(2, 1, dtype=DTYPE), [0.0, 0.1])[-1]
    ys = physode.odeint(
        lambda t, y: -w * y, y0, t, gradient=gradient, step_control=step_control, rtol=1e-10
    )
    ys[-1].sum().backward()
    start = 2 * math.exp(-0.1)  # y(1) = start exp(-w): d/dw = -start exp(-w), d/dt1 = -w y(1)
    assert w.grad.item() == pytest.approx(-start * math.exp(-0.5), rel=1e-6)
    if times_require_grad:
        assert t.grad[-1].item() == pytest.approx(-0.5 * start * math.exp(-0.5), rel=1e-6)
    assert y0.is_inference()  # the caller's tensor is left as it is


class _HamiltonianNet(nn.Module):
    """dy/dt = J grad H(y) with H a network, differentiated by autograd inside forward: the
    usual Hamiltonian-network pattern, which needs autograd even when nobody differentiates
    the solve."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.H = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1)).double()

    def forward(self, t, y):
        with torch.enable_grad():
            y = y if y.requires_grad else y.detach().requires_grad_(True)
            (dH,) = torch.autograd.grad(self.H(y).sum(), y, create_graph=torch.is_grad_enabled())
        return torch.stack([dH[..., 1], -dH[..., 0]], dim=-1)


def test_a_field_that_uses_autograd_inside_solves_under_no_grad():
    y0 = torch.randn(4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    f = _HamiltonianNet()
    with torch.no_grad():
        ys = physode.odeint(f, y0, t, rtol=1e-9, atol=1e-9)
    reference = torchdiffeq.odeint(f, y0, t, rtol=1e-11, atol=1e-11)
    torch.testing.assert_close(ys, reference.detach(), rtol=1e-7, atol=1e-7)
    # The flow conserves H.
    with torch.no_grad():
        energy = f.H(ys).squeeze(-1)
    torch.testing.assert_close(energy, energy[:1].expand_as(energy), rtol=1e-7, atol=1e-7)


class _LazyConstant(nn.Module):
    """Builds a constant on its first call and keeps it, as many user modules do."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(0.5, dtype=torch.float64))
        self.rotation = None

    def forward(self, t, y):
        if self.rotation is None:
            self.rotation = torch.tensor([[0.0, 1.0], [-1.0, 0.0]], dtype=y.dtype)
        return self.w * (y @ self.rotation.T)


@pytest.mark.parametrize("gradient", ["disc-opt", "aca", "opt-disc"])
def test_a_constant_made_during_a_solve_without_gradient_serves_later_training(gradient):
    f = _LazyConstant()
    y0 = torch.tensor([1.0, 0.0], dtype=torch.float64)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    with torch.no_grad():  # a validation rollout before the first training step
        physode.odeint(f, y0, t)
    physode.odeint(f, y0, t, gradient=gradient, rtol=1e-10, atol=1e-10)[-1, 0].backward()
    # y(1) = (cos w, -sin w), so d y_0(1) / dw = -sin w.
    assert f.w.grad.item() == pytest.approx(-math.sin(0.5), rel=1e-7)


def _exact_modes():
    return ["disc-opt", "aca", physode.OptDisc(rtol=1e-11, atol=1e-11)]


@pytest.mark.parametrize("gradient", _exact_modes())
@pytest.mark.parametrize("transform", ["shift", "scale"])
@pytest.mark.parametrize("given", ["closure", "global", "params=[w]"])
def test_a_parameter_transformed_outside_the_solve_gets_its_gradient_once(
    gradient, transform, given
):
    # func uses w2 = f(w), computed before the solve: ACA and Opt-Disc once counted w twice (w2
    # from the closure, w behind it in the graph) or freed w2's history on their first step.
    w = torch.tensor(0.7, dtype=DTYPE, requires_grad=True)
    w2 = w + 0.5 if transform == "shift" else 2.0 * w
    global _TRANSFORMED
    _TRANSFORMED = w2

    def closure(t, y):
        return -w2 * y

    func = {"closure": closure, "global": _transformed_field, "params=[w]": closure}[given]
    params = [w] if given == "params=[w]" else None
    ys = physode.odeint(func, torch.ones(2, dtype=DTYPE), [0.0, 0.5, 1.0], gradient=gradient,
                        params=params, rtol=1e-11, atol=1e-11)  # fmt: skip
    (grad,) = torch.autograd.grad(ys[1:].sum(), [w])
    rate = w2.item()
    slope = 1.0 if transform == "shift" else 2.0  # dw2/dw
    expected = 2 * slope * (-0.5 * math.exp(-0.5 * rate) - math.exp(-rate))
    assert grad.item() == pytest.approx(expected, rel=1e-7)


_TRANSFORMED = None


def _transformed_field(t, y):
    return -_TRANSFORMED * y


def test_a_module_using_a_tensor_that_is_not_its_parameter_gets_the_same_gradient_in_every_mode():
    class Scaled(nn.Module):
        def __init__(self, rate):
            super().__init__()
            self.rate = rate  # a plain attribute, not an nn.Parameter

        def forward(self, t, y):
            return -self.rate * y

    grads = {}
    for mode in _exact_modes():
        rate = torch.tensor(0.3, dtype=DTYPE, requires_grad=True)
        ys = physode.odeint(Scaled(rate), torch.ones(1, dtype=DTYPE), [0.0, 1.0],
                            gradient=mode, rtol=1e-11, atol=1e-11)  # fmt: skip
        ys[-1].sum().backward()
        grads[str(mode)] = rate.grad.item()
    assert all(g == pytest.approx(-math.exp(-0.3), rel=1e-7) for g in grads.values()), grads


@pytest.mark.parametrize(
    "gradient, step_control", [("aca", "shared"), ("opt-disc", "shared"), ("aca", "per-sample")]
)
def test_second_derivatives_through_aca_or_opt_disc_are_refused_not_wrong(gradient, step_control):
    # They once came out silently wrong: d2/dw2 of w y(1) was -0.745 for -0.968.
    w = torch.tensor(0.7, dtype=DTYPE, requires_grad=True)
    ys = physode.odeint(lambda t, y: -w * y, torch.ones(1, 1, dtype=DTYPE), [0.0, 1.0],
                        gradient=gradient, params=[w], step_control=step_control)  # fmt: skip
    with pytest.raises(physode.UnsupportedError, match="create_graph=True.*disc-opt") as caught:
        torch.autograd.grad((w * ys[-1]).sum(), [w], create_graph=True)
    assert isinstance(caught.value, RuntimeError)  # as it was before it became a PhysodeError


@pytest.mark.parametrize("gradient", ["aca", "opt-disc"])
@pytest.mark.parametrize("which", ["jvp", "hvp"])
def test_functional_jvp_and_hvp_through_aca_or_opt_disc_are_refused_by_their_names(gradient, which):
    # torch.autograd.functional.jvp and hvp differentiate a backward pass themselves: the
    # refusal spoke of create_graph=True, which the caller never wrote.
    w = torch.tensor(0.7, dtype=DTYPE, requires_grad=True)
    y0 = torch.ones(1, dtype=DTYPE)

    def final(y):
        return physode.odeint(lambda t, z: -w * z, y, [0.0, 1.0], gradient=gradient)[-1]

    with pytest.raises(physode.UnsupportedError, match="functional.jvp, hvp.*disc-opt"):
        if which == "jvp":
            torch.autograd.functional.jvp(final, y0, torch.ones_like(y0))
        else:
            torch.autograd.functional.hvp(lambda y: final(y).sum(), y0, torch.ones_like(y0))


def test_disc_opt_gives_second_derivatives():
    w = torch.tensor(0.7, dtype=DTYPE, requires_grad=True)
    ys = physode.odeint(lambda t, y: -w * y, torch.ones(1, dtype=DTYPE), [0.0, 1.0],
                        gradient="disc-opt", method="rk4", step_size=1e-3)  # fmt: skip
    (g,) = torch.autograd.grad((w * ys[-1]).sum(), [w], create_graph=True)
    (h,) = torch.autograd.grad(g, [w])
    # d2/dw2 of w exp(-w) = (w - 2) exp(-w)
    assert h.item() == pytest.approx((0.7 - 2.0) * math.exp(-0.7), rel=1e-8)


def test_opt_disc_handles_a_func_that_depends_on_neither_y_nor_parameters():
    y0 = torch.ones(2, dtype=DTYPE, requires_grad=True)
    ys = physode.odeint(lambda t, y: torch.ones_like(y), y0, [0.0, 1.0, 2.0], gradient="opt-disc")
    (grad,) = torch.autograd.grad(ys.sum(), [y0])
    torch.testing.assert_close(grad, torch.full_like(y0, 3.0))


def test_opt_disc_backward_evaluations_add_up_over_two_backward_passes():
    w = torch.tensor(0.7, dtype=DTYPE, requires_grad=True)
    sol = physode.solve(lambda t, y: -w * y, torch.ones(1, dtype=DTYPE), [0.0, 1.0],
                        gradient="opt-disc", params=[w])  # fmt: skip
    sol.ys[-1].sum().backward(retain_graph=True)
    once = sol.stats.nfe_backward
    sol.ys[-1].sum().backward()
    assert once > 0 and sol.stats.nfe_backward == 2 * once


def test_opt_disc_estimates_the_backward_first_step_once_not_once_per_output_interval(monkeypatch):
    # Each interval after the first starts from the step size the previous one ended with; an
    # estimate per interval cost an evaluation and a host read each, and its small guesses
    # doubled the backward steps here (706 -> 363 evaluations at 1e-6 over 50 intervals).
    import physode.solvers.loop as loop

    calls = []
    estimate = loop.initial_step
    monkeypatch.setattr(loop, "initial_step", lambda *a, **k: calls.append(1) or estimate(*a, **k))
    w = torch.tensor(0.7, dtype=DTYPE, requires_grad=True)
    y0 = torch.tensor([1.0, 0.5], dtype=DTYPE, requires_grad=True)
    t = torch.linspace(0.0, 5.0, 11, dtype=DTYPE)
    sol = physode.solve(lambda t, y: -w * y.flip(-1), y0, t, gradient="opt-disc", params=[w],
                        rtol=1e-8, atol=1e-10)  # fmt: skip
    forward_estimates = len(calls)
    grads = torch.autograd.grad((sol.ys**2).sum(), [y0, w])
    assert forward_estimates == 1 and len(calls) == 2
    reference = physode.solve(lambda t, y: -w * y.flip(-1), y0, t, gradient="disc-opt",
                              params=[w], rtol=1e-8, atol=1e-10)  # fmt: skip
    expected = torch.autograd.grad((reference.ys**2).sum(), [y0, w])
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=0.0)


@pytest.mark.parametrize(
    "forward, mode, expected",
    [
        ({"method": "rk4", "step_size": 0.1}, {"rtol": 1e-10, "atol": 1e-12}, "rtol and atol"),
        ({"method": "leapfrog", "step_size": 0.1}, {"rtol": 1e-10}, "rtol and atol"),
        ({"method": "dopri5"}, {"step_size": 0.01}, "step_size is for a fixed-step"),
    ],
)
def test_opt_disc_refuses_settings_its_backward_method_would_ignore(forward, mode, expected):
    # OptDisc(rtol=1e-10) after an rk4 forward solve once ran its backward solve with rk4 at the
    # forward step, ignoring the tolerances: a gradient 3e-5 off where 1e-10 was asked for.
    calls = []

    def field(t, y):
        calls.append(t)
        return torch.cat([y[..., 1:], -y[..., :1]], dim=-1)

    field.separable, field.n_coordinates = True, 1
    y0 = torch.tensor([1.0, 0.0], dtype=DTYPE, requires_grad=True)
    with pytest.raises(physode.InvalidArgumentError, match=expected):
        physode.odeint(field, y0, [0.0, 1.0], gradient=physode.OptDisc(**mode), **forward)
    # Refused before the forward solve: at most the first evaluation, and for a symplectic
    # method the five that check its split (dq/dt is v here), were made (a forward solve makes
    # 16 or more).
    assert len(calls) <= 1 + (5 if forward["method"] == "leapfrog" else 0)


@pytest.mark.parametrize(
    "mode, expected",
    [
        ({"method": "rk4", "step_size": 0.1, "atol": 1e-12}, "rtol and atol"),
        ({"method": "tsit5", "step_size": 0.1}, "step_size is for a fixed-step"),
    ],
)
def test_opt_disc_with_its_own_method_refuses_settings_it_would_ignore_when_made(mode, expected):
    with pytest.raises(physode.InvalidArgumentError, match=expected):
        physode.OptDisc(**mode)


def test_opt_disc_warns_that_its_rtol_below_float32_resolution_is_raised():
    w = torch.tensor(0.7, requires_grad=True)
    mode = physode.OptDisc(rtol=1e-10, atol=1e-12)
    with pytest.warns(UserWarning, match="OptDisc: rtol=1e-10 is below the resolution"):
        ys = physode.odeint(lambda t, y: -w * y, torch.ones(2), [0.0, 1.0], gradient=mode)
    (grad,) = torch.autograd.grad(ys[-1].sum(), [w])
    assert grad.item() == pytest.approx(-2.0 * math.exp(-0.7), rel=1e-5)


@pytest.mark.parametrize(
    "make, expected",
    [
        (
            lambda: physode.OptDisc(restart="False"),
            "restart must be True, False or 'steps' .*, got 'False'",
        ),
        (lambda: physode.OptDisc(seminorm="no"), "seminorm must be True or False"),
        (lambda: physode.ACA(keep_last_graph="False"), "keep_last_graph must be True or False"),
    ],
)
def test_gradient_mode_switches_refuse_a_string_that_would_read_as_true(make, expected):
    # OptDisc(restart="False") once ran the restarted variant: any non-empty string is truthy.
    with pytest.raises(physode.InvalidArgumentError, match=expected):
        make()


@pytest.mark.parametrize("gradient", ["disc-opt", "aca", "opt-disc"])
def test_outputs_changed_in_place_after_the_solve_still_get_the_gradient(gradient):
    # Opt-Disc once saved the returned ys for its backward pass, so `ys -= ...` made autograd
    # refuse the backward pass, while the exact modes went through.
    w = torch.tensor(0.7, dtype=DTYPE, requires_grad=True)
    y0 = torch.tensor([1.0, 2.0], dtype=DTYPE, requires_grad=True)
    ys = physode.odeint(lambda t, y: -w * y, y0, [0.0, 0.5, 1.0], gradient=gradient,
                        rtol=1e-10, atol=1e-12)  # fmt: skip
    ys[0].mul_(2.0)
    ys -= 1.0
    grad_w, grad_y0 = torch.autograd.grad(ys.square().sum(), [w, y0])
    # loss = sum_k c_k sum_i (c_k y0_i e^{-w t_k} - 1)^2 with c = (2, 1, 1), t = (0, 0.5, 1)
    expected_w = expected_y0 = 0.0
    for c, s in [(2.0, 0.0), (1.0, 0.5), (1.0, 1.0)]:
        y = c * y0.detach() * math.exp(-0.7 * s)
        expected_w += (2.0 * (y - 1.0) * -s * y).sum().item()
        expected_y0 = expected_y0 + 2.0 * (y - 1.0) * c * math.exp(-0.7 * s)
    assert grad_w.item() == pytest.approx(expected_w, rel=1e-7)
    torch.testing.assert_close(grad_y0, expected_y0, rtol=1e-7, atol=0.0)


@pytest.mark.parametrize("gradient", ["aca", physode.ACA(keep_last_graph=False), "opt-disc"],
                         ids=str)  # fmt: skip
@pytest.mark.parametrize("changed", ["parameter", "y0"])
def test_a_backward_pass_after_an_in_place_change_of_the_inputs_is_refused_not_wrong(
    gradient, changed
):
    # ACA replays the steps from the live y0 and parameters: after an optimizer step between
    # the solve and backward() its gradient came out silently wrong (-0.67 for -1.04; -1.07
    # after a change of y0), where autograd refuses Disc-Opt's. Opt-Disc's backward solve used
    # the new parameter too, and failed on a state that no longer matched them.
    w = torch.tensor(0.7, dtype=DTYPE, requires_grad=True)
    y0 = torch.tensor([1.0, 2.0], dtype=DTYPE)
    ys = physode.odeint(lambda t, y: -w * y * y, y0, [0.0, 1.0], gradient=gradient)
    with torch.no_grad():
        (w if changed == "parameter" else y0).add_(0.5)
    if changed == "y0" and gradient == "opt-disc":  # it solves back from the stored outputs
        (grad,) = torch.autograd.grad(ys[-1].sum(), [w])
        assert grad.item() == pytest.approx(-(1 / 1.7**2 + 4 / 2.4**2), rel=1e-5)
        return
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        torch.autograd.grad(ys[-1].sum(), [w])


def test_a_per_sample_aca_backward_after_a_parameter_changed_in_place_is_refused():
    # Per-sample ACA replayed its rows with the new parameter: -0.66 instead of -1.04.
    w = torch.tensor(0.7, dtype=DTYPE, requires_grad=True)
    y0 = torch.tensor([[1.0], [2.0]], dtype=DTYPE)
    ys = physode.odeint(lambda t, y: -w * y * y, y0, [0.0, 1.0], gradient="aca",
                        step_control="per-sample")  # fmt: skip
    with torch.no_grad():
        w.add_(0.5)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        torch.autograd.grad(ys[-1].sum(), [w])


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda: physode.OptDisc(method=["rk4"]), r"unknown backward method \['rk4'\].*rk4"),
        (lambda: physode.OptDisc(method={"rk4": 0.1}), r"unknown backward method .*dopri5"),
        (
            lambda: physode.OptDisc(restart=np.array([True, False])),
            "restart must be True, False or",
        ),
        (lambda: physode.OptDisc(seminorm=torch.tensor([1, 0])), "seminorm must be True or"),
        (lambda: physode.ACA(keep_last_graph=torch.tensor([True, False])), "keep_last_graph"),
    ],
)
def test_gradient_mode_settings_of_the_wrong_type_are_refused_with_the_valid_choices(
    make, expected
):
    # They once escaped as TypeError (unhashable list) or as the ambiguous truth value of an array.
    with pytest.raises(physode.InvalidArgumentError, match=expected):
        make()


@pytest.mark.parametrize("gradient", ["disc-opt", "aca", "opt-disc"])
def test_params_listing_a_tensor_and_one_computed_from_it_are_refused(gradient):
    # ACA and Opt-Disc doubled raw's gradient (-1.467 for -0.733): once directly, once through
    # softplus(raw), which autograd then passed on to raw.
    raw = torch.tensor(0.3, dtype=DTYPE, requires_grad=True)
    rate = torch.nn.functional.softplus(raw)
    y0 = torch.ones(2, dtype=DTYPE)
    refused = r"params\[1\] is computed from params\[0\]"
    with pytest.raises(physode.InvalidArgumentError, match=refused):
        physode.odeint(lambda t, y: -rate * y, y0, [0.0, 1.0], gradient=gradient,
                       params=[raw, rate.exp() + 1.0])  # fmt: skip
    # Either one alone gives the gradient of the solution y = exp(-softplus(raw) t).
    for params in ([rate], [raw]):
        ys = physode.odeint(lambda t, y: -rate * y, y0, [0.0, 1.0], gradient=gradient,
                            params=params, rtol=1e-10, atol=1e-12)  # fmt: skip
        (grad,) = torch.autograd.grad(ys[-1].sum(), [raw], retain_graph=True)
        expected = -2.0 * math.exp(-rate.item()) * torch.sigmoid(raw).item()
        assert grad.item() == pytest.approx(expected, rel=1e-7)


def _linear_end(gradient):
    A = torch.tensor([[0.0, 1.0], [-1.0, -0.1]], dtype=torch.float64)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    return lambda y: physode.odeint(lambda s, x: x @ A.T, y, t, gradient=gradient)[-1], A


@pytest.mark.parametrize("gradient", ["disc-opt", "aca", "opt-disc"])
@pytest.mark.parametrize("transform", ["jacfwd", "jvp", "dual"])
def test_forward_mode_differentiation_is_refused_not_silently_wrong(gradient, transform):
    # The solver evaluates func on detached states, which drops tangents: without the refusal
    # the tangent came back off by 1e-3 here (and zero when the solve ran in inference mode).
    end, _ = _linear_end(gradient)
    y0 = torch.tensor([1.0, 0.5], dtype=torch.float64)
    v = torch.tensor([1.0, 0.0], dtype=torch.float64)
    with pytest.raises(physode.UnsupportedError, match="forward-mode.*reverse mode"):
        if transform == "jacfwd":
            torch.func.jacfwd(end)(y0)
        elif transform == "jvp":
            torch.func.jvp(end, (y0,), (v,))
        else:
            with torch.autograd.forward_ad.dual_level():
                end(torch.autograd.forward_ad.make_dual(y0, v))


@pytest.mark.parametrize("gradient", ["aca", "opt-disc"])
def test_torch_func_reverse_transforms_name_the_mode_that_supports_them(gradient):
    end, _ = _linear_end(gradient)
    y0 = torch.tensor([1.0, 0.5], dtype=torch.float64)
    with pytest.raises(physode.UnsupportedError, match="gradient='disc-opt'"):
        torch.func.jacrev(end)(y0)


def test_vmap_is_refused_with_the_batched_alternative():
    end, _ = _linear_end("disc-opt")
    with pytest.raises(physode.UnsupportedError, match="stack the initial states"):
        torch.func.vmap(end)(torch.ones(3, 2, dtype=torch.float64))


@pytest.mark.parametrize("gradient", ["disc-opt", "aca", "opt-disc"])
def test_reverse_mode_jacobians_of_a_solve_are_exact(gradient):
    end, A = _linear_end(gradient)
    y0 = torch.tensor([1.0, 0.5], dtype=torch.float64)
    exact = torch.linalg.matrix_exp(A)
    jacobians = [torch.autograd.functional.jacobian(end, y0)]
    if gradient == "disc-opt":
        jacobians.append(torch.func.jacrev(end)(y0))
    for jacobian in jacobians:
        torch.testing.assert_close(jacobian, exact, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("gradient", ["disc-opt", "aca"])
def test_vectorized_jacobians_of_a_solve_are_exact_in_the_modes_that_batch_their_backward(
    gradient,
):
    end, A = _linear_end(gradient)
    y0 = torch.tensor([1.0, 0.5], dtype=torch.float64)
    jacobian = torch.autograd.functional.jacobian(end, y0, vectorize=True)
    torch.testing.assert_close(jacobian, torch.linalg.matrix_exp(A), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("batched", ["jacobian", "grad"])
def test_opt_disc_refuses_a_batched_backward_pass_naming_the_ways_out(batched):
    # It failed inside its backward solve: 'Batching rule not implemented for aten::detach'.
    end, _ = _linear_end("opt-disc")
    y0 = torch.tensor([1.0, 0.5], dtype=torch.float64)
    with pytest.raises(physode.UnsupportedError, match="batched backward pass.*vectorize=False"):
        if batched == "jacobian":
            torch.autograd.functional.jacobian(end, y0, vectorize=True)
        else:
            y0.requires_grad_(True)
            cotangents = torch.eye(2, dtype=torch.float64)
            torch.autograd.grad(end(y0), y0, cotangents, is_grads_batched=True)


_LATE_RATE = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)


def _switched_decay(t, y):
    # The global rate enters only after t = 0.5: the first evaluation's graph does not show it.
    return -y if t < 0.5 else -_LATE_RATE * y


@pytest.mark.parametrize("gradient", _exact_modes())
def test_a_global_reached_only_after_a_branch_gets_its_gradient(gradient):
    _LATE_RATE.grad = None
    y0 = torch.tensor([1.0], dtype=torch.float64, requires_grad=True)
    ys = physode.odeint(_switched_decay, y0, [0.0, 1.0], gradient=gradient, rtol=1e-10, atol=1e-10)
    ys[-1].sum().backward()
    # The switch makes the field discontinuous, so the steps straddling it limit the accuracy.
    # y(1) = exp(-0.5) exp(-0.5 k): dy(1)/dk = -0.5 y(1).
    assert _LATE_RATE.grad is not None
    assert _LATE_RATE.grad.item() == pytest.approx(-0.5 * math.exp(-1.5), rel=1e-4)


def _switched_by(model, rate, t, y):
    # The module and the tensor enter only after t = 0.5, as in _switched_decay.
    return -y if t < 0.5 else model(y) - rate * y


def _switched_by_keywords(t, y, *, model, rate):
    return _switched_by(model, rate, t, y)


def _decorated(func):
    @functools.wraps(func)
    def wrapper(t, y):
        return func(t, y)

    return wrapper


def _wrapped_field(how, model, rate):
    """``_switched_by`` of ``model`` and ``rate`` as a torchdiffeq port may pass it: bound by
    ``functools.partial``, or a closure behind a decorator or ``torch.compile``."""
    if how == "partial":
        return functools.partial(_switched_by, model, rate)
    if how == "partial keywords":
        return functools.partial(_switched_by_keywords, model=model, rate=rate)
    if how == "nested partials":
        return functools.partial(functools.partial(_switched_by, model), rate)

    def field(t, y):
        return _switched_by(model, rate, t, y)

    return _decorated(field) if how == "decorated" else torch.compile(field, backend="eager")


@pytest.mark.parametrize("gradient", _exact_modes())
@pytest.mark.parametrize(
    "how", ["partial", "partial keywords", "nested partials", "decorated", "compiled"]
)
def test_a_module_and_a_tensor_behind_a_partial_or_a_wrapper_get_their_gradients(gradient, how):
    # A torchdiffeq port passes its model as partial(field, model=net), or compiles its field:
    # only func's own closure and globals were searched, so ACA and Opt-Disc left the gradients
    # of a module and a tensor that func reaches only after t = 0.5 at None.
    torch.manual_seed(0)
    model, rate = nn.Linear(2, 2).to(DTYPE), torch.tensor(0.3, dtype=DTYPE, requires_grad=True)
    func = _wrapped_field(how, model, rate)
    y0 = torch.tensor([1.0, -0.5], dtype=DTYPE, requires_grad=True)

    def gradients(mode):
        model.zero_grad()
        rate.grad = None
        ys = physode.odeint(func, y0, [0.0, 1.0], gradient=mode, rtol=1e-10, atol=1e-10)
        (ys[-1] ** 2).sum().backward()
        return [model.weight.grad, model.bias.grad, rate.grad]

    expected = gradients("disc-opt")  # records whatever func uses
    for got, want in zip(gradients(gradient), expected, strict=True):
        assert got is not None
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-9)


class _BrokenWrapper:
    """A field whose ``__wrapped__`` raises an error of its own (an uninitialised proxy)."""

    @property
    def __wrapped__(self):
        raise RuntimeError("this proxy wraps nothing yet")

    def __call__(self, t, y):
        return -y


class _EndlessWrapper:
    """A field whose catch-all ``__getattr__`` (a remote-call proxy's) gives a new wrapper for
    ``__wrapped__`` each time it is read; after 1000 the test stops, where the search hung."""

    made = 0

    def __getattr__(self, name):
        if name != "__wrapped__":
            raise AttributeError(name)
        type(self).made += 1
        if type(self).made > 1000:
            raise RecursionError("__wrapped__ read 1000 times")
        return _EndlessWrapper()

    def __call__(self, t, y):
        return -y


@pytest.mark.parametrize("field", [_BrokenWrapper, _EndlessWrapper])
def test_a_field_whose_wrapped_function_cannot_be_followed_still_solves(field):
    # Since the search follows __wrapped__, a field whose __wrapped__ raised made solve raise
    # that error, and one that gives a new wrapper each time made it search without end.
    _EndlessWrapper.made = 0
    y0 = torch.tensor([1.0, -0.5], dtype=DTYPE)
    ys = physode.odeint(field(), y0, [0.0, 1.0], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(ys[-1], y0 * math.exp(-1.0), rtol=1e-8, atol=0.0)


class _Settings:
    rate = 0.5


_SETTINGS = _Settings()
rate = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)  # noqa: N816 - named like the attribute


def _reads_an_attribute_named_like_a_global(t, y):
    return -_SETTINGS.rate * y


def test_an_attribute_named_like_a_global_tensor_does_not_make_that_tensor_a_parameter():
    # co_names lists attribute names too: the global `rate` became a parameter of this solve,
    # which then kept a graph and gave `rate` a zero gradient.
    ys = physode.odeint(_reads_an_attribute_named_like_a_global, torch.ones(3, dtype=torch.float64),
                        [0.0, 1.0])  # fmt: skip
    assert not ys.requires_grad


@pytest.mark.parametrize("gradient", ["aca", "opt-disc"])
@pytest.mark.parametrize("transform", ["jvp", "dual"])
def test_a_tangent_carried_by_a_captured_tensor_is_refused_where_the_mode_would_drop_it(
    gradient, transform
):
    # Only y0 and the parameters found were checked: a tangent on a tensor func captures came
    # back 0.4 % off (-0.4944 for -0.4966) from ACA and Opt-Disc, without a word.
    y0 = torch.tensor([1.0], dtype=torch.float64)
    w, v = torch.tensor(0.7, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64)

    def end(rate):
        return physode.odeint(lambda s, y: -rate * y, y0, [0.0, 1.0], gradient=gradient)[-1]

    with pytest.raises(physode.UnsupportedError):
        if transform == "jvp":
            torch.func.jvp(end, (w,), (v,))
        else:
            with torch.autograd.forward_ad.dual_level():
                end(torch.autograd.forward_ad.make_dual(w, v))


def test_disc_opt_carries_the_tangent_of_a_captured_tensor_exactly():
    y0 = torch.tensor([1.0], dtype=torch.float64)
    w, v = torch.tensor(0.7, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64)
    _, tangent = torch.func.jvp(
        lambda rate: physode.odeint(lambda s, y: -rate * y, y0, [0.0, 1.0], gradient="disc-opt",
                                    rtol=1e-11, atol=1e-11)[-1],
        (w,), (v,),
    )  # fmt: skip
    assert tangent.item() == pytest.approx(-math.exp(-0.7), rel=1e-8)


def _dropout_field() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(2, 8), nn.Dropout(0.2), nn.Tanh(), nn.Linear(8, 2)).to(DTYPE)


class _OnStateOnly(nn.Module):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, t, y):
        return self.net(y)


@pytest.mark.parametrize(
    ("method", "gradient", "says"),
    [
        ("rk4", "aca", "backward pass with other masks"),
        ("rk4", "opt-disc", "backward pass with other masks"),
        ("dopri5", "disc-opt", "shrinks the steps"),
    ],
)
def test_dropout_in_training_mode_is_warned_of_where_it_breaks_the_solve(method, gradient, says):
    func = _OnStateOnly(_dropout_field())
    y0 = torch.ones(3, 2, dtype=DTYPE, requires_grad=True)
    step = {"step_size": 0.25} if method == "rk4" else {"max_steps": 20, "throw": False}
    with pytest.warns(physode.PhysodeWarning, match=f"Dropout.*training mode.*{says}"):
        physode.solve(func, y0, [0.0, 0.5], method=method, gradient=gradient, **step)


def test_dropout_is_not_warned_of_in_eval_mode_nor_with_fixed_steps_and_disc_opt():
    func = _OnStateOnly(_dropout_field())
    y0 = torch.ones(3, 2, dtype=DTYPE, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        physode.solve(func, y0, [0.0, 0.5], method="rk4", step_size=0.25, gradient="disc-opt")
        func.eval()
        physode.solve(func, y0, [0.0, 0.5], gradient="aca")


class _DonatingBackward(torch.autograd.Function):
    """Stands in for a torch.compile-d func whose compiled backward donates its buffers, and so
    refuses retain_graph=True with this message of torch's (torch.compile itself takes seconds)."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError(
            "This backward function was compiled with non-empty donated buffers which requires "
            "create_graph=False and retain_graph=False. Please keep backward(create_graph=False, "
            "retain_graph=False) across all backward() function calls, or set "
            "torch._functorch.config.donated_buffer=False to disable donated buffer."
        )


@pytest.mark.parametrize("gradient", ["aca", "opt-disc"])
def test_a_compiled_funcs_refusal_to_keep_its_graph_is_said_with_the_ways_out(gradient):
    w = torch.tensor(0.5, dtype=DTYPE, requires_grad=True)
    ys = physode.odeint(
        lambda t, y: _DonatingBackward.apply(-w * y),
        torch.ones(2, dtype=DTYPE),
        [0.0, 0.2, 0.4],
        method="rk4",
        step_size=0.1,
        gradient=gradient,
    )
    with pytest.raises(
        physode.UnsupportedError,
        match="torch.compile.*donated_buffer = False before .*first call.*gradient='disc-opt'",
    ):
        ys.sum().backward()


class _Recording(physode.DiscOpt):
    """Disc-Opt that keeps the problem it solved and the loop's result."""

    def solve(self, problem):
        self.problem = problem
        ys, self.result = super().solve(problem)
        return ys, self.result


def test_a_problem_and_a_loop_result_print_shapes_not_weights_or_states():
    model = nn.Linear(300, 300).double()
    mode = _Recording()
    t = torch.linspace(0, 1, 200, dtype=torch.float64)
    physode.solve(lambda t, y: model(y), torch.ones(4, 300, dtype=torch.float64), t,
                  method="rk4", step_size=0.1, gradient=mode)  # fmt: skip
    problem = repr(mode.problem)
    assert len(problem) < 400 and "\n" not in problem
    assert "y0=Tensor(shape=(4, 300), dtype=float64)" in problem
    assert "times=list of 200, the first 0" in problem and "method='rk4'" in problem
    assert "params=(Tensor(shape=(300, 300), dtype=float64), Tensor(shape=(300,)," in problem
    result = repr(mode.result)
    assert result.startswith("LoopResult(status=SUCCESS, t=1, ys=list of 200, the first Tensor(")
    assert len(result) < 200


def test_a_trace_prints_its_lists_by_length():
    trace = Trace()
    stepper = make_stepper("rk4")
    times = torch.linspace(0, 1, 50, dtype=torch.float64).tolist()
    integrate(stepper, lambda t, y: -y, torch.ones(1000, dtype=torch.float64), times, rtol=0.0,
              atol=0.0, step_size=0.01, first_step=None, max_steps=1000, stats=physode.Stats(),
              trace=trace)  # fmt: skip
    text = repr(trace)
    assert len(text) < 300
    assert len(trace.y) > 100
    assert f"y=list of {len(trace.y)}, the first Tensor(shape=(1000,), dtype=float64)" in text


def test_partly_built_gradient_modes_print_without_raising():
    for cls in (physode.ACA, physode.OptDisc):
        assert repr(cls.__new__(cls)).startswith(f"<{cls.__name__}, not readable: AttributeError")
    assert repr(physode.gradients.Problem.__new__(physode.gradients.Problem)) == "Problem()"
