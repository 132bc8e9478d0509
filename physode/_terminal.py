"""What a ``physode`` command shows besides its output, one rule for every command: whether it
draws a progress bar, and how it says a warning."""

from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Iterator

from physode._errors import PhysodeWarning


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
def warnings_as_lines(command: str) -> Iterator[None]:
    """Say each ``physode.PhysodeWarning`` given inside as one line of ``command``'s own
    (``physode train: warning: ...``) on standard error when the block ends, also on an error or
    Ctrl-C, not as Python shows a warning (with a file and a line); other warnings pass on as they
    are. A warning given again from the same place with the same text is said once.

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
        said = set()
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
