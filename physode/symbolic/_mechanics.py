"""Equations of motion from a Lagrangian or a Hamiltonian, and the energy that goes with them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import sympy
from sympy.simplify.fu import TR10i


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
    momenta = partial_derivatives(lagrangian, velocities)
    mass = sympy.Matrix([partial_derivatives(p, velocities) for p in momenta])
    forces_of_position = partial_derivatives(lagrangian, coordinates)
    forcing = []
    for i in range(n):
        f = forces_of_position[i]
        rates = zip(partial_derivatives(momenta[i], coordinates), velocities, strict=True)
        f -= sympy.Add(*(d * v for d, v in rates))
        f -= real_derivative(momenta[i], time)
        if forces is not None:
            f += forces[i]
        if dissipation is not None:
            f -= real_derivative(dissipation, velocities[i])
        forcing.append(f)
    return LagrangianDynamics(mass, sympy.Matrix(forcing))


def partial_derivatives(expr: sympy.Expr, symbols: Sequence[sympy.Symbol]) -> list[sympy.Expr]:
    """``[real_derivative(expr, s) for s in symbols]``, each term of the sum ``expr``
    differentiated only by the symbols it contains.

    SymPy differentiates every term of a sum by every symbol, so the equations of a chain of
    ``n`` coupled oscillators cost ``n**2`` term derivatives (minutes for ``n`` = 800): here
    they cost about as many as the sum has terms. The results are the same expressions.

    Examples
    --------
    >>> q1, q2, p1, p2, k = sympy.symbols("q1 q2 p1 p2 k")
    >>> partial_derivatives(p1**2 / 2 + p2**2 / 2 + k * (q2 - q1) ** 2 / 2, [q1, q2, p1])
    [k*(2*q1 - 2*q2)/2, k*(-2*q1 + 2*q2)/2, p1]
    """
    wanted = set(symbols)
    terms_with: dict[sympy.Symbol, list[sympy.Expr]] = {s: [] for s in wanted}
    for term in sympy.Add.make_args(expr):
        for s in term.free_symbols & wanted:
            terms_with[s].append(term)
    zero = sympy.S.Zero
    return [
        sympy.Add(*(real_derivative(term, s) for term in terms_with[s])) if terms_with[s] else zero
        for s in symbols
    ]


#: What SymPy's derivative of ``Abs``, ``sign`` and the like holds where it takes a symbol to
#: be complex: ``d|x|/dx = (re(x) d re(x)/dx + im(x) d im(x)/dx) / |x|``.
_COMPLEX_PARTS = (sympy.re, sympy.im, sympy.arg, sympy.conjugate, sympy.Derivative)


def real_derivative(expr: sympy.Expr, symbol: sympy.Symbol) -> sympy.Expr:
    """``d expr / d symbol`` with every symbol taken to be real, as the states, parameters and
    time of a system are: ``d|x|/dx = sign(x)``, not SymPy's expression in ``re(x)`` and
    ``im(x)`` for a symbol without assumptions (which has no torch translation). The result is
    written in the symbols of ``expr``, their assumptions as declared.

    Examples
    --------
    >>> x = sympy.Symbol("x")
    >>> real_derivative(sympy.Abs(x), x)
    sign(x)
    """
    derivative = sympy.diff(expr, symbol)
    if not derivative.has(*_COMPLEX_PARTS):
        return derivative
    free = expr.free_symbols | {symbol}
    real = {s: sympy.Dummy(s.name, real=True) for s in free if s.is_real is not True}
    if not real:
        return derivative
    back = {d: s for s, d in real.items()}
    return sympy.diff(expr.xreplace(real), symbol.xreplace(real)).xreplace(back)


def is_diagonal(matrix: sympy.Matrix) -> bool:
    """True when every off-diagonal entry is identically zero."""
    n = matrix.shape[0]
    return all(matrix[i, j] == 0 for i in range(n) for j in range(n) if i != j)


#: Largest mass matrix (rows) whose accelerations are rewritten over its determinant; a
#: larger one keeps the LU solution (``mass_matrix="symbolic"`` above three coordinates).
COFACTOR_MAX = 3
#: Largest expanded numerator or determinant (in terms) that is rewritten: where one of them
#: is larger, the LU solution is kept, decided before any sum is rewritten. Combining sines and
#: cosines grows with the square of the terms and with the angles they hold: about 2 s for the
#: 88 terms of a triple pendulum, 2-9 s for each sum of 75-108 terms over 9-17 angles of a
#: 3-coordinate user system with many parameters (2-core machine, 2026-12-07).
COFACTOR_TERMS_MAX = 150


def solve_accelerations(dyn: LagrangianDynamics) -> list[sympy.Expr]:
    """Solve ``M a = F`` symbolically, in a form a person can read.

    A diagonal ``M`` is divided out term by term. Otherwise, up to :data:`COFACTOR_MAX` rows,
    each acceleration is written as ``(adj(M) F)_i / det(M)`` (Cramer's rule): numerator and
    determinant are expanded, products of sines and cosines combined into sines and cosines of
    sums (``cos(a)cos(b) + sin(a)sin(b) = cos(a - b)``), ``cos(u)**2`` exchanged for
    ``1 - sin(u)**2`` (or back) where that is shorter, the monomial factors that numerator and
    determinant share cancelled, and the common factors pulled out of the sums. Each rewriting
    step is a bounded pass (no ``simplify``); an acceleration keeps the LU solution when that
    counts fewer operations (:func:`sympy.count_ops`), and larger systems keep it always.

    Examples
    --------
    >>> th, w, m, g, l, t = sympy.symbols("theta omega m g l t")
    >>> x, v, M = sympy.symbols("x v M")
    >>> L = (M + m) * v**2 / 2 + m * l * v * w * sympy.cos(th) + m * l**2 * w**2 / 2
    >>> L += m * g * l * sympy.cos(th)
    >>> solve_accelerations(euler_lagrange(L, [x, th], [v, w], t))[0]
    m*(g*cos(theta) + l*omega**2)*sin(theta)/(M + m*sin(theta)**2)
    """
    n = dyn.mass_matrix.shape[0]
    if is_diagonal(dyn.mass_matrix):
        # Divide term by term so that masses cancel inside each force term.
        return [
            sympy.Add(*(t / dyn.mass_matrix[i, i] for t in sympy.Add.make_args(dyn.forcing[i])))
            for i in range(n)
        ]
    solution = dyn.mass_matrix.LUsolve(dyn.forcing)
    lu = [solution[i] for i in range(n)]
    compact = _cofactor_solution(dyn.mass_matrix, dyn.forcing) if n <= COFACTOR_MAX else None
    if compact is None:
        return lu
    return [c if sympy.count_ops(c) <= sympy.count_ops(a) else a for c, a in zip(compact, lu)]


def _cofactor_solution(mass: sympy.Matrix, forcing: sympy.Matrix) -> list[sympy.Expr] | None:
    """``a_i = (adj(M) F)_i / det(M)``, each compacted; None when an expansion is too large."""
    n = mass.shape[0]
    adjugate = mass.adjugate(method="berkowitz")
    # Every sum is expanded and its size checked before any is rewritten: the rewriting costs
    # seconds where the expansions take a fraction of one, and one sum too large to rewrite
    # means the LU solution for all, so the others' rewriting would be thrown away.
    sums = [mass.det(method="berkowitz")]
    sums += [sum((adjugate[i, j] * forcing[j] for j in range(n)), sympy.S.Zero) for i in range(n)]
    expanded = []
    for expr in sums:
        expr = sympy.expand(expr)
        if len(sympy.Add.make_args(expr)) > COFACTOR_TERMS_MAX:
            return None
        expanded.append(expr)
    det = _rewritten(expanded[0])
    if det == 0:
        return None
    out = []
    for numerator in expanded[1:]:
        numerator, denominator = _cancel_monomials(_rewritten(numerator), det)
        out.append(_collect(numerator) / _collect(denominator))
    return out


def _rewritten(expr: sympy.Expr) -> sympy.Expr:
    """An expanded sum with sines and cosines of sums combined and ``cos**2``/``sin**2``
    exchanged where shorter."""
    if expr.has(sympy.sin, sympy.cos):
        expr = sympy.expand(TR10i(expr))
        expr = _pythagoras(expr)
    return expr


def _pythagoras(expr: sympy.Expr) -> sympy.Expr:
    """``expr`` with ``cos(u)**2`` written ``1 - sin(u)**2`` (or ``sin`` as ``cos``) for each
    ``u`` where that leaves fewer operations once expanded."""
    best, ops = expr, sympy.count_ops(expr)
    for f in sorted(expr.atoms(sympy.sin, sympy.cos), key=sympy.default_sort_key):
        other = (sympy.sin if f.func is sympy.cos else sympy.cos)(*f.args)
        candidate = sympy.expand(best.subs(f**2, 1 - other**2))
        candidate_ops = sympy.count_ops(candidate)
        if candidate_ops < ops:
            best, ops = candidate, candidate_ops
    return best


def _powers(term: sympy.Expr) -> dict[sympy.Expr, int]:
    """The non-numeric factors of a product with integer exponents: ``{base: exponent}``."""
    out: dict[sympy.Expr, int] = {}
    for factor in sympy.Mul.make_args(term):
        if factor.is_Number:
            continue
        base, exp = factor.as_base_exp()
        if exp.is_Integer:
            out[base] = out.get(base, 0) + int(exp)
    return out


def _cancel_monomials(
    numerator: sympy.Expr, denominator: sympy.Expr
) -> tuple[sympy.Expr, sympy.Expr]:
    """Both sums divided by the largest monomial that divides every term of either, e.g.
    ``(l1*m2*x + l1*m2**2*y) / (l1**2*m2)`` -> ``(x + m2*y) / (l1)``."""
    terms = [_powers(t) for e in (numerator, denominator) for t in sympy.Add.make_args(e)]
    common = {b: min(p.get(b, 0) for p in terms) for b in terms[0]}
    monomial = sympy.Mul(*(b**k for b, k in common.items() if k != 0))
    if monomial == 1:
        return numerator, denominator
    return sympy.expand(numerator / monomial), sympy.expand(denominator / monomial)


def _collect(expr: sympy.Expr) -> sympy.Expr:
    """A sum with common factors pulled out greedily: the factor found in most terms first,
    ``a*b + a*c + d`` -> ``a*(b + c) + d``, then the same within each part."""
    terms = sympy.Add.make_args(expr)
    if len(terms) < 2:
        return expr
    powers = [_powers(t) for t in terms]
    counts: dict[sympy.Expr, int] = {}
    for p in powers:
        for base, k in p.items():
            if k > 0:
                counts[base] = counts.get(base, 0) + 1
    if not counts or max(counts.values()) < 2:
        return expr
    bases = sorted(counts, key=sympy.default_sort_key)
    base = max(bases, key=counts.__getitem__)
    k = min(p[base] for p in powers if p.get(base, 0) > 0)
    inside = [t for t, p in zip(terms, powers) if p.get(base, 0) > 0]
    rest = [t for t, p in zip(terms, powers) if p.get(base, 0) <= 0]
    factor = base**k
    inner = _collect(sympy.Add(*(t / factor for t in inside)))
    return _merge_sums(factor * inner + _collect(sympy.Add(*rest)))


def _merge_sums(expr: sympy.Expr) -> sympy.Expr:
    """A sum whose terms share a factor that is itself a sum, with those terms combined:
    ``a*(x + y) + b*(x + y)`` -> ``(a + b)*(x + y)``."""
    groups: dict[tuple[sympy.Expr, ...], list[sympy.Expr]] = {}
    for term in sympy.Add.make_args(expr):
        sums = [f for f in sympy.Mul.make_args(term) if f.is_Add]
        sums = tuple(sorted(sums, key=sympy.default_sort_key))
        groups.setdefault(sums, []).append(term / sympy.Mul(*sums))
    if all(len(rests) < 2 for sums, rests in groups.items() if sums):
        return expr
    return sympy.Add(*(sympy.Add(*rests) * sympy.Mul(*sums) for sums, rests in groups.items()))


def lagrangian_energy(lagrangian: sympy.Expr, velocities: Sequence[sympy.Symbol]) -> sympy.Expr:
    """The energy function ``E = sum_i v_i dL/dv_i - L``.

    Examples
    --------
    >>> x, v, m, k = sympy.symbols("x v m k")
    >>> lagrangian_energy(m * v**2 / 2 - k * x**2 / 2, [v])
    k*x**2/2 + m*v**2/2
    """
    momenta = partial_derivatives(lagrangian, velocities)
    total = sympy.Add(*(v * p for v, p in zip(velocities, momenta, strict=True)))
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
    dq = partial_derivatives(hamiltonian, momenta)
    dp = [-d for d in partial_derivatives(hamiltonian, coordinates)]
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
