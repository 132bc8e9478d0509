"""Symplectic integrators on catalogue systems: bounded energy error, order, separability."""

from __future__ import annotations

import math

import numpy as np
import pytest
import sympy
import torch

import physode
import physode.systems
from physode.symbolic import System

F64 = torch.float64
ORDER = {"leapfrog": 2, "yoshida4": 4}


@pytest.mark.slow
@pytest.mark.parametrize("method", ["leapfrog", "yoshida4"])
def test_energy_error_has_no_secular_drift_over_1000_periods(method):
    osc = physode.systems.load("harmonic_oscillator")
    period = osc.characteristic_time
    t = torch.linspace(0, 1000 * period, 5001, dtype=F64)
    for y0 in ([1.0, 0.0], [0.3, -0.8]):
        y0 = torch.tensor(y0, dtype=F64)
        ys = physode.odeint(osc.vector_field(), y0, t, method=method, step_size=period / 5)
        error = (osc.energy(ys) - osc.energy(y0)).abs()
        first = error[: len(t) // 10].max()
        last = error[-(len(t) // 10) :].max()
        assert first > 1e-6  # a visible, bounded error: the check is not vacuous
        assert last <= 2 * first, (first, last)


def _pendulum_error(method, steps_per_period):
    pend = physode.systems.load("pendulum")
    period = pend.characteristic_time
    y0 = torch.tensor([[1.0, 0.0], [0.2, 1.5]], dtype=F64)
    t = torch.tensor([0.0, period], dtype=F64)
    reference = physode.odeint(pend.vector_field(), y0, t, method="dop853", rtol=1e-13, atol=1e-14)
    ys = physode.odeint(pend.vector_field(), y0, t, method=method,
                        step_size=period / steps_per_period)
    return (ys[-1] - reference[-1]).abs().max().item()


@pytest.mark.parametrize("method", ["leapfrog", "yoshida4"])
def test_global_error_falls_with_the_methods_order(method):
    steps = [16, 32, 64] if method == "leapfrog" else [8, 16, 32]
    errors = [_pendulum_error(method, n) for n in steps]
    slopes = [math.log2(errors[i] / errors[i + 1]) for i in range(len(errors) - 1)]
    for slope in slopes:
        assert slope == pytest.approx(ORDER[method], abs=0.25), (errors, slopes)


def test_three_body_with_yoshida4_keeps_momentum_and_follows_the_figure_eight():
    three = physode.systems.load("three_body")
    y0 = three.initial_state("figure_eight")
    t = torch.tensor([0.0, three.characteristic_time], dtype=F64)
    ys = physode.odeint(three.vector_field(), y0, t, method="yoshida4", step_size=0.02)
    inv0, inv1 = three.invariants(ys[0]), three.invariants(ys[-1])
    assert abs(inv1["momentum_x"] - inv0["momentum_x"]) <= 1e-12
    assert abs(inv1["momentum_y"] - inv0["momentum_y"]) <= 1e-12
    assert abs((inv1["energy"] - inv0["energy"]) / inv0["energy"]) < 1e-6
    assert (ys[-1] - y0).abs().max() < 1e-4


@pytest.mark.parametrize("method", ["leapfrog", "yoshida4"])
def test_solved_forward_then_backward_a_step_that_divides_the_output_spacing_returns_to_y0(
    method,
):
    # The symmetric methods are time-reversible; a step shortened to land on an output is not
    # (docs/solvers.md: 1e-13 against 3.5e-3 for leapfrog with step_size 0.03).
    pend = physode.systems.load("pendulum")
    y0 = pend.sample_initial_states(4, seed=0)
    t = torch.linspace(0.0, 10.0, 7, dtype=F64)
    back = {}
    for step_size in (1 / 30, 0.03):
        ys = physode.odeint(pend.vector_field(), y0, t, method=method, step_size=step_size)
        there = physode.odeint(pend.vector_field(), ys[-1], t.flip(0), method=method,
                               step_size=step_size)  # fmt: skip
        back[step_size] = (there[-1] - y0).abs().max().item()
    assert back[1 / 30] < 1e-12 and back[0.03] > 1e-6, back


def test_first_order_system_declaring_its_split_can_use_leapfrog():
    x, v, k = sympy.symbols("x v k")
    osc = System.from_equations({x: v, v: -k * x}, {k: 4.0}, n_coordinates=1)
    f = osc.vector_field()
    assert f.separable and f.n_coordinates == 1
    t = torch.tensor([0.0, math.pi], dtype=F64)  # one period at k = 4
    ys = physode.odeint(f, torch.tensor([1.0, 0.0], dtype=F64), t, method="leapfrog",
                        step_size=math.pi / 200)
    torch.testing.assert_close(ys[-1], torch.tensor([1.0, 0.0], dtype=F64), atol=1e-3, rtol=0)


@pytest.mark.parametrize(
    "name, why",
    [
        ("double_pendulum", "its mass matrix depends on the coordinates"),
        ("damped_pendulum", "a force depends on the velocities"),
        ("van_der_pol", "is first order"),
    ],
)
@pytest.mark.parametrize("method", ["leapfrog", "yoshida4"])
def test_non_separable_systems_are_refused_saying_why(name, why, method):
    system = physode.systems.load(name)
    y0 = system.sample_initial_states(1)
    t = torch.tensor([0.0, 1.0], dtype=F64)
    with pytest.raises(physode.InvalidArgumentError, match="needs a separable system") as error:
        physode.odeint(system.vector_field(), y0, t, method=method, step_size=0.1)
    assert f"System {name!r}" in str(error.value) and why in str(error.value)


def test_a_hamiltonian_whose_mass_depends_on_t_is_refused_for_its_kinetic_part_not_a_force():
    forced = physode.System.from_hamiltonian(
        "p**2 / 2 + q**2 / 2 - q * cos(t)", coordinates=["q"], momenta=["p"], name="forced"
    )
    assert forced.vector_field().separable  # a force that depends on t alone is separable
    system = physode.System.from_hamiltonian(
        "p**2 / (2 * (1 + t)) + q**2 / 2", coordinates=["q"], momenta=["p"], name="growing_mass"
    )
    with pytest.raises(physode.InvalidArgumentError, match="needs a separable system") as error:
        physode.odeint(system.vector_field(), torch.tensor([1.0, 0.0], dtype=F64), [0.0, 1.0],
                       method="leapfrog", step_size=0.1)  # fmt: skip
    message = str(error.value)
    assert "dq/dt = dH/dp depends on q or on t" in message
    assert "depends on the momenta or on t" not in message


def test_a_func_of_ones_own_without_a_split_is_told_how_to_declare_one():
    with pytest.raises(physode.InvalidArgumentError, match="func.separable = True"):
        physode.odeint(lambda t, y: -y, torch.ones(2, dtype=F64), [0.0, 1.0], method="leapfrog",
                       step_size=0.1)  # fmt: skip


def test_a_hamiltonian_with_a_mass_that_depends_on_q_is_refused_naming_its_hamiltonian():
    system = physode.System.from_hamiltonian(
        "p**2 / (2 * (1 + q**2)) + q**2 / 2", coordinates=["q"], momenta=["p"], name="variable_mass"
    )
    with pytest.raises(physode.InvalidArgumentError, match="Hamiltonian is not T"):
        physode.odeint(system.vector_field(), torch.tensor([1.0, 0.0], dtype=F64), [0.0, 1.0],
                       method="leapfrog", step_size=0.1)  # fmt: skip



def test_a_hamiltonian_with_a_force_of_the_momentum_is_refused_naming_the_force():
    # The Hamiltonian is T(p) + V(q); the force is what breaks the split.
    system = physode.System.from_hamiltonian(
        "p**2 / 2 + q**2 / 2", coordinates=["q"], momenta=["p"], parameters={"c": 0.1},
        forces={"q": "-c*p"}, name="damped",
    )  # fmt: skip
    with pytest.raises(physode.InvalidArgumentError, match="a force depends on the momenta"):
        physode.odeint(system.vector_field(), torch.tensor([1.0, 0.0], dtype=F64), [0.0, 1.0],
                       method="leapfrog", step_size=0.1)  # fmt: skip

class _Oscillator:
    """dq/dt = v, dv/dt = -q, declaring its split by hand."""

    separable = True

    def __init__(self, n_coordinates):
        self.n_coordinates = n_coordinates

    def __call__(self, t, y):
        return torch.stack([y[..., 1], -y[..., 0]], dim=-1)


def test_n_coordinates_must_be_a_positive_int_not_a_bool():
    # n_coordinates=True was taken as 1.
    y0, t = torch.tensor([1.0, 0.0], dtype=F64), [0.0, 1.0]
    with pytest.raises(physode.InvalidArgumentError, match="n_coordinates must be a positive int"):
        physode.odeint(_Oscillator(True), y0, t, method="leapfrog", step_size=0.1)
    # A NumPy integer (read from an array of settings) counts, and was refused.
    ys = physode.odeint(_Oscillator(np.int64(1)), y0, t, method="leapfrog", step_size=0.01)
    assert ys[-1, 0].item() == pytest.approx(math.cos(1.0), abs=1e-4)


class _Declared:
    """A vector field on [q, v] that declares a split; ``coupling`` breaks it in one half."""

    separable, n_coordinates = True, 1

    def __init__(self, half: str | None):
        self.half = half

    def __call__(self, t, y):
        q, v = y[..., 0], y[..., 1]
        dq = v + 0.1 * q if self.half == "q" else v
        dv = -q - 0.1 * v if self.half == "v" else -q
        return torch.stack([dq, dv], dim=-1)


@pytest.mark.parametrize("method", ["leapfrog", "yoshida4"])
@pytest.mark.parametrize("half", ["q", "v"])
def test_a_split_declared_but_false_is_refused_naming_the_half_that_breaks_it(method, half):
    # A damped oscillator declaring separable = True used to be integrated as if it separated.
    y0 = torch.tensor([[1.0, 0.5], [0.2, -0.3]], dtype=F64)
    with pytest.raises(physode.InvalidArgumentError, match=rf"d{half}/dt changed when only {half}"):
        physode.odeint(_Declared(half), y0, [0.0, 1.0], method=method, step_size=0.1)


def test_a_true_split_passes_the_probe_and_its_evaluations_are_counted():
    y0, t = torch.tensor([1.0, 0.0], dtype=F64), [0.0, 1.0]
    solution = physode.solve(_Declared(None), y0, t, method="leapfrog", step_size=0.1)
    assert solution.stats.n_steps == 10
    # Four probe evaluations, then f(t0, y0) and two per step: dq/dt is v here, but func does
    # not declare it (drift_is_velocity), so each drift is evaluated.
    assert solution.stats.nfe == 4 + 1 + 2 * 10


class _Switches(_Declared):
    """``_Declared(None)`` (dq/dt is v) with ``separable`` and ``drift_is_velocity`` as given."""

    def __init__(self, separable, drift_is_velocity=False):
        super().__init__(None)
        self.separable, self.drift_is_velocity = separable, drift_is_velocity


@pytest.mark.parametrize(
    "switches, name, value",
    [
        ((1,), "separable", "1"),
        (("yes",), "separable", "'yes'"),
        ((True, "True"), "drift_is_velocity", "'True'"),
        ((True, 1), "drift_is_velocity", "1"),
    ],
)
def test_a_switch_set_to_another_value_than_a_bool_is_refused_naming_it(switches, name, value):
    # separable = 1 was refused as "does not declare the split: ... can set func.separable =
    # True"; drift_is_velocity = "True" was ignored, each drift evaluated, silently.
    y0 = torch.tensor([1.0, 0.0], dtype=F64)
    message = rf"func\.{name} must be True or False, got {value};"
    with pytest.raises(physode.InvalidArgumentError, match=message):
        physode.odeint(_Switches(*switches), y0, [0.0, 1.0], method="leapfrog", step_size=0.1)


def test_numpy_true_declares_a_switch_as_true_does():
    # A switch read from an array of settings was taken for no declaration.
    y0 = torch.tensor([1.0, 0.0], dtype=F64)
    solution = physode.solve(_Switches(np.True_, np.True_), y0, [0.0, 1.0], method="leapfrog",
                             step_size=0.1)  # fmt: skip
    assert solution.stats.nfe == 5 + 1 + 1 * 10  # the drifts by v itself: one per step
    unset = physode.solve(_Switches(True, np.False_), y0, [0.0, 1.0], method="leapfrog",
                          step_size=0.1)  # fmt: skip
    assert unset.stats.nfe == 4 + 1 + 2 * 10
    assert torch.equal(solution.ys, unset.ys)


def _counted(field):
    """``field`` with its split declared, recording the states it is evaluated at."""
    calls = []

    def counted(t, y):
        calls.append(y)
        return field(t, y)

    counted.separable, counted.n_coordinates = True, field.n_coordinates
    counted.drift_is_velocity = field.drift_is_velocity
    return counted, calls


@pytest.mark.parametrize("method, per_step", [("leapfrog", 1), ("yoshida4", 3)])
def test_where_dq_dt_is_v_a_step_evaluates_func_once_per_kick(method, per_step):
    # Each drift evaluated func only to read back dq/dt = v: 2 and 6 evaluations a step, where a
    # velocity Verlet step costs one (its last kick's force is the next step's first).
    pend = physode.systems.load("pendulum")
    field, calls = _counted(pend.vector_field())
    y0 = torch.tensor([[1.0, 0.0], [0.2, 1.5]], dtype=F64)
    solution = physode.solve(field, y0, [0.0, 0.25, 1.0], method=method, step_size=0.1)
    assert solution.stats.n_steps == 11  # 3 onto t = 0.25, 8 onto t = 1
    assert solution.stats.nfe == len(calls) == 5 + 1 + per_step * 11


@pytest.mark.parametrize("method, per_step", [("leapfrog", 1), ("yoshida4", 3)])
def test_a_physics_model_drifts_by_v_as_its_systems_field_does(method, per_step):
    # PhysicsModel did not pass on its field's drift_is_velocity: every drift evaluated the
    # model, twice the evaluations of the same system's vector_field().
    from physode.models import PhysicsModel
    from physode.train._rows import solve_rows

    pend = physode.systems.load("pendulum")
    y0 = torch.tensor([[1.0, 0.0], [0.2, 1.5]], dtype=F64)
    t = [0.0, 1.0]
    field = physode.solve(pend.vector_field(learnable=["g"]), y0, t, method=method,
                          step_size=0.1)  # fmt: skip
    model = PhysicsModel(pend, learnable=["g"], per_trajectory=["l"], n_trajectories=2)
    assert model.drift_is_velocity is True
    solved = physode.solve(model, y0, t, method=method, step_size=0.1)
    # And with each row's parameters, as the trainer solves a batch
    rows = torch.tensor([[1.0, 9.81, 1.0], [1.0, 9.81, 1.0]], dtype=F64)
    per_row = solve_rows(model, y0, torch.tensor(t, dtype=F64), rows, method=method,
                         step_size=0.1)  # fmt: skip
    # The probes, f(t0, y0) and one search for the parameters func uses, then the steps'
    assert field.stats.nfe == 5 + 1 + 1 + per_step * 10
    for solution in (solved, per_row):
        assert solution.stats.nfe == field.stats.nfe
        torch.testing.assert_close(solution.ys, field.ys, rtol=0, atol=0)


@pytest.mark.parametrize("method, per_step", [("leapfrog", 2), ("yoshida4", 6)])
def test_where_dq_dt_is_not_v_each_drift_still_evaluates_func(method, per_step):
    osc = physode.systems.load("harmonic_oscillator")  # dq/dt = p / m
    field, calls = _counted(osc.vector_field(values={"m": 2.0}))
    y0 = torch.tensor([1.0, 0.5], dtype=F64)
    solution = physode.solve(field, y0, [0.0, 1.0], method=method, step_size=0.1)
    assert solution.stats.nfe == len(calls) == 4 + 1 + per_step * 10
    # At m = 2 the drift q' = p / 2 must be read from func: a drift by p itself goes twice as
    # fast. The exact solution, to the methods' accuracy:
    w = 1.0 / math.sqrt(2.0)
    q = math.cos(w) + 0.5 * math.sin(w) / (2.0 * w)
    assert solution.ys[-1, 0].item() == pytest.approx(q, abs=3e-3)


@pytest.mark.parametrize("method", ["leapfrog", "yoshida4"])
def test_a_dq_dt_that_matches_v_at_every_probe_is_not_taken_for_v_unless_declared(method):
    # dq/dt = clamp(v, -1, 1) started from rest equals v bit for bit at every probed state; a
    # drift by v taken from the probes alone integrated another system (q(2) = 2.73, not 1.35).
    def field(t, y):
        q, v = y[..., :1], y[..., 1:]
        return torch.cat([v.clamp(-1.0, 1.0), 1.0 + 0.0 * q], dim=-1)

    field.separable, field.n_coordinates = True, 1
    y0, t = torch.tensor([0.0, 0.0], dtype=F64), [0.0, 2.0]
    solution = physode.solve(field, y0, t, method=method, step_size=0.01)
    assert solution.stats.nfe == 4 + 1 + 2 * (ORDER[method] - 1) * 200
    reference = physode.odeint(field, y0, t, method="dop853", rtol=1e-12, atol=1e-12)
    assert (solution.ys[-1] - reference[-1]).abs().max() < 1e-3


@pytest.mark.parametrize("method", ["leapfrog", "yoshida4"])
def test_a_declared_drift_by_v_that_a_probe_contradicts_is_refused(method):
    # dq/dt = v / (1 + t) is v at t = 0 only: the fifth probe, at a later time, refutes it.
    def timed(t, y):
        q, v = y[..., :1], y[..., 1:]
        return torch.cat([v / (1.0 + t), -q], dim=-1)

    # dq/dt = p / m at m = 1 is p bit for bit, but m requires grad: its gradient would be lost.
    osc = physode.systems.load("harmonic_oscillator").vector_field(learnable=["m"])
    osc.drift_is_velocity = True
    timed.separable, timed.n_coordinates, timed.drift_is_velocity = True, 1, True
    y0, t = torch.tensor([1.0, 0.5], dtype=F64), [0.0, 1.0]
    for field in (timed, osc):
        with pytest.raises(physode.InvalidArgumentError, match="declares drift_is_velocity = "
                           "True, but its dq/dt is not v itself"):  # fmt: skip
            physode.solve(field, y0, t, method=method, step_size=0.1)
    skew = _SkewDrift()
    skew.drift_is_velocity = True  # its change with theta is orthogonal to v
    with pytest.raises(physode.InvalidArgumentError, match="declares drift_is_velocity"):
        physode.solve(skew, torch.tensor([1.0, 0.0, 0.0, 0.5], dtype=F64), t, method=method,
                      step_size=0.1)  # fmt: skip


@pytest.mark.parametrize("method", ["leapfrog", "yoshida4"])
def test_a_parameter_in_dq_dt_gets_its_gradient_through_the_evaluated_drift(method):
    # dq/dt = p / m: the vector field does not declare drift_is_velocity, so at m = 1, where
    # it is p bit for bit, each drift still evaluates func and m gets its gradient.
    osc = physode.systems.load("harmonic_oscillator")
    y0, t = torch.tensor([1.0, 0.5], dtype=F64), [0.0, 0.5, 2.0]
    field = osc.vector_field(learnable=["m"])
    assert not field.drift_is_velocity
    solution = physode.solve(field, y0, t, method=method, step_size=0.1)
    per_step = 2 * (ORDER[method] - 1)  # 2 (leapfrog) or 6 (yoshida4)
    # Four probes, one more first evaluation, which looks for the tensors func reaches, then
    # two a substep.
    assert solution.stats.nfe == 4 + 2 + per_step * 20
    (grad,) = torch.autograd.grad(solution.ys[-1, 0], [field.m])

    def q_end(m):
        f = osc.vector_field(values={"m": m})
        return physode.odeint(f, y0, t, method=method, step_size=0.1)[-1, 0].item()

    eps = 1e-6
    difference = (q_end(1.0 + eps) - q_end(1.0 - eps)) / (2 * eps)
    assert grad.item() == pytest.approx(difference, rel=1e-7)
    assert abs(grad.item()) > 0.1  # the drift's share is not negligible


class _SkewDrift(torch.nn.Module):
    """dq/dt = (I + theta J) v with J a quarter turn and a learnable theta started at 0, where
    dq/dt is v bit for bit; dv/dt = -q."""

    separable, n_coordinates = True, 2

    def __init__(self):
        super().__init__()
        self.theta = torch.nn.Parameter(torch.zeros((), dtype=F64))

    def forward(self, t, y):
        q, v = y[..., :2], y[..., 2:]
        turned = torch.stack([v[..., 1], -v[..., 0]], dim=-1)
        return torch.cat([v + self.theta * turned, -q], dim=-1)


@pytest.mark.parametrize("method", ["leapfrog", "yoshida4"])
def test_a_parameter_whose_change_of_dq_dt_is_orthogonal_to_it_keeps_its_gradient(method):
    # d(dq/dt)/d(theta) = J v is orthogonal to dq/dt = v, so a probe that projects the change
    # of dq/dt on dq/dt itself sees none and drifted by v, giving theta a gradient of 0.
    y0, t = torch.tensor([1.0, 0.0, 0.0, 0.5], dtype=F64), [0.0, 1.0]
    grads = []
    for m in (method, "rk4"):
        field = _SkewDrift()
        ys = physode.solve(field, y0, t, method=m, step_size=0.01).ys
        grads.append(torch.autograd.grad(ys[-1, 0], [field.theta])[0].item())
    assert abs(grads[1]) > 0.1
    assert grads[0] == pytest.approx(grads[1], rel=1e-3)


@pytest.mark.parametrize("method, per_step", [("leapfrog", 1), ("yoshida4", 3)])
def test_the_three_gradient_modes_agree_where_the_drift_is_v_itself(method, per_step):
    pend = physode.systems.load("pendulum")
    t, y0 = [0.0, 0.7, 1.5], torch.tensor([[1.0, 0.0], [0.2, 1.5]], dtype=F64)
    grads, stats = {}, {}
    for mode in ["disc-opt", "aca", "opt-disc"]:
        field = pend.vector_field(learnable=["g", "l"])
        y = y0.clone().requires_grad_(True)
        exact = physode.OptDisc(method="dop853", rtol=1e-12, atol=1e-12)
        gradient = exact if mode == "opt-disc" else mode
        solution = physode.solve(field, y, t, method=method, step_size=0.01, gradient=gradient)
        loss = (solution.ys**2).sum()
        grads[mode] = torch.autograd.grad(loss, [y, field.g, field.l])
        stats[mode] = solution.stats
    # ACA rebuilds the steps Disc-Opt recorded; Opt-Disc differentiates the exact flow, so it
    # agrees to the forward method's accuracy (measured: 2e-4 and 6e-8 of the largest entry).
    for mode, tolerance in [("aca", 1e-14), ("opt-disc", 1e-3 if method == "leapfrog" else 1e-6)]:
        for a, b in zip(grads["disc-opt"], grads[mode], strict=True):
            assert (a - b).abs().max() <= tolerance * a.abs().max(), (mode, a, b)
    steps = stats["aca"].n_steps
    assert stats["disc-opt"].nfe == 5 + 1 + per_step * steps
    # ACA rebuilds each step but the last (its graph is kept) from f(t, y) and its kicks.
    assert stats["aca"].nfe_backward == (steps - 1) * (1 + per_step)


def test_a_broken_split_is_found_also_from_a_state_at_rest():
    # dq/dt = v (1 + 0.1 q) does not change with q where v = 0: probed only at y0's v, a system
    # released from rest was integrated as if it separated.
    def field(t, y):
        q, v = y[..., 0], y[..., 1]
        return torch.stack([v * (1.0 + 0.1 * q), -q], dim=-1)

    field.separable, field.n_coordinates = True, 1
    y0 = torch.tensor([1.0, 0.0], dtype=F64)
    with pytest.raises(physode.InvalidArgumentError, match=r"dq/dt changed when only q"):
        physode.odeint(field, y0, [0.0, 1.0], method="leapfrog", step_size=0.1)


class _SeparableHNN(torch.nn.Module):
    """H(q, p) = T(p) + V(q) with networks, differentiated by autograd: separable by design."""

    separable, n_coordinates = True, 2

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.kinetic = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(),
                                           torch.nn.Linear(16, 1)).double()  # fmt: skip
        self.potential = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(),
                                             torch.nn.Linear(16, 1)).double()  # fmt: skip

    def forward(self, t, y):
        graph = torch.is_grad_enabled()  # keep the derivative's graph only where one is wanted
        with torch.enable_grad():
            y = y if y.requires_grad else y.detach().requires_grad_(True)
            q, p = y[..., :2], y[..., 2:]
            energy = (self.kinetic(p) + self.potential(q)).sum()
            (grad,) = torch.autograd.grad(energy, y, create_graph=graph)
        return torch.cat([grad[..., 2:], -grad[..., :2]], dim=-1)


def test_a_separable_network_differentiated_by_autograd_passes_the_probe():
    # The probe compares bit for bit: autograd's zero derivative of T(p) with respect to q must
    # leave dp/dt exactly unchanged, with no tolerance to tune.
    y0 = torch.randn(8, 4, dtype=F64, generator=torch.Generator().manual_seed(1))
    ys = physode.odeint(_SeparableHNN(), y0, [0.0, 0.5], method="yoshida4", step_size=0.05)
    assert torch.isfinite(ys).all()


def test_opt_disc_tolerances_after_a_symplectic_method_name_the_forward_method():
    # The default backward method after leapfrog is rk4, fixed-step: the message says why rk4.
    field = physode.systems.load("harmonic_oscillator").vector_field(learnable=["k"])
    y0 = torch.tensor([1.0, 0.0], dtype=F64, requires_grad=True)
    with pytest.raises(physode.InvalidArgumentError,
                       match="'rk4' \\(the default after the symplectic forward method "
                             "'leapfrog'\\) is fixed-step"):  # fmt: skip
        physode.odeint(field, y0, [0.0, 1.0], method="leapfrog", step_size=0.1,
                       gradient=physode.OptDisc(rtol=1e-6))  # fmt: skip
