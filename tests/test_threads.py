"""Tests of ``physode._threads``: the one bound on the torch thread counts physode sets."""

from __future__ import annotations

import pytest
import torch

import physode
import physode.data
from physode._threads import most_threads, torch_threads

# torch's OpenMP runtime failed to start 16384 threads and crashed at 32768.
FAR_TOO_MANY = 100_000


def test_the_bound_is_four_per_cpu_and_at_least_64(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert most_threads() == 64
    monkeypatch.setattr("os.cpu_count", lambda: 96)
    assert most_threads() == 384
    monkeypatch.setattr("os.cpu_count", lambda: None)
    assert most_threads() == 64


def test_torch_threads_sets_nothing_beyond_the_bound():
    # Its callers refuse such a count; were one to pass it on, nothing crashes.
    before = torch.get_num_threads()
    with torch_threads(FAR_TOO_MANY):
        assert torch.get_num_threads() == before
    assert torch.get_num_threads() == before


def test_the_bound_itself_is_accepted(monkeypatch):
    # Only counting: setting 64 threads for an empty block is cheap.
    before = torch.get_num_threads()
    with torch_threads(most_threads()):
        assert torch.get_num_threads() == most_threads()
    assert torch.get_num_threads() == before


def test_simulate_lists_too_many_threads_with_its_other_bad_arguments(tmp_path):
    out = tmp_path / "x.h5"
    with pytest.raises(physode.InvalidArgumentError) as refused:
        physode.data.simulate("harmonic_oscillator", trajectories=0, t_end=1.0, points=3,
                              out=out, threads=FAR_TOO_MANY)  # fmt: skip
    message = str(refused.value)
    assert f"threads={FAR_TOO_MANY} is more than {most_threads()}" in message
    assert f"choose 1 to {most_threads()}" in message
    assert "trajectories=0" in message and not out.exists()
