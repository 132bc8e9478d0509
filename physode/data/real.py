"""Real data: the Hudson's Bay Company lynx and hare pelts shipped with physode, and a reader for
measurements of your own in a CSV file (an empty cell is a missing observation)."""

from __future__ import annotations

import csv
import io
import math
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from physode._errors import DataFormatError
from physode._repr import number_text, short_repr

__all__ = ["TimeSeries", "load_csv", "load_lynx_hare"]


@dataclass(frozen=True)
class TimeSeries:
    """Observations of a few quantities at a set of times.

    Attributes
    ----------
    t : torch.Tensor, shape (P,)
        Observation times (float64), in ``time_unit`` from the first observation.
    ys : torch.Tensor, shape (P, n)
        Observed values (float64), columns in the order of ``state_names``; ``NaN`` where a
        value is missing (an empty cell), which training leaves out.
    state_names : tuple of str
    years : numpy.ndarray, shape (P,)
        The time column as the file gives it: calendar years for yearly data.
    time_unit : str
    provenance : str
        Where the data come from (the comment lines of the shipped file).
    """

    t: torch.Tensor
    ys: torch.Tensor
    state_names: tuple[str, ...]
    years: np.ndarray
    time_unit: str
    provenance: str

    def __repr__(self) -> str:
        # Shapes and the span of years, not the observations; the provenance is its own field.
        return short_repr(self, "state_names", "t", "ys", ("years", number_text), "time_unit")


def load_lynx_hare() -> TimeSeries:
    """The Hudson's Bay Company hare and lynx pelts, 1900-1920, in thousands per year.

    The classic real-data case for Lotka-Volterra models: hare (prey) first, lynx (predator)
    second, matching the state order ``(prey, predator)``. Read from the CSV file shipped inside
    the package (``physode/data/lynx_hare.csv``), so it works after a plain ``pip install``.

    Returns
    -------
    TimeSeries
        ``t`` = years since 1900 (0 to 20), ``ys`` of shape (21, 2).

    Raises
    ------
    physode.DataFormatError
        If the shipped file has been altered into something unreadable.

    Examples
    --------
    >>> data = load_lynx_hare()
    >>> data.state_names, tuple(data.ys.shape)
    (('hare', 'lynx'), (21, 2))
    >>> int(data.years[0]), data.ys[0].tolist()
    (1900, [30.0, 4.0])
    """
    text = resources.files("physode.data").joinpath("lynx_hare.csv").read_text(encoding="utf-8")
    header, years, values, provenance = _read_table(text, "lynx_hare.csv")
    if header != ["year", "hare", "lynx"]:
        raise DataFormatError(
            f"lynx_hare.csv: expected columns year,hare,lynx with three values a row, got {header}"
        )
    years = years.astype(int)
    t = torch.as_tensor(years - years[0], dtype=torch.float64)
    return TimeSeries(t, values, ("hare", "lynx"), years, "years", provenance)


def load_csv(path: str | os.PathLike, time_unit: str | None = None) -> TimeSeries:
    """Measurements of your own from a CSV file: a header row, the times in the first column and
    one column per measured quantity.

    The file is UTF-8, with or without a byte-order mark (as spreadsheets save "CSV UTF-8").
    An empty cell is a missing observation, read as ``NaN`` (as is a cell reading ``nan``):
    the trainer leaves it out of its losses (see ``docs/training.md``, "Missing observations
    and irregular sampling"). Lines starting with ``#`` are kept as ``provenance``.

    Parameters
    ----------
    path : str or path
    time_unit : str, optional
        What the times count (default: the time column's header).

    Returns
    -------
    TimeSeries
        ``t`` counts from the first time (``years`` keeps the column as given); ``ys`` holds
        the other columns, ``state_names`` their headers. For training:
        ``Trajectories(series.t, series.ys)``.

    Raises
    ------
    physode.DataFormatError
        If the file is missing or unreadable, a column of the header has no name or the name
        of another, a row has another number of cells than the header, a time is empty or not
        a finite number, the times do not increase, or a value is not a number (infinite
        values included).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "counts.csv"
    >>> _ = path.write_text("day,prey,predator\\n0,10,2\\n1,,2.5\\n3,14,3\\n")
    >>> series = load_csv(path)
    >>> series.state_names, series.t.tolist()
    (('prey', 'predator'), [0.0, 1.0, 3.0])
    >>> series.ys[:, 0].tolist()
    [10.0, nan, 14.0]
    """
    path = Path(path)
    try:
        # utf-8-sig: spreadsheets save "CSV UTF-8" with a byte-order mark, which would
        # otherwise start the first header (the time column's name, time_unit).
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataFormatError(f"{path}: cannot read it as a CSV file ({exc})") from None
    header, times, values, provenance = _read_table(text, str(path))
    if len(header) < 2:
        raise DataFormatError(
            f"{path}: expected a time column and at least one value column, got {header}"
        )
    if not bool(np.all(np.diff(times) > 0)):
        raise DataFormatError(f"{path}: the times in column {header[0]!r} must increase")
    t = torch.as_tensor(times - times[0], dtype=torch.float64)
    unit = header[0] if time_unit is None else time_unit
    return TimeSeries(t, values, tuple(header[1:]), times, unit, provenance)


def _read_table(text: str, source: str) -> tuple[list[str], np.ndarray, torch.Tensor, str]:
    """The header, the first column (finite numbers), the other columns (float64, ``NaN``
    for an empty cell) and the comment lines of a CSV text."""
    lines = text.splitlines()
    provenance = "\n".join(line.lstrip("# ").rstrip() for line in lines if line.startswith("#"))
    rows = list(csv.reader(io.StringIO("\n".join(ln for ln in lines if not ln.startswith("#")))))
    rows = [[cell.strip() for cell in row] for row in rows if any(cell.strip() for cell in row)]
    if len(rows) < 2:
        raise DataFormatError(f"{source}: expected a header row and at least one row of values")
    header, body = rows[0], rows[1:]
    _check_header(header, source)
    for number, row in enumerate(body, start=1):
        if len(row) != len(header):
            raise DataFormatError(
                f"{source}: data row {number} has {len(row)} cells, the header {len(header)} "
                f"({','.join(header)}); leave a cell empty for a missing value"
            )
    try:
        times = np.array([_number(row[0], source, header[0], missing=False) for row in body])
        values = torch.tensor(
            [[_number(cell, source, name) for cell, name in zip(row[1:], header[1:], strict=True)]
             for row in body],
            dtype=torch.float64,
        )  # fmt: skip
    except ValueError as exc:
        raise DataFormatError(str(exc)) from None
    return header, times, values, provenance


def _check_header(header: list[str], source: str) -> None:
    """Refuse a header with a column without a name, or a name given to two columns: the
    names are the series' ``state_names`` (and the time column's its ``time_unit``)."""
    columns: dict[str, list[int]] = {}
    for number, name in enumerate(header, start=1):
        if not name:
            raise DataFormatError(
                f"{source}: column {number} of the header has no name; give every column one"
            )
        columns.setdefault(name, []).append(number)
    for name, numbers in columns.items():
        if len(numbers) > 1:
            listed = ", ".join(map(str, numbers[:-1])) + f" and {numbers[-1]}"
            both = "both" if len(numbers) == 2 else "all"
            raise DataFormatError(
                f"{source}: columns {listed} of the header are {both} named {name!r}; "
                "give each column a name of its own"
            )


def _number(cell: str, source: str, column: str, missing: bool = True) -> float:
    """``cell`` as a finite float, or ``NaN`` for an empty cell where ``missing``."""
    if not cell and missing:
        return math.nan
    try:
        value = float(cell)
    except ValueError:
        value = None
    if value is None or math.isinf(value) or (math.isnan(value) and not missing):
        what = "a finite time" if not missing else "a number, or empty where it is missing"
        raise ValueError(f"{source}: unreadable value {cell!r} in column {column!r} (need {what})")
    return value
