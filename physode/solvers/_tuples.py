"""States given as a tuple of tensors: one flat tensor for the solver, views of it for ``func``.

The solver, its error norm and the three gradient modes see a single 1-D tensor, the parts
flattened and concatenated in order. ``func`` receives views of that tensor in the parts' shapes
and returns one derivative per part, which are concatenated back. A plain tensor state never
passes through here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from physode._errors import InvalidArgumentError
from physode.solvers.loop import autocast_hint

__all__ = ["Parts", "RowParts", "RowTupleFunc", "TupleFunc"]


class Parts:
    """The shapes of a tuple state's parts and how they lie in the flat tensor.

    Examples
    --------
    >>> import torch
    >>> parts = Parts([torch.zeros(2, 3), torch.zeros(2, 1)])
    >>> flat = parts.flatten([torch.ones(2, 3), torch.zeros(2, 1)])
    >>> flat.shape
    torch.Size([8])
    >>> [tuple(p.shape) for p in parts.split(flat)]
    [(2, 3), (2, 1)]
    """

    def __init__(self, parts: Sequence[Tensor]):
        self.shapes = tuple(p.shape for p in parts)
        self.sizes = tuple(p.numel() for p in parts)

    def __len__(self) -> int:
        return len(self.shapes)

    def flatten(self, parts: Sequence[Tensor]) -> Tensor:
        """The parts, each flattened, concatenated in order (differentiable)."""
        return torch.cat([p.reshape(-1) for p in parts])

    def split(self, flat: Tensor, lead: tuple[int, ...] = ()) -> tuple[Tensor, ...]:
        """Views of ``flat`` (shape ``(*lead, sum(sizes))``) in the parts' shapes, each behind
        ``lead``."""
        chunks = flat.split(self.sizes, dim=-1)
        # view((...)) with a tuple, so that a 0-dim part behind no leading dimension works too
        return tuple(c.view((*lead, *s)) for c, s in zip(chunks, self.shapes))

    def check_derivative(self, dy: object, y: Tensor) -> None:
        """Refuse what ``func`` returned unless it is one tensor per part, each of its part's
        shape, with ``y``'s dtype and device; the message names the part."""
        n = len(self.shapes)
        if not isinstance(dy, tuple | list):
            raise InvalidArgumentError(
                f"func(t, y) must return a tuple of {n} tensors for a tuple state y0 (dy/dt of "
                f"each part), got {type(dy).__name__}"
            )
        if len(dy) != n:
            raise InvalidArgumentError(
                f"func(t, y) returned {len(dy)} parts, but y0 has {n}; return one dy/dt per "
                "part of y, in y's order"
            )
        for i, (part, shape) in enumerate(zip(dy, self.shapes)):
            if not isinstance(part, Tensor):
                raise InvalidArgumentError(
                    f"func(t, y) returned part {i} as {type(part).__name__}; each part of dy/dt "
                    "must be a tensor"
                )
            if part.shape != shape:
                raise InvalidArgumentError(
                    f"func(t, y) returned part {i} of shape {tuple(part.shape)}, but y0[{i}] has "
                    f"shape {tuple(shape)}; each part of dy/dt must have its part's shape"
                )
            if part.dtype != y.dtype or part.device != y.device:
                raise InvalidArgumentError(
                    f"func(t, y) returned part {i} as {part.dtype} on {part.device}, but y is "
                    f"{y.dtype} on {y.device}; return every part in y's dtype and device"
                    + (autocast_hint(part) if part.dtype != y.dtype else "")
                )


class RowParts(Parts):
    """The layout of a tuple state of a batch whose rows are every part's first dimension: the
    flat state has shape ``(batch, sum(sizes))``, each row its parts' entries flattened and
    concatenated in order, so that a per-row mask (``torch.where`` with one value per row) still
    picks whole rows (one event per row, :func:`physode.odeint_event`). ``sizes`` are per row.

    ``time_shape`` is the shape that per-row times take for ``func``: ``(batch, 1, ...)``,
    broadcastable against every part, when the parts have one number of dimensions; else
    ``(batch,)``.

    Examples
    --------
    >>> import torch
    >>> parts = RowParts([torch.zeros(4, 3), torch.zeros(4)])
    >>> flat = parts.flatten([torch.ones(4, 3), torch.zeros(4)])
    >>> tuple(flat.shape), parts.sizes, parts.time_shape
    ((4, 4), (3, 1), (4,))
    >>> [tuple(p.shape) for p in parts.split(flat)]
    [(4, 3), (4,)]
    """

    def __init__(self, parts: Sequence[Tensor]):
        super().__init__(parts)
        self.batch = parts[0].shape[0]
        self.sizes = tuple(size // self.batch for size in self.sizes)
        ndims = {len(shape) for shape in self.shapes}
        self.time_shape = (self.batch,) + (1,) * (min(ndims) - 1 if len(ndims) == 1 else 0)

    def flatten(self, parts: Sequence[Tensor], lead: tuple[int, ...] = ()) -> Tensor:
        """The parts (each of shape ``(*lead, *its shape)``), each flattened row by row,
        concatenated along the last dimension: shape ``(*lead, batch, sum(sizes))``."""
        return torch.cat([p.reshape(*lead, self.batch, -1) for p in parts], dim=-1)


class TupleFunc:
    """``func`` of a tuple state, as a function of the flat state that the solver steps.

    Its first call checks what ``func`` returns (:meth:`Parts.check_derivative`); every call
    costs the split into views and one ``torch.cat`` beyond ``func`` itself. For a symplectic
    method the tuple ``(q, v)`` is the split: ``separable`` and ``n_coordinates`` say so, and a
    ``drift_is_velocity = True`` that ``func`` declares is passed on (and probed, as ever).
    """

    def __init__(self, func: Callable, parts: Parts, symplectic: bool = False):
        self.func, self.parts = func, parts
        self._checked = False
        if symplectic:
            self.separable = True
            self.n_coordinates = parts.sizes[0]
            # As declared: check_split checks the value and holds func to it.
            self.drift_is_velocity = getattr(func, "drift_is_velocity", False)
            self.declared_split = "y0 is the tuple (q, v)"

    def __call__(self, t: Tensor, y: Tensor) -> Tensor:
        dy = self.func(t, self.parts.split(y))
        if not self._checked:
            self.parts.check_derivative(dy, y)
            self._checked = True
        return self.parts.flatten(dy)


class RowTupleFunc(TupleFunc):
    """:class:`TupleFunc` over a :class:`RowParts` layout: per-row times (a tensor of one time
    per row, shaped for the flat state) reach ``func`` in the parts' ``time_shape``."""

    def __call__(self, t: Tensor, y: Tensor) -> Tensor:
        return super().__call__(t.view(self.parts.time_shape) if t.ndim else t, y)
