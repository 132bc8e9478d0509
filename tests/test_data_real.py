"""Tests of the shipped real data: the Hudson's Bay Company lynx and hare pelts."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import torch

from physode.data import load_lynx_hare

REPO = Path(__file__).resolve().parents[1]
LYNX = [4.0, 6.1, 9.8, 35.2, 59.4, 41.7, 19.0, 13.0, 8.3, 9.1, 7.4, 8.0, 12.3, 19.5, 45.7, 51.1,
        29.7, 15.8, 9.7, 10.1, 8.6]  # fmt: skip
HARE = [30.0, 47.2, 70.2, 77.4, 36.3, 20.6, 18.1, 21.4, 22.0, 25.4, 27.1, 40.3, 57.0, 76.6, 52.3,
        19.5, 11.2, 7.6, 14.6, 16.2, 24.7]  # fmt: skip


def test_lynx_hare_holds_the_1900_to_1920_pelts_hare_first():
    data = load_lynx_hare()
    assert data.state_names == ("hare", "lynx")
    np.testing.assert_array_equal(data.years, np.arange(1900, 1921))
    torch.testing.assert_close(data.t, torch.arange(21, dtype=torch.float64))
    torch.testing.assert_close(data.ys, torch.tensor([HARE, LYNX], dtype=torch.float64).T)
    assert data.time_unit == "years"


def test_lynx_hare_states_its_provenance():
    provenance = load_lynx_hare().provenance
    assert "Hudson's Bay Company" in provenance and "thousands of pelts" in provenance


def test_the_repository_copy_and_the_packaged_copy_are_one_file():
    packaged = resources.files("physode.data").joinpath("lynx_hare.csv")
    top_level = REPO / "data" / "lynx_hare.csv"
    assert top_level.resolve() == (REPO / "physode" / "data" / "lynx_hare.csv").resolve()
    assert top_level.read_text() == packaged.read_text()
