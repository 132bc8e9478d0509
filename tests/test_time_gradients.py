"""Gradients with respect to the output times ``t``, in every gradient mode.

For outputs of the exact flow, ``dL/dt_k = <dL/dy_k, f(t_k, y_k)>`` for ``k >= 1`` and
``dL/dt_0 = -<a(t_0), f(t_0, y0)>``, ``a(t_0)`` being the adjoint arriving at ``y0`` from the later
outputs. The solves here are accurate enough that the discrete solution's own derivative (which
differs by the method's error) agrees with it to the tolerances asserted.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from _host_syncs import HostSyncs
from torch import nn

import physode

DTYPE = torch.float64
MODES = ["disc-opt", "aca", "opt-disc"]
RATE = -0.7


def _tight(mode: str, method: str):
    """The mode, with Opt-Disc's backward solve as tight as the forward one."""
    if mode == "opt-disc" and method in ("dopri5", "dop853"):
        return physode.OptDisc(rtol=1e-11, atol=1e-13)
    return mode


def _vdp(t, z):
    x, v = z[..., 0], z[..., 1]
    return torch.stack([v, 1.5 * (1 - x * x) * v - x], dim=-1)


def _forced(t, z):
    """A damped, forced oscillator: f depends on t, so the t_0 term is not the y0 term's."""
    x, v = z[..., 0], z[..., 1]
    force = torch.cos(1.7 * t)
    if force.ndim:  # per-sample step control: one time per row, shaped (batch, 1)
        force = force[..., 0]
    return torch.stack([v, -x - 0.3 * v + force], dim=-1)


def _weights(shape, seed: int = 3) -> torch.Tensor:
    return torch.randn(shape, dtype=DTYPE, generator=torch.Generator().manual_seed(seed))


def _central_differences(loss_of_t, t: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    out = torch.empty_like(t)
    for k in range(len(t)):
        up, down = t.clone(), t.clone()
        up[k] += eps
        down[k] -= eps
        out[k] = (loss_of_t(up) - loss_of_t(down)) / (2 * eps)
    return out


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "options",
    [{"method": "dopri5", "rtol": 1e-11, "atol": 1e-13}, {"method": "rk4", "step_size": 1e-3}],
    ids=["dopri5", "rk4"],
)
@pytest.mark.parametrize("times", [[0.3, 0.8, 1.5, 2.0], [2.0, 1.5, 0.8, 0.3]],
                         ids=["forward", "backward"])  # fmt: skip
def test_time_gradients_of_a_linear_ode_are_those_of_its_closed_form(mode, options, times):
    # y = y0 exp(a (t_k - t_0)): d/dt_k = a y_k, and d/dt_0 = -sum_{k>=1} w_k a y_k.
    t = torch.tensor(times, dtype=DTYPE, requires_grad=True)
    y0 = torch.tensor([1.3, -0.4], dtype=DTYPE, requires_grad=True)
    w = _weights((4, 2))
    ys = physode.odeint(lambda s, y: RATE * y, y0, t,
                        gradient=_tight(mode, options["method"]), **options)  # fmt: skip
    grad_t, grad_y0 = torch.autograd.grad((w * ys).sum(), [t, y0])
    tt = t.detach()
    flow = torch.exp(RATE * (tt - tt[0]))
    per_output = (w * y0.detach()).sum(-1) * RATE * flow
    expected = per_output.clone()
    expected[0] = -per_output[1:].sum()
    assert torch.allclose(grad_t, expected, rtol=1e-8, atol=1e-9)
    assert torch.allclose(grad_y0, (w * flow[:, None]).sum(0), rtol=1e-8)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("field", [_vdp, _forced], ids=["van_der_pol", "forced"])
def test_time_gradients_match_central_differences_on_a_nonlinear_problem(mode, field):
    options = {"method": "dop853", "rtol": 1e-12, "atol": 1e-12}
    y0 = torch.tensor([1.5, 0.2], dtype=DTYPE)
    w = _weights((5, 2))

    def loss(t):
        return (w * physode.odeint(field, y0, t, **options)).sum()

    t = torch.tensor([0.2, 0.9, 1.6, 2.5, 3.0], dtype=DTYPE, requires_grad=True)
    ys = physode.odeint(field, y0, t, gradient=_tight(mode, "dop853"), **options)
    (grad_t,) = torch.autograd.grad((w * ys).sum(), [t])
    reference = _central_differences(loss, t.detach())
    assert (grad_t - reference).norm() <= 1e-6 * reference.norm()
    assert (grad_t[0] - reference[0]).abs() <= 1e-6 * reference.norm()  # t_0 alone too


class _Field(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.inner = nn.Linear(2, 8).to(DTYPE)
        self.outer = nn.Linear(8, 2).to(DTYPE)

    def forward(self, t, y):
        return self.outer(torch.tanh(self.inner(y))) * torch.cos(t) - 0.2 * y


@pytest.mark.parametrize("mode", MODES)
def test_one_backward_pass_gives_t_y0_and_the_parameters_of_a_module_their_gradients(mode):
    field = _Field()
    params = list(field.parameters())
    y0 = torch.randn(3, 2, dtype=DTYPE, generator=torch.Generator().manual_seed(1))
    y0.requires_grad_(True)
    options = {"method": "dopri5", "rtol": 1e-11, "atol": 1e-12, "gradient": _tight(mode, "dopri5")}
    w = _weights((4, 3, 2))
    t = torch.tensor([0.0, 0.4, 1.1, 1.7], dtype=DTYPE, requires_grad=True)
    ys = physode.odeint(field, y0, t, **options)
    grad_t, *rest = torch.autograd.grad((w * ys).sum(), [t, y0, *params])
    # y0 and the parameters get what they get without t requiring grad.
    ys_fixed = physode.odeint(field, y0, t.detach(), **options)
    assert not isinstance(t.grad, torch.Tensor)
    for got, want in zip(rest, torch.autograd.grad((w * ys_fixed).sum(), [y0, *params])):
        assert torch.allclose(got, want, rtol=1e-12, atol=1e-14)
    with torch.no_grad():
        reference = _central_differences(
            lambda s: (
                w * physode.odeint(field, y0, s, method="dop853", rtol=1e-12, atol=1e-12)
            ).sum(),
            t.detach(),
        )
    assert (grad_t - reference).norm() <= 1e-6 * reference.norm()


@pytest.mark.parametrize("mode", MODES)
def test_a_tuple_state_gives_t_the_gradient_of_the_same_state_stacked(mode):
    t_values = [0.0, 0.5, 1.2]
    w = _weights((3, 2))

    def split(s, y):
        return (y[1], 1.5 * (1 - y[0] ** 2) * y[1] - y[0])

    options = {"method": "dopri5", "rtol": 1e-10, "atol": 1e-12, "gradient": _tight(mode, "dopri5")}
    t = torch.tensor(t_values, dtype=DTYPE, requires_grad=True)
    xs, vs = physode.odeint(split, (torch.tensor(1.5, dtype=DTYPE), torch.tensor(0.2, dtype=DTYPE)),
                            t, **options)  # fmt: skip
    (grad_tuple,) = torch.autograd.grad((w[:, 0] * xs + w[:, 1] * vs).sum(), [t])
    t = torch.tensor(t_values, dtype=DTYPE, requires_grad=True)
    ys = physode.odeint(_vdp, torch.tensor([1.5, 0.2], dtype=DTYPE), t, **options)
    (grad_flat,) = torch.autograd.grad((w * ys).sum(), [t])
    assert torch.allclose(grad_tuple, grad_flat, rtol=1e-9, atol=1e-12)
    assert grad_flat.abs().min() > 1e-3  # every time has a gradient


@pytest.mark.parametrize("mode", ["disc-opt", "aca"])
def test_per_sample_step_control_gives_each_time_the_rows_summed_gradient(mode):
    y0 = torch.tensor([[1.5, 0.2], [0.3, -0.4], [2.0, 0.0]], dtype=DTYPE)
    w = _weights((4, 3, 2))
    options = {"method": "dopri5", "rtol": 1e-11, "atol": 1e-12, "gradient": mode}
    t = torch.tensor([2.0, 1.4, 0.6, 0.1], dtype=DTYPE, requires_grad=True)  # backward in time
    sol = physode.solve(_forced, y0, t, step_control="per-sample", **options)
    (grad_t,) = torch.autograd.grad((w * sol.ys).sum(), [t])
    expected = torch.zeros_like(grad_t)
    for row in range(3):
        t_row = t.detach().clone().requires_grad_(True)
        ys = physode.odeint(_forced, y0[row], t_row, **options)
        expected += torch.autograd.grad((w[:, row] * ys).sum(), [t_row])[0]
    assert torch.allclose(grad_t, expected, rtol=1e-7, atol=1e-10)
    assert int(sol.stats.nfe_backward.min()) >= len(t) + 1  # f at each output time and at y0


@pytest.mark.parametrize("mode", MODES)
def test_a_failed_solve_gives_only_the_outputs_it_reached_a_time_gradient(mode):
    # Blow-up of y' = y^2 at t = 1 / y0 = 1: the outputs at 1.5 and 2.0 are never reached.
    def blow_up(s, y):
        return y * y

    y0 = torch.tensor([1.0], dtype=DTYPE, requires_grad=True)
    options = {"method": "dopri5", "rtol": 1e-10, "atol": 1e-12, "max_steps": 400}
    t = torch.tensor([0.0, 0.3, 0.6, 1.5, 2.0], dtype=DTYPE, requires_grad=True)
    sol = physode.solve(blow_up, y0, t, throw=False, gradient=_tight(mode, "dopri5"), **options)
    assert not sol.success and torch.isnan(sol.ys[3:]).all()
    loss = torch.nan_to_num(sol.ys).sum()
    grad_t, grad_y0 = torch.autograd.grad(loss, [t, y0])
    assert (grad_t[3:] == 0).all()
    t_reached = t.detach()[:3].clone().requires_grad_(True)
    y0_reached = y0.detach().clone().requires_grad_(True)
    ys = physode.odeint(blow_up, y0_reached, t_reached, **options)
    expected = torch.autograd.grad(ys.sum(), [t_reached, y0_reached])
    assert torch.allclose(grad_t[:3], expected[0], rtol=1e-9)
    assert torch.allclose(grad_y0, expected[1], rtol=1e-9)


def test_a_row_that_fails_in_a_per_sample_solve_gives_its_unreached_outputs_no_time_gradient():
    def blow_up(s, y):
        return y * y

    y0 = torch.tensor([[1.0], [0.2]], dtype=DTYPE)  # row 0 blows up at t = 1, row 1 at t = 5
    t = torch.tensor([0.0, 0.5, 2.0], dtype=DTYPE, requires_grad=True)
    sol = physode.solve(blow_up, y0, t, step_control="per-sample", max_steps=300, gradient="aca",
                        rtol=1e-10, atol=1e-12)  # fmt: skip
    assert sol.status.tolist()[1] == physode.Status.SUCCESS and torch.isnan(sol.ys[2, 0]).all()
    (grad_t,) = torch.autograd.grad(torch.nan_to_num(sol.ys).sum(), [t])
    # y = y0 / (1 - y0 t): each reached output adds f = y^2 to its time, and t_0 gets
    # -<a, f(y0)> with a = sum over the later reached outputs of dy/dy0 = (y / y0)^2.
    row0, row1 = [2.0], [0.2 / (1 - 0.2 * s) for s in (0.5, 2.0)]
    expected = [
        -sum((y / 1.0) ** 2 for y in row0) * 1.0**2 - sum((y / 0.2) ** 2 for y in row1) * 0.2**2,
        row0[0] ** 2 + row1[0] ** 2,
        row1[1] ** 2,  # row 0 did not reach t = 2
    ]
    assert torch.allclose(grad_t, torch.tensor(expected, dtype=DTYPE), rtol=1e-6)


def _sqrt_decay(s, y):
    return -0.7 * torch.sqrt(y)  # undefined where y < 0


@pytest.mark.parametrize("mode", MODES)
def test_a_solve_that_stops_at_its_start_gives_t0_a_zero_gradient_not_nan(mode):
    # func is NaN at y0, so the solve stops there and only ys[0] = y0, which does not move
    # with t0, is reached. t0's two terms, -<G, f(t0, y0)> and <dL/dys[0], f(t0, y0)>, cancel
    # but for the NaN of f: t0's gradient was NaN.
    y0 = torch.tensor([1.0, -1.0], dtype=DTYPE, requires_grad=True)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=DTYPE, requires_grad=True)
    sol = physode.solve(_sqrt_decay, y0, t, gradient=mode, throw=False)
    assert sol.status == physode.Status.NON_FINITE
    grad_t, grad_y0 = torch.autograd.grad(torch.nan_to_num(sol.ys).sum(), [t, y0])
    assert grad_t.tolist() == [0.0, 0.0, 0.0]
    assert grad_y0.tolist() == [1.0, 1.0]


@pytest.mark.parametrize("mode", ["disc-opt", "aca"])
def test_a_row_undefined_at_its_start_leaves_the_per_sample_time_gradient_of_the_others(mode):
    # Row 1 stops at t0; the loss uses its ys[0] (y0 itself) and the other rows' outputs.
    y0 = torch.tensor([[1.0], [-1.0], [2.0]], dtype=DTYPE)
    w = _weights((3, 3, 1))
    options = {"step_control": "per-sample", "gradient": mode, "rtol": 1e-10, "atol": 1e-12}
    t = torch.tensor([0.0, 0.5, 1.0], dtype=DTYPE, requires_grad=True)
    sol = physode.solve(_sqrt_decay, y0, t, throw=False, **options)
    assert sol.status.tolist() == [0, int(physode.Status.NON_FINITE), 0]
    (grad_t,) = torch.autograd.grad((w * torch.nan_to_num(sol.ys)).sum(), [t])
    t_good = t.detach().clone().requires_grad_(True)
    ys = physode.odeint(_sqrt_decay, y0[[0, 2]], t_good, **options)
    (expected,) = torch.autograd.grad((w[:, [0, 2]] * ys).sum(), [t_good])
    torch.testing.assert_close(grad_t, expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("method, step, tol", [("leapfrog", 1e-3, 1e-5), ("yoshida4", 1e-2, 1e-6)])
@pytest.mark.parametrize("mode", ["disc-opt", "aca"])
def test_symplectic_methods_give_the_exact_flows_time_gradient(method, step, tol, mode):
    field = physode.systems.load("pendulum").vector_field()
    y0 = torch.tensor([[1.0, 0.0], [0.3, 0.5]], dtype=DTYPE)
    w = _weights((3, 2, 2))
    options = {"method": method, "step_size": step, "gradient": mode}
    t = torch.tensor([0.0, 0.7, 1.3], dtype=DTYPE, requires_grad=True)
    (grad_t,) = torch.autograd.grad((w * physode.odeint(field, y0, t, **options)).sum(), [t])
    exact = {"method": "dop853", "rtol": 1e-12, "atol": 1e-12}
    reference = _central_differences(
        lambda s: (w * physode.odeint(field, y0, s, **exact)).sum(), t.detach()
    )
    assert (grad_t - reference).norm() <= tol * reference.norm()


def test_gradcheck_accepts_the_time_gradient_of_a_tight_solve():
    y0 = torch.tensor([1.5, 0.2], dtype=DTYPE)

    def outputs(t):
        return physode.odeint(_forced, y0, t, method="dop853", rtol=1e-12, atol=1e-12)

    t = torch.tensor([0.1, 0.8, 1.9], dtype=DTYPE, requires_grad=True)
    assert torch.autograd.gradcheck(outputs, (t,), eps=1e-6, atol=1e-6, rtol=1e-5)


def test_times_that_require_grad_get_their_gradient_and_no_warning():
    t = torch.tensor([0.0, 1.0], dtype=DTYPE, requires_grad=True)
    y0 = torch.tensor([2.0], dtype=DTYPE)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ys = physode.odeint(lambda s, y: -y, y0, t)
    ys[-1].sum().backward()
    # d/dt_1 = -y(1) = -2 / e, d/dt_0 = +2 / e
    assert torch.allclose(t.grad, torch.tensor([2.0, -2.0], dtype=DTYPE) / math.e, rtol=1e-6)


def test_a_time_gradient_comes_in_the_dtype_of_t():
    t = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float32, requires_grad=True)
    ys = physode.odeint(lambda s, y: RATE * y, torch.ones(1, dtype=DTYPE), t)
    ys.sum().backward()
    assert t.grad.dtype == torch.float32
    assert t.grad[2].item() == pytest.approx(RATE * math.exp(RATE), rel=1e-5)


@pytest.mark.parametrize("mode", MODES)
def test_outputs_changed_in_place_still_give_the_time_gradient_of_the_solve(mode):
    t = torch.tensor([0.0, 0.5, 1.0], dtype=DTYPE, requires_grad=True)
    ys = physode.odeint(lambda s, y: RATE * y, torch.ones(2, dtype=DTYPE), t, gradient=mode,
                        method="rk4", step_size=1e-3)  # fmt: skip
    ys -= 1.0  # the states f is evaluated at are the solve's, not these
    ys.sum().backward()
    assert t.grad[2].item() == pytest.approx(2 * RATE * math.exp(RATE), rel=1e-10)


@pytest.mark.parametrize("mode", MODES)
def test_a_second_derivative_through_the_time_gradient_is_refused(mode):
    t = torch.tensor([0.0, 1.0], dtype=DTYPE, requires_grad=True)
    y0 = torch.tensor([1.0], dtype=DTYPE, requires_grad=True)
    ys = physode.odeint(lambda s, y: RATE * y, y0, t, gradient=mode, method="rk4", step_size=0.1)
    with pytest.raises(physode.UnsupportedError, match="create_graph=True"):
        torch.autograd.grad(ys.sum(), [t], create_graph=True)
    # torch.autograd.functional.jvp differentiates a backward pass without create_graph=True
    # in the caller's code; the refusal names it.
    with pytest.raises(physode.UnsupportedError, match="functional.jvp"):
        torch.autograd.functional.jvp(
            lambda s: physode.odeint(
                lambda s, y: RATE * y, y0.detach(), s, gradient=mode, method="rk4", step_size=0.1
            ),
            t,
            torch.ones_like(t),
        )


def test_the_time_gradient_costs_one_evaluation_per_output_time_and_one_at_y0():
    y0 = torch.tensor([1.0, 0.5], dtype=DTYPE, requires_grad=True)
    options = {"method": "rk4", "step_size": 0.1, "gradient": "disc-opt"}
    plain = physode.solve(_vdp, y0, torch.linspace(0, 1, 6, dtype=DTYPE), **options)
    plain.ys.sum().backward()
    assert plain.stats.nfe_backward == 0  # Disc-Opt backpropagates, and t needs nothing
    t = torch.linspace(0, 1, 6, dtype=DTYPE).requires_grad_(True)
    sol = physode.solve(_vdp, y0, t, **options)
    sol.ys.sum().backward()
    assert sol.stats.nfe_backward == 6 + 1
    assert sol.stats.nfe == plain.stats.nfe  # nothing added to the forward solve


@pytest.mark.parametrize("mode", MODES)
def test_the_time_gradient_adds_no_read_of_the_device(mode):
    y0 = torch.tensor([[1.0, 0.0], [2.0, 0.0]], dtype=DTYPE, requires_grad=True)
    counts = []
    for t_requires_grad in (False, True):
        t = torch.tensor([0.0, 1.0, 2.5], dtype=DTYPE, requires_grad=t_requires_grad)
        with HostSyncs() as syncs:
            ys = physode.odeint(_vdp, y0, t, gradient=mode)
            ys.sum().backward()
        counts.append(syncs.count)
    assert counts[1] == counts[0]
    assert t.grad is not None and bool(t.grad.ne(0).all())


def test_torch_func_transforms_over_the_output_times_are_refused_and_jacobian_works():
    y0 = torch.tensor([1.0], dtype=DTYPE)
    options = {"gradient": "disc-opt", "method": "rk4", "step_size": 0.01}

    def outputs(t):
        return physode.odeint(lambda s, y: -y, y0, t, **options)

    t = torch.tensor([0.0, 1.0], dtype=DTYPE)
    with pytest.raises(physode.UnsupportedError, match="output times t; use torch.autograd.grad"):
        torch.func.grad(lambda s: outputs(s).sum())(t)
    jacobian = torch.autograd.functional.jacobian(outputs, t)
    expected = torch.tensor([[[0.0, 0.0]], [[1.0, -1.0]]], dtype=DTYPE) / math.e
    assert torch.allclose(jacobian, expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("mode", ["disc-opt", "aca"])
@pytest.mark.parametrize("step_control", ["shared", "per-sample"])
def test_a_vectorized_jacobian_in_the_times_equals_the_closed_form(mode, step_control):
    # A batched backward pass (vectorize=True) failed in every mode: the time gradient was
    # written into a tensor of zeros, which vmap refuses ('aten::copy_ ... is not possible').
    y0 = torch.tensor([[1.0], [2.0]], dtype=DTYPE)
    options = {"gradient": mode, "step_control": step_control, "rtol": 1e-10, "atol": 1e-12}

    def outputs(t):
        return physode.odeint(lambda s, y: -y, y0, t, **options)

    t = torch.tensor([0.0, 0.5, 1.0], dtype=DTYPE)
    jacobian = torch.autograd.functional.jacobian(outputs, t, vectorize=True)
    # y(t_k) = y0 exp(-(t_k - t_0)): d/dt_k = -y(t_k), d/dt_0 = y(t_k) for k >= 1.
    expected = torch.zeros(3, 2, 1, 3, dtype=DTYPE)
    for k in (1, 2):
        y_k = y0 * math.exp(-t[k].item())
        expected[k, ..., 0], expected[k, ..., k] = y_k, -y_k
    torch.testing.assert_close(jacobian, expected, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(jacobian, torch.autograd.functional.jacobian(outputs, t))


def test_a_torch_without_its_private_transform_query_still_solves_and_refuses_transforms(
    monkeypatch,
):
    # torch._C._are_functorch_transforms_active is private: where a torch renames it, physode
    # must still solve, and tell a transform over t by its wrapped tensor. (torch's own autograd
    # functions call it, so it cannot be removed from torch._C itself here.)
    from physode import integrate
    from physode.solvers._autograd import private_query

    missing = private_query("_are_functorch_transforms_active", object())
    assert missing() is False
    monkeypatch.setattr(integrate, "transforms_active", missing)
    t = torch.tensor([0.0, 1.0], dtype=DTYPE, requires_grad=True)
    ys = physode.odeint(lambda s, y: -y, torch.ones(1, dtype=DTYPE), t, gradient="aca")
    ys[-1].sum().backward()
    assert torch.allclose(t.grad, torch.tensor([1.0, -1.0], dtype=DTYPE) / math.e, rtol=1e-6)

    def outputs(s):
        y0 = torch.ones(1, dtype=DTYPE)
        return physode.odeint(lambda u, y: -y, y0, s, gradient="disc-opt", method="rk4",
                              step_size=0.1)  # fmt: skip

    with pytest.raises(physode.UnsupportedError, match="output times t; use torch.autograd.grad"):
        torch.func.grad(lambda s: outputs(s).sum())(t.detach())


@pytest.mark.parametrize("mode", MODES)
def test_times_computed_from_a_parameter_pass_its_gradient_on(mode):
    # t = scale * t_data: the time gradient goes on through the product to scale.
    scale = torch.tensor(2.0, dtype=DTYPE, requires_grad=True)
    t = scale * torch.tensor([0.0, 0.5, 1.0], dtype=DTYPE)
    ys = physode.odeint(lambda s, y: RATE * y, torch.ones(1, dtype=DTYPE), t,
                        gradient=_tight(mode, "dopri5"), rtol=1e-10, atol=1e-12)  # fmt: skip
    (grad,) = torch.autograd.grad(ys[-1].sum(), [scale])
    # y(t_2) = exp(RATE * scale): d/dscale = RATE * exp(RATE * scale)
    assert grad.item() == pytest.approx(RATE * math.exp(2 * RATE), rel=1e-8)


@pytest.mark.parametrize("container", [list, tuple])
def test_a_time_requiring_grad_in_a_list_of_times_is_refused_not_dropped(container):
    # t = [0.0, T] with a learned end time T was read as plain numbers: T.grad stayed None while
    # y0's gradient came back, with only torch's warning about a scalar conversion.
    end = torch.tensor(1.0, dtype=DTYPE, requires_grad=True)
    y0 = torch.ones(2, dtype=DTYPE, requires_grad=True)
    with pytest.raises(
        physode.InvalidArgumentError, match=r"t\[1\] is a tensor that requires grad.*torch\.stack"
    ):
        physode.odeint(lambda s, y: RATE * y, y0, container([0.0, end]))
    # The spelling the message gives works, and without a gradient the list is fine as it was.
    ys = physode.odeint(lambda s, y: RATE * y, y0, torch.stack([torch.zeros_like(end), end]))
    (grad,) = torch.autograd.grad(ys[-1].sum(), [end])
    assert grad.item() == pytest.approx(2 * RATE * math.exp(RATE), rel=1e-6)
    with torch.no_grad():
        ys = physode.odeint(lambda s, y: RATE * y, y0, container([0.0, end]))
    assert ys[-1, 0].item() == pytest.approx(math.exp(RATE), rel=1e-6)
