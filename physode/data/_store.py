"""The HDF5 store of simulated trajectories: its layout, writing it, and checking a file before use.

Layout, format ``physode.trajectories`` version 1 (``docs/data.md`` is the reference)::

    /t                    (P,)               float64   output times
    /states               (N, P, n_state)    float64 or float32
    /derivatives          (N, P, n_state)    like /states: the true dy/dt at every stored state
    /noisy_states         (N, P, n_state)    like /states, only when noise was added
    /params               (N, n_params)      float64   the parameters each trajectory ran with
    /flags                (N,)               uint8     bit 1: solver failed, bit 2: invariant drift,
                                                       bit 4: values stored as inf or NaN
    /solver/status        (N,)               int8      physode.Status code of each solve
    /solver/n_steps       (N,)               int64     accepted steps
    /solver/n_rejected    (N,)               int64     rejected steps
    /solver/nfe           (N,)               int64     function evaluations
    /solver/t_final       (N,)               float64   the time each solve reached (optional)
    /invariants/<name>    (N, P)             float64   each invariant along each trajectory
    /drift/<name>         (N,)               float64   each invariant's largest relative drift
                                                       along each trajectory (optional)
    /split/train, /split/val, /split/test    int64     sorted trajectory indices

Per-trajectory datasets are chunked by chunks of trajectories, compressed (gzip with shuffle) and
carry fletcher32 checksums, so damage is detected when a chunk is read. The optional datasets
came after the first files of version 1: a reader takes files without them, and checks them
like the others where they are. The filters run in
:mod:`physode.data._chunks`, which writes finished chunks; any HDF5 reader decodes them.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import tomllib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from physode._errors import (
    DataFormatError,
    InternalError,
    InvalidArgumentError,
    PhysodeError,
    first_line,
    first_shown,
)
from physode._files import has_hdf5_signature, write_atomically
from physode._repr import never_raising
from physode.data._chunks import FILTERS, ChunkWriter, crc32

__all__ = [
    "FLAG_DRIFT",
    "FLAG_NOT_FINITE",
    "FLAG_SOLVER_FAILED",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "SPLITS",
    "Chunk",
    "H5Array",
    "Header",
    "open_store",
    "parts_folder",
    "read_chunk",
    "sha256_text",
    "write_chunk",
    "write_store",
]

FORMAT_NAME = "physode.trajectories"
FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")
FLAG_SOLVER_FAILED = 1
FLAG_DRIFT = 2
# Added to version 1 on 2026-12-06: a value the solve reached (a state, derivative or noisy
# state) is stored as inf or NaN, as float32 storage does to values beyond its range. Files
# without it read; readers leave out a trajectory with any flag bit set, known to them or not.
FLAG_NOT_FINITE = 4
# The root attributes the layout defines (docs/data.md); any other is a user's own, whose text
# need not be UTF-8.
LAYOUT_ATTRIBUTES = frozenset(
    {
        "format",
        "format_version",
        "physode_version",
        "software",
        "system_name",
        "system_spec",
        "system_spec_sha256",
        "state_names",
        "parameter_names",
        "invariant_names",
        "solver",
        "seed",
        "command_line",
        "simulation",
        "status_codes",
        "flag_bits",
        "complete",
    }
)
# The file format of HDF5 1.10: it checksums HDF5's own metadata (object headers, attributes,
# chunk indexes), so that damage there is refused instead of read as data, and every HDF5 since
# 1.10 (2017) reads it. "latest" would tie the files to the HDF5 that wrote them (2.0 here).
LIBVER = ("v110", "v110")

# An HDF5 chunk of about this size or less: small enough that a random window read decompresses
# little, large enough that compression works on whole chunks of trajectories.
_TARGET_CHUNK_BYTES = 1 << 20
_SOLVER_FIELDS = ("status", "n_steps", "n_rejected", "nfe")
# Added to version 1 later (2026-12): files without them read, without the time each solve
# reached and the drift simulate measured.
_OPTIONAL_SOLVER_FIELDS = ("t_final",)
# What h5py, and decoding the bytes of a damaged file, raise while a damaged file is read.
_READ_ERRORS = (OSError, RuntimeError, KeyError, ValueError, TypeError)


def sha256_text(text: str) -> str:
    """Hex SHA-256 of ``text`` encoded as UTF-8.

    Examples
    --------
    >>> sha256_text("")[:12]
    'e3b0c44298fc'
    """
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass
class Chunk:
    """The simulated results for trajectories ``start`` to ``stop - 1`` (one resume unit).

    Arrays are float64 as computed; the store casts states to the file's dtype when it writes them.
    """

    start: int
    stop: int
    states: np.ndarray  # (b, P, n_state)
    derivatives: np.ndarray  # (b, P, n_state)
    params: np.ndarray  # (b, n_params)
    status: np.ndarray  # (b,)
    n_steps: np.ndarray  # (b,)
    n_rejected: np.ndarray  # (b,)
    nfe: np.ndarray  # (b,)
    flags: np.ndarray  # (b,)
    t_final: np.ndarray  # (b,) the time each solve reached
    invariants: dict[str, np.ndarray]  # name -> (b, P)
    drift: dict[str, np.ndarray]  # name -> (b,) largest relative drift along each trajectory
    noisy_states: np.ndarray | None = None  # (b, P, n_state)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_chunk(path: Path, chunk: Chunk, run_id: str) -> None:
    """Write one chunk to its own small HDF5 file, atomically (temporary name, then rename).

    A chunk file either exists complete or not at all, whatever kills the process, which is what
    makes ``resume`` safe; ``run_id`` ties it to the run configuration that produced it.

    Each array is stored whole (contiguous, unfiltered) with the CRC-32 of its bytes as the
    attribute ``crc32``, which :func:`read_chunk` checks; the HDF5 metadata (the attributes
    included) carries HDF5's own checksums (:data:`LIBVER`). A CRC over the whole array costs a
    few milliseconds per 100 MB, where HDF5's fletcher32 filter on ~1 MiB chunks more than
    doubled the time to write the file and read it back. The file is not synced to disk: it is
    a resume cache whose every byte is checked when read, so one that a crash of the machine
    left torn is recomputed, never assembled; the data set itself is synced before its rename.
    A write that fails (a full disk) removes the temporary file and raises
    ``physode.InvalidArgumentError`` naming the chunk file and the system's reason.
    """
    write_atomically(path, lambda tmp: _write_chunk_file(tmp, chunk, run_id), "chunk file")


def _write_chunk_file(tmp: Path, chunk: Chunk, run_id: str) -> None:
    """The HDF5 file of :func:`write_chunk`, at the temporary name ``tmp``."""
    with h5py.File(tmp, "w", libver=LIBVER) as f:
        _set_text(f.attrs, "run_id", run_id)
        f.attrs["start"] = chunk.start
        f.attrs["stop"] = chunk.stop
        # Checksummed, so that a resume recomputes a chunk damaged on disk instead of storing it.
        for name in ("states", "derivatives", "params", "flags", *_SOLVER_FIELDS, "t_final"):
            _checksummed(f, name, getattr(chunk, name))
        if chunk.noisy_states is not None:
            _checksummed(f, "noisy_states", chunk.noisy_states)
        for group_name in ("invariants", "drift"):
            group = f.create_group(group_name)
            for name, values in getattr(chunk, group_name).items():
                _checksummed(group, name, values)


def _set_text(attrs: h5py.AttributeManager, key: str, text: str) -> None:
    """Store ``text`` as a fixed-length UTF-8 attribute.

    Fixed-length text lives in the attribute's own message, which files written with
    :data:`LIBVER` protect with a checksum. h5py's default, variable-length text, lives in
    the global heap, which has none: a damaged byte there read back as altered text, and some
    damage sent HDF5 into an endless loop. Readers get ``bytes``, which :func:`_plain` decodes.
    """
    data = text.encode("utf-8")
    size = max(len(data), 1)  # HDF5 has no strings of length 0; padding reads back as b""
    attrs.create(key, np.array(data, dtype=f"S{size}"), dtype=h5py.string_dtype("utf-8", size))


def _checksummed(group: h5py.Group, name: str, values: np.ndarray) -> None:
    """Store ``values`` whole, with the CRC-32 of their bytes as attribute ``crc32``."""
    values = np.ascontiguousarray(values)
    dataset = group.create_dataset(name, data=values)
    dataset.attrs["crc32"] = np.uint32(crc32(values))


def _verified(dataset: h5py.Dataset) -> np.ndarray:
    """The values of a dataset that :func:`_checksummed` wrote; ``ValueError`` where their
    CRC-32 is not the one stored (``KeyError`` where none is)."""
    values = dataset[()]
    if crc32(np.ascontiguousarray(values)) != int(dataset.attrs["crc32"]):
        raise ValueError(f"{dataset.name}: CRC-32 mismatch")
    return values


def read_chunk(path: Path, run_id: str) -> Chunk | None:
    """Read a chunk file back; ``None`` when it is unreadable, damaged (a failed checksum, arrays
    that do not fit together) or belongs to another run."""
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("run_id") != np.bytes_(run_id.encode("utf-8")):
                return None
            noisy = _verified(f["noisy_states"]) if "noisy_states" in f else None
            chunk = Chunk(
                start=int(f.attrs["start"]),
                stop=int(f.attrs["stop"]),
                states=_verified(f["states"]),
                derivatives=_verified(f["derivatives"]),
                params=_verified(f["params"]),
                status=_verified(f["status"]),
                n_steps=_verified(f["n_steps"]),
                n_rejected=_verified(f["n_rejected"]),
                nfe=_verified(f["nfe"]),
                flags=_verified(f["flags"]),
                t_final=_verified(f["t_final"]),
                invariants={k: _verified(v) for k, v in f["invariants"].items()},
                drift={k: _verified(v) for k, v in f["drift"].items()},
                noisy_states=noisy,
            )
    except _READ_ERRORS:
        return None
    return chunk if _fits(chunk) else None


def _fits(chunk: Chunk) -> bool:
    """Whether the arrays of a chunk read back have the shapes that its rows imply."""
    rows, states = chunk.stop - chunk.start, chunk.states
    if rows < 1 or states.ndim != 3 or states.shape[0] != rows or chunk.params.ndim != 2:
        return False
    expected = [(chunk.derivatives, states.shape), (chunk.params, (rows, chunk.params.shape[1]))]
    expected += [(getattr(chunk, k), (rows,)) for k in ("flags", *_SOLVER_FIELDS, "t_final")]
    expected += [(values, states.shape[:2]) for values in chunk.invariants.values()]
    expected += [(values, (rows,)) for values in chunk.drift.values()]
    if set(chunk.drift) != set(chunk.invariants):
        return False
    if chunk.noisy_states is not None:
        expected.append((chunk.noisy_states, states.shape))
    return all(values.shape == shape for values, shape in expected)


def _trajectory_chunks(n: int, row_shape: tuple[int, ...], itemsize: int, chunk: int) -> tuple:
    row_bytes = int(np.prod(row_shape, dtype=np.int64)) * itemsize
    rows = max(1, min(n, chunk, _TARGET_CHUNK_BYTES // max(row_bytes, 1)))
    return (rows, *row_shape)


def write_store(
    path: Path,
    *,
    t: np.ndarray,
    n_trajectories: int,
    n_state: int,
    n_params: int,
    invariant_names: list[str],
    dtype: str,
    noisy: bool,
    split: Mapping[str, np.ndarray],
    attrs: Mapping[str, Any],
    chunks: Iterable[Chunk],
    chunk_size: int,
) -> None:
    """Write a complete store to ``path``, a temporary name the caller renames when this returns.

    ``chunks`` must cover trajectories ``0 .. n_trajectories - 1`` exactly once, in any order.
    The root attribute ``complete`` is set last, after every chunk is written. Whatever stops the
    writing (an error, ``KeyboardInterrupt``) removes ``path`` before it propagates, so no
    half-written file is left behind.
    """
    n, p = n_trajectories, len(t)

    def per_trajectory(group, name, row_shape, data_dtype):
        if 0 in row_shape:  # no values (a system without parameters): HDF5 cannot chunk it
            return ChunkWriter(group.create_dataset(name, shape=(n, *row_shape), dtype=data_dtype))
        chunks = _trajectory_chunks(n, row_shape, np.dtype(data_dtype).itemsize, chunk_size)
        dataset = group.create_dataset(
            name, shape=(n, *row_shape), dtype=data_dtype, chunks=chunks, **FILTERS
        )
        return ChunkWriter(dataset)

    try:
        with h5py.File(path, "w", libver=LIBVER) as f:
            for key, value in attrs.items():
                if isinstance(value, str):
                    _set_text(f.attrs, key, value)
                else:
                    f.attrs[key] = value
            f.create_dataset("t", data=np.asarray(t, dtype=np.float64), fletcher32=True)
            arrays = {
                "states": per_trajectory(f, "states", (p, n_state), dtype),
                "derivatives": per_trajectory(f, "derivatives", (p, n_state), dtype),
                "params": per_trajectory(f, "params", (n_params,), np.float64),
                "flags": per_trajectory(f, "flags", (), np.uint8),
            }
            if noisy:
                arrays["noisy_states"] = per_trajectory(f, "noisy_states", (p, n_state), dtype)
            solver = f.create_group("solver")
            arrays["status"] = per_trajectory(solver, "status", (), np.int8)
            for name in ("n_steps", "n_rejected", "nfe"):
                arrays[name] = per_trajectory(solver, name, (), np.int64)
            arrays["t_final"] = per_trajectory(solver, "t_final", (), np.float64)
            group = f.create_group("invariants")
            invariants = {
                name: per_trajectory(group, name, (p,), np.float64) for name in invariant_names
            }
            group = f.create_group("drift")
            drift = {name: per_trajectory(group, name, (), np.float64) for name in invariant_names}
            splits = f.create_group("split")
            for name in SPLITS:
                splits.create_dataset(
                    name, data=np.asarray(split[name], dtype=np.int64), fletcher32=True
                )

            covered = np.zeros(n, dtype=bool)
            for chunk in chunks:
                for name, writer in arrays.items():
                    writer.write(chunk.start, getattr(chunk, name))
                for name, writer in invariants.items():
                    writer.write(chunk.start, chunk.invariants[name])
                for name, writer in drift.items():
                    writer.write(chunk.start, chunk.drift[name])
                covered[chunk.start : chunk.stop] = True
            if not covered.all():
                missing = np.flatnonzero(~covered)
                raise InternalError(
                    f"the chunks left trajectories unwritten, first {missing[:5].tolist()}; "
                    "a bug in physode: please report it"
                )
            for writer in (*arrays.values(), *invariants.values(), *drift.values()):
                writer.close()
            f.attrs["complete"] = True
        _fsync(path)
    except BaseException:
        Path(path).unlink(missing_ok=True)
        raise


class H5Array:
    """A lazily read HDF5 dataset: indexing reads only what it selects and returns NumPy arrays.

    Read errors (a failed fletcher32 checksum, a damaged chunk) become ``physode.DataFormatError``
    naming the file and the dataset. It pickles and deep-copies as the file's path (made
    absolute when the array was made) and the dataset's name: the copy (in a spawned
    ``DataLoader`` worker) opens the file anew.

    Examples
    --------
    >>> data = physode.data.load("pendulum.h5")  # doctest: +SKIP
    >>> data.states[3, :10].shape                  # doctest: +SKIP
    (10, 2)
    """

    def __init__(self, dataset: h5py.Dataset, path: Path):
        self._dataset = dataset
        self._path = path
        self._absolute = Path(path).absolute()  # where a copy opens it, from any working folder
        # Kept here so that they stay known once the file is closed.
        self._name = dataset.name
        self._shape = dataset.shape
        # NumPy arrays in the machine's byte order: torch.from_numpy refuses any other (a file
        # written on a big-endian machine holds big-endian numbers).
        self._dtype = dataset.dtype.newbyteorder("=")

    @property
    def shape(self) -> tuple[int, ...]:
        return self._shape

    @property
    def dtype(self) -> np.dtype:
        return self._dtype

    @property
    def ndim(self) -> int:
        return len(self._shape)

    def __len__(self) -> int:
        return self._shape[0]

    def __getitem__(self, key) -> np.ndarray:
        if not self._dataset.id.valid:
            raise InvalidArgumentError(
                f"{self._path}: cannot read dataset {self._name}, the file is closed; index it "
                "inside the `with physode.data.load(...)` block, or load the file again"
            )
        key = key if isinstance(key, tuple) else (key,)
        if any(isinstance(part, bool | np.bool_) for part in key):
            # h5py reads True as row 1 and False as row 0, where NumPy adds an axis.
            raise IndexError(
                f"dataset {self._name} {self._shape}: cannot index with a single boolean "
                f"{key!r}; give a mask of {self._shape[0]} booleans, or an integer"
            )
        reorder = None
        if key and self.ndim and key[0] is not Ellipsis:
            first, reorder = self._rows(key[0])
            key = (first, *key[1:])
        try:
            values = self._read(key)
        except OSError as exc:
            raise DataFormatError(
                f"{self._path}: dataset {self._name} is damaged ({first_line(exc)})"
            ) from None
        except (TypeError, ValueError) as exc:  # h5py reads a subset of NumPy's indexing
            raise IndexError(
                f"dataset {self._name} {self._shape}: cannot index with {key!r} "
                f"({first_line(exc)}); read it whole with [()] for all of NumPy's indexing"
            ) from None
        if reorder is not None:
            values = values[reorder]
        return values if values.dtype.isnative else values.astype(self._dtype)

    def _read(self, key: tuple) -> np.ndarray:
        """Read ``key`` (its rows as :meth:`_rows` gives them) from the dataset.

        A list of rows is read one block of HDF5 chunks at a time, as the span of its rows in
        that block: h5py reads a list of scattered rows as a selection of many pieces, which
        took 2.4 times as long as this for 80 % of 4096 trajectories. At most one chunk more
        than asked for is held at a time, and each chunk is decompressed once either way.

        Only where each chunk holds whole rows, as physode writes them: the span of rows within
        a chunk of a file chunked along the times (``h5repack``) is every row between, up to
        all of them, where h5py's own read holds only the rows asked for.
        """
        rows, rest = (key[0], key[1:]) if key else (None, ())
        chunks = self._dataset.chunks
        if (
            not isinstance(rows, np.ndarray)
            or rows.size < 2
            or chunks is None
            or chunks[1:] != self._shape[1:]
            or not all(isinstance(part, int | np.integer | slice) for part in rest)
        ):
            return self._dataset[key]
        values = None
        for block in np.split(rows, np.flatnonzero(np.diff(rows // chunks[0])) + 1):
            part = self._dataset[(slice(block[0], block[-1] + 1), *rest)][block - block[0]]
            if values is None:
                values, done = np.empty((rows.size, *part.shape[1:]), part.dtype), 0
            values[done : done + len(block)] = part
            done += len(block)
        return values

    def _rows(self, index: Any) -> tuple[Any, np.ndarray | None]:
        """The first axis's ``index`` as h5py reads it, and the order to put the rows read in.

        h5py refuses what NumPy allows: negative steps, and index lists that are not strictly
        increasing (``[3, 1]``, ``[1, 1]``). Those are read as sorted unique rows, then
        reordered. Integers are bounds-checked against the length, negative ones counted from
        the end.
        """
        n = self._shape[0]
        if isinstance(index, np.ndarray) and index.ndim == 0 and index.dtype.kind in "iu":
            index = index[()]  # a 0-d integer array is an integer, as NumPy reads it
        if isinstance(index, int | np.integer):
            if not -n <= index < n:
                raise self._out_of_range(index)
            return int(index) % n, None
        if isinstance(index, slice):
            if index.step is None or index.step > 0:
                return index, None
            rows = np.arange(n)[index]
        elif isinstance(index, list | np.ndarray):
            rows = np.asarray(index)
            if rows.dtype == bool:
                if rows.shape != (n,):
                    raise IndexError(
                        f"a boolean index of shape {rows.shape} does not match the {n} rows of "
                        f"dataset {self._name}"
                    )
                rows = np.flatnonzero(rows)
            if rows.ndim != 1 or (rows.size and not np.issubdtype(rows.dtype, np.integer)):
                raise IndexError(f"rows {index!r} of dataset {self._name}: give a list of integers")
            bad = rows[(rows < -n) | (rows >= n)]
            if bad.size:
                raise self._out_of_range(int(bad[0]))
            # In range, so they fit: uint8 rows of a dataset of 256 rows or more raised
            # OverflowError when n was added (NumPy 2 keeps the array's type).
            rows = rows.astype(np.int64)
            rows = np.where(rows < 0, rows + n, rows)
        else:
            return index, None
        if rows.size == 0:
            return slice(0, 0), None
        if (np.diff(rows) > 0).all():
            return rows, None
        unique, order = np.unique(rows, return_inverse=True)
        return unique, order

    def _out_of_range(self, index: int) -> IndexError:
        return IndexError(
            f"index {index} is out of range for the {self._shape[0]} rows of dataset {self._name}"
        )

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        values = self[()]
        return values if dtype is None else values.astype(dtype, copy=False)

    @never_raising
    def __repr__(self) -> str:
        return f"H5Array({self._name!r}, shape={self.shape}, dtype={self.dtype})"

    def __reduce__(self) -> tuple:
        # Pickled (``load(path).states`` kept by a user's Dataset, sent to a spawned DataLoader
        # worker) or deep-copied as the file's path and the dataset's name, as a TrajectoryFile
        # is: the copy opens the file anew. h5py refuses to pickle a dataset.
        return _reopened, (self._absolute, self._name)


def _reopened(path: Path, name: str) -> H5Array:
    """Dataset ``name`` of the data set at ``path``, in a file opened for it (an unpickled
    :class:`H5Array`); the file stays open while the array is referenced."""
    file, _ = open_store(path)
    return H5Array(file[name], path)


@contextlib.contextmanager
def reading(path: Path, what: str = "damaged") -> Iterator[None]:
    """Turn what h5py raises inside the block on a damaged file into ``DataFormatError``.

    The message names the file, ``what`` is wrong, and the first line of the original error.
    Errors physode raises on purpose pass through unchanged.
    """
    try:
        yield
    except PhysodeError:
        raise
    except _READ_ERRORS as exc:
        raise DataFormatError(f"{path}: {what} ({first_line(exc)})") from None


@dataclass(frozen=True)
class Header:
    """A data set's root attributes, read and checked by :func:`open_store`.

    Attributes
    ----------
    attrs : dict
        Every root attribute as a plain Python value (text as ``str``, numbers as ``int`` or
        ``float``; arrays stay NumPy arrays). Text of a user's own attribute (one the layout
        does not define) that is not UTF-8 stays ``bytes``.
    state_names, parameter_names, invariant_names : list of str
        The decoded JSON name lists.
    solver : dict or None
        The decoded ``solver`` attribute (``None`` when the file has none).
    seed : int or None
        The ``seed`` attribute (``None`` when the file has none).
    """

    attrs: dict[str, Any]
    state_names: list[str]
    parameter_names: list[str]
    invariant_names: list[str]
    solver: dict[str, Any] | None
    seed: int | None


def parts_folder(out: Path) -> Path:
    """``OUT.parts/``: where a simulation into ``out`` keeps its finished chunks until the data
    set is complete, and an interrupted one leaves them for ``resume=True``.

    Examples
    --------
    >>> parts_folder(Path("data/three_body.h5")).as_posix()
    'data/three_body.h5.parts'
    """
    return out.with_name(out.name + ".parts")


def _missing(path: Path) -> str:
    """Why ``path`` cannot be read when it does not exist: with how to finish the interrupted
    simulation into it, where one left its chunks."""
    parts = parts_folder(path)
    if not parts.is_dir():
        return f"{path}: no such file"
    return (
        f"{path}: no such file, but {parts}/ holds what an interrupted simulation into it "
        "kept: rerun the same `physode simulate` command with --resume (resume=True in "
        "Python) to finish it"
    )


def open_store(path: str | os.PathLike, **file_options) -> tuple[h5py.File, Header]:
    """Open a physode data set read-only after checking that it is one this version can read.

    Every root attribute is checked for its type and shape (and the JSON ones decoded) and every
    dataset for its shape and type here, when the file is opened, so that later reads meet only
    damage inside data blocks (reported by :class:`H5Array`).

    Parameters
    ----------
    path : str or path-like
        The ``.h5`` file.
    **file_options
        Passed to ``h5py.File`` (for example the chunk cache size ``rdcc_nbytes``).

    Returns
    -------
    (h5py.File, Header)
        The open file, which the caller closes, and its checked root attributes.

    Raises
    ------
    physode.DataFormatError
        The file is missing, not HDF5, truncated or damaged, held open for writing by another
        process (HDF5's file lock), a foreign HDF5 file, written by a newer format version,
        incomplete, or has missing, mistyped or inconsistent attributes or datasets (types
        other than the layout's, invariants the names do not list, times that do not increase
        or fewer than two, no trajectory, a split that does not hold each trajectory once).
        The one-line message names the problem.
    """
    path = Path(path)
    if path.is_dir():
        raise DataFormatError(f"{path} is a folder, not a data set file")
    if not path.is_file():
        raise DataFormatError(_missing(path))
    try:
        signed = has_hdf5_signature(path)
    except OSError as exc:
        raise DataFormatError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if not signed:
        raise DataFormatError(f"{path} is not an HDF5 file (no HDF5 signature at its start)")
    with reading(path, "damaged or truncated HDF5 file"):
        try:
            f = h5py.File(path, "r", **file_options)
        except OSError as exc:
            refuse_if_locked(path, exc)
            raise
    try:
        header = _validate(f, path)
    except BaseException:
        f.close()
        raise
    return f, header


# HDF5's refusal to open a file whose lock it cannot take: ``unable to lock file, errno = 11``.
_LOCK_ERRNO = re.compile(r"unable to lock file, errno = (\d+)")
# The errnos of a file system that has no locks (NFS without its lock daemon, some Lustre).
_NO_LOCKS = (errno.ENOSYS, errno.ENOLCK, errno.EOPNOTSUPP)


def refuse_if_locked(path: Path, exc: OSError) -> None:
    """Raise ``DataFormatError`` saying why where HDF5 refused to open ``path`` for its file lock.

    The file is sound: another process holds it open for writing (an ``h5py.File(path, "a")``),
    or the file system has no locks. Both were reported as a damaged or truncated file.
    """
    found = _LOCK_ERRNO.search(str(exc))
    if found is None:
        return
    if int(found[1]) in _NO_LOCKS:
        raise DataFormatError(
            f"{path}: cannot be opened: its file system refuses HDF5's file lock "
            f"({first_line(exc)}); set the environment variable HDF5_USE_FILE_LOCKING=FALSE "
            "to read it without one"
        ) from None
    raise DataFormatError(
        f"{path}: cannot be opened: another process holds it open for writing "
        f"({first_line(exc)}); read it once that process has closed it"
    ) from None


def _validate(f: h5py.File, path: Path) -> Header:
    with reading(path, "damaged attributes"):
        raw = {key: f.attrs[key] for key in f.attrs}
    attrs = {key: _plain(path, key, value) for key, value in raw.items()}
    name = attrs.get("format")
    if not (isinstance(name, str) and name == FORMAT_NAME):
        found = "no 'format' attribute" if name is None else f"format {_describe(name)}"
        raise DataFormatError(
            f"{path} is an HDF5 file but not a physode data set ({found}, "
            f"expected {FORMAT_NAME!r}); make one with `physode simulate`, or, for arrays of "
            "your own (measurements), read them (with h5py) and train on "
            "physode.train.Trajectories(t, states) from Python (docs/data.md, \"Real data\")"
        )
    version = attrs.get("format_version")
    if not _is_int(version) or version < 1:
        found = "missing" if version is None else _describe(version)
        raise DataFormatError(
            f"{path}: damaged: 'format_version' is {found}, expected an integer >= 1"
        )
    if version > FORMAT_VERSION:
        raise DataFormatError(
            f"{path} has format version {version}, newer than this physode reads "
            f"({FORMAT_VERSION}); upgrade physode to read it"
        )
    complete = attrs.get("complete", False)
    if complete is False:
        raise DataFormatError(f"{path} is incomplete: its writer did not finish")
    if complete is not True:
        raise DataFormatError(
            f"{path}: damaged: its 'complete' mark is {_describe(complete)}, expected True"
        )
    problems: list[str] = []
    header = _header(attrs, problems)
    if not problems:
        with reading(path):
            _dataset_problems(f, header, problems)
    if not problems and sha256_text(attrs["system_spec"]) != attrs["system_spec_sha256"]:
        problems.append("the stored system specification does not match its sha256")
    if not problems:
        problems += _system_name_problems(attrs)
    if problems:
        raise DataFormatError(f"{path}: damaged: " + "; ".join(problems))
    return header


def _system_name_problems(attrs: dict[str, Any]) -> list[str]:
    """``system_name`` must be the name that the stored specification gives its system.

    Only the specification's TOML is parsed here (a millisecond); building the system from it
    waits for :attr:`TrajectoryFile.system`, which also reports a specification that is not valid.
    """
    stored = attrs.get("system_name")
    try:
        spec_name = tomllib.loads(attrs["system_spec"]).get("name")
    except tomllib.TOMLDecodeError:
        return []
    if stored is None or not isinstance(spec_name, str) or stored == spec_name:
        return []
    return [
        f"attribute 'system_name' is {stored!r}, expected {spec_name!r}, the name the stored "
        "specification gives its system"
    ]


def _plain(path: Path, key: str, value: Any) -> Any:
    """An attribute as a plain Python value. The text of the layout's attributes must be UTF-8;
    a user's own text that is not stays ``bytes``.

    Examples
    --------
    >>> _plain(Path("a.h5"), "note", np.bytes_(b"caf\\xc3\\xa9"))
    'café'
    >>> _plain(Path("a.h5"), "note", np.bytes_(b"caf\\xe9"))  # Latin-1: a user's own stays bytes
    b'caf\\xe9'
    """
    if isinstance(value, np.generic):
        value = value.item()
    try:
        if isinstance(value, bytes):
            return value.decode("utf-8")
        if isinstance(value, str):
            value.encode("utf-8")  # h5py keeps undecodable bytes as lone surrogates
    except UnicodeError:
        if key in LAYOUT_ATTRIBUTES:
            raise DataFormatError(f"{path}: damaged: attribute {key!r} is not UTF-8 text") from None
        return value if isinstance(value, bytes) else value.encode("utf-8", "surrogateescape")
    return value


def _describe(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape}"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _header(attrs: dict[str, Any], problems: list[str]) -> Header:
    """Check the type of every attribute the layout defines; decode the JSON ones."""

    def text(key: str, required: bool = True) -> str | None:
        value = attrs.get(key)
        if value is None:
            if required:
                problems.append(f"missing attribute {key!r}")
        elif not isinstance(value, str):
            problems.append(f"attribute {key!r} is {_describe(value)}, expected text")
        else:
            return value
        return None

    def decoded(key: str, kind: type, expected: str, required: bool = True) -> Any:
        value = text(key, required)
        if value is None:
            return None
        try:
            result = json.loads(value)
        except ValueError:
            result = None
        if not isinstance(result, kind):
            problems.append(f"attribute {key!r} is {_describe(value)}, expected {expected}")
            return None
        return result

    def names(key: str, required: bool = True) -> list[str]:
        value = decoded(key, list, "a JSON list of names", required)
        if value is None:
            return []
        if not all(isinstance(item, str) for item in value) or len(set(value)) != len(value):
            found = _describe(attrs[key])
            problems.append(f"attribute {key!r} is {found}, expected a JSON list of distinct names")
            return []
        return value

    text("system_spec")
    spec_hash = text("system_spec_sha256")
    if spec_hash is not None and len(spec_hash) != 64:
        found = _describe(spec_hash)
        problems.append(f"attribute 'system_spec_sha256' is {found}, expected 64 hex digits")
    for key in ("system_name", "physode_version", "command_line"):
        text(key, required=False)
    for key in ("simulation", "status_codes", "flag_bits"):
        decoded(key, dict, "a JSON object", required=False)
    seed = attrs.get("seed")
    if seed is not None and not (_is_int(seed) and seed >= 0):
        problems.append(f"attribute 'seed' is {_describe(seed)}, expected an integer >= 0")
        seed = None
    return Header(
        attrs=attrs,
        state_names=names("state_names"),
        parameter_names=names("parameter_names"),
        invariant_names=names("invariant_names", required=False),
        solver=decoded("solver", dict, "a JSON object", required=False),
        seed=seed,
    )


def _dataset_problems(f: h5py.File, header: Header, problems: list[str]) -> None:
    """Check that every dataset of the layout is there, with its shape and type, and that the
    small ones (``/t``, the split) hold what the layout promises. Large datasets are only looked
    at through their metadata, so that opening a file stays cheap."""
    datasets = ["t", "states", "derivatives", "params", "flags"]
    datasets += [f"solver/{name}" for name in _SOLVER_FIELDS]
    datasets += [f"split/{name}" for name in SPLITS]
    datasets += [f"invariants/{name}" for name in header.invariant_names]
    drift = f.get("drift")
    if drift is not None and not isinstance(drift, h5py.Group):
        problems.append("drift is not a group, expected one dataset per invariant")
        return
    if drift is not None:  # optional, but whole: a drift for every invariant
        datasets += [f"drift/{name}" for name in header.invariant_names]
    missing = [name for name in datasets if not isinstance(f.get(name), h5py.Dataset)]
    if missing:
        problems.append("missing datasets " + ", ".join(missing))
        return
    t, states = f["t"], f["states"]
    if t.ndim != 1:
        problems.append(f"t has shape {t.shape}, expected (P,)")
    elif t.shape[0] < 2:  # as simulate's points >= 2; no drift, window or plot without two
        problems.append(f"t has shape {t.shape}, expected at least 2 output times")
    if states.ndim != 3:
        problems.append(f"states has shape {states.shape}, expected (N, P, n_state)")
    elif states.shape[0] == 0:
        problems.append(f"states has shape {states.shape}, expected at least 1 trajectory")
    if problems:
        return
    for name, (shape, types) in _expected_datasets(f, header, states.shape[0], t.shape[0]).items():
        problem = _layout_problem(name, f[name], shape, types)
        if problem is not None:
            problems.append(problem)
    problems += _unlisted_invariants(f, header, "invariants")
    problems += _unlisted_invariants(f, header, "drift")
    if problems:
        return
    try:
        times = f["t"][()]
        splits = {name: f[f"split/{name}"][()] for name in SPLITS}
        flags, status = f["flags"][()], f["solver/status"][()]
    except OSError as exc:
        problems.append(f"unreadable t, split, flags or solver/status ({first_line(exc)})")
        return
    problems += _time_problems(times)
    problems += _split_problems(splits, states.shape[0])
    problems += _failure_flag_problems(flags, status, header.attrs)


# The stored types of version 1 (docs/data.md); /derivatives and /noisy_states take the type
# that /states has.
_STATE_TYPES = ("float64", "float32")
_SOLVER_TYPES = {"status": "int8", "t_final": "float64"}  # the counts are int64


def _expected_datasets(f: h5py.File, header: Header, n: int, p: int) -> dict[str, tuple]:
    """Each dataset's expected shape (``None``: any one-dimensional) and allowed types."""
    n_state, n_params = len(header.state_names), len(header.parameter_names)
    states_type = _native(f["states"].dtype)
    like_states = (states_type,) if states_type.name in _STATE_TYPES else _STATE_TYPES
    expected = {
        "t": ((p,), ("float64",)),
        "states": ((n, p, n_state), _STATE_TYPES),
        "derivatives": ((n, p, n_state), like_states),
        "params": ((n, n_params), ("float64",)),
        "flags": ((n,), ("uint8",)),
        **{f"solver/{k}": ((n,), (_SOLVER_TYPES.get(k, "int64"),)) for k in _SOLVER_FIELDS},
        **{f"invariants/{name}": ((n, p), ("float64",)) for name in header.invariant_names},
        **{f"split/{name}": (None, ("int64",)) for name in SPLITS},
    }
    if "noisy_states" in f:
        expected["noisy_states"] = ((n, p, n_state), like_states)
    for k in _OPTIONAL_SOLVER_FIELDS:
        if f"solver/{k}" in f:
            expected[f"solver/{k}"] = ((n,), (_SOLVER_TYPES[k],))
    if "drift" in f:
        expected.update({f"drift/{name}": ((n,), ("float64",)) for name in header.invariant_names})
    return expected


def _native(dtype: np.dtype) -> np.dtype:
    """``dtype`` in the machine's byte order (a file written on a big-endian machine holds
    ``>f8``, which is float64 all the same)."""
    return dtype.newbyteorder("=") if dtype.kind in "iuf" else dtype


def _layout_problem(name: str, dataset: Any, shape: tuple | None, types: tuple) -> str | None:
    """What is wrong with one dataset's kind, shape or type, or ``None``."""
    if not isinstance(dataset, h5py.Dataset):
        return f"{name} is not a dataset"
    if shape is not None and dataset.shape != shape:
        return f"{name} has shape {dataset.shape}, expected {shape}"
    if shape is None and dataset.ndim != 1:
        return f"{name} has shape {dataset.shape}, expected one dimension"
    if _native(dataset.dtype) not in [np.dtype(t) for t in types]:
        expected = " or ".join(str(np.dtype(t)) for t in types)
        if name in ("derivatives", "noisy_states") and len(types) == 1:
            expected += ", the type of /states"
        return f"{name} holds {dataset.dtype}, expected {expected}"
    return None


def _unlisted_invariants(f: h5py.File, header: Header, group_name: str) -> list[str]:
    """The datasets of ``/invariants`` or ``/drift`` that the ``invariant_names`` attribute
    does not list."""
    group = f.get(group_name)
    extra = sorted(set(group) - set(header.invariant_names)) if group is not None else []
    if not extra:
        return []
    listed = json.dumps(header.invariant_names)
    return [
        f"/{group_name} holds {', '.join(extra)}, which attribute 'invariant_names' ({listed}) "
        "does not list"
    ]


def _time_problems(times: np.ndarray) -> list[str]:
    """``/t`` must be finite and strictly increasing."""
    if not np.isfinite(times).all():
        return ["t holds values that are not finite, expected increasing times"]
    steps = np.flatnonzero(np.diff(times) <= 0)
    if steps.size:
        k = int(steps[0])
        return [
            f"t is not strictly increasing (t[{k}] = {float(times[k])!r}, t[{k + 1}] = "
            f"{float(times[k + 1])!r}), expected increasing output times"
        ]
    return []


def _split_problems(splits: dict[str, np.ndarray], n: int) -> list[str]:
    """The split must list each of the ``n`` trajectories exactly once, each part sorted."""
    problems = [
        f"split/{name} is not sorted ascending without repeats"
        for name, indices in splits.items()
        if np.any(np.diff(indices) <= 0)
    ]
    indices = np.concatenate(list(splits.values()))
    if indices.size and (indices.min() < 0 or indices.max() >= n):
        return [*problems, f"split indices outside 0..{n - 1}"]
    counts = np.bincount(indices, minlength=n)
    twice = np.flatnonzero(counts > 1)
    if twice.size:
        problems.append(
            f"the split lists trajectories {first_few(twice)} more than once, expected each "
            f"in exactly one of {', '.join(SPLITS)}"
        )
    left_out = np.flatnonzero(counts == 0)
    if left_out.size:
        problems.append(
            f"the split leaves out trajectories {first_few(left_out)}, expected every one of "
            f"0..{n - 1} in exactly one of {', '.join(SPLITS)}"
        )
    return problems


def _failure_flag_problems(flags: np.ndarray, status: np.ndarray, attrs: Mapping) -> list[str]:
    """Flag bit 1 (solver failed) must be set exactly where ``/solver/status`` is not SUCCESS.

    ``simulate`` sets the bit from the status, so a file where they disagree was altered; a
    reader could not tell whether such a trajectory was solved to the end (``physode check``
    listed it as a failure of unknown cause, ``TrajectoryDataset`` by its flag alone).
    """
    success = 0  # physode.Status.SUCCESS, unless the file's own table says otherwise
    with contextlib.suppress(TypeError, ValueError):
        table = json.loads(attrs.get("status_codes") or "{}")
        if isinstance(table, dict) and _is_int(table.get("SUCCESS")):
            success = table["SUCCESS"]
    flagged = (flags & FLAG_SOLVER_FAILED) != 0
    failed = status != success
    problems = []
    wrong = np.flatnonzero(flagged & ~failed)
    if wrong.size:
        problems.append(
            f"{_trajectories(wrong, 'is', 'are')} flagged as a solver failure (flag bit 1) but "
            f"/solver/status says SUCCESS (code {success}); the two must agree"
        )
    wrong = np.flatnonzero(failed & ~flagged)
    if wrong.size:
        codes = np.unique(status[wrong])
        listed = ", ".join(str(int(code)) for code in codes[:5])
        problems.append(
            f"{_trajectories(wrong, 'has', 'have')} the status of a failed solve in /solver/status "
            f"({'code' if codes.size == 1 else 'codes'} {listed}) but not the solver-failure "
            "flag (bit 1); the two must agree"
        )
    return problems


def _trajectories(rows: np.ndarray, verb: str, plural_verb: str) -> str:
    """``"trajectory 3 is"`` or ``"trajectories 3, 8 are"``: the subject of a sentence."""
    if rows.size == 1:
        return f"trajectory {rows[0]} {verb}"
    return f"trajectories {first_few(rows)} {plural_verb}"


def first_few(indices: Sequence[int] | np.ndarray, shown: int = 5) -> str:
    """The first ``shown`` of ``indices``, then how many more there are.

    >>> first_few([3, 8, 9], shown=2)
    '3, 8 and 1 more'
    """
    return first_shown(indices, shown, text=lambda i: str(int(i)))
