"""Real data: the Hudson's Bay Company lynx and hare pelts shipped with physode, and a reader for
measurements of your own in a CSV file (an empty cell or ``NA`` is a missing observation)."""

from __future__ import annotations

import csv
import math
import os
import re
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
        value is missing (an empty cell, ``NA``), which training leaves out.
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
    An empty cell is a missing observation, read as ``NaN``, as are the cells that
    ``pandas.read_csv`` reads as missing by default (:data:`MISSING_CELLS`: ``NA``, ``N/A``,
    ``NULL``, ``None``, ``#N/A``, ``nan``, ..., in the case written there; ``na`` is refused):
    the trainer leaves it out of its losses (see ``docs/training.md``, "Missing observations
    and irregular sampling"). A number is digits with an optional sign, decimal point and
    exponent (``1000``, ``-2.5``, ``1e-3``): not all that Python's ``float`` reads (``1_000``,
    ``infinity``). Lines starting with ``#``, indented or not, are kept as ``provenance``.

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
        ``Trainer(model, series)``, its states matched by name to those of the model's system
        (see :class:`physode.train.Trajectories`), or ``Trajectories(series.t, series.ys)``,
        taken in the order of the columns.

    Raises
    ------
    physode.DataFormatError
        If the file is missing, unreadable or not UTF-8; or, naming the line of the file, if
        the first row is not a header (numbers only, or names separated by ``;`` or a tab), a
        column of the header has no name or the name of another, a quoted cell holds a line
        break, a row has another number of cells than the header or holds text only (units, a
        second header), a time is empty or not a finite number (a date included), the times
        do not increase, a value is not a number (infinite values included), or the file has
        fewer than two rows of values.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "counts.csv"
    >>> _ = path.write_text("day,prey,predator\\n0,10,2\\n1,,2.5\\n3,14,NA\\n")
    >>> series = load_csv(path)
    >>> series.state_names, series.t.tolist()
    (('prey', 'predator'), [0.0, 1.0, 3.0])
    >>> series.ys[:, 0].tolist(), series.ys[:, 1].tolist()
    ([10.0, nan, 14.0], [2.0, 2.5, nan])
    """
    path = Path(path)
    try:
        # utf-8-sig: spreadsheets save "CSV UTF-8" with a byte-order mark, which would
        # otherwise start the first header (the time column's name, time_unit).
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise DataFormatError(f"{path}: cannot read it as a CSV file ({exc})") from None
    except UnicodeDecodeError as exc:
        raise DataFormatError(
            f"{path}: cannot read it as a CSV file ({exc}); save it as UTF-8 text (in a "
            'spreadsheet: "CSV UTF-8")'
        ) from None
    header, times, values, provenance = _read_table(text, str(path))
    if len(header) < 2:
        raise DataFormatError(
            f"{path}: expected a time column and at least one value column, got {header}"
        )
    t = torch.as_tensor(times - times[0], dtype=torch.float64)
    unit = header[0] if time_unit is None else time_unit
    return TimeSeries(t, values, tuple(header[1:]), times, unit, provenance)


def _read_table(text: str, source: str) -> tuple[list[str], np.ndarray, torch.Tensor, str]:
    """The header, the first column (finite, increasing numbers), the other columns (float64,
    ``NaN`` for an empty cell) and the comment lines of a CSV text; every refusal names the
    line of the file it is about."""
    lines = text.splitlines()
    # A comment is a line whose first mark is '#', indented or not.
    comment = [line.lstrip().startswith("#") for line in lines]
    provenance = "\n".join(
        line.lstrip().lstrip("# ").rstrip()
        for line, hushed in zip(lines, comment, strict=True)
        if hushed
    )
    # Comment lines stay as empty lines, so that the reader's line numbers are the file's.
    reader = csv.reader(
        "" if hushed else line for line, hushed in zip(lines, comment, strict=True)
    )
    rows, numbers, last = [], [], 0
    for row in reader:
        if reader.line_num > last + 1:
            # The reader went on past the line's end for a quote left open: a cell quoted with a
            # line break in it, which would be read with the break dropped ("x<break>y" as xy).
            raise DataFormatError(
                f"{source}: line {last + 1}: a quoted cell runs on to line {reader.line_num} (a "
                "line break inside quotes, or a quote left open); write each row on one line, "
                "every quote closed"
            )
        last = reader.line_num
        cells = [cell.strip() for cell in row]
        if any(cells):
            rows.append(cells)
            numbers.append(reader.line_num)
    if not rows:
        raise DataFormatError(f"{source}: expected a header row and at least two rows of values")
    header, body = rows[0], list(zip(numbers[1:], rows[1:], strict=True))
    _check_header(header, source, numbers[0])
    for number, row in body:
        if len(row) != len(header):
            more = len(row) > len(header)
            comma = " (a decimal comma splits a number in two: write 1.5)" if more else ""
            raise DataFormatError(
                f"{source}: line {number} has {len(row)} cells, the header {len(header)} "
                f"({','.join(header)}); leave a cell empty for a missing value{comma}"
            )
    try:
        for number, row in body:
            _check_not_text(row, source, number)
        times = np.array([_time(row[0], source, header[0], number) for number, row in body])
        values = torch.tensor(
            [[_number(cell, source, name, number)
              for cell, name in zip(row[1:], header[1:], strict=True)]
             for number, row in body],
            dtype=torch.float64,
        )  # fmt: skip
    except ValueError as exc:
        raise DataFormatError(str(exc)) from None
    _check_increasing(times, body, source, header[0])
    if len(body) < 2:
        found = f"1 (line {body[0][0]})" if body else "none"
        raise DataFormatError(
            f"{source}: expected a header row and at least two rows of values (two times), "
            f"found {found}; a series is compared and trained on from its first time to a later one"
        )
    return header, times, values, provenance


def _check_increasing(
    times: np.ndarray, body: list[tuple[int, list[str]]], source: str, column: str
) -> None:
    """Refuse times that do not increase, naming the first line (of ``body``'s line numbers
    and rows) where they do not."""
    stuck = np.flatnonzero(np.diff(times) <= 0)
    if not len(stuck):
        return
    k = int(stuck[0])
    numbers, cells = [number for number, _ in body], [row[0] for _, row in body]
    if times[k + 1] == times[k]:
        what = (
            f"repeats the time {cells[k + 1]} of line {numbers[k]}; give each time one row "
            "(several series in one file: one file each, then Trajectories.from_irregular)"
        )
    else:
        what = f"has the time {cells[k + 1]}, before {cells[k]} on line {numbers[k]}"
        what += "; sort the rows by time"
    raise DataFormatError(
        f"{source}: the times in column {column!r} must increase: line {numbers[k + 1]} {what}"
    )


def _check_header(header: list[str], source: str, number: int) -> None:
    """Refuse a header (on line ``number``) that is not one: values separated by another mark
    than a comma, a row of numbers (the file has no header), a column without a name, or a
    name given to two columns. The names are the series' ``state_names`` (and the time
    column's its ``time_unit``)."""
    separator = next((mark for mark in ";\t" if len(header) == 1 and mark in header[0]), None)
    if separator is not None:
        raise DataFormatError(
            f"{source}: line {number}: the header {header[0]!r} is one column, its names "
            f"separated by {separator!r}; load_csv reads comma-separated values: save the file "
            "with ',' between values and '.' as the decimal mark"
        )
    if all(_is_number(name) for name in header if name):
        raise DataFormatError(
            f"{source}: line {number}: the first row ({','.join(header)}) holds numbers, not "
            "column names; start the file with a header row naming the time column and each "
            "quantity, e.g. t,x,y"
        )
    columns: dict[str, list[int]] = {}
    for column, name in enumerate(header, start=1):
        if not name:
            raise DataFormatError(
                f"{source}: line {number}: column {column} of the header has no name; "
                "give every column one"
            )
        columns.setdefault(name, []).append(column)
    for name, found in columns.items():
        if len(found) > 1:
            listed = ", ".join(map(str, found[:-1])) + f" and {found[-1]}"
            both = "both" if len(found) == 2 else "all"
            raise DataFormatError(
                f"{source}: line {number}: columns {listed} of the header are {both} named "
                f"{name!r}; give each column a name of its own"
            )


def _is_number(cell: str) -> bool:
    """Whether ``cell`` reads as a float (``nan`` and ``inf`` included)."""
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _check_not_text(row: list[str], source: str, number: int) -> None:
    """Refuse a row (on line ``number``) of text where numbers belong, no cell of it a number or
    a date: the units of the columns (``s,m,m``) or a second header, which would be refused as
    its first unreadable value."""
    if any(_NUMBER.fullmatch(cell) or _DATE.fullmatch(cell) for cell in row):
        return
    if all(cell in MISSING_CELLS for cell in row):
        return  # a row of missing values: its time is refused as missing
    raise ValueError(
        f"{source}: line {number} ({','.join(row)}) holds text where the times and values "
        "belong, as a row of units or a second header row would; load_csv reads one header row: "
        "delete the line, or start it with '#' to keep it as a comment (units may go in the "
        "column names, e.g. t_s,x_m)"
    )


def _time(cell: str, source: str, column: str, number: int) -> float:
    """``cell`` (on line ``number``) as a finite time; a date is refused with what to give."""
    try:
        return _number(cell, source, column, number, missing=False)
    except ValueError as exc:
        if not _DATE.fullmatch(cell):
            raise
        hint = "dates are not read: give times as numbers, e.g. days since the first date"
        raise ValueError(f"{exc}; {hint}") from None


# A calendar date or a time of day, as spreadsheets write them: 2021-03-04, 4/3/2021, 12:30.
_DATE = re.compile(r"\d+([-/.:]\d+)+([ T][\d:.]+)?")


# A number as a CSV file writes it: digits with an optional sign, decimal point and exponent.
# Python's float reads more (1_000, infinity, NAN, digits of other scripts), which a file does
# not mean as a number.
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")

# The cells pandas.read_csv reads as missing by default (its na_values; case as written), which R,
# pandas and spreadsheets write for a missing value.
MISSING_CELLS = frozenset(
    ["", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
     "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"]
)  # fmt: skip


def _number(cell: str, source: str, column: str, number: int, missing: bool = True) -> float:
    """``cell`` (on line ``number``) as a finite float, or ``NaN`` for a missing value (an
    empty cell, ``NA``, one of :data:`MISSING_CELLS`) where ``missing``."""
    if missing and cell in MISSING_CELLS:
        return math.nan
    if _NUMBER.fullmatch(cell) and math.isfinite(value := float(cell)):
        return value
    what = "a finite time" if not missing else "a number, or empty or NA where it is missing"
    try:
        read = float(cell)
    except ValueError:
        why = ""
    else:
        why = (
            "; infinite values are not read" if math.isinf(read)
            else "; a number is digits with an optional sign, decimal point and exponent, "
            "e.g. 1000, -2.5 or 1e-3"
        )
    raise ValueError(
        f"{source}: line {number}: unreadable value {cell!r} in column {column!r} (need "
        f"{what}){why}"
    )
