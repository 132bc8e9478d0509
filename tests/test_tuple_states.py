"""States given as a tuple (or list) of tensors, as in torchdiffeq: results, gradients, errors."""

from __future__ import annotations

import pytest
import torch

import physode

F64 = torch.float64
ADAPTIVE = ["heun", "bosh3", "dopri5", "tsit5", "dop853"]
FIXED = ["euler", "midpoint", "rk4"]
SHAPES = [(3, 2), (3, 1), ()]  # a batch of z, its log-density, a 0-dim part
SIZES = [6, 3, 1]


def _weights(requires_grad: bool = False) -> torch.Tensor:
    w = torch.tensor([[0.3, -1.1], [0.8, 0.4]], dtype=F64)
    return w.requires_grad_(requires_grad)


def _parts(requires_grad: bool = False) -> list[torch.Tensor]:
    z = torch.tensor([[0.5, -0.2], [1.0, 0.3], [-0.7, 0.9]], dtype=F64)
    logp = torch.tensor([[0.1], [-0.4], [0.2]], dtype=F64)
    c = torch.tensor(0.6, dtype=F64)
    return [p.requires_grad_(requires_grad) for p in (z, logp, c)]


def _ffjord(w: torch.Tensor):
    """An FFJORD-like field of three parts: dz, d(log p) = -trace of a cheap Jacobian, and a
    0-dim part driven by both."""

    def func(t, y):
        z, logp, c = y
        dz = torch.tanh(z @ w) * (1.0 + c * torch.sin(t))
        dlogp = -(1.0 - dz**2).sum(-1, keepdim=True) * 0.1 - 0.05 * logp
        dc = -c * z.pow(2).mean()
        return dz, dlogp, dc

    return func


def _flat(func):
    """The same field on the flat tensor that a tuple state lies in."""

    def flat(t, y):
        z, logp, c = y.split(SIZES)
        dz, dlogp, dc = func(t, (z.view(SHAPES[0]), logp.view(SHAPES[1]), c.view(())))
        return torch.cat([dz.reshape(-1), dlogp.reshape(-1), dc.reshape(-1)])

    return flat


def _grid(backward: bool = False) -> torch.Tensor:
    t = torch.linspace(0.0, 1.5, 7, dtype=F64)
    return t.flip(0) if backward else t


def _options(method: str) -> dict:
    return {"method": method, "step_size": 0.05} if method in FIXED else {"method": method}


@pytest.mark.parametrize("backward", [False, True], ids=["forward", "backward-in-time"])
@pytest.mark.parametrize("method", ADAPTIVE + FIXED)
def test_a_tuple_solve_is_bit_for_bit_the_solve_of_its_flattened_state(method, backward):
    w, t = _weights(), _grid(backward)
    sol = physode.solve(_ffjord(w), tuple(_parts()), t, **_options(method))
    flat = physode.solve(
        _flat(_ffjord(w)), torch.cat([p.reshape(-1) for p in _parts()]), t, **_options(method)
    )
    assert isinstance(sol.ys, tuple) and len(sol.ys) == 3
    for ys, expected, shape in zip(sol.ys, flat.ys.split(SIZES, dim=1), SHAPES):
        assert ys.shape == (len(t), *shape)
        assert torch.equal(ys, expected.reshape(ys.shape))
    assert sol.stats.nfe == flat.stats.nfe and sol.stats.n_steps == flat.stats.n_steps


def test_the_error_norm_is_one_rms_over_every_part_as_for_the_stacked_tensor():
    # (q, v) as two parts and as one tensor [q, v]: the same components, so the same steps.
    def pair(t, y):
        return y[1], -torch.sin(y[0])

    def stacked(t, y):
        return torch.cat([y[..., 2:], -torch.sin(y[..., :2])], dim=-1)

    q, v = torch.tensor([1.2, 0.1], dtype=F64), torch.tensor([0.0, 2.0], dtype=F64)
    t = torch.linspace(0.0, 5.0, 4, dtype=F64)
    sol = physode.solve(pair, (q, v), t, rtol=1e-5, atol=1e-7)
    ref = physode.solve(stacked, torch.cat([q, v]), t, rtol=1e-5, atol=1e-7)
    assert (sol.stats.n_steps, sol.stats.n_rejected) == (ref.stats.n_steps, ref.stats.n_rejected)
    torch.testing.assert_close(torch.cat(sol.ys, dim=-1), ref.ys, rtol=1e-13, atol=1e-13)


def test_odeint_returns_the_tuple_of_solution_ys_and_a_list_state_gives_a_tuple_too():
    w, t = _weights(), _grid()
    ys = physode.odeint(_ffjord(w), list(_parts()), t)
    sol = physode.solve(_ffjord(w), tuple(_parts()), t)
    assert isinstance(ys, tuple) and [y.shape for y in ys] == [y.shape for y in sol.ys]
    assert all(torch.equal(a, b) for a, b in zip(ys, sol.ys))


def test_func_receives_a_tuple_of_tensors_in_the_parts_shapes_at_every_evaluation():
    seen = []

    def func(t, y):
        seen.append((type(y), [tuple(p.shape) for p in y]))
        return tuple(-p for p in y)

    physode.solve(func, _parts(), _grid(), method="rk4", step_size=0.5)
    assert seen and all(kind is tuple and shapes == SHAPES for kind, shapes in seen)


def test_a_one_part_tuple_is_the_plain_tensor_solve_in_a_tuple():
    y0 = torch.tensor([[1.0, -0.5], [0.2, 0.3]], dtype=F64)
    t = _grid()
    (ys,) = physode.odeint(lambda t, y: (-y[0] * torch.cos(t),), (y0,), t)
    assert torch.equal(ys, physode.odeint(lambda t, y: -y * torch.cos(t), y0, t))


def _loss(ys) -> torch.Tensor:
    z, logp, c = ys
    return z[-1].pow(2).sum() + 2.0 * logp[-1].sum() + (c * torch.arange(len(c))).sum()


def _gradients(gradient, explicit_params: bool = False, **options):
    w, parts = _weights(True), _parts(True)
    params = [w] if explicit_params else None
    ys = physode.odeint(_ffjord(w), tuple(parts), _grid(), gradient=gradient, params=params,
                        rtol=1e-10, atol=1e-12, **options)  # fmt: skip
    return torch.autograd.grad(_loss(ys), [*parts, w])


@pytest.mark.parametrize("explicit_params", [False, True], ids=["found", "params="])
def test_aca_gives_disc_opts_gradient_for_every_part_and_the_parameters(explicit_params):
    exact = _gradients("disc-opt")
    aca = _gradients("aca", explicit_params)
    for a, b in zip(aca, exact):
        assert b.abs().max() > 1e-3  # every part and w matter to the loss
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_opt_disc_approximates_the_exact_gradient_for_every_part_and_the_parameters():
    exact = _gradients("disc-opt")
    adjoint = _gradients(physode.OptDisc(rtol=1e-10, atol=1e-12))
    for a, b in zip(adjoint, exact):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("gradient", ["disc-opt", "aca", "opt-disc"])
def test_the_tuple_gradient_is_the_flat_solves_gradient(gradient):
    w, parts = _weights(True), _parts(True)
    ys = physode.odeint(_ffjord(w), tuple(parts), _grid(), gradient=gradient)
    expected_w, expected_parts = _weights(True), _parts(True)
    flat_ys = physode.odeint(
        _flat(_ffjord(expected_w)),
        torch.cat([p.reshape(-1) for p in expected_parts]),
        _grid(),
        gradient=gradient,
    )
    split = [y.reshape(len(_grid()), *s) for y, s in zip(flat_ys.split(SIZES, dim=1), SHAPES)]
    got = torch.autograd.grad(_loss(ys), [*parts, w])
    expected = torch.autograd.grad(_loss(split), [*expected_parts, expected_w])
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_a_tuple_with_only_one_part_requiring_grad_differentiates_that_part():
    w, (z, logp, c) = _weights(), _parts()
    z.requires_grad_(True)
    ys = physode.odeint(_ffjord(w), (z, logp, c), _grid(), rtol=1e-10, atol=1e-12)
    (gz,) = torch.autograd.grad(_loss(ys), [z])
    torch.testing.assert_close(gz, _gradients("disc-opt")[0], rtol=1e-10, atol=1e-10)


def test_values_and_gradients_match_torchdiffeq_with_a_tuple_state():
    torchdiffeq = pytest.importorskip("torchdiffeq")
    results = []
    for solver in (physode.odeint, torchdiffeq.odeint):
        w, parts = _weights(True), _parts(True)
        ys = solver(_ffjord(w), tuple(parts), _grid(), method="dopri5", rtol=1e-11, atol=1e-12)
        results.append((ys, torch.autograd.grad(_loss(ys), [*parts, w])))
    (ours, our_grads), (theirs, their_grads) = results
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-9)
    for a, b in zip(our_grads, their_grads):
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-8)


def test_a_failed_tuple_solve_returns_tuple_parts_with_nan_past_the_failure():
    def blows_up(t, y):
        return y[0] ** 2, -y[1]

    t = torch.linspace(0.0, 2.0, 5, dtype=F64)
    y0 = (torch.ones(2, dtype=F64), torch.ones(3, dtype=F64))
    sol = physode.solve(blows_up, y0, t, throw=False)  # y' = y^2 from 1 blows up at t = 1
    assert not sol.success and isinstance(sol.ys, tuple)
    assert [tuple(y.shape) for y in sol.ys] == [(5, 2), (5, 3)]
    assert torch.isnan(sol.ys[0][-1]).all() and torch.isnan(sol.ys[1][-1]).all()
    assert torch.isfinite(sol.ys[1][:2]).all()
    with pytest.raises(physode.SolverError) as failure:
        physode.solve(blows_up, y0, t)
    assert isinstance(failure.value.solution.ys, tuple)


def _oscillator(t, y):
    q, v = y
    return v, -q - 0.3 * q**3


@pytest.mark.parametrize("method", ["leapfrog", "yoshida4"])
def test_a_symplectic_method_reads_a_two_part_tuple_as_q_and_v(method):
    q = torch.tensor([[1.0, 0.2], [-0.5, 0.8]], dtype=F64)
    v = torch.tensor([[0.0, 0.1], [0.3, -0.2]], dtype=F64)

    def stacked(t, y):
        qs, vs = y[..., :2], y[..., 2:]
        return torch.cat([vs, -qs - 0.3 * qs**3], dim=-1)

    stacked.separable, stacked.n_coordinates = True, 2
    t = torch.linspace(0.0, 2.0, 5, dtype=F64)
    qs, vs = physode.odeint(_oscillator, (q, v), t, method=method, step_size=0.1)
    ref = physode.odeint(stacked, torch.cat([q, v], dim=-1), t, method=method, step_size=0.1)
    assert torch.equal(qs, ref[..., :2]) and torch.equal(vs, ref[..., 2:])


def test_a_tuple_solve_passes_on_funcs_drift_is_velocity_to_the_symplectic_method():
    def declared(t, y):
        return _oscillator(t, y)

    declared.drift_is_velocity = True
    y0 = (torch.tensor([1.0], dtype=F64), torch.tensor([0.0], dtype=F64))
    t = torch.tensor([0.0, 1.0], dtype=F64)
    plain = physode.solve(_oscillator, y0, t, method="leapfrog", step_size=0.1)
    fast = physode.solve(declared, y0, t, method="leapfrog", step_size=0.1)
    # 10 steps: one kick each where the drift is v itself, a kick and a drift otherwise; the
    # declaration costs one probe more (check_split's fifth)
    assert plain.stats.nfe - fast.stats.nfe == 10 - 1
    torch.testing.assert_close(fast.ys, plain.ys, rtol=1e-14, atol=1e-14)


def test_a_tuple_whose_dq_dt_depends_on_q_is_refused_by_a_symplectic_method():
    y0 = (torch.ones(2, dtype=F64), torch.zeros(2, dtype=F64))
    message = r"y0 is the tuple \(q, v\), but func's dq/dt changed when only q did"
    with pytest.raises(physode.InvalidArgumentError, match=message):
        physode.odeint(lambda t, y: (y[1] + y[0], -y[0]), y0, [0.0, 1.0], method="leapfrog",
                       step_size=0.1)  # fmt: skip


def _solve(y0, func=None, **options):
    func = func or (lambda t, y: tuple(-p for p in y))
    return physode.solve(func, y0, [0.0, 1.0], **options)


ONE = torch.ones(2, dtype=F64)


@pytest.mark.parametrize(
    ("y0", "message"),
    [
        ((), r"y0 is an empty tuple; give at least one tensor"),
        ([], r"y0 is an empty list"),
        ((ONE, [1.0, 2.0]), r"y0\[1\] must be a torch.Tensor, got list"),
        ((ONE, torch.ones(2, dtype=torch.int64)), r"y0\[1\] must be floating point, got dtype "
         r"torch.int64; use e.g. y0\[1\].double\(\)"),
        ((torch.ones(2, dtype=torch.complex128), ONE), r"y0\[0\] must be real"),
        ((ONE, torch.ones(2, dtype=torch.float16)), r"y0\[1\] must be float32 or float64"),
        ((ONE, ONE.float()), r"the parts of y0 must share one dtype and one device: y0\[0\] is "
         r"torch.float64 on cpu, y0\[1\] is torch.float32 on cpu"),
        ((ONE, torch.ones(2, dtype=F64, device="meta")), r"y0\[0\] is torch.float64 on cpu, "
         r"y0\[1\] is torch.float64 on meta"),
    ],
)  # fmt: skip
def test_a_bad_tuple_state_is_refused_naming_the_part(y0, message):
    with pytest.raises(physode.InvalidArgumentError, match=message):
        _solve(y0)


def test_a_state_that_is_neither_tensor_nor_tuple_is_refused_naming_both():
    with pytest.raises(physode.InvalidArgumentError, match="y0 must be a torch.Tensor or a tuple "
                       "of tensors, got float"):  # fmt: skip
        _solve(1.0)


@pytest.mark.parametrize(
    ("func", "message"),
    [
        (lambda t, y: torch.cat(y), r"must return a tuple of 2 tensors .* got Tensor"),
        (lambda t, y: (y[0],), r"returned 1 parts, but y0 has 2"),
        (lambda t, y: (y[0], 0.0), r"returned part 1 as float; each part of dy/dt must be a "),
        (lambda t, y: (y[0], y[1][:2]), r"returned part 1 of shape \(2,\), but y0\[1\] has "
         r"shape \(3,\)"),
        (lambda t, y: (y[0].float(), y[1]), r"returned part 0 as torch.float32 on cpu, but y is "
         r"torch.float64 on cpu"),
    ],
)  # fmt: skip
def test_a_func_returning_the_wrong_parts_is_refused_naming_the_part(func, message):
    y0 = (ONE, torch.ones(3, dtype=F64))
    for gradient in ("disc-opt", "aca"):
        with pytest.raises(physode.InvalidArgumentError, match=message):
            _solve(y0, func, gradient=gradient)


def test_a_func_returning_a_list_is_accepted():
    (a, b) = _solve((ONE, ONE), lambda t, y: [-y[0], y[1]], method="rk4", step_size=0.1).ys
    torch.testing.assert_close(b[-1] * a[-1], ONE, rtol=1e-6, atol=0)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"step_control": "per-sample"}, r"the parts of a tuple state share no rows; use "
         r"step_control='shared', or stack the parts"),
        ({"rtol": (1e-6, 1e-3)}, r"rtol must be one number for a tuple state, got \(1e-06, "
         r"0.001\): the error norm is one RMS"),
        ({"atol": [1e-8, 1e-6]}, r"atol must be one number for a tuple state"),
        ({"method": "leapfrog", "step_size": 0.1}, r"method='leapfrog' reads a tuple state as "
         r"\(q, v\): two parts of one shape, got 2 of shapes \(2,\), \(3,\)"),
    ],
)  # fmt: skip
def test_settings_a_tuple_state_does_not_go_with_are_refused_saying_what_to_do(options, message):
    with pytest.raises(physode.InvalidArgumentError, match=message):
        _solve((ONE, torch.ones(3, dtype=F64)), **options)


def test_a_symplectic_method_refuses_a_tuple_of_three_parts():
    with pytest.raises(physode.InvalidArgumentError, match=r"got 3 of shapes \(2,\), \(2,\), "):
        _solve((ONE, ONE, ONE), method="yoshida4", step_size=0.1)
