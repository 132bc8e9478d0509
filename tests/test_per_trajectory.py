"""Tests of parameters learned per trajectory: PhysicsModel(..., per_trajectory=[...]), its table
through the trainer, every gradient mode, checkpoints, the report and physode train."""

from __future__ import annotations

import json
import warnings
from typing import Any

import pytest
import torch
from _pendulums import swinging

import physode
import physode.data
import physode.systems
from physode.models import Hybrid, NeuralODE, PhysicsModel
from physode.train import Trainer, Trajectories, rollout_report
from physode.train.trainer import shared_parameters_warning

LENGTHS = [0.5, 0.8, 1.2, 1.6]


def damped(dampings: list[float], k: float = 1.5) -> Trajectories:
    """Damped oscillators with one spring constant k and their own damping c (m = 1)."""
    system = physode.systems.load("damped_oscillator")
    n = len(dampings)
    params = torch.tensor([[1.0, k, c] for c in dampings], dtype=torch.float64)
    y0 = torch.stack([torch.linspace(0.5, 1.0, n), torch.linspace(-0.5, 0.5, n)], -1).double()
    t = torch.linspace(0, 4, 11, dtype=torch.float64)
    ys = physode.odeint(lambda s, y: system.rhs(s, y, params), y0, t, rtol=1e-11, atol=1e-11)
    return Trajectories(t, ys.transpose(0, 1), params=params, system=system)


def fit(model, data, epochs: int = 14, **options) -> Any:
    # L-BFGS reaches its floor (a loss of 1e-20 or less) in 12 to 15 epochs on the tests' data
    # sets; the values asked for (to 1e-6) are reached by epoch 11.
    trainer = Trainer(model, data, epochs=epochs, optimizer="lbfgs", lr=1.0, rtol=1e-9,
                      atol=1e-11, **options)  # fmt: skip
    return trainer, trainer.fit()


# ---------------------------------------------------------------------- recovery


def test_each_pendulums_length_is_recovered_when_g_is_known():
    data = swinging(LENGTHS)
    model = PhysicsModel("pendulum", per_trajectory=["l"])  # g: the system's 9.81
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning: l is not shared
        trainer, result = fit(model, data)
    assert model.trajectory_values.shape == (4, 1)
    assert result.per_trajectory_parameters["l"] == pytest.approx(LENGTHS, rel=1e-6)
    assert result.physical_parameters == {}
    # The log follows the mean of the learned lengths.
    assert result.history[-1]["param_l_mean"] == pytest.approx(sum(LENGTHS) / 4, rel=1e-6)


def test_a_shared_and_a_per_trajectory_parameter_are_learned_together():
    # k is one value for all oscillators, c each one's own; m is known (stored).
    dampings = [0.05, 0.2, 0.35]
    model = PhysicsModel("damped_oscillator", learnable=["k"], per_trajectory=["c"],
                         init={"k": 1.0, "c": 0.1})  # fmt: skip
    _, result = fit(model, damped(dampings))
    assert result.physical_parameters["k"] == pytest.approx(1.5, rel=1e-6)
    assert result.per_trajectory_parameters["c"] == pytest.approx(dampings, rel=1e-5)


def test_a_hybrid_learns_its_physics_terms_per_trajectory_parameters():
    data = swinging(LENGTHS[:3])
    gradients = []
    for hybrid in (False, True):
        physics = PhysicsModel("pendulum", per_trajectory=["l"])
        residual = NeuralODE(2, width=4, depth=1, zero_output=True)  # zero: the physics alone
        model = Hybrid(physics, residual) if hybrid else physics
        trainer = Trainer(model, data, epochs=1, rtol=1e-10, atol=1e-12)
        assert model.per_trajectory == ["l"] and model.n_trajectories == 3
        trainer._evaluate(trainer._batches(trainer.train_windows, shuffle=False)[0], [])
        gradients.append(physics.trajectory_values.grad)
    assert torch.allclose(gradients[0], gradients[1], rtol=1e-9, atol=0)
    assert (gradients[1].abs() > 1e-3).all()
    assert model.per_trajectory_values() == {"l": [1.0, 1.0, 1.0]}
    assert model.held_out_parameters() == {"l": 1.0}


# ---------------------------------------------------------------------- gradients


def batch_gradient(gradient: Any, step_control: str) -> tuple:
    """Loss and gradients (g, the table) of one batch of three pendulums whose l is learned
    per trajectory and g shared, at values off the truth."""
    data = swinging(LENGTHS[:3], points=6, t_end=1.0)
    model = PhysicsModel("pendulum", ["g"], per_trajectory=["l"], init={"g": 8.0, "l": 1.0})
    trainer = Trainer(model, data, epochs=1, gradient=gradient, step_control=step_control,
                      rtol=1e-10, atol=1e-12)  # fmt: skip
    with torch.no_grad():
        model.trajectory_values.copy_(torch.tensor([[0.6], [0.9], [1.1]], dtype=torch.float64))
    loss = trainer._evaluate(trainer._batches(trainer.train_windows, shuffle=False)[0], [])
    return loss.item(), model.field.g.grad.item(), model.trajectory_values.grad.flatten()


def reference_gradient() -> tuple:
    """The same loss and gradients with each pendulum solved by a field of its own."""
    data = swinging(LENGTHS[:3], points=6, t_end=1.0)
    g = torch.tensor(8.0, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([0.6, 0.9, 1.1], dtype=torch.float64, requires_grad=True)
    losses = []
    for i in range(3):
        p = torch.stack([data.params[i, 0], g, lengths[i]])
        ys = physode.odeint(lambda s, y, p=p: data.system.rhs(s, y, p), data.states[i, 0],
                            data.t, rtol=1e-10, atol=1e-12, gradient="disc-opt")  # fmt: skip
        losses.append((ys[1:] - data.states[i, 1:]).pow(2))
    loss = torch.stack(losses).mean()
    loss.backward()
    return loss.item(), g.grad.item(), lengths.grad


@pytest.mark.parametrize(
    ("gradient", "step_control"),
    [
        ("disc-opt", "shared"),
        ("aca", "shared"),
        (physode.OptDisc(restart=True, rtol=1e-11, atol=1e-13), "shared"),
        (physode.OptDisc(restart="steps", rtol=1e-11, atol=1e-13), "shared"),
        ("disc-opt", "per-sample"),
        ("aca", "per-sample"),
    ],
)
def test_the_tables_gradient_agrees_in_every_mode(gradient, step_control):
    loss, g_grad, table_grad = batch_gradient(gradient, step_control)
    want_loss, want_g, want_table = reference_gradient()
    assert loss == pytest.approx(want_loss, rel=1e-6)
    assert g_grad == pytest.approx(want_g, rel=1e-6)
    assert table_grad.tolist() == pytest.approx(want_table.tolist(), rel=1e-6)
    assert (want_table.abs() > 1e-3).all()  # each row has a gradient of its own to check


# ---------------------------------------------------------------------- held out, report


def test_held_out_trajectories_are_rolled_out_with_the_mean_of_the_learned_values():
    model = PhysicsModel("pendulum", per_trajectory=["l"], n_trajectories=2)
    with torch.no_grad():
        model.trajectory_values.copy_(torch.tensor([[0.6], [1.4]], dtype=torch.float64))
    held_out = swinging([1.0, 0.7], points=11)
    report = rollout_report(model, held_out, rtol=1e-10, atol=1e-12, conservation=False)
    assert report.mse_per_trajectory[0] < 1e-14  # the mean, 1.0, is its own length
    assert report.mse_per_trajectory[1] > 1e-4  # its stored 0.7 is not used
    assert report.per_trajectory == {"l": {"held_out_value": 1.0, "learned": [0.6, 1.4]}}
    # The conservation of the rollouts is measured at the value they used.
    full = rollout_report(model, held_out, rtol=1e-10, atol=1e-12)
    assert float(full.conservation_model.invariants["energy"].max_rel_drift.max()) < 1e-7


def test_the_validation_loss_uses_the_mean_of_the_learned_values_and_says_what_it_chooses():
    train, val = swinging([0.5, 1.5]), swinging([1.0], points=21)
    model = PhysicsModel("pendulum", per_trajectory=["l"], n_trajectories=2)
    with torch.no_grad():
        model.trajectory_values.copy_(torch.tensor([[0.5], [1.5]], dtype=torch.float64))
    with pytest.warns(physode.PhysodeWarning, match=r"restore_best \(patience\) chooses the "
                      r"weights by it, table included. To keep the last epoch's fit, set "
                      r"restore_best=False"):  # fmt: skip
        trainer = Trainer(model, train, val_data=val, epochs=1, rtol=1e-10, atol=1e-12)
    assert trainer.validation_loss() < 1e-14  # mean 1.0: the validation pendulum's length
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing chosen by it: no warning
        Trainer(model, train, val_data=val, epochs=1, restore_best=False)


def test_the_report_lists_each_training_trajectorys_learned_value_beside_its_true_one():
    model = PhysicsModel("pendulum", per_trajectory=["l"])
    trainer = Trainer(model, swinging(LENGTHS), epochs=1)
    learned = [0.55, 0.8, 1.25, 1.6]  # as if trained
    with torch.no_grad():
        model.trajectory_values.copy_(torch.tensor(learned, dtype=torch.float64)[:, None])
    report = trainer.evaluate(swinging([1.05, 0.9]), conservation=False)
    entry = report.to_dict()["per_trajectory"]["l"]
    assert entry == {"held_out_value": pytest.approx(1.05), "learned": learned, "true": LENGTHS}
    text = str(report)
    assert "l: learned per training trajectory (4); the held-out trajectories were rolled " in text
    assert "trajectory 0    0.55  (true 0.5)" in text
    assert "largest relative error against the stored values 1.000e-01" in text
    assert report.mse_per_trajectory[0] < 1e-12  # the first held-out pendulum: l = the mean


def test_the_warning_on_shared_parameters_leaves_per_trajectory_ones_out_and_names_the_option():
    data = swinging([0.5, 1.0])
    assert shared_parameters_warning(PhysicsModel("pendulum", per_trajectory=["l"]), data) is None
    message = shared_parameters_warning(PhysicsModel("pendulum", ["l"]), data)
    assert "per_trajectory=['l']" in message and "--per-trajectory" in message


# ---------------------------------------------------------------------- checkpoints, refusals


def test_a_checkpoint_keeps_the_table_and_resumes_the_run_exactly(tmp_path):
    data = swinging(LENGTHS, points=11)

    def trainer(epochs: int) -> Trainer:
        model = PhysicsModel("pendulum", ["g"], per_trajectory=["l"], init={"g": 9.0})
        return Trainer(model, data, epochs=epochs, lr=0.05, checkpoint_dir=tmp_path / "ck")

    whole = trainer(4)
    whole.fit()
    first = trainer(4)
    first.fit(epochs=2)
    resumed = trainer(4)
    resumed.load_checkpoint(tmp_path / "ck" / "last.pt")
    assert resumed.model.trajectory_values.shape == (4, 1)
    resumed.fit()
    assert torch.equal(resumed.model.trajectory_values, whole.model.trajectory_values)
    assert resumed.model.physical_parameters() == whole.model.physical_parameters()
    # The weights load into a fresh model, whose table takes the saved size.
    fresh = PhysicsModel("pendulum", ["g"], per_trajectory=["l"])
    fresh.load_state_dict(whole.model.state_dict())
    assert fresh.per_trajectory_values() == whole.model.per_trajectory_values()


def test_a_resume_on_another_number_of_training_trajectories_is_refused(tmp_path):
    model = PhysicsModel("pendulum", per_trajectory=["l"])
    path = Trainer(model, swinging(LENGTHS, points=6), epochs=1).save_checkpoint(tmp_path / "a.pt")
    other = Trainer(PhysicsModel("pendulum", per_trajectory=["l"]), swinging(LENGTHS[:3], 6),
                    epochs=1)  # fmt: skip
    with pytest.raises(physode.InvalidArgumentError, match=r"learned \['l'\] per trajectory for "
                       r"4 training trajectories, and this trainer's training data hold 3"):
        other.load_checkpoint(path)


def test_a_model_sized_for_other_data_is_refused():
    model = PhysicsModel("pendulum", per_trajectory=["l"], n_trajectories=5)
    with pytest.raises(physode.InvalidArgumentError, match=r"for 5 training trajectories, and "
                       r"these training data hold 4"):
        Trainer(model, swinging(LENGTHS, points=6), epochs=1)
    sized = PhysicsModel("pendulum", per_trajectory=["l"], n_trajectories=2)
    with pytest.raises(physode.InvalidArgumentError,
                       match=r"for 3 training trajectories, and this model.s table has 2 rows"):
        sized.load_state_dict(PhysicsModel("pendulum", per_trajectory=["l"],
                                           n_trajectories=3).state_dict())  # fmt: skip


def test_weights_with_other_per_trajectory_columns_are_refused_by_name():
    saved = PhysicsModel("pendulum", per_trajectory=["l"], n_trajectories=3).state_dict()
    model = PhysicsModel("pendulum", per_trajectory=["l", "g"])
    with pytest.raises(physode.InvalidArgumentError, match=r"learned 1 parameter\(s\) per "
                       r"trajectory \(a table of shape \(3, 1\)\), and this model learns "
                       r"\['l', 'g'\] per trajectory \(2\)"):  # fmt: skip
        model.load_state_dict(saved)
    assert model.n_trajectories == 0


@pytest.mark.parametrize("hybrid", [False, True])
def test_a_failed_load_leaves_an_unsized_table_unsized(hybrid):
    # Weights of another system: torch refuses the keys after the table took the saved rows.
    def make(system, n=None):
        learned = {"pendulum": ["l"], "harmonic_oscillator": ["k"]}[system]
        physics = PhysicsModel(system, per_trajectory=learned, n_trajectories=n)
        return Hybrid(physics, NeuralODE(2, width=2, depth=0)) if hybrid else physics

    model = make("pendulum")
    with pytest.raises(RuntimeError, match="Missing key"):
        model.load_state_dict(make("harmonic_oscillator", 3).state_dict())
    physics = model.physics if hybrid else model
    assert physics.n_trajectories == 0
    model.load_state_dict(make("pendulum", 5).state_dict())  # the right weights still load
    assert physics.n_trajectories == 5


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"per_trajectory": "l"}, r"per_trajectory='l' must be a list .*per_trajectory=\['l'\]"),
        ({"per_trajectory": ["L"]}, r"\['L'\] are not parameters of system 'pendulum'"),
        ({"per_trajectory": ["l"], "n_trajectories": 0}, "n_trajectories=0 must be a positive"),
        ({"per_trajectory": ["l"], "n_trajectories": 2.0}, "n_trajectories=2.0 must be a"),
    ],
)
def test_bad_per_trajectory_settings_are_refused(options, match):
    with pytest.raises(physode.InvalidArgumentError, match=match):
        PhysicsModel("pendulum", **options)


def test_per_trajectory_names_are_learned_and_init_sets_every_row():
    model = PhysicsModel("pendulum", per_trajectory=["l"], init={"l": 0.7}, n_trajectories=2)
    assert model.learnable == ["l"] and model.per_trajectory == ["l"]
    assert model.per_trajectory_values() == {"l": [0.7, 0.7]}
    model.set_parameters({"l": 0.9})
    assert model.per_trajectory_values() == {"l": [0.9, 0.9]}
    assert model.parameter_vector().tolist() == [1.0, 9.81, 0.9]


# ---------------------------------------------------------------------- physode train


@pytest.fixture(scope="module")
def pendulums_h5(tmp_path_factory):
    """Six pendulums with sampled m, g and l (4 to train on, 2 to test, none to validate)."""
    path = tmp_path_factory.mktemp("per_trajectory") / "pendulums.h5"
    physode.data.simulate("pendulum", trajectories=6, t_end=1.0, points=11, out=path, seed=2,
                          params="sample", split=(4 / 6, 0, 2 / 6), quiet=True)  # fmt: skip
    return path


def test_physode_train_learns_a_parameter_per_trajectory_and_reports_it(pendulums_h5, tmp_path):
    from physode.cli import main

    out = tmp_path / "run"
    argv = ["train", str(pendulums_h5), "--model", "physics", "--per-trajectory", "l",
            "--optimizer", "lbfgs", "--lr", "1", "--epochs", "18", "--rtol", "1e-9", "--atol",
            "1e-11", "--quiet", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0  # 18 epochs: 4e-10 off (16: 6e-8, 25: 7e-11)
    report = json.loads((out / "report.json").read_text())
    assert report["model"]["per_trajectory"] == ["l"]
    entry = report["rollout"]["per_trajectory"]["l"]
    assert len(entry["true"]) == 4 and len(set(entry["true"])) == 4  # sampled lengths
    assert entry["learned"] == pytest.approx(entry["true"], rel=1e-5)
    assert report["per_trajectory_parameters"]["l"] == entry["learned"]
    # model.pt loads into a fresh model, whose table takes the saved size.
    fresh = PhysicsModel("pendulum", per_trajectory=["l"])
    fresh.load_state_dict(torch.load(out / "model.pt", weights_only=True))
    assert fresh.per_trajectory_values()["l"] == entry["learned"]


def test_physode_train_reads_per_trajectory_from_the_model_table_of_a_config(
    pendulums_h5, tmp_path
):
    from physode.cli_train import _settings, add_train_parser, build_model

    config = tmp_path / "run.toml"
    config.write_text(
        f'data = "{pendulums_h5}"\n[model]\nkind = "hybrid"\nlearnable = ["g"]\n'
        'per_trajectory = ["l"]\n'
    )
    import argparse

    parser = argparse.ArgumentParser()
    add_train_parser(parser.add_subparsers(dest="command"))
    _, settings, _, _ = _settings(parser.parse_args(["train", "--config", str(config)]))
    model = build_model(settings, physode.systems.load("pendulum"), 2)
    assert model.per_trajectory == ["l"] and model.physics.learnable == ["g", "l"]


def test_lbfgs_over_several_batches_of_a_per_trajectory_table_is_warned_of():
    # Batches of different windows see different rows of the table; L-BFGS's history mixes
    # them (a line search once jumped to a pendulum too stiff to solve). One batch: no warning.
    data = swinging(LENGTHS)
    with pytest.warns(physode.PhysodeWarning, match="the 4 batches of an epoch see different"):
        Trainer(PhysicsModel("pendulum", per_trajectory=["l"]), data, optimizer="lbfgs",
                batch_size=1)  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Trainer(PhysicsModel("pendulum", per_trajectory=["l"]), data, optimizer="lbfgs")
        Trainer(PhysicsModel("pendulum", per_trajectory=["l"]), data, batch_size=1)  # Adam


def test_physode_train_calibrates_the_test_trajectories_with_calibrate(pendulums_h5, tmp_path):
    from physode.cli import main

    out = tmp_path / "run"
    argv = ["train", str(pendulums_h5), "--model", "physics", "--per-trajectory", "l",
            "--optimizer", "lbfgs", "--lr", "1", "--epochs", "2", "--rtol", "1e-9", "--atol",
            "1e-11", "--quiet", "--out", str(out), "--t-end", "1.5", "--calibrate"]  # fmt: skip
    assert main(argv) == 0
    rollout = json.loads((out / "report.json").read_text())["rollout"]
    assert rollout["calibration"]["until"] == 1.0  # bare --calibrate: the training horizon
    entry = rollout["per_trajectory"]["l"]
    assert len(entry["calibrated"]) == 2 and len(set(entry["calibrated_true"])) == 2
    assert entry["calibrated"] == pytest.approx(entry["calibrated_true"], rel=1e-5)
    assert rollout["mse_beyond"] < 1e-10


def test_physode_train_refuses_calibrate_for_a_model_without_per_trajectory_parameters_at_once(
    pendulums_h5, tmp_path, capsys
):
    from physode.cli import main

    log = tmp_path / "log.csv"
    argv = ["train", str(pendulums_h5), "--model", "physics", "--learnable", "l", "--epochs",
            "1", "--quiet", "--log", str(log), "--calibrate", "0.5"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.splitlines()[-1]  # after the warning that l varies
    assert err.startswith("physode train: error: --calibrate 0.5 fits each held-out trajectory")
    assert "--per-trajectory NAMES" in err
    assert not log.exists()  # refused before training


def test_physode_train_reads_calibrate_from_the_report_table_of_a_config(pendulums_h5, tmp_path):
    import argparse

    from physode.cli_train import _settings, add_train_parser

    parser = argparse.ArgumentParser()
    add_train_parser(parser.add_subparsers(dest="command"))
    config = tmp_path / "run.toml"
    extras = []
    for value in ("true", "0.5"):
        config.write_text(f'data = "{pendulums_h5}"\n[report]\ncalibrate = {value}\n')
        extras.append(_settings(parser.parse_args(["train", "--config", str(config)]))[3])
    assert [e["calibrate"] for e in extras] == [True, 0.5]
    # The command line wins, bare or with a time.
    for argv, want in ((["--calibrate"], True), (["--calibrate", "0.3"], 0.3)):
        args = parser.parse_args(["train", "--config", str(config), *argv])
        assert _settings(args)[3]["calibrate"] == want
    config.write_text(f'data = "{pendulums_h5}"\n[report]\ncalibrate = "soon"\n')
    with pytest.raises(physode.InvalidArgumentError, match=r"\[report\]: calibrate = 'soon' "
                       r"must be a number \(the end time"):  # fmt: skip
        _settings(parser.parse_args(["train", "--config", str(config)]))


def test_a_data_set_after_a_bare_calibrate_is_refused_with_where_to_put_it(capsys):
    from physode.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["train", "--calibrate", "pendulums.h5", "--model", "physics"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert err == ("physode train: error: argument --calibrate: expected a time T (a number), "
                   "got 'pendulums.h5'; put DATA.h5 before a bare --calibrate")  # fmt: skip
    with pytest.raises(SystemExit):
        main(["train", "pendulums.h5", "--calibrate", "soon"])
    assert capsys.readouterr().err.splitlines()[-1].endswith("got 'soon'")


@pytest.mark.parametrize("kind", ["physics", "hybrid", "neural"])
def test_a_whole_checkpoint_given_to_load_state_dict_says_where_the_weights_are(tmp_path, kind):
    def make():
        physics = PhysicsModel("pendulum", per_trajectory=["l"])
        return {"physics": physics, "neural": NeuralODE(2, width=2, depth=0),
                "hybrid": Hybrid(physics, NeuralODE(2, width=2, depth=0))}[kind]

    path = Trainer(make(), swinging(LENGTHS, points=6), epochs=1).save_checkpoint(tmp_path / "a.pt")
    checkpoint = torch.load(path, weights_only=True)
    model = make()
    with pytest.raises(physode.InvalidArgumentError, match=r"whole physode training checkpoint "
                       r"\(epoch 0\), not a state dict; its weights are checkpoint\['model'\]"):
        model.load_state_dict(checkpoint)
    model.load_state_dict(checkpoint["model"])
