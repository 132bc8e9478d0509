"""``SystemVectorField``: a system's right-hand side as an ``nn.Module`` with named parameters."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

import sympy
import torch
from torch import nn

from physode._checks import converts_to_finite_real
from physode._errors import InvalidArgumentError, PhysodeWarning

if TYPE_CHECKING:
    from physode.symbolic._system import System


class SystemVectorField(nn.Module):
    """``f(t, y) = system.rhs(t, y, p)`` with ``p`` held as parameters and buffers.

    Learnable parameters are ``nn.Parameter``s and the others buffers, each registered under the
    system's parameter name (``f.m1``, ``dict(f.named_parameters())["m1"]``), stored in float64.
    The parameter vector is cast to the input's dtype and device on each call, so float32 and
    float64 inputs both work and gradients flow back to the float64 values.

    Attributes
    ----------
    system : physode.System
    learnable : tuple of str
    separable : bool
        True when ``d(q)/dt`` depends only on the second half of the state and ``d(v or p)/dt``
        only on ``q`` and ``t``: what ``method="leapfrog"`` and ``"yoshida4"`` need.
    n_coordinates : int or None
        ``n`` for a state ``[q (n), v or p (n)]``; None for first-order systems.
    drift_is_velocity : bool
        True when ``dq/dt`` is the second half of the state itself, symbol for symbol (every
        Lagrangian system; a Hamiltonian one where ``dq_i/dt = p_i``): the symplectic methods
        then move ``q`` by it without evaluating the field.
    autonomous : bool
        Whether the equations ignore ``t`` (``not system.time_dependent``): what lets
        ``physode.train.Trainer`` solve windows that start at different times together.

    Examples
    --------
    >>> import physode, torch
    >>> sys = physode.systems.load("harmonic_oscillator")
    >>> f = sys.vector_field(learnable=["k"])
    >>> f(torch.tensor(0.0), torch.tensor([[1.0, 0.0]]))
    tensor([[ 0., -1.]], grad_fn=<StackBackward0>)
    >>> f.separable, f.n_coordinates, f.drift_is_velocity  # dq/dt = p/m
    (True, 1, False)
    """

    def __init__(
        self,
        system: System,
        learnable: Sequence[str] = (),
        values: Mapping[str, float] | None = None,
        parameters_in_state: bool = False,
    ):
        super().__init__()
        names = list(system.parameters)
        if isinstance(learnable, str):
            learnable = [learnable]
        if not isinstance(learnable, Iterable):
            raise InvalidArgumentError(
                f"learnable must be a list of parameter names, got {learnable!r}; valid names: "
                f"{names}"
            )
        # Read once (a generator is consumed by the first pass), each name once, in order; a
        # SymPy symbol stands for its name, as in the system's constructors.
        learnable = list(dict.fromkeys(_name(n) for n in learnable))
        if values is not None and not isinstance(values, Mapping):
            raise InvalidArgumentError(
                f"values must be a mapping {{parameter name: value}}, got {values!r}; valid "
                f"names: {names}"
            )
        unknown = [n for n in learnable if n not in names]
        if unknown:
            raise InvalidArgumentError(
                f"learnable={list(learnable)!r} names {unknown}, not parameters of "
                f"{system.name}; valid names: {names}"
            )
        values = {_name(n): v for n, v in (values or {}).items()}
        bad = [n for n in values if n not in names]
        if bad:
            raise InvalidArgumentError(
                f"values names {bad}, not parameters of {system.name}; valid names: {names}"
            )
        not_numbers = {n: v for n, v in values.items() if not converts_to_finite_real(v)}
        if not_numbers:
            raise InvalidArgumentError(
                f"values {not_numbers} are not finite real numbers; give each parameter of "
                f"{system.name} a float"
            )
        # Refused when the system is defined; a system unpickled from an older cache is not.
        clashes = [n for n in names if n in taken_names()]
        if clashes:
            raise InvalidArgumentError(
                f"parameter name(s) {clashes} clash with nn.Module attributes; rename them in "
                f"the definition of {system.name}"
            )
        warn_if_not_in_equations(system, learnable)
        self.system = system
        self.learnable = tuple(learnable)
        self.parameters_in_state = bool(parameters_in_state)
        # Appended parameters break the [q, v] layout the symplectic methods rely on.
        self.separable = bool(system.separable) and not self.parameters_in_state
        self.n_coordinates = None if self.parameters_in_state else system.n_coordinates
        self.drift_is_velocity = self.separable and _drift_is_velocity(system)
        self._names = names
        for name in names:
            initial = float(values.get(name, system.parameters[name]))
            value = torch.tensor(initial, dtype=torch.float64)
            if name in self.learnable:
                self.register_parameter(name, nn.Parameter(value))
            else:
                self.register_buffer(name, value)

    @property
    def autonomous(self) -> bool:
        """Whether ``f`` ignores ``t`` (the system's equations do not contain the time symbol)."""
        return not self.system.time_dependent

    def parameter_vector(self) -> torch.Tensor:
        """All parameter values stacked in the system's order, shape (n_params,)."""
        store = []
        for name in self._names:
            value = self._parameters.get(name)
            if value is None:
                value = self._buffers.get(name)
            # Neither: a parameter constrained with torch.nn.utils.parametrize, computed anew.
            store.append(getattr(self, name) if value is None else value)
        return torch.stack(store) if store else torch.zeros(0, dtype=torch.float64)

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.parameters_in_state:
            n = self.system.n_state
            if y.shape[-1:] != (n + self.system.n_params,):
                raise InvalidArgumentError(
                    f"y has shape {tuple(y.shape)}; with parameters_in_state the last dimension "
                    f"is n_state + n_params = {n + self.system.n_params} "
                    f"({self.system.state_names} + {list(self.system.parameters)})"
                )
            dy = self.system.rhs(t, y[..., :n], y[..., n:])
            return torch.cat((dy, torch.zeros_like(y[..., n:])), dim=-1)
        p = self.parameter_vector()
        if p.dtype != y.dtype or p.device != y.device:
            p = p.to(dtype=y.dtype, device=y.device)
        return self.system.rhs(t, y, p)

    def extra_repr(self) -> str:
        extra = ", parameters_in_state=True" if self.parameters_in_state else ""
        return f"system={self.system.name!r}, learnable={list(self.learnable)}{extra}"


def _name(key: object) -> object:
    """A parameter's name for ``key``: a SymPy symbol's name, anything else as it is."""
    return key.name if isinstance(key, sympy.Symbol) else key


# What SystemVectorField sets on itself beside the parameters, and what
# torch.nn.utils.parametrize adds to a module whose parameter it constrains.
_OWN_ATTRIBUTES = frozenset(
    {
        "system",
        "learnable",
        "separable",
        "n_coordinates",
        "drift_is_velocity",
        "parameters_in_state",
        "_names",
        "parametrizations",
    }
)


@functools.cache
def taken_names() -> frozenset[str]:
    """The names a system's parameter cannot have: :class:`SystemVectorField` holds each
    parameter as an attribute of its name, which must not be one of its own or of
    ``torch.nn.Module`` (``training``, ``forward``, ``to``, ...).

    Examples
    --------
    >>> {"training", "to", "parametrizations", "_names"} <= taken_names(), "k" in taken_names()
    (True, False)
    """
    return frozenset(dir(SystemVectorField)) | frozenset(vars(nn.Module())) | _OWN_ATTRIBUTES


def warn_if_not_in_equations(system: System, learnable: Iterable[str], how: str = "") -> None:
    """Give a ``physode.PhysodeWarning`` naming the parameters of ``learnable`` that the
    equations of motion of ``system`` do not contain: learning one changes nothing.

    ``how`` qualifies "learnable" in the message (``"per-trajectory"``). Read from
    :attr:`System.parameters_in_equations`, worked out once per system.

    Examples
    --------
    >>> import physode, warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     warn_if_not_in_equations(physode.systems.load("pendulum"), ["g", "m"])
    >>> print(caught[0].message)  # doctest: +NORMALIZE_WHITESPACE
    pendulum: the learnable parameter 'm' does not appear in its equations of motion, so
    learning it changes nothing (its gradient is zero); it may still appear in the invariants.
    The parameters the equations contain: ['g', 'l']
    """
    used = system.parameters_in_equations
    unused = [name for name in dict.fromkeys(learnable) if name not in used]
    if not unused:
        return
    from physode.symbolic._names import _outside_physode

    kind = f"{how} learnable" if how else "learnable"
    if len(unused) == 1:
        named = f"the {kind} parameter {unused[0]!r} does not appear"
        effect = "learning it changes nothing (its gradient is zero); it may still appear"
    else:
        named = f"the {kind} parameters {unused} do not appear"
        effect = "learning them changes nothing (their gradients are zero); they may still appear"
    warnings.warn(
        f"{system.name}: {named} in its equations of motion, so {effect} in the invariants. "
        f"The parameters the equations contain: {list(used)}",
        PhysodeWarning,
        stacklevel=_outside_physode(),
    )


def _drift_is_velocity(system: System) -> bool:
    """Whether ``dq/dt`` is the second half of ``system``'s state, symbol for symbol."""
    n = system.n_coordinates
    if not n:
        return False
    if system.form == "lagrangian":  # the state is [q, dq/dt]
        return True
    rates = list(system.equations.values())[:n]
    halves = system.state_names[n:]
    return all(r.is_Symbol and r.name == v for r, v in zip(rates, halves))
