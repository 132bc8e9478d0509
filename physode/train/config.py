"""Training settings: one dataclass, validated as a whole, readable from a TOML file."""

from __future__ import annotations

import numbers
import os
import tomllib
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from physode._checks import is_finite_real, is_int
from physode._defaults import MAX_STEPS
from physode._errors import InvalidArgumentError

GRADIENT_MODES = ("aca", "disc-opt", "opt-disc")
FIXED_STEP_METHODS = ("euler", "midpoint", "rk4", "leapfrog", "yoshida4")
ADAPTIVE_METHODS = ("heun", "bosh3", "dopri5", "tsit5", "dop853")
# Methods of Opt-Disc's backward solve: the adjoint system does not separate (no symplectic ones).
BACKWARD_METHODS = ("euler", "midpoint", "rk4") + ADAPTIVE_METHODS
OPTIMIZERS = ("adam", "lbfgs")
LR_SCHEDULES = ("constant", "cosine", "step", "exponential", "plateau")
DTYPES = ("float32", "float64")
# What the trainer does with a batch it cannot use: a failed solve, a non-finite loss or gradient.
ON_FAILED_BATCH = ("stop", "skip")
LOG_SUFFIXES = (".csv", ".json")


def step_size_of_adaptive_method(method: str, step_size: Any) -> str:
    """Why an adaptive ``method`` refuses ``step_size``, for settings that take no
    ``first_step`` (the solver's own message points to it).

    Examples
    --------
    >>> print(step_size_of_adaptive_method("dopri5", 0.1))  # doctest: +NORMALIZE_WHITESPACE
    step_size=0.1 is for fixed-step methods (euler, midpoint, rk4, leapfrog, yoshida4);
    method='dopri5' chooses its own steps from rtol and atol: leave it out, or choose a
    fixed-step method
    """
    return (
        f"step_size={step_size!r} is for fixed-step methods ({', '.join(FIXED_STEP_METHODS)}); "
        f"method={method!r} chooses its own steps from rtol and atol: leave it out, or choose a "
        "fixed-step method"
    )


def max_step_of_fixed_step_method(method: str, max_step: Any) -> str:
    """Why a fixed-step or symplectic ``method`` refuses ``max_step``, which caps the steps of
    an adaptive one.

    Examples
    --------
    >>> print(max_step_of_fixed_step_method("rk4", 0.1))  # doctest: +NORMALIZE_WHITESPACE
    max_step=0.1 is for adaptive methods (heun, bosh3, dopri5, tsit5, dop853); method='rk4'
    takes every step of step_size: leave it out, or pass the step you want as step_size
    """
    return (
        f"max_step={max_step!r} is for adaptive methods ({', '.join(ADAPTIVE_METHODS)}); "
        f"method={method!r} takes every step of step_size: leave it out, or pass the step you "
        "want as step_size"
    )


@dataclass
class TrainConfig:
    """Every setting of a training run.

    Parameters
    ----------
    epochs : int
        Passes over the training windows (or ``batches_per_epoch`` batches each).
    batch_size : int
        Windows solved together in one batched solve.
    val_batch_size : int, optional
        Validation windows solved together (no graph is kept, so far more fit in memory than
        in a training batch); ``None`` uses ``batch_size``. Each solve has a fixed cost, so
        many small validation batches are slow: see ``docs/training.md``, "Windows and batches".
    window : int, optional
        Time points per training window (``>= 2``); ``None`` trains on whole trajectories.
    window_stride : int
        Index distance between consecutive window starts.
    batches_per_epoch : int, optional
        Stop an epoch after this many batches (a fresh random draw every epoch).
    optimizer : str
        ``"adam"`` (the default) or ``"lbfgs"``: quasi-Newton steps with a strong-Wolfe line
        search, one per batch, for fitting a few physical parameters precisely on whole
        trajectories (use it with full batches; ``lr`` is then its step scale, 1 is usual).
    lr, weight_decay : float
        Learning rate and weight decay (Adam).
    lr_schedule : str
        ``"constant"``, ``"cosine"`` (to ``lr_min`` over ``epochs``), ``"step"`` (× ``lr_gamma``
        every ``lr_step`` epochs), ``"exponential"`` (× ``lr_gamma`` every epoch) or
        ``"plateau"`` (× ``lr_gamma`` after ``lr_step`` epochs in a row without improvement of
        the validation loss, or of the training loss without validation data; an epoch
        improves where its loss is below the best by more than 1e-4 of it, as torch's
        ``ReduceLROnPlateau`` counts it).
    lr_min, lr_gamma : float
    lr_step : int
    grad_clip : float, optional
        Largest gradient norm; larger gradients are scaled down to it.
    on_failed_batch : str
        What to do with a training batch whose solve fails (``physode.SolverError``) or whose
        loss or gradient is not finite; no optimiser step is ever taken with it. ``"stop"``
        (the default): raise :class:`physode.TrainingError`, with the trainer back at its last
        completed epoch. ``"skip"``: leave the batch out and count it (``skipped_batches`` in the
        log row); training still stops when every batch of an epoch, or
        ``MAX_SKIPPED_IN_A_ROW`` batches in a row, fail. See ``docs/training.md``, "When
        training diverges".
    time_limit : float, optional
        Stop after the epoch during which the training time of this ``fit()`` call reached this
        many seconds (a budget for expensive runs; the run then depends on the machine's speed).
        A resumed run gets a new budget.
    patience : int, optional
        Stop after this many epochs without a validation loss lower than the best by
        ``min_delta``; needs validation data. A run that patience ended, resumed, gets
        ``patience`` more epochs to improve on its best.
    min_delta : float
    restore_best : bool
        After early stopping or the last epoch, load the weights of the best validation epoch.
    val_fraction : float
        For tensor data without a stored split: the fraction of trajectories held out for
        validation (at least one, drawn with ``seed``).
    noisy : bool
        Train and validate on the noisy states of an HDF5 data set (``/noisy_states``, stored by
        ``physode simulate --noise``) instead of its clean states; :meth:`Trainer.evaluate` still
        compares the rollouts with the clean states. A ``TrajectoryDataset`` made with
        ``noisy=True`` sets it. Tensor data are used as given.
    observe : list of int, optional
        State components that enter the loss (e.g. positions only), each once; a negative
        index counts from the end (``-1``: the last component), as in Python; ``None`` uses all.
    method, rtol, atol, step_size, gradient
        Passed to :func:`physode.solve`: the solver method, tolerances, fixed step and gradient
        mode (``"aca"``, ``"disc-opt"``, ``"opt-disc"`` or a ``physode.ACA``/``DiscOpt``/
        ``OptDisc`` object).
    max_steps : int
        Step attempts (accepted and rejected) each solve may take before it stops with
        ``Status.MAX_STEPS``: the training and validation solves and those of
        :meth:`Trainer.evaluate` (rollouts, calibration). The default is :func:`physode.solve`'s.
        A resume may change it: a solve that did not reach the limit is the same with any.
    max_step : float, optional
        Longest step an adaptive method may take in every solve of training: the training and
        validation solves, and those of :meth:`Trainer.evaluate` (rollouts, calibration, and
        the ground truth it simulates beyond the data), as :func:`physode.solve`'s
        ``max_step``. For data whose forcing or pulses are narrower than the steps the error
        estimate allows, which a solve would step over. ``None`` (the default): no cap.
        Fixed-step and symplectic methods refuse it (their step is ``step_size``). A resume
        must keep it: it changes the steps.
    step_control : str
        ``"shared"`` (one step size per batch) or ``"per-sample"`` (each window of a batch steps
        on its own; adaptive methods with ``"aca"`` or ``"disc-opt"``), passed to
        :func:`physode.solve`.
    dtype : str, optional
        ``"float64"`` or ``"float32"`` for model and data; ``None`` keeps the data's dtype.
    device : str, optional
        Where model and data live and every solve runs: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        ``None`` keeps the model's device (the CPU for a fresh model). The trainer moves the
        model there in place, with the data.
    seed : int
        Seeds the window shuffling (and the validation split of tensor data); in [0, 2**64),
        as torch's generators take it.
    log : str or path, optional
        Path of the per-epoch log, ``.csv`` or ``.json``.
    checkpoint_dir : str or path, optional
        Folder for ``last.pt`` (every ``checkpoint_every`` epochs, at the run's last epoch,
        early stopping included, and at the last completed epoch when Ctrl-C interrupts
        :meth:`Trainer.fit`) and ``best.pt``.
    checkpoint_every : int
    init_from : str or path, optional
        Start from the model weights of this file, a training checkpoint (``last.pt``,
        ``best.pt``) or the state dict ``physode train --out`` saves (``model.pt``): a warm
        start. The run is a new one (epoch 0, a fresh optimiser, schedule and history) with
        these settings; only the model's state comes from the file (see
        :meth:`Trainer.load_weights`). Checkpoints and ``physode train``'s ``report.json`` keep
        the path. A trainer that started so does not also :meth:`Trainer.load_checkpoint`.
    progress : bool or "auto"
        Show a tqdm progress bar over epochs; ``"auto"``: only when standard error is a
        terminal (as the ``physode`` command does), so that a log file gets no redraws.

    Examples
    --------
    >>> TrainConfig(epochs=5, window=10).window
    10
    >>> TrainConfig(gradient="adjoint").validate()
    Traceback (most recent call last):
    ...
    physode._errors.InvalidArgumentError: bad training settings: gradient='adjoint' ...
    """

    epochs: int = 100
    batch_size: int = 16
    val_batch_size: int | None = None
    window: int | None = None
    window_stride: int = 1
    batches_per_epoch: int | None = None
    optimizer: str = "adam"
    lr: float = 1e-2
    weight_decay: float = 0.0
    lr_schedule: str = "constant"
    lr_min: float = 0.0
    lr_gamma: float = 0.5
    lr_step: int = 10
    grad_clip: float | None = None
    on_failed_batch: str = "stop"
    time_limit: float | None = None
    patience: int | None = None
    min_delta: float = 0.0
    restore_best: bool = True
    val_fraction: float = 0.0
    noisy: bool = False
    observe: list[int] | None = None
    method: str = "dopri5"
    rtol: float = 1e-6
    atol: float = 1e-8
    step_size: float | None = None
    gradient: Any = "aca"
    step_control: str = "shared"
    max_steps: int = MAX_STEPS
    max_step: float | None = None
    dtype: str | None = None
    device: str | None = None
    seed: int = 0
    log: str | None = None
    checkpoint_dir: str | None = None
    checkpoint_every: int = 1
    init_from: str | None = None
    progress: bool | str = False

    def __post_init__(self) -> None:
        # Plain Python values only: a checkpoint stores the settings (and the optimiser's, copied
        # from them), and torch.load(weights_only=True) refuses NumPy numbers and paths.
        for f in fields(self):
            setattr(self, f.name, _plain(getattr(self, f.name)))

    def validate(self) -> None:
        """Check every setting; raise one error that lists every problem.

        Raises
        ------
        physode.InvalidArgumentError
        """
        problems = []

        def need(ok: bool, message: str) -> None:
            if not ok:
                problems.append(message)

        def integer(name: str, low: int, optional: bool = False) -> None:
            value = getattr(self, name)
            if optional and value is None:
                return
            need(is_int(value, least=low), f"{name}={value!r} (need an integer >= {low})")

        def real(name: str, zero: bool = False, optional: str | None = None) -> None:
            """A finite number > 0 (>= 0 with ``zero``); ``optional`` says what None means."""
            value = getattr(self, name)
            if optional is not None and value is None:
                return
            ok = is_finite_real(value) and (value >= 0 if zero else value > 0)
            alternative = "" if optional is None else f", or None {optional}"
            need(
                ok,
                f"{name}={value!r} (need a finite number {'>=' if zero else '>'} 0{alternative})",
            )

        integer("epochs", 1)
        integer("batch_size", 1)
        integer("val_batch_size", 1, optional=True)
        integer("window", 2, optional=True)
        integer("window_stride", 1)
        integer("batches_per_epoch", 1, optional=True)
        integer("lr_step", 1)
        integer("patience", 1, optional=True)
        integer("checkpoint_every", 1)
        integer("max_steps", 1)
        integer("seed", 0)
        # torch's generators take 64 bits; a larger seed ended as torch's overflow error.
        need(
            not is_int(self.seed, least=0) or self.seed < 2**64,
            f"seed={self.seed!r} (need an integer >= 0 and below 2**64)",
        )
        for name in ("lr", "rtol", "atol"):
            real(name)
        for name in ("weight_decay", "lr_min", "min_delta"):
            real(name, zero=True)
        need(
            is_finite_real(self.lr_gamma) and 0 < self.lr_gamma <= 1,
            f"lr_gamma={self.lr_gamma!r} (need 0 < lr_gamma <= 1)",
        )
        real("grad_clip", optional="for no clipping")
        real("time_limit", optional="for no limit")
        real("max_step", optional="for no cap")
        for name in ("restore_best", "noisy"):
            value = getattr(self, name)
            need(isinstance(value, bool), f"{name}={value!r} (need True or False)")
        need(
            isinstance(self.progress, bool) or self.progress == "auto",
            f"progress={self.progress!r} (need True, False or 'auto')",
        )
        need(
            is_finite_real(self.val_fraction) and 0 <= self.val_fraction < 1,
            f"val_fraction={self.val_fraction!r} (need 0 <= x < 1)",
        )
        need(
            self.optimizer in OPTIMIZERS,
            f"optimizer={self.optimizer!r} (choose one of {list(OPTIMIZERS)})",
        )
        need(
            self.optimizer != "lbfgs" or self.weight_decay == 0,
            f"weight_decay={self.weight_decay!r} is not supported with optimizer='lbfgs'",
        )
        need(
            self.optimizer != "lbfgs" or self.grad_clip is None,
            f"grad_clip={self.grad_clip!r} is not supported with optimizer='lbfgs': its line "
            "search needs the true gradient of the loss it evaluates",
        )
        need(
            self.on_failed_batch in ON_FAILED_BATCH,
            f"on_failed_batch={self.on_failed_batch!r} (choose one of {list(ON_FAILED_BATCH)})",
        )
        need(
            self.lr_schedule in LR_SCHEDULES,
            f"lr_schedule={self.lr_schedule!r} (choose one of {list(LR_SCHEDULES)})",
        )
        methods = FIXED_STEP_METHODS + ADAPTIVE_METHODS
        need(self.method in methods, f"method={self.method!r} (choose one of {list(methods)})")
        if self.method in FIXED_STEP_METHODS:
            need(
                is_finite_real(self.step_size) and self.step_size > 0,
                f"method={self.method!r} is fixed-step and needs step_size > 0, "
                f"e.g. step_size=0.01 (got {self.step_size!r})",
            )
        elif self.step_size is not None:
            # Refused here, with the other settings, not at the first solve of fit(), whose
            # message points to a first_step that training does not take.
            problems.append(step_size_of_adaptive_method(self.method, self.step_size))
        if self.method in FIXED_STEP_METHODS and self.max_step is not None:
            problems.append(max_step_of_fixed_step_method(self.method, self.max_step))
        need(
            self.step_control in ("shared", "per-sample"),
            f"step_control={self.step_control!r} (choose one of ['shared', 'per-sample'])",
        )
        if self.step_control == "per-sample":
            need(
                self.method in ADAPTIVE_METHODS,
                f"step_control='per-sample' needs an adaptive method, got method={self.method!r}",
            )
            need(
                getattr(self.gradient, "name", self.gradient) in ("aca", "disc-opt"),
                f"step_control='per-sample' works with gradient 'aca' or 'disc-opt', got "
                f"{self.gradient!r}",
            )
        if isinstance(self.gradient, str):
            need(
                self.gradient in GRADIENT_MODES,
                f"gradient={self.gradient!r} (choose one of {list(GRADIENT_MODES)}, or pass "
                "physode.ACA(), physode.DiscOpt() or physode.OptDisc(...))",
            )
        else:
            import physode

            need(
                isinstance(self.gradient, physode.ACA | physode.DiscOpt | physode.OptDisc),
                f"gradient={self.gradient!r} (choose one of {list(GRADIENT_MODES)}, or pass "
                "physode.ACA(), physode.DiscOpt() or physode.OptDisc(...))",
            )
        need(
            self.dtype is None or self.dtype in DTYPES,
            f"dtype={self.dtype!r} (choose one of {list(DTYPES)} or None for the data's)",
        )
        need(
            self.device is None or _device_name(self.device),
            f"device={self.device!r} (a torch device such as 'cpu', 'cuda' or 'cuda:1', or None "
            "for the model's)",
        )
        need(
            self.observe is None
            or (
                isinstance(self.observe, list | tuple)
                and len(self.observe) > 0
                and all(is_int(i) for i in self.observe)
            ),
            f"observe={self.observe!r} (need a non-empty list of state indices, or None)",
        )
        for name in ("log", "checkpoint_dir", "init_from"):
            value = getattr(self, name)
            need(
                value is None or isinstance(value, str | os.PathLike),
                f"{name}={value!r} (need a path, or None)",
            )
        need(
            not isinstance(self.log, str | os.PathLike) or Path(self.log).suffix in LOG_SUFFIXES,
            f"log={self.log!r} (the file name must end in one of {list(LOG_SUFFIXES)})",
        )
        if problems:
            raise InvalidArgumentError("bad training settings: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        """The settings as plain Python values, as a checkpoint stores them: a path becomes a
        string, a NumPy number a Python one, a tuple a list, a gradient object its ``repr``."""
        values = {name: _plain(value) for name, value in asdict(self).items()}
        if not isinstance(self.gradient, str):
            values["gradient"] = repr(self.gradient)
        return values

    def updated(self, **overrides: Any) -> TrainConfig:
        """A copy with single settings replaced (not validated).

        Raises
        ------
        physode.InvalidArgumentError
            For a name that is not a setting; the message lists the valid ones.

        Examples
        --------
        >>> TrainConfig().updated(epochs=5).epochs
        5
        """
        _refuse_unknown(overrides)
        return replace(self, **overrides)

    @classmethod
    def from_toml(cls, path: str | Path, **overrides: Any) -> TrainConfig:
        """Read settings from the ``[train]`` table of a TOML file (or its top level).

        Parameters
        ----------
        path : str or Path
        **overrides
            Values that replace the file's.

        Raises
        ------
        physode.InvalidArgumentError
            For a key that is not a setting (listing the valid ones) or a bad value.
        """
        with open(path, "rb") as handle:
            document = tomllib.load(handle)
        table = document.get("train", document)
        return cls.from_mapping({**table, **overrides})

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> TrainConfig:
        """Build settings from a mapping, refusing unknown keys."""
        _refuse_unknown(values)
        config = cls(**values)
        config.validate()
        return config


def _refuse_unknown(values: Any) -> None:
    """Refuse names in ``values`` that are not settings, listing the valid ones."""
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise InvalidArgumentError(
            f"unknown training settings {unknown}; valid ones are {sorted(known)}"
        )


def _plain(value: Any) -> Any:
    """``value`` as the plain Python types ``torch.load(weights_only=True)`` reads back (it
    refuses paths and NumPy numbers)."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Real | list | tuple):
        return value
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return int(value) if isinstance(value, numbers.Integral) else float(value)


def _device_name(value: Any) -> bool:
    """Whether ``value`` is a string that names a torch device (it need not be present)."""
    if not isinstance(value, str):
        return False
    import torch

    try:
        torch.device(value)
    except (RuntimeError, ValueError):
        return False
    return True
