"""Training across processes of torch.distributed (gloo on the CPU): two processes reach the
weights and losses of one process, agree on failed batches, and only process 0 writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import physode
from physode import InvalidArgumentError
from physode.models import NeuralODE
from physode.train import TrainConfig, Trainer, _distributed

sys.path.insert(0, str(Path(__file__).parent))
import _distributed_runs as runs  # noqa: E402

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available(), reason="this torch build has no torch.distributed"
)

# Long enough for two processes that import torch and physode on a busy machine; a process
# that waits for another forever fails the test instead of blocking it.
TIMEOUT = 240


def _environment() -> dict[str, str]:
    root = str(Path(__file__).parents[1])
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": root if not path else f"{root}{os.pathsep}{path}",
            "OMP_NUM_THREADS": "1"}  # fmt: skip


def _wait(processes: list[subprocess.Popen]) -> list[str]:
    """Each process's standard error once all have ended; kill them all and fail where one
    has not ended within TIMEOUT seconds (a process waiting for another)."""
    errors = []
    try:
        for process in processes:
            errors.append(process.communicate(timeout=TIMEOUT)[1])
    except subprocess.TimeoutExpired:
        for process in processes:
            process.kill()
            process.communicate()
        pytest.fail(f"a training process did not end within {TIMEOUT} s (it hangs)")
    for process, err in zip(processes, errors):
        assert process.returncode == 0, err
    return errors


def _two_processes(out: Path, which: str = "RUNS") -> list[dict]:
    """The runs of ``which`` (a list of tests/_distributed_runs.py) made by two processes: one
    dict of results per process."""
    script = Path(runs.__file__)
    store = out / "store"
    processes = [
        subprocess.Popen(
            [sys.executable, str(script), str(rank), "2", str(store), str(out), which],
            env=_environment(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        for rank in (0, 1)
    ]
    _wait(processes)
    return [torch.load(out / f"rank{rank}.pt", weights_only=False) for rank in (0, 1)]


def _torchrun(command: list[str], what: str, cwd: Path | None = None) -> tuple[str, str]:
    """Run ``command`` (a torchrun launch) to its end: its standard output and error; a launch
    that fails or outlives the timeout fails the test."""
    process = subprocess.Popen(command, cwd=cwd, env=_environment(), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        stdout, stderr = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        pytest.fail(f"{what} did not end within {TIMEOUT} s")
    assert process.returncode == 0, stderr
    return stdout, stderr


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    """Every run of tests/_distributed_runs.py's RUNS, then its BUILDS, made by one launch of
    two processes (each launch pays two imports of torch): ``(out, results)``, one dict of
    results per process."""
    out = tmp_path_factory.mktemp("distributed")
    return out, _two_processes(out, "RUNS+BUILDS")


@pytest.fixture(scope="module")
def together(launched):
    """Every run of RUNS made by two processes: ``(out, results)``, one dict of results per
    process."""
    out, results = launched
    return out, [{run.__name__: mine[run.__name__] for run in runs.RUNS} for mine in results]


@pytest.fixture(scope="module")
def builds(launched):
    """The trainers of BUILDS, built by two processes after RUNS: one dict per process."""
    return [{run.__name__: mine[run.__name__] for run in runs.BUILDS} for mine in launched[1]]


@pytest.fixture(scope="module")
def alone(tmp_path_factory):
    """The same runs in this one process (no process group)."""
    out = tmp_path_factory.mktemp("alone")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the processes do
    try:
        with torch.random.fork_rng(devices=[]):  # the runs seed torch's generator
            return out, {run.__name__: run(out, 0) for run in runs.RUNS}
    finally:
        torch.set_num_threads(threads)


def _close(mine: dict, reference: dict, tolerance: float = 1e-12) -> None:
    """The final weights and every epoch's numbers (work counts and times aside) agree."""
    assert mine["weights"].keys() == reference["weights"].keys()
    for name, value in reference["weights"].items():
        torch.testing.assert_close(mine["weights"][name], value, rtol=tolerance, atol=tolerance)
    assert len(mine["history"]) == len(reference["history"])
    for row, expected in zip(mine["history"], reference["history"]):
        assert row.keys() == expected.keys()
        for key, value in expected.items():
            if key in ("wall_time", "elapsed", "nfe_forward", "nfe_backward"):
                continue
            if isinstance(value, float):
                assert row[key] == pytest.approx(value, rel=tolerance, abs=tolerance), key
            else:
                assert row[key] == value, key


@pytest.mark.parametrize("run", ["adam_hybrid", "lbfgs_physics", "adam_per_trajectory"])
def test_two_processes_reach_the_weights_and_losses_of_one(together, alone, run):
    _, results = together
    reference = alone[1][run]
    assert reference["history"][-1]["loss"] < reference["history"][0]["loss"] or (
        run == "adam_hybrid"  # APHYNITY's λ grows: its loss need not fall in three epochs
    )
    for rank in (0, 1):
        _close(results[rank][run], reference)
        # Each process solved its share of the batches: at most half their windows at once.
        assert 0 < results[rank][run]["rows"] <= (reference["rows"] + 1) // 2 < reference["rows"]


def test_the_work_of_both_processes_is_counted(together, alone):
    # Fixed steps: each process's solve of its share makes the steps of the whole batch's.
    _, results = together
    for row, expected in zip(results[0]["adam_hybrid"]["history"],
                             alone[1]["adam_hybrid"]["history"]):  # fmt: skip
        assert row["nfe_forward"] == 2 * expected["nfe_forward"]


def test_a_batch_that_fails_in_one_process_stops_both_where_one_process_stops(together, alone):
    _, results = together
    reference = alone[1]["failing_stop"]
    kind, summary, epoch, batch = reference["error"]
    assert kind == "TrainingError" and "is inf" in summary
    errors = [results[rank]["failing_stop"]["error"] for rank in (0, 1)]
    assert errors[0] == errors[1]  # the same error in both, the failing process's reason
    assert errors[0][0] == kind and errors[0][2:] == (epoch, batch)
    assert "is inf (in the share of process " in errors[0][1]
    for rank in (0, 1):  # both back at the weights they started from, as one process is
        _close(results[rank]["failing_stop"], reference, tolerance=0.0)


def test_batches_that_fail_in_one_process_are_skipped_by_both(together, alone):
    _, results = together
    reference = alone[1]["failing_skip"]
    assert reference["error"] is None
    assert sum(row["skipped_batches"] for row in reference["history"]) > 0
    for rank in (0, 1):
        assert results[rank]["failing_skip"]["error"] is None
        _close(results[rank]["failing_skip"], reference)
        assert results[rank]["failing_skip"]["rows"] < reference["rows"]  # a share each


def test_only_process_0_writes_and_its_checkpoint_is_one_process_s(together, alone):
    out, _ = together
    assert (out / "checkpoints0" / "last.pt").is_file() and (out / "log0.csv").is_file()
    assert not (out / "checkpoints1").exists() and not (out / "log1.csv").exists()
    single = alone[0]
    saved, expected = (
        torch.load(folder / "checkpoints0" / "last.pt", weights_only=True)
        for folder in (out, single)
    )
    assert saved.keys() == expected.keys() and saved["epoch"] == expected["epoch"] == 3
    for part in ("model", "best_state"):
        for name, value in expected[part].items():
            torch.testing.assert_close(saved[part][name], value, rtol=1e-12, atol=1e-12)
    for index, state in expected["optimizer"]["state"].items():
        for name, value in state.items():
            torch.testing.assert_close(
                saved["optimizer"]["state"][index][name], value, rtol=1e-12, atol=1e-12
            )
    lines = (out / "log0.csv").read_text().splitlines()
    assert len(lines) == len((single / "log0.csv").read_text().splitlines()) == 4


def test_an_error_in_one_process_stops_both(together, alone):
    _, results = together
    reference = alone[1]["failing_error"]
    assert reference["error"][0] == "ValueError"
    errors = [results[rank]["failing_error"]["error"] for rank in (0, 1)]
    # The process that met it raises the error itself, the other one naming it.
    assert sorted(error[0] for error in errors) == ["DistributedError", "ValueError"]
    other = next(error for error in errors if error[0] == "DistributedError")
    assert "stopped on an error: ValueError: a state beyond 10" in other[1]
    for rank in (0, 1):  # both back at the start of the epoch, as one process is
        _close(results[rank]["failing_error"], reference, tolerance=0.0)


@pytest.fixture(scope="module")
def uninterrupted(alone):
    """:func:`runs.adam_hybrid`'s run for four epochs in this one process."""
    with torch.random.fork_rng(devices=[]):  # the runs seed torch's generator
        trainer = runs.hybrid_trainer(alone[0] / "whole", 0, epochs=4)
        trainer.fit()
    return runs._result(trainer)


def test_a_checkpoint_of_two_processes_resumes_in_one(together, alone, uninterrupted):
    # Nothing in the checkpoint belongs to the processes that wrote it (another world size
    # resumes it): the same run as one process that was never stopped.
    out, _ = together
    with torch.random.fork_rng(devices=[]):  # the runs seed torch's generator
        trainer = runs.hybrid_trainer(alone[0] / "resumed", 0, epochs=4)
        trainer.load_checkpoint(out / "checkpoints0" / "last.pt")
        assert trainer.epoch == 3
        trainer.fit()
    _close(runs._result(trainer), uninterrupted)


def test_two_processes_resume_a_checkpoint_and_process_0_alone_writes(together, uninterrupted):
    out, results = together
    for rank in (0, 1):
        _close(results[rank]["resumed_hybrid"], uninterrupted)
    # Loading the checkpoint rewrites the log from its history: in process 0 alone.
    assert len((out / "resumed" / "log0.csv").read_text().splitlines()) == 5
    assert not (out / "resumed" / "log1.csv").exists()
    assert not (out / "resumed" / "checkpoints1").exists()


def test_a_model_with_its_own_regularised_loss_is_refused_across_processes(monkeypatch):
    class Penalised(NeuralODE):
        def regularised_loss(self, loss, t, ys):
            return loss + ys.pow(2).mean()

    monkeypatch.setattr(_distributed, "process_group", lambda: _distributed.Group(0, 2))
    # The other process built the same trainer: it reports what this one does.
    monkeypatch.setattr(_distributed, "gathered", lambda value, group, call: [value] * group.world)
    t = torch.linspace(0, 1, 5, dtype=torch.float64)
    data = (t, torch.exp(-t)[:, None])
    with pytest.raises(physode.InvalidArgumentError, match="its own regularised_loss"):
        Trainer(Penalised(1, width=4, depth=1), data, window=3)


def test_physode_train_under_torchrun_writes_out_once_with_one_process_s_weights(
    oscillator_h5, tmp_path
):
    from physode.cli import main

    argv = ["train", str(oscillator_h5), "--model", "hybrid", "--width", "6", "--depth", "1",
            "--epochs", "2", "--window", "5", "--batch-size", "3", "--method", "rk4",
            "--step-size", "0.05", "--seed", "4"]  # fmt: skip
    assert main([*argv, "--quiet", "--out", str(tmp_path / "alone")]) == 0
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node", "2", "-m", "physode", *argv,
               "--out", str(tmp_path / "together")]  # fmt: skip
    stdout, stderr = _torchrun(command, "physode train under torchrun")
    alone, together = (torch.load(tmp_path / run / "model.pt") for run in ("alone", "together"))
    assert alone.keys() == together.keys()
    for name, value in alone.items():
        torch.testing.assert_close(together[name], value, rtol=1e-12, atol=1e-12, equal_nan=True)
    reports = [json.loads((tmp_path / run / "report.json").read_text())
               for run in ("alone", "together")]  # fmt: skip
    assert reports[1]["final_loss"] == pytest.approx(reports[0]["final_loss"], rel=1e-12)
    # Process 0 alone reports: one summary, not one a process.
    assert stdout.count("rollout of 1 held-out trajectory") == 1, stdout


@pytest.mark.parametrize(
    ("device", "backend", "trains_on"),
    [(None, "gloo", None), ("cpu", "gloo", "cpu"), ("cuda", "nccl", "cuda:1")],
)
def test_torchrun_s_environment_starts_the_group_for_the_device(
    monkeypatch, device, backend, trains_on
):
    started = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: bool(started))
    monkeypatch.setattr(torch.distributed, "init_process_group",
                        lambda backend: started.append(backend))  # fmt: skip
    monkeypatch.setattr(torch.cuda, "set_device", lambda index: started.append(index))
    monkeypatch.setattr(_distributed, "process_group", lambda: _distributed.Group(1, 2))
    group, chosen = _distributed.start_from_environment(device)
    assert group == _distributed.Group(1, 2) and chosen == trains_on
    assert started == ([1, "nccl"] if backend == "nccl" else ["gloo"])


def test_a_world_size_that_is_no_number_is_refused(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(physode.InvalidArgumentError, match="WORLD_SIZE='two'"):
        _distributed.start_from_environment(None)


def test_a_trainer_built_alike_warns_in_process_0_alone(builds):
    warned = [builds[rank]["built_alike"] for rank in (0, 1)]
    assert warned[0]["error"] is None and warned[1]["error"] is None
    assert len(warned[0]["warnings"]) == 1 and "model.autonomous" in warned[0]["warnings"][0]
    assert warned[1]["warnings"] == []


def test_an_error_that_stops_one_process_building_its_trainer_stops_all(builds):
    # Process 1 cannot read the weights to start from; process 0 could, but must not wait for
    # it in the first collective: it names process 1's error.
    theirs, mine = (builds[rank]["init_from_missing_in_one"]["error"] for rank in (1, 0))
    assert theirs[0] == "InvalidArgumentError" and "absent.pt" in theirs[1]
    assert mine[0] == "InvalidArgumentError"
    assert mine[1].startswith("process 1 of the 2 processes training together")
    assert "could not build its trainer" in mine[1] and "absent.pt" in mine[1]


@pytest.mark.parametrize(
    ("run", "named"),
    [("data_split_among_processes", "training data's states: (2, 9, 2) float64 #"),
     ("settings_differ", "setting epochs: 3 in process 1, 2 in process 0; setting lr: 0.02")],
)
def test_processes_given_different_data_or_settings_are_refused(builds, run, named):
    for rank in (0, 1):
        kind, message = builds[rank][run]["error"]
        assert kind == "InvalidArgumentError"
        assert "were given different data or settings" in message and named in message
        assert "must not be split among the processes" in message


def test_a_checkpoint_that_one_process_cannot_resume_stops_all(builds):
    theirs, mine = (builds[rank]["resume_missing_in_one"]["error"] for rank in (1, 0))
    assert theirs[0] == "InvalidArgumentError" and "absent.pt" in theirs[1]
    assert mine[0] == "InvalidArgumentError"
    assert mine[1].startswith("process 1 of the 2 processes training together "
                              "(torch.distributed) could not resume ")  # fmt: skip
    assert "absent.pt" in mine[1]


def test_a_checkpoint_resumed_in_one_process_only_stops_all_naming_each_call(builds):
    # Process 0 resumes while process 1 starts training: they meet in different calls.
    for rank in (0, 1):
        kind, message = builds[rank]["resumed_in_one_only"]["error"]
        assert kind == "DistributedError"
        assert "met in different calls (process 0: load_checkpoint, process 1: fit)" in message
        assert "must make the same calls of its trainer" in message


def test_processes_at_different_epochs_are_refused_before_training(monkeypatch):
    group = _distributed.Group(rank=1, world=2)
    monkeypatch.setattr(_distributed, "process_group", lambda: group)
    monkeypatch.setattr(_distributed, "gathered", lambda value, group, call: [(None, 4), value])
    trainer = Trainer.__new__(Trainer)  # only what fit reads before it trains
    trainer.config, trainer._group, trainer._writes, trainer.epoch = TrainConfig(), group, False, 0
    with pytest.raises(InvalidArgumentError, match=r"are at different epochs \(process 0: 4, "
                       r"process 1: 0\); load the same checkpoint in every process"):
        trainer.fit()


def test_process_0_failing_to_write_stops_the_others_with_a_distributed_error(monkeypatch):
    # Process 1 learns that process 0 could not write its epoch: a PhysodeError (and still the
    # RuntimeError it was before 2026-12-07, a bare one) that names process 0 and its reason.
    t = torch.linspace(0, 1, 5, dtype=torch.float64)
    trainer = Trainer(NeuralODE(1, width=4, depth=1), (t, torch.exp(-t)[:, None]), window=3)
    trainer._group, trainer._writes = _distributed.Group(rank=1, world=2), False
    monkeypatch.setattr(_distributed, "broadcast_problem", lambda problem, device: "disk full")
    with pytest.raises(physode.DistributedError) as caught:
        trainer._after_epoch({"loss": 1.0}, None)
    assert isinstance(caught.value, RuntimeError)
    assert str(caught.value) == (
        "process 0 of the 2 processes training together (torch.distributed) could not write "
        "the log or a checkpoint: disk full"
    )


def test_processes_that_meet_in_other_calls_or_stop_elsewhere_raise_distributed_errors(
    monkeypatch,
):
    group = _distributed.Group(rank=0, world=2)
    theirs = [("fit", None), ("load_checkpoint", None)]

    def gather(values, mine):
        values[:] = theirs

    monkeypatch.setattr(torch.distributed, "all_gather_object", gather)
    with pytest.raises(physode.DistributedError, match=r"met in different calls \(process 0: "
                       r"fit, process 1: load_checkpoint\)") as caught:  # fmt: skip
        _distributed.gathered(None, group, "fit")
    assert isinstance(caught.value, RuntimeError)
    elsewhere = _distributed.error_elsewhere([None, ("error", "ValueError: bad", False)], group)
    assert type(elsewhere) is physode.DistributedError and isinstance(elsewhere, RuntimeError)
    assert str(elsewhere) == (
        "process 1 of the 2 processes training together (torch.distributed) stopped on an "
        "error: ValueError: bad"
    )
    theirs = [("load_checkpoint", None), ("load_checkpoint", ("OSError", "disk gone"))]
    with pytest.raises(physode.DistributedError, match="process 1 of the 2 processes training "
                       "together \\(torch.distributed\\) could not resume: OSError: disk gone"):
        with _distributed.together(group, "load_checkpoint", "could not resume"):
            pass


def test_a_trainer_s_warnings_point_at_the_line_that_built_it():
    # The trainer is built in a method of its own (so that processes can agree on it): its
    # warnings still name the caller's line.
    with pytest.warns(physode.PhysodeWarning, match="model.autonomous") as caught:
        Trainer(runs._TimeDependent(), runs._oscillators(), epochs=1, window=3)
    assert [Path(w.filename).name for w in caught] == [Path(__file__).name]


def test_the_docs_python_example_trains_under_torchrun(tmp_path):
    import re

    text = (Path(__file__).parents[1] / "docs" / "training.md").read_text()
    section = text[text.index("## Across processes and machines") :]
    script = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    (tmp_path / "train_together.py").write_text(script)
    made_with = re.search(r"physode simulate pendulum (.*) -o pendulum.h5", section).group(1)
    assert made_with == "-n 8 --t-end 2 --points 21"
    physode.data.simulate("pendulum", trajectories=8, t_end=2.0, points=21,
                          out=tmp_path / "pendulum.h5")  # fmt: skip
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node", "2", "train_together.py"]  # fmt: skip
    stdout, stderr = _torchrun(command, "the example under torchrun", cwd=tmp_path)
    assert len(stdout.splitlines()) == 1, stdout  # process 0 alone prints
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["best.pt", "last.pt",
                                                                    "log.csv"]  # fmt: skip
    assert len((tmp_path / "run" / "log.csv").read_text().splitlines()) == 6
