"""The training loop: windows of trajectories through the solver layer, Adam, schedules,
early stopping, logs and exactly resumable checkpoints."""

from __future__ import annotations

import contextlib
import copy
import functools
import math
import os
import time
import warnings
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

import physode
import physode.data
from physode._checks import is_int
from physode._errors import (
    DistributedError,
    InvalidArgumentError,
    PhysodeWarning,
    SolverError,
    TrainingError,
    first_line,
)
from physode._files import lock_exclusively, save_atomically, writable_folder
from physode._repr import mapping_text, number_text, short_repr
from physode._terminal import progress_wanted
from physode.data.checking import counted
from physode.train import _distributed
from physode.train._checkpoints import (
    _RESUME_KEYS,
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    _all_lines,
    _changes,
    _check_table,
    _cuda_rng_states,
    _read_checkpoint,
    _read_weights,
    _setting_changes,
)
from physode.train._failures import (
    _FailedBatch,
    _gradient_hint,
    _not_finite,
    _solve_and_cause,
    _solve_failed,
    _step_text,
)
from physode.train._log import RenderedRows, write_log
from physode.train._rows import (
    batch_rows,
    learned_rows,
    parameter_rows,
    per_trajectory_names,
    solve_rows,
)
from physode.train._warm_start import _misfit, _weight_matches
from physode.train._wording import _number
from physode.train.config import TrainConfig
from physode.train.data import (
    Batch,
    Trajectories,
    Window,
    _observe_problems,
    _optional_split,
    _split_off,
    as_trajectories,
    batches_on,
    in_model_order,
    state_order_problems,
    stored_path,
    uniform_grid,
    windows_of,
)
from physode.train.evaluate import (
    CALIBRATION_ITERATIONS,
    RolloutReport,
    masked_mse,
    rollout_report,
)

# on_failed_batch="skip" stops training after this many failed batches in a row: by then the
# weights, not a few hard windows, are what fails.
MAX_SKIPPED_IN_A_ROW = 10




@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` returns.

    Attributes
    ----------
    history : list of dict
        One log row per epoch (the rows written to the log file).
    best_epoch : int or None
        Epoch with the lowest validation loss (``None`` without validation data).
    best_val_loss : float or None
    stopped_early : bool
        Early stopping (``patience``) or the ``time_limit`` ended this call.
    train_seconds : float
        Wall time spent in training epochs (summed over resumed sessions).
    physical_parameters : dict of str to float
        The model's learned physical parameters at the end (those one value for all
        trajectories).
    per_trajectory_parameters : dict of str to list of float
        Parameters the model learns per trajectory: each training trajectory's value at the
        end, in the training data's order (``{}`` for none).
    epochs_trained : int
        Epochs this call ran; ``0`` when the run had already done ``config.epochs`` epochs
        (:meth:`Trainer.fit` then also warns), so nothing was trained.
    """

    history: list[dict[str, Any]]
    best_epoch: int | None
    best_val_loss: float | None
    stopped_early: bool
    train_seconds: float
    physical_parameters: dict[str, float] = field(default_factory=dict)
    epochs_trained: int = 0
    per_trajectory_parameters: dict[str, list[float]] = field(default_factory=dict)

    @property
    def final_loss(self) -> float:
        """Training loss of the last epoch."""
        return self.history[-1]["loss"]

    def __repr__(self) -> str:
        # The outcome in figures; the history (one row per epoch) is summed up, not listed.
        return short_repr(
            self, ("history", _history_text), "epochs_trained", "best_epoch",
            ("best_val_loss", number_text), "stopped_early", ("train_seconds", number_text),
            ("physical_parameters", mapping_text),
            ("per_trajectory_parameters", functools.partial(mapping_text, shown=_range_text)),
        )


# The settings a Trainer's repr shows: how long, on what windows, and how it solves.
_SHOWN_SETTINGS = ("epochs", "window", "batch_size", "optimizer", "lr", "method", "gradient")


def _shape_text(data: Trajectories | None) -> str:
    """Trajectories by the shape and dtype of their states: ``(8, 101, 2) float64``."""
    if data is None:
        return "None"
    return f"{tuple(data.states.shape)} {str(data.states.dtype).removeprefix('torch.')}"


def _history_text(history: list[dict[str, Any]]) -> str:
    """A training history by its length and its last epoch's loss."""
    if not history:
        return "[]"
    last = number_text(history[-1]["loss"])
    return f"{counted(len(history), 'epoch', 'epochs')}, last loss {last}"


def _range_text(values: list[float]) -> str:
    """Values learned per trajectory as their range."""
    return number_text(torch.as_tensor(values, dtype=torch.float64))


def _dtype(name: str | None, data: Trajectories) -> torch.dtype:
    return data.states.dtype if name is None else getattr(torch, name)


def _device(name: str | None, model: nn.Module) -> torch.device:
    """The configured device, or the model's (its first parameter or buffer; else the CPU).

    Raises
    ------
    physode.InvalidArgumentError
        If this machine or this torch build cannot put a tensor there.
    """
    if name is None:
        for tensor in (*model.parameters(), *model.buffers()):
            return tensor.device
        return torch.device("cpu")
    device = torch.device(name)
    try:
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as exc:  # AssertionError: torch built without CUDA
        available = ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
        raise InvalidArgumentError(
            f"device={name!r} is not usable here ({first_line(exc)}); devices available: "
            f"{available}"
        ) from None
    return device


class Trainer:
    """Fit a model ``f(t, y)`` to trajectories through :func:`physode.solve`.

    Each batch takes ``batch_size`` windows of ``window`` consecutive points, solves the model
    from each window's first state over the window's times (one batched solve) and takes the
    mean squared error of the later points (components ``observe``; where the data miss values,
    ``NaN``, over the observed ones: see ``docs/training.md``, "Missing observations and
    irregular sampling"). Windows that start at
    different times share one solve when the grid is uniform and the model declares that it
    ignores ``t`` (``model.autonomous = True``); otherwise a batch holds windows with one start,
    solved at their own times. physode's models declare it; a model that does not is taken to
    depend on ``t``, which is always correct, only slower when it does not.

    Where the trajectories store their parameters (``Trajectories.params``, data simulated with
    ``params="sample"``), a model that takes per-row parameters (``model.trajectory_parameters``,
    e.g. a :class:`~physode.models.PhysicsModel`) solves each window with its own trajectory's
    values of the parameters it does not learn (``train_rows``, ``val_rows``: ``None`` where
    the model's own values serve every trajectory); see ``docs/training.md``, "Per-trajectory
    parameters". A model that learns parameters per trajectory (``model.per_trajectory``) gets
    its table sized to the training trajectories (``model.set_n_trajectories``); each training
    window is solved with its trajectory's row, each validation window with their mean.

    Where a ``torch.distributed`` process group of several processes is initialised when the
    trainer is built (``torchrun``), the processes train data-parallel: each solves its share
    of every batch's windows, one all-reduce per evaluation sums the gradients, and process 0
    alone writes the log and checkpoints and gives the warnings; with fixed steps or per-sample
    step control the result is one process's to rounding (``docs/training.md``, "Across
    processes and machines"). Every process must build its trainer from the whole data and the
    same settings (a trainer built otherwise in one process is refused in all), and make the
    calls that meet the others (building, :meth:`fit`, :meth:`train_epoch`,
    :meth:`validation_loss`) alike.

    Parameters
    ----------
    model : nn.Module
        ``f(t, y)``; a :class:`~physode.models.Hybrid` with APHYNITY adds its penalty and raises
        its ``λ`` after each batch or epoch (``regularised_loss``, ``update_after_batch``,
        ``update_after_epoch``).
    data : path, TrajectoryFile, TrajectoryDataset, Trajectories, TimeSeries or tuple (t, ys)
        Training data. A path to an HDF5 data set (or the data set ``physode.data.load``
        opened) uses its stored ``"train"`` split for training and ``"val"`` for validation.
        Data that name their states (a :class:`physode.data.TimeSeries`, ``Trajectories(...,
        state_names=...)``) without a system of their own are put in the order of the model's
        system, and refused where the names are not its states.
    config : TrainConfig, optional
        Settings; keyword arguments override single fields (``Trainer(m, d, epochs=5)``).
    val_data : same kinds as ``data``, optional
        Validation trajectories (early stopping, best weights).

    Attributes
    ----------
    epoch : int
        Epochs finished so far.
    last_checkpoint : tuple of (Path, int) or None
        Where an interrupted run continues from, and the epoch it holds: the ``last.pt`` that
        :meth:`fit` wrote most recently, else the checkpoint :meth:`load_checkpoint` restored
        (``None`` when there is neither).
    train_rows, val_rows : Tensor or None
        Each training (validation) trajectory's parameter vector for the model, shape
        ``(N, n_params)``, or ``None``.
    metadata : dict
        Plain values that describe the run beyond its settings, e.g. how the model was built
        (``physode train`` keeps its model settings here); saved in checkpoints.
        :meth:`load_checkpoint` refuses a checkpoint whose metadata differ, naming each key.
    warm_start : str or None
        What :meth:`load_weights` (``init_from``) loaded, in words; ``None`` for a run that
        started from the model's own weights. Saved in checkpoints: a run resumed from one of a
        warm-started run says what that run started from, as its ``config.init_from`` does.

    Raises
    ------
    physode.InvalidArgumentError
        For bad settings (unknown gradient mode, method..., a keyword that is not a setting, a
        ``config`` that is not a :class:`TrainConfig`), an empty data set, a window longer
        than the trajectories, or ``patience`` without validation data.
    physode.DataFormatError
        For a file that is not a readable data set, or a ``TrajectoryDataset`` whose path now
        holds another data set than the one it was made from.

    Warns
    -----
    physode.PhysodeWarning
        Once, when the training trajectories store different values of a parameter that the
        model learns (data simulated with ``params="sample"``): one value is fitted for all of
        them (see :func:`shared_parameters_warning`).
        When a model that learns parameters per trajectory has validation data and
        ``restore_best`` or ``patience``: these choose the weights by a validation loss that
        uses the mean of the learned values.
        When a model that does not declare ``autonomous`` has windows that start at different
        times: they are solved apart, in smaller batches.
        When ``optimizer="lbfgs"`` trains parameters learned per trajectory over more than one
        batch an epoch.

    Examples
    --------
    >>> import torch
    >>> from physode.models import NeuralODE
    >>> t = torch.linspace(0, 1, 11, dtype=torch.float64)
    >>> ys = torch.stack([torch.exp(-t), torch.exp(-2 * t)], -1)
    >>> trainer = Trainer(NeuralODE(2, width=8, depth=1), (t, ys), epochs=3, window=5, lr=0.01)
    >>> result = trainer.fit()
    >>> len(result.history)
    3
    """

    # Inside _folders_claimed(), which holds the checkpoint folder's lock: a fit() inside it
    # takes the lock from there.
    _holding_folder = False

    def __init__(
        self,
        model: nn.Module,
        data: Any,
        config: TrainConfig | None = None,
        *,
        val_data: Any = None,
        **overrides: Any,
    ) -> None:
        # The default process group of torch.distributed where one of several processes is
        # started (torchrun): the batches' windows are shared out among the processes, and
        # process 0 alone writes (logs, checkpoints, the progress bar) and warns.
        self._group = _distributed.process_group()
        self._writes = self._group is None or self._group.rank == 0
        if self._group is None:
            self._build(model, data, config, val_data, overrides)
            return
        # Every process must build the same trainer, or one would wait for the others in a
        # collective that they never enter: an error that stops one stops all, and they
        # compare what they built before they start from process 0's weights.
        building = "building the trainer"
        with _distributed.together(self._group, building, "could not build its trainer"):
            self._build(model, data, config, val_data, overrides)
            described = _distributed.description(
                self.config, self.model, self._data_described()
            )
        _distributed.refuse_differences(described, self._group)
        _distributed.broadcast_state(self.model)  # one start for every process

    def _build(
        self,
        model: nn.Module,
        data: Any,
        config: TrainConfig | None,
        val_data: Any,
        overrides: dict[str, Any],
    ) -> None:
        """Build the trainer as :meth:`__init__` describes (in this process alone)."""
        if config is not None and not isinstance(config, TrainConfig):
            raise InvalidArgumentError(
                f"config must be a physode.train.TrainConfig, got {type(config).__name__}; pass "
                "TrainConfig(...) or the settings as keywords, e.g. Trainer(model, data, epochs=5)"
            )
        config = (config or TrainConfig()).updated(**overrides)
        data = stored_path(data)  # physode.data.load's data set: its stored splits serve
        if isinstance(data, physode.data.TrajectoryDataset):
            if config.window is None:
                # The dataset's own windows, unless the settings choose others.
                config = replace(config, window=data.window, window_stride=data.stride)
            if data.noisy:
                config = replace(config, noisy=True)  # its validation trajectories too
        config.validate()
        if not isinstance(model, nn.Module):
            raise InvalidArgumentError(
                f"model must be a torch.nn.Module f(t, y), got {type(model).__name__}"
            )
        if not any(p.requires_grad for p in model.parameters()):
            raise InvalidArgumentError(
                f"the model ({type(model).__name__}) has no parameter to train: give a physics "
                "model learnable parameters (PhysicsModel(system, learnable=[...])) or add a "
                "neural part"
            )
        self.config = config
        self._data_description: dict[str, str] | None = None  # see _data_described
        train, val = self._read_data(data, val_data)
        # Named states (a TimeSeries's columns) in the order of the model's system.
        train = in_model_order(train, model, "training")
        val = None if val is None else in_model_order(val, model, "validation")
        dtype = _dtype(config.dtype, train)
        # The data's own dtype, which dtype=None keeps: a resume compares the dtype trained in.
        self._data_dtype = str(train.states.dtype).removeprefix("torch.")
        self.device = _device(config.device, model)
        self.train_data = train.to(dtype, self.device)
        self.val_data = None if val is None else val.to(dtype, self.device)
        # Whether each one's times are equally spaced: fixed for the run, so read from the
        # device once, not at every epoch's batching (see _mixes_starts).
        self._uniform_grids = [
            (data, uniform_grid(data.t)) for data in (self.train_data, self.val_data)
            if data is not None
        ]  # fmt: skip
        self.length = config.window or self.train_data.n_points
        self._check_data(self.train_data, "training", model)
        if self.val_data is not None:
            self._check_data(self.val_data, "validation", model)
        if config.patience is not None and self.val_data is None:
            raise InvalidArgumentError(
                f"patience={config.patience} needs validation data: pass val_data=..., set "
                "val_fraction > 0 for tensor data, or use a data set with a 'val' split"
            )
        self.model = model.to(device=self.device, dtype=dtype)
        if per_trajectory_names(self.model):
            # One learned value per training trajectory: the table gets one row for each (and
            # a model sized for other data is refused), before the optimiser takes it.
            self.model.set_n_trajectories(len(self.train_data))
        # Each trajectory's values of the parameters the model takes from the data (None: the
        # model's own values serve every trajectory).
        self.train_rows = parameter_rows(
            self.model, self.train_data.params, self.train_data.system, "training"
        )
        self.val_rows = None
        if self.val_data is not None:
            system = self.val_data.system or self.train_data.system
            self.val_rows = parameter_rows(self.model, self.val_data.params, system, "validation")
        message = shared_parameters_warning(self.model, self.train_data)
        if message is not None and self._writes:
            warnings.warn(message, PhysodeWarning, stacklevel=3)
        names = per_trajectory_names(self.model)
        restore = config.restore_best or config.patience
        if names and self.val_data is not None and restore and self._writes:
            warnings.warn(
                f"the model learns {list(names)} per training trajectory, and the validation "
                "trajectories are solved with the mean of the learned values: the validation "
                "loss measures how well that mean serves unseen trajectories, not each training "
                "trajectory's fit, yet restore_best (patience) chooses the weights by it, table "
                "included. To keep the last epoch's fit, set restore_best=False (physode train "
                "--no-restore-best) and leave patience out, or train without validation data",
                PhysodeWarning,
                stacklevel=3,
            )
        self.optimizer = self._make_optimizer()
        self.scheduler = self._make_scheduler()
        self.generator = torch.Generator().manual_seed(config.seed)
        self.epoch = 0
        self.history: list[dict[str, Any]] = []
        self.best_val_loss = math.inf
        self.best_epoch: int | None = None
        self.best_state: dict[str, torch.Tensor] | None = None
        self.bad_epochs = 0
        self.stopped_early = False
        self.train_seconds = 0.0
        self._call_started_at = 0.0  # train_seconds when the current fit() call began
        self.loss_scale: float | None = None
        # on_failed_batch="skip": the batches that failed in a row, across epochs, and the
        # (epoch, batch) of the first of them.
        self._failed_in_a_row = 0
        self._failed_since: tuple[int, int] | None = None
        # The epochs run so far, counted or not (train_epoch() alone does not count one), and
        # which of them the row of failures began in: two runs of one epoch number are told
        # apart by it. Not kept in checkpoints (None: a run of an earlier process).
        self._epochs_run = 0
        self._failed_since_run: int | None = None
        self._in_fit = False  # fit() keeps the state of the last completed epoch itself
        self.last_checkpoint: tuple[Path, int] | None = None
        self.metadata: dict[str, Any] = {}
        self._log_lines = RenderedRows()  # the CSV log's lines, each epoch's rendered once
        # Whether the losses must leave missing values (NaN) out; complete data keep the mean.
        self._train_missing = not self.train_data.complete
        self._val_missing = self.val_data is not None and not self.val_data.complete
        self.train_windows = self._windows(self.train_data, config.window_stride, "training")
        self.val_windows = None
        if self.val_data is not None:
            self.val_windows = self._windows(self.val_data, self.length - 1, "validation")
        undeclared = not hasattr(self.model, "autonomous")
        if undeclared and len({w.start for w in self.train_windows}) > 1 and self._writes:
            warnings.warn(UNDECLARED_TIME_WARNING, PhysodeWarning, stacklevel=3)
        # The file that load_weights started this run from (None: the model's own weights).
        self._started_from: Path | None = None
        # What load_weights loaded from it, in words (None: nothing).
        self.warm_start: str | None = None
        if config.init_from is not None:
            self.load_weights(config.init_from)
        if self._group is not None:
            self._check_shareable()
        if config.optimizer == "lbfgs" and names and self._writes:
            n_batches = len(self._batches(self.train_windows, shuffle=False))  # no draw
            if n_batches > 1:
                warnings.warn(
                    f"optimizer='lbfgs' takes one quasi-Newton step per batch and assumes every "
                    f"step sees the same objective, but the {n_batches} batches of an epoch see "
                    f"different rows of the table of {list(names)} learned per trajectory: its "
                    "line search can then jump to values the solver cannot integrate. Use "
                    "optimizer='adam', or one batch per epoch where the windows allow it (a "
                    "batch_size of at least the number of windows, whole trajectories that "
                    "start together)",
                    PhysodeWarning,
                    stacklevel=3,
                )

    # ------------------------------------------------------------------ setup
    def _read_data(self, data: Any, val_data: Any) -> tuple[Trajectories, Trajectories | None]:
        """The training trajectories and the validation ones (``None``: none) that ``data``
        and ``val_data`` give under the settings; records the HDF5 data set behind ``data`` and
        which trajectories ``val_fraction`` held out."""
        config = self.config
        # Which trajectories of tensor data val_fraction held out (None where it held none out).
        self._val_index: list[int] | None = None
        # The HDF5 data set behind the data (its path, or the TrajectoryDataset read from it),
        # whose stored val and test splits serve as held-out data.
        self._stored = (
            data if isinstance(data, str | os.PathLike | physode.data.TrajectoryDataset) else None
        )
        if config.noisy and self._stored is None:
            raise InvalidArgumentError(
                "noisy=True reads the noisy states of an HDF5 data set, but the training data "
                f"are a {type(data).__name__}, used as given; leave noisy out"
            )
        if config.val_fraction > 0 and (val_data is not None or self._stored is not None):
            source = "val_data" if val_data is not None else "the data set's stored 'val' split"
            raise InvalidArgumentError(
                f"val_fraction={config.val_fraction!r} holds out part of tensor data, but "
                f"validation here uses {source}; leave val_fraction out"
            )
        train = as_trajectories(data, split="train", noisy=config.noisy)
        if val_data is not None:
            try:
                val = as_trajectories(val_data, split="val", noisy=config.noisy)
            except InvalidArgumentError as exc:
                raise InvalidArgumentError(f"val_data: {exc}") from None
        elif self._stored is not None:
            val = _optional_split(self._stored, "val", noisy=config.noisy)
        elif config.val_fraction > 0:
            train, val, self._val_index = _split_off(train, config.val_fraction, config.seed)
        else:
            val = None
        return train, val

    @property
    def model_is_autonomous(self) -> bool:
        """Whether the model declares that it ignores ``t`` (``model.autonomous``).

        A model without the attribute is taken to depend on ``t``: sharing one solve among
        windows that start at different times would otherwise solve them at the wrong times.
        """
        return bool(getattr(self.model, "autonomous", False))

    def _check_data(self, data: Trajectories, role: str, model: nn.Module) -> None:
        problems = state_order_problems(model, data, role)
        if self.config.window is not None and self.config.window > data.n_points:
            problems.append(
                f"window={self.config.window} is longer than the {role} trajectories "
                f"({data.n_points} time points); use window <= {data.n_points}"
            )
        elif self.length > data.n_points:
            problems.append(
                f"the {role} trajectories have {data.n_points} time points, fewer than the "
                f"{self.length} of the training trajectories, which window=None trains on "
                f"whole; use window <= {data.n_points}"
            )
        if self.config.observe is not None:
            problems += _observe_problems(self.config.observe, data.n_state)
        if problems:
            raise InvalidArgumentError("; ".join(problems))

    def _windows(self, data: Trajectories, stride: int, role: str) -> list[Window]:
        # window=None: whole trajectories, each from its first observed time; validation
        # trajectories longer than the training ones are cut into windows of their length.
        whole = self.config.window is None and data.n_points == self.length
        length = None if whole else self.length
        windows = windows_of(data, length, max(stride, 1), self.config.observe)
        if not windows:  # only where values are missing
            observed = "" if self.config.observe is None else f" (of observe={self.config.observe})"
            raise InvalidArgumentError(
                f"the {role} trajectories give no window: none has a time observed whole "
                f"followed by an observation{observed} within {self.length} time points; use a "
                "longer window (or window=None), or data with fewer gaps"
            )
        return windows

    def _make_optimizer(self) -> torch.optim.Optimizer:
        """The optimiser ``config.optimizer`` names, over the model's parameters."""
        c = self.config
        if c.optimizer == "lbfgs":
            # One quasi-Newton iteration per batch, with up to 20 line-search evaluations
            # (max_eval bounds them; its default for max_iter=1 would allow none), and no
            # tolerance exits: the epochs decide when to stop.
            return torch.optim.LBFGS(
                self.model.parameters(), lr=c.lr, max_iter=1, max_eval=21,
                tolerance_grad=0.0, tolerance_change=0.0, line_search_fn="strong_wolfe",
            )
        return torch.optim.Adam(self.model.parameters(), lr=c.lr, weight_decay=c.weight_decay)

    def _make_scheduler(self) -> Any:
        c, opt = self.config, self.optimizer
        sched = torch.optim.lr_scheduler
        if c.lr_schedule == "cosine":
            return sched.CosineAnnealingLR(opt, T_max=c.epochs, eta_min=c.lr_min)
        if c.lr_schedule == "step":
            return sched.StepLR(opt, step_size=c.lr_step, gamma=c.lr_gamma)
        if c.lr_schedule == "exponential":
            return sched.ExponentialLR(opt, gamma=c.lr_gamma)
        if c.lr_schedule == "plateau":
            # torch lowers the rate once more than `patience` epochs went without improvement;
            # lr_step counts them as the trainer's own patience does: the lr_step-th lowers it.
            return sched.ReduceLROnPlateau(opt, factor=c.lr_gamma, patience=c.lr_step - 1)
        return None

    # ------------------------------------------------------------------ batches
    def _mixes_starts(self, data: Trajectories) -> bool:
        """Whether windows of ``data`` that start at different times may share one solve: the
        model ignores ``t`` and every window of ``data`` has the same relative times."""
        if not self.model_is_autonomous:
            return False
        for known, uniform in self._uniform_grids:
            if known is data:
                return uniform
        return uniform_grid(data.t)

    def _batches(
        self, windows: list[Window], shuffle: bool, data: Trajectories | None = None
    ) -> list[Batch]:
        """Group ``windows`` of ``data`` (default: the training data) into batches, their
        indices moved to the device together."""
        return batches_on(self._grouped(windows, shuffle, data), self.device)

    def _grouped(
        self, windows: list[Window], shuffle: bool, data: Trajectories | None
    ) -> list[list[Window]]:
        """:meth:`_batches`'s windows, grouped: ``batch_size`` training windows a batch, or
        ``val_batch_size`` windows of ``data`` (validation)."""
        c = self.config
        size = c.batch_size if data is None or c.val_batch_size is None else c.val_batch_size
        if shuffle:
            order = torch.randperm(len(windows), generator=self.generator).tolist()
            windows = [windows[i] for i in order]
        # Windows of one length (all but whole trajectories that start late) may share a solve.
        if self._mixes_starts(self.train_data if data is None else data) and all(
            w.length is None for w in windows
        ):
            return [windows[i : i + size] for i in range(0, len(windows), size)]
        groups: dict[int, list[Window]] = {}
        for w in windows:
            groups.setdefault(w.start, []).append(w)  # one start: one length
        batches = [g[i : i + size] for g in groups.values() for i in range(0, len(g), size)]
        if shuffle:
            order = torch.randperm(len(batches), generator=self.generator).tolist()
            batches = [batches[i] for i in order]
        return batches

    def _targets(
        self, data: Trajectories, batch: Batch, first: Window | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The trajectories of ``batch``'s windows, their states ``(K, B, n)`` and times: those
        of ``first`` (default ``batch[0]``), the window whose times the batch is solved at."""
        length = batch[0].length or self.length
        index, starts = batch.pairs.unbind(1)  # on the device already: nothing is copied there
        offsets = starts[:, None] + torch.arange(length, device=starts.device)
        target = data.states[index[:, None], offsets].transpose(0, 1)  # (K, B, n)
        start = (batch[0] if first is None else first).start
        return index, target, data.t[start : start + length]

    def _weight(self, data: Trajectories, batch: Batch) -> Any:
        """The weight :meth:`_solve_batch` gives ``batch``'s loss, found without a solve: the
        windows, or the observed values where values are missing."""
        if not (self._train_missing if data is self.train_data else self._val_missing):
            return len(batch)
        ref = self._targets(data, batch)[1][1:]
        if self.config.observe is not None:
            ref = ref[..., self.config.observe]
        return (~torch.isnan(ref)).sum()

    def _solve_batch(
        self, data: Trajectories, batch: Batch, first: Window | None = None
    ) -> tuple[Any, torch.Tensor, torch.Tensor, Any]:
        """Solve one batch; return the solution, the times, the trajectory loss and its weight
        (the windows, or the observed values where values are missing).

        The batch is solved at the times of ``first`` (default ``batch[0]``): a process's share
        of a batch is given the whole batch's first window, so that it steps at the same times
        as one process solving the whole batch (an autonomous model's windows of other starts
        share a batch; stepped from another start, the steps round otherwise).
        """
        c = self.config
        index, target, t = self._targets(data, batch, first)
        training = data is self.train_data
        rows = batch_rows(self.train_rows if training else self.val_rows, index)
        # Parameters learned per trajectory: the training trajectories' own rows of the table
        # (differentiated through), the held-out values for validation.
        rows = learned_rows(self.model, rows, index if training else None, len(batch))
        sol = solve_rows(
            self.model, target[0], t, rows, method=c.method, rtol=c.rtol,
            atol=c.atol, step_size=c.step_size, gradient=c.gradient, step_control=c.step_control,
            max_steps=c.max_steps, max_step=c.max_step,
        )
        pred, ref = sol.ys[1:], target[1:]
        if c.observe is not None:
            pred, ref = pred[..., c.observe], ref[..., c.observe]
        if not (self._train_missing if training else self._val_missing):
            return sol, t, (pred - ref).pow(2).mean(), len(batch)
        loss, count = masked_mse(pred, ref)
        return sol, t, loss, count

    def _evaluate(self, batch: Batch, evaluations: list) -> torch.Tensor:
        """Loss and gradient of one batch at the current parameters (the optimiser's closure).

        Raises :class:`_FailedBatch` where the solve fails or the loss or a gradient is not
        finite: the optimiser must not step with them."""
        self.optimizer.zero_grad(set_to_none=True)
        sol = None
        try:
            sol, t, loss, _ = self._solve_batch(self.train_data, batch)
            regularised = getattr(self.model, "regularised_loss", None)
            objective = loss if regularised is None else regularised(loss, t, sol.ys)
            scaled = objective
            if self.config.optimizer == "lbfgs":
                # L-BFGS has absolute thresholds (curvature pairs with s·y <= 1e-10 are
                # dropped), so it sees the objective relative to its first value; the
                # minimiser is the same.
                if self.loss_scale is None:
                    first = objective.item()
                    if not math.isfinite(first):
                        raise _not_finite(self.train_data.t, self.model, batch, sol, objective)
                    self.loss_scale = max(first, torch.finfo(objective.dtype).tiny)
                scaled = objective / self.loss_scale
            scaled.backward()  # Opt-Disc's backward solve can fail too
        except SolverError as exc:
            # The forward solve's partial solution, or the whole one where the backward failed
            # (its stats count the backward evaluations made).
            solution = sol if exc.solution is None else exc.solution
            raise _solve_failed(self.train_data.t, batch, exc, solution) from exc
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        # One read of the device per evaluation: the largest |value| of every gradient (which
        # cannot overflow, as a sum of squares could) and the objective, reduced together. The
        # solve before it read the device at every step attempt.
        largest = torch.stack(torch._foreach_norm(grads, math.inf)) if grads else objective
        if not bool(torch.isfinite(largest).all() & torch.isfinite(objective)):
            raise _not_finite(self.train_data.t, self.model, batch, sol, objective)
        if self.config.grad_clip is not None:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        evaluations.append((sol, loss.detach(), objective.detach()))
        return scaled.detach()

    # ------------------------------------------------------------------ across processes
    def _check_shareable(self) -> None:
        """Refuse a model whose objective cannot be shared out among the processes exactly: a
        ``regularised_loss`` other than a :class:`~physode.models.Hybrid`'s (whose APHYNITY
        penalty, a mean over each window's states, is)."""
        from physode.models import Hybrid

        regularised = getattr(type(self.model), "regularised_loss", None)
        if regularised is None or regularised is Hybrid.regularised_loss:
            return
        raise InvalidArgumentError(
            f"the model ({type(self.model).__name__}) has its own regularised_loss, which "
            f"training across the {self._group.world} processes of torch.distributed cannot "
            "share out among them exactly (it shares out a physode Hybrid's, APHYNITY's "
            "penalty included); train this model in one process"
        )

    def _evaluate_shared(self, batch: Batch, evaluations: list) -> torch.Tensor:
        """:meth:`_evaluate` with the batch's windows shared out among the processes: each
        solves ``batch[rank::world]`` and differentiates its part of the batch's objective; one
        all-reduce sums the parts' gradients, losses, work counts and failure flags, so every
        process steps with the whole batch's gradient, or every one raises the same
        :class:`_FailedBatch` (never a process waiting for another that failed)."""
        group, data, c = self._group, self.train_data, self.config
        self.optimizer.zero_grad(set_to_none=True)
        params = list(self.model.parameters())
        share = batch[group.rank :: group.world]
        regularised = getattr(self.model, "regularised_loss", None)
        sol: Any = None
        failure: _FailedBatch | None = None
        error: Exception | None = None
        loss_part = objective_part = None
        try:
            if share:
                sol, t, loss, weight = self._solve_batch(data, share, first=batch[0])
                loss_part = loss * weight / self._weight(data, batch)
                objective_part = loss_part
                if regularised is not None:  # a Hybrid's (_check_shareable): its share of it
                    fraction = len(share) / len(batch)
                    objective_part = regularised(loss_part, t, sol.ys, share=fraction)
                objective_part.backward()  # Opt-Disc's backward solve can fail too
        except SolverError as exc:
            sol = sol if exc.solution is None else exc.solution
            failure = _solve_failed(data.t, share, exc, sol)
        except Exception as exc:  # the others must not wait for this process
            error = exc
        ok = failure is None and error is None
        grads = [p.grad if ok else None for p in params]
        f64 = {"dtype": torch.float64, "device": self.device}
        flat = [
            torch.zeros(p.numel(), **f64) if g is None else g.detach().reshape(-1).double()
            for p, g in zip(params, grads)
        ]
        has = torch.tensor([g is not None for g in grads], **f64)
        if ok and objective_part is not None:
            present = [g for g in grads if g is not None]
            largest = torch.stack(torch._foreach_norm(present, math.inf)) if present else None
            good = torch.isfinite(objective_part)
            if largest is not None:
                good = good & torch.isfinite(largest).all()
            tail = torch.stack([loss_part.detach().double(), objective_part.detach().double(),
                                (~good).double()])  # fmt: skip
        else:
            tail = torch.tensor([0.0, 0.0, 0.0 if ok else 1.0], **f64)
        nfe, nfe_backward = _evaluations([sol])
        buffer = torch.cat([*flat, has, tail, torch.tensor([nfe, nfe_backward], **f64)])
        _distributed.all_reduce(buffer)
        n = buffer.numel() - len(params) - 5
        finite = torch.isfinite(buffer[: n]).all() & torch.isfinite(buffer[-5:-3]).all()
        # The one read of the device per evaluation, as in one process.
        values = torch.cat([buffer[n:], finite[None].double()]).tolist()
        loss_v, objective_v, bad, nfe, nfe_backward, all_finite = values[len(params) :]
        counted = _distributed.Counted(_distributed.Stats(int(nfe), int(nfe_backward)))
        if bad or not all_finite:
            if ok and objective_part is not None and not bool(good):
                failure = _not_finite(data.t, self.model, share, sol, objective_part)
            raise self._shared_failure(failure, error, counted)
        offset = 0
        for p, given in zip(params, values[: len(params)]):
            size = p.numel()
            p.grad = (
                buffer[offset : offset + size].reshape(p.shape).to(p.dtype, copy=True)
                if given else None
            )  # fmt: skip
            offset += size
        loss, objective = buffer[n + len(params)], buffer[n + len(params) + 1]
        scaled = objective
        if c.optimizer == "lbfgs":  # as in _evaluate, relative to the first objective
            if self.loss_scale is None:
                self.loss_scale = max(objective_v, torch.finfo(params[0].dtype).tiny)
            for p in params:
                if p.grad is not None:
                    p.grad.div_(self.loss_scale)
            scaled = objective / self.loss_scale
        if c.grad_clip is not None:
            nn.utils.clip_grad_norm_(params, c.grad_clip)
        evaluations.append((counted, loss, objective))
        return scaled

    def _shared_failure(
        self, failure: _FailedBatch | None, error: Exception | None, counted: Any
    ) -> Exception:
        """The exception every process raises for a batch that failed in one of them: the same
        :class:`_FailedBatch` everywhere (the lowest failing process's reason), or, where a
        process met another error, that error there and a ``DistributedError`` naming it in the
        others."""
        group = self._group
        mine = None
        if error is not None:
            mine = ("error", f"{type(error).__name__}: {first_line(error)}", False)
        elif failure is not None:
            mine = ("failure", failure.reason, failure.max_steps)
        reports = _distributed.gathered(mine, group, "a failed batch")
        if error is not None:
            return error
        elsewhere = _distributed.error_elsewhere(reports, group)
        if elsewhere is not None:
            return elsewhere
        failed = [(rank, r) for rank, r in enumerate(reports) if r is not None]
        if not failed:  # each process's part finite, their sum not
            return _FailedBatch(
                f"the gradient of its loss, summed over the {group.world} processes, is not "
                "finite", solution=counted,
            )
        rank, (_, reason, _) = failed[0]
        return _FailedBatch(
            f"{reason} (in the share of process {rank} of {group.world})",
            max_steps=any(r[2] for _, r in failed),
            solution=counted,
        )

    # ------------------------------------------------------------------ epochs
    def train_epoch(self) -> dict[str, Any]:
        """Run one epoch of optimiser steps; return its log row (without validation).

        :meth:`fit` calls it once an epoch, and most runs need nothing else. Called on its own,
        it does not count the epoch (:attr:`epoch`, the history, checkpoints: :meth:`fit` does
        that), and an exception leaves no half-trained epoch behind: the trainer goes back to
        the state it was called in (weights, optimiser, random state) before the exception goes
        on.

        Raises
        ------
        physode.TrainingError
            For a batch that cannot be used (see ``docs/training.md``, "When training
            diverges"), as in :meth:`fit`.
        """
        if self._in_fit:  # fit() keeps the state to go back to
            return self._train_epoch()
        between = self._between_epochs()
        try:
            return self._train_epoch()
        except _FailedBatch as failure:
            raise self._stopped(between, failure, save=False) from failure.__cause__
        except BaseException:
            self._restore(between)
            raise

    def _train_epoch(self) -> dict[str, Any]:
        """:meth:`train_epoch`'s epoch, which raises :class:`_FailedBatch` for a batch it
        cannot use and leaves the trainer where an exception stopped it."""
        c = self.config
        self._epochs_run += 1
        self.model.train()
        batches = self._batches(self.train_windows, shuffle=True)
        if c.batches_per_epoch is not None:
            batches = batches[: c.batches_per_epoch]
        after_batch = getattr(self.model, "update_after_batch", None)
        evaluate = self._evaluate if self._group is None else self._evaluate_shared
        # The batches' losses are summed where they are, in float64 (the sum of their values as
        # Python floats, bit for bit), and read once an epoch: reading each would wait for a GPU.
        loss_sum = objective_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        nfe = nfe_backward = 0
        skipped = 0
        # L-BFGS moves the weights during its line search, before a later evaluation can fail.
        undo = c.optimizer == "lbfgs" and c.on_failed_batch == "skip"
        start = time.perf_counter()
        for number, batch in enumerate(batches, 1):
            evaluations: list[tuple[Any, torch.Tensor, torch.Tensor]] = []
            closure = functools.partial(evaluate, batch, evaluations)
            before = self._before_step() if undo else None
            failed_solve: list[Any] = []  # a skipped batch's failed evaluation's solve
            try:
                if c.optimizer == "lbfgs":
                    self.optimizer.step(closure)  # evaluates the closure as its line search needs
                else:
                    closure()
                    self.optimizer.step()
            except _FailedBatch as failure:
                failure.place(self.epoch + 1, number, len(batches))
                self.optimizer.zero_grad(set_to_none=True)
                if before is not None:
                    self._undo_step(before)
                if c.on_failed_batch == "stop":
                    raise
                skipped += 1
                if self._failed_in_a_row == 0:
                    self._failed_since = (self.epoch + 1, number)
                    self._failed_since_run = self._epochs_run
                self._failed_in_a_row += 1  # in a row across epochs: the count goes on
                if skipped == len(batches) or self._failed_in_a_row >= MAX_SKIPPED_IN_A_ROW:
                    failure.skipped = (skipped, self._failed_in_a_row)
                    failure.since = self._failed_since
                    failure.earlier_run = self._failed_since_run not in (None, self._epochs_run)
                    raise
                failed_solve = [failure.solution]
            else:
                self._failed_in_a_row = 0
                _, loss, objective = evaluations[0]  # at the parameters the step started from
                if after_batch is not None:
                    after_batch(loss)  # a 0-dim tensor: a model that reads it waits for the device
                loss_sum = loss_sum + loss.double()
                objective_sum = objective_sum + objective.double()
            # The work was done: the log counts the evaluations of a skipped batch too (an
            # L-BFGS line search's before the one that failed, and the failed solve's own).
            counts = _evaluations([sol for sol, _, _ in evaluations] + failed_solve)
            nfe, nfe_backward = nfe + counts[0], nfe_backward + counts[1]
        loss_mean = loss_sum.item() / (len(batches) - skipped)
        objective_mean = objective_sum.item() / (len(batches) - skipped)
        after_epoch = getattr(self.model, "update_after_epoch", None)
        if after_epoch is not None:
            after_epoch(loss_mean)
        wall = time.perf_counter() - start
        if self._group is not None:  # rank 0's: every process decides the time limit alike
            wall = _distributed.rank_zeros(wall, self.device)
        self.train_seconds += wall
        row: dict[str, Any] = {
            "epoch": self.epoch + 1,
            "loss": loss_mean,
            "objective": objective_mean,
            "lr": self.optimizer.param_groups[0]["lr"],
            "wall_time": wall,
            "nfe_forward": nfe,
            "nfe_backward": nfe_backward,
            "n_batches": len(batches),
        }
        if c.on_failed_batch == "skip":
            row["skipped_batches"] = skipped
        metrics = getattr(self.model, "training_metrics", None)
        if metrics is not None:
            row.update(metrics())
        parameters = getattr(self.model, "physical_parameters", None)
        if parameters is not None:
            row.update({f"param_{k}": v for k, v in parameters().items()})
        if per_trajectory_names(self.model):  # the mean of each per-trajectory parameter
            held_out = self.model.held_out_parameters()
            row.update({f"param_{k}_mean": v for k, v in held_out.items()})
        return row

    @torch.no_grad()
    def validation_loss(self) -> float | None:
        """Mean squared error over the validation windows (``None`` without validation data);
        where values are missing, over the observed values, each weighing the same."""
        if self.val_data is None:
            return None
        self.model.eval()
        if self._group is not None:
            return self._shared_validation_loss()
        # Summed on the device and read once, as train_epoch sums its losses.
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        weight: Any = 0
        for batch in self._batches(self.val_windows, shuffle=False, data=self.val_data):
            _, _, loss, n = self._solve_batch(self.val_data, batch)
            total = total + loss.double() * n
            weight = weight + n
        return (total / weight).item()

    def _shared_validation_loss(self) -> float:
        """:meth:`validation_loss` with each batch's windows shared out among the processes,
        their sums added by one all-reduce; a solve that fails in one process raises the same
        :class:`~physode.SolverError` in every one."""
        group = self._group
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        weight: Any = 0
        problem: Exception | None = None
        for batch in self._batches(self.val_windows, shuffle=False, data=self.val_data):
            share = batch[group.rank :: group.world]
            if not share:
                continue
            try:
                _, _, loss, n = self._solve_batch(self.val_data, share, first=batch[0])
            except Exception as exc:  # the others must not wait for this process
                problem = exc
                break
            total = total + loss.double() * n
            weight = weight + n
        f64 = {"dtype": torch.float64, "device": self.device}
        buffer = torch.stack([
            total, torch.as_tensor(weight, **f64).reshape(()),
            torch.tensor(0.0 if problem is None else 1.0, **f64),
        ])  # fmt: skip
        total_v, weight_v, failed = _distributed.all_reduce(buffer).tolist()
        if not failed:
            return total_v / weight_v
        mine = None
        if isinstance(problem, SolverError):
            mine = ("solver", str(problem), problem.status, problem.t, problem.step_size)
        elif problem is not None:
            mine = ("error", f"{type(problem).__name__}: {first_line(problem)}")
        reports = _distributed.gathered(mine, group, "a failed validation")
        if problem is not None and not isinstance(problem, SolverError):
            raise problem
        elsewhere = _distributed.error_elsewhere(reports, group)
        if elsewhere is not None:
            raise elsewhere
        if problem is not None:
            raise problem
        _, message, status, t, step_size = next(r for r in reports if r is not None)
        raise SolverError(message, status=status, t=t, step_size=step_size)

    def __repr__(self) -> str:
        # What trains on what, how far it got, and the settings that most change a run.
        config = getattr(self, "config", None)
        settings = [] if config is None else [
            f"{name}={getattr(config, name, '?')!r}" for name in _SHOWN_SETTINGS
        ]
        text = short_repr(
            self, ("model", lambda m: type(m).__name__), ("train_data", _shape_text),
            ("val_data", _shape_text), "epoch", ("device", str),
        )
        return text[:-1] + "".join(f", {s}" for s in settings) + ")"

    def fit(self, epochs: int | None = None) -> TrainResult:
        """Train until ``config.epochs`` epochs are done or early stopping ends this call.

        A trainer restored with :meth:`load_checkpoint` continues from the saved epoch. A call
        after a run that early stopping or the time limit ended continues it too: ``time_limit``
        bounds the training time of each call, and a run that ``patience`` ended gets
        ``patience`` more epochs to improve on its best validation loss (the best loss and epoch
        are kept). A run that has already done ``config.epochs`` epochs trains nothing, with a
        warning (``TrainResult.epochs_trained == 0``).

        Ctrl-C (``KeyboardInterrupt``) during an epoch puts the trainer back as it was after
        the last completed epoch, so that another call continues the run exactly; with
        ``checkpoint_dir`` that state is in its ``last.pt`` (written then unless a checkpoint
        holds it already). The ``KeyboardInterrupt`` goes on, with a note that says so. Any
        other exception that stops an epoch (an error in the model's ``forward``, a disk
        that is full) does the same: it goes on unchanged, with that note, and the trainer
        holds the last completed epoch. A batch that cannot be used raises
        :class:`physode.TrainingError` instead (``on_failed_batch``).

        Parameters
        ----------
        epochs : int, optional
            Run at most this many more epochs in this call (the run can be continued by another
            call, or from a checkpoint by another trainer).

        Returns
        -------
        TrainResult

        Raises
        ------
        physode.InvalidArgumentError
            Before the first epoch, if ``epochs`` is not a positive integer, or the checkpoint
            folder or the log's folder cannot be created or written, or another run's ``fit``
            (in any process) is using the checkpoint folder: ``fit`` holds a lock on it until
            it returns or raises, which the system drops when a process is killed.
        KeyboardInterrupt
            On Ctrl-C, once the run is back at its last completed epoch (see above).
        physode.TrainingError
            For a batch that cannot be used: its solve failed, or its loss or gradient is not
            finite (see ``docs/training.md``, "When training diverges").
        """
        c = self.config
        if epochs is not None and not is_int(epochs, least=1):
            raise InvalidArgumentError(
                f"fit(epochs={epochs!r}): epochs must be an integer >= 1, the most epochs this "
                f"call runs, or None to train up to config.epochs ({c.epochs})"
            )
        with self._folders_claimed():
            return self._fit_epochs(epochs)

    @contextlib.contextmanager
    def _folders_claimed(self, agreed: bool = True) -> Iterator[None]:
        """Check the checkpoint folder and the log's, and hold the lock of the checkpoint
        folder (in the process that writes) until the block ends, a :meth:`fit` inside it
        included, which then takes the lock from there: ``physode train --resume`` holds it
        from before it reads the checkpoint, which another run then can neither read at the
        same time nor replace before this run trains on it.

        With ``agreed`` (:meth:`fit`), the processes of a ``torch.distributed`` run learn
        whether process 0 could claim its folders, and must go on from the same epoch; without
        it process 0 alone checks (a caller that meets the others around it: ``physode
        train``'s resume, inside ``_distributed.together``)."""
        lock = None
        holding = self._holding_folder
        try:
            if self._group is None or not agreed:
                lock = self._check_folders() if self._writes else None
            else:
                # Rank 0's folders, checked there; the others learn whether they can be
                # written. And every process must go on from the same epoch (a checkpoint
                # loaded in one only would have them train different runs, each waiting for the
                # others' collectives).
                problem = None
                if self._writes:
                    try:
                        lock = self._check_folders()
                    except InvalidArgumentError as exc:
                        problem = exc
                told = None if problem is None else str(problem)
                reports = _distributed.gathered((told, self.epoch), self._group, "fit")
                if problem is not None:
                    raise problem
                if reports[0][0] is not None:
                    world = self._group.world
                    raise InvalidArgumentError(f"process 0 of {world}: {reports[0][0]}")
                _distributed.refuse_other_epochs([epoch for _, epoch in reports], self._group)
            self._holding_folder = True
            yield
        finally:
            self._holding_folder = holding
            if lock is not None:
                os.close(lock)

    def _fit_epochs(self, epochs: int | None) -> TrainResult:
        """:meth:`fit` once its folders are claimed."""
        c = self.config
        last = c.epochs if epochs is None else min(c.epochs, self.epoch + epochs)
        if self.epoch >= c.epochs and self._writes:
            warnings.warn(
                f"nothing to train: the run has done {counted(self.epoch, 'epoch', 'epochs')} and "
                f"epochs={c.epochs}; "
                f"to train more, set epochs above {self.epoch}",
                PhysodeWarning,
                stacklevel=3,
            )
        self._start_call()
        first = self.epoch
        bar = None
        if self._writes and (progress_wanted(quiet=False) if c.progress == "auto" else c.progress):
            from tqdm.auto import tqdm

            bar = tqdm(total=c.epochs, initial=self.epoch, desc="train", unit="epoch")
        between = None  # the run after its last completed epoch, while one is under way
        self._in_fit = True
        try:
            while self.epoch < last and not self.stopped_early:
                between = self._between_epochs()
                row = self.train_epoch()
                val = self._validation_or_inf()
                row["val_loss"] = val
                self.epoch += 1
                self._after_epoch(row, val)
                between = None
                if bar is not None:
                    shown = {"loss": f"{row['loss']:.3g}"}
                    if val is not None:
                        shown["val"] = f"{val:.3g}"
                    bar.set_postfix(shown, refresh=False)  # drawn by update, with its epoch
                    bar.update(1)
        except _FailedBatch as failure:
            raise self._stopped(between, failure) from failure.__cause__
        except BaseException as exc:  # Ctrl-C, or an error of the model's, of a file's...
            self._interrupted(between, exc)
            raise
        finally:
            self._in_fit = False
            if bar is not None:
                bar.close()
        finished = self.epoch >= c.epochs or self.stopped_early
        if finished and c.restore_best and self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        parameters = getattr(self.model, "physical_parameters", None)
        return TrainResult(
            history=list(self.history),
            best_epoch=self.best_epoch,
            best_val_loss=None if self.best_epoch is None else self.best_val_loss,
            stopped_early=self.stopped_early,
            train_seconds=self.train_seconds,
            physical_parameters={} if parameters is None else parameters(),
            epochs_trained=self.epoch - first,
            per_trajectory_parameters=(
                self.model.per_trajectory_values() if per_trajectory_names(self.model) else {}
            ),
        )

    def _check_folders(self) -> int | None:
        """Create the checkpoint folder and the log's, or refuse them if they cannot be
        written; then lock the checkpoint folder, or refuse it while another run holds it.
        Returns the descriptor that holds the lock, for the caller to close (``None``: no
        checkpoint folder, or a system without locks)."""
        c = self.config
        if c.checkpoint_dir is not None:
            writable_folder("checkpoint_dir", c.checkpoint_dir, Path(c.checkpoint_dir))
        if c.log is not None:
            writable_folder("log", c.log, Path(c.log).parent)
        if c.checkpoint_dir is None or self._holding_folder:
            return None
        folder = Path(c.checkpoint_dir)
        # Two runs in one folder would overwrite each other's last.pt and best.pt, and a
        # --resume continue the other's run.
        return lock_exclusively(
            folder,
            f"checkpoint_dir={c.checkpoint_dir!r}: another training run is using the "
            f"checkpoint folder {folder} (its last.pt and best.pt); give this run a folder "
            "of its own, or wait for that run to end",
        )

    def _between_epochs(self) -> dict[str, Any]:
        """:meth:`state_dict` copied off the live tensors: the run as it stands between two
        epochs, for an interruption to go back to."""
        # What _restore reads, not the whole state_dict: the settings, metadata and version
        # need no copy at every epoch. Its tensors are cloned, the rest copied as deepcopy would.
        state = self._run_state()
        # The history's rows and the best weights are replaced, never changed in place.
        history, best_state = state.pop("history"), state.pop("best_state")
        return {**_copied(state), "history": list(history), "best_state": best_state,
                "failed_since_run": self._failed_since_run}  # fmt: skip

    def _interrupted(self, between: dict[str, Any] | None, exc: BaseException) -> None:
        """Go back to the last completed epoch (``between``, or ``None`` when one had just
        ended), keep it in ``checkpoint_dir/last.pt`` unless a checkpoint holds it already, and
        add a note to ``exc`` (Ctrl-C, or any other exception that stopped :meth:`fit`) saying
        where the run stands and how to continue it. ``exc`` goes on unchanged otherwise, also
        where the state gone back to cannot be kept on disk (a full disk): the note says so."""
        interrupted = self.epoch + 1 if between is None else between["epoch"] + 1
        unsaved = self._go_back(between)
        ctrl_c = isinstance(exc, KeyboardInterrupt)
        exc.add_note(self._interrupted_note(interrupted, ctrl_c, unsaved))

    def _go_back(self, between: dict[str, Any] | None, save: bool = True) -> str | None:
        """Go back to the last completed epoch (``between``, or ``None`` when one had just
        ended) and, with ``save``, keep it in ``checkpoint_dir/last.pt`` unless a checkpoint
        holds it already. Return why the log or ``last.pt`` could not be written (a disk that
        is full), else ``None``: the trainer has gone back all the same."""
        c = self.config
        logged = False
        if between is not None:
            logged = len(self.history) > len(between["history"])  # the lost epoch's row
            self._restore(between)
        try:
            if logged and c.log is not None and self._writes:
                write_log(self.history, c.log, self._log_lines)
            saved = self.last_checkpoint is not None and self.last_checkpoint[1] == self.epoch
            if save and c.checkpoint_dir is not None and self.epoch > 0 and not saved:
                path = Path(c.checkpoint_dir) / "last.pt"
                if self._writes:  # rank 0 keeps it for every process
                    path = self.save_checkpoint(path)
                self.last_checkpoint = (path, self.epoch)
        except Exception as problem:
            return first_line(problem)
        return None

    def _stopped(
        self, between: dict[str, Any] | None, failure: _FailedBatch, save: bool = True
    ) -> TrainingError:
        """Go back to the last completed epoch after a batch that failed (``save``: as
        :meth:`_go_back`), and the error that says where, why, what the trainer now holds and
        what to try. Where the log or ``last.pt`` cannot be written (a disk that is full), the
        error says so, and it is still the :class:`~physode.TrainingError` of the batch."""
        unsaved = self._go_back(between, save)
        epoch, number, n = failure.epoch, failure.batch, failure.n_batches
        if failure.skipped is None:
            summary = f"training stopped in epoch {epoch}, batch {number} of {n}: {failure.reason}"
        elif failure.skipped[0] == n == 1:
            summary = f"training stopped in epoch {epoch}: its one batch failed as {failure.reason}"
        elif failure.skipped[0] == n:
            summary = (
                f"training stopped in epoch {epoch}: every one of its {n} batches failed, the "
                f"last (batch {number}) as {failure.reason}"
            )
        else:
            since = failure.since
            first, rule = "", f"on_failed_batch='skip' stops at {MAX_SKIPPED_IN_A_ROW}"
            if since is not None and since[0] != epoch:  # the row began in an earlier epoch
                first = f" since batch {since[1]} of epoch {since[0]}"
                rule += ", counting across epochs"
            elif since is not None and failure.earlier_run:
                # ... or in an earlier run of this epoch number: a train_epoch() call on its
                # own, which counts no epoch.
                first = f" since batch {since[1]} of an earlier train_epoch() call"
                rule += ", counting across train_epoch() calls, which alone count no epoch"
            summary = (
                f"training stopped in epoch {epoch}: {failure.skipped[1]} batches in a row "
                f"failed{first} ({rule}), the last (batch {number} of {n}) as {failure.reason}"
            )
        checkpoint = None
        if self.epoch == 0:
            state = "The trainer is back at the weights it started from"
        else:
            state = (
                f"The trainer is back at the end of epoch {self.epoch} (weights, optimiser, "
                "history), as it was then"
            )
        if unsaved is not None:
            state += f"; it could not be kept on disk ({unsaved})"
        elif self.last_checkpoint is not None and self.last_checkpoint[1] == self.epoch:
            checkpoint = self.last_checkpoint[0]
            state += f", which {checkpoint} holds"
        elif self.epoch > 0 and self.config.checkpoint_dir is None:
            state += " (set checkpoint_dir to keep it on disk)"
        skip = (
            "" if self.config.on_failed_batch == "skip"
            else ", or on_failed_batch='skip', which leaves such batches out"
        )
        steps = (
            f"a larger max_steps (now {self.config.max_steps}) where the model needs more steps "
            "than that, " if failure.max_steps else ""
        )
        modes = _gradient_hint(self.config.gradient)
        hints = (
            f"To get past it: {steps}a smaller lr (now {self.optimizer.param_groups[0]['lr']:g}), "
            f"grad_clip (Adam), other rtol/atol or another method{modes}{skip}. trainer.fit() "
            "continues with the same settings and meets the same batch again; a checkpoint "
            "resumes only with its own settings, on_failed_batch and max_steps aside; to go on "
            "from its weights with other settings, build a new trainer with "
            f"init_from={'<checkpoint>' if checkpoint is None else repr(str(checkpoint))}"
        )
        error = TrainingError(
            f"{summary}. {state}. {hints}", epoch=epoch, batch=number, checkpoint=checkpoint
        )
        error.summary = summary
        error.max_steps_reached = failure.max_steps
        error.unsaved = unsaved  # why the run could not be kept on disk, if it could not
        return error

    def _before_step(self) -> tuple[list[torch.Tensor], dict[str, Any], float | None]:
        """The weights, the optimiser's state and L-BFGS's loss scale before a step, for
        :meth:`_undo_step`."""
        weights = [p.detach().clone() for p in self.model.parameters()]
        return weights, _lbfgs_copy(self.optimizer.state_dict()), self.loss_scale

    @torch.no_grad()
    def _undo_step(self, before: tuple[list[torch.Tensor], dict[str, Any], float | None]) -> None:
        """Put back what :meth:`_before_step` copied: a skipped batch leaves no trace, not even
        the loss scale that its first evaluation set (the first batch that succeeds sets it)."""
        weights, state, self.loss_scale = before
        for p, saved in zip(self.model.parameters(), weights):
            p.copy_(saved)
        self.optimizer.load_state_dict(state)

    def _validation_or_inf(self) -> float | None:
        """:meth:`validation_loss`, or ``inf`` with a warning where the validation windows
        cannot be solved or their loss is not finite: the epoch then counts as one without
        improvement, and training goes on."""
        try:
            val = self.validation_loss()
        except SolverError as exc:
            _, cause = _solve_and_cause(exc)
            reason = f"a solve failed at t={_number(exc.t)}{_step_text(exc.step_size)}: {cause}"
            if exc.status == physode.Status.MAX_STEPS:
                reason += f" (max_steps={self.config.max_steps}, a setting of training)"
        else:
            if val is None or math.isfinite(val):
                return val
            reason = f"it is {_number(val)} (a window that could not be solved, or overflow)"
        if not self._writes:  # rank 0 says it for every process
            return math.inf
        warnings.warn(
            f"epoch {self.epoch + 1}: the validation loss is taken as inf, as {reason}; the "
            "epoch counts as one without improvement (patience, restore_best, best.pt)",
            PhysodeWarning,
            stacklevel=3,
        )
        return math.inf

    def _interrupted_note(
        self, interrupted: int, ctrl_c: bool = True, unsaved: str | None = None
    ) -> str:
        """One line on where an interrupted :meth:`fit` left the run and how to continue it
        (``ctrl_c``: a ``KeyboardInterrupt``, else an exception that stopped it; ``unsaved``:
        why that state could not be kept on disk, if it could not)."""
        where = (
            "at its start" if self.epoch == 0 else f"after epoch {self.epoch}, as it was then"
        )
        how = "was interrupted" if ctrl_c else "stopped on this error"
        line = (
            f"physode: training {how} during epoch {interrupted}; the trainer holds the "
            f"run {where}, and trainer.fit() continues it"
        )
        if unsaved is not None:
            return f"{line}; it could not be kept on disk ({unsaved})"
        if self.last_checkpoint is not None and self.last_checkpoint[1] == self.epoch:
            path = self.last_checkpoint[0]
            return f"{line}, as does trainer.load_checkpoint({str(path)!r}) on a new trainer"
        if self.epoch > 0 and self.config.checkpoint_dir is None:
            return f"{line} (set checkpoint_dir to keep it on disk)"
        return line

    def _start_call(self) -> None:
        """Continue a run that early stopping or the time limit ended: the time limit counts
        from now, and a run that ``patience`` ended gets ``patience`` more epochs."""
        patience = self.config.patience
        if self.stopped_early and patience is not None and self.bad_epochs >= patience:
            self.bad_epochs = 0
        self.stopped_early = False
        self._call_started_at = self.train_seconds

    def _after_epoch(self, row: dict[str, Any], val: float | None) -> None:
        c = self.config
        row["elapsed"] = self.train_seconds
        self.history.append(row)
        improved = val is not None and val < self.best_val_loss - c.min_delta
        if improved:
            self.best_val_loss, self.best_epoch, self.bad_epochs = val, self.epoch, 0
            self.best_state = _copied(self.model.state_dict())
        elif val is not None:
            self.bad_epochs += 1
            if c.patience is not None and self.bad_epochs >= c.patience:
                self.stopped_early = True
        if c.time_limit is not None and self.train_seconds - self._call_started_at >= c.time_limit:
            self.stopped_early = True
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.scheduler.step(row["loss"] if val is None else val)
        elif self.scheduler is not None:
            self.scheduler.step()
        if self._group is None:
            self._write_epoch(improved)
            return
        # Rank 0 writes; the others learn whether it could, so that none waits for another.
        problem = None
        if self._writes:
            try:
                self._write_epoch(improved)
            except Exception as exc:
                problem = exc
        told = _distributed.broadcast_problem(
            None if problem is None else first_line(problem), self.device
        )
        if problem is not None:
            raise problem
        if told is not None:
            raise DistributedError(
                f"process 0 of the {self._group.world} {_distributed.TOGETHER} "
                f"could not write the log or a checkpoint: {told}"
            )
        if c.checkpoint_dir is not None and self._saves_last():
            self.last_checkpoint = (Path(c.checkpoint_dir) / "last.pt", self.epoch)

    def _saves_last(self) -> bool:
        """Whether the epoch just ended is one that ``last.pt`` keeps."""
        c = self.config
        return self.epoch % c.checkpoint_every == 0 or self.epoch == c.epochs or (
            self.stopped_early
        )

    def _write_epoch(self, improved: bool) -> None:
        """Write the log and the checkpoints of the epoch just ended (``improved``: the best
        validation loss so far, for ``best.pt``)."""
        c = self.config
        if c.log is not None:
            write_log(self.history, c.log, self._log_lines)
        if c.checkpoint_dir is not None:
            folder = Path(c.checkpoint_dir)
            if self._saves_last():
                self.last_checkpoint = (self.save_checkpoint(folder / "last.pt"), self.epoch)
            if improved:
                self.save_checkpoint(folder / "best.pt")

    # ------------------------------------------------------------------ after training
    def evaluate(
        self,
        test_data: Any = None,
        *,
        t_end: float | None = None,
        conservation: bool = True,
        conservation_tolerance: float | None = None,
        calibrate: float | bool | None = None,
        calibration_iterations: int = CALIBRATION_ITERATIONS,
    ) -> RolloutReport:
        """Roll the model out on held-out trajectories, within and beyond the training horizon.

        Parameters
        ----------
        test_data : same kinds as the training data, optional
            Held-out trajectories; by default the stored ``"test"`` split of an HDF5 data set,
            else the validation data (the report then notes that these chose the best epoch
            under ``restore_best`` or early stopping, so they are no independent test). A stored
            split is read clean, also after training on its noisy states (``noisy=True``).
        t_end : float, optional
            Roll out to this time, e.g. twice the training horizon. Beyond the data the truth is
            simulated from their system: a data set's, or the ``system`` of
            ``Trajectories(t, ys, system=...)`` given as ``test_data`` or as the training data.
        conservation : bool
            Add conservation reports of the rollouts and the truth (needs a known system).
        conservation_tolerance : float, optional
            Relative drift the conservation reports flag; by default 100 times the training
            settings' ``rtol``, at least 1e-6 (see :func:`~physode.train.rollout_report`).
        calibrate : float or True, optional
            For a model that learns parameters per trajectory: fit each held-out trajectory's
            own values of them to its observations up to this time (``True``: the training
            horizon, the stretch of each trajectory that training would have seen), the rest of
            the model fixed, before rolling it out with them; by default they are rolled out
            with the mean of the learned values. The fit uses the training settings' solver
            (``method``, ``rtol``, ``atol``, ``step_size``, ``max_step``) and ``gradient``; see
            :func:`~physode.train.rollout_report`, whose report's ``per_trajectory`` and
            ``calibration`` give the values found.
        calibration_iterations : int
            Most L-BFGS iterations of the calibration (default 50; it stops once converged).

        Returns
        -------
        RolloutReport
            The training horizon is the last time of the training trajectories.

        Examples
        --------
        Learn the lengths of four pendulums, then calibrate the length of two new ones on
        their first second and roll them out for two:

        >>> import physode
        >>> from physode.models import PhysicsModel
        >>> pendulum = physode.systems.load("pendulum")
        >>> def swinging(lengths, t_end):
        ...     params = torch.tensor([[1.0, 9.81, l] for l in lengths], dtype=torch.float64)
        ...     y0 = torch.tensor([[0.5, 0.0]] * len(lengths), dtype=torch.float64)
        ...     t = torch.linspace(0, t_end, 10 * int(t_end) + 1, dtype=torch.float64)
        ...     ys = physode.odeint(lambda s, y: pendulum.rhs(s, y, params), y0, t, rtol=1e-10)
        ...     return Trajectories(t, ys.transpose(0, 1), params=params, system=pendulum)
        >>> model = PhysicsModel(pendulum, per_trajectory=["l"])
        >>> trainer = Trainer(model, swinging([0.5, 0.8, 1.2, 1.6], 1), epochs=15,
        ...                   optimizer="lbfgs", lr=1.0, rtol=1e-9, atol=1e-11)
        >>> _ = trainer.fit()
        >>> report = trainer.evaluate(swinging([0.7, 1.3], 2), calibrate=True)
        >>> [round(l, 4) for l in report.per_trajectory["l"]["calibrated"]]
        [0.7, 1.3]
        >>> report.calibration["until"], report.mse_beyond < 1e-8
        (1.0, True)
        """
        c = self.config
        held_out, validation = self._held_out(test_data)
        if held_out is None:
            raise InvalidArgumentError(
                "no held-out trajectories to evaluate on: pass test_data=..."
            )
        held_out = self._with_training_system(held_out)
        held_out = held_out.to(self.train_data.states.dtype, self.device)
        report = rollout_report(
            self.model, held_out, horizon=float(self.train_data.t[-1]), t_end=t_end,
            observe=c.observe, method=c.method, rtol=c.rtol, atol=c.atol,
            step_size=c.step_size, max_steps=c.max_steps, max_step=c.max_step,
            conservation=conservation,
            conservation_tolerance=conservation_tolerance, calibrate=calibrate,
            gradient=c.gradient, calibration_iterations=calibration_iterations,
        )
        if report.per_trajectory is not None:
            report.per_trajectory = self._learned_versus_true(report.per_trajectory)
        if validation and (c.restore_best or c.patience is not None):
            report.note = (
                "these are the validation trajectories, which chose the best epoch "
                "(restore_best, patience): not an independent test; pass test_data=... for one"
            )
        return report

    def _with_training_system(self, held_out: Trajectories) -> Trajectories:
        """``held_out`` given the training data's system where it has none of its own, checked
        as ``Trajectories(..., system=...)`` checks it: its state size, and named states put in
        the system's order (a new object: the caller's data are left as they are).

        Raises
        ------
        physode.InvalidArgumentError
            Where the held-out states do not fit the training data's system.
        """
        system = self.train_data.system
        if held_out.system is not None or system is None:
            return held_out
        try:
            return Trajectories(
                held_out.t, held_out.states, held_out.params, system, held_out.state_names
            )
        except InvalidArgumentError as exc:
            raise InvalidArgumentError(
                f"the held-out data have no system, and the training data's {system.name!r} "
                f"does not fit them: {exc}"
            ) from None

    def _learned_versus_true(self, learned: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """``learned`` (a report's per-trajectory section) with each training trajectory's
        stored true value beside its learned one, where the training data store them."""
        data = self.train_data
        names = list(getattr(data.system, "parameters", None) or [])
        out = {}
        for name, entry in learned.items():
            entry = dict(entry)
            if data.params is not None and name in names and data.params.shape[-1] == len(names):
                entry["true"] = data.params[:, names.index(name)].tolist()
            out[name] = entry
        return out

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue this run exactly (tensors and plain values only)."""
        return {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "physode_version": physode.__version__,
            **self._run_state(),
            "config": self.config.to_dict(),
            "warm_start": self.warm_start,  # what config.init_from's weights started
            "metadata": dict(self.metadata),
            "val_index": self._val_index,
            "data": self._data_described(),
        }

    def _data_described(self) -> dict[str, str]:
        """The training and validation data in a few words each (shape, dtype, hash), as a
        checkpoint keeps them for a resume to compare; worked out once, as the data are fixed."""
        if self._data_description is None:
            self._data_description = _distributed.data_description(
                self.train_data, self.val_data
            )
        return self._data_description

    def _run_state(self) -> dict[str, Any]:
        """The part of :meth:`state_dict` that :meth:`_restore` puts back: the live weights,
        optimiser and random states, history and counters (not copied)."""
        return {
            "epoch": self.epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": _cuda_rng_states(),
            "history": self.history,
            "best_val_loss": self.best_val_loss,
            "best_epoch": self.best_epoch,
            "best_state": self.best_state,
            "bad_epochs": self.bad_epochs,
            "stopped_early": self.stopped_early,
            "train_seconds": self.train_seconds,
            "loss_scale": self.loss_scale,
            "failed_in_a_row": self._failed_in_a_row,
            "failed_since": None if self._failed_since is None else list(self._failed_since),
        }

    def held_out_data(self, test_data: Any = None) -> Trajectories | None:
        """The trajectories :meth:`evaluate` rolls out, or ``None`` where there are none.

        ``test_data`` if given; else the stored ``"test"`` split of an HDF5 data set, read clean
        also after training on its noisy states (then its clean ``"val"`` split where the test
        split is empty), less the trajectories a ``TrajectoryDataset`` trains on; else the
        validation data.
        """
        return self._held_out(test_data)[0]

    def _held_out(self, test_data: Any) -> tuple[Trajectories | None, bool]:
        """:meth:`held_out_data`, and whether those are the validation trajectories."""
        if test_data is not None:
            test = as_trajectories(test_data, split="test")
            return in_model_order(test, self.model, "test"), False
        if self._stored is not None:
            held_out = _optional_split(self._stored, "test")
            if held_out is not None:
                return held_out, False
            clean = _optional_split(self._stored, "val") if self.config.noisy else None
            if clean is not None:  # the validation trajectories, read clean
                return clean, True
        return self.val_data, self.val_data is not None

    def save_checkpoint(self, path: str | os.PathLike) -> Path:
        """Write :meth:`state_dict` to ``path`` atomically (temporary file, then rename).

        Returns
        -------
        Path
            The checkpoint's path.

        Raises
        ------
        physode.InvalidArgumentError
            If the file or its folder cannot be written (nothing is left half-written).
        """
        state = self.state_dict()
        return save_atomically(path, state, "checkpoint")

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        """Restore a run saved by :meth:`save_checkpoint`; :meth:`fit` then continues it.

        The trainer must be built with the same model architecture, data and settings (the
        number of epochs, except under the cosine schedule, which anneals over them, the log and
        checkpoint paths, the device and the progress bar may differ). The
        file is read with ``torch.load(weights_only=True)``: tensors and plain values only.

        Raises
        ------
        physode.InvalidArgumentError
            If the file is missing, damaged or not a physode checkpoint, or was saved with
            different settings, other :attr:`metadata` (where both it and this trainer have
            some), another model, data from which ``val_fraction`` holds out other
            trajectories than the saved run's, or other training data or validation data
            (compared by shape, dtype and a hash of their values; a resume may leave validation
            data out).
        """
        with _distributed.together(self._group, "load_checkpoint", f"could not resume {path}"):
            self._resume(Path(path))

    def _resume(self, path: Path, state: dict[str, Any] | None = None) -> None:
        """:meth:`load_checkpoint` of ``path``, whose content ``state`` the caller may have read
        already (``physode train --resume`` reads its metadata first)."""
        if self._started_from is not None:
            raise InvalidArgumentError(
                f"cannot resume {path}: this trainer starts a new run from the weights of "
                f"{self._started_from} (init_from), and a resume continues the saved run with its "
                "own weights, optimiser and history; use one: to continue a run that init_from "
                "started, resume its checkpoint on a trainer built without init_from"
            )
        if state is None:
            state = _read_checkpoint(path)
        mine = self.config.to_dict()
        keys = _RESUME_KEYS
        if mine.get("lr_schedule") == "cosine":
            keys += ("epochs",)  # the cosine schedule anneals over the run's epochs
        # A setting added after the checkpoint was written had its default value then.
        saved = {**TrainConfig().to_dict(), **state["config"]}
        changes = _setting_changes(saved, mine, keys, self._data_dtype)
        _check_table(self.model, path, state.get("model"), "resume")
        metadata = state.get("metadata")
        if isinstance(metadata, dict) and metadata and self.metadata:  # older checkpoints: none
            changes += _changes(metadata, self.metadata, {**self.metadata, **metadata})
        if state.get("val_index") is not None:  # the held-out trajectories; older: not kept
            changes += _changes(state, {"val_index": self._val_index}, ["val_index"])
        if changes:
            pairs = ", ".join(changes)
            if "epochs" in keys and saved.get("epochs") != mine.get("epochs"):
                pairs += "; lr_schedule='cosine' anneals over the run's epochs"
            raise InvalidArgumentError(
                f"cannot resume {path}: settings differ from the saved run ({pairs}); use the "
                "saved settings to continue the run exactly"
            )
        data = state.get("data")
        if isinstance(data, dict):  # older checkpoints do not describe their data
            mine = self._data_described()
            # A run may go on without validation data, or begin to validate; it may not
            # validate on other data, which would choose its best epoch by other losses.
            validated = "none" not in (
                data.get("validation data's states"), mine["validation data's states"]
            )
            compared = [k for k in data if validated or not k.startswith("validation")]
            differ = _changes(data, mine, compared)
            if differ:
                raise InvalidArgumentError(
                    f"cannot resume {path}: the saved run was trained on other data "
                    f"({', '.join(differ)}: shape, dtype and a hash of the values); resume it "
                    "on the data it was trained on, or start a new run from its weights on "
                    "these data (init_from; physode train --init-from)"
                )
        try:
            self._restore(state)
        except (RuntimeError, ValueError, TypeError, KeyError) as exc:
            raise InvalidArgumentError(
                f"cannot resume {path}: its model or optimiser does not fit this trainer's "
                f"({_all_lines(exc)}); build the trainer with the saved run's model"
            ) from None
        self.last_checkpoint = (path, self.epoch)
        if self.config.init_from is None and saved.get("init_from") is not None:
            # The resumed run began from those weights; its checkpoints and report say so, and
            # what they started (a checkpoint written before physode kept that: only the file).
            self.config = replace(self.config, init_from=saved["init_from"])
            self.warm_start = state.get("warm_start") or (
                f"started from the weights of {saved['init_from']} (which parts, this older "
                "checkpoint does not say)"
            )
        if isinstance(state.get("metadata"), dict) and state["metadata"]:
            self.metadata = dict(state["metadata"])
        if self.config.log is not None and self._writes:
            write_log(self.history, self.config.log, self._log_lines)

    def load_weights(self, path: str | os.PathLike) -> str:
        """Start this run from the model weights of a file (a warm start), e.g. after training
        diverged, to go on from the last good weights with a smaller learning rate, or to train
        a hybrid from the physics that a physics model fitted first.

        The file is a training checkpoint (``last.pt``, ``best.pt``: the weights it holds) or a
        model's state dict (``physode train --out``'s ``model.pt``). Only the model's state is
        loaded, every tensor of its ``state_dict()``: the weights, physical parameters, learned
        or not, a per-trajectory table and buffers (APHYNITY's ``λ`` as the saved run left it).
        The run stays a new one: epoch 0, the optimiser, schedule and history fresh, and this
        trainer's settings, whatever the file's were. ``config.init_from`` records the path
        (``TrainConfig(init_from=...)`` calls this method when the trainer is built), and
        :attr:`warm_start` says what was loaded.

        Between a physics model and a hybrid (:class:`~physode.models.Hybrid`, APHYNITY or
        not), the physics part moves: the weights of a physics model start a hybrid's
        ``physics`` part, its residual (and ``λ``) as built; the weights of a hybrid start a
        physics model from their physics part, and the rest of the file is left out. Either
        way the physics must match: the same system, the same parameters learned per
        trajectory (the table's rows: the training trajectories).

        Parameters
        ----------
        path : str or path

        Returns
        -------
        str
            What was loaded, in words (also :attr:`warm_start`), e.g. ``"started the physics
            part (m, k) from fit/model.pt; the residual starts fresh"``.

        Raises
        ------
        physode.InvalidArgumentError
            If the file is missing or is neither a physode checkpoint nor a state dict; if its
            weights fit neither this model nor, between physics and hybrid models, its physics
            part (names of the missing, unexpected or reshaped entries: another architecture
            or system), or its per-trajectory table has rows for another number of training
            trajectories; or if this trainer has trained already or restored a checkpoint
            (:meth:`load_checkpoint` continues a run instead).

        Examples
        --------
        >>> import tempfile, pathlib
        >>> from physode.models import NeuralODE
        >>> t = torch.linspace(0, 1, 11, dtype=torch.float64)
        >>> data = (t, torch.stack([torch.exp(-t), torch.exp(-2 * t)], -1))
        >>> first = Trainer(NeuralODE(2, width=8, depth=1), data, epochs=2, window=5)
        >>> _ = first.fit()
        >>> path = first.save_checkpoint(pathlib.Path(tempfile.mkdtemp()) / "last.pt")
        >>> again = Trainer(NeuralODE(2, width=8, depth=1), data, epochs=2, window=5, lr=1e-3,
        ...                 init_from=path)
        >>> again.epoch, torch.equal(again.model.net.net[0].weight, first.model.net.net[0].weight)
        (0, True)
        >>> again.warm_start.startswith("started the whole NeuralODE from ")
        True

        A physics model's fit starts a hybrid's physics part:

        >>> from physode.models import Hybrid, PhysicsModel
        >>> decay = physode.systems.load("harmonic_oscillator")
        >>> physics = Trainer(PhysicsModel(decay, ["k"]), data, epochs=1, window=5)
        >>> fitted = physics.save_checkpoint(path.parent / "physics.pt")
        >>> hybrid = Hybrid(PhysicsModel(decay, ["k"]), NeuralODE(2, 8, 1, zero_output=True))
        >>> warm = Trainer(hybrid, data, epochs=1, window=5)
        >>> print(warm.load_weights(fitted).replace(str(fitted), "FILE"))
        started the physics part (m, k) from FILE; the residual starts fresh
        """
        path = Path(path)
        self._refuse_warm_start_after_training(path)
        return self._start_from(path, _read_weights(path))

    def _refuse_warm_start_after_training(self, path: Path) -> None:
        if self.epoch > 0 or self.history:
            raise InvalidArgumentError(
                f"cannot start from the weights of {path}: this trainer has done {self.epoch} "
                "epochs, and load_weights (init_from) starts a new run; build a new trainer "
                "with init_from, or continue this run with load_checkpoint"
            )

    def _start_from(self, path: Path, saved: dict[str, torch.Tensor]) -> str:
        """:meth:`load_weights` with the weights ``saved`` already read from ``path`` (``physode
        train`` reads the file once, for its own checks too, on a trainer it has just built);
        return what was loaded."""
        matches = _weight_matches(self.model, saved)
        fitting = [m for m in matches if not (m.missing or m.unexpected)]
        if not fitting:
            # The way that shares the most entries with the file explains the misfit best (the
            # whole model where none shares any).
            _check_table(self.model, path, saved, "start from")
            closest = max(matches, key=lambda m: len(m.entries) - len(m.unexpected))
            raise _misfit(self.model, path, closest, closest.problems())
        match = fitting[0]
        _check_table(self.model, path, match.as_model(), "start from")
        if match.problems():
            raise _misfit(self.model, path, match, match.problems())
        with torch.no_grad():
            match.target.load_state_dict(match.entries)
        self._started_from = path
        self.config = replace(self.config, init_from=str(path))
        self.warm_start = match.described(self.model, path)
        return self.warm_start

    def _restore(self, state: dict[str, Any]) -> None:
        """Put the run in the state that ``state`` (a :meth:`state_dict`) describes."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        cuda_rng = state.get("cuda_rng")  # None from a run without CUDA, or an older checkpoint
        if cuda_rng and (self.device.type == "cuda" or torch.cuda.is_initialized()):
            torch.cuda.set_rng_state_all(cuda_rng[: torch.cuda.device_count()])
        self.epoch = state["epoch"]
        self.history = list(state["history"])
        self.best_val_loss = state["best_val_loss"]
        self.best_epoch = state["best_epoch"]
        self.best_state = state["best_state"]
        self.bad_epochs = state["bad_epochs"]
        self.stopped_early = state["stopped_early"]
        self.train_seconds = state["train_seconds"]
        self.loss_scale = state["loss_scale"]
        # Older checkpoints do not keep them: none had failed in a row then.
        self._failed_in_a_row = state.get("failed_in_a_row", 0)
        since = state.get("failed_since")
        self._failed_since = None if since is None else (since[0], since[1])
        self._failed_since_run = state.get("failed_since_run")  # a checkpoint's: unknown


def _evaluations(solutions: list[Any]) -> tuple[int, int]:
    """The forward and backward evaluations of ``solutions`` (``None``: a failure with no
    solution to count); a per-sample solve counts each row's."""
    nfe = nfe_backward = 0
    for sol in solutions:
        if sol is not None:
            nfe += _count(sol.stats.nfe)
            nfe_backward += _count(sol.stats.nfe_backward)
    return nfe, nfe_backward


def _count(value: int | torch.Tensor) -> int:
    """A counter of :class:`~physode.Stats`: an int, or a per-sample solve's CPU tensor of one
    count per row (summed)."""
    return value if isinstance(value, int) else int(value.sum())


def _copied(value: Any, memo: dict[int, Any] | None = None) -> Any:
    """``copy.deepcopy(value)`` for a state dict (nested dicts, lists and tuples of tensors and
    plain values), at a fraction of its cost: tensors are cloned, plain values shared, and a
    tensor met twice is cloned once (as deepcopy keeps it shared); anything else is deep-copied.
    A dict keeps its type and the ``_metadata`` a module's ``state_dict()`` carries."""
    memo = {} if memo is None else memo
    if isinstance(value, torch.Tensor) and not value.requires_grad:
        if id(value) not in memo:
            memo[id(value)] = value.clone()
        return memo[id(value)]
    if value is None or isinstance(value, bool | int | float | str | bytes | torch.dtype):
        return value
    if type(value) in (dict, OrderedDict):
        copied = type(value)((key, _copied(item, memo)) for key, item in value.items())
        if hasattr(value, "_metadata"):  # built afresh by each state_dict(), and only read
            copied._metadata = value._metadata
        return copied
    if type(value) in (list, tuple):
        return type(value)(_copied(item, memo) for item in value)
    return copy.deepcopy(value)


def _lbfgs_copy(state_dict: dict[str, Any]) -> dict[str, Any]:
    """An L-BFGS ``state_dict`` copied as far as a step changes it, for a skipped batch to go
    back to. A step appends a pair of vectors to its history and drops the oldest, but changes
    none in place: the history's lists are copied and their tensors shared, instead of copying
    up to 200 vectors of the size of the model before every batch. Its other tensors (the last
    gradient, which a step overwrites in place, the direction) are cloned."""

    def copied(value: Any) -> Any:
        if isinstance(value, list):
            return list(value)
        return value.clone() if isinstance(value, torch.Tensor) else value

    state = {key: {name: copied(v) for name, v in entry.items()}
             for key, entry in state_dict["state"].items()}  # fmt: skip
    return {"state": state, "param_groups": copy.deepcopy(state_dict["param_groups"])}


UNDECLARED_TIME_WARNING = (
    "the model does not declare whether it depends on t (model.autonomous), so it is taken to: "
    "windows that start at different times are solved apart, in more and smaller batches than "
    "batch_size. If the model ignores t, set model.autonomous = True to solve them together"
)

def shared_parameters_warning(model: nn.Module, data: Trajectories) -> str | None:
    """Why fitting ``model`` to ``data`` recovers no trajectory's parameters, or ``None``.

    A physics or hybrid model learns one value of each learnable parameter (the names of its
    ``physical_parameters()``) for all trajectories; where ``data`` stores different values of
    one of them for different trajectories (``physode simulate --params sample``), the fit is a
    compromise between them, and the stored values serve only as the evaluation's ground truth.
    Parameters that the data store under their system's names are compared; data without
    parameters or without a system are not.

    Examples
    --------
    >>> from physode.models import PhysicsModel
    >>> pendulum = physode.systems.load("pendulum")
    >>> params = torch.tensor([[1.0, 9.81, 1.0], [1.0, 9.81, 2.5]], dtype=torch.float64)
    >>> data = Trajectories(torch.arange(3.0), torch.zeros(2, 3, 2), params, pendulum)
    >>> print(shared_parameters_warning(PhysicsModel(pendulum, ["g"]), data))
    None
    >>> shared_parameters_warning(PhysicsModel(pendulum, ["l"]), data)[:79]
    'the training trajectories were simulated with different values of l (1 to 2.5),'
    """
    learned = getattr(model, "physical_parameters", None)
    names = list(getattr(data.system, "parameters", None) or [])
    if learned is None or data.params is None or data.params.shape[-1] != len(names):
        return None
    learnable = set(learned()) - set(per_trajectory_names(model))
    low, high = data.params.amin(0).tolist(), data.params.amax(0).tolist()
    varying = [
        (name, j) for j, name in enumerate(names) if name in learnable and low[j] != high[j]
    ]
    if not varying:
        return None
    ranges = ", ".join(f"{name} ({low[j]:g} to {high[j]:g})" for name, j in varying)
    return (
        f"the training trajectories were simulated with different values of {ranges}, but the "
        f"model learns one value of {'it' if len(varying) == 1 else 'each'} for all of them: "
        "the fit is a compromise that is no trajectory's own, and the stored values serve only "
        "as the evaluation's ground truth. To recover each trajectory's own value, learn it per "
        f"trajectory: PhysicsModel(..., per_trajectory={[name for name, _ in varying]}) "
        "(physode train: --per-trajectory NAMES); or train on trajectories simulated with fixed "
        "parameters (physode simulate without --params; params='default' in Python)"
    )
