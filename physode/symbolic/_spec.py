"""Specification files: a TOML description of a system, read into a :class:`System`.

The format is documented in ``docs/systems.md``. Expressions are strings parsed by SymPy with only
the declared names (states, coordinates, velocities, momenta, parameters and ``t``) and the
supported functions in scope, so a misspelt name surfaces as an unknown symbol in the error.
SymPy evaluates the text as Python, so :func:`check_syntax` first refuses, with Python's ``ast``,
everything but numbers, names, arithmetic and calls of the supported functions: a specification
file (or a data set, which stores one) cannot run code.
"""

from __future__ import annotations

import ast
import math
import tomllib
from collections.abc import Mapping
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import sympy
from sympy.parsing.sympy_parser import parse_expr, standard_transformations

from physode.symbolic._codegen import OTHER_FUNCTIONS, UNARY_FUNCTIONS
from physode.symbolic._forms import (
    MASS_MATRIX_MODES,
    build_equations,
    build_hamiltonian,
    build_lagrangian,
)
from physode.symbolic._names import (
    CARET_REASON,
    PARSER_NAMES,
    SUM_CALL,
    add_terms,
    caret_reason,
    constant_names,
    did_you_mean,
    flat_sums,
    keyword_reason,
    power_refusal,
    read_names,
    reserved_reason,
    scope,
    unshadowed,
    warn_constants,
)
from physode.symbolic._names import excerpt as _excerpt
from physode.symbolic._system import System, attach_spec_text
from physode.symbolic._validation import REPORTED, Problems

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


#: The functions a specification may call, by name.
FUNCTIONS: dict[str, Any] = {
    **{func.__name__: func for func in list(UNARY_FUNCTIONS) + list(OTHER_FUNCTIONS)},
    "sqrt": sympy.sqrt,
}
#: The constants a specification may use, by name.
CONSTANTS: dict[str, Any] = {"pi": sympy.pi, "E": sympy.E}
#: The relations a ``Piecewise`` condition may call besides its comparisons, by name: SymPy's
#: spelling of ``a == b`` and ``a != b``, which Python would evaluate to a bool at once.
RELATIONS: dict[str, Any] = {"Eq": sympy.Eq, "Ne": sympy.Ne}
# What SymPy's parser itself writes into the code it evaluates (auto_symbol, auto_number); a
# declared name spelt so is renamed there (unshadowed). No Python builtins are in reach of that
# code.
_PARSER_NAMES: dict[str, Any] = {
    **{name: getattr(sympy, name) for name in PARSER_NAMES}, "__builtins__": {},
}
# A long sum is read as one call of SUM_CALL (flat_sums).
_GLOBALS = {**_PARSER_NAMES, **FUNCTIONS, **CONSTANTS, **RELATIONS, SUM_CALL: add_terms}

_OPERATORS = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Pow, ast.UAdd, ast.USub)
_COMPARISONS = (ast.Lt, ast.LtE, ast.Gt, ast.GtE)
_REFUSED_OPERATORS = {
    ast.BitXor: CARET_REASON,  # found first by caret_reason, as in expressions from Python
    ast.BitAnd: "'&' is not allowed",
    ast.BitOr: "'|' is not allowed",
    ast.LShift: "'<<' is not allowed",
    ast.RShift: "'>>' is not allowed",
    ast.FloorDiv: "'//' is not allowed; write a quotient as /",
    ast.Mod: "'%' is not allowed",
    ast.MatMult: "'@' is not allowed",
    ast.Invert: "'~' is not allowed",
    ast.Not: "'not' is not allowed",
    ast.And: "'and' is not allowed",
    ast.Or: "'or' is not allowed",
    ast.Eq: "'==' is not allowed; in a Piecewise condition write Eq(a, b)",
    ast.NotEq: "'!=' is not allowed; in a Piecewise condition write Ne(a, b)",
    ast.Is: "'is' is not allowed",
    ast.IsNot: "'is not' is not allowed",
    ast.In: "'in' is not allowed",
    ast.NotIn: "'not in' is not allowed",
}
_REFUSED_NODES = {
    ast.Attribute: "attribute access {code} is not allowed",
    ast.Subscript: "indexing {code} is not allowed",
    ast.Tuple: "the tuple {code} is not allowed",
    ast.List: "the list {code} is not allowed",
    ast.Set: "the set {code} is not allowed",
    ast.Dict: "the dict {code} is not allowed",
    ast.Lambda: "'lambda' is not allowed",
    ast.ListComp: "the comprehension {code} is not allowed",
    ast.SetComp: "the comprehension {code} is not allowed",
    ast.DictComp: "the comprehension {code} is not allowed",
    ast.GeneratorExp: "the generator {code} is not allowed",
    ast.Starred: "unpacking {code} is not allowed",
    ast.NamedExpr: "the assignment ':=' is not allowed",
    ast.JoinedStr: "the f-string {code} is not allowed",
    ast.IfExp: "the conditional expression {code} is not allowed; write "
               "Piecewise((value, condition), (otherwise, True))",
    ast.Compare: "the comparison {code} is not allowed outside a Piecewise condition",
}
_PIECEWISE_HINT = "e.g. Piecewise((-x, x < 0), (x, True))"
_CONDITION = "one comparison with <, <=, > or >=, Eq(a, b), Ne(a, b), or True"


def _refusal(text: str, node: ast.AST, names: Mapping[str, Any]) -> str | None:
    """Why ``node`` (not its children) is not allowed in an expression; None if it is."""
    if isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return None
        if isinstance(value, complex):
            return f"the imaginary number {_excerpt(text, node)} is not allowed"
        if isinstance(value, str | bytes):
            return f"the string {_excerpt(text, node)} is not allowed"
        if str(value) in names:  # None, True or False declared as a name
            return keyword_reason(str(value), names)
        return f"{_excerpt(text, node)} is not allowed; write a number or a name"
    if isinstance(node, ast.Name):
        if node.id in names or node.id in CONSTANTS:
            return None
        if node.id in FUNCTIONS:
            return f"'{node.id}' is a function; call it, e.g. {node.id}(x)"
        if node.id in RELATIONS:
            return f"'{node.id}' is a relation; use it as a Piecewise condition, {node.id}(a, b)"
        if node.id in _PARSER_NAMES:
            return f"the name '{node.id}' is not allowed"
        return None  # SymPy makes it a symbol, which is then reported as unknown.
    if isinstance(node, ast.UnaryOp | ast.BinOp | ast.BoolOp):
        return None if isinstance(node.op, _OPERATORS) else _REFUSED_OPERATORS[type(node.op)]
    if isinstance(node, ast.Compare) and not isinstance(node.ops[0], _COMPARISONS):
        return _REFUSED_OPERATORS[type(node.ops[0])]
    template = _REFUSED_NODES.get(type(node), "{code} is not allowed")
    return template.format(code=_excerpt(text, node))


def _call_refusal(text: str, node: ast.Call, names: Mapping[str, Any]) -> str | None:
    """Why the call ``node`` is not allowed; None if it is (its arguments are checked apart)."""
    func = node.func
    if not isinstance(func, ast.Name):
        return _refusal(text, func, names) or f"calling {_excerpt(text, func)} is not allowed"
    if func.id in names or func.id in CONSTANTS:
        return f"'{func.id}' is not a function and cannot be called"
    if func.id in _PARSER_NAMES:
        return f"the name '{func.id}' is not allowed"
    if node.keywords:
        arg = node.keywords[0].arg
        keyword = "**" if arg is None else f"{arg}="
        return f"the keyword argument '{keyword}' of {func.id} is not allowed; pass it by position"
    if func.id in RELATIONS:
        return (
            f"the relation {_excerpt(text, node)} is not allowed outside a Piecewise condition"
        )
    return None


def _condition_refusal(text: str, node: ast.AST, names: Mapping[str, Any]) -> str | None:
    """Why ``node`` is no Piecewise condition; None if it is one (its sides are checked apart)."""
    if isinstance(node, ast.Constant) and node.value is True:
        return None
    if isinstance(node, ast.Compare):
        if len(node.ops) == 1 and isinstance(node.ops[0], _COMPARISONS):
            return None
        if len(node.ops) > 1:
            return f"the chained comparison {_excerpt(text, node)} is not allowed"
        if isinstance(node.ops[0], ast.Eq | ast.NotEq):
            relation = "Eq" if isinstance(node.ops[0], ast.Eq) else "Ne"
            return (
                f"the Piecewise condition {_excerpt(text, node)} is not allowed (Python would "
                f"read it as a bool); write {relation}(a, b)"
            )
    if (
        isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
        and node.func.id in RELATIONS and node.func.id not in names
    ):
        if node.keywords or len(node.args) != 2:
            return (
                f"the relation {_excerpt(text, node)} takes two arguments by position, "
                f"{node.func.id}(a, b)"
            )
        return None
    return f"the Piecewise condition {_excerpt(text, node)} must be {_CONDITION}; {_PIECEWISE_HINT}"


def check_syntax(text: str, names: Mapping[str, Any]) -> str | None:
    """Why ``text`` is not an expression physode reads; None when it is one.

    An expression is made of numbers, names, unary ``+``/``-``, the operators ``+ - * / **`` and
    calls of the supported functions with positional arguments; ``Piecewise`` takes
    ``(value, condition)`` pairs whose condition is one comparison (``<``, ``<=``, ``>``, ``>=``),
    ``Eq(a, b)``, ``Ne(a, b)`` or ``True``. Anything else (attributes, indexing, strings, keyword
    arguments, boolean or bitwise operators, ...) is refused before SymPy, which evaluates the
    text as Python, sees it.

    Examples
    --------
    >>> check_syntax("-k*x**2 + sin(x)", {"x": None, "k": None}) is None
    True
    >>> check_syntax("x ^ 2", {"x": None})
    "'^' is not allowed; write powers as ** (Python reads '^' as exclusive or)"
    >>> check_syntax("x.func", {"x": None})
    "attribute access 'x.func' is not allowed"

    Raises
    ------
    SyntaxError
        When ``text`` is not a Python expression at all.
    """
    reserved = reserved_reason(text)
    if reserved is not None:
        return reserved
    text = flat_sums(text)  # what the parser reads; a long sum nests no deeper than a call
    try:
        tree = ast.parse(text, mode="eval")
    except RecursionError as exc:
        raise SyntaxError("too deeply nested") from exc
    except ValueError as exc:  # a null character, on Python 3.11
        raise SyntaxError(str(exc)) from exc
    if "#" in text:
        # Outside a string (refused below) '#' starts a comment, which would silently drop the
        # rest of a multi-line expression once its lines are joined.
        return "'#' is not allowed; an expression cannot hold a comment"
    caret = caret_reason(text)  # the same rule, by the same code, as for expressions from Python
    if caret is not None:
        return caret
    # Iterative, so that a long sum cannot exhaust the recursion limit here.
    stack: list[tuple[ast.AST, bool]] = [(tree.body, False)]
    while stack:
        node, condition = stack.pop()
        if condition:
            refusal = _condition_refusal(text, node, names)
            if refusal is None and isinstance(node, ast.Compare):
                stack += [(node.comparators[0], False), (node.left, False)]
            elif refusal is None and isinstance(node, ast.Call):
                stack += [(arg, False) for arg in reversed(node.args)]
        elif isinstance(node, ast.Call):
            refusal = _call_refusal(text, node, names)
            if refusal is None and node.func.id == "Piecewise":
                refusal = _piecewise_refusal(text, node, stack)
            elif refusal is None:
                stack += [(arg, False) for arg in reversed(node.args)]
        else:
            refusal = _refusal(text, node, names) or power_refusal(text, node)
            if refusal is None:
                children = [c for c in ast.iter_child_nodes(node) if isinstance(c, ast.expr)]
                stack += [(child, False) for child in reversed(children)]
        if refusal is not None:
            return refusal
    return None


def _piecewise_refusal(text: str, node: ast.Call, stack: list) -> str | None:
    """Check that every argument of ``Piecewise`` is a pair; push its parts onto ``stack``."""
    for arg in node.args:
        if not (isinstance(arg, ast.Tuple) and len(arg.elts) == 2):
            return (
                f"Piecewise takes (value, condition) pairs, got {_excerpt(text, arg)}; "
                f"{_PIECEWISE_HINT}"
            )
        stack += [(arg.elts[1], True), (arg.elts[0], False)]
    return None


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
        if not math.isfinite(text):
            problems.add(f"{where} = {text!r} is not a finite number")
            return None
        return sympy.Float(text) if isinstance(text, float) else sympy.Integer(text)
    if not isinstance(text, str):
        problems.add(f"{where} must be an expression string, got {text!r}")
        return None
    # Multi-line strings are allowed for long expressions.
    text = " ".join(text.split())
    names = scope(names)
    try:
        refusal = check_syntax(text, names)
    except SyntaxError as exc:
        reason = keyword_reason(text, names) or exc.msg
        problems.add(f"{where} = {text!r} does not parse: {reason}")
        return None
    if refusal is not None:
        problems.add(f"{where}: {refusal}")
        return None
    read = read_names(text)
    code, local = unshadowed(read, names)  # a parameter 'Integer' is no longer SymPy's Integer
    try:
        expr = parse_expr(
            flat_sums(code), local_dict=local, global_dict=dict(_GLOBALS),
            transformations=standard_transformations,
        )
    except Exception as exc:  # SymPy raises errors of many kinds for malformed input
        problems.add(f"{where} = {text!r} does not parse: {type(exc).__name__}: {exc}")
        return None
    for name in constant_names(read, names):  # 'E' not declared: Euler's number, said after
        problems.read_as_constant(name, where)
    return expr


def _string_list(spec: Mapping, key: str, problems: Problems) -> Any:
    """The list of names under ``key``; ``REPORTED`` when it is missing (a missing required key
    is reported as such) or is no list of names (reported here), so that the builder does not
    report its length or its matching as well."""
    if key not in spec:
        return REPORTED
    value = spec[key]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        hint = f'; write {key} = ["{value}"]' if isinstance(value, str) else ""
        problems.add(f"{key} must be a list of names, got {value!r}{hint}")
        return REPORTED
    bad = [v for v in value if not v.isidentifier()]
    for v in bad:
        problems.add(f"{key} entry {v!r} is not a valid identifier")
    return REPORTED if bad else value


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
            if values[name] is None:
                problems.add(
                    f"parameter {name!r} has no value; add one to its table, e.g. "
                    f"{name} = {{ value = 1.0{', range = ...' if 'range' in entry else ''} }}"
                )
                values[name] = REPORTED
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
    if "form" not in spec:
        problems.add(f"missing required key 'form'; valid forms: {', '.join(FORMS)}")
        problems.raise_if_any()
    if form not in FORMS:
        hint = did_you_mean(form, FORMS) if isinstance(form, str) else ""
        problems.add(f"form = {form!r}; valid forms: {', '.join(FORMS)}{hint}")
        problems.raise_if_any()
    valid = _COMMON_KEYS | _FORM_KEYS[form]
    for key in spec:
        if key not in valid:
            owners = [f for f in FORMS if key in _FORM_KEYS[f]]
            hint = (
                f" ({key!r} is a key of form {' and '.join(map(repr, owners))})" if owners
                else did_you_mean(key, valid)
            )
            problems.add(
                f"unknown key {key!r} for form {form!r}{hint}; valid keys: "
                f"{', '.join(sorted(valid))}"
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
        eq_table = spec.get("equations", {})  # missing: reported above
        if not isinstance(eq_table, Mapping):
            problems.add(f"[equations] must be a table of state = expression, got {eq_table!r}")
            eq_table = {}
        elif not eq_table and "equations" in spec:
            problems.add("[equations] must hold at least one state = expression, e.g. x = \"-k*x\"")
        states = list(eq_table)
        names.update({s: sympy.Symbol(s) for s in states})
    else:
        coordinates = _string_list(spec, "coordinates", problems)
        second_key = "velocities" if form == "lagrangian" else "momenta"
        second = _string_list(spec, second_key, problems)
        if second is REPORTED and second_key not in spec and form == "lagrangian":
            second = None if coordinates is REPORTED else [f"{q}_dot" for q in coordinates]
        for listed in (coordinates, second):
            if isinstance(listed, list):
                names.update({s: sympy.Symbol(s) for s in listed})

    def parse(value, where):
        expr = parse_expression(value, names, where, problems)
        return REPORTED if expr is None else expr

    def parse_required(key):
        # A missing key is reported above; a stand-in such as "0" would add a singular mass matrix.
        return parse(spec[key], key) if key in spec else REPORTED

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
    }
    # By name, so that the builders report a name that is no identifier (it could never be
    # written in an expression).
    params = dict(values)

    if form == "equations":
        # None at all: reported above in the file's words, not as from_equations' argument rhs.
        rhs = {s: parse(v, f"equation for {s}") for s, v in eq_table.items()} or REPORTED
        system = build_equations(
            problems, rhs, params, time=time, invariants=invariants,
            n_coordinates=spec.get("n_coordinates"), **options,
        )
    elif form == "hamiltonian":
        forces = _forces(spec, parse, problems)
        hamiltonian = parse_required("hamiltonian")
        system = build_hamiltonian(
            problems, hamiltonian, _symbols(coordinates, names), _symbols(second, names),
            params, time=time, forces=forces, invariants=invariants, **options,
        )
    else:
        forces = _forces(spec, parse, problems)
        lagrangian = parse_required("lagrangian")
        dissipation = parse(spec["dissipation"], "dissipation") if "dissipation" in spec else None
        mode = spec.get("mass_matrix", "auto")
        if mode not in MASS_MATRIX_MODES:
            problems.add(f"mass_matrix = {mode!r}; valid: {', '.join(MASS_MATRIX_MODES)}")
            mode = "auto"
        system = build_lagrangian(
            problems, lagrangian, _symbols(coordinates, names), params,
            velocities=_symbols(second, names), time=time, dissipation=dissipation,
            forces=forces, invariants=invariants, mass_matrix=mode, **options,
        )
    problems.raise_if_any()
    system = attach_spec_text(system, text)
    warn_constants(system)
    return system


def _symbols(listed: Any, names: Mapping[str, sympy.Symbol]) -> Any:
    """The symbols of the names ``listed``; ``REPORTED`` or None as it is."""
    return listed if listed is None or listed is REPORTED else [names[n] for n in listed]


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
    return system_from_spec(read_spec_text(path, str(path)), source=str(path))


def read_spec_text(file: Path | Traversable, source: str) -> str:
    """The text of a specification file, which must be UTF-8.

    Raises
    ------
    physode.SystemDefinitionError
        When the file is not UTF-8 text (naming ``source`` and the first bad byte).
    """
    try:
        # utf-8-sig: editors on Windows may start a UTF-8 file with a byte-order mark, which
        # TOML's parser would report as an invalid statement at line 1, column 1.
        return file.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        problems = Problems(f" in {source}")
        problems.add(
            f"the file is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset "
            f"{exc.start}); save it as UTF-8"
        )
        raise problems.error() from exc
