"""Tests of physode.train: the loss falls, runs resume bit for bit, bad arguments are refused."""

from __future__ import annotations

import csv
import json
import math
import re
import warnings
from pathlib import Path
from typing import Any

import _pendulums
import numpy as np
import pytest
import torch
from _host_syncs import HostSyncs
from _recorded_solves import recorded_solves
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import physode
import physode.data
import physode.systems
from physode.cli_train import add_train_parser, run_train
from physode.models import Aphynity, Hybrid, NeuralODE, PhysicsModel
from physode.train import (
    TrainConfig,
    Trainer,
    Trajectories,
    as_trajectories,
    rollout_report,
    write_log,
)
from physode.train.data import uniform_grid
from physode.train.evaluate import rollout_times

A = torch.tensor([[-0.1, 1.0], [-1.0, -0.1]], dtype=torch.float64)


class LinearDecay(nn.Module):
    """dy/dt = -k y with a learnable k."""

    autonomous = True  # ignores t: windows at different starts may share a solve

    def __init__(self, k: float = 1.0) -> None:
        super().__init__()
        self.k = nn.Parameter(torch.tensor(k, dtype=torch.float64))

    def physical_parameters(self) -> dict[str, float]:
        return {"k": float(self.k.detach())}

    def forward(self, t, y):
        return -self.k * y


def spiral_data(n: int = 4, points: int = 21, t_end: float = 2.0) -> tuple:
    t = torch.linspace(0, t_end, points, dtype=torch.float64)
    angle = torch.linspace(0, 3, n, dtype=torch.float64)
    y0 = torch.stack([torch.cos(angle), torch.sin(angle)], -1)
    ys = physode.odeint(lambda s, y: y @ A, y0, t, method="dop853", rtol=1e-12, atol=1e-12)
    return t, ys.transpose(0, 1)


def neural(seed: int = 0) -> NeuralODE:
    torch.manual_seed(seed)
    return NeuralODE(2, width=16, depth=1)


def test_training_lowers_the_loss_and_logs_nfe_and_parameters(tmp_path):
    t, ys = spiral_data()
    torch.manual_seed(0)
    model = Hybrid(LinearDecay(0.3), NeuralODE(2, width=16, depth=1, zero_output=True))
    log = tmp_path / "log.csv"
    trainer = Trainer(model, (t, ys), epochs=5, window=6, batch_size=8, batches_per_epoch=3,
                      lr=0.02, log=str(log))  # fmt: skip
    result = trainer.fit()
    losses = [row["loss"] for row in result.history]
    assert losses[-1] < 0.3 * losses[0]
    rows = list(csv.DictReader(log.open()))
    assert [int(r["epoch"]) for r in rows] == list(range(1, 6))
    assert all(int(r["nfe_forward"]) > 0 and int(r["nfe_backward"]) > 0 for r in rows)
    assert float(rows[-1]["param_k"]) == pytest.approx(result.physical_parameters["k"])
    assert float(rows[-1]["wall_time"]) > 0


@pytest.mark.parametrize(
    ("settings", "rel"),
    [
        ({"optimizer": "adam", "lr": 0.1, "epochs": 100, "lr_schedule": "cosine"}, 1e-2),
        ({"optimizer": "lbfgs", "lr": 1.0, "epochs": 8}, 1e-5),
    ],
)
def test_a_physical_parameter_is_recovered_from_its_trajectories(settings, rel):
    t = torch.linspace(0, 2, 21, dtype=torch.float64)
    ys = torch.exp(-1.7 * t)[None, :, None] * torch.tensor([1.0, -2.0], dtype=torch.float64)
    model = LinearDecay(1.0)
    Trainer(model, (t, ys), method="rk4", step_size=0.05, gradient="disc-opt", **settings).fit()
    assert model.physical_parameters()["k"] == pytest.approx(1.7, rel=rel)


def _config(tmp_path, **overrides) -> TrainConfig:
    values = dict(
        epochs=4,
        window=5,
        batch_size=6,
        lr=0.01,
        lr_schedule="cosine",
        grad_clip=1.0,
        val_fraction=0.25,
        seed=3,
        method="dopri5",
        rtol=1e-7,
        atol=1e-9,
    )
    values.update(overrides)
    return TrainConfig(**values)


def _aphynity_model(seed: int) -> Hybrid:
    torch.manual_seed(seed)
    return Hybrid(LinearDecay(0.3), NeuralODE(2, width=8, depth=1), Aphynity(1.0, tau=5.0))


@pytest.mark.parametrize(("update", "per_epoch"), [("batch", False), ("epoch", True)])
def test_aphynity_lambda_grows_by_tau_times_each_batch_loss_or_once_by_the_epochs_mean(
    update, per_epoch
):
    torch.manual_seed(0)
    model = Hybrid(LinearDecay(0.3), NeuralODE(2, width=8, depth=1),
                   Aphynity(1.0, tau=5.0, update=update))  # fmt: skip
    trainer = Trainer(model, spiral_data(), epochs=1, window=5, batch_size=8)
    row = trainer.fit().history[0]
    assert row["n_batches"] > 3
    # row["loss"] is the mean of the batches' trajectory losses.
    growth = 5.0 * row["loss"] * (1 if per_epoch else row["n_batches"])
    assert row["aphynity_lambda"] == pytest.approx(1.0 + growth, rel=1e-12)


@pytest.mark.parametrize("epochs", [1.5, float("nan"), "2", True, 0, -1])
def test_fit_refuses_a_number_of_epochs_that_is_not_a_positive_integer(epochs):
    # fit(1.5) trained 2 epochs, fit(nan) all of config.epochs, fit("2") raised a TypeError.
    trainer = Trainer(neural(), spiral_data(points=5), epochs=3)
    with pytest.raises(physode.InvalidArgumentError, match=re.escape(
            f"fit(epochs={epochs!r}): epochs must be an integer >= 1, the most epochs this call "
            "runs, or None to train up to config.epochs (3)")):  # fmt: skip
        trainer.fit(epochs)
    assert trainer.epoch == 0 and trainer.history == []
    assert trainer.fit(np.int64(2)).epochs_trained == 2


@pytest.mark.parametrize("gradient", ["aca", "disc-opt"])
def test_a_resumed_run_continues_the_uninterrupted_one_bit_for_bit(tmp_path, gradient):
    data = spiral_data()
    config = _config(tmp_path, gradient=gradient)
    whole = Trainer(_aphynity_model(0), data, config)
    whole.fit()

    first = Trainer(_aphynity_model(0), data, config)
    first.fit(epochs=2)
    path = first.save_checkpoint(tmp_path / "ckpt.pt")

    other_init = _aphynity_model(123)
    resumed = Trainer(other_init, data, config, log=str(tmp_path / "resumed.json"))
    resumed.load_checkpoint(path)
    resumed.fit()
    keys = ("loss", "val_loss", "objective", "lr", "aphynity_lambda", "param_k")
    assert [[r[k] for k in keys] for r in resumed.history] == [
        [r[k] for k in keys] for r in whole.history
    ]
    for a, b in zip(whole.model.state_dict().values(), resumed.model.state_dict().values(),
                    strict=True):  # fmt: skip
        assert torch.equal(a, b)
    logged = json.loads((tmp_path / "resumed.json").read_text())
    assert [row["epoch"] for row in logged] == [1, 2, 3, 4]


def test_settings_given_as_paths_numpy_numbers_and_tuples_resume_from_their_checkpoint(tmp_path):
    data = spiral_data()
    config = _config(tmp_path, epochs=np.int64(3), lr=np.float64(0.01), observe=(0, 1),
                     checkpoint_dir=tmp_path / "ckpt", log=tmp_path / "log.json")  # fmt: skip
    whole = Trainer(neural(), data, config)
    whole.fit()
    Trainer(neural(), data, config).fit(epochs=2)  # leaves last.pt at epoch 2
    resumed = Trainer(neural(), data, config)
    resumed.load_checkpoint(tmp_path / "ckpt" / "last.pt")
    resumed.fit()
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in whole.history]


def test_a_run_that_stops_early_writes_its_last_epoch_to_last_pt(tmp_path):
    config = _config(tmp_path, epochs=10, patience=2, min_delta=1e9, checkpoint_every=5,
                     checkpoint_dir=str(tmp_path / "c"))  # fmt: skip
    trainer = Trainer(neural(), spiral_data(), config)
    assert trainer.fit().stopped_early and trainer.epoch == 3
    last = torch.load(tmp_path / "c" / "last.pt", weights_only=True)
    assert last["epoch"] == 3 and last["stopped_early"]


def test_a_run_that_patience_ended_resumes_with_patience_more_epochs(tmp_path):
    # min_delta=1e9: only the first epoch improves, so patience=2 ends the run after epoch 3.
    config = _config(tmp_path, epochs=10, patience=2, min_delta=1e9,
                     checkpoint_dir=str(tmp_path / "c"))  # fmt: skip
    assert Trainer(neural(), spiral_data(), config).fit().stopped_early
    resumed = Trainer(neural(), spiral_data(), config)
    resumed.load_checkpoint(tmp_path / "c" / "last.pt")
    result = resumed.fit()
    assert result.epochs_trained == 2 and resumed.epoch == 5 and result.stopped_early
    assert result.best_epoch == 1 and [r["epoch"] for r in result.history] == [1, 2, 3, 4, 5]


def test_a_run_that_the_time_limit_ended_continues_on_resume_and_on_another_fit(tmp_path):
    config = _config(tmp_path, epochs=4, lr_schedule="constant", time_limit=1e-9,
                     checkpoint_dir=str(tmp_path / "c"))  # fmt: skip
    trainer = Trainer(neural(), spiral_data(), config)
    assert trainer.fit().stopped_early and trainer.epoch == 1
    again = trainer.fit()  # a new call gets a new time budget: one more epoch
    assert again.epochs_trained == 1 and again.stopped_early and trainer.epoch == 2
    resumed = Trainer(neural(), spiral_data(), config, time_limit=None)
    resumed.load_checkpoint(tmp_path / "c" / "last.pt")
    result = resumed.fit()
    assert result.epochs_trained == 2 and resumed.epoch == 4 and not result.stopped_early


@pytest.mark.parametrize("epochs", [2, 1])
def test_resuming_a_run_that_has_done_its_epochs_warns_that_there_is_nothing_to_train(
    tmp_path, epochs
):
    config = _config(tmp_path, epochs=2, lr_schedule="constant")
    first = Trainer(neural(), spiral_data(), config)
    first.fit()
    path = first.save_checkpoint(tmp_path / "done.pt")
    resumed = Trainer(neural(), spiral_data(), config, epochs=epochs)
    resumed.load_checkpoint(path)
    with pytest.warns(UserWarning, match=f"nothing to train: .* done 2 epochs and epochs={epochs}"):
        result = resumed.fit()
    assert result.epochs_trained == 0 and resumed.epoch == 2 and len(result.history) == 2


def test_checkpoints_are_written_during_training_and_refuse_other_settings(tmp_path):
    data = spiral_data()
    config = _config(tmp_path, checkpoint_dir=str(tmp_path / "ckpt"), checkpoint_every=2)
    Trainer(neural(), data, config).fit()
    assert (tmp_path / "ckpt" / "last.pt").exists() and (tmp_path / "ckpt" / "best.pt").exists()
    other = Trainer(neural(), data, config, lr=0.5)
    with pytest.raises(physode.InvalidArgumentError, match="lr: 0.01 -> 0.5"):
        other.load_checkpoint(tmp_path / "ckpt" / "last.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(physode.InvalidArgumentError, match="junk.pt is not a physode training"):
        other.load_checkpoint(tmp_path / "junk.pt")


class _Pickled:
    """An object torch.load(weights_only=True) refuses to unpickle."""


def _checkpoint_files(folder) -> dict:
    folder.mkdir(exist_ok=True)
    (folder / "junk.pt").write_bytes(b"hello, not a checkpoint")
    (folder / "empty.pt").write_bytes(b"")
    torch.save({"weights": torch.ones(2), "object": _Pickled()}, folder / "object.pt")
    torch.save({"a": torch.ones(3)}, folder / "whole.pt")
    whole = (folder / "whole.pt").read_bytes()
    (folder / "truncated.pt").write_bytes(whole[: len(whole) // 2])
    torch.save({"format": "physode-checkpoint", "version": 1}, folder / "partial.pt")
    return {
        "missing.pt": "missing.pt: no such file",
        "junk.pt": "junk.pt is not a physode training checkpoint",
        "empty.pt": "empty.pt is not a physode training checkpoint",
        "object.pt": "object.pt is not a physode training checkpoint: it holds Python objects",
        "truncated.pt": "truncated.pt is not a physode training checkpoint, or it is truncated",
        "whole.pt": "whole.pt is not a physode training checkpoint",
        "partial.pt": "partial.pt is a damaged physode checkpoint: missing or malformed epoch",
    }


def test_a_missing_or_foreign_checkpoint_is_refused_without_unsafe_advice(tmp_path):
    expected = _checkpoint_files(tmp_path / "files")
    trainer = Trainer(neural(), spiral_data(), _config(tmp_path))
    for name, message in expected.items():
        with pytest.raises(physode.InvalidArgumentError) as error:
            trainer.load_checkpoint(tmp_path / "files" / name)
        assert message in str(error.value) and "weights_only" not in str(error.value)
    assert trainer.epoch == 0


def test_a_checkpoint_of_another_model_is_refused_by_name(tmp_path):
    config = _config(tmp_path)
    path = Trainer(neural(), spiral_data(), config).save_checkpoint(tmp_path / "small.pt")
    wider = Trainer(NeuralODE(2, width=32, depth=1), spiral_data(), config)
    with pytest.raises(physode.InvalidArgumentError, match="small.pt: its model or optimiser"):
        wider.load_checkpoint(path)


@pytest.mark.parametrize("model, message", [
    (lambda: PhysicsModel("spiral"), "has no parameter to train"),
    (lambda: NeuralODE(2, width=4, depth=1).requires_grad_(False), "has no parameter to train"),
    (lambda: (lambda t, y: -y), "model must be a torch.nn.Module"),
])
def test_a_model_with_nothing_to_train_is_refused_by_name(model, message):
    with pytest.raises(physode.InvalidArgumentError, match=message):
        Trainer(model(), spiral_data(), TrainConfig(epochs=1))


@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_an_interrupted_log_write_keeps_the_old_log_and_leaves_no_temporary_file(
    tmp_path, monkeypatch, suffix
):
    path = tmp_path / f"log{suffix}"
    write_log([{"epoch": 1, "loss": 0.5}], path)
    before = path.read_text()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(json, "dumps", interrupted)
    monkeypatch.setattr(csv, "DictWriter", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_log([{"epoch": 1, "loss": 0.5}, {"epoch": 2, "loss": 0.4}], path)
    assert path.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def _quick(tmp_path, name: str, **overrides) -> TrainConfig:
    """Four short epochs on a fixed-step solver, checkpointed every other epoch, in ``name``."""
    values = dict(
        epochs=4, window=5, batch_size=8, batches_per_epoch=3, method="rk4", step_size=0.1,
        val_fraction=0.25, lr_schedule="cosine", seed=3, checkpoint_every=2,
        checkpoint_dir=str(tmp_path / name), log=str(tmp_path / f"{name}.json"),
    )  # fmt: skip
    return TrainConfig(**{**values, **overrides})


def _same_run(a: Trainer, b: Trainer) -> None:
    keys = ("epoch", "loss", "val_loss", "objective", "lr", "aphynity_lambda", "param_k")
    assert [[r[k] for k in keys] for r in a.history] == [[r[k] for k in keys] for r in b.history]
    for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values(), strict=True):
        assert torch.equal(x, y)


@pytest.mark.parametrize("where", ["a batch", "the checkpoint write"])
def test_an_interrupted_epoch_goes_back_to_the_last_completed_one_saved_and_continued_exactly(
    tmp_path, monkeypatch, where
):
    # Interrupted in epoch 4: last.pt held epoch 2 (checkpoint_every=2), so epoch 3 is saved now.
    data = spiral_data()
    whole = Trainer(_aphynity_model(0), data, _quick(tmp_path, "whole"))
    whole.fit()
    trainer = Trainer(_aphynity_model(0), data, _quick(tmp_path, "run"))
    if where == "a batch":  # from the model's hook after the second step of epoch 4
        update, epochs = trainer.model.update_after_batch, []

        def interrupting_update(loss):
            epochs.append(trainer.epoch)
            update(loss)
            if epochs.count(3) == 2:
                raise KeyboardInterrupt

        monkeypatch.setattr(trainer.model, "update_after_batch", interrupting_update)
    else:  # in the write of last.pt after epoch 4 (its log row written), leaving half a file
        write_bytes, raised = Path.write_bytes, []

        def interrupted_write(path, data):
            if path.name == "last.pt.tmp" and trainer.epoch == 4 and not raised:
                raised.append(path)
                write_bytes(path, bytes(data)[: len(data) // 2])
                raise KeyboardInterrupt
            return write_bytes(path, data)

        monkeypatch.setattr(Path, "write_bytes", interrupted_write)
    with pytest.raises(KeyboardInterrupt) as interrupted:
        trainer.fit()
    last = tmp_path / "run" / "last.pt"
    assert interrupted.value.__notes__ == [
        "physode: training was interrupted during epoch 4; the trainer holds the run after "
        "epoch 3, as it was then, and trainer.fit() continues it, as does "
        f"trainer.load_checkpoint({str(last)!r}) on a new trainer"
    ]
    assert trainer.epoch == 3 and trainer.last_checkpoint == (last, 3)
    assert sorted(p.name for p in last.parent.iterdir()) == ["best.pt", "last.pt"]
    assert torch.load(last, weights_only=True)["epoch"] == 3
    assert [row["epoch"] for row in json.loads((tmp_path / "run.json").read_text())] == [1, 2, 3]
    monkeypatch.undo()
    resumed = Trainer(_aphynity_model(123), data, _quick(tmp_path, "resumed"))
    resumed.load_checkpoint(last)
    resumed.fit()
    _same_run(resumed, whole)
    trainer.fit()
    _same_run(trainer, whole)


def test_an_interruption_before_the_first_epoch_ends_saves_nothing_and_says_so(tmp_path):
    trainer = Trainer(neural(), spiral_data(), _quick(tmp_path, "run", checkpoint_dir=None))
    trainer.train_epoch = lambda: (_ for _ in ()).throw(KeyboardInterrupt)
    with pytest.raises(KeyboardInterrupt) as interrupted:
        trainer.fit()
    assert interrupted.value.__notes__ == [
        "physode: training was interrupted during epoch 1; the trainer holds the run at its "
        "start, and trainer.fit() continues it"
    ]
    assert trainer.last_checkpoint is None


@pytest.mark.parametrize("devices", [2, 1])
def test_a_checkpoint_keeps_the_cuda_random_states_once_cuda_is_used_and_restores_them(
    tmp_path, monkeypatch, devices
):
    # No GPU here: torch.cuda's random-state functions are stood in for.
    states = [torch.full((16,), i, dtype=torch.uint8) for i in (7, 9)]
    restored = []
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [s.clone() for s in states])
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", restored.extend)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: devices)
    trainer = Trainer(neural(), spiral_data(), epochs=1, window=5)
    path = trainer.save_checkpoint(tmp_path / "gpu.pt")
    resumed = Trainer(neural(), spiral_data(), epochs=1, window=5)
    resumed.load_checkpoint(path)
    assert [s.tolist() for s in restored] == [s.tolist() for s in states[:devices]]


def test_a_run_that_does_not_use_cuda_neither_starts_it_nor_stores_its_random_states(
    tmp_path, monkeypatch
):
    def refused(*args):
        raise AssertionError("CUDA's random states were read or set")

    monkeypatch.setattr(torch.cuda, "get_rng_state_all", refused)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", refused)
    trainer = Trainer(neural(), spiral_data(), epochs=1, window=5)
    path = trainer.save_checkpoint(tmp_path / "cpu.pt")
    assert torch.load(path, weights_only=True)["cuda_rng"] is None
    Trainer(neural(), spiral_data(), epochs=1, window=5).load_checkpoint(path)


class _ScalarReads(TorchDispatchMode):
    """Counts the values of ``dtype`` read to Python (``.item()``, ``float()``): on a GPU each
    waits for the queued work. Adam's step counters (float32) and the solver's checks (bool)
    are left out; the solver's are its own business."""

    def __init__(self, dtype: torch.dtype) -> None:
        super().__init__()
        self.dtype, self.count = dtype, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default and args[0].dtype == self.dtype:
            self.count += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize(("update", "per_batch"), [(None, 0), ("epoch", 0), ("batch", 1)])
def test_an_epoch_reads_its_losses_once_unless_the_model_uses_each_batchs(update, per_batch):
    def reads(batches: int) -> int:
        torch.manual_seed(0)
        model = NeuralODE(2, width=8, depth=1)
        if update is not None:  # APHYNITY raises λ by each batch's loss (update="batch")
            model = Hybrid(LinearDecay(0.3), model, Aphynity(1.0, tau=1.0, update=update))
        trainer = Trainer(model, spiral_data(), epochs=1, window=5, batch_size=4,
                          batches_per_epoch=batches, method="rk4", step_size=0.1)  # fmt: skip
        with _ScalarReads(torch.float64) as counted:
            trainer.train_epoch()
        return counted.count

    assert reads(5) - reads(1) == 4 * per_batch


def test_the_validation_loss_is_read_once_however_many_batches_it_takes():
    def reads(batch_size: int) -> int:
        data = spiral_data()
        trainer = Trainer(neural(), data, val_data=data, window=5, batch_size=batch_size,
                          method="rk4", step_size=0.1)  # fmt: skip
        with _ScalarReads(torch.float64) as counted:
            trainer.validation_loss()
        return counted.count

    assert reads(2) == reads(16)  # 8 batches and 1


@pytest.mark.parametrize("setting", ["checkpoint_dir", "log"])
def test_an_unwritable_checkpoint_folder_or_log_is_refused_before_training(tmp_path, setting):
    blocker = tmp_path / "a_file"
    blocker.write_text("a file where a folder should be")
    target = blocker / "ckpt" if setting == "checkpoint_dir" else blocker / "log.csv"
    trainer = Trainer(neural(), spiral_data(), _config(tmp_path, **{setting: str(target)}))
    with pytest.raises(physode.InvalidArgumentError, match=f"{setting}=.*a_file"):
        trainer.fit()
    assert trainer.history == []
    with pytest.raises(physode.InvalidArgumentError, match="cannot write the checkpoint"):
        trainer.save_checkpoint(blocker / "last.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_plateau_schedule_lowers_the_rate_after_lr_step_epochs_without_improvement():
    # y = 0 throughout: the loss is 0 in every epoch, so only the first epoch improves (on inf).
    t = torch.linspace(0, 1, 5, dtype=torch.float64)
    ys = torch.zeros(2, 5, 2, dtype=torch.float64)
    trainer = Trainer(LinearDecay(), (t, ys), epochs=9, lr=0.01, lr_schedule="plateau",
                      lr_step=3, lr_gamma=0.5)  # fmt: skip
    rates = [row["lr"] for row in trainer.fit().history]
    # Epochs 2-4 are the 3 without improvement: epoch 5 trains at the lowered rate, and 5-7
    # are the next 3 (until 2026-12-07 the rate fell one epoch later each time: 5 and 6).
    assert rates == pytest.approx([0.01] * 4 + [0.005] * 3 + [0.0025] * 2, rel=1e-12)


def test_early_stopping_stops_after_patience_and_restores_the_best_weights(tmp_path):
    data = spiral_data()
    config = _config(tmp_path, epochs=10, patience=2, min_delta=1e9,
                     checkpoint_dir=str(tmp_path / "c"))  # fmt: skip
    trainer = Trainer(neural(), data, config)
    result = trainer.fit()
    assert result.stopped_early and len(result.history) == 3 and result.best_epoch == 1
    best = torch.load(tmp_path / "c" / "best.pt", weights_only=True)
    for name, value in trainer.model.state_dict().items():
        assert torch.equal(value, best["model"][name])


class _BatchSizes(nn.Module):
    """Wraps a model, noting the batch size of every evaluation."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.sizes = model, set()
        if hasattr(model, "autonomous"):
            self.autonomous = model.autonomous

    def forward(self, t, y):
        self.sizes.add(y.shape[0])
        return self.model(t, y)


def test_windows_of_a_time_dependent_model_share_a_start_in_every_batch():
    # 4 trajectories of 9 points: 6 window starts, 4 windows each, in batches of 3.
    t, ys = spiral_data(points=9, t_end=0.8)
    torch.manual_seed(0)
    model = _BatchSizes(NeuralODE(2, width=4, depth=1, time_dependent=True))
    trainer = Trainer(model, (t, ys), epochs=1, window=4, batch_size=3, method="rk4",
                      step_size=0.25)  # fmt: skip
    assert trainer.fit().history[0]["n_batches"] == 6 * 2  # every start: 3 windows, then 1
    assert model.sizes == {3, 1}
    mixed = _BatchSizes(neural())
    autonomous = Trainer(mixed, (t, ys), epochs=1, window=4, batch_size=3, method="rk4",
                         step_size=0.25)  # fmt: skip
    assert autonomous.fit().history[0]["n_batches"] == 24 // 3  # starts mixed in full batches
    assert mixed.sizes == {3}


class ForcedDecay(nn.Module):
    """dy/dt = -y + a sin(t) with a learnable a, and no ``autonomous`` attribute."""

    def __init__(self, a: float) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor(a, dtype=torch.float64))

    def forward(self, t, y):
        return -y + self.a * torch.sin(t)


def forced_data(a: float = 1.0) -> tuple:
    t = torch.linspace(0, 6, 31, dtype=torch.float64)
    y0 = torch.tensor([[1.0], [0.0], [-1.0]], dtype=torch.float64)
    ys = physode.odeint(lambda s, y: -y + a * torch.sin(s), y0, t, method="dop853", rtol=1e-12,
                        atol=1e-12)  # fmt: skip
    return t, ys.transpose(0, 1)


def test_a_user_model_that_does_not_declare_autonomous_is_solved_at_each_windows_own_times():
    # At its true parameter the model reproduces the data, so the loss is only solver error,
    # unless windows that start at different times were solved on the first one's times.
    data = forced_data(a=1.0)
    # It is told, as it is slower than the shared solve an autonomous model gets.
    with pytest.warns(UserWarning, match=r"set model.autonomous = True"):
        trainer = Trainer(ForcedDecay(1.0), data, val_data=data, epochs=1, window=6,
                          batch_size=64, rtol=1e-10, atol=1e-12, lr=1e-12)  # fmt: skip
    assert not trainer.model_is_autonomous
    assert trainer.validation_loss() < 1e-16
    # 3 trajectories of 31 points: 26 window starts, one batch of 3 windows each. The loss is
    # the first epoch's, whose steps (lr=1e-12) leave a where it was.
    row = trainer.fit().history[0]
    assert row["n_batches"] == 26 and row["loss"] < 1e-16


def test_a_user_model_that_declares_autonomous_shares_solves_across_starts():
    model = ForcedDecay(0.0)
    model.autonomous = True  # a false claim, to see that the trainer trusts it
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a declared model is not warned about
        trainer = Trainer(model, forced_data(), epochs=1, window=6, batch_size=64)
    assert trainer.model_is_autonomous
    assert trainer.fit().history[0]["n_batches"] == 2  # 78 windows of 26 starts, 64 a batch


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"gradient": "adjoint"}, "gradient='adjoint'.*'aca', 'disc-opt', 'opt-disc'"),
        ({"window": 50}, "window=50 is longer than the training trajectories \\(21 time points"),
        ({"method": "rk4"}, "needs step_size"),
        # Accepted until 2026-12-07, then refused by fit()'s first solve, which advised a
        # first_step that training does not take.
        (
            {"step_size": 0.1},
            "step_size=0.1 is for fixed-step methods \\(euler, .*\\); method='dopri5' chooses "
            "its own steps from rtol and atol: leave it out",
        ),
        ({"method": "rk45"}, "method='rk45'.*choose one of"),
        ({"lr_schedule": "warmup"}, "lr_schedule='warmup'"),
        ({"patience": 3}, "patience=3 needs validation data"),
        ({"observe": [0, 7]}, "observe=\\[0, 7\\] has indices \\[7\\]"),
        ({"observe": [0, 0]}, "observe=\\[0, 0\\] gives component 0 twice; each component"),
        (
            {"observe": [1, -1]},
            "observe=\\[1, -1\\] gives component 1 twice, as 1 and -1 \\(a negative index counts",
        ),
        ({"log": "log.txt"}, "log='log.txt'"),
        ({"epochs": 0, "batch_size": -1}, "epochs=0.*batch_size=-1"),
        ({"val_batch_size": 0}, "val_batch_size=0 \\(need an integer >= 1\\)"),
        ({"step_control": "each"}, "step_control='each'"),
        ({"step_control": "per-sample", "gradient": "opt-disc"}, "works with gradient 'aca'"),
        (
            {"step_control": "per-sample", "method": "rk4", "step_size": 0.1},
            "needs an adaptive method",
        ),
        ({"optimizer": "lbfgs", "grad_clip": 1.0}, "grad_clip=1.0 is not supported with opt"),
        ({"max_step": 0.0}, "max_step=0.0 \\(need a finite number > 0, or None for no cap\\)"),
        ({"max_step": "0.1"}, "max_step='0.1' \\(need a finite number > 0"),
        (
            {"method": "rk4", "step_size": 0.1, "max_step": 0.05},
            "max_step=0.05 is for adaptive methods \\(heun, .*\\); method='rk4' takes every "
            "step of step_size: leave it out, or pass the step you want as step_size",
        ),
        ({"method": "yoshida4", "step_size": 0.1, "max_step": 0.05}, "method='yoshida4' takes"),
        ({"device": "gpu"}, "device='gpu' \\(a torch device such as 'cpu', 'cuda'"),
        ({"device": 0}, "device=0 \\(a torch device"),
        # A device torch knows but this machine lacks: refused before anything moves.
        ({"device": "cuda:99"}, "device='cuda:99' is not usable here.*available: \\['cpu'"),
    ],
)
def test_bad_training_arguments_are_refused_with_a_clear_message(overrides, message):
    with pytest.raises(physode.InvalidArgumentError, match=message):
        Trainer(neural(), spiral_data(), **overrides)


def test_a_negative_observe_index_counts_from_the_end_as_in_python():
    losses = []
    for observe in ([1], [-1], [0]):
        trainer = Trainer(neural(), spiral_data(), epochs=1, window=6, observe=observe)
        losses.append(trainer.fit().history[0]["loss"])
    assert losses[0] == losses[1] != losses[2]


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("lr_gamma", "0.5"),
        ("grad_clip", "1"),
        ("val_fraction", "0.1"),
        ("step_size", "0.1"),
        ("time_limit", "60"),
        ("lr", True),
        ("lr", float("inf")),
        ("restore_best", "no"),
        ("progress", 1),
        ("log", 5),
        ("observe", 0),
    ],
)
def test_a_setting_of_the_wrong_type_is_refused_by_name_not_with_a_type_error(setting, value):
    with pytest.raises(physode.InvalidArgumentError, match=f"{setting}={re.escape(repr(value))} "):
        TrainConfig(**{setting: value}).validate()


def test_a_misspelt_setting_or_a_config_that_is_not_a_train_config_is_refused_by_name():
    misspelt = r"unknown training settings \['epoch'\]; valid ones are .*'epochs'"
    with pytest.raises(physode.InvalidArgumentError, match=misspelt):
        Trainer(neural(), spiral_data(), epoch=3)
    with pytest.raises(physode.InvalidArgumentError, match="config must be a .*Config, got dict"):
        Trainer(neural(), spiral_data(), {"epochs": 3})


def test_validation_windows_on_an_uneven_grid_are_solved_at_their_own_times():
    t = torch.linspace(0, 2, 21, dtype=torch.float64)  # even: training windows share solves
    t_val = torch.tensor([0.0, 0.1, 0.3, 0.6, 1.0, 1.5, 2.1, 2.8, 3.6], dtype=torch.float64)
    scale = torch.tensor([1.0, -2.0], dtype=torch.float64)
    data, val = ((s, torch.exp(-s)[None, :, None] * scale) for s in (t, t_val))
    trainer = Trainer(LinearDecay(1.0), data, val_data=val, window=3, batch_size=16, rtol=1e-10,
                      atol=1e-12)  # fmt: skip
    assert trainer.validation_loss() < 1e-14  # the model is the exact law


class CountedDecay(LinearDecay):
    """LinearDecay that counts its calls and the rows (windows) they evaluate."""

    def __init__(self) -> None:
        super().__init__(0.5)
        self.calls = self.rows = 0

    def forward(self, t, y):
        self.calls += 1
        self.rows += y.shape[0]
        return super().forward(t, y)


def test_val_batch_size_sets_the_windows_a_validation_solve_takes_and_leaves_training_batches():
    data = spiral_data()  # validation: 4 trajectories of 21 points in windows of 5, 20 windows

    def solved(**setting) -> tuple[float, float, float]:
        model = CountedDecay()
        trainer = Trainer(model, data, val_data=data, window=5, batch_size=2, method="rk4",
                          step_size=0.1, **setting)  # fmt: skip
        loss = trainer.validation_loss()
        validation_rows = model.rows / model.calls  # windows per evaluation
        model.calls = model.rows = 0
        trainer.train_epoch()
        return loss, validation_rows, model.rows / model.calls

    loss, validation_rows, training_rows = solved()
    assert validation_rows == training_rows == 2  # batch_size by default: 10 solves
    loss_together, validation_rows, training_rows = solved(val_batch_size=64)
    assert validation_rows == 20 and training_rows == 2  # one solve of all 20 windows
    assert loss_together == pytest.approx(loss, rel=1e-13)


@pytest.mark.parametrize(("step_control", "unit"), [("shared", "calls"), ("per-sample", "rows")])
def test_logged_nfe_counts_calls_when_shared_and_window_evaluations_when_per_sample(
    step_control, unit
):
    t, ys = spiral_data()
    model = CountedDecay()
    trainer = Trainer(model, (t, ys), epochs=1, window=6, batch_size=8, gradient="disc-opt",
                      step_control=step_control)  # fmt: skip
    row = trainer.train_epoch()
    assert row["nfe_forward"] == getattr(model, unit) and row["nfe_backward"] == 0
    assert model.rows > model.calls  # the batches hold several windows


def test_per_sample_step_control_trains_and_aca_follows_disc_opt_exactly():
    t, ys = spiral_data()
    results = {}
    for gradient in ("disc-opt", "aca"):
        trainer = Trainer(neural(), (t, ys), epochs=3, window=6, batch_size=8,
                          batches_per_epoch=2, lr=0.02, gradient=gradient,
                          step_control="per-sample")  # fmt: skip
        results[gradient] = trainer.fit()
    losses = [row["loss"] for row in results["aca"].history]
    assert losses[-1] < losses[0]
    # Same discretisation, exact gradients: the two runs take the same optimisation path.
    for a, b in zip(results["aca"].history, results["disc-opt"].history, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-9)


def test_the_trainer_runs_on_the_models_device_unless_told_otherwise():
    t, ys = spiral_data()
    model = neural()
    trainer = Trainer(model, (t, ys), epochs=1, window=6)
    assert trainer.device == torch.device("cpu")
    assert trainer.train_data.states.device == trainer.device
    trainer = Trainer(model, (t, ys), epochs=1, window=6, device="cpu")
    assert trainer.device == torch.device("cpu") and trainer.config.to_dict()["device"] == "cpu"


def _devices() -> list[str]:
    return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


@pytest.mark.parametrize("device", _devices())
def test_training_on_a_device_follows_the_cpu_run(device, tmp_path):
    """Model, data, checkpoints and evaluation on ``device``: on a GPU where one is present,
    else a second CPU run, which must repeat the first exactly."""
    t, ys = spiral_data()
    runs = []
    for i, where in enumerate(("cpu", device)):
        trainer = Trainer(neural(), (t, ys), epochs=3, window=6, batch_size=8, lr=0.02,
                          val_data=(t, ys), device=where,
                          checkpoint_dir=str(tmp_path / f"run{i}"))  # fmt: skip
        losses = [x for row in trainer.fit().history for x in (row["loss"], row["val_loss"])]
        assert next(trainer.model.parameters()).device.type == torch.device(where).type
        report = trainer.evaluate((t, ys), conservation=False)
        assert report.predicted.device.type == torch.device(where).type
        runs.append([*losses, report.mse])
    assert len(runs[1]) == 7 and runs[1][0] > runs[1][4]  # three epochs that lowered the loss
    if device == "cpu":
        assert runs[1] == runs[0]
    else:
        assert runs[1] == pytest.approx(runs[0], rel=1e-9)
    # A checkpoint written on the GPU resumes on the CPU.
    resumed = Trainer(neural(), (t, ys), epochs=4, window=6, batch_size=8, lr=0.02,
                      device="cpu")  # fmt: skip
    resumed.load_checkpoint(tmp_path / "run1" / "last.pt")
    assert resumed.epoch == 3 and len(resumed.fit().history) == 4


def test_an_empty_data_set_is_refused():
    t = torch.linspace(0, 1, 5, dtype=torch.float64)
    with pytest.raises(physode.InvalidArgumentError, match="empty"):
        Trainer(neural(), (t, torch.zeros(0, 5, 2, dtype=torch.float64)))


def test_config_reads_toml_and_refuses_unknown_keys(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('[train]\nepochs = 7\ngradient = "disc-opt"\nobserve = [0]\n')
    config = TrainConfig.from_toml(path)
    assert (config.epochs, config.gradient, config.observe) == (7, "disc-opt", [0])
    path.write_text("[train]\nepoch = 7\n")
    with pytest.raises(physode.InvalidArgumentError, match="unknown training settings"):
        TrainConfig.from_toml(path)


def test_rollout_report_separates_errors_within_and_beyond_the_horizon():
    t, ys = spiral_data(n=2, points=41, t_end=4.0)
    data = Trajectories(t, ys)
    exact = rollout_report(lambda s, y: y @ A, data, horizon=2.0, rtol=1e-10, atol=1e-12,
                           conservation=False)  # fmt: skip
    assert exact.mse_within < 1e-14 and exact.mse_beyond < 1e-14
    wrong = rollout_report(lambda s, y: y @ (1.1 * A), data, horizon=2.0, conservation=False)
    assert 0 < wrong.mse_within < wrong.mse_beyond
    # The sample at the horizon itself counts as within it.
    assert bool((t == 2.0).any())
    error = (wrong.predicted[:, 1:] - wrong.truth[:, 1:]).pow(2)
    within = t[1:] <= 2.0
    assert wrong.mse_within == pytest.approx(error[:, within].mean().item(), rel=1e-12)
    assert wrong.mse_beyond == pytest.approx(error[:, ~within].mean().item(), rel=1e-12)
    assert len(wrong.mse_per_trajectory) == 2
    assert json.dumps(wrong.to_dict())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    ("t_end", "n_times"),
    [(0.1, 2), (0.3, 4), (0.35, 4), (0.7, 8), (2.0, 21), (2.3, 24), (2.35, 24)],
)
def test_a_t_end_at_a_rounded_sample_time_takes_it_and_one_between_two_the_earlier(
    dtype, t_end, n_times
):
    # linspace's 0.3 is 0.30000000000000004 (float64) and float32's 0.1 is 0.10000000149011612:
    # t_end=0.3 rolled out to 0.2, t_end=0.1 on float32 data was refused, and t_end=2.35 added
    # 4 times (round(3.5)), the last at 2.4, after t_end.
    t = torch.linspace(0, 2, 21, dtype=dtype)
    times = rollout_times(t, t_end)
    assert len(times) == n_times and times.dtype == dtype
    assert float(times[-1]) == pytest.approx((n_times - 1) / 10, abs=1e-6)
    data = Trajectories(t, torch.zeros(1, 21, 1, dtype=dtype))
    assert len(data.until(t_end).t) == min(n_times, 21)


def test_the_sample_at_a_rounded_horizon_counts_within_it():
    # horizon=0.3 on data whose sample there is 0.30000000000000004: that sample's error
    # was counted beyond the horizon.
    t = torch.linspace(0, 2, 21, dtype=torch.float64)
    ys = torch.exp(-t)[None, :, None].clone()
    ys[0, 3] += 1.0  # the one wrong observation, at the horizon
    report = rollout_report(lambda s, y: -y, Trajectories(t, ys), horizon=0.3,
                            rtol=1e-10, atol=1e-12, conservation=False)  # fmt: skip
    assert report.mse_within == pytest.approx(1 / 3, rel=1e-8)
    assert report.mse_beyond < 1e-15


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rollout_report_by_default_solves_float32_data_without_a_tolerance_warning(dtype):
    # Its default rtol, 1e-7, is below float32's resolution (1.19e-7): every rollout of float32
    # data warned "rtol=1e-07 is below the resolution of torch.float32 ... for tighter
    # tolerances use float64", of a tolerance the caller never gave.
    t, ys = spiral_data(n=2, points=21, t_end=2.0)
    data = Trajectories(t.to(dtype), ys.to(dtype))
    wrong = lambda s, y: y @ (1.1 * A).to(dtype)  # noqa: E731
    with warnings.catch_warnings():
        warnings.simplefilter("error", physode.PhysodeWarning)
        report = rollout_report(wrong, data, conservation=False)
    explicit = rollout_report(wrong, data, rtol=max(1e-7, torch.finfo(dtype).eps))
    assert report.mse == explicit.mse > 0
    if dtype == torch.float32:  # an rtol the caller gave still warns where it cannot be met
        with pytest.warns(physode.PhysodeWarning, match="below the resolution of torch.float32"):
            rollout_report(wrong, data, rtol=1e-7, conservation=False)


def test_rollout_report_reads_a_data_set_path_as_its_test_split_as_evaluate_does(oscillator_h5):
    model = PhysicsModel("harmonic_oscillator", learnable=["k"], init={"k": 1.3})
    trainer = Trainer(model, oscillator_h5, epochs=1)
    expected = trainer.evaluate(t_end=3.0)
    for data in (oscillator_h5, str(oscillator_h5), physode.data.load(oscillator_h5),
                 physode.data.TrajectoryDataset(oscillator_h5, split="test")):  # fmt: skip
        report = rollout_report(model, data, t_end=3.0, rtol=trainer.config.rtol,
                                atol=trainer.config.atol)  # the trainer's solver settings
        assert torch.equal(report.truth, expected.truth)
        assert torch.equal(report.predicted, expected.predicted)
        assert report.mse == expected.mse > 0 and report.conservation_truth is not None
    stored = physode.data.load(oscillator_h5)
    assert report.truth.shape[0] == len(stored.split_indices("test")) == 1
    with pytest.raises(physode.InvalidArgumentError, match="cannot read trajectories from a dict"):
        rollout_report(model, {"t": stored.t})


@pytest.mark.parametrize(
    ("split", "validates_on", "evaluates_on"),
    [("all", None, None), ("test", "val", "val"), ("val", None, "test"), ("train", "val", "test")],
)
def test_a_trajectory_dataset_keeps_the_trajectories_it_trains_on_out_of_validation_and_tests(
    oscillator_h5, split, validates_on, evaluates_on
):
    # A dataset of split "all" trained on every trajectory, validated on the stored val split
    # and evaluate() reported on the stored test split, as if held out, without a note.
    stored = physode.data.load(oscillator_h5)
    model = PhysicsModel("harmonic_oscillator", learnable=["k"], init={"k": 1.3})
    dataset = physode.data.TrajectoryDataset(oscillator_h5, split=split)
    trainer = Trainer(model, dataset, epochs=1)
    assert len(trainer.train_data) == len(stored.split_indices(split))
    expected = {name: None if name is None else trainer_data(stored, name)
                for name in {validates_on, evaluates_on}}  # fmt: skip
    if validates_on is None:
        assert trainer.val_data is None
    else:
        assert torch.equal(trainer.val_data.states, expected[validates_on])
    held_out = trainer.held_out_data()
    if evaluates_on is None:
        assert held_out is None
        with pytest.raises(physode.InvalidArgumentError, match="no held-out trajectories"):
            trainer.evaluate()
    else:
        assert torch.equal(held_out.states, expected[evaluates_on])
        report = trainer.evaluate()
        assert (report.note is not None) == (evaluates_on == "val")


def trainer_data(stored, split: str) -> torch.Tensor:
    """The states of a stored split, as the trainer reads them."""
    return torch.from_numpy(stored.states[stored.split_indices(split)])


def test_the_data_set_physode_data_load_opened_trains_and_reports_as_its_path(oscillator_h5):
    # It was refused: "cannot read trajectories from a TrajectoryFile; pass a path ...".
    stored = physode.data.load(oscillator_h5)
    runs = []
    for data in (oscillator_h5, stored):
        model = PhysicsModel("harmonic_oscillator", learnable=["k"], init={"k": 1.3})
        trainer = Trainer(model, data, epochs=2, window=5)
        trainer.fit()
        runs.append((trainer, trainer.evaluate(t_end=3.0), model.physical_parameters()))
    (by_path, from_path, k_path), (by_file, from_file, k_file) = runs
    assert k_file == k_path != {"k": 1.3}
    assert torch.equal(by_file.train_data.states, by_path.train_data.states)
    assert torch.equal(by_file.val_data.states, by_path.val_data.states)  # its stored 'val'
    assert torch.equal(from_file.predicted, from_path.predicted)
    assert from_file.mse == from_path.mse > 0
    assert torch.equal(by_path.evaluate(stored, t_end=3.0).truth, from_path.truth)  # its 'test'


def test_a_rollout_runs_the_model_in_eval_mode_and_leaves_its_mode_as_it_was():
    t, ys = spiral_data(n=2, points=11)
    torch.manual_seed(0)

    class Dropping(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(2, 16), nn.Dropout(0.5), nn.Linear(16, 2))

        def forward(self, t, y):
            return self.net(y)

    field = Dropping().double()
    first = rollout_report(field, Trajectories(t, ys), conservation=False, method="rk4",
                           step_size=0.1)  # fmt: skip
    again = rollout_report(field, Trajectories(t, ys), conservation=False, method="rk4",
                           step_size=0.1)  # fmt: skip
    assert torch.equal(first.predicted, again.predicted)  # no dropout: the same rollout
    assert field.training
    field.eval()
    rollout_report(field, Trajectories(t, ys), conservation=False, method="rk4", step_size=0.1)
    assert not field.training


@pytest.mark.parametrize("method", ["dopri5", "tsit5"])
def test_rollout_report_refuses_a_step_size_for_an_adaptive_method_as_the_settings_do(method):
    # The solver's own message advised a first_step, which rollout_report does not take.
    t, ys = spiral_data(n=2, points=11)
    with pytest.raises(physode.InvalidArgumentError) as error:
        rollout_report(lambda s, y: y @ A, Trajectories(t, ys), method=method, step_size=0.1)
    assert str(error.value) == (
        "step_size=0.1 is for fixed-step methods (euler, midpoint, rk4, leapfrog, yoshida4); "
        f"method={method!r} chooses its own steps from rtol and atol: leave it out, or choose a "
        "fixed-step method"
    )


def test_rollout_report_refuses_a_max_step_for_a_fixed_step_method_as_the_settings_do():
    t, ys = spiral_data(n=2, points=11)
    with pytest.raises(physode.InvalidArgumentError) as error:
        rollout_report(lambda s, y: y @ A, Trajectories(t, ys), method="rk4", step_size=0.1,
                       max_step=0.05)  # fmt: skip
    assert str(error.value) == (
        "max_step=0.05 is for adaptive methods (heun, bosh3, dopri5, tsit5, dop853); "
        "method='rk4' takes every step of step_size: leave it out, or pass the step you want "
        "as step_size"
    )


@pytest.mark.parametrize(
    ("observe", "message"),
    [
        ([2], r"observe=\[2\] has indices \[2\] outside the 2 state components$"),
        ([0, -2], r"observe=\[0, -2\] gives component 0 twice, as 0 and -2 "),
        ([], r"observe=\[\] must be a non-empty list of state indices, or None$"),
        (0, r"observe=0 must be a non-empty list"),
    ],
)
def test_rollout_report_refuses_an_observe_the_settings_refuse(observe, message):
    # An index outside the state failed with torch's IndexError, and a component given twice
    # weighed twice in the errors.
    t, ys = spiral_data(n=2, points=11)
    with pytest.raises(physode.InvalidArgumentError, match=message):
        rollout_report(lambda s, y: y @ A, Trajectories(t, ys), observe=observe)
    report = rollout_report(lambda s, y: y @ A, Trajectories(t, ys), observe=(-1,))
    assert report.mse < 1e-10


@pytest.mark.parametrize("horizon", [float("nan"), float("inf"), "soon", True])
def test_rollout_report_refuses_a_horizon_that_is_not_a_finite_time(horizon):
    # horizon=nan compared false with every time: every error counted as beyond the horizon,
    # mse_within came back None, and nothing said why.
    t, ys = spiral_data(n=2, points=11)
    with pytest.raises(physode.InvalidArgumentError, match=r"horizon=.* must be the end"):
        rollout_report(lambda s, y: y @ A, Trajectories(t, ys), horizon=horizon)
    report = rollout_report(lambda s, y: y @ A, Trajectories(t, ys), horizon=float(t[5]))
    assert report.mse_within < 1e-10 and report.mse_beyond < 1e-10


@pytest.mark.parametrize("max_step", [None, 0.02])
def test_max_step_caps_the_solves_of_training_validation_rollout_calibration_and_truth(
    monkeypatch, max_step
):
    # Pendulums over [0, 1], l learned per trajectory; held out over [0, 2], rolled out to 3
    # (beyond the data: the truth is simulated), calibrated on [0, 1] first.
    model = PhysicsModel("pendulum", per_trajectory=["l"])
    trainer = Trainer(model, swinging([0.5, 0.8, 1.2, 1.6]), val_data=swinging([0.7, 1.1]),
                      epochs=1, batch_size=4, rtol=1e-6, atol=1e-8, restore_best=False,
                      max_step=max_step)  # fmt: skip
    held_out = swinging([0.6, 1.4], points=21, t_end=2.0)
    calls = recorded_solves(monkeypatch)
    trainer.fit()
    fitting = len(calls)
    trainer.evaluate(held_out, t_end=3.0, calibrate=True, conservation=False,
                     calibration_iterations=2)  # fmt: skip
    phases = {
        "training": [c for c in calls[:fitting] if c["grad"]],
        "validation": [c for c in calls[:fitting] if not c["grad"]],
        "calibration": [c for c in calls[fitting:] if c["calibration"]],
        "rollout": [c for c in calls[fitting:] if c["method"] == "dopri5" and not c["grad"]],
        "truth": [c for c in calls[fitting:] if c["method"] == "dop853"],
    }
    assert all(phases.values()), {name: len(found) for name, found in phases.items()}
    assert all(c["max_step"] == max_step for c in calls)
    # Capped, a solve takes at least its span over max_step steps; uncapped, every phase
    # steps far longer (the pendulum is smooth at these tolerances).
    for name, found in phases.items():
        fewest = min(c["steps"] - c["span"] / 0.02 for c in found)
        if max_step is None:
            assert fewest < -10, name
        else:
            assert fewest > -1e-6, name


def test_a_checkpoint_written_before_max_step_resumes_and_a_changed_max_step_is_refused(
    tmp_path,
):
    t, ys = spiral_data(n=4, points=5)
    trainer = Trainer(neural(), (t, ys), epochs=1)
    trainer.fit()
    state = trainer.state_dict()
    del state["config"]["max_step"]  # as physode before max_step (2026-12-07) saved it
    torch.save(state, tmp_path / "old.pt")
    resumed = Trainer(neural(), (t, ys), epochs=2)
    resumed.load_checkpoint(tmp_path / "old.pt")
    assert resumed.epoch == 1
    resumed.fit()
    assert Trainer(neural(), (t, ys), init_from=tmp_path / "old.pt").epoch == 0
    capped = Trainer(neural(), (t, ys), epochs=2, max_step=0.05)
    with pytest.raises(physode.InvalidArgumentError, match="max_step: None -> 0.05"):
        capped.load_checkpoint(tmp_path / "old.pt")


def test_a_checkpoint_written_before_val_batch_size_resumes_and_a_changed_one_is_refused(
    tmp_path,
):
    # Validation losses decide the best epoch, early stopping and the plateau schedule, and a
    # batch of another size solves them to other rounding: a resume must keep it.
    t, ys = spiral_data(n=6, points=5)
    trainer = Trainer(neural(), (t, ys), epochs=1, val_fraction=0.5)
    trainer.fit()
    state = trainer.state_dict()
    del state["config"]["val_batch_size"]  # as physode before val_batch_size (2026-12-07)
    torch.save(state, tmp_path / "old.pt")
    resumed = Trainer(neural(), (t, ys), epochs=2, val_fraction=0.5)
    resumed.load_checkpoint(tmp_path / "old.pt")
    assert resumed.epoch == 1
    other = Trainer(neural(), (t, ys), epochs=2, val_fraction=0.5, val_batch_size=64)
    with pytest.raises(physode.InvalidArgumentError, match="val_batch_size: None -> 64"):
        other.load_checkpoint(tmp_path / "old.pt")


@pytest.mark.parametrize(
    ("saved", "resumed"),
    [
        ({}, {"val_batch_size": 16}),  # None stands for batch_size, 16 by default
        ({"val_batch_size": 4, "batch_size": 4}, {"batch_size": 4}),
        ({}, {"dtype": "float64"}),  # None keeps the data's dtype, float64 here
        ({"dtype": "float64"}, {}),
    ],
)
def test_a_resume_compares_the_values_that_settings_left_out_stand_for(tmp_path, saved, resumed):
    # A run saved with val_batch_size=None was refused on resume with val_batch_size set to
    # the batch_size None stands for ("val_batch_size: None -> 16"), and dtype=None likewise.
    t, ys = spiral_data(n=6, points=5)
    trainer = Trainer(neural(), (t, ys), epochs=1, val_fraction=0.5, **saved)
    trainer.fit()
    path = trainer.save_checkpoint(tmp_path / "last.pt")
    again = Trainer(neural(), (t, ys), epochs=2, val_fraction=0.5, **resumed)
    again.load_checkpoint(path)
    assert again.epoch == 1
    other = {**saved, **resumed, "val_batch_size": 2, "dtype": "float32"}
    message = r"val_batch_size: (None|4|16) -> 2, dtype: (None|'float64') -> 'float32'\)"
    with pytest.raises(physode.InvalidArgumentError, match=message):
        Trainer(neural(), (t, ys), epochs=2, val_fraction=0.5, **other).load_checkpoint(path)


def test_a_rollout_that_blew_up_and_a_nan_loss_are_written_as_valid_json(tmp_path):
    t, ys = spiral_data(n=2, points=11)
    report = rollout_report(lambda s, y: y @ A, Trajectories(t, ys), conservation=False)
    report.mse, report.mse_per_trajectory = math.nan, [math.inf, 0.5]  # as from a blow-up
    record = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert record["mse"] is None and record["mse_per_trajectory"] == [None, 0.5]
    write_log([{"epoch": 1, "loss": math.nan}], tmp_path / "log.json")
    assert json.loads((tmp_path / "log.json").read_text()) == [{"epoch": 1, "loss": None}]


def test_a_rollout_of_data_after_the_horizon_reports_no_error_within_it():
    t, ys = spiral_data(n=2, points=41, t_end=4.0)
    later = Trajectories(t[20:], ys[:, 20:])
    report = rollout_report(lambda s, y: y @ A, later, horizon=1.0, rtol=1e-10, atol=1e-12,
                            conservation=False)  # fmt: skip
    assert report.mse_within is None and report.mse_beyond < 1e-14
    assert "mse within horizon  -" in str(report)
    assert json.loads(json.dumps(report.to_dict()))["mse_within"] is None


def test_lists_of_python_floats_are_read_as_float64_and_arrays_keep_their_dtype():
    t, ys = spiral_data(n=1, points=5)
    listed = Trajectories(t.tolist(), ys[0].tolist())
    assert listed.t.dtype == listed.states.dtype == torch.float64
    assert torch.equal(listed.t, t) and torch.equal(listed.states, ys[:1])
    assert Trainer(neural(), (t.tolist(), ys.tolist()), epochs=1).train_data.t.dtype == (
        torch.float64
    )
    single = Trajectories(t.numpy().astype(np.float32), ys.numpy().astype(np.float32))
    assert single.states.dtype == torch.float32
    with pytest.raises(physode.InvalidArgumentError, match="states must be .* rectangular list"):
        Trajectories([0.0, 1.0], [[1.0], [1.0, 2.0]])


def _oscillator(n: int, points: int, t_end: float) -> tuple:
    """Harmonic-oscillator trajectories (m = k = 1) in closed form, as NumPy arrays."""
    t = np.linspace(0.0, t_end, points)
    phase = np.linspace(0.0, 3.0, n)[:, None]
    return t, np.stack([np.cos(t + phase), -np.sin(t + phase)], axis=-1)


def test_evaluating_tensor_data_beyond_their_end_without_a_system_says_how_to_give_one():
    t, ys = spiral_data()
    trainer = Trainer(neural(), (t, ys), epochs=1, val_fraction=0.25)
    trainer.fit()
    message = r"no system .*Trajectories\(t, ys, system=physode.systems.load\(...\)\).*test_data"
    with pytest.raises(physode.InvalidArgumentError, match=message):
        trainer.evaluate(t_end=4.0)


def test_evaluation_beyond_numpy_data_uses_the_system_given_with_the_trajectories():
    system = physode.systems.load("harmonic_oscillator")
    train = Trajectories(*_oscillator(4, 21, 2.0), system=system)
    trainer = Trainer(PhysicsModel(system, learnable=["k"]), train, epochs=1, window=5)
    trainer.fit()
    t_test, ys_test = _oscillator(2, 21, 2.0)
    report = trainer.evaluate(test_data=(t_test, ys_test), t_end=4.0)
    # m = k = 1 is the truth, and training from it keeps it close: the rollout follows cos(t).
    expected = np.cos(report.t.numpy()[None] + np.array([[0.0], [3.0]]))
    assert report.truth.shape == (2, 41, 2) and report.note is None
    np.testing.assert_allclose(report.truth[..., 0].numpy(), expected, atol=1e-8)
    assert report.mse_beyond < 1e-4


def test_a_report_on_the_validation_trajectories_says_they_chose_the_best_epoch():
    t, ys = spiral_data()
    trainer = Trainer(neural(), (t, ys), epochs=1, val_fraction=0.25)
    trainer.fit()
    report = trainer.evaluate()
    assert "validation trajectories, which chose the best epoch" in report.note
    assert "note: these are the validation" in str(report) and report.to_dict()["note"]
    assert trainer.evaluate(test_data=(t, ys)).note is None
    unselected = Trainer(neural(), (t, ys), epochs=1, val_fraction=0.25, restore_best=False)
    assert unselected.evaluate().note is None


@pytest.mark.parametrize(
    ("n", "fraction", "n_val"),
    [
        (2, 0.9, 1),  # round(1.8) held out both trajectories, which was refused
        (5, 0.9, 4),  # round(4.5) is 4; 4.5 is a tie, which goes to training as in a data set
        (6, 0.25, 1),  # round(1.5) is 2; the tie goes to training
        (3, 0.01, 1),  # below one trajectory, still one
        (4, 0.5, 2),
    ],
)
def test_val_fraction_holds_out_what_a_data_sets_split_would_and_leaves_both_parts_filled(
    n, fraction, n_val
):
    t, ys = spiral_data(n=n, points=5)
    trainer = Trainer(neural(), (t, ys), epochs=1, val_fraction=fraction)
    assert (len(trainer.val_data), len(trainer.train_data)) == (n_val, n - n_val)
    # The two parts are the trajectories, each once.
    everything = torch.cat([trainer.train_data.states, trainer.val_data.states])
    assert sorted(everything[:, 0, 0].tolist()) == sorted(ys[:, 0, 0].tolist())


def test_a_resume_on_data_that_hold_out_other_validation_trajectories_is_refused(tmp_path):
    t, ys = spiral_data(n=8, points=5)
    config = dict(epochs=1, val_fraction=0.25, checkpoint_dir=str(tmp_path))
    Trainer(neural(), (t, ys), **config).fit()
    more = torch.cat([ys, ys[:4]])  # 12 trajectories: the same seed holds out three others
    resumed = Trainer(neural(), (t, more), **config)
    with pytest.raises(physode.InvalidArgumentError, match=r"settings differ .*val_index: \["):
        resumed.load_checkpoint(tmp_path / "last.pt")
    Trainer(neural(), (t, ys), **config).load_checkpoint(tmp_path / "last.pt")  # the same data


@pytest.mark.parametrize("other", ["states", "val_data", "system"])
def test_a_resume_on_other_data_is_refused_naming_what_differs(tmp_path, other):
    # Other trajectories of the same shape, or another system's, resumed silently: the run
    # went on as the continuation of one trained on other data.
    t, ys = spiral_data(n=4, points=5)
    val = (t, ys[:1] * 0.5)
    Trainer(neural(), (t, ys), val_data=val, epochs=1, checkpoint_dir=str(tmp_path)).fit()
    if other == "states":
        ys = ys.clone()
        ys[2, 3, 0] += 1e-9
    elif other == "val_data":
        val = (t, ys[1:2])
    else:  # a harmonic oscillator's trajectories, of the spiral's shape
        oscillator = physode.systems.load("harmonic_oscillator")
        ys = physode.odeint(oscillator.vector_field(), ys[:, 0], t).transpose(0, 1)
    part = "validation data's states" if other == "val_data" else "training data's states"
    resumed = Trainer(neural(), (t, ys), val_data=val, epochs=2)
    with pytest.raises(physode.InvalidArgumentError, match=rf"cannot resume .*last.pt: the saved "
                       rf"run was trained on other data \({part}: '\(.* float64 #"):  # fmt: skip
        resumed.load_checkpoint(tmp_path / "last.pt")
    assert resumed.epoch == 0
    if other == "val_data":  # the run may go on without validation data
        Trainer(neural(), (t, ys), epochs=2).load_checkpoint(tmp_path / "last.pt")


def test_a_checkpoint_that_does_not_describe_its_data_still_resumes(tmp_path):
    # Checkpoints written before physode kept a description of the data resume unchecked.
    t, ys = spiral_data(n=4, points=5)
    trainer = Trainer(neural(), (t, ys), epochs=1)
    trainer.fit()
    state = trainer.state_dict()
    del state["data"]
    torch.save(state, tmp_path / "old.pt")
    resumed = Trainer(neural(), (t, ys), epochs=2)
    resumed.load_checkpoint(tmp_path / "old.pt")
    assert resumed.epoch == 1


def test_val_fraction_of_a_single_trajectory_is_refused_with_the_count():
    t, ys = spiral_data(n=1, points=5)
    with pytest.raises(physode.InvalidArgumentError, match=r"val_fraction=0.5 needs at least 2 "
                       r"trajectories, .* the data hold 1; pass val_data="):  # fmt: skip
        Trainer(neural(), (t, ys), epochs=1, val_fraction=0.5)


# ---------------------------------------------------------------------- HDF5 data sets and the CLI


@pytest.fixture(scope="module")
def lotka_volterra_h5(tmp_path_factory):
    """Eight Lotka-Volterra trajectories with a 4/2/2 split."""
    path = tmp_path_factory.mktemp("data") / "lv.h5"
    physode.data.simulate("lotka_volterra", trajectories=8, t_end=2.0, points=21, out=path,
                          seed=0, split=(0.5, 0.25, 0.25), quiet=True)  # fmt: skip
    return path


def test_training_on_an_hdf5_file_uses_its_splits_and_reports_conservation(lotka_volterra_h5):
    stored = physode.data.load(lotka_volterra_h5)
    model = PhysicsModel("lotka_volterra", ["alpha", "delta"], init={"alpha": 1.0, "delta": 2.0})
    trainer = Trainer(model, lotka_volterra_h5, epochs=6, optimizer="lbfgs", lr=1.0,
                      batch_size=8, rtol=1e-8, atol=1e-10)  # fmt: skip
    assert len(trainer.train_data) == len(stored.split["train"])
    assert len(trainer.val_data) == len(stored.split["val"])
    result = trainer.fit()
    assert result.physical_parameters["alpha"] == pytest.approx(1.3, rel=1e-3)
    assert result.physical_parameters["delta"] == pytest.approx(1.8, rel=1e-3)
    assert result.best_epoch is not None
    report = trainer.evaluate(t_end=4.0)
    assert report.predicted.shape == (len(stored.split["test"]), 41, 2)
    assert report.mse_beyond < 1e-6
    truth = report.conservation_truth["lotka_volterra_integral"]
    assert float(truth.max_rel_drift.max()) < 1e-8
    assert "conservation of the model's rollouts" in str(report)


@pytest.mark.parametrize("bad", [float("inf"), -float("inf")])
@pytest.mark.parametrize("role", ["data", "val_data"])
def test_infinite_states_are_refused_naming_the_trajectory_and_time_index(role, bad):
    t, ys = spiral_data()
    broken = ys.clone()
    broken[2, 5, 1] = bad
    broken[3, 7, 0] = float("nan")  # a missing value, which is allowed
    broken[3, 8, 0] = bad
    data, val = ((t, broken), (t, ys)) if role == "data" else ((t, ys), (t, broken))
    message = (r"2 infinite values, first in trajectory 2 at time index 5 "
               r"\(t=0.5\); affected: trajectories \[2, 3\]; leave those values out \(NaN "
               r"marks a missing observation\)")  # fmt: skip
    with pytest.raises(physode.InvalidArgumentError, match=message) as caught:
        Trainer(neural(), data, val_data=val, epochs=1)
    assert str(caught.value).startswith("val_data: " if role == "val_data" else "bad trajectories")


def test_non_finite_times_are_refused_by_index_not_called_unordered():
    t, ys = spiral_data()
    t = t.clone()
    t[4] = float("nan")
    with pytest.raises(physode.InvalidArgumentError, match=r"non-finite times at indices \[4\]"):
        Trajectories(t, ys)


def test_a_stored_split_with_nan_states_is_refused_naming_the_files_trajectory(
    lotka_volterra_h5, tmp_path
):
    import shutil

    import h5py

    path = tmp_path / "nan.h5"
    shutil.copy(lotka_volterra_h5, path)
    val = physode.data.load(path).split_indices("val")
    with h5py.File(path, "r+") as f:
        states = f["states"][()]
        states[val[-1], 3, 0] = np.nan
        f["states"][...] = states
    message = f"'val' split of .*nan.h5 is not finite .*in trajectory {val[-1]} at time index 3"
    with pytest.raises(physode.InvalidArgumentError, match=message):
        Trainer(neural(), path, epochs=1)


def test_a_trajectory_dataset_gives_its_trajectories_and_windows(lotka_volterra_h5):
    dataset = physode.data.TrajectoryDataset(lotka_volterra_h5, split="train", window=5,
                                             stride=2)  # fmt: skip
    trainer = Trainer(neural(), dataset, epochs=1)
    assert (trainer.config.window, trainer.config.window_stride) == (5, 2)
    assert len(trainer.train_windows) == len(dataset)
    assert trainer.val_data is not None


def test_a_trajectory_dataset_whose_file_was_simulated_again_is_refused(tmp_path):
    """The trainer read the new file's states with the old dataset's split (another seed: other
    parameters and states, the same shapes)."""
    out = tmp_path / "data.h5"
    settings = {"trajectories": 6, "out": out, "params": "sample", "t_end": 2.0, "points": 9,
                "split": (0.5, 0.5, 0.0), "quiet": True}  # fmt: skip
    physode.data.simulate("harmonic_oscillator", seed=1, **settings)
    dataset = physode.data.TrajectoryDataset(out, split="train", window=5)
    physode.data.simulate("harmonic_oscillator", seed=2, force=True, **settings)
    with pytest.raises(physode.DataFormatError, match="data.h5 was replaced by another data set"):
        as_trajectories(dataset)
    with pytest.raises(physode.DataFormatError, match="make a new TrajectoryDataset"):
        Trainer(neural(), dataset, epochs=1)
    fresh = physode.data.TrajectoryDataset(out, split="train", window=5)
    with physode.data.load(out) as stored:
        index = stored.split_indices("train")
        np.testing.assert_array_equal(as_trajectories(fresh).states.numpy(), stored.states[index])


def test_a_window_longer_than_the_stored_trajectories_is_refused(lotka_volterra_h5):
    with pytest.raises(physode.InvalidArgumentError, match="window=30 is longer"):
        Trainer(neural(), lotka_volterra_h5, window=30)


def test_small_three_body_problem_recovers_the_masses():
    system = physode.systems.load("three_body_aca")
    t = torch.linspace(0, 0.05, 11, dtype=torch.float64)
    ys = physode.odeint(system.vector_field(), system.initial_state("aca").double(), t,
                        method="dop853", rtol=1e-12, atol=1e-12)  # fmt: skip
    model = PhysicsModel(system, ["m1", "m2", "m3"], init={"m1": 1.0, "m2": 1.05, "m3": 0.95})
    Trainer(model, (t, ys), epochs=12, optimizer="lbfgs", lr=1.0, observe=list(range(9)),
            rtol=1e-10, atol=1e-10).fit()  # fmt: skip
    masses = model.physical_parameters()
    for name, true in (("m1", 1.1), ("m2", 1.1), ("m3", 0.9)):
        assert masses[name] == pytest.approx(true, rel=1e-4)


def _cli(argv: list[str]):
    import argparse

    parser = argparse.ArgumentParser(prog="physode")
    add_train_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["train", *argv])


def test_physode_train_trains_from_flags_and_writes_model_and_report(lotka_volterra_h5, tmp_path):
    args = _cli([str(lotka_volterra_h5), "--model", "physics", "--learnable", "alpha,delta",
                 "--init", "alpha=1.0,delta=2.0", "--optimizer", "lbfgs", "--lr", "1",
                 "--epochs", "2", "--batch-size", "8", "--log", str(tmp_path / "log.json"),
                 "--checkpoint-dir", str(tmp_path / "ckpt"), "--out", str(tmp_path / "out"),
                 "--quiet"])  # fmt: skip
    assert args.func(args) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert set(report["physical_parameters"]) == {"alpha", "delta"}
    assert report["rollout"]["mse"] >= 0
    assert len(json.loads((tmp_path / "log.json").read_text())) == 2
    resumed = _cli([str(lotka_volterra_h5), "--model", "physics", "--learnable", "alpha,delta",
                    "--init", "alpha=1.0,delta=2.0", "--optimizer", "lbfgs", "--lr", "1",
                    "--epochs", "3", "--batch-size", "8",
                    "--resume", str(tmp_path / "ckpt" / "last.pt"), "--quiet"])  # fmt: skip
    assert run_train(resumed) == 0


def test_physode_train_reads_a_toml_config_and_flags_override_it(lotka_volterra_h5, tmp_path,
                                                                capsys):  # fmt: skip
    config = tmp_path / "run.toml"
    config.write_text(
        f'data = "{lotka_volterra_h5}"\n[model]\nkind = "hybrid"\nlearnable = ["alpha"]\n'
        "width = 8\ndepth = 1\naphynity = true\n[train]\nepochs = 5\nwindow = 6\n"
        'gradient = "disc-opt"\n'
    )
    args = _cli(["--config", str(config), "--epochs", "1", "--out", str(tmp_path / "o")])
    assert run_train(args) == 0
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["epochs"] == 1 and report["config"]["gradient"] == "disc-opt"
    assert report["model"]["aphynity"] is True
    assert "learned parameters: alpha" in capsys.readouterr().out


def test_physode_train_passes_val_batch_size_to_the_trainer(lotka_volterra_h5, tmp_path):
    args = _cli([str(lotka_volterra_h5), "--epochs", "1", "--window", "6", "--quiet",
                 "--val-batch-size", "7", "--out", str(tmp_path / "o")])  # fmt: skip
    assert run_train(args) == 0
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["config"]["val_batch_size"] == 7


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "physics"], "needs --learnable"),
        (["--window", "99"], "window=99 is longer"),
        (["--learnable", "mass"], "\\['mass'\\] are not parameters"),
        (["--device", "cuda:99"], "device='cuda:99' is not usable here"),
        (["--device", "gpu"], "device='gpu'"),
    ],
)
def test_physode_train_refuses_bad_input_with_one_line_and_exit_2(lotka_volterra_h5, argv,
                                                                  message, capsys):  # fmt: skip
    args = _cli([str(lotka_volterra_h5), "--epochs", "1", "--quiet", *argv])
    assert run_train(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("physode train: error:") and len(err.strip().splitlines()) == 1
    assert __import__("re").search(message, err)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--resume", "{tmp}/missing.pt"], "missing.pt: no such file"),
        (["--resume", "{tmp}/junk.pt"], "junk.pt is not a physode training checkpoint"),
        (["--resume", "{tmp}/object.pt"], "it holds Python objects other than tensors"),
        (["--checkpoint-dir", "{tmp}/junk.pt/ckpt"], "checkpoint_dir="),
    ],
)
def test_physode_train_refuses_a_bad_checkpoint_path_with_one_line(
    lotka_volterra_h5, tmp_path, capsys, argv, message
):
    _checkpoint_files(tmp_path)
    argv = [a.format(tmp=tmp_path) for a in argv]
    args = _cli([str(lotka_volterra_h5), "--model", "neural", "--epochs", "1", "--quiet", *argv])
    assert run_train(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("physode train: error:") and err.count("\n") == 1
    assert message in err and "weights_only" not in err


def test_physode_train_refuses_an_unknown_gradient_mode():
    with pytest.raises(SystemExit):
        _cli(["data.h5", "--gradient", "adjoint"])


def test_an_hdf5_file_with_an_empty_training_split_is_refused(tmp_path):
    path = tmp_path / "no_train.h5"
    physode.data.simulate("harmonic_oscillator", trajectories=2, t_end=1.0, points=5, out=path,
                          split=(0.0, 0.5, 0.5), quiet=True)  # fmt: skip
    with pytest.raises(physode.InvalidArgumentError, match="'train' split .* is empty"):
        Trainer(neural(), path)


def test_an_hdf5_file_whose_training_trajectories_are_all_flagged_says_so(tmp_path):
    # A declared invariant that the system does not conserve flags every trajectory for drift;
    # training was refused with "the 'train' split is empty; simulate with a split that gives it
    # trajectories", which sent the user to the wrong fix.
    spec = tmp_path / "wrong_invariant.toml"
    spec.write_text('name = "osc"\nform = "equations"\n[equations]\nx = "v"\nv = "-x"\n'
                    '[invariants]\nnot_conserved = "x"\n')
    path = tmp_path / "flagged.h5"
    physode.data.simulate(str(spec), trajectories=4, t_end=1.0, points=5, out=path,
                          split=(0.5, 0.5, 0.0), quiet=True)  # fmt: skip
    with pytest.raises(physode.InvalidArgumentError) as info:
        Trainer(neural(), path)
    message = str(info.value)
    assert "every trajectory of the 'train' split" in message
    assert "2 trajectories: 0 failed solves, 2 invariant drifts" in message
    assert "physode check" in message and "exclude_flagged=False" in message


def test_trajectories_stored_as_inf_in_float32_are_left_out_of_training_data(
    tmp_path, growth_spec
):
    # x = x0 e^t passes float32's range by t = 89 for x0 > 0.76 and is stored as inf. Those
    # trajectories were not flagged, so reading the data refused the whole split as "not
    # finite" instead of leaving them out as flagged ones are.
    spec = growth_spec
    path = tmp_path / "growth.h5"
    with pytest.warns(physode.PhysodeWarning, match="beyond the range of float32"):
        physode.data.simulate(str(spec), trajectories=6, t_end=89.0, points=5, out=path, seed=3,
                              dtype="float32", quiet=True)  # fmt: skip
    stored = physode.data.load(path)
    overflowed = np.isinf(stored.states[()]).any(axis=(1, 2))
    assert 0 < overflowed.sum() < 6
    data = as_trajectories(path)
    assert len(data) == 6 - overflowed.sum() and torch.isfinite(data.states).all()
    torch.testing.assert_close(data.states, torch.from_numpy(stored.states[~overflowed]))

    # Every trajectory stored as inf: the refusal counts them, instead of "0 failed solves,
    # 0 invariant drifts" and nothing on why.
    with pytest.warns(physode.PhysodeWarning, match="beyond the range of float32"):
        physode.data.simulate(str(spec), trajectories=3, t_end=100.0, points=5, out=path,
                              seed=3, dtype="float32", force=True, quiet=True)  # fmt: skip
    with pytest.raises(physode.InvalidArgumentError) as info:
        as_trajectories(path)
    assert "(3 trajectories: 0 failed solves, 0 invariant drifts beyond the simulation's drift " \
        "threshold, 3 with values stored as inf or NaN (beyond the range of float32: simulate " \
        "with --dtype float64))" in str(info.value)


# ------------------------------------------------ float32 grids, rollout times, noisy data, resume


def test_an_equally_spaced_float32_grid_is_uniform_and_rolls_out_beyond_the_data(
    lotka_volterra_h5,
):
    t32 = torch.linspace(0, 5, 51, dtype=torch.float64).float()
    assert uniform_grid(t32) and not uniform_grid(torch.tensor([0.0, 1.0, 2.5]))
    model = PhysicsModel("lotka_volterra", ["alpha"])
    trainer = Trainer(model, lotka_volterra_h5, dtype="float32", epochs=1)
    # Windows of different starts share a solve, as in float64.
    assert trainer._mixes_starts(trainer.train_data)
    report = trainer.evaluate(t_end=3.0)
    assert report.predicted.dtype == torch.float32 and float(report.t[-1]) == pytest.approx(3.0)
    assert report.mse_beyond < 1e-6


def test_a_t_end_without_rollout_times_is_refused_by_name_before_training(
    lotka_volterra_h5, tmp_path, capsys
):
    t, ys = spiral_data()
    with pytest.raises(physode.InvalidArgumentError, match="t_end=0.0 leaves no time to roll"):
        rollout_report(lambda s, y: y @ A, Trajectories(t, ys), t_end=0.0)
    log = tmp_path / "log.csv"
    args = _cli([str(lotka_volterra_h5), "--model", "neural", "--epochs", "1", "--quiet",
                 "--t-end", "-1", "--log", str(log)])  # fmt: skip
    assert run_train(args) == 2
    assert "t_end=-1.0 leaves no time to roll out to" in capsys.readouterr().err
    assert not log.exists()  # refused before the first epoch


@pytest.mark.parametrize(
    ("t_end", "message"),
    [(float("inf"), "t_end=inf must be a finite time"), (1e300, "would add 1e\\+301 sample times")],
)
def test_a_t_end_too_far_for_any_rollout_is_refused_by_name(lotka_volterra_h5, capsys, t_end,
                                                            message):  # fmt: skip
    # It ended in an OverflowError (inf) or in building 1e300 sample times.
    t, ys = spiral_data()
    with pytest.raises(physode.InvalidArgumentError, match=message):
        rollout_report(lambda s, y: y @ A, Trajectories(t, ys), t_end=t_end)
    args = _cli([str(lotka_volterra_h5), "--model", "neural", "--epochs", "1", "--quiet",
                 "--t-end", repr(t_end)])  # fmt: skip
    assert run_train(args) == 2
    assert "t_end=" in capsys.readouterr().err


@pytest.fixture(scope="module")
def noisy_h5(tmp_path_factory):
    """Eight Lotka-Volterra trajectories with observation noise 0.05 and a 4/2/2 split."""
    path = tmp_path_factory.mktemp("noisy") / "lv_noisy.h5"
    physode.data.simulate("lotka_volterra", trajectories=8, t_end=2.0, points=21, out=path,
                          seed=0, split=(0.5, 0.25, 0.25), noise=0.05, quiet=True)  # fmt: skip
    return path


def test_noisy_true_trains_and_validates_on_the_noisy_states_and_evaluates_on_clean(noisy_h5):
    stored = physode.data.load(noisy_h5)
    split = {name: stored.split[name] for name in ("train", "val", "test")}
    clean = Trainer(neural(), noisy_h5, epochs=1)
    assert torch.equal(clean.train_data.states, torch.as_tensor(stored.states[split["train"]]))
    noisy = Trainer(neural(), noisy_h5, epochs=1, noisy=True)
    for data, name in ((noisy.train_data, "train"), (noisy.val_data, "val")):
        assert torch.equal(data.states, torch.as_tensor(stored.noisy_states[split[name]]))
    report = noisy.evaluate()
    assert torch.equal(report.truth, torch.as_tensor(stored.states[split["test"]]))
    dataset = physode.data.TrajectoryDataset(noisy_h5, window=5, noisy=True)
    from_dataset = Trainer(neural(), dataset, epochs=1)
    assert from_dataset.config.noisy
    assert torch.equal(from_dataset.val_data.states, noisy.val_data.states)


def test_noisy_true_is_refused_without_noisy_states(lotka_volterra_h5):
    with pytest.raises(physode.InvalidArgumentError, match="lv.h5 holds no noisy states"):
        Trainer(neural(), lotka_volterra_h5, noisy=True)
    with pytest.raises(physode.InvalidArgumentError, match="noisy=True reads the noisy states"):
        Trainer(neural(), spiral_data(), noisy=True)


def test_physode_train_noisy_flag_trains_on_the_noisy_states(noisy_h5, tmp_path, capsys):
    args = _cli([str(noisy_h5), "--model", "physics", "--learnable", "alpha", "--epochs", "1",
                 "--noisy", "--out", str(tmp_path / "o")])  # fmt: skip
    assert run_train(args) == 0
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["config"]["noisy"] is True
    # The noise (0.05) dominates the validation loss of the true parameters.
    assert report["best_val_loss"] > 1e-3
    assert re.search(r"validation loss \d\.\d{4}e[-+]\d\d\n", capsys.readouterr().out)


def test_resuming_a_cosine_schedule_with_other_epochs_is_refused(tmp_path):
    data = spiral_data()
    first = Trainer(neural(), data, _config(tmp_path, epochs=2))
    first.fit()
    path = first.save_checkpoint(tmp_path / "two.pt")
    longer = Trainer(neural(), data, _config(tmp_path, epochs=4))
    with pytest.raises(physode.InvalidArgumentError, match="epochs: 2 -> 4; lr_schedule='cos"):
        longer.load_checkpoint(path)
    # Other schedules do not depend on the number of epochs: the run may be extended.
    constant = Trainer(neural(), data, _config(tmp_path, epochs=2, lr_schedule="constant"))
    path = constant.save_checkpoint(tmp_path / "constant.pt")
    Trainer(neural(), data, _config(tmp_path, epochs=4, lr_schedule="constant")).load_checkpoint(
        path
    )


def test_resuming_with_another_val_fraction_is_refused_and_old_checkpoints_still_load(tmp_path):
    data = spiral_data()
    trainer = Trainer(neural(), data, _config(tmp_path))
    path = trainer.save_checkpoint(tmp_path / "ckpt.pt")
    other = Trainer(neural(), data, _config(tmp_path, val_fraction=0.5))
    with pytest.raises(physode.InvalidArgumentError, match="val_fraction: 0.25 -> 0.5"):
        other.load_checkpoint(path)
    state = torch.load(path, weights_only=True)
    del state["config"]["noisy"]  # written before the setting existed
    torch.save(state, tmp_path / "old.pt")
    Trainer(neural(), data, _config(tmp_path)).load_checkpoint(tmp_path / "old.pt")


def test_validation_trajectories_shorter_than_whole_training_ones_are_refused():
    t, ys = spiral_data(points=21)
    with pytest.raises(physode.InvalidArgumentError, match="validation trajectories have 11 time"):
        Trainer(neural(), (t, ys), val_data=(t[:11], ys[:, :11]))


def test_physode_train_refuses_unknown_report_keys_in_a_toml_config(lotka_volterra_h5, tmp_path,
                                                                   capsys):  # fmt: skip
    config = tmp_path / "run.toml"
    config.write_text(f'data = "{lotka_volterra_h5}"\n[model]\nkind = "neural"\n'
                      '[train]\nepochs = 1\n[report]\ntend = 4.0\noutput = "run"\n')  # fmt: skip
    assert run_train(_cli(["--config", str(config), "--quiet"])) == 2
    err = capsys.readouterr().err
    assert "unknown [report] keys ['output', 'tend']; valid: ['t_end', 'out'" in err


def test_val_fraction_with_validation_data_of_its_own_is_refused_not_ignored(tmp_path):
    # It was silently ignored: validation used val_data (or the stored split) all the same.
    data = spiral_data()
    with pytest.raises(physode.InvalidArgumentError, match=r"val_fraction=0.25 .* uses val_data"):
        Trainer(neural(), data, _config(tmp_path, val_fraction=0.25), val_data=data)


def test_integer_times_train_like_the_same_times_in_floating_point(tmp_path):
    # Integer times (years, days) were refused as "t and states must be floating point tensors",
    # while physode.solve reads them as float64.
    _, ys = spiral_data(points=11, t_end=10.0)
    histories = []
    for t in (torch.arange(11), torch.arange(11, dtype=torch.float64)):
        trainer = Trainer(neural(), (t, ys), _config(tmp_path, epochs=2))
        assert trainer.train_data.t.dtype == ys.dtype
        histories.append([row["loss"] for row in trainer.fit().history])
    assert histories[0] == histories[1]
    with pytest.raises(physode.InvalidArgumentError, match="states have dtype torch.int64"):
        Trainer(neural(), (torch.arange(11), ys.long()), _config(tmp_path))


def test_the_loss_is_the_mean_squared_error_of_the_points_after_each_windows_start():
    # The first point of a window is where its solve starts, so it is left out of the mean.
    t, ys = spiral_data(n=3, points=6)
    k = 0.5
    trainer = Trainer(LinearDecay(k), (t, ys), epochs=1, batch_size=8, method="dop853",
                      rtol=1e-12, atol=1e-12)  # fmt: skip
    result = trainer.fit()  # one batch: the logged loss is the one at k = 0.5
    predicted = ys[:, :1] * torch.exp(-k * t)[None, :, None]
    expected = (predicted[:, 1:] - ys[:, 1:]).pow(2).mean()
    assert result.history[0]["loss"] == pytest.approx(expected.item(), rel=1e-9)


def test_gradients_are_clipped_to_grad_clip_before_each_step():
    t, ys = spiral_data()
    trainer = Trainer(neural(), (t, ys), epochs=2, window=5, grad_clip=1e-3)
    step, norms = trainer.optimizer.step, []

    def recording_step(*args, **kwargs):
        grads = [p.grad for p in trainer.model.parameters() if p.grad is not None]
        norms.append(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])).item())
        return step(*args, **kwargs)

    trainer.optimizer.step = recording_step
    trainer.fit()
    assert len(norms) > 4 and max(norms) <= 1e-3 * (1 + 1e-6)


def test_batches_per_epoch_caps_the_batches_of_every_epoch():
    t, ys = spiral_data()
    trainer = Trainer(neural(), (t, ys), epochs=2, window=5, batch_size=2, batches_per_epoch=3)
    assert len(trainer.train_windows) > 2 * 3  # more windows than the cap lets through
    result = trainer.fit()
    assert [row["n_batches"] for row in result.history] == [3, 3]


def test_the_truth_beyond_the_data_follows_each_trajectorys_own_parameters():
    # Two pendulums of different lengths: the report's truth past the data continues each
    # with its own l, as a solve at those parameters over the whole span does.
    pendulum = physode.systems.load("pendulum")
    params = torch.tensor([[1.0, 9.81, 1.0], [1.0, 9.81, 2.5]], dtype=torch.float64)
    y0 = torch.tensor([[0.5, 0.0], [1.0, 0.3]], dtype=torch.float64)

    def true_field(s, y):
        return pendulum.rhs(s, y, params)

    t_long = torch.linspace(0, 2, 21, dtype=torch.float64)
    long = physode.odeint(true_field, y0, t_long, method="dop853", rtol=1e-11, atol=1e-11)
    data = Trajectories(t_long[:11], long[:11].transpose(0, 1), params=params, system=pendulum)
    report = rollout_report(true_field, data, t_end=2.0, conservation=False)
    torch.testing.assert_close(report.truth, long.transpose(0, 1), rtol=0, atol=1e-8)


# ---------------------------------------------------------------------- per-trajectory parameters


def pendulums(lengths: list[float]) -> Trajectories:
    """Pendulums of the given lengths (m = 1, g = 9.81), each with its own stored parameters."""
    pendulum = physode.systems.load("pendulum")
    params = torch.tensor([[1.0, 9.81, length] for length in lengths], dtype=torch.float64)
    y0 = torch.tensor([[0.5, 0.0]] * len(lengths), dtype=torch.float64)
    t = torch.linspace(0, 1, 6, dtype=torch.float64)
    ys = physode.odeint(lambda s, y: pendulum.rhs(s, y, params), y0, t, rtol=1e-10, atol=1e-10)
    return Trajectories(t, ys.transpose(0, 1), params=params, system=pendulum)


@pytest.mark.parametrize(
    "model",
    [
        lambda: PhysicsModel("pendulum", ["l"]),
        lambda: PhysicsModel("pendulum", ["g", "l"]),
        lambda: Hybrid(PhysicsModel("pendulum", ["l"]), NeuralODE(2, width=4, depth=1)),
    ],
)
def test_a_learned_parameter_that_varies_between_trajectories_is_warned_about_once(model):
    with pytest.warns(UserWarning) as caught:
        Trainer(model(), pendulums([1.0, 2.5]), epochs=1)
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "different values of l (1 to 2.5), but the model learns one value" in message
    assert "g (" not in message  # g is learned but the same for both pendulums
    assert "fixed parameters" in message and "simulate without --params;" in message


@pytest.mark.parametrize(
    ("model", "lengths"),
    [
        (lambda: PhysicsModel("pendulum", ["l"]), [1.5, 1.5]),  # the same l for both
        (lambda: PhysicsModel("pendulum", ["g"]), [1.0, 2.5]),  # l varies but is not learned
        (lambda: NeuralODE(2, width=4, depth=1), [1.0, 2.5]),  # no physical parameters
    ],
)
def test_parameters_that_are_fixed_or_not_learned_give_no_warning(model, lengths):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Trainer(model(), pendulums(lengths), epochs=1)


# ---------------------------------------------------------------------- per-trajectory parameters


def swinging(lengths: list[float], points: int = 11, t_end: float = 1.0) -> Trajectories:
    """Pendulums of the given lengths (:func:`_pendulums.swinging`), released 0.1 apart."""
    return _pendulums.swinging(lengths, points, t_end, spacing=0.1)


def test_a_parameter_is_recovered_when_the_known_ones_differ_between_trajectories():
    # l varies between the pendulums and is known (stored); g is learned. With the system's l
    # for every pendulum the fit of g/l would be a compromise far from 9.81.
    data = swinging([0.5, 0.7, 1.0, 1.3])
    model = PhysicsModel("pendulum", ["g"], init={"g": 6.0})
    # 8 epochs: g is 8e-9 off by the fifth, and the loss at its floor (4e-20) from the seventh.
    trainer = Trainer(model, data, epochs=8, optimizer="lbfgs", lr=1.0, rtol=1e-9, atol=1e-11)
    result = trainer.fit()
    assert result.physical_parameters["g"] == pytest.approx(9.81, rel=1e-5)


def test_each_window_is_solved_with_its_own_trajectorys_parameters():
    data = swinging([0.5, 0.8, 1.2], points=9)
    model = PhysicsModel("pendulum", ["g"])  # at its true value: only the stored l is missing
    trainer = Trainer(model, data, epochs=1, window=4, window_stride=1, batch_size=4,
                      rtol=1e-10, atol=1e-12)  # fmt: skip
    batches = trainer._batches(trainer.train_windows, shuffle=True)
    assert {w.index for batch in batches for w in batch} == {0, 1, 2}
    losses = [trainer._solve_batch(trainer.train_data, batch)[2].item() for batch in batches]
    assert max(losses) < 1e-16


def pendulum_batch_gradient(gradient: Any, step_control: str, method: str = "dopri5") -> tuple:
    """Loss and d loss / d g of one batch of three pendulums with stored lengths."""
    data = swinging([0.5, 0.8, 1.2], points=6)
    model = PhysicsModel("pendulum", ["g"], init={"g": 8.0})
    options = {"step_size": 0.01} if method == "yoshida4" else {"rtol": 1e-10, "atol": 1e-12}
    trainer = Trainer(model, data, epochs=1, gradient=gradient, step_control=step_control,
                      method=method, **options)  # fmt: skip
    loss = trainer._evaluate(trainer._batches(trainer.train_windows, shuffle=False)[0], [])
    return loss.item(), model.field.g.grad.item()


def pendulum_reference_gradient() -> tuple:
    """The same loss and gradient with each pendulum solved by a field of its own length."""
    data = swinging([0.5, 0.8, 1.2], points=6)
    g = torch.tensor(8.0, dtype=torch.float64, requires_grad=True)
    losses = []
    for i in range(3):
        p = torch.stack([data.params[i, 0], g, data.params[i, 2]])
        ys = physode.odeint(lambda s, y, p=p: data.system.rhs(s, y, p), data.states[i, 0],
                            data.t, rtol=1e-10, atol=1e-12, gradient="disc-opt")  # fmt: skip
        losses.append((ys[1:] - data.states[i, 1:]).pow(2))
    loss = torch.stack(losses).mean()
    loss.backward()
    return loss.item(), g.grad.item()


@pytest.mark.parametrize(
    ("gradient", "step_control", "method"),
    [
        ("disc-opt", "shared", "dopri5"),
        ("aca", "shared", "dopri5"),
        (physode.OptDisc(restart=True, rtol=1e-11, atol=1e-13), "shared", "dopri5"),
        (physode.OptDisc(restart="steps", rtol=1e-11, atol=1e-13), "shared", "dopri5"),
        ("disc-opt", "per-sample", "dopri5"),
        ("aca", "per-sample", "dopri5"),
        ("aca", "shared", "yoshida4"),
    ],
)
def test_gradients_with_stored_parameters_agree_in_every_mode(gradient, step_control, method):
    loss, grad = pendulum_batch_gradient(gradient, step_control, method)
    want_loss, want_grad = pendulum_reference_gradient()
    tight = 1e-6 if method == "dopri5" else 1e-4  # a fixed step of 0.01, order 4
    assert loss == pytest.approx(want_loss, rel=tight)
    assert grad == pytest.approx(want_grad, rel=tight)


def test_per_sample_step_control_carries_each_rows_parameters_as_the_shared_solve_uses_them():
    from physode.train._rows import solve_rows

    data = swinging([0.5, 0.8, 1.2, 2.0])
    model = PhysicsModel("pendulum", [])
    rows = data.params
    options = {"rtol": 1e-9, "atol": 1e-11}
    shared = solve_rows(model, data.states[:, 0], data.t, rows, **options)
    per_sample = solve_rows(model, data.states[:, 0], data.t, rows, step_control="per-sample",
                            **options)  # fmt: skip
    assert per_sample.ys.shape == shared.ys.shape == (11, 4, 2)
    truth = data.states.transpose(0, 1)
    assert float((per_sample.ys - truth).abs().max()) < 1e-7
    assert float((shared.ys - truth).abs().max()) < 1e-7
    # Row by row as alone: the rows that finish first leave the per-sample solve.
    alone = solve_rows(model, data.states[3:, 0], data.t, rows[3:], step_control="per-sample",
                       **options)  # fmt: skip
    assert torch.equal(alone.ys[:, 0], per_sample.ys[:, 3])


def test_rollouts_use_each_trajectorys_stored_parameters():
    data = swinging([0.5, 1.0, 1.6], points=11, t_end=2.0)
    model = PhysicsModel("pendulum", [])
    report = rollout_report(model, data, rtol=1e-10, atol=1e-12)
    assert report.mse < 1e-14
    # Beyond the data the truth is simulated with the stored values as well.
    assert rollout_report(model, data.until(1.0), t_end=2.0, rtol=1e-10, atol=1e-12).mse < 1e-14
    # stored_parameters=False keeps the system's l = 1 for every pendulum.
    fixed = rollout_report(PhysicsModel("pendulum", [], stored_parameters=False), data)
    assert fixed.mse_per_trajectory[1] < 1e-12 < min(fixed.mse_per_trajectory[::2])


def test_the_rollouts_conservation_is_measured_at_the_parameters_they_were_solved_with():
    # stored_parameters=False: every pendulum swings with the system's l = 1, and conserves the
    # energy of l = 1, not that of its stored length.
    data = swinging([0.5, 1.0, 1.6], points=11, t_end=2.0)
    fixed = PhysicsModel("pendulum", [], stored_parameters=False)
    report = rollout_report(fixed, data, rtol=1e-10, atol=1e-12, conservation_tolerance=1e-6)
    assert report.conservation_model.ok, report.conservation_model
    # Taking the stored lengths, the rollouts conserve each pendulum's own energy.
    own = rollout_report(PhysicsModel("pendulum", []), data, rtol=1e-10, atol=1e-12)
    assert own.conservation_model.ok, own.conservation_model


def test_an_exact_model_rolled_out_at_a_loose_rtol_is_not_flagged_for_its_solvers_error():
    # The exact pendulum rolled out at rtol = 1e-6 drifts in energy by more than 1e-6 from the
    # solver's error alone; the default tolerance scales with the rollout's rtol.
    data = swinging([0.5, 1.0, 1.6], points=41, t_end=20.0)
    model = PhysicsModel("pendulum", [])
    report = rollout_report(model, data, rtol=1e-6, atol=1e-8)
    drift = float(report.conservation_model.invariants["energy"].max_rel_drift.max())
    assert 1e-6 < drift < 1e-4, drift
    assert report.conservation_model.ok, report.conservation_model
    assert report.conservation_model.invariants["energy"].tolerance == pytest.approx(1e-4)
    # Asked for, a tighter tolerance still flags it.
    strict = rollout_report(model, data, rtol=1e-6, atol=1e-8, conservation_tolerance=1e-6)
    assert not strict.conservation_model.ok


def test_a_hybrid_gives_the_stored_parameters_to_its_physics_and_the_state_to_its_residual():
    data = swinging([0.5, 1.6])
    residual = NeuralODE(2, width=4, depth=1, zero_output=True).double()
    seen = []
    residual.register_forward_pre_hook(lambda module, args: seen.append(args[1].shape[-1]))
    model = Hybrid(PhysicsModel("pendulum", ["g"]), residual)
    assert model.trajectory_parameters == ("m", "g", "l")
    report = rollout_report(model, data, rtol=1e-10, atol=1e-12, conservation=False)
    assert report.mse < 1e-14
    assert set(seen) == {2}


def test_the_evaluation_of_a_sampled_data_set_uses_its_stored_parameters(tmp_path):
    path = tmp_path / "damped.h5"
    physode.data.simulate("damped_oscillator", trajectories=6, t_end=2.0, points=11, out=path,
                          params="sample", split=(0.5, 0.0, 0.5), quiet=True)  # fmt: skip
    physics = PhysicsModel("damped_oscillator", [])
    model = Hybrid(physics, NeuralODE(2, width=4, depth=1, zero_output=True))
    trainer = Trainer(model, path, epochs=1)
    assert trainer.train_rows is not None and trainer.train_rows.shape == (3, 3)
    report = trainer.evaluate(conservation=False)
    assert report.mse < 1e-12


def test_the_conservation_of_a_rollout_is_measured_with_the_models_learned_values():
    # A pendulum rolled out with g = 5 conserves the energy at g = 5, not the true one's.
    data = swinging([0.6, 1.2], points=21, t_end=2.0)
    model = PhysicsModel("pendulum", ["g"], init={"g": 5.0})
    report = rollout_report(model, data, rtol=1e-10, atol=1e-12, conservation_tolerance=1e-6)
    assert report.mse > 1e-3  # the wrong g shows in the errors
    drift = report.conservation_model.invariants["energy"].max_rel_drift
    assert float(drift.max()) < 1e-7
    assert float(report.conservation_truth.invariants["energy"].max_rel_drift.max()) < 1e-7


def test_data_with_one_parameter_set_train_exactly_as_without_parameters():
    pendulum = physode.systems.load("pendulum")
    t = torch.linspace(0, 1, 6, dtype=torch.float64)
    y0 = torch.tensor([[0.5, 0.0], [0.2, 0.1]], dtype=torch.float64)
    ys = physode.odeint(pendulum.vector_field(), y0, t, rtol=1e-10, atol=1e-10).transpose(0, 1)
    defaults = torch.tensor([list(pendulum.parameters.values())] * 2, dtype=torch.float64)
    histories = []
    for params in (None, defaults):
        model = PhysicsModel(pendulum, ["g"], init={"g": 7.0})
        trainer = Trainer(model, Trajectories(t, ys, params, pendulum), epochs=2, lr=0.1)
        assert trainer.train_rows is None
        histories.append([row["loss"] for row in trainer.fit().history])
    assert histories[0] == histories[1]


@pytest.mark.parametrize(
    ("params", "system", "match"),
    [
        (torch.ones(2, 2), "pendulum", r"store 2 parameter values each, but their system "
         r"'pendulum' has 3 parameters \['m', 'g', 'l'\]"),
        (torch.ones(2, 4), None, r"store 4 parameter values each but have no system.*3 "
         r"parameters \['m', 'g', 'l'\]"),
        (torch.tensor([[1.0, 9.8, float("nan")], [1.0, 9.8, 1.0]]), "pendulum",
         r"values of \['l'\] that are not finite"),
    ],
)
def test_stored_parameters_that_do_not_fit_the_system_are_refused(params, system, match):
    data = swinging([1.0, 1.0], points=5)
    system = None if system is None else data.system
    bad = Trajectories(data.t, data.states, params, system)
    with pytest.raises(physode.InvalidArgumentError, match=match):
        Trainer(PhysicsModel("pendulum", ["g"]), bad, epochs=1)


@pytest.mark.parametrize("rows", [lambda p: p[:3], lambda p: torch.cat([p, p[:1]]), lambda p: p[0]])
@pytest.mark.parametrize("val_fraction", [0.0, 0.25])
def test_params_that_are_not_one_row_per_trajectory_are_refused_with_the_shape_to_give(
    rows, val_fraction
):
    # Three rows for four trajectories failed in training with an IndexError, and five were
    # taken silently, each trajectory paired with the row of its index.
    data = swinging([0.5, 0.8, 1.2, 1.6], points=5)
    params = rows(data.params)
    shape = re.escape(str(tuple(params.shape)))
    message = rf"bad trajectories: params have shape {shape}, but the states hold 4 trajectories; "
    with pytest.raises(physode.InvalidArgumentError, match=message + r".*shape \(4, n_params\)"):
        Trainer(PhysicsModel("pendulum", ["g"]),
                Trajectories(data.t, data.states, params, data.system),
                epochs=1, val_fraction=val_fraction)  # fmt: skip


@pytest.mark.parametrize("params", ["abc", [[True] * 3] * 4])
def test_params_that_are_not_real_numbers_are_refused_by_name(params):
    data = swinging([0.5, 0.8, 1.2, 1.6], points=5)
    with pytest.raises(physode.InvalidArgumentError, match=r"params (must be|have dtype)"):
        Trajectories(data.t, data.states, torch.tensor(params) if params != "abc" else params)


def test_trajectories_take_their_system_by_catalogue_name_as_a_physics_model_does():
    # A name was kept as a string: evaluating beyond the data failed with an AttributeError.
    t = torch.linspace(0, 2, 11, dtype=torch.float64)
    y0 = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    oscillator = physode.systems.load("harmonic_oscillator")
    ys = physode.odeint(oscillator.vector_field(), y0, t, rtol=1e-10, atol=1e-12)
    data = Trajectories(t, ys.transpose(0, 1), system="harmonic_oscillator")
    assert data.system.name == "harmonic_oscillator"
    report = rollout_report(PhysicsModel(oscillator, []), data, t_end=4.0)
    assert report.mse_beyond < 1e-10
    message = r"system must be a physode.System, a catalogue name or the path of a .* got int"
    with pytest.raises(physode.InvalidArgumentError, match=message):
        Trajectories(t, ys.transpose(0, 1), system=42)


def test_trajectories_with_a_system_of_another_state_size_are_refused_where_they_are_made():
    # Three columns for the two states of Lotka-Volterra were accepted here and refused only
    # later, by training or evaluate.
    message = (r"bad trajectories: the states have 3 components, the system 'lotka_volterra' "
               r"has 2 states \['x', 'y'\]; give states of shape \(N, P, 2\)")  # fmt: skip
    with pytest.raises(physode.InvalidArgumentError, match=message):
        Trajectories(torch.linspace(0, 1, 5), torch.zeros(5, 3), system="lotka_volterra")
    with pytest.raises(physode.InvalidArgumentError, match="the states have 1 components"):
        Trajectories.from_irregular([([0.0, 1.0], [[1.0], [2.0]])], system="lotka_volterra")


def test_trajectories_put_named_states_in_their_systems_order_and_refuse_other_names():
    t, ys = torch.arange(3.0), torch.tensor([[[1.0, 10.0], [2.0, 20.0], [3.0, 30.0]]])
    data = Trajectories(t, ys, system="lotka_volterra", state_names=["y", "x"])
    assert data.state_names == ("x", "y")
    torch.testing.assert_close(data.states, ys.flip(-1))
    # Cut or moved, they keep their names and order.
    assert data.subset([0]).state_names == data.until(1.0).state_names == ("x", "y")
    torch.testing.assert_close(data.to(torch.float64).states, ys.flip(-1).double())
    assert "state_names=('x', 'y')" in repr(data)
    unnamed = Trajectories(t, ys, state_names=("b", "a"))
    assert unnamed.state_names == ("b", "a") and torch.equal(unnamed.states, ys)
    with pytest.raises(physode.InvalidArgumentError, match=r"\['y', 'z'\], the system "
                       r"'lotka_volterra' has the states \['x', 'y'\] \('z' not among them, "
                       r"'x' not in the data\)"):  # fmt: skip
        Trajectories(t, ys, system="lotka_volterra", state_names=("y", "z"))
    bad = [("x",), ("x", "x"), "xy", ("x", 1)]
    messages = ["must be 2 strings", "name one component twice", "must be a sequence of 2",
                "must be 2 strings"]  # fmt: skip
    for names, message in zip(bad, messages, strict=True):
        with pytest.raises(physode.InvalidArgumentError, match=message):
            Trajectories(t, ys, state_names=names)


def test_trajectories_merged_from_irregular_samples_keep_their_state_names():
    # from_irregular took no state_names: series merged through it lost their names, and the
    # match by name to their system or the model's with them.
    samples = [([0.0, 1.0, 2.0], [[1.0, 10.0], [2.0, 20.0], [3.0, 30.0]]),
               ([0.5, 1.5], [[4.0, 40.0], [5.0, 50.0]])]  # fmt: skip
    data = Trajectories.from_irregular(samples, system="lotka_volterra", state_names=["y", "x"])
    assert data.state_names == ("x", "y")
    assert data.states[0, 0].tolist() == [10.0, 1.0] and data.states[1, 1].tolist() == [40.0, 4.0]
    unbound = Trajectories.from_irregular(samples, state_names=("y", "x"))
    assert unbound.state_names == ("y", "x") and unbound.states[0, 0].tolist() == [1.0, 10.0]
    model = PhysicsModel(physode.systems.load("lotka_volterra"), ["alpha"])
    trained = Trainer(model, unbound, epochs=1, window=3).train_data
    assert trained.state_names == ("x", "y")
    torch.testing.assert_close(trained.states, data.states, equal_nan=True)
    with pytest.raises(physode.InvalidArgumentError, match=r"\['hare', 'lynx'\], the system"):
        Trajectories.from_irregular(samples, system="lotka_volterra", state_names=["hare", "lynx"])
    with pytest.raises(physode.InvalidArgumentError, match="name one component twice"):
        Trajectories.from_irregular(samples, state_names=["x", "x"])


def test_named_data_meet_the_true_system_of_a_rollout_report_by_name():
    # Data named (y, x) and a model of that order were matched by name to the model only: the
    # truth beyond the data was simulated from (y, x) taken as the system's (x, y), and the
    # invariants were taken of swapped states.
    lotka_volterra = physode.systems.load("lotka_volterra")
    t = torch.linspace(0, 4, 21, dtype=torch.float64)
    y0 = torch.tensor([[1.0, 0.5], [0.8, 1.2]], dtype=torch.float64)
    field = lotka_volterra.vector_field()
    ys = physode.odeint(field, y0, t, rtol=1e-10, atol=1e-12).transpose(0, 1)
    data = Trajectories(t[:11], ys[:, :11].flip(-1), state_names=["y", "x"])

    def model(s, y):  # the true field, of states in the order (y, x)
        return field(s, y.flip(-1)).flip(-1)

    report = rollout_report(model, data, system=lotka_volterra, t_end=4.0)
    torch.testing.assert_close(report.truth, ys.flip(-1), rtol=1e-7, atol=1e-7)
    assert report.mse_within < 1e-10 and report.mse_beyond < 1e-10
    assert report.conservation_truth.ok and report.conservation_model.ok
    torch.testing.assert_close(
        report.conservation_truth["lotka_volterra_integral"].initial,
        lotka_volterra.invariants(y0)["lotka_volterra_integral"],
    )
    message = (r"the held-out data name their states \['hare', 'lynx'\], the true system "
               r"'lotka_volterra' has the states \['x', 'y'\]")  # fmt: skip
    named = Trajectories(t[:11], ys[:, :11], state_names=["hare", "lynx"])
    with pytest.raises(physode.InvalidArgumentError, match=message):
        rollout_report(model, named, system=lotka_volterra, t_end=4.0)


def test_named_data_without_a_system_are_put_in_the_models_order_for_training_and_rollouts():
    t, ys = map(torch.as_tensor, _oscillator(2, 11, 2.0))  # [q, p]
    data = Trajectories(t, ys.flip(-1), state_names=["p", "q"])
    model = PhysicsModel(physode.systems.load("harmonic_oscillator"), ["k"])
    trainer = Trainer(model, data, val_data=data, epochs=1, window=4)
    for held in (trainer.train_data, trainer.val_data, trainer.held_out_data(data)):
        assert held.state_names == ("q", "p")
        torch.testing.assert_close(held.states, ys)
    assert rollout_report(model, data, conservation=False).mse < 1e-10


class _ScaledOscillator(nn.Module):
    """The true harmonic oscillator's field times a learnable factor (1 at the start): a model
    of no system of its own, exact as built."""

    autonomous = True

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones((), dtype=torch.float64))
        self.field = physode.systems.load("harmonic_oscillator").vector_field()

    def forward(self, t, y):
        return self.scale * self.field(t, y)


def test_held_out_data_without_a_system_meet_the_training_datas_system_by_name():
    # evaluate() set the training data's system on the held-out data directly: named states in
    # another order stayed in it, so a model without a system rolled out swapped states, and
    # a wrong state size got past the check that Trajectories(..., system=...) makes.
    t, ys = map(torch.as_tensor, _oscillator(2, 11, 2.0))  # [q, p]
    data = Trajectories(t, ys, system="harmonic_oscillator")
    trainer = Trainer(_ScaledOscillator(), data, epochs=1, lr=1e-12)
    trainer.fit()
    named = Trajectories(t, ys.flip(-1), state_names=["p", "q"])
    report = trainer.evaluate(named, t_end=3.0)
    assert report.mse < 1e-10 and report.conservation_model.ok
    assert named.system is None and named.state_names == ("p", "q")  # the caller's, as given
    wide = Trajectories(t, torch.cat([ys, ys[..., :1]], -1))
    message = (r"the held-out data have no system, and the training data's "
               r"'harmonic_oscillator' does not fit them: .*the states have 3 components")
    with pytest.raises(physode.InvalidArgumentError, match=message):
        trainer.evaluate(wide)


def test_a_physics_term_of_another_system_takes_the_parameters_it_shares_by_name(tmp_path):
    # Data of a damped oscillator with stored m, k, c; the physics is an undamped spring (k, m
    # in another order), as in an APHYNITY hybrid: it takes m and k from the data by name.
    spec = tmp_path / "spring.toml"
    spec.write_text(
        'name = "spring"\nform = "lagrangian"\ncoordinates = ["x"]\nvelocities = ["v"]\n'
        'lagrangian = "m*v**2/2 - k*x**2/2"\n[parameters]\nk = 3.0\nm = 3.0\n'
    )
    damped = physode.systems.load("damped_oscillator")
    params = torch.tensor([[1.0, 0.5, 0.0], [2.0, 1.5, 0.0]], dtype=torch.float64)  # c = 0
    t = torch.linspace(0, 1, 6, dtype=torch.float64)
    y0 = torch.tensor([[1.0, 0.0], [0.5, 0.2]], dtype=torch.float64)
    ys = physode.odeint(lambda s, y: damped.rhs(s, y, params), y0, t, rtol=1e-11, atol=1e-11)
    data = Trajectories(t, ys.transpose(0, 1), params, damped)
    report = rollout_report(PhysicsModel(spec, []), data, rtol=1e-10, atol=1e-12)
    assert report.mse < 1e-14  # the undamped law with each row's m and k is exact here


def test_a_checkpoint_resumes_only_with_the_opt_disc_settings_it_was_saved_with(tmp_path):
    stable = physode.OptDisc(restart=True, rtol=1e-9, atol=1e-11)
    trainer = Trainer(neural(), spiral_data(), epochs=1, window=5, gradient=stable)
    assert trainer.config.gradient is stable
    path = trainer.save_checkpoint(tmp_path / "last.pt")
    plain = physode.OptDisc(rtol=1e-9, atol=1e-11)
    other = Trainer(neural(), spiral_data(), epochs=1, window=5, gradient=plain)
    with pytest.raises(physode.InvalidArgumentError, match=r"gradient: 'OptDisc\(.*restart=True"):
        other.load_checkpoint(path)
    same = physode.OptDisc(restart=True, rtol=1e-9, atol=1e-11)
    Trainer(neural(), spiral_data(), epochs=1, window=5, gradient=same).load_checkpoint(path)


@pytest.mark.parametrize(
    ("saved", "resumed"),
    [
        ("aca", physode.ACA()),
        (physode.ACA(keep_last_graph=True), "aca"),
        ("disc-opt", physode.DiscOpt()),
        (physode.DiscOpt(), "disc-opt"),
        (physode.OptDisc(), "opt-disc"),
        ("opt-disc", physode.OptDisc(restart=False, seminorm=False)),
    ],
)
def test_a_gradient_mode_named_or_given_as_its_default_object_resumes_the_same_run(
    tmp_path, saved, resumed
):
    # A checkpoint stores a mode object as its repr, and "aca" was refused against
    # "ACA(keep_last_graph=True)" as a changed setting although both are the one run.
    trainer = Trainer(neural(), spiral_data(), epochs=1, window=5, gradient=saved)
    path = trainer.save_checkpoint(tmp_path / "last.pt")
    Trainer(neural(), spiral_data(), epochs=1, window=5, gradient=resumed).load_checkpoint(path)


@pytest.mark.parametrize(
    ("saved", "resumed", "shown"),
    [
        ("opt-disc", physode.OptDisc(rtol=1e-3), r"'opt-disc' -> 'OptDisc\(.*rtol=0\.001"),
        (physode.OptDisc(seminorm=True), "opt-disc", r"'OptDisc\(.*seminorm=True\)' -> 'opt-disc'"),
        ("aca", "disc-opt", r"'aca' -> 'disc-opt'"),
        (physode.ACA(), physode.DiscOpt(), r"'ACA\(keep_last_graph=True\)' -> 'DiscOpt\(\)'"),
    ],
)
def test_another_gradient_mode_is_refused_on_resume_as_the_user_set_it(
    tmp_path, saved, resumed, shown
):
    trainer = Trainer(neural(), spiral_data(), epochs=1, window=5, gradient=saved)
    path = trainer.save_checkpoint(tmp_path / "last.pt")
    other = Trainer(neural(), spiral_data(), epochs=1, window=5, gradient=resumed)
    with pytest.raises(physode.InvalidArgumentError, match=rf"settings differ .*gradient: {shown}"):
        other.load_checkpoint(path)


@pytest.mark.parametrize(
    ("old", "now"),
    [
        ("ACA()", "aca"),  # physode before keep_last_graph
        ("OptDisc(method=None, rtol=1e-09, atol=None, restart=True, seminorm=False)",
         physode.OptDisc(rtol=1e-9, restart=True)),  # before step_size
    ],
)
def test_a_gradient_mode_saved_in_an_older_repr_resumes_with_the_same_mode(tmp_path, old, now):
    state = Trainer(neural(), spiral_data(), epochs=1, window=5, gradient=now).state_dict()
    state["config"]["gradient"] = old
    torch.save(state, tmp_path / "old.pt")
    Trainer(neural(), spiral_data(), epochs=1, window=5, gradient=now).load_checkpoint(
        tmp_path / "old.pt"
    )
    other = Trainer(neural(), spiral_data(), epochs=1, window=5, gradient=physode.OptDisc())
    with pytest.raises(physode.InvalidArgumentError, match=r"gradient: '(ACA|OptDisc)\("):
        other.load_checkpoint(tmp_path / "old.pt")


def test_the_trainers_warnings_are_physode_warnings():
    # One class, so that the physode command (and a user) can tell them from others.
    model = ForcedDecay(0.0)
    with pytest.warns(physode.PhysodeWarning, match="model.autonomous"):
        Trainer(model, forced_data(), epochs=1, window=6, batch_size=64)


def test_the_printed_report_counts_one_trajectory_in_the_singular():
    t, ys = spiral_data(n=2, points=11, t_end=1.0)
    one = rollout_report(lambda s, y: y @ A, Trajectories(t, ys[:1]), conservation=False)
    two = rollout_report(lambda s, y: y @ A, Trajectories(t, ys), conservation=False)
    assert str(one).startswith("rollout of 1 held-out trajectory to t = 1 ")
    assert str(two).startswith("rollout of 2 held-out trajectories to t = 1 ")


def test_choosing_an_epochs_batches_reads_nothing_from_the_device():
    # Whether the times are equally spaced, so that windows of different starts share a solve,
    # is fixed for the run: read once when the trainer is built, not again at every epoch's
    # batching of the training and the validation windows (on a GPU each read waits for the
    # queued work).
    data = spiral_data()
    trainer = Trainer(neural(), data, val_data=data, window=5, batch_size=4)
    with HostSyncs() as syncs:
        batches = trainer._batches(trainer.train_windows, shuffle=True)
        trainer._batches(trainer.val_windows, shuffle=False, data=trainer.val_data)
    assert "_local_scalar_dense" not in syncs.ops
    # ... and the windows of different starts still share their batches.
    assert len(batches[0]) == 4 and len({w.start for w in batches[0]}) > 1


def test_the_state_kept_between_epochs_is_a_copy_that_keeps_shared_tensors_shared():
    from physode.train.trainer import _copied

    weight = torch.ones(3)
    state = {"a": weight, "b": [weight, 2.5, "x", None, (1, torch.zeros(2))], "c": {"d": weight}}
    copied = _copied(state)
    weight += 1
    assert torch.equal(copied["a"], torch.ones(3)) and copied["b"][1:4] == [2.5, "x", None]
    assert copied["a"] is copied["b"][0] is copied["c"]["d"]  # one tensor, as deepcopy keeps it
    model_state = neural().state_dict()
    kept = _copied(model_state)
    assert kept._metadata == model_state._metadata
    assert all(torch.equal(kept[k], v) and kept[k] is not v for k, v in model_state.items())


def test_the_log_renders_each_epochs_row_once_and_writes_what_a_fresh_write_would(
    tmp_path, monkeypatch
):
    # The log is rewritten whole after every epoch (atomically); rendering every earlier row
    # again each time cost a run of E epochs E²/2 rows.
    rendered = []
    to_list = csv.DictWriter._dict_to_list
    monkeypatch.setattr(csv.DictWriter, "_dict_to_list",
                        lambda self, row: rendered.append(row["epoch"]) or to_list(self, row))
    data = spiral_data()
    trainer = Trainer(neural(), data, val_data=data, epochs=5, window=5,
                      log=str(tmp_path / "log.csv"))  # fmt: skip
    trainer.fit()
    assert [epoch for epoch in rendered if epoch != "epoch"] == [1, 2, 3, 4, 5]  # no headers
    write_log(trainer.history, tmp_path / "fresh.csv")
    assert (tmp_path / "log.csv").read_text() == (tmp_path / "fresh.csv").read_text()


def test_a_log_whose_rows_change_is_written_as_a_fresh_write_would():
    from physode.train._log import RenderedRows

    rows = RenderedRows()
    history = [{"epoch": 1, "loss": 0.5}, {"epoch": 2, "loss": 0.25}]

    def fresh(history):
        return RenderedRows().text(history)

    assert rows.text(history) == fresh(history) == "epoch,loss\n1,0.5\n2,0.25\n"
    history.append({"epoch": 3, "loss": 0.125, "skipped_batches": 1})  # a new column
    assert rows.text(history) == fresh(history) and rows.text(history).endswith(",\n3,0.125,1\n")
    history[1]["loss"] = float("nan")  # a row changed in place, then one replaced and one gone
    assert rows.text(history) == fresh(history)
    history[1], history[2:] = {"epoch": 2, "loss": 0.3}, []
    assert rows.text(history) == fresh(history) == "epoch,loss\n1,0.5\n2,0.3\n"


def _oscillator_system(first: str, second: str) -> physode.System:
    """The harmonic oscillator (q' = p/m, p' = -k q) with its states named ``first`` (q) and
    ``second`` (p), listed as written."""
    import sympy as sp

    q, p, m, k = sp.symbols(f"{first} {second} m k")
    return physode.System.from_equations({q: p / m, p: -k * q}, parameters={m: 1.0, k: 1.0})


def _reversed_oscillator() -> physode.System:
    """The harmonic oscillator with its states listed [p, q], the catalogue's in another order."""
    import sympy as sp

    q, p, m, k = sp.symbols("q p m k")
    return physode.System.from_equations({p: -k * q, q: p / m}, parameters={m: 1.0, k: 1.0})


@pytest.mark.parametrize("kind", ["physics", "hybrid"])
def test_a_model_whose_system_orders_the_datas_states_otherwise_is_refused_naming_both(kind):
    # Data [q, p], model [p, q]: only the count was compared, and it trained on swapped states.
    data = Trajectories(*_oscillator(4, 11, 2.0), system="harmonic_oscillator")
    model = PhysicsModel(_reversed_oscillator(), ["k"])
    if kind == "hybrid":
        model = Hybrid(model, NeuralODE(2, width=4, depth=1, zero_output=True))
    message = (r"the states \['p', 'q'\], the training data's system 'harmonic_oscillator' "
               r"the same ones in the order \['q', 'p'\]")  # fmt: skip
    with pytest.raises(physode.InvalidArgumentError, match=message):
        Trainer(model, data, epochs=1)
    with pytest.raises(physode.InvalidArgumentError, match="validation data's system"):
        Trainer(model, _oscillator(4, 11, 2.0), val_data=data, epochs=1)


def test_held_out_data_whose_system_orders_the_models_states_otherwise_are_refused_in_rollouts():
    # Data with a system of their own [p, q] kept its order, and a model of [q, p] rolled out
    # swapped states without a word (mse 0.85 for an exact model); the trainer refuses them.
    t, ys = map(torch.as_tensor, _oscillator(2, 11, 2.0))  # [q, p]
    reversed_system = _reversed_oscillator()
    data = Trajectories(t, ys.flip(-1), system=reversed_system)
    model = PhysicsModel(physode.systems.load("harmonic_oscillator"), ["k"])
    message = (r"the model's system 'harmonic_oscillator' has the states \['q', 'p'\], the "
               r"held-out data's system '\w+' the same ones in the order \['p', 'q'\]")
    with pytest.raises(physode.InvalidArgumentError, match=message):
        rollout_report(model, data)
    trainer = Trainer(model, Trajectories(t, ys, system="harmonic_oscillator"), epochs=1)
    with pytest.raises(physode.InvalidArgumentError, match=message):
        trainer.evaluate(data)
    # As the message says: named without a system, they meet the model's system and the true
    # one by name.
    named = Trajectories(t, data.states, state_names=["p", "q"])
    report = rollout_report(model, named, system=reversed_system, t_end=3.0)
    assert report.mse < 1e-10 and report.conservation_truth.ok and report.conservation_model.ok


def test_a_model_whose_system_names_the_states_otherwise_trains_on_them_in_their_order():
    data = Trajectories(*_oscillator(4, 11, 2.0), system="harmonic_oscillator")
    model = PhysicsModel(_oscillator_system("x", "v"), ["k"], init={"k": 1.2})
    trainer = Trainer(model, data, epochs=3, lr=0.05)
    trainer.fit()
    assert abs(model.physical_parameters()["k"] - 1.0) < abs(1.2 - 1.0)


# Reprs: training's objects print as one short line of shapes, figures and settings.


def test_large_trajectories_print_their_shapes_and_system_not_their_states():
    t = torch.linspace(0, 1, 1000, dtype=torch.float64)
    states = torch.zeros(500, 1000, 2, dtype=torch.float64)
    states[0, 3, 1] = float("nan")
    params = torch.ones(500, 3, dtype=torch.float64)
    data = Trajectories(t, states, params=params, system="pendulum")
    assert repr(data) == (
        "Trajectories(t=Tensor(shape=(1000,), dtype=float64), states=Tensor(shape=(500, 1000, 2), "
        "dtype=float64), params=Tensor(shape=(500, 3), dtype=float64), system='pendulum', "
        "complete=False)"
    )


def test_a_trainer_and_its_result_print_the_run_in_one_short_line():
    t, ys = spiral_data(n=4, points=21)
    trainer = Trainer(LinearDecay(), (t, ys), epochs=40, window=5, lr=0.01)
    assert repr(trainer) == (
        "Trainer(model=LinearDecay, train_data=(4, 21, 2) float64, val_data=None, epoch=0, "
        "device=cpu, epochs=40, window=5, batch_size=16, optimizer='adam', lr=0.01, "
        "method='dopri5', gradient='aca')"
    )
    result = trainer.fit()
    text = repr(result)
    assert len(text) < 300 and "'wall_time'" not in text  # the history rows are not listed
    loss, k = result.final_loss, result.physical_parameters["k"]
    assert text.startswith(
        f"TrainResult(history=40 epochs, last loss {loss:.6g}, epochs_trained=40, "
        "best_epoch=None, best_val_loss=None, stopped_early=False, train_seconds="
    )
    assert text.endswith(f"physical_parameters={{'k': {k:.6g}}}, per_trajectory_parameters={{}})")
    assert "epoch=40," in repr(trainer)
    assert repr(Trainer.__new__(Trainer)) == "Trainer()"


def test_a_rollout_report_prints_its_errors_and_shapes_and_its_table_when_printed():
    t, ys = spiral_data(n=4, points=21)
    report = rollout_report(LinearDecay(0.5), (t, ys), horizon=1.0)
    text = repr(report)
    assert text.startswith(
        f"RolloutReport(predicted=Tensor(shape=(4, 21, 2), dtype=float64), horizon=1, "
        f"mse={report.mse:.6g}, mse_within={report.mse_within:.6g}, "
        f"mse_beyond={report.mse_beyond:.6g}, conservation_model=None"
    )
    assert str(report).startswith("rollout of 4 held-out trajectories")  # the table stays


def test_a_train_result_prints_per_trajectory_values_as_their_range():
    from physode.train import TrainResult

    result = TrainResult([], None, None, False, 0.5, per_trajectory_parameters={"l": [1.5, 0.5, 1]})
    assert repr(result) == (
        "TrainResult(history=[], epochs_trained=0, best_epoch=None, best_val_loss=None, "
        "stopped_early=False, train_seconds=0.5, physical_parameters={}, "
        "per_trajectory_parameters={'l': 0.5..1.5})"
    )
