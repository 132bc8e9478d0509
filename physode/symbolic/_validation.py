"""Reading and checking what a ``System`` constructor is given: symbols and names, expressions,
parameters with their values and ranges; every problem is collected into one
:class:`physode.SystemDefinitionError` (:class:`Problems`)."""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

import numpy
import sympy

from physode._errors import SystemDefinitionError
from physode.symbolic._codegen import (
    non_real_constants,
    shown_constant,
    supported_function_names,
    unsupported_functions,
)
from physode.symbolic._names import (
    SUM_CALL,
    add_terms,
    bare_sympy_names,
    caret_reason,
    constant_names,
    did_you_mean,
    equality_reason,
    flat_sums,
    function_hint,
    keyword_reason,
    power_reason,
    read_names,
    reserved_reason,
    scope,
    unshadowed,
)
from physode.symbolic._time_functions import _Dynamic, _undeclared_functions_of_time

SymbolLike = sympy.Symbol | str

#: Stands for an input whose problem is reported already (a specification string that did not
#: parse): the builders skip it without reporting it a second time.
REPORTED = object()


class Problems:
    """Collects validation problems, then raises them together."""

    def __init__(self, context: str = ""):
        self.context = context
        self.items: list[str] = []
        #: No problem: each SymPy constant that an undeclared name in an expression string
        #: stands for (``E``), with where; the built system warns of them (warn_constants).
        self.constants: dict[str, list[str]] = {}

    def read_as_constant(self, name: str, where: str) -> None:
        places = self.constants.setdefault(name, [])
        if where not in places:
            places.append(where)

    def add(self, message: str) -> None:
        if message not in self.items:
            self.items.append(message)

    def error(self) -> SystemDefinitionError:
        """The error listing every problem collected so far."""
        head = f"invalid system definition{self.context} ({len(self.items)} problem"
        head += "s):" if len(self.items) > 1 else "):"
        return SystemDefinitionError(head + "".join(f"\n  - {m}" for m in self.items))

    def raise_if_any(self) -> None:
        if self.items:
            raise self.error()


def _symbol(item: Any, what: str, problems: Problems) -> sympy.Symbol | None:
    """``item`` (a name or a ``sympy.Symbol``) as a symbol. Its name must be an identifier, as in
    a specification file: otherwise a problem is added, and a name gives None (a symbol is
    returned, so that the expressions that hold it are not said to hold an unknown one).

    Examples
    --------
    >>> problems = Problems()
    >>> _symbol(sympy.Symbol("m.1"), "parameter", problems), problems.items[0].split(" (")[0]
    (m.1, "parameter name 'm.1' is not a valid identifier")
    """
    if not isinstance(item, str | sympy.Symbol):
        problems.add(
            f"{what} {item!r} must be a sympy.Symbol or a name, not {type(item).__name__}"
        )
        return None
    name = item if isinstance(item, str) else item.name
    if not name.isidentifier():
        problems.add(
            f"{what} name {name!r} is not a valid identifier (letters, digits and underscores, "
            "not starting with a digit)"
        )
        if isinstance(item, str):
            return None
    # A symbol keeps its assumptions; expressions find it by name (see _by_name).
    return sympy.Symbol(item) if isinstance(item, str) else item


def _module_attribute_problem(name: str) -> str | None:
    """Why a parameter cannot be called ``name``: ``system.vector_field()`` holds each parameter
    as an attribute of that name, which must not be one of its ``torch.nn.Module``'s."""
    from physode.symbolic._vector_field import taken_names

    if name not in taken_names():
        return None
    return (
        f"parameter name {name!r} is taken by an attribute of the torch module that holds a "
        f"system's parameters under their names (system.vector_field()); rename it, e.g. "
        f"{name.strip('_') + '_value'!r}"
    )


def _by_name(
    expr: sympy.Expr, where: str, problems: Problems, known: Collection[sympy.Symbol] = ()
) -> sympy.Expr | None:
    """``expr`` with every symbol replaced by the ``known`` (declared) symbol of its name, else
    by the plain symbol of that name (None, with a problem added, when two different symbols
    share a name).

    Symbols are matched by name, as in a specification file: ``Symbol("theta", real=True)`` in a
    Lagrangian is the coordinate ``theta``, whatever assumptions either was declared with. A
    declared symbol keeps its assumptions (every symbol is differentiated as real, declared so
    or not: ``Abs(q)`` to ``sign(q)``, see ``_mechanics.real_derivative``). Two symbols of one
    name in one expression (``x`` real and ``x`` positive) are two variables to SymPy, which one
    name cannot tell apart.

    Examples
    --------
    >>> _by_name(sympy.Symbol("x", real=True) ** 2, "equation", Problems()).free_symbols
    {x}
    >>> _by_name(sympy.Symbol("x", real=True) ** 2, "equation", Problems()).is_real is None
    True
    >>> x = sympy.Symbol("x", real=True)
    >>> _by_name(sympy.Symbol("x") ** 2, "equation", Problems(), [x]).is_real
    True
    """
    by_name: dict[str, set[sympy.Symbol]] = {}
    for sym in expr.atoms(sympy.Symbol):
        by_name.setdefault(sym.name, set()).add(sym)
    clashes = sorted(name for name, group in by_name.items() if len(group) > 1)
    for name in clashes:
        forms = ", ".join(sorted(map(sympy.srepr, by_name[name])))
        problems.add(
            f"the {where} holds different symbols named {name!r} ({forms}), which SymPy counts "
            "as different variables; physode matches symbols by name, so create each name once"
        )
    if clashes:
        return None
    declared = {s.name: s for s in known}
    return expr.xreplace(
        {sym: declared.get(sym.name, sympy.Symbol(sym.name)) for sym in expr.atoms(sympy.Symbol)}
    )


def _expr(
    value: Any,
    where: str,
    problems: Problems,
    known: Collection[sympy.Symbol] = (),
    dynamic: _Dynamic | None = None,
) -> sympy.Expr | None:
    """``value`` as a SymPy expression with finite real constants and supported functions only
    (None, with a problem added, otherwise).

    A string is parsed with the ``known`` symbols in scope, so that a declared name such as
    ``E``, ``I``, ``S``, ``beta`` or ``gamma`` is that symbol rather than SymPy's constant or
    function of the same name; one with ``^`` is refused (:func:`caret_reason`), as in a
    specification file, and so is one with ``==`` or ``!=`` (:func:`equality_reason`), which
    Python would evaluate to a bool. The functions of time in ``dynamic`` (``q(t)``,
    ``q(t).diff(t)``) become their plain symbols.
    """
    if value is REPORTED:
        return None
    if value is None:
        problems.add(f"{where} is None; give a SymPy expression")
        return None
    if isinstance(value, str):
        reason = (caret_reason(value) or equality_reason(value) or reserved_reason(value)
                  or power_reason(value))
        if reason is not None:
            problems.add(f"{where}: {reason}")
            return None
    try:
        if isinstance(value, str):
            # A coordinate written q(t) is a function in the text, not the symbol q.
            names = scope(
                {s.name: s for s in known if dynamic is None or s not in dynamic.plain}
            )
            text = read_names(value)
            # An undeclared 'gamma' or 'S' is reported as an unknown symbol, as in a file.
            names.update({n: sympy.Symbol(n) for n in bare_sympy_names(text, names)})
            code, local = unshadowed(text, names)  # a parameter 'Float' is not SymPy's Float
            # A long sum is read as one call of add_terms (flat_sums).
            expr = sympy.sympify(flat_sums(code), locals={**local, SUM_CALL: add_terms})
            for name in constant_names(text, names):
                problems.read_as_constant(name, where)
        else:
            expr = sympy.sympify(value)
    except (sympy.SympifyError, TypeError) as exc:
        reason = keyword_reason(value, {s.name for s in known}) if isinstance(value, str) else None
        if reason is not None:
            problems.add(f"{where} = {value!r} does not parse: {reason}")
        else:
            problems.add(f"{where} {value!r} is not a SymPy expression ({exc})")
        return None
    if isinstance(expr, sympy.core.relational.Relational):
        problems.add(
            f"{where} is the relation {expr}, not an expression; conditions belong in "
            "Piecewise((value, condition), ..., (otherwise, True))"
        )
        return None
    if not isinstance(expr, sympy.Expr) or expr.is_Matrix:
        kind = "boolean" if isinstance(expr, sympy.logic.boolalg.Boolean) else type(expr).__name__
        problems.add(f"{where} is the {kind} {expr}, not an expression; give a SymPy expression")
        return None
    if dynamic is not None:
        expr = dynamic.substitute(expr)
    function = next(
        (node for node in sympy.preorder_traversal(expr) if isinstance(node, sympy.Lambda)), None
    )
    if function is not None:
        # Its bound variable is no free symbol, so Lambda(x, x**2) would read as a constant.
        problems.add(
            f"{where} holds the function {function}, not its value: apply it to its arguments "
            "(V(x) for V = Lambda(x, ...))"
        )
        return None
    expr = _by_name(expr, where, problems, known)
    if expr is None:
        return None
    bad = unsupported_functions(expr)
    if dynamic is not None:
        for function in _undeclared_functions_of_time(expr, dynamic.time):
            # q(t) of a coordinate the caller left out: a missing declaration, not a function
            # without a torch translation.
            name = type(function).__name__
            bad.discard(name)
            time = dynamic.time.name
            problems.add(
                f"{where} holds {function}, a function of time that is not declared: list "
                f"{name!r} among the {dynamic.roles} if it is one; a prescribed function of "
                f"time (a drive) has no value physode can compute, so write it out in {time!r}, "
                f"e.g. A*cos(omega*{time})"
            )
    if bad:
        supported = supported_function_names() + ["sqrt"]
        named = ", ".join(name + function_hint(name, supported) for name in sorted(bad))
        problems.add(
            f"{where} uses function(s) {named} that have no torch translation; the supported "
            f"functions: {', '.join(sorted(supported))}"
        )
    for constant in non_real_constants(expr):
        if isinstance(constant, sympy.Rational):  # exact, but beyond what a float holds
            problems.add(
                f"{where} contains the number {shown_constant(constant)}, beyond the float64 "
                "range (largest about 1.8e+308)"
            )
        else:
            problems.add(f"{where} contains {constant}, which is not a finite real number")
    for piecewise in expr.atoms(sympy.Piecewise):
        if piecewise.args[-1].cond is not sympy.true:
            problems.add(
                f"{where} has a Piecewise without a default branch; add (value, True) as its "
                "last argument"
            )
    return expr


def _parameters(
    parameters: Mapping[SymbolLike, float | None] | Sequence[SymbolLike],
    ranges: Mapping[SymbolLike, Sequence[float]] | None,
    problems: Problems,
) -> tuple[list[sympy.Symbol], list[float], list[tuple[float, float]]]:
    if isinstance(parameters, Mapping):
        items = list(parameters.items())
    elif _is_collection(parameters):
        items = [(p, None) for p in parameters]
    else:
        problems.add(
            f"parameters must be a mapping {{symbol or name: value}}, got {parameters!r}; "
            "e.g. {'k': 1.0}"
        )
        items = []
    if ranges is not None and not isinstance(ranges, Mapping):
        problems.add(
            f"parameter_ranges must be a mapping {{parameter: [low, high]}}, got {ranges!r}"
        )
        ranges = None
    symbols, values, bounds = [], [], []
    range_by_name = {str(k): v for k, v in (ranges or {}).items()}
    for key, value in items:
        sym = _symbol(key, "parameter", problems)
        if sym is None:
            continue
        taken = _module_attribute_problem(sym.name)
        if taken:
            problems.add(taken)
        number = _parameter_value(sym.name, value, problems)
        given = range_by_name.pop(sym.name, None)
        bound = _range(given)
        if given is None:
            bound = (number, number)
        elif bound is None:
            problems.add(f"parameter {sym.name!r} has range {given!r}; give [low, high]")
            bound = (number, number)
        else:
            if math.isfinite(number) and not bound[0] <= number <= bound[1]:
                problems.add(
                    f"parameter {sym.name!r} has value {number} outside its range {list(bound)}"
                )
        symbols.append(sym)
        values.append(number)
        bounds.append(bound)
    for name in range_by_name:
        problems.add(f"a range is given for {name!r}, which is not a parameter")
    return symbols, values, bounds


def _parameter_value(name: str, value: Any, problems: Problems) -> float:
    """The default value of parameter ``name`` as a float (NaN, with a problem added, if bad)."""
    if value is REPORTED:  # a specification file said why
        return math.nan
    if value is None:
        problems.add(f"parameter {name!r} has no value; give it one, e.g. {{{name}: 1.0}}")
        return math.nan
    if isinstance(value, sympy.Basic) and value.free_symbols:
        problems.add(
            f"parameter {name!r} has value {value}, which depends on "
            f"{', '.join(sorted(map(str, value.free_symbols)))}; give a number"
        )
        return math.nan
    number = _as_float(value)
    if number is None:
        problems.add(f"parameter {name!r} has value {value!r}, which is not a number")
        return math.nan
    if not math.isfinite(number):
        problems.add(f"parameter {name!r} has non-finite value {value!r}")
    return number


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool | numpy.bool_)


def _as_float(value: Any) -> float | None:
    """``value`` as a float; None for a boolean or anything that is not a number."""
    if _is_bool(value) or isinstance(value, str | bytes):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _range(bound: Any) -> tuple[float, float] | None:
    """``bound`` as ``(low, high)``; None unless it is two finite numbers with low <= high."""
    if isinstance(bound, str | bytes | Mapping):
        return None
    try:
        low, high = map(_as_float, bound)
    except (TypeError, ValueError):
        return None
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        return None
    return (low, high) if low <= high else None


def _check_unknown(
    expr: sympy.Expr | None,
    where: str,
    known: set[sympy.Symbol],
    phrase: str,
    problems: Problems,
    velocity_of: Mapping[sympy.Symbol, sympy.Symbol] | None = None,
) -> bool:
    """Add a problem for each symbol of ``expr`` that is not ``known`` (suggesting the closest
    known name) and for a derivative in it; whether there was any.

    ``velocity_of`` maps each coordinate of a Lagrangian system to its velocity, so that a
    derivative is reported as what it is: a velocity written as a derivative, or an
    acceleration, which no Lagrangian ``L(q, v, t)`` holds. Without it (a Hamiltonian or a
    first-order system) every derivative is refused as such."""
    if expr is None:
        return False
    unknown = sorted(expr.free_symbols - known, key=str)
    names = [s.name for s in known]
    for sym in unknown:
        hint = did_you_mean(sym.name, names)
        if not hint:  # nothing close: say how to declare it, and what is declared
            hint = (
                f"; if it is a parameter, give it a value in the parameters (declared names: "
                f"{', '.join(sorted(names, key=str.casefold))})"
            )
        problems.add(f"symbol {sym.name!r} in the {where} is {phrase}{hint}")
    derivative = next(
        (node for node in sympy.preorder_traversal(expr) if isinstance(node, sympy.Derivative)),
        None,
    )
    if derivative is not None:
        reason = _derivative_reason(derivative, velocity_of)
        if reason is not None:
            problems.add(f"the {where} contains the derivative {derivative}; {reason}")
    return bool(unknown) or derivative is not None


def _derivative_reason(
    derivative: sympy.Derivative, velocity_of: Mapping[sympy.Symbol, sympy.Symbol] | None
) -> str | None:
    """Why ``derivative`` cannot stand in an expression, and what to write instead; None for
    the derivative of an undeclared function of time, reported with that function."""
    target = derivative.expr
    if isinstance(target, sympy.core.function.AppliedUndef):
        return None
    if velocity_of is None:
        return (
            "expressions hold the state, the parameters and time, not derivatives: write a "
            "velocity through the momenta (Hamiltonian) or as a state (equations)"
        )
    count = derivative.derivative_count
    if target in velocity_of.values() or (target in velocity_of and count > 1):
        return (
            "that is a time derivative of a velocity (an acceleration or higher), and a "
            "Lagrangian L(q, v, t), its dissipation, forces and invariants hold only "
            "coordinates, velocities, parameters and time: Lagrangians with accelerations are "
            "not supported"
        )
    if target in velocity_of:
        return f"write the velocity of {target.name!r} as the symbol {velocity_of[target].name!r}"
    return "write velocities as symbols"


def _check_form(
    expr: sympy.Expr | None,
    where: str,
    partners: Sequence[sympy.Symbol],
    known: set[sympy.Symbol],
    problems: Problems,
) -> None:
    """Add a problem when ``expr`` holds none of its velocities (a Lagrangian) or momenta (a
    Hamiltonian) and unknown symbols none of which is close to a declared name (a misspelt
    coordinate is reported as such): most likely the other form was given.

    >>> p = Problems()
    >>> q, p_, k, q_dot = sympy.symbols("q p k q_dot")
    >>> _check_form(p_**2 / 2 + k * q**2 / 2, "Lagrangian", [q_dot], {q, q_dot, k}, p)
    >>> print(p.items[0])  # doctest: +NORMALIZE_WHITESPACE
    the Lagrangian holds none of the velocities (q_dot): is it a Hamiltonian? A Lagrangian
    L(q, q_dot, t) is written with the velocities; for H(q, p, t) use System.from_hamiltonian
    (form = "hamiltonian" in a file)
    """
    if expr is None or expr.free_symbols & set(partners):
        return
    names = [s.name for s in known]
    unknown = expr.free_symbols - known
    if not unknown or any(did_you_mean(s.name, names) for s in unknown):
        return
    names = ", ".join(s.name for s in partners)
    if where == "Lagrangian":
        problems.add(
            f"the Lagrangian holds none of the velocities ({names}): is it a Hamiltonian? A "
            "Lagrangian L(q, q_dot, t) is written with the velocities; for H(q, p, t) use "
            'System.from_hamiltonian (form = "hamiltonian" in a file)'
        )
    else:
        problems.add(
            f"the Hamiltonian holds none of the momenta ({names}): is it a Lagrangian? A "
            "Hamiltonian H(q, p, t) is written with the momenta; for L(q, q_dot, t) use "
            'System.from_lagrangian (form = "lagrangian" in a file)'
        )


def _check_time_free(expr: sympy.Expr | None, where: str, time: sympy.Symbol, problems: Problems):
    if expr is not None and time in expr.free_symbols:
        problems.add(
            f"the {where} depends on time {time.name!r}; it must be a function of the state and "
            "the parameters only"
        )


def _check_duplicates(groups: Mapping[str, Sequence[sympy.Symbol]], problems: Problems) -> bool:
    """Add a problem for each name used twice; whether there was any."""
    # Names are compared as an expression reads them (see ``scope``): 'µ' (micro sign) is 'μ'.
    seen: dict[str, tuple[str, str]] = {}
    found = False
    for role, symbols in groups.items():
        for sym in symbols:
            key = unicodedata.normalize("NFKC", sym.name)
            if key not in seen:
                seen[key] = (sym.name, role)
                continue
            first, first_role = seen[key]
            found = True
            if first == sym.name:
                problems.add(
                    f"the name {sym.name!r} is used twice (as a {first_role} and as a {role})"
                )
            else:
                problems.add(
                    f"the names {first!r} (a {first_role}) and {sym.name!r} (a {role}) read as "
                    f"the same name {key!r} in an expression (Unicode NFKC); rename one"
                )
    return found

def _is_collection(value: Any) -> bool:
    """Whether ``value`` holds items to iterate over: not a lone string or SymPy object."""
    return isinstance(value, Iterable) and not isinstance(value, str | bytes | sympy.Basic)
