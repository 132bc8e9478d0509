"""Tests of physode.models: shapes, validation, hybrids, APHYNITY, and every gradient mode."""

from __future__ import annotations

import copy
import re

import pytest
import torch
from torch import nn

import physode
import physode.systems
from physode.models import MLP, Aphynity, Hybrid, NeuralODE, PhysicsModel, make_activation


@pytest.fixture(autouse=True)
def _float64():
    """Run every test of this module in float64, then restore the default dtype."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


class LinearDecay(nn.Module):
    """dy/dt = -k y with a learnable k (a stand-in physics term that needs no catalogue)."""

    autonomous = True

    def __init__(self, k: float = 1.0) -> None:
        super().__init__()
        self.k = nn.Parameter(torch.tensor(k))

    def physical_parameters(self) -> dict[str, float]:
        return {"k": float(self.k.detach())}

    def forward(self, t, y):
        return -self.k * y


@pytest.mark.parametrize("depth", [0, 1, 3])
def test_mlp_maps_the_last_dimension_with_any_leading_shape(depth):
    net = MLP(3, 5, width=7, depth=depth, activation="softplus")
    assert net(torch.zeros(2, 4, 3)).shape == (2, 4, 5)
    assert sum(isinstance(m, nn.Linear) for m in net.modules()) == depth + 1


def test_mlp_with_zero_output_is_the_zero_map():
    net = MLP(3, 2, zero_output=True)
    assert torch.equal(net(torch.randn(6, 3)), torch.zeros(6, 2))


@pytest.mark.parametrize("activation", ["tanh", "gelu"])
def test_mlp_applies_its_layers_in_order_as_the_sequential_of_them_does(activation):
    # MLP.forward calls each layer's forward itself; it must stay the plain composition, also
    # after a layer is replaced.
    torch.manual_seed(0)
    net = MLP(3, 2, width=8, depth=2, activation=activation)
    x = torch.randn(5, 3)
    assert torch.equal(net(x), net.net(x))
    net.net[2] = nn.Linear(8, 8)
    assert torch.equal(net(x), net.net(x))


def test_unknown_activation_is_refused_with_the_valid_choices():
    with pytest.raises(physode.InvalidArgumentError, match="'swish'.*choose one of.*tanh"):
        MLP(2, 2, depth=0, activation="swish")
    with pytest.raises(physode.InvalidArgumentError, match="width=0"):
        MLP(2, 2, width=0)
    assert isinstance(make_activation("gelu"), nn.GELU)


def test_neural_ode_feeds_time_only_when_time_dependent():
    torch.manual_seed(0)
    y = torch.randn(4, 2)
    autonomous = NeuralODE(2, width=8, depth=1)
    assert autonomous.autonomous
    assert torch.equal(autonomous(torch.tensor(0.0), y), autonomous(torch.tensor(5.0), y))
    timed = NeuralODE(2, width=8, depth=1, time_dependent=True)
    assert not timed.autonomous
    assert not torch.allclose(timed(torch.tensor(0.0), y), timed(torch.tensor(5.0), y))
    per_sample_t = torch.tensor([0.0, 5.0, 0.0, 5.0])[:, None]
    out = timed(per_sample_t, y)
    assert torch.equal(out[1], timed(torch.tensor(5.0), y)[1])


def test_neural_ode_input_transform_is_applied_before_the_network():
    torch.manual_seed(0)
    cubic = NeuralODE(2, width=8, depth=1, input_transform=lambda y: y**3)
    y = torch.randn(3, 2)
    assert torch.allclose(cubic(torch.tensor(0.0), y), cubic.net(y**3))


def test_hybrid_is_physics_plus_residual_and_starts_as_physics():
    torch.manual_seed(0)
    physics, residual = LinearDecay(0.7), NeuralODE(2, width=8, depth=1)
    model = Hybrid(physics, residual)
    t, y = torch.tensor(0.3), torch.randn(5, 2)
    assert torch.allclose(model(t, y), physics(t, y) + residual(t, y))
    fresh = Hybrid(LinearDecay(0.7), NeuralODE(2, width=8, depth=1, zero_output=True))
    assert torch.equal(fresh(t, y), physics(t, y))
    assert model.physical_parameters() == {"k": pytest.approx(0.7)}
    assert model.autonomous
    assert not Hybrid(physics, NeuralODE(2, time_dependent=True)).autonomous


class Column(nn.Module):
    """A residual that returns one column, not ``dy/dt``."""

    def __init__(self):
        super().__init__()
        self.net = nn.Linear(2, 1)

    def forward(self, t, y):
        return self.net(y)


class Constant(nn.Module):
    """A residual that returns one constant value per component."""

    def __init__(self, value):
        super().__init__()
        self.value = value

    def forward(self, t, y):
        return self.value


def test_a_hybrid_refuses_a_residual_that_does_not_return_y_s_last_dimension():
    # One column was added to every component of dy/dt, and training went on without a word.
    model = Hybrid(LinearDecay(0.7), Column())
    message = (r"the Hybrid's residual \(Column\) returned shape \(5, 1\) for y of shape "
               r"\(5, 2\); .* must return y's shape, \(\.\.\., 2\) \(e.g. NeuralODE\(2, \.\.\.\)")
    with pytest.raises(physode.InvalidArgumentError, match=message):
        model(torch.tensor(0.0), torch.randn(5, 2))
    t = torch.linspace(0, 1, 6)
    ys = torch.exp(-t)[:, None].expand(6, 2)
    with pytest.raises(physode.InvalidArgumentError, match=message.replace("5", "1")):
        physode.train.Trainer(model, (t, ys), epochs=1, window=3).fit()
    # A constant residual, one value per component, broadcasts as intended.
    bias = nn.Parameter(torch.tensor([0.1, -0.2]))
    constant = Hybrid(LinearDecay(0.7), Constant(bias))
    y = torch.randn(5, 2)
    assert torch.equal(constant(torch.tensor(0.0), y), LinearDecay(0.7)(None, y) + bias)


class Repeated(nn.Module):
    """A residual that returns ``dy/dt`` with an extra leading dimension of 3."""

    def forward(self, t, y):
        return torch.zeros(3, *y.shape)


def test_a_hybrid_refuses_a_residual_with_extra_leading_dimensions():
    # The last dimension fitted, so the sum grew to (3, 5, 2) for y (5, 2) when called directly;
    # only a solve noticed, and named no term.
    model = Hybrid(LinearDecay(0.7), Repeated())
    with pytest.raises(physode.InvalidArgumentError,
                       match=r"residual \(Repeated\) returned shape \(3, 5, 2\) for y of shape "
                             r"\(5, 2\)"):  # fmt: skip
        model(torch.tensor(0.0), torch.randn(5, 2))


@pytest.mark.parametrize(
    ("physics", "residual", "words"),
    [(None, Column(), r"not callable: physics=None \(the known part, e\.g\. PhysicsModel"),
     (LinearDecay(), None, r"not callable: residual=None \(the learned correction, e\.g\. "
                           r"NeuralODE\(n, zero_output=True\)\)"),
     (1.0, "net", r"physics=1\.0 .*; residual='net'")],
)  # fmt: skip
def test_a_hybrid_refuses_terms_that_are_not_callable_when_built(physics, residual, words):
    # Hybrid(None, residual) was built, and failed at its first call with "'NoneType' object
    # is not callable".
    with pytest.raises(physode.InvalidArgumentError, match=words):
        Hybrid(physics, residual)


# A learnable value a plain function's globals reach (the trainer's optimiser never sees it).
GLOBAL_RATE = torch.tensor(0.5, requires_grad=True)


def _global_decay(t, y):
    return -GLOBAL_RATE * y


def test_a_hybrid_refuses_a_plain_function_term_that_holds_learnable_values():
    # Such a function was accepted, and its tensors silently never trained: model.parameters()
    # does not include them (nor does .to() move them, or state_dict() save them).
    drag = torch.tensor([0.1], requires_grad=True)
    net = NeuralODE(2, width=4, depth=1)
    cases = [
        ("residual", lambda t, y: -drag * y, r"a tensor of shape \(1,\) that requires grad"),
        ("residual", lambda t, y: net(t, y), r"a NeuralODE module with parameters"),
        ("physics", _global_decay, r"a tensor of shape \(\) that requires grad"),
        ("residual", net.forward, r"a NeuralODE module with parameters"),
    ]
    for name, term, holds in cases:
        label = re.escape(getattr(term, "__qualname__", ""))
        terms = {"physics": LinearDecay(), "residual": NeuralODE(2, width=4, depth=1), name: term}
        with pytest.raises(physode.InvalidArgumentError,
                           match=rf"Hybrid's {name} term \({label}\) is a plain function "
                                 rf"that holds {holds}.*never be trained.*nn\.Module.*"
                                 r"nn\.Parameter"):  # fmt: skip
            Hybrid(**terms)


def test_a_plain_function_term_becomes_a_module_that_keeps_its_attributes():
    def known(t, y, p=None):
        return -y if p is None else -p * y

    known.autonomous = True
    residual = NeuralODE(2, width=4, depth=1, zero_output=True)
    model = Hybrid(known, residual)
    assert isinstance(model.physics, nn.Module) and model.physics.function is known
    assert model.autonomous and model.physics.autonomous
    assert "function=<function" in repr(model)
    assert list(model.parameters()) == list(residual.parameters())
    y = torch.ones(3, 2)
    assert torch.equal(model(torch.tensor(0.0), y), -y)
    assert torch.equal(model(torch.tensor(0.0), y, torch.full((3, 1), 2.0)), -2 * y)
    copied = copy.deepcopy(model.double())
    assert copied.physics.function is known
    assert copied.state_dict().keys() == model.state_dict().keys()
    assert not Hybrid(lambda t, y: -y, residual).autonomous  # declares nothing: depends on t


class Unlabelled(nn.Module):
    """A term that does not say whether it ignores ``t``."""

    def forward(self, t, y):
        return torch.zeros_like(y)


def test_a_hybrid_is_autonomous_only_when_both_parts_declare_it():
    neural = NeuralODE(2, width=4, depth=1)
    assert Hybrid(LinearDecay(), neural).autonomous
    assert not Hybrid(Unlabelled(), neural).autonomous
    assert not Hybrid(LinearDecay(), Unlabelled()).autonomous
    assert not Hybrid(LinearDecay(), NeuralODE(2, width=4, depth=1, time_dependent=True)).autonomous
    assert not Hybrid(PhysicsModel("duffing"), neural).autonomous


@pytest.mark.parametrize(("name", "autonomous"), [("pendulum", True), ("duffing", False)])
def test_a_systems_vector_field_declares_whether_it_ignores_t(name, autonomous):
    system = physode.systems.load(name)
    assert system.vector_field().autonomous is autonomous
    assert system.vector_field(learnable=list(system.parameters)[-1:]).autonomous is autonomous


def test_aphynity_objective_adds_the_residual_norm_and_raises_lambda_by_tau_times_loss():
    torch.manual_seed(0)
    model = Hybrid(LinearDecay(), NeuralODE(2, width=8, depth=1), Aphynity(2.0, tau=10.0))
    t = torch.linspace(0, 1, 4)
    ys = torch.randn(4, 3, 2)
    norm = torch.stack([model.residual(t[i], ys[i]).pow(2).sum(-1) for i in range(4)]).mean()
    assert torch.allclose(model.residual_norm(t, ys), norm)
    loss = torch.tensor(0.5)
    assert torch.allclose(model.regularised_loss(loss, t, ys), norm + 2.0 * 0.5)
    model.update_after_batch(0.5)
    assert float(model.aphynity_lambda) == pytest.approx(2.0 + 10.0 * 0.5)
    assert model.training_metrics() == {"aphynity_lambda": pytest.approx(7.0)}
    assert "aphynity_lambda" in model.state_dict()


def test_aphynity_with_update_epoch_raises_lambda_only_after_an_epoch():
    model = Hybrid(LinearDecay(), NeuralODE(2, depth=0), Aphynity(2.0, tau=10.0, update="epoch"))
    model.update_after_batch(0.5)
    assert float(model.aphynity_lambda) == 2.0
    model.update_after_epoch(0.25)
    assert float(model.aphynity_lambda) == pytest.approx(2.0 + 10.0 * 0.25)
    per_batch = Hybrid(LinearDecay(), NeuralODE(2, depth=0), Aphynity(2.0, tau=10.0))
    per_batch.update_after_epoch(0.25)
    assert float(per_batch.aphynity_lambda) == 2.0


def test_an_unknown_aphynity_update_is_refused_with_the_choices():
    with pytest.raises(physode.InvalidArgumentError, match="update='step'.*'batch' or 'epoch'"):
        Aphynity(1.0, tau=1.0, update="step")


def test_hybrid_without_aphynity_optimises_the_plain_trajectory_loss():
    model = Hybrid(LinearDecay(), NeuralODE(2, depth=0))
    loss = torch.tensor(0.25)
    assert model.regularised_loss(loss, torch.linspace(0, 1, 2), torch.ones(2, 1, 2)) is loss
    model.update_after_batch(1.0)
    assert model.training_metrics() == {}


@pytest.mark.parametrize(
    "bad",
    [
        {"lambda_init": 0.0},
        {"tau": -1.0},
        {"lambda_init": float("inf")},
        {"tau": float("inf")},
        {"lambda_init": "1"},
        {"tau": None},
    ],
)
def test_bad_aphynity_settings_are_refused(bad):
    with pytest.raises(physode.InvalidArgumentError, match=next(iter(bad))):
        Aphynity(**bad)


@pytest.mark.parametrize("aphynity", [0.5, "yes", {"tau": 1.0}])
def test_a_hybrid_refuses_aphynity_settings_that_are_not_an_aphynity(aphynity):
    with pytest.raises(physode.InvalidArgumentError, match=r"aphynity=.*pass Aphynity\("):
        Hybrid(LinearDecay(), NeuralODE(2, depth=0), aphynity=aphynity)


def test_aphynity_lambda_keeps_growing_by_small_increments_in_a_float32_model():
    model = Hybrid(LinearDecay(), NeuralODE(2, depth=0), Aphynity(1.0, tau=1.0)).float()
    assert model.residual.net.net[0].weight.dtype == torch.float32
    # float32 would round 1 + 1e-8 back to 1: the increment must survive the cast.
    model.update_after_batch(1e-8)
    assert model.aphynity_lambda.dtype == torch.float64
    assert float(model.aphynity_lambda) - 1.0 == pytest.approx(1e-8, rel=1e-6)


def _hybrid():
    torch.manual_seed(1)
    return Hybrid(LinearDecay(0.5), NeuralODE(2, width=6, depth=1), aphynity=True)


@pytest.mark.parametrize(
    "solver",
    [
        {"method": "dopri5", "rtol": 1e-9, "atol": 1e-11},
        {"method": "rk4", "step_size": 0.05},
        {"method": "tsit5", "rtol": 1e-9, "atol": 1e-11},
    ],
)
def test_models_get_equal_gradients_from_disc_opt_and_aca_and_close_ones_from_opt_disc(solver):
    y0 = torch.tensor([[1.0, -0.5], [0.3, 0.8]])
    t = torch.linspace(0, 1, 5)
    grads = {}
    for mode in ("disc-opt", "aca", "opt-disc"):
        model = _hybrid()
        ys = physode.odeint(model, y0, t, gradient=mode, **solver)
        ys.pow(2).sum().backward()
        grads[mode] = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    scale = grads["disc-opt"].norm()
    assert (grads["aca"] - grads["disc-opt"]).norm() <= 1e-10 * scale
    assert (grads["opt-disc"] - grads["disc-opt"]).norm() <= 1e-3 * scale


def test_physics_model_wraps_the_catalogue_field_with_named_learnable_parameters():
    model = PhysicsModel("three_body_aca", ["m1", "m2", "m3"], init={"m3": 0.7})
    assert model.physical_parameters() == pytest.approx({"m1": 1.1, "m2": 1.1, "m3": 0.7})
    assert {name.rsplit(".", 1)[-1] for name, _ in model.named_parameters()} == {"m1", "m2", "m3"}
    system = model.system
    y = system.sample_initial_states(3, seed=1)
    p = torch.tensor([1.1, 1.1, 0.7, system.parameters["K1"], system.parameters["K2"]])
    assert torch.allclose(model(torch.tensor(0.0), y), system.rhs(0.0, y, p), rtol=1e-12)
    model(torch.tensor(0.0), y).pow(2).sum().backward()
    assert all(p.grad is not None and p.grad != 0 for p in model.parameters())
    assert model.autonomous and model.separable and model.n_coordinates == 9


def test_a_forced_system_makes_a_model_that_is_not_autonomous_unless_told():
    assert not PhysicsModel("duffing").autonomous
    assert not Hybrid(PhysicsModel("duffing"), NeuralODE(2, width=4, depth=1)).autonomous
    assert PhysicsModel("pendulum").autonomous and PhysicsModel("lotka_volterra").autonomous
    assert PhysicsModel("duffing", autonomous=True).autonomous
    assert not PhysicsModel("pendulum", autonomous=False).autonomous


def test_windows_of_forced_physics_are_solved_from_their_own_start_times():
    # Windows that start at different times once shared one solve on a forced system, which
    # then ran with the wrong forcing phase: the true parameters gave a loss of 2e-2.
    from physode.train import Trainer

    system = physode.systems.load("duffing")
    t = torch.linspace(0.0, 3.0, 13, dtype=torch.float64)
    y0 = system.sample_initial_states(3, seed=0)
    ys = physode.odeint(system.vector_field(), y0, t, rtol=1e-11, atol=1e-11)
    model = PhysicsModel(system, learnable=["delta"])  # at its true value
    trainer = Trainer(model, (t, ys.transpose(0, 1)), epochs=1, window=4, batch_size=6,
                      rtol=1e-10, atol=1e-10)  # fmt: skip
    batches = trainer._batches(trainer.train_windows, shuffle=True)
    assert all(len({w.start for w in batch}) == 1 for batch in batches)
    losses = [trainer._solve_batch(trainer.train_data, batch)[2].item() for batch in batches]
    assert max(losses) < 1e-12


def test_physics_model_refuses_unknown_or_non_learnable_parameters():
    with pytest.raises(physode.InvalidArgumentError, match="\\['mass'\\] are not parameters.*m1"):
        PhysicsModel("three_body_aca", ["mass"])
    with pytest.raises(physode.InvalidArgumentError, match="init sets \\['K1'\\]"):
        PhysicsModel("three_body_aca", ["m1"], init={"K1": 1.0})


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"learnable": ["g", "m"]}, "the learnable parameter 'm' does not appear"),
        ({"per_trajectory": ["m"]}, "the per-trajectory learnable parameter 'm' does not appear"),
    ],
)
def test_physics_model_warns_of_a_learnable_parameter_the_equations_do_not_contain(
    arguments, message
):
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        PhysicsModel("pendulum", **arguments)  # m cancels from the pendulum's equations
    messages = [str(w.message) for w in caught if issubclass(w.category, physode.PhysodeWarning)]
    assert len(messages) == 1 and message in messages[0], messages
    assert caught[0].filename == __file__  # pointed at the caller's line


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"learnable": "m1"}, "learnable='m1' must be a list of parameter names.*\\['m1'\\]"),
        ({"learnable": ["m1"], "init": {"m1": "heavy"}}, "\\{'m1': 'heavy'\\} are not finite"),
        ({"learnable": ["m1"], "init": {"m1": float("nan")}}, "\\{'m1': nan\\} are not finite"),
    ],
)
def test_physics_model_refuses_a_single_string_or_a_non_numeric_start_by_name(arguments, message):
    with pytest.raises(physode.InvalidArgumentError, match=message):
        PhysicsModel("three_body_aca", **arguments)


def test_physics_model_takes_a_one_element_tensor_as_a_start_value():
    model = PhysicsModel("three_body_aca", ["m1"], init={"m1": torch.tensor(0.5)})
    assert model.physical_parameters() == {"m1": 0.5}


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"dim": 0}, "dim=0 \\(need an integer >= 1, the state dimension"),
        ({"dim": True}, "dim=True"),
        ({"dim": 2, "time_dependent": "yes"}, "time_dependent='yes'"),
        ({"dim": 2, "input_transform": "cube"}, "input_transform='cube' \\(need a function"),
    ],
)
def test_neural_ode_refuses_bad_arguments_by_their_own_names(arguments, message):
    with pytest.raises(physode.InvalidArgumentError, match=message):
        NeuralODE(**arguments)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        # A string such as "False" counted as true: a forced system declared autonomous shares
        # solves between windows that start at different times, without an error.
        ({"system": "duffing", "autonomous": "False"}, "autonomous='False' must be True or False"),
        ({"system": "pendulum", "stored_parameters": "no"}, "stored_parameters='no' must be"),
        # These failed with a TypeError and an AttributeError from inside the constructor.
        ({"system": "pendulum", "learnable": None}, "learnable=None must be a list of .*'g'"),
        ({"system": 3}, "system=3 is not a system: pass a physode.System, a catalogue name"),
    ],
)
def test_physics_model_refuses_arguments_of_the_wrong_kind_by_name(arguments, message):
    with pytest.raises(physode.InvalidArgumentError, match=message):
        PhysicsModel(**arguments)


def test_the_models_take_numpy_bools_as_switches():
    import numpy as np

    from physode.models import HamiltonianNN

    model = PhysicsModel("duffing", autonomous=np.True_, stored_parameters=np.False_)
    assert model.autonomous is True and model.trajectory_parameters == ()
    neural = NeuralODE(2, width=4, depth=1, time_dependent=np.True_, zero_output=np.True_)
    assert neural.time_dependent is True and not neural(0.0, torch.ones(2)).any()
    assert HamiltonianNN(1, width=4, depth=1, separable=np.True_).separable is True


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"zero_output": "no"}, "zero_output='no' \\(need True or False\\)"),  # was a zero map
        ({"activation": ["tanh"]}, "unknown activation \\['tanh'\\]; choose one of"),
    ],
)
def test_mlp_refuses_switches_and_activations_of_the_wrong_kind(arguments, message):
    with pytest.raises(physode.InvalidArgumentError, match=message):
        MLP(2, 2, **arguments)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        # zero_output="False" was turned into True before MLP could check it: a zero map.
        ({"zero_output": "False"}, "NeuralODE arguments: zero_output='False' \\(need True or"),
        ({"time_dependent": 1}, "NeuralODE arguments: time_dependent=1 \\(need True or False"),
    ],
)
def test_neural_ode_refuses_switches_of_the_wrong_kind(arguments, message):
    with pytest.raises(physode.InvalidArgumentError, match=message):
        NeuralODE(2, width=4, depth=1, **arguments)


def test_network_sizes_may_be_numpy_integers():
    import numpy as np

    net = MLP(np.int64(3), np.int64(2), width=np.int32(4), depth=np.int64(1))
    assert net(torch.zeros(5, 3)).shape == (5, 2) and type(net.in_features) is int
    assert NeuralODE(2, width=np.int64(4))(torch.tensor(0.0), torch.zeros(2)).shape == (2,)


def test_neural_ode_names_an_input_transform_that_changes_the_state_size():
    model = NeuralODE(2, width=4, depth=1, input_transform=lambda y: y[..., :1])
    message = "input_transform returned shape \\(5, 1\\) for y of shape \\(5, 2\\)"
    with pytest.raises(physode.InvalidArgumentError, match=message):
        model(torch.tensor(0.0), torch.ones(5, 2))


def test_neural_ode_names_a_state_of_the_wrong_size():
    with pytest.raises(physode.InvalidArgumentError, match="y has shape \\(5, 2\\).*dim=3"):
        NeuralODE(3, width=4, depth=1)(torch.tensor(0.0), torch.ones(5, 2))


def test_an_aphynity_hybrid_loading_a_plain_hybrids_weights_keeps_its_own_lambda():
    def hybrid(aphynity):
        return Hybrid(LinearDecay(0.5), NeuralODE(1, width=4, depth=1), aphynity=aphynity)

    plain, model = hybrid(None), hybrid(Aphynity(lambda_init=2.0, tau=1.0))
    model.load_state_dict(plain.state_dict())  # to fine-tune the plain fit with APHYNITY
    assert float(model.aphynity_lambda) == 2.0
    assert torch.equal(model.physics.k, plain.physics.k)
    t = torch.linspace(0, 1, 3)
    ys = physode.odeint(model, torch.ones(4, 1), t)
    assert torch.isfinite(model.regularised_loss(ys.square().mean(), t, ys))
    model.aphynity_lambda.fill_(7.0)  # an APHYNITY hybrid's own lambda still loads
    again = hybrid(Aphynity(lambda_init=2.0))
    again.load_state_dict(model.state_dict())
    assert float(again.aphynity_lambda) == 7.0


def test_neural_ode_names_a_state_of_another_dtype_than_its_weights_and_the_cast():
    model = NeuralODE(2, width=4, depth=1).float()  # as made in torch's default dtype
    y0, t = torch.ones(5, 2), torch.linspace(0, 1, 3)  # float64 (this module's default)
    with pytest.raises(physode.InvalidArgumentError, match="y is torch.float64 .*model.double"):
        physode.odeint(model, y0, t)
    assert physode.odeint(model.double(), y0, t).dtype == torch.float64
    with pytest.raises(physode.InvalidArgumentError, match="y is torch.float32 .*torch.float64"):
        physode.odeint(model, y0.float(), t)
    # Integer states: the fix is to cast them, not the model (it said model.to(torch.int64)).
    with pytest.raises(physode.InvalidArgumentError,
                       match=r"y is torch.int64 but states must be floating point, like this "
                             r"NeuralODE's weights \(torch.float64\); pass "
                             r"y.to\(torch.float64\)$"):  # fmt: skip
        model(t[0], torch.ones(5, 2, dtype=torch.int64))


@pytest.mark.parametrize("gradient", ["aca", "disc-opt", "opt-disc"])
def test_a_hybrid_with_catalogue_physics_trains_under_every_gradient_mode(gradient):
    system = physode.systems.load("lotka_volterra")
    physics = PhysicsModel(system, ["alpha", "delta"])
    model = Hybrid(physics, NeuralODE(2, width=8, depth=1), aphynity=True)
    t = torch.linspace(0, 1, 6)
    ys = physode.odeint(model, torch.tensor([[1.0, 2.0]]), t, gradient=gradient)
    model.regularised_loss(ys.pow(2).mean(), t, ys).backward()
    grads = {name: p.grad for name, p in model.named_parameters()}
    assert grads["physics.field.alpha"] is not None and grads["physics.field.alpha"] != 0
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())


class Exp(nn.Module):
    """A positive parameter as the exponential of an unconstrained one."""

    def forward(self, x):
        return x.exp()

    def right_inverse(self, value):
        return value.log()


@pytest.mark.parametrize("gradient", ["disc-opt", "aca", "opt-disc"])
def test_a_physical_parameter_kept_positive_with_torch_parametrize_is_solved_and_trained(gradient):
    system = physode.systems.load("pendulum")
    model = PhysicsModel(system, ["g", "l"], init={"l": 0.5})
    nn.utils.parametrize.register_parametrization(model.field, "l", Exp())
    y0 = system.sample_initial_states(3, seed=0)
    t = torch.linspace(0, 1, 4, dtype=torch.float64)
    p = torch.tensor([system.parameters["m"], system.parameters["g"], 0.5], dtype=torch.float64)
    assert torch.allclose(model(t[0], y0), system.rhs(t[0], y0, p), rtol=1e-12)
    assert model.physical_parameters() == pytest.approx({"g": 9.81, "l": 0.5})
    physode.odeint(model, y0, t, gradient=gradient)[-1].sum().backward()
    raw = model.field.parametrizations.l.original
    assert raw.grad is not None and raw.grad != 0

    model.set_parameters({"l": 2.0})  # through right_inverse: the raw value is log(2)
    assert raw.item() == pytest.approx(0.6931471805599453, rel=1e-12)
    assert model.physical_parameters()["l"] == pytest.approx(2.0, rel=1e-12)


def test_hooks_on_the_layers_of_an_mlp_run_as_in_its_sequential():
    torch.manual_seed(0)
    model = NeuralODE(2, width=8, depth=2)
    nn.utils.spectral_norm(model.net.net[0])  # its hook computes the weight before each call
    seen = []
    model.net.net[2].register_forward_pre_hook(lambda layer, args: (2 * args[0],))
    model.net.net[4].register_forward_hook(lambda layer, args, out: seen.append(out.shape))
    model.eval()  # no power iteration: every call gets the same normalised weight
    with torch.no_grad():
        model.net.net[0].weight_orig.add_(1.0)  # the stored weight is out of date until a call
    y = torch.randn(5, 2)
    torch.testing.assert_close(model(torch.tensor(0.0), y), model.net.net(y), rtol=0, atol=0)
    assert seen == [(5, 2), (5, 2)]


def test_hooks_and_own_call_of_a_models_terms_run_though_forward_is_called_directly():
    # Hybrid, PhysicsModel and NeuralODE call their terms' forward without nn.Module.__call__
    # where it has nothing to do; hooks on a term, or a term's own __call__, still take effect.
    class Doubled(nn.Module):
        def forward(self, t, y):
            return -y

        def __call__(self, t, y):
            return 2 * super().__call__(t, y)

    physics = PhysicsModel("harmonic_oscillator", ["k"])
    model = Hybrid(physics, Doubled())
    y = torch.tensor([[1.0, 0.5]], dtype=torch.float64)
    t = torch.tensor(0.0, dtype=torch.float64)
    plain = physics.system.rhs(t, y)
    torch.testing.assert_close(model(t, y), plain - 2 * y, rtol=0, atol=0)
    physics.field.register_forward_hook(lambda module, args, out: 3 * out)
    torch.testing.assert_close(physics(t, y), 3 * plain, rtol=0, atol=0)
    torch.testing.assert_close(model(t, y), 3 * plain - 2 * y, rtol=0, atol=0)
    node = NeuralODE(2, width=4, depth=1).double()
    seen = []
    node.net.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape))
    node(t, y)
    assert seen == [(1, 2)]


def test_a_models_repr_shows_the_settings_that_change_what_it_computes():
    # A printed APHYNITY hybrid read as a plain one, and a model learning per trajectory, a
    # time-dependent network or a separable HNN as their defaults.
    from physode.models import HamiltonianNN

    physics = PhysicsModel("pendulum", ["g"], per_trajectory=["l"], n_trajectories=3)
    hybrid = Hybrid(physics, NeuralODE(2, width=4, depth=1, time_dependent=True),
                    aphynity=Aphynity(tau=5.0))  # fmt: skip
    text = repr(hybrid)
    assert "aphynity=Aphynity(lambda_init=1.0, tau=5.0, update='batch')" in text
    assert "per_trajectory=['l'], n_trajectories=3" in text
    assert "dim=2, time_dependent=True" in text
    assert "aphynity=None" in repr(Hybrid(LinearDecay(), NeuralODE(1, width=4, depth=1)))
    assert "autonomous=True, stored_parameters=False" in repr(
        PhysicsModel("duffing", autonomous=True, stored_parameters=False)
    )
    assert "n_coordinates=2, separable=True" in repr(HamiltonianNN(2, separable=True))


def test_a_hybrid_without_a_physics_model_says_it_has_no_parameter_vector():
    # A NeuralODE (or any module) as the physics term failed with a raw AttributeError.
    hybrid = Hybrid(NeuralODE(2, width=4, depth=1), MLP(2, 2, width=4, depth=1))
    with pytest.raises(physode.UnsupportedError, match=r"NeuralODE.*PhysicsModel"):
        hybrid.parameter_vector()
