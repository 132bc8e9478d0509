"""``System``: a physical system from a Lagrangian, a Hamiltonian or first-order equations.

The three constructors validate their input (collecting every problem into one
:class:`physode.SystemDefinitionError`), derive the equations of motion and the energy with SymPy,
and keep everything symbolic; torch code is generated on first use and cached.
"""

from __future__ import annotations

import functools
import inspect
import math
import os
import pickle
import random
import sys
import unicodedata
import warnings
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any

import numpy
import sympy
import torch

from physode._checks import is_finite_real, is_int
from physode._errors import InvalidArgumentError, PhysodeWarning, SystemDefinitionError
from physode.symbolic import _mechanics
from physode.symbolic._codegen import (
    generate_sources,
    load_kernel,
    non_real_constants,
    supported_function_names,
    unsupported_functions,
)
from physode.symbolic._names import (
    SYMPY_CONSTANTS,
    bare_sympy_names,
    caret_reason,
    constant_names,
    did_you_mean,
    function_hint,
    keyword_reason,
    read_names,
    scope,
)
from physode.symbolic._sampling import Context, Distribution, distribution_from_table

SymbolLike = sympy.Symbol | str
MASS_MATRIX_MODES = ("auto", "symbolic", "numeric")
#: Largest number of coordinates for which ``mass_matrix="auto"`` inverts a full mass matrix
#: symbolically; above it the solve is done numerically per batch with ``torch.linalg.solve``.
SYMBOLIC_SOLVE_MAX = 3


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
    if isinstance(item, str):
        if not item.isidentifier():
            problems.add(f"{what} name {item!r} is not a valid identifier")
            return None
        return sympy.Symbol(item)
    if isinstance(item, sympy.Symbol):
        return item  # with its assumptions; expressions find it by name (see _by_name)
    problems.add(f"{what} {item!r} must be a sympy.Symbol or a name, not {type(item).__name__}")
    return None


def _by_name(
    expr: sympy.Expr, where: str, problems: Problems, known: Collection[sympy.Symbol] = ()
) -> sympy.Expr | None:
    """``expr`` with every symbol replaced by the ``known`` (declared) symbol of its name, else
    by the plain symbol of that name (None, with a problem added, when two different symbols
    share a name).

    Symbols are matched by name, as in a specification file: ``Symbol("theta", real=True)`` in a
    Lagrangian is the coordinate ``theta``, whatever assumptions either was declared with. A
    declared symbol keeps its assumptions, so that a coordinate declared real is differentiated
    as one (``Abs(q)`` to ``sign(q)``, not into real and imaginary parts). Two symbols of one
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
    specification file. The functions of time in ``dynamic`` (``q(t)``, ``q(t).diff(t)``)
    become their plain symbols.
    """
    if value is REPORTED:
        return None
    if value is None:
        problems.add(f"{where} is None; give a SymPy expression")
        return None
    if isinstance(value, str) and caret_reason(value) is not None:
        problems.add(f"{where}: {caret_reason(value)}")
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
            expr = sympy.sympify(text, locals=names)
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
            problems.add(
                f"{where} holds {function}, a function of time that is not declared: list "
                f"{name!r} among the {dynamic.roles} (or write it as a symbol)"
            )
    if bad:
        supported = supported_function_names() + ["sqrt"]
        named = ", ".join(name + function_hint(name, supported) for name in sorted(bad))
        problems.add(
            f"{where} uses function(s) {named} that have no torch translation; the supported "
            f"functions: {', '.join(sorted(supported))}"
        )
    for constant in non_real_constants(expr):
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


class _Symbolic:
    """An attribute of :class:`System` holding SymPy expressions, loaded on first use after
    unpickling (from the ``_symbolic`` blob that ``System.__getstate__`` writes).

    A data descriptor rather than a ``__getattr__`` fallback: Python also calls ``__getattr__``
    when a cached property raises AttributeError while it computes, which would hide that error
    behind "no attribute".
    """

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, system: System | None, owner: type | None = None) -> Any:
        if system is None:
            return self
        values = system.__dict__
        if self.name not in values:
            blob = values.pop("_symbolic", None)
            if blob is None:
                raise AttributeError(f"'System' object has no attribute {self.name!r}")
            values.update(pickle.loads(blob))
        return values[self.name]

    def __set__(self, system: System, value: Any) -> None:
        system.__dict__[self.name] = value


class System:
    """A physical system: equations of motion, parameters, invariants, initial states.

    Build one with :meth:`from_lagrangian`, :meth:`from_hamiltonian`, :meth:`from_equations`, or
    load a specification file with :func:`physode.systems.load`. The state is a float tensor of
    shape ``(..., n_state)`` ordered as :attr:`state_names`; parameters are ordered as
    :attr:`parameters`.

    Examples
    --------
    >>> import sympy, torch
    >>> q, p, k = sympy.symbols("q p k")
    >>> osc = System.from_hamiltonian(p**2 / 2 + k * q**2 / 2, [q], [p], {k: 4.0})
    >>> osc.state_names, osc.parameters
    (['q', 'p'], {'k': 4.0})
    >>> osc.rhs(0.0, torch.tensor([1.0, 0.0]))
    tensor([ 0., -4.])
    >>> osc.invariants(torch.tensor([1.0, 0.0]))["energy"]
    tensor(2.)
    """

    def __init__(
        self,
        *,
        name: str,
        form: str,
        states: Sequence[sympy.Symbol],
        parameter_symbols: Sequence[sympy.Symbol],
        parameter_values: Sequence[float],
        parameter_ranges: Sequence[tuple[float, float]],
        time: sympy.Symbol,
        equations: Sequence[sympy.Expr] | None,
        dynamics: _mechanics.LagrangianDynamics | None,
        energy: sympy.Expr | None,
        conservative: bool,
        invariants: Mapping[str, sympy.Expr],
        n_coordinates: int | None,
        separable: bool,
        distribution: Distribution | Callable | None,
        initial_states: Mapping[str, Sequence[float]],
        description: str = "",
        reference: str = "",
        characteristic_time: float | None = None,
        dissipation: sympy.Expr | None = None,
        forces: Sequence[sympy.Expr] | None = None,
    ):
        self.name = name
        self.form = form
        self.description = description
        self.reference = reference
        self._spec_text: str | None = None  # set by the specification loader only
        self.time_symbol = time
        self.state_symbols = list(states)
        self.parameter_symbols = list(parameter_symbols)
        self._values = [float(v) for v in parameter_values]
        self._ranges = [tuple(map(float, r)) for r in parameter_ranges]
        self._equations = None if equations is None else list(equations)
        self._dynamics = dynamics
        # Small facts about the expressions, kept apart so that numerics never need the
        # expressions themselves (which an unpickled system loads only on demand).
        self._explicit = equations is not None
        self._has_energy = energy is not None
        self._invariant_names = list(invariants)
        self.energy_expression = energy
        self.conservative = conservative
        self.invariant_expressions = dict(invariants)
        self.n_coordinates = n_coordinates
        self.separable = separable
        self._distribution = distribution
        self._named_states = {k: [float(x) for x in v] for k, v in initial_states.items()}
        self.characteristic_time = characteristic_time
        self.dissipation = dissipation
        self.forces = None if forces is None else list(forces)

    # ------------------------------------------------------------------ descriptive attributes
    @property
    def spec_text(self) -> str | None:
        """The text of the specification file this system was loaded from; None for a system
        built in Python.

        Read-only: a data set stores this text to rebuild the system, so it must be the text the
        system was derived from. To store a system built in Python, write it as a specification
        file and load that (:func:`physode.systems.load`).
        """
        return self._spec_text

    @spec_text.setter
    def spec_text(self, value: Any) -> None:
        raise AttributeError(
            f"spec_text of {self.name!r} is read-only: it is the text of the specification file "
            "the system was derived from (None for a system built in Python); write the system "
            "as a specification file and load it with physode.systems.load(path)"
        )

    @property
    def state_names(self) -> list[str]:
        """Names of the state components, in order."""
        return [s.name for s in self.state_symbols]

    @property
    def parameters(self) -> dict[str, float]:
        """Default parameter values, in the system's fixed order."""
        return {s.name: v for s, v in zip(self.parameter_symbols, self._values, strict=True)}

    @property
    def parameter_ranges(self) -> dict[str, tuple[float, float]]:
        """Sampling range of every parameter; ``(v, v)`` for one that is held fixed."""
        return {s.name: r for s, r in zip(self.parameter_symbols, self._ranges, strict=True)}

    @property
    def n_state(self) -> int:
        """Number of state components."""
        return len(self.state_symbols)

    @property
    def n_params(self) -> int:
        """Number of parameters."""
        return len(self.parameter_symbols)

    @property
    def coordinate_names(self) -> list[str] | None:
        """The first ``n_coordinates`` state names (the generalized coordinates), if any."""
        return None if self.n_coordinates is None else self.state_names[: self.n_coordinates]

    @property
    def invariant_names(self) -> list[str]:
        """Names of the conserved quantities that :meth:`invariants` returns."""
        return list(self._invariant_names)

    @property
    def initial_states(self) -> dict[str, torch.Tensor]:
        """Named initial states (e.g. ``"figure_eight"``), float64 tensors of shape (n_state,)."""
        return {k: torch.tensor(v, dtype=torch.float64) for k, v in self._named_states.items()}

    @property
    def equations(self) -> dict[str, sympy.Expr]:
        """``dy/dt`` for each state as SymPy expressions.

        For a mass matrix solved numerically the accelerations are ``M^-1 F`` (see
        :attr:`mass_matrix`, :attr:`forcing`); they are shown here solved by LU on demand.
        """
        eqs = self._equations
        if eqs is None:
            n = self.n_coordinates
            acc = self._dynamics.mass_matrix.LUsolve(self._dynamics.forcing)
            eqs = list(self.state_symbols[n:]) + [acc[i] for i in range(n)]
        return dict(zip(self.state_names, eqs, strict=True))

    @property
    def mass_matrix(self) -> sympy.Matrix | None:
        """The Lagrangian mass matrix ``d2L/dv2`` (None for other forms)."""
        return None if self._dynamics is None else self._dynamics.mass_matrix

    @property
    def forcing(self) -> sympy.Matrix | None:
        """Right-hand side ``F`` of ``M a = F`` (None for other forms)."""
        return None if self._dynamics is None else self._dynamics.forcing

    @functools.cached_property
    def time_dependent(self) -> bool:
        """Whether the equations of motion contain the time symbol (a forced system).

        Worked out by :meth:`compile`, so that a system loaded from the derivation cache answers
        without opening its SymPy expressions.

        >>> import physode
        >>> [physode.systems.load(name).time_dependent for name in ("duffing", "pendulum")]
        [True, False]
        """
        if self.mass_matrix is not None:  # read M and F rather than solve M a = F symbolically
            expressions = [*self.mass_matrix, *self.forcing]
        else:
            expressions = list(self.equations.values())
        return any(self.time_symbol in sympy.sympify(e).free_symbols for e in expressions)

    def __repr__(self) -> str:
        return (
            f"System({self.name!r}, form={self.form!r}, states={self.state_names}, "
            f"parameters={self.parameters})"
        )

    _KERNELS = ("_rhs_kernel", "_invariant_kernels", "_energy_kernel")

    # The SymPy expressions: pickled as one blob that an unpickled system opens on first use.
    # Building them costs SymPy far more than the numerics, which need only the generated code.
    _equations = _Symbolic()
    _dynamics = _Symbolic()
    energy_expression = _Symbolic()
    invariant_expressions = _Symbolic()
    dissipation = _Symbolic()
    forces = _Symbolic()
    _SYMBOLIC = (
        "_equations", "_dynamics", "energy_expression", "invariant_expressions", "dissipation",
        "forces",
    )

    def __getstate__(self) -> dict[str, Any]:
        # Compiled kernels are not picklable; their generated sources are, and rebuild them on
        # first use without SymPy (physode.symbolic._cache keeps derived systems on disk).
        state = {
            k: v
            for k, v in self.__dict__.items()
            if k not in self._KERNELS and k not in self._SYMBOLIC
        }
        if "_symbolic" not in state:
            symbolic = {k: self.__dict__[k] for k in self._SYMBOLIC}
            state["_symbolic"] = pickle.dumps(symbolic, protocol=pickle.HIGHEST_PROTOCOL)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def _kernel(self, name: str, outputs: Callable[[], Mapping[str, sympy.Expr]]):
        """The compiled kernel ``name`` of ``outputs()`` (label -> expression, the labels naming
        the outputs in errors), generating its code only once."""
        sources = self.__dict__.setdefault("_kernel_sources", {})
        if name not in sources:
            out = outputs()
            sources[name] = generate_sources(
                list(out.values()), self.state_symbols, self.parameter_symbols, self.time_symbol,
                name, labels=list(out),
            )
        return load_kernel(sources[name])

    def compile(self) -> System:
        """Generate the code that simulating and checking data need now rather than on first use.

        Returns the system itself. :func:`physode.systems.load` does this before caching a
        derived system on disk.
        """
        self._rhs_kernel  # noqa: B018 (cached properties build on access)
        self.time_dependent  # noqa: B018
        if self.invariant_names:
            self._invariant_kernels  # noqa: B018
        return self

    # ------------------------------------------------------------------ numerics
    def default_parameters(self, like: torch.Tensor | None = None) -> torch.Tensor:
        """The default parameters as a tensor of shape (n_params,) (dtype/device of ``like``).

        Examples
        --------
        >>> import physode
        >>> physode.systems.load("pendulum").default_parameters()
        tensor([1.0000, 9.8100, 1.0000], dtype=torch.float64)
        """
        dtype = torch.float64 if like is None else like.dtype
        device = None if like is None else like.device
        return torch.tensor(self._values, dtype=dtype, device=device)

    def _inputs(self, y: torch.Tensor, p: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        if not isinstance(y, torch.Tensor):
            raise InvalidArgumentError(f"y must be a torch.Tensor, got {type(y).__name__}")
        if y.shape[-1:] != (self.n_state,):
            raise InvalidArgumentError(
                f"y has shape {tuple(y.shape)}; {self.name} needs (..., {self.n_state}) with "
                f"states {self.state_names}"
            )
        if not y.is_floating_point():
            # The defaults would be cast to y's dtype: an integer state would truncate g = 9.81
            # to 9 and give wrong numbers without a word.
            raise InvalidArgumentError(
                f"y has dtype {y.dtype}; {self.name} needs a floating-point state, e.g. "
                "torch.tensor([1.0, 0.0]) rather than torch.tensor([1, 0]), or y.double()"
            )
        if p is None:
            return y, self.default_parameters(y)
        if not isinstance(p, torch.Tensor) or p.shape[-1:] != (self.n_params,):
            shape = tuple(p.shape) if isinstance(p, torch.Tensor) else type(p).__name__
            raise InvalidArgumentError(
                f"p has shape {shape}; {self.name} needs a tensor (..., {self.n_params}) with "
                f"parameters {list(self.parameters)}"
            )
        if p.is_complex() or p.dtype == torch.bool:
            raise InvalidArgumentError(
                f"p has dtype {p.dtype}; the parameters {list(self.parameters)} of {self.name} "
                "are real numbers, e.g. system.default_parameters()"
            )
        try:
            if p.dim() > 1 and p.shape[:-1] != y.shape[:-1]:
                torch.broadcast_shapes(y.shape[:-1], p.shape[:-1])
        except RuntimeError:
            raise InvalidArgumentError(
                f"p has shape {tuple(p.shape)}, whose batch shape {tuple(p.shape[:-1])} does not "
                f"broadcast against the batch shape {tuple(y.shape[:-1])} of y "
                f"{tuple(y.shape)}; give one parameter row per state or one for all"
            ) from None
        # Like the defaults, p takes y's dtype and device: the result's dtype is then y's
        # whatever p's shape (mixed dtypes promoted only where p has a batch dimension).
        if p.dtype != y.dtype or p.device != y.device:
            p = p.to(dtype=y.dtype, device=y.device)
        return y, p

    @functools.cached_property
    def _rhs_kernel(self):
        def outputs():
            names = self.state_names
            if self._equations is not None:
                return {f"the equation for {s}": e for s, e in zip(names, self._equations)}
            n = self.n_coordinates
            dyn = self._dynamics
            out = {f"the equation for {s}": v for s, v in zip(names, self.state_symbols[n:])}
            out.update({
                f"the mass matrix entry ({names[i]}, {names[j]})": dyn.mass_matrix[i, j]
                for i in range(n) for j in range(n)
            })
            out.update({f"the forcing on {names[i]}": dyn.forcing[i] for i in range(n)})
            return out

        return self._kernel("rhs", outputs)

    @property
    def exactly_rounded(self) -> bool:
        """Whether :meth:`rhs` uses exactly rounded operations only (arithmetic, ``abs``, ...).

        Such a system gives each row of a batch the same bits whatever batch or code path
        evaluates it, and without gradients its right-hand side runs as NumPy code, several times
        faster on small batches (see :func:`physode.symbolic.compile_kernel`). Functions such as
        ``sin`` or ``sqrt`` and a mass matrix to solve make it false.

        Examples
        --------
        >>> import physode
        >>> physode.systems.load("three_body").exactly_rounded
        True
        >>> physode.systems.load("pendulum").exactly_rounded
        False
        """
        return self._explicit and self._rhs_kernel.numpy_source is not None

    @property
    def rhs_numpy(self):
        """:meth:`rhs` as a function of NumPy arrays, ``(t, y, p) -> dy/dt``, or None.

        Available where the system is :attr:`exactly_rounded` (with the same bits as
        :meth:`rhs`). All three arguments are required and share one floating dtype; ``t`` is
        0-dim or one time per row, as for :meth:`rhs`. Division by zero produces inf or NaN
        with NumPy's usual warnings. Vector fields built on it let per-sample solves without
        gradients run on NumPy (see :func:`physode.solve`).

        Examples
        --------
        >>> import numpy as np, physode
        >>> osc = physode.systems.load("harmonic_oscillator")
        >>> p = np.array(list(osc.parameters.values()))
        >>> osc.rhs_numpy(np.array(0.0), np.array([[1.0, 0.0]]), p).shape
        (1, 2)
        """
        return self._rhs_kernel.numpy if self.exactly_rounded else None

    def rhs(self, t: torch.Tensor | float, y: torch.Tensor, p: torch.Tensor | None = None):
        """The time derivative ``dy/dt``: a pure function of time, state and parameters.

        Parameters
        ----------
        t : tensor or float
            Time: 0-dim, or one time per row shaped ``(batch,) + (1,) * (y.ndim - 1)``.
        y : torch.Tensor
            State, shape ``(..., n_state)``.
        p : torch.Tensor, optional
            Parameters, shape ``(..., n_params)`` broadcastable against ``y[..., 0]``, real;
            cast to the dtype and device of ``y``. The defaults when omitted.

        Returns
        -------
        torch.Tensor
            Shape ``(..., n_state)`` (the broadcast batch shape of ``y`` and ``p``), dtype of
            ``y``.

        Raises
        ------
        physode.InvalidArgumentError
            When ``y`` is not a floating-point tensor ``(..., n_state)``, or ``p`` not a real
            tensor ``(..., n_params)`` whose batch shape broadcasts against that of ``y``.

        Examples
        --------
        >>> import physode, torch
        >>> pend = physode.systems.load("pendulum")
        >>> pend.rhs(0.0, torch.tensor([0.5, 1.0], dtype=torch.float64))
        tensor([ 1.0000, -4.7032], dtype=torch.float64)
        """
        y, p = self._inputs(y, p)
        if not isinstance(t, torch.Tensor):
            t = torch.as_tensor(t, dtype=y.dtype, device=y.device)
        out = self._rhs_kernel(t, y, p)
        if self._explicit:
            return out
        n = self.n_coordinates
        mass = out[..., n : n + n * n].unflatten(-1, (n, n))
        acc = torch.linalg.solve(mass, out[..., n + n * n :].unsqueeze(-1)).squeeze(-1)
        return torch.cat((out[..., :n], acc), dim=-1)

    @functools.cached_property
    def _invariant_kernels(self):
        def exprs():
            return {f"invariant {k!r}": self.invariant_expressions[k] for k in self.invariant_names}

        def scales():
            return {
                f"the scale of {label}": sum(
                    (abs(term) for term in sympy.Add.make_args(sympy.expand_mul(e))),
                    sympy.Integer(0),
                )
                for label, e in exprs().items()
            }

        return self._kernel("invariants", exprs), self._kernel("scales", scales)

    def _evaluate_invariants(self, y, p, which: int) -> dict[str, torch.Tensor]:
        y, p = self._inputs(y, p)
        if not self.invariant_names:
            return {}
        out = self._invariant_kernels[which](y.new_zeros(()), y, p)
        return {name: out[..., i] for i, name in enumerate(self.invariant_names)}

    def invariants(self, y: torch.Tensor, p: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The conserved quantities at the states ``y``.

        Energy (``"energy"``) is included for every time-independent conservative system: the
        Hamiltonian, or ``sum_i v_i dL/dv_i - L``. Declared invariants (momentum components,
        angular momentum, any expression) follow in their declared order.

        Parameters
        ----------
        y : torch.Tensor
            States, shape ``(..., n_state)``.
        p : torch.Tensor, optional
            Parameters ``(..., n_params)``; defaults when omitted.

        Returns
        -------
        dict of str to torch.Tensor
            Each of shape ``y.shape[:-1]`` (broadcast with ``p``).

        Examples
        --------
        >>> import physode
        >>> kep = physode.systems.load("kepler")
        >>> sorted(kep.invariants(kep.initial_state()))
        ['angular_momentum', 'energy', 'lrl_x', 'lrl_y']
        """
        return self._evaluate_invariants(y, p, 0)

    def invariant_scales(
        self, y: torch.Tensor, p: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """The magnitude each invariant is compared with: the sum of its terms' absolute values.

        For an invariant written as a sum of terms ``I = sum_k T_k`` (after multiplying out
        products of sums; powers of sums such as ``(x - y)**2`` stay one term),
        the scale is ``sum_k |T_k|``: kinetic plus absolute potential energy, the sum of the
        bodies' momentum magnitudes per component, and so on. It is never smaller than ``|I|``
        and stays positive when ``I`` itself is zero by cancellation (zero total momentum); it is
        zero only where every term vanishes.

        Examples
        --------
        >>> import physode, torch
        >>> osc = physode.systems.load("harmonic_oscillator")
        >>> osc.invariant_scales(torch.tensor([1.0, 1.0], dtype=torch.float64))["energy"]
        tensor(1., dtype=torch.float64)
        """
        return self._evaluate_invariants(y, p, 1)

    @functools.cached_property
    def _energy_kernel(self):
        return self._kernel("energy", lambda: {"the energy": self.energy_expression})

    def energy(self, y: torch.Tensor, p: torch.Tensor | None = None) -> torch.Tensor:
        """The energy: ``sum_i v_i dL/dv_i - L`` of a Lagrangian, the Hamiltonian, or the
        declared ``energy`` invariant of equations; also where dissipation or generalized
        ``forces`` (a drive ``Q(t)`` included) make it change.

        Raises
        ------
        physode.InvalidArgumentError
            When the system has none: first-order equations without a declared ``energy``
            invariant, or a Lagrangian or Hamiltonian that depends on time explicitly (its
            energy function would depend on time too, and this method takes none; write a
            drive as a generalized force instead, which leaves ``L`` or ``H`` free of time).

        Examples
        --------
        >>> import physode, torch
        >>> dp = physode.systems.load("damped_pendulum")
        >>> float(dp.energy(torch.tensor([0.0, 2.0], dtype=torch.float64)))  # doctest: +ELLIPSIS
        0.903...
        """
        if not self._has_energy:
            raise InvalidArgumentError(self._no_energy_reason())
        y, p = self._inputs(y, p)
        return self._energy_kernel(y.new_zeros(()), y, p)[..., 0]

    def _no_energy_reason(self) -> str:
        """Why :meth:`energy` is not available, and how to make it so."""
        t = self.time_symbol.name
        if self.form == "equations":
            return (
                f"{self.name} has no energy function: equations have one only where they declare "
                "an 'energy' invariant (invariants={'energy': ...}, or energy = \"...\" under "
                "[invariants] in a file)"
            )
        if self.form == "lagrangian":
            what, energy, rate = "Lagrangian", "sum_i v_i dL/dv_i - L", f"-∂L/∂{t}"
        else:
            what, energy, rate = "Hamiltonian", "H", f"∂H/∂{t}"
        return (
            f"{self.name} has no energy function: its {what} depends on time {t!r} explicitly, "
            f"so its energy function {energy} depends on {t!r} as well and is not conserved (it "
            f"changes at the rate {rate}); energy(y, p) takes no time. A drive written as a "
            f"generalized force (forces={{q: Q({t})}}, or [forces] in a file) leaves the {what} "
            "free of time and the energy available"
        )

    def vector_field(
        self,
        learnable: Sequence[str] = (),
        values: Mapping[str, float] | None = None,
        parameters_in_state: bool = False,
    ):
        """The system as an ``nn.Module`` ``f(t, y)`` for the solver layer.

        Parameters
        ----------
        learnable : sequence of str
            Parameters to make ``nn.Parameter``s (named as in the system); the others are
            buffers.
        values : mapping of str to float, optional
            Initial values overriding the defaults (e.g. a wrong guess to train from).
        parameters_in_state : bool
            If True, ``f`` takes ``y`` of shape ``(..., n_state + n_params)``: the state followed
            by per-trajectory parameters, whose derivative is zero (how simulations carry one
            parameter set per trajectory through a per-sample solve). The module's own
            parameters are then unused.

        Returns
        -------
        physode.symbolic.SystemVectorField
            ``separable`` and ``n_coordinates`` tell the symplectic integrators how the state
            splits.

        Examples
        --------
        >>> import physode
        >>> f = physode.systems.load("three_body").vector_field(learnable=["m1", "m2", "m3"])
        >>> sorted(name for name, _ in f.named_parameters())
        ['m1', 'm2', 'm3']
        """
        from physode.symbolic._vector_field import SystemVectorField

        return SystemVectorField(
            self, learnable=learnable, values=values, parameters_in_state=parameters_in_state
        )

    # ------------------------------------------------------------------ sampling
    def initial_state(self, name: str | None = None) -> torch.Tensor:
        """A named initial state (the first one listed when ``name`` is None), float64.

        Raises
        ------
        physode.InvalidArgumentError
            When the name is unknown (the message lists the named states).
        """
        if not self._named_states:
            raise InvalidArgumentError(f"{self.name} has no named initial states")
        if name is None:
            name = next(iter(self._named_states))
        if name not in self._named_states:
            raise InvalidArgumentError(
                f"{self.name} has no initial state {name!r}; named states: "
                f"{', '.join(self._named_states)}"
            )
        return torch.tensor(self._named_states[name], dtype=torch.float64)

    def sample_parameters(self, n: int, seed: int = 0) -> torch.Tensor:
        """Draw parameters uniformly from :attr:`parameter_ranges`.

        Returns
        -------
        torch.Tensor
            float64, shape ``(n, n_params)``.

        Examples
        --------
        >>> import physode
        >>> physode.systems.load("pendulum").sample_parameters(4, seed=1).shape
        torch.Size([4, 3])
        """
        n = _check_count(n)
        gen = _generator(seed)
        lo = torch.tensor([r[0] for r in self._ranges], dtype=torch.float64)
        hi = torch.tensor([r[1] for r in self._ranges], dtype=torch.float64)
        return lo + (hi - lo) * torch.rand(n, self.n_params, generator=gen, dtype=torch.float64)

    def sample_initial_states(
        self, n: int, seed: int = 0, p: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Draw initial states from the system's own distribution.

        Parameters
        ----------
        n : int
            Number of states.
        seed : int
            Seed of the private generator; the same seed gives the same states.
        p : torch.Tensor, optional
            Per-sample parameters ``(n, n_params)`` for distributions that depend on them (the
            orbital ones use the masses and G); the defaults when omitted.

        Returns
        -------
        torch.Tensor
            float64, shape ``(n, n_state)``.

        Examples
        --------
        >>> import physode
        >>> y0 = physode.systems.load("three_body").sample_initial_states(8, seed=0)
        >>> y0.shape
        torch.Size([8, 12])
        """
        n = _check_count(n)
        gen = _generator(seed)
        if p is None:
            p = self.default_parameters().expand(n, self.n_params)
        else:
            p = torch.as_tensor(p, dtype=torch.float64)
            if p.shape not in ((self.n_params,), (n, self.n_params)):
                raise InvalidArgumentError(
                    f"p has shape {tuple(p.shape)}; give ({self.n_params},) or "
                    f"({n}, {self.n_params}) for parameters {list(self.parameters)}"
                )
            p = p.expand(n, self.n_params)
        dist = self._distribution
        if dist is None:
            return 2 * torch.rand(n, self.n_state, generator=gen, dtype=torch.float64) - 1
        if callable(dist) and not hasattr(dist, "sample"):
            out = torch.as_tensor(dist(n, gen), dtype=torch.float64)
            if out.shape != (n, self.n_state):
                raise InvalidArgumentError(
                    f"the initial-state sampler of {self.name} returned shape {tuple(out.shape)}, "
                    f"expected {(n, self.n_state)}"
                )
            return out
        return dist.sample(n, gen, self._context(), p)

    def _context(self) -> Context:
        return Context(tuple(self.state_names), tuple(self.parameters), self._named_states)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_lagrangian(
        cls,
        lagrangian: sympy.Expr,
        coordinates: Sequence[sympy.Symbol | sympy.Function],
        parameters: Mapping[SymbolLike, float] | Sequence[SymbolLike] = (),
        *,
        velocities: Sequence[sympy.Symbol] | None = None,
        time: SymbolLike | None = None,
        dissipation: sympy.Expr | None = None,
        forces: Mapping[SymbolLike, sympy.Expr] | Sequence[sympy.Expr] | None = None,
        invariants: Mapping[str, sympy.Expr] | None = None,
        mass_matrix: str = "auto",
        **options: Any,
    ) -> System:
        """A system from its Lagrangian ``L(q, v, t)``, via the Euler-Lagrange equations.

        The state is ``[q_1..q_n, v_1..v_n]``. Accelerations solve ``M a = F`` with
        ``M = d2L/dv2``: symbolically when ``M`` is diagonal or has at most
        ``SYMBOLIC_SOLVE_MAX`` (3) rows, otherwise numerically per batch with
        ``torch.linalg.solve`` (``mass_matrix="auto"``; force one with ``"symbolic"`` or
        ``"numeric"``).

        Parameters
        ----------
        lagrangian : sympy.Expr
            ``L`` in the coordinates and velocities.
        coordinates : sequence
            Symbols ``q``; or ``sympy.physics.mechanics.dynamicsymbols``, in which case
            ``q(t).diff(t)`` in ``L`` becomes the velocity symbol ``<q>_dot``.
        parameters : mapping of symbol (or name) to float
            Every other symbol, with its default value.
        velocities : sequence of sympy.Symbol, optional
            Velocity symbols; default ``Symbol("<q>_dot")`` for each coordinate.
        time : sympy.Symbol or str, optional
            The time symbol (default ``Symbol("t")``).
        dissipation : sympy.Expr, optional
            Rayleigh dissipation function ``R(q, v)`` (adds ``-dR/dv``).
        forces : mapping or sequence, optional
            Generalized forces ``Q_i`` per coordinate (may depend on time).
        invariants : mapping of str to sympy.Expr, optional
            Declared conserved quantities; energy is added automatically when ``L`` is
            time-independent and there is no dissipation or force.
        mass_matrix : {"auto", "symbolic", "numeric"}
            How the accelerations are solved.
        **options
            ``name``, ``description``, ``reference``, ``parameter_ranges``,
            ``initial_state_distribution`` (a table as in a specification file, or a callable
            ``(n, generator) -> (n, n_state)``), ``initial_states`` (name -> list of floats),
            ``characteristic_time``.

        Returns
        -------
        System

        Raises
        ------
        physode.SystemDefinitionError
            Listing every problem: unknown symbols, parameters without value, time in an
            invariant, a singular mass matrix, ...

        Examples
        --------
        >>> import sympy
        >>> th, w, m, g, l = sympy.symbols("theta theta_dot m g l")
        >>> L = m * l**2 * w**2 / 2 + m * g * l * sympy.cos(th)
        >>> pend = System.from_lagrangian(L, [th], {m: 1.0, g: 9.81, l: 1.0})
        >>> pend.equations["theta_dot"]
        -g*sin(theta)/l
        """
        problems = Problems()
        system = build_lagrangian(
            problems, lagrangian, coordinates, parameters, velocities=velocities, time=time,
            dissipation=dissipation, forces=forces, invariants=invariants,
            mass_matrix=mass_matrix, **options,
        )
        problems.raise_if_any()
        warn_constants(system)
        return system

    @classmethod
    def from_hamiltonian(
        cls,
        hamiltonian: sympy.Expr,
        coordinates: Sequence[sympy.Symbol],
        momenta: Sequence[sympy.Symbol],
        parameters: Mapping[SymbolLike, float] | Sequence[SymbolLike] = (),
        *,
        time: SymbolLike | None = None,
        forces: Mapping[SymbolLike, sympy.Expr] | Sequence[sympy.Expr] | None = None,
        invariants: Mapping[str, sympy.Expr] | None = None,
        **options: Any,
    ) -> System:
        """A system from its Hamiltonian ``H(q, p, t)``: ``dq/dt = dH/dp``, ``dp/dt = -dH/dq``.

        The state is ``[q_1..q_n, p_1..p_n]``; ``H`` is the energy when it does not depend on
        time. ``separable`` is True when ``H = T(p) + V(q)``.

        Parameters
        ----------
        hamiltonian : sympy.Expr
        coordinates, momenta : sequence of sympy.Symbol
        parameters : mapping of symbol (or name) to float
        time : sympy.Symbol or str, optional
        forces : mapping or sequence, optional
            Generalized forces added to ``dp/dt``.
        invariants : mapping of str to sympy.Expr, optional
        **options
            As for :meth:`from_lagrangian`.

        Returns
        -------
        System

        Examples
        --------
        >>> import sympy
        >>> q, p, k, m = sympy.symbols("q p k m")
        >>> osc = System.from_hamiltonian(p**2 / (2 * m) + k * q**2 / 2, [q], [p], {k: 1, m: 2})
        >>> osc.equations
        {'q': p/m, 'p': -k*q}
        >>> osc.separable
        True
        """
        problems = Problems()
        system = build_hamiltonian(
            problems, hamiltonian, coordinates, momenta, parameters, time=time, forces=forces,
            invariants=invariants, **options,
        )
        problems.raise_if_any()
        warn_constants(system)
        return system

    @classmethod
    def from_equations(
        cls,
        rhs: Mapping[SymbolLike, sympy.Expr],
        parameters: Mapping[SymbolLike, float] | Sequence[SymbolLike] = (),
        *,
        time: SymbolLike | None = None,
        invariants: Mapping[str, sympy.Expr] | None = None,
        n_coordinates: int | None = None,
        **options: Any,
    ) -> System:
        """A first-order system ``dy/dt = rhs(t, y)``, given as ``{state: expression}``.

        Parameters
        ----------
        rhs : mapping of symbol (or name) to sympy.Expr
            The states in order, each with its time derivative.
        parameters : mapping of symbol (or name) to float
        time : sympy.Symbol or str, optional
        invariants : mapping of str to sympy.Expr, optional
            Declared conserved quantities; one named ``"energy"`` is also :meth:`energy`.
        n_coordinates : int, optional
            When the state is ``[q (n), v (n)]``, set this to ``n`` so that the symplectic
            integrators can use the system if it separates.
        **options
            As for :meth:`from_lagrangian`.

        Returns
        -------
        System

        Examples
        --------
        >>> import sympy
        >>> x, y, mu = sympy.symbols("x y mu")
        >>> vdp = System.from_equations({x: y, y: mu * (1 - x**2) * y - x}, {mu: 1.0})
        >>> vdp.state_names
        ['x', 'y']
        """
        problems = Problems()
        system = build_equations(
            problems, rhs, parameters, time=time, invariants=invariants,
            n_coordinates=n_coordinates, **options,
        )
        problems.raise_if_any()
        warn_constants(system)
        return system


def _generator(seed: Any) -> torch.Generator:
    """A private generator seeded with ``seed``, which must be an int (not None, not 1.5)."""
    if not is_int(seed):
        raise InvalidArgumentError(
            f"seed must be an int (the same seed gives the same draws), got {seed!r}"
        )
    return torch.Generator().manual_seed(int(seed))


def _check_count(n: Any) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise InvalidArgumentError(f"n must be a non-negative int, got {n!r}")
    return n


# ---------------------------------------------------------------------- builders
_OPTION_NAMES = (
    "name", "description", "reference", "parameter_ranges", "initial_state_distribution",
    "initial_states", "characteristic_time",
)


def _options(options: Mapping[str, Any], problems: Problems, constructor: str) -> dict[str, Any]:
    """The options shared by every form; a problem for each other key in ``options``, listing
    what ``System.<constructor>`` takes."""
    for key in options:
        if key not in _OPTION_NAMES:
            valid = _accepted_names(constructor)
            problems.add(
                f"unknown option {key!r}{did_you_mean(key, valid)}; System.{constructor} takes: "
                f"{', '.join(valid)}"
            )
    return {k: options.get(k) for k in _OPTION_NAMES}


def _accepted_names(constructor: str) -> list[str]:
    """Every keyword ``System.<constructor>`` takes: its own arguments, then the shared options.

    >>> _accepted_names("from_equations")[:5]
    ['rhs', 'parameters', 'time', 'invariants', 'n_coordinates']
    """
    arguments = inspect.signature(getattr(System, constructor)).parameters.values()
    own = [a.name for a in arguments if a.kind is not inspect.Parameter.VAR_KEYWORD]
    return own + list(_OPTION_NAMES)


def _check_common(
    problems: Problems,
    opts: Mapping[str, Any],
    states: Sequence[sympy.Symbol],
    params: Sequence[sympy.Symbol],
) -> dict[str, Any]:
    """Check the options shared by every form: named states, distribution, name, time scale."""
    state_names = [s.name for s in states]
    named: dict[str, list[float]] = {}
    table = opts.get("initial_states") or {}
    if not isinstance(table, Mapping):
        problems.add(f"initial_states must be a table of name = state (mapping), got {table!r}")
        table = {}
    for key, value in table.items():
        if isinstance(value, Mapping):
            missing = [s for s in state_names if s not in value]
            extra = [s for s in value if s not in state_names]
            if missing or extra:
                said = [f"missing states {missing}"] if missing else []
                said += [f"unknown names {extra}"] if extra else []
                problems.add(
                    f"initial state {key!r}: {', '.join(said)}; states: {', '.join(state_names)}"
                )
                continue
            value = [value[s] for s in state_names]
        listed = not isinstance(value, str) and hasattr(value, "__len__")
        if not listed or len(value) != len(states) or not all(map(is_finite_real, value)):
            problems.add(
                f"initial state {key!r} must give {len(states)} finite numbers "
                f"({', '.join(state_names)}), got {value!r}"
            )
            continue
        named[key] = [float(v) for v in value]
    dist = opts.get("initial_state_distribution")
    if isinstance(dist, Mapping):
        dist, found = distribution_from_table(dist)
        for message in found:
            problems.add(message)
        if dist is not None:
            ctx = Context(tuple(state_names), tuple(p.name for p in params), named)
            for message in dist.check(ctx):
                problems.add(message)
    elif dist is not None and not callable(dist):
        problems.add(
            "initial_state_distribution must be a table (mapping) or a callable "
            f"(n, generator) -> tensor, got {type(dist).__name__}"
        )
    char_time = opts.get("characteristic_time")
    if char_time is not None and not (
        isinstance(char_time, int | float) and not _is_bool(char_time)
        and math.isfinite(char_time) and char_time > 0
    ):
        problems.add(f"characteristic_time must be a positive number, got {char_time!r}")
        char_time = None
    for key in ("name", "description", "reference"):
        text = opts.get(key)
        if text is not None and not isinstance(text, str):
            problems.add(f"{key} must be a string, got {text!r}")
    name = opts.get("name")
    return {
        "name": name,
        "distribution": dist,
        "initial_states": named,
        "characteristic_time": None if char_time is None else float(char_time),
        "description": opts.get("description") or "",
        "reference": opts.get("reference") or "",
    }


def _finish(
    problems: Problems,
    common: dict[str, Any],
    *,
    form: str,
    states: list[sympy.Symbol],
    params: list[sympy.Symbol],
    values: list[float],
    ranges: list[tuple[float, float]],
    **fields: Any,
) -> System | None:
    """Build the System once every check has passed (None if there were problems)."""
    if problems.items:
        return None
    common = dict(common)
    common["name"] = common["name"] or f"{form}_system"
    system = System(
        form=form, states=states, parameter_symbols=params, parameter_values=values,
        parameter_ranges=ranges, **common, **fields,
    )
    # Kept with the system (and pickled with it), so that one loaded from the on-disk cache,
    # whose expressions are not parsed again, still warns (physode.systems.load).
    system._constants_read = {k: tuple(v) for k, v in problems.constants.items()}
    return system


_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
# Frames passed over with physode's own: a cached property of physode's calls it from there.
_PASSED_OVER = (_PACKAGE, functools.__file__)
#: Places named in a warning of a constant, at most; the rest are counted.
_PLACES_SHOWN = 3


def warn_constants(system: System) -> None:
    """A :class:`physode.PhysodeWarning` for each SymPy constant that an undeclared name in an
    expression string of ``system`` stands for (``E``, Euler's number: a parameter ``E`` left
    out of the parameters), naming where; nothing for one declared or for ``exp(1)``.

    One warning per constant and system, however many expressions use it. The constructors call
    this once the system is built, :func:`physode.systems.load` also for a system it takes
    from the on-disk cache.

    Examples
    --------
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     _ = System.from_equations({"x": "-E*x"}, {}, name="decay")
    >>> print(caught[0].message)  # doctest: +NORMALIZE_WHITESPACE
    system 'decay': 'E' (in equation for x) is Euler's number e = 2.71828..., not a
    parameter; to use a parameter named E, declare it in the parameters; to mean e, write
    exp(1)
    """
    constants = getattr(system, "_constants_read", None) or {}
    declare_in = "the parameters" if system.spec_text is None else "[parameters]"
    for name, places in constants.items():
        shown = ", ".join(places[:_PLACES_SHOWN])
        if len(places) > _PLACES_SHOWN:
            shown += f" and {len(places) - _PLACES_SHOWN} more"
        meant = "e, write exp(1)" if name == "E" else f"it, pass sympy.{name} in a SymPy expression"
        warnings.warn(
            f"system {system.name!r}: {name!r} (in {shown}) is {SYMPY_CONSTANTS[name]}, not a "
            f"parameter; to use a parameter named {name}, declare it in {declare_in}; to mean "
            f"{meant}",
            PhysodeWarning,
            stacklevel=_outside_physode(),
        )


def _outside_physode() -> int:
    """The ``stacklevel`` for its caller's ``warnings.warn`` that names the first frame outside
    physode: the user's line, however deep in physode the warning is given."""
    level, frame = 1, sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith(_PASSED_OVER):
        level, frame = level + 1, frame.f_back
    return level


def attach_spec_text(system: System, text: str) -> System:
    """``system``, recorded as derived from the specification ``text``.

    For the specification loader only (:func:`physode.symbolic.system_from_spec`): a system's
    ``spec_text`` is read-only and no constructor option sets it, so a data set never stores a
    specification other than the one its system was derived from.
    """
    system._spec_text = text
    return system


def _vanishes(*exprs: sympy.Expr | None) -> bool:
    """Whether every expression is absent or identically zero (``forces={}``, ``dissipation=0``):
    such a system still conserves its energy."""
    return all(e is None or e == 0 for e in exprs)


def _is_collection(value: Any) -> bool:
    """Whether ``value`` holds items to iterate over: not a lone string or SymPy object."""
    return isinstance(value, Iterable) and not isinstance(value, str | bytes | sympy.Basic)


def _names_list(value: Any, what: str, problems: Problems) -> list[Any]:
    """``value`` as a list of symbols or names. A lone name or symbol is a problem (a string
    would otherwise be split into its letters), taken as a list of one to check the rest."""
    if not _is_collection(value):
        problems.add(f"{what} must be a list of symbols or names, got {value!r}; write [{value!r}]")
        return [value]
    return list(value)


def _time(time: Any, problems: Problems) -> sympy.Symbol:
    """The time symbol: ``t`` by default, else ``time`` as a symbol (``t``, with a problem
    added, when it is not one)."""
    if time is None:
        return sympy.Symbol("t")
    return _symbol(time, "time", problems) or sympy.Symbol("t")


def _forces_list(
    forces: Mapping[SymbolLike, Any] | Sequence[Any] | None,
    coordinates: Sequence[sympy.Symbol],
    problems: Problems,
    known: Collection[sympy.Symbol] = (),
    dynamic: _Dynamic | None = None,
) -> list[sympy.Expr] | None:
    if forces is None:
        return None
    if not isinstance(forces, Mapping) and not _is_collection(forces):
        problems.add(
            f"forces must be a mapping {{coordinate: force}} or a list of one force per "
            f"coordinate, got {forces!r}"
        )
        return [None]
    names = [q.name for q in coordinates]
    if isinstance(forces, Mapping):
        out = [sympy.Integer(0)] * len(coordinates)
        for key, value in forces.items():
            key = str(key)
            if key not in names:
                problems.add(
                    f"a force is given for {key!r}, which is not a coordinate "
                    f"(coordinates: {', '.join(names)})"
                )
                continue
            out[names.index(key)] = _expr(value, f"force on {key}", problems, known, dynamic)
        return out
    forces = list(forces)
    if len(forces) != len(coordinates):
        problems.add(f"{len(forces)} forces given for {len(coordinates)} coordinates")
        return None
    return [
        _expr(f, f"force on {q}", problems, known, dynamic)
        for f, q in zip(forces, names, strict=True)
    ]


def _invariants(
    invariants: Mapping[str, Any] | None,
    problems: Problems,
    known: Collection[sympy.Symbol] = (),
    dynamic: _Dynamic | None = None,
) -> dict[str, sympy.Expr | None]:
    out = {}
    if invariants is not None and not isinstance(invariants, Mapping):
        problems.add(f"invariants must be a mapping {{name: expression}}, got {invariants!r}")
        return out
    for key, value in (invariants or {}).items():
        if not isinstance(key, str) or not key.isidentifier():
            problems.add(f"invariant name {key!r} must be an identifier")
            continue
        out[key] = _expr(value, f"invariant {key!r}", problems, known, dynamic)
    return out


class _Dynamic:
    """Coordinates (and momenta) written as functions of time, as
    ``sympy.physics.mechanics.dynamicsymbols`` makes them: ``q(t)`` in an expression stands for
    the plain symbol ``q`` of the state, ``q(t).diff(t)`` for its velocity.

    A coordinate counts as one when it is given as ``q(t)``, or as the name or symbol ``q``
    where the expressions hold ``q(t)``: the name says which coordinate is meant, as everywhere
    in physode (see :func:`_by_name`).

    Examples
    --------
    >>> t = sympy.Symbol("t")
    >>> q = sympy.Function("q")(t)
    >>> dynamic = _Dynamic(t)
    >>> dynamic.plain_symbols(["q"], [q.diff(t) ** 2 / 2 - q**2 / 2])
    [q]
    >>> dynamic.add_velocities([sympy.Symbol("q")], ["q_dot"])
    >>> dynamic.substitute(q.diff(t) ** 2 / 2 - q**2 / 2)
    -q**2/2 + q_dot**2/2
    """

    def __init__(self, time: sympy.Symbol, roles: str = "coordinates"):
        self.time = time
        self.roles = roles  # where a function of time left undeclared belongs, for messages
        self.functions: dict[sympy.Expr, sympy.Symbol] = {}  # q(t) -> q
        self.derivatives: dict[sympy.Expr, sympy.Symbol] = {}  # q(t).diff(t) -> its velocity

    @property
    def plain(self) -> set[sympy.Symbol]:
        """The plain symbols that stand for functions of time."""
        return set(self.functions.values())

    def plain_symbols(self, items: Sequence[Any], expressions: Iterable[Any]) -> list[Any]:
        """``items`` (coordinates or momenta) with each function of time replaced by its plain
        symbol; other items as they are (checked by the caller)."""
        written = self._functions_of_time(expressions)
        out = []
        for item in items:
            if isinstance(item, sympy.core.function.AppliedUndef):
                function, plain = _on_time(item, self.time), sympy.Symbol(type(item).__name__)
            elif isinstance(item, sympy.Symbol) and item.name in written:
                function, plain = written[item.name], item
            elif isinstance(item, str) and item.isidentifier() and item in written:
                function, plain = written[item], sympy.Symbol(item)
            else:
                out.append(item)
                continue
            self.functions[function] = plain
            out.append(plain)
        return out

    def add_velocities(self, coordinates: Sequence[Any], velocities: Sequence[Any]) -> None:
        """Read ``q(t).diff(t)`` as the velocity of ``q`` (a count that does not match, or a
        velocity that is no name, is reported by the caller)."""
        for function, plain in self.functions.items():
            if plain not in coordinates:
                continue
            i = list(coordinates).index(plain)
            velocity = velocities[i] if i < len(velocities) else None
            if isinstance(velocity, str) and velocity.isidentifier():
                velocity = sympy.Symbol(velocity)
            if isinstance(velocity, sympy.Symbol):
                self.derivatives[sympy.Derivative(function, self.time)] = velocity

    def key(self, key: Any) -> Any:
        """A key of ``forces``: the name of the coordinate a function of time stands for."""
        if self.functions and isinstance(key, sympy.Basic):
            plain = self.functions.get(_on_time(key, self.time))
            if plain is not None:
                return plain.name
        return key

    def substitute(self, expr: sympy.Expr) -> sympy.Expr:
        """``expr`` with the functions of time and their derivatives replaced."""
        if not self.functions:
            return expr
        return _on_time(expr, self.time).subs(self.derivatives).subs(self.functions)

    def _functions_of_time(self, expressions: Iterable[Any]) -> dict[str, sympy.Expr]:
        """Name -> ``q(t)`` for each undefined function of time alone in the ``expressions``
        (SymPy objects; a string is read later, with the declared names)."""
        found: dict[str, sympy.Expr] = {}
        for expr in expressions:
            if not isinstance(expr, sympy.Basic):
                continue
            for applied in expr.atoms(sympy.core.function.AppliedUndef):
                (arg, *rest) = applied.args or (None,)
                if not rest and isinstance(arg, sympy.Symbol) and arg.name == self.time.name:
                    found.setdefault(type(applied).__name__, _on_time(applied, self.time))
        return found


def _undeclared_functions_of_time(expr: sympy.Expr, time: sympy.Symbol) -> list[sympy.Expr]:
    """The undefined functions of ``time`` alone (``y(t)``) left in ``expr`` once the declared
    coordinates and momenta are replaced by their symbols."""
    found = {
        applied
        for applied in expr.atoms(sympy.core.function.AppliedUndef)
        if len(applied.args) == 1
        and isinstance(applied.args[0], sympy.Symbol)
        and applied.args[0].name == time.name
    }
    return sorted(found, key=str)


def _on_time(expr: sympy.Basic, time: sympy.Symbol) -> sympy.Basic:
    """``expr`` with each symbol named as ``time`` replaced by ``time`` (which is plain, see
    :func:`_by_name`), so that ``q(t).diff(t)`` is found for a ``t`` declared ``real=True``."""
    return expr.xreplace({s: time for s in expr.atoms(sympy.Symbol) if s.name == time.name})


def _expressions(*values: Any) -> list[Any]:
    """The expressions among ``values`` and the values of mappings and lists among them."""
    out = []
    for value in values:
        if isinstance(value, Mapping):
            out.extend(value.values())
        elif _is_collection(value):
            out.extend(value)
        else:
            out.append(value)
    return out


def _reported(
    coordinates: Any, partners: Any, parameters: Any, opts: Mapping[str, Any], problems: Problems
) -> bool:
    """Whether the coordinates or their velocities or momenta are ``REPORTED``: a list that a
    specification file lacks or spoils, reported already. Without it nothing can be matched, so
    only the parameters are checked then: counting the missing list ("0 momenta given for 1
    coordinates") would report the same problem again."""
    if coordinates is not REPORTED and partners is not REPORTED:
        return False
    _parameters(parameters, opts["parameter_ranges"], problems)
    return True


def _pairs_and_parameters(
    form: str,
    qs: list,
    partners: Sequence[Any],
    role: tuple[str, str],
    parameters: Any,
    opts: dict[str, Any],
    time: sympy.Symbol,
    problems: Problems,
):
    """Checks shared by the Lagrangian and Hamiltonian forms: one partner (velocity or momentum)
    per coordinate, the parameters, no symbol in two roles, the common options. Returns the
    partners, parameters, values, ranges, common options, the set of known symbols, the phrase
    naming them and whether a name is used twice, or None when the symbols are too broken to go
    on."""
    singular, plural = role
    ps = [_symbol(p, singular, problems) for p in partners]
    if not qs:
        problems.add(f"a {form} system needs at least one coordinate")
    elif len(ps) != len(qs):
        problems.add(f"{len(ps)} {plural} given for {len(qs)} coordinates")
    params, values, ranges = _parameters(parameters, opts["parameter_ranges"], problems)
    if None in qs or None in ps or len(ps) != len(qs) or not qs:
        return None
    roles = {"coordinate": qs, singular: ps, "parameter": params, "time": [time]}
    used_twice = _check_duplicates(roles, problems)
    common = _check_common(problems, opts, qs + ps, params)
    known = set(qs) | set(ps) | set(params) | {time}
    phrase = f"neither a coordinate, a {singular} nor a parameter"
    return ps, params, values, ranges, common, known, phrase, used_twice


def build_lagrangian(
    problems: Problems,
    lagrangian: Any,
    coordinates: Sequence[Any],
    parameters: Any,
    *,
    velocities: Sequence[Any] | None = None,
    time: sympy.Symbol | None = None,
    dissipation: Any = None,
    forces: Any = None,
    invariants: Mapping[str, Any] | None = None,
    mass_matrix: str = "auto",
    **options: Any,
) -> System | None:
    """Validate and build a Lagrangian system, adding problems instead of raising."""
    time = _time(time, problems)
    opts = _options(options, problems, "from_lagrangian")
    if mass_matrix not in MASS_MATRIX_MODES:
        problems.add(f"mass_matrix={mass_matrix!r}; valid: {', '.join(MASS_MATRIX_MODES)}")
        mass_matrix = "auto"
    if _reported(coordinates, velocities, parameters, opts, problems):
        return None
    coordinates = _names_list(coordinates, "coordinates", problems)
    if velocities is not None:
        velocities = _names_list(velocities, "velocities", problems)
    dynamic = _Dynamic(time)
    coordinates = dynamic.plain_symbols(
        coordinates, _expressions(lagrangian, dissipation, forces, invariants)
    )
    if isinstance(forces, Mapping):
        forces = {dynamic.key(k): v for k, v in forces.items()}

    qs = [_symbol(c, "coordinate", problems) for c in coordinates]
    if velocities is None:
        velocities = [sympy.Symbol(f"{q.name}_dot") for q in qs if q is not None]
    dynamic.add_velocities(qs, velocities)
    checked = _pairs_and_parameters(
        "Lagrangian", qs, velocities, ("velocity", "velocities"), parameters, opts, time, problems
    )
    if checked is None:
        return None
    vs, params, values, ranges, common, known, phrase, used_twice = checked
    had_dissipation = dissipation is not None
    lagrangian = _expr(lagrangian, "Lagrangian", problems, known, dynamic)
    # A mass matrix of a Lagrangian with unknown symbols, or with a name in two roles (a velocity
    # listed as a coordinate: its own velocity has no kinetic term), would only add follow-on
    # problems.
    velocity_of = dict(zip(qs, vs, strict=True))
    unknown = _check_unknown(lagrangian, "Lagrangian", known, phrase, problems, velocity_of)
    if unknown:
        _check_form(lagrangian, "Lagrangian", vs, known, problems)
    if dissipation is not None:
        dissipation = _expr(dissipation, "dissipation function", problems, known, dynamic)
        _check_unknown(
            dissipation, "dissipation function", known, phrase, problems, velocity_of
        )
    force_list = _forces_list(forces, qs, problems, known, dynamic)
    for q, f in zip(qs, force_list or [], strict=False):
        _check_unknown(f, f"force on {q.name}", known, phrase, problems, velocity_of)
    declared = _invariants(invariants, problems, known, dynamic)
    for key, expr in declared.items():
        _check_unknown(expr, f"invariant {key!r}", known, phrase, problems, velocity_of)
        _check_time_free(expr, f"invariant {key!r}", time, problems)
    if lagrangian is None or None in (force_list or []) or (
        dissipation is None and had_dissipation
    ):
        return None

    dyn = _mechanics.euler_lagrange(lagrangian, qs, vs, time, force_list, dissipation)
    n = len(qs)
    small = n <= SYMBOLIC_SOLVE_MAX or _mechanics.is_diagonal(dyn.mass_matrix)
    symbolic = mass_matrix == "symbolic" or (mass_matrix == "auto" and small)
    if not unknown and not used_twice:
        _check_mass_matrix(dyn.mass_matrix, qs, vs, params, values, problems)

    time_free = time not in lagrangian.free_symbols
    energy = _mechanics.lagrangian_energy(lagrangian, vs) if time_free else None
    conservative = time_free and _vanishes(dissipation) and _vanishes(*(force_list or ()))
    all_invariants = {}
    if conservative:
        if "energy" in declared:
            problems.add("invariant 'energy' is derived automatically; do not declare it")
        all_invariants["energy"] = energy
    all_invariants.update(declared)
    if problems.items:
        return None

    if symbolic:
        equations = list(vs) + _mechanics.solve_accelerations(dyn)
        separable = _mechanics.split_is_separable(equations, qs, vs, time)
    else:
        equations = None
        mass_symbols = dyn.mass_matrix.free_symbols
        separable = not (mass_symbols & (set(qs) | set(vs) | {time})) and not any(
            f.free_symbols & set(vs) for f in dyn.forcing
        )
    return _finish(
        problems, common, form="lagrangian", states=qs + vs, params=params, values=values,
        ranges=ranges, time=time, equations=equations, dynamics=dyn, energy=energy,
        conservative=conservative, invariants=all_invariants, n_coordinates=n,
        separable=separable, dissipation=dissipation, forces=force_list,
    )


def _check_mass_matrix(mass, qs, vs, params, values, problems: Problems) -> None:
    n = len(qs)
    zero_rows = [i for i in range(n) if all(mass[i, j] == 0 for j in range(n))]
    for i in zero_rows:
        problems.add(
            f"the mass matrix is singular: coordinate {qs[i].name!r} has no kinetic term (the "
            f"Lagrangian is not quadratic in {vs[i].name!r})"
        )
    if zero_rows:
        return
    names = ", ".join(q.name for q in qs)
    # A symbolic determinant is slow to simplify; an analytic function that vanishes at three
    # random points (parameters at their defaults) is taken to vanish identically.
    # Other symbols (time, or ones already reported as unknown) get random values too.
    rng = random.Random(0)
    evaluated = False
    for _ in range(3):
        point = {s: rng.uniform(-1.0, 1.0) for s in list(qs) + list(vs)}
        for sym, value in zip(params, values, strict=True):
            point[sym] = value if math.isfinite(value) else rng.uniform(0.5, 1.5)
        point.update({s: rng.uniform(0.5, 1.5) for s in mass.free_symbols - set(point)})
        try:
            m = numpy.array(mass.subs(point).evalf(), dtype=complex)
        except (TypeError, ValueError):
            continue  # not a number at this point (an undefined function): try another
        if not numpy.isfinite(m).all():
            continue
        evaluated = True
        scale = float(numpy.prod(numpy.maximum(numpy.linalg.norm(m, axis=1), 1e-300)))
        if abs(complex(numpy.linalg.det(m))) > 1e-12 * scale:
            return
    if not evaluated:
        return
    problems.add(f"the mass matrix of coordinates {names} is singular (det M = 0)")


def build_hamiltonian(
    problems: Problems,
    hamiltonian: Any,
    coordinates: Sequence[Any],
    momenta: Sequence[Any],
    parameters: Any,
    *,
    time: sympy.Symbol | None = None,
    forces: Any = None,
    invariants: Mapping[str, Any] | None = None,
    **options: Any,
) -> System | None:
    """Validate and build a Hamiltonian system, adding problems instead of raising."""
    time = _time(time, problems)
    opts = _options(options, problems, "from_hamiltonian")
    if _reported(coordinates, momenta, parameters, opts, problems):
        return None
    coordinates = _names_list(coordinates, "coordinates", problems)
    momenta = _names_list(momenta, "momenta", problems)
    dynamic = _Dynamic(time, "coordinates or momenta")
    written = _expressions(hamiltonian, forces, invariants)
    coordinates = dynamic.plain_symbols(coordinates, written)
    momenta = dynamic.plain_symbols(momenta, written)
    if isinstance(forces, Mapping):
        forces = {dynamic.key(k): v for k, v in forces.items()}
    qs = [_symbol(c, "coordinate", problems) for c in coordinates]
    checked = _pairs_and_parameters(
        "Hamiltonian", qs, momenta, ("momentum", "momenta"), parameters, opts, time, problems
    )
    if checked is None:
        return None
    ps, params, values, ranges, common, known, phrase, _ = checked
    hamiltonian = _expr(hamiltonian, "Hamiltonian", problems, known, dynamic)
    if _check_unknown(hamiltonian, "Hamiltonian", known, phrase, problems):
        _check_form(hamiltonian, "Hamiltonian", ps, known, problems)
    force_list = _forces_list(forces, qs, problems, known, dynamic)
    for q, f in zip(qs, force_list or [], strict=False):
        _check_unknown(f, f"force on {q.name}", known, phrase, problems)
    declared = _invariants(invariants, problems, known, dynamic)
    for key, expr in declared.items():
        _check_unknown(expr, f"invariant {key!r}", known, phrase, problems)
        _check_time_free(expr, f"invariant {key!r}", time, problems)
    if hamiltonian is None:
        return None
    time_free = time not in hamiltonian.free_symbols
    conservative = time_free and _vanishes(*(force_list or ()))
    all_invariants = {}
    if conservative:
        if "energy" in declared:
            problems.add("invariant 'energy' is derived automatically; do not declare it")
        all_invariants["energy"] = hamiltonian
    all_invariants.update(declared)
    if problems.items:
        return None
    equations = _mechanics.hamilton(hamiltonian, qs, ps, force_list)
    return _finish(
        problems, common, form="hamiltonian", states=qs + ps, params=params, values=values,
        ranges=ranges, time=time, equations=equations, dynamics=None,
        energy=hamiltonian if time_free else None, conservative=conservative,
        invariants=all_invariants, n_coordinates=len(qs),
        separable=_mechanics.split_is_separable(equations, qs, ps, time), forces=force_list,
    )


def build_equations(
    problems: Problems,
    rhs: Mapping[Any, Any],
    parameters: Any,
    *,
    time: sympy.Symbol | None = None,
    invariants: Mapping[str, Any] | None = None,
    n_coordinates: int | None = None,
    **options: Any,
) -> System | None:
    """Validate and build a first-order system, adding problems instead of raising."""
    time = _time(time, problems)
    opts = _options(options, problems, "from_equations")
    if not isinstance(rhs, Mapping) or not rhs:
        problems.add("rhs must be a non-empty mapping {state: expression}")
        return None
    states = [_symbol(k, "state", problems) for k in rhs]
    params, values, ranges = _parameters(parameters, opts["parameter_ranges"], problems)
    if None in states:
        return None
    _check_duplicates({"state": states, "parameter": params, "time": [time]}, problems)
    common = _check_common(problems, opts, states, params)
    known = set(states) | set(params) | {time}
    phrase = "neither a state nor a parameter"
    equations = []
    for sym, value in zip(states, rhs.values(), strict=True):
        expr = _expr(value, f"equation for {sym.name}", problems, known)
        _check_unknown(expr, f"equation for {sym.name}", known, phrase, problems)
        equations.append(expr)
    declared = _invariants(invariants, problems, known)
    for key, expr in declared.items():
        _check_unknown(expr, f"invariant {key!r}", known, phrase, problems)
        _check_time_free(expr, f"invariant {key!r}", time, problems)
    separable = False
    if n_coordinates is not None:
        if not isinstance(n_coordinates, int) or _is_bool(n_coordinates):
            problems.add(f"n_coordinates must be an integer, got {n_coordinates!r}")
        elif 2 * n_coordinates != len(states):
            problems.add(
                f"n_coordinates={n_coordinates!r} must be half the number of states "
                f"({len(states)})"
            )
        elif None not in equations:
            n = n_coordinates
            separable = _mechanics.split_is_separable(equations, states[:n], states[n:], time)
    if problems.items:
        return None
    energy = declared.get("energy")
    return _finish(
        problems, common, form="equations", states=states, params=params, values=values,
        ranges=ranges, time=time, equations=equations, dynamics=None, energy=energy,
        conservative=energy is not None, invariants=declared, n_coordinates=n_coordinates,
        separable=separable,
    )
