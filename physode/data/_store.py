"""The HDF5 store of simulated trajectories: its layout, writing it, and checking a file before use.

Layout, format ``physode.trajectories`` version 1 (``docs/data.md`` is the reference)::

    /t                    (P,)               float64   output times
    /states               (N, P, n_state)    float64 or float32
    /derivatives          (N, P, n_state)    like /states: the true dy/dt at every stored state
    /noisy_states         (N, P, n_state)    like /states, only when noise was added
    /params               (N, n_params)      float64   the parameters each trajectory ran with
    /flags                (N,)               uint8     bit 1: solver failed, bit 2: invariant drift
    /solver/status        (N,)               int8      physode.Status code of each solve
    /solver/n_steps       (N,)               int64     accepted steps
    /solver/n_rejected    (N,)               int64     rejected steps
    /solver/nfe           (N,)               int64     function evaluations
    /invariants/<name>    (N, P)             float64   each invariant along each trajectory
    /split/train, /split/val, /split/test    int64     sorted trajectory indices

Per-trajectory datasets are chunked by chunks of trajectories, compressed (gzip with shuffle) and
carry fletcher32 checksums, so damage is detected when a chunk is read. The filters run in
:mod:`physode.data._chunks`, which writes finished chunks; any HDF5 reader decodes them.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from physode._errors import DataFormatError
from physode.data._chunks import FILTERS, ChunkWriter

__all__ = [
    "FLAG_DRIFT",
    "FLAG_SOLVER_FAILED",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "SPLITS",
    "Chunk",
    "H5Array",
    "open_store",
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

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
# An HDF5 chunk of about this size or less: small enough that a random window read decompresses
# little, large enough that compression works on whole chunks of trajectories.
_TARGET_CHUNK_BYTES = 1 << 20
_SOLVER_FIELDS = ("status", "n_steps", "n_rejected", "nfe")


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
    invariants: dict[str, np.ndarray]  # name -> (b, P)
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
    """
    tmp = path.with_name(path.name + ".part")
    with h5py.File(tmp, "w") as f:
        f.attrs["run_id"] = run_id
        f.attrs["start"] = chunk.start
        f.attrs["stop"] = chunk.stop
        for name in ("states", "derivatives", "params", "flags", *_SOLVER_FIELDS):
            f.create_dataset(name, data=getattr(chunk, name))
        if chunk.noisy_states is not None:
            f.create_dataset("noisy_states", data=chunk.noisy_states)
        group = f.create_group("invariants")
        for name, values in chunk.invariants.items():
            group.create_dataset(name, data=values)
    _fsync(tmp)
    os.replace(tmp, path)


def read_chunk(path: Path, run_id: str) -> Chunk | None:
    """Read a chunk file back; ``None`` when it is unreadable or belongs to another run."""
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("run_id") != run_id:
                return None
            noisy = f["noisy_states"][()] if "noisy_states" in f else None
            return Chunk(
                start=int(f.attrs["start"]),
                stop=int(f.attrs["stop"]),
                states=f["states"][()],
                derivatives=f["derivatives"][()],
                params=f["params"][()],
                status=f["status"][()],
                n_steps=f["n_steps"][()],
                n_rejected=f["n_rejected"][()],
                nfe=f["nfe"][()],
                flags=f["flags"][()],
                invariants={k: v[()] for k, v in f["invariants"].items()},
                noisy_states=noisy,
            )
    except (OSError, KeyError):
        return None


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
    The root attribute ``complete`` is set last, after every chunk is written.
    """
    n, p = n_trajectories, len(t)

    def per_trajectory(group, name, row_shape, data_dtype):
        chunks = _trajectory_chunks(n, row_shape, np.dtype(data_dtype).itemsize, chunk_size)
        dataset = group.create_dataset(
            name, shape=(n, *row_shape), dtype=data_dtype, chunks=chunks, **FILTERS
        )
        return ChunkWriter(dataset)

    with h5py.File(path, "w") as f:
        for key, value in attrs.items():
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
        group = f.create_group("invariants")
        invariants = {
            name: per_trajectory(group, name, (p,), np.float64) for name in invariant_names
        }
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
            covered[chunk.start : chunk.stop] = True
        if not covered.all():
            missing = np.flatnonzero(~covered)
            raise RuntimeError(f"chunks left trajectories unwritten, first {missing[:5].tolist()}")
        for writer in (*arrays.values(), *invariants.values()):
            writer.close()
        f.attrs["complete"] = True
    _fsync(path)


class H5Array:
    """A lazily read HDF5 dataset: indexing reads only what it selects and returns NumPy arrays.

    Read errors (a failed fletcher32 checksum, a damaged chunk) become ``physode.DataFormatError``
    naming the file and the dataset.

    Examples
    --------
    >>> data = physode.data.load("pendulum.h5")  # doctest: +SKIP
    >>> data.states[3, :10].shape                  # doctest: +SKIP
    (10, 2)
    """

    def __init__(self, dataset: h5py.Dataset, path: Path):
        self._dataset = dataset
        self._path = path

    @property
    def shape(self) -> tuple[int, ...]:
        return self._dataset.shape

    @property
    def dtype(self) -> np.dtype:
        return self._dataset.dtype

    @property
    def ndim(self) -> int:
        return self._dataset.ndim

    def __len__(self) -> int:
        return self._dataset.shape[0]

    def __getitem__(self, key) -> np.ndarray:
        try:
            return self._dataset[key]
        except OSError as exc:
            raise DataFormatError(
                f"{self._path}: dataset {self._dataset.name} is damaged ({_first_line(exc)})"
            ) from None

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        values = self[()]
        return values if dtype is None else values.astype(dtype, copy=False)

    def __repr__(self) -> str:
        return f"H5Array({self._dataset.name!r}, shape={self.shape}, dtype={self.dtype})"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def _has_signature(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(len(_HDF5_SIGNATURE)) == _HDF5_SIGNATURE


def open_store(path: str | os.PathLike, **file_options) -> h5py.File:
    """Open a physode data set read-only after checking that it is one this version can read.

    Parameters
    ----------
    path : str or path-like
        The ``.h5`` file.
    **file_options
        Passed to ``h5py.File`` (for example the chunk cache size ``rdcc_nbytes``).

    Returns
    -------
    h5py.File
        The open file; the caller closes it.

    Raises
    ------
    physode.DataFormatError
        The file is missing, not HDF5, truncated or damaged, a foreign HDF5 file, written by a newer
        format version, incomplete, or has missing or inconsistent datasets. The one-line message
        names the problem.
    """
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"{path}: no such file")
    if not _has_signature(path):
        raise DataFormatError(f"{path} is not an HDF5 file (no HDF5 signature at its start)")
    try:
        f = h5py.File(path, "r", **file_options)
    except OSError as exc:
        raise DataFormatError(
            f"{path} is a damaged or truncated HDF5 file ({_first_line(exc)})"
        ) from None
    try:
        _validate(f, path)
    except BaseException:
        f.close()
        raise
    return f


def _validate(f: h5py.File, path: Path) -> None:
    try:
        name = f.attrs.get("format")
    except OSError as exc:
        raise DataFormatError(f"{path}: damaged attributes ({_first_line(exc)})") from None
    if name != FORMAT_NAME:
        found = "no 'format' attribute" if name is None else f"format {name!r}"
        raise DataFormatError(
            f"{path} is an HDF5 file but not a physode data set ({found}, "
            f"expected {FORMAT_NAME!r}); make one with `physode simulate`"
        )
    version = f.attrs.get("format_version")
    if version is None or not np.issubdtype(np.asarray(version).dtype, np.integer):
        raise DataFormatError(f"{path}: damaged: missing or non-integer 'format_version'")
    if int(version) > FORMAT_VERSION:
        raise DataFormatError(
            f"{path} has format version {int(version)}, newer than this physode reads "
            f"({FORMAT_VERSION}); upgrade physode to read it"
        )
    if not f.attrs.get("complete", False):
        raise DataFormatError(f"{path} is incomplete: its writer did not finish")
    problems = _structure_problems(f)
    if problems:
        raise DataFormatError(f"{path}: damaged: " + "; ".join(problems))
    spec = f.attrs["system_spec"]
    if sha256_text(spec) != f.attrs["system_spec_sha256"]:
        raise DataFormatError(
            f"{path}: damaged: the stored system specification does not match its sha256"
        )


def _structure_problems(f: h5py.File) -> list[str]:
    problems = []
    required_attrs = ("system_spec", "system_spec_sha256", "state_names", "parameter_names")
    for key in required_attrs:
        if key not in f.attrs:
            problems.append(f"missing attribute {key!r}")
    datasets = ["t", "states", "derivatives", "params", "flags"]
    datasets += [f"solver/{name}" for name in _SOLVER_FIELDS]
    datasets += [f"split/{name}" for name in SPLITS]
    missing = [name for name in datasets if not isinstance(f.get(name), h5py.Dataset)]
    if missing:
        problems.append("missing datasets " + ", ".join(missing))
    if problems:
        return problems
    try:
        n_state = len(json.loads(f.attrs["state_names"]))
        n_params = len(json.loads(f.attrs["parameter_names"]))
        invariant_names = json.loads(f.attrs.get("invariant_names", "[]"))
    except (TypeError, ValueError):
        return ["unreadable name lists in the attributes"]
    n, p = f["states"].shape[0], f["t"].shape[0]
    expected = {
        "t": (p,),
        "states": (n, p, n_state),
        "derivatives": (n, p, n_state),
        "params": (n, n_params),
        "flags": (n,),
        **{f"solver/{name}": (n,) for name in _SOLVER_FIELDS},
        **{f"invariants/{name}": (n, p) for name in invariant_names},
    }
    if "noisy_states" in f:
        expected["noisy_states"] = (n, p, n_state)
    for name, shape in expected.items():
        dataset = f.get(name)
        if not isinstance(dataset, h5py.Dataset):
            problems.append(f"missing dataset {name}")
        elif dataset.shape != shape:
            problems.append(f"{name} has shape {dataset.shape}, expected {shape}")
    try:
        indices = np.concatenate([f[f"split/{name}"][()] for name in SPLITS])
    except OSError as exc:
        return [*problems, f"unreadable split ({_first_line(exc)})"]
    if indices.size and (indices.min() < 0 or indices.max() >= n):
        problems.append(f"split indices outside 0..{n - 1}")
    elif np.unique(indices).size != indices.size:
        problems.append("a trajectory appears in more than one split")
    return problems
