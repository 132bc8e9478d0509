"""The few array operations that torch and NumPy spell differently, for code that serves both.

The per-sample loop runs on torch tensors (any device, with autograd) or, for solves that nothing
differentiates on the CPU, on NumPy arrays, whose per-operation overhead is a fraction of torch's.
It is written once: with operators, with the functions both libraries name alike (``where``,
``maximum``, ``sqrt``, ``isfinite``, ``clip``, ``round``, ...) taken from :func:`namespace`,
and with the helpers below for the rest.

Examples
--------
>>> import numpy as np, torch
>>> take(np.arange(5.0), np.array([3, 1]))
array([3., 1.])
>>> take(torch.arange(5.0), torch.tensor([3, 1]))
tensor([3., 1.])
"""

from __future__ import annotations

from types import ModuleType

import numpy as np
import torch
from torch import Tensor

Array = Tensor | np.ndarray

__all__ = [
    "Array",
    "arange",
    "asarray",
    "finfo",
    "flatnonzero",
    "full",
    "namespace",
    "put_",
    "repeat",
    "searchsorted",
    "take",
]


def namespace(x: Array) -> ModuleType:
    """``torch`` for a tensor, ``numpy`` for an array."""
    return torch if isinstance(x, Tensor) else np


def take(x: Array, rows: Array) -> Array:
    """``x[rows]`` along the first dimension."""
    return x.index_select(0, rows) if isinstance(x, Tensor) else x[rows]


def flatnonzero(mask: Array, count: int | None = None) -> Array:
    """The indices where a one-dimensional ``mask`` is true. Given how many there are, a
    tensor's are found without reading the device, which ``nonzero`` does on a GPU to size its
    result."""
    if not isinstance(mask, Tensor):
        return np.flatnonzero(mask)
    if count is None:
        return mask.nonzero().squeeze(1)
    return mask.nonzero_static(size=count).squeeze(1)


def put_(record: Array, rows: Array, values: Array) -> None:
    """``record[rows] = values`` along the first dimension, in place."""
    if isinstance(record, Tensor):
        record.index_copy_(0, rows, values)
    else:
        record[rows] = values


def full(shape: tuple[int, ...], value: float, like: Array, dtype=None) -> Array:
    """An array of ``shape`` filled with ``value``, of ``like``'s kind, device and dtype."""
    if isinstance(like, Tensor):
        return torch.full(shape, value, dtype=dtype or like.dtype, device=like.device)
    return np.full(shape, value, dtype=dtype or like.dtype)


def asarray(values, like: Array) -> Array:
    """``values`` (a sequence of numbers) as an array of ``like``'s kind, device and dtype."""
    if isinstance(like, Tensor):
        return torch.tensor(values, dtype=like.dtype, device=like.device)
    return np.asarray(values, dtype=like.dtype)


def arange(n: int, like: Array) -> Array:
    """``0, 1, ..., n - 1`` as int64, of ``like``'s kind and device."""
    if isinstance(like, Tensor):
        return torch.arange(n, device=like.device)
    return np.arange(n, dtype=np.int64)


def finfo(like: Array):
    """Machine limits of ``like``'s floating dtype."""
    return torch.finfo(like.dtype) if isinstance(like, Tensor) else np.finfo(like.dtype)


def repeat(x: Array, counts: Array, total: int | None = None) -> Array:
    """Each entry of a one-dimensional ``x`` repeated ``counts`` times, in order. Given the
    ``total`` of ``counts``, a tensor's result is sized without reading the device."""
    if isinstance(x, Tensor):
        return torch.repeat_interleave(x, counts, output_size=total)
    return np.repeat(x, counts)


def searchsorted(ascending: Array, values: Array) -> Array:
    """For each of ``values``, how many entries of ``ascending`` are at most it (int64)."""
    if isinstance(ascending, Tensor):
        return torch.searchsorted(ascending, values, right=True)
    return np.searchsorted(ascending, values, side="right").astype(np.int64)
