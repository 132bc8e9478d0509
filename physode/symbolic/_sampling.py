"""Initial-state distributions: the ``[initial_state_distribution]`` table of a specification.

Each kind is a small immutable object built from a mapping (the TOML table, or the same dict in
Python). ``check`` lists every problem against the system's state, parameter and named-state names;
``sample`` draws float64 states with an explicit ``torch.Generator``, so a seed fixes the result.

Kinds
-----
``uniform``      every state ``name = [low, high]``.
``normal``       every state ``name = [mean, std]``.
``perturbed``    ``base = "<named initial state>"``, ``std = <float>``: Gaussian noise around it.
``orbit``        one body about a fixed centre: ``position = [x, y]``, ``velocity = [vx, vy]``,
                 ``mu = "<parameter>"``, ``radius = [r0, r1]``, ``velocity_perturbation = 0.1``.
``equilateral``  N equal-ish bodies on a regular polygon in the plane (HNN's three-body starts):
                 ``positions``, ``velocities`` (lists of ``[x, y]`` state names), ``masses``,
                 ``gravitational_constant``, ``radius = [r0, r1]``, ``velocity_perturbation``.

The two orbital kinds start bound: their ``velocity_perturbation`` must stay below
``sqrt(2) - 1`` (see :data:`MAX_VELOCITY_PERTURBATION`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from physode._checks import is_finite_real
from physode._errors import InvalidArgumentError

KINDS = ("uniform", "normal", "perturbed", "orbit", "equilateral")


@dataclass(frozen=True)
class Context:
    """What a distribution may refer to: state, parameter and named-state names."""

    states: tuple[str, ...]
    parameters: tuple[str, ...]
    named_states: Mapping[str, Sequence[float]]


def _is_pair(value) -> bool:
    return (
        isinstance(value, list | tuple)
        and len(value) == 2
        and all(is_finite_real(v) for v in value)
    )


@dataclass(frozen=True)
class PerState:
    """``uniform`` (``[low, high]``) or ``normal`` (``[mean, std]``) per state."""

    kind: str
    table: Mapping[str, Sequence[float]]

    def check(self, ctx: Context) -> list[str]:
        problems = []
        what = "[low, high]" if self.kind == "uniform" else "[mean, std]"
        for name in ctx.states:
            if name not in self.table:
                problems.append(
                    f"initial-state distribution ({self.kind}) has no entry for state {name!r}; "
                    f"add {name} = {what}"
                )
        for name, value in self.table.items():
            if name not in ctx.states:
                problems.append(
                    f"initial-state distribution names {name!r}, which is not a state "
                    f"(states: {', '.join(ctx.states)})"
                )
            elif not _is_pair(value):
                problems.append(
                    f"initial-state distribution entry {name} = {value!r} must be {what}, two "
                    "finite numbers"
                )
            elif self.kind == "uniform" and value[0] > value[1]:
                problems.append(f"initial-state range for {name!r} has low > high: {value!r}")
            elif self.kind == "normal" and value[1] < 0:
                problems.append(f"initial-state std for {name!r} is negative: {value[1]!r}")
        return problems

    def sample(self, n: int, gen: torch.Generator, ctx: Context, p: torch.Tensor) -> torch.Tensor:
        a = torch.tensor([float(self.table[s][0]) for s in ctx.states], dtype=torch.float64)
        b = torch.tensor([float(self.table[s][1]) for s in ctx.states], dtype=torch.float64)
        if self.kind == "uniform":
            return a + (b - a) * torch.rand(n, len(ctx.states), generator=gen, dtype=torch.float64)
        return a + b * torch.randn(n, len(ctx.states), generator=gen, dtype=torch.float64)


@dataclass(frozen=True)
class Perturbed:
    """Gaussian noise of standard deviation ``std`` around a named initial state."""

    base: str
    std: float

    def check(self, ctx: Context) -> list[str]:
        problems = []
        if not isinstance(self.base, str) or self.base not in ctx.named_states:
            known = ", ".join(ctx.named_states) or "none defined"
            problems.append(
                f"initial-state distribution base {self.base!r} is not a named initial state "
                f"(named states: {known})"
            )
        if not is_finite_real(self.std) or self.std < 0:
            problems.append(
                f"initial-state distribution std must be a finite number >= 0, got {self.std!r}"
            )
        return problems

    def sample(self, n: int, gen: torch.Generator, ctx: Context, p: torch.Tensor) -> torch.Tensor:
        base = torch.tensor(ctx.named_states[self.base], dtype=torch.float64)
        noise = torch.randn(n, base.numel(), generator=gen, dtype=torch.float64)
        return base + float(self.std) * noise


def _names_in(value, layout: str) -> list[str] | None:
    """The names in ``value`` if it is laid out as ``layout``, else None.

    ``layout`` is ``"name"`` (one name), ``"pair"`` (a list of two names, ``[x, y]``),
    ``"names"`` (a list of one or more names) or ``"pairs"`` (a list of one or more pairs).

    Examples
    --------
    >>> _names_in([["x1", "y1"], ["x2", "y2"]], "pairs"), _names_in(["x1", "y1"], "pairs")
    (['x1', 'y1', 'x2', 'y2'], None)
    """
    if layout == "name":
        return [value] if isinstance(value, str) else None
    if not isinstance(value, list) or not value:
        return None
    if layout == "pairs":
        pairs = [_names_in(item, "pair") for item in value]
        return None if None in pairs else [name for pair in pairs for name in pair]
    if not all(isinstance(item, str) for item in value):
        return None
    return value if layout == "names" or len(value) == 2 else None


def _check_all_names(kind: str, checks: list[tuple]) -> list[str]:
    """:func:`_check_names` for each ``(key, names, valid, shape, layout)`` of ``checks``."""
    return [problem for check in checks for problem in _check_names(kind, *check)]


def _check_names(
    kind: str, key: str, names, valid: Sequence[str], shape: str, layout: str
) -> list[str]:
    flat = _names_in(names, layout)
    if flat is None:
        return [f"{kind} distribution needs {key} = {shape} (names), got {names!r}"]
    return [
        f"{kind} distribution {key} names {s!r}, which is not one of {', '.join(valid)}"
        for s in flat
        if s not in valid
    ]


def _check_distinct_states(kind: str, *layouts: tuple) -> list[str]:
    """A problem for each state that the ``(names, layout)`` pairs name more than once: its
    draws would overwrite one another (the other component left at zero)."""
    flat = [_names_in(names, layout) for names, layout in layouts]
    if None in flat:
        return []  # malformed: reported by _check_names
    seen: list[str] = []
    repeated: list[str] = []
    for name in (name for names in flat for name in names):
        if name in seen and name not in repeated:
            repeated.append(name)
        seen.append(name)
    return [
        f"{kind} distribution names the state {name!r} more than once; each position and "
        "velocity component needs a state of its own"
        for name in repeated
    ]


#: Largest ``velocity_perturbation`` of the orbital kinds (excluded): a circular orbit has
#: kinetic energy -U/2 (virial theorem), so a speed ``(1 + eps)`` times the circular one gives
#: the energy ``(-U/2) ((1 + eps)**2 - 2)``, which is negative (bound) only for
#: ``eps < sqrt(2) - 1``. At or beyond it some draws escape on parabolic or hyperbolic paths.
MAX_VELOCITY_PERTURBATION = math.sqrt(2.0) - 1.0


def _check_range_and_perturbation(kind: str, radius, perturbation) -> list[str]:
    problems = []
    if not _is_pair(radius) or not 0 < radius[0] <= radius[1]:
        problems.append(
            f"{kind} distribution needs radius = [r_min, r_max] with 0 < r_min <= r_max, "
            f"got {radius!r}"
        )
    if (
        not isinstance(perturbation, int | float)
        or isinstance(perturbation, bool)
        or not 0 <= perturbation < MAX_VELOCITY_PERTURBATION
    ):
        problems.append(
            f"{kind} distribution velocity_perturbation must be in [0, sqrt(2) - 1 = "
            f"{MAX_VELOCITY_PERTURBATION:.4f}), got {perturbation!r}: a speed sqrt(2) times the "
            "circular one or more escapes, so the start would not be bound"
        )
    return problems


def _first_bad(values: torch.Tensor, ok: torch.Tensor) -> tuple[int, float] | None:
    """The first entry whose value fails ``ok`` (NaN fails), as (index, value); None if none."""
    bad = torch.nonzero(~ok).flatten()
    if bad.numel() == 0:
        return None
    row = int(bad[0])
    return row, float(values[row])


def _check_gravity(kind: str, key: str, name: str, speed: str, values: torch.Tensor) -> None:
    """Refuse a negative (or NaN) ``mu`` or ``G``: its circular speed would be NaN."""
    found = _first_bad(values, values >= 0)
    if found is not None:
        _, value = found
        label = name if key == name else f"{key} {name}"
        raise InvalidArgumentError(
            f"the {kind} distribution needs {label} >= 0 for the circular speed "
            f"{speed}; got {name} = {value:g}"
        )


def _uniform(bounds: Sequence[float], n: int, gen: torch.Generator) -> torch.Tensor:
    low, high = float(bounds[0]), float(bounds[1])
    return low + (high - low) * torch.rand(n, generator=gen, dtype=torch.float64)


@dataclass(frozen=True)
class Orbit:
    """Bound orbits about a fixed centre: circular speed ``sqrt(mu / r)`` scaled by ``1 ± eps``.

    ``eps < sqrt(2) - 1`` keeps every speed below the escape speed ``sqrt(2 mu / r)``.
    """

    position: Sequence[str]
    velocity: Sequence[str]
    mu: str
    radius: Sequence[float]
    velocity_perturbation: float

    def check(self, ctx: Context) -> list[str]:
        problems = _check_all_names("orbit", [
            ("position", self.position, ctx.states, "[x, y]", "pair"),
            ("velocity", self.velocity, ctx.states, "[vx, vy]", "pair"),
            ("mu", self.mu, ctx.parameters, '"<parameter>"', "name"),
        ])  # fmt: skip
        problems += _check_distinct_states(
            "orbit", (self.position, "pair"), (self.velocity, "pair")
        )
        return problems + _check_range_and_perturbation(
            "orbit", self.radius, self.velocity_perturbation
        )

    def sample(self, n: int, gen: torch.Generator, ctx: Context, p: torch.Tensor) -> torch.Tensor:
        f64 = torch.float64
        r = _uniform(self.radius, n, gen)
        phi = 2 * math.pi * torch.rand(n, generator=gen, dtype=f64)
        mu = p[:, ctx.parameters.index(self.mu)]
        _check_gravity("orbit", "mu", self.mu, f"sqrt({self.mu} / r)", mu)
        eps = self.velocity_perturbation
        factor = 1 + eps * (2 * torch.rand(n, generator=gen, dtype=f64) - 1)
        speed = torch.sqrt(mu / r) * factor
        y = torch.zeros(n, len(ctx.states), dtype=f64)
        for k, name in enumerate(self.position):
            y[:, ctx.states.index(name)] = r * (torch.cos(phi) if k == 0 else torch.sin(phi))
        for k, name in enumerate(self.velocity):
            y[:, ctx.states.index(name)] = speed * (-torch.sin(phi) if k == 0 else torch.cos(phi))
        return y


@dataclass(frozen=True)
class Equilateral:
    """N bodies on a regular polygon of random radius and orientation, on near-circular orbits.

    The speed of a circular orbit of N equal masses ``m`` on a polygon of radius ``r`` is
    ``sqrt(G m S / r)`` with ``S = (1/4) sum_k csc(pi k / N)``; ``m`` is the mean mass. Each
    velocity component is then scaled by an independent factor in ``1 ± velocity_perturbation``,
    the centre of mass is moved to the origin and its velocity removed: zero total momentum.
    With ``velocity_perturbation < sqrt(2) - 1`` the kinetic energy stays below ``|U|`` (twice
    its circular value ``|U| / 2``), so equal masses start bound; removing the centre-of-mass
    velocity only lowers it.
    """

    positions: Sequence[Sequence[str]]
    velocities: Sequence[Sequence[str]]
    masses: Sequence[str]
    gravitational_constant: str
    radius: Sequence[float]
    velocity_perturbation: float

    def check(self, ctx: Context) -> list[str]:
        problems = _check_all_names("equilateral", [
            ("positions", self.positions, ctx.states, "[[x, y], ...]", "pairs"),
            ("velocities", self.velocities, ctx.states, "[[vx, vy], ...]", "pairs"),
            ("masses", self.masses, ctx.parameters, "[m1, ...]", "names"),
            ("gravitational_constant", self.gravitational_constant, ctx.parameters, '"G"', "name"),
        ])  # fmt: skip
        if not problems:
            n_bodies = len(self.positions)
            if not len(self.velocities) == len(self.masses) == n_bodies >= 2:
                problems.append(
                    "equilateral distribution needs as many [x, y] positions, [vx, vy] velocities "
                    f"and masses (at least two bodies); got {len(self.positions)}, "
                    f"{len(self.velocities)}, {len(self.masses)}"
                )
        problems += _check_distinct_states(
            "equilateral", (self.positions, "pairs"), (self.velocities, "pairs")
        )
        return problems + _check_range_and_perturbation(
            "equilateral", self.radius, self.velocity_perturbation
        )

    def _check_parameters(self, masses: torch.Tensor, big_g: torch.Tensor) -> None:
        """Refuse a negative ``G``, a negative mass or masses of total 0 (no centre of mass)."""
        g = self.gravitational_constant
        _check_gravity("equilateral", "gravitational_constant", g, f"sqrt({g} m S / r)", big_g)
        need = "the equilateral distribution needs masses >= 0 with a positive total; got"
        nb = len(self.masses)
        found = _first_bad(masses.flatten(), (masses >= 0).flatten())
        if found is not None:
            index, value = found
            raise InvalidArgumentError(f"{need} {self.masses[index % nb]} = {value:g}")
        total = masses.sum(-1)
        found = _first_bad(total, total > 0)
        if found is not None:
            _, value = found
            raise InvalidArgumentError(f"{need} {' + '.join(self.masses)} = {value:g}")

    def sample(self, n: int, gen: torch.Generator, ctx: Context, p: torch.Tensor) -> torch.Tensor:
        f64 = torch.float64
        nb = len(self.positions)
        masses = torch.stack([p[:, ctx.parameters.index(m)] for m in self.masses], -1)  # (n, nb)
        big_g = p[:, ctx.parameters.index(self.gravitational_constant)]
        self._check_parameters(masses, big_g)
        r = _uniform(self.radius, n, gen)
        phase = 2 * math.pi * torch.rand(n, generator=gen, dtype=f64)
        s = sum(1 / math.sin(math.pi * k / nb) for k in range(1, nb)) / 4
        speed = torch.sqrt(big_g * masses.mean(-1) * s / r)
        angles = phase[:, None] + 2 * math.pi * torch.arange(nb, dtype=f64) / nb  # (n, nb)
        pos = r[:, None, None] * torch.stack((torch.cos(angles), torch.sin(angles)), -1)
        vel = speed[:, None, None] * torch.stack((-torch.sin(angles), torch.cos(angles)), -1)
        eps = self.velocity_perturbation
        vel = vel * (1 + eps * (2 * torch.rand(n, nb, 2, generator=gen, dtype=f64) - 1))
        w = masses / masses.sum(-1, keepdim=True)
        pos = pos - (w[..., None] * pos).sum(1, keepdim=True)
        vel = vel - (w[..., None] * vel).sum(1, keepdim=True)
        y = torch.zeros(n, len(ctx.states), dtype=f64)
        for b in range(nb):
            for k in range(2):
                y[:, ctx.states.index(self.positions[b][k])] = pos[:, b, k]
                y[:, ctx.states.index(self.velocities[b][k])] = vel[:, b, k]
        return y


Distribution = PerState | Perturbed | Orbit | Equilateral

_FIELDS = {
    "uniform": None,
    "normal": None,
    "perturbed": {"base": None, "std": None},
    "orbit": {"position": None, "velocity": None, "mu": None, "radius": None,
              "velocity_perturbation": 0.0},
    "equilateral": {"positions": None, "velocities": None, "masses": None,
                    "gravitational_constant": None, "radius": None, "velocity_perturbation": 0.0},
}


def distribution_from_table(table: Mapping) -> tuple[Distribution | None, list[str]]:
    """Build a distribution from its table; return it (or None) and the problems found.

    Parameters
    ----------
    table : mapping
        ``{"kind": "uniform", "x": [-1, 1], ...}`` and the like (see the module docstring).

    Returns
    -------
    (distribution or None, list of str)

    Examples
    --------
    >>> dist, problems = distribution_from_table({"kind": "uniform", "x": [-1, 1]})
    >>> problems
    []
    """
    table = dict(table)
    kind = table.pop("kind", "uniform")
    if not isinstance(kind, str) or kind not in _FIELDS:
        return None, [
            f"initial-state distribution kind {kind!r} is unknown; valid kinds: {', '.join(KINDS)}"
        ]
    fields = _FIELDS[kind]
    if fields is None:
        return PerState(kind, table), []
    problems = [
        f"{kind} distribution has unknown key {key!r}; valid keys: kind, {', '.join(fields)}"
        for key in table
        if key not in fields
    ]
    args = {}
    for key, default in fields.items():
        if key in table:
            args[key] = table[key]
        elif default is None:
            problems.append(f"{kind} distribution needs the key {key!r}")
        else:
            args[key] = default
    if problems:
        return None, problems
    cls = {"perturbed": Perturbed, "orbit": Orbit, "equilateral": Equilateral}[kind]
    return cls(**args), []
