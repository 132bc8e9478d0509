"""The catalogue of physical systems: ``names()``, ``load(name_or_path)``, ``path(name)``,
``clear_cache()``.

The specification files live in the repository's ``systems/`` folder and ship inside the wheel as
the package ``physode._catalogue``; :func:`load` also reads a user's own file given by path.

>>> import physode
>>> "three_body" in physode.systems.names()
True
>>> physode.systems.load("pendulum").state_names
['theta', 'theta_dot']
"""

from __future__ import annotations

import functools
import importlib.resources
import os
import shlex
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from physode._errors import InvalidArgumentError
from physode._files import has_hdf5_signature
from physode.symbolic import System, _cache
from physode.symbolic._names import did_you_mean, warn_constants
from physode.symbolic._spec import read_spec_text, system_from_spec

__all__ = ["clear_cache", "load", "names", "path"]

SUFFIX = ".toml"


def _catalogue() -> Traversable:
    try:
        return importlib.resources.files("physode._catalogue")
    except ModuleNotFoundError:
        # Running from a source checkout that is not installed: the files are in ./systems.
        return Path(__file__).resolve().parent.parent / "systems"


def names() -> list[str]:
    """The names of the systems in the catalogue, sorted.

    Returns
    -------
    list of str

    Examples
    --------
    >>> import physode
    >>> physode.systems.names()[:3]
    ['damped_oscillator', 'damped_pendulum', 'double_pendulum']
    """
    return sorted(
        entry.name[: -len(SUFFIX)]
        for entry in _catalogue().iterdir()
        if entry.name.endswith(SUFFIX) and entry.is_file()
    )


def path(name: str) -> Traversable:
    """The specification file of a catalogue system.

    Raises
    ------
    physode.InvalidArgumentError
        When ``name`` is not in the catalogue (the message lists the valid names), or is not a
        string.

    Examples
    --------
    >>> import physode
    >>> physode.systems.path("kepler").name
    'kepler.toml'
    """
    valid = names()
    if not isinstance(name, str):
        raise InvalidArgumentError(
            f"name must be a catalogue name (a str), got {type(name).__name__} {name!r}; "
            f"valid names: {', '.join(valid)} (physode.systems.load reads your own file by path)"
        )
    if name not in valid:
        _refuse_a_data_file(Path(name), name)
        # A file of that name here is surely what was meant: a path needs its suffix.
        own = Path(f"{name}{SUFFIX}")
        if _is_file(own):
            hint = f"; did you mean your file {own}? Pass it with its suffix"
        elif _is_file(Path(name)):
            hint = (
                f"; {name!r} is a file here, but not a specification file ending in {SUFFIX} "
                f"(a specification file under another name is read given as a path: "
                f"{os.path.join(os.curdir, name)})"
            )
        else:
            hint = did_you_mean(name, valid)
        raise InvalidArgumentError(
            f"unknown system {name!r}{hint}; valid names: {', '.join(valid)} "
            "(or pass the path to your own .toml file)"
        )
    return _catalogue() / f"{name}{SUFFIX}"


#: Endings of the data sets of ``physode simulate``: a name ending so is a path, not a system.
_DATA_SUFFIXES = (".h5", ".hdf5")
_WANTED = (
    "a system is a name from the catalogue (`physode systems` lists them) or a .toml "
    "specification file"
)


def _looks_like_a_path(given: Any) -> bool:
    """Whether ``given`` names a file rather than a catalogue system: a path-like object, or
    text that holds a folder separator or ends in ``.toml``, ``.h5`` or ``.hdf5``.

    Examples
    --------
    >>> [_looks_like_a_path(given) for given in ("pendulum", "osc.toml", Path("osc"), 3)]
    [False, True, True, False]
    """
    if isinstance(given, os.PathLike):
        return True
    if not isinstance(given, str):
        return False
    separators = {os.sep, os.altsep} - {None}
    return given.endswith((SUFFIX, *_DATA_SUFFIXES)) or any(s in given for s in separators)


def _is_file(file: Path) -> bool:
    """``file.is_file()``, False too for a name the operating system refuses to look up (longer
    than a file name may be, where pathlib raises ``OSError: File name too long``).

    Examples
    --------
    >>> _is_file(Path("x" * 5000)), _is_file(Path("no\\0file"))
    (False, False)
    """
    try:
        return file.is_file()
    except (OSError, ValueError):
        return False


def _is_dir(file: Path) -> bool:
    """``file.is_dir()``, False too for a name the operating system refuses to look up."""
    try:
        return file.is_dir()
    except (OSError, ValueError):
        return False


def _refuse_spec_text(given: str) -> None:
    """Refuse ``given`` if it is the text of a specification file rather than a name or path
    (``physode.systems.load(system.to_spec())``), quoting its first line, not all of it."""
    lines = given.strip().splitlines()
    if len(lines) < 2 or "=" not in given or _is_file(Path(given)):
        return
    raise InvalidArgumentError(
        f"name_or_path is the text of a specification ({len(lines)} lines, the first "
        f"{lines[0]!r}), not a name or a path; {_WANTED}. Write the text to a {SUFFIX} file "
        "and pass its path, or build the system from the text with "
        "physode.symbolic.system_from_spec(text)"
    )


def _no_file(file: Path, given: str) -> str:
    """Why ``file`` (spelled ``given``), which is no file, cannot be read: a folder, a missing
    folder, or no such file; with what a system is where that helps.

    Examples
    --------
    >>> print(_no_file(Path("missing.h5"), "missing.h5"))  # doctest: +NORMALIZE_WHITESPACE
    no such file: 'missing.h5'; a system is a name from the catalogue (`physode systems` lists
    them) or a .toml specification file, and a data set (.h5) is read by `physode check` and
    physode.data.load
    """
    if _is_dir(file):
        return f"{given!r} is a folder, not a specification file; {_WANTED}"
    message = f"no such file: {given!r}"
    folder = file.parent
    if folder != Path() and not _is_dir(folder):
        message += f" (there is no folder {str(folder)!r})"
    if given.endswith(_DATA_SUFFIXES):
        return (
            f"{message}; {_WANTED}, and a data set ({file.suffix}) is read by `physode check` "
            "and physode.data.load"
        )
    if file.suffix == SUFFIX and file.stem in names():
        return f"{message}; the catalogue's {file.stem} is loaded by its name: {file.stem!r}"
    return message


def _refuse_a_data_file(file: Path, given: str) -> None:
    """Refuse ``file`` (spelled ``given``) if it is an HDF5 file, such as a data set of
    ``physode simulate``, given where a system was meant (``physode simulate data.h5``),
    saying what it is and what a system is; do nothing for any other file."""
    try:
        if not has_hdf5_signature(file):
            return
    except (OSError, ValueError):  # no file (a folder, a NUL in the name): said by the caller
        return
    if _is_data_set(file):
        raise InvalidArgumentError(
            f"{given!r} is a physode data set, not a system specification; {_WANTED}. To check "
            f"the data set: `physode check {shlex.quote(given)}`; to read it: "
            f"physode.data.load({given!r}), whose .system is the system it holds"
        )
    raise InvalidArgumentError(f"{given!r} is an HDF5 file, not a system specification; {_WANTED}")


def _is_data_set(file: Path) -> bool:
    """Whether the HDF5 file ``file`` says it is a physode data set (its ``format``)."""
    import h5py

    from physode.data._store import FORMAT_NAME

    try:
        with h5py.File(file, "r") as f:
            name = f.attrs.get("format")
    except (OSError, RuntimeError, ValueError):  # damaged: then it is no usable data set
        return False
    if isinstance(name, bytes):
        name = name.decode("utf-8", "replace")
    return name == FORMAT_NAME


@functools.lru_cache(maxsize=64)
def _from_text(text: str, source: str) -> System:
    # Derived once per specification: in this process (lru_cache), and across processes in the
    # on-disk cache (physode.symbolic._cache), which also keeps the generated code.
    system = _cache.load(text)
    if system is None:
        system = system_from_spec(text, source=source).compile()  # warns of an undeclared E
        _cache.store(text, system)
    else:  # parsed in an earlier process: its warnings are given again
        warn_constants(system)
    return system


def load(name_or_path: str | os.PathLike) -> System:
    """Load a system from the catalogue by name, or from a specification file by path.

    Parameters
    ----------
    name_or_path : str or path-like
        A name from :func:`names`, or the path of a ``.toml`` specification file.

    Returns
    -------
    physode.System
        Loading the same text twice returns the same object (code is generated once).

    Raises
    ------
    physode.InvalidArgumentError
        For an unknown name, a missing file, or an HDF5 file (a data set of ``physode
        simulate``, which ``physode.data.load`` reads) given for a specification.
    physode.SystemDefinitionError
        For a file with problems (all of them are listed), or one that is not UTF-8 text.

    Examples
    --------
    >>> import physode
    >>> sys = physode.systems.load("three_body")
    >>> sys.parameters
    {'m1': 1.0, 'm2': 1.0, 'm3': 1.0, 'G': 1.0}
    """
    if isinstance(name_or_path, str):
        _refuse_spec_text(name_or_path)
    if _looks_like_a_path(name_or_path):
        file = Path(name_or_path)
        if not _is_file(file):
            raise InvalidArgumentError(_no_file(file, os.fspath(name_or_path)))
        _refuse_a_data_file(file, os.fspath(name_or_path))
        return _from_text(read_spec_text(file, str(file)), str(file))
    if not isinstance(name_or_path, str):
        raise InvalidArgumentError(
            f"name_or_path must be a system name or a path, got {type(name_or_path).__name__}"
        )
    entry = path(name_or_path)
    source = f"{name_or_path}{SUFFIX} (catalogue)"
    return _from_text(read_spec_text(entry, source), source)


def clear_cache() -> int:
    """Empty the derivation cache that :func:`load` fills, on disk and in this process; returns
    how many entries it removed from disk.

    The next :func:`load` of each system derives it again with SymPy. See ``docs/systems.md``
    for where the cache lives (``$PHYSODE_CACHE_DIR``).
    """
    _from_text.cache_clear()
    return _cache.clear()
