"""Hybrid models: a physics term plus a learned residual, with the APHYNITY penalty as an option."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from physode._checks import is_finite_real
from physode._errors import InvalidArgumentError, UnsupportedError
from physode.models._weights import refuse_a_checkpoint
from physode.models.neural import call_module


@dataclass(frozen=True)
class Aphynity:
    """Settings of the APHYNITY objective (Yin et al., 2021).

    The trainer minimises ``‖f_residual‖² + λ · L_traj`` and raises the weight
    ``λ ← λ + τ · L_traj``: the trajectory fit becomes a harder and harder constraint, while the
    residual is kept as small as the data allow, so it explains only what the physics cannot.

    Parameters
    ----------
    lambda_init : float
        Starting weight ``λ`` of the trajectory loss (finite, > 0).
    tau : float
        Growth rate ``τ`` of ``λ`` (finite, ≥ 0; ``0`` keeps ``λ`` fixed).
    update : {"batch", "epoch"}
        When ``λ`` grows: after every batch by ``τ`` times that batch's loss (the default, as
        in the paper's per-step update), so that an epoch of ``B`` batches adds about
        ``B · τ · L_traj`` and the effect of ``τ`` depends on the batches per epoch; or once
        after every epoch by ``τ`` times the epoch's mean batch loss, the same whatever the
        batch size.

    Examples
    --------
    >>> Aphynity(lambda_init=1.0, tau=10.0)
    Aphynity(lambda_init=1.0, tau=10.0, update='batch')
    """

    lambda_init: float = 1.0
    tau: float = 1.0
    update: str = "batch"

    def __post_init__(self) -> None:
        problems = []
        if self.update not in ("batch", "epoch"):
            problems.append(f"update={self.update!r} (choose 'batch' or 'epoch')")
        if not (is_finite_real(self.lambda_init) and self.lambda_init > 0):
            problems.append(f"lambda_init={self.lambda_init!r} (need a finite number > 0)")
        if not (is_finite_real(self.tau) and self.tau >= 0):
            problems.append(f"tau={self.tau!r} (need a finite number >= 0)")
        if problems:
            raise InvalidArgumentError("bad Aphynity settings: " + "; ".join(problems))


class Hybrid(nn.Module):
    """``f(t, y) = f_physics(t, y) + f_residual(t, y)``.

    Parameters
    ----------
    physics : nn.Module
        The known part, usually a :class:`~physode.models.PhysicsModel` (its learnable physical
        parameters are trained with the residual).
    residual : nn.Module
        The learned correction ``f(t, y)``, usually a :class:`~physode.models.NeuralODE` started
        at zero (``zero_output=True``).

        Either term may also be a plain function ``f(t, y)`` without learnable values: it is
        kept in a module of its own (its attributes, such as ``autonomous``, still read through
        it). One whose closure, globals or attributes hold tensors that require grad, or
        modules with parameters, is refused: ``model.parameters()``, and so the trainer's
        optimiser, would never see them.
    aphynity : Aphynity or bool, optional
        Train with the APHYNITY objective; ``True`` takes the default :class:`Aphynity`. The
        current ``λ`` is a buffer, so it is saved in checkpoints with the weights. Loading the
        state dict of a hybrid without APHYNITY (to fine-tune it with APHYNITY) keeps
        ``λ = lambda_init``.

    Examples
    --------
    >>> from physode.models import NeuralODE
    >>> linear = NeuralODE(2, depth=0)
    >>> model = Hybrid(linear, NeuralODE(2, width=8, depth=1, zero_output=True), aphynity=True)
    >>> y = torch.ones(3, 2)
    >>> torch.equal(model(torch.tensor(0.0), y), linear(torch.tensor(0.0), y))
    True
    """

    def __init__(
        self, physics: nn.Module, residual: nn.Module, aphynity: Aphynity | bool | None = None
    ) -> None:
        super().__init__()
        examples = {"physics": "the known part, e.g. PhysicsModel(system, learnable)",
                    "residual": "the learned correction, e.g. NeuralODE(n, zero_output=True)"}
        wrong = [f"{name}={term!r} ({examples[name]})"
                 for name, term in (("physics", physics), ("residual", residual))
                 if not callable(term)]  # fmt: skip
        if wrong:
            raise InvalidArgumentError(
                "Hybrid needs two modules f(t, y) that return dy/dt; not callable: "
                + "; ".join(wrong)
            )
        self.physics = _as_module("physics", physics)
        self.residual = _as_module("residual", residual)
        if aphynity is True:
            aphynity = Aphynity()
        if not (aphynity is None or aphynity is False or isinstance(aphynity, Aphynity)):
            raise InvalidArgumentError(
                f"aphynity={aphynity!r}; pass Aphynity(lambda_init=..., tau=...), True for "
                "Aphynity(), or None for the plain hybrid"
            )
        self.aphynity: Aphynity | None = aphynity or None
        lam = self.aphynity.lambda_init if self.aphynity else float("nan")
        self.register_buffer("aphynity_lambda", torch.tensor(lam, dtype=torch.float64))

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> Hybrid:
        """Move and cast like any module, but keep ``λ`` in float64: it grows by ``τ · L_traj``,
        increments that float32 would round away once they fall below ``λ · 6e-8``."""
        lam = self.aphynity_lambda
        module = super()._apply(fn, recurse)
        self.aphynity_lambda = lam.to(self.aphynity_lambda.device)
        return module

    def load_state_dict(self, *args, **kwargs):
        """Load like any module; a load that fails leaves the physics part's unsized
        per-trajectory table unsized (see :meth:`PhysicsModel.load_state_dict`)."""
        from physode.models.physics import keeping_unsized_tables

        refuse_a_checkpoint(args[0] if args else kwargs.get("state_dict"), "Hybrid")
        with keeping_unsized_tables(self):
            return super().load_state_dict(*args, **kwargs)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        """Load like any module, but keep this model's ``λ`` where the state dict holds none: a
        hybrid without APHYNITY stores NaN there, which would turn the objective into NaN."""
        lam = self.aphynity_lambda.clone()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if self.aphynity is not None and bool(self.aphynity_lambda.isnan()):
            self.aphynity_lambda.copy_(lam)

    def extra_repr(self) -> str:
        """The APHYNITY settings, which ``repr`` shows beside the two terms (``aphynity=None``
        for the plain hybrid)."""
        return f"aphynity={self.aphynity!r}"

    @property
    def autonomous(self) -> bool:
        """Whether both terms declare that they ignore ``t`` (a term without an ``autonomous``
        attribute is taken to depend on it)."""
        return bool(getattr(self.physics, "autonomous", False)) and bool(
            getattr(self.residual, "autonomous", False)
        )

    def physical_parameters(self) -> dict[str, float]:
        """The physics term's learnable parameters, by name (empty if it has none)."""
        get = getattr(self.physics, "physical_parameters", None)
        return get() if get is not None else {}

    @property
    def trajectory_parameters(self) -> tuple[str, ...]:
        """The physics term's per-row parameter names (``()`` when it takes none): see
        :attr:`PhysicsModel.trajectory_parameters`. The residual never sees them."""
        return tuple(getattr(self.physics, "trajectory_parameters", ()))

    def parameter_vector(self) -> torch.Tensor:
        """The physics term's own parameter values (see :meth:`PhysicsModel.parameter_vector`)."""
        own = getattr(self.physics, "parameter_vector", None)
        if own is None:
            raise UnsupportedError(
                f"this hybrid's physics term ({type(self.physics).__name__}) has no physical "
                "parameter values to give: parameter_vector() needs a physics.PhysicsModel term"
            )
        return own()

    # Parameters learned per trajectory belong to the physics term (see PhysicsModel's
    # per_trajectory); a hybrid passes the questions about them on.
    @property
    def per_trajectory(self) -> list[str]:
        """The physics term's parameters learned per trajectory (``[]`` when none)."""
        return list(getattr(self.physics, "per_trajectory", None) or [])

    @property
    def n_trajectories(self) -> int | None:
        """See :attr:`PhysicsModel.n_trajectories`."""
        return getattr(self.physics, "n_trajectories", None)

    def set_n_trajectories(self, n: int) -> None:
        """See :meth:`PhysicsModel.set_n_trajectories`."""
        if self.per_trajectory:
            self.physics.set_n_trajectories(n)

    def per_trajectory_values(self) -> dict[str, list[float]]:
        """See :meth:`PhysicsModel.per_trajectory_values`."""
        return self.physics.per_trajectory_values() if self.per_trajectory else {}

    def held_out_parameters(self) -> dict[str, float]:
        """See :meth:`PhysicsModel.held_out_parameters`."""
        return self.physics.held_out_parameters() if self.per_trajectory else {}

    def learned_rows(
        self,
        p: torch.Tensor | None,
        index: torch.Tensor | None,
        n: int,
        values: torch.Tensor | None = None,
    ) -> torch.Tensor | None:
        """See :meth:`PhysicsModel.learned_rows`."""
        return self.physics.learned_rows(p, index, n, values) if self.per_trajectory else p

    def forward(
        self, t: torch.Tensor, y: torch.Tensor, p: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Return ``dy/dt``: physics plus residual. ``p`` (per-row parameter values, see
        :attr:`trajectory_parameters`) goes to the physics term alone.

        Raises
        ------
        physode.InvalidArgumentError
            If the residual's output does not end in ``y``'s last dimension (one column, say,
            which the sum would add to every component of ``dy/dt``).
        """
        physics = call_module(self.physics, t, y) if p is None else self.physics(t, y, p)
        residual = call_module(self.residual, t, y)
        # The sum would broadcast a column to every component, or y to extra leading dimensions.
        if residual.shape != y.shape and (
            residual.shape[-1:] != y.shape[-1:] or not _broadcasts_to(residual.shape, y.shape)
        ):
            raise _wrong_residual(self.residual, residual, y)
        return physics + residual

    def residual_norm(self, t: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        """Mean squared norm of the residual along a trajectory.

        Parameters
        ----------
        t : Tensor, shape (T,)
            The times of ``ys``.
        ys : Tensor, shape (T, ..., n)
            States, as returned by ``physode.odeint``.

        Returns
        -------
        Tensor
            ``mean over times and samples of ‖f_residual(t, y)‖²``, differentiable.
        """
        # One call over all times: t in the per-sample layout, one time per leading row.
        times = t.to(ys.dtype).reshape((-1,) + (1,) * (ys.ndim - 1))
        return self.residual(times, ys).pow(2).sum(-1).mean()

    def regularised_loss(
        self,
        trajectory_loss: torch.Tensor,
        t: torch.Tensor,
        ys: torch.Tensor,
        share: float = 1.0,
    ) -> torch.Tensor:
        """The objective the trainer minimises for one batch.

        Without APHYNITY this is ``trajectory_loss``; with it,
        ``‖f_residual‖² + λ · trajectory_loss``. ``share``: the part of the batch's windows
        that ``ys`` holds, where processes share a batch out (``trajectory_loss`` is then that
        process's part of the batch's loss); the residual's mean squared norm weighs as much.
        """
        if self.aphynity is None:
            return trajectory_loss
        # λ is kept in float64 (see _apply); the objective stays in the loss's dtype.
        lam = self.aphynity_lambda.to(trajectory_loss.dtype)
        return self.residual_norm(t, ys) * share + lam * trajectory_loss

    @torch.no_grad()
    def update_after_batch(self, trajectory_loss: float | torch.Tensor) -> None:
        """Raise ``λ ← λ + τ · L_traj`` after an optimiser step (APHYNITY with
        ``update="batch"`` only). The trainer passes the batch's loss as a 0-dim tensor, read
        only here, so that other models do not wait for the GPU after every batch."""
        if self.aphynity is not None and self.aphynity.update == "batch":
            self.aphynity_lambda += self.aphynity.tau * float(trajectory_loss)

    @torch.no_grad()
    def update_after_epoch(self, trajectory_loss: float) -> None:
        """Raise ``λ ← λ + τ · L_traj`` after an epoch, with the epoch's mean batch loss
        (APHYNITY with ``update="epoch"`` only)."""
        if self.aphynity is not None and self.aphynity.update == "epoch":
            self.aphynity_lambda += self.aphynity.tau * float(trajectory_loss)

    def training_metrics(self) -> dict[str, float]:
        """Extra numbers for the training log: the current ``λ`` under APHYNITY."""
        return {"aphynity_lambda": float(self.aphynity_lambda)} if self.aphynity else {}


def _broadcasts_to(shape: torch.Size, target: torch.Size) -> bool:
    """Whether a tensor of ``shape`` broadcasts to ``target`` without growing it: a constant
    residual of one value per component does, one with extra leading dimensions does not."""
    return len(shape) <= len(target) and all(
        size in (1, wanted) for size, wanted in zip(reversed(shape), reversed(target))
    )


def _wrong_residual(module: nn.Module, output: torch.Tensor, y: torch.Tensor) -> Exception:
    """The error for a residual ``module`` whose ``output`` at ``y`` is not a ``dy/dt``."""
    n = y.shape[-1] if y.ndim else 1
    return InvalidArgumentError(
        f"the Hybrid's residual ({_term_name(module)}) returned shape "
        f"{tuple(output.shape)} for y of shape {tuple(y.shape)}; the hybrid adds it to the "
        f"physics term's dy/dt, so it must return y's shape, (..., {n}) (e.g. "
        f"NeuralODE({n}, ...), or MLP({n}, {n}) inside your module)"
    )


class _FunctionTerm(nn.Module):
    """A plain function ``f(t, y)`` as a hybrid's term: a module, so that the hybrid's
    ``.to()``, ``state_dict()`` and ``repr`` treat it as any other term. It has nothing to
    move or save (:func:`_as_module` refuses a function with learnable values); the function's
    own attributes (``autonomous``, say) read through it."""

    def __init__(self, function: Callable) -> None:
        super().__init__()
        self.function = function

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        """The function's value at ``args`` (``t, y``, and ``p`` for a physics term)."""
        return self.function(*args)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            function = self.__dict__.get("function")
            if function is None or name.startswith("__"):
                raise
            return getattr(function, name)

    def extra_repr(self) -> str:
        """The function kept."""
        return f"function={self.function!r}"


def _term_name(term: nn.Module) -> str:
    """A term's name for messages: its class, or for a plain function the function's name."""
    if isinstance(term, _FunctionTerm):
        return _function_name(term.function)
    return type(term).__name__


def _function_name(function: Callable) -> str:
    """A plain function's name (``NeuralODE.forward``, ``<lambda>``), or its class's."""
    return getattr(function, "__qualname__", None) or type(function).__name__


def _learnable_values(term: Callable) -> list[str]:
    """What a plain function ``term`` holds that would need training: tensors that require
    grad and modules with such parameters, in its closure, the globals it reads, the object
    of a bound method, the arguments of a ``functools.partial`` and its own attributes."""
    from physode.integrate import _holders

    holders = [*_holders(term), *getattr(term, "__dict__", {}).values()]
    found: list[str] = []
    seen: set[int] = set()
    for holder in holders:
        if id(holder) in seen:
            continue
        seen.add(id(holder))
        if isinstance(holder, torch.Tensor) and holder.requires_grad:
            found.append(f"a tensor of shape {tuple(holder.shape)} that requires grad")
        elif isinstance(holder, nn.Module) and any(p.requires_grad for p in holder.parameters()):
            found.append(f"a {type(holder).__name__} module with parameters")
    return found


def _as_module(name: str, term: Callable) -> nn.Module:
    """``term`` as a module: a module as it is, a plain function in a :class:`_FunctionTerm`.

    Raises
    ------
    physode.InvalidArgumentError
        If a plain function holds learnable values, which ``model.parameters()`` would miss.
    """
    if isinstance(term, nn.Module):
        return term
    learnable = _learnable_values(term)
    if learnable:
        raise InvalidArgumentError(
            f"Hybrid's {name} term ({_function_name(term)}) is a plain function that holds "
            f"{', '.join(learnable)}: model.parameters(), which the trainer's optimiser "
            "updates, does not include what a function holds, so it would never be trained "
            "(nor moved by .to() or saved in state_dict); make the term an nn.Module that "
            "keeps its learnable values as nn.Parameter (or its modules as attributes), or "
            "pass the module itself instead of a function that calls it"
        )
    return _FunctionTerm(term)
