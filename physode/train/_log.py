"""The training log: one row per epoch, as CSV or JSON."""

from __future__ import annotations

import csv
import io
import json
import operator
import os
from pathlib import Path
from typing import Any

from physode._files import json_ready, write_atomically


class RenderedRows:
    """The CSV text of a growing history, each row rendered once.

    The trainer rewrites its log after every epoch (atomically: a crash leaves the previous
    log whole), so rendering every row again each time would cost a run of ``E`` epochs
    ``E²/2`` rows. This keeps each row's line and renders only the rows added since the last
    call; a row that was replaced, changed or removed, or a new column, renders them all again.
    """

    def __init__(self) -> None:
        self.columns: list[str] = []
        self.rows: list[dict[str, Any]] = []  # each row rendered
        self.copies: list[dict[str, Any]] = []  # ... as it was then
        self.body = ""  # their lines

    def text(self, history: list[dict[str, Any]]) -> str:
        """The CSV text of ``history``: the header, then one line per row."""
        n = len(self.rows)
        same = len(history) >= n and all(map(operator.is_, self.rows, history))
        if not (same and self.copies == history[:n]):  # rows replaced, changed or gone
            self.columns, self.rows, self.copies, self.body = [], [], [], ""
        new = history[len(self.rows) :]
        columns = list(self.columns)
        for row in new:
            columns += [k for k in row if k not in columns]
        if columns != self.columns:  # every line gets the new column
            self.columns, self.rows, self.copies, self.body, new = columns, [], [], "", history
        self.rows += new
        self.copies += [dict(row) for row in new]
        self.body += "".join(self._line(row) for row in new)
        return self._line(None) + self.body

    def _line(self, row: dict[str, Any] | None) -> str:
        """One row's line (the header for ``None``), as ``csv.DictWriter`` writes it."""
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self.columns, lineterminator="\n")
        if row is None:
            writer.writeheader()
        else:
            writer.writerow(row)
        return buffer.getvalue()


def write_log(
    history: list[dict[str, Any]], path: str | os.PathLike, rendered: RenderedRows | None = None
) -> None:
    """Write the per-epoch rows to ``path`` as CSV or JSON (by its suffix), atomically.

    ``rendered`` keeps a CSV log's lines from one call to the next (the trainer passes one, so
    that each epoch renders its own row only); the file is the same without it.

    Raises ``physode.InvalidArgumentError`` if the file cannot be written.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> write_log([{"epoch": 1, "loss": 0.5}], folder / "log.csv")
    >>> (folder / "log.csv").read_text().splitlines()
    ['epoch,loss', '1,0.5']
    """
    path = Path(path)

    def write(tmp: Path) -> None:
        if path.suffix == ".json":
            tmp.write_text(json.dumps(json_ready(history), indent=1))
            return
        text = (rendered or RenderedRows()).text(history)
        with open(tmp, "w", newline="") as handle:
            handle.write(text)

    write_atomically(path, write, "log")
