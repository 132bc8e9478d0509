"""Training and evaluation on data with missing observations (NaN) and irregular sampling."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import physode
import physode.train.data as train_data
from physode.models import PhysicsModel
from physode.train import Trainer, Trajectories, rollout_report
from physode.train.data import Window, window_starts

NAN = float("nan")


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def oscillator_data(n=6, points=26, t_end=5.0, k=1.0):
    """Harmonic oscillator trajectories (m = 1, spring constant ``k``), (t, ys (N, P, 2))."""
    system = physode.systems.load("harmonic_oscillator")
    t = torch.linspace(0, t_end, points, dtype=torch.float64)
    y0 = system.sample_initial_states(n, seed=1)
    p = torch.tensor([1.0, k], dtype=torch.float64)
    ys = physode.odeint(lambda s, y: system.rhs(s, y, p), y0, t, rtol=1e-11, atol=1e-12)
    return system, t, ys.transpose(0, 1)


def remove(ys, fraction, seed=0):
    """``ys`` with ``fraction`` of its entries set to NaN, each trajectory's first state kept."""
    drop = torch.rand(ys.shape, generator=torch.Generator().manual_seed(seed)) < fraction
    drop[:, 0] = False
    return ys.masked_fill(drop, NAN)


# ---------------------------------------------------------------- fitting


def test_a_fit_with_30_percent_of_the_values_removed_recovers_k_as_the_full_data_do():
    system, t, ys = oscillator_data(k=1.3)
    holes = remove(ys, 0.3)
    assert 0.25 < float(holes.isnan().float().mean()) < 0.35
    found = {}
    for name, states in (("full", ys), ("holes", holes)):
        model = PhysicsModel(system, learnable=["k"], init={"k": 0.7})
        data = Trajectories(t, states, system=system)
        trainer = Trainer(model, data, epochs=8, window=6, batch_size=64, optimizer="lbfgs",
                          lr=1.0, rtol=1e-9, atol=1e-11)  # fmt: skip
        found[name] = trainer.fit().physical_parameters["k"]
        assert math.isfinite(trainer.history[-1]["loss"])
    assert found["full"] == pytest.approx(1.3, rel=1e-6)
    assert found["holes"] == pytest.approx(1.3, rel=1e-6)


def test_irregular_trajectories_of_different_lengths_train_whole_from_their_own_starts():
    system, t, ys = oscillator_data(n=3, points=21, k=1.3)
    # Trajectory 0 at the even times, 1 at the odd ones (it starts late), 2 on the first half.
    samples = [(t[::2], ys[0, ::2]), (t[1::2], ys[1, 1::2]), (t[:11], ys[2, :11])]
    data = Trajectories.from_irregular(samples, system=system)
    model = PhysicsModel(system, learnable=["k"], init={"k": 0.7})
    trainer = Trainer(model, data, epochs=8, optimizer="lbfgs", lr=1.0, rtol=1e-9, atol=1e-11)
    assert trainer.train_windows == [Window(0, 0), Window(1, 1, 20), Window(2, 0)]
    assert trainer.fit().physical_parameters["k"] == pytest.approx(1.3, rel=1e-6)
    report = trainer.evaluate(test_data=data, conservation=False)
    assert torch.isnan(report.predicted[1, 0]).all()  # before its first sample
    torch.testing.assert_close(report.predicted[1, 1], ys[1, 1])
    assert max(report.mse_per_trajectory) < 1e-12


# ---------------------------------------------------------------- gradients


@pytest.mark.parametrize("gradient", ["disc-opt", "aca", "opt-disc"])
def test_masked_loss_and_gradient_equal_the_loss_over_the_observed_values_alone(gradient):
    system, t, ys = oscillator_data(n=4, points=9)
    holes = ys.clone()
    holes[0, 3, 1] = holes[1, 2] = holes[1, 5, 0] = holes[2, 1:4] = holes[3, 8, 0] = NAN
    model = PhysicsModel(system, learnable=["k", "m"], init={"k": 0.7, "m": 1.2})
    options = {"method": "dopri5", "rtol": 1e-8, "atol": 1e-10, "gradient": gradient}
    trainer = Trainer(model, (t, holes), epochs=1, batch_size=8, **options)
    (batch,) = trainer._batches(trainer.train_windows, shuffle=False)  # whole trajectories
    loss = trainer._evaluate(batch, [])
    grads = [p.grad.clone() for p in model.parameters()]
    assert all(bool(g.isfinite().all()) and bool((g != 0).any()) for g in grads)

    # By hand: solve, keep the observed entries, take their mean.
    model.zero_grad()
    pred = physode.odeint(model, holes[:, 0], t, **options).transpose(0, 1)[:, 1:]
    ref = holes[:, 1:]
    seen = ~ref.isnan()
    expected = (pred[seen] - ref[seen]).pow(2).mean()
    expected.backward()
    torch.testing.assert_close(loss, expected.detach(), rtol=1e-12, atol=0)
    for got, want in zip(grads, [p.grad for p in model.parameters()], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-14)


def test_every_observed_value_weighs_the_same_in_the_validation_loss():
    system, t, ys = oscillator_data(n=3, points=9)
    val = ys.clone()
    val[0, 2:] = NAN  # trajectory 0 keeps one value after its start... of 16
    val[0, 1, 1] = NAN
    model = PhysicsModel(system, learnable=["k"], init={"k": 0.8})
    trainer = Trainer(model, (t, ys), val_data=(t, val), epochs=1)
    with torch.no_grad():
        pred = physode.odeint(model, val[:, 0], t, rtol=1e-6, atol=1e-8).transpose(0, 1)
    seen = ~val[:, 1:].isnan()
    expected = (pred[:, 1:][seen] - val[:, 1:][seen]).pow(2).mean()
    assert trainer.validation_loss() == pytest.approx(float(expected), rel=1e-9)


# ---------------------------------------------------------------- windows


def test_complete_data_keep_their_windows():
    data = Trajectories(torch.arange(10.0), torch.zeros(2, 10, 1))
    starts = [w.start for w in train_data.windows_of(data, 4, 3) if w.index == 1]
    assert starts == window_starts(10, 4, 3)
    assert train_data.windows_of(data, None, 1) == [Window(0, 0), Window(1, 0)]


def test_a_window_has_no_dict_of_its_own_and_stays_frozen():
    # The trainer holds one per window: 13 million for 6553 trajectories of 2001 points cut
    # into windows of 5 at every point, 1.5 GB with a __dict__ each, 0.9 GB without.
    window = train_data.windows_of(Trajectories(torch.arange(4.0), torch.zeros(1, 4, 1)), 2, 1)[0]
    assert not hasattr(window, "__dict__")
    with pytest.raises(AttributeError):
        window.start = 1


def test_windows_start_at_whole_states_and_need_an_observation_after_the_start():
    states = torch.ones(2, 10, 2)
    states[0, 2, 1] = NAN  # not whole: no window starts at 2
    states[0, 6:9] = NAN  # nothing after 5 within 4 points: no window at 5
    states[1, :3] = NAN  # trajectory 1 starts at 3
    data = Trajectories(torch.arange(10.0), states)
    windows = train_data.windows_of(data, 4, 1)
    starts = {i: [w.start for w in windows if w.index == i] for i in (0, 1)}
    assert starts == {0: [0, 1, 3, 4], 1: [3, 4, 5, 6]}
    assert [w.start for w in train_data.windows_of(data, 4, 3) if w.index == 0] == [0, 3, 4]
    assert train_data.windows_of(data, None, 1) == [Window(0, 0), Window(1, 3, 7)]
    # Only component 0 enters the loss: a window whose later points observe only 1 is skipped.
    states[0, 1:4, 0] = NAN
    data = Trajectories(torch.arange(10.0), states)
    assert [w.start for w in train_data.windows_of(data, 3, 1, [0]) if w.index == 0] == [4]


def test_data_that_give_no_window_are_refused_with_the_fix():
    states = torch.ones(1, 10, 2)
    states[0, 1:, :] = NAN
    states[0, 9] = 1.0
    with pytest.raises(physode.InvalidArgumentError, match="training trajectories give no window"):
        Trainer(physode.models.NeuralODE(2, width=4, depth=1).double(),
                (torch.arange(10.0), states.double()), window=4, epochs=1)  # fmt: skip


# ---------------------------------------------------------------- irregular sampling


def test_from_irregular_merges_onto_the_union_of_the_times():
    data = Trajectories.from_irregular([
        (torch.tensor([0.0, 1.0, 3.0]), torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])),
        ([0.5, 1.0], [[7.0, 6.5], [8.0, NAN]]),
    ], params=torch.tensor([[1.0], [2.0]]))  # fmt: skip
    assert data.t.tolist() == [0.0, 0.5, 1.0, 3.0]
    assert data.states.dtype == torch.float64  # float32 tensors and float64 lists: promoted
    expected = torch.tensor([
        [[1.0, 2.0], [NAN, NAN], [3.0, 4.0], [5.0, 6.0]],
        [[NAN, NAN], [7.0, 6.5], [8.0, NAN], [NAN, NAN]],
    ], dtype=torch.float64)  # fmt: skip
    torch.testing.assert_close(data.states, expected, equal_nan=True)
    assert data.first_observed.tolist() == [0, 1] and not data.complete
    assert data.params.tolist() == [[1.0], [2.0]]


@pytest.mark.parametrize(
    "samples, message",
    [
        ([], "non-empty list of"),
        ([(torch.arange(3.0), torch.zeros(2, 1))], r"sample 0: need t_i of shape \(P_i,\)"),
        ([(torch.arange(3.0), torch.zeros(3, 1)), (torch.arange(2.0), torch.zeros(2, 2))],
         "sample 1 has 2 state components, sample 0 has 1"),
        ([(torch.tensor([0.0, 2.0, 1.0]), torch.zeros(3, 1))], "sample 0 must be strictly"),
        ([(torch.tensor([0.0, math.inf]), torch.zeros(2, 1))], "non-finite times"),
        ([torch.zeros(3)], r"must be a pair \(t_i, states_i\)"),
    ],
)
def test_from_irregular_refuses_malformed_samples(samples, message):
    with pytest.raises(physode.InvalidArgumentError, match=message):
        Trajectories.from_irregular(samples)


def test_from_irregular_refuses_a_huge_merged_grid_and_warns_on_a_large_one(monkeypatch):
    samples = [(torch.arange(3.0) + 0.1 * i, torch.zeros(3, 2)) for i in range(4)]  # 12 times
    monkeypatch.setattr(train_data, "MANY_MERGED_TIMES", 11)
    with pytest.warns(physode.PhysodeWarning, match="merged time grid of 4 trajectories has 12"):
        Trajectories.from_irregular(samples)
    monkeypatch.setattr(train_data, "MAX_MERGED_VALUES", 95)  # 4 * 12 * 2 = 96 values
    with pytest.raises(physode.InvalidArgumentError, match="would hold 96 values"):
        Trajectories.from_irregular(samples)


def test_a_ragged_array_points_to_from_irregular():
    with pytest.raises(physode.InvalidArgumentError, match="Trajectories.from_irregular"):
        Trajectories([0.0, 1.0, 2.0], [[[1.0], [2.0], [3.0]], [[1.0], [2.0]]])


def test_the_masked_entries_of_a_numpy_masked_array_are_missing_observations():
    # netCDF4 and np.genfromtxt(usemask=True) give masked arrays, a fill value under the mask.
    states = np.ma.masked_array(np.ones((4, 2)), mask=[[0, 0], [0, 1], [1, 1], [0, 0]])
    states.data[1:3] = 1e20
    t = np.arange(4.0)
    for data in (Trajectories(t, states), Trajectories.from_irregular([(t, states)])):
        assert data.states[0, :, 1].isnan().tolist() == [False, True, True, False]
        assert data.states[0, :, 0].isnan().tolist() == [False, False, True, False]
    masked_t = np.ma.masked_array(t, mask=[0, 0, 1, 0])
    with pytest.raises(physode.InvalidArgumentError, match="1 of its 4 entries masked.*give every"):
        Trajectories(masked_t, np.ones((4, 2)))


@pytest.mark.parametrize(
    "t, states, message",
    [
        # Unix timestamps beside float32 states: the times would collapse onto one another.
        (np.array([1.7e9, 1.7e9 + 1, 1.7e9 + 2]), np.ones((3, 1), np.float32),
         r"not finite and strictly increasing once cast to torch.float32.*t - t\[0\]"),
        (np.array([0.0, 1e300]), np.ones((2, 1), np.float32), "once cast to torch.float32"),
        (np.arange("2020-01-01", "2020-01-04", dtype="datetime64[D]"), np.ones((3, 1)),
         "t holds NumPy datetime64"),
        (np.arange(3.0), np.array([[1], [None], [2]], dtype=object),
         "states is a NumPy array of dtype object"),
    ],
    ids=["timestamps-float32", "inf-in-float32", "dates", "objects"],
)
def test_arrays_torch_cannot_take_as_they_are_are_refused_with_the_fix(t, states, message):
    with pytest.raises(physode.InvalidArgumentError, match=message):
        Trajectories(t, states)


def test_a_cast_that_collapses_the_times_is_refused_as_the_constructor_refuses_it():
    # Trajectories.to (the trainer's TrainConfig.dtype) said only "t must be strictly
    # increasing" of Unix timestamps that float32 makes equal.
    data = Trajectories(np.array([1.7e9, 1.7e9 + 1, 1.7e9 + 2]), np.ones((3, 1)))
    message = r"once cast to torch.float32.*TrainConfig\(dtype=torch.float64\).*t - t\[0\]"
    with pytest.raises(physode.InvalidArgumentError, match=message):
        data.to(torch.float32)
    assert Trajectories([0.0, 1.0], np.ones((2, 1))).to(torch.float32).t.dtype == torch.float32


def test_reversed_and_longdouble_arrays_are_read():
    t, states = np.arange(3.0)[::-1], np.arange(6.0).reshape(3, 2)[::-1]
    data = Trajectories(-t, states.astype(np.longdouble))
    assert data.states.dtype == torch.float64
    assert data.states[0, :, 0].tolist() == [4.0, 2.0, 0.0]


# ---------------------------------------------------------------- refusals


def _holes(*where):
    states = torch.ones(3, 6, 2)
    for index in where:
        states[index] = NAN
    return states


@pytest.mark.parametrize(
    "states, message",
    [
        (_holes((1, 0, 1)),
         r"trajectories \[1\] have no observed initial state: trajectory 1 is first observed at "
         r"time index 0 \(t=0\) but misses components \[1\]"),
        (_holes((1, slice(0, 3)), (1, 3, 0), (2, 0, 0)),
         r"trajectories \[1, 2\] have no observed initial state: trajectory 1 is first observed "
         r"at time index 3 \(t=3\) but misses components \[0\]"),
        (_holes((2,)), r"trajectories \[2\] have no observed value \(NaN throughout\)"),
        (_holes((slice(None), slice(None), 1)), r"state components \[1\] are never observed"),
    ],
)
def test_unusable_missing_values_are_refused(states, message):
    with pytest.raises(physode.InvalidArgumentError, match=message):
        Trajectories(torch.arange(6.0), states)


def test_subset_takes_a_mask_as_a_mask_and_refuses_what_it_cannot_select():
    data = Trajectories(torch.arange(3.0), torch.zeros(3, 3, 2), params=[[0.5], [1.5], [2.5]])
    # A mask selects where it is True (cast to positions it took trajectories 1, 0 and 1).
    assert data.subset(data.params[:, 0] > 1.0).params.flatten().tolist() == [1.5, 2.5]
    assert data.subset([True, False, False]).params.flatten().tolist() == [0.5]
    assert data.subset([-1, 0]).params.flatten().tolist() == [2.5, 0.5]
    for index, message in (
        ([True, False], r"a mask of 2 entries .* hold 3"),
        ([3], r"positions \[3\] lie outside the 3 trajectories"),
        ([0.5], r"index=\[0.5\] must be a list of trajectory positions"),  # was position 0
    ):
        with pytest.raises(physode.InvalidArgumentError, match=message):
            data.subset(index)


# ---------------------------------------------------------------- evaluation


def test_rollout_errors_are_taken_over_the_observed_values_and_none_where_there_are_none():
    _, t, ys = oscillator_data(n=3, points=11)
    held = ys.clone()
    held[0, 6:] = NAN  # nothing observed beyond the horizon (t = 2.5)
    held[1, 1:] = NAN  # nothing observed after its initial state
    held[2, 2, 0] = NAN
    data = Trajectories(t, held)

    def off(s, y):  # the oscillator, a little slow
        return torch.stack([y[..., 1], -0.9 * y[..., 0]], -1)

    report = rollout_report(off, data, horizon=2.5, rtol=1e-10, atol=1e-12)
    pred = physode.odeint(off, held[:, 0], t, rtol=1e-10, atol=1e-12).transpose(0, 1)[:, 1:]
    ref = held[:, 1:]
    seen = ~ref.isnan()
    err = (pred - ref).pow(2)
    assert report.mse == pytest.approx(float(err[seen].mean()), rel=1e-9)
    within = (t[1:] <= 2.5)[None, :, None] & seen
    assert report.mse_within == pytest.approx(float(err[within].mean()), rel=1e-9)
    beyond = (t[1:] > 2.5)[None, :, None] & seen
    assert report.mse_beyond == pytest.approx(float(err[beyond].mean()), rel=1e-9)
    assert report.mse_per_trajectory[0] == pytest.approx(float(err[0][seen[0]].mean()), rel=1e-9)
    assert report.mse_per_trajectory[1] is None
    assert json.loads(json.dumps(report.to_dict()))["mse_per_trajectory"][1] is None

    only_first = Trajectories(t, held[:1])
    report = rollout_report(off, only_first, horizon=2.5)
    assert report.mse_beyond is None and report.mse_within > 0
    assert "mse beyond horizon  -" in str(report)


class _ScalarReads(TorchDispatchMode):
    """Counts the reads of float and integer scalars from tensors (each would wait for a GPU)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default and args[0].dtype in (
            torch.float64, torch.int64
        ):
            self.count += 1
        return func(*args, **(kwargs or {}))


def test_masked_losses_read_nothing_more_from_the_device_than_complete_data():
    _, t, ys = oscillator_data(n=4, points=21)
    holes = remove(ys, 0.3)

    def reads(states, batch_size: int) -> tuple[int, int]:
        model = physode.models.NeuralODE(2, width=4, depth=1)
        trainer = Trainer(model, (t, states), val_data=(t, states), epochs=1, window=5,
                          batch_size=batch_size, batches_per_epoch=5, method="rk4",
                          step_size=0.1)  # fmt: skip
        with _ScalarReads() as epoch:
            trainer.train_epoch()
        with _ScalarReads() as validation:
            trainer.validation_loss()
        return epoch.count, validation.count

    complete, masked = reads(ys, 2), reads(holes, 2)
    assert masked[0] == complete[0]  # the epoch: its losses read once, as on complete data
    assert reads(holes, 16)[1] == masked[1] == complete[1]  # validation: once, whatever the batches
