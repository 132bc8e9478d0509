"""The exception hierarchy: every error physode raises on purpose derives from PhysodeError."""

from __future__ import annotations


class PhysodeError(Exception):
    """Base class of every error raised by physode on purpose."""


class InvalidArgumentError(PhysodeError, ValueError):
    """An argument has a bad value; the message names it and the valid choices."""


class SolverError(PhysodeError, RuntimeError):
    """A solve stopped before the final time.

    Attributes
    ----------
    status : physode.Status
        Why the solve stopped.
    t : float
        The time reached.
    step_size : float
        The last step size tried.
    solution : physode.Solution or None
        The partial solution up to ``t`` (as returned with ``throw=False``).
    """

    def __init__(self, message: str, *, status, t: float, step_size: float, solution=None):
        super().__init__(message)
        self.status = status
        self.t = t
        self.step_size = step_size
        self.solution = solution


class SystemDefinitionError(PhysodeError, ValueError):
    """A physical system's specification is invalid; the message lists every problem."""


class DataFormatError(PhysodeError, ValueError):
    """A file is not a physode data set, is damaged, or was written by a newer format version."""
