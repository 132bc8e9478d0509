"""The on-disk cache of derived systems: same system back, damaged entries rebuilt, opt-out."""

from __future__ import annotations

import doctest
import os

import pytest
import torch

import physode.systems
from physode.symbolic import _cache

F64 = torch.float64


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(_cache.ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


def _derive(name: str):
    text = physode.systems.path(name).read_text()
    return text, physode.systems._from_text.__wrapped__(text, name)


def test_a_cached_system_is_the_derived_one_with_its_code(cache_dir):
    text, derived = _derive("three_body")
    entries = list(cache_dir.iterdir())
    assert len(entries) == 1 and entries[0].stat().st_mode & 0o077 == 0  # private to the user
    cached = _cache.load(text)
    assert cached is not None and cached is not derived
    assert cached._kernel_sources == derived._kernel_sources  # no code generation on loading
    y = derived.sample_initial_states(5, seed=1)
    assert torch.equal(cached.rhs(0.0, y), derived.rhs(0.0, y))
    for name, value in derived.invariants(y).items():
        assert torch.equal(cached.invariants(y)[name], value)
    torch.testing.assert_close(cached.sample_initial_states(5, seed=1), y, rtol=0, atol=0)
    assert cached.exactly_rounded and cached.invariant_names == derived.invariant_names
    # The numerics above never built the SymPy expressions; the first symbolic question does.
    assert "_symbolic" in cached.__dict__ and "_equations" not in cached.__dict__
    assert cached.equations == derived.equations
    assert cached.invariant_expressions == derived.invariant_expressions
    assert "_symbolic" not in cached.__dict__
    with pytest.raises(AttributeError, match="no_such_thing"):
        cached.no_such_thing  # noqa: B018


def test_a_damaged_entry_is_ignored_and_replaced(cache_dir):
    text, _ = _derive("kepler")
    (entry,) = cache_dir.iterdir()
    entry.write_bytes(b"not a pickle")
    assert _cache.load(text) is None
    _derive("kepler")
    assert _cache.load(text) is not None


def test_an_edited_specification_gets_its_own_entry(cache_dir):
    text, _ = _derive("harmonic_oscillator")
    edited = text + "\n# a comment changes the key\n"
    assert _cache.load(edited) is None
    physode.systems._from_text.__wrapped__(edited, "edited")
    assert len(list(cache_dir.iterdir())) == 2
    assert _cache.clear() == 2 and not list(cache_dir.iterdir())


def test_an_empty_setting_turns_the_cache_off(monkeypatch, tmp_path):
    monkeypatch.setenv(_cache.ENV, "")
    assert _cache.folder() is None
    text, system = _derive("kepler")
    assert _cache.load(text) is None and not _cache.store(text, system)


def test_a_folder_written_with_a_tilde_is_in_the_home_folder(monkeypatch, tmp_path):
    # Quoted in a shell or set from Python, "~" reaches physode unexpanded.
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv(_cache.ENV, "~/physode-cache")
    assert _cache.folder() == tmp_path / "physode-cache"


@pytest.mark.parametrize("setting", [None, "~/physode-cache"])
def test_a_user_without_a_home_folder_loads_systems_without_the_cache(monkeypatch, setting):
    # A batch job or container run as a bare user id: no $HOME, no entry in /etc/passwd, where
    # Path.home() raises RuntimeError; physode.systems.load failed with it.
    import pwd

    def unknown_user(uid):
        raise KeyError(f"getpwuid(): uid not found: {uid}")

    monkeypatch.delenv("HOME", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setattr(pwd, "getpwuid", unknown_user)
    if setting is None:
        monkeypatch.delenv(_cache.ENV, raising=False)
    else:
        monkeypatch.setenv(_cache.ENV, setting)
    assert _cache.folder() is None
    physode.systems._from_text.cache_clear()  # derived here, not found in this process
    system = physode.systems.load("kepler")
    assert system.rhs(0.0, torch.ones(4, dtype=F64)).shape == (4,)
    assert physode.systems.clear_cache() == 0


def test_an_unwritable_cache_path_only_costs_time(monkeypatch, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv(_cache.ENV, str(blocker / "cache"))
    text, system = _derive("kepler")
    assert not _cache.store(text, system)
    assert system.rhs(0.0, torch.ones(4, dtype=F64)).shape == (4,)


def _flip_bit(entry, marker: bytes) -> None:
    """Flip one bit inside ``marker``, a piece of text that the entry stores."""
    data = bytearray(entry.read_bytes())
    data[data.index(marker) + len(marker) // 2] ^= 0x01
    entry.write_bytes(bytes(data))


@pytest.mark.parametrize("marker", [b"torch.stack", b"kepler"])
def test_an_entry_with_one_flipped_bit_is_rebuilt_not_run(cache_dir, marker):
    # The damaged pickle still loads: only a digest tells that its code or text is not what
    # was written.
    text, derived = _derive("kepler")
    (entry,) = cache_dir.iterdir()
    _flip_bit(entry, marker)
    assert _cache.load(text) is None
    physode.systems._from_text.cache_clear()
    y = derived.sample_initial_states(3, seed=2)
    assert torch.equal(physode.systems.load("kepler").rhs(0.0, y), derived.rhs(0.0, y))
    assert _cache.load(text) is not None  # and the entry was written again


def test_a_cache_folder_that_cannot_be_read_only_costs_time(cache_dir, monkeypatch):
    text, system = _derive("kepler")

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    for method in ("is_file", "read_bytes", "open", "stat"):
        monkeypatch.setattr(_cache.Path, method, refuse)
    assert _cache.load(text) is None


def test_the_cache_modules_examples_leave_the_cache_folder_setting_as_they_found_it(monkeypatch):
    # Its example deleted $PHYSODE_CACHE_DIR: every test after tests/test_docstrings.py then
    # used the user's own cache folder, and one that deletes the variable raised KeyError.
    monkeypatch.setenv(_cache.ENV, "/somewhere/private")
    assert doctest.testmod(_cache).failed == 0
    assert os.environ.get(_cache.ENV) == "/somewhere/private"


def test_clear_cache_also_removes_the_half_written_entries_of_killed_writers(cache_dir):
    # A writer killed between writing its temporary file and renaming it left the file, which
    # clear_cache() never removed: a large system's pickle stayed in the folder for good.
    physode.systems.clear_cache()
    physode.systems.load("pendulum")
    partial = cache_dir / ".writing-k1ll3d"  # tempfile.mkstemp(prefix=".writing-")
    partial.write_bytes(b"half an entry")
    assert physode.systems.clear_cache() == 1
    assert list(cache_dir.iterdir()) == []
