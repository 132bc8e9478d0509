"""Derived systems kept on disk, so SymPy derives and generates code once per specification.

Deriving the equations of motion of a system and generating its code takes from a fraction of a
second (the three-body problem: about 0.5 s on a 2-core machine, measured 2026-12-07, after the
second or so that importing SymPy takes, which a load from the cache pays too) to minutes for
large Lagrangians. A derived
:class:`~physode.symbolic.System`, with the generated sources of its kernels, is pickled into
the cache folder under a key made of

* the specification text,
* the versions of Python, SymPy and physode, and
* the source code of ``physode.symbolic`` itself (so an edited code generator never serves old
  code).

The folder is ``$PHYSODE_CACHE_DIR`` if set (an empty value turns the cache off), else
``$XDG_CACHE_HOME/physode`` or ``~/.cache/physode``; where the home folder that needs cannot be
found (``$HOME`` unset for a user the system does not know), the cache is off. Entries are
written to a temporary name and renamed, so a reader never sees half a file; each entry carries
a SHA-256 digest of its content, and an entry that cannot be read or whose digest does not match
(a damaged file) is ignored and replaced. A folder that cannot be written or read leaves physode
working, only slower. The entries are pickles: keep the folder private to you, as for any cache
of executable code.
"""

from __future__ import annotations

import functools
import hashlib
import os
import pickle
import sys
import tempfile
from pathlib import Path

import sympy

ENV = "PHYSODE_CACHE_DIR"
FORMAT = 2
_SUFFIX = ".system.pickle"
_PARTIAL = ".writing-"  # an entry being written, renamed once complete
# An entry is _MAGIC, the SHA-256 digest of the pickle, then the pickle itself.
_MAGIC = b"physode-system\0"
_DIGEST_SIZE = hashlib.sha256().digest_size


def folder() -> Path | None:
    """The cache folder, or None when the cache is turned off.

    Examples
    --------
    >>> import os
    >>> from unittest import mock
    >>> with mock.patch.dict(os.environ, {"PHYSODE_CACHE_DIR": ""}):
    ...     folder() is None
    True
    """
    value = os.environ.get(ENV)
    try:
        if value is not None:
            return Path(value).expanduser() if value else None
        base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    except RuntimeError:
        # No home folder: $HOME unset, and this user has no entry in the password database
        # (a container or batch job run as a bare user id). No cache, as for one not writable.
        return None
    return Path(base) / "physode"


@functools.cache
def _code_version() -> str:
    """A hash of the versions and of this package's source, part of every key."""
    import physode

    digest = hashlib.sha256()
    versions = f"{FORMAT} {sys.version_info[:2]} {sympy.__version__} {physode.__version__}"
    digest.update(versions.encode())
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _entry(text: str) -> Path | None:
    where = folder()
    if where is None:
        return None
    key = hashlib.sha256((_code_version() + "\0" + text).encode()).hexdigest()
    return where / f"{key[:32]}{_SUFFIX}"


def load(text: str):
    """The cached system derived from specification ``text``, or None."""
    from physode.symbolic._system import System

    entry = _entry(text)
    if entry is None:
        return None
    try:  # a missing entry, or a folder this user may not read, is a miss like any other
        payload = _unseal(entry.read_bytes())
        # A damaged or foreign entry is rebuilt, never trusted: a flipped bit in the generated
        # source would otherwise surface as a SyntaxError, or as wrong numbers, on first use.
        system = None if payload is None else pickle.loads(payload)
    except Exception:
        return None
    if not isinstance(system, System) or system.spec_text != text:
        return None
    return system


def store(text: str, system) -> bool:
    """Cache ``system``, derived from ``text``; False when the folder cannot be written."""
    entry = _entry(text)
    if entry is None:
        return False
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=entry.parent, prefix=_PARTIAL)
        try:
            with os.fdopen(handle, "wb") as file:
                file.write(_seal(pickle.dumps(system, protocol=pickle.HIGHEST_PROTOCOL)))
            os.replace(temporary, entry)
        except BaseException:
            os.unlink(temporary)
            raise
    except (OSError, pickle.PicklingError, TypeError, AttributeError):
        return False
    return True


def _seal(payload: bytes) -> bytes:
    """``payload`` framed as a cache entry: the marker, its SHA-256 digest, then itself."""
    return _MAGIC + hashlib.sha256(payload).digest() + payload


def _unseal(data: bytes) -> bytes | None:
    """The payload of the cache entry ``data``; None when its marker or digest is wrong.

    Examples
    --------
    >>> _unseal(_seal(b"pickle")), _unseal(_seal(b"pickle")[:-1])
    (b'pickle', None)
    """
    head = len(_MAGIC) + _DIGEST_SIZE
    if len(data) < head or not data.startswith(_MAGIC):
        return None
    payload = data[head:]
    return payload if hashlib.sha256(payload).digest() == data[len(_MAGIC) : head] else None


def clear() -> int:
    """Remove every cached system; returns how many entries were removed.

    The half-written entries of writers that were killed (``.writing-*``, which nothing else
    removes) go too, uncounted; a writer still running then only misses storing its entry.
    """
    where = folder()
    if where is None or not where.is_dir():
        return 0
    removed = 0
    for entry in where.glob(f"*{_SUFFIX}"):
        entry.unlink(missing_ok=True)
        removed += 1
    for partial in where.glob(f"{_PARTIAL}*"):
        partial.unlink(missing_ok=True)
    return removed
