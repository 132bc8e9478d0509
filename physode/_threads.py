"""torch's intra-op thread count, set for one block of work and restored after it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from physode._checks import is_int


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``threads`` torch intra-op threads, then restore the previous count.

    A value that is not a positive integer (``None`` included) changes nothing: callers validate
    it with their other settings and report it there.

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
    if is_int(threads, least=1):
        torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(previous)
