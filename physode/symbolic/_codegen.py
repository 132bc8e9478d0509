"""SymPy expressions -> batched torch functions: a small printer, common-subexpression elimination
and a cache of compiled kernels. Each kernel also carries a variant over Python floats and, where
its torch code is exactly rounded, one over NumPy arrays, which take over where no gradient is
needed (:func:`load_kernel`).

The generated function has the signature ``kernel(t, y, p) -> Tensor`` where ``y`` has shape
``(..., n_state)``, ``p`` has shape ``(..., n_params)`` and the result has shape
``(..., n_out)``; the leading dimensions of ``y`` and ``p`` broadcast against each other. ``t`` is a
0-dim tensor or a tensor shaped like ``y`` with a trailing dimension of one (the per-sample solver
passes one time per row).

The emitted source works column by column: ``y.unbind(-1)`` gives one view per state (up to the
last one read column by column), every subexpression found by :func:`sympy.cse` becomes one local
variable, and the outputs are stacked; a run ``c * y[j:k]`` of outputs stays one slice product,
joined to the stacked ones by one concatenation.
Integer powers, square roots and quotients are printed as single torch operations so the operation
count matches what a person would write by hand.
"""

from __future__ import annotations

import functools
import hashlib
import linecache
import math
import re
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import sympy
import torch
from torch.autograd import forward_ad

from physode._errors import InvalidArgumentError, SystemDefinitionError
from physode.solvers._autograd import transforms_active

Kernel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

#: SymPy function class -> torch function name, for one-argument functions (``sign`` through
#: :func:`_nan_sign`: ``torch.sign`` gives 0 for NaN).
UNARY_FUNCTIONS: dict[type, str] = {
    sympy.sin: "torch.sin",
    sympy.cos: "torch.cos",
    sympy.tan: "torch.tan",
    sympy.asin: "torch.asin",
    sympy.acos: "torch.acos",
    sympy.atan: "torch.atan",
    sympy.sinh: "torch.sinh",
    sympy.cosh: "torch.cosh",
    sympy.tanh: "torch.tanh",
    sympy.asinh: "torch.asinh",
    sympy.acosh: "torch.acosh",
    sympy.atanh: "torch.atanh",
    sympy.exp: "torch.exp",
    sympy.log: "torch.log",
    sympy.Abs: "torch.abs",
    sympy.sign: "_nan_sign",
    sympy.erf: "torch.erf",
}

#: Functions the printer knows besides the one-argument ones.
OTHER_FUNCTIONS: tuple[type, ...] = (sympy.atan2, sympy.Min, sympy.Max, sympy.Piecewise)


#: What the printer spells out besides the functions above (and numbers).
_PRINTED: tuple[type, ...] = (
    sympy.Symbol, sympy.Add, sympy.Mul, sympy.Pow, sympy.core.relational.Relational,
    sympy.functions.elementary.piecewise.ExprCondPair, *UNARY_FUNCTIONS, *OTHER_FUNCTIONS,
)


def supported_function_names() -> list[str]:
    """Names of the SymPy functions that code generation can translate to torch.

    Returns
    -------
    list of str
        Sorted function names, e.g. ``["Abs", "Max", "Min", ..., "tanh"]``.

    Examples
    --------
    >>> "sin" in supported_function_names()
    True
    """
    names = [f.__name__ for f in UNARY_FUNCTIONS] + [f.__name__ for f in OTHER_FUNCTIONS]
    return sorted(names)


def unsupported_functions(expr: sympy.Expr) -> set[str]:
    """The names of functions in ``expr`` that code generation cannot translate.

    Besides functions, this names the other constructs the printer has no torch spelling for
    where they depend on a symbol (``Integral``, ``Sum``, ``And`` in a ``Piecewise`` condition);
    constant ones are evaluated to a number. Derivatives are left to the caller, which asks for
    velocity symbols instead.

    Parameters
    ----------
    expr : sympy.Expr
        Any expression.

    Returns
    -------
    set of str
        Empty when every function is supported.

    Examples
    --------
    >>> x = sympy.Symbol("x")
    >>> unsupported_functions(sympy.sin(x) + sympy.Function("f")(x))
    {'f'}
    >>> unsupported_functions(sympy.Integral(x**2, x))
    {'Integral'}
    """
    known = tuple(UNARY_FUNCTIONS) + OTHER_FUNCTIONS
    bad = set()
    stack = [expr]
    while stack:
        node = stack.pop()
        if isinstance(node, sympy.Lambda):
            bad.add("Lambda")  # an unapplied function: no free symbol, but no number either
            continue
        if isinstance(node, sympy.Function) and not isinstance(node, known):
            bad.add(type(node).__name__)
        elif not node.free_symbols or isinstance(node, sympy.Derivative):
            continue  # a number, printed as one; a derivative is reported by the caller
        elif not isinstance(node, _PRINTED):
            bad.add(type(node).__name__)
            continue
        stack.extend(node.args)
    return bad


def non_real_constants(expr: sympy.Basic) -> list[sympy.Expr]:
    """The constant parts of ``expr`` that are not finite real numbers (``nan``, ``oo``, ``I``).

    Parameters
    ----------
    expr : sympy.Basic
        Any expression.

    Returns
    -------
    list of sympy.Expr
        Each offending constant once, in the order found; empty when there is none.

    Examples
    --------
    >>> x = sympy.Symbol("x")
    >>> non_real_constants(x / 0 + sympy.pi * x)
    [zoo]
    >>> non_real_constants(sympy.sqrt(-2) * x)
    [I]
    >>> non_real_constants(10**400 * x) == [10**400]  # beyond float64: it would compute as inf
    True
    """
    found: list[sympy.Expr] = []
    stack = [expr]
    while stack:
        node = stack.pop()
        if not (isinstance(node, sympy.Expr) and not node.free_symbols):
            stack.extend(reversed(node.args))
        elif node in found:
            continue
        elif (_beyond_float_range(node) if isinstance(node, sympy.Rational)
              else not _finite_real(node)):
            found.append(node)
    return found


#: The largest float64, as an exact integer, to compare exact rationals with.
_FLOAT_MAX = int(np.finfo(np.float64).max)


def _beyond_float_range(number: sympy.Rational) -> bool:
    """Whether the exact ``number`` is beyond the float64 range (it would compute as inf)."""
    return abs(int(number.p)) > _FLOAT_MAX * int(number.q)


def shown_constant(constant: sympy.Expr) -> str:
    """``constant`` as an error shows it: a number of many digits as its first four, in
    scientific notation, not written out (``2**2000`` has 603 digits).

    Examples
    --------
    >>> shown_constant(sympy.Integer(2) ** 2000), shown_constant(sympy.zoo)
    ('1.148e+602', 'zoo')
    """
    text = str(constant)
    if isinstance(constant, sympy.Rational) and len(text) > 30:
        return str(sympy.N(constant, 4))
    return text


def _finite_real(constant: sympy.Expr) -> bool:
    try:
        value = complex(sympy.N(constant, 17))
    except (TypeError, ValueError):
        return True  # not a number at all (an undefined function): reported elsewhere
    return value.imag == 0 and math.isfinite(value.real)


#: Integers up to this size are printed as Python ints. Larger ones are printed as floats: torch
#: refuses Python ints beyond int64 as operands ("int too big to convert"), and beyond 2**53 the
#: float is what every code path would compute with anyway.
_EXACT_INTEGER = 2**53
#: Sums of more terms than this are printed as one call to `_accumulate` (see `_TorchPrinter._add`).
_LONG_SUM = 256
#: A ``Piecewise`` of more pieces, a ``Min`` or ``Max`` of more arguments than this is printed as
#: one call (`_where_chain`, `_fold`): written out, each nests one level deeper, and Python
#: refuses a line nested 200 parentheses deep ("too many nested parentheses").
_LONG_CHAIN = 32


class _TorchPrinter:
    """Prints one SymPy expression as a Python expression over torch tensors.

    ``names`` maps each SymPy symbol to the Python identifier that holds its value.
    """

    def __init__(
        self,
        names: dict[sympy.Symbol, str],
        scalars: set[sympy.Symbol],
        definitions: Sequence[tuple[sympy.Symbol, sympy.Expr]] | None = None,
    ):
        self.names = names
        self.scalars = scalars
        # Given (the torch variant): each Piecewise branch is printed in the kernel's inputs,
        # its shared subexpressions written out, each input gated by the branch's condition
        # (see _gated_branch).
        self.definitions = None if definitions is None else list(definitions)

    def print(self, expr: sympy.Basic) -> str:
        if not expr.free_symbols:
            return self._number(expr)
        if isinstance(expr, sympy.Symbol):
            return self.names[expr]
        if isinstance(expr, sympy.Add):
            return self._add(expr)
        if isinstance(expr, sympy.Mul):
            return self._mul(expr)
        if isinstance(expr, sympy.Pow):
            return self._pow(expr.base, expr.exp)
        if isinstance(expr, sympy.Piecewise):
            return self._piecewise(expr)
        if isinstance(expr, sympy.Rel):
            op = {"<": "<", "<=": "<=", ">": ">", ">=": ">=", "==": "==", "!=": "!="}[expr.rel_op]
            return f"({self.print(expr.lhs)} {op} {self.print(expr.rhs)})"
        func = type(expr)
        if func is sympy.sign and self.definitions is not None:
            # sign's derivative is 0 wherever it has one: its argument passes no gradient, or
            # 0 times the argument's own NaN or infinite derivative (sqrt(x) at x = 0) is NaN.
            return f"{UNARY_FUNCTIONS[func]}({self._operand(expr.args[0])}.detach())"
        if func in UNARY_FUNCTIONS:
            return f"{UNARY_FUNCTIONS[func]}({self._tensor(expr.args[0])})"
        if func is sympy.atan2:
            return f"torch.atan2({self._tensor(expr.args[0])}, {self._tensor(expr.args[1])})"
        if func in (sympy.Min, sympy.Max):
            return self._minmax(expr)
        raise SystemDefinitionError(
            f"cannot generate torch code for {func.__name__!r} in {expr}; supported functions: "
            f"{', '.join(supported_function_names())}"
        )

    def _number(self, expr: sympy.Basic) -> str:
        if isinstance(expr, sympy.Integer) and abs(int(expr)) <= _EXACT_INTEGER:
            return str(int(expr))
        if not _finite_real(expr):
            raise SystemDefinitionError(
                f"the constant {shown_constant(expr)} is not a finite real number; physode "
                "needs finite real values"
            )
        return repr(float(complex(sympy.N(expr, 17)).real))

    def _tensor(self, expr: sympy.Basic) -> str:
        """Print an argument that must be a tensor (torch functions reject Python numbers)."""
        text = self.print(expr)
        if not expr.free_symbols:
            return f"_const({text}, y)"
        return text

    def _add(self, expr: sympy.Add) -> str:
        # Tensor terms first so the running sum is a tensor, positive ones first to avoid a
        # separate negation; numbers last.
        terms = sorted(
            expr.args,
            key=lambda a: (
                not a.free_symbols,
                bool(a.as_coeff_Mul()[0].is_negative),
                sympy.default_sort_key(a),
            ),
        )
        signs, texts = [], []
        for term in terms:
            negative = term.as_coeff_Mul()[0].is_negative
            signs.append("-" if negative else "+")
            texts.append(self.print(-term if negative else term))
        first = f"-{texts[0]}" if signs[0] == "-" else texts[0]
        if len(terms) > _LONG_SUM:
            # `a + b + c ...` nests one level per term, and Python refuses to compile a few
            # thousand levels; the same additions, in the same order, as one call.
            return f"_accumulate({first}, {''.join(signs[1:])!r}, {', '.join(texts[1:])})"
        out = first
        for sign, text in zip(signs[1:], texts[1:], strict=True):
            out = f"{out} {sign} {text}"
        return f"({out})"

    def _mul(self, expr: sympy.Mul) -> str:
        coeff, factors = expr.as_coeff_mul()
        numer: list[sympy.Basic] = []
        denom: list[sympy.Basic] = []
        for factor in factors:
            # Negative integer powers become a division (one operation instead of a power and
            # a product); fractional ones stay a power, since a product is cheaper than a
            # quotient.
            if (
                isinstance(factor, sympy.Pow)
                and isinstance(factor.exp, sympy.Integer)
                and factor.exp.is_negative
            ):
                flipped = -factor.exp
                denom.append(factor.base if flipped == 1 else sympy.Pow(factor.base, flipped))
            else:
                numer.append(factor)
        # Parameter-only factors first, so their product is formed on small tensors.
        numer.sort(key=lambda a: (not a.free_symbols <= self.scalars, sympy.default_sort_key(a)))
        parts = [self._factor(f) for f in numer]
        negative = coeff.is_negative
        coeff = abs(coeff)
        if (
            isinstance(coeff, sympy.Rational)
            and not isinstance(coeff, sympy.Integer)
            and max(coeff.p, coeff.q) <= _EXACT_INTEGER
        ):
            # p/q: multiply by p and divide by q keeps exact integers visible.
            num_c, den_c = coeff.p, coeff.q
            if num_c != 1:
                parts.insert(0, str(num_c))
            denom_text = [str(den_c)] if den_c != 1 else []
        else:
            if coeff != 1:
                parts.insert(0, self._number(coeff))
            denom_text = []
        denom_text += [self._factor(f) for f in denom]
        if not parts:
            parts = ["1"] if not denom_text else []
        if parts:
            text = " * ".join(parts)
        else:
            text = self._reciprocal(" * ".join(denom_text))
            denom_text = []
        if denom_text:
            den = denom_text[0] if len(denom_text) == 1 else "(" + " * ".join(denom_text) + ")"
            text = f"{text} / {den}"
        return f"(-{text})" if negative else text

    def _reciprocal(self, text: str) -> str:
        return f"torch.reciprocal({text})"

    def _factor(self, expr: sympy.Basic) -> str:
        text = self.print(expr)
        if isinstance(expr, sympy.Add) and not text.startswith("("):
            return f"({text})"
        return text

    def _operand(self, expr: sympy.Basic) -> str:
        """Print an operand of ``**``, in parentheses unless a name, a call or a number >= 0."""
        text = self.print(expr)
        if isinstance(expr, sympy.Symbol | sympy.Function) or (
            not expr.free_symbols and not text.startswith("-")
        ):
            return text
        return text if text.startswith("(") and text.endswith(")") and _balanced(text[1:-1]) else (
            f"({text})"
        )

    def _pow(self, base: sympy.Basic, exp: sympy.Basic) -> str:
        b = self._operand(base)
        if not exp.free_symbols:
            if exp == 2:
                return f"torch.square({self._tensor(base)})"
            if exp == sympy.Rational(1, 2):
                return f"torch.sqrt({self._tensor(base)})"
            if exp == -sympy.Rational(1, 2):
                return f"torch.rsqrt({self._tensor(base)})"
            if exp == -1:
                return f"torch.reciprocal({self._tensor(base)})"
            if isinstance(exp, sympy.Rational) and exp.q == 2 and abs(exp.p) <= 9:
                return self._half_integer_pow(base, b, exp)
            if isinstance(exp, sympy.Integer):
                return f"{b} ** {int(exp)}"
            return f"{b} ** {self._number(exp)}"
        return f"{b} ** {self._operand(exp)}"

    def _half_integer_pow(self, base: sympy.Basic, b: str, exp: sympy.Rational) -> str:
        # x**(k + 1/2) as sqrt(x) * x**k: sqrt, rsqrt and products are rounded exactly, whereas
        # pow is computed by different kernels for a lone row and a vectorised batch, which would
        # make a trajectory depend in its last bits on the batch it is solved in (and pow is slow).
        k = (abs(exp.p) - 1) // 2
        root = "torch.sqrt" if exp > 0 else "torch.rsqrt"
        text = f"{root}({self._tensor(base)})"
        if k == 0:
            return text
        power = b if k == 1 else f"torch.square({self._tensor(base)})" if k == 2 else f"{b} ** {k}"
        return f"({text} * {power})" if exp > 0 else f"({text} / {power})"

    def _piecewise(self, expr: sympy.Piecewise) -> str:
        # Build nested torch.where from the last branch backwards.
        if expr.args[-1][1] is not sympy.true:
            raise SystemDefinitionError(
                f"Piecewise {expr} has no default branch; add (value, True) as its last argument"
            )
        conditions = [self.print(c) for _, c in expr.args[:-1]]
        if len(conditions) > _LONG_CHAIN:  # flat, as the chain of torch.where below
            taken = f"_fold('logical_or', {', '.join(conditions)})"
        else:
            taken = " | ".join(conditions)
        out = self._gated_branch(expr.args[-1][0], taken, default=True)
        values = [self._gated_branch(v, c) for (v, _), c in zip(expr.args, conditions)]
        if len(expr.args) > _LONG_CHAIN:  # the same torch.where calls, in one flat call
            pairs = (f"{c}, {v}" for v, c in zip(values, conditions))
            return f"_where_chain({out}, {', '.join(pairs)})"
        for value, cond in reversed(list(zip(values, conditions))):
            out = f"torch.where({cond}, {value}, {out})"
        return out

    def _gated_branch(self, value: sympy.Basic, condition: str, default: bool = False) -> str:
        """A branch's value whose gradient is zero, not NaN, where the branch is not taken.

        ``torch.where`` passes a zero gradient to the branch it does not take, but the branch's
        own backward multiplies that zero by its derivative there, which may be NaN or
        infinite (``sqrt(-x)`` of a contact force where ``x > 0``): the sum is NaN, for the
        state and for every parameter. So each input of the branch (a state, a parameter, the
        time) enters it as ``torch.where(condition, x, x.detach())``, which passes no
        gradient at all where the branch is not taken; the values are the same. The branch is
        written in those inputs, its shared subexpressions (``sympy.cse``, which may hold the
        NaN part) written out inside it.
        """
        if self.definitions is None or not value.free_symbols:
            return self._tensor(value)
        written_out = value
        for sym, sub in reversed(self.definitions):
            if sym in written_out.free_symbols:
                written_out = written_out.xreplace({sym: sub})
        # Written out as a tree, subexpressions shared many times over could grow beyond
        # measure: such a branch keeps them and gates them instead (which covers a NaN
        # derivative in the branch's own operations, not one inside them).
        if not _more_nodes_than(written_out, _GATED_BRANCH_NODES):
            value = written_out
        saved = self.names
        gated = {}
        for sym in value.free_symbols:
            name = saved[sym]
            gated[sym] = (
                f"torch.where({condition}, {name}.detach(), {name})" if default
                else f"torch.where({condition}, {name}, {name}.detach())"
            )
        self.names = {**saved, **gated}
        try:
            return self._tensor(value)
        finally:
            self.names = saved

    def _minmax(self, expr: sympy.Basic) -> str:
        fn = "torch.minimum" if isinstance(expr, sympy.Min) else "torch.maximum"
        args = [self._tensor(arg) for arg in expr.args]
        if self.definitions is not None:
            args = self._gated_arguments(expr, fn, args)
        return self._minmax_of(fn, args)

    @staticmethod
    def _minmax_of(fn: str, args: list[str]) -> str:
        if len(args) > _LONG_CHAIN:  # the same calls, in one flat call
            return f"_fold({fn.split('.')[1]!r}, {', '.join(args)})"
        out = args[0]
        for arg in args[1:]:
            out = f"{fn}({out}, {arg})"
        return out

    def _gated_arguments(self, expr: sympy.Basic, fn: str, args: list[str]) -> list[str]:
        """The arguments of a ``Min`` or ``Max``, each gated as a ``Piecewise`` piece is.

        ``torch.minimum``/``torch.maximum`` pass a zero gradient to an argument they do not
        choose, which its own backward multiplies by its derivative there: NaN for
        ``sqrt(k*Abs(x))`` at ``x = 0`` in ``Max(sqrt(k*Abs(x)), a)``, where ``a`` is chosen.
        So each argument is printed by :meth:`_gated_branch`, its inputs passing no gradient
        where another argument is chosen: ``arg < other`` for a ``Max`` (``arg > other`` for a
        ``Min``), ``other`` being the other argument or, of more than two, the ``Min`` or
        ``Max`` of all. A tie or a NaN compares False, so the argument keeps its gradient there,
        as ``torch.maximum`` gives it (half of it on a tie). The values are unchanged.
        """
        if len(args) == 2:
            others = [args[1], args[0]]
        else:
            whole = self._minmax_of(fn, args)
            others = [whole] * len(args)
        op = ">" if fn == "torch.minimum" else "<"
        return [
            self._gated_branch(arg, f"({text} {op} {other})", default=True)
            for arg, text, other in zip(expr.args, args, others, strict=True)
        ]


#: SymPy function class -> Python ``math`` function, for the scalar fast path.
_MATH_FUNCTIONS: dict[type, str] = {
    **{f: f"math.{f.__name__}" for f in (
        sympy.sin, sympy.cos, sympy.tan, sympy.asin, sympy.acos, sympy.atan, sympy.sinh,
        sympy.cosh, sympy.tanh, sympy.asinh, sympy.acosh, sympy.atanh, sympy.exp, sympy.log,
        sympy.erf,
    )},
    sympy.Abs: "abs",
    sympy.sign: "_sign",
}


class _ScalarPrinter(_TorchPrinter):
    """Prints the same expressions over Python floats (``math``), for one unbatched state.

    Operations that torch would turn into NaN or inf (a negative base under a fractional power,
    a division by zero, the log of zero) raise in Python instead; the caller then falls back to
    the tensor code, so both paths agree wherever the scalar one returns.
    """

    def print(self, expr: sympy.Basic) -> str:
        func = type(expr)
        if expr.free_symbols and func in _MATH_FUNCTIONS:
            return f"{_MATH_FUNCTIONS[func]}({self.print(expr.args[0])})"
        if expr.free_symbols and func is sympy.atan2:
            return f"math.atan2({self.print(expr.args[0])}, {self.print(expr.args[1])})"
        if expr.free_symbols and func in (sympy.Min, sympy.Max):
            name = "_min" if func is sympy.Min else "_max"
            return f"{name}({', '.join(self.print(a) for a in expr.args)})"
        return super().print(expr)

    def _tensor(self, expr: sympy.Basic) -> str:
        return self.print(expr)

    def _reciprocal(self, text: str) -> str:
        return f"1.0 / ({text})"

    def _pow(self, base: sympy.Basic, exp: sympy.Basic) -> str:
        b = self._operand(base)
        if isinstance(exp, sympy.Integer):
            return f"{b} ** {int(exp)}"
        if exp == sympy.Rational(1, 2):
            return f"math.sqrt({self.print(base)})"
        if exp == -sympy.Rational(1, 2):
            return f"1.0 / math.sqrt({self.print(base)})"
        # math.pow raises for a negative base (torch: NaN) instead of returning a complex.
        return f"math.pow({self.print(base)}, {self.print(exp)})"

    def _piecewise(self, expr: sympy.Piecewise) -> str:
        out = self.print(expr.args[-1][0])
        if len(expr.args) > _LONG_CHAIN:
            # One flat call, each condition and value a function evaluated only where the
            # nested conditional expressions would evaluate it.
            pairs = (f"lambda: {self.print(c)}, lambda: {self.print(v)}" for v, c in expr.args[:-1])
            return f"_first_true(lambda: {out}, {', '.join(pairs)})"
        for value, cond in reversed(expr.args[:-1]):
            out = f"({self.print(value)} if {self.print(cond)} else {out})"
        return out


def _sign(x: float) -> float:
    return (x > 0) - (x < 0) if x == x else x


def _nan_sign(x):
    """``sign(x)`` of a tensor (or, in the NumPy variant, an array), NaN where ``x`` is NaN as
    in NumPy, SymPy and the scalar code: ``torch.sign`` gives 0 there, which would hide a NaN
    state behind a finite derivative."""
    if not isinstance(x, torch.Tensor):
        return np.sign(x)
    return torch.sign(x).where(x == x, x)


def _min(*args: float) -> float:
    """``min`` of Python floats, NaN if any is NaN, as ``torch.minimum`` (``min`` would return
    whichever comes first)."""
    return math.nan if any(a != a for a in args) else min(args)


def _max(*args: float) -> float:
    """``max`` of Python floats, NaN if any is NaN, as ``torch.maximum``."""
    return math.nan if any(a != a for a in args) else max(args)


def _accumulate(first, signs: str, *terms):
    """``first`` plus or minus (``signs[i]``) each of ``terms``, left to right: the operations of
    ``first + terms[0] - terms[1] ...`` written out, for sums too long to print as one.

    Examples
    --------
    >>> _accumulate(1.0, "+-", 2.0, 0.5)
    2.5
    """
    total = first
    for sign, term in zip(signs, terms, strict=True):
        total = total + term if sign == "+" else total - term
    return total


def _where_chain(otherwise, *pairs):
    """``where(c1, v1, where(c2, v2, ... otherwise))`` for ``pairs = (c1, v1, c2, v2, ...)``,
    formed from the last pair to the first as the nested calls are, with torch's ``where`` or,
    for NumPy arrays, NumPy's: a ``Piecewise`` too long to print nested.

    Examples
    --------
    >>> x = torch.tensor([-2.0, 0.5, 3.0])
    >>> _where_chain(x * 0, x < -1, -x, x < 1, x**2)
    tensor([2.0000, 0.2500, 0.0000])
    """
    where = torch.where if isinstance(otherwise, torch.Tensor) else np.where
    out = otherwise
    for i in range(len(pairs) - 2, -1, -2):
        out = where(pairs[i], pairs[i + 1], out)
    return out


def _first_true(otherwise, *pairs):
    """``v1() if c1() else v2() if c2() else ... otherwise()`` for ``pairs = (c1, v1, c2, v2,
    ...)``, functions of no argument: :func:`_where_chain` over Python floats, evaluating what
    the nested conditional expressions would (a piece not taken may raise in Python).

    >>> _first_true(lambda: 0.0, lambda: False, lambda: 1 / 0, lambda: True, lambda: 2.0)
    2.0
    """
    for i in range(0, len(pairs), 2):
        if pairs[i]():
            return pairs[i + 1]()
    return otherwise()


#: Largest Piecewise branch (in expression nodes) that is written out in the kernel's inputs
#: to gate its gradient (:meth:`_TorchPrinter._gated_branch`).
_GATED_BRANCH_NODES = 5000


def _more_nodes_than(expr: sympy.Basic, limit: int) -> bool:
    """Whether ``expr``, as a tree, has more than ``limit`` nodes (stops counting there)."""
    for count, _ in enumerate(sympy.preorder_traversal(expr)):
        if count >= limit:
            return True
    return False


def _fold(name: str, first, *rest):
    """``f(... f(f(first, rest[0]), rest[1]) ...)`` for ``f`` torch's (or, for NumPy arrays,
    NumPy's) function ``name`` (``"minimum"``, ``"maximum"``): a ``Min`` or ``Max`` of too many
    arguments to print nested.

    >>> a, b, c = torch.tensor([1.0, 5.0]), torch.tensor([3.0, 2.0]), torch.tensor([0.0, 6.0])
    >>> _fold("maximum", a, b, c)
    tensor([3., 6.])
    """
    fn = getattr(torch if isinstance(first, torch.Tensor) else np, name)
    for arg in rest:
        first = fn(first, arg)
    return first


def _balanced(text: str) -> bool:
    """True when the parentheses in ``text`` never close more than they opened."""
    depth = 0
    for char in text:
        depth += (char == "(") - (char == ")")
        if depth < 0:
            return False
    return depth == 0


def _const(value: float, like):
    """``value`` as a 0-dim tensor (or NumPy array) of ``like``'s dtype and device."""
    if isinstance(like, np.ndarray):
        return np.asarray(value, dtype=like.dtype)
    return torch.as_tensor(value, dtype=like.dtype, device=like.device)


def _rsqrt(x):
    """``1 / sqrt(x)`` over NumPy arrays, rounded twice exactly as ``torch.rsqrt`` is."""
    return np.reciprocal(np.sqrt(x))


def _canonical_signs(expr: sympy.Expr) -> sympy.Expr:
    """Write ``(b - a)**2`` as ``(a - b)**2`` so that CSE sees one subexpression, not two."""
    return expr.replace(
        lambda e: isinstance(e, sympy.Pow)
        and e.exp.is_even is True
        and e.base.could_extract_minus_sign(),
        lambda e: sympy.Pow(-e.base, e.exp),
    )


@functools.lru_cache(maxsize=8)
def _shared_subexpressions(exprs: tuple[sympy.Expr, ...], taken: frozenset[str]):
    """``sympy.cse`` of ``exprs`` with fresh names ``_c0, _c1, ...`` not in ``taken``, negations
    inlined and compound root bases named: ``(replacements, reduced)``.

    Cached: the variants of one kernel (:func:`generate_sources`) mostly ask for the same
    outputs, and ``cse`` is nearly all the time it takes to generate a large system's code.
    """
    counter = iter(range(10**9))

    def fresh():
        while True:
            candidate = f"_c{next(counter)}"
            if candidate not in taken:
                return sympy.Symbol(candidate)

    replacements, reduced = sympy.cse(list(exprs), symbols=(fresh() for _ in iter(int, 1)))
    replacements, reduced = _inline_negations(replacements, reduced)
    replacements, reduced = _name_root_bases(replacements, reduced, fresh)
    return tuple(replacements), tuple(reduced)  # shared between callers: not to be changed


def _inline_negations(replacements, reduced):
    """Put ``-x`` subexpressions back where they are used: ``a - x`` is one operation, not two.

    Conditions go back too: ``cse`` names a comparison that two ``Piecewise`` share
    (``x > 0``), which is no expression to compute on its own but part of each ``Piecewise``.
    """
    kept, subs = [], {}
    for sym, sub in replacements:
        sub = sub.xreplace(subs)
        if isinstance(sub, sympy.logic.boolalg.Boolean):
            subs[sym] = sub
            continue
        coeff, rest = sub.as_coeff_Mul()
        if coeff == -1 and isinstance(rest, sympy.Symbol):
            subs[sym] = sub
        else:
            kept.append((sym, sub))
    return kept, [e.xreplace(subs) for e in reduced]


def generate_source(
    exprs: Sequence[sympy.Expr],
    states: Sequence[sympy.Symbol],
    params: Sequence[sympy.Symbol],
    time: sympy.Symbol,
    name: str = "kernel",
    variant: str = "torch",
) -> str:
    """Python source of a function evaluating ``exprs``: batched over torch tensors (the
    default), over NumPy arrays, or on Python floats (``variant``).

    Parameters
    ----------
    exprs : sequence of sympy.Expr
        The outputs, in order.
    states, params : sequence of sympy.Symbol
        The symbols read from ``y[..., i]`` and ``p[..., j]``.
    time : sympy.Symbol
        The symbol read from ``t``.
    name : str
        The function's name in the source.
    variant : {"torch", "numpy", "scalar"}
        ``"torch"``: batched over torch tensors. ``"numpy"``: the same operations over NumPy
        arrays (``y``, ``p``, ``t`` are arrays; the result is a new array); only for expressions
        whose torch code uses exactly rounded operations alone (see :func:`exactly_rounded`), so
        both give the same bits. ``"scalar"``: ``y`` and ``p`` are lists of Python floats, ``t``
        a float, and the function returns the list of outputs (``math`` instead of ``torch``).

    Returns
    -------
    str
        Source defining ``def name(t, y, p)``.

    Examples
    --------
    >>> x, v, k = sympy.symbols("x v k")
    >>> print(generate_source([v, -k * x], [x, v], [k], sympy.Symbol("t")))  # doctest: +ELLIPSIS
    def kernel(t, y, p):
    ...
        _p0, = p.unbind(-1)
    ...
    >>> print(generate_source([v, -k * x], [x, v], [k], sympy.Symbol("t"), variant="scalar"))
    def kernel(t, y, p):
        _y0, _y1, = y
        _p0, = p
        return [_y1, (-_p0 * _y0)]
    <BLANKLINE>
    """
    if variant not in VARIANTS:
        raise InvalidArgumentError(
            f"unknown variant {variant!r}; valid variants: {', '.join(VARIANTS)}"
        )
    scalar = variant == "scalar"
    params = list(params)
    exprs = [
        _distribute_scalars(_canonical_signs(sympy.sympify(e)), set(params)) for e in exprs
    ]
    names: dict[sympy.Symbol, str] = {}
    for i, s in enumerate(states):
        names[s] = f"_y{i}"
    for j, s in enumerate(params):
        names[s] = f"_p{j}"
    names[time] = "_t"
    used = set().union(*(e.free_symbols for e in exprs)) if exprs else set()
    # Identity outputs (dq/dt = v) are views already; only scaled runs gain from a slice.
    # (NumPy copies even identity runs as one slice into its output array.)
    blocks = [] if scalar else [
        b for b in _state_blocks(exprs, states, set(params)) if b[3] != 1 or variant == "numpy"
    ]
    in_block = {i for start, stop, *_ in blocks for i in range(start, stop)}
    single = [i for i in range(len(exprs)) if i not in in_block]

    replacements, reduced = _shared_subexpressions(
        tuple(exprs[i] for i in single), frozenset(names.values())
    )
    # Symbols whose value does not vary along the batch of states: parameters and the
    # subexpressions built from parameters only.
    scalars = set(params)
    for sym, sub in replacements:
        names[sym] = sym.name
        if sub.free_symbols <= scalars:
            scalars.add(sym)
    if scalar:
        printer = _ScalarPrinter(names, scalars)
    else:  # no gradient flows through NumPy: its branches are printed as they are
        printer = _TorchPrinter(names, scalars, replacements if variant == "torch" else None)
    lines = [f"def {name}(t, y, p):"]
    if scalar:
        if states:
            lines.append("    " + "".join(f"_y{i}, " for i in range(len(states))) + "= y")
        if params:
            lines.append("    " + "".join(f"_p{j}, " for j in range(len(params))) + "= p")
        if time in used:
            lines.append("    _t = t")
        lines += [f"    {names[sym]} = {printer.print(sub)}" for sym, sub in replacements]
        lines.append(f"    return [{', '.join(printer.print(e) for e in reduced)}]")
        return "\n".join(lines) + "\n"
    if variant == "numpy":
        return _numpy_source(lines, exprs, single, reduced, replacements, blocks, printer, states,
                             params, time in used, names)

    state_set = set(states)
    constant = {i: not (exprs[i].free_symbols & state_set) for i in single}
    # Per-row parameters: give state and parameters one batch shape so every output has it.
    # NumPy's broadcast_shapes: torch's imports its symbolic-shapes machinery on first use.
    lines.append("    if p.dim() > 1 and p.shape[:-1] != y.shape[:-1]:")
    lines.append("        _full = np.broadcast_shapes(y.shape[:-1], p.shape[:-1])")
    lines.append("        y = y.expand(_full + y.shape[-1:])")
    lines.append("        p = p.expand(_full + p.shape[-1:])")
    if any(constant.values()):  # y now has the batch shape of every output
        lines.append("    _shape = y.shape[:-1]")
    # Columns up to the last one the single outputs read: every column unbound but not read
    # costs a tensor of zeros in the backward pass (dr/dt = K v reads v through its slice).
    read = set().union(*(exprs[i].free_symbols for i in single)) if single else set()
    n_read = max((i + 1 for i, s in enumerate(states) if s in read), default=0)
    if n_read:
        columns = "y" if n_read == len(states) else f"y[..., :{n_read}]"
        targets = "".join(f"_y{i}, " for i in range(n_read))
        lines.append(f"    {targets}= {columns}.unbind(-1)")
    if params:
        lines.append("    " + "".join(f"_p{j}, " for j in range(len(params))) + "= p.unbind(-1)")
    if time in used:
        lines.append("    _t = t[..., 0] if t.dim() == y.dim() else t")
    for sym, sub in replacements:
        lines.append(f"    {names[sym]} = {printer.print(sub)}")
    pieces: dict[int, str] = {}
    for i, expr in zip(single, reduced, strict=True):
        text = printer.print(expr)
        if constant[i]:
            # Outputs that do not depend on the state still need the batch shape.
            text = f"_const({text}, y).expand(_shape)"
        lines.append(f"    _o{i} = {text}")
        pieces[i] = f"_o{i}"
    starts = {}
    for k, (start, stop, first, scale) in enumerate(blocks):
        view = f"y[..., {first}:{first + stop - start}]"
        if scale.free_symbols:
            lines.append(f"    _b{k} = {printer.print(scale)}.unsqueeze(-1) * {view}")
        else:
            lines.append(f"    _b{k} = {printer.print(scale)} * {view}")
        starts[start] = (stop, f"_b{k}")
    # The result in order: each run of single outputs stacked, each block as it is, joined by one
    # concatenation (a block taken apart only to be stacked again costs two operations more and
    # one a column in the backward pass).
    segments, run = [], []
    i = 0
    while i < len(exprs):
        if i in starts:
            if run:
                segments.append(f"torch.stack(({', '.join(run)},), dim=-1)")
                run = []
            i, block = starts[i]
            segments.append(block)
        else:
            run.append(pieces[i])
            i += 1
    if run:
        segments.append(f"torch.stack(({', '.join(run)},), dim=-1)")
    if len(segments) == 1:
        lines.append(f"    return {segments[0]}")
    else:
        lines.append(f"    return torch.cat(({', '.join(segments)}), dim=-1)")
    return "\n".join(lines) + "\n"


#: What :func:`generate_source` can emit.
VARIANTS = ("torch", "numpy", "scalar")

# torch functions whose result is the exactly rounded value of the operation (as +, -, * and /
# are), so torch's vectorised and scalar code paths and NumPy all give the same bits; the NumPy
# spelling of each. Left out: powers other than these, every transcendental function, and even
# torch.sqrt, which on the CPU is off by one unit in the last place for about 0.7 % of inputs
# (measured with torch 2.13; torch.rsqrt is 1 / sqrt rounded exactly twice).
_EXACT_NUMPY = {
    "square": "np.square",
    "rsqrt": "_rsqrt",
    "reciprocal": "np.reciprocal",
    "abs": "np.abs",
    "where": "np.where",
    "minimum": "np.minimum",
    "maximum": "np.maximum",
}
_STRUCTURE = {"stack", "cat"}  # the frame of the generated function
_TORCH_CALL = re.compile(r"\btorch\.(\w+)\(")


def exactly_rounded(source: str) -> bool:
    """Whether generated torch ``source`` uses exactly rounded operations only.

    Such a kernel gives the same bits whatever code path evaluates it, so it can also run as
    NumPy code, whose per-call overhead is a fraction of torch's on small batches.

    Examples
    --------
    >>> x, v, k, t = sympy.symbols("x v k t")
    >>> exactly_rounded(generate_source([v, -k * x / (1 + x**2)], [x, v], [k], t))
    True
    >>> exactly_rounded(generate_source([v, -k * sympy.sin(x)], [x, v], [k], t))
    False
    """
    called = set(_TORCH_CALL.findall(source))
    return "**" not in source and called <= set(_EXACT_NUMPY) | _STRUCTURE


def _to_numpy(text: str) -> str:
    return _TORCH_CALL.sub(lambda m: _EXACT_NUMPY[m.group(1)] + "(", text)


def _numpy_source(lines, exprs, single, reduced, replacements, blocks, printer, states, params,
                  uses_time, names) -> str:
    """The body of the ``"numpy"`` variant of :func:`generate_source` (see there)."""
    n_out = len(exprs)
    lines.append("    _shape = y.shape[:-1]")
    lines.append("    if p.ndim > 1 and p.shape[:-1] != _shape:")
    lines.append("        _shape = np.broadcast_shapes(_shape, p.shape[:-1])")
    lines.append("        y = np.broadcast_to(y, _shape + y.shape[-1:])")
    lines.append("        p = np.broadcast_to(p, _shape + p.shape[-1:])")
    if states and single:
        lines.append(
            "    " + "".join(f"_y{i}, " for i in range(len(states)))
            + "= " + "".join(f"y[..., {i}], " for i in range(len(states)))
        )
    if params:
        lines.append(
            "    " + "".join(f"_p{j}, " for j in range(len(params)))
            + "= " + "".join(f"p[..., {j}], " for j in range(len(params)))
        )
    if uses_time:
        lines.append("    _t = t[..., 0] if t.ndim == y.ndim else t")
    for sym, sub in replacements:
        lines.append(f"    {names[sym]} = {_to_numpy(printer.print(sub))}")
    lines.append(f"    _out = np.empty(_shape + ({n_out},), dtype=y.dtype)")
    for i, expr in zip(single, reduced, strict=True):
        lines.append(f"    _out[..., {i}] = {_to_numpy(printer.print(expr))}")
    for start, stop, first, scale in blocks:
        view = f"y[..., {first}:{first + stop - start}]"
        if scale == 1:
            value = view
        elif scale.free_symbols:
            value = f"{_to_numpy(printer.print(scale))}[..., None] * {view}"
        else:
            value = f"{_to_numpy(printer.print(scale))} * {view}"
        lines.append(f"    _out[..., {start}:{stop}] = {value}")
    lines.append("    return _out")
    return "\n".join(lines) + "\n"


def _name_root_bases(replacements, reduced, fresh):
    """Name each compound base of ``x**(k/2)``, ``|k| >= 3``, as a subexpression of its own.

    Such a power is printed as ``sqrt(x) * x**j`` (or ``rsqrt(x) / x**j``), which reads its base
    twice; without a name the base would be computed twice.
    """
    named: dict[sympy.Expr, sympy.Symbol] = {}
    out: list[tuple[sympy.Symbol, sympy.Expr]] = []

    def is_root_power(e) -> bool:
        return (
            isinstance(e, sympy.Pow)
            and isinstance(e.exp, sympy.Rational)
            and e.exp.q == 2
            and abs(e.exp.p) >= 3
            and not isinstance(e.base, sympy.Symbol)
        )

    def rename(e):
        if e.base not in named:
            named[e.base] = fresh()
            out.append((named[e.base], e.base))
        return sympy.Pow(named[e.base], e.exp, evaluate=False)

    for sym, sub in replacements:
        sub = sub.replace(is_root_power, rename)
        out.append((sym, sub))
    reduced = [e.replace(is_root_power, rename) for e in reduced]
    return out, reduced


def _distribute_scalars(expr: sympy.Expr, params: set[sympy.Symbol]) -> sympy.Expr:
    """``K * (a + b)`` with ``K`` built from parameters only -> ``K*a + K*b``.

    The parameter factor then joins the per-term products that CSE shares, instead of costing
    one more full-size multiplication per output.
    """
    if not isinstance(expr, sympy.Mul):
        return expr
    scalar = [f for f in expr.args if f.free_symbols <= params]
    rest = [f for f in expr.args if not f.free_symbols <= params]
    if not scalar or len(rest) != 1 or not isinstance(rest[0], sympy.Add):
        return expr
    factor = sympy.Mul(*scalar)
    return sympy.Add(*(factor * term for term in rest[0].args))


def _state_blocks(
    exprs: Sequence[sympy.Expr], states: Sequence[sympy.Symbol], params: set[sympy.Symbol]
) -> list[tuple[int, int, int, sympy.Expr]]:
    """Runs of outputs ``c * y[j], c * y[j+1], ...`` (``c`` free of the state), at least two long.

    Returns ``(start, stop, first_state_index, c)`` per run: such outputs become one operation
    on a slice of ``y`` (``dr/dt = K v`` in a nondimensional N-body system) instead of one each.
    """
    index = {s: j for j, s in enumerate(states)}
    keys = []
    for expr in exprs:
        coeff, rest = expr.as_independent(*states, as_Add=False)
        if rest in index and coeff.free_symbols <= params and coeff != 0:
            keys.append((coeff, index[rest]))
        else:
            keys.append(None)
    blocks = []
    i = 0
    while i < len(exprs):
        if keys[i] is None:
            i += 1
            continue
        stop = i + 1
        while (
            stop < len(exprs)
            and keys[stop] is not None
            and keys[stop][0] == keys[i][0]
            and keys[stop][1] == keys[i][1] + (stop - i)
        ):
            stop += 1
        if stop - i >= 2:
            blocks.append((i, stop, keys[i][1], keys[i][0]))
        i = stop
    return blocks


_CACHE: dict[str, Kernel] = {}


class KernelSources(NamedTuple):
    """The generated code of one kernel: what :func:`load_kernel` needs, picklable.

    ``torch`` is the batched source, ``scalar`` the variant over Python floats and ``numpy`` the
    NumPy variant (None unless the kernel is exactly rounded); each defines a function named
    ``name``, ``name + "_scalar"`` and ``name + "_numpy"``.
    """

    name: str
    torch: str
    scalar: str
    numpy: str | None


def generate_sources(
    exprs: Sequence[sympy.Expr],
    states: Sequence[sympy.Symbol],
    params: Sequence[sympy.Symbol],
    time: sympy.Symbol,
    name: str = "kernel",
    labels: Sequence[str] | None = None,
) -> KernelSources:
    """Every variant of :func:`generate_source` that :func:`load_kernel` uses.

    ``labels`` names the outputs in errors (default ``"output i of <name>"``).

    Raises
    ------
    physode.SystemDefinitionError
        When an output contains a constant that is not a finite real number (naming the output).

    Examples
    --------
    >>> x, v, k, t = sympy.symbols("x v k t")
    >>> sources = generate_sources([v, -k * x], [x, v], [k], t, "rhs")
    >>> sources.name, sources.numpy is not None
    ('rhs', True)
    """
    for i, expr in enumerate(exprs):
        bad = non_real_constants(sympy.sympify(expr))
        if bad:
            label = f"output {i} of {name}" if labels is None else labels[i]
            raise SystemDefinitionError(
                f"{label} contains the constant {shown_constant(bad[0])}, which is not a finite "
                "real number; "
                "physode needs finite real values"
            )
    source = generate_source(exprs, states, params, time, name)
    scalar = generate_source(exprs, states, params, time, f"{name}_scalar", "scalar")
    numpy = None
    if exactly_rounded(source):
        numpy = generate_source(exprs, states, params, time, f"{name}_numpy", "numpy")
    return KernelSources(name, source, scalar, numpy)


def compile_kernel(
    exprs: Sequence[sympy.Expr],
    states: Sequence[sympy.Symbol],
    params: Sequence[sympy.Symbol],
    time: sympy.Symbol,
    name: str = "kernel",
) -> Kernel:
    """Compile ``exprs`` into a batched torch function ``kernel(t, y, p) -> (..., len(exprs))``.

    The same as ``load_kernel(generate_sources(exprs, states, params, time, name))``.

    Parameters
    ----------
    exprs, states, params, time, name
        As for :func:`generate_source`.

    Returns
    -------
    callable
        See :func:`load_kernel`.

    Examples
    --------
    >>> x, v, k, t = sympy.symbols("x v k t")
    >>> f = compile_kernel([v, -k * x], [x, v], [k], t)
    >>> f(torch.tensor(0.0), torch.tensor([[1.0, 0.0]]), torch.tensor([2.0]))
    tensor([[ 0., -2.]])
    >>> f.numpy_source is not None
    True
    """
    return load_kernel(generate_sources(exprs, states, params, time, name))


def _transforms_active() -> bool:
    """Whether ``torch.func`` (``vmap``, ``jacfwd``, ``jvp``, ...) or forward-mode autograd is at
    work: their tensors carry batch dimensions or tangents that Python floats and NumPy arrays
    would drop (silently, for a tangent: ``jacfwd`` of a field got zeros)."""
    return transforms_active() or getattr(forward_ad, "_current_level", -1) >= 0


def load_kernel(sources: KernelSources) -> Kernel:
    """Turn generated sources into the kernel ``kernel(t, y, p)``, without SymPy.

    Identical sources return the same cached function, so a system is compiled once per process.

    Returns
    -------
    callable
        ``kernel(t, y, p)``; the source is kept in ``kernel.source`` and is visible in
        tracebacks. Where no gradient is needed, two faster variants take over, with results
        identical to the torch code's:

        * a single float64 CPU state is evaluated over Python floats (``kernel.scalar_source``),
          much faster for one trajectory; where it would raise (division by zero, a negative
          base under a fractional power) the tensor code runs instead;
        * a batch on the CPU whose kernel uses exactly rounded operations only (see
          :func:`exactly_rounded`: arithmetic, ``rsqrt``, ``abs``, ``min``/``max``, ...) is
          evaluated by NumPy (``kernel.numpy_source``, None for other kernels), whose per-call
          overhead is a fraction of torch's; the batched solves of small states that generate
          data sets spend most of their time here.

        The NumPy variant itself, a function of NumPy arrays, is ``kernel.numpy`` (or None).
    """
    name, source, scalar_source, numpy_source = sources
    key = hashlib.sha256("\0".join(filter(None, sources)).encode()).hexdigest()
    if key in _CACHE:
        return _CACHE[key]
    filename = f"<physode-generated {name} {key[:12]}>"
    text = "\n\n".join(filter(None, (source, scalar_source, numpy_source)))
    # Registering the source lets tracebacks and inspect show the generated lines.
    linecache.cache[filename] = (len(text), None, text.splitlines(True), filename)
    namespace: dict[str, object] = {
        "torch": torch,
        "math": math,
        "np": np,
        "_const": _const,
        "_sign": _sign,
        "_nan_sign": _nan_sign,
        "_min": _min,
        "_max": _max,
        "_rsqrt": _rsqrt,
        "_accumulate": _accumulate,
        "_where_chain": _where_chain,
        "_first_true": _first_true,
        "_fold": _fold,
    }
    exec(compile(text, filename, "exec"), namespace)
    batched = namespace[name]
    scalar = namespace[f"{name}_scalar"]
    on_numpy = namespace.get(f"{name}_numpy")
    f64 = torch.float64
    numpy_dtypes = (torch.float32, torch.float64)

    def kernel(t: torch.Tensor, y: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and (y.requires_grad or p.requires_grad or t.requires_grad):
            return batched(t, y, p)
        if not (y.is_cpu and p.is_cpu and t.is_cpu) or _transforms_active():
            return batched(t, y, p)
        # One float64 state: Python floats beat tens of tiny tensor operations (a solve of a
        # single trajectory spends most of its time here).
        if y.dim() == 1 and p.dim() == 1 and t.dim() == 0 and y.dtype == f64 == p.dtype:
            try:
                return torch.tensor(scalar(float(t), y.tolist(), p.tolist()), dtype=f64)
            except (ArithmeticError, ValueError, TypeError):
                pass  # NaN/inf territory: let torch produce them
        elif on_numpy is not None and y.dtype == p.dtype == t.dtype in numpy_dtypes:
            with np.errstate(all="ignore"):  # inf and NaN arise silently, as in torch
                out = on_numpy(t.detach().numpy(), y.detach().numpy(), p.detach().numpy())
            return torch.from_numpy(out)
        return batched(t, y, p)

    kernel.__name__ = kernel.__qualname__ = name
    kernel.source = source
    kernel.scalar_source = scalar_source
    kernel.numpy_source = numpy_source
    kernel.batched = batched
    kernel.numpy = on_numpy
    _CACHE[key] = kernel
    return kernel
