"""Whether a command shows a progress bar: one rule for every ``physode`` command."""

from __future__ import annotations

import sys


def progress_wanted(quiet: bool) -> bool:
    """Whether to draw a progress bar: not ``quiet``, and standard error is a terminal.

    Redirected to a file or a pipe, a bar would fill it with carriage-return redraws.

    Examples
    --------
    >>> progress_wanted(quiet=True)
    False
    """
    return not quiet and sys.stderr.isatty()
