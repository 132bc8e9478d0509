"""Symbolic systems: derived equations, generated torch code, invariants, vector fields."""

from __future__ import annotations

import collections
import math
import re
import subprocess
import sys

import numpy as np
import pytest
import sympy
import torch
from sympy.physics.mechanics import LagrangesMethod, dynamicsymbols
from torch.utils._python_dispatch import TorchDispatchMode

import physode
import physode.systems
from physode.symbolic import System, compile_kernel, generate_source

F64 = torch.float64


def test_pendulum_equation_is_minus_g_over_l_sin_theta_exactly():
    th, w, m, g, l = sympy.symbols("theta theta_dot m g l")
    pend = System.from_lagrangian(
        m * l**2 * w**2 / 2 + m * g * l * sympy.cos(th), [th], {m: 1.0, g: 9.81, l: 1.0}
    )
    assert pend.equations == {"theta": w, "theta_dot": -g * sympy.sin(th) / l}
    assert pend.energy_expression == m * l**2 * w**2 / 2 - m * g * l * sympy.cos(th)


def test_catalogue_pendulum_has_the_hand_derived_equation():
    pend = physode.systems.load("pendulum")
    th, g, l = sympy.symbols("theta g l")
    assert pend.equations["theta_dot"] == -g * sympy.sin(th) / l


def test_hamiltonian_oscillator_gives_hamiltons_equations_exactly():
    q, p, m, k = sympy.symbols("q p m k")
    osc = System.from_hamiltonian(p**2 / (2 * m) + k * q**2 / 2, [q], [p], {m: 2.0, k: 3.0})
    assert osc.equations == {"q": p / m, "p": -k * q}
    assert osc.invariant_expressions == {"energy": p**2 / (2 * m) + k * q**2 / 2}
    assert osc.separable and osc.n_coordinates == 1


def test_rayleigh_dissipation_and_generalized_forces_enter_the_equations():
    x, v, m, k, c, f, w, t = sympy.symbols("x v m k c f omega t")
    damped = System.from_lagrangian(
        m * v**2 / 2 - k * x**2 / 2, [x], {m: 1.0, k: 1.0, c: 0.1, f: 0.5, w: 1.0},
        velocities=[v], dissipation=c * v**2 / 2, forces={x: f * sympy.cos(w * t)},
    )
    assert sympy.simplify(
        damped.equations["v"] - (-k * x - c * v + f * sympy.cos(w * t)) / m
    ) == 0
    assert not damped.conservative and damped.invariant_names == []
    assert damped.energy_expression == m * v**2 / 2 + k * x**2 / 2


def test_a_momentum_that_depends_on_time_adds_its_time_derivative():
    # Caldirola-Kanai: L = exp(gamma t) (v^2 - omega^2 x^2) / 2. The momentum exp(gamma t) v
    # depends on t, and d/dt of it makes the damping: a = -gamma v - omega^2 x.
    x, v, g, w, t = sympy.symbols("x v gamma omega t")
    lagrangian = sympy.exp(g * t) * (v**2 - w**2 * x**2) / 2
    kanai = System.from_lagrangian(lagrangian, [x], {g: 0.3, w: 2.0}, velocities=[v])
    assert sympy.simplify(kanai.equations["v"] - (-g * v - w**2 * x)) == 0
    assert not kanai.conservative


def _double_pendulum_lagrangian(t):
    q1, q2 = dynamicsymbols("theta1 theta2")
    m1, m2, l1, l2, g = sympy.symbols("m1 m2 l1 l2 g")
    d1, d2 = q1.diff(t), q2.diff(t)
    lagrangian = (
        (m1 + m2) * l1**2 * d1**2 / 2 + m2 * l2**2 * d2**2 / 2
        + m2 * l1 * l2 * d1 * d2 * sympy.cos(q1 - q2)
        + (m1 + m2) * g * l1 * sympy.cos(q1) + m2 * g * l2 * sympy.cos(q2)
    )
    return lagrangian, [q1, q2], {m1: 1.0, m2: 1.5, l1: 1.0, l2: 0.7, g: 9.81}


def test_double_pendulum_equals_sympy_lagranges_method():
    t = dynamicsymbols._t
    lagrangian, coords, params = _double_pendulum_lagrangian(t)
    ours = System.from_lagrangian(lagrangian, coords, params, time=t)
    lm = LagrangesMethod(lagrangian, coords)
    lm.form_lagranges_equations()
    th1, th2, w1, w2 = (sympy.Symbol(n) for n in ours.state_names)
    plain = {coords[0].diff(t): w1, coords[1].diff(t): w2}
    names = {coords[0]: th1, coords[1]: th2}
    mass = lm.mass_matrix.subs(plain).subs(names)
    forcing = lm.forcing.subs(plain).subs(names)
    assert sympy.expand(mass - ours.mass_matrix) == sympy.zeros(2, 2)
    assert sympy.expand(forcing - ours.forcing) == sympy.zeros(2, 1)
    theirs = [e.subs(plain).subs(names) for e in lm.rhs()]
    for mine, ref in zip(ours.equations.values(), theirs, strict=True):
        assert sympy.simplify(mine - ref) == 0


def test_dynamicsymbols_coordinates_accept_forces_keyed_by_the_function():
    t = dynamicsymbols._t
    q = dynamicsymbols("q")
    c = sympy.Symbol("c")
    damped = System.from_lagrangian(q.diff(t) ** 2 / 2 - q**2 / 2, [q], {c: 0.5},
                                    forces={q: -c * q.diff(t)})
    assert damped.state_names == ["q", "q_dot"]
    q_, v_ = sympy.symbols("q q_dot")
    assert damped.equations["q_dot"] == -q_ - c * v_
    assert physode.System is System



def test_a_hamiltonian_takes_dynamicsymbols_as_the_lagrangian_does():
    # from_hamiltonian refused them: "coordinate q(t) must be a sympy.Symbol or a name, not q".
    t = dynamicsymbols._t
    q, p = dynamicsymbols("q p")
    m, c = sympy.symbols("m c")
    dyn = System.from_hamiltonian(p**2 / (2 * m) + q**2 / 2, [q], [p], {m: 2.0, c: 0.5},
                                  forces={q: -c * p}, invariants={"qp": q * p})
    q_, p_ = sympy.symbols("q p")
    assert dyn.state_names == ["q", "p"]
    assert dyn.equations == {"q": p_ / m, "p": -q_ - c * p_}
    assert dyn.invariant_expressions["qp"] == q_ * p_
    assert t not in dyn.equations["p"].free_symbols


def test_named_states_and_distributions_may_name_states_by_symbol_as_parameters_may():
    # initial_states={"a": {x: 1.0, v: 0.0}} was "missing states ['x', 'x_dot'], unknown names
    # [x, x_dot]", though parameters, their ranges and forces take symbols as keys.
    x, v, m, k = sympy.symbols("x x_dot m k")
    osc = System.from_lagrangian(
        m * v**2 / 2 - k * x**2 / 2, [x], {m: 1.0, k: 2.0},
        initial_states={"swing": {x: 1.0, v: -0.5}},
        initial_state_distribution={"kind": "uniform", x: [0.0, 1.0], v: [2.0, 3.0]},
    )
    assert osc.initial_state().tolist() == [1.0, -0.5]
    y0 = osc.sample_initial_states(64)
    assert ((0.0 <= y0[:, 0]) & (y0[:, 0] <= 1.0) & (2.0 <= y0[:, 1]) & (y0[:, 1] <= 3.0)).all()
    assert 'x_dot = [2.0, 3.0]' in osc.to_spec()


def test_named_states_of_dynamicsymbols_may_name_the_function_and_its_derivative():
    t = dynamicsymbols._t
    q, p = dynamicsymbols("q p")
    k = sympy.Symbol("k")
    lagrangian = System.from_lagrangian(
        q.diff(t) ** 2 / 2 - k * q**2 / 2, [q], {k: 2.0},
        initial_states={"a": {q: 1.0, q.diff(t): 3.0}},
        initial_state_distribution={"kind": "normal", q: [0.0, 1.0], q.diff(t): [5.0, 0.0]},
    )
    assert lagrangian.initial_state("a").tolist() == [1.0, 3.0]
    assert (lagrangian.sample_initial_states(4)[:, 1] == 5.0).all()
    hamiltonian = System.from_hamiltonian(
        p**2 / 2 + k * q**2 / 2, [q], [p], {k: 2.0}, initial_states={"a": {p: 2.0, q: -1.0}}
    )
    assert hamiltonian.initial_state("a").tolist() == [-1.0, 2.0]


def test_a_named_state_that_gives_a_state_by_name_and_by_symbol_is_reported():
    x, k = sympy.symbols("x k")
    with pytest.raises(physode.SystemDefinitionError, match="initial state 'a' gives 'x' twice"):
        System.from_equations({x: -k * x}, {k: 1.0}, initial_states={"a": {x: 1.0, "x": 2.0}})


@pytest.mark.parametrize("coordinate", ["theta", sympy.Symbol("theta")])
def test_a_coordinate_named_as_a_dynamicsymbol_of_the_lagrangian_is_that_dynamicsymbol(
    coordinate,
):
    # coordinates=["theta"] with theta(t) in L was "function(s) theta that have no torch
    # translation": the name says which coordinate is meant, as it does for symbols.
    t = dynamicsymbols._t
    th = dynamicsymbols("theta")
    m, g = sympy.symbols("m g")
    lagrangian = m * th.diff(t) ** 2 / 2 + m * g * sympy.cos(th)
    by_name = System.from_lagrangian(lagrangian, [coordinate], {m: 1.0, g: 9.81},
                                     forces={"theta": -th.diff(t)})
    given = System.from_lagrangian(lagrangian, [th], {m: 1.0, g: 9.81}, forces={th: -th.diff(t)})
    assert by_name.state_names == given.state_names == ["theta", "theta_dot"]
    assert by_name.equations == given.equations


def test_a_string_lagrangian_in_dynamicsymbols_reads_its_declared_names():
    # The string was parsed without the declared names: a parameter 'E' was Euler's number.
    q = dynamicsymbols("q")
    system = System.from_lagrangian("E*q(t).diff(t)**2/2 - q(t)**2/2", [q], {"E": 2.0})
    assert system.rhs(0.0, torch.tensor([1.0, 0.0], dtype=F64)).tolist() == [0.0, -0.5]

def test_catalogue_double_pendulum_matches_the_python_definition():
    t = dynamicsymbols._t
    lagrangian, coords, params = _double_pendulum_lagrangian(t)
    ours = System.from_lagrangian(lagrangian, coords, params, time=t)
    cat = physode.systems.load("double_pendulum")
    assert cat.state_names == ours.state_names
    y = cat.sample_initial_states(5, seed=3)
    p = torch.tensor([params[sympy.Symbol(n)] for n in cat.parameters], dtype=F64)
    torch.testing.assert_close(cat.rhs(0.0, y, p), ours.rhs(0.0, y, p), rtol=1e-13, atol=1e-13)


def test_numeric_mass_matrix_solve_equals_the_symbolic_solve():
    t = dynamicsymbols._t
    lagrangian, coords, params = _double_pendulum_lagrangian(t)
    symbolic = System.from_lagrangian(lagrangian, coords, params, time=t, mass_matrix="symbolic")
    numeric = System.from_lagrangian(lagrangian, coords, params, time=t, mass_matrix="numeric")
    y = torch.randn(3, 7, 4, dtype=F64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(numeric.rhs(0.0, y), symbolic.rhs(0.0, y), rtol=1e-12, atol=1e-12)
    assert numeric.equations.keys() == symbolic.equations.keys()


def _sympy_value(expr, values):
    return float(expr.evalf(30, subs=values))


@pytest.mark.parametrize("name", physode.systems.names())
def test_generated_torch_equals_sympy_evaluation_to_1e_12(name):
    system = physode.systems.load(name)
    y = system.sample_initial_states(3, seed=11)
    p = system.sample_parameters(3, seed=12)
    t = torch.tensor(0.37, dtype=F64)
    out = system.rhs(t, y, p)
    invariants = system.invariants(y, p)
    symbols = system.state_symbols + system.parameter_symbols
    for row in range(3):
        values = dict(zip(symbols, y[row].tolist() + p[row].tolist(), strict=True))
        values[system.time_symbol] = 0.37
        expected = [_sympy_value(e, values) for e in system.equations.values()]
        expected = torch.tensor(expected, dtype=F64)
        torch.testing.assert_close(out[row], expected, rtol=1e-12, atol=1e-12)
        # One unbatched state takes the scalar (Python float) path.
        single = system.rhs(t, y[row], p[row])
        torch.testing.assert_close(single, expected, rtol=1e-12, atol=1e-12)
        for key, expr in system.invariant_expressions.items():
            reference = _sympy_value(expr, values)
            assert invariants[key][row].item() == pytest.approx(reference, rel=1e-12, abs=1e-12)


def test_generated_code_uses_common_subexpressions_and_single_ops():
    source = physode.systems.load("three_body")._rhs_kernel.source
    # Each of the three inverse cubed pair distances is computed once, with exactly rounded ops
    # (rsqrt and a division) rather than pow, whose last bit depends on the batch.
    assert source.count("torch.rsqrt(") == 3
    assert "** -1.5" not in source and "** 1.5" not in source
    assert "sympy" not in source


def test_generated_code_takes_a_scaled_block_of_outputs_whole():
    # dr/dt = K v is one product on a slice of y, joined to the other outputs by one concatenation:
    # its columns are neither unbound nor stacked one by one, so the backward pass selects only
    # the single outputs' columns and builds no zeros for the velocities it reads as a slice.
    system = physode.systems.load("three_body_aca")
    y = system.sample_initial_states(4, seed=0).requires_grad_(True)
    p = system.default_parameters().requires_grad_(True)
    out = system.rhs(0.0, y, p)
    with _CountedOps() as backward:
        torch.autograd.grad(out, [y, p], torch.ones_like(out))
    assert backward.counts["zeros"] == 0
    assert backward.counts["select"] == 9  # the nine accelerations
    detached = system.rhs(0.0, y.detach(), p.detach())
    assert torch.equal(out, detached)


class _CountedOps(TorchDispatchMode):
    """Counts the aten operations run inside it, by name."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


def test_a_row_of_the_generated_kernel_is_bitwise_the_same_alone_and_in_a_batch():
    system = physode.systems.load("three_body")
    y = system.sample_initial_states(37, seed=3)
    p = torch.tensor(list(system.parameters.values()), dtype=F64)
    batch = system.rhs(0.0, y, p)
    for i in (0, 17, 36):
        assert torch.equal(batch[i : i + 1], system.rhs(0.0, y[i : i + 1], p))


def test_kernel_broadcasts_leading_dimensions_of_state_and_parameters():
    system = physode.systems.load("kepler")
    y = system.sample_initial_states(6, seed=0).reshape(2, 3, 4)
    p_rows = system.sample_parameters(6, seed=0).reshape(2, 3, 1)
    out = system.rhs(0.0, y, p_rows)
    for i in range(2):
        for j in range(3):
            torch.testing.assert_close(out[i, j], system.rhs(0.0, y[i, j], p_rows[i, j]))
    # Parameters for a batch, state shared: the state broadcasts.
    assert system.rhs(0.0, y[0, 0], p_rows[0]).shape == (3, 4)


def test_constant_and_time_only_outputs_get_the_batch_shape():
    x, a, t = sympy.symbols("x a t")
    system = System.from_equations({x: a, sympy.Symbol("z"): sympy.cos(t)}, {a: 2.0})
    y = torch.zeros(5, 2, dtype=F64)
    torch.testing.assert_close(system.rhs(0.5, y)[:, 0], torch.full((5,), 2.0, dtype=F64))
    # One time per row, as the per-sample solver passes it.
    t_rows = torch.linspace(0, 1, 5, dtype=F64).reshape(5, 1)
    torch.testing.assert_close(system.rhs(t_rows, y)[:, 1], torch.cos(t_rows[:, 0]))


@pytest.mark.parametrize("mass_matrix", ["symbolic", "numeric"])
def test_a_time_of_another_dtype_leaves_the_result_in_the_dtype_of_the_state(mass_matrix):
    # One float64 time per row with a float32 state gave a float64 result (the documented
    # dtype is y's): the time took part in the arithmetic uncast.
    x, v, w, t = sympy.symbols("x v omega t")
    driven = System.from_lagrangian(
        v**2 / 2 - x**2 / 2, [x], {w: 2.0}, velocities=[v], forces={x: sympy.cos(w * t)},
        mass_matrix=mass_matrix,
    )
    y = torch.tensor([[1.0, 0.5], [0.0, -1.0], [2.0, 0.0]])
    t_rows = torch.tensor([[0.1], [0.2], [0.3]], dtype=F64)
    for time in (t_rows, t_rows[0, 0]):
        out = driven.rhs(time, y)
        assert out.dtype == torch.float32
        torch.testing.assert_close(out, driven.rhs(time.float(), y), rtol=0, atol=0)
        assert driven.vector_field()(time, y).dtype == torch.float32


def test_constant_outputs_take_the_batch_shape_of_per_row_parameters():
    # A constant output (dv/dt = -g) of a state shared by rows of parameters: the batch shape
    # is the broadcast of both, as for every other output.
    x, v, g = sympy.symbols("x v g")
    system = System.from_equations({x: v, v: -g}, {g: 9.81}, name="fall")
    y = torch.zeros(5, 1, 2, dtype=F64)
    p = torch.tensor([[1.0], [2.0], [3.0]], dtype=F64)
    out = system.rhs(0.0, y, p)
    assert out.shape == (5, 3, 2)
    torch.testing.assert_close(out[..., 1], -p[:, 0].expand(5, 3))


def test_broadcasting_parameters_does_not_import_torchs_symbolic_shapes():
    # torch.broadcast_shapes imports torch.fx's symbolic-shapes machinery on first use (tens of
    # milliseconds in every process that simulates or checks a data set with per-row
    # parameters, and its import of SymPy where none was made); NumPy's does the same sum.
    code = (
        "import sys, sympy, torch, physode\n"
        "from physode.symbolic import System\n"
        "x, v, g = sympy.symbols('x v g')\n"
        "system = System.from_equations({x: v, v: -g}, {g: 9.81}, name='fall')\n"
        "y = torch.zeros(4, 1, 2, dtype=torch.float64)\n"
        "p = torch.ones(3, 1, dtype=torch.float64)\n"
        "system.rhs(0.0, y, p)\n"
        "physode.diagnostics.conservation(physode.systems.load('pendulum'),\n"
        "    torch.zeros(5, 3, 2, dtype=torch.float64), p=torch.ones(3, 3, dtype=torch.float64))\n"
        "print('torch.fx.experimental.symbolic_shapes' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_piecewise_min_max_and_abs_are_translated():
    x, t = sympy.symbols("x t")
    piecewise = sympy.Piecewise((x**2, x < 0), (sympy.Min(x, 1), True))
    expr = piecewise + sympy.Max(x, 0.5) + sympy.Abs(x)
    kernel = compile_kernel([expr], [x], [], t)
    xs = torch.tensor([-2.0, 0.25, 3.0], dtype=F64)
    got = kernel(torch.tensor(0.0, dtype=F64), xs[:, None], torch.zeros(0, dtype=F64))[:, 0]
    expected = [float(expr.subs(x, v)) for v in xs.tolist()]
    torch.testing.assert_close(got, torch.tensor(expected, dtype=F64))


def test_piecewise_terms_that_share_a_condition_are_generated():
    # sympy.cse named the shared x_dot > 0 as a subexpression, and code generation failed
    # with AttributeError: 'StrictGreaterThan' object has no attribute 'as_coeff_Mul'. A
    # Lagrangian with a Piecewise in the velocity has such an energy, v dL/dv - L.
    x, v, m, k = sympy.symbols("x x_dot m k")
    kinetic = sympy.Piecewise((m * v**2 / 2, v > 0), (m * v**2, True))
    system = System.from_lagrangian(kinetic - k * x**2 / 2, [x], {m: 1.5, k: 2.0})
    ys = torch.tensor([[0.5, 1.0], [0.5, -1.0]], dtype=F64)
    torch.testing.assert_close(system.energy(ys), torch.tensor([1.0, 1.75], dtype=F64))
    torch.testing.assert_close(system.energy(ys[1]), torch.tensor(1.75, dtype=F64))  # floats
    assert system.rhs_numpy is not None
    np.testing.assert_allclose(
        system.rhs_numpy(0.0, ys.numpy(), system.default_parameters().numpy()),
        [[1.0, -2.0 / 3.0], [-1.0, -1.0 / 3.0]], rtol=1e-15,
    )


@pytest.mark.parametrize("default_in_contact", [False, True])
def test_a_branch_not_taken_gives_no_nan_gradient(default_in_contact):
    # A Hertz contact force k*(-x)**(3/2) acts for x < 0 only. torch.where passed its zero
    # gradient through the branch not taken, whose derivative is NaN there (sqrt of x > 0):
    # one state out of contact made the gradient of every state and of k NaN.
    x, v, m, k = sympy.symbols("x x_dot m k")
    force = k * (-x) ** sympy.Rational(3, 2)
    if default_in_contact:
        potential = sympy.Piecewise((0, x >= 0), (2 * force * -x / 5, True))
    else:
        potential = sympy.Piecewise((2 * force * -x / 5, x < 0), (0, True))
    system = System.from_lagrangian(m * v**2 / 2 - potential, [x], {m: 1.0, k: 10.0})
    field = system.vector_field(learnable=["k"])
    y = torch.tensor([[0.3, -1.0], [-0.2, 1.0]], dtype=F64, requires_grad=True)
    field(torch.tensor(0.0, dtype=F64), y)[:, 1].sum().backward()
    # d/dx of k (-x)**1.5 / m at x = -0.2: -1.5 k sqrt(0.2); d/dk: 0.2**1.5
    torch.testing.assert_close(y.grad[:, 0], torch.tensor([0.0, -15 * 0.2**0.5], dtype=F64))
    torch.testing.assert_close(field.k.grad, torch.tensor(0.2**1.5, dtype=F64))


@pytest.mark.parametrize("kind", ["Max", "Min", "Max3", "sign"])
def test_an_argument_not_chosen_gives_no_nan_gradient(kind):
    # A stiffness floor Max(sqrt(k|x|), a): at x = 0 the floor a is chosen, and
    # torch.maximum's zero gradient for sqrt(k|x|) was multiplied by its infinite derivative
    # there: NaN for that state (and, through a solve, for every parameter). sign's argument
    # likewise: 0 times the infinite derivative of sqrt(|x|) at 0.
    x, v, k, a = sympy.symbols("x x_dot k a")
    root = sympy.sqrt(k * sympy.Abs(x))
    force = {
        "Max": sympy.Max(root, a),
        "Min": sympy.Min(-root, -a),
        "Max3": sympy.Max(root, a, a / 2 - x**2),
        "sign": sympy.sign(root) + a,
    }[kind]
    system = System.from_equations({x: v, v: force}, {k: 4.0, a: 0.5})
    field = system.vector_field(learnable=["k", "a"])
    y = torch.tensor([[0.0, 0.0], [1.0, 0.0]], dtype=F64, requires_grad=True)
    out = field(torch.tensor(0.0, dtype=F64), y)[:, 1]
    out.sum().backward()
    sign = -1.0 if kind == "Min" else 1.0
    expected = 0.0 if kind == "sign" else sign * 1.0  # d sqrt(4|x|)/dx at x = 1
    torch.testing.assert_close(y.grad[:, 0], torch.tensor([0.0, expected], dtype=F64))
    # The values are unchanged (exact here: sqrt(4 * 1) = 2).
    values = [1.5 if kind == "sign" else sign * 2.0]
    expected_out = torch.tensor([sign * 0.5] + values, dtype=F64)
    torch.testing.assert_close(out.detach(), expected_out, rtol=0, atol=0)


def test_identical_systems_share_one_compiled_kernel():
    x, k, t = sympy.symbols("x k t")
    first = compile_kernel([-k * x], [x], [k], t)
    second = compile_kernel([-k * x], [x], [k], t)
    assert first is second
    assert physode.systems.load("three_body") is physode.systems.load("three_body")
    assert "def kernel(t, y, p):" in generate_source([-k * x], [x], [k], t)


def test_generate_source_refuses_an_unknown_variant_as_a_physode_error():
    # Every error physode raises on purpose is a PhysodeError; this one was a bare ValueError.
    x, k, t = sympy.symbols("x k t")
    with pytest.raises(physode.InvalidArgumentError, match="'jax'.*torch, numpy, scalar"):
        generate_source([-k * x], [x], [k], t, variant="jax")


def test_energy_is_derived_only_for_time_independent_conservative_systems():
    x, v, w, t = sympy.symbols("x v omega t")
    driven = System.from_lagrangian(v**2 / 2 - (1 + sympy.cos(w * t)) * x**2 / 2, [x], {w: 1.0},
                                    velocities=[v])
    assert driven.invariant_names == [] and driven.energy_expression is None
    with pytest.raises(physode.InvalidArgumentError, match="no energy"):
        driven.energy(torch.zeros(2))
    assert physode.systems.load("harmonic_oscillator").invariant_names == ["energy"]
    assert "energy" not in physode.systems.load("damped_pendulum").invariant_names



def test_energy_with_a_drive_in_the_lagrangian_is_refused_saying_why_and_as_a_force_is_not():
    # The message listed which systems have an energy, not that this L depends on t, while the
    # docs promised the energy "also for damped/forced systems".
    x, v, a, w, t = sympy.symbols("x v a omega t")
    in_lagrangian = System.from_lagrangian(v**2 / 2 - x**2 / 2 + a * sympy.cos(w * t) * x, [x],
                                           {a: 0.5, w: 2.0}, velocities=[v])
    as_force = System.from_lagrangian(v**2 / 2 - x**2 / 2, [x], {a: 0.5, w: 2.0},
                                      velocities=[v], forces={x: a * sympy.cos(w * t)})
    y = torch.tensor([1.0, 2.0], dtype=F64)
    assert in_lagrangian.equations == as_force.equations
    with pytest.raises(physode.InvalidArgumentError) as info:
        in_lagrangian.energy(y)
    assert ("its Lagrangian depends on time 't' explicitly, so its energy function "
            "sum_i v_i dL/dv_i - L depends on 't' as well and is not conserved") in str(info.value)
    assert "forces={q: Q(t)}" in str(info.value)
    assert as_force.energy(y).item() == 2.5
    assert as_force.invariant_names == [] and in_lagrangian.invariant_names == []

def test_declared_invariants_are_evaluated_batched():
    kep = physode.systems.load("kepler")
    y = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.0, 2.0, -0.5, 0.0]], dtype=F64)
    inv = kep.invariants(y)
    torch.testing.assert_close(inv["angular_momentum"], torch.tensor([1.0, 1.0], dtype=F64))
    torch.testing.assert_close(inv["energy"], torch.tensor([-0.5, 0.125 - 0.5], dtype=F64))
    # Circular orbit: the Laplace-Runge-Lenz vector vanishes.
    assert abs(inv["lrl_x"][0].item()) < 1e-15 and abs(inv["lrl_y"][0].item()) < 1e-15


@pytest.mark.parametrize("name, separable", [
    ("harmonic_oscillator", True), ("pendulum", True), ("kepler", True), ("three_body", True),
    ("three_body_aca", True), ("double_pendulum", False), ("damped_pendulum", False),
    ("duffing", False), ("van_der_pol", False),
])
def test_vector_field_reports_whether_the_state_splits_for_symplectic_methods(name, separable):
    f = physode.systems.load(name).vector_field()
    assert f.separable is separable
    if separable:
        assert 2 * f.n_coordinates == f.system.n_state


def test_vector_field_has_named_parameters_and_buffers():
    system = physode.systems.load("three_body")
    f = system.vector_field(learnable=["m1", "m3"], values={"m1": 1.3})
    assert dict(f.named_parameters()).keys() == {"m1", "m3"}
    assert dict(f.named_buffers()).keys() == {"m2", "G"}
    assert f.m1.item() == 1.3 and f.m1.dtype == F64


@pytest.mark.parametrize("learnable", [
    (name for name in ["g", "l"]), iter(["g", "l"]), ["g", "l", "g"],
    sympy.symbols("g l"), {"g": 1, "l": 2}.keys(),
])
def test_vector_field_learns_the_named_parameters_however_they_are_given(learnable):
    # A generator or iterator was consumed by the check of the names, so nothing was learned,
    # silently; a name given twice was listed twice.
    pendulum = physode.systems.load("pendulum")
    f = pendulum.vector_field(learnable=learnable, values={sympy.Symbol("g"): 9.0})
    assert f.learnable == ("g", "l")
    assert list(dict(f.named_parameters())) == ["g", "l"] and f.g.item() == 9.0


@pytest.mark.parametrize("value", ["abc", "9.8", float("nan"), float("inf"), True, [1.0, 2.0]])
def test_vector_field_refuses_values_that_are_not_finite_numbers(value):
    pendulum = physode.systems.load("pendulum")
    with pytest.raises(physode.InvalidArgumentError, match="not finite real numbers"):
        pendulum.vector_field(learnable=["g"], values={"g": value})


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_vector_field_follows_the_input_dtype(dtype):
    f = physode.systems.load("three_body").vector_field(learnable=["m1"])
    y = physode.systems.load("three_body").sample_initial_states(4).to(dtype)
    out = f(torch.tensor(0.0, dtype=dtype), y)
    assert out.dtype == dtype
    out.sum().backward()
    assert f.m1.grad is not None and f.m1.grad.dtype == F64


def _warnings_of(build) -> list[str]:
    """The texts of the physode warnings that ``build()`` gives."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build()
    return [str(w.message) for w in caught if issubclass(w.category, physode.PhysodeWarning)]


def test_learning_a_parameter_that_cancels_from_the_equations_is_warned_about_by_name():
    pendulum = physode.systems.load("pendulum")  # m cancels from -g sin(theta) / l
    assert pendulum.parameters_in_equations == ("g", "l")
    (message,) = _warnings_of(lambda: pendulum.vector_field(learnable=["g", "m"]))
    assert message.startswith(
        "pendulum: the learnable parameter 'm' does not appear in its equations of motion, so "
        "learning it changes nothing (its gradient is zero); it may still appear in the "
        "invariants."
    )
    assert message.endswith("The parameters the equations contain: ['g', 'l']")
    assert _warnings_of(lambda: pendulum.vector_field(learnable=["g", "l"])) == []


def test_every_unused_learnable_parameter_of_a_user_system_is_named_in_one_warning():
    x, k, c, d = sympy.symbols("x k c d")
    decay = System.from_equations({x: -k * x}, {k: 0.5, c: 1.0, d: 2.0}, name="decay")
    (message,) = _warnings_of(lambda: decay.vector_field(learnable=["k", "c", "d"]))
    assert "the learnable parameters ['c', 'd'] do not appear in its equations" in message
    with pytest.warns(physode.PhysodeWarning, match="'c' does not appear"):
        f = decay.vector_field(learnable=["c"])
    f(torch.tensor(0.0, dtype=F64), torch.ones(3, 1, dtype=F64)).sum().backward()
    assert f.c.grad.item() == 0.0  # what the warning says: it learns nothing


def test_a_cached_system_knows_its_parameters_in_equations_without_sympy(tmp_path, monkeypatch):
    from physode.symbolic import _cache

    monkeypatch.setenv(_cache.ENV, str(tmp_path))
    text = physode.systems.path("pendulum").read_text()
    physode.systems._from_text.__wrapped__(text, "pendulum")
    cached = _cache.load(text)
    assert _warnings_of(lambda: cached.vector_field(learnable=["m"]))
    assert "_symbolic" in cached.__dict__  # the SymPy expressions were never opened


def _solve_loss(f, y0, t, gradient):
    ys = physode.odeint(f, y0, t, method="dop853", rtol=1e-10, atol=1e-12, gradient=gradient)
    return (ys[-1] ** 2).sum() + ys[:, :, 0].sum()


@pytest.mark.parametrize("gradient, tol", [("disc-opt", 1e-6), ("aca", 1e-6), ("opt-disc", 1e-5)])
def test_gradients_to_learnable_parameters_match_finite_differences(gradient, tol):
    system = physode.systems.load("damped_pendulum")
    y0 = system.sample_initial_states(3, seed=5)
    t = torch.linspace(0.0, 3.0, 7, dtype=F64)
    f = system.vector_field(learnable=["omega0", "alpha"])
    _solve_loss(f, y0, t, gradient).backward()
    h = 1e-5
    for name in ("omega0", "alpha"):
        base = system.parameters[name]
        losses = []
        for sign in (1, -1):
            g = system.vector_field(values={name: base + sign * h})
            with torch.no_grad():
                losses.append(_solve_loss(g, y0, t, "disc-opt").item())
        fd = (losses[0] - losses[1]) / (2 * h)
        grad = getattr(f, name).grad.item()
        assert grad == pytest.approx(fd, rel=tol, abs=tol)


def test_three_body_masses_get_gradients_through_the_solver():
    system = physode.systems.load("three_body")
    f = system.vector_field(learnable=["m1", "m2", "m3"])
    y0 = system.initial_state("figure_eight")
    t = torch.linspace(0, 0.5, 3, dtype=F64)
    ys = physode.odeint(f, y0, t, method="dopri5", rtol=1e-9, atol=1e-10)
    ys[-1, :6].sum().backward()
    h = 1e-6
    for name in ("m1", "m2", "m3"):
        losses = []
        for sign in (1, -1):
            g = system.vector_field(values={name: 1.0 + sign * h})
            with torch.no_grad():
                ys_h = physode.odeint(g, y0, t, method="dopri5", rtol=1e-12, atol=1e-13)
            losses.append(ys_h[-1, :6].sum().item())
        fd = (losses[0] - losses[1]) / (2 * h)
        assert getattr(f, name).grad.item() == pytest.approx(fd, rel=1e-5, abs=1e-6)


def test_sampling_is_reproducible_per_seed():
    for name in ("pendulum", "three_body", "kepler", "three_body_aca"):
        system = physode.systems.load(name)
        a = system.sample_initial_states(5, seed=7)
        assert a.dtype == F64 and a.shape == (5, system.n_state)
        assert torch.equal(a, system.sample_initial_states(5, seed=7))
        assert not torch.equal(a, system.sample_initial_states(5, seed=8))
    p = physode.systems.load("pendulum").sample_parameters(100, seed=0)
    lo = torch.tensor([r[0] for r in physode.systems.load("pendulum").parameter_ranges.values()])
    hi = torch.tensor([r[1] for r in physode.systems.load("pendulum").parameter_ranges.values()])
    assert bool(((p >= lo) & (p <= hi)).all())


def test_python_built_system_takes_a_callable_sampler_and_named_states():
    x, v, k = sympy.symbols("x v k")

    def sampler(n, generator):
        return torch.rand(n, 2, generator=generator, dtype=F64) + 10

    osc = System.from_equations(
        {x: v, v: -k * x}, {k: 1.0}, n_coordinates=1, initial_state_distribution=sampler,
        initial_states={"rest": {"x": 0.0, "v": 0.0}}, name="osc",
    )
    assert osc.sample_initial_states(4).min() >= 10
    assert osc.initial_state("rest").tolist() == [0.0, 0.0]
    with pytest.raises(physode.InvalidArgumentError, match="named states: rest"):
        osc.initial_state("moving")


def test_vector_field_with_parameters_in_the_state_uses_per_row_parameters():
    system = physode.systems.load("three_body")
    f = system.vector_field(parameters_in_state=True)
    assert not f.separable and f.n_coordinates is None
    y = system.sample_initial_states(3, seed=1)
    p = system.sample_parameters(3, seed=1)
    out = f(torch.tensor(0.0, dtype=F64), torch.cat([y, p], dim=-1))
    torch.testing.assert_close(out[:, :12], system.rhs(0.0, y, p))
    assert torch.equal(out[:, 12:], torch.zeros(3, 4, dtype=F64))
    assert not torch.allclose(out[:, :12], system.rhs(0.0, y))
    with pytest.raises(physode.InvalidArgumentError, match="n_state \\+ n_params = 16"):
        f(torch.tensor(0.0, dtype=F64), y)


def test_systems_and_vector_fields_survive_pickling_and_deepcopy():
    import copy
    import io
    import pickle

    system = physode.systems.load("double_pendulum")
    y = system.sample_initial_states(4)
    expected = system.rhs(0.0, y)
    torch.testing.assert_close(pickle.loads(pickle.dumps(system)).rhs(0.0, y), expected)
    f = system.vector_field(learnable=["m1"])
    torch.testing.assert_close(copy.deepcopy(f)(torch.tensor(0.0, dtype=F64), y), expected)
    buffer = io.BytesIO()
    torch.save(f, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    torch.testing.assert_close(loaded(torch.tensor(0.0, dtype=F64), y), expected)


def test_time_dependent_system_runs_with_one_time_per_row():
    duffing = physode.systems.load("duffing")
    f = duffing.vector_field()
    y0 = duffing.sample_initial_states(4, seed=3)
    t = torch.linspace(0, 3, 4, dtype=F64)
    per_row = physode.odeint(f, y0, t, method="dopri5", rtol=1e-10, atol=1e-11,
                             step_control="per-sample")
    shared = physode.odeint(f, y0, t, method="dopri5", rtol=1e-10, atol=1e-11)
    torch.testing.assert_close(per_row, shared, rtol=0, atol=1e-7)


def test_large_full_mass_matrix_is_solved_numerically_per_batch():
    n = 4
    th, w = sympy.symbols(f"th1:{n + 1}"), sympy.symbols(f"w1:{n + 1}")
    g = sympy.Symbol("g")
    x = y = vx = vy = kinetic = potential = 0
    for i in range(n):  # a chain of four unit masses on unit rods
        x, y = x + sympy.sin(th[i]), y - sympy.cos(th[i])
        vx, vy = vx + sympy.cos(th[i]) * w[i], vy + sympy.sin(th[i]) * w[i]
        kinetic, potential = kinetic + (vx**2 + vy**2) / 2, potential + g * y
    chain = System.from_lagrangian(kinetic - potential, list(th), {g: 9.81}, velocities=list(w))
    assert chain._equations is None and chain.mass_matrix.shape == (4, 4)
    states = torch.rand(6, 8, dtype=F64, generator=torch.Generator().manual_seed(0))
    acc = chain.rhs(0.0, states)[:, 4:]
    for row in range(6):
        values = dict(zip(chain.state_symbols, states[row].tolist(), strict=True))
        values[g] = 9.81
        mass = torch.tensor(chain.mass_matrix.evalf(subs=values).tolist(), dtype=F64)
        force = torch.tensor(chain.forcing.evalf(subs=values).tolist(), dtype=F64)[:, 0]
        torch.testing.assert_close(mass @ acc[row], force, rtol=1e-12, atol=1e-12)


def test_powers_of_products_and_towers_keep_their_grouping():
    x, y, t = sympy.symbols("x y t")
    exprs = [
        (x * y) ** sympy.Rational(3, 2), x ** (x * y), (x**y) ** x, (x + y) ** (x - y),
        2 ** (x * y), x ** (-y), (x * y) ** -2, 1 / (x * y) ** sympy.Rational(3, 2),
        sympy.Pow(-2, x * 0 + 2, evaluate=False) * x,
    ]
    kernel = compile_kernel(exprs, [x, y], [], t)
    point = torch.tensor([0.7, 1.3], dtype=F64)
    got = kernel(torch.tensor(0.0, dtype=F64), point, torch.zeros(0, dtype=F64))
    expected = [float(e.subs({x: 0.7, y: 1.3})) for e in exprs]
    torch.testing.assert_close(got, torch.tensor(expected, dtype=F64), rtol=1e-14, atol=0)


def test_scalar_path_falls_back_to_torch_where_python_would_raise():
    x, y, t = sympy.symbols("x y t")
    kernel = compile_kernel([1 / x, x ** sympy.Rational(3, 2), sympy.log(y), x * y], [x, y], [], t)
    none = torch.zeros(0, dtype=F64)
    for point in ([0.0, 1.0], [-1.0, 0.0], [2.0, 3.0]):
        state = torch.tensor(point, dtype=F64)
        batched = kernel.batched(torch.tensor(0.0, dtype=F64), state, none)
        got = kernel(torch.tensor(0.0, dtype=F64), state, none)
        torch.testing.assert_close(got, batched, equal_nan=True)
    assert "math.pow" in kernel.scalar_source and "torch" not in kernel.scalar_source


def test_gradient_requests_use_the_tensor_path():
    system = physode.systems.load("pendulum")
    y = torch.tensor([0.4, 0.1], dtype=F64, requires_grad=True)
    out = system.rhs(0.0, y)
    assert out.grad_fn is not None
    out[1].backward()
    g, l = system.parameters["g"], system.parameters["l"]
    assert y.grad[0].item() == pytest.approx(-g / l * math.cos(0.4), rel=1e-14)


@pytest.mark.parametrize("name", ["pendulum", "three_body"])  # Python floats; NumPy
def test_forward_mode_and_vmap_reach_the_tensor_path_and_get_the_true_derivatives(name):
    # Without a gradient request the kernel would take its fast paths, which drop tangents (a
    # zero Jacobian from jacfwd) and cannot read vmap's batched tensors.
    system = physode.systems.load(name)
    field = system.vector_field()
    t = torch.tensor(0.0, dtype=F64)
    y = system.sample_initial_states(3, seed=0)
    jacobian = torch.autograd.functional.jacobian(lambda s: field(t, s), y[0])
    assert jacobian.abs().max() > 0
    torch.testing.assert_close(torch.func.jacfwd(lambda s: field(t, s))(y[0]), jacobian)
    direction = torch.ones_like(y[0])
    with torch.autograd.forward_ad.dual_level():
        dual = field(t, torch.autograd.forward_ad.make_dual(y[0], direction))
        tangent = torch.autograd.forward_ad.unpack_dual(dual).tangent
    torch.testing.assert_close(tangent, jacobian @ direction)
    torch.testing.assert_close(torch.func.vmap(lambda s: field(t, s))(y), field(t, y))


@pytest.mark.parametrize("name", ["three_body", "kepler", "harmonic_oscillator", "van_der_pol"])
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_numpy_variant_gives_the_torch_codes_bits(name, dtype):
    # Kernels of exactly rounded operations run on NumPy when no gradient is wanted; every
    # shape the solvers and the data pipeline use must give the torch code's result exactly.
    system = physode.systems.load(name)
    assert system._rhs_kernel.numpy_source is not None
    kernels = [system._rhs_kernel]
    if system.invariant_names:
        kernels += list(system._invariant_kernels)
    generator = torch.Generator().manual_seed(3)
    for kernel in (k for k in kernels if k.numpy_source is not None):
        assert "torch" not in kernel.numpy_source
        y = torch.rand(37, system.n_state, dtype=dtype, generator=generator) * 2 - 1
        p = system.default_parameters().to(dtype)
        p_rows = p * (1 + torch.rand(37, system.n_params, dtype=dtype, generator=generator))
        t_rows = torch.rand(37, dtype=dtype, generator=generator)
        zero = torch.zeros((), dtype=dtype)
        cases = [(zero, y, p), (zero, y, p_rows), (t_rows, y, p_rows), (zero, y[0], p_rows[:5]),
                 (zero, y[:3, None], p_rows[:4])]
        for t, state, params in cases:
            with torch.no_grad():
                fast = kernel(t, state, params)
            slow = kernel.batched(t, state, params)
            assert fast.dtype == slow.dtype == dtype and fast.shape == slow.shape
            assert torch.equal(fast, slow)


def test_kernels_with_library_functions_keep_to_torch():
    pendulum = physode.systems.load("pendulum")
    assert pendulum._rhs_kernel.numpy_source is None  # sin differs between torch and NumPy
    x, v, t = sympy.symbols("x v t")
    assert compile_kernel([v, -x**3], [x, v], [], t).numpy_source is None


def test_a_compound_base_under_a_half_integer_power_is_computed_once():
    x, y, t = sympy.symbols("x y t")
    source = generate_source([x / (x**2 + y**2) ** sympy.Rational(3, 2)], [x, y], [], t)
    assert source.count("torch.square") == 2


# --- Lagrangian and Hamiltonian forms of one system give the same motion ----------------------


def _lagrangian_and_hamiltonian_trajectories(lagrangian, hamiltonian, coords, vels, moms,
                                             params, y0):
    """Both forms from the same start (momenta p = dL/dv at it); velocities mapped back from the
    Hamiltonian trajectory with v = dH/dp."""
    lag = System.from_lagrangian(lagrangian, coords, params, velocities=vels)
    ham = System.from_hamiltonian(hamiltonian, coords, moms, params)
    n = len(coords)
    at_start = dict(zip(coords + vels, y0, strict=True)) | params
    p0 = [float(sympy.diff(lagrangian, v).subs(at_start)) for v in vels]
    t = torch.linspace(0.0, 1.5, 4, dtype=F64)
    start = torch.tensor(y0, dtype=F64)
    ys_l = physode.odeint(lag.vector_field(), start, t, method="dop853", rtol=1e-11, atol=1e-12)
    ys_h = physode.odeint(ham.vector_field(), torch.tensor(y0[:n] + p0, dtype=F64), t,
                          method="dop853", rtol=1e-11, atol=1e-12)
    velocity = ham.rhs(0.0, ys_h)[..., :n]  # dq/dt = dH/dp
    return lag, ham, ys_l, torch.cat((ys_h[..., :n], velocity), -1), ys_h


def test_double_pendulum_lagrangian_and_hamiltonian_give_the_same_motion():
    # H = p^T M(q)^-1 p / 2 + V(q) with the configuration-dependent mass matrix M = d2L/dv2.
    th1, th2, w1, w2, p1, p2 = sympy.symbols("theta1 theta2 theta1_dot theta2_dot p1 p2")
    m1, m2, l1, l2, g = sympy.symbols("m1 m2 l1 l2 g")
    kinetic = ((m1 + m2) * l1**2 * w1**2 / 2 + m2 * l2**2 * w2**2 / 2
               + m2 * l1 * l2 * w1 * w2 * sympy.cos(th1 - th2))
    potential = -(m1 + m2) * g * l1 * sympy.cos(th1) - m2 * g * l2 * sympy.cos(th2)
    mass = sympy.hessian(kinetic, [w1, w2])
    momenta = sympy.Matrix([p1, p2])
    hamiltonian = (momenta.T * mass.adjugate() * momenta)[0] / (2 * mass.det()) + potential
    params = {m1: 1.0, m2: 1.5, l1: 1.0, l2: 0.7, g: 9.81}
    lag, ham, ys_l, ys_h, canonical = _lagrangian_and_hamiltonian_trajectories(
        kinetic - potential, hamiltonian, [th1, th2], [w1, w2], [p1, p2], params,
        [1.0, 0.5, 0.3, -0.7])
    torch.testing.assert_close(ys_l, ys_h, rtol=0, atol=1e-9)
    torch.testing.assert_close(lag.invariants(ys_l)["energy"], ham.invariants(canonical)["energy"],
                               rtol=0, atol=1e-9)
    # M depends on q: neither form splits into drift and kick.
    assert not lag.separable and not ham.separable


def test_velocity_dependent_potential_lagrangian_matches_its_hamiltonian():
    # A charge in a uniform magnetic field B (symmetric gauge) and a harmonic trap:
    # L = m v^2/2 + B (x vy - y vx)/2 - k r^2/2, H = |p - A|^2/(2m) + k r^2/2, A = B (-y, x)/2.
    x, y, vx, vy, px, py, b, k, m = sympy.symbols("x y vx vy px py B k m")
    lagrangian = m * (vx**2 + vy**2) / 2 + b * (x * vy - y * vx) / 2 - k * (x**2 + y**2) / 2
    hamiltonian = ((px + b * y / 2) ** 2 + (py - b * x / 2) ** 2) / (2 * m) + k * (x**2 + y**2) / 2
    params = {b: 1.3, k: 0.7, m: 1.2}
    lag, ham, ys_l, ys_h, canonical = _lagrangian_and_hamiltonian_trajectories(
        lagrangian, hamiltonian, [x, y], [vx, vy], [px, py], params, [0.5, -0.2, 0.3, 0.4])
    assert sympy.simplify(lag.equations["vx"] - (b * vy - k * x) / m) == 0  # Lorentz force
    torch.testing.assert_close(ys_l, ys_h, rtol=0, atol=1e-9)
    # The energy sum v dL/dv - L drops the magnetic term: m v^2/2 + k r^2/2, equal to H.
    assert sympy.expand(lag.energy_expression - (m * (vx**2 + vy**2) + k * (x**2 + y**2)) / 2) == 0
    torch.testing.assert_close(lag.invariants(ys_l)["energy"], ham.invariants(canonical)["energy"],
                               rtol=0, atol=1e-10)
    # The force depends on the velocity (and dq/dt = (p - A)/m on q): no symplectic split.
    assert not lag.separable and not ham.separable


@pytest.mark.parametrize("name", ["pendulum", "harmonic_oscillator"])
def test_catalogue_oscillators_agree_with_their_other_form(name):
    # Sampled parameters, so that a parameter playing the wrong role would show.
    system = physode.systems.load(name)
    q, v, p = sympy.symbols("q v p")
    names = list(system.parameters)
    params = system.sample_parameters(4, seed=7)
    value = dict(zip(names, params.T, strict=True))
    if name == "pendulum":  # Lagrangian in the catalogue; p = m l^2 v
        m, g, l = sympy.symbols("m g l")
        other = System.from_hamiltonian(p**2 / (2 * m * l**2) - m * g * l * sympy.cos(q), [q], [p],
                                        system.parameters)
        factor = value["m"] * value["l"] ** 2
    else:  # Hamiltonian in the catalogue; v = p / m
        m, k = sympy.symbols("m k")
        other = System.from_lagrangian(m * v**2 / 2 - k * q**2 / 2, [q], system.parameters,
                                       velocities=[v])
        factor = 1 / value["m"]
    assert list(other.parameters) == names and other.separable and system.separable
    y0 = system.sample_initial_states(4, seed=7, p=params)
    scale = torch.stack((torch.ones(4, dtype=F64), factor), -1)  # state -> the other form's
    t = torch.linspace(0.0, system.characteristic_time, 5, dtype=F64)
    ys = physode.odeint(lambda t, y: system.rhs(t, y, params), y0, t, method="dop853",
                        rtol=1e-11, atol=1e-12)
    ys_other = physode.odeint(lambda t, y: other.rhs(t, y, params), y0 * scale, t,
                              method="dop853", rtol=1e-11, atol=1e-12)
    torch.testing.assert_close(ys_other, ys * scale, rtol=0, atol=1e-8)
    torch.testing.assert_close(other.invariants(ys_other, params)["energy"],
                               system.invariants(ys, params)["energy"], rtol=0, atol=1e-8)


@pytest.mark.parametrize(
    "form, extra, conserves",
    [
        ("lagrangian", {"forces": {}}, True),
        ("lagrangian", {"forces": {"q": 0}}, True),
        ("lagrangian", {"dissipation": 0}, True),
        ("lagrangian", {"forces": {"q": "-c*v"}}, False),
        ("hamiltonian", {"forces": {"q": 0}}, True),
        ("hamiltonian", {"forces": {"q": "-c*p"}}, False),
    ],
)
def test_forces_or_dissipation_that_vanish_keep_the_energy_invariant(form, extra, conserves):
    q, v, p, m, k, c = sympy.symbols("q v p m k c")
    params = {m: 1.0, k: 2.0, c: 0.1}
    extra = {
        key: value if not isinstance(value, dict) else
        {name: sympy.sympify(f) for name, f in value.items()}
        for key, value in extra.items()
    }  # fmt: skip
    if form == "lagrangian":
        system = System.from_lagrangian(m * v**2 / 2 - k * q**2 / 2, [q], params, velocities=[v],
                                        **extra)  # fmt: skip
    else:
        system = System.from_hamiltonian(p**2 / (2 * m) + k * q**2 / 2, [q], [p], params, **extra)
    assert system.conservative is conserves
    assert ("energy" in system.invariant_names) is conserves


@pytest.mark.parametrize("y", [torch.tensor([1, 0]), torch.tensor([True, False])])
def test_a_state_that_is_not_floating_point_is_refused_rather_than_truncating_parameters(y):
    # Cast to an integer state's dtype, g = 9.81 would become 9 and every number be wrong.
    pend = physode.systems.load("pendulum")
    for evaluate in (lambda: pend.rhs(0.0, y), lambda: pend.invariants(y),
                     lambda: pend.energy(y), lambda: pend.vector_field()(torch.tensor(0.0), y)):
        with pytest.raises(physode.InvalidArgumentError, match="needs a floating-point state"):
            evaluate()


@pytest.mark.parametrize("coefficient", [sympy.Integer(10**20), sympy.Rational(10**25, 7),
                                         sympy.Rational(1, 10**25)])
def test_integer_constants_beyond_int64_work_on_every_code_path(coefficient):
    # torch refuses Python ints beyond int64 ("int too big to convert"): the gradient path
    # failed where the scalar and NumPy paths worked.
    x, v = sympy.symbols("x v")
    system = System.from_equations({x: coefficient * v + 10**20, v: -x}, {})
    expected = float(coefficient) * 2.0 + 1e20
    y = torch.tensor([[1.0, 2.0]] * 3, dtype=F64)
    paths = {
        "scalar": system.rhs(0.0, y[0])[0],
        "numpy": system.rhs(0.0, y)[:, 0],
        "torch": system.rhs(0.0, y.clone().requires_grad_())[:, 0],
        "float32": system.rhs(0.0, y.float())[:, 0],
    }
    for path, dx in paths.items():
        torch.testing.assert_close(dx.detach().double(), torch.full_like(dx, expected, dtype=F64),
                                   rtol=1e-6 if path == "float32" else 1e-15, atol=0, msg=path)


@pytest.mark.parametrize("make", [
    lambda x, v, a: sympy.Min(x, a), lambda x, v, a: sympy.Max(a, x, v),
    lambda x, v, a: -a * sympy.sign(v), lambda x, v, a: sympy.sign(x) * sympy.Min(1, v),
])
def test_a_nan_state_gives_nan_on_every_code_path_as_in_numpy(make):
    # torch.sign(nan) is 0, and Python's min(1.0, nan) is 1.0: the torch path (with gradients,
    # float32) and the scalar path (one float64 state) gave finite derivatives at a NaN state
    # where the NumPy path (a batch without gradients) gave NaN.
    x, v, a = sympy.symbols("x v a")
    expr = make(x, v, a)
    system = System.from_equations({x: expr, v: -x}, {a: 0.5})
    reference = sympy.lambdify((x, v, a), expr, "numpy")
    for state in ([math.nan, 0.5], [0.5, math.nan], [-2.0, 3.0], [math.inf, -1.0]):
        y = torch.tensor([state] * 2, dtype=F64)
        paths = {
            "scalar": system.rhs(0.0, y[0])[0],
            "numpy": system.rhs(0.0, y)[0, 0],
            "torch": system.rhs(0.0, y.clone().requires_grad_())[0, 0],
            "float32": system.rhs(0.0, y.float().requires_grad_())[0, 0],
        }
        expected = torch.tensor(float(reference(*state, 0.5)), dtype=F64)
        for path, dx in paths.items():
            torch.testing.assert_close(dx.detach().double(), expected, equal_nan=True,
                                       msg=f"{path} at {state}")


@pytest.mark.parametrize("name", ["kepler", "three_body_aca", "double_pendulum"])
def test_results_have_the_states_dtype_whatever_the_parameters_shape(name):
    # A float64 parameter batch once turned a float32 state's result into float64, and a single
    # parameter row did too for three_body_aca (whose generated code slices the state).
    system = physode.systems.load(name)
    y = system.sample_initial_states(4, seed=5).float()
    p_rows = system.sample_parameters(4, seed=5)
    for p in (p_rows, p_rows[0]):
        expected = system.rhs(0.0, y.double(), p)
        out = system.rhs(0.0, y, p)
        assert out.dtype == torch.float32
        torch.testing.assert_close(out, expected.float(), rtol=1e-5, atol=1e-5)
        assert {v.dtype for v in system.invariants(y, p).values()} <= {torch.float32}


@pytest.mark.parametrize("p, message", [
    (torch.ones(5, 1, dtype=F64), "batch shape (5,) does not broadcast against the batch shape"),
    (torch.ones(1, dtype=torch.complex128), "p has dtype torch.complex128"),
    ([1.0, 2.0], "p has shape (2,); kepler needs a tensor or a list of numbers (..., 1)"),
    (["1.0"], "p=['1.0'] is not a tensor or a list of real numbers; kepler needs (..., 1)"),
    ([True], "p=[True] is not a tensor or a list of real numbers"),
    ({"k": 1.0}, "p is a dict; kepler needs a tensor or a list of numbers (..., 1)"),
])
def test_parameters_that_do_not_fit_the_state_are_refused_by_name(p, message):
    system = physode.systems.load("kepler")
    y = torch.zeros(3, 4, dtype=F64)
    for evaluate in (lambda: system.rhs(0.0, y, p), lambda: system.invariants(y, p),
                     lambda: system.energy(y, p)):
        with pytest.raises(physode.InvalidArgumentError, match=re.escape(message)):
            evaluate()


@pytest.mark.parametrize("as_given", [list, tuple, np.array])
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_parameters_given_as_numbers_are_taken_as_a_tensor_of_y_s_dtype(as_given, dtype):
    # A list said "p has shape list".
    pendulum = physode.systems.load("pendulum")
    y = pendulum.sample_initial_states(4, seed=2).to(dtype)
    values = [1.5, 9.81, 0.7]
    expected = pendulum.rhs(0.0, y, torch.tensor(values, dtype=F64))
    out = pendulum.rhs(0.0, y, as_given(values))
    assert out.dtype == dtype
    torch.testing.assert_close(out, expected.to(dtype), rtol=0, atol=0)
    energy = pendulum.invariants(y, as_given(values))["energy"]
    torch.testing.assert_close(energy, pendulum.invariants(y, torch.tensor(values, dtype=F64))[
        "energy"].to(dtype), rtol=0, atol=0)  # fmt: skip
    rows = pendulum.rhs(0.0, y, as_given([values] * 4))  # one row per state
    torch.testing.assert_close(rows, expected.to(dtype), rtol=0, atol=0)


@pytest.mark.parametrize("seed", [None, 1.5, "1", True])
def test_a_seed_that_is_not_an_int_is_refused_rather_than_truncated_or_crashing(seed):
    # None raised TypeError from int(); 1.5, "1" and True silently drew seed 1's states.
    system = physode.systems.load("pendulum")
    for sample in (system.sample_initial_states, system.sample_parameters):
        with pytest.raises(physode.InvalidArgumentError, match=f"seed must be an int.*{seed!r}"):
            sample(3, seed=seed)


@pytest.mark.parametrize("options, message", [
    ({"learnable": 3}, "learnable must be a list of parameter names, got 3; valid names: ['m',"),
    ({"values": [2.0]}, "values must be a mapping {parameter name: value}, got [2.0]"),
])
def test_vector_field_options_of_the_wrong_kind_name_the_valid_parameters(options, message):
    # These raised TypeError from inside the constructor.
    system = physode.systems.load("harmonic_oscillator")
    with pytest.raises(physode.InvalidArgumentError, match=re.escape(message)):
        system.vector_field(**options)


def test_half_integer_powers_beyond_three_halves_evaluate_as_numpy_does():
    x, t = sympy.symbols("x t")
    exprs = [x ** sympy.Rational(k, 2) for k in (7, 9, -7, -9, 5, -5)]
    kernel = compile_kernel(exprs, [x], [], t)
    y = torch.tensor([[0.3], [1.7], [2.5]], dtype=torch.float64)
    got = kernel(torch.tensor(0.0, dtype=torch.float64), y, torch.zeros(0, dtype=torch.float64))
    expected = torch.cat([y ** (k / 2) for k in (7, 9, -7, -9, 5, -5)], dim=-1)
    torch.testing.assert_close(got, expected, rtol=1e-14, atol=0)


def test_generalized_forces_add_to_hamiltons_dp_dt():
    q, p, k, c = sympy.symbols("q p k c")
    damped = System.from_hamiltonian(p**2 / 2 + k * q**2 / 2, [q], [p], {k: 2.0, c: 0.3},
                                     forces={q: -c * p})  # fmt: skip
    assert sympy.simplify(damped.equations["p"] - (-k * q - c * p)) == 0
    assert sympy.simplify(damped.equations["q"] - p) == 0


def test_a_partly_built_system_prints_without_raising():
    half = physode.System.__new__(physode.System)
    assert repr(half).startswith("<System, not readable: AttributeError")
