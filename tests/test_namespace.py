"""The top-level ``physode`` namespace: what ``dir`` shows, and that each name it shows loads."""

from __future__ import annotations

import physode


def test_dir_shows_the_public_names_and_each_of_them_loads():
    # dir(physode) listed the helpers TYPE_CHECKING, annotations and importlib.
    names = dir(physode)
    for helper in ("TYPE_CHECKING", "annotations", "importlib", "_SUBMODULES", "_errors"):
        assert helper not in names
    assert set(physode.__all__) <= set(names)
    for name in ("gradients", "solvers", "symbolic", "__version__", "__doc__"):
        assert name in names
    assert all(hasattr(physode, name) for name in names)  # lazy names and submodules load
    assert physode.System.__module__.startswith("physode.symbolic")
