"""The physics model: a catalogue or user system's vector field with chosen parameters learnable."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from physode._checks import converts_to_finite_real, is_int, is_switch
from physode._errors import InvalidArgumentError
from physode.models._weights import refuse_a_checkpoint
from physode.models.neural import call_module
from physode.symbolic._vector_field import warn_if_not_in_equations


def _resolve_system(system: Any) -> Any:
    """Accept a System, a catalogue name or a path to a specification file."""
    if isinstance(system, str | Path):
        import physode.systems

        return physode.systems.load(system)
    from physode.symbolic import System

    if not isinstance(system, System):
        raise InvalidArgumentError(
            f"system={system!r} is not a system: pass a physode.System, a catalogue name "
            "(e.g. 'pendulum'; physode.systems.names() lists them) or the path of a "
            "specification file"
        )
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
    per_trajectory : sequence of str
        Parameters to learn one value of per training trajectory (the others in ``learnable``
        are one value for all); they are learned whether or not ``learnable`` lists them.
        Their values are a table :attr:`trajectory_values`, one row per training trajectory
        (in the training data's order), each row starting at the ``init`` value (or the
        system's). Trajectories the
        model was not trained on (validation, test, a rollout of new data) get the mean of the
        learned values: see :meth:`held_out_parameters`.
    n_trajectories : int, optional
        The number of training trajectories, to size the table now. By default the
        :class:`~physode.train.Trainer` sizes it from its training data (and
        :meth:`load_state_dict` from the saved table); a model sized here is refused by a
        trainer whose training data hold another number of trajectories.

    Raises
    ------
    physode.InvalidArgumentError
        If ``system`` is not a system, a catalogue name or a path, a name in ``learnable``,
        ``per_trajectory`` or ``init`` is not a parameter of the system, ``learnable`` or
        ``per_trajectory`` is a single string or not a list, an ``init`` value is not a finite
        number, ``autonomous`` or ``stored_parameters`` is not a bool (a string such as
        ``"False"`` would count as true), or ``n_trajectories`` is not a positive integer.

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

    One length per pendulum, learned with a shared ``g``:

    >>> model = PhysicsModel("pendulum", learnable=["g"], per_trajectory=["l"],
    ...                      init={"l": 1.5}, n_trajectories=3)
    >>> model.trajectory_values.shape, model.physical_parameters()
    (torch.Size([3, 1]), {'g': 9.81})
    >>> model.per_trajectory_values()
    {'l': [1.5, 1.5, 1.5]}
    """

    def __init__(
        self,
        system: Any,
        learnable: Sequence[str] = (),
        *,
        init: Mapping[str, float] | None = None,
        autonomous: bool | None = None,
        stored_parameters: bool = True,
        per_trajectory: Sequence[str] = (),
        n_trajectories: int | None = None,
    ) -> None:
        super().__init__()
        system = _resolve_system(system)
        for option, names in (("learnable", learnable), ("per_trajectory", per_trajectory)):
            if isinstance(names, str):
                raise InvalidArgumentError(
                    f"{option}={names!r} must be a list of parameter names, e.g. "
                    f"{option}=[{names!r}]"
                )
            if not isinstance(names, Iterable):
                raise InvalidArgumentError(
                    f"{option}={names!r} must be a list of parameter names of system "
                    f"{system.name!r} ({list(system.parameters)}), or [] for none"
                )
        # A string such as "False" would count as true: a forced system declared autonomous
        # shares solves between windows that start at different times, without an error.
        for option, value, also in (
            ("autonomous", autonomous, ", or None to read it from the equations"),
            ("stored_parameters", stored_parameters, ""),
        ):
            if not (is_switch(value) or (also and value is None)):
                raise InvalidArgumentError(f"{option}={value!r} must be True or False{also}")
        learnable = list(learnable)
        per_trajectory = list(dict.fromkeys(per_trajectory))
        known = list(system.parameters)
        unknown = [
            name for name in [*learnable, *per_trajectory, *(init or {})] if name not in known
        ]
        if unknown:
            raise InvalidArgumentError(
                f"{unknown} are not parameters of system {system.name!r}; its parameters are "
                f"{known}"
            )
        # A parameter learned per trajectory is learned: listing it in learnable is optional.
        learnable += [name for name in per_trajectory if name not in learnable]
        not_learnable = [name for name in (init or {}) if name not in learnable]
        if not_learnable:
            raise InvalidArgumentError(
                f"init sets {not_learnable}, which are not learnable; add them to "
                f"learnable={learnable + not_learnable}"
            )
        if n_trajectories is not None and not is_int(n_trajectories, least=1):
            raise InvalidArgumentError(
                f"n_trajectories={n_trajectories!r} must be a positive integer (the number of "
                "training trajectories), or None to let the trainer size it from its data"
            )
        self.system = system
        self.learnable = learnable
        self.per_trajectory = per_trajectory
        # The parameters learned as one value for all trajectories live in the field.
        shared = [name for name in learnable if name not in per_trajectory]
        self.field = system.vector_field(learnable=shared)
        warn_if_not_in_equations(system, per_trajectory, how="per-trajectory")
        self._autonomous = not system.time_dependent if autonomous is None else bool(autonomous)
        self.stored_parameters = bool(stored_parameters)
        names = list(system.parameters)
        # Which entries of a per-row vector p the model replaces with its learned values; not in
        # the state dict, so checkpoints keep their keys.
        mask = torch.tensor([name in shared for name in names], dtype=torch.bool)
        self.register_buffer("_learned_mask", mask, persistent=False)
        if per_trajectory:
            # Where the per-trajectory columns sit in p, and the value a new table row starts
            # at (the system's, or init's); neither is saved.
            columns = torch.tensor([names.index(name) for name in per_trajectory])
            self.register_buffer("_table_columns", columns, persistent=False)
            start = self.field.parameter_vector().detach()[columns].clone()
            self.register_buffer("_table_init", start, persistent=False)
            # The table: one row per training trajectory, none until its size is known.
            self.trajectory_values = nn.Parameter(start.new_zeros(0, len(per_trajectory)))
        if init:
            self.set_parameters(init)
        if n_trajectories is not None:
            self.set_n_trajectories(int(n_trajectories))

    def extra_repr(self) -> str:
        """What ``repr`` shows beside the field (the system and the shared learnable
        parameters): the parameters learned per trajectory, and the settings not at their
        defaults."""
        shown = []
        if self.per_trajectory:
            shown.append(
                f"per_trajectory={self.per_trajectory}, n_trajectories={self.n_trajectories}"
            )
        if self._autonomous == self.system.time_dependent:  # told, against the equations
            shown.append(f"autonomous={self._autonomous}")
        if not self.stored_parameters:
            shown.append("stored_parameters=False")
        return ", ".join(shown)

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
    def drift_is_velocity(self) -> bool:
        """Whether ``dq/dt`` is ``v`` itself (from the system): the symplectic methods then move
        ``q`` by ``v`` without evaluating the model, one evaluation a step instead of two."""
        return bool(getattr(self.field, "drift_is_velocity", False))

    @property
    def trajectory_parameters(self) -> tuple[str, ...]:
        """Names of the entries of the per-row parameter vector ``p`` that :meth:`forward`
        accepts (the system's parameters, in its order), or ``()`` when the model was built with
        ``stored_parameters=False``. The trainer and the rollouts pass each trajectory's stored
        values this way (see ``docs/training.md``, "Per-trajectory parameters")."""
        return tuple(self.system.parameters) if self.stored_parameters else ()

    def parameter_vector(self) -> torch.Tensor:
        """The model's own value of every parameter (learned or the system's), in the system's
        order, shape (n_params,). A parameter learned per trajectory takes the mean of its
        learned values (:meth:`held_out_parameters`): the value for a trajectory that was not
        trained on."""
        own = self.field.parameter_vector()
        if not self.per_trajectory:
            return own
        return own.index_copy(0, self._table_columns, self._held_out_vector().to(own.dtype))

    @property
    def n_trajectories(self) -> int | None:
        """Rows of the per-trajectory table (``0`` until sized), or ``None`` for a model that
        learns no parameter per trajectory."""
        return int(self.trajectory_values.shape[0]) if self.per_trajectory else None

    @torch.no_grad()
    def set_n_trajectories(self, n: int) -> None:
        """Size the per-trajectory table for ``n`` training trajectories, each row at the
        starting value; the :class:`~physode.train.Trainer` calls it with its training data.

        A table of ``n`` rows is kept as it is (a model trained before, fine-tuned on the same
        data); a model without per-trajectory parameters ignores the call.

        Raises
        ------
        physode.InvalidArgumentError
            If the table already has another number of rows (from ``n_trajectories=``, an
            earlier training run or loaded weights).
        """
        if not self.per_trajectory:
            return
        rows = self.n_trajectories
        if rows == n:
            return
        if rows:
            raise InvalidArgumentError(
                f"the model learns {self.per_trajectory} per trajectory for {rows} training "
                f"trajectories, and these training data hold {n}; train it on the data it was "
                f"sized for, or build a new model (n_trajectories={n}, or left out for the "
                "trainer to size)"
            )
        table = self._table_init.expand(n, -1).clone()
        self.trajectory_values = nn.Parameter(table, self.trajectory_values.requires_grad)

    def _held_out_vector(self) -> torch.Tensor:
        """The per-trajectory parameters' values for an unseen trajectory: the mean of the
        learned rows (the starting values while the table is empty)."""
        table = self.trajectory_values
        return table.mean(0) if table.shape[0] else self._table_init.to(table.dtype)

    def per_trajectory_values(self) -> dict[str, list[float]]:
        """Each training trajectory's learned value of each per-trajectory parameter, by name,
        in the training data's order (empty lists before the table is sized; ``{}`` without
        per-trajectory parameters)."""
        columns = self.trajectory_values.detach().T.tolist() if self.per_trajectory else []
        return dict(zip(self.per_trajectory, columns, strict=True))

    def held_out_parameters(self) -> dict[str, float]:
        """The value of each per-trajectory parameter that a trajectory the model was not
        trained on gets (validation, test, new data): the mean of the learned values."""
        if not self.per_trajectory:
            return {}
        return dict(zip(self.per_trajectory, self._held_out_vector().tolist(), strict=True))

    def learned_rows(
        self,
        p: torch.Tensor | None,
        index: torch.Tensor | None,
        n: int,
        values: torch.Tensor | None = None,
    ) -> torch.Tensor | None:
        """The per-row parameter vectors of ``n`` rows with the per-trajectory learned values
        filled in: row ``i`` from table row ``index[i]`` (training trajectories), or, with
        ``index=None``, the held-out values. ``p`` (n, n_params) gives the other entries
        (``None``: the model's own). Differentiable with respect to the table.

        ``values`` (n, len(per_trajectory)), given with ``index=None``, are used instead of the
        table: each row's own values for trajectories the model was not trained on (those
        :func:`physode.train.rollout_report` calibrates), differentiable with respect to them.

        Returns ``p`` unchanged for a model without per-trajectory parameters, and ``None``
        for ``p=None, index=None, values=None`` (:meth:`forward` without ``p`` uses the
        held-out values).
        """
        if not self.per_trajectory or (p is None and index is None and values is None):
            return p
        table = self.trajectory_values
        if values is not None:
            values = values.to(device=table.device, dtype=table.dtype)
        elif index is None:
            values = self._held_out_vector().expand(n, -1)
        else:
            values = table[torch.as_tensor(index, device=table.device)]
        if p is None:
            p = self.field.parameter_vector().detach().expand(n, -1)
        p = p.to(device=table.device, dtype=table.dtype)
        return p.index_copy(-1, self._table_columns, values)

    def load_state_dict(self, *args: Any, **kwargs: Any) -> Any:
        """Load like any module (an unsized per-trajectory table takes the saved one's rows);
        a load that fails leaves an unsized table unsized, so that the right weights, or
        training data of any size, still fit this model."""
        refuse_a_checkpoint(args[0] if args else kwargs.get("state_dict"), "PhysicsModel")
        with keeping_unsized_tables(self):
            return super().load_state_dict(*args, **kwargs)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        """Load like any module; an unsized per-trajectory table takes the saved one's rows, so
        that weights saved after training load into a fresh model."""
        saved = state_dict.get(prefix + "trajectory_values")
        if self.per_trajectory and isinstance(saved, torch.Tensor) and saved.ndim == 2:
            if saved.shape[1] != len(self.per_trajectory):
                raise InvalidArgumentError(
                    f"the saved weights learned {saved.shape[1]} parameter(s) per trajectory "
                    f"(a table of shape {tuple(saved.shape)}), and this model learns "
                    f"{self.per_trajectory} per trajectory ({len(self.per_trajectory)}); build "
                    "it with the per_trajectory of the run that saved them"
                )
            rows, theirs = self.n_trajectories, int(saved.shape[0])
            if rows == 0:
                self.set_n_trajectories(theirs)
            elif rows != theirs:
                raise InvalidArgumentError(
                    f"the saved weights learned {self.per_trajectory} per trajectory for "
                    f"{theirs} training trajectories, and this model's table has {rows} rows; "
                    "build the model without n_trajectories (and before training) to take the "
                    "saved size"
                )
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _parameter(self, name: str) -> torch.Tensor:
        """The field's learnable ``name``: its ``nn.Parameter``, or its value where the user
        constrained it with ``torch.nn.utils.parametrize``."""
        if name not in self.field.learnable:
            raise InvalidArgumentError(
                f"{name!r} is not a learnable parameter; learnable ones are {self.learnable}"
            )
        return getattr(self.field, name)

    def physical_parameters(self) -> dict[str, float]:
        """The current values of the learnable physical parameters that are one value for all
        trajectories, by name; those learned per trajectory are in
        :meth:`per_trajectory_values`.

        Returns
        -------
        dict of str to float
        """
        return {
            name: float(self._parameter(name).detach().reshape(-1)[0])
            for name in self.learnable
            if name not in self.per_trajectory
        }

    @torch.no_grad()
    def set_parameters(self, values: Mapping[str, float]) -> None:
        """Overwrite learnable parameters in place (for example to initialise them).

        Parameters
        ----------
        values : mapping of str to float

        A parameter learned per trajectory is set for every trajectory, and new table rows
        start there.

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
            if name in self.per_trajectory:
                column = self.per_trajectory.index(name)
                self._table_init[column] = float(value)
                self.trajectory_values[:, column] = float(value)
            elif parametrize.is_parametrized(self.field, name):
                self._set_parametrized(name, float(value))
            else:
                self._parameter(name).fill_(float(value))

    def _set_parametrized(self, name: str, value: float) -> None:
        """Set a parameter constrained with ``torch.nn.utils.parametrize`` through its
        ``right_inverse`` (torch names a parametrization without one), as assigning
        ``model.field.<name> = value`` does."""
        current = self._parameter(name)
        setattr(self.field, name, torch.tensor(value, dtype=current.dtype, device=current.device))

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
            :attr:`trajectory_parameters`); the entries of parameters learned as one value for
            all are ignored and the model's learned values used. Those learned per trajectory
            are taken from ``p``, where :meth:`learned_rows` puts them. By default every row
            uses the model's own values (per-trajectory ones: the held-out values).
        """
        if p is None:
            if self.per_trajectory:
                return self.system.rhs(t, y, self.parameter_vector().to(y.dtype))
            return call_module(self.field, t, y)
        own = self.field.parameter_vector()
        if own.dtype != y.dtype or own.device != y.device:
            own = own.to(dtype=y.dtype, device=y.device)
        return self.system.rhs(t, y, torch.where(self._learned_mask, own, p.to(y.dtype)))


@contextmanager
def keeping_unsized_tables(module: nn.Module) -> Iterator[None]:
    """Put back the empty per-trajectory table of each :class:`PhysicsModel` in ``module`` if
    the block raises: a ``load_state_dict`` sizes such a table to the saved one before it copies
    the values, and one that then fails (other keys, another system) would otherwise leave the
    model sized for weights it never took."""
    unsized = [
        (model, model.trajectory_values)
        for model in module.modules()
        if isinstance(model, PhysicsModel) and model.n_trajectories == 0
    ]
    try:
        yield
    except BaseException:
        for model, table in unsized:
            model.trajectory_values = table
        raise
