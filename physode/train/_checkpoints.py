"""Checkpoint files: their format, reading and checking them and the weights they hold, and
what a resume compares with the saved run."""

from __future__ import annotations

import ast
import pickle
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from physode._errors import InvalidArgumentError
from physode.gradients import GRADIENT_NAMES, GradientMode
from physode.train._rows import per_trajectory_names
from physode.train._wording import _listed

CHECKPOINT_FORMAT = "physode-checkpoint"
CHECKPOINT_VERSION = 1
# Settings that must match for a resumed run to continue the interrupted one exactly.
_RESUME_KEYS = (
    "batch_size", "val_batch_size", "window", "window_stride", "batches_per_epoch", "optimizer",
    "lr", "weight_decay", "lr_schedule", "lr_min", "lr_gamma", "lr_step", "grad_clip",
    "val_fraction", "noisy",
    "observe", "method", "rtol", "atol", "step_size", "max_step", "gradient", "step_control",
    "dtype", "seed",
)


# What a checkpoint holds besides its format and version (Trainer.state_dict).
_CHECKPOINT_KEYS = (
    "epoch", "model", "optimizer", "scheduler", "generator", "torch_rng", "history",
    "best_val_loss", "best_epoch", "best_state", "bad_epochs", "stopped_early", "train_seconds",
    "loss_scale", "config",
)


def _cuda_rng_states() -> list[torch.Tensor] | None:
    """The random states of the CUDA devices once this process uses CUDA (dropout on a GPU draws
    from them), else ``None``: reading them would start CUDA in a run that has no use for it."""
    return torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None


def _torch_load(path: Path, kind: str, what: str) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; ``kind`` names the file where it is
    missing, ``what`` what it should have been where torch cannot read it."""
    if not path.is_file():
        raise InvalidArgumentError(f"{kind} {path}: no such file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # torch's own message suggests weights_only=False, which runs code stored in the file.
        raise InvalidArgumentError(
            f"{path} is not {what}: it holds Python objects other than tensors and plain "
            "values, which physode does not load"
        ) from None
    except Exception:  # torch.load raises anything from KeyError to EOFError on foreign bytes
        raise InvalidArgumentError(
            f"{path} is not {what}, or it is truncated or damaged: torch cannot read it"
        ) from None


def _read_checkpoint(path: Path) -> dict[str, Any]:
    """The contents of a checkpoint file, checked to be a physode checkpoint this version reads."""
    state = _torch_load(path, "checkpoint", "a physode training checkpoint")
    return _checked_checkpoint(path, state)


# What init_from's file should be, for a message about a file that is not.
_WEIGHTS_FILE = (
    "a physode training checkpoint (last.pt, best.pt) or a model's state dict (model.pt)"
)


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The model state dict of a checkpoint file, or of a file that holds one (``model.pt``)."""
    return _weights_in(path, _torch_load(path, "init_from", _WEIGHTS_FILE))


def _weights_in(path: Path, state: Any) -> dict[str, torch.Tensor]:
    """The model state dict in ``state``, what ``torch.load`` read from ``path``: a checkpoint's
    weights, or the state dict itself."""
    if isinstance(state, dict) and "format" in state:
        state = _checked_checkpoint(path, state)["model"]
    if not (
        isinstance(state, dict)
        and state
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())
    ):
        raise InvalidArgumentError(
            f"{path} is neither a physode training checkpoint (last.pt, best.pt) nor a model's "
            f"state dict (physode train --out's model.pt): it holds {_described(state)}, not "
            "tensors by name"
        )
    return state


def _described(value: Any) -> str:
    """What a file that should hold a state dict holds instead, in a few words."""
    if isinstance(value, dict) and value:
        return f"a dict with keys {_listed([repr(key) for key in value])}"
    return "an empty dict" if isinstance(value, dict) else f"a {type(value).__name__}"


def _checked_checkpoint(path: Path, state: Any) -> dict[str, Any]:
    """``state``, read from ``path``, checked to be a physode checkpoint this version reads."""
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise InvalidArgumentError(f"{path} is not a physode training checkpoint")
    version = state.get("version")
    if not isinstance(version, int) or version > CHECKPOINT_VERSION:
        raise InvalidArgumentError(
            f"{path} has checkpoint version {version!r}; this physode reads up to "
            f"{CHECKPOINT_VERSION}; upgrade physode"
        )
    missing = [key for key in _CHECKPOINT_KEYS if key not in state]
    if missing or not isinstance(state["config"], dict):
        raise InvalidArgumentError(
            f"{path} is a damaged physode checkpoint: missing or malformed "
            f"{', '.join(missing) or 'config'}"
        )
    return state


def _all_lines(exc: BaseException) -> str:
    """Every line of ``exc``'s message on one line: load_state_dict's names the keys below its
    first."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return " ".join(lines) or type(exc).__name__


def _changes(saved: Mapping[str, Any], mine: Mapping[str, Any], keys: Iterable[str]) -> list[str]:
    """``"key: then -> now"`` for each of ``keys`` whose value differs between ``saved`` and
    ``mine`` (a key one of them lacks counts as ``None`` there)."""
    return [
        f"{k}: {saved.get(k)!r} -> {mine.get(k)!r}" for k in keys if saved.get(k) != mine.get(k)
    ]


def _setting_changes(
    saved: Mapping[str, Any], mine: Mapping[str, Any], keys: Iterable[str], data_dtype: str
) -> list[str]:
    """:func:`_changes` of the settings ``keys``, where a setting left out (``None``) counts as
    the value it stands for: ``val_batch_size`` as ``batch_size``, ``dtype`` as the training
    data's (``data_dtype``, e.g. ``"float64"``). A run saved with ``val_batch_size=None`` and
    ``batch_size=16`` resumes with ``val_batch_size=16``: the run is the same."""
    then, now = _resolved(saved, data_dtype), _resolved(mine, data_dtype)
    differing = [k for k in keys if then.get(k) != now.get(k)]
    return _changes(saved, mine, differing)


def _resolved(settings: Mapping[str, Any], data_dtype: str) -> dict[str, Any]:
    """``settings`` with ``val_batch_size`` and ``dtype`` left out (``None``) replaced by what
    they stand for, and ``gradient`` by the one text of the mode it names."""
    out = dict(settings)
    out["gradient"] = _gradient_text(out.get("gradient"))
    if out.get("val_batch_size") is None:
        out["val_batch_size"] = out.get("batch_size")
    if out.get("dtype") is None:
        out["dtype"] = data_dtype
    return out


_GRADIENT_CLASSES: dict[str, type[GradientMode]] = {
    cls.__name__: cls for cls in GRADIENT_NAMES.values()
}


def _gradient_text(value: Any) -> Any:
    """The ``repr`` of the gradient mode that ``value``, a checkpoint's ``gradient`` setting,
    stands for: a name (``"aca"``) or the ``repr`` of a mode object (``"ACA(keep_last_graph=
    True)"``, and the shorter ones of older physode, ``"ACA()"``), rebuilt with today's
    defaults. ``"aca"`` and ``physode.ACA()`` are the same run; ``"opt-disc"`` and
    ``physode.OptDisc(rtol=1e-3)`` are not. Anything else is returned as it is."""
    if not isinstance(value, str):
        return value
    if value in GRADIENT_NAMES:
        return repr(GRADIENT_NAMES[value]())
    try:
        call = ast.parse(value, mode="eval").body
        if not (
            isinstance(call, ast.Call)
            and isinstance(call.func, ast.Name)
            and call.func.id in _GRADIENT_CLASSES
            and not call.args
            and all(keyword.arg is not None for keyword in call.keywords)
        ):
            return value
        options = {keyword.arg: ast.literal_eval(keyword.value) for keyword in call.keywords}
        return repr(_GRADIENT_CLASSES[call.func.id](**options))
    except (SyntaxError, ValueError, TypeError):  # not a mode's repr, or options it refuses
        return value


def _check_table(model: nn.Module, path: Path, saved: Any, verb: str) -> None:
    """Refuse a model state dict ``saved`` (of the file ``path``) whose per-trajectory table
    has another number of rows than ``model``'s (sized to the training trajectories); ``verb``
    says what was asked ("resume", "start from")."""
    names = per_trajectory_names(model)
    if not names or not isinstance(saved, Mapping):
        return
    for key, table in model.state_dict().items():
        theirs = saved.get(key)
        if not key.endswith("trajectory_values") or not isinstance(theirs, torch.Tensor):
            continue
        if theirs.shape[:1] != table.shape[:1]:
            raise InvalidArgumentError(
                f"cannot {verb} {path}: the saved run learned {list(names)} per trajectory "
                f"for {theirs.shape[0]} training trajectories, and this trainer's training "
                f"data hold {table.shape[0]}; {verb} it on the saved run's training data"
            )
