"""Trajectories for training: one container for every data source, and its windows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from physode._errors import InvalidArgumentError


@dataclass
class Trajectories:
    """Trajectories sampled on one shared time grid.

    Parameters
    ----------
    t : Tensor, NumPy array or list, shape (P,)
        Strictly increasing, finite sample times (integer times, e.g. years, are taken as they
        are and cast to the states' dtype).
    states : Tensor, NumPy array or nested list, shape (N, P, n) or (P, n)
        ``states[i, j]`` is trajectory ``i`` at ``t[j]``; finite. Tensors and arrays keep their
        dtype (a float32 array trains in float32 unless ``TrainConfig.dtype`` says otherwise);
        Python lists of numbers are read as float64, like the Python floats they hold.
    params : Tensor, shape (N, n_params), optional
        The physical parameters each trajectory was generated with.
    system : physode.System, optional
        The system that generated them (for ground truth beyond the horizon and conservation).

    Examples
    --------
    >>> data = Trajectories(torch.linspace(0, 1, 11), torch.zeros(3, 11, 2))
    >>> len(data), data.n_points, data.n_state
    (3, 11, 2)
    """

    t: torch.Tensor
    states: torch.Tensor
    params: torch.Tensor | None = None
    system: Any = None

    def __post_init__(self) -> None:
        t = _as_tensor("t", self.t)
        states = _as_tensor("states", self.states)
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
        found = [] if problems else non_finite(t, states)
        if found:
            problems += [*found, "leave those trajectories or times out, or repair them"]
        if not problems and not bool((t[1:] > t[:-1]).all()):
            problems.append("t must be strictly increasing")
        if problems:
            raise InvalidArgumentError("bad trajectories: " + "; ".join(problems))
        self.t = t.to(states.dtype)
        self.states = states
        if self.params is not None:
            self.params = torch.as_tensor(self.params, dtype=states.dtype)

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
        """The trajectories at ``index`` (same grid, system and parameters)."""
        index = torch.as_tensor(index, dtype=torch.long)
        params = None if self.params is None else self.params[index]
        return Trajectories(self.t, self.states[index], params, self.system)

    def until(self, t_end: float) -> Trajectories:
        """The same trajectories cut to the times ``t <= t_end``."""
        keep = self.t <= t_end
        return Trajectories(self.t[keep], self.states[:, keep], self.params, self.system)

    def to(self, dtype: torch.dtype, device: torch.device | str | None = None) -> Trajectories:
        """The same trajectories in another floating-point dtype, and on ``device`` if given."""
        params = None if self.params is None else self.params.to(device, dtype)
        return Trajectories(
            self.t.to(device, dtype), self.states.to(device, dtype), params, self.system
        )


def _as_tensor(name: str, value: Any) -> torch.Tensor:
    """``value`` as a tensor: tensors and NumPy arrays keep their dtype, and anything else (lists
    of Python numbers) is read as float64, the precision of a Python float.

    Raises
    ------
    physode.InvalidArgumentError
        If ``value`` is not a rectangular array of real numbers.
    """
    if isinstance(value, torch.Tensor | np.ndarray):
        return torch.as_tensor(value)
    try:
        return torch.as_tensor(value, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise InvalidArgumentError(
            f"{name} must be a tensor, a NumPy array or a rectangular list of real numbers, got "
            f"{type(value).__name__} ({str(exc).splitlines()[0]})"
        ) from None


def non_finite(
    t: torch.Tensor, states: torch.Tensor, trajectories: Sequence[int] | None = None
) -> list[str]:
    """Describe the NaN and infinite values of ``t`` and ``states`` (N, P, n), one problem each.

    A non-finite state would drive the parameters to NaN in training, or the validation loss to
    NaN every epoch, so the data are refused with where they break. ``trajectories`` names the
    rows of ``states`` (default ``0 .. N-1``), e.g. their numbers in a file.

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
    bad = ~torch.isfinite(states)
    count = int(bad.sum())
    if count:
        rows = bad.any(dim=(1, 2)).nonzero().flatten().tolist()
        labels = rows if trajectories is None else [int(trajectories[r]) for r in rows]
        j = int(bad[rows[0]].any(dim=1).nonzero()[0])  # the first bad time of the first row
        problem = (
            f"states hold {count} non-finite value{'s' if count > 1 else ''} (NaN or inf), "
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


def as_trajectories(source: Any, split: str | None = None, noisy: bool = False) -> Trajectories:
    """Turn any supported data source into :class:`Trajectories`.

    Parameters
    ----------
    source : Trajectories, str, Path, physode.data.TrajectoryDataset, or tuple (t, ys)
        An HDF5 data set written by ``physode simulate`` (a path, read with
        ``physode.data.load``; trajectories flagged for a failed solve, drift or values stored
        as inf are left out), a
        ``TrajectoryDataset`` (its trajectories, clean or noisy as it says; the trainer cuts the
        windows), or tensors, NumPy arrays or lists: ``t`` of shape ``(P,)`` and ``ys`` of shape
        ``(N, P, n)`` or ``(P, n)``, as for :class:`Trajectories`.
    split : str, optional
        For an HDF5 path: the stored split to read (``"train"``, ``"val"``, ``"test"``); ``None``
        reads them all.
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

    if isinstance(source, str | Path):
        stored = physode.data.load(source)
        split = split or "all"
        index = usable_trajectories(stored, split)
        if len(index) == 0:
            _refuse_all_flagged(stored, split)
        return trajectories_of(stored, index, split, noisy=noisy)
    if isinstance(source, physode.data.TrajectoryDataset):
        stored = physode.data.load(source.path)
        return trajectories_of(
            stored, source.trajectories, source.split, noisy=source.noisy or noisy
        )
    raise InvalidArgumentError(
        f"cannot train on a {type(source).__name__}; pass a path to an HDF5 data set, a "
        "physode.data.TrajectoryDataset, physode.train.Trajectories, or tensors (t, ys)"
    )


@dataclass(frozen=True)
class Window:
    """One training example: trajectory ``index``, points ``start .. start + length - 1``."""

    index: int
    start: int


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
