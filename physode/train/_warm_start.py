"""Warm starts (``init_from``): the ways the weights of a file fit a model, between physics
models and hybrids too, and what loading them does, in words."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from physode._errors import InvalidArgumentError
from physode.train._wording import _listed

# Where a hybrid (physode.models.Hybrid) keeps its physics part, and the prefix of its entries.
_PHYSICS_PART = "physics"


@dataclass
class _WeightMatch:
    """One way to load the weights of a file into a model: ``entries`` (keyed as ``target``'s
    state dict) into ``target``, the model or its physics part (at ``prefix``); ``left_out``: the
    file's keys that stay out (the rest of a hybrid whose physics part starts a physics model)."""

    target: nn.Module
    prefix: str
    entries: dict[str, torch.Tensor]
    left_out: list[str]
    missing: list[str]
    unexpected: list[str]

    @classmethod
    def of(cls, target: nn.Module, prefix: str, entries: dict, left_out: list[str]) -> _WeightMatch:
        mine = target.state_dict()
        missing = [k for k in mine if k not in entries]
        unexpected = [k for k in entries if k not in mine]
        return cls(target, prefix, entries, left_out, missing, unexpected)

    def as_model(self) -> dict[str, torch.Tensor]:
        """The entries keyed as the whole model's state dict."""
        return {self.prefix + k: v for k, v in self.entries.items()}

    def problems(self) -> list[str]:
        """The missing, unexpected and reshaped entries, each kind in a few words."""
        mine = self.target.state_dict()
        reshaped = [
            f"{k} {tuple(v.shape)} -> {tuple(mine[k].shape)}"
            for k, v in self.entries.items() if k in mine and v.shape != mine[k].shape
        ]
        return [
            f"{what}: {_listed(keys)}"
            for what, keys in (
                ("missing from the file", self.missing),
                ("in the file, not in the model", self.unexpected),
                ("of another shape (the file's -> the model's)", reshaped),
            )
            if keys
        ]

    def described(self, model: nn.Module, path: Path) -> str:
        """What loading it does to ``model``, in words."""
        if self.prefix:  # a physics model's weights in a hybrid's physics part
            rest = [name for name, _ in model.named_children() if name != _PHYSICS_PART]
            text = (
                f"started the physics part ({_parameter_names(self.target)}) from {path}; "
                f"{' and '.join(f'the {name}' for name in rest) or 'the rest'} "
                f"start{'s' if len(rest) == 1 else ''} fresh"
            )
            aphynity = getattr(model, "aphynity", None)
            if aphynity is not None:
                text += f", and APHYNITY's λ at {aphynity.lambda_init:g}"
            return text
        if self.left_out:  # a hybrid's physics part in a physics model
            parts = list(dict.fromkeys(key.split(".")[0] for key in self.left_out))
            return (
                f"started the {type(model).__name__} ({_parameter_names(model)}) from the "
                f"physics part of {path}; the rest of the file's model ({', '.join(parts)}) "
                "was left out"
            )
        return f"started the whole {type(model).__name__} from {path}"


def _weight_matches(model: nn.Module, saved: dict[str, torch.Tensor]) -> list[_WeightMatch]:
    """The ways to load ``saved`` into ``model``: whole; into a hybrid's physics part; a
    hybrid's physics part into the whole model."""
    matches = [_WeightMatch.of(model, "", saved, [])]
    part = getattr(model, _PHYSICS_PART, None)
    if isinstance(part, nn.Module):
        matches.append(_WeightMatch.of(part, _PHYSICS_PART + ".", saved, []))
    prefix = _PHYSICS_PART + "."
    inside = {k.removeprefix(prefix): v for k, v in saved.items() if k.startswith(prefix)}
    if inside and len(inside) < len(saved):
        left_out = [k for k in saved if not k.startswith(prefix)]
        matches.append(_WeightMatch.of(model, "", inside, left_out))
    return matches


def _parameter_names(model: nn.Module) -> str:
    """The physical parameters of a physics model, in the system's order, those learned per
    trajectory marked; the names of its state's entries for another module."""
    system = getattr(model, "system", None)
    names = list(getattr(system, "parameters", None) or model.state_dict())
    per_trajectory = getattr(model, "per_trajectory", None) or ()
    return ", ".join(f"{n} per trajectory" if n in per_trajectory else n for n in names)


def _misfit(
    model: nn.Module, path: Path, match: _WeightMatch, problems: list[str]
) -> InvalidArgumentError:
    """The error for weights of ``path`` that do not fit ``match``'s part of ``model``."""
    whose = type(model).__name__
    if match.prefix:
        whose += f"'s physics part ({type(match.target).__name__})"
    elif match.left_out:
        whose += " (compared with the physics part of the file's model)"
    advice = "build the model they were saved from (the same kind, system and network shape)"
    if match.prefix or match.left_out:
        advice += ", or a physics model and a hybrid of the same system"
    return InvalidArgumentError(
        f"cannot start from the weights of {path}: they do not fit this trainer's {whose} "
        f"({'; '.join(problems)}); {advice}"
    )
