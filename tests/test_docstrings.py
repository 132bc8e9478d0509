"""Every example in physode's docstrings runs and prints what it shows."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import physode

MODULES = sorted(
    info.name
    for info in pkgutil.walk_packages(physode.__path__, prefix="physode.")
    if info.name != "physode.__main__"
)


@pytest.mark.parametrize("name", ["physode", *MODULES])
def test_docstring_examples_run_as_shown(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
