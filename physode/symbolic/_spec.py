"""Specification files: a TOML description of a system, read into a :class:`System`.

The format is documented in ``docs/systems.md``. Expressions are strings parsed by SymPy with only
the declared names (states, coordinates, velocities, momenta, parameters and ``t``) and the
supported functions in scope, so a misspelt name surfaces as an unknown symbol in the error.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import sympy
from sympy.parsing.sympy_parser import parse_expr, standard_transformations

from physode.symbolic._codegen import OTHER_FUNCTIONS, UNARY_FUNCTIONS
from physode.symbolic._system import (
    MASS_MATRIX_MODES,
    Problems,
    System,
    build_equations,
    build_hamiltonian,
    build_lagrangian,
)

FORMS = ("lagrangian", "hamiltonian", "equations")
_COMMON_KEYS = {
    "name", "description", "reference", "form", "parameters", "invariants",
    "initial_state_distribution", "initial_states", "characteristic_time", "time",
}
_FORM_KEYS = {
    "lagrangian": {"coordinates", "velocities", "lagrangian", "dissipation", "forces",
                   "mass_matrix"},
    "hamiltonian": {"coordinates", "momenta", "hamiltonian", "forces"},
    "equations": {"equations", "n_coordinates"},
}
_REQUIRED = {
    "lagrangian": ("coordinates", "lagrangian"),
    "hamiltonian": ("coordinates", "momenta", "hamiltonian"),
    "equations": ("equations",),
}
_PARAMETER_KEYS = {"value", "range", "description", "unit"}


def _global_namespace() -> dict[str, Any]:
    namespace: dict[str, Any] = {}
    exec("from sympy import Symbol, Integer, Float, Rational, Function", namespace)
    for func in list(UNARY_FUNCTIONS) + list(OTHER_FUNCTIONS):
        namespace[func.__name__] = func
    namespace.update({"sqrt": sympy.sqrt, "pi": sympy.pi, "E": sympy.E})
    return namespace


_GLOBALS = _global_namespace()


def parse_expression(text: Any, names: Mapping[str, sympy.Symbol], where: str,
                     problems: Problems) -> sympy.Expr | None:
    """Parse one expression string with only ``names`` and the supported functions in scope.

    Examples
    --------
    >>> p = Problems()
    >>> x = sympy.Symbol("x")
    >>> parse_expression("-k*x + sin(x)", {"x": x}, "equation", p)
    -k*x + sin(x)
    """
    if isinstance(text, int | float) and not isinstance(text, bool):
        return sympy.Float(text) if isinstance(text, float) else sympy.Integer(text)
    if not isinstance(text, str):
        problems.add(f"{where} must be an expression string, got {text!r}")
        return None
    try:
        # Multi-line strings are allowed for long expressions.
        return parse_expr(
            " ".join(text.split()), local_dict=dict(names), global_dict=dict(_GLOBALS),
            transformations=standard_transformations,
        )
    except (SyntaxError, TypeError, ValueError, sympy.SympifyError) as exc:
        problems.add(f"{where} = {text!r} does not parse: {exc}")
        return None


def _string_list(spec: Mapping, key: str, problems: Problems) -> list[str]:
    value = spec.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        problems.add(f"{key} must be a list of names, got {value!r}")
        return []
    for v in value:
        if not v.isidentifier():
            problems.add(f"{key} entry {v!r} is not a valid identifier")
    return [v for v in value if v.isidentifier()]


def _parameters(spec: Mapping, problems: Problems):
    table = spec.get("parameters", {})
    if not isinstance(table, Mapping):
        problems.add(f"[parameters] must be a table, got {table!r}")
        return {}, {}
    values, ranges = {}, {}
    for name, entry in table.items():
        if isinstance(entry, Mapping):
            for key in entry:
                if key not in _PARAMETER_KEYS:
                    problems.add(
                        f"parameter {name!r} has unknown key {key!r}; valid keys: "
                        f"{', '.join(sorted(_PARAMETER_KEYS))}"
                    )
            values[name] = entry.get("value")
            if "range" in entry:
                ranges[name] = entry["range"]
        else:
            values[name] = entry
    return values, ranges


def system_from_spec(text: str, source: str = "<string>") -> System:
    """Build a :class:`System` from the text of a specification file.

    Parameters
    ----------
    text : str
        TOML text (see ``docs/systems.md``).
    source : str
        Where the text came from, for error messages.

    Returns
    -------
    System
        With ``spec_text`` set to ``text``.

    Raises
    ------
    physode.SystemDefinitionError
        Listing every problem in the file.

    Examples
    --------
    >>> spec = '''
    ... name = "decay"
    ... form = "equations"
    ... [parameters]
    ... k = { value = 0.5, range = [0.1, 1.0] }
    ... [equations]
    ... x = "-k*x"
    ... '''
    >>> system_from_spec(spec).equations
    {'x': -k*x}
    """
    problems = Problems(f" in {source}")
    try:
        spec = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        problems.add(f"not valid TOML: {exc}")
        problems.raise_if_any()
    form = spec.get("form")
    if form not in FORMS:
        problems.add(f"form = {form!r}; valid forms: {', '.join(FORMS)}")
        problems.raise_if_any()
    valid = _COMMON_KEYS | _FORM_KEYS[form]
    for key in spec:
        if key not in valid:
            problems.add(
                f"unknown key {key!r} for form {form!r}; valid keys: {', '.join(sorted(valid))}"
            )
    for key in ("name",) + _REQUIRED[form]:
        if key not in spec:
            problems.add(f"missing required key {key!r}")

    time_name = spec.get("time", "t")
    if not isinstance(time_name, str) or not time_name.isidentifier():
        problems.add(f"time = {time_name!r} must be a name, e.g. time = \"t\"")
        time_name = "t"
    time = sympy.Symbol(time_name)
    values, ranges = _parameters(spec, problems)
    names: dict[str, sympy.Symbol] = {time.name: time}
    names.update({p: sympy.Symbol(p) for p in values})

    if form == "equations":
        eq_table = spec.get("equations", {})
        if not isinstance(eq_table, Mapping):
            problems.add(f"[equations] must be a table of state = expression, got {eq_table!r}")
            eq_table = {}
        states = list(eq_table)
        names.update({s: sympy.Symbol(s) for s in states})
    else:
        coordinates = _string_list(spec, "coordinates", problems)
        second_key = "velocities" if form == "lagrangian" else "momenta"
        if second_key in spec:
            second = _string_list(spec, second_key, problems)
        else:
            second = [f"{q}_dot" for q in coordinates] if form == "lagrangian" else []
        names.update({s: sympy.Symbol(s) for s in coordinates + second})

    def parse(value, where):
        return parse_expression(value, names, where, problems)

    invariant_table = spec.get("invariants", {})
    if not isinstance(invariant_table, Mapping):
        problems.add(f"[invariants] must be a table of name = expression, got {invariant_table!r}")
        invariant_table = {}
    invariants = {k: parse(v, f"invariant {k!r}") for k, v in invariant_table.items()}
    options = {
        "name": spec.get("name"),
        "description": spec.get("description", ""),
        "reference": spec.get("reference", ""),
        "parameter_ranges": ranges,
        "initial_state_distribution": spec.get("initial_state_distribution"),
        "initial_states": spec.get("initial_states"),
        "characteristic_time": spec.get("characteristic_time"),
        "spec_text": text,
    }
    params = {names[p]: v for p, v in values.items()}

    if form == "equations":
        rhs = {names[s]: parse(v, f"equation for {s}") for s, v in eq_table.items()}
        system = build_equations(
            problems, rhs, params, time=time, invariants=invariants,
            n_coordinates=spec.get("n_coordinates"), **options,
        )
    elif form == "hamiltonian":
        forces = _forces(spec, parse, problems)
        hamiltonian = parse(spec.get("hamiltonian", "0"), "hamiltonian")
        system = build_hamiltonian(
            problems, hamiltonian, [names[q] for q in coordinates], [names[p] for p in second],
            params, time=time, forces=forces, invariants=invariants, **options,
        )
    else:
        forces = _forces(spec, parse, problems)
        lagrangian = parse(spec.get("lagrangian", "0"), "lagrangian")
        dissipation = parse(spec["dissipation"], "dissipation") if "dissipation" in spec else None
        mode = spec.get("mass_matrix", "auto")
        if mode not in MASS_MATRIX_MODES:
            problems.add(f"mass_matrix = {mode!r}; valid: {', '.join(MASS_MATRIX_MODES)}")
            mode = "auto"
        system = build_lagrangian(
            problems, lagrangian, [names[q] for q in coordinates], params,
            velocities=[names[v] for v in second], time=time, dissipation=dissipation,
            forces=forces, invariants=invariants, mass_matrix=mode, **options,
        )
    problems.raise_if_any()
    return system


def _forces(spec: Mapping, parse, problems: Problems) -> dict[str, sympy.Expr] | None:
    table = spec.get("forces")
    if table is None:
        return None
    if not isinstance(table, Mapping):
        problems.add(f"[forces] must be a table of coordinate = expression, got {table!r}")
        return None
    return {k: parse(v, f"force on {k}") for k, v in table.items()}


def system_from_file(path: str | Path) -> System:
    """Read a specification file (UTF-8 TOML) into a :class:`System`.

    Examples
    --------
    >>> from pathlib import Path
    >>> import physode.systems
    >>> system_from_file(physode.systems.path("pendulum")).name
    'pendulum'
    """
    path = Path(path)
    return system_from_spec(path.read_text(encoding="utf-8"), source=str(path))
