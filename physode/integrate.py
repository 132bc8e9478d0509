"""The solver layer's entry points: ``solve`` (a Solution with stats, status) and ``odeint``."""

from __future__ import annotations

import dis
import functools
import math
import types
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypedDict, TypeVar, Unpack, overload

import torch
from torch import Tensor, nn
from torch.autograd import forward_ad

from physode._checks import is_int
from physode._defaults import MAX_STEPS
from physode._errors import (
    InvalidArgumentError,
    PhysodeWarning,
    SolverError,
    UnsupportedError,
    one_tolerance,
    positive_finite,
)
from physode._repr import number_text, short_repr, stats_text, status_text
from physode.gradients import GRADIENT_NAMES, GradientMode, Problem
from physode.gradients.base import needs_gradient
from physode.gradients.times import FieldAt, output_times, start_time
from physode.solvers import (
    ADAPTIVE_METHODS,
    FIXED_METHODS,
    METHODS,
    SYMPLECTIC_METHODS,
    Stats,
    Status,
    make_stepper,
    unknown_method,
)
from physode.solvers._autograd import graph_leaves, private_query, transforms_active
from physode.solvers._tuples import Parts, TupleFunc
from physode.solvers.control import warn_unattainable
from physode.solvers.loop import time_maker

if TYPE_CHECKING:
    import numpy as np

__all__ = ["Solution", "Stats", "Status", "odeint", "solve"]

STEP_CONTROLS = ("shared", "per-sample")


_is_batched = private_query("is_batchedtensor")
_is_wrapped = private_query("is_functorch_wrapped_tensor")


def _transforms_active(tensors: Sequence[Tensor]) -> bool:
    """Whether a ``torch.func`` transform (``grad``, ``jacrev``, ``vmap``) runs around this call,
    also one over tensors that ``func`` captures; where torch cannot say that, whether one of
    ``tensors`` is a transform's wrapper."""
    return bool(transforms_active()) or any(_is_wrapped(x) for x in tensors)


YS = TypeVar("YS", Tensor, tuple[Tensor, ...])


@dataclass
class Solution(Generic[YS]):
    """The result of :func:`solve`: ``Solution[Tensor]``, or ``Solution[tuple[Tensor, ...]]``
    for a tuple (or list) ``y0``, as type checkers read it.

    Attributes
    ----------
    t : Tensor
        The output times, as requested.
    ys : Tensor or tuple of Tensor
        ``(len(t), *y0.shape)`` states at ``t``; NaN where a failed solve (``throw=False``) did not
        reach. For a tuple (or list) ``y0``, a tuple: part ``i`` of shape
        ``(len(t), *y0[i].shape)``.
    status : Status or Tensor
        ``Status.SUCCESS`` or why the solve stopped; with ``step_control="per-sample"`` an int64
        tensor of status codes, one per row of ``y0``.
    stats : Stats
        Accepted and rejected steps, function evaluations forward, and backward once it has run
        (per-sample: ``n_steps``, ``n_rejected`` and ``nfe`` are int64 tensors, one per row).
    message : str
        ``"success"`` or what went wrong, where, and what to try.
    t_final : float or Tensor
        The time reached (per row with ``step_control="per-sample"``).
    h_final : float or Tensor or None
        The last step size tried (per row with ``step_control="per-sample"``); where a failed solve
        stopped, how small its steps had become.
    """

    t: Tensor
    ys: YS
    status: Status | Tensor
    stats: Stats
    message: str
    t_final: float | Tensor
    h_final: float | Tensor | None = None

    @property
    def success(self) -> bool:
        """Whether every trajectory reached the last output time."""
        if isinstance(self.status, Tensor):
            return bool((self.status == Status.SUCCESS).all())
        return self.status is Status.SUCCESS

    def __repr__(self) -> str:
        # Shapes and counters, not the values: ys can hold millions of numbers.
        return short_repr(
            self,
            ("status", status_text),
            "t",
            "ys",
            ("stats", stats_text),
            ("t_final", number_text),
        )


def _check_state(y0: object, name: str = "y0") -> None:
    """Refuse a ``y0`` that is not a tensor of a dtype the solver computes in (float32, float64);
    ``name`` is how the message calls it (a part of a tuple state: ``y0[1]``)."""
    if not isinstance(y0, Tensor):
        raise InvalidArgumentError(
            f"{name} must be a torch.Tensor or a tuple of tensors, got {type(y0).__name__}"
            if name == "y0"
            else f"{name} must be a torch.Tensor, got {type(y0).__name__}"
        )
    if y0.is_complex():
        raise InvalidArgumentError(
            f"{name} must be real, got dtype {y0.dtype}; solve for its real and imaginary parts "
            f"as real states, e.g. torch.view_as_real({name})"
        )
    if not y0.is_floating_point():
        raise InvalidArgumentError(
            f"{name} must be floating point, got dtype {y0.dtype}; use e.g. {name}.double()"
        )
    if y0.dtype not in (torch.float32, torch.float64):
        # The error norm's scale atol + rtol |y| underflows in float16 (atol=1e-8 rounds to 0),
        # which made a finite solve stop as "non-finite" or return NaN.
        raise InvalidArgumentError(
            f"{name} must be float32 or float64, got dtype {y0.dtype}; use e.g. {name}.float()"
        )


def _tuple_state(y0: tuple | list) -> tuple[Tensor, Parts]:
    """The flat state and the layout of a tuple (or list) ``y0``, its parts checked: tensors of
    one floating dtype on one device."""
    if len(y0) == 0:
        raise InvalidArgumentError(
            f"y0 is an empty {type(y0).__name__}; give at least one tensor, e.g. y0=(z, logp)"
        )
    for i, part in enumerate(y0):
        _check_state(part, f"y0[{i}]")
    if len({(p.dtype, p.device) for p in y0}) > 1:
        kinds = ", ".join(f"y0[{i}] is {p.dtype} on {p.device}" for i, p in enumerate(y0))
        raise InvalidArgumentError(
            f"the parts of y0 must share one dtype and one device: {kinds}; convert them, "
            f"e.g. y0 = tuple(p.to(y0[0]) for p in y0)"
        )
    parts = Parts(y0)
    return parts.flatten(y0), parts


def _gradient_mode(gradient: str | GradientMode) -> GradientMode:
    if isinstance(gradient, GradientMode):
        return gradient
    if isinstance(gradient, str) and gradient in GRADIENT_NAMES:
        return GRADIENT_NAMES[gradient]()
    raise InvalidArgumentError(
        f"unknown gradient {gradient!r}; valid choices: "
        + ", ".join(repr(name) for name in GRADIENT_NAMES)
        + ", or an object physode.DiscOpt(), physode.OptDisc(...), physode.ACA()"
    )


def _times(t: Tensor | np.ndarray | Sequence[float], y0: Tensor) -> tuple[Tensor, list[float]]:
    if isinstance(t, Tensor):
        if t.device != y0.device:
            raise InvalidArgumentError(
                f"t is on {t.device} but y0 is on {y0.device}; put both on one device, "
                f"e.g. t = t.to(y0.device)"
            )
        if t.dtype == torch.bool or t.is_complex():
            raise InvalidArgumentError(f"t must hold real times, got dtype {t.dtype}")
        t_tensor = source = t
    else:
        _refuse_times_requiring_grad(t)
        try:
            # Read in float64 whatever y0's dtype: the times the loop steps to are exact.
            source = torch.as_tensor(t, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError):
            raise InvalidArgumentError(
                f"t must be a 1-D sequence of real times, got {type(t).__name__}: {t!r:.80}"
            ) from None
        t_tensor = source.to(y0.device, y0.dtype)
    if t_tensor.ndim != 1 or t_tensor.numel() < 2:
        raise InvalidArgumentError(
            f"t must be a 1-D sequence of at least two times, got shape {tuple(t_tensor.shape)}"
        )
    times = source.detach().to("cpu", torch.float64).tolist()
    if not all(math.isfinite(s) for s in times):
        raise InvalidArgumentError(f"t must be finite, got {times}")
    steps = [b - a for a, b in zip(times, times[1:])]
    if not (all(s > 0 for s in steps) or all(s < 0 for s in steps)):
        raise InvalidArgumentError(
            f"t must be strictly increasing or strictly decreasing, got {times[:6]}"
            + ("..." if len(times) > 6 else "")
            + _coarse_times_hint(t, times, steps)
        )
    return t_tensor, times


def _coarse_times_hint(t: object, times: list[float], steps: list[float]) -> str:
    """Why two output times came out equal where ``t`` arrived in a dtype narrower than float64
    (a float32 tensor or array): it rounded times closer than its spacing onto one; empty else.

    >>> _coarse_times_hint(torch.tensor([1e4, 1e4]), [1e4, 1e4], [0.0])[:66]
    '. t arrived as torch.float32, whose spacing near |t| = 1e+04 is ab'
    """
    dtype = getattr(t, "dtype", None)
    if 0.0 not in steps or dtype is None:
        return ""
    if isinstance(dtype, torch.dtype) and dtype.is_floating_point:
        eps = float(torch.finfo(dtype).eps)
    elif getattr(dtype, "kind", None) == "f":  # NumPy's float16 and float32
        eps = {2: 2.0**-10, 4: 2.0**-23}.get(dtype.itemsize, 0.0)
    else:
        return ""  # integer times are exact; equal ones were given equal
    if eps <= float(torch.finfo(torch.float64).eps):
        return ""
    top = max(abs(s) for s in times)
    return (
        f". t arrived as {dtype}, whose spacing near |t| = {top:.3g} is about {eps * top:.2g}: "
        "closer times round onto one. Pass t in float64 (a list of floats, or "
        "torch.tensor(..., dtype=torch.float64)), or count time from t[0]"
    )


def _refuse_times_requiring_grad(t: object) -> None:
    """Refuse a list or tuple of times holding a tensor that requires grad (``[0.0, T]`` with a
    learned ``T``): it is read as plain numbers, so ``T`` would silently get no gradient."""
    if not (isinstance(t, list | tuple) and torch.is_grad_enabled()):
        return
    for i, s in enumerate(t):
        if isinstance(s, Tensor) and s.requires_grad:
            raise InvalidArgumentError(
                f"t[{i}] is a tensor that requires grad in a {type(t).__name__} of times, which "
                "is read as plain numbers and would give it no gradient; pass t as one tensor, "
                "e.g. t = torch.stack([torch.zeros_like(T), T]) for t = [0.0, T]"
            )


def _first_evaluation(func: Callable, y0: Tensor, t0: float, per_sample: bool) -> Tensor:
    """``func(t0, y0)`` with autograd on, so its graph shows the tensors requiring grad that a
    plain function reaches in ways invisible from outside (globals, attributes of objects).

    ``t0`` is handed over as the loop will hand times: a 0-dim tensor, or per sample one time per
    row, shaped ``(batch,) + (1,) * (y0.ndim - 1)``.
    """
    t = time_maker(y0)(t0)
    if per_sample and y0.ndim > 0:  # a 0-dim y0 is refused later, with the reason
        t = t.expand(y0.shape[0]).reshape((-1,) + (1,) * (y0.ndim - 1))
    with torch.enable_grad():
        return func(t, y0.detach())


def _find_params(func: Callable, params: Sequence[Tensor] | None) -> list[Tensor]:
    """Tensors that need gradients: ``params`` if given, else those ``func`` visibly holds."""
    if params is not None:
        if isinstance(params, Tensor) or not isinstance(params, Iterable):
            raise InvalidArgumentError(
                f"params must be a sequence of tensors, got {type(params).__name__}; "
                "e.g. params=[w] or params=list(model.parameters())"
            )
        params = list(params)
        for i, p in enumerate(params):
            if not isinstance(p, Tensor):
                raise InvalidArgumentError(f"params[{i}] must be a tensor, got {type(p).__name__}")
        params = _unique(p for p in params if p.requires_grad)
        _refuse_derived(params)
        return params
    found: list[Tensor] = []
    for holder in _holders(func):
        if isinstance(holder, nn.Module):
            # holder.parameters()'s tensors in its order, without the names it builds for each.
            found.extend(
                p
                for m in holder.modules()
                for p in m._parameters.values()
                if p is not None and p.requires_grad
            )
        elif isinstance(holder, Tensor) and holder.requires_grad and holder.is_leaf:
            # A tensor computed from others (w2 = softplus(w)) is not one to differentiate: the
            # first evaluation's graph leads to the leaves behind it.
            found.append(holder)
    return _unique(found)


def _holders(func: Callable) -> list[object]:
    """What ``func`` may keep its tensors and modules in: itself, the object of a bound method,
    its closure and the globals its code reads; through the arguments a ``functools.partial``
    binds and the function a decorator wraps (``__wrapped__``: ``torch.compile`` of a function,
    ``functools.wraps``), whose own closure and globals are searched as well."""
    holders: list[object] = []
    seen: set[int] = set()
    while func is not None and id(func) not in seen and len(seen) < _MOST_WRAPPERS:
        seen.add(id(func))
        if isinstance(func, functools.partial):
            holders.extend((*func.args, *func.keywords.values()))
            func = func.func
            continue
        holders.extend((func, getattr(func, "__self__", None)))
        for cell in getattr(func, "__closure__", None) or ():
            try:
                holders.append(cell.cell_contents)
            except ValueError:  # an empty cell
                continue
        # Globals the function reads: a branch on t or y may reach them only after the first
        # evaluation, whose graph then does not show them.
        code, scope = getattr(func, "__code__", None), getattr(func, "__globals__", None)
        if code is not None and isinstance(scope, dict):
            holders.extend(scope[name] for name in _global_names(code) if name in scope)
        func = _wrapped(func)
    return holders


# The layers of partials and wrappers :func:`_holders` follows: a chain of thousands is a proxy
# that makes a new wrapper whenever it is asked for one (``inspect.unwrap`` stops too).
_MOST_WRAPPERS = 100


def _wrapped(func: object) -> Callable | None:
    """The function ``func`` wraps (its ``__wrapped__``), or ``None``: also where reading it
    raises (a proxy's own error, which would otherwise stop the solve) or gives no callable."""
    try:
        wrapped = getattr(func, "__wrapped__", None)
    except Exception:
        return None
    return wrapped if callable(wrapped) else None


def _refuse_derived(params: list[Tensor]) -> None:
    """Refuse a ``params`` list that holds a tensor and another computed from it (``w`` and
    ``softplus(w)``): the gradient would reach ``w`` twice, once directly and once through the
    other, and come out doubled."""
    listed = {id(p): i for i, p in enumerate(params)}
    nodes = {id(p.grad_fn): i for i, p in enumerate(params) if p.grad_fn is not None}
    for i, p in enumerate(params):
        seen: set[int] = set()
        stack = [next_fn for next_fn, _ in p.grad_fn.next_functions] if p.grad_fn else []
        while stack:
            node = stack.pop()
            if node is None or id(node) in seen:
                continue
            seen.add(id(node))
            leaf = getattr(node, "variable", None)  # AccumulateGrad holds its leaf tensor
            j = listed.get(id(leaf)) if leaf is not None else nodes.get(id(node))
            if j is not None and j != i:
                raise InvalidArgumentError(
                    f"params[{i}] is computed from params[{j}]: list one of them, or the gradient "
                    f"of params[{j}] would be counted twice (e.g. params=[w] where func uses "
                    "softplus(w))"
                )
            stack.extend(next_fn for next_fn, _ in node.next_functions)


def _check_devices(func: Callable, params: Sequence[Tensor], y0: Tensor) -> None:
    """Refuse parameters on another device than ``y0`` before ``func`` runs into them.

    A 0-dim CPU tensor that ``func`` reaches is fine anywhere, as torch broadcasts it as a
    scalar; not one a module holds, though: the module was left behind (``func.to``), and each
    evaluation would copy it to the device and wait for the copy, and Opt-Disc's products would
    come back on the CPU.
    """
    if isinstance(func, nn.Module) and _off_device(func, y0.device):
        # Named only now: building every name cost more than the check itself, on every solve.
        for name, tensor in [*func.named_parameters(), *func.named_buffers()]:
            if tensor.device != y0.device:
                raise InvalidArgumentError(
                    f"func's {name!r} is on {tensor.device} but y0 is on {y0.device}; move the "
                    "module to y0's device with func.to(y0.device)"
                )
    for p in params:
        if p.device != y0.device and not (p.ndim == 0 and p.device.type == "cpu"):
            raise InvalidArgumentError(
                f"a parameter of func (shape {tuple(p.shape)}) is on {p.device} but y0 is on "
                f"{y0.device}; put both on one device, e.g. func.to(y0.device) for a module"
            )


def _off_device(module: nn.Module, device: torch.device) -> bool:
    """Whether a parameter or buffer of ``module`` or of a module in it is not on ``device``."""
    for m in module.modules():
        for tensor in (*m._parameters.values(), *m._buffers.values()):
            if tensor is not None and tensor.device != device:
                return True
    return False


def _warn_random_layers(func: Callable, adaptive: bool, replays: bool) -> None:
    """Warn where ``func`` is a module with dropout in training mode, which draws a new mask at
    every evaluation: an adaptive method's error estimate then measures the noise and shrinks
    the step towards ``max_steps`` (an MLP with ``Dropout(0.2)`` took 94,000 steps over
    ``t`` in [0, 1]), and ACA and Opt-Disc (``replays``) differentiate other masks than the
    forward pass drew."""
    if not (adaptive or replays) or not isinstance(func, nn.Module):
        return
    layer = next(
        (
            m
            for m in func.modules()
            if isinstance(m, nn.modules.dropout._DropoutNd) and m.training and m.p > 0
        ),
        None,
    )
    if layer is None:
        return
    effects = []
    if adaptive:
        effects.append(
            "the adaptive error estimate measures that noise and shrinks the steps, possibly "
            "until max_steps"
        )
    if replays:
        effects.append(
            "ACA and Opt-Disc evaluate func again in the backward pass with other masks, so "
            "the gradient is not that of the forward solve"
        )
    warnings.warn(
        f"func holds {layer!r} in training mode, which draws a new mask at every evaluation: "
        + "; ".join(effects)
        + ". Call func.eval() for the solve, or use a fixed-step method with "
        "gradient='disc-opt', which differentiates the evaluations made.",
        PhysodeWarning,
        stacklevel=3,
    )


@functools.lru_cache(maxsize=256)
def _global_names(code: types.CodeType) -> tuple[str, ...]:
    """The global names that ``code`` (and the functions defined in it) reads; not the names of
    attributes, which ``co_names`` lists as well (``cfg.rate`` reads no global ``rate``)."""
    names = {i.argval for i in dis.get_instructions(code) if i.opname == "LOAD_GLOBAL"}
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names.update(_global_names(const))
    return tuple(sorted(names))


def _refuse_transforms(tensors: Sequence[Tensor], mode: str) -> None:
    """Refuse differentiation that the solve would silently get wrong.

    Forward mode (``torch.func.jvp``, ``jacfwd``, ``torch.autograd.forward_ad``): the solver
    evaluates ``func`` on detached copies of the state, which drop tangents. ``torch.func``'s
    reverse transforms need an autograd function written for them, which ACA's and Opt-Disc's
    are not; ``vmap`` cannot batch the solver's step-size decisions.
    """
    reverse = "torch.func.jacrev with gradient='disc-opt', or torch.autograd.functional.jacobian"
    if any(forward_ad.unpack_dual(x).tangent is not None for x in tensors):
        raise UnsupportedError(
            "forward-mode differentiation (torch.func.jvp or jacfwd, torch.autograd.forward_ad) "
            f"through a solve is not supported; take the derivatives in reverse mode: {reverse}"
        )
    if any(_is_batched(x) for x in tensors):
        raise UnsupportedError(
            "torch.func.vmap cannot batch a solve (each step's size depends on the state); "
            "solve the batch at once instead: stack the initial states along a leading "
            "dimension of y0"
        )
    if mode != "disc-opt" and _transforms_active(tensors):
        raise UnsupportedError(
            f"torch.func transforms (grad, jacrev, jvp) differentiate only gradient='disc-opt' "
            f"solves, not gradient={mode!r}; pass gradient='disc-opt', or use "
            "torch.autograd.grad or torch.autograd.functional.jacobian, which work with every "
            "gradient mode"
        )


def _unique(tensors: Iterable[Tensor]) -> list[Tensor]:
    """``tensors`` without repeats, in order: a tensor listed twice gets its gradient once."""
    unique: dict[int, Tensor] = {}
    for p in tensors:
        unique.setdefault(id(p), p)
    return list(unique.values())


class SolveOptions(TypedDict, total=False):
    """The keywords of :func:`solve` and :func:`odeint` after ``func, y0, t``, as type checkers
    read them (what they accept and their types; the defaults are :func:`solve`'s)."""

    method: str
    rtol: float
    atol: float
    step_size: float | None
    gradient: str | GradientMode
    step_control: str
    max_steps: int
    first_step: float | None
    max_step: float | None
    params: Sequence[Tensor] | None
    throw: bool


# What a type checker reads: a tensor y0 gives a tensor ys, a tuple (or list) y0 a tuple. One
# return type for both (ys: Tensor | tuple) made mypy and pyright refuse ``sol.ys.detach()`` and
# ``odeint(...) - target`` for a tensor y0.
@overload
def solve(
    func: Callable,
    y0: Tensor,
    t: Tensor | np.ndarray | Sequence[float],
    **options: Unpack[SolveOptions],
) -> Solution[Tensor]: ...


@overload
def solve(
    func: Callable,
    y0: tuple[Tensor, ...] | list[Tensor],
    t: Tensor | np.ndarray | Sequence[float],
    **options: Unpack[SolveOptions],
) -> Solution[tuple[Tensor, ...]]: ...


def solve(
    func: Callable,
    y0: Tensor | Sequence[Tensor],
    t: Tensor | np.ndarray | Sequence[float],
    *,
    method: str = "dopri5",
    rtol: float = 1e-6,
    atol: float = 1e-8,
    step_size: float | None = None,
    gradient: str | GradientMode = "aca",
    step_control: str = "shared",
    max_steps: int = MAX_STEPS,
    first_step: float | None = None,
    max_step: float | None = None,
    params: Sequence[Tensor] | None = None,
    throw: bool = True,
    **unknown: Any,
) -> Solution[Any]:
    """Solve ``dy/dt = func(t, y)`` from ``y0`` at ``t[0]`` and return the states at every ``t``.

    Parameters
    ----------
    func : callable ``(t, y) -> dy/dt``
        A function or ``nn.Module``; ``t`` arrives as a 0-dim tensor (per-sample: one time per row,
        shape ``(batch,) + (1,) * (y.ndim - 1)``); returns a tensor of ``y``'s shape (for a
        tuple ``y0``, a tuple of tensors, one of each part's shape).
    y0 : Tensor, or tuple or list of Tensor
        Initial state, any shape, floating point; its dtype and device are used throughout. A
        tuple (or list) of tensors, as in torchdiffeq, is a state in parts of any shapes, one
        dtype and one device: ``func(t, y)`` then receives a tuple of tensors of those shapes
        and returns one of the same length and shapes, and ``ys`` is a tuple. The solver steps
        the parts flattened into one tensor: every method and gradient mode works, the error norm
        is one RMS over all parts' components, and ``step_control="per-sample"`` is refused. A
        symplectic method reads a tuple of two parts of one shape as ``(q, v)``.
    t : Tensor, NumPy array or sequence of float
        Output times, strictly increasing or strictly decreasing (backward in time), at least two.
        A tensor that requires grad gets its gradient in every gradient mode: that of the exact
        solution, ``<dL/dy_k, func(t_k, y_k)>`` for each later output and ``-<a, func(t_0, y0)>``
        for ``t[0]`` (``a`` the adjoint reaching ``y0`` from the later outputs), evaluated on the
        computed outputs with ``len(t) + 1`` evaluations in the backward pass.
    method : str
        Adaptive ``heun``, ``bosh3``, ``dopri5``, ``tsit5``, ``dop853``; fixed-step ``euler``,
        ``midpoint``, ``rk4``; symplectic ``leapfrog``, ``yoshida4`` (fixed-step, for separable
        Hamiltonian vector fields). ``dopri5``, ``tsit5`` and ``bosh3`` interpolate at output times
        with their own dense output; so does ``dop853`` with ``step_control="per-sample"`` where
        nothing differentiates; the other methods step onto every output time.
    rtol, atol : float
        Relative and absolute tolerance of the scaled RMS error norm (adaptive methods).
    step_size : float
        Step of the fixed-step methods (required for them; the last step before each output time
        is shortened to land on it).
    gradient : str or GradientMode
        ``"aca"`` (default, exact, memory of the accepted states only), ``"disc-opt"`` (exact,
        backprop through the steps), ``"opt-disc"`` (continuous adjoint, approximate), or one of the
        objects ``physode.ACA()``, ``physode.DiscOpt()``, ``physode.OptDisc(...)``.
    step_control : str
        ``"shared"``: one step size for the whole state. ``"per-sample"``: each row of ``y0`` (its
        first dimension) steps on its own, with its own status. If ``func`` carries a NumPy twin
        of itself as ``func.numpy`` (the same function of NumPy arrays ``t`` and ``y``), a
        per-sample solve on the CPU that nothing differentiates runs on NumPy, with a fraction
        of torch's overhead per operation.
    max_steps : int
        Limit on step attempts (accepted plus rejected).
    first_step : float, optional
        Initial step of adaptive methods; chosen automatically when omitted.
    max_step : float, optional
        Longest step an adaptive method may take (SciPy's ``max_step``, diffrax's ``dtmax``): the
        automatic first step and every step the controller proposes are capped at it, in either
        direction of time. For a feature the error estimate cannot see from a step away (a short
        pulse of forcing), or two sign changes of an event function within one step. At most
        ``first_step`` where both are given; refused with fixed-step methods, which take
        ``step_size``. With ``step_control="per-sample"``, each row's steps are capped.
    params : sequence of Tensor, optional
        Tensors to differentiate for ACA and Opt-Disc. By default the parameters of ``func`` if it
        is an ``nn.Module`` (or a bound method of one); for a plain function, the tensors requiring
        grad and modules that it closes over, reads as globals or is bound to with
        ``functools.partial`` (also those of a function it wraps, ``__wrapped__``), or reaches
        otherwise (found from one extra evaluation's graph).
    throw : bool
        Raise :class:`physode.SolverError` when the solve fails (default); with ``False`` return the
        partial solution and its status instead. Per-sample solves never raise for a failed row:
        ``Solution.status`` holds one code per row.

    torchdiffeq's keywords (``options``, ``adjoint_params``, ``adjoint_rtol``...) are refused
    with physode's spelling of each; any other keyword is a ``TypeError``, as Python's own.

    Returns
    -------
    Solution

    Raises
    ------
    physode.InvalidArgumentError
        On bad input; the message names the bad value and the valid choices.
    TypeError
        For a keyword that is neither physode's nor torchdiffeq's.
    physode.SolverError
        When the solve stops early (step size underflow, ``max_steps``, non-finite state) and
        ``throw`` is true; carries the time reached, the step size and the partial solution.

    Examples
    --------
    >>> import torch, physode
    >>> sol = physode.solve(lambda t, y: -y, torch.tensor([1.0]), torch.linspace(0, 1, 5))
    >>> sol.ys.shape, sol.status
    (torch.Size([5, 1]), <Status.SUCCESS: 0>)

    A state in two parts, a position ``q`` and a velocity ``v``:

    >>> q, v = torch.ones(3), torch.zeros(3)
    >>> qs, vs = physode.solve(lambda t, y: (y[1], -y[0]), (q, v), torch.linspace(0, 1, 5)).ys
    >>> qs.shape, vs.shape
    (torch.Size([5, 3]), torch.Size([5, 3]))

    The gradient with respect to the output times: ``y = exp(-(t1 - t0))``, so
    ``dy/dt1 = -y`` and ``dy/dt0 = y``:

    >>> t = torch.tensor([0.0, 1.0], dtype=torch.float64, requires_grad=True)
    >>> sol = physode.solve(lambda t, y: -y, torch.ones(1, dtype=torch.float64), t)
    >>> sol.ys[-1].sum().backward()
    >>> [round(g, 5) for g in t.grad.tolist()]
    [0.36788, -0.36788]

    A pulse of forcing 0.01 wide at ``t = 5``, of area 1, which steps of the size the
    tolerance allows where nothing happens pass over; ``max_step`` makes the solve see it:

    >>> pulse = lambda t, y: torch.exp(-((t - 5) / 0.01) ** 2).expand_as(y) / 0.01 / torch.pi**0.5
    >>> y0 = torch.zeros(1, dtype=torch.float64)
    >>> physode.odeint(pulse, y0, [0.0, 10.0])[-1].item()
    0.0
    >>> round(physode.odeint(pulse, y0, [0.0, 10.0], max_step=0.1)[-1].item(), 6)
    1.0
    """
    if unknown:
        refuse_keywords(unknown)
    parts = None
    if isinstance(y0, tuple | list):
        y0, parts = _tuple_state(y0)
    else:
        _check_state(y0)
    if not callable(func):
        raise InvalidArgumentError(
            f"func must be callable as func(t, y), got {type(func).__name__}"
        )
    mode = _gradient_mode(gradient)
    if step_control not in STEP_CONTROLS:
        raise InvalidArgumentError(
            f"unknown step_control {step_control!r}; valid choices: {', '.join(STEP_CONTROLS)}"
        )
    if parts is not None:
        _check_tuple_settings(parts, method, step_control, rtol, atol)
    rtol, atol, step_size, first_step, max_steps, max_step = check_settings(
        method, rtol, atol, step_size, first_step, max_steps, max_step
    )
    t_tensor, times = _times(t, y0)
    _refuse_transforms([y0], mode.name)
    y0 = check_initial_state(y0)

    # The loops raise rtol to the dtype's resolution (attainable_rtol); say so here, once.
    if method in ADAPTIVE_METHODS:
        warn_unattainable(rtol, y0, "the solve", stacklevel=2)
    # What the solver calls: func itself, or for a tuple state func of the flat state. func itself
    # is where its parameters, device and layers are looked for.
    field = func if parts is None else TupleFunc(func, parts, method in SYMPLECTIC_METHODS)
    stepper = make_stepper(method, field)
    stats = Stats()
    stepper = checked_split(stepper, field, method, times[0], y0, stats)
    # A t that requires grad: y0 and the outputs are wrapped so that their gradients reach t too
    # (physode/gradients/times.py); nothing else, and nothing at all without it.
    field_at = None
    if t_tensor.requires_grad and torch.is_grad_enabled():
        if _transforms_active([t_tensor]):
            # They differentiate every backward pass again, which the time gradient's is not.
            raise UnsupportedError(
                "torch.func transforms (grad, jacrev, vjp) do not differentiate a solve with "
                "respect to its output times t; use torch.autograd.grad(loss, [t]) or "
                "torch.autograd.functional.jacobian, or pass t.detach()"
            )
        field_at = FieldAt(field, stats, step_control == "per-sample")
        y0 = start_time(y0, t_tensor, field_at, times[0])
    problem = Problem(
        func=field,
        y0=y0,
        times=times,
        stepper=stepper,
        method=method,
        rtol=rtol,
        atol=atol,
        step_size=step_size,
        first_step=first_step,
        max_steps=max_steps,
        params=_find_params(func, params),
        stats=stats,
        max_step=max_step,
    )
    _check_devices(func, problem.params, y0)
    _refuse_transforms(problem.params, mode.name)
    # Disc-Opt records whatever func reaches as long as autograd is on, which it is whenever y0
    # requires grad; otherwise it too must look for tensors func reaches unseen. So must the
    # other modes, also for an nn.Module, which may use tensors that are not its parameters.
    discover = mode.name != "disc-opt" or not y0.requires_grad
    # Given params, ACA and Opt-Disc differentiate those alone, while Disc-Opt records whatever
    # func uses: where neither y0 nor a listed tensor requires grad (params=[]), only this
    # evaluation tells whether func uses one that does.
    if params is not None:
        discover = mode.name == "disc-opt" and not needs_gradient(problem)
    if discover and torch.is_grad_enabled():
        # The shared loop starts from this evaluation (the per-sample loops make their own).
        first = _first_evaluation(field, y0, times[0], step_control == "per-sample")
        stats.nfe += 1
        if isinstance(first, Tensor) and mode.name != "disc-opt":
            _refuse_transforms([first], mode.name)  # a tangent that func's own tensors carry
        if isinstance(first, Tensor):
            known = {id(p) for p in problem.params}
            if first.requires_grad:
                problem.params.extend(p for p in graph_leaves(first) if id(p) not in known)
            # Disc-Opt differentiates through f0 itself; its graph reaches the parameters only,
            # as y0 does not require grad here. The other modes want it without a graph.
            problem.f0 = first if mode.name == "disc-opt" else first.detach()
        del first  # its graph, unless Disc-Opt keeps it, goes before the solve
    differentiate = needs_gradient(problem)
    _warn_random_layers(func, method in ADAPTIVE_METHODS, differentiate and mode.name != "disc-opt")
    if differentiate:
        solution, reached = _solve(problem, mode, t_tensor, step_control)
        if field_at is not None:
            solution.ys = output_times(solution.ys, t_tensor, field_at, times, reached)
    else:
        # Nothing will ask for a gradient. Not inference mode, though it would save about a
        # sixth of torch's per-operation overhead: a func may use autograd inside (a Hamiltonian
        # network), or build and keep a tensor on first use that later training must differentiate
        # through. A caller whose func does neither may wrap the call in inference mode.
        with torch.no_grad():
            solution, _ = _solve(problem, mode, t_tensor, step_control)
    if parts is not None:
        solution.ys = parts.split(solution.ys, lead=(len(times),))
    # Per-sample solves report failures row by row in their status, never as one exception.
    if throw and step_control == "shared" and not solution.success:
        _raise(solution)
    return solution


def check_settings(
    method: str,
    rtol: object,
    atol: object,
    step_size: object,
    first_step: object,
    max_steps: object,
    max_step: object = None,
) -> tuple[float, float, float | None, float | None, int, float | None]:
    """The solver settings that :func:`solve` and :func:`physode.odeint_event` share, checked:
    ``(rtol, atol, step_size, first_step, max_steps, max_step)`` as floats (or None) and an
    int, or the ``InvalidArgumentError`` that names the bad one and the valid choices."""
    if method not in METHODS:
        raise InvalidArgumentError(unknown_method(method))
    rtol, atol = one_tolerance("rtol", rtol), one_tolerance("atol", atol)
    if method in FIXED_METHODS:
        if step_size is None:
            raise InvalidArgumentError(
                f"method={method!r} is fixed-step and needs step_size, e.g. "
                f"physode.odeint(func, y0, t, method={method!r}, step_size=0.01); it never uses "
                "the output grid as its step"
            )
        step_size = positive_finite("step_size", step_size)
        if first_step is not None:
            raise InvalidArgumentError(
                f"first_step={first_step!r} is for adaptive methods "
                f"({', '.join(ADAPTIVE_METHODS)}); method={method!r} takes every step of "
                "step_size: leave it out"
            )
        if max_step is not None:
            # The trainer's message, one for both: physode.train imports this module.
            from physode.train.config import max_step_of_fixed_step_method

            raise InvalidArgumentError(max_step_of_fixed_step_method(method, max_step))
    elif step_size is not None:
        raise InvalidArgumentError(
            f"step_size is for fixed-step methods ({', '.join(FIXED_METHODS)}); method={method!r} "
            "chooses its own steps (use first_step to set the initial one)"
        )
    if first_step is not None:
        first_step = positive_finite("first_step", first_step)
    if max_step is not None:
        max_step = _max_step(max_step, first_step)
    if not is_int(max_steps, least=1):
        raise InvalidArgumentError(f"max_steps must be a positive int, got {max_steps!r}")
    max_steps = int(max_steps)
    return rtol, atol, step_size, first_step, max_steps, max_step


def _max_step(value: object, first_step: float | None) -> float:
    """``max_step`` as a positive finite float, no shorter than ``first_step`` if one is given
    (the first step would break the cap); else :class:`InvalidArgumentError`."""
    max_step = positive_finite("max_step", value)
    if first_step is not None and first_step > max_step:
        raise InvalidArgumentError(
            f"first_step={first_step!r} is longer than max_step={max_step!r}, which caps every "
            f"step; pass a first_step of at most max_step, e.g. first_step={max_step!r}, or "
            "leave it out to have it chosen (and capped) automatically"
        )
    return max_step


def check_initial_state(y0: Tensor) -> Tensor:
    """Refuse an empty or non-finite ``y0`` (its type and dtype are :func:`_check_state`'s);
    return it, or an ordinary copy of it where it was made under ``torch.inference_mode()``."""
    if y0.numel() == 0:
        raise InvalidArgumentError(
            f"y0 is empty (shape {tuple(y0.shape)}); give at least one state to solve for"
        )
    if not bool(torch.isfinite(y0).all()):
        raise InvalidArgumentError("y0 contains NaN or inf; every initial state must be finite")
    if y0.is_inference() and not torch.is_inference_mode_enabled():
        # A state made under torch.inference_mode() (the outputs of an earlier solve there):
        # autograd can neither save it for backward nor start a graph from it, which ACA, the
        # gradient with respect to t and an event time's gradient do, so a differentiated solve
        # from it failed. A copy is ordinary.
        return y0.clone()
    return y0


def checked_split(stepper, func: Callable, method: str, t0: float, y0: Tensor, stats: Stats):
    """``stepper`` itself, or for a symplectic method the stepper after checking that ``y0``'s
    last dimension is ``[q, v]`` and probing the split ``func`` declares (a wrong declaration
    would go unnoticed by the method); the probe's evaluations are added to ``stats``."""
    if method not in SYMPLECTIC_METHODS:
        return stepper
    if y0.ndim == 0 or y0.shape[-1] != 2 * stepper.n:
        raise InvalidArgumentError(
            f"method={method!r} splits the last dimension of the state into [q, v] of "
            f"func.n_coordinates={stepper.n} components each, so it must have {2 * stepper.n}; "
            f"y0 has shape {tuple(y0.shape)}"
        )
    probe_nfe, stepper = stepper.checked(func, time_maker(y0)(t0), y0.detach(), method)
    stats.nfe += probe_nfe
    return stepper


def _check_tuple_settings(
    parts: Parts, method: str, step_control: str, rtol: object, atol: object
) -> None:
    """Refuse the settings that a tuple state does not go with, saying what to do instead."""
    for name, value in (("rtol", rtol), ("atol", atol)):
        if isinstance(value, tuple | list):
            raise InvalidArgumentError(
                f"{name} must be one number for a tuple state, got {value!r}: the error norm is "
                "one RMS over every part's components, each scaled by atol + rtol * |y| (not "
                "torchdiffeq's tolerance per part); rescale a part whose units differ"
            )
    if step_control == "per-sample":
        raise InvalidArgumentError(
            "step_control='per-sample' steps each row of a tensor y0 on its own, and the parts of "
            "a tuple state share no rows; use step_control='shared', or stack the parts into one "
            "tensor of rows, e.g. y0 = torch.cat([z, logp], dim=-1)"
        )
    if method in SYMPLECTIC_METHODS and (len(parts) != 2 or parts.shapes[0] != parts.shapes[1]):
        shapes = ", ".join(str(tuple(s)) for s in parts.shapes)
        raise InvalidArgumentError(
            f"method={method!r} reads a tuple state as (q, v): two parts of one shape, got "
            f"{len(parts)} of shapes {shapes}; pass y0=(q, v), or use an adaptive method, e.g. "
            "method='dop853'"
        )


def _solve(
    problem, mode: GradientMode, t_tensor: Tensor, step_control: str
) -> tuple[Solution, int]:
    """The solution, and how many outputs the solve reached: per sample all of them (a row
    that failed has NaN at the outputs it did not reach), else those the loop returned."""
    if step_control == "per-sample":
        from physode.solvers.per_sample import solve_per_sample

        return solve_per_sample(problem, mode, t_tensor), len(problem.times)

    ys, result = mode.solve(problem)
    return Solution(
        t=t_tensor,
        ys=ys,
        status=result.status,
        stats=problem.stats,
        message=result.message,
        t_final=result.t,
        h_final=result.h,
    ), len(result.ys)


def _raise(solution: Solution):
    raise SolverError(
        solution.message,
        status=solution.status,
        t=solution.t_final,
        step_size=solution.h_final,
        solution=solution,
    )


@overload
def odeint(
    func: Callable,
    y0: Tensor,
    t: Tensor | np.ndarray | Sequence[float],
    **options: Unpack[SolveOptions],
) -> Tensor: ...


@overload
def odeint(
    func: Callable,
    y0: tuple[Tensor, ...] | list[Tensor],
    t: Tensor | np.ndarray | Sequence[float],
    **options: Unpack[SolveOptions],
) -> tuple[Tensor, ...]: ...


def odeint(
    func: Callable,
    y0: Tensor | Sequence[Tensor],
    t: Tensor | np.ndarray | Sequence[float],
    **kwargs: Any,
) -> Tensor | tuple[Tensor, ...]:
    """Solve ``dy/dt = func(t, y)`` and return ``ys`` of shape ``(len(t), *y0.shape)``.

    Same arguments as :func:`solve`, which also returns the status and the work counters. For
    ``y0`` a tuple (or list) of tensors, ``ys`` is a tuple: part ``i`` of shape
    ``(len(t), *y0[i].shape)``.
    torchdiffeq's keywords (``options``, ``adjoint_params``, ``adjoint_rtol``...) are refused
    with physode's spelling of each.

    Examples
    --------
    >>> import torch, physode
    >>> ys = physode.odeint(lambda t, y: -y, torch.tensor([1.0], dtype=torch.float64),
    ...                     torch.tensor([0.0, 1.0]), method="dop853", rtol=1e-10, atol=1e-12)
    >>> abs(ys[-1].item() - 0.36787944117144233) < 1e-9
    True
    """
    return solve(func, y0, t, **kwargs).ys


def refuse_keywords(
    names: Iterable[str], function: str = "solve", spellings: Mapping[str, str] | None = None
) -> None:
    """Refuse keywords that ``function`` does not take: torchdiffeq's (the keys of
    ``spellings``, by default :func:`solve`'s table) with physode's spelling of each, any other
    as Python refuses an unexpected keyword."""
    names = list(names)
    spellings = _TORCHDIFFEQ_KEYWORDS if spellings is None else spellings
    foreign = [name for name in names if name in spellings]
    if foreign:
        hints = "; ".join(f"{name}: {spellings[name]}" for name in foreign)
        raise InvalidArgumentError(
            f"torchdiffeq's keywords are spelled differently in {function}: {hints}"
        )
    raise TypeError(f"{function}() got an unexpected keyword argument {names[0]!r}")


# What a user coming from torchdiffeq passes, and physode's way to say it.
_TORCHDIFFEQ_KEYWORDS = {
    "options": "pass its entries as keywords (step_size=..., first_step=..., max_steps=...)",
    "adjoint_params": "params=[...] (for every gradient mode)",
    "adjoint_rtol": "gradient=physode.OptDisc(rtol=...)",
    "adjoint_atol": "gradient=physode.OptDisc(atol=...)",
    "adjoint_method": "gradient=physode.OptDisc(method=...)",
    "adjoint_options": "gradient=physode.OptDisc(seminorm=True) leaves the parameter gradients "
    "out of the backward error control",
    "event_fn": "terminal events have their own function: physode.odeint_event(func, y0, t0, "
    "event_fn, t_max=...) returns the event time and the state there, both differentiable",
}
