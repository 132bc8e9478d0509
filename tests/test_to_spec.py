"""System.to_spec: a system built in Python written as a specification file, read back as the
same system, and stored in a data set by physode.data.simulate."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import sympy
import torch
from sympy.physics.mechanics import dynamicsymbols

import physode
from physode.symbolic import System, _writing

torch.set_num_threads(1)


def _plain(expr):
    """``expr`` with symbols matched by name and floats as float64, as a file holds them."""
    expr = sympy.sympify(expr)
    swap = {s: sympy.Symbol(s.name) for s in expr.atoms(sympy.Symbol)}
    swap.update({f: sympy.Float(float(f)) for f in expr.atoms(sympy.Float)})
    return expr.xreplace(swap)


def _assert_same(given: System, loaded: System) -> None:
    assert loaded.state_names == given.state_names
    assert loaded.parameters == given.parameters
    assert loaded.parameter_ranges == given.parameter_ranges
    assert loaded.invariant_names == given.invariant_names
    assert loaded.n_coordinates == given.n_coordinates
    assert loaded.name == given.name and loaded.form == given.form
    assert loaded.characteristic_time == given.characteristic_time
    assert loaded.time_symbol.name == given.time_symbol.name
    assert loaded.separable == given.separable and loaded.conservative == given.conservative
    assert {k: v.tolist() for k, v in loaded.initial_states.items()} == {
        k: v.tolist() for k, v in given.initial_states.items()
    }
    if given.mass_matrix is not None and given._equations is None:
        assert _plain(loaded.mass_matrix) == _plain(given.mass_matrix)
        assert _plain(loaded.forcing) == _plain(given.forcing)
    else:
        for state, expr in given.equations.items():
            assert _plain(loaded.equations[state]) == _plain(expr), state
    for name, expr in given.invariant_expressions.items():
        assert _plain(loaded.invariant_expressions[name]) == _plain(expr), name


def _load_text(text: str, tmp_path, name: str = "system.toml") -> System:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return physode.systems.load(path)


def _built_in_python(loaded: System) -> System:
    """The catalogue system ``loaded`` built again with the Python constructors, from SymPy
    expressions and numbers (no text)."""
    n = loaded.n_coordinates
    declared = {
        k: v for k, v in loaded.invariant_expressions.items()
        if loaded.form == "equations" or not (loaded.conservative and k == "energy")
    }
    options = dict(
        name=loaded.name, description=loaded.description, reference=loaded.reference,
        parameter_ranges=loaded.parameter_ranges, invariants=declared,
        initial_states={k: v.tolist() for k, v in loaded.initial_states.items()},
        characteristic_time=loaded.characteristic_time,
        initial_state_distribution=loaded._distribution_table,
    )
    params = dict(zip(loaded.parameter_symbols, loaded.parameters.values(), strict=True))
    if loaded.form == "equations":
        rhs = dict(zip(loaded.state_symbols, loaded._equations, strict=True))
        return System.from_equations(
            rhs, params, time=loaded.time_symbol, n_coordinates=n, **options
        )
    qs, partners = loaded.state_symbols[:n], loaded.state_symbols[n:]
    forces = loaded.forces
    if loaded.form == "hamiltonian":
        return System.from_hamiltonian(
            loaded._defining_expression, qs, partners, params, time=loaded.time_symbol,
            forces=forces, **options,
        )
    return System.from_lagrangian(
        loaded._defining_expression, qs, params, velocities=partners, time=loaded.time_symbol,
        dissipation=loaded.dissipation, forces=forces, mass_matrix=loaded._mass_matrix_mode,
        **options,
    )


@pytest.mark.parametrize("name", physode.systems.names())
def test_every_catalogue_system_built_in_python_reads_back_the_same(name, tmp_path):
    built = _built_in_python(physode.systems.load(name))
    assert built.spec_text is None
    text = built.to_spec()
    _assert_same(built, _load_text(text, tmp_path))
    _assert_same(physode.systems.load(name), _load_text(text, tmp_path))


def test_a_lagrangian_with_dynamicsymbols_dissipation_forces_and_options(tmp_path):
    theta = dynamicsymbols("theta")
    t = sympy.Symbol("t")
    m, g, ell, c, a, w = sympy.symbols("m g l c A omega")
    lagrangian = m * ell**2 * theta.diff(t) ** 2 / 2 + m * g * ell * sympy.cos(theta)
    velocity = sympy.Symbol("theta_dot")
    built = System.from_lagrangian(
        lagrangian, [theta], {m: 1.0, g: 9.81, ell: 0.5, c: 0.1, a: 0.3, w: 2.0},
        dissipation=c * velocity**2 / 2, forces={theta: a * sympy.cos(w * t)},
        name="driven pendulum", description='a "driven"\npendulum', reference="none",
        parameter_ranges={ell: (0.25, 1.0), a: [0.0, 0.5]},
        initial_state_distribution={"kind": "normal", "theta": [0.0, 0.5],
                                    "theta_dot": [0.0, 0.1]},
        initial_states={"rest": [0.0, 0.0], "swing": {"theta": 1.0, "theta_dot": -0.5}},
        characteristic_time=1.5, mass_matrix="numeric",
    )
    text = built.to_spec()
    loaded = _load_text(text, tmp_path)
    _assert_same(built, loaded)
    assert loaded.description == built.description and loaded.reference == "none"
    assert loaded.time_dependent and loaded.invariant_names == []
    assert "mass_matrix" in text and loaded._equations is None
    gen_a, gen_b = loaded.sample_initial_states(5, seed=3), built.sample_initial_states(5, seed=3)
    assert torch.equal(gen_a, gen_b)
    y = torch.tensor([[0.3, -0.2], [1.0, 0.5]], dtype=torch.float64)
    assert torch.equal(loaded.rhs(0.7, y), built.rhs(0.7, y))


def test_a_hamiltonian_with_declared_invariants_and_momenta(tmp_path):
    x, y, px, py, k = sympy.symbols("x y p_x p_y k")
    hamiltonian = (px**2 + py**2) / 2 + k * (x**2 + y**2) / 2
    built = System.from_hamiltonian(
        hamiltonian, [x, y], [px, py], {k: 2.0},
        invariants={"angular_momentum": x * py - y * px}, name="isotropic",
    )
    loaded = _load_text(built.to_spec(), tmp_path)
    _assert_same(built, loaded)
    assert loaded.invariant_names == ["energy", "angular_momentum"]


def test_equations_with_their_own_time_symbol_and_forcing(tmp_path):
    x, v, delta, gamma, omega, tau = sympy.symbols("x v delta gamma omega tau")
    built = System.from_equations(
        {x: v, v: -delta * v + x - x**3 + gamma * sympy.cos(omega * tau)},
        {delta: 0.3, gamma: 0.5, omega: 1.2}, time=tau, n_coordinates=1, name="duffing_again",
    )
    text = built.to_spec()
    assert 'time = "tau"' in text
    loaded = _load_text(text, tmp_path)
    _assert_same(built, loaded)
    assert loaded.time_dependent


def test_awkward_names_and_numbers_read_back_exactly(tmp_path):
    # E, pi and I are parameters here, next to Euler's number and pi themselves; gamma, N and S
    # are SymPy functions or objects; ℓ is read as l by Python; the floats need 16-17 digits.
    e_, pi_, i_, ell, gamma, n_, s_ = sympy.symbols("E pi I ℓ gamma N S")
    x, y = sympy.symbols("x y")
    rhs = {
        x: y,
        y: -e_ * sympy.E * x + pi_ * sympy.pi * i_ + ell * gamma * n_ * s_ * sympy.Float(0.1)
        + sympy.Float(0.1 + 0.2) + sympy.Float(1 / 3) * x + sympy.Rational(2, 7) * y
        + sympy.Float(1e-300) * x**3 + sympy.Float(2.5e20),
    }
    params = {e_: 1.5, pi_: 2.0, i_: 0.5, ell: 3.0, gamma: 1.25, n_: 2.0, s_: 0.1 + 0.2}
    built = System.from_equations(rhs, params, name="odd names: ℓ")
    loaded = _load_text(built.to_spec(), tmp_path)
    _assert_same(built, loaded)
    assert loaded.parameters == built.parameters
    y0 = torch.tensor([[0.7, -1.3]], dtype=torch.float64)
    assert torch.equal(loaded.rhs(0.0, y0), built.rhs(0.0, y0))


def test_piecewise_conditions_with_eq_and_ne_are_written_and_read_back(tmp_path):
    # Until 2026-12-07 to_spec refused them: the file syntax had no way to write a relation.
    x, v, k = sympy.symbols("x v k")
    rhs = {
        x: sympy.Piecewise((0, sympy.Eq(x, 0)), (v, sympy.Ne(v, k)), (-x, True)),
        v: sympy.Piecewise((k, sympy.Eq(x + v, 2 * k)), (-k * x, x < 1), (x, True)),
    }
    built = System.from_equations(rhs, {k: 0.5}, name="relations")
    text = built.to_spec()
    assert "Eq(x, 0)" in text and "Ne(" in text
    loaded = _load_text(text, tmp_path)
    _assert_same(built, loaded)
    # On each branch: x = 0; v = k; x + v = 2k; x < 1; neither.
    y = torch.tensor([[0.0, 3.0], [2.0, 0.5], [0.25, 0.75], [0.5, 2.0], [3.0, 4.0]],
                     dtype=torch.float64)
    assert torch.equal(loaded.rhs(0.0, y), built.rhs(0.0, y))
    assert built.rhs(0.0, y).tolist() == [[0.0, 0.0], [-2.0, 2.0], [0.75, 0.5],
                                          [2.0, -0.25], [4.0, 3.0]]
    assert _writing.rebuilt_from_spec(built).to_spec() == text


def test_a_system_from_a_file_returns_its_text_unchanged(tmp_path):
    pendulum = physode.systems.load("pendulum")
    assert pendulum.to_spec() is pendulum.spec_text
    path = pendulum.write_spec(tmp_path / "pendulum.toml")
    assert path.read_text(encoding="utf-8") == pendulum.spec_text


def test_an_unpickled_system_still_writes_its_spec_and_loads_expressions_lazily():
    q, p, k = sympy.symbols("q p k")
    built = System.from_hamiltonian(p**2 / 2 + k * q**2 / 2 + sympy.sin(q) * k, [q], [p],
                                    {k: 1.0}, name="osc").compile()
    text = built.to_spec()
    copy = pickle.loads(pickle.dumps(built))
    assert "_defining_expression" not in copy.__dict__ and "_symbolic" in copy.__dict__
    copy.rhs(0.0, torch.tensor([0.1, 0.2], dtype=torch.float64))
    assert "_symbolic" in copy.__dict__  # the numerics did not open the expressions
    assert copy.to_spec() == text


def test_simulate_stores_a_python_built_system_as_its_file_would(tmp_path):
    q, v, k, c = sympy.symbols("q v k c")
    built = System.from_lagrangian(
        v**2 / 2 - k * q**2 / 2, [q], {k: 2.0, c: 0.1}, velocities=[v],
        dissipation=c * v**2 / 2, parameter_ranges={k: (1.0, 3.0)},
        initial_state_distribution={"kind": "uniform", "q": [-1, 1], "v": [-0.5, 0.5]},
        name="damped",
    )
    spec_path = built.write_spec(tmp_path / "damped.toml")
    settings = dict(trajectories=4, t_end=2.0, points=5, seed=7, params=["k"], quiet=True)
    physode.data.simulate(built, out=tmp_path / "python.h5", **settings)
    physode.data.simulate(spec_path, out=tmp_path / "file.h5", **settings)
    with physode.data.load(tmp_path / "python.h5") as a, physode.data.load(
        tmp_path / "file.h5"
    ) as b:
        assert a.system.spec_text == built.to_spec() == b.system.spec_text
        assert np.array_equal(a.states[:], b.states[:])
        assert np.array_equal(a.params, b.params)
        assert a.state_names == ["q", "v"]
    assert built.spec_text is None  # the given system is left as it was


def test_what_a_file_cannot_hold_is_refused_by_name():
    x = sympy.Symbol("x")
    sampler = System.from_equations(
        {x: -x}, {}, initial_state_distribution=lambda n, gen: torch.zeros(n, 1), name="s"
    )
    with pytest.raises(physode.InvalidArgumentError, match="initial_state_distribution is a "
                       "Python callable"):
        sampler.to_spec()
    lam = sympy.Symbol("lambda")
    with pytest.raises(physode.InvalidArgumentError, match="'lambda' is a Python keyword.*"
                       r"lambda_"):
        System.from_equations({x: -lam * x}, {lam: 1.0}).to_spec()
    sin = sympy.Symbol("sin")
    with pytest.raises(physode.InvalidArgumentError, match="equation for x.*also functions of "
                       "the file format: 'sin'"):
        System.from_equations({x: -sin * sympy.sin(x)}, {sin: 1.0}).to_spec()
    # A parameter named like a function is fine where the function is not used.
    assert 'sin = { value = 1.0 }' in System.from_equations({x: -sin * x}, {sin: 1.0}).to_spec()


@pytest.mark.parametrize(
    ("constant", "written"),
    [
        (sympy.GoldenRatio, "1/2 + sqrt(5)/2"),
        (sympy.TribonacciConstant, "1/3 + (19 - 3*sqrt(33))**(1/3)/3 + (3*sqrt(33) + 19)**(1/3)/3"),
    ],
)
def test_the_golden_ratio_and_the_tribonacci_constant_are_written_exactly_in_radicals(
    constant, written, tmp_path
):
    # A file has no name for them: to_spec said "does not read back as written (it reads back
    # as GoldenRatio*x)". In radicals they are exact, and equations derived from them too.
    x, p, k = sympy.symbols("x p k")
    oscillator = System.from_hamiltonian(
        p**2 / (2 * constant) + k * constant * x**4, [x], [p], {k: 0.5}, name="oscillator"
    )
    text = oscillator.to_spec()
    hamiltonian = next(line for line in text.splitlines() if line.startswith("hamiltonian"))
    assert hamiltonian.count(f"({written})") == 2 and str(constant) not in text
    loaded = _load_text(text, tmp_path)
    for state, expr in oscillator.equations.items():
        exact = expr.subs(constant, sympy.sympify(written))
        assert sympy.simplify(loaded.equations[state] - exact) == 0, state
    out = tmp_path / "oscillator.h5"
    physode.data.simulate(oscillator, trajectories=2, t_end=1.0, points=3, out=out, quiet=True)
    with physode.data.load(out) as stored:
        assert stored.system.spec_text == text
    y = torch.tensor([[0.3, -0.7]], dtype=torch.float64)
    t = torch.tensor(0.0, dtype=torch.float64)
    expected = [-0.7 / float(constant), -4 * 0.5 * float(constant) * 0.3**3]
    assert loaded.vector_field()(t, y)[0].tolist() == pytest.approx(expected, rel=1e-15)


@pytest.mark.parametrize(
    ("constant", "what", "value"),
    [
        (sympy.Catalan, "Catalan's constant", "0.915965594177219"),
        (sympy.EulerGamma, "the Euler-Mascheroni constant", "0.5772156649015329"),
    ],
)
def test_constants_a_file_cannot_write_exactly_are_refused_naming_them(constant, what, value):
    # It said "does not read back as written (it reads back as Catalan*x)".
    x = sympy.Symbol("x")
    decay = System.from_equations({x: -constant * x}, {}, name="decay")
    with pytest.raises(physode.InvalidArgumentError) as caught:
        decay.to_spec()
    assert str(caught.value) == (
        f"system 'decay' cannot be written as a specification: equation for x holds {what} "
        f"(sympy.{constant}), which a specification file cannot write exactly; replace it by "
        f"its value, expr.subs(sympy.{constant}, {value}), or by a parameter"
    )
    assert float(sympy.sympify(value)) == float(constant)


def test_a_coordinate_declared_real_reads_back_as_the_same_system(tmp_path):
    # Abs(q) of a coordinate declared real differentiates to sign(q). Written by name, the
    # file's q is plain, which SymPy took to be complex (re(q), im(q): no torch code), so
    # simulate refused the system; every symbol is now differentiated as real.
    q = sympy.Symbol("q", real=True)
    v = sympy.Symbol("v")
    vee = System.from_lagrangian(v**2 / 2 - sympy.Abs(q), [q], velocities=[v], name="vee")
    physode.data.simulate(vee, trajectories=2, t_end=1.0, points=3,
                          out=tmp_path / "vee.h5", quiet=True)
    stored = physode.data.load(tmp_path / "vee.h5").system
    assert str(stored.equations) == str(vee.equations) == "{'q': v, 'v': -sign(q)}"


def test_simulate_names_the_symbols_with_assumptions_where_the_text_differs(
    tmp_path, monkeypatch
):
    q = sympy.Symbol("q", real=True)
    v = sympy.Symbol("v")
    vee = System.from_lagrangian(v**2 / 2 - q**2 / 2, [q], velocities=[v], name="vee")
    written = _writing.spec_text
    monkeypatch.setattr(
        _writing, "spec_text", lambda system: written(system).replace("q**2/2", "q**4/4")
    )
    with pytest.raises(physode.InvalidArgumentError, match="'q' carry SymPy assumptions"):
        physode.data.simulate(vee, trajectories=2, t_end=1.0, points=3,
                              out=tmp_path / "vee.h5", quiet=True)
    assert not (tmp_path / "vee.h5").exists()


def test_simulate_refuses_a_text_that_gives_other_equations(tmp_path, monkeypatch):
    x, k = sympy.symbols("x k")
    decay = System.from_equations({x: -k * x}, {k: 0.5}, name="decay")
    written = _writing.spec_text
    monkeypatch.setattr(
        _writing, "spec_text", lambda system: written(system).replace("-k*x", "-k*x**2")
    )
    with pytest.raises(physode.InvalidArgumentError, match=r"dx/dt: -k\*x against -k\*x\*\*2.*"
                       "report this as a bug"):
        physode.data.simulate(decay, trajectories=2, t_end=1.0, points=3,
                              out=tmp_path / "decay.h5", quiet=True)
    assert not (tmp_path / "decay.h5").exists()


def test_the_systems_page_example_prints_what_its_comments_say(capsys):
    import re
    from pathlib import Path

    page = (Path(__file__).parent.parent / "docs" / "systems.md").read_text(encoding="utf-8")
    section = page.split("### Writing a system to a specification file")[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    exec(compile(code, "systems.md, Writing a system to a specification file", "exec"), {})
    printed = capsys.readouterr().out
    said = [line[2:] if line.startswith("# ") else "" for line in code.splitlines()
            if line.startswith("#")]
    assert printed.splitlines()[: len(said)] == said
    assert printed.endswith("\n\n")  # the text ends with a newline, print adds one
