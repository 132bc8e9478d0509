"""physode's adaptive solvers against torchdiffeq and SciPy's solve_ivp on non-trivial problems.

For each problem, method and tolerance, the error of every solver is measured against one tight
reference (SciPy DOP853 at rtol = atol = 1e-13). physode must be about as accurate as the reference
implementations of the same method family and spend about as many function evaluations.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

import physode
from physode.solvers import make_stepper

torchdiffeq = pytest.importorskip("torchdiffeq")

DTYPE = torch.float64


def van_der_pol(t, y, mu=2.0):
    x, v = y[..., 0], y[..., 1]
    return torch.stack([v, mu * (1.0 - x * x) * v - x], dim=-1)


def lotka_volterra(t, y, alpha=1.3, beta=0.9, gamma=0.8, delta=1.8):
    prey, predator = y[..., 0], y[..., 1]
    return torch.stack(
        [alpha * prey - beta * prey * predator, gamma * prey * predator - delta * predator], dim=-1
    )


def _mlp_field():
    generator = torch.Generator().manual_seed(0)
    w1 = torch.randn(2, 32, generator=generator, dtype=DTYPE)
    b1 = 0.5 * torch.randn(32, generator=generator, dtype=DTYPE)
    w2 = torch.randn(32, 2, generator=generator, dtype=DTYPE) / 32**0.5
    y0 = torch.randn(16, 2, generator=generator, dtype=DTYPE)

    def mlp(t, y):
        return torch.tanh(y @ w1 + b1) @ w2 - 0.1 * y

    return mlp, y0


_MLP, _MLP_Y0 = _mlp_field()

# name -> (func, y0, output times)
PROBLEMS = {
    "van_der_pol": (van_der_pol, torch.tensor([2.0, 0.0], dtype=DTYPE), np.linspace(0, 6, 7)),
    "lotka_volterra": (
        lotka_volterra,
        torch.tensor([0.4425, 4.628], dtype=DTYPE),
        np.linspace(0, 3, 31),
    ),
    "batched_mlp": (_MLP, _MLP_Y0, np.linspace(0, 2, 5)),
}

# physode method -> (SciPy method, torchdiffeq method or None): the same method or the same family.
REFERENCES = {
    "dopri5": ("RK45", "dopri5"),
    "bosh3": ("RK23", "bosh3"),
    "tsit5": ("RK45", "dopri5"),
    "dop853": ("DOP853", None),
}


def _numpy_field(func, shape):
    def f(t, y):
        state = torch.from_numpy(y).reshape(shape)
        return func(torch.tensor(t, dtype=DTYPE), state).reshape(-1).numpy()

    return f


_REFERENCE_CACHE: dict[str, np.ndarray] = {}


def _reference(problem: str, times: np.ndarray) -> np.ndarray:
    key = f"{problem}-{len(times)}"
    if key not in _REFERENCE_CACHE:
        func, y0, _ = PROBLEMS[problem]
        solution = solve_ivp(
            _numpy_field(func, y0.shape),
            (times[0], times[-1]),
            y0.reshape(-1).numpy(),
            method="DOP853",
            rtol=1e-13,
            atol=1e-13,
            t_eval=times,
        )
        _REFERENCE_CACHE[key] = solution.y.T
    return _REFERENCE_CACHE[key]


class _Counted(torch.nn.Module):
    def __init__(self, func):
        super().__init__()
        self.func, self.calls = func, 0

    def forward(self, t, y):
        self.calls += 1
        return self.func(t, y)


def _times_for(method: str, times: np.ndarray) -> np.ndarray:
    # dop853 has no dense output here and steps onto every output time, so its work is only
    # comparable with the references' (which interpolate) when outputs are few.
    if method == "dop853":
        return np.array([times[0], times[len(times) // 2], times[-1]])
    return times


# Three tolerances per method, spanning its useful range (a third-order method at 1e-9 takes
# tens of thousands of steps).
TOLERANCES = {
    "bosh3": (1e-3, 1e-4, 1e-5),
    "dopri5": (1e-4, 1e-6, 1e-8),
    "tsit5": (1e-4, 1e-6, 1e-8),
    "dop853": (1e-6, 1e-8, 1e-10),
}
CASES = [
    pytest.param(problem, method, tol, id=f"{problem}-{method}-{tol:.0e}")
    for problem in sorted(PROBLEMS)
    for method in sorted(REFERENCES)
    for tol in TOLERANCES[method]
]


@pytest.mark.parametrize(("problem", "method", "tol"), CASES)
def test_adaptive_methods_match_scipy_and_torchdiffeq_in_accuracy_and_work(problem, method, tol):
    func, y0, times = PROBLEMS[problem]
    times = _times_for(method, times)
    reference = _reference(problem, times)
    n = len(times)

    sol = physode.solve(func, y0, torch.tensor(times), method=method, rtol=tol, atol=tol)
    error = np.abs(sol.ys.reshape(n, -1).numpy() - reference).max()

    scipy_method, torchdiffeq_method = REFERENCES[method]
    scipy_sol = solve_ivp(
        _numpy_field(func, y0.shape),
        (times[0], times[-1]),
        y0.reshape(-1).numpy(),
        method=scipy_method,
        rtol=tol,
        atol=tol,
        t_eval=times,
    )
    reference_errors = [np.abs(scipy_sol.y.T - reference).max()]
    reference_nfe = [scipy_sol.nfev]
    if torchdiffeq_method is not None:
        counted = _Counted(func)
        ys = torchdiffeq.odeint(
            counted, y0, torch.tensor(times), method=torchdiffeq_method, rtol=tol, atol=tol
        )
        reference_errors.append(np.abs(ys.reshape(n, -1).numpy() - reference).max())
        reference_nfe.append(counted.calls)

    # A method without dense output may need one extra step per interior output time.
    stepper = make_stepper(method)
    slack = 0 if stepper.has_dense else stepper.tableau.stages * (n - 2)
    assert error <= 3.0 * min(reference_errors), (error, reference_errors)
    assert 0.7 * min(reference_nfe) <= sol.stats.nfe <= 1.3 * max(reference_nfe) + slack, (
        sol.stats.nfe,
        reference_nfe,
    )


@pytest.mark.parametrize("problem", sorted(PROBLEMS))
def test_heun_is_as_accurate_as_torchdiffeq_adaptive_heun(problem):
    # torchdiffeq's adaptive_heun reuses the Euler stage's derivative as the next step's first
    # evaluation (one evaluation per step), so only accuracy and accepted steps are compared.
    func, y0, times = PROBLEMS[problem]
    reference = _reference(problem, times)
    n = len(times)
    sol = physode.solve(func, y0, torch.tensor(times), method="heun", rtol=1e-3, atol=1e-3)
    counted = _Counted(func)
    ys = torchdiffeq.odeint(
        counted, y0, torch.tensor(times), method="adaptive_heun", rtol=1e-3, atol=1e-3
    )
    error = np.abs(sol.ys.reshape(n, -1).numpy() - reference).max()
    torchdiffeq_error = np.abs(ys.reshape(n, -1).numpy() - reference).max()
    assert error <= 3.0 * torchdiffeq_error
    # heun steps onto every output time (no dense output): up to one extra step per interior one.
    assert sol.stats.n_steps <= 1.3 * counted.calls + (n - 2)
    # Two evaluations to start (f0 and the first-step estimate), then two per accepted step but
    # the first, and one per rejected step (which reuses f0).
    assert sol.stats.nfe == 2 * sol.stats.n_steps + sol.stats.n_rejected + 1


@pytest.mark.parametrize("method", ["dopri5", "dop853"])
def test_tight_tolerance_reaches_the_reference_to_near_rounding(method):
    func, y0, times = PROBLEMS["lotka_volterra"]
    reference = _reference("lotka_volterra", times)
    ys = physode.odeint(func, y0, torch.tensor(times), method=method, rtol=1e-12, atol=1e-12)
    assert np.abs(ys.numpy() - reference).max() < 1e-9


def test_batched_rows_agree_with_solving_each_row_alone_to_the_tolerance():
    func, y0, times = PROBLEMS["batched_mlp"]
    t = torch.tensor(times)
    batched = physode.odeint(func, y0, t, rtol=1e-7, atol=1e-7)
    for row in (0, 15):
        alone = physode.odeint(func, y0[row : row + 1], t, rtol=1e-7, atol=1e-7)
        torch.testing.assert_close(batched[:, row : row + 1], alone, rtol=0, atol=1e-5)


def test_max_steps_limits_the_whole_solve_where_torchdiffeqs_max_num_steps_limits_each_output():
    # docs/solvers.md maps torchdiffeq's max_num_steps to max_steps and says that they count
    # differently: 201 outputs a step or two apart pass torchdiffeq's limit of 5 and not physode's.
    t = torch.linspace(0.0, 20.0, 201, dtype=DTYPE)
    y0 = torch.tensor([1.0, 0.0], dtype=DTYPE)

    def rotation(t, y):
        return torch.stack([y[1], -y[0]])

    ys = torchdiffeq.odeint(rotation, y0, t, options=dict(max_num_steps=5))
    assert torch.allclose(ys[-1], torch.stack([torch.cos(t[-1]), -torch.sin(t[-1])]), atol=1e-4)
    solution = physode.solve(rotation, y0, t, max_steps=5, throw=False)
    assert solution.status == physode.Status.MAX_STEPS
    assert solution.stats.n_steps + solution.stats.n_rejected == 5
    assert physode.solve(rotation, y0, t, max_steps=200).status == physode.Status.SUCCESS
