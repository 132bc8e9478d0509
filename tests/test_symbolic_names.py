"""Names in expression strings that SymPy would read as something the user did not mean: an
undeclared ``E`` (Euler's number) is said, loudly but without failing, from Python and from a
specification file, also for a system taken from the on-disk cache."""

from __future__ import annotations

import math
import warnings

import pytest
import sympy
import torch

import physode
import physode.systems
from physode.cli import main
from physode.symbolic import System, _cache, system_from_spec

F64 = torch.float64


def _warnings(build):
    """What ``build()`` returns, and the physode warnings it gave (every one, none filtered)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = build()
    return result, [w for w in caught if issubclass(w.category, physode.PhysodeWarning)]


def _spec(equation: str, parameters: str = "", invariant: str | None = None) -> str:
    text = f'name = "growth"\nform = "equations"\n[parameters]\n{parameters}\n'
    text += f'[equations]\nx = "{equation}"\n'
    if invariant is not None:
        text += f'[invariants]\nsize = "{invariant}"\n'
    return text


@pytest.mark.parametrize("build, places", [
    (lambda: System.from_equations({"x": "-E*x", "y": "E*y"}, {"k": 1.0},
                                   invariants={"c": "E*x*y"}, name="pair"),
     "equation for x, equation for y, invariant 'c'"),
    (lambda: System.from_lagrangian("x_dot**2/2 - E*x**2/2", ["x"], {}, name="pair"),
     "Lagrangian"),
    (lambda: System.from_hamiltonian("p**2/2 + E*x**2/2", ["x"], ["p"], {}, name="pair"),
     "Hamiltonian"),
])
def test_an_undeclared_E_in_a_python_string_is_said_once_per_system(build, places):
    system, said = _warnings(build)
    assert len(said) == 1, [str(w.message) for w in said]
    message = str(said[0].message)
    assert message.startswith(f"system 'pair': 'E' (in {places}) is Euler's number e = 2.718")
    assert "declare it in the parameters" in message and "write exp(1)" in message
    assert said[0].filename == __file__  # the user's line, not one inside physode
    # It is still Euler's number: the warning changes nothing the system computes.
    assert sympy.E in system.equations[system.state_names[-1]].atoms(sympy.NumberSymbol)


def test_a_warning_names_three_places_and_counts_the_rest():
    equations = {f"x{i}": f"-E*x{i}" for i in range(5)}
    _, said = _warnings(lambda: System.from_equations(equations, {}))
    assert len(said) == 1
    assert "'E' (in equation for x0, equation for x1, equation for x2 and 2 more) is" in str(
        said[0].message
    )


@pytest.mark.parametrize("equation, parameters, rate", [
    ("-E*x", {"E": 2.0}, 2.0),                        # declared: the parameter
    ("-exp(1)*x", {}, math.e),                        # e on purpose
    ("-Ek*x - E0*x", {"Ek": 1.0, "E0": 0.5}, 1.5),    # names that merely start with E
    ("-2E3*x", {}, 2000.0),                           # a number
    (-sympy.E * sympy.Symbol("x"), {}, math.e),       # a SymPy expression says what it means
])
def test_no_warning_where_E_is_declared_or_meant(equation, parameters, rate):
    system, said = _warnings(lambda: System.from_equations({"x": equation}, parameters))
    assert said == []
    assert -system.rhs(0.0, torch.tensor([1.0], dtype=F64)).item() == pytest.approx(rate)


def test_sympy_constants_other_than_pi_are_said_in_python_strings():
    _, said = _warnings(lambda: System.from_equations({"x": "-EulerGamma*x + pi"}, {}))
    assert len(said) == 1
    message = str(said[0].message)
    assert "'EulerGamma' (in equation for x) is the Euler-Mascheroni constant" in message
    assert "sympy.EulerGamma" in message and "'pi'" not in message


def test_a_failed_definition_raises_without_warning_of_E():
    with warnings.catch_warnings():
        warnings.simplefilter("error", physode.PhysodeWarning)
        with pytest.raises(physode.SystemDefinitionError, match="symbol 'c'"):
            System.from_equations({"x": "-E*x - c"}, {})


def test_an_undeclared_E_in_a_specification_is_said_once_naming_parameters_table():
    system, said = _warnings(lambda: system_from_spec(_spec("-E*x", invariant="E*x")))
    assert len(said) == 1
    message = str(said[0].message)
    # Both places, in the order the file is read.
    assert message.startswith("system 'growth': 'E' (in invariant 'size', equation for x) is "
                              "Euler's number")
    assert "declare it in [parameters]" in message
    assert system.rhs(0.0, torch.tensor([1.0], dtype=F64)).item() == pytest.approx(-math.e)


def test_a_declared_E_in_a_specification_is_the_parameter_without_warning():
    system, said = _warnings(lambda: system_from_spec(_spec("-E*x", "E = { value = 2.0 }")))
    assert said == []
    assert system.rhs(0.0, torch.tensor([1.0], dtype=F64)).item() == -2.0


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(_cache.ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_a_system_from_the_disk_cache_still_warns_of_E(cache_dir, tmp_path):
    spec = tmp_path / "growth.toml"
    spec.write_text(_spec("-E*x", invariant="E*x"))
    physode.systems.clear_cache()  # the process's own cache, in any order of tests
    first, said = _warnings(lambda: physode.systems.load(spec))
    assert len(said) == 1 and len(list(cache_dir.iterdir())) == 1
    physode.systems._from_text.cache_clear()  # as a new process: only the disk cache is left
    second, said_again = _warnings(lambda: physode.systems.load(spec))
    assert second is not first  # taken from the disk, not parsed again
    assert [str(w.message) for w in said_again] == [str(w.message) for w in said]
    assert said_again[0].filename == __file__


@pytest.mark.parametrize("text", ["-k*x^2", "-k*x ^ 2", "x^2"])
def test_a_caret_is_refused_with_its_fix_from_python_and_in_a_file(text):
    # SymPy alone would read x^2 as x**2, Python (and so a file) as exclusive or: refused in both.
    with pytest.raises(physode.SystemDefinitionError, match=r"'\^' is not allowed; write powers"):
        System.from_equations({"x": text}, {"k": 1.0})
    with pytest.raises(physode.SystemDefinitionError, match=r"'\^' is not allowed; write powers"):
        system_from_spec(_spec(text, "k = { value = 1.0 }"))


@pytest.mark.parametrize("text, refusal", [
    # SymPy evaluates a power of numbers exactly: from Python, 10**10**10*x never finished, while
    # a file refused it. 2**(10**6) is evaluated in a moment, so the test ends on the old code.
    ("x*2**(10**6)", r"equation for x: the power '2\*\*\(10\*\*6\)' of a number has an exponent "
                     r"beyond 1000, too large to evaluate"),
    ("2**2000*x", r"the power '2\*\*2000' of a number has an exponent beyond 1000"),
    # Within the exponent's bound but beyond float64: the system was built, and its first rhs
    # call failed naming "the constant 1000...000" with all 401 digits.
    ("10**400*x", r"equation for x contains the number 1\.000e\+400, beyond the float64 range"),
])  # fmt: skip
def test_a_power_of_numbers_too_large_is_refused_from_python_as_in_a_file(text, refusal):
    with pytest.raises(physode.SystemDefinitionError, match=refusal) as info:
        System.from_equations({"x": text}, {})
    assert "000000000" not in str(info.value)
    with pytest.raises(physode.SystemDefinitionError, match=refusal):
        system_from_spec(_spec(text))
    # A SymPy expression made in Python holds the number itself: refused when built too.
    with pytest.raises(physode.SystemDefinitionError, match="beyond the float64 range"):
        System.from_equations({"x": sympy.Integer(2) ** 2000 * sympy.Symbol("x")}, {})


def test_imaginary_unit_is_refused_from_python_and_unknown_in_a_file():
    with pytest.raises(physode.SystemDefinitionError, match="contains I, which is not a finite"):
        System.from_equations({"x": "I*x"}, {})
    with pytest.raises(physode.SystemDefinitionError, match="symbol 'I' in the equation for x"):
        system_from_spec(_spec("I*x"))


def test_the_command_says_the_warning_as_a_line_in_simulate_and_in_check(cache_dir, tmp_path,
                                                                       capsys):
    spec = tmp_path / "growth.toml"
    spec.write_text(_spec("-E*x") + '[initial_state_distribution]\nkind = "uniform"\n'
                    'x = [0.5, 1.0]\n')
    out = tmp_path / "growth.h5"
    physode.systems.clear_cache()
    argv = ["simulate", str(spec), "--trajectories", "3", "--t-end", "1", "--points", "5"]
    assert main([*argv, "--out", str(out), "--quiet"]) == 0
    said = "warning: system 'growth': 'E' (in equation for x) is Euler's number"
    assert f"physode simulate: {said}" in capsys.readouterr().err
    physode.systems._from_text.cache_clear()  # as a later run: the system from the disk cache
    with warnings.catch_warnings():
        warnings.simplefilter("error", physode.PhysodeWarning)  # none may escape as Python's
        main(["check", str(out), "--quiet"])
    assert f"physode check: {said}" in capsys.readouterr().err


@pytest.mark.parametrize("call, hint", [
    ("ln(x)", "ln (for ln write log)"),
    ("abs(x)", "abs (for abs write Abs)"),
    ("min(x, 1)", "min (for min write Min)"),
    ("arctan(x)", "arctan (for arctan write atan)"),
    ("log10(x)", "log10 (for log10 write log(x, 10))"),
    ("sine(x)", "sine (did you mean 'sin'?)"),
    ("cot(x)", "cot that"),  # SymPy's own function, no misspelt cos: no suggestion
])
def test_an_unsupported_function_in_a_file_says_what_to_write(call, hint):
    with pytest.raises(physode.SystemDefinitionError) as info:
        system_from_spec(_spec(f"-{call}"))
    message = str(info.value)
    assert f"equation for x uses function(s) {hint}" in message
    assert "the supported functions: Abs, Max, Min, Piecewise, acos" in message


def test_an_unsupported_function_from_python_says_what_to_write():
    with pytest.raises(physode.SystemDefinitionError, match=r"log10 \(for log10 write log\(x, 10"):
        System.from_equations({"x": "-log10(x)"}, {})


_PARSERS_OWN = ["Integer", "Float", "Symbol", "Function", "Rational"]
_CLASHING = "-Integer*x + 1.5*Float + Symbol**2 - Function/Rational + 2 + y_k"


@pytest.mark.parametrize("source", ["python", "file"])
def test_parameters_named_as_the_parsers_own_names_are_those_parameters(source):
    # The parser writes Integer(2), Float('1.5'), Symbol('y'): a parameter 'Integer' broke every
    # number of the expression ("'Symbol' object is not callable").
    values = {name: float(i + 2) for i, name in enumerate(_PARSERS_OWN)} | {"y_k": 0.25}
    if source == "python":
        system = System.from_equations({"x": _CLASHING}, values, name="clash")
    else:
        table = "\n".join(f"{name} = {value}" for name, value in values.items())
        system = system_from_spec(_spec(_CLASHING, table), "clash.toml")
    integer, float_, symbol, function, rational, y_k, x = sympy.symbols(
        "Integer Float Symbol Function Rational y_k x"
    )
    expected = -integer * x + 1.5 * float_ + symbol**2 - function / rational + 2 + y_k
    assert sympy.simplify(system._equations[0] - expected) == 0
    y = torch.tensor([[1.0]], dtype=F64)
    rate = system.vector_field()(torch.tensor(0.0, dtype=F64), y)
    assert rate.item() == pytest.approx(-2 + 1.5 * 3 + 4**2 - 5 / 6 + 2 + 0.25, rel=1e-14)
    assert system_from_spec(system.to_spec(), "again")._equations == system._equations


@pytest.mark.parametrize("name", _PARSERS_OWN)
def test_an_undeclared_name_beside_a_parameter_named_as_the_parsers_is_reported(name):
    # auto_symbol writes Symbol('y') for the undeclared y, which a parameter 'Symbol' shadowed.
    with pytest.raises(physode.SystemDefinitionError, match="symbol 'y' in the equation for x"):
        System.from_equations({"x": f"-{name}*x + y"}, {name: 1.0})
    with pytest.raises(physode.SystemDefinitionError, match="symbol 'y' in the equation for x"):
        system_from_spec(_spec(f"-{name}*x + y", f"{name} = 1.0"), "clash.toml")
