"""Shared plumbing of the scripts: arguments, tables, results files, plots.

Every script spells the options it shares with the others the same way, from the helpers here:
``--out DIR`` (``-o``; the folder that receives ``results.json`` and plots; missing folders are
created), ``--quick`` (a short run for smoke tests), ``--seed S`` and ``--threads K``.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# physode (and with it torch) is imported inside the functions that use it, so that a script
# can import this module, and call ``quiet_interrupts_from_the_start``, before its slow imports.

SEED_LIMIT = 2**32


def _parsed(text: str, convert, ok, need: str):
    """``convert(text)`` if it converts and passes ``ok``, else argparse's error saying ``need``."""
    try:
        value = convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"need {need}, got {text!r}") from None
    if not ok(value):
        raise argparse.ArgumentTypeError(f"need {need}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """An argparse ``type``: an integer >= 1."""
    return _parsed(text, int, lambda value: value >= 1, "an integer >= 1")


def positive_float(text: str) -> float:
    """An argparse ``type``: a finite number > 0."""
    return _parsed(text, float, lambda v: math.isfinite(v) and v > 0, "a finite number > 0")


def seed_value(text: str) -> int:
    """An argparse ``type``: a seed in [0, 2**32), which every generator the scripts use takes."""
    return _parsed(text, int, lambda value: 0 <= value < SEED_LIMIT, "an integer in [0, 2**32)")


def thread_count(text: str) -> int:
    """An argparse ``type``: ``--threads``, an integer from 1 to the most physode sets
    (:func:`physode._threads.most_threads`; thousands crashed torch's thread pool)."""
    from physode._threads import too_many_threads

    count = positive_int(text)
    problem = too_many_threads(count)
    if problem:
        raise argparse.ArgumentTypeError(f"{text!r} {problem}")
    return count


def output_folder(text: str) -> str:
    """An argparse ``type``: a folder that exists or can be created, and can be written to.

    Nothing is created here (``setup`` does that once every argument is valid). An empty name
    (an unset shell variable) is refused, as ``physode train --out ''`` is: it wrote into the
    current folder.
    """
    if not text.strip():
        raise argparse.ArgumentTypeError(
            f"{text!r} names no folder; give the folder for the results, e.g. --out run"
        )
    path = Path(text)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        what = "it is" if existing == path else f"{str(existing)!r} is"
        raise argparse.ArgumentTypeError(f"cannot create folder {text!r}: {what} not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"cannot create folder {text!r}: no write permission")
    return text


def non_negative_int(text: str) -> int:
    """An argparse ``type``: an integer >= 0."""
    return _parsed(text, int, lambda value: value >= 0, "an integer >= 0")


def output_file(text: str) -> str:
    """An argparse ``type``: a file that can be written (its folder exists or can be created).

    Checked before a run, so that a bad path is refused at once, not after minutes of work.
    """
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"cannot write {text!r}: it is a folder")
    try:
        output_folder(str(path.parent))
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"cannot write {text!r}: its folder cannot be created or written to"
        ) from None
    return text


def write_json(path: str | os.PathLike, results: Any) -> Path:
    """Write ``results`` to ``path`` as JSON, all at once, numbers that are not finite as null."""
    from physode._files import json_ready, write_atomically

    text = json.dumps(json_ready(results), indent=1, default=float)
    return write_atomically(path, lambda temporary: temporary.write_text(text), "results")


def _say_stopped(how: str) -> None:
    print(f"{Path(sys.argv[0]).name}: {how}; a run writes its results only when it "
          "finishes", file=sys.stderr)  # fmt: skip


# Ctrl-C and SIGTERM before ``interruptible`` runs ``main``: how the script says so, and its
# exit status, as :func:`physode._terminal.stopped` says them (that module is not loaded yet).
_STOPPED_WHILE_STARTING = {signal.SIGINT: ("interrupted", 130),
                           signal.SIGTERM: ("terminated (SIGTERM)", 143)}  # fmt: skip


def _stopped_while_starting(signum: int, frame: object) -> None:
    how, status = _STOPPED_WHILE_STARTING[signum]
    _say_stopped(how)
    raise SystemExit(status)


def quiet_interrupts_from_the_start() -> None:
    """Have Ctrl-C and SIGTERM stop the script in one line, with exit status 130 and 143, from
    now on, also while it still imports torch and physode (seconds), before
    :func:`interruptible` runs ``main``. A script run as a program calls it before those
    imports; until then Ctrl-C gave a traceback of the import and a death by the signal.
    """
    for signum in _STOPPED_WHILE_STARTING:
        signal.signal(signum, _stopped_while_starting)


def _restore_default_handlers() -> None:
    """Undo :func:`quiet_interrupts_from_the_start` (where it was done): ``main`` runs with
    Python's Ctrl-C (``KeyboardInterrupt``) and the SIGTERM that ``terminate_as_interrupt``
    sets up, so that a run stops through its ``finally`` blocks."""
    if signal.getsignal(signal.SIGINT) is _stopped_while_starting:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if signal.getsignal(signal.SIGTERM) is _stopped_while_starting:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def interruptible(main) -> int:
    """``main()``, with Ctrl-C and SIGTERM (a batch scheduler stopping the job) each said in one
    line, with exit status 130 and 143, as the ``physode`` command does, instead of a traceback
    or a silent end; scripts call ``raise SystemExit(_common.interruptible(main))``.

    The notes of the interruption follow that line, each on a line of its own: where a
    :class:`physode.train.Trainer` stopped (the epoch, the checkpoint that keeps it).
    """
    from physode._terminal import stopped, terminate_as_interrupt

    try:
        _restore_default_handlers()
        with terminate_as_interrupt():
            return main()
    except KeyboardInterrupt as exc:
        how, status = stopped(exc)
        _say_stopped(how)
        for note in getattr(exc, "__notes__", ()):
            print(note, file=sys.stderr)
        return status


def _ignore_interrupts() -> None:
    """A worker's signals: Ctrl-C is the parent's to handle, and SIGTERM (the parent's pool
    stopping it) ends it at once, not through the handler it inherits from the parent."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def in_processes(function, calls: Sequence[tuple], jobs: int) -> list:
    """``[function(*call) for call in calls]`` on ``jobs`` worker processes (no more than there
    are calls), in order.

    Ctrl-C (in the terminal, which sends it to the workers too) stops everything at once: the
    workers ignore it, and the parent stops them and starts no further call.
    """
    workers = max(1, min(jobs, len(calls)))
    # Leaving the ``with`` block, also by an exception, terminates the workers.
    with multiprocessing.Pool(workers, initializer=_ignore_interrupts) as pool:
        pending = [pool.apply_async(function, call) for call in calls]
        return [result.get() for result in pending]


def summary(doc: str) -> str:
    """The first paragraph of a script's docstring, on one line: its ``--help`` description."""
    return " ".join(doc.strip().split("\n\n")[0].split())


class ResultsFile(str):
    """A results file named by a deprecated spelling (``--out FILE.json`` of
    ``bench_solvers.py``, ``--json FILE`` of ``bench_simulate.py``): still written as named,
    with a warning. ``spelling`` is how it was given."""

    spelling = ""


def _results_file(text: str, spelling: str) -> ResultsFile:
    path = ResultsFile(output_file(text))
    path.spelling = spelling
    return path


def _out_or_old_json_file(text: str) -> str:
    """An argparse ``type``: ``--out`` of a script whose ``--out`` named a JSON file before it
    named a folder: a path ending in ``.json`` is still such a file."""
    if text.endswith(".json"):
        return _results_file(text, "--out FILE.json")
    return output_folder(text)


def _old_json_option(text: str) -> ResultsFile:
    """An argparse ``type``: the deprecated ``--json FILE``."""
    return _results_file(text, "--json FILE")


THREADS_HELP = (
    "torch intra-op threads (default 1: on a small shared machine a second thread that waits "
    "for a busy core slows the many small operations of a solve several times)"
)


def add_out(p: argparse.ArgumentParser, default: str | None, *, old: Sequence[str] = ()) -> None:
    """``--out DIR`` (``-o``): the folder for ``results.json`` and any plots; ``default`` None
    writes no files unless it is given. ``old`` lists the deprecated spellings this script kept:
    ``"--out FILE.json"`` (a value ending in ``.json`` is the results file itself) and
    ``"--json FILE"``."""
    # The scripts without a default folder are the benchmarks, which draw no plots.
    what, where = ("results.json", "no files") if default is None else (
        "results.json and plots", default)  # fmt: skip
    p.add_argument(
        "--out", "-o", metavar="DIR", default=default,
        type=_out_or_old_json_file if "--out FILE.json" in old else output_folder,
        help=f"folder for {what}, created if missing (default: {where})",
    )  # fmt: skip
    if "--json FILE" in old:
        p.add_argument("--json", dest="out", type=_old_json_option, help=argparse.SUPPRESS)


def add_quick(p: argparse.ArgumentParser, what: str = "few iterations") -> None:
    """``--quick``: a short run for smoke tests (``tests/test_scripts.py``)."""
    p.add_argument("--quick", action="store_true", help=f"a short run for smoke tests: {what}")


def add_seed(p: argparse.ArgumentParser, what: str = "every random draw of the run") -> None:
    """``--seed S``, in [0, 2**32), default 0."""
    p.add_argument(
        "--seed", type=seed_value, default=0, metavar="S",
        help=f"seed of {what}, in [0, 2**32) (default 0)",
    )  # fmt: skip


def add_threads(p: argparse.ArgumentParser, help: str = THREADS_HELP) -> None:
    """``--threads K``, default 1."""
    p.add_argument("--threads", type=thread_count, default=1, metavar="K", help=help)


def parser(
    description: str,
    default_out: str | None,
    *,
    quick: str = "few iterations",
    seed: str | None = "every random draw of the run",
    old: Sequence[str] = (),
) -> argparse.ArgumentParser:
    """The arguments every script that writes results takes: ``--out``, ``--quick``,
    ``--seed`` (unless ``seed`` is None: the script draws nothing random) and ``--threads``.

    ``quick`` says what ``--quick`` reduces, ``seed`` what the seed draws; ``old`` is passed to
    :func:`add_out`.
    """
    p = argparse.ArgumentParser(description=description)
    add_out(p, default_out, old=old)
    add_quick(p, quick)
    if seed is not None:
        add_seed(p, seed)
    add_threads(p)
    return p


def warn(message: str) -> None:
    """One line ``SCRIPT: warning: message`` on standard error."""
    print(f"{Path(sys.argv[0]).name}: warning: {message}", file=sys.stderr)


def setup(args: argparse.Namespace) -> Path | None:
    """Fix the thread count and the seed; create the output folder ``--out`` (removing an
    earlier run's ``results.json`` from it) and return it, or None without ``--out``.

    A results file given by a deprecated spelling (:class:`ResultsFile`) is announced with a
    warning; its folder is created and an earlier file of that name removed, as for
    ``results.json``. :func:`results_path` says where the results go.
    """
    import torch  # here, not above: the benchmarks' SciPy and REBOUND processes go without it

    torch.set_num_threads(args.threads)
    if getattr(args, "seed", None) is not None:
        torch.manual_seed(args.seed)
    if args.out is None:
        return None
    if isinstance(args.out, ResultsFile):
        warn(f"{args.out.spelling} is deprecated: use --out DIR, which writes DIR/results.json; "
             f"writing {args.out} as before")  # fmt: skip
    out = results_path(args).parent
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        # What ``output_folder`` could not foresee (a read-only file system, a race), said the
        # way argparse says it.
        print(f"{Path(sys.argv[0]).name}: error: argument --out: cannot create folder "
              f"{str(out)!r}: {error.strerror or error}", file=sys.stderr)  # fmt: skip
        raise SystemExit(2) from None
    # A results file stands for the finished run whose logs and plots lie beside it: an earlier
    # run's must not outlive this one if this one is interrupted or fails.
    results_path(args).unlink(missing_ok=True)
    return out


def results_path(args: argparse.Namespace) -> Path | None:
    """Where the script writes its results: ``OUT/results.json``, the file a deprecated spelling
    named, or None without ``--out``."""
    if args.out is None:
        return None
    if isinstance(args.out, ResultsFile):
        return Path(args.out)
    return Path(args.out) / "results.json"


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
    """Write ``OUT/results.json`` (all at once: never half-written). Scripts call it last, after
    their plots, so that a results file stands for a finished run."""
    return write_json(out / "results.json", results)


def finish(args: argparse.Namespace, results: dict[str, Any]) -> Path | None:
    """Write ``results`` where :func:`results_path` says, if anywhere, print ``wrote PATH`` and
    return that path."""
    path = results_path(args)
    if path is None:
        return None
    written = write_json(path, results)
    print(f"wrote {written}")
    return written


def figure(nrows: int = 1, ncols: int = 1, size: tuple[float, float] = (6.0, 4.0)):
    """A matplotlib figure that needs no display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(nrows, ncols, figsize=size, squeeze=False)


def save_figure(fig, path: Path, dpi: int = 120) -> None:
    """Lay out ``fig``, write it to ``path`` (all at once) and close it."""
    import matplotlib.pyplot as plt

    from physode._files import write_atomically

    try:
        fig.tight_layout()
        fmt_name = path.suffix.lstrip(".") or None
        write_atomically(path, lambda temporary: fig.savefig(temporary, dpi=dpi, format=fmt_name),
                         "plot")  # fmt: skip
    finally:
        plt.close(fig)


class Stopwatch:
    """Wall time of a block: ``with Stopwatch() as w: ...; w.seconds``."""

    def __enter__(self) -> Stopwatch:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start
