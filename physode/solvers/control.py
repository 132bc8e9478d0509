"""Error norms, the PI step-size controller and the automatic first step."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from physode._errors import PhysodeWarning
from physode.solvers._arrays import Array, finfo, namespace

__all__ = [
    "SHRINK",
    "PIController",
    "attainable_rtol",
    "error_ratio",
    "initial_step",
    "tolerances_over_state",
    "warn_unattainable",
]


def attainable_rtol(rtol: float, like: Array) -> float:
    """``rtol``, raised to the machine epsilon of ``like``'s dtype where it asks for less.

    The error estimate of a step carries rounding noise of about ``eps * h * |dy/dt|`` (its
    stages are rounded to the dtype), which does not shrink with the tolerance. Below
    ``rtol = eps`` the controller can only meet the tolerance by shrinking the step until that
    noise fits: the steps then shrink in proportion to ``rtol`` (float32 at ``rtol=1e-10``: 200
    times the steps of ``rtol=1e-7``, or ``max_steps`` and step size underflow) and the result
    is no more accurate, since each step also rounds the state to the dtype.

    Examples
    --------
    >>> import torch
    >>> attainable_rtol(1e-10, torch.zeros(1, dtype=torch.float32)) == 2.0**-23
    True
    >>> attainable_rtol(1e-10, torch.zeros(1, dtype=torch.float64))
    1e-10
    """
    return max(rtol, float(finfo(like).eps))


def tolerances_over_state(
    rtol: float, atol: float, n_state: int, n_total: int
) -> tuple[float, float]:
    """``rtol`` and ``atol`` for a solve of ``[y, p]`` (``n_total`` components) whose last
    ``n_total - n_state`` components are carried along with zero derivative (per-trajectory
    parameters): the error norm is an RMS over all components, and the carried ones never err,
    so scaling both tolerances by ``sqrt(n_state / n_total)`` keeps it the RMS over ``y`` alone.

    Examples
    --------
    >>> tolerances_over_state(1e-6, 1e-8, 2, 8)
    (5e-07, 5e-09)
    """
    shrink = math.sqrt(n_state / n_total)
    return rtol * shrink, atol * shrink


def warn_unattainable(
    rtol: float, like: Tensor, solve: str, stacklevel: int, prefix: str = ""
) -> None:
    """Warn where :func:`attainable_rtol` raises ``rtol``; ``solve`` names the solve in the
    message, after ``prefix``; ``stacklevel`` counts from the caller as for
    :func:`warnings.warn`."""
    floor = attainable_rtol(rtol, like)
    if floor != rtol:
        # float64 is the widest dtype a solve takes: only a narrower one gains from a change.
        advice = (
            "for tighter tolerances use float64"
            if floor > torch.finfo(torch.float64).eps
            else "no float64 solve can be tighter"
        )
        warnings.warn(
            f"{prefix}rtol={rtol:g} is below the resolution of {like.dtype} (eps={floor:.3g}): "
            f"{solve} cannot be that accurate, and its steps would only shrink until max_steps ran "
            f"out. Solving with rtol={floor:.3g}; {advice}.",
            PhysodeWarning,
            stacklevel=stacklevel + 1,
        )


def _scale(y0: Tensor, y1: Tensor, rtol: float, atol: float) -> Tensor:
    return torch.maximum(y0.abs(), y1.abs()).mul_(rtol).add_(atol)


def _group_slices(n: int, groups: Sequence[int] | None) -> list[slice]:
    """The non-empty slices of a flattened state of ``n`` elements that ``groups`` delimits."""
    if groups is None:
        return [slice(0, n)]
    starts = [0, *groups[:-1]]
    return [slice(a, b) for a, b in zip(starts, groups) if b > a]


def error_ratio(
    error: Tensor,
    error_low: Tensor | None,
    y0: Tensor,
    y1: Tensor,
    rtol: float,
    atol: float,
    groups: Sequence[int] | None = None,
) -> Tensor:
    """Scaled RMS error of a step; the step is accepted when this is at most one.

    The scale is ``atol + rtol * max(|y0|, |y1|)`` element-wise. ``groups`` splits the flattened
    state into consecutive groups, given by the offsets where each ends: the ratio is then the
    largest of the groups' RMS ratios, so a small group is not drowned out by a large one, and
    elements past the last offset are left out (a seminorm). With ``error_low`` the two
    estimates are combined as in Hairer's DOP853, so the ratio scales with the method's full order.
    Returns a 0-dim tensor.

    Examples
    --------
    >>> import torch
    >>> e, y = torch.tensor([1e-6, 0.0, 0.0, 0.0]), torch.zeros(4)
    >>> round(error_ratio(e, None, y, y, rtol=0.0, atol=1e-6).item(), 3)   # RMS of (1, 0, 0, 0)
    0.5
    >>> error_ratio(e, None, y, y, rtol=0.0, atol=1e-6, groups=(1, 4)).item()   # max(1, 0)
    1.0
    """
    scale = _scale(y0, y1, rtol, atol)
    scaled_low = None if error_low is None else error_low / scale
    if groups is None:
        return _rms_ratio(error / scale, scaled_low)
    scaled = (error / scale).reshape(-1)
    scaled_low = None if scaled_low is None else scaled_low.reshape(-1)
    ratios = [
        _rms_ratio(scaled[part], None if scaled_low is None else scaled_low[part])
        for part in _group_slices(scaled.numel(), groups)
    ]
    return torch.stack(ratios).amax()


def _rms_ratio(scaled: Tensor, scaled_low: Tensor | None) -> Tensor:
    """The RMS of a scaled error, or Hairer's combination of two for DOP853."""
    n = scaled.numel()
    if scaled_low is None:
        return torch.linalg.vector_norm(scaled) / math.sqrt(n)
    e5 = torch.linalg.vector_norm(scaled).square()
    e3 = torch.linalg.vector_norm(scaled_low).square()
    return combined_ratio(e5, e3, n)


def combined_ratio(e5: Array, e3: Array, n: int) -> Array:
    """Hairer's DOP853 error ratio from the sums of squares ``e5`` and ``e3`` of its two scaled
    error estimates over ``n`` elements (per row where they are arrays of rows)."""
    xp = namespace(e5)
    denominator = xp.clip(e5 + 0.01 * e3, finfo(e5).tiny, None)
    return e5 / xp.sqrt(denominator * n)


@dataclass(frozen=True)
class PIController:
    """Proportional-integral step-size controller (Gustafsson; Hairer & Wanner II, IV.2).

    The next step is ``h * safety * ratio**(-alpha) * previous_ratio**beta`` with
    ``beta = 0.2 / q`` and ``alpha = 1 / q - 0.75 beta``, ``q`` being the error estimate's
    order plus one (for dopri5, Hairer's DOPRI5 defaults beta = 0.04, alpha = 0.17), the factor
    clipped to ``[min_factor, max_factor]``; after a rejection the step never grows.
    """

    q: int
    safety: float = 0.9
    min_factor: float = 0.2
    max_factor: float = 10.0

    @property
    def beta(self) -> float:
        return 0.2 / self.q

    @property
    def alpha(self) -> float:
        return 1.0 / self.q - 0.75 * self.beta

    def factor(self, ratio: float, previous_ratio: float, accepted: bool) -> float:
        """Multiplier for the step size after a step with the given error ratio."""
        if not math.isfinite(ratio):
            return self.min_factor
        if ratio == 0.0:
            return self.max_factor if accepted else 1.0
        beta = self.beta if accepted else 0.0
        fac = self.safety * ratio ** (-self.alpha) * max(previous_ratio, 1e-4) ** beta
        upper = self.max_factor if accepted else 1.0
        return min(upper, max(self.min_factor, fac))

    def factor_per_row(self, ratio: Array, previous: Array, accepted: Array) -> Array:
        """:meth:`factor` for one error ratio per row (per-sample step control).

        ``previous`` holds each row's last accepted (finite) ratio. The result is rounded to
        multiples of 1e-6: pow is computed by different kernels for a lone row and a vectorised
        batch, which differ in the last bit, and the rounding makes each row's step sizes
        independent of its batch. Written in few operations: every one costs a fixed overhead
        per solver iteration.
        """
        xp = namespace(ratio)  # torch tensors or NumPy arrays alike
        # An infinite ratio gives 0 and a NaN stays NaN until the end: both mean min_factor.
        fac = xp.clip(ratio, 1e-10, None) ** -self.alpha * self.safety
        memory = xp.clip(previous, 1e-4, None) ** self.beta
        fac = xp.where(
            accepted, xp.clip(fac * memory, None, self.max_factor), xp.clip(fac, None, 1.0)
        )
        fac = xp.nan_to_num(xp.clip(fac, self.min_factor, None), nan=self.min_factor)
        return xp.round(fac, decimals=6)


def round_to_grid(x: Array) -> Array:
    """``x`` with its mantissa rounded to 24 bits, as :meth:`PIController.factor_per_row` rounds
    its factors, for step sizes of any magnitude."""
    xp = namespace(x)
    mantissa, exponent = xp.frexp(x)
    return xp.ldexp(xp.round(mantissa * _GRID) / _GRID, exponent)


_GRID = 2.0**24


#: A power of two that brings a scaled derivative whose squares overflow (float32 above 1.8e19:
#: ``|dy/dt| > 1.8e11`` where ``y`` is 0 and ``atol = 1e-8``) back into range, exactly.
SHRINK = 2.0**-100


def _rms(x: Tensor) -> float:
    """The RMS of ``x`` as a float; finite wherever ``x`` is, also where its squares overflow.

    Where they do, ``x`` is scaled by the power of two that brings its largest element to about
    one (exactly, as :data:`SHRINK` would, but for any size: a float64 ratio of 1e200, an
    O(1) derivative over ``atol=1e-200`` where a component is 0, is past what ``SHRINK`` can
    bring back).

    >>> x = torch.tensor([0.0, 4e19])   # float32: the square of 4e19 is inf
    >>> torch.linalg.vector_norm(x).item(), f"{_rms(x):.4g}"
    (inf, '2.828e+19')
    >>> f"{_rms(torch.tensor([0.0, 1e200], dtype=torch.float64)):.4g}"
    '7.071e+199'
    """
    n = math.sqrt(x.numel())
    value = (torch.linalg.vector_norm(x) / n).item()
    if math.isinf(value):
        top = x.abs().max().item()
        if math.isfinite(top):
            exponent = math.frexp(top)[1]
            shrunk = torch.ldexp(x, torch.tensor(-exponent, device=x.device))
            value = math.ldexp((torch.linalg.vector_norm(shrunk) / n).item(), exponent)
    return value


def initial_step(
    func: Callable[[Tensor, Tensor], Tensor],
    t0: float,
    y0: Tensor,
    f0: Tensor,
    direction: float,
    order: int,
    rtol: float,
    atol: float,
    time: Callable[[float], Tensor],
    groups: Sequence[int] | None = None,
) -> float:
    """Starting step size by Hairer, Norsett & Wanner I (II.4); costs one evaluation of ``func``.

    NaN when ``f0`` holds NaN or inf (then ``func`` is not evaluated). A finite ``f0`` always
    gives a positive step, also where its scaled norm overflows the dtype (see below).

    ``groups`` delimits groups of the flattened state as for :func:`error_ratio`.
    """
    parts = _group_slices(y0.numel(), groups)

    def rms(x: Tensor, scale: Tensor) -> float:
        """The norm of :func:`error_ratio`: the largest of the groups' RMS norms."""
        x = (x / scale).reshape(-1)
        return max(_rms(x[p]) for p in parts)

    scale = y0.abs().mul(rtol).add_(atol)
    d0, d1 = rms(y0, scale), rms(f0, scale)
    if math.isnan(d1) or (math.isinf(d1) and not bool(torch.isfinite(f0).all())):
        # f0 holds NaN or inf: no step size follows from it, and the loop stops as non-finite.
        return math.nan
    # A finite f0 whose norm is infinite overflowed the dtype in f0 / scale: a component of y0
    # is 0 with an atol below |dy/dt| by more than the dtype's range (atol=1e-300, or 5e-324,
    # for pure relative control). The step is then as short as the largest finite norm
    # allows and the controller grows it: the error scale takes max(|y0|, |y1|), so once the
    # component has left 0 it is measured relative to itself.
    largest = float(torch.finfo(y0.dtype).max)
    d0, d1 = min(d0, largest), min(d1, largest)
    h0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
    y1 = torch.add(y0, f0, alpha=direction * h0)
    f1 = func(time(t0 + direction * h0), y1)
    d2 = rms(f1 - f0, scale) / h0
    if not math.isfinite(d2):
        return h0
    if max(d1, d2) <= 1e-15:
        h1 = max(1e-6, h0 * 1e-3)
    else:
        h1 = (0.01 / max(d1, d2)) ** (1.0 / (order + 1))
    return min(100 * h0, h1)
