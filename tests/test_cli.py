"""Tests of the ``physode`` command: subcommands, help texts, one-line errors and exit codes."""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import matplotlib.figure
import numpy as np
import pytest
import torch

import physode
import physode.cli
import physode.data
import physode.systems
from physode.cli import build_parser, main
from physode.train import TrainConfig

REPO = Path(__file__).resolve().parents[1]
SIMULATE = ["simulate", "harmonic_oscillator", "--trajectories", "3", "--t-end", "2"]
SIMULATE += ["--points", "5", "--rtol", "1e-9", "--atol", "1e-9"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "osc.h5"
    assert main([*SIMULATE, "--out", str(out), "--quiet", "--seed", "4"]) == 0
    return out


@pytest.fixture(scope="module")
def train_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli_train") / "osc.h5"
    assert main([*SIMULATE, "--trajectories", "5", "--out", str(out), "--quiet"]) == 0
    return out


def _train(data, *argv):
    return ["train", str(data), "--model", "neural", "--width", "4", "--depth", "1",
            "--epochs", "1", "--quiet", *argv]  # fmt: skip


def _garbled_copy(source: Path, target: Path) -> Path:
    target.write_bytes(source.read_bytes())
    with h5py.File(target) as f:
        offset = f["states"].id.get_chunk_info(0).byte_offset
    with open(target, "r+b") as handle:
        handle.seek(offset + 8)
        handle.write(b"\x00\xff\x00\xff")
    return target


def test_systems_lists_every_catalogue_system_with_its_description(capsys):
    assert main(["systems"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == physode.systems.names()
    pendulum = next(line for line in lines if line.startswith("pendulum "))
    assert physode.systems.load("pendulum").description in pendulum


def test_simulate_writes_the_file_and_prints_one_summary_line(tmp_path, capsys):
    out = tmp_path / "loud.h5"
    assert main([*SIMULATE, "--out", str(out), "--params", "sample", "--noise", "0.1"]) == 0
    printed = capsys.readouterr().out.strip()
    assert printed.startswith(f"wrote {out}: 3 trajectories") and "\n" not in printed
    with physode.data.load(out) as data:
        assert data.noisy_states is not None and data.params.shape == (3, 2)
        assert data.attrs["command_line"].startswith("physode simulate harmonic_oscillator")
        assert "--noise 0.1" in data.attrs["command_line"]


def test_simulate_max_step_caps_the_steps_and_is_stored_and_a_bad_one_is_refused(
    tmp_path, capsys
):
    out = tmp_path / "capped.h5"
    assert main([*SIMULATE, "--out", str(out), "--quiet", "--max-step", "0.05"]) == 0
    with physode.data.load(out) as data:
        assert data.solver["max_step"] == 0.05 and (data.n_steps >= 40).all()  # t_end = 2
        assert data.attrs["command_line"].endswith(" --max-step 0.05")
    assert main([*SIMULATE, "--out", str(tmp_path / "x.h5"), "--max-step", "0"]) == 2
    assert "bad simulate arguments: --max-step 0.0 must be a finite number > 0" in (
        capsys.readouterr().err
    )


def test_simulate_refuses_to_overwrite_with_exit_status_2(dataset, capsys):
    assert main([*SIMULATE, "--out", str(dataset), "--quiet"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("physode simulate: error: ") and "--force" in error
    assert error.count("\n") == 1


def test_check_exits_0_within_tolerance_and_1_beyond_it(dataset, capsys):
    assert main(["check", str(dataset)]) == 0
    table = capsys.readouterr().out
    assert "energy" in table and "median drift" in table and "within tolerance 1e-06" in table
    assert main(["check", str(dataset), "--tolerance", "1e-300"]) == 1
    assert "beyond tolerance 1e-300: energy" in capsys.readouterr().out


def test_check_of_float32_states_beyond_tolerance_says_their_rounding_drifts(
    dataset, tmp_path, capsys
):
    # A float32 file failed the default check for the rounding of its states alone (a
    # three-body file of physode simulate's defaults: 3.8e-6), without a word that the
    # float64 solve behind it drifted by 1e-9 or that float32 files want --tolerance 1e-4.
    out = tmp_path / "osc32.h5"
    assert main([*SIMULATE, "--out", str(out), "--quiet", "--seed", "4", "--dtype", "float32"]) == 0
    assert main(["check", str(out), "--tolerance", "1e-12"]) == 1
    table = capsys.readouterr().out
    with physode.data.load(out) as data:
        solved = float(np.nanmax(data.drift["energy"]))
    assert "beyond tolerance 1e-12: energy\n  (the states are stored as float32" in table
    assert f"the float64 solve behind them drifted by at most energy {solved:.1e}" in table
    assert "--tolerance 1e-4" in table
    assert main(["check", str(dataset), "--tolerance", "1e-300"]) == 1  # float64: no such line
    assert "float32" not in capsys.readouterr().out


def test_check_beyond_a_tolerance_far_below_the_stored_rtol_names_the_solver_tolerances(
    dataset, tmp_path, capsys
):
    # A data set solved at --rtol 1e-3 failed the default check without a word that its own
    # solver tolerance gives drifts of that order.
    out = tmp_path / "loose.h5"
    loose = ["simulate", "pendulum", "--trajectories", "3", "--t-end", "5", "--points", "5"]
    loose += ["--rtol", "1e-3", "--atol", "1e-6", "--out", str(out), "--quiet", "--seed", "4"]
    assert main(loose) == 0
    assert main(["check", str(out)]) == 1  # drifts by 6.4e-4
    table = capsys.readouterr().out
    assert "beyond tolerance 1e-06: energy\n  (the data set was solved with rtol=0.001, " in table
    assert "atol=1e-06" in table and "--tolerance 0.1" in table
    assert main(["check", str(dataset), "--tolerance", "1e-7"]) == 0  # rtol 1e-9: passes
    assert main(["check", str(out), "--tolerance", "0.1"]) == 0
    assert "solved with" not in capsys.readouterr().out


def _with_solver_failures(source: Path, target: Path, rows: list[int]) -> Path:
    """A copy of ``source`` whose ``rows`` failed as a solve does: NaN from the third point on,
    flag bit 1, status MAX_STEPS, and the time reached halfway between the second and third
    points."""
    target.write_bytes(source.read_bytes())
    with h5py.File(target, "r+") as f:
        for name in ("states", "derivatives", *(f"invariants/{k}" for k in f["invariants"])):
            values = f[name][()]
            values[rows, 2:] = np.nan
            f[name][...] = values
        flags, status = f["flags"][()], f["solver/status"][()]
        flags[rows] |= 1
        status[rows] = int(physode.Status.MAX_STEPS)
        f["flags"][...], f["solver/status"][...] = flags, status
        t_final, t = f["solver/t_final"][()], f["t"][()]
        t_final[rows] = (t[1] + t[2]) / 2
        f["solver/t_final"][...] = t_final
    return target


def test_check_measures_drift_on_the_solved_trajectories_and_exits_1_for_the_failures(
    dataset, tmp_path, capsys
):
    # The failed trajectory's drift was inf, so every invariant read "beyond tolerance" although
    # the two solved ones conserve it.
    path = _with_solver_failures(dataset, tmp_path / "failed.h5", [1])
    assert main(["check", str(path)]) == 1
    table = capsys.readouterr().out
    assert "3 trajectories, 1 solver failure (trajectory 1)" in table
    assert "drift over the 2 trajectories solved to the end:" in table
    assert "all invariants within tolerance 1e-06" in table and "beyond tolerance" not in table
    assert table.rstrip().endswith(
        "check failed: the file has 1 solver failure (trajectories that stopped before the "
        "final time, flag bit 1)"
    )
    report = physode.data.check(path)
    assert report.failing == [] and not report.passed and report.failed_trajectories == [1]
    (energy,) = report.invariants
    assert 0 <= energy.worst < 1e-6 and 0 <= energy.median <= energy.worst
    assert sorted(i for i, _ in energy.worst_trajectories) == [0, 2]


def test_check_lists_each_failures_cause_and_the_time_it_reached(dataset, tmp_path, capsys):
    # The failed trajectories were listed by row alone: neither why they stopped nor where.
    path = _with_solver_failures(dataset, tmp_path / "failed.h5", [0, 2])
    assert main(["check", str(path)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[1:3] == [
        "solver failures by cause (t: the time each reached, of 2):",
        "  max_steps used up  2: trajectories 0 (t = 0.75), 2 (t = 0.75)",
    ]


def test_check_names_both_the_failures_and_an_invariant_beyond_tolerance(
    dataset, tmp_path, capsys
):
    path = _with_solver_failures(dataset, tmp_path / "failed.h5", [0, 2])
    assert main(["check", str(path), "--tolerance", "1e-300"]) == 1
    table = capsys.readouterr().out
    assert "2 solver failures (trajectories 0, 2)" in table
    assert "beyond tolerance 1e-300: energy" in table and "check failed: the file has 2" in table
    assert physode.data.check(path, tolerance=1e-300).failing == ["energy"]


def test_check_writes_the_drift_plot(dataset, tmp_path, capsys):
    plot = tmp_path / "drift.png"
    assert main(["check", str(dataset), "--plot", str(plot)]) == 0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["check", "missing.h5"], "missing.h5: no such file"),
        ([*SIMULATE, "--out", "x.h5", "--trajectories", "0"],
         "-n/--trajectories 0 must be an integer >= 1"),
        (["simulate", "no_such_system", "-n", "1", "--t-end", "1", "--points", "2", "-o", "y.h5"],
         "unknown system 'no_such_system'"),
        (["check", "{foreign}"], "not a physode data set"),
        (["check", "{garbled}"], "dataset /states is damaged"),
    ],
)  # fmt: skip
def test_errors_print_one_line_and_exit_2(dataset, tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    with h5py.File(tmp_path / "foreign.h5", "w") as f:
        f["x"] = [1.0]
    garbled = _garbled_copy(dataset, tmp_path / "garbled.h5")
    argv = [a.format(foreign=tmp_path / "foreign.h5", garbled=garbled) for a in argv]
    assert main(argv) == 2
    error = capsys.readouterr().err
    # Every error line names its command, as argparse's usage errors and the warnings do.
    assert error.startswith(f"physode {argv[0]}: error: ") and message in error
    assert error.count("\n") == 1


def test_simulate_given_a_data_set_for_its_system_points_at_check(
    dataset, tmp_path, capsys, monkeypatch
):
    # `physode simulate osc.h5 ...`, simulate for check, said "unknown system 'osc.h5'".
    monkeypatch.chdir(tmp_path)
    (tmp_path / "osc.h5").write_bytes(dataset.read_bytes())
    argv = ["simulate", "osc.h5", "-n", "4", "--t-end", "1", "--points", "2", "-o", "x.h5"]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert error.startswith(
        "physode simulate: error: 'osc.h5' is a physode data set, not a system specification; "
        "a system is a name from the catalogue (`physode systems` lists them) or a .toml "
        "specification file. To check the data set: `physode check osc.h5`;"
    )
    assert error.count("\n") == 1 and not (tmp_path / "x.h5").exists()


def test_simulate_given_a_missing_data_file_for_its_system_says_there_is_no_such_file(
    tmp_path, capsys, monkeypatch
):
    # It said "unknown system 'missing.h5'; valid names: ..."
    monkeypatch.chdir(tmp_path)
    argv = ["simulate", "missing.h5", "-n", "4", "--t-end", "1", "--points", "2", "-o", "x.h5"]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert error.startswith("physode simulate: error: no such file: 'missing.h5'; a system is ")
    assert error.count("\n") == 1 and not (tmp_path / "x.h5").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["simulate", "pendulum", "--t-end", "1", "--points", "2", "--out", "x.h5"],  # no -n
        [*SIMULATE, "--out", "x.h5", "--split", "0.8,0.2"],
        [*SIMULATE, "--out", "x.h5", "--dtype", "float16"],
        ["frobnicate"],
        [],
    ],
)
def test_usage_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert "usage: physode" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("command", "flags"),
    [
        ([], ["systems", "simulate", "check", "exit status"]),
        (["systems"], ["catalogue"]),
        (["simulate"], ["--trajectories", "--t-end", "--points", "--out", "--seed", "--method",
                        "--rtol", "--atol", "--params", "--noise", "--split", "--dtype",
                        "--resume", "--force", "--quiet", "--chunk-size", "examples:"]),
        (["check"], ["--tolerance", "--plot", "exit status"]),
    ],
)  # fmt: skip
def test_help_describes_every_option(command, flags, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in flags:
        assert flag in text


def test_python_dash_m_physode_prints_errors_without_a_traceback(dataset, tmp_path):
    garbled = _garbled_copy(dataset, tmp_path / "garbled.h5")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run(
        [sys.executable, "-m", "physode", "check", str(garbled)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("physode check: error: ") and result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("plot", "message"),
    [
        # Spelled as every option's value is (`--plot drift.txt`), not `--plot='drift.txt'`.
        ("drift.txt", "error: --plot drift.txt: the file name must end in an image format"),
        ("drift", "error: --plot drift: the file name must end in an image format"),
        ("./drift.txt", r"error: --plot \./drift\.txt: the file name must end"),
        ("my drift.txt", "error: --plot 'my drift.txt': the file name must end"),
    ],
)
def test_a_plot_that_cannot_be_written_is_refused_before_the_check(
    dataset, tmp_path, capsys, monkeypatch, plot, message
):
    monkeypatch.chdir(tmp_path)
    assert main(["check", str(dataset), "--plot", plot.format(tmp=tmp_path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # refused before the file was read
    assert captured.err.startswith("physode check: error: ") and captured.err.count("\n") == 1
    assert re.search(message, captured.err)


def test_missing_folders_above_every_output_path_are_created(dataset, tmp_path, capsys):
    # One rule for every output path (`physode train` always created its folders): `simulate -o`
    # and `check --plot` refused a missing folder.
    out = tmp_path / "new" / "data" / "osc.h5"
    assert main([*SIMULATE, "-o", str(out), "--quiet"]) == 0
    with physode.data.load(out) as stored:
        assert stored.states.shape[0] == 3
    plot = tmp_path / "plots" / "a" / "drift.png"
    assert main(["check", str(out), "--quiet", "--plot", str(plot)]) == 0
    assert plot.is_file()


@pytest.mark.parametrize(
    "argv",
    [
        [*SIMULATE[:3], "0", *SIMULATE[4:], "-o", "{new}/osc.h5"],  # -n 0
        ["check", "{data}", "--plot", "{new}/drift.txt"],  # not an image format
        ["check", "{tmp}/missing.h5", "--plot", "{new}/drift.png"],  # no data set
    ],
)
def test_a_command_refused_leaves_none_of_the_folders_it_created(
    dataset, tmp_path, capsys, argv
):
    new = tmp_path / "made" / "here"
    argv = [a.format(new=new, data=dataset, tmp=tmp_path) for a in argv]
    assert main(argv) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert not (tmp_path / "made").exists()


@pytest.mark.parametrize(
    ("argv", "spelled"),
    [
        ([*SIMULATE, "-o", "{file}/sub/osc.h5"], "-o/--out {file}/sub/osc.h5"),
        (["check", "{data}", "--plot", "{file}/drift.png"], "--plot {file}/drift.png"),
    ],
)
def test_an_output_folder_under_a_file_is_refused_naming_the_option(
    dataset, tmp_path, capsys, argv, spelled
):
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    argv = [a.format(file=afile, data=dataset) for a in argv]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"physode {argv[0]}: error: {spelled.format(file=afile)}: ")
    assert f"{afile} is not a folder" in error and afile.read_text() == "not a folder"


@pytest.mark.parametrize("out", ["runs/", "new/runs/"])
def test_simulate_refuses_an_out_that_ends_in_a_slash_instead_of_writing_a_file_so_named(
    tmp_path, capsys, monkeypatch, out
):
    # The `physode train -o DIR` habit: `-o runs/` wrote a file named runs.
    monkeypatch.chdir(tmp_path)
    assert main([*SIMULATE, "-o", out, "--quiet"]) == 2
    error = capsys.readouterr().err
    assert error == (
        f"physode simulate: error: bad simulate arguments: -o/--out {out} names a folder (it "
        f"ends in '/'); give a file name such as {out}data.h5\n"
    )
    assert not any(tmp_path.iterdir())  # no file, and the folder made for new/ removed again


def test_an_unexpected_exception_is_an_internal_error_with_status_3(dataset, capsys, monkeypatch):
    def broken(*args, **kwargs):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(physode.data, "check", broken)
    assert main(["check", str(dataset)]) == 3  # never 1, which means "drift beyond tolerance"
    error = capsys.readouterr().err
    assert "Traceback" in error
    last = error.strip().splitlines()[-1]
    assert last.startswith("physode check: internal error: ZeroDivisionError: division by zero")


def test_a_file_the_system_refuses_is_a_one_line_error_with_status_2(dataset, capsys, monkeypatch):
    def refused(*args, **kwargs):
        raise PermissionError(13, "Permission denied", "/data/osc.h5")

    monkeypatch.setattr(physode.data, "check", refused)
    assert main(["check", str(dataset)]) == 2
    assert capsys.readouterr().err == "physode check: error: /data/osc.h5: Permission denied\n"


@pytest.mark.parametrize(
    ("argv", "usage"),
    [
        ([*SIMULATE, "--out", "x.h5", "--bogus"], "usage: physode simulate"),
        (["check", "a.h5", "--bogus"], "usage: physode check"),
        (["systems", "extra"], "usage: physode systems"),
    ],
)
def test_an_unknown_option_shows_the_usage_of_its_subcommand(argv, usage, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith(usage) and "unrecognized arguments:" in error


def test_help_states_every_exit_status_and_what_max_steps_counts(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "3 an internal error" in " ".join(capsys.readouterr().out.split())
    with pytest.raises(SystemExit):
        main(["simulate", "--help"])
    assert "step attempts (accepted and rejected)" in " ".join(capsys.readouterr().out.split())


def test_train_refuses_a_physics_model_with_no_learnable_parameter(train_data, capsys):
    argv = ["train", str(train_data), "--model", "physics", "--learnable", ",", "--quiet"]
    assert main(argv) == 2  # not an internal error from an optimiser with no parameters
    error = capsys.readouterr().err
    assert "physics model needs --learnable" in error and error.count("\n") == 1


@pytest.mark.parametrize("out", ["a_file", "a_file/model"])
def test_train_refuses_an_out_folder_it_cannot_create_before_training(
    train_data, tmp_path, capsys, out
):
    (tmp_path / "a_file").write_text("not a folder")
    log = tmp_path / "log.csv"
    assert main(_train(train_data, "--out", str(tmp_path / out), "--log", str(log))) == 2
    error = capsys.readouterr().err
    assert error.startswith("physode train: error: -o/--out ") and error.count("\n") == 1
    # Named as simulate and check name it, not as the system does ("File exists").
    assert error.endswith(f"{tmp_path / 'a_file'} is not a folder\n"), error
    assert not log.exists()  # refused before the first epoch


@pytest.mark.parametrize("option", ["--checkpoint-dir", "--log"])
def test_train_names_a_file_that_stands_where_its_folder_must_go(
    train_data, tmp_path, capsys, option
):
    (tmp_path / "a_file").write_text("not a folder")
    target = tmp_path / "a_file" / ("log.csv" if option == "--log" else "ckpt")
    assert main(_train(train_data, option, str(target))) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"physode train: error: {option} {target}: cannot create the folder ")
    assert error.endswith(f": {tmp_path / 'a_file'} is not a folder\n"), error


def test_train_refuses_a_data_set_with_nothing_held_out_before_training(tmp_path, capsys):
    data = tmp_path / "all_train.h5"
    assert main([*SIMULATE, "--out", str(data), "--split", "1,0,0", "--quiet"]) == 0
    log = tmp_path / "log.csv"
    assert main(_train(data, "--log", str(log))) == 2
    error = capsys.readouterr().err
    assert "no usable trajectories in its 'test' or 'val' split" in error
    assert "--split 0.8,0.1,0.1" in error and error.count("\n") == 1
    assert not log.exists()  # refused before the first epoch


def test_train_interrupted_while_saving_leaves_no_half_written_model(
    train_data, tmp_path, capsys, monkeypatch
):
    # model.pt is serialised in memory, then its bytes written: Ctrl-C comes half-way through
    # writing them to the file.
    write_bytes = Path.write_bytes

    def interrupted(path, data):
        write_bytes(path, bytes(data)[: len(data) // 2])
        raise KeyboardInterrupt

    monkeypatch.setattr(Path, "write_bytes", interrupted)
    out = tmp_path / "run"
    assert main(_train(train_data, "--out", str(out))) == 130
    assert list(out.iterdir()) == []


def test_train_writes_model_and_report_with_the_short_quiet_flag(train_data, tmp_path, capsys):
    out = tmp_path / "run"
    argv = [a for a in _train(train_data, "--out", str(out)) if a != "--quiet"]
    assert main([*argv, "-q"]) == 0
    assert sorted(path.name for path in out.iterdir()) == ["model.pt", "report.json"]
    assert capsys.readouterr().out == ""


def test_train_help_describes_every_option():
    train = build_parser()._subparsers._group_actions[0].choices["train"]
    undocumented = [a.option_strings for a in train._actions if a.option_strings and not a.help]
    assert undocumented == []


def test_train_help_states_the_defaults_of_train_config():
    # The help texts write TrainConfig's defaults out; this keeps them from drifting apart.
    train = build_parser()._subparsers._group_actions[0].choices["train"]
    defaults = dataclasses.asdict(TrainConfig())
    checked = 0
    for action in train._actions:
        stated = re.search(r"default:? ([\w.+-]+)\)?$", action.help or "")
        if action.dest not in defaults or stated is None or stated.group(1) in ("the", "no"):
            continue
        value = defaults[action.dest]
        if value is None:  # described in words ("default: whole")
            continue
        if isinstance(value, bool | str):
            assert stated.group(1) == str(value), action.option_strings
        else:
            assert float(stated.group(1)) == value, action.option_strings
        checked += 1
    assert checked >= 15


def test_an_interrupted_check_plot_leaves_no_partial_image(dataset, tmp_path, monkeypatch):
    def interrupted(fig, fname, **kwargs):
        Path(fname).write_bytes(b"\x89PNG half an image")
        raise KeyboardInterrupt

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", interrupted)
    with pytest.raises(KeyboardInterrupt):
        physode.data.check(dataset).plot(tmp_path / "drift.png")
    assert list(tmp_path.iterdir()) == []


def test_help_states_every_exit_status_that_the_docs_list(capsys):
    documented = re.findall(r"^\* \*\*(\d+)\*\*", (REPO / "docs" / "cli.md").read_text(), re.M)
    assert len(documented) >= 6
    with pytest.raises(SystemExit):
        main(["--help"])
    epilog = " ".join(capsys.readouterr().out.split("exit status:")[1].split())
    for status in documented:
        assert re.search(rf"\b{status} [a-z]", epilog), status


@pytest.mark.parametrize("parts_exist", [False, True])
def test_an_interrupted_simulate_offers_resume_only_when_chunks_were_kept(
    tmp_path, capsys, monkeypatch, parts_exist
):
    out = tmp_path / "osc.h5"

    def interrupted(*args, **kwargs):
        if parts_exist:
            (tmp_path / "osc.h5.parts").mkdir()
        raise KeyboardInterrupt

    monkeypatch.setattr(physode.data, "simulate", interrupted)
    assert main([*SIMULATE, "--out", str(out)]) == 130
    error = capsys.readouterr().err
    assert error.startswith("physode simulate: interrupted") and error.count("\n") == 1
    assert ("--resume" in error) == parts_exist and ("osc.h5.parts" in error) == parts_exist


def test_train_refuses_a_config_file_that_is_not_text(dataset, capsys):
    assert main(["train", "--config", str(dataset), "--quiet"]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"physode train: error: cannot read --config {dataset}")
    assert error.count("\n") == 1


@pytest.mark.parametrize("table", ["model", "train", "report"])
def test_train_refuses_a_config_whose_table_is_not_a_table(tmp_path, capsys, table):
    config = tmp_path / "run.toml"
    config.write_text(f'data = "osc.h5"\n{table} = 5\n')
    assert main(["train", "--config", str(config), "--quiet"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("physode train: error: ") and error.count("\n") == 1
    assert f"{table} = 5" in error and f"[{table}]" in error


def test_train_refuses_an_empty_out_before_training(train_data, tmp_path, capsys):
    log = tmp_path / "log.csv"
    assert main(_train(train_data, "--out", "", "--log", str(log))) == 2
    error = capsys.readouterr().err
    assert error.startswith("physode train: error: -o/--out ''") and error.count("\n") == 1
    assert not log.exists()  # refused before the first epoch


@pytest.mark.parametrize("checkpoints", [False, True])
def test_an_interrupted_train_says_which_checkpoint_resumes_it(
    train_data, tmp_path, capsys, monkeypatch, checkpoints
):
    from physode.train import Trainer

    finish_epoch = Trainer.train_epoch
    calls = []

    def interrupted_in_epoch_3(self):
        calls.append(self.epoch)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return finish_epoch(self)

    monkeypatch.setattr(Trainer, "train_epoch", interrupted_in_epoch_3)
    folder = tmp_path / "checkpoints"
    extra = ["--checkpoint-dir", str(folder)] if checkpoints else []
    argv = _train(train_data, "--epochs", "4", *extra)
    assert main(argv) == 130
    error = capsys.readouterr().err
    assert error.startswith("physode train: interrupted during epoch 3") and error.count("\n") == 1
    if not checkpoints:
        assert "nothing was saved" in error and "--checkpoint-dir" in error
        return
    last = folder / "last.pt"
    assert f"{last} holds the run after epoch 2" in error and f"--resume {last}" in error
    # Interrupted again at once, the resumed run still names the checkpoint it came from.
    calls.clear()
    calls += [None, None]
    assert main([*argv, "--resume", str(last)]) == 130
    error = capsys.readouterr().err
    assert f"during epoch 3; {last} holds the run after epoch 2" in error
    monkeypatch.setattr(Trainer, "train_epoch", finish_epoch)
    out = tmp_path / "run"
    assert main([*argv, "--resume", str(last), "--out", str(out)]) == 0
    assert json.loads((out / "report.json").read_text())["epochs"] == 4


def test_the_command_module_loads_without_torch_so_ctrl_c_while_torch_loads_is_caught():
    # The `physode` script imports physode.cli before main() runs; torch loads inside main(),
    # where an interruption is one line and exit status 130 instead of a traceback.
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    code = "import sys, physode.cli; print(sorted({'torch', 'sympy', 'h5py'} & set(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_an_interruption_while_the_parser_loads_is_one_line_and_status_130(capsys, monkeypatch):
    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(physode.cli, "build_parser", interrupted)
    assert main(["systems"]) == 130
    assert capsys.readouterr().err == "physode: interrupted\n"


@pytest.mark.parametrize("flag, threads", [([], 1), (["--threads", "2"], 2)])
def test_train_runs_on_the_threads_asked_for_and_restores_them(
    train_data, capsys, monkeypatch, flag, threads
):
    from physode.train import Trainer

    fit, seen = Trainer.fit, []

    def recording_fit(self, *args, **kwargs):
        seen.append(torch.get_num_threads())
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "fit", recording_fit)
    before = torch.get_num_threads()
    assert main(_train(train_data, *flag)) == 0
    assert seen == [threads] and torch.get_num_threads() == before


def test_train_refuses_threads_that_are_not_positive(train_data, capsys):
    assert main(_train(train_data, "--threads", "0")) == 2
    assert capsys.readouterr().err == "physode train: error: --threads must be positive, got 0\n"


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    return dict(build_parser()._subparsers._group_actions[0].choices)


def test_physode_without_a_command_shows_the_commands_on_standard_error(capsys):
    # It printed the usage line and "the following arguments are required: COMMAND" alone.
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    for command in _subcommands():
        assert re.search(rf"^ +{command} +\w", captured.err, re.M), command


@pytest.mark.parametrize(
    ("argv", "hint"),
    [
        (["simulat", "pendulum"], "did you mean 'simulate'?"),
        (["chek", "data.h5"], "did you mean 'check'?"),
        (["trian"], "did you mean 'train'?"),
        (["frobnicate"], ""),
    ],
)
def test_an_unknown_command_is_refused_with_the_closest_one_and_the_choices(argv, hint, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(f"physode: error: unknown command {argv[0]!r}")
    assert hint in last and "(choose from systems, simulate, check, train)" in last
    assert ("did you mean" in last) == bool(hint)


def test_help_before_an_unknown_command_still_shows_the_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help", "simulat"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith("usage: physode")


def test_every_subcommands_help_states_its_exit_status(capsys):
    for command in _subcommands():
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "exit status: 0 " in text and "130 interrupted" in text, command
        assert "143 " in text and "SIGTERM" in text, command


def test_every_option_that_takes_a_value_names_it_in_the_help():
    # argparse's fallback names (BATCH_SIZE, OPT_DISC_RTOL, MAX_STEPS) made `physode train -h`
    # a wall of capitals; the value's kind (N, X, FILE, DIR) reads faster.
    fallback = []
    for command, parser in _subcommands().items():
        for action in parser._actions:
            takes_value = action.nargs != 0 and action.option_strings
            if takes_value and action.metavar is None and action.choices is None:
                fallback.append(f"{command} {action.option_strings[0]}")
    assert fallback == []


def test_every_optional_option_that_takes_a_value_states_its_default():
    # `physode train -h` said "default: adam" for some options and nothing for others (--log,
    # --out, --activation, --patience), where `physode simulate -h` says "(default 0)".
    silent = []
    for command, parser in _subcommands().items():
        for action in parser._actions:
            takes_value = action.nargs != 0 and action.option_strings and not action.required
            if takes_value and action.help != argparse.SUPPRESS and "(default" not in action.help:
                silent.append(f"{command} {action.option_strings[0]}")
    assert silent == []


def test_an_option_has_the_same_short_form_in_every_subcommand():
    # `physode simulate -o FILE.h5` worked, `physode train -o DIR` was an unknown argument.
    spellings: dict[str, set[tuple[str, ...]]] = {}
    for parser in _subcommands().values():
        for action in parser._actions:
            longs = [s for s in action.option_strings if s.startswith("--")]
            if longs:
                spellings.setdefault(longs[0], set()).add(tuple(sorted(action.option_strings)))
    assert {name: forms for name, forms in spellings.items() if len(forms) > 1} == {}
    assert ("--out", "-o") in spellings["--out"] and ("--quiet", "-q") in spellings["--quiet"]


def test_train_takes_the_short_out_flag(train_data, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_train(train_data, "-o", str(out))) == 0
    assert sorted(p.name for p in out.iterdir()) == ["model.pt", "report.json"]


def test_check_json_prints_the_report_as_one_object(dataset, tmp_path, capsys):
    path = _with_solver_failures(dataset, tmp_path / "failed.h5", [1])
    plot = tmp_path / "drift.png"
    assert main(["check", str(path), "--json", "--plot", str(plot)]) == 1
    captured = capsys.readouterr()
    record = json.loads(captured.out)
    assert captured.err == "" and plot.exists()
    report = physode.data.check(path)
    assert record["path"] == str(path) and record["plot"] == str(plot)
    assert record["passed"] is False and record["tolerance"] == 1e-6 and record["failing"] == []
    assert record["n_trajectories"] == 3 and record["n_failed"] == 1
    assert record["failed_trajectories"] == [1]
    failure = {"trajectory": 1, "cause": "max_steps used up", "t_reached": 0.75}
    assert record["failures"] == [failure]
    (energy,) = record["invariants"]
    (expected,) = report.invariants
    assert energy == {
        "name": "energy",
        "median": expected.median,
        "worst": expected.worst,
        "worst_trajectories": [[i, v] for i, v in expected.worst_trajectories],
    }
    assert "t" not in record and "curves" not in record  # plotting data, not results


@pytest.mark.parametrize("what", ["missing", "damaged"])
def test_check_json_prints_an_error_as_a_json_object_too(dataset, tmp_path, capsys, what):
    # Standard output was empty: a pipeline's json.loads failed on it, not on the error.
    path = tmp_path / "missing.h5"
    if what == "damaged":
        path = _garbled_copy(dataset, tmp_path / "damaged.h5")
    assert main(["check", str(path), "--json"]) == 2
    captured = capsys.readouterr()
    error = captured.err.removeprefix("physode check: error: ").rstrip("\n")
    assert captured.err.count("\n") == 1 and error != captured.err.rstrip("\n")
    assert json.loads(captured.out) == {"path": str(path), "error": error, "exit_status": 2}


def test_check_without_json_prints_an_error_on_standard_error_alone(tmp_path, capsys):
    assert main(["check", str(tmp_path / "missing.h5")]) == 2
    assert capsys.readouterr().out == ""


def test_check_and_train_of_an_interrupted_simulation_say_how_to_finish_it(
    tmp_path, capsys, monkeypatch
):
    # Both said only "no such file", where the chunks of the interrupted run waited in OUT.parts/.
    import physode.data.simulation as simulation

    out = tmp_path / "osc.h5"
    argv = [*SIMULATE, "--trajectories", "4", "--chunk-size", "2", "--out", str(out), "--quiet"]
    write_chunk, written = simulation.write_chunk, []

    def interrupted_after_the_first_chunk(*args):
        if written:
            raise KeyboardInterrupt
        written.append(write_chunk(*args))

    monkeypatch.setattr(simulation, "write_chunk", interrupted_after_the_first_chunk)
    assert main(argv) == 130
    monkeypatch.undo()
    capsys.readouterr()
    for command in (["check", str(out)], _train(out)):
        assert main(command) == 2
        assert capsys.readouterr().err == (
            f"physode {command[0]}: error: {out}: no such file, but {out}.parts/ holds what an "
            "interrupted simulation into it kept: rerun the same `physode simulate` command "
            "with --resume (resume=True in Python) to finish it\n"
        )
    assert main([*argv, "--resume"]) == 0  # as the error says
    assert main(["check", str(out), "--quiet"]) == 0


def test_check_json_writes_a_drift_that_is_not_finite_as_null(dataset, capsys, monkeypatch):
    # json.dumps writes inf as Infinity, which JSON readers (jq, JSON.parse) refuse.
    from physode.data.checking import CheckReport, InvariantSummary

    energy = InvariantSummary("energy", np.float64(1e-12), np.inf, [(0, np.inf), (2, 1e-12)])
    report = CheckReport(str(dataset), 1e-6, 3, invariants=[energy])
    monkeypatch.setattr(physode.data, "check", lambda *args, **kwargs: report)
    assert main(["check", str(dataset), "--json"]) == 1
    out = capsys.readouterr().out
    assert "Infinity" not in out and "NaN" not in out
    (energy,) = json.loads(out)["invariants"]
    assert energy["worst"] is None and energy["worst_trajectories"] == [[0, None], [2, 1e-12]]
    assert energy["median"] == 1e-12


def test_check_json_prints_the_reports_to_dict_with_the_plot(dataset, capsys, monkeypatch):
    from physode.data.checking import CheckReport, InvariantSummary, SolverFailure

    energy = InvariantSummary("energy", np.float64(1e-12), np.inf, [(0, np.inf), (2, 1e-12)])
    report = CheckReport(
        str(dataset), 1e-6, 3, invariants=[energy], failed_trajectories=[1],
        failures=[SolverFailure(1, "max_steps used up", np.float64(0.75))],
        t=np.linspace(0.0, 1.0, 5), curves={"energy": {0: np.zeros(5)}},
    )  # fmt: skip
    record = report.to_dict()
    assert record == {
        "path": str(dataset), "tolerance": 1e-6, "n_trajectories": 3,
        "failed_trajectories": [1],
        "failures": [{"trajectory": 1, "cause": "max_steps used up", "t_reached": 0.75}],
        "non_finite": [],
        "invariants": [{"name": "energy", "median": 1e-12, "worst": None,
                        "worst_trajectories": [[0, None], [2, 1e-12]]}],
        "partial_drift": [], "passed": False, "failing": ["energy"], "n_failed": 1,
    }  # fmt: skip
    json.dumps(record, allow_nan=False)  # plain values, nothing JSON lacks a spelling for
    monkeypatch.setattr(physode.data, "check", lambda *args, **kwargs: report)
    assert main(["check", str(dataset), "--json"]) == 1
    assert json.loads(capsys.readouterr().out) == {**record, "plot": None}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["simulate", "pendulum", "-n", "0", "--t-end", "1", "--points", "5", "-o", "a.h5"],
         "physode simulate: error: bad simulate arguments: -n/--trajectories 0 must be an "
         "integer >= 1\n"),
        ([*SIMULATE, "-o", "a.h5", "--seed", "-1", "--split", "0.5,0.5,0.5"],
         "--seed -1 must be an integer >= 0; --split 0.5,0.5,0.5 must be three fractions"),
        (["check", "a.h5", "--worst", "0"],
         "physode check: error: --worst 0 must be an integer >= 1\n"),
        (["check", "a.h5", "--tolerance", "-1"],
         "physode check: error: --tolerance -1.0 must be a finite number > 0\n"),
    ],
)  # fmt: skip
def test_an_argument_in_an_error_is_named_as_the_command_line_spells_it(
    tmp_path, capsys, monkeypatch, argv, message
):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    # Python callers keep the keyword spelling.
    with pytest.raises(physode.InvalidArgumentError, match="worst=0 must be"):
        physode.data.check("a.h5", worst=0)


def test_option_spelling_respells_only_the_values_the_command_passed():
    args = build_parser().parse_args([*SIMULATE, "-o", "a.h5", "--resume", "--force"])
    spelled = physode.cli._option_spelling(
        "resume=True; rerun with force=True (--force); seed=0; seed=3; points=5 and points=50; "
        "the_points=5",
        args,
    )
    assert spelled == (
        "--resume; rerun with --force; --seed 0; seed=3; --points 5 and points=50; the_points=5"
    )


def test_an_interrupted_forced_rewrite_continues_with_resume_and_force(
    dataset, tmp_path, capsys, monkeypatch
):
    # `--resume --force` is the interrupted `--force` command rerun with `--resume`, as the
    # interruption line says: it finishes the overwrite; `--resume` alone refuses (the file
    # exists), so refusing the pair would strand the chunks.
    from physode.data._store import ChunkWriter

    out = tmp_path / "osc.h5"
    out.write_bytes(dataset.read_bytes())
    command = [*SIMULATE, "--out", str(out), "--chunk-size", "2", "--seed", "9", "-q", "--force"]

    def interrupted(self, start, values):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(ChunkWriter, "write", interrupted)
        assert main(command) == 130
    assert "rerun the same command with --resume" in capsys.readouterr().err
    assert main([*command[:-1], "--resume"]) == 2
    error = capsys.readouterr().err
    assert f"{out} exists and holds a finished run with other settings (chunk_size: 4096 " in error
    assert "seed: 4 then, 9 now); rerun with its settings to keep it, or pass force=True " in error
    assert main([*command, "--resume"]) == 0
    with physode.data.load(out) as data:
        assert json.loads(data.attrs["simulation"])["seed"] == 9


@pytest.mark.parametrize(("tolerance", "status"), [("1e-6", 0), ("1e-300", 1)])
def test_check_quiet_prints_nothing_and_answers_with_its_exit_status(
    dataset, capsys, tolerance, status
):
    assert main(["check", str(dataset), "-q", "--tolerance", tolerance]) == status
    assert capsys.readouterr() == ("", "")


def test_train_names_a_missing_config_file_in_words(train_data, tmp_path, capsys):
    missing = tmp_path / "run.toml"
    assert main(["train", str(train_data), "--config", str(missing)]) == 2
    error = capsys.readouterr().err
    reason = "No such file or directory"
    assert error == f"physode train: error: cannot read --config {missing}: {reason}\n"


def test_simulate_params_takes_the_names_of_the_parameters_to_draw(tmp_path, capsys):
    def argv(params, name):
        return ["simulate", "pendulum", "-n", "3", "--t-end", "0.5", "--points", "2", "-o",
                str(tmp_path / name), "--params", params, "-q"]  # fmt: skip

    assert main(argv("l", "l.h5")) == 0
    with physode.data.load(tmp_path / "l.h5") as data:
        assert (data.params[:, 1] == 9.81).all() and np.unique(data.params[:, 2]).size == 3
    assert main(argv("L", "bad.h5")) == 2
    assert "['L'] are not parameters of 'pendulum'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_status:
        main(argv("l,,m", "bad.h5"))
    assert exit_status.value.code == 2
    assert "give default, sample or parameter names" in capsys.readouterr().err


def test_an_interrupted_train_whose_checkpoint_cannot_be_written_says_nothing_was_saved(
    train_data, tmp_path, capsys, monkeypatch, last_pt_disk_full
):
    # last.pt is due every 5 epochs, so going back after Ctrl-C in epoch 3 must write it, and the
    # disk is full: epochs 1 and 2 ended, but nothing holds them.
    from physode.train import Trainer

    finish_epoch, calls = Trainer.train_epoch, []

    def interrupted_in_epoch_3(self):
        calls.append(self.epoch)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return finish_epoch(self)

    monkeypatch.setattr(Trainer, "train_epoch", interrupted_in_epoch_3)  # best.pt fits, last.pt not
    folder = tmp_path / "checkpoints"
    argv = _train(train_data, "--epochs", "4", "--checkpoint-dir", str(folder),
                  "--checkpoint-every", "5")  # fmt: skip
    assert main(argv) == 130
    error = capsys.readouterr().err
    assert error == (
        "physode train: interrupted during epoch 3; the run after epoch 2 could not be saved\n"
    )


def _terminate_on_call(function, call: int):
    """``function`` that sends this process SIGTERM, as a batch scheduler does to stop a job,
    on its ``call``-th call instead of running."""
    calls = []

    def terminated(*args, **kwargs):
        calls.append(None)
        if len(calls) == call:
            # Without the command's handler SIGTERM would kill the test run: fail instead.
            assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL, "no SIGTERM handler"
            os.kill(os.getpid(), signal.SIGTERM)
        return function(*args, **kwargs)

    return terminated


@pytest.fixture
def sigterm_default():
    # The command handles SIGTERM only where nobody else does; a test runner that had set its
    # own handler would be killed or stopped by these tests, which say so instead.
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_a_train_stopped_by_sigterm_keeps_its_last_epoch_and_says_how_to_resume(
    train_data, tmp_path, capsys, monkeypatch, sigterm_default
):
    # SLURM's preemption or time limit sends SIGTERM; without a handler the run died at once and
    # lost every epoch since the last checkpoint (here all four: last.pt is due every 10).
    from physode.train import Trainer

    folder, out = tmp_path / "checkpoints", tmp_path / "run"
    argv = _train(train_data, "--epochs", "6", "--checkpoint-dir", str(folder),
                  "--checkpoint-every", "10", "--out", str(out))  # fmt: skip
    monkeypatch.setattr(Trainer, "train_epoch", _terminate_on_call(Trainer.train_epoch, 5))
    assert main(argv) == 143
    last = folder / "last.pt"
    assert capsys.readouterr().err == (
        f"physode train: terminated (SIGTERM) during epoch 5; {last} holds the run after epoch "
        f"4: rerun the same command with --resume {last} to continue it\n"
    )
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # given back to the caller
    monkeypatch.undo()
    assert main([*argv, "--resume", str(last)]) == 0
    assert json.loads((out / "report.json").read_text())["epochs"] == 6


def test_a_simulate_stopped_by_sigterm_keeps_its_chunks_and_resumes_to_the_same_file(
    tmp_path, capsys, monkeypatch, sigterm_default
):
    from physode.data import simulation

    def command(name):
        return [*SIMULATE, "-n", "6", "--chunk-size", "2", "-q", "--out", str(tmp_path / name)]

    assert main(command("whole.h5")) == 0
    with monkeypatch.context() as patch:
        stop = _terminate_on_call(simulation._simulate_chunk, 2)  # once the first is kept
        patch.setattr(simulation, "_simulate_chunk", stop)
        assert main(command("cut.h5")) == 143
    parts = tmp_path / "cut.h5.parts"
    assert capsys.readouterr().err == (
        f"physode simulate: terminated (SIGTERM); the finished chunks are kept in {parts}/: "
        "rerun the same command with --resume\n"
    )
    assert (parts / "chunk-000000.h5").is_file() and not (tmp_path / "cut.h5").exists()
    assert main([*command("cut.h5"), "--resume"]) == 0
    whole, cut = (physode.data.load(tmp_path / name) for name in ("whole.h5", "cut.h5"))
    with whole, cut:
        assert np.array_equal(whole.states, cut.states)


class _SigtermOnDelete:
    """An object whose finaliser sends this process SIGTERM, so that the handler runs inside
    it: where Python runs finalisers (``__del__``, weakref callbacks: torch's and h5py's
    garbage), an exception is printed as "Exception ignored" and dropped."""

    def __del__(self):
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(100):  # bytecode after the signal: its handler runs in here
            pass


def test_a_sigterm_that_lands_in_a_finaliser_still_stops_train_and_keeps_its_last_epoch(
    train_data, tmp_path, capsys, monkeypatch, sigterm_default
):
    # Seen in 2 of 10 `physode simulate` runs stopped by SIGTERM: the handler ran inside a
    # WeakValueDictionary callback, Python dropped its exception, and the command ran to its end
    # (exit 0) with the handler gone; a scheduler's SIGKILL would then have lost the epochs.
    from physode.train import Trainer

    folder = tmp_path / "checkpoints"
    argv = _train(train_data, "--epochs", "6", "--checkpoint-dir", str(folder),
                  "--checkpoint-every", "10")  # fmt: skip
    epoch, hook = Trainer.train_epoch, sys.unraisablehook
    calls = []

    def garbage_then_epoch(self, *args, **kwargs):
        calls.append(None)
        if len(calls) == 5:
            assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL, "no SIGTERM handler"
            _SigtermOnDelete()  # dropped at once: SIGTERM arrives in its __del__
            time.sleep(2)  # raised again meanwhile, so in this epoch (not at all before)
        return epoch(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "train_epoch", garbage_then_epoch)
    assert main(argv) == 143
    last = folder / "last.pt"
    assert capsys.readouterr().err == (
        f"physode train: terminated (SIGTERM) during epoch 5; {last} holds the run after epoch "
        f"4: rerun the same command with --resume {last} to continue it\n"
    )
    assert torch.load(last, weights_only=True)["epoch"] == 4
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL and sys.unraisablehook is hook


def test_other_exceptions_of_finalisers_go_to_the_callers_hook_while_a_command_runs(
    monkeypatch, sigterm_default
):
    seen = []
    monkeypatch.setattr(sys, "unraisablehook", lambda report: seen.append(report.exc_type))

    class Broken:
        def __del__(self):
            raise ValueError("a finaliser's own bug")

    def systems(args):
        Broken()
        return 0

    monkeypatch.setattr(physode.cli, "_cmd_systems", systems)
    assert main(["systems"]) == 0
    assert seen == [ValueError]


def test_the_command_leaves_a_sigterm_handler_of_its_caller_in_place(capsys, monkeypatch):
    from physode.train import Trainer  # noqa: F401  (loaded before the handler is set)

    seen = []

    def handler(signum, frame):
        seen.append(signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        monkeypatch.setattr(physode.cli, "_cmd_systems", _terminate_on_call(lambda args: 0, 1))
        assert main(["systems"]) == 0
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert seen == [signal.SIGTERM]


def test_a_check_report_prints_its_verdict_and_worst_drifts_not_its_curves(dataset):
    report = physode.data.check(dataset)
    worst = report.invariants[0].worst
    assert repr(report) == (
        f"CheckReport({str(dataset)!r}, passed=True, n_trajectories=3, n_failed=0, "
        f"non_finite=0, tolerance=1e-06, invariants={{'energy': {worst:.6g}}}, partial_drift={{}})"
    )
    curves = {"energy": {i: np.ones(100_000) for i in range(3)}}
    big = dataclasses.replace(report, t=np.linspace(0, 1, 100_000), curves=curves)
    assert repr(big) == repr(report)
    half = physode.data.CheckReport.__new__(physode.data.CheckReport)
    assert repr(half) == "CheckReport(?)"


def test_a_path_the_output_cannot_encode_is_printed_escaped_not_as_an_internal_error(
    dataset, tmp_path, capsys, monkeypatch
):
    # On an ASCII output (PYTHONIOENCODING=ascii, a legacy locale, a Windows code page), the
    # first line of the table, which names the file, raised UnicodeEncodeError: exit status 3,
    # "internal error ... a bug in physode", after the check had been done.
    path = tmp_path / "d\u00e4ta.h5"
    path.write_bytes(dataset.read_bytes())
    out = io.TextIOWrapper(io.BytesIO(), encoding="ascii", errors="strict", write_through=True)
    monkeypatch.setattr(sys, "stdout", out)
    assert main(["check", str(path)]) == 0
    assert capsys.readouterr().err == ""
    printed = out.buffer.getvalue().decode("ascii")
    assert printed.startswith(f"{tmp_path}/d\\xe4ta.h5: 3 trajectories, 0 solver failures\n")
    assert out.errors == "strict"  # the caller's stream is given back as it was


@pytest.mark.skipif(
    os.fsdecode(b"\xe4") != "\udce4", reason="file names are not bytes held as surrogates here"
)
def test_simulate_writes_a_file_whose_name_is_not_utf8_and_stores_its_command_line(
    tmp_path, capsys
):
    # A file name with a byte that is not UTF-8 (a Latin-1 folder name): the run simulated
    # every trajectory and then failed to store its command line, exit status 3.
    out = tmp_path / os.fsdecode(b"r\xe4.h5")
    assert main([*SIMULATE, "--out", str(out), "--quiet"]) == 0
    assert capsys.readouterr().err == ""
    with physode.data.load(out) as data:
        assert data.states.shape == (3, 5, 2)
    with h5py.File(out, "r") as f:
        command_line = f.attrs["command_line"].decode("utf-8")
    assert command_line.endswith(f"--out '{tmp_path}/r\\xe4.h5' --quiet")


@pytest.mark.parametrize("force", [[], ["--force"]])
def test_simulate_refuses_to_write_over_the_specification_file_it_reads(tmp_path, capsys, force):
    # `physode simulate osc.toml -o osc.toml --force` replaced the user's specification with
    # the data set, and without --force the refusal advised --force.
    spec = tmp_path / "osc.toml"
    text = physode.systems.path("harmonic_oscillator").read_text(encoding="utf-8")
    spec.write_text(text, encoding="utf-8")
    argv = ["simulate", str(spec), *SIMULATE[2:], "--out", str(spec), *force]
    assert main(argv) == 2
    assert capsys.readouterr().err == (
        f"physode simulate: error: bad simulate arguments: -o/--out {spec} is the specification "
        "file the system is read from; writing the data set there would replace it: give the "
        "data set a name of its own, such as osc.h5\n"
    )
    assert spec.read_text(encoding="utf-8") == text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["osc.toml"]


def _command_in(error: str, start: str, end: str) -> list[str]:
    """The words of the command that ``error`` gives between ``start`` and ``end``, as a shell
    splits them."""
    return shlex.split(error.split(start, 1)[1].split(end, 1)[0])


def test_the_resume_command_an_interrupted_train_gives_names_a_folder_with_a_space(
    train_data, tmp_path, capsys, monkeypatch
):
    # `--resume my runs/last.pt`, pasted, resumed from `my` and took `runs/last.pt` for DATA.h5.
    from physode.train import Trainer

    finish_epoch = Trainer.train_epoch

    def interrupted_in_epoch_2(self):
        if self.epoch == 1:
            raise KeyboardInterrupt
        return finish_epoch(self)

    monkeypatch.setattr(Trainer, "train_epoch", interrupted_in_epoch_2)
    last = tmp_path / "my runs" / "last.pt"
    assert main(_train(train_data, "--epochs", "3", "--checkpoint-dir", str(last.parent))) == 130
    error = capsys.readouterr().err
    assert _command_in(error, " with ", " to continue it") == ["--resume", str(last)]


def test_the_commands_a_failed_train_gives_name_a_folder_with_a_space(
    train_data, tmp_path, capsys, monkeypatch
):
    from physode.train import Trainer

    solve_batch = Trainer._solve_batch

    def failing_in_epoch_2(self, data, batch):
        if data is self.train_data and self.epoch == 1:
            status = physode.Status.STEP_SIZE_UNDERFLOW
            raise physode.SolverError("underflow at t=0.3", status=status, t=0.3, step_size=1e-14)
        return solve_batch(self, data, batch)

    monkeypatch.setattr(Trainer, "_solve_batch", failing_in_epoch_2)
    last = tmp_path / "my runs" / "last.pt"
    assert main(_train(train_data, "--epochs", "3", "--checkpoint-dir", str(last.parent))) == 2
    error = capsys.readouterr().err
    resume = _command_in(error, "rerun the same command with ", " to leave such batches out")
    assert resume == ["--resume", str(last), "--on-failed-batch", "skip"]
    warm_start = _command_in(error, "`physode train ... ", "`")
    assert warm_start == ["--init-from", str(last), "--lr", "0.001"]


@pytest.mark.parametrize("command", ["simulate", "train"])
def test_simulate_and_train_refuse_more_threads_than_the_machine_can_start(
    train_data, tmp_path, capsys, command
):
    # 16384 threads ended the process with libgomp's "Thread creation failed", 32768 with a
    # segmentation fault, after the data were read or the simulation set up.
    from physode._threads import most_threads

    out = tmp_path / "x.h5"
    argv = [*SIMULATE, "--out", str(out)] if command == "simulate" else _train(
        train_data, "--out", str(tmp_path / "run"))  # fmt: skip
    assert main([*argv, "--threads", "100000"]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"physode {command}: error: ") and error.count("\n") == 1
    assert f"--threads 100000 is more than {most_threads()}" in error
    assert f"choose 1 to {most_threads()}" in error
    assert not out.exists() and not (tmp_path / "run").exists()
