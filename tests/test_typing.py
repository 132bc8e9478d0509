"""What type checkers (mypy, pyright) read of physode in a user's code: the ``py.typed`` marker,
and the types ``odeint`` and ``solve`` return for a tensor or a tuple ``y0``."""

from __future__ import annotations

import inspect
import tomllib
import typing
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

import physode
from physode import integrate

ROOT = Path(__file__).resolve().parents[1]


def _hints(function) -> dict:
    """``function``'s annotations evaluated; NumPy is imported for type checkers only."""
    return typing.get_type_hints(function, vars(integrate), {"np": np})


def test_the_package_ships_the_py_typed_marker_so_type_checkers_read_its_annotations():
    # Without it mypy stops at `import physode` ("module is installed, but missing library
    # stubs or py.typed marker") and pyright guesses types from the code.
    assert (ROOT / "physode" / "py.typed").is_file()
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "py.typed" in package_data["package-data"]["physode"]


def test_odeint_returns_a_tensor_for_a_tensor_y0_and_a_tuple_for_a_tuple_as_typed():
    # One return type Tensor | tuple made a type checker refuse `odeint(...) - target`.
    returns = {}
    for overload in typing.get_overloads(integrate.odeint):
        hints = _hints(overload)
        returns[hints["y0"]] = hints["return"]
        assert np.ndarray in typing.get_args(hints["t"])  # NumPy times are accepted
    assert returns == {Tensor: Tensor, tuple[Tensor, ...] | list[Tensor]: tuple[Tensor, ...]}
    f, t = (lambda t, y: -y), np.linspace(0.0, 1.0, 3)
    y0 = torch.ones(2, dtype=torch.float64)
    assert isinstance(physode.odeint(f, y0, t), Tensor)
    assert isinstance(physode.odeint(lambda t, y: (-y[0],), [y0], t), tuple)


def test_solve_types_its_solution_by_y0_so_sol_ys_is_a_tensor_for_a_tensor_y0():
    # The README's `sol.ys.detach()` failed mypy: Solution.ys was typed Tensor | tuple.
    returns = {}
    for overload in typing.get_overloads(integrate.solve):
        hints = _hints(overload)
        returns[hints["y0"]] = hints["return"]
    assert returns == {
        Tensor: physode.Solution[Tensor],
        tuple[Tensor, ...] | list[Tensor]: physode.Solution[tuple[Tensor, ...]],
    }


def test_the_typed_keywords_are_exactly_the_keywords_solve_takes_with_their_types():
    # The overloads read the keywords from SolveOptions: one left out there would be refused
    # by a type checker although solve takes it.
    solve_hints = _hints(integrate.solve)
    keywords = {
        name: solve_hints[name]
        for name, parameter in inspect.signature(integrate.solve).parameters.items()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY
    }
    assert typing.get_type_hints(integrate.SolveOptions, vars(integrate)) == keywords
