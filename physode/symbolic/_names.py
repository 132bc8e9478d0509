"""How expression strings are read, from Python and in specifications alike: names as Python
reads them (NFKC forms, keywords), with a suggestion for a misspelt one, ``^`` refused, and
SymPy's constants other than ``pi`` found where an undeclared name reads as one, and a
system's warning of each (:func:`warn_constants`)."""

from __future__ import annotations

import ast
import builtins
import difflib
import functools
import io
import keyword
import math
import os
import re
import sys
import tokenize
import unicodedata
import warnings
from collections.abc import Collection, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import sympy

from physode._errors import PhysodeWarning, first_shown

if TYPE_CHECKING:
    from physode.symbolic._system import System

__all__ = [
    "CARET_REASON", "PARSER_NAMES", "SUM_CALL", "SYMPY_CONSTANTS", "add_terms", "bare_sympy_names",
    "caret_reason", "constant_names", "did_you_mean", "equality_reason", "flat_sums",
    "function_hint", "keyword_reason", "read_names", "reserved_reason", "scope", "unshadowed",
    "warn_constants",
]


def scope(names: Mapping[str, Any]) -> dict[str, Any]:
    """``names`` for parsing an expression: each also under its NFKC form.

    Python reads a name in an expression in that form (``ℓ`` as ``l``, the micro sign ``µ`` as
    the Greek ``μ``), so a name declared otherwise would not be found.

    Examples
    --------
    >>> scope({"ℓ": 1})
    {'l': 1, 'ℓ': 1}
    """
    return {**{unicodedata.normalize("NFKC", k): v for k, v in names.items()}, **names}


#: The names SymPy's parser writes into the code it evaluates: ``Integer(2)`` and
#: ``Float('1.5')`` for numbers, ``Symbol('y')`` and ``Function('f')`` for undeclared names,
#: ``Rational`` for repeated decimals. A declared name spelt so would shadow them (``'Symbol'
#: object is not callable`` for a parameter ``Integer`` in ``-Integer*x + 2``).
PARSER_NAMES = ("Symbol", "Function", "Integer", "Float", "Rational")
_ALIAS = "_physode_declared_{}"


def unshadowed(text: str, names: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """``text`` and the names in scope for parsing it, with each name in ``names`` that is one
    of :data:`PARSER_NAMES` renamed in both (to an alias that stands for the same object), so
    that the parser's own names keep their meaning.

    Examples
    --------
    >>> unshadowed("-Integer*x + 2", {"Integer": 1, "x": 2})
    ('-_physode_declared_Integer*x + 2', {'_physode_declared_Integer': 1, 'x': 2})
    >>> unshadowed("-k*x + 2", {"k": 1, "x": 2})
    ('-k*x + 2', {'k': 1, 'x': 2})
    """
    clashing = [name for name in PARSER_NAMES if name in names]
    if not clashing:
        return text, dict(names)
    # A name, not part of a longer one (Integer2) nor an attribute (sympy.Integer).
    pattern = re.compile(rf"(?<![\w.])({'|'.join(clashing)})(?!\w)")
    text = pattern.sub(lambda match: _ALIAS.format(match.group(1)), text)
    renamed = {(_ALIAS.format(k) if k in clashing else k): v for k, v in names.items()}
    return text, renamed


_WORD = re.compile(r"\w+")
# Keywords an expression may hold as themselves (operators, constants), so blamed for a failed
# parse only where declared as a name; any other keyword there (``lambda``) is meant as a name.
_EXPRESSION_KEYWORDS = {
    "and", "or", "not", "is", "in", "if", "else", "for", "async", "await", "True", "False", "None",
}


def keyword_reason(text: str, declared: Collection[str] = ()) -> str | None:
    """Why ``text`` does not parse when it uses a Python keyword as a name; None if it does not.

    Shared by expression strings from Python and from specification files. A keyword that an
    expression may hold as itself (``in``, ``True``) counts only when it is a ``declared`` name.

    Examples
    --------
    >>> keyword_reason("-lambda*x")[:30], keyword_reason("-lambda*x")[-24:]
    ("'lambda' is a Python keyword, ", 'rename it (e.g. lambda_)')
    >>> keyword_reason("-in*x") is None, keyword_reason("-in*x", {"in", "x"}) is None
    (True, False)
    """
    words = set(re.findall(r"[A-Za-z_]\w*", text))
    keywords = sorted(
        w for w in words
        if keyword.iskeyword(w) and (w not in _EXPRESSION_KEYWORDS or w in declared)
    )
    if not keywords:
        return None
    verb = "is a Python keyword" if len(keywords) == 1 else "are Python keywords"
    return (
        f"{', '.join(map(repr, keywords))} {verb}, which cannot be a name in an expression; "
        f"rename it (e.g. {keywords[0]}_)"
    )


#: Why an expression string with ``^`` is refused, from Python and in a specification file alike.
CARET_REASON = "'^' is not allowed; write powers as ** (Python reads '^' as exclusive or)"


def caret_reason(text: str) -> str | None:
    """:data:`CARET_REASON` when ``text`` uses the operator ``^``; None when it does not.

    SymPy's ``sympify`` reads ``x^2`` as ``x**2``, while Python, and so a specification file,
    whose expressions are checked as Python (:func:`physode.symbolic._spec.check_syntax`),
    reads ``^`` as exclusive or, which binds more loosely than ``+``: ``-k*x ^ 2`` is
    ``(-k*x) ^ 2`` to Python. Refusing it in both keeps one meaning for one text. A ``^``
    inside a string literal is no operator.

    Examples
    --------
    >>> caret_reason("-k*x ^ 2")
    "'^' is not allowed; write powers as ** (Python reads '^' as exclusive or)"
    >>> caret_reason("-k*x**2") is None, caret_reason("f('a^b')") is None
    (True, True)
    """
    tokens = tokenize.generate_tokens(io.StringIO(text).readline)
    try:
        if any(token.exact_type == tokenize.CIRCUMFLEX for token in tokens):
            return CARET_REASON
    except (tokenize.TokenError, SyntaxError):  # unbalanced brackets: reported by the parser
        pass
    return None


#: SymPy evaluates powers of numbers exactly: 10**10**10 would never finish. Physics needs no
#: exponent of a number beyond this.
_MAX_CONSTANT_EXPONENT = 1000.0


def excerpt(text: str, node: ast.AST) -> str:
    """The source of ``node`` in ``text``, quoted, cut to 40 characters."""
    code = ast.get_source_segment(text, node) or type(node).__name__
    return repr(code if len(code) <= 40 else code[:37] + "...")


def _constant(node: ast.AST) -> float | None:
    """The value of an expression made of numbers and arithmetic only (None otherwise, or where
    it is not real), in floats, which overflow to inf instead of growing without bound."""
    if isinstance(node, ast.Constant):
        value = node.value
        if not isinstance(value, int | float) or isinstance(value, bool):
            return None
        try:
            return float(value)
        except OverflowError:  # an integer literal beyond the float range
            return math.inf
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.UAdd | ast.USub):
        value = _constant(node.operand)
        return None if value is None else (-value if isinstance(node.op, ast.USub) else value)
    if not isinstance(node, ast.BinOp):
        return None
    left, right = _constant(node.left), _constant(node.right)
    if left is None or right is None:
        return None
    try:
        if isinstance(node.op, ast.Add):
            return left + right
        if isinstance(node.op, ast.Sub):
            return left - right
        if isinstance(node.op, ast.Mult):
            return left * right
        if isinstance(node.op, ast.Div):
            return left / right
        if isinstance(node.op, ast.Pow):
            value = left**right
            return value if isinstance(value, float) else None  # complex: not real
    except OverflowError:
        return math.inf
    except ZeroDivisionError:
        return None
    return None


def power_refusal(text: str, node: ast.AST) -> str | None:
    """Why the power ``node`` of two numbers is refused: an exponent too large to evaluate."""
    if not (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow)):
        return None
    if _constant(node.left) is None:
        return None
    exponent = _constant(node.right)
    if exponent is None or abs(exponent) <= _MAX_CONSTANT_EXPONENT:
        return None
    return (
        f"the power {excerpt(text, node)} of a number has an exponent beyond "
        f"{_MAX_CONSTANT_EXPONENT:g}, too large to evaluate"
    )


def power_reason(text: str) -> str | None:
    """Why an expression string given from Python is refused for a power of numbers with an
    exponent beyond :data:`_MAX_CONSTANT_EXPONENT`; None when it holds none.

    A specification file's expressions are refused by the same rule (:func:`power_refusal`,
    from :func:`physode.symbolic._spec.check_syntax`); SymPy would evaluate ``10**10**10``
    exactly and never finish. Text that does not parse as Python is left to SymPy to report.

    Examples
    --------
    >>> power_reason("k*x + 10**10**10")
    "the power '10**10**10' of a number has an exponent beyond 1000, too large to evaluate"
    >>> power_reason("x**2000 + (10**10)**10") is None
    True
    """
    # In brackets, so that leading spaces and line breaks parse as SymPy reads them.
    code = f"(\n{flat_sums(text)}\n)"
    try:
        tree = ast.parse(code, mode="eval")
    except (SyntaxError, ValueError, RecursionError):
        return None
    for node in ast.walk(tree):
        reason = power_refusal(code, node)
        if reason is not None:
            return reason
    return None


def equality_reason(text: str) -> str | None:
    """Why ``text`` is refused for using ``==`` or ``!=``; None when it does not.

    SymPy evaluates an expression string as Python, where ``x == 0`` compares the expressions
    ``x`` and ``0`` at once and gives ``False`` (``x != 0`` gives ``True``): a ``Piecewise``
    branch with that condition would silently be dropped, or always taken. ``Eq(a, b)`` and
    ``Ne(a, b)`` are the relations, as in a specification file.

    Examples
    --------
    >>> equality_reason("Piecewise((0, x == 0), (-x, True))")
    "'==' is not allowed (Python reads 'a == b' as a bool at once); write Eq(a, b)"
    >>> equality_reason("Piecewise((0, Eq(x, 0)), (-x, True))") is None
    True
    """
    try:
        for token in tokenize.generate_tokens(io.StringIO(text).readline):
            if token.exact_type in (tokenize.EQEQUAL, tokenize.NOTEQUAL):
                relation = "Eq" if token.exact_type == tokenize.EQEQUAL else "Ne"
                return (
                    f"'{token.string}' is not allowed (Python reads 'a {token.string} b' as a "
                    f"bool at once); write {relation}(a, b)"
                )
    except (tokenize.TokenError, SyntaxError):  # unbalanced brackets: reported by the parser
        pass
    return None


#: The name a long sum in an expression string is read through (:func:`flat_sums`), bound to
#: :func:`add_terms` where the text is evaluated; not a name an expression may use.
SUM_CALL = "_physode_sum"
#: Sums of more terms than this are read as one call (:func:`flat_sums`).
LONG_SUM = 64
# What binds more loosely than a binary + or -, so ends the terms of a sum: commas, comparisons,
# the other operators of that kind, and the keywords among them.
_SUM_SEPARATORS = {
    ",", ":", ":=", "=", ";", "<", ">", "<=", ">=", "==", "!=", "<<", ">>", "&", "|", "^",
    "if", "else", "and", "or", "not", "in", "is", "lambda", "for",
}
_OPENING, _CLOSING = "([{", ")]}"


def add_terms(*terms: Any) -> sympy.Expr:
    """The sum of ``terms`` as SymPy gives it for ``terms[0] + terms[1] + ...`` added one by one,
    built at once: what :data:`SUM_CALL` stands for where an expression string is evaluated.

    A term that is itself a sum contributes its terms in its place, where adding it one by one
    puts them: the coefficients of like terms are then added in the same order, so float
    coefficients come out the same to the last bit.

    Examples
    --------
    >>> x, y = sympy.symbols("x y")
    >>> add_terms(x, -(x - y), 2 * y)
    3*y
    """
    return sympy.Add(*(arg for term in terms for arg in sympy.Add.make_args(sympy.sympify(term))))


def reserved_reason(text: str) -> str | None:
    """Why ``text`` is refused for using :data:`SUM_CALL` as a name; None when it does not."""
    if re.search(rf"(?<![\w.]){SUM_CALL}(?!\w)", text):
        return f"the name '{SUM_CALL}' is reserved"
    return None


def flat_sums(text: str) -> str:
    """``text`` with each sum of more than :data:`LONG_SUM` terms written as one call of
    :data:`SUM_CALL`, ``a - b + c ...`` as ``_physode_sum(a, -(b), c, ...)``.

    Python nests ``a + b + c ...`` one level per term: it refuses to parse a sum of about 3000
    terms ("too deeply nested"), and SymPy, adding the terms one by one, re-sorts a growing sum
    each time (1000 terms took 5 s, 2000 took minutes). One call of ``sympy.Add`` with all the
    terms is flat and adds them once. A sum at any depth counts (inside brackets, a call's
    argument); shorter ones and text that does not tokenize are left as they are.

    Examples
    --------
    >>> flat_sums("-k*x + 2")
    '-k*x + 2'
    >>> names = [f"x{i}" for i in range(LONG_SUM)]
    >>> text = flat_sums(f"sin({' + '.join(names)} - y**2) + 1")
    >>> text.replace(", ".join(names), "x0, ..., x63")
    'sin(_physode_sum(x0, ..., x63, -(y**2))) + 1'
    """
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, SyntaxError):
        return text
    line_starts = [0]
    for line in text.splitlines(keepends=True):
        line_starts.append(line_starts[-1] + len(line))

    def offset(position: tuple[int, int]) -> int:
        return line_starts[position[0] - 1] + position[1]

    # One frame per open bracket: [its text before the current segment, the current segment's
    # pieces, the indices of the segment's binary + and -, whether the last token ends an operand].
    frames: list[list[Any]] = [[[], [], [], False]]
    end = 0
    for tok in tokens:
        start = offset(tok.start)
        piece, end = text[end:start] + tok.string, max(end, offset(tok.end))
        frame, string, kind = frames[-1], tok.string, tok.type
        if kind == tokenize.OP and string in _CLOSING and len(frames) > 1:
            inner = frames.pop()
            frame = frames[-1]
            frame[1].append("".join(inner[0]) + _segment(inner) + piece)
            frame[3] = True
        elif kind == tokenize.OP and string in _OPENING:
            frame[1].append(piece)
            frames.append([[], [], [], False])
        elif kind == tokenize.NEWLINE or (
            kind in (tokenize.OP, tokenize.NAME) and string in _SUM_SEPARATORS
        ):
            frame[0].append(_segment(frame) + piece)
            frame[1], frame[2], frame[3] = [], [], False
        elif kind == tokenize.OP and string in ("+", "-") and frame[3]:
            frame[2].append(len(frame[1]))
            frame[1].append(piece)
            frame[3] = False
        else:
            frame[1].append(piece)
            if kind not in (tokenize.NL, tokenize.ENDMARKER):
                frame[3] = kind in (tokenize.NUMBER, tokenize.STRING) or (
                    kind == tokenize.NAME
                    and (not keyword.iskeyword(string) or string in ("True", "False", "None"))
                )
    if len(frames) != 1:
        return text  # unbalanced brackets: the parser reports them
    return "".join(frames[0][0]) + _segment(frames[0]) + text[end:]


def _segment(frame: list[Any]) -> str:
    """The text of ``frame``'s current segment, as one call when it is a long sum (see
    :func:`flat_sums`)."""
    _, pieces, operators, _ = frame
    if len(operators) < LONG_SUM:
        return "".join(pieces)
    bounds = [*operators, len(pieces)]
    first = "".join(pieces[: bounds[0]])
    terms = [first.strip()]
    for at, stop in zip(bounds, bounds[1:], strict=False):
        term = "".join(pieces[at + 1 : stop]).strip()
        terms.append(f"-({term})" if pieces[at].strip() == "-" else term)
    indent = first[: len(first) - len(first.lstrip())]
    return f"{indent}{SUM_CALL}({', '.join(terms)})"


_SYMPY_NAMESPACE: dict[str, Any] = {}


def _name_tokens(text: str) -> list[tuple[str, str, str]]:
    """Each name in ``text`` with the tokens just before and after it (empty at either end);
    none when ``text`` does not tokenize (malformed: the parser reports it)."""
    try:
        tokens = [
            tok for tok in tokenize.generate_tokens(io.StringIO(text).readline)
            if tok.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.ENDMARKER)
        ]
    except (tokenize.TokenError, SyntaxError):
        return []
    strings = [tok.string for tok in tokens] + [""]
    return [
        (strings[i - 1] if i else "", tok.string, strings[i + 1])
        for i, tok in enumerate(tokens)
        if tok.type == tokenize.NAME
    ]


def bare_sympy_names(text: str, declared: Collection[str]) -> list[str]:
    """The names in ``text`` that are not ``declared`` and that SymPy's parser would read as
    something other than an expression: a function (``gamma``, ``beta``, ``N``), the singleton
    registry ``S``, the assumption keys ``Q``, a class (``O``, ``Float``), a boolean or a Python
    builtin (``abs``, ``sum``).

    A name stands bare when it is neither called nor followed or preceded by a dot. Read as
    SymPy's object, ``-S*x`` fails with "bad operand type for unary -: 'SingletonRegistry'" and
    ``N*x`` with a ``TypeError``, where a specification file reports an undeclared symbol;
    parsing these names as symbols gives Python strings the same message (a parameter left out
    of ``parameters``). SymPy's constants (``E``, ``pi``, ``I``, ``oo``) are expressions and
    keep their meaning, as in a file (``E`` with a warning: :func:`constant_names`).

    Examples
    --------
    >>> bare_sympy_names("-gamma*x + S(1)/3 + S.Half + beta(x, x) + E + N", {"x"})
    ['N', 'gamma']
    >>> bare_sympy_names("-gamma*x", {"gamma", "x"})
    []
    """
    if not _SYMPY_NAMESPACE:  # what sympify reads names from: SymPy's, then Python's builtins
        _SYMPY_NAMESPACE.update(vars(builtins))
        _SYMPY_NAMESPACE.update({name: getattr(sympy, name) for name in sympy.__all__})
    found = set()
    for before, name, after in _name_tokens(text):
        if name in declared or keyword.iskeyword(name) or before == "." or after in ("(", "."):
            continue
        value = _SYMPY_NAMESPACE.get(name)
        if value is not None and not isinstance(value, sympy.Expr):
            found.add(name)
    return sorted(found)


#: SymPy's real constants that an undeclared name in an expression string stands for (``E``
#: alone in a specification file, where the others are unknown symbols), each with what it
#: is. ``pi`` is left out: it means what anyone writing it means. ``I``, ``oo``, ``zoo`` and
#: ``nan`` are refused as not finite real numbers.
SYMPY_CONSTANTS = {
    "E": "Euler's number e = 2.71828...",
    "EulerGamma": "the Euler-Mascheroni constant 0.57721...",
    "Catalan": "Catalan's constant 0.91596...",
    "GoldenRatio": "the golden ratio 1.61803...",
    "TribonacciConstant": "the tribonacci constant 1.83928...",
}


def constant_names(text: str, declared: Collection[str]) -> list[str]:
    """The names in ``text`` that are not ``declared`` and that SymPy reads as one of its
    :data:`SYMPY_CONSTANTS`: a parameter ``E`` left out of the parameters would silently be
    2.718...; the caller warns of each (:func:`warn_constants`).

    Only the name itself counts, standing alone: not ``Ek`` or ``E0``, not ``2E3`` (a number),
    not ``exp(1)`` (the way to write e on purpose), not a name after a dot (``sympy.E``).

    Examples
    --------
    >>> constant_names("-E*x + Ek + 2E3 + exp(1) + pi", {"x", "Ek"})
    ['E']
    >>> constant_names("-E*x", {"E", "x"})
    []
    """
    return sorted({
        name for before, name, _ in _name_tokens(text)
        if name in SYMPY_CONSTANTS and name not in declared and before != "."
    })


def read_names(text: str) -> str:
    """``text`` with every name in its NFKC form, as Python reads names in code.

    SymPy's parser keeps a name as written, so an expression with ``ℓ`` would not find a
    parameter declared ``l`` (nor the micro sign ``µ`` one declared as the Greek ``μ``); with
    :func:`scope` for the declared names, both directions match. Only names change: ``x²`` stays
    as it is (an error to Python too), not the name ``x2``.

    Examples
    --------
    >>> read_names("-ℓ*µ*x² + 2.5e3")
    '-l*μ*x² + 2.5e3'
    """
    return _WORD.sub(_read_name, text)


def _read_name(match: re.Match) -> str:
    word = match.group()
    end = len(word)
    while end and not word[:end].isidentifier():  # a number, or a name followed by '²'
        end -= 1
    return unicodedata.normalize("NFKC", word[:end]) + word[end:]


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` naming the closest of ``choices`` to ``name``; empty when none
    is close.

    >>> did_you_mean("dissipaton", ["dissipation", "forces"])
    " (did you mean 'dissipation'?)"
    >>> did_you_mean("zeta", ["dissipation", "forces"])
    ''
    """
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


#: Functions as other languages (NumPy, C, MATLAB) or Python spell them, with what to write in
#: an expression string. In a specification file only physode's functions are in scope, so
#: ``ln(x)`` there is an unknown function (from Python, SymPy reads ``ln``, ``abs``, ``min``,
#: ``max`` and ``pow`` itself).
FUNCTION_SPELLINGS = {
    "ln": "log", "log10": "log(x, 10)", "log2": "log(x, 2)", "abs": "Abs", "fabs": "Abs",
    "min": "Min", "max": "Max", "fmin": "Min", "fmax": "Max", "pow": "x**y", "sgn": "sign",
    "arcsin": "asin", "arccos": "acos", "arctan": "atan", "arctan2": "atan2", "arcsinh": "asinh",
    "arccosh": "acosh", "arctanh": "atanh",
}


def function_hint(name: str, supported: Iterable[str]) -> str:
    """What to write instead of the function ``name``, which is none of ``supported``: its
    spelling among them (:data:`FUNCTION_SPELLINGS`), or the closest supported name for a name
    SymPy does not know either (a misspelling); empty otherwise: a function of SymPy's such as
    ``cot`` is no misspelt ``cos``.

    Examples
    --------
    >>> function_hint("ln", ["log"]), function_hint("sine", ["sin"]), function_hint("cot", ["cos"])
    (' (for ln write log)', " (did you mean 'sin'?)", '')
    """
    if name in FUNCTION_SPELLINGS:
        return f" (for {name} write {FUNCTION_SPELLINGS[name]})"
    if hasattr(sympy, name):
        return ""
    return did_you_mean(name, supported)


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
    >>> from physode.symbolic import System
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
        shown = first_shown(places, _PLACES_SHOWN)
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
