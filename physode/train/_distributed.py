"""Data-parallel training across processes through ``torch.distributed``: which process this
is, the collectives the trainer makes (one all-reduce per evaluation, a few per epoch), and the
process group that ``physode train`` starts under ``torchrun``.

Every process builds the same batches; each solves its share of every batch's windows
(``batch[rank::world]``), and one all-reduce of a flat buffer sums the shares' gradients, loss
and objective (each weighted by its part of the batch), work counts and failure flags. Nothing
here runs in a single process: :func:`process_group` is then ``None`` and the trainer takes its
single-process path."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from physode._errors import DistributedError, InvalidArgumentError, first_line

# How messages name the processes of a run.
TOGETHER = "processes training together (torch.distributed)"


@dataclass(frozen=True)
class Group:
    """The default process group as the trainer sees it: this process's ``rank`` among
    ``world`` processes."""

    rank: int
    world: int


def process_group() -> Group | None:
    """The initialised default process group of more than one process, else ``None`` (also
    where ``torch.distributed`` is not built in)."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()):
        return None
    world = dist.get_world_size()
    return Group(dist.get_rank(), world) if world > 1 else None


@dataclass
class Stats:
    """The work counts of a solve, summed over the processes (for the log)."""

    nfe: int
    nfe_backward: int


@dataclass
class Counted:
    """Stands in for a solution where the trainer counts work: ``.stats`` summed over the
    processes."""

    stats: Stats


def all_reduce(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over the processes, in place; return it."""
    torch.distributed.all_reduce(tensor)
    return tensor


def gathered(value: Any, group: Group, call: str) -> list[Any]:
    """Every process's ``value`` (plain Python values), in rank order, gathered where each
    process makes ``call`` (e.g. ``"fit"``): a process that makes another call there (a
    checkpoint loaded in one process only) is refused in all, naming each one's call."""
    values: list[Any] = [None] * group.world
    torch.distributed.all_gather_object(values, (call, value))
    calls = [theirs for theirs, _ in values]
    if len(set(calls)) > 1:
        made = ", ".join(f"process {rank}: {theirs}" for rank, theirs in enumerate(calls))
        raise DistributedError(
            f"the {group.world} {TOGETHER} met in different calls ({made}); every process must "
            "make the same calls of its trainer (building it, load_checkpoint, fit, "
            "train_epoch, validation_loss) in the same order"
        )
    return [theirs for _, theirs in values]


def error_elsewhere(reports: list[Any], group: Group) -> DistributedError | None:
    """The error to raise where another process stopped on an error that is no failed batch
    or solve: ``reports`` hold ``("error", "Type: message", ...)`` for such a process."""
    for rank, report in enumerate(reports):
        if report is not None and report[0] == "error":
            return DistributedError(
                f"process {rank} of the {group.world} {TOGETHER} stopped on an error: {report[1]}"
            )
    return None


def rank_zeros(value: float, device: torch.device) -> float:
    """Rank 0's ``value`` on every process (e.g. an epoch's wall time, which decides the time
    limit: every process must decide alike)."""
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    torch.distributed.broadcast(tensor, 0)
    return float(tensor.item())


def broadcast_problem(problem: str | None, device: torch.device) -> str | None:
    """Rank 0's ``problem`` (why it could not write the log or a checkpoint, else ``None``) on
    every process: one small broadcast when there is none."""
    flag = torch.tensor([0.0 if problem is None else 1.0], dtype=torch.float64, device=device)
    torch.distributed.broadcast(flag, 0)
    if not flag.item():
        return None
    message = [problem]
    torch.distributed.broadcast_object_list(message, 0)
    return message[0]


# The settings that each process may have its own of: where process 0 writes (the others
# write nothing), its device, and the file that every process reads the same weights from.
OWN_SETTINGS = frozenset({"log", "checkpoint_dir", "progress", "device", "init_from"})


def _digest(tensor: torch.Tensor | None) -> str:
    """The shape, dtype and a hash of the bytes of ``tensor`` (``"none"`` for ``None``)."""
    if tensor is None:
        return "none"
    data = tensor.detach().to("cpu").contiguous()
    digest = hashlib.sha1(data.view(-1).view(torch.uint8).numpy().tobytes()).hexdigest()
    return f"{tuple(data.shape)} {str(data.dtype).removeprefix('torch.')} #{digest[:12]}"


def description(config: Any, model: torch.nn.Module, data: dict[str, str]) -> dict[str, str]:
    """What must be the same in every process for them to train one model together: the
    settings (:data:`OWN_SETTINGS` aside), the shapes of the model's parameters and the
    training and validation data (``data``, their :func:`data_description`), each in a few
    words."""
    described = {
        f"setting {f.name}": repr(getattr(config, f.name))
        for f in dataclasses.fields(config) if f.name not in OWN_SETTINGS
    }
    described["model's parameters"] = ", ".join(
        f"{name} {tuple(p.shape)}" for name, p in model.named_parameters()
    )
    return {**described, **data}


def data_description(train: Any, val: Any) -> dict[str, str]:
    """The training and validation data (:class:`~physode.train.Trajectories`, ``val`` may be
    ``None``), each part as its shape, dtype and a hash of its bytes: what the processes of a
    run compare, and a resume with the saved run."""
    return {
        f"{role} data's {part}": _digest(None if data is None else getattr(data, part))
        for role, data in (("training", train), ("validation", val))
        for part in ("t", "states", "params")
    }


def refuse_differences(described: dict[str, str], group: Group) -> None:
    """Raise in every process where they built different trainers (``described``:
    :func:`description`); return in every one otherwise. One gather of small Python values,
    once a trainer."""
    reports = gathered(described, group, "building the trainer")
    reference = reports[0]
    for rank, theirs in enumerate(reports[1:], 1):
        differ = [key for key in reference if theirs.get(key) != reference[key]]
        if differ:
            shown = "; ".join(
                f"{key}: {theirs.get(key)} in process {rank}, {reference[key]} in process 0"
                for key in differ[:3]
            )
            more = f" (and {len(differ) - 3} more)" if len(differ) > 3 else ""
            raise InvalidArgumentError(
                f"the {group.world} {TOGETHER} were given different data or settings "
                f"({shown}{more}). Give every process the same model, data and settings: each "
                "solves its own share of every batch, so the data must not be split among the "
                "processes"
            )


@contextlib.contextmanager
def together(group: Group | None, call: str, what: str) -> Iterator[None]:
    """Run the block, the trainer's ``call`` (e.g. ``"load_checkpoint"``), in every process,
    and where it raises in one, raise in all: that process its own exception, the others an
    error naming it (``what``: what it could not do, e.g. ``could not resume last.pt``). One
    gather of small values; nothing without a ``group``."""
    if group is None:
        yield
        return
    problem = None
    try:
        yield
    except Exception as exc:
        problem = exc
    mine = None if problem is None else (type(problem).__name__, first_line(problem))
    reports = gathered(mine, group, call)
    if problem is not None:
        raise problem
    for rank, report in enumerate(reports):
        if report is not None:
            kind = InvalidArgumentError if report[0] == "InvalidArgumentError" else DistributedError
            raise kind(
                f"process {rank} of the {group.world} {TOGETHER} {what}: {report[0]}: "
                f"{report[1]}"
            )


def refuse_other_epochs(epochs: list[int], group: Group) -> None:
    """Refuse to train on where the processes are at different epochs (``epochs``, in rank
    order): a checkpoint loaded in some of them only."""
    if len(set(epochs)) > 1:
        at = ", ".join(f"process {rank}: {epoch}" for rank, epoch in enumerate(epochs))
        raise InvalidArgumentError(
            f"the {group.world} {TOGETHER} are at different epochs ({at}); load the same "
            "checkpoint in every process (load_checkpoint), or in none"
        )


def broadcast_state(module: torch.nn.Module) -> None:
    """Rank 0's parameters and buffers on every process (the processes may have built the model
    from different random weights)."""
    with torch.no_grad():
        for tensor in (*module.parameters(), *module.buffers()):
            torch.distributed.broadcast(tensor, 0)


def leave(finished: bool) -> None:
    """End this process's part in the default process group. ``finished``: it ended the run
    as every process does (an exit status, not an exception of its own), so it first waits
    for the others there: gloo can abort a process at exit ("terminate called without an
    active exception") that destroys the group while another's last messages are in flight."""
    if finished:
        torch.distributed.barrier()
    torch.distributed.destroy_process_group()


def start_from_environment(device: str | None) -> tuple[Group | None, str | None]:
    """Start the default process group from ``torchrun``'s environment (``WORLD_SIZE`` above 1,
    ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) unless one is started already;
    return it and the device this process trains on: ``cuda:LOCAL_RANK`` (backend nccl) where
    ``device`` names a CUDA device (``"cuda"``: each process takes its own); else ``device`` as
    given (backend gloo), as one process trains on the CPU unless told otherwise. Without such
    an environment: ``(None, device)``, nothing started."""
    dist = torch.distributed
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError:
        raise InvalidArgumentError(
            f"WORLD_SIZE={os.environ.get('WORLD_SIZE')!r} and LOCAL_RANK="
            f"{os.environ.get('LOCAL_RANK')!r} must be whole numbers (torchrun sets them)"
        ) from None
    if world <= 1 and not (dist.is_available() and dist.is_initialized()):
        return None, device
    if not dist.is_available():
        raise InvalidArgumentError(
            f"WORLD_SIZE={world} asks for {world} processes, but this torch build has no "
            "torch.distributed; run one process (without torchrun)"
        )
    cuda = device is not None and device.startswith("cuda")
    if cuda:
        device = f"cuda:{local}"
    if not dist.is_initialized():
        if cuda:
            torch.cuda.set_device(local)
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return process_group(), device
