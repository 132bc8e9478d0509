"""What to do once training has diverged: start a new run from the last good weights with other
settings (``init_from``, ``--init-from``), and give the solves more steps (``max_steps``,
``--max-steps``)."""

from __future__ import annotations

import argparse
import inspect
import json
import re
from pathlib import Path

import pytest
import torch
from torch import nn

import physode
from physode.cli import main
from physode.models import Aphynity, Hybrid, NeuralODE, PhysicsModel
from physode.train import TrainConfig, Trainer, Trajectories

DTYPE = torch.float64


class Decay(nn.Module):
    """``dy/dt = -k y``."""

    autonomous = True

    def __init__(self) -> None:
        super().__init__()
        self.k = nn.Parameter(torch.tensor(0.5, dtype=DTYPE))

    def forward(self, t, y):
        return -self.k * y


def _data():
    """Four decays of rate 1.5, from 1, 2, 3 and 4."""
    t = torch.linspace(0, 2, 21, dtype=DTYPE)
    ys = torch.exp(-1.5 * t)[None, :, None] * torch.arange(1, 5, dtype=DTYPE)[:, None, None]
    return t, ys


def _trainer(model=None, **settings):
    settings = {"epochs": 3, "window": 5, "window_stride": 5, "batch_size": 2, "lr": 0.05,
                **settings}  # fmt: skip
    return Trainer(model or Decay(), _data(), **settings)


def _k(trainer: Trainer) -> float:
    return trainer.model.k.item()


# ------------------------------------------------------------------ init_from: a new run


@pytest.mark.parametrize("source", ["last.pt", "best.pt", "model.pt"])
def test_init_from_starts_a_new_run_from_the_files_weights_with_the_settings_given_now(
    source, tmp_path
):
    first = _trainer(val_fraction=0.25, checkpoint_dir=tmp_path, restore_best=False)
    first.fit()
    if source == "model.pt":  # what physode train --out saves: the state dict alone
        torch.save(first.model.state_dict(), tmp_path / "model.pt")
    saved = torch.load(tmp_path / source, weights_only=True)
    k = (saved["model"] if source != "model.pt" else saved)["k"].item()
    assert k != 0.5
    warm = _trainer(val_fraction=0.25, lr=0.01, init_from=tmp_path / source)
    assert warm.epoch == 0 and warm.history == [] and warm.optimizer.state_dict()["state"] == {}
    assert _k(warm) == k and warm.config.init_from == str(tmp_path / source)
    result = warm.fit()
    # The run is the one a fresh trainer makes from those weights with lr=0.01.
    fresh = _trainer(val_fraction=0.25, lr=0.01)
    with torch.no_grad():
        fresh.model.k.fill_(k)
    expected = fresh.fit()
    assert [r["epoch"] for r in result.history] == [1, 2, 3]
    assert [r["lr"] for r in result.history] == [0.01] * 3
    assert [r["loss"] for r in result.history] == [r["loss"] for r in expected.history]
    assert _k(warm) == _k(fresh)


def test_a_warm_started_run_records_its_source_and_resumes_without_init_from(tmp_path):
    first = _trainer(checkpoint_dir=tmp_path / "a")
    first.fit()
    source = tmp_path / "a" / "last.pt"
    warm = _trainer(lr=0.01, init_from=source, checkpoint_dir=tmp_path / "b")
    warm.fit(epochs=2)
    saved = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    assert saved["config"]["init_from"] == str(source) and saved["epoch"] == 2
    # Resumed on a trainer built without init_from: the run's source is kept.
    resumed = _trainer(lr=0.01, checkpoint_dir=tmp_path / "b")
    resumed.load_checkpoint(tmp_path / "b" / "last.pt")
    assert resumed.config.init_from == str(source) and resumed.epoch == 2
    # And what the source's weights started, which its own checkpoints keep in turn.
    assert resumed.warm_start == warm.warm_start == f"started the whole Decay from {source}"
    resumed.fit()
    saved = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    assert saved["epoch"] == 3 and saved["warm_start"] == warm.warm_start
    whole = _trainer(lr=0.01, init_from=source)
    whole.fit()
    assert _k(resumed) == _k(whole)


def test_a_warm_started_trainer_refuses_to_resume_a_checkpoint(tmp_path):
    first = _trainer(checkpoint_dir=tmp_path)
    first.fit()
    warm = _trainer(init_from=tmp_path / "last.pt")
    refused = r"cannot resume .*last\.pt: this trainer starts a new run from the weights of "
    with pytest.raises(physode.InvalidArgumentError, match=refused + r".*\(init_from\)"):
        warm.load_checkpoint(tmp_path / "last.pt")


def test_load_weights_refuses_a_trainer_that_has_trained_or_resumed(tmp_path):
    first = _trainer(checkpoint_dir=tmp_path)
    first.fit()
    with pytest.raises(physode.InvalidArgumentError, match="has done 3 epochs, and "
                       "load_weights \\(init_from\\) starts a new run"):  # fmt: skip
        first.load_weights(tmp_path / "last.pt")
    resumed = _trainer()
    resumed.load_checkpoint(tmp_path / "last.pt")
    with pytest.raises(physode.InvalidArgumentError, match="continue this run with "
                       "load_checkpoint"):  # fmt: skip
        resumed.load_weights(tmp_path / "last.pt")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, r"init_from .*nothing\.pt: no such file"),
        ("truncated", r"is not a physode training checkpoint \(last\.pt, best\.pt\) or "
         r"a model's state dict \(model\.pt\), or it is truncated or damaged"),
        ({"lr": 0.1}, r"is neither a physode training checkpoint \(last\.pt, best\.pt\) nor a "
         r"model's state dict \(physode train --out's model\.pt\): it holds a dict with keys "
         r"'lr', not tensors by name"),
        ([torch.zeros(2)], r"it holds a list, not tensors by name"),
        ({"format": "physode-checkpoint", "version": 1}, r"is a damaged physode checkpoint"),
    ],
)
def test_init_from_refuses_a_file_that_holds_no_weights(content, message, tmp_path):
    path = tmp_path / "nothing.pt"
    if content == "truncated":
        torch.save(Decay().state_dict(), path)
        path.write_bytes(path.read_bytes()[:200])
    elif content is not None:
        torch.save(content, path)
    with pytest.raises(physode.InvalidArgumentError, match=message):
        _trainer(init_from=path)


def test_init_from_refuses_weights_of_another_architecture_naming_the_keys(tmp_path):
    t = torch.linspace(0, 1, 11, dtype=DTYPE)
    data = (t, torch.stack([torch.exp(-t), torch.exp(-2 * t)], -1))
    torch.save(NeuralODE(2, width=8, depth=1).state_dict(), tmp_path / "narrow.pt")
    with pytest.raises(physode.InvalidArgumentError) as caught:
        Trainer(NeuralODE(2, width=16, depth=1), data, init_from=tmp_path / "narrow.pt")
    message = str(caught.value)
    assert "do not fit this trainer's NeuralODE (of another shape (the file's -> the " in message
    assert "net.net.0.weight (8, 2) -> (16, 2), net.net.0.bias (8,) -> (16,)" in message
    # Another model altogether: the names that are missing and those that are extra.
    torch.save(Decay().state_dict(), tmp_path / "decay.pt")
    with pytest.raises(physode.InvalidArgumentError) as caught:
        Trainer(NeuralODE(2, width=8, depth=1), data, init_from=tmp_path / "decay.pt")
    message = str(caught.value)
    assert "missing from the file: net.net.0.weight, net.net.0.bias" in message
    assert "in the file, not in the model: k)" in message
    # A physics model of another system: its parameters have other names.
    pendulum = physode.systems.load("pendulum")
    oscillator = physode.systems.load("harmonic_oscillator")
    torch.save(PhysicsModel(pendulum, ["g"]).state_dict(), tmp_path / "pendulum.pt")
    with pytest.raises(physode.InvalidArgumentError, match="in the file, not in the model: "
                       "field.g"):  # fmt: skip
        Trainer(PhysicsModel(oscillator, ["k"]), data, init_from=tmp_path / "pendulum.pt")


def test_init_from_refuses_a_per_trajectory_table_of_another_size(tmp_path):
    pendulum = physode.systems.load("pendulum")
    t = torch.linspace(0, 1, 5, dtype=DTYPE)

    def trainer(n, **settings):
        data = Trajectories(t, torch.zeros(n, 5, 2, dtype=DTYPE), system=pendulum)
        return Trainer(PhysicsModel(pendulum, per_trajectory=["l"]), data, **settings)

    four = trainer(4)
    with torch.no_grad():
        four.model.trajectory_values.copy_(torch.tensor([[0.5], [0.8], [1.2], [1.6]], dtype=DTYPE))
    path = four.save_checkpoint(tmp_path / "four.pt")
    with pytest.raises(physode.InvalidArgumentError, match=r"cannot start from .*four\.pt: the "
                       r"saved run learned \['l'\] per trajectory for 4 training trajectories, "
                       r"and this trainer's training data hold 3"):  # fmt: skip
        trainer(3, init_from=path)
    again = trainer(4, init_from=path)
    assert again.model.trajectory_values.flatten().tolist() == [0.5, 0.8, 1.2, 1.6]


# ------------------------------------------------------------------ init_from: physics, hybrid


def _oscillations(n: int = 4) -> Trajectories:
    """``n`` oscillators of stiffness 2 (the system's default is 1)."""
    oscillator = physode.systems.load("harmonic_oscillator")
    t = torch.linspace(0, 2, 11, dtype=DTYPE)
    y0 = torch.tensor([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0], [-1.0, 0.3]], dtype=DTYPE)[:n]
    p = torch.tensor([1.0, 2.0], dtype=DTYPE)
    ys = physode.odeint(lambda s, y: oscillator.rhs(s, y, p), y0, t)
    return Trajectories(t, ys.transpose(0, 1), system=oscillator)


def _hybrid(system="harmonic_oscillator", learnable=("k",), aphynity=None, **physics):
    torch.manual_seed(7)  # the same residual's weights each time
    return Hybrid(PhysicsModel(system, list(learnable), **physics),
                  NeuralODE(2, width=4, depth=1, zero_output=True), aphynity=aphynity)  # fmt: skip


@pytest.mark.parametrize("aphynity", [None, Aphynity(lambda_init=2.0, tau=0.5)])
@pytest.mark.parametrize("source", ["last.pt", "model.pt"])
def test_init_from_starts_a_hybrids_physics_part_from_a_physics_models_weights(
    aphynity, source, tmp_path
):
    fit = Trainer(PhysicsModel("harmonic_oscillator", ["k"]), _oscillations(), epochs=2,
                  window=5, lr=0.1, checkpoint_dir=tmp_path)  # fmt: skip
    fit.fit()
    torch.save(fit.model.state_dict(), tmp_path / "model.pt")
    k = fit.model.physical_parameters()["k"]
    assert k != 1.0
    path = tmp_path / source
    warm = Trainer(_hybrid(aphynity=aphynity), _oscillations(), epochs=1, window=5,
                   init_from=path)  # fmt: skip
    assert warm.model.physics.physical_parameters() == {"k": k}
    assert warm.model.physics.field.m.item() == 1.0
    fresh = _hybrid(aphynity=aphynity)  # the residual as built, λ at its start
    residual = warm.model.residual.state_dict()
    assert all(torch.equal(v, residual[n]) for n, v in fresh.residual.state_dict().items())
    torch.testing.assert_close(warm.model.aphynity_lambda, fresh.aphynity_lambda, rtol=0, atol=0,
                               equal_nan=True)  # fmt: skip
    said = f"started the physics part (m, k) from {path}; the residual starts fresh"
    if aphynity is not None:
        said += ", and APHYNITY's λ at 2"
    assert warm.warm_start == said and warm.config.init_from == str(path)
    assert warm.epoch == 0 and warm.optimizer.state_dict()["state"] == {}
    warm.fit()
    assert len(warm.history) == 1


@pytest.mark.parametrize("aphynity", [None, Aphynity(lambda_init=2.0)])
def test_init_from_starts_a_physics_model_from_a_hybrids_physics_part(aphynity, tmp_path):
    hybrid = Trainer(_hybrid(aphynity=aphynity), _oscillations(), epochs=1, window=5, lr=0.1)
    hybrid.fit()
    k = hybrid.model.physical_parameters()["k"]
    assert k != 1.0
    path = hybrid.save_checkpoint(tmp_path / "hybrid.pt")
    trainer = Trainer(PhysicsModel("harmonic_oscillator", ["k"]), _oscillations(), epochs=1,
                      window=5)  # fmt: skip
    said = trainer.load_weights(path)
    assert trainer.model.physical_parameters() == {"k": k}
    assert said == trainer.warm_start == (
        f"started the PhysicsModel (m, k) from the physics part of {path}; the rest of the "
        "file's model (aphynity_lambda, residual) was left out"
    )
    assert trainer.config.init_from == str(path)


def test_init_from_moves_a_per_trajectory_table_between_a_physics_model_and_a_hybrid(tmp_path):
    pendulum = physode.systems.load("pendulum")
    t = torch.linspace(0, 1, 5, dtype=DTYPE)

    def data(n):
        return Trajectories(t, torch.zeros(n, 5, 2, dtype=DTYPE), system=pendulum)

    four = Trainer(PhysicsModel(pendulum, per_trajectory=["l"]), data(4))
    table = torch.tensor([[0.5], [0.8], [1.2], [1.6]], dtype=DTYPE)
    with torch.no_grad():
        four.model.trajectory_values.copy_(table)
    path = four.save_checkpoint(tmp_path / "four.pt")
    warm = Trainer(_hybrid(pendulum, (), per_trajectory=["l"]), data(4), init_from=path)
    assert torch.equal(warm.model.physics.trajectory_values, table)
    assert warm.warm_start.startswith("started the physics part (m, g, l per trajectory) from ")
    with pytest.raises(physode.InvalidArgumentError, match=r"cannot start from .*four\.pt: the "
                       r"saved run learned \['l'\] per trajectory for 4 training trajectories, "
                       r"and this trainer's training data hold 3"):  # fmt: skip
        Trainer(_hybrid(pendulum, (), per_trajectory=["l"]), data(3), init_from=path)
    # And back: the hybrid's table starts a physics model's.
    back = warm.save_checkpoint(tmp_path / "hybrid.pt")
    again = Trainer(PhysicsModel(pendulum, per_trajectory=["l"]), data(4), init_from=back)
    assert torch.equal(again.model.trajectory_values, table)
    with pytest.raises(physode.InvalidArgumentError, match=r"for 4 training trajectories, and "
                       r"this trainer's training data hold 3"):  # fmt: skip
        Trainer(PhysicsModel(pendulum, per_trajectory=["l"]), data(3), init_from=back)
    # A table that the new model does not learn per trajectory does not fit.
    with pytest.raises(physode.InvalidArgumentError, match=r"Hybrid's physics part "
                       r"\(PhysicsModel\) \(in the file, not in the model: trajectory_values\)"):
        Trainer(_hybrid(pendulum, ("l",)), data(4), init_from=path)


def test_init_from_refuses_the_physics_of_another_system_between_physics_and_hybrid(tmp_path):
    torch.save(PhysicsModel("pendulum", ["g"]).state_dict(), tmp_path / "pendulum.pt")
    with pytest.raises(physode.InvalidArgumentError) as caught:
        Trainer(_hybrid(), _oscillations(), init_from=tmp_path / "pendulum.pt")
    assert (
        "they do not fit this trainer's Hybrid's physics part (PhysicsModel) (missing from the "
        "file: field.k; in the file, not in the model: field.g, field.l); build the model they "
        "were saved from (the same kind, system and network shape), or a physics model and a "
        "hybrid of the same system"
    ) in str(caught.value)
    torch.save(_hybrid("pendulum", ["g"]).state_dict(), tmp_path / "hybrid.pt")
    with pytest.raises(physode.InvalidArgumentError) as caught:
        Trainer(PhysicsModel("harmonic_oscillator", ["k"]), _oscillations(),
                init_from=tmp_path / "hybrid.pt")  # fmt: skip
    assert (
        "do not fit this trainer's PhysicsModel (compared with the physics part of the file's "
        "model) (missing from the file: field.k; in the file, not in the model: field.g, "
        "field.l)"
    ) in str(caught.value)
    # Neither a network's weights nor a hybrid's with another residual start a hybrid.
    torch.save(NeuralODE(2, width=4, depth=1).state_dict(), tmp_path / "neural.pt")
    with pytest.raises(physode.InvalidArgumentError, match=r"do not fit this trainer's Hybrid "
                       r"\(missing from the file: aphynity_lambda, physics.field.k, "):  # fmt: skip
        Trainer(_hybrid(), _oscillations(), init_from=tmp_path / "neural.pt")
    wide = Hybrid(PhysicsModel("harmonic_oscillator", ["k"]), NeuralODE(2, width=8, depth=1))
    torch.save(wide.state_dict(), tmp_path / "wide.pt")
    with pytest.raises(physode.InvalidArgumentError, match=r"Hybrid \(of another shape \(the "
                       r"file's -> the model's\): residual.net.net.0.weight \(8, 2\) -> "):
        Trainer(_hybrid(), _oscillations(), init_from=tmp_path / "wide.pt")


def test_init_from_must_be_a_path():
    with pytest.raises(physode.InvalidArgumentError, match=r"init_from=3 \(need a path, or "
                       r"None\)"):  # fmt: skip
        TrainConfig(init_from=3).validate()


# ------------------------------------------------------------------ max_steps


def test_max_steps_defaults_to_that_of_physode_solve():
    default = inspect.signature(physode.solve).parameters["max_steps"].default
    assert TrainConfig().max_steps == default


def test_max_steps_has_one_default_that_every_part_and_command_takes():
    from physode._defaults import MAX_STEPS
    from physode.cli import build_parser
    from physode.data import simulate
    from physode.train.evaluate import rollout_report

    for function in (physode.solve, simulate, rollout_report):
        assert inspect.signature(function).parameters["max_steps"].default == MAX_STEPS
    assert TrainConfig().max_steps == MAX_STEPS
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    for name in ("simulate", "train"):
        (action,) = [a for a in commands[name]._actions if a.dest == "max_steps"]
        assert f"(default {MAX_STEPS})" in action.help
        assert action.default in (MAX_STEPS, argparse.SUPPRESS)  # train: TrainConfig's
    # The number itself is written in physode/_defaults.py only.
    package = Path(physode.__file__).parent
    written = [
        path.relative_to(package).as_posix() for path in package.rglob("*.py")
        if re.search(r"(?<![\d.])100_?000(?![\d_])", path.read_text())  # not 0.10000000149
    ]
    assert written == ["_defaults.py"]


@pytest.mark.parametrize("value", [0, -5, 2.5, "many", None])
def test_max_steps_must_be_a_positive_integer(value):
    with pytest.raises(physode.InvalidArgumentError,
                       match=rf"max_steps={value!r} \(need an integer >= 1\)"):  # fmt: skip
        TrainConfig(max_steps=value).validate()


def test_max_steps_reaches_every_solve_of_training_validation_and_the_report(monkeypatch):
    calls = []
    solve, odeint = physode.solve, physode.odeint

    def spying(function, phase):
        def spy(*args, **kwargs):
            calls.append((phase[0], kwargs.get("max_steps")))
            return function(*args, **kwargs)

        return spy

    phase = ["train"]
    monkeypatch.setattr(physode, "solve", spying(solve, phase))
    monkeypatch.setattr(physode, "odeint", spying(odeint, phase))
    validation_loss = Trainer.validation_loss

    def validating(self):
        phase[0] = "validation"
        try:
            return validation_loss(self)
        finally:
            phase[0] = "train"

    monkeypatch.setattr(Trainer, "validation_loss", validating)
    trainer = _trainer(val_fraction=0.25, max_steps=4321, epochs=2)
    trainer.fit()
    phase[0] = "report"
    trainer.evaluate(conservation=False)
    assert {p for p, _ in calls} == {"train", "validation", "report"}
    assert {steps for _, steps in calls} == {4321}


def test_the_report_calibrates_with_max_steps(monkeypatch):
    pendulum = physode.systems.load("pendulum")
    t = torch.linspace(0, 1, 6, dtype=DTYPE)
    y0 = torch.tensor([[0.5, 0.0], [0.3, 0.0]], dtype=DTYPE)
    ys = physode.odeint(lambda s, y: pendulum.rhs(s, y, torch.tensor([1.0, 9.81, 1.0])), y0, t)
    data = Trajectories(t, ys.transpose(0, 1), system=pendulum)
    trainer = Trainer(PhysicsModel(pendulum, per_trajectory=["l"]), data, epochs=1,
                      max_steps=2)  # fmt: skip
    with pytest.raises(physode.SolverError, match=r"calibrating .* max_steps=2 step attempts"):
        trainer.evaluate(data, calibrate=True, conservation=False)


@pytest.mark.parametrize("step_control", ["shared", "per-sample"])
def test_a_batch_that_runs_out_of_steps_says_to_raise_max_steps(step_control):
    trainer = _trainer(max_steps=1, step_control=step_control)
    with pytest.raises(physode.TrainingError) as caught:
        trainer.fit()
    message = str(caught.value)
    assert "MAX_STEPS" in message or "max_steps=1 step attempts" in message
    assert "To get past it: a larger max_steps (now 1) where the model needs more steps" in message


def test_a_checkpoint_resumes_with_max_steps_changed(tmp_path):
    first = _trainer(checkpoint_dir=tmp_path, epochs=2)
    first.fit()
    resumed = _trainer(max_steps=1_000_000)
    resumed.load_checkpoint(tmp_path / "last.pt")
    resumed.fit()
    whole = _trainer()
    whole.fit()
    assert _k(resumed) == _k(whole)


def test_validation_out_of_steps_names_max_steps_in_its_warning(monkeypatch):
    trainer = _trainer(val_fraction=0.25, epochs=1)

    def out_of_steps(self):
        raise physode.SolverError("max_steps=100000 step attempts reached at t=0.3",
                                  status=physode.Status.MAX_STEPS, t=0.3, step_size=1e-3)

    monkeypatch.setattr(Trainer, "validation_loss", out_of_steps)
    with pytest.warns(physode.PhysodeWarning, match=r"\(max_steps=100000, a setting of "
                      r"training\); the epoch counts"):  # fmt: skip
        trainer.fit()


# ------------------------------------------------------------------ physode train


@pytest.fixture
def stored(oscillator_h5):
    """The shared small data set of six oscillators (conftest.py)."""
    return oscillator_h5


def _argv(stored, *more: str) -> list[str]:
    return ["train", str(stored), "--epochs", "2", "--window", "5", "--batch-size", "8",
            "--model", "neural", "--width", "8", "--depth", "1", "--quiet", *more]  # fmt: skip


def _error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("physode train: error: ") and err.count("\n") == 1, err
    return err


def test_physode_train_init_from_trains_anew_from_the_weights_and_reports_their_source(
    stored, tmp_path, capsys, monkeypatch
):
    assert main(_argv(stored, "--checkpoint-dir", str(tmp_path / "ck"))) == 0
    last = tmp_path / "ck" / "last.pt"
    saved = torch.load(last, weights_only=True)["model"]
    started = []
    fit = Trainer.fit

    def recording(self, *args, **kwargs):
        started.append((self.epoch, {k: v.clone() for k, v in self.model.state_dict().items()}))
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "fit", recording)
    toml = tmp_path / "run.toml"
    toml.write_text(f'[train]\ninit_from = "{last}"\nmax_steps = 54321\n')
    out = tmp_path / "run"
    argv = _argv(stored, "--config", str(toml), "--lr", "0.001", "--out", str(out), "--log",
                 str(tmp_path / "log.json"))  # fmt: skip
    assert main(argv) == 0
    epoch, weights = started[0]
    assert epoch == 0 and all(torch.equal(weights[k], saved[k]) for k in saved)
    report = json.loads((out / "report.json").read_text())
    assert report["config"]["init_from"] == str(last)
    assert report["config"]["max_steps"] == 54321 and report["config"]["lr"] == 0.001
    log = json.loads((tmp_path / "log.json").read_text())
    assert [row["epoch"] for row in log] == [1, 2]
    assert [row["lr"] for row in log] == [0.001, 0.001]


def test_a_run_resumed_from_a_checkpoint_that_does_not_say_what_it_started_names_the_file(
    tmp_path,
):
    first = _trainer(checkpoint_dir=tmp_path / "a", epochs=1)
    first.fit()
    source = tmp_path / "a" / "last.pt"
    _trainer(init_from=source, checkpoint_dir=tmp_path / "b").fit(epochs=1)
    saved = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    del saved["warm_start"]  # as physode wrote checkpoints before it kept it
    torch.save(saved, tmp_path / "older.pt")
    resumed = _trainer()
    resumed.load_checkpoint(tmp_path / "older.pt")
    assert resumed.warm_start == (
        f"started from the weights of {source} (which parts, this older checkpoint does not say)"
    )
    # A run that did not start from a file's weights still says nothing.
    plain = _trainer()
    plain.load_checkpoint(source)
    assert plain.warm_start is None and plain.config.init_from is None


def test_physode_train_refuses_init_from_with_resume(stored, tmp_path, capsys):
    argv = _argv(stored, "--init-from", str(tmp_path / "a.pt"), "--resume", str(tmp_path / "b.pt"))
    assert main(argv) == 2
    err = _error(capsys)
    assert f"--init-from {tmp_path / 'a.pt'} starts a new run from a file's weights, and " in err
    assert "--resume continues a saved run" in err


def test_physode_train_init_from_refuses_a_model_built_with_other_settings(
    stored, tmp_path, capsys
):
    # An activation changes no weight's shape: only the settings that built the model tell.
    assert main(_argv(stored, "--checkpoint-dir", str(tmp_path / "ck"), "--out",
                      str(tmp_path / "run"))) == 0  # fmt: skip
    last = tmp_path / "ck" / "last.pt"
    assert main(_argv(stored, "--init-from", str(last), "--activation", "relu")) == 2
    err = _error(capsys)
    assert (
        f"--init-from {last}: its weights were trained in a model built with other settings "
        "(activation: 'tanh' -> 'relu'); they fit that model only"
    ) in err
    # model.pt: the report.json beside it says how its model was built.
    model = tmp_path / "run" / "model.pt"
    argv = _argv(stored, "--init-from", str(model))
    argv[argv.index("--width") + 1] = "16"
    assert main([*argv, "--activation", "relu"]) == 2
    assert "(width: 8 -> 16, activation: 'tanh' -> 'relu')" in _error(capsys)
    # Without the report, the weights' shapes still tell.
    (tmp_path / "run" / "report.json").unlink()
    assert main(argv) == 2
    assert "net.net.0.weight (8, 2) -> (16, 2)" in _error(capsys)


def _interrupt_in_epoch_2(monkeypatch) -> None:
    """Make the next run stop with Ctrl-C in its second epoch, as a user's would."""
    evaluate = Trainer._evaluate

    def interrupted_in_epoch_2(self, *args):
        if self.epoch == 1:
            raise KeyboardInterrupt
        return evaluate(self, *args)

    monkeypatch.setattr(Trainer, "_evaluate", interrupted_in_epoch_2)


def test_physode_train_says_how_to_continue_a_warm_started_run(
    stored, tmp_path, capsys, monkeypatch
):
    assert main(_argv(stored, "--checkpoint-dir", str(tmp_path / "a"))) == 0
    source = tmp_path / "a" / "last.pt"
    _interrupt_in_epoch_2(monkeypatch)
    argv = _argv(stored, "--checkpoint-dir", str(tmp_path / "b"), "--init-from", str(source))
    assert main(argv) == 130
    last = tmp_path / "b" / "last.pt"
    assert capsys.readouterr().err == (
        f"physode train: interrupted during epoch 2; {last} holds the run after epoch 1: rerun "
        f"the same command without --init-from, with --resume {last} to continue it\n"
    )
    monkeypatch.undo()
    resumed = _argv(stored, "--checkpoint-dir", str(tmp_path / "b"), "--resume", str(last),
                    "--out", str(tmp_path / "b"))  # fmt: skip
    assert main(resumed) == 0
    report = json.loads((tmp_path / "b" / "report.json").read_text())
    assert report["config"]["init_from"] == str(source)
    # What those weights started, as the interrupted run said it (not null).
    assert report["warm_start"] == f"started the whole NeuralODE from {source}"


def test_physode_train_says_to_raise_max_steps_where_the_solves_ran_out(stored, capsys):
    assert main(_argv(stored, "--max-steps", "1")) == 2
    err = _error(capsys)
    assert "training stopped in epoch 1, batch 1 of " in err
    assert "(a larger --max-steps (now 1), a smaller --lr" in err
    assert main(_argv(stored, "--max-steps", "0")) == 2
    assert "bad training settings: --max-steps 0 (need an integer >= 1)" in _error(capsys)


def test_a_rollout_out_of_steps_says_to_raise_max_steps(stored, tmp_path, capsys, monkeypatch):
    def out_of_steps(self, *args, **kwargs):
        raise physode.SolverError(
            "max_steps=100 step attempts reached at t=1.5 with step size 0.001. The problem may "
            "be stiff: raise max_steps (e.g. max_steps=1000)",
            status=physode.Status.MAX_STEPS, t=1.5, step_size=1e-3,
        )

    monkeypatch.setattr(Trainer, "evaluate", out_of_steps)
    assert main(_argv(stored, "--max-steps", "100")) == 2
    err = _error(capsys)
    assert "a smaller --lr), or, where it needs more steps than that, a larger --max-steps " in err
    assert "(now 100)" in err and "max_steps=1000" not in err


def _kinds_argv(stored, kind: str, *more: str) -> list[str]:
    """A short run of a physics model or a hybrid of the oscillator, learning k."""
    network = ("--width", "8", "--depth", "1") if kind == "hybrid" else ()
    return ["train", str(stored), "--epochs", "2", "--window", "5", "--batch-size", "8",
            "--model", kind, "--learnable", "k", *network, *more]  # fmt: skip


@pytest.mark.parametrize(("first", "then"), [("physics", "hybrid"), ("hybrid", "physics")])
@pytest.mark.parametrize("source", ["model.pt", "last.pt"])
def test_physode_train_init_from_moves_the_physics_between_a_physics_model_and_a_hybrid(
    stored, tmp_path, capsys, monkeypatch, first, then, source
):
    argv = _kinds_argv(stored, first, "--quiet", "--out", str(tmp_path / "a"), "--checkpoint-dir",
                       str(tmp_path / "a"))  # fmt: skip
    assert main(argv) == 0
    path = tmp_path / "a" / source
    saved = torch.load(path, weights_only=True)
    saved = saved["model"] if source == "last.pt" else saved
    fitted = {"k": saved["field.k" if first == "physics" else "physics.field.k"].item()}
    started = []
    fit = Trainer.fit

    def recording(self, *args, **kwargs):
        started.append(self.model.physical_parameters())
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "fit", recording)
    capsys.readouterr()
    assert main(_kinds_argv(stored, then, "--init-from", str(path), "--out",
                            str(tmp_path / "b"))) == 0  # fmt: skip
    assert started == [fitted] and fitted["k"] != 1.0
    if then == "hybrid":
        said = f"started the physics part (m, k) from {path}; the residual starts fresh"
    else:
        said = (
            f"started the PhysicsModel (m, k) from the physics part of {path}; the rest of the "
            "file's model (aphynity_lambda, residual) was left out"
        )
    assert capsys.readouterr().err == f"physode train: {said}\n"
    report = json.loads((tmp_path / "b" / "report.json").read_text())
    assert report["warm_start"] == said and report["config"]["init_from"] == str(path)


def test_physode_train_init_from_between_kinds_compares_the_physics_settings_only(
    stored, tmp_path, capsys
):
    assert main(_kinds_argv(stored, "physics", "--quiet", "--per-trajectory", "k", "--out",
                            str(tmp_path / "a"))) == 0  # fmt: skip
    model = tmp_path / "a" / "model.pt"
    capsys.readouterr()  # its warning on the table and restore_best
    assert main(_kinds_argv(stored, "hybrid", "--quiet", "--init-from", str(model))) == 2
    assert (
        f"--init-from {model}: its physics part was trained in a physics model built with "
        "other settings (per_trajectory: ['k'] -> None); it starts the physics part of a "
        "hybrid model of the same --system and --per-trajectory only"
    ) in _error(capsys)
    # The network's settings and the learnable parameters are the new run's own.
    argv = _kinds_argv(stored, "hybrid", "--quiet", "--init-from", str(model), "--per-trajectory",
                       "k", "--learnable", "m,k", "--activation", "relu")  # fmt: skip
    assert main(argv) == 0


def test_physode_train_refuses_init_with_init_from_whose_file_replaces_its_values(
    stored, tmp_path, capsys
):
    # The file holds every physical parameter, learned or not, and replaced --init's start
    # values: --init m=2 trained from the fit's m = 1 while report.json recorded init m = 2.
    argv = _kinds_argv(stored, "physics", "--quiet", "--out", str(tmp_path / "a"))
    assert main(argv) == 0
    model = tmp_path / "a" / "model.pt"
    out = tmp_path / "b"
    for then in ("physics", "hybrid"):
        argv = _kinds_argv(stored, then, "--quiet", "--init-from", str(model), "--learnable",
                           "m,k", "--init", "m=2", "--out", str(out))  # fmt: skip
        assert main(argv) == 2
        assert (
            f"--init m=2 has no effect with --init-from {model}: the file holds every physical "
            "parameter's value, learned or not, and they replace --init's start values; leave "
            "--init out, or leave out --init-from to start from --init's values"
        ) in _error(capsys)
        assert not out.exists()
    toml = tmp_path / "run.toml"
    toml.write_text(f'[model]\ninit = {{ m = 2.0 }}\n[train]\ninit_from = "{model}"\n')
    argv = _kinds_argv(stored, "physics", "--quiet", "--learnable", "m,k", "--config", str(toml))
    assert main(argv) == 2
    err = _error(capsys)
    assert f'[model] init (m=2) has no effect with [train] init_from = "{model}"' in err
    assert "leave [model] init out" in err


def test_physode_train_reads_the_init_from_file_once(stored, tmp_path, monkeypatch):
    assert main(_argv(stored, "--checkpoint-dir", str(tmp_path))) == 0
    last = tmp_path / "last.pt"
    reads = []
    load = torch.load

    def counting(path, *args, **kwargs):
        reads.append(str(path))
        return load(path, *args, **kwargs)

    monkeypatch.setattr(torch, "load", counting)
    assert main(_argv(stored, "--init-from", str(last))) == 0
    assert reads.count(str(last)) == 1


def test_physode_train_names_init_from_as_the_config_file_wrote_it(
    stored, tmp_path, capsys, monkeypatch
):
    assert main(_argv(stored, "--checkpoint-dir", str(tmp_path / "a"))) == 0
    last = tmp_path / "a" / "last.pt"
    toml = tmp_path / "run.toml"

    def config(path) -> str:
        toml.write_text(f'[train]\ninit_from = "{path}"\n')
        return str(toml)

    assert main(_argv(stored, "--config", config(last), "--resume", str(last))) == 2
    err = _error(capsys)
    assert f'[train] init_from = "{last}" starts a new run from a file\'s weights' in err
    assert (
        "to continue a run that [train] init_from started, rerun its command without "
        "init_from in [train] of the config file, with --resume"
    ) in err
    assert "--init-from" not in err
    assert main(_argv(stored, "--config", config(tmp_path / "none.pt"))) == 2
    assert f'[train] init_from = "{tmp_path / "none.pt"}": no such file' in _error(capsys)
    assert main(_argv(stored, "--config", config(last), "--activation", "relu")) == 2
    assert f'[train] init_from = "{last}": its weights were trained in a model built' in _error(
        capsys
    )
    _interrupt_in_epoch_2(monkeypatch)
    argv = _argv(stored, "--config", config(last), "--checkpoint-dir", str(tmp_path / "b"))
    assert main(argv) == 130
    assert capsys.readouterr().err == (
        f"physode train: interrupted during epoch 2; {tmp_path / 'b' / 'last.pt'} holds the run "
        "after epoch 1: rerun the same command without init_from in [train] of the config "
        f"file, with --resume {tmp_path / 'b' / 'last.pt'} to continue it\n"
    )
    # The command line's --init-from is named as such.
    assert main(_argv(stored, "--init-from", str(tmp_path / "none.pt"))) == 2
    assert f"--init-from {tmp_path / 'none.pt'}: no such file" in _error(capsys)
