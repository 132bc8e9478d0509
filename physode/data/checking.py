"""Checking a stored data set: invariants recomputed from its states, their drift, table, plot."""

from __future__ import annotations

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
from physode._errors import InvalidArgumentError
from physode.data._store import FLAG_SOLVER_FAILED, first_few
from physode.data.stored import TrajectoryFile, load

__all__ = ["CheckReport", "InvariantSummary", "SolverFailure", "check", "drift_per_trajectory"]


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
class InvariantSummary:
    """Drift of one invariant over the trajectories of a data set solved to the end, as
    :func:`check` reports it (solver failures are counted apart, in :class:`CheckReport`).

    Attributes
    ----------
    name : str
    median : float
        Median over the successful trajectories of each one's largest relative drift.
    worst : float
        The largest relative drift of a successful trajectory (``inf`` if one has non-finite
        states or invariants).
    worst_trajectories : list of (int, float)
        The successful trajectories with the largest drift, worst first, with their drift.
    """

    name: str
    median: float
    worst: float
    worst_trajectories: list[tuple[int, float]]


@dataclass
class CheckReport:
    """The result of :func:`check`: solver failures, and per invariant the drift of the
    trajectories solved to the end against a tolerance.

    A failed trajectory (flag bit 1) stops early, with NaN states after the point it reached, so
    its drift says nothing about conservation: the drift statistics cover the other
    trajectories, and the failures are reported beside them. The check passes only when there
    are no failures and every invariant stays within the tolerance.

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
    invariants : list of InvariantSummary
        One per invariant, over the trajectories that did not fail; empty when the system
        declares no invariants or every trajectory failed.
    t : numpy.ndarray or None
        The output times, for :meth:`plot`.
    curves : dict of str to dict of int to numpy.ndarray
        Per invariant, the drift over time of each of its worst trajectories.

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
    >>> report = CheckReport("b.h5", 1e-6, 4, invariants=[energy], failed_trajectories=[3],
    ...                      failures=[underflow], t=np.linspace(0.0, 2.0, 21))
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
    check failed: the file has 1 solver failure (trajectories that stopped before the final
    time, flag bit 1)
    """

    path: str
    tolerance: float
    n_trajectories: int
    _: KW_ONLY
    failed_trajectories: list[int] = field(default_factory=list)
    failures: list[SolverFailure] = field(default_factory=list)
    invariants: list[InvariantSummary] = field(default_factory=list)
    t: np.ndarray | None = None
    curves: dict[str, dict[int, np.ndarray]] = field(default_factory=dict)

    @property
    def n_failed(self) -> int:
        """Trajectories flagged as solver failures: the length of ``failed_trajectories``."""
        return len(self.failed_trajectories)

    @property
    def n_succeeded(self) -> int:
        """Trajectories solved to the end, the ones the drift statistics cover."""
        return self.n_trajectories - self.n_failed

    @property
    def failing(self) -> list[str]:
        """Names of the invariants whose worst drift, over the successful trajectories, exceeds
        the tolerance."""
        return [d.name for d in self.invariants if not d.worst <= self.tolerance]

    @property
    def passed(self) -> bool:
        """Whether no trajectory failed and every invariant stays within the tolerance on every
        trajectory."""
        return not self.failing and self.n_failed == 0

    def table(self) -> str:
        """The report as a plain-text table."""
        header = (
            f"{self.path}: {counted(self.n_trajectories, 'trajectory', 'trajectories')}, "
            f"{counted(self.n_failed, 'solver failure', 'solver failures')}"
        )
        if self.failed_trajectories:
            noun = "trajectory" if self.n_failed == 1 else "trajectories"
            header += f" ({noun} {first_few(self.failed_trajectories, shown=10)})"
        lines = [header, *self._failure_table(), *self._drift_table()]
        if self.n_failed:
            lines.append(
                "check failed: the file has "
                f"{counted(self.n_failed, 'solver failure', 'solver failures')} (trajectories "
                "that stopped before the final time, flag bit 1)"
            )
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
            listed = ", ".join(failure.describe() for failure in failures[:shown])
            if len(failures) > shown:
                listed += f" and {len(failures) - shown} more"
            noun = "trajectory" if len(failures) == 1 else "trajectories"
            lines.append(f"  {name.ljust(width)}  {len(failures)}: {noun} {listed}")
        if any(failure.t_reached is None for failure in self.failures):
            lines.append(
                "  (this file does not store the time each solve reached: physode stores it "
                "since 2026-12)"
            )
        return lines

    def _drift_table(self) -> list[str]:
        """The lines of the drift table and its verdict."""
        if self.n_trajectories and not self.n_succeeded:
            return ["no trajectory was solved to the end; no drift to report"]
        if not self.invariants:
            return ["the system declares no invariants; nothing to check"]
        lines = []
        if self.n_failed:
            lines.append(
                f"drift over the {counted(self.n_succeeded, 'trajectory', 'trajectories')} "
                "solved to the end:"
            )
        rows = [("invariant", "median drift", "worst drift", "worst trajectories (drift)")]
        for d in self.invariants:
            worst = ", ".join(f"{i} ({v:.1e})" for i, v in d.worst_trajectories)
            rows.append((d.name, f"{d.median:.2e}", f"{d.worst:.2e}", worst))
        widths = [max(len(row[k]) for row in rows) for k in range(3)]
        for row in rows:
            cells = [row[k].ljust(widths[k]) for k in range(3)] + [row[3]]
            lines.append("  ".join(cells).rstrip())
        if self.failing:
            lines.append(f"beyond tolerance {self.tolerance:g}: {', '.join(self.failing)}")
        else:
            lines.append(f"all invariants within tolerance {self.tolerance:g}")
        return lines

    def plot(self, path: str | os.PathLike) -> Path:
        """Plot relative drift over time of the worst trajectories, one panel per invariant.

        Returns the path of the image written.

        Raises
        ------
        physode.InvalidArgumentError
            If ``path`` does not end in an image format or its folder does not exist (checked
            before drawing).
        """
        import matplotlib

        from physode.diagnostics._conservation import image_path, save_figure

        path = image_path(path)
        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        panels = max(1, len(self.invariants))
        fig, axes = plt.subplots(panels, 1, figsize=(7, 2.6 * panels), squeeze=False)
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
            solved = self.n_succeeded or not self.n_trajectories
            title = "no invariants declared" if solved else "no trajectory solved to the end"
            axes[0, 0].set_title(title)
        fig.tight_layout()
        try:
            save_figure(fig, path, dpi=120)
        finally:
            plt.close(fig)
        return path


def drift_per_trajectory(system, states: torch.Tensor, params: torch.Tensor, t: torch.Tensor):
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

    Returns
    -------
    dict of str to numpy.ndarray
        Per invariant, the drift of shape (N, P); NaN where a state is not finite.

    Examples
    --------
    >>> import physode.systems
    >>> osc = physode.systems.load("harmonic_oscillator")
    >>> states = torch.tensor([[[1.0, 0.0], [0.0, 1.1]]], dtype=torch.float64)
    >>> params, t = torch.tensor([[1.0, 1.0]]), torch.tensor([0.0, 1.0])
    >>> drift = drift_per_trajectory(osc, states, params, t)
    >>> drift["energy"]  # energy 0.5 then 0.605: 0.105 / 0.5
    array([[0.  , 0.21]])
    """
    from physode.diagnostics import conservation

    ys = states.to(torch.float64).transpose(0, 1)  # (P, N, n_state), as odeint returns them
    p = params.to(torch.float64)
    report = conservation(system, ys, t.to(torch.float64), tolerance=math.inf, p=p)
    return {name: d.rel_drift.T.numpy() for name, d in report.invariants.items()}


def _drifts(data: TrajectoryFile, system, rows) -> dict[str, np.ndarray]:
    states = torch.as_tensor(data.states[rows])
    params = torch.as_tensor(data.params[rows])
    with torch.inference_mode():
        return drift_per_trajectory(system, states, params, torch.as_tensor(data.t))


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
    solved to the end; those flagged as solver failures (NaN after the point they reached) are
    listed apart, with why each stopped and the time it reached, and make the check fail.

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
        ``.passed`` (no solver failures and every invariant within the tolerance),
        ``.failing``, ``.failed_trajectories``, ``.failures`` (cause and time reached of
        each), ``.table()``, ``.plot(path)``.

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
        n = len(data)
        # The invariants the stored system defines, recomputed; the stored ones are data.
        worst_per_trajectory = {name: np.empty(n) for name in system.invariant_names}
        for start in range(0, n, batch):
            rows = slice(start, min(n, start + batch))
            for name, drift in _drifts(data, system, rows).items():
                largest = np.max(drift, axis=1, initial=0.0)
                worst_per_trajectory[name][rows] = np.where(np.isnan(largest), np.inf, largest)
            # Read the rest too, so that every block's checksum is verified.
            others = [data.derivatives, data.noisy_states, *data.invariants.values()]
            for array in others:
                if array is not None:
                    array[rows]

        failed = (data.flags & FLAG_SOLVER_FAILED) != 0
        succeeded = np.flatnonzero(~failed)
        failures = solver_failures(data)
        report = CheckReport(
            path=str(path),
            tolerance=float(tolerance),
            n_trajectories=n,
            failed_trajectories=[failure.trajectory for failure in failures],
            failures=failures,
            t=data.t,
        )
        if succeeded.size == 0:
            return report
        for name, per_trajectory in worst_per_trajectory.items():
            drifts = per_trajectory[succeeded]
            order = succeeded[np.argsort(-drifts, kind="stable")[:worst]]
            report.invariants.append(
                InvariantSummary(
                    name=name,
                    median=float(np.median(drifts)),
                    worst=float(per_trajectory[order[0]]),
                    worst_trajectories=[(int(i), float(per_trajectory[i])) for i in order],
                )
            )
            rows = np.sort(order)
            curves = _drifts(data, system, rows)[name]
            report.curves[name] = {int(i): curves[k] for k, i in enumerate(rows)}
    return report
