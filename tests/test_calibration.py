"""Tests of calibrating held-out trajectories: rollout_report(..., calibrate=T) and
Trainer.evaluate(..., calibrate=T) fit each unseen trajectory's own values of the parameters a
model learns per trajectory on its observations up to T, then roll it out with them."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from _pendulums import swinging

import physode
import physode.systems
from physode.models import Hybrid, NeuralODE, PhysicsModel
from physode.train import Trainer, Trajectories, rollout_report
from physode.train.evaluate import calibration_time

TRAINED = [0.5, 0.8, 1.2, 1.6]  # the training pendulums' lengths: mean 1.025
HELD_OUT = [0.6, 1.4]
TIGHT = {"rtol": 1e-9, "atol": 1e-11}


def held_out(points: int = 21) -> Trajectories:
    """The held-out pendulums over twice the training horizon (t in [0, 2])."""
    return swinging(HELD_OUT, points=points, t_end=2.0)


def with_table(lengths: list[float] = TRAINED, learnable: tuple = ()) -> PhysicsModel:
    """A model whose table holds ``lengths``, as if trained on pendulums of those lengths."""
    model = PhysicsModel("pendulum", list(learnable), per_trajectory=["l"],
                         n_trajectories=len(lengths))  # fmt: skip
    with torch.no_grad():
        model.trajectory_values.copy_(torch.tensor(lengths, dtype=torch.float64)[:, None])
    return model


@pytest.fixture(scope="module")
def trainer() -> Trainer:
    """A model trained on four pendulums, l learned per trajectory (g known)."""
    model = PhysicsModel("pendulum", per_trajectory=["l"])
    trainer = Trainer(model, swinging(TRAINED), epochs=12, optimizer="lbfgs", lr=1.0, **TIGHT)
    trainer.fit()
    assert model.per_trajectory_values()["l"] == pytest.approx(TRAINED, rel=1e-6)
    return trainer


# ---------------------------------------------------------------------- recovery


@pytest.mark.parametrize("gradient", ["aca", "disc-opt"])
def test_each_held_out_pendulums_length_is_calibrated_and_its_forecast_follows_the_truth(
    trainer, gradient
):
    trainer = copy.copy(trainer)  # the fixture's trainer, with this test's gradient mode
    trainer.config = trainer.config.updated(gradient=gradient)
    data = held_out()
    mean = trainer.evaluate(data, conservation=False)
    report = trainer.evaluate(data, conservation=False, calibrate=True)
    entry = report.per_trajectory["l"]
    assert entry["calibrated"] == pytest.approx(HELD_OUT, rel=1e-6)
    assert entry["calibrated_true"] == HELD_OUT
    assert entry["held_out_value"] == pytest.approx(sum(TRAINED) / 4, rel=1e-8)  # the start
    assert report.calibration["until"] == 1.0  # True: the training horizon
    assert report.calibration["converged"] and report.calibration["uncalibrated"] == []
    # The forecast after the calibration window: the mean is far off, the calibrated values
    # follow the truth.
    assert mean.mse_beyond > 1e-2
    assert report.mse_beyond < 1e-8 * mean.mse_beyond
    assert report.calibration["mse_after"] == report.mse_beyond  # T is the horizon here
    assert report.calibration["mse_within"] == report.mse_within


def test_the_calibration_window_can_end_before_the_horizon_and_later_values_are_not_fitted():
    model = with_table()
    data = held_out()
    report = rollout_report(model, data, horizon=1.0, calibrate=0.6, conservation=False, **TIGHT)
    assert report.calibration["until"] == 0.6
    assert report.per_trajectory["l"]["calibrated"] == pytest.approx(HELD_OUT, rel=1e-6)
    # Observations after T change the errors, never the fit: corrupt them and the values found
    # are the same to the last bit. (After 0.6 as the calibration cuts: the sample stored as
    # 0.6000000000000001 is the one at 0.6, fitted.)
    later = torch.arange(len(data.t)) >= len(data.until(0.6).t)
    assert float(data.t[~later][-1]) > 0.6
    corrupted = data.states.clone()
    corrupted[:, later] += 0.3
    other = Trajectories(data.t, corrupted, params=data.params, system=data.system)
    again = rollout_report(model, other, horizon=1.0, calibrate=0.6, conservation=False, **TIGHT)
    assert again.per_trajectory["l"]["calibrated"] == report.per_trajectory["l"]["calibrated"]
    assert again.calibration["mse_after"] > 1e-2 > report.calibration["mse_after"]
    assert again.calibration["mse_within"] == report.calibration["mse_within"]


def test_missing_values_and_later_first_observations_are_respected():
    data = held_out()
    states = data.states.clone()
    states[0, 3, 0] = states[0, 5, 1] = states[1, 7] = math.nan  # gaps in the window
    states[1, :2] = math.nan  # the second pendulum is first observed at t = 0.2
    gappy = Trajectories(data.t, states, params=data.params, system=data.system)
    report = rollout_report(with_table(), gappy, horizon=1.0, calibrate=True, conservation=False,
                            **TIGHT)  # fmt: skip
    assert report.per_trajectory["l"]["calibrated"] == pytest.approx(HELD_OUT, rel=1e-6)
    assert torch.isnan(report.predicted[1, :2]).all()  # rolled out from its first observation
    assert report.mse_beyond < 1e-12


def test_only_the_observed_components_are_fitted():
    # Observing the angle alone is enough to find each length; the velocity, made wrong here,
    # does not enter the fit.
    data = held_out()
    states = data.states.clone()
    states[:, 1:, 1] = 5.0
    wrong = Trajectories(data.t, states, params=data.params, system=data.system)
    report = rollout_report(with_table(), wrong, horizon=1.0, calibrate=True, observe=[0],
                            conservation=False, **TIGHT)  # fmt: skip
    assert report.per_trajectory["l"]["calibrated"] == pytest.approx(HELD_OUT, rel=1e-6)


def test_a_hybrid_calibrates_its_physics_terms_values():
    physics = with_table()
    model = Hybrid(physics, NeuralODE(2, width=4, depth=1, zero_output=True)).double()
    report = rollout_report(model, held_out(), horizon=1.0, calibrate=True, conservation=False,
                            **TIGHT)  # fmt: skip
    assert report.per_trajectory["l"]["calibrated"] == pytest.approx(HELD_OUT, rel=1e-6)


# ---------------------------------------------------------------------- the model is untouched


def test_the_model_is_left_as_it_was_and_the_calibration_is_deterministic():
    # A shared learnable g (a parameter of the model that requires grad) and disc-opt, which
    # would record the model's parameters in its graph: neither changes nor gets a gradient.
    model = with_table(learnable=("g",))
    model.train()
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    reports = [
        rollout_report(model, held_out(), horizon=1.0, calibrate=True, gradient="disc-opt",
                       conservation=False, **TIGHT)  # fmt: skip
        for _ in range(2)
    ]
    after = model.state_dict()
    assert all(torch.equal(before[name], after[name]) for name in before)
    assert all(p.grad is None for p in model.parameters())
    assert [p.requires_grad for p in model.parameters()] == flags
    assert model.training  # put back in the mode it was in
    assert reports[0].per_trajectory["l"]["calibrated"] == pytest.approx(HELD_OUT, rel=1e-6)
    assert reports[0].to_dict() == reports[1].to_dict()  # the same to the last bit


# ---------------------------------------------------------------------- report


def test_the_report_says_what_was_calibrated_and_how(tmp_path):
    data = held_out()
    report = rollout_report(with_table(), data, horizon=1.0, calibrate=True, **TIGHT)
    as_dict = report.to_dict()
    entry = as_dict["per_trajectory"]["l"]
    assert set(entry) == {"held_out_value", "learned", "calibrated", "calibrated_true"}
    assert entry["learned"] == TRAINED
    calibration = as_dict["calibration"]
    assert set(calibration) == {"until", "iterations", "evaluations", "converged", "loss",
                                "uncalibrated", "mse_within", "mse_after"}  # fmt: skip
    assert 0 < calibration["iterations"] <= 50 and calibration["evaluations"] > 1
    assert calibration["loss"] < 1e-12
    text = str(report)
    assert "l: learned per training trajectory (4); mean l = 1.025" in text
    assert "l: calibrated per held-out trajectory (2) on its observations up to t = 1" in text
    assert "trajectory 1    1.4  (true 1.4)" in text
    assert "iterations" in text and "converged" in text
    # The rollouts' conservation is measured at each one's calibrated length.
    drift = report.conservation_model.invariants["energy"].max_rel_drift
    assert float(drift.max()) < 1e-7
    # Without calibration nothing of it is reported.
    plain = rollout_report(with_table(), data, horizon=1.0, conservation=False, **TIGHT)
    assert plain.calibration is None and "calibration" not in plain.to_dict()
    assert "rolled out with their mean, l = 1.025" in str(plain)


def test_lengths_the_data_do_not_know_are_calibrated_and_not_compared_with():
    # Measured pendulums: mass and g known, the length not (NaN), which is what calibration is
    # for. The lengths are fitted; nothing is compared with or simulated from the unknown ones.
    data = held_out()
    data.params[1, 2] = math.nan
    report = rollout_report(with_table(), data, horizon=1.0, calibrate=True, **TIGHT)
    assert report.per_trajectory["l"]["calibrated"] == pytest.approx(HELD_OUT, rel=1e-6)
    text = str(report)
    assert "trajectory 1    1.4  (true unknown)" in text
    # The largest error is taken over the stored value alone (it was nan).
    line = next(line for line in text.splitlines() if "largest relative error" in line)
    assert float(line.split()[-1]) < 1e-6
    # The truth's invariants need its length: no report (it was nan, flagged FAIL).
    assert report.conservation_truth is None and report.conservation_model is not None
    # Beyond the data the truth would be simulated with it: refused, naming it (it was a
    # SolverError on a non-finite state at t=0).
    with pytest.raises(physode.InvalidArgumentError, match=r"store values of \['l'\] that are "
                       r"not finite \(unknown\).*no further than t_end=2"):  # fmt: skip
        rollout_report(with_table(), data, horizon=1.0, t_end=3.0, conservation=False, **TIGHT)


def test_a_trajectory_with_nothing_to_fit_keeps_the_mean_and_the_report_says_so():
    data = held_out()
    states = data.states.clone()
    states[1, :12] = math.nan  # first observed at t = 1.1, after the window
    late = Trajectories(data.t, states, params=data.params, system=data.system)
    model = with_table()
    report = rollout_report(model, late, horizon=1.0, calibrate=True, conservation=False, **TIGHT)
    assert report.calibration["uncalibrated"] == [1]
    assert report.per_trajectory["l"]["calibrated"][0] == pytest.approx(0.6, rel=1e-6)
    assert report.per_trajectory["l"]["calibrated"][1] is None
    mean = rollout_report(model, late, horizon=1.0, conservation=False, **TIGHT)
    assert report.mse_per_trajectory[1] == mean.mse_per_trajectory[1]  # rolled out at the mean
    assert "trajectories [1] have no observation" in str(report)


# ---------------------------------------------------------------------- refusals


def test_calibrating_a_model_that_learns_nothing_per_trajectory_is_refused():
    data = held_out()
    for model in (PhysicsModel("pendulum", ["l"]), NeuralODE(2, width=4, depth=1).double()):
        with pytest.raises(physode.InvalidArgumentError, match=r"calibrate=True fits each "
                           r"held-out trajectory's own values .* learns none; build it with "
                           r"PhysicsModel\(\.\.\., per_trajectory=\[\.\.\.\]\)"):  # fmt: skip
            rollout_report(model, data, calibrate=True)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"calibrate": 0.05}, r"calibrate=0.05 leaves no observation to fit: the held-out data "
                              r"start at t = 0 and their next sample is at 0.1; give calibrate "
                              r">= 0.1"),  # fmt: skip
        ({"calibrate": True, "horizon": 0.0}, r"calibrate=True \(the training horizon, t = 0\) "
                                              r"leaves no observation"),  # fmt: skip
        ({"calibrate": "1.0"}, r"calibrate='1.0' must be the end time"),
        ({"calibrate": math.inf}, r"calibrate=inf must be the end time"),
        ({"calibrate": 1.0, "calibration_iterations": 0}, r"calibration_iterations=0 must be a "
                                                          r"positive integer"),  # fmt: skip
    ],
)
def test_bad_calibration_settings_are_refused(options, match):
    with pytest.raises(physode.InvalidArgumentError, match=match):
        rollout_report(with_table(), held_out(), **options)


def test_a_calibration_time_at_a_float32_sample_time_takes_that_sample():
    # float32's 0.1 is 0.10000000149011612: calibrate=0.1 was refused with 'give calibrate >=
    # 0.10000000149011612'. The sample at 0.1 is the one asked for; an earlier time is refused,
    # naming it 0.1.
    t = held_out().t.to(torch.float32)
    assert calibration_time(with_table(), t, 0.1, horizon=1.0) == 0.1
    with pytest.raises(physode.InvalidArgumentError,
                       match=r"next sample is at 0.1; give calibrate >= 0.1$"):  # fmt: skip
        calibration_time(with_table(), t, 0.09, horizon=1.0)


def test_a_calibration_time_at_a_rounded_sample_time_fits_that_sample():
    # linspace's 0.3 is 0.30000000000000004: calibrate=0.3 fitted the observations up to 0.2,
    # none here (both first observed at 0.2), and was refused; the fitted/after split agrees.
    data = held_out()
    assert float(data.t[3]) > 0.3
    states = data.states.clone()
    states[:, :2] = math.nan
    late = Trajectories(data.t, states, params=data.params, system=data.system)
    report = rollout_report(with_table(), late, horizon=1.0, calibrate=0.3,
                            calibration_iterations=2, conservation=False)  # fmt: skip
    assert report.calibration["uncalibrated"] == []
    error = (report.predicted[:, 1:] - report.truth[:, 1:]).pow(2)
    assert report.calibration["mse_within"] == pytest.approx(float(error[:, 2].mean()), rel=1e-12)
    assert report.calibration["mse_after"] == pytest.approx(float(error[:, 3:].mean()), rel=1e-12)


def test_a_window_that_no_trajectory_observes_anything_in_is_refused():
    data = held_out()
    states = data.states.clone()
    states[:, :11] = math.nan  # both first observed at t = 1.0
    late = Trajectories(data.t, states, params=data.params, system=data.system)
    with pytest.raises(physode.InvalidArgumentError, match=r"calibrate=1 leaves no held-out "
                       r"trajectory an observation to fit"):  # fmt: skip
        rollout_report(with_table(), late, horizon=1.0, calibrate=1.0)


def test_the_calibrations_gradient_mode_is_the_one_given():
    with pytest.raises(physode.InvalidArgumentError, match="gradient"):
        rollout_report(with_table(), held_out(), calibrate=True, gradient="backprop")


def test_data_of_another_system_that_stores_no_parameters_are_calibrated_and_measured():
    # The pendulum model's l is no parameter of the data's system (damped_pendulum, which
    # stores no values): the rollouts' conservation is measured at that system's own values.
    data = held_out()
    other = Trajectories(data.t, data.states, system=physode.systems.load("damped_pendulum"))
    report = rollout_report(with_table(), other, horizon=1.0, calibrate=True, **TIGHT)
    assert report.per_trajectory["l"]["calibrated"] == pytest.approx(HELD_OUT, rel=1e-6)
    assert "calibrated_true" not in report.per_trajectory["l"]


# ---------------------------------------------------------------------- hard cases


def released(angles: list[float], lengths: list[float]) -> Trajectories:
    """Pendulums of the given lengths released from rest at the given angles, t in [0, 2]."""
    pendulum = physode.systems.load("pendulum")
    params = torch.tensor([[1.0, 9.81, length] for length in lengths], dtype=torch.float64)
    y0 = torch.tensor([[angle, 0.0] for angle in angles], dtype=torch.float64)
    t = torch.linspace(0, 2, 21, dtype=torch.float64)
    ys = physode.odeint(lambda s, y: pendulum.rhs(s, y, params), y0, t, rtol=1e-12, atol=1e-14)
    return Trajectories(t, ys.transpose(0, 1), params=params, system=pendulum)


def test_a_trial_value_the_model_cannot_be_solved_with_makes_the_search_back_off():
    # One held-out pendulum, the mean length 1.0: L-BFGS's first trial steps the length to
    # about zero, a pendulum too stiff to solve. That trial is a step too far, not the end of
    # the calibration (it was: max_steps reached, after 100,000 step attempts).
    model = with_table([0.8, 1.2]).double()
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    report = rollout_report(model, released([0.2], [0.6]), horizon=1.0, calibrate=True,
                            conservation=False, **TIGHT)  # fmt: skip
    assert report.per_trajectory["l"]["calibrated"] == pytest.approx([0.6], rel=1e-8)
    assert report.calibration["converged"]
    assert all(torch.equal(before[name], tensor) for name, tensor in model.state_dict().items())


def test_a_pendulum_of_small_amplitude_is_fitted_as_closely_as_one_of_large():
    # Each trajectory's errors count relative to its own observations: a swing of 0.001 rad
    # beside one of 1 rad is fitted as well (with one scale for all, L-BFGS stopped once the
    # large one fitted, the small one's length 1e-4 off).
    data = released([1.0, 1e-3], HELD_OUT)
    report = rollout_report(with_table().double(), data, horizon=1.0, calibrate=True,
                            conservation=False, **TIGHT)  # fmt: skip
    assert report.per_trajectory["l"]["calibrated"] == pytest.approx(HELD_OUT, rel=1e-7)
    assert report.calibration["loss"] < 1e-12


def test_a_calibration_time_after_the_data_fits_them_all_and_reports_their_end():
    # Asked for T = 2.5 on data that end at t = 2, rolled out to t = 3: the fit ends at 2,
    # and the rollout after it (simulated truth) is the forecast, not the fitted stretch.
    report = rollout_report(with_table(), held_out(), horizon=1.0, calibrate=2.5, t_end=3.0,
                            conservation=False, **TIGHT)  # fmt: skip
    assert report.calibration["until"] == 2.0
    after = report.t[1:] > 2.0
    forecast = (report.predicted[:, 1:][:, after] - report.truth[:, 1:][:, after]).pow(2).mean()
    assert report.calibration["mse_after"] == pytest.approx(float(forecast), rel=1e-12)
    assert "observations up to t = 2, from the mean" in str(report)
