"""Tests of ``physode train`` (physode/cli_train.py): repeatable runs, resume checks of the model
settings, saving before the evaluation, [report] types, the progress bar, settings that do not
apply to the chosen model."""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
import warnings
from pathlib import Path

import pytest
import torch
from _recorded_solves import recorded_solves

import physode
import physode.cli
import physode.data
import physode.systems
from physode.cli import main
from physode.cli_train import (
    _MODEL_DEFAULTS,
    EXAMPLES,
    _check_applicable,
    _settings,
    add_train_parser,
    build_model,
)
from physode.models import NeuralODE, PhysicsModel
from physode.train import Trainer


@pytest.fixture
def data(oscillator_h5):
    """The shared small data set of six oscillators (conftest.py)."""
    return oscillator_h5


def _train(data, *argv: str) -> list[str]:
    return ["train", str(data), "--epochs", "1", "--window", "5", "--quiet", *argv]


def _neural(data, *argv: str) -> list[str]:
    return _train(data, "--model", "neural", "--width", "8", "--depth", "1", *argv)


def _error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("physode train: error: ") and err.count("\n") == 1, err
    return err


# ------------------------------------------------------------------ --seed


def test_the_same_command_twice_gives_the_same_weights_and_losses(data, tmp_path):
    for run in ("a", "b"):
        assert main(_neural(data, "--seed", "5", "--out", str(tmp_path / run))) == 0
    first, second = (torch.load(tmp_path / run / "model.pt") for run in ("a", "b"))
    assert all(torch.equal(first[k], second[k]) for k in first)
    losses = [json.loads((tmp_path / run / "report.json").read_text())["final_loss"]
              for run in ("a", "b")]  # fmt: skip
    assert losses[0] == losses[1]


def test_the_report_says_which_command_data_and_software_trained_the_model(data, tmp_path):
    # report.json named neither the data set nor the command: a run could not be told from
    # one on another data set, nor be rerun from its report.
    other = tmp_path / "other.h5"
    physode.data.simulate("harmonic_oscillator", trajectories=6, t_end=2.0, points=9, out=other,
                          seed=4, split=(4 / 6, 1 / 6, 1 / 6), quiet=True)  # fmt: skip
    reports = []
    for name, path in (("a", data), ("b", other)):
        argv = _neural(path, "--seed", "5", "--out", str(tmp_path / name))
        assert main(argv) == 0
        report = json.loads((tmp_path / name / "report.json").read_text())
        assert report["command_line"] == shlex.join(["physode", *argv])
        assert report["data"]["path"] == str(path)
        reports.append(report)
    first, second = (report["data"] for report in reports)
    assert first["training data's states"].startswith("(4, 9, 2) float64 #")
    assert first["validation data's states"].startswith("(1, 9, 2) float64 #")
    assert first["training data's t"] == second["training data's t"]  # the same times
    assert first["training data's states"] != second["training data's states"]  # seed 3, 4
    software = reports[0]["software"]
    assert software["physode"] == physode.__version__
    assert software["torch"] == torch.__version__ and set(software) >= {"numpy", "python"}


def test_another_seed_starts_from_other_weights(data, tmp_path):
    weights = []
    for seed in ("0", "1"):
        out = tmp_path / seed
        assert main(_neural(data, "--seed", seed, "--out", str(out))) == 0
        weights.append(torch.load(out / "model.pt")["net.net.0.weight"])
    assert not torch.equal(*weights)


def test_a_run_leaves_the_callers_random_generator_as_it_was(data):
    torch.manual_seed(123)
    before = torch.get_rng_state()
    assert main(_neural(data)) == 0
    assert torch.equal(torch.get_rng_state(), before)


# ------------------------------------------------------------------ Ctrl-C


def test_a_seed_beyond_64_bits_is_refused_as_a_bad_setting_and_the_largest_trains(
    data, tmp_path, capsys
):
    # 2**64 ended as torch's "Overflow when unpacking long long", an internal error (status 3)
    # with a traceback; physode simulate --seed refuses it in words.
    assert main(_neural(data, "--seed", str(2**64))) == 2
    assert _error(capsys) == (
        f"physode train: error: bad training settings: --seed {2**64} (need an integer >= 0 "
        "and below 2**64)\n"
    )
    assert main(_neural(data, "--seed", str(2**64 - 1), "--out", str(tmp_path))) == 0
    assert json.loads((tmp_path / "report.json").read_text())["config"]["seed"] == 2**64 - 1


def test_ctrl_c_saves_the_last_completed_epoch_and_its_resume_ends_as_the_whole_run(
    data, tmp_path, capsys, monkeypatch
):
    # Two batches an epoch; Ctrl-C in the second batch of epoch 5, when last.pt held epoch 3.
    def run(name: str, *argv: str) -> list[str]:
        return _neural(data, "--epochs", "5", "--batch-size", "16", "--checkpoint-every", "3",
                       "--checkpoint-dir", str(tmp_path / name), "--log",
                       str(tmp_path / f"{name}.json"), *argv)  # fmt: skip

    assert main(run("whole", "--out", str(tmp_path / "whole"))) == 0
    evaluate, batches = Trainer._evaluate, []

    def interrupted_in_epoch_5(self, *args):
        batches.append(self.epoch)
        if batches.count(4) == 2:
            raise KeyboardInterrupt
        return evaluate(self, *args)

    monkeypatch.setattr(Trainer, "_evaluate", interrupted_in_epoch_5)
    assert main(run("cut")) == 130
    last = tmp_path / "cut" / "last.pt"
    assert capsys.readouterr().err == (
        f"physode train: interrupted during epoch 5; {last} holds the run after epoch 4: rerun "
        f"the same command with --resume {last} to continue it\n"
    )
    monkeypatch.undo()
    assert main(run("cut", "--resume", str(last), "--out", str(tmp_path / "cut"))) == 0
    logs = [json.loads((tmp_path / f"{name}.json").read_text()) for name in ("whole", "cut")]
    assert [row["epoch"] for row in logs[1]] == [1, 2, 3, 4, 5]
    assert [row["loss"] for row in logs[1]] == [row["loss"] for row in logs[0]]
    weights = [torch.load(tmp_path / name / "model.pt") for name in ("whole", "cut")]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


# ------------------------------------------------------------------ --resume


@pytest.fixture
def own_system(tmp_path):
    """The catalogue's harmonic oscillator as a file of one's own: the same shapes."""
    path = tmp_path / "oscillator.toml"
    path.write_text(physode.systems.path("harmonic_oscillator").read_text(encoding="utf-8"))
    return str(path)


@pytest.fixture
def renamed_twin(tmp_path):
    """A file that gives the harmonic oscillator's name to other equations (a quartic well):
    another system, though named alike."""
    text = physode.systems.path("harmonic_oscillator").read_text(encoding="utf-8")
    path = tmp_path / "quartic.toml"
    path.write_text(text.replace("k*q**2/2", "k*q**4/4"))
    return str(path)


HYBRID = ["--model", "hybrid", "--width", "8", "--depth", "1", "--learnable", "k"]
APHYNITY = [*HYBRID, "--aphynity", "--aphynity-tau", "10"]


@pytest.mark.parametrize(
    ("first", "then", "named"),
    [
        (APHYNITY, HYBRID, "model.aphynity: True -> False"),
        (APHYNITY, [*HYBRID, "--aphynity", "--aphynity-tau", "100"],
         "model.aphynity_tau: 10.0 -> 100.0"),  # fmt: skip
        (APHYNITY, [*APHYNITY, "--aphynity-lambda", "2"], "model.aphynity_lambda: 1.0 -> 2.0"),
        (APHYNITY, [*APHYNITY, "--aphynity-update", "epoch"],
         "model.aphynity_update: 'batch' -> 'epoch'"),  # fmt: skip
        (HYBRID, [*HYBRID, "--activation", "relu"], "model.activation: 'tanh' -> 'relu'"),
        (HYBRID, [*HYBRID[:-1], "m,k"], "model.learnable: ['k'] -> ['m', 'k']"),
        (HYBRID, [*HYBRID, "--system", "{twin}"],
         "model.system: 'harmonic_oscillator' -> '{twin}' (both named 'harmonic_oscillator', "
         "but of other specifications: SHA-256 "),  # fmt: skip
        (HYBRID, [*HYBRID, "--system", "damped_oscillator"],
         "model.system: 'harmonic_oscillator' -> 'damped_oscillator'"),  # fmt: skip
        (HYBRID, ["--model", "neural", "--width", "8", "--depth", "1"],
         "model.kind: 'hybrid' -> 'neural'"),  # fmt: skip
    ],
)
def test_a_resume_with_other_model_settings_is_refused_naming_each(
    data, tmp_path, capsys, renamed_twin, first, then, named
):
    checkpoints = tmp_path / "ckpt"
    assert main(_train(data, *first, "--checkpoint-dir", str(checkpoints))) == 0
    then = [a.format(twin=renamed_twin) for a in then]
    resume = ["--resume", str(checkpoints / "last.pt"), "--epochs", "2"]
    assert main(_train(data, *then, *resume)) == 2
    err = _error(capsys)
    assert "settings differ from the saved run" in err and named.format(twin=renamed_twin) in err


@pytest.mark.parametrize("then", [[], ["--system", "harmonic_oscillator"], ["--system", "{own}"]])
@pytest.mark.parametrize("first", [[], ["--system", "harmonic_oscillator"], ["--system", "{own}"]])
def test_the_system_written_another_way_resumes_and_warm_starts(
    data, tmp_path, own_system, first, then
):
    # The data set's own system, its catalogue name and a copy of its file are one system.
    first, then = ([a.format(own=own_system) for a in argv] for argv in (first, then))
    physics = ["--model", "physics", "--learnable", "k", "--init", "k=1.5"]
    checkpoints, fit = tmp_path / "ckpt", tmp_path / "fit"
    assert main(_train(data, *physics, *first, "--checkpoint-dir", str(checkpoints),
                       "--out", str(fit))) == 0  # fmt: skip
    resume = ["--resume", str(checkpoints / "last.pt"), "--epochs", "2", "--out", str(tmp_path)]
    assert main(_train(data, *physics, *then, *resume)) == 0
    assert json.loads((tmp_path / "report.json").read_text())["epochs"] == 2
    hybrid = [*HYBRID, *then, "--init-from", str(fit / "model.pt"), "--out", str(tmp_path / "h")]
    assert main(_train(data, *hybrid)) == 0
    report = json.loads((tmp_path / "h" / "report.json").read_text())
    assert report["warm_start"].startswith("started the physics part (m, k) from ")


def test_a_file_naming_its_other_equations_as_the_data_sets_system_does_not_warm_start(
    data, tmp_path, capsys, renamed_twin
):
    fit = ["--model", "physics", "--learnable", "k", "--system", renamed_twin, "--out",
           str(tmp_path / "fit")]  # fmt: skip
    assert main(_train(data, *fit)) == 0
    record = json.loads((tmp_path / "fit" / "report.json").read_text())["model"]
    assert (record["system"], record["system_name"]) == (renamed_twin, "harmonic_oscillator")
    capsys.readouterr()
    init_from = str(tmp_path / "fit" / "model.pt")
    assert main(_train(data, *HYBRID, "--init-from", init_from)) == 2
    assert (
        f"its physics part was trained in a physics model built with other settings (system: "
        f"{renamed_twin!r} -> 'harmonic_oscillator' (both named 'harmonic_oscillator', but of "
        "other specifications: SHA-256 "
    ) in _error(capsys)


def _written_before_identity(record: dict) -> dict:
    """A model record as physode wrote it before it kept the system's identity."""
    return {k: v for k, v in record.items() if k not in ("system_name", "system_spec_sha256")}


def test_an_older_report_naming_the_system_as_written_is_compared_as_well_as_it_allows(
    data, tmp_path, capsys, own_system, renamed_twin
):
    fit = tmp_path / "fit"
    physics = ["--model", "physics", "--learnable", "k", "--out", str(fit)]
    assert main(_train(data, *physics, "--system", own_system)) == 0
    report = json.loads((fit / "report.json").read_text())
    report["model"] = _written_before_identity(report["model"])
    assert report["model"]["system"] == own_system
    (fit / "report.json").write_text(json.dumps(report))
    init_from = ["--init-from", str(fit / "model.pt")]
    # The file it names still holds the data set's system; the text as given matches too.
    for system in ([], ["--system", own_system]):
        assert main(_train(data, *HYBRID, *system, *init_from)) == 0
    Path(own_system).write_text(Path(renamed_twin).read_text())  # now another system
    capsys.readouterr()
    assert main(_train(data, *HYBRID, *init_from)) == 2
    assert f"(system: {own_system!r} -> 'harmonic_oscillator')" in _error(capsys)


def test_an_older_checkpoint_naming_the_system_as_written_resumes_by_its_name(
    data, tmp_path, capsys
):
    checkpoints = tmp_path / "ckpt"
    assert main(_train(data, *HYBRID, "--checkpoint-dir", str(checkpoints))) == 0
    state = torch.load(checkpoints / "last.pt")
    record = {k.removeprefix("model."): v for k, v in state["metadata"].items()}
    state["metadata"] = {f"model.{k}": v for k, v in _written_before_identity(record).items()}
    torch.save(state, checkpoints / "last.pt")
    resume = ["--resume", str(checkpoints / "last.pt"), "--epochs", "2"]
    assert main(_train(data, *HYBRID, "--system", "harmonic_oscillator", *resume)) == 0
    capsys.readouterr()
    assert main(_train(data, *HYBRID, "--system", "damped_oscillator", *resume)) == 2
    assert "(model.system: 'harmonic_oscillator' -> 'damped_oscillator')" in _error(capsys)


def test_a_resume_with_the_same_model_settings_continues_the_run(data, tmp_path, own_system):
    checkpoints = tmp_path / "ckpt"
    first = [*APHYNITY, "--system", own_system, "--init", "k=1.5"]
    assert main(_train(data, *first, "--checkpoint-dir", str(checkpoints))) == 0
    resume = ["--resume", str(checkpoints / "last.pt"), "--epochs", "2", "--out", str(tmp_path)]
    assert main(_train(data, *first, *resume)) == 0
    assert json.loads((tmp_path / "report.json").read_text())["epochs"] == 2


def test_a_resume_with_nothing_left_to_train_says_so_in_one_line(data, tmp_path, capsys):
    checkpoints = tmp_path / "ckpt"
    assert main(_neural(data, "--checkpoint-dir", str(checkpoints))) == 0
    capsys.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the trainer's Python warning is not shown as well
        assert main(_neural(data, "--resume", str(checkpoints / "last.pt"))) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("physode train: warning: nothing to train: the run has done 1 epoch and")
    assert "set epochs above" in err


def test_the_summary_counts_one_epoch_in_the_singular(data, tmp_path, capsys):
    argv = ["train", str(data), "--model", "neural", "--width", "8", "--depth", "1"]
    assert main([*argv, "--epochs", "1", "--window", "5", "--out", str(tmp_path / "run")]) == 0
    assert capsys.readouterr().out.startswith("trained 1 epoch in ")


def test_a_resume_reads_its_checkpoint_once(data, tmp_path, monkeypatch):
    checkpoints = tmp_path / "ckpt"
    assert main(_neural(data, "--checkpoint-dir", str(checkpoints))) == 0
    last = checkpoints / "last.pt"
    reads = []
    load = torch.load

    def counted(path, *args, **kwargs):
        reads.append(Path(path))
        return load(path, *args, **kwargs)

    monkeypatch.setattr(torch, "load", counted)
    assert main(_neural(data, "--resume", str(last), "--epochs", "2")) == 0
    assert reads.count(last) == 1


def test_a_run_reads_the_training_split_once(data, tmp_path, monkeypatch):
    # Read a second time to build the model, a training split was held twice while it trained.
    import physode.train.data as train_data

    reads = []
    read = train_data.trajectories_of

    def counted(stored, index, split, noisy=False):
        reads.append(split)
        return read(stored, index, split, noisy)

    monkeypatch.setattr(train_data, "trajectories_of", counted)
    assert main(_neural(data, "--out", str(tmp_path / "run"))) == 0
    assert reads.count("train") == 1, reads


def test_the_held_out_split_read_before_training_is_not_held_while_training(
    data, tmp_path, monkeypatch
):
    import weakref

    held_out, fit = Trainer.held_out_data, Trainer.fit
    read, alive = [], []

    def held_out_data(self, *args, **kwargs):
        split = held_out(self, *args, **kwargs)
        read.append(weakref.ref(split))
        return split

    def fitting(self, *args, **kwargs):
        alive.append(read[0]() is not None)
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "held_out_data", held_out_data)
    monkeypatch.setattr(Trainer, "fit", fitting)
    assert main(_neural(data, "--out", str(tmp_path / "run"))) == 0
    assert alive == [False]


def test_resume_alone_continues_from_the_checkpoint_dir_as_simulates_resume_does(data, tmp_path):
    # `--resume` took a checkpoint file only; alone, like `physode simulate --resume`, it now
    # continues what the same command kept: --checkpoint-dir's last.pt.
    def run(name: str, epochs: str, *argv: str) -> list[str]:
        return _neural(data, "--epochs", epochs, "--checkpoint-dir", str(tmp_path / name),
                       "--log", str(tmp_path / f"{name}.json"), "--out", str(tmp_path / name),
                       *argv)  # fmt: skip

    assert main(run("whole", "2")) == 0
    assert main(run("split", "1")) == 0
    assert main(run("split", "2", "--resume")) == 0
    logs = [json.loads((tmp_path / f"{name}.json").read_text()) for name in ("whole", "split")]
    assert [row["epoch"] for row in logs[1]] == [1, 2]
    assert [row["loss"] for row in logs[1]] == [row["loss"] for row in logs[0]]
    weights = [torch.load(tmp_path / name / "model.pt") for name in ("whole", "split")]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_resume_alone_starts_anew_where_no_checkpoint_was_kept(data, tmp_path):
    # As `physode simulate --resume` with no chunks: a job can always be started with --resume.
    for name, resume in (("plain", []), ("resumed", ["--resume"])):
        argv = ["--checkpoint-dir", str(tmp_path / f"ck_{name}"), "--out", str(tmp_path / name)]
        assert main(_neural(data, *argv, *resume)) == 0
    weights = [torch.load(tmp_path / name / "model.pt") for name in ("plain", "resumed")]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_resume_alone_without_a_checkpoint_dir_is_refused_before_training(data, tmp_path, capsys):
    log = tmp_path / "log.csv"
    assert main(_neural(data, "--resume", "--log", str(log))) == 2
    err = _error(capsys)
    assert "--resume without a checkpoint file" in err and "--checkpoint-dir DIR" in err
    assert not log.exists()


def test_resume_true_in_the_config_is_resume_alone(data, tmp_path, capsys):
    checkpoints = tmp_path / "ckpt"
    assert main(_neural(data, "--checkpoint-dir", str(checkpoints))) == 0
    capsys.readouterr()
    config = tmp_path / "run.toml"
    config.write_text(f'data = "{data}"\n[report]\nresume = true\n')
    argv = _neural(data, "--checkpoint-dir", str(checkpoints))
    argv[1:2] = ["--config", str(config)]  # the data set comes from the config
    assert main(argv) == 0
    assert "nothing to train" in capsys.readouterr().err  # it continued the finished run


def test_a_data_set_taken_as_the_checkpoint_of_resume_is_explained(tmp_path, capsys):
    assert main(["train", "--resume", "data.h5"]) == 2
    assert "put DATA.h5 before --resume" in _error(capsys)


def test_a_checkpoint_without_model_settings_still_resumes(data, tmp_path):
    # Checkpoints written before physode train stored its model settings hold none.
    checkpoints = tmp_path / "ckpt"
    assert main(_neural(data, "--checkpoint-dir", str(checkpoints))) == 0
    state = torch.load(checkpoints / "last.pt")
    del state["metadata"]
    torch.save(state, checkpoints / "last.pt")
    assert main(_neural(data, "--resume", str(checkpoints / "last.pt"), "--epochs", "2")) == 0


def test_a_checkpoint_of_another_shape_is_refused_naming_the_mismatched_keys(data, tmp_path):
    trainer = Trainer(NeuralODE(2, width=8, depth=1), data, epochs=1)
    path = trainer.save_checkpoint(tmp_path / "last.pt")
    wider = Trainer(NeuralODE(2, width=16, depth=1), data, epochs=1)
    with pytest.raises(physode.InvalidArgumentError, match="size mismatch for net.net.0.weight"):
        wider.load_checkpoint(path)


def test_trainer_metadata_is_saved_restored_and_compared(data, tmp_path):
    trainer = Trainer(NeuralODE(2, width=8, depth=1), data, epochs=1)
    trainer.metadata = {"built_by": "me"}
    path = trainer.save_checkpoint(tmp_path / "last.pt")
    plain = Trainer(NeuralODE(2, width=8, depth=1), data, epochs=1)
    plain.load_checkpoint(path)  # a trainer without metadata does not compare them
    assert plain.metadata == {"built_by": "me"}
    other = Trainer(NeuralODE(2, width=8, depth=1), data, epochs=1)
    other.metadata = {"built_by": "you"}
    with pytest.raises(physode.InvalidArgumentError, match="built_by: 'me' -> 'you'"):
        other.load_checkpoint(path)


# ------------------------------------------------------------------ saving before evaluating


def _failing_rollout(self, *args, **kwargs):
    raise physode.SolverError(
        "max_steps=100000 step attempts reached at t=7.5 with step size 1e-05. The problem may "
        "be stiff or the tolerances too tight: raise max_steps (e.g. max_steps=1000000)",
        status=physode.Status.MAX_STEPS, t=7.5, step_size=1e-5,
    )


def test_a_failed_evaluation_keeps_the_trained_model_and_says_what_to_try(
    data, tmp_path, capsys, monkeypatch
):
    monkeypatch.setattr(Trainer, "evaluate", _failing_rollout)
    out, log = tmp_path / "run", tmp_path / "log.csv"
    assert main(_neural(data, "--out", str(out), "--log", str(log), "--t-end", "8")) == 2
    err = _error(capsys)
    assert f"training finished and {out / 'model.pt'} was saved" in err
    assert "rollout of the test trajectories to t_end=8 failed" in err
    assert "reached at t=7.5" in err and "--t-end" in err and "max_steps=1000000" not in err
    assert sorted(p.name for p in out.iterdir()) == ["model.pt"] and log.exists()
    torch.load(out / "model.pt")


def test_a_failed_evaluation_leaves_no_earlier_report_beside_the_new_model(
    data, tmp_path, capsys, monkeypatch
):
    # The earlier run's report.json stayed beside this run's model.pt, and --init-from, which
    # reads the model settings there, refused the new weights for the old run's width.
    out = tmp_path / "run"
    assert main(_neural(data, "--width", "16", "--out", str(out))) == 0
    monkeypatch.setattr(Trainer, "evaluate", _failing_rollout)
    assert main(_neural(data, "--out", str(out))) == 2  # --width 8
    capsys.readouterr()
    assert sorted(p.name for p in out.iterdir()) == ["model.pt"]
    monkeypatch.undo()
    assert main(_neural(data, "--init-from", str(out / "model.pt"))) == 0, capsys.readouterr()


class _ClosedPipe:
    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self) -> None:
        raise BrokenPipeError(32, "Broken pipe")


def test_a_closed_standard_output_keeps_model_and_report(data, tmp_path, monkeypatch):
    out = tmp_path / "run"
    argv = [a for a in _neural(data, "--out", str(out)) if a != "--quiet"]
    monkeypatch.setattr(sys, "stdout", _ClosedPipe())
    args = physode.cli.build_parser().parse_args(argv)
    with pytest.raises(BrokenPipeError):
        args.func(args)
    assert sorted(p.name for p in out.iterdir()) == ["model.pt", "report.json"]


# ------------------------------------------------------------------ [report] types


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('quiet = "no"', "quiet = 'no' must be true or false"),
        ("resume = 3", "resume = 3 must be a string (a checkpoint file) or true (--resume)"),
        ('t_end = "ten"', "t_end = 'ten' must be a number"),
        ("t_end = true", "t_end = True must be a number"),
        ("out = 5", "out = 5 must be a string (a folder)"),
    ],
)
def test_a_report_setting_of_the_wrong_type_is_refused_by_name(data, tmp_path, capsys, line,
                                                               message):  # fmt: skip
    config = tmp_path / "run.toml"
    config.write_text(f'data = "{data}"\n[model]\nkind = "neural"\n[report]\n{line}\n')
    log = tmp_path / "log.csv"
    assert main(["train", "--config", str(config), "--epochs", "1", "--log", str(log)]) == 2
    err = _error(capsys)
    assert f"[report]: {message}" in err
    assert not log.exists()  # refused before training


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # Each ended as an internal error (status 3) with a traceback.
        ("data = 3", "data = 3 must be a string (the data set's path)"),
        ("[model]\ninit = 3", "[model] init = 3 must be a table of start values"),
        ('[model]\ninit = ["k"]', "[model] init = ['k'] must be a table of start values"),
        # Read as the parameter names k, = and 1.
        ('[model]\ninit = "k=1"', "[model] init = 'k=1' must be a table of start values"),
    ],
)
def test_a_config_data_or_init_of_the_wrong_type_is_refused_by_name(
    data, tmp_path, capsys, text, message
):
    config = tmp_path / "run.toml"
    config.write_text(text + '\nkind = "physics"\nlearnable = ["k"]\n' if "[model]" in text
                      else text + "\n")  # fmt: skip
    argv = ["train", "--config", str(config), "--epochs", "1", "--window", "5", "--quiet"]
    if "data" not in text:
        argv.insert(1, str(data))
    assert main(argv) == 2
    assert f"{config}: {message}" in _error(capsys)


# ------------------------------------------------------------------ progress bar


class _Bar:
    """Stands in for tqdm: records the postfix each epoch's update shows."""

    made: list[_Bar] = []

    def __init__(self, *args, **kwargs) -> None:
        self.postfix: dict | None = None
        self.shown: list[dict | None] = []
        _Bar.made.append(self)

    def set_postfix(self, postfix, refresh=True) -> None:
        self.postfix = dict(postfix)

    def update(self, n=1) -> None:
        self.shown.append(self.postfix)

    def close(self) -> None:
        pass


@pytest.mark.parametrize(("terminal", "quiet", "bar"), [
    (True, False, True), (False, False, False), (True, True, False),
])  # fmt: skip
def test_the_progress_bar_shows_only_on_a_terminal_and_not_quiet(
    data, tmp_path, monkeypatch, capsys, terminal, quiet, bar
):
    import tqdm.auto

    monkeypatch.setattr(tqdm.auto, "tqdm", _Bar)
    monkeypatch.setattr(_Bar, "made", [])
    monkeypatch.setattr(sys.stderr, "isatty", lambda: terminal)
    argv = [a for a in _neural(data, "--epochs", "2") if quiet or a != "--quiet"]
    assert main(argv) == 0
    assert len(_Bar.made) == bar


def test_each_epochs_update_shows_that_epochs_loss(data, tmp_path, monkeypatch):
    import tqdm.auto

    monkeypatch.setattr(tqdm.auto, "tqdm", _Bar)
    monkeypatch.setattr(_Bar, "made", [])
    log = tmp_path / "log.json"
    config = _progress(tmp_path)
    assert main(_neural(data, "--epochs", "2", "--log", str(log), "--config", config)) == 0
    history = json.loads(log.read_text())
    (bar,) = _Bar.made
    assert [shown["loss"] for shown in bar.shown] == [f"{row['loss']:.3g}" for row in history]


def _progress(tmp_path: Path) -> str:
    config = tmp_path / "progress.toml"
    config.write_text("[train]\nprogress = true\n")
    return str(config)


# ------------------------------------------------------------------ settings that do not apply


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "neural", "--system", "pendulumm"],
         "do not apply to a neural model: --system (applies to physics and hybrid models)"),
        (["--model", "hybrid", "--aphynity-tau", "100"],
         "--aphynity-tau (applies to hybrid models with --aphynity)"),
        (["--model", "neural", "--aphynity"], "--aphynity (applies to hybrid models)"),
        (["--model", "hybrid", "--aphynity-update", "epoch"],
         "--aphynity-update (applies to hybrid models with --aphynity)"),
        (["--model", "physics", "--learnable", "k", "--width", "8", "--activation", "relu"],
         "--width (applies to neural, hybrid and hnn models), --activation (applies to neural"),
        (["--model", "hybrid", "--system", "pendulumm"],
         "unknown system 'pendulumm' (did you mean 'pendulum'?); valid names: damped_oscillator"),
        # A system of another state size, said before training rather than at the first solve
        # as "y has shape (.., 2); kepler needs (..., 4)".
        (["--model", "physics", "--system", "kepler", "--learnable", "mu"],
         "--system kepler: kepler has 4 state components (x, y, px, py), but the data hold 2; "
         "choose a system with the data's states, or leave --system out to use the data set's "
         "own (harmonic_oscillator, with 2)"),
        (["--model", "hybrid", "--system", "kepler"], "--system kepler: kepler has 4 state "),
    ],
)  # fmt: skip
def test_a_setting_the_model_would_ignore_or_a_misspelt_system_is_refused(
    data, tmp_path, capsys, argv, message
):
    log = tmp_path / "log.csv"
    assert main(_train(data, *argv, "--log", str(log))) == 2
    assert message in _error(capsys)
    assert not log.exists()


def test_a_config_setting_that_does_not_apply_is_named_as_written(data, tmp_path, capsys):
    config = tmp_path / "run.toml"
    config.write_text('[model]\nkind = "hybrid"\nwidth = 8\nlearnable = ["k"]\n')
    assert main(_train(data, "--config", str(config), "--model", "physics")) == 2
    assert "physics model: [model] width (applies to neural, hybrid and hnn" in _error(capsys)


def _help_examples() -> list[list[str]]:
    """The commands of `physode train --help`'s examples, each as its arguments after `physode`,
    without the comments; those that leave settings out (`...`) are left out."""
    block = EXAMPLES.split("examples:\n")[1].split("\n\n")[0]
    lines = re.split(r"(?<!\\)\n", block)
    commands = [shlex.split(line.replace("\\\n", " "), comments=True) for line in lines]
    return [c[1:] for c in commands if c and "..." not in c]


def test_the_help_examples_parse_and_their_settings_apply_to_their_model():
    examples = _help_examples()
    assert len(examples) >= 6
    parser = argparse.ArgumentParser(prog="physode")
    add_train_parser(parser.add_subparsers())
    for argv in examples:
        assert argv[0] == "train"
        args = parser.parse_args(argv)
        if "config" not in args:  # (the file is the user's: only the flags can be checked)
            _, model, _, _ = _settings(args)
            _check_applicable(model)


def test_the_help_examples_keep_their_lines_as_written():
    # The `\` that continues an example on the next line must reach the help: written alone at
    # the end of a line of the (not raw) string, it joins the two lines into one, with a gap of
    # spaces before the option that should start the next line.
    block = EXAMPLES.split("examples:\n")[1].split("\n\n")[0]
    for line in block.splitlines():
        command = line.split("#")[0].rstrip()
        assert not re.search(r"\S {2,}-", command), line
        assert len(line) <= 100, line


def test_the_help_shows_physics_first_then_a_residual_as_training_md_runs_it():
    # The hybrid that training.md's tested commands (tests/test_docs_examples.py) start from a
    # physics fit: the example gives a subset of that command's settings, with the same values.
    text = (Path(__file__).resolve().parents[1] / "docs" / "training.md").read_text()
    block = re.search(r"with a physics that is only part of the truth.*?```bash\n(.*?)```", text,
                      re.S).group(1)  # fmt: skip
    lines = re.split(r"(?<!\\)\n", block.strip())
    docs = [shlex.split(line.replace("\\\n", " ")) for line in lines]
    assert [c[:3] for c in docs[1:]] == [["physode", "train", "osc.h5"]] * 2
    parser = argparse.ArgumentParser(prog="physode")
    add_train_parser(parser.add_subparsers())
    tested = vars(parser.parse_args(docs[-1][1:]))
    (example,) = [argv for argv in _help_examples() if "--init-from" in argv]
    given = vars(parser.parse_args(example))
    assert given["kind"] == "hybrid" and given["init_from"] == "fit/model.pt"
    assert {key: tested.get(key) for key in given} == given
    # And the fit it starts from is the docs' physics run, into fit/.
    assert tested["init_from"] == f"{vars(parser.parse_args(docs[1][1:]))['out']}/model.pt"


def test_a_physics_model_builds_no_network():
    settings = {**_MODEL_DEFAULTS, "kind": "physics", "learnable": ["k"], "width": -1,
                "activation": "no such"}  # fmt: skip
    model = build_model(settings, physode.systems.load("harmonic_oscillator"), 2)
    assert isinstance(model, PhysicsModel)
    assert not any(isinstance(m, NeuralODE) for m in model.modules())


def test_aphynity_update_reaches_the_model():
    settings = {**_MODEL_DEFAULTS, "kind": "hybrid", "learnable": ["k"], "aphynity": True,
                "aphynity_update": "epoch"}  # fmt: skip
    model = build_model(settings, physode.systems.load("harmonic_oscillator"), 2)
    assert model.aphynity.update == "epoch"


# ------------------------------------------------------------------ --model hnn

HNN = ["--model", "hnn", "--width", "8", "--depth", "1"]


def test_an_hnn_trains_from_the_command_line_and_its_report_records_it(data, tmp_path):
    assert main(_train(data, *HNN, "--out", str(tmp_path))) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["model"] == {
        "kind": "hnn", "width": 8, "depth": 1, "activation": "tanh", "separable": False,
    }
    model = physode.models.HamiltonianNN(1, width=8, depth=1)
    model.load_state_dict(torch.load(tmp_path / "model.pt"))  # the learned H(q, p)
    assert report["rollout"]["mse"] is not None


def test_a_separable_hnn_trains_with_leapfrog(data, tmp_path):
    leapfrog = ["--separable", "--method", "leapfrog", "--step-size", "0.05", "--gradient",
                "disc-opt", "--out", str(tmp_path)]  # fmt: skip
    assert main(_train(data, *HNN, *leapfrog)) == 0
    assert json.loads((tmp_path / "report.json").read_text())["model"]["separable"] is True
    weights = torch.load(tmp_path / "model.pt")
    assert {k.split(".")[0] for k in weights} == {"kinetic", "potential"}


def test_an_hnn_run_resumes_and_warm_starts_another_with_its_settings_only(
    data, tmp_path, capsys
):
    checkpoints, fit = tmp_path / "ckpt", tmp_path / "fit"
    assert main(_train(data, *HNN, "--checkpoint-dir", str(checkpoints), "--out", str(fit))) == 0
    last = str(checkpoints / "last.pt")
    assert main(_train(data, *HNN, "--resume", last, "--epochs", "2", "--out", str(tmp_path))) == 0
    assert json.loads((tmp_path / "report.json").read_text())["epochs"] == 2
    capsys.readouterr()
    assert main(_train(data, *HNN, "--separable", "--resume", last, "--epochs", "3")) == 2
    assert "settings differ from the saved run (model.separable: False -> True)" in _error(capsys)
    init_from = ["--init-from", str(fit / "model.pt")]
    assert main(_train(data, *HNN, "--lr", "0.001", *init_from, "--out", str(tmp_path))) == 0
    warm_start = json.loads((tmp_path / "report.json").read_text())["warm_start"]
    assert warm_start == f"started the whole HamiltonianNN from {fit / 'model.pt'}"
    capsys.readouterr()
    assert main(_train(data, *HNN[:-1], "2", *init_from)) == 2
    assert "other settings (depth: 1 -> 2)" in _error(capsys)
    assert main(_train(data, *HNN[:-1], "1", "--model", "neural", *init_from)) == 2
    assert "other settings (kind: 'hnn' -> 'neural', separable: False -> None)" in _error(capsys)


def test_an_hnn_of_data_with_an_odd_state_size_is_refused(growth_spec, tmp_path, capsys):
    grown = tmp_path / "growth.h5"
    physode.data.simulate(growth_spec, trajectories=6, t_end=0.5, points=5, out=grown, seed=0,
                          split=(4 / 6, 1 / 6, 1 / 6), quiet=True)  # fmt: skip
    assert main(_train(grown, *HNN, "--out", str(tmp_path / "out"))) == 2
    assert (
        "an hnn model needs states [q, p] of even size, coordinates then their momenta, but "
        "the data hold 1 components (x); choose another --model"
    ) in _error(capsys)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "neural", "--separable"],
         "do not apply to a neural model: --separable (applies to hnn models)"),  # fmt: skip
        (["--model", "hnn", "--learnable", "k"],
         "do not apply to an hnn model: --learnable (applies to physics and hybrid models)"),
    ],
)
def test_settings_that_do_not_apply_to_an_hnn_or_only_to_it_are_refused(
    data, capsys, argv, message
):
    assert main(_train(data, *argv)) == 2
    assert message in _error(capsys)


def test_an_hnn_reads_its_settings_from_a_config(data, tmp_path):
    config = tmp_path / "run.toml"
    config.write_text(
        f'data = "{data}"\n[model]\nkind = "hnn"\nwidth = 8\ndepth = 1\nseparable = true\n'
        '[train]\nepochs = 1\nwindow = 5\n'
    )
    assert main(["train", "--config", str(config), "--quiet", "--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "report.json").read_text())["model"]
    assert (record["kind"], record["separable"]) == ("hnn", True)
    # separable = false asks for what every model does: no setting to refuse.
    config.write_text(
        f'data = "{data}"\n[model]\nkind = "neural"\nwidth = 8\nseparable = false\n'
        '[train]\nepochs = 1\nwindow = 5\n'
    )
    assert main(["train", "--config", str(config), "--quiet"]) == 0


# ------------------------------------------------------------------ per-trajectory parameters


@pytest.fixture(scope="module")
def sampled(tmp_path_factory):
    """Six harmonic oscillators, each with its own sampled m and k."""
    path = tmp_path_factory.mktemp("cli_train") / "sampled.h5"
    physode.data.simulate("harmonic_oscillator", trajectories=6, t_end=2.0, points=9, out=path,
                          seed=3, split=(4 / 6, 1 / 6, 1 / 6), params="sample",
                          quiet=True)  # fmt: skip
    return path


def test_learning_a_parameter_the_trajectories_vary_is_warned_about_in_one_line(sampled, capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the trainer's Python warning is not shown as well
        assert main(_train(sampled, "--model", "physics", "--learnable", "k")) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith("physode train: warning: the training trajectories were simulated "
                          "with different values of k (")  # fmt: skip
    assert "one value of it for all of them" in err and "m (" not in err


@pytest.mark.parametrize("learnable", ["k", "m,k"])
def test_learning_parameters_the_trajectories_share_gives_no_warning(data, capsys, learnable):
    assert main(_train(data, "--model", "physics", "--learnable", learnable)) == 0
    assert capsys.readouterr().err == ""


def test_a_learnable_parameter_the_equations_do_not_contain_is_one_warning_line(tmp_path, capsys):
    pendulum = tmp_path / "pendulum.h5"  # m cancels from the pendulum's equations of motion
    physode.data.simulate("pendulum", trajectories=6, t_end=1.0, points=5, out=pendulum, seed=1,
                          split=(4 / 6, 1 / 6, 1 / 6), quiet=True)  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said as a line of the command, not a Python warning
        assert main(_train(pendulum, "--model", "physics", "--learnable", "g,m")) == 0
    err = capsys.readouterr().err
    assert err == (
        "physode train: warning: pendulum: the learnable parameter 'm' does not appear in its "
        "equations of motion, so learning it changes nothing (its gradient is zero); it may "
        "still appear in the invariants. The parameters the equations contain: ['g', 'l']\n"
    )


# ------------------------------------------------------------------ Opt-Disc settings


def _train_settings(*argv: str) -> dict:
    """The [train] settings that ``physode train ARGV`` hands to TrainConfig."""
    parser = argparse.ArgumentParser(prog="physode")
    add_train_parser(parser.add_subparsers())
    return _settings(parser.parse_args(["train", "data.h5", *argv]))[2]


def _toml(tmp_path, text: str) -> str:
    path = tmp_path / "run.toml"
    path.write_text(f'data = "data.h5"\n[train]\n{text}\n')
    return str(path)


def test_opt_disc_flags_build_the_opt_disc_gradient_they_name():
    train = _train_settings(
        "--gradient", "opt-disc", "--opt-disc-restart", "--opt-disc-seminorm",
        "--opt-disc-rtol", "1e-9", "--opt-disc-atol", "1e-11", "--opt-disc-method", "tsit5",
    )
    expected = physode.OptDisc(method="tsit5", rtol=1e-9, atol=1e-11, restart=True, seminorm=True)
    assert isinstance(train["gradient"], physode.OptDisc)
    assert repr(train["gradient"]) == repr(expected)
    assert not any(key.startswith("opt_disc") for key in train)


def test_opt_disc_restart_steps_restarts_at_every_forward_step_from_a_flag_or_a_config(
    tmp_path, capsys
):
    flag = _train_settings("--gradient", "opt-disc", "--opt-disc-restart", "steps")
    config = _toml(tmp_path, 'gradient = "opt-disc"\nopt_disc_restart = "steps"')
    written = _train_settings("--config", config)
    assert flag["gradient"].restart == written["gradient"].restart == "steps"
    with pytest.raises(SystemExit):
        _train_settings("--gradient", "opt-disc", "--opt-disc-restart", "outputs")
    assert "--opt-disc-restart: takes no value or 'steps', got 'outputs'" in capsys.readouterr().err


def test_a_fixed_step_backward_method_takes_its_step_from_opt_disc_step_size():
    train = _train_settings(
        "--gradient", "opt-disc", "--opt-disc-method", "rk4", "--opt-disc-step-size", "0.01"
    )
    assert (train["gradient"].method, train["gradient"].step_size) == ("rk4", 0.01)


def test_opt_disc_without_settings_stays_the_plain_mode_name():
    assert _train_settings("--gradient", "opt-disc")["gradient"] == "opt-disc"


def test_a_toml_config_spells_opt_disc_settings_as_train_keys_and_flags_add_to_them(tmp_path):
    config = _toml(tmp_path, 'gradient = "opt-disc"\nopt_disc_rtol = 1e-9\nopt_disc_restart = true')
    gradient = _train_settings("--config", config, "--opt-disc-atol", "1e-12")["gradient"]
    assert (gradient.rtol, gradient.atol, gradient.restart) == (1e-9, 1e-12, True)


@pytest.mark.parametrize(
    ("argv", "config", "named"),
    [
        (["--opt-disc-restart"], None, "--opt-disc-restart applies to --gradient opt-disc only, "
         "but the gradient is 'aca' (the default)"),  # fmt: skip
        (["--gradient", "disc-opt", "--opt-disc-rtol", "1e-9", "--opt-disc-seminorm"], None,
         "--opt-disc-rtol, --opt-disc-seminorm apply to --gradient opt-disc only, but the "
         "gradient is 'disc-opt';"),  # fmt: skip
        ([], 'gradient = "aca"\nopt_disc_atol = 1e-9',
         "[train] opt_disc_atol applies to --gradient opt-disc only, but the gradient is 'aca';"),
        (["--gradient", "aca"], 'gradient = "opt-disc"\nopt_disc_restart = true',
         "[train] opt_disc_restart applies to --gradient opt-disc only"),
        (["--gradient", "opt-disc", "--opt-disc-rtol", "-1"], None,
         "--opt-disc-rtol: OptDisc: rtol must be positive and finite, got -1.0"),
        ([], 'gradient = "opt-disc"\nopt_disc_restart = "yes"',
         "[train] opt_disc_restart: OptDisc: restart must be True, False or 'steps' "
         "(restart at every forward step), got 'yes'"),
        ([], "opt_disc_rtl = 1e-9", "unknown [train] keys ['opt_disc_rtl']; valid: ["),
    ],
)
def test_opt_disc_settings_without_the_opt_disc_gradient_or_with_bad_values_are_refused(
    tmp_path, capsys, argv, config, named
):
    if config is not None:
        argv = ["--config", _toml(tmp_path, config), *argv]
    assert main(["train", "data.h5", *argv]) == 2
    err = _error(capsys)
    assert named in err, err
    if "unknown" in named:
        assert "'opt_disc_rtol'" in err and "'epochs'" in err


def test_an_opt_disc_switch_set_to_false_is_no_setting_to_refuse(tmp_path):
    config = _toml(tmp_path, 'gradient = "aca"\nopt_disc_restart = false')
    assert _train_settings("--config", config)["gradient"] == "aca"


def test_the_trainer_solves_with_the_configured_opt_disc_and_the_report_records_it(
    data, tmp_path, monkeypatch
):
    gradients = []
    solve = physode.solve

    def spy(*args, **kwargs):
        gradients.append(kwargs["gradient"])
        return solve(*args, **kwargs)

    monkeypatch.setattr(physode, "solve", spy)
    argv = ["--gradient", "opt-disc", "--opt-disc-restart", "--opt-disc-rtol", "1e-9",
            "--opt-disc-atol", "1e-11", "--out", str(tmp_path)]  # fmt: skip
    assert main(_neural(data, *argv)) == 0
    expected = repr(physode.OptDisc(rtol=1e-9, atol=1e-11, restart=True))
    assert gradients and all(repr(g) == expected for g in gradients)
    assert json.loads((tmp_path / "report.json").read_text())["config"]["gradient"] == expected


def test_a_resume_with_other_opt_disc_settings_is_refused_and_with_the_same_continues(
    data, tmp_path, capsys
):
    checkpoints = tmp_path / "ckpt"
    first = ["--gradient", "opt-disc", "--opt-disc-restart", "--opt-disc-rtol", "1e-9"]
    assert main(_neural(data, *first, "--checkpoint-dir", str(checkpoints))) == 0
    resume = ["--resume", str(checkpoints / "last.pt"), "--epochs", "2"]
    assert main(_neural(data, "--gradient", "opt-disc", "--opt-disc-rtol", "1e-9", *resume)) == 2
    err = _error(capsys)
    assert "settings differ from the saved run (gradient: 'OptDisc(" in err
    assert "restart=True" in err and "restart=False" in err
    assert main(_neural(data, *first, *resume)) == 0


@pytest.mark.parametrize(("terminal", "bar"), [(True, True), (False, False)])
def test_a_trainer_with_progress_auto_draws_its_bar_only_on_a_terminal(
    data, monkeypatch, terminal, bar
):
    import tqdm.auto

    monkeypatch.setattr(tqdm.auto, "tqdm", _Bar)
    monkeypatch.setattr(_Bar, "made", [])
    monkeypatch.setattr(sys.stderr, "isatty", lambda: terminal)
    model = NeuralODE(2, width=8, depth=1).double()
    Trainer(model, data, epochs=1, window=5, progress="auto").fit()
    assert len(_Bar.made) == bar


def test_progress_takes_true_false_or_auto():
    from physode.train import TrainConfig

    TrainConfig(progress="auto").validate()
    with pytest.raises(physode.InvalidArgumentError, match="progress='yes'.*'auto'"):
        TrainConfig(progress="yes").validate()


def test_warnings_given_before_an_interruption_are_still_said(capsys):
    from physode import PhysodeWarning
    from physode._terminal import warnings_as_lines

    with pytest.raises(KeyboardInterrupt):
        with warnings_as_lines("physode train"):
            warnings.warn("k differs between trajectories", PhysodeWarning, stacklevel=1)
            raise KeyboardInterrupt
    assert capsys.readouterr().err == "physode train: warning: k differs between trajectories\n"


def test_a_warning_repeated_inside_a_block_is_said_once(capsys):
    from physode import PhysodeWarning
    from physode._terminal import warnings_as_lines

    with warnings_as_lines("physode train"):
        for _ in range(3):  # as a solve warns again at every batch
            warnings.warn("rtol is too small", PhysodeWarning, stacklevel=1)
        warnings.warn("k differs between trajectories", PhysodeWarning, stacklevel=1)
    assert capsys.readouterr().err == (
        "physode train: warning: rtol is too small\n"
        "physode train: warning: k differs between trajectories\n"
    )


def test_an_rtol_below_float32_resolution_is_one_line_of_the_command_not_a_python_warning(
    data, capsys
):
    # Every batch's solve and the rollout's raise rtol to float32's resolution and warn; the
    # command used to let each through as Python shows a warning, with a file and a line, and
    # then said it twice, once for training and once for the rollout.
    with warnings.catch_warnings(record=True) as raw:
        warnings.simplefilter("always")
        assert main(_neural(data, "--epochs", "2", "--dtype", "float32", "--rtol", "1e-9")) == 0
    assert [str(w.message) for w in raw] == []
    lines = capsys.readouterr().err.splitlines()
    said = "physode train: warning: rtol=1e-09 is below the resolution of torch.float32"
    assert len(lines) == 1 and lines[0].startswith(said), lines
    assert lines[0].endswith("Solving with rtol=1.19e-07; for tighter tolerances use float64.")


def test_blocks_that_share_what_was_said_say_a_warning_once_and_others_anew(capsys):
    from physode import PhysodeWarning
    from physode._terminal import warnings_as_lines

    said: set = set()
    for message in ("rtol is too small", "rtol is too small", "k differs"):
        with warnings_as_lines("physode train", said):
            warnings.warn(message, PhysodeWarning, stacklevel=1)
    with warnings_as_lines("physode train"):  # a block of its own says it again
        warnings.warn("k differs", PhysodeWarning, stacklevel=1)
    assert capsys.readouterr().err == (
        "physode train: warning: rtol is too small\n"
        "physode train: warning: k differs\n"
        "physode train: warning: k differs\n"
    )


def test_a_bad_setting_is_named_as_the_command_line_spells_it(data, capsys):
    assert main(_train(data, "--epochs", "0")) == 2
    err = capsys.readouterr().err
    assert err.startswith("physode train: error: bad training settings: --epochs 0 (need ")


def test_a_step_size_for_an_adaptive_method_is_refused_before_training_as_typed(
    data, tmp_path, capsys
):
    # It was refused by the first training solve, after the checkpoint folder was made, in
    # Python's spelling and advising a first_step that physode train does not take.
    folder = tmp_path / "ck"
    assert main(_train(data, "--step-size", "0.1", "--checkpoint-dir", str(folder))) == 2
    assert _error(capsys) == (
        "physode train: error: bad training settings: --step-size 0.1 is for fixed-step "
        "methods (euler, midpoint, rk4, leapfrog, yoshida4); method='dopri5' chooses its own "
        "steps from rtol and atol: leave it out, or choose a fixed-step method\n"
    )
    assert not folder.exists()


@pytest.mark.parametrize("flag, expected", [("--no-restore-best", False), ("--restore-best", True)])
def test_restore_best_is_a_flag_both_ways(data, tmp_path, flag, expected):
    # A per-trajectory model's validation picks weights by the mean of its learned values; the
    # command line can keep the last epoch's fit without a config file.
    assert main(_neural(data, "--epochs", "2", flag, "--out", str(tmp_path))) == 0
    assert json.loads((tmp_path / "report.json").read_text())["config"]["restore_best"] is expected


def test_restore_best_on_the_command_line_overrides_the_config(data, tmp_path):
    config = tmp_path / "run.toml"
    config.write_text("[train]\nrestore_best = true\n")
    argv = ["--config", str(config), "--no-restore-best", "--out", str(tmp_path / "o")]
    assert main(_neural(data, *argv)) == 0
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["config"]["restore_best"] is False


def test_a_system_with_the_data_sets_states_in_another_order_is_refused(data, tmp_path, capsys):
    spec = tmp_path / "reversed.toml"
    spec.write_text(
        'name = "reversed"\nform = "equations"\n[equations]\np = "-k*q"\nq = "p/m"\n'
        "[parameters]\nm = 1.0\nk = 1.0\n"
    )
    argv = ["--model", "physics", "--system", str(spec), "--learnable", "k"]
    assert main(_train(data, *argv, "--out", str(tmp_path / "run"))) == 2
    assert "the same ones in the order ['q', 'p']" in _error(capsys)
    assert not (tmp_path / "run").exists()


def test_a_csv_file_is_refused_with_the_way_to_train_on_it_from_python(tmp_path, capsys):
    # It said only that the file is not an HDF5 file.
    path = tmp_path / "counts.csv"
    path.write_text("t,x,y\n0,1,2\n1,2,3\n")
    assert main(_train(path, "--out", str(tmp_path / "run"))) == 2
    error = _error(capsys)
    assert "counts.csv is not an HDF5 file (no HDF5 signature at its start); physode " in error
    hint = "physode.data.load_csv(path) and pass them to physode.train.Trainer (see docs/data.md"
    assert hint in error and error.endswith('"Real data")\n')
    assert not (tmp_path / "run").exists()
    # A missing file is refused as before, without the hint.
    assert main(_train(tmp_path / "missing.csv")) == 2
    assert "missing.csv: no such file\n" in _error(capsys)


@pytest.mark.parametrize(
    "table, key, name",
    [("", "data", "osc.h5"), ("[model]", "system", "mine.toml"),
     ("[train]", "init_from", "model.pt")],
)  # fmt: skip
def test_a_config_path_found_only_beside_the_config_file_is_refused_naming_that_file(
    data, tmp_path, monkeypatch, capsys, table, key, name
):
    # Read from the current folder, as before; the error named the file missing there only.
    folder, elsewhere = tmp_path / "cfg", tmp_path / "elsewhere"
    folder.mkdir(), elsewhere.mkdir()
    (folder / "osc.h5").write_bytes(Path(data).read_bytes())
    (folder / "mine.toml").write_text(physode.systems.path("harmonic_oscillator").read_text())
    (folder / "model.pt").write_bytes(b"")
    values = {"data": str(data), "system": None, "init_from": None, key: name}
    config = f'data = "{values["data"]}"\n[model]\nkind = "physics"\nlearnable = ["k"]\n'
    config += f'system = "{values["system"]}"\n' if values["system"] else ""
    config += "[train]\nepochs = 1\n"
    config += f'init_from = "{values["init_from"]}"\n' if values["init_from"] else ""
    (folder / "run.toml").write_text(config)
    monkeypatch.chdir(elsewhere)
    assert main(["train", "--config", "../cfg/run.toml", "--quiet"]) == 2
    written = key if key == "data" else f"{table} {key}"
    assert (
        f"../cfg/run.toml: {written} = '{name}': no such file in the current folder ({elsewhere}), "
        f"which a config file's relative paths are read from; the config file's folder holds "
        f"'../cfg/{name}'"
    ) in _error(capsys)


# ------------------------------------------------------------------ --max-step


@pytest.mark.parametrize("where", ["flag", "config"])
def test_max_step_of_the_command_line_or_the_config_caps_every_solve_of_the_run(
    data, tmp_path, monkeypatch, where
):
    argv = _neural(data, "--out", str(tmp_path / "out"))
    if where == "flag":
        argv += ["--max-step", "0.05"]
    else:
        (tmp_path / "run.toml").write_text("[train]\nmax_step = 0.05\n")
        argv += ["--config", str(tmp_path / "run.toml")]
    calls = recorded_solves(monkeypatch)
    assert main(argv) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["config"]["max_step"] == 0.05
    # Training, validation and the report's rollouts: each at least its span over 0.05 steps.
    assert {c["grad"] for c in calls} == {True, False}
    assert all(c["max_step"] == 0.05 and c["steps"] >= c["span"] / 0.05 - 1e-6 for c in calls)


def test_max_step_with_a_fixed_step_method_or_changed_on_resume_is_refused(
    data, tmp_path, capsys
):
    assert main(_neural(data, "--method", "rk4", "--step-size", "0.1", "--max-step", "0.05")) == 2
    assert (
        "--max-step 0.05 is for adaptive methods (heun, bosh3, dopri5, tsit5, dop853); --method "
        "rk4 takes every step of step_size"
    ) in _error(capsys)
    assert main(_neural(data, "--checkpoint-dir", str(tmp_path / "ckpt"))) == 0
    resume = ["--epochs", "2", "--resume", str(tmp_path / "ckpt" / "last.pt")]
    assert main(_neural(data, *resume, "--max-step", "0.05")) == 2
    assert "settings differ from the saved run (max_step: None -> 0.05)" in _error(capsys)


@pytest.mark.parametrize("with_out", [True, False])
def test_ctrl_c_in_the_rollout_after_training_says_what_was_saved(
    data, tmp_path, capsys, monkeypatch, with_out
):
    # It said only "physode train: interrupted", though model.pt was already saved.
    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "evaluate", interrupted)
    out = tmp_path / "run"
    assert main(_neural(data, *(["--out", str(out)] if with_out else []))) == 130
    kept = f"{out / 'model.pt'} was saved" if with_out else "nothing was saved (--out DIR"
    err = capsys.readouterr().err
    assert err.startswith("physode train: interrupted after training, before the rollout ")
    assert kept in err and err.count("\n") == 1
    if with_out:
        assert sorted(p.name for p in out.iterdir()) == ["model.pt"]


@pytest.mark.parametrize("where", ["command line", "config"])
def test_a_log_that_names_the_report_out_writes_is_refused_before_training(
    data, tmp_path, capsys, monkeypatch, where
):
    # --log OUT/report.json was written while training, then silently replaced by the report.
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    if where == "config":
        config = tmp_path / "run.toml"
        config.write_text('[train]\nlog = "run/./report.json"\n[report]\nout = "run"\n')
        argv = _neural(data, "--config", str(config))
        named = "[train] log run/./report.json names the report.json that [report] out run"
    else:
        argv = _neural(data, "--out", str(out), "--log", "run/report.json")
        named = f"--log run/report.json names the report.json that --out {out}"
    assert main(argv) == 2
    err = _error(capsys)
    assert named in err and f"e.g. {out if where != 'config' else 'run'}/log.json" in err
    assert not out.exists()
