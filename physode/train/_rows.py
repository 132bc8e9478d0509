"""Per-trajectory parameter values for a model's solves: which values each row of a batch gets,
and how they travel through :func:`physode.solve`.

A model that takes per-row parameters declares their names as ``model.trajectory_parameters``
(a :class:`~physode.models.PhysicsModel`, or a :class:`~physode.models.Hybrid` around one), has
``forward(t, y, p)`` with ``p`` of shape ``(rows, n_params)``, and ``parameter_vector()``, its own
values. Any other ``f(t, y)`` is solved as it is.

Parameters a model learns per trajectory (``model.per_trajectory``) are entries of ``p`` too:
:func:`learned_rows` fills them in before the solve, from the model's table for training
trajectories (so the loss differentiates through ``table[index]`` in every gradient mode) and
with the held-out values (the mean of the learned ones) for any other trajectory, or with each
held-out trajectory's own values where :func:`physode.train.rollout_report` calibrates them.

With one step size for the batch (``step_control="shared"``) the rows never change places, so
``p`` is bound to the model for the solve (:class:`_Bound`): nothing is added to the state, and
symplectic methods keep their ``[q, v]`` split. The per-sample loop drops rows that finish, so
there ``p`` travels as extra state components with zero derivative (:class:`_Carried`), as
``physode.data.simulate`` carries sampled parameters, and the tolerances are scaled so that the
error norm stays the RMS over the real state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import nn

import physode
from physode._errors import InvalidArgumentError
from physode.solvers.control import tolerances_over_state


def takes_parameters(model: Any) -> tuple[str, ...]:
    """The names of the per-row parameters ``model`` accepts (``()`` for a plain ``f(t, y)``)."""
    return tuple(getattr(model, "trajectory_parameters", None) or ())


def per_trajectory_names(model: Any) -> tuple[str, ...]:
    """The names of the parameters ``model`` learns per trajectory (``()`` for none)."""
    return tuple(getattr(model, "per_trajectory", None) or ())


def learned_rows(
    model: Any,
    p: torch.Tensor | None,
    index: Sequence[int] | torch.Tensor | None,
    n: int,
    values: torch.Tensor | None = None,
) -> torch.Tensor | None:
    """``p`` (n rows, or ``None``) with ``model``'s per-trajectory learned values filled in:
    those of training trajectories ``index``, the held-out ones for ``index=None``, or
    ``values`` (n, n_per_trajectory: calibrated held-out values) where given. ``p`` as it is
    for a model that learns nothing per trajectory."""
    if not per_trajectory_names(model):
        return p
    return model.learned_rows(p, index, n, values)


def parameter_rows(
    model: Any, params: torch.Tensor | None, system: Any, role: str
) -> torch.Tensor | None:
    """Each trajectory's parameter vector for ``model``, shape (N, n_params), or ``None`` where
    the model's own values serve every trajectory.

    ``params`` (N, k) are the values the trajectories store, one column per parameter of
    ``system`` (the data's system; ``None`` when unknown, and then the columns must be the
    model's parameters). Columns are matched to the model's parameters by name, so a physics
    term that describes only part of the data's system (an APHYNITY hybrid, say) takes the
    parameters the two share; the others keep the model's values. ``None`` is returned when the
    data store no parameters, the model takes none, or every row's values of the parameters the
    model does not learn equal its own (data simulated with one parameter set): the solves are
    then exactly those of a model that ignores stored parameters.

    Raises
    ------
    physode.InvalidArgumentError
        If ``params`` (one row per trajectory, as :class:`~physode.train.Trajectories` checks)
        does not hold one value per parameter of ``system`` (or of the model's system where the
        data have none), or holds values that are not finite where the model uses them.
        ``role`` names the data in the message.
    """
    names = takes_parameters(model)
    if not names or params is None:
        return None
    data_names = list(getattr(system, "parameters", None) or [])
    if system is None:
        if params.shape[1] != len(names):
            raise InvalidArgumentError(
                f"the {role} trajectories store {params.shape[1]} parameter values each but "
                f"have no system to name them, and the model's system has {len(names)} "
                f"parameters {list(names)}; give the data their system, Trajectories(t, ys, "
                "params, system=...), or params with one column per parameter in that order"
            )
        data_names = list(names)
    elif params.shape[1] != len(data_names):
        raise InvalidArgumentError(
            f"the {role} trajectories store {params.shape[1]} parameter values each, but their "
            f"system {getattr(system, 'name', '?')!r} has {len(data_names)} parameters "
            f"{data_names}; the data set's params do not match its system"
        )
    own = model.parameter_vector().detach().to(params.device, params.dtype)
    learned = set(getattr(model, "physical_parameters", dict)())
    learned |= set(per_trajectory_names(model))  # learned too: never the stored values
    used = [(i, data_names.index(name)) for i, name in enumerate(names) if name in data_names]
    known = [(i, j) for i, j in used if names[i] not in learned]
    if not known:
        return None
    columns = params[:, [j for _, j in known]]
    finite = torch.isfinite(columns).all(0).tolist()
    if not all(finite):
        bad = [names[i] for (i, _), ok in zip(known, finite) if not ok]
        raise InvalidArgumentError(
            f"the {role} trajectories store values of {bad} that are not finite; the model "
            "takes these parameters from the data, so repair them or build the model with "
            "stored_parameters=False"
        )
    if bool((columns == own[[i for i, _ in known]]).all()):
        return None
    rows = own.expand(params.shape[0], -1).clone()
    rows[:, [i for i, _ in known]] = params[:, [j for _, j in known]]
    return rows


def model_parameters(
    model: Any, params: torch.Tensor | None, system: Any, n: int
) -> torch.Tensor | None:
    """The parameter values of ``system`` (N, n_params) under which ``model`` rolled out ``n``
    trajectories: its learned values (``model.physical_parameters()``, matched by name) where it
    learns them, and all its own values where it takes none from the trajectories (built with
    ``stored_parameters=False``); the trajectories' own ``params`` (or ``system``'s values)
    elsewhere. ``params`` as they are for a model that sets none of ``system``'s parameters."""
    learned = _own_values(model)
    learned.update(getattr(model, "physical_parameters", dict)())
    # Parameters learned per trajectory: the value the rollouts of unseen trajectories use.
    learned.update(getattr(model, "held_out_parameters", dict)())
    names = list(getattr(system, "parameters", None) or [])
    shared = {name: value for name, value in learned.items() if name in names}
    if not shared:
        return params
    if params is None:
        params = torch.tensor([system.parameters[name] for name in names], dtype=torch.float64)
        params = params.expand(n, -1)
    params = params.clone()
    for name, value in shared.items():
        params[:, names.index(name)] = value
    return params


def _own_values(model: Any) -> dict[str, float]:
    """Every parameter value of a physics model (or a hybrid's physics term) that was built
    with ``stored_parameters=False``, by name: it solves every trajectory with them. ``{}``
    for any other model."""
    physics = getattr(model, "physics", model)
    if takes_parameters(model) or getattr(physics, "stored_parameters", True):
        return {}
    names = list(physics.system.parameters)
    return dict(zip(names, physics.parameter_vector().detach().tolist(), strict=True))


class _Bound(nn.Module):
    """``f(t, y) = model(t, y, p)`` for one batch, ``p`` fixed to the batch's rows."""

    def __init__(self, model: nn.Module, p: torch.Tensor) -> None:
        super().__init__()
        self.model = model
        self.p = p

    def __getattr__(self, name: str) -> Any:
        if name in ("separable", "n_coordinates", "drift_is_velocity", "autonomous"):
            return getattr(self.model, name)
        return super().__getattr__(name)

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.model(t, y, self.p)


class _Carried(nn.Module):
    """``d[y, p]/dt = [model(t, y, p), 0]``: the rows' parameters carried in the state."""

    def __init__(self, model: nn.Module, n_state: int) -> None:
        super().__init__()
        self.model = model
        self.n_state = n_state

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        y, p = z[..., : self.n_state], z[..., self.n_state :]
        return torch.cat((self.model(t, y, p), torch.zeros_like(p)), dim=-1)


def solve_rows(
    model: nn.Module, y0: torch.Tensor, t: torch.Tensor, p: torch.Tensor | None, **options: Any
) -> physode.Solution:
    """``physode.solve(model, y0, t, **options)`` with row ``i`` of ``y0`` (B, n) evaluated at
    parameters ``p[i]`` (``p`` of shape (B, n_params), or ``None`` for the model's own)."""
    if p is None:
        return physode.solve(model, y0, t, **options)
    p = p.to(y0.device, y0.dtype)
    if options.get("step_control", "shared") != "per-sample":
        return physode.solve(_Bound(model, p), y0, t, **options)
    n = y0.shape[-1]
    z0 = torch.cat((y0, p), dim=-1)
    options["rtol"], options["atol"] = tolerances_over_state(
        options.get("rtol", 1e-6), options.get("atol", 1e-8), n, z0.shape[-1]
    )
    solution = physode.solve(_Carried(model, n), z0, t, **options)
    return replace(solution, ys=solution.ys[..., :n])


def batch_rows(rows: torch.Tensor | None, index: Sequence[int] | torch.Tensor) -> Any:
    """The rows of ``rows`` at ``index``, or ``None``."""
    return None if rows is None else rows[torch.as_tensor(index, device=rows.device)]
