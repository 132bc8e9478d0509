"""Benchmark of physode's solver layer against torchdiffeq and TorchDiffEqPack.

Prints four tables, the first three with the targets of the solver layer (docs/benchmarks.md) and
PASS/FAIL:

1. Forward solve, physode vs torchdiffeq (dopri5, same tolerance): an overhead-bound case (Van der
   Pol, mu = 1, batch 1, t in [0, 50], rtol = atol = 1e-6 and 1e-9, float64) and a compute-bound
   case (MLP 2-64-64-2 tanh vector field, batch 512, float32). Wall time is the median of several
   interleaved repeats (short runs repeat until each comparison has run 5 s); function
   evaluations are counted by a wrapper around the vector field, the same for both libraries.
2. Gradients at rtol = atol = 1e-3, 1e-5, 1e-7 (dopri5, float64, loss on the final state), on three
   problems: a compute-bound neural ODE (MLP 2-64-64-2, batch 256), an overhead-bound hybrid model
   built from physode's own parts (a damped pendulum with learnable omega0 and alpha plus an MLP
   2-32-32-2 residual, batch 16), and table 1's Van der Pol oscillator with mu learnable (batch 1,
   t in [0, 10]), whose attracting limit cycle makes the backward re-solve of the adjoint methods
   unstable. A solve that fails is a row that says so. Rows: physode Disc-Opt, ACA, Opt-Disc;
   torchdiffeq odeint and odeint_adjoint; TorchDiffEqPack's ACA (odesolve_adjoint).
   Forward+backward time, evaluations forward and backward, peak memory, and the relative gradient
   error against a reference (physode Disc-Opt, dop853, rtol = atol = 1e-12) and against physode
   Disc-Opt at the same tolerance. One more row times physode's forward solve without a graph, the
   part of ACA that Disc-Opt does not have. The ACA rows also print what ACA's function evaluations
   cost by themselves, against odeint_adjoint: its forward evaluations without a graph, plus the
   six stages of every accepted step with a graph and a VJP (one autograd call per six, as in ACA's
   backward pass), each timed alone in the same interleaved rounds: an estimate of the least ACA
   could cost if the solver itself cost nothing.
3. Memory as the number of steps grows tenfold (rk4, fixed step) for the three physode modes on a
   wide MLP (2-256-256-2) over a small state (batch 64 x 2).
4. Symplectic methods (leapfrog, yoshida4) on the catalogue's planar three-body problem, batch
   1024, 1000 steps, float64, no graph: physode.solve, whose drift needs no evaluation where
   dq/dt is v, against the same loop evaluating func for every drift (as a dq/dt that is not v
   needs). No target: the time per solve, the evaluations per step and the speedup.

Memory, measured two ways:
- "peak MB": the rise of the process's resident set size during one forward+backward pass, i.e.
  VmHWM - VmRSS from /proc/self/status after freeing malloc's cached memory (malloc_trim) and
  resetting the high-water mark (/proc/self/clear_refs). It counts every allocation, including
  tensors a custom autograd Function keeps on its ctx (ACA's checkpoints). In the full run each
  configuration is measured in a fresh subprocess, so earlier runs cannot leave reusable memory
  behind; --quick measures in-process. Resolution is a few MB.
- "saved MB" (table 3): the peak of the live bytes of tensors saved for backward, tracked with
  torch.autograd.graph.saved_tensors_hooks (freed when the graph node holding them is), plus, for
  ACA, its checkpoints (one state per accepted step), which autograd hooks cannot see.

Run:  python scripts/bench_solvers.py [--quick] [--tables 1,2,3] [--out DIR] [--threads 1]

``--out DIR`` writes every measurement to ``DIR/results.json``; ``--out FILE.json``, its former
meaning, still writes that file, with a warning. The problems are fixed (no ``--seed``): the
figures of docs/benchmarks.md come from them.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common  # noqa: E402

if __name__ == "__main__":  # not when a test imports the script
    _common.quiet_interrupts_from_the_start()  # Ctrl-C while importing: one line too

import torch  # noqa: E402
from torch import nn  # noqa: E402

import physode  # noqa: E402
from physode.models import Hybrid, NeuralODE, PhysicsModel  # noqa: E402
from physode.solvers import SYMPLECTIC_METHODS, Stats, integrate  # noqa: E402

try:
    import torchdiffeq
except ImportError:  # pragma: no cover - a benchmark dependency
    torchdiffeq = None
try:
    from TorchDiffEqPack import odesolve_adjoint as tdep_odesolve_adjoint
except ImportError:  # pragma: no cover - a benchmark dependency
    tdep_odesolve_adjoint = None

GRAD_TOLERANCES = (1e-3, 1e-5, 1e-7)
# Each timed comparison runs at least this long (more rounds for short runs; see
# interleaved_medians), except with --quick.
MIN_SECONDS = 5.0
GRAD_PROBLEMS = ("mlp", "hybrid", "vdp")
# Times physode's forward solve alone, the part of ACA that Disc-Opt does not have. No gradient.
NO_GRAPH = "physode forward, no graph"
# ACA without the last step's graph kept, every step rebuilt: counts ACA's evaluations. No row.
ACA_REBUILD_ALL = "physode aca, every step rebuilt"
# What a solve that stops may raise: physode's error, torchdiffeq's assertion on a step size
# underflow, TorchDiffEqPack's errors.
SOLVE_FAILURES = (physode.SolverError, AssertionError, RuntimeError)
GRAD_CONFIGS = (
    NO_GRAPH,
    "physode disc-opt",
    "physode aca",
    "physode opt-disc",
    "torchdiffeq odeint",
    "torchdiffeq odeint_adjoint",
    "TorchDiffEqPack aca",
)
# Opt-Disc restarting its backward re-solve at every forward step: a row of table 2c only, whose
# re-solve diverges; judged by the same target as the default Opt-Disc, reported beside it.
OPT_DISC_STEPS = "physode opt-disc (steps)"
EXTRA_CONFIGS = {"vdp": (OPT_DISC_STEPS,)}


# ----------------------------------------------------------------------------- vector fields


class Counted(nn.Module):
    """Wraps a vector field and counts its evaluations, split by phase ("fwd" or "bwd")."""

    def __init__(self, field: nn.Module):
        super().__init__()
        self.field = field
        self.phase = "fwd"
        self.calls = {"fwd": 0, "bwd": 0}

    def forward(self, t, y):
        self.calls[self.phase] += 1
        return self.field(t, y)

    def reset(self) -> None:
        self.phase = "fwd"
        self.calls = {"fwd": 0, "bwd": 0}


class VanDerPol(nn.Module):
    def __init__(self, mu: float = 1.0, learnable: bool = False):
        super().__init__()
        self.mu = nn.Parameter(torch.tensor(mu, dtype=torch.float64)) if learnable else mu

    def forward(self, t, y):
        x, v = y[..., 0:1], y[..., 1:2]
        return torch.cat([v, self.mu * (1.0 - x * x) * v - x], dim=-1)


class MLPField(nn.Module):
    def __init__(self, width: int = 64, dim: int = 2, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(
            nn.Linear(dim, width),
            nn.Tanh(),
            nn.Linear(width, width),
            nn.Tanh(),
            nn.Linear(width, dim),
        )

    def forward(self, t, y):
        return self.net(y)


# ----------------------------------------------------------------------------- measurement


def interleaved_medians(
    runs: dict[str, Callable[[], object]], repeats: int, min_seconds: float = 0.0
) -> dict[str, float]:
    """Median wall time of each run, the runs taking turns so that a change in the load of a shared
    machine falls on all of them alike.

    At least ``repeats`` rounds; short runs get more rounds, until the rounds have taken
    ``min_seconds`` in all (at most ``10 * repeats``), so that a burst of load on the shared
    machine cannot move the median of a run of a few milliseconds.
    """
    times: dict[str, list[float]] = {name: [] for name in runs}
    spent, rounds = 0.0, 0
    while rounds < repeats or (spent < min_seconds and rounds < 10 * repeats):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            elapsed = time.perf_counter() - start
            times[name].append(elapsed)
            spent += elapsed
        rounds += 1
    return {name: statistics.median(values) for name, values in times.items()}


def _proc_status(key: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{key} not in /proc/self/status")


def peak_rss_rise(fn: Callable[[], object]) -> int | None:
    """Bytes by which the resident set grows at its peak while ``fn`` runs (Linux only)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # reset VmHWM to the current RSS
        before = _proc_status("VmRSS")
    except OSError:
        return None
    fn()
    return max(_proc_status("VmHWM") - before, 0)


class SavedBytes:
    """Peak live bytes of the distinct storages saved for backward while the context is active.

    A storage saved by several graph nodes (a tanh output is saved by tanh and by the next linear
    layer) counts once; it stops counting when the last node holding it is freed.
    """

    def __init__(self):
        self.live = 0
        self.peak = 0
        self.holders: dict[int, int] = {}

    def _pack(self, tensor):
        return _Held(tensor, self)

    @staticmethod
    def _unpack(held):
        return held.tensor

    def add(self, key: int, nbytes: int) -> None:
        count = self.holders.get(key, 0)
        self.holders[key] = count + 1
        if count == 0:
            self.live += nbytes
            self.peak = max(self.peak, self.live)

    def remove(self, key: int, nbytes: int) -> None:
        self.holders[key] -= 1
        if self.holders[key] == 0:
            del self.holders[key]
            self.live -= nbytes

    def __enter__(self):
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc):
        self._hooks.__exit__(*exc)


class _Held:
    def __init__(self, tensor, meter: SavedBytes):
        storage = tensor.untyped_storage()
        # Detached: holding the tensor itself would tie its grad_fn to the node that saved it,
        # a reference cycle that only the garbage collector frees, unlike autograd's own saving.
        self.tensor, self.meter = tensor.detach(), meter
        self.key, self.nbytes = storage.data_ptr(), storage.nbytes()
        meter.add(self.key, self.nbytes)

    def __del__(self):
        self.meter.remove(self.key, self.nbytes)


# ----------------------------------------------------------------------------- 1. forward


def forward_case(name, field, y0, t, tol, repeats, min_seconds=0.0):
    """Evaluations counted in one run through a counting wrapper; time measured without it."""

    def solver(library, func):
        def run():
            with torch.no_grad():
                if library == "physode":
                    return physode.solve(func, y0, t, method="dopri5", rtol=tol, atol=tol)
                return torchdiffeq.odeint(func, y0, t, method="dopri5", rtol=tol, atol=tol)

        return run

    nfe = {}
    for library in ("physode", "torchdiffeq"):
        counted = Counted(field)
        solver(library, counted)()  # also the warm-up
        nfe[library] = counted.calls["fwd"]
    seconds = interleaved_medians(
        {library: solver(library, field) for library in ("physode", "torchdiffeq")},
        repeats,
        min_seconds,
    )
    return {
        "case": name,
        "tol": tol,
        "physode_seconds": seconds["physode"],
        "torchdiffeq_seconds": seconds["torchdiffeq"],
        "physode_nfe": nfe["physode"],
        "torchdiffeq_nfe": nfe["torchdiffeq"],
        "time_ratio": seconds["physode"] / seconds["torchdiffeq"],
        "nfe_ratio": nfe["physode"] / nfe["torchdiffeq"],
    }


def table_forward(quick: bool, repeats: int) -> list[dict]:
    rows = []
    min_seconds = 0.0 if quick else MIN_SECONDS
    t_end = 5.0 if quick else 50.0
    vdp_y0 = torch.tensor([[2.0, 0.0]], dtype=torch.float64)
    vdp_t = torch.tensor([0.0, t_end], dtype=torch.float64)
    for tol in (1e-6, 1e-9):
        row = forward_case(
            f"Van der Pol mu=1, batch 1, t in [0,{t_end:g}]",
            VanDerPol(1.0),
            vdp_y0,
            vdp_t,
            tol,
            repeats,
            min_seconds,
        )
        row["target"] = "time <= 0.5x, nfe within 15%"
        row["pass"] = row["time_ratio"] <= 0.5 and abs(row["nfe_ratio"] - 1.0) <= 0.15
        rows.append(row)
    batch = 64 if quick else 512
    mlp_y0 = torch.randn(batch, 2, generator=torch.Generator().manual_seed(1))
    mlp_t = torch.tensor([0.0, 5.0])
    row = forward_case(
        f"MLP 2-64-64-2 tanh, batch {batch}, float32, t in [0,5]",
        MLPField(64),
        mlp_y0,
        mlp_t,
        1e-5,
        repeats,
        min_seconds,
    )
    row["target"] = "time <= 1.0x"
    row["pass"] = row["time_ratio"] <= 1.0
    rows.append(row)
    return rows


def _print_header(header: str) -> None:
    print(header)
    print("-" * len(header))


def _verdict(row: dict) -> str:
    """PASS or FAIL against the row's target; empty for rows without one."""
    return "" if row["pass"] is None else ("PASS" if row["pass"] else "FAIL")


def print_forward(rows):
    print("\n1. Forward solve, physode vs torchdiffeq (dopri5, same rtol = atol)")
    header = (
        f"{'case':<48} {'tol':>6} {'physode ms':>11} {'tdiffeq ms':>11} {'ratio':>6} "
        f"{'nfe phys':>9} {'nfe tdq':>8} {'nfe ratio':>9}  {'target':<30} result"
    )
    _print_header(header)
    for r in rows:
        print(
            f"{r['case']:<48} {r['tol']:>6.0e} {1e3 * r['physode_seconds']:>11.2f} "
            f"{1e3 * r['torchdiffeq_seconds']:>11.2f} {r['time_ratio']:>6.2f} "
            f"{r['physode_nfe']:>9d} {r['torchdiffeq_nfe']:>8d} {r['nfe_ratio']:>9.3f}  "
            f"{r['target']:<30} {_verdict(r)}"
        )


# ----------------------------------------------------------------------------- 2. gradients


def gradient_problem(name: str, quick: bool):
    """``(field, y0, weights, t_end, description)`` of gradient problem ``name``.

    ``"mlp"`` is compute-bound: a neural ODE whose evaluations dominate the time. ``"hybrid"`` is
    overhead-bound, and is what physode is for: a symbolic damped pendulum with learnable
    ``omega0`` and ``alpha`` plus a small neural residual, made of many small tensor operations.
    ``"vdp"`` is table 1's overhead-bound Van der Pol oscillator with ``mu`` learnable, from
    the limit cycle's edge (2, 0): an attracting cycle, so the state re-solved backward in time
    (Opt-Disc, ``odeint_adjoint``) is pushed off it, the case where the two papers find adjoint
    gradients costly and inexact.
    """
    if name == "mlp":
        batch, t_end = (16, 2.0) if quick else (256, 5.0)
        field = MLPField(64).double()
        description = f"MLP 2-64-64-2 tanh, batch {batch}"
    elif name == "hybrid":
        batch, t_end = (4, 2.0) if quick else (16, 10.0)
        torch.manual_seed(0)
        physics = PhysicsModel("damped_pendulum", learnable=["omega0", "alpha"])
        field = Hybrid(physics, NeuralODE(2, width=32, depth=2)).double()
        description = (
            f"hybrid: damped pendulum (learnable omega0, alpha) + MLP 2-32-32-2 tanh residual, "
            f"batch {batch}"
        )
    elif name == "vdp":
        t_end = 3.0 if quick else 10.0
        field = VanDerPol(1.0, learnable=True)
        description = "Van der Pol, learnable mu = 1, batch 1, y0 = (2, 0)"
    else:
        raise ValueError(f"unknown gradient problem {name!r}; valid: {GRAD_PROBLEMS}")
    if name == "vdp":
        y0 = torch.tensor([[2.0, 0.0]], dtype=torch.float64)
    else:
        y0 = torch.randn(batch, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    weights = torch.randn(
        y0.shape[0], 2, dtype=torch.float64, generator=torch.Generator().manual_seed(3)
    )
    description += f", float64, t in [0,{t_end:g}], dopri5, loss = weighted sum of the final state"
    return field, y0, weights, t_end, description


def gradient_run(config: str, tol: float, field: nn.Module, y0, weights, t_end):
    """One forward+backward pass; returns the flat gradient w.r.t. (y0, parameters), or None for
    the forward solve without a graph.

    Pass a :class:`Counted` field to count evaluations by phase.
    """
    counted = field if isinstance(field, Counted) else None
    params = list(field.parameters())
    t = torch.tensor([0.0, t_end], dtype=y0.dtype)
    if config == NO_GRAPH:
        with torch.no_grad():
            physode.solve(field, y0, t, method="dopri5", rtol=tol, atol=tol)
        return None
    y0 = y0.detach().clone().requires_grad_(True)
    if counted is not None:
        counted.phase = "fwd"
    if config.startswith("physode"):
        mode = {
            "physode disc-opt": "disc-opt",
            "physode aca": "aca",
            "physode opt-disc": "opt-disc",
            OPT_DISC_STEPS: physode.OptDisc(restart="steps"),
            ACA_REBUILD_ALL: physode.ACA(keep_last_graph=False),
        }[config]
        method = "dop853" if tol < 1e-10 else "dopri5"
        y_end = physode.odeint(field, y0, t, method=method, rtol=tol, atol=tol, gradient=mode)[-1]
    elif config == "torchdiffeq odeint":
        y_end = torchdiffeq.odeint(field, y0, t, method="dopri5", rtol=tol, atol=tol)[-1]
    elif config == "torchdiffeq odeint_adjoint":
        y_end = torchdiffeq.odeint_adjoint(field, y0, t, method="dopri5", rtol=tol, atol=tol)[-1]
    elif config == "TorchDiffEqPack aca":
        options = {
            "method": "dopri5",
            "t0": 0.0,
            "t1": t_end,
            "rtol": tol,
            "atol": tol,
            "h": None,
            "print_neval": False,
            "neval_max": 10**7,
        }
        y_end = tdep_odesolve_adjoint(field, y0, options=options)
    else:
        raise ValueError(config)
    loss = (y_end * weights).sum()
    if counted is not None:
        counted.phase = "bwd"
    grads = torch.autograd.grad(loss, [y0, *params])
    if counted is not None:
        counted.phase = "fwd"
    return torch.cat([g.reshape(-1) for g in grads])


# Stages of a dopri5 step that its end point depends on: what ACA's backward pass rebuilds.
STAGES = 6


def evaluation_runs(field: nn.Module, y0, weights) -> dict[str, Callable[[], object]]:
    """Timed runs of ``STAGES`` evaluations of ``field``: without a graph, and with a graph and
    one VJP for all of them (one autograd call, as ACA's backward pass makes per step)."""
    t = torch.tensor(0.0, dtype=y0.dtype)
    y = y0.detach().clone().requires_grad_(True)
    params = list(field.parameters())

    def no_graph():
        with torch.no_grad():
            for _ in range(STAGES):
                field(t, y0)

    def with_vjp():
        out = field(t, y)
        for _ in range(STAGES - 1):
            out = out + field(t, y)
        torch.autograd.grad(out, [y, *params], weights)

    return {"evaluation, no graph": no_graph, "evaluation with VJP": with_vjp}


def aca_evaluations(field: nn.Module, y0, weights, t_end, tol) -> dict[str, int]:
    """Evaluations ACA makes when it rebuilds every step (``keep_last_graph=False``): ``fwd``
    without a graph, ``bwd`` with a graph and a VJP."""
    counted = Counted(field)
    gradient_run(ACA_REBUILD_ALL, tol, counted, y0, weights, t_end)
    return counted.calls


def _relative(a, b) -> float | None:
    return None if a is None else ((a - b).norm() / b.norm()).item()


def table_gradients(quick: bool, repeats: int, fresh_process: bool) -> list[dict]:
    rows = []
    for problem in GRAD_PROBLEMS:
        rows += _gradient_rows(problem, quick, repeats, fresh_process)
    _judge_gradients(rows)
    return rows


def _gradient_rows(problem: str, quick: bool, repeats: int, fresh_process: bool) -> list[dict]:
    field, y0, weights, t_end, description = gradient_problem(problem, quick)
    reference = gradient_run("physode disc-opt", 1e-12, field, y0, weights, t_end)
    rows = []
    available = [
        c
        for c in GRAD_CONFIGS + EXTRA_CONFIGS.get(problem, ())
        if not (c.startswith("torchdiffeq") and torchdiffeq is None)
        and not (c.startswith("TorchDiffEqPack") and tdep_odesolve_adjoint is None)
    ]
    for tol in GRAD_TOLERANCES:
        disc = gradient_run("physode disc-opt", tol, field, y0, weights, t_end)
        measured, runs, failed = {}, {}, {}
        for config in available:
            counted = Counted(field)
            try:
                grad = gradient_run(config, tol, counted, y0, weights, t_end)  # also the warm-up
            except SOLVE_FAILURES as error:
                # An adjoint's backward solve may fail where the state it re-solves backward
                # is unstable: a result of the table, not of the script.
                failed[config] = str(error).splitlines()[0][:100]
                continue
            measured[config] = (grad, dict(counted.calls))

            def run(config=config, tol=tol):
                return gradient_run(config, tol, field, y0, weights, t_end)

            runs[config] = run
        runs.update(evaluation_runs(field, y0, weights))
        seconds = interleaved_medians(runs, repeats, 0.0 if quick else MIN_SECONDS)
        # What ACA's evaluations cost by themselves, without any solver work around them.
        calls = aca_evaluations(field, y0, weights, t_end, tol)
        evaluations_seconds = (
            calls["fwd"] * seconds["evaluation, no graph"]
            + calls["bwd"] * seconds["evaluation with VJP"]
        ) / STAGES
        for config in available:
            if config in failed:
                rows.append({"problem": problem, "description": description, "config": config,
                             "tol": tol, "seconds": None, "failed": failed[config]})  # fmt: skip
                continue
            grad, nfe = measured[config]
            spec = {
                "table": "gradients",
                "problem": problem,
                "quick": quick,
                "config": config,
                "tol": tol,
            }
            peak = measure_in_subprocess(spec) if fresh_process else peak_rss_rise(runs[config])
            rows.append(
                {
                    "problem": problem,
                    "description": description,
                    "config": config,
                    "tol": tol,
                    "seconds": seconds[config],
                    "nfe_fwd": nfe["fwd"],
                    "nfe_bwd": nfe["bwd"],
                    "peak_bytes": peak,
                    "error_vs_reference": _relative(grad, reference),
                    "error_vs_disc_opt": _relative(grad, disc),
                }
            )
            if config == "physode aca":
                rows[-1]["evaluations_seconds"] = evaluations_seconds
    return rows


def _judge_gradients(rows):
    by = {(r["problem"], r["config"], r["tol"]): r for r in rows}
    for r in rows:
        r["target"], r["pass"] = "", None
        disc = by[(r["problem"], "physode disc-opt", r["tol"])]
        adjoint = by.get((r["problem"], "torchdiffeq odeint_adjoint", r["tol"]))
        if adjoint is not None and "failed" in adjoint:
            adjoint = None  # nothing to compare with: the row says that it failed
        if "failed" in r:
            if r["config"] in ("physode aca", "physode opt-disc", OPT_DISC_STEPS):
                r["target"], r["pass"] = "a gradient", False
        elif r["config"] == "physode aca":
            checks = [r["seconds"] <= 1.5 * disc["seconds"], r["error_vs_disc_opt"] <= 1e-10]
            r["target"] = "<=1.5x disc-opt, grad = disc-opt (1e-10)"
            if adjoint is not None:
                checks.append(r["seconds"] <= 0.3 * adjoint["seconds"])
                r["target"] += ", <=0.3x odeint_adjoint"
            r["pass"] = all(checks)
            r["ratio_vs_disc_opt"] = r["seconds"] / disc["seconds"]
            if adjoint is not None:
                r["ratio_vs_adjoint"] = r["seconds"] / adjoint["seconds"]
                r["evaluations_vs_adjoint"] = r["evaluations_seconds"] / adjoint["seconds"]
        elif r["config"] in ("physode opt-disc", OPT_DISC_STEPS) and adjoint is not None:
            r["target"] = "time <= odeint_adjoint, error <= odeint_adjoint's"
            r["pass"] = (
                r["seconds"] <= adjoint["seconds"]
                and r["error_vs_reference"] <= adjoint["error_vs_reference"]
            )
            r["ratio_vs_adjoint"] = r["seconds"] / adjoint["seconds"]


def _mb(nbytes) -> str:
    return "n/a" if nbytes is None else f"{nbytes / 2**20:.1f}"


def _error(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2e}"


def print_gradients(rows):
    for number, problem in enumerate(GRAD_PROBLEMS):
        group = [r for r in rows if r["problem"] == problem]
        print(f"\n2{'abc'[number]}. Gradients: {group[0]['description']}")
        print(
            "   reference: physode Disc-Opt, dop853, rtol = atol = 1e-12; "
            "peak MB = rise of resident memory during fwd+bwd"
        )
        header = (
            f"{'config':<28} {'tol':>6} {'fwd+bwd ms':>11} {'nfe fwd':>8} {'nfe bwd':>8} "
            f"{'peak MB':>8} {'err vs ref':>11} {'err vs disc':>11}  {'target':<52} result"
        )
        _print_header(header)
        for r in group:
            if "failed" in r:
                print(f"{r['config']:<28} {r['tol']:>6.0e} failed: {r['failed']}  {_verdict(r)}")
                continue
            ratios = []
            if "ratio_vs_disc_opt" in r:
                ratios.append(f"{r['ratio_vs_disc_opt']:.2f}x disc-opt")
            if "ratio_vs_adjoint" in r:
                ratios.append(f"{r['ratio_vs_adjoint']:.2f}x adjoint")
            if "evaluations_vs_adjoint" in r:
                ratios.append(f"(its evaluations alone: {r['evaluations_vs_adjoint']:.2f}x)")
            print(
                f"{r['config']:<28} {r['tol']:>6.0e} {1e3 * r['seconds']:>11.1f} "
                f"{r['nfe_fwd']:>8d} {r['nfe_bwd']:>8d} {_mb(r['peak_bytes']):>8} "
                f"{_error(r['error_vs_reference']):>11} {_error(r['error_vs_disc_opt']):>11}  "
                f"{r['target']:<52} {_verdict(r)} {' '.join(ratios)}"
            )


# ----------------------------------------------------------------------------- 3. memory


def memory_problem(quick: bool):
    field = MLPField(width=128 if quick else 256).double()
    y0 = torch.randn(64, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    steps = (5, 50) if quick else (20, 200)
    return field, y0, steps


def memory_run(mode: str, field, y0, n_steps: int) -> tuple[int, int]:
    """fwd+bwd with rk4 and n_steps over [0, 1]; returns (peak saved bytes, accepted steps)."""
    y0 = y0.detach().clone().requires_grad_(True)
    step_size = 1.0 / n_steps
    gradient = {
        "opt-disc": physode.OptDisc(method="rk4", step_size=step_size),
        "opt-disc steps": physode.OptDisc(method="rk4", step_size=step_size, restart="steps"),
    }.get(mode, mode)
    with SavedBytes() as meter:
        sol = physode.solve(
            field, y0, [0.0, 1.0], method="rk4", step_size=1.0 / n_steps, gradient=gradient
        )
        sol.ys[-1].sum().backward()
    # The states kept at the accepted steps, which autograd's hooks do not see.
    kept = mode in ("aca", "opt-disc steps")
    checkpoints = sol.stats.n_steps * y0.numel() * y0.element_size() if kept else 0
    return meter.peak + checkpoints, sol.stats.n_steps


def table_memory(quick: bool, fresh_process: bool) -> list[dict]:
    field, y0, steps = memory_problem(quick)
    rows = []
    for mode in ("disc-opt", "aca", "opt-disc", "opt-disc steps"):
        measured = []
        for n in steps:
            saved, n_steps = memory_run(mode, field, y0, n)
            spec = {"table": "memory", "quick": quick, "mode": mode, "n_steps": n}
            peak = (
                measure_in_subprocess(spec)
                if fresh_process
                else peak_rss_rise(lambda mode=mode, n=n: memory_run(mode, field, y0, n))
            )
            measured.append((n_steps, saved, peak))
        (n1, saved1, peak1), (n2, saved2, peak2) = measured
        row = {
            "mode": mode,
            "steps": [n1, n2],
            "saved_bytes": [saved1, saved2],
            "peak_bytes": [peak1, peak2],
            "saved_growth": saved2 / saved1,
            "peak_growth": None if not peak1 or peak2 is None else peak2 / peak1,
        }
        # Judged on the saved bytes (exact); the resident-memory rise is an independent check with
        # a resolution of a few hundred kB.
        if mode == "aca":
            row["target"] = "grows <= 20%"
            row["pass"] = row["saved_growth"] <= 1.2
        elif mode == "disc-opt":
            row["target"] = "grows roughly tenfold (>= 5x)"
            row["pass"] = row["saved_growth"] >= 5
        elif mode == "opt-disc":
            row["target"], row["pass"] = "(no target; O(1) in steps)", None
        else:
            row["target"], row["pass"] = "(no target; a state per step)", None
        rows.append(row)
    return rows


def print_memory(rows, quick):
    width = 128 if quick else 256
    print(
        f"\n3. Memory as the steps grow tenfold: MLP 2-{width}-{width}-2 tanh on a 64 x 2 state, "
        "rk4, fwd+bwd"
    )
    print(
        "   judged on saved MB (saved-for-backward bytes + the states kept at the steps); peak "
        "MB = rise of "
        "resident memory, a cross-check"
    )
    header = (
        f"{'mode':<14} {'steps':>10} {'saved MB':>16} {'growth':>7} {'peak MB':>16} "
        f"{'growth':>7}  {'target':<30} result"
    )
    _print_header(header)
    for r in rows:
        result = _verdict(r)
        saved = f"{_mb(r['saved_bytes'][0])} -> {_mb(r['saved_bytes'][1])}"
        peak = f"{_mb(r['peak_bytes'][0])} -> {_mb(r['peak_bytes'][1])}"
        growth = "n/a" if r["peak_growth"] is None else f"{r['peak_growth']:.2f}x"
        print(
            f"{r['mode']:<14} {r['steps'][0]:>4} -> {r['steps'][1]:<4} {saved:>16} "
            f"{r['saved_growth']:>6.2f}x {peak:>16} {growth:>7}  {r['target']:<30} {result}"
        )


# ----------------------------------------------------------------------------- 4. symplectic


def symplectic_runs(method: str, field, y0, times, step_size: float, results: dict) -> dict:
    """Timed solves with ``method``: ``physode.solve``, whose drift moves ``q`` by ``v`` itself
    (``dq/dt`` is ``v`` here), and the same loop with every drift evaluating ``func``, as a
    ``dq/dt`` that is not ``v`` needs (and as every drift did before). Each records its
    ``(nfe, evaluations per step)`` in ``results``, the latter without the split's five probes
    and ``f(t0, y0)``; both give the same trajectory, bit for bit."""

    def by_v():
        solution = physode.solve(field, y0, times, method=method, step_size=step_size)
        stats = solution.stats
        results["by v"] = stats.nfe, (stats.nfe - 6) / stats.n_steps

    def evaluated():
        stats = Stats()
        stepper = SYMPLECTIC_METHODS[method](field.n_coordinates, drift_is_velocity=False)
        integrate(stepper, field, y0, times, rtol=0.0, atol=0.0, step_size=step_size,
                  first_step=None, max_steps=10**7, stats=stats)  # fmt: skip
        results["evaluated"] = stats.nfe, (stats.nfe - 1) / stats.n_steps

    return {"by v": by_v, "evaluated": evaluated}


def table_symplectic(quick: bool, repeats: int) -> list[dict]:
    """The catalogue's planar three-body problem with ``leapfrog`` and ``yoshida4``, no graph:
    time per solve with the drift by ``v`` and evaluated (see :func:`symplectic_runs`)."""
    three = physode.systems.load("three_body")
    field = three.vector_field()
    batch, steps = (64, 100) if quick else (1024, 1000)
    y0 = three.sample_initial_states(batch, seed=0)
    step_size = 1e-3
    times = [0.0, step_size * steps]
    rows = []
    for method in ("leapfrog", "yoshida4"):
        results: dict[str, tuple[int, float]] = {}
        runs = symplectic_runs(method, field, y0, times, step_size, results)
        with torch.no_grad():
            seconds = interleaved_medians(runs, repeats, 0.0 if quick else MIN_SECONDS)
        for drift, (nfe, per_step) in results.items():
            rows.append({"method": method, "drift": drift, "batch": batch, "steps": steps,
                         "seconds": seconds[drift], "nfe": nfe, "nfe_per_step": per_step,
                         "speedup": seconds["evaluated"] / seconds[drift]})  # fmt: skip
    return rows


def print_symplectic(rows):
    batch, steps = rows[0]["batch"], rows[0]["steps"]
    print(
        f"\n4. Symplectic methods: three_body (planar), batch {batch}, float64, {steps} steps of "
        "1e-3, no graph"
    )
    header = f"{'method':<9} {'drift':<10} {'ms':>9} {'nfe':>6} {'nfe/step':>9} {'speedup':>8}"
    _print_header(header)
    for r in rows:
        print(
            f"{r['method']:<9} {r['drift']:<10} {1e3 * r['seconds']:>9.1f} {r['nfe']:>6d} "
            f"{r['nfe_per_step']:>9.2f} {r['speedup']:>7.2f}x"
        )


# ----------------------------------------------------------------------------- fresh processes


def measure_in_subprocess(spec: dict) -> int | None:
    """Peak resident-memory rise of one configuration, measured in a fresh interpreter."""
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "--child",
        json.dumps(spec),
        "--threads",
        str(torch.get_num_threads()),
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])["peak_bytes"]


def child(spec: dict) -> None:
    if spec["table"] == "gradients":
        field, y0, weights, t_end, _ = gradient_problem(spec["problem"], spec["quick"])

        def run():
            gradient_run(spec["config"], spec["tol"], field, y0, weights, t_end)
    else:
        field, y0, _ = memory_problem(spec["quick"])

        def run():
            memory_run(spec["mode"], field, y0, spec["n_steps"])

    run()  # warm-up: lazy initialisation is not the configuration's memory
    print(json.dumps({"peak_bytes": peak_rss_rise(run)}))


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = _common.parser(
        __doc__.splitlines()[0], None, old=("--out FILE.json",), seed=None,
        quick="small problems and one repeat, memory measured in-process",
    )  # fmt: skip
    parser.add_argument("--repeats", type=_common.positive_int, default=None, metavar="R",
                        help="timing repeats (median; default 7, 1 with --quick)")  # fmt: skip
    parser.add_argument(
        "--tables",
        default="1,2,3,4",
        metavar="I,J,...",
        help="which tables to run, comma-separated (default 1,2,3,4; e.g. --tables 2 for the "
        "gradients only)",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    tables = {part.strip() for part in args.tables.split(",") if part.strip()}
    if not tables or not tables <= {"1", "2", "3", "4"}:
        parser.error(f"--tables takes numbers among 1, 2, 3, 4, got {args.tables!r}")
    torch.set_num_threads(args.threads)
    if args.child:
        child(json.loads(args.child))
        return 0
    if torchdiffeq is None:
        print("torchdiffeq is not installed: pip install 'physode[bench]'", file=sys.stderr)
        return 2
    _common.setup(args)
    repeats = args.repeats or (1 if args.quick else 7)
    print(
        f"physode {physode.__version__}, torch {torch.__version__}, torchdiffeq "
        f"{getattr(torchdiffeq, '__version__', '?')}, python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, "
        + (
            f"quick, repeats {repeats}"
            if args.quick
            else f"repeats >= {repeats} (more until each comparison has run {MIN_SECONDS:g} s)"
        )
    )
    started = time.perf_counter()
    forward, gradients, memory, symplectic = [], [], [], []
    if "1" in tables:
        forward = table_forward(args.quick, repeats)
        print_forward(forward)
    if "2" in tables:
        gradients = table_gradients(args.quick, repeats, fresh_process=not args.quick)
        print_gradients(gradients)
    if "3" in tables:
        memory = table_memory(args.quick, fresh_process=not args.quick)
        print_memory(memory, args.quick)
    if "4" in tables:
        symplectic = table_symplectic(args.quick, repeats)
        print_symplectic(symplectic)
    verdicts = [r["pass"] for r in forward + gradients + memory if r.get("pass") is not None]
    print(
        f"\ntargets: {sum(verdicts)} of {len(verdicts)} PASS "
        f"({time.perf_counter() - started:.0f} s)"
    )
    results = {"quick": args.quick, "repeats": repeats, "forward": forward,
               "gradients": gradients, "memory": memory, "symplectic": symplectic}  # fmt: skip
    _common.finish(args, results)
    return 0


if __name__ == "__main__":
    sys.exit(_common.interruptible(main))
