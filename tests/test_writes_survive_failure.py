"""Every file physode writes survives a write that fails: the disk fills up part-way.

A full disk is made real with the file size limit (``RLIMIT_FSIZE``): the system then refuses
any write past the limit (``EFBIG``, "File too large") as it refuses one on a full disk
(``ENOSPC``), whoever writes: Python, torch's C++ writer, HDF5. Writers that use h5py run in a
subprocess, since HDF5 may crash its process after such a failure.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import sympy
import torch

import physode
from physode._files import write_atomically
from physode.models import NeuralODE
from physode.train import Trainer

resource = pytest.importorskip("resource")  # POSIX only: Windows has no file size limit

REPO = Path(__file__).resolve().parents[1]
TOO_LARGE = os.strerror(errno.EFBIG)  # "File too large"


@contextlib.contextmanager
def disk_full_after(nbytes: int):
    """Writes that would make a file longer than ``nbytes`` fail in this process."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the process is killed
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _trainer(tmp_path: Path) -> Trainer:
    t = torch.linspace(0, 1, 6, dtype=torch.float64)
    ys = torch.exp(-t)[None, :, None].expand(3, 6, 1).contiguous()
    torch.manual_seed(0)
    return Trainer(NeuralODE(1, width=16, depth=1), (t, ys), epochs=1, window=3)


def test_a_checkpoint_that_fills_the_disk_is_refused_by_name_and_keeps_the_previous_one(
    tmp_path,
):
    trainer = _trainer(tmp_path)
    folder = tmp_path / "ck"
    last = trainer.save_checkpoint(folder / "last.pt")
    before = _files(folder)
    trainer.fit()
    with disk_full_after(1000), pytest.raises(physode.InvalidArgumentError) as error:
        trainer.save_checkpoint(last)
    # torch.save writing to a path said only "[enforce fail at inline_container.cc:672] .
    # unexpected pos 64 vs 0", a RuntimeError that `physode train` took for a bug of physode.
    assert str(error.value) == f"cannot write the checkpoint {last}: {TOO_LARGE}"
    assert _files(folder) == before
    assert torch.load(last, weights_only=True)["epoch"] == 0


def test_physode_train_with_a_full_disk_says_which_file_in_one_line_and_keeps_model_pt(
    oscillator_h5, tmp_path, capsys
):
    from physode.cli import main

    out = tmp_path / "run"
    argv = ["train", str(oscillator_h5), "--epochs", "1", "--window", "5", "--model", "neural",
            "--width", "8", "--depth", "1", "--quiet", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    before = _files(out)
    capsys.readouterr()
    with disk_full_after(1000):
        status = main([*argv, "--seed", "1"])
    err = capsys.readouterr().err
    assert (status, err) == (
        2,
        f"physode train: error: cannot write the model {out / 'model.pt'}: {TOO_LARGE}\n",
    )
    assert _files(out) == before


def test_write_spec_that_fills_the_disk_leaves_the_existing_file_whole(tmp_path):
    x, k = sympy.symbols("x k")
    decay = physode.System.from_equations({x: -k * x}, {k: 0.5}, name="decay")
    path = tmp_path / "decay.toml"
    path.write_text("# my hand-written notes\n" * 200, encoding="utf-8")
    before = _files(tmp_path)
    half = len(decay.to_spec()) // 2
    with disk_full_after(half), pytest.raises(physode.InvalidArgumentError) as error:
        decay.write_spec(path)
    # It was truncated and left half-written, and the OSError escaped as it was.
    assert str(error.value) == f"cannot write the specification file {path}: {TOO_LARGE}"
    assert _files(tmp_path) == before
    assert decay.write_spec(tmp_path / "new" / "decay.toml").read_text() == decay.to_spec()


def test_a_write_that_hdf5_refuses_as_it_closes_the_file_is_said_as_the_system_said_it(
    tmp_path,
):
    # What h5py raises where closing a file cannot flush it to a full disk (seen with
    # RLIMIT_FSIZE): `physode simulate` called it "internal error ... a bug in physode".
    def closing(tmp: Path) -> None:
        tmp.write_bytes(b"\x89HDF\r\n\x1a\n")
        raise RuntimeError(
            "Can't decrement id ref count (unable to extend file properly, errno = 28, "
            "error message = 'No space left on device')"
        )

    path = tmp_path / "data.h5"
    with pytest.raises(physode.InvalidArgumentError) as error:
        write_atomically(path, closing, "data set")
    assert str(error.value) == f"cannot write the data set {path}: {os.strerror(errno.ENOSPC)}"
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(RuntimeError, match="^a bug$"):  # other errors go on as they were
        write_atomically(path, lambda tmp: (_ for _ in ()).throw(RuntimeError("a bug")), "x")


def _simulate_argv(out: Path, *more: str) -> list[str]:
    """The arguments of ``physode simulate`` of 40 oscillators in 4 chunks into ``out``."""
    return ["simulate", "harmonic_oscillator", "--out", str(out), "--trajectories", "40",
            "--chunk-size", "10", "--t-end", "2", "--points", "50", "--quiet", *more]  # fmt: skip


def _simulate(out: Path, limit: int, *more: str) -> subprocess.CompletedProcess:
    """:func:`_simulate_argv`'s ``physode simulate``, in a subprocess whose files cannot grow past
    ``limit`` bytes."""

    def limited() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

    pythonpath = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-m", "physode", *_simulate_argv(out, *more)],
        env={**os.environ, "PYTHONPATH": pythonpath},
        preexec_fn=limited,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _simulate_here(out: Path, *more: str) -> int:
    """:func:`_simulate_argv`'s ``physode simulate`` with room on the disk, in this process (a
    subprocess costs an import of torch): its exit status."""
    from physode.cli import main

    return main(_simulate_argv(out, *more))


def test_physode_simulate_with_a_full_disk_keeps_the_data_set_and_no_half_file(tmp_path):
    out = tmp_path / "osc.h5"
    assert _simulate_here(out) == 0
    before = _files(tmp_path)
    size = out.stat().st_size  # each of its 4 chunk files is about a third of it

    # The disk fills up while the first chunk file is written.
    run = _simulate(out, size // 8, "--force", "--seed", "1")
    chunk = tmp_path / "osc.h5.parts" / "chunk-000000.h5"
    said = f"physode simulate: error: cannot write the chunk file {chunk}: {TOO_LARGE}"
    assert said in run.stderr.splitlines()
    # HDF5 may crash the process once the message is out, as it exits (h5py issue #914: a file
    # it could not close); status 2 where it does not.
    assert run.returncode in (2, -signal.SIGSEGV)
    # Its temporary file chunk-000000.h5.part stayed, and the message was HDF5's own (its
    # time, file descriptor, buffer address ...). No chunk was stored, so the run's folder goes
    # too (an error before the first chunk is no interrupted run to resume).
    assert not chunk.parent.exists()
    assert _files(out.parent).items() >= before.items()

    # The chunks fit, the data set that --force would put in place of OUT does not.
    run = _simulate(out, size // 2, "--force", "--seed", "1")
    assert f"physode simulate: error: cannot write the data set {out}: {TOO_LARGE}" in (
        run.stderr.splitlines()
    )
    assert run.returncode in (2, -signal.SIGSEGV)
    assert not out.with_name("osc.h5.tmp").exists()
    assert out.read_bytes() == before["osc.h5"]
    assert len(list(chunk.parent.glob("chunk-*.h5"))) == 4

    # With room again, --resume finishes it from its chunks.
    assert _simulate_here(out, "--force", "--seed", "1", "--resume") == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["osc.h5"]
    assert out.read_bytes() != before["osc.h5"]
