"""Derived accelerations are compact (written over det M, common factors pulled out) and equal
those of the plain LU solve of ``M a = F`` they replace."""

from __future__ import annotations

import random
from pathlib import Path

import mpmath
import pytest
import sympy
from sympy import cos, sin

import physode.systems
from physode.symbolic import System, _cache, _mechanics


def _lu_reference(dyn: _mechanics.LagrangianDynamics) -> list[sympy.Expr]:
    """The accelerations as the previous code derived them: division for a diagonal M, LU
    otherwise."""
    mass, forcing = dyn.mass_matrix, dyn.forcing
    n = mass.shape[0]
    if _mechanics.is_diagonal(mass):
        return [forcing[i] / mass[i, i] for i in range(n)]
    solution = mass.LUsolve(forcing)
    return [solution[i] for i in range(n)]


def _cart_pole():
    x, th, xd, thd, big_m, m, l, g = sympy.symbols("x theta x_dot theta_dot M m l g")
    lagrangian = (big_m + m) * xd**2 / 2 + m * l * xd * thd * cos(th) + m * l**2 * thd**2 / 2
    lagrangian += m * g * l * cos(th)
    return lagrangian, [x, th], {big_m: 1.0, m: 0.3, l: 0.7, g: 9.81}


def _double_pendulum_on_cart():
    """Three coordinates, the Lagrangian expanded as a user might write it."""
    x, a, b, xd, ad, bd = sympy.symbols("x a b x_dot a_dot b_dot")
    big_m, m1, m2, l1, l2, g = sympy.symbols("M m1 m2 l1 l2 g")
    vx1, vy1 = xd + l1 * cos(a) * ad, l1 * sin(a) * ad
    vx2, vy2 = vx1 + l2 * cos(b) * bd, vy1 + l2 * sin(b) * bd
    kinetic = big_m * xd**2 / 2 + m1 * (vx1**2 + vy1**2) / 2 + m2 * (vx2**2 + vy2**2) / 2
    potential = -m1 * g * l1 * cos(a) - m2 * g * (l1 * cos(a) + l2 * cos(b))
    params = {big_m: 1.0, m1: 0.5, m2: 0.7, l1: 1.0, l2: 0.8, g: 9.81}
    return sympy.expand(kinetic - potential), [x, a, b], params


def _catalogue_lagrangians():
    for name in physode.systems.names():
        system = physode.systems.load(name)
        if system.form == "lagrangian":
            yield name, system


LAGRANGIAN_NAMES = [name for name, _ in _catalogue_lagrangians()]
USER_SYSTEMS = {"cart_pole": _cart_pole, "double_pendulum_on_cart": _double_pendulum_on_cart}


def _assert_equal_at_random_points(system: System, reference: list[sympy.Expr]) -> None:
    n = system.n_coordinates
    derived = list(system.equations.values())[n:]
    symbols = sorted(
        set().union(*(e.free_symbols for e in derived + reference)), key=lambda s: s.name
    )
    # Evaluated with 30 digits, so that the comparison is of the expressions, not of roundoff.
    evaluate = sympy.lambdify(symbols, [derived, reference], "mpmath")
    rng = random.Random(1)
    with mpmath.workdps(30):
        for _ in range(20):
            # Parameters (masses, lengths) in (0.5, 1.5) keep M positive definite.
            point = [
                rng.uniform(0.5, 1.5) if s in system.parameter_symbols else rng.uniform(-3, 3)
                for s in symbols
            ]
            new, old = evaluate(*point)
            for a, b in zip(new, old, strict=True):
                assert float(a) == pytest.approx(float(b), rel=1e-12, abs=1e-12)


def _vanishes(expr: sympy.Expr, angles: list[sympy.Symbol]) -> bool:
    """Whether ``expr``, rational in the sines and cosines of ``angles`` (and their sums), is
    identically zero: exact, with ``cos**2 = 1 - sin**2`` applied to its numerator."""
    expr = sympy.expand_trig(expr)
    cosines = sympy.symbols(f"c0:{len(angles)}")
    sines = sympy.symbols(f"s0:{len(angles)}")
    names = {sympy.cos(a): c for a, c in zip(angles, cosines, strict=True)}
    names.update({sympy.sin(a): s for a, s in zip(angles, sines, strict=True)})
    numerator, _ = sympy.fraction(sympy.cancel(sympy.together(expr.xreplace(names))))
    for c, s in zip(cosines, sines, strict=True):
        numerator = sympy.rem(numerator, c**2 + s**2 - 1, c)
    return sympy.expand(numerator) == 0


@pytest.mark.parametrize("name", LAGRANGIAN_NAMES)
def test_catalogue_accelerations_equal_the_lu_solution(name):
    system = physode.systems.load(name)
    _assert_equal_at_random_points(system, _lu_reference(system._dynamics))


@pytest.mark.parametrize("make", list(USER_SYSTEMS.values()), ids=list(USER_SYSTEMS))
def test_user_accelerations_equal_the_lu_solution(make):
    lagrangian, coordinates, params = make()
    system = System.from_lagrangian(lagrangian, coordinates, params)
    _assert_equal_at_random_points(system, _lu_reference(system._dynamics))


def test_double_pendulum_accelerations_are_the_lu_solution_symbolically():
    system = physode.systems.load("double_pendulum")
    angles = system.state_symbols[:2]
    derived = list(system.equations.values())[2:]
    for new, old in zip(derived, _lu_reference(system._dynamics), strict=True):
        assert _vanishes(new - old, angles)
        assert not _vanishes(new - old + sympy.sin(angles[0]) / 1000, angles)  # the check bites


def test_double_pendulum_accelerations_are_compact():
    # The LU solution counts 121 operations (nested fractions, the forcing repeated inside
    # itself); over one determinant it counts 63.
    system = physode.systems.load("double_pendulum")
    accelerations = [system.equations[v] for v in ("theta1_dot", "theta2_dot")]
    assert sum(sympy.count_ops(a) for a in accelerations) <= 70
    th1, th2, m1, m2, l1, l2 = sympy.symbols("theta1 theta2 m1 m2 l1 l2")
    for acceleration, length in zip(accelerations, (l1, l2), strict=True):
        _, denominator = sympy.fraction(acceleration)
        # The textbook denominator: l_i (m1 + m2 sin^2(theta1 - theta2)), no nested fraction.
        assert denominator == length * (m1 + m2 * sin(th1 - th2) ** 2)


def test_cart_pole_acceleration_reads_as_in_textbooks():
    lagrangian, coordinates, params = _cart_pole()
    system = System.from_lagrangian(lagrangian, coordinates, params)
    th, thd, big_m, m, l, g = sympy.symbols("theta theta_dot M m l g")
    expected = m * (g * cos(th) + l * thd**2) * sin(th) / (big_m + m * sin(th) ** 2)
    assert system.equations["x_dot"] == expected


def test_a_system_too_large_to_rewrite_keeps_the_lu_solution(monkeypatch):
    lagrangian, coordinates, params = _cart_pole()
    monkeypatch.setattr(_mechanics, "COFACTOR_TERMS_MAX", 1)
    system = System.from_lagrangian(lagrangian, coordinates, params)
    lu = _lu_reference(system._dynamics)
    assert list(system.equations.values())[2:] == lu


def test_four_coordinates_solved_symbolically_keep_the_lu_solution():
    # Above COFACTOR_MAX rows the determinant and its expansion would grow too fast.
    qs = sympy.symbols("q1:5")
    vs = [sympy.Symbol(f"{q.name}_dot") for q in qs]
    g = sympy.Symbol("g")
    vx = vy = height = kinetic = potential = 0
    for q, v in zip(qs, vs, strict=True):
        vx, vy, height = vx + cos(q) * v, vy + sin(q) * v, height - cos(q)
        kinetic, potential = kinetic + (vx**2 + vy**2) / 2, potential + g * height
    lagrangian = kinetic - potential
    system = System.from_lagrangian(lagrangian, list(qs), {g: 9.81}, mass_matrix="symbolic")
    assert list(system.equations.values())[4:] == _lu_reference(system._dynamics)


def test_an_edited_symbolic_source_changes_every_cache_key(tmp_path, monkeypatch):
    """A new derivation (an edit to _mechanics.py, say) must not be served old-form entries."""
    source = sorted(Path(_cache.__file__).parent.glob("*.py"))
    for path in source:
        (tmp_path / path.name).write_bytes(path.read_bytes())
    monkeypatch.setattr(_cache, "__file__", str(tmp_path / "_cache.py"))
    monkeypatch.setenv(_cache.ENV, str(tmp_path / "cache"))
    _cache._code_version.cache_clear()
    try:
        before = (_cache._code_version(), _cache._entry("spec"))
        _cache._code_version.cache_clear()
        with open(tmp_path / "_mechanics.py", "a") as file:
            file.write("\n# another derivation\n")
        after = (_cache._code_version(), _cache._entry("spec"))
    finally:
        _cache._code_version.cache_clear()
    assert before[0] != after[0] and before[1] != after[1]


def test_a_numerator_too_large_to_rewrite_is_found_before_any_sum_is_rewritten(monkeypatch):
    # Rewriting the sines and cosines of a sum costs seconds where expanding it costs little:
    # the determinant of a 3-coordinate user system was rewritten for 10 s before its
    # numerators, found too large, sent it back to the LU solution.
    lagrangian, coordinates, _ = _double_pendulum_on_cart()
    velocities = [sympy.Symbol(f"{q.name}_dot") for q in coordinates]
    dyn = _mechanics.euler_lagrange(lagrangian, coordinates, velocities, sympy.Symbol("t"))
    det_terms = len(sympy.Add.make_args(sympy.expand(dyn.mass_matrix.det())))
    numerators = dyn.mass_matrix.adjugate() * dyn.forcing
    assert max(len(sympy.Add.make_args(sympy.expand(a))) for a in numerators) > det_terms
    monkeypatch.setattr(_mechanics, "COFACTOR_TERMS_MAX", det_terms)
    rewritten = []
    monkeypatch.setattr(_mechanics, "TR10i", lambda expr: rewritten.append(expr) or expr)
    assert _mechanics.solve_accelerations(dyn) == _lu_reference(dyn)
    assert rewritten == []
