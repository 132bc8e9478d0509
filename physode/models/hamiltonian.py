"""The Hamiltonian neural network: a learned energy H(q, p) whose gradient is the vector field."""

from __future__ import annotations

import torch
from torch import nn

from physode._checks import is_int
from physode._errors import InvalidArgumentError
from physode.models.neural import MLP


class HamiltonianNN(nn.Module):
    """A Hamiltonian neural network (Greydanus et al., 2019): ``dq/dt = ∂H/∂p, dp/dt = -∂H/∂q``.

    A network learns a scalar energy ``H(q, p)``; the vector field is its symplectic gradient,
    taken with autograd inside ``forward``, so the learned ``H`` is conserved along every exact
    solution of the model, whatever the weights. The state is ``y = [q, p]`` with last dimension
    ``2 * n_coordinates``, in canonical coordinates (for a catalogue system whose state is
    ``(q, q_dot)`` that holds only where ``p = m q_dot`` with unit mass).

    Parameters
    ----------
    n_coordinates : int
        Number ``n`` of coordinates ``q``; ``y`` has shape ``(..., 2 * n)``.
    width, depth, activation
        The network's shape, as for :class:`MLP`. The field is ``H``'s gradient, so choose a
        smooth activation (``"tanh"``, ``"softplus"``, ``"silu"``): with ``"relu"`` it is
        piecewise constant.
    separable : bool
        Learn ``H = T(p) + V(q)`` with two networks, one of ``p`` and one of ``q``. The field then
        declares the split (``separable``, ``n_coordinates``) that the symplectic methods
        ``leapfrog`` and ``yoshida4`` need.

    Notes
    -----
    ``forward`` works in every gradient mode and in solves that build no graph: with autograd
    off (a no-grad solve, ACA's forward pass, validation) it enables it for ``H`` alone and keeps
    no graph; with autograd on it keeps the graph of the derivative (``create_graph=True``), so
    that Disc-Opt, ACA's replayed steps and Opt-Disc's vector-Jacobian products can
    differentiate through it. An evaluation runs the network forward and backward: on a CPU, a
    network of width 64 and depth 2 took three to four times as long as a ``NeuralODE`` of that
    shape.

    Examples
    --------
    >>> import physode
    >>> f = HamiltonianNN(1, width=8, depth=1).double()
    >>> y0 = torch.tensor([[1.0, 0.0], [0.5, 0.5]], dtype=torch.float64)
    >>> ys = physode.odeint(f, y0, torch.linspace(0, 1, 5), rtol=1e-10, atol=1e-12)
    >>> ys.shape
    torch.Size([5, 2, 2])
    >>> drift = (f.hamiltonian(ys[-1]) - f.hamiltonian(y0)).abs().max()
    >>> bool(drift < 1e-8)
    True
    """

    def __init__(
        self,
        n_coordinates: int,
        width: int = 64,
        depth: int = 2,
        activation: str = "tanh",
        *,
        separable: bool = False,
    ) -> None:
        super().__init__()
        problems = []
        if not is_int(n_coordinates, least=1):
            problems.append(
                f"n_coordinates={n_coordinates!r} (need an integer >= 1, the number of "
                "coordinates q; the state [q, p] has twice as many components)"
            )
        if not isinstance(separable, bool):
            problems.append(f"separable={separable!r} (need True or False)")
        if problems:
            raise InvalidArgumentError("bad HamiltonianNN arguments: " + "; ".join(problems))
        n = n_coordinates
        if separable:
            self.kinetic = MLP(n, 1, width, depth, activation)
            self.potential = MLP(n, 1, width, depth, activation)
            nets = (self.kinetic, self.potential)
        else:
            self.net = MLP(2 * n, 1, width, depth, activation)
            nets = (self.net,)
        for net in nets:
            # H matters only up to a constant, which the output layer's bias would add: no
            # gradient ever reaches it, so it is fixed at zero rather than left to look trained.
            bias = net.net[-1].bias
            nn.init.zeros_(bias)
            bias.requires_grad_(False)
        self.n_coordinates = n
        self.dim = 2 * n
        self.separable = separable

    @property
    def autonomous(self) -> bool:
        """Always ``True``: ``H`` does not depend on ``t``."""
        return True

    def hamiltonian(self, y: torch.Tensor) -> torch.Tensor:
        """The learned energy ``H`` of each state ``y`` (``(..., 2 * n)``), shape ``y.shape[:-1]``.

        Examples
        --------
        >>> HamiltonianNN(2, width=8, depth=1).hamiltonian(torch.zeros(3, 5, 4)).shape
        torch.Size([3, 5])
        """
        self._check_state(y)
        return self._energy(y)

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Return ``dy/dt = [∂H/∂p, -∂H/∂q]`` with ``y``'s shape; ``t`` is not used.

        Raises
        ------
        physode.InvalidArgumentError
            If ``y``'s last dimension is not ``2 * n_coordinates``, or ``y``'s dtype is not the
            network's (a fresh HamiltonianNN is float32; cast it with ``.double()`` for float64
            states).
        """
        self._check_state(y)
        if torch.is_inference_mode_enabled():
            # Autograd cannot record on inference tensors; a copy made outside inference mode is
            # an ordinary tensor, and the field of a solve under inference mode needs no graph.
            with torch.inference_mode(False), torch.no_grad():
                return self._field(y.clone(), keep_graph=False)
        # A graph of the derivative is kept only where something will be differentiated: the
        # state carries one, or a weight is learned. A frozen network's field then comes without
        # a graph, as the solver expects of a func whose tensors need no gradient.
        keep_graph = torch.is_grad_enabled() and (y.requires_grad or self._learned())
        return self._field(y, keep_graph)

    def _field(self, y: torch.Tensor, keep_graph: bool) -> torch.Tensor:
        """The symplectic gradient of ``H`` at ``y``, with the derivative's graph if asked."""
        n = self.n_coordinates
        if self.separable:
            dq = self._gradient(self.kinetic, y[..., n:], keep_graph)  # dq/dt = dT/dp
            dp = self._gradient(self.potential, y[..., :n], keep_graph)  # dp/dt = -dV/dq
            return torch.cat([dq, -dp], dim=-1)
        dh = self._gradient(self.net, y, keep_graph)
        return torch.cat([dh[..., n:], -dh[..., :n]], dim=-1)

    def _gradient(self, net: MLP, x: torch.Tensor, keep_graph: bool) -> torch.Tensor:
        """``d net(x) / dx`` for ``net``'s one output, as ``W1^T d net / d z1``.

        Autograd differentiates with respect to the first layer's output ``z1 = W1 x + b1``
        rather than ``x``: ``z1`` requires grad through ``W1`` already, so no leaf of the state
        is made. A leaf made here would stay in the graph of the field, where a solve looking
        for the tensors a func uses (``physode.solve`` without ``params``) would take it for a
        parameter of the model and carry its gradient, the state's size, through the solve.
        """
        first, *rest = net.net._modules.values()
        try:
            with torch.enable_grad():
                z = first.forward(x)
                if not z.requires_grad:  # a state and a first layer without grad
                    z = z.detach().requires_grad_(True)
                h = z
                for layer in rest:
                    h = layer.forward(h)
                (dz,) = torch.autograd.grad(h.sum(), z, create_graph=keep_graph)
        except RuntimeError:
            self._check_dtype(x)
            raise
        return dz @ first.weight

    def _energy(self, y: torch.Tensor) -> torch.Tensor:
        """``H(y)`` of shape ``y.shape[:-1]``."""
        try:
            if self.separable:
                n = self.n_coordinates
                return (self.kinetic(y[..., n:]) + self.potential(y[..., :n]))[..., 0]
            return self.net(y)[..., 0]
        except RuntimeError:
            self._check_dtype(y)
            raise

    def _check_dtype(self, y: torch.Tensor) -> None:
        """Name a state of another dtype than the weights in physode's terms. Checked only
        after a failure, off the path of every evaluation: such a state fails inside the first
        layer with a message about matrices."""
        weight = next(self.parameters())
        if y.dtype != weight.dtype:
            cast = ".double()" if y.dtype == torch.float64 else f".to({y.dtype})"
            raise InvalidArgumentError(
                f"y is {y.dtype} but this HamiltonianNN's weights are {weight.dtype}; cast "
                f"the model to the states' dtype, e.g. model{cast}, or pass "
                f"{weight.dtype} states"
            ) from None

    def _check_state(self, y: torch.Tensor) -> None:
        if y.shape[-1:] != (self.dim,):
            raise InvalidArgumentError(
                f"y has shape {tuple(y.shape)}, but this HamiltonianNN has "
                f"n_coordinates={self.n_coordinates} and needs states [q, p] of shape "
                f"(..., {self.dim}); build it with half the data's state dimension as "
                "n_coordinates"
            )

    def _learned(self) -> bool:
        """Whether any weight requires grad."""
        return any(p.requires_grad for p in self.parameters())
