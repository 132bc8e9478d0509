"""The exception hierarchy: every error physode raises on purpose derives from PhysodeError."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any


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

    def __reduce__(self):
        # Pickled whole (a solve in a worker process, physode.data.simulate with an executor):
        # the default would call __init__ with the message alone and fail.
        attributes = {"status": self.status, "t": self.t, "step_size": self.step_size}
        return _rebuilt, (type(self), self.args, {**attributes, "solution": self.solution})


class TrainingError(PhysodeError, RuntimeError):
    """Training stopped at a batch it could not use: its solve failed, or its loss or gradient
    was not finite (see ``docs/training.md``, "When training diverges").

    The trainer is back where it stood after its last completed epoch (weights, optimiser,
    history), and ``checkpoint_dir``'s ``last.pt``, where there is one, holds that state.

    Attributes
    ----------
    epoch : int
        The epoch that failed (1 for the first).
    batch : int
        The batch of that epoch that failed (1 for the first).
    checkpoint : pathlib.Path or None
        The checkpoint that holds the run as the trainer now holds it, or ``None``.
    """

    def __init__(self, message: str, *, epoch: int, batch: int, checkpoint=None):
        super().__init__(message)
        self.epoch = epoch
        self.batch = batch
        self.checkpoint = checkpoint

    def __reduce__(self):
        attributes = {"epoch": self.epoch, "batch": self.batch, "checkpoint": self.checkpoint}
        return _rebuilt, (type(self), self.args, attributes)


class DistributedError(PhysodeError, RuntimeError):
    """The processes training together (``torch.distributed``) cannot go on: another process
    stopped on an error or could not write the log or a checkpoint, or they made different
    calls of their trainers. The message names the process and what it met; that process
    itself raises its own error."""


class InternalError(PhysodeError, RuntimeError):
    """A check of physode's own bookkeeping failed (a data set's writer left rows unwritten):
    a bug in physode, not in its input. Please report it with the message."""


def _rebuilt(cls: type, args: tuple, attributes: dict) -> BaseException:
    """An error with keyword-only attributes, unpickled: ``cls(*args, **attributes)``."""
    return cls(*args, **attributes)


class PhysodeWarning(UserWarning):
    """A warning physode gives on purpose: the run goes on, but not as you may think (a model
    fitted across trajectories that differ in a learned parameter, a resumed run with nothing
    left to train). The ``physode`` command says each as one line of its own."""


class UnsupportedError(PhysodeError, RuntimeError):
    """An operation this part of physode does not support by design; the message names what does.

    For example a second derivative (``create_graph=True``) through a solve with
    ``gradient="aca"`` or ``"opt-disc"``, whose backward passes autograd does not record.
    """


class SystemDefinitionError(PhysodeError, ValueError):
    """A physical system's specification is invalid; the message lists every problem."""


class DataFormatError(PhysodeError, ValueError):
    """A file is not a physode data set, is damaged, or was written by a newer format version."""


def first_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message, or its type's name when the message is empty: what
    a one-line error of physode quotes of an error from below it (h5py, torch).

    >>> first_line(OSError("Unable to open file\\nmore detail")), first_line(KeyError())
    ('Unable to open file', 'KeyError')
    """
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def first_shown(items: Sequence[Any], shown: int, text: Callable[[Any], str] = str) -> str:
    """The first ``shown`` of ``items``, each as ``text`` writes it, then how many more there
    are: how a message lists trajectories, names or failures that may be many.

    >>> first_shown(["a", "b", "c"], 2), first_shown([3, 8], 2, text=hex)
    ('a, b and 1 more', '0x3, 0x8')
    """
    listed = ", ".join(text(item) for item in items[:shown])
    return listed + (f" and {len(items) - shown} more" if len(items) > shown else "")


def one_tolerance(name: str, value: object) -> float:
    """``value`` as a positive finite float (:func:`positive_finite`), also from a tensor or
    array of one element; a tolerance per component (SciPy's array ``atol``, a torchdiffeq
    tensor ``rtol``) is refused saying that the error norm takes one.

    >>> import numpy as np
    >>> one_tolerance("atol", np.array([1e-9]))
    1e-09
    """
    if isinstance(value, tuple | list) or math.prod(getattr(value, "shape", ())) > 1:
        raise InvalidArgumentError(
            f"{name} must be one number, got {value!r:.80}: the error norm scales every "
            "component by one atol + rtol * |y|, without a tolerance per component; where the "
            "components' sizes differ, solve for the state divided by its typical size"
        )
    if getattr(value, "ndim", 0) and callable(getattr(value, "item", None)):
        value = value.item()  # one element: NumPy refuses float() of a 1-d array
    try:
        return positive_finite(name, value)
    except InvalidArgumentError as error:
        if isinstance(value, str | bytes | bool) or value != 0:
            raise
        raise InvalidArgumentError(f"{error}. {_ZERO_TOLERANCE[name.endswith('atol')]}") from None


# What to pass instead of a tolerance of zero, for rtol (False) and atol (True).
_ZERO_TOLERANCE = {
    True: "For (nearly) pure relative control pass an atol far below the state's size, e.g. "
    "atol=1e-30: the error scale atol + rtol * |y| must not be 0 where a component of y is 0",
    False: "For (nearly) pure absolute control pass a small rtol, e.g. rtol=1e-12: one below "
    "the dtype's resolution is raised to it, with a warning",
}


def positive_finite(name: str, value: object) -> float:
    """``value`` as a float if it is a positive finite real number, else
    :class:`InvalidArgumentError` naming ``name``. Strings and booleans are refused, not parsed.

    >>> positive_finite("rtol", 1e-6)
    1e-06
    """
    if isinstance(value, (str, bytes, bool)):
        raise InvalidArgumentError(f"{name} must be a positive number, got {value!r}")
    try:
        number = float(value)
    except OverflowError:  # an integer too large for a float
        raise InvalidArgumentError(f"{name} must be positive and finite, got {value!r}") from None
    except (TypeError, ValueError, RuntimeError):
        raise InvalidArgumentError(f"{name} must be a positive number, got {value!r}") from None
    if not (number > 0 and math.isfinite(number)):
        raise InvalidArgumentError(f"{name} must be positive and finite, got {value!r}")
    return number
