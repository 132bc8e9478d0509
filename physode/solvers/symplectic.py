"""Symplectic integrators (velocity Verlet, Yoshida's 4th order) for separable Hamiltonians."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from physode._checks import is_int, is_switch
from physode._errors import InvalidArgumentError
from physode.solvers._autograd import graph_leaves
from physode.solvers.loop import check_derivative
from physode.solvers.rk import StepResult

__all__ = ["Leapfrog", "Yoshida4", "check_separable", "check_split", "declares"]


def check_separable(func: object, method: str) -> int:
    """Return ``func.n_coordinates`` or raise a clear error if ``func`` does not declare a split."""
    if not declares(func, "separable", method):
        raise InvalidArgumentError(
            f"method={method!r} needs a separable system: state [q, v] with dq/dt depending "
            f"only on v and dv/dt only on q and t. {_why_not_separable(func)} Choose an "
            "adaptive method, e.g. method='dop853'."
        )
    n = getattr(func, "n_coordinates", None)
    if not is_int(n, least=1):  # a bool is no count of coordinates
        raise InvalidArgumentError(
            f"method={method!r}: func.n_coordinates must be a positive int, got {n!r}"
        )
    return int(n)


def declares(func: object, name: str, method: str) -> bool:
    """Whether ``func`` declares the switch ``name`` (``separable``, ``drift_is_velocity``):
    ``True`` (Python's or NumPy's) does; ``False``, ``None`` or no attribute does not. Any other
    value (``"yes"``, ``1``) is refused naming it: it was taken for no declaration, silently."""
    value = getattr(func, name, False)
    if value is None or is_switch(value):
        return bool(value)
    raise InvalidArgumentError(
        f"method={method!r}: func.{name} must be True or False, got {value!r}; set "
        f"func.{name} = True where it holds"
    )


def _why_not_separable(func: object) -> str:
    """Why ``func`` has no split a symplectic method can use, in the words of its system."""
    system = getattr(func, "system", None)
    form = getattr(system, "form", None)
    if system is None or form is None:
        from physode.models.hamiltonian import HamiltonianNN  # here only: models use solvers

        if isinstance(func, HamiltonianNN):
            return (
                f"This HamiltonianNN was built with separable=False: one network learns "
                "H(q, p), so dq/dt = dH/dp depends on q too. Build it with separable=True "
                f"(HamiltonianNN({func.n_coordinates}, ..., separable=True) learns "
                "H = T(p) + V(q)) to use this method."
            )
        return (
            f"func ({type(func).__name__}) does not declare the split: a func of your own whose "
            "state splits so can set func.separable = True and func.n_coordinates = n."
        )
    name = getattr(system, "name", "?")
    if getattr(system, "n_coordinates", None) is None:
        return f"System {name!r} is first order: its state has no [q, v] split."
    if getattr(func, "parameters_in_state", False):
        return f"The vector field of {name!r} carries its parameters in the state."
    if form == "hamiltonian":
        return (
            f"System {name!r} is not separable: its Hamiltonian is not T(p) + V(q, t), so "
            "dq/dt = dH/dp depends on q or on t (a mass that depends on q or on t, a coupling "
            "of q and p), or a force depends on the momenta (a force or potential that depends "
            "on t alone is separable)."
        )
    if form == "lagrangian":
        return (
            f"System {name!r} is not separable: its mass matrix depends on the coordinates or "
            "on t, or a force depends on the velocities (friction, magnetic forces)."
        )
    return (
        f"System {name!r} is not separable: the equations of its first n_coordinates states "
        "depend on those states or on t, or those of the others on the others."
    )


def check_split(
    func: Callable[[Tensor, Tensor], Tensor], t: Tensor, y0: Tensor, n: int, method: str
) -> tuple[int, bool]:
    """Probe the split that ``func`` declares; return the evaluations it made (four, or five) and
    whether ``dq/dt`` is ``v`` itself.

    ``func`` is evaluated at ``y0``, with ``q`` shifted, with ``v`` shifted and with both. Where
    the split holds, ``dq/dt`` does not see the shift of ``q`` (at either ``v``) nor ``dv/dt``
    that of ``v`` (at either ``q``): the compared values are then bit for bit the same, so no
    tolerance is needed. Both halves are probed at both values of the other: a ``dq/dt`` of
    ``v * g(q)`` does not change with ``q`` where ``v = 0``, which is where a system released
    from rest starts. Entries that are not finite are not compared. A ``func`` declaring
    ``separable = True`` whose split fails is refused: the symplectic method would integrate
    another system.

    A ``func`` that also declares ``drift_is_velocity = True`` (``dq/dt`` is ``v`` itself, as
    for every Lagrangian system's vector field) is held to it: ``dq/dt`` must equal ``v`` bit for
    bit at the four states, at a fifth, ``y0`` at the time ``t + 1 + |t|``, and must not change
    with any tensor requiring grad that ``func`` reaches (a parameter that happens to equal one,
    as ``K2`` in ``dq/dt = K2 v``, would lose its gradient); else it is refused. Its drifts then
    need no evaluation: they move ``q`` by ``v`` as ``func`` would have. Probes cannot prove
    ``dq/dt = v`` (``clamp(v, -1, 1)`` from rest matches at every probe), so it is never assumed
    from them alone.
    """
    q, v = y0[..., :n], y0[..., n:]
    q_shifted, v_shifted = q + 0.01 * (1.0 + q.abs()), v + 0.01 * (1.0 + v.abs())
    # With the caller's grad mode, so that a graph shows what dq/dt depends on besides v.
    graphed = func(t, torch.cat([q, v_shifted], dim=-1))
    check_derivative(graphed, y0)
    f_v = graphed.detach()
    with torch.no_grad():
        f = func(t, y0)
        f_q = func(t, torch.cat([q_shifted, v], dim=-1))
        f_qv = func(t, torch.cat([q_shifted, v_shifted], dim=-1))
    # A tuple state (q, v) is its own declaration of the split (physode.solvers._tuples).
    declared, owner, remedy = getattr(func, "declared_split", None), "func's", ""
    if declared is None:
        declared = f"func declares separable = True with n_coordinates={n}"
        owner, remedy = "its", ", or correct func.separable"
    # (half, its slice, pairs of evaluations that differ only in that half)
    probes = (
        ("q", slice(None, n), ((f, f_q), (f_v, f_qv))),
        ("v", slice(n, None), ((f, f_v), (f_q, f_qv))),
    )
    for half, part, pairs in probes:
        for before, after in pairs:
            a, b = before[..., part], after[..., part]
            if bool(((a != b) & torch.isfinite(a) & torch.isfinite(b)).any()):
                raise InvalidArgumentError(
                    f"method={method!r}: {declared}, but {owner} d{half}/dt changed when only "
                    f"{half} did (at t={t.item():.6g}, from y0 with {half} shifted by 0.01 * "
                    f"(1 + |{half}|)): the split does not hold, so a symplectic method would "
                    "integrate another system. Use an adaptive method, e.g. method='dop853'"
                    f"{remedy}. A random func (dropout in training mode) fails this check too."
                )
    if not declares(func, "drift_is_velocity", method):
        return 4, False
    with torch.no_grad():
        later = func(t + 1.0 + t.abs(), y0)
    rates = ((f, v), (f_q, v), (f_v, v_shifted), (f_qv, v_shifted), (later, v))
    if not all(torch.equal(g[..., :n], w) for g, w in rates) or _changes_with_parameters(
        graphed[..., :n]
    ):
        raise InvalidArgumentError(
            f"method={method!r}: func declares drift_is_velocity = True, but its dq/dt is not v "
            f"itself (probed at t={t.item():.6g} and {(t + 1.0 + t.abs()).item():.6g}, with q and "
            "v shifted, and for the tensors requiring grad that it uses); remove "
            "func.drift_is_velocity, and each drift is evaluated"
        )
    return 5, True


def _changes_with_parameters(rate: Tensor) -> bool:
    """Whether ``rate``, computed from a state that does not require grad, has a nonzero
    vector-Jacobian product for a tensor requiring grad.

    The vector is drawn at random (from a generator of its own, so the caller's random state is
    untouched): a fixed one can be orthogonal to every change of ``rate``, as ``rate`` itself is
    to that of ``v + theta J v`` (``J`` a quarter turn) with ``theta``."""
    if not rate.requires_grad:
        return False
    leaves = graph_leaves(rate)
    if not leaves:
        return False
    generator = torch.Generator().manual_seed(0)
    vector = torch.randn(rate.shape, generator=generator, dtype=rate.dtype).to(rate.device)
    grads = torch.autograd.grad(rate, leaves, vector, allow_unused=True)
    return any(g is not None and bool((g != 0).any()) for g in grads)


class Leapfrog:
    """Velocity Verlet (kick-drift-kick), order 2: one or two evaluations of ``func`` per step.

    The state is ``[q, v]`` along its last dimension; the derivative's second half at the end of
    a step depends only on the new ``q``, so it is reused as the next step's first kick (first
    same as last). The drift between the kicks needs ``dq/dt`` at the half-step ``v``: one more
    evaluation of ``func``, unless ``func`` declares ``drift_is_velocity = True`` (``dq/dt`` is
    ``v`` itself, which :func:`check_split` holds it to), where the drift moves ``q`` by that
    ``v`` directly.
    """

    name = "leapfrog"
    order = 2
    adaptive = False
    has_dense = False
    _substeps: tuple[float, ...] = (1.0,)

    def __init__(self, n_coordinates: int, drift_is_velocity: bool = False):
        self.n = n_coordinates
        self.drift_is_velocity = drift_is_velocity
        # A kick per substep, and a drift unless it is v itself.
        self.nfe_per_step = len(self._substeps) * (1 if drift_is_velocity else 2)
        self.nfe_per_replay = self.nfe_per_step

    def checked(
        self, func: Callable[[Tensor, Tensor], Tensor], t: Tensor, y0: Tensor, method: str
    ) -> tuple[int, Leapfrog]:
        """Probe ``func``'s split (:func:`check_split`); return the evaluations made and the
        stepper to solve with, one that drifts by ``v`` itself where ``dq/dt`` is ``v``."""
        nfe, drift_is_velocity = check_split(func, t, y0, self.n, method)
        return nfe, type(self)(self.n, drift_is_velocity)

    def step(
        self,
        func: Callable[[Tensor, Tensor], Tensor],
        t: float | Tensor,
        y: Tensor,
        h: float | Tensor,
        f0: Tensor,
        time: Callable[[float], Tensor],
        *,
        replay: bool = False,
    ) -> StepResult:
        """One step of size ``h``; ``f0`` only needs a valid second half (the kick).

        ``t`` and ``h`` are Python floats (one step for the whole state), or tensors
        broadcastable against ``y``, one time and step per row (a per-row event's location,
        :func:`physode.odeint_event`); ``func`` then gets the per-row times as they are.
        """
        # Chosen once per step: the float path keeps its fused alpha= operations.
        axpy, at = (_axpy_rows, _as_is) if isinstance(h, Tensor) else (_axpy, time)
        n = self.n
        q, v, f1 = y[..., :n], y[..., n:], f0
        for w in self._substeps:  # velocity Verlet steps of w * h
            hw = w * h
            v_half = axpy(v, 0.5 * hw, f1[..., n:])
            if self.drift_is_velocity:
                drift = v_half
            else:
                drift = func(at(t + 0.5 * hw), torch.cat([q, v_half], dim=-1))[..., :n]
            q = axpy(q, hw, drift)
            f1 = func(at(t + hw), torch.cat([q, v_half], dim=-1))
            v = axpy(v_half, 0.5 * hw, f1[..., n:])
            t = t + hw
        return StepResult(torch.cat([q, v], dim=-1), f1, None, None, [])


def _axpy(y: Tensor, a: float, x: Tensor) -> Tensor:
    """``y + a * x`` for a Python-float ``a``, in one fused operation."""
    return torch.add(y, x, alpha=a)


def _axpy_rows(y: Tensor, a: Tensor, x: Tensor) -> Tensor:
    """``y + a * x`` for a tensor ``a`` of one value per row."""
    return torch.addcmul(y, a, x)


def _as_is(t: Tensor) -> Tensor:
    """Per-row times, already tensors, go to ``func`` unchanged."""
    return t


class Yoshida4(Leapfrog):
    """Yoshida's (1990) 4th-order composition of three velocity-Verlet steps: three evaluations
    per step where ``drift_is_velocity``, else six."""

    name = "yoshida4"
    order = 4
    _w1 = 1.0 / (2.0 - 2.0 ** (1.0 / 3.0))
    _substeps = (_w1, 1.0 - 2.0 * _w1, _w1)
