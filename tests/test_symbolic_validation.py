"""Validation: every problem in a system definition is reported, each naming its symbol."""

from __future__ import annotations

import pytest
import sympy

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


def test_unknown_catalogue_name_lists_the_valid_names():
    with pytest.raises(physode.InvalidArgumentError, match="system 'thre_body'.*three_body"):
        physode.systems.load("thre_body")


def test_missing_spec_path_is_an_invalid_argument(tmp_path):
    with pytest.raises(physode.InvalidArgumentError, match="no specification file"):
        physode.systems.load(tmp_path / "nothing.toml")


def test_unknown_learnable_parameter_lists_the_valid_ones():
    system = physode.systems.load("pendulum")
    with pytest.raises(physode.InvalidArgumentError, match=r"\['mass'\].*\['m', 'g', 'l'\]"):
        system.vector_field(learnable=["mass"])


def test_wrong_state_size_names_the_expected_states():
    import torch

    with pytest.raises(physode.InvalidArgumentError, match="needs \\(..., 2\\) with states"):
        physode.systems.load("pendulum").rhs(0.0, torch.zeros(3))
