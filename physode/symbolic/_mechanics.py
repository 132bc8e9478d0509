"""Equations of motion from a Lagrangian or a Hamiltonian, and the energy that goes with them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import sympy


@dataclass(frozen=True)
class LagrangianDynamics:
    """Euler-Lagrange equations written as ``M(q, v, t) a = F(q, v, t)``.

    ``M[i, j] = d2L/dv_i dv_j`` and
    ``F_i = dL/dq_i - sum_j d2L/dv_i dq_j v_j - d2L/dv_i dt + Q_i - dR/dv_i``
    with ``Q`` the generalized forces and ``R`` the Rayleigh dissipation function.
    """

    mass_matrix: sympy.Matrix
    forcing: sympy.Matrix


def euler_lagrange(
    lagrangian: sympy.Expr,
    coordinates: Sequence[sympy.Symbol],
    velocities: Sequence[sympy.Symbol],
    time: sympy.Symbol,
    forces: Sequence[sympy.Expr] | None = None,
    dissipation: sympy.Expr | None = None,
) -> LagrangianDynamics:
    """Mass matrix and forcing of the Euler-Lagrange equations.

    Parameters
    ----------
    lagrangian : sympy.Expr
        ``L(q, v, t)`` written with the velocity symbols ``v`` standing for ``dq/dt``.
    coordinates, velocities : sequence of sympy.Symbol
        ``q`` and ``v``, in the same order.
    time : sympy.Symbol
        The time symbol.
    forces : sequence of sympy.Expr, optional
        Generalized non-conservative forces ``Q_i``, one per coordinate.
    dissipation : sympy.Expr, optional
        Rayleigh dissipation function ``R(q, v)``; contributes ``-dR/dv_i``.

    Returns
    -------
    LagrangianDynamics

    Examples
    --------
    >>> th, w, m, g, l, t = sympy.symbols("theta omega m g l t")
    >>> dyn = euler_lagrange(m * l**2 * w**2 / 2 + m * g * l * sympy.cos(th), [th], [w], t)
    >>> dyn.forcing[0] / dyn.mass_matrix[0, 0]
    -g*sin(theta)/l
    """
    n = len(coordinates)
    momenta = [sympy.diff(lagrangian, v) for v in velocities]
    mass = sympy.Matrix(n, n, lambda i, j: sympy.diff(momenta[i], velocities[j]))
    forcing = []
    for i in range(n):
        f = sympy.diff(lagrangian, coordinates[i])
        pairs = zip(coordinates, velocities, strict=True)
        f -= sum((sympy.diff(momenta[i], q) * v for q, v in pairs), sympy.Integer(0))
        f -= sympy.diff(momenta[i], time)
        if forces is not None:
            f += forces[i]
        if dissipation is not None:
            f -= sympy.diff(dissipation, velocities[i])
        forcing.append(f)
    return LagrangianDynamics(mass, sympy.Matrix(forcing))


def is_diagonal(matrix: sympy.Matrix) -> bool:
    """True when every off-diagonal entry is identically zero."""
    n = matrix.shape[0]
    return all(matrix[i, j] == 0 for i in range(n) for j in range(n) if i != j)


def solve_accelerations(dyn: LagrangianDynamics) -> list[sympy.Expr]:
    """Solve ``M a = F`` symbolically (division when ``M`` is diagonal, LU otherwise)."""
    n = dyn.mass_matrix.shape[0]
    if is_diagonal(dyn.mass_matrix):
        # Divide term by term so that masses cancel inside each force term.
        return [
            sympy.Add(*(t / dyn.mass_matrix[i, i] for t in sympy.Add.make_args(dyn.forcing[i])))
            for i in range(n)
        ]
    solution = dyn.mass_matrix.LUsolve(dyn.forcing)
    return [sympy.cancel(solution[i]) if n == 1 else solution[i] for i in range(n)]


def lagrangian_energy(lagrangian: sympy.Expr, velocities: Sequence[sympy.Symbol]) -> sympy.Expr:
    """The energy function ``E = sum_i v_i dL/dv_i - L``.

    Examples
    --------
    >>> x, v, m, k = sympy.symbols("x v m k")
    >>> lagrangian_energy(m * v**2 / 2 - k * x**2 / 2, [v])
    k*x**2/2 + m*v**2/2
    """
    total = sum((v * sympy.diff(lagrangian, v) for v in velocities), sympy.Integer(0))
    return sympy.expand_mul(total - lagrangian)


def hamilton(
    hamiltonian: sympy.Expr,
    coordinates: Sequence[sympy.Symbol],
    momenta: Sequence[sympy.Symbol],
    forces: Sequence[sympy.Expr] | None = None,
) -> list[sympy.Expr]:
    """Hamilton's equations ``dq/dt = dH/dp``, ``dp/dt = -dH/dq + Q``.

    Examples
    --------
    >>> q, p, k = sympy.symbols("q p k")
    >>> hamilton(p**2 / 2 + k * q**2 / 2, [q], [p])
    [p, -k*q]
    """
    dq = [sympy.diff(hamiltonian, p) for p in momenta]
    dp = [-sympy.diff(hamiltonian, q) for q in coordinates]
    if forces is not None:
        dp = [a + b for a, b in zip(dp, forces, strict=True)]
    return dq + dp


def split_is_separable(
    equations: Sequence[sympy.Expr],
    first: Sequence[sympy.Symbol],
    second: Sequence[sympy.Symbol],
    time: sympy.Symbol,
) -> bool:
    """True when ``d(first)/dt`` depends on ``second`` only and ``d(second)/dt`` on ``first``, t.

    This is the structure the symplectic integrators need (the state is ``[q, v or p]``).
    """
    n = len(first)
    forbidden_first = set(first) | {time}
    forbidden_second = set(second)
    return all(not (e.free_symbols & forbidden_first) for e in equations[:n]) and all(
        not (e.free_symbols & forbidden_second) for e in equations[n:]
    )
