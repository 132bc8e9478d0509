"""Deriving a large system costs SymPy work in proportion to its size.

A chain of n coupled oscillators has a Lagrangian or Hamiltonian of about 2n terms. Deriving its
equations once differentiated every term by every symbol (n**2 term derivatives), evaluated
every entry of its n-by-n mass matrix with all 2n + 2 symbols substituted, and summed its energy
scale one term at a time: an 800-body chain took minutes. These tests count SymPy's work
(derivatives taken, substitutions made, terms added) for chains of 16 and 32 bodies, with fresh
symbols and SymPy's cache cleared, so the counts are not times and do not depend on the machine:
doubling the chain must about double the work, not quadruple it.
"""

from __future__ import annotations

import ast
import functools

import pytest
import sympy
import torch
from sympy.core.cache import clear_cache

import physode
import physode.symbolic
from physode.symbolic import System
from physode.symbolic import _codegen as codegen
from physode.symbolic import _names as names
from physode.symbolic._mechanics import euler_lagrange, hamilton, partial_derivatives
from physode.symbolic._spec import parse_expression
from physode.symbolic._validation import Problems


@pytest.fixture
def work(monkeypatch):
    """Counters of SymPy's work: derivatives constructed, symbol values substituted, and terms
    that sums were built from (a nested sum counts its terms)."""
    counts = {"derivatives": 0, "substitutions": 0, "terms added": 0}
    derivative_new = sympy.Derivative.__new__
    flatten = sympy.Add.__dict__["flatten"].__func__
    subs = sympy.Basic.subs

    def counted_derivative(cls, *args, **kwargs):
        counts["derivatives"] += 1
        return derivative_new(cls, *args, **kwargs)

    def counted_flatten(cls, seq):
        counts["terms added"] += sum(len(a.args) if a.is_Add else 1 for a in seq)
        return flatten(cls, seq)

    def counted_subs(self, *args, **kwargs):
        counts["substitutions"] += len(args[0]) if len(args) == 1 else 1
        return subs(self, *args, **kwargs)

    monkeypatch.setattr(sympy.Derivative, "__new__", staticmethod(counted_derivative))
    monkeypatch.setattr(sympy.Add, "flatten", classmethod(counted_flatten))
    monkeypatch.setattr(sympy.Basic, "subs", counted_subs)
    return counts


def _chain(n: int, prefix: str, form: str):
    """The expression and keyword arguments of a chain of ``n`` unit masses between walls."""
    q = sympy.symbols(f"{prefix}q0:{n}")
    k, m = sympy.symbols("k m")
    walls = [0, *q, 0]
    potential = sympy.Add(*(k * (b - a) ** 2 / 2 for a, b in zip(walls, walls[1:])))
    kwargs = {"coordinates": list(q), "parameters": {k: 1.0, m: 1.0}}
    if form == "hamiltonian":
        p = sympy.symbols(f"{prefix}p0:{n}")
        kwargs["momenta"] = list(p)
        return sympy.Add(*(x**2 / (2 * m) for x in p)) + potential, kwargs
    v = [sympy.Symbol(f"{prefix}q{i}_dot") for i in range(n)]
    return sympy.Add(*(m * x**2 / 2 for x in v)) - potential, kwargs


def _work_of(work, n, prefix, form, step):
    expr, kwargs = _chain(n, prefix, form)
    clear_cache()
    before = dict(work)
    step(expr, kwargs)
    return {key: work[key] - before[key] for key in work}


def _build(form):
    constructor = System.from_hamiltonian if form == "hamiltonian" else System.from_lagrangian
    return lambda expr, kwargs: constructor(expr, **kwargs)


def _energy_scale(form):
    def step(expr, kwargs):
        system = _build(form)(expr, kwargs)
        system.invariant_scales(system.sample_initial_states(2))

    return step


@pytest.mark.parametrize("form", ["lagrangian", "hamiltonian"])
def test_deriving_a_chain_twice_as_long_costs_about_twice_the_work(work, form):
    small = _work_of(work, 16, "a", form, _build(form))
    large = _work_of(work, 32, "b", form, _build(form))
    assert small["derivatives"] > 0
    for key in work:
        assert large[key] <= 2.5 * max(small[key], 1), (key, small, large)


@pytest.mark.parametrize("form", ["lagrangian", "hamiltonian"])
def test_the_energy_scale_of_a_chain_twice_as_long_adds_about_twice_the_terms(work, form):
    build = _build(form)
    scale = _energy_scale(form)
    small = _work_of(work, 16, "c", form, scale)
    small_build = _work_of(work, 16, "d", form, build)
    large = _work_of(work, 32, "e", form, scale)
    large_build = _work_of(work, 32, "f", form, build)
    small_terms = small["terms added"] - small_build["terms added"]
    large_terms = large["terms added"] - large_build["terms added"]
    assert 0 < large_terms <= 2.5 * small_terms, (small_terms, large_terms)


def test_the_chain_is_derived_right():
    expr, kwargs = _chain(3, "g", "lagrangian")
    system = System.from_lagrangian(expr, **kwargs)
    y = torch.tensor([0.1, -0.2, 0.3, 0.5, 0.0, -0.5], dtype=torch.float64)
    q = y[:3]
    walls = torch.cat((q.new_zeros(1), q, q.new_zeros(1)))
    stretch = walls[1:] - walls[:-1]
    expected = torch.cat((y[3:], stretch[1:] - stretch[:-1]))
    torch.testing.assert_close(system.rhs(0.0, y), expected, rtol=0, atol=1e-15)
    energy = (y[3:] ** 2).sum() / 2 + (stretch**2).sum() / 2
    torch.testing.assert_close(system.energy(y), energy, rtol=1e-15, atol=0)


x, y, z, a = sympy.symbols("x y z a")


@pytest.mark.parametrize(
    "expr",
    [
        x**2 * y + sympy.sin(x * z) + a * y**3 + 7,
        sympy.exp(x) * (y + z) ** 2 - sympy.Piecewise((x, y < 0), (z, True)),
        a * sympy.sqrt(x**2 + y**2) / z,
        sympy.Integer(3),
    ],
)
def test_partial_derivatives_are_sympys_derivatives(expr):
    assert partial_derivatives(expr, [x, y, z, a]) == [sympy.diff(expr, s) for s in (x, y, z, a)]


def test_hamilton_and_euler_lagrange_give_sympys_derivatives():
    q1, q2, v1, v2, p1, p2, t, m, k = sympy.symbols("q1 q2 v1 v2 p1 p2 t m k")
    lagrangian = m * (v1**2 + v1 * v2 * sympy.cos(q1 - q2)) + k * sympy.cos(q1) * t - q2 * v2
    dyn = euler_lagrange(lagrangian, [q1, q2], [v1, v2], t)
    momenta = [sympy.diff(lagrangian, v) for v in (v1, v2)]
    assert dyn.mass_matrix == sympy.Matrix(2, 2, lambda i, j: sympy.diff(momenta[i], (v1, v2)[j]))
    for i, q in enumerate((q1, q2)):
        forcing = sympy.diff(lagrangian, q) - sympy.diff(momenta[i], t)
        forcing -= sum(sympy.diff(momenta[i], c) * v for c, v in ((q1, v1), (q2, v2)))
        assert sympy.expand(dyn.forcing[i] - forcing) == 0
    hamiltonian = p1**2 / (2 * m) + p1 * p2 * q1 + k * q2**4
    assert hamilton(hamiltonian, [q1, q2], [p1, p2]) == [
        sympy.diff(hamiltonian, p1),
        sympy.diff(hamiltonian, p2),
        -sympy.diff(hamiltonian, q1),
        -sympy.diff(hamiltonian, q2),
    ]


def _long_sums(n: int):
    """Two outputs of ``n`` distinct terms each over states x, v and parameter k: one with
    ``sin`` (torch and Python-float code), one of exactly rounded operations only (NumPy code
    too), both with terms of either sign."""
    x, v, k, t = sympy.symbols("x v k t")
    trig = sympy.Add(*((-1) ** i * sympy.sin(x + i) * v for i in range(1, n + 1)))
    poly = sympy.Add(*((-1) ** i * (k + i) * x / (v + i) for i in range(1, n + 1)))
    return [trig, poly], [x, v], [k], t


@pytest.fixture(scope="module")
def long_sums():
    """``_long_sums`` just past the length printed as a call, and the kernels of its outputs
    (all, and the exactly rounded one alone, which also gets NumPy code) printed both ways:
    ``{"all" or "exact": (exprs, states, params, t, with calls, written out)}``."""
    exprs, states, params, t = _long_sums(codegen._LONG_SUM + 40)
    kernels = {}
    for key, outputs in (("all", exprs), ("exact", exprs[1:])):
        with_calls = codegen.compile_kernel(outputs, states, params, t, "calls")
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(codegen, "_LONG_SUM", 10**9)
            inline = codegen.compile_kernel(outputs, states, params, t, "inline")
        kernels[key] = (outputs, states, params, t, with_calls, inline)
    return kernels


def _nesting(source: str) -> int:
    """The depth of the deepest node of ``source``'s syntax tree."""

    def depth(node) -> int:
        return 1 + max(map(depth, ast.iter_child_nodes(node)), default=0)

    return depth(ast.parse(source))


def test_a_long_sum_does_not_nest_one_level_per_term(long_sums):
    # A sum written `a + b + c ...` nests one level per term: a user's Hamiltonian of a few
    # thousand terms gave code Python refused to compile ("maximum recursion depth exceeded
    # during compilation"). Printed as one call, the depth no longer grows with the terms.
    *_, with_calls, inline = long_sums["all"]
    *_, exact_calls, _ = long_sums["exact"]
    assert _nesting(inline.source) > codegen._LONG_SUM
    for source in (with_calls.source, with_calls.scalar_source, exact_calls.numpy_source):
        assert "_accumulate(" in source and _nesting(source) < 40


def test_a_long_sum_printed_as_a_call_is_right(long_sums):
    exprs, states, params, t, kernel, _ = long_sums["all"]
    y = torch.tensor([[0.3, 0.7], [-1.1, 2.0]], dtype=torch.float64)
    got = kernel(
        torch.tensor(0.0, dtype=torch.float64), y, torch.tensor([0.5], dtype=torch.float64)
    )
    for row, (xv, vv) in zip(got, y.tolist(), strict=True):
        values = {states[0]: xv, states[1]: vv, params[0]: 0.5}
        want = [float(e.evalf(30, subs=values)) for e in exprs]
        assert row.tolist() == pytest.approx(want, rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("path", ["batched", "float32", "scalar", "numpy"])
def test_a_long_sum_gives_the_bits_of_the_same_sum_written_out(long_sums, path):
    # The call makes the same additions in the same order: stored data keep their bits.
    *_, with_calls, inline = long_sums["exact" if path == "numpy" else "all"]
    assert (with_calls.numpy_source is not None) is (path == "numpy")
    dtype = torch.float32 if path == "float32" else torch.float64
    y = torch.tensor([[0.3, 0.7], [-1.1, 2.0], [5.0, -0.25]], dtype=dtype)
    p, time = torch.tensor([0.5], dtype=dtype), torch.tensor(0.0, dtype=dtype)
    if path == "scalar":  # one float64 state: the Python-float code
        y = y[0]
    if path == "batched":  # a graph: the torch code
        y.requires_grad_(True)
    assert torch.equal(with_calls(time, y, p), inline(time, y, p))


def test_the_variants_of_a_kernel_share_one_cse(monkeypatch):
    # sympy.cse is nearly all the time code generation takes for a large system, and the torch,
    # Python-float and NumPy variants of one kernel asked it the same question three times.
    calls = []
    cse = sympy.cse
    monkeypatch.setattr(
        sympy, "cse", lambda *args, **kwargs: calls.append(1) or cse(*args, **kwargs)
    )
    x, v, k, t = sympy.symbols("shared_x shared_v shared_k t")
    sources = codegen.generate_sources([k * v / (1 + x), -k * x / (1 + v)], [x, v], [k], t)
    assert sources.numpy is not None and sources.scalar is not None
    assert len(calls) == 1


# Expression strings (specification files, strings given to the constructors): Python nests
# `a + b + c ...` one level per term, so a sum of about 3000 terms did not parse ("too deeply
# nested" in a file, a bare RecursionError from Python, and to_spec refused such a system), and
# SymPy, adding the terms one by one, re-sorted a growing sum each time (1000 terms 5 s, 2000
# terms 4 minutes). A long sum is now read as one call that adds all its terms at once.
_LONG = 3000


@functools.cache  # three tests read the same 3000 terms; building them takes a second
def _powers(n: int) -> tuple[str, sympy.Expr]:
    """The text and the expression of ``1*x**1 + 2*x**2 - ... `` with ``n`` terms of either sign."""
    x = sympy.Symbol("x")
    signs = [1 if i % 3 else -1 for i in range(1, n + 1)]
    text = "1*x**1" + "".join(
        f" {'+' if s > 0 else '-'} {i}*x**{i}" for i, s in zip(range(2, n + 1), signs[1:])
    )
    return text, sympy.Add(*(s * i * x**i for i, s in zip(range(1, n + 1), signs)))


def test_a_specification_reads_a_sum_of_thousands_of_terms():
    text, expected = _powers(_LONG)
    spec = f'name = "long"\nform = "equations"\n[equations]\nx = "{text}"\n'
    system = physode.symbolic.system_from_spec(spec)
    assert system.equations["x"] == expected


def test_an_expression_string_from_python_may_be_a_sum_of_thousands_of_terms():
    text, expected = _powers(_LONG)
    system = System.from_equations({"x": text}, {})
    assert system.equations["x"] == expected


def test_a_system_with_a_sum_of_thousands_of_terms_is_written_and_read_back():
    _, expected = _powers(_LONG)
    system = System.from_equations({sympy.Symbol("x"): expected}, {}, name="long")
    back = physode.symbolic.system_from_spec(system.to_spec())
    assert back.equations["x"] == expected


def test_reading_a_sum_twice_as_long_adds_about_twice_the_terms(work):
    def terms_added(n):
        text, _ = _powers(n)
        clear_cache()
        before = work["terms added"]
        assert System.from_equations({"x": text}, {}).equations["x"].is_Add
        return work["terms added"] - before

    small, large = terms_added(200), terms_added(400)
    assert 0 < large <= 2.5 * small, (small, large)


@pytest.mark.parametrize("inside", ["{}", "k*({}) - sin({})", "Piecewise(({}, x < {}), (x, True))"])
def test_a_long_sum_reads_as_the_same_expression_as_added_one_by_one(inside):
    # Float coefficients of like terms, nested sums and negated sums: the one call adds the
    # coefficients in the order that adding the terms one by one does, to the last bit.
    terms = ["0.1*x", "x/3", "-(x - k)", "0.30000000000000004*x*k", "2.5e-3", "sin(x)*0.7"]
    text = " - ".join(terms[i % len(terms)] for i in range(names.LONG_SUM * 2))
    text = inside.format(text, text)
    scope = {"x": sympy.Symbol("x"), "k": sympy.Symbol("k")}
    flat = parse_expression(text, scope, "e", Problems())
    one_by_one = sympy.parse_expr(text, local_dict=scope)
    assert names.flat_sums(text).count(names.SUM_CALL) == inside.count("{}")
    assert sympy.srepr(flat) == sympy.srepr(one_by_one)


def test_the_name_a_long_sum_is_read_through_is_reserved():
    problems = Problems()
    text = f"{names.SUM_CALL}(x, x)"
    assert parse_expression(text, {"x": sympy.Symbol("x")}, "e", problems) is None
    assert "reserved" in problems.items[0]
    with pytest.raises(physode.SystemDefinitionError, match="reserved"):
        System.from_equations({"x": f"-{names.SUM_CALL}"}, {})


# A Piecewise of many pieces (a table of segments) and a Min or Max of many arguments were
# printed nested, one call per piece inside the next: about 200 pieces gave code Python
# refused to compile ("too many nested parentheses"). Past _LONG_CHAIN they are one call.
def _chains(n: int):
    """Piecewise expressions of ``n`` pieces, one with a square root that raises in Python where
    it is not taken, and a Max of just more arguments than are printed nested (SymPy takes
    seconds to build a Max of hundreds), over states x, v and parameter k."""
    x, v, k, t = sympy.symbols("x v k t")
    pieces = [(sympy.sqrt(x - i) * v + k * i, x > i) for i in range(n - 1, -1, -1)]
    table = sympy.Piecewise(*pieces, (-k * x, True))
    largest = sympy.Max(*(x - i * v for i in range(codegen._LONG_CHAIN + 8)))
    exact = sympy.Piecewise(*((k * i * x, x < i) for i in range(n)), (v, True))
    return [table, largest + exact], [x, v], [k], t


@pytest.mark.parametrize("n", [codegen._LONG_CHAIN + 8, 300])
def test_a_long_piecewise_or_max_does_not_nest_one_level_per_piece(n):
    exprs, states, params, t = _chains(n)
    kernel = codegen.compile_kernel(exprs, states, params, t, "chains")  # compiles at all
    exact = codegen.compile_kernel(exprs[1:], states, params, t, "exact")
    assert exact.numpy_source is not None
    for source in (kernel.source, kernel.scalar_source, exact.numpy_source):
        assert _nesting(source) < 40
    y = torch.tensor([[0.5, 2.0], [n - 0.5, -1.0], [-3.0, 0.25]], dtype=torch.float64)
    p = torch.tensor([0.7], dtype=torch.float64)
    got = kernel(torch.tensor(0.0, dtype=torch.float64), y, p)
    for row, (xv, vv) in zip(got, y.tolist(), strict=True):
        values = {states[0]: xv, states[1]: vv, params[0]: 0.7}
        want = [float(e.evalf(30, subs=values)) for e in exprs]
        assert row.tolist() == pytest.approx(want, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("path", ["batched", "float32", "scalar", "numpy"])
def test_a_long_piecewise_or_max_gives_the_bits_of_the_nested_calls(path):
    exprs, states, params, t = _chains(codegen._LONG_CHAIN + 8)
    if path == "numpy":
        exprs = exprs[1:]
    flat = codegen.compile_kernel(exprs, states, params, t, "flat")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(codegen, "_LONG_CHAIN", 10**9)
        nested = codegen.compile_kernel(exprs, states, params, t, "nested")
    assert "_where_chain(" in flat.source and "_where_chain(" not in nested.source
    assert (flat.numpy_source is not None) is (path == "numpy")
    dtype = torch.float32 if path == "float32" else torch.float64
    y = torch.tensor([[0.5, 2.0], [37.5, -1.0], [-3.0, 0.25], [12.0, 1.5]], dtype=dtype)
    p, time = torch.tensor([0.7], dtype=dtype), torch.tensor(0.0, dtype=dtype)
    rows = [y[i] for i in range(len(y))] if path == "scalar" else [y]  # one state: Python floats
    for row in rows:
        if path == "batched":
            row = row.clone().requires_grad_(True)
        assert torch.equal(flat(time, row, p), nested(time, row, p))
