"""torch's intra-op thread count, set for one block of work and restored after it.

Every thread count physode sets (``simulate(threads=...)``, ``physode simulate --threads``,
``physode train --threads``, the scripts' ``--threads``) is bounded by :func:`most_threads`:
torch's OpenMP runtime could not start 16384 threads (the process ended with "Thread creation
failed") and crashed with a segmentation fault at 32768, long after the arguments were read.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from physode._checks import is_int

# The bound is 4 threads per CPU of this machine, but never below FEWEST_ALLOWED: with Dask the
# chunks may run on larger machines than the one that submits them.
THREADS_PER_CPU = 4
FEWEST_ALLOWED = 64


def most_threads() -> int:
    """The largest thread count physode sets: 4 per CPU of this machine, and at least 64.

    Examples
    --------
    >>> most_threads() >= 64
    True
    """
    return max(FEWEST_ALLOWED, THREADS_PER_CPU * (os.cpu_count() or 1))


def too_many_threads(threads: object) -> str | None:
    """Why ``threads`` is more threads than :func:`most_threads` allows (the end of a message
    whose caller names the setting), or None for any other value, which callers check apart.

    Examples
    --------
    >>> too_many_threads(2) is None, too_many_threads(0) is None
    (True, True)
    >>> too_many_threads(10**6).startswith("is more than")
    True
    """
    limit = most_threads()
    if not is_int(threads, least=limit + 1):
        return None
    cpus = os.cpu_count()
    machine = f"this machine has {cpus}" if cpus else "this machine does not say how many"
    return (
        f"is more than {limit}, the most physode sets ({THREADS_PER_CPU} per CPU, {machine}, "
        f"and at least {FEWEST_ALLOWED}): choose 1 to {limit}"
    )


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``threads`` torch intra-op threads, then restore the previous count.

    A value that is not an integer from 1 to :func:`most_threads` (``None`` included) changes
    nothing: callers validate it with their other settings (with :func:`too_many_threads` for
    the bound) and report it there.

    Examples
    --------
    >>> import torch
    >>> before = torch.get_num_threads()
    >>> with torch_threads(1):
    ...     torch.get_num_threads()
    1
    >>> torch.get_num_threads() == before
    True
    """
    import torch

    previous = torch.get_num_threads()
    if is_int(threads, least=1) and too_many_threads(threads) is None:
        torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(previous)
