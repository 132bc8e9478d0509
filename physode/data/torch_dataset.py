"""``TrajectoryDataset``: windows of stored trajectories as a torch ``Dataset``, read lazily."""

from __future__ import annotations

import operator
import os
import weakref
from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from physode._checks import is_int
from physode._errors import DataFormatError, InvalidArgumentError
from physode._repr import never_raising
from physode.data._store import SPLITS, H5Array, open_store
from physode.data.stored import TrajectoryFile

__all__ = ["TrajectoryDataset"]

# The chunk cache of each array a dataset reads (its states, and its noisy states where it reads
# them): enough for a worker to keep a few blocks of trajectories decompressed.
_CACHE_BYTES = 32 << 20
# What the caches of one process's datasets hold together: up to 4 arrays (the states of 4
# files, or the states and noisy states of 2) keep 32 MiB each, and more share it, so that a
# dataset per file (a ConcatDataset of many files) does not hold 32 MiB per file once read...
_CACHE_BUDGET = 4 * _CACHE_BYTES
# ... but each keeps at least two chunks of about 1 MiB (_store._TARGET_CHUNK_BYTES), so that
# the windows read from one block of trajectories decompress it once.
_CACHE_LEAST = 2 << 20
_CACHE_SLOTS = 10007  # a prime (HDF5's advice), many times the chunks a cache holds
# The datasets of this process whose arrays are open (id -> weak reference), and that process:
# a process forked from it starts with none, its handles being the parent's.
_open_arrays: dict[int, weakref.ref] = {}
_open_arrays_pid: list[int | None] = [None]


def _identity(f, header) -> tuple:
    """What tells one data set from another written at the same path: the run's settings (its
    seed, system and the rest), the software that wrote it and the shape of its states.

    Two files with the same identity hold the same data, so a process of a ``DataLoader`` that
    opens the path anew may read either; another run's file would be read with the split,
    flags and parameters of the first.
    """
    attrs = header.attrs
    keys = ("simulation", "system_spec_sha256", "software", "physode_version")
    return (*(attrs.get(key) for key in keys), f["states"].shape, f["states"].dtype.str)


class TrajectoryDataset(Dataset):
    """Windows of ``window`` consecutive points of the trajectories of one split of a data set.

    Each item is a dict of tensors (in the stored states' dtype)::

        {"t": (K,), "ys": (K, n_state), "params": (n_params,), "trajectory": int, "start": int}

    The file is opened on first use in each process, so the dataset pickles to ``DataLoader``
    workers without an open handle, and each worker reads only the windows it is asked for.

    Parameters
    ----------
    path : str or path-like
        A data set written by ``physode simulate``.
    split : {"train", "val", "test", "all"}
        Which stored split to draw trajectories from.
    window : int, optional
        Points per window ``K`` (2 to P); ``None`` gives whole trajectories.
    stride : int
        Points between the starts of consecutive windows; the last window always ends on the
        last point.
    noisy : bool
        Return the noisy states (stored when simulated with noise) as ``"ys"`` instead of the
        clean ones, which then come as ``"ys_clean"``.
    exclude_flagged : bool
        Leave out trajectories flagged for a solver failure, invariant drift or values stored
        as inf or NaN (default): any trajectory with a flag bit set.

    Raises
    ------
    physode.DataFormatError
        If the file is not a readable physode data set; when an item is read, if the path
        now holds another data set than when the dataset was made (simulated again), whose
        trajectories the stored split, flags and parameters do not describe.
    physode.InvalidArgumentError
        For an unknown split, a window or stride out of range, ``noisy`` on a file without
        noise, or a selection with no trajectories left.

    Examples
    --------
    >>> data = TrajectoryDataset("pendulum.h5", split="train", window=10)   # doctest: +SKIP
    >>> loader = torch.utils.data.DataLoader(data, batch_size=32, shuffle=True,
    ...                                      num_workers=2)                 # doctest: +SKIP
    >>> batch = next(iter(loader)); batch["ys"].shape                       # doctest: +SKIP
    torch.Size([32, 10, 2])
    """

    def __init__(
        self,
        path: str | os.PathLike,
        split: str = "train",
        window: int | None = None,
        *,
        stride: int = 1,
        noisy: bool = False,
        exclude_flagged: bool = True,
    ):
        self.path = Path(path)
        # Where every later open goes (each worker's, the trainer's): the file as found now,
        # whatever the working folder is then (a notebook's %cd, a worker started elsewhere).
        self._absolute = self.path.absolute()
        self.split = split
        choices = [*SPLITS, "all"]
        if split not in choices:
            raise InvalidArgumentError(f"split={split!r}; choose one of {choices}")
        f, header = open_store(self.path)
        self._identity = _identity(f, header)
        with f:
            n, points, _ = f["states"].shape
            index = np.arange(n) if split == "all" else H5Array(f[f"split/{split}"], self.path)[()]
            flags = H5Array(f["flags"], self.path)[()]
            params = H5Array(f["params"], self.path)[()]
            has_noise = "noisy_states" in f
        window = points if window is None else window
        problems = []
        if not is_int(window) or not 2 <= window <= points:
            problems.append(f"window={window!r} must be an integer from 2 to {points} (the points)")
        if not is_int(stride, least=1):
            problems.append(f"stride={stride!r} must be an integer >= 1")
        if noisy and not has_noise:
            problems.append(
                "noisy=True but the file holds no noisy states; simulate with --noise STD"
            )
        if problems:
            raise InvalidArgumentError("bad TrajectoryDataset arguments: " + "; ".join(problems))
        if exclude_flagged:
            # Any bit, so that one added to the format later is left out too.
            index = index[flags[index] == 0]
        if index.size == 0:
            raise InvalidArgumentError(
                f"the {split!r} split of {self.path} has no trajectories"
                + (" left after excluding flagged ones (exclude_flagged=False keeps them)"
                   if exclude_flagged else "")
            )  # fmt: skip
        self.window = int(window)
        self.stride = int(stride)
        self.noisy = noisy
        self.trajectories = index
        self._params = params
        last = points - self.window
        starts = list(range(0, last + 1, self.stride))
        if starts[-1] != last:
            starts.append(last)
        self.starts = np.asarray(starts)
        self._file = None
        self._pid: int | None = None
        self._states = self._noisy_states = None
        self._cache_bytes: int | None = None  # each open array's chunk cache

    def __len__(self) -> int:
        return len(self.trajectories) * len(self.starts)

    def _open(self):
        if self._file is None or self._pid != os.getpid():
            # A handle inherited through fork is not safe to use: open a fresh one per process.
            f, header = open_store(self._absolute)
            try:
                self._refuse_replaced(f, header)
            except DataFormatError:
                f.close()
                raise
            self._file = f
            self._pid = os.getpid()
            self._t = H5Array(f["t"], self.path)[()]
            self._states = self._noisy_states = None
        if self._states is None:
            _share_caches(self)
        return self._file

    def _array_names(self) -> tuple[str, ...]:
        return ("states", "noisy_states") if self.noisy else ("states",)

    def _open_arrays(self, cache_bytes: int) -> None:
        """Open the arrays the items read, with a chunk cache of ``cache_bytes`` each.

        They stay open between items: HDF5 frees a dataset's chunk cache when its last handle
        closes, so a handle opened per item decompressed a whole chunk for every window. An
        array open already is closed first, as HDF5 keeps the cache it was first opened with.
        """
        self._states = self._noisy_states = None
        access = h5py.h5p.create(h5py.h5p.DATASET_ACCESS)
        access.set_chunk_cache(_CACHE_SLOTS, cache_bytes, 0.75)
        arrays = [
            H5Array(h5py.Dataset(h5py.h5d.open(self._file.id, name.encode(), dapl=access)),
                    self.path)
            for name in self._array_names()
        ]  # fmt: skip
        self._states = arrays[0]
        self._noisy_states = arrays[1] if self.noisy else None
        self._cache_bytes = cache_bytes

    def _refuse_replaced(self, f, header) -> None:
        """Raise ``DataFormatError`` where the open file ``f`` holds another data set than the
        one whose split, flags and parameters this dataset read (simulated again at its path)."""
        if _identity(f, header) != self._identity:
            raise DataFormatError(
                f"{self.path} was replaced by another data set since this TrajectoryDataset "
                "read its split, flags and parameters (was it simulated again?); make a new "
                "TrajectoryDataset to read it"
            )

    def _load(self) -> TrajectoryFile:
        """The data set at the path, opened by :func:`physode.data.load` and checked to be the
        one this dataset was made from (what the trainer reads a dataset's trajectories from).

        Raises
        ------
        physode.DataFormatError
            As :func:`physode.data.load` does, and where the path now holds another data set.
        """
        stored = TrajectoryFile(self._absolute)
        try:
            self._refuse_replaced(stored._file, stored._header)
        except DataFormatError:
            stored.close()
            raise
        return stored

    def __getitem__(self, item: int) -> dict[str, torch.Tensor | int]:
        item = _window_index(item)
        if not -len(self) <= item < len(self):
            raise IndexError(f"index {item} out of range for {len(self)} windows")
        item %= len(self)
        self._open()
        trajectory = int(self.trajectories[item // len(self.starts)])
        start = int(self.starts[item % len(self.starts)])
        window = slice(start, start + self.window)
        ys = torch.from_numpy(self._states[trajectory, window])
        sample = {
            "t": torch.from_numpy(self._t[window]).to(ys.dtype),
            "ys": ys,
            "params": torch.from_numpy(self._params[trajectory]).to(ys.dtype),
            "trajectory": trajectory,
            "start": start,
        }
        if self.noisy:
            sample["ys_clean"] = ys
            sample["ys"] = torch.from_numpy(self._noisy_states[trajectory, window])
        return sample

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        for name in ("_file", "_pid", "_states", "_noisy_states"):  # open handles stay here
            state[name] = None
        return state

    def __del__(self) -> None:
        if getattr(self, "_file", None) is not None and self._pid == os.getpid():
            _open_arrays.pop(id(self), None)
            self._file.close()

    @never_raising
    def __repr__(self) -> str:
        return (
            f"TrajectoryDataset({str(self.path)!r}, split={self.split!r}, window={self.window}, "
            f"stride={self.stride}, windows={len(self)})"
        )


def _share_caches(dataset: TrajectoryDataset) -> None:
    """Open ``dataset``'s arrays with their share of this process's chunk cache budget, and
    reopen those of the other datasets open here where the share changed with it.

    Each array gets ``_CACHE_BYTES`` while the process has at most ``_CACHE_BUDGET`` of them
    together, ``_CACHE_BUDGET`` shared out beyond that, and never less than ``_CACHE_LEAST``.
    HDF5 opens a file once per process however often it is opened, and an array of it once
    with one cache, that of its first opening: the datasets of one file (its train, val and
    test) share their caches, and count once. This runs when a dataset's file is opened in a
    process, not for each item.
    """
    if _open_arrays_pid[0] != os.getpid():
        _open_arrays.clear()
        _open_arrays_pid[0] = os.getpid()
    _open_arrays[id(dataset)] = weakref.ref(dataset)
    datasets = []
    for key, ref in list(_open_arrays.items()):
        held = ref()
        if held is None or (held is not dataset and held._states is None):
            del _open_arrays[key]
        else:
            datasets.append(held)
    arrays = {(held._file.id.fileno, name) for held in datasets for name in held._array_names()}
    share = max(min(_CACHE_BYTES, _CACHE_BUDGET // len(arrays)), _CACHE_LEAST)
    if all(held._cache_bytes == share for held in datasets if held is not dataset):
        dataset._open_arrays(share)
        return
    # An array keeps its cache while any handle of it is open: close them all, then reopen.
    for held in datasets:
        held._states = held._noisy_states = None
    for held in datasets:
        held._open_arrays(share)


def _window_index(item) -> int:
    """``item`` as a Python integer: one of Python's, NumPy's or a 0-d torch integer (not a bool,
    which ``operator.index`` reads as 0 or 1, nor a one-element tensor of any other shape).

    Examples
    --------
    >>> _window_index(torch.tensor(3)), _window_index(np.int64(-1))
    (3, -1)
    """
    refused = isinstance(item, bool) or (
        isinstance(item, torch.Tensor) and (item.ndim > 0 or item.dtype == torch.bool)
    )
    try:
        if not refused:
            return operator.index(item)
    except TypeError:
        pass
    raise TypeError(
        f"index {item!r} must be an integer (Python's, NumPy's or a 0-d torch integer, not a "
        "bool), one window; a DataLoader batches windows"
    )
