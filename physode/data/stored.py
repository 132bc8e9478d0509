"""Reading a stored data set: ``physode.data.load`` and the lazily read ``TrajectoryFile``."""

from __future__ import annotations

import os
import re
import tempfile
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from physode._errors import DataFormatError, InvalidArgumentError, SystemDefinitionError
from physode._repr import never_raising
from physode.data._store import SPLITS, H5Array, open_store, reading

__all__ = ["TrajectoryFile", "load", "system_from_spec"]


def system_from_spec(spec_text: str, name: str = "system"):
    """Rebuild a system from the text of its specification file.

    Parameters
    ----------
    spec_text : str
        The specification (as stored in a data set's ``system_spec`` attribute).
    name : str
        The system's name, used for the temporary file the catalogue loader reads.

    Returns
    -------
    physode.System

    Examples
    --------
    >>> import physode.systems
    >>> text = physode.systems.path("pendulum").read_text()
    >>> system_from_spec(text, "pendulum").state_names
    ['theta', 'theta_dot']
    """
    import physode.systems

    with tempfile.TemporaryDirectory(prefix="physode-spec-") as folder:
        path = Path(folder) / (re.sub(r"[^\w.-]", "_", name) + ".toml")
        path.write_text(spec_text, encoding="utf-8")
        try:
            return physode.systems.load(path)
        except SystemDefinitionError as exc:
            # The temporary file means nothing to the reader: name the specification text.
            message = str(exc).replace(str(path), f"the specification text of {name!r}")
            raise SystemDefinitionError(message) from None


class TrajectoryFile:
    """A physode data set opened for reading; large arrays are read only where indexed.

    Made by :func:`load`. Small arrays (times, parameters, flags, solver counts, the split) are read
    at once; ``states``, ``derivatives``, ``noisy_states`` and the invariants are
    :class:`~physode.data._store.H5Array` views that read what they are indexed with.

    Attributes
    ----------
    path : pathlib.Path
    t : numpy.ndarray, shape (P,)
    states, derivatives : H5Array, shape (N, P, n_state)
    noisy_states : H5Array or None
        Present when the data set was simulated with observation noise.
    params : numpy.ndarray, shape (N, n_params)
    flags : numpy.ndarray, shape (N,)
        Bit 1: the solve failed; bit 2: an invariant drifted beyond the threshold; bit 4: a
        value the solve reached is stored as inf or NaN (beyond the range of float32).
    status, n_steps, n_rejected, nfe : numpy.ndarray, shape (N,)
        Solver status code (a :class:`physode.Status`) and counts of each trajectory.
    t_final : numpy.ndarray, shape (N,), or None
        The time each solve reached: the last output time where it succeeded, where it stopped
        otherwise. ``None`` for files written before physode stored it (2026-12).
    invariants : dict of str to H5Array, each of shape (N, P)
    drift : dict of str to numpy.ndarray, each of shape (N,), or None
        Per invariant, its largest relative drift along each trajectory as ``simulate``
        measured it to set flag bit 2; for a failed solve, over the output times it reached
        (physode until 2026-12-06 stored NaN there). NaN where the invariant is not a number.
        ``None`` for files written before physode stored it (2026-12).
    split : dict of str to numpy.ndarray
        ``"train"``, ``"val"``, ``"test"``: sorted trajectory indices.
    state_names, parameter_names, invariant_names : list of str
    attrs : dict
        Every root attribute (format, versions, system specification and hash, solver, seed,
        command line, simulation settings), and a user's own: its text as ``str``, or as
        ``bytes`` where it is not UTF-8.

    Notes
    -----
    It pickles, and deep-copies, as its path (made absolute when the file was opened): the copy
    (in a spawned ``DataLoader`` worker or a process pool, say) opens the file again as
    :func:`load` does, with its own handle, whatever its working folder, and reads what the
    path holds then.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        # Where a copy opens the file: a relative path names another file once the working
        # folder has changed (a notebook's %cd before a spawned DataLoader worker starts).
        self._absolute = self.path.absolute()
        self._file, header = open_store(self.path)
        f = self._file
        self._header = header
        self.attrs: dict[str, Any] = header.attrs
        self.state_names: list[str] = header.state_names
        self.parameter_names: list[str] = header.parameter_names
        self.invariant_names: list[str] = header.invariant_names
        try:
            with reading(self.path):
                self.t = H5Array(f["t"], self.path)[()]
                self.params = H5Array(f["params"], self.path)[()]
                self.flags = H5Array(f["flags"], self.path)[()]
                self.status = H5Array(f["solver/status"], self.path)[()]
                self.n_steps = H5Array(f["solver/n_steps"], self.path)[()]
                self.n_rejected = H5Array(f["solver/n_rejected"], self.path)[()]
                self.nfe = H5Array(f["solver/nfe"], self.path)[()]
                self.t_final = (
                    H5Array(f["solver/t_final"], self.path)[()] if "solver/t_final" in f else None
                )
                self.split = {name: H5Array(f[f"split/{name}"], self.path)[()] for name in SPLITS}
                self.states = H5Array(f["states"], self.path)
                self.derivatives = H5Array(f["derivatives"], self.path)
                self.noisy_states = (
                    H5Array(f["noisy_states"], self.path) if "noisy_states" in f else None
                )
                self.invariants = {
                    name: H5Array(f[f"invariants/{name}"], self.path)
                    for name in self.invariant_names
                }
                self.drift = (
                    {
                        name: H5Array(f[f"drift/{name}"], self.path)[()]
                        for name in self.invariant_names
                    }
                    if "drift" in f
                    else None
                )
        except BaseException:
            self.close()
            raise

    @cached_property
    def system(self):
        """The system rebuilt from the stored specification text (built on first use).

        Raises
        ------
        physode.DataFormatError
            If the text does not define a valid system, or the system's state or parameter
            names differ from the ones stored with the data.
        """
        try:
            system = system_from_spec(
                self.attrs["system_spec"], self.attrs.get("system_name", "system")
            )
        except SystemDefinitionError as exc:
            raise DataFormatError(f"{self.path}: damaged: {exc}") from None
        differences = [
            f"{key} {stored} but the specification's system has {built}"
            for key, stored, built in (
                ("state_names", self.state_names, list(system.state_names)),
                ("parameter_names", self.parameter_names, list(system.parameters)),
            )
            if stored != built
        ]
        if differences:
            raise DataFormatError(f"{self.path}: damaged: " + "; ".join(differences))
        return system

    @property
    def seed(self) -> int:
        """The seed the data set was simulated with.

        Raises
        ------
        physode.DataFormatError
            If the file records no seed.
        """
        if self._header.seed is None:
            raise DataFormatError(f"{self.path} records no 'seed' attribute")
        return self._header.seed

    @property
    def solver(self) -> dict:
        """The solver configuration: method, rtol, atol, max_steps, step_control, and max_step
        where the run capped the steps (``simulate(..., max_step=...)``).

        Raises
        ------
        physode.DataFormatError
            If the file records no solver configuration.
        """
        if self._header.solver is None:
            raise DataFormatError(f"{self.path} records no 'solver' attribute")
        return dict(self._header.solver)

    def __len__(self) -> int:
        return self.states.shape[0]

    def split_indices(self, split: str) -> np.ndarray:
        """Sorted trajectory indices of ``split`` (``"train"``, ``"val"``, ``"test"`` or ``"all"``).

        Raises
        ------
        physode.InvalidArgumentError
            For any other name.
        """
        if split == "all":
            return np.arange(len(self))
        if not isinstance(split, str) or split not in self.split:
            raise InvalidArgumentError(
                f"split={split!r} is not stored; choose one of {[*SPLITS, 'all']}"
            )
        return self.split[split]

    def close(self) -> None:
        """Close the file; lazily read arrays cannot be indexed afterwards."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> TrajectoryFile:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __reduce__(self) -> tuple:
        # Pickled (to a spawned DataLoader worker, a process pool) or deep-copied as its path:
        # the copy opens the file anew, with a handle of its own. h5py refuses to pickle one.
        return type(self), (self._absolute,)

    @never_raising
    def __repr__(self) -> str:
        n, p, m = self.states.shape
        return (
            f"TrajectoryFile({str(self.path)!r}, system={self.attrs.get('system_name')!r}, "
            f"trajectories={n}, points={p}, n_state={m})"
        )


def load(path: str | os.PathLike) -> TrajectoryFile:
    """Open a data set written by ``physode simulate`` / :func:`physode.data.simulate`.

    Parameters
    ----------
    path : str or path-like
        The ``.h5`` file.

    Returns
    -------
    TrajectoryFile
        ``.t``, ``.states`` (read lazily), ``.params``, ``.system`` (rebuilt from the stored
        specification text) and every other stored field.

    Raises
    ------
    physode.DataFormatError
        If the file is missing, not HDF5, damaged or truncated, a foreign HDF5 file, written
        by a newer format version, or has an attribute or dataset of the wrong type or shape,
        or contents that contradict each other (see "What is refused" in docs/data.md); the
        message names the problem. Damage inside a lazily read array is reported when that
        part is read.

    Examples
    --------
    >>> data = physode.data.load("pendulum.h5")       # doctest: +SKIP
    >>> data.t.shape, data.states.shape, data.params.shape   # doctest: +SKIP
    ((51,), (8, 51, 2), (8, 3))
    >>> data.system.name                               # doctest: +SKIP
    'pendulum'
    """
    return TrajectoryFile(path)
