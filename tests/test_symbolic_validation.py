"""Validation: every problem in a system definition is reported, each naming its symbol."""

from __future__ import annotations

import functools
import math
import pickle
import re

import pytest
import sympy
import torch

import physode
import physode.systems
from physode.symbolic import System, system_from_spec

x, v, y, m, k, g, t = sympy.symbols("x v y m k g t")


def test_unknown_symbol_is_named():
    with pytest.raises(physode.SystemDefinitionError, match="symbol 'c' in the Lagrangian"):
        System.from_lagrangian(m * v**2 / 2 - sympy.Symbol("c") * x**2, [x], {m: 1.0},
                               velocities=[v])


def test_unknown_symbol_in_hamiltonian_names_momentum_vocabulary():
    with pytest.raises(physode.SystemDefinitionError,
                       match="symbol 'w' in the Hamiltonian is neither a coordinate, a momentum"):
        System.from_hamiltonian(v**2 / 2 + sympy.Symbol("w") * x**2, [x], [v], {})


def test_parameter_without_value_is_named():
    with pytest.raises(physode.SystemDefinitionError, match="parameter 'g' has no value"):
        System.from_equations({x: -g * x}, {g: None})


def test_parameter_given_as_bare_symbol_has_no_value():
    with pytest.raises(physode.SystemDefinitionError, match="parameter 'k' has no value"):
        System.from_equations({x: -k * x}, [k])


def test_time_in_an_invariant_is_rejected_with_its_name():
    with pytest.raises(physode.SystemDefinitionError,
                       match="invariant 'clock' depends on time 't'"):
        System.from_equations({x: v, v: -x}, {}, invariants={"clock": x * t})


def test_singular_mass_matrix_names_the_coordinate_without_kinetic_term():
    with pytest.raises(physode.SystemDefinitionError,
                       match="singular: coordinate 'y' has no kinetic term"):
        System.from_lagrangian(m * v**2 / 2 + sympy.Symbol("y_dot") * x - y**2, [x, y], {m: 1.0},
                               velocities=[v, sympy.Symbol("y_dot")])


def test_singular_full_mass_matrix_is_detected():
    a, b = sympy.symbols("a b")
    ad, bd = sympy.symbols("a_dot b_dot")
    # Kinetic energy (a_dot + b_dot)**2 / 2: rank one.
    with pytest.raises(physode.SystemDefinitionError,
                       match="mass matrix of coordinates a, b is singular"):
        System.from_lagrangian((ad + bd) ** 2 / 2 - a**2 - b**2, [a, b], {},
                               velocities=[ad, bd])


def test_every_problem_is_collected_into_one_error():
    with pytest.raises(physode.SystemDefinitionError) as info:
        System.from_equations(
            {x: -k * x + sympy.Symbol("q"), y: sympy.Function("f")(x)}, {k: None},
            invariants={"late": t * x},
        )
    message = str(info.value)
    assert "4 problems" in message
    for fragment in ("'q'", "'k' has no value", "function(s) f", "'late' depends on time"):
        assert fragment in message


def test_unsupported_function_is_named():
    with pytest.raises(physode.SystemDefinitionError, match="besselj"):
        System.from_equations({x: sympy.besselj(0, x)}, {})


def test_name_used_twice_is_reported():
    with pytest.raises(physode.SystemDefinitionError, match="'x' is used twice"):
        System.from_equations({x: -k * x}, {x: 1.0, k: 1.0})


def test_a_parameter_named_like_time_is_reported():
    with pytest.raises(physode.SystemDefinitionError, match="'t' is used twice"):
        System.from_equations({x: -t * x}, {t: 1.0})


def test_parameter_default_outside_its_range_is_reported():
    with pytest.raises(physode.SystemDefinitionError, match="'k' has value 5.0 outside"):
        System.from_equations({x: -k * x}, {k: 5.0}, parameter_ranges={k: (0.0, 1.0)})


_SPEC = """
name = "bad"
form = "equations"
colour = "blue"
[parameters]
a = {{ value = 1.0, rnage = [0, 1] }}
[equations]
x = "{rhs}"
[initial_state_distribution]
kind = "uniform"
x = [-1, 1]
z = [0, 1]
"""


def test_spec_file_problems_are_all_listed_with_their_names():
    with pytest.raises(physode.SystemDefinitionError) as info:
        system_from_spec(_SPEC.format(rhs="-a*x + b"), source="bad.toml")
    message = str(info.value)
    for fragment in ("in bad.toml", "unknown key 'colour'", "unknown key 'rnage'",
                     "symbol 'b' in the equation for x", "names 'z', which is not a state"):
        assert fragment in message


def test_spec_expression_that_does_not_parse_is_reported():
    with pytest.raises(physode.SystemDefinitionError, match="equation for x = '-a\\*\\*\\*x'"):
        system_from_spec(_SPEC.format(rhs="-a***x").replace('colour = "blue"\n', ""))


@pytest.mark.parametrize("form", ["newtonian", None])
def test_spec_with_unknown_form_lists_valid_forms(form):
    text = 'name = "x"\n' + (f'form = "{form}"\n' if form else "")
    with pytest.raises(physode.SystemDefinitionError, match="valid forms: lagrangian, hamiltonian"):
        system_from_spec(text)


def test_distribution_kind_and_keys_are_checked():
    text = """
name = "o"
form = "hamiltonian"
coordinates = ["x"]
momenta = ["p"]
hamiltonian = "p**2/2 + x**2/2"
[initial_state_distribution]
kind = "gaussian"
"""
    with pytest.raises(physode.SystemDefinitionError, match="kind 'gaussian' is unknown"):
        system_from_spec(text)
    with pytest.raises(physode.SystemDefinitionError, match="orbit distribution needs the key"):
        system_from_spec(text.replace('"gaussian"', '"orbit"\nposition = ["x"]\nvelocity = ["p"]'
                                                    '\nradius = [1, 2]'))


@pytest.mark.parametrize("table, message", [
    ('kind = "normal"\nx = [0.0, nan]\np = [0.0, 1.0]', "entry x = [0.0, nan] must be [mean, std]"),
    ('kind = "uniform"\nx = [-inf, 1.0]\np = [0.0, 1.0]', "entry x = [-inf, 1.0] must be [low, "),
    ('kind = "perturbed"\nbase = "rest"\nstd = nan', "std must be a finite number >= 0, got nan"),
    ('kind = "perturbed"\nbase = "rest"\nstd = inf', "std must be a finite number >= 0, got inf"),
])
def test_distributions_refuse_values_that_are_not_finite(table, message):
    # NaN passed every comparison test and sampled NaN initial states.
    text = f"""
name = "o"
form = "hamiltonian"
coordinates = ["x"]
momenta = ["p"]
hamiltonian = "p**2/2 + x**2/2"
[initial_states]
rest = [1.0, 0.0]
[initial_state_distribution]
{table}
"""
    with pytest.raises(physode.SystemDefinitionError, match=re.escape(message)):
        system_from_spec(text)


def test_unknown_catalogue_name_lists_the_valid_names():
    with pytest.raises(physode.InvalidArgumentError, match="system 'thre_body'.*three_body"):
        physode.systems.load("thre_body")


def test_missing_spec_path_is_an_invalid_argument(tmp_path):
    with pytest.raises(physode.InvalidArgumentError, match="no such file: '.*nothing.toml'"):
        physode.systems.load(tmp_path / "nothing.toml")


def test_unknown_learnable_parameter_lists_the_valid_ones():
    system = physode.systems.load("pendulum")
    with pytest.raises(physode.InvalidArgumentError, match=r"\['mass'\].*\['m', 'g', 'l'\]"):
        system.vector_field(learnable=["mass"])


def test_wrong_state_size_names_the_expected_states():
    import torch

    with pytest.raises(physode.InvalidArgumentError, match="needs \\(..., 2\\) with states"):
        physode.systems.load("pendulum").rhs(0.0, torch.zeros(3))


# ---------------------------------------------------------------------- expressions in spec files
_ONE_STATE = """
name = "decay"
form = "equations"
{extra}
[parameters]
k = {k}
[equations]
x = {rhs}
"""


def _one_state(rhs: str, k: str = "0.5", extra: str = "") -> str:
    """A one-state specification; ``rhs`` is TOML (a literal string keeps quotes as they are)."""
    return _ONE_STATE.format(rhs=rhs, k=k, extra=extra)


def _stored_spec_loader(text, path):
    from physode.data.stored import system_from_spec as from_data_set

    return from_data_set(text, "inject")


def _file_loader(text, path):
    path.write_text(text, encoding="utf-8")
    return physode.systems.load(path)


@pytest.mark.parametrize("load", [_file_loader, _stored_spec_loader], ids=["file", "data set"])
def test_a_spec_expression_cannot_run_code(tmp_path, load):
    target = tmp_path / "PWNED"
    rhs = ("\"Symbol._sanitize.__globals__['__builtins__']['open']"
           f"('{target}','w').write('x')*0 - k*x\"")
    with pytest.raises(physode.SystemDefinitionError, match="equation for x: attribute access"):
        load(_one_state(rhs), tmp_path / "inject.toml")
    assert not target.exists()


@pytest.mark.parametrize("rhs, refusal", [
    ("x.real", "attribute access 'x.real' is not allowed"),
    ("x[0]", "indexing 'x[0]' is not allowed"),
    ("sin(x=k)", "the keyword argument 'x=' of sin is not allowed"),
    ("sin('x')", "the string \"'x'\" is not allowed"),
    ("lambda: x", "'lambda' is not allowed"),
    ("sum([x for x in k])", "the comprehension '[x for x in k]' is not allowed"),
    ("sin(*k)", "unpacking '*k' is not allowed"),
    ("(y := x)", "the assignment ':=' is not allowed"),
    ('f"{x}"', "the f-string 'f\"{x}\"' is not allowed"),
    ("1j * x", "the imaginary number '1j' is not allowed"),
    ("x > 0", "the comparison 'x > 0' is not allowed outside a Piecewise condition"),
    ("x == k", "'==' is not allowed; in a Piecewise condition write Eq(a, b)"),
    ("Eq(x, k)", "the relation 'Eq(x, k)' is not allowed outside a Piecewise condition"),
    ("Ne*x", "'Ne' is a relation; use it as a Piecewise condition, Ne(a, b)"),
    ("Piecewise((x, Eq(x)), (k, True))", "the relation 'Eq(x)' takes two arguments by position"),
    ("Piecewise((x, Ne(x, k.real)), (k, True))", "attribute access 'k.real' is not allowed"),
    ("x and k", "'and' is not allowed"),
    ("x or k", "'or' is not allowed"),
    ("not x", "'not' is not allowed"),
    ("x if x else k", "the conditional expression 'x if x else k' is not allowed"),
    ("(x, k)", "the tuple '(x, k)' is not allowed"),
    ("[x, k]", "the list '[x, k]' is not allowed"),
    ("{x, k}", "the set '{x, k}' is not allowed"),
    ("{x: k}", "the dict '{x: k}' is not allowed"),
    ("x ^ 2", "'^' is not allowed; write powers as **"),
    ("x & k", "'&' is not allowed"),
    ("x | k", "'|' is not allowed"),
    ("~x", "'~' is not allowed"),
    ("x << 1", "'<<' is not allowed"),
    ("x >> 1", "'>>' is not allowed"),
    ("x // 2", "'//' is not allowed"),
    ("sin", "'sin' is a function; call it"),
    ("x(2)", "'x' is not a function"),
    ("Symbol(k)", "the name 'Symbol' is not allowed"),
    ("Piecewise((x, x == 0), (k, True))", "the Piecewise condition 'x == 0' is not allowed "
     "(Python would read it as a bool); write Eq(a, b)"),
    ("Piecewise((x, x != 0), (k, True))", "the Piecewise condition 'x != 0' is not allowed "
     "(Python would read it as a bool); write Ne(a, b)"),
    ("Piecewise(x, (k, True))", "Piecewise takes (value, condition) pairs"),
    ("k*x # spring", "'#' is not allowed"),
    # SymPy would compute these exactly and never finish.
    ("k*x + 10**10**10", "the power '10**10**10' of a number has an exponent beyond 1000"),
    ("k*x*9**9**9**9", "the power '9**9**9**9' of a number has an exponent beyond 1000"),
])
def test_constructs_outside_the_expression_grammar_are_refused_by_name(rhs, refusal):
    with pytest.raises(physode.SystemDefinitionError) as info:
        system_from_spec(_one_state(f"'''{rhs}'''"), source="bad.toml")
    message = str(info.value)
    assert "in bad.toml (1 problem)" in message
    assert f"equation for x: {refusal}" in message


def test_powers_of_numbers_within_reason_and_any_power_of_a_symbol_still_parse():
    system = system_from_spec(_one_state('"x**2000 * (10**10)**10 + 2**(1/3) - k*x"'))
    assert system.equations["x"].has(x**2000)


def test_expressions_within_the_grammar_parse_as_before():
    rhs = "Piecewise((-k*x, x > 0), (Min(x, 1e-3), True)) + atan2(x, k)**2 - sqrt(pi)*E + -x"
    with pytest.warns(physode.PhysodeWarning, match="'E' .* is Euler's number"):
        system = system_from_spec(_one_state(f'"{rhs}"'))
    expected = (sympy.Piecewise((-k * x, x > 0), (sympy.Min(x, sympy.Float("1e-3")), True))
                + sympy.atan2(x, k) ** 2 - sympy.sqrt(sympy.pi) * sympy.E - x)
    assert sympy.simplify(system.equations["x"] - expected) == 0


@pytest.mark.parametrize("rhs, extra, problem", [
    ('"-k*(x"', "", "equation for x = '-k*(x' does not parse"),
    ('"x.foo"', "", "equation for x: attribute access 'x.foo' is not allowed"),
    ('"-k*x"', 'characteristic_time = "long"', "characteristic_time must be a positive number"),
    ('"-k*x"', "characteristic_time = true", "characteristic_time must be a positive number"),
    ('"-k*x"', "characteristic_time = inf", "characteristic_time must be a positive number"),
    ('"Piecewise((x, x > 0))"', "", "equation for x has a Piecewise without a default branch"),
])
def test_malformed_spec_values_are_problems_in_the_named_file(rhs, extra, problem):
    with pytest.raises(physode.SystemDefinitionError) as info:
        system_from_spec(_one_state(rhs, extra=extra), source="bad.toml")
    assert "in bad.toml (1 problem)" in str(info.value)
    assert problem in str(info.value)


def test_a_spec_file_that_is_not_utf8_is_a_problem_with_that_file(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes(_one_state('"-k*x"').replace("decay", "d\xe9cay").encode("latin-1"))
    for load in (physode.systems.load, physode.symbolic.system_from_file):
        with pytest.raises(physode.SystemDefinitionError,
                           match=f"(?s)in {re.escape(str(path))} .*not UTF-8 text \\(byte 0xe9"):
            load(path)


@pytest.mark.parametrize("rhs, k, extra, problem", [
    ("inf", "0.5", "", "equation for x = inf is not a finite number"),
    ("nan", "0.5", "", "equation for x = nan is not a finite number"),
    ('"1/0"', "0.5", "", "equation for x contains zoo, which is not a finite real number"),
    ('"-k*x"', "true", "", "parameter 'k' has value True, which is not a number"),
    ('"-k*x"', '"abc"', "", "parameter 'k' has value 'abc', which is not a number"),
    ('"-k*x"', '{ value = 0.5, range = ["a", 1] }', "", "parameter 'k' has range ['a', 1]"),
    ('"-k*x"', "0.5", 'n_coordinates = "1"', "n_coordinates must be an integer, got '1'"),
    ('"-k*x"', "0.5", "n_coordinates = true", "n_coordinates must be an integer, got True"),
])
def test_non_finite_and_non_numeric_values_are_refused(rhs, k, extra, problem):
    with pytest.raises(physode.SystemDefinitionError) as info:
        system_from_spec(_one_state(rhs, k=k, extra=extra), source="bad.toml")
    assert "in bad.toml (1 problem)" in str(info.value)
    assert problem in str(info.value)


# ---------------------------------------------------------------------- expressions from Python
@pytest.mark.parametrize("value, problem", [
    (None, "equation for x is None"),
    (y > 0, "equation for x is the relation y > 0, not an expression"),
    (sympy.Eq(y, 0), "equation for x is the relation Eq(y, 0), not an expression"),
    (True, "equation for x is the boolean True, not an expression"),
    (x / 0, "equation for x contains zoo, which is not a finite real number"),
    (sympy.nan, "equation for x contains nan, which is not a finite real number"),
    (sympy.sqrt(-2) * y, "equation for x contains I, which is not a finite real number"),
])
def test_an_equation_that_is_no_finite_real_expression_is_named(value, problem):
    with pytest.raises(physode.SystemDefinitionError, match="1 problem") as info:
        System.from_equations({x: value, y: -x}, {})
    assert problem in str(info.value)


def test_a_missing_lagrangian_or_hamiltonian_is_a_problem():
    with pytest.raises(physode.SystemDefinitionError, match="Lagrangian is None"):
        System.from_lagrangian(None, [x], {}, velocities=[v])
    with pytest.raises(physode.SystemDefinitionError, match="Hamiltonian is None"):
        System.from_hamiltonian(None, [x], [v], {})
    with pytest.raises(physode.SystemDefinitionError, match="Lagrangian is the relation"):
        System.from_lagrangian(v**2 > x, [x], {}, velocities=[v])


def test_unknown_symbols_in_a_lagrangian_are_listed_before_the_mass_matrix_is_checked():
    th, w, m_, g_, l_ = sympy.symbols("theta theta_dot m g l")
    lagrangian = m_ * l_**2 * w**2 / 2 + m_ * g_ * l_ * sympy.cos(th)
    with pytest.raises(physode.SystemDefinitionError, match="2 problems") as info:
        System.from_lagrangian(lagrangian, coordinates=[th], parameters={m_: 1.0})
    assert "symbol 'g' in the Lagrangian" in str(info.value)
    assert "symbol 'l' in the Lagrangian" in str(info.value)


def test_a_time_dependent_mass_is_checked_at_sample_times():
    system = System.from_lagrangian(sympy.exp(t) * v**2 / 2 - x**2 / 2, [x], {}, velocities=[v])
    # d/dt (exp(t) v) = -x
    assert system.equations["v"] == -v - x * sympy.exp(-t)


def test_an_attribute_error_inside_code_generation_is_not_reported_as_a_missing_attribute(
    monkeypatch,
):
    from physode.symbolic import _system

    def broken(*args, **kwargs):
        raise AttributeError("broken printer")

    import torch

    system = System.from_equations({x: -k * x}, {k: 1.0})
    monkeypatch.setattr(_system, "generate_sources", broken)
    with pytest.raises(AttributeError, match="broken printer"):
        system.rhs(0.0, torch.ones(1))


def test_a_constant_that_is_not_finite_and_real_names_its_output_in_code_generation():
    from physode.symbolic._codegen import generate_sources

    with pytest.raises(physode.SystemDefinitionError,
                       match="the equation for x contains the constant I, which is not a finite"):
        generate_sources([sympy.I * x], [x], [], t, "rhs", labels=["the equation for x"])
    with pytest.raises(physode.SystemDefinitionError, match="output 0 of rhs contains .*nan"):
        generate_sources([x + sympy.nan], [x], [], t, "rhs")


@pytest.mark.parametrize("kind, table", [
    ("orbit", {"position": ["x1", "y1"], "velocity": ["u1", "w1"], "mu": "mu",
               "radius": [0.5, 1.5]}),
    ("equilateral", {"positions": [["x1", "y1"], ["x2", "y2"]],
                     "velocities": [["u1", "w1"], ["u2", "w2"]], "masses": ["m1", "m2"],
                     "gravitational_constant": "mu", "radius": [0.5, 1.5]}),
])
@pytest.mark.parametrize("perturbation, ok", [(0.0, True), (0.4142, True), (0.4143, False),
                                              (0.9, False), (True, False)])
def test_orbital_distributions_refuse_perturbations_that_can_escape(kind, table, perturbation, ok):
    # A speed (1 + eps) times the circular one is bound only for eps < sqrt(2) - 1 = 0.41421...
    states = sympy.symbols("x1 y1 x2 y2 u1 w1 u2 w2")
    rhs = {s: sympy.Integer(0) for s in states}
    params = {"mu": 1.0, "m1": 1.0, "m2": 1.0}
    dist = {"kind": kind, **table, "velocity_perturbation": perturbation}
    if ok:
        system = System.from_equations(rhs, params, initial_state_distribution=dist)
        assert system.sample_initial_states(3).shape == (3, 8)
        return
    with pytest.raises(physode.SystemDefinitionError, match=r"perturbation must be in \[0, sqrt"):
        System.from_equations(rhs, params, initial_state_distribution=dist)


@pytest.mark.parametrize("name", ["E", "I", "S", "N", "beta", "gamma", "pi"])
def test_string_expressions_read_declared_names_not_sympy_constants(name):
    # Written as strings, these names are SymPy's constants and functions unless the
    # declared parameter takes their place: E*x would silently be 2.718*x.
    system = System.from_equations({"x": f"-{name}*x"}, {name: 0.5})
    assert system.equations == {"x": -sympy.Symbol(name) * x}
    dx = system.rhs(0.0, torch.tensor([2.0], dtype=torch.float64))
    assert dx.tolist() == [-1.0]


@pytest.mark.parametrize("expr, construct", [
    (sympy.Integral(x**2, x), "Integral"),
    (sympy.Sum(x**sympy.Symbol("n"), (sympy.Symbol("n"), 0, 3)), "Sum"),
    (sympy.Piecewise((x, (x > 0) & (x < 1)), (0, True)), "And"),
])
def test_constructs_without_torch_translation_are_refused_when_the_system_is_built(expr,
                                                                                  construct):
    with pytest.raises(physode.SystemDefinitionError,
                       match=f"equation for x uses function\\(s\\) {construct} that have no torch"):
        System.from_equations({x: expr}, {})


def test_a_matrix_is_refused_as_an_expression():
    with pytest.raises(physode.SystemDefinitionError, match="is the ImmutableDenseMatrix .*not an"):
        System.from_equations({x: sympy.Matrix([x])}, {})


def test_time_may_be_given_by_name_and_anything_else_is_reported():
    tau = sympy.Symbol("tau")
    system = System.from_equations({x: sympy.cos(tau)}, {}, time="tau")
    assert system.time_symbol == tau and system.time_dependent
    assert system.rhs(0.0, torch.zeros(1, dtype=torch.float64)).tolist() == [1.0]
    with pytest.raises(physode.SystemDefinitionError, match="time 3 must be a sympy.Symbol"):
        System.from_equations({x: tau}, {}, time=3)


@pytest.mark.parametrize("build", [
    lambda: System.from_lagrangian("theta_dot**2/2", "theta", {}),
    lambda: System.from_lagrangian("theta_dot**2/2", sympy.Symbol("theta"), {}),
    lambda: System.from_lagrangian("theta_dot**2/2", ["theta"], {}, velocities="theta_dot"),
    lambda: System.from_hamiltonian("p**2/2", ["q"], "p", {}),
])
def test_a_lone_name_where_a_list_belongs_is_refused_not_split_into_letters(build):
    with pytest.raises(physode.SystemDefinitionError) as info:
        build()
    message = str(info.value)
    assert "(1 problem)" in message and "must be a list of symbols or names" in message


def test_description_and_reference_must_be_text():
    spec = ('name = "a"\nform = "equations"\ndescription = 5\nreference = ["b"]\n'
            '[equations]\nx = "-x"')
    with pytest.raises(physode.SystemDefinitionError) as info:
        system_from_spec(spec)
    assert "description must be a string, got 5" in str(info.value)
    assert "reference must be a string, got ['b']" in str(info.value)


@pytest.mark.parametrize("table, message", [
    ("initial_states = 5", "initial_states must be a table"),
    ("[initial_states]\nrest = 5", "initial state 'rest' must give 1 finite numbers"),
    ("[initial_states]\nrest = [nan]", "initial state 'rest' must give 1 finite numbers"),
    ("[initial_states.rest]\nx = inf", "initial state 'rest' must give 1 finite numbers"),
])
def test_named_initial_states_must_be_lists_of_finite_numbers(table, message):
    spec = f'name = "a"\nform = "equations"\n{table}\n[equations]\nx = "-x"'
    with pytest.raises(physode.SystemDefinitionError, match=re.escape(message)):
        system_from_spec(spec)


@pytest.mark.parametrize("table, message", [
    ("[initial_states.rest]\nx = 0.0", "initial state 'rest': missing states ['v']; states: x, v"),
    ("[initial_states.rest]\nx = 0.0\nv = 1.0\nw = 2.0",
     "initial state 'rest': unknown names ['w']; states: x, v"),
])
def test_a_named_initial_state_says_only_what_is_wrong_with_its_names(table, message):
    spec = f'name = "a"\nform = "equations"\n{table}\n[equations]\nx = "v"\nv = "-x"'
    with pytest.raises(physode.SystemDefinitionError, match=re.escape(message)):
        system_from_spec(spec)


def test_a_python_keyword_used_as_a_name_is_explained():
    spec = ('name = "a"\nform = "equations"\n[parameters]\nlambda = 0.5\n'
            '[equations]\nx = "-lambda*x"')
    with pytest.raises(physode.SystemDefinitionError,
                       match="'lambda' is a Python keyword.*rename it \\(e.g. lambda_\\)"):
        system_from_spec(spec)


def test_a_specification_file_with_a_byte_order_mark_loads(tmp_path):
    file = tmp_path / "decay.toml"
    text = 'name = "decay"\nform = "equations"\n[equations]\nx = "-x"\n'
    file.write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert physode.systems.load(file).equations == {"x": -x}


_ORBIT = {"kind": "orbit", "position": ["x1", "y1"], "velocity": ["u1", "w1"], "mu": "mu",
          "radius": [0.5, 1.5]}
_EQUILATERAL = {"kind": "equilateral", "positions": [["x1", "y1"], ["x2", "y2"]],
                "velocities": [["u1", "w1"], ["u2", "w2"]], "masses": ["m1", "m2"],
                "gravitational_constant": "mu", "radius": [0.5, 1.5]}


@pytest.mark.parametrize("dist, message", [
    ({"kind": ["uniform"]}, "kind ['uniform'] is unknown; valid kinds: uniform"),
    ({"kind": "perturbed", "base": ["rest"], "std": 0.1}, "base ['rest'] is not a named"),
    ({**_ORBIT, "position": ["x1"]}, "needs position = [x, y] (names), got ['x1']"),
    ({**_ORBIT, "position": [["x1", "y1"]]}, "needs position = [x, y]"),
    ({**_ORBIT, "velocity": ["u1", "w1", "x2"]}, "needs velocity = [vx, vy]"),
    ({**_ORBIT, "mu": ["mu"]}, "needs mu = \"<parameter>\" (names), got ['mu']"),
    ({**_EQUILATERAL, "positions": ["x1", "y1"]}, "needs positions = [[x, y], ...]"),
    ({**_EQUILATERAL, "masses": [["m1"], ["m2"]]}, "needs masses = [m1, ...]"),
    ({**_EQUILATERAL, "gravitational_constant": ["mu"]}, "needs gravitational_constant = \"G\""),
])
def test_a_distribution_with_misshapen_names_is_a_problem_not_a_crash_when_sampling(dist, message):
    # These once raised TypeError while building, ValueError on sampling, or (a one-name
    # position) sampled states that were no orbit.
    states = sympy.symbols("x1 y1 x2 y2 u1 w1 u2 w2")
    rhs = {s: sympy.Integer(0) for s in states}
    params = {"mu": 1.0, "m1": 1.0, "m2": 1.0}
    with pytest.raises(physode.SystemDefinitionError, match=re.escape(message)):
        System.from_equations(rhs, params, initial_state_distribution=dist,
                              initial_states={"rest": [0.0] * 8})


@pytest.mark.parametrize("dist, repeated", [
    ({**_ORBIT, "velocity": ["x1", "w1"]}, ["x1"]),
    ({**_ORBIT, "position": ["x1", "x1"]}, ["x1"]),
    ({**_EQUILATERAL, "positions": [["x1", "y1"], ["x1", "y1"]]}, ["x1", "y1"]),
    ({**_EQUILATERAL, "velocities": [["u1", "w1"], ["u2", "x2"]]}, ["x2"]),
])
def test_an_orbital_distribution_that_names_a_state_twice_is_a_problem(dist, repeated):
    # Such a table was accepted: the second draw overwrote the first and the state meant for
    # it stayed 0 (two bodies of an equilateral start copied from one line put body 1 at the
    # wrong place and body 2 at rest at the origin).
    states = sympy.symbols("x1 y1 x2 y2 u1 w1 u2 w2")
    rhs = {s: sympy.Integer(0) for s in states}
    params = {"mu": 1.0, "m1": 1.0, "m2": 1.0}
    with pytest.raises(physode.SystemDefinitionError) as info:
        System.from_equations(rhs, params, initial_state_distribution=dist)
    for name in repeated:
        assert f"names the state {name!r} more than once" in str(info.value)
    assert str(info.value).count("more than once") == len(repeated)


def _by_symbol(value):
    """``value`` (a name or nested lists of names) with each name as a SymPy symbol."""
    if isinstance(value, list):
        return tuple(_by_symbol(item) for item in value)
    return sympy.Symbol(value)


@pytest.mark.parametrize("dist", [_ORBIT, _EQUILATERAL])
def test_an_orbital_distribution_may_name_its_states_and_parameters_by_symbol(dist):
    # As the keys of the other tables may: position=(x1, y1) was "needs position = [x, y]
    # (names), got (x1, y1)", and a tuple of names the same.
    states = sympy.symbols("x1 y1 x2 y2 u1 w1 u2 w2")
    rhs = {s: sympy.Integer(0) for s in states}
    params = {"mu": 1.0, "m1": 1.0, "m2": 2.0}
    by_symbol = {k: v if k in ("kind", "radius") else _by_symbol(v) for k, v in dist.items()}
    given = System.from_equations(rhs, params, initial_state_distribution=by_symbol)
    named = System.from_equations(rhs, params, initial_state_distribution=dist)
    torch.testing.assert_close(given.sample_initial_states(5, seed=2),
                               named.sample_initial_states(5, seed=2), rtol=0, atol=0)
    assert given.to_spec() == named.to_spec()


@pytest.mark.parametrize("seed", [2**64, -(2**63) - 1, 10**30])
def test_a_seed_beyond_what_torch_takes_is_refused_with_the_range(seed):
    # It raised torch's bare "ValueError: Overflow when unpacking long long".
    system = physode.systems.load("pendulum")
    for sample in (system.sample_initial_states, system.sample_parameters):
        with pytest.raises(physode.InvalidArgumentError,
                           match=rf"seed={seed} is out of range: .* -2\*\*63 to 2\*\*64 - 1"):
            sample(3, seed=seed)
    for edge in (2**64 - 1, -(2**63)):
        assert system.sample_initial_states(2, seed=edge).shape == (2, 2)


@pytest.mark.parametrize("build, message", [
    (lambda: System.from_equations({x: -k * x}, {k: 1.0}, invariants=["x"]),
     "invariants must be a mapping {name: expression}, got ['x']"),
    (lambda: System.from_equations({x: -k * x}, 5), "parameters must be a mapping"),
    (lambda: System.from_equations({x: -k * x}, {k: 1.0}, parameter_ranges=[(0, 2)]),
     "parameter_ranges must be a mapping {parameter: [low, high]}, got [(0, 2)]"),
    (lambda: System.from_lagrangian(v**2 / 2, [x], {}, velocities=[v], forces=3),
     "forces must be a mapping {coordinate: force} or a list of one force per coordinate"),
    (lambda: System.from_hamiltonian(v**2 / 2, [x], [v], {}, forces=3), "forces must be a"),
    (lambda: System.from_lagrangian(sympy.Function("q")(t).diff(t) ** 2 / 2,
                                    [sympy.Function("q")(t)], {}, velocities=[]),
     "0 velocities given for 1 coordinates"),
])
def test_arguments_of_the_wrong_kind_are_problems_not_tracebacks(build, message):
    # These raised AttributeError, TypeError or IndexError from inside the validation.
    with pytest.raises(physode.SystemDefinitionError, match=re.escape(message)):
        build()


@pytest.mark.parametrize("name", ["ℓ", "µ", "θ"])  # script l and micro sign: Python reads l, μ
def test_a_unicode_parameter_name_is_found_in_string_expressions(name):
    # Python reads names in their NFKC form, so 'ℓ' declared and 'ℓ' written did not match:
    # a NameError from inside SymPy, or "does not parse" in a specification file.
    built = System.from_equations({"x": f"-{name}*x"}, {name: 3.0})
    spec = (f'name = "u"\nform = "equations"\n[parameters]\n"{name}" = 3.0\n'
            f'[equations]\nx = "-{name}*x"\n')
    for system in (built, system_from_spec(spec)):
        assert system.equations["x"] == -sympy.Symbol(name) * sympy.Symbol("x")
        assert system.rhs(0.0, torch.tensor([2.0], dtype=torch.float64)).item() == -6.0


def test_names_that_an_expression_reads_as_one_are_used_twice():
    with pytest.raises(physode.SystemDefinitionError,
                       match="the names 'µ' \\(a parameter\\) and 'μ' \\(a parameter\\) read as"):
        System.from_equations({x: -x}, {"µ": 1.0, "μ": 2.0})


@pytest.mark.parametrize("table, message", [
    ('[parameters]\n"k-1" = 1.0\n[equations]\nx = "-x"', "parameter name 'k-1' is not a valid"),
    ('[equations]\nx = "-x"\n"2y" = "x"', "state name '2y' is not a valid identifier"),
])
def test_a_spec_name_that_is_no_identifier_is_reported(table, message):
    # Such a name was accepted without a word, and could never be used in an expression.
    with pytest.raises(physode.SystemDefinitionError, match=re.escape(message)):
        system_from_spec(f'name = "n"\nform = "equations"\n{table}\n')


@pytest.mark.parametrize("form", ["equations", "lagrangian", "hamiltonian"])
@pytest.mark.parametrize("name", ["m.1", "m 1", ""])
def test_a_sympy_symbol_whose_name_is_no_identifier_is_refused_when_defined(form, name):
    # Symbol("m.1") was accepted; system.vector_field() then failed with torch's KeyError
    # "parameter name can't contain '.'", and to_spec with "does not parse".
    p = sympy.Symbol(name)
    build = {
        "equations": lambda: System.from_equations({x: v, v: -p * x}, {p: 1.0}),
        "lagrangian": lambda: System.from_lagrangian(v**2 / 2 - p * x**2 / 2, [x], {p: 1.0},
                                                     velocities=[v]),
        "hamiltonian": lambda: System.from_hamiltonian(v**2 / 2 + p * x**2 / 2, [x], [v], {p: 1.0}),
    }[form]  # fmt: skip
    with pytest.raises(physode.SystemDefinitionError, match=r"\(1 problem\)") as info:
        build()
    assert f"parameter name {name!r} is not a valid identifier" in str(info.value)


def test_a_state_symbol_whose_name_is_no_identifier_is_refused():
    state = sympy.Symbol("x.1")
    with pytest.raises(physode.SystemDefinitionError, match="state name 'x.1' is not a valid"):
        System.from_equations({state: -k * state}, {k: 1.0})


@pytest.mark.parametrize("name", ["training", "forward", "to", "cuda", "parametrizations",
                                  "_parameters", "_names", "autonomous", "system"])  # fmt: skip
def test_a_parameter_named_as_a_torch_module_attribute_is_refused_when_defined(name):
    # Accepted until system.vector_field() raised; 'parametrizations' and '_names' not even
    # then (a parametrized parameter failed inside the solve, '_names' with torch's KeyError).
    message = f"parameter name {name!r} is taken by an attribute of the torch module"
    with pytest.raises(physode.SystemDefinitionError, match=re.escape(message)):
        System.from_equations({x: v, v: -sympy.Symbol(name) * x}, {name: 1.0})
    with pytest.raises(physode.SystemDefinitionError, match=re.escape(message)):
        system_from_spec(f'name = "n"\nform = "equations"\n[parameters]\n{name} = 1.0\n'
                         f'[equations]\nx = "v"\nv = "-{name}*x"\n')  # fmt: skip


_VAN_DER_POL = physode.systems.path("van_der_pol").read_text(encoding="utf-8")


@pytest.mark.parametrize("build", [
    lambda: System.from_equations({"x": "y", "y": "-4*x"}, {"mu": 1.0}, spec_text=_VAN_DER_POL),
    lambda: System.from_hamiltonian("p**2/2", ["q"], ["p"], spec_text=_VAN_DER_POL),
    lambda: System.from_lagrangian("v**2/2", ["x"], velocities=["v"], spec_text=_VAN_DER_POL),
])
def test_a_system_built_in_python_cannot_be_given_a_specification_text(build):
    # A data set stores spec_text to rebuild its system: a harmonic oscillator carrying the
    # Van der Pol file would have been stored as Van der Pol.
    with pytest.raises(physode.SystemDefinitionError, match="unknown option 'spec_text'"):
        build()


def test_spec_text_is_read_only_and_a_python_system_is_stored_as_its_to_spec(tmp_path):
    oscillator = System.from_equations({"x": "y", "y": "-4*x"}, {})
    with pytest.raises(AttributeError, match="spec_text of 'equations_system' is read-only"):
        oscillator.spec_text = _VAN_DER_POL
    assert oscillator.spec_text is None
    loaded = physode.systems.load("van_der_pol")
    with pytest.raises(AttributeError, match="read-only"):
        loaded.spec_text = "name = 'other'"
    assert loaded.spec_text == _VAN_DER_POL
    physode.data.simulate(oscillator, trajectories=2, t_end=1.0, points=3,
                          out=tmp_path / "oscillator.h5", quiet=True)
    assert physode.data.load(tmp_path / "oscillator.h5").system.spec_text == oscillator.to_spec()
    assert oscillator.spec_text is None


def test_a_system_from_a_specification_keeps_its_text_through_pickling():
    text = 'name = "decay"\nform = "equations"\n[equations]\nx = "-x"\n'
    system = pickle.loads(pickle.dumps(system_from_spec(text)))
    assert system.spec_text == text
    with pytest.raises(AttributeError, match="read-only"):
        system.spec_text = None


def _plain(expr: sympy.Expr) -> sympy.Expr:
    """``expr`` in plain symbols of the same names (a declared symbol keeps its assumptions)."""
    return expr.xreplace({s: sympy.Symbol(s.name) for s in expr.free_symbols})


def test_a_coordinate_declared_real_is_differentiated_as_one():
    # Matched by name, every symbol became a plain one: Abs(q) then differentiated into real and
    # imaginary parts, and no code could be generated for re(q).
    q, v = sympy.symbols("q v", real=True)
    k = sympy.Symbol("k")
    vee = System.from_lagrangian(v**2 / 2 - k * sympy.Abs(q), [q], {k: 2.0}, velocities=[v])
    y = torch.tensor([[0.5, 0.0], [-0.5, 0.0]], dtype=torch.float64)
    assert vee.rhs(0.0, y)[:, 1].tolist() == [-2.0, 2.0]


def test_symbols_declared_with_assumptions_are_matched_by_name():
    # real=True / positive=True are normal SymPy practice; they were reported as unknown symbols
    # (the default velocity is a plain symbol) plus a false singular mass matrix.
    th, w = sympy.symbols("theta theta_dot", real=True)
    m_, g_, l_ = sympy.symbols("m g l", positive=True)
    pend = System.from_lagrangian(m_ * l_**2 * w**2 / 2 + m_ * g_ * l_ * sympy.cos(th),
                                  coordinates=[th], parameters={m_: 1.0, g_: 9.81, l_: 1.0})
    plain_th, plain_g, plain_l = sympy.symbols("theta g l")
    assert _plain(pend.equations["theta_dot"]) == -plain_g * sympy.sin(plain_th) / plain_l
    y = torch.tensor([0.5, 0.0], dtype=torch.float64)
    assert pend.rhs(0.0, y)[1].item() == pytest.approx(-9.81 * math.sin(0.5), rel=1e-14)


@pytest.mark.parametrize("coordinates, momenta", [(["q"], ["p"]), ("symbols", "symbols")])
def test_a_hamiltonian_in_real_and_positive_symbols_builds_by_name(coordinates, momenta):
    q, p = sympy.symbols("q p", real=True)
    k_ = sympy.Symbol("k", positive=True)
    if coordinates == "symbols":
        coordinates, momenta = [q], [p]
    osc = System.from_hamiltonian(p**2 / 2 + k_ * q**2 / 2, coordinates, momenta, {"k": 4.0})
    equations = {name: _plain(expr) for name, expr in osc.equations.items()}
    assert equations == {"q": sympy.Symbol("p"), "p": -sympy.Symbol("k") * sympy.Symbol("q")}
    assert osc.invariants(torch.tensor([1.0, 0.0], dtype=torch.float64))["energy"].item() == 2.0


def test_a_real_time_and_symbols_with_assumptions_in_forces_dissipation_and_invariants():
    t_real = sympy.Symbol("t", real=True)
    x_, v_ = sympy.symbols("x v", real=True)
    c_, k_ = sympy.symbols("c k", positive=True)
    forced = System.from_lagrangian(
        v_**2 / 2 - k_ * x_**2 / 2, ["x"], {"k": 1.0, "c": 0.5}, velocities=["v"], time=t_real,
        dissipation=c_ * v_**2 / 2, forces={x_: sympy.cos(t_real)},
    )
    assert forced.time_dependent
    assert forced.rhs(math.pi, torch.tensor([1.0, 2.0], dtype=torch.float64))[1].item() == (
        pytest.approx(-1.0 - 1.0 - 1.0, rel=1e-14)
    )
    equations = System.from_equations({x_: v_, v_: -k_ * x_}, {k_: 2.0}, time=t_real,
                                      invariants={"energy": v_**2 / 2 + k_ * x_**2 / 2})
    assert equations.energy(torch.tensor([1.0, 1.0], dtype=torch.float64)).item() == 1.5
    q_of_t = sympy.Function("q")(t_real)
    dynamic = System.from_lagrangian(q_of_t.diff(t_real) ** 2 / 2 - k_ * q_of_t**2 / 2, [q_of_t],
                                     {k_: 1.0}, time=t_real, forces={q_of_t: sympy.cos(t_real)})
    assert _plain(dynamic.equations["q_dot"]) == (
        -sympy.Symbol("k") * sympy.Symbol("q") + sympy.cos(sympy.Symbol("t"))
    )


def test_two_different_symbols_of_one_name_in_an_expression_are_reported():
    x_real, x_positive = sympy.Symbol("x", real=True), sympy.Symbol("x", positive=True)
    with pytest.raises(physode.SystemDefinitionError, match="1 problem") as info:
        System.from_equations({"x": x_real - x_positive}, {})
    assert ("the equation for x holds different symbols named 'x' (Symbol('x', positive=True), "
            "Symbol('x', real=True))") in str(info.value)


def _decay(path: str, declared: str, written: str) -> System:
    """``dx/dt = -<written>*x`` with the parameter ``<declared>`` = 3, built in Python or from a
    specification file."""
    if path == "python":
        return System.from_equations({"x": f"-{written}*x"}, {declared: 3.0},
                                     invariants={"scaled": f"{written}*x"})
    return system_from_spec(
        f'name = "u"\nform = "equations"\n[parameters]\n"{declared}" = 3.0\n'
        f'[equations]\nx = "-{written}*x"\n[invariants]\nscaled = "{written}*x"\n'
    )


@pytest.mark.parametrize("path", ["python", "spec"])
@pytest.mark.parametrize("declared, written", [
    ("l", "ℓ"), ("ℓ", "l"), ("μ", "µ"), ("µ", "μ"),  # script l; micro sign and Greek mu
])
def test_names_that_python_reads_as_one_match_either_way_in_both_paths(path, declared, written):
    # An expression written with 'ℓ' did not find the parameter 'l' ("neither a state nor a
    # parameter"), while the other direction worked: only declared names were read as Python
    # reads them.
    system = _decay(path, declared, written)
    assert system.equations["x"] == -sympy.Symbol(declared) * sympy.Symbol("x")
    y = torch.tensor([2.0], dtype=torch.float64)
    assert system.rhs(0.0, y).item() == -6.0
    assert system.invariants(y)["scaled"].item() == 6.0


@pytest.mark.parametrize("path", ["python", "spec"])
def test_a_superscript_is_not_read_as_a_digit_of_a_name(path):
    with pytest.raises(physode.SystemDefinitionError, match="equation for x"):
        _decay(path, "x2", "x²")


_SHARED_OPTIONS = ["name", "description", "reference", "parameter_ranges",
                   "initial_state_distribution", "initial_states", "characteristic_time"]


@pytest.mark.parametrize("build, constructor, own, typo, meant", [
    (lambda **o: System.from_lagrangian(v**2 / 2, [x], {}, velocities=[v], **o),
     "from_lagrangian", ["lagrangian", "coordinates", "parameters", "velocities", "time",
                         "dissipation", "forces", "invariants", "mass_matrix"],
     "dissipaton", "dissipation"),
    (lambda **o: System.from_hamiltonian(v**2 / 2, [x], [v], {}, **o),
     "from_hamiltonian", ["hamiltonian", "coordinates", "momenta", "parameters", "time",
                          "forces", "invariants"],
     "momentum", "momenta"),
    (lambda **o: System.from_equations({x: -x}, {}, **o),
     "from_equations", ["rhs", "parameters", "time", "invariants", "n_coordinates"],
     "n_coordinate", "n_coordinates"),
])
def test_an_unknown_option_lists_exactly_what_that_constructor_takes(build, constructor, own,
                                                                     typo, meant):
    # The list was the shared options plus 'spec_text', without the constructor's own
    # arguments such as dissipation, forces or n_coordinates.
    with pytest.raises(physode.SystemDefinitionError, match="1 problem") as info:
        build(**{typo: 1})
    expected = (f"unknown option {typo!r} (did you mean {meant!r}?); System.{constructor} "
                f"takes: {', '.join(own + _SHARED_OPTIONS)}")
    assert str(info.value).endswith(expected)


def test_an_unknown_option_far_from_every_name_gets_no_suggestion():
    with pytest.raises(physode.SystemDefinitionError,
                       match="unknown option 'zzz'; System.from_equations takes: rhs,"):
        System.from_equations({x: -x}, {}, zzz=1)


@pytest.mark.parametrize("path", ["python", "spec"])
@pytest.mark.parametrize("name, role", [
    ("lambda", "parameter"), ("in", "parameter"), ("lambda", "state"), ("None", "parameter"),
])
def test_a_python_keyword_declared_and_used_as_a_name_is_explained_in_both_paths(path, name,
                                                                                 role):
    # From Python this was SymPy's raw parser error; an operator keyword such as 'in' was not
    # explained in a specification file either.
    if role == "parameter":
        rhs, parameters = {"x": f"-{name}*x"}, {name: 2.0}
    else:
        rhs, parameters = {name: "-x", "x": f"{name}"}, {}
    if path == "python":
        build = functools.partial(System.from_equations, rhs, parameters)
    else:
        table = "".join(f'"{k}" = {value}\n' for k, value in parameters.items())
        equations = "".join(f'"{k}" = "{value}"\n' for k, value in rhs.items())
        build = functools.partial(system_from_spec, f'name = "k"\nform = "equations"\n'
                                  f'[parameters]\n{table}[equations]\n{equations}')
    with pytest.raises(physode.SystemDefinitionError, match="1 problem") as info:
        build()
    assert (f"{name!r} is a Python keyword, which cannot be a name in an expression; rename it "
            f"(e.g. {name}_)") in str(info.value)


def test_a_symbol_named_like_a_keyword_still_works_in_sympy_expressions():
    lam = sympy.Symbol("lambda")
    decay = System.from_equations({x: -lam * x}, {"lambda": 2.0})
    assert decay.rhs(0.0, torch.tensor([1.5], dtype=torch.float64)).item() == -3.0


@pytest.mark.parametrize("form, body, missing", [
    ("lagrangian", 'coordinates = ["x"]', "lagrangian"),
    ("hamiltonian", 'coordinates = ["x"]\nmomenta = ["p"]', "hamiltonian"),
])
def test_a_missing_lagrangian_or_hamiltonian_in_a_file_is_its_only_problem(form, body, missing):
    # A missing Lagrangian was read as 0, adding "the mass matrix is singular".
    with pytest.raises(physode.SystemDefinitionError, match="1 problem") as info:
        system_from_spec(f'name = "m"\nform = "{form}"\n{body}\n')
    assert f"missing required key {missing!r}" in str(info.value)



@pytest.mark.parametrize("body, problem", [
    ('equations = "-x"', "[equations] must be a table of state = expression, got '-x'"),
    ("equations = 3", "[equations] must be a table of state = expression, got 3"),
    ("[equations]", "[equations] must hold at least one state = expression"),
    ("", "missing required key 'equations'"),
])
def test_a_missing_empty_or_malformed_equations_table_is_its_only_problem(body, problem):
    # Each also said (or said only) "rhs must be a non-empty mapping {state: expression}": the
    # name of from_equations' argument, which a file does not have.
    with pytest.raises(physode.SystemDefinitionError, match="1 problem") as info:
        system_from_spec(f'name = "m"\nform = "equations"\n{body}\n')
    assert problem in str(info.value) and "rhs" not in str(info.value)
    with pytest.raises(physode.SystemDefinitionError, match="rhs must be a non-empty mapping"):
        System.from_equations({}, {})


@pytest.mark.parametrize("form, body, problem", [
    ("hamiltonian", 'coordinates = ["q"]\nhamiltonian = "p**2/2 + q**2/2"',
     "missing required key 'momenta'"),
    ("hamiltonian", 'momenta = ["p"]\nhamiltonian = "p**2/2"',
     "missing required key 'coordinates'"),
    ("lagrangian", 'lagrangian = "q_dot**2/2"', "missing required key 'coordinates'"),
    ("lagrangian", 'coordinates = "q"\nlagrangian = "q_dot**2/2"',
     """coordinates must be a list of names, got 'q'; write coordinates = ["q"]"""),
    ("hamiltonian", 'coordinates = ["q"]\nmomenta = "p"\nhamiltonian = "p**2/2"',
     "momenta must be a list of names, got 'p'"),
    ("lagrangian", 'coordinates = ["q"]\nvelocities = [1]\nlagrangian = "q_dot**2/2"',
     "velocities must be a list of names, got [1]"),
])
def test_a_missing_or_malformed_list_in_a_file_is_its_only_problem(form, body, problem):
    # Each was followed by a count of the list it lacked ("0 momenta given for 1 coordinates",
    # "a Lagrangian system needs at least one coordinate").
    with pytest.raises(physode.SystemDefinitionError, match="1 problem") as info:
        system_from_spec(f'name = "m"\nform = "{form}"\n{body}\n')
    assert problem in str(info.value)


def test_a_velocity_listed_as_a_coordinate_is_reported_without_a_singular_mass_matrix():
    # Its own velocity 'theta_dot_dot' has no kinetic term, which was reported as well.
    th, w = sympy.symbols("theta theta_dot")
    with pytest.raises(physode.SystemDefinitionError, match="1 problem") as info:
        System.from_lagrangian(w**2 / 2 + g * sympy.cos(th), [th, w], {g: 9.81})
    assert "the name 'theta_dot' is used twice (as a coordinate and as a velocity)" in str(
        info.value)


def test_no_coordinates_are_not_also_counted_against_the_momenta():
    with pytest.raises(physode.SystemDefinitionError, match="1 problem") as info:
        System.from_hamiltonian(v**2 / 2, [], [v])
    assert "a Hamiltonian system needs at least one coordinate" in str(info.value)

def test_a_misspelt_coordinate_is_reported_with_a_suggestion_and_no_singular_mass_matrix():
    with pytest.raises(physode.SystemDefinitionError, match="2 problems") as info:
        System.from_lagrangian("theta_dot**2/2 + cos(theta)", coordinates=["thta"])
    message = str(info.value)
    assert ("symbol 'theta' in the Lagrangian is neither a coordinate, a velocity nor a "
            "parameter (did you mean 'thta'?)") in message
    assert "symbol 'theta_dot' in the Lagrangian" in message
    assert "(did you mean 'thta_dot'?)" in message
    assert "mass matrix" not in message


def test_a_derivative_in_a_lagrangian_is_not_followed_by_a_singular_mass_matrix():
    q = sympy.Function("q")(t)
    with pytest.raises(physode.SystemDefinitionError, match="1 problem") as info:
        System.from_lagrangian(q.diff(t) ** 2 / 2, [x], {}, velocities=[v])
    assert ("Lagrangian holds q(t), a function of time that is not declared: list 'q' among "
            "the coordinates") in str(info.value)


def test_a_singular_mass_matrix_is_still_reported_when_every_symbol_is_known():
    with pytest.raises(physode.SystemDefinitionError, match="1 problem") as info:
        System.from_lagrangian("x_dot*x - x**2/2", coordinates=["x"])
    assert "coordinate 'x' has no kinetic term" in str(info.value)


def test_an_undeclared_symbol_with_no_close_name_lists_the_declared_names():
    # A forgotten parameter ('g', nothing close to it) was named without the names declared or
    # how to declare it.
    with pytest.raises(physode.SystemDefinitionError, match="1 problem") as info:
        System.from_lagrangian("m*l**2*theta_dot**2/2 + m*g*l*cos(theta)", ["theta"],
                               {"m": 1.0, "l": 1.0})
    assert ("symbol 'g' in the Lagrangian is neither a coordinate, a velocity nor a parameter; "
            "if it is a parameter, give it a value in the parameters (declared names: l, m, t, "
            "theta, theta_dot)") in str(info.value)


@pytest.mark.parametrize("form, expression, partner, other", [
    ("lagrangian", "p**2/(2*m) + k*q**2/2", "velocities (q_dot)", "System.from_hamiltonian"),
    ("hamiltonian", "m*q_dot**2/2 - k*q**2/2", "momenta (p)", "System.from_lagrangian"),
])
def test_a_hamiltonian_given_as_a_lagrangian_or_back_is_named_as_such(
    form, expression, partner, other
):
    # Only the unknown symbol ('p' or 'q_dot') was reported, not the likely cause.
    body = 'momenta = ["p"]\nhamiltonian' if form == "hamiltonian" else "lagrangian"
    spec = (f'name = "s"\nform = "{form}"\ncoordinates = ["q"]\n{body} = "{expression}"\n'
            "[parameters]\nm = 1.0\nk = 1.0\n")
    with pytest.raises(physode.SystemDefinitionError, match="2 problems") as info:
        system_from_spec(spec)
    assert f"holds none of the {partner}" in str(info.value)
    assert other in str(info.value)


def test_a_lagrangian_without_velocities_but_with_known_symbols_only_is_a_singular_one():
    # The form hint is given only alongside an unknown symbol.
    with pytest.raises(physode.SystemDefinitionError, match="1 problem") as info:
        System.from_lagrangian("-q**2/2", ["q"])
    assert "holds none of" not in str(info.value)
    assert "mass matrix is singular" in str(info.value)


@pytest.mark.parametrize("potential", [
    sympy.Lambda(x, x**2 / 2),       # bound variable only: was read as a constant
    sympy.Lambda(x, k * x**2 / 2),
])
def test_an_unapplied_lambda_is_refused_instead_of_read_as_a_constant(potential):
    # L = v**2/2 - Lambda(x, x**2/2) built a free particle (dv/dt = 0) without an error.
    with pytest.raises(physode.SystemDefinitionError, match="1 problem") as info:
        System.from_lagrangian(v**2 / 2 - potential, [x], {k: 1.0}, velocities=[v])
    assert "holds the function Lambda(x, " in str(info.value)
    assert "V(x) for V = Lambda(x, ...)" in str(info.value)


def test_a_lambda_string_is_refused():
    # 'lambda: 1' parsed to Lambda((), 1), then failed in rhs with "Cannot convert expression".
    with pytest.raises(physode.SystemDefinitionError, match="holds the function Lambda"):
        System.from_equations({"x": "lambda: 1"})


@pytest.mark.parametrize("lines, expected", [
    # A file without 'form' was told "form = None".
    ([], "missing required key 'form'; valid forms: lagrangian, hamiltonian, equations"),
    (['form = "hamiltonion"'], "(did you mean 'hamiltonian'?)"),
    (['form = "lagrangian"', 'coordinates = ["q"]', 'lagrangian = "q_dot**2/2"',
      'invariant = "q"'], "unknown key 'invariant' for form 'lagrangian' (did you mean "
                          "'invariants'?)"),
    (['form = "lagrangian"', 'coordinates = ["q"]', 'hamiltonian = "p**2/2"'],
     "unknown key 'hamiltonian' for form 'lagrangian' ('hamiltonian' is a key of form "
     "'hamiltonian')"),
])
def test_a_spec_files_form_and_keys_come_with_the_closest_valid_name(lines, expected):
    with pytest.raises(physode.SystemDefinitionError) as info:
        system_from_spec("\n".join(['name = "s"', *lines]) + "\n")
    assert expected in str(info.value)


def test_a_parameter_table_without_a_value_in_a_file_is_told_the_file_syntax():
    # The hint was Python's "{g: 1.0}", which is no TOML.
    spec = ('name = "p"\nform = "equations"\n[equations]\nx = "-g*x"\n'
            "[parameters]\ng = { range = [9.0, 10.0] }\n")
    with pytest.raises(physode.SystemDefinitionError, match="1 problem") as info:
        system_from_spec(spec)
    assert ("parameter 'g' has no value; add one to its table, e.g. "
            "g = { value = 1.0, range = ... }") in str(info.value)


@pytest.mark.parametrize("path, where, text", [
    ("python", "equation for x", "-k*x ^ 2"),
    ("spec", "equation for x", "-k*x ^ 2"),
    ("dynamicsymbols", "Lagrangian", "q(t).diff(t)^2/2 - k*q(t)^2/2"),
])
def test_a_caret_is_refused_with_one_message_from_python_and_in_a_file(path, where, text):
    # From Python, SymPy read '^' as a power (-k*x**2) while a file refused it: one text, two
    # meanings. Now both refuse it, with the same problem.
    if path == "python":
        build = functools.partial(System.from_equations, {"x": text}, {"k": 1.0})
    elif path == "spec":
        build = functools.partial(system_from_spec, _one_state(f'"{text}"'))
    else:
        q = sympy.Function("q")(t)
        build = functools.partial(System.from_lagrangian, text, [q], {"k": 1.0})
    with pytest.raises(physode.SystemDefinitionError, match="1 problem") as info:
        build()
    assert (f"{where}: '^' is not allowed; write powers as ** (Python reads '^' as exclusive "
            "or)") in str(info.value)


@pytest.mark.parametrize("relation, text", [
    ("Eq", "Piecewise((0, x == 0), (1 - k*x, True))"),
    ("Ne", "Piecewise((0, x != 0), (1 - k*x, True))"),
])
def test_equality_in_an_expression_string_is_refused_for_the_relation(relation, text):
    # SymPy evaluated x == 0 as Python at once, to False (x != 0 to True): the branch was
    # silently dropped (1 - k*x) or always taken (0). Eq and Ne are the relations, in a file too.
    with pytest.raises(physode.SystemDefinitionError, match="1 problem") as info:
        System.from_equations({"x": text}, {"k": 1.0})
    assert f"equation for x: '{'==' if relation == 'Eq' else '!='}' is not allowed" in str(
        info.value)
    assert f"write {relation}(a, b)" in str(info.value)
    written = text.replace("x == 0", "Eq(x, 0)").replace("x != 0", "Ne(x, 0)")
    y = torch.tensor([[0.0], [2.0]], dtype=torch.float64)
    expected = [[0.0], [-1.0]] if relation == "Eq" else [[1.0], [0.0]]  # at x = 0 and x = 2
    for system in (System.from_equations({"x": written}, {"k": 1.0}),
                   system_from_spec(_one_state(f'"{written}"', k="1.0"))):
        assert system.rhs(0.0, y).tolist() == expected


@pytest.mark.parametrize("dist, params, message", [
    (_ORBIT, {"mu": -1.0}, "orbit distribution needs mu >= 0 for the circular speed"
     " sqrt(mu / r); got mu = -1"),
    (_ORBIT, {"mu": math.nan}, "got mu = nan"),
    (_EQUILATERAL, {"mu": -1.0}, "equilateral distribution needs gravitational_constant mu >= 0"
     " for the circular speed sqrt(mu m S / r); got mu = -1"),
    (_EQUILATERAL, {"m2": -1.0}, "equilateral distribution needs masses >= 0 with a positive"
     " total; got m2 = -1"),
    (_EQUILATERAL, {"m1": 0.0, "m2": 0.0}, "got m1 + m2 = 0"),
])
def test_an_orbital_distribution_refuses_parameters_that_make_no_orbit(dist, params, message):
    # A negative mu or G took the square root of a negative number and sampled NaN velocities
    # without a word; masses summing to 0 made the centre of mass NaN.
    states = sympy.symbols("x1 y1 x2 y2 u1 w1 u2 w2")
    rhs = {s: sympy.Integer(0) for s in states}
    system = System.from_equations(rhs, {"mu": 1.0, "m1": 1.0, "m2": 1.0},
                                   initial_state_distribution=dist)
    p = torch.tensor([system.parameters[k] for k in system.parameters], dtype=torch.float64)
    p = p.repeat(3, 1)
    for name, value in params.items():
        p[0, list(system.parameters).index(name)] = value
    with pytest.raises(physode.InvalidArgumentError, match=re.escape(message)):
        system.sample_initial_states(3, p=p)
    assert torch.isfinite(system.sample_initial_states(3, p=p[1:2].expand(3, -1))).all()


def test_one_row_of_parameters_broadcasts_to_every_sampled_state():
    # p of shape (1, n_params) was refused: "p has shape (1, 4); give (4,) or (5, 4)".
    three_body = physode.systems.load("three_body")
    p = torch.tensor([1.0, 2.0, 3.0, 0.5], dtype=torch.float64)
    expected = three_body.sample_initial_states(5, seed=3, p=p.expand(5, 4))
    assert torch.equal(three_body.sample_initial_states(5, seed=3, p=p[None]), expected)
    assert torch.equal(three_body.sample_initial_states(5, seed=3, p=p), expected)
    assert not torch.equal(three_body.sample_initial_states(5, seed=3), expected)


def test_parameters_of_another_number_of_rows_are_refused_with_the_shapes_taken():
    three_body = physode.systems.load("three_body")
    with pytest.raises(physode.InvalidArgumentError) as error:
        three_body.sample_initial_states(5, p=torch.ones(2, 4))
    assert str(error.value) == (
        "p has shape (2, 4); give (4,) or (1, 4) for every sample, or (5, 4), for parameters "
        "['m1', 'm2', 'm3', 'G']"
    )


@pytest.mark.parametrize("p, message", [
    ({"mu": 2.0}, "p is a dict; kepler needs a tensor or a list of numbers (..., 1)"),
    (["2.0"], "p=['2.0'] is not a tensor or a list of real numbers; kepler needs (..., 1)"),
    ([True], "p=[True] is not a tensor or a list of real numbers"),
    (torch.tensor([True]), "p has dtype torch.bool; the parameters ['mu'] of kepler are real"),
    (torch.tensor([2.0 + 1.0j]), "p has dtype torch.complex64; the parameters ['mu'] of kepler"),
])
def test_sampling_refuses_parameters_that_are_not_real_numbers_as_rhs_does(p, message):
    # A dict gave torch's "must be real number, not dict" and a string "too many dimensions
    # 'str'"; True drew orbits of mu = 1 and 2 + 1j orbits of mu = 2 without a word.
    kepler = physode.systems.load("kepler")
    with pytest.raises(physode.InvalidArgumentError, match=re.escape(message)):
        kepler.sample_initial_states(3, p=p)
    expected = kepler.sample_initial_states(3, seed=1, p=torch.tensor([2.0], dtype=torch.float64))
    for numbers in ([2.0], (2,), [[2.0]], torch.tensor([2.0])):
        assert torch.equal(kepler.sample_initial_states(3, seed=1, p=numbers), expected)


def test_the_catalogues_orbital_systems_refuse_a_negative_mu_or_g():
    kepler = physode.systems.load("kepler")
    with pytest.raises(physode.InvalidArgumentError, match="got mu = -1"):
        kepler.sample_initial_states(2, p=[-1.0])
    three_body = physode.systems.load("three_body")
    with pytest.raises(physode.InvalidArgumentError, match="got G = -1"):
        three_body.sample_initial_states(2, p=[1.0, 1.0, 1.0, -1.0])
