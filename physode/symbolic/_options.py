"""The options every form of ``System`` shares (name, description, reference, initial states
and their distribution, characteristic time), read and checked."""

from __future__ import annotations

import copy
import inspect
import math
from collections.abc import Mapping, Sequence
from typing import Any

import sympy

from physode._checks import is_finite_real
from physode.symbolic._names import did_you_mean
from physode.symbolic._sampling import Context, distribution_from_table
from physode.symbolic._system import System
from physode.symbolic._time_functions import _Dynamic
from physode.symbolic._validation import Problems, _is_bool

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
    dynamic: _Dynamic | None = None,
) -> dict[str, Any]:
    """Check the options shared by every form: named states, distribution, name, time scale.

    A named state or a distribution table may name its states by symbol too (``{x: 1.0}``, a
    ``dynamicsymbols`` coordinate or its derivative, read through ``dynamic``), as parameters
    and forces may.
    """
    dynamic = dynamic or _Dynamic(sympy.Symbol("t"))
    state_names = [s.name for s in states]
    named: dict[str, list[float]] = {}
    table = opts.get("initial_states") or {}
    if not isinstance(table, Mapping):
        problems.add(f"initial_states must be a table of name = state (mapping), got {table!r}")
        table = {}
    for key, value in table.items():
        if isinstance(value, Mapping):
            value = _by_state_name(value, f"initial state {key!r}", dynamic, problems)
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
    dist_table = None
    if isinstance(dist, Mapping):
        dist = _by_state_name(dist, "initial-state distribution", dynamic, problems)
        dist = {k: _named(v, dynamic) if k in _NAME_KEYS else v for k, v in dist.items()}
        dist_table = copy.deepcopy(dist)  # kept for System.to_spec
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
        "distribution_table": dist_table,
        "initial_states": named,
        "characteristic_time": None if char_time is None else float(char_time),
        "description": opts.get("description") or "",
        "reference": opts.get("reference") or "",
    }


#: Keys of the orbital distributions whose values name states or parameters.
_NAME_KEYS = frozenset(
    {"position", "velocity", "mu", "positions", "velocities", "masses", "gravitational_constant"}
)


def _named(value: Any, dynamic: _Dynamic) -> Any:
    """``value`` (a name, or a list or tuple of them, nested) with each symbol written as its
    name, a ``dynamicsymbols`` coordinate or its derivative as the state's, and each tuple as a
    list, as a specification file has them; anything else as it is (checked by the caller).

    >>> x, y = sympy.symbols("x y")
    >>> _named([(x, y), ["vx", "vy"]], _Dynamic(sympy.Symbol("t")))
    [['x', 'y'], ['vx', 'vy']]
    """
    if isinstance(value, list | tuple):
        return [_named(item, dynamic) for item in value]
    if isinstance(value, sympy.Basic):
        return dynamic.state_name(value)
    return value


def _by_state_name(
    table: Mapping[Any, Any], where: str, dynamic: _Dynamic, problems: Problems
) -> dict[Any, Any]:
    """``table`` with each key that is a symbol for a state replaced by the state's name (a
    problem where two keys name one state).

    >>> x = sympy.Symbol("x")
    >>> _by_state_name({x: 1.0, "v": 0.0}, "initial state 'a'", _Dynamic(x), Problems())
    {'x': 1.0, 'v': 0.0}
    """
    out: dict[Any, Any] = {}
    for key, value in table.items():
        name = dynamic.state_name(key)
        if name in out:
            problems.add(f"{where} gives {name!r} twice")
        out[name] = value
    return out
