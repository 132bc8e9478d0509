"""The solver layer and physode's models on every device at hand: the CPU, and a CUDA device where
there is one. Each gradient mode and step control runs on the device and must give the gradient
that Disc-Opt gives on the CPU; the work counters stay on the host.

On a machine without a GPU these tests run on the CPU alone (no test is skipped for it); where a
GPU is lent they also catch what only a second device shows (tensors left on the CPU, counters on
two devices)."""

from __future__ import annotations

import contextlib

import pytest
import torch
from _fake_device import FAKE, FakeDevice, Mismatch

import physode
import physode.systems
from physode.models import Hybrid, NeuralODE, PhysicsModel
from physode.train import Trajectories, rollout_report

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


# ------------------------------------------- data on a device, seen on the CPU through FakeDevice


def _on(device: str):
    """A context in which ``device`` exists, and the device: the fake one of ``_fake_device``
    (on any machine), or CUDA."""
    if device == "fake":
        return FakeDevice(), FAKE
    return contextlib.nullcontext(), torch.device(device)


DATA_DEVICES = ["fake", *(["cuda"] if torch.cuda.is_available() else [])]


def _pendulum_rollouts(device) -> tuple[torch.Tensor, torch.Tensor]:
    """Times (11,) and states (2, 11, 2) of the pendulum, on ``device``."""
    pendulum = physode.systems.load("pendulum")
    t = torch.linspace(0.0, 1.0, 11, dtype=F64)
    y0 = torch.tensor([[0.5, 0.0], [1.0, 0.2]], dtype=F64)
    ys = physode.odeint(pendulum.vector_field(), y0, t, rtol=1e-10, atol=1e-10)
    return t.to(device), ys.transpose(0, 1).to(device)


def test_the_fake_device_refuses_host_tensors_beside_its_own_as_cuda_does():
    with FakeDevice():
        y = torch.ones(2, 3, dtype=F64).to(FAKE)
        assert (y * torch.tensor(2.0, dtype=F64)).sum().item() == 12.0  # a 0-dim host number
        assert y[torch.tensor([1]), [0, 2]].device == FAKE  # host indices
        with pytest.raises(Mismatch):
            _ = y + torch.ones(3, dtype=F64)
        with pytest.raises(Mismatch):
            torch.zeros(2, 3, dtype=F64)[0, torch.tensor([0, 1]).to(FAKE)] = 1.0


@pytest.mark.parametrize("device", DATA_DEVICES)
def test_trajectories_from_irregular_samples_on_a_device_are_merged_and_rolled_out_there(device):
    # The merged states were made on the CPU, then indexed with the device's grid: CUDA refuses
    # that (a host tensor indexed with device indices), so irregular device data could not be
    # built.
    context, device = _on(device)
    with context:
        t, states = _pendulum_rollouts(device)
        pendulum = physode.systems.load("pendulum")
        data = Trajectories.from_irregular(
            [(t[::2], states[0, ::2]), (t[1:8], states[1, 1:8])], system=pendulum
        )
        assert data.states.device == device and data.t.device == device
        report = rollout_report(pendulum.vector_field().to(device), data, rtol=1e-10,
                                atol=1e-10, conservation=False)  # fmt: skip
        assert report.predicted.device == device
        assert report.mse < 1e-12


@pytest.mark.parametrize("device", DATA_DEVICES)
def test_trajectories_take_their_times_to_the_device_of_their_states(device):
    # Times left on the CPU beside states on the device (params were moved, t was not): a
    # rollout from them was refused, "t is on cpu but y0 is on cuda", for a t passed where
    # the states were.
    context, device = _on(device)
    with context:
        t, states = _pendulum_rollouts(device)
        data = Trajectories(t.cpu(), states, params=[[1.0, 9.81, 1.0]] * 2, system="pendulum")
        assert data.t.device == device and data.params.device == device
        field = physode.systems.load("pendulum").vector_field().to(device)
        report = rollout_report(field, data, rtol=1e-10, atol=1e-10, conservation=False)
        assert report.mse < 1e-12


def _transfers_in_an_epoch(batch_size: int) -> tuple[int, list[tuple[int, ...]]]:
    """An epoch of a per-trajectory physics model on the fake device, with validation data:
    its number of training batches and what a GPU would copy from the host during it."""
    from _pendulums import swinging

    from physode.train import Trainer

    data, val_data = swinging([0.8, 1.2], points=4), swinging([1.05], points=4)
    with FakeDevice() as device:
        model = PhysicsModel("pendulum", learnable=["g"], per_trajectory=["l"])
        trainer = Trainer(model, data, val_data=val_data, epochs=1, window=3, batch_size=batch_size,
                          method="rk4", step_size=1 / 3, restore_best=False, device="meta",
                          progress=False)  # fmt: skip
        before = len(device.transfers)
        result = trainer.fit()
        return result.history[0]["n_batches"], device.transfers[before:]


def test_training_copies_no_indices_from_the_host_to_the_device_at_each_batch():
    # Each batch built its windows' indices on the host, which a GPU copies before indexing
    # the states, the stored parameters and the learned table (three copies a batch, each
    # making the host wait for the GPU). Now an epoch moves its batches' indices in one copy,
    # and the validation pass its own, however many batches there are.
    few, few_copied = _transfers_in_an_epoch(batch_size=4)
    many, many_copied = _transfers_in_an_epoch(batch_size=1)
    assert (few, many) == (1, 4)
    assert many_copied == few_copied and len(many_copied) == 2, many_copied
