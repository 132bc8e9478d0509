"""The physics model: a catalogue or user system's vector field with chosen parameters learnable."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from physode._checks import converts_to_finite_real
from physode._errors import InvalidArgumentError


def _resolve_system(system: Any) -> Any:
    """Accept a System, a catalogue name or a path to a specification file."""
    if isinstance(system, str | Path):
        import physode.systems

        return physode.systems.load(system)
    return system


class PhysicsModel(nn.Module):
    """A known physical law ``f(t, y)`` whose chosen parameters are trained.

    Wraps ``system.vector_field(learnable=...)``: the learnable parameters are ``nn.Parameter``\\ s
    named as in the system, the others stay fixed at the system's values.

    Parameters
    ----------
    system : physode.System, str or path
        The system, a catalogue name (``"three_body_aca"``) or a specification file.
    learnable : sequence of str
        Names of the parameters to train (``[]`` for none).
    init : mapping of str to float, optional
        Starting values for some learnable parameters (by default the system's own values).
    autonomous : bool, optional
        Whether the equations ignore ``t``; the trainer then lets windows that start at different
        times share one solve. By default read from the system's equations: a forced system such
        as ``"duffing"``, whose equations contain the time symbol, is not autonomous.
    stored_parameters : bool
        Take the parameters it does not learn from each trajectory's stored values where the
        data hold them (data simulated with ``params="sample"``): the trainer and
        :func:`physode.train.rollout_report` then evaluate each window and rollout with its own
        trajectory's values (see :attr:`trajectory_parameters`). ``False`` keeps the system's
        values for every trajectory.

    Raises
    ------
    physode.InvalidArgumentError
        If a name in ``learnable`` or ``init`` is not a parameter of the system, ``learnable``
        is a single string, or an ``init`` value is not a finite number.

    Examples
    --------
    >>> import physode
    >>> model = PhysicsModel("three_body_aca", learnable=["m1", "m2", "m3"],
    ...                      init={"m1": 1.0, "m2": 1.0, "m3": 1.0})
    >>> sorted(model.physical_parameters())
    ['m1', 'm2', 'm3']

    Each row of a batch may carry its own parameter vector ``p`` (the system's order); learned
    parameters are taken from the model, the others from ``p``:

    >>> pendulum = PhysicsModel("pendulum", learnable=["g"])
    >>> pendulum.trajectory_parameters
    ('m', 'g', 'l')
    >>> y = torch.tensor([[1.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    >>> p = torch.tensor([[1.0, 0.0, 1.0], [1.0, 0.0, 2.0]], dtype=torch.float64)  # l = 1, 2
    >>> ratio = pendulum(torch.tensor(0.0), y, p)[:, 1] / pendulum(torch.tensor(0.0), y)[:, 1]
    >>> ratio.tolist()  # g/l with the model's g: l = 1 is the default, l = 2 halves it
    [1.0, 0.5]
    """

    def __init__(
        self,
        system: Any,
        learnable: Sequence[str] = (),
        *,
        init: Mapping[str, float] | None = None,
        autonomous: bool | None = None,
        stored_parameters: bool = True,
    ) -> None:
        super().__init__()
        system = _resolve_system(system)
        if isinstance(learnable, str):
            raise InvalidArgumentError(
                f"learnable={learnable!r} must be a list of parameter names, e.g. "
                f"learnable=[{learnable!r}]"
            )
        learnable = list(learnable)
        known = list(system.parameters)
        unknown = [name for name in [*learnable, *(init or {})] if name not in known]
        if unknown:
            raise InvalidArgumentError(
                f"{unknown} are not parameters of system {system.name!r}; its parameters are "
                f"{known}"
            )
        not_learnable = [name for name in (init or {}) if name not in learnable]
        if not_learnable:
            raise InvalidArgumentError(
                f"init sets {not_learnable}, which are not learnable; add them to "
                f"learnable={learnable + not_learnable}"
            )
        self.system = system
        self.learnable = learnable
        self.field = system.vector_field(learnable=learnable)
        self._autonomous = not system.time_dependent if autonomous is None else bool(autonomous)
        self.stored_parameters = bool(stored_parameters)
        names = list(system.parameters)
        # Which entries of a per-row vector p the model replaces with its learned values; not in
        # the state dict, so checkpoints keep their keys.
        mask = torch.tensor([name in learnable for name in names], dtype=torch.bool)
        self.register_buffer("_learned_mask", mask, persistent=False)
        if init:
            self.set_parameters(init)

    @property
    def autonomous(self) -> bool:
        """Whether ``f`` ignores ``t``."""
        return self._autonomous

    @property
    def separable(self) -> bool:
        """Whether the state splits as ``[q, v]`` for symplectic methods (from the system)."""
        return bool(getattr(self.field, "separable", False))

    @property
    def n_coordinates(self) -> int | None:
        """Number of coordinates ``q`` when :attr:`separable` (from the system)."""
        return getattr(self.field, "n_coordinates", None)

    @property
    def trajectory_parameters(self) -> tuple[str, ...]:
        """Names of the entries of the per-row parameter vector ``p`` that :meth:`forward`
        accepts (the system's parameters, in its order), or ``()`` when the model was built with
        ``stored_parameters=False``. The trainer and the rollouts pass each trajectory's stored
        values this way (see ``docs/training.md``, "Per-trajectory parameters")."""
        return tuple(self.system.parameters) if self.stored_parameters else ()

    def parameter_vector(self) -> torch.Tensor:
        """The model's own value of every parameter (learned or the system's), in the system's
        order, shape (n_params,)."""
        return self.field.parameter_vector()

    def _parameter(self, name: str) -> nn.Parameter:
        for full_name, parameter in self.field.named_parameters():
            if full_name.rsplit(".", 1)[-1] == name:
                return parameter
        raise InvalidArgumentError(
            f"{name!r} is not a learnable parameter; learnable ones are {self.learnable}"
        )

    def physical_parameters(self) -> dict[str, float]:
        """The current values of the learnable physical parameters, by name.

        Returns
        -------
        dict of str to float
        """
        return {
            name: float(self._parameter(name).detach().reshape(-1)[0]) for name in self.learnable
        }

    @torch.no_grad()
    def set_parameters(self, values: Mapping[str, float]) -> None:
        """Overwrite learnable parameters in place (for example to initialise them).

        Parameters
        ----------
        values : mapping of str to float

        Raises
        ------
        physode.InvalidArgumentError
            For a name that is not learnable or a value that is not a finite number.
        """
        bad = {name: value for name, value in values.items() if not converts_to_finite_real(value)}
        if bad:
            raise InvalidArgumentError(
                f"parameter values {bad} are not finite real numbers; give floats, e.g. "
                f"{{{next(iter(bad))!r}: 1.0}}"
            )
        for name, value in values.items():
            self._parameter(name).fill_(float(value))

    def forward(
        self, t: torch.Tensor, y: torch.Tensor, p: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Return ``dy/dt`` from the physical law.

        Parameters
        ----------
        t, y : Tensor
            Time and state, as :func:`physode.solve` passes them.
        p : Tensor, shape (..., n_params), optional
            Parameter values per row of ``y`` in the system's order (see
            :attr:`trajectory_parameters`); the learnable entries are ignored and the model's
            learned values used. By default every row uses the model's own values.
        """
        if p is None:
            return self.field(t, y)
        own = self.field.parameter_vector()
        if own.dtype != y.dtype or own.device != y.device:
            own = own.to(dtype=y.dtype, device=y.device)
        return self.system.rhs(t, y, torch.where(self._learned_mask, own, p.to(y.dtype)))
