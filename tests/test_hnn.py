"""Tests of physode.models.HamiltonianNN: the field is H's symplectic gradient, H is conserved,
every gradient mode differentiates it, and the trainer learns the oscillator's energy with it."""

from __future__ import annotations

import math

import pytest
import torch

import physode
import physode.systems
from physode.models import HamiltonianNN
from physode.solvers._autograd import graph_leaves
from physode.train import Trainer, Trajectories

F64 = torch.float64


def _model(separable: bool = False, n: int = 1, seed: int = 0, **shape) -> HamiltonianNN:
    torch.manual_seed(seed)
    shape = {"width": 16, "depth": 2, **shape}
    return HamiltonianNN(n, separable=separable, **shape).double()


def _states(*shape: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(*shape, dtype=F64, generator=torch.Generator().manual_seed(seed))


def _oscillator_data(n: int, points: int = 31, t_end: float = 3.0):
    """Trajectories of harmonic_oscillator at m = k = 1, where p = m q_dot is q_dot itself."""
    system = physode.systems.load("harmonic_oscillator")
    assert system.parameters["m"] == 1.0  # the state (q, p) is canonical as it stands
    t = torch.linspace(0, t_end, points, dtype=F64)
    y0 = system.sample_initial_states(n, seed=0)
    ys = physode.odeint(system.vector_field(), y0, t, method="dop853", rtol=1e-11, atol=1e-12)
    return system, t, ys.transpose(0, 1)


@pytest.mark.parametrize("separable", [False, True])
def test_the_field_is_the_symplectic_gradient_of_the_learned_energy(separable):
    model = _model(separable, n=2)
    y = _states(3, 5, 4)
    grad = torch.vmap(torch.func.grad(lambda s: model.hamiltonian(s)))(y.reshape(-1, 4))
    grad = grad.reshape(y.shape)
    expected = torch.cat([grad[..., 2:], -grad[..., :2]], dim=-1)
    field = model(torch.tensor(0.0, dtype=F64), y)
    assert field.shape == y.shape and model.hamiltonian(y).shape == (3, 5)
    torch.testing.assert_close(field, expected, rtol=1e-13, atol=1e-14)


def test_a_hand_set_network_gives_the_field_of_its_known_energy():
    # H = c tanh(a q + b p + d): dq/dt = dH/dp = c b sech², dp/dt = -dH/dq = -c a sech².
    model = HamiltonianNN(1, width=1, depth=1).double()
    a, b, c, d = 0.7, -1.3, 2.0, 0.2
    with torch.no_grad():
        first, last = model.net.net[0], model.net.net[2]
        first.weight.copy_(torch.tensor([[a, b]], dtype=F64))
        first.bias.fill_(d)
        last.weight.fill_(c)
    y = _states(6, 2)
    sech2 = 1.0 / torch.cosh(a * y[:, 0] + b * y[:, 1] + d) ** 2
    expected = torch.stack([c * b * sech2, -c * a * sech2], dim=-1)
    torch.testing.assert_close(model(torch.tensor(0.0), y), expected, rtol=1e-14, atol=1e-15)
    torch.testing.assert_close(
        model.hamiltonian(y), c * torch.tanh(a * y[:, 0] + b * y[:, 1] + d), rtol=1e-14, atol=0
    )


@pytest.mark.parametrize("separable", [False, True])
def test_the_learned_energy_is_conserved_along_an_adaptive_solve_to_its_tolerance(separable):
    model = _model(separable, n=2)
    y0 = _states(8, 4)
    t = torch.linspace(0, 10, 21, dtype=F64)
    with torch.no_grad():
        ys = physode.odeint(model, y0, t, method="dop853", rtol=1e-11, atol=1e-12)
        energy = model.hamiltonian(ys)
        moved = (ys - y0).abs().amax()
    assert moved > 0.1  # the states travel; their energy does not
    assert (energy - energy[0]).abs().max() < 1e-8


@pytest.mark.parametrize("method", ["leapfrog", "yoshida4"])
def test_a_separable_network_under_a_symplectic_method_keeps_its_energy_drift_bounded(method):
    model = _model(True, n=1, width=8, depth=1)
    y0 = _states(4, 2)
    h, steps = 0.1, 2000
    t = torch.linspace(0, h * steps, 201, dtype=F64)
    with torch.no_grad():
        ys = physode.odeint(model, y0, t, method=method, step_size=h)
        drift = (model.hamiltonian(ys) - model.hamiltonian(y0)).abs()
    order = 2 if method == "leapfrog" else 4
    # The shadow Hamiltonian is O(h^order) away, and stays so: no growth over 2000 steps.
    assert drift.max() < 10 * h**order
    first, last = drift[:50].max(), drift[-50:].max()
    assert last < 2 * first


def test_a_symplectic_method_refuses_a_network_that_is_not_separable():
    with pytest.raises(physode.InvalidArgumentError, match="method='leapfrog' needs a separable") \
            as error:  # fmt: skip
        physode.odeint(_model(), _states(2, 2), [0.0, 1.0], method="leapfrog", step_size=0.1)
    # It said "set func.separable = True", which makes forward look for networks it lacks.
    assert "built with separable=False" in str(error.value)
    assert "HamiltonianNN(1, ..., separable=True)" in str(error.value)
    assert "func.separable = True" not in str(error.value)


@pytest.mark.parametrize("separable", [False, True])
def test_disc_opt_and_aca_gradients_agree_and_opt_disc_converges_to_them(separable):
    model = _model(separable, n=1)
    y0 = _states(4, 2).requires_grad_(True)
    t = torch.linspace(0, 2, 5, dtype=F64)
    weights = [p for p in model.parameters() if p.requires_grad]

    def gradient(mode, rtol):
        ys = physode.odeint(model, y0, t, gradient=mode, rtol=rtol, atol=rtol * 1e-2)
        grads = torch.autograd.grad((ys[1:] ** 2).sum(), [y0, *weights])
        return torch.cat([g.flatten() for g in grads])

    aca, disc_opt = gradient("aca", 1e-8), gradient("disc-opt", 1e-8)
    torch.testing.assert_close(aca, disc_opt, rtol=1e-10, atol=1e-10)
    exact = gradient("aca", 1e-11)
    errors = [float((gradient("opt-disc", r) - exact).norm()) for r in (1e-3, 1e-6, 1e-9)]
    assert errors[2] < 1e-7 * float(exact.norm())
    assert errors[2] < errors[1] < errors[0]  # Opt-Disc's error falls with the tolerance


def test_a_frozen_network_in_a_solve_needs_no_gradient():
    model = _model().requires_grad_(False)
    ys = physode.odeint(model, _states(3, 2), torch.linspace(0, 1, 3, dtype=F64))
    assert not ys.requires_grad


@pytest.mark.parametrize(
    ("separable", "frozen"),
    [(False, None), (True, None), (False, "net.net.0"), (True, "kinetic"), (True, "potential")],
)
def test_the_field_reaches_only_the_trainable_weights_so_a_solve_finds_those(separable, frozen):
    # A state leaf made inside forward would be taken for a parameter by solve's search; so it
    # would where the layers next to the state are frozen and the others are not.
    model = _model(separable, n=2)
    if frozen is not None:
        model.get_submodule(frozen).requires_grad_(False)
    field = model(torch.tensor(0.0, dtype=F64), _states(3, 4))
    found = {id(leaf) for leaf in graph_leaves(field)}
    assert found == {id(p) for p in model.parameters() if p.requires_grad}


@pytest.mark.parametrize(
    "activation", ["tanh", "softplus", "silu", "sigmoid", "elu", "gelu", "relu"]
)
def test_the_field_of_every_activation_is_the_symplectic_gradient(activation):
    model = _model(n=2, activation=activation)
    y = _states(7, 4) * 3  # softplus, elu, relu on both sides of their kinks
    grad = torch.vmap(torch.func.grad(lambda s: model.hamiltonian(s)))(y)
    expected = torch.cat([grad[..., 2:], -grad[..., :2]], dim=-1)
    torch.testing.assert_close(model(torch.tensor(0.0), y), expected, rtol=1e-13, atol=1e-14)


def test_a_network_without_hidden_layers_gives_a_constant_field_of_the_batch_shape():
    model = _model(n=1, depth=0)
    field = model(torch.tensor(0.0), _states(3, 5, 2))
    weight = model.net.net[0].weight[0]
    assert field.shape == (3, 5, 2)
    assert torch.equal(field, torch.stack([weight[1], -weight[0]]).expand(3, 5, 2))


@pytest.mark.parametrize("separable", [False, True])
@pytest.mark.parametrize("depth", [0, 2])
def test_an_unbatched_state_gets_a_field_of_its_own_shape_as_its_batched_row(separable, depth):
    model = _model(separable, n=2, depth=depth)
    y = _states(4)
    field = model(torch.tensor(0.0), y)
    assert field.shape == (4,)
    torch.testing.assert_close(field, model(torch.tensor(0.0), y[None])[0], rtol=0, atol=0)
    t = torch.linspace(0, 1, 3, dtype=F64)
    assert physode.odeint(model, y, t, rtol=1e-8, atol=1e-10).shape == (3, 4)
    jacobian = torch.func.jacrev(lambda s: model(torch.tensor(0.0), s))(y)
    assert jacobian.shape == (4, 4)


def test_the_output_bias_which_only_shifts_h_is_fixed_at_zero():
    model = _model()
    fixed = [name for name, p in model.named_parameters() if not p.requires_grad]
    assert fixed == ["net.net.4.bias"] and float(model.net.net[4].bias) == 0.0


@pytest.mark.parametrize("context", ["no_grad", "inference_mode"])
def test_a_solve_without_autograd_works_and_keeps_no_graph(context):
    model = _model()
    y0, t = _states(3, 2), torch.linspace(0, 1, 4, dtype=F64)
    with torch.enable_grad():
        reference = physode.odeint(model, y0, t).detach()
    manager = torch.no_grad() if context == "no_grad" else torch.inference_mode()
    with manager:
        ys = physode.odeint(model, y0, t)
        field = model(torch.tensor(0.0, dtype=F64), y0)
    assert not ys.requires_grad and ys.grad_fn is None
    assert not field.requires_grad and field.grad_fn is None
    assert all(p.grad is None for p in model.parameters())
    torch.testing.assert_close(ys, reference, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"n_coordinates": 0}, r"n_coordinates=0 \(need an integer >= 1"),
        ({"n_coordinates": 1.5}, r"n_coordinates=1.5"),
        ({"n_coordinates": 1, "separable": "yes"}, r"separable='yes' \(need True or False\)"),
        ({"n_coordinates": 1, "activation": "wavy"}, r"unknown activation 'wavy'; choose one"),
        ({"n_coordinates": 1, "width": 0}, r"width=0 \(need an integer >= 1\)"),
    ],
)
def test_bad_arguments_are_refused_by_name(arguments, message):
    with pytest.raises(physode.InvalidArgumentError, match=message):
        HamiltonianNN(**arguments)


def test_a_state_of_the_wrong_size_or_dtype_is_refused_with_the_fix():
    model = HamiltonianNN(2, width=4, depth=1)
    with pytest.raises(physode.InvalidArgumentError, match=r"needs states \[q, p\] of shape"):
        model(torch.tensor(0.0), torch.zeros(3, 3))
    with pytest.raises(physode.InvalidArgumentError, match=r"needs states .*\(\.\.\., 4\)"):
        model.hamiltonian(torch.zeros(3, 2))
    with pytest.raises(physode.InvalidArgumentError, match=r"e\.g\. model\.double\(\)"):
        model(torch.tensor(0.0), torch.zeros(3, 4, dtype=F64))
    with pytest.raises(physode.InvalidArgumentError,
                       match=r"y is torch.int64 but states must be floating point.*"
                             r"pass y.to\(torch.float32\)$"):  # fmt: skip
        model(torch.tensor(0.0), torch.zeros(3, 4, dtype=torch.int64))


def test_training_on_oscillator_data_learns_an_energy_with_the_true_level_sets():
    _, t, ys = _oscillator_data(n=8)
    torch.manual_seed(0)
    model = HamiltonianNN(1, width=16, depth=1)
    history = Trainer(model, (t, ys), epochs=25, window=6, lr=0.02, batch_size=64).fit().history
    assert history[-1]["loss"] < 0.05 * history[0]["loss"]
    # On circles of the true energy E = (q² + p²) / 2 the learned H is nearly constant, and from
    # circle to circle it rises as E does (H is defined up to a constant only).
    angle = torch.linspace(0, 2 * math.pi, 65, dtype=F64)[:-1]
    radii = [0.3, 0.6, 0.9]
    with torch.no_grad():
        rings = [model.hamiltonian(torch.stack([r * angle.cos(), r * angle.sin()], -1))
                 for r in radii]  # fmt: skip
    rises = [float(outer.mean() - inner.mean()) for inner, outer in zip(rings, rings[1:])]
    true_rises = [(b**2 - a**2) / 2 for a, b in zip(radii, radii[1:])]
    assert rises == pytest.approx(true_rises, rel=0.2)
    assert max(float(h.std()) for h in rings) < 0.1 * min(rises)


@pytest.mark.parametrize("separable", [False, True])
def test_one_epoch_takes_the_same_step_in_every_gradient_mode(separable):
    _, t, ys = _oscillator_data(n=4, points=11, t_end=1.0)
    losses = {}
    for mode in ("aca", "disc-opt", "opt-disc"):
        trainer = Trainer(_model(separable, width=8, depth=1), (t, ys), epochs=2, window=4,
                          gradient=mode, rtol=1e-9, atol=1e-11, lr=0.01)  # fmt: skip
        losses[mode] = [row["loss"] for row in trainer.fit().history]
    assert losses["aca"] == pytest.approx(losses["disc-opt"], rel=1e-9)
    assert losses["opt-disc"] == pytest.approx(losses["aca"], rel=1e-5)
    assert losses["aca"][1] < losses["aca"][0]


def test_a_separable_network_trains_with_a_symplectic_method():
    _, t, ys = _oscillator_data(n=4, points=11, t_end=1.0)
    trainer = Trainer(_model(True, width=8, depth=1), (t, ys), epochs=3, window=4,
                      method="yoshida4", step_size=0.05, lr=0.01)  # fmt: skip
    losses = [row["loss"] for row in trainer.fit().history]
    assert all(math.isfinite(x) for x in losses) and losses[-1] < losses[0]


def test_a_checkpoint_resumes_the_run_bit_for_bit_and_evaluate_reports_conservation(tmp_path):
    system, t, ys = _oscillator_data(n=6, points=11, t_end=1.0)
    data = Trajectories(t, ys, system=system)
    settings = {"epochs": 4, "window": 4, "lr": 0.01, "val_fraction": 0.34}
    whole = Trainer(_model(seed=0, width=8, depth=1), data, **settings)
    whole.fit()
    first = Trainer(_model(seed=0, width=8, depth=1), data, **settings)
    first.fit(epochs=2)
    path = first.save_checkpoint(tmp_path / "hnn.pt")
    resumed = Trainer(_model(seed=5, width=8, depth=1), data, **settings)
    resumed.load_checkpoint(path)
    resumed.fit()
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in whole.history]
    for a, b in zip(whole.model.state_dict().values(), resumed.model.state_dict().values(),
                    strict=True):  # fmt: skip
        assert torch.equal(a, b)
    report = resumed.evaluate(t_end=2.0)
    assert report.predicted.shape == report.truth.shape and report.mse is not None
    assert math.isfinite(report.mse) and report.conservation_model is not None


@pytest.mark.parametrize("layer", [0, 2])
def test_a_spectrally_normalised_layer_gives_the_gradient_of_the_energy_it_computes(layer):
    model = _model(n=1, depth=1)
    torch.nn.utils.spectral_norm(model.net.net[layer])  # a hook computes the weight
    model.eval()  # no power iteration: every call gets the same normalised weight
    with torch.no_grad():
        model.net.net[layer].weight_orig.add_(1.0)  # the stored weight is out of date
    y = _states(6, 2)
    field, energy = model(torch.tensor(0.0), y), model.hamiltonian(y)  # before any other call
    grad = torch.vmap(torch.func.grad(lambda s: model.net.net(s)[0]))(y)
    expected = torch.cat([grad[..., 1:], -grad[..., :1]], dim=-1)
    torch.testing.assert_close(field, expected, rtol=1e-13, atol=1e-14)
    torch.testing.assert_close(energy, model.net.net(y)[..., 0], rtol=0, atol=0)
