"""Poincaré sections and stroboscopic maps: where crossings are placed, which are counted, what
is refused, and the plot."""

from __future__ import annotations

import math

import pytest
import sympy
import torch

import physode
from physode import InvalidArgumentError
from physode.diagnostics import PoincareSection, poincare_section, stroboscopic
from physode.diagnostics import _sections as sections

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def osc():
    return physode.systems.load("harmonic_oscillator")


def _exact_oscillator(t, amplitude, phase, omega=1.0, m=1.0):
    """``q = A cos(w t + phi)``, ``p = m dq/dt``, shape (len(t), n, 2)."""
    angle = omega * t[:, None] + phase
    return torch.stack([amplitude * torch.cos(angle), -m * omega * amplitude * torch.sin(angle)],
                       dim=-1)


def _upward_zeros_of_q(phase, omega, t_end):
    """The times ``q = A cos(w t + phi)`` crosses zero upward in (0, t_end], per trajectory:
    ``w t + phi = 3 pi / 2 (mod 2 pi)``."""
    times = []
    for phi, w in zip(phase.tolist(), omega.tolist(), strict=True):
        first = ((1.5 * math.pi - phi) % (2 * math.pi)) / w
        times.append(torch.arange(first, t_end, 2 * math.pi / w, dtype=torch.float64))
    return times


AMPLITUDE = torch.tensor([1.0, 0.5, 2.0], dtype=torch.float64)
PHASE = torch.tensor([0.0, 0.3, -1.0], dtype=torch.float64)


@pytest.mark.parametrize("points", [41, 81])
def test_oscillator_crossings_are_at_the_exact_times_and_hermite_beats_linear(osc, points):
    t = torch.linspace(0, 20, points, dtype=torch.float64)
    ys = _exact_oscillator(t, AMPLITUDE, PHASE)
    exact = _upward_zeros_of_q(PHASE, torch.ones(3), 20.0)
    errors = {}
    for interpolation in ("hermite", "linear"):
        section = poincare_section(osc, ys, t, surface="q", interpolation=interpolation)
        assert section.counts.tolist() == [len(e) for e in exact] == [3, 3, 3]
        assert section.trajectory.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
        time_error = (section.t - torch.cat(exact)).abs().max()
        # At an upward zero of q the momentum is +A: the whole state is known.
        state = torch.stack([torch.zeros(9, dtype=torch.float64),
                             AMPLITUDE[section.trajectory]], dim=-1)
        state_error = (section.states - state).abs().max()
        errors[interpolation] = float(max(time_error, state_error))
    h = 20 / (points - 1)
    # Hermite: error of order h**4 (h = 0.5: 3e-4 in p); linear: order h**2 (6e-2).
    assert errors["hermite"] < h**4 / 100
    assert errors["linear"] > 50 * errors["hermite"]


def test_the_surface_component_is_on_the_surface_to_rounding(osc):
    t = torch.linspace(0, 20, 41, dtype=torch.float64)
    ys = _exact_oscillator(t, AMPLITUDE, PHASE)
    section = poincare_section(osc, ys, t, surface=("q", 0.25), direction=0)
    assert section["q"].sub(0.25).abs().max() < 1e-14
    assert section.surface == "q = 0.25, both ways"


def test_direction_picks_upward_downward_or_both(osc):
    t = torch.linspace(0, 20, 81, dtype=torch.float64)
    ys = _exact_oscillator(t, AMPLITUDE[:1], PHASE[:1])
    up = poincare_section(osc, ys, t, surface="q", direction=1)
    down = poincare_section(osc, ys, t, surface="q", direction=-1)
    both = poincare_section(osc, ys, t, surface="q", direction=0)
    # From q = 1 at t = 0, q falls through 0 at pi/2 + 2 pi k and rises at 3 pi/2 + 2 pi k.
    torch.testing.assert_close(up.t / math.pi, torch.tensor([1.5, 3.5, 5.5], dtype=torch.float64))
    torch.testing.assert_close(down.t / math.pi,
                               torch.tensor([0.5, 2.5, 4.5], dtype=torch.float64))
    assert bool((up["p"] > 0).all()) and bool((down["p"] < 0).all())
    torch.testing.assert_close(both.t, torch.sort(torch.cat([up.t, down.t])).values)


@pytest.mark.parametrize("direction", [1, -1])
def test_a_sample_exactly_on_the_surface_is_one_crossing_at_that_sample(direction):
    t = torch.tensor([0.0, 1.0, 2.0, 3.0], dtype=torch.float64)
    ys = direction * torch.tensor([[-1.0], [0.0], [1.0], [2.0]], dtype=torch.float64)
    for both in (False, True):
        section = poincare_section(None, ys, t, surface=lambda t, y: y[..., 0],
                                   direction=0 if both else direction)
        assert section.t.tolist() == [1.0] and section.states.tolist() == [[0.0]]


@pytest.mark.parametrize("direction", [1, -1, 0])
def test_a_trajectory_starting_on_the_surface_does_not_count_its_start(direction):
    t = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    # Row 0 leaves the surface downward, row 1 upward; each crosses it once more, at t = 2.5.
    ys = torch.tensor([[0.0, -1.0, -1.0, 1.0, 1.0], [0.0, 1.0, 1.0, -1.0, -1.0]],
                      dtype=torch.float64).T.unsqueeze(-1)  # fmt: skip
    section = poincare_section(None, ys, t, surface=lambda t, y: y[..., 0], direction=direction)
    expected = {1: [(0, 2.5)], -1: [(1, 2.5)], 0: [(0, 2.5), (1, 2.5)]}[direction]
    assert list(zip(section.trajectory.tolist(), section.t.tolist())) == expected


def test_a_callable_surface_without_a_system_interpolates_linearly(osc):
    t = torch.linspace(0, 20, 201, dtype=torch.float64)
    ys = _exact_oscillator(t, AMPLITUDE, PHASE)

    def q(t, y):
        return y[..., 0]

    linear = poincare_section(None, ys, t, surface=q)
    assert linear.interpolation == "linear" and linear.state_names == ["y[0]", "y[1]"]
    same = poincare_section(osc, ys, t, surface="q", interpolation="linear")
    torch.testing.assert_close(linear.t, same.t, rtol=0, atol=1e-14)
    torch.testing.assert_close(linear.states, same.states, rtol=0, atol=1e-14)


@pytest.mark.parametrize("interpolation", ["hermite", "linear"])
def test_a_surface_function_that_fits_only_the_samples_shape_is_told_how_it_is_called(
    osc, interpolation
):
    # g(t, y) is also called on points of the cubic and on the crossings, whose y has other
    # leading shapes: y[:, :, 0] worked on the samples, then failed with "too many indices" or
    # a size mismatch alone; a g that answered (n, 1) there gave states of shape (9, 9, 2).
    t = torch.linspace(0, 20, 81, dtype=torch.float64)
    ys = _exact_oscillator(t, AMPLITUDE, PHASE)
    with pytest.raises((IndexError, InvalidArgumentError)) as error:
        poincare_section(osc, ys, t, surface=lambda t, y: y[:, :, 0],
                         interpolation=interpolation)  # fmt: skip
    said = str(error.value) + "".join(getattr(error.value, "__notes__", []))
    assert "index a component as y[..., i]" in said

    def samples_only(t, y):
        return y[..., 0] if y.ndim == 3 else y[..., :1]

    with pytest.raises(InvalidArgumentError, match=r"must return one value per state, shape "
                       r"y.shape\[:-1\]"):  # fmt: skip
        poincare_section(osc, ys, t, surface=samples_only, interpolation=interpolation)


def test_a_nonlinear_callable_surface_is_solved_on_the_hermite_interpolant(osc):
    # The circle q**2 + p**2 = r**2 with r inside the amplitude is never crossed; the line
    # q + p = 0 (a function of the state and t) is crossed at w t + phi = pi / 4 (mod pi).
    t = torch.linspace(0, 20, 41, dtype=torch.float64)
    ys = _exact_oscillator(t, AMPLITUDE, PHASE)
    never = poincare_section(osc, ys, t, surface=lambda t, y: y[..., 0] ** 2 + y[..., 1] ** 2
                             - 0.1)
    assert len(never) == 0 and never.counts.tolist() == [0, 0, 0]
    section = poincare_section(osc, ys, t, surface=lambda t, y: (y[..., 0] + y[..., 1]) * (1 + t),
                               direction=0)
    angle = (section.t + PHASE[section.trajectory] - 0.25 * math.pi) / math.pi
    assert (angle - angle.round()).abs().max() < 1e-5
    assert (section["q"] + section["p"]).abs().max() < 1e-13


def _level_crossings(amplitude, phase, value, t_end):
    """Where ``q = A cos(t + phi)`` equals ``value`` in (0, t_end], per trajectory: the times
    (``t + phi = -+ arccos(value / A) + 2 pi k``, upward then downward) and the directions."""
    crossings = []
    for a, phi in zip(amplitude.tolist(), phase.tolist(), strict=True):
        mine = []
        if abs(value) < a:
            alpha = math.acos(value / a)
            for k in range(-1, int(t_end / (2 * math.pi)) + 2):
                for sign in (1, -1):
                    when = 2 * math.pi * k - sign * alpha - phi
                    if 0 < when <= t_end:
                        mine.append((when, sign))
        crossings.append(sorted(mine))
    return crossings


def _level(value):
    def g(t, y):
        return y[..., 0] - value

    return g


@pytest.mark.parametrize("kind", ["name", "callable"])
def test_a_crossing_there_and_back_between_two_samples_is_found_on_the_hermite_cubic(osc, kind):
    # q = A cos(t + phi) sampled every 0.5 against q = 0.99: trajectory 0 (A = 1) rises above
    # 0.99 for 0.28 around each maximum, often between two samples; trajectory 1 (A = 0.5)
    # never reaches it; trajectory 2 (A = 2) crosses with samples on both sides.
    h, value = 0.5, 0.99
    t = torch.arange(0, 20 + h / 2, h, dtype=torch.float64)
    ys = _exact_oscillator(t, AMPLITUDE, PHASE)
    surface = ("q", value) if kind == "name" else _level(value)
    exact = _level_crossings(AMPLITUDE, PHASE, value, float(t[-1]))
    samples_see = ((ys[:-1, 0, 0] < value) != (ys[1:, 0, 0] < value)).sum()
    assert len(exact[0]) == 7 and samples_see == 3  # two pairs lie between samples
    section = poincare_section(osc, ys, t, surface=surface, direction=0)
    assert section.counts.tolist() == [len(e) for e in exact] == [7, 0, 6]
    assert section.trajectory.tolist() == [0] * 7 + [2] * 6
    for (times, states), mine, a in zip(section.per_trajectory(), exact, AMPLITUDE.tolist(),
                                        strict=True):
        if mine:
            assert bool((times[1:] > times[:-1]).all())
            # The cubic's error in q, A h**4 / 384, moves a crossing by that over |dq/dt|.
            error = (times - torch.tensor([w for w, _ in mine], dtype=torch.float64)).abs()
            assert bool((error < a * h**4 / 384 / states[:, 1].abs()).all())
            # Upward crossings have p = dq/dt > 0, downward p < 0: they alternate.
            assert torch.sign(states[:, 1]).tolist() == [float(d) for _, d in mine]
    assert section["q"].sub(value).abs().max() < 1e-14
    for direction in (1, -1):
        one_way = poincare_section(osc, ys, t, surface=surface, direction=direction)
        kept = [w for e in exact for w, d in e if d == direction]
        torch.testing.assert_close(one_way.t, torch.tensor(kept, dtype=torch.float64),
                                   rtol=0, atol=2e-3)
    # Linear interpolation sees only what the samples show.
    linear = poincare_section(osc, ys, t, surface=surface, direction=0, interpolation="linear")
    assert linear.counts.tolist() == [3, 0, 6]


@pytest.mark.parametrize("h", [0.1, 0.5])
@pytest.mark.parametrize("kind", ["name", "callable"])
def test_no_crossing_is_found_where_the_trajectory_stays_just_below_the_surface(osc, h, kind):
    # The cubic's error (h**4 / 384 in q) is far below the gap of 1e-5 (h = 0.1) or 1e-2 (0.5).
    amplitude = torch.linspace(0.5, 2.0, 16, dtype=torch.float64)
    phase = torch.linspace(0.0, 2 * math.pi, 16, dtype=torch.float64)
    t = torch.arange(0, 30 + h / 2, h, dtype=torch.float64)
    gap = {0.1: 1e-5, 0.5: 1e-2}[h]
    ys = _exact_oscillator(t, amplitude, phase) / (amplitude[:, None] * (1 + gap))
    # Each trajectory is now q = cos(t + phi) / (1 + gap): under 1 by that much at its maxima.
    surface = ("q", 1.0) if kind == "name" else _level(1.0)
    section = poincare_section(osc, ys, t, surface=surface, direction=0)
    assert len(section) == 0 and section.counts.tolist() == [0] * 16


def test_three_crossings_in_one_interval_are_each_found_in_order(osc):
    # With h = 1, the cubic Hermite interpolant of q (whose derivative is p, m = 1) from
    # q = -0.057375, p = 0.5775 to q = 0.070125, p = 0.6775 is (s - 0.15)(s - 0.45)(s - 0.85).
    ys = torch.tensor([[-0.057375, 0.5775], [0.070125, 0.6775]], dtype=torch.float64)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    for surface in ("q", _level(0.0)):
        section = poincare_section(osc, ys, t, surface=surface, direction=0)
        torch.testing.assert_close(section.t, torch.tensor([0.15, 0.45, 0.85], dtype=torch.float64))
        up = poincare_section(osc, ys, t, surface=surface, direction=1)
        torch.testing.assert_close(up.t, torch.tensor([0.15, 0.85], dtype=torch.float64))
        down = poincare_section(osc, ys, t, surface=surface, direction=-1)
        torch.testing.assert_close(down.t, torch.tensor([0.45], dtype=torch.float64))


@pytest.mark.parametrize("direction", [1, 0])
def test_a_start_on_the_surface_that_dips_below_and_back_counts_only_the_return(osc, direction):
    # The cubic from q = 0, p = -0.5 to q = 0.5, p = 1.5 over h = 1 is s (s - 0.5): it leaves
    # the surface downward at the start (not counted) and crosses it upward at s = 0.5.
    ys = torch.tensor([[0.0, -0.5], [0.5, 1.5]], dtype=torch.float64)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    section = poincare_section(osc, ys, t, surface="q", direction=direction)
    torch.testing.assert_close(section.t, torch.tensor([0.5], dtype=torch.float64))
    assert len(poincare_section(osc, ys, t, surface="q", direction=-1)) == 0


@pytest.mark.parametrize("kind", ["name", "callable"])
def test_a_trajectory_that_turns_into_nan_crosses_nothing_there(osc, kind):
    # Trajectory 0's first pair between samples is in [6.0, 6.5], around t = 2 pi, and
    # trajectory 1 crosses upward at 5.36, in [5.0, 5.5]: as a failed solve in a data set,
    # each holds NaN from that interval's end on, and only their crossings before it remain.
    t = torch.arange(0, 20.25, 0.5, dtype=torch.float64)
    ys = _exact_oscillator(t, AMPLITUDE[:2], PHASE[:2] * 0)
    ys[13:, 0] = float("nan")
    ys[11:, 1] = float("nan")
    for value in (0.3, 0.99):
        surface = ("q", value) if kind == "name" else _level(value)
        section = poincare_section(osc, ys, t, surface=surface, direction=0)
        exact = _level_crossings(AMPLITUDE[:2], PHASE[:2] * 0, value, 20.0)
        kept = [[w for w, _ in exact[0] if w < 6.0], [w for w, _ in exact[1] if w < 5.0]]
        assert section.counts.tolist() == [len(k) for k in kept]
        assert bool(torch.isfinite(section.states).all())
        torch.testing.assert_close(section.t, torch.tensor(sum(kept, []), dtype=torch.float64),
                                   rtol=0, atol=2e-3)


class _CountingSystem:
    """A system whose ``rhs`` notes how many states each of its calls gets."""

    def __init__(self, system):
        self._system, self.sizes = system, []

    def __getattr__(self, name):
        return getattr(self._system, name)

    def rhs(self, t, y, p=None):
        self.sizes.append(y.shape[:-1].numel())
        return self._system.rhs(t, y, p)


@pytest.mark.parametrize("kind", ["name", "callable"])
def test_the_search_between_samples_takes_the_intervals_in_blocks_of_bounded_size(
    osc, kind, monkeypatch
):
    # 40 intervals of 4 trajectories, 2 components and 3 interior points: 32 states an
    # interval. Blocks of 128 states are 4 intervals, 5 samples of the 4 trajectories.
    h = 0.5
    t = torch.arange(0, 20 + h / 2, h, dtype=torch.float64)
    ys = _exact_oscillator(t, torch.cat([AMPLITUDE, AMPLITUDE[:1]]), torch.cat([PHASE, PHASE[:1]]))
    # Trajectory 3 starts on the surface going down (no crossing), and is on it again going
    # down at t = 2.0, the first sample of the second block (a crossing).
    ys[:6, 3] = torch.tensor([[0.0, -1.0], [-0.3, 0.5], [0.1, 0.5], [0.3, -0.5], [0.0, -1.0],
                              [-0.3, -0.5]], dtype=torch.float64)  # fmt: skip
    calls = []

    def g(t, y):
        calls.append(tuple(y.shape))
        return y[..., 0]

    surface = "q" if kind == "name" else g
    monkeypatch.setattr(sections, "_BLOCK_STATES", 2**40, raising=False)
    whole = poincare_section(osc, ys, t, surface=surface, direction=-1)
    monkeypatch.setattr(sections, "_BLOCK_STATES", 128, raising=False)
    counting, calls[:] = _CountingSystem(osc), []
    blocks = poincare_section(counting, ys, t, surface=surface, direction=-1)
    assert counting.sizes == [5 * 4] * 10  # system.rhs at each block's samples, once
    if kind == "callable":
        # The samples once, then the cubic at the interior points block by block, then the
        # Illinois search on the crossings.
        assert calls[0] == (41, 4, 2) and calls[1:11] == [(3, 4, 4, 2)] * 10
        assert all(len(shape) == 2 for shape in calls[11:])
    for name in ("t", "states", "trajectory"):
        assert torch.equal(getattr(blocks, name), getattr(whole, name))
    t3 = blocks.t[blocks.trajectory == 3]
    assert 0.0 not in t3.tolist() and t3[0].item() == 2.0
    assert blocks.counts.tolist() == [3, 3, 3, 3]  # down through q = 0 at pi / 2 + 2 pi k


@pytest.mark.parametrize(
    ("name", "surface", "axes"),
    [("double_pendulum", "theta1", ("theta2", "theta2_dot")),
     ("double_pendulum", "theta2_dot", ("theta1", "theta1_dot")),
     ("kepler", "y", ("x", "px")),
     ("harmonic_oscillator", "q", ("p", "q")),
     ("lotka_volterra", "x", ("y", "x"))],
)
def test_the_plot_draws_a_free_coordinate_and_its_velocity_by_default(name, surface, axes):
    system = physode.systems.load(name)
    ys = torch.zeros(2, system.n_state, dtype=torch.float64)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    assert poincare_section(system, ys, t, surface=surface).plot_axes == axes
    duffing = physode.systems.load("duffing")
    assert stroboscopic(duffing, ys[:, :2], t, period=1.0).plot_axes == ("x", "v")


def test_double_pendulum_section_points_lie_on_the_energy_surface():
    pendulum = physode.systems.load("double_pendulum")
    y0 = torch.tensor([[1.0, 0.5, 0, 0], [1.2, -1.0, 0, 0], [0.5, 1.5, 0, 0]],
                      dtype=torch.float64)
    t = torch.linspace(0, 10, 2001, dtype=torch.float64)
    ys = physode.odeint(pendulum.vector_field(), y0, t, method="dop853", rtol=1e-10, atol=1e-10)
    energy0 = pendulum.invariants(ys[0])["energy"]
    along = (pendulum.invariants(ys)["energy"] - energy0).abs().max() / energy0.abs().min()
    section = poincare_section(pendulum, ys, t, surface="theta1", direction=0)
    assert section.counts.min() >= 5
    energy = pendulum.invariants(section.states)["energy"]
    drift = ((energy - energy0[section.trajectory]) / energy0[section.trajectory]).abs().max()
    # The solve keeps the energy to 1e-10 at the samples; between them the cubic's error (of
    # order h**4 |y''''|, h = 0.005) is 2e-6 where the lower arm whips round, linear's 2e-3.
    assert along < 1e-9 and drift < 1e-5
    linear = poincare_section(pendulum, ys, t, surface="theta1", direction=0,
                              interpolation="linear")
    energy = pendulum.invariants(linear.states)["energy"]
    assert ((energy - energy0[linear.trajectory]) / energy0[linear.trajectory]).abs().max() > 1e-4


def test_a_data_set_gives_each_trajectory_its_own_parameters(tmp_path):
    path = tmp_path / "osc.h5"
    physode.data.simulate("harmonic_oscillator", trajectories=4, t_end=20.0, points=81, out=path,
                          seed=2, params="sample", quiet=True)  # fmt: skip
    data = physode.data.load(path)
    section = poincare_section(data.system, data, surface="q")
    m, k = (torch.from_numpy(data.params[:, i]) for i in range(2))
    omega = torch.sqrt(k / m)
    y0 = torch.from_numpy(data.states[:, 0])
    amplitude = torch.sqrt(y0[:, 0] ** 2 + (y0[:, 1] / (m * omega)) ** 2)
    phase = torch.atan2(-y0[:, 1] / (m * omega), y0[:, 0])
    exact = _upward_zeros_of_q(phase, omega, 20.0)
    assert section.counts.tolist() == [len(e) for e in exact]
    torch.testing.assert_close(section.t, torch.cat(exact), rtol=0, atol=1e-4)
    torch.testing.assert_close(section["p"], (m * omega * amplitude)[section.trajectory],
                               rtol=0, atol=1e-3)
    # The derivatives at the defaults (m = k = 1) instead of each row's are far off.
    default = poincare_section(data.system, data, surface="q", p=torch.tensor([1.0, 1.0]))
    assert (default.t - torch.cat(exact)).abs().max() > 1e-3


@pytest.mark.parametrize("interpolation", ["hermite", "linear"])
def test_sections_keep_the_dtype_of_trajectories_and_read_a_data_set_in_float64(
    osc, tmp_path, interpolation
):
    # As docs/diagnostics.md says: a data set's states are read in float64, as conservation
    # reads them, whatever their stored dtype; tensors keep theirs.
    t = torch.linspace(0, 20, 81, dtype=torch.float64)
    ys = _exact_oscillator(t, AMPLITUDE, PHASE).float()
    for section in (poincare_section(osc, ys, t.float(), surface="q", interpolation=interpolation),
                    stroboscopic(osc, ys, t.float(), period=2.0, interpolation=interpolation)):
        assert section.t.dtype == section.states.dtype == torch.float32
        assert len(section) > 0
    path = tmp_path / "osc.h5"
    physode.data.simulate("harmonic_oscillator", trajectories=2, t_end=10.0, points=41, out=path,
                          dtype="float32", quiet=True)
    data = physode.data.load(path)
    assert data.states.dtype.name == "float32"
    for section in (poincare_section(data.system, data, surface="q", interpolation=interpolation),
                    stroboscopic(data.system, data, period=2.0, interpolation=interpolation)):
        assert section.t.dtype == section.states.dtype == torch.float64


def test_a_data_set_of_a_system_without_parameters_gives_its_sections(tmp_path):
    # A data set stores params of shape (N, 0) for a system without parameters (Henon-Heiles,
    # a spring with k = m = 1 written in); expanding them to the trajectories' rows with
    # reshape(-1, 0) raised "cannot reshape tensor of 0 elements" in both functions.
    q, p = sympy.symbols("q p")
    spring = physode.System.from_hamiltonian(p**2 / 2 + q**2 / 2, coordinates=[q], momenta=[p])
    assert spring.n_params == 0
    path = tmp_path / "spring.h5"
    physode.data.simulate(spring, trajectories=3, t_end=20.0, points=81, out=path, seed=4,
                          quiet=True)  # fmt: skip
    data = physode.data.load(path)
    assert data.params.shape == (3, 0)
    y0 = torch.from_numpy(data.states[:, 0])
    amplitude = y0.norm(dim=-1)
    phase = torch.atan2(-y0[:, 1], y0[:, 0])
    exact = _upward_zeros_of_q(phase, torch.ones(3), 20.0)
    section = poincare_section(data.system, data, surface="q")
    assert section.counts.tolist() == [len(e) for e in exact]
    torch.testing.assert_close(section.t, torch.cat(exact), rtol=0, atol=1e-4)
    torch.testing.assert_close(section["p"], amplitude[section.trajectory], rtol=0, atol=1e-4)
    strobe = stroboscopic(data.system, data, period=2.0)
    assert strobe.counts.tolist() == [11, 11, 11]
    exact = _exact_oscillator(strobe.t[:11], amplitude[:1], phase[:1])[:, 0]
    torch.testing.assert_close(strobe.states[:11], exact, rtol=0, atol=1e-4)


def test_a_data_set_with_a_failed_trajectory_crosses_only_where_it_has_states(osc):
    t = torch.linspace(0, 20, 81, dtype=torch.float64)
    ys = _exact_oscillator(t, AMPLITUDE, PHASE)
    ys[40:, 1] = float("nan")  # as a data set stores a solve that stopped at t = 10
    section = poincare_section(osc, ys, t, surface="q")
    assert section.counts.tolist() == [3, 1, 3]
    assert bool(torch.isfinite(section.states).all()) and float(section.t[3]) < 10


def test_parameters_carried_in_the_state_are_read_and_left_out(osc):
    t = torch.linspace(0, 20, 81, dtype=torch.float64)
    omega = torch.tensor([1.0, 2.0], dtype=torch.float64)  # k = 1 and 4, m = 1
    ys = _exact_oscillator(t, AMPLITUDE[:2], PHASE[:2], omega)
    p = torch.tensor([[1.0, 1.0], [1.0, 4.0]], dtype=torch.float64)
    carried = torch.cat([ys, p.expand(len(t), 2, 2)], dim=-1)
    section = poincare_section(osc, carried, t, surface="q")
    assert section.states.shape[-1] == 2
    exact = _upward_zeros_of_q(PHASE[:2], omega, 20.0)
    torch.testing.assert_close(section.t, torch.cat(exact), rtol=0, atol=1e-4)
    given = poincare_section(osc, ys, t, surface="q", p=p)
    torch.testing.assert_close(given.t, section.t, rtol=0, atol=0)


def test_parameters_that_broadcast_over_the_batch_shape_give_each_trajectory_its_row(osc):
    # Trajectories (3, 4) with p (3, 1, n_params): the four of row i share row i's k. This
    # was accepted by the check of p, then broke on expanding (3, 2) to 12 rows.
    t = torch.linspace(0, 20, 161, dtype=torch.float64)
    k = torch.tensor([1.0, 4.0, 0.25], dtype=torch.float64)
    p = torch.stack([torch.ones(3, dtype=torch.float64), k], dim=-1).reshape(3, 1, 2)
    omega = k.sqrt().repeat_interleave(4)
    phase = torch.linspace(-1.0, 1.0, 12, dtype=torch.float64)
    ys = _exact_oscillator(t, torch.ones(12, dtype=torch.float64), phase, omega)
    ys = ys.reshape(len(t), 3, 4, 2)
    section = poincare_section(osc, ys, t, surface="q", p=p)
    torch.testing.assert_close(section.t, torch.cat(_upward_zeros_of_q(phase, omega, 20.0)),
                               rtol=0, atol=1e-5)
    full = poincare_section(osc, ys, t, surface="q", p=p.expand(3, 4, 2))
    torch.testing.assert_close(section.states, full.states, rtol=0, atol=0)
    strobe = stroboscopic(osc, ys, t, period=1.3, phase=0.1, p=p)
    expected = stroboscopic(osc, ys, t, period=1.3, phase=0.1, p=p.expand(3, 4, 2))
    torch.testing.assert_close(strobe.states, expected.states, rtol=0, atol=0)
    exact = _exact_oscillator(strobe.t[:15], torch.ones(1, dtype=torch.float64), phase[:1],
                              omega[:1])[:, 0]
    torch.testing.assert_close(strobe.states[:15], exact, rtol=0, atol=1e-5)


def test_per_trajectory_returns_each_trajectorys_points_and_empty_ones(osc):
    t = torch.linspace(0, 20, 81, dtype=torch.float64)
    ys = _exact_oscillator(t, torch.tensor([1.0, 1.0]).double(), torch.tensor([0.0, 0.0]).double())
    ys[:, 1, 0] += 5.0  # never reaches q = 0
    section = poincare_section(osc, ys, t, surface="q")
    (t0, s0), (t1, s1) = section.per_trajectory()
    assert t0.shape == (3,) and s0.shape == (3, 2) and t1.shape == (0,) and s1.shape == (0, 2)


def test_stroboscopic_samples_once_per_period_at_the_solved_states():
    duffing = physode.systems.load("duffing")
    period = 2 * math.pi / duffing.parameters["omega"]
    t = torch.linspace(0, 20 * period, 801, dtype=torch.float64)
    y0 = duffing.sample_initial_states(3, seed=0)
    field = duffing.vector_field()
    ys = physode.odeint(field, y0, t, method="dop853", rtol=1e-12, atol=1e-12)
    # At phase 0 the sampling times are output times: the samples themselves come back.
    strobe = stroboscopic(duffing, ys, t, period=period)
    assert strobe.counts.tolist() == [21, 21, 21] and strobe.surface == "t = 0 + 5.23599 k"
    torch.testing.assert_close(strobe.states, ys[::40].transpose(0, 1).reshape(-1, 2),
                               rtol=0, atol=1e-12)
    # Between output times: against a solve to those times (error h**4 with h = T / 40).
    when = period / 3 + period * torch.arange(20, dtype=torch.float64)
    exact = physode.odeint(field, y0, torch.cat([t[:1], when]), method="dop853", rtol=1e-12,
                           atol=1e-12)[1:].transpose(0, 1).reshape(-1, 2)
    hermite = stroboscopic(duffing, ys, t, period=period, phase=period / 3)
    linear = stroboscopic(duffing, ys, t, period=period, phase=period / 3,
                          interpolation="linear")
    torch.testing.assert_close(hermite.t, when.repeat(3))
    errors = [float((s.states - exact).abs().max()) for s in (hermite, linear)]
    assert errors[0] < 5e-5 and errors[1] > 100 * errors[0]  # 2.1e-5 and 5.3e-3


def test_stroboscopic_takes_one_period_per_trajectory_and_a_negative_phase():
    duffing = physode.systems.load("duffing")
    t = torch.linspace(1.0, 11.0, 101, dtype=torch.float64)
    ys = torch.zeros(101, 2, 2, dtype=torch.float64)
    strobe = stroboscopic(duffing, ys, t, period=torch.tensor([2.0, 3.0]), phase=-0.5)
    # From t0 = 1: 2.5, 4.5, ..., 10.5 for T = 2, and 3.5, 6.5, 9.5 for T = 3.
    assert strobe.counts.tolist() == [5, 3] and strobe.surface == "t = 0.5 + T_i k"
    torch.testing.assert_close(
        strobe.t, torch.tensor([2.5, 4.5, 6.5, 8.5, 10.5, 3.5, 6.5, 9.5], dtype=torch.float64))


@pytest.mark.parametrize(
    ("surface", "words"),
    [("theta", "'theta' is not a state component of harmonic_oscillator; state components: q, p"),
     (("x", 1.0), "'x' is not a state component"),
     (3, "a state component's name"),
     (("q", "high"), "a pair (name, value)"),
     (("q", 10**400), "a pair (name, value)")],  # infinite as a float: was an OverflowError
)
def test_a_bad_surface_is_refused_with_the_state_names(osc, surface, words):
    t = torch.linspace(0, 1, 3, dtype=torch.float64)
    with pytest.raises(InvalidArgumentError) as error:
        poincare_section(osc, torch.zeros(3, 2, dtype=torch.float64), t, surface=surface)
    assert words in str(error.value)


@pytest.mark.parametrize(
    ("arguments", "words"),
    [({"direction": 2}, "direction=2 must be 1"),
     ({"direction": True}, "direction=True"),
     ({"interpolation": "spline"}, "choose one of 'hermite', 'linear'"),
     ({"t": None}, "t is required"),
     ({"t": torch.tensor([0.0, 2.0, 1.0])}, "increasing times"),
     ({"ys": torch.zeros(3, 5, dtype=torch.float64)}, "harmonic_oscillator has 2 (q, p)"),
     ({"p": torch.ones(3)}, "p has shape (3,)"),
     ({"surface": lambda t, y: y}, "must return one value per state"),
     ({"system": None}, "needs a system")],
)
def test_bad_arguments_are_refused_naming_the_value_and_the_choices(osc, arguments, words):
    call = {"system": osc, "ys": torch.zeros(3, 2, dtype=torch.float64),
            "t": torch.linspace(0, 1, 3, dtype=torch.float64), "surface": "q", **arguments}
    with pytest.raises(InvalidArgumentError) as error:
        poincare_section(call.pop("system"), call.pop("ys"), call.pop("t"), **call)
    assert words in str(error.value)


@pytest.mark.parametrize(
    ("t", "words"),
    [(torch.linspace(20, 0, 201, dtype=torch.float64),
      "got 201 times [20, 19.9, 19.8, 19.7, 19.6, ...], decreasing (a backward solve: pass "
      "ys.flip(0) and t.flip(0))"),
     (torch.cat([torch.linspace(0, 4.9, 50), torch.linspace(4.9, 19.9, 151)]).double(),
      "got 201 times [0, 0.1, 0.2, 0.3, 0.4, ...], which stop increasing at index 50 "
      "(t[49] = 4.9, t[50] = 4.9)")],
)
def test_times_that_do_not_increase_are_shown_by_their_start_and_where_they_stop(osc, t, words):
    # The whole tensor was printed, 201 values over 26 lines.
    with pytest.raises(InvalidArgumentError) as error:
        poincare_section(osc, torch.zeros(201, 2, dtype=torch.float64), t, surface="q")
    message = str(error.value)
    assert message == f"t must hold at least 2 increasing times, one per row of ys; {words}"


@pytest.mark.parametrize(
    ("arguments", "words"),
    [({"period": 0.0}, "period=0.0 must be a time > 0"),
     ({"period": torch.tensor([1.0, 2.0, 3.0])}, "one per trajectory (shape (2,))"),
     ({"period": 1.0, "phase": math.nan}, "phase=nan must be a finite number"),
     # Integers too large for a float raised a bare OverflowError.
     ({"period": 10**400}, "must be a time > 0"),
     ({"period": 1.0, "phase": 10**400}, "must be a finite number"),
     ({"period": 1.0, "interpolation": "hermite", "system": None}, "needs the system's")],
)
def test_stroboscopic_refuses_a_bad_period_or_phase(osc, arguments, words):
    call = {"system": osc, **arguments}
    with pytest.raises(InvalidArgumentError) as error:
        stroboscopic(call.pop("system"), torch.zeros(3, 2, 2, dtype=torch.float64),
                     torch.linspace(0, 1, 3, dtype=torch.float64), **call)
    assert words in str(error.value)


def test_a_component_is_read_by_name_and_an_unknown_name_is_refused(osc):
    t = torch.linspace(0, 20, 41, dtype=torch.float64)
    section = poincare_section(osc, _exact_oscillator(t, AMPLITUDE, PHASE), t, surface="q")
    torch.testing.assert_close(section["p"], section.states[:, 1], rtol=0, atol=0)
    with pytest.raises(InvalidArgumentError) as error:
        section["x"]
    # It said "a state component 'x' is not a state component".
    assert str(error.value) == (
        "section['x']: 'x' is not a state component; state components: q, p (or their indices "
        "0 to 1)"
    )


def test_plot_writes_an_image_and_checks_its_axes(osc, tmp_path):
    t = torch.linspace(0, 20, 41, dtype=torch.float64)
    section = poincare_section(osc, _exact_oscillator(t, AMPLITUDE, PHASE), t, surface="q")
    assert isinstance(section, PoincareSection)
    path = section.plot(tmp_path / "section.png")
    assert path == tmp_path / "section.png" and path.stat().st_size > 0
    assert section.plot(tmp_path / "by_index.svg", x=1, y="q", max_trajectories=2).exists()
    with pytest.raises(InvalidArgumentError, match="x='v' is not a state component"):
        section.plot(tmp_path / "bad.png", x="v")
    with pytest.raises(InvalidArgumentError, match="max_trajectories=0"):
        section.plot(tmp_path / "bad.png", max_trajectories=0)
    with pytest.raises(InvalidArgumentError, match="image format"):
        section.plot(tmp_path / "section.txt")
    assert not (tmp_path / "bad.png").exists()


def test_a_rotating_pendulum_crosses_every_multiple_of_two_pi_with_the_docs_surface():
    # The catalogue keeps angles unwrapped: "theta" is theta = 0 only; sin(theta / 2) is zero
    # at every 2 pi k (docs/diagnostics.md).
    pendulum = physode.systems.load("pendulum")
    t = torch.linspace(0, 10, 401, dtype=torch.float64)
    y0 = torch.tensor([0.5, 10.0], dtype=torch.float64)  # over the top, round and round
    ys = physode.odeint(pendulum.vector_field(), y0, t, method="dop853", rtol=1e-10, atol=1e-10)
    turns = int(ys[-1, 0] // (2 * math.pi))
    assert turns >= 5 and len(poincare_section(pendulum, ys, t, surface="theta")) == 0
    section = poincare_section(pendulum, ys, t, surface=lambda t, y: torch.sin(y[..., 0] / 2),
                               direction=0)  # fmt: skip
    kept = section["theta"][section["theta_dot"] > 0] / (2 * math.pi)
    torch.testing.assert_close(kept, torch.arange(1, turns + 1, dtype=torch.float64))


@pytest.mark.parametrize("interpolation", ["hermite", "linear"])
def test_a_strobe_time_on_the_last_sample_before_a_nan_tail_keeps_that_sample(osc, interpolation):
    # A solve that stopped after t = 10 (NaN from the next sample on, as a data set stores it):
    # the strobe time 10 is that last sample. The interpolant on [10, 10.25] weighed the NaN
    # end by 0, which is NaN, and the point was dropped as if it had no state.
    t = torch.linspace(0, 20, 81, dtype=torch.float64)
    ys = _exact_oscillator(t, AMPLITUDE, PHASE)
    ys[41:, 1] = float("nan")
    strobe = stroboscopic(osc, ys, t, period=2.0, interpolation=interpolation)
    assert strobe.counts.tolist() == [11, 6, 11]
    mine = strobe.trajectory == 1
    torch.testing.assert_close(strobe.t[mine], 2.0 * torch.arange(6, dtype=torch.float64))
    torch.testing.assert_close(strobe.states[mine], ys[0:41:8, 1], rtol=0, atol=0)


@pytest.mark.parametrize("interpolation", ["hermite", "linear"])
def test_a_surface_function_answering_in_float64_keeps_float32_trajectories_dtype(
    osc, interpolation
):
    # docs/diagnostics.md: section.t is in the dtype of ys. A function surface that answered in
    # float64 for float32 states made the crossing times float64 (and the states float32).
    t = torch.linspace(0, 20, 81)
    ys = _exact_oscillator(t.double(), AMPLITUDE, PHASE).float()

    def q(t, y):
        return y[..., 0].double()

    section = poincare_section(osc, ys, t, surface=q, interpolation=interpolation)
    assert section.t.dtype == section.states.dtype == torch.float32
    named = poincare_section(osc, ys, t, surface="q", interpolation=interpolation)
    torch.testing.assert_close(section.t, named.t, rtol=0, atol=1e-5)
