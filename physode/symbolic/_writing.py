"""Writing a system built in Python as the text of a specification file (``System.to_spec``),
and rebuilding a system from that text for a data set (``physode.data.simulate``).

Every expression is written so that the specification reader reads it back as the same
expression: ``E`` (Euler's number) as ``exp(1)``, ``pi`` as ``acos(-1)`` where a name ``pi`` is
declared, the golden ratio and the tribonacci constant in radicals (``1/2 + sqrt(5)/2``), a
float as its shortest decimal form. Catalan's and the Euler-Mascheroni constant, which the
file's functions cannot write exactly, are refused. Each written expression is read back with the
reader's own parser and compared before the text is returned, so a name the format cannot hold
(a Python keyword, a declared name that is also a function the system calls) is refused with an
:class:`physode.InvalidArgumentError` that names it rather than written wrongly.
"""

from __future__ import annotations

import json
import keyword
import math
import numbers
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import sympy
from sympy.printing.str import StrPrinter

from physode._errors import InvalidArgumentError, SystemDefinitionError

if TYPE_CHECKING:
    from physode.symbolic._system import System

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


class _SpecPrinter(StrPrinter):
    """SymPy's ``str`` with the constants and floats written as the specification reader reads
    them back."""

    def __init__(self, declared: set[str]):
        super().__init__()
        self._declared = declared

    def _print_Float(self, expr: sympy.Float) -> str:
        if expr._prec <= 53:  # a float64 number: its shortest repr reads back as the same float
            return repr(float(expr))
        return super()._print_Float(expr)

    def _print_Exp1(self, expr: Any) -> str:
        return "exp(1)"  # a declared 'E' would read back as that name

    def _print_Pi(self, expr: Any) -> str:
        return "acos(-1)" if "pi" in self._declared else "pi"


def _string(text: str) -> str:
    """A TOML basic string (JSON's escapes are TOML's)."""
    return json.dumps(text, ensure_ascii=False)


def _key(name: str) -> str:
    return name if _BARE_KEY.fullmatch(name) else _string(name)


def _value(value: Any, where: str) -> str:
    """``value`` as a TOML value; an :class:`InvalidArgumentError` for what TOML cannot hold."""
    if hasattr(value, "tolist") and not isinstance(value, sympy.Basic):  # NumPy, torch
        value = value.tolist()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real) or isinstance(value, sympy.Number):
        number = float(value)
        if math.isnan(number):
            return "nan"
        if math.isinf(number):
            return "inf" if number > 0 else "-inf"
        return repr(number)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v, where) for v in value) + "]"
    if isinstance(value, Mapping):
        items = ", ".join(f"{_key(str(k))} = {_value(v, where)}" for k, v in value.items())
        return "{ " + items + " }" if items else "{}"
    raise InvalidArgumentError(
        f"{where} holds {value!r} ({type(value).__name__}), which a specification file cannot "
        "hold; give numbers, strings and lists of them"
    )


#: SymPy's constants that a file writes exactly with its own functions, as what it writes.
_IN_RADICALS = {
    sympy.GoldenRatio: (1 + sympy.sqrt(5)) / 2,
    sympy.TribonacciConstant: sympy.TribonacciConstant.rewrite(sympy.sqrt),
}
#: SymPy's constants that a file cannot write exactly, with what each is.
_NOT_WRITABLE = {sympy.Catalan: "Catalan's constant", sympy.EulerGamma: "the Euler-Mascheroni "
                 "constant"}  # fmt: skip


def _in_radicals(expr: Any) -> Any:
    """``expr`` with the golden ratio and the tribonacci constant written in radicals, exactly:
    a file has no name for them."""
    return expr.xreplace(_IN_RADICALS) if expr.has(*_IN_RADICALS) else expr


def _refuse_unwritable(system: System, expr: Any, where: str) -> None:
    """Refuse ``expr`` if it holds a constant that a file cannot write exactly (Catalan's)."""
    for constant, what in _NOT_WRITABLE.items():
        if expr.has(constant):
            raise InvalidArgumentError(
                f"system {system.name!r} cannot be written as a specification: {where} holds "
                f"{what} (sympy.{constant}), which a specification file cannot write exactly; "
                f"replace it by its value, expr.subs(sympy.{constant}, {float(constant)!r}), or "
                "by a parameter"
            )


def _plain(expr: Any) -> Any:
    """``expr`` with every symbol replaced by the plain symbol of its name, every float
    rounded to float64 and the constants a file writes in radicals so written: what a
    specification file holds, and what generated code computes."""
    expr = _in_radicals(sympy.sympify(expr))
    swap: dict[Any, Any] = {s: sympy.Symbol(s.name) for s in expr.atoms(sympy.Symbol)}
    swap.update({f: sympy.Float(float(f)) for f in expr.atoms(sympy.Float)})
    return expr.xreplace(swap)


class _Writer:
    def __init__(self, system: System):
        self.system = system
        names = [system.time_symbol.name, *system.state_names, *system.parameters]
        self.declared = set(names)
        for name in names:
            if keyword.iskeyword(name):
                raise InvalidArgumentError(
                    f"system {system.name!r} cannot be written as a specification: the name "
                    f"{name!r} is a Python keyword, which an expression in a file cannot hold; "
                    f"rename it (e.g. {name}_)"
                )
        self.printer = _SpecPrinter(self.declared)
        self.symbols = {name: sympy.Symbol(name) for name in names}

    def expression(self, expr: Any, where: str) -> str:
        """``expr`` as a TOML string, checked to read back as itself."""
        from physode.symbolic._spec import FUNCTIONS, RELATIONS, parse_expression
        from physode.symbolic._validation import Problems

        expr = sympy.sympify(expr)
        _refuse_unwritable(self.system, expr, where)
        text = self.printer.doprint(_in_radicals(expr))
        problems = Problems()
        back = parse_expression(text, self.symbols, where, problems)
        if back is None or not _same(back, expr):
            clashes = sorted(
                name for name in self.declared if name in FUNCTIONS or name in RELATIONS
            )
            hint = (
                f"; declared names that are also functions of the file format: "
                f"{', '.join(map(repr, clashes))}; rename them" if clashes else ""
            )
            said = "; ".join(problems.items) if problems.items else f"it reads back as {back}"
            raise InvalidArgumentError(
                f"system {self.system.name!r} cannot be written as a specification: {where} "
                f"= {text!r} does not read back as written ({said}){hint}"
            )
        return _string(text)


def spec_text(system: System) -> str:
    """The specification text of ``system`` (see :meth:`System.to_spec`)."""
    if system.spec_text is not None:
        return system.spec_text
    if system._distribution is not None and system._distribution_table is None:
        raise InvalidArgumentError(
            f"system {system.name!r} cannot be written as a specification: its "
            "initial_state_distribution is a Python callable, which a file cannot hold; give it "
            "as a table (e.g. {'kind': 'uniform', 'x': [-1, 1], ...}, see docs/systems.md)"
        )
    w = _Writer(system)
    form = system.form
    n = system.n_coordinates
    top = [f"name = {_string(system.name)}"]
    if system.description:
        top.append(f"description = {_string(system.description)}")
    if system.reference:
        top.append(f"reference = {_string(system.reference)}")
    top.append(f"form = {_string(form)}")
    if system.time_symbol.name != "t":
        top.append(f"time = {_string(system.time_symbol.name)}")
    if system.characteristic_time is not None:
        top.append(f"characteristic_time = {_value(system.characteristic_time, 'time')}")
    tables: list[str] = []
    names = system.state_names
    if form == "equations":
        if n is not None:
            top.append(f"n_coordinates = {n}")
        rows = [
            f"{_key(s)} = {w.expression(e, f'equation for {s}')}"
            for s, e in zip(names, system._equations, strict=True)
        ]
        tables.append("[equations]\n" + "\n".join(rows))
    else:
        coordinates, partners = names[:n], names[n:]
        top.append(f"coordinates = {_value(coordinates, 'coordinates')}")
        if form == "lagrangian":
            if partners != [f"{q}_dot" for q in coordinates]:
                top.append(f"velocities = {_value(partners, 'velocities')}")
            top.append(f"lagrangian = {w.expression(system._defining_expression, 'lagrangian')}")
            if system.dissipation is not None:
                top.append(f"dissipation = {w.expression(system.dissipation, 'dissipation')}")
            if system._mass_matrix_mode != "auto":
                top.append(f"mass_matrix = {_string(system._mass_matrix_mode)}")
        else:
            top.append(f"momenta = {_value(partners, 'momenta')}")
            top.append(
                f"hamiltonian = {w.expression(system._defining_expression, 'hamiltonian')}"
            )
        if system.forces is not None:
            rows = [
                f"{_key(q)} = {w.expression(f, f'force on {q}')}"
                for q, f in zip(coordinates, system.forces, strict=True)
            ]
            tables.append("[forces]\n" + "\n".join(rows))
    if system.parameters:
        rows = []
        for (name, value), bounds in zip(
            system.parameters.items(), system.parameter_ranges.values(), strict=True
        ):
            entry = {"value": value}
            if bounds != (value, value):
                entry["range"] = list(bounds)
            rows.append(f"{_key(name)} = {_value(entry, f'parameter {name!r}')}")
        tables.insert(0, "[parameters]\n" + "\n".join(rows))
    derived = form != "equations" and system.conservative  # the energy, added again on reading
    declared = {
        k: v for k, v in system.invariant_expressions.items() if not (derived and k == "energy")
    }
    if declared:
        rows = [f"{_key(k)} = {w.expression(v, f'invariant {k!r}')}" for k, v in declared.items()]
        tables.append("[invariants]\n" + "\n".join(rows))
    if system._distribution_table is not None:
        rows = [
            f"{_key(str(k))} = {_value(v, 'initial_state_distribution')}"
            for k, v in system._distribution_table.items()
        ]
        tables.append("[initial_state_distribution]\n" + "\n".join(rows))
    for label, state in system._named_states.items():
        rows = [f"{_key(s)} = {_value(x, 'initial_states')}" for s, x in zip(names, state,
                                                                             strict=True)]
        tables.append(f"[initial_states.{_key(label)}]\n" + "\n".join(rows))
    return "\n".join(top) + "\n" + "".join("\n" + t + "\n" for t in tables)


def _difference(given: System, rebuilt: System) -> str | None:
    """The first way ``rebuilt`` differs from ``given``; None when they are the same system."""
    facts = (
        "state_names", "parameters", "parameter_ranges", "invariant_names", "n_coordinates",
        "form", "name", "characteristic_time", "separable", "conservative", "_named_states",
    )
    for fact in facts:
        if getattr(given, fact) != getattr(rebuilt, fact):
            return f"{fact.lstrip('_')}: {getattr(given, fact)} against {getattr(rebuilt, fact)}"
    if given.time_symbol.name != rebuilt.time_symbol.name:
        return f"time: {given.time_symbol} against {rebuilt.time_symbol}"
    if (given._equations is None) != (rebuilt._equations is None):
        return "one solves its mass matrix symbolically, the other numerically"
    if given._equations is not None:
        pairs = zip(given.state_names, given._equations, rebuilt._equations, strict=True)
        compared = [(f"d{s}/dt", a, b) for s, a, b in pairs]
    else:
        compared = [("the mass matrix", given.mass_matrix, rebuilt.mass_matrix),
                    ("the forcing", given.forcing, rebuilt.forcing)]
    compared += [
        (f"invariant {k!r}", e, rebuilt.invariant_expressions[k])
        for k, e in given.invariant_expressions.items()
    ]
    for what, a, b in compared:
        if not _same(a, b):
            return f"{what}: {a} against {b}"
    return None


def _same(a: Any, b: Any) -> bool:
    """Whether the expressions (or matrices) ``a`` and ``b`` are the same as a file holds them:
    equal, or equal once multiplied out, as the equations derived from a constant written in
    radicals (``1/2 + sqrt(5)/2`` for the golden ratio) come back."""
    radicals = sympy.sympify(a).has(*_IN_RADICALS) or sympy.sympify(b).has(*_IN_RADICALS)
    a, b = _plain(a), _plain(b)
    if a == b:
        return True
    if not radicals:
        return False
    difference = sympy.simplify(a - b)
    if isinstance(difference, sympy.MatrixBase):
        return bool(difference.is_zero_matrix)
    return difference == 0


def rebuilt_from_spec(system: System) -> System:
    """``system`` rebuilt from :meth:`System.to_spec`, so that a data set can store its text;
    an :class:`InvalidArgumentError` when the rebuilt system is not the same as ``system``."""
    from physode.systems import _from_text

    text = spec_text(system)
    try:
        rebuilt = _from_text(text, f"the specification of system {system.name!r} (to_spec)")
    except SystemDefinitionError as exc:
        rebuilt, difference = None, f"reading it back fails: {exc}"
    else:
        difference = _difference(system, rebuilt)
    if difference is None:
        return rebuilt
    assumed = sorted(
        s.name for s in [*system.state_symbols, *system.parameter_symbols]
        if s.assumptions0 != sympy.Symbol(s.name).assumptions0
    )
    hint = (
        f"; the symbols {', '.join(map(repr, assumed))} carry SymPy assumptions (such as "
        "real=True), which a specification file does not hold: build the system with plain "
        "symbols" if assumed else "; please report this as a bug of physode"
    )
    raise InvalidArgumentError(
        f"system {system.name!r} differs once written as a specification and read back, so a "
        f"data set could not rebuild it: {difference}{hint}"
    )
