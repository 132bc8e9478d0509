"""Type checks of user settings shared across the package (a bool is never a number here)."""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

__all__ = ["converts_to_finite_real", "is_finite_real", "is_int", "is_switch"]


def is_int(value: Any, least: int | None = None) -> bool:
    """Whether ``value`` is an integer (Python's or NumPy's, not a bool), at least ``least``.

    Examples
    --------
    >>> import numpy as np
    >>> is_int(np.int64(3), least=1), is_int(True), is_int(2.0)
    (True, False, False)
    """
    return (
        isinstance(value, numbers.Integral)
        and not isinstance(value, bool)
        and (least is None or bool(value >= least))
    )


def is_switch(value: Any) -> bool:
    """Whether ``value`` is ``True`` or ``False`` (Python's or NumPy's): a string such as
    ``"False"`` would count as true, and an array has no truth value.

    Examples
    --------
    >>> import numpy as np
    >>> is_switch(np.True_), is_switch("False"), is_switch(1)
    (True, False, False)
    """
    return isinstance(value, bool | np.bool_)


def is_finite_real(value: Any) -> bool:
    """Whether ``value`` is a finite real number (Python's or NumPy's, not a bool).

    An integer too large for a float (``10**400``) does not count: as a float it is infinite.

    Examples
    --------
    >>> is_finite_real(0.5), is_finite_real(float("nan")), is_finite_real(False)
    (True, False, False)
    >>> is_finite_real(10**400)
    False
    """
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def converts_to_finite_real(value: Any) -> bool:
    """Whether ``value`` is a finite real number, or a one-element real tensor or array holding
    one (as ``float(value)`` reads it). Bools, text and complex values do not count.

    Examples
    --------
    >>> import torch
    >>> converts_to_finite_real(torch.tensor(0.5)), converts_to_finite_real(torch.ones(2))
    (True, False)
    >>> converts_to_finite_real("1.0"), converts_to_finite_real(np.True_)
    (False, False)
    """
    if isinstance(value, bool | np.bool_ | str | bytes) or "complex" in str(
        getattr(value, "dtype", type(value).__name__)
    ):
        return False
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError, RuntimeError, OverflowError):
        return False
