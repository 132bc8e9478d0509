"""Poincaré sections and stroboscopic maps: the states where trajectories cross a surface."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from physode._checks import is_finite_real, is_int
from physode._errors import InvalidArgumentError
from physode._repr import never_raising
from physode.diagnostics._conservation import (
    _from_data_set,
    _is_data_set,
    _times,
    new_figure,
    save_figure,
    split_parameters,
)
from physode.solvers._roots import _root

_INTERPOLATIONS = ("hermite", "linear")


class PoincareSection:
    """The points where trajectories cross a surface (or their states at a train of times).

    All crossings of all trajectories are held together, ordered by trajectory and then by time,
    so that one array of each kind plots at once; ``trajectory`` says whose each point is.

    Attributes
    ----------
    t : torch.Tensor
        The crossing times, shape (n_points,).
    states : torch.Tensor
        The states there, shape (n_points, n_state).
    trajectory : torch.Tensor
        int64, shape (n_points,): the trajectory each point belongs to, an index into the
        trajectories flattened (``ys.reshape(n_times, -1, n_state)[:, i]``, a data set's row).
    batch_shape : tuple of int
        The trajectories' batch shape.
    state_names : list of str
        The names of the state components (``y[0]``, ``y[1]``, ... without a system).
    system_name : str or None
    surface : str
        What was crossed, in words (``"theta1 = 0, upward"``, ``"t = 0 + 5.236 k"``).
    interpolation : str
        ``"hermite"`` (cubic, from the states and their derivatives) or ``"linear"``.
    plot_axes : tuple of str
        The components :meth:`plot` draws by default: a coordinate and its velocity (or
        momentum) that the surface leaves free, e.g. ``("theta2", "theta2_dot")`` for the
        double pendulum's ``theta1 = 0``.
    """

    def __init__(
        self,
        t: torch.Tensor,
        states: torch.Tensor,
        trajectory: torch.Tensor,
        batch_shape: tuple[int, ...],
        state_names: list[str],
        system_name: str | None,
        surface: str,
        interpolation: str,
        axes: tuple[int, int] = (0, 1),
    ):
        self.t = t
        self.states = states
        self.trajectory = trajectory
        self.batch_shape = batch_shape
        self.state_names = list(state_names)
        self.system_name = system_name
        self.surface = surface
        self.interpolation = interpolation
        self.plot_axes = (self.state_names[axes[0]], self.state_names[axes[1]])

    def __len__(self) -> int:
        return self.t.shape[0]

    @property
    def counts(self) -> torch.Tensor:
        """The number of points of each trajectory, int64, shape (n_trajectories,)."""
        return torch.bincount(self.trajectory.cpu(), minlength=math.prod(self.batch_shape))

    def __getitem__(self, name: str) -> torch.Tensor:
        """One state component at every point, by name: ``section["theta2"]``, (n_points,)."""
        return self.states[:, self._index(name, f"section[{name!r}]: {name!r}")]

    def per_trajectory(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``(t, states)`` of each trajectory in turn, shapes (n_i,) and (n_i, n_state).

        A trajectory that never crosses the surface has empty tensors.
        """
        sizes = self.counts.tolist()
        return list(zip(self.t.split(sizes), self.states.split(sizes), strict=True))

    def _index(self, name: Any, shown: str) -> int:
        """The index of the state component ``name`` (a name or an index); ``shown`` is how
        the error spells what was given."""
        if is_int(name, least=0) and name < len(self.state_names):
            return int(name)
        if isinstance(name, str) and name in self.state_names:
            return self.state_names.index(name)
        raise InvalidArgumentError(
            f"{shown} is not a state component; state components: "
            f"{', '.join(self.state_names)} (or their indices 0 to {len(self.state_names) - 1})"
        )

    @never_raising
    def __repr__(self) -> str:
        return (
            f"PoincareSection({self.system_name!r}, {self.surface!r}, points={len(self)}, "
            f"trajectories={math.prod(self.batch_shape)}, interpolation={self.interpolation!r})"
        )

    def plot(
        self,
        path: str | Path,
        x: str | int | None = None,
        y: str | int | None = None,
        max_trajectories: int = 20,
    ) -> Path:
        """Draw the points of two state components, one colour per trajectory, to an image file.

        Parameters
        ----------
        path : str or Path
            Output file; the format follows the suffix (``.png``, ``.pdf``, ``.svg``).
        x, y : str or int, optional
            The state components on the axes, by name or index; by default ``plot_axes``: a
            coordinate and its velocity (or momentum), the first pair a named surface leaves
            free (for ``theta1 = 0`` of the double pendulum: ``theta2`` and ``theta2_dot``);
            for a system without coordinates, the first two components the surface leaves.
        max_trajectories : int
            At most this many trajectories are drawn, the first ones.

        Returns
        -------
        Path
            The file written.

        Raises
        ------
        physode.InvalidArgumentError
            If ``path`` does not end in an image format or its folder does not exist, ``x`` or
            ``y`` is not a state component, or ``max_trajectories`` is not an integer >= 1.

        Examples
        --------
        >>> section.plot("section.png", x="theta2", y="theta2_dot")  # doctest: +SKIP
        PosixPath('section.png')
        """
        path, fig = new_figure(path, max_trajectories, "trajectories drawn", figsize=(6, 5))
        x = self.plot_axes[0] if x is None else x
        y = self.plot_axes[1] if y is None else y
        i, j = self._index(x, f"x={x!r}"), self._index(y, f"y={y!r}")
        ax = fig.add_subplot()
        points = self.states.detach().cpu().double()
        owner = self.trajectory.cpu()
        n_drawn = min(max_trajectories, math.prod(self.batch_shape))
        for k in range(n_drawn):
            mine = points[owner == k]
            ax.scatter(mine[:, i].numpy(), mine[:, j].numpy(), s=6, color=f"C{k % 10}",
                       linewidths=0, label=f"traj {k}")
        if 0 < n_drawn <= 8:
            ax.legend(fontsize=7, markerscale=2, loc="best")
        ax.set_xlabel(self.state_names[i])
        ax.set_ylabel(self.state_names[j])
        name = "" if self.system_name is None else f"{self.system_name}, "
        fig.suptitle(f"Poincaré section: {name}{self.surface}")
        return save_figure(fig, path)


def poincare_section(
    system,
    ys: torch.Tensor,
    t: torch.Tensor | None = None,
    *,
    surface: str | tuple[str, float] | Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    direction: int = 1,
    p: torch.Tensor | None = None,
    interpolation: str | None = None,
) -> PoincareSection:
    """The times and states where trajectories cross a surface ``g(t, y) = 0``.

    Between two samples the trajectory is interpolated, and each crossing is placed on that
    interpolant by the Illinois method (a bracketing secant method), on all crossings of all
    trajectories at once. With a system the interpolant is the cubic Hermite polynomial through
    the two states and their derivatives ``system.rhs(t, y, p)``: its error falls like ``h**4``
    with the sampling step ``h``, so a solve sampled at ``h = 0.1`` gives crossings to about
    1e-6 (linear interpolation: 1e-3). Without a system it is linear between the two states.

    What is seen between two samples depends on the interpolation and the surface:

    * Hermite, a named surface: every crossing of the cubic, also two (there and back) between
      samples where ``g`` has one sign at both, as when a coarsely sampled coordinate peaks
      just above the surface's value between two samples, or three. The cubic is
      cut at its extrema (the roots of its derivative, a quadratic) into pieces on which it is
      monotone, and each piece that changes sign holds one crossing.
    * Hermite, a callable surface: ``g`` is also evaluated on the cubic at three evenly spaced
      points inside every interval (one call of ``g`` per block of intervals, below), and a
      crossing is found wherever it changes sign from one of these points to the next. Two
      crossings within one quarter of a sampling interval can still go unseen.
    * Linear: only where ``g`` has opposite signs at the two samples; a pair between two
      samples is never seen. Sample more finely where that matters.

    A crossing counts where ``g`` goes from below zero to zero or above (upward) or back
    (downward). A trajectory that starts on the surface does not count its start, and samples
    where ``g`` is not a number (a failed solve's tail in a data set) cross nothing.

    ``g`` is evaluated once at every sample. The Hermite search between samples then takes the
    sampling intervals in blocks of about two million states (intervals x trajectories x
    components x 4), calling ``system.rhs`` at each block's samples and a callable ``g`` at its
    interior points: what it holds beyond ``ys`` stays some tens of MiB however large the
    data set.

    Parameters
    ----------
    system : physode.System or None
        The system the trajectories follow: its state names name the surface and the plot's
        axes, its ``rhs`` gives the derivatives of the Hermite interpolant. None for
        trajectories of anything else; ``surface`` must then be a callable, and the
        interpolation is linear.
    ys : torch.Tensor or physode.data.TrajectoryFile
        Trajectories shaped ``(n_times, ..., n_state)``, time first, as ``physode.odeint``
        returns them; a trailing size of ``n_state + n_params`` (parameters carried in the
        state) is accepted. Or a data set opened with :func:`physode.data.load` (its states,
        times and parameters, trajectory ``i`` its row ``i``).
    t : torch.Tensor
        The output times, increasing, shape (n_times,); a data set's own when ``ys`` is one.
    surface : str, (str, float) or callable
        A state component's name for the surface where it is zero (``"theta1"``), a pair
        ``(name, value)`` for where it equals ``value``, or a function ``g(t, y)`` whose zero
        level is the surface: ``y`` has shape ``(..., n_state)``, ``t`` the shape of
        ``y[..., 0]``, and it returns a tensor of that shape. It is called on the samples, on
        points between them and at the crossings, with other leading shapes: index a
        component as ``y[..., i]``.
    direction : int
        ``1``: crossings where ``g`` increases; ``-1``: where it decreases; ``0``: both.
    p : torch.Tensor, optional
        Parameters for ``system.rhs``, ``(n_params,)`` or one row per trajectory; when
        omitted, a data set's stored parameters, else the system's defaults. For a model's
        rollout pass the model's (``model.field.parameter_vector().detach()``).
    interpolation : {"hermite", "linear"}, optional
        ``"hermite"`` by default with a system, ``"linear"`` without. Choose ``"linear"`` for
        trajectories that do not follow ``system.rhs``, e.g. a hybrid model's rollout or
        measured data.

    Returns
    -------
    PoincareSection
        ``.t``, ``.states`` and ``.trajectory``: every crossing, by trajectory then time.
        The results carry no gradient.

    Raises
    ------
    physode.InvalidArgumentError
        For a surface that names no state component (the message lists them), a direction
        other than 1, -1 or 0, ``ys`` without times or with a state size that does not fit the
        system, times that do not increase, or ``p`` of the wrong shape.

    Examples
    --------
    A harmonic oscillator from ``q = 1``, ``p = 0`` crosses ``q = 0`` upward at
    ``t = 3 pi / 2`` and ``3 pi / 2 + 2 pi``, with momentum 1:

    >>> import physode, torch
    >>> osc = physode.systems.load("harmonic_oscillator")
    >>> t = torch.linspace(0, 12, 41, dtype=torch.float64)
    >>> ys = physode.odeint(osc.vector_field(), osc.initial_state(), t, method="dop853",
    ...                     rtol=1e-12, atol=1e-12)
    >>> section = physode.diagnostics.poincare_section(osc, ys, t, surface="q")
    >>> section.t / torch.pi
    tensor([1.5000, 3.5000], dtype=torch.float64)
    >>> section["p"]
    tensor([1.0000, 1.0000], dtype=torch.float64)

    Sampled every 0.5, ``q = cos t`` is above 0.99 from ``2 pi - 0.1415`` to ``2 pi + 0.1415``,
    between the samples at 6.0 and 6.5 (both below 0.99). The cubic finds both crossings, to
    about 1e-3 at this sampling; linear interpolation sees only the first, at ``t = 0.1415``:

    >>> t = torch.linspace(0, 7, 15, dtype=torch.float64)
    >>> ys = torch.stack([torch.cos(t), -torch.sin(t)], dim=-1)
    >>> near_top = physode.diagnostics.poincare_section(osc, ys, t, surface=("q", 0.99),
    ...                                                 direction=0)
    >>> near_top.t
    tensor([0.1408, 6.1424, 6.4244], dtype=torch.float64)
    >>> len(physode.diagnostics.poincare_section(osc, ys, t, surface=("q", 0.99), direction=0,
    ...                                          interpolation="linear"))
    1
    """
    if not is_int(direction) or direction not in (1, -1, 0):
        raise InvalidArgumentError(
            f"direction={direction!r} must be 1 (crossings where the surface function "
            "increases), -1 (where it decreases) or 0 (both)"
        )
    ys, t, p, names = _trajectories(system, ys, t, p)
    method = _interpolation(system, interpolation)
    g, fixed, level, described = _surface(surface, system, names)
    n_times, batch_shape = ys.shape[0], tuple(ys.shape[1:-1])
    flat = ys.reshape(n_times, -1, ys.shape[-1])
    n_traj = flat.shape[1]
    times = t.reshape(n_times, 1).expand(n_times, n_traj)
    values = g(times, flat)
    hermite = system if method == "hermite" else None
    which, ends, lo, hi, g_lo, g_hi = _crossings(g, (fixed, level), flat, t, p, values,
                                                 hermite, direction)
    width = hi - lo
    u = _root(lambda u: g(ends.time(lo + u * width), ends.state(lo + u * width)), g_lo, g_hi)
    s = lo + u * width
    return PoincareSection(
        ends.time(s), ends.state(s), which, batch_shape, names,
        None if system is None else system.name,
        f"{described}, {({1: 'upward', -1: 'downward', 0: 'both ways'})[direction]}", method,
        _default_axes(system, len(names), fixed),
    )


def stroboscopic(
    system,
    ys: torch.Tensor,
    t: torch.Tensor | None = None,
    *,
    period: float | torch.Tensor,
    phase: float = 0.0,
    p: torch.Tensor | None = None,
    interpolation: str | None = None,
) -> PoincareSection:
    """The states at ``t0 + phase + k * period``: the stroboscopic map of a forced system.

    For a system forced with period ``T`` (duffing: ``T = 2 pi / omega``), the states once per
    period are a Poincaré section of the extended phase space ``(y, t mod T)``. Every time
    ``t0 + phase + k T`` (``k`` any integer) within ``[t0, t_end]`` is taken, ``t0`` and
    ``t_end`` being the first and last output times, and the trajectory interpolated there as
    :func:`poincare_section` does (cubic Hermite with a system, linear without). Points where a
    trajectory holds no number (a failed solve's tail in a data set) are left out.

    Parameters
    ----------
    system : physode.System or None
        As for :func:`poincare_section`.
    ys, t, p, interpolation
        As for :func:`poincare_section`.
    period : float or torch.Tensor
        The period, > 0: one for all trajectories, or one per trajectory (the batch shape),
        e.g. ``2 * math.pi / data.params[:, 4]`` for a data set of duffing oscillators whose
        ``omega`` varies.
    phase : float
        Where in the period to sample, as a time after ``t0``.

    Returns
    -------
    PoincareSection

    Raises
    ------
    physode.InvalidArgumentError
        For a period that is not > 0 or has the wrong shape, a phase that is not a finite
        number, and as :func:`poincare_section` for ``ys``, ``t`` and ``p``.

    Examples
    --------
    >>> import math, physode, torch
    >>> duffing = physode.systems.load("duffing")
    >>> period = 2 * math.pi / duffing.parameters["omega"]
    >>> t = torch.linspace(0, 20 * period, 801, dtype=torch.float64)
    >>> ys = physode.odeint(duffing.vector_field(), duffing.initial_state(), t, rtol=1e-8)
    >>> strobe = physode.diagnostics.stroboscopic(duffing, ys, t, period=period)
    >>> strobe.states.shape
    torch.Size([21, 2])
    """
    ys, t, p, names = _trajectories(system, ys, t, p)
    method = _interpolation(system, interpolation)
    n_times, batch_shape = ys.shape[0], tuple(ys.shape[1:-1])
    flat = ys.reshape(n_times, -1, ys.shape[-1])
    n_traj = flat.shape[1]
    if not is_finite_real(phase):
        raise InvalidArgumentError(
            f"phase={phase!r} must be a finite number, the time after t0 of the first sample "
            "(e.g. phase=0.0)"
        )
    periods = _periods(period, batch_shape).to(t)
    shown = f"{float(periods[0]):.6g}" if periods.numel() == 1 else "T_i"
    periods = periods.expand(n_traj)
    t0, t_end = t[0], t[-1]
    # The grid's last time may be 20 periods to within rounding: take it when that close.
    slack = 8 * torch.finfo(t.dtype).eps * torch.maximum(t0.abs(), t_end.abs())
    first = torch.ceil((-phase - slack) / periods)
    last = torch.floor((t_end - t0 - phase + slack) / periods)
    n_each = (last - first + 1).clamp_min(0).long()
    k = torch.arange(int(n_each.max()) if n_traj else 0, device=t.device)
    which, index = torch.nonzero(k < n_each.unsqueeze(1), as_tuple=True)
    when = (t0 + phase + (first[which] + index) * periods[which]).clamp(t0, t_end)
    interval = (torch.searchsorted(t, when, right=True) - 1).clamp(0, n_times - 2)
    ends = _Ends.at(flat, t, p, which, interval, system if method == "hermite" else None)
    s = (when - t[interval]) / (t[interval + 1] - t[interval])
    states = ends.state(s)
    finite = torch.isfinite(states).all(dim=-1)
    return PoincareSection(
        when[finite], states[finite], which[finite], batch_shape, names,
        None if system is None else system.name,
        f"t = {float(t0) + phase:.6g} + {shown} k", method, _default_axes(system, len(names)),
    )


class _Ends:
    """Trajectories on sampling intervals ``[t_a, t_b]`` and their interpolants there: cubic
    Hermite through the states ``y_a``, ``y_b`` and derivatives ``f_a``, ``f_b``, or linear
    where there are no derivatives. The times broadcast against ``y_a[..., 0]``."""

    def __init__(self, t_a, t_b, y_a, y_b, f_a=None, f_b=None):
        self.t_a, self.t_b = t_a, t_b
        self.h = (t_b - t_a).unsqueeze(-1)
        self.y_a, self.y_b, self.f_a, self.f_b = y_a, y_b, f_a, f_b

    @classmethod
    def at(cls, flat, t, p, which, interval, system, derivatives=None):
        """The intervals ``[t[j], t[j + 1]]`` of trajectory ``i`` for each pair ``(which,
        interval) = (i, j)``: Hermite with a system (its derivatives from ``derivatives`` at
        every sample, else from ``system.rhs`` at these ends), linear without."""
        t_a, t_b = t[interval], t[interval + 1]
        y_a, y_b = flat[interval, which], flat[interval + 1, which]
        if system is None:
            return cls(t_a, t_b, y_a, y_b)
        if derivatives is not None:
            return cls(t_a, t_b, y_a, y_b, derivatives[interval, which],
                       derivatives[interval + 1, which])
        rows = None if p is None else p.expand(flat.shape[1], p.shape[-1])[which]
        return cls(t_a, t_b, y_a, y_b, system.rhs(t_a.unsqueeze(-1), y_a, rows),
                   system.rhs(t_b.unsqueeze(-1), y_b, rows))

    @classmethod
    def joined(cls, blocks: list[_Ends], order: torch.Tensor) -> _Ends:
        """The intervals of ``blocks`` (each of one dimension of intervals) in one, in
        ``order`` (indices into their concatenation)."""
        def cat(name):
            parts = [getattr(block, name) for block in blocks]
            return None if parts[0] is None else torch.cat(parts)[order]

        return cls(*(cat(name) for name in ("t_a", "t_b", "y_a", "y_b", "f_a", "f_b")))

    def time(self, s: torch.Tensor) -> torch.Tensor:
        return self.t_a + s * (self.t_b - self.t_a)

    def state(self, s: torch.Tensor) -> torch.Tensor:
        """The interpolant at the fractions ``s`` of the intervals: at ``s = 0`` and ``s = 1``
        the sample itself, also where the other end holds no number (the last state before a
        failed solve's NaN tail), which the formulas would weigh by 0 into NaN."""
        s = s.unsqueeze(-1)
        if self.f_a is None:
            value = self.y_a + s * (self.y_b - self.y_a)
        else:
            # The cubic Hermite basis on [0, 1].
            s2, r = s * s, 1 - s
            r2 = r * r
            value = ((1 + 2 * s) * r2 * self.y_a + (3 - 2 * s) * s2 * self.y_b
                     + self.h * (s * r2 * self.f_a - s2 * r * self.f_b))
        return torch.where(s == 0, self.y_a, torch.where(s == 1, self.y_b, value))


#: Interior points per sampling interval at which a callable surface is evaluated on the cubic
#: Hermite interpolant, so that a crossing there and back between two samples is seen when the
#: two crossings are at least a quarter of the interval apart.
_INTERIOR_POINTS = 3

#: The Hermite search between samples takes the sampling intervals in blocks of about this many
#: states (intervals x trajectories x components x (interior points + 1)), so that what it
#: holds beyond the trajectories themselves (``system.rhs`` at the samples, the cubic at the
#: interior points, their temporaries) stays bounded on a large data set: some 16 MiB of
#: float64 per block and array, whatever the data set's size.
_BLOCK_STATES = 2**21


def _crossings(g, named, flat, t, p, values, system, direction):
    """``(which, ends, lo, hi, g_lo, g_hi)``: every crossing of the surface in ``direction``
    between two samples, ordered by trajectory and then by time. ``which`` is its trajectory,
    ``ends`` the :class:`_Ends` of its sampling interval, ``[lo, hi]`` the piece of that interval
    (fractions, see :func:`_pieces`) that holds it, and ``g_lo``, ``g_hi`` the surface function
    at the piece's ends: each 1-D, one entry per crossing.

    ``system`` gives the Hermite interpolant (None: linear, all intervals at once); its
    intervals are searched in blocks of at most :data:`_BLOCK_STATES` states."""
    n_times, n_traj, n_state = flat.shape
    block = n_times - 1
    if system is not None:
        block = max(1, _BLOCK_STATES // max(1, n_traj * n_state * (_INTERIOR_POINTS + 1)))
    found = []
    for first in range(0, n_times - 1, block):
        rows = slice(first, min(first + block, n_times - 1) + 1)  # the block's samples
        y, times = flat[rows], t[rows]
        derivatives = None if system is None else _derivatives(system, y, times, p)
        cuts, cut_values = _pieces(g, named, y, times, values[rows], derivatives)
        above = cut_values >= 0
        below = cut_values < 0  # neither, where g is NaN
        up = below[:-1] & above[1:]
        down = above[:-1] & below[1:]
        if first == 0:
            # A start on the surface is no crossing (zero counts as above: it would be one
            # downward).
            down[0, 0] &= cut_values[0, 0] != 0
        crossing = {1: up, -1: down, 0: up | down}[direction]
        # Trajectory first, so that nonzero lists crossings by trajectory, then by time: by
        # interval, then by the piece of the interval.
        which, interval, piece = torch.nonzero(crossing.permute(2, 1, 0), as_tuple=True)
        found.append((
            which, _Ends.at(y, times, p, which, interval, system, derivatives),
            cuts[piece, interval, which], cuts[piece + 1, interval, which],
            cut_values[piece, interval, which], cut_values[piece + 1, interval, which],
        ))  # fmt: skip
    if len(found) == 1:
        return found[0]
    # Each block's crossings are by trajectory, then time, and the blocks in order of time: a
    # stable sort by trajectory orders them all.
    which, order = torch.sort(torch.cat([f[0] for f in found]), stable=True)
    ends = _Ends.joined([f[1] for f in found], order)
    return (which, ends, *(torch.cat([f[i] for f in found])[order] for i in range(2, 6)))


def _derivatives(system, flat, t, p) -> torch.Tensor:
    """``system.rhs`` at every sample of ``flat`` (a block's), shape (n_times, n_traj,
    n_state): one call."""
    n_times, n_traj, n_state = flat.shape
    times = t.reshape(n_times, 1).expand(n_times, n_traj).reshape(-1, 1)
    rows = None if p is None else p.expand(n_traj, p.shape[-1]).repeat(n_times, 1)
    return system.rhs(times, flat.reshape(-1, n_state), rows).reshape(n_times, n_traj, n_state)


def _pieces(g, named, flat, t, values, derivatives):
    """``(cuts, values)``, both (n_cuts, n_times - 1, n_traj): each sampling interval split at
    the fractions ``cuts`` (0 first, 1 last, increasing) and ``g`` there, so that a crossing
    is wherever ``g`` changes sign from one cut to the next.

    Linear interpolation has no cuts inside an interval. On the cubic Hermite interpolant, a
    named surface (``named``: the component it sets and its value there) is cut at the cubic's
    extrema: its pieces are monotone, and every crossing of the cubic is between two cuts. A
    callable surface is cut at :data:`_INTERIOR_POINTS` evenly spaced points. A cut that is
    not there (an extremum outside the interval) is put at 1, with ``g`` at 1: it adds an empty
    piece."""
    first, last = values[:-1].unsqueeze(0), values[1:].unsqueeze(0)
    if derivatives is None:
        return torch.cat([torch.zeros_like(first), torch.ones_like(last)]), torch.cat([first, last])
    index, level = named
    if index is None:
        ends = _Ends(t[:-1, None], t[1:, None], flat[:-1], flat[1:], derivatives[:-1],
                     derivatives[1:])
        inner = torch.arange(1, _INTERIOR_POINTS + 1).to(values) / (_INTERIOR_POINTS + 1)
        inner = inner.reshape(-1, 1, 1).expand(-1, *values[1:].shape)
        inner_values = g(ends.time(inner), ends.state(inner))
    else:
        # The cubic of the surface's component alone: the others do not move its extrema.
        one = slice(index, index + 1)
        ends = _Ends(t[:-1, None], t[1:, None], flat[:-1, :, one], flat[1:, :, one],
                     derivatives[:-1, :, one], derivatives[1:, :, one])
        inner = _extrema(ends)
        inner_values = ends.state(inner)[..., 0] - level
    inner_values = torch.where(inner == 1, last, inner_values)
    cuts = torch.cat([torch.zeros_like(first), inner, torch.ones_like(last)])
    return cuts, torch.cat([first, inner_values, last])


def _extrema(ends: _Ends) -> torch.Tensor:
    """Where the cubic Hermite interpolant of a one-component ``ends`` has zero slope inside
    each interval, shape (2, ...) in increasing order; 1 where there is no such point.

    The slope on ``s`` in [0, 1] is the quadratic ``a s**2 + b s + c`` with ``D = y_b - y_a``,
    ``A = h f_a``, ``B = h f_b``: ``a = 3 (A + B) - 6 D``, ``b = 6 D - 4 A - 2 B``, ``c = A``.
    Its roots are taken in the form that does not cancel (``q = -(b + sign(b) sqrt(b**2 -
    4 a c)) / 2``, roots ``q / a`` and ``c / q``), which also gives ``-c / b`` where ``a = 0``."""
    h = ends.h[..., 0]
    slope_a, slope_b = h * ends.f_a[..., 0], h * ends.f_b[..., 0]
    rise = ends.y_b[..., 0] - ends.y_a[..., 0]
    a = 3 * (slope_a + slope_b) - 6 * rise
    b = 6 * rise - 4 * slope_a - 2 * slope_b
    c = slope_a
    q = -(b + torch.copysign(torch.sqrt(b * b - 4 * a * c), b)) / 2
    roots = torch.stack([q / a, c / q])
    # A negative discriminant or 0 / 0 gives NaN, and a = 0 or q = 0 an infinity: all outside.
    roots = torch.where((roots > 0) & (roots < 1), roots, torch.ones_like(roots))
    return torch.stack([roots.min(dim=0).values, roots.max(dim=0).values])


def _trajectories(system, ys, t, p):
    """``ys`` (n_times, ..., n_state) without gradient, its increasing times ``t`` in its
    dtype, the parameters ``p`` (or None) and the state names."""
    if system is not None and not (hasattr(system, "rhs") and hasattr(system, "state_names")):
        raise InvalidArgumentError(
            f"system must be a physode.System (e.g. physode.systems.load('double_pendulum')) "
            f"or None, got {type(system).__name__}"
        )
    if _is_data_set(ys):
        ys, t, p = _from_data_set(ys, t, p, system)
    if not isinstance(ys, torch.Tensor) or not ys.is_floating_point() or ys.ndim < 2:
        what = tuple(ys.shape) if isinstance(ys, torch.Tensor) else type(ys).__name__
        raise InvalidArgumentError(
            f"ys must be a floating-point tensor (n_times, ..., n_state), time first, or a data "
            f"set from physode.data.load; got {what}"
        )
    ys = ys.detach()
    if t is None:
        raise InvalidArgumentError(
            "t is required: the output times of ys, shape (n_times,), that crossings are "
            "placed between"
        )
    n_times = ys.shape[0]
    t = _times(t, n_times).to(ys)
    if n_times < 2 or not bool((t[1:] > t[:-1]).all()):
        raise InvalidArgumentError(
            f"t must hold at least 2 increasing times, one per row of ys; got {_not_increasing(t)}"
        )
    if system is None:
        if p is not None:
            raise InvalidArgumentError(
                "p was given without a system; parameters are read only by system.rhs"
            )
        return ys, t, None, [f"y[{i}]" for i in range(ys.shape[-1])]
    ys, p = split_parameters(system, ys, p)
    if p is not None and p.ndim > 1:
        # One row per trajectory, also where p broadcasts against the batch shape: (3, 1, n)
        # for trajectories (3, 4) is each first index's parameters for its four trajectories.
        # The number of rows is spelled out: -1 cannot be inferred from a system without
        # parameters (0 elements).
        batch_shape = ys.shape[1:-1]
        p = p.expand(*batch_shape, system.n_params).reshape(
            math.prod(batch_shape), system.n_params
        )
    return ys, t, p, list(system.state_names)


def _not_increasing(t: torch.Tensor, shown: int = 5) -> str:
    """Times ``t`` that do not increase, in words: how many, the first ``shown`` of them, and
    where they first stop increasing.

    Examples
    --------
    >>> print(_not_increasing(torch.tensor([0.0, 1.0, 2.0, 2.0, 3.0, 4.0, 5.0])))
    7 times [0, 1, 2, 2, 3, ...], which stop increasing at index 3 (t[2] = 2, t[3] = 2)
    >>> print(_not_increasing(torch.tensor([2.0, 1.0, 0.0])))
    3 times [2, 1, 0], decreasing (a backward solve: pass ys.flip(0) and t.flip(0))
    """
    values = t.tolist()
    if len(values) < 2:
        return f"{len(values)} time{'s' * (len(values) != 1)} {values}"
    head = ", ".join(f"{v:g}" for v in values[:shown]) + ", ..." * (len(values) > shown)
    if bool((t[1:] < t[:-1]).all()):
        return (
            f"{len(values)} times [{head}], decreasing (a backward solve: pass ys.flip(0) and "
            "t.flip(0))"
        )
    k = next(k for k in range(1, len(values)) if not values[k] > values[k - 1])
    return (
        f"{len(values)} times [{head}], which stop increasing at index {k} "
        f"(t[{k - 1}] = {values[k - 1]:g}, t[{k}] = {values[k]:g})"
    )


def _interpolation(system, interpolation: str | None) -> str:
    """The interpolation asked for, or the default: Hermite with a system, linear without."""
    if interpolation is None:
        return "linear" if system is None else "hermite"
    if interpolation not in _INTERPOLATIONS:
        raise InvalidArgumentError(
            f"interpolation={interpolation!r}; choose one of "
            f"{', '.join(map(repr, _INTERPOLATIONS))}"
        )
    if interpolation == "hermite" and system is None:
        raise InvalidArgumentError(
            "interpolation='hermite' needs the system's derivatives; pass the system, or "
            "interpolation='linear'"
        )
    return interpolation


def _surface(surface, system, names: list[str]):
    """``(g, fixed, level, words)``: the surface function ``g(t, y)``, the index of the
    component a named surface fixes and its value there (else None, None) and the surface in
    words."""
    if callable(surface):
        return _checked(surface), None, None, getattr(surface, "__name__", "g") + "(t, y) = 0"
    pair = isinstance(surface, (tuple, list)) and len(surface) == 2
    name, value = surface if pair else (surface, 0.0)
    if not isinstance(name, str) or not is_finite_real(value):
        raise InvalidArgumentError(
            f"surface={surface!r} must be a state component's name (the surface where it is "
            "0), a pair (name, value), or a function g(t, y) whose zero level is the surface"
        )
    if system is None:
        raise InvalidArgumentError(
            f"surface={surface!r} names a state component, which needs a system; without one "
            "pass a function, e.g. surface=lambda t, y: y[..., 0]"
        )
    if name not in names:
        raise InvalidArgumentError(
            f"surface={surface!r}: {name!r} is not a state component of {system.name}; state "
            f"components: {', '.join(names)}"
        )
    index, value = names.index(name), float(value)

    def g(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return y[..., index] - value

    return g, index, value, f"{name} = {value:g}"


def _checked(g: Callable) -> Callable:
    """A surface function ``g(t, y)`` whose answers are checked for shape and given in ``y``'s
    dtype, and whose errors say with which shapes it was called: on the samples ``(n_times,
    n_traj, n_state)``, but also on points of the cubic ``(3, n_times - 1, n_traj, n_state)``
    and on the crossings ``(n_crossings, n_state)``, so that ``y[:, :, 0]`` works once and then
    fails."""

    def checked(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        try:
            values = g(t, y)
        except Exception as error:
            error.add_note(
                f"(poincare_section's surface function, called with y of shape "
                f"{tuple(y.shape)}: it is called on states of any leading shape, so index a "
                "component as y[..., i], not y[:, :, i])"
            )
            raise
        if not isinstance(values, torch.Tensor) or values.shape != y.shape[:-1]:
            shape = (tuple(values.shape) if isinstance(values, torch.Tensor)
                     else type(values).__name__)  # fmt: skip
            raise InvalidArgumentError(
                f"the surface function returned {shape} for y of shape {tuple(y.shape)}; it "
                f"must return one value per state, shape y.shape[:-1] = {tuple(y.shape[:-1])} "
                "(y has any leading shape: index a component as y[..., i])"
            )
        # In the states' dtype, so that the crossing times found from these values are too.
        return values.to(y.dtype)

    return checked


def _periods(period, batch_shape: tuple[int, ...]) -> torch.Tensor:
    """The period of each trajectory, flattened, shape (n_trajectories,) or (1,)."""
    try:
        # A Python number in float64: torch's default float32 would move the 20th period by 1e-6.
        periods = (torch.tensor(float(period), dtype=torch.float64)
                   if isinstance(period, numbers.Real) and not isinstance(period, bool)
                   else torch.as_tensor(period).detach())
    except (TypeError, ValueError, RuntimeError, OverflowError):
        periods = None
    fits = periods is not None and periods.dtype != torch.bool and (
        periods.ndim == 0 or tuple(periods.shape) == batch_shape
    )
    if not fits or not bool((periods > 0).all() & torch.isfinite(periods).all()):
        raise InvalidArgumentError(
            f"period={period!r} must be a time > 0, one number or one per trajectory (shape "
            f"{batch_shape}), e.g. period=2 * math.pi / omega"
        )
    periods = periods if periods.is_floating_point() else periods.double()
    return periods.reshape(-1)


def _default_axes(system, n_state: int, fixed: int | None = None) -> tuple[int, int]:
    """The plot's default components: a coordinate and its velocity or momentum, the first
    pair that the surface's component is not in; else the first two components it leaves."""
    n = getattr(system, "n_coordinates", None)
    if n and 2 * n == n_state:
        pairs = [(j, j + n) for j in range(n) if fixed is None or fixed % n != j]
        if pairs:
            return pairs[0]
    free = [i for i in range(n_state) if i != fixed] + ([fixed] if fixed is not None else [])
    return free[0], free[1 % len(free)]
