"""Checking a stored data set: invariants recomputed from its states, their drift, table, plot."""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import os
from collections.abc import Mapping
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path

import numpy as np
import torch

from physode._checks import is_int
from physode._errors import DataFormatError, InvalidArgumentError, first_shown
from physode._files import json_ready
from physode._repr import attempted, number_text, short_repr
from physode.data._store import FLAG_SOLVER_FAILED, first_few
from physode.data.stored import TrajectoryFile, load
from physode.diagnostics import _conservation
from physode.diagnostics._conservation import FLOAT32_DRIFT, float32_rounding

#: How far beyond its rtol a solve's invariants may drift and still be what that rtol gives: the
#: factor the rollout reports flag above (physode.train's default conservation tolerance).
RTOL_DRIFT = 100

__all__ = [
    "CheckReport",
    "InvariantSummary",
    "NonFiniteStates",
    "SolverFailure",
    "check",
    "drift_per_trajectory",
    "finite_points",
    "largest_drift",
]


def counted(n: int, singular: str, plural: str) -> str:
    """``n`` and the noun that goes with it.

    >>> counted(1, "trajectory", "trajectories"), counted(3, "trajectory", "trajectories")
    ('1 trajectory', '3 trajectories')
    """
    return f"{n} {singular if n == 1 else plural}"


# Why a solve stopped, in words, by physode.Status name.
_CAUSES = {
    "MAX_STEPS": "max_steps used up",
    "STEP_SIZE_UNDERFLOW": "step-size underflow",
    "NON_FINITE": "non-finite state",
}


def status_names(attrs: Mapping) -> dict[int, str]:
    """Status code -> name: the file's own ``status_codes`` table where it has a readable one,
    else :class:`physode.Status`'s."""
    import physode

    names = {int(s): s.name for s in physode.Status}
    try:
        table = json.loads(attrs.get("status_codes") or "{}")
    except (TypeError, ValueError):
        table = {}
    if isinstance(table, dict):
        names.update({v: k for k, v in table.items() if isinstance(v, int)})
    return names


def cause(code: int, names: Mapping[int, str]) -> str:
    """Why a solve stopped, in words, from its status ``code``.

    >>> names = {0: "SUCCESS", 1: "MAX_STEPS", 2: "STEP_SIZE_UNDERFLOW", 3: "NON_FINITE"}
    >>> cause(2, names), cause(1, names), cause(9, names)
    ('step-size underflow', 'max_steps used up', 'unknown cause (status code 9)')
    """
    name = names.get(int(code))
    if name is None or name == "SUCCESS":  # a failure flag without a failed status
        return f"unknown cause (status code {int(code)})"
    return _CAUSES.get(name, name.lower().replace("_", " "))


@dataclass(frozen=True)
class SolverFailure:
    """A trajectory whose solve stopped before the last output time (flag bit 1).

    Attributes
    ----------
    trajectory : int
        Its row in the data set.
    cause : str
        Why it stopped, in words: ``"step-size underflow"`` (the error control shrank the
        step to the limit of floating point: a blow-up or a discontinuity), ``"max_steps used
        up"``, ``"non-finite state"``, or ``"unknown cause (status code K)"``.
    t_reached : float or None
        The time the solve reached; ``None`` where the file does not store it (files written
        before 2026-12).

    Examples
    --------
    >>> SolverFailure(4, "step-size underflow", 1.25).describe()
    '4 (t = 1.25)'
    """

    trajectory: int
    cause: str
    t_reached: float | None = None

    def describe(self) -> str:
        """The trajectory and the time it reached, for a list."""
        if self.t_reached is None:
            return str(self.trajectory)
        return f"{self.trajectory} (t = {self.t_reached:.4g})"


def solver_failures(data: TrajectoryFile) -> list[SolverFailure]:
    """The trajectories of ``data`` flagged as solver failures, ascending, with their cause and
    the time they reached."""
    rows = np.flatnonzero((data.flags & FLAG_SOLVER_FAILED) != 0)
    names = status_names(data.attrs)
    return [
        SolverFailure(
            int(i),
            cause(data.status[i], names),
            None if data.t_final is None else float(data.t_final[i]),
        )
        for i in rows
    ]


@dataclass(frozen=True)
class NonFiniteStates:
    """A trajectory whose stored states hold inf or NaN where its solve did not stop.

    A successful solve stores finite states, and a failed one NaN only after the time it
    reached; inf or NaN elsewhere come from storage (float32 rounds values beyond about 3.4e38
    to inf) or from the writer of an earlier physode.

    Attributes
    ----------
    trajectory : int
        Its row in the data set.
    index : int
        The first output time (index into ``t``) whose state holds a value that is not finite;
        the states before it are finite.
    t : float
        That time.
    value : str
        ``"inf"`` where that state holds an infinity, else ``"NaN"``.

    Examples
    --------
    >>> NonFiniteStates(2, 9, 90.0, "inf").describe()
    '2 (inf from t[9] = 90)'
    """

    trajectory: int
    index: int
    t: float
    value: str = "NaN"

    def describe(self) -> str:
        """The trajectory and where its states stop being finite, for a list."""
        return f"{self.trajectory} ({self.value} from t[{self.index}] = {self.t:.4g})"


def finite_points(states: np.ndarray) -> np.ndarray:
    """Per trajectory, how many of its first states are finite in every component.

    Parameters
    ----------
    states : numpy.ndarray, shape (N, P, n_state)

    Returns
    -------
    numpy.ndarray of int, shape (N,)
        The index of each trajectory's first state that holds inf or NaN, or ``P`` where every
        one is finite.

    Examples
    --------
    >>> states = np.array([[[0.0], [1.0], [2.0]], [[0.0], [np.inf], [2.0]]])
    >>> finite_points(states)
    array([3, 1])
    """
    ys = torch.from_numpy(np.asarray(states)).transpose(0, 1)
    return _conservation.finite_points(ys).numpy()


def largest_drift(drift: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Per trajectory, the largest drift over its first ``points`` output times.

    The drift of a trajectory over the states it reached: a failed solve's, up to the time it
    stopped (``points`` from :func:`finite_points`). A NaN among those points (an invariant
    that is not a number) stays NaN, as does a trajectory with no point at all.

    Parameters
    ----------
    drift : numpy.ndarray, shape (N, P)
        Relative drift over time, as :func:`drift_per_trajectory` returns it.
    points : numpy.ndarray of int, shape (N,)

    Returns
    -------
    numpy.ndarray, shape (N,)

    Examples
    --------
    >>> drift = np.array([[0.0, 1e-9, 3e-9], [0.0, 2e-9, np.nan]])
    >>> largest_drift(drift, np.array([3, 2]))
    array([3.e-09, 2.e-09])
    """
    drift = torch.from_numpy(np.asarray(drift, dtype=np.float64)).T
    return _conservation.largest_drift(drift, torch.from_numpy(np.asarray(points))).numpy()


@dataclass(frozen=True)
class InvariantSummary:
    """Drift of one invariant over some trajectories of a data set, as :func:`check` reports
    it: those solved to the end with finite states (:attr:`CheckReport.invariants`), or the
    ones kept apart, each over its states before the first that is not finite
    (:attr:`CheckReport.partial_drift`).

    Attributes
    ----------
    name : str
    median : float
        Median over the trajectories of each one's largest relative drift.
    worst : float
        The largest relative drift of one of them (``inf`` if an invariant is not a number
        along one).
    worst_trajectories : list of (int, float)
        The trajectories with the largest drift, worst first, with their drift.
    """

    name: str
    median: float
    worst: float
    worst_trajectories: list[tuple[int, float]]


def _worst_drifts(summaries: list[InvariantSummary]) -> str:
    """Each invariant's worst drift: ``{'energy': 3e-11}``."""
    return "{" + ", ".join(f"{s.name!r}: {number_text(s.worst)}" for s in summaries) + "}"


@dataclass
class CheckReport:
    """The result of :func:`check`: solver failures, trajectories whose stored states are not
    finite, and per invariant the drift of the other trajectories against a tolerance.

    A failed trajectory (flag bit 1) stops early, with NaN states after the point it reached,
    and a trajectory whose stored states turn inf or NaN (float32 storage overflowed, say) has
    no drift to measure from there on: both are kept apart from the drift statistics, which
    cover the trajectories solved to the end with finite states. The drift of those kept apart,
    each over its states before the first that is not finite (a failure's, up to the time it
    reached), is reported on its own. The check passes only when no trajectory is kept apart
    and every invariant stays within the tolerance.

    Attributes
    ----------
    path : str
    tolerance : float
    n_trajectories : int
    failed_trajectories : list of int
        The rows of the trajectories flagged as solver failures (flag bit 1), ascending; the
        check fails when there is any.
    failures : list of SolverFailure
        Why each of them stopped and the time it reached (a failed trajectory missing here is
        shown with its cause unknown).
    n_failed : int
        Their number (a property, so the two always agree).
    non_finite : list of NonFiniteStates
        The trajectories whose stored states hold inf or NaN before the time their solve
        reached (any, for a successful solve), with the first output time that does; the check
        fails when there is any.
    invariants : list of InvariantSummary
        One per invariant, over the trajectories solved to the end with finite states; empty
        when the system declares no invariants or there are no such trajectories.
    partial_drift : list of InvariantSummary
        One per invariant, over the trajectories kept apart (failed, or with non-finite
        states), each up to its first state that is not finite; empty where there are none.
    t : numpy.ndarray or None
        The output times, for :meth:`plot`.
    curves : dict of str to dict of int to numpy.ndarray
        Per invariant, the drift over time of each of its worst trajectories.
    stored_dtype : str or None
        The dtype the states are stored in (``"float32"``, ``"float64"``), for the table's
        hint on float32 rounding.
    solved_drift : dict of str to float, or None
        Per invariant, the worst drift of the float64 solution over the trajectories the
        statistics cover, as ``physode simulate`` measured it before storing (``data.drift``;
        None for files that do not store it). For the table's hint on float32 rounding.
    solver : dict or None
        The ``rtol`` and ``atol`` the data set was solved with (``data.solver``; None where the
        file does not record them), for the table's hint on a tolerance below what they give.

    The fields after ``n_trajectories`` are keywords.

    Examples
    --------
    >>> energy = InvariantSummary("energy", 1e-12, 3e-11, [(2, 3e-11)])
    >>> report = CheckReport("a.h5", 1e-6, 4, invariants=[energy])
    >>> report.passed
    True
    >>> print(report.table())  # doctest: +NORMALIZE_WHITESPACE
    a.h5: 4 trajectories, 0 solver failures
    invariant  median drift  worst drift  worst trajectories (drift)
    energy     1.00e-12      3.00e-11     2 (3.0e-11)
    all invariants within tolerance 1e-06
    >>> underflow = SolverFailure(3, "step-size underflow", t_reached=1.25)
    >>> before = InvariantSummary("energy", 2e-4, 2e-4, [(3, 2e-4)])
    >>> report = CheckReport("b.h5", 1e-6, 4, invariants=[energy], failed_trajectories=[3],
    ...                      failures=[underflow], partial_drift=[before],
    ...                      t=np.linspace(0.0, 2.0, 21))
    >>> report.passed, report.failing, report.n_failed
    (False, [], 1)
    >>> print(report.table())  # doctest: +NORMALIZE_WHITESPACE
    b.h5: 4 trajectories, 1 solver failure (trajectory 3)
    solver failures by cause (t: the time each reached, of 2):
      step-size underflow  1: trajectory 3 (t = 1.25)
    drift over the 3 trajectories solved to the end:
    invariant  median drift  worst drift  worst trajectories (drift)
    energy     1.00e-12      3.00e-11     2 (3.0e-11)
    all invariants within tolerance 1e-06
    drift of the failed trajectory, over the output times it reached:
    invariant  median drift  worst drift  worst trajectories (drift)
    energy     2.00e-04      2.00e-04     3 (2.0e-04)
    check failed: the file has 1 solver failure (trajectories that stopped before the final
    time, flag bit 1)
    """

    path: str
    tolerance: float
    n_trajectories: int
    _: KW_ONLY
    failed_trajectories: list[int] = field(default_factory=list)
    failures: list[SolverFailure] = field(default_factory=list)
    non_finite: list[NonFiniteStates] = field(default_factory=list)
    invariants: list[InvariantSummary] = field(default_factory=list)
    partial_drift: list[InvariantSummary] = field(default_factory=list)
    t: np.ndarray | None = None
    curves: dict[str, dict[int, np.ndarray]] = field(default_factory=dict)
    stored_dtype: str | None = None
    solved_drift: dict[str, float] | None = None
    solver: dict[str, float] | None = None

    def __repr__(self) -> str:
        # The verdict and each invariant's worst drift; t and the curves are for plot().
        return short_repr(
            self,
            "passed",
            "n_trajectories",
            "n_failed",
            ("non_finite", len),
            ("tolerance", number_text),
            ("invariants", _worst_drifts),
            ("partial_drift", _worst_drifts),
            head=[attempted(lambda: repr(self.path))],
        )

    @property
    def n_failed(self) -> int:
        """Trajectories flagged as solver failures: the length of ``failed_trajectories``."""
        return len(self.failed_trajectories)

    @property
    def n_succeeded(self) -> int:
        """Trajectories solved to the end (finite stored states or not)."""
        return self.n_trajectories - self.n_failed

    @property
    def n_measured(self) -> int:
        """Trajectories solved to the end with finite states, the ones the drift statistics
        (:attr:`invariants`) cover."""
        failed = set(self.failed_trajectories)
        apart = failed | {states.trajectory for states in self.non_finite}
        return self.n_trajectories - len(apart)

    @property
    def failing(self) -> list[str]:
        """Names of the invariants whose worst drift, over the trajectories solved to the end
        with finite states, exceeds the tolerance."""
        return [d.name for d in self.invariants if not d.worst <= self.tolerance]

    @property
    def passed(self) -> bool:
        """Whether no trajectory failed or stored states that are not finite, and every
        invariant stays within the tolerance on every trajectory."""
        return not self.failing and self.n_failed == 0 and not self.non_finite

    def to_dict(self) -> dict:
        """The report as JSON holds it, for ``physode check --json`` and scripts.

        Every field but the plotting data (``t``, ``curves``) and the hints'
        (``stored_dtype``, ``solved_drift``, ``solver``), with :attr:`passed`,
        :attr:`failing` and :attr:`n_failed`, in plain Python values: a failure or an invariant
        summary is a dict of its fields, a worst trajectory a list ``[trajectory, drift]``, and
        a number that is not finite (the drift of inf or NaN states) is ``None``, which JSON
        readers accept where they refuse ``Infinity`` and ``NaN``. ``json.dumps`` writes it
        as it is.

        Examples
        --------
        >>> energy = InvariantSummary("energy", 1e-12, math.inf, [(2, math.inf), (0, 3e-11)])
        >>> record = CheckReport("a.h5", 1e-6, 4, invariants=[energy]).to_dict()
        >>> record["passed"], record["failing"], record["invariants"][0]["worst"]
        (False, ['energy'], None)
        >>> record["invariants"][0]["worst_trajectories"]
        [[2, None], [0, 3e-11]]
        >>> json.dumps(record["failures"])
        '[]'
        """
        fields = {
            f.name: json_ready(getattr(self, f.name))
            for f in dataclasses.fields(self)
            if f.name not in ("t", "curves", "stored_dtype", "solved_drift", "solver")
        }
        fields["path"] = str(self.path)
        derived = {"passed": self.passed, "failing": self.failing, "n_failed": self.n_failed}
        return {**fields, **derived}

    def table(self) -> str:
        """The report as a plain-text table."""
        header = (
            f"{self.path}: {counted(self.n_trajectories, 'trajectory', 'trajectories')}, "
            f"{counted(self.n_failed, 'solver failure', 'solver failures')}"
        )
        if self.failed_trajectories:
            noun = "trajectory" if self.n_failed == 1 else "trajectories"
            header += f" ({noun} {first_few(self.failed_trajectories, shown=10)})"
        if self.non_finite:
            rows = [states.trajectory for states in self.non_finite]
            noun = "trajectory" if len(rows) == 1 else "trajectories"
            header += f", {len(rows)} with non-finite states ({noun} {first_few(rows, shown=10)})"
        lines = [header, *self._failure_table(), *self._non_finite_table()]
        lines += [*self._drift_table(), *self._partial_drift_table()]
        problems = []
        if self.n_failed:
            problems.append(
                f"{counted(self.n_failed, 'solver failure', 'solver failures')} (trajectories "
                "that stopped before the final time, flag bit 1)"
            )
        if self.non_finite:
            n = len(self.non_finite)
            problems.append(
                f"{counted(n, 'trajectory', 'trajectories')} with stored states that are not "
                "finite (inf or NaN where the solve did not stop)"
            )
        if problems:
            lines.append("check failed: the file has " + " and ".join(problems))
        return "\n".join(lines)

    def _failure_table(self, shown: int = 5) -> list[str]:
        """The failed trajectories grouped by cause, most common first, each with the time it
        reached."""
        if not self.failed_trajectories:
            return []
        known = {failure.trajectory: failure for failure in self.failures}
        groups: dict[str, list[SolverFailure]] = {}
        for i in self.failed_trajectories:
            failure = known.get(i, SolverFailure(i, "cause unknown"))
            groups.setdefault(failure.cause, []).append(failure)
        lines = ["solver failures by cause:"]
        if any(failure.t_reached is not None for failure in self.failures):
            end = f", of {float(self.t[-1]):.4g}" if self.t is not None and len(self.t) else ""
            lines = [f"solver failures by cause (t: the time each reached{end}):"]
        width = max(len(name) for name in groups)
        for name, failures in sorted(groups.items(), key=lambda group: -len(group[1])):
            listed = first_shown(failures, shown, text=lambda failure: failure.describe())
            noun = "trajectory" if len(failures) == 1 else "trajectories"
            lines.append(f"  {name.ljust(width)}  {len(failures)}: {noun} {listed}")
        if any(failure.t_reached is None for failure in self.failures):
            lines.append(
                "  (this file does not store the time each solve reached: physode stores it "
                "since 2026-12)"
            )
        return lines

    def _non_finite_table(self, shown: int = 5) -> list[str]:
        """The trajectories whose stored states are not finite, each with where that starts."""
        if not self.non_finite:
            return []
        listed = first_shown(self.non_finite, shown, text=lambda states: states.describe())
        noun = "trajectory" if len(self.non_finite) == 1 else "trajectories"
        lines = [
            "stored states that are not finite (t[i]: the first output time that holds one):",
            f"  {noun} {listed}",
        ]
        if any(states.value == "inf" for states in self.non_finite):
            lines.append(
                "  (float32 storage turns values beyond about 3.4e38 into inf; store such "
                "data sets as float64)"
            )
        return lines

    def _drift_table(self) -> list[str]:
        """The lines of the drift table and its verdict."""
        if self.n_trajectories and not self.n_measured:
            if self.non_finite:
                return [
                    "no trajectory was solved to the end with finite states; no drift to "
                    "report over whole trajectories"
                ]
            return ["no trajectory was solved to the end; no drift to report"]
        if not self.invariants:
            return ["the system declares no invariants; nothing to check"]
        lines = []
        if self.non_finite:
            lines.append(
                f"drift over the {counted(self.n_measured, 'trajectory', 'trajectories')} "
                "solved to the end with finite states:"
            )
        elif self.n_failed:
            lines.append(
                f"drift over the {counted(self.n_measured, 'trajectory', 'trajectories')} "
                "solved to the end:"
            )
        lines += _summary_rows(self.invariants)
        if self.failing:
            lines.append(f"beyond tolerance {self.tolerance:g}: {', '.join(self.failing)}")
            lines += self._float32_hint() + self._solver_hint()
        else:
            lines.append(f"all invariants within tolerance {self.tolerance:g}")
        return lines

    def _float32_hint(self) -> list[str]:
        """Where float32 states fail a tolerance below what their rounding alone drifts: why,
        with the drift of the float64 solution behind them where the file stores it."""
        if self.stored_dtype != "float32" or not self.tolerance < FLOAT32_DRIFT:
            return []
        solved = ""
        known = {name: self.solved_drift[name] for name in self.failing
                 if self.solved_drift and name in self.solved_drift}  # fmt: skip
        if known:
            worst = ", ".join(f"{name} {value:.1e}" for name, value in known.items())
            solved = f"; the float64 solve behind them drifted by at most {worst}"
        return [
            f"  ({float32_rounding('stored as ')}{solved}: check float32 files with --tolerance "
            "1e-4, physode.data.check(..., tolerance=1e-4))"
        ]

    def _solver_hint(self) -> list[str]:
        """Where the tolerance is far below the drift the data set's solver tolerances give
        (up to about :data:`RTOL_DRIFT` times rtol): which they were."""
        rtol = (self.solver or {}).get("rtol")
        if not isinstance(rtol, numbers.Real) or not self.tolerance < RTOL_DRIFT * rtol:
            return []
        atol = self.solver.get("atol")
        solved = f"rtol={rtol:g}" + (f", atol={atol:g}" if isinstance(atol, numbers.Real) else "")
        return [
            f"  (the data set was solved with {solved}, whose error alone drifts by up to about "
            f"{RTOL_DRIFT} times rtol: check it with --tolerance {RTOL_DRIFT * rtol:g}, or "
            "simulate it again with a smaller --rtol)"
        ]

    def _partial_drift_table(self) -> list[str]:
        """The drift of the trajectories kept apart, up to where each stops being finite."""
        if not self.partial_drift:
            return []
        failed = set(self.failed_trajectories)
        apart = failed | {states.trajectory for states in self.non_finite}
        n = len(apart)
        if apart == failed:
            which = "failed trajectory" if n == 1 else f"{n} failed trajectories"
            until = "it reached" if n == 1 else "each reached"
            heading = f"drift of the {which}, over the output times {until}:"
        else:
            which = counted(n, "trajectory", "trajectories")
            if failed:
                which += " kept apart (failed or with non-finite states)"
            else:
                which += " with non-finite states"
            up_to = "up to its" if n == 1 else "each up to its"
            heading = f"drift of the {which}, {up_to} first state that is not finite:"
        return [heading, *_summary_rows(self.partial_drift)]

    def plot(self, path: str | os.PathLike) -> Path:
        """Plot relative drift over time of the worst trajectories, one panel per invariant.

        Returns the path of the image written.

        Raises
        ------
        physode.InvalidArgumentError
            If ``path`` does not end in an image format or its folder does not exist (checked
            before drawing).
        """
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        from physode.diagnostics._conservation import image_path, save_figure

        path = image_path(path)
        # A figure of its own on an Agg canvas, not pyplot's: pyplot's backend, and the
        # figures a caller has open with it, stay as they are.
        panels = max(1, len(self.invariants))
        fig = Figure(figsize=(7, 2.6 * panels))
        FigureCanvasAgg(fig)
        axes = fig.subplots(panels, 1, squeeze=False)
        for ax, d in zip(axes[:, 0], self.invariants, strict=False):
            curves = self.curves.get(d.name, {})
            if not any(np.isfinite(curve[1:]).any() for curve in curves.values()):
                # every drift is NaN (failed solves): the tolerance line alone spans no range
                ax.set_yscale("log")
                ax.set_ylim(self.tolerance / 10, self.tolerance * 10)
                if self.t is not None:
                    ax.set_xlim(self.t[0], self.t[-1])
            for index, curve in curves.items():
                # zero drift (the first point) cannot show on a log axis
                ax.semilogy(self.t[1:], np.maximum(curve[1:], 1e-18), label=f"trajectory {index}")
            ax.axhline(self.tolerance, color="k", linestyle="--", linewidth=0.8, label="tolerance")
            ax.set_title(f"{d.name}: relative drift of the worst trajectories")
            ax.set_xlabel("t")
            ax.set_ylabel("|I(t) - I(0)| / S")
            ax.legend(fontsize="small")
        if not self.invariants:
            solved = self.n_measured or not self.n_trajectories
            title = "no invariants declared" if solved else "no trajectory solved to the end"
            if not solved and self.non_finite:
                title += " with finite states"
            axes[0, 0].set_title(title)
        fig.tight_layout()
        save_figure(fig, path, dpi=120)
        return path


def _summary_rows(summaries: list[InvariantSummary]) -> list[str]:
    """A table of median and worst drift per invariant, with the worst trajectories."""
    rows = [("invariant", "median drift", "worst drift", "worst trajectories (drift)")]
    for d in summaries:
        worst = ", ".join(f"{i} ({v:.1e})" for i, v in d.worst_trajectories)
        rows.append((d.name, f"{d.median:.2e}", f"{d.worst:.2e}", worst))
    widths = [max(len(row[k]) for row in rows) for k in range(3)]
    return [
        "  ".join([*(row[k].ljust(widths[k]) for k in range(3)), row[3]]).rstrip() for row in rows
    ]


def drift_per_trajectory(
    system,
    states: torch.Tensor,
    params: torch.Tensor,
    t: torch.Tensor,
    invariants: Mapping[str, np.ndarray] | None = None,
):
    """Relative drift of every invariant along each trajectory, as in ``physode.diagnostics``.

    The drift is ``|I(t) - I(0)| / S`` with ``S`` the sum of the absolute values of the terms
    of ``I`` at ``t = 0``, or its median along the trajectory where that is larger (see
    :func:`physode.diagnostics.drift_scales`), so an invariant that is zero, like the total
    momentum in the centre-of-mass frame, is not divided by zero.

    Parameters
    ----------
    system : physode.System
    states : torch.Tensor, shape (N, P, n_state)
    params : torch.Tensor, shape (N, n_params)
    t : torch.Tensor, shape (P,)
    invariants : mapping of str to numpy.ndarray, optional
        The invariants already evaluated at ``states`` (``system.invariants``, each float64 of
        shape (N, P)), as ``simulate`` has them: the drift of those values, with the same
        arithmetic as :func:`physode.diagnostics.conservation`. Evaluated here when omitted.

    Returns
    -------
    dict of str to numpy.ndarray
        Per invariant, the drift of shape (N, P); NaN from each trajectory's first state that
        is not finite on.

    Examples
    --------
    >>> import physode.systems
    >>> osc = physode.systems.load("harmonic_oscillator")
    >>> states = torch.tensor([[[1.0, 0.0], [0.0, 1.1]]], dtype=torch.float64)
    >>> params, t = torch.tensor([[1.0, 1.0]]), torch.tensor([0.0, 1.0])
    >>> drift = drift_per_trajectory(osc, states, params, t)
    >>> drift["energy"]  # energy 0.5 then 0.605: 0.105 / 0.5
    array([[0.  , 0.21]])
    >>> values = {"energy": np.array([[0.5, 0.605]])}
    >>> drift_per_trajectory(osc, states, params, t, invariants=values)["energy"]
    array([[0.  , 0.21]])
    """
    from physode.diagnostics import conservation, drift_scales
    from physode.diagnostics._conservation import relative_drift, split_parameters

    ys = states.to(torch.float64).transpose(0, 1)  # (P, N, n_state), as odeint returns them
    p = params.to(torch.float64)
    if invariants is None:
        report = conservation(system, ys, t.to(torch.float64), tolerance=math.inf, p=p)
        return {name: d.rel_drift.T.numpy() for name, d in report.invariants.items()}
    # What conservation() does, without evaluating the invariants again: their scales alone.
    ys, p = split_parameters(system, ys, p)
    scales = drift_scales(system, ys, p)
    return {
        name: relative_drift(torch.from_numpy(values).T, scales[name]).T.numpy()
        for name, values in invariants.items()
    }


def _drifts(data: TrajectoryFile, system, rows, states=None) -> dict[str, np.ndarray]:
    states = torch.as_tensor(data.states[rows] if states is None else states)
    params = torch.as_tensor(data.params[rows])
    with torch.inference_mode():
        return drift_per_trajectory(system, states, params, torch.as_tensor(data.t))


def _summary(name: str, per_trajectory: np.ndarray, rows: np.ndarray, worst: int):
    drifts = per_trajectory[rows]
    order = rows[np.argsort(-drifts, kind="stable")[:worst]]
    return InvariantSummary(
        name=name,
        median=float(np.median(drifts)),
        worst=float(per_trajectory[order[0]]),
        worst_trajectories=[(int(i), float(per_trajectory[i])) for i in order],
    )


def check(
    path: str | os.PathLike,
    *,
    tolerance: float = 1e-6,
    worst: int = 3,
    batch: int = 256,
) -> CheckReport:
    """Recompute every invariant from a data set's stored states and report its drift.

    The system is rebuilt from the specification stored in the file and evaluated with each
    trajectory's stored parameters, so the check needs nothing but the file. It reads every
    dataset, which verifies every block's checksum. The drift statistics cover the trajectories
    solved to the end with finite states. Those flagged as solver failures (NaN after the point
    they reached) are listed apart, with why each stopped and the time it reached; those whose
    stored states hold inf or NaN before that (a float32 overflow, say) are listed apart too,
    with the first output time that does. Either makes the check fail; the drift of both, each
    up to its first state that is not finite, is reported on its own.

    Parameters
    ----------
    path : str or path-like
        A data set written by ``physode simulate``.
    tolerance : float
        Largest relative drift (see :func:`drift_per_trajectory`) accepted.
    worst : int
        How many of the worst trajectories to name (and keep for :meth:`CheckReport.plot`).
    batch : int
        Trajectories read at a time (bounds the memory used).

    Returns
    -------
    CheckReport
        ``.passed`` (no solver failures, no states that are not finite, and every invariant
        within the tolerance), ``.failing``, ``.failed_trajectories``, ``.failures`` (cause and
        time reached of each), ``.non_finite``, ``.partial_drift``, ``.table()``,
        ``.plot(path)``.

    Raises
    ------
    physode.DataFormatError
        If the file is not a readable physode data set or a block fails its checksum.
    physode.InvalidArgumentError
        For a tolerance that is not a positive number, or ``worst``/``batch`` below 1.

    Examples
    --------
    >>> report = physode.data.check("pendulum.h5", tolerance=1e-8)   # doctest: +SKIP
    >>> report.passed                                               # doctest: +SKIP
    True
    """
    if (
        isinstance(tolerance, bool)
        or not isinstance(tolerance, numbers.Real)
        or not (math.isfinite(tolerance) and tolerance > 0)
    ):
        raise InvalidArgumentError(f"tolerance={tolerance!r} must be a finite number > 0")
    for name, value in (("worst", worst), ("batch", batch)):
        if not is_int(value, least=1):
            raise InvalidArgumentError(f"{name}={value!r} must be an integer >= 1")
    with load(path) as data:
        system = data.system
        n, p = data.states.shape[:2]
        # The invariants the stored system defines, recomputed; the stored ones are data.
        # Each trajectory's largest drift over its states up to the first that is not finite.
        worst_per_trajectory = {name: np.empty(n) for name in system.invariant_names}
        points = np.empty(n, dtype=np.int64)
        infinite = np.zeros(n, dtype=bool)  # the first state that is not finite holds an inf
        for start in range(0, n, batch):
            rows = slice(start, min(n, start + batch))
            states = data.states[rows]
            points[rows] = finite_points(states)
            stopped = np.flatnonzero(points[rows] < p)
            infinite[start + stopped] = np.isinf(states[stopped, points[rows][stopped]]).any(-1)
            # conservation() measures each up to its first state that is not finite
            for name, drift in _drifts(data, system, rows, states).items():
                largest = largest_drift(drift, points[rows])
                worst_per_trajectory[name][rows] = np.where(np.isnan(largest), np.inf, largest)
            # Read the rest too, so that every block's checksum is verified.
            others = [data.derivatives, data.noisy_states, *data.invariants.values()]
            for array in others:
                if array is not None:
                    array[rows]

        failed = (data.flags & FLAG_SOLVER_FAILED) != 0
        # A failed solve stores NaN after the time it reached; anything not finite before it,
        # or anywhere along a successful solve, is not what the solver computed.
        non_finite = (points < p) & ~failed
        if data.t_final is not None:
            first = data.t[np.minimum(points, p - 1)]
            non_finite |= (points < p) & failed & (first < data.t_final)
        failures = solver_failures(data)
        report = CheckReport(
            path=str(path),
            tolerance=float(tolerance),
            n_trajectories=n,
            failed_trajectories=[failure.trajectory for failure in failures],
            failures=failures,
            non_finite=[
                NonFiniteStates(
                    int(i),
                    int(points[i]),
                    float(data.t[points[i]]),
                    "inf" if infinite[i] else "NaN",
                )
                for i in np.flatnonzero(non_finite)
            ],
            t=data.t,
            stored_dtype=str(data.states.dtype),
        )
        try:
            solver = data.solver
        except DataFormatError:  # a file that records no solver
            solver = {}
        report.solver = {key: solver[key] for key in ("rtol", "atol") if key in solver} or None
        measured = np.flatnonzero(~failed & ~non_finite)
        if data.drift is not None and measured.size:
            report.solved_drift = {
                name: float(np.nanmax(drift[measured]))
                for name, drift in data.drift.items()
                if not np.isnan(drift[measured]).all()
            }
        apart = np.flatnonzero((failed | non_finite) & (points > 0))
        for name, per_trajectory in worst_per_trajectory.items():
            if apart.size:
                report.partial_drift.append(_summary(name, per_trajectory, apart, worst))
            if not measured.size:
                continue
            summary = _summary(name, per_trajectory, measured, worst)
            report.invariants.append(summary)
            rows = np.sort([i for i, _ in summary.worst_trajectories])
            curves = _drifts(data, system, rows)[name]
            report.curves[name] = {int(i): curves[k] for k, i in enumerate(rows)}
    return report
