"""Test-session settings shared by every test module."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

# Derived systems are cached on disk (physode.symbolic._cache); the suite keeps its own cache,
# shared with the subprocesses it starts, instead of writing into the user's, and removes it at
# the end.
_CACHE = tempfile.mkdtemp(prefix="physode-test-cache-")
os.environ["PHYSODE_CACHE_DIR"] = _CACHE
atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)


import pytest  # noqa: E402  (after the cache is set, before any test imports physode)


@pytest.fixture(scope="session")
def oscillator_h5(tmp_path_factory):
    """Six harmonic-oscillator trajectories of 9 points, split 4/1/1: a small data set for the
    tests of ``physode train``, which only read it."""
    import physode.data

    path = tmp_path_factory.mktemp("oscillator") / "osc.h5"
    physode.data.simulate("harmonic_oscillator", trajectories=6, t_end=2.0, points=9, out=path,
                          seed=3, split=(4 / 6, 1 / 6, 1 / 6), quiet=True)  # fmt: skip
    return path


@pytest.fixture
def growth_spec(tmp_path):
    """A spec file of x' = x from x0 in [0.5, 1]: x0 e^89 passes float32's range (3.4e38) for
    x0 > 0.76, so stored as float32 it becomes inf."""
    spec = tmp_path / "growth.toml"
    spec.write_text(
        'name = "growth"\nform = "equations"\n[equations]\nx = "x"\n'
        '[initial_state_distribution]\nkind = "uniform"\nx = [0.5, 1.0]\n'
    )
    return spec


@pytest.fixture
def last_pt_disk_full(monkeypatch):
    """Make the trainer's writes of ``last.pt`` fail as on a full disk; ``best.pt`` still fits."""
    from physode import InvalidArgumentError
    from physode.train import Trainer

    save_checkpoint = Trainer.save_checkpoint

    def full(self, path):
        if os.path.basename(path) == "last.pt":
            raise InvalidArgumentError(f"cannot write the checkpoint {path}: disk full")
        return save_checkpoint(self, path)

    monkeypatch.setattr(Trainer, "save_checkpoint", full)
