"""The training log: one row per epoch, as CSV or JSON."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

from physode._files import json_ready, write_atomically


class RenderedRows:
    """The CSV text of a growing history, each row rendered once.

    The trainer rewrites its log after every epoch (atomically: a crash leaves the previous
    log whole), so rendering every row again each time would cost a run of ``E`` epochs
    ``E²/2`` rows. This keeps each row's line and renders only the rows added since the last
    call; a row that was replaced or changed, or a new column, renders the lines again.
    """

    def __init__(self) -> None:
        self.columns: list[str] = []
        # (the row, a shallow copy of it as rendered, its line), one per row rendered
        self.rendered: list[tuple[dict[str, Any], dict[str, Any], str]] = []

    def text(self, history: list[dict[str, Any]]) -> str:
        """The CSV text of ``history``: the header, then one line per row."""
        kept = 0
        for (row, copy, _), now in zip(self.rendered, history):
            if row is not now or now != copy:
                break
            kept += 1
        if kept < len(self.rendered):  # rows replaced or gone: their columns may be too
            self.columns, self.rendered, kept = [], [], 0
        columns = list(self.columns)
        for row in history[kept:]:
            columns += [k for k in row if k not in columns]
        if columns != self.columns:  # every line gets the new column
            self.columns, self.rendered, kept = columns, [], 0
        self.rendered += [(row, dict(row), self._line(row)) for row in history[kept:]]
        return self._line(None) + "".join(line for _, _, line in self.rendered)

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
