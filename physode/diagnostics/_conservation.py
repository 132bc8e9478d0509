"""Conservation checks: how far each invariant of a system drifts along computed trajectories."""

from __future__ import annotations

import math
import numbers
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from physode._checks import is_int
from physode._errors import InvalidArgumentError, first_shown
from physode._files import write_atomically
from physode._repr import attempted, count_text, never_raising, number_text, short_repr

#: Relative drift above which a trajectory is reported as failing, when no tolerance is given.
DEFAULT_TOLERANCE = 1e-6

#: The relative drift that the rounding of float32 states alone gives, about (energies near a
#: three-body close encounter, the Kepler Laplace-Runge-Lenz vector): docs/cli.md.
FLOAT32_DRIFT = 1e-5


def float32_rounding(stored: str = "") -> str:
    """Why float32 states drift, for a hint under a verdict: ``stored`` says how they are held
    (``"stored as "`` for a data set's).

    >>> float32_rounding("stored as ")
    'the states are stored as float32, whose rounding alone drifts by up to about 1e-05'
    """
    return f"the states are {stored}float32, whose rounding alone drifts by up to about " + (
        f"{FLOAT32_DRIFT:.0e}"
    )


def finite_points(ys: torch.Tensor) -> torch.Tensor:
    """Per trajectory, how many of its first states are finite in every component.

    Parameters
    ----------
    ys : torch.Tensor, shape (n_times, n_traj, n_state)
        Time first, as ``physode.odeint`` returns it.

    Returns
    -------
    torch.Tensor of int64, shape (n_traj,)
        The index of each trajectory's first state that holds inf or NaN, or ``n_times`` where
        every one is finite.

    Examples
    --------
    >>> ys = torch.tensor([[[0.0], [0.0]], [[1.0], [math.inf]], [[2.0], [2.0]]])
    >>> finite_points(ys)
    tensor([3, 1])
    """
    finite = torch.isfinite(ys).all(dim=-1)
    first = torch.argmin(finite.to(torch.int8), dim=0) if len(finite) else finite.sum(dim=0)
    return torch.where(finite.all(dim=0), finite.shape[0], first)


def largest_drift(drift: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Per trajectory, the largest drift over its first ``points`` output times.

    The drift of a trajectory over the states it reached, up to the first that is not finite
    (``points`` from :func:`finite_points`). A NaN among those points (an invariant that is
    not a number) stays NaN, as does a trajectory with no point at all.

    Parameters
    ----------
    drift : torch.Tensor, shape (n_times, n_traj)
    points : torch.Tensor of int, shape (n_traj,)

    Returns
    -------
    torch.Tensor, shape (n_traj,)

    Examples
    --------
    >>> drift = torch.tensor([[0.0, 0.0], [1e-9, 2e-9], [3e-9, math.nan]], dtype=torch.float64)
    >>> largest_drift(drift, torch.tensor([3, 2]))
    tensor([3.0000e-09, 2.0000e-09], dtype=torch.float64)
    """
    points = points.to(drift.device)
    kept = torch.arange(drift.shape[0], device=drift.device)[:, None] < points
    zero = torch.zeros((1, *drift.shape[1:]), dtype=drift.dtype, device=drift.device)
    largest = torch.cat([zero, torch.where(kept, drift, 0.0)]).amax(dim=0)
    return torch.where(points > 0, largest, math.nan)


def image_path(path: str | os.PathLike, argument: str = "path") -> Path:
    """``path`` as a ``Path``, after checking that a plot can be saved there.

    Parameters
    ----------
    path : str or path-like
        The image file to write; its suffix chooses the format.
    argument : str
        How the error message names the argument: ``argument='drift.txt': ...``, which the
        command line respells ``--plot drift.txt: ...`` as it does every option's value.

    Raises
    ------
    physode.InvalidArgumentError
        If the suffix is not an image format matplotlib writes, the folder does not exist or
        cannot be written, or the suffix is ``.pgf`` and matplotlib's TeX program
        (``rcParams['pgf.texsystem']``, ``xelatex`` by default) is not installed.

    Examples
    --------
    >>> image_path("drift.png").suffix
    '.png'
    """
    from matplotlib.backend_bases import FigureCanvasBase

    given = os.fspath(path)  # the message quotes it as given: ./drift.txt, not drift.txt
    path = Path(path)
    formats = sorted(FigureCanvasBase.get_supported_filetypes())
    folder = path.parent
    if path.suffix[1:].lower() not in formats:
        problem = (
            f"the file name must end in an image format matplotlib writes, one of "
            f"{', '.join('.' + name for name in formats)} (e.g. drift.png)"
        )
    elif not folder.is_dir():
        problem = f"folder {str(folder)!r} does not exist"
    elif path.is_dir():
        problem = "is a folder; give a file name such as drift.png"
    elif path.suffix.lower() == ".pgf" and shutil.which(_pgf_texsystem()) is None:
        # matplotlib measures a .pgf figure's text with this TeX program: without it the plot
        # fails only once drawn, after the check or report it belongs to.
        problem = (
            f"a .pgf figure needs {_pgf_texsystem()!r} (matplotlib's "
            "rcParams['pgf.texsystem']), which is not installed; install it, or write .pdf or "
            ".svg, which a LaTeX document includes as well"
        )
    elif not os.access(folder, os.W_OK):
        problem = f"folder {str(folder)!r} is not writable"
    else:
        return path
    raise InvalidArgumentError(f"{argument}={given!r}: {problem}")


def _pgf_texsystem() -> str:
    """The TeX program matplotlib writes ``.pgf`` figures with (``xelatex`` by default)."""
    import matplotlib

    return str(matplotlib.rcParams["pgf.texsystem"])


def new_figure(path: str | os.PathLike, max_trajectories: object, drawn: str, **figure: Any):
    """``(path, fig)`` for a plot of at most ``max_trajectories`` trajectories (``drawn``: what
    that number counts, for the message): the path checked by :func:`image_path` and the count
    checked, both before anything is drawn, then a matplotlib ``Figure(**figure)`` on an Agg
    canvas, so that no GUI backend is ever selected."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = image_path(path)
    if not is_int(max_trajectories, least=1):
        raise InvalidArgumentError(
            f"max_trajectories={max_trajectories!r} must be an integer >= 1, the number of "
            f"{drawn} (e.g. max_trajectories=20)"
        )
    fig = Figure(constrained_layout=True, **figure)
    FigureCanvasAgg(fig)
    return path, fig


def save_figure(fig: Any, path: Path, **options: Any) -> Path:
    """Save a matplotlib figure to ``path`` (checked by :func:`image_path`) through a temporary
    file, so that an interruption leaves no partial image."""
    fmt = path.suffix[1:].lower()
    return write_atomically(path, lambda tmp: fig.savefig(tmp, format=fmt, **options), "plot")


@dataclass(frozen=True)
class InvariantDrift:
    """The drift of one invariant over a batch of trajectories.

    Attributes
    ----------
    name : str
        The invariant, e.g. ``"energy"`` or ``"momentum_x"``.
    initial : torch.Tensor
        ``I(y(t0))`` per trajectory, shape (n_traj,).
    scale : torch.Tensor
        The scale relative drifts divide by, per trajectory (see :func:`conservation`).
    abs_drift : torch.Tensor
        ``|I(y(t)) - I(y(t0))|`` over time, shape (n_times, n_traj).
    max_abs_drift, max_rel_drift : torch.Tensor
        Largest absolute drift and largest absolute drift / scale, per trajectory.
    tolerance : float
        The relative tolerance it was checked against.
    exceeds : torch.Tensor
        Boolean, per trajectory: ``max_rel_drift > tolerance``.
    """

    name: str
    initial: torch.Tensor
    scale: torch.Tensor
    abs_drift: torch.Tensor
    max_abs_drift: torch.Tensor
    max_rel_drift: torch.Tensor
    tolerance: float
    exceeds: torch.Tensor

    def __repr__(self) -> str:
        # Per-trajectory figures as their range over the trajectories, the drift curves by shape.
        return short_repr(
            self, ("max_rel_drift", number_text), ("max_abs_drift", number_text),
            ("tolerance", number_text), ("exceeds", count_text), "abs_drift",
            head=[attempted(lambda: repr(self.name))],
        )

    @property
    def rel_drift(self) -> torch.Tensor:
        """Relative drift over time, shape (n_times, n_traj)."""
        return self.abs_drift / self.scale

    @property
    def failing(self) -> list[int]:
        """Indices of the trajectories whose relative drift exceeds the tolerance."""
        return torch.nonzero(self.exceeds).flatten().tolist()


class ConservationReport:
    """Per-invariant drift of a batch of trajectories; prints as a table, plots drift over time.

    Attributes
    ----------
    system_name : str
    t : torch.Tensor or None
        The output times (None when not given; plots then use the sample index).
    batch_shape : tuple of int
        The trajectories' batch shape; trajectory ``i`` is ``ys.reshape(n_times, -1, n)[:, i]``.
    invariants : dict of str to InvariantDrift
    finite_points : torch.Tensor or None
        Per trajectory, the index of its first state that holds inf or NaN (a failed solve, a
        rollout that blew up), or ``n_times`` where all are finite: its drift is measured over
        the states before it. None: all finite.
    n_times : int or None
        The number of output times (None with ``finite_points``).
    states_dtype : str or None
        The dtype of the states as given (``"float32"``; a data set's stored dtype), for the
        table's hint on float32 rounding.
    """

    def __init__(
        self,
        system_name: str,
        t: torch.Tensor | None,
        batch_shape: tuple[int, ...],
        invariants: Mapping[str, InvariantDrift],
        finite_points: torch.Tensor | None = None,
        n_times: int | None = None,
        states_dtype: str | None = None,
    ):
        self.system_name = system_name
        self.t = t
        self.batch_shape = batch_shape
        self.invariants = dict(invariants)
        self.finite_points = finite_points
        self.n_times = n_times
        self.states_dtype = states_dtype

    @property
    def non_finite(self) -> list[int]:
        """Indices of the trajectories whose states hold inf or NaN; their drift is measured up
        to the first such state (:attr:`finite_points`)."""
        if self.finite_points is None:
            return []
        return torch.nonzero(self.finite_points < self.n_times).flatten().tolist()

    @property
    def ok(self) -> bool:
        """True when no invariant of any trajectory exceeds its tolerance and every state is
        finite."""
        drifted = any(bool(d.exceeds.any()) for d in self.invariants.values())
        return not drifted and not self.non_finite

    @property
    def failures(self) -> list[tuple[str, int]]:
        """``(invariant, trajectory index)`` for every drift above tolerance."""
        return [(name, i) for name, d in self.invariants.items() for i in d.failing]

    def __getitem__(self, name: str) -> InvariantDrift:
        if name not in self.invariants:
            raise InvalidArgumentError(
                f"no invariant {name!r} in this report; invariants: {', '.join(self.invariants)}"
            )
        return self.invariants[name]

    def __str__(self) -> str:
        n_traj = math.prod(self.batch_shape)
        noun = "trajectory" if n_traj == 1 else "trajectories"
        head = f"conservation report: {self.system_name}, {n_traj} {noun}"
        if self.t is not None and self.t.numel() > 1:
            head += f", t in [{float(self.t[0]):.6g}, {float(self.t[-1]):.6g}]"
        if not self.invariants:
            return head + "\n(no invariants: the system declares none and conserves no energy)"
        if n_traj == 0:
            return head + "\n(no trajectories: nothing to check)"
        per_traj = n_traj <= 8
        non_finite = self.non_finite
        cols = ("invariant", "traj" if per_traj else "worst", "initial", "max abs drift",
                "max rel drift", "tolerance", "status")
        rows = []
        for name, d in self.invariants.items():
            indices = range(n_traj) if per_traj else [int(torch.argmax(d.max_rel_drift))]
            for i in indices:
                status = "FAIL" if bool(d.exceeds[i]) else "ok"
                if not per_traj:
                    status = f"{int(d.exceeds.sum())}/{n_traj} fail" if d.exceeds.any() else "ok"
                elif i in non_finite:
                    status += f", not finite from t[{int(self.finite_points[i])}]"
                initial = float(d.initial[i]) + 0.0  # + 0.0 prints -0.0 as 0
                rows.append((
                    name, str(i), f"{initial:.10g}", f"{float(d.max_abs_drift[i]):.3e}",
                    f"{float(d.max_rel_drift[i]):.3e}", f"{d.tolerance:.1e}", status,
                ))
        widths = [max(len(c), *(len(r[k]) for r in rows)) for k, c in enumerate(cols)]
        lines = [head, "  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))]
        lines.append("  ".join("-" * w for w in widths))
        lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in rows]
        if non_finite:
            noun = "trajectory" if len(non_finite) == 1 else "trajectories"
            listed = first_shown(
                non_finite, 10, text=lambda i: f"{i} (from t[{int(self.finite_points[i])}])"
            )
            lines.append(
                f"states not finite (inf or NaN) in {len(non_finite)} {noun}, {listed}: drift "
                "measured up to the first such state; the report is not ok"
            )
        lines += self._float32_hint()
        lines.append(
            "relative drift = max_t |I(t) - I(t0)| / S; S = the sum of |terms of I| at t0, or "
            "its median over t where larger (for a vector's components, the largest of theirs)"
        )
        return "\n".join(lines)

    def _float32_hint(self) -> list[str]:
        """Where float32 states fail a tolerance below what their rounding alone drifts: why,
        and what to do (as ``physode check`` says it of a float32 file)."""
        failing = [d for d in self.invariants.values() if bool(d.exceeds.any())]
        if self.states_dtype != "float32" or not any(d.tolerance < FLOAT32_DRIFT for d in failing):
            return []
        return [f"({float32_rounding()}: check float32 states with tolerance=1e-4)"]

    @never_raising
    def __repr__(self) -> str:
        return (
            f"ConservationReport({self.system_name!r}, invariants={list(self.invariants)}, "
            f"ok={self.ok})"
        )

    def plot(self, path: str | Path, max_trajectories: int = 20) -> Path:
        """Draw the relative drift of each invariant over time (log scale) to an image file.

        Parameters
        ----------
        path : str or Path
            Output file; the format follows the suffix (``.png``, ``.pdf``, ``.svg``).
        max_trajectories : int
            At most this many trajectories are drawn per panel (the worst ones).

        Returns
        -------
        Path
            The file written.

        Raises
        ------
        physode.InvalidArgumentError
            If ``path`` does not end in an image format or its folder does not exist, or
            ``max_trajectories`` is not an integer >= 1 (checked before drawing).

        Examples
        --------
        >>> report.plot("drift.png")  # doctest: +SKIP
        PosixPath('drift.png')
        """
        n_panels = max(len(self.invariants), 1)
        path, fig = new_figure(
            path, max_trajectories, "trajectories drawn per panel",
            figsize=(7, 2.2 * n_panels + 0.6),
        )  # fmt: skip
        axes = fig.subplots(n_panels, 1, squeeze=False)[:, 0]
        for ax, (name, d) in zip(axes, self.invariants.items(), strict=False):
            rel = d.rel_drift.detach().cpu().double()
            x = (
                self.t.detach().cpu().double()
                if self.t is not None
                else torch.arange(rel.shape[0], dtype=torch.float64)
            )
            order = torch.argsort(d.max_rel_drift, descending=True)[:max_trajectories]
            floor = torch.finfo(torch.float64).tiny
            for i in order.tolist():
                ax.plot(x.numpy(), rel[:, i].clamp_min(floor).numpy(), lw=0.8, label=f"traj {i}")
            ax.axhline(d.tolerance, color="k", ls="--", lw=0.8, label="tolerance")
            ax.set_yscale("log")
            ax.set_ylabel(f"{name}\nrel. drift")
            if len(order) <= 8:
                ax.legend(fontsize=7, loc="lower right")
        axes[-1].set_xlabel("t" if self.t is not None else "sample")
        fig.suptitle(f"conservation: {self.system_name}")
        return save_figure(fig, path)


def conservation(
    system,
    ys: torch.Tensor,
    t: torch.Tensor | None = None,
    tolerance: float | Mapping[str, float] = DEFAULT_TOLERANCE,
    p: torch.Tensor | None = None,
) -> ConservationReport:
    """Measure how well the system's invariants are conserved along trajectories.

    For each invariant ``I`` of ``system.invariants`` and each trajectory, the report holds the
    initial value ``I(y(t0))``, the largest absolute drift ``max_t |I(y(t)) - I(y(t0))|`` and the
    largest relative drift, which divides by the scale ``S = max(S(t0), median_t S(t))``, with
    ``S(t) = sum_k |T_k(y(t))|`` where ``I = sum_k T_k`` is the invariant written as a sum of
    terms (kinetic plus absolute potential energy; the bodies' individual momenta for a momentum
    component), shared by the components of a vector (see :func:`drift_scales`).
    ``S >= |I(t0)|``, and ``S`` stays positive when ``I`` is zero (zero total momentum); where
    ``S`` is zero as well (every term vanishes, e.g. a system at rest) the relative drift equals
    the absolute drift.

    Time comes first in ``ys``, as ``physode.odeint`` returns it, whereas a stored data set
    holds its states as ``(N, P, n_state)``, trajectory first. Pass the data set itself, which
    reads its states whole and transposes them, and uses its times and each trajectory's
    parameters: ``conservation(data.system, data)``. For some of its trajectories, transpose
    what you read and pass the times and those rows' parameters::

        ys = torch.from_numpy(data.states[rows]).transpose(0, 1)  # (P, len(rows), n_state)
        conservation(data.system, ys, data.t, p=data.params[rows])

    A ``(N, P, n_state)`` tensor passed as ``ys`` without ``t`` is read as ``N`` times of ``P``
    trajectories, and nothing can tell.

    Parameters
    ----------
    system : physode.System
        The system whose ``invariants`` are checked.
    ys : torch.Tensor or physode.data.TrajectoryFile
        Trajectories shaped ``(n_times, ..., n_state)`` as returned by ``physode.odeint``; a
        trailing size of ``n_state + n_params`` (parameters carried in the state) is accepted.
        Or a data set opened with :func:`physode.data.load`: its states, in float64, with
        trajectory ``i`` of the report the file's row ``i``; its states and stored parameters
        are met with ``system``'s by name (put in its order, or refused where the names
        differ).
    t : torch.Tensor, optional
        The output times, shape (n_times,), for the table header and the plots (a list or
        array is converted); a data set's own times when ``ys`` is one.
    tolerance : float or mapping of str to float
        Relative drift allowed (> 0; ``math.inf`` accepts any), for all invariants or per
        invariant name (the invariants a mapping leaves out get :data:`DEFAULT_TOLERANCE`).
    p : torch.Tensor, optional
        Parameters, ``(n_params,)`` or one row per trajectory ``(..., n_params)``; when omitted,
        a data set's stored parameters when ``ys`` is one, else the system's defaults. For a
        rollout of a learned model pass the model's parameters, e.g.
        ``model.field.parameter_vector().detach()`` for a ``PhysicsModel``: with the defaults
        its invariants would seem to drift.

    Returns
    -------
    ConservationReport

    Raises
    ------
    physode.InvalidArgumentError
        For a ``system`` that is not a System, ``ys`` without times, with a state size that
        does not fit the system or of a complex or boolean dtype, ``t`` or ``p`` of the wrong
        shape, or a tolerance that is not a number > 0 or names an unknown invariant.

    Examples
    --------
    >>> import physode, torch
    >>> osc = physode.systems.load("harmonic_oscillator")
    >>> t = torch.linspace(0, 10, 11, dtype=torch.float64)
    >>> ys = physode.odeint(osc.vector_field(), osc.sample_initial_states(3), t,
    ...                     method="dop853", rtol=1e-10, atol=1e-12)
    >>> report = physode.diagnostics.conservation(osc, ys, t, tolerance=1e-8)
    >>> report.ok
    True
    >>> data = physode.data.load("pendulum.h5")                  # doctest: +SKIP
    >>> physode.diagnostics.conservation(data.system, data).ok   # doctest: +SKIP
    True
    """
    if not (hasattr(system, "invariants") and hasattr(system, "invariant_scales")):
        raise InvalidArgumentError(
            f"system={system!r} is not a physode System; load one with physode.systems.load(name)"
        )
    dtype = None
    if _is_data_set(ys):
        dtype = str(ys.states.dtype)
        ys, t, p = _from_data_set(ys, t, p, system)
    if not isinstance(ys, torch.Tensor) or ys.ndim < 2 or ys.shape[0] == 0:
        raise InvalidArgumentError(
            "ys must be a tensor (n_times, ..., n_state) with n_times >= 1, as returned by "
            "physode.odeint, or a data set from physode.data.load, got "
            f"{tuple(ys.shape) if isinstance(ys, torch.Tensor) else type(ys).__name__}"
        )
    ys = ys.detach()
    dtype = dtype or str(ys.dtype).removeprefix("torch.")
    if ys.is_complex() or ys.dtype == torch.bool:
        raise InvalidArgumentError(
            f"ys has dtype {ys.dtype}; the states {list(system.state_names)} of {system.name} "
            "are real numbers (integers are read as float64)"
        )
    if not ys.is_floating_point():
        ys = ys.to(torch.float64)
    n_times, batch_shape = ys.shape[0], tuple(ys.shape[1:-1])
    t = _times(t, n_times)
    ys, p = split_parameters(system, ys, p)
    tolerances = dict(tolerance) if isinstance(tolerance, Mapping) else {None: tolerance}
    for name, value in tolerances.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
            where = "tolerance" if name is None else f"tolerance[{name!r}]"
            raise InvalidArgumentError(
                f"{where}={value!r} must be a relative drift > 0 (math.inf accepts any drift)"
            )
    if isinstance(tolerance, Mapping):
        unknown = [k for k in tolerance if k not in system.invariant_names]
        if unknown:
            raise InvalidArgumentError(
                f"tolerance names {unknown}, not invariants of {system.name}; invariants: "
                f"{system.invariant_names}"
            )
    # A failed solve or a rollout that blew up: its drift is measured up to its first state
    # that is not finite, as physode check measures a data set's; NaN from there on, so that an
    # inf is left out of the scale's median too.
    points = finite_points(ys.reshape(n_times, -1, ys.shape[-1]))
    if bool((points < n_times).any()):
        kept = torch.arange(n_times, device=ys.device)[:, None] < points.to(ys.device)
        ys = torch.where(kept.reshape(n_times, *batch_shape, 1), ys, math.nan)
    values = system.invariants(ys, p)
    scales = drift_scales(system, ys, p)
    drifts = {}
    for name, value in values.items():
        value = value.expand(n_times, *batch_shape).reshape(n_times, -1)
        scale = _divisor(scales[name].expand(batch_shape).reshape(-1))
        abs_drift = (value - value[:1]).abs()
        max_abs = largest_drift(abs_drift, points)
        max_rel = max_abs / scale
        tol = float(tolerance.get(name, DEFAULT_TOLERANCE) if isinstance(tolerance, Mapping)
                    else tolerance)
        # math.inf accepts any drift, even one that is not a number (no finite state at all)
        exceeds = ~(max_rel <= tol) if tol < math.inf else torch.zeros_like(max_rel, dtype=bool)
        drifts[name] = InvariantDrift(
            name=name, initial=value[0], scale=scale, abs_drift=abs_drift, max_abs_drift=max_abs,
            max_rel_drift=max_rel, tolerance=tol, exceeds=exceeds,
        )
    return ConservationReport(
        system.name, t, batch_shape, drifts, finite_points=points, n_times=n_times,
        states_dtype=dtype,
    )  # fmt: skip


def _divisor(scale: torch.Tensor) -> torch.Tensor:
    """What a drift is divided by: the scale, or 1 where the scale is 0 (the absolute drift)."""
    return torch.where(scale > 0, scale, torch.ones_like(scale))


def relative_drift(values: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``|I(t) - I(t0)| / S`` of invariant values ``(n_times, n_traj)`` and scales ``(n_traj,)``
    from :func:`drift_scales`: :attr:`InvariantDrift.rel_drift`, the same to the bit."""
    return (values - values[:1]).abs() / _divisor(scale)


def drift_scales(
    system, ys: torch.Tensor, p: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """What each invariant's drift is divided by, per trajectory.

    ``S = max(S(t0), median_t S(t))`` with ``S(t) = sum_k |T_k(y(t))|`` the sum of the absolute
    values of the invariant's terms (``system.invariant_scales``; NaN states are left out of the
    median), shared by the components of one vector (names that differ only in a last ``_x``,
    ``_y`` or ``_z``): they all take the largest of their scales.

    The start alone can be a poor scale: a pendulum released from the horizontal has no energy
    term at all there (no speed, and ``cos θ = 0``), nor has a Laplace–Runge–Lenz component
    along an axis the vector happens to be perpendicular to, yet their terms are large a moment
    later. The median along the trajectory is a floor for such starts; it is a median, not a
    maximum, so a trajectory that blows up is still divided by the size it started with and
    reads a drift far above 1.

    Parameters
    ----------
    system : physode.System
    ys : torch.Tensor, shape (n_times, ..., n_state)
        Time first, as ``physode.odeint`` returns it.
    p : torch.Tensor, optional
        Parameters, as for :func:`conservation`.

    Returns
    -------
    dict of str to torch.Tensor
        Per invariant, the scale of each trajectory (``ys``'s batch shape).
    """
    if ys.ndim < 2:
        raise InvalidArgumentError(
            f"ys must be (n_times, ..., n_state), time first; got shape {tuple(ys.shape)}"
        )
    scales = {}
    for name, scale in system.invariant_scales(ys, p).items():
        scale = scale.expand(ys.shape[:-1])
        scales[name] = torch.maximum(scale[0], scale.nanmedian(dim=0).values)
    vectors: dict[str, list[str]] = {}
    for name in scales:
        stem, axis = name[:-2], name[-2:]
        if axis in ("_x", "_y", "_z"):
            vectors.setdefault(stem, []).append(name)
    for components in vectors.values():
        if len(components) > 1:
            shared = torch.stack([scales[c] for c in components]).amax(dim=0)
            scales.update(dict.fromkeys(components, shared))
    return scales


def split_parameters(system, ys: torch.Tensor, p: Any) -> tuple[torch.Tensor, Any]:
    """``ys`` (``(n_times, ..., n_state)``, or with the system's parameters appended to each
    state) without the parameters, and ``p`` checked by :func:`_parameters` in ``ys``' dtype:
    the given one, else the appended parameters at the first time, else None. A state size that
    fits neither is refused, naming the system's states."""
    n, n_p = system.n_state, system.n_params
    if ys.shape[-1] == n + n_p and n_p > 0:
        p = ys[0, ..., n:] if p is None else p
        ys = ys[..., :n]
    elif ys.shape[-1] != n:
        raise InvalidArgumentError(
            f"ys has {ys.shape[-1]} state components; {system.name} has {n} "
            f"({', '.join(system.state_names)}), or {n + n_p} with its parameters appended"
        )
    if p is not None:
        p = _parameters(p, system, ys).to(ys)
    return ys, p


def _is_data_set(ys: Any) -> bool:
    """Whether ``ys`` is a data set opened with ``physode.data.load`` (which is imported only
    for what is not a tensor, as it loads h5py)."""
    if isinstance(ys, torch.Tensor):
        return False
    from physode.data.stored import TrajectoryFile

    return isinstance(ys, TrajectoryFile)


def _from_data_set(data, t, p, system=None) -> tuple[torch.Tensor, Any, Any]:
    """A data set's states as ``ys`` (n_times, n_trajectories, n_state) in float64, with its
    times and its parameters where ``t`` and ``p`` are not given.

    With a ``system``, the stored states (and the stored parameters, where ``p`` is not given)
    are met by name: put in the system's order where the file holds the same names in another
    order, refused where the names differ, since taken by position each column would be read
    as another quantity."""
    ys = torch.from_numpy(data.states[()]).to(torch.float64).transpose(0, 1)
    params = data.params
    if system is not None:
        columns = _stored_order(data, "states", data.state_names, list(system.state_names),
                                system)  # fmt: skip
        if columns is not None:
            ys = ys[..., columns]
        if p is None:
            columns = _stored_order(data, "parameters", data.parameter_names,
                                    list(system.parameters), system)  # fmt: skip
            if columns is not None:
                params = params[:, columns]
    return ys, data.t if t is None else t, params if p is None else p


def _stored_order(data, what: str, stored: list[str], ours: list[str], system) -> list[int] | None:
    """The columns that put a data set's stored ``what`` (``"states"``, ``"parameters"``), named
    ``stored``, in the order ``ours`` of ``system`` (``None``: they are in it already)."""
    stored = list(stored)
    if stored == ours:
        return None
    if sorted(stored) == sorted(ours):
        return [stored.index(name) for name in ours]
    hint = (
        "pass the data set's own system, data.system"
        if what == "states"
        else "pass the data set's own system, data.system, or the parameters as p="
    )
    raise InvalidArgumentError(
        f"the data set {str(data.path)!r} stores the {what} {stored}; system {system.name!r} "
        f"has the {what} {ours}: they are met by name (their order may differ), and these "
        f"names differ; {hint}"
    )


def _times(t, n_times: int) -> torch.Tensor | None:
    """The output times as a 1-D float tensor of ``n_times`` values (lists and arrays too)."""
    if t is None:
        return None
    try:
        times = torch.as_tensor(t).detach()
    except (TypeError, ValueError, RuntimeError):
        raise InvalidArgumentError(
            f"t must be the output times, a 1-D tensor of {n_times} values, got {type(t).__name__}"
        ) from None
    if times.shape != (n_times,):
        raise InvalidArgumentError(
            f"t has shape {tuple(times.shape)}; it must hold one time per row of ys, shape "
            f"({n_times},)"
        )
    return times if times.is_floating_point() else times.to(torch.float64)


def _parameters(p, system, ys: torch.Tensor) -> torch.Tensor:
    """``p`` as a tensor ``(n_params,)`` or ``(*batch_shape, n_params)`` (or broadcastable) for
    states ``ys`` (n_times, *batch_shape, n_state): real numbers, a dict, text, booleans or
    complex numbers refused by name, as ``system.rhs`` refuses them."""
    batch_shape = tuple(ys.shape[1:-1])
    expected = f"({system.n_params},) or {(*batch_shape, system.n_params)}"
    p = system._real_parameters(p, ys).detach()
    try:
        fits = p.ndim >= 1 and p.shape[-1] == system.n_params
        fits = fits and np.broadcast_shapes(p.shape[:-1], batch_shape) == tuple(batch_shape)
    except ValueError:
        fits = False
    if not fits:
        raise InvalidArgumentError(
            f"p has shape {tuple(p.shape)}; {system.name} needs {expected} with parameters "
            f"{list(system.parameters)}"
        )
    return p
