"""The solver layer and physode's models on every device at hand: the CPU, and a CUDA device where
there is one. Each gradient mode and step control runs on the device and must give the gradient
that Disc-Opt gives on the CPU; the work counters stay on the host.

On a machine without a GPU these tests run on the CPU alone (no test is skipped for it); where a
GPU is lent they also catch what only a second device shows (tensors left on the CPU, counters on
two devices)."""

from __future__ import annotations

import pytest
import torch

import physode
import physode.systems
from physode.models import Hybrid, NeuralODE, PhysicsModel

F64 = torch.float64
DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]
MODES = [
    ("disc-opt", "shared"), ("disc-opt", "per-sample"), ("aca", "shared"),
    ("aca", "per-sample"), ("opt-disc", "shared"),
]  # fmt: skip


def _model(kind: str) -> torch.nn.Module:
    torch.manual_seed(0)
    pendulum = physode.systems.load("damped_pendulum")
    physics = PhysicsModel(pendulum, ["omega0", "alpha"])
    if kind == "physics":
        return physics.double()
    neural = NeuralODE(2, width=8, depth=1)
    if kind == "neural":
        return neural.double()
    return Hybrid(physics, NeuralODE(2, width=8, depth=1)).double()


def _gradients(kind: str, device: str, gradient, step_control: str):
    model = _model(kind).to(device)
    y0 = torch.tensor([[0.5, 0.0], [-1.0, 0.3], [2.0, -0.5]], dtype=F64, device=device)
    y0.requires_grad_(True)
    t = torch.linspace(0.0, 2.0, 5, dtype=F64, device=device)
    sol = physode.solve(model, y0, t, rtol=1e-9, atol=1e-9, gradient=gradient,
                        step_control=step_control)  # fmt: skip
    sol.ys.square().sum().backward()
    grads = [y0.grad, *(p.grad for p in model.parameters())]
    return sol, [g.cpu() for g in grads]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", ["neural", "physics", "hybrid"])
@pytest.mark.parametrize(("gradient", "step_control"), MODES)
def test_every_mode_gives_the_cpu_disc_opt_gradient_on_the_device(
    device, kind, gradient, step_control
):
    _, reference = _gradients(kind, "cpu", "disc-opt", step_control)
    sol, grads = _gradients(kind, device, gradient, step_control)
    assert sol.ys.device.type == device
    tolerance = 1e-5 if gradient == "opt-disc" else 1e-9  # Opt-Disc: its own discretisation
    for g, ref in zip(grads, reference, strict=True):
        torch.testing.assert_close(g, ref, rtol=tolerance, atol=tolerance)
    counters = (sol.stats.n_steps, sol.stats.n_rejected, sol.stats.nfe, sol.stats.nfe_backward)
    for counter in counters:
        assert not isinstance(counter, torch.Tensor) or counter.device.type == "cpu"
    if step_control == "per-sample":
        assert (sol.stats.nfe + sol.stats.nfe_backward).shape == (3,)
