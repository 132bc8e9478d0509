"""Short (``--quick``) runs of every experiment script: they finish, write the results the
issue names, and their numbers are consistent."""

from __future__ import annotations

import argparse
import importlib
import json
import math
import multiprocessing
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def script(name: str):
    """The module of ``scripts/<name>.py``."""
    sys.path.insert(0, str(SCRIPTS))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(SCRIPTS))


def run(name: str, out: Path, *extra: str, seed: int = 0) -> dict:
    """Run ``scripts/<name>.py --quick --out OUT --seed SEED`` in this process; return its
    results.json, once every ``Trainer`` the script built has shown it got that seed."""
    module = script(name)
    trainer, seeds = getattr(module, "Trainer", None), []
    if trainer is not None:

        class Recording(trainer):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                seeds.append(self.config.seed)

        module.Trainer = Recording
    try:
        argv = ["--quick", "--out", str(out), "--threads", "1", "--seed", str(seed), *extra]
        assert module.main(argv) == 0
    finally:
        if trainer is not None:
            module.Trainer = trainer
    # --seed seeds every draw of the run: the Trainers' window order too, which stayed at the
    # Trainer's default seed 0 whatever --seed said.
    assert seeds == [seed] * len(seeds)
    assert seeds or trainer is None  # a script that imports the Trainer trains
    return json.loads((out / "results.json").read_text())


def finite(x) -> bool:
    return isinstance(x, float) and math.isfinite(x)


def test_three_body_masses_runs_every_mode_and_aca_follows_disc_opt_exactly(tmp_path):
    results = run("three_body_masses", tmp_path, "--jobs", "1", seed=1)
    assert results["masses_true"] == [1.1, 1.1, 0.9]
    runs = results["runs"]
    assert set(runs) == {"aca", "disc-opt", "opt-disc", "hybrid", "neural"}
    for mode in ("aca", "disc-opt", "opt-disc"):
        assert len(runs[mode]["masses"]) == 3
        assert finite(runs[mode]["max_rel_mass_error"]) and finite(runs[mode]["test_mse"])
        assert runs[mode]["train_seconds"] > 0
    # Equal gradients give the same optimisation path.
    for a, b in zip(runs["aca"]["masses"], runs["disc-opt"]["masses"], strict=True):
        assert a == pytest.approx(b, rel=1e-9)
    assert finite(runs["hybrid"]["test_mse"]) and finite(runs["neural"]["test_mse"])
    assert (tmp_path / "trajectories.png").exists() and (tmp_path / "masses.png").exists()


def test_spiral_reports_each_mode_and_a_second_order_taylor_test_for_exact_gradients(tmp_path):
    results = run("spiral_disc_vs_opt", tmp_path, seed=1)
    for mode in ("disc-opt", "opt-disc", "aca"):
        run_ = results["runs"][mode]
        assert finite(run_["train_seconds"]) and finite(run_["final_loss"])
        assert finite(run_["extrapolation_mse"])
    for mode in ("disc-opt", "aca"):
        assert results["taylor"][mode]["E1_order"] > 1.8
    for name in ("training.png", "extrapolation.png", "taylor.png"):
        assert (tmp_path / name).exists()


def test_lynx_hare_fits_and_forecasts_with_three_models(tmp_path):
    results = run("lynx_hare", tmp_path, seed=1)
    assert set(results["runs"]) == {"physics", "hybrid", "neural"}
    for run_ in results["runs"].values():
        assert finite(run_["fit_mse"]) and finite(run_["forecast_mse"])
    assert set(results["runs"]["physics"]["rates"]) == {"alpha", "beta", "gamma", "delta"}
    assert (tmp_path / "forecast.png").exists()


def test_damped_pendulum_reports_frequency_residual_and_errors(tmp_path):
    results = run("damped_pendulum", tmp_path, seed=1)
    runs = results["runs"]
    assert set(runs) == {"physics", "hybrid", "hybrid_no_aphynity", "neural"}
    assert results["omega0_true"] == pytest.approx(2 * math.pi / 6)
    assert finite(runs["hybrid"]["omega0"]) and finite(runs["hybrid"]["residual_norm"])
    assert runs["hybrid"]["aphynity_lambda"] > 1.0
    assert all(finite(r["test_mse"]) for r in runs.values())


def test_gradient_accuracy_shows_aca_equal_to_disc_opt_and_errors_falling(tmp_path):
    results = run("gradient_accuracy", tmp_path)
    spiral, three_body = results["problems"]["spiral"], results["problems"]["three_body"]
    assert max(spiral["aca_vs_disc_opt"] + three_body["aca_vs_disc_opt"]) < 1e-10
    errors = spiral["errors"]
    assert set(errors) == {"disc-opt", "aca", "opt-disc", "torchdiffeq-adjoint"}
    assert errors["disc-opt"][-1] < errors["disc-opt"][0]
    assert all(finite(e[0]) for e in three_body["errors"].values())
    assert (tmp_path / "gradient_accuracy.png").exists()


def test_demo_simulates_checks_trains_and_reports_conservation(tmp_path):
    results = run("demo", tmp_path, seed=1)
    assert results["data"]["check_passed"]
    assert len(results["masses"]) == 3 and finite(results["max_rel_mass_error"])
    rollout = results["rollout"]
    assert rollout["conservation_truth"]["energy"]["ok"]
    assert finite(rollout["mse_within"]) and finite(rollout["mse_beyond"])
    drift = {row["invariant"]: row for row in results["rollout_drift"]}
    assert drift["energy"]["truth"] < 1e-6  # the truth conserves; the learned masses do not quite
    assert drift["energy"]["physics_only"] > drift["energy"]["truth"]
    for name in ("three_body.h5", "log.csv", "training.png", "rollout.png", "data_drift.png"):
        assert (tmp_path / name).exists()
    assert (tmp_path / "checkpoints" / "last.pt").exists()


@pytest.mark.parametrize(
    ("name", "argv", "named"),
    [
        ("damped_pendulum", ["--threads", "0"], "'0'"),
        # Thousands of threads crashed torch's thread pool (a segmentation fault at 32768).
        ("damped_pendulum", ["--threads", "100000"], "'100000' is more than"),
        ("fuzz_store", ["--threads", "100000"], "choose 1 to"),
        ("lynx_hare", ["--seed", "-1"], "'-1'"),
        ("spiral_disc_vs_opt", ["--seed", str(2**64)], str(2**64)),
        ("gradient_accuracy", ["--out", "{file}/sub"], "afile"),
        ("damped_pendulum", ["--out", "{file}"], "afile"),
        # An empty --out (an unset shell variable) wrote into the current folder.
        ("damped_pendulum", ["--out", ""], "'' names no folder"),
        ("bench_solvers", ["--out", " "], "' ' names no folder"),
        ("three_body_masses", ["--jobs", "0"], "'0'"),
        ("three_body_masses", ["--opt-disc-seconds", "-1"], "'-1'"),
        ("three_body_masses", ["--opt-disc-seconds", "nan"], "'nan'"),
        ("bench_codegen", ["--batch", "0"], "'0'"),
        ("bench_codegen", ["--repeats", "0"], "'0'"),
        ("bench_codegen", ["--threads", "-2"], "'-2'"),
        ("bench_codegen", ["--out", "{file}/sub"], "afile"),
        ("bench_solvers", ["--out", "{file}/sub"], "afile"),
        ("bench_solvers", ["--threads", "0"], "'0'"),
        ("bench_solvers", ["--repeats", "-1"], "'-1'"),
        # Refused before the benchmark runs, not after it, when the file cannot be written.
        ("bench_solvers", ["--out", "{file}/results.json"], "afile"),
        ("bench_simulate", ["--sizes", "0"], "'0'"),
        ("bench_simulate", ["--repeats", "0"], "'0'"),
        ("bench_simulate", ["--json", "{file}/results.json"], "afile"),
        ("fuzz_store", ["--flips", "0"], "'0'"),
        ("fuzz_store", ["--timeout", "0"], "'0'"),
        # A timeout of 0 counted every mutant as caught; no mutant chosen passed as "0 of 0".
        ("mutation_check", ["--timeout", "0"], "'0'"),
        ("mutation_check", ["--only", "no_such_file"], "no_such_file"),
    ],
)
def test_bad_arguments_are_refused_in_one_line_naming_the_value(
    tmp_path, capsys, name, argv, named
):
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    out = tmp_path / "out"
    argv = [a.replace("{file}", str(afile)) for a in argv]
    takes_out_folder = name not in ("bench_codegen", "bench_solvers", "bench_simulate",
                                    "fuzz_store", "mutation_check")  # fmt: skip
    prefix = ["--quick", "--out", str(out)] if takes_out_folder else []
    with pytest.raises(SystemExit) as refused:
        script(name).main([*prefix, *argv])
    assert refused.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1 and named in errors[0] and argv[-2] in errors[0]
    assert not out.exists() and afile.read_text() == "not a folder"


def test_a_run_that_fails_while_plotting_leaves_no_results_json(tmp_path, monkeypatch):
    module = script("three_body_masses")

    def failing_plot(*args):
        raise RuntimeError("the plot failed")

    monkeypatch.setattr(module, "plot", failing_plot)
    with pytest.raises(RuntimeError, match="the plot failed"):
        module.main(["--quick", "--out", str(tmp_path), "--threads", "1", "--jobs", "1"])
    assert not (tmp_path / "results.json").exists()


class _FitStarted(Exception):
    pass


def test_the_three_body_fits_run_with_the_threads_given(tmp_path, monkeypatch):
    # Each fit set one thread whatever --threads said: --threads 2 was silently ignored.
    import torch

    module = script("three_body_masses")
    seen = []

    class Recording(module.Trainer):
        def fit(self):
            seen.append(torch.get_num_threads())
            raise _FitStarted

    monkeypatch.setattr(module, "Trainer", Recording)
    before = torch.get_num_threads()
    try:
        with pytest.raises(_FitStarted):
            module.main(["--quick", "--out", str(tmp_path), "--threads", "2", "--jobs", "1"])
    finally:
        torch.set_num_threads(before)
    assert seen == [2]


def test_the_three_body_fits_start_no_more_processes_than_fits(tmp_path, monkeypatch):
    # --jobs 9 started nine worker processes for the five fits.
    module = script("three_body_masses")
    asked = []

    def in_processes(function, calls, jobs):
        asked.append((len(calls), jobs))
        raise _FitStarted

    monkeypatch.setattr(module._common, "in_processes", in_processes)
    with pytest.raises(_FitStarted):
        module.main(["--quick", "--out", str(tmp_path), "--jobs", "9"])
    assert asked == [(5, 5)]


def test_an_earlier_runs_results_json_goes_when_a_new_run_starts(tmp_path):
    # Else an interrupted or failed run would leave it beside logs and plots it does not describe.
    (tmp_path / "results.json").write_text("{}")
    (tmp_path / "log.csv").write_text("kept")
    args = argparse.Namespace(out=str(tmp_path), threads=1, seed=0)
    assert script("_common").setup(args) == tmp_path
    assert not (tmp_path / "results.json").exists() and (tmp_path / "log.csv").exists()


def _slow_fit(name: str, settings: dict) -> dict:
    """Stands in for three_body_masses.fit: says it started, then takes a while: long enough
    that the interrupt of the test below, sent once two fits have started, comes before the
    fits could all end on a busy machine (it ends them at once)."""
    (Path(settings["out"]) / f"started_{name}").touch()
    time.sleep(20)
    return {}


def test_ctrl_c_stops_the_three_body_fits_at_once(tmp_path, monkeypatch):
    # Ctrl-C used to wait for every fit, those not yet started included, for minutes.
    module = script("three_body_masses")
    monkeypatch.setattr(module, "fit", _slow_fit)
    main_thread = threading.main_thread().ident
    stopped = threading.Event()

    def interrupt(signum, frame):
        if not stopped.is_set():
            raise KeyboardInterrupt

    def interrupt_while_both_workers_fit():
        while len(list(tmp_path.glob("started_*"))) < 2:
            time.sleep(0.01)
        # Sent again until it stops main(): Python runs a signal's handler in whatever code the
        # main thread runs, and a KeyboardInterrupt raised inside a finaliser that the garbage
        # collector happens to run there is printed and dropped (seen once on a loaded machine).
        # A user presses Ctrl-C again; a signal that comes after the first was caught is ignored.
        while not stopped.is_set():
            signal.pthread_kill(main_thread, signal.SIGINT)
            stopped.wait(0.5)

    previous = signal.signal(signal.SIGINT, interrupt)
    interrupter = threading.Thread(target=interrupt_while_both_workers_fit, daemon=True)
    try:
        interrupter.start()
        with pytest.raises(KeyboardInterrupt):
            module.main(["--quick", "--out", str(tmp_path), "--jobs", "2"])
    finally:
        stopped.set()
        interrupter.join()
        signal.signal(signal.SIGINT, previous)
    assert sorted(p.name for p in tmp_path.glob("started_*")) == ["started_aca", "started_opt-disc"]
    assert multiprocessing.active_children() == []
    assert not (tmp_path / "results.json").exists()


def test_ctrl_c_is_one_line_and_status_130(capsys):
    def interrupted():
        raise KeyboardInterrupt

    assert script("_common").interruptible(interrupted) == 130
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "interrupted" in err and "Traceback" not in err


def test_ctrl_c_during_training_says_where_the_trainer_stopped_and_how_to_resume(tmp_path, capsys):
    # The Trainer's note (the epoch, the checkpoint that holds the run) was dropped: a script
    # said only that it was interrupted.
    import torch

    import physode
    from physode.models import NeuralODE
    from physode.train import Trainer

    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    ys = physode.odeint(lambda s, y: -y, torch.ones(3, 2, dtype=torch.float64), t)
    torch.manual_seed(0)
    trainer = Trainer(NeuralODE(2, width=4, depth=1), (t, ys.transpose(0, 1)), epochs=3,
                      window=4, batch_size=2, batches_per_epoch=1, method="rk4", step_size=0.1,
                      checkpoint_dir=str(tmp_path / "ck"))  # fmt: skip
    train_epoch = trainer.train_epoch

    def interrupted_in_epoch_2():
        if trainer.epoch == 1:
            raise KeyboardInterrupt
        return train_epoch()

    trainer.train_epoch = interrupted_in_epoch_2
    assert script("_common").interruptible(trainer.fit) == 130
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and "Traceback" not in lines[0]
    assert lines[0].endswith(": interrupted; a run writes its results only when it finishes")
    last = tmp_path / "ck" / "last.pt"
    assert lines[1] == (
        "physode: training was interrupted during epoch 2; the trainer holds the run after "
        "epoch 1, as it was then, and trainer.fit() continues it, as does "
        f"trainer.load_checkpoint({str(last)!r}) on a new trainer"
    )


# Ctrl-C (or SIGTERM) as soon as the script imports torch, numpy or physode, for the first time.
_STOPPED_WHILE_IMPORTING = """
import builtins, os, runpy, signal, sys
real_import, stop = builtins.__import__, signal.Signals[sys.argv[2]]

def import_then_stop(name, *args, **kwargs):
    if name.partition(".")[0] in ("torch", "numpy", "physode"):
        builtins.__import__ = real_import
        os.kill(os.getpid(), stop)
    return real_import(name, *args, **kwargs)

builtins.__import__ = import_then_stop
sys.argv = sys.argv[1:2]
runpy.run_path(sys.argv[0], run_name="__main__")
"""

# mutation_check.py imports nothing slow before main() (its tests run in other processes).
_SLOW_TO_IMPORT = sorted(p.stem for p in SCRIPTS.glob("[a-z]*.py") if p.stem != "mutation_check")


def _stopped_while_importing(name: str, signame: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", _STOPPED_WHILE_IMPORTING, str(SCRIPTS / f"{name}.py"), signame],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.mark.parametrize("name", _SLOW_TO_IMPORT)
def test_ctrl_c_while_a_script_still_imports_is_one_line_and_status_130(name):
    # In its first seconds, importing torch, a script stopped by Ctrl-C printed the import's
    # traceback and died by the signal (status -2), not as it stops later.
    done = _stopped_while_importing(name, "SIGINT")
    assert done.returncode == 130, (done.returncode, done.stderr)
    assert done.stderr == (
        f"{name}.py: interrupted; a run writes its results only when it finishes\n"
    )


def test_sigterm_while_a_script_still_imports_is_one_line_and_status_143():
    done = _stopped_while_importing("demo", "SIGTERM")
    assert done.returncode == 143, (done.returncode, done.stderr)
    assert done.stderr == (
        "demo.py: terminated (SIGTERM); a run writes its results only when it finishes\n"
    )


def test_a_pool_has_no_more_workers_than_calls(monkeypatch):
    # three_body_masses.py --jobs 16 started 16 processes for its 5 fits.
    sizes = []
    real_pool = multiprocessing.Pool

    def recorded_pool(processes, *args, **kwargs):
        sizes.append(processes)
        return real_pool(processes, *args, **kwargs)

    monkeypatch.setattr(multiprocessing, "Pool", recorded_pool)
    assert script("_common").in_processes(abs, [(-1,), (2,)], 16) == [1, 2]
    assert sizes == [2]


# A script stopped by a batch scheduler: SIGTERM comes while its worker processes run.
_JOB = """
import os, signal, sys, threading, time
sys.path.insert(0, sys.argv[1])
import _common

def main():
    threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGTERM)).start()
    _common.in_processes(time.sleep, [(60,), (60,)], 2)
    return 0

raise SystemExit(_common.interruptible(main))
"""


def test_sigterm_is_one_line_and_status_143_as_for_the_physode_command(tmp_path):
    # The scripts died at once, silently (killed by the signal), where `physode` commands say
    # "terminated (SIGTERM)" and exit 143: a cluster user saw no reason why a run stopped.
    job = tmp_path / "job.py"
    job.write_text(_JOB)
    done = subprocess.run([sys.executable, str(job), str(SCRIPTS)], capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 143, (done.returncode, done.stderr)
    # One line: the workers end with the pool, without tracebacks of their own.
    assert done.stderr == (
        "job.py: terminated (SIGTERM); a run writes its results only when it finishes\n"
    )


def test_benchmark_json_files_are_valid_json_with_null_for_what_is_not_finite(tmp_path):
    path = script("_common").write_json(tmp_path / "b.json", {"ms": [1.5, float("nan")]})
    assert "NaN" not in path.read_text()
    assert json.loads(path.read_text()) == {"ms": [1.5, None]}


def test_scripts_close_their_figures(tmp_path):
    import matplotlib.pyplot as plt

    plt.close("all")
    run("three_body_masses", tmp_path, "--jobs", "1", seed=1)
    assert plt.get_fignums() == []
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries


def test_gradient_accuracy_without_torchdiffeq_says_so_before_computing(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.setitem(sys.modules, "torchdiffeq", None)  # import torchdiffeq now fails
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as refused:
        script("gradient_accuracy").main(["--quick", "--out", str(out)])
    assert refused.value.code == 1
    err = capsys.readouterr().err
    assert "error: needs torchdiffeq" in err and "Traceback" not in err
    assert not out.exists()


def test_bench_codegen_prints_measured_times_and_the_ratio(capsys):
    assert script("bench_codegen").main(["--batch", "64", "--repeats", "1"]) == 0
    text = capsys.readouterr().out
    assert "batch 64" in text and "best of 1 rounds" in text
    rows = {line[:30].strip(): line[30:].split() for line in text.splitlines()[2:]}
    assert set(rows) == {"generated", "hand-written, per component", "hand-written, pairwise",
                         "ratio generated / best hand"}  # fmt: skip
    assert all(finite(float(v)) and float(v) > 0 for values in rows.values() for v in values)


def test_bench_codegen_hand_written_rhs_run_on_the_states_device():
    # hand_pairwise built one of its two identity matrices on the host: on a GPU it failed.
    import torch
    from _fake_device import FAKE, FakeDevice

    module = script("bench_codegen")
    y = torch.rand(5, 12, dtype=torch.float64) + torch.arange(12, dtype=torch.float64)
    p = torch.tensor([1.1, 1.0, 0.9, 1.0], dtype=torch.float64)  # as the benchmark passes them
    t = torch.tensor(0.0, dtype=torch.float64)
    for rhs in (module.hand_pairwise, module.hand_components):
        on_host = rhs(t, y, p)
        with FakeDevice():
            on_device = rhs(t.to(FAKE), y.to(FAKE), p.to(FAKE))
            assert on_device.device == FAKE
            torch.testing.assert_close(on_device.cpu(), on_host, rtol=1e-14, atol=0)


def test_bench_trainer_trains_alike_by_the_trainer_and_by_the_bare_loop(tmp_path, capsys):
    # Same batches, solves and steps: the Trainer's overhead is measured against the same work.
    out = tmp_path / "trainer"
    assert script("bench_trainer").main(["--quick", "--epochs", "1", "--out", str(out)]) == 0
    assert "Trainer.fit against a bare loop" in capsys.readouterr().out
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert {row["gradient"] for row in rows} == {"aca", "disc-opt"} and len(rows) == 8
    for row in rows:
        assert finite(row["ratio"]) and row["ratio"] > 0
        assert row["trainer_final_loss"] == pytest.approx(row["bare_final_loss"], rel=1e-9)
        assert row["max_weight_difference"] < 1e-12


def test_an_output_folder_that_cannot_be_made_is_refused_in_one_line(tmp_path, monkeypatch, capsys):
    def read_only(self, *args, **kwargs):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(Path, "mkdir", read_only)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as refused:
        script("lynx_hare").main(["--quick", "--out", str(out)])
    assert refused.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "error: argument --out" in err and str(out) in err and "Read-only" in err


ALL = ("damped_pendulum", "lynx_hare", "spiral_disc_vs_opt", "three_body_masses",
       "gradient_accuracy", "bench_codegen", "bench_trainer")  # fmt: skip


@pytest.mark.parametrize("name", ALL)
def test_help_describes_the_script_with_its_whole_first_paragraph(name, capsys):
    module = script(name)
    with pytest.raises(SystemExit) as done:
        module.main(["--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    first_paragraph = " ".join(module.__doc__.strip().split("\n\n")[0].split())
    assert first_paragraph in text


def test_fuzz_store_refuses_or_reads_unchanged_every_damaged_copy():
    # A smoke run of the bit-flip check: --quick is 25 flips (a run is 1000 by default;
    # docs/data.md reports one of --flips 3000).
    done = subprocess.run([sys.executable, str(SCRIPTS / "fuzz_store.py"), "--quick"],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    counts = dict(line.split()[:2] for line in done.stdout.splitlines()[2:8])
    assert int(counts["refused"]) + int(counts["unchanged"]) == 25


def test_mutation_check_mutants_match_the_source_and_a_few_are_caught(capsys):
    # Every mutant's original text is still in the source (none is stale), and a quick sample
    # runs end to end; the whole run is minutes long (see the script's docstring). The script
    # runs in this process (each mutant's tests still run in a pytest process of their own).
    module = script("mutation_check")
    capsys.readouterr()
    listed = module.main(["--list"])
    out = capsys.readouterr().out
    assert listed == 0, out
    assert out.rstrip().endswith(", 0 stale")
    done = module.main(["--quick"])
    out = capsys.readouterr().out
    assert done == 0, out
    assert "2 of 2 mutants caught" in out


def test_a_gradient_solve_that_fails_in_the_solver_benchmark_is_a_failed_row(capsys, monkeypatch):
    # Van der Pol's adjoint re-solve can stop (step-size underflow at 1e-3): the row says so and
    # its target fails, instead of the script stopping or comparing with a missing time.
    bench = script("bench_solvers")
    rows = [
        {"problem": "vdp", "description": "Van der Pol", "config": config, "tol": 1e-3,
         "seconds": seconds, "nfe_fwd": 10, "nfe_bwd": 5, "peak_bytes": None,
         "error_vs_reference": 1e-3, "error_vs_disc_opt": 0.0, "evaluations_seconds": 0.5}
        for config, seconds in [("physode disc-opt", 1.0), ("physode aca", 1.2)]
    ]  # fmt: skip
    rows += [
        {"problem": "vdp", "description": "Van der Pol", "config": config, "tol": 1e-3,
         "seconds": None, "failed": "step size underflow at t=3.18"}
        for config in ("physode opt-disc", "torchdiffeq odeint_adjoint")
    ]  # fmt: skip
    bench._judge_gradients(rows)
    aca, opt_disc, adjoint = rows[1], rows[2], rows[3]
    assert aca["pass"] is True and "odeint_adjoint" not in aca["target"]
    assert opt_disc["pass"] is False and adjoint["pass"] is None
    monkeypatch.setattr(bench, "GRAD_PROBLEMS", ("vdp",))
    bench.print_gradients(rows)
    printed = capsys.readouterr().out
    assert "physode opt-disc" in printed
    assert "failed: step size underflow at t=3.18  FAIL" in printed


# ------------------------------------------------------------------ one vocabulary


class _Parsed(Exception):
    """Raised in place of parsing: the parser a script built is what a test wanted."""


def parser_of(name: str, monkeypatch) -> argparse.ArgumentParser:
    """The argument parser that ``scripts/<name>.py`` builds, caught before it parses."""
    built = []

    def capture(self, *args, **kwargs):
        built.append(self)
        raise _Parsed

    with monkeypatch.context() as patch:
        patch.setattr(argparse.ArgumentParser, "parse_args", capture)
        with pytest.raises(_Parsed):
            script(name).main([])
    return built[0]


EVERY_SCRIPT = (*ALL, "demo", "bench_simulate", "bench_solvers", "fuzz_store", "mutation_check")
# The scripts that write results (--out), and those that draw nothing random (no --seed) or
# run no torch of their own (no --threads).
WRITES = (*ALL, "demo", "bench_simulate", "bench_solvers")
NO_SEED, NO_THREADS = ("bench_solvers", "mutation_check"), ("mutation_check",)


def test_every_script_spells_its_shared_options_alike(monkeypatch):
    # bench_solvers wrote JSON to --out FILE, bench_simulate to --json FILE, the others results
    # to --out DIR; bench_codegen, bench_simulate, fuzz_store and mutation_check had no --quick.
    spellings: dict[str, set] = {}
    for name in EVERY_SCRIPT:
        actions = parser_of(name, monkeypatch)._actions
        # Hidden options: deprecated aliases (--json FILE) and the benchmarks' child processes.
        options = {a.dest: a for a in actions if a.option_strings and a.help != argparse.SUPPRESS}
        expected = {"quick"} | ({"out"} if name in WRITES else set())
        expected |= set() if name in NO_SEED else {"seed"}
        expected |= set() if name in NO_THREADS else {"threads"}
        assert expected <= set(options), name
        for dest in ("out", "quick", "seed", "threads"):
            if dest in options:
                action = options[dest]
                spellings.setdefault(dest, set()).add((tuple(action.option_strings),
                                                       action.metavar))  # fmt: skip
    assert spellings == {
        "out": {(("--out", "-o"), "DIR")},
        "quick": {(("--quick",), None)},
        "seed": {(("--seed",), "S")},
        "threads": {(("--threads",), "K")},
    }


@pytest.mark.parametrize("name", EVERY_SCRIPT)
def test_every_option_of_a_script_that_takes_a_value_states_its_default(name, monkeypatch):
    missing = [
        action.option_strings[0]
        for action in parser_of(name, monkeypatch)._actions
        if action.option_strings and action.nargs != 0 and action.help != argparse.SUPPRESS
        and "default" not in (action.help or "")
    ]
    assert missing == []


def test_bench_codegen_quick_writes_its_times_to_out(tmp_path, capsys):
    out = tmp_path / "new" / "codegen"
    assert script("bench_codegen").main(["--quick", "--out", str(out)]) == 0
    assert "batch 64" in capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    assert results["batch"] == 64 and results["repeats"] == 1
    times = [*results["forward_us"].values(), *results["forward_backward_us"].values()]
    assert len(times) == 6 and all(finite(t) and t > 0 for t in times)
    assert finite(results["ratio"]["forward"]) and finite(results["ratio"]["forward_backward"])


@pytest.mark.parametrize(
    ("name", "argv", "spelling"),
    [
        ("bench_simulate", ["--json", "{tmp}/old/simulate.json"], "--json FILE"),
        ("bench_solvers", ["--out", "{tmp}/old/solvers.json"], "--out FILE.json"),
    ],
)
def test_the_old_spellings_of_a_benchmarks_results_file_still_write_it_with_a_warning(
    tmp_path, monkeypatch, capsys, name, argv, spelling
):
    common = script("_common")
    argv = [a.format(tmp=tmp_path) for a in argv]
    args = parser_of(name, monkeypatch).parse_args(argv)
    assert common.results_path(args) == Path(argv[-1])
    (tmp_path / "old").mkdir()
    Path(argv[-1]).write_text("an earlier run's")
    common.setup(args)
    assert not Path(argv[-1]).exists()  # a results file stands for a finished run
    err = capsys.readouterr().err
    assert f"warning: {spelling} is deprecated: use --out DIR" in err and err.count("\n") == 1
    assert common.finish(args, {"seconds": 1.5}) == Path(argv[-1])
    assert json.loads(Path(argv[-1]).read_text()) == {"seconds": 1.5}


def test_a_benchmark_writes_no_files_without_out(monkeypatch, tmp_path):
    common = script("_common")
    monkeypatch.chdir(tmp_path)
    args = parser_of("bench_solvers", monkeypatch).parse_args(["--quick"])
    assert common.setup(args) is None and common.finish(args, {"a": 1}) is None
    assert list(tmp_path.iterdir()) == []
