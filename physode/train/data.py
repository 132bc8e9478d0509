"""Trajectories for training: one container for every data source, and its windows."""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from physode._errors import InvalidArgumentError, PhysodeWarning
from physode._repr import name_text, short_repr, value_text
from physode.train._times import times_up_to

# Trajectories.from_irregular: the largest merged array it builds, and the grid size from which
# it warns that every solve outputs at many times.
MAX_MERGED_VALUES = 10**8
MANY_MERGED_TIMES = 10_000


@dataclass
class Trajectories:
    """Trajectories sampled on one shared time grid, with ``NaN`` where a value is missing.

    Parameters
    ----------
    t : Tensor, NumPy array or list, shape (P,)
        Strictly increasing, finite sample times (integer times, e.g. years, are taken as they
        are and cast to the states' dtype; moved to the states' device, as ``params`` are).
    states : Tensor, NumPy array or nested list, shape (N, P, n) or (P, n)
        ``states[i, j]`` is trajectory ``i`` at ``t[j]``. ``NaN`` marks a missing observation
        (a dropped sample, one component not measured): losses and errors are taken over the
        observed values only. Each trajectory's first observed time must be observed whole (it
        is the state a rollout starts from), and every component must be observed somewhere;
        infinite values are refused. Tensors and arrays keep their dtype (a float32 array
        trains in float32 unless ``TrainConfig.dtype`` says otherwise); Python lists of numbers
        are read as float64, like the Python floats they hold. Trajectories sampled at
        different times: :meth:`from_irregular`.
    params : Tensor, NumPy array or nested list, shape (N, n_params), optional
        The physical parameters each trajectory was generated with, one row per trajectory.
    system : physode.System, str or path, optional
        The system that generated them (for ground truth beyond the horizon and conservation):
        a system, a catalogue name or a specification file, loaded as
        :func:`physode.systems.load` loads it. Its state size must be ``n``.
    state_names : sequence of str, optional
        The name of each state component, in the order of the last axis of ``states`` (a
        :class:`physode.data.TimeSeries`, the columns of a CSV file, gives its own). Named
        states are matched to a system's by name: to ``system``, and to the model's system in
        training and evaluation where the data have no system of their own. The same names
        in another order are put in the system's order (``states`` and ``state_names`` then
        follow it); other names are refused. Without names the states are taken in the order
        given.

    Raises
    ------
    physode.InvalidArgumentError
        For badly shaped or typed arrays, times that are not finite or not increasing, infinite
        states, a trajectory whose first observed state is incomplete (or that has no
        observation at all), a state component observed nowhere, ``params`` that are not one
        row of real numbers per trajectory, a ``system`` that is not one or whose state size is
        not ``n``, ``state_names`` that are not ``n`` distinct strings, or names that are not
        ``system``'s.

    Examples
    --------
    >>> data = Trajectories(torch.linspace(0, 1, 11), torch.zeros(3, 11, 2))
    >>> len(data), data.n_points, data.n_state, data.complete
    (3, 11, 2, True)
    >>> states = torch.zeros(3, 11, 2)
    >>> states[1, 4:6] = float("nan")          # trajectory 1 missed two samples
    >>> Trajectories(torch.linspace(0, 1, 11), states).complete
    False

    Columns named ``(y, x)`` meet the Lotka-Volterra system, whose states are ``(x, y)``:

    >>> data = Trajectories([0.0, 1.0], [[1.0, 2.0], [1.5, 2.5]], system="lotka_volterra",
    ...                     state_names=["y", "x"])
    >>> data.state_names, data.states[0, 0].tolist()
    (('x', 'y'), [2.0, 1.0])
    """

    t: torch.Tensor
    states: torch.Tensor
    params: torch.Tensor | None = None
    system: Any = None
    state_names: Sequence[str] | None = None

    def __repr__(self) -> str:
        named = () if self.state_names is None else ("state_names",)
        return short_repr(
            self, "t", "states", "params", ("system", name_text), *named, "complete"
        )

    def __post_init__(self) -> None:
        t = _as_tensor("t", self.t)
        states = _as_tensor("states", self.states, missing=True)
        if states.ndim == 2:
            states = states.unsqueeze(0)
        problems = []
        if t.ndim != 1:
            problems.append(f"t must be 1-dimensional, got shape {tuple(t.shape)}")
        if states.ndim != 3:
            problems.append(
                f"states must have shape (N, P, n) or (P, n), got {tuple(states.shape)}"
            )
        if not problems and states.shape[1] != t.shape[0]:
            problems.append(
                f"states have {states.shape[1]} time points but t has {t.shape[0]}"
            )
        if not problems and states.shape[0] == 0:
            problems.append("the data set is empty (0 trajectories)")
        if not problems and t.shape[0] < 2:
            problems.append(f"need at least 2 time points, got {t.shape[0]}")
        if not problems and not states.is_floating_point():
            problems.append(
                f"states have dtype {states.dtype}; give floating-point states, e.g. ys.double()"
            )
        if not problems and (t.is_complex() or t.dtype == torch.bool):  # integers are fine
            problems.append(f"t has dtype {t.dtype}; give real times, e.g. t.double()")
        found = [] if problems else non_finite(t, states, missing_allowed=True)
        if found:
            problems += [
                *found,
                "leave those values out (NaN marks a missing observation) or repair them",
            ]
        if not problems and not bool((t[1:] > t[:-1]).all()):
            problems.append("t must be strictly increasing")
        if not problems:
            problems += _missing_problems(t, states)
        params = None if self.params is None else _as_tensor("params", self.params, False)
        if not problems and params is not None:
            problems += _params_problems(params, states.shape[0])
        if not problems and self.state_names is not None:
            problems += _names_problems(self.state_names, states.shape[2])
        if problems:
            raise InvalidArgumentError("bad trajectories: " + "; ".join(problems))
        if self.state_names is not None:
            self.state_names = tuple(self.state_names)
        self.system = _as_system(self.system)
        if self.system is not None:
            states = self._in_system_order(states)
        # On the states' device, as the params: a rollout solves from the states at these times.
        self.t = t.to(states.device, states.dtype)
        if t.dtype != states.dtype and not _increasing_finite(self.t):
            raise InvalidArgumentError(
                f"bad trajectories: t is not finite and strictly increasing once cast to "
                f"{states.dtype}, the states' dtype (from {t.dtype}: t[0] = "
                f"{value_text(float(t[0]))}, t[-1] = {value_text(float(t[-1]))}); "
                "give the states in float64 (states.double(); in training "
                "TrainConfig(dtype=torch.float64)), or times counted from the first (t - t[0])"
            )
        self.states = states
        if params is not None:
            self.params = params.to(device=states.device, dtype=states.dtype)

    def _in_system_order(self, states: torch.Tensor) -> torch.Tensor:
        """``states`` checked against the state size of ``system`` and, where the data name
        their states, put in its order (``state_names`` with them)."""
        ours = tuple(self.system.state_names)
        if states.shape[2] != len(ours):
            raise InvalidArgumentError(
                f"bad trajectories: the states have {states.shape[2]} components, the system "
                f"{self.system.name!r} has {len(ours)} states {list(ours)}; give states of "
                f"shape (N, P, {len(ours)}) in that order, or the system they come from"
            )
        if self.state_names is None:
            return states
        order = state_order(tuple(self.state_names), self.system, "the data")
        self.state_names = ours
        return states if order is None else states[..., order]

    @classmethod
    def from_irregular(
        cls,
        samples: Sequence[tuple[Any, Any]],
        params: Any = None,
        system: Any = None,
        state_names: Sequence[str] | None = None,
    ) -> Trajectories:
        """Trajectories sampled at their own times (or of different lengths), merged onto the
        union of their times with ``NaN`` where a trajectory has no sample.

        Parameters
        ----------
        samples : sequence of (t_i, states_i)
            One pair per trajectory: strictly increasing, finite times ``t_i`` of shape
            ``(P_i,)`` and its states ``states_i`` of shape ``(P_i, n)`` (``NaN`` for a
            missing component, as in :class:`Trajectories`). Times are compared exactly, in the
            states' dtype: round measured times to their resolution first, or two readings a
            rounding apart become two grid times.
        params, system, state_names
            As for :class:`Trajectories`: named states are matched to ``system`` by name (or,
            without one, to the model's system in training and evaluation).

        Returns
        -------
        Trajectories
            On the sorted union of every ``t_i`` (``P`` times); trajectory ``i`` holds
            ``states_i`` at its own times and ``NaN`` elsewhere. The states take the promoted
            dtype of the ``states_i``, and the device of the first (where every pair moves).

        Raises
        ------
        physode.InvalidArgumentError
            For no pairs, a pair that is not ``(t_i, states_i)`` of matching lengths, states of
            different widths, times that are not finite or not increasing, fewer than two
            times in all, a merged array of more than ``MAX_MERGED_VALUES`` (10**8) values, or
            ``state_names`` that :class:`Trajectories` refuses.

        Warns
        -----
        physode.PhysodeWarning
            When the union holds more than ``MANY_MERGED_TIMES`` (10,000) times: every solve
            outputs the states at each grid time of its window.

        Examples
        --------
        >>> data = Trajectories.from_irregular([
        ...     ([0.0, 1.0, 2.0], [[1.0], [0.5], [0.25]]),
        ...     ([0.5, 1.5], [[2.0], [1.0]]),
        ... ])
        >>> data.t.tolist()
        [0.0, 0.5, 1.0, 1.5, 2.0]
        >>> data.states[1, :, 0].tolist()
        [nan, 2.0, nan, 1.0, nan]

        Columns named ``(y, x)`` are put in the order of the Lotka-Volterra states ``(x, y)``:

        >>> data = Trajectories.from_irregular([([0.0, 1.0], [[1.0, 2.0], [1.5, 2.5]])],
        ...                                    system="lotka_volterra", state_names=["y", "x"])
        >>> data.state_names, data.states[0, 0].tolist()
        (('x', 'y'), [2.0, 1.0])
        """
        try:
            pairs = list(samples)
        except TypeError:
            pairs = None
        if not pairs:
            raise InvalidArgumentError(
                "from_irregular needs a non-empty list of (t_i, states_i) pairs, one per "
                f"trajectory, got {samples!r:.80}"
            )
        times, values = [], []
        for i, pair in enumerate(pairs):
            if not _is_pair(pair):
                raise InvalidArgumentError(
                    f"sample {i} of from_irregular must be a pair (t_i, states_i), got "
                    f"{type(pair).__name__}"
                )
            t_i, y_i = _as_tensor(f"t of sample {i}", pair[0]), _as_tensor(
                f"states of sample {i}", pair[1], missing=True
            )
            if t_i.ndim != 1 or y_i.ndim != 2 or y_i.shape[0] != t_i.shape[0]:
                raise InvalidArgumentError(
                    f"sample {i}: need t_i of shape (P_i,) and states_i of shape (P_i, n), got "
                    f"{tuple(t_i.shape)} and {tuple(y_i.shape)}"
                )
            if y_i.shape[1] != (values[0].shape[1] if values else y_i.shape[1]):
                raise InvalidArgumentError(
                    f"sample {i} has {y_i.shape[1]} state components, sample 0 has "
                    f"{values[0].shape[1]}; every trajectory needs the same components"
                )
            if not y_i.is_floating_point():
                raise InvalidArgumentError(
                    f"states of sample {i} have dtype {y_i.dtype}; give floating-point states"
                )
            times.append(t_i)
            values.append(y_i)
        dtype, device = values[0].dtype, values[0].device
        for y_i in values[1:]:
            dtype = torch.promote_types(dtype, y_i.dtype)
        for i, t_i in enumerate(times):
            if t_i.is_complex() or t_i.dtype == torch.bool:
                raise InvalidArgumentError(
                    f"t of sample {i} has dtype {t_i.dtype}; give real times"
                )
            t_i = times[i] = t_i.to(device, dtype)
            if not bool(torch.isfinite(t_i).all()):
                raise InvalidArgumentError(f"t of sample {i} holds non-finite times")
            if not bool((t_i[1:] > t_i[:-1]).all()):
                raise InvalidArgumentError(
                    f"t of sample {i} must be strictly increasing (in {dtype}, the states' dtype)"
                )
        grid = torch.unique(torch.cat(times))  # sorted
        n, size = values[0].shape[1], len(pairs) * len(grid) * values[0].shape[1]
        if size > MAX_MERGED_VALUES:
            raise InvalidArgumentError(
                f"the {len(pairs)} trajectories share few times: their union has {len(grid)} "
                f"times, and the merged states would hold {size:.3g} values (at most "
                f"{MAX_MERGED_VALUES:.0e}); round the times to a common resolution, or train on "
                "groups of trajectories that share their times"
            )
        if len(grid) > MANY_MERGED_TIMES:
            warnings.warn(
                f"the merged time grid of {len(pairs)} trajectories has {len(grid)} times: every "
                "solve outputs the states at each grid time of its window, and a window of "
                "`window` points spans grid times, not a trajectory's own samples; round the "
                "times to a common resolution to shrink the grid",
                PhysodeWarning,
                stacklevel=2,
            )
        states = torch.full((len(pairs), len(grid), n), math.nan, dtype=dtype, device=device)
        for i, (t_i, y_i) in enumerate(zip(times, values, strict=True)):
            states[i, torch.searchsorted(grid, t_i.contiguous())] = y_i.to(device, dtype)
        return cls(grid, states, params, system, state_names)

    @property
    def observed(self) -> torch.Tensor:
        """Which values are observed (not ``NaN``), a bool tensor of ``states``' shape."""
        return ~torch.isnan(self.states)

    @property
    def complete(self) -> bool:
        """Whether every value is observed (no ``NaN`` in ``states``)."""
        return not bool(torch.isnan(self.states).any())

    @property
    def first_observed(self) -> torch.Tensor:
        """Each trajectory's first observed time index (its initial state), shape ``(N,)``."""
        return _first_observed(self.observed.any(-1))

    def __len__(self) -> int:
        return self.states.shape[0]

    @property
    def n_points(self) -> int:
        """Number of time points ``P``."""
        return self.t.shape[0]

    @property
    def n_state(self) -> int:
        """State dimension ``n``."""
        return self.states.shape[2]

    def subset(self, index: Sequence[int] | torch.Tensor) -> Trajectories:
        """The trajectories at ``index`` (same grid, system and parameters): integer positions
        (negative ones count from the end), or a boolean mask with one entry per trajectory
        (``data.subset(data.params[:, 2] > 1.0)``).

        Raises
        ------
        physode.InvalidArgumentError
            For positions out of range, a mask of another length, or an index that is neither
            (floats, a nested list); for an empty selection, as for empty data.
        """
        index = _trajectory_index(index, len(self))
        params = None if self.params is None else self.params[index]
        return Trajectories(self.t, self.states[index], params, self.system, self.state_names)

    def until(self, t_end: float) -> Trajectories:
        """The same trajectories cut to the times ``t <= t_end``; a sample time within rounding
        of ``t_end`` counts as equal to it (``until(0.3)`` keeps the sample that
        ``torch.linspace(0, 2, 21, dtype=torch.float64)`` stores as 0.30000000000000004)."""
        keep = times_up_to(self.t, t_end)
        return Trajectories(
            self.t[keep], self.states[:, keep], self.params, self.system, self.state_names
        )

    def to(self, dtype: torch.dtype, device: torch.device | str | None = None) -> Trajectories:
        """The same trajectories in another floating-point dtype, and on ``device`` if given.

        Raises
        ------
        physode.InvalidArgumentError
            If the times are not finite and strictly increasing in ``dtype`` (Unix timestamps
            in float32, say), as the constructor refuses them.
        """
        params = None if self.params is None else self.params.to(device, dtype)
        # The times as they are: the constructor casts them to the states' dtype and refuses
        # times that the cast collapses or makes infinite, saying so.
        return Trajectories(
            self.t,
            self.states.to(device, dtype),
            params,
            self.system,
            self.state_names,
        )


def _trajectory_index(index: Any, n: int) -> torch.Tensor:
    """``index`` (positions, or a mask of ``n`` entries) as the positions it selects, on the
    CPU. A mask cast to positions would select trajectories 0 and 1 in its stead."""
    given = index
    if isinstance(index, int | np.integer) and not isinstance(index, bool | np.bool_):
        index = [index]
    try:
        index = torch.as_tensor(np.asarray(index) if isinstance(index, list | tuple) else index)
    except (TypeError, ValueError):
        index = None
    if index is not None and index.dtype == torch.bool and index.ndim == 1:
        if len(index) != n:
            raise InvalidArgumentError(
                f"subset: a mask of {len(index)} entries selects trajectories of data that hold "
                f"{n}; give one entry per trajectory"
            )
        return index.cpu().nonzero().flatten()
    integers = index is not None and index.ndim == 1 and index.dtype != torch.bool and (
        len(index) == 0 or not (index.is_floating_point() or index.is_complex())
    )
    if not integers:
        raise InvalidArgumentError(
            f"subset: index={value_text(given)} must be a list of trajectory positions "
            f"(integers in [-{n}, {n})) or a boolean mask of {n} entries"
        )
    index = index.cpu().long()
    outside = [i for i in index.tolist() if not -n <= i < n]
    if outside:
        raise InvalidArgumentError(
            f"subset: positions {outside} lie outside the {n} trajectories (valid: -{n} to "
            f"{n - 1})"
        )
    return index


def _as_tensor(
    name: str, value: Any, irregular_hint: bool = True, missing: bool = False
) -> torch.Tensor:
    """``value`` as a tensor: tensors and NumPy arrays keep their dtype (a ``longdouble`` array is
    read as float64; the masked entries of a NumPy masked array as ``NaN`` where ``missing``),
    and anything else (lists of Python numbers) is read as float64, the precision of a Python
    float.

    Raises
    ------
    physode.InvalidArgumentError
        If ``value`` is not a rectangular array of real numbers, or a masked array with masked
        entries where not ``missing``.
    """
    if isinstance(value, np.ndarray):
        return torch.as_tensor(_plain_array(name, value, missing))
    if isinstance(value, torch.Tensor):
        return value
    try:
        return torch.as_tensor(value, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as exc:
        hint = (
            "; for trajectories of different lengths or times use "
            "Trajectories.from_irregular([(t_i, states_i), ...])" if irregular_hint else ""
        )
        raise InvalidArgumentError(
            f"{name} must be a tensor, a NumPy array or a rectangular list of real numbers, got "
            f"{type(value).__name__} ({str(exc).splitlines()[0]}){hint}"
        ) from None


def _plain_array(name: str, value: np.ndarray, missing: bool) -> np.ndarray:
    """``value`` as an array torch reads: masked entries as ``NaN`` (where ``missing``, and
    the array is of floats), ``longdouble`` as float64, negative strides copied away; arrays of
    dates, durations, text or objects are refused."""
    if isinstance(value, np.ma.MaskedArray):
        masked = np.ma.getmaskarray(value)
        if masked.any():
            count = f"{int(masked.sum())} of its {masked.size} entries"
            if not missing:
                raise InvalidArgumentError(
                    f"{name} is a NumPy masked array with {count} masked; only states may "
                    f"miss values (read as NaN): give every entry of {name.split()[0]}"
                )
            if value.dtype.kind == "f":
                value = value.filled(np.nan)
            else:
                raise InvalidArgumentError(
                    f"{name} is a NumPy masked array of dtype {value.dtype} with {count} "
                    "masked; give floating-point states, whose masked entries are read as NaN "
                    "(missing observations), e.g. states.astype(float)"
                )
        value = np.ma.getdata(value)
    if value.dtype.kind in "mM":
        raise InvalidArgumentError(
            f"{name} holds NumPy {value.dtype} values; give times as numbers, e.g. "
            "(t - t[0]) / np.timedelta64(1, 's') for seconds since the first time"
        )
    if value.dtype.kind not in "biufc":
        raise InvalidArgumentError(
            f"{name} is a NumPy array of dtype {value.dtype}; give real numbers, e.g. "
            f"{name.split()[0]}.astype(float)"
        )
    if value.dtype.kind == "f" and value.dtype.itemsize > 8:  # longdouble: no torch dtype
        value = value.astype(np.float64)
    if any(stride < 0 for stride in value.strides):  # a reversed view, t[::-1]
        value = value.copy()
    return value


def _increasing_finite(t: torch.Tensor) -> bool:
    """Whether the times ``t`` are finite and strictly increasing."""
    return bool(torch.isfinite(t).all()) and bool((t[1:] > t[:-1]).all())


def _params_problems(params: torch.Tensor, n: int) -> list[str]:
    """What makes ``params`` unusable as the parameters of ``n`` trajectories: not one row of
    real numbers per trajectory."""
    if params.dtype == torch.bool or params.is_complex():
        return [f"params have dtype {params.dtype}; give real numbers, e.g. params.double()"]
    if params.ndim != 2 or params.shape[0] != n:
        return [
            f"params have shape {tuple(params.shape)}, but the states hold {n} "
            f"trajector{'y' if n == 1 else 'ies'}; give one row of parameter values per "
            f"trajectory, in the states' order: shape ({n}, n_params)"
        ]
    return []


def _as_system(system: Any) -> Any:
    """``system`` as a :class:`physode.System` (``None`` stays ``None``): a catalogue name or a
    specification file's path is loaded.

    Raises
    ------
    physode.InvalidArgumentError
        For anything else, or a name that is not in the catalogue.
    """
    from physode.symbolic import System

    if system is None or isinstance(system, System):
        return system
    if isinstance(system, str | os.PathLike):
        import physode.systems

        return physode.systems.load(system)
    raise InvalidArgumentError(
        f"system must be a physode.System, a catalogue name or the path of a specification "
        f"file, got {type(system).__name__}; e.g. system=physode.systems.load('pendulum')"
    )


def _names_problems(names: Any, n: int) -> list[str]:
    """What makes ``names`` unfit to name ``n`` state components: not a sequence of ``n``
    distinct strings."""
    if isinstance(names, str) or not isinstance(names, Sequence):
        return [f"state_names must be a sequence of {n} strings, got {names!r:.80}"]
    if len(names) != n or not all(isinstance(name, str) for name in names):
        return [f"state_names must be {n} strings, one per state component, got {list(names)}"]
    if len(set(names)) != n:
        return [f"state_names {list(names)} name one component twice; give each its own name"]
    return []


def state_order(
    names: tuple[str, ...], system: Any, whose: str, its: str = "the system"
) -> list[int] | None:
    """The indices that put states named ``names`` in ``system``'s order (``None``: they are
    in it). ``whose`` and ``its`` say whose names and which system, in the message.

    Raises
    ------
    physode.InvalidArgumentError
        Where ``names`` are not ``system``'s state names, naming both lists.

    Examples
    --------
    >>> import physode
    >>> state_order(("y", "x"), physode.systems.load("lotka_volterra"), "the data")
    [1, 0]
    """
    ours = tuple(system.state_names)
    if names == ours:
        return None
    if sorted(names) != sorted(ours):
        unknown = [name for name in names if name not in ours]
        absent = [name for name in ours if name not in names]
        raise InvalidArgumentError(
            f"{whose} name their states {list(names)}, {its} {system.name!r} has the "
            f"states {list(ours)} ({_listed(unknown)} not among them, {_listed(absent)} not in "
            "the data): named states are matched by name; rename them to the system's (the "
            "header of a CSV file), or leave the names out to take the states in the order "
            "given, Trajectories(series.t, series.ys)"
        )
    return [names.index(name) for name in ours]


def _listed(names: list[str]) -> str:
    return "none" if not names else ", ".join(map(repr, names))


def model_system(model: Any) -> Any:
    """The system of a physics model, or of a hybrid's physics part; ``None`` for others."""
    return getattr(model, "system", None) or getattr(
        getattr(model, "physics", None), "system", None
    )


def in_model_order(data: Trajectories, model: Any, role: str) -> Trajectories:
    """``data`` with their named states in the order of ``model``'s system, where the data
    name their states and have no system of their own (their own system set their order).

    Raises
    ------
    physode.InvalidArgumentError
        Where the data's state names are not the model's system's.
    """
    system = model_system(model)
    if data.state_names is None or data.system is not None or system is None:
        return data
    order = state_order(data.state_names, system, f"the {role} data", "the model's system")
    if order is None:
        return data
    names = tuple(system.state_names)
    return Trajectories(data.t, data.states[..., order], data.params, None, names)


def state_order_problems(model: Any, data: Trajectories, role: str) -> list[str]:
    """A model whose system names the data's states in another order (data ``[x, v]``, model
    ``[v, x]``): trained or rolled out, it would take each state for another. Systems that
    name their states differently are left alone (Lagrangian data, a Hamiltonian model, say).
    ``role`` names the data in the message (``"training"``, ``"held-out"``)."""
    system = model_system(model)
    ours = list(getattr(system, "state_names", None) or [])
    theirs = list(getattr(data.system, "state_names", None) or [])
    if ours == theirs or sorted(ours) != sorted(theirs):
        return []
    return [
        f"the model's system {system.name!r} has the states {ours}, the {role} data's system "
        f"{data.system.name!r} the same ones in the order {theirs}: the model would take each "
        f"state for another; build the model from a system with the states in the "
        f"data's order {theirs}"
    ]


def _observe_problems(observe: list[int], n_state: int) -> list[str]:
    """What is wrong with ``observe`` for a state of ``n_state`` components: an index outside
    it, or one component given twice, once counted from the end (``[1, -1]`` of two).

    Examples
    --------
    >>> _observe_problems([0, -1], 3)
    []
    >>> _observe_problems([0, 0], 3)
    ['observe=[0, 0] gives component 0 twice; each component enters the loss once: drop the repeat']
    >>> _observe_problems([1, -1, 3], 2)  # doctest: +NORMALIZE_WHITESPACE
    ['observe=[1, -1, 3] has indices [3] outside the 2 state components',
     'observe=[1, -1, 3] gives component 1 twice, as 1 and -1 (a negative index counts from
     the end); each component enters the loss once: drop the repeat']
    """
    problems = []
    bad = [i for i in observe if not -n_state <= i < n_state]
    if bad:
        problems.append(
            f"observe={observe} has indices {bad} outside the {n_state} state components"
        )
    spellings: dict[int, list[int]] = {}
    for i in observe:
        if -n_state <= i < n_state:
            spellings.setdefault(i % n_state, []).append(i)
    for component, given in spellings.items():
        if len(given) > 1:
            spelt = ""
            if len(set(given)) > 1:
                as_given = " and ".join(map(str, given))
                spelt = f", as {as_given} (a negative index counts from the end)"
            problems.append(
                f"observe={observe} gives component {component} {_times(len(given))}{spelt}; "
                "each component enters the loss once: drop the repeat"
            )
    return problems


def _times(n: int) -> str:
    """``twice``, ``3 times``."""
    return "twice" if n == 2 else f"{n} times"


def system_columns(data: Trajectories, system: Any, whose: str) -> list[int] | None:
    """The columns of ``data.states`` in ``system``'s order, where the data name their states
    (``state_names``, else their own system's): ``None`` for unnamed data, taken by position,
    and for data named in that order already. ``whose`` names the data in the message.

    Raises
    ------
    physode.InvalidArgumentError
        Where the data's state names are not ``system``'s.

    Examples
    --------
    >>> import physode
    >>> data = Trajectories([0.0, 1.0], [[1.0, 2.0], [1.5, 2.5]], state_names=["y", "x"])
    >>> system_columns(data, physode.systems.load("lotka_volterra"), "the data")
    [1, 0]
    """
    names = data.state_names or getattr(data.system, "state_names", None)
    if names is None or system is None:
        return None
    return state_order(tuple(names), system, whose, "the true system")


def _first_observed(seen: torch.Tensor) -> torch.Tensor:
    """The first time index of each row of ``seen`` (N, P) that holds an observation."""
    return seen.int().argmax(1)


def _is_pair(value: Any) -> bool:
    return isinstance(value, tuple | list) and len(value) == 2


def _missing_problems(t: torch.Tensor, states: torch.Tensor) -> list[str]:
    """What makes the missing values (``NaN``) of ``states`` (N, P, n) unusable: a state
    component observed nowhere, a trajectory with no observation, or one whose first observed
    state is incomplete (a rollout starts from it)."""
    missing = torch.isnan(states)
    if not bool(missing.any()):
        return []
    problems = []
    never = missing.all(dim=(0, 1)).nonzero().flatten().tolist()
    if never:
        problems.append(
            f"state components {never} are never observed (NaN in every trajectory): a model "
            "cannot be fitted to them, so leave them out of the states"
        )
        return problems
    empty = missing.all(dim=(1, 2)).nonzero().flatten().tolist()
    if empty:
        problems.append(
            f"trajectories {empty[:10]}{' ...' * (len(empty) > 10)} have no observed value "
            "(NaN throughout): leave them out"
        )
    seen = ~missing.all(-1)  # (N, P): some component observed
    first = _first_observed(seen)
    rows = torch.arange(states.shape[0])
    partial = (missing[rows, first].any(-1) & seen.any(1)).nonzero().flatten().tolist()
    if partial:
        i = partial[0]
        j = int(first[i])
        gaps = missing[i, j].nonzero().flatten().tolist()
        problems.append(
            f"trajectories {partial[:10]}{' ...' * (len(partial) > 10)} have no observed "
            f"initial state: trajectory {i} is first observed at time index {j} "
            f"(t={float(t[j]):g}) but misses components {gaps} there; a rollout starts from "
            "a whole state, so leave out the incomplete first samples (or fill them in)"
        )
    return problems


def non_finite(
    t: torch.Tensor,
    states: torch.Tensor,
    trajectories: Sequence[int] | None = None,
    missing_allowed: bool = False,
) -> list[str]:
    """Describe the NaN and infinite values of ``t`` and ``states`` (N, P, n), one problem each.

    A non-finite state would drive the parameters to NaN in training, or the validation loss to
    NaN every epoch, so the data are refused with where they break. ``trajectories`` names the
    rows of ``states`` (default ``0 .. N-1``), e.g. their numbers in a file. With
    ``missing_allowed`` a ``NaN`` state is a missing observation, and only infinite states
    are described (a NaN time still is).

    Examples
    --------
    >>> states = torch.zeros(3, 4, 2)
    >>> states[2, 1, 0] = float("nan")
    >>> non_finite(torch.arange(4.0), states)
    ['states hold 1 non-finite value (NaN or inf), first in trajectory 2 at time index 1 (t=1)']
    """
    problems = []
    bad_t = (~torch.isfinite(t)).nonzero().flatten().tolist()
    if bad_t:
        problems.append(f"t holds non-finite times at indices {bad_t[:10]}")
    bad = states.isinf() if missing_allowed else ~torch.isfinite(states)
    what = "infinite value" if missing_allowed else "non-finite value"
    count = int(bad.sum())
    if count:
        rows = bad.any(dim=(1, 2)).nonzero().flatten().tolist()
        labels = rows if trajectories is None else [int(trajectories[r]) for r in rows]
        j = int(bad[rows[0]].any(dim=1).nonzero()[0])  # the first bad time of the first row
        problem = (
            f"states hold {count} {what}{'s' if count > 1 else ''}"
            f"{'' if missing_allowed else ' (NaN or inf)'}, "
            f"first in trajectory {labels[0]} at time index {j} (t={float(t[j]):g})"
        )
        if len(labels) > 1:
            problem += f"; affected: trajectories {labels[:10]}" + " ..." * (len(labels) > 10)
        problems.append(problem)
    return problems


def trajectories_of(
    stored: Any, index: np.ndarray, split: str, noisy: bool = False
) -> Trajectories:
    """Read trajectories ``index`` of a ``physode.data.load`` result."""
    if len(index) == 0:
        raise InvalidArgumentError(
            f"the {split!r} split of {stored.path} is empty (0 trajectories); simulate with a "
            "split that gives it trajectories, e.g. --split 0.8,0.1,0.1"
        )
    if noisy and stored.noisy_states is None:
        raise InvalidArgumentError(
            f"noisy=True but {stored.path} holds no noisy states; simulate it with --noise STD, "
            "or train on its clean states (noisy=False)"
        )
    source = stored.noisy_states if noisy else stored.states
    index = np.sort(index)
    t, states = torch.as_tensor(stored.t), torch.as_tensor(source[index])  # read once
    problems = non_finite(t, states, index)
    if problems:
        kind = "noisy states" if noisy else "states"
        raise InvalidArgumentError(
            f"the {split!r} split of {stored.path} is not finite ({kind}, trajectories numbered "
            f"as in the file): {'; '.join(problems)}; leave those trajectories out (flagged "
            "ones are, unless a TrajectoryDataset has exclude_flagged=False) or repair the file"
        )
    return Trajectories(t, states, torch.as_tensor(stored.params[index]), stored.system)


def _refuse_all_flagged(stored: Any, split: str) -> None:
    """Raise when ``split`` holds trajectories but every one of them is flagged; an empty split
    is left to :func:`trajectories_of`."""
    from physode.data._store import FLAG_DRIFT, FLAG_NOT_FINITE, FLAG_SOLVER_FAILED

    flags = stored.flags[stored.split_indices(split)]
    if len(flags) == 0:
        return
    failed = int(np.count_nonzero(flags & FLAG_SOLVER_FAILED))
    drifted = int(np.count_nonzero(flags & FLAG_DRIFT))
    not_finite = int(np.count_nonzero(flags & FLAG_NOT_FINITE))
    stored_inf = (
        f", {not_finite} with values stored as inf or NaN (beyond the range of float32: "
        "simulate with --dtype float64)"
        if not_finite
        else ""
    )
    raise InvalidArgumentError(
        f"every trajectory of the {split!r} split of {stored.path} is flagged and left out "
        f"({len(flags)} trajectories: {failed} failed solves, {drifted} invariant drifts beyond "
        f"the simulation's drift threshold{stored_inf}); `physode check` on the file shows which "
        "invariant drifts (an invariant the system does not conserve flags every trajectory) "
        "and which solves failed. Correct the system and simulate again, or train on "
        f"physode.data.TrajectoryDataset({str(stored.path)!r}, split={split!r}, "
        "exclude_flagged=False)"
    )


def usable_trajectories(stored: Any, split: str) -> np.ndarray:
    """Indices of a stored split without the flagged trajectories (a failed solve, invariant
    drift, values stored as inf or NaN, or any flag bit a later physode adds)."""
    index = stored.split_indices(split)
    return index[stored.flags[index] == 0]


def stored_path(source: Any) -> Any:
    """``source``, or its path where it is a data set that ``physode.data.load`` opened (a
    :class:`physode.data.TrajectoryFile`), which serves as its path does."""
    import physode.data

    return source.path if isinstance(source, physode.data.TrajectoryFile) else source


def as_trajectories(source: Any, split: str | None = None, noisy: bool = False) -> Trajectories:
    """Turn any supported data source into :class:`Trajectories`.

    Parameters
    ----------
    source : Trajectories, str, Path, TrajectoryFile, TrajectoryDataset, TimeSeries, or tuple
        A :class:`physode.data.TimeSeries` (``load_csv``, ``load_lynx_hare``: one trajectory,
        its states named by its ``state_names``); an HDF5 data set written by
        ``physode simulate`` (a path, read with
        ``physode.data.load``, or the data set ``physode.data.load`` opened, taken as its path;
        trajectories flagged for a failed solve, drift or values stored as inf are left out), a
        ``TrajectoryDataset`` (its trajectories, clean or noisy as it says; the trainer cuts the
        windows), or a tuple of tensors, NumPy arrays or lists: ``t`` of shape ``(P,)`` and
        ``ys`` of shape
        ``(N, P, n)`` or ``(P, n)``, as for :class:`Trajectories`.
    split : str, optional
        For an HDF5 path: the stored split to read (``"train"``, ``"val"``, ``"test"``); ``None``
        reads them all. Other sources ignore it: they hold their own trajectories.
    noisy : bool
        For an HDF5 path or a ``TrajectoryDataset``: read the noisy states (``/noisy_states``)
        instead of the clean ones (a dataset made with ``noisy=True`` reads them anyway).
        Tensors are used as given.

    Returns
    -------
    Trajectories

    Raises
    ------
    physode.InvalidArgumentError
        For an unsupported source, an empty data set or badly shaped tensors.
    physode.DataFormatError
        For a file that is not a readable data set, and for a ``TrajectoryDataset`` whose path
        now holds another data set than the one it was made from (simulated again).

    Examples
    --------
    >>> data = as_trajectories((torch.linspace(0, 1, 5), torch.zeros(5, 2)))
    >>> data.states.shape
    torch.Size([1, 5, 2])
    """
    if isinstance(source, Trajectories):
        return source
    if isinstance(source, tuple | list) and len(source) == 2:
        t, ys = source
        return Trajectories(t, ys)
    import physode.data

    if isinstance(source, physode.data.TimeSeries):
        return Trajectories(source.t, source.ys, state_names=source.state_names)

    source = stored_path(source)
    if isinstance(source, str | os.PathLike):
        stored = physode.data.load(source)
        split = split or "all"
        index = usable_trajectories(stored, split)
        if len(index) == 0:
            _refuse_all_flagged(stored, split)
        return trajectories_of(stored, index, split, noisy=noisy)
    if isinstance(source, physode.data.TrajectoryDataset):
        stored = source._load()  # refused where the path now holds another data set
        return trajectories_of(
            stored, source.trajectories, source.split, noisy=source.noisy or noisy
        )
    raise InvalidArgumentError(
        f"cannot read trajectories from a {type(source).__name__}; pass a path to an HDF5 data "
        "set, a physode.data.TrajectoryDataset, a physode.data.TimeSeries, "
        "physode.train.Trajectories, or tensors (t, ys)"
    )


@dataclass(frozen=True, slots=True)
class Window:
    """One training example: trajectory ``index``, points ``start .. start + length - 1``
    (``length``: the trainer's window length where ``None``; whole trajectories that start
    after the grid's first time are shorter).

    Without a ``__dict__`` of its own: the trainer holds one per window, millions for long
    trajectories cut at every point (a window took 110 bytes with one, 70 without)."""

    index: int
    start: int
    length: int | None = None


class Batch(list):
    """The windows of one batch, with ``pairs``: each window's trajectory and first point,
    ``(B, 2)`` int64 on the data's device, the indices that gather the batch's states there.
    A slice (a process's share of a batch) keeps its windows' pairs. Made by
    :func:`batches_on`.

    Examples
    --------
    >>> batch = batches_on([[Window(0, 3), Window(2, 0)]], "cpu")[0]
    >>> batch.pairs.tolist(), batch[1:].pairs.tolist(), batch[1]
    ([[0, 3], [2, 0]], [[2, 0]], Window(index=2, start=0, length=None))
    """

    def __init__(self, windows: Sequence[Window], pairs: torch.Tensor):
        super().__init__(windows)
        self.pairs = pairs

    def __getitem__(self, key):
        if isinstance(key, slice):
            return Batch(super().__getitem__(key), self.pairs[key])
        return super().__getitem__(key)


def batches_on(batches: Sequence[Sequence[Window]], device: Any) -> list[Batch]:
    """``batches`` as :class:`Batch`es, the pairs of all of them moved to ``device`` in one
    copy: indices built on the host for each batch would each be copied to a GPU when they
    index the data, and each such copy makes the host wait for the GPU."""
    if not batches:
        return []
    pairs = torch.tensor([(w.index, w.start) for b in batches for w in b], dtype=torch.int64)
    parts = pairs.reshape(-1, 2).to(device).split([len(b) for b in batches])
    return [Batch(b, p) for b, p in zip(batches, parts, strict=True)]


def windows_of(
    data: Trajectories, length: int | None, stride: int, observe: list[int] | None = None
) -> list[Window]:
    """The windows of ``data``: ``length`` points each (``None``: whole trajectories), starts
    ``stride`` apart.

    Complete data give every trajectory the windows of :func:`window_starts`. Where values are
    missing, a window starts only at a time where its trajectory is observed whole, and a
    window without an observation (of the components ``observe``) after its start is left
    out: a trajectory's windows start at its first such time, then at the first one at least
    ``stride`` points after the previous start, and at the last one (on a complete trajectory
    these are the starts of :func:`window_starts`). Whole trajectories start at each
    trajectory's first observed time and end at the grid's last.

    Examples
    --------
    >>> states = torch.ones(1, 8, 1)
    >>> states[0, [2, 5]] = float("nan")
    >>> [w.start for w in windows_of(Trajectories(torch.arange(8.0), states), 3, 2)]
    [0, 3, 4]
    """
    n, points = len(data), data.n_points
    if data.complete:
        if length is None:
            return [Window(i, 0) for i in range(n)]
        starts = window_starts(points, length, stride)
        return [Window(i, s) for i in range(n) for s in starts]
    observed = data.observed
    whole = observed.all(-1)  # (N, P): a window may start here
    seen = (observed if observe is None else observed[..., observe]).any(-1)
    # after[i, k]: observations of trajectory i at indices below k.
    after = torch.nn.functional.pad(seen.long().cumsum(1), (1, 0))
    windows = []
    if length is None:
        first = data.first_observed.tolist()
        for i, s in enumerate(first):
            if after[i, points] > after[i, s + 1]:
                windows.append(Window(i, s, None if s == 0 else points - s))
        return windows
    last = points - length
    starts = torch.arange(last + 1)
    usable = whole[:, : last + 1] & (after[:, starts + length] > after[:, starts + 1])
    for i in range(n):
        valid = usable[i].nonzero().flatten().tolist()
        chosen: list[int] = []
        for s in valid:
            if not chosen or s >= chosen[-1] + stride:
                chosen.append(s)
        if valid and chosen[-1] != valid[-1]:
            chosen.append(valid[-1])
        windows += [Window(i, s) for s in chosen]
    return windows


def window_starts(n_points: int, length: int, stride: int) -> list[int]:
    """Start indices of windows of ``length`` points, ``stride`` apart, ending with the last point
    when the stride does not land on it exactly.

    Examples
    --------
    >>> window_starts(10, 4, 3)
    [0, 3, 6]
    >>> window_starts(10, 4, 4)
    [0, 4, 6]
    """
    last = n_points - length
    starts = list(range(0, last + 1, stride))
    if starts[-1] != last:
        starts.append(last)
    return starts


def uniform_grid(t: torch.Tensor, rtol: float = 1e-9) -> bool:
    """Whether the sample times are equally spaced (to ``rtol`` of the spacing).

    The spacings of times stored in ``t``'s dtype differ by the rounding of the times
    themselves, so a few units in the last place of the largest time are tolerated as well: an
    equally spaced grid stays one in float32.

    Examples
    --------
    >>> uniform_grid(torch.linspace(0, 5, 51, dtype=torch.float64).float())
    True
    >>> uniform_grid(torch.tensor([0.0, 1.0, 3.0]))
    False
    """
    dt = t[1:] - t[:-1]
    rounding = 8 * torch.finfo(t.dtype).eps * float(t.abs().max())
    return bool(((dt - dt[0]).abs() <= rtol * dt[0].abs() + rounding).all())


def _optional_split(source: Any, split: str, noisy: bool = False) -> Trajectories | None:
    """A stored split of the data set ``source`` (its path, or a ``TrajectoryDataset`` read from
    it), or ``None`` when it has no usable trajectories left.

    A dataset's split leaves out the trajectories the dataset trains on (all of them for
    ``split="all"``): held out means not trained on. Its file is refused where the path now
    holds another data set, as reading the dataset refuses it. Only an empty split is ``None``:
    a split that cannot be used (NaN states, say) is refused.
    """
    import physode.data

    dataset = source if isinstance(source, physode.data.TrajectoryDataset) else None
    # Opened and checked once.
    stored = physode.data.load(source) if dataset is None else dataset._load()
    index = usable_trajectories(stored, split)
    if dataset is not None:
        index = index[~np.isin(index, dataset.trajectories)]
    return None if len(index) == 0 else trajectories_of(stored, index, split, noisy=noisy)


def _split_off(
    data: Trajectories, fraction: float, seed: int
) -> tuple[Trajectories, Trajectories, list[int]]:
    """Hold out ``fraction`` of the trajectories for validation, counted as a data set's splits
    are (:func:`physode.data.simulation.split_counts`): from two trajectories on, both parts
    get at least one. Returns the training part, the validation part and the latter's indices."""
    from physode.data.simulation import split_counts

    n = len(data)
    n_train, n_val = split_counts(n, (1 - fraction, fraction))
    if n_train == 0 or n_val == 0:
        raise InvalidArgumentError(
            f"val_fraction={fraction} needs at least 2 trajectories, one to train on and one to "
            f"validate on, and the data hold {n}; pass val_data=... or use more trajectories"
        )
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    held_out = order[:n_val].sort().values
    return data.subset(order[n_val:].sort().values), data.subset(held_out), held_out.tolist()
