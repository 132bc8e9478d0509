"""The Hamiltonian neural network: a learned energy H(q, p) whose gradient is the vector field."""

from __future__ import annotations

import math

import torch
from torch import nn

from physode._checks import is_int, is_switch
from physode._errors import InvalidArgumentError
from physode.models._weights import refuse_a_checkpoint
from physode.models.neural import MLP, dtype_error, has_hooks


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
    ``forward`` writes the derivative out by the chain rule through the layers, so it is an
    ordinary expression of the state and the weights: every gradient mode differentiates through
    it, solves without autograd (``no_grad``, inference mode) build no graph, and it reaches only
    the weights that require grad. An evaluation costs about two forward passes: on a CPU, a
    network of width 64 and depth 2 took 2.3 times as long as a ``NeuralODE`` of that shape.
    The activation must be one :func:`~physode.models.neural.make_activation` builds.

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
        if not is_switch(separable):
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
        self.separable = bool(separable)

    def extra_repr(self) -> str:
        """The number of coordinates and whether ``H`` is learned as ``T(p) + V(q)``."""
        return f"n_coordinates={self.n_coordinates}, separable={self.separable}"

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

    def load_state_dict(self, *args, **kwargs):
        """Load like any module; a whole training checkpoint is refused, naming where its
        weights are."""
        refuse_a_checkpoint(args[0] if args else kwargs.get("state_dict"), "HamiltonianNN")
        return super().load_state_dict(*args, **kwargs)

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
        n = self.n_coordinates
        if self.separable:
            dq = self._gradient(self.kinetic, y[..., n:])  # dq/dt = dT/dp
            dp = self._gradient(self.potential, y[..., :n])  # dp/dt = -dV/dq
            return torch.cat([dq, -dp], dim=-1)
        dh = self._gradient(self.net, y)
        return torch.cat([dh[..., n:], -dh[..., :n]], dim=-1)

    def _gradient(self, net: MLP, x: torch.Tensor) -> torch.Tensor:
        """``d net(x) / dx`` for ``net``'s one output, by the chain rule written out layer by
        layer: ``W_last diag(σ'(z_k)) W_k ... diag(σ'(z_1)) W_1``.

        Written out rather than asked of ``torch.autograd.grad``, the derivative is an ordinary
        expression of the state and the weights: autograd records it where (and only where) a
        tensor in it requires grad, as any field's, for every gradient mode to differentiate; it
        works as it is under ``no_grad`` and inference mode; no leaf is made for the state (one
        would be taken for a parameter by a solve looking for the tensors a func uses); and it
        takes about half the time of a backward pass through autograd's engine for a small batch.
        """
        layers = tuple(net.net._modules.values())
        hidden = []
        h = x
        try:
            for linear, activation in zip(layers[:-1:2], layers[1::2]):
                z = linear(h) if has_hooks(linear) else linear.forward(h)
                h = activation(z) if has_hooks(activation) else activation.forward(z)
                hidden.append((linear, activation, z, h))
            if has_hooks(layers[-1]):  # a hook that computes the weight (spectral_norm) runs
                layers[-1](h)
            # (width,): dH/dh of the last hidden layer, without the output's dimension, so that
            # an unbatched state (2n,) gets a (2n,) field
            gradient = layers[-1].weight[0]
            for linear, activation, z, a in reversed(hidden):
                gradient = (gradient * _slope(activation, z, a)) @ linear.weight
        except RuntimeError:
            self._check_dtype(x)
            raise
        return gradient.expand(x.shape) if not hidden else gradient

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
            raise dtype_error("HamiltonianNN", y, weight) from None

    def _check_state(self, y: torch.Tensor) -> None:
        if y.shape[-1:] != (self.dim,):
            raise InvalidArgumentError(
                f"y has shape {tuple(y.shape)}, but this HamiltonianNN has "
                f"n_coordinates={self.n_coordinates} and needs states [q, p] of shape "
                f"(..., {self.dim}); build it with half the data's state dimension as "
                "n_coordinates"
            )


def _slope(activation: nn.Module, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """``σ'(z)`` of an activation module, given ``z`` and ``a = σ(z)``."""
    kind = type(activation)
    if kind is nn.Tanh:
        return 1 - a * a
    if kind is nn.Sigmoid:
        return a * (1 - a)
    if kind is nn.SiLU:
        s = torch.sigmoid(z)
        return s * (1 + z * (1 - s))
    if kind is nn.Softplus:
        beta, threshold = activation.beta, activation.threshold
        return torch.where(z * beta > threshold, 1.0, torch.sigmoid(z * beta))
    if kind is nn.ELU:
        return torch.where(z > 0, 1.0, a + activation.alpha)
    if kind is nn.ReLU:
        return (z > 0).to(z.dtype)
    if kind is nn.GELU and activation.approximate == "none":
        return 0.5 * (1 + torch.erf(z * _SQRT_HALF)) + z * torch.exp(-0.5 * z * z) * _INV_SQRT_2PI
    raise InvalidArgumentError(
        f"HamiltonianNN cannot differentiate the activation {activation!r}; build it with "
        "activation= one of 'tanh', 'softplus', 'silu', 'sigmoid', 'elu', 'gelu', 'relu'"
    )


_SQRT_HALF = math.sqrt(0.5)
_INV_SQRT_2PI = 1 / math.sqrt(2 * math.pi)
