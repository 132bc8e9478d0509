"""Neural vector fields: a configurable multilayer perceptron and the plain neural ODE on it."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from physode._checks import is_int, is_switch
from physode._errors import InvalidArgumentError
from physode.models._weights import refuse_a_checkpoint

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "softplus": nn.Softplus,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "sigmoid": nn.Sigmoid,
}


def make_activation(name: str) -> nn.Module:
    """Return a fresh activation module by name.

    Parameters
    ----------
    name : str
        One of ``"tanh"``, ``"relu"``, ``"softplus"``, ``"elu"``, ``"gelu"``, ``"silu"``,
        ``"sigmoid"``.

    Raises
    ------
    physode.InvalidArgumentError
        For an unknown name; the message lists the valid ones.

    Examples
    --------
    >>> make_activation("tanh")
    Tanh()
    """
    try:
        return _ACTIVATIONS[name]()
    except (KeyError, TypeError):  # TypeError: an unhashable name, a list say
        raise InvalidArgumentError(
            f"unknown activation {name!r}; choose one of {sorted(_ACTIVATIONS)}, "
            f"e.g. activation='tanh'"
        ) from None


class MLP(nn.Module):
    """A fully connected network acting on the last dimension of its input.

    Parameters
    ----------
    in_features, out_features : int
        Sizes of the input and output (last) dimension.
    width : int
        Units in each hidden layer.
    depth : int
        Number of hidden layers (``0`` gives a single linear map).
    activation : str
        Nonlinearity between layers, see :func:`make_activation`.
    zero_output : bool
        Start the last layer at zero, so the network is initially the zero map. A hybrid model
        uses this to begin as its physics term alone.

    Examples
    --------
    >>> net = MLP(3, 2, width=16, depth=2)
    >>> net(torch.zeros(5, 3)).shape
    torch.Size([5, 2])
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        width: int = 64,
        depth: int = 2,
        activation: str = "tanh",
        zero_output: bool = False,
    ) -> None:
        super().__init__()
        problems = []
        for name, value, low in (
            ("in_features", in_features, 1),
            ("out_features", out_features, 1),
            ("width", width, 1),
            ("depth", depth, 0),
        ):
            if not is_int(value, least=low):
                problems.append(f"{name}={value!r} (need an integer >= {low})")
        if not is_switch(zero_output):
            problems.append(f"zero_output={zero_output!r} (need True or False)")
        if problems:
            raise InvalidArgumentError("bad MLP arguments: " + "; ".join(problems))
        make_activation(activation)  # refuse an unknown name even when depth == 0
        # NumPy integers (from a grid of settings) as Python's, for the layers and the attributes
        in_features, out_features = int(in_features), int(out_features)
        width, depth = int(width), int(depth)
        layers: list[nn.Module] = []
        size = in_features
        for _ in range(depth):
            layers += [nn.Linear(size, width), make_activation(activation)]
            size = width
        last = nn.Linear(size, out_features)
        if zero_output:
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        layers.append(last)
        self.net = nn.Sequential(*layers)
        self.in_features = in_features
        self.out_features = out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the network to ``x`` of shape ``(..., in_features)``.

        Each layer's ``forward`` is called directly rather than through ``nn.Module.__call__``,
        whose bookkeeping (about 3 µs a call on a 2-core CPU) is about a fifth of a small
        network's evaluation, and a solve evaluates it hundreds of times; a layer with hooks of
        its own (``torch.nn.utils.spectral_norm``, whose hook computes the weight, or one of
        yours) goes through ``__call__``, so that they run.
        """
        for layer in self.net._modules.values():
            x = layer(x) if has_hooks(layer) else layer.forward(x)
        return x


def call_module(module: nn.Module, *args: torch.Tensor) -> torch.Tensor:
    """``module(*args)``, calling ``forward`` directly where ``nn.Module.__call__`` would only add
    its bookkeeping (a few µs, on every evaluation of a vector field): a module with hooks of its
    own, or whose class defines its own ``__call__``, is called as usual (see
    :meth:`MLP.forward`)."""
    if has_hooks(module) or type(module).__call__ is not _MODULE_CALL:
        return module(*args)
    return module.forward(*args)


_MODULE_CALL = nn.Module.__call__


def has_hooks(layer: nn.Module) -> bool:
    """Whether ``layer`` has forward or backward hooks of its own, which only
    ``nn.Module.__call__`` runs (torch's global hooks are not looked at)."""
    return bool(
        layer._forward_pre_hooks
        or layer._forward_hooks
        or layer._backward_pre_hooks
        or layer._backward_hooks
    )


def dtype_error(kind: str, y: torch.Tensor, weight: torch.Tensor) -> InvalidArgumentError:
    """The error for states ``y`` of another dtype than a network's ``weight`` (of a model of
    class ``kind``): the casts that fit, of the model to floating-point states, else of the
    states, which a network cannot take as integers or booleans."""
    if not y.is_floating_point():
        return InvalidArgumentError(
            f"y is {y.dtype} but states must be floating point, like this {kind}'s weights "
            f"({weight.dtype}); pass y.to({weight.dtype})"
        )
    cast = ".double()" if y.dtype == torch.float64 else f".to({y.dtype})"
    return InvalidArgumentError(
        f"y is {y.dtype} but this {kind}'s weights are {weight.dtype}; cast the model to the "
        f"states' dtype, e.g. model{cast}, or pass {weight.dtype} states"
    )


def _time_column(t: torch.Tensor | float, y: torch.Tensor) -> torch.Tensor:
    """Broadcast a 0-dim or per-sample time to a column beside ``y``'s last dimension."""
    t = torch.as_tensor(t, dtype=y.dtype, device=y.device)
    return t.expand_as(y[..., :1]) if t.ndim else t.expand(y.shape[:-1] + (1,))


class NeuralODE(nn.Module):
    """A plain neural ODE vector field ``f(t, y) = MLP(y)`` (or ``MLP([y, t])``).

    Parameters
    ----------
    dim : int
        State dimension ``n``; ``y`` has shape ``(..., n)``.
    width, depth, activation
        The network's shape, as for :class:`MLP`.
    time_dependent : bool
        Feed ``t`` to the network as an extra input; the model is then not autonomous.
    input_transform : callable, optional
        A fixed feature map applied to ``y`` before the network, with ``y``'s shape (Onken &
        Ruthotto's spiral model uses ``lambda y: y ** 3``).
    zero_output : bool
        Start as the zero vector field.

    Examples
    --------
    >>> import physode
    >>> f = NeuralODE(2, width=8, depth=1)
    >>> physode.odeint(f, torch.ones(4, 2), torch.linspace(0, 1, 5)).shape
    torch.Size([5, 4, 2])
    """

    def __init__(
        self,
        dim: int,
        width: int = 64,
        depth: int = 2,
        activation: str = "tanh",
        *,
        time_dependent: bool = False,
        input_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        zero_output: bool = False,
    ) -> None:
        super().__init__()
        problems = []
        if not is_int(dim, least=1):
            problems.append(f"dim={dim!r} (need an integer >= 1, the state dimension)")
        if not is_switch(time_dependent):
            problems.append(f"time_dependent={time_dependent!r} (need True or False)")
        if not is_switch(zero_output):
            problems.append(f"zero_output={zero_output!r} (need True or False)")
        if input_transform is not None and not callable(input_transform):
            problems.append(
                f"input_transform={input_transform!r} (need a function of y, e.g. "
                "input_transform=lambda y: y ** 3, or None)"
            )
        if problems:
            raise InvalidArgumentError("bad NeuralODE arguments: " + "; ".join(problems))
        self.net = MLP(
            dim + int(time_dependent), dim, width, depth, activation, zero_output=bool(zero_output)
        )
        self.dim = dim
        self.time_dependent = bool(time_dependent)
        self.input_transform = input_transform

    def extra_repr(self) -> str:
        """The state dimension and the options not at their defaults, beside the network."""
        shown = [f"dim={self.dim}"]
        if self.time_dependent:
            shown.append("time_dependent=True")
        if self.input_transform is not None:
            shown.append(f"input_transform={self.input_transform!r}")
        return ", ".join(shown)

    @property
    def autonomous(self) -> bool:
        """Whether ``f`` ignores ``t`` (windows at different times may share a batch)."""
        return not self.time_dependent

    def load_state_dict(self, *args, **kwargs):
        """Load like any module; a whole training checkpoint is refused, naming where its
        weights are."""
        refuse_a_checkpoint(args[0] if args else kwargs.get("state_dict"), "NeuralODE")
        return super().load_state_dict(*args, **kwargs)

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Return ``dy/dt`` with ``y``'s shape.

        Raises
        ------
        physode.InvalidArgumentError
            If ``y``'s last dimension is not ``dim``, ``input_transform`` does not return
            ``y``'s shape, or ``y``'s dtype is not the network's (a fresh NeuralODE is
            float32; cast it with ``.double()`` for float64 states).
        """
        features = None
        try:
            features = y if self.input_transform is None else self.input_transform(y)
            x = features
            if self.time_dependent:
                x = torch.cat([x, _time_column(t, y)], dim=-1)
            return call_module(self.net, x)
        except RuntimeError:
            # Checked only here, off the path of every evaluation: a state of the wrong size or
            # dtype fails inside the first layer with a message about matrices.
            if y.shape[-1:] != (self.dim,):
                raise InvalidArgumentError(
                    f"y has shape {tuple(y.shape)}, but this NeuralODE has dim={self.dim} and "
                    f"needs (..., {self.dim}); build it with the data's state dimension as dim"
                ) from None
            if isinstance(features, torch.Tensor) and features.shape[-1:] != y.shape[-1:]:
                raise InvalidArgumentError(
                    f"this NeuralODE's input_transform returned shape {tuple(features.shape)} "
                    f"for y of shape {tuple(y.shape)}; it must return y's shape, "
                    f"(..., {self.dim}), the network's input"
                ) from None
            weight = next(self.net.parameters())
            if y.dtype != weight.dtype:
                raise dtype_error("NeuralODE", y, weight) from None
            raise
