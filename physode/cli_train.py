"""The ``physode train`` subcommand: build a model, train it on a data set, report.

The ``physode`` command (``physode/cli.py``) registers it with :func:`add_train_parser`; the
parser's ``func`` default is :func:`run_train`, which returns the exit status.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import numbers
import os
import shlex
import sys
import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from physode._checks import is_int
from physode._defaults import MAX_STEPS
from physode._errors import (
    DataFormatError,
    InvalidArgumentError,
    PhysodeError,
    SolverError,
    TrainingError,
)
from physode._files import (
    has_hdf5_signature,
    json_ready,
    save_atomically,
    writable_folder,
    write_atomically,
)
from physode._terminal import progress_wanted, stopped, warnings_as_lines
from physode._threads import too_many_threads, torch_threads
from physode.data.checking import counted
from physode.solvers.loop import Status
from physode.train import _distributed
from physode.train.config import (
    ADAPTIVE_METHODS,
    BACKWARD_METHODS,
    FIXED_STEP_METHODS,
    GRADIENT_MODES,
    LR_SCHEDULES,
    ON_FAILED_BATCH,
    OPTIMIZERS,
    TrainConfig,
)

MODEL_KINDS = ("physics", "neural", "hybrid", "hnn")
_MODEL_KEYS = (
    "kind", "system", "learnable", "per_trajectory", "init", "width", "depth", "activation",
    "aphynity", "aphynity_lambda", "aphynity_tau", "aphynity_update", "separable",
)
# Which model kinds each [model] setting applies to (the others apply to all).
_APPLIES_TO: dict[str, tuple[str, ...]] = {
    "system": ("physics", "hybrid"), "learnable": ("physics", "hybrid"),
    "per_trajectory": ("physics", "hybrid"), "init": ("physics", "hybrid"),
    "width": ("neural", "hybrid", "hnn"), "depth": ("neural", "hybrid", "hnn"),
    "activation": ("neural", "hybrid", "hnn"), "separable": ("hnn",), "aphynity": ("hybrid",),
    "aphynity_lambda": ("hybrid",), "aphynity_tau": ("hybrid",), "aphynity_update": ("hybrid",),
}
_APHYNITY_KEYS = ("aphynity_lambda", "aphynity_tau", "aphynity_update")
# The [model] settings that --init-from's weights must have been trained with: those that shape
# the model or give its weights their meaning (an activation changes no shape). Start values,
# the learnable parameters and APHYNITY's settings may change, as a new run's settings.
# The system is compared by identity, not as written (see _system_changes).
_ARCHITECTURE_KEYS = (
    "kind", "system", "per_trajectory", "width", "depth", "activation", "separable",
)
# Those of them that shape a physics model, or a hybrid's physics part: the weights of one start
# the other where these are the same (the learnable parameters may change, as above).
_PHYSICS_PART_KEYS = ("system", "per_trajectory")
# What a model record says of its system: "system", as given (--system's value, or the data
# set's system's name where none was given: what rebuilds it), and the system's identity, its
# name and the SHA-256 of its specification text (None for a system built in Python). Records
# written before physode kept the identity hold "system" only.
_SYSTEM_KEYS = ("system", "system_name", "system_spec_sha256")
# The [report] settings, each with its type check and the type's name in TOML.
_REPORT_TYPES: dict[str, tuple[Any, str]] = {
    "t_end": (lambda v: isinstance(v, numbers.Real) and not isinstance(v, bool), "a number"),
    "out": (lambda v: isinstance(v, str), "a string (a folder)"),
    "quiet": (lambda v: isinstance(v, bool), "true or false"),
    "resume": (
        lambda v: isinstance(v, str | bool), "a string (a checkpoint file) or true (--resume)"
    ),
    "calibrate": (
        lambda v: isinstance(v, numbers.Real),
        "a number (the end time of the observations to calibrate on) or true (the training "
        "horizon)",
    ),
}
_REPORT_KEYS = tuple(_REPORT_TYPES)
# The settings of the Opt-Disc gradient (physode.OptDisc's parameters, prefixed); they apply to
# --gradient opt-disc only. A switch set to false asks for what the gradient does anyway.
_OPT_DISC_KEYS = (
    "opt_disc_method", "opt_disc_rtol", "opt_disc_atol", "opt_disc_step_size", "opt_disc_restart",
    "opt_disc_seminorm",
)
_OPT_DISC_SWITCHES = ("opt_disc_restart", "opt_disc_seminorm")
_MODEL_DEFAULTS: dict[str, Any] = {
    "kind": "hybrid", "system": None, "learnable": None, "per_trajectory": None, "init": {},
    "width": 64, "depth": 2, "activation": "tanh", "aphynity": False, "aphynity_lambda": 1.0,
    "aphynity_tau": 1.0, "aphynity_update": "batch", "separable": False,
}

EXAMPLES = """examples:
  physode train three_body.h5 --model physics --learnable m1,m2,m3 --epochs 50
  physode train pendulums.h5 --model physics --per-trajectory l   # each pendulum's own l
  physode train pendulums.h5 --model physics --per-trajectory l --calibrate --t-end 4
      # test pendulums: own l fitted up to the training horizon, then rolled out to t = 4
  physode train pendulum.h5 --model hybrid --system pendulum --learnable g --aphynity \\
      --window 10 --gradient disc-opt --method rk4 --step-size 0.05 --log log.csv
  physode train osc.h5 --model hybrid --system harmonic_oscillator --learnable k \\
      --init-from fit/model.pt   # physics first: after a --model physics run with --out fit
  physode train osc.h5 --model hnn --separable --width 32 --method leapfrog --step-size 0.05 \\
      --gradient disc-opt   # a learned H(q, p) = T(p) + V(q); states [q, p]
  physode train vdp.h5 --model neural --gradient opt-disc --opt-disc-restart \\
      --opt-disc-rtol 1e-9 --opt-disc-atol 1e-11
  physode train --config run.toml --resume out/checkpoints/last.pt
  physode train three_body.h5 ... --checkpoint-dir ck --resume   # continue after an interruption
  physode train three_body.h5 ... --init-from ck/last.pt --lr 0.001   # after a divergence

exit status: 0 success, 2 bad usage or input (one line `physode train: error: ...`),
3 an internal error (a bug), 130 interrupted, 143 stopped by SIGTERM (with
--checkpoint-dir, the line names the last.pt that --resume continues from); `physode --help`
lists them all
"""


def _csv_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _int_list(text: str) -> list[int]:
    try:
        return [int(item) for item in _csv_list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None


def _assignments(text: str) -> dict[str, float]:
    values = {}
    for item in _csv_list(text):
        name, sep, value = item.partition("=")
        try:
            values[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise argparse.ArgumentTypeError(f"expected NAME=VALUE pairs, got {item!r}")
    return values


def _calibration_time(text: str) -> float:
    """``--calibrate``'s time; a word that is none (the data set after a bare ``--calibrate``)
    is refused with where to put it."""
    try:
        return float(text)
    except ValueError:
        data = text.endswith((".h5", ".hdf5")) or Path(text).is_file()
        hint = "; put DATA.h5 before a bare --calibrate" if data else ""
        raise argparse.ArgumentTypeError(
            f"expected a time T (a number), got {text!r}{hint}"
        ) from None


def add_train_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``train`` subcommand to ``physode``'s subparsers.

    Parameters
    ----------
    subparsers
        What ``ArgumentParser.add_subparsers()`` returned.

    Returns
    -------
    argparse.ArgumentParser
        The ``train`` parser; its ``func`` default is :func:`run_train`.

    Examples
    --------
    >>> parser = argparse.ArgumentParser(prog="physode")
    >>> _ = add_train_parser(parser.add_subparsers())
    >>> args = parser.parse_args(["train", "data.h5", "--epochs", "3"])
    >>> args.data, args.epochs
    ('data.h5', 3)
    """
    s = argparse.SUPPRESS
    parser = subparsers.add_parser(
        "train",
        help="train a physics, neural, hybrid or Hamiltonian (hnn) model on a data set",
        description="Train a model on an HDF5 data set written by `physode simulate`, with\n"
        "the data set's stored train/val/test split; log every epoch, checkpoint, and\n"
        "report rollout errors and conservation on the test split. Command-line options\n"
        "override the values of --config.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=s,
    )
    parser.add_argument(
        "data", nargs="?", metavar="DATA.h5", help="the data set (or `data` in --config)"
    )
    parser.add_argument(
        "--config",
        metavar="FILE.toml",
        help="a TOML file with `data` and [model], [train] and [report] tables (default: none)",
    )
    _add_model_options(parser.add_argument_group("model"))
    _add_training_options(parser.add_argument_group("training"))
    _add_report_options(parser.add_argument_group("after training"))
    parser.set_defaults(func=run_train)
    return parser


def _add_model_options(model: argparse._ArgumentGroup) -> None:
    """``physode train``'s options of the model it builds."""
    model.add_argument(
        "--model", dest="kind", choices=MODEL_KINDS,
        help="hnn: a Hamiltonian neural network, a learned H(q, p) of states [q, p] in "
        "canonical coordinates (default hybrid)",
    )
    model.add_argument(
        "--system", metavar="SYSTEM",
        help="physics of the model: catalogue name or file (default: the data set's)",
    )
    model.add_argument(
        "--learnable", type=_csv_list, metavar="NAMES",
        help="comma-separated physical parameters to learn (default: none)",
    )
    model.add_argument(
        "--per-trajectory", type=_csv_list, metavar="NAMES",
        help="comma-separated physical parameters to learn one value of per training "
        "trajectory, whether or not --learnable names them (default: none)",
    )
    model.add_argument(
        "--init", type=_assignments, metavar="NAME=X,...",
        help="start values, e.g. m1=1.0,m2=1.0 (default: the system's)",
    )
    model.add_argument(
        "--width", type=int, metavar="W", help="hidden units of the network (default 64)"
    )
    model.add_argument(
        "--depth", type=int, metavar="D", help="hidden layers of the network (default 2)"
    )
    model.add_argument(
        "--activation", metavar="NAME",
        help="tanh, relu, softplus, elu, gelu, silu, sigmoid (default tanh)",
    )
    model.add_argument(
        "--separable", action="store_true",
        help="hnn: learn H = T(p) + V(q) with two networks, which leapfrog and yoshida4 need",
    )
    model.add_argument(
        "--aphynity", action="store_true", help="hybrid: penalise the residual's norm (APHYNITY)"
    )
    model.add_argument(
        "--aphynity-lambda", type=float, metavar="X", help="starting weight λ (default 1)"
    )
    model.add_argument(
        "--aphynity-tau", type=float, metavar="X", help="λ ← λ + τ·L per update (default 1)"
    )
    model.add_argument(
        "--aphynity-update", choices=("batch", "epoch"),
        help="raise λ after every batch (default) or once an epoch, by τ times its mean loss",
    )


def _add_training_options(train: argparse._ArgumentGroup) -> None:
    """``physode train``'s options of the training run: data windows, optimiser, solver,
    stopping, logs and checkpoints."""
    train.add_argument(
        "--epochs", type=int, metavar="N", help="passes over the training windows (default 100)"
    )
    train.add_argument(
        "--batch-size", type=int, metavar="B", help="windows solved together (default 16)"
    )
    train.add_argument(
        "--val-batch-size", type=int, metavar="B",
        help="validation windows solved together (default: --batch-size)",
    )
    train.add_argument(
        "--window", type=int, metavar="P",
        help="time points per window (default: the whole trajectory)",
    )
    train.add_argument(
        "--window-stride", type=int, metavar="S",
        help="index distance between window starts (default 1)",
    )
    train.add_argument(
        "--batches-per-epoch", type=int, metavar="N",
        help="stop an epoch after this many batches (default: all)",
    )
    train.add_argument("--optimizer", choices=OPTIMIZERS, help="(default adam)")
    train.add_argument("--lr", type=float, metavar="X", help="learning rate (default 0.01)")
    train.add_argument(
        "--weight-decay", type=float, metavar="X", help="Adam weight decay (default 0)"
    )
    train.add_argument("--lr-schedule", choices=LR_SCHEDULES, help="(default constant)")
    train.add_argument(
        "--lr-min", type=float, metavar="X", help="cosine: final learning rate (default 0)"
    )
    train.add_argument(
        "--lr-gamma", type=float, metavar="X",
        help="step, exponential, plateau: lr factor (default 0.5)",
    )
    train.add_argument(
        "--lr-step", type=int, metavar="N",
        help="step: epochs per step; plateau: epochs without improvement (default 10)",
    )
    train.add_argument(
        "--grad-clip", type=float, metavar="X", help="largest gradient norm (default: no clipping)"
    )
    train.add_argument(
        "--on-failed-batch", choices=ON_FAILED_BATCH,
        help="a batch whose solve fails or whose loss or gradient is not finite: stop with an "
        "error, the run back at its last completed epoch (default), or skip it and count it in "
        "the log (skipped_batches); training still stops when a whole epoch, or 10 batches in "
        "a row, fail",
    )
    train.add_argument(
        "--time-limit", type=float, metavar="SECONDS",
        help="stop after this many seconds (default: none)",
    )
    train.add_argument(
        "--patience", type=int, metavar="N",
        help="stop after N epochs without a better validation loss (default: never)",
    )
    train.add_argument(
        "--min-delta", type=float, metavar="X", help="improvement --patience counts (default 0)"
    )
    train.add_argument(
        "--restore-best", action=argparse.BooleanOptionalAction,
        help="after training, load the weights of the best validation epoch; --no-restore-best "
        "keeps the last epoch's (default True)",
    )
    train.add_argument(
        "--noisy",
        action="store_true",
        help="train and validate on the data set's noisy states (simulated with --noise); the "
        "report compares with the clean ones",
    )
    train.add_argument(
        "--observe", type=_int_list, metavar="I,J,...",
        help="state indices in the loss, each once, e.g. 0,1,2; -1 is the last (default: all)",
    )
    train.add_argument("--gradient", choices=GRADIENT_MODES, help="(default aca)")
    train.add_argument(
        "--opt-disc-restart",
        nargs="?", const=True, type=_restart_at, metavar="steps",
        help="opt-disc: restart the state of the backward solve from the stored outputs (the "
        "stable variant); with 'steps', also from the state at every forward step, for a flow "
        "whose backward re-solve diverges between the outputs (default: no restart)",
    )
    train.add_argument(
        "--opt-disc-rtol", type=float, metavar="X",
        help="opt-disc: backward relative tolerance (default --rtol)",
    )
    train.add_argument(
        "--opt-disc-atol", type=float, metavar="X",
        help="opt-disc: backward absolute tolerance (default --atol)",
    )
    train.add_argument(
        "--opt-disc-seminorm",
        action="store_true",
        help="opt-disc: leave the parameter gradients out of the backward error control",
    )
    train.add_argument(
        "--opt-disc-method",
        choices=BACKWARD_METHODS,
        help="opt-disc: method of the backward solve (default: --method; rk4 after a symplectic "
        "one)",
    )
    train.add_argument(
        "--opt-disc-step-size",
        type=float,
        metavar="H",
        help="opt-disc: step of a fixed-step backward method (default --step-size)",
    )
    train.add_argument(
        "--method", choices=FIXED_STEP_METHODS + ADAPTIVE_METHODS, help="(default dopri5)"
    )
    train.add_argument("--rtol", type=float, metavar="X", help="relative tolerance (default 1e-6)")
    train.add_argument("--atol", type=float, metavar="X", help="absolute tolerance (default 1e-8)")
    train.add_argument(
        "--step-size", type=float, metavar="H",
        help="the step of a fixed-step method, which needs one (default: none)",
    )
    train.add_argument(
        "--max-steps", type=int, metavar="M",
        help="step attempts (accepted plus rejected) each solve may take, in training, "
        f"validation and the report's rollouts (default {MAX_STEPS})",
    )
    train.add_argument(
        "--max-step", type=float, metavar="H",
        help="longest step of an adaptive method in every solve (training, validation, the "
        "report's rollouts), for forcing or pulses narrower than its steps (default: no cap)",
    )
    train.add_argument(
        "--step-control",
        choices=("shared", "per-sample"),
        help="one step size per batch (default) or one per window (adaptive methods)",
    )
    train.add_argument("--dtype", choices=("float32", "float64"), help="(default: the data set's)")
    train.add_argument(
        "--device", metavar="DEVICE", help="where to train: cpu, cuda, cuda:1... (default cpu)"
    )
    train.add_argument(
        "--seed", type=int, metavar="S",
        help="seed of the network's initial weights and the window shuffling (default 0)",
    )
    train.add_argument(
        "--log", metavar="FILE",
        help="per-epoch log, .csv or .json; missing folders are created (default: none)",
    )
    train.add_argument(
        "--checkpoint-dir", metavar="DIR",
        help="folder for last.pt and best.pt, created if missing (default: none)",
    )
    train.add_argument(
        "--checkpoint-every", type=int, metavar="N",
        help="epochs between writes of last.pt (default 1)",
    )
    train.add_argument(
        "--resume", nargs="?", const=True, metavar="CKPT",
        help="continue an interrupted run from the checkpoint CKPT; given alone, from "
        "--checkpoint-dir's last.pt where there is one, as `physode simulate --resume` "
        "continues from its chunks (default: start anew)",
    )
    train.add_argument(
        "--init-from", metavar="FILE",
        help="start a new run from the model weights of a checkpoint (last.pt, best.pt) or of "
        "--out's model.pt, with the settings given now, e.g. a smaller --lr after training "
        "diverged; not with --resume (default: the model's initial weights)",
    )
    train.add_argument(
        "--threads",
        type=int,
        metavar="K",
        help="torch intra-op threads during the run (default 1: more were many times slower on "
        "a busy 2-core machine; raise it for large models)",
    )


def _add_report_options(report: argparse._ArgumentGroup) -> None:
    """``physode train``'s options of what it does after training: the rollout report and
    its outputs."""
    report.add_argument(
        "--t-end", type=float, metavar="T",
        help="roll out to this time, beyond the data (default: the data's last time)",
    )
    report.add_argument(
        "--calibrate", type=_calibration_time, nargs="?", const=True, metavar="T",
        help="with --per-trajectory: fit each test trajectory's own values of those parameters "
        "to its observations up to time T (alone: the training horizon) before rolling it out "
        "(default: roll out with the mean of the learned values)",
    )
    report.add_argument(
        "--out", "-o", metavar="DIR",
        help="folder for model.pt and report.json, created if missing (default: save nothing)",
    )
    report.add_argument(
        "--quiet", "-q", action="store_true",
        help="no progress bar or tables (the bar shows only when standard error is a terminal)",
    )


def _settings(args: argparse.Namespace) -> tuple[Any, dict[str, Any], dict[str, Any], dict]:
    """Merge --config and the command line: (data, model settings, train settings, extras).

    The model settings carry ``"given"``: for each setting set by the command line or the
    config, how the user wrote it (``--width``, ``[model] width``).
    """
    given = {k: v for k, v in vars(args).items() if k not in ("func", "command")}
    document: dict[str, Any] = {}
    if "config" in given:
        try:
            with open(given["config"], "rb") as handle:
                document = tomllib.load(handle)
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            # A binary file (the .h5 data set by mistake) fails to decode before it fails to parse.
            # A missing file says so in words, not as "[Errno 2] No such file or directory: 'x'".
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            config = given["config"]
            raise InvalidArgumentError(f"cannot read --config {config}: {reason}") from None
        unknown = sorted(set(document) - {"data", "model", "train", "report"})
        if unknown:
            raise InvalidArgumentError(
                f"{given['config']}: unknown tables or keys {unknown}; use `data`, [model], "
                "[train] and [report]"
            )
        _check_tables(given["config"], document)
        _check_config_types(given["config"], document)
        _check_config_inputs(given["config"], document, given)
    model = {**_MODEL_DEFAULTS, **document.get("model", {})}
    unknown = sorted(set(model) - set(_MODEL_KEYS))
    if unknown:
        raise InvalidArgumentError(f"unknown [model] keys {unknown}; valid: {list(_MODEL_KEYS)}")
    written = {k: f"[model] {k}" for k in document.get("model", {})}
    written.update({k: _flag(k) for k in _MODEL_KEYS if k in given})
    model.update({k: given[k] for k in _MODEL_KEYS if k in given})
    model["given"] = written
    train = _train_settings(document.get("train", {}), given)
    extras = {**document.get("report", {})}
    _check_report(extras)
    extras.update({k: given[k] for k in _REPORT_KEYS if k in given})
    extras["threads"] = given.get("threads", 1)
    extras["command_line"] = given.get("command_line")  # set by physode.cli.main
    # How the user wrote init_from, for the messages about it.
    extras["init_from_as"] = "--init-from" if "init_from" in given else "[train] init_from"
    if not is_int(extras["threads"], least=1):
        raise InvalidArgumentError(f"--threads must be positive, got {given['threads']!r}")
    problem = too_many_threads(extras["threads"])
    if problem:
        raise InvalidArgumentError(f"--threads {extras['threads']} {problem}")
    _refuse_log_among_outputs(train.get("log"), extras.get("out"), given)
    data = given.get("data", document.get("data"))
    if data is None:
        resume = given.get("resume")
        hint = ""
        if isinstance(resume, str) and resume.endswith((".h5", ".hdf5")):
            hint = f" (--resume took {resume} as its checkpoint: put DATA.h5 before --resume)"
        raise InvalidArgumentError(f"no data set: pass DATA.h5 or set `data` in --config{hint}")
    return data, model, train, extras


# The files ``--out DIR`` receives after training.
_OUT_FILES = ("model.pt", "report.json")


def _refuse_log_among_outputs(log: Any, out: Any, given: dict[str, Any]) -> None:
    """Refuse a ``log`` that names a file the ``out`` folder receives after training
    (``report.json``): the report replaced the log, silently."""
    if not (isinstance(log, str | os.PathLike) and isinstance(out, str) and out.strip()):
        return  # a bad type or an empty --out is refused with the other settings
    for name in _OUT_FILES:
        target = Path(out) / name
        if Path(log).resolve() == target.resolve():
            log_as = "--log" if "log" in given else "[train] log"
            out_as = "--out" if "out" in given else "[report] out"
            other = target.with_name("log" + Path(log).suffix)
            raise InvalidArgumentError(
                f"{log_as} {log} names the {name} that {out_as} {out} receives after training, "
                f"which would replace the log; name another file, e.g. {other}"
            )


def _check_config_inputs(config: str, document: dict[str, Any], given: dict[str, Any]) -> None:
    """Refuse a relative path of ``config`` to a file to read that is missing from the current
    folder, which such paths are read from, where the config file's folder holds it: that file
    was likely meant. A path missing from both is left to the setting's own error."""
    from physode.systems import _looks_like_a_path

    inputs = [
        ("data", "data", document.get("data")),
        ("system", "[model] system", document.get("model", {}).get("system")),
        ("init_from", "[train] init_from", document.get("train", {}).get("init_from")),
        ("resume", "[report] resume", document.get("report", {}).get("resume")),
    ]
    folder = Path(config).parent
    for key, written, value in inputs:
        if key in given or not isinstance(value, str) or not value:
            continue  # the command line's value serves, or no path (resume = true)
        if key == "system" and not _looks_like_a_path(value):
            continue  # a catalogue name
        path = Path(value)
        beside = folder / path
        if path.is_absolute() or path.exists() or folder == Path() or not beside.exists():
            continue
        raise InvalidArgumentError(
            f"{config}: {written} = {value!r}: no such file in the current folder "
            f"({os.getcwd()}), which a config file's relative paths are read from; the config "
            f"file's folder holds {str(beside)!r}: write that path (or an absolute one)"
        )


def _train_settings(table: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """The TrainConfig settings of a config's [train] ``table`` and the command line ``given``,
    the ``opt_disc_*`` ones turned into the ``physode.OptDisc`` gradient they describe."""
    keys = set(TrainConfig.__dataclass_fields__) | set(_OPT_DISC_KEYS)
    unknown = sorted(set(table) - keys)
    if unknown:
        raise InvalidArgumentError(f"unknown [train] keys {unknown}; valid: {sorted(keys)}")
    written = {k: f"[train] {k}" for k in table}
    written.update({k: _flag(k) for k in given if k in keys})
    train = {**table, **{k: v for k, v in given.items() if k in keys}}
    _set_opt_disc(train, written)
    return train


def _restart_at(value: str) -> str:
    """The value of ``--opt-disc-restart``, which only ``steps`` may follow."""
    if value != "steps":
        raise argparse.ArgumentTypeError(
            f"takes no value or 'steps', got {value!r} (put the data file before it)"
        )
    return value


def _flag(key: str) -> str:
    """The command-line option of a setting: ``aphynity_tau`` is ``--aphynity-tau``."""
    return "--model" if key == "kind" else "--" + key.replace("_", "-")


def _set_opt_disc(train: dict[str, Any], written: dict[str, str]) -> None:
    """Replace the ``opt_disc_*`` settings of ``train`` by the ``physode.OptDisc`` they build, as
    its ``gradient``; refuse them when the gradient is not ``"opt-disc"``.

    Without such settings (or with switches set to false only) the gradient stays the string
    ``"opt-disc"``, which a checkpoint stores as such.

    Examples
    --------
    >>> train = {"gradient": "opt-disc", "opt_disc_restart": True, "opt_disc_rtol": 1e-9}
    >>> _set_opt_disc(train, {})
    >>> train["gradient"]
    OptDisc(method=None, rtol=1e-09, atol=None, step_size=None, restart=True, seminorm=False)
    """
    import physode

    settings = {key: train.pop(key) for key in _OPT_DISC_KEYS if key in train}
    settings = {
        key: value for key, value in settings.items()
        if not (key in _OPT_DISC_SWITCHES and value is False)
    }
    if not settings:
        return
    names = ", ".join(written.get(key, key) for key in settings)
    options = {key.removeprefix("opt_disc_"): value for key, value in settings.items()}
    gradient = train.get("gradient", "aca")
    if gradient != "opt-disc":
        default = "" if "gradient" in train else " (the default)"
        verb, them = ("applies", "it") if len(options) == 1 else ("apply", "them")
        raise InvalidArgumentError(
            f"{names} {verb} to --gradient opt-disc only, but the gradient is {gradient!r}"
            f"{default}; drop {them} or pass --gradient opt-disc"
        )
    try:
        train["gradient"] = physode.OptDisc(**options)
    except InvalidArgumentError as exc:
        raise InvalidArgumentError(f"{names}: {exc}") from None


def _check_tables(config: str, document: dict[str, Any]) -> None:
    """Refuse a ``model``, ``train`` or ``report`` key of ``config`` that is not a table."""
    for name in ("model", "train", "report"):
        value = document.get(name, {})
        if not isinstance(value, dict):
            raise InvalidArgumentError(
                f"{config}: {name} = {value!r} must be a table of settings, written [{name}] "
                "on a line of its own with `key = value` lines below it"
            )


def _check_config_types(config: str, document: dict[str, Any]) -> None:
    """Refuse a ``data`` of ``config`` that is not a string and a ``[model] init`` that is not a
    table: the checks of the data set and of the model took them for what they are not (``init
    = "k=1"`` read as the names ``k``, ``=``, ``1``) or failed on them as an internal error."""
    problems = []
    if "data" in document and not isinstance(document["data"], str):
        problems.append(f"data = {document['data']!r} must be a string (the data set's path)")
    model = document.get("model", {})
    if "init" in model and not isinstance(model["init"], dict):
        problems.append(
            f"[model] init = {model['init']!r} must be a table of start values, e.g. "
            "init = { k = 1.0 }"
        )
    if problems:
        raise InvalidArgumentError(f"{config}: {'; '.join(problems)}")


def _check_report(table: dict[str, Any]) -> None:
    """Refuse unknown keys of a config's [report] table and values of the wrong type."""
    unknown = sorted(set(table) - set(_REPORT_KEYS))
    if unknown:
        raise InvalidArgumentError(f"unknown [report] keys {unknown}; valid: {list(_REPORT_KEYS)}")
    problems = [
        f"{key} = {value!r} must be {_REPORT_TYPES[key][1]}"
        for key, value in table.items()
        if not _REPORT_TYPES[key][0](value)
    ]
    if problems:
        raise InvalidArgumentError(f"[report]: {'; '.join(problems)}")


def _check_applicable(settings: dict[str, Any]) -> None:
    """Refuse settings the chosen model kind would ignore, naming the models they apply to.

    ``aphynity = false`` and ``separable = false`` are no settings to refuse: they ask for what
    every model does anyway.
    """
    _check_kind(settings)
    kind = settings["kind"]
    given = settings.get("given", {})
    problems = []
    for key, written in given.items():
        if key in ("aphynity", "separable") and settings[key] is False:
            continue
        kinds = _APPLIES_TO.get(key, MODEL_KINDS)
        if kind not in kinds:
            models = " and ".join([", ".join(kinds[:-1]), kinds[-1]] if kinds[:-1] else kinds)
            problems.append(f"{written} (applies to {models} models)")
        elif key in _APHYNITY_KEYS and settings["aphynity"] is not True:
            problems.append(f"{written} (applies to hybrid models with --aphynity)")
    if problems:
        raise InvalidArgumentError(
            f"settings that do not apply to {'an' if kind == 'hnn' else 'a'} {kind} model: "
            f"{', '.join(problems)}; drop them or "
            "choose the model they apply to"
        )


def _check_kind(settings: dict[str, Any]) -> None:
    """Refuse an unknown model kind, or an ``aphynity`` that is not a boolean."""
    if settings["kind"] not in MODEL_KINDS:
        raise InvalidArgumentError(
            f"model kind {settings['kind']!r}; choose one of {list(MODEL_KINDS)}"
        )
    for key in ("aphynity", "separable"):
        if not isinstance(settings.get(key, False), bool):
            raise InvalidArgumentError(f"{key} = {settings[key]!r} must be true or false")


def build_model(settings: dict[str, Any], system: Any, n_state: int) -> torch.nn.Module:
    """The model that ``physode train`` trains, from its ``[model]`` settings.

    Only the parts the kind uses are built: a physics model has no network. The weights come
    from torch's global random generator; ``physode train`` seeds it with ``--seed``.

    Parameters
    ----------
    settings : dict
        ``kind`` (physics, neural, hybrid, hnn), ``system``, ``learnable``,
        ``per_trajectory``, ``init``, ``width``, ``depth``, ``activation``, ``aphynity``,
        ``aphynity_lambda``, ``aphynity_tau``, ``aphynity_update``, ``separable``.
    system : physode.System or None
        The data set's system, used when ``settings["system"]`` is not given.
    n_state : int
        The data's state dimension.

    Raises
    ------
    physode.InvalidArgumentError
        For an unknown kind, a physics or hybrid model without a system, a physics model
        without learnable parameters, an hnn model of data whose state has an odd size, or bad
        settings of its parts.

    Examples
    --------
    >>> model = build_model({**_MODEL_DEFAULTS, "kind": "neural"}, None, 2)
    >>> type(model).__name__
    'NeuralODE'
    >>> hnn = build_model({**_MODEL_DEFAULTS, "kind": "hnn", "separable": True}, None, 4)
    >>> type(hnn).__name__, hnn.n_coordinates, hnn.separable
    ('HamiltonianNN', 2, True)
    """
    from physode.models import Aphynity, HamiltonianNN, Hybrid, NeuralODE

    _check_kind(settings)
    kind = settings["kind"]
    if kind == "hnn":
        if n_state % 2:
            names = "" if system is None else f" ({', '.join(system.state_names)})"
            raise InvalidArgumentError(
                f"an hnn model needs states [q, p] of even size, coordinates then their "
                f"momenta, but the data hold {n_state} components{names}; choose another "
                "--model (neural, hybrid, physics)"
            )
        return HamiltonianNN(
            n_state // 2, settings["width"], settings["depth"], settings["activation"],
            separable=settings.get("separable", False),
        )
    if kind != "physics":
        neural = NeuralODE(
            n_state, settings["width"], settings["depth"], settings["activation"],
            zero_output=kind == "hybrid",
        )
        if kind == "neural":
            return neural
    physics = _physics_model(settings, system)
    chosen = physics.system
    if settings["system"] and chosen.n_state != n_state:  # caught here, not at the first solve
        own = "" if system is None else f" ({system.name}, with {system.n_state})"
        raise InvalidArgumentError(
            f"--system {settings['system']}: {chosen.name} has {chosen.n_state} state "
            f"components ({', '.join(chosen.state_names)}), but the data hold {n_state}; choose "
            f"a system with the data's states, or leave --system out to use the data set's own"
            f"{own}"
        )
    if kind == "physics":
        return physics
    aphynity = None
    if settings["aphynity"]:
        aphynity = Aphynity(
            settings["aphynity_lambda"], settings["aphynity_tau"], settings["aphynity_update"]
        )
    return Hybrid(physics, neural, aphynity=aphynity)


def _physics_model(settings: dict[str, Any], system: Any) -> torch.nn.Module:
    """The physics part of a physics or hybrid model."""
    from physode.models import PhysicsModel

    kind = settings["kind"]
    physics_system = settings["system"] or system
    if physics_system is None:
        raise InvalidArgumentError(
            f"a {kind} model needs a system: pass --system NAME (the data set names none)"
        )
    learnable = settings["learnable"]
    per_trajectory = settings.get("per_trajectory") or []
    if learnable is None:
        learnable = [] if kind == "hybrid" else None
    if not learnable and not per_trajectory and kind == "physics":
        # Without a learnable parameter a physics model has nothing to train.
        raise InvalidArgumentError(
            "a physics model needs --learnable NAMES (the physical parameters to fit) or "
            "--per-trajectory NAMES (those to fit one value of per trajectory)"
        )
    return PhysicsModel(
        physics_system, learnable or [], init=settings["init"] or None,
        per_trajectory=per_trajectory,
    )


def model_record(settings: dict[str, Any], system: Any) -> dict[str, Any]:
    """The settings that built the model: those its kind uses, the system resolved to the
    data set's where none was given. ``report.json`` and checkpoints keep it; a resumed run
    must match it.

    Examples
    --------
    >>> model_record({**_MODEL_DEFAULTS, "kind": "neural"}, None)
    {'kind': 'neural', 'width': 64, 'depth': 2, 'activation': 'tanh'}
    """
    kind = settings["kind"]
    record = {
        k: settings[k] for k in _MODEL_KEYS if kind in _APPLIES_TO.get(k, MODEL_KINDS)
        and (settings["aphynity"] or k not in _APHYNITY_KEYS)
    }
    if "system" in record:
        record.update(_system_identity(record["system"], system))
        record["learnable"] = list(record["learnable"] or [])
        record["init"] = dict(record["init"] or {})
        # Kept only where set, so that the checkpoints of runs without it resume as before.
        if record["per_trajectory"]:
            record["per_trajectory"] = list(record["per_trajectory"])
        else:
            del record["per_trajectory"]
    return record


def _system_identity(given: Any, system: Any) -> dict[str, Any]:
    """The ``_SYSTEM_KEYS`` of a model record: the system ``given`` (``--system``'s value, a
    catalogue name or a file), or, where none was, the data set's ``system``.

    Examples
    --------
    >>> identity = _system_identity("harmonic_oscillator", None)
    >>> identity["system"], identity["system_name"], len(identity["system_spec_sha256"])
    ('harmonic_oscillator', 'harmonic_oscillator', 64)
    """
    from physode.data._store import sha256_text

    chosen = given or system
    if isinstance(chosen, str | Path):
        import physode.systems

        chosen = physode.systems.load(chosen)  # loaded by build_model already: no new derivation
    text = getattr(chosen, "spec_text", None)
    name = getattr(chosen, "name", None)
    return {
        "system": str(given) if given else name,
        "system_name": name,
        "system_spec_sha256": sha256_text(text) if text else None,
    }


def _system_changes(saved: dict[str, Any], mine: dict[str, Any]) -> list[str]:
    """``["system: then -> now (why)"]`` where the model records ``saved`` and ``mine`` name
    other systems, else ``[]``; records without a system (neural models) have none to compare.

    Systems are the same where their names and specification texts are: a catalogue name and a
    copy of its file are one system, and two files that give one name to different equations
    are two. A record written before physode kept the identity holds only the system as it was
    written; it is the same where that is what was given now or the system's name, or names a
    file, still there, of the same text.
    """
    if saved.get("system") is None and mine.get("system") is None:
        return []
    then, now = saved.get("system"), mine.get("system")
    if "system_spec_sha256" in saved and "system_spec_sha256" in mine:
        theirs, ours = saved.get("system_spec_sha256"), mine.get("system_spec_sha256")
        if saved.get("system_name") != mine.get("system_name"):
            return [f"system: {then!r} -> {now!r}"]
        if theirs != ours:
            short = [h[:12] if isinstance(h, str) else h for h in (theirs, ours)]
            return [
                f"system: {then!r} -> {now!r} (both named {mine.get('system_name')!r}, but of "
                f"other specifications: SHA-256 {short[0]} -> {short[1]})"
            ]
        return []
    # A record without the identity (older), or a caller's record without it: as written.
    if then in (now, mine.get("system_name")) and then is not None:
        return []
    if isinstance(then, str) and mine.get("system_spec_sha256") and _file_sha256(then) == (
        mine["system_spec_sha256"]
    ):
        return []
    return [f"system: {then!r} -> {now!r}"]


def _file_sha256(name: str) -> str | None:
    """The SHA-256 of the specification file ``name`` as :func:`physode.systems.load` reads it,
    or None where ``name`` names no readable specification file."""
    from physode.data._store import sha256_text
    from physode.symbolic._spec import read_spec_text
    from physode.systems import SUFFIX

    if not name.endswith(SUFFIX):
        return None
    try:
        return sha256_text(read_spec_text(Path(name), name))
    except (OSError, PhysodeError):
        return None


def _model_changes(
    saved: dict[str, Any], mine: dict[str, Any], keys: tuple[str, ...]
) -> list[str]:
    """:func:`physode.train._checkpoints._changes` of the model records ``saved`` and ``mine``
    over ``keys``, the system among them compared by identity (:func:`_system_changes`)."""
    from physode.train._checkpoints import _changes

    changes = _changes(saved, mine, [k for k in keys if k != "system"])
    if "system" in keys:
        changes = _system_changes(saved, mine) + changes
    return changes


def _resumed_metadata(path: Any, saved: Any, record: dict[str, Any]) -> dict[str, Any]:
    """The metadata a resume of the checkpoint ``path`` compares with its ``saved`` metadata:
    ``record``'s, with the system keys taken from ``saved`` where both name the same system
    (:func:`_system_changes`), so that a system written another way resumes. Where they name
    other systems the resume is refused here, naming the system and the other model settings
    that differ (the trainer compares the training settings)."""
    from physode.train._checkpoints import _changes

    mine = {f"model.{k}": v for k, v in record.items()}
    if not (isinstance(saved, dict) and saved):  # an older checkpoint: resumed unchecked
        return mine
    theirs = {k.removeprefix("model."): v for k, v in saved.items()}
    changes = _system_changes(theirs, record)
    if changes:
        others = [f"model.{k}" for k in {**theirs, **record} if k not in _SYSTEM_KEYS]
        pairs = ", ".join([f"model.{changes[0]}", *_changes(saved, mine, others)])
        raise InvalidArgumentError(
            f"cannot resume {path}: settings differ from the saved run ({pairs}); use the "
            "saved settings to continue the run exactly"
        )
    for key in _SYSTEM_KEYS:
        mine.pop(f"model.{key}", None)
        if f"model.{key}" in saved:
            mine[f"model.{key}"] = saved[f"model.{key}"]
    return mine


def _check_out(out: Any) -> None:
    """Refuse an ``out`` folder that is empty (an unset shell variable) or cannot be written."""
    if not (isinstance(out, str) and out.strip()):
        raise InvalidArgumentError(
            f"out={out!r} names no folder; give the folder for model.pt and report.json, "
            "e.g. --out run, or drop --out to save nothing"
        )
    writable_folder("out", out, Path(out))


def run_train(args: argparse.Namespace) -> int:
    """Run ``physode train``; return the exit status (0 success, 2 bad input).

    Errors that physode raises on purpose are printed as one line on standard error.
    """
    try:
        return _run(args)
    except PhysodeError as exc:
        if _other_process():  # process 0 says it
            return 2
        message = " ".join(str(exc).split()) or type(exc).__name__
        if isinstance(exc, InvalidArgumentError) and hasattr(args, "command_parser"):
            from physode.cli import _option_spelling  # cli imports this module

            message = _option_spelling(message, args)
        print(f"physode train: error: {message}", file=sys.stderr)
        return 2


def _other_process() -> bool:
    """Whether this is a process of a torchrun launch other than process 0."""
    return os.environ.get("WORLD_SIZE", "1") not in ("", "0", "1") and (
        os.environ.get("RANK", "0") != "0"
    )


def _rerun(config: TrainConfig, init_from_as: str = "--init-from") -> str:
    """The command that ``--resume`` is added to: a run started with ``--init-from`` resumes
    without it (``init_from_as``: how the user wrote it, ``--init-from`` or ``[train]
    init_from``)."""
    if config.init_from is None:
        return "the same command"
    return f"the same command {_without(init_from_as)},"


def _without(init_from_as: str) -> str:
    """How to leave out init_from, written as ``init_from_as`` says the user wrote it."""
    if init_from_as == "--init-from":
        return "without --init-from"
    return "without init_from in [train] of the config file"


def _init_from_named(path: Any, init_from_as: str) -> str:
    """The init_from setting as the user wrote it: ``--init-from PATH`` or ``[train] init_from =
    "PATH"``."""
    if init_from_as == "--init-from":
        return f"--init-from {path}"
    return f'{init_from_as} = "{path}"'


def _resume_hint(trainer: Any, config: TrainConfig, init_from_as: str = "--init-from") -> str:
    """Where an interrupted ``physode train`` can continue from, if it saved anything. The
    trainer went back to its last completed epoch and, with ``--checkpoint-dir``, saved it;
    ``config``: the command's settings, ``init_from_as``: how it wrote init_from."""
    during = f" during epoch {trainer.epoch + 1}"
    if trainer.last_checkpoint is None:
        if trainer.config.checkpoint_dir is None:
            return f"{during}; nothing was saved (--checkpoint-dir keeps a checkpoint to resume)"
        if trainer.epoch > 0:  # going back could not write last.pt (a full disk)
            return f"{during}; the run after epoch {trainer.epoch} could not be saved"
        return f"{during}, before any epoch ended; nothing was saved"
    path, epoch = trainer.last_checkpoint
    return (
        f"{during}; {path} holds the run after epoch {epoch}: rerun "
        f"{_rerun(config, init_from_as)} with "
        f"--resume {_typed(path)} to continue it"
    )


def _typed(path: Any) -> str:
    """``path`` as a command line takes it: quoted where it holds a space or another character
    the shell reads, so that the command a message gives can be pasted as it is."""
    return shlex.quote(str(path))


def _stopped_message(
    exc: TrainingError, trainer: Any, config: TrainConfig, init_from_as: str = "--init-from"
) -> str:
    """One paragraph on a run that stopped at a batch it could not use: where and why, what was
    saved, how to go on (in the command's options; ``config``: the command's settings,
    ``init_from_as``: how it wrote init_from)."""
    lr = trainer.optimizer.param_groups[0]["lr"]
    if exc.checkpoint is not None:
        skip = (
            "" if trainer.config.on_failed_batch == "skip"
            else f"rerun {_rerun(config, init_from_as)} with --resume {_typed(exc.checkpoint)} "
            "--on-failed-batch skip "
            "to leave such batches out, or "
        )
        saved = (
            f"{exc.checkpoint} holds the run after epoch {trainer.epoch}, its weights all finite: "
            f"{skip}start a new run from its weights with other settings, e.g. `physode train "
            f"... --init-from {_typed(exc.checkpoint)} --lr {lr / 10:g}`, or start anew"
        )
    elif trainer.epoch == 0:
        saved = "No epoch was completed, so nothing was saved; start anew with other settings"
    elif getattr(exc, "unsaved", None) is not None:  # the checkpoint could not be written
        saved = f"Nothing was saved ({exc.unsaved}); start anew with other settings"
    else:  # with --checkpoint-dir, the trainer saved the last completed epoch
        saved = (
            "Nothing was saved (--checkpoint-dir keeps the last completed epoch to resume "
            "from); start anew with other settings"
        )
    tips = "a smaller --lr, --grad-clip (Adam), other --rtol/--atol or --method, another --gradient"
    if getattr(exc, "max_steps_reached", False):
        tips = f"a larger --max-steps (now {trainer.config.max_steps}), {tips}"
    if trainer.config.on_failed_batch != "skip":
        tips += ", --on-failed-batch skip"
    return f"{exc.summary}. {saved} ({tips}); --resume keeps the saved run's other settings"


def _run(args: argparse.Namespace) -> int:
    data, model_settings, train_settings, extras = _settings(args)
    # Under torchrun (WORLD_SIZE > 1) the processes train one model together, each on its
    # share of every batch; process 0 alone writes and speaks.
    started = not (torch.distributed.is_available() and torch.distributed.is_initialized())
    group, device = _distributed.start_from_environment(train_settings.get("device"))
    started = started and group is not None
    if device is not None:
        train_settings["device"] = device
    status = None
    try:
        with contextlib.ExitStack() as stack:
            if group is not None and group.rank != 0:
                extras = {**extras, "quiet": True, "out": None, "rank": group.rank}
                silent = stack.enter_context(open(os.devnull, "w"))
                stack.enter_context(contextlib.redirect_stderr(silent))
            # The run seeds torch's global generator (the network's initial weights) with
            # --seed in a fork of it, so that a caller's generator is left as it was.
            stack.enter_context(torch_threads(extras["threads"]))
            stack.enter_context(torch.random.fork_rng(devices=[]))
            status = _train_and_report(data, model_settings, train_settings, extras)
            return status
    finally:
        if started:
            _distributed.leave(finished=status is not None)


def _data_system(data: Any) -> tuple[Any, int]:
    """The system and the state size of the data set at ``data``, from what its file opens
    with: its states are read once, by the trainer (read here too, a training split of N x P x
    n_state values was held twice while the model trained)."""
    import physode.data

    try:
        stored = physode.data.load(data)
    except DataFormatError as exc:
        if _is_other_file(data):
            raise DataFormatError(
                f"{exc}; physode train reads data sets written by physode simulate: to train "
                "on measurements in a CSV file, read them in Python with "
                "physode.data.load_csv(path) and pass them to physode.train.Trainer (see "
                'docs/data.md, "Real data")'
            ) from None
        raise
    with stored:
        return stored.system, stored.states.shape[-1]


def _is_other_file(path: Any) -> bool:
    """Whether ``path`` is a readable file that is not HDF5 (a CSV file, say)."""
    try:
        return Path(path).is_file() and not has_hdf5_signature(path)
    except OSError:
        return False


def _train_and_report(
    data: Any, model_settings: dict[str, Any], train_settings: dict[str, Any], extras: dict
) -> int:
    """Build, train, save, evaluate and report as the merged settings say; return the exit
    status. The model is saved before the evaluation, which can fail, and the printing, which
    can meet a closed pipe."""
    from physode.train import Trainer
    from physode.train.evaluate import calibration_time, rollout_times

    quiet = extras.get("quiet", False)
    train_settings.setdefault("progress", progress_wanted(quiet))
    config = TrainConfig.from_mapping(train_settings)
    init_from_as = extras.get("init_from_as", "--init-from")
    if config.init_from is not None and extras.get("resume", False) is not False:
        raise InvalidArgumentError(
            f"{_init_from_named(config.init_from, init_from_as)} starts a new run from a file's "
            "weights, and --resume continues a saved run with its own weights, optimiser and "
            f"history; use one: to continue a run that {init_from_as} started, rerun its "
            f"command {_without(init_from_as)}, with --resume"
        )
    resume = _checkpoint_to_resume(extras.get("resume"), config)
    _check_applicable(model_settings)
    said: set = set()  # the warnings said so far: training and the rollout give some alike
    system, n_state = _data_system(data)
    torch.default_generator.manual_seed(config.seed)  # CPU only: the model is built there
    with _warnings_as_lines(said):  # a --learnable parameter the equations do not contain
        model = build_model(model_settings, system, n_state)
    record = model_record(model_settings, system)
    weights = None
    if config.init_from is not None:
        # After build_model has checked --init's names and values.
        _refuse_init_with_init_from(model_settings, config.init_from, init_from_as)
        # Read once: for the checks here and for the trainer.
        weights = _read_init_from(Path(config.init_from), record, init_from_as)
    with _warnings_as_lines(said):
        trainer = Trainer(model, data, replace(config, init_from=None))
    if weights is not None:
        trainer._start_from(Path(config.init_from), weights)
        if not quiet:
            print(f"physode train: {trainer.warm_start}", file=sys.stderr)
    trainer.metadata = {f"model.{k}": v for k, v in record.items()}
    # What would fail after training fails before it: a bad --t-end or --out, no test data.
    rollout_times(trainer.train_data.t, extras.get("t_end"))
    if extras.get("out") is not None:
        _check_out(extras["out"])
    held_out = trainer.held_out_data()
    if held_out is None:
        raise InvalidArgumentError(
            f"{data} has no usable trajectories in its 'test' or 'val' split to evaluate the "
            "trained model on; simulate it with a split that holds some out, e.g. "
            "--split 0.8,0.1,0.1"
        )
    calibrate = extras.get("calibrate")
    calibration_time(model, held_out.t, calibrate, float(trainer.train_data.t[-1]))
    del held_out  # not held while training: the evaluation reads the split again
    with contextlib.ExitStack() as held:
        if resume is not None:
            # Under the checkpoint folder's lock, held through fit: no other run can read the
            # checkpoint meanwhile, nor replace it before this one trains on.
            _resume_run(trainer, resume, extras.get("resume") is True, record, held)
        try:
            with _warnings_as_lines(said):
                result = trainer.fit()
        except KeyboardInterrupt as exc:
            how, status = stopped(exc)
            hint = _resume_hint(trainer, config, init_from_as)
            print(f"physode train: {how}{hint}", file=sys.stderr)
            return status
        except TrainingError as exc:
            if extras.get("rank", 0) != 0:  # process 0 says it
                return 2
            message = _stopped_message(exc, trainer, config, init_from_as)
            print(f"physode train: error: {message}", file=sys.stderr)
            return 2
    if extras.get("rank", 0) != 0:  # process 0 saves, evaluates and reports
        return 0
    out = None if extras.get("out") is None else Path(extras["out"])
    if out is not None:
        # Saved from the CPU, so the weights load on a machine without the training device.
        weights = {k: v.cpu() for k, v in model.state_dict().items()}
        save_atomically(out / "model.pt", weights, "model")
        # An earlier run's report.json goes once the new model.pt is in place: beside it, it
        # would describe another model (its settings, which --init-from compares), were the
        # rollout to fail or be interrupted before this run's report replaces it. Where the
        # model could not be written (a full disk), both of the earlier run's files stay.
        (out / "report.json").unlink(missing_ok=True)
    try:
        with _warnings_as_lines(said):
            report = _evaluate(trainer, extras.get("t_end"), out, calibrate)
        if out is not None:
            _write_report(out, data, trainer, result, record, report, extras)
    except KeyboardInterrupt as exc:
        # Not the bare "interrupted" of physode.cli.main: the trained weights may be kept.
        how, status = stopped(exc)
        print(f"physode train: {how} after training, before the rollout report was done; "
              f"{_kept(trainer, out)}", file=sys.stderr)  # fmt: skip
        return status
    if not quiet:
        _print_summary(result, report)
    return 0


def _write_report(
    out: Path, data: Any, trainer: Any, result: Any, record: dict, report: Any, extras: dict
) -> None:
    """Write ``out/report.json``: the run, its data, software, settings, results and rollout."""
    from physode.data import simulation

    summary = {
        "command_line": extras.get("command_line"),
        "data": _data_record(data, trainer),
        "software": simulation._running_software(),
        "config": trainer.config.to_dict(),  # init_from: where the weights came from
        "warm_start": trainer.warm_start,  # and what they started
        "model": record,
        "epochs": len(result.history),
        "best_epoch": result.best_epoch,
        "best_val_loss": result.best_val_loss,
        "stopped_early": result.stopped_early,
        "train_seconds": result.train_seconds,
        "final_loss": result.final_loss,
        "skipped_batches": _skipped(result.history),
        "physical_parameters": result.physical_parameters,
        "per_trajectory_parameters": result.per_trajectory_parameters,
        "rollout": report.to_dict(),
    }
    text = json.dumps(json_ready(summary), indent=1, default=str)
    write_atomically(out / "report.json", lambda tmp: tmp.write_text(text), "report")


def _data_record(data: Any, trainer: Any) -> dict[str, str]:
    """What ``report.json`` says of the data trained on: the path as given, and the training and
    validation arrays each as its shape, dtype and a hash (as a checkpoint keeps them), which
    tell the data set that trained the model from another one written at the same path."""
    return {"path": str(data), **trainer._data_described()}


def _refuse_init_with_init_from(settings: dict[str, Any], path: Any, init_from_as: str) -> None:
    """Refuse ``--init`` beside ``--init-from path``: the file's weights hold every physical
    parameter's value, learned or not, and loading them replaces every start value ``--init``
    sets (``init_from_as``: how the user wrote init_from)."""
    init = settings.get("init") or {}
    if not init:
        return
    written = settings.get("given", {}).get("init", "--init")
    values = ",".join(f"{name}={value:g}" for name, value in init.items())
    shown = f"{written} {values}" if written == "--init" else f"{written} ({values})"
    leave = "--init" if written == "--init" else written
    raise InvalidArgumentError(
        f"{shown} has no effect with {_init_from_named(path, init_from_as)}: the file holds "
        f"every physical parameter's value, learned or not, and they replace {leave}'s start "
        f"values; leave {leave} out, or leave out {init_from_as} to start from {leave}'s values"
    )


def _read_init_from(path: Path, record: dict[str, Any], init_from_as: str) -> dict[str, Any]:
    """The weights of ``--init-from path`` (``init_from_as``: how the user wrote it), read once,
    after :func:`_check_init_from` has compared the settings of the model they come from with
    ``record``, the model settings now."""
    from physode.train._checkpoints import _WEIGHTS_FILE, _torch_load, _weights_in

    if not path.is_file():
        raise InvalidArgumentError(f"{_init_from_named(path, init_from_as)}: no such file")
    state = _torch_load(path, init_from_as, _WEIGHTS_FILE)
    _check_init_from(path, state, record, init_from_as)
    return _weights_in(path, state)


def _check_init_from(
    path: Path, state: Any, record: dict[str, Any], init_from_as: str = "--init-from"
) -> None:
    """Refuse ``--init-from path`` (``state``: what it holds) where its model was built with
    other settings of ``_ARCHITECTURE_KEYS`` than ``record`` (the model settings now), naming
    each. A checkpoint keeps them in its metadata; beside a ``model.pt``, its run's
    ``report.json`` does. Where neither says, :meth:`Trainer.load_weights` judges the weights
    by their names and shapes.

    Between a physics model and a hybrid only the physics part moves, so only the settings that
    shape it count: the system and the parameters learned per trajectory."""
    from physode.train._checkpoints import CHECKPOINT_FORMAT

    saved = None
    if isinstance(state, dict) and state.get("format") == CHECKPOINT_FORMAT:
        metadata = state.get("metadata")
        if isinstance(metadata, dict) and metadata:
            saved = {k.removeprefix("model."): v for k, v in metadata.items()}
    else:
        try:
            saved = json.loads((path.parent / "report.json").read_text())["model"]
        except (OSError, ValueError, KeyError, TypeError):
            saved = None
    if not isinstance(saved, dict):
        return
    kinds = {saved.get("kind"), record.get("kind")}
    if kinds == {"physics", "hybrid"}:
        changes = _model_changes(saved, record, _PHYSICS_PART_KEYS)
        if changes:
            raise InvalidArgumentError(
                f"{_init_from_named(path, init_from_as)}: its physics part was trained in a "
                f"{saved['kind']} model built with other settings ({', '.join(changes)}); it "
                f"starts the physics part of a {record['kind']} model of the same --system "
                "and --per-trajectory only"
            )
        return
    changes = _model_changes(saved, record, _ARCHITECTURE_KEYS)
    if changes:
        raise InvalidArgumentError(
            f"{_init_from_named(path, init_from_as)}: its weights were trained in a model built "
            f"with other settings ({', '.join(changes)}); they fit that model only: build it "
            "again (the same --model, --system, --per-trajectory, --width, --depth, "
            "--activation and --separable)"
        )


def _checkpoint_to_resume(resume: Any, config: TrainConfig) -> Any:
    """The checkpoint that ``--resume`` continues from, or None to start anew.

    ``--resume CKPT`` names it. ``--resume`` alone (``resume = true``) means, as for
    ``physode simulate``, "continue what the interrupted run of this command kept, if anything":
    the ``last.pt`` of ``--checkpoint-dir``; :func:`_resume_run` starts anew where there is
    none.
    """
    if resume is not True:
        return None if resume is False else resume
    if config.checkpoint_dir is None:
        raise InvalidArgumentError(
            "--resume without a checkpoint file continues from the last.pt of --checkpoint-dir, "
            "and none is set; pass the interrupted run's --checkpoint-dir DIR, or --resume CKPT"
        )
    return Path(config.checkpoint_dir) / "last.pt"


def _resume_run(
    trainer: Any, resume: Any, if_any: bool, record: dict[str, Any], held: contextlib.ExitStack
) -> None:
    """Take the lock of ``trainer``'s checkpoint folder into ``held`` (to be held through
    ``fit``), then load the checkpoint ``resume`` into ``trainer``; with ``if_any`` (``--resume``
    alone) a missing one means a new run. Every process of a torchrun launch reads it; where
    one cannot, all stop."""
    from physode.train._checkpoints import _read_checkpoint

    with _distributed.together(trainer._group, "load_checkpoint", f"could not resume {resume}"):
        held.enter_context(trainer._folders_claimed(agreed=False))
        if if_any and not Path(resume).is_file():
            return
        state = _read_checkpoint(Path(resume))  # read once, for the metadata and the resume
        # The checkpoint's system is compared by identity here, the other settings by the
        # trainer.
        trainer.metadata = _resumed_metadata(resume, state.get("metadata"), record)
        trainer._resume(Path(resume), state)


def _warnings_as_lines(said: set):
    """:func:`physode._terminal.warnings_as_lines` for this command; ``said``: the run's lines
    so far, each said once in the run."""
    return warnings_as_lines("physode train", said)


def _evaluate(trainer: Any, t_end: float | None, out: Path | None, calibrate: Any = None) -> Any:
    """The trained model's rollout report (its test trajectories calibrated first where
    ``calibrate`` asks); a failed rollout is refused with what was kept and what to try (the
    solver's own advice names settings that ``physode train`` does not have)."""
    try:
        return trainer.evaluate(t_end=t_end, calibrate=calibrate)
    except PhysodeError as exc:
        kept = _kept(trainer, out)
        until = "over the data's times" if t_end is None else f"to t_end={t_end:g}"
        cause = str(exc).rstrip(".")
        if isinstance(exc, SolverError):  # its first sentence; the rest advises solver settings
            cause = cause.split(". ")[0]
        advice = (
            "The trained model may not stay bounded that long: try a shorter --t-end, or train "
            "it further or more gently (more --epochs, a smaller --lr)"
        )
        if isinstance(exc, SolverError) and exc.status == Status.MAX_STEPS:
            advice += (
                f", or, where it needs more steps than that, a larger --max-steps (now "
                f"{trainer.config.max_steps})"
            )
        if str(exc).startswith("calibrating"):
            advice = (
                "The calibration's search may have reached values the model cannot solve with: "
                "try an earlier --calibrate T, or leave --calibrate out"
            )
        raise PhysodeError(
            f"training finished and {kept}, but the rollout of the test trajectories {until} "
            f"failed: {cause}. {advice}"
        ) from exc


def _kept(trainer: Any, out: Path | None) -> str:
    """What a run that trained keeps when its rollout fails or is interrupted."""
    if out is not None:
        return f"{out / 'model.pt'} was saved"
    if trainer.last_checkpoint is not None:
        return f"{trainer.last_checkpoint[0]} holds the run (--out DIR saves model.pt)"
    return "nothing was saved (--out DIR saves model.pt)"


def _skipped(history: list[dict[str, Any]]) -> int:
    """The batches that ``--on-failed-batch skip`` left out, in all the run's epochs."""
    return sum(row.get("skipped_batches", 0) for row in history)


def _print_summary(result: Any, report: Any) -> None:
    """Print the training summary, the learned parameters and the rollout report."""
    last = result.history[-1]
    val = "none" if last["val_loss"] is None else f"{last['val_loss']:.4e}"
    epochs = counted(len(result.history), "epoch", "epochs")
    print(f"trained {epochs} in {result.train_seconds:.1f} s; "
          f"final loss {last['loss']:.4e}, validation loss {val}")
    skipped = _skipped(result.history)
    if skipped:
        epochs = sum(1 for row in result.history if row.get("skipped_batches"))
        print(f"skipped {skipped} failed {'batch' if skipped == 1 else 'batches'} in {epochs} "
              f"{'epoch' if epochs == 1 else 'epochs'} (--on-failed-batch skip; the log's "
              "skipped_batches says which)")
    if result.physical_parameters:
        learned = ", ".join(f"{k} = {v:.6g}" for k, v in result.physical_parameters.items())
        print(f"learned parameters: {learned}")
    print(report)
