"""What a tensor's autograd graph holds, for the checks the solve makes before it starts."""

from __future__ import annotations

from torch import Tensor

__all__ = ["graph_leaves"]


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
