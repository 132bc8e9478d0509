"""Bad input and failed solves: each error names the bad value and the way out."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

import physode
from physode.solvers import ADAPTIVE_METHODS, FIXED_METHODS

DTYPE = torch.float64
Y0 = torch.ones(2, dtype=DTYPE)
T = [0.0, 1.0]


def decay(t, y):
    return -y


def _error(**kwargs) -> str:
    options = {"func": decay, "y0": Y0, "t": T, **kwargs}
    func, y0, t = options.pop("func"), options.pop("y0"), options.pop("t")
    with pytest.raises(physode.InvalidArgumentError) as info:
        physode.solve(func, y0, t, **options)
    assert isinstance(info.value, ValueError)
    return str(info.value)


def test_unknown_method_lists_every_valid_method():
    message = _error(method="rk45")
    assert "'rk45'" in message
    for name in ADAPTIVE_METHODS + FIXED_METHODS:
        assert name in message


@pytest.mark.parametrize(
    ("method", "advice"),
    [
        ("dopri8", "use 'dop853'"),  # torchdiffeq
        ("adaptive_heun", "use 'heun'"),
        ("explicit_adams", "no multistep"),
        ("RK45", "use 'dopri5'"),  # SciPy's solve_ivp
        ("DOP853", "method names are lower case: method='dop853'"),
        ("BDF", "no stiff (implicit) solver"),
        ("Tsit5", "method names are lower case: method='tsit5'"),  # diffrax
    ],
)
@pytest.mark.parametrize("where", ["solve", "odeint_event", "OptDisc"])
def test_another_librarys_method_name_is_answered_with_physodes(method, advice, where):
    # torchdiffeq's, SciPy's and diffrax's names got only the list of valid methods, which a
    # user had to match with the method meant.
    with pytest.raises(physode.InvalidArgumentError) as info:
        if where == "solve":
            physode.solve(decay, Y0, T, method=method)
        elif where == "odeint_event":
            physode.odeint_event(decay, Y0, 0.0, lambda t, y: y[0] - 0.5, method=method)
        else:
            physode.OptDisc(method=method)
    message = str(info.value)
    assert f"method {method!r}" in message and advice in message and "valid methods" in message


# Every method name of torchdiffeq 0.2.5 (its SOLVERS), SciPy's solve_ivp and diffrax's ODE
# solvers that physode does not spell the same way.
OTHER_LIBRARIES_METHODS = {
    "torchdiffeq": ["dopri8", "fehlberg2", "adaptive_heun", "heun2", "heun3", "explicit_adams",
                    "implicit_adams", "fixed_adams", "scipy_solver"],
    "scipy": ["RK45", "RK23", "Radau", "BDF", "LSODA"],
    "diffrax": ["Ralston", "Dopri8", "ImplicitEuler", "Kvaerno3", "Kvaerno4", "Kvaerno5",
                "KenCarp3", "KenCarp4", "KenCarp5", "Sil3"],
}  # fmt: skip
STIFF_METHODS = {"Radau", "BDF", "LSODA", "ImplicitEuler", "Kvaerno3", "Kvaerno4", "Kvaerno5",
                 "KenCarp3", "KenCarp4", "KenCarp5", "Sil3"}  # fmt: skip


@pytest.mark.parametrize(
    "method", [name for names in OTHER_LIBRARIES_METHODS.values() for name in names]
)
def test_every_method_name_of_torchdiffeq_scipy_and_diffrax_gets_physodes_nearest(method):
    # docs/solvers.md promises physode's nearest method, or that there is none, for another
    # library's name: torchdiffeq's heun2 and heun3 and diffrax's Ralston and stiff solvers got
    # only the list of valid methods.
    message = _error(method=method)
    assert f"unknown method {method!r} (another library's name): " in message
    if method in STIFF_METHODS:
        assert "no stiff (implicit) solver" in message


def test_the_valid_methods_are_listed_by_kind_so_no_name_reads_as_a_method():
    # "valid methods: adaptive heun, bosh3, ...; fixed-step euler, ..." read as if "adaptive heun"
    # were a method, in the reply to torchdiffeq's "adaptive_heun".
    message = _error(method="adaptive_heun")
    adaptive, fixed = ", ".join(ADAPTIVE_METHODS), ", ".join(FIXED_METHODS)
    assert message.endswith(f"valid methods: adaptive: {adaptive}; fixed-step: {fixed}")


@pytest.mark.parametrize(
    "tolerance",
    [[1e-6, 1e-3], (1e-6, 1e-3), np.array([1e-6, 1e-3]), torch.tensor([1e-6, 1e-3])],
    ids=["list", "tuple", "numpy", "tensor"],
)
@pytest.mark.parametrize("name", ["rtol", "atol"])
@pytest.mark.parametrize("where", ["solve", "odeint_event", "OptDisc"])
def test_a_tolerance_per_component_is_refused_saying_that_the_norm_takes_one(
    where, name, tolerance
):
    # SciPy's array atol and a torchdiffeq tensor rtol were answered "must be a positive
    # number", about a value of positive numbers (OptDisc's backward tolerances, as
    # torchdiffeq's adjoint_rtol / adjoint_atol, until 2026-12-07 too).
    with pytest.raises(physode.InvalidArgumentError) as info:
        if where == "solve":
            physode.solve(decay, Y0, T, **{name: tolerance})
        elif where == "OptDisc":
            physode.OptDisc(**{name: tolerance})
        else:
            physode.odeint_event(decay, Y0, 0.0, lambda t, y: y[0] - 0.5, **{name: tolerance})
    message = str(info.value)
    assert f"{name} must be one number" in message and "divided by its typical size" in message


def test_a_tolerance_in_a_0_dim_or_1_element_tensor_is_one_number():
    # A 1-element NumPy array was refused as "must be a positive number" (NumPy refuses float()
    # of a 1-d array), though a 1-element tensor was taken.
    tolerance = torch.tensor(1e-9, dtype=DTYPE)
    expected = physode.odeint(decay, Y0, T, rtol=1e-9, atol=1e-9)
    for given in (tolerance, tolerance.reshape(1), np.float64(1e-9), np.array([1e-9])):
        assert torch.equal(physode.odeint(decay, Y0, T, rtol=given, atol=given), expected)
        mode = physode.OptDisc(rtol=given, atol=given)
        assert (mode.rtol, mode.atol) == (1e-9, 1e-9)


def test_unknown_gradient_lists_every_valid_choice():
    message = _error(gradient="adjoint")
    assert "'adjoint'" in message
    for name in ("disc-opt", "opt-disc", "aca", "DiscOpt", "OptDisc", "ACA"):
        assert name in message


def test_unknown_step_control_lists_every_valid_choice():
    message = _error(step_control="global")
    assert "'global'" in message and "shared" in message and "per-sample" in message


def test_opt_disc_rejects_an_unknown_backward_method():
    with pytest.raises(physode.InvalidArgumentError, match="'rk45'.*dopri5"):
        physode.OptDisc(method="rk45")


@pytest.mark.parametrize("method", ["euler", "midpoint", "rk4"])
def test_fixed_step_method_without_step_size_says_how_to_give_one(method):
    message = _error(method=method)
    assert f"method={method!r}" in message and "step_size=" in message


@pytest.mark.parametrize("method", ["heun", "dopri5", "dop853"])
def test_step_size_with_an_adaptive_method_is_refused(method):
    message = _error(method=method, step_size=0.1)
    assert "step_size" in message and f"{method!r}" in message and "first_step" in message


@pytest.mark.parametrize(
    ("t", "expected"),
    [
        ([0.0, 1.0, 0.5], "strictly increasing or strictly decreasing"),
        ([0.0, 1.0, 1.0], "strictly increasing or strictly decreasing"),
        ([1.0, 0.0, 0.5], "strictly increasing or strictly decreasing"),
        ([0.0], "at least two"),
        ([[0.0, 1.0]], "1-D"),
        ([0.0, math.inf], "finite"),
    ],
)
def test_bad_output_times_are_refused_with_the_values_shown(t, expected):
    message = _error(t=t)
    assert expected in message


@pytest.mark.parametrize("as_numpy", [False, True], ids=["tensor", "numpy"])
def test_float32_output_times_that_round_onto_one_say_why(as_numpy):
    # 1e-5 apart near t = 1e4: float32 (spacing 1e-3 there) made them one time, and the message
    # showed three equal times given as distinct ones, with no word of the dtype.
    times = [1e4, 1e4 + 1e-5, 1e4 + 2e-5]
    t = np.array(times, dtype=np.float32) if as_numpy else torch.tensor(times)
    message = _error(t=t)
    assert "strictly increasing" in message and "float32" in message
    assert "float64" in message and "t[0]" in message
    # Equal times given in float64 are the caller's own: no word of a dtype.
    assert "arrived" not in _error(t=torch.tensor([0.0, 1.0, 1.0], dtype=torch.float64))


@pytest.mark.parametrize("name", ["rtol", "atol"])
@pytest.mark.parametrize("value", [0.0, -1e-6, math.nan, 10**400])  # 10**400 overflowed
def test_tolerances_must_be_positive(name, value):
    message = _error(**{name: value})
    assert name in message and repr(value) in message


@pytest.mark.parametrize(("name", "advice"), [("atol", "atol=1e-30"), ("rtol", "rtol=1e-12")])
def test_a_zero_tolerance_is_refused_with_what_to_pass_instead(name, advice):
    # atol=0 is how SciPy users ask for pure relative control: the message only said "must be
    # positive", with no word of what comes nearest.
    message = _error(**{name: 0.0})
    assert f"{name} must be positive" in message and advice in message
    assert "For " not in _error(**{name: -1e-6})
    # The advice works: an atol far below the state's size, from a component at 0.
    sol = physode.solve(
        lambda t, y: torch.stack([y[1], -y[0]]), torch.tensor([1.0, 0.0]), [0.0, 1.0], atol=1e-30
    )
    assert sol.success


@pytest.mark.parametrize("value", [0.0, -0.1])
def test_step_size_must_be_positive(value):
    message = _error(method="rk4", step_size=value)
    assert "step_size" in message and repr(value) in message


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool])
def test_non_floating_y0_is_refused_with_the_fix(dtype):
    message = _error(y0=torch.ones(2, dtype=dtype))
    assert str(dtype) in message and "y0.double()" in message


def test_func_returning_the_wrong_shape_is_reported_with_both_shapes():
    message = _error(func=lambda t, y: y.sum(), y0=torch.ones(3, 2, dtype=DTYPE))
    assert "(3, 2)" in message and "()" in message


def test_func_returning_no_tensor_is_reported():
    message = _error(func=lambda t, y: None)
    assert "NoneType" in message


def test_non_finite_y0_is_refused():
    assert "finite" in _error(y0=torch.tensor([1.0, math.nan], dtype=DTYPE))


def _other_devices() -> list[str]:
    devices = ["meta"]  # always present, and never the device of a CPU y0
    if torch.cuda.is_available():
        devices.append("cuda")
    return devices


@pytest.mark.parametrize("device", _other_devices())
def test_times_on_another_device_than_y0_are_refused(device):
    t = torch.tensor(T, dtype=DTYPE, device=device)
    message = _error(t=t)
    assert device in message and "t.to(y0.device)" in message


@pytest.mark.parametrize("device", _other_devices())
def test_a_module_left_on_another_device_than_y0_is_refused_by_name(device):
    # Its 0-dim parameters passed as scalars: each evaluation copied them to y0's device and
    # waited, and Opt-Disc's products for them came back on the module's device and failed.
    field = physode.systems.load("pendulum").vector_field(learnable=["g"]).to(device)
    message = _error(func=field, y0=torch.tensor([0.5, 0.0], dtype=DTYPE))
    assert "'g'" in message and device in message and "func.to(y0.device)" in message


def test_times_on_a_second_accelerator_are_refused():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device: there is no second real device here")
    t = torch.tensor(T, dtype=DTYPE, device="cuda")
    y0 = Y0.to("cuda")
    ys = physode.odeint(decay, y0, t)  # same device works
    assert ys.device.type == "cuda"
    message = _error(t=t.cpu(), y0=y0)
    assert "cpu" in message and "cuda" in message


# ----------------------------------------------------------------------------- failed solves


def blow_up(t, y):
    return y * y  # y = 1 / (1 - t) from y(0) = 1: infinite at t = 1


def _check_failure(info, status, t_low, t_high):
    error = info.value
    assert isinstance(error, physode.PhysodeError) and isinstance(error, RuntimeError)
    assert error.status is status
    assert t_low <= error.t <= t_high
    assert math.isfinite(error.step_size) and error.step_size != 0
    assert f"t={error.t:.17g}" in str(error) and f"{abs(error.step_size):.3g}" in str(error)
    solution = error.solution
    assert isinstance(solution, physode.Solution) and solution.status is status
    assert not solution.success
    return error


def test_step_size_underflow_at_a_blow_up_says_where():
    t = torch.linspace(0.0, 2.0, 9, dtype=DTYPE)
    with pytest.raises(physode.SolverError) as info:
        physode.solve(blow_up, torch.ones(1, dtype=DTYPE), t)
    error = _check_failure(info, physode.Status.STEP_SIZE_UNDERFLOW, 0.999, 1.001)
    assert "underflow" in str(error)
    # The state is in float64 already: what is left to change is func or the tolerances.
    assert "float64" not in str(error)
    assert str(error).endswith("check func near this time, or loosen rtol/atol.")
    assert abs(error.step_size) < 1e-12
    ys = error.solution.ys
    assert ys.shape == (9, 1)
    reached = t <= error.t
    # Outputs before the blow-up are accurate, the rest NaN.
    torch.testing.assert_close(ys[reached][:4, 0], 1.0 / (1.0 - t[:4]), rtol=1e-5, atol=0)
    assert torch.isnan(ys[~reached]).all()


def test_step_size_underflow_in_float32_suggests_float64():
    t = torch.linspace(0.0, 2.0, 9)
    with pytest.raises(physode.SolverError) as info:
        physode.solve(blow_up, torch.ones(1), t)
    error = _check_failure(info, physode.Status.STEP_SIZE_UNDERFLOW, 0.99, 1.01)
    assert "solve in float64 rather than torch.float32, with looser rtol/atol." in str(error)


def _ringing(rate: float):
    """A damped oscillator x'' = -400 x - 0.5 x' on the time scale ``1 / rate``, for a state of
    rows ``(..., 2)``: its solution at ``t`` is the unit-scale one at ``rate * t``."""

    def field(t, y):
        x, v = y[..., 0], y[..., 1]
        return torch.stack([rate * v, rate * (-400.0 * x - 0.5 * v)], dim=-1)

    return field


@pytest.mark.parametrize("step_control", ["shared", "per-sample"])
@pytest.mark.parametrize("dtype, rate", [(torch.float32, 1e6), (torch.float64, 1e15)])
def test_a_solve_on_a_short_time_scale_takes_steps_as_short_as_it_needs(step_control, dtype, rate):
    # Microseconds in float32, femtoseconds in float64: the steps (about 1e-2 / rate) and their
    # rejections are far above the resolution of t near 0. They underflowed, as the resolution
    # was taken as 4 eps * max(1, |t|), a floor of 4.8e-7 in float32 and 8.9e-16 in float64.
    y0 = torch.tensor([[1.0, 0.0], [0.5, 0.0]], dtype=dtype)
    unit = physode.solve(_ringing(1.0), y0, [0.0, 5.0], step_control=step_control)
    sol = physode.solve(_ringing(rate), y0, [0.0, 5.0 / rate], step_control=step_control)
    assert sol.success and int(torch.as_tensor(sol.stats.n_rejected).sum()) > 0
    rtol = 1e-3 if dtype == torch.float32 else 1e-6
    torch.testing.assert_close(sol.ys[-1], unit.ys[-1], rtol=rtol, atol=rtol)


@pytest.mark.parametrize("t0", [1e5, 1e6])
def test_a_float32_solve_far_from_t_0_is_not_limited_by_float32s_resolution_of_t(t0):
    # The shared loop holds t in float64. Steps of 0.01 with rejections at t = 1e5 underflowed all
    # the same, the resolution of t being taken in y0's dtype (4 eps_32 t = 0.05 there).
    y0 = torch.tensor([1.0, 0.0])
    sol = physode.solve(_ringing(1.0), y0, [t0, t0 + 5.0])
    assert sol.success and sol.stats.n_rejected > 0
    reference = physode.solve(_ringing(1.0), y0.double(), [0.0, 5.0], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(sol.ys[-1].double(), reference.ys[-1], rtol=1e-3, atol=1e-3)


def test_max_steps_stops_the_solve_and_suggests_a_larger_limit():
    with pytest.raises(physode.SolverError) as info:
        physode.solve(decay, Y0, [0.0, 0.5, 1000.0], max_steps=20, method="rk4", step_size=0.01)
    error = _check_failure(info, physode.Status.MAX_STEPS, 0.19, 0.21)
    assert "max_steps=20" in str(error) and "max_steps=200" in str(error)
    assert error.solution.stats.n_steps == 20
    assert torch.isnan(error.solution.ys[1:]).all()
    # A fixed-step solve has no tolerances to loosen; its step size is what to change.
    assert "step_size" in str(error) and "rtol" not in str(error)


def test_an_adaptive_solve_out_of_steps_suggests_looser_tolerances():
    with pytest.raises(physode.SolverError) as info:
        physode.solve(decay, Y0, [0.0, 1000.0], max_steps=5, rtol=1e-10, atol=1e-10)
    assert "max_steps=5" in str(info.value) and "rtol/atol" in str(info.value)


def test_an_adaptive_solve_out_of_steps_at_max_step_blames_max_step_not_the_tolerances():
    # The steps ran out at the cap the caller set: the message said the problem may be stiff or
    # the tolerances too tight, and suggested loosening rtol/atol, which changes nothing here.
    with pytest.raises(physode.SolverError) as info:
        physode.solve(decay, Y0, [0.0, 1.0], max_steps=5, max_step=1e-3)
    message = str(info.value)
    assert "max_step=0.001" in message and "Raise max_step" in message
    assert "stiff" not in message and "rtol" not in message
    # Where the error control holds the steps below the cap, the advice is unchanged.
    with pytest.raises(physode.SolverError, match="stiff.*rtol/atol"):
        physode.solve(decay, Y0, [0.0, 1000.0], max_steps=5, rtol=1e-10, atol=1e-10, max_step=1.0)


def test_an_opt_disc_backward_solve_out_of_steps_says_whose_max_steps_bounds_it():
    y0 = Y0.clone().requires_grad_(True)
    # The backward solve, at its own tight tolerances, needs far more steps than the forward.
    ys = physode.odeint(
        decay, y0, [0.0, 5.0], max_steps=30, rtol=1e-3, atol=1e-3,
        gradient=physode.OptDisc(rtol=1e-12, atol=1e-12),
    )
    with pytest.raises(physode.SolverError, match="Opt-Disc backward.*the solve's max_steps"):
        ys[-1].sum().backward()


def _van_der_pol(t, y):
    x, v = y[..., 0:1], y[..., 1:2]
    return torch.cat([v, (1.0 - x * x) * v - x], dim=-1)


@pytest.mark.parametrize(
    "t, restart, hint",
    [
        ([0.0, 10.0], False, "restart='steps') from the state at every forward step"),
        ([0.0, 9.0, 10.0], False, "OptDisc(restart=True) restarts it from the outputs"),
        ([0.0, 9.0, 10.0], True, "restart='steps') from the state at every forward step"),
    ],
)
def test_an_opt_disc_backward_solve_that_diverges_suggests_restarting_where_it_can(
    t, restart, hint
):
    # Re-solved backward, the state leaves Van der Pol's attracting cycle and the backward solve
    # underflows at 1e-4; restarting from the outputs helps only where there are some in between.
    y0 = torch.tensor([[2.0, 0.0]], dtype=DTYPE, requires_grad=True)
    gradient = physode.OptDisc(restart=restart)
    ys = physode.odeint(_van_der_pol, y0, t, rtol=1e-4, atol=1e-4, gradient=gradient)
    with pytest.raises(physode.SolverError, match="Opt-Disc backward solve failed") as info:
        ys[-1].sum().backward()
    assert hint in str(info.value)
    assert ("restarts it from the outputs" in str(info.value)) == (hint.startswith("OptDisc"))
    # The state is in float64 already: no advice to solve in float64, looser tolerances
    # (OptDisc's own, as the hint that follows says) instead.
    assert "float64" not in str(info.value)
    assert "or loosen rtol/atol. The backward solve uses OptDisc's own settings" in str(info.value)
    # Restarted at every forward step, the same solve has a gradient.
    y0 = y0.detach().requires_grad_(True)
    ys = physode.odeint(
        _van_der_pol, y0, t, rtol=1e-4, atol=1e-4, gradient=physode.OptDisc(restart="steps")
    )
    (grad,) = torch.autograd.grad(ys[-1].sum(), [y0])
    assert torch.isfinite(grad).all()


@pytest.mark.parametrize("method", ["dopri5", "rk4"])
def test_non_finite_state_stops_the_solve(method):
    def poisoned(t, y):
        return -y + (math.nan if t.item() > 0.5 else 0.0)

    options = {"step_size": 0.1} if method == "rk4" else {}
    with pytest.raises(physode.SolverError) as info:
        physode.solve(poisoned, Y0, [0.0, 0.25, 1.0], method=method, **options)
    error = _check_failure(info, physode.Status.NON_FINITE, 0.4, 1.0)
    assert "non-finite" in str(error)
    ys = error.solution.ys
    torch.testing.assert_close(ys[1], Y0 * math.exp(-0.25), rtol=1e-5, atol=0)
    assert torch.isnan(ys[2]).all()


@pytest.mark.parametrize(
    "gradient", ["disc-opt", "aca", "opt-disc", physode.OptDisc(restart="steps")]
)
def test_throw_false_returns_the_partial_solution_with_nan_after_the_failure(gradient):
    t = torch.linspace(0.0, 2.0, 5, dtype=DTYPE)
    y0 = torch.ones(1, dtype=DTYPE, requires_grad=True)
    # Opt-Disc's backward must start at the last output reached, not from the NaN after it
    # (it used to spin until max_steps; the forward needs about 450 attempts).
    sol = physode.solve(blow_up, y0, t, throw=False, gradient=gradient, max_steps=600)
    assert sol.status is physode.Status.STEP_SIZE_UNDERFLOW
    assert not sol.success
    assert 0.999 < sol.t_final < 1.001
    assert "underflow" in sol.message
    assert sol.ys.shape == (5, 1)
    assert sol.ys[1].item() == pytest.approx(2.0, rel=1e-5)
    assert torch.isnan(sol.ys[3:]).all()
    # The part that was reached can still be differentiated.
    (grad,) = torch.autograd.grad(sol.ys[1].sum(), [y0])
    assert grad.item() == pytest.approx(4.0, rel=1e-4)  # d/dy0 of y0 / (1 - y0 t) at t = 0.5


def test_nan_from_the_first_evaluation_stops_at_once_as_non_finite():
    # A NaN first evaluation makes the automatic first step NaN; the loop once rejected
    # max_steps times ("step size nan") instead of stopping.
    sol = physode.solve(lambda t, y: y * math.nan, Y0, T, throw=False, max_steps=500)
    assert sol.status is physode.Status.NON_FINITE
    assert sol.stats.n_rejected < 100


@pytest.mark.parametrize("method", ["dopri5", "dop853", "bosh3"])
@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
def test_a_non_finite_first_evaluation_stops_before_the_first_step(method, bad):
    # An infinite derivative once made the automatic first step divide by zero.
    sol = physode.solve(lambda t, y: y * bad, Y0, T, method=method, throw=False)
    assert sol.status is physode.Status.NON_FINITE
    assert sol.stats.n_steps == 0 and sol.stats.n_rejected == 0
    assert sol.t_final == 0.0
    assert "at t=0, before the first step" in sol.message and "nan" not in sol.message
    with pytest.raises(physode.SolverError, match="before the first step"):
        physode.solve(lambda t, y: y * bad, Y0, T, method=method, first_step=0.1)


def test_empty_y0_is_refused():
    message = _error(y0=torch.zeros(0, 2, dtype=DTYPE))
    assert "empty" in message and "(0, 2)" in message


@pytest.mark.parametrize("step_control", ["shared", "per-sample"])
def test_func_returning_another_dtype_is_refused(step_control):
    message = _error(
        func=lambda t, y: -y.double(),
        y0=torch.ones(3, 2, dtype=torch.float32),
        step_control=step_control,
    )
    assert "torch.float32" in message and "torch.float64" in message


@pytest.mark.parametrize("value", ["1e-6", True, math.inf])
def test_tolerances_must_be_real_numbers_not_strings_or_booleans(value):
    assert "rtol" in _error(rtol=value)


def test_params_must_be_a_sequence_of_tensors():
    assert "sequence of tensors" in _error(params=torch.ones(2, requires_grad=True))


def test_a_symplectic_method_refuses_a_state_that_does_not_match_its_coordinates():
    field = physode.systems.load("harmonic_oscillator").vector_field()
    y0 = torch.tensor([1.0, 0.0, 0.0], dtype=DTYPE)
    message = _error(func=field, y0=y0, method="leapfrog", step_size=0.1)
    assert "n_coordinates=1" in message and "(3,)" in message


@pytest.mark.parametrize(
    "options, expected",
    [
        ({"method": "leapfrog"}, "not separable"),
        ({"rtol": math.inf}, "rtol"),
        ({"atol": "1e-6"}, "atol"),
        ({"step_size": -0.1}, "step_size"),
    ],
)
def test_opt_disc_refuses_bad_settings_when_made(options, expected):
    with pytest.raises(physode.InvalidArgumentError, match=expected):
        physode.OptDisc(**options)


def test_opt_disc_with_a_fixed_backward_method_and_no_step_is_refused_before_solving():
    calls = []

    def counted(t, y):
        calls.append(t)
        return -y

    y0 = Y0.clone().requires_grad_(True)
    with pytest.raises(physode.InvalidArgumentError, match="step_size=") as info:
        physode.odeint(counted, y0, T, gradient=physode.OptDisc(method="rk4"))
    assert "OptDisc(method='rk4'" in str(info.value)
    assert len(calls) <= 1  # at most the evaluation that finds a plain function's parameters


def test_successful_solution_reports_success():
    sol = physode.solve(decay, Y0, T)
    assert sol.success and sol.status is physode.Status.SUCCESS and sol.message == "success"
    assert sol.t_final == 1.0


def test_times_given_as_a_list_are_read_in_float64():
    # A list once became a float32 tensor: t = 0.1 was integrated to 0.100000001.
    sol = physode.solve(lambda t, y: y, torch.ones(1, dtype=DTYPE), [0.0, 0.1], method="dop853",
                        rtol=1e-13, atol=1e-13)  # fmt: skip
    assert sol.ys[-1].item() == pytest.approx(math.exp(0.1), rel=1e-13)
    assert sol.t.dtype == DTYPE
    close = physode.solve(decay, Y0, [0.0, 1.0, 1.0 + 1e-12])  # distinct in float64
    assert close.success


def test_fixed_steps_span_exactly_the_distance_between_the_output_times():
    # The steps taken are the differences of the rounded times they join, so that integrating
    # dy/dt = 1 gives t1 - t0 (a step of span / 7 from t0 = 1 once lost 6e-4 of a 1e-12 span).
    for t0, span in ((1.0, 1e-12), (1e6, 100.0)):
        h = span / 7 if span < 1 else 0.013
        ys = physode.odeint(lambda t, y: torch.ones_like(y), torch.zeros(1, dtype=DTYPE),
                            [t0, t0 + span], method="euler", step_size=h)  # fmt: skip
        assert ys[-1].item() == pytest.approx((t0 + span) - t0, rel=1e-12)


def test_times_that_require_grad_are_differentiated_without_a_warning():
    # They were once warned about and left without a gradient (tests/test_time_gradients.py).
    t = torch.tensor([0.0, 1.0], dtype=DTYPE, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sol = physode.solve(decay, Y0, t)
    sol.ys.sum().backward()
    assert t.grad is not None and t.grad.shape == t.shape


@pytest.mark.parametrize("dtype, advice", [(torch.float32, "for tighter tolerances use float64"),
                                          (torch.float64, "no float64 solve can be tighter")])
def test_an_rtol_below_the_dtypes_resolution_is_a_physode_warning_with_advice_that_fits(
    dtype, advice
):
    # float64 is the widest dtype a solve takes: "use float64" was no advice to a float64 solve.
    with pytest.warns(physode.PhysodeWarning, match="below the resolution") as caught:
        physode.solve(decay, Y0.to(dtype), [0.0, 1.0], rtol=1e-20)
    (message,) = [str(w.message) for w in caught]
    assert message.endswith(f"Solving with rtol={torch.finfo(dtype).eps:.3g}; {advice}.")


@pytest.mark.parametrize("t", [torch.tensor([0, 1], dtype=torch.bool), [0j, 1j], "0,1"])
def test_times_that_are_not_real_numbers_are_refused(t):
    assert "t must" in _error(t=t)


@pytest.mark.parametrize("step_control", ["shared", "per-sample"])
def test_func_returning_a_tensor_on_another_device_is_refused(step_control):
    message = _error(
        func=lambda t, y: torch.zeros_like(y, device="meta"),
        y0=torch.ones(3, 2, dtype=DTYPE),
        step_control=step_control,
    )
    assert "device cpu" in message and "meta" in message


def test_a_parameter_on_another_device_is_refused_before_func_runs():
    layer = torch.nn.Linear(2, 2, dtype=DTYPE, device="meta")
    message = _error(func=lambda t, y: layer(y), params=list(layer.parameters()))
    assert "meta" in message and "(2, 2)" in message and "func.to(y0.device)" in message
    module = torch.nn.Linear(2, 2, dtype=DTYPE, device="meta")
    assert "meta" in _error(func=lambda t, y: module(y))  # found in the closure


@pytest.mark.parametrize("value", [True, 2.5])
def test_max_steps_must_be_a_positive_int_not_a_bool(value):
    # max_steps=True was taken as 1 and failed the solve after one step.
    assert "max_steps" in _error(max_steps=value)


def test_max_steps_may_be_a_numpy_integer():
    assert physode.solve(decay, Y0, T, max_steps=np.int64(50)).success


@pytest.mark.parametrize("method", ["euler", "rk4", "leapfrog"])
def test_first_step_with_a_fixed_step_method_is_refused(method):
    # It was silently ignored: fixed-step methods take every step of step_size.
    field = physode.systems.load("harmonic_oscillator").vector_field()
    message = _error(func=field, method=method, step_size=0.1, first_step=0.5)
    assert "first_step" in message and f"{method!r}" in message and "step_size" in message


@pytest.mark.parametrize("method", ["euler", "rk4", "leapfrog", "yoshida4"])
def test_max_step_with_a_fixed_step_method_is_refused(method):
    # Fixed-step and symplectic methods take every step of step_size; a cap would be ignored.
    field = physode.systems.load("harmonic_oscillator").vector_field()
    message = _error(func=field, method=method, step_size=0.1, max_step=0.05)
    # The trainer's wording, word for word: one refusal, whichever door it came through.
    from physode.train.config import max_step_of_fixed_step_method

    assert message == max_step_of_fixed_step_method(method, 0.05)


def test_the_trainer_names_the_solvers_methods():
    # physode.train.config lists the methods without importing torch; a method added to the
    # solvers (or one renamed) must reach the trainer's choices and its messages too.
    from physode.train import config

    assert config.ADAPTIVE_METHODS == ADAPTIVE_METHODS
    assert config.FIXED_STEP_METHODS == FIXED_METHODS


@pytest.mark.parametrize("value", [0, -0.1, math.nan, math.inf, "0.1", True, None])
def test_max_step_must_be_a_positive_finite_number(value):
    if value is None:  # no cap: the default
        assert physode.solve(decay, Y0, T, max_step=value).success
        return
    message = _error(max_step=value)
    assert message.startswith("max_step must be") and repr(value) in message


def test_a_first_step_longer_than_max_step_is_refused_naming_both():
    message = _error(first_step=0.5, max_step=0.1)
    assert "first_step=0.5 is longer than max_step=0.1" in message
    assert "first_step=0.1" in message  # the fix, as code
    assert physode.solve(decay, Y0, T, first_step=0.1, max_step=0.1).success  # equal is fine


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_y0_is_refused(dtype):
    # In float16 the error scale atol + rtol |y| rounds to 0 where y does: a harmonic
    # oscillator from (1, 0) stopped as "non-finite state", and per-sample rows came out NaN.
    for step_control in ("shared", "per-sample"):
        message = _error(y0=torch.ones(1, 2, dtype=dtype), step_control=step_control)
        assert str(dtype) in message and "float32 or float64" in message


@pytest.mark.parametrize(
    ("tuple_state", "step_control"), [(False, "shared"), (False, "per-sample"), (True, "shared")]
)
def test_a_solve_under_autocast_is_refused_naming_autocast_and_how_to_turn_it_off(
    tuple_state, step_control
):
    # An AMP training step wraps the model in torch.autocast, which ran func's Linear in
    # bfloat16: the refusal spoke of a dtype the user never asked for, without saying why.
    # (Per-sample step control takes no tuple state.)
    net = torch.nn.Linear(2, 2)
    func, y0 = (lambda t, y: net(y)), torch.ones(1, 2)
    if tuple_state:
        func, y0 = (lambda t, y: (net(y[1]), y[0])), (torch.ones(2), torch.ones(2))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        message = _error(func=func, y0=y0, step_control=step_control)
    assert "torch.autocast is on for cpu" in message and "torch.bfloat16" in message
    assert 'torch.autocast("cpu", enabled=False)' in message  # the way out, as code
    # Without autocast, a func returning another dtype is refused without the autocast hint.
    message = _error(func=lambda t, y: y.half(), y0=torch.ones(1, 2), step_control=step_control)
    assert "autocast" not in message


def test_complex_y0_is_refused_with_a_hint_that_keeps_the_imaginary_part():
    # The hint was y0.double(), which discards the imaginary part.
    message = _error(y0=torch.ones(2, dtype=torch.complex128))
    assert "complex128" in message and "view_as_real" in message and "double" not in message


def _stiff(t, y):
    return -1e10 * y


@pytest.mark.parametrize(
    ("func", "t", "options"),
    [
        (decay, [1.0, 2.0], {"first_step": 1e-17}),
        (decay, [1e6, 1e6 + 1.0], {"method": "euler", "step_size": 1e-11}),
        # The automatic first step, about 1e-10, is below the resolution of t = 1e8 (7e-9).
        (_stiff, [1e8, 1e8 + 1.0], {}),
    ],
    ids=["first_step", "fixed step", "automatic first step"],
)
def test_a_step_below_the_resolution_of_t_underflows_instead_of_stalling(func, t, options):
    # t + h == t: the step of nothing was accepted, h became 0, and the solve spun until
    # max_steps, reporting "step size 0".
    with pytest.raises(physode.SolverError) as info:
        physode.solve(func, Y0, t, max_steps=200, **options)
    error = _check_failure(info, physode.Status.STEP_SIZE_UNDERFLOW, t[0], t[0])
    assert "resolution of t" in str(error)
    stats = error.solution.stats
    assert stats.n_steps == 0 and stats.n_rejected == 0


@pytest.mark.parametrize(
    ("keyword", "spelling"),
    [
        ("options", "step_size=..."),
        ("adjoint_params", "params=[...]"),
        ("adjoint_rtol", "physode.OptDisc(rtol=...)"),
        ("event_fn", "physode.odeint_event(func, y0, t0"),
    ],
)
@pytest.mark.parametrize("entry", [physode.odeint, physode.solve])
def test_torchdiffeq_keywords_are_answered_with_physodes_spelling(entry, keyword, spelling):
    with pytest.raises(physode.InvalidArgumentError, match="torchdiffeq") as info:
        entry(decay, Y0, [0.0, 1.0], **{keyword: None})
    assert spelling in str(info.value)


@pytest.mark.parametrize("entry", [physode.odeint, physode.solve])
def test_a_misspelt_keyword_is_a_type_error_naming_it(entry):
    with pytest.raises(TypeError, match="unexpected keyword argument 'rtoll'"):
        entry(decay, Y0, [0.0, 1.0], rtoll=1e-6)


# Reprs: a solve's result prints as one short line in a REPL, however large its states.
BIG_Y0 = torch.ones(256, 6, dtype=DTYPE)
BIG_T = torch.linspace(0.0, 1.0, 1000, dtype=DTYPE)


@pytest.mark.parametrize(
    ("options", "shown"),
    [
        ({"method": "rk4", "step_size": 0.01}, "status=SUCCESS"),
        ({"step_control": "per-sample"}, "status=256 SUCCESS of 256 rows"),
        ({"max_steps": 3, "throw": False}, "status=MAX_STEPS"),
        ({"step_control": "per-sample", "max_steps": 3, "throw": False}, "256 MAX_STEPS"),
    ],
)
def test_a_large_solution_prints_its_status_shapes_and_stats_in_one_short_line(options, shown):
    text = repr(physode.solve(decay, BIG_Y0, BIG_T, **options))
    assert len(text) < 300 and "\n" not in text
    assert shown in text
    assert "ys=Tensor(shape=(1000, 256, 6), dtype=float64)" in text
    assert "t=Tensor(shape=(1000,), dtype=float64)" in text
    assert "stats=Stats(n_steps=" in text


def test_a_tuple_solution_prints_the_shape_of_each_part():
    sol = physode.solve(lambda t, y: (-y[0], -y[1]), (BIG_Y0, BIG_Y0[:, :2]), BIG_T)
    text = repr(sol)
    assert len(text) < 300
    assert "ys=(Tensor(shape=(1000, 256, 6), dtype=float64), Tensor(shape=(1000, 256, 2)," in text


def test_per_sample_stats_print_each_counter_as_its_range_over_the_rows():
    y0 = torch.tensor([[1.0], [1e3]], dtype=DTYPE).repeat(500, 1)  # stiffer rows step more
    stats = physode.solve(lambda t, y: -y * y.abs(), y0, BIG_T[:3], step_control="per-sample").stats
    low, high = int(stats.n_steps.min()), int(stats.n_steps.max())
    assert low < high
    assert repr(stats).startswith(f"Stats(n_steps={low}..{high}, ")
    assert str(stats) == repr(stats)


def test_a_partly_built_solution_prints_without_raising():
    assert repr(physode.Solution.__new__(physode.Solution)) == "Solution()"


def test_a_solutions_repr_leaves_its_equality_and_pickling_alone():
    import pickle

    sol = physode.solve(decay, Y0, T)
    copy = pickle.loads(pickle.dumps(sol))
    assert repr(copy) == repr(sol)
    assert torch.equal(copy.ys, sol.ys) and copy.stats == sol.stats


def test_the_solution_printed_in_the_solvers_page_is_what_that_solve_prints():
    from pathlib import Path

    page = (Path(__file__).resolve().parents[1] / "docs" / "solvers.md").read_text()
    shown = next(line for line in page.splitlines() if line.startswith("Solution(status="))
    sol = physode.solve(decay, torch.ones(256, 6, dtype=DTYPE), BIG_T)
    assert repr(sol) == shown
