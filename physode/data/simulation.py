"""Simulating data sets from a system: reproducible per trajectory, written safely, resumable."""

from __future__ import annotations

import functools
import importlib.metadata
import json
import math
import numbers
import os
import platform
import re
import shlex
import shutil
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, NamedTuple

import h5py
import numpy as np
import torch
from tqdm import tqdm

from physode._checks import is_finite_real, is_int
from physode._defaults import MAX_STEPS
from physode._errors import DataFormatError, InvalidArgumentError, PhysodeError, PhysodeWarning
from physode._files import lock_exclusively, write_atomically
from physode._terminal import progress_wanted
from physode._threads import too_many_threads, torch_threads
from physode.data import _parallel
from physode.data._store import (
    FLAG_DRIFT,
    FLAG_NOT_FINITE,
    FLAG_SOLVER_FAILED,
    FORMAT_NAME,
    FORMAT_VERSION,
    SPLITS,
    Chunk,
    first_few,
    parts_folder,
    read_chunk,
    refuse_if_locked,
    sha256_text,
    write_chunk,
    write_store,
)
from physode.data.checking import (
    counted,
    drift_per_trajectory,
    finite_points,
    largest_drift,
    solver_failures,
)
from physode.data.stored import load
from physode.solvers.control import tolerances_over_state
from physode.solvers.tableau import TABLEAUS
from physode.symbolic._spec import read_spec_text

__all__ = ["DriftCount", "FailureCount", "SimulationResult", "simulate"]

# How the solver steps a chunk of trajectories: "per-sample" gives each row its own step size, so a
# whole chunk is one batched solve whose rows do not depend on each other. With "shared" one step
# size would serve a whole batch, so each trajectory is then solved alone to keep it independent.
STEP_CONTROL = "per-sample"

METHODS = ("heun", "bosh3", "dopri5", "tsit5", "dop853")
PARAM_MODES = ("default", "sample")
DTYPES = ("float64", "float32")

# SeedSequence spawn keys: stream, then an index. A trajectory's randomness depends only on
# (seed, stream, trajectory index), never on the chunk it is simulated in.
_STREAM_STATE, _STREAM_PARAMS, _STREAM_NOISE, _STREAM_SPLIT = 0, 1, 2, 3
# Initial states and parameters are drawn for fixed blocks of this many consecutive trajectory
# indices, one seed per block (a draw costs about the same for 1 row as for 64).
_SAMPLE_BLOCK = 64
# How far the split fractions may sum from 1: fractions given in float32 are off by about 1e-8.
_SPLIT_SUM_TOLERANCE = 1e-6


class FailureCount(NamedTuple):
    """The solver failures of one cause: how many, and the earliest and latest time reached
    (NaN when the file does not store the times)."""

    n: int
    t_first: float
    t_last: float


class DriftCount(NamedTuple):
    """The trajectories flagged for the drift of one invariant: how many, and the largest
    drift among them (NaN when one's drift is not a number)."""

    n: int
    worst: float


@dataclass(frozen=True)
class SimulationResult:
    """What :func:`simulate` did.

    Attributes
    ----------
    path : pathlib.Path
        The data set written.
    n_trajectories : int
        Trajectories stored (all of them, flagged ones included).
    n_failed : int
        Trajectories whose solve stopped early (``flags`` bit 1; their later states are NaN).
    n_drifted : int
        Trajectories whose invariants drifted beyond the threshold (``flags`` bit 2).
    n_resumed_chunks : int
        Chunks taken from an interrupted run instead of simulated again.
    seconds : float
        Wall time of this call.
    written : bool
        False when ``resume=True`` found ``path`` already complete with the same settings, so
        nothing was simulated or written.
    failures : dict of str to FailureCount
        The failed trajectories by cause (``"step-size underflow"``, ``"max_steps used up"``,
        ``"non-finite state"``), most common first, each with the range of times reached.
    drifts : dict of str to DriftCount
        Per invariant that flagged any trajectory, how many it flagged and its worst drift.
        A trajectory may drift in several invariants, so these may add up to more than
        ``n_drifted``.
    n_not_finite : int
        Trajectories flagged because their stored values are not finite (beyond float32's
        range with ``dtype="float32"``; flag bit 4).
    """

    path: Path
    n_trajectories: int
    n_failed: int
    n_drifted: int
    n_resumed_chunks: int
    seconds: float
    written: bool = True
    failures: dict[str, FailureCount] = field(default_factory=dict)
    drifts: dict[str, DriftCount] = field(default_factory=dict)
    n_not_finite: int = 0

    def summary(self) -> str:
        """One line for a terminal, then a line for the solver failures by cause and one for
        the drift flags by invariant, where there are any.

        Examples
        --------
        >>> SimulationResult(Path("a.h5"), 8, 0, 0, 0, 1.5).summary()
        'wrote a.h5: 8 trajectories in 1.5 s (0 solver failures, 0 invariant drift flags)'
        >>> SimulationResult(Path("a.h5"), 8, 0, 0, 0, 0.1, written=False).summary()
        'a.h5 already holds this run: 8 trajectories, nothing written (0 solver failures, ...)'
        >>> SimulationResult(Path("a.h5"), 8, 0, 0, 0, 1.5, n_not_finite=2).summary()
        'wrote a.h5: 8 trajectories in 1.5 s (..., 2 stored as inf or NaN (flagged))'
        >>> print(SimulationResult(Path("a.h5"), 8, 3, 2, 0, 1.5,
        ...     failures={"step-size underflow": FailureCount(3, 0.52, 1.9)},
        ...     drifts={"energy": DriftCount(2, 3e-5), "momentum": DriftCount(1, 2e-6)}).summary())
        wrote a.h5: 8 trajectories in 1.5 s (3 solver failures, 2 invariant drift flags)
          solver failures: step-size underflow 3 (t reached 0.52 to 1.9)
          drift flags: energy 2 (worst 3.0e-05), momentum 1 (worst 2.0e-06)
        """
        counts = (
            f"{counted(self.n_failed, 'solver failure', 'solver failures')}, "
            f"{counted(self.n_drifted, 'invariant drift flag', 'invariant drift flags')}"
        )
        if self.n_not_finite:
            counts += f", {self.n_not_finite} stored as inf or NaN (flagged)"
        trajectories = counted(self.n_trajectories, "trajectory", "trajectories")
        if not self.written:
            first = f"{self.path} already holds this run: {trajectories}, nothing written"
            first += f" ({counts})"
        else:
            resumed = self.n_resumed_chunks
            resumed = f", {counted(resumed, 'chunk', 'chunks')} resumed" if resumed else ""
            first = f"wrote {self.path}: {trajectories} in {self.seconds:.1f} s ({counts}{resumed})"
        return "\n".join([first, *self._details()])

    def _details(self) -> list[str]:
        """The lines under the first that say the causes of failures and drift flags."""
        lines = []
        if self.failures:
            causes = []
            for cause, (n, t_first, t_last) in self.failures.items():
                if math.isnan(t_first):
                    times = ""
                elif t_first == t_last:
                    times = f" (t reached {t_first:.4g})"
                else:
                    times = f" (t reached {t_first:.4g} to {t_last:.4g})"
                causes.append(f"{cause} {n}{times}")
            lines.append("  solver failures: " + ", ".join(causes))
        if self.drifts:
            drifts = [f"{name} {n} (worst {worst:.1e})" for name, (n, worst) in self.drifts.items()]
            lines.append("  drift flags: " + ", ".join(drifts))
        return lines


def _system_problem(system: Any) -> str | None:
    """What is wrong with the ``system`` argument, checked before anything is loaded."""
    if isinstance(system, str | os.PathLike) or (
        hasattr(system, "spec_text") and hasattr(system, "rhs")
    ):
        return None
    return (
        f"system={system!r} is neither a catalogue name, a path to a specification file, "
        "nor a physode System; see `physode systems` for the catalogue"
    )


def _load_system(system: Any):
    if isinstance(system, str | os.PathLike):
        import physode.systems

        return physode.systems.load(system)
    return system


def _validate(
    *,
    trajectories,
    t_end,
    points,
    seed,
    method,
    rtol,
    atol,
    params,
    noise,
    split,
    dtype,
    chunk_size,
    drift_threshold,
    max_steps,
    max_step,
    threads,
) -> list[str]:
    def positive_int(name, value, least=1):
        if not is_int(value, least):
            problems.append(f"{name}={value!r} must be an integer >= {least}")

    def positive_real(name, value):
        if not is_finite_real(value) or value <= 0:
            problems.append(f"{name}={value!r} must be a finite number > 0")

    problems: list[str] = []
    positive_int("trajectories", trajectories)
    positive_int("points", points, least=2)
    positive_int("chunk_size", chunk_size)
    positive_int("max_steps", max_steps)
    positive_int("seed", seed, least=0)
    if threads is not None:
        positive_int("threads", threads)
        too_many = too_many_threads(threads)
        if too_many:
            problems.append(f"threads={threads!r} {too_many}")
    if is_int(seed) and seed >= 2**64:
        problems.append(f"seed={seed!r} must be below 2**64 (the file stores it as 64 bits)")
    for name, value in (("t_end", t_end), ("rtol", rtol), ("atol", atol)):
        positive_real(name, value)
    positive_real("drift_threshold", drift_threshold)
    if max_step is not None:
        positive_real("max_step", max_step)
    if not problems:
        lands = method in METHODS and TABLEAUS[method].dense is None
        problems += _too_few_steps(points, t_end, max_steps, max_step, lands)
    if method not in METHODS:
        problems.append(
            f"method={method!r} is not an adaptive method; choose one of {list(METHODS)}"
        )
    if not (isinstance(params, str) and params in PARAM_MODES) and not _names_list(params):
        problems.append(
            f"params={params!r}; choose one of {list(PARAM_MODES)}, or a list of the parameter "
            "names to draw (the others keep their defaults)"
        )
    if not isinstance(dtype, str) or dtype not in DTYPES:  # np.dtype("float32") == "float32"
        problems.append(f"dtype={dtype!r}; choose one of {list(DTYPES)}")
    if isinstance(noise, bool) or not isinstance(noise, numbers.Real) or not noise >= 0:
        problems.append(f"noise={noise!r} must be a standard deviation >= 0")
    elif not is_finite_real(noise):
        problems.append(f"noise={noise!r} must be finite")
    fractions = _fractions(split)
    if (
        fractions is None
        or any(not math.isfinite(x) or x < 0 for x in fractions)
        or abs(sum(fractions) - 1) > _SPLIT_SUM_TOLERANCE
    ):
        problems.append(
            f"split={split!r} must be three fractions >= 0 (train, val, test) that sum to 1, "
            "e.g. (0.8, 0.1, 0.1)"
        )
    return problems


def _too_few_steps(
    points: int, t_end: float, max_steps: int, max_step: float | None, lands: bool = True
) -> list[str]:
    """The problem of a ``max_steps`` too small for any trajectory to reach ``t_end``.

    With a method without dense output (``lands``: heun) a per-sample solve lands a step on
    every output time after the first, so it takes at least ``points - 1`` steps; with
    ``max_step``, every method takes at least ``t_end / max_step`` (a step may be stretched
    onto an output time by 1e-9 of its length; the margin here is wider). Below that every
    trajectory would fail, after the whole run has been computed: 10**6 points under the
    default max_steps ran for minutes to store every trajectory as failed at t_end / 10.

    >>> _too_few_steps(7, 3.0, 6, None), _too_few_steps(7, 3.0, 6, 0.5)
    ([], [])
    >>> _too_few_steps(8, 3.0, 6, None, lands=False)  # dense output: steps past output times
    []
    >>> print(*_too_few_steps(8, 3.0, 6, None))  # doctest: +NORMALIZE_WHITESPACE
    max_steps=6 is fewer than the 7 steps that points=8 take at least (the solve lands a step
    on each output time after the first), so every trajectory would fail; give max_steps >= 7
    (--max-steps), or fewer points
    >>> print(*_too_few_steps(7, 3.0, 6, 0.25))  # doctest: +NORMALIZE_WHITESPACE
    max_steps=6 is fewer than the 12 steps of at most max_step=0.25 that t_end=3.0 takes, so
    every trajectory would fail; give max_steps >= 12 (--max-steps), a longer max_step or a
    shorter t_end
    """
    if lands and max_steps < points - 1:
        return [
            f"max_steps={max_steps!r} is fewer than the {points - 1} steps that "
            f"points={points!r} take at least (the solve lands a step on each output time "
            "after the first), so every trajectory would fail; give max_steps >= "
            f"{points - 1} (--max-steps), or fewer points"
        ]
    if max_step is None:
        return []
    least = float(t_end) / float(max_step) / (1 + 1e-6)  # inf beyond the float range
    if not least > max_steps:
        return []
    needed = f"{math.ceil(least)}" if least < 1e15 else f"{least:.3g}"
    return [
        f"max_steps={max_steps!r} is fewer than the {needed} steps of at most "
        f"max_step={max_step!r} that t_end={t_end!r} takes, so every trajectory would fail; "
        f"give max_steps >= {needed} (--max-steps), a longer max_step or a shorter t_end"
    ]


def _output_times(t_end: float, points: int) -> torch.Tensor:
    """The output times of a run: ``linspace(0, t_end, points)`` in float64."""
    return torch.linspace(0.0, t_end, points, dtype=torch.float64)


def _colliding_times(t_end: float, points: int) -> str | None:
    """The problem of a ``t_end`` so small that some output times are equal, or ``None``.

    The solver refuses such times, and did so only once the run had started.

    >>> print(_colliding_times(1e-323, 5))  # doctest: +NORMALIZE_WHITESPACE
    t_end=1e-323 is too small for points=5: the output times linspace(0, t_end, points) are
    not all distinct in float64 (2 distinct of 5); give a larger t_end or fewer points
    >>> _colliding_times(1e-300, 5) is None
    True
    """
    t = _output_times(float(t_end), points)
    if bool((t[1:] > t[:-1]).all()):
        return None
    distinct = int(torch.unique(t).numel())
    return (
        f"t_end={t_end!r} is too small for points={points!r}: the output times "
        f"linspace(0, t_end, points) are not all distinct in float64 ({distinct} distinct of "
        f"{points}); give a larger t_end or fewer points"
    )


# The share of the machine's physical memory one chunk may need: the rest is the system's, the
# other processes' and the writing of the data set's. Above it simulate refuses the chunk_size.
_MEMORY_SHARE = 0.5


def _physical_memory() -> int | None:
    """This machine's physical memory in bytes, or ``None`` where the system does not say."""
    try:
        size = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows), or no such name
        return None
    return size if size > 0 else None


def _chunk_bytes(system, run: dict, rows: int) -> int:
    """About how many bytes simulating ``rows`` trajectories of ``run`` as one chunk holds at
    once: float64 arrays of (rows, points) values each, for the solve's output (the state, and
    the parameters where they are sampled), the states, their derivatives and the parameters
    on every point, the times on every point, the noisy states, and each invariant's values
    and drift. A floor: the solver's stages and the rows the rhs evaluates at once come on
    top."""
    n_state, n_params = len(system.state_names), len(system.parameters)
    solved = n_state + (n_params if run["params"] != "default" else 0)
    noisy = n_state if run["noise"] > 0 else 0
    per_point = solved + 2 * n_state + n_params + 1 + noisy + 2 * len(system.invariant_names)
    return 8 * rows * run["points"] * per_point


def _too_much_memory(system, run: dict, executor: Any = None) -> str | None:
    """The problem of chunks that need more than ``_MEMORY_SHARE`` of this machine's memory,
    where the operating system would kill the run without a message; ``None`` where they fit
    (or the machine does not say its memory). With ``executor``, the chunks its workers on this
    machine simulate at once (a process or thread pool's, not a Dask cluster's) count together.
    """
    memory = _physical_memory()
    if memory is None:
        return None
    rows = min(run["chunk_size"], run["trajectories"])
    workers = _parallel.workers_on_this_machine(executor) if executor is not None else None
    chunks = math.ceil(run["trajectories"] / run["chunk_size"])
    at_once = min(workers, chunks) if workers is not None else 1
    needed = at_once * _chunk_bytes(system, run, rows)
    share = _MEMORY_SHARE * memory
    if needed <= share:
        return None
    # With every worker busy: a smaller chunk_size makes more chunks, up to one per worker.
    fits = int(share // ((workers or 1) * _chunk_bytes(system, run, 1)))
    advice = (
        f"chunk_size={fits} (--chunk-size {fits}) fits"
        if fits >= 1
        else "even one trajectory does not fit: give fewer points"
        + (" or fewer workers" if workers is not None and workers > 1 else "")
    )
    what = f"one chunk of {rows} trajectories with points={run['points']} needs at least "
    if at_once > 1:
        what = (
            f"the executor's {workers} workers on this machine simulate {at_once} chunks at "
            f"once, each of {rows} trajectories with points={run['points']}: together at least "
        )
    return (
        f"{what}{needed / 2**30:.3g} GiB, more than {_MEMORY_SHARE:.0%} of this machine's "
        f"{memory / 2**30:.3g} GiB of memory, and the system would kill the run without a "
        f"message; {advice} (the data do not depend on chunk_size, but a resume needs the "
        "chunk_size the run started with)"
    )


def _fractions(split: Any) -> list[float] | None:
    """``split`` as three floats, or ``None`` unless it is a sequence of three numbers (text and
    booleans are not numbers here)."""
    if isinstance(split, str | bytes):
        return None
    try:
        values = list(split)
    except TypeError:
        return None
    if len(values) != 3 or any(isinstance(x, str | bytes | bool | np.bool_) for x in values):
        return None
    try:
        return [float(x) for x in values]
    except (TypeError, ValueError, OverflowError):
        return None


def split_counts(n: int, fractions: Sequence[float]) -> list[int]:
    """How many of ``n`` trajectories each split gets: largest remainders, and at least one for
    every positive fraction.

    Each split first gets ``floor(fraction * n)`` (the fractions scaled to sum to exactly 1);
    the trajectories left over go one each to the splits with the largest remainders, ties to the
    earlier split. Then, if ``n`` is at least the number of positive fractions, each split with a
    positive fraction that got none takes one from the split with the most (ties: the one most
    above its share ``fraction * n``, then the later split). So the counts sum to ``n``, a
    fraction of 0 gets no trajectory, a positive one gets at least one whenever ``n`` allows,
    and a split that neither gave nor took one is within one of its share. With fewer
    trajectories than positive fractions some of those splits stay empty: the largest
    remainders decide which (``simulate`` warns). The arithmetic is exact (on the fractions as
    the binary numbers they are), so equal fractions tie.

    Examples
    --------
    >>> split_counts(5, (0.5, 0.5, 0.0)), split_counts(5, (0.3, 0.3, 0.4))
    ([3, 2, 0], [2, 1, 2])
    >>> split_counts(5, (0.8, 0.1, 0.1)), split_counts(1024, (0.8, 0.1, 0.1))
    ([3, 1, 1], [819, 103, 102])
    >>> split_counts(2, (0.8, 0.1, 0.1)), split_counts(2, (0.9, 0.1))
    ([2, 0, 0], [1, 1])
    """
    exact = [Fraction(float(f)) for f in fractions]
    total = sum(exact)
    quotas = [f * n / total for f in exact]
    counts = [math.floor(q) for q in quotas]
    # The remainders sum to the number left over, each below 1, so there are always enough
    # splits with a positive fraction to take one each.
    eligible = [k for k, f in enumerate(exact) if f > 0]
    eligible.sort(key=lambda k: (counts[k] - quotas[k], k))
    for k in eligible[: n - sum(counts)]:
        counts[k] += 1
    if n >= len(eligible):
        # While a positive split is empty, the other positive splits hold all n >= len(eligible)
        # trajectories between them, so the fullest holds at least two and can give one.
        for k in sorted(eligible):
            if counts[k] == 0:
                giver = max(eligible, key=lambda j: (counts[j], counts[j] - quotas[j], j))
                counts[giver] -= 1
                counts[k] += 1
    return counts


def _warn_of_empty_splits(n: int, split: Sequence[float]) -> None:
    """Warn when ``n`` is too small to give every split with a positive fraction a trajectory."""
    counts = split_counts(n, split)
    empty = [name for name, f, count in zip(SPLITS, split, counts) if f > 0 and count == 0]
    if not empty:
        return
    fractions = ",".join(f"{float(f):g}" for f in split)
    shares = ", ".join(f"{name} {count}" for name, count in zip(SPLITS, counts))
    verb = "gets" if len(empty) == 1 else "get"
    warnings.warn(
        f"trajectories={n} is fewer than the {sum(f > 0 for f in split)} positive fractions of "
        f"split={fractions}, so {' and '.join(empty)} {verb} no trajectory ({shares}); simulate "
        "more trajectories, or give a split you want empty the fraction 0",
        PhysodeWarning,
        stacklevel=3,
    )


def split_indices(n: int, fractions: Sequence[float], seed: int) -> dict[str, np.ndarray]:
    """Assign ``n`` trajectories to train/val/test at random, reproducibly for ``seed``.

    The counts are :func:`split_counts`; which trajectories go where is a random permutation.

    Examples
    --------
    >>> parts = split_indices(10, (0.6, 0.2, 0.2), seed=0)
    >>> [len(parts[name]) for name in ("train", "val", "test")]
    [6, 2, 2]
    >>> sorted(np.concatenate(list(parts.values())).tolist()) == list(range(10))
    True
    """
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_STREAM_SPLIT,)))
    order = rng.permutation(n)
    cuts = np.cumsum([0, *split_counts(n, fractions)])
    return {name: np.sort(order[cuts[k] : cuts[k + 1]]) for k, name in enumerate(SPLITS)}


def _derived_seed(seed: int, stream: int, index: int) -> int:
    sequence = np.random.SeedSequence(seed, spawn_key=(stream, index))
    return int(sequence.generate_state(1, np.uint64)[0] >> np.uint64(1))


def _blocks(sample, seed: int, stream: int, block_params=None) -> Callable[[int], torch.Tensor]:
    """Block ``k`` of draws from ``sample(n, seed=...)``: ``_SAMPLE_BLOCK`` rows for trajectories
    ``k * _SAMPLE_BLOCK`` onwards, drawn whole with the seed of ``(seed, stream, k)``, so that
    row ``i`` depends on ``(seed, stream, i)`` alone. With ``block_params``, ``sample`` also gets
    ``p=block_params(k)``, the parameters of the block's rows (initial states whose distribution
    depends on the masses)."""

    def block(k: int) -> torch.Tensor:
        options = {} if block_params is None else {"p": block_params(k)}
        return sample(_SAMPLE_BLOCK, seed=_derived_seed(seed, stream, k), **options)

    return block


def _names_list(params: Any) -> bool:
    """Whether ``params`` is a non-empty list or tuple of strings (names to sample)."""
    return (
        isinstance(params, list | tuple)
        and len(params) > 0
        and all(isinstance(name, str) for name in params)
    )


def _sampled_names(system, params):
    """``params`` as the run stores it: a mode, or the names to sample in the system's order
    (``"sample"`` when they are all of them)."""
    names = list(system.parameters)
    ranges = system.parameter_ranges
    if params == "sample" and names and all(ranges[n][0] == ranges[n][1] for n in names):
        # As a list naming such parameters is: every draw would give every default.
        raise InvalidArgumentError(
            f"params='sample': no parameter of {system.name!r} has a range ({names} have "
            "none), so every draw would be the defaults; give params='default', or a range "
            f"to those to vary in the specification file ({names[0]} = {{ value = "
            f"{system.parameters[names[0]]:g}, range = [low, high] }})"
        )
    if isinstance(params, str):
        return params
    unknown = [name for name in params if name not in names]
    if unknown:
        raise InvalidArgumentError(
            f"params={list(params)!r}: {unknown} are not parameters of {system.name!r}; its "
            f"parameters are {names}"
        )
    fixed = [name for name in names if name in params and ranges[name][0] == ranges[name][1]]
    if fixed:  # drawn from a range of one value, each would keep its default: surely a slip
        ranged = [name for name in names if ranges[name][0] != ranges[name][1]]
        value = system.parameters[fixed[0]]
        raise InvalidArgumentError(
            f"params={list(params)!r}: {fixed} {'has' if len(fixed) == 1 else 'have'} no range "
            f"in {system.name!r}, so every draw would be the default value; the parameters "
            f"with a range are {ranged}. To vary {fixed[0]!r}, give it one in the specification "
            f"file ({fixed[0]} = {{ value = {value:g}, range = [low, high] }})"
        )
    chosen = [name for name in names if name in params]
    return "sample" if chosen == names else chosen


def _kept_defaults(system, params, block: Callable[[int], torch.Tensor]):
    """``block`` with the parameters that ``params`` does not sample set to their defaults.

    ``params`` is ``"sample"`` (every parameter drawn) or the names of those drawn. Every
    parameter is drawn all the same, so a sampled one takes the value that ``"sample"`` would
    give it with the same seed."""
    if params == "sample":
        return block
    names = list(system.parameters)
    fixed = [j for j, name in enumerate(names) if name not in params]
    defaults = torch.tensor([system.parameters[names[j]] for j in fixed], dtype=torch.float64)

    def kept(k: int) -> torch.Tensor:
        rows = block(k).clone()
        rows[:, fixed] = defaults.to(rows.dtype)
        return rows

    return kept


def _draw_rows(block: Callable[[int], torch.Tensor], start: int, stop: int) -> torch.Tensor:
    """Rows ``start .. stop - 1`` of the draws that :func:`_blocks` makes, block by block."""
    first, last = start // _SAMPLE_BLOCK, (stop - 1) // _SAMPLE_BLOCK
    blocks = [block(k) for k in range(first, last + 1)]
    offset = start - first * _SAMPLE_BLOCK
    return torch.cat(blocks)[offset : offset + stop - start].to(torch.float64)


# Torch evaluates element-wise functions such as pow with a vectorised kernel over whole SIMD
# blocks and a scalar one for the remainder, which can differ in the last bit, and it splits
# large tensors between threads. Evaluating rows in slabs whose length is a multiple of
# _ROW_ALIGN and below torch's parallel grain (and handing the solver batches of such lengths)
# keeps every row on the same code path whatever batch it sits in, so a trajectory's data are
# the same to the bit whatever the chunk size. Systems whose code is exactly rounded throughout
# (System.exactly_rounded) give every row the same bits on any path and skip the padding.
_ROW_ALIGN = 16
_ROW_SLAB = 8192


def _alignment(system) -> int:
    return 1 if system.exactly_rounded else _ROW_ALIGN


def _rowwise(fn, *rows: torch.Tensor, align: int = _ROW_ALIGN):
    """``fn(*rows)`` for tensors sharing a leading row dimension, evaluated slab by slab, each
    padded to a multiple of ``align`` rows."""
    n = rows[0].shape[0]
    if n <= _ROW_SLAB and n % align == 0:  # one slab as it is: the solver's usual call
        return fn(*rows)
    outputs = []
    for start in range(0, n, _ROW_SLAB):
        part = [r[start : start + _ROW_SLAB] for r in rows]
        m = part[0].shape[0]
        pad = -m % align
        if pad:  # repeat the last row; its copies are dropped below
            part = [torch.cat([r, r[-1:].expand(pad, *r.shape[1:])]) for r in part]
        outputs.append(fn(*part))
        if isinstance(outputs[-1], dict):
            outputs[-1] = {k: v[:m] for k, v in outputs[-1].items()}
        else:
            outputs[-1] = outputs[-1][:m]
    if len(outputs) == 1:  # the usual case: no copy on the solver's hot path
        return outputs[0]
    if isinstance(outputs[0], dict):
        return {k: torch.cat([o[k] for o in outputs]) for k in outputs[0]}
    return torch.cat(outputs)


class _ParameterField:
    """dy/dt of the system at one parameter vector shared by every trajectory."""

    def __init__(self, system, p: torch.Tensor):
        self.rhs = system.rhs
        self.p = p
        self.align = _alignment(system)
        self._rhs_numpy = system.rhs_numpy
        if self._rhs_numpy is not None and p.is_cpu:
            self._p_numpy = p.numpy()
            self.numpy = self._dy_numpy  # per-sample solves without gradients (physode.solve)

    def _dy_numpy(self, t: np.ndarray, y: np.ndarray) -> np.ndarray:
        return self._rhs_numpy(t, y, self._p_numpy.astype(y.dtype, copy=False))

    def __call__(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if t.ndim:  # per-sample stepping: one time per row, shaped (rows, 1)
            return _rowwise(lambda t, y: self.rhs(t, y, self.p), t, y, align=self.align)
        return _rowwise(lambda y: self.rhs(t, y, self.p), y, align=self.align)


class _AugmentedField:
    """dz/dt for z = [y, p]: the system's right-hand side, and zero for the carried parameters.

    Carrying each trajectory's parameters in its state lets a per-sample solver drop finished
    rows without re-indexing a separate parameter tensor.
    """

    def __init__(self, system, n_state: int):
        self.rhs = system.rhs
        self.n_state = n_state
        self.align = _alignment(system)
        self._rhs_numpy = system.rhs_numpy
        if self._rhs_numpy is not None:
            self.numpy = self._dz_numpy  # per-sample solves without gradients (physode.solve)

    def _dz_numpy(self, t: np.ndarray, z: np.ndarray) -> np.ndarray:
        n = self.n_state
        dz = np.zeros_like(z)
        dz[..., :n] = self._rhs_numpy(t, z[..., :n], z[..., n:])
        return dz

    def _dz(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        y, p = z[..., : self.n_state], z[..., self.n_state :]
        return torch.nn.functional.pad(self.rhs(t, y, p), (0, z.shape[-1] - self.n_state))

    def __call__(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        if t.ndim:  # per-sample stepping: one time per row, shaped (rows, 1)
            return _rowwise(self._dz, t, z, align=self.align)
        return _rowwise(lambda z: self._dz(t, z), z, align=self.align)


def _per_row(value: Any, rows: int, dtype=np.int64) -> np.ndarray:
    """A solver counter (or time) as one value for each of the first ``rows`` rows (a scalar
    belongs to a solve of one row)."""
    values = np.asarray(torch.as_tensor(value), dtype=dtype)
    if values.ndim == 1:
        return values[:rows].copy()
    return np.full(rows, values, dtype=dtype)


def _solve_rows(field, z0: torch.Tensor, t: torch.Tensor, solver: dict, on_rows) -> tuple:
    """Solve every row of ``z0``; returns ys (P, b, m) and per-row status, steps, rejected, nfe
    and the time reached."""
    import physode

    rows = z0.shape[0]
    per_sample = solver["step_control"] == "per-sample"
    group = rows if per_sample else 1
    ys, status, n_steps, n_rejected, nfe, t_final = [], [], [], [], [], []
    for start in range(0, rows, group):
        batch = z0[start : start + group]
        pad = -batch.shape[0] % field.align
        if per_sample and pad:  # aligned like the right-hand side's slabs (see _rowwise)
            batch = torch.cat([batch, batch[-1:].expand(pad, -1)])
        solution = physode.solve(
            field,
            batch,
            t,
            method=solver["method"],
            rtol=solver["rtol"],
            atol=solver["atol"],
            max_steps=solver["max_steps"],
            max_step=solver.get("max_step"),
            gradient="disc-opt",
            step_control=solver["step_control"],
            throw=False,
        )
        b = min(group, rows - start)
        ys.append(solution.ys[:, :b])
        status.append(_per_row(solution.status, b))
        n_steps.append(_per_row(solution.stats.n_steps, b))
        n_rejected.append(_per_row(solution.stats.n_rejected, b))
        nfe.append(_per_row(solution.stats.nfe, b))
        t_final.append(_per_row(solution.t_final, b, np.float64))
        on_rows(b)
    return (
        ys[0] if len(ys) == 1 else torch.cat(ys, dim=1),  # one batched solve: no copy
        np.concatenate(status),
        np.concatenate(n_steps),
        np.concatenate(n_rejected),
        np.concatenate(nfe),
        np.concatenate(t_final),
    )


@functools.cache
def _software_versions() -> dict[str, str]:
    """The versions of Python, HDF5 and the packages that compute or store a data set: another
    torch or NumPy may change the last bits of the states (see docs/data.md).

    Looked up once per process (reading the packages' metadata took milliseconds per run): the
    modules imported are those of the first lookup. Do not modify the dict returned."""
    versions = {"python": platform.python_version(), "hdf5": h5py.version.hdf5_version}
    for package in ("torch", "numpy", "scipy", "sympy", "h5py"):
        versions[package] = importlib.metadata.version(package)
    return versions


def _running_software() -> dict[str, str]:
    """physode's version and :func:`_software_versions`: the software that computes a chunk in
    this process (an executor's worker must run the main process's) or trains a model
    (``physode train``'s report)."""
    import physode

    return {"physode": physode.__version__, **_software_versions()}


def _simulate_chunk(system, start: int, stop: int, t: torch.Tensor, run: dict, on_rows) -> Chunk:
    import physode

    seed = run["seed"]
    n_state = len(system.state_names)
    indices = range(start, stop)
    if run["params"] != "default":
        # Each block of parameters is drawn once and also handed to the states drawn for it.
        draws = _blocks(system.sample_parameters, seed, _STREAM_PARAMS)
        param_block = functools.cache(_kept_defaults(system, run["params"], draws))
        p = _draw_rows(param_block, start, stop)
        state_block = _blocks(system.sample_initial_states, seed, _STREAM_STATE, param_block)
    else:
        defaults = torch.tensor(list(system.parameters.values()), dtype=torch.float64)
        p = defaults.expand(len(indices), -1).clone()
        state_block = _blocks(system.sample_initial_states, seed, _STREAM_STATE)
    y0 = _draw_rows(state_block, start, stop)

    solver = run["solver"]
    if run["params"] != "default":
        field, z0 = _AugmentedField(system, n_state), torch.cat([y0, p], dim=-1)
        # The parameters ride along in z: the error norm must stay the RMS over y alone.
        rtol, atol = tolerances_over_state(solver["rtol"], solver["atol"], n_state, z0.shape[-1])
        solver = {**solver, "rtol": rtol, "atol": atol}
    else:
        field, z0 = _ParameterField(system, p[0]), y0
    with torch.inference_mode():  # nothing here is differentiated
        zs, status, n_steps, n_rejected, nfe, t_final = _solve_rows(field, z0, t, solver, on_rows)
        states = zs[..., :n_state].transpose(0, 1).contiguous()  # (b, P, n_state)
        b, points = states.shape[:2]
        flat = states.reshape(b * points, n_state)
        p_rows = p[:, None, :].expand(b, points, p.shape[-1]).reshape(b * points, -1)
        t_rows = t.expand(b, points).reshape(b * points)
        derivatives = _rowwise(system.rhs, t_rows, flat, p_rows, align=field.align)
        derivatives = derivatives.reshape(b, points, n_state)
        invariants = {
            name: values.to(torch.float64).reshape(b, points).numpy()
            for name, values in _rowwise(system.invariants, flat, p_rows).items()
        }
        drifts = drift_per_trajectory(system, states, p, t, invariants=invariants)

    failed = status != int(physode.Status.SUCCESS)
    drifted = np.zeros_like(failed)
    # A failed solve's drift up to the time it reached, over its finite states; a successful
    # one's over every state, where NaN (an invariant that is not a number) counts as drift.
    points = np.where(failed, finite_points(states.numpy()), states.shape[1])
    worst_drift = {name: largest_drift(drift, points) for name, drift in drifts.items()}
    for worst in worst_drift.values():
        drifted |= ~(worst <= run["drift_threshold"]) & ~failed  # NaN counts as drift
    flags = (np.where(failed, FLAG_SOLVER_FAILED, 0) | np.where(drifted, FLAG_DRIFT, 0)).astype(
        np.uint8
    )

    states_np = states.numpy()
    noisy = None
    if run["noise"] > 0:
        noisy = np.empty_like(states_np)
        for row, i in enumerate(indices):
            rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_STREAM_NOISE, i)))
            noisy[row] = states_np[row] + rng.normal(0.0, run["noise"], size=states_np[row].shape)
    derivatives_np = derivatives.numpy()
    stored_not_finite = _not_finite_when_stored(
        run["dtype"], points, states_np, derivatives_np, noisy
    )
    flags |= np.where(stored_not_finite, FLAG_NOT_FINITE, 0).astype(np.uint8)
    return Chunk(
        start=start,
        stop=stop,
        states=states_np,
        derivatives=derivatives_np,
        params=p.numpy(),
        status=status.astype(np.int8),
        n_steps=n_steps,
        n_rejected=n_rejected,
        nfe=nfe,
        flags=flags,
        t_final=t_final,
        invariants=invariants,
        drift=worst_drift,
        noisy_states=noisy,
    )


def _not_finite_when_stored(
    dtype: str, points: np.ndarray, *arrays: np.ndarray | None
) -> np.ndarray:
    """Per trajectory, whether a value the solve reached (its first ``points[i]`` output times)
    is stored as inf or NaN: a float64 value beyond the range of float32 storage, or one that
    was not finite already (a derivative that overflowed). Flag bit 4, so that readers leave
    the trajectory out as they do failed ones; NaN after the point a failed solve reached is
    bit 1's, and not counted here.

    >>> states = np.array([[[1.0], [1e39]], [[1.0], [2.0]]])   # (2 trajectories, 2 points, 1)
    >>> _not_finite_when_stored("float32", np.array([2, 2]), states, None).tolist()
    [True, False]
    >>> _not_finite_when_stored("float64", np.array([2, 2]), states, None).tolist()
    [False, False]
    """
    reached = None
    rows = np.zeros(len(points), dtype=bool)
    for values in arrays:
        if values is None:
            continue
        if reached is None:
            reached = np.arange(values.shape[1]) < points[:, None]  # (b, P)
        with np.errstate(over="ignore", invalid="ignore"):
            stored = values.astype(dtype, copy=False)
        rows |= (~np.isfinite(stored).all(axis=-1) & reached).any(axis=-1)
    return rows


_SEPARATORS = tuple(sep for sep in (os.sep, os.altsep) if sep)


def _out_problem(out: Any) -> str | None:
    """What is wrong with ``out`` as the path of the data set to write, or ``None``."""
    if not isinstance(out, str | os.PathLike):
        return f"out={out!r} must be a file path, such as data.h5"
    typed, path = os.fspath(out), Path(out)
    if typed.endswith(_SEPARATORS):  # Path drops the separator: "runs/" became "runs"
        return (
            f"out={typed!r} names a folder (it ends in {typed[-1]!r}); give a file name "
            f"such as {typed}data.h5"
        )
    if not path.parent.is_dir():
        return f"out={str(path)!r}: folder {str(path.parent)!r} does not exist"
    if path.is_dir():
        return f"out={typed!r} is a folder; give a file name such as data.h5"
    return None


def _out_is_the_spec(out: str | os.PathLike, system: Any) -> str | None:
    """The problem of an ``out`` that is the specification file ``system`` is read from, which
    writing the data set (``force=True``, as the refusal of an existing ``out`` advises) would
    destroy; ``None`` for any other ``out``."""
    from physode.systems import _looks_like_a_path

    if not _looks_like_a_path(system) or not os.path.isfile(out):
        return None
    try:
        if not os.path.samefile(out, system):
            return None
    except OSError:  # no such file: said when the system is loaded
        return None
    suggestion = Path(out).with_suffix(".h5").name
    return (
        f"out={os.fspath(out)!r} is the specification file the system is read from; writing "
        f"the data set there would replace it: give the data set a name of its own, such as "
        f"{suggestion}"
    )


def _params_option(params) -> str:
    """``--params``'s value for ``params``: a mode, or the sampled names joined by commas."""
    return params if isinstance(params, str) else ",".join(params)


def _command_system(system) -> str:
    """How the stored command line names ``system``, given to ``simulate`` as an object: by
    its name where its specification is the catalogue's text of that name, else as the file
    ``NAME.toml`` that the data set's ``system_spec`` is to be written to.

    A system does not remember the file it came from, and its name alone reran the
    catalogue's system of that name (or none) instead of the one simulated.

    >>> import physode.systems
    >>> _command_system(physode.systems.load("pendulum"))
    'pendulum'
    """
    import physode.systems

    name = system.name
    if name in physode.systems.names():
        catalogue = read_spec_text(physode.systems.path(name), f"{name} (catalogue)")
        if catalogue == system.spec_text:
            return name
    return re.sub(r"[^\w.-]", "_", name) + ".toml"


def _storable_text(text: str) -> str:
    """``text`` as UTF-8 can store it: the bytes of a file name that is not UTF-8, which Python
    holds as lone surrogates (``'\\udce4'`` for the byte 0xe4), written as escapes (``\\xe4``).

    The data set stores its command line as UTF-8 text, and a path with such bytes failed the
    run at its last step, when the file was written.

    Examples
    --------
    >>> _storable_text("physode simulate pendulum --out r\\udce4.h5")
    'physode simulate pendulum --out r\\\\xe4.h5'
    >>> _storable_text("physode simulate pendulum --out rä.h5")
    'physode simulate pendulum --out rä.h5'
    """
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate that stands for no byte
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


def _command_line(system_ref: str, run: dict, out: Path, chunk_size: int) -> str:
    solver = run["solver"]
    argv = [
        "physode", "simulate", system_ref,
        "--trajectories", str(run["trajectories"]), "--t-end", repr(run["t_end"]),
        "--points", str(run["points"]), "--out", str(out), "--seed", str(run["seed"]),
        "--method", solver["method"],
        "--rtol", repr(solver["rtol"]), "--atol", repr(solver["atol"]),
        "--params", _params_option(run["params"]), "--noise", repr(run["noise"]),
        "--split", ",".join(repr(x) for x in run["split"]), "--dtype", run["dtype"],
        "--chunk-size", str(chunk_size), "--drift-threshold", repr(run["drift_threshold"]),
        "--max-steps", str(solver["max_steps"]),
    ]  # fmt: skip
    if "max_step" in solver:
        argv += ["--max-step", repr(solver["max_step"])]
    return shlex.join(argv)


def _describe_differences(
    old: dict, new: dict, prefix: str = "", source: str | None = None
) -> list[str]:
    """Each setting that differs between the run settings ``old`` and ``new``, in words.

    A changed system or specification is said in words first (with ``source``, the name or
    path the system was given as), its hashes kept as detail: the hashes alone did not tell
    that the specification file had been edited.
    """
    differences = []
    if not prefix:
        differences += _system_differences(old, new, source)
    for key in sorted(set(old) | set(new)):
        if not prefix and key in _SYSTEM_KEYS:
            continue
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            differences += _describe_differences(a, b, f"{prefix}{key}.")
        elif a != b:
            differences.append(f"{prefix}{key}: {a!r} then, {b!r} now")
    return differences


_SYSTEM_KEYS = ("system_name", "system_spec_sha256")


def _system_differences(old: dict, new: dict, source: str | None) -> list[str]:
    """The change of system or of its specification between two run settings, in words."""
    (name_then, spec_then), (name_now, spec_now) = (
        [run.get(key) for key in _SYSTEM_KEYS] for run in (old, new)
    )
    given = f", from {source}," if source not in (None, name_now) else ""
    if name_then != name_now:
        said = f"the system{given} changed since the run started: {name_then!r} then, "
        said += f"{name_now!r} now"
    elif spec_then != spec_now:
        said = f"the specification of system {name_now!r}{given} changed since the run started"
    else:
        return []
    if spec_then != spec_now:
        said += f" (system_spec_sha256 {_short(spec_then)} then, {_short(spec_now)} now)"
    return [said]


def _short(digest: Any) -> str:
    return f"{digest[:12]}..." if isinstance(digest, str) else repr(digest)


class _Workspace:
    """``OUT.parts/``: the run's configuration, one file per finished chunk, and a lock."""

    def __init__(self, out: Path):
        self.folder = parts_folder(out)
        self.config = self.folder / "run.json"
        self._lock = None

    def chunk_path(self, index: int) -> Path:
        return self.folder / f"chunk-{index:06d}.h5"

    def exists(self) -> bool:
        return self.folder.exists()

    def has_chunks(self) -> bool:
        """Whether a chunk file (finished, or being written) is in the folder."""
        return any(self.folder.glob("chunk-*"))

    def lock(self) -> None:
        self.folder.mkdir(exist_ok=True)
        self._lock = lock_exclusively(
            self.folder / "lock",
            f"another process is simulating into {self.folder}; wait for it to finish",
        )

    def release(self) -> None:
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def read_config(self) -> dict | None:
        """The run's settings, or ``None`` where ``run.json`` is missing or unreadable."""
        run = self._read()
        if run is not None:
            run.pop("software", None)
        return run

    def read_software(self) -> dict | None:
        """The versions of the software that computed the chunks (``_software_versions()``),
        or ``None`` where the run started under physode before 2026-12-07, which kept none."""
        return (self._read() or {}).get("software")

    def _read(self) -> dict | None:
        try:
            stored = json.loads(self.config.read_text())
        except (OSError, ValueError):
            return None
        return stored if isinstance(stored, dict) else None

    def write_config(self, run: dict) -> None:
        # With the software that computes the chunks: resumed under another torch or NumPy,
        # the data set would mix chunks that no single run gives.
        text = json.dumps({**run, "software": _software_versions()}, indent=1, sort_keys=True)
        write_atomically(self.config, lambda tmp: tmp.write_text(text), "run's settings")

    def clear(self) -> None:
        for entry in self.folder.iterdir():
            if entry.name != "lock":
                entry.unlink()

    def remove(self) -> None:
        self.release()
        shutil.rmtree(self.folder, ignore_errors=True)


def simulate(
    system: Any,
    *,
    trajectories: int,
    t_end: float,
    points: int,
    out: str | os.PathLike,
    seed: int = 0,
    method: str = "dop853",
    rtol: float = 1e-10,
    atol: float = 1e-10,
    params: str = "default",
    noise: float = 0.0,
    split: Sequence[float] = (0.8, 0.1, 0.1),
    dtype: str = "float64",
    resume: bool = False,
    force: bool = False,
    quiet: bool = False,
    chunk_size: int = 4096,
    drift_threshold: float = 1e-6,
    max_steps: int = MAX_STEPS,
    max_step: float | None = None,
    command_line: str | None = None,
    threads: int | None = 1,
    executor: Any = None,
) -> SimulationResult:
    """Simulate trajectories of a system on ``[0, t_end]`` and store them in an HDF5 data set.

    The same from the command line: ``physode simulate SYSTEM --trajectories N --t-end T
    --points P --out FILE.h5``. Every trajectory draws its initial state, its parameters and its
    noise from ``(seed, trajectory index)`` alone, so the data do not depend on ``chunk_size``.
    Results go to ``OUT.parts/`` one chunk at a time and are assembled into ``OUT.tmp``, which is
    renamed to ``out`` only when complete; an interrupted run (even by SIGKILL) continues from its
    finished chunks with ``resume=True`` and gives the same data as an uninterrupted one.

    Parameters
    ----------
    system : str, path-like or physode.System
        A catalogue name (``physode systems`` lists them), a path to a specification file, or a
        system. The file stores the system's specification text (``system.spec_text``, or
        ``system.to_spec()`` for one built in Python, read back and checked to give the same
        equations) so that ``physode.data.load(out).system`` rebuilds it.
    trajectories : int
        Number of trajectories ``N``.
    t_end : float
        Final time; the output times are ``linspace(0, t_end, points)``.
    points : int
        Number of output times ``P`` (at least 2).
    out : str or path-like
        The ``.h5`` file to write; text that ends in a path separator (``"runs/"``) names a
        folder and is refused, and so is the specification file ``system`` is read from.
    seed : int
        Seed (0 to 2**64 - 1) of everything random: initial states, sampled parameters, noise,
        the split.
    method, rtol, atol : str, float, float
        Adaptive solver method (one of ``heun``, ``bosh3``, ``dopri5``, ``tsit5``, ``dop853``) and
        tolerances. The integration runs in float64 whatever ``dtype``.
    params : {"default", "sample"} or list of str
        The system's default parameters for every trajectory, or one draw per trajectory from the
        system's parameter ranges (a parameter without a range keeps its default; a system
        none of whose parameters has one is refused); a list of names draws only those (the
        others keep their defaults), each with the value ``"sample"`` would give it (``["l"]``
        for pendulums of different lengths, to learn ``g`` from them or ``l`` per trajectory);
        a name without a range, whose every draw would be its default, is refused.
    noise : float
        Standard deviation of Gaussian observation noise added to the states and stored as
        ``/noisy_states`` beside the clean ones; 0 stores none.
    split : sequence of three floats
        Train, validation and test fractions (numbers >= 0 summing to 1, to within 1e-6),
        stored as index lists. The counts are :func:`split_counts`: each positive fraction gets
        at least one trajectory when there are at least as many trajectories as positive
        fractions.
    dtype : {"float64", "float32"}
        Storage type of the states, derivatives and noisy states. A trajectory with values
        beyond float32's range (stored as inf) is flagged (bit 4 of ``/flags``).
    resume : bool
        Continue an interrupted run with the same settings from its finished chunks.
    force : bool
        Overwrite an existing ``out``, and discard an interrupted run that is not resumed.
    quiet : bool
        No progress bar (there is none anyway when standard error is not a terminal).
    chunk_size : int
        Trajectories per chunk: the unit of resuming, and one batched per-sample solve. Larger
        chunks amortise the solver's per-step overhead (the data do not depend on it). A chunk
        whose arrays would need more than half of this machine's memory is refused, with a
        chunk_size that fits; with a process or thread pool as ``executor``, the chunks its
        workers simulate at once count together (a Dask cluster's workers are not counted).
    drift_threshold : float
        Trajectories whose relative invariant drift exceeds this are flagged (bit 2 of ``/flags``).
    max_steps : int
        Step attempts (accepted and rejected steps together) allowed per trajectory; a solve
        that needs more is flagged as failed. Fewer than ``t_end / max_step``, or with ``heun``
        (which lands a step on each output time) fewer than ``points - 1``, with which no
        trajectory could finish, are refused.
    max_step : float, optional
        Longest step the solver may take (as in :func:`physode.solve`): for forcing or pulses
        narrower than the steps the tolerances allow, which a solve would step over. Stored in
        the ``solver`` attribute only where given; ``None`` (the default) caps nothing, and
        the file is the one a run without the option writes.
    command_line : str, optional
        The command line stored in the file; by default the equivalent ``physode simulate`` line.
    threads : int or None
        Torch intra-op threads during the run, restored afterwards. The default 1 is the fastest
        measured here: a per-sample solve is many small element-wise operations, and splitting
        each between threads costs more than it saves (up to 10x slower on a busy machine).
        ``None`` keeps torch's setting. The data do not depend on it. With ``executor``, each
        worker runs its chunks with this many threads. More than 4 per CPU of this machine (or
        64, where that is more) is refused: thousands crashed torch's thread pool.
    executor : object, optional
        Where the chunks are simulated: ``None`` (the default) in this process, one after
        another; else anything with ``submit(fn, *args)`` returning a future, such as a
        ``concurrent.futures.ProcessPoolExecutor`` or a Dask ``distributed.Client``. Each chunk
        that is not yet on disk is one task, which rebuilds the system from its specification
        text in the worker; this process writes each chunk file as its task finishes and
        assembles ``out`` as without an executor, so the data are the same to the bit and
        ``resume`` works across runs with and without one. At most two tasks per worker are in
        flight. A task's error is raised here as the worker raised it, after the tasks not
        yet finished are cancelled; so is ``KeyboardInterrupt``, which keeps the chunks
        written so far for ``resume``. See docs/data.md, "Across processes and machines".

    Returns
    -------
    SimulationResult
        The path written and counts of flagged trajectories.

    Raises
    ------
    physode.InvalidArgumentError
        For bad arguments (all problems listed in one message), an existing ``out`` without
        ``force``, an interrupted run that is neither resumed nor forced, or resuming with
        different settings (the differences named).

    Warns
    -----
    physode.PhysodeWarning
        When there are fewer trajectories than positive fractions in ``split``, so that a split
        you asked for stays empty (the data set is written all the same); when ``dtype`` is
        ``"float32"`` and some values exceed its range, so that they are stored as inf (the
        trajectories are named).

    Examples
    --------
    >>> result = physode.data.simulate("pendulum", trajectories=8, t_end=5.0, points=51,
    ...                                out="pendulum.h5", seed=1)   # doctest: +SKIP
    >>> physode.data.load(result.path).states.shape                 # doctest: +SKIP
    (8, 51, 2)

    The same data computed by four processes:

    >>> from concurrent.futures import ProcessPoolExecutor
    >>> with ProcessPoolExecutor(4) as pool:                        # doctest: +SKIP
    ...     physode.data.simulate("pendulum", trajectories=8192, t_end=5.0, points=51,
    ...                           out="pendulum.h5", seed=1, chunk_size=1024, executor=pool)
    """
    import physode

    with torch_threads(threads):
        started = time.perf_counter()
        problems = _validate(
            trajectories=trajectories,
            t_end=t_end,
            points=points,
            seed=seed,
            method=method,
            rtol=rtol,
            atol=atol,
            params=params,
            noise=noise,
            split=split,
            dtype=dtype,
            chunk_size=chunk_size,
            drift_threshold=drift_threshold,
            max_steps=max_steps,
            max_step=max_step,
            threads=threads,
        )
        system_problem = _system_problem(system)
        if system_problem is not None:
            problems.insert(0, system_problem)
        executor_problem = _parallel.executor_problem(executor)
        if executor_problem is not None:
            problems.append(executor_problem)
        out_problem = _out_problem(out) or _out_is_the_spec(out, system)
        if out_problem is not None:
            problems.append(out_problem)
        if problems:
            raise InvalidArgumentError("bad simulate arguments: " + "; ".join(problems))
        out = Path(out)

        given_as_object = not isinstance(system, str | os.PathLike)
        system_ref = system.name if given_as_object else os.fspath(system)
        system = _load_system(system)
        if system.spec_text is None:
            # Built in Python: the data set stores its to_spec() text, and the system read back
            # from that text (checked to be the same) is the one simulated.
            from physode.symbolic._writing import rebuilt_from_spec

            system = rebuilt_from_spec(system)
        params = _sampled_names(system, params)
        _warn_of_empty_splits(trajectories, split)  # once the arguments are known to be good
        if executor is not None:
            _parallel.warn_of_idle_workers(executor, trajectories, chunk_size)
        run = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "physode_version": physode.__version__,
            "system_name": system.name,
            "system_spec_sha256": sha256_text(system.spec_text),
            "trajectories": int(trajectories),
            "t_end": float(t_end),
            "points": int(points),
            "seed": int(seed),
            "params": params,
            "noise": float(noise),
            "split": [float(x) for x in split],
            "dtype": dtype,
            "chunk_size": int(chunk_size),
            "drift_threshold": float(drift_threshold),
            "solver": {
                "method": method,
                "rtol": float(rtol),
                "atol": float(atol),
                "max_steps": int(max_steps),
                "step_control": STEP_CONTROL,
            },
        }
        if max_step is not None:
            # Only where given: a run without it has the settings, files and resume identity
            # of a run of physode before max_step (2026-12-07).
            run["solver"]["max_step"] = float(max_step)
        if command_line is None:
            named = _command_system(system) if given_as_object else system_ref
            command_line = _command_line(named, run, out, chunk_size)
        command_line = _storable_text(command_line)

        if out.exists() and not force:
            finished = _finished_run(out) if resume else None
            if finished == run:
                _discard_leftovers(out, run)
                seconds = time.perf_counter() - started
                with load(out) as data:
                    n_failed, n_drifted, details = _tally(data, run["drift_threshold"])
                return SimulationResult(
                    out, trajectories, n_failed, n_drifted, 0, seconds, written=False, **details
                )
            if finished is not None:
                changed = "; ".join(_describe_differences(finished, run, source=system_ref))
                raise InvalidArgumentError(
                    f"{out} exists and holds a finished run with other settings "
                    f"({changed}); rerun with its settings to keep it, or pass force=True "
                    "(--force) to overwrite it"
                )
            raise InvalidArgumentError(f"{out} exists; pass force=True (--force) to overwrite it")

        # Before anything is written: refused only by the solver or the system, these left an
        # OUT.parts/ that the next run took for an interrupted run.
        late_problem = _too_much_memory(system, run, executor) or _colliding_times(t_end, points)
        if late_problem is not None:
            raise InvalidArgumentError("bad simulate arguments: " + late_problem)
        workspace = _Workspace(out)
        had_workspace = workspace.exists()
        workspace.lock()
        try:
            previous = workspace.read_config() if had_workspace else None
            if had_workspace and not resume:
                if not force:
                    raise InvalidArgumentError(
                        f"{workspace.folder} holds an interrupted run; pass resume=True (--resume) "
                        "to continue it or force=True (--force) to discard it"
                    )
                workspace.clear()
                previous = None
            if previous is not None and previous != run:
                changed = "; ".join(_describe_differences(previous, run, source=system_ref))
                raise InvalidArgumentError(
                    f"cannot resume {workspace.folder}: it was started with other settings "
                    f"({changed}); "
                    "rerun with the original settings, or with force=True (--force) and without "
                    "resume to start over"
                )
            software = workspace.read_software() if previous is not None else None
            if software not in (None, _software_versions()):
                changed = _describe_differences(software, _software_versions(), "software.")
                raise InvalidArgumentError(
                    f"cannot resume {workspace.folder}: its chunks were computed with other "
                    f"software ({'; '.join(changed)}), which may change the last bits of the "
                    "data, so the data set would not be what one run gives; resume with the "
                    "software that started the run, or pass force=True (--force) without "
                    "resume to start over"
                )
            if previous is None:
                workspace.clear()
                workspace.write_config(run)
            try:
                resumed, stored = _run_chunks(
                    system, run, out, workspace, command_line, quiet, executor, threads
                )
            except Exception:
                # An error (not an interruption) before any chunk was stored leaves nothing to
                # resume: the run.json this run wrote alone made the next run refuse OUT.parts/
                # as "an interrupted run". Ctrl-C and kills keep the folder, as do chunks.
                if previous is None and not workspace.has_chunks():
                    workspace.remove()
                raise
        finally:
            workspace.release()
        workspace.remove()
        n_failed, n_drifted, details = _tally(stored, run["drift_threshold"])
        seconds = time.perf_counter() - started
        return SimulationResult(out, trajectories, n_failed, n_drifted, resumed, seconds, **details)


def _run_chunks(
    system, run: dict, out: Path, workspace: _Workspace, command_line, quiet, executor=None,
    threads=None,
):
    n, size = run["trajectories"], run["chunk_size"]
    run_id = sha256_text(json.dumps(run, sort_keys=True))
    t = _output_times(run["t_end"], run["points"])
    n_chunks = math.ceil(n / size)
    disable = not progress_wanted(quiet)
    resumed = 0
    # The chunk simulated last stays in memory and is stored first, so it is not read back from
    # the file just written (for a run of one chunk, its only chunk); the others are read back
    # one at a time, so that memory holds about one chunk whatever the number of trajectories.
    fresh: dict[int, tuple[Chunk, tuple]] = {}

    def store(k: int, chunk: Chunk) -> None:
        # Chunk k's file, the chunk kept in memory as the one simulated last.
        fresh.clear()
        path = workspace.chunk_path(k)
        write_chunk(path, chunk, run_id)
        fresh[k] = (chunk, _file_identity(path))

    with tqdm(total=n, unit="traj", desc=system.name, disable=disable, smoothing=0.1) as bar:
        todo = []  # the chunks an executor is to simulate: (index, the task's arguments)
        for k in range(n_chunks):
            start, stop = k * size, min(n, (k + 1) * size)
            path = workspace.chunk_path(k)
            if path.exists():
                done = read_chunk(path, run_id)
                if done is not None and (done.start, done.stop) == (start, stop):
                    resumed += 1
                    bar.update(stop - start)
                    continue
            if executor is not None:
                todo.append((k, (system.spec_text, system.name, start, stop, run, threads)))
                continue
            fresh.clear()  # before simulating, so that at most one chunk is kept
            store(k, _simulate_chunk(system, start, stop, t, run, bar.update))

        def store_finished(k: int, chunk: Chunk) -> None:
            # As the serial loop stores, in the order the tasks finish.
            store(k, chunk)
            bar.update(chunk.stop - chunk.start)

        if todo:
            _parallel.remember(system)  # tasks in this process's threads need not build it
            _parallel.run_tasks(executor, todo, store_finished)

    overflow = _Overflow() if run["dtype"] == "float32" else None
    stored = _Stored(n)  # what the summary counts, gathered as the chunks are stored

    def finished_chunks():
        for k in [*fresh, *(k for k in range(n_chunks) if k not in fresh)]:
            path = workspace.chunk_path(k)
            if k in fresh:
                chunk, written = fresh.pop(k)
                # The file must still be the one written, as reading it back would check.
                if written is None or _file_identity(path) != written:
                    chunk = None
            else:
                chunk = read_chunk(path, run_id)
            if chunk is None:
                # Something else removed or rewrote it while this run worked (a second run on
                # the same OUT, a cleanup): not a bug of physode, and resuming recomputes it.
                raise PhysodeError(
                    f"{path} vanished or changed during the run (is another "
                    "run writing the same output?); rerun with resume=True (--resume) to "
                    "recompute it"
                )
            if overflow is not None:
                overflow.add(chunk)
            stored.add(chunk)
            yield chunk
            del chunk  # not held while the next one is read

    chunks = finished_chunks()
    pending = [next(chunks)]
    # In the system's order (a chunk file lists its invariants alphabetically).
    invariant_names = sorted(pending[0].invariants, key=system.invariant_names.index)

    def assembled():
        yield pending.pop()  # not held once stored
        yield from chunks

    attrs = _store_attrs(system, run, invariant_names, command_line)

    def assemble(tmp: Path) -> None:
        write_store(
            tmp,
            t=t.numpy(),
            n_trajectories=n,
            n_state=len(system.state_names),
            n_params=len(system.parameters),
            invariant_names=invariant_names,
            dtype=run["dtype"],
            noisy=run["noise"] > 0,
            split=split_indices(n, run["split"], run["seed"]),
            attrs=attrs,
            chunks=assembled(),
            chunk_size=run["chunk_size"],
        )

    with np.errstate(over="ignore"):  # values beyond float32 become inf; said below, once
        # At OUT.tmp, renamed to OUT once complete; a write the system refuses says why.
        write_atomically(out, assemble, "data set")
    if overflow is not None:
        overflow.warn()
    stored.attrs = attrs
    stored.drift = {name: stored.drift[name] for name in invariant_names}  # as load() lists them
    return resumed, stored


def _store_attrs(system, run: dict, invariant_names: list[str], command_line: str) -> dict:
    """The root attributes of the data set that ``run`` writes of ``system``."""
    import physode

    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "physode_version": physode.__version__,
        "software": json.dumps(_software_versions(), sort_keys=True),
        "system_name": system.name,
        "system_spec": system.spec_text,
        "system_spec_sha256": sha256_text(system.spec_text),
        "state_names": json.dumps(list(system.state_names)),
        "parameter_names": json.dumps(list(system.parameters)),
        "invariant_names": json.dumps(invariant_names),
        "solver": json.dumps(run["solver"], sort_keys=True),
        "seed": run["seed"],
        "command_line": command_line,
        "simulation": json.dumps(run, sort_keys=True),
        "status_codes": json.dumps({s.name: int(s) for s in physode.Status}),
        "flag_bits": json.dumps(
            {
                "solver_failed": FLAG_SOLVER_FAILED,
                "drift": FLAG_DRIFT,
                "not_finite": FLAG_NOT_FINITE,
            }
        ),
    }


class _Stored:
    """The per-trajectory arrays of a data set that :func:`_tally` counts, gathered from its
    chunks as they are stored, so that the summary needs no second reading of the file."""

    def __init__(self, n: int):
        self.flags = np.zeros(n, dtype=np.uint8)
        self.status = np.zeros(n, dtype=np.int8)
        self.t_final = np.zeros(n, dtype=np.float64)
        self.drift: dict[str, np.ndarray] = {}
        self.attrs: dict[str, Any] = {}

    def add(self, chunk: Chunk) -> None:
        rows = slice(chunk.start, chunk.stop)
        self.flags[rows] = chunk.flags
        self.status[rows] = chunk.status
        self.t_final[rows] = chunk.t_final
        for name, values in chunk.drift.items():
            self.drift.setdefault(name, np.zeros(len(self.flags)))[rows] = values


class _Overflow:
    """The trajectories whose float64 values (states, derivatives, noisy states) are finite but
    too large for float32 storage, which stores them as inf."""

    def __init__(self):
        self.rows: list[int] = []
        self.largest = 0.0

    def add(self, chunk: Chunk) -> None:
        # Only trajectories flagged not finite when stored (bit 4) can hold such values.
        flagged = np.flatnonzero(chunk.flags & FLAG_NOT_FINITE)
        if flagged.size == 0:
            return
        rows = np.zeros(flagged.size, dtype=bool)
        for values in (chunk.states, chunk.derivatives, chunk.noisy_states):
            if values is None:
                continue
            values = values[flagged]
            with np.errstate(over="ignore"):
                lost = np.isfinite(values) & np.isinf(values.astype(np.float32))
            if lost.any():
                rows |= lost.reshape(len(rows), -1).any(axis=1)
                self.largest = max(self.largest, float(np.abs(values[lost]).max()))
        self.rows += (chunk.start + flagged[rows]).tolist()

    def warn(self) -> None:
        if not self.rows:
            return
        one = len(self.rows) == 1
        warnings.warn(
            f"{counted(len(self.rows), 'trajectory', 'trajectories')} "
            f"({first_few(sorted(self.rows))}) {'reaches' if one else 'reach'} values "
            f"beyond the range of float32 (up to {self.largest:.3g}), stored as inf and flagged "
            "(flag bit 4: TrajectoryDataset and training leave them out); store them with "
            "dtype='float64' (--dtype float64), or simulate a shorter t_end",
            PhysodeWarning,
            stacklevel=4,
        )


def _file_identity(path: Path) -> tuple | None:
    """What tells a file from a rewritten or replaced one: its inode, size and times (``None``
    where it does not exist)."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns


def _discard_leftovers(out: Path, run: dict) -> None:
    """Remove what an interrupted rewrite of ``out`` with the same settings ``run`` left behind.

    ``out`` already holds that run's data, so its ``OUT.parts/`` and ``OUT.tmp`` are redundant.
    Leftovers of a run with other settings are kept (``resume`` with ``force`` continues them);
    the lock refuses to touch the folder while another process writes into it.
    """
    workspace = _Workspace(out)
    if not workspace.exists():
        return
    workspace.lock()
    try:
        if workspace.read_config() not in (None, run):
            return
        out.with_name(out.name + ".tmp").unlink(missing_ok=True)
    finally:
        workspace.release()
    workspace.remove()


def _finished_run(out: Path) -> dict | None:
    """The settings of the complete run that ``out`` holds (its ``simulation`` attribute), or
    ``None`` where it holds none (not a complete data set of physode, or unreadable).

    A file that HDF5 will not open for its lock (another process holds it open for writing, or
    the file system has no locks) is refused with that reason: read as holding no run, it was
    answered ``OUT exists; pass force=True``, advice that overwrote a finished data set that
    resuming would have kept."""
    try:
        with h5py.File(out, "r") as f:
            stored = f.attrs.get("simulation")
            run = None if stored is None else json.loads(stored)
            return run if isinstance(run, dict) and bool(f.attrs["complete"]) else None
    except OSError as exc:
        try:
            refuse_if_locked(out, exc)
        except DataFormatError as locked:
            raise InvalidArgumentError(
                f"{locked} (resume=True, --resume, reads it to tell whether it already holds "
                "this run)"
            ) from None
        return None
    except (ValueError, KeyError):
        return None


def _tally(data, drift_threshold: float) -> tuple[int, int, dict]:
    """The flag counts of a data set, and their details for :class:`SimulationResult`: the
    failures by cause, the drift flags by invariant. ``data`` is the data set opened with
    :func:`load`, or the :class:`_Stored` arrays of the one just written."""
    flags = data.flags
    by_cause: dict[str, list[float]] = {}
    for failure in solver_failures(data):
        t = math.nan if failure.t_reached is None else failure.t_reached
        by_cause.setdefault(failure.cause, []).append(t)
    failures = {
        cause: FailureCount(len(times), min(times), max(times))
        for cause, times in sorted(by_cause.items(), key=lambda item: -len(item[1]))
    }
    drifts = {}
    flagged = (flags & FLAG_DRIFT) != 0
    for name, worst in (data.drift or {}).items():
        beyond = worst[flagged & ~(worst <= drift_threshold)]
        if beyond.size:
            drifts[name] = DriftCount(int(beyond.size), float(np.max(beyond)))
    drifts = dict(sorted(drifts.items(), key=lambda item: -item[1].n))
    n_failed = int(np.count_nonzero(flags & FLAG_SOLVER_FAILED))
    n_drifted = int(np.count_nonzero(flagged))
    n_not_finite = int(np.count_nonzero(flags & FLAG_NOT_FINITE))
    details = {"failures": failures, "drifts": drifts, "n_not_finite": n_not_finite}
    return n_failed, n_drifted, details
