"""Counting, on the CPU, the host synchronisations a computation would make on a GPU.

On a GPU, reading a value computed on the device (``.item()``, ``bool(tensor)``, ``float(tensor)``,
``.tolist()``, ``.cpu()``, ``.numpy()``) or an operation whose result's size depends on the data
(``nonzero``, a boolean mask as an index) makes the host wait for every kernel queued before it.
On the CPU none of them waits, but they are the same calls, so they can be counted there.
"""

from __future__ import annotations

from contextlib import ExitStack
from unittest import mock

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten

# Operators that read device memory on the host, or size their output by the data.
_SYNC_OPS = {
    aten._local_scalar_dense.default,  # .item(), bool(), float(), int()
    aten.nonzero.default,
    aten.masked_select.default,
    aten._unique2.default,
    aten.unique_dim.default,
}
# Indexing operators, which synchronise where an index is a boolean mask.
_INDEX_OPS = {aten.index, aten.index_put, aten.index_put_}
# Methods that copy to the host without the dispatcher seeing it, for a tensor already there.
_SYNC_METHODS = ("tolist", "cpu", "numpy")


def _is_mask(index) -> bool:
    return isinstance(index, torch.Tensor) and index.dtype in (torch.bool, torch.uint8)


class _Dispatch(TorchDispatchMode):
    def __init__(self, counter: HostSyncs):
        super().__init__()
        self.counter = counter

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in _SYNC_OPS or (
            func.overloadpacket in _INDEX_OPS and any(_is_mask(i) for i in args[1])
        ):
            self.counter.record(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


class HostSyncs:
    """Context manager counting host synchronisations: ``count`` in all, ``ops`` by name.

    Examples
    --------
    >>> x = torch.ones(3)
    >>> with HostSyncs() as syncs:
    ...     _ = bool(x.all()), x.tolist(), x + 1, x[x > 0]
    >>> syncs.count, sorted(syncs.ops)
    (3, ['_local_scalar_dense', 'index', 'tolist'])
    """

    def __init__(self):
        self.ops: dict[str, int] = {}
        self._stack = ExitStack()

    @property
    def count(self) -> int:
        return sum(self.ops.values())

    def record(self, name: str) -> None:
        self.ops[name] = self.ops.get(name, 0) + 1

    def _counting(self, name: str):
        method = getattr(torch.Tensor, name)

        def counted(tensor, *args, **kwargs):
            self.record(name)
            return method(tensor, *args, **kwargs)

        return counted

    def __enter__(self) -> HostSyncs:
        for name in _SYNC_METHODS:
            self._stack.enter_context(mock.patch.object(torch.Tensor, name, self._counting(name)))
        self._stack.enter_context(_Dispatch(self))
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()
