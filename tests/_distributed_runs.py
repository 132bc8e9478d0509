"""Training runs that tests/test_train_distributed.py makes both in one process and across
processes of torch.distributed (gloo): ``python tests/_distributed_runs.py RANK WORLD STORE OUT``
starts one process of the group (the group met at the file STORE), makes every run of RUNS
and saves their results in OUT/rank{RANK}.pt; ``... OUT BUILDS`` makes those of BUILDS instead,
``... OUT RUNS+BUILDS`` those of both, in that order, in one launch."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import torch

import physode.systems
from physode.models import Aphynity, Hybrid, NeuralODE, PhysicsModel
from physode.train import Trainer, Trajectories, _distributed

sys.path.insert(0, str(Path(__file__).parent))
from _pendulums import swinging  # noqa: E402

# Fixed steps: each process's share of a batch is solved with the steps of the whole batch, so
# the processes together reach what one process does to rounding (an adaptive shared step
# would be chosen from each share's windows).
SOLVER = {"method": "rk4", "step_size": 0.05, "seed": 3}


def _oscillators(missing: bool = False, huge: int | None = None) -> Trajectories:
    """Five damped-looking oscillator trajectories of 9 points; ``missing``: some values NaN;
    ``huge``: trajectory of that index with one value so large that its loss overflows."""
    t = torch.linspace(0, 2, 9, dtype=torch.float64)
    phase = torch.arange(5, dtype=torch.float64)[:, None] * 0.3
    ys = torch.stack([torch.cos(1.3 * t + phase), -1.3 * torch.sin(1.3 * t + phase)], -1)
    ys = ys * torch.exp(-0.1 * t)[None, :, None]
    if missing:
        ys[1, 3, 0] = ys[3, 5, 1] = ys[4, 2, :] = float("nan")
    if huge is not None:
        ys[huge, 4, 0] = 1e200
    return Trajectories(t, ys)


def _watched(trainer: Trainer) -> Trainer:
    """``trainer`` with its model noting the most windows (rows of ``y``) it was called on."""
    trainer.rows = 0

    def note(module: torch.nn.Module, inputs: tuple) -> None:
        trainer.rows = max(trainer.rows, inputs[1].shape[0] if inputs[1].ndim > 1 else 1)

    trainer.model.register_forward_pre_hook(note)
    return trainer


def _result(trainer: Trainer, error: Exception | None = None) -> dict[str, Any]:
    return {
        "rows": getattr(trainer, "rows", None),
        "weights": {k: v.clone() for k, v in trainer.model.state_dict().items()},
        "history": [dict(row) for row in trainer.history],
        "epoch": trainer.epoch,
        "error": None if error is None else (
            type(error).__name__, getattr(error, "summary", str(error)),
            getattr(error, "epoch", None), getattr(error, "batch", None),
        ),
    }


def adam_hybrid(out: Path, rank: int) -> dict[str, Any]:
    """Adam on an APHYNITY hybrid, data with missing values, validation data, batches of three
    windows (shares of two and one) and one of a single window (one process has none)."""
    trainer = hybrid_trainer(out, rank)
    trainer.fit()
    return _result(trainer)


def hybrid_trainer(out: Path, rank: int, epochs: int = 3) -> Trainer:
    """:func:`adam_hybrid`'s trainer, before training."""
    torch.manual_seed(0)
    oscillator = physode.systems.load("harmonic_oscillator")
    model = Hybrid(
        PhysicsModel(oscillator, ["k"]), NeuralODE(2, width=6, depth=1),
        aphynity=Aphynity(lambda_init=1.0, tau=0.5),
    )
    return _watched(Trainer(
        model, _oscillators(missing=True), val_data=_oscillators(), epochs=epochs, window=5,
        window_stride=2, batch_size=3, lr=0.01, grad_clip=1.0, **SOLVER,
        checkpoint_dir=out / f"checkpoints{rank}", log=out / f"log{rank}.csv",
    ))


def resumed_hybrid(out: Path, rank: int) -> dict[str, Any]:
    """:func:`adam_hybrid`'s run resumed from its checkpoint by every process, one more epoch
    (each process reads the checkpoint; process 0 alone writes the log and the next one)."""
    trainer = hybrid_trainer(out / "resumed", rank, epochs=4)
    trainer.load_checkpoint(out / "checkpoints0" / "last.pt")
    trainer.fit()
    return _result(trainer)


def lbfgs_physics(out: Path, rank: int) -> dict[str, Any]:
    """L-BFGS on a pendulum's length and gravity, several batches an epoch."""
    pendulum = physode.systems.load("pendulum")
    model = PhysicsModel(pendulum, ["g", "l"])
    with torch.no_grad():
        model.set_parameters({"l": 1.4})
    trainer = _watched(Trainer(
        model, swinging([1.0] * 4), epochs=3, window=6, window_stride=2, batch_size=5,
        optimizer="lbfgs", lr=0.1, **SOLVER,
    ))
    trainer.fit()
    return _result(trainer)


def adam_per_trajectory(out: Path, rank: int) -> dict[str, Any]:
    """Adam on a length learned per pendulum: each process's gradient of the table has rows
    only for its windows' trajectories."""
    pendulum = physode.systems.load("pendulum")
    model = PhysicsModel(pendulum, per_trajectory=["l"])
    trainer = _watched(Trainer(
        model, swinging([0.6, 0.9, 1.2, 1.5, 1.8]), epochs=2, window=4, window_stride=3,
        batch_size=4, lr=0.05, **SOLVER,
    ))
    trainer.fit()
    return _result(trainer)


def _failing(on_failed_batch: str) -> dict[str, Any]:
    torch.manual_seed(1)
    trainer = _watched(Trainer(
        NeuralODE(2, width=4, depth=1), _oscillators(huge=2), epochs=2, window=3,
        window_stride=2, batch_size=3, lr=0.01, on_failed_batch=on_failed_batch, **SOLVER,
    ))
    try:
        trainer.fit()
    except physode.TrainingError as exc:
        return _result(trainer, exc)
    return _result(trainer)


def failing_stop(out: Path, rank: int) -> dict[str, Any]:
    """A batch whose loss overflows in the process that solves its huge window."""
    return _failing("stop")


def failing_skip(out: Path, rank: int) -> dict[str, Any]:
    """Those batches left out by every process alike."""
    return _failing("skip")


class _Fragile(NeuralODE):
    """A network whose forward raises on a state beyond 10 (one window's start, scaled up)."""

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if bool(y.abs().max() > 10):
            raise ValueError("a state beyond 10")
        return super().forward(t, y)


def failing_error(out: Path, rank: int) -> dict[str, Any]:
    """An error other than a failed batch in the process that meets that window."""
    torch.manual_seed(1)
    data = _oscillators()
    data.states[2, 6:] *= 50  # one window starts there
    trainer = Trainer(
        _Fragile(2, width=4, depth=1), data, epochs=2, window=3,
        window_stride=2, batch_size=3, lr=0.01, **SOLVER,
    )
    try:
        trainer.fit()
    except (ValueError, RuntimeError) as exc:
        return _result(trainer, exc)
    return _result(trainer)


RUNS = [adam_hybrid, resumed_hybrid, lbfgs_physics, adam_per_trajectory, failing_stop, failing_skip,
        failing_error]  # fmt: skip


class _TimeDependent(torch.nn.Module):
    """A model that does not say whether it depends on t (no ``autonomous``)."""

    def __init__(self) -> None:
        super().__init__()
        self.rate = torch.nn.Parameter(torch.tensor(0.5, dtype=torch.float64))

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return -self.rate * y


def _built(rank: int, **settings: Any) -> dict[str, Any]:
    """Build a trainer in each process (``settings`` may depend on ``rank``): the warnings it
    gave and the error that stopped it, if one did."""
    import warnings

    settings = {"data": _oscillators(), "epochs": 2, "window": 3, "window_stride": 2,
                **SOLVER, **settings}  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            trainer = Trainer(_TimeDependent(), settings.pop("data"), **settings)
        except Exception as exc:
            error = (type(exc).__name__, str(exc))
        else:
            error = None
            trainer.fit()
    return {"error": error, "warnings": [str(w.message) for w in caught]}


def built_alike(out: Path, rank: int) -> dict[str, Any]:
    """The same trainer in every process: it warns once, in process 0."""
    return _built(rank)


def init_from_missing_in_one(out: Path, rank: int) -> dict[str, Any]:
    """The weights to start from are missing where process 1 looks for them."""
    weights = out / "start.pt"
    if rank == 0:
        torch.save(_TimeDependent().state_dict(), weights)
    return _built(rank, init_from=weights if rank == 0 else out / "absent.pt")


def data_split_among_processes(out: Path, rank: int) -> dict[str, Any]:
    """Each process given its own trajectories, as a sampler of torch would split them."""
    data = _oscillators()
    return _built(rank, data=(data.t, data.states[rank::2]))


def settings_differ(out: Path, rank: int) -> dict[str, Any]:
    """Process 1 told to train more epochs with another learning rate."""
    return _built(rank, epochs=2 + rank, lr=0.01 * (1 + rank))


def _resumed_unlike(out: Path, rank: int, checkpoint: Path | None) -> dict[str, Any]:
    """A run of one epoch by every process, then a trainer in each that resumes
    ``checkpoint`` (``None``: none) before it trains on: the error that stopped it, if one did."""
    settings = {"epochs": 3, "window": 3, "window_stride": 2, **SOLVER}
    kept = out / "kept"
    first = Trainer(_TimeDependent(), _oscillators(), checkpoint_dir=kept, **settings)
    first.fit(epochs=1)
    trainer = Trainer(_TimeDependent(), _oscillators(), **settings)
    try:
        if checkpoint is not None:
            trainer.load_checkpoint(kept / checkpoint)
        trainer.fit()
    except Exception as exc:
        return {"error": (type(exc).__name__, str(exc))}
    return {"error": None}


def resume_missing_in_one(out: Path, rank: int) -> dict[str, Any]:
    """Process 1 resumes a file that is not there (another machine's disk)."""
    return _resumed_unlike(out, rank, Path("last.pt" if rank == 0 else "absent.pt"))


def resumed_in_one_only(out: Path, rank: int) -> dict[str, Any]:
    """Process 0 alone resumes the checkpoint: the processes would train different runs."""
    return _resumed_unlike(out, rank, Path("last.pt") if rank == 0 else None)


# Trainers that some processes build (or resume) unlike the others, and one built alike.
BUILDS = [built_alike, init_from_missing_in_one, data_split_among_processes, settings_differ,
          resume_missing_in_one, resumed_in_one_only]  # fmt: skip


def main(rank: int, world: int, store: str, out: Path, which: str = "RUNS") -> None:
    torch.set_num_threads(1)
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{store}", rank=rank, world_size=world
    )
    finished = False
    try:
        runs = [run for name in which.split("+") for run in globals()[name]]
        results = {run.__name__: run(out, rank) for run in runs}
        finished = True
    finally:
        _distributed.leave(finished)
    torch.save(results, out / f"rank{rank}.pt")


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], Path(sys.argv[4]), *sys.argv[5:])
    # The results are saved. Leave without the interpreter's finalization, in which gloo's
    # worker threads can still drop tensors and abort the process ("terminate called without
    # an active exception", about one launch in fifteen here, after destroy_process_group too;
    # a known PyTorch issue): the tests check the results, not the teardown.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
