"""What the models' ``load_state_dict`` shares: refusing a whole training checkpoint."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from physode._errors import InvalidArgumentError


def refuse_a_checkpoint(state_dict: Any, model: str) -> None:
    """Raise where ``state_dict`` is a physode training checkpoint (``torch.load`` of
    ``last.pt`` or ``best.pt``) rather than a state dict, saying where its weights are; torch
    would otherwise list every entry of the checkpoint as an unexpected key."""
    if not (isinstance(state_dict, Mapping) and "format" in state_dict and "model" in state_dict):
        return
    from physode.train._checkpoints import CHECKPOINT_FORMAT

    if state_dict["format"] != CHECKPOINT_FORMAT:
        return
    raise InvalidArgumentError(
        f"{model}.load_state_dict was given a whole physode training checkpoint (epoch "
        f"{state_dict.get('epoch')!r}), not a state dict; its weights are checkpoint['model']: "
        "model.load_state_dict(torch.load(path)['model']), or start a run from the file with "
        "Trainer(..., init_from=path)"
    )
