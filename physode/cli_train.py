"""The ``physode train`` subcommand: build a model, train it on a data set, report.

The ``physode`` command (``physode/cli.py``) registers it with :func:`add_train_parser`; the
parser's ``func`` default is :func:`run_train`, which returns the exit status.
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from pathlib import Path
from typing import Any

import torch

from physode._checks import is_int
from physode._errors import InvalidArgumentError, PhysodeError
from physode._files import writable_folder, write_atomically
from physode._threads import torch_threads
from physode.train.config import (
    ADAPTIVE_METHODS,
    FIXED_STEP_METHODS,
    GRADIENT_MODES,
    LR_SCHEDULES,
    OPTIMIZERS,
    TrainConfig,
)

MODEL_KINDS = ("physics", "neural", "hybrid")
_MODEL_KEYS = (
    "kind", "system", "learnable", "init", "width", "depth", "activation", "aphynity",
    "aphynity_lambda", "aphynity_tau",
)
_REPORT_KEYS = ("t_end", "out", "quiet", "resume")
_MODEL_DEFAULTS: dict[str, Any] = {
    "kind": "hybrid", "system": None, "learnable": None, "init": {}, "width": 64, "depth": 2,
    "activation": "tanh", "aphynity": False, "aphynity_lambda": 1.0, "aphynity_tau": 1.0,
}

EXAMPLES = """examples:
  physode train three_body.h5 --model physics --learnable m1,m2,m3 --epochs 50
  physode train pendulum.h5 --model hybrid --system pendulum --learnable g --aphynity \\
      --window 10 --gradient disc-opt --method rk4 --step-size 0.05 --log log.csv
  physode train --config run.toml --resume out/checkpoints/last.pt
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
        help="train a physics, neural or hybrid model on a data set",
        description="Train a model on an HDF5 data set written by `physode simulate`, with\n"
        "the data set's stored train/val/test split; log every epoch, checkpoint, and\n"
        "report rollout errors and conservation on the test split. Command-line options\n"
        "override the values of --config.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=s,
    )
    parser.add_argument("data", nargs="?", help="the .h5 data set (or `data` in --config)")
    parser.add_argument(
        "--config", help="a TOML file with `data` and [model], [train] and [report] tables"
    )
    model = parser.add_argument_group("model")
    model.add_argument("--model", dest="kind", choices=MODEL_KINDS, help="default: hybrid")
    model.add_argument(
        "--system", help="physics of the model: catalogue name or file (default: the data set's)"
    )
    model.add_argument(
        "--learnable", type=_csv_list, help="comma-separated physical parameters to learn"
    )
    model.add_argument("--init", type=_assignments, help="start values, e.g. m1=1.0,m2=1.0")
    model.add_argument("--width", type=int, help="hidden units of the network (default 64)")
    model.add_argument("--depth", type=int, help="hidden layers of the network (default 2)")
    model.add_argument("--activation", help="tanh, relu, softplus, elu, gelu, silu, sigmoid")
    model.add_argument(
        "--aphynity", action="store_true", help="hybrid: penalise the residual's norm (APHYNITY)"
    )
    model.add_argument("--aphynity-lambda", type=float, help="starting weight λ (default 1)")
    model.add_argument("--aphynity-tau", type=float, help="λ ← λ + τ·L per batch (default 1)")

    train = parser.add_argument_group("training")
    train.add_argument("--epochs", type=int, help="passes over the training windows (default 100)")
    train.add_argument("--batch-size", type=int, help="windows solved together (default 16)")
    train.add_argument("--window", type=int, help="time points per window (default: whole)")
    train.add_argument(
        "--window-stride", type=int, help="index distance between window starts (default 1)"
    )
    train.add_argument(
        "--batches-per-epoch", type=int, help="stop an epoch after this many batches (default: all)"
    )
    train.add_argument("--optimizer", choices=OPTIMIZERS, help="default: adam")
    train.add_argument("--lr", type=float, help="learning rate (default 0.01)")
    train.add_argument("--weight-decay", type=float, help="Adam weight decay (default 0)")
    train.add_argument("--lr-schedule", choices=LR_SCHEDULES, help="default: constant")
    train.add_argument("--lr-min", type=float, help="cosine: final learning rate (default 0)")
    train.add_argument(
        "--lr-gamma", type=float, help="step, exponential, plateau: lr factor (default 0.5)"
    )
    train.add_argument(
        "--lr-step", type=int, help="step: epochs per step; plateau: patience (default 10)"
    )
    train.add_argument(
        "--grad-clip", type=float, help="largest gradient norm (default: no clipping)"
    )
    train.add_argument("--time-limit", type=float, help="stop after this many seconds")
    train.add_argument("--patience", type=int, help="early stopping on the validation loss")
    train.add_argument("--min-delta", type=float, help="improvement --patience counts (default 0)")
    train.add_argument(
        "--noisy",
        action="store_true",
        help="train and validate on the data set's noisy states (simulated with --noise); the "
        "report compares with the clean ones",
    )
    train.add_argument("--observe", type=_int_list, help="state indices in the loss, e.g. 0,1,2")
    train.add_argument("--gradient", choices=GRADIENT_MODES, help="default: aca")
    train.add_argument(
        "--method", choices=FIXED_STEP_METHODS + ADAPTIVE_METHODS, help="default: dopri5"
    )
    train.add_argument("--rtol", type=float, help="relative tolerance (default 1e-6)")
    train.add_argument("--atol", type=float, help="absolute tolerance (default 1e-8)")
    train.add_argument("--step-size", type=float, help="needed by fixed-step methods")
    train.add_argument(
        "--step-control",
        choices=("shared", "per-sample"),
        help="one step size per batch (default) or one per window (adaptive methods)",
    )
    train.add_argument("--dtype", choices=("float32", "float64"), help="default: the data set's")
    train.add_argument("--device", help="where to train: cpu (default), cuda, cuda:1...")
    train.add_argument("--seed", type=int, help="seed of the window shuffling (default 0)")
    train.add_argument("--log", help="per-epoch log, .csv or .json")
    train.add_argument("--checkpoint-dir", help="folder for last.pt and best.pt")
    train.add_argument(
        "--checkpoint-every", type=int, help="epochs between writes of last.pt (default 1)"
    )
    train.add_argument("--resume", help="continue the run saved in this checkpoint")
    train.add_argument(
        "--threads",
        type=int,
        metavar="K",
        help="torch intra-op threads during the run (default 1: more were many times slower on "
        "a busy 2-core machine; raise it for large models)",
    )

    report = parser.add_argument_group("after training")
    report.add_argument("--t-end", type=float, help="roll out to this time (beyond the data)")
    report.add_argument("--out", help="folder for model.pt and report.json")
    report.add_argument("--quiet", "-q", action="store_true", help="no progress bar or tables")
    parser.set_defaults(func=run_train)
    return parser


def _settings(args: argparse.Namespace) -> tuple[Any, dict[str, Any], dict[str, Any], dict]:
    """Merge --config and the command line: (data, model settings, train settings, extras)."""
    given = {k: v for k, v in vars(args).items() if k not in ("func", "command")}
    document: dict[str, Any] = {}
    if "config" in given:
        try:
            with open(given["config"], "rb") as handle:
                document = tomllib.load(handle)
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            # A binary file (the .h5 data set by mistake) fails to decode before it fails to parse.
            raise InvalidArgumentError(f"cannot read --config {given['config']}: {exc}") from None
        unknown = sorted(set(document) - {"data", "model", "train", "report"})
        if unknown:
            raise InvalidArgumentError(
                f"{given['config']}: unknown tables or keys {unknown}; use `data`, [model], "
                "[train] and [report]"
            )
        _check_tables(given["config"], document)
    model = {**_MODEL_DEFAULTS, **document.get("model", {})}
    unknown = sorted(set(model) - set(_MODEL_KEYS))
    if unknown:
        raise InvalidArgumentError(f"unknown [model] keys {unknown}; valid: {list(_MODEL_KEYS)}")
    model.update({k: given[k] for k in _MODEL_KEYS if k in given})
    train = dict(document.get("train", {}))
    train_keys = set(TrainConfig.__dataclass_fields__)
    train.update({k: v for k, v in given.items() if k in train_keys})
    extras = {**document.get("report", {})}
    unknown = sorted(set(extras) - set(_REPORT_KEYS))
    if unknown:
        raise InvalidArgumentError(f"unknown [report] keys {unknown}; valid: {list(_REPORT_KEYS)}")
    extras.update({k: given[k] for k in ("t_end", "out", "quiet", "resume") if k in given})
    extras["threads"] = given.get("threads", 1)
    if not is_int(extras["threads"], least=1):
        raise InvalidArgumentError(f"--threads must be positive, got {given['threads']!r}")
    data = given.get("data", document.get("data"))
    if data is None:
        raise InvalidArgumentError("no data set: pass DATA.h5 or set `data` in --config")
    return data, model, train, extras


def _check_tables(config: str, document: dict[str, Any]) -> None:
    """Refuse a ``model``, ``train`` or ``report`` key of ``config`` that is not a table."""
    for name in ("model", "train", "report"):
        value = document.get(name, {})
        if not isinstance(value, dict):
            raise InvalidArgumentError(
                f"{config}: {name} = {value!r} must be a table of settings, written [{name}] "
                "on a line of its own with `key = value` lines below it"
            )


def build_model(settings: dict[str, Any], system: Any, n_state: int) -> torch.nn.Module:
    """The model that ``physode train`` trains, from its ``[model]`` settings.

    Parameters
    ----------
    settings : dict
        ``kind`` (physics, neural, hybrid), ``system``, ``learnable``, ``init``, ``width``,
        ``depth``, ``activation``, ``aphynity``, ``aphynity_lambda``, ``aphynity_tau``.
    system : physode.System or None
        The data set's system, used when ``settings["system"]`` is not given.
    n_state : int
        The data's state dimension.

    Examples
    --------
    >>> model = build_model({**_MODEL_DEFAULTS, "kind": "neural"}, None, 2)
    >>> type(model).__name__
    'NeuralODE'
    """
    from physode.models import Aphynity, Hybrid, NeuralODE, PhysicsModel

    kind = settings["kind"]
    if kind not in MODEL_KINDS:
        raise InvalidArgumentError(f"model kind {kind!r}; choose one of {list(MODEL_KINDS)}")
    neural = NeuralODE(
        n_state, settings["width"], settings["depth"], settings["activation"],
        zero_output=kind == "hybrid",
    )
    if kind == "neural":
        return neural
    physics_system = settings["system"] or system
    if physics_system is None:
        raise InvalidArgumentError(
            f"a {kind} model needs a system: pass --system NAME (the data set names none)"
        )
    learnable = settings["learnable"]
    if learnable is None:
        learnable = [] if kind == "hybrid" else None
    if not learnable and kind == "physics":
        # Without a learnable parameter a physics model has nothing to train.
        raise InvalidArgumentError(
            "a physics model needs --learnable NAMES (the physical parameters to fit)"
        )
    physics = PhysicsModel(physics_system, learnable, init=settings["init"] or None)
    if kind == "physics":
        return physics
    aphynity = None
    if settings["aphynity"]:
        aphynity = Aphynity(settings["aphynity_lambda"], settings["aphynity_tau"])
    return Hybrid(physics, neural, aphynity=aphynity)


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
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"physode train: error: {message}", file=sys.stderr)
        return 2


def _resume_hint(trainer: Any) -> str:
    """Where an interrupted ``physode train`` can continue from, if it saved anything."""
    during = f" during epoch {trainer.epoch + 1}"
    if trainer.last_checkpoint is None:
        if trainer.config.checkpoint_dir is None:
            return f"{during}; nothing was saved (--checkpoint-dir keeps a checkpoint to resume)"
        return f"{during}, before its first checkpoint; nothing was saved"
    path, epoch = trainer.last_checkpoint
    return (
        f"{during}; {path} holds the run after epoch {epoch}: rerun the same command with "
        f"--resume {path} to continue it"
    )


def _run(args: argparse.Namespace) -> int:
    data, model_settings, train_settings, extras = _settings(args)
    with torch_threads(extras["threads"]):
        return _train_and_report(data, model_settings, train_settings, extras)


def _train_and_report(
    data: Any, model_settings: dict[str, Any], train_settings: dict[str, Any], extras: dict
) -> int:
    """Build, train, evaluate and save as the merged settings say; return the exit status."""
    from physode.train import Trainer, as_trajectories
    from physode.train.evaluate import rollout_times

    quiet = bool(extras.get("quiet", False))
    train_settings.setdefault("progress", not quiet)
    config = TrainConfig.from_mapping(train_settings)
    stored = as_trajectories(data, split="train")
    model = build_model(model_settings, stored.system, stored.n_state)
    trainer = Trainer(model, data, config)
    # What would fail after training fails before it: a bad --t-end or --out, no test data.
    rollout_times(trainer.train_data.t, extras.get("t_end"))
    if extras.get("out") is not None:
        _check_out(extras["out"])
    if trainer.held_out_data() is None:
        raise InvalidArgumentError(
            f"{data} has no usable trajectories in its 'test' or 'val' split to evaluate the "
            "trained model on; simulate it with a split that holds some out, e.g. "
            "--split 0.8,0.1,0.1"
        )
    if extras.get("resume"):
        trainer.load_checkpoint(extras["resume"])
    try:
        result = trainer.fit()
    except KeyboardInterrupt:
        print(f"physode train: interrupted{_resume_hint(trainer)}", file=sys.stderr)
        return 130
    report = trainer.evaluate(t_end=extras.get("t_end"))
    if not quiet:
        last = result.history[-1]
        val = "none" if last["val_loss"] is None else f"{last['val_loss']:.4e}"
        print(f"trained {len(result.history)} epochs in {result.train_seconds:.1f} s; "
              f"final loss {last['loss']:.4e}, validation loss {val}")
        if result.physical_parameters:
            learned = ", ".join(f"{k} = {v:.6g}" for k, v in result.physical_parameters.items())
            print(f"learned parameters: {learned}")
        print(report)
    if extras.get("out") is not None:
        out = Path(extras["out"])
        # Saved from the CPU, so the weights load on a machine without the training device.
        weights = {k: v.cpu() for k, v in model.state_dict().items()}
        write_atomically(out / "model.pt", lambda tmp: torch.save(weights, tmp), "model")
        summary = {
            "config": config.to_dict(),
            "model": model_settings,
            "epochs": len(result.history),
            "best_epoch": result.best_epoch,
            "best_val_loss": result.best_val_loss,
            "stopped_early": result.stopped_early,
            "train_seconds": result.train_seconds,
            "final_loss": result.final_loss,
            "physical_parameters": result.physical_parameters,
            "rollout": report.to_dict(),
        }
        text = json.dumps(summary, indent=1, default=str)
        write_atomically(out / "report.json", lambda tmp: tmp.write_text(text), "report")
    return 0


