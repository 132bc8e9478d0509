"""Writing files so that a failure or an interruption leaves no half-written file behind,
telling an HDF5 file by its first bytes, and keeping a file or folder to one process at a time."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import io
import math
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from physode._errors import InvalidArgumentError

__all__ = [
    "has_hdf5_signature",
    "json_ready",
    "lock_exclusively",
    "save_atomically",
    "write_atomically",
    "writable_folder",
]

#: The eight bytes an HDF5 file starts with (physode writes no user block before them).
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"

#: How HDF5 gives the system's error of a write it could not make: ``errno = 28, ...``.
_HDF5_ERRNO = re.compile(r"\berrno = (\d+)")


def has_hdf5_signature(path: str | os.PathLike) -> bool:
    """Whether the file ``path`` starts with :data:`HDF5_SIGNATURE`; an ``OSError`` where it
    cannot be read. Reads eight bytes, without importing h5py."""
    with open(path, "rb") as handle:
        return handle.read(len(HDF5_SIGNATURE)) == HDF5_SIGNATURE


def write_atomically(path: str | os.PathLike, write: Callable[[Path], Any], what: str) -> Path:
    """Write ``path`` by calling ``write(tmp)`` on a temporary name beside it, then renaming it.

    The folder is created if needed. Whatever stops the write (an error, a full disk, Ctrl-C),
    the temporary file is removed and an existing ``path`` is left as it was. Where the system
    refused the write (an ``OSError``, or an error of HDF5 that carries the system's errno),
    the error becomes :class:`physode.InvalidArgumentError` naming ``what``, ``path`` and the
    system's reason (``cannot write the data set out.h5: No space left on device``).

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
    except BaseException as exc:
        _discard(tmp)
        reason = _refusal(exc)
        if reason is None:
            raise
        raise InvalidArgumentError(f"cannot write the {what} {path}: {reason}") from None
    return path


def _refusal(exc: BaseException) -> str | None:
    """The system's reason where ``exc`` says that it refused a write, else ``None``.

    h5py raises a write the system refused as an ``OSError`` without ``strerror``, or, where
    closing the file cannot flush it, as a ``RuntimeError`` (``Can't decrement id ref count
    (unable to extend file properly, errno = 28, ...)``); both carry the errno in their text.
    """
    if not isinstance(exc, OSError | RuntimeError):
        return None
    found = _HDF5_ERRNO.search(str(exc))
    if found is not None:
        return os.strerror(int(found[1]))
    return (exc.strerror or str(exc)) if isinstance(exc, OSError) else None


def save_atomically(path: str | os.PathLike, value: Any, what: str) -> Path:
    """``torch.save(value)`` to ``path`` through :func:`write_atomically`.

    ``value`` is serialised in memory first and its bytes written by Python: ``torch.save``
    given a file name writes from C++, and reports a full disk as a ``RuntimeError`` that names
    neither the file nor the cause (``[enforce fail at inline_container.cc:672] . unexpected pos
    64 vs 0``), which the commands took for a bug of physode. Written by Python, it is an
    ``OSError`` that :func:`write_atomically` words (``cannot write the checkpoint ck/last.pt:
    No space left on device``). Memory holds one more copy of the bytes while they are written.

    Examples
    --------
    >>> import tempfile, pathlib, torch
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "w.pt"
    >>> torch.load(save_atomically(path, {"w": torch.ones(2)}, "model"))["w"]
    tensor([1., 1.])
    """
    import torch  # here: the torch-free modules (train/config.py) import this one

    buffer = io.BytesIO()
    torch.save(value, buffer)
    return write_atomically(path, lambda tmp: tmp.write_bytes(buffer.getbuffer()), what)


def writable_folder(name: str, value: Any, folder: Path) -> None:
    """Create ``folder`` if needed; refuse it, naming the setting ``name=value``, if it cannot be
    written.

    A file where a folder must go is named as such (``--out run: cannot create the folder run:
    run is not a folder``), as the commands refuse one, not as the system says it (``File exists``).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> file = pathlib.Path(tempfile.mkdtemp()) / "run"
    >>> _ = file.write_text("")
    >>> try:
    ...     writable_folder("out", "run", file)
    ... except InvalidArgumentError as exc:
    ...     print(str(exc).endswith(f"{file}: {file} is not a folder"))
    True
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        # The nearest of the folder and those above it that exists: a file there blocks it.
        there = next((p for p in (folder, *folder.parents) if p.exists()), None)
        reason = (
            f": {there} is not a folder"
            if there is not None and not there.is_dir()
            else f" ({exc.strerror or exc})"
        )
        raise InvalidArgumentError(
            f"{name}={value!r}: cannot create the folder {folder}{reason}"
        ) from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InvalidArgumentError(f"{name}={value!r}: the folder {folder} is not writable")


# What flock gives where another process holds the lock; any other error means that the file
# system keeps no locks (NFS without its lock daemon, some FUSE file systems).
_HELD_ELSEWHERE = (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)


def lock_exclusively(path: Path, busy: str) -> int | None:
    """Take the exclusive advisory lock of the file (created where missing) or folder ``path``
    for this process, until the returned descriptor is closed (``os.close``).

    The kernel drops the lock when the process ends, by SIGKILL too, so a killed process
    never leaves a stale lock behind. Where there are no locks (Windows, a file system without
    them) nothing is locked and ``None`` is returned: another process is then not detected.

    Raises
    ------
    physode.InvalidArgumentError
        With the message ``busy``, where another process holds the lock.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> held = lock_exclusively(folder, "in use")
    >>> try:
    ...     lock_exclusively(folder, f"{folder.name} is in use")
    ... except InvalidArgumentError as exc:
    ...     print(str(exc) == f"{folder.name} is in use")
    True
    >>> os.close(held); os.close(lock_exclusively(folder, "in use"))  # released: taken again
    """
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks
        return None
    flags = os.O_RDONLY if path.is_dir() else os.O_RDWR | os.O_CREAT
    descriptor = os.open(path, flags | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(descriptor)
        if exc.errno in _HELD_ELSEWHERE:
            raise InvalidArgumentError(busy) from None
        return None
    return descriptor


def _discard(path: Path) -> None:
    """Remove a temporary file if there is one (a failed write may not have made it)."""
    with contextlib.suppress(OSError):
        path.unlink()


def json_ready(value: Any) -> Any:
    """``value`` as JSON holds it: dataclasses and dicts as objects, tuples as lists, NumPy
    scalars as Python numbers, and numbers that are not finite as ``None`` (JSON's null), which
    JSON readers accept where they refuse ``NaN`` and ``Infinity``.

    Examples
    --------
    >>> json_ready({"loss": float("nan"), "pairs": [(2, float("inf")), (0, 0.5)]})
    {'loss': None, 'pairs': [[2, None], [0, 0.5]]}
    """
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: json_ready(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {key: json_ready(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(item) for item in value]
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # NumPy or torch scalar
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
