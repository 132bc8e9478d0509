"""The training log: one row per epoch, as CSV or JSON."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

from physode._files import json_ready, write_atomically


def write_log(history: list[dict[str, Any]], path: str | os.PathLike) -> None:
    """Write the per-epoch rows to ``path`` as CSV or JSON (by its suffix), atomically.

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
        columns: list[str] = []
        for row in history:
            columns += [k for k in row if k not in columns]
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n")
            writer.writeheader()
            writer.writerows(history)

    write_atomically(path, write, "log")
