"""Coordinates and momenta written as functions of time (``dynamicsymbols``): ``q(t)`` read as
the state's plain symbol ``q``, ``q(t).diff(t)`` as its velocity."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import sympy


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

    def state_name(self, key: Any) -> Any:
        """A key naming a state (of ``initial_states``, a distribution table): the name of a
        symbol, of the coordinate or momentum a function of time stands for, or of the velocity
        its derivative stands for; other keys as they are (checked by the caller)."""
        if isinstance(key, sympy.Symbol):
            return key.name
        if isinstance(key, sympy.Basic) and self.functions:
            key = _on_time(key, self.time)
            plain = self.functions.get(key, self.derivatives.get(key))
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
