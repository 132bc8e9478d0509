"""Shared plumbing of the experiment scripts: arguments, tables, results files, plots."""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch


def parser(description: str, default_out: str) -> argparse.ArgumentParser:
    """The arguments every script takes: ``--out``, ``--quick``, ``--seed``, ``--threads``."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--out", default=default_out, help=f"output folder (default {default_out})")
    p.add_argument("--quick", action="store_true", help="a CI-sized run (few iterations)")
    p.add_argument("--seed", type=int, default=0, help="seed of initialisations (default 0)")
    p.add_argument(
        "--threads", type=int, default=2, help="torch CPU threads (default 2, as in the targets)"
    )
    return p


def setup(args: argparse.Namespace) -> Path:
    """Create the output folder, fix the thread count and the seed; return the folder."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def fmt(value: Any) -> str:
    """A table cell: floats in 4 significant digits, lists joined."""
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.4g}" if 1e-3 <= abs(value) < 1e5 or value == 0 else f"{value:.3e}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(fmt(v) for v in value) + "]"
    return "-" if value is None else str(value)


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A plain-text table of ``rows`` (dicts) with the given ``columns``."""
    cells = [[fmt(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    line = "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))
    rule = "  ".join("-" * w for w in widths)
    body = ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join([line, rule, *body])


def write_results(out: Path, results: dict[str, Any]) -> Path:
    """Write ``OUT/results.json``."""
    path = out / "results.json"
    path.write_text(json.dumps(results, indent=1, default=float))
    return path


def figure(nrows: int = 1, ncols: int = 1, size: tuple[float, float] = (6.0, 4.0)):
    """A matplotlib figure that needs no display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(nrows, ncols, figsize=size, squeeze=False)


class Stopwatch:
    """Wall time of a block: ``with Stopwatch() as w: ...; w.seconds``."""

    def __enter__(self) -> Stopwatch:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start
