"""The ``physode`` command: parses its arguments and calls the library, nothing more.

Every subcommand is two small functions: ``_add_<name>(subparsers)`` builds its parser and sets
``func`` to ``_cmd_<name>(args) -> int``, the exit status. :data:`COMMANDS` lists the ``_add_``
functions in the order ``physode --help`` shows them; a new subcommand is one more entry.

Exit status: 0 success; 1 a check found a problem (``physode check``); 2 bad usage, an error
physode raises on purpose or a file the system refuses (printed as one line
``physode COMMAND: error: ...``); 3 an internal error, a bug (the traceback is printed, then one
line ``physode COMMAND: internal error: ...``); 130 interrupted; 141 standard output closed early
(a broken pipe, ``physode systems | head -1``); 143 stopped by SIGTERM, which is handled as
Ctrl-C is.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import json
import os
import re
import shlex
import sys
import tomllib
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from physode._defaults import MAX_STEPS
from physode._errors import InvalidArgumentError, PhysodeError
from physode._terminal import stopped, terminate_as_interrupt

__all__ = ["COMMANDS", "build_parser", "main"]

_FORMATTER = argparse.RawDescriptionHelpFormatter
_EXIT_STATUS = (
    "exit status: 0 success, 1 a check failed, 2 bad usage or an error (one line\n"
    "`physode COMMAND: error: ...`), 3 an internal error: a bug in physode (a traceback,\n"
    "then `physode COMMAND: internal error: ...`; please report it), 130 interrupted,\n"
    "141 standard output closed early (`physode systems | head -1`), 143 stopped by\n"
    "SIGTERM (a batch scheduler's preemption or time limit; handled as Ctrl-C is)"
)
# The subcommands' own line; `physode check` describes its 1 and 2 itself.
_COMMAND_EXIT_STATUS = (
    "exit status: 0 success, 2 bad usage or input (one line `physode COMMAND: error: ...`),\n"
    "3 an internal error (a bug), 130 interrupted (143 by SIGTERM); `physode --help` lists\n"
    "them all"
)


def _fractions(text: str) -> tuple[float, float, float]:
    parts = text.split(",")
    try:
        values = tuple(float(part) for part in parts)
    except ValueError:
        values = ()
    if len(values) != 3:
        raise argparse.ArgumentTypeError(
            f"expected three comma-separated fractions (train,val,test), got {text!r}; "
            "e.g. --split 0.8,0.1,0.1"
        )
    return values


def _add_systems(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "systems",
        help="list the catalogue of physical systems",
        description="List the systems of the catalogue, one line each: the name to pass to\n"
        "`physode simulate` (or `physode.systems.load`) and a description.",
        epilog="example:\n  physode systems | cut -d' ' -f1     # the names alone\n\n"
        + _COMMAND_EXIT_STATUS,
        formatter_class=_FORMATTER,
    )
    parser.set_defaults(func=_cmd_systems)
    return parser


def _description(name: str) -> str:
    import physode.systems

    # Reading the one field is instant; building every system (code generation) takes seconds.
    try:
        spec = tomllib.loads(physode.systems.path(name).read_text(encoding="utf-8"))
        return str(spec["description"])
    except (KeyError, tomllib.TOMLDecodeError):
        return physode.systems.load(name).description


def _cmd_systems(args: argparse.Namespace) -> int:
    import physode.systems

    names = physode.systems.names()
    width = max((len(name) for name in names), default=0)
    for name in names:
        print(f"{name.ljust(width)}  {_description(name)}")
    return 0


_SIMULATE_EXAMPLES = """examples:
  physode simulate pendulum --trajectories 256 --t-end 10 --points 201 --out pendulum.h5
  physode simulate three_body --trajectories 4096 --t-end 10 --points 101 --out tb.h5 \\
      --seed 7 --params sample --noise 0.01 --split 0.8,0.1,0.1 --dtype float32
  physode simulate my_system.toml --trajectories 64 --t-end 5 --points 51 --out mine.h5
  physode simulate three_body ... --out tb.h5 --resume     # continue after an interruption
  physode simulate three_body ... --out tb.h5 --chunk-size 512 --workers 4   # 4 processes

Every trajectory's initial state, parameters and noise come from (seed, trajectory index),
so the data do not depend on --chunk-size, --threads, --workers or --scheduler. Finished
chunks are kept in OUT.parts/ (written by this process, also with --workers or --scheduler);
the file OUT appears (renamed from OUT.tmp) only when complete. See docs/data.md for the layout.

"""


def _add_simulate(subparsers) -> argparse.ArgumentParser:
    from physode.data.simulation import DTYPES, METHODS

    parser = subparsers.add_parser(
        "simulate",
        help="simulate trajectories of a system into an HDF5 data set",
        description="Simulate trajectories of SYSTEM on [0, T] from the system's own\n"
        "initial-state distribution and store them in an HDF5 file, with their time\n"
        "derivatives, invariants, solver status and a train/val/test split.",
        epilog=_SIMULATE_EXAMPLES + _COMMAND_EXIT_STATUS,
        formatter_class=_FORMATTER,
    )
    parser.add_argument("system", metavar="SYSTEM", help="catalogue name or specification file")
    required = parser.add_argument_group("required")
    required.add_argument(
        "--trajectories", "-n", type=int, required=True, metavar="N", help="number of trajectories"
    )
    required.add_argument("--t-end", type=float, required=True, metavar="T", help="final time")
    required.add_argument(
        "--points", type=int, required=True, metavar="P", help="output times, t = linspace(0, T, P)"
    )
    required.add_argument(
        "--out", "-o", required=True, metavar="FILE.h5",
        help="file to write; missing folders above it are created",
    )
    options = parser.add_argument_group("simulation")
    options.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default 0)")
    options.add_argument(
        "--method", choices=METHODS, default="dop853", help="adaptive solver (default dop853)"
    )
    options.add_argument(
        "--rtol", type=float, default=1e-10, metavar="X", help="relative tolerance (default 1e-10)"
    )
    options.add_argument(
        "--atol", type=float, default=1e-10, metavar="X", help="absolute tolerance (default 1e-10)"
    )
    options.add_argument(
        "--params",
        type=_params_mode,
        default="default",
        metavar="{default,sample,NAMES}",
        help="`default`: the system's parameters, `sample`: one draw per trajectory from "
        "their ranges, or comma-separated names (e.g. `l` or `l,m`): draw only those, the "
        "others at their defaults (default `default`)",
    )
    options.add_argument(
        "--noise",
        type=float,
        default=0.0,
        metavar="STD",
        help="std of Gaussian observation noise, stored beside the clean states (default 0)",
    )
    options.add_argument(
        "--split",
        type=_fractions,
        default=(0.8, 0.1, 0.1),
        metavar="TRAIN,VAL,TEST",
        help="fractions of the train/val/test split (default 0.8,0.1,0.1); the counts are "
        "the largest remainders of fraction * N, so a fraction of 0 gets no trajectory, and "
        "each positive fraction gets at least one (a warning says when N is too small)",
    )
    options.add_argument(
        "--dtype",
        choices=DTYPES,
        default="float64",
        help="storage type of states and derivatives; the solve is float64 (default float64)",
    )
    options.add_argument(
        "--chunk-size",
        type=int,
        default=4096,
        metavar="B",
        help="trajectories per chunk: one batched solve and the unit of resuming; larger is "
        "faster, the data do not depend on it (default 4096)",
    )
    options.add_argument(
        "--threads",
        type=int,
        default=1,
        metavar="K",
        help="torch intra-op threads during the run; the data do not depend on it (default 1, "
        "the fastest for per-sample solves)",
    )
    parallel = parser.add_argument_group("parallel (the data do not depend on these)")
    where = parallel.add_mutually_exclusive_group()
    where.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="W",
        help="simulate the chunks in W processes on this machine, each with --threads torch "
        "threads (default 1: in this process, one chunk after another); give --chunk-size "
        "small enough for N / B >= W chunks",
    )
    where.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="simulate the chunks on the workers of a running Dask scheduler, such as "
        'tcp://host:8786; needs pip install "physode[dask]" here and on the workers (default: '
        "none, see --workers)",
    )
    options.add_argument(
        "--drift-threshold",
        type=float,
        default=1e-6,
        metavar="X",
        help="flag trajectories whose invariants drift more than this, relatively (default 1e-6)",
    )
    options.add_argument(
        "--max-steps",
        type=int,
        default=MAX_STEPS,
        metavar="M",
        help="step attempts (accepted and rejected) allowed per trajectory before it is flagged "
        f"as failed (default {MAX_STEPS})",
    )
    options.add_argument(
        "--max-step",
        type=float,
        default=None,
        metavar="H",
        help="longest step the solver may take, for forcing or pulses narrower than the steps "
        "the tolerances allow (default: no cap)",
    )
    options.add_argument(
        "--resume", action="store_true", help="continue an interrupted run from its finished chunks"
    )
    options.add_argument(
        "--force",
        action="store_true",
        help="overwrite FILE.h5; discard an interrupted run, unless --resume continues it: "
        "--resume --force finishes an interrupted overwrite of FILE.h5",
    )
    options.add_argument(
        "--quiet", "-q", action="store_true", help="no progress bar and no summary line"
    )
    parser.set_defaults(func=_cmd_simulate)
    return parser


_SIMULATE_SETTINGS = (
    "trajectories", "t_end", "points", "out", "seed", "method", "rtol", "atol", "params", "noise",
    "split", "dtype", "resume", "force", "quiet", "chunk_size", "drift_threshold", "max_steps",
    "max_step", "command_line", "threads",
)  # fmt: skip


def _cmd_simulate(args: argparse.Namespace) -> int:
    from physode._terminal import warnings_as_lines
    from physode.data import simulate

    settings = {name: getattr(args, name) for name in _SIMULATE_SETTINGS}
    try:
        with (
            warnings_as_lines("physode simulate"),
            _folders_above(args.out, "out"),
            _simulate_executor(args.workers, args.scheduler) as executor,
        ):
            result = simulate(args.system, **settings, executor=executor)
    except KeyboardInterrupt as exc:
        how, status = stopped(exc)
        print(f"physode simulate: {how}{_resume_hint(args.out)}", file=sys.stderr)
        return status
    if not args.quiet:
        print(result.summary())
    return 0


@contextlib.contextmanager
def _simulate_executor(workers: int, scheduler: str | None) -> Iterator[object]:
    """Where ``physode simulate`` runs its chunks: ``None`` (this process) for ``--workers 1``,
    a pool of processes for more, a Dask client for ``--scheduler``; closed after the run."""
    from physode.data import _parallel

    if scheduler is not None:
        with _parallel.scheduler_client(scheduler) as client:
            yield client
    elif workers == 1:
        yield None
    elif isinstance(workers, int) and workers > 1:
        with _parallel.local_pool(workers) as pool:
            yield pool
    else:
        raise InvalidArgumentError(
            f"workers={workers!r} must be an integer >= 1 (1 simulates in this process)"
        )


def _resume_hint(out: str) -> str:
    """How to continue an interrupted ``physode simulate``, if it kept anything to continue."""
    from physode.data._store import parts_folder

    parts = parts_folder(Path(out))
    if not parts.is_dir():
        return " before any chunk was kept; nothing was written"
    return f"; the finished chunks are kept in {parts}/: rerun the same command with --resume"


def _add_check(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "check",
        help="recompute a data set's invariants and report their drift",
        description="Recompute every invariant of the stored system from the stored states and\n"
        "parameters; print per invariant the median and worst relative drift\n"
        "|I(t) - I(0)| / S (S: the sum of |terms of I| at t = 0, or its median over t where\n"
        "larger, as in physode.diagnostics.conservation) and the worst trajectories. It reads\n"
        "every dataset, which verifies every checksum of the file.\n\n"
        "The drift covers the trajectories solved to the end with finite states; solver\n"
        "failures are listed apart, by cause (step-size underflow, max_steps used up,\n"
        "non-finite state), each with the time it reached, and so are stored states that\n"
        "are not finite (inf or NaN where the solve did not stop, such as a float32\n"
        "overflow), each from the first time index that holds one. Their drift up to\n"
        "there is printed in a table of its own.\n\n"
        "exit status: 0 every invariant within the tolerance, no solver failures and no\n"
        "states that are not finite, 1 otherwise, 2 the file cannot be read or an\n"
        "argument is bad, 3 an internal error (a bug), 130 interrupted (143 by SIGTERM)",
        epilog="examples:\n  physode check three_body.h5 --tolerance 1e-8 --plot drift.png\n"
        "  physode check three_body.h5 --quiet || echo 'three_body.h5 failed its check'\n"
        "  physode check three_body.h5 --json | jq '.invariants[].worst'",
        formatter_class=_FORMATTER,
    )
    parser.add_argument("file", metavar="FILE.h5", help="a data set written by physode simulate")
    parser.add_argument(
        "--tolerance",
        type=float,
        default=1e-6,
        metavar="X",
        help="largest relative drift accepted (default 1e-6); the rounding of float32 states "
        "alone drifts up to about 1e-5, so check float32 data sets with 1e-4",
    )
    parser.add_argument(
        "--plot",
        metavar="PNG",
        help="write a plot of drift over time of the worst trajectories (default: no plot); "
        "missing folders above it are created",
    )
    parser.add_argument(
        "--worst", type=int, default=3, metavar="K", help="worst trajectories to name (default 3)"
    )
    output = parser.add_mutually_exclusive_group()
    output.add_argument(
        "--json",
        action="store_true",
        help="print the report as one JSON object instead of the table (docs/cli.md lists "
        "its keys)",
    )
    output.add_argument(
        "--quiet", "-q", action="store_true", help="print nothing: the exit status says it all"
    )
    parser.set_defaults(func=_cmd_check)
    return parser


def _cmd_check(args: argparse.Namespace) -> int:
    from physode._terminal import warnings_as_lines
    from physode.data import check
    from physode.diagnostics._conservation import image_path

    with contextlib.ExitStack() as stack:
        # A warning in rebuilding the stored system (an undeclared E) as a line of the command's.
        stack.enter_context(warnings_as_lines("physode check"))
        plot = None
        if args.plot is not None:
            # Refuse a plot that could not be written before the check reads the whole file.
            stack.enter_context(_folders_above(args.plot, "plot"))
            plot = image_path(args.plot, "plot")  # respelled --plot by _option_spelling
        report = check(args.file, tolerance=args.tolerance, worst=args.worst)
        written = None if plot is None else report.plot(plot)
    if args.json:
        record = {**report.to_dict(), "plot": None if written is None else str(written)}
        print(json.dumps(record, indent=1))
    elif not args.quiet:
        print(report.table())
        if written is not None:
            print(f"plot written to {written}")
    return 0 if report.passed else 1


@contextlib.contextmanager
def _folders_above(path: str, name: str) -> Iterator[None]:
    """Create the missing folders above the output file ``path`` (the option ``name``), as
    ``physode train`` does for its ``--out``, ``--log`` and ``--checkpoint-dir``; if the command
    then fails or is interrupted, remove again those of them that are still empty.

    A folder that cannot be created is refused naming the option, as
    :func:`physode._files.writable_folder` refuses one: ``--out a/b.h5: cannot create the
    folder a: a is not a folder``.
    """
    from physode._files import writable_folder

    folder = Path(path).parent
    created = []  # the deepest first
    missing = folder
    while not missing.exists() and not missing.is_symlink() and missing != missing.parent:
        created.append(missing)
        missing = missing.parent
    if not missing.is_dir():
        raise InvalidArgumentError(
            f"{name}={path!r}: cannot create the folder {folder}: {missing} is not a folder"
        )
    done = False
    try:
        if created:
            writable_folder(name, path, folder)
        yield
        done = True
    finally:
        if not done:
            for made in created:
                try:
                    made.rmdir()
                except OSError:
                    break  # not empty (an interrupted simulate keeps its chunks) or never made


def _add_train(subparsers) -> argparse.ArgumentParser:
    from physode.cli_train import add_train_parser

    return add_train_parser(subparsers)


COMMANDS: list[Callable[..., argparse.ArgumentParser]] = [
    _add_systems,
    _add_simulate,
    _add_check,
    _add_train,
]


def _params_mode(text: str):
    """``--params``: a mode of PARAM_MODES, or the names of the parameters to draw."""
    from physode.data.simulation import PARAM_MODES

    if text in PARAM_MODES:
        return text
    names = [name.strip() for name in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(
            f"{text!r}: give default, sample or parameter names separated by commas, e.g. l,m"
        )
    return names


def build_parser() -> argparse.ArgumentParser:
    """The ``physode`` argument parser with every subcommand of :data:`COMMANDS`.

    Examples
    --------
    >>> args = build_parser().parse_args(["check", "data.h5", "--tolerance", "1e-8"])
    >>> args.file, args.tolerance
    ('data.h5', 1e-08)
    """
    import physode

    parser = argparse.ArgumentParser(
        prog="physode",
        description="physode: physics-informed dynamics in PyTorch. Simulate data sets from a\n"
        "catalogue of physical systems, check their conservation laws, and train hybrid\n"
        "physics + neural models. `physode COMMAND --help` describes each command.",
        epilog=_EXIT_STATUS,
        formatter_class=_FORMATTER,
    )
    parser.add_argument("--version", action="version", version=f"physode {physode.__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in COMMANDS:
        command = add(subparsers)
        command.set_defaults(command_parser=command)  # reports unknown options with its usage
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``physode`` command; returns the exit status.

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments after the program name (default: ``sys.argv[1:]``).

    Examples
    --------
    >>> main(["check", "missing.h5"])  # doctest: +SKIP
    physode check: error: missing.h5: no such file
    2
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    # SIGTERM (a batch scheduler stopping the job) is handled as Ctrl-C is.
    with terminate_as_interrupt(), _unencodable_output_escaped():
        return _run_command(argv)


@contextlib.contextmanager
def _unencodable_output_escaped() -> Iterator[None]:
    """Inside, standard output writes a character that its encoding cannot hold escaped
    (``\\xe4``), as Python's standard error does, instead of raising ``UnicodeEncodeError``:
    the bytes of a file name that is not UTF-8, or ``ä`` where the output is ASCII
    (``PYTHONIOENCODING=ascii``, a legacy locale, a Windows code page). A path the command
    prints (``wrote DATA.h5``, the first line of ``physode check``) then failed the command
    as an internal error, after its work was done.
    """
    stream = sys.stdout
    if getattr(stream, "errors", None) != "strict" or not hasattr(stream, "reconfigure"):
        yield  # already lenient (surrogateescape under the C locale), or not a text file
        return
    stream.reconfigure(errors="backslashreplace")
    try:
        yield
    finally:
        with contextlib.suppress(ValueError, OSError):  # closed, or a pipe closed early
            stream.reconfigure(errors="strict")


def _run_command(argv: list[str]) -> int:
    """:func:`main` after its SIGTERM handler is set: run the command, say how it ended."""
    name = "physode"  # who speaks in the error lines: "physode check" once the command is known
    args = None
    try:
        # Building the parser loads torch, which takes a moment: Ctrl-C may come then too.
        # Usage errors and --help leave through SystemExit, which the handlers let pass.
        parser = build_parser()
        _check_command(parser, argv)
        args, unknown = parser.parse_known_args(argv)
        if unknown:
            args.command_parser.error(f"unrecognized arguments: {' '.join(unknown)}")
        name = f"physode {args.command}"
        args.command_line = shlex.join(["physode", *argv])
        return args.func(args)
    except PhysodeError as exc:
        message = _one_line(str(exc)) or type(exc).__name__
        if isinstance(exc, InvalidArgumentError) and args is not None:
            message = _option_spelling(message, args)
        print(f"{name}: error: {message}", file=sys.stderr)
        _error_as_json(args, message, 2)
        return 2
    except KeyboardInterrupt as exc:
        how, status = stopped(exc)
        print(f"{name}: {how}", file=sys.stderr)
        return status
    except BrokenPipeError:
        # The reader went away (`physode systems | head`): stop quietly, as a killed pipe would.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as exc:
        # The system refused a file (permissions, a full disk, a vanished folder): not a bug.
        where = f"{exc.filename}: " if exc.filename else ""
        message = f"{where}{_one_line(exc.strerror or str(exc))}"
        print(f"{name}: error: {message}", file=sys.stderr)
        _error_as_json(args, message, 2)
        return 2
    except Exception as exc:
        # A bug: the traceback is what a report needs; 3 keeps it apart from a failed check (1).
        traceback.print_exc()
        message = _one_line(f"{type(exc).__name__}: {exc}")
        print(
            f"{name}: internal error: {message} (a bug in physode; please report it with the "
            "traceback above)",
            file=sys.stderr,
        )
        _error_as_json(args, f"internal error: {message}", 3)
        return 3


def _error_as_json(args: argparse.Namespace | None, message: str, status: int) -> None:
    """With ``--json`` (``physode check``), print the error that ends the command as the JSON
    object a pipeline reads on standard output, ``{"path", "error", "exit_status"}``, where its
    report would have been: an empty standard output failed the reader's ``json.loads``. The
    error line on standard error stays."""
    if args is None or getattr(args, "json", False) is not True:
        return
    record = {"path": getattr(args, "file", None), "error": message, "exit_status": status}
    with contextlib.suppress(OSError):  # standard output closed: the error line said it all
        print(json.dumps(record, indent=1))


def _check_command(parser: argparse.ArgumentParser, argv: list[str]) -> None:
    """Show the help when no command is given, and refuse an unknown command with the closest
    one (``did you mean 'simulate'?``); both exit with status 2, as argparse's usage errors do.

    ``physode`` itself takes only ``-h`` and ``--version``, which take no value, so the command
    is the first argument that is not an option.
    """
    if not argv:
        parser.print_help(sys.stderr)
        parser.exit(2)
    position = next((i for i, arg in enumerate(argv) if not arg.startswith("-")), None)
    commands = parser._subparsers._group_actions[0].choices  # the COMMAND argument's parsers
    if position is None or argv[position] in commands:
        return
    if {"-h", "--help", "--version"} & set(argv[:position]):
        return  # argparse answers those before it reads the command
    command = argv[position]
    close = difflib.get_close_matches(command, commands, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    parser.error(f"unknown command {command!r}{hint} (choose from {', '.join(commands)})")


def _option_spelling(message: str, args: argparse.Namespace) -> str:
    """``message`` with the library's spelling of each argument the command passed on,
    ``name=value`` (Python's, as :class:`physode.InvalidArgumentError` messages write it), in
    the command's: ``-n/--trajectories 0`` for ``trajectories=0``, ``--resume`` for
    ``resume=True``. A ``(--option ...)`` hint just after it, already in the command's
    spelling, goes.

    Only the value the command passed is respelled, so a message about another ``name`` (a
    setting from a config file, a default the command does not set) keeps Python's spelling.

    Examples
    --------
    >>> args = build_parser().parse_args(["check", "a.h5", "--worst", "0"])
    >>> _option_spelling("worst=0 must be an integer >= 1; tolerance=1e-06 is fine", args)
    '--worst 0 must be an integer >= 1; --tolerance 1e-06 is fine'
    >>> _option_spelling("worst=2 must be even", args)
    'worst=2 must be even'
    """
    for action in args.command_parser._actions:
        if not action.option_strings or not hasattr(args, action.dest):
            continue
        value = getattr(args, action.dest)
        if value is None or value is False:
            continue  # not given: a message naming it speaks of another value
        option = "/".join(sorted(action.option_strings, key=len))
        if value is not True:
            option += " " + _as_typed(value)
        python = re.escape(f"{action.dest}={value!r}")
        pattern = rf"(?<![\w.-]){python}(?![\w.])( \(--[^)]*\))?"
        message = re.sub(pattern, lambda _, spelled=option: spelled, message)
    return message


def _as_typed(value) -> str:
    """An option's value as one types it: ``0.8,0.1,0.1`` for a tuple, a path as it is."""
    if isinstance(value, list | tuple):
        return ",".join(str(item) for item in value)
    return shlex.quote(str(value))


def _one_line(text: str) -> str:
    return " ".join(text.split())
