"""After training: rollouts of a model on held-out trajectories, within and beyond the training
horizon, and the conservation of its rollouts next to the ground truth's."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

import physode
from physode._checks import converts_to_finite_real, is_int
from physode._defaults import MAX_STEPS
from physode._errors import InvalidArgumentError, SolverError
from physode._files import json_ready
from physode._repr import number_text, short_repr
from physode.solvers.control import attainable_rtol
from physode.train._rows import (
    learned_rows,
    model_parameters,
    parameter_rows,
    per_trajectory_names,
    solve_rows,
)
from physode.train._times import count_up_to, time_slack, times_up_to
from physode.train.config import (
    ADAPTIVE_METHODS,
    FIXED_STEP_METHODS,
    max_step_of_fixed_step_method,
    step_size_of_adaptive_method,
)
from physode.train.data import (
    Trajectories,
    _observe_problems,
    as_trajectories,
    in_model_order,
    state_order_problems,
    system_columns,
    uniform_grid,
)

# A rollout's rtol unless given: raised to the resolution of the data's dtype where coarser
# (float32: 1.19e-7), so that the default solves as asked, without a warning.
ROLLOUT_RTOL = 1e-7
# Sample times a rollout beyond the data may add: each costs a state per trajectory, and a
# t_end of 1e300 would otherwise ask for more than any memory holds.
MAX_EXTRA_POINTS = 1_000_000
# L-BFGS iterations a calibration of held-out trajectories runs at most; it stops earlier once
# the fit has converged. A handful of scalars per trajectory needs far fewer.
CALIBRATION_ITERATIONS = 50
# Convergence of a calibration, on its loss relative to the mean square of the observations
# it fits: the largest gradient entry, and the change of the loss or the step between two
# iterations, below which L-BFGS stops.
_CALIBRATION_TOLERANCE_GRAD = 1e-10
_CALIBRATION_TOLERANCE_CHANGE = 1e-14
# A trial solve of the calibration's line search stops after this many times the step attempts
# of the solve at its start (at least _TRIAL_STEPS_FLOOR): values that need so many more are a
# step too far (a pendulum's length stepped to nearly zero), and the search backs off from them.
_TRIAL_STEPS_FACTOR = 50
_TRIAL_STEPS_FLOOR = 1_000


@dataclass
class RolloutReport:
    """Errors of a model's rollouts against the truth, and both sides' conservation.

    Attributes
    ----------
    t : Tensor, shape (P,)
        Rollout times, from the trajectories' first time to the end of the rollout.
    horizon : float
        End of the training horizon; errors after it are extrapolation.
    predicted, truth : Tensor, shape (N, P, n)
        The model's rollouts and the ground truth.
    mse : float or None
        Mean squared error over the whole rollout (observed components, initial point excluded);
        where the data miss values, over the values they observe, each weighing the same
        (``None`` when they observe none after the initial states).
    mse_within, mse_beyond : float or None
        Mean squared error (observed components, the initial point excluded) at times
        ``t <= horizon`` and ``t > horizon`` (a sample time within rounding of ``horizon``
        counts as at it, as :func:`rollout_times` cuts); ``None`` where there are no such times (the
        rollout stops at the horizon, or the held-out data start after it) or no observed value
        at them.
    mse_per_trajectory : list of float or None
        Over the whole rollout, one value per trajectory (``None`` for a trajectory with no
        observed value after its initial state).
    conservation_model, conservation_truth : physode.diagnostics.ConservationReport or None
        Conservation of the system's invariants along the rollouts (at the parameter values
        they were solved with: the model's where it sets them, the trajectories' own
        elsewhere) and along the truth (at the
        trajectories' parameters); ``None`` without a system. Where the data miss values the
        truth's report is ``None`` (an invariant needs whole states), as it is where they store
        a parameter value that is not finite (unknown: ``NaN``), and so is the
        rollouts' where the trajectories start at different times.
    note : str or None
        A caveat on the trajectories rolled out, printed with the report: for example that
        :meth:`Trainer.evaluate` used the validation trajectories, which chose the best epoch,
        for want of test data.
    per_trajectory : dict or None
        For a model that learns parameters per trajectory, by name: ``held_out_value``, the
        mean of the learned values, which the rolled-out trajectories got (they were not
        trained on) or, when they were calibrated, started from; ``learned``, each training
        trajectory's learned value, and, from :meth:`Trainer.evaluate` where the training data
        store them, ``true``, their stored values in the same order. After a calibration also
        ``calibrated``, each held-out trajectory's fitted value (``None`` for one left at the
        mean, see ``calibration``), and ``calibrated_true``, the values the held-out data
        store, where they store them. ``None`` for other models.
    calibration : dict or None
        Where the held-out trajectories' per-trajectory values were calibrated
        (``rollout_report(..., calibrate=T)``): ``until``, the end ``T`` of the stretch of
        observations fitted (each trajectory's from its first observed time; the data's last
        time where ``T`` lies after it); ``iterations`` and ``evaluations`` of L-BFGS (each
        evaluation a solve of the stretch); ``converged``, whether it stopped on its
        tolerances rather than its limits; ``loss``, the mean over the calibrated trajectories
        of each one's mean squared error relative to the mean square of its own observations;
        ``uncalibrated``, the held-out trajectories with no observation in their stretch,
        rolled out with the mean; and the rollouts' mean squared errors ``mse_within``
        (``t <= T``, the fitted observations) and ``mse_after`` (``t > T``: the forecast; ``None``
        where there is none). ``None`` without calibration.
    """

    t: torch.Tensor
    horizon: float
    predicted: torch.Tensor
    truth: torch.Tensor
    mse: float | None
    mse_within: float | None
    mse_beyond: float | None
    mse_per_trajectory: list[float | None]
    conservation_model: Any = None
    conservation_truth: Any = None
    note: str | None = None
    per_trajectory: dict[str, dict[str, Any]] | None = None
    calibration: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The numbers as plain values (for ``results.json``); a number that is not finite (the
        error of a rollout that blew up) is ``None``, as JSON readers accept it."""
        out: dict[str, Any] = {
            "horizon": self.horizon,
            "t_end": float(self.t[-1]),
            "mse": self.mse,
            "mse_within": self.mse_within,
            "mse_beyond": self.mse_beyond,
            "mse_per_trajectory": self.mse_per_trajectory,
        }
        if self.note is not None:
            out["note"] = self.note
        if self.per_trajectory is not None:
            out["per_trajectory"] = self.per_trajectory
        if self.calibration is not None:
            out["calibration"] = self.calibration
        for name in ("model", "truth"):
            report = getattr(self, f"conservation_{name}")
            if report is not None:
                out[f"conservation_{name}"] = _report_dict(report)
        return json_ready(out)

    def __repr__(self) -> str:
        # The errors and verdicts; print(report) gives the whole report, the rollouts by shape.
        return short_repr(
            self, "predicted", ("horizon", number_text), ("mse", number_text),
            ("mse_within", number_text), ("mse_beyond", number_text), "conservation_model",
            "conservation_truth", "note", "per_trajectory", "calibration",
        )

    def __str__(self) -> str:
        whole, within, beyond = (
            "-" if value is None else f"{value:.3e}"
            for value in (self.mse, self.mse_within, self.mse_beyond)
        )
        n = self.predicted.shape[0]
        lines = [
            f"rollout of {n} held-out {'trajectory' if n == 1 else 'trajectories'} to t = "
            f"{float(self.t[-1]):g} (training horizon {self.horizon:g})",
            f"  mse                 {whole}",
            f"  mse within horizon  {within}",
            f"  mse beyond horizon  {beyond}",
        ]
        if self.note is not None:
            lines.insert(1, f"  note: {self.note}")
        if self.per_trajectory is not None:
            lines += _per_trajectory_lines(self.per_trajectory, self.calibration)
        if self.conservation_model is not None:
            lines += ["conservation of the model's rollouts:", _indent(self.conservation_model)]
        if self.conservation_truth is not None:
            lines += ["conservation of the ground truth:", _indent(self.conservation_truth)]
        return "\n".join(lines)


# Training trajectories listed one by one in the printed report (report.json lists them all).
_LISTED = 8


def _per_trajectory_lines(
    table: dict[str, dict[str, Any]], calibration: dict[str, Any] | None = None
) -> list[str]:
    """The printed report's lines on parameters learned per trajectory, and on the held-out
    trajectories' calibrated values."""
    lines = []
    for name, entry in table.items():
        learned, mean = entry["learned"], entry["held_out_value"]
        if calibration is None:
            used = f"the held-out trajectories were rolled out with their mean, {name} = {mean:.6g}"
        else:
            used = f"mean {name} = {mean:.6g}"
        lines.append(f"{name}: learned per training trajectory ({len(learned)}); {used}")
        lines += _listed(learned, entry.get("true"))
        if calibration is None:
            continue
        calibrated = entry["calibrated"]
        lines.append(
            f"{name}: calibrated per held-out trajectory ({len(calibrated)}) on its "
            f"observations up to t = {calibration['until']:g}, from the mean; rolled out with "
            "these"
        )
        lines += _listed(calibrated, entry.get("calibrated_true"), f"the mean, {mean:.6g}")
    if calibration is not None:
        state = "converged" if calibration["converged"] else "stopped at its limit, not converged"
        lines.append(
            f"  L-BFGS: {calibration['iterations']} iterations, {calibration['evaluations']} "
            f"solves, {state}; relative loss {calibration['loss']:.3e}"
        )
        for label, key in (("within", "mse_within"), ("after", "mse_after")):
            value = "-" if calibration[key] is None else f"{calibration[key]:.3e}"
            lines.append(f"  mse {label} t = {calibration['until']:g}".ljust(22) + value)
        if calibration["uncalibrated"]:
            lines.append(
                f"  trajectories {calibration['uncalibrated']} have no observation between their "
                "first observed time and t = "
                f"{calibration['until']:g}: rolled out with the mean"
            )
    return lines


def _listed(values: list[Any], true: list[float] | None, missing: str = "") -> list[str]:
    """One line per value (the first ``_LISTED``), the stored true value beside it, and the
    largest relative error against those; ``missing`` stands for a ``None`` value."""
    lines = []
    # A stored value that is not finite is unknown: nothing to compare with.
    pairs = [(a, b) for a, b in zip(values, true or []) if a is not None and math.isfinite(b)]
    if true is not None and pairs:
        errors = [abs(a - b) / abs(b) if b else abs(a - b) for a, b in pairs]
        lines.append(f"  largest relative error against the stored values {max(errors):.3e}")
    for i, value in enumerate(values[:_LISTED]):
        if true is None:
            against = ""
        else:
            against = f"  (true {true[i]:.6g})" if math.isfinite(true[i]) else "  (true unknown)"
        shown = missing if value is None else f"{value:.6g}"
        lines.append(f"  trajectory {i:<4d} {shown}{against}")
    if len(values) > _LISTED:
        lines.append(f"  ... {len(values) - _LISTED} more (all in to_dict(), report.json)")
    return lines


def _indent(report: Any) -> str:
    return "\n".join("  " + line for line in str(report).splitlines())


def _report_dict(report: Any) -> dict[str, Any]:
    """Per invariant: the largest relative and absolute drift of each trajectory, and whether the
    report's tolerance holds."""
    return {
        name: {
            "max_rel_drift": drift.max_rel_drift.tolist(),
            "max_abs_drift": drift.max_abs_drift.tolist(),
            "tolerance": drift.tolerance,
            "ok": not bool(drift.exceeds.any()),
        }
        for name, drift in report.invariants.items()
    }


def rollout_times(t: torch.Tensor, t_end: float | None = None) -> torch.Tensor:
    """The times of a rollout to ``t_end``: the sample times ``t <= t_end``, continued with their
    own spacing beyond the last one up to ``t_end``. A time within rounding of ``t_end`` counts
    as equal to it (``t_end=0.3`` on ``torch.linspace(0, 2, 21)`` ends at its sample
    0.30000000000000004; ``t_end=2.3`` adds 2.1, 2.2 and 2.3); a ``t_end`` clearly between two
    times ends at the earlier one.

    Call it before training to check a ``t_end`` that :func:`rollout_report` will use.

    Raises
    ------
    physode.InvalidArgumentError
        If ``t_end`` is not finite, leaves fewer than two times (it is not after the first
        sample time), lies beyond the data when the sample times are not equally spaced, or
        would add more than ``MAX_EXTRA_POINTS`` (10**6) sample times.

    Examples
    --------
    >>> rollout_times(torch.linspace(0, 1, 3), t_end=2.0)
    tensor([0.0000, 0.5000, 1.0000, 1.5000, 2.0000])
    >>> rollout_times(torch.linspace(0, 1, 3), t_end=0.0)
    Traceback (most recent call last):
    ...
    physode._errors.InvalidArgumentError: t_end=0.0 leaves no time to roll out to: ...
    """
    if t_end is None:
        return t
    t_end = float(t_end)
    if not math.isfinite(t_end):
        raise InvalidArgumentError(f"t_end={t_end!r} must be a finite time, or left out")
    if count_up_to(t, t_end) < 2:
        second = float(t[1])
        raise InvalidArgumentError(
            f"t_end={t_end!r} leaves no time to roll out to: the data start at t = "
            f"{float(t[0]):g} and the next sample is at {_time_text(second, t)}; give t_end >= "
            f"{_time_text(second, t)} "
            f"(the data end at {float(t[-1]):g}), or leave it out"
        )
    return _extended_grid(t, t_end)


def _time_text(x: float, t: torch.Tensor) -> str:
    """A sample time ``x`` of ``t`` for a message: short where a cut at the short form takes
    that sample (:func:`~physode.train._times.times_up_to`: float32's 0.10000000149011612 is
    0.1), in full where it does not (0.1234567 is not 0.123457).

    >>> t = torch.tensor([0.0, 0.1, 0.2])
    >>> _time_text(float(t[1]), t), _time_text(0.1234567, torch.tensor([0.0, 0.1234567]))
    ('0.1', '0.1234567')
    """
    short = f"{x:g}"
    return short if abs(float(short) - x) <= time_slack(t, float(short)) else repr(x)


def _extended_grid(t: torch.Tensor, t_end: float) -> torch.Tensor:
    """``t`` continued with its own spacing up to ``t_end`` (within rounding, as
    :func:`~physode.train._times.times_up_to` cuts)."""
    last = float(t[-1])
    if t_end <= last + time_slack(t, t_end):
        return t[times_up_to(t, t_end)]
    if not uniform_grid(t):
        raise InvalidArgumentError(
            f"t_end={t_end!r} lies beyond the data's last time {float(t[-1]):g}, and rolling out "
            "beyond the data needs equally spaced sample times; give t_end <= "
            f"{float(t[-1]):g} or leave it out"
        )
    # The spacing from the whole span (in float64): a float32 grid's first spacing is rounded,
    # and the rounding would grow with each time added.
    dt = (last - float(t[0])) / (len(t) - 1)
    # The times last + k dt that count as <= t_end: no time after it, the one at it within
    # rounding (t_end=2.3 on a 0.1 grid ending at 2.0 is 3 more, not 2.9999999999999996).
    steps_to_end = (t_end - last + time_slack(t, t_end)) / dt
    if steps_to_end >= MAX_EXTRA_POINTS + 1:  # inf for t_end=1e308: refused before floor
        raise InvalidArgumentError(
            f"t_end={t_end!r} would add {steps_to_end:.3g} sample times beyond the data's last "
            f"time {float(t[-1]):g} at its spacing {dt:g} (at most {MAX_EXTRA_POINTS:,}); give a "
            "t_end closer to the data"
        )
    steps = torch.arange(1, math.floor(steps_to_end) + 1, dtype=torch.float64)
    extra = (last + dt * steps).to(t.device, t.dtype)
    return torch.cat([t, extra])


def ground_truth(
    system: Any,
    y0: torch.Tensor,
    t: torch.Tensor,
    params: torch.Tensor | None = None,
    *,
    method: str = "dop853",
    rtol: float = 1e-10,
    atol: float = 1e-10,
    max_step: float | None = None,
) -> torch.Tensor:
    """Solve the true system from ``y0`` (N, n) at ``t``; returns (N, P, n).

    ``params`` (N, n_params) are per-trajectory parameter values (the system's defaults when
    ``None``); ``max_step`` caps the steps (``physode.solve``'s). The solve runs in float64
    whatever ``y0``'s dtype (float32 cannot resolve the tolerance); the result comes back in
    ``y0``'s dtype.
    """
    y0_64, t_64 = y0.double(), t.double()
    if params is None:
        field = system.vector_field().to(y0.device)
        ys = physode.odeint(
            field, y0_64, t_64, method=method, rtol=rtol, atol=atol, max_step=max_step
        )
    else:
        p = params.to(y0.device, torch.float64)
        ys = physode.odeint(
            lambda s, y: system.rhs(s, y, p), y0_64, t_64, method=method, rtol=rtol, atol=atol,
            max_step=max_step,
        )
    return ys.transpose(0, 1).to(y0.dtype)


def _mse(a: torch.Tensor, b: torch.Tensor, dims: tuple[int, ...] | None = None) -> torch.Tensor:
    return (a - b).pow(2).mean() if dims is None else (a - b).pow(2).mean(dims)


def masked_mse(
    pred: torch.Tensor,
    ref: torch.Tensor,
    seen: torch.Tensor | None = None,
    dims: tuple[int, ...] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean squared error of ``pred`` against ``ref`` over the values ``seen`` marks (by
    default those ``ref`` observes, not ``NaN``), and their count; every such value weighs the
    same. Over ``dims`` (one error and count per remaining index) or over everything.

    The values left out are replaced before the difference is taken, so that neither the loss
    nor its gradient meets a ``NaN``: a missing value contributes an exact zero to both (a
    ``NaN`` multiplied by a zero mask would stay ``NaN``). Where ``seen`` marks nothing the
    error is 0 over a count of 0.

    Examples
    --------
    >>> ref = torch.tensor([1.0, float("nan"), 3.0])
    >>> loss, count = masked_mse(torch.zeros(3), ref)
    >>> float(loss), int(count)
    (5.0, 2)
    """
    if seen is None:
        seen = ~torch.isnan(ref)
    error = torch.where(seen, pred - torch.where(seen, ref, 0.0), 0.0).pow(2)
    if dims is None:
        count = seen.sum()
        return error.sum() / count.clamp(min=1), count
    count = seen.sum(dims)
    return error.sum(dims) / count.clamp(min=1), count


def _masked_mean(pred: torch.Tensor, ref: torch.Tensor, seen: torch.Tensor) -> float | None:
    """:func:`masked_mse` as a number, ``None`` where ``seen`` marks nothing."""
    loss, count = masked_mse(pred, ref, seen)
    return float(loss) if int(count) else None


@torch.no_grad()
def rollout_report(
    model: nn.Module,
    data: Any,
    *,
    horizon: float | None = None,
    t_end: float | None = None,
    system: Any = None,
    observe: list[int] | None = None,
    method: str = "dopri5",
    rtol: float | None = None,
    atol: float = 1e-9,
    step_size: float | None = None,
    conservation: bool = True,
    conservation_tolerance: float | None = None,
    calibrate: float | bool | None = None,
    gradient: Any = "aca",
    calibration_iterations: int = CALIBRATION_ITERATIONS,
    max_steps: int = MAX_STEPS,
    max_step: float | None = None,
) -> RolloutReport:
    """Roll the model out from each held-out trajectory's first state and compare.

    Parameters
    ----------
    model : nn.Module
        The trained ``f(t, y)``, rolled out in eval mode (``model.eval()``) and left in the
        mode it was in.
    data : Trajectories, str, Path, TrajectoryFile, TrajectoryDataset, or tuple (t, ys)
        Held-out ground truth, of the kinds ``Trainer.evaluate``'s ``test_data`` takes: an HDF5
        data set's path (or the data set ``physode.data.load`` opened) is read as its stored
        ``"test"`` split (flagged trajectories left out), a ``TrajectoryDataset`` as its own
        split; named states without a system (a ``TimeSeries``) are put in the order of the
        model's system, as the trainer puts them. Where it misses values (``NaN``), each
        trajectory is rolled out from its first observed time (its prediction is ``NaN`` before
        it) and the errors are taken over the observed values (see :class:`RolloutReport`).
    horizon : float, optional
        End of the training horizon (default: the data's last time).
    t_end : float, optional
        Roll out to this time. Beyond the data's last time the truth is simulated from
        ``system`` (with the data's per-trajectory parameters) at tight tolerance.
    system : physode.System, optional
        The true system (default ``data.system``); needed beyond the data and for the
        conservation reports. Data that name their states (``state_names``, or their own
        system's) meet it by name, as they meet the model's system: its solves and invariants
        take their columns in its order, and the truth it simulates is put back in the data's
        (the model's) order; names that are not its states are refused, naming both lists.
        Unnamed data are taken by position.
    observe : list of int, optional
        Components that enter the errors (default all), each once; a negative index counts
        from the end. An index outside the state, or a component given twice, is refused as
        ``TrainConfig(observe=...)`` refuses it.
    method, rtol, atol, step_size
        The model's solver settings (``step_size`` for a fixed-step method only). ``rtol``
        defaults to ``ROLLOUT_RTOL`` (1e-7), or to the resolution of the data's dtype where
        that is coarser (float32: 1.19e-7, which a given ``rtol=1e-7`` is raised to with a
        warning).
    conservation : bool
        Add ``physode.diagnostics.conservation`` reports of rollouts and truth: the true
        system's invariants, for the truth at the data's parameters, for the rollouts at the
        model's own (its learned ``physical_parameters()`` where it learns a parameter of
        ``system``, all its own values for a model built with ``stored_parameters=False``, the
        data's elsewhere): the values each rollout was solved with.

    A model that takes per-row parameters (``model.trajectory_parameters``, e.g. a
    :class:`~physode.models.PhysicsModel`) rolls each trajectory out with the values it stores
    (``data.params``) of the parameters the model does not learn. Parameters it learns per
    trajectory (``per_trajectory``) take the mean of the learned values: ``data`` are taken to
    be trajectories it was not trained on (the report's ``per_trajectory`` says so), unless
    ``calibrate`` fits each one's own values first.
    conservation_tolerance : float, optional
        Relative drift the conservation reports flag. By default
        :func:`rollout_conservation_tolerance` of ``rtol``: 100 times it, at least 1e-6, the
        drift a rollout at that tolerance may show by itself, so that a model that conserves
        its invariants exactly is not flagged for its solver's error.
    calibrate : float or True, optional
        For a model that learns parameters per trajectory: before the rollout, fit each
        held-out trajectory's own values of them to its observations at times ``t <= calibrate``
        (a sample time within rounding of it included, as :func:`rollout_times` cuts;
        ``True``: up to ``horizon``), everything else in the model held fixed; later
        observations enter the errors only. Each trajectory starts from its first observed
        state, and its values from the mean of the learned ones; the fit is L-BFGS over all of
        them at once (each trajectory's values move its own solve only, so this is each one's
        own fit) on each one's mean squared error of its observed values (``NaN`` left out,
        components ``observe``) relative to their mean square, averaged; a trial of its line
        search that cannot be solved is a step too far, backed off from; solved with
        ``method``, ``rtol``, ``atol``, ``step_size`` and differentiated with ``gradient``.
        It is deterministic, leaves the model unchanged, and the report's ``per_trajectory``
        and ``calibration`` say what it found. A trajectory
        with no observation in its stretch keeps the mean (``calibration["uncalibrated"]``).
        By default (``None``) nothing is calibrated.
    gradient : str or gradient object
        The gradient mode of the calibration's solves (as in :func:`physode.solve`).
    calibration_iterations : int
        Most L-BFGS iterations of the calibration (it stops earlier once converged); the
        solves it makes are at most 1.25 times as many.
    max_steps : int
        Step attempts each rollout and calibration solve may take (as in :func:`physode.solve`,
        whose default it has); the ground truth beyond the data is simulated with the default.
    max_step : float, optional
        Longest step of an adaptive method (as in :func:`physode.solve`) in each rollout and
        calibration solve, and in the simulation of the ground truth beyond the data: a
        feature of the system too narrow for the steps to see is as narrow in the truth.
        ``None`` (the default): no cap. A fixed-step method refuses it.

    Returns
    -------
    RolloutReport

    Raises
    ------
    physode.InvalidArgumentError
        For a ``t_end`` that :func:`rollout_times` refuses, a ``t_end`` beyond the data without
        a system, or a ``calibrate`` that :func:`calibration_time` refuses (a model that learns
        nothing per trajectory, a time before the data's second sample time) or that leaves no
        held-out trajectory an observation to fit; for data whose own system has the model's
        system's states in another order (data ``[p, q]``, model ``[q, p]``), as the trainer
        refuses them, naming both orders.
    physode.SolverError
        If a rollout fails, or a solve of the calibration does (the message says which).

    Examples
    --------
    >>> import torch
    >>> t = torch.linspace(0, 1, 11, dtype=torch.float64)
    >>> data = Trajectories(t, torch.exp(-t)[None, :, None])
    >>> decay = lambda s, y: -y
    >>> report = rollout_report(decay, data, horizon=0.5)
    >>> report.mse_within < 1e-12 and report.mse_beyond < 1e-12
    True

    A pendulum of unknown length, rolled out with a model that learned the lengths of others
    (``l`` per trajectory; their mean is 1.0): calibrated on its first half second, it finds
    its own length, 0.7, and its rollout after it follows the truth.

    >>> import physode
    >>> from physode.models import PhysicsModel
    >>> pendulum = physode.systems.load("pendulum")
    >>> truth = torch.tensor([[1.0, 9.81, 0.7]], dtype=torch.float64)
    >>> ys = physode.odeint(lambda s, y: pendulum.rhs(s, y, truth),
    ...                     torch.tensor([[0.5, 0.0]], dtype=torch.float64), t, rtol=1e-10)
    >>> model = PhysicsModel(pendulum, per_trajectory=["l"], n_trajectories=2)
    >>> with torch.no_grad():
    ...     _ = model.trajectory_values.copy_(torch.tensor([[0.8], [1.2]]))
    >>> data = Trajectories(t, ys.transpose(0, 1), system=pendulum)
    >>> report = rollout_report(model, data, horizon=0.5, calibrate=True, conservation=False)
    >>> round(report.per_trajectory["l"]["calibrated"][0], 4), report.mse_beyond < 1e-10
    (0.7, True)
    """
    if method in ADAPTIVE_METHODS and step_size is not None:
        raise InvalidArgumentError(step_size_of_adaptive_method(method, step_size))
    if method in FIXED_STEP_METHODS and max_step is not None:
        raise InvalidArgumentError(max_step_of_fixed_step_method(method, max_step))
    data = in_model_order(as_trajectories(data, split="test"), model, "held-out")
    # Data with a system of their own keep its order, as in training.
    problems = [
        f"{problem}; or give the held-out states by name without a system, Trajectories(t, "
        "ys, params, state_names=[...]), which are put in the model's order, and their system "
        "as system=..."
        for problem in state_order_problems(model, data, "held-out")
    ]
    if observe is not None:  # as the training settings check it
        if not (
            isinstance(observe, list | tuple) and observe and all(is_int(i) for i in observe)
        ):
            raise InvalidArgumentError(
                f"observe={observe!r} must be a non-empty list of state indices, or None"
            )
        observe = list(observe)
        problems += _observe_problems(observe, data.n_state)
    if horizon is not None and (isinstance(horizon, bool) or not converts_to_finite_real(horizon)):
        # nan compared false with every time: all errors counted as beyond the horizon
        problems.append(
            f"horizon={horizon!r} must be the end of the training horizon (a finite number), "
            "or None for the data's last time"
        )
    if problems:
        raise InvalidArgumentError("; ".join(problems))
    if rtol is None:
        rtol = attainable_rtol(ROLLOUT_RTOL, data.states)
    system = system if system is not None else data.system
    # The data meet the true system by name: its solves and invariants take their columns in
    # its order, and the truth it simulates comes back in theirs (the model's).
    columns = system_columns(data, system, "the held-out data")
    back = None if columns is None else [columns.index(j) for j in range(len(columns))]
    t_last = float(data.t[-1])
    horizon = t_last if horizon is None else float(horizon)
    t = rollout_times(data.t, t_end)
    n_data = min(len(t), data.n_points)
    complete = data.complete
    # Each trajectory starts at its first observed time (its initial state); where they differ,
    # the trajectories that share a start are rolled out together from it.
    first = torch.zeros(len(data), dtype=torch.long) if complete else data.first_observed.cpu()
    beyond = len(t) > data.n_points
    if beyond and system is None:
        raise InvalidArgumentError(
            f"t_end={t_end} lies beyond the data's last time {t_last:g}, and the data have no "
            "system to simulate the ground truth there: give the data their system, "
            "Trajectories(t, ys, system=physode.systems.load(...)) (for Trainer.evaluate, "
            "the training data or test_data; for rollout_report, also system=...), or roll "
            f"out no further than t_end={t_last:g}"
        )
    if beyond and data.params is not None:
        unknown = _unknown_parameters(data.params, system)
        if unknown:
            raise InvalidArgumentError(
                f"t_end={t_end} lies beyond the data's last time {t_last:g}, where the ground "
                "truth is simulated with each trajectory's stored parameters, and the held-out "
                f"trajectories store values of {unknown} that are not finite (unknown); give "
                "the data those values, or roll out no further than "
                f"t_end={t_last:g}"
            )
    until = calibration_time(model, data.t, calibrate, horizon)
    if until is not None and not is_int(calibration_iterations, least=1):
        raise InvalidArgumentError(
            f"calibration_iterations={calibration_iterations!r} must be a positive integer "
            f"(default {CALIBRATION_ITERATIONS})"
        )
    # Each trajectory's stored values of the parameters the model does not learn.
    stored = parameter_rows(model, data.params, system, "held-out")
    # Parameters learned per trajectory: the held-out values (the learned ones' mean).
    rows = learned_rows(model, stored, None, len(data))
    calibration = values = None
    truth = data.states[:, :n_data]
    if beyond:
        truth = torch.cat([truth, truth.new_full((len(data), len(t) - n_data, data.n_state),
                                                 math.nan)], dim=1)
    predicted = torch.full_like(truth, math.nan)
    # Rolled out as a trained model is used: dropout off, batch norm on its running statistics.
    training = isinstance(model, nn.Module) and model.training
    if training:
        model.eval()
    try:
        options = {
            "method": method, "rtol": rtol, "atol": atol, "step_size": step_size,
            "max_steps": max_steps, "max_step": max_step,
        }
        if until is not None:
            # Each held-out trajectory's own values, fitted before the rollout uses them.
            values, calibration = _calibrate(
                model, data, stored, first, until, observe, calibration_iterations,
                {**options, "gradient": gradient},
            )
            rows = learned_rows(model, stored, None, len(data), values)
        for start in sorted(set(first.tolist())):
            group = (first == start).nonzero().flatten().to(data.states.device)
            y0, times = data.states[group, start], t[start:]
            if len(times) < 2:  # starts at the last time: nothing to roll out
                predicted[group, start] = y0
                continue
            if rows is None:
                ys = physode.odeint(model, y0, times, **options)
            else:
                ys = solve_rows(model, y0, times, rows[group], **options).ys
            predicted[group, start:] = ys.transpose(0, 1)
            if beyond:
                params = None if data.params is None else data.params[group]
                simulated = ground_truth(
                    system, _columns(y0, columns), times, params, max_step=max_step
                )
                truth[group, n_data:] = _columns(simulated[:, n_data - start :], back).to(
                    truth.dtype
                )
    finally:
        if training:
            model.train()
    pred, ref = predicted[:, 1:], truth[:, 1:]
    if observe is not None:
        pred, ref = pred[..., observe], ref[..., observe]
    within = times_up_to(t, horizon)[1:]
    # Observed values after each trajectory's initial state (every value, for complete data).
    later = torch.arange(1, len(t), device=first.device)[None, :] > first[:, None]
    seen = ~torch.isnan(ref) & later.to(ref.device)[..., None]
    if complete:
        mse_within = float(_mse(pred[:, within], ref[:, within])) if within.any() else None
        mse_beyond = None if within.all() else float(_mse(pred[:, ~within], ref[:, ~within]))
        mse: float | None = float(_mse(pred, ref))
        per_trajectory: list[float | None] = _mse(pred, ref, (1, 2)).tolist()
    else:
        mse_within = _masked_mean(pred[:, within], ref[:, within], seen[:, within])
        mse_beyond = _masked_mean(pred[:, ~within], ref[:, ~within], seen[:, ~within])
        mse = _masked_mean(pred, ref, seen)
        losses, counts = masked_mse(pred, ref, seen, dims=(1, 2))
        per_trajectory = [
            loss if count else None
            for loss, count in zip(losses.tolist(), counts.tolist(), strict=True)
        ]
    report = RolloutReport(
        t=t,
        horizon=horizon,
        predicted=predicted,
        truth=truth,
        mse=mse,
        mse_within=mse_within,
        mse_beyond=mse_beyond,
        mse_per_trajectory=per_trajectory,
    )
    names = per_trajectory_names(model)
    if names:
        held_out, learned = model.held_out_parameters(), model.per_trajectory_values()
        report.per_trajectory = {
            name: {"held_out_value": held_out[name], "learned": learned[name]} for name in names
        }
    if calibration is not None:
        # Errors of the calibrated rollouts on the fitted observations and after them.
        # The observations the calibration fitted: the data's times up to its end, as cut there.
        n_fitted = count_up_to(data.t, calibration["until"])
        fitted = torch.arange(1, len(t), device=t.device) < n_fitted
        calibration["mse_within"] = _masked_mean(
            pred[:, fitted], ref[:, fitted], seen[:, fitted]
        )
        calibration["mse_after"] = _masked_mean(
            pred[:, ~fitted], ref[:, ~fitted], seen[:, ~fitted]
        )
        report.calibration = calibration
        left = set(calibration["uncalibrated"])
        true = _stored_values(data, system, names)
        for j, name in enumerate(names):
            column = values[:, j].tolist()
            entry = report.per_trajectory[name]
            entry["calibrated"] = [None if i in left else v for i, v in enumerate(column)]
            if name in true:
                entry["calibrated_true"] = true[name]
    if conservation and system is not None:
        from physode.diagnostics import conservation as conservation_report

        # The true system's invariants: the truth's at the trajectories' parameters, the
        # rollouts' at the model's own (its learned values where it learns them).
        own = model_parameters(model, data.params, system, len(data))
        system_names = list(system.parameters)
        shared = [(j, system_names.index(name)) for j, name in enumerate(names)
                  if name in system_names]  # fmt: skip
        if values is not None and own is not None and shared:  # each one's calibrated values
            own = own.clone()
            for j, column in shared:
                own[:, column] = values[:, j].to(own)
        measure = [("model", predicted, own)] if bool((first == 0).all()) else []
        # The truth's invariants need whole states and its parameters (NaN: unknown).
        if complete and (data.params is None or not _unknown_parameters(data.params, system)):
            measure.append(("truth", truth, data.params))
        if conservation_tolerance is None:
            conservation_tolerance = rollout_conservation_tolerance(rtol)
        for name, ys, p in measure:
            measured = conservation_report(
                system,
                _columns(ys, columns).transpose(0, 1),
                t=t,
                tolerance=conservation_tolerance,
                p=p,
            )
            setattr(report, f"conservation_{name}", measured)
    return report


def _columns(states: torch.Tensor, columns: list[int] | None) -> torch.Tensor:
    """``states`` with their last axis in the order ``columns`` (unchanged for ``None``)."""
    return states if columns is None else states[..., columns]


def rollout_conservation_tolerance(rtol: float) -> float:
    """The relative drift a rollout's conservation report flags by default: ``100 * rtol``, at
    least 1e-6.

    An adaptive solve's global error grows past its local tolerance over many steps; a model
    whose invariants hold exactly still drifts by that much, and is not flagged for it.

    >>> rollout_conservation_tolerance(1e-5), rollout_conservation_tolerance(1e-10)
    (0.001, 1e-06)
    """
    return max(1e-6, 100.0 * rtol)


def calibration_time(
    model: Any, t: torch.Tensor, calibrate: float | bool | None, horizon: float
) -> float | None:
    """The end ``T`` of the stretch of observations that :func:`rollout_report` calibrates the
    held-out trajectories' per-trajectory values on: ``calibrate``, or ``horizon`` for
    ``calibrate=True``; ``None`` for no calibration (``None`` or ``False``).

    Call it before training to check a ``calibrate`` (``t`` the held-out data's times).

    Raises
    ------
    physode.InvalidArgumentError
        If the model learns no parameter per trajectory (there is nothing to calibrate),
        ``calibrate`` is not a finite number or ``True``, or ``T`` lies before the data's
        second sample time (no observation after the first states to fit).

    Examples
    --------
    >>> from physode.models import PhysicsModel
    >>> model = PhysicsModel("pendulum", per_trajectory=["l"])
    >>> t = torch.linspace(0, 2, 5)
    >>> calibration_time(model, t, True, horizon=1.0), calibration_time(model, t, 1.5, 1.0)
    (1.0, 1.5)
    >>> calibration_time(model, t, 0.2, horizon=1.0)
    Traceback (most recent call last):
    ...
    physode._errors.InvalidArgumentError: calibrate=0.2 leaves no observation to fit: ...
    """
    if calibrate is None or calibrate is False:
        return None
    if not per_trajectory_names(model):
        raise InvalidArgumentError(
            f"calibrate={calibrate!r} fits each held-out trajectory's own values of the "
            f"parameters a model learns per trajectory, and this model ({type(model).__name__}) "
            "learns none; build it with PhysicsModel(..., per_trajectory=[...]) (physode train "
            "--per-trajectory NAMES), or leave calibrate out"
        )
    if calibrate is not True and not converts_to_finite_real(calibrate):
        raise InvalidArgumentError(
            f"calibrate={calibrate!r} must be the end time of the observations to calibrate on "
            "(a finite number), True for the training horizon, or None for no calibration"
        )
    until = float(horizon if calibrate is True else calibrate)
    if count_up_to(t, until) < 2:
        second = float(t[1]) if len(t) > 1 else math.inf
        asked = f"calibrate={calibrate!r}"
        if calibrate is True:
            asked += f" (the training horizon, t = {until:g})"
        raise InvalidArgumentError(
            f"{asked} leaves no observation to fit: the held-out data start at t = "
            f"{float(t[0]):g} and their next sample is at {_time_text(second, t)}; give "
            f"calibrate >= {_time_text(second, t)}"
        )
    return until


def _unknown_parameters(params: torch.Tensor, system: Any) -> list[str]:
    """The parameters (of ``system``, by name where their number matches) of which ``params``
    (N, k) hold a value that is not finite: a value the data do not know."""
    names = list(getattr(system, "parameters", None) or [])
    if len(names) != params.shape[-1]:
        names = [f"column {j}" for j in range(params.shape[-1])]
    finite = torch.isfinite(params).all(0).tolist()
    return [name for name, ok in zip(names, finite, strict=True) if not ok]


def _stored_values(data: Trajectories, system: Any, names: tuple[str, ...]) -> dict[str, list]:
    """The values of ``names`` that ``data`` store, by name (those they store)."""
    columns = list(getattr(system, "parameters", None) or [])
    if data.params is None or data.params.shape[-1] != len(columns):
        return {}
    return {
        name: data.params[:, columns.index(name)].tolist() for name in names if name in columns
    }


def _calibrate(
    model: nn.Module,
    data: Trajectories,
    stored: torch.Tensor | None,
    first: torch.Tensor,
    until: float,
    observe: list[int] | None,
    iterations: int,
    options: dict[str, Any],
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Fit each held-out trajectory's values of the parameters ``model`` learns per trajectory
    to its observations at ``first[i] < t <= until``: the values (N, k), detached (the mean
    for a trajectory with nothing to fit), and the report's ``calibration`` entry.

    ``stored``: the trajectories' rows of the parameters the model takes from the data. The
    model's own tensors are neither changed nor given gradients: the solves differentiate
    ``values`` alone (``params=[values]``, ``torch.autograd.grad``)."""
    names = per_trajectory_names(model)
    n = len(data)
    mean = model.held_out_parameters()
    states = data.states
    start = torch.tensor([mean[name] for name in names], dtype=states.dtype, device=states.device)
    last = count_up_to(data.t, until) - 1
    window = states[:, : last + 1]
    # The values fitted: observed (not NaN), components observe, after each first state.
    seen = ~torch.isnan(window)
    if observe is not None:
        chosen = torch.zeros(data.n_state, dtype=torch.bool, device=seen.device)
        chosen[observe] = True
        seen &= chosen
    steps = torch.arange(last + 1, device=first.device)
    seen &= (steps[None, :] > first[:, None]).to(seen.device)[..., None]
    counts = seen.sum((1, 2)).tolist()
    fitted = [i for i, count in enumerate(counts) if count]
    left = [i for i, count in enumerate(counts) if not count]
    if not fitted:
        raise InvalidArgumentError(
            f"calibrate={until:g} leaves no held-out trajectory an observation to fit: each "
            "observes nothing between its first observed time and then; give a later "
            "calibrate, up to the data's last time "
            f"{float(data.t[-1]):g}"
        )
    index = torch.tensor(fitted, device=states.device)
    groups = []  # (trajectories, y0, times, observed states, mask) per first observed time
    for s in sorted({int(first[i]) for i in fitted}):
        group = index[first.to(index.device)[index] == s]
        groups.append((group, states[group, s], data.t[s : last + 1], window[group, s + 1 :],
                       seen[group, s + 1 :]))  # fmt: skip
    # Each trajectory's errors relative to the mean square of its own observations, so that
    # one of small amplitude is fitted as closely as one of large (its values move its own
    # solve only: the weights change no trajectory's best values, only when L-BFGS stops).
    observed = torch.where(seen, window, 0.0)
    squares = observed.pow(2).sum((1, 2))
    overall = float(squares.sum()) / sum(counts) or 1.0  # for a trajectory observed at 0 only
    scale = torch.where(squares > 0, squares / seen.sum((1, 2)).clamp(min=1), overall)
    values = start.expand(len(fitted), -1).clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS(
        [values], lr=1.0, max_iter=iterations, line_search_fn="strong_wolfe",
        tolerance_grad=_CALIBRATION_TOLERANCE_GRAD,
        tolerance_change=_CALIBRATION_TOLERANCE_CHANGE,
    )  # fmt: skip
    # A trial of the line search whose solve fails (values the model cannot be solved with: a
    # length stepped past zero) is a step too far: it gets a loss above the start's and the
    # search backs off. max_steps bounds such a solve at many times the start's step attempts.
    trials: dict[str, Any] = {"start": None, "max_steps": None}

    def closure(strict: bool = False) -> torch.Tensor:
        every = start.expand(n, -1).index_copy(0, index, values)
        rows = learned_rows(model, stored, None, n, every)
        bound = dict(options) if trials["max_steps"] is None else {
            **options, "max_steps": trials["max_steps"]
        }
        loss, attempts = values.new_zeros(()), 0
        try:
            for group, y0, times, ref, mask in groups:
                solution = solve_rows(model, y0, times, rows[group], params=[values], **bound)
                attempts = max(attempts, solution.stats.n_steps + solution.stats.n_rejected)
                pred = solution.ys[1:].transpose(0, 1)
                mse, _ = masked_mse(pred, ref, mask, dims=(1, 2))
                loss = loss + (mse / scale[group]).sum()
            loss = loss / len(fitted)
            (values.grad,) = torch.autograd.grad(loss, values)
            failed = not bool(torch.isfinite(loss))
        except SolverError:
            if strict or trials["start"] is None:
                raise
            failed = True
        if trials["start"] is None:  # the start: solved, as the rollout with the mean is
            trials["start"] = float(loss.detach())
            trials["max_steps"] = min(
                options["max_steps"],
                max(_TRIAL_STEPS_FLOOR, _TRIAL_STEPS_FACTOR * attempts),
            )
        elif failed and not strict:
            values.grad = torch.zeros_like(values)
            return values.new_tensor(10 * trials["start"] + 1.0)
        return loss.detach()

    try:
        with torch.enable_grad():
            optimizer.step(closure)
            loss = float(closure(strict=True))
    except SolverError as exc:
        raise SolverError(
            f"calibrating the held-out trajectories' {list(names)} on t <= {until:g} failed: "
            f"{exc}",
            status=exc.status, t=exc.t, step_size=exc.step_size, solution=exc.solution,
        ) from exc
    state = optimizer.state[values]
    done, evaluations = int(state.get("n_iter", 0)), int(state.get("func_evals", 0))
    limit = iterations * 5 // 4  # LBFGS's default max_eval
    result = start.expand(n, -1).index_copy(0, index, values.detach())
    return result, {
        "until": min(until, float(data.t[-1])),  # what was fitted: no data after their end
        "iterations": done,
        "evaluations": evaluations + 1,
        "converged": done < iterations and evaluations < limit,
        "loss": loss,
        "uncalibrated": left,
    }
