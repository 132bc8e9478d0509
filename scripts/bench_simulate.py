"""Benchmark: simulating planar three-body data sets with physode against SciPy and REBOUND.

For each N (default 256 and 4096) the initial states come from the catalogue's default
distribution for ``three_body`` (as ``physode simulate --seed S`` draws them); every contender
integrates the same states over t in [0, 10] at rtol = atol = 1e-10, producing the same output
grid:

- ``physode simulate``: the whole pipeline into HDF5 (loading the system, per-sample stepping,
  dop853, derivatives, invariants, compression, checksums), with the derived system in physode's
  on-disk cache, as on every run after the first;
- ``physode simulate, first run``: the same with an empty cache, so it also derives the
  equations with SymPy and generates their code (once per specification);
- ``physode solve``: the batched per-sample solve alone (dop853, one call for all N), with the
  vector field's NumPy twin as ``physode simulate`` uses it, so the loop runs on NumPy;
- ``physode solve, torch only``: the same with a plain torch vector field (the torch loop);
- SciPy ``solve_ivp(method="DOP853")``, one trajectory at a time, NumPy right-hand side;
- REBOUND IAS15, one simulation per trajectory (its default accuracy parameter);
- with ``--workers W`` (W > 1), ``physode simulate, W workers``: the same data set computed by a
  pool of W processes (``simulate(executor=ProcessPoolExecutor(W))``, chunks of N / W
  trajectories, W threads in all with ``--threads 1``), reported beside the one-process row as
  a speed-up. The pool's start (torch and physode imported once, in the process the workers
  are forked from) is not timed; each worker's loading of the system from the cache is.

Reported per contender: time per trajectory, median and worst relative energy error at t = 10,
and peak memory (resident set size of the process that ran it, and its growth over the baseline
after imports). Every run is a process of its own, so the peaks do not mix; library imports
(torch and SymPy for physode, SciPy, REBOUND) happen before each timer starts. The contenders
take turns in --repeats rounds (default 3) and each reports its median time over the rounds:
the load of a shared machine drifts over minutes, and taking turns spreads the drift over all
of them instead of charging it to whoever ran during a busy spell. The first run happens once.
The cache lives in a temporary folder, never in the user's.

With ``--out DIR`` every measurement also goes to ``DIR/results.json`` (``--json FILE``, its
former spelling, still writes FILE, with a warning).

Usage::

    python scripts/bench_simulate.py                      # N = 256 and 4096
    python scripts/bench_simulate.py --sizes 256 --reference-limit 64   # quicker
    python scripts/bench_simulate.py --quick              # N = 4, a smoke test
    python scripts/bench_simulate.py --device cuda        # physode on a GPU
    python scripts/bench_simulate.py --workers 2          # and 2 processes beside 1
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402

if __name__ == "__main__":  # not when a test imports the script
    _common.quiet_interrupts_from_the_start()  # Ctrl-C while importing: one line too

import numpy as np  # noqa: E402

T_END, POINTS, TOL = 10.0, 101, 1e-10
MASSES, G = (1.0, 1.0, 1.0), 1.0
FIRST_RUN = "physode simulate, first run"
SOLVE, SOLVE_TORCH = "physode solve", "physode solve, torch only"
CONTENDERS = (FIRST_RUN, "physode simulate", SOLVE, SOLVE_TORCH, "scipy DOP853", "rebound IAS15")
WORKERS = "physode simulate, workers"  # with --workers W > 1; its row says "W workers"


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def energy(states: np.ndarray) -> np.ndarray:
    """Total energy of planar three-body states ``(..., 12)``: positions then velocities."""
    m = np.asarray(MASSES)
    r = states[..., :6].reshape(*states.shape[:-1], 3, 2)
    v = states[..., 6:].reshape(*states.shape[:-1], 3, 2)
    kinetic = 0.5 * np.sum(m * np.sum(v**2, axis=-1), axis=-1)
    potential = 0.0
    for i, j in ((0, 1), (0, 2), (1, 2)):
        potential = potential - G * m[i] * m[j] / np.linalg.norm(
            r[..., i, :] - r[..., j, :], axis=-1
        )
    return kinetic + potential


def _rhs_numpy(t: float, y: np.ndarray) -> np.ndarray:
    r = y[:6].reshape(3, 2)
    acceleration = np.zeros((3, 2))
    for i in range(3):
        for j in range(3):
            if i != j:
                d = r[j] - r[i]
                acceleration[i] += G * MASSES[j] * d / np.dot(d, d) ** 1.5
    return np.concatenate([y[6:], acceleration.ravel()])


def _errors(initial: np.ndarray, final: np.ndarray) -> np.ndarray:
    e0, e1 = energy(initial), energy(final)
    errors = np.abs(e1 - e0) / np.abs(e0)
    return np.where(np.isfinite(errors), errors, np.inf)


def _median_seconds(run, repeats: int) -> tuple[float, object]:
    """The median wall time of ``repeats`` calls of ``run()``, and the last call's result."""
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        seconds.append(time.perf_counter() - start)
    return float(np.median(seconds)), result


def run_physode_simulate(
    n: int, folder: Path, device: str, repeats: int, seed: int, workers: int = 1
) -> dict:
    import physode.data
    import physode.systems  # imports SymPy: a library import, outside the timer

    out = folder / f"three_body_{n}{'' if workers == 1 else '_workers'}.h5"
    baseline = _peak_mib()
    options = {}
    if workers > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, wait

        context = multiprocessing.get_context("forkserver")
        # torch, SymPy and physode imported once, in the server the workers are forked from
        context.set_forkserver_preload(["physode.data.simulation", "physode.systems"])
        pool = ProcessPoolExecutor(workers, mp_context=context)
        wait([pool.submit(os.getpid) for _ in range(workers)])  # started outside the timer
        import torch

        # Each worker with this process's threads (--threads), not torch's default of one per
        # core, which would put W times as many threads as cores to work.
        threads = torch.get_num_threads()
        options = {"executor": pool, "chunk_size": math.ceil(n / workers), "threads": threads}

    def run():
        physode.systems._from_text.cache_clear()  # every run loads the system as a new process does
        return physode.data.simulate(
            "three_body",
            trajectories=n,
            t_end=T_END,
            points=POINTS,
            out=out,
            seed=seed,
            rtol=TOL,
            atol=TOL,
            force=True,
            quiet=True,
            **{"threads": None, **options},  # None: as set for this process by --threads
        )

    seconds, result = _median_seconds(run, repeats)
    if workers > 1:
        options["executor"].shutdown()
    with physode.data.load(out) as data:
        states = data.states[()]
        np.save(folder / f"y0_{n}.npy", states[:, 0])
        errors = _errors(states[:, 0], states[:, -1])
        failed = int(np.count_nonzero(data.flags & 1))
    return {
        "seconds": seconds,
        "errors": errors.tolist(),
        "baseline": baseline,
        "failed": failed,
        "drift_flags": result.n_drifted,
    }


def run_physode_solve(y0: np.ndarray, device: str, repeats: int, numpy_twin: bool) -> dict:
    import torch

    import physode
    import physode.systems

    system = physode.systems.load("three_body")
    p = torch.tensor(list(system.parameters.values()), dtype=torch.float64, device=device)
    y = torch.as_tensor(y0, dtype=torch.float64, device=device)
    t = torch.linspace(0.0, T_END, POINTS, dtype=torch.float64, device=device)

    def field(t, y):
        return system.rhs(t, y, p)

    if numpy_twin:  # what physode simulate hands the solver: the loop then runs on NumPy
        rhs_numpy, p_numpy = system.rhs_numpy, p.cpu().numpy()
        field.numpy = lambda t, y: rhs_numpy(t, y, p_numpy)

    baseline = _peak_mib()

    def run():
        with torch.no_grad():
            solution = physode.solve(
                field,
                y,
                t,
                method="dop853",
                rtol=TOL,
                atol=TOL,
                gradient="disc-opt",
                step_control="per-sample",
                throw=False,
            )
            ys = solution.ys.cpu().numpy()
        if device == "cuda":
            torch.cuda.synchronize()
        return solution, ys

    seconds, (solution, ys) = _median_seconds(run, repeats)
    status = torch.as_tensor(solution.status)
    extra = {}
    if device == "cuda":
        extra["gpu_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return {
        "seconds": seconds,
        "errors": _errors(ys[0], ys[-1]).tolist(),
        "baseline": baseline,
        "failed": int((status != 0).sum()),
        **extra,
    }


def run_scipy(y0: np.ndarray, repeats: int) -> dict:
    from scipy.integrate import solve_ivp

    t_eval = np.linspace(0.0, T_END, POINTS)
    baseline = _peak_mib()

    def run():
        finals, failed = [], 0
        for row in y0:
            solution = solve_ivp(
                _rhs_numpy, (0.0, T_END), row, method="DOP853", t_eval=t_eval, rtol=TOL, atol=TOL
            )
            failed += not solution.success
            finals.append(solution.y[:, -1])
        return finals, failed

    seconds, (finals, failed) = _median_seconds(run, repeats)
    return {
        "seconds": seconds,
        "errors": _errors(y0, np.array(finals)).tolist(),
        "baseline": baseline,
        "failed": failed,
    }


def run_rebound(y0: np.ndarray, repeats: int) -> dict:
    import rebound

    times = np.linspace(0.0, T_END, POINTS)[1:]
    baseline = _peak_mib()

    def run():
        errors = []
        for row in y0:
            sim = rebound.Simulation()
            sim.G = G
            sim.integrator = "ias15"
            for i in range(3):
                sim.add(
                    m=MASSES[i],
                    x=row[2 * i],
                    y=row[2 * i + 1],
                    vx=row[6 + 2 * i],
                    vy=row[7 + 2 * i],
                )
            e0 = sim.energy()
            for t in times:  # the same output grid as the others
                sim.integrate(t, exact_finish_time=1)
            errors.append(abs(sim.energy() - e0) / abs(e0))
        return errors

    seconds, errors = _median_seconds(run, repeats)
    return {"seconds": seconds, "errors": errors, "baseline": baseline, "failed": 0}


def _child(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    folder = Path(args.folder)
    repeats = args.repeats
    if args.part in ("physode simulate", FIRST_RUN, WORKERS):
        workers = args.workers if args.part == WORKERS else 1
        result = run_physode_simulate(args.n, folder, args.device, repeats, args.seed, workers)
        result["n"] = args.n
    else:
        y0 = np.load(folder / f"y0_{args.n}.npy")
        if args.part not in (SOLVE, SOLVE_TORCH) and args.reference_limit:
            y0 = y0[: args.reference_limit]
        if args.part in (SOLVE, SOLVE_TORCH):
            result = run_physode_solve(y0, args.device, repeats, numpy_twin=args.part == SOLVE)
        elif args.part == "scipy DOP853":
            result = run_scipy(y0, repeats)
        else:
            result = run_rebound(y0, repeats)
        result["n"] = len(y0)
    result["peak"] = _peak_mib()
    Path(args.result).write_text(json.dumps(result))


def _median_round(runs: list[dict]) -> dict:
    """One contender's rounds as one result: the median time, the largest peak memory."""
    return {
        **runs[-1],
        "seconds": float(np.median([r["seconds"] for r in runs])),
        "peak": max(r["peak"] for r in runs),
        "baseline": min(r["baseline"] for r in runs),
    }


def _row(name: str, n_total: int, result: dict) -> str:
    errors = np.asarray(result["errors"])
    per = result["seconds"] / result["n"] * 1e3
    ran = f"{result['n']}" if result["n"] == n_total else f"{result['n']} of {n_total}"
    growth = result["peak"] - result["baseline"]
    gpu = f", GPU {result['gpu_peak_mib']:.0f}" if "gpu_peak_mib" in result else ""
    return (
        f"| {name} | {ran} | {result['seconds']:.2f} | {per:.3f} | {np.median(errors):.1e} | "
        f"{errors.max():.1e} | {result['failed']} | {result['peak']:.0f} (+{growth:.0f}{gpu}) |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = _common.parser(
        _common.summary(__doc__), None, old=("--json FILE",), seed="the initial states",
        quick="N = 4, SciPy and REBOUND on 2 of the states, 1 round",
    )  # fmt: skip
    parser.add_argument("--sizes", type=_common.positive_int, nargs="+", metavar="N",
                        help="values of N (default 256 4096; 4 with --quick)")  # fmt: skip
    parser.add_argument(
        "--reference-limit",
        type=_common.non_negative_int,
        metavar="K",
        help="run SciPy and REBOUND on the first K states only (their time per trajectory does "
        "not depend on N); 0 runs all (default 0; 2 with --quick)",
    )
    parser.add_argument("--device", default="cpu", metavar="DEVICE",
                        help="device of the physode solve: cpu (default), cuda")  # fmt: skip
    parser.add_argument(
        "--repeats",
        type=_common.positive_int,
        metavar="R",
        help="rounds, each running every contender once, in turn; the median over the rounds is "
        "reported (the shared machine is noisy). The first run is run once (default 3; 1 with "
        "--quick)",
    )
    parser.add_argument(
        "--workers",
        type=_common.positive_int,
        default=1,
        metavar="W",
        help="also time physode simulate in a pool of W processes (each with --threads "
        "threads), beside one process (default 1: not timed)",
    )
    parser.add_argument("--part", choices=(*CONTENDERS, WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.part:
        _child(args)
        return 0
    args.sizes = args.sizes or ([4] if args.quick else [256, 4096])
    if args.reference_limit is None:
        args.reference_limit = 2 if args.quick else 0
    args.repeats = args.repeats or (1 if args.quick else 3)
    _common.setup(args)

    import torch

    print(
        f"planar three-body, t in [0, {T_END:g}], {POINTS} output times, rtol = atol = {TOL:g}; "
        f"torch {torch.__version__}, physode on {args.device} with {args.threads} thread(s); "
        "SciPy and REBOUND single-threaded"
    )
    header = (
        "| contender | trajectories | total s | ms / trajectory | median rel. energy error | "
        "worst | failed | peak RSS MiB (+ growth) |\n|---|---|---|---|---|---|---|---|"
    )
    contenders = CONTENDERS + ((WORKERS,) if args.workers > 1 else ())
    names = {WORKERS: f"physode simulate, {args.workers} workers"}
    everything = {}
    with tempfile.TemporaryDirectory(prefix="bench-simulate-") as folder:
        for n in args.sizes:
            print(f"\nN = {n}\n{header}", flush=True)
            # Empty for the first run, which fills it for the others.
            cache = Path(folder) / f"cache-{n}"
            env = {**os.environ, "PHYSODE_CACHE_DIR": str(cache)}
            # The load on this machine drifts over minutes, so the contenders take turns: each
            # round runs every one of them once, and each reports the median over the rounds.
            rounds: dict[str, list[dict]] = {part: [] for part in contenders}
            for round_ in range(args.repeats):
                print(f"(round {round_ + 1} of {args.repeats})", file=sys.stderr, flush=True)
                for part in contenders if round_ == 0 else contenders[1:]:
                    result_file = Path(folder) / "result.json"
                    command = [
                        sys.executable,
                        __file__,
                        "--part",
                        part,
                        "--n",
                        str(n),
                        "--folder",
                        folder,
                        "--result",
                        str(result_file),
                        "--device",
                        args.device,
                        "--reference-limit",
                        str(args.reference_limit),
                        "--threads",
                        str(args.threads),
                        "--seed",
                        str(args.seed),
                        "--repeats",
                        "1",
                        "--workers",
                        str(args.workers),
                    ]
                    subprocess.run(command, check=True, env=env)
                    rounds[part].append(json.loads(result_file.read_text()))
            results = {part: _median_round(runs) for part, runs in rounds.items()}
            for part in contenders:
                print(_row(names.get(part, part), n, results[part]), flush=True)
            per = {k: v["seconds"] / v["n"] for k, v in results.items()}
            fastest = per["physode simulate"]
            print(
                f"physode simulate per trajectory: {per['scipy DOP853'] / fastest:.1f}x faster "
                f"than SciPy (target >= 20x), {per['rebound IAS15'] / fastest:.2f}x REBOUND's "
                f"speed (target >= 1x); first run with the derivation: "
                f"{per['scipy DOP853'] / per[FIRST_RUN]:.1f}x and "
                f"{per['rebound IAS15'] / per[FIRST_RUN]:.2f}x"
            )
            if WORKERS in per:
                print(
                    f"physode simulate with {args.workers} workers: "
                    f"{fastest / per[WORKERS]:.2f}x the speed of one process"
                )
            everything[n] = {
                k: {
                    **v,
                    "errors": None,
                    "median_error": float(np.median(v["errors"])),
                    "worst_error": float(np.max(v["errors"])),
                }
                for k, v in ((names.get(k, k), v) for k, v in results.items())
            }
    _common.finish(args, everything)
    return (
        0
        if all(math.isfinite(r["median_error"]) for v in everything.values() for r in v.values())
        else 1
    )


if __name__ == "__main__":
    sys.exit(_common.interruptible(main))
