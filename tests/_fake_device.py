"""A second device on the CPU, for the tests of what a GPU would show: tensors left on the host
beside tensors on the device.

Inside :class:`FakeDevice`, a tensor moved to ``FAKE`` (``x.to(FAKE)``, a module's ``.to(FAKE)``,
a factory given ``device=FAKE`` or ``device=y.device``) says it is on the ``meta`` device but
holds its values on the CPU, so that a solve computes as on a GPU. An operator that mixes such
tensors with host tensors of one dimension or more raises :class:`Mismatch`, as CUDA raises for
them; what CUDA allows passes: a 0-dim host tensor (taken as a number), host indices into a
tensor on the device, copies between the two, and reading values (``.item()``, ``.tolist()``).
:attr:`FakeDevice.transfers` counts what a GPU would copy from the host: tensors moved to the
device, and host indices into a tensor on the device (CUDA copies them first); each such copy
from ordinary host memory makes the host wait for the GPU.

Examples
--------
>>> with FakeDevice():
...     y = torch.ones(3).to(FAKE)
...     (y * 2).device, (y + torch.tensor(1.0)).tolist(), y[torch.tensor([0, 2])].shape
(device(type='meta'), [2.0, 2.0, 2.0], torch.Size([2]))
>>> with FakeDevice():
...     torch.ones(3).to(FAKE) + torch.ones(3)
Traceback (most recent call last):
...
_fake_device.Mismatch: aten.add.Tensor: tensors on the device beside host tensors of shapes [(3,)]
"""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

aten = torch.ops.aten
FAKE = torch.device("meta")
_COPIES = {aten._to_copy, aten.copy_}
# Indexing, whose indices may stay on the host when the indexed tensor is on the device.
_INDEXING = {aten.index, aten.index_put, aten.index_put_, aten._index_put_impl_}


class Mismatch(RuntimeError):
    """An operator given tensors on the device and on the host, which CUDA refuses."""


class OnDevice(torch.Tensor):
    """A tensor on the fake device: its values are ``elem``, on the CPU."""

    elem: torch.Tensor

    @staticmethod
    def __new__(cls, elem: torch.Tensor):
        return torch.Tensor._make_wrapper_subclass(
            cls, elem.shape, strides=elem.stride(), storage_offset=elem.storage_offset(),
            dtype=elem.dtype, layout=elem.layout, device=FAKE, requires_grad=elem.requires_grad,
        )  # fmt: skip

    def __init__(self, elem: torch.Tensor):
        self.elem = elem

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        raise RuntimeError(f"{func} on the fake device outside FakeDevice()")

    # Python's indexing turns a list index into a tensor on the indexed tensor's device, below
    # the mode, with no values: give it as a host tensor instead, as CUDA takes.
    def __getitem__(self, index):
        return super().__getitem__(_host_lists(index))

    def __setitem__(self, index, value):
        return super().__setitem__(_host_lists(index), value)

    def __reduce_ex__(self, protocol):
        return self.elem.__reduce_ex__(protocol)  # saved as the host tensor it holds

    def __repr__(self) -> str:
        return f"OnDevice({self.elem!r})"


def _host_lists(index):
    if isinstance(index, tuple):
        return tuple(_host_lists(i) for i in index)
    return torch.tensor(index) if isinstance(index, list) else index


def _host(a) -> bool:
    """A host tensor that an operator on the device refuses: one with dimensions."""
    return isinstance(a, torch.Tensor) and not isinstance(a, OnDevice) and a.ndim > 0


def _check_same_device(func, flat) -> None:
    host = [tuple(a.shape) for a in flat if _host(a)]
    if host and any(isinstance(a, OnDevice) for a in flat):
        raise Mismatch(f"{func}: tensors on the device beside host tensors of shapes {host}")


def _check_indexing(func, args) -> None:
    indexed, indices, *rest = args
    if not isinstance(indexed, OnDevice):
        if any(isinstance(a, OnDevice) for a in [*indices, *rest]):
            raise Mismatch(f"{func}: a host tensor indexed with, or given, tensors on the device")
    elif any(_host(v) for v in rest):
        raise Mismatch(f"{func}: a tensor on the device given values on the host")


def _built_on_the_host(make):
    """``torch.tensor`` and ``torch.as_tensor`` build on their device below any dispatch mode:
    build on the host, then move through the mode."""

    def made(data, *args, device=None, **kwargs):
        if device is not None and torch.device(device) == FAKE:
            return make(data, *args, **kwargs).to(FAKE)
        return make(data, *args, device=device, **kwargs)

    return made


def _transfers(func, args, kwargs, to_fake: bool) -> list[tuple[int, ...]]:
    """The shapes of the host tensors that ``func`` would copy to a GPU."""
    if func.overloadpacket is aten._to_copy:
        return [tuple(args[0].shape)] if to_fake and not isinstance(args[0], OnDevice) else []
    if func.overloadpacket is aten.copy_ and isinstance(args[0], OnDevice):
        return [] if isinstance(args[1], OnDevice) else [tuple(args[1].shape)]
    if func.overloadpacket in _INDEXING and isinstance(args[0], OnDevice):
        return [tuple(i.shape) for i in args[1] if _host(i)]
    return []


class FakeDevice(TorchDispatchMode):
    """While active, ``FAKE`` is a device whose tensors compute on the CPU (see the module);
    ``transfers`` lists the shapes of the host tensors a GPU would have copied to it."""

    def __init__(self):
        super().__init__()
        self.transfers: list[tuple[int, ...]] = []

    def __enter__(self):
        self._saved = torch.tensor, torch.as_tensor, torch.Tensor.tolist
        torch.tensor, torch.as_tensor = map(_built_on_the_host, self._saved[:2])
        tolist = self._saved[2]
        torch.Tensor.tolist = lambda x: tolist(x.elem if isinstance(x, OnDevice) else x)
        # Module.to() then swaps whole tensors, their attribute elem included.
        self._swap = torch.__future__.get_swap_module_params_on_conversion()
        torch.__future__.set_swap_module_params_on_conversion(True)
        return super().__enter__()

    def __exit__(self, *exc):
        torch.tensor, torch.as_tensor, torch.Tensor.tolist = self._saved
        torch.__future__.set_swap_module_params_on_conversion(self._swap)
        return super().__exit__(*exc)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        flat, _ = tree_flatten((args, kwargs))
        on_device = any(isinstance(a, OnDevice) for a in flat)
        lost = [a for a in flat if isinstance(a, torch.Tensor) and not isinstance(a, OnDevice)
                and a.device == FAKE]  # fmt: skip
        if lost:
            raise RuntimeError(f"{func}: a tensor made on the fake device past FakeDevice()")
        if func.overloadpacket in _INDEXING:
            _check_indexing(func, args)
        elif func.overloadpacket not in _COPIES:
            _check_same_device(func, flat)
        target = kwargs.get("device")
        to_fake = target is not None and torch.device(target) == FAKE
        self.transfers += _transfers(func, args, kwargs, to_fake)
        if to_fake:
            kwargs["device"] = torch.device("cpu")

        def unwrap(a):
            return a.elem if isinstance(a, OnDevice) else a

        out = func(*tree_map(unwrap, args), **tree_map(unwrap, kwargs))
        if func.overloadpacket is aten._to_copy and target is not None and not to_fake:
            return out  # a copy to the host
        if not (on_device or to_fake):
            return out
        if func._schema.is_mutable and args and isinstance(args[0], OnDevice):
            if out is args[0].elem:  # in place: the tensor itself
                return args[0]
        return tree_map(lambda o: OnDevice(o) if isinstance(o, torch.Tensor) else o, out)
