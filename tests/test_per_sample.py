"""Per-sample step control: every row its own steps and status, independent of its batch.

Each row of the test problems carries its own stiffness (Van der Pol's mu as a constant third
state component), so rows genuinely need different numbers of steps and leave the active set at
different iterations. Both loops are covered: the torch one and, for a ``func`` with a NumPy twin
and nothing to differentiate, the NumPy one.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

import physode
from physode import Status
from physode.solvers import ADAPTIVE_METHODS

MUS = [0.5, 3.0, 1.0, 6.0, 0.0, 2.0]
T = [0.0, 0.5, 1.7, 3.0, 4.0]


def _vdp_torch(t, z):
    x, v, mu = z[..., 0], z[..., 1], z[..., 2]
    return torch.stack([v, mu * (1 - x * x) * v - x, torch.zeros_like(mu)], dim=-1)


def _vdp_numpy(t, z):
    x, v, mu = z[..., 0], z[..., 1], z[..., 2]
    return np.stack([v, mu * (1 - x * x) * v - x, np.zeros_like(mu)], axis=-1)


class Twin:
    """The Van der Pol field with a NumPy twin that counts its calls."""

    def __init__(self):
        self.numpy_calls = 0

    def __call__(self, t, z):
        return _vdp_torch(t, z)

    def numpy(self, t, z):
        self.numpy_calls += 1
        return _vdp_numpy(t, z)


def _z0(dtype=torch.float64):
    x0 = torch.linspace(0.5, 2.0, len(MUS), dtype=dtype)
    return torch.stack([x0, torch.zeros_like(x0), torch.tensor(MUS, dtype=dtype)], dim=-1)


def _solve(func, z0, t=T, **kwargs):
    options = {"method": "dopri5", "rtol": 1e-8, "atol": 1e-8, "step_control": "per-sample"}
    with torch.no_grad():
        return physode.solve(func, z0, t, **{**options, **kwargs})


# Low-order methods get looser tolerances, to keep their step counts (and the tests) small.
TOLERANCE = {"heun": 1e-4, "bosh3": 1e-6}


def _many_z0(n=48):
    # Enough rows that torch evaluates them in vectorised blocks, whose pow can differ in the
    # last bit from the scalar code a lone row gets (the step factor's rounding absorbs that).
    g = torch.Generator().manual_seed(0)
    x0 = 0.2 + 2.0 * torch.rand(n, generator=g, dtype=torch.float64)
    mu = 6.0 * torch.rand(n, generator=g, dtype=torch.float64)
    return torch.stack([x0, torch.zeros_like(x0), mu], dim=-1)


def _assert_rows_alone_equal_batch(func, method):
    z0 = _many_z0()
    tol = TOLERANCE.get(method, 1e-8)
    batch = _solve(func, z0, method=method, rtol=tol, atol=tol)
    assert batch.success
    for row in (0, 5, 17, 30, 41, 47):
        alone = _solve(func, z0[row : row + 1], method=method, rtol=tol, atol=tol)
        assert torch.equal(alone.ys[:, 0], batch.ys[:, row]), f"row {row} differs"
        assert alone.stats.n_steps[0] == batch.stats.n_steps[row]
        assert alone.stats.n_rejected[0] == batch.stats.n_rejected[row]
    # And the order of the rows does not matter either.
    order = torch.randperm(len(z0), generator=torch.Generator().manual_seed(1))
    shuffled = _solve(func, z0[order], method=method, rtol=tol, atol=tol)
    assert torch.equal(shuffled.ys, batch.ys[:, order])
    return batch


@pytest.mark.parametrize("method", ADAPTIVE_METHODS)
def test_each_row_is_bit_for_bit_what_it_is_alone_torch_loop(method):
    batch = _assert_rows_alone_equal_batch(_vdp_torch, method)
    # The rows really took different paths: stiffer rows take more steps.
    steps = batch.stats.n_steps
    assert len(set(steps.tolist())) > 10


@pytest.mark.parametrize("method", ADAPTIVE_METHODS)
def test_each_row_is_bit_for_bit_what_it_is_alone_numpy_loop(method):
    twin = Twin()
    _assert_rows_alone_equal_batch(twin, method)
    assert twin.numpy_calls > 0


@pytest.mark.parametrize("method", ["dopri5", "dop853", "tsit5"])
def test_numpy_loop_agrees_with_torch_loop_and_returns_tensors(method):
    twin = Twin()
    on_numpy = _solve(twin, _z0(), method=method)
    assert twin.numpy_calls > 0
    on_torch = _solve(_vdp_torch, _z0(), method=method)
    # The same decisions with other roundings (torch fuses a + w * b): equal to the tolerance.
    torch.testing.assert_close(on_numpy.ys, on_torch.ys, rtol=0, atol=1e-6)
    for sol in (on_numpy, on_torch):
        assert sol.ys.dtype == torch.float64 and sol.status.dtype == torch.int64
        for counter in (sol.stats.n_steps, sol.stats.n_rejected, sol.stats.nfe):
            assert isinstance(counter, torch.Tensor) and counter.shape == (len(MUS),)
    assert (on_numpy.stats.n_steps - on_torch.stats.n_steps).abs().max() <= 2
    torch.testing.assert_close(on_numpy.t_final, on_torch.t_final)


def test_counters_add_up_per_row():
    sol = _solve(_vdp_torch, _z0(), method="dopri5")
    stats = sol.stats
    # dopri5 is FSAL: 6 new evaluations per attempt, plus f0 and the starting-step probe.
    assert torch.equal(stats.nfe, 2 + 6 * (stats.n_steps + stats.n_rejected))
    assert torch.equal(sol.t_final, torch.full((len(MUS),), T[-1], dtype=torch.float64))


@pytest.mark.parametrize("twin", [False, True], ids=["torch", "numpy"])
def test_rows_that_blow_up_fail_alone_and_nothing_raises(twin):
    # y' = y**2 from y0 blows up at t = 1 / y0: only the row starting at 2 does so before 0.8.
    def field(t, y):
        return y * y

    if twin:
        field.numpy = lambda t, y: y * y
    y0 = torch.tensor([[0.5], [2.0], [1.0]], dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # overflow inside NumPy stays silent, as in torch
        sol = physode.solve(field, y0, [0.0, 0.4, 0.8], step_control="per-sample")  # throw=True
    assert not sol.success and "1 of 3 rows" in sol.message
    assert sol.status[0] == Status.SUCCESS and sol.status[2] == Status.SUCCESS
    assert sol.status[1] in (Status.STEP_SIZE_UNDERFLOW, Status.NON_FINITE)
    assert sol.t_final[1].item() == pytest.approx(0.5, abs=1e-3)
    assert torch.isnan(sol.ys[2, 1]).all() and torch.isfinite(sol.ys[:, [0, 2]]).all()
    exact = 1.0 / (1.0 / y0[[0, 2]] - 0.8)
    torch.testing.assert_close(sol.ys[-1, [0, 2]], exact, rtol=1e-5, atol=0)


@pytest.mark.parametrize("twin", [False, True], ids=["torch", "numpy"])
def test_max_steps_stops_only_the_rows_that_need_more(twin):
    func = Twin() if twin else _vdp_torch
    full = _solve(func, _z0())
    limit = int(full.stats.n_steps.min()) + 5
    sol = _solve(func, _z0(), max_steps=limit)
    needed = full.stats.n_steps + full.stats.n_rejected
    assert torch.equal(sol.status == Status.MAX_STEPS, needed > limit)
    assert torch.equal(sol.ys[:, needed <= limit], full.ys[:, needed <= limit])


def _decay(twin: bool):
    """dy/dt = -y, with its NumPy twin when ``twin``."""

    def field(t, y):
        return -y

    if twin:
        field.numpy = lambda t, y: -y
    return field


@pytest.mark.parametrize("twin", [False, True], ids=["torch", "numpy"])
def test_backward_in_time_and_float32(twin):
    field = _decay(twin)
    y0 = torch.tensor([[1.0], [2.0], [-3.0]])
    t = [1.0, 0.5, 0.0]
    with torch.no_grad():
        sol = physode.solve(field, y0, t, step_control="per-sample", rtol=1e-6, atol=1e-7)
    assert sol.success and sol.ys.dtype == torch.float32
    expected = y0 * torch.exp(torch.tensor([0.0, 0.5, 1.0]))[:, None, None]
    torch.testing.assert_close(sol.ys, expected, rtol=1e-5, atol=1e-6)


def test_per_sample_agrees_with_a_shared_step_solve_to_the_tolerance():
    per_sample = _solve(_vdp_torch, _z0(), rtol=1e-10, atol=1e-10, method="dop853")
    shared = _solve(_vdp_torch, _z0(), rtol=1e-10, atol=1e-10, method="dop853",
                    step_control="shared")  # fmt: skip
    torch.testing.assert_close(per_sample.ys, shared.ys, rtol=0, atol=1e-7)


class Damped(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.k = torch.nn.Parameter(torch.tensor(0.3, dtype=torch.float64))
        self.numpy_calls = 0

    def forward(self, t, z):
        x, v, mu = z[..., 0], z[..., 1], z[..., 2]
        dv = mu * (1 - x * x) * v - x - self.k * v
        return torch.stack([v, dv, torch.zeros_like(mu)], dim=-1)

    def numpy(self, t, z):
        self.numpy_calls += 1
        x, v, mu = z[..., 0], z[..., 1], z[..., 2]
        dv = mu * (1 - x * x) * v - x - self.k.item() * v
        return np.stack([v, dv, np.zeros_like(mu)], axis=-1)


@pytest.mark.parametrize("method", ["dopri5", "dop853", "bosh3"])
def test_aca_and_disc_opt_gradients_agree_per_sample(method):
    model = Damped()
    grads = {}
    for gradient in ("disc-opt", "aca"):
        z0 = _z0().requires_grad_(True)
        ys = physode.odeint(model, z0, T, method=method, rtol=1e-7, atol=1e-7,
                            gradient=gradient, step_control="per-sample")  # fmt: skip
        loss = (ys[:, :, :2] ** 2).sum()  # ys[0] too: it is z0, and its gradient passes through
        g_z0, g_k = torch.autograd.grad(loss, [z0, model.k])
        grads[gradient] = torch.cat([g_z0.flatten(), g_k.reshape(1)])
    scale = grads["disc-opt"].abs().max()
    assert (grads["aca"] - grads["disc-opt"]).abs().max() <= 1e-10 * scale
    assert model.numpy_calls == 0  # a solve that needs gradients stays on torch


def test_aca_and_disc_opt_gradients_agree_per_sample_with_a_max_step_that_binds():
    model = Damped()
    grads, steps = {}, {}
    for gradient in ("disc-opt", "aca"):
        z0 = _z0().requires_grad_(True)
        sol = physode.solve(model, z0, T, rtol=1e-7, atol=1e-7, gradient=gradient,
                            step_control="per-sample", max_step=0.02)  # fmt: skip
        loss = (sol.ys[:, :, :2] ** 2).sum()
        g_z0, g_k = torch.autograd.grad(loss, [z0, model.k])
        grads[gradient] = torch.cat([g_z0.flatten(), g_k.reshape(1)])
        steps[gradient] = sol.stats.n_steps
    assert bool((steps["aca"] >= T[-1] / 0.02).all())  # every row's steps are capped
    assert torch.equal(steps["aca"], steps["disc-opt"])
    scale = grads["disc-opt"].abs().max()
    assert (grads["aca"] - grads["disc-opt"]).abs().max() <= 1e-10 * scale


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_max_step_caps_each_row_alike_on_the_numpy_and_the_torch_loop(dtype):
    twin, options = Twin(), {"rtol": 1e-5, "atol": 1e-5}
    free = _solve(twin, _z0(dtype), **options)
    on_numpy = _solve(twin, _z0(dtype), max_step=0.05, **options)
    on_torch = _solve(_vdp_torch, _z0(dtype), max_step=0.05, **options)
    assert twin.numpy_calls > 0 and on_numpy.success and on_torch.success
    assert bool((free.stats.n_steps < T[-1] / 0.05).any())  # the cap binds in some rows
    assert bool((on_numpy.stats.n_steps >= T[-1] / 0.05).all())
    assert torch.equal(on_numpy.stats.n_steps, on_torch.stats.n_steps)
    torch.testing.assert_close(on_numpy.ys, on_torch.ys)


class _BlowsUpLater(torch.nn.Module):
    """dy/dt = c y² (c learnable); rows with a positive flag turn NaN after t = 0.5."""

    def __init__(self):
        super().__init__()
        self.c = torch.nn.Parameter(torch.tensor(0.3, dtype=torch.float64))

    def forward(self, t, z):
        y, flag = z[..., 0], z[..., 1]
        nan = torch.where((t[..., 0] > 0.5) & (flag > 0), torch.nan, 0.0)
        return torch.stack([self.c * y * y + nan, 0 * flag], -1)


@pytest.mark.parametrize("host", [True, False], ids=["host", "device-path"])
@pytest.mark.parametrize("method", ["dopri5", "dop853", "heun"])
def test_a_row_going_non_finite_leaves_the_disc_opt_gradients_of_what_was_reached_exact(
    method, host, monkeypatch
):
    from physode.solvers import per_sample

    monkeypatch.setattr(per_sample, "_on_host", lambda y0: host)
    grads = {}
    for gradient, rows in (("disc-opt", 2), ("aca", 2), ("disc-opt", 1)):
        model = _BlowsUpLater()
        z0 = torch.tensor([[1.0, 1.0], [1.0, 0.0]][:rows], dtype=torch.float64)
        z0.requires_grad_(True)
        sol = physode.solve(model, z0, [0.0, 0.3, 0.7, 2.0], method=method, gradient=gradient,
                            step_control="per-sample", throw=False)  # fmt: skip
        assert sol.status.tolist()[:1] == [int(Status.NON_FINITE)]
        # The first row's output at t = 0.3, reached before it failed (others are NaN).
        grads[gradient, rows] = torch.autograd.grad(sol.ys[1, 0, 0], [z0, model.c])
    g_z0, g_c = grads["disc-opt", 2]
    assert torch.isfinite(g_z0[0]).all() and torch.isfinite(g_c)
    for name in (("aca", 2), ("disc-opt", 1)):  # ACA, and the row alone
        torch.testing.assert_close(g_z0[:1], grads[name][0][:1], rtol=1e-9, atol=0)
        torch.testing.assert_close(g_c, grads[name][1], rtol=1e-9, atol=0)


class _SqrtDecay(torch.nn.Module):
    """dy/dt = -c sqrt(y) (c learnable): NaN, with a NaN derivative, where y < 0."""

    def __init__(self):
        super().__init__()
        self.c = torch.nn.Parameter(torch.tensor(0.7, dtype=torch.float64))

    def forward(self, t, y):
        return -self.c * torch.sqrt(y)


@pytest.mark.parametrize("host", [True, False], ids=["host", "device-path"])
@pytest.mark.parametrize("method", ADAPTIVE_METHODS)
def test_a_row_where_func_is_undefined_from_the_start_leaves_the_disc_opt_gradients_exact(
    method, host, monkeypatch
):
    # Row 1 starts where sqrt is undefined. Its f0 stayed in the graph that the other rows'
    # first retaken step used, and autograd's 0 * NaN made c's gradient and row 1's NaN.
    from physode.solvers import per_sample

    monkeypatch.setattr(per_sample, "_on_host", lambda y0: host)
    t = [0.0, 0.5, 1.0]
    w = torch.tensor([[1.0, 0.0, -2.0], [0.5, 0.0, 3.0], [-1.0, 0.0, 1.5]], dtype=torch.float64)
    grads = {}
    for gradient, rows in (("disc-opt", [0, 1, 2]), ("aca", [0, 1, 2]), ("disc-opt", [0, 2])):
        model = _SqrtDecay()
        y0 = torch.tensor([[1.0], [-1.0], [2.0]], dtype=torch.float64)[rows].requires_grad_(True)
        sol = physode.solve(model, y0, t, method=method, gradient=gradient, throw=False,
                            step_control="per-sample")  # fmt: skip
        good = [rows.index(0), rows.index(2)]
        expected = [0, int(Status.NON_FINITE), 0]
        assert sol.status.tolist() == [expected[r] for r in rows]
        loss = (w[:, [0, 2]] * sol.ys[:, good, 0]).sum()
        g_y0, g_c = torch.autograd.grad(loss, [y0, model.c])
        if len(rows) == 3:
            assert g_y0[1].item() == 0.0  # the loss does not use row 1
        grads[gradient, len(rows)] = (g_y0[good], g_c)
    for name in (("aca", 3), ("disc-opt", 2)):  # ACA, and the good rows alone
        torch.testing.assert_close(grads["disc-opt", 3], grads[name], rtol=1e-9, atol=0)


class _GrowsOutOfItsDomain(torch.nn.Module):
    """dy/dt = rate c y, the state ``[y, rate, flag]``; NaN (with a NaN derivative) in flagged
    rows once y exceeds ``limit``."""

    def __init__(self, limit: float):
        super().__init__()
        self.c = torch.nn.Parameter(torch.tensor(1.0, dtype=torch.float64))
        self.limit = limit

    def forward(self, t, z):
        y, rate, flag = z[..., 0], z[..., 1], z[..., 2]
        sign = torch.where((flag > 0) & (y > self.limit), -1.0, 1.0)
        return torch.stack([rate * self.c * y * torch.sqrt(sign), 0 * rate, 0 * flag], -1)


def test_a_row_finishing_where_func_is_undefined_leaves_the_disc_opt_gradients_exact():
    # heun evaluates f at each accepted state apart from the step (no FSAL). Row 0's last
    # step lands past the limit while its stages stay below it: the step is accepted and the
    # row finishes, but its f0 there is NaN and stayed in the graph of row 1's later steps.
    z0 = torch.tensor([[1.0, 1.0, 1.0], [1.0, 3.0, 0.0]], dtype=torch.float64)
    t = [0.0, 1.0]
    with torch.no_grad():
        free = physode.solve(_GrowsOutOfItsDomain(math.inf), z0, t, method="heun", rtol=1e-4,
                             step_control="per-sample")  # fmt: skip
    assert int(free.stats.n_steps[0]) < int(free.stats.n_steps[1])  # row 1 goes on alone
    grads = []
    for limit in (free.ys[-1, 0, 0].item() * (1 - 1e-10), math.inf):
        model, z = _GrowsOutOfItsDomain(limit), z0.clone().requires_grad_(True)
        sol = physode.solve(model, z, t, method="heun", rtol=1e-4, gradient="disc-opt",
                            step_control="per-sample")  # fmt: skip
        grads.append(torch.autograd.grad(sol.ys[-1, :, 0].sum(), [z, model.c]))
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-12, atol=0)


def test_disc_opt_gradient_passes_a_finite_difference_check_per_sample():
    model = Damped()
    z0 = _z0()[:3].detach()

    def loss(k):
        model.k.data = k.detach().clone()
        with torch.no_grad():
            ys = physode.odeint(model, z0, T, method="dop853", rtol=1e-11, atol=1e-11,
                                step_control="per-sample")  # fmt: skip
        return (ys[-1, :, :2] ** 2).sum()

    model.k.data = torch.tensor(0.3, dtype=torch.float64)
    ys = physode.odeint(model, z0, T, method="dop853", rtol=1e-11, atol=1e-11,
                        gradient="disc-opt", step_control="per-sample")  # fmt: skip
    (grad,) = torch.autograd.grad((ys[-1, :, :2] ** 2).sum(), [model.k])
    eps = 1e-5
    k = torch.tensor(0.3, dtype=torch.float64)
    fd = (loss(k + eps) - loss(k - eps)) / (2 * eps)
    assert grad.item() == pytest.approx(fd.item(), rel=1e-5)


def test_per_sample_needs_an_adaptive_method_and_a_batch_dimension():
    with pytest.raises(physode.InvalidArgumentError, match="adaptive"):
        physode.solve(_vdp_torch, _z0(), T, method="rk4", step_size=0.1,
                      step_control="per-sample")  # fmt: skip
    with pytest.raises(physode.InvalidArgumentError, match="batch dimension"):
        physode.solve(lambda t, y: -y, torch.tensor(1.0), T, step_control="per-sample")
    z0 = _z0().requires_grad_(True)
    with pytest.raises(physode.InvalidArgumentError, match="opt-disc"):
        physode.solve(_vdp_torch, z0, T, gradient="opt-disc", step_control="per-sample")


@pytest.mark.parametrize(
    "twin, message",
    [
        (lambda t, y: torch.from_numpy(-y), "must return a NumPy array of y's dtype float64"),
        (lambda t, y: (-y).astype(np.float32), "got ndarray of dtype float32"),
        (lambda t, y: -y[:, :1], r"func.numpy\(t, y\) must return dy/dt with y's shape"),
    ],
)
def test_a_numpy_twin_returning_the_wrong_thing_is_named(twin, message):
    def field(t, y):
        return -y

    field.numpy = twin
    with pytest.raises(physode.InvalidArgumentError, match=message):
        _solve(field, torch.ones(3, 2, dtype=torch.float64))


@pytest.mark.parametrize(
    ("twin", "shown"),
    [(np.zeros(3), "array([0., 0., 0.]) (ndarray)"), (True, "True (bool)"),
     (np.arange(100.0), "array([ 0.,  1.,  2.,  3.,  4.,  5.,  6.,  7.,  8.,  9., ... (ndarray)")],
)  # fmt: skip
@pytest.mark.parametrize("gradient", [False, True])
def test_a_numpy_twin_that_cannot_be_called_is_refused_not_ignored(twin, shown, gradient):
    # It was ignored: the solve ran on torch without a word.
    def field(t, y):
        return -y

    field.numpy = twin
    y0 = torch.ones(3, 2, dtype=torch.float64, requires_grad=gradient)  # a gradient: the torch loop
    with pytest.raises(physode.InvalidArgumentError) as error:
        physode.solve(field, y0, T, rtol=1e-8, atol=1e-8, step_control="per-sample")
    assert str(error.value).startswith(
        f"func.numpy is {shown}, which cannot be called; a per-sample solve reads func.numpy as "
        "func's NumPy twin"
    )
    field.numpy = None  # no twin
    ys = physode.solve(field, y0, T, rtol=1e-8, atol=1e-8, step_control="per-sample").ys
    torch.testing.assert_close(ys[-1], math.exp(-T[-1]) * y0, rtol=1e-6, atol=0)


def test_per_sample_evaluation_counts_are_per_row_forward_and_backward():
    # The forward count once left out the evaluation that finds a plain function's parameters,
    # and the backward count added up batched calls instead of each row's evaluations.
    w = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    calls = []

    def field(t, y):  # y = (x, rate): x decays at its row's rate, which stays constant
        calls.append(y.shape[0])
        x, rate = y[:, :1], y[:, 1:]
        return torch.cat([-w * rate * x, torch.zeros_like(rate)], dim=-1)

    y0 = torch.tensor([[1.0, 1.0], [1.0, 30.0], [1.0, 30.0]], dtype=torch.float64)
    sol = physode.solve(field, y0, [0.0, 1.0], step_control="per-sample", gradient="aca")
    forward_calls = len(calls)
    assert sol.stats.nfe.shape == (3,)
    assert int(sol.stats.nfe.max()) == forward_calls  # the hardest row takes part in every call
    sol.ys[-1].sum().backward()
    rows_evaluated = sum(calls[forward_calls:])
    assert sol.stats.nfe_backward.shape == (3,)
    assert int(sol.stats.nfe_backward.sum()) == rows_evaluated
    assert sol.stats.nfe_backward[0] < sol.stats.nfe_backward[1]  # the stiffer rows step more


@pytest.mark.parametrize("gradient", ["disc-opt", None])
def test_per_sample_backward_counts_are_per_row_when_there_is_no_replay(gradient):
    # Disc-Opt replays nothing and a solve without gradient has no backward pass: their count
    # is still one entry per row, zero, as every counter of a per-sample solve (it was int 0).
    y0 = torch.ones(3, 2, dtype=torch.float64, requires_grad=gradient is not None)
    sol = physode.solve(
        lambda t, y: -y, y0, [0.0, 1.0], step_control="per-sample", gradient=gradient or "aca"
    )
    if gradient is not None:
        sol.ys[-1].sum().backward()
    assert isinstance(sol.stats.nfe_backward, torch.Tensor)
    assert sol.stats.nfe_backward.tolist() == [0, 0, 0]


@pytest.mark.parametrize("twin", [False, True], ids=["torch", "numpy"])
def test_a_row_whose_step_is_below_the_resolution_of_t_underflows_alone(twin):
    # y' = -k y with k a constant state component. At t = 1e8 (resolution 1.5e-8) the row with
    # k = 1e10 starts with a step of about 1e-10, so t + h == t: that step of nothing was
    # accepted, set h to 0 and spun until max_steps, reported as MAX_STEPS.
    def field(t, z):
        return torch.stack([-z[..., 1] * z[..., 0], torch.zeros_like(z[..., 1])], dim=-1)

    if twin:
        field.numpy = lambda t, z: np.stack([-z[..., 1] * z[..., 0], 0 * z[..., 1]], axis=-1)
    z0 = torch.tensor([[1.0, 1.0], [1.0, 1e10]], dtype=torch.float64)
    with torch.no_grad():
        sol = physode.solve(field, z0, [1e8, 1e8 + 1.0], step_control="per-sample", max_steps=200)
    assert sol.status.tolist() == [Status.SUCCESS, Status.STEP_SIZE_UNDERFLOW]
    assert sol.t_final[1].item() == 1e8
    assert int(sol.stats.n_steps[1] + sol.stats.n_rejected[1]) <= 2
    assert sol.ys[-1, 0, 0].item() == pytest.approx(np.exp(-1.0), rel=1e-5)
    assert torch.isnan(sol.ys[-1, 1]).all()


@pytest.mark.parametrize("twin", [False, True], ids=["torch", "numpy"])
def test_output_times_that_float32_cannot_tell_apart_are_refused(twin):
    # Each row keeps its time in y0's dtype: 1e4 and 1e4 + 1e-4 were one float32 time, and the
    # second output came back as the first without a word.
    field = _decay(twin)
    t = [0.0, 1e4, 1e4 + 1e-4]
    with torch.no_grad(), pytest.raises(physode.InvalidArgumentError) as info:
        physode.solve(field, torch.ones(2, 1), t, step_control="per-sample")
    assert "t[1] = 10000.0 and t[2] = 10000.0001 are the same time in" in str(info.value)
    assert "float64" in str(info.value)
    with torch.no_grad():  # float64 tells them apart
        sol = physode.solve(field, torch.ones(2, 1, dtype=torch.float64), [0.0, 1.0, 1.0 + 1e-9],
                            step_control="per-sample")  # fmt: skip
    assert sol.ys[2, 0, 0] < sol.ys[1, 0, 0]


class _Forced:
    """x'' + x = cos(2 t), on torch and as a NumPy twin: the stages' times matter."""

    def __init__(self):
        self.numpy_calls = 0

    def __call__(self, t, z):
        return torch.stack([z[..., 1], -z[..., 0] + torch.cos(2 * t[..., 0])], dim=-1)

    def numpy(self, t, z):
        self.numpy_calls += 1
        return np.stack([z[..., 1], -z[..., 0] + np.cos(2 * t[..., 0])], axis=-1)


@pytest.mark.parametrize("twin", [False, True], ids=["torch", "numpy"])
@pytest.mark.parametrize("method", ["dopri5", "dop853", "tsit5", "bosh3"])
def test_a_time_dependent_field_is_evaluated_at_each_stages_time(twin, method):
    # From x = 1, v = 0 the solution is x = 4/3 cos t - cos(2 t) / 3.
    forced = _Forced()
    func = forced if twin else forced.__call__
    z0 = torch.tensor([[1.0, 0.0]] * 3, dtype=torch.float64)
    t = torch.linspace(0.0, 5.0, 6, dtype=torch.float64)
    with torch.no_grad():
        ys = physode.odeint(func, z0, t, method=method, rtol=1e-10, atol=1e-10,
                            step_control="per-sample")  # fmt: skip
    assert (forced.numpy_calls > 0) == twin
    exact = 4 / 3 * torch.cos(t) - torch.cos(2 * t) / 3
    torch.testing.assert_close(ys[..., 0], exact[:, None].expand(6, 3), rtol=0, atol=1e-8)


def test_an_error_of_func_in_a_per_sample_solve_says_what_func_is_handed():
    # A func that reads y as one state (y[1]) is handed the rows still running: with a y0 of
    # shape (2,) (two rows of one component, not one state of two) it worked until a row
    # finished, then raised a bare IndexError from deep inside the step.
    def oscillator(t, y):
        return torch.stack([y[1], -y[0]])

    y0 = torch.tensor([1.0, 0.0], dtype=torch.float64)
    t = torch.linspace(0.0, 1.0, 5, dtype=torch.float64)
    with pytest.raises(IndexError) as info:
        physode.odeint(oscillator, y0, t, step_control="per-sample")
    note = "\n".join(getattr(info.value, "__notes__", []))
    assert "y0 has shape (2,)" in note and "y0[None]" in note and "y[..., k]" in note

    # The advice works: one state of two components, as one row, its components y[..., k].
    def rows(t, y):
        return torch.stack([y[..., 1], -y[..., 0]], -1)

    ys = physode.odeint(rows, y0[None], t, step_control="per-sample")
    torch.testing.assert_close(ys[-1, 0], torch.stack([torch.cos(t[-1]), -torch.sin(t[-1])]))


# ------------------------------------------------------------------------------ dense output


def _rotation(t, y):
    return torch.stack([y[..., 1], -y[..., 0]], dim=-1)


def _rotation_numpy(t, y):
    return np.stack([y[..., 1], -y[..., 0]], axis=-1)


_rotation.numpy = _rotation_numpy
_ROTATION_Y0 = torch.tensor([[1.0, 0.0], [0.0, 3.0], [0.5, -0.5]], dtype=torch.float64)


@pytest.mark.parametrize("loop", ["torch", "numpy", "aca"])
@pytest.mark.parametrize("method", ["dopri5", "dop853"])
def test_the_steps_do_not_depend_on_the_number_of_output_times(method, loop):
    # Rows once stepped onto every output time: 401 outputs over [0, 10] took 400 steps where
    # 11 took 30. With dense output a row's steps are those of its last output time alone.
    # (dop853 lands on each output where a gradient is taken; ACA's replay does for it.)
    y0 = _ROTATION_Y0.clone().requires_grad_(loop == "aca")
    func = _rotation if loop == "numpy" else lambda t, y: _rotation(t, y)
    solutions = [
        physode.solve(func, y0, torch.linspace(0.0, 10.0, n, dtype=torch.float64), method=method,
                      rtol=1e-8, atol=1e-8, step_control="per-sample", gradient="aca")
        for n in (11, 401)
    ]  # fmt: skip
    few, many = solutions
    if loop == "aca" and method == "dop853":
        assert bool((many.stats.n_steps >= 400).all())
        return
    assert bool((many.stats.n_steps < 200).all())  # 35..114 when written
    if method == "dop853":
        # dop853 steps onto outputs its step passes fewer than 3 of (11 outputs: about 2 a step),
        # and interpolates the many: fewer steps, the same outputs to the tolerance.
        assert bool((many.stats.n_steps <= few.stats.n_steps).all())
        torch.testing.assert_close(few.ys, many.ys[::40], rtol=0, atol=1e-6)
        return
    assert torch.equal(few.stats.n_steps, many.stats.n_steps)
    # The outputs both share come from the same steps and the same interpolant: the same bits.
    assert torch.equal(few.ys.detach(), many.ys.detach()[::40])


@pytest.mark.parametrize("method", ["bosh3", "dopri5", "tsit5", "dop853"])
def test_dense_outputs_agree_with_outputs_stepped_onto_to_the_tolerance(method):
    tol = TOLERANCE.get(method, 1e-8)
    t = torch.linspace(0.0, 5.0, 201, dtype=torch.float64)
    dense = _solve(_rotation, _ROTATION_Y0, t=t, method=method, rtol=tol, atol=tol)
    # A solve that steps onto each of few outputs (its steps are then about as long as the
    # dense solve's), and the exact rotation.
    landed = _solve(_rotation, _ROTATION_Y0, t=t[::25], method=method, rtol=tol, atol=tol)
    c, s = t.cos()[:, None], t.sin()[:, None]
    x0, v0 = _ROTATION_Y0[:, 0], _ROTATION_Y0[:, 1]
    exact = torch.stack([x0 * c + v0 * s, v0 * c - x0 * s], dim=-1)
    assert (dense.ys - exact).abs().max() <= 100 * tol
    assert (dense.ys[::25] - landed.ys).abs().max() <= 100 * tol


def test_dop853_dense_output_is_of_order_7():
    # Hairer's continuous extension of DOP853 is of order 7: its error within one step
    # shrinks as h**8 (the ratio 2**8 = 256 when h halves), at every theta.
    from physode.solvers.rk import RungeKutta
    from physode.solvers.tableau import DOP853

    stepper = RungeKutta(DOP853)
    y = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    errors = []
    for h in (0.8, 0.4, 0.2):
        t0, hh = torch.zeros(1, 1, dtype=torch.float64), torch.full((1, 1), h, dtype=torch.float64)
        step = stepper.step(_rotation, t0, y, hh, _rotation(t0, y), None)
        ks = stepper.dense_stages(_rotation, t0, y, hh, step.ks, _rotation(t0 + hh, step.y1))
        worst = 0.0
        for theta in (0.1, 0.37, 0.5, 0.83):
            value = y + h * sum(w * k for w, k in zip(DOP853.dense_weights(theta), ks))
            exact = torch.tensor([[math.cos(theta * h), -math.sin(theta * h)]], dtype=torch.float64)
            worst = max(worst, float((value - exact).abs().max()))
        errors.append(worst)
    ratios = [errors[i] / errors[i + 1] for i in range(2)]
    assert all(2**7.5 < ratio < 2**8.5 for ratio in ratios), (errors, ratios)
    # At theta = 1 the extension is the step's end point (the solver takes y1 itself there).
    end = y + h * sum(w * k for w, k in zip(DOP853.dense_weights(1.0), ks))
    assert float((end - step.y1).abs().max()) < 1e-12  # the rounding of the weights


@pytest.mark.parametrize("method", ["dopri5", "dop853"])
def test_dense_output_on_a_gpu_is_what_it_is_on_the_host(method, monkeypatch):
    # The loop as it runs on a GPU (counts read once per iteration), on the CPU.
    import physode.solvers.per_sample as per_sample

    t = torch.linspace(0.0, 4.0, 41, dtype=torch.float64)
    with torch.no_grad():
        on_host = _solve(_vdp_torch, _z0(), t=t, method=method)
        monkeypatch.setattr(per_sample, "_on_host", lambda y0: False)
        on_a_gpu = _solve(_vdp_torch, _z0(), t=t, method=method)
    assert torch.equal(on_host.ys, on_a_gpu.ys)
    assert torch.equal(on_host.stats.nfe, on_a_gpu.stats.nfe)


@pytest.mark.parametrize("atol", [1e-200, 5e-324])
@pytest.mark.parametrize("twin", [False, True])
def test_a_per_sample_solve_with_an_atol_far_below_a_zero_components_derivative_runs(atol, twin):
    # As the shared loop's test in test_step_control.py: v = 0 at t0 with dv/dt = -x made the
    # row's |f0| / atol 1e200 (its square, and 2**-100 of it squared, overflow) or inf: every row
    # stopped as STEP_SIZE_UNDERFLOW, on torch and on the NumPy twin alike.
    def oscillator(t, y):
        return torch.stack([y[..., 1], -y[..., 0]], dim=-1)

    if twin:
        oscillator.numpy = lambda t, y: np.stack([y[..., 1], -y[..., 0]], axis=-1)
    y0 = torch.tensor([[1.0, 0.0], [0.5, 0.0]], dtype=torch.float64)
    sol = physode.solve(oscillator, y0, [0.0, 2.0], atol=atol, step_control="per-sample")
    assert sol.status.tolist() == [0, 0]
    exact = torch.tensor([math.cos(2.0), -math.sin(2.0)], dtype=torch.float64)
    torch.testing.assert_close(sol.ys[-1], y0[:, :1] * exact, rtol=0, atol=1e-5)


def test_dop853_steps_onto_outputs_its_steps_pass_few_of():
    # Hairer's extension costs 3 evaluations a step: dop853 used it wherever a step passed an
    # output, also one or two (a less accurate, slower data set of 101 outputs). It now steps
    # onto those, and no evaluation beyond the steps' own is made.
    t = torch.linspace(0.0, 10.0, 11, dtype=torch.float64)
    sol = _solve(_rotation, _ROTATION_Y0, t=t, method="dop853", rtol=1e-8, atol=1e-8)
    attempts = sol.stats.n_steps + sol.stats.n_rejected
    assert torch.equal(sol.stats.nfe, 2 + 12 * attempts)  # f0, first step, 12 a step
