"""What a tensor's autograd graph holds, for the checks the solve makes before it starts, and
torch's private queries of the transforms (``vmap``, ``grad``) at work around a call."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["graph_leaves", "private_query", "transforms_active"]


def private_query(name: str, module: object = None) -> Callable[..., bool]:
    """The private torch function ``name`` of ``torch._C._functorch`` (or of ``module``) that says
    whether a transform is at work, or one that answers ``False`` where this torch has no such
    function: torch may rename them in any release, and a solve must then still run (the
    refusals that rest on them go with them).

    >>> private_query("no_such_query")(torch.ones(1))
    False
    """
    if module is None:
        module = getattr(torch._C, "_functorch", None)
    found = getattr(module, name, None)
    return found if callable(found) else (lambda *args: False)


# Whether any torch.func transform (vmap, grad, jacrev, jvp, ...) is at work around the call.
transforms_active = private_query("_are_functorch_transforms_active", torch._C)


def graph_leaves(output: Tensor) -> list[Tensor]:
    """The leaf tensors requiring grad that ``output`` was computed from."""
    leaves: dict[int, Tensor] = {}
    seen: set = set()
    stack = [output.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        variable = getattr(node, "variable", None)
        if isinstance(variable, Tensor):
            leaves.setdefault(id(variable), variable)
        stack.extend(child for child, _ in node.next_functions)
    return list(leaves.values())
