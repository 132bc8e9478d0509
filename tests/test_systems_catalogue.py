"""The catalogue: every system loads, validates, samples, runs, and keeps its invariants."""

from __future__ import annotations

import itertools
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import physode
import physode.diagnostics
import physode.systems

F64 = torch.float64
REQUIRED = [
    "harmonic_oscillator", "damped_oscillator", "pendulum", "damped_pendulum", "double_pendulum",
    "duffing", "van_der_pol", "kepler", "three_body", "three_body_aca", "lotka_volterra",
    "fitzhugh_nagumo", "spiral",
]
CONSERVATIVE = [n for n in physode.systems.names() if physode.systems.load(n).invariant_names]
# Chaotic systems whose ten periods take thousands of steps at rtol 1e-11.
LONG = {"three_body_aca", "double_pendulum", "three_body"}
DAMPED = ["damped_oscillator", "damped_pendulum"]


def test_catalogue_lists_every_required_system():
    assert set(REQUIRED) <= set(physode.systems.names())
    assert physode.systems.names() == sorted(physode.systems.names())


def test_conservative_and_damped_sets_are_the_expected_ones():
    assert set(CONSERVATIVE) == {
        "harmonic_oscillator", "pendulum", "double_pendulum", "kepler", "three_body",
        "three_body_aca", "lotka_volterra",
    }
    for name in DAMPED:
        system = physode.systems.load(name)
        assert system.dissipation is not None and system.energy_expression is not None


@pytest.mark.parametrize("name", REQUIRED)
def test_system_loads_samples_and_runs(name):
    system = physode.systems.load(name)
    assert system.name == name
    assert system.spec_text == physode.systems.path(name).read_text(encoding="utf-8")
    assert system.description and system.reference and system.characteristic_time > 0
    assert len(system.state_names) == system.n_state and list(system.parameters) == [
        s.name for s in system.parameter_symbols
    ]
    for key, (lo, hi) in system.parameter_ranges.items():
        assert lo <= system.parameters[key] <= hi
    y0 = system.sample_initial_states(4, seed=0)
    p = system.sample_parameters(4, seed=0)
    assert y0.shape == (4, system.n_state) and p.shape == (4, system.n_params)
    assert torch.isfinite(system.rhs(0.0, y0, p)).all()
    t = torch.linspace(0, system.characteristic_time / 3, 5, dtype=F64)
    ys = physode.odeint(system.vector_field(), y0, t, method="dop853", rtol=1e-7, atol=1e-9)
    assert ys.shape == (5, 4, system.n_state) and torch.isfinite(ys).all()
    assert not torch.allclose(ys[-1], ys[0])
    for value in system.invariants(ys).values():
        assert value.shape == (5, 4)


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in LONG else n for n in CONSERVATIVE]
)
def test_invariants_hold_over_ten_characteristic_periods(name):
    system = physode.systems.load(name)
    y0 = system.initial_state()
    t = torch.linspace(0, 10 * system.characteristic_time, 201, dtype=F64)
    ys = physode.odeint(system.vector_field(), y0, t, method="dop853", rtol=1e-11, atol=1e-12)
    report = physode.diagnostics.conservation(system, ys, t, tolerance=1e-8)
    assert report.ok, str(report)
    assert set(report.invariants) == set(system.invariant_names)
    if name == "three_body":
        for key in ("momentum_x", "momentum_y"):
            assert report[key].max_abs_drift.max().item() <= 1e-12


@pytest.mark.parametrize("name", DAMPED)
def test_damped_energy_never_rises(name):
    system = physode.systems.load(name)
    y0 = system.sample_initial_states(4, seed=2)
    t = torch.linspace(0, 10 * system.characteristic_time, 401, dtype=F64)
    ys = physode.odeint(system.vector_field(), y0, t, method="dop853", rtol=1e-10, atol=1e-12)
    energy = system.energy(ys)
    rises = energy[1:] - energy[:-1]
    assert rises.max().item() <= 1e-12
    assert (energy[-1] < energy[0] - 1e-3).all()


def test_three_body_starts_are_near_equilateral_with_zero_momentum():
    system = physode.systems.load("three_body")
    y0 = system.sample_initial_states(500, seed=0)
    q = y0[:, :6].reshape(-1, 3, 2)
    v = y0[:, 6:].reshape(-1, 3, 2)
    assert v.sum(1).abs().max().item() < 1e-14  # equal masses: momentum = sum of velocities
    assert q.sum(1).abs().max().item() < 1e-14
    radius = q.norm(dim=-1)
    assert radius.min() >= 0.9 - 1e-12 and radius.max() <= 1.2 + 1e-12
    side = (q[:, 0] - q[:, 1]).norm(dim=-1)
    torch.testing.assert_close(side, radius[:, 0] * math.sqrt(3))
    # Speeds scatter around the circular-orbit speed by at most +-20 % per component.
    circular = torch.sqrt(1 / (math.sqrt(3) * radius[:, 0]))
    ratio = v.norm(dim=-1) / circular[:, None]
    assert 0.75 < ratio.min() < 0.9 and 1.1 < ratio.max() < 1.3
    assert radius[:, 0].max() - radius[:, 0].min() > 0.25


def test_kepler_starts_are_near_circular_counterclockwise_orbits_of_their_own_mu():
    # kepler.toml: radius in [0.5, 1.5], the circular speed sqrt(mu / r) scaled by 1 +- 0.2,
    # the velocity perpendicular to the radius, counterclockwise.
    system = physode.systems.load("kepler")
    p = system.sample_parameters(500, seed=2)
    y0 = system.sample_initial_states(500, seed=2, p=p)
    r, speed = y0[:, :2].norm(dim=-1), y0[:, 2:].norm(dim=-1)
    assert r.min() >= 0.5 - 1e-12 and r.max() <= 1.5 + 1e-12 and r.max() - r.min() > 0.9
    assert (y0[:, :2] * y0[:, 2:]).sum(-1).abs().max().item() < 1e-14
    torch.testing.assert_close(system.invariants(y0, p)["angular_momentum"], r * speed)
    ratio = speed / torch.sqrt(p[:, 0] / r)
    assert 0.8 - 1e-12 <= ratio.min() < 0.82 and 1.18 < ratio.max() <= 1.2 + 1e-12


def _fills(samples: torch.Tensor, low: float, high: float) -> bool:
    """Whether uniform draws (4000 of them) reach both ends of [low, high] and centre on it."""
    width, middle = high - low, (low + high) / 2
    low_end = low <= samples.min() < low + 0.01 * width
    high_end = high - 0.01 * width < samples.max() <= high
    return low_end and high_end and abs(samples.mean().item() - middle) < 0.02 * width


def test_pendulum_parameters_and_starts_fill_their_uniform_ranges():
    # Within range is not enough: draws over half of each range would be within it too.
    system = physode.systems.load("pendulum")
    p = system.sample_parameters(4000, seed=3)
    for k, (name, (low, high)) in enumerate(system.parameter_ranges.items()):
        assert _fills(p[:, k], low, high), name
    y0 = system.sample_initial_states(4000, seed=3)
    for k in range(2):  # theta and theta_dot in [-2, 2]
        assert _fills(y0[:, k], -2.0, 2.0), system.state_names[k]


def test_three_body_aca_starts_scatter_around_the_papers_start_with_std_0_02():
    system = physode.systems.load("three_body_aca")
    offset = system.sample_initial_states(4000, seed=3) - system.initial_state("aca")
    assert offset.mean(0).abs().max().item() < 0.002  # the mean's own error: 0.02 / 63
    torch.testing.assert_close(offset.std(0), torch.full((18,), 0.02, dtype=F64), rtol=0.05, atol=0)


def test_three_body_samples_with_unequal_masses_keep_zero_momentum():
    system = physode.systems.load("three_body")
    p = system.sample_parameters(50, seed=1)
    y0 = system.sample_initial_states(50, seed=1, p=p)
    momentum = system.invariants(y0, p)
    assert momentum["momentum_x"].abs().max() < 1e-14 and momentum["momentum_y"].abs().max() < 1e-14


def test_figure_eight_returns_to_its_start_after_one_period():
    system = physode.systems.load("three_body")
    y0 = system.initial_state("figure_eight")
    t = torch.tensor([0.0, system.characteristic_time], dtype=F64)
    ys = physode.odeint(system.vector_field(), y0, t, method="dop853", rtol=1e-11, atol=1e-12)
    assert (ys[-1] - y0).abs().max().item() < 1e-6


@pytest.mark.parametrize("name, state", [("lotka_volterra", "ude"), ("kepler", "eccentric")])
def test_characteristic_time_is_the_period_of_the_named_orbit(name, state):
    # Both files say characteristic_time is the period of the orbit through this named state.
    system = physode.systems.load(name)
    y0 = system.initial_state(state)
    t = torch.tensor([0.0, system.characteristic_time], dtype=F64)
    ys = physode.odeint(system.vector_field(), y0, t, method="dop853", rtol=1e-12, atol=1e-12)
    assert ((ys[-1] - y0).abs() / (1 + y0.abs())).max().item() < 1e-8


@pytest.mark.parametrize("name", ["kepler", "three_body"])
def test_orbital_starts_are_bound_with_sampled_parameters(name):
    system = physode.systems.load(name)
    p = system.sample_parameters(2000, seed=4)
    energy = system.invariants(system.sample_initial_states(2000, seed=4, p=p), p)["energy"]
    assert energy.max().item() < 0


def test_three_body_aca_has_the_papers_setup():
    system = physode.systems.load("three_body_aca")
    assert system.parameters == {"m1": 1.1, "m2": 1.1, "m3": 0.9, "K1": 0.200484, "K2": 7.23932}
    start = dict(zip(system.state_names, system.initial_state("aca").tolist(), strict=True))
    assert [start[k] for k in ("x1", "y1", "z1", "x2", "y2", "z2", "x3", "y3", "z3")] == [
        0.0, 0.2, 0.0, 0.5, 0.0, 0.5, 0.0, 0.0, 0.5]
    assert [start[k] for k in ("vx1", "vy1", "vz1", "vx2", "vy2", "vz2", "vx3", "vy3", "vz3")] == [
        0.0, 0.1, 0.0, 0.0, 0.0, 0.1, 0.1, 0.0, 0.0]
    # dr/dt = K2 v; dv1/dt = K1 (m2 (r2 - r1)/|r2 - r1|^3 + m3 (r3 - r1)/|r3 - r1|^3).
    d = system.rhs(0.0, system.initial_state())
    r12 = torch.tensor([0.5, -0.2, 0.5], dtype=F64)
    r13 = torch.tensor([0.0, -0.2, 0.5], dtype=F64)
    acc1 = 0.200484 * (1.1 * r12 / r12.norm() ** 3 + 0.9 * r13 / r13.norm() ** 3)
    torch.testing.assert_close(d[9:12], acc1, rtol=1e-14, atol=0)
    torch.testing.assert_close(d[:9], 7.23932 * system.initial_state()[9:])


def test_fitzhugh_nagumo_oscillates_over_its_whole_parameter_box():
    # Its rest point (v, w) solves v - v**3/3 - w + I = 0 = v + a - b*w; it is the only one
    # where b < 1, and it is unstable, so every start is drawn to the limit cycle, exactly where
    # the trace 1 - v**2 - b/tau of the Jacobian is positive (its determinant is then > 0).
    # The file's ranges until 2026-12-07 (I from 0.3) put about one draw in eight past the
    # Hopf bifurcation, at a stable rest point with no oscillation.
    system = physode.systems.load("fitzhugh_nagumo")
    axes = [np.linspace(lo, hi, 5) for lo, hi in system.parameter_ranges.values()]
    traces = []
    for values in itertools.product(*axes):  # every corner, and points between them
        p = dict(zip(system.parameters, values, strict=True))
        assert p["b"] < 1, p
        roots = np.roots([-1 / 3, 0.0, 1 - 1 / p["b"], p["I"] - p["a"] / p["b"]])
        (v,) = roots[np.abs(roots.imag) < 1e-12].real  # the one real root
        traces.append((1 - v**2 - p["b"] / p["tau"], p))
    assert len(traces) == 5**4
    trace, worst = min(traces, key=lambda pair: pair[0])
    assert trace > 0.02, f"a stable rest point (trace {trace:.3f}) at {worst}"


def test_lotka_volterra_and_spiral_use_the_papers_values():
    lv = physode.systems.load("lotka_volterra")
    assert lv.parameters == {"alpha": 1.3, "beta": 0.9, "gamma": 0.8, "delta": 1.8}
    assert lv.initial_state("ude").tolist() == [0.4425, 4.628]
    spiral = physode.systems.load("spiral")
    u = torch.tensor([0.7, -1.1], dtype=F64)
    a = torch.tensor([[-0.1, 2.0], [-2.0, -0.1]], dtype=F64)
    torch.testing.assert_close(spiral.rhs(0.0, u), (u**3) @ a)
    assert spiral.initial_state().tolist() == [2.0, 0.0]


def _gravity(r: torch.Tensor, m: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Newton's accelerations sum_j g m_j (r_j - r_i) / |r_j - r_i|**3 of bodies r (n, 3, d)."""
    d = r[:, None, :, :] - r[:, :, None, :]  # d[:, i, j] = r_j - r_i
    dist = d.norm(dim=-1) + torch.eye(3, dtype=F64)  # the diagonal's d is 0 anyway
    return (g[:, None, None, None] * m[:, None, :, None] * d / dist[..., None] ** 3).sum(2)


def _by_hand(name: str, t: torch.Tensor, y: torch.Tensor, p: dict) -> torch.Tensor:
    """Each catalogue system's dy/dt written out from its textbook form, not from its file."""
    c = y.unbind(-1)
    if name == "harmonic_oscillator":
        return torch.stack([c[1] / p["m"], -p["k"] * c[0]], -1)
    if name == "damped_oscillator":  # m x'' = -k x - c x'
        return torch.stack([c[1], -(p["k"] * c[0] + p["c"] * c[1]) / p["m"]], -1)
    if name == "pendulum":
        return torch.stack([c[1], -p["g"] / p["l"] * torch.sin(c[0])], -1)
    if name == "damped_pendulum":  # APHYNITY: theta'' = -omega0**2 sin(theta) - alpha theta'
        return torch.stack([c[1], -p["omega0"] ** 2 * torch.sin(c[0]) - p["alpha"] * c[1]], -1)
    if name == "double_pendulum":  # M (theta1'', theta2'') = F from Euler-Lagrange
        m1, m2, l1, l2, g = (p[k] for k in ("m1", "m2", "l1", "l2", "g"))
        cos, sin = torch.cos(c[0] - c[1]), torch.sin(c[0] - c[1])
        mass = torch.stack([
            torch.stack([(m1 + m2) * l1**2, m2 * l1 * l2 * cos], -1),
            torch.stack([m2 * l1 * l2 * cos, m2 * l2**2 + 0 * cos], -1)], -2)  # fmt: skip
        force = torch.stack([
            -m2 * l1 * l2 * sin * c[3] ** 2 - (m1 + m2) * g * l1 * torch.sin(c[0]),
            m2 * l1 * l2 * sin * c[2] ** 2 - m2 * g * l2 * torch.sin(c[1])], -1)  # fmt: skip
        return torch.cat([y[:, 2:], torch.linalg.solve(mass, force)], -1)
    if name == "duffing":  # x'' + delta x' + alpha x + beta x**3 = gamma cos(omega t)
        forcing = p["gamma"] * torch.cos(p["omega"] * t)
        v_dot = forcing - p["delta"] * c[1] - p["alpha"] * c[0] - p["beta"] * c[0] ** 3
        return torch.stack([c[1], v_dot], -1)
    if name == "van_der_pol":
        return torch.stack([c[1], p["mu"] * (1 - c[0] ** 2) * c[1] - c[0]], -1)
    if name == "kepler":
        r3 = torch.hypot(c[0], c[1]) ** 3
        return torch.stack([c[2], c[3], -p["mu"] * c[0] / r3, -p["mu"] * c[1] / r3], -1)
    if name == "three_body":
        m = torch.stack([p["m1"], p["m2"], p["m3"]], -1)
        return torch.cat([y[:, 6:], _gravity(y[:, :6].reshape(-1, 3, 2), m, p["G"]).flatten(1)], -1)
    if name == "three_body_aca":  # dr/dt = K2 v, dv/dt = K1 sum_j m_j (r_j - r_i)/|r_j - r_i|**3
        m = torch.stack([p["m1"], p["m2"], p["m3"]], -1)
        acc = _gravity(y[:, :9].reshape(-1, 3, 3), m, p["K1"]).flatten(1)
        return torch.cat([p["K2"][:, None] * y[:, 9:], acc], -1)
    if name == "lotka_volterra":
        x, z = c
        prey = p["alpha"] * x - p["beta"] * x * z
        return torch.stack([prey, p["gamma"] * x * z - p["delta"] * z], -1)
    if name == "fitzhugh_nagumo":
        v, w = c
        return torch.stack([v - v**3 / 3 - w + p["I"], (v + p["a"] - p["b"] * w) / p["tau"]], -1)
    if name == "spiral":  # Chen et al.'s demo: dy/dt = torch.mm(y**3, A), y a row
        a = torch.stack([p["a11"], p["a12"], p["a21"], p["a22"]], -1).reshape(-1, 2, 2)
        return (y[:, None, :] ** 3 @ a)[:, 0]
    raise AssertionError(f"no hand-written equations for {name}")


@pytest.mark.parametrize("name", physode.systems.names())
def test_equations_match_the_textbook_forms_at_sampled_states_and_parameters(name):
    system = physode.systems.load(name)
    p = system.sample_parameters(64, seed=5)
    y = system.sample_initial_states(64, seed=5, p=p)
    t = torch.linspace(0.0, 7.0, 64, dtype=F64)
    expected = _by_hand(name, t, y, dict(zip(system.parameters, p.unbind(-1), strict=True)))
    torch.testing.assert_close(system.rhs(t, y, p), expected, rtol=1e-12, atol=1e-12)


def _energy_by_hand(name: str, y: torch.Tensor, p: dict) -> torch.Tensor | None:
    c = y.unbind(-1)
    if name == "harmonic_oscillator":
        return c[1] ** 2 / (2 * p["m"]) + p["k"] * c[0] ** 2 / 2
    if name == "pendulum":
        return p["m"] * p["l"] ** 2 * c[1] ** 2 / 2 - p["m"] * p["g"] * p["l"] * torch.cos(c[0])
    if name == "double_pendulum":
        m1, m2, l1, l2, g = (p[k] for k in ("m1", "m2", "l1", "l2", "g"))
        kinetic = (m1 + m2) * l1**2 * c[2] ** 2 / 2 + m2 * l2**2 * c[3] ** 2 / 2
        kinetic = kinetic + m2 * l1 * l2 * c[2] * c[3] * torch.cos(c[0] - c[1])
        return kinetic - (m1 + m2) * g * l1 * torch.cos(c[0]) - m2 * g * l2 * torch.cos(c[1])
    if name == "kepler":
        return (c[2] ** 2 + c[3] ** 2) / 2 - p["mu"] / torch.hypot(c[0], c[1])
    if name in ("three_body", "three_body_aca"):
        dim = 2 if name == "three_body" else 3
        r, v = y[:, : 3 * dim].reshape(-1, 3, dim), y[:, 3 * dim :].reshape(-1, 3, dim)
        m = torch.stack([p["m1"], p["m2"], p["m3"]], -1)
        big_g, scale = (p["G"], 1.0) if name == "three_body" else (p["K1"], p["K2"])
        kinetic = scale * (m * (v**2).sum(-1)).sum(-1) / 2
        pairs = [(0, 1), (0, 2), (1, 2)]
        potential = sum(m[:, i] * m[:, j] / (r[:, i] - r[:, j]).norm(dim=-1) for i, j in pairs)
        return kinetic - big_g * potential
    return None  # damped, driven or first-order: no energy is conserved


@pytest.mark.parametrize("name", physode.systems.names())
def test_energy_is_declared_exactly_where_it_is_conserved_and_is_the_textbook_one(name):
    system = physode.systems.load(name)
    p = system.sample_parameters(64, seed=6)
    y = system.sample_initial_states(64, seed=6, p=p)
    expected = _energy_by_hand(name, y, dict(zip(system.parameters, p.unbind(-1), strict=True)))
    assert ("energy" in system.invariant_names) == (expected is not None)
    if expected is not None:
        energy = system.invariants(y, p)["energy"]
        torch.testing.assert_close(energy, expected, rtol=1e-12, atol=1e-12)


def test_user_spec_file_loads_by_path(tmp_path):
    spec = tmp_path / "my_decay.toml"
    spec.write_text(
        'name = "my_decay"\nform = "equations"\ndescription = "decay"\n'
        "[parameters]\nk = { value = 0.5, range = [0.1, 1.0] }\n"
        '[equations]\nx = "-k*x"\n[initial_state_distribution]\nkind = "normal"\nx = [1.0, 0.1]\n',
        encoding="utf-8",
    )
    for handle in (spec, str(spec)):
        system = physode.systems.load(handle)
        assert system.name == "my_decay" and system.parameter_ranges == {"k": (0.1, 1.0)}
    samples = system.sample_initial_states(2000, seed=0)
    assert abs(samples.mean().item() - 1.0) < 0.01 and abs(samples.std().item() - 0.1) < 0.01


def test_the_spec_file_shown_in_the_docs_loads_and_runs(tmp_path):
    # docs/systems.md shows one complete file; it must stay a file a reader can copy.
    docs = (Path(__file__).resolve().parent.parent / "docs" / "systems.md").read_text()
    block = re.search(r'```toml\n(name = "driven_pendulum".*?)```', docs, re.S)
    assert block is not None, "docs/systems.md lost its complete specification example"
    spec = tmp_path / "driven_pendulum.toml"
    spec.write_text(block.group(1))
    system = physode.systems.load(spec)
    y0 = system.sample_initial_states(4, seed=0)
    ys = physode.odeint(system.vector_field(), y0, [0.0, 1.0], rtol=1e-8, atol=1e-8)
    assert ys.shape == (2, 4, 2) and torch.isfinite(ys).all()
    assert system.sample_parameters(3)[:, 0].unique().numel() == 3  # m has a range, g has none
    assert system.sample_parameters(3)[:, 1].unique().numel() == 1


def test_clear_cache_empties_the_derivation_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PHYSODE_CACHE_DIR", str(tmp_path))
    physode.systems.clear_cache()  # also forgets the systems this process already loaded
    physode.systems.load("pendulum")
    assert any(tmp_path.iterdir())
    assert physode.systems.clear_cache() >= 1
    assert physode.systems.clear_cache() == 0


@pytest.mark.parametrize("name", [3, None, Path("pendulum")])
def test_path_refuses_a_name_that_is_not_a_string_naming_it(name):
    # physode.systems.path(3) raised TypeError: 'int' object is not iterable.
    message = f"name must be a catalogue name (a str), got {type(name).__name__} {name!r}"
    with pytest.raises(physode.InvalidArgumentError, match=re.escape(message)) as error:
        physode.systems.path(name)
    assert "valid names: damped_oscillator, " in str(error.value)


def test_an_unknown_name_suggests_the_closest_system():
    with pytest.raises(physode.InvalidArgumentError,
                       match=r"unknown system 'kepelr' \(did you mean 'kepler'\?\); valid names"):
        physode.systems.path("kepelr")


def test_an_unknown_name_with_a_specification_file_of_that_name_here_points_at_the_file(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "duffing_driven.toml").write_text('name = "d"\n')
    with pytest.raises(physode.InvalidArgumentError,
                       match="unknown system 'duffing_driven'; did you mean your file "
                             "duffing_driven.toml\\? Pass it with its suffix; valid names"):
        physode.systems.load("duffing_driven")


_WANTED = (
    "a system is a name from the catalogue (`physode systems` lists them) or a .toml "
    "specification file"
)


@pytest.mark.parametrize(
    ("spelled", "message"),
    [
        # "no specification file at 'missing.toml'", the ./ dropped
        ("./missing.toml", "no such file: './missing.toml'"),
        ("dir/missing.toml", "no such file: 'dir/missing.toml' (there is no folder 'dir')"),
        ("missing.toml", "no such file: 'missing.toml'"),
        ("pendulum.toml",
         "no such file: 'pendulum.toml'; the catalogue's pendulum is loaded by its name: "
         "'pendulum'"),
        # "unknown system 'missing.h5'; valid names: ..."
        ("missing.h5",
         f"no such file: 'missing.h5'; {_WANTED}, and a data set (.h5) is read by `physode "
         "check` and physode.data.load"),
        ("folder/", f"'folder/' is a folder, not a specification file; {_WANTED}"),
    ],
)  # fmt: skip
def test_a_missing_file_given_for_a_system_is_said_to_be_missing(
    tmp_path, monkeypatch, spelled, message
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "folder").mkdir()
    with pytest.raises(physode.InvalidArgumentError) as caught:
        physode.systems.load(spelled)
    assert str(caught.value) == message


def test_a_bare_name_that_is_no_system_lists_the_catalogue(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(physode.InvalidArgumentError) as caught:
        physode.systems.load("missing")
    assert str(caught.value) == (
        f"unknown system 'missing'; valid names: {', '.join(physode.systems.names())} (or pass "
        "the path to your own .toml file)"
    )


@pytest.mark.parametrize("spelled", ["osc.h5", "./osc.h5", "path"])
def test_a_data_set_given_for_a_system_is_named_as_one_with_what_reads_it(
    oscillator_h5, monkeypatch, spelled
):
    # `physode simulate osc.h5 ...` (simulate for check) said "unknown system 'osc.h5'", and a
    # path to it that its first byte was not UTF-8.
    monkeypatch.chdir(oscillator_h5.parent)
    given = oscillator_h5 if spelled == "path" else spelled
    shown = str(oscillator_h5) if spelled == "path" else spelled
    with pytest.raises(physode.InvalidArgumentError) as caught:
        physode.systems.load(given)
    assert str(caught.value) == (
        f"{shown!r} is a physode data set, not a system specification; a system is a name from "
        "the catalogue (`physode systems` lists them) or a .toml specification file. To check "
        f"the data set: `physode check {shown}`; to read it: physode.data.load({shown!r}), "
        "whose .system is the system it holds"
    )


@pytest.mark.parametrize("spelled", ["foreign.h5", "./foreign.h5"])
def test_another_hdf5_file_given_for_a_system_is_named_as_one(tmp_path, monkeypatch, spelled):
    import h5py

    monkeypatch.chdir(tmp_path)
    with h5py.File(tmp_path / "foreign.h5", "w") as f:
        f["x"] = [1.0]
    with pytest.raises(physode.InvalidArgumentError,
                       match=f"^'{spelled}' is an HDF5 file, not a system specification; a "
                             r"system is a name from the catalogue \(`physode systems`"):
        physode.systems.load(spelled)


def test_another_file_given_by_a_name_not_in_the_catalogue_says_how_to_read_it(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text('name = "d"\n')
    with pytest.raises(physode.InvalidArgumentError,
                       match=r"unknown system 'notes.txt'; 'notes.txt' is a file here, but not a "
                             r"specification file ending in .toml \(a specification file under "
                             r"another name is read given as a path: ./notes.txt\); valid names"):
        physode.systems.load("notes.txt")


@pytest.mark.parametrize("spelled", ["a" * 300, "a" * 300 + ".toml"], ids=["name", "path"])
def test_a_name_longer_than_a_file_name_may_be_is_refused_as_unknown(
    tmp_path, monkeypatch, spelled
):
    # pathlib's is_file raised a bare OSError: [Errno 36] File name too long.
    monkeypatch.chdir(tmp_path)
    expected = "unknown system 'aaa" if spelled.isalpha() else "no such file: 'aaa"
    with pytest.raises(physode.InvalidArgumentError, match=f"^{expected}"):
        physode.systems.load(spelled)


@pytest.mark.parametrize("name", ["pendulum", "three_body"])
def test_the_text_of_a_specification_given_for_a_name_or_path_says_so(name):
    # load(system.to_spec()): a bare "OSError: File name too long" with the whole text for
    # three_body, "no such file: '<the whole text>'" for pendulum (whose text holds a '/').
    text = physode.systems.load(name).to_spec()
    first = text.splitlines()[0]
    with pytest.raises(physode.InvalidArgumentError) as caught:
        physode.systems.load(text)
    message = str(caught.value)
    assert message.startswith(
        f"name_or_path is the text of a specification ({len(text.strip().splitlines())} lines, "
        f"the first {first!r}), not a name or a path; "
    )
    assert message.endswith(
        "Write the text to a .toml file and pass its path, or build the system from the text "
        "with physode.symbolic.system_from_spec(text)"
    )
    assert text.splitlines()[2] not in message
