"""Models to train: the physics term, neural vector fields (a neural ODE, a Hamiltonian neural
network), and physics + neural hybrids.

Every model is an ``nn.Module`` ``f(t, y)`` returning ``dy/dt`` with ``y``'s shape, usable with
every method and gradient mode of :func:`physode.solve`.

>>> import torch, physode
>>> from physode.models import Hybrid, NeuralODE
>>> f = Hybrid(NeuralODE(2, depth=0), NeuralODE(2, width=8, depth=1, zero_output=True))
>>> physode.odeint(f, torch.ones(2), torch.linspace(0, 1, 3), gradient="aca").shape
torch.Size([3, 2])
"""

from __future__ import annotations

from physode.models.hamiltonian import HamiltonianNN
from physode.models.hybrid import Aphynity, Hybrid
from physode.models.neural import MLP, NeuralODE, make_activation
from physode.models.physics import PhysicsModel

__all__ = [
    "MLP",
    "Aphynity",
    "HamiltonianNN",
    "Hybrid",
    "NeuralODE",
    "PhysicsModel",
    "make_activation",
]
