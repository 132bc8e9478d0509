"""Small real data sets shipped with physode: the Hudson's Bay Company lynx and hare pelts."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from importlib import resources

import numpy as np
import torch

from physode._errors import DataFormatError

__all__ = ["TimeSeries", "load_lynx_hare"]


@dataclass(frozen=True)
class TimeSeries:
    """Observations of a few quantities at a set of times.

    Attributes
    ----------
    t : torch.Tensor, shape (P,)
        Observation times (float64), in ``time_unit`` from the first observation.
    ys : torch.Tensor, shape (P, n)
        Observed values (float64), columns in the order of ``state_names``.
    state_names : tuple of str
    years : numpy.ndarray, shape (P,)
        Calendar years of the observations (for yearly data).
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
    lines = text.splitlines()
    provenance = "\n".join(line.lstrip("# ").rstrip() for line in lines if line.startswith("#"))
    rows = list(csv.reader(io.StringIO("\n".join(ln for ln in lines if not ln.startswith("#")))))
    header, body = rows[0], [row for row in rows[1:] if row]
    if header != ["year", "hare", "lynx"] or any(len(row) != 3 for row in body):
        raise DataFormatError(
            f"lynx_hare.csv: expected columns year,hare,lynx with three values a row, got {header}"
        )
    try:
        years = np.array([int(row[0]) for row in body])
        values = torch.tensor([[float(row[1]), float(row[2])] for row in body], dtype=torch.float64)
    except ValueError as exc:
        raise DataFormatError(f"lynx_hare.csv: unreadable value ({exc})") from None
    t = torch.as_tensor(years - years[0], dtype=torch.float64)
    return TimeSeries(t, values, ("hare", "lynx"), years, "years", provenance)
