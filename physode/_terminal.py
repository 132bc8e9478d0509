"""What a ``physode`` command shows besides its output, one rule for every command: whether it
draws a progress bar, how it says a warning, and how it stops on SIGTERM."""

from __future__ import annotations

import _thread
import contextlib
import signal
import sys
import threading
import warnings
from collections.abc import Iterator
from types import CodeType, FrameType
from typing import TYPE_CHECKING

from physode._errors import PhysodeWarning

if TYPE_CHECKING:
    from sys import UnraisableHookArgs


def progress_wanted(quiet: bool) -> bool:
    """Whether to draw a progress bar: not ``quiet``, and standard error is a terminal.

    Redirected to a file or a pipe, a bar would fill it with carriage-return redraws.

    Examples
    --------
    >>> progress_wanted(quiet=True)
    False
    """
    return not quiet and sys.stderr.isatty()


@contextlib.contextmanager
def warnings_as_lines(command: str, said: set | None = None) -> Iterator[None]:
    """Say each ``physode.PhysodeWarning`` given inside as one line of ``command``'s own
    (``physode train: warning: ...``) on standard error when the block ends, also on an error or
    Ctrl-C, not as Python shows a warning (with a file and a line); other warnings pass on as they
    are. A warning given again from the same place with the same text is said once.

    ``said``: what earlier blocks of the same command said, which this block adds to and does
    not say again (a command's blocks share one set, so that a warning given in two of them,
    as training's solves and the rollout's give the same one, is said once in the run).

    Examples
    --------
    >>> import warnings
    >>> with warnings_as_lines("physode demo"):  # doctest: +SKIP
    ...     warnings.warn("nothing to do", PhysodeWarning)
    physode demo: warning: nothing to do
    """
    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
    finally:
        said = set() if said is None else said
        for w in caught:
            # Once each, as Python's default filter shows a warning: a solve repeated every
            # batch (rtol below float32's resolution) gives the same warning every time. A line
            # of the command's own names no place, so its text alone tells it apart.
            ours = issubclass(w.category, PhysodeWarning)
            key = (str(w.message),) if ours else (w.category, str(w.message), w.filename, w.lineno)
            if key in said:
                continue
            said.add(key)
            if ours:
                print(f"{command}: warning: {w.message}", file=sys.stderr)
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


class Terminated(KeyboardInterrupt):
    """SIGTERM, as a batch scheduler sends it before it kills a job (SLURM's preemption or time
    limit, ``scancel``, ``timeout``): raised in the main thread inside
    :func:`terminate_as_interrupt` and handled as Ctrl-C is, being a ``KeyboardInterrupt``."""


# Ctrl-C and SIGTERM: how the command says it stopped, and its exit status (128 + the signal).
_STOPPED = {KeyboardInterrupt: ("interrupted", 130), Terminated: ("terminated (SIGTERM)", 143)}


def stopped(exc: KeyboardInterrupt) -> tuple[str, int]:
    """How a command stopped by ``exc`` says so, and its exit status: ``interrupted`` and 130 for
    Ctrl-C, ``terminated (SIGTERM)`` and 143 for SIGTERM, as a shell reports a process those
    signals killed.

    Examples
    --------
    >>> stopped(KeyboardInterrupt())
    ('interrupted', 130)
    >>> stopped(Terminated())
    ('terminated (SIGTERM)', 143)
    """
    return _STOPPED[Terminated if isinstance(exc, Terminated) else KeyboardInterrupt]


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Inside, SIGTERM raises :class:`Terminated` in the main thread, so that a command stopped
    by a scheduler keeps what it finished and says how to resume, as on Ctrl-C, instead of
    dying at once. A second SIGTERM kills at once, as without this block.

    Where SIGTERM already has a handler of its own (a program that calls ``physode.cli.main``),
    or outside the main thread, which alone may set one, nothing changes.

    Python runs a signal's handler between any two bytecodes of the main thread, also inside a
    finaliser (a ``__del__``, a weakref callback: torch's and h5py's garbage), where it prints
    the exception raised and drops it. Such a :class:`Terminated` is raised again a moment
    after the finaliser has returned, so the command stops all the same.

    Examples
    --------
    >>> with terminate_as_interrupt():  # doctest: +SKIP
    ...     os.kill(os.getpid(), signal.SIGTERM)
    Traceback (most recent call last):
    physode._terminal.Terminated
    """
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    ):
        yield
        return

    def terminated(signum: int, frame: FrameType | None) -> None:
        if _inside(frame, dropped.__code__):  # the hook's own exception would be dropped too
            _interrupt_later(signum)
            return
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise Terminated

    caller_hook = sys.unraisablehook

    def dropped(report: UnraisableHookArgs) -> None:
        if not isinstance(report.exc_value, Terminated):
            caller_hook(report)
            return
        signal.signal(signal.SIGTERM, terminated)
        _interrupt_later(signal.SIGTERM)

    signal.signal(signal.SIGTERM, terminated)
    sys.unraisablehook = dropped
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        sys.unraisablehook = caller_hook


def _inside(frame: FrameType | None, code: CodeType) -> bool:
    """Whether ``frame`` runs ``code`` or was called, however deeply, from a frame that does."""
    while frame is not None:
        if frame.f_code is code:
            return True
        frame = frame.f_back
    return False


def _interrupt_later(signum: int) -> None:
    """Have ``signum``'s handler run in the main thread in a moment, from another thread: a
    handler run sooner would run in the code that asks for it, a finaliser's hook."""
    timer = threading.Timer(0.001, _thread.interrupt_main, (signum,))
    timer.daemon = True
    timer.start()
