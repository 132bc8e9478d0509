"""Writing files so that a failure or an interruption leaves no half-written file behind."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from physode._errors import InvalidArgumentError

__all__ = ["write_atomically", "writable_folder"]


def write_atomically(path: str | os.PathLike, write: Callable[[Path], Any], what: str) -> Path:
    """Write ``path`` by calling ``write(tmp)`` on a temporary name beside it, then renaming it.

    The folder is created if needed. Whatever stops the write (an error, a full disk, Ctrl-C),
    the temporary file is removed and an existing ``path`` is left as it was; an ``OSError``
    becomes :class:`physode.InvalidArgumentError` naming ``what`` and ``path``.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> write_atomically(folder / "a" / "note.txt", lambda tmp: tmp.write_text("hi"), "note").name
    'note.txt'
    >>> sorted(p.name for p in (folder / "a").iterdir())
    ['note.txt']
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        _discard(tmp)
        message = f"cannot write the {what} {path}: {exc.strerror or exc}"
        raise InvalidArgumentError(message) from None
    except BaseException:
        _discard(tmp)
        raise
    return path


def writable_folder(name: str, value: Any, folder: Path) -> None:
    """Create ``folder`` if needed; refuse it, naming the setting ``name=value``, if it cannot be
    written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidArgumentError(
            f"{name}={value!r}: cannot create the folder {folder} ({exc.strerror or exc})"
        ) from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InvalidArgumentError(f"{name}={value!r}: the folder {folder} is not writable")


def _discard(path: Path) -> None:
    """Remove a temporary file if there is one (a failed write may not have made it)."""
    with contextlib.suppress(OSError):
        path.unlink()
