"""Tests of the lock that keeps a checkpoint folder to one training run at a time: two runs in
one folder (a job array that forgot to vary ``--checkpoint-dir``) overwrote each other's
``last.pt`` and ``best.pt`` without a word, and a later ``--resume`` could continue the other
run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import physode
from physode._files import lock_exclusively
from physode.cli import main
from physode.train import TrainConfig, Trainer, _distributed

REPO = Path(__file__).resolve().parents[1]

# A run that is inside fit(), at its first evaluation of the model, until it is killed.
_RUN_UNTIL_KILLED = """
import sys, time, torch
from physode.train import Trainer

class Stuck(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.k = torch.nn.Parameter(torch.tensor(1.0, dtype=torch.float64))

    def forward(self, t, y):
        print("training", flush=True)
        time.sleep(300)
        return -self.k * y

t = torch.linspace(0, 1, 5, dtype=torch.float64)
ys = torch.exp(-t)[None, :, None].repeat(2, 1, 1)
Trainer(Stuck(), (t, ys), epochs=1, checkpoint_dir=sys.argv[1]).fit()
"""


class Decay(nn.Module):
    """dy/dt = -k y with a learnable k."""

    def __init__(self) -> None:
        super().__init__()
        self.k = nn.Parameter(torch.tensor(0.5, dtype=torch.float64))

    def forward(self, t, y):
        return -self.k * y


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    t = torch.linspace(0, 1, 5, dtype=torch.float64)
    return t, torch.exp(-t)[None, :, None].repeat(2, 1, 1)


def _trainer(folder: Path) -> Trainer:
    return Trainer(Decay(), _data(), epochs=2, checkpoint_dir=str(folder))


def _refusal(folder: Path) -> str:
    return f"another training run is using the checkpoint folder {folder}"


def test_a_run_into_a_folder_another_process_trains_into_is_refused_until_that_one_is_killed(
    tmp_path,
):
    folder = tmp_path / "run"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    other = subprocess.Popen(
        [sys.executable, "-c", _RUN_UNTIL_KILLED, str(folder)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert other.stdout.readline() == "training\n"
        trainer = _trainer(folder)
        with pytest.raises(physode.InvalidArgumentError, match=_refusal(folder)):
            trainer.fit()
        assert trainer.history == [] and list(folder.iterdir()) == []
    finally:
        other.send_signal(signal.SIGKILL)  # no handler runs: the system drops its lock
        other.wait()
    assert other.returncode == -signal.SIGKILL
    assert _trainer(folder).fit().epochs_trained == 2
    assert sorted(p.name for p in folder.iterdir()) == ["last.pt"]


def test_fit_frees_the_folder_when_it_returns_and_when_it_is_interrupted(tmp_path, monkeypatch):
    folder = tmp_path / "run"
    _trainer(folder).fit()
    os.close(lock_exclusively(folder, "still held after fit returned"))
    trainer = _trainer(tmp_path / "cut")

    def interrupted(self, t, y):
        raise KeyboardInterrupt

    monkeypatch.setattr(Decay, "forward", interrupted)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    os.close(lock_exclusively(tmp_path / "cut", "still held after fit was interrupted"))


def test_one_trainer_fits_again_into_its_folder_and_a_held_folder_refuses_by_name(tmp_path):
    folder = tmp_path / "run"
    trainer = _trainer(folder)
    trainer.fit(epochs=1)
    trainer.fit(epochs=1)  # its own earlier call released the folder
    assert trainer.epoch == 2
    held = lock_exclusively(folder, "held by the test")
    try:
        with pytest.raises(physode.InvalidArgumentError) as refused:
            _trainer(folder).fit()
    finally:
        os.close(held)
    assert str(refused.value) == (
        f"checkpoint_dir={str(folder)!r}: {_refusal(folder)} (its last.pt and best.pt); give "
        "this run a folder of its own, or wait for that run to end"
    )


def test_physode_train_into_a_folder_in_use_exits_2_naming_it(oscillator_h5, tmp_path, capsys):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    held = lock_exclusively(folder, "held by the test")
    argv = ["train", str(oscillator_h5), "--epochs", "1", "--window", "5", "--quiet",
            "--model", "neural", "--width", "8", "--depth", "1",
            "--checkpoint-dir", str(folder), "--out", str(tmp_path / "out")]  # fmt: skip
    try:
        assert main(argv) == 2
    finally:
        os.close(held)
    err = capsys.readouterr().err
    assert err.startswith("physode train: error: ") and _refusal(folder) in err
    assert main(argv) == 0


def _process(monkeypatch, rank: int, folder: Path, epochs: list[int]) -> Trainer:
    """A trainer in process ``rank`` of two (torchrun) that is told the processes' epochs
    ``epochs`` when it starts to fit: only what fit reads before it trains."""
    group = _distributed.Group(rank=rank, world=2)
    monkeypatch.setattr(_distributed, "process_group", lambda: group)
    monkeypatch.setattr(
        _distributed, "gathered", lambda value, group, call: [(None, e) for e in epochs]
    )
    trainer = Trainer.__new__(Trainer)
    trainer.config = TrainConfig(checkpoint_dir=str(folder))
    trainer._group, trainer._writes, trainer.epoch = group, rank == 0, epochs[rank]
    return trainer


def test_under_torchrun_process_0_alone_locks_the_folder_and_frees_it_when_refused(
    tmp_path, monkeypatch
):
    folder = tmp_path / "run"
    folder.mkdir()
    held = lock_exclusively(folder, "held by the test")
    try:  # process 1 does not write: it takes no lock, and is refused for its epoch alone
        with pytest.raises(physode.InvalidArgumentError, match="are at different epochs"):
            _process(monkeypatch, 1, folder, [4, 0]).fit()
    finally:
        os.close(held)
    # Process 0 took the lock, then was refused: the lock went with the refusal.
    with pytest.raises(physode.InvalidArgumentError, match="are at different epochs"):
        _process(monkeypatch, 0, folder, [0, 4]).fit()
    os.close(lock_exclusively(folder, "still held after process 0 was refused"))


@pytest.mark.parametrize("named", [False, True])
def test_physode_train_resume_takes_the_folder_before_it_reads_the_checkpoint(
    oscillator_h5, tmp_path, capsys, monkeypatch, named
):
    # --resume read last.pt before fit took the folder: a second run resuming from one folder
    # read it too, and was refused only at fit; had the first run ended between the two, the
    # second would have trained on from the older state and overwritten the newer last.pt.
    from physode.train import _checkpoints

    folder = tmp_path / "ckpt"
    argv = ["train", str(oscillator_h5), "--window", "5", "--quiet", "--model", "neural",
            "--width", "8", "--depth", "1", "--checkpoint-dir", str(folder)]  # fmt: skip
    assert main([*argv, "--epochs", "1"]) == 0
    read = []
    reader = _checkpoints._read_checkpoint
    monkeypatch.setattr(_checkpoints, "_read_checkpoint", lambda path: read.append(path) or
                        reader(path))  # fmt: skip
    resume = ["--resume", str(folder / "last.pt")] if named else ["--resume"]
    held = lock_exclusively(folder, "held by the test")
    try:
        assert main([*argv, "--epochs", "2", *resume]) == 2
    finally:
        os.close(held)
    assert read == []
    assert _refusal(folder) in capsys.readouterr().err
    assert main([*argv, "--epochs", "2", *resume]) == 0  # the folder free: resumed
    assert read == [folder / "last.pt"]
