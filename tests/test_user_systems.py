"""Systems a user brings, checked against references that do not go through physode's own
derivation: closed forms, and SciPy's ``solve_ivp`` on equations of motion derived by hand.

Each system is written both ways the docs offer (a specification file and SymPy in Python)
where both are of interest, with names that SymPy would otherwise misread."""

from __future__ import annotations

import math

import numpy as np
import pytest
import sympy
import torch
from scipy.integrate import solve_ivp
from sympy.physics.mechanics import dynamicsymbols

import physode
import physode.data
import physode.diagnostics
from physode.symbolic import System, system_from_spec

F64 = torch.float64


def _solve(system, y0, t, p=None, rtol=1e-11, atol=1e-12):
    """physode's dop853 solution of ``system`` at parameters ``p`` (its defaults if None)."""
    p = system.default_parameters() if p is None else p
    with torch.no_grad():
        return physode.odeint(lambda tt, y: system.rhs(tt, y, p), y0, t, method="dop853",
                              rtol=rtol, atol=atol)


def _scipy(f, y0, t):
    """SciPy's DOP853 solution of the hand-derived ``f`` at the times ``t``, time first."""
    sol = solve_ivp(f, (float(t[0]), float(t[-1])), list(y0), t_eval=t.numpy(),
                    method="DOP853", rtol=1e-12, atol=1e-13)
    assert sol.success
    return torch.from_numpy(sol.y.T)


# A charged particle in a uniform field B along z, Landau gauge A = (0, B x, 0): the Lagrangian
# is velocity dependent, the canonical momentum p_y = m vy + Q B x is conserved, the particle
# gyrates at omega = Q B / m on a circle of radius v_perp / omega. The charge is called Q, the
# name of SymPy's assumption keys.
MAGNETIC = """
name = "magnetic"
form = "lagrangian"
characteristic_time = 4.2
coordinates = ["x", "y", "z"]
lagrangian = "m*(x_dot**2 + y_dot**2 + z_dot**2)/2 + Q*B*x*y_dot"
[parameters]
m = 2.0
Q = 3.0
B = 0.5
[invariants]
canonical_py = "m*y_dot + Q*B*x"
"""


def test_charged_particle_gyrates_as_the_closed_form_says():
    system = system_from_spec(MAGNETIC)
    m, q, b = 2.0, 3.0, 0.5
    omega = q * b / m
    x0, y0, z0, vx0, vy0, vz0 = 0.3, -0.2, 0.1, 1.0, 0.5, 0.2
    t = torch.linspace(0.0, 10.0, 41, dtype=F64)
    ys = _solve(system, torch.tensor([x0, y0, z0, vx0, vy0, vz0], dtype=F64), t)
    c, s = torch.cos(omega * t), torch.sin(omega * t)
    vx, vy = vx0 * c + vy0 * s, vy0 * c - vx0 * s          # velocity turns clockwise
    x = x0 + (vx0 * s + vy0 * (1 - c)) / omega
    y = y0 + (vx0 * (c - 1) + vy0 * s) / omega
    expected = torch.stack([x, y, z0 + vz0 * t, vx, vy, torch.full_like(t, vz0)], dim=-1)
    torch.testing.assert_close(ys, expected, rtol=0, atol=1e-9)
    # Gyration radius about the guiding centre (x + vy/omega, y - vx/omega).
    centre_x, centre_y = x0 + vy0 / omega, y0 - vx0 / omega
    radius = torch.hypot(ys[:, 0] - centre_x, ys[:, 1] - centre_y)
    torch.testing.assert_close(radius, torch.full_like(t, math.hypot(vx0, vy0) / omega))
    # The energy is the kinetic energy alone: the magnetic term drops out of it.
    kinetic = m * (ys[:, 3:] ** 2).sum(-1) / 2
    torch.testing.assert_close(system.energy(ys), kinetic)
    report = physode.diagnostics.conservation(system, ys, t, tolerance=1e-9)
    assert report.ok, report


def test_charged_particle_in_hamiltonian_form_agrees_and_is_not_separable():
    # The same particle from SymPy in the symmetric gauge, H = (p - Q A)^2 / 2m.
    x, y, z, px, py, pz = sympy.symbols("x y z px py pz")
    m, q, b = sympy.symbols("m Q B", positive=True)
    h = ((px + q * b * y / 2) ** 2 + (py - q * b * x / 2) ** 2 + pz**2) / (2 * m)
    system = System.from_hamiltonian(h, coordinates=[x, y, z], momenta=[px, py, pz],
                                     parameters={m: 2.0, q: 3.0, b: 0.5})
    lagrangian = system_from_spec(MAGNETIC)
    r0, v0 = [0.3, -0.2, 0.1], [1.0, 0.5, 0.2]
    p0 = [2.0 * v0[0] - 1.5 * r0[1] / 2, 2.0 * v0[1] + 1.5 * r0[0] / 2, 2.0 * v0[2]]
    t = torch.linspace(0.0, 10.0, 21, dtype=F64)
    from_h = _solve(system, torch.tensor(r0 + p0, dtype=F64), t)
    from_l = _solve(lagrangian, torch.tensor(r0 + v0, dtype=F64), t)
    torch.testing.assert_close(from_h[:, :3], from_l[:, :3], rtol=0, atol=1e-9)
    assert not system.separable
    with pytest.raises(physode.InvalidArgumentError, match="needs a separable"):
        physode.odeint(system.vector_field(), from_h[0], t, method="leapfrog", step_size=0.01)


def test_elastic_pendulum_in_polar_coordinates_matches_a_cartesian_reference():
    spec = """
name = "spring_pendulum"
form = "lagrangian"
coordinates = ["r", "theta"]
lagrangian = "m*(r_dot**2 + r**2*theta_dot**2)/2 + m*g*r*cos(theta) - k*(r - l0)**2/2"
[parameters]
m = 1.0
g = 9.81
k = 40.0
l0 = 1.0
"""
    system = system_from_spec(spec)
    m, g, k, l0 = 1.0, 9.81, 40.0, 1.0

    def cartesian(_, u):  # m a = -k (r - l0) r_hat - m g y_hat, y up, the bob below the pivot
        x, y, vx, vy = u
        r = math.hypot(x, y)
        return [vx, vy, -k * (r - l0) * x / (m * r), -k * (r - l0) * y / (m * r) - g]

    t = torch.linspace(0.0, 3.0, 31, dtype=F64)
    for r, th, rd, thd in [(1.2, 0.6, 0.3, -0.5), (0.9, -1.0, -0.4, 1.5)]:
        ys = _solve(system, torch.tensor([r, th, rd, thd], dtype=F64), t)
        u0 = [r * math.sin(th), -r * math.cos(th), rd * math.sin(th) + r * thd * math.cos(th),
              -rd * math.cos(th) + r * thd * math.sin(th)]
        ref = _scipy(cartesian, u0, t)
        torch.testing.assert_close(ys[:, 0], torch.hypot(ref[:, 0], ref[:, 1]),
                                   rtol=0, atol=1e-8)
        torch.testing.assert_close(ys[:, 1], torch.atan2(ref[:, 0], -ref[:, 1]),
                                   rtol=0, atol=1e-8)
        energy = m * (ref[:, 2:] ** 2).sum(-1) / 2 + m * g * ref[:, 1] \
            + k * (torch.hypot(ref[:, 0], ref[:, 1]) - l0) ** 2 / 2
        torch.testing.assert_close(system.energy(ys), energy, rtol=0, atol=1e-8)


def test_bead_on_a_spinning_hoop_conserves_the_jacobi_integral_not_the_lab_energy():
    spec = """
name = "hoop"
form = "lagrangian"
coordinates = ["theta"]
lagrangian = "m*R**2*(theta_dot**2 + Omega**2*sin(theta)**2)/2 + m*g*R*cos(theta)"
[parameters]
m = 1.0
R = 0.5
g = 9.81
Omega = 6.0
"""
    system = system_from_spec(spec)
    big_r, g, w = 0.5, 9.81, 6.0
    t = torch.linspace(0.0, 3.0, 31, dtype=F64)
    y0 = [0.5, 0.3]
    ys = _solve(system, torch.tensor(y0, dtype=F64), t)
    ref = _scipy(lambda _, u: [u[1], (w**2 * math.cos(u[0]) - g / big_r) * math.sin(u[0])],
                 y0, t)
    torch.testing.assert_close(ys, ref, rtol=0, atol=1e-8)
    th, thd = ys[:, 0], ys[:, 1]
    jacobi = big_r**2 * (thd**2 - w**2 * torch.sin(th) ** 2) / 2 - g * big_r * torch.cos(th)
    torch.testing.assert_close(system.energy(ys), jacobi, rtol=0, atol=1e-12)
    assert float((jacobi - jacobi[0]).abs().max()) < 1e-9
    lab = big_r**2 * (thd**2 + w**2 * torch.sin(th) ** 2) / 2 - g * big_r * torch.cos(th)
    assert float((lab - lab[0]).abs().max()) > 0.1


def test_bead_on_a_wire_spun_in_a_vertical_plane_follows_the_closed_form():
    # r'' = Omega^2 r - g sin(Omega t): explicit time, no energy.
    r, t_ = dynamicsymbols("r"), sympy.Symbol("t")
    m, g, w = sympy.symbols("m g Omega")
    lagrangian = m * (r.diff(t_) ** 2 + w**2 * r**2) / 2 - m * g * r * sympy.sin(w * t_)
    system = System.from_lagrangian(lagrangian, coordinates=[r],
                                    parameters={m: 1.0, g: 9.81, w: 2.0})
    assert system.time_dependent and system.invariant_names == []
    t = torch.linspace(0.0, 3.0, 31, dtype=F64)
    ys = _solve(system, torch.tensor([0.3, -0.1], dtype=F64), t)
    c = 9.81 / (2 * 2.0**2)
    expected = 0.3 * torch.cosh(2 * t) + (-0.1 - 2 * c) / 2 * torch.sinh(2 * t) \
        + c * torch.sin(2 * t)
    torch.testing.assert_close(ys[:, 0], expected, rtol=1e-10, atol=1e-10)
    with pytest.raises(physode.InvalidArgumentError, match="depends on time 't' explicitly"):
        system.energy(ys[0])


def test_position_dependent_mass_is_solved_right_and_refused_by_symplectic_methods():
    # H = p^2 / (2 m0 (1 + a q^2)) + k q^2 / 2: dq/dt = p / m(q), which depends on q.
    q, p, m0, a, k = sympy.symbols("q p m0 a k")
    h = p**2 / (2 * m0 * (1 + a * q**2)) + k * q**2 / 2
    system = System.from_hamiltonian(h, coordinates=[q], momenta=[p],
                                     parameters={m0: 1.0, a: 0.5, k: 2.0})

    def by_hand(_, u):
        qq, pp = u
        mass = 1.0 + 0.5 * qq**2
        return [pp / mass, pp**2 * 0.5 * qq / mass**2 - 2.0 * qq]

    t = torch.linspace(0.0, 5.0, 26, dtype=F64)
    ys = _solve(system, torch.tensor([1.0, 0.3], dtype=F64), t)
    torch.testing.assert_close(ys, _scipy(by_hand, [1.0, 0.3], t), rtol=0, atol=1e-9)
    assert not system.separable and not system.vector_field().separable
    for method in ("leapfrog", "yoshida4"):
        with pytest.raises(physode.InvalidArgumentError, match="needs a separable"):
            physode.odeint(system.vector_field(), ys[0], t, method=method, step_size=0.01)


def test_symplectic_methods_on_a_kinetic_energy_that_is_not_quadratic():
    # The relativistic oscillator H = sqrt(p^2 + m^2) + k q^2 / 2 separates, but dq/dt is not p:
    # leapfrog and yoshida4 must converge at orders 2 and 4 to the adaptive solution.
    q, p, m, k = sympy.symbols("q p m k")
    system = System.from_hamiltonian(sympy.sqrt(p**2 + m**2) + k * q**2 / 2, [q], [p],
                                     {m: 1.0, k: 1.0})
    field = system.vector_field()
    assert field.separable
    t = torch.linspace(0.0, 4.0, 5, dtype=F64)
    y0 = torch.tensor([[2.0, 0.0]], dtype=F64)
    ref = physode.odeint(field, y0, t, method="dop853", rtol=1e-12, atol=1e-13)
    for method, order in (("leapfrog", 2), ("yoshida4", 4)):
        errors = [float((physode.odeint(field, y0, t, method=method, step_size=h) - ref)
                        .abs().max()) for h in (0.02, 0.01)]
        assert errors[1] < 1e-3
        assert 0.7 * 2**order < errors[0] / errors[1] < 1.4 * 2**order, (method, errors)


SEIR = """
name = "seir"
form = "equations"
characteristic_time = 10.0
[equations]
S = "-beta*S*I**alpha/N"
E = "beta*S*I**alpha/N - sigma*E"
I = "sigma*E - gamma*I"
R = "gamma*I"
[parameters]
beta = { value = 0.8, range = [0.5, 1.0] }
gamma = 0.2
sigma = 0.5
alpha = { value = 0.9, range = [0.8, 1.1] }
N = 1.0
[invariants]
population = "S + E + I + R"
[initial_state_distribution]
kind = "uniform"
S = [0.8, 0.99]
E = [0.0, 0.05]
I = [0.001, 0.05]
R = [0.0, 0.1]
"""


def test_seir_with_a_parameter_in_an_exponent_and_names_sympy_owns():
    # S, E, I, N, beta and gamma are all SymPy objects; here they are the declared names.
    system = system_from_spec(SEIR)
    y0 = system.sample_initial_states(2, seed=1)
    params = system.sample_parameters(2, seed=2)
    assert float(params[:, 3].std()) > 0  # alpha, the exponent, varies
    t = torch.linspace(0.0, 30.0, 31, dtype=F64)
    ys = _solve(system, y0, t, p=params)
    for i in range(2):
        beta, gamma, sigma, alpha, n = params[i].tolist()

        def by_hand(_, u, beta=beta, gamma=gamma, sigma=sigma, alpha=alpha, n=n):
            s, e, infected, _r = u
            incidence = beta * s * infected**alpha / n
            return [-incidence, incidence - sigma * e, sigma * e - gamma * infected,
                    gamma * infected]

        ref = _scipy(by_hand, y0[i].tolist(), t)
        torch.testing.assert_close(ys[:, i], ref, rtol=0, atol=1e-9)
    report = physode.diagnostics.conservation(system, ys, t, p=params, tolerance=1e-12)
    assert report.ok, report


def test_a_spec_file_with_sympy_names_simulates_and_checks(tmp_path):
    spec = tmp_path / "seir.toml"
    spec.write_text(SEIR)
    out = tmp_path / "seir.h5"
    physode.data.simulate(str(spec), trajectories=4, t_end=5.0, points=11, out=str(out),
                          seed=3, params="sample")
    report = physode.data.check(str(out), tolerance=1e-10)
    assert report.passed
    with physode.data.load(str(out)) as data:
        assert data.system.equations == system_from_spec(SEIR).equations
        ys = torch.from_numpy(data.states[:]).transpose(0, 1)
        total = ys.sum(-1)
        torch.testing.assert_close(total, total[:1].expand_as(total), rtol=1e-12, atol=0)


def _names_rhs(state):
    """The accelerations of the coupled oscillators below, by hand."""
    x, x1, x_1, th = state[:4]
    return [
        -(1.0 * x + 0.1 * x1 + 4 * 0.05 * x**3 + 0.3 * th**2),
        -(2.0 * x1 + 0.1 * x + 0.2 * x_1 + 4 * 0.07 * x1**3) / 2,
        -(3.0 * x_1 + 0.2 * x1) / 3,
        -(1.5**2 * math.sin(th) + 2 * 0.3 * x * th),
    ]


def test_names_sharing_a_prefix_and_names_sympy_owns_in_a_file():
    spec = '''
name = "names"
form = "lagrangian"
coordinates = ["x", "x1", "x_1", "theta"]
lagrangian = """(x_dot**2 + 2*x1_dot**2 + 3*x_1_dot**2 + theta_dot**2)/2
  - omega**2*(1 - cos(theta)) - gamma*x**2/2 - beta*x1**2/2 - E*x_1**2/2
  - I*x*x1 - S*x1*x_1 - N*x**4 - Q*x1**4 - lambda_*x*theta**2"""
[parameters]
gamma = 1.0
beta = 2.0
E = 3.0
I = 0.1
S = 0.2
N = 0.05
Q = 0.07
omega = 1.5
lambda_ = 0.3
'''
    system = system_from_spec(spec)
    state = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
    rhs = system.rhs(0.0, torch.tensor(state, dtype=F64))
    torch.testing.assert_close(rhs, torch.tensor(state[4:] + _names_rhs(state), dtype=F64))


def test_names_sharing_a_prefix_and_a_keyword_named_symbol_from_sympy():
    # 'lambda' cannot be a name in an expression string, but a SymPy symbol of that name works,
    # also as a learnable parameter.
    x, x1, x_1, th = dynamicsymbols("x x1 x_1 theta")
    t = sympy.Symbol("t")
    gamma, beta, e, i, s, n, q, omega, lam = sympy.symbols("gamma beta E I S N Q omega lambda")
    d = [c.diff(t) for c in (x, x1, x_1, th)]
    lagrangian = ((d[0]**2 + 2 * d[1]**2 + 3 * d[2]**2 + d[3]**2) / 2
                  - omega**2 * (1 - sympy.cos(th)) - gamma * x**2 / 2 - beta * x1**2 / 2
                  - e * x_1**2 / 2 - i * x * x1 - s * x1 * x_1 - n * x**4 - q * x1**4
                  - lam * x * th**2)
    values = {gamma: 1.0, beta: 2.0, e: 3.0, i: 0.1, s: 0.2, n: 0.05, q: 0.07, omega: 1.5,
              lam: 0.3}
    system = System.from_lagrangian(lagrangian, coordinates=[x, x1, x_1, th], parameters=values)
    assert system.state_names == ["x", "x1", "x_1", "theta", "x_dot", "x1_dot", "x_1_dot",
                                  "theta_dot"]
    field = system.vector_field(learnable=["lambda"])
    state = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
    out = field(torch.tensor(0.0, dtype=F64), torch.tensor(state, dtype=F64))
    torch.testing.assert_close(out, torch.tensor(state[4:] + _names_rhs(state), dtype=F64))
    out[-1].backward()
    # d(theta_ddot)/d(lambda) = -2 x theta
    torch.testing.assert_close(dict(field.named_parameters())["lambda"].grad,
                               torch.tensor(-2 * 0.1 * 0.4, dtype=F64))


@pytest.mark.parametrize("name", ["S", "N", "Q", "O", "beta", "gamma", "re", "true", "abs"])
def test_an_undeclared_name_sympy_owns_is_an_unknown_symbol_in_python_strings(name):
    # Read as SymPy's object, '-S*x' failed with "bad operand type for unary -:
    # 'SingletonRegistry'" (and '-N*x' alike), where a file names the undeclared symbol.
    with pytest.raises(physode.SystemDefinitionError, match="1 problem") as info:
        System.from_equations({"x": f"-{name}*x"}, parameters={"k": 1.0})
    assert (f"symbol {name!r} in the equation for x is neither a state nor a parameter; if it "
            "is a parameter, give it a value in the parameters") in str(info.value)


def test_sympy_constructs_that_are_called_or_dotted_still_parse_in_python_strings():
    with pytest.warns(physode.PhysodeWarning, match="'E' .* is Euler's number"):
        system = System.from_equations({"x": "-S(1)/3*x - S.Half*x - Rational(1, 6)*x + E - E"})
    assert system.equations == {"x": -sympy.Symbol("x")}


def test_a_function_of_time_left_out_of_the_coordinates_is_named_as_such():
    x, y = dynamicsymbols("x y")
    t = sympy.Symbol("t")
    with pytest.raises(physode.SystemDefinitionError, match="1 problem") as info:
        System.from_lagrangian(x.diff(t) ** 2 / 2 + y.diff(t) ** 2 / 2 - y**2, coordinates=[x])
    assert ("Lagrangian holds y(t), a function of time that is not declared: list 'y' among "
            "the coordinates") in str(info.value)
    assert "torch translation" not in str(info.value)
    with pytest.raises(physode.SystemDefinitionError, match="1 problem") as info:
        System.from_hamiltonian(x.diff(t) ** 2 + y**2 / 2, coordinates=[y], momenta=["p"])
    assert "holds x(t), a function of time that is not declared: list 'x' among the " \
        "coordinates or momenta" in str(info.value)


def test_an_acceleration_in_a_lagrangian_is_refused_as_one():
    x = dynamicsymbols("x")
    t = sympy.Symbol("t")
    with pytest.raises(physode.SystemDefinitionError, match="1 problem") as info:
        System.from_lagrangian(x.diff(t) ** 2 / 2 - x * x.diff(t, 2), coordinates=[x])
    assert "is a time derivative of a velocity (an acceleration or higher)" in str(info.value)
    assert "Lagrangians with accelerations are not supported" in str(info.value)


def test_a_derivative_of_a_plain_coordinate_names_its_velocity_symbol():
    t, xs = sympy.symbols("t x")
    with pytest.raises(physode.SystemDefinitionError, match="1 problem") as info:
        System.from_lagrangian(sympy.Derivative(xs, t) ** 2 / 2 - xs**2 / 2, coordinates=[xs],
                               velocities=["v"])
    assert "write the velocity of 'x' as the symbol 'v'" in str(info.value)
    with pytest.raises(physode.SystemDefinitionError, match="1 problem") as info:
        System.from_equations({xs: sympy.Derivative(xs, t)})
    assert "expressions hold the state, the parameters and time, not derivatives" \
        in str(info.value)


def test_declared_names_sympy_owns_are_the_parameters_in_python_strings():
    system = System.from_equations({"x": "-gamma*x + N"}, parameters={"gamma": 2.0, "N": 1.0})
    np.testing.assert_allclose(system.rhs(0.0, torch.tensor([3.0], dtype=F64)).numpy(), [-5.0])


def _kanes_driven_oscillator():
    """The first-order equations KanesMethod derives for a driven, damped mass on a spring,
    in its dynamicsymbols q(t), u(t), with the Lagrangian system they should equal."""
    from sympy.physics import mechanics as me

    q, u = dynamicsymbols("q u")
    t = dynamicsymbols._t
    m, c, k, a, w = sympy.symbols("m c k A omega")
    frame = me.ReferenceFrame("N")
    point = me.Point("O").locatenew("P", q * frame.x)
    point.set_vel(frame, u * frame.x)
    kane = me.KanesMethod(frame, q_ind=[q], u_ind=[u], kd_eqs=[q.diff(t) - u])
    drive = (-k * q - c * u + a * sympy.cos(w * t)) * frame.x
    kane.kanes_equations([me.Particle("bob", point, m)], [(point, drive)])
    params = {m: 2.0, c: 0.3, k: 5.0, a: 0.7, w: 1.3}
    x, v = sympy.symbols("x x_dot")
    reference = System.from_lagrangian(
        m * v**2 / 2 - k * x**2 / 2, [x], params, dissipation=c * v**2 / 2,
        forces={x: a * sympy.cos(w * t)},
    )
    return (q, u), kane.rhs(), params, reference


def test_first_order_equations_in_dynamicsymbols_from_kanes_method_are_a_system():
    # KanesMethod.rhs() writes its equations in q(t), u(t): from_equations refused them
    # ("state q(t) must be a sympy.Symbol or a name, not q", and "function(s) q, u that have no
    # torch translation"), while from_lagrangian and from_hamiltonian take dynamicsymbols.
    (q, u), rhs, params, reference = _kanes_driven_oscillator()
    kane = System.from_equations(
        {q: rhs[0], u: rhs[1]}, params, n_coordinates=1,
        initial_states={"rest": {q: 0.5, u: 0.0}},
        initial_state_distribution={"kind": "uniform", q: [-1.0, 1.0], u: [-2.0, 2.0]},
        invariants={"q_u": q * u},
    )
    assert kane.state_names == ["q", "u"]
    assert kane.equations["q"] == sympy.Symbol("u")
    assert kane.invariant_expressions["q_u"] == sympy.Symbol("q") * sympy.Symbol("u")
    assert kane.initial_state("rest").tolist() == [0.5, 0.0]
    assert kane.time_dependent
    y = torch.randn(6, 2, dtype=F64, generator=torch.Generator().manual_seed(0))
    t = torch.linspace(0.0, 4.0, 6, dtype=F64)
    torch.testing.assert_close(kane.rhs(t, y), reference.rhs(t, y), rtol=1e-14, atol=1e-14)
    by_name = System.from_equations({"q": rhs[0], "u": rhs[1]}, params)  # names find q(t)
    assert by_name.equations == kane.equations
    reread = system_from_spec(kane.to_spec())
    torch.testing.assert_close(reread.rhs(t, y), kane.rhs(t, y), rtol=0, atol=0)


def test_first_order_equations_in_dynamicsymbols_solve_as_scipy_does():
    (q, u), rhs, params, _ = _kanes_driven_oscillator()
    kane = System.from_equations({q: rhs[0], u: rhs[1]}, params)
    m, c, k, a, w = params.values()

    def hand(t, y):
        return [y[1], (-k * y[0] - c * y[1] + a * math.cos(w * t)) / m]

    y0, t = torch.tensor([0.4, -0.1], dtype=F64), torch.linspace(0.0, 6.0, 13, dtype=F64)
    torch.testing.assert_close(_solve(kane, y0, t), _scipy(hand, y0.tolist(), t),
                               rtol=1e-9, atol=1e-9)


def test_a_state_left_undeclared_in_first_order_equations_is_named_as_such():
    q, u = dynamicsymbols("q u")
    with pytest.raises(physode.SystemDefinitionError, match="1 problem") as info:
        System.from_equations({q: u})
    assert ("equation for q holds u(t), a function of time that is not declared: list 'u' "
            "among the states if it is one") in str(info.value)
    assert "torch translation" not in str(info.value)


def test_an_undefined_drive_function_says_to_write_the_drive_out_in_time():
    # The message only said to list F among the coordinates (or write it as a symbol), which
    # for a drive F(t) would give a coordinate without a kinetic term or an unknown symbol.
    t, x, v = sympy.symbols("t x x_dot")
    drive = sympy.Function("F")(t)
    with pytest.raises(physode.SystemDefinitionError, match="1 problem") as info:
        System.from_lagrangian(v**2 / 2 - x**2 / 2, [x], forces={x: drive})
    assert ("a prescribed function of time (a drive) has no value physode can compute, so "
            "write it out in 't', e.g. A*cos(omega*t)") in str(info.value)


def test_abs_in_a_spec_files_lagrangian_hamiltonian_and_dissipation_is_differentiated():
    # Quadratic drag R = c|v|**3/3 and a V-shaped potential k|x|: a file's symbols are plain,
    # which SymPy took to be complex, so d|v|/dv held re(v) and im(v) and the system was
    # built, only to fail at its first rhs ("cannot generate torch code for 're'").
    common = '[parameters]\nm = 1.5\nk = 2.0\nc = 0.3\n'
    drag = system_from_spec(
        'name = "drag"\nform = "lagrangian"\ncoordinates = ["x"]\n'
        'lagrangian = "m*x_dot**2/2 - k*Abs(x)"\ndissipation = "c*Abs(x_dot)**3/3"\n' + common
    )
    vee = system_from_spec(
        'name = "vee"\nform = "hamiltonian"\ncoordinates = ["x"]\nmomenta = ["p"]\n'
        'hamiltonian = "p**2/(2*m) + k*Abs(x) + c*Abs(p)**3/3"\n' + common
    )
    y = torch.tensor([[0.5, -0.7], [-0.4, 0.9]], dtype=F64)
    x, w = y[:, 0], y[:, 1]
    by_hand = torch.stack([w, (-2.0 * torch.sign(x) - 0.3 * w * w.abs()) / 1.5], -1)
    torch.testing.assert_close(drag.rhs(0.0, y), by_hand, rtol=1e-14, atol=1e-15)
    by_hand = torch.stack([w / 1.5 + 0.3 * w * w.abs(), -2.0 * torch.sign(x)], -1)
    torch.testing.assert_close(vee.rhs(0.0, y), by_hand, rtol=1e-14, atol=1e-15)
