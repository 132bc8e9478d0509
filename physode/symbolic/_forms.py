"""Building a ``System`` from each of its forms: a Lagrangian, a Hamiltonian, first-order
equations; each builder checks its input, derives the equations of motion and the energy."""

from __future__ import annotations

import math
import random
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy
import sympy

from physode.symbolic import _mechanics
from physode.symbolic._options import _check_common, _options
from physode.symbolic._system import System
from physode.symbolic._time_functions import _Dynamic
from physode.symbolic._validation import (
    REPORTED,
    Problems,
    SymbolLike,
    _check_duplicates,
    _check_form,
    _check_time_free,
    _check_unknown,
    _expr,
    _is_bool,
    _is_collection,
    _parameters,
    _symbol,
)

MASS_MATRIX_MODES = ("auto", "symbolic", "numeric")
#: Largest number of coordinates for which ``mass_matrix="auto"`` inverts a full mass matrix
#: symbolically; above it the solve is done numerically per batch with ``torch.linalg.solve``.
SYMBOLIC_SOLVE_MAX = 3

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

def _vanishes(*exprs: sympy.Expr | None) -> bool:
    """Whether every expression is absent or identically zero (``forces={}``, ``dissipation=0``):
    such a system still conserves its energy."""
    return all(e is None or e == 0 for e in exprs)

def _with_energy(
    declared: dict[str, sympy.Expr | None], energy: sympy.Expr | None, problems: Problems
) -> dict[str, sympy.Expr | None]:
    """The invariants: the derived ``energy`` first where the system conserves it (``None``:
    it does not), then those ``declared``, where one named ``energy`` is then a problem."""
    if energy is None:
        return dict(declared)
    if "energy" in declared:
        problems.add("invariant 'energy' is derived automatically; do not declare it")
    return {"energy": energy, **declared}


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
    dynamic: _Dynamic,
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
    common = _check_common(problems, opts, qs + ps, params, dynamic)
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
        "Lagrangian", qs, velocities, ("velocity", "velocities"), parameters, opts, time, problems,
        dynamic,
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
    all_invariants = _with_energy(declared, energy if conservative else None, problems)
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
        defining_expression=lagrangian, mass_matrix_mode=mass_matrix,
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
            m = _numeric_matrix(mass, point)
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


def _numeric_matrix(matrix: sympy.Matrix, point: dict) -> numpy.ndarray:
    """``matrix`` at ``point`` as a complex array. Zero entries are left out of SymPy, and each
    other entry is given only the values of its own symbols: a chain of n coupled bodies has
    n**2 entries, most of them zero, and 2n coordinates and velocities.

    Raises
    ------
    TypeError
        Where an entry is not a number at ``point``.

    Examples
    --------
    >>> x, m = sympy.symbols("x m")
    >>> _numeric_matrix(sympy.Matrix([[m, 0], [0, m * x**2]]), {x: 2.0, m: 0.5}).real
    array([[0.5, 0. ],
           [0. , 2. ]])
    """
    out = numpy.zeros(matrix.shape, dtype=complex)
    for (i, j), entry in matrix.todok().items():
        values = {s: point[s] for s in entry.free_symbols if s in point}
        out[i, j] = complex(entry.subs(values).evalf())
    return out


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
        "Hamiltonian", qs, momenta, ("momentum", "momenta"), parameters, opts, time, problems,
        dynamic,
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
    all_invariants = _with_energy(declared, hamiltonian if conservative else None, problems)
    if problems.items:
        return None
    equations = _mechanics.hamilton(hamiltonian, qs, ps, force_list)
    return _finish(
        problems, common, form="hamiltonian", states=qs + ps, params=params, values=values,
        ranges=ranges, time=time, equations=equations, dynamics=None,
        energy=hamiltonian if time_free else None, conservative=conservative,
        invariants=all_invariants, n_coordinates=len(qs),
        separable=_mechanics.split_is_separable(equations, qs, ps, time), forces=force_list,
        defining_expression=hamiltonian,
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
        if rhs is not REPORTED:  # a specification file's [equations] says so in its words
            problems.add("rhs must be a non-empty mapping {state: expression}")
        return None
    # States may be functions of time, as KanesMethod.rhs() writes them: q(t) is the state q.
    dynamic = _Dynamic(time, "states")
    keys = dynamic.plain_symbols(list(rhs), _expressions(rhs, invariants))
    states = [_symbol(k, "state", problems) for k in keys]
    params, values, ranges = _parameters(parameters, opts["parameter_ranges"], problems)
    if None in states:
        return None
    _check_duplicates({"state": states, "parameter": params, "time": [time]}, problems)
    common = _check_common(problems, opts, states, params, dynamic)
    known = set(states) | set(params) | {time}
    phrase = "neither a state nor a parameter"
    equations = []
    for sym, value in zip(states, rhs.values(), strict=True):
        expr = _expr(value, f"equation for {sym.name}", problems, known, dynamic)
        _check_unknown(expr, f"equation for {sym.name}", known, phrase, problems)
        equations.append(expr)
    declared = _invariants(invariants, problems, known, dynamic)
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
