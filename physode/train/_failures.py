"""Batches that training cannot use (a failed solve, a loss or gradient that is not finite),
and the words that say where, why and what to try."""

from __future__ import annotations

import math
import re
from typing import Any

import torch
from torch import nn

import physode
from physode._errors import SolverError, first_line
from physode.train._wording import _SHOWN, _listed, _number
from physode.train.data import Window


class _FailedBatch(Exception):
    """A training batch the optimiser must not step with (:meth:`Trainer._evaluate`); ``reason``
    says why, and :meth:`place` where. :meth:`Trainer.fit` turns it into a
    :class:`physode.TrainingError`."""

    def __init__(self, reason: str, max_steps: bool = False, solution: Any = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.max_steps = max_steps  # a solve stopped on max_steps
        # The failed evaluation's solve, partial where it raised (its work counts in the log).
        self.solution = solution
        self.epoch = self.batch = self.n_batches = 0
        self.skipped: tuple[int, int] | None = None  # on_failed_batch="skip": (in all, in a row)
        self.since: tuple[int, int] | None = None  # (epoch, batch) of the first in the row
        # Whether the row began in an earlier run of an epoch (False: this one, or not known).
        self.earlier_run = False

    def place(self, epoch: int, batch: int, n_batches: int) -> None:
        self.epoch, self.batch, self.n_batches = epoch, batch, n_batches


def _cause(exc: SolverError) -> str:
    """The first sentence of a solver error: what stopped it, without the advice on solve()'s
    settings that follows (the trainer gives its own)."""
    return first_line(exc).split(". ")[0].rstrip(".")


# Where a solver's message says the solve stopped (physode.solvers.loop), which the trainer
# says itself, once, in its own terms: the time into the windows where their starts differ.
_STOPPED_AT = re.compile(r" at t=[^ ,:]+(?: with step size [^ :]+|, before the first step)")
_BACKWARD = "Opt-Disc backward solve failed: "


def _solve_and_cause(exc: SolverError) -> tuple[str, str]:
    """Which solve ``exc`` stopped (``"solve"``, or ``"Opt-Disc backward solve"``) and why: the
    first sentence of its message without the time and step size, which the caller gives.

    >>> error = SolverError("step size underflow at t=0.5 with step size 1e-15: the error "
    ...     "control rejected every step. Check func.", status=None, t=0.5, step_size=1e-15)
    >>> _solve_and_cause(error)
    ('solve', 'step size underflow; the error control rejected every step')
    """
    cause, solve = _cause(exc), "solve"
    if cause.startswith(_BACKWARD):
        cause, solve = cause[len(_BACKWARD) :], "Opt-Disc backward solve"
    what, _, why = _STOPPED_AT.sub("", cause, count=1).partition(": ")
    return solve, f"{what}; {why}" if why else what


def _gradient_hint(gradient: Any) -> str:
    """The other gradient modes worth a try after a failed batch: only Opt-Disc's changes the
    training (its gradient is approximate, and its backward solve can fail on its own).

    >>> import physode
    >>> _gradient_hint(physode.OptDisc(restart=True))
    ", an exact gradient (gradient='aca' or 'disc-opt') or physode.OptDisc(restart='steps')"
    >>> _gradient_hint("aca")
    ''
    """
    if getattr(gradient, "name", gradient) != "opt-disc":
        return ""  # the exact modes share their solves and their gradient
    steps = "" if getattr(gradient, "restart", False) == "steps" else (
        " or physode.OptDisc(restart='steps')"
    )
    return f", an exact gradient (gradient='aca' or 'disc-opt'){steps}"


def _step_text(step_size: Any) -> str:
    """`` with step size h`` after a time, or ``, before the first step`` where there was none
    (``nan``)."""
    try:
        h = float(_number(step_size))
    except ValueError:
        return ""
    if math.isnan(h):
        return ", before the first step"
    return f" with step size {_number(h)}" if math.isfinite(h) else ""


def _windows_text(n: int) -> str:
    return "1 window" if n == 1 else f"{n} windows"


def _solve_failed(
    t: torch.Tensor, batch: list[Window], exc: SolverError, solution: Any
) -> _FailedBatch:
    """The failure of a batch (of training windows over the times ``t``) whose solve raised
    ``exc`` (``solution``: what it solved)."""
    solve, cause = _solve_and_cause(exc)
    return _FailedBatch(
        f"the {solve} of its {_windows_text(len(batch))} ({_where(t, batch)}) failed "
        f"{_when(t, batch, exc.t)}{_step_text(exc.step_size)}: {cause}",
        max_steps=exc.status == physode.Status.MAX_STEPS,
        solution=solution,
    )

def _when(t: torch.Tensor, batch: list[Window], reached: Any) -> str:
    """``at t=...`` for a solve of ``batch`` that reached ``reached``; windows of several
    starts share the first one's times, so the time into the windows is said instead."""
    if len({w.start for w in batch}) == 1:
        return f"at t={_number(reached)}"
    if isinstance(reached, torch.Tensor):
        reached = reached.reshape(-1)[0].item()
    t0 = float(t[batch[0].start])
    into = float(reached) - t0
    if abs(into) <= 1e-9 * max(1.0, abs(t0)):
        return "at the start of the windows"
    return f"{into:.6g} into the windows"

def _not_finite(
    t: torch.Tensor, model: nn.Module, batch: list[Window], sol: Any, objective: torch.Tensor
) -> _FailedBatch:
    """The failure of a batch whose loss or gradient is not finite (read on this path
    only)."""
    status = sol.status
    if isinstance(status, torch.Tensor):  # per-sample: failed rows stop, never raise
        codes = status.tolist()
        failed = [i for i, code in enumerate(codes) if code != physode.Status.SUCCESS]
        if failed:
            reached = sol.t_final.tolist()
            rows = [
                f"{_where(t, [batch[i]])} stopped "
                f"{_when(t, [batch[0], batch[i]], reached[i])} "
                f"({physode.Status(codes[i]).name})"
                for i in failed
            ]
            return _FailedBatch(
                f"{len(failed)} of its {_windows_text(len(batch))} could not be solved "
                f"({_listed(rows)}), so its loss is {_number(objective.item())}",
                max_steps=physode.Status.MAX_STEPS in codes,
                solution=sol,
            )
    value = objective.item()
    if not math.isfinite(value):
        return _FailedBatch(
            f"its loss over {_windows_text(len(batch))} ({_where(t, batch)}) is "
            f"{_number(value)}",
            solution=sol,
        )
    bad = [
        name for name, p in model.named_parameters()
        if p.grad is not None and not bool(torch.isfinite(p.grad).all())
    ]
    return _FailedBatch(
        f"the gradient of its loss over {_windows_text(len(batch))} ({_where(t, batch)}) "
        f"is not finite in {_listed(bad)}",
        solution=sol,
    )

def _where(t: torch.Tensor, batch: list[Window]) -> str:
    """The trajectories (of the training data) and start times of ``batch``'s windows."""
    starts: dict[int, list[int]] = {}
    for w in batch:
        starts.setdefault(w.start, []).append(w.index)
    parts = []
    for start, index in starts.items():
        listed = _listed([str(i) for i in index])
        noun = "trajectory" if len(index) == 1 else "trajectories"
        parts.append(f"training {noun} {listed} from t={_number(float(t[start]))}")
    return "; ".join(parts[:_SHOWN]) + ("; ..." if len(parts) > _SHOWN else "")
