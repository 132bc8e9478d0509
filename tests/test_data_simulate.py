"""Tests of physode.data.simulate: contents, reproducibility, safety, resume after SIGKILL."""

from __future__ import annotations

import errno
import functools
import json
import math
import os
import platform
import re
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import physode
import physode.data.simulation as simulate_module
import physode.systems
from physode.data import TrajectoryDataset, check, load, simulate
from physode.data._chunks import ChunkWriter

REPO = Path(__file__).resolve().parents[1]
SYSTEM = "harmonic_oscillator"
FAST = {"t_end": 3.0, "points": 7, "rtol": 1e-8, "atol": 1e-8, "quiet": True}


def _datasets(path) -> dict[str, np.ndarray]:
    """Every dataset of a file, by name."""
    found = {}
    with h5py.File(path) as f:
        f.visititems(
            lambda name, obj: (
                found.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None
            )
        )
    return found


def _assert_same_datasets(a, b) -> None:
    first, second = _datasets(a), _datasets(b)
    assert sorted(first) == sorted(second)
    for name in first:
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)


@pytest.fixture(scope="module")
def noisy_sampled(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim") / "noisy.h5"
    simulate(SYSTEM, trajectories=6, out=out, seed=3, params="sample", noise=0.05, **FAST)
    return out


def test_stored_states_are_the_solver_solution_from_the_stored_initial_state(noisy_sampled):
    system = physode.systems.load(SYSTEM)
    with load(noisy_sampled) as data:
        t = torch.as_tensor(data.t)
        for i in (0, 5):
            y0 = torch.as_tensor(data.states[i, 0])
            p = torch.as_tensor(data.params[i])
            # dop853's steps pass fewer than 3 of these 7 outputs, so the data's solve lands on
            # each as this one does: the same steps, to rounding (its tolerances, scaled for the
            # parameters carried in its state, measure the state alone).
            ys = physode.odeint(
                lambda t, y, p=p: system.rhs(t, y, p), y0, t, method="dop853", rtol=1e-8, atol=1e-8
            )
            np.testing.assert_allclose(data.states[i], ys.numpy(), rtol=0, atol=1e-12)


def test_derivatives_invariants_and_noise_match_the_stored_states(noisy_sampled):
    system = physode.systems.load(SYSTEM)
    with load(noisy_sampled) as data:
        states = torch.as_tensor(data.states[()])
        params = torch.as_tensor(data.params)[:, None, :].expand(-1, states.shape[1], -1)
        t = torch.as_tensor(data.t).expand(states.shape[:2])
        np.testing.assert_array_equal(data.derivatives[()], system.rhs(t, states, params).numpy())
        energy = system.invariants(states, params)["energy"].numpy()
        np.testing.assert_array_equal(data.invariants["energy"][()], energy)
        noise = data.noisy_states[()] - data.states[()]
        assert abs(noise.std() - 0.05) < 0.015 and abs(noise.mean()) < 0.015
        assert data.invariant_names == ["energy"]
        assert (data.status == int(physode.Status.SUCCESS)).all() and (data.flags == 0).all()
        assert (data.n_steps >= 1).all() and (data.n_rejected >= 0).all()
        assert (data.nfe > data.n_steps).all()


def test_sampled_parameters_differ_per_trajectory_within_their_ranges(noisy_sampled):
    system = physode.systems.load(SYSTEM)
    with load(noisy_sampled) as data:
        for k, (low, high) in enumerate(system.parameter_ranges.values()):
            assert ((data.params[:, k] >= low) & (data.params[:, k] <= high)).all()
        assert len(np.unique(data.params[:, 0])) == 6


def test_root_attributes_record_how_the_file_was_made(noisy_sampled):
    with load(noisy_sampled) as data:
        attrs = data.attrs
        assert attrs["format"] == "physode.trajectories" and attrs["format_version"] == 1
        assert attrs["physode_version"] == physode.__version__
        software = json.loads(attrs["software"])
        assert software["torch"] == torch.__version__ and software["h5py"] == h5py.__version__
        assert software["python"] == platform.python_version()
        assert set(software) == {"python", "torch", "numpy", "scipy", "sympy", "h5py", "hdf5"}
        assert attrs["system_spec"] == physode.systems.path(SYSTEM).read_text()
        assert data.solver == {
            "method": "dop853",
            "rtol": 1e-8,
            "atol": 1e-8,
            "max_steps": 100_000,
            "step_control": simulate_module.STEP_CONTROL,
        }
        assert data.seed == 3
        assert attrs["command_line"].startswith("physode simulate harmonic_oscillator")
        assert "--params sample --noise 0.05" in attrs["command_line"]


def test_split_partitions_the_trajectories_in_the_requested_fractions(tmp_path):
    out = tmp_path / "split.h5"
    simulate(SYSTEM, trajectories=10, out=out, split=(0.6, 0.3, 0.1), **{**FAST, "points": 2})
    with load(out) as data:
        sizes = [len(data.split_indices(name)) for name in ("train", "val", "test")]
        everything = np.concatenate([data.split_indices(n) for n in ("train", "val", "test")])
    assert sizes == [6, 3, 1]
    assert sorted(everything.tolist()) == list(range(10))


def test_same_seed_gives_identical_data_whatever_the_chunk_size(tmp_path, noisy_sampled):
    again = tmp_path / "again.h5"
    simulate(
        SYSTEM, trajectories=6, out=again, seed=3, params="sample", noise=0.05, chunk_size=4, **FAST
    )
    _assert_same_datasets(noisy_sampled, again)


def test_chunks_that_cut_across_sampling_blocks_give_the_same_trajectories(tmp_path):
    settings = {"trajectories": 70, "seed": 3, "params": "sample", **FAST, "points": 3}
    simulate(SYSTEM, out=tmp_path / "a.h5", chunk_size=9, **settings)
    simulate(SYSTEM, out=tmp_path / "b.h5", chunk_size=70, **settings)
    _assert_same_datasets(tmp_path / "a.h5", tmp_path / "b.h5")
    with load(tmp_path / "a.h5") as data:
        assert len(np.unique(data.states[:, 0, 0])) == 70  # no two trajectories share a draw


# An oscillator damped by a fractional power of its velocity: torch evaluates such powers
# differently in SIMD blocks and in their remainder (in about half of all inputs, measured).
POWER_DAMPED = """
name = "power_damped"
description = "x'' = -k x - c v (v^2 + 1)^(1/4)"
form = "equations"

[equations]
x = "v"
v = "-k*x - c*v*(v**2 + 1)**0.25"

[parameters]
k = { value = 1.0, range = [0.5, 2.0] }
c = { value = 0.3, range = [0.1, 0.5] }

[initial_state_distribution]
kind = "uniform"
x = [-2.0, 2.0]
v = [-2.0, 2.0]
"""


@pytest.mark.parametrize("system", ["three_body", "power_damped"])
def test_chunk_size_changes_no_bit_even_where_torch_vectorises(tmp_path, system):
    # The batch layout must not leak into the bits. three_body is exactly rounded and runs the
    # NumPy loop; the power-damped oscillator runs the torch loop, on padded, aligned rows.
    if system == "power_damped":
        system = tmp_path / "power_damped.toml"
        system.write_text(POWER_DAMPED)
        assert not physode.systems.load(system).exactly_rounded
    settings = {"trajectories": 20, "seed": 1, "params": "sample", **FAST, "t_end": 1.0}
    simulate(system, out=tmp_path / "a.h5", chunk_size=3, **settings)
    simulate(system, out=tmp_path / "b.h5", chunk_size=20, **settings)
    _assert_same_datasets(tmp_path / "a.h5", tmp_path / "b.h5")


def test_a_trajectory_depends_only_on_seed_and_index_not_on_the_count(tmp_path, noisy_sampled):
    fewer = tmp_path / "fewer.h5"
    simulate(SYSTEM, trajectories=3, out=fewer, seed=3, params="sample", noise=0.05, **FAST)
    with load(fewer) as small, load(noisy_sampled) as large:
        np.testing.assert_array_equal(small.states[()], large.states[:3])
        np.testing.assert_array_equal(small.noisy_states[()], large.noisy_states[:3])
        np.testing.assert_array_equal(small.params, large.params[:3])


def test_another_seed_gives_other_data(tmp_path, noisy_sampled):
    other = tmp_path / "other.h5"
    simulate(SYSTEM, trajectories=2, out=other, seed=4, params="sample", noise=0.05, **FAST)
    with load(other) as a, load(noisy_sampled) as b:
        assert not np.allclose(a.states[:, 0], b.states[:2, 0])


def test_float32_storage_holds_the_float64_solution_rounded(tmp_path):
    out64, out32 = tmp_path / "a.h5", tmp_path / "b.h5"
    simulate(SYSTEM, trajectories=2, out=out64, **FAST)
    simulate(SYSTEM, trajectories=2, out=out32, dtype="float32", **FAST)
    with load(out64) as a, load(out32) as b:
        assert b.states.dtype == np.float32
        np.testing.assert_array_equal(b.states[()], a.states[()].astype(np.float32))


def test_invariants_are_stored_in_the_systems_order_not_alphabetically(tmp_path):
    out = tmp_path / "k.h5"
    simulate("kepler", trajectories=1, out=out, t_end=0.1, points=3, split=(1, 0, 0))
    order = physode.systems.load("kepler").invariant_names
    assert order != sorted(order)  # else the test could not tell
    with load(out) as data:
        assert data.invariant_names == order
        assert list(data.invariants) == order


def test_success_leaves_only_the_output_file(tmp_path):
    out = tmp_path / "clean.h5"
    result = simulate(SYSTEM, trajectories=2, out=out, **FAST)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clean.h5"]
    assert result.path == out and result.n_trajectories == 2 and result.n_failed == 0


def test_an_existing_file_is_not_overwritten_without_force(tmp_path):
    out = tmp_path / "kept.h5"
    simulate(SYSTEM, trajectories=2, out=out, seed=1, **FAST)
    before = out.read_bytes()
    with pytest.raises(physode.InvalidArgumentError, match="kept.h5 exists; pass force=True"):
        simulate(SYSTEM, trajectories=2, out=out, seed=2, **FAST)
    assert out.read_bytes() == before
    simulate(SYSTEM, trajectories=2, out=out, seed=2, force=True, **FAST)
    assert out.read_bytes() != before


def test_resuming_a_finished_run_with_the_same_settings_does_nothing(tmp_path):
    out = tmp_path / "done.h5"
    simulate(SYSTEM, trajectories=2, out=out, **FAST)
    before = out.read_bytes()
    result = simulate(SYSTEM, trajectories=2, out=out, resume=True, **FAST)
    assert not result.written and out.read_bytes() == before
    assert result.summary().startswith(f"{out} already holds this run: 2 trajectories, nothing")


@pytest.mark.parametrize(
    ("code", "said"),
    [
        (11, "another process holds it open for writing"),
        (38, "set the environment variable HDF5_USE_FILE_LOCKING=FALSE"),
    ],
)
def test_resuming_into_a_file_hdf5_will_not_lock_says_so_and_keeps_it(
    tmp_path, monkeypatch, code, said
):
    # Read as holding no run, it was answered "exists; pass force=True (--force) to overwrite
    # it": advice that destroyed a finished data set the resume would have kept.
    out = tmp_path / "done.h5"
    simulate(SYSTEM, trajectories=2, out=out, **FAST)
    before = out.read_bytes()
    opened = h5py.File

    def locked(name, *args, **kwargs):
        if Path(name) == out:
            raise OSError(
                "Unable to synchronously open file (unable to lock file, errno = "
                f"{code}, error message = '{os.strerror(code)}')"
            )
        return opened(name, *args, **kwargs)

    monkeypatch.setattr(h5py, "File", locked)
    with pytest.raises(physode.InvalidArgumentError) as error:
        simulate(SYSTEM, trajectories=2, out=out, resume=True, **FAST)
    message = str(error.value)
    assert message.startswith(f"{out}: cannot be opened: ") and said in message
    assert message.endswith("(resume=True, --resume, reads it to tell whether it already holds "
                            "this run)")  # fmt: skip
    assert "force" not in message
    monkeypatch.setattr(h5py, "File", opened)
    assert out.read_bytes() == before and sorted(tmp_path.iterdir()) == [out]
    assert not simulate(SYSTEM, trajectories=2, out=out, resume=True, **FAST).written


def test_resuming_a_finished_run_with_other_settings_names_them_and_keeps_the_file(tmp_path):
    # It said only "done.h5 exists; pass force=True (--force) to overwrite it", as if the
    # file were not a finished run of the same command but for one setting.
    out = tmp_path / "done.h5"
    simulate(SYSTEM, trajectories=2, out=out, **FAST)
    before = out.read_bytes()
    with pytest.raises(physode.InvalidArgumentError) as error:
        simulate(SYSTEM, trajectories=2, out=out, resume=True, **{**FAST, "points": 9})
    assert str(error.value) == (
        f"{out} exists and holds a finished run with other settings (points: 7 then, 9 now); "
        "rerun with its settings to keep it, or pass force=True (--force) to overwrite it"
    )
    assert out.read_bytes() == before and sorted(tmp_path.iterdir()) == [out]


def test_bad_arguments_are_all_named_in_one_error(tmp_path):
    with pytest.raises(physode.InvalidArgumentError) as error:
        simulate(
            SYSTEM,
            trajectories=0,
            t_end=-1.0,
            points=1,
            out=tmp_path / "x.h5",
            method="rk4",
            params="random",
            split=(0.5, 0.5, 0.5),
            dtype="float16",
        )
    message = str(error.value)
    for fragment in (
        "trajectories=0",
        "t_end=-1.0",
        "points=1",
        "method='rk4'",
        "'dop853'",
        "params='random'",
        "split=(0.5, 0.5, 0.5)",
        "dtype='float16'",
    ):
        assert fragment in message
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("system", [3, None, 2.5])
def test_a_system_that_is_neither_a_name_nor_a_system_is_named_with_the_other_problems(
    tmp_path, system
):
    with pytest.raises(physode.InvalidArgumentError) as error:
        simulate(system, trajectories=0, out=tmp_path / "x.h5", **FAST)
    message = str(error.value)
    assert f"system={system!r} is neither a catalogue name" in message
    assert "trajectories=0" in message and not any(tmp_path.iterdir())


@pytest.mark.parametrize("out", [None, 3])
def test_an_out_that_is_not_a_path_is_named_with_the_other_problems(tmp_path, out):
    with pytest.raises(physode.InvalidArgumentError) as error:
        simulate(SYSTEM, trajectories=0, out=out, **FAST)
    message = str(error.value)
    assert f"out={out!r} must be a file path" in message and "trajectories=0" in message


def test_an_out_that_ends_in_a_separator_is_refused_as_a_folder(tmp_path):
    out = f"{tmp_path}{os.sep}runs{os.sep}"
    with pytest.raises(physode.InvalidArgumentError) as error:
        simulate(SYSTEM, trajectories=2, out=out, **FAST)
    assert f"out={out!r} names a folder (it ends in {os.sep!r}); give a file name such as " in (
        str(error.value)
    )
    assert not any(tmp_path.iterdir())  # not a file named runs


@pytest.mark.parametrize("split", ["100", (True, False, False), (10**400, 0, 0)])
def test_split_fractions_must_be_numbers_not_text_or_booleans(tmp_path, split):
    with pytest.raises(physode.InvalidArgumentError, match="split=.* must be three fractions"):
        simulate(SYSTEM, trajectories=2, out=tmp_path / "x.h5", split=split, **FAST)
    assert not any(tmp_path.iterdir())


def test_split_fractions_in_float32_are_accepted(tmp_path):
    out = tmp_path / "x.h5"
    split = np.array([0.6, 0.2, 0.2], dtype=np.float32)  # sums to 1 + 1.5e-8
    simulate(SYSTEM, trajectories=5, out=out, split=split, **FAST)
    with load(out) as data:
        assert [len(data.split[name]) for name in ("train", "val", "test")] == [3, 1, 1]


@pytest.mark.parametrize("dtype", [np.dtype("float32"), np.float32, torch.float32])
def test_a_dtype_given_as_an_object_not_its_name_is_refused_by_name(tmp_path, dtype):
    with pytest.raises(physode.InvalidArgumentError, match=r"dtype=.*choose one of \['float64'"):
        simulate(SYSTEM, trajectories=2, out=tmp_path / "x.h5", dtype=dtype, **FAST)
    assert not any(tmp_path.iterdir())


def test_numpy_scalars_are_accepted_as_numbers(tmp_path):
    out = tmp_path / "numpy.h5"
    reals = {"t_end": np.float32(3.0), "rtol": np.float64(1e-8), "atol": np.float32(1e-8)}
    simulate(SYSTEM, trajectories=np.int64(2), points=np.int32(7), out=out, quiet=True,
             noise=np.float32(0.01), **reals)  # fmt: skip
    with load(out) as data:
        assert data.t[-1] == 3.0 and data.noisy_states is not None
    with pytest.raises(physode.InvalidArgumentError, match="t_end=np.True_|t_end=True"):
        simulate(SYSTEM, trajectories=1, out=tmp_path / "b.h5", **{**FAST, "t_end": np.True_})


@pytest.mark.parametrize("setting", ["t_end", "noise", "rtol"])
def test_an_integer_too_large_for_a_float_is_refused_by_name(tmp_path, setting):
    # 10**400 raised OverflowError from math.isfinite or float() instead of a listed problem.
    with pytest.raises(physode.InvalidArgumentError, match=f"{setting}=10000000000"):
        simulate(SYSTEM, trajectories=1, out=tmp_path / "x.h5", **{**FAST, setting: 10**400})
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("threads", [0, 1.5, True])
def test_a_bad_thread_count_is_listed_with_the_other_bad_arguments(tmp_path, threads):
    before = torch.get_num_threads()
    with pytest.raises(physode.InvalidArgumentError) as info:
        simulate(SYSTEM, trajectories=0, out=tmp_path / "x.h5", threads=threads, **FAST)
    message = str(info.value)
    assert f"threads={threads!r} must be an integer >= 1" in message
    assert "trajectories=0 must be an integer >= 1" in message
    assert torch.get_num_threads() == before


def test_a_seed_too_large_to_store_is_refused_before_simulating(tmp_path):
    with pytest.raises(physode.InvalidArgumentError, match=r"seed=18446744073709551616 .*2\*\*64"):
        simulate(SYSTEM, trajectories=1, out=tmp_path / "x.h5", seed=2**64, **FAST)
    assert not any(tmp_path.iterdir())
    simulate(SYSTEM, trajectories=1, out=tmp_path / "x.h5", seed=2**64 - 1, **FAST)
    with load(tmp_path / "x.h5") as data:
        assert data.seed == 2**64 - 1


def test_sample_with_no_parameter_ranges_is_refused_naming_them(tmp_path):
    # "sample" on a system none of whose parameters has a range gave the defaults silently,
    # while a list naming such a parameter was refused.
    spec = tmp_path / "fixed.toml"
    spec.write_text(
        'name = "fixed"\nform = "equations"\n[parameters]\nk = 2.0\n[equations]\nx = "-k * x"\n'
    )
    out = tmp_path / "fixed.h5"
    with pytest.raises(physode.InvalidArgumentError, match=r"no parameter of 'fixed' has a range"):
        simulate(spec, trajectories=2, out=out, params="sample", **FAST)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fixed.toml"]
    # Where some have a range (three_body's G has none), those are drawn and the others kept.
    system = physode.systems.load("three_body")
    result = simulate(system, trajectories=2, out=out, params="sample", **{**FAST, "t_end": 0.1})
    with load(result.path) as data:
        assert (data.params[:, data.parameter_names.index("G")] == system.parameters["G"]).all()


def test_a_system_without_parameters_is_simulated_and_stored(tmp_path):
    # x' = -x + sin(t): x(t) = (x0 + 1/2) exp(-t) + (sin(t) - cos(t)) / 2
    spec = tmp_path / "forced_decay.toml"
    spec.write_text(
        'name = "forced_decay"\ndescription = "x\' = -x + sin(t)"\nform = "equations"\n'
        '[equations]\nx = "-x + sin(t)"\n'
    )
    out = tmp_path / "forced_decay.h5"
    simulate(spec, trajectories=3, out=out, params="sample", **FAST)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["forced_decay.h5", "forced_decay.toml"]
    with load(out) as data:
        assert data.params.shape == (3, 0) and data.parameter_names == []
        x0, t = data.states[:, 0, 0], data.t
        exact = (x0[:, None] + 0.5) * np.exp(-t) + (np.sin(t) - np.cos(t)) / 2
        np.testing.assert_allclose(data.states[:, :, 0], exact, rtol=0, atol=1e-7)
        np.testing.assert_allclose(data.derivatives[:, :, 0], np.sin(t) - exact, atol=1e-7)
    item = TrajectoryDataset(out, split="all")[0]
    assert item["params"].shape == (0,) and item["ys"].shape == (FAST["points"], 1)


def test_an_unknown_system_names_the_catalogue(tmp_path):
    with pytest.raises(physode.InvalidArgumentError, match="unknown system 'pendulumm'.*pendulum"):
        simulate("pendulumm", trajectories=1, out=tmp_path / "x.h5", **FAST)


def test_solver_failures_are_flagged_and_kept_not_dropped(tmp_path):
    out = tmp_path / "failed.h5"
    # The fewest max_steps allowed (a step lands on each of the 6 later output times); the
    # solve needs 8.
    result = simulate(SYSTEM, trajectories=3, out=out, max_steps=6, **FAST)
    assert result.n_failed == 3
    with load(out) as data:
        assert len(data) == 3
        assert (data.status == int(physode.Status.MAX_STEPS)).all()
        assert (data.flags == 1).all()  # the NaN after the failure is not flag bit 4's
        assert np.isfinite(data.states[:, 0]).all() and np.isnan(data.states[:, -1]).all()
    report = check(out)
    assert report.n_failed == 3 and not report.passed and report.failed_trajectories == [0, 1, 2]
    assert report.invariants == [] and report.n_succeeded == 0
    assert "no trajectory was solved to the end; no drift to report" in report.table()


def test_a_check_report_counts_its_failures_from_their_list_so_the_two_agree():
    report = physode.data.CheckReport("x.h5", 1e-6, 5, failed_trajectories=[1, 4])
    assert report.n_failed == 2 and report.n_succeeded == 3 and not report.passed
    assert report.table().startswith("x.h5: 5 trajectories, 2 solver failures (trajectories 1, 4)")
    report.failed_trajectories.clear()
    assert report.n_failed == 0 and report.passed


def test_the_drift_plot_of_a_data_set_whose_every_solve_failed_draws_without_warnings(tmp_path):
    out = tmp_path / "failed.h5"
    # NaN from the second point: one step does not reach t_end.
    simulate(SYSTEM, trajectories=2, out=out, max_steps=1, **{**FAST, "points": 2})
    report = check(out)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        path = report.plot(tmp_path / "drift.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_invariant_drift_beyond_the_threshold_is_flagged_and_kept(tmp_path):
    out = tmp_path / "drift.h5"
    loose = {**FAST, "rtol": 1e-4, "atol": 1e-4, "method": "bosh3"}
    result = simulate(SYSTEM, trajectories=3, out=out, drift_threshold=1e-12, **loose)
    assert result.n_drifted == 3 and result.n_failed == 0
    with load(out) as data:
        assert len(data) == 3 and (data.flags == 2).all()
        drift = np.abs(data.invariants["energy"][:, -1] / data.invariants["energy"][:, 0] - 1)
        assert (drift > 1e-12).all()


def _interrupt_after_first_chunk(monkeypatch, system, **settings):
    """Run ``simulate`` and interrupt it (KeyboardInterrupt) once its first chunk is written."""
    original = simulate_module._simulate_chunk
    calls = []

    def interrupted(*args, **kwargs):
        if calls:
            raise KeyboardInterrupt
        calls.append(1)
        return original(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(simulate_module, "_simulate_chunk", interrupted)
        with pytest.raises(KeyboardInterrupt):
            simulate(system, **settings)


def test_an_error_before_any_chunk_removes_the_run_folder_and_a_corrected_run_starts_clean(
    tmp_path, monkeypatch
):
    out = tmp_path / "broken.h5"
    settings = {"trajectories": 4, "out": out, "chunk_size": 2, **FAST}

    def broken(*args, **kwargs):
        raise RuntimeError("the solver refused it")

    with monkeypatch.context() as patch:
        patch.setattr(simulate_module, "_simulate_chunk", broken)
        with pytest.raises(RuntimeError, match="refused"):
            simulate(SYSTEM, **settings)
    assert list(tmp_path.iterdir()) == []  # no run.json-only OUT.parts/ left to refuse
    assert simulate(SYSTEM, **settings).written


def test_an_error_after_a_chunk_keeps_the_run_folder_for_resume(tmp_path, monkeypatch):
    out = tmp_path / "half.h5"
    settings = {"trajectories": 4, "out": out, "chunk_size": 2, **FAST}
    real = simulate_module._simulate_chunk

    def second_fails(system, start, *args):
        if start > 0:
            raise RuntimeError("the solver refused it")
        return real(system, start, *args)

    with monkeypatch.context() as patch:
        patch.setattr(simulate_module, "_simulate_chunk", second_fails)
        with pytest.raises(RuntimeError, match="refused"):
            simulate(SYSTEM, **settings)
    assert (tmp_path / "half.h5.parts" / "chunk-000000.h5").exists()
    assert simulate(SYSTEM, resume=True, **settings).n_resumed_chunks == 1


def test_a_t_end_whose_output_times_collide_is_refused_before_anything_is_written(tmp_path):
    out = tmp_path / "tiny.h5"
    with pytest.raises(physode.InvalidArgumentError, match=r"t_end=1e-323 is too small.*points"):
        simulate(SYSTEM, trajectories=2, out=out, t_end=1e-323, points=5, quiet=True)
    assert list(tmp_path.iterdir()) == []


def test_a_chunk_larger_than_the_memory_share_is_refused_with_a_chunk_size_that_fits(
    tmp_path, monkeypatch
):
    out = tmp_path / "big.h5"
    settings = {"trajectories": 64, "out": out, "chunk_size": 64, **FAST}
    system = physode.systems.load(SYSTEM)
    run = {"params": "default", "noise": 0.0, "points": FAST["points"]}
    per_trajectory = simulate_module._chunk_bytes(system, run, 1)
    # A machine whose memory share holds 10 trajectories of this run.
    memory = 10 * per_trajectory / simulate_module._MEMORY_SHARE
    monkeypatch.setattr(simulate_module, "_physical_memory", lambda: int(memory))
    fits = r"chunk_size=10 \(--chunk-size 10\) fits"
    with pytest.raises(physode.InvalidArgumentError, match=fits):
        simulate(SYSTEM, **settings)
    assert list(tmp_path.iterdir()) == []
    assert simulate(SYSTEM, **{**settings, "chunk_size": 10}).written


def test_an_interrupted_run_must_be_resumed_with_its_own_settings_or_forced(tmp_path, monkeypatch):
    out = tmp_path / "interrupted.h5"
    settings = {"trajectories": 4, "out": out, "chunk_size": 2, **FAST}
    _interrupt_after_first_chunk(monkeypatch, SYSTEM, **settings)
    assert not out.exists() and (tmp_path / "interrupted.h5.parts/chunk-000000.h5").exists()
    with pytest.raises(physode.InvalidArgumentError, match="holds an interrupted run.*--resume"):
        simulate(SYSTEM, **settings)
    with pytest.raises(physode.InvalidArgumentError, match="other settings.*rtol: 1e-08 then"):
        simulate(SYSTEM, **{**settings, "rtol": 1e-9}, resume=True)
    result = simulate(SYSTEM, **{**settings, "rtol": 1e-9}, force=True)
    assert result.n_resumed_chunks == 0
    with load(out) as data:
        assert data.solver["rtol"] == 1e-9


def test_max_step_caps_every_trajectorys_steps_and_is_stored_with_the_solver_settings(tmp_path):
    capped, free = tmp_path / "capped.h5", tmp_path / "free.h5"
    simulate(SYSTEM, trajectories=4, out=capped, max_step=0.05, chunk_size=2, **FAST)
    simulate(SYSTEM, trajectories=4, out=free, chunk_size=2, **FAST)
    with load(capped) as data, load(free) as uncapped:
        # t_end = 3: at least 60 steps of at most 0.05; the tolerance alone takes far fewer.
        assert (data.n_steps >= 60).all() and (uncapped.n_steps < 30).all()
        assert data.solver == {**uncapped.solver, "max_step": 0.05}
        assert json.loads(data.attrs["simulation"])["solver"]["max_step"] == 0.05
        assert data.attrs["command_line"].endswith(" --max-step 0.05")
        # Without it, the settings and the command are those of physode before max_step.
        assert "max_step" not in json.loads(uncapped.attrs["simulation"])["solver"]
        assert "--max-step " not in uncapped.attrs["command_line"]
        assert np.allclose(data.states, uncapped.states, rtol=1e-6, atol=1e-6)


def test_a_max_steps_no_trajectory_can_finish_within_is_refused_before_simulating(tmp_path):
    # Without dense output (heun) each output time after the first takes a step of its own:
    # 10**6 points under the default max_steps ran for minutes, to store every trajectory as
    # failed at a tenth of t_end.
    out = tmp_path / "x.h5"
    with pytest.raises(physode.InvalidArgumentError) as error:
        simulate(SYSTEM, trajectories=2, out=out, max_steps=5, method="heun", **FAST)
    assert (
        "max_steps=5 is fewer than the 6 steps that points=7 take at least (the solve lands a "
        "step on each output time after the first), so every trajectory would fail; give "
        "max_steps >= 6 (--max-steps), or fewer points"
    ) in str(error.value)
    with pytest.raises(physode.InvalidArgumentError) as error:
        simulate(SYSTEM, trajectories=2, out=out, max_steps=59, max_step=0.05, **FAST)
    assert (
        "max_steps=59 is fewer than the 60 steps of at most max_step=0.05 that t_end=3.0 "
        "takes, so every trajectory would fail; give max_steps >= 60 (--max-steps)"
    ) in str(error.value)
    with pytest.raises(physode.InvalidArgumentError, match="the 1e\\+303 steps of at most"):
        simulate(SYSTEM, trajectories=2, out=out, max_step=1e-300, **{**FAST, "t_end": 1e3})
    assert not any(tmp_path.iterdir())
    # At the bound the run goes on: 60 steps of 0.05 reach t_end.
    result = simulate(SYSTEM, trajectories=2, out=out, max_steps=60, max_step=0.05,
                      **{**FAST, "rtol": 1e-3, "atol": 1e-3})  # fmt: skip
    assert result.n_failed == 0
    # With dense output (dop853, the default) a step passes over output times: 41 points
    # take fewer than 40 steps, and were once refused.
    out.unlink()
    result = simulate(SYSTEM, trajectories=2, out=out, max_steps=30, **{**FAST, "points": 41})
    assert result.n_failed == 0


@pytest.mark.parametrize("max_step", [0, -0.1, math.inf, True, "0.1"])
def test_a_max_step_that_is_not_a_positive_number_is_refused_by_name(tmp_path, max_step):
    with pytest.raises(physode.InvalidArgumentError) as error:
        simulate(SYSTEM, trajectories=2, out=tmp_path / "x.h5", max_step=max_step, **FAST)
    assert f"max_step={max_step!r} must be a finite number > 0" in str(error.value)


def test_a_resume_with_another_max_step_is_refused_and_one_started_before_it_resumes(
    tmp_path, monkeypatch
):
    out = tmp_path / "capped.h5"
    settings = {"trajectories": 4, "out": out, "chunk_size": 2, **FAST}
    _interrupt_after_first_chunk(monkeypatch, SYSTEM, **settings)
    # run.json as physode before max_step (2026-12-07) wrote it: no max_step among the solver's.
    run = json.loads((tmp_path / "capped.h5.parts" / "run.json").read_text())
    assert set(run["solver"]) == {"method", "rtol", "atol", "max_steps", "step_control"}
    changed = "other settings \\(solver.max_step: None then, 0.05 now\\)"
    with pytest.raises(physode.InvalidArgumentError, match=changed):
        simulate(SYSTEM, **settings, max_step=0.05, resume=True)
    assert simulate(SYSTEM, **settings, resume=True).n_resumed_chunks == 1
    # Its finished file is this run's, and another max_step's is not.
    assert not simulate(SYSTEM, **settings, resume=True).written
    with pytest.raises(physode.InvalidArgumentError, match="solver.max_step: None then, 0.05"):
        simulate(SYSTEM, **settings, max_step=0.05, resume=True)
    capped = tmp_path / "other.h5"
    _interrupt_after_first_chunk(monkeypatch, SYSTEM, **{**settings, "out": capped}, max_step=0.05)
    with pytest.raises(physode.InvalidArgumentError, match="solver.max_step: 0.05 then, None now"):
        simulate(SYSTEM, **{**settings, "out": capped}, resume=True)
    assert simulate(SYSTEM, **{**settings, "out": capped}, max_step=0.05,
                    resume=True).n_resumed_chunks == 1  # fmt: skip


def test_a_data_set_without_max_step_loads_checks_and_trains_with_a_capped_trainer(tmp_path):
    from physode.models import NeuralODE
    from physode.train import Trainer

    out = tmp_path / "older.h5"
    simulate(SYSTEM, trajectories=6, out=out, **FAST)
    with h5py.File(out) as f:  # the solver settings of a file of physode before max_step
        assert set(json.loads(f.attrs["solver"])) == {
            "method", "rtol", "atol", "max_steps", "step_control"
        }
    assert check(out).passed
    torch.manual_seed(0)
    trainer = Trainer(NeuralODE(2, width=4, depth=1), TrajectoryDataset(out), epochs=1,
                      max_step=0.1)  # fmt: skip
    assert len(trainer.fit().history) == 1


def test_resuming_after_the_specification_was_edited_says_so_in_words(tmp_path, monkeypatch):
    # The refusal named only the hashes: "system_spec_sha256: '44ffdb...' then, '6d109a...' now".
    spec = tmp_path / "osc.toml"
    text = physode.systems.path(SYSTEM).read_text()
    spec.write_text(text)
    out = tmp_path / "edited.h5"
    settings = {"trajectories": 4, "out": out, "chunk_size": 2, **FAST}
    _interrupt_after_first_chunk(monkeypatch, spec, **settings)
    edited = text.replace("[parameters]", "# edited\n[parameters]")
    spec.write_text(edited)
    with pytest.raises(physode.InvalidArgumentError) as error:
        simulate(spec, **settings, resume=True)
    then, now = simulate_module.sha256_text(text)[:12], simulate_module.sha256_text(edited)[:12]
    assert (
        f"(the specification of system 'harmonic_oscillator', from {spec}, changed since the run "
        f"started (system_spec_sha256 {then}... then, {now}... now)); rerun with the original"
    ) in str(error.value)


def test_resuming_under_other_software_is_refused_naming_the_versions(tmp_path, monkeypatch):
    # A run interrupted under one torch and resumed after an upgrade mixed chunks that no single
    # run gives, and the file's software attribute named only the later versions.
    out = tmp_path / "upgraded.h5"
    settings = {"trajectories": 4, "out": out, "chunk_size": 2, **FAST}
    _interrupt_after_first_chunk(monkeypatch, SYSTEM, **settings)
    then = simulate_module._software_versions()
    now = {**then, "torch": "99.0.0"}
    with monkeypatch.context() as patch:
        patch.setattr(simulate_module, "_software_versions", lambda: now)
        with pytest.raises(physode.InvalidArgumentError) as error:
            simulate(SYSTEM, **settings, resume=True)
        assert (
            f"its chunks were computed with other software (software.torch: {then['torch']!r} "
            "then, '99.0.0' now)"
        ) in str(error.value)
        assert "force=True (--force) without resume" in str(error.value)
        assert (tmp_path / "upgraded.h5.parts" / "chunk-000000.h5").exists()  # nothing lost
    result = simulate(SYSTEM, **settings, resume=True)  # the software that started it
    assert result.n_resumed_chunks == 1


def test_a_run_started_before_the_software_was_kept_resumes(tmp_path, monkeypatch):
    # run.json of physode before 2026-12-07 holds the settings alone.
    out = tmp_path / "older.h5"
    settings = {"trajectories": 4, "out": out, "chunk_size": 2, **FAST}
    _interrupt_after_first_chunk(monkeypatch, SYSTEM, **settings)
    config = tmp_path / "older.h5.parts" / "run.json"
    run = json.loads(config.read_text())
    assert run.pop("software") == simulate_module._software_versions()
    config.write_text(json.dumps(run))
    assert simulate(SYSTEM, **settings, resume=True).n_resumed_chunks == 1


@pytest.mark.parametrize(
    ("then", "now", "said"),
    [
        ({"system_name": "kepler"}, {"system_name": "three_body"},
         "the system changed since the run started: 'kepler' then, 'three_body' now "
         "(system_spec_sha256 aaaaaaaaaaaa... then, bbbbbbbbbbbb... now)"),
        ({"system_name": "kepler"}, {"system_name": "kepler"},
         "the specification of system 'kepler' changed since the run started "
         "(system_spec_sha256 aaaaaaaaaaaa... then, bbbbbbbbbbbb... now)"),
    ],
)  # fmt: skip
def test_a_changed_system_is_described_before_the_other_settings(then, now, said):
    then = {**then, "system_spec_sha256": "a" * 64, "seed": 1, "solver": {"rtol": 1e-8}}
    now = {**now, "system_spec_sha256": "b" * 64, "seed": 2, "solver": {"rtol": 1e-8}}
    differences = simulate_module._describe_differences(then, now, source=now["system_name"])
    assert differences == [said, "seed: 1 then, 2 now"]


def test_resume_recomputes_a_chunk_file_damaged_on_disk(tmp_path, monkeypatch):
    out = tmp_path / "damaged.h5"
    settings = {"trajectories": 4, "chunk_size": 2, "seed": 4, **FAST}
    _interrupt_after_first_chunk(monkeypatch, SYSTEM, out=out, **settings)
    chunk = tmp_path / "damaged.h5.parts" / "chunk-000000.h5"
    with h5py.File(chunk) as f:
        states = f["states"][()]
    data = bytearray(chunk.read_bytes())
    offset = data.find(states.tobytes())
    data[offset + 5] ^= 0x01  # one bit of one stored state, as a failing disk might flip it
    chunk.write_bytes(bytes(data))

    result = simulate(SYSTEM, out=out, resume=True, **settings)
    assert result.n_resumed_chunks == 0
    reference = tmp_path / "reference.h5"
    simulate(SYSTEM, out=reference, **settings)
    _assert_same_datasets(out, reference)


def test_resume_after_sigkill_equals_an_uninterrupted_run(tmp_path):
    out = tmp_path / "killed.h5"
    settings = {"trajectories": 24, "chunk_size": 2, "seed": 9, "params": "sample", "noise": 0.01}
    argv = [sys.executable, "-m", "physode", "simulate", SYSTEM, "--out", str(out)]
    argv += ["--t-end", "3", "--points", "7", "--rtol", "1e-8", "--atol", "1e-8", "--quiet"]
    argv += ["--trajectories", "24", "--chunk-size", "2", "--seed", "9", "--params", "sample"]
    argv += ["--noise", "0.01"]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    process = subprocess.Popen(argv, cwd=tmp_path, env=env)
    parts = tmp_path / "killed.h5.parts"
    deadline = time.monotonic() + 120
    try:
        while len(list(parts.glob("chunk-*.h5"))) < 2:
            assert process.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "no chunk finished within 120 s"
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    assert process.returncode == -signal.SIGKILL
    finished = sorted(parts.glob("chunk-*.h5"))
    assert not out.exists() and 2 <= len(finished) < 12
    # A leftover temporary and a damaged chunk file must not poison the resumed run.
    (parts / "chunk-000011.h5.tmp").write_bytes(b"half a chunk")
    damaged = parts / "chunk-000010.h5"
    damaged.write_bytes(b"\x89HDF\r\n\x1a\n garbage")
    finished = [path for path in finished if path != damaged]

    result = simulate(SYSTEM, out=out, resume=True, **settings, **FAST)
    assert result.n_resumed_chunks == len(finished)
    assert not parts.exists()
    reference = tmp_path / "reference.h5"
    simulate(SYSTEM, out=reference, **settings, **FAST)
    _assert_same_datasets(out, reference)


def test_a_users_own_specification_file_is_stored_and_rebuilt(tmp_path):
    spec = tmp_path / "my_oscillator.toml"
    text = physode.systems.path(SYSTEM).read_text()
    spec.write_text(text.replace("k = { value = 1.0", "k = { value = 1.5"))
    out = tmp_path / "mine.h5"
    simulate(spec, trajectories=2, out=out, **FAST)
    with load(out) as data:
        assert data.attrs["system_spec"] == spec.read_text()
        assert data.system.parameters == {"m": 1.0, "k": 1.5}
        np.testing.assert_array_equal(data.params, [[1.0, 1.5], [1.0, 1.5]])
        assert str(spec) in data.attrs["command_line"]


def test_a_second_process_writing_the_same_output_is_refused(tmp_path):
    out = tmp_path / "busy.h5"
    holder = simulate_module._Workspace(out)
    holder.lock()  # as a running simulate holds it
    try:
        with pytest.raises(physode.InvalidArgumentError, match="another process is simulating"):
            simulate(SYSTEM, trajectories=1, out=out, resume=True, **FAST)
    finally:
        holder.release()
    simulate(SYSTEM, trajectories=1, out=out, resume=True, **FAST)
    assert out.exists()


def test_a_file_system_without_locks_simulates_without_one(tmp_path, monkeypatch):
    # flock's ENOLCK (NFS without its lock daemon) was taken for another process holding the
    # lock: every run there was refused as "another process is simulating".
    fcntl = pytest.importorskip("fcntl")

    def no_locks(descriptor, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    out = tmp_path / "nfs.h5"
    simulate(SYSTEM, trajectories=1, out=out, **FAST)
    with load(out) as data:
        assert len(data) == 1


def test_the_progress_bar_shows_trajectories_per_second_only_on_a_terminal(
    tmp_path, capsys, monkeypatch
):
    settings = {**FAST, "trajectories": 2, "quiet": False}
    simulate(SYSTEM, out=tmp_path / "a.h5", **settings)
    assert capsys.readouterr().err == ""  # not a terminal
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    simulate(SYSTEM, out=tmp_path / "b.h5", **settings)
    assert "traj/s" in capsys.readouterr().err
    simulate(SYSTEM, out=tmp_path / "c.h5", **{**settings, "quiet": True})
    assert capsys.readouterr().err == ""


def test_a_run_killed_while_assembling_resumes_from_all_its_chunks(tmp_path, monkeypatch):
    out = tmp_path / "assembling.h5"
    settings = {"trajectories": 4, "chunk_size": 2, **FAST}

    def killed_midway(path, **kwargs):
        path.write_bytes(b"\x89HDF\r\n\x1a\n half written")
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(simulate_module, "write_store", killed_midway)
        with pytest.raises(KeyboardInterrupt):
            simulate(SYSTEM, out=out, **settings)
    leftover = tmp_path / "assembling.h5.tmp"
    assert not out.exists() and not leftover.exists()  # Ctrl-C removes it; SIGKILL leaves it:
    leftover.write_bytes(b"\x89HDF\r\n\x1a\n half written")
    result = simulate(SYSTEM, out=out, resume=True, **settings)
    assert result.n_resumed_chunks == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["assembling.h5"]
    reference = tmp_path / "reference.h5"
    simulate(SYSTEM, out=reference, **settings)
    _assert_same_datasets(out, reference)


def test_an_interrupted_forced_rewrite_keeps_the_output_and_a_resume_cleans_up(
    tmp_path, monkeypatch
):
    out = tmp_path / "kept.h5"
    settings = {"trajectories": 4, "chunk_size": 2, **FAST}
    simulate(SYSTEM, out=out, **settings)
    before = out.read_bytes()

    def interrupted(self, start, values):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(ChunkWriter, "write", interrupted)
        with pytest.raises(KeyboardInterrupt):
            simulate(SYSTEM, out=out, force=True, **settings)
    # No half-written OUT.tmp; the finished chunks stay for a resume; OUT is untouched.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.h5", "kept.h5.parts"]
    assert out.read_bytes() == before

    result = simulate(SYSTEM, out=out, resume=True, **settings)
    assert not result.written and "nothing written" in result.summary()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.h5"]
    assert out.read_bytes() == before


def test_a_finished_output_keeps_the_leftovers_of_a_run_with_other_settings(tmp_path, monkeypatch):
    out = tmp_path / "kept.h5"
    settings = {"trajectories": 4, "chunk_size": 2, **FAST}
    simulate(SYSTEM, out=out, **settings)

    def interrupted(self, start, values):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(ChunkWriter, "write", interrupted)
        with pytest.raises(KeyboardInterrupt):
            simulate(SYSTEM, out=out, force=True, **{**settings, "seed": 5})
    result = simulate(SYSTEM, out=out, resume=True, **settings)
    assert not result.written
    assert (tmp_path / "kept.h5.parts" / "run.json").exists()  # seed 5 can still be resumed
    result = simulate(SYSTEM, out=out, resume=True, force=True, **{**settings, "seed": 5})
    assert result.written and result.n_resumed_chunks == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.h5"]


def test_sampled_masses_shape_the_initial_states_drawn_for_them(tmp_path):
    # three_body draws its starts for the masses it is given (zero total momentum, circular
    # velocities); with params="sample" they were once drawn for the default masses instead.
    system = physode.systems.load("three_body")
    starts = []
    for chunk_size in (3, 64):  # a row's start depends on its index alone, not on the chunking
        out = tmp_path / f"three_body_{chunk_size}.h5"
        simulate("three_body", trajectories=6, out=out, seed=5, params="sample",
                 chunk_size=chunk_size, t_end=0.1, points=2, quiet=True)  # fmt: skip
        with load(out) as data:
            y0 = torch.as_tensor(data.states[:, 0])
            p = torch.as_tensor(data.params)
        assert p[:, :3].std(dim=0).min() > 0  # the masses do differ between trajectories
        invariants = system.invariants(y0, p)
        for name in ("momentum_x", "momentum_y"):
            assert invariants[name].abs().max() < 1e-12, name
        starts.append(y0)
    torch.testing.assert_close(starts[0], starts[1], rtol=0, atol=0)


@pytest.mark.parametrize(
    "settings",
    [
        {"params": "sample", "noise": 0.05, "split": (0.5, 0.25, 0.25), "dtype": "float32",
         "method": "dopri5", "drift_threshold": 1e-3, "max_steps": 5000},
        {"rtol": 1e-9, "atol": 1e-11},
        {"params": ["k"]},
        {"max_step": 0.05},
    ],
)  # fmt: skip
def test_the_stored_command_line_rebuilds_the_file_bit_for_bit(tmp_path, settings):
    """A data set carries what it takes to make it again: its command, rerun, gives its bytes."""
    import shlex

    from physode.cli import main

    kwargs = {**FAST, **settings}
    first = tmp_path / "first.h5"
    simulate(SYSTEM, trajectories=5, out=first, seed=11, **kwargs)
    with load(first) as data:
        command = shlex.split(data.attrs["command_line"])
        stored_settings = data.attrs["simulation"]
    assert command[:2] == ["physode", "simulate"]
    out = command.index("--out") if "--out" in command else command.index("-o")
    command[out + 1] = str(tmp_path / "again.h5")
    assert main([*command[1:], "--quiet"]) == 0
    _assert_same_datasets(first, tmp_path / "again.h5")
    with load(tmp_path / "again.h5") as again:
        assert again.attrs["simulation"] == stored_settings


def _rerun_stored_command(data_set: Path, again: Path) -> list[str]:
    """Run the command line stored in ``data_set`` again, writing ``again``; its arguments."""
    import shlex

    from physode.cli import main

    with load(data_set) as data:
        command = shlex.split(data.attrs["command_line"])
    command[command.index("--out") + 1] = str(again)
    assert main([*command[1:], "--quiet"]) == 0
    return command


def test_a_system_object_from_the_catalogue_is_named_by_its_name_in_the_command(tmp_path):
    simulate(physode.systems.load(SYSTEM), trajectories=3, out=tmp_path / "a.h5", **FAST)
    command = _rerun_stored_command(tmp_path / "a.h5", tmp_path / "again.h5")
    assert command[2] == SYSTEM
    _assert_same_datasets(tmp_path / "a.h5", tmp_path / "again.h5")


def test_the_command_of_an_edited_system_object_names_its_spec_file_not_the_catalogue(
    tmp_path, monkeypatch
):
    """A user's copy of a catalogue system, edited but keeping its name, and passed as an
    object: the stored command named the catalogue's system, which reran other data."""
    text = physode.systems.path(SYSTEM).read_text()
    text = text.replace("k = { value = 1.0", "k = { value = 1.7")
    (tmp_path / "stiff").mkdir()
    (tmp_path / "stiff" / "spring.toml").write_text(text)
    stiff = physode.systems.load(tmp_path / "stiff" / "spring.toml")
    simulate(stiff, trajectories=3, out=tmp_path / "stiff.h5", **FAST)
    monkeypatch.chdir(tmp_path)
    with load(tmp_path / "stiff.h5") as data:
        # Where the command expects it: the file named after the system, in this folder.
        Path(f"{SYSTEM}.toml").write_text(data.attrs["system_spec"])
    command = _rerun_stored_command(tmp_path / "stiff.h5", tmp_path / "again.h5")
    assert command[2] == f"{SYSTEM}.toml"
    _assert_same_datasets(tmp_path / "stiff.h5", tmp_path / "again.h5")


def test_summaries_of_one_trajectory_use_the_singular(tmp_path):
    out = tmp_path / "one.h5"
    result = simulate(SYSTEM, trajectories=1, out=out, **FAST)
    assert f"wrote {out}: 1 trajectory in" in result.summary()
    assert "(0 solver failures, 0 invariant drift flags)" in result.summary()
    assert check(out).table().startswith(f"{out}: 1 trajectory, 0 solver failures")


def test_a_chunk_removed_during_the_run_is_a_physode_error_that_resume_mends(
    tmp_path, monkeypatch
):
    out = tmp_path / "raced.h5"
    settings = {"trajectories": 4, "chunk_size": 2, "seed": 4, **FAST}
    read = simulate_module.read_chunk

    def removed_before_assembly(path, run_id):
        Path(path).unlink()  # as a second run on the same OUT, or a cleanup, might
        return read(path, run_id) if Path(path).exists() else None

    with monkeypatch.context() as patch:
        patch.setattr(simulate_module, "read_chunk", removed_before_assembly)
        with pytest.raises(physode.PhysodeError, match="vanished or changed.*resume=True"):
            simulate(SYSTEM, out=out, **settings)
    assert not out.exists() and (tmp_path / "raced.h5.parts").is_dir()

    result = simulate(SYSTEM, out=out, resume=True, **settings)
    assert result.n_resumed_chunks == 1  # the chunk that was not removed
    reference = tmp_path / "reference.h5"
    simulate(SYSTEM, out=reference, **settings)
    _assert_same_datasets(out, reference)


@pytest.mark.parametrize(
    ("n", "fractions", "counts"),
    [
        # round() gave 1 trajectory to a test split of 0: round(2.5) is 2 twice, test the rest.
        (5, (0.5, 0.5, 0.0), [3, 2, 0]),
        # round() gave 2, 2, 1: the largest fraction got the fewest.
        (5, (0.3, 0.3, 0.4), [2, 1, 2]),
        # round() sent a lone trajectory to a test split of 0, or of the smallest fraction.
        (1, (0.5, 0.5, 0.0), [1, 0, 0]),
        (1, (0.4, 0.3, 0.3), [1, 0, 0]),
        (1, (0.8, 0.1, 0.1), [1, 0, 0]),
        (1, (0.0, 0.0, 1.0), [0, 0, 1]),
        (2, (0.0, 1.0, 0.0), [0, 2, 0]),
        # 6.3, 1.8, 0.9: the two left over go to the remainders 0.9 and 0.8.
        (9, (0.7, 0.2, 0.1), [6, 2, 1]),
        # 819.2, 102.4, 102.4: the one left over goes to the earlier of the tied splits.
        (1024, (0.8, 0.1, 0.1), [819, 103, 102]),
        (3, (1 / 3, 1 / 3, 1 / 3), [1, 1, 1]),
        (10, (0.6, 0.2, 0.2), [6, 2, 2]),
        # The largest remainders alone leave a positive split empty: it takes one from the
        # split with the most (4, 1, 0; 3, 0, 0; 0, 2, 0; 8, 1, 0).
        (5, (0.8, 0.1, 0.1), [3, 1, 1]),
        (3, (0.8, 0.1, 0.1), [1, 1, 1]),
        (2, (0.0, 0.9, 0.1), [0, 1, 1]),
        (9, (0.9, 0.06, 0.04), [7, 1, 1]),
        # 2, 2, 0 either way: of equal counts the one furthest above its share gives (train's
        # 2 - 1.84 beats val's 2 - 2), and then the later split.
        (4, (0.46, 0.5, 0.04), [1, 2, 1]),
        (4, (0.49, 0.49, 0.02), [2, 1, 1]),
        # Fewer trajectories than positive fractions: the largest remainders alone.
        (2, (0.8, 0.1, 0.1), [2, 0, 0]),
    ],
)
def test_split_counts_are_the_largest_remainders_of_the_fractions(n, fractions, counts):
    assert simulate_module.split_counts(n, fractions) == counts
    parts = simulate_module.split_indices(n, fractions, seed=3)
    assert [len(parts[name]) for name in ("train", "val", "test")] == counts


@pytest.mark.parametrize("n", range(1, 40))
@pytest.mark.parametrize(
    "fractions", [(0.8, 0.1, 0.1), (0.5, 0.5, 0.0), (0.3, 0.3, 0.4), (0.0, 0.25, 0.75)]
)
def test_split_counts_sum_to_n_fill_every_positive_fraction_and_skip_zero_fractions(n, fractions):
    counts = simulate_module.split_counts(n, fractions)
    positive = sum(f > 0 for f in fractions)
    assert sum(counts) == n
    for count, fraction in zip(counts, fractions, strict=True):
        assert fraction > 0 or count == 0
        assert count >= 1 or fraction == 0 or n < positive
        # Within one of the share, but for a split that took one or gave one away.
        assert abs(count - fraction * n) < 1 or count == 1 or count < fraction * n


def test_a_small_data_set_gets_a_test_trajectory_when_its_fraction_is_positive(tmp_path):
    from physode.cli import main

    out = tmp_path / "small.h5"
    argv = ["simulate", SYSTEM, "-n", "5", "--t-end", "1", "--points", "2", "-o", str(out)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert main([*argv, "--split", "0.8,0.1,0.1", "--quiet"]) == 0
    with load(out) as data:
        assert [len(data.split[name]) for name in ("train", "val", "test")] == [3, 1, 1]


def test_fewer_trajectories_than_positive_fractions_warns_and_writes_the_data_set(tmp_path):
    out = tmp_path / "tiny.h5"
    with pytest.warns(physode.PhysodeWarning) as caught:
        simulate(SYSTEM, trajectories=2, out=out, **{**FAST, "points": 2})
    message = str(caught[0].message)
    assert caught[0].filename == __file__  # said where simulate was called
    assert "trajectories=2 is fewer than the 3 positive fractions of split=0.8,0.1,0.1" in message
    assert "val and test get no trajectory (train 2, val 0, test 0)" in message
    with load(out) as data:
        assert [len(data.split[name]) for name in ("train", "val", "test")] == [2, 0, 0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a split of 0 asks for an empty one: no warning
        simulate(SYSTEM, trajectories=2, out=out, split=(0.5, 0.5, 0), force=True, **FAST)


def test_the_command_says_a_split_left_empty_as_one_line_of_its_own(tmp_path, capsys):
    from physode.cli import main

    argv = ["simulate", SYSTEM, "-n", "1", "--t-end", "1", "--points", "2", "--quiet"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the Python warning is not shown as well
        assert main([*argv, "-o", str(tmp_path / "one.h5")]) == 0
    error = capsys.readouterr().err
    assert error.startswith("physode simulate: warning: trajectories=1 is fewer than the 3 ")
    assert "(train 1, val 0, test 0)" in error and error.count("\n") == 1


def test_a_zero_test_fraction_leaves_the_stored_test_split_empty(tmp_path):
    from physode.cli import main

    out = tmp_path / "no_test.h5"
    argv = ["simulate", SYSTEM, "-n", "5", "--t-end", "1", "--points", "2", "-o", str(out)]
    assert main([*argv, "--split", "0.5,0.5,0", "--quiet"]) == 0
    with load(out) as data:
        assert [len(data.split[name]) for name in ("train", "val", "test")] == [3, 2, 0]


def test_a_drift_that_is_not_a_number_is_flagged_as_drift(tmp_path, monkeypatch):
    # An invariant that turns NaN along a successful solve (a singular expression, say) must
    # not pass as "no drift": NaN compares false with any threshold.
    measured = simulate_module.drift_per_trajectory

    def nan_for_the_second(*args, **kwargs):
        drifts = measured(*args, **kwargs)
        for drift in drifts.values():
            drift[1] = np.nan
        return drifts

    monkeypatch.setattr(simulate_module, "drift_per_trajectory", nan_for_the_second)
    out = tmp_path / "nan_drift.h5"
    result = simulate(SYSTEM, trajectories=3, out=out, **FAST)
    assert result.n_drifted == 1 and result.n_failed == 0
    with load(out) as data:
        assert data.flags.tolist() == [0, 2, 0]


def _blow_up_spec(tmp_path) -> Path:
    """x' = x**2 from x0 in [0.2, 1]: x = x0 / (1 - x0 t) blows up at t = 1 / x0."""
    spec = tmp_path / "blow_up.toml"
    spec.write_text(
        'name = "blow_up"\ndescription = "x\' = x**2"\nform = "equations"\n'
        '[equations]\nx = "x**2"\n[initial_state_distribution]\nkind = "uniform"\n'
        "x = [0.2, 1.0]\n"
    )
    return spec


def test_solver_failures_store_the_time_reached_and_are_reported_by_cause(tmp_path):
    # Failures were counted, and check listed their rows, but neither said why a solve stopped
    # nor when: the time reached was not stored.
    out = tmp_path / "blow_up.h5"
    result = simulate(_blow_up_spec(tmp_path), trajectories=6, out=out, seed=2, **FAST)
    with load(out) as data:
        x0, t_final, status = data.states[:, 0, 0], data.t_final, data.status
    blown = 1 / x0 < FAST["t_end"]
    assert 0 < blown.sum() < 6 and result.n_failed == blown.sum()
    assert (status[blown] == int(physode.Status.STEP_SIZE_UNDERFLOW)).all()
    np.testing.assert_allclose(t_final[blown], 1 / x0[blown], rtol=1e-6)
    assert (t_final[~blown] == FAST["t_end"]).all() and (status[~blown] == 0).all()

    times = sorted(t_final[blown])
    assert result.failures == {
        "step-size underflow": (blown.sum(), times[0], times[-1]),
    }
    assert result.summary().splitlines()[1] == (
        f"  solver failures: step-size underflow {blown.sum()} (t reached {times[0]:.4g} to "
        f"{times[-1]:.4g})"
    )
    report = check(out)
    assert [(f.trajectory, f.cause) for f in report.failures] == [
        (i, "step-size underflow") for i in np.flatnonzero(blown)
    ]
    assert [f.t_reached for f in report.failures] == t_final[blown].tolist()
    first = report.failures[0]
    assert (
        f"  step-size underflow  {blown.sum()}: trajectories {first.trajectory} "
        f"(t = {first.t_reached:.4g}), "
    ) in report.table()
    again = simulate(_blow_up_spec(tmp_path), trajectories=6, out=out, seed=2, resume=True, **FAST)
    assert not again.written and again.summary().splitlines()[1] == result.summary().splitlines()[1]


def test_the_summary_names_the_invariants_that_drifted_with_their_counts_and_worst_drift(
    tmp_path,
):
    # It said "3 invariant drift flags" and no more: which invariant, and how far, took a check.
    spec = tmp_path / "osc.toml"
    spec.write_text(
        'name = "osc"\nform = "equations"\n[equations]\nx = "v"\nv = "-x"\n'
        '[invariants]\nenergy = "(x**2 + v**2)/2"\nnot_conserved = "x"\n'
    )
    out = tmp_path / "drifted.h5"
    result = simulate(spec, trajectories=3, out=out, **FAST)
    with load(out) as data:
        drift = data.drift
        recomputed = physode.data.drift_per_trajectory(
            data.system,
            torch.from_numpy(data.states[()]),
            torch.from_numpy(data.params),
            torch.from_numpy(data.t),
        )
    for name in ("energy", "not_conserved"):
        np.testing.assert_array_equal(drift[name], recomputed[name].max(axis=1))
    assert (drift["energy"] < 1e-6).all() and (drift["not_conserved"] > 1e-2).all()
    worst = float(drift["not_conserved"].max())
    assert result.n_drifted == 3 and result.drifts == {"not_conserved": (3, worst)}
    assert result.summary().splitlines()[1:] == [
        f"  drift flags: not_conserved 3 (worst {worst:.1e})"
    ]


def test_a_chunk_file_of_an_earlier_physode_is_recomputed_with_the_time_reached(
    tmp_path, monkeypatch
):
    # A chunk without t_final and drift, left by an interrupted run of an earlier physode, would
    # leave the assembled file without them.
    out = tmp_path / "old_chunk.h5"
    settings = {"trajectories": 4, "chunk_size": 2, **FAST}
    _interrupt_after_first_chunk(monkeypatch, SYSTEM, out=out, **settings)
    with h5py.File(tmp_path / "old_chunk.h5.parts" / "chunk-000000.h5", "r+") as f:
        del f["t_final"], f["drift"]
    result = simulate(SYSTEM, out=out, resume=True, **settings)
    assert result.n_resumed_chunks == 0
    with load(out) as data:
        assert (data.t_final == FAST["t_end"]).all() and set(data.drift) == {"energy"}


def test_values_beyond_float32_storage_are_named_in_a_warning(tmp_path, growth_spec):
    # x = x0 exp(t) reaches 1e43 by t = 100: stored as float32 it became inf, and only NumPy's
    # "overflow encountered in cast" said anything.
    spec = growth_spec
    settings = {**FAST, "t_end": 100.0, "trajectories": 3, "dtype": "float32"}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        simulate(spec, out=tmp_path / "growth.h5", **settings)
    assert [type(w.message) for w in caught] == [physode.PhysodeWarning]
    assert str(caught[0].message).startswith(
        "3 trajectories (0, 1, 2) reach values beyond the range of float32 (up to "
    )
    assert "stored as inf and flagged (flag bit 4: " in str(caught[0].message)
    with pytest.warns(physode.PhysodeWarning, match=r"^1 trajectory \(0\) reaches values "):
        simulate(spec, out=tmp_path / "one.h5", **{**settings, "trajectories": 1}, split=(1, 0, 0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        simulate(spec, out=tmp_path / "shorter.h5", **{**settings, "t_end": 50.0})


def test_a_failed_solves_drift_is_stored_and_checked_up_to_the_time_it_reached(tmp_path):
    # x' = x**2 blows up at t = 1 / x0. The drift of a failed solve was stored as NaN (its
    # later states are NaN), so how far it drifted before it failed was reported nowhere.
    spec = tmp_path / "blow_up.toml"
    spec.write_text(
        'name = "blow_up"\nform = "equations"\n[equations]\nx = "x**2"\n'
        '[invariants]\nnot_conserved = "x"\n'
        '[initial_state_distribution]\nkind = "uniform"\nx = [0.2, 1.0]\n'
    )
    out = tmp_path / "blow_up.h5"
    simulate(spec, trajectories=6, out=out, seed=2, **FAST)
    with load(out) as data:
        failed = (data.flags & 1) != 0
        drift = data.drift["not_conserved"]
        states, t_final = data.states[()], data.t_final
        recomputed = physode.data.drift_per_trajectory(
            data.system,
            torch.from_numpy(states),
            torch.from_numpy(data.params),
            torch.from_numpy(data.t),
        )["not_conserved"]
        reached = data.t[None, :] <= t_final[:, None]
    assert 0 < failed.sum() < 6
    # over the output times each failed solve reached: finite, and NaN only after them
    assert np.isfinite(states[reached]).all() and np.isnan(states[~reached]).all()
    expected = np.where(reached, recomputed, 0.0).max(axis=1)
    np.testing.assert_array_equal(drift, expected)
    assert np.isfinite(drift).all() and (drift[failed] > 0.1).all()

    report = check(out)
    assert [d.name for d in report.partial_drift] == ["not_conserved"]
    (partial,) = report.partial_drift
    worst = np.flatnonzero(failed)[np.argsort(-drift[failed], kind="stable")[:3]]
    assert partial.worst_trajectories == [(int(i), pytest.approx(drift[i])) for i in worst]
    assert partial.median == pytest.approx(np.median(drift[failed]))
    (whole,) = report.invariants  # the solves that reached the end, apart
    assert sorted(i for i, _ in whole.worst_trajectories) == np.flatnonzero(~failed)[:3].tolist()
    table = report.table()
    assert f"drift of the {failed.sum()} failed trajectories, over the output times each " in table
    assert table.splitlines()[-1].startswith("check failed: the file has ")


def test_check_names_stored_states_that_are_not_finite_and_keeps_them_apart(tmp_path):
    # x = x0 e^t and y = y0 e^-t keep x*y; stored as float32, x0 e^89 is beyond its range
    # (3.4e38) for x0 > 0.76 and is stored as inf. check reported "worst inf" and "beyond
    # tolerance" without a word on why.
    spec = tmp_path / "saddle.toml"
    spec.write_text(
        'name = "saddle"\nform = "equations"\n[equations]\nx = "x"\ny = "-y"\n'
        '[invariants]\nxy = "x*y"\n'
        '[initial_state_distribution]\nkind = "uniform"\nx = [0.5, 1.0]\ny = [0.5, 1.0]\n'
    )
    out = tmp_path / "saddle.h5"
    settings = {**FAST, "t_end": 89.0, "points": 90, "dtype": "float32"}
    with pytest.warns(physode.PhysodeWarning, match="beyond the range of float32"):
        result = simulate(spec, trajectories=6, out=out, seed=3, **settings)
    with load(out) as data:
        overflowed = np.isinf(data.states[:, -1, 0])
        # Flag bit 4 (physode before 2026-12-06 left them unflagged, flags 0).
        assert data.flags.tolist() == np.where(overflowed, 4, 0).tolist()
        assert np.isfinite(data.states[:, :-1]).all()
        assert json.loads(data.attrs["flag_bits"]) == {
            "solver_failed": 1, "drift": 2, "not_finite": 4,
        }  # fmt: skip
    assert 0 < overflowed.sum() < 6
    # The summary counts them, also when a resume finds the run finished (and warns no more).
    again = simulate(spec, trajectories=6, out=out, seed=3, resume=True, **settings)
    for said in (result, again):
        assert said.n_not_finite == overflowed.sum()
        assert f", {overflowed.sum()} stored as inf or NaN (flagged)" in said.summary()

    report = check(out, tolerance=1e-4)  # float32 rounding alone drifts by about 1e-6 here
    rows = np.flatnonzero(overflowed).tolist()
    assert report.non_finite == [physode.data.NonFiniteStates(i, 89, 89.0, "inf") for i in rows]
    assert not report.passed and report.failing == [] and report.n_failed == 0
    assert report.n_measured == 6 - len(rows)
    (xy,) = report.invariants
    assert 0 < xy.worst < 1e-4
    assert {i for i, _ in xy.worst_trajectories}.isdisjoint(rows)
    (partial,) = report.partial_drift  # over the first 89 points of the overflowed ones
    assert sorted(i for i, _ in partial.worst_trajectories) == rows[:3]
    assert 0 < partial.worst < 1e-4

    from physode.cli import main

    assert main(["check", str(out), "--tolerance", "1e-4"]) == 1
    table = report.table()
    listed = ", ".join(f"{i} (inf from t[89] = 89)" for i in rows)
    assert f"  trajector{'y' if len(rows) == 1 else 'ies'} {listed}\n" in table
    assert "beyond tolerance" not in table and "worst inf" not in table
    assert "store such data sets as float64" in table
    assert table.splitlines()[-1].startswith(f"check failed: the file has {len(rows)} trajector")


def test_params_naming_some_parameters_draws_those_and_keeps_the_others_at_their_defaults(
    tmp_path,
):
    # Pendulums of different lengths, g and m as the system has them: each l is the one
    # params="sample" draws with the same seed.
    settings = {"trajectories": 5, "t_end": 0.5, "points": 3, "seed": 4, "quiet": True}
    simulate("pendulum", out=tmp_path / "all.h5", params="sample", **settings)
    simulate("pendulum", out=tmp_path / "l.h5", params=["l"], **settings)
    with load(tmp_path / "all.h5") as every, load(tmp_path / "l.h5") as some:
        names = list(some.system.parameters)
        l_only = np.asarray(some.params)
        column = names.index("l")
        np.testing.assert_array_equal(l_only[:, column], every.params[:, column])
        for name in ("m", "g"):
            assert (l_only[:, names.index(name)] == some.system.parameters[name]).all()
        assert np.unique(l_only[:, names.index("l")]).size == 5
        assert "--params l " in some.attrs["command_line"]
        assert json.loads(some.attrs["simulation"])["params"] == ["l"]
        first = some.states[:, 0]
    # The stored states are solved with each row's own l.
    system = physode.systems.load("pendulum")
    rhs = system.rhs(torch.zeros(()), torch.as_tensor(first), torch.as_tensor(l_only))
    with load(tmp_path / "l.h5") as some:
        np.testing.assert_allclose(some.derivatives[:, 0], rhs.numpy(), rtol=1e-12)


def test_params_naming_every_parameter_is_sample_and_a_resume_matches_the_names(tmp_path):
    settings = {"trajectories": 3, "t_end": 0.5, "points": 3, "quiet": True}
    simulate("pendulum", out=tmp_path / "a.h5", params=["l", "g", "m"], **settings)
    with load(tmp_path / "a.h5") as data:
        assert json.loads(data.attrs["simulation"])["params"] == "sample"


@pytest.mark.parametrize("params", [["G"], ["m1", "G"]])
def test_params_naming_a_parameter_without_a_range_is_refused_with_those_that_have_one(
    tmp_path, params
):
    # three_body's G has no range: drawing it kept every trajectory at G = 1 without a word, so
    # a data set meant to vary G did not.
    system = physode.systems.load("three_body")
    assert system.parameter_ranges["G"] == (1.0, 1.0)
    expected = (
        "['G'] has no range in 'three_body', so every draw would be the default value; the "
        "parameters with a range are ['m1', 'm2', 'm3']. To vary 'G', give it one in the "
        "specification file (G = { value = 1, range = [low, high] })"
    )
    with pytest.raises(physode.InvalidArgumentError, match=re.escape(expected)):
        simulate("three_body", out=tmp_path / "x.h5", trajectories=2, t_end=0.5, points=2,
                 params=params, quiet=True)  # fmt: skip
    assert not (tmp_path / "x.h5").exists()


@pytest.mark.parametrize(
    "params, expected",
    [
        (["L"], "['L'] are not parameters of 'pendulum'; its parameters are ['m', 'g', 'l']"),
        ([], "choose one of ['default', 'sample'], or a list of the parameter names"),
        ("some", "choose one of ['default', 'sample'], or a list of the parameter names"),
    ],
)
def test_params_that_are_no_mode_or_no_parameters_are_refused(tmp_path, params, expected):
    with pytest.raises(physode.InvalidArgumentError, match=re.escape(expected)):
        simulate("pendulum", out=tmp_path / "x.h5", trajectories=2, t_end=0.5, points=2,
                 params=params, quiet=True)  # fmt: skip
    assert not (tmp_path / "x.h5").exists()


def test_the_chunk_simulated_last_is_stored_without_reading_its_file_back(tmp_path, monkeypatch):
    # Reading back the chunk file just written cost as much as writing it; the chunk is still
    # in memory. Earlier chunks are read back (memory holds one chunk at a time).
    out = tmp_path / "direct.h5"
    settings = {"trajectories": 5, "chunk_size": 2, "seed": 2, **FAST}
    read, reads = simulate_module.read_chunk, []

    def counted(path, run_id):
        reads.append(Path(path).name)
        return read(path, run_id)

    monkeypatch.setattr(simulate_module, "read_chunk", counted)
    simulate(SYSTEM, out=out, **settings)
    assert sorted(reads) == ["chunk-000000.h5", "chunk-000001.h5"]
    reads.clear()
    simulate(SYSTEM, out=tmp_path / "one.h5", **{**settings, "chunk_size": 8})
    assert reads == []
    monkeypatch.undo()
    reference = tmp_path / "reference.h5"
    simulate(SYSTEM, out=reference, **{**settings, "chunk_size": 3})
    _assert_same_datasets(out, reference)
    _assert_same_datasets(tmp_path / "one.h5", reference)


@pytest.mark.parametrize("change", ["removed", "rewritten"])
def test_a_chunk_kept_in_memory_whose_file_changed_is_a_physode_error(
    tmp_path, monkeypatch, change
):
    # The chunk simulated last is not read back, but its file must still be the one written.
    out = tmp_path / "raced.h5"
    settings = {"trajectories": 4, "chunk_size": 2, "seed": 4, **FAST}
    last = tmp_path / "raced.h5.parts" / "chunk-000001.h5"
    changed = []

    class Bar(simulate_module.tqdm):
        def close(self):  # when the last chunk is written (tqdm calls it again when deleted)
            super().close()
            if changed:
                return
            changed.append(change)
            if change == "removed":
                last.unlink()
            else:  # replaced through a new file, as another run's atomic write does
                other = last.with_name("other.part")
                other.write_bytes(last.read_bytes())
                os.replace(other, last)

    monkeypatch.setattr(simulate_module, "tqdm", Bar)
    with pytest.raises(physode.PhysodeError, match="chunk-000001.h5 vanished or changed"):
        simulate(SYSTEM, out=out, **settings)
    assert not out.exists() and not (tmp_path / "raced.h5.tmp").exists()


def test_simulate_evaluates_the_invariants_once_per_chunk(tmp_path, monkeypatch):
    # The drift was measured by evaluating every invariant a second time: it now takes the
    # values stored in /invariants, and gives the drift conservation() measures, to the bit.
    system = physode.systems.load("kepler")
    evaluate, calls = system.invariants, []

    def counted(y, p=None):
        calls.append(y.shape)
        return evaluate(y, p)

    monkeypatch.setattr(system, "invariants", counted)
    out = tmp_path / "kepler.h5"
    simulate(system, trajectories=6, chunk_size=3, out=out, params="sample", **FAST)
    assert len(calls) == 2
    monkeypatch.undo()
    with load(out) as data:
        recomputed = physode.data.drift_per_trajectory(
            system,
            torch.from_numpy(data.states[()]),
            torch.from_numpy(data.params),
            torch.from_numpy(data.t),
        )
        assert sorted(data.drift) == sorted(recomputed) == sorted(system.invariant_names)
        for name, drift in recomputed.items():
            np.testing.assert_array_equal(data.drift[name], drift.max(axis=1), err_msg=name)


@pytest.mark.parametrize("name", physode.systems.names())
def test_the_drift_of_given_invariants_is_the_drift_conservation_measures(name):
    system = physode.systems.load(name)
    n, points = 5, 9
    generator = torch.Generator().manual_seed(1)
    y0 = system.sample_initial_states(n, seed=1)
    p = system.sample_parameters(n, seed=2)
    wobble = torch.randn(n, points, y0.shape[-1], generator=generator, dtype=torch.float64)
    states = y0[:, None, :] * (1 + 0.1 * wobble)
    states[1, 4:] = float("nan")  # a failed solve
    states[3, :, 0] = 0.0  # terms that vanish: scales of 0 for some invariants
    t = torch.linspace(0.0, 1.0, points, dtype=torch.float64)
    rows = p[:, None, :].expand(n, points, p.shape[-1])
    invariants = {k: v.numpy() for k, v in system.invariants(states, rows).items()}
    given = physode.data.drift_per_trajectory(system, states, p, t, invariants=invariants)
    measured = physode.data.drift_per_trajectory(system, states, p, t)
    assert list(given) == list(measured) == system.invariant_names
    for key in measured:
        np.testing.assert_array_equal(given[key], measured[key], err_msg=key)


def test_the_summary_counts_what_was_stored_without_opening_the_file_again(
    tmp_path, monkeypatch
):
    # The counts came from opening and checking the file just written; they are now gathered
    # from the chunks as they are stored, and equal what the file holds.
    spec = tmp_path / "blow_up.toml"
    spec.write_text(
        'name = "blow_up"\nform = "equations"\n[equations]\nx = "x**2"\ny = "-y"\n'
        '[invariants]\nnot_conserved = "x"\nalso_not = "y"\n'
        '[initial_state_distribution]\nkind = "uniform"\nx = [0.2, 1.0]\ny = [1.0, 2.0]\n'
    )
    out = tmp_path / "counted.h5"

    def no_reading(*args, **kwargs):
        raise AssertionError("the file was read back")

    with monkeypatch.context() as patch:
        patch.setattr(simulate_module, "load", no_reading)
        result = simulate(spec, trajectories=7, chunk_size=3, out=out, seed=2, **FAST)
    again = simulate(spec, trajectories=7, chunk_size=3, out=out, seed=2, resume=True, **FAST)
    assert not again.written
    assert 0 < result.n_failed < 7 and result.n_drifted == 7 - result.n_failed
    assert list(result.drifts) == ["not_conserved", "also_not"]  # ties in the system's order
    for name in ("n_trajectories", "n_failed", "n_drifted", "failures", "drifts", "n_not_finite"):
        assert getattr(result, name) == getattr(again, name), name


def test_the_software_versions_are_looked_up_once_per_process(tmp_path, monkeypatch):
    # Reading five packages' metadata took milliseconds on every run.
    import importlib.metadata

    look_up, packages = importlib.metadata.version, []

    def counted(package):
        packages.append(package)
        return look_up(package)

    monkeypatch.setattr(importlib.metadata, "version", counted)
    uncached = simulate_module._software_versions.__wrapped__  # a fresh cache for this test
    monkeypatch.setattr(simulate_module, "_software_versions", functools.cache(uncached))
    for name in ("a.h5", "b.h5"):
        simulate(SYSTEM, trajectories=2, out=tmp_path / name, **FAST)
        with load(tmp_path / name) as data:
            software = json.loads(data.attrs["software"])
        assert software["torch"] == look_up("torch") and software["h5py"] == look_up("h5py")
    assert sorted(packages) == ["h5py", "numpy", "scipy", "sympy", "torch"]
