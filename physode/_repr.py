"""Short reprs of physode's result objects: shapes, dtypes and key figures instead of values.

A result can hold a million numbers; its repr in a REPL or a notebook names what it holds in a
line or two. These helpers describe one value each, and :func:`short_repr` puts the fields of an
object together without ever raising: a field that is missing (a partly built object) is left
out, and one that cannot be described is shown as ``?``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import torch

# The most characters a value of unknown kind takes in a repr, and the most items of a mapping.
_LONGEST = 80
_MOST_ITEMS = 6

_MISSING = object()


def array_text(x: torch.Tensor | np.ndarray) -> str:
    """A tensor or NumPy array by its shape, dtype and (where not the CPU) device.

    Examples
    --------
    >>> array_text(torch.zeros(1000, 256, 6, dtype=torch.float64))
    'Tensor(shape=(1000, 256, 6), dtype=float64)'
    >>> array_text(np.zeros(3, dtype=np.float32))
    'ndarray(shape=(3,), dtype=float32)'
    """
    if isinstance(x, torch.Tensor):
        dtype = str(x.dtype).removeprefix("torch.")
        device = "" if x.device.type == "cpu" else f", device={x.device}"
        return f"Tensor(shape={tuple(x.shape)}, dtype={dtype}{device})"
    return f"ndarray(shape={x.shape}, dtype={x.dtype})"


def number_text(x: Any) -> str:
    """A number in at most six significant digits; a one-element tensor as its value, a larger
    one as the range of its values (``min..max``, NaN left out).

    Examples
    --------
    >>> number_text(0.083082404), number_text(3), number_text(torch.tensor([4, 9, 7]))
    ('0.0830824', '3', '4..9')
    """
    if isinstance(x, torch.Tensor | np.ndarray):
        values = torch.as_tensor(x).detach()
        if values.numel() == 1:
            return number_text(values.item())
        finite = values[~torch.isnan(values)] if values.is_floating_point() else values
        if finite.numel() == 0:
            return "nan"
        low, high = number_text(finite.min().item()), number_text(finite.max().item())
        return low if low == high else f"{low}..{high}"
    if isinstance(x, bool) or not isinstance(x, int | float):
        return value_text(x)
    return f"{x:.6g}" if isinstance(x, float) else str(x)


def value_text(x: Any) -> str:
    """Any field's value: arrays by shape (a tuple of them each so), a mapping or a list of more
    than a few items cut short, anything else by its own repr cut to 80 characters.

    Examples
    --------
    >>> value_text((torch.zeros(2, 3), torch.zeros(2)))
    '(Tensor(shape=(2, 3), dtype=float32), Tensor(shape=(2,), dtype=float32))'
    >>> value_text(list(range(100)))
    'list of 100, the first 0'
    """
    if isinstance(x, torch.Tensor | np.ndarray):
        return array_text(x)
    if isinstance(x, list | tuple) and len(x) > _MOST_ITEMS:
        return f"{type(x).__name__} of {len(x)}, the first {value_text(x[0])}"
    if isinstance(x, tuple | list) and any(isinstance(v, torch.Tensor | np.ndarray) for v in x):
        return "(" + ", ".join(value_text(v) for v in x) + ("," if len(x) == 1 else "") + ")"
    if isinstance(x, Mapping):
        return mapping_text(x, value_text)
    text = repr(x)
    return text if len(text) <= _LONGEST else text[: _LONGEST - 3] + "..."


def mapping_text(x: Mapping, shown: Callable[[Any], str] = number_text) -> str:
    """A mapping with its first few items, each value through ``shown``.

    Examples
    --------
    >>> mapping_text({"g": 9.8100001, "l": 1.0})
    "{'g': 9.81, 'l': 1}"
    >>> mapping_text({str(i): i for i in range(8)})
    "{'0': 0, '1': 1, '2': 2, '3': 3, '4': 4, '5': 5, ... (8 items)}"
    """
    items = [f"{k!r}: {shown(v)}" for k, v in list(x.items())[:_MOST_ITEMS]]
    if len(x) > _MOST_ITEMS:
        items.append(f"... ({len(x)} items)")
    return "{" + ", ".join(items) + "}"


def count_text(flags: Any) -> str:
    """How many of a tensor's flags are set; a single flag as itself.

    Examples
    --------
    >>> count_text(torch.tensor([True, False, True])), count_text(False)
    ('2 of 3', 'False')
    """
    if isinstance(flags, torch.Tensor | np.ndarray):
        flags = torch.as_tensor(flags)
        return f"{int(flags.sum())} of {flags.numel()}"
    return repr(flags)


def name_text(x: Any) -> str:
    """An object by its name where it has one (a system), else by :func:`value_text`.

    Examples
    --------
    >>> class Pendulum:
    ...     name = "pendulum"
    >>> name_text(Pendulum()), name_text(None)
    ("'pendulum'", 'None')
    """
    name = getattr(x, "name", None)
    return repr(name) if isinstance(name, str) else value_text(x)


def status_text(status: Any) -> str:
    """A solve's status: its name, or for one status per row the count of each.

    Examples
    --------
    >>> from physode.solvers.loop import Status
    >>> status_text(Status.SUCCESS)
    'SUCCESS'
    >>> status_text(torch.tensor([0, 0, 1]))
    '2 SUCCESS, 1 MAX_STEPS of 3 rows'
    """
    from physode.solvers.loop import Status

    if not isinstance(status, torch.Tensor):
        return getattr(status, "name", None) or repr(status)
    codes, counts = torch.unique(status.detach().reshape(-1).cpu(), return_counts=True)
    names = {int(s): s.name for s in Status}
    parts = [
        f"{n} {names.get(c, f'code {c}')}"
        for c, n in zip(codes.tolist(), counts.tolist(), strict=True)
    ]
    return f"{', '.join(parts)} of {status.numel()} rows"


def stats_text(stats: Any) -> str:
    """A solve's counters; per-row counters (``step_control="per-sample"``) as their range.

    Examples
    --------
    >>> from physode.solvers.loop import Stats
    >>> stats_text(Stats(n_steps=torch.tensor([4, 9]), n_rejected=torch.tensor([0, 1]), nfe=40))
    'Stats(n_steps=4..9, n_rejected=0..1, nfe=40, nfe_backward=0)'
    """
    return short_repr(stats, *((name, number_text) for name in _STATS_FIELDS))


_STATS_FIELDS = ("n_steps", "n_rejected", "nfe", "nfe_backward")


def short_repr(
    obj: object,
    *fields: str | tuple[str, Callable[[Any], str]],
    head: Iterable[str] = (),
) -> str:
    """``Type(head..., name=text, ...)`` of ``obj``, never raising.

    Each field is an attribute name, shown through :func:`value_text`, or ``(name, shown)``.
    A field ``obj`` lacks is left out; one whose text cannot be made is shown as ``?``.
    ``head`` are texts put first, without a name.

    Examples
    --------
    >>> class Box:
    ...     size = torch.zeros(4, 2)
    >>> short_repr(Box(), "size", ("weight", number_text), head=["'red'"])
    "Box('red', size=Tensor(shape=(4, 2), dtype=float32))"
    """
    parts = list(head)
    for item in fields:
        name, shown = (item, value_text) if isinstance(item, str) else item
        try:
            value = getattr(obj, name, _MISSING)
            if value is _MISSING:
                continue
            parts.append(f"{name}={shown(value)}")
        except Exception:  # a repr must not raise: a closed file, a half-built object
            parts.append(f"{name}=?")
    return f"{type(obj).__name__}({', '.join(parts)})"


def attempted(text: Callable[[], str]) -> str:
    """``text()``, or ``?`` where it raises (for a part of a repr that reads several fields).

    Examples
    --------
    >>> attempted(lambda: str(1 / 0))
    '?'
    """
    try:
        return text()
    except Exception:  # a repr must not raise
        return "?"


def never_raising(method: Callable[[Any], str]) -> Callable[[Any], str]:
    """A ``__repr__`` that, where it raises (an object whose ``__init__`` failed part way, as a
    traceback's locals show it), says so in one line instead.

    Examples
    --------
    >>> class Half:
    ...     @never_raising
    ...     def __repr__(self):
    ...         return f"Half({self.size})"
    >>> Half.__new__(Half)
    <Half, not readable: AttributeError: 'Half' object has no attribute 'size'>
    """

    @functools.wraps(method)
    def guarded(self: Any) -> str:
        try:
            return method(self)
        except Exception as exc:  # a repr must not raise
            why = str(exc) if len(str(exc)) <= _LONGEST else str(exc)[: _LONGEST - 3] + "..."
            return f"<{type(self).__name__}, not readable: {type(exc).__name__}: {why}>"

    return guarded
