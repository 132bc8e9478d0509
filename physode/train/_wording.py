"""How the trainer's messages list names and write numbers."""

from __future__ import annotations

import math
from typing import Any

import torch

from physode._errors import first_shown

# How many trajectories, windows or parameters a training error lists before "and N more".
_SHOWN = 5


def _listed(items: list[str]) -> str:
    """The first ``_SHOWN`` of ``items``, then how many more."""
    return first_shown(items, _SHOWN)


def _number(value: Any) -> str:
    """A time, step size or loss in a message (a tensor's first value: per-sample times)."""
    if isinstance(value, torch.Tensor):
        value = value.reshape(-1)[0].item() if value.numel() else math.nan
    try:
        return f"{float(value):.6g}"
    except (TypeError, ValueError):
        return str(value)
